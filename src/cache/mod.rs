//! What the engine remembers per Policy Domain (RFC 8461 §3.3, §5.1, §10.2).
//!
//! An [`Entry`] holds the last valid policy with its TXT id and fetch time, when DNS was last
//! asked, and the last failed fetch (the negative cache of FETCH-10). The rules that read and
//! write entries live in [`crate::engine`]; the stores here only keep them.
//!
//! Two layers: the in-process [`MemoryCache`], which every check reads first, and an optional
//! persistent [`PolicyStore`] shared by processes ([`SqliteStore`] by default; Redis for fleets), which
//! makes policies survive process exits and restarts (RFC 8461 §10.2, CACHE-12): without it an
//! attacker who blocks discovery would defeat MTA-STS after a restart, and an MTA that starts a
//! process per delivery would fetch every policy for every message.

mod memory;
#[cfg(feature = "redis")]
mod redis;
mod sqlite;
mod table;

use std::fmt;
use std::sync::Arc;

pub use memory::{EntryRef, MemoryCache};
#[cfg(feature = "redis")]
pub use redis::RedisStore;
pub use sqlite::SqliteStore;

use crate::counts::{Day, DayCounts, DeliveryState};
use crate::domain::Domain;
use crate::ports::{MxLookup, MxRecord, Security, TlsaLookup};

/// The schema version of the SQLite store this build writes.
pub fn sqlite_schema_version() -> i64 {
    sqlite::SCHEMA_VERSION
}

/// A persistent store of [`Entry`]s, shared by processes. Implementations are `Send + Sync`,
/// safe across `fork()` (a child opens its own connection), and keep the newest policy when two
/// processes write the same domain.
pub trait PolicyStore: Send + Sync + fmt::Debug {
    /// The entry of `domain`, if stored.
    fn load(&self, domain: &Domain) -> Result<Option<Entry>, StoreError>;
    /// Stores the entry of `domain` as [`Entry::saved_over`] says: a stored policy fetched later
    /// than `entry`'s is kept.
    fn save(&self, domain: &Domain, entry: &Entry) -> Result<(), StoreError>;
    /// Stores several entries as [`Self::save`] would, one after the other. SQLite writes them
    /// in one transaction (one commit, one WAL append) instead of one each.
    fn save_many(&self, entries: &[(&Domain, &Entry)]) -> Result<(), StoreError> {
        entries.iter().try_for_each(|(domain, entry)| self.save(domain, entry))
    }
    /// Writes whatever this store has accepted but not written yet (`mtasts serve` queues its
    /// writes, see docs/architecture.md); the stores of the library write at once and have
    /// nothing to do.
    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// Every stored domain with its entry.
    fn list(&self) -> Result<Vec<(Domain, Entry)>, StoreError>;
    /// Removes a domain; true if it was stored.
    fn remove(&self, domain: &Domain) -> Result<bool, StoreError>;
    /// Where the store lives, for messages (`/var/lib/mtasts/policies.sqlite`, `redis://...`).
    fn location(&self) -> String;

    /// The stored domains whose live policy may be due for a refresh at `now`: fetched at least
    /// `refresh_interval` seconds ago, or at least half its `max_age` ago. A superset of what
    /// [`crate::engine::Timing::refresh_due`] selects (the caller applies the exact rule), read
    /// without visiting every row where the backend can (SQLite uses its indexes).
    fn due_for_refresh(&self, now: u64, refresh_interval: u64) -> Result<Vec<(Domain, Entry)>, StoreError> {
        Ok(self
            .list()?
            .into_iter()
            .filter(|(_, e)| {
                e.live(now).is_some_and(|p| {
                    let age = now.saturating_sub(p.fetched_at);
                    age >= refresh_interval || age >= u64::from(p.policy.max_age()) / 2
                })
            })
            .collect())
    }

    /// Forgets what has been useless for `keep` seconds: domains without a policy not looked up
    /// since `now - keep`, and policies that expired before then (with their rows when the domain
    /// was not looked up since either). Returns the number of rows removed or cleared. A store
    /// that expires its data by itself (Redis) does nothing.
    fn prune(&self, now: u64, keep: u64) -> Result<u64, StoreError> {
        let _ = (now, keep);
        Ok(0)
    }

    /// Why nothing is saved, when this user may read the store but not write it. A read-only
    /// store still serves every policy it holds; writes fail with this message.
    fn read_only(&self) -> Option<String> {
        None
    }

    /// How many stored policies are live at `now`, by mode (`enforce`, `testing`, `none`), for
    /// the `mtasts_policies_stored` gauge. SQLite counts in one query; other backends read
    /// every entry.
    fn count_by_mode(&self, now: u64) -> Result<[u64; 3], StoreError> {
        let mut counts = [0u64; 3];
        for (_, entry) in self.list()? {
            if let Some(p) = entry.live(now) {
                counts[mode_index(p.mode())] += 1;
            }
        }
        Ok(counts)
    }

    /// The per-domain overrides kept in the store (`mtasts override set`), by domain. A store
    /// that keeps none answers an empty list.
    fn overrides(&self) -> Result<Vec<StoredOverride>, StoreError> {
        Ok(Vec::new())
    }

    /// Sets (or replaces) the override of `o.domain`.
    fn override_set(&self, o: &StoredOverride) -> Result<(), StoreError> {
        let _ = o;
        Err(StoreError(format!("{}: this store keeps no overrides", self.location())))
    }

    /// Removes the override of `domain`; true if there was one.
    fn override_clear(&self, domain: &Domain) -> Result<bool, StoreError> {
        let _ = domain;
        Err(StoreError(format!("{}: this store keeps no overrides", self.location())))
    }
}

/// The index of a mode in [`PolicyStore::count_by_mode`].
fn mode_index(mode: Mode) -> usize {
    match mode {
        Mode::Enforce => 0,
        Mode::Testing => 1,
        Mode::None => 2,
    }
}

/// A per-domain override as a store keeps it: MTA-STS skipped (`policy_text` `None`, the
/// `mode = "none"` of the configuration file) or a pinned policy, kept as its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredOverride {
    /// The Policy Domain.
    pub domain: Domain,
    /// The pinned policy's text; `None`: MTA-STS is skipped for the domain.
    pub policy_text: Option<String>,
    /// When it was set (Unix seconds).
    pub set_at: u64,
}

/// A persistent store of TLSRPT session counts (RFC 8460), shared by processes and hosts: the
/// engine adds what it counted, the report pipeline reads a day back. SQLite and Redis keep them.
pub trait CountStore: Send + Sync + fmt::Debug {
    /// Adds TLSRPT session counts for one UTC day. Counts from many processes add up exactly:
    /// each call is one atomic increment per counter.
    fn add_report_counts(&self, day: Day, counts: &DayCounts) -> Result<(), StoreError> {
        self.add_all(&[], &[(day, counts)])
    }

    /// The TLSRPT counts of one UTC day.
    fn report_counts(&self, day: Day) -> Result<DayCounts, StoreError>;

    /// Forgets the counts of days before `oldest_report_day`; returns the number of counters removed.
    /// A store that expires its counts by itself (Redis) does nothing.
    fn prune_report_counts(&self, oldest_report_day: Day) -> Result<u64, StoreError>;

    /// Adds engine counters (`crate::metrics`): `(key, increment)` pairs, each an atomic
    /// increment, so that the counts of many processes add up (`mtasts stats`).
    fn add_stats(&self, deltas: &[(&str, u64)]) -> Result<(), StoreError> {
        self.add_all(deltas, &[])
    }

    /// The engine counters summed over every process that flushed to this store.
    fn stats(&self) -> Result<Vec<(String, u64)>, StoreError>;

    /// Adds engine counters and TLSRPT counts of any number of days in one write (SQLite: one
    /// transaction; Redis: one atomic pipeline): all of them are added, or none (so that a caller
    /// may keep everything to retry on an error without counting anything twice). An engine's
    /// flush, and so each short-lived process's exit, writes this way.
    fn add_all(&self, stats: &[(&str, u64)], days: &[(Day, &DayCounts)]) -> Result<(), StoreError>;
}

/// A persistent queue of built TLSRPT reports and where their delivery stands, so that a restart
/// neither forgets a report nor sends it twice. The SQLite and Redis stores keep one; with Redis,
/// every host of a fleet sees the same queue and [`OutboxStore::outbox_claim`] lets one of them
/// send each report (RPT-25).
pub trait OutboxStore: Send + Sync + fmt::Debug {
    /// Queues a built report for delivery; false (and nothing changed) if a report for the same
    /// day and domain is already queued, so that building twice never sends twice.
    fn outbox_put(&self, item: &OutboxItem) -> Result<bool, StoreError>;

    /// Every queued report, delivered or not.
    fn outbox(&self) -> Result<Vec<OutboxItem>, StoreError>;

    /// Records where the delivery of a queued report stands, and releases its claim.
    fn outbox_update(&self, report_id: &str, state: &DeliveryState) -> Result<(), StoreError>;

    /// Takes a queued report for one delivery attempt, atomically, so that of several processes
    /// or hosts sending at once exactly one attempts it. `seen` is the state the caller read:
    /// the claim fails (false) when the report is claimed by another, or when its state has moved
    /// on since (another attempt was made, or it is done). Held until [`Self::outbox_update`],
    /// or for `lease` seconds after `now` if the holder dies.
    fn outbox_claim(
        &self,
        report_id: &str,
        seen: &DeliveryState,
        now: u64,
        lease: u64,
    ) -> Result<bool, StoreError>;
}

/// DANE answers (the TLSA state of MX hosts) kept across processes until they expire, so that a
/// fresh process (Exim starts one per delivery) does not walk the DNSSEC chain of trust again.
pub trait TlsaStore: Send + Sync + fmt::Debug {
    /// The stored TLSA state of `host`, if one is stored and has not expired at `now`, with the
    /// time it expires.
    fn tlsa_load(&self, host: &Domain, now: u64) -> Result<Option<(TlsaLookup, u64)>, StoreError>;
    /// Stores the TLSA state of `host` until `expires_at`.
    fn tlsa_save(&self, host: &Domain, lookup: &TlsaLookup, expires_at: u64) -> Result<(), StoreError>;
    /// The stored MX RRset of `domain` with its security, if stored and unexpired at `now`.
    fn mx_load(&self, domain: &Domain, now: u64) -> Result<Option<(MxLookup, u64)>, StoreError>;
    /// Stores the MX RRset of `domain` until `expires_at`.
    fn mx_save(&self, domain: &Domain, lookup: &MxLookup, expires_at: u64) -> Result<(), StoreError>;
    /// Stores several answers as [`Self::tlsa_save`] and [`Self::mx_save`] would (`mtasts
    /// serve`'s write-behind); SQLite writes them in one transaction instead of one each.
    fn save_answers(
        &self,
        tlsa: &[(&Domain, &TlsaLookup, u64)],
        mx: &[(&Domain, &MxLookup, u64)],
    ) -> Result<(), StoreError> {
        tlsa.iter().try_for_each(|(host, lookup, until)| self.tlsa_save(host, lookup, *until))?;
        mx.iter().try_for_each(|(domain, lookup, until)| self.mx_save(domain, lookup, *until))
    }
}

/// MX certificate validations that passed, kept across processes until they expire
/// (docs/architecture.md, "Remembered validations"; `src/engine/certs.rs`).
pub trait VerifiedStore: Send + Sync + fmt::Debug {
    /// The validation remembered under `digest` (the digest of the anchors' identity, the host
    /// and the chain: `crate::cert::CertVerifier`), if stored and unexpired at `now`: the time
    /// from which it holds (the chain's latest `notBefore`) and the time it expires.
    fn verified_load(&self, digest: &[u8; 32], now: u64) -> Result<Option<(u64, u64)>, StoreError>;
    /// Remembers a passed validation under `digest`, holding from `valid_from` until `expires_at`
    /// (`now` being the engine's time, for a store whose keys expire after a delay).
    fn verified_save(
        &self,
        digest: &[u8; 32],
        valid_from: u64,
        now: u64,
        expires_at: u64,
    ) -> Result<(), StoreError>;
}

/// A digest in lower-case hex, as the stores name a remembered validation.
pub(crate) fn digest_hex(digest: &[u8; 32]) -> String {
    // By table, not `write!`: a delivery process formats one or two of these.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(64);
    for b in digest {
        hex.push(char::from(HEX[usize::from(b >> 4)]));
        hex.push(char::from(HEX[usize::from(b & 15)]));
    }
    hex
}

/// An MX answer as stored text: `records secure|insecure TTL [PREFERENCE EXCHANGE]...`,
/// `bogus WHY` or `failed WHY`.
pub(crate) fn mx_to_text(lookup: &MxLookup) -> String {
    match lookup {
        MxLookup::Records { records, security, ttl } => {
            let security = if *security == Security::Secure { "secure" } else { "insecure" };
            let mut out = format!("records {security} {ttl}");
            for r in records {
                out.push_str(&format!(" {} {}", r.preference, r.exchange));
            }
            out
        }
        MxLookup::Bogus(why) => format!("bogus {why}"),
        MxLookup::Failed(why) => format!("failed {why}"),
    }
}

/// The inverse of [`mx_to_text`]; `None` for text it did not write.
pub(crate) fn mx_from_text(text: &str) -> Option<MxLookup> {
    let (kind, rest) = text.split_once(' ').unwrap_or((text, ""));
    match kind {
        "bogus" => Some(MxLookup::Bogus(rest.to_owned())),
        "failed" => Some(MxLookup::Failed(rest.to_owned())),
        "records" => {
            let mut words = rest.split(' ').filter(|w| !w.is_empty());
            let security = match words.next()? {
                "secure" => Security::Secure,
                "insecure" => Security::Insecure,
                _ => return None,
            };
            let ttl = words.next()?.parse().ok()?;
            let words: Vec<&str> = words.collect();
            let mut records = Vec::new();
            for chunk in words.chunks(2) {
                let [preference, exchange] = chunk else { return None };
                records.push(MxRecord {
                    preference: preference.parse().ok()?,
                    exchange: (*exchange).to_owned(),
                });
            }
            Some(MxLookup::Records { records, security, ttl })
        }
        _ => None,
    }
}

/// A TLSA state as stored text: `none`, `secure TTL [base=NAME] [USAGE SELECTOR MATCHING HEX]...`,
/// `bogus WHY` or `failed WHY`.
pub(crate) fn tlsa_to_text(lookup: &TlsaLookup) -> String {
    match lookup {
        TlsaLookup::NotApplicable => "none".into(),
        TlsaLookup::Secure { records, ttl, base } => {
            let mut out = format!("secure {ttl}");
            if let Some(base) = base {
                out.push_str(&format!(" base={base}"));
            }
            for r in records {
                out.push_str(&format!(" {r}"));
            }
            out
        }
        TlsaLookup::Bogus(why) => format!("bogus {why}"),
        TlsaLookup::Failed(why) => format!("failed {why}"),
    }
}

/// The inverse of [`tlsa_to_text`]; `None` for text it did not write.
pub(crate) fn tlsa_from_text(text: &str) -> Option<TlsaLookup> {
    let (kind, rest) = text.split_once(' ').unwrap_or((text, ""));
    match kind {
        "none" => Some(TlsaLookup::NotApplicable),
        "bogus" => Some(TlsaLookup::Bogus(rest.to_owned())),
        "failed" => Some(TlsaLookup::Failed(rest.to_owned())),
        "secure" => {
            let mut words = rest.split(' ').filter(|w| !w.is_empty());
            let ttl = words.next()?.parse().ok()?;
            let mut words = words.peekable();
            let base = match words.peek().and_then(|w| w.strip_prefix("base=")) {
                Some(name) => {
                    let base = Domain::parse_ascii(name).ok()?;
                    words.next();
                    Some(base)
                }
                None => None,
            };
            let words: Vec<&str> = words.collect();
            let mut records = Vec::new();
            for chunk in words.chunks(4) {
                let [usage, selector, matching, hex] = chunk else { return None };
                if hex.len() % 2 != 0 {
                    return None;
                }
                let data = (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
                    .collect::<Option<Vec<u8>>>()?;
                records.push(crate::ports::TlsaRecord {
                    usage: usage.parse().ok()?,
                    selector: selector.parse().ok()?,
                    matching_type: matching.parse().ok()?,
                    data,
                });
            }
            Some(TlsaLookup::Secure { records, ttl, base })
        }
        _ => None,
    }
}

/// The persistent stores of one backend: policies always; TLSRPT counts, the report outbox, DANE
/// answers and remembered validations where the backend keeps them (SQLite keeps all, Redis all
/// but DANE answers). Several may be the same object.
#[derive(Clone, Debug)]
pub struct Stores {
    /// The policies.
    pub policies: Arc<dyn PolicyStore>,
    /// The TLSRPT counts, if this backend keeps them.
    pub counts: Option<Arc<dyn CountStore>>,
    /// The TLSRPT report outbox, if this backend keeps one.
    pub outbox: Option<Arc<dyn OutboxStore>>,
    /// DANE answers, if this backend keeps them.
    pub tlsa: Option<Arc<dyn TlsaStore>>,
    /// Remembered certificate validations, if this backend keeps them.
    pub verified: Option<Arc<dyn VerifiedStore>>,
}

impl Stores {
    /// A backend that keeps policies only.
    pub fn policies_only(policies: Arc<dyn PolicyStore>) -> Self {
        Self { policies, counts: None, outbox: None, tlsa: None, verified: None }
    }

    /// The counts and the outbox, which `mtasts report` needs, or why this backend has none.
    pub fn reports(&self) -> Result<ReportStores, StoreError> {
        match (&self.counts, &self.outbox) {
            (Some(counts), Some(outbox)) => {
                Ok(ReportStores { counts: Arc::clone(counts), outbox: Arc::clone(outbox) })
            }
            _ => Err(StoreError(format!(
                "{}: this store keeps no TLSRPT report outbox; reports need the SQLite store ([cache] path)",
                self.policies.location()
            ))),
        }
    }
}

/// What TLSRPT reports are built from and queued in (see [`Stores::reports`]).
#[derive(Clone, Debug)]
pub struct ReportStores {
    /// The day counts a report is built from.
    pub counts: Arc<dyn CountStore>,
    /// The queue of built reports.
    pub outbox: Arc<dyn OutboxStore>,
}

impl From<SqliteStore> for Stores {
    fn from(store: SqliteStore) -> Self {
        let store = Arc::new(store);
        Self {
            policies: store.clone(),
            counts: Some(store.clone()),
            outbox: Some(store.clone()),
            tlsa: Some(store.clone()),
            verified: Some(store),
        }
    }
}

#[cfg(feature = "redis")]
impl From<RedisStore> for Stores {
    fn from(store: RedisStore) -> Self {
        let store = Arc::new(store);
        Self {
            policies: store.clone(),
            counts: Some(store.clone()),
            outbox: Some(store.clone()),
            tlsa: None,
            verified: Some(store),
        }
    }
}

/// A TLSRPT report waiting for (or done with) delivery: enough to rebuild the identical report
/// after a restart, and where its delivery stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxItem {
    /// The report's id (also its Message-ID when mailed).
    pub report_id: String,
    /// The UTC day reported.
    pub day: Day,
    /// The policy domain reported on.
    pub domain: Domain,
    /// The counts of that domain for that day.
    pub counts: DayCounts,
    /// The domain's `_smtp._tls` record as found when the report was built (its `rua`).
    pub record: String,
    /// Where delivery stands.
    pub state: DeliveryState,
}

/// A store that cannot be opened, read or written. The message names the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreError(pub String);

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StoreError {}

use crate::policy::{Mode, Policy};
pub use crate::ports::Failure;
use crate::txt::PolicyId;
use crate::verdict::Reason;

/// A policy that was fetched and parsed, with the facts needed to apply and expire it.
///
/// The fields a cached check reads (`expires_at`, `fetched_at`, the policy's mode and patterns)
/// come first, in this order (`repr(C)`), so that with the reference count of its `Arc` they
/// share one cache line: a check of a domain not read lately misses the CPU caches once for its
/// policy instead of twice (BENCHMARKS.md, "Scale").
#[derive(Clone, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct CachedPolicy {
    /// `fetched_at + max_age` (CACHE-1).
    pub expires_at: u64,
    /// When the fetch succeeded (Unix seconds, FETCH-18).
    pub fetched_at: u64,
    /// The parsed policy.
    pub policy: Policy,
    /// The TXT id in force when it was fetched.
    pub id: PolicyId,
    /// The body as served (for reports and for `mtasts check`).
    pub text: String,
}

impl CachedPolicy {
    /// Builds the cache form of a policy fetched at `fetched_at`.
    pub fn new(policy: Policy, id: PolicyId, text: String, fetched_at: u64) -> Self {
        let expires_at = fetched_at.saturating_add(u64::from(policy.max_age()));
        Self { policy, id, text, fetched_at, expires_at }
    }

    /// Whether the policy may still be applied at `now` (CACHE-1, CACHE-10).
    pub fn is_live(&self, now: u64) -> bool {
        now < self.expires_at
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        self.policy.mode()
    }
}

/// A failed fetch for one TXT id, remembered so that it is not retried too soon (FETCH-10).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailedFetch {
    /// The id whose policy could not be fetched.
    pub id: PolicyId,
    /// When (Unix seconds).
    pub at: u64,
    /// Why.
    pub failure: Failure,
}

/// Everything remembered about one Policy Domain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    /// The last valid policy, possibly expired (an expired one is never applied).
    pub policy: Option<Arc<CachedPolicy>>,
    /// When the TXT record was last looked up (Unix seconds), whatever the answer.
    pub checked_at: u64,
    /// The last failed fetch, cleared by a successful one.
    pub failed: Option<FailedFetch>,
}

impl Entry {
    /// This (stored) entry with `next` saved over it: the rule of every [`PolicyStore::save`].
    /// The TXT lookup time only moves forward, the failure is `next`'s, and `next`'s policy
    /// replaces the stored one unless the stored one was fetched later (two processes writing
    /// the same domain keep the newest policy). SQLite's `save_in` and Redis's save script
    /// apply the same rule inside the store, atomically.
    pub fn saved_over(mut self, next: &Entry) -> Entry {
        self.checked_at = self.checked_at.max(next.checked_at);
        self.failed.clone_from(&next.failed);
        if let Some(p) = &next.policy {
            if self.policy.as_ref().is_none_or(|w| w.fetched_at <= p.fetched_at) {
                self.policy = Some(Arc::clone(p));
            }
        }
        self
    }
}

/// Says something an operator should know, as a `warn` event (`crate::logging`); on standard
/// error when the process has no subscriber (never a panic if stderr is closed: this runs inside
/// MTAs).
pub(crate) fn warn(message: fmt::Arguments<'_>) {
    if tracing::dispatcher::has_been_set() {
        tracing::warn!(target: "mtasts", "{message}");
    } else {
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "mtasts: {message}");
    }
}

/// Rebuilds a stored policy from its columns. The text is parsed again, so a stored policy obeys
/// exactly the rules of a fetched one.
pub(crate) fn stored_policy(text: String, id: &str, fetched_at: u64) -> Result<Arc<CachedPolicy>, String> {
    let parsed = Policy::parse(text.as_bytes()).map_err(|e| e.to_string())?;
    let id = PolicyId::parse(id).map_err(|e| e.to_string())?;
    Ok(Arc::new(CachedPolicy::new(parsed, id, text, fetched_at)))
}

/// Rebuilds a stored failed fetch. Unreadable metadata (an unknown reason, a bad id) is dropped
/// with a warning: it only delays a retry, and must never cost the valid policy stored beside it.
pub(crate) fn stored_failure(
    location: &str,
    domain: &Domain,
    id: &str,
    at: u64,
    reason: &str,
    detail: String,
) -> Option<FailedFetch> {
    let parsed = PolicyId::parse(id).map_err(|e| format!("id `{id}`: {e}")).and_then(|id| {
        let reason = Reason::parse(reason).ok_or_else(|| format!("unknown reason `{reason}`"))?;
        Ok(FailedFetch { id, at, failure: Failure { reason, detail } })
    });
    match parsed {
        Ok(failed) => Some(failed),
        Err(why) => {
            warn(format_args!("{location}: entry for {domain}: failed-fetch record ignored ({why})"));
            None
        }
    }
}

impl Entry {
    /// The policy if it may be applied at `now`.
    pub fn live(&self, now: u64) -> Option<&Arc<CachedPolicy>> {
        self.policy.as_ref().filter(|p| p.is_live(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::TlsaRecord;

    #[test]
    fn mx_answers_round_trip_as_text() {
        let mx = |preference, exchange: &str| MxRecord { preference, exchange: exchange.into() };
        for lookup in [
            MxLookup::Records { records: vec![], security: Security::Secure, ttl: 60 },
            MxLookup::Records {
                records: vec![mx(10, "mx1.example.com"), mx(20, "mx2.example.com")],
                security: Security::Insecure,
                ttl: 3600,
            },
            MxLookup::Bogus("RRSIG expired".into()),
            MxLookup::Failed("timed out after 5000 ms".into()),
        ] {
            assert_eq!(mx_from_text(&mx_to_text(&lookup)), Some(lookup.clone()), "{lookup:?}");
        }
        for bad in ["", "records", "records maybe 60", "records secure x", "records secure 60 10", "what"] {
            assert_eq!(mx_from_text(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn tlsa_answers_round_trip_as_text() {
        let record =
            |usage, data: &[u8]| TlsaRecord { usage, selector: 1, matching_type: 1, data: data.to_vec() };
        for lookup in [
            TlsaLookup::NotApplicable,
            TlsaLookup::Secure { records: vec![], ttl: 60, base: None },
            TlsaLookup::Secure {
                records: vec![record(3, &[0xab; 32]), record(2, &[0, 1, 0xff])],
                ttl: 3600,
                base: None,
            },
            TlsaLookup::Secure {
                records: vec![record(2, &[7; 32])],
                ttl: 60,
                base: Some(Domain::parse_ascii("mail.provider.example").unwrap()),
            },
            TlsaLookup::Bogus("RRSIG expired on _25._tcp.mx.example.test".into()),
            TlsaLookup::Failed("timed out".into()),
        ] {
            assert_eq!(tlsa_from_text(&tlsa_to_text(&lookup)), Some(lookup.clone()), "{lookup:?}");
        }
        for bad in [
            "",
            "secure",
            "secure x",
            "secure 60 3 1 1",
            "secure 60 3 1 1 abc",
            "secure 60 3 1 1 zz",
            "other",
        ] {
            assert_eq!(tlsa_from_text(bad), None, "{bad:?}");
        }
    }
}
