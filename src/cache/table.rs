//! The shared map of the in-process cache ([`super::MemoryCache`]): open addressing with linear
//! probing, one slot of 64 octets per domain, aligned on a cache line.
//!
//! A slot holds everything a lookup reads before the policy: the domain's hash, its name (inline
//! up to [`INLINE`] octets) and the entry in a compact form (the policy's pointer, the time of the
//! TXT lookup, and the rare failed fetch behind a pointer of its own). The slot is found from the
//! hash alone, so a lookup of a domain whose slot is not in the CPU's caches waits on main memory
//! once for the slot, where a map that reads a group of control bytes first and the slot after
//! waits twice (BENCHMARKS.md, "Scale"). The table is kept at most half full: at a million domains
//! three in four sit in their home slot and nine in ten in it or the next (one line further).
//!
//! The hash is the caller's (a keyed SipHash: linear probing degrades badly on chosen keys).
//! Removal shifts the following slots back (no tombstones), so a search stops at the first empty
//! slot.

use std::fmt;
use std::num::NonZeroU64;
use std::sync::Arc;

use super::{CachedPolicy, Entry, FailedFetch};

/// Names up to this many octets are kept in the slot itself, so that a lookup compares the name
/// without following a pointer to it. Most domains are shorter.
const INLINE: usize = 30;

/// A domain's name: in the slot when it is short.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Key {
    Inline(u8, [u8; INLINE]),
    Long(Box<[u8]>),
}

impl Key {
    fn of(name: &[u8]) -> Self {
        match u8::try_from(name.len()) {
            Ok(len) if name.len() <= INLINE => {
                let mut bytes = [0; INLINE];
                bytes[..name.len()].copy_from_slice(name);
                Self::Inline(len, bytes)
            }
            _ => Self::Long(name.into()),
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Self::Inline(len, bytes) => &bytes[..usize::from(*len)],
            Self::Long(bytes) => bytes,
        }
    }
}

/// An [`Entry`] as the table keeps it: the same fields, the failed fetch boxed (it is rare, and
/// inline it would not let the slot fit one cache line).
#[derive(Debug, Default)]
pub(super) struct Compact {
    pub(super) policy: Option<Arc<CachedPolicy>>,
    pub(super) checked_at: u64,
    pub(super) failed: Option<Box<FailedFetch>>,
}

impl Compact {
    pub(super) fn to_entry(&self) -> Entry {
        Entry {
            policy: self.policy.clone(),
            checked_at: self.checked_at,
            failed: self.failed.as_deref().cloned(),
        }
    }

    pub(super) fn set(&mut self, entry: Entry) {
        self.policy = entry.policy;
        self.checked_at = entry.checked_at;
        self.failed = entry.failed.map(Box::new);
    }
}

#[derive(Debug)]
#[repr(C, align(64))]
struct Slot {
    /// The hash with its top bit set ([`stored`]); the home slot is its low bits.
    hash: NonZeroU64,
    key: Key,
    entry: Compact,
}

// One slot, empty or not, is one cache line.
const _: () = assert!(size_of::<Option<Slot>>() == 64);

/// A hash as slots keep it: never zero, so that an empty slot costs nothing to tell apart.
fn stored(hash: u64) -> NonZeroU64 {
    NonZeroU64::new(hash | 1 << 63).unwrap_or(NonZeroU64::MAX)
}

/// The address of `hash`'s home slot in a table of [`Table::layout`] `(start, mask)`.
pub(super) fn home_address((start, mask): (usize, usize), hash: u64) -> usize {
    start.wrapping_add((stored(hash).get() as usize & mask) * size_of::<Option<Slot>>())
}

/// Asks the CPU to start loading the cache line at `address` into its caches, and goes on at
/// once: a lookup that will read a slot some instructions later finds it there (or on its way)
/// instead of waiting for main memory then. The address may be stale (the table grew since it was
/// read): a prefetch is a hint that never faults.
#[allow(unsafe_code)] // the CPU's prefetch instruction, which `std` offers only as an intrinsic
#[inline]
pub(super) fn prefetch(address: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 reads nothing into the program's state and never faults, whatever the
    // address (Intel SDM, "PREFETCHh"); SSE, which provides it, is part of the x86_64 baseline.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(std::ptr::without_provenance(
            address,
        ))
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = address;
}

/// The slots.
pub(super) struct Table {
    slots: Box<[Option<Slot>]>,
    len: usize,
}

/// Slots of a new table.
const FIRST: usize = 8;

impl Default for Table {
    fn default() -> Self {
        Self { slots: empty(FIRST), len: 0 }
    }
}

impl fmt::Debug for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Table({} of {} slots)", self.len, self.slots.len())
    }
}

fn empty(n: usize) -> Box<[Option<Slot>]> {
    std::iter::repeat_with(|| None).take(n).collect()
}

impl Table {
    /// Number of entries.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    /// Where the slots start and the mask of a hash's home slot, for [`prefetch`] by a reader
    /// that does not hold the lock.
    pub(super) fn layout(&self) -> (usize, usize) {
        (self.slots.as_ptr() as usize, self.mask())
    }

    /// The entry of `name`, whose hash is `hash`.
    #[inline]
    pub(super) fn get(&self, hash: u64, name: &[u8]) -> Option<&Compact> {
        let i = self.position(hash, name)?;
        self.slots[i].as_ref().map(|s| &s.entry)
    }

    /// The index of `name`'s slot.
    #[inline]
    fn position(&self, hash: u64, name: &[u8]) -> Option<usize> {
        let hash = stored(hash);
        let mask = self.mask();
        let mut i = hash.get() as usize & mask;
        loop {
            match &self.slots[i] {
                None => return None,
                Some(s) if s.hash == hash && s.key.bytes() == name => return Some(i),
                Some(_) => i = (i + 1) & mask,
            }
        }
    }

    /// The entry of `name`, created empty if absent.
    pub(super) fn entry(&mut self, hash: u64, name: &[u8]) -> &mut Compact {
        let Some(i) = self.position(hash, name) else {
            if (self.len + 1) * 2 > self.slots.len() {
                self.grow();
            }
            let hash = stored(hash);
            let i = self.vacant(hash);
            self.len += 1;
            return &mut self.slots[i]
                .insert(Slot { hash, key: Key::of(name), entry: Compact::default() })
                .entry;
        };
        match &mut self.slots[i] {
            Some(s) => &mut s.entry,
            None => unreachable!("position {i} is a full slot"),
        }
    }

    /// The first empty slot from `hash`'s home.
    fn vacant(&self, hash: NonZeroU64) -> usize {
        let mask = self.mask();
        let mut i = hash.get() as usize & mask;
        while self.slots[i].is_some() {
            i = (i + 1) & mask;
        }
        i
    }

    fn grow(&mut self) {
        let bigger = empty(self.slots.len() * 2);
        let old = std::mem::replace(&mut self.slots, bigger);
        for slot in old.into_vec().into_iter().flatten() {
            let i = self.vacant(slot.hash);
            self.slots[i] = Some(slot);
        }
    }

    /// Removes the entry of `name`; true if there was one.
    pub(super) fn remove(&mut self, hash: u64, name: &[u8]) -> bool {
        let Some(at) = self.position(hash, name) else { return false };
        self.slots[at] = None;
        self.len -= 1;
        // Backward shift: each following slot of the run moves into the hole when the hole lies
        // between its home and where it is, so that no search stops short of it.
        let mask = self.mask();
        let (mut hole, mut j) = (at, (at + 1) & mask);
        while let Some(s) = &self.slots[j] {
            let home = s.hash.get() as usize & mask;
            if j.wrapping_sub(home) & mask >= j.wrapping_sub(hole) & mask {
                self.slots[hole] = self.slots[j].take();
                hole = j;
            }
            j = (j + 1) & mask;
        }
        true
    }

    /// Keeps only the entries for which `keep` is true.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&Compact) -> bool) {
        let doomed: Vec<(u64, Key)> = self
            .slots
            .iter()
            .flatten()
            .filter(|s| !keep(&s.entry))
            .map(|s| (s.hash.get(), s.key.clone()))
            .collect();
        for (hash, key) in doomed {
            self.remove(hash, key.bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table's invariant: every entry is reachable from its home slot without crossing an
    /// empty slot, and `len` counts them.
    fn assert_sound(t: &Table) {
        let mask = t.mask();
        let mut n = 0;
        for (i, slot) in t.slots.iter().enumerate() {
            let Some(s) = slot else { continue };
            n += 1;
            let mut j = s.hash.get() as usize & mask;
            while j != i {
                assert!(t.slots[j].is_some(), "slot {i}: empty slot {j} on the way from its home");
                j = (j + 1) & mask;
            }
        }
        assert_eq!(n, t.len);
    }

    #[test]
    fn colliding_hashes_insert_find_and_remove_with_backward_shift() {
        let mut t = Table::default();
        // Few distinct hashes for many names: long runs, runs that wrap around the end, equal
        // hashes with different names, and names longer than the inline part.
        let names: Vec<String> = (0..200)
            .map(|i| if i % 7 == 0 { format!("{}{i}.test", "x".repeat(40)) } else { format!("d{i}.test") })
            .collect();
        let hash = |i: usize| u64::MAX - 12 + (i % 5) as u64 * 3;
        for (i, name) in names.iter().enumerate() {
            t.entry(hash(i), name.as_bytes()).checked_at = i as u64;
            assert_sound(&t);
        }
        assert_eq!(t.len(), names.len());
        for (i, name) in names.iter().enumerate() {
            assert_eq!(t.get(hash(i), name.as_bytes()).map(|e| e.checked_at), Some(i as u64), "{name}");
            assert!(t.get(hash(i) ^ 1, name.as_bytes()).is_none(), "{name}: found under another hash");
        }
        // Remove every third, then check the others are all still found.
        for (i, name) in names.iter().enumerate().filter(|(i, _)| i % 3 == 0) {
            assert!(t.remove(hash(i), name.as_bytes()), "{name}");
            assert!(!t.remove(hash(i), name.as_bytes()), "{name}: removed twice");
            assert_sound(&t);
        }
        for (i, name) in names.iter().enumerate() {
            assert_eq!(t.get(hash(i), name.as_bytes()).is_some(), i % 3 != 0, "{name}");
        }
        t.retain(|e| e.checked_at % 2 == 0);
        assert_sound(&t);
        for (i, name) in names.iter().enumerate() {
            assert_eq!(t.get(hash(i), name.as_bytes()).is_some(), i % 3 != 0 && i % 2 == 0, "{name}");
        }
        assert_eq!(t.len(), (0..200).filter(|i| i % 3 != 0 && i % 2 == 0).count());
    }

    #[test]
    fn the_prefetched_address_is_the_home_slot() {
        let mut t = Table::default();
        for i in 0..100u64 {
            t.entry(i.wrapping_mul(0x9E37_79B9_7F4A_7C15), format!("d{i}.test").as_bytes());
        }
        let mask = t.mask();
        let mut homes = 0;
        for (i, slot) in t.slots.iter().enumerate() {
            let Some(s) = slot else { continue };
            let home = s.hash.get() as usize & mask;
            let address = std::ptr::from_ref(&t.slots[home]) as usize;
            assert_eq!(home_address(t.layout(), s.hash.get()), address, "slot {i}");
            homes += usize::from(home == i);
        }
        assert!(homes > 50, "{homes} of 100 in their home slot");
    }

    #[test]
    fn the_table_stays_at_most_half_full() {
        let mut t = Table::default();
        for i in 0..1000u64 {
            t.entry(i.wrapping_mul(0x9E37_79B9_7F4A_7C15), format!("d{i}.test").as_bytes());
            assert!(t.len() * 2 <= t.slots.len(), "{} in {}", t.len(), t.slots.len());
        }
        assert_eq!(t.slots.len(), 2048);
        assert_sound(&t);
    }
}
