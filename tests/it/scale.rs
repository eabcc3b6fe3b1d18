//! Many distinct domains at once (issue 17, "cold lookups" and "failing domains"; the figures are
//! in BENCHMARKS.md "Scale", from `cargo bench --bench scale_cold`). What the benchmark relies on
//! is checked here by counting at the fixtures, never by timing:
//!
//! * single-flight: callers asking for the same uncached domain at once cause one TXT lookup and
//!   one fetch, and all get its policy, whether they are threads of one engine or socketmap
//!   connections to `mtasts serve` (seen waiting in its `mtasts_serve_lookups_waiting` gauge);
//! * no global lock across network I/O: fetches for distinct domains are at the HTTPS fixture at
//!   the same time;
//! * the negative cache: a domain whose policy host refuses connections is not fetched again
//!   within `fetch_retry_interval`, whether DNS is asked again (`no_policy_interval = 0`) or not
//!   (the default): the second round makes no address lookup and no connection attempt.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mtasts::config::Config;
use mtasts_fixtures::https::Response;
use mtasts_fixtures::world::{World, policy};

/// Waits until `ready` holds. Nothing is timed: the deadline only turns a hang into a failure.
fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A configuration pointing at the fixtures, with fetch and DNS budgets far longer than any
/// hold of these tests, and `extra` (an `[engine]` section).
fn config(w: &World, extra: &str) -> std::path::PathBuf {
    w.write_config_text(&format!(
        "[dns]\nnameservers = [\"{}\"]\ntimeout_ms = 30000\ndnssec = \"off\"\n[https]\nca_file = \"{}\"\nport = {}\ntimeout_ms = 60000\nconnect_timeout_ms = 30000\n[cache]\npath = \"memory\"\n{extra}",
        w.dns.addr(),
        w.ca_file().display(),
        w.https.addr().port()
    ))
}

fn txt_queries(w: &World, name: &str) -> usize {
    w.dns.queries().iter().filter(|q| q.qtype == "TXT" && q.name.eq_ignore_ascii_case(name)).count()
}

#[test]
fn single_flight_one_fetch_for_concurrent_lookups_of_one_domain() {
    let w = World::start("scale-flight").expect("fixtures");
    w.dns.generate("flight.test", "f1", Ipv4Addr::LOCALHOST);
    w.https.generate("flight.test", Response::policy(&policy("enforce", &["mx.flight.test"])));
    let engine =
        Arc::new(Config::from_file(&config(&w, "")).expect("config").build_engine().expect("engine"));
    const CALLERS: usize = 8;

    // The first caller's fetch is held at the fixture until the others wait for its flight.
    w.https.hold(true);
    let callers: Vec<_> = (0..CALLERS)
        .map(|_| {
            let engine = Arc::clone(&engine);
            std::thread::spawn(move || engine.policy("d1.flight.test").expect("domain").expect("resolution"))
        })
        .collect();
    wait_until("one request at the fixture and the other callers waiting for it", || {
        w.https.requests().len() == 1 && engine.waiting_for_discovery() == CALLERS - 1
    });
    w.https.hold(false);
    for c in callers {
        let r = c.join().expect("caller");
        let p = r.policy.expect("every caller gets the fetched policy");
        assert_eq!(p.id.as_str(), "f1");
        assert!(r.error.is_none(), "{:?}", r.error);
    }
    assert_eq!(w.https.requests().len(), 1, "one fetch");
    assert_eq!(w.https.connections_accepted(), 1, "one connection");
    assert_eq!(txt_queries(&w, "_mta-sts.d1.flight.test"), 1, "one TXT lookup");
    assert_eq!(engine.waiting_for_discovery(), 0);

    // Later lookups are answered from the cache.
    engine.policy("d1.flight.test").expect("domain").expect("resolution").policy.expect("policy");
    assert_eq!(w.https.requests().len(), 1);
}

/// Single-flight across the socketmap connections of `mtasts serve`: two connections (two
/// Postfix processes) asking for the same uncached domain at once cause one TXT lookup, one
/// connection and one fetch, and both get the policy. The first connection's fetch is held at
/// the fixture until `/metrics` shows the second connection's lookup waiting for it, so the two
/// lookups overlap for certain.
#[test]
fn single_flight_holds_across_two_socketmap_connections() {
    let w = World::start("scale-flight-serve").expect("fixtures");
    w.dns.generate("flight2.test", "f2", Ipv4Addr::LOCALHOST);
    w.https.generate("flight2.test", Response::policy(&policy("enforce", &["mx.flight2.test"])));
    let serve = Serve::start_with(&config(&w, ""), true);
    let name = "d1.flight2.test";
    let (mut first, mut second) = (serve.connect(), serve.connect());
    assert_eq!(serve.lookups_waiting(), 0);

    w.https.hold(true);
    send_request(&mut first, name);
    wait_until("the first connection's fetch at the fixture", || w.https.requests().len() == 1);
    send_request(&mut second, name);
    wait_until("the second connection's lookup waiting for that discovery", || serve.lookups_waiting() == 1);
    w.https.hold(false);

    let want = "OK secure match=mx.flight2.test servername=hostname";
    assert_eq!(read_reply(&mut first), want);
    assert_eq!(read_reply(&mut second), want);
    assert_eq!(w.https.requests().len(), 1, "one fetch");
    assert_eq!(w.https.connections_accepted(), 1, "one connection");
    assert_eq!(txt_queries(&w, "_mta-sts.d1.flight2.test"), 1, "one TXT lookup");
    assert_eq!(serve.lookups_waiting(), 0);
}

#[test]
fn fetches_of_distinct_domains_run_at_the_same_time() {
    let w = World::start("scale-parallel").expect("fixtures");
    w.dns.generate("parallel.test", "p1", Ipv4Addr::LOCALHOST);
    w.https.generate("parallel.test", Response::policy(&policy("testing", &["mx.parallel.test"])));
    let engine =
        Arc::new(Config::from_file(&config(&w, "")).expect("config").build_engine().expect("engine"));
    const DOMAINS: usize = 6;

    // Every fetch is held at the fixture: they can all be there only if none waits for another
    // (no lock is held across network I/O).
    w.https.hold(true);
    let callers: Vec<_> = (0..DOMAINS)
        .map(|i| {
            let engine = Arc::clone(&engine);
            std::thread::spawn(move || {
                engine.policy(&format!("d{i}.parallel.test")).expect("domain").expect("resolution")
            })
        })
        .collect();
    wait_until("all fetches at the fixture at once", || w.https.requests().len() == DOMAINS);
    w.https.hold(false);
    for c in callers {
        assert!(c.join().expect("caller").policy.is_some());
    }
    let mut hosts: Vec<String> = w.https.requests().into_iter().filter_map(|r| r.sni).collect();
    hosts.sort();
    hosts.dedup();
    assert_eq!(hosts.len(), DOMAINS, "one fetch per domain: {hosts:?}");
}

/// A listener that accepts connections and closes them at once, counting them: a policy host
/// whose HTTPS service is broken, and a count of connection attempts.
struct Closing {
    accepted: Arc<AtomicUsize>,
}

impl Closing {
    fn start(ip: Ipv4Addr, port: u16) -> Self {
        let listener = TcpListener::bind((ip, port)).expect("bind the closing listener");
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                count.fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
        });
        Self { accepted }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// A running `mtasts serve`, killed when dropped.
struct Serve {
    child: Child,
    port: u16,
    /// The port of `/metrics`, when started with it.
    metrics: Option<u16>,
}

impl Serve {
    fn start(config: &Path) -> Self {
        Self::start_with(config, false)
    }

    /// With `metrics`, also `--metrics inet:127.0.0.1:0`.
    fn start_with(config: &Path, metrics: bool) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mtasts"));
        cmd.args(["serve", "--config"]).arg(config).args(["--listen", "inet:127.0.0.1:0"]);
        if metrics {
            cmd.args(["--metrics", "inet:127.0.0.1:0"]);
        }
        let mut child =
            cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("start mtasts serve");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut port_line = || {
            let mut line = String::new();
            stdout.read_line(&mut line).expect("a line from mtasts serve");
            line.trim().rsplit(':').next().and_then(|p| p.parse().ok()).expect("port")
        };
        let port = port_line();
        let metrics = metrics.then(&mut port_line);
        Self { child, port, metrics }
    }

    /// A socketmap connection.
    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(120))).expect("timeout");
        s
    }

    /// One socketmap lookup per name on one connection; the reply payloads.
    fn lookups(&self, names: &[String]) -> Vec<String> {
        let mut s = self.connect();
        names
            .iter()
            .map(|name| {
                send_request(&mut s, name);
                read_reply(&mut s)
            })
            .collect()
    }

    /// The value of the gauge `mtasts_serve_lookups_waiting` now.
    fn lookups_waiting(&self) -> u64 {
        let port = self.metrics.expect("started with --metrics");
        let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("connect to /metrics");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n").expect("request");
        let mut text = String::new();
        s.read_to_string(&mut text).expect("response");
        text.lines()
            .find_map(|l| l.strip_prefix("mtasts_serve_lookups_waiting "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no mtasts_serve_lookups_waiting in {text}"))
    }
}

/// Sends the socketmap request for `name`.
fn send_request(s: &mut TcpStream, name: &str) {
    let payload = format!("postfix {name}");
    s.write_all(format!("{}:{payload},", payload.len()).as_bytes()).expect("write");
}

/// Reads one socketmap reply; its payload.
fn read_reply(s: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let n = s.read(&mut buf).expect("read");
        assert!(n > 0, "closed");
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some((len, rest)) = text.split_once(':') {
            let len: usize = len.parse().expect("length");
            if rest.len() > len {
                return rest[..len].to_owned();
            }
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A-record lookups of the policy hosts under `suffix`: one precedes every connection attempt.
fn host_lookups(w: &World, suffix: &str) -> usize {
    w.dns
        .queries()
        .iter()
        .filter(|q| q.qtype == "A" && q.name.starts_with("mta-sts.") && q.name.ends_with(suffix))
        .count()
}

#[test]
fn failing_domains_second_round_makes_no_connection_attempt() {
    let w = World::start("scale-failing").expect("fixtures");
    let port = w.https.addr().port();
    // Refused: nothing listens on 127.0.0.2 at the HTTPS port.
    assert!(TcpStream::connect((Ipv4Addr::new(127, 0, 0, 2), port)).is_err());
    // Closed at once by a listener on 127.0.0.3 that counts the connections.
    let closing = Closing::start(Ipv4Addr::new(127, 0, 0, 3), port);
    const N: usize = 20;
    let names = |suffix: &str| -> Vec<String> { (0..N).map(|i| format!("d{i}.{suffix}")).collect() };

    // The default intervals: the second round is answered from memory, no DNS at all. With
    // `no_policy_interval = 0`, DNS is asked again and finds the same id; the failure of that id
    // within `fetch_retry_interval` keeps the fetch from being made again (FETCH-10).
    for (round, extra) in [("default", ""), ("txt-every-time", "[engine]\nno_policy_interval = 0\n")] {
        let serve = Serve::start(&config(&w, extra));
        let (refused, closed) =
            (names(&format!("{round}.refused.test")), names(&format!("{round}.closing.test")));
        w.dns.generate(&format!("{round}.refused.test"), "r1", Ipv4Addr::new(127, 0, 0, 2));
        w.dns.generate(&format!("{round}.closing.test"), "c1", Ipv4Addr::new(127, 0, 0, 3));
        let accepted = closing.accepted();

        let first: Vec<String> = [serve.lookups(&refused), serve.lookups(&closed)].concat();
        for reply in &first {
            assert!(reply.starts_with("NOTFOUND"), "{round}: {reply}");
        }
        assert_eq!(
            host_lookups(&w, &format!("{round}.refused.test")),
            N,
            "{round}: one attempt per refused domain"
        );
        assert_eq!(
            host_lookups(&w, &format!("{round}.closing.test")),
            N,
            "{round}: one attempt per closing domain"
        );
        assert_eq!(closing.accepted() - accepted, N, "{round}: one connection per closing domain");

        let txt_before = w.dns.queries().iter().filter(|q| q.qtype == "TXT").count();
        let second: Vec<String> = [serve.lookups(&refused), serve.lookups(&closed)].concat();
        assert_eq!(second, first, "{round}: the same replies");
        assert_eq!(host_lookups(&w, &format!("{round}.refused.test")), N, "{round}: no new attempt");
        assert_eq!(host_lookups(&w, &format!("{round}.closing.test")), N, "{round}: no new attempt");
        assert_eq!(closing.accepted() - accepted, N, "{round}: no new connection");
        let txt_asked = w.dns.queries().iter().filter(|q| q.qtype == "TXT").count() - txt_before;
        match round {
            "default" => assert_eq!(txt_asked, 0, "answered from the negative cache"),
            _ => assert_eq!(txt_asked, 2 * N, "TXT asked again, fetch not retried"),
        }
        assert!(w.https.requests().is_empty());
    }
}
