//! MX certificate validation across processes (docs/architecture.md, "Remembered validations").
//!
//! A chain that passed is remembered by the engine's [`crate::cert::CertVerifier`] for this
//! process, and in the persistent store (SQLite, or Redis for a fleet) for every process that
//! shares it. Exim starts a process per delivery, and validating the same MX's chain again in each
//! (a signature check per certificate: about 100 µs for an ECDSA chain, after reading the roots:
//! about 500 µs more for 145 of them) cost more than anything else the delivery's check computed
//! (BENCHMARKS.md, "A process per delivery"). The store keeps a validation under a digest of the
//! trust anchors' identity, the MX host name and the chain's exact bytes
//! ([`crate::cert::CertVerifier::digest`]), for at most [`REMEMBER_FOR`] and never past the
//! chain's earliest `notAfter`. Failures are never remembered: a failing chain is validated
//! again at every delivery. The store is a cache here: if it cannot be read or written, the chain
//! is validated.

use super::Engine;
use crate::cert::CertFailure;
use crate::domain::Domain;

/// How long a validation is remembered in the store at most: a bound on how long a root that
/// left the trust anchors in a way their identity cannot see (a file edited in place inside a
/// system certificate directory) may still count for chains validated before.
pub(crate) const REMEMBER_FOR: u64 = 86_400;

impl Engine {
    /// Validates `chain` (its memo key `key`) for the MX host `mx` at `now`, or finds it
    /// validated in this process or, under the same trust anchors, in another.
    pub(super) fn verify_chain(
        &self,
        key: u64,
        chain: &[u8],
        mx: &Domain,
        now: u64,
    ) -> Result<(), CertFailure> {
        if self.certs.remembered(key, chain, mx, now) {
            return Ok(());
        }
        let stored =
            self.verified_store.as_ref().and_then(|store| Some((store, self.certs.digest(chain, mx)?)));
        if let Some((store, digest)) = &stored {
            if let Ok(Some((valid_from, until))) = store.verified_load(digest, now) {
                if valid_from <= now {
                    self.certs.remember(key, chain, mx, valid_from, until);
                    return Ok(());
                }
            }
        }
        let (valid_from, valid_until) = self.certs.verify_now(key, chain, mx, now)?;
        if let Some((store, digest)) = stored.filter(|_| self.store_writable) {
            let _ = store.verified_save(
                &digest,
                valid_from,
                now,
                valid_until.min(now.saturating_add(REMEMBER_FOR)),
            );
        }
        Ok(())
    }
}
