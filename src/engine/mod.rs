//! The engine: discovery, fetch, cache and apply (RFC 8461 §3, §5.1).
//!
//! ```text
//!  check(domain, mx, cert)
//!    │
//!    ├─ cached entry fresh? ──yes──────────────────────────────┐   (no I/O: the hot path)
//!    │   no                                                    │
//!    ├─ single-flight per domain: one caller does the I/O, the others wait for its result
//!    ├─ TXT _mta-sts.<domain> ─ none / invalid / DNS error ─► keep any unexpired cached policy
//!    │   id = cached id, no refresh due ─────────────────────► cached policy
//!    │   id new, expired, or refresh due ─► fetch (unless the same id failed < 5 min ago)
//!    │        ok + parses ─► new policy replaces the cached one (a `none` policy too)
//!    │        fails ─► keep cached policy *and* cached id; remember the failure (FETCH-10)
//!    └─ apply: MX pattern, then certificate ─► verdict::decide ──────────────────────┘
//! ```
//!
//! The cache rules (CACHE-1..15, FETCH-10..12) are implemented here and only here:
//!
//! * a policy applies until `fetched_at + max_age`, whatever DNS says in between: TXT removal,
//!   NXDOMAIN, SERVFAIL and failed fetches never end it early (CACHE-3, CACHE-4, DISC-14, FETCH-12);
//! * a new TXT id triggers a fetch at once, even under a long-lived policy (CACHE-2, CACHE-14);
//! * a failed fetch leaves both the old policy and the old id in place (CACHE-9, POL-16), and the
//!   same id is not fetched again for `fetch_retry_interval` (at least 5 minutes, FETCH-10);
//! * a policy older than `refresh_interval` (1 day), or than half its `max_age` when that is
//!   shorter, is fetched again even if the id is unchanged, before it expires (CACHE-5, CACHE-6);
//! * DNS is asked again at most every `txt_check_interval` while a policy is cached (0 asks on
//!   every check, CACHE-15), and every `no_policy_interval` for domains without one;
//! * a fetched policy with `max_age: 0` applies to the check that fetched it and no further
//!   (POL-17).
//!
//! Files: this one holds the engine, its builder and check/apply; `resolve.rs` the resolution
//! above with its single-flight; `accounting.rs` TLSRPT session counting, over the in-process
//! [`tally`] that is flushed to the store.
//!
//! Locks: the cache's map lock is held only to read or write an entry. Network I/O happens with no
//! lock held; callers that need the same domain meanwhile wait on that domain's flight.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::cache::{
    CachedPolicy, CountStore, MemoryCache, PolicyStore, StoreError, Stores, TlsaStore, VerifiedStore,
};
use crate::cert::{CertVerifier, TrustAnchors};
use crate::counts::Day;
use crate::domain::{Domain, DomainError};
use crate::metrics::{Layer, Metrics};
use crate::mx;
use crate::policy::Mode;
pub use crate::ports::{
    AddressResolver, Clock, DnsError, Failure, Fetcher, Resolver, SystemClock, TlsaLookup, TlsaResolver,
};
use crate::txt::PolicyId;
use crate::verdict::{self, Dane, Decision, Reason, TlsOutcome, Verdict};

mod accounting;
mod certs;
mod dane;
mod overrides;
mod resolve;
pub mod tally;

pub use accounting::SessionDetails;
pub use dane::DaneInfo;
pub use overrides::{Override, OverrideAction, OverrideOrigin, PINNED_EXPIRES_AT, PINNED_ID};
use resolve::Flight;
use tally::Tally;

/// The engine's timing knobs (seconds). The defaults follow the RFC's suggestions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// How long DNS is not asked again while a live policy is cached. 0: on every check
    /// (CACHE-15). Default 300.
    pub txt_check_interval: u64,
    /// How long a domain without a policy is not asked again. Default 300.
    pub no_policy_interval: u64,
    /// Age after which a cached policy is fetched again although its id is unchanged (CACHE-5);
    /// half the policy's `max_age` when that is shorter. Default 86400.
    pub refresh_interval: u64,
    /// How long a failed fetch for one id is not retried; never less than 300 (FETCH-10).
    pub fetch_retry_interval: u64,
}

impl Timing {
    /// Whether a cached policy is due for a refresh although its id is unchanged (CACHE-5,
    /// CACHE-6): after `refresh_interval`, or after half the policy's life when that comes first,
    /// so that a short-lived policy is renewed while it still applies.
    pub fn refresh_due(&self, policy: &CachedPolicy, now: u64) -> bool {
        let half_life = u64::from(policy.policy.max_age()) / 2;
        now.saturating_sub(policy.fetched_at) >= self.refresh_interval.min(half_life)
    }
}

/// The least wait before a failed fetch is retried for the same id (FETCH-10).
pub const MIN_FETCH_RETRY: u64 = 300;

impl Default for Timing {
    fn default() -> Self {
        Self {
            txt_check_interval: 300,
            no_policy_interval: 300,
            refresh_interval: 86_400,
            fetch_retry_interval: 300,
        }
    }
}

/// Where the policy of a [`Resolution`] came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Fetched during this call.
    Network,
    /// From the cache.
    Cache,
}

impl Source {
    /// `network` or `cache`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Network => "network",
            Self::Cache => "cache",
        }
    }
}

/// What the TXT lookup of this call found, if it made one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordState {
    /// No lookup was made (the cached entry was fresh).
    NotLooked,
    /// A valid record with this id.
    Found(PolicyId),
    /// No STS record, or several, or an invalid one (see the resolution's `error`).
    Absent,
    /// The lookup failed (see the resolution's `error`).
    DnsError,
}

/// The policy state of a domain: the policy that applies, if any, and what happened on the way.
#[derive(Clone, Debug)]
pub struct Resolution {
    /// The policy to apply (never an expired one, except a `max_age: 0` policy just fetched).
    pub policy: Option<Arc<CachedPolicy>>,
    /// Whether `policy` was fetched by this call.
    pub source: Source,
    /// What the TXT lookup found.
    pub record: RecordState,
    /// Why discovery or the fetch failed, when they did (also when a cached policy still applies).
    pub error: Option<Failure>,
    /// The override that decided instead of discovery, if the domain has one: `policy` is then
    /// its pinned policy, or `None` when it skips MTA-STS; nothing was looked up.
    pub overridden: Option<Arc<Override>>,
}

impl Resolution {
    /// The mode that applies (`None` without a policy).
    pub fn mode(&self) -> Option<Mode> {
        self.policy.as_ref().map(|p| p.mode())
    }

    /// True when an operator should hear about this domain: discovery or a refresh failed while
    /// an `enforce` or `testing` policy is still being applied from the cache (CACHE-7). Not for
    /// `mode: none`.
    pub fn needs_attention(&self) -> bool {
        self.error.is_some() && matches!(self.mode(), Some(Mode::Enforce | Mode::Testing))
    }
}

/// The answer to a check.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The verdict.
    pub verdict: Verdict,
    /// Why, for failures (and `sts-*` reasons when no policy could be had).
    pub reason: Reason,
    /// The policy applied, if any.
    pub policy: Option<Arc<CachedPolicy>>,
    /// Whether the MX host matched a pattern of that policy (false without a policy, or for an
    /// MX that is not a host name).
    pub mx_matches: bool,
    /// A detail line for failures.
    pub detail: Option<Cow<'static, str>>,
    /// What DANE found for the MX, when the engine does DANE and DANE applies to the MX (or its
    /// TLSA lookup failed). `None`: MTA-STS alone decided.
    pub dane: Option<Arc<DaneInfo>>,
    /// The per-domain override applied instead of discovery, if any.
    pub overridden: Option<Arc<Override>>,
}

impl Outcome {
    /// The mode applied, if a policy applied.
    pub fn mode(&self) -> Option<Mode> {
        self.policy.as_ref().map(|p| p.mode())
    }
}

/// What the caller knows about the TLS session with the MX.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tls<'a> {
    /// Not connected yet: judge the MX name only.
    NotChecked,
    /// STARTTLS was not offered or failed.
    NotNegotiated,
    /// The chain the MX presented, leaf first (PEM or concatenated DER).
    Chain(&'a [u8]),
}

/// A bad argument to a check. (An MX that is not a host name is not an error: it matches no
/// pattern, so a policy in force fails it.)
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InputError {
    /// The policy domain is not a domain name.
    Domain(DomainError),
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Domain(e) => write!(f, "policy domain: {e}"),
        }
    }
}

impl std::error::Error for InputError {}

/// Where the persistent store stands, as a caller should see it: whether stored policies are being
/// enforced, and whether new ones are saved.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreState {
    /// No persistent store is configured (`[cache] path = "memory"`): policies live per process.
    None,
    /// The store is open for reading and writing.
    Ok,
    /// This user may read the store but not write it: stored policies are enforced, new ones are
    /// not saved (the message says which file and what to do).
    ReadOnly(String),
    /// The store could not be opened, or its last read or write failed: policies stored there are
    /// not seen, so protection is degraded (see [`OnStoreError`]).
    Unavailable(String),
}

impl StoreState {
    /// `none`, `ok`, `read-only` or `unavailable`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Ok => "ok",
            Self::ReadOnly(_) => "read-only",
            Self::Unavailable(_) => "unavailable",
        }
    }

    /// The message that goes with `read-only` and `unavailable`.
    pub fn detail(&self) -> Option<&str> {
        match self {
            Self::None | Self::Ok => None,
            Self::ReadOnly(why) | Self::Unavailable(why) => Some(why),
        }
    }
}

/// What a check does for a domain with no policy while the store is unavailable
/// (`[engine] on_store_error`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnStoreError {
    /// Carry on with what DNS and HTTPS say now (the default): a domain whose stored policy cannot
    /// be read gets no protection if discovery is blocked.
    #[default]
    Continue,
    /// Hold the mail: without a policy in memory, a check answers `fail-enforce` with the reason
    /// `store-unavailable`, so the MTA retries later instead of sending unprotected.
    Tempfail,
}

/// The MTA-STS engine: `Send + Sync`, shared by all threads of a process.
pub struct Engine {
    resolver: Box<dyn Resolver>,
    fetcher: Box<dyn Fetcher>,
    clock: Box<dyn Clock>,
    certs: CertVerifier,
    /// Shared with the engine this one replaced, if any ([`EngineBuilder::memory_cache`]).
    cache: Arc<MemoryCache>,
    store: Option<Arc<dyn PolicyStore>>,
    /// Where TLSRPT counts are flushed, if the store keeps them.
    counts: Option<Arc<dyn CountStore>>,
    /// False for a read-only store: nothing is saved to it.
    store_writable: bool,
    /// The last error of the persistent store, if any (reported once on stderr).
    store_error: Mutex<Option<String>>,
    on_store_error: OnStoreError,
    /// Seconds after which [`Engine::prune_store`] forgets a useless row.
    prune_after: u64,
    timing: Timing,
    flights: Mutex<HashMap<Domain, Arc<Flight>>>,
    /// TLSRPT session counters waiting to be flushed to the store.
    tally: Tally,
    /// DNSSEC-validated TLSA lookups of MX hosts; `None`: the engine does no DANE.
    tlsa: Option<Box<dyn TlsaResolver>>,
    /// The TLSA states of MX hosts, for their TTL.
    tlsa_cache: dane::TlsaCache,
    /// Where TLSA states are kept across processes, if the store keeps them.
    tlsa_store: Option<Arc<dyn TlsaStore>>,
    /// Where passed certificate validations are remembered across processes (`certs.rs`).
    verified_store: Option<Arc<dyn VerifiedStore>>,
    /// Chains a DANE-EE record authenticated.
    dane_memo: dane::DaneMemo,
    /// Counters for `mtasts serve --metrics` and `mtasts stats` (src/metrics.rs); shared with
    /// the engine a reload replaces this one with.
    metrics: Arc<Metrics>,
    /// Per-domain overrides: the configuration file's and the store's.
    overrides: overrides::Overrides,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("timing", &self.timing)
            .field("certs", &self.certs)
            .finish_non_exhaustive()
    }
}

/// Builds an [`Engine`].
pub struct EngineBuilder {
    resolver: Box<dyn Resolver>,
    fetcher: Box<dyn Fetcher>,
    clock: Box<dyn Clock>,
    anchors: Option<TrustAnchors>,
    timing: Timing,
    stores: Option<Stores>,
    store_error: Option<String>,
    on_store_error: OnStoreError,
    prune_after: u64,
    tlsa: Option<Box<dyn TlsaResolver>>,
    cache: Option<Arc<MemoryCache>>,
    metrics: Option<Arc<Metrics>>,
    overrides: Vec<Arc<Override>>,
}

/// Default of [`EngineBuilder::prune_after`]: 30 days.
const DEFAULT_PRUNE_AFTER: u64 = 30 * 86_400;

impl fmt::Debug for EngineBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EngineBuilder").field("timing", &self.timing).finish_non_exhaustive()
    }
}

impl EngineBuilder {
    /// Uses this clock instead of the system clock.
    pub fn clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Box::new(clock);
        self
    }

    /// Validates MX certificates against these anchors (default: the system's roots, falling back
    /// to the compiled-in Mozilla set when the system has none).
    pub fn trust_anchors(mut self, anchors: TrustAnchors) -> Self {
        self.anchors = Some(anchors);
        self
    }

    /// Sets the timing knobs. `fetch_retry_interval` is raised to 300 s if lower (FETCH-10).
    pub fn timing(mut self, timing: Timing) -> Self {
        self.timing =
            Timing { fetch_retry_interval: timing.fetch_retry_interval.max(MIN_FETCH_RETRY), ..timing };
        self
    }

    /// Keeps policies in this persistent store too (read on a miss of the in-process cache,
    /// written after every discovery), and TLSRPT counts if it keeps them: a [`SqliteStore`],
    /// a `RedisStore`, or any [`Stores`].
    ///
    /// [`SqliteStore`]: crate::cache::SqliteStore
    pub fn store(mut self, stores: impl Into<Stores>) -> Self {
        self.stores = Some(stores.into());
        self
    }

    /// Records that the configured store could not be opened: the engine works from its
    /// in-process cache, says so once on stderr, and reports [`StoreState::Unavailable`].
    pub fn store_unavailable(mut self, error: &StoreError) -> Self {
        self.stores = None;
        self.store_error = Some(error.to_string());
        self
    }

    /// What a check does for a domain without a policy while the store is unavailable.
    pub fn on_store_error(mut self, choice: OnStoreError) -> Self {
        self.on_store_error = choice;
        self
    }

    /// Does DANE (RFC 7672) for the MX hosts of checks, with this DNSSEC-validating TLSA lookup:
    /// where an MX has a secure TLSA RRset, DANE decides (RFC 8461 §2).
    pub fn tlsa_resolver(mut self, resolver: impl TlsaResolver + 'static) -> Self {
        self.tlsa = Some(Box::new(resolver));
        self
    }

    /// Applies these per-domain overrides (those of the configuration file) instead of
    /// discovery; they win over the store's for the same domain (D31). Given twice for one
    /// domain, the last wins.
    pub fn overrides(mut self, overrides: impl IntoIterator<Item = Override>) -> Self {
        self.overrides.extend(overrides.into_iter().map(Arc::new));
        self
    }

    /// Seconds after which [`Engine::prune_store`] forgets a domain without a live policy that
    /// was not looked up meanwhile (default 30 days; at least one day).
    pub fn prune_after(mut self, secs: u64) -> Self {
        self.prune_after = secs.max(86_400);
        self
    }

    /// Keeps policies in this in-process cache instead of a new, empty one: an engine built
    /// again from a changed configuration (`mtasts serve` on SIGHUP) takes over the cache of the
    /// engine it replaces ([`Engine::shared_cache`]), so that nothing is fetched again.
    pub fn memory_cache(mut self, cache: Arc<MemoryCache>) -> Self {
        self.cache = Some(cache);
        self
    }

    /// Counts into `metrics` (those of the engine this one replaces, [`Engine::shared_metrics`])
    /// instead of fresh counters, so that a reload does not reset them.
    pub fn metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The engine.
    pub fn build(self) -> Engine {
        let anchors = self.anchors.unwrap_or_else(TrustAnchors::system_lazy);
        let (store, counts, tlsa_store, verified_store) = self
            .stores
            .map_or((None, None, None, None), |s| (Some(s.policies), s.counts, s.tlsa, s.verified));
        let read_only = store.as_ref().and_then(|s| s.read_only());
        if let Some(why) = &read_only {
            crate::cache::warn(format_args!("{why}"));
        }
        if let Some(e) = &self.store_error {
            crate::cache::warn(format_args!(
                "policy store unavailable, using the in-process cache only: {e}"
            ));
        }
        Engine {
            resolver: self.resolver,
            fetcher: self.fetcher,
            clock: self.clock,
            certs: CertVerifier::new(anchors),
            cache: self.cache.unwrap_or_default(),
            store,
            counts,
            store_writable: read_only.is_none(),
            store_error: Mutex::new(self.store_error),
            on_store_error: self.on_store_error,
            prune_after: self.prune_after,
            timing: self.timing,
            flights: Mutex::new(HashMap::new()),
            tally: Tally::default(),
            tlsa: self.tlsa,
            tlsa_cache: dane::TlsaCache::default(),
            tlsa_store,
            verified_store,
            dane_memo: dane::DaneMemo::default(),
            metrics: self.metrics.unwrap_or_default(),
            overrides: overrides::Overrides::new(self.overrides),
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.flush_reports();
    }
}

impl Engine {
    /// Starts building an engine over these I/O implementations.
    pub fn builder(resolver: impl Resolver + 'static, fetcher: impl Fetcher + 'static) -> EngineBuilder {
        EngineBuilder {
            resolver: Box::new(resolver),
            fetcher: Box::new(fetcher),
            clock: Box::new(SystemClock),
            anchors: None,
            timing: Timing::default(),
            stores: None,
            store_error: None,
            on_store_error: OnStoreError::default(),
            prune_after: DEFAULT_PRUNE_AFTER,
            tlsa: None,
            cache: None,
            metrics: None,
            overrides: Vec::new(),
        }
    }

    /// The engine's counters (README "Metrics").
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Adds what the counters counted since the last flush to the store's `stats` table, so
    /// that `mtasts stats` sums every process. Done by itself every few seconds (on the next
    /// lookup), with each TLSRPT flush ([`Engine::flush_reports`], also at `exit()` through the C
    /// ABI), and when the engine is dropped. Nothing without a
    /// writable store (the counts stay in this process); a failed write is retried next time.
    pub fn flush_metrics(&self) {
        let deltas = self.metrics.take_deltas(self.clock.now());
        let Some(store) = self.counts.as_ref().filter(|_| self.store_writable) else { return };
        if deltas.is_empty() {
            return;
        }
        if let Err(e) = store.add_stats(&deltas) {
            self.metrics.untake(&deltas);
            self.report_store_error(&e);
        }
    }

    /// Counts a policy lookup, and flushes the counters when that is due.
    #[inline]
    fn count_lookup(&self, layer: Layer, now: u64) {
        self.metrics.lookup(layer);
        if self.metrics.flush_due(now) {
            self.flush_metrics();
        }
    }

    /// The timing in force.
    pub fn timing(&self) -> Timing {
        self.timing
    }

    /// The MX certificate verifier (and its trust anchors).
    pub fn cert_verifier(&self) -> &CertVerifier {
        &self.certs
    }

    /// The in-process cache.
    pub fn cache(&self) -> &MemoryCache {
        &self.cache
    }

    /// The in-process cache, to hand to the engine that replaces this one
    /// ([`EngineBuilder::memory_cache`]).
    pub fn shared_cache(&self) -> Arc<MemoryCache> {
        Arc::clone(&self.cache)
    }

    /// The engine's counters, for an engine that replaces this one ([`EngineBuilder::metrics`]).
    pub fn shared_metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// The persistent store, if one is configured.
    pub fn store(&self) -> Option<&dyn PolicyStore> {
        self.store.as_deref()
    }

    /// The last error of the persistent store, if it failed (the engine then carries on with the
    /// in-process cache alone).
    pub fn store_error(&self) -> Option<String> {
        self.store_error.lock().clone()
    }

    /// Where the persistent store stands: whether stored policies are seen and new ones saved.
    pub fn store_state(&self) -> StoreState {
        if let Some(e) = self.store_error() {
            return StoreState::Unavailable(e);
        }
        match &self.store {
            None => StoreState::None,
            Some(store) => store.read_only().map_or(StoreState::Ok, StoreState::ReadOnly),
        }
    }

    /// Why mail for a domain without a policy must be held now, if it must: the store is
    /// unavailable and `[engine] on_store_error = "tempfail"` chose to hold mail rather than send
    /// it unprotected. Every front-end asks this when it has no policy (a check answers
    /// `fail-enforce` / `store-unavailable`, `mtasts serve` a `TEMP` reply).
    pub fn holds_mail_without_policy(&self) -> Option<String> {
        if self.on_store_error != OnStoreError::Tempfail {
            return None;
        }
        match self.store_state() {
            StoreState::Unavailable(why) => Some(format!(
                "the policy store is unavailable, so a stored policy may be missed; mail is held \
                 ([engine] on_store_error = \"tempfail\"): {why}"
            )),
            _ => None,
        }
    }

    /// Records a store failure: said once on stderr, kept for [`Engine::store_error`] until the
    /// store answers again.
    pub fn report_store_error(&self, e: &StoreError) {
        let mut last = self.store_error.lock();
        if last.is_none() {
            crate::cache::warn(format_args!(
                "policy store unavailable, using the in-process cache only: {e}"
            ));
        }
        *last = Some(e.to_string());
    }

    /// The stored domains whose policy is due for a refresh at `now` ([`Timing::refresh_due`]),
    /// judged by the newer of the stored entry and the in-process one. The store answers from its
    /// indexes, so a pass that finds nothing due costs almost nothing however many domains are
    /// stored. Used by `mtasts refresh` and the refresher of `mtasts serve`.
    /// Domains with an override are never due (OVR-4).
    pub fn due_for_refresh(&self, now: u64) -> Result<Vec<Domain>, StoreError> {
        let Some(store) = &self.store else { return Ok(Vec::new()) };
        let candidates = store.due_for_refresh(now, self.timing.refresh_interval)?;
        self.overrides.refresh(store.as_ref(), now, self.override_interval(), |e| self.report_store_error(e));
        Ok(candidates
            .into_iter()
            .filter(|(domain, _)| !self.overrides.contains(domain))
            .filter(|(domain, stored)| {
                let entry = self.cache.get(domain).filter(|e| {
                    e.policy.as_ref().map(|p| p.fetched_at) >= stored.policy.as_ref().map(|p| p.fetched_at)
                });
                let entry = entry.as_ref().unwrap_or(stored);
                entry.live(now).is_some_and(|p| self.timing.refresh_due(p, now))
            })
            .map(|(domain, _)| domain)
            .collect())
    }

    /// Prunes the store (see [`PolicyStore::prune`]): rows useless for the engine's
    /// `prune_after` (`[cache] prune_after_days`, 30 days by default), and TLSRPT counts older
    /// than the reporting window ([`CountStore::prune_report_counts`]). Nothing for a read-only
    /// store. Returns the rows removed or cleared.
    pub fn prune_store(&self) -> Result<u64, StoreError> {
        let Some(store) = self.store.as_ref().filter(|_| self.store_writable) else { return Ok(0) };
        let now = self.clock.now();
        let mut removed = store.prune(now, self.prune_after)?;
        if let Some(counts) = &self.counts {
            let oldest = Day::from_unix(now.saturating_sub(crate::counts::REPORT_WINDOW_DAYS * 86_400));
            removed = removed.saturating_add(counts.prune_report_counts(oldest)?);
        }
        Ok(removed)
    }

    /// Now, by the engine's clock.
    pub fn now(&self) -> u64 {
        self.clock.now()
    }

    /// How often the store's overrides are read again: `[engine] txt_check_interval`, at least
    /// once a second.
    fn override_interval(&self) -> u64 {
        self.timing.txt_check_interval.max(1)
    }

    /// The override of `domain`, if it has one (the configuration file's first, D31). Reads the
    /// store's overrides when they are due (at most once per `txt_check_interval`).
    pub fn override_of(&self, domain: &Domain) -> Option<Arc<Override>> {
        self.override_at(domain, self.clock.now())
    }

    /// As [`Engine::override_of`], at `now`.
    fn override_at(&self, domain: &Domain, now: u64) -> Option<Arc<Override>> {
        self.overrides
            .get(domain, self.store.as_deref(), now, self.override_interval(), |e| self.report_store_error(e))
    }

    /// Every override in effect, by domain: the configuration file's, and the store's that the
    /// configuration file does not shadow (the store is read when its overrides are due).
    pub fn overrides(&self) -> Vec<Arc<Override>> {
        if let Some(store) = &self.store {
            self.overrides.refresh(store.as_ref(), self.clock.now(), self.override_interval(), |e| {
                self.report_store_error(e)
            });
        }
        self.overrides.effective()
    }

    /// Checks a delivery to `mx` for the Policy Domain `domain`. `cert` is the chain the MX
    /// presented (leaf first, PEM or DER), or `None` when no TLS was negotiated.
    pub fn check(&self, domain: &str, mx: &str, cert: Option<&[u8]>) -> Result<Outcome, InputError> {
        let tls = cert.map_or(Tls::NotNegotiated, Tls::Chain);
        self.check_with(domain, mx, tls, Dane::NotApplicable)
    }

    /// Checks only the MX name, before connecting (MX-1, MX-10).
    pub fn check_mx(&self, domain: &str, mx: &str) -> Result<Outcome, InputError> {
        self.check_with(domain, mx, Tls::NotChecked, Dane::NotApplicable)
    }

    /// The full form of a check, with what the caller knows about TLS and DANE.
    pub fn check_with(
        &self,
        domain: &str,
        mx: &str,
        tls: Tls<'_>,
        dane: Dane,
    ) -> Result<Outcome, InputError> {
        let Some(domain) = parse_policy_domain(domain)? else {
            let Decision { verdict, reason } = verdict::decide(None, false, TlsOutcome::NotChecked, dane);
            self.metrics.verdict(verdict, reason, None);
            return Ok(Outcome {
                verdict,
                reason,
                policy: None,
                mx_matches: false,
                detail: None,
                dane: None,
                overridden: None,
            });
        };
        self.cache.prefetch(&domain);
        // An MX that is not a host name (an address literal, `mx_1.evil.test`, full-width or
        // U-label spellings, ...) matches no pattern: under a policy it fails like any unlisted
        // MX. Refusing it as bad input instead would let a forged MX record turn an enforce
        // failure into an error, which callers treat as "deliver without MTA-STS"; mapping it
        // (UTS #46) would let `ｍｘ．example．com` pass as `mx.example.com` (src/mx.rs).
        let mx = mx::parse_host(mx).map_err(|e| (mx, e));
        let now = self.clock.now();
        let (resolution, layer) = self.resolve_layered(&domain, now, false);
        self.count_lookup(layer, now);
        // The engine's own DANE, unless the caller judged DANE itself (RFC 8461 §2: where DANE
        // applies, it decides).
        // The chain's memo key, worked out (at most once) for the DANE memo and the certificate
        // memo, when one of them needs it.
        let chain_key = std::cell::OnceCell::new();
        let judged = match (&mx, dane) {
            (Ok(host), Dane::NotApplicable) => Some(self.judge_dane(&domain, host, tls, &chain_key, now)),
            _ => None,
        };
        let caller_dane = dane;
        let dane = judged.as_ref().map_or(dane, |j| j.dane);
        let (mut outcome, sts_reason) = self.apply(resolution, &mx, tls, dane, &chain_key, now);
        if let Some(j) = judged {
            if let Some((reason, detail)) = j.failure {
                outcome.reason = reason;
                outcome.detail = Some(Cow::Owned(detail));
            }
            outcome.dane = j.info;
        }
        // An overridden domain does not depend on the store's policies: its mail is not held.
        if outcome.policy.is_none() && outcome.overridden.is_none() {
            if let Some(why) = self.holds_mail_without_policy() {
                outcome = Outcome {
                    verdict: Verdict::FailEnforce,
                    reason: Reason::StoreUnavailable,
                    policy: None,
                    mx_matches: false,
                    detail: Some(Cow::Owned(why)),
                    dane: None,
                    overridden: None,
                };
            }
        }
        self.metrics.verdict(outcome.verdict, outcome.reason, outcome.mode());
        log_decision(&domain, &mx, tls, layer, &outcome);
        if !matches!(tls, Tls::NotChecked) && outcome.reason != Reason::StoreUnavailable {
            // A session's outcome (after the handshake, or without TLS) counts for TLSRPT, under
            // MTA-STS with MTA-STS's own judgement, and under DANE where DANE applied.
            let host = mx.ok();
            let dane_session = match (&outcome.dane, caller_dane) {
                // The engine's own DANE: the MX host's TLSA answer, and what DANE concluded.
                (Some(info), _) => Some(accounting::DaneSession {
                    policy: tally::TlsaPolicy::Known(&info.lookup),
                    reason: if info.dane == Dane::Passed { Reason::None } else { outcome.reason },
                }),
                // The caller's own DANE: the engine did not look up the records (no DNS in a
                // check the caller judged), so the `tlsa` policy has none.
                (None, Dane::Passed | Dane::Failed | Dane::DnssecInvalid | Dane::Required) => {
                    Some(accounting::DaneSession {
                        policy: tally::TlsaPolicy::Unknown,
                        reason: match caller_dane {
                            Dane::Failed => Reason::TlsaInvalid,
                            Dane::DnssecInvalid => Reason::DnssecInvalid,
                            Dane::Required => Reason::DaneRequired,
                            _ => Reason::None,
                        },
                    })
                }
                (None, _) => None,
            };
            let session = accounting::Session {
                domain: &domain,
                policy: outcome.policy.as_ref(),
                sts_reason,
                mx: host.as_ref(),
                dane: dane_session,
                details: &SessionDetails::default(),
            };
            self.count_session(now, session);
        }
        Ok(outcome)
    }

    /// The policy state of `domain`, looking up DNS and fetching as the cache rules require.
    /// `Ok(None)` for an address literal (HOST-5).
    pub fn policy(&self, domain: &str) -> Result<Option<Resolution>, InputError> {
        Ok(parse_policy_domain(domain)?.map(|d| self.counted_resolution(&d, false)))
    }

    /// Looks up DNS now whatever the cache says, and fetches if the id changed: the step RFC 8461
    /// §5.1 requires before a message is bounced because of enforcement (APPLY-4). The negative
    /// cache still applies (FETCH-10).
    pub fn recheck(&self, domain: &str) -> Result<Option<Resolution>, InputError> {
        Ok(parse_policy_domain(domain)?.map(|d| self.counted_resolution(&d, true)))
    }

    fn counted_resolution(&self, domain: &Domain, force: bool) -> Resolution {
        let now = self.clock.now();
        let (resolution, layer) = self.resolve_layered(domain, now, force);
        self.count_lookup(layer, now);
        resolution
    }

    fn apply(
        &self,
        resolution: Resolution,
        mx: &Result<Domain, (&str, DomainError)>,
        tls: Tls<'_>,
        dane: Dane,
        chain_key: &std::cell::OnceCell<u64>,
        now: u64,
    ) -> (Outcome, Reason) {
        let mx_name = mx.as_ref().map_err(|(raw, e)| format!("`{raw}` is not a host name ({e}) and"));
        let mx = mx.as_ref().ok();
        let mode = resolution.mode();
        let mx_matches = match (&resolution.policy, mx) {
            (Some(p), Some(mx)) => p.policy.matches_mx(mx),
            _ => false,
        };
        let mut detail = None;
        let tls = match tls {
            Tls::NotChecked => TlsOutcome::NotChecked,
            Tls::NotNegotiated => TlsOutcome::NotNegotiated,
            // Certificates are judged only when a policy applies and the name matched (APPLY-1).
            Tls::Chain(_) if !mx_matches || !matches!(mode, Some(Mode::Enforce | Mode::Testing)) => {
                TlsOutcome::NotChecked
            }
            Tls::Chain(chain) => match mx.map(|mx| {
                let key = *chain_key.get_or_init(|| crate::cert::memo_key(chain, mx));
                self.verify_chain(key, chain, mx, now)
            }) {
                Some(Ok(())) => TlsOutcome::Valid,
                Some(Err(f)) => {
                    detail = Some(Cow::Owned(f.detail));
                    TlsOutcome::Invalid(f.reason)
                }
                None => TlsOutcome::NotChecked,
            },
        };
        let Decision { verdict, mut reason } = verdict::decide(mode, mx_matches, tls, dane);
        // What MTA-STS alone made of the session, for its TLSRPT counts (where DANE applied, the
        // verdict's reason is DANE's).
        let sts_reason = if dane.applies() {
            verdict::decide(mode, mx_matches, tls, Dane::NotApplicable).reason
        } else {
            reason
        };
        if reason == Reason::MxMismatch {
            detail = Some(Cow::Owned(match &mx_name {
                Ok(host) => format!("{host} matches no mx pattern of the policy"),
                Err(not_a_host) => format!("{not_a_host} matches no mx pattern of the policy"),
            }));
        }
        if reason == Reason::StarttlsNotSupported {
            detail = Some(Cow::Borrowed("no TLS session: STARTTLS was not offered or the handshake failed"));
        }
        if resolution.policy.is_none() && reason == Reason::None {
            // Say why there is no policy when discovery or the fetch failed (FETCH-11). A cached
            // `none` policy reports nothing (APPLY-10).
            if let Some(e) = &resolution.error {
                reason = e.reason;
                detail = Some(Cow::Owned(e.detail.clone()));
            }
            // Or that an override skips MTA-STS for the domain (OVR-2).
            if let Some(o) = &resolution.overridden {
                detail = Some(Cow::Owned(o.to_string()));
            }
        }
        (
            Outcome {
                verdict,
                reason,
                policy: resolution.policy,
                mx_matches,
                detail,
                dane: None,
                overridden: resolution.overridden,
            },
            sts_reason,
        )
    }
}

/// The decision log: one `info` event per check under the target `mtasts::decision`
/// (`crate::logging`), with the fields an operator searches by. `override` is `none` or
/// `pinned` for an overridden domain (its `source` is then `override`), empty otherwise.
fn log_decision(
    domain: &Domain,
    mx: &Result<Domain, (&str, DomainError)>,
    tls: Tls<'_>,
    layer: Layer,
    o: &Outcome,
) {
    if !tracing::enabled!(target: "mtasts::decision", tracing::Level::INFO) {
        return;
    }
    let mx = match mx {
        Ok(host) => host.as_str(),
        Err((raw, _)) => raw,
    };
    let stage = match tls {
        Tls::NotChecked => "before-connect",
        Tls::NotNegotiated => "no-tls",
        Tls::Chain(_) => "tls",
    };
    let dane = o.dane.as_ref().map_or("not-applicable", |d| d.dane.as_str());
    tracing::info!(
        target: "mtasts::decision",
        domain = domain.as_str(),
        mx,
        stage,
        verdict = o.verdict.as_str(),
        reason = o.reason.as_str(),
        mode = o.mode().map_or("none", |m| m.as_str()),
        policy_id = o.policy.as_ref().map_or("", |p| p.id.as_str()),
        source = match (&o.policy, layer) {
            (None, _) => "none",
            (Some(_), Layer::Store) => "store",
            (Some(_), Layer::Network) => "network",
            // A policy from the in-process cache, whether or not DNS was asked meanwhile.
            (Some(_), Layer::Memory | Layer::Dns) => "memory",
            (Some(_), Layer::Override) => "override",
        },
        "override" = o.overridden.as_ref().map_or("", |o| o.action_str()),
        dane,
        detail = o.detail.as_deref().unwrap_or(""),
        "decision"
    );
}

/// Parses the Policy Domain; `Ok(None)` for an address literal, which has no policy (HOST-5).
fn parse_policy_domain(domain: &str) -> Result<Option<Domain>, InputError> {
    match Domain::parse(domain) {
        Ok(d) => Ok(Some(d)),
        Err(DomainError::AddressLiteral) => Ok(None),
        Err(e) => Err(InputError::Domain(e)),
    }
}
