//! TLSRPT end to end: sessions counted by engines in several processes add up exactly in the
//! store; `mtasts report build` makes schema-valid reports with the right counts for testing and
//! enforce domains (and none for `mode: none` or domains without a TLSRPT record); `mtasts report
//! send` posts to a local HTTPS collector (503, then 201), mails through a `sendmail -t` stand-in,
//! and neither loses nor duplicates a report across runs.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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
            "[cache]\npath = \"{}\"\n[report]\norganization = \"Test Sender\"\ncontact = \"tlsrpt@sender.test\"\n\
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
