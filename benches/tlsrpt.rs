//! TLSRPT costs: counting a session on the hot path, taking one of Postfix 3.10's TLSRPT
//! datagrams (checking it and counting its session), building a day's reports for 10,000
//! domains (JSON and gzip), and DKIM-signing a mailed report (RSA-2048 and Ed25519 keys made by
//! `openssl` at start). Prints medians.
//!
//! `cargo bench --bench tlsrpt`; figures in BENCHMARKS.md.

use std::hint::black_box;
use std::time::Instant;

use mtasts::cache::Failure;
use mtasts::engine::{DnsError, Fetcher, Resolver, SessionDetails};
use mtasts::tlsrpt::EmailAddress;
use mtasts::tlsrpt::report::{Day, DayCounts, FailureKey, PolicyKey, ReportId, ResultType, build_report};
use mtasts::{Domain, Engine, Policy, Reason, Timing, TrustAnchors};

const POLICY: &str =
    "version: STSv1\nmode: testing\nmx: mx.example.com\nmx: *.example.net\nmax_age: 604800\n";

struct Dns;
impl Resolver for Dns {
    fn txt(&self, _: &str) -> Result<Vec<Vec<u8>>, DnsError> {
        Ok(vec![b"v=STSv1; id=1".to_vec()])
    }
}

struct Http;
impl Fetcher for Http {
    fn fetch(&self, _: &Domain) -> Result<Vec<u8>, Failure> {
        Ok(POLICY.as_bytes().to_vec())
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    // Counting a session: the engine's cached policy lookup plus one counter increment.
    let timing = Timing { txt_check_interval: 86_400, ..Timing::default() };
    let engine = Engine::builder(Dns, Http).trust_anchors(TrustAnchors::webpki()).timing(timing).build();
    engine.check_mx("example.com", "mx.example.com").expect("warm-up");
    let details = SessionDetails::default();
    let mut per_call = Vec::new();
    for _ in 0..31 {
        let n = 100_000;
        let t = Instant::now();
        for i in 0..n {
            let result = if i % 4 == 0 { Some(Reason::StarttlsNotSupported) } else { None };
            engine
                .record_session(black_box("example.com"), "mx.example.com", result, &details)
                .expect("record");
        }
        per_call.push(t.elapsed().as_nanos() as f64 / f64::from(n));
    }
    println!("record a session (cached policy, 1 in 4 a failure): median {:.0} ns", median(per_call));

    // Taking a Postfix TLSRPT datagram: check it, count its session (docs/tlsrpt-collect.md).
    let success = br#"{"dpv":"1","d":"example.com","pr":"v=TLSRPTv1; rua=mailto:tlsrpt@example.com","policies":[{"policy-type":2,"policy-domain":"example.com","policy-string":["version: STSv1","mode: testing","mx: mx.example.com","mx: *.example.net","max_age: 604800"],"mx-host":["mx.example.com","*.example.net"],"t":0,"f":0}]}"#;
    let failure = br#"{"dpv":"1","d":"example.com","pr":"v=TLSRPTv1; rua=mailto:tlsrpt@example.com","policies":[{"policy-type":2,"policy-domain":"example.com","policy-string":["version: STSv1","mode: testing","mx: mx.example.com","mx: *.example.net","max_age: 604800"],"mx-host":["mx.example.com","*.example.net"],"failure-details":[{"c":203,"s":"192.0.2.1","n":"mx.example.com","r":"198.51.100.25","f":"unable to get local issuer certificate"}],"t":1,"f":1}]}"#;
    let mut per_datagram = Vec::new();
    for _ in 0..31 {
        let n = 20_000;
        let t = Instant::now();
        for i in 0..n {
            let bytes: &[u8] = if i % 4 == 0 { failure } else { success };
            let counts = mtasts::tlsrpt::collect::parse_datagram(black_box(bytes)).expect("datagram");
            engine.record_reported(&counts);
        }
        per_datagram.push(t.elapsed().as_nanos() as f64 / f64::from(n));
    }
    println!(
        "take a Postfix TLSRPT datagram (check, count; 1 in 4 a failure): median {:.0} ns",
        median(per_datagram)
    );

    // Building the reports of one day for 10,000 domains.
    let policy = Policy::parse(POLICY.as_bytes()).expect("policy");
    let key = PolicyKey::sts_from_body(POLICY.as_bytes(), &policy);
    let mut counts = DayCounts::new();
    let domains: Vec<Domain> =
        (0..10_000).map(|i| Domain::parse(&format!("d{i}.example")).expect("d")).collect();
    for d in &domains {
        counts.add_success(d, &key, 120);
        let mx = Domain::parse(&format!("mx.{d}")).expect("mx");
        counts.add_failure(d, &key, FailureKey::new(ResultType::CertificateExpired, Some(mx)), 3);
    }
    let contact = EmailAddress::parse("tlsrpt@sender.example").expect("contact");
    let submitter = Domain::parse("sender.example").expect("submitter");
    let day = Day::from_unix(1_795_824_000);
    let mut runs = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let mut bytes = 0usize;
        for (i, d) in domains.iter().enumerate() {
            let mut only = DayCounts::new();
            for (p, c) in counts.policies(d) {
                only.add_success(d, p, c.successes);
                for (f, &n) in &c.failures {
                    only.add_failure(d, p, f.clone(), n);
                }
            }
            let id = ReportId::new(day, d, i as u64, &submitter);
            let report = build_report("Bench", &contact, &submitter, d, day, &only, id).expect("report");
            bytes += report.to_gzip().len() + report.file_name().len();
        }
        black_box(bytes);
        runs.push(t.elapsed().as_secs_f64());
    }
    println!("build 10,000 reports (JSON + gzip + file name): median {:.2} s", median(runs));

    // DKIM-signing one mailed report (RPT-12): canonicalization, body hash, signature.
    let d = &domains[0];
    let mut only = DayCounts::new();
    only.add_success(d, &key, 120);
    let report =
        build_report("Bench", &contact, &submitter, d, day, &only, ReportId::new(day, d, 1, &submitter))
            .expect("report");
    let message =
        mtasts::tlsrpt::mail::message(&report, &contact, std::slice::from_ref(&contact), 1_795_900_000);
    let dir = std::env::temp_dir().join(format!("mtasts-bench-dkim-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    for (name, keygen) in [
        (
            "rsa-sha256, 2048-bit key",
            &["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"][..],
        ),
        ("ed25519-sha256", &["genpkey", "-algorithm", "ed25519"][..]),
    ] {
        let out = std::process::Command::new("openssl").args(keygen).output().expect("openssl");
        assert!(out.status.success(), "openssl");
        let path = dir.join("key.pem");
        std::fs::write(&path, out.stdout).expect("key");
        let signer =
            mtasts::tlsrpt::dkim::DkimSigner::from_key_file("sender.example", "s", &path).expect("signer");
        let mut per_sign = Vec::new();
        for _ in 0..31 {
            let n = 50;
            let t = Instant::now();
            for _ in 0..n {
                black_box(signer.sign(black_box(&message), 1_795_900_000).expect("sign"));
            }
            per_sign.push(t.elapsed().as_secs_f64() * 1e6 / f64::from(n));
        }
        println!(
            "DKIM-sign one report mail ({} bytes, {name}): median {:.0} us",
            message.len(),
            median(per_sign)
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}
