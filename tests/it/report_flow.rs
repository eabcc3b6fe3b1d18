//! TLSRPT end to end: sessions counted by engines in several processes add up exactly in the
//! store; `mtasts report build` makes schema-valid reports with the right counts for testing and
//! enforce domains (and none for `mode: none` or domains without a TLSRPT record); `mtasts report
//! send` posts to a local HTTPS collector (503, then 201), mails through a `sendmail -t` stand-in,
//! and neither loses nor duplicates a report across runs.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::gunzip_json;
use mtasts::cache::{CountStore, SqliteStore};
use mtasts::tlsrpt::report::Day;
use mtasts_fixtures::https::Response;
use mtasts_fixtures::pki::pki;
use serde_json::Value;

const WORKER_ENV: &str = "MTASTS_REPORT_WORKER";

/// The shared fixture world, with a SQLite store, a `[report]` section and a `sendmail -t`
/// stand-in that keeps each mail in the directory.
struct World(mtasts_fixtures::world::World);

impl std::ops::Deref for World {
    type Target = mtasts_fixtures::world::World;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl World {
    fn new(name: &str) -> Self {
        let w = Self(mtasts_fixtures::world::World::start(&format!("report-{name}")).expect("fixtures"));
        let sendmail = w.path("sendmail.sh");
        std::fs::write(&sendmail, format!("#!/bin/sh\ncat > {}/mail.$$.eml\n", w.dir.display()))
            .expect("script");
        std::fs::set_permissions(&sendmail, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        w.write_config(&format!(
            "[cache]\npath = \"{}\"\n[report]\norganization = \"Test Sender\"\ncontact = \"tlsrpt@sender.test\"\nsend_delay_max_s = 0\n\
             sendmail = [\"{}\"]\n",
            w.path("store.sqlite").display(),
            sendmail.display()
        ));
        w.publish("enforce.test", "e1", "enforce");
        w.publish("testing.test", "t1", "testing");
        w.publish("none.test", "n1", "none");
        w.publish("silent.test", "s1", "enforce"); // no TLSRPT record
        // Reports for enforce.test go to an HTTPS collector, for testing.test by mail.
        let rua = format!("v=TLSRPTv1; rua=https://collector.test:{}/tlsrpt", w.https.addr().port());
        w.dns.set_txt1("_smtp._tls.enforce.test", &[&rua]);
        w.dns.set_a("collector.test", Ipv4Addr::LOCALHOST);
        w.https.set_cert("collector.test", &pki().leaf(&["collector.test"]));
        w.dns.set_txt1("_smtp._tls.testing.test", &["v=TLSRPTv1; rua=mailto:reports@testing.test"]);
        w.dns.set_txt1("_smtp._tls.none.test", &["v=TLSRPTv1; rua=mailto:reports@none.test"]);
        w
    }

    /// A policy of `mode` for `domain` listing `mx.<domain>`, valid a day.
    fn publish(&self, domain: &str, id: &str, mode: &str) {
        let mx = if mode == "none" { String::new() } else { format!("mx: mx.{domain}\n") };
        self.0.publish(domain, id, &format!("version: STSv1\nmode: {mode}\n{mx}max_age: 86400\n"));
    }

    fn config(&self) -> PathBuf {
        self.config_path()
    }

    fn mtasts(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_mtasts"))
            .args(args)
            .env("MTASTS_CONFIG", self.config())
            .output()
            .expect("run")
    }
}

fn today() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    Day::from_unix(now).start_datetime()[..10].to_owned()
}

/// One worker process: `sessions` checks per domain through a real engine, then exit (the
/// engine flushes its counts when dropped).
#[test]
#[ignore = "run by the tests below as a separate process"]
fn report_worker() {
    let Ok(sessions) = std::env::var(WORKER_ENV) else { return };
    let sessions: usize = sessions.parse().expect("number");
    let config =
        mtasts::config::Config::from_file(Path::new(&std::env::var("MTASTS_CONFIG").expect("config")))
            .expect("config");
    let engine = config.build_engine().expect("engine");
    assert!(engine.store_error().is_none(), "{:?}", engine.store_error());
    // A chain from this process's own test PKI, which the configuration (written by the parent
    // process, with its own root) does not trust.
    let good = pki().chains["mx"].pem();
    for i in 0..sessions {
        for d in ["enforce.test", "testing.test", "none.test", "silent.test"] {
            let mx = format!("mx.{d}");
            // Half the sessions without TLS, half with an untrusted certificate.
            let cert = if i % 2 == 0 { None } else { Some(good.as_bytes()) };
            engine.check(d, &mx, cert).expect("check");
        }
        engine
            .record_session(
                "enforce.test",
                "mx.enforce.test",
                None,
                &mtasts::engine::SessionDetails::default(),
            )
            .expect("record");
    }
}

fn run_workers(w: &World, processes: usize, sessions: usize) {
    let children: Vec<_> = (0..processes)
        .map(|_| {
            Command::new(std::env::current_exe().expect("exe"))
                .args(["--exact", "report_flow::report_worker", "--ignored", "--test-threads=1"])
                .env(WORKER_ENV, sessions.to_string())
                .env("MTASTS_CONFIG", w.config())
                .output()
                .expect("worker")
        })
        .collect();
    for out in children {
        assert!(out.status.success(), "worker: {}", String::from_utf8_lossy(&out.stdout));
    }
}

#[test]
fn rpt_counts_from_many_processes_add_up_and_reports_validate() {
    let w = World::new("flow");
    // 4 processes, 50 sessions per domain each: 300 checks + 50 recorded successes per process.
    run_workers(&w, 4, 50);
    let store = SqliteStore::open(&w.dir.join("store.sqlite"), 300).expect("store");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let counts = store.report_counts(Day::from_unix(now)).expect("counts");
    let domains: Vec<String> = counts.domains().map(ToString::to_string).collect();
    assert_eq!(domains, ["enforce.test", "silent.test", "testing.test"], "mode none records nothing");
    for d in ["enforce.test", "testing.test"] {
        let dom = mtasts::Domain::parse(d).expect("d");
        let (successes, failures): (u64, u64) = counts
            .policies(&dom)
            .map(|(_, c)| (c.successes, c.total_failures()))
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        let recorded = if d == "enforce.test" { 200 } else { 0 };
        assert_eq!(successes, recorded, "{d}: successes add up exactly across processes");
        assert_eq!(failures, 200, "{d}: 4 x 50 failed sessions");
    }

    // Build today's reports.
    let out_dir = w.dir.join("out");
    let out = w.mtasts(&["report", "build", "--date", &today(), "--out", out_dir.to_str().expect("utf-8")]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("silent.test: no TLSRPT record, no report"), "{text}");
    assert!(!text.contains("none.test"), "{text}");
    assert!(text.contains("2 report(s) built"), "{text}");
    let files: Vec<PathBuf> =
        std::fs::read_dir(&out_dir).expect("out").map(|e| e.expect("entry").path()).collect();
    assert_eq!(files.len(), 2);
    for f in &files {
        let name = f.file_name().expect("name").to_string_lossy().to_string();
        assert!(name.starts_with("sender.test!") && name.ends_with(".json.gz"), "{name}");
    }
    let checker = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tlsrpt/check.py");
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tlsrpt/report.schema.json");
    let status = Command::new("python3")
        .arg(&checker)
        .arg("schema")
        .arg(&schema)
        .args(&files)
        .status()
        .expect("python3");
    assert!(status.success(), "every report validates against the schema");
    let enforce_file =
        files.iter().find(|f| f.to_string_lossy().contains("!enforce.test!")).expect("enforce report");
    let json: Value = {
        use std::io::Read;
        let mut s = String::new();
        flate2::read::GzDecoder::new(std::fs::File::open(enforce_file).expect("open"))
            .read_to_string(&mut s)
            .expect("gunzip");
        serde_json::from_str(&s).expect("JSON")
    };
    let policy = &json["policies"][0];
    assert_eq!(policy["policy"]["policy-type"], "sts");
    assert_eq!(policy["policy"]["policy-domain"], "enforce.test");
    assert_eq!(policy["summary"]["total-successful-session-count"], 200);
    assert_eq!(policy["summary"]["total-failure-session-count"], 200);
    let types: Vec<&str> = policy["failure-details"]
        .as_array()
        .expect("details")
        .iter()
        .map(|d| d["result-type"].as_str().expect("type"))
        .collect();
    assert!(
        types.contains(&"starttls-not-supported") && types.contains(&"certificate-not-trusted"),
        "{types:?}"
    );

    // Building again queues nothing new.
    let out = w.mtasts(&["report", "build", "--date", &today()]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 report(s) built"));

    // Delivery: the collector first answers 503, then 201; the mail goes to the sendmail stand-in.
    w.https.set_response("collector.test", Response::status(503));
    let out = w.mtasts(&["report", "send"]);
    let sent = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{sent}");
    let mails: Vec<_> = std::fs::read_dir(&w.dir)
        .expect("dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".eml"))
        .collect();
    assert_eq!(mails.len(), 1, "the testing.test report was mailed: {sent}");
    let mail = std::fs::read_to_string(mails[0].path()).expect("mail");
    assert!(
        mail.contains("TLS-Report-Domain: testing.test")
            && mail.contains("TLS-Report-Submitter: sender.test"),
        "{mail}"
    );
    let posts =
        |w: &World| w.https.requests().iter().filter(|r| r.sni.as_deref() == Some("collector.test")).count();
    assert_eq!(posts(&w), 1, "{sent} {:?}", w.https.requests());
    // Not due yet: a plain send does nothing; the retry is scheduled.
    assert_eq!(w.mtasts(&["report", "send"]).status.code(), Some(0));
    assert_eq!(posts(&w), 1);
    w.https.set_response("collector.test", Response::status(201));
    let out = w.mtasts(&["report", "send", "--force"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(posts(&w), 2);
    let post =
        w.https.requests().into_iter().rfind(|r| r.sni.as_deref() == Some("collector.test")).expect("post");
    assert_eq!(post.request_line, "POST /tlsrpt HTTP/1.1");
    assert!(
        post.headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("content-type") && v == "application/tlsrpt+gzip")
    );
    // Delivered: never sent again, and the mail was not sent twice.
    assert_eq!(w.mtasts(&["report", "send", "--force"]).status.code(), Some(0));
    assert_eq!(posts(&w), 2);
    let mails = std::fs::read_dir(&w.dir)
        .expect("dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".eml"))
        .count();
    assert_eq!(mails, 1);
    let out = w.mtasts(&["report", "list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.matches("delivered").count(), 2, "{text}");
}

const DANE_WORKER_ENV: &str = "MTASTS_DANE_REPORT_WORKER";
const DANE_CHAIN_ENV: &str = "MTASTS_DANE_REPORT_CHAIN";

/// A DANE world: signed zones (`test.`, `example.test.`) with MTA-STS policies for `example.test`
/// (testing, `mx: mx.example.test`) and for `mx.example.test` itself (enforce), TLSRPT records
/// for the recipient domain and both MX hosts, and `3 1 1` TLSA records of the parent's `mx` leaf
/// at `mx.example.test` and at `mx2.example.test` (an MX the policy does not list). The engine
/// validates with the zones' trust anchor; counts go to a SQLite store.
fn dane_world() -> World {
    use mtasts_fixtures::dnssec::{AnchorForm, ZoneSet};
    let w = World(mtasts_fixtures::world::World::start("report-dane").expect("fixtures"));
    let chain = &pki().chains["mx"];
    let spki = {
        let cert = rustls_pki_types::CertificateDer::from(chain.der[0].as_slice());
        let ee = webpki::EndEntityCert::try_from(&cert).expect("certificate");
        ring::digest::digest(&ring::digest::SHA256, ee.subject_public_key_info().as_ref()).as_ref().to_vec()
    };
    std::fs::write(w.path("mx-chain.pem"), chain.pem()).expect("chain");
    let txt = |s: &str| hickory_proto::rr::RData::TXT(hickory_proto::rr::rdata::TXT::new(vec![s.to_owned()]));
    let lo = Ipv4Addr::LOCALHOST;
    let mut z = ZoneSet::new("test");
    z.zone("example.test", true);
    z.add("_mta-sts.example.test", txt("v=STSv1; id=d1"))
        .a("mta-sts.example.test", lo)
        .add("_mta-sts.mx.example.test", txt("v=STSv1; id=m1"))
        .a("mta-sts.mx.example.test", lo)
        .add("_smtp._tls.example.test", txt("v=TLSRPTv1; rua=mailto:reports@example.test"))
        .add("_smtp._tls.mx.example.test", txt("v=TLSRPTv1; rua=mailto:reports@mx.example.test"))
        .add("_smtp._tls.mx2.example.test", txt("v=TLSRPTv1; rua=mailto:reports@mx2.example.test"))
        .a("mx.example.test", lo)
        .tlsa("_25._tcp.mx.example.test", 3, 1, 1, &spki)
        .a("mx2.example.test", lo)
        .tlsa("_25._tcp.mx2.example.test", 3, 1, 1, &spki);
    let zones = z.sign();
    std::fs::write(w.path("anchor"), format!("{}\n", zones.trust_anchor(AnchorForm::Ds))).expect("anchor");
    w.dns.serve_zones(zones);
    // The HTTPS side of the policies (their DNS side is in the zones).
    w.0.publish("example.test", "d1", "version: STSv1\nmode: testing\nmx: mx.example.test\nmax_age: 86400\n");
    w.0.publish(
        "mx.example.test",
        "m1",
        "version: STSv1\nmode: enforce\nmx: mx.example.test\nmax_age: 86400\n",
    );
    let sendmail = w.path("sendmail.sh");
    std::fs::write(&sendmail, format!("#!/bin/sh\ncat > {}/mail.$$.eml\n", w.dir.display())).expect("script");
    std::fs::set_permissions(&sendmail, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    w.write_config_text(&format!(
        "[dns]\nnameservers = [\"{}\"]\ntimeout_ms = 10000\ndnssec = \"validate\"\ntrust_anchor = \"{}\"\n\
         [https]\nca_file = \"{}\"\nport = {}\ntimeout_ms = 3000\nconnect_timeout_ms = 2000\n\
         [cache]\npath = \"{}\"\n[report]\norganization = \"Test Sender\"\ncontact = \"tlsrpt@sender.test\"\nsend_delay_max_s = 0\n\
         sendmail = [\"{}\"]\n",
        w.dns.addr(),
        w.path("anchor").display(),
        w.ca_file().display(),
        w.https.addr().port(),
        w.path("store.sqlite").display(),
        sendmail.display()
    ));
    w
}

/// One worker process of the DANE flow: per round, sessions that DANE and MTA-STS both pass, that
/// DANE passes and MTA-STS fails (mx2 is not listed), without TLS, to a domain that is its own
/// MX, and a DANE failure the MTA records itself.
#[test]
#[ignore = "run by the tests below as a separate process"]
fn dane_report_worker() {
    let Ok(sessions) = std::env::var(DANE_WORKER_ENV) else { return };
    let sessions: usize = sessions.parse().expect("number");
    let chain = std::fs::read(std::env::var(DANE_CHAIN_ENV).expect("chain")).expect("chain file");
    let config =
        mtasts::config::Config::from_file(Path::new(&std::env::var("MTASTS_CONFIG").expect("config")))
            .expect("config");
    let engine = config.build_engine().expect("engine");
    let details = mtasts::engine::SessionDetails::default();
    for _ in 0..sessions {
        let o = engine.check("example.test", "mx.example.test", Some(&chain)).expect("check");
        assert_eq!(o.verdict, mtasts::Verdict::Pass, "{o:?}");
        let o = engine.check("example.test", "mx2.example.test", Some(&chain)).expect("check");
        assert_eq!(
            (o.verdict, o.reason),
            (mtasts::Verdict::FailTesting, mtasts::Reason::MxMismatch),
            "{o:?}"
        );
        let o = engine.check("example.test", "mx.example.test", None).expect("check");
        assert_eq!(o.reason, mtasts::Reason::DaneRequired, "{o:?}");
        let o = engine.check("mx.example.test", "mx.example.test", Some(&chain)).expect("check");
        assert_eq!(o.verdict, mtasts::Verdict::Pass, "{o:?}");
        engine
            .record_session("example.test", "mx.example.test", Some(mtasts::Reason::TlsaInvalid), &details)
            .expect("record");
    }
}

/// RPT-18..RPT-21, DANE-4 end to end: DANE sessions judged by engines in two processes through a
/// validating lookup of signed zones add up under `tlsa` policies of the MX hosts next to the
/// `sts` policies; `mtasts report build` makes schema-valid reports, one of them (a domain that
/// is its own MX) with both policies.
#[test]
fn rpt_dane_sessions_from_many_processes_are_reported_under_tlsa() {
    let w = dane_world();
    let children: Vec<_> = (0..2)
        .map(|_| {
            Command::new(std::env::current_exe().expect("exe"))
                .args(["--exact", "report_flow::dane_report_worker", "--ignored", "--test-threads=1"])
                .env(DANE_WORKER_ENV, "10")
                .env(DANE_CHAIN_ENV, w.path("mx-chain.pem"))
                .env("MTASTS_CONFIG", w.config())
                .output()
                .expect("worker")
        })
        .collect();
    for out in children {
        assert!(
            out.status.success(),
            "worker: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out_dir = w.dir.join("out");
    let out = w.mtasts(&["report", "build", "--date", &today(), "--out", out_dir.to_str().expect("utf-8")]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("3 report(s) built"), "{text}");
    let files: Vec<PathBuf> =
        std::fs::read_dir(&out_dir).expect("out").map(|e| e.expect("entry").path()).collect();
    assert_eq!(files.len(), 3, "{files:?}");
    let status = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tlsrpt/check.py"))
        .arg("schema")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tlsrpt/report.schema.json"))
        .args(&files)
        .status()
        .expect("python3");
    assert!(status.success(), "every report validates against the schema");
    let report = |domain: &str| {
        let f = files.iter().find(|f| f.to_string_lossy().contains(&format!("!{domain}!"))).expect(domain);
        gunzip_json(f)
    };
    let policy = |json: &Value, policy_type: &str| -> Value {
        let found: Vec<&Value> = json["policies"]
            .as_array()
            .expect("policies")
            .iter()
            .filter(|p| p["policy"]["policy-type"] == policy_type)
            .collect();
        assert_eq!(found.len(), 1, "{json}");
        found[0].clone()
    };
    let summary = |p: &Value| {
        (
            p["summary"]["total-successful-session-count"].as_u64().expect("n"),
            p["summary"]["total-failure-session-count"].as_u64().expect("n"),
        )
    };
    let details = |p: &Value| {
        let mut d: Vec<(String, u64)> = p["failure-details"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|f| {
                        (
                            f["result-type"].as_str().expect("type").to_owned(),
                            f["failed-session-count"].as_u64().expect("n"),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        d.sort();
        d
    };
    // The recipient domain: MTA-STS's judgement only (2 processes x 10 rounds).
    let json = report("example.test");
    assert_eq!(json["policies"].as_array().expect("policies").len(), 1, "{json}");
    let sts = policy(&json, "sts");
    assert_eq!(summary(&sts), (20, 40));
    assert_eq!(
        details(&sts),
        [("starttls-not-supported".to_owned(), 20), ("validation-failure".to_owned(), 20)]
    );
    // The MX host: DANE's judgement of every session with it, and its own domain's sts policy.
    let json = report("mx.example.test");
    let tlsa = policy(&json, "tlsa");
    assert_eq!(tlsa["policy"]["policy-domain"], "mx.example.test");
    let strings = tlsa["policy"]["policy-string"].as_array().expect("records");
    assert_eq!(strings.len(), 1);
    assert!(strings[0].as_str().expect("record").starts_with("3 1 1 "), "{strings:?}");
    assert_eq!(summary(&tlsa), (40, 40));
    assert_eq!(details(&tlsa), [("starttls-not-supported".to_owned(), 20), ("tlsa-invalid".to_owned(), 20)]);
    let sts = policy(&json, "sts");
    assert_eq!(sts["policy"]["mx-host"], serde_json::json!(["mx.example.test"]));
    assert_eq!(summary(&sts), (20, 0));
    // DANE passed where MTA-STS failed.
    let json = report("mx2.example.test");
    assert_eq!(json["policies"].as_array().expect("policies").len(), 1, "{json}");
    assert_eq!(summary(&policy(&json, "tlsa")), (20, 0));

    // Sent: the MX hosts' reports go to the addresses of their own `_smtp._tls` records.
    let out = w.mtasts(&["report", "send"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let mails: Vec<String> = std::fs::read_dir(&w.dir)
        .expect("dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".eml"))
        .map(|e| std::fs::read_to_string(e.path()).expect("mail"))
        .collect();
    assert_eq!(mails.len(), 3);
    let mx_mail = mails.iter().find(|m| m.contains("TLS-Report-Domain: mx.example.test")).expect("mx mail");
    assert!(mx_mail.contains("reports@mx.example.test"), "{mx_mail}");
    assert!(mx_mail.contains("Policy tlsa: 40 successful sessions, 40 failed sessions"), "{mx_mail}");
}
