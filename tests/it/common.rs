//! Test doubles shared by the integration tests: a scripted resolver, fetcher and clock that
//! count what the engine asks of them, and the rcgen test PKI; and helpers for child processes
//! and report files.

#![allow(dead_code)]

pub use mtasts_fixtures::pki;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use mtasts::cache::Failure;
use mtasts::engine::{Clock, DnsError, Fetcher, Resolver};
use mtasts::{Domain, Reason};
use parking_lot::Mutex;

/// A resolver whose answer the test sets, counting lookups and recording the names asked.
#[derive(Default)]
pub struct FakeDns {
    pub answer: Mutex<Option<Result<Vec<Vec<u8>>, DnsError>>>,
    pub lookups: AtomicUsize,
    pub names: Mutex<Vec<String>>,
    pub delay: Mutex<Duration>,
}

impl FakeDns {
    pub fn set(&self, answer: Result<Vec<Vec<u8>>, DnsError>) {
        *self.answer.lock() = Some(answer);
    }

    pub fn set_records(&self, records: &[&str]) {
        self.set(Ok(records.iter().map(|r| r.as_bytes().to_vec()).collect()));
    }

    pub fn lookups(&self) -> usize {
        self.lookups.load(Ordering::SeqCst)
    }
}

impl Resolver for FakeDns {
    fn txt(&self, name: &str) -> Result<Vec<Vec<u8>>, DnsError> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        self.names.lock().push(name.to_owned());
        let delay = *self.delay.lock();
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        self.answer.lock().clone().unwrap_or(Err(DnsError::NotFound))
    }
}

/// A fetcher whose answer the test sets, counting fetches.
#[derive(Default)]
pub struct FakeHttp {
    pub answer: Mutex<Option<Result<Vec<u8>, Failure>>>,
    pub fetches: AtomicUsize,
    pub hosts: Mutex<Vec<String>>,
    pub delay: Mutex<Duration>,
}

impl FakeHttp {
    pub fn set_body(&self, body: &str) {
        *self.answer.lock() = Some(Ok(body.as_bytes().to_vec()));
    }

    pub fn set_error(&self, reason: Reason, detail: &str) {
        *self.answer.lock() = Some(Err(Failure { reason, detail: detail.into() }));
    }

    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

impl Fetcher for FakeHttp {
    fn fetch(&self, domain: &Domain) -> Result<Vec<u8>, Failure> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        self.hosts.lock().push(domain.policy_host());
        let delay = *self.delay.lock();
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        self.answer.lock().clone().unwrap_or_else(|| {
            Err(Failure { reason: Reason::StsPolicyFetchError, detail: "connection refused".into() })
        })
    }
}

/// A clock the test moves by hand.
pub struct FakeClock(pub AtomicU64);

/// 2026-11-28T00:00:00Z, inside the validity of the test PKI's good certificates.
pub const START: u64 = 1_795_824_000;

impl Default for FakeClock {
    fn default() -> Self {
        Self(AtomicU64::new(START))
    }
}

impl FakeClock {
    pub fn advance(&self, secs: u64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
}

impl Clock for FakeClock {
    fn now(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// An engine over fakes, with the test PKI's root as trust anchor.
pub struct Harness {
    pub dns: Arc<FakeDns>,
    pub http: Arc<FakeHttp>,
    pub clock: Arc<FakeClock>,
    pub engine: mtasts::Engine,
}

impl Harness {
    pub fn new(timing: mtasts::Timing) -> Self {
        Self::with_tlsa(timing, None)
    }

    /// As [`Harness::new`], with the engine doing DANE through `tlsa` when given.
    pub fn with_tlsa(timing: mtasts::Timing, tlsa: Option<Arc<FakeTlsa>>) -> Self {
        let dns = Arc::new(FakeDns::default());
        let http = Arc::new(FakeHttp::default());
        let clock = Arc::new(FakeClock::default());
        let anchors =
            mtasts::TrustAnchors::from_pem(pki::pki().root_pem.as_bytes(), "test root").expect("root");
        let mut builder = mtasts::Engine::builder(Arc::clone(&dns), Arc::clone(&http))
            .clock(Arc::clone(&clock))
            .trust_anchors(anchors)
            .timing(timing);
        if let Some(tlsa) = tlsa {
            builder = builder.tlsa_resolver(tlsa);
        }
        let engine = builder.build();
        Self { dns, http, clock, engine }
    }
}

/// A DNSSEC-validating TLSA lookup whose answer per MX host the test sets, counting lookups.
#[derive(Default)]
pub struct FakeTlsa {
    pub answers: Mutex<std::collections::HashMap<String, mtasts::ports::TlsaLookup>>,
    pub lookups: AtomicUsize,
    /// MX answers by domain; a domain not set has an insecure MX RRset.
    pub mx_answers: Mutex<std::collections::HashMap<String, mtasts::ports::MxLookup>>,
    pub mx_lookups: AtomicUsize,
}

impl FakeTlsa {
    pub fn set(&self, host: &str, answer: mtasts::ports::TlsaLookup) {
        self.answers.lock().insert(host.to_owned(), answer);
    }

    pub fn set_mx(&self, domain: &str, answer: mtasts::ports::MxLookup) {
        self.mx_answers.lock().insert(domain.to_owned(), answer);
    }

    pub fn mx_lookups(&self) -> usize {
        self.mx_lookups.load(Ordering::SeqCst)
    }

    pub fn lookups(&self) -> usize {
        self.lookups.load(Ordering::SeqCst)
    }
}

impl mtasts::ports::TlsaResolver for FakeTlsa {
    fn tlsa(&self, mx_host: &Domain) -> mtasts::ports::TlsaLookup {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        self.answers.lock().get(mx_host.as_str()).cloned().unwrap_or(mtasts::ports::TlsaLookup::NotApplicable)
    }

    fn mx(&self, domain: &Domain) -> mtasts::ports::MxLookup {
        self.mx_lookups.fetch_add(1, Ordering::SeqCst);
        self.mx_answers.lock().get(domain.as_str()).cloned().unwrap_or(mtasts::ports::MxLookup::Records {
            records: vec![],
            security: mtasts::ports::Security::Insecure,
            ttl: 300,
        })
    }
}

/// Collects everything `child` writes to standard error (piped) from now on, in a thread.
pub fn collect_stderr(child: &mut std::process::Child) -> Arc<Mutex<String>> {
    use std::io::Read;
    let stderr = Arc::new(Mutex::new(String::new()));
    let seen = Arc::clone(&stderr);
    let mut pipe = child.stderr.take().expect("stderr piped");
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.lock().push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    stderr
}

/// The JSON of a gzipped report file.
pub fn gunzip_json(path: &std::path::Path) -> serde_json::Value {
    use std::io::Read;
    let mut s = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).expect("open"))
        .read_to_string(&mut s)
        .expect("gunzip");
    serde_json::from_str(&s).expect("JSON")
}
