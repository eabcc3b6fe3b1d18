//! A fast, non-keyed hasher (FxHash) for maps on the hot path whose keys an attacker cannot aim
//! at collisions, or whose size is small and bounded (then collisions cost little): the TLSRPT
//! counters (keys made by this process), the per-thread copies of DNSSEC answers and of policy
//! cache entries (at most 256 entries each), the memory cache's filter of recently read domains,
//! and the certificate and DANE-EE memos (keyed by a hash of the chain already, and
//! bounded). Shared maps keyed by names from DNS keep the standard keyed hasher.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A `HashMap` with [`FxHasher`].
pub(crate) type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// FxHash: a multiply and rotate per 8 bytes.
#[derive(Default)]
pub(crate) struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.write_u64(u64::from_le_bytes(c.try_into().unwrap_or_default()));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut buf = [0u8; 8];
            buf[..rest.len()].copy_from_slice(rest);
            self.write_u64(u64::from_le_bytes(buf));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}
