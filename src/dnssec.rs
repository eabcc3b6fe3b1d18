//! DNSSEC-validated lookups for DANE (RFC 7672 §2.1–2.2): the MX RRset, the MX hosts' address
//! records and their `_25._tcp` TLSA RRsets, each judged `secure`, `insecure` or `bogus` as RFC
//! 4035 §4.3 defines them.
//!
//! [`DnsResolver`] implements the [`TlsaResolver`] port here, and [`DnsResolver::mx_dnssec`]
//! gives the MX RRset with its security. How answers are judged is `[dns] dnssec`
//! ([`DnssecMode`]):
//!
//! * `validate` (default): in process, with hickory's DNSSEC validator (`DnssecDnsHandle`, ring
//!   as the only crypto provider), from the IANA root anchors compiled into hickory or from the
//!   DS or DNSKEY records of `[dns] trust_anchor`. Every record acted on carries its proof;
//!   a denial (NXDOMAIN, NODATA) is secure only with a validated NSEC or NSEC3 proof.
//! * `trust-ad`: the configured resolvers validate; an answer is secure when it has the AD bit
//!   (queries are sent with AD=1, RFC 6840 §5.7). Only resolvers on loopback are trusted so
//!   (checked by the configuration and again on each call); a bogus answer then comes back from
//!   the resolver as SERVFAIL, a failure.
//! * `off`: no DANE: [`TlsaResolver::tlsa`] says `NotApplicable` without asking anything.
//!
//! The rules, with the sections of RFC 7672 they follow (requirement ids in docs/dane.md):
//!
//! * the MX RRset is returned with its security; CNAMEs on the way count (§2.2.1; DANE-DNS-1);
//! * the MX host's A and AAAA records are looked up first, CNAMEs followed; when any RRset on the
//!   way (CNAMEs, addresses, or the proof that there are none) is insecure, DANE does not apply
//!   and no TLSA lookup is made (§2.2, §2.2.2; DANE-DNS-2);
//! * with secure address records, TLSA records are looked up at `_25._tcp.<host>` (§2.2,
//!   §3; DANE-DNS-3). When the host is an alias, the TLSA base domain is first the fully
//!   CNAME-expanded name and, failing a secure TLSA RRset there, the original name (§2.2.2;
//!   DANE-DNS-4). CNAMEs at the TLSA name itself are followed, and must be secure too
//!   (DANE-DNS-5);
//! * an insecure TLSA answer, or none, means DANE does not apply to the host (§2.2;
//!   DANE-DNS-6): `NotApplicable`;
//! * a bogus answer anywhere is `Bogus` (reason `dnssec-invalid`), and a lookup that fails
//!   (timeout, SERVFAIL, REFUSED, an indeterminate proof) is `Failed`: both are temporary
//!   failures of that MX, never "no DANE" (§2.2; DANE-DNS-7, DANE-DNS-8).
//!
//! Known limit: a recursive resolver that answers a question at an alias with the CNAME and the
//! target's NSEC denial in one message is judged bogus by hickory (the denial is checked against
//! the alias); that gives a temporary failure, never a wrong "no DANE".
//!
//! # Process model
//!
//! As in [`crate::dns`]: each call reseeds the DNS id generator after a fork, builds a
//! current-thread runtime and, on it, the validator (with an empty validation cache) and the
//! nameserver pool; runs the whole call (address, TLSA and fallback lookups, and the DNSKEY of a
//! DS trust anchor) under one hard deadline, `[dns] timeout_ms`; and drops everything before
//! returning. The trust anchor file is read on each call.
//!
//! ## Kept per thread, for a long-running server
//!
//! With [`Lifetime::PerThread`] (`mtasts serve`, which does not fork), each thread keeps its
//! runtime, its nameserver pool, the trust anchors and the DNSKEY sets it has validated, by
//! zone (`src/dnssec/kept.rs`). What stays the same per call:
//!
//! * the deadline, the nameservers and the mode are read on each call, and a kept client made
//!   for other ones is replaced;
//! * the trust anchor file is looked at on each call (device, inode, size, modification and
//!   change times; by its contents while its last change is under two seconds older than the
//!   read, too recent for the timestamps to tell): when it changed, everything kept goes,
//!   validated keys included, and it is read again;
//! * every call gets a new hickory validator, whose validation cache (keyed by a 64-bit hash of
//!   the RRset, not to be trusted across calls) lives for that call only;
//! * every question is asked: nothing answers from a cache. A signed positive answer (the RRset
//!   asked for at the name asked, nothing in the authority section, no wildcard) whose signer's
//!   DNSKEY set is kept is checked here, with hickory's checks (RFC 4035 §5.3): RRSIG owner,
//!   type, labels, signer, validity period, key tag, algorithm, a zone key not revoked, and the
//!   signature itself. Anything else, and any such answer that does not check out, goes to
//!   hickory's validator, which asks again and judges (this path never says bogus or insecure);
//! * a zone's DNSKEY set is kept once hickory has validated it, and until the earliest of its
//!   authenticated TTL (TTL, original TTL, signature expiration; RFC 4035 §5.3.3) and, when a
//!   trust anchor did not sign it, its DS RRset's and its parent zone's kept set's: never past a
//!   TTL or a signature's validity anywhere on its chain of trust. An answer signed by a key the
//!   kept set lacks (a rollover) drops the set, fetched again at the next call.
//!
//! A slot made before a `fork()` is never used nor dropped in the child, as in [`crate::dns`].

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{ResolverConfig, ResolverOpts, ServerOrderingStrategy};
use hickory_resolver::net::dnssec::DnssecDnsHandle;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::xfer::{DnsHandle, FirstAnswer, RetryDnsHandle};
use hickory_resolver::net::{DnsError as HickoryDnsError, NetError};
use hickory_resolver::proto::dnssec::rdata::{DNSKEY, DNSSECRData, DS};
use hickory_resolver::proto::dnssec::{Algorithm, Proof, PublicKeyBuf, TrustAnchors};
use hickory_resolver::proto::op::{
    DnsRequestOptions, Edns, Message, MessageType, OpCode, Query, ResponseCode,
};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use hickory_resolver::{NameServerPool, PoolContext, TlsConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::dns::{
    DnsResolver, DnssecMode, Lifetime, MxRecord, Servers, absolute_name, classify, host_name, rcode_name,
    reseed_after_fork, sort_mx, timed_out,
};
use crate::domain::Domain;
use crate::ports::{DnsError, Security, TlsaLookup, TlsaRecord, TlsaResolver};

/// Longest CNAME chain followed.
const MAX_CNAME_HOPS: usize = 8;
/// Seconds a plain MX answer (`dnssec = "off"`, whose lookup gives no TTL) may be kept.
const OFF_TTL: u32 = 300;

pub use crate::ports::MxLookup;

mod kept;
use kept::{FastPath, KEPT, KeptKey};

/// The plain (not validating) queries under the validator.
type Plain = RetryDnsHandle<NameServerPool<TokioRuntimeProvider>>;
/// hickory's validator.
type Validator = DnssecDnsHandle<Plain>;

impl DnsResolver {
    /// The MX RRset of `domain` and its security (RFC 7672 §2.2.1). With `[dns] dnssec = "off"`
    /// it is the plain MX lookup, every answer insecure.
    pub fn mx_dnssec(&self, domain: &Domain) -> MxLookup {
        if self.settings().dnssec == DnssecMode::Off {
            return match self.mx(domain) {
                Ok(records) => MxLookup::Records { records, security: Security::Insecure, ttl: OFF_TTL },
                Err(DnsError::NotFound) => {
                    MxLookup::Records { records: Vec::new(), security: Security::Insecure, ttl: OFF_TTL }
                }
                Err(DnsError::Temporary(e)) => MxLookup::Failed(e),
            };
        }
        let name = match absolute_name(domain.as_str()) {
            Ok(n) => n,
            Err(_) => return MxLookup::Records { records: Vec::new(), security: Security::Insecure, ttl: 0 },
        };
        let result = self.run_dnssec(|client| async move { client.resolve(&name, RecordType::MX).await });
        match result {
            Ok(answer) => {
                let mut records: Vec<MxRecord> = answer
                    .data
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::MX(mx) => {
                            Some(MxRecord { preference: mx.preference, exchange: host_name(&mx.exchange) })
                        }
                        _ => None,
                    })
                    .collect();
                sort_mx(&mut records);
                MxLookup::Records { records, security: answer.security, ttl: answer.ttl }
            }
            Err(Trouble::Bogus(e)) => MxLookup::Bogus(e),
            Err(Trouble::Failed(e)) => MxLookup::Failed(e),
        }
    }

    /// Runs `f` with a DNSSEC client, under the call's deadline: built for this call and torn
    /// down with its runtime before returning, or, with [`Lifetime::PerThread`], this thread's
    /// kept one (see the [module docs](self)).
    fn run_dnssec<T, F, Fut>(&self, f: F) -> Result<T, Trouble>
    where
        F: FnOnce(Arc<Client>) -> Fut,
        Fut: Future<Output = Result<T, Trouble>>,
    {
        reseed_after_fork().map_err(temporary)?;
        let settings = self.settings();
        let (config, servers) = self.config().map_err(temporary)?;
        let timeout = settings.timeout;
        let mut f = Some(f);
        if self.lifetime() == Lifetime::PerThread {
            let key = KeptKey {
                servers: servers.0.clone(),
                timeout,
                mode: settings.dnssec,
                trust_anchor: settings.trust_anchor.clone(),
            };
            // `try_with` and `try_borrow_mut`: a lookup made while this thread's locals are being
            // destroyed, or from inside a lookup, gets a client of its own as in the per-call mode.
            let kept = KEPT.try_with(|kept| {
                let mut kept = kept.try_borrow_mut().ok()?;
                let slot = match kept.slot(&key) {
                    Ok(slot) => slot,
                    Err(e) => return Some(Err(e)),
                };
                let f = f.take()?;
                Some(slot.run(config.clone(), &servers, f))
            });
            if let Ok(Some(result)) = kept {
                return result;
            }
        }
        let Some(f) = f else { return Err(Trouble::Failed("the DNS lookup was not run".into())) };
        let runtime = runtime()?;
        let result = runtime.block_on(async {
            let work = async {
                let client = match settings.dnssec {
                    DnssecMode::TrustAd => Client::trust_ad(servers.clone(), timeout)?,
                    _ => {
                        let plain = plain_handle(config, timeout)?;
                        let anchors = match settings.trust_anchor.as_deref() {
                            None => TrustAnchors::default(),
                            Some(path) => {
                                let text = read_anchor_file(path)?;
                                trust_anchors(path, &text, &plain, &servers, timeout).await?
                            }
                        };
                        Client::Validating {
                            handle: Box::new(DnssecDnsHandle::with_trust_anchor(plain, Arc::new(anchors))),
                            kept: None,
                            servers: servers.clone(),
                            timeout,
                        }
                    }
                };
                f(Arc::new(client)).await
            };
            match tokio::time::timeout(timeout, work).await {
                Ok(r) => r,
                Err(_elapsed) => Err(Trouble::Failed(message(timed_out(&servers, timeout)))),
            }
        });
        drop(runtime);
        result
    }
}

/// A current-thread runtime: no OS thread, driven only inside a call.
fn runtime() -> Result<tokio::runtime::Runtime, Trouble> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| Trouble::Failed(format!("cannot start the DNS runtime: {e}")))
}

/// The nameserver pool under the validator: plain queries, no cache, one retry. Built inside the
/// runtime that will drive it.
fn plain_handle(config: ResolverConfig, timeout: Duration) -> Result<Plain, Trouble> {
    let (_domain, _search, name_servers) = config.into_parts();
    let mut opts = ResolverOpts::default();
    opts.timeout = timeout;
    opts.attempts = 1;
    opts.cache_size = 0;
    opts.server_ordering_strategy = ServerOrderingStrategy::UserProvidedOrder;
    let tls = TlsConfig::new().map_err(|e| Trouble::Failed(e.to_string()))?;
    let pool = NameServerPool::from_config(
        name_servers,
        Arc::new(PoolContext::new(opts, tls)),
        TokioRuntimeProvider::default(),
    );
    Ok(RetryDnsHandle::new(pool, 1))
}

impl TlsaResolver for DnsResolver {
    /// The DANE state of `mx_host`, per RFC 7672 §2.2 (see the [module docs](self)).
    fn tlsa(&self, mx_host: &Domain) -> TlsaLookup {
        if self.settings().dnssec == DnssecMode::Off {
            return TlsaLookup::NotApplicable;
        }
        let Ok(host) = absolute_name(mx_host.as_str()) else { return TlsaLookup::NotApplicable };
        match self.run_dnssec(|client| async move { dane_state(&client, &host).await }) {
            Ok(state) => state,
            Err(Trouble::Bogus(e)) => TlsaLookup::Bogus(e),
            Err(Trouble::Failed(e)) => TlsaLookup::Failed(e),
        }
    }

    fn mx(&self, domain: &Domain) -> MxLookup {
        self.mx_dnssec(domain)
    }
}

/// RFC 7672 §2.2: address records first, then TLSA at the expanded and the original name.
async fn dane_state(client: &Client, host: &Name) -> Result<TlsaLookup, Trouble> {
    // DANE-DNS-2: the address records (A and AAAA, CNAMEs followed) must be secure.
    let a = client.resolve(host, RecordType::A).await?;
    let aaaa = client.resolve(host, RecordType::AAAA).await?;
    if a.security != Security::Secure || aaaa.security != Security::Secure {
        return Ok(TlsaLookup::NotApplicable);
    }
    if a.data.is_empty() && aaaa.data.is_empty() {
        // A host without addresses cannot be connected to: nothing for DANE to protect.
        return Ok(TlsaLookup::NotApplicable);
    }
    let address_ttl = a.ttl.min(aaaa.ttl);
    // DANE-DNS-4: the expanded name first, then the original one.
    let expanded = if a.data.is_empty() { aaaa.owner.clone() } else { a.owner.clone() };
    let mut bases = vec![expanded];
    if bases[0] != *host {
        bases.push(host.clone());
    }
    for base in bases {
        let name = base
            .prepend_label("_tcp")
            .and_then(|n| n.prepend_label("_25"))
            .map_err(|e| Trouble::Failed(format!("no TLSA name for {base}: {e}")))?;
        // DANE-DNS-3, DANE-DNS-5: CNAMEs at the TLSA name are followed and judged too.
        let tlsa = client.resolve(&name, RecordType::TLSA).await?;
        if tlsa.security == Security::Secure && !tlsa.data.is_empty() {
            let records = tlsa
                .data
                .iter()
                .filter_map(|r| match &r.data {
                    RData::TLSA(t) => Some(TlsaRecord {
                        usage: t.cert_usage.into(),
                        selector: t.selector.into(),
                        matching_type: t.matching.into(),
                        data: t.cert_data.clone(),
                    }),
                    _ => None,
                })
                .collect();
            // DANE-TLSA-10: a DANE-TA leaf may name the base domain as well as the MX host.
            let base = (base != *host).then(|| Domain::parse_ascii(&host_name(&base)).ok()).flatten();
            return Ok(TlsaLookup::Secure { records, ttl: tlsa.ttl.min(address_ttl), base });
        }
        // DANE-DNS-6: insecure, or no TLSA records: try the next base, else no DANE.
    }
    Ok(TlsaLookup::NotApplicable)
}

/// Why a lookup gave no usable answer.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Trouble {
    /// The answer is bogus.
    Bogus(String),
    /// The lookup failed.
    Failed(String),
}

fn message(e: DnsError) -> String {
    match e {
        DnsError::NotFound => "not found".into(),
        DnsError::Temporary(m) => m,
    }
}

fn temporary(e: DnsError) -> Trouble {
    Trouble::Failed(message(e))
}

/// An RRset of the answer, CNAMEs followed, and the security of everything on the way.
#[derive(Clone, Debug)]
struct Answer {
    /// The records of the type asked at `owner` (empty: NXDOMAIN or NODATA).
    data: Vec<Record>,
    /// The fully CNAME-expanded name.
    owner: Name,
    /// `Secure` when every RRset and proof on the way validated, else `Insecure`.
    security: Security,
    /// The least TTL of the records on the way (`u32::MAX` for a denial).
    ttl: u32,
}

/// One response: its records (RRSIGs left out) each with its security, and for a denial the
/// security of the proof.
struct Response {
    records: Vec<(Record, Security)>,
    denial: Security,
}

/// Asks the questions of one call.
enum Client {
    /// Validates in process.
    Validating {
        handle: Box<Validator>,
        /// A kept client's fast path (validated DNSKEY sets kept between calls).
        kept: Option<FastPath>,
        servers: Servers,
        timeout: Duration,
    },
    /// Trusts the AD bit of loopback resolvers.
    TrustAd { servers: Vec<SocketAddr>, timeout: Duration },
}

impl Client {
    fn trust_ad(servers: Servers, timeout: Duration) -> Result<Self, Trouble> {
        if servers.0.is_empty() {
            return Err(Trouble::Failed("dnssec = \"trust-ad\": no nameserver configured".into()));
        }
        if let Some(s) = servers.0.iter().find(|s| !s.ip().is_loopback()) {
            return Err(Trouble::Failed(format!(
                "dnssec = \"trust-ad\" trusts only resolvers on loopback, and {s} is not"
            )));
        }
        Ok(Client::TrustAd { servers: servers.0, timeout })
    }

    /// The RRset `rtype` at `name`, CNAMEs followed (RFC 7672 §2.2.2), with its security.
    async fn resolve(&self, name: &Name, rtype: RecordType) -> Result<Answer, Trouble> {
        let mut owner = name.clone();
        let mut security = Security::Secure;
        let mut ttl = u32::MAX;
        let mut hops = 0;
        loop {
            let response = self.ask(&owner, rtype).await?;
            let mut followed = false;
            loop {
                let data: Vec<&(Record, Security)> = response
                    .records
                    .iter()
                    .filter(|(r, _)| r.name == owner && r.record_type() == rtype)
                    .collect();
                if !data.is_empty() {
                    for (r, s) in &data {
                        security = worst(security, *s);
                        ttl = ttl.min(r.ttl);
                    }
                    return Ok(Answer {
                        data: data.into_iter().map(|(r, _)| r.clone()).collect(),
                        owner,
                        security,
                        ttl,
                    });
                }
                let cname = response.records.iter().find_map(|(r, s)| match &r.data {
                    RData::CNAME(c) if r.name == owner && rtype != RecordType::CNAME => {
                        Some((c.0.clone(), *s, r.ttl))
                    }
                    _ => None,
                });
                let Some((target, s, t)) = cname else { break };
                hops += 1;
                if hops > MAX_CNAME_HOPS {
                    return Err(Trouble::Failed(format!("more than {MAX_CNAME_HOPS} CNAMEs from {name}")));
                }
                security = worst(security, s);
                ttl = ttl.min(t);
                owner = target;
                followed = true;
            }
            if !followed {
                // NXDOMAIN or NODATA at `owner`.
                return Ok(Answer {
                    data: Vec::new(),
                    owner,
                    security: worst(security, response.denial),
                    ttl,
                });
            }
            // The answer stopped at an alias whose target it does not hold: ask for the target.
        }
    }

    /// One question.
    async fn ask(&self, name: &Name, rtype: RecordType) -> Result<Response, Trouble> {
        match self {
            Client::Validating { handle, kept, servers, timeout } => {
                if let Some(fast) = kept
                    && let Some(answer) = fast.ask(handle, name, rtype, servers, *timeout).await
                {
                    return answer;
                }
                let mut options = DnsRequestOptions::default();
                options.edns_set_dnssec_ok = true;
                let result = handle.lookup(Query::query(name.clone(), rtype), options).first_answer().await;
                validated(result, name, rtype, servers, *timeout)
            }
            Client::TrustAd { servers, timeout } => stub_query(servers, *timeout, name, rtype).await,
        }
    }
}

/// The less secure of two.
fn worst(a: Security, b: Security) -> Security {
    match (a, b) {
        (Security::Bogus, _) | (_, Security::Bogus) => Security::Bogus,
        (Security::Insecure, _) | (_, Security::Insecure) => Security::Insecure,
        _ => Security::Secure,
    }
}

/// The security of a hickory proof; bogus and indeterminate are trouble.
fn proven(proof: Proof, what: impl FnOnce() -> String) -> Result<Security, Trouble> {
    match proof {
        Proof::Secure => Ok(Security::Secure),
        Proof::Insecure => Ok(Security::Insecure),
        Proof::Bogus => Err(Trouble::Bogus(format!("DNSSEC validation failed (bogus) for {}", what()))),
        Proof::Indeterminate => {
            Err(Trouble::Failed(format!("DNSSEC validation was indeterminate for {}", what())))
        }
    }
}

/// Judges what the validator returned.
fn validated(
    result: Result<hickory_resolver::proto::op::DnsResponse, NetError>,
    name: &Name,
    rtype: RecordType,
    servers: &Servers,
    timeout: Duration,
) -> Result<Response, Trouble> {
    let what = || format!("{name} {rtype}");
    match result {
        Ok(response) => {
            let mut records = Vec::new();
            for r in response.answers.iter().filter(|r| r.record_type() != RecordType::RRSIG) {
                let s = proven(r.proof, || format!("{} {}", r.name, r.record_type()))?;
                records.push((r.clone(), s));
            }
            let mut denial = Security::Insecure;
            for r in response.authorities.iter().filter(|r| r.record_type() != RecordType::RRSIG) {
                if r.proof == Proof::Bogus {
                    return Err(Trouble::Bogus(format!(
                        "DNSSEC validation failed (bogus) for the denial of {}",
                        what()
                    )));
                }
                if matches!(r.record_type(), RecordType::NSEC | RecordType::NSEC3) && r.proof == Proof::Secure
                {
                    denial = Security::Secure;
                }
            }
            if records.is_empty() {
                match response.response_code {
                    ResponseCode::NoError | ResponseCode::NXDomain => {}
                    code => return Err(Trouble::Failed(format!("{} for {}", rcode_name(code), what()))),
                }
            }
            Ok(Response { records, denial })
        }
        Err(NetError::Dns(HickoryDnsError::Nsec { proof, response, .. })) => match proof {
            Proof::Secure | Proof::Insecure => {
                let denial = proven(proof, what)?;
                match response.response_code {
                    ResponseCode::NoError | ResponseCode::NXDomain => {
                        Ok(Response { records: Vec::new(), denial })
                    }
                    code => Err(Trouble::Failed(format!("{} for {}", rcode_name(code), what()))),
                }
            }
            other => Err(proven(other, what).err().unwrap_or_else(|| Trouble::Bogus(what()))),
        },
        Err(NetError::Dns(HickoryDnsError::DnssecBogus)) => {
            Err(Trouble::Bogus(format!("DNSSEC validation failed (bogus) for {}", what())))
        }
        Err(NetError::Dns(HickoryDnsError::NoRecordsFound(_))) => {
            // The validator turns denials into responses; one that escapes it is unproven.
            Err(Trouble::Failed(format!("unvalidated denial for {}", what())))
        }
        Err(e) => Err(Trouble::Failed(format!("{} ({})", message(classify(&e, servers, timeout)), what()))),
    }
}

/// The text of the trust anchor file.
fn read_anchor_file(path: &Path) -> Result<String, Trouble> {
    std::fs::read_to_string(path)
        .map_err(|e| Trouble::Failed(format!("cannot read the trust anchor {}: {e}", path.display())))
}

/// The trust anchors of the file `path`, whose text is `text` (without a file, hickory's
/// compiled-in IANA root anchors are used). A DS anchor is turned into the DNSKEYs it matches,
/// fetched from the nameservers (their signatures are then checked by the validator as usual).
async fn trust_anchors(
    path: &Path,
    text: &str,
    plain: &Plain,
    servers: &Servers,
    timeout: Duration,
) -> Result<TrustAnchors, Trouble> {
    let parsed =
        parse_trust_anchors(text).map_err(|e| Trouble::Failed(format!("{}: {e}", path.display())))?;
    let mut anchors = TrustAnchors::empty();
    for (owner, key) in &parsed.keys {
        anchors.insert_with_name(key.public_key(), owner.into());
    }
    let mut ds_owners: Vec<&Name> = parsed.ds.iter().map(|(n, _)| n).collect();
    ds_owners.dedup();
    for owner in ds_owners {
        let mut options = DnsRequestOptions::default();
        options.edns_set_dnssec_ok = true;
        let response = plain
            .lookup(Query::query(owner.clone(), RecordType::DNSKEY), options)
            .first_answer()
            .await
            .map_err(|e| {
                Trouble::Failed(format!(
                    "DNSKEY of the trust anchor {owner}: {}",
                    message(classify(&e, servers, timeout))
                ))
            })?;
        let mut matched = false;
        for r in &response.answers {
            let RData::DNSSEC(DNSSECRData::DNSKEY(key)) = &r.data else { continue };
            if r.name != *owner {
                continue;
            }
            if parsed.ds.iter().any(|(n, ds)| n == owner && ds.covers(owner, key).unwrap_or(false)) {
                anchors.insert_with_name(key.public_key(), owner.into());
                matched = true;
            }
        }
        if !matched {
            return Err(Trouble::Bogus(format!("no DNSKEY at {owner} matches the DS trust anchor")));
        }
    }
    Ok(anchors)
}

/// Checks that `path` is a readable trust anchor file of DS or DNSKEY records (for the
/// configuration, so that a bad file is reported when mtasts starts rather than on each lookup).
pub fn check_trust_anchor_file(path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse_trust_anchors(&text).map(drop).map_err(|e| format!("{}: {e}", path.display()))
}

/// The records of a trust anchor file.
#[derive(Debug, Default)]
struct ParsedAnchors {
    keys: Vec<(Name, DNSKEY)>,
    ds: Vec<(Name, DS)>,
}

/// Parses a trust anchor file: one `owner [ttl] [IN] DS|DNSKEY rdata` record a line, as in a
/// zone file (`;` starts a comment; no multi-line records).
fn parse_trust_anchors(text: &str) -> Result<ParsedAnchors, String> {
    let mut parsed = ParsedAnchors::default();
    for (n, line) in text.lines().enumerate() {
        let line = line.split(';').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut tokens = line.split_whitespace();
        let owner = tokens.next().unwrap_or_default();
        let owner = absolute_name(owner).or_else(|_| if owner == "." { Ok(Name::root()) } else { Err(()) });
        let owner = owner.map_err(|()| format!("line {}: bad owner name", n + 1))?;
        let mut rest: Vec<&str> = tokens.collect();
        // Skip the optional TTL and class.
        while let Some(first) = rest.first() {
            if first.parse::<u32>().is_ok() || first.eq_ignore_ascii_case("IN") {
                rest.remove(0);
            } else {
                break;
            }
        }
        let Some((rtype, rdata)) = rest.split_first() else {
            return Err(format!("line {}: no record type", n + 1));
        };
        let rdata = rdata.join(" ");
        match rtype.to_ascii_uppercase().as_str() {
            "DNSKEY" => match parse_dnskey(&rdata) {
                Some(k) => parsed.keys.push((owner, k)),
                None => return Err(format!("line {}: bad DNSKEY record", n + 1)),
            },
            "DS" => match RData::try_from_str(RecordType::DS, &rdata) {
                Ok(RData::DNSSEC(DNSSECRData::DS(d))) => parsed.ds.push((owner, d)),
                _ => return Err(format!("line {}: bad DS record", n + 1)),
            },
            other => {
                return Err(format!("line {}: {other} records are not trust anchors (DS or DNSKEY)", n + 1));
            }
        }
    }
    if parsed.keys.is_empty() && parsed.ds.is_empty() {
        return Err("no DS or DNSKEY record".into());
    }
    Ok(parsed)
}

/// DNSKEY RDATA in presentation form: flags, protocol (3), algorithm, base64 key (RFC 4034 §2.2).
fn parse_dnskey(rdata: &str) -> Option<DNSKEY> {
    use base64::Engine as _;
    let mut tokens = rdata.split_whitespace();
    let flags: u16 = tokens.next()?.parse().ok()?;
    let protocol: u8 = tokens.next()?.parse().ok()?;
    let algorithm: u8 = tokens.next()?.parse().ok()?;
    let key: String = tokens.collect();
    if protocol != 3 || key.is_empty() {
        return None;
    }
    let key = base64::engine::general_purpose::STANDARD.decode(key).ok()?;
    Some(DNSKEY::with_flags(flags, PublicKeyBuf::new(key, Algorithm::from_u8(algorithm))))
}

/// One question to loopback resolvers, AD=1 in the query (RFC 6840 §5.7): UDP, then TCP when
/// the answer is truncated. The servers are asked in order; SERVFAIL, REFUSED and silence move
/// on to the next. Every record of an answer with AD=1 is secure, of one without it insecure.
async fn stub_query(
    servers: &[SocketAddr],
    timeout: Duration,
    name: &Name,
    rtype: RecordType,
) -> Result<Response, Trouble> {
    let per_server = timeout / u32::try_from(servers.len()).unwrap_or(1).max(1);
    let mut last = String::new();
    for server in servers {
        let mut query = Message::query();
        query.metadata.id = rand::random();
        query.metadata.recursion_desired = true;
        query.metadata.authentic_data = true;
        query.add_query(Query::query(name.clone(), rtype));
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        query.set_edns(edns);
        let attempt = tokio::time::timeout(per_server, exchange(*server, &query)).await;
        let response = match attempt {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                last = format!("{e} asking {server}");
                continue;
            }
            Err(_) => {
                last = format!("timed out after {} ms asking {server}", per_server.as_millis());
                continue;
            }
        };
        match response.metadata.response_code {
            ResponseCode::NoError | ResponseCode::NXDomain => {}
            code => {
                last = format!("{} from {server}", rcode_name(code));
                continue;
            }
        }
        let security = if response.metadata.authentic_data { Security::Secure } else { Security::Insecure };
        let records = response
            .answers
            .iter()
            .filter(|r| r.record_type() != RecordType::RRSIG)
            .map(|r| (r.clone(), security))
            .collect();
        return Ok(Response { records, denial: security });
    }
    Err(Trouble::Failed(format!("{last} ({name} {rtype})")))
}

/// Sends `query` to `server` and returns its answer (TCP when UDP's is truncated).
async fn exchange(server: SocketAddr, query: &Message) -> std::io::Result<Message> {
    let bytes = query.to_vec().map_err(std::io::Error::other)?;
    let local: SocketAddr = match server.ip() {
        IpAddr::V4(_) => "127.0.0.1:0".parse().map_err(std::io::Error::other)?,
        IpAddr::V6(_) => "[::1]:0".parse().map_err(std::io::Error::other)?,
    };
    let socket = tokio::net::UdpSocket::bind(local).await?;
    socket.connect(server).await?;
    socket.send(&bytes).await?;
    let mut buf = vec![0u8; 65_535];
    let response = loop {
        let n = socket.recv(&mut buf).await?;
        if let Some(m) = matching(query, &buf[..n]) {
            break m;
        }
    };
    if !response.metadata.truncation {
        return Ok(response);
    }
    let mut stream = tokio::net::TcpStream::connect(server).await?;
    let len = u16::try_from(bytes.len()).map_err(std::io::Error::other)?;
    stream.write_all(&len.to_be_bytes()).await?;
    stream.write_all(&bytes).await?;
    loop {
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await?;
        let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut msg).await?;
        if let Some(m) = matching(query, &msg) {
            return Ok(m);
        }
    }
}

/// `packet` decoded when it answers `query` (same id and question), else `None`.
fn matching(query: &Message, packet: &[u8]) -> Option<Message> {
    let m = Message::from_vec(packet).ok()?;
    let same = m.metadata.id == query.metadata.id
        && m.metadata.message_type == MessageType::Response
        && m.metadata.op_code == OpCode::Query
        && m.queries.first().is_some_and(|q| {
            query
                .queries
                .first()
                .is_some_and(|asked| q.name().eq_case(asked.name()) && q.query_type() == asked.query_type())
        });
    same.then_some(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_anchor_files_parse() {
        let text = "; the root of test\n\
                    test. 3600 IN DS 12345 13 2 0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF\n\
                    \n";
        let parsed = parse_trust_anchors(text).unwrap();
        assert_eq!(parsed.ds.len(), 1);
        assert_eq!(parsed.ds[0].0, Name::from_ascii("test.").unwrap());
        assert_eq!(parsed.ds[0].1.key_tag(), 12345);
        assert!(parse_trust_anchors("").unwrap_err().contains("no DS or DNSKEY"));
        assert!(parse_trust_anchors("test. IN A 192.0.2.1\n").unwrap_err().contains("not trust anchors"));
        assert!(parse_trust_anchors("test. IN DS 1 2\n").unwrap_err().contains("line 1"));
        let key = parse_trust_anchors("test. IN DNSKEY 257 3 13 AQID\n. DNSKEY 257 3 8 BAUG\n").unwrap();
        assert_eq!(key.keys.len(), 2);
        assert_eq!(key.keys[0].1.flags(), 257);
        assert_eq!(key.keys[1].0, Name::root());
        assert!(parse_trust_anchors("test. IN DNSKEY 257 2 13 AQID\n").is_err());
    }

    #[test]
    fn security_combines_to_the_worst() {
        use Security::*;
        assert_eq!(worst(Secure, Secure), Secure);
        assert_eq!(worst(Secure, Insecure), Insecure);
        assert_eq!(worst(Insecure, Bogus), Bogus);
        assert_eq!(
            proven(Proof::Bogus, || "x".into()),
            Err(Trouble::Bogus("DNSSEC validation failed (bogus) for x".into()))
        );
        assert!(matches!(proven(Proof::Indeterminate, || "x".into()), Err(Trouble::Failed(_))));
    }

    #[test]
    fn trust_ad_needs_loopback_servers() {
        let ok = Servers(vec!["127.0.0.1:53".parse().unwrap(), "[::1]:53".parse().unwrap()]);
        assert!(Client::trust_ad(ok, Duration::from_secs(1)).is_ok());
        let bad = Servers(vec!["127.0.0.1:53".parse().unwrap(), "192.0.2.53:53".parse().unwrap()]);
        let Err(Trouble::Failed(e)) = Client::trust_ad(bad, Duration::from_secs(1)) else {
            panic!("accepted")
        };
        assert!(e.contains("192.0.2.53:53"), "{e}");
    }
}
