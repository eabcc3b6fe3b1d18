//! The ports: what the engine needs from the outside world, as traits and the errors they return.
//!
//! The I/O modules implement them ([`crate::dns`]: [`Resolver`] and [`AddressResolver`] over
//! hickory; [`crate::fetch`]: [`Fetcher`] over ureq and rustls), the engine and the TLSRPT
//! pipeline consume them, and tests implement them with fakes, so every rule is tested without a
//! network. Nothing here does I/O, and nothing here imports the engine: arrows point down.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::domain::Domain;
use crate::verdict::Reason;

/// Looks up TXT records. Implementations: [`crate::dns`] (hickory) and test fakes.
pub trait Resolver: Send + Sync {
    /// The TXT records at `name`, each with its character-strings joined with no separator
    /// (DISC-6), CNAMEs followed (DISC-13).
    fn txt(&self, name: &str) -> Result<Vec<Vec<u8>>, DnsError>;
}

/// A failed DNS lookup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DnsError {
    /// NXDOMAIN, or the name exists with no TXT records.
    NotFound,
    /// SERVFAIL, timeout, or anything else that may pass.
    Temporary(String),
}

/// Resolves a host name to addresses (A and AAAA), for the policy fetch: the policy host is
/// resolved through the same resolver as the TXT record.
pub trait AddressResolver: Send + Sync {
    /// The addresses of `host`.
    fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, DnsError>;
}

/// What DNSSEC validation says of an answer (RFC 4035 §4.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Security {
    /// Validated from a trust anchor down to the answer (or to its proven non-existence).
    Secure,
    /// Provably unsigned: a delegation on the way is proven to have no DS records.
    Insecure,
    /// Signed, but the signatures or the chain of trust do not validate.
    Bogus,
}

/// One TLSA record (RFC 6698 §2.1) as published: certificate usage, selector, matching type
/// and the association data. Whether it is usable for SMTP is decided by the TLSA matching rules.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TlsaRecord {
    /// Certificate usage: 0 PKIX-TA, 1 PKIX-EE, 2 DANE-TA, 3 DANE-EE (RFC 7218 names).
    pub usage: u8,
    /// Selector: 0 the whole certificate, 1 its SubjectPublicKeyInfo.
    pub selector: u8,
    /// Matching type: 0 exact, 1 SHA-256, 2 SHA-512.
    pub matching_type: u8,
    /// The certificate association data.
    pub data: Vec<u8>,
}

/// The presentation form of RFC 6698 §2.2 with the data in lower-case hex: `3 1 1 ab12...`.
impl std::fmt::Display for TlsaRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {} ", self.usage, self.selector, self.matching_type)?;
        self.data.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// The DANE state of one MX host (RFC 7672 §2.2): the TLSA RRset at `_25._tcp.<host>` (CNAMEs
/// followed), looked up only where RFC 7672 allows it, with the security of the answers used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsaLookup {
    /// DANE does not apply to this host: no TLSA records, or an insecure answer on the way.
    NotApplicable,
    /// A secure TLSA RRset. It may hold no usable record: TLS is then mandatory but
    /// unauthenticated (RFC 7672 §2.2). `ttl`: seconds the answer may be cached.
    Secure {
        /// The records of the RRset, usable or not.
        records: Vec<TlsaRecord>,
        /// Seconds the answer may be cached (the least TTL of the validated RRsets).
        ttl: u32,
        /// The TLSA base domain when it is not the MX host: the host is an alias and the records
        /// were found at its CNAME-expanded name (RFC 7672 §2.2.2). A DANE-TA leaf may carry
        /// this name or the MX host's (§3.2.2). `None`: the base domain is the MX host.
        base: Option<Domain>,
    },
    /// Validation failed (bogus): a temporary failure of this MX, reason `dnssec-invalid`;
    /// never "no DANE".
    Bogus(String),
    /// The lookup failed (timeout, SERVFAIL): a temporary failure of this MX; never "no DANE".
    Failed(String),
}

/// One MX record.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MxRecord {
    /// The preference: lower is tried first.
    pub preference: u16,
    /// The exchange host name, without the trailing dot. A null MX (RFC 7505, "no mail") has
    /// the exchange `"."`.
    pub exchange: String,
}

/// The MX RRset of a domain with its DNSSEC security (RFC 7672 §2.2.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MxLookup {
    /// The MX records by preference (empty: the domain has none, NXDOMAIN or NODATA, and the
    /// domain itself is the implicit MX), and the security of the answer (secure or insecure).
    Records {
        /// The records, by preference.
        records: Vec<MxRecord>,
        /// `Secure` or `Insecure`.
        security: Security,
        /// Seconds the answer may be cached.
        ttl: u32,
    },
    /// The answer is bogus: a temporary failure of the domain (`dnssec-invalid`).
    Bogus(String),
    /// The lookup failed (timeout, SERVFAIL): a temporary failure.
    Failed(String),
}

/// Looks up the DANE state of MX hosts with DNSSEC validation. Implementations: [`crate::dns`]
/// and test fakes.
pub trait TlsaResolver: Send + Sync {
    /// The DANE state of `mx_host`.
    fn tlsa(&self, mx_host: &Domain) -> TlsaLookup;
    /// The MX RRset of `domain` with its security. A bogus answer, or a lookup that fails, makes
    /// every MX of the domain a temporary failure while DANE is on (RFC 7672 §2.2.1).
    fn mx(&self, domain: &Domain) -> MxLookup;
}

impl<T: TlsaResolver + ?Sized> TlsaResolver for Arc<T> {
    fn tlsa(&self, mx_host: &Domain) -> TlsaLookup {
        (**self).tlsa(mx_host)
    }

    fn mx(&self, domain: &Domain) -> MxLookup {
        (**self).mx(domain)
    }
}

/// Fetches the policy body of a domain from `https://mta-sts.<domain>/.well-known/mta-sts.txt`.
pub trait Fetcher: Send + Sync {
    /// The body of a `200 text/plain` answer, or why there is none. The failure's reason is
    /// `sts-policy-fetch-error` or `sts-webpki-invalid`.
    fn fetch(&self, domain: &Domain) -> Result<Vec<u8>, Failure>;
}

/// Why discovery or the last fetch failed, as an RFC 8460 result type and a detail line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// `sts-policy-fetch-error`, `sts-webpki-invalid` or `sts-policy-invalid`.
    pub reason: Reason,
    /// What exactly went wrong.
    pub detail: String,
}

/// The source of time, in seconds since the Unix epoch.
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> u64;
}

impl<T: Resolver + ?Sized> Resolver for Arc<T> {
    fn txt(&self, name: &str) -> Result<Vec<Vec<u8>>, DnsError> {
        (**self).txt(name)
    }
}

impl<T: Fetcher + ?Sized> Fetcher for Arc<T> {
    fn fetch(&self, domain: &Domain) -> Result<Vec<u8>, Failure> {
        (**self).fetch(domain)
    }
}

impl<T: Clock + ?Sized> Clock for Arc<T> {
    fn now(&self) -> u64 {
        (**self).now()
    }
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
    }
}
