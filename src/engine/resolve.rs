//! Resolution: the policy state of a domain from the in-process cache, the persistent store and,
//! when the cache rules ask for it, DNS and the policy fetch, with one discovery in flight per
//! domain (RFC 8461 §3, §5.1; CACHE-1..15, FETCH-10..12).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::{Condvar, Mutex};

use super::{Engine, Override, RecordState, Resolution, Source};
use crate::cache::{CachedPolicy, Entry, EntryRef, FailedFetch};
use crate::counts::{FailureKey, ResultType};
use crate::domain::Domain;
use crate::metrics::{DiscoveryResult, DnsKind, Layer};
use crate::policy::{Mode, Policy};
use crate::ports::{DnsError, Failure};
use crate::txt::{self, Discovery};
use crate::verdict::Reason;

/// One discovery in progress for a domain; other callers wait for its result.
#[derive(Default)]
pub(super) struct Flight {
    result: Mutex<Option<Resolution>>,
    done: Condvar,
    /// Callers waiting for this flight's result.
    waiters: AtomicUsize,
}

/// Removes the flight and wakes the waiters even if discovery panics.
struct FlightGuard<'a> {
    engine: &'a Engine,
    domain: &'a Domain,
    flight: Arc<Flight>,
}

impl Drop for FlightGuard<'_> {
    fn drop(&mut self) {
        self.engine.flights.lock().remove(self.domain);
        let _result = self.flight.result.lock();
        self.flight.done.notify_all();
    }
}

impl Engine {
    /// Forgets a run-time store failure once the store answers again.
    fn store_answered(&self) {
        if self.store.is_some() {
            let mut last = self.store_error.lock();
            if last.is_some() {
                crate::cache::warn(format_args!("policy store available again"));
                *last = None;
            }
        }
    }

    /// Fills an empty in-process entry from the persistent store (a miss of the memory layer).
    /// `Some(true)` when the store had the domain, `Some(false)` when it answered that it has
    /// not, `None` when it was not asked (the memory layer has the domain) or failed.
    fn warm_from_store(&self, domain: &Domain, now: u64) -> Option<bool> {
        let store = self.store.as_ref()?;
        if self.cache.read(domain, |e| e.is_some()) {
            return None;
        }
        match store.load(domain) {
            Ok(Some(stored)) => {
                self.store_answered();
                self.cache.update(domain, now, |e| {
                    if *e == Entry::default() {
                        *e = stored;
                    }
                });
                Some(true)
            }
            Ok(None) => {
                self.store_answered();
                Some(false)
            }
            Err(e) => {
                self.report_store_error(&e);
                None
            }
        }
    }

    /// The newer of the in-process entry and the stored one, so that a policy another process
    /// fetched (or `mtasts refresh` refreshed) is not fetched again. With `store_checked` (this
    /// lookup has just found the domain missing from the store) the store is not read again.
    fn merged_entry(&self, domain: &Domain, store_checked: bool) -> Entry {
        let mut entry = self.cache.get(domain).unwrap_or_default();
        if let Some(store) = self.store.as_ref().filter(|_| !store_checked) {
            match store.load(domain) {
                Ok(Some(stored)) => {
                    let newer = |a: &Entry, b: &Entry| {
                        a.policy.as_ref().map(|p| p.fetched_at) > b.policy.as_ref().map(|p| p.fetched_at)
                    };
                    if newer(&stored, &entry) {
                        entry.policy = stored.policy;
                    }
                    entry.checked_at = entry.checked_at.max(stored.checked_at);
                    if entry.failed.as_ref().map(|f| f.at) < stored.failed.as_ref().map(|f| f.at) {
                        entry.failed = stored.failed;
                    }
                }
                Ok(None) => {}
                Err(e) => self.report_store_error(&e),
            }
        }
        entry
    }

    /// The policy state of `domain` at `now`; `force` skips the DNS check intervals.
    pub(super) fn resolve_at(&self, domain: &Domain, now: u64, force: bool) -> Resolution {
        self.resolve_layered(domain, now, force).0
    }

    /// As [`Self::resolve_at`], with the layer the answer came from: `Memory`, `Store` (loaded
    /// from the persistent store by this call), `Dns` (DNS asked, nothing fetched), `Network`
    /// (fetched by this call) or `Override` (a per-domain override decided: no DNS, no fetch, no
    /// cache), for the decision log and the metrics.
    pub(super) fn resolve_layered(&self, domain: &Domain, now: u64, force: bool) -> (Resolution, Layer) {
        // An override decides instead of discovery: no DNS, no fetch, no cache (OVR-1..3).
        if let Some(o) = self.override_at(domain, now) {
            log_override(&o);
            let resolution = Resolution {
                policy: o.pinned_policy().cloned(),
                source: Source::Cache,
                record: RecordState::NotLooked,
                error: None,
                overridden: Some(o),
            };
            return (resolution, Layer::Override);
        }
        if !force {
            if let Some(resolution) = self.cached_resolution(domain, now) {
                return (resolution, Layer::Memory);
            }
        }
        // A miss of the memory layer: the persistent store may know the domain.
        let (mut from_store, mut store_checked) = (false, false);
        if self.store.is_some() {
            let warmed = self.warm_from_store(domain, now);
            (from_store, store_checked) = (warmed == Some(true), warmed == Some(false));
            if !force {
                if let Some(resolution) = self.cached_resolution(domain, now) {
                    return (resolution, if from_store { Layer::Store } else { Layer::Memory });
                }
            }
        }
        let resolution = self.single_flight(domain, now, force, store_checked);
        let layer = match resolution.source {
            Source::Network => Layer::Network,
            Source::Cache if from_store => Layer::Store,
            Source::Cache => Layer::Dns,
        };
        (resolution, layer)
    }

    /// The resolution the in-process cache gives without I/O, if its entry is fresh. A failed
    /// fetch newer than the policy is reported with it (why there is no policy, or why the cached
    /// one could not be refreshed).
    fn cached_resolution(&self, domain: &Domain, now: u64) -> Option<Resolution> {
        self.cache.read(domain, |e| {
            let e = e.filter(|e| !self.needs_discovery(*e, now))?;
            let policy = e.live(now).cloned();
            let error = e
                .failed
                .filter(|f| policy.as_ref().is_none_or(|p| f.at >= p.fetched_at))
                .map(|f| f.failure.clone());
            Some(Resolution {
                policy,
                source: Source::Cache,
                record: RecordState::NotLooked,
                error,
                overridden: None,
            })
        })
    }

    fn needs_discovery(&self, entry: EntryRef<'_>, now: u64) -> bool {
        let interval = match entry.policy {
            Some(p) if p.is_live(now) => self.timing.txt_check_interval,
            // Expired: fetch anew at once (POL-17, CACHE-10).
            Some(_) => 0,
            None => self.timing.no_policy_interval,
        };
        now.saturating_sub(entry.checked_at) >= interval
    }

    /// How many lookups are waiting, now, for a discovery that another caller is making for the
    /// same domain (single-flight: one discovery per domain, whoever asks meanwhile shares its
    /// result). For monitoring and tests.
    pub fn waiting_for_discovery(&self) -> usize {
        self.flights.lock().values().map(|f| f.waiters.load(Ordering::SeqCst)).sum()
    }

    /// Lets one caller per domain do discovery; the others wait and share its result.
    /// `store_checked`: this caller has just found the domain missing from the store.
    fn single_flight(&self, domain: &Domain, now: u64, force: bool, store_checked: bool) -> Resolution {
        let (flight, leader) = {
            let mut flights = self.flights.lock();
            match flights.get(domain) {
                Some(f) => (Arc::clone(f), false),
                None => {
                    let f = Arc::new(Flight::default());
                    flights.insert(domain.clone(), Arc::clone(&f));
                    (f, true)
                }
            }
        };
        if leader {
            let guard = FlightGuard { engine: self, domain, flight };
            // A flight that ended just before this one began may have left a fresh entry.
            if !force {
                if let Some(resolution) = self.cached_resolution(domain, now) {
                    *guard.flight.result.lock() = Some(resolution.clone());
                    return resolution;
                }
            }
            let resolution = self.discover(domain, now, store_checked);
            *guard.flight.result.lock() = Some(resolution.clone());
            return resolution;
        }
        flight.waiters.fetch_add(1, Ordering::SeqCst);
        let mut result = flight.result.lock();
        while result.is_none() && self.flights.lock().get(domain).is_some_and(|f| Arc::ptr_eq(f, &flight)) {
            flight.done.wait(&mut result);
        }
        flight.waiters.fetch_sub(1, Ordering::SeqCst);
        match result.clone() {
            Some(r) => r,
            // The leader panicked: fall back to what the cache holds.
            None => {
                let policy = self.cache.read(domain, |e| e.and_then(|e| e.live(now).cloned()));
                Resolution {
                    policy,
                    source: Source::Cache,
                    record: RecordState::NotLooked,
                    error: None,
                    overridden: None,
                }
            }
        }
    }

    /// One round of discovery and, if needed, fetch. The cache entry is written once, at the
    /// end, so that no reader sees the lookup time of a discovery still in progress. With
    /// `store_checked` (the caller found the domain missing from the store moments ago: a cold
    /// lookup) the store is not read a second time; a policy another process stored in between is
    /// at worst fetched once more.
    fn discover(&self, domain: &Domain, now: u64, store_checked: bool) -> Resolution {
        let began = std::time::Instant::now();
        let answer = self.resolver.txt(&domain.txt_name());
        self.metrics.dns_latency(DnsKind::Txt, began.elapsed());
        let selected = answer.map(|rrset| txt::select(&rrset));
        self.metrics.discovery(match &selected {
            Ok(Discovery::Record(_)) => DiscoveryResult::Record,
            Ok(Discovery::NoRecord) | Err(DnsError::NotFound) => DiscoveryResult::NoRecord,
            Ok(Discovery::Multiple(_) | Discovery::Invalid(_)) => DiscoveryResult::Invalid,
            Err(DnsError::Temporary(_)) => DiscoveryResult::DnsError,
        });
        let entry = self.merged_entry(domain, store_checked);
        let live = entry.live(now).cloned();
        let mut fetched: Option<Result<Arc<CachedPolicy>, FailedFetch>> = None;
        let resolution = match selected {
            Ok(Discovery::Record(r)) => {
                let id = r.id;
                let record = RecordState::Found(id.clone());
                let unchanged = live.as_ref().is_some_and(|p| p.id == id);
                // Refresh before expiry (CACHE-5, CACHE-6): after `refresh_interval`, or after half
                // the policy's life when that comes first, so that a short-lived policy is renewed
                // while it still applies instead of lapsing between two deliveries.
                let refresh_due = live.as_ref().is_some_and(|p| self.timing.refresh_due(p, now));
                let recent_failure = entry
                    .failed
                    .as_ref()
                    .filter(|f| f.id == id && now.saturating_sub(f.at) < self.timing.fetch_retry_interval);
                if unchanged && !refresh_due {
                    Resolution { policy: live, source: Source::Cache, record, error: None, overridden: None }
                } else if let Some(failed) = recent_failure {
                    // The same id failed moments ago: no request now (FETCH-10).
                    Resolution {
                        policy: live,
                        source: Source::Cache,
                        record,
                        error: Some(failed.failure.clone()),
                        overridden: None,
                    }
                } else {
                    match self.fetch(domain) {
                        Ok((policy, text)) => {
                            let fresh = Arc::new(CachedPolicy::new(policy, id, text, now));
                            fetched = Some(Ok(Arc::clone(&fresh)));
                            Resolution {
                                policy: Some(fresh),
                                source: Source::Network,
                                record,
                                error: None,
                                overridden: None,
                            }
                        }
                        Err(failure) => {
                            // Counted for TLSRPT under the cached policy, or as no policy found;
                            // never under a cached `none` policy (APPLY-10).
                            if live.as_ref().is_none_or(|p| p.mode() != Mode::None) {
                                if let Some(t) = ResultType::from_reason(failure.reason) {
                                    let mut key = FailureKey::new(t, None);
                                    key.failure_reason_code = Some(failure.detail.clone());
                                    if self.tally.add(now, domain, live.as_ref(), Some(key)) {
                                        self.flush_reports();
                                    }
                                }
                            }
                            // Keep the old policy and its id (CACHE-9, POL-16).
                            fetched = Some(Err(FailedFetch { id, at: now, failure: failure.clone() }));
                            Resolution {
                                policy: live,
                                source: Source::Cache,
                                record,
                                error: Some(failure),
                                overridden: None,
                            }
                        }
                    }
                }
            }
            // No usable record: an unexpired cached policy still applies (CACHE-4, DISC-14).
            other => {
                let txt_name = domain.txt_name();
                let (record, error) = match other {
                    Err(DnsError::Temporary(why)) => (
                        RecordState::DnsError,
                        Some(failure(
                            Reason::StsPolicyFetchError,
                            format!("TXT lookup of {txt_name} failed: {why}"),
                        )),
                    ),
                    Ok(Discovery::Multiple(n)) => (
                        RecordState::Absent,
                        Some(failure(
                            Reason::StsPolicyInvalid,
                            format!(
                                "{n} TXT records at {txt_name} start with v=STSv1; exactly one is allowed"
                            ),
                        )),
                    ),
                    Ok(Discovery::Invalid(e)) => (
                        RecordState::Absent,
                        Some(failure(
                            Reason::StsPolicyInvalid,
                            format!("the TXT record at {txt_name} is invalid: {e}"),
                        )),
                    ),
                    Err(DnsError::NotFound) | Ok(Discovery::NoRecord | Discovery::Record(_)) => {
                        (RecordState::Absent, None)
                    }
                };
                Resolution { policy: live, source: Source::Cache, record, error, overridden: None }
            }
        };
        let fetched_now = matches!(fetched, Some(Ok(_)));
        log_discovery(domain, &resolution, fetched.as_ref().map(|f| f.is_ok()));
        let saved = self.cache.update(domain, now, |e| {
            if entry.policy.as_ref().map(|p| p.fetched_at) > e.policy.as_ref().map(|p| p.fetched_at) {
                e.policy = entry.policy.clone();
            }
            e.checked_at = now;
            match fetched {
                Some(Ok(policy)) => {
                    e.policy = Some(policy);
                    e.failed = None;
                }
                Some(Err(failed)) => e.failed = Some(failed),
                None => {}
            }
            // An expired policy is never applied again (CACHE-10). It is kept only when this
            // discovery fetched it (`max_age: 0`), so that the next check fetches anew (POL-17).
            if !fetched_now && e.policy.as_ref().is_some_and(|p| !p.is_live(now)) {
                e.policy = None;
            }
            e.clone()
        });
        if let Some(store) = self.store.as_ref().filter(|_| self.store_writable) {
            if let Err(e) = store.save(domain, &saved) {
                self.report_store_error(&e);
            }
        }
        resolution
    }

    fn fetch(&self, domain: &Domain) -> Result<(Policy, String), Failure> {
        let began = std::time::Instant::now();
        let body = self.fetcher.fetch(domain);
        self.metrics.fetch_latency(began.elapsed());
        let parsed = body.and_then(|body| {
            Policy::parse(&body).map(|p| (p, body)).map_err(|e| Failure {
                reason: Reason::StsPolicyInvalid,
                detail: format!("{} {}", domain.policy_url(), e.first_error()),
            })
        });
        self.metrics.fetch(parsed.as_ref().map(|_| ()).map_err(|f| f.reason));
        let (policy, body) = parsed?;
        let text = String::from_utf8_lossy(body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&body)).into_owned();
        Ok((policy, text))
    }
}

fn failure(reason: Reason, detail: String) -> Failure {
    Failure { reason, detail }
}

/// The log of one discovery: `info` for its outcome, `warn` when a fetch failed or the record is
/// broken while an `enforce` or `testing` policy is still applied from the cache (CACHE-7).
fn log_discovery(domain: &Domain, r: &Resolution, fetched: Option<bool>) {
    let record = match &r.record {
        RecordState::Found(_) => "found",
        RecordState::NotLooked => "not-looked",
        RecordState::Absent => "absent",
        RecordState::DnsError => "dns-error",
    };
    let id = match &r.record {
        RecordState::Found(id) => id.as_str(),
        _ => "",
    };
    let fetch = match fetched {
        None => "not-needed",
        Some(true) => "fetched",
        Some(false) => "failed",
    };
    let mode = r.mode().map_or("none", |m| m.as_str());
    let error = r.error.as_ref().map_or(String::new(), |e| format!("{}: {}", e.reason.as_str(), e.detail));
    if r.needs_attention() {
        tracing::warn!(
            target: "mtasts::discovery",
            domain = domain.as_str(),
            record,
            id,
            fetch,
            mode,
            error,
            "discovery failed; the cached policy still applies"
        );
    } else {
        tracing::info!(target: "mtasts::discovery", domain = domain.as_str(), record, id, fetch, mode, error, "discovery");
    }
}

/// The log of every use of an override (OVR-5), under the target `mtasts::override`: `warn` for
/// a domain whose MTA-STS is skipped (protection is off for it: said at the default level),
/// `info` for a pinned policy.
fn log_override(o: &Override) {
    let (domain, action, origin) = (o.domain.as_str(), o.action_str(), o.origin_str());
    if o.pinned_policy().is_none() {
        tracing::warn!(target: "mtasts::override", domain, action, origin, location = o.location(), "{o}");
    } else {
        tracing::info!(target: "mtasts::override", domain, action, origin, location = o.location(), "{o}");
    }
}
