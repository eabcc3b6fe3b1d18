//! Remembered MX certificate validations (docs/architecture.md, "Remembered validations";
//! decision D35 in docs/conformance.md): a chain that passed under a set of roots is found by
//! the next process that shares the SQLite store and has the same roots, without validating it
//! again or even reading the roots; another host, another chain, other roots, a changed root
//! file or the passing of a day make it validate afresh, and failures are never remembered.
//! Each `Engine` here stands for one process (Exim starts one per delivery).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use mtasts::cache::SqliteStore;
use mtasts::engine::Tls;
use mtasts::{Dane, Engine, Reason, Timing, TrustAnchors, Verdict};
use mtasts_fixtures::pki::{Chain, pki};

use crate::common::{FakeClock, FakeDns, FakeHttp, START};

const ENFORCE: &str = "version: STSv1\nmode: enforce\nmx: *.example.test\nmax_age: 604800\n";

struct Setup {
    dir: PathBuf,
    dns: Arc<FakeDns>,
    http: Arc<FakeHttp>,
    clock: Arc<FakeClock>,
}

impl Setup {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("mtasts-verified-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let s = Self {
            dir,
            dns: Arc::new(FakeDns::default()),
            http: Arc::new(FakeHttp::default()),
            clock: Arc::new(FakeClock::default()),
        };
        s.dns.set_records(&["v=STSv1; id=v1"]);
        s.http.set_body(ENFORCE);
        s.write_roots("roots.pem", &pki().root_pem);
        s
    }

    /// Writes a root file the way a package manager does: a new file renamed into place.
    fn write_roots(&self, name: &str, pem: &str) -> PathBuf {
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!("{name}.new"));
        std::fs::write(&tmp, pem).expect("write roots");
        std::fs::rename(&tmp, &path).expect("rename roots");
        path
    }

    /// A fresh "process": its own engine over the shared store, the roots of `roots` read lazily.
    fn process(&self, roots: &Path) -> Engine {
        let store = SqliteStore::open(&self.dir.join("store.sqlite"), 300).expect("store");
        Engine::builder(Arc::clone(&self.dns), Arc::clone(&self.http))
            .clock(Arc::clone(&self.clock))
            .trust_anchors(TrustAnchors::from_pem_file_lazy(roots))
            .timing(Timing::default())
            .store(store)
            .build()
    }

    fn roots(&self) -> PathBuf {
        self.dir.join("roots.pem")
    }

    /// The remembered validations in the store: (key, expiry).
    fn remembered(&self) -> Vec<(String, u64)> {
        let c = rusqlite::Connection::open(self.dir.join("store.sqlite")).expect("open");
        let mut stmt = c
            .prepare("SELECT host, expires_at FROM tlsa WHERE host LIKE 'cert %' ORDER BY host")
            .expect("query");
        stmt.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))
            .expect("rows")
            .map(|r| r.expect("row"))
            .collect()
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn check(engine: &Engine, mx: &str, chain: &Chain) -> (Verdict, Reason) {
    let pem = chain.pem();
    let o = engine
        .check_with("example.test", mx, Tls::Chain(pem.as_bytes()), Dane::NotApplicable)
        .expect("check");
    (o.verdict, o.reason)
}

#[test]
fn d35_cert_2_a_validation_is_remembered_for_the_next_process_with_the_same_roots() {
    let s = Setup::new("same");
    let mx = &pki().chains["mx"];
    let first = s.process(&s.roots());
    assert_eq!(check(&first, "mx.example.test", mx), (Verdict::Pass, Reason::None));
    assert!(first.cert_verifier().anchors().is_loaded(), "the first process validated");
    let rows = s.remembered();
    assert_eq!(rows.len(), 1, "{rows:?}");
    // At most a day, even though the chain is valid for years.
    assert_eq!(rows[0].1, START + 86_400, "{rows:?}");
    drop(first);

    let next = s.process(&s.roots());
    assert_eq!(check(&next, "mx.example.test", mx), (Verdict::Pass, Reason::None));
    assert!(!next.cert_verifier().anchors().is_loaded(), "the next process did not even read the roots");
    // The same chain given as concatenated DER is other bytes: validated, and remembered too.
    let der = next
        .check_with("example.test", "mx.example.test", Tls::Chain(&mx.der_concat()), Dane::NotApplicable)
        .expect("check");
    assert_eq!(der.verdict, Verdict::Pass);
    assert!(next.cert_verifier().anchors().is_loaded());
    assert_eq!(s.remembered().len(), 2);
}

#[test]
fn d35_cert_2_other_roots_or_a_replaced_root_file_do_not_find_it() {
    let s = Setup::new("roots");
    let mx = &pki().chains["mx"];
    assert_eq!(check(&s.process(&s.roots()), "mx.example.test", mx), (Verdict::Pass, Reason::None));
    assert_eq!(s.remembered().len(), 1);
    let rogue = Chain { der: vec![pki().certs["rogue-root"].clone()], key_pem: String::new() }.pem();

    // Another file with other roots: the chain does not lead to them.
    let other = s.write_roots("other.pem", &rogue);
    let e = s.process(&other);
    assert_eq!(check(&e, "mx.example.test", mx), (Verdict::FailEnforce, Reason::CertificateNotTrusted));
    assert!(e.cert_verifier().anchors().is_loaded());

    // The same file name, replaced by other roots: a new identity, validated afresh.
    s.write_roots("roots.pem", &rogue);
    let e = s.process(&s.roots());
    assert_eq!(check(&e, "mx.example.test", mx), (Verdict::FailEnforce, Reason::CertificateNotTrusted));

    // Put back (a new file again): validated again, and passes.
    s.write_roots("roots.pem", &pki().root_pem);
    let e = s.process(&s.roots());
    assert_eq!(check(&e, "mx.example.test", mx), (Verdict::Pass, Reason::None));
    assert!(e.cert_verifier().anchors().is_loaded());
    // Failures left nothing behind: one row per passing validation.
    assert_eq!(s.remembered().len(), 2);
}

#[test]
fn d35_cert_4_another_host_is_validated_afresh() {
    let s = Setup::new("host");
    let mx = &pki().chains["mx"];
    assert_eq!(check(&s.process(&s.roots()), "mx.example.test", mx), (Verdict::Pass, Reason::None));
    // The chain names mx and mx2, not other: a remembered pass for mx must not pass other.
    let e = s.process(&s.roots());
    assert_eq!(check(&e, "other.example.test", mx), (Verdict::FailEnforce, Reason::CertificateHostMismatch));
    assert!(e.cert_verifier().anchors().is_loaded());
    // mx2 is named by the chain: validated (not found under mx's name), passes, remembered.
    let e = s.process(&s.roots());
    assert_eq!(check(&e, "mx2.example.test", mx), (Verdict::Pass, Reason::None));
    assert!(e.cert_verifier().anchors().is_loaded());
    assert_eq!(s.remembered().len(), 2);
}

#[test]
fn d35_cert_2_failures_are_never_remembered() {
    let s = Setup::new("fail");
    for (name, reason) in [
        ("untrusted", Reason::CertificateNotTrusted),
        ("expired", Reason::CertificateExpired),
        ("wrong-name", Reason::CertificateHostMismatch),
    ] {
        for _ in 0..2 {
            let e = s.process(&s.roots());
            assert_eq!(
                check(&e, "mx.example.test", &pki().chains[name]),
                (Verdict::FailEnforce, reason),
                "{name}"
            );
            assert!(e.cert_verifier().anchors().is_loaded(), "{name} was validated each time");
        }
    }
    assert_eq!(s.remembered(), Vec::<(String, u64)>::new());
}

#[test]
fn d35_a_remembered_validation_lasts_a_day_at_most() {
    let s = Setup::new("day");
    let mx = &pki().chains["mx"];
    assert_eq!(check(&s.process(&s.roots()), "mx.example.test", mx), (Verdict::Pass, Reason::None));
    s.clock.advance(86_400 - 1);
    let e = s.process(&s.roots());
    assert_eq!(check(&e, "mx.example.test", mx), (Verdict::Pass, Reason::None));
    assert!(!e.cert_verifier().anchors().is_loaded(), "still remembered a second before the day is out");
    s.clock.advance(1);
    let e = s.process(&s.roots());
    assert_eq!(check(&e, "mx.example.test", mx), (Verdict::Pass, Reason::None));
    assert!(e.cert_verifier().anchors().is_loaded(), "validated again after a day");
    // ... and remembered for another day from now.
    assert_eq!(s.remembered()[0].1, START + 2 * 86_400);
}

#[test]
fn cert_2_a_root_file_read_lazily_that_cannot_be_read_fails_closed() {
    let s = Setup::new("missing");
    let e = s.process(&s.dir.join("no-such-roots.pem"));
    let pem = pki().chains["mx"].pem();
    let o = e
        .check_with("example.test", "mx.example.test", Tls::Chain(pem.as_bytes()), Dane::NotApplicable)
        .expect("check");
    assert_eq!((o.verdict, o.reason), (Verdict::FailEnforce, Reason::ValidationFailure));
    let detail = o.detail.as_deref().unwrap_or_default().to_string();
    assert!(
        detail.contains("trust anchors cannot be read") && detail.contains("no-such-roots.pem"),
        "{detail}"
    );
    // A file of no roots at all.
    let empty = s.write_roots("empty.pem", "not a certificate\n");
    let o = s
        .process(&empty)
        .check_with("example.test", "mx.example.test", Tls::Chain(pem.as_bytes()), Dane::NotApplicable)
        .expect("check");
    assert_eq!((o.verdict, o.reason), (Verdict::FailEnforce, Reason::ValidationFailure));
    assert!(o.detail.as_deref().unwrap_or_default().contains("no PEM `CERTIFICATE` block"), "{:?}", o.detail);
    assert_eq!(s.remembered(), Vec::<(String, u64)>::new());
}
