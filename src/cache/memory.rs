//! The in-process cache: a map from Policy Domain to [`Entry`] behind a read-write lock that is
//! held only for the map access and, for an entry read in place, while the caller's closure
//! reads it ([`MemoryCache::read`]: the closure must not use the cache), never across I/O.
//!
//! Reads of a busy domain do not touch the shared lock: each thread keeps its own copy of the
//! entries it reads again and again, valid for as long as the cache's generation counter has not
//! moved. Every write bumps the counter (after changing the map), so a thread's copy is never
//! older than the generation it was taken at. Without this, two threads checking the same domain
//! would fight over the lock word and the policy's reference count, and the second core would add
//! almost nothing.
//!
//! A domain gets a private copy only on its second read within a short while (a small filter of
//! the domains read lately from the shared map). A check of a domain that is not busy reads the
//! shared entry in place: with a million domains cached, copying every entry read (its policy's
//! patterns, id and text) into the thread's table cost more than the lookup itself, and a table of
//! 256 copies holds none of them for long (BENCHMARKS.md, "Scale").
//!
//! The shared map is [`super::table`]'s: one cache line per domain, found from the hash alone,
//! holding the name and what a check reads before the policy. A check of a domain not read lately
//! then waits on main memory twice (the slot, then the policy, whose reference count it takes),
//! where a general-purpose map waited three times.

use std::cell::{Cell, RefCell};
use std::hash::BuildHasher as _;
use std::hash::RandomState;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use parking_lot::{MappedRwLockReadGuard, RwLock, RwLockReadGuard};

use super::table::{self, Compact, Table};
use super::{CachedPolicy, Entry, FailedFetch};
use crate::domain::Domain;
use crate::fxhash::FxMap;

/// Entries kept before the ones without a live policy are dropped.
const DEFAULT_CAPACITY: usize = 100_000;
/// Entries a thread keeps copies of before it starts again.
const LOCAL_CAPACITY: usize = 256;
/// Slots of a thread's filter of the domains it read lately from the shared map.
const RECENT: usize = 64;
const _: () = assert!(RECENT.is_power_of_two());

static NEXT_CACHE_ID: AtomicU64 = AtomicU64::new(1);

/// A per-process map of [`Entry`]s, `Send + Sync`.
#[derive(Debug)]
pub struct MemoryCache {
    id: u64,
    generation: AtomicU64,
    /// The shared map's keyed hash (its table probes linearly: the key keeps chosen names from
    /// piling up in one run).
    hasher: RandomState,
    map: RwLock<Table>,
    /// The map's [`Table::layout`], published after every write for [`MemoryCache::prefetch`].
    layout: (AtomicUsize, AtomicUsize),
    capacity: usize,
    /// The size at which the next trim runs: `capacity`, or more while live policies alone fill
    /// it (so that a full cache does not scan every entry on every new domain).
    trim_at: std::sync::atomic::AtomicUsize,
}

/// An entry of the cache as [`MemoryCache::read`] shows it: the fields of [`Entry`], borrowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryRef<'a> {
    /// The last valid policy, possibly expired (an expired one is never applied).
    pub policy: Option<&'a Arc<CachedPolicy>>,
    /// When the TXT record was last looked up (Unix seconds), whatever the answer.
    pub checked_at: u64,
    /// The last failed fetch, cleared by a successful one.
    pub failed: Option<&'a FailedFetch>,
}

impl<'a> EntryRef<'a> {
    /// The policy if it may be applied at `now`.
    pub fn live(self, now: u64) -> Option<&'a Arc<CachedPolicy>> {
        self.policy.filter(|p| p.is_live(now))
    }
}

impl<'a> From<&'a Entry> for EntryRef<'a> {
    fn from(e: &'a Entry) -> Self {
        Self { policy: e.policy.as_ref(), checked_at: e.checked_at, failed: e.failed.as_ref() }
    }
}

impl<'a> From<&'a Compact> for EntryRef<'a> {
    fn from(e: &'a Compact) -> Self {
        Self { policy: e.policy.as_ref(), checked_at: e.checked_at, failed: e.failed.as_deref() }
    }
}

/// The shared map's lookup form of a domain.
fn name(domain: &Domain) -> &[u8] {
    domain.as_str().as_bytes()
}

/// What [`MemoryCache::miss`] found.
enum Miss<'a> {
    /// The shared entry, under the read lock.
    Shared(MappedRwLockReadGuard<'a, Compact>),
    /// A private copy is now in the thread's table.
    Copied,
    /// No entry.
    Absent,
}

/// A thread's copies of entries of one cache at one generation.
struct Local {
    cache_id: u64,
    generation: u64,
    /// At most [`LOCAL_CAPACITY`] entries, so the fast unkeyed hasher is safe here.
    entries: FxMap<Domain, Entry>,
    /// Hashes of the domains read lately from the shared map, one per slot: a domain found here
    /// is read a second time and gets a private copy.
    recent: [u64; RECENT],
}

impl Default for Local {
    fn default() -> Self {
        Self { cache_id: 0, generation: 0, entries: FxMap::default(), recent: [0; RECENT] }
    }
}

thread_local! {
    static LOCAL: RefCell<Local> = RefCell::new(Local::default());
    /// Whether this thread's last [`MemoryCache::read`] went to the shared map (for
    /// [`MemoryCache::prefetch`]).
    static LAST_READ_SHARED: Cell<bool> = const { Cell::new(true) };
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
            hasher: RandomState::new(),
            map: RwLock::new(Table::default()),
            layout: (AtomicUsize::new(0), AtomicUsize::new(0)),
            capacity,
            trim_at: std::sync::atomic::AtomicUsize::new(capacity),
        }
    }

    fn hash(&self, domain: &Domain) -> u64 {
        self.hasher.hash_one(name(domain))
    }

    /// Starts loading the shared map's slot for `domain` into the CPU's caches, without waiting
    /// for it, so that a [`MemoryCache::read`] a little later does not wait for main memory
    /// twice (for the slot, then for the policy). Reads no lock; does nothing else.
    pub fn prefetch(&self, domain: &Domain) {
        // Not after a read this thread answered from its own copies: the domain checked next is
        // then most likely a busy one again, whose read touches no shared memory, and the hash
        // would cost more than it saves. A guess either way changes only the speed.
        if !LAST_READ_SHARED.get() {
            return;
        }
        let layout = (self.layout.0.load(Ordering::Relaxed), self.layout.1.load(Ordering::Relaxed));
        if layout.0 != 0 {
            table::prefetch(table::home_address(layout, self.hash(domain)));
        }
    }

    /// Publishes the map's layout for [`MemoryCache::prefetch`] (under the write lock).
    fn publish(&self, map: &Table) {
        let (start, mask) = map.layout();
        self.layout.0.store(start, Ordering::Relaxed);
        self.layout.1.store(mask, Ordering::Relaxed);
    }

    /// Runs `f` on the entry for `domain`, from this thread's copy when it is current. `f` may
    /// run under the shared read lock: it must not use the cache.
    pub fn read<T>(&self, domain: &Domain, f: impl FnOnce(Option<EntryRef<'_>>) -> T) -> T {
        let generation = self.generation.load(Ordering::Acquire);
        LOCAL.with(|cell| {
            let Ok(mut local) = cell.try_borrow_mut() else {
                return f(self.map.read().get(self.hash(domain), name(domain)).map(EntryRef::from));
            };
            if local.cache_id != self.id || local.generation != generation {
                local.cache_id = self.id;
                local.generation = generation;
                local.entries.clear();
            }
            // One search on the hit path: a busy domain's private copy.
            if let Some(entry) = local.entries.get(domain) {
                LAST_READ_SHARED.set(false);
                return f(Some(entry.into()));
            }
            LAST_READ_SHARED.set(true);
            match self.miss(&mut local, domain) {
                Miss::Shared(entry) => {
                    drop(local);
                    f(Some(EntryRef::from(&*entry)))
                }
                Miss::Absent => f(None),
                Miss::Copied => f(local.entries.get(domain).map(EntryRef::from)),
            }
        })
    }

    /// A read that this thread's copies cannot answer, kept out of [`MemoryCache::read`] so
    /// that the path of a busy domain stays small: the shared entry, in place, for a domain not
    /// read lately; a private copy for one read again.
    #[inline(never)]
    fn miss(&self, local: &mut Local, domain: &Domain) -> Miss<'_> {
        let hash = self.hash(domain);
        // The filter's slot from the top bits (the table's home slot is the low ones), and a
        // value never equal to an empty slot's.
        let slot = (hash >> (u64::BITS - RECENT.ilog2())) as usize;
        let seen = hash | 1;
        let map = self.map.read();
        if local.recent[slot] != seen {
            // Not read lately: the shared entry, in place.
            return match RwLockReadGuard::try_map(map, |m| m.get(hash, name(domain))) {
                Ok(entry) => {
                    local.recent[slot] = seen;
                    Miss::Shared(entry)
                }
                Err(_) => Miss::Absent,
            };
        }
        let Some(copy) = map.get(hash, name(domain)).map(private_copy) else { return Miss::Absent };
        drop(map);
        if local.entries.len() >= LOCAL_CAPACITY {
            local.entries.clear();
        }
        local.entries.insert(domain.clone(), copy);
        Miss::Copied
    }

    /// A copy of the entry for `domain`, from the shared map.
    pub fn get(&self, domain: &Domain) -> Option<Entry> {
        self.map.read().get(self.hash(domain), name(domain)).map(Compact::to_entry)
    }

    /// Runs `f` on the entry for `domain` (created empty if absent), under the write lock.
    pub fn update<T>(&self, domain: &Domain, now: u64, f: impl FnOnce(&mut Entry) -> T) -> T {
        let hash = self.hash(domain);
        let mut map = self.map.write();
        if map.len() >= self.trim_at.load(Ordering::Relaxed) && map.get(hash, name(domain)).is_none() {
            map.retain(|e| EntryRef::from(e).live(now).is_some());
            // Entries without a live policy may again take up to a tenth of the capacity (at
            // least one) beyond the live ones before the next trim: the cost of a trim is spread
            // over that many new domains, and their number stays bounded.
            let slack = (self.capacity / 10).max(1);
            self.trim_at.store(map.len().max(self.capacity.saturating_sub(slack)) + slack, Ordering::Relaxed);
        }
        // `f` works on a copy, written back when it returns: a panic in `f` leaves the entry as
        // it was.
        let slot = map.entry(hash, name(domain));
        let mut entry = slot.to_entry();
        let result = f(&mut entry);
        slot.set(entry);
        self.publish(&map);
        self.generation.fetch_add(1, Ordering::Release);
        result
    }

    /// Removes the entry for `domain`; true if there was one.
    pub fn remove(&self, domain: &Domain) -> bool {
        let hash = self.hash(domain);
        let removed = self.map.write().remove(hash, name(domain));
        self.generation.fetch_add(1, Ordering::Release);
        removed
    }

    /// Number of domains held.
    pub fn len(&self) -> usize {
        self.map.read().len()
    }

    /// True when no domain is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A copy whose policy has a reference count of its own, so that threads never share one.
fn private_copy(entry: &Compact) -> Entry {
    let entry = entry.to_entry();
    Entry { policy: entry.policy.as_ref().map(|p| Arc::new((**p).clone())), ..entry }
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

    /// Whether this thread holds a private copy of `domain`'s entry.
    fn copied(domain: &Domain) -> bool {
        LOCAL.with(|cell| cell.borrow().entries.contains_key(domain))
    }

    #[test]
    fn a_domain_read_again_gets_a_private_copy_and_writes_are_seen_at_once() {
        let now = 1_800_000_000;
        let cache = MemoryCache::default();
        // Short names live in the map's slot, long ones (over 30 octets) behind a pointer.
        let long = format!("{}.example.test", "a".repeat(40));
        for name in ["busy.test", long.as_str()] {
            let d = Domain::parse(name).expect("domain");
            assert!(cache.read(&d, |e| e.is_none()), "{name}: absent at first");
            cache.update(&d, now, |e| *e = live_entry(now));
            // Read once: from the shared map, no copy.
            let shared = cache.read(&d, |e| e.and_then(|e| e.live(now).cloned())).expect("live");
            assert!(!copied(&d), "{name}: copied on its first read");
            // Read again: a private copy, equal to the shared entry but not the same object.
            let private = cache.read(&d, |e| e.and_then(|e| e.live(now).cloned())).expect("live");
            assert!(copied(&d), "{name}: not copied on its second read");
            assert_eq!(private, shared);
            assert!(!Arc::ptr_eq(&private, &shared), "{name}: the copy shares the reference count");
            // A write is seen by the next read, copy or not.
            cache.update(&d, now, |e| e.checked_at = now + 7);
            assert_eq!(cache.read(&d, |e| e.map(|e| e.checked_at)), Some(now + 7), "{name}");
            assert_eq!(cache.read(&d, |e| e.map(|e| e.checked_at)), Some(now + 7), "{name}");
            assert!(cache.remove(&d));
            assert!(cache.read(&d, |e| e.is_none()), "{name}: removed");
            assert_eq!(cache.get(&d), None);
        }
        // Names that differ only past the inline part, or in length, are different keys.
        let a = Domain::parse(&format!("{long}.a")).expect("domain");
        let b = Domain::parse(&format!("{long}.b")).expect("domain");
        cache.update(&a, now, |e| e.checked_at = 1);
        assert_eq!(cache.get(&b), None);
        assert_eq!(cache.get(&Domain::parse("x.test").expect("d")), None);
        assert_eq!(cache.get(&a).map(|e| e.checked_at), Some(1));
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
