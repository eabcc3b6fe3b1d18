//! The validating client kept per thread ([`crate::dns::Lifetime::PerThread`], `mtasts serve`),
//! and the validated DNSKEY sets it keeps. See the [parent module's docs](super) for the rules.
//!
//! A thread keeps one [`Slot`]: the current-thread runtime, the nameserver pool, the trust
//! anchors (with the state of their file when it was read) and the DNSKEY sets validated so far,
//! by zone ([`ZoneKeys`]). Each call builds a new hickory `DnssecDnsHandle` on the kept pool, so
//! hickory's own validation cache (keyed by a 64-bit hash, not something to trust across calls)
//! lives for one call, as in the per-call mode.
//!
//! The fast path ([`FastPath::ask`]) answers a question whose reply is a signed positive answer:
//! the RRset asked for, at the name asked, with nothing in the authority section, signed (not
//! from a wildcard) by a zone whose DNSKEY set is kept and still fresh. It checks the signature
//! itself, with the same checks hickory makes (RFC 4035 §5.3): the RRSIG's owner, class, type,
//! labels, signer (a zone containing the owner), validity period, key tag, algorithm, and a
//! zone key that is not revoked. Anything else (a denial, a CNAME, a wildcard, an unknown
//! signer, a signature that does not verify) goes to hickory's validator, which asks again and
//! judges: the fast path can only say "secure", never "bogus" or "insecure".

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hickory_resolver::config::ResolverConfig;
use hickory_resolver::net::dnssec::DnssecDnsHandle;
use hickory_resolver::net::xfer::{DnsHandle, FirstAnswer};
use hickory_resolver::net::{DnsError as HickoryDnsError, NetError};
use hickory_resolver::proto::dnssec::rdata::{DNSKEY, DNSSECRData, RRSIG};
use hickory_resolver::proto::dnssec::{Proof, TrustAnchors, Verifier};
use hickory_resolver::proto::op::{DnsRequestOptions, DnsResponse, Query, ResponseCode};
use hickory_resolver::proto::rr::{DNSClass, LowerName, Name, RData, Record, RecordType, SerialNumber};

use super::{
    Client, Plain, Response, Trouble, Validator, message, plain_handle, read_anchor_file, runtime,
    trust_anchors, validated,
};
use crate::dns::{DnssecMode, Servers, timed_out};
use crate::ports::Security;

/// RRSIGs of one answer tried at most (hickory's validator has the same kind of bound).
const MAX_SIGNATURES: usize = 8;
/// Keys of one zone tried at most for one RRSIG (same key tag and algorithm).
const MAX_KEY_TAG_COLLISIONS: usize = 2;
/// Zones between a signer and its trust anchor followed at most.
const MAX_CHAIN: usize = 16;
/// Zones whose validated DNSKEY sets a thread keeps at most.
const MAX_ZONES: usize = 1024;
/// A trust anchor file changed this recently (seconds, by its ctime) when it was read may change
/// again without its size and timestamps showing it (their granularity): it is then compared by
/// its contents until this much time has passed.
const RACY_SECONDS: i64 = 2;
/// How long a slot (its anchors, pool and kept keys) serves before it is made again. DS anchors
/// are turned into the zone's keys when a slot is made: a key rollover the file's DS already
/// names (the new key published later) is then taken up within this time, not at a restart.
const SLOT_LIFETIME: std::time::Duration = std::time::Duration::from_secs(3600);

/// What a kept slot was made for: a call with other settings makes a new one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct KeptKey {
    pub(super) servers: Vec<std::net::SocketAddr>,
    pub(super) timeout: Duration,
    pub(super) mode: DnssecMode,
    pub(super) trust_anchor: Option<PathBuf>,
}

/// A thread's kept slot, and the fork generation ([`crate::forks`]) it was made in.
#[derive(Default)]
pub(super) struct Kept {
    generation: u64,
    slot: Option<Slot>,
}

thread_local! {
    /// This thread's kept validating client ([`crate::dns::Lifetime::PerThread`]).
    pub(super) static KEPT: RefCell<Kept> = RefCell::new(Kept::default());
}

impl Kept {
    /// The slot for `key`: the kept one unless it was made for other settings or its trust
    /// anchor file has changed since it was read (then a new one, with nothing validated yet).
    pub(super) fn slot(&mut self, key: &KeptKey) -> Result<&mut Slot, Trouble> {
        self.leak_if_forked();
        let stale = match &mut self.slot {
            Some(slot) => {
                slot.key != *key
                    || slot.made.elapsed() > SLOT_LIFETIME
                    || slot.file.as_mut().is_some_and(AnchorFile::changed)
            }
            None => true,
        };
        if stale {
            self.slot = None;
            self.slot = Some(Slot {
                key: key.clone(),
                made: std::time::Instant::now(),
                runtime: runtime()?,
                plain: None,
                anchors: None,
                file: None,
                keys: Arc::new(Mutex::new(ZoneKeys::default())),
            });
        }
        self.slot.as_mut().ok_or_else(|| Trouble::Failed("no DNS client".into()))
    }

    /// A slot made before a fork shares the parent's epoll instance: never used nor dropped in
    /// the child (dropping would deregister the parent's sockets), but leaked.
    fn leak_if_forked(&mut self) {
        let generation = crate::forks::generation();
        if generation != self.generation {
            std::mem::forget(self.slot.take());
            self.generation = generation;
        }
    }
}

impl Drop for Kept {
    /// At the thread's end (or a forked child's `exit`), a slot made before a fork is leaked.
    fn drop(&mut self) {
        self.leak_if_forked();
    }
}

/// A thread's kept runtime, pool, anchors and validated keys.
pub(super) struct Slot {
    key: KeptKey,
    /// When it was made: a slot lasts [`SLOT_LIFETIME`] at most.
    made: std::time::Instant,
    runtime: tokio::runtime::Runtime,
    /// Built by the first validating call.
    plain: Option<Plain>,
    /// Read (and DS anchors turned into keys) by the first validating call.
    anchors: Option<Arc<TrustAnchors>>,
    /// The trust anchor file as it was read.
    file: Option<AnchorFile>,
    keys: Arc<Mutex<ZoneKeys>>,
}

impl Slot {
    /// Runs `f` with a client on this slot's runtime, under the call's deadline.
    pub(super) fn run<T, F, Fut>(
        &mut self,
        config: ResolverConfig,
        servers: &Servers,
        f: F,
    ) -> Result<T, Trouble>
    where
        F: FnOnce(Arc<Client>) -> Fut,
        Fut: Future<Output = Result<T, Trouble>>,
    {
        let Slot { key, runtime, plain, anchors, file, keys, .. } = self;
        let timeout = key.timeout;
        runtime.block_on(async {
            let work = async {
                let client = match key.mode {
                    DnssecMode::TrustAd => Client::trust_ad(servers.clone(), timeout)?,
                    _ => {
                        let plain = match plain {
                            Some(p) => p.clone(),
                            None => plain.insert(plain_handle(config, timeout)?).clone(),
                        };
                        let anchors = match anchors {
                            Some(a) => Arc::clone(a),
                            None => {
                                let loaded = match key.trust_anchor.as_deref() {
                                    None => TrustAnchors::default(),
                                    Some(path) => {
                                        // The state and time before the read: a change made
                                        // during it shows at the next call.
                                        let read_at = unix_seconds(SystemTime::now());
                                        let state = FileState::of(path).map_err(|e| {
                                            Trouble::Failed(format!(
                                                "cannot read the trust anchor {}: {e}",
                                                path.display()
                                            ))
                                        })?;
                                        let text = read_anchor_file(path)?;
                                        let loaded =
                                            trust_anchors(path, &text, &plain, servers, timeout).await?;
                                        *file =
                                            Some(AnchorFile { path: path.to_owned(), state, text, read_at });
                                        loaded
                                    }
                                };
                                Arc::clone(anchors.insert(Arc::new(loaded)))
                            }
                        };
                        let handle = DnssecDnsHandle::with_trust_anchor(plain.clone(), Arc::clone(&anchors));
                        Client::Validating {
                            handle: Box::new(handle),
                            kept: Some(FastPath { plain, anchors, keys: Arc::clone(keys) }),
                            servers: servers.clone(),
                            timeout,
                        }
                    }
                };
                f(Arc::new(client)).await
            };
            match tokio::time::timeout(timeout, work).await {
                Ok(r) => r,
                Err(_elapsed) => Err(Trouble::Failed(message(timed_out(servers, timeout)))),
            }
        })
    }
}

/// What tells a trust anchor file's change: device, inode, size and timestamps.
#[derive(Clone, Debug, PartialEq, Eq)]
struct FileState {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileState {
    fn of(path: &Path) -> std::io::Result<Self> {
        let m = std::fs::metadata(path)?;
        Ok(Self {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }
}

/// The trust anchor file a slot's anchors were read from.
struct AnchorFile {
    path: PathBuf,
    state: FileState,
    text: String,
    /// When it was last read or found the same (Unix seconds).
    read_at: i64,
}

impl AnchorFile {
    /// Whether the file is no longer what was read: its state differs, or it cannot be looked
    /// at, or (while its last change is too recent for the timestamps to tell) its contents
    /// differ.
    fn changed(&mut self) -> bool {
        match FileState::of(&self.path) {
            Ok(state) if state == self.state => {}
            _ => return true,
        }
        if self.state.ctime.0 + RACY_SECONDS < self.read_at {
            return false;
        }
        let now = unix_seconds(SystemTime::now());
        match std::fs::read_to_string(&self.path) {
            Ok(text) if text == self.text => {
                self.read_at = now;
                false
            }
            _ => true,
        }
    }
}

fn unix_seconds(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Validated DNSKEY sets by zone, each until the earliest expiry on its chain of trust.
#[derive(Default)]
pub(super) struct ZoneKeys {
    zones: HashMap<Name, ZoneEntry>,
}

/// A zone's validated DNSKEY set.
#[derive(Clone)]
struct ZoneEntry {
    keys: Arc<[DNSKEY]>,
    /// Unix seconds after which it is not used: the least of the DNSKEY RRset's authenticated
    /// TTL (its TTL, its RRSIG's original TTL and expiration, RFC 4035 §5.3.3) and, unless the
    /// set was signed by a trust anchor, the DS RRset's and the parent zone's entry's.
    until: u64,
}

/// What a kept client adds to the validator: the plain pool, the anchors, the validated keys.
pub(super) struct FastPath {
    plain: Plain,
    anchors: Arc<TrustAnchors>,
    keys: Arc<Mutex<ZoneKeys>>,
}

impl FastPath {
    /// The answer to one question when it is a signed positive answer checked with kept keys;
    /// a failure the validator would have passed on as it is; else `None`: ask the validator.
    pub(super) async fn ask(
        &self,
        validator: &Validator,
        name: &Name,
        rtype: RecordType,
        servers: &Servers,
        timeout: Duration,
    ) -> Option<Result<Response, Trouble>> {
        let mut options = DnsRequestOptions::default();
        options.edns_set_dnssec_ok = true;
        let result = self.plain.lookup(Query::query(name.clone(), rtype), options).first_answer().await;
        let response = match result {
            Ok(r) => r,
            // A denial needs the validator's proof.
            Err(NetError::Dns(HickoryDnsError::NoRecordsFound(_))) => return None,
            // The validator passes other errors on unchanged: the same judgement.
            Err(e) => return Some(validated(Err(e), name, rtype, servers, timeout)),
        };
        let now = unix_seconds(SystemTime::now());
        let now = u64::try_from(now).unwrap_or(0);
        self.secure(validator, &response, name, rtype, now).await.map(Ok)
    }

    /// The answer's RRset, secure, when a kept key of its signer verifies its signature.
    async fn secure(
        &self,
        validator: &Validator,
        response: &DnsResponse,
        name: &Name,
        rtype: RecordType,
        now: u64,
    ) -> Option<Response> {
        if response.response_code != ResponseCode::NoError || !response.authorities.is_empty() {
            return None;
        }
        // hickory rejects a message with records of another class.
        if response.answers.iter().chain(response.additionals.iter()).any(|r| r.dns_class != DNSClass::IN) {
            return None;
        }
        let (sigs, data): (Vec<&Record>, Vec<&Record>) =
            response.answers.iter().partition(|r| r.record_type() == RecordType::RRSIG);
        if data.is_empty() || data.iter().any(|r| r.name != *name || r.record_type() != rtype) {
            return None;
        }
        // hickory's clock: seconds since the epoch, serial number arithmetic (RFC 4034 §3.1.5).
        #[allow(clippy::cast_possible_truncation)]
        let now32 = now as u32;
        for sig in sigs.into_iter().take(MAX_SIGNATURES) {
            let RData::DNSSEC(DNSSECRData::RRSIG(rrsig)) = &sig.data else { continue };
            if sig.name != *name || !plausible(rrsig, name, rtype, now32) {
                continue;
            }
            let signer = &rrsig.input().signer_name;
            let zone = self.zone(validator, signer, now, 0).await?;
            if verifies(&zone.keys, name, rtype, rrsig, &data, now32) {
                let ttl = data.iter().map(|r| rrsig.authenticated_ttl(r, now32)).min().unwrap_or(0);
                let records = data
                    .iter()
                    .map(|r| {
                        let mut r = (*r).clone();
                        r.ttl = ttl;
                        (r, Security::Secure)
                    })
                    .collect();
                return Some(Response { records, denial: Security::Insecure });
            }
            if !zone.keys.iter().any(|k| signs(k, rrsig)) {
                // Signed by a key the kept set lacks (a key rollover): fetched again next time.
                self.forget(signer);
            }
        }
        None
    }

    /// `zone`'s kept DNSKEY set, or one validated now (with its chain's expiry).
    fn zone<'a>(
        &'a self,
        validator: &'a Validator,
        zone: &'a Name,
        now: u64,
        depth: usize,
    ) -> Pin<Box<dyn Future<Output = Option<ZoneEntry>> + 'a>> {
        Box::pin(async move {
            if let Some(entry) = self.kept(zone, now) {
                return Some(entry);
            }
            if depth > MAX_CHAIN {
                return None;
            }
            let (records, _) = validated_rrset(validator, zone, RecordType::DNSKEY).await?;
            let keys: Vec<DNSKEY> = records
                .iter()
                .filter_map(|r| match &r.data {
                    RData::DNSSEC(DNSSECRData::DNSKEY(k)) => Some(k.clone()),
                    _ => None,
                })
                .collect();
            let mut until = now + u64::from(records.iter().map(|r| r.ttl).min()?);
            let owner = LowerName::from(zone);
            // A secure set holding a trust anchor's key was validated from the anchor (a set is
            // taken whole or not at all). Which RRSIG hickory marked is not relied on: its
            // validation cache marks the signature at a cached position, whatever it is.
            let anchored = keys.iter().any(|k| self.anchors.contains_with_name(k.public_key(), &owner));
            if !anchored {
                // Validated through the parent's DS RRset: it and the parent's keys bound it too.
                if zone.is_root() {
                    return None;
                }
                let (ds, ds_sig) = validated_rrset(validator, zone, RecordType::DS).await?;
                let parent = ds_sig.as_ref()?.input().signer_name.clone();
                if parent == *zone || !parent.zone_of(zone) {
                    return None;
                }
                let vouches = ds.iter().any(|r| match &r.data {
                    RData::DNSSEC(DNSSECRData::DS(d)) => {
                        keys.iter().any(|k| d.covers(zone, k).unwrap_or(false))
                    }
                    _ => false,
                });
                if !vouches {
                    return None;
                }
                until = until.min(now + u64::from(ds.iter().map(|r| r.ttl).min()?));
                let parent_entry = self.zone(validator, &parent, now, depth + 1).await?;
                // The parent is named by the DS RRset's RRSIG, which hickory's cache may have
                // marked without checking it: it must verify with the parent's kept keys, or
                // nothing is kept (a forged signer would otherwise choose whose expiry bounds
                // this set).
                #[allow(clippy::cast_possible_truncation)]
                let now32 = now as u32;
                let ds_data: Vec<&Record> = ds.iter().collect();
                if !verifies(&parent_entry.keys, zone, RecordType::DS, &ds_sig?, &ds_data, now32) {
                    return None;
                }
                until = until.min(parent_entry.until);
            }
            let entry = ZoneEntry { keys: keys.into(), until };
            self.remember(zone, &entry, now);
            Some(entry)
        })
    }

    fn kept(&self, zone: &Name, now: u64) -> Option<ZoneEntry> {
        let keys = self.keys.lock().ok()?;
        keys.zones.get(zone).filter(|e| e.until > now).cloned()
    }

    fn remember(&self, zone: &Name, entry: &ZoneEntry, now: u64) {
        let Ok(mut keys) = self.keys.lock() else { return };
        if keys.zones.len() >= MAX_ZONES {
            keys.zones.retain(|_, e| e.until > now);
            if keys.zones.len() >= MAX_ZONES {
                keys.zones.clear();
            }
        }
        keys.zones.insert(zone.clone(), entry.clone());
    }

    fn forget(&self, zone: &Name) {
        if let Ok(mut keys) = self.keys.lock() {
            keys.zones.remove(zone);
        }
    }
}

/// Whether `sig` is a signature over `data` (the RRset `rtype` at `name`) that one of `keys`
/// made and verifies at `now32`: same owner and type, no wildcard expansion (that needs a denial
/// proof), signed by a zone containing the owner (RFC 4035 §5.3.1), within its validity period
/// (serial number arithmetic, RFC 4034 §3.1.5), by a key of its tag and algorithm.
fn verifies(
    keys: &[DNSKEY],
    name: &Name,
    rtype: RecordType,
    sig: &RRSIG,
    data: &[&Record],
    now32: u32,
) -> bool {
    plausible(sig, name, rtype, now32)
        && keys
            .iter()
            .filter(|k| signs(k, sig))
            .take(MAX_KEY_TAG_COLLISIONS)
            .any(|k| k.verify_rrsig(name, DNSClass::IN, sig, data.iter().copied()).is_ok())
}

/// The checks of [`verifies`] that need no key: covered type, labels (no wildcard expansion),
/// signer above the owner, validity period.
fn plausible(sig: &RRSIG, name: &Name, rtype: RecordType, now32: u32) -> bool {
    let input = sig.input();
    let t = SerialNumber::new(now32);
    input.type_covered == rtype
        && input.num_labels == name.num_labels()
        && input.signer_name.zone_of(name)
        && t <= input.sig_expiration
        && t >= input.sig_inception
}

/// Whether `key` may have made `sig`: a zone key, not revoked, of its algorithm and key tag.
fn signs(key: &DNSKEY, sig: &RRSIG) -> bool {
    let input = sig.input();
    key.zone_key()
        && !key.revoke()
        && key.algorithm() == input.algorithm
        && key.calculate_key_tag().is_ok_and(|tag| tag == input.key_tag)
}

/// The RRset `rtype` at `name` as hickory's validator returned it, when secure, and the RRSIG
/// that validated it.
async fn validated_rrset(
    validator: &Validator,
    name: &Name,
    rtype: RecordType,
) -> Option<(Vec<Record>, Option<RRSIG>)> {
    let mut options = DnsRequestOptions::default();
    options.edns_set_dnssec_ok = true;
    let response = validator.lookup(Query::query(name.clone(), rtype), options).first_answer().await.ok()?;
    let records: Vec<Record> =
        response.answers.iter().filter(|r| r.name == *name && r.record_type() == rtype).cloned().collect();
    if records.is_empty() || records.iter().any(|r| r.proof != Proof::Secure) {
        return None;
    }
    let used = response.answers.iter().find_map(|r| match &r.data {
        RData::DNSSEC(DNSSECRData::RRSIG(sig))
            if r.proof == Proof::Secure && r.name == *name && sig.input().type_covered == rtype =>
        {
            Some(sig.clone())
        }
        _ => None,
    });
    Some((records, used))
}
