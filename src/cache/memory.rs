//! The in-process cache: a map from Policy Domain to [`Entry`] behind a read-write lock that is
//! held only for the map access itself, never across I/O.
//!
//! Reads on the hot path do not touch the shared lock: each thread keeps its own copy of the
//! entries it has read, valid for as long as the cache's generation counter has not moved. Every
//! write bumps the counter (after changing the map), so a thread's copy is never older than the
//! generation it was taken at. Without this, two threads checking the same domain would fight over
//! the lock word and the policy's reference count, and the second core would add almost nothing.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;

use super::Entry;
use crate::domain::Domain;

/// Entries kept before the ones without a live policy are dropped.
const DEFAULT_CAPACITY: usize = 100_000;
/// Entries a thread keeps copies of before it starts again.
const LOCAL_CAPACITY: usize = 256;

static NEXT_CACHE_ID: AtomicU64 = AtomicU64::new(1);

/// A per-process map of [`Entry`]s, `Send + Sync`.
#[derive(Debug)]
pub struct MemoryCache {
    id: u64,
    generation: AtomicU64,
    map: RwLock<HashMap<Domain, Entry>>,
    capacity: usize,
    /// The size at which the next trim runs: `capacity`, or more while live policies alone fill
    /// it (so that a full cache does not scan every entry on every new domain).
    trim_at: std::sync::atomic::AtomicUsize,
}

/// A thread's copies of entries of one cache at one generation.
#[derive(Default)]
struct Local {
    cache_id: u64,
    generation: u64,
    entries: HashMap<Domain, Entry>,
}

thread_local! {
    static LOCAL: RefCell<Local> = RefCell::new(Local::default());
}

impl Default for MemoryCache {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }
}

impl MemoryCache {
    /// A cache that trims itself beyond `capacity` domains. Entries holding a live policy are never
    /// trimmed: dropping one would hand a downgrade to an attacker (CACHE-4).
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            id: NEXT_CACHE_ID.fetch_add(1, Ordering::Relaxed),
            generation: AtomicU64::new(0),
            map: RwLock::new(HashMap::new()),
            capacity,
            trim_at: std::sync::atomic::AtomicUsize::new(capacity),
        }
    }

    /// Runs `f` on the entry for `domain`, from this thread's copy when it is current.
    pub fn read<T>(&self, domain: &Domain, f: impl FnOnce(Option<&Entry>) -> T) -> T {
        let generation = self.generation.load(Ordering::Acquire);
        LOCAL.with(|cell| {
            let Ok(mut local) = cell.try_borrow_mut() else {
                return f(self.map.read().get(domain));
            };
            if local.cache_id != self.id || local.generation != generation {
                local.cache_id = self.id;
                local.generation = generation;
                local.entries.clear();
            }
            if !local.entries.contains_key(domain) {
                let Some(copy) = self.map.read().get(domain).map(private_copy) else {
                    return f(None);
                };
                if local.entries.len() >= LOCAL_CAPACITY {
                    local.entries.clear();
                }
                local.entries.insert(domain.clone(), copy);
            }
            f(local.entries.get(domain))
        })
    }

    /// A copy of the entry for `domain`, from the shared map.
    pub fn get(&self, domain: &Domain) -> Option<Entry> {
        self.map.read().get(domain).cloned()
    }

    /// Runs `f` on the entry for `domain` (created empty if absent), under the write lock.
    pub fn update<T>(&self, domain: &Domain, now: u64, f: impl FnOnce(&mut Entry) -> T) -> T {
        let mut map = self.map.write();
        if map.len() >= self.trim_at.load(Ordering::Relaxed) && !map.contains_key(domain) {
            map.retain(|_, e| e.live(now).is_some());
            // Entries without a live policy may again take up to a tenth of the capacity (at
            // least one) beyond the live ones before the next trim: the cost of a trim is spread
            // over that many new domains, and their number stays bounded.
            let slack = (self.capacity / 10).max(1);
            self.trim_at.store(map.len().max(self.capacity.saturating_sub(slack)) + slack, Ordering::Relaxed);
        }
        let result = f(map.entry(domain.clone()).or_default());
        self.generation.fetch_add(1, Ordering::Release);
        result
    }

    /// Removes the entry for `domain`; true if there was one.
    pub fn remove(&self, domain: &Domain) -> bool {
        let mut map = self.map.write();
        let removed = map.remove(domain).is_some();
        self.generation.fetch_add(1, Ordering::Release);
        removed
    }

    /// Number of domains held.
    pub fn len(&self) -> usize {
        self.map.read().len()
    }

    /// True when no domain is held.
    pub fn is_empty(&self) -> bool {
        self.map.read().is_empty()
    }
}

/// A copy whose policy has a reference count of its own, so that threads never share one.
fn private_copy(entry: &Entry) -> Entry {
    Entry { policy: entry.policy.as_ref().map(|p| Arc::new((**p).clone())), ..entry.clone() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::CachedPolicy;
    use crate::policy::Policy;
    use crate::txt::PolicyId;

    fn live_entry(now: u64) -> Entry {
        let policy = Policy::parse(b"version: STSv1\nmode: enforce\nmx: mx.example.test\nmax_age: 86400\n")
            .expect("policy");
        let id = PolicyId::parse("a1").expect("id");
        Entry {
            policy: Some(Arc::new(CachedPolicy::new(policy, id, String::new(), now))),
            checked_at: now,
            failed: None,
        }
    }

    #[test]
    fn entries_without_a_live_policy_are_bounded_and_live_ones_never_evicted() {
        let now = 1_800_000_000;
        let cache = MemoryCache::with_capacity(100);
        for i in 0..100 {
            let d = Domain::parse(&format!("live{i}.test")).expect("domain");
            cache.update(&d, now, |e| *e = live_entry(now));
        }
        // A stream of domains without a policy (say, a client asking for random names).
        let mut trims = 0;
        for i in 0..10_000 {
            let d = Domain::parse(&format!("none{i}.test")).expect("domain");
            let before = cache.len();
            cache.update(&d, now, |e| e.checked_at = now);
            if cache.len() < before {
                trims += 1;
            }
            assert!(cache.len() <= 100 + 10, "{} entries", cache.len());
        }
        for i in 0..100 {
            let d = Domain::parse(&format!("live{i}.test")).expect("domain");
            assert!(cache.get(&d).is_some_and(|e| e.live(now).is_some()), "live{i} kept");
        }
        // One trim per ten new domains at most, not one per domain.
        assert!(trims <= 10_000 / 10 + 1, "{trims} trims");
    }
}
