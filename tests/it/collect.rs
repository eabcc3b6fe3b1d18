//! TLSRPT datagrams (Postfix 3.10, libtlsrpt's format; docs/tlsrpt-collect.md) against the
//! reference receiver: the same datagrams, built here from the format's description, go to
//! `mtasts serve --tlsrpt-socket` and to sys4's `tlsrpt-reporter` 0.6.0 collector
//! (tests/tlsrpt/reference_collect.py, `pip install tlsrpt-reporter==0.6.0`); the daily reports
//! of both sides must hold the same policies, counts and failure details (report ids and dates
//! aside). Malformed and oversized datagrams are dropped by mtasts, counted and logged, and the
//! server keeps serving.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::gunzip_json;
use mtasts::tlsrpt::report::Day;
use parking_lot::Mutex;
use serde_json::{Value, json};

const RECORD: &str = "v=TLSRPTv1; rua=mailto:reports@reports.test";

/// One datagram as libtlsrpt writes it: domain `d`, TLSRPT record `pr`, the policies.
fn datagram(d: &str, policies: Vec<Value>) -> Value {
    json!({"dpv": "1", "d": d, "pr": RECORD, "policies": policies})
}

/// A policy entry: libtlsrpt's number for its type (1 tlsa, 2 sts, 9 no-policy-found), the
/// policy domain, its strings and mx patterns (left out when empty, as libtlsrpt does), the
/// failure detail (`None`: a success).
fn policy(kind: u64, domain: &str, strings: &[&str], mx: &[&str], failure: Option<Value>) -> Value {
    let mut p = json!({"policy-type": kind, "policy-domain": domain});
    if !strings.is_empty() {
        p["policy-string"] = json!(strings);
    }
    if !mx.is_empty() {
        p["mx-host"] = json!(mx);
    }
    match failure {
        Some(f) => {
            p["failure-details"] = json!([f]);
            p["t"] = json!(1);
            p["f"] = json!(1);
        }
        None => {
            p["t"] = json!(0);
            p["f"] = json!(0);
        }
    }
    p
}

const STS: &[&str] =
    &["version: STSv1", "mode: enforce", "mx: mx1.sts.test", "mx: *.backup.sts.test", "max_age: 604800"];
const STS_MX: &[&str] = &["mx1.sts.test", "*.backup.sts.test"];
const TLSA: &[&str] = &["3 1 1 0a0b0c0d0e0f", "2 0 1 ffeeddccbbaa"];

fn sts(failure: Option<Value>) -> Value {
    policy(2, "sts.test", STS, STS_MX, failure)
}

/// The datagrams of the test: successes and every failure type under `sts` and `tlsa`
/// policies, details full and partial, IPv6, a session under two policies, `no-policy-found`.
/// Returns them with the number of policy results they carry.
fn datagrams() -> (Vec<Value>, usize) {
    let mut out = Vec::new();
    for _ in 0..5 {
        out.push(datagram("sts.test", vec![sts(None)]));
    }
    // Each TLS negotiation and MTA-STS failure code, with every detail the format has.
    for (i, code) in [201, 202, 203, 204, 205, 301, 302, 303].into_iter().enumerate() {
        let f = json!({"c": code, "s": "192.0.2.1", "n": "mx1.sts.test", "h": "mx1.sts.test ESMTP ready",
                       "r": format!("198.51.100.{}", 10 + i), "a": "https://sts.test/tls-help",
                       "f": format!("reason for {code}")});
        out.push(datagram("sts.test", vec![sts(Some(f))]));
    }
    // The same failure three times: one entry, failed-session-count 3; and details left out.
    for _ in 0..3 {
        out.push(datagram(
            "sts.test",
            vec![sts(Some(json!({"c": 203, "n": "mx2.backup.sts.test", "r": "2001:db8::25"})))],
        ));
    }
    out.push(datagram("sts.test", vec![sts(Some(json!({"c": 301})))]));
    // DANE: the tlsa policy of the MX host, under the recipient domain's report.
    let tlsa = |failure| policy(1, "mx.dane.test", TLSA, &[], failure);
    for _ in 0..4 {
        out.push(datagram("dane.test", vec![tlsa(None)]));
    }
    for code in [304, 305, 306, 201, 203] {
        let f = json!({"c": code, "s": "2001:db8:1::1", "n": "mx.dane.test", "r": "2001:db8:2::25",
                       "f": format!("dane {code}")});
        out.push(datagram("dane.test", vec![tlsa(Some(f))]));
    }
    // A tlsa policy whose domain is the report's, without records (dnssec-invalid).
    out.push(datagram(
        "dane.test",
        vec![policy(1, "dane.test", &[], &[], Some(json!({"c": 305, "n": "dane.test"})))],
    ));
    // One session judged under both an sts and a tlsa policy.
    let both_sts = || {
        policy(
            2,
            "both.test",
            &["version: STSv1", "mode: testing", "mx: mx.both.test", "max_age: 86400"],
            &["mx.both.test"],
            None,
        )
    };
    for _ in 0..2 {
        out.push(datagram("both.test", vec![both_sts(), policy(1, "mx.both.test", TLSA, &[], None)]));
    }
    out.push(datagram(
        "both.test",
        vec![
            policy(
                2,
                "both.test",
                &["version: STSv1", "mode: testing", "mx: mx.both.test", "max_age: 86400"],
                &["mx.both.test"],
                Some(json!({"c": 202, "n": "mx.both.test", "r": "192.0.2.77"})),
            ),
            policy(
                1,
                "mx.both.test",
                TLSA,
                &[],
                Some(json!({"c": 304, "n": "mx.both.test", "r": "192.0.2.77"})),
            ),
        ],
    ));
    // No policy: successes and a STARTTLS failure.
    for _ in 0..3 {
        out.push(datagram("plain.test", vec![policy(9, "plain.test", &[], &[], None)]));
    }
    out.push(datagram(
        "plain.test",
        vec![policy(
            9,
            "plain.test",
            &[],
            &[],
            Some(json!({"c": 201, "n": "mx.plain.test", "s": "192.0.2.1"})),
        )],
    ));
    let results = out.iter().map(|d| d["policies"].as_array().expect("policies").len()).sum();
    (out, results)
}

/// What both sides must agree on in one report: per policy (type, domain, strings, mx), the
/// success and failure counts and the failure details with their counts.
type Normal = BTreeMap<String, (u64, u64, BTreeMap<String, u64>)>;

fn normalise(report: &Value) -> Normal {
    let mut out = Normal::new();
    for p in report["policies"].as_array().expect("policies") {
        let pol = &p["policy"];
        let list = |k: &str| pol.get(k).cloned().unwrap_or(json!([]));
        let key = json!([pol["policy-type"], pol["policy-domain"], list("policy-string"), list("mx-host")])
            .to_string();
        let mut details = BTreeMap::new();
        for f in p.get("failure-details").and_then(Value::as_array).into_iter().flatten() {
            let mut f: BTreeMap<String, Value> =
                f.as_object().expect("detail").iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            let n = f.remove("failed-session-count").and_then(|n| n.as_u64()).expect("failed-session-count");
            *details.entry(serde_json::to_string(&f).expect("json")).or_insert(0) += n;
        }
        let s = &p["summary"];
        let counts = (
            s["total-successful-session-count"].as_u64().expect("successes"),
            s["total-failure-session-count"].as_u64().expect("failures"),
            details,
        );
        assert!(out.insert(key.clone(), counts).is_none(), "policy {key} twice");
    }
    out
}

fn today() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    Day::from_unix(now).start_datetime()[..10].to_owned()
}

/// `mtasts serve` with a TLSRPT socket: its stdout lines up to `tlsrpt on`, its stderr collected.
struct Serve {
    child: Child,
    stderr: Arc<Mutex<String>>,
    /// The socketmap's `inet:127.0.0.1:PORT`.
    listen: String,
}

impl Serve {
    fn start(config: &Path, socket: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mtasts"))
            .args(["serve", "--listen", "inet:127.0.0.1:0", "--config"])
            .arg(config)
            .arg("--tlsrpt-socket")
            .arg(socket)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start mtasts serve");
        let stderr = crate::common::collect_stderr(&mut child);
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            if stdout.read_line(&mut line).expect("stdout") == 0 {
                panic!("mtasts serve ended: {lines:?} {}", stderr.lock());
            }
            if line.starts_with("tlsrpt on unix:") {
                assert_eq!(line.trim(), format!("tlsrpt on unix:{}", socket.display()));
                break;
            }
            lines.push(line);
        }
        let listen = lines
            .iter()
            .find_map(|l| l.trim().strip_prefix("listening on inet:"))
            .unwrap_or_else(|| panic!("no listening line in {lines:?}"))
            .to_owned();
        Self { child, stderr, listen }
    }

    /// One socketmap lookup: the reply netstring's payload.
    fn lookup(&self, key: &str) -> String {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(&self.listen).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
        let req = format!("postfix {key}");
        s.write_all(format!("{}:{req},", req.len()).as_bytes()).expect("write");
        let mut reply = Vec::new();
        let mut byte = [0u8; 1];
        while !reply.ends_with(b",") {
            assert_eq!(s.read(&mut byte).expect("read"), 1, "the connection closed: {reply:?}");
            reply.push(byte[0]);
        }
        let text = String::from_utf8(reply).expect("utf-8");
        let (_, payload) = text.split_once(':').expect("netstring");
        payload.trim_end_matches(',').to_owned()
    }

    /// SIGTERM, then waits for the exit (flushing the counts taken).
    fn stop(&mut self) -> String {
        let status =
            Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("kill");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(status.success(), "{status}: {}", self.stderr.lock());
                break;
            }
            assert!(Instant::now() < deadline, "mtasts serve did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stderr.lock().clone()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// COLL-1..COLL-10 against tlsrpt-reporter 0.6.0: the same datagrams make the same reports.
#[test]
fn rpt_26_coll_reports_match_the_reference_collector() {
    let w = mtasts_fixtures::world::World::start("collect").expect("fixtures");
    let domains = ["sts.test", "dane.test", "both.test", "plain.test"];
    for d in domains {
        w.dns.set_txt1(&format!("_smtp._tls.{d}"), &[RECORD]);
    }
    let config = w.write_config(&format!(
        "[cache]\npath = \"{}\"\n[report]\norganization = \"Test Sender\"\ncontact = \"tlsrpt@sender.test\"\n\
         sendmail = [\"/bin/true\"]\n[serve]\nrefresh_interval_s = 0\ntlsrpt_socket_mode = \"0620\"\n",
        w.path("store.sqlite").display()
    ));
    let (datagrams, results) = datagrams();
    let dgdir = w.path("datagrams");
    std::fs::create_dir_all(&dgdir).expect("dir");
    for (i, d) in datagrams.iter().enumerate() {
        std::fs::write(dgdir.join(format!("{i:04}.json")), d.to_string()).expect("write");
    }

    // mtasts: every datagram in one burst, then malformed and oversized ones in between more.
    let socket = w.path("tlsrpt.sock");
    let mut serve = Serve::start(&config, &socket);
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&socket).expect("socket file").permissions().mode() & 0o777;
    assert_eq!(mode, 0o620, "[serve] tlsrpt_socket_mode applies to the socket file");
    let sender = UnixDatagram::unbound().expect("socket");
    let bad: Vec<Vec<u8>> = vec![
        b"not json".to_vec(),
        br#"{"d":"sts.test","pr":"x","policies":[{"policy-type":2,"t":1,"f":1}]}"#.to_vec(),
        br#"{"dpv":"9","d":"sts.test","pr":"x","policies":[{"policy-type":2,"t":0,"f":0}]}"#.to_vec(),
        vec![b' '; 70_000],
    ];
    let (first, second) = datagrams.split_at(datagrams.len() / 2);
    for d in first {
        sender.send_to(d.to_string().as_bytes(), &socket).expect("send");
    }
    for b in &bad {
        sender.send_to(b, &socket).expect("send");
    }
    for d in second {
        sender.send_to(d.to_string().as_bytes(), &socket).expect("send");
    }
    // The socketmap still answers after the bad datagrams.
    assert_eq!(serve.lookup("nothing.test"), "NOTFOUND ");
    let stderr = serve.stop();
    assert!(
        stderr.contains(&format!("TLSRPT datagrams: {} counted, {} dropped", datagrams.len(), bad.len())),
        "{stderr}"
    );
    assert!(stderr.contains("TLSRPT datagram dropped: not JSON"), "{stderr}");
    assert!(!socket.exists(), "the socket file is removed at exit");

    let out_dir = w.path("out");
    let out = Command::new(env!("CARGO_BIN_EXE_mtasts"))
        .args(["report", "build", "--date", &today(), "--out"])
        .arg(&out_dir)
        .env("MTASTS_CONFIG", &config)
        .output()
        .expect("report build");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("4 report(s) built"), "{text}");
    let mut ours = BTreeMap::new();
    for entry in std::fs::read_dir(&out_dir).expect("out") {
        let path = entry.expect("entry").path();
        let report = gunzip_json(&path);
        let domain = report["policies"][0]["policy"]["policy-domain"].as_str().expect("domain").to_owned();
        let name = path.file_name().expect("name").to_string_lossy().to_string();
        let domain =
            domains.iter().find(|d| name.contains(&format!("!{d}!"))).map_or(domain, |d| (*d).to_owned());
        ours.insert(domain, report);
    }
    // The reports validate against the RFC 8460 schema, as the engine's own do.
    let files: Vec<PathBuf> =
        std::fs::read_dir(&out_dir).expect("out").map(|e| e.expect("e").path()).collect();
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let status = Command::new("python3")
        .arg(manifest.join("tests/tlsrpt/check.py"))
        .arg("schema")
        .arg(manifest.join("tests/tlsrpt/report.schema.json"))
        .args(&files)
        .status()
        .expect("python3");
    assert!(status.success(), "the reports validate against the schema");

    // The reference: the same datagrams through tlsrpt-reporter's collector, fetcher and reportd.
    let refdir = w.path("reference");
    std::fs::create_dir_all(&refdir).expect("dir");
    let out = Command::new("python3")
        .arg(manifest.join("tests/tlsrpt/reference_collect.py"))
        .arg(&refdir)
        .arg(&dgdir)
        .arg(results.to_string())
        .output()
        .unwrap_or_else(|e| {
            panic!("python3 is needed (with tlsrpt-reporter==0.6.0, .ci/run installs it): {e}")
        });
    assert!(
        out.status.success(),
        "reference_collect.py (pip install tlsrpt-reporter==0.6.0): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: BTreeMap<String, Value> = serde_json::from_slice(&out.stdout).expect("reference JSON");

    assert_eq!(theirs.keys().collect::<Vec<_>>(), ours.keys().collect::<Vec<_>>(), "the same report domains");
    for (domain, report) in &theirs {
        let mine = &ours[domain];
        for k in ["organization-name", "contact-info"] {
            assert_eq!(report[k], mine[k], "{domain}: {k}");
        }
        let (a, b) = (normalise(mine), normalise(report));
        assert_eq!(a, b, "{domain}: mtasts (left) and tlsrpt-reporter (right) differ");
    }
    // What the comparison covered, so that it cannot pass on empty reports.
    let all: Vec<Normal> = ours.values().map(normalise).collect();
    let policies: usize = all.iter().map(BTreeMap::len).sum();
    let successes: u64 = all.iter().flat_map(|n| n.values().map(|c| c.0)).sum();
    let failures: u64 = all.iter().flat_map(|n| n.values().map(|c| c.1)).sum();
    assert_eq!((policies, successes, failures), (6, 5 + 4 + 2 * 2 + 3, 12 + 6 + 2 + 1));
    let types: std::collections::BTreeSet<String> = ours
        .values()
        .flat_map(|r| r["policies"].as_array().expect("p").clone())
        .flat_map(|p| p["failure-details"].as_array().cloned().unwrap_or_default())
        .map(|f| f["result-type"].as_str().expect("type").to_owned())
        .collect();
    assert_eq!(types.len(), 11, "every result type: {types:?}");
}

/// The socket path is checked before anything is served: a relative path, a file that is not a
/// socket, and a socket another process reads are errors naming the key, and the server exits.
#[test]
fn coll_bad_socket_paths_stop_the_server() {
    let dir = std::env::temp_dir().join(format!("mtasts-collect-paths-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("mtasts.toml");
    std::fs::write(&config, "[cache]\npath = \"memory\"\n[serve]\nrefresh_interval_s = 0\n").expect("config");
    let run = |socket: &Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_mtasts"))
            .args(["serve", "--listen", "inet:127.0.0.1:0", "--config"])
            .arg(&config)
            .arg("--tlsrpt-socket")
            .arg(socket)
            .output()
            .expect("mtasts serve");
        assert!(!out.status.success(), "{socket:?}: the server must not start");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = run(Path::new("relative/tlsrpt.sock"));
    assert!(e.contains("--tlsrpt-socket relative/tlsrpt.sock: write the absolute path"), "{e}");
    let file = dir.join("file");
    std::fs::write(&file, "x").expect("file");
    let e = run(&file);
    assert!(e.contains("the file exists and is not a socket"), "{e}");
    assert_eq!(std::fs::read_to_string(&file).expect("file"), "x", "left alone");
    let busy = dir.join("busy.sock");
    let _reader = UnixDatagram::bind(&busy).expect("bind");
    let e = run(&busy);
    assert!(e.contains("another process reads that socket"), "{e}");
    assert!(busy.exists(), "left alone");
    // A socket file nothing reads any more is replaced.
    let stale = dir.join("stale.sock");
    drop(UnixDatagram::bind(&stale).expect("bind"));
    let mut serve = Serve::start(&config, &stale);
    UnixDatagram::unbound()
        .expect("socket")
        .send_to(br#"{"d":"x.test","pr":"v=TLSRPTv1; rua=mailto:a@x.test","policies":[{"policy-type":9,"t":0,"f":0}]}"#, &stale)
        .expect("send");
    assert!(serve.stop().contains("TLSRPT datagrams: 1 counted, 0 dropped"));
    let _ = std::fs::remove_dir_all(&dir);
}
