//! Benchmarks of the core: the cached check, policy parsing, MX matching, certificate chain
//! validation (first time and memoised), a DANE-EE TLSA match, the cached check with per-domain
//! overrides configured, and the cached check from two threads.
//!
//! `cargo bench --bench core`; figures are written down in BENCHMARKS.md.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use criterion::{BatchSize, Criterion};
use mtasts::cache::{Failure, PolicyStore, SqliteStore, StoredOverride};
use mtasts::cert::CertVerifier;
use mtasts::engine::{DnsError, Fetcher, Override, OverrideOrigin, Resolver};
use mtasts::mx::MxPattern;
use mtasts::ports::TlsaRecord;
use mtasts::tlsa::{self, DaneMatch, Usage};
use mtasts::{Domain, Engine, Policy, Timing, TrustAnchors};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls_pki_types::CertificateDer;

const POLICY: &str = "version: STSv1\nmode: enforce\nmx: mx.example.com\nmax_age: 604800\n";

struct Dns;
impl Resolver for Dns {
    fn txt(&self, _: &str) -> Result<Vec<Vec<u8>>, DnsError> {
        Ok(vec![b"v=STSv1; id=20240101T000000".to_vec()])
    }
}

struct Http;
impl Fetcher for Http {
    fn fetch(&self, _: &Domain) -> Result<Vec<u8>, Failure> {
        Ok(POLICY.as_bytes().to_vec())
    }
}

/// An engine with `example.com`'s policy in its memory cache, DNS re-checks a day apart.
fn warm_engine() -> Engine {
    let timing = Timing { txt_check_interval: 86_400, ..Timing::default() };
    let engine = Engine::builder(Dns, Http).trust_anchors(TrustAnchors::webpki()).timing(timing).build();
    engine.check_mx("example.com", "mx.example.com").expect("warm-up");
    engine
}

/// A leaf for `mx.example.com` (DER and PEM) and the root that signed it (PEM).
fn chain() -> (Vec<u8>, String, String) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.distinguished_name.push(DnType::CommonName, "bench root");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let root = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("key")).expect("root");
    let key = KeyPair::generate().expect("key");
    let leaf = CertificateParams::new(vec!["mx.example.com".to_string()])
        .expect("params")
        .signed_by(&key, &root)
        .expect("leaf");
    (leaf.der().to_vec(), leaf.pem(), root.pem())
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs()
}

fn benches(c: &mut Criterion) {
    let engine = warm_engine();
    c.bench_function("cached check_mx (domain + MX, no certificate)", |b| {
        b.iter(|| engine.check_mx(black_box("example.com"), black_box("mx.example.com")).expect("check"))
    });

    overrides(c);

    c.bench_function("policy parse (4 lines)", |b| b.iter(|| Policy::parse(black_box(POLICY.as_bytes()))));

    let pattern = MxPattern::parse("*.example.net").expect("pattern");
    let host = Domain::parse("mx1.example.net").expect("host");
    c.bench_function("MX match (wildcard)", |b| b.iter(|| black_box(&pattern).matches(black_box(&host))));

    let (leaf, leaf_pem, root_pem) = chain();
    let anchors = TrustAnchors::from_pem(root_pem.as_bytes(), "bench").expect("anchors");
    let mx = Domain::parse("mx.example.com").expect("mx");
    let t = now();
    c.bench_function("certificate chain, first validation", |b| {
        b.iter_batched(
            || CertVerifier::new(anchors.clone()),
            |v| v.verify(black_box(&leaf), &mx, t).expect("valid"),
            BatchSize::SmallInput,
        )
    });
    let verifier = CertVerifier::new(anchors);
    verifier.verify(&leaf, &mx, t).expect("valid");
    c.bench_function("certificate chain, memoised", |b| {
        b.iter(|| verifier.verify(black_box(&leaf), &mx, t).expect("valid"))
    });

    // DANE-EE `3 1 1`: the SHA-256 of the leaf's key, against a PEM chain of two certificates.
    let leaf_der = CertificateDer::from(leaf.as_slice());
    let spki = webpki::EndEntityCert::try_from(&leaf_der).expect("leaf").subject_public_key_info();
    let records = [TlsaRecord {
        usage: 3,
        selector: 1,
        matching_type: 1,
        data: ring::digest::digest(&ring::digest::SHA256, spki.as_ref()).as_ref().to_vec(),
    }];
    let pem = format!("{leaf_pem}{root_pem}");
    let names = [mx.clone()];
    c.bench_function("DANE-EE 3 1 1 match (PEM chain of 2)", |b| {
        b.iter(|| {
            let got = tlsa::verify(black_box(&records), black_box(pem.as_bytes()), &names, t);
            assert_eq!(got, DaneMatch::Passed { by: Usage::DaneEe });
        })
    });

    // The combined check an MTA makes after the handshake: the MTA-STS policy cached, the MX's
    // TLSA answer cached, the DANE-EE match memoised (baseline: the cached MTA-STS-only check
    // above, `cached check_mx`).
    let tlsa_records = records.to_vec();
    let dane_engine = Engine::builder(Dns, Http)
        .trust_anchors(TrustAnchors::from_pem(root_pem.as_bytes(), "bench root").expect("root"))
        .timing(Timing { txt_check_interval: 86_400, ..Timing::default() })
        .tlsa_resolver(FixedTlsa(tlsa_records))
        .build();
    let der = leaf.clone();
    let o = dane_engine.check("example.com", "mx.example.com", Some(&der)).expect("warm-up");
    assert_eq!(o.verdict, mtasts::Verdict::Pass, "{o:?}");
    assert!(o.dane.is_some());
    // The common case of an engine built with DANE on (the default): an MX without TLSA records,
    // its "not applicable" answer cached; against `cached check_mx` without DANE.
    let plain = Engine::builder(Dns, Http)
        .trust_anchors(TrustAnchors::webpki())
        .timing(Timing { txt_check_interval: 86_400, ..Timing::default() })
        .tlsa_resolver(NoTlsa)
        .build();
    plain.check_mx("example.com", "mx.example.com").expect("warm-up");
    c.bench_function("cached check_mx, DANE on, MX without TLSA records", |b| {
        b.iter(|| black_box(plain.check_mx("example.com", "mx.example.com").expect("check")))
    });
    c.bench_function("cached combined check (MTA-STS policy + DANE-EE pass, memoised; DER leaf)", |b| {
        b.iter(|| {
            let o = dane_engine.check("example.com", "mx.example.com", Some(black_box(&der))).expect("check");
            assert_eq!(o.verdict, mtasts::Verdict::Pass);
        })
    });
}

/// Per-domain overrides on the hot path (README "Overrides"): the cached check of a domain
/// without one, when the configuration or the store holds an override of another domain, and the
/// check of a domain whose policy is pinned (no cache, no I/O). Baseline: `cached check_mx`.
fn overrides(c: &mut Criterion) {
    let timing = Timing { txt_check_interval: 86_400, ..Timing::default() };
    let pinned = || {
        let origin = OverrideOrigin::Config { file: None, policy_file: None };
        let text = POLICY.replace("example.com", "pinned.example");
        Override::pinned(Domain::parse("pinned.example").expect("domain"), text.as_bytes(), now(), origin)
            .expect("pinned")
    };
    let config = Engine::builder(Dns, Http)
        .trust_anchors(TrustAnchors::webpki())
        .timing(timing)
        .overrides([pinned()])
        .build();
    config.check_mx("example.com", "mx.example.com").expect("warm-up");
    c.bench_function("cached check_mx, an override of another domain in the configuration", |b| {
        b.iter(|| config.check_mx(black_box("example.com"), black_box("mx.example.com")).expect("check"))
    });
    c.bench_function("check_mx of a domain pinned in the configuration", |b| {
        b.iter(|| {
            config.check_mx(black_box("pinned.example"), black_box("mx.pinned.example")).expect("check")
        })
    });
    let dir = std::env::temp_dir().join(format!("mtasts-bench-overrides-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let sqlite = |name: &str| SqliteStore::open(&dir.join(name), 300).expect("store");
    let with_override = sqlite("one.sqlite");
    with_override
        .override_set(&StoredOverride {
            domain: Domain::parse("skip.example").expect("domain"),
            policy_text: None,
            set_at: now(),
        })
        .expect("set");
    for (what, store) in [
        ("cached check_mx, SQLite store without overrides", sqlite("none.sqlite")),
        ("cached check_mx, an override of another domain in the SQLite store", with_override),
    ] {
        let engine = Engine::builder(Dns, Http)
            .trust_anchors(TrustAnchors::webpki())
            .timing(timing)
            .store(store)
            .build();
        engine.check_mx("example.com", "mx.example.com").expect("warm-up");
        c.bench_function(what, |b| {
            b.iter(|| engine.check_mx(black_box("example.com"), black_box("mx.example.com")).expect("check"))
        });
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// An insecure MX RRset, as most domains have.
fn insecure_mx() -> mtasts::ports::MxLookup {
    mtasts::ports::MxLookup::Records {
        records: vec![],
        security: mtasts::ports::Security::Insecure,
        ttl: 3600,
    }
}

/// A TLSA lookup that finds no TLSA records (DANE does not apply).
struct NoTlsa;
impl mtasts::ports::TlsaResolver for NoTlsa {
    fn tlsa(&self, _: &Domain) -> mtasts::ports::TlsaLookup {
        mtasts::ports::TlsaLookup::NotApplicable
    }
    fn mx(&self, _: &Domain) -> mtasts::ports::MxLookup {
        insecure_mx()
    }
}

/// A TLSA lookup that always answers the same secure RRset.
struct FixedTlsa(Vec<TlsaRecord>);
impl mtasts::ports::TlsaResolver for FixedTlsa {
    fn tlsa(&self, _: &Domain) -> mtasts::ports::TlsaLookup {
        mtasts::ports::TlsaLookup::Secure { records: self.0.clone(), ttl: 86_400, base: None }
    }
    fn mx(&self, _: &Domain) -> mtasts::ports::MxLookup {
        insecure_mx()
    }
}

/// Checks per second on the cached path with `threads` threads for `run`.
fn throughput(engine: &Arc<Engine>, threads: usize, run: Duration) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let total = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (engine, stop, total) = (Arc::clone(engine), Arc::clone(&stop), Arc::clone(&total));
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..1000 {
                        black_box(engine.check_mx("example.com", "mx.example.com").expect("check"));
                    }
                    n += 1000;
                }
                total.fetch_add(n, Ordering::Relaxed);
            })
        })
        .collect();
    let start = Instant::now();
    std::thread::sleep(run);
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().expect("thread");
    }
    total.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

fn scaling() {
    let plain = Engine::builder(Dns, Http)
        .trust_anchors(TrustAnchors::webpki())
        .timing(Timing { txt_check_interval: 86_400, ..Timing::default() })
        .tlsa_resolver(NoTlsa)
        .build();
    plain.check_mx("example.com", "mx.example.com").expect("warm-up");
    for (what, engine) in [("DANE off", Arc::new(warm_engine())), ("DANE on, no TLSA", Arc::new(plain))] {
        let run = Duration::from_secs(3);
        let mut one = Vec::new();
        let mut two = Vec::new();
        for _ in 0..5 {
            one.push(throughput(&engine, 1, run));
            two.push(throughput(&engine, 2, run));
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (one, two) = (median(&mut one), median(&mut two));
        println!(
            "cached check_mx throughput ({what}): 1 thread {one:.0}/s, 2 threads {two:.0}/s, ratio {:.2}x",
            two / one
        );
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c);
    c.final_summary();
    if std::env::args().all(|a| a != "--list") {
        scaling();
    }
}
