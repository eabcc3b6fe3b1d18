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
