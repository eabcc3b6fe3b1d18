//! DANE for one MX inside a check (RFC 7672; RFC 8461 §2: where DANE applies, it decides).
//!
//! The engine asks its [`TlsaResolver`] for the MX host's DANE state (the DNSSEC-validated TLSA
//! RRset at `_25._tcp.<host>`) and keeps the answer in memory for its TTL, so repeated checks of
//! a busy MX make no lookup. Then:
//!
//! | TLSA state | before connecting | no TLS | a chain |
//! |---|---|---|---|
//! | not applicable | MTA-STS decides | MTA-STS decides | MTA-STS decides |
//! | secure | DANE pending: TLS is mandatory | `dane-required` | [`crate::tlsa::verify`]: pass, or `tlsa-invalid` (or the DANE-TA certificate reason) |
//! | bogus, or the lookup failed | `dnssec-invalid` | `dnssec-invalid` | `dnssec-invalid` |
//!
//! Before any of this, the policy domain's MX RRset is looked up with DNSSEC too (and kept the
//! same way): when it is bogus or its lookup failed, every MX of the domain is `dnssec-invalid`
//! (RFC 7672 §2.2.1); secure or insecure, the MX host's TLSA state decides as above.
//!
//! A secure RRset without usable records makes TLS mandatory but not authenticated (RFC 7672
//! §2.2): any chain passes. Every DANE failure is `fail-enforce`, whatever the MTA-STS mode
//! ([`crate::verdict::decide`]).

use std::cell::RefCell;
use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasherDefault;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Engine, Tls};
use crate::cache::{StoreError, TlsaStore};
use crate::domain::Domain;
use crate::fxhash::FxHasher;
use crate::metrics::DnsKind;
use crate::ports::{MxLookup, TlsaLookup, TlsaRecord};
use crate::tlsa::{self, DaneMatch};
use crate::verdict::{Dane, Reason};

/// Answers (TLSA states and MX RRsets) remembered before the expired ones are dropped (and, if that is
/// not enough, all of them: the next checks look up again).
const MAX_ANSWERS: usize = 100_000;
/// Seconds a "DANE does not apply" answer is kept (the port gives no TTL for it).
const NOT_APPLICABLE_SECS: u64 = 300;
/// Seconds a bogus answer or a failed lookup is kept, so that a broken zone is not asked on every
/// delivery attempt, yet recovers quickly.
const FAILURE_SECS: u64 = 30;
/// The longest a secure answer is kept, whatever its TTL.
const MAX_SECS: u64 = 86_400;
/// The longest an MX RRset is kept, whatever its TTL (a denial's TTL is not known here).
const MX_MAX_SECS: u64 = 3_600;

/// The DNSSEC answers DANE uses, each with the time it expires: the TLSA states of MX hosts
/// and the MX RRsets of domains.
/// Shared by all threads; each thread also keeps copies of the answers it used, valid while the
/// cache's generation has not moved (every write moves it), so that checks of a busy MX from
/// several threads take no shared lock (as the policy cache does, `crate::cache::MemoryCache`).
#[derive(Debug)]
pub(super) struct TlsaCache {
    id: u64,
    generation: AtomicU64,
    map: parking_lot::RwLock<Answers<RandomState>>,
}

/// Answers by name, each with the time it expires.
type Timed<V, S> = HashMap<Domain, (V, u64), S>;

/// The two kinds of answers, by name. The shared maps use the standard keyed hasher (the names
/// come from DNS); a thread's copies, at most [`LOCAL_CAPACITY`], the faster FxHash.
#[derive(Debug, Default)]
struct Answers<S> {
    /// TLSA states by MX host.
    hosts: Timed<Arc<Known>, S>,
    /// MX RRsets by domain.
    domains: Timed<Arc<MxLookup>, S>,
}

impl<S> Answers<S> {
    fn len(&self) -> usize {
        self.hosts.len() + self.domains.len()
    }

    fn clear(&mut self) {
        self.hosts.clear();
        self.domains.clear();
    }
}

static NEXT_CACHE_ID: AtomicU64 = AtomicU64::new(1);

/// A thread's copies of answers of one cache at one generation.
#[derive(Default)]
struct Local {
    cache_id: u64,
    generation: u64,
    answers: Answers<BuildHasherDefault<FxHasher>>,
}

/// Answers a thread keeps copies of before it starts again.
const LOCAL_CAPACITY: usize = 256;

thread_local! {
    static LOCAL: RefCell<Local> = RefCell::new(Local::default());
}

impl Default for TlsaCache {
    fn default() -> Self {
        Self {
            id: NEXT_CACHE_ID.fetch_add(1, Ordering::Relaxed),
            generation: AtomicU64::new(0),
            map: parking_lot::RwLock::new(Answers::default()),
        }
    }
}

/// A TLSA answer with what every check under it needs, worked out once: the usable records,
/// and the outcome shown for a DANE pass (the common case on the hot path).
#[derive(Debug)]
struct Known {
    lookup: Arc<TlsaLookup>,
    usable: usize,
    passed: Arc<DaneInfo>,
}

impl Known {
    fn new(lookup: Arc<TlsaLookup>) -> Arc<Self> {
        let usable = match &*lookup {
            TlsaLookup::Secure { records, .. } => tlsa::usable(records).len(),
            _ => 0,
        };
        let passed = Arc::new(DaneInfo { lookup: Arc::clone(&lookup), usable, dane: Dane::Passed });
        Arc::new(Self { lookup, usable, passed })
    }
}

/// A kind of answer the cache keeps, and the map of [`Answers`] it lives in.
trait Slot: Clone {
    fn map<S>(answers: &Answers<S>) -> &Timed<Self, S>;
    fn map_mut<S>(answers: &mut Answers<S>) -> &mut Timed<Self, S>;
}

impl Slot for Arc<Known> {
    fn map<S>(answers: &Answers<S>) -> &Timed<Self, S> {
        &answers.hosts
    }
    fn map_mut<S>(answers: &mut Answers<S>) -> &mut Timed<Self, S> {
        &mut answers.hosts
    }
}

impl Slot for Arc<MxLookup> {
    fn map<S>(answers: &Answers<S>) -> &Timed<Self, S> {
        &answers.domains
    }
    fn map_mut<S>(answers: &mut Answers<S>) -> &mut Timed<Self, S> {
        &mut answers.domains
    }
}

/// A DNSSEC answer the engine keeps: how it is stored, for how long, and how it is held in
/// memory.
trait Answer: Sized {
    /// What the memory cache holds.
    type Kept: Slot;
    /// Its latency histogram.
    const KIND: DnsKind;
    fn load(store: &dyn TlsaStore, name: &Domain, now: u64) -> Result<Option<(Self, u64)>, StoreError>;
    fn save(&self, store: &dyn TlsaStore, name: &Domain, until: u64) -> Result<(), StoreError>;
    /// Seconds it may be used.
    fn lifetime(&self) -> u64;
    fn keep(self) -> Self::Kept;
}

impl Answer for TlsaLookup {
    type Kept = Arc<Known>;
    const KIND: DnsKind = DnsKind::Tlsa;
    fn load(store: &dyn TlsaStore, host: &Domain, now: u64) -> Result<Option<(Self, u64)>, StoreError> {
        store.tlsa_load(host, now)
    }
    fn save(&self, store: &dyn TlsaStore, host: &Domain, until: u64) -> Result<(), StoreError> {
        store.tlsa_save(host, self, until)
    }
    fn lifetime(&self) -> u64 {
        match self {
            Self::Secure { ttl, .. } => u64::from(*ttl).min(MAX_SECS),
            Self::NotApplicable => NOT_APPLICABLE_SECS,
            Self::Bogus(_) | Self::Failed(_) => FAILURE_SECS,
        }
    }
    fn keep(self) -> Arc<Known> {
        Known::new(Arc::new(self))
    }
}

impl Answer for MxLookup {
    type Kept = Arc<MxLookup>;
    const KIND: DnsKind = DnsKind::Mx;
    fn load(store: &dyn TlsaStore, domain: &Domain, now: u64) -> Result<Option<(Self, u64)>, StoreError> {
        store.mx_load(domain, now)
    }
    fn save(&self, store: &dyn TlsaStore, domain: &Domain, until: u64) -> Result<(), StoreError> {
        store.mx_save(domain, self, until)
    }
    fn lifetime(&self) -> u64 {
        match self {
            Self::Records { ttl, .. } => u64::from(*ttl).min(MX_MAX_SECS),
            Self::Bogus(_) | Self::Failed(_) => FAILURE_SECS,
        }
    }
    fn keep(self) -> Arc<MxLookup> {
        Arc::new(self)
    }
}

impl TlsaCache {
    /// The unexpired answer of kind `V` for `name`: from this thread's copies, or from the shared
    /// map (then copied).
    fn get<V: Slot>(&self, name: &Domain, now: u64) -> Option<V> {
        let generation = self.generation.load(Ordering::Acquire);
        let fresh = |(v, until): &(V, u64)| (now < *until).then(|| v.clone());
        let shared = || V::map(&self.map.read()).get(name).cloned();
        LOCAL
            .try_with(|cell| {
                let Ok(mut local) = cell.try_borrow_mut() else { return shared().and_then(|e| fresh(&e)) };
                if local.cache_id != self.id || local.generation != generation {
                    local.cache_id = self.id;
                    local.generation = generation;
                    local.answers.clear();
                }
                if let Some(entry) = V::map(&local.answers).get(name) {
                    return fresh(entry);
                }
                let entry = shared()?;
                if local.answers.len() >= LOCAL_CAPACITY {
                    local.answers.clear();
                }
                let answer = fresh(&entry);
                V::map_mut(&mut local.answers).insert(name.clone(), entry);
                answer
            })
            .unwrap_or_else(|_| shared().and_then(|e| fresh(&e)))
    }

    fn put<V: Slot>(&self, name: &Domain, value: V, until: u64, now: u64) {
        let mut answers = self.map.write();
        if answers.len() >= MAX_ANSWERS && !V::map(&answers).contains_key(name) {
            answers.hosts.retain(|_, (_, until)| now < *until);
            answers.domains.retain(|_, (_, until)| now < *until);
            if answers.len() >= MAX_ANSWERS {
                answers.clear();
            }
        }
        V::map_mut(&mut answers).insert(name.clone(), (value, until));
        self.generation.fetch_add(1, Ordering::Release);
    }
}

/// Chains that a DANE-EE record authenticated, per MX host and TLSA answer: a DANE-EE match
/// depends on neither names nor time (RFC 7672 §3.1.1), so the same chain under the same answer
/// passes again without hashing the key or walking the DER. DANE-TA results (time-dependent) are
/// not kept.
#[derive(Debug, Default)]
pub(super) struct DaneMemo {
    /// By `crate::cert::memo_key` (already a hash: FxHash only mixes it into the table).
    map: parking_lot::RwLock<crate::fxhash::FxMap<u64, Vec<MemoEntry>>>,
}

/// A chain, the MX host it was presented by, and the TLSA answer that authenticated it.
type MemoEntry = (Box<[u8]>, Domain, Arc<TlsaLookup>);

/// Memo entries kept before the memo starts again.
const MEMO_CAPACITY: usize = 4096;

impl DaneMemo {
    fn passed(&self, key: u64, chain: &[u8], host: &Domain, lookup: &Arc<TlsaLookup>) -> bool {
        self.map.read().get(&key).is_some_and(|bucket| {
            bucket.iter().any(|(c, h, l)| Arc::ptr_eq(l, lookup) && h == host && **c == *chain)
        })
    }

    fn remember(&self, key: u64, chain: &[u8], host: &Domain, lookup: &Arc<TlsaLookup>) {
        let mut map = self.map.write();
        if map.values().map(Vec::len).sum::<usize>() >= MEMO_CAPACITY {
            map.clear();
        }
        let bucket = map.entry(key).or_default();
        bucket.retain(|(c, h, _)| !(h == host && **c == *chain));
        bucket.push((chain.into(), host.clone(), Arc::clone(lookup)));
    }
}

/// What DANE found for the MX of a check, when DANE applies or its lookup failed (carried in
/// [`super::Outcome::dane`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaneInfo {
    /// The MX host's TLSA state: secure (with its records), bogus, or a failed lookup.
    pub lookup: Arc<TlsaLookup>,
    /// How many of the records are usable for SMTP (DANE-TA or DANE-EE with known parameters).
    pub usable: usize,
    /// What DANE concluded for this check.
    pub dane: Dane,
}

impl DaneInfo {
    /// The TLSA records of a secure RRset (empty otherwise).
    pub fn records(&self) -> &[TlsaRecord] {
        match &*self.lookup {
            TlsaLookup::Secure { records, .. } => records,
            _ => &[],
        }
    }

    /// The TLSA base domain when it is not the MX host (the records were found at the host's
    /// CNAME-expanded name).
    pub fn base(&self) -> Option<&Domain> {
        match &*self.lookup {
            TlsaLookup::Secure { base, .. } => base.as_ref(),
            _ => None,
        }
    }

    /// True when the TLSA RRset was DNSSEC-secure.
    pub fn secure(&self) -> bool {
        matches!(&*self.lookup, TlsaLookup::Secure { .. })
    }
}

/// DANE's judgement of one MX: the [`Dane`] input of the verdict, what to show, and the reason
/// and detail of a failure.
pub(super) struct DaneJudgement {
    pub dane: Dane,
    pub info: Option<Arc<DaneInfo>>,
    pub failure: Option<(Reason, String)>,
}

impl Engine {
    /// The DANE state of `mx` (from the cache, or looked up), or `None` when the engine does no
    /// DANE (no [`TlsaResolver`](crate::ports::TlsaResolver), `[dns] dnssec = "off"`).
    pub fn tlsa_state(&self, mx: &Domain) -> Option<Arc<TlsaLookup>> {
        self.known_tlsa(mx, self.clock.now()).map(|k| Arc::clone(&k.lookup))
    }

    fn known_tlsa(&self, mx: &Domain, now: u64) -> Option<Arc<Known>> {
        let resolver = self.tlsa.as_ref()?;
        Some(self.remembered(mx, now, || resolver.tlsa(mx)))
    }

    /// The MX RRset of `domain` with its security (from the cache, or looked up), or `None` when
    /// the engine does no DANE. Kept for its TTL (at most an hour; 30 s for failures), in memory
    /// and in the store, as TLSA answers are.
    pub fn mx_state(&self, domain: &Domain) -> Option<Arc<MxLookup>> {
        self.known_mx(domain, self.clock.now())
    }

    fn known_mx(&self, domain: &Domain, now: u64) -> Option<Arc<MxLookup>> {
        let resolver = self.tlsa.as_ref()?;
        Some(self.remembered(domain, now, || resolver.mx(domain)))
    }

    /// The answer for `name`: from memory, else from the store (another process, or an earlier
    /// run, may have looked it up: a fresh Exim process then does not walk the DNSSEC chain
    /// again), else from `look_up`, which is then kept in both until it expires. The store is a
    /// cache: its errors only cost a lookup.
    fn remembered<A: Answer>(&self, name: &Domain, now: u64, look_up: impl FnOnce() -> A) -> A::Kept {
        if let Some(hit) = self.tlsa_cache.get::<A::Kept>(name, now) {
            return hit;
        }
        if let Some(store) = &self.tlsa_store {
            if let Ok(Some((stored, until))) = A::load(store.as_ref(), name, now) {
                let kept = stored.keep();
                self.tlsa_cache.put(name, kept.clone(), until, now);
                return kept;
            }
        }
        let began = std::time::Instant::now();
        let answer = look_up();
        self.metrics.dns_latency(A::KIND, began.elapsed());
        let until = now.saturating_add(answer.lifetime());
        if let Some(store) = self.tlsa_store.as_ref().filter(|_| self.store_writable) {
            let _ = answer.save(store.as_ref(), name, until);
        }
        let kept = answer.keep();
        self.tlsa_cache.put(name, kept.clone(), until, now);
        kept
    }

    /// DANE's judgement of a delivery to `mx`, an MX host of `domain`, with what is known of TLS.
    /// `key`: the chain's `crate::cert::memo_key` for `mx`, worked out here if needed and kept
    /// for the certificate memo.
    pub(super) fn judge_dane(
        &self,
        domain: &Domain,
        mx: &Domain,
        tls: Tls<'_>,
        key: &std::cell::OnceCell<u64>,
        now: u64,
    ) -> DaneJudgement {
        let none = DaneJudgement { dane: Dane::NotApplicable, info: None, failure: None };
        // DANE-V-13: an MX RRset that does not validate, or cannot be looked up, leaves the MX
        // hosts of the domain in doubt (RFC 7672 §2.2.1): a temporary failure, never "no DANE".
        // An insecure MX RRset still lets DANE protect the hosts that have secure TLSA records
        // (§2.2.1 allows it; decision V4 in docs/dane.md).
        let doubt = match self.known_mx(domain, now).as_deref() {
            None => return none,
            Some(MxLookup::Records { .. }) => None,
            Some(MxLookup::Bogus(why)) => Some((
                format!("the MX RRset of {domain} did not validate (bogus): {why}"),
                TlsaLookup::Bogus as fn(String) -> TlsaLookup,
            )),
            Some(MxLookup::Failed(why)) => Some((
                format!("the MX RRset of {domain} could not be looked up: {why}"),
                TlsaLookup::Failed as fn(String) -> TlsaLookup,
            )),
        };
        if let Some((detail, state)) = doubt {
            let lookup = Arc::new(state(detail.clone()));
            let info = Arc::new(DaneInfo { lookup, usable: 0, dane: Dane::DnssecInvalid });
            return DaneJudgement {
                dane: Dane::DnssecInvalid,
                info: Some(info),
                failure: Some((Reason::DnssecInvalid, detail)),
            };
        }
        let Some(known) = self.known_tlsa(mx, now) else { return none };
        let lookup = &known.lookup;
        let (dane, failure) = match (&**lookup, tls) {
            (TlsaLookup::NotApplicable, _) => return none,
            (TlsaLookup::Bogus(why), _) => (
                Dane::DnssecInvalid,
                Some((
                    Reason::DnssecInvalid,
                    format!("TLSA lookup for {mx} did not validate (bogus): {why}"),
                )),
            ),
            (TlsaLookup::Failed(why), _) => (
                Dane::DnssecInvalid,
                Some((Reason::DnssecInvalid, format!("TLSA lookup for {mx} failed: {why}"))),
            ),
            (TlsaLookup::Secure { .. }, Tls::NotChecked) => (Dane::Pending, None),
            (TlsaLookup::Secure { .. }, Tls::NotNegotiated) => (
                Dane::Required,
                Some((
                    Reason::DaneRequired,
                    format!("{mx} has DNSSEC-secure TLSA records: TLS is mandatory, and none was negotiated"),
                )),
            ),
            (TlsaLookup::Secure { records, base, .. }, Tls::Chain(chain)) => {
                let key = *key.get_or_init(|| crate::cert::memo_key(chain, mx));
                if self.dane_memo.passed(key, chain, mx, lookup) {
                    (Dane::Passed, None)
                } else {
                    // DANE-TLSA-10: a DANE-TA leaf may name the TLSA base domain (the
                    // CNAME-expanded host where the records were found) or the MX host.
                    let both;
                    let names: &[Domain] = match base {
                        Some(base) => {
                            both = [base.clone(), mx.clone()];
                            &both
                        }
                        None => std::slice::from_ref(mx),
                    };
                    match tlsa::verify(records, chain, names, now) {
                        DaneMatch::Passed { by } => {
                            if by == tlsa::Usage::DaneEe {
                                self.dane_memo.remember(key, chain, mx, lookup);
                            }
                            (Dane::Passed, None)
                        }
                        DaneMatch::NoUsableRecords => (Dane::Passed, None),
                        DaneMatch::Failed { reason, detail } => (Dane::Failed, Some((reason, detail))),
                    }
                }
            }
        };
        let info = if dane == Dane::Passed {
            Arc::clone(&known.passed)
        } else {
            Arc::new(DaneInfo { lookup: Arc::clone(lookup), usable: known.usable, dane })
        };
        DaneJudgement { dane, info: Some(info), failure }
    }
}
