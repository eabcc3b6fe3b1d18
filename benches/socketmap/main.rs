//! Socketmap load generator: `mtasts serve` against a do-nothing netstring server (the ceiling of a
//! socketmap round trip on this machine) and, when given, postfix-mta-sts-resolver, all answering
//! from their caches. Reports lookups/s, p50 and p99 at 1, 4 and 32 connections.
//!
//! ```text
//! cargo bench --bench socketmap -- [--seconds 2] [--reps 5] [--conns 1,4,32] [--client-threads 4]
//!     [--resolver-python VENV/bin/python] [--write benches/socketmap/RESULTS.md]
//! ```
//!
//! `bash benches/socketmap/run.sh` prepares the resolver's virtualenv and runs this.
//!
//! How it measures. Each connection has one request outstanding at a time, as a Postfix smtp(8)
//! process does: write the request netstring, read the whole reply, repeat. A few client threads
//! (default 4, at most one per connection: more threads than the 2 cores keep connections busy
//! while one thread waits) each drive an equal share of the connections round-robin: write one request on each of its connections, then read each reply.
//! Latency is the time from a request's write to its reply's last byte. Lookups/s counts the
//! replies of all connections during the measurement window, after a warm-up. Each (server,
//! connections) cell is run `reps` times, interleaved between the servers so that background load
//! hits them alike, and the run with the median rate is reported.
//!
//! The servers:
//!
//! * `null`: this binary with `--null-server`: thread per connection, buffered reads, netstring
//!   parsing, one constant reply per request (the same bytes as mtasts's `enforce` reply), one
//!   write per batch. The same I/O as `mtasts serve`, minus the lookup.
//! * `mtasts serve`: the release binary, with a SQLite store, against the local DNS and HTTPS
//!   fixtures; the policy is fetched by the warm-up lookup, so the measurement is the cached path.
//!   The DNS fixture's query log is checked to be unchanged by the measurement.
//! * `mtasts serve (DANE on)`: the same with `[dns] dnssec = "validate"` (the default of a real
//!   configuration) and the fixture's trust anchor: each lookup also reads the domain's validated
//!   MX RRset and its MX host's TLSA state from the engine's caches before replying (the host has
//!   no TLSA records, so the reply is the same `secure match=` one). The zones are signed at
//!   start-up and every answer has a TTL of 300 s: runs longer than that in total would make the
//!   DANE answers expire and be looked up again, which the query-log check then reports.
//! * `postfix-mta-sts-resolver` (PyPI, asyncio with uvloop): started by `resolver_launcher.py`,
//!   which fills its in-memory cache with the same policies (it resolves through the system
//!   resolver and port 443, which cannot reach the fixtures) and makes any DNS or HTTPS attempt
//!   print a line on stderr, which fails the benchmark. `cache_grace` is one day, so it answers
//!   every request from its cache.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

#[path = "../support/socketmap_client.rs"]
mod socketmap_client;

use hickory_proto::rr::RData;
use hickory_proto::rr::rdata::TXT;
use mtasts_fixtures::dns::DnsServer;
use mtasts_fixtures::dnssec::{AnchorForm, ZoneSet};
use mtasts_fixtures::https::{HttpsServer, Response};
use mtasts_fixtures::pki::pki;
use socketmap_client::{Conn, read_listening_port, request};

const KEY: &str = "enforce.test";
const ENFORCE_REPLY: &str = "OK secure match=mx.enforce.test:.backup.enforce.test servername=hostname";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--null-server") {
        null_server();
        return;
    }
    let opt = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let seconds: f64 = opt("--seconds").map_or(2.0, |s| s.parse().expect("--seconds"));
    let reps: usize = opt("--reps").map_or(5, |s| s.parse().expect("--reps"));
    let conns: Vec<usize> = opt("--conns")
        .map_or_else(|| vec![1, 4, 32], |s| s.split(',').map(|n| n.parse().expect("--conns")).collect());
    let client_threads: usize = opt("--client-threads").map_or(4, |s| s.parse().expect("--client-threads"));
    let resolver_python = opt("--resolver-python").map(PathBuf::from);
    let write = opt("--write").map(PathBuf::from);

    let dir = std::env::temp_dir().join(format!("mtasts-bench-socketmap-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");

    // The servers, each answering `enforce.test` from its cache.
    let fixtures = Fixtures::start(&dir);
    let mut servers: Vec<Target> = Vec::new();
    servers.push(Target::start_null());
    servers.push(Target::start_mtasts(&dir, &fixtures, false));
    servers.push(Target::start_mtasts(&dir, &fixtures, true));
    if let Some(python) = &resolver_python {
        servers.push(Target::start_resolver(&dir, python));
    }
    for s in &mut servers {
        s.warm_up();
    }
    let dns_before = fixtures.dns.queries().len();

    let window = Duration::from_secs_f64(seconds);
    let mut results: Vec<Vec<Vec<Run>>> =
        servers.iter().map(|_| conns.iter().map(|_| Vec::new()).collect()).collect();
    for rep in 0..reps {
        for (ci, &n) in conns.iter().enumerate() {
            for (si, server) in servers.iter().enumerate() {
                let run = measure(server, n, client_threads.min(n).max(1), window);
                eprintln!(
                    "rep {} {:<26} {:>2} conns: {:>9.0} lookups/s  p50 {:>6.1} us  p99 {:>6.1} us",
                    rep + 1,
                    server.name,
                    n,
                    run.rate,
                    run.p50_us,
                    run.p99_us
                );
                results[si][ci].push(run);
            }
        }
    }
    assert_eq!(fixtures.dns.queries().len(), dns_before, "mtasts serve asked DNS during the measurement");
    for s in &mut servers {
        s.check_stderr();
    }

    let medians: Vec<Vec<Run>> = results
        .into_iter()
        .map(|per_conns| {
            per_conns
                .into_iter()
                .map(|mut runs| {
                    runs.sort_by(|a, b| a.rate.total_cmp(&b.rate));
                    runs[runs.len() / 2]
                })
                .collect()
        })
        .collect();
    let report = report(&servers, &conns, &medians, seconds, reps, client_threads);
    println!("{report}");
    if let Some(path) = write {
        write_results(&path, &report);
        eprintln!("wrote {}", path.display());
    }
    for s in &mut servers {
        s.stop();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The median run of one cell.
#[derive(Clone, Copy, Debug)]
struct Run {
    rate: f64,
    p50_us: f64,
    p99_us: f64,
}

/// A server under test.
struct Target {
    name: &'static str,
    port: u16,
    child: Child,
    stderr_file: Option<PathBuf>,
    /// The reply expected for `KEY` (learnt at warm-up).
    reply: Vec<u8>,
}

impl Target {
    fn start_null() -> Self {
        let exe = std::env::current_exe().expect("current exe");
        let mut child = Command::new(exe)
            .arg("--null-server")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the null server");
        let port = read_listening_port(&mut child);
        Self { name: "null (do-nothing) server", port, child, stderr_file: None, reply: Vec::new() }
    }

    /// `mtasts serve`, with DANE (`[dns] dnssec = "validate"` from the fixture's trust anchor) or
    /// without (`off`).
    fn start_mtasts(dir: &Path, fixtures: &Fixtures, dane: bool) -> Self {
        let (tag, dnssec) = if dane {
            ("dane", format!("dnssec = \"validate\"\ntrust_anchor = \"{}\"", dir.join("anchor").display()))
        } else {
            ("plain", "dnssec = \"off\"".to_owned())
        };
        let config = dir.join(format!("mtasts-{tag}.toml"));
        std::fs::write(
            &config,
            format!(
                "[dns]\nnameservers = [\"{}\"]\n{dnssec}\n[https]\nca_file = \"{}\"\nport = {}\n[cache]\npath = \"{}\"\n[serve]\nlisten = \"inet:127.0.0.1:0\"\n",
                fixtures.dns.addr(),
                dir.join("ca.pem").display(),
                fixtures.https.addr().port(),
                dir.join(format!("policies-{tag}.sqlite")).display()
            ),
        )
        .expect("config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_mtasts"))
            .args(["serve", "--config"])
            .arg(&config)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start mtasts serve");
        let port = read_listening_port(&mut child);
        let name = if dane { "mtasts serve (DANE on)" } else { "mtasts serve" };
        Self { name, port, child, stderr_file: None, reply: Vec::new() }
    }

    fn start_resolver(dir: &Path, python: &Path) -> Self {
        let port = free_port();
        let config = dir.join("mta-sts-daemon.yml");
        std::fs::write(
            &config,
            format!(
                "host: 127.0.0.1\nport: {port}\nreuse_port: true\nshutdown_timeout: 1\ncache_grace: 86400\ncache:\n  type: internal\n  options:\n    cache_size: 10000\ndefault_zone:\n  strict_testing: false\n  timeout: 4\n  require_sni: true\n"
            ),
        )
        .expect("resolver config");
        let launcher = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/socketmap/resolver_launcher.py");
        let stderr_file = dir.join("resolver.stderr");
        let child = Command::new(python)
            .arg(launcher)
            .arg("-c")
            .arg(&config)
            .args(["-v", "warn"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_file).expect("stderr file"))
            .spawn()
            .expect("start postfix-mta-sts-resolver");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "postfix-mta-sts-resolver did not start: {}",
                std::fs::read_to_string(&stderr_file).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Self {
            name: "postfix-mta-sts-resolver",
            port,
            child,
            stderr_file: Some(stderr_file),
            reply: Vec::new(),
        }
    }

    /// One lookup (the policy fetch for mtasts), and the reply every measured lookup must give.
    fn warm_up(&mut self) {
        let mut c = Conn::connect(self.port, Duration::from_secs(10));
        let reply = c.roundtrip_any(&request(KEY));
        let text = std::str::from_utf8(&reply).expect("utf-8 reply");
        let payload = text.split_once(':').map_or("", |(_, p)| p.trim_end_matches(','));
        let ok = payload.starts_with("OK secure match=")
            && payload.contains("mx.enforce.test")
            && payload.contains(".backup.enforce.test")
            && payload.ends_with("servername=hostname");
        assert!(ok, "{}: unexpected reply {text:?}", self.name);
        self.reply = reply;
    }

    fn check_stderr(&self) {
        if let Some(path) = &self.stderr_file {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            assert!(!text.contains("NETWORK ATTEMPT"), "{}: tried the network: {text}", self.name);
        }
    }

    fn stop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).and_then(|l| l.local_addr()).expect("free port").port()
}

/// Runs `conns` connections on `threads` client threads for `window` after a warm-up.
fn measure(server: &Target, conns: usize, threads: usize, window: Duration) -> Run {
    let warm = Duration::from_millis(300);
    let barrier = Arc::new(Barrier::new(threads));
    let req = Arc::new(request(KEY));
    let want = Arc::new(server.reply.clone());
    let port = server.port;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let mine = conns / threads + usize::from(t < conns % threads);
            let (barrier, req, want) = (Arc::clone(&barrier), Arc::clone(&req), Arc::clone(&want));
            std::thread::spawn(move || {
                let mut cs: Vec<Conn> =
                    (0..mine).map(|_| Conn::connect(port, Duration::from_secs(10))).collect();
                let mut sent = vec![Instant::now(); mine];
                let mut lat: Vec<u32> = Vec::with_capacity(1 << 20);
                barrier.wait();
                let start = Instant::now();
                let (from, to) = (start + warm, start + warm + window);
                let mut count = 0u64;
                loop {
                    for (c, at) in cs.iter_mut().zip(sent.iter_mut()) {
                        *at = Instant::now();
                        c.send(&req);
                    }
                    let mut done = Instant::now();
                    for (c, at) in cs.iter_mut().zip(sent.iter()) {
                        c.receive(&want);
                        done = Instant::now();
                        if done >= from && done < to {
                            count += 1;
                            lat.push(u32::try_from(done.duration_since(*at).as_nanos()).unwrap_or(u32::MAX));
                        }
                    }
                    if done >= to {
                        break;
                    }
                }
                (count, lat)
            })
        })
        .collect();
    let mut total = 0u64;
    let mut lat = Vec::new();
    for h in handles {
        let (count, l) = h.join().expect("client thread");
        total += count;
        lat.extend(l);
    }
    lat.sort_unstable();
    let pct = |p: usize| {
        lat.get((lat.len() * p / 100).min(lat.len().saturating_sub(1)))
            .map_or(0.0, |&ns| f64::from(ns) / 1000.0)
    };
    Run { rate: total as f64 / window.as_secs_f64(), p50_us: pct(50), p99_us: pct(99) }
}

/// DNS and HTTPS fixtures publishing the policies (only `enforce.test` is measured), from zones
/// signed at start-up: `enforce.test` has the MX host `mx.enforce.test`, which publishes no TLSA
/// records. The trust anchor is written to `anchor` in the directory.
struct Fixtures {
    dns: DnsServer,
    https: HttpsServer,
}

impl Fixtures {
    fn start(dir: &Path) -> Self {
        let dns = DnsServer::start().expect("dns fixture");
        let https = HttpsServer::start().expect("https fixture");
        pki().write_root(&dir.join("ca.pem")).expect("ca");
        let mut zones = ZoneSet::new("test");
        for (domain, body) in [
            (
                "enforce.test",
                "version: STSv1\nmode: enforce\nmx: mx.enforce.test\nmx: *.backup.enforce.test\nmax_age: 604800\n",
            ),
            ("testing.test", "version: STSv1\nmode: testing\nmx: mx.testing.test\nmax_age: 604800\n"),
            ("none.test", "version: STSv1\nmode: none\nmax_age: 604800\n"),
        ] {
            let host = format!("mta-sts.{domain}");
            zones
                .zone(domain, true)
                .add(&format!("_mta-sts.{domain}"), RData::TXT(TXT::new(vec!["v=STSv1; id=bench1".into()])))
                .a(&host, Ipv4Addr::LOCALHOST);
            https.set_cert(&host, &pki().leaf(&[&host]));
            https.set_response(&host, Response::policy(body));
        }
        zones.mx("enforce.test", 10, "mx.enforce.test").a("mx.enforce.test", Ipv4Addr::LOCALHOST);
        let zones = zones.sign();
        std::fs::write(dir.join("anchor"), format!("{}\n", zones.trust_anchor(AnchorForm::Ds)))
            .expect("anchor");
        dns.serve_zones(zones);
        Self { dns, https }
    }
}

/// The do-nothing netstring server: same framing and I/O as `mtasts serve`, a constant reply.
fn null_server() {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    println!("listening on inet:{}", listener.local_addr().expect("addr"));
    let _ = std::io::stdout().flush();
    let reply = {
        let mut r = format!("{}:", ENFORCE_REPLY.len()).into_bytes();
        r.extend_from_slice(ENFORCE_REPLY.as_bytes());
        r.push(b',');
        Arc::new(r)
    };
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let reply = Arc::clone(&reply);
        let _ = stream.set_nodelay(true);
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 16384];
            let (mut start, mut end) = (0usize, 0usize);
            let mut out = Vec::with_capacity(4096);
            loop {
                // Answer every complete netstring in the buffer.
                loop {
                    let avail = &buf[start..end];
                    let Some(colon) = avail.iter().position(|&b| b == b':') else { break };
                    let Some(len) =
                        std::str::from_utf8(&avail[..colon]).ok().and_then(|s| s.parse::<usize>().ok())
                    else {
                        return;
                    };
                    if avail.len() < colon + len + 2 {
                        break;
                    }
                    if avail[colon + 1 + len] != b',' {
                        return;
                    }
                    out.extend_from_slice(&reply);
                    start += colon + len + 2;
                }
                if !out.is_empty() {
                    if stream.write_all(&out).is_err() {
                        return;
                    }
                    out.clear();
                }
                if start == end {
                    (start, end) = (0, 0);
                } else if end == buf.len() {
                    buf.copy_within(start..end, 0);
                    (start, end) = (0, end - start);
                }
                match stream.read(&mut buf[end..]) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => end += n,
                }
            }
        });
    }
}

fn report(
    servers: &[Target],
    conns: &[usize],
    medians: &[Vec<Run>],
    seconds: f64,
    reps: usize,
    threads: usize,
) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let _ = writeln!(
        s,
        "Key `{KEY}` (an `enforce` policy, {}-byte reply) on 127.0.0.1 TCP; {cores} cores ({cpu}); load generator \
         included on the same cores ({threads} client threads at most); {seconds} s per run after 0.3 s of warm-up, \
         median of {reps} interleaved runs.\n",
        ENFORCE_REPLY.len()
    );
    let _ = write!(s, "| connections |");
    for t in servers {
        let _ = write!(s, " {} lookups/s | p50 µs | p99 µs |", t.name);
    }
    let _ = writeln!(s);
    let _ = write!(s, "|---:|");
    for _ in servers {
        let _ = write!(s, "---:|---:|---:|");
    }
    let _ = writeln!(s);
    for (ci, n) in conns.iter().enumerate() {
        let _ = write!(s, "| {n} |");
        for per in medians {
            let r = per[ci];
            let _ = write!(s, " {:.0} | {:.1} | {:.1} |", r.rate, r.p50_us, r.p99_us);
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(s);
    // Ratios against the targets.
    let find = |name: &str| servers.iter().position(|t| t.name == name).map(|i| &medians[i]);
    let (Some(null), Some(plain)) = (find("null (do-nothing) server"), find("mtasts serve")) else {
        return s;
    };
    let (dane, resolver) = (find("mtasts serve (DANE on)"), find("postfix-mta-sts-resolver"));
    for (ci, n) in conns.iter().enumerate() {
        let mt = plain[ci];
        let _ = write!(
            s,
            "- {n} connection(s): mtasts serve = {:.0}% of the null server",
            100.0 * mt.rate / null[ci].rate
        );
        if let Some(res) = resolver {
            let _ = write!(s, ", {:.1}x postfix-mta-sts-resolver", mt.rate / res[ci].rate);
        }
        let _ = write!(s, ", p99 {:.2} ms", mt.p99_us / 1000.0);
        if let Some(d) = dane {
            let d = d[ci];
            let _ = write!(
                s,
                "; with DANE on {:.0}% of the null server ({:.0}% of DANE off), p50 {:.1} µs, p99 {:.2} ms",
                100.0 * d.rate / null[ci].rate,
                100.0 * d.rate / mt.rate,
                d.p50_us,
                d.p99_us / 1000.0
            );
        }
        let _ = writeln!(s);
    }
    s
}

/// Replaces the part of RESULTS.md between the markers with this run (the rest is kept).
fn write_results(path: &Path, report: &str) {
    const BEGIN: &str = "<!-- results:begin -->";
    const END: &str = "<!-- results:end -->";
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let block = format!(
        "{BEGIN}\nRun of {date}, command `bash benches/socketmap/run.sh` (= `cargo bench --bench socketmap -- --resolver-python VENV/bin/python --write benches/socketmap/RESULTS.md`).\n\n{report}{END}"
    );
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let new = match (old.find(BEGIN), old.find(END)) {
        (Some(b), Some(e)) if b < e => format!("{}{block}{}", &old[..b], &old[e + END.len()..]),
        _ => format!("{old}\n{block}\n"),
    };
    std::fs::write(path, new).expect("write results");
}
