//! In-process TLSRPT counters (RFC 8460 §4): the hot-path side of recording.
//!
//! Counting a session must cost next to nothing, so it is a map increment under a short lock.
//! The policy is kept by reference (its `policy-string` lines are built only when the counters
//! are flushed), and the engine flushes to its persistent store every few hundred sessions, every
//! few seconds, when asked, and when it is dropped. Counts of several processes then add up in the
//! store.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::cache::CachedPolicy;
use crate::domain::Domain;
use crate::tlsrpt::report::{Day, DayCounts, FailureKey, PolicyKey};

/// Sessions counted before a flush is due.
const FLUSH_EVERY: usize = 256;
/// Seconds after which pending counts are flushed on the next session.
const FLUSH_AFTER: u64 = 10;

/// The policy a session was counted under, compared by identity.
#[derive(Clone, Debug)]
enum PolicyRef {
    /// No MTA-STS policy applied (`no-policy-found`).
    None,
    /// This policy applied.
    Sts(Arc<CachedPolicy>),
}

impl PartialEq for PolicyRef {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::None, Self::None) => true,
            (Self::Sts(a), Self::Sts(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for PolicyRef {}

impl Hash for PolicyRef {
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self {
            Self::None => 0usize.hash(state),
            Self::Sts(p) => Arc::as_ptr(p).hash(state),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    day: Day,
    domain: Domain,
    policy: PolicyRef,
    failure: Option<FailureKey>,
}

#[derive(Debug, Default)]
struct Inner {
    counts: HashMap<Key, u64>,
    sessions: usize,
    last_flush: u64,
    /// Flushed counts of an engine without a persistent store.
    kept: BTreeMap<Day, DayCounts>,
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
        let key = Key {
            day: Day::from_unix(now),
            domain: domain.clone(),
            policy: policy.map_or(PolicyRef::None, |p| PolicyRef::Sts(Arc::clone(p))),
            failure,
        };
        let mut inner = self.inner.lock();
        if inner.last_flush == 0 {
            inner.last_flush = now;
        }
        *inner.counts.entry(key).or_insert(0) += 1;
        inner.sessions += 1;
        inner.sessions >= FLUSH_EVERY || now >= inner.last_flush.saturating_add(FLUSH_AFTER)
    }

    /// Takes every pending count, as day counts.
    pub fn take(&self, now: u64) -> BTreeMap<Day, DayCounts> {
        let counts = {
            let mut inner = self.inner.lock();
            inner.sessions = 0;
            inner.last_flush = now;
            std::mem::take(&mut inner.counts)
        };
        let mut keys: HashMap<PolicyRef, PolicyKey> = HashMap::new();
        let mut days: BTreeMap<Day, DayCounts> = BTreeMap::new();
        for (key, n) in counts {
            let policy = keys
                .entry(key.policy.clone())
                .or_insert_with(|| match &key.policy {
                    PolicyRef::None => PolicyKey::no_policy_found(),
                    PolicyRef::Sts(p) => PolicyKey::sts_from_body(p.text.as_bytes(), &p.policy),
                })
                .clone();
            let day = days.entry(key.day).or_default();
            match key.failure {
                None => day.add_success(&key.domain, &policy, n),
                Some(f) => day.add_failure(&key.domain, &policy, f, n),
            }
        }
        days
    }

    /// Keeps flushed counts in memory (an engine without a persistent store).
    pub fn keep(&self, counts: BTreeMap<Day, DayCounts>) {
        let mut inner = self.inner.lock();
        for (day, c) in counts {
            inner.kept.entry(day).or_default().merge(&c);
        }
    }

    /// The counts kept in memory for `day`.
    pub fn kept(&self, day: Day) -> DayCounts {
        self.inner.lock().kept.get(&day).cloned().unwrap_or_default()
    }
}
