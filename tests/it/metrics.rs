//! Metrics (README "Metrics"): `mtasts serve --metrics` scraped over HTTP and parsed with the
//! Prometheus project's own text-format parser (Python `prometheus_client`), the Grafana
//! dashboard checked against what `/metrics` serves, and `mtasts stats` summing the counters of
//! two processes through the store.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use mtasts_fixtures::world::{World, policy};
use serde_json::Value;

/// A parsed exposition: family name -> (type, samples as (sample name, labels, value)).
type Families = BTreeMap<String, (String, Vec<(String, BTreeMap<String, String>, f64)>)>;

/// Parses Prometheus text with `prometheus_client.parser` (the reference parser).
fn parse(text: &str) -> Families {
    const SCRIPT: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for f in text_string_to_metric_families(sys.stdin.read()):
    out[f.name] = [f.type, [[s.name, s.labels, s.value] for s in f.samples]]
print(json.dumps(out))
"#;
    let mut child = Command::new("python3")
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("python3 with prometheus_client is needed (.ci/run installs it): {e}"));
    child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write");
    let out = child.wait_with_output().expect("parser");
    assert!(
        out.status.success(),
        "the parser refused the text: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("parser output")
}

/// The value of one sample (`name` as served, e.g. `..._total`), with these labels exactly.
fn value(f: &Families, name: &str, labels: &[(&str, &str)]) -> f64 {
    let want: BTreeMap<String, String> = labels.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
    f.values()
        .flat_map(|(_, s)| s)
        .find(|(n, l, _)| n == name && *l == want)
        .map(|(_, _, v)| *v)
        .unwrap_or_else(|| panic!("no sample {name}{labels:?}"))
}

/// A running `mtasts serve` with metrics.
struct Server {
    child: Child,
    socketmap: u16,
    metrics: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn port_of(line: &str, prefix: &str) -> u16 {
    line.trim()
        .strip_prefix(prefix)
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected line {line:?}"))
}

impl Server {
    /// Starts `mtasts serve` with `--metrics inet:127.0.0.1:0` (or without the flag when the
    /// configuration names `metrics_listen`).
    fn start(config: &Path, flag: bool) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mtasts"));
        cmd.args(["serve", "--config"]).arg(config).args(["--listen", "inet:127.0.0.1:0"]);
        if flag {
            cmd.args(["--metrics", "inet:127.0.0.1:0"]);
        }
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("start mtasts serve");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let (mut first, mut second) = (String::new(), String::new());
        stdout.read_line(&mut first).expect("listening line");
        stdout.read_line(&mut second).expect("metrics line");
        Self { socketmap: port_of(&first, "listening on "), metrics: port_of(&second, "metrics on "), child }
    }

    fn lookup(&self, key: &str) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.socketmap)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
        let payload = format!("mtasts {key}");
        s.write_all(format!("{}:{payload},", payload.len()).as_bytes()).expect("send");
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while !buf.ends_with(b",") || !reply_complete(&buf) {
            let n = s.read(&mut byte).expect("read");
            assert!(n == 1, "connection closed after {:?}", String::from_utf8_lossy(&buf));
            buf.push(byte[0]);
        }
        let text = String::from_utf8(buf).expect("utf-8");
        let (_, rest) = text.split_once(':').expect("netstring");
        rest.trim_end_matches(',').to_owned()
    }

    /// One HTTP request to the metrics listener: (status line, body).
    fn http(&self, request: &str) -> (String, String) {
        let mut s = TcpStream::connect(("127.0.0.1", self.metrics)).expect("connect metrics");
        s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
        s.write_all(request.as_bytes()).expect("send");
        let mut raw = String::new();
        s.read_to_string(&mut raw).expect("read");
        let (head, body) = raw.split_once("\r\n\r\n").expect("HTTP head");
        (head.lines().next().unwrap_or("").to_owned(), body.to_owned())
    }

    fn scrape(&self) -> (String, Families) {
        let (status, body) = self.http("GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
        assert_eq!(status, "HTTP/1.1 200 OK");
        let parsed = parse(&body);
        (body, parsed)
    }
}

fn reply_complete(buf: &[u8]) -> bool {
    let Some(colon) = buf.iter().position(|&b| b == b':') else { return false };
    let len: usize =
        std::str::from_utf8(&buf[..colon]).ok().and_then(|l| l.parse().ok()).unwrap_or(usize::MAX);
    buf.len() == colon + 1 + len + 1
}

fn world(name: &str) -> World {
    let w = World::start(&format!("metrics-{name}")).expect("fixtures");
    w.publish("enforce.test", "e1", &policy("enforce", &["mx.enforce.test"]));
    w.publish("testing.test", "t1", &policy("testing", &["mx.testing.test"]));
    w
}

fn store_config(w: &World, extra: &str) -> std::path::PathBuf {
    let store = w.path("store.sqlite");
    w.write_config(&format!("[cache]\npath = \"{}\"\n{extra}", store.display()))
}

#[test]
fn serve_metrics_count_lookups_and_parse() {
    let w = world("serve");
    let server = Server::start(&store_config(&w, "[serve]\nrefresh_interval_s = 3600\n"), true);
    assert!(server.lookup("enforce.test").starts_with("OK secure"));
    assert!(server.lookup("enforce.test").starts_with("OK secure"));
    assert_eq!(server.lookup("testing.test"), "NOTFOUND ");
    assert_eq!(server.lookup("nosuch.test"), "NOTFOUND ");
    assert_eq!(server.lookup("[192.0.2.1]"), "NOTFOUND ");

    // The refresher's first pass runs at start, on its own thread: wait until it is counted.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (text, m) = loop {
        let (text, m) = server.scrape();
        if value(&m, "mtasts_serve_refresher_runs_total", &[]) >= 1.0 {
            break (text, m);
        }
        assert!(Instant::now() < deadline, "the refresher never ran:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(value(&m, "mtasts_serve_lookups_total", &[("reply", "ok-secure")]), 2.0, "{text}");
    assert_eq!(value(&m, "mtasts_serve_lookups_total", &[("reply", "notfound")]), 3.0, "{text}");
    assert_eq!(value(&m, "mtasts_serve_lookups_total", &[("reply", "temp")]), 0.0);
    assert_eq!(value(&m, "mtasts_serve_connections_total", &[]), 5.0);
    // enforce.test: fetched, then from memory; testing.test fetched; nosuch.test asked DNS.
    assert_eq!(value(&m, "mtasts_policy_lookups_total", &[("layer", "network")]), 2.0, "{text}");
    assert_eq!(value(&m, "mtasts_policy_lookups_total", &[("layer", "memory")]), 1.0, "{text}");
    assert_eq!(value(&m, "mtasts_policy_lookups_total", &[("layer", "dns")]), 1.0, "{text}");
    assert_eq!(value(&m, "mtasts_discoveries_total", &[("result", "record")]), 2.0);
    assert_eq!(value(&m, "mtasts_discoveries_total", &[("result", "no-record")]), 1.0);
    assert_eq!(value(&m, "mtasts_fetches_total", &[("result", "ok")]), 2.0);
    assert_eq!(value(&m, "mtasts_fetch_seconds_count", &[]), 2.0);
    assert_eq!(value(&m, "mtasts_fetch_seconds_bucket", &[("le", "+Inf")]), 2.0);
    assert_eq!(value(&m, "mtasts_dns_lookup_seconds_count", &[("kind", "txt")]), 3.0);
    assert!(value(&m, "mtasts_dns_lookup_seconds_sum", &[("kind", "txt")]) > 0.0);
    assert_eq!(value(&m, "mtasts_policies_stored", &[("mode", "enforce")]), 1.0, "{text}");
    assert_eq!(value(&m, "mtasts_policies_stored", &[("mode", "testing")]), 1.0);
    assert_eq!(value(&m, "mtasts_tlsrpt_reports", &[("state", "pending")]), 0.0);
    assert_eq!(value(&m, "mtasts_store_up", &[]), 1.0);
    assert_eq!(m.get("mtasts_serve_lookups").map(|(t, _)| t.as_str()), Some("counter"));
    assert_eq!(m.get("mtasts_dns_lookup_seconds").map(|(t, _)| t.as_str()), Some("histogram"));

    // The socketmap side moved, the HTTP side did not count itself.
    assert!(server.lookup("enforce.test").starts_with("OK secure"));
    let (_, m) = server.scrape();
    assert_eq!(value(&m, "mtasts_serve_lookups_total", &[("reply", "ok-secure")]), 3.0);
    assert_eq!(value(&m, "mtasts_policy_lookups_total", &[("layer", "memory")]), 2.0);

    // Only /metrics, only GET and HEAD.
    let (status, _) = server.http("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    let (status, _) = server.http("POST /metrics HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
    let (status, body) = server.http("HEAD /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!((status.as_str(), body.as_str()), ("HTTP/1.1 200 OK", ""));
}

#[test]
fn metrics_listen_from_the_configuration_and_bad_addresses() {
    let w = world("config");
    let config = store_config(&w, "[serve]\nrefresh_interval_s = 0\nmetrics_listen = \"inet:127.0.0.1:0\"\n");
    let server = Server::start(&config, false);
    assert_eq!(server.lookup("nosuch.test"), "NOTFOUND ");
    let (_, m) = server.scrape();
    assert_eq!(value(&m, "mtasts_serve_lookups_total", &[("reply", "notfound")]), 1.0);
    drop(server);

    let out = Command::new(env!("CARGO_BIN_EXE_mtasts"))
        .args(["serve", "--config"])
        .arg(&config)
        .args(["--listen", "inet:127.0.0.1:0", "--metrics", "unix:/tmp/metrics.sock"])
        .output()
        .expect("run mtasts serve");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("metrics address `unix:/tmp/metrics.sock`") && stderr.contains("TCP"),
        "{stderr}"
    );
}

/// Metric names used in a PromQL expression (`mtasts_...`).
fn names_in(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("mtasts_") {
        let tail = &rest[at..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        names.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

fn exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr" | "query", Value::String(s)) => out.push(s.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

#[test]
fn the_grafana_dashboard_names_only_served_metrics() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/grafana/mtasts.json");
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("dashboard")).expect("JSON");
    assert!(dashboard["panels"].as_array().is_some_and(|p| p.len() >= 6), "panels");
    let mut all = Vec::new();
    exprs(&dashboard, &mut all);
    let used: BTreeSet<String> = all.iter().flat_map(|e| names_in(e)).collect();
    assert!(used.len() >= 8, "{used:?}");

    let w = world("grafana");
    let server = Server::start(&store_config(&w, "[serve]\nrefresh_interval_s = 0\n"), true);
    assert!(server.lookup("enforce.test").starts_with("OK secure"));
    let (text, m) = server.scrape();
    // Served names: every sample name, and every family name (a family may have no sample yet).
    let served: BTreeSet<String> = m
        .iter()
        .flat_map(|(f, (_, s))| std::iter::once(f.clone()).chain(s.iter().map(|(n, _, _)| n.clone())))
        .collect();
    for name in &used {
        assert!(served.contains(name), "the dashboard uses {name}, which /metrics does not serve:\n{text}");
    }
}

fn mtasts(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mtasts"))
        .args(args)
        .env("MTASTS_CONFIG", config)
        .output()
        .expect("run mtasts")
}

#[test]
fn stats_sums_the_counters_of_two_processes() {
    let w = world("stats");
    let config = store_config(&w, "");
    for _ in 0..2 {
        let out = mtasts(&config, &["check", "enforce.test", "--mx", "mx.enforce.test"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let out = mtasts(&config, &["stats", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let counter = |name: &str, labels: Value| {
        v["counters"]
            .as_array()
            .expect("counters")
            .iter()
            .find(|c| c["name"] == name && c["labels"] == labels)
            .map(|c| c["value"].as_u64().expect("value"))
            .unwrap_or_else(|| panic!("no {name} {labels} in {v}"))
    };
    let pass = serde_json::json!({"verdict": "pass", "reason": "none", "mode": "enforce"});
    assert_eq!(counter("mtasts_verdicts_total", pass), 2, "one check per process");
    // The first process fetched; the second found the policy in the store.
    assert_eq!(counter("mtasts_policy_lookups_total", serde_json::json!({"layer": "network"})), 1);
    assert_eq!(counter("mtasts_policy_lookups_total", serde_json::json!({"layer": "store"})), 1);
    assert_eq!(counter("mtasts_fetches_total", serde_json::json!({"result": "ok"})), 1);
    assert_eq!(counter("mtasts_discoveries_total", serde_json::json!({"result": "record"})), 2);
    let txt = v["histograms"]
        .as_array()
        .expect("histograms")
        .iter()
        .find(|h| h["name"] == "mtasts_dns_lookup_seconds" && h["labels"]["kind"] == "txt")
        .expect("txt histogram");
    assert_eq!(txt["count"], 2);
    assert_eq!(
        txt["buckets"].as_array().and_then(|b| b.last()).map(|b| &b["le"]),
        Some(&Value::from("+Inf"))
    );
    assert!(v["store"].as_str().is_some_and(|s| s.ends_with("store.sqlite")), "{v}");

    // The default output is Prometheus text that the reference parser reads.
    let out = mtasts(&config, &["stats"]);
    assert!(out.status.success());
    let m = parse(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(
        value(&m, "mtasts_verdicts_total", &[("verdict", "pass"), ("reason", "none"), ("mode", "enforce")]),
        2.0
    );

    // No store, no sums: a clear error.
    let memory = w.write_config("[cache]\npath = \"memory\"\n");
    let out = mtasts(&memory, &["stats"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("memory"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
