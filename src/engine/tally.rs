//! In-process TLSRPT counters (RFC 8460 §4): the hot-path side of recording.
//!
//! Counting a session must cost next to nothing, so it is a map increment under a short lock.
//! The policy is kept by reference (its `policy-string` lines are built only when the counters
//! are flushed): an MTA-STS policy by its cached copy, a DANE (`tlsa`) policy by the MX host's
//! TLSA answer. The engine flushes to its persistent store every few hundred sessions, every
//! few seconds, when asked, and when it is dropped. Counts of several processes then add up in the
//! store.

use std::collections::BTreeMap;
use std::hash::Hash;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::cache::CachedPolicy;
use crate::counts::{Day, DayCounts, FailureKey, PolicyKey};
use crate::domain::Domain;
use crate::ports::TlsaLookup;

/// Sessions counted before a flush is due.
const FLUSH_EVERY: usize = 256;
/// Most counters kept in memory for an engine whose store cannot take them (none configured, or
/// read-only): beyond this, new counters are dropped (and counted as dropped), so that a stream of
/// distinct failures cannot grow the process without bound.
const KEPT_COUNTERS: usize = 10_000;
/// Seconds after which pending counts are flushed on the next session.
const FLUSH_AFTER: u64 = 10;

/// The policy a session was counted under: the thread's copy of a cached MTA-STS policy (copies
/// of one policy are merged when counts are flushed), or the TLSA answer of an MX host (made once
/// per host and lookup by the engine's TLSA cache, so it names the host too). A DANE session whose
/// records the engine does not know (the caller judged DANE itself) is counted under its MX host
/// with no records. Held by the counters' slot, which keeps the address of its [`PolicyId`] alive.
#[derive(Clone, Debug)]
enum PolicyRef {
    Sts(Arc<CachedPolicy>),
    Tlsa(Arc<TlsaLookup>),
    TlsaUnknown,
}

/// What the counters are keyed by: the policy's identity (its address while a slot holds it), so
/// that counting a session under a policy already counted costs neither an allocation nor a
/// reference-count update.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum PolicyId {
    Sts(usize),
    Tlsa(usize),
    TlsaUnknown(Domain),
}

impl PolicyRef {
    /// The report's policy: `sts` with the policy's lines, or `tlsa` with the records in
    /// presentation form (none when the answer was not secure or is not known).
    fn key(&self) -> PolicyKey {
        match self {
            Self::Sts(p) => PolicyKey::sts_from_body(p.text.as_bytes(), &p.policy),
            Self::Tlsa(lookup) => match &**lookup {
                TlsaLookup::Secure { records, .. } => {
                    PolicyKey::tlsa(records.iter().map(ToString::to_string).collect())
                }
                _ => PolicyKey::tlsa(Vec::new()),
            },
            Self::TlsaUnknown => PolicyKey::tlsa(Vec::new()),
        }
    }
}

/// The DANE policy a session is counted under (RFC 8460 §3: its policy domain is the TLSA base
/// domain, here the MX host).
#[derive(Clone, Copy, Debug)]
pub enum TlsaPolicy<'a> {
    /// The MX host's TLSA answer as the engine looked it up (secure, bogus or failed).
    Known(&'a Arc<TlsaLookup>),
    /// The caller judged DANE itself and the engine does not know the records.
    Unknown,
}

use crate::fxhash::FxMap;

/// The counts of one policy on one day.
#[derive(Debug)]
struct Slot {
    policy: PolicyRef,
    domain: Domain,
    successes: u64,
    failures: FxMap<FailureKey, u64>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Sessions under a policy, by day and policy: a success costs no allocation.
    counts: FxMap<(Day, PolicyId), Slot>,
    /// Failures with no policy (`no-policy-found`), by day, domain and failure.
    no_policy: FxMap<(Day, Domain, FailureKey), u64>,
    sessions: usize,
    last_flush: u64,
    /// Sessions an MTA reported itself (docs/tlsrpt-collect.md), already keyed, by day.
    reported: BTreeMap<Day, DayCounts>,
    /// Flushed counts of an engine without a persistent store.
    kept: BTreeMap<Day, DayCounts>,
    /// Counters refused because `kept` was full.
    dropped: u64,
    /// The fork generation (`crate::forks`) the pending counts were made in (`None` before the
    /// first count).
    generation: Option<u64>,
}

impl Inner {
    /// Adds one session to the counts of the policy `id` on `day` (`policy` makes what the slot
    /// holds, the first time).
    fn count(
        &mut self,
        day: Day,
        domain: &Domain,
        id: PolicyId,
        policy: impl FnOnce() -> PolicyRef,
        failure: Option<FailureKey>,
    ) {
        let slot = self.counts.entry((day, id)).or_insert_with(|| Slot {
            policy: policy(),
            domain: domain.clone(),
            successes: 0,
            failures: FxMap::default(),
        });
        match failure {
            None => slot.successes += 1,
            Some(f) => *slot.failures.entry(f).or_insert(0) += 1,
        }
    }

    /// Notes one more session counted at `now`; true when a flush is due.
    fn counted(&mut self, now: u64) -> bool {
        if self.last_flush == 0 {
            self.last_flush = now;
        }
        self.sessions += 1;
        self.sessions >= FLUSH_EVERY || now >= self.last_flush.saturating_add(FLUSH_AFTER)
    }

    /// Leaves out counts inherited through `fork()`: they are the parent's, which writes them
    /// itself, so a child that used or dropped the engine would count them twice.
    fn own(&mut self) -> &mut Self {
        let generation = crate::forks::generation();
        if self.generation != Some(generation) {
            if self.generation.is_some() {
                self.counts.clear();
                self.no_policy.clear();
                self.reported.clear();
                self.sessions = 0;
            }
            self.generation = Some(generation);
        }
        self
    }
}

/// The counters of one engine.
#[derive(Debug, Default)]
pub struct Tally {
    inner: Mutex<Inner>,
}

impl Tally {
    /// Counts one session (`failure: None` for a success) at `now`; true when a flush is due.
    pub fn add(
        &self,
        now: u64,
        domain: &Domain,
        policy: Option<&Arc<CachedPolicy>>,
        failure: Option<FailureKey>,
    ) -> bool {
        match policy {
            Some(p) => self.add_session(now, Some((domain, p, failure)), None),
            None => {
                let Some(f) = failure else { return false }; // a success without a policy is not reported
                let day = Day::from_unix(now);
                let mut guard = self.inner.lock();
                let inner = guard.own();
                *inner.no_policy.entry((day, domain.clone(), f)).or_insert(0) += 1;
                inner.counted(now)
            }
        }
    }

    /// Counts one session under the DANE (`tlsa`) policy of the MX host `host` (`failure: None`
    /// for a success) at `now`; true when a flush is due.
    pub fn add_tlsa(
        &self,
        now: u64,
        host: &Domain,
        policy: TlsaPolicy<'_>,
        failure: Option<FailureKey>,
    ) -> bool {
        self.add_session(now, None, Some((host, policy, failure)))
    }

    /// Counts one session under an MTA-STS policy of its domain and under the `tlsa` policy of its
    /// MX host, either being optional, under one lock (a session DANE applied to is usually
    /// counted under both); true when a flush is due.
    pub fn add_session(
        &self,
        now: u64,
        sts: Option<(&Domain, &Arc<CachedPolicy>, Option<FailureKey>)>,
        tlsa: Option<(&Domain, TlsaPolicy<'_>, Option<FailureKey>)>,
    ) -> bool {
        if sts.is_none() && tlsa.is_none() {
            return false;
        }
        let day = Day::from_unix(now);
        let mut guard = self.inner.lock();
        let inner = guard.own();
        if let Some((domain, policy, failure)) = sts {
            let id = PolicyId::Sts(Arc::as_ptr(policy) as usize);
            inner.count(day, domain, id, || PolicyRef::Sts(Arc::clone(policy)), failure);
        }
        if let Some((host, policy, failure)) = tlsa {
            match policy {
                TlsaPolicy::Known(lookup) => {
                    // The policy domain is the TLSA base domain (RFC 8460 §3): the CNAME-expanded
                    // name when the records were found there, else the MX host.
                    let host = match &**lookup {
                        TlsaLookup::Secure { base: Some(base), .. } => base,
                        _ => host,
                    };
                    let id = PolicyId::Tlsa(Arc::as_ptr(lookup) as usize);
                    inner.count(day, host, id, || PolicyRef::Tlsa(Arc::clone(lookup)), failure);
                }
                TlsaPolicy::Unknown => {
                    let id = PolicyId::TlsaUnknown(host.clone());
                    inner.count(day, host, id, || PolicyRef::TlsaUnknown, failure);
                }
            }
        }
        inner.counted(now)
    }

    /// Adds the counts of sessions an MTA reported itself (already keyed by domain and policy)
    /// to `now`'s day; true when a flush is due.
    pub fn add_reported(&self, now: u64, counts: &DayCounts) -> bool {
        if counts.is_empty() {
            return false;
        }
        let day = Day::from_unix(now);
        let mut guard = self.inner.lock();
        let inner = guard.own();
        inner.reported.entry(day).or_default().merge(counts);
        inner.counted(now)
    }

    /// Takes every pending count, as day counts.
    pub fn take(&self, now: u64) -> BTreeMap<Day, DayCounts> {
        let (counts, no_policy, reported) = {
            let mut guard = self.inner.lock();
            let inner = guard.own();
            inner.sessions = 0;
            inner.last_flush = now;
            (
                std::mem::take(&mut inner.counts),
                std::mem::take(&mut inner.no_policy),
                std::mem::take(&mut inner.reported),
            )
        };
        let mut days: BTreeMap<Day, DayCounts> = reported;
        for ((day, _), slot) in counts {
            let key = slot.policy.key();
            let day = days.entry(day).or_default();
            if slot.successes > 0 {
                day.add_success(&slot.domain, &key, slot.successes);
            }
            for (f, n) in slot.failures {
                day.add_failure(&slot.domain, &key, f, n);
            }
        }
        let none = PolicyKey::no_policy_found();
        for ((day, domain, f), n) in no_policy {
            days.entry(day).or_default().add_failure(&domain, &none, f, n);
        }
        days
    }

    /// Keeps flushed counts in memory (an engine without a persistent store). Only the days of
    /// the reporting window are kept, and at most `KEPT_COUNTERS` counters: counts for a counter
    /// already held are always added; new counters beyond the cap are dropped.
    pub fn keep(&self, counts: BTreeMap<Day, DayCounts>) {
        let mut inner = self.inner.lock();
        for (day, c) in counts {
            inner.kept.entry(day).or_default();
            let held: usize = inner.kept.values().map(DayCounts::counters).sum();
            let kept = inner.kept.entry(day).or_default();
            let mut merged = kept.clone();
            merged.merge(&c);
            let grows = merged.counters() - kept.counters();
            if held + grows <= KEPT_COUNTERS {
                *kept = merged;
                continue;
            }
            // Over the cap: add to counters already held, drop the new ones.
            let mut dropped = 0u64;
            for domain in c.domains() {
                for (policy, pc) in c.policies(domain) {
                    let known = kept.policies(domain).any(|(p, _)| p == policy);
                    if !known {
                        dropped += 1 + pc.failures.len() as u64;
                        continue;
                    }
                    kept.add_success(domain, policy, pc.successes);
                    for (failure, &n) in &pc.failures {
                        let has = kept
                            .policies(domain)
                            .any(|(p, k)| p == policy && k.failures.contains_key(failure));
                        if has {
                            kept.add_failure(domain, policy, failure.clone(), n);
                        } else {
                            dropped += 1;
                        }
                    }
                }
            }
            inner.dropped = inner.dropped.saturating_add(dropped);
        }
        // Only the reporting window is worth keeping.
        while inner.kept.len() as u64 > crate::counts::REPORT_WINDOW_DAYS {
            inner.kept.pop_first();
        }
    }

    /// Counters dropped because the in-memory cap was reached.
    pub fn dropped(&self) -> u64 {
        self.inner.lock().dropped
    }

    /// Counters held in memory for lack of a store.
    pub fn kept_counters(&self) -> usize {
        self.inner.lock().kept.values().map(DayCounts::counters).sum()
    }

    /// The counts kept in memory for `day`.
    pub fn kept(&self, day: Day) -> DayCounts {
        self.inner.lock().kept.get(&day).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counts::{REPORT_WINDOW_DAYS, ResultType};

    fn failure(i: usize) -> FailureKey {
        let mut key = FailureKey::new(ResultType::StsPolicyFetchError, None);
        key.failure_reason_code = Some(format!("timed out after {i} ms"));
        key
    }

    #[test]
    fn counts_kept_in_memory_are_bounded() {
        let tally = Tally::default();
        let domain = Domain::parse("example.test").expect("domain");
        let none = PolicyKey::no_policy_found();
        let day = Day::from_unix(1_800_000_000);
        // A stream of distinct failures (each detail differs), as a hostile DNS server could cause.
        for batch in 0..4 {
            let mut counts = DayCounts::new();
            for i in 0..KEPT_COUNTERS / 2 {
                counts.add_failure(&domain, &none, failure(batch * KEPT_COUNTERS + i), 1);
            }
            tally.keep([(day, counts)].into());
        }
        assert!(tally.kept_counters() <= KEPT_COUNTERS, "{}", tally.kept_counters());
        assert!(tally.dropped() >= (KEPT_COUNTERS as u64), "{}", tally.dropped());
        // A counter already held still counts.
        let mut again = DayCounts::new();
        again.add_failure(&domain, &none, failure(0), 5);
        tally.keep([(day, again)].into());
        let n = tally.kept(day).policies(&domain).map(|(_, c)| c.failures.get(&failure(0)).copied()).next();
        assert_eq!(n, Some(Some(6)));
        // Only the reporting window is kept.
        for d in 0..REPORT_WINDOW_DAYS + 5 {
            let mut counts = DayCounts::new();
            counts.add_success(&domain, &none, 1);
            tally.keep([(Day::from_days(day.days() + 1 + d), counts)].into());
        }
        assert!(tally.kept(day).is_empty(), "the oldest day is gone");
    }

    #[test]
    fn counts_inherited_through_fork_are_left_to_the_parent() {
        let tally = Tally::default();
        let domain = Domain::parse("example.test").expect("domain");
        let failure = || Some(FailureKey::new(ResultType::StsPolicyFetchError, None));
        tally.add(1_800_000_000, &domain, None, failure());
        assert_eq!(tally.take(1_800_000_000).len(), 1, "a count of this process is taken");
        tally.add(1_800_000_000, &domain, None, failure());
        // What a forked child sees: counts made in another fork generation (the parent's).
        let parent = Some(crate::forks::generation().wrapping_add(1));
        tally.inner.lock().generation = parent;
        assert!(tally.take(1_800_000_000).is_empty(), "the parent's counts are not the child's");
        tally.inner.lock().generation = parent;
        tally.add(1_800_000_000, &domain, None, failure());
        let days = tally.take(1_800_000_000);
        assert_eq!(days.len(), 1);
        let total: u64 = days
            .values()
            .flat_map(|c| c.domains().flat_map(|d| c.policies(d).map(|(_, p)| p.total_failures())))
            .sum();
        assert_eq!(total, 1, "only the child's own session");
    }

    #[test]
    fn reported_sessions_join_the_engines_own() {
        let tally = Tally::default();
        let domain = Domain::parse("example.test").expect("domain");
        let now = 1_800_000_000;
        let none = PolicyKey::no_policy_found();
        let mut reported = DayCounts::new();
        reported.add_success(&domain, &none, 2);
        assert!(!tally.add_reported(now, &DayCounts::new()), "nothing to count");
        tally.add_reported(now, &reported);
        tally.add_reported(now, &reported);
        tally.add(now, &domain, None, Some(FailureKey::new(ResultType::StsPolicyFetchError, None)));
        let days = tally.take(now);
        let (_, c) = days[&Day::from_unix(now)].policies(&domain).next().expect("policy");
        assert_eq!((c.successes, c.total_failures()), (4, 1), "one policy, both kinds of counts");
        assert!(tally.take(now).is_empty(), "taken once");
        // Counts inherited through fork() are the parent's.
        tally.add_reported(now, &reported);
        tally.inner.lock().generation = Some(crate::forks::generation().wrapping_add(1));
        assert!(tally.take(now).is_empty());
    }

    #[test]
    fn tlsa_sessions_are_counted_under_the_records_of_the_mx_host() {
        use crate::ports::TlsaRecord;
        let tally = Tally::default();
        let host = Domain::parse("mx.example.test").expect("domain");
        let record = TlsaRecord { usage: 3, selector: 1, matching_type: 1, data: vec![0x0a, 0xff] };
        let secure = || Arc::new(TlsaLookup::Secure { records: vec![record.clone()], ttl: 60, base: None });
        // Two copies of one answer (e.g. looked up again after its TTL) are one policy.
        let (a, b) = (secure(), secure());
        let now = 1_800_000_000;
        tally.add_tlsa(now, &host, TlsaPolicy::Known(&a), None);
        tally.add_tlsa(now, &host, TlsaPolicy::Known(&b), None);
        let bad = FailureKey::new(ResultType::TlsaInvalid, Some(host.clone()));
        tally.add_tlsa(now, &host, TlsaPolicy::Known(&a), Some(bad.clone()));
        let bogus = Arc::new(TlsaLookup::Bogus("expired".into()));
        let dnssec = FailureKey::new(ResultType::DnssecInvalid, Some(host.clone()));
        tally.add_tlsa(now, &host, TlsaPolicy::Known(&bogus), Some(dnssec.clone()));
        tally.add_tlsa(now, &host, TlsaPolicy::Unknown, Some(bad.clone()));
        let days = tally.take(now);
        let counts = &days[&Day::from_unix(now)];
        let policies: Vec<_> = counts.policies(&host).collect();
        assert_eq!(policies.len(), 2, "{policies:?}");
        let (with, c) = policies.iter().find(|(k, _)| !k.strings().is_empty()).expect("records");
        assert_eq!(with.policy_type(), crate::counts::PolicyType::Tlsa);
        assert_eq!(with.strings(), ["3 1 1 0aff"]);
        assert_eq!((c.successes, c.failures.get(&bad).copied()), (2, Some(1)));
        let (_, c) = policies.iter().find(|(k, _)| k.strings().is_empty()).expect("no records");
        assert_eq!((c.failures.get(&dnssec).copied(), c.failures.get(&bad).copied()), (Some(1), Some(1)));

        // An alias whose records were found at its CNAME-expanded name: counted under that name,
        // the TLSA base domain (RFC 8460 §3).
        let base = Domain::parse("mail.provider.test").expect("domain");
        let aliased =
            Arc::new(TlsaLookup::Secure { records: vec![record.clone()], ttl: 60, base: Some(base.clone()) });
        tally.add_tlsa(now, &host, TlsaPolicy::Known(&aliased), None);
        let days = tally.take(now);
        let counts = &days[&Day::from_unix(now)];
        assert_eq!(counts.policies(&host).count(), 0);
        assert_eq!(counts.policies(&base).count(), 1);
    }
}
