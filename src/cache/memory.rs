//! The in-process cache: a map from Policy Domain to [`Entry`] behind a read-write lock that is
//! held only for the map access itself, never across I/O.

use std::collections::HashMap;

use parking_lot::RwLock;

use super::Entry;
use crate::domain::Domain;

/// Entries kept before the ones without a live policy are dropped.
const DEFAULT_CAPACITY: usize = 100_000;

/// A per-process map of [`Entry`]s, `Send + Sync`.
#[derive(Debug)]
pub struct MemoryCache {
    map: RwLock<HashMap<Domain, Entry>>,
    capacity: usize,
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
        Self { map: RwLock::new(HashMap::new()), capacity }
    }

    /// Runs `f` on the entry for `domain`, under the read lock.
    pub fn read<T>(&self, domain: &Domain, f: impl FnOnce(Option<&Entry>) -> T) -> T {
        f(self.map.read().get(domain))
    }

    /// A copy of the entry for `domain`.
    pub fn get(&self, domain: &Domain) -> Option<Entry> {
        self.map.read().get(domain).cloned()
    }

    /// Runs `f` on the entry for `domain` (created empty if absent), under the write lock.
    pub fn update<T>(&self, domain: &Domain, now: u64, f: impl FnOnce(&mut Entry) -> T) -> T {
        let mut map = self.map.write();
        if map.len() >= self.capacity && !map.contains_key(domain) {
            map.retain(|_, e| e.live(now).is_some());
        }
        f(map.entry(domain.clone()).or_default())
    }

    /// Removes the entry for `domain`; true if there was one.
    pub fn remove(&self, domain: &Domain) -> bool {
        self.map.write().remove(domain).is_some()
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
