//! `mtasts serve` end to end: the real binary, the real DNS and HTTPS clients against the local
//! fixtures, and a socketmap client written here. Framing, pipelining, many connections, what
//! closes a connection (malformed netstring, oversized request, idle timeout), clean shutdown on
//! SIGTERM, the replies of docs/architecture.md §6.3 for each fixture domain, `strict_testing`,
//! `postfix_tlsrpt`, the persistent store and the background refresher.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mtasts_fixtures::https::Response;
use mtasts_fixtures::pki::pki;
use parking_lot::Mutex;

mod systemd;

const ENFORCE_OK: &str = "OK secure match=mx.enforce.test:.backup.enforce.test servername=hostname";

use mtasts_fixtures::world::policy;

/// The shared fixture world, serving the fixture domains of `mtasts-fixture`.
struct World(mtasts_fixtures::world::World);

impl std::ops::Deref for World {
    type Target = mtasts_fixtures::world::World;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl World {
    fn new(name: &str) -> Self {
        let world = Self(mtasts_fixtures::world::World::start(&format!("serve-{name}")).expect("fixtures"));
        world.publish(
            "enforce.test",
            "e1",
            &policy("enforce", &["mx.enforce.test", "*.backup.enforce.test"]),
        );
        world.publish("testing.test", "t1", &policy("testing", &["mx.testing.test"]));
        world.publish("none.test", "n1", &policy("none", &[]));
        world.publish_response("broken.test", "b1", Response::status(404));
        world
    }

    /// Publishes a policy of about 64 KiB for `big.test`, whose lines all go into each
    /// `postfix_tlsrpt` reply (a reply of about 66 KB).
    fn publish_big(&self) {
        let mut body = policy("enforce", &["mx.big.test"]);
        for i in 0.. {
            let line = format!("ext{i:02}: {}\n", "x".repeat(1000));
            if body.len() + line.len() > 65_000 {
                break;
            }
            body.push_str(&line);
        }
        self.publish("big.test", "g1", &body);
    }

    /// Writes a configuration with these extra lines (`[serve]`, `[engine]` or `[cache]` sections).
    fn config(&self, extra: &str) -> PathBuf {
        self.write_config(extra)
    }

    fn serve(&self, extra: &str) -> Server {
        let config = self.config(extra);
        Server::start(&config, "inet:127.0.0.1:0")
    }
}

/// A running `mtasts serve`.
struct Server {
    child: Child,
    listen: String,
    stderr: Arc<Mutex<String>>,
    /// Standard output after the first `listening on` line.
    stdout: BufReader<std::process::ChildStdout>,
}

impl Server {
    fn start(config: &Path, listen: &str) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mtasts"));
        cmd.args(["serve", "--config"]).arg(config).args(["--listen", listen]);
        Self::spawn(&mut cmd)
    }

    /// Starts `cmd` (which runs `mtasts serve`, maybe through a wrapper) and waits for its first
    /// `listening on` line.
    fn spawn(cmd: &mut Command) -> Self {
        Self::spawn_then(cmd, |_| {})
    }

    /// As [`Server::spawn`], calling `first` with the standard error seen so far before waiting
    /// for the `listening on` line (a wrapper may start the server only on a first connection).
    fn spawn_then(cmd: &mut Command, first: impl FnOnce(&Mutex<String>)) -> Self {
        let mut child =
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start mtasts serve");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let stderr = crate::common::collect_stderr(&mut child);
        first(&stderr);
        let mut line = String::new();
        stdout.read_line(&mut line).expect("listening line");
        let listen = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}, stderr {}", stderr.lock()))
            .to_owned();
        Self { child, listen, stderr, stdout }
    }

    fn port(&self) -> u16 {
        self.listen.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port")
    }

    fn connect(&self) -> Client {
        let s = TcpStream::connect(("127.0.0.1", self.port())).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        Client { stream: Box::new(s), buf: Vec::new() }
    }

    fn lookup(&self, key: &str) -> String {
        self.connect().lookup(key)
    }

    fn sigterm(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "mtasts serve did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().clone()
    }

    /// Waits (30 s at most) until the server has written `needle` to standard error.
    fn wait_for_stderr(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.stderr().contains(needle) {
            assert!(Instant::now() < deadline, "no {needle:?} in {}", self.stderr());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The most memory the server has held so far (`VmHWM`, its peak resident set), in KiB.
    fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("status");
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM");
        line.split_whitespace().nth(1).and_then(|kib| kib.parse().ok()).expect("VmHWM in kB")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

trait Conn: Read + Write + Send {}
impl<T: Read + Write + Send> Conn for T {}

/// A socketmap client.
struct Client {
    stream: Box<dyn Conn>,
    buf: Vec<u8>,
}

fn netstring(payload: &str) -> Vec<u8> {
    format!("{}:{payload},", payload.len()).into_bytes()
}

impl Client {
    fn unix(path: &Path) -> Self {
        let s = UnixStream::connect(path).expect("connect unix");
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        Self { stream: Box::new(s), buf: Vec::new() }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// Reads one reply netstring; `None` at EOF.
    fn reply(&mut self) -> Option<String> {
        loop {
            if let Some(colon) = self.buf.iter().position(|&b| b == b':') {
                let len: usize =
                    std::str::from_utf8(&self.buf[..colon]).expect("digits").parse().expect("length");
                if self.buf.len() > colon + len + 1 {
                    assert_eq!(self.buf[colon + 1 + len], b',', "netstring terminator");
                    let payload =
                        String::from_utf8(self.buf[colon + 1..colon + 1 + len].to_vec()).expect("utf-8");
                    self.buf.drain(..colon + len + 2);
                    return Some(payload);
                }
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    fn lookup(&mut self, key: &str) -> String {
        self.send(&netstring(&format!("postfix {key}")));
        self.reply().expect("a reply")
    }

    /// True when the server closed the connection (EOF or reset) within `within`.
    fn closed_within(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let mut chunk = [0u8; 1024];
        while Instant::now() < deadline {
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e)
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
                {
                    return false;
                }
                Err(_) => return true,
            }
        }
        false
    }
}

#[test]
fn replies_for_each_fixture_domain() {
    let world = World::new("replies");
    let server = world.serve("");
    let mut c = server.connect();
    let cases = [
        ("enforce.test", ENFORCE_OK),
        ("Enforce.TEST.", ENFORCE_OK),
        ("testing.test", "NOTFOUND "),
        ("none.test", "NOTFOUND "),
        ("nopolicy.test", "NOTFOUND "),
        ("broken.test", "NOTFOUND "),
        // Keys that are no Policy Domain.
        (".enforce.test", "NOTFOUND "),
        ("[mx.enforce.test]", "NOTFOUND "),
        ("[mx.enforce.test]:25", "NOTFOUND "),
        ("[192.0.2.1]:25", "NOTFOUND "),
        ("enforce.test:25", "NOTFOUND "),
        ("192.0.2.1", "NOTFOUND "),
        ("2001:db8::1", "NOTFOUND "),
        ("under_score.test", "NOTFOUND "),
        ("/var/run/socket", "NOTFOUND "),
    ];
    for (key, want) in cases {
        assert_eq!(c.lookup(key), want, "key {key}");
    }
    // Malformed requests.
    for bad in ["postfix", "postfix ", " enforce.test", ""] {
        c.send(&netstring(bad));
        let reply = c.reply().expect("reply");
        assert!(reply.starts_with("PERM "), "{bad:?} -> {reply:?}");
    }
    c.send(b"5:a\x01 bc,");
    assert!(c.reply().expect("reply").starts_with("PERM "));
    // The map name does not matter (Sendmail sends `sts`).
    c.send(&netstring("sts enforce.test"));
    assert_eq!(c.reply().as_deref(), Some(ENFORCE_OK));
    // Still the same connection.
    assert_eq!(c.lookup("enforce.test"), ENFORCE_OK);
}

#[test]
fn strict_testing_answers_testing_like_enforce() {
    let world = World::new("strict");
    let server = world.serve("[serve]\nstrict_testing = true\n");
    assert_eq!(server.lookup("testing.test"), "OK secure match=mx.testing.test servername=hostname");
    assert_eq!(server.lookup("enforce.test"), ENFORCE_OK);
    assert_eq!(server.lookup("none.test"), "NOTFOUND ");
}

#[test]
fn postfix_tlsrpt_attributes() {
    let world = World::new("tlsrpt");
    let server = world.serve("[serve]\npostfix_tlsrpt = true\n");
    assert_eq!(
        server.lookup("Enforce.Test"),
        format!(
            "{ENFORCE_OK} policy_type=sts policy_domain=enforce.test mx_host_pattern=mx.enforce.test \
             mx_host_pattern=*.backup.enforce.test {{ policy_string = version: STSv1 }} \
             {{ policy_string = mode: enforce }} {{ policy_string = mx: mx.enforce.test }} \
             {{ policy_string = mx: *.backup.enforce.test }} {{ policy_string = max_age: 604800 }}"
        )
    );
    assert_eq!(server.lookup("testing.test"), "NOTFOUND ");
    assert_eq!(server.lookup("nopolicy.test"), "NOTFOUND ");
}

/// `[serve.profile.NAME]`: the map name of each request (`postfix` in
/// `socketmap:inet:127.0.0.1:8461:postfix`) selects its reply options, on one connection; a name
/// without a profile gets the `[serve]` ones (reported once); a SIGHUP reload changes profiles.
#[test]
fn profiles_select_reply_options_by_map_name() {
    let world = World::new("profiles");
    let config = world.config(
        "[serve]\nstrict_testing = false\n\
         [serve.profile.postfix37]\n\
         [serve.profile.postfix310]\npostfix_tlsrpt = true\nstrict_testing = true\n\
         [serve.profile.old]\nservername = \"none\"\n",
    );
    let server = Server::start(&config, "inet:127.0.0.1:0");
    let mut c = server.connect();
    let mut ask = |name: &str, key: &str| {
        c.send(&netstring(&format!("{name} {key}")));
        c.reply().expect("a reply")
    };
    let tlsrpt = format!(
        "{ENFORCE_OK} policy_type=sts policy_domain=enforce.test mx_host_pattern=mx.enforce.test \
         mx_host_pattern=*.backup.enforce.test {{ policy_string = version: STSv1 }} \
         {{ policy_string = mode: enforce }} {{ policy_string = mx: mx.enforce.test }} \
         {{ policy_string = mx: *.backup.enforce.test }} {{ policy_string = max_age: 604800 }}"
    );
    assert_eq!(ask("postfix37", "enforce.test"), ENFORCE_OK);
    assert_eq!(ask("postfix37", "testing.test"), "NOTFOUND ");
    assert_eq!(ask("postfix310", "enforce.test"), tlsrpt);
    assert!(ask("postfix310", "testing.test").starts_with(
        "OK secure match=mx.testing.test servername=hostname policy_type=sts policy_domain=testing.test "
    ));
    assert_eq!(ask("old", "enforce.test"), "OK secure match=mx.enforce.test:.backup.enforce.test");
    assert_eq!(ask("postfix37", "enforce.test"), ENFORCE_OK);
    // Keys without a policy are answered alike whatever the profile.
    assert_eq!(ask("postfix310", "nopolicy.test"), "NOTFOUND ");
    assert_eq!(ask("old", ".enforce.test"), "NOTFOUND ");
    // Names without a profile: [serve], and one warning.
    assert_eq!(ask("postfix", "enforce.test"), ENFORCE_OK);
    assert_eq!(ask("sts", "testing.test"), "NOTFOUND ");
    assert_eq!(ask("POSTFIX310", "enforce.test"), ENFORCE_OK);
    server.wait_for_stderr("socketmap name \"postfix\" has no [serve.profile] table");
    assert_eq!(server.stderr().matches("has no [serve.profile] table").count(), 1, "{}", server.stderr());

    // A reload puts new profiles in force on the open connection.
    world.config("[serve]\nstrict_testing = true\n[serve.profile.postfix37]\nstrict_testing = false\n");
    let status = Command::new("kill").args(["-HUP", &server.child.id().to_string()]).status().expect("kill");
    assert!(status.success());
    server.wait_for_stderr("[serve.profile.*]); the policy cache is kept");
    let mut ask = |name: &str, key: &str| {
        c.send(&netstring(&format!("{name} {key}")));
        c.reply().expect("a reply")
    };
    assert_eq!(ask("postfix37", "testing.test"), "NOTFOUND ");
    assert_eq!(ask("postfix310", "enforce.test"), ENFORCE_OK);
    assert_eq!(ask("postfix310", "testing.test"), "OK secure match=mx.testing.test servername=hostname");
    assert_eq!(ask("old", "enforce.test"), ENFORCE_OK);
    server.wait_for_stderr("socketmap name \"postfix310\" has no [serve.profile] table");
}

/// A profile key or value that is wrong stops the server at start, naming the key.
#[test]
fn bad_profiles_stop_the_server() {
    let world = World::new("badprofile");
    for (extra, want) in [
        ("[serve.profile.p]\nservername = \"nexthop\"\n", "[serve.profile.p] servername = \"nexthop\""),
        ("[serve.profile.p]\nstrict = true\n", "strict"),
        ("[serve.profile.\"a b\"]\n", "no spaces"),
    ] {
        let config = world.config(extra);
        let out = Command::new(env!("CARGO_BIN_EXE_mtasts"))
            .args(["serve", "--config"])
            .arg(&config)
            .args(["--listen", "inet:127.0.0.1:0"])
            .output()
            .expect("mtasts serve");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && out.stdout.is_empty() && stderr.contains(want), "{extra}: {stderr}");
    }
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let world = World::new("pipeline");
    let server = world.serve("");
    let keys = ["enforce.test", "testing.test", "none.test", "nopolicy.test", ".x.test", "broken.test"];
    let mut c = server.connect();
    let mut batch = Vec::new();
    for i in 0..300 {
        batch.extend(netstring(&format!("postfix {}", keys[i % keys.len()])));
    }
    // Byte by byte for the first requests, then all the rest at once.
    for b in &batch[..40] {
        c.send(&[*b]);
    }
    c.send(&batch[40..]);
    for i in 0..300 {
        let want = if keys[i % keys.len()] == "enforce.test" { ENFORCE_OK } else { "NOTFOUND " };
        assert_eq!(c.reply().as_deref(), Some(want), "request {i}");
    }
}

#[test]
fn many_connections_at_once() {
    let world = World::new("many");
    let server = Arc::new(world.serve(""));
    assert_eq!(server.lookup("enforce.test"), ENFORCE_OK);
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let server = Arc::clone(&server);
            std::thread::spawn(move || {
                let mut c = server.connect();
                for i in 0..200 {
                    let (key, want) = if (i + t) % 2 == 0 {
                        ("enforce.test", ENFORCE_OK)
                    } else {
                        ("testing.test", "NOTFOUND ")
                    };
                    assert_eq!(c.lookup(key), want);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
}

#[test]
fn malformed_netstring_closes_only_that_connection() {
    let world = World::new("malformed");
    let server = world.serve("");
    let mut good = server.connect();
    assert_eq!(good.lookup("enforce.test"), ENFORCE_OK);
    for bad in [&b"abc"[..], b"3:abcd", b":x,", b"-1:x,", b"3 :abc,"] {
        let mut c = server.connect();
        // A request before the bad one is still answered.
        c.send(&netstring("postfix enforce.test"));
        c.send(bad);
        assert_eq!(c.reply().as_deref(), Some(ENFORCE_OK));
        assert!(c.closed_within(Duration::from_secs(5)), "{bad:?} did not close the connection");
    }
    assert_eq!(good.lookup("enforce.test"), ENFORCE_OK);
    assert_eq!(server.lookup("none.test"), "NOTFOUND ");
    assert!(server.stderr().contains("closing it"), "{}", server.stderr());
}

#[test]
fn request_size_is_bounded() {
    let world = World::new("size");
    let server = world.serve("[serve]\nmax_request_bytes = 64\n");
    let mut c = server.connect();
    // 64 bytes: answered.
    let key = format!("{}.test", "a".repeat(64 - "postfix .test".len()));
    assert_eq!(c.lookup(&key), "NOTFOUND ");
    // 65 bytes: the length prefix alone closes the connection.
    let mut c = server.connect();
    c.send(b"65:");
    assert!(c.closed_within(Duration::from_secs(5)));
    let mut c = server.connect();
    c.send(b"99999999999999999999999999");
    assert!(c.closed_within(Duration::from_secs(5)));
    assert_eq!(server.lookup("enforce.test"), ENFORCE_OK);
    // The default limit still allows the longest domain name.
    let server = world.serve("");
    let label = "a".repeat(63);
    let long = format!("{label}.{label}.{label}.{}.test", "b".repeat(56));
    assert_eq!(long.len(), 253);
    assert_eq!(server.lookup(&long), "NOTFOUND ");
}

#[test]
fn netstring_lengths_are_canonical() {
    let world = World::new("lengths");
    let server = world.serve("");
    // `0:` is the one length that starts with a zero: an empty request, answered PERM.
    let mut c = server.connect();
    c.send(b"0:,");
    assert!(c.reply().expect("reply").starts_with("PERM "));
    assert_eq!(c.lookup("enforce.test"), ENFORCE_OK);
    // Any other leading zero closes the connection once its second digit is read: these bytes and
    // no more are sent (a run of zeros used to be a length prefix that never ended).
    for bad in [&b"00"[..], b"01", b"00:,", b"020:postfix enforce.test,"] {
        let mut c = server.connect();
        c.send(bad);
        assert!(c.closed_within(Duration::from_secs(5)), "{bad:?} did not close the connection");
    }
    // 200 KB of zeros, then the client hangs up: closed at the second byte, not read to the end.
    let mut c = server.connect();
    let _ = c.stream.write_all(&[b'0'; 200_000]);
    assert!(c.closed_within(Duration::from_secs(5)), "200 KB of zeros did not close the connection");
    drop(c);
    // No more digits than max_request_bytes needs: 4096 has four, a fifth closes the connection.
    let mut c = server.connect();
    c.send(b"40960");
    assert!(c.closed_within(Duration::from_secs(5)));
    assert_eq!(server.lookup("enforce.test"), ENFORCE_OK);
    server.wait_for_stderr("netstring length has a leading zero");
}

#[test]
fn idle_connections_are_closed() {
    let world = World::new("idle");
    let server = world.serve("[serve]\nidle_timeout_ms = 300\n");
    let mut idle = server.connect();
    // Both connections go idle after this instant.
    let started = Instant::now();
    assert_eq!(idle.lookup("enforce.test"), ENFORCE_OK);
    let mut stalled = server.connect();
    stalled.send(b"20:postfix enf");
    assert!(idle.closed_within(Duration::from_secs(5)));
    assert!(stalled.closed_within(Duration::from_secs(5)));
    assert!(started.elapsed() >= Duration::from_millis(290), "closed too early: {:?}", started.elapsed());
    // A connection in use is not closed while it keeps talking.
    let mut busy = server.connect();
    for _ in 0..6 {
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(busy.lookup("enforce.test"), ENFORCE_OK);
    }
}

#[test]
fn connection_limit_queues_further_clients() {
    let world = World::new("limit");
    let server = world.serve("[serve]\nmax_connections = 1\n");
    let mut first = server.connect();
    assert_eq!(first.lookup("enforce.test"), ENFORCE_OK);
    let mut second = server.connect();
    second.send(&netstring("postfix enforce.test"));
    std::thread::sleep(Duration::from_millis(300));
    // The second connection waits in the listen queue until the first one ends.
    drop(first);
    assert_eq!(second.reply().as_deref(), Some(ENFORCE_OK));
}

/// A client that sends `4000:` and then one byte at a time, well within the idle timeout, until the
/// server closes the connection (true) or 30 s have passed (false).
fn trickle(mut stream: TcpStream) -> bool {
    stream.write_all(b"4000:").expect("send");
    stream.set_read_timeout(Some(Duration::from_millis(50))).expect("timeout");
    let mut chunk = [0u8; 64];
    for _ in 0..600 {
        match stream.read(&mut chunk) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
        if stream.write_all(b"x").is_err() {
            return true;
        }
    }
    false
}

#[test]
fn slow_clients_cannot_hold_the_connection_slots() {
    let world = World::new("slow");
    // The idle timeout (60 s) is far longer than the whole test; the request deadline is short.
    let server = world.serve("[serve]\nmax_connections = 4\nrequest_timeout_ms = 500\n");
    let mut early = server.connect();
    assert_eq!(early.lookup("enforce.test"), ENFORCE_OK);
    // Three tricklers take the other three slots (they connect, and so are accepted, first).
    let tricklers: Vec<_> = (0..3)
        .map(|_| {
            let s = TcpStream::connect(("127.0.0.1", server.port())).expect("connect");
            std::thread::spawn(move || trickle(s))
        })
        .collect();
    // A connection already served keeps being served meanwhile.
    assert_eq!(early.lookup("testing.test"), "NOTFOUND ");
    // A new client, queued behind the tricklers, gets its answer once their requests are closed
    // for taking too long (before, each byte restarted the idle timeout and they kept the slots).
    let mut late = server.connect();
    late.send(&netstring("postfix enforce.test"));
    assert_eq!(late.reply().as_deref(), Some(ENFORCE_OK));
    assert_eq!(early.lookup("enforce.test"), ENFORCE_OK);
    for t in tricklers {
        assert!(t.join().expect("trickler"), "a trickling client was never closed");
    }
    server.wait_for_stderr("request not complete within [serve] request_timeout_ms");
    assert_eq!(server.lookup("none.test"), "NOTFOUND ");
}

#[test]
fn clients_that_do_not_take_their_replies_are_closed() {
    let world = World::new("noread");
    world.publish_big();
    let server = world.serve("[serve]\npostfix_tlsrpt = true\nrequest_timeout_ms = 500\n");
    assert!(server.lookup("big.test").len() > 60_000);
    // About 13 MiB of replies, far more than the sockets buffer, and the client does not read.
    let request = netstring("postfix big.test");
    let n = 4096 / request.len();
    let mut c = server.connect();
    c.send(&request.repeat(n));
    server.wait_for_stderr("replies not read within [serve] request_timeout_ms");
    // The connection ends before the last replies (before, each write waited for the idle timeout,
    // restarted by every bit of progress).
    let mut got = 0;
    while c.reply().is_some() {
        got += 1;
    }
    assert!(got < n, "all {n} replies were written");
    assert_eq!(server.lookup("none.test"), "NOTFOUND ");
}

#[test]
fn pipelining_clients_that_never_read_cost_bounded_memory() {
    let world = World::new("unread");
    world.publish_big();
    let server = world.serve("[serve]\npostfix_tlsrpt = true\n");
    let reply = server.lookup("big.test");
    assert!(reply.len() > 60_000 && reply.contains("{ policy_string = ext63: x"), "{}", reply.len());
    let before = server.peak_rss_kib();
    // 20 connections each pipeline 4 KiB of requests (about 13 MiB of replies) and never read.
    let request = netstring("postfix big.test");
    let batch = request.repeat(4096 / request.len());
    let clients: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", server.port())).expect("connect");
            s.write_all(&batch).expect("send");
            s
        })
        .collect();
    // Wait until the server has written to each of them (peek leaves the bytes unread).
    for s in &clients {
        s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
        assert_eq!(s.peek(&mut [0u8; 1]).expect("the replies begin"), 1);
    }
    // Others are still served, and the server holds little for the clients that do not read
    // (about 280 MiB before replies waiting to be written were capped per connection).
    assert_eq!(server.lookup("testing.test"), "NOTFOUND ");
    let peak = server.peak_rss_kib();
    assert!(peak < 64 * 1024, "peak RSS {peak} KiB (before the 20 clients: {before} KiB)");
    drop(clients);
}

#[test]
fn sigterm_shuts_down_cleanly() {
    let world = World::new("sigterm");
    let config = world.config("");
    let socket = world.dir.join("mtasts.sock");
    let mut server = Server::start(&config, &format!("unix:{}", socket.display()));
    assert_eq!(server.listen, format!("unix:{}", socket.display()));
    let mut a = Client::unix(&socket);
    assert_eq!(a.lookup("enforce.test"), ENFORCE_OK);
    let mut b = Client::unix(&socket);
    assert_eq!(b.lookup("testing.test"), "NOTFOUND ");
    let status = server.sigterm();
    assert!(status.success(), "exit status {status:?}, stderr {}", server.stderr());
    assert!(a.closed_within(Duration::from_secs(2)));
    assert!(b.closed_within(Duration::from_secs(2)));
    assert!(!socket.exists(), "the socket file is removed");
    assert!(server.stderr().contains("stopped"), "{}", server.stderr());
    // A stale socket file does not keep the next server from starting.
    std::os::unix::net::UnixListener::bind(&socket).expect("stale socket");
    let server = Server::start(&config, &format!("unix:{}", socket.display()));
    assert_eq!(Client::unix(&socket).lookup("enforce.test"), ENFORCE_OK);
    drop(server);
    // TCP too, with a connection mid-request.
    let mut server = world.serve("");
    let mut c = server.connect();
    c.send(b"20:postfix");
    let status = server.sigterm();
    assert!(status.success(), "exit status {status:?}");
    assert!(c.closed_within(Duration::from_secs(2)));
}

#[test]
fn persistent_store_survives_a_restart() {
    let world = World::new("store");
    let store = world.dir.join("policies.sqlite");
    let extra = format!("[cache]\npath = \"{}\"\n", store.display());
    let mut server = world.serve(&extra);
    assert_eq!(server.lookup("enforce.test"), ENFORCE_OK);
    assert!(server.sigterm().success());
    // DNS and HTTPS now fail: the stored policy still applies (RFC 8461 §10.2).
    world.dns.set_servfail("_mta-sts.enforce.test");
    world.https.set_response("mta-sts.enforce.test", Response::status(500));
    let server = world.serve(&extra);
    assert_eq!(server.lookup("enforce.test"), ENFORCE_OK);
}

#[test]
fn overrides_skip_or_pin_with_no_request_for_the_domain() {
    // README, "Overrides": the configuration file's at start, the store's within
    // txt_check_interval (`mtasts override set` from another process).
    let world = World::new("override");
    std::fs::write(world.dir.join("pinned.txt"), policy("enforce", &["mx.pinned.test"])).expect("write");
    let store = world.dir.join("policies.sqlite");
    let extra = format!(
        "[cache]\npath = \"{}\"\n[engine]\ntxt_check_interval = 1\n[serve]\nrefresh_interval_s = 0\n\
         [override.\"testing.test\"]\nmode = \"none\"\n[override.\"pinned.test\"]\npolicy = \"pinned.txt\"\n",
        store.display()
    );
    let server = world.serve(&extra);
    let sts = |domain: &str| {
        let dns =
            world.dns.queries().iter().filter(|q| q.name.to_ascii_lowercase().ends_with(domain)).count();
        let host = format!("mta-sts.{domain}");
        dns + world.https.requests().iter().filter(|r| r.sni.as_deref() == Some(host.as_str())).count()
    };
    assert_eq!(server.lookup("pinned.test"), "OK secure match=mx.pinned.test servername=hostname");
    assert_eq!(server.lookup("testing.test"), "NOTFOUND ");
    assert_eq!(server.lookup("enforce.test"), ENFORCE_OK);
    assert_eq!((sts("pinned.test"), sts("testing.test")), (0, 0));
    // Another process sets an override in the store: served within txt_check_interval.
    let config = world.dir.join("mtasts.toml");
    run(Command::new(env!("CARGO_BIN_EXE_mtasts"))
        .args(["override", "set", "enforce.test", "--mode", "none", "--config"])
        .arg(&config));
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.lookup("enforce.test") != "NOTFOUND " {
        assert!(Instant::now() < deadline, "the store's override is not applied");
        std::thread::sleep(Duration::from_millis(100));
    }
    world.dns.clear_queries();
    assert_eq!(server.lookup("enforce.test"), "NOTFOUND ");
    assert_eq!(world.dns.queries().len(), 0);
    assert!(server.stderr.lock().contains("MTA-STS skipped for testing.test"), "logged at every use");
}

#[test]
fn an_unavailable_store_with_on_store_error_tempfail_defers_instead_of_notfound() {
    let world = World::new("tempfail");
    let corrupt = world.dir.join("corrupt.sqlite");
    std::fs::write(&corrupt, b"not a database, only text that happens to be here").expect("write");
    let cache = format!("[cache]\npath = \"{}\"\n", corrupt.display());
    // Default (`continue`): a domain without a policy is NOTFOUND, a policy fetched now applies.
    let server = world.serve(&cache);
    assert_eq!(server.lookup("nopolicy.test"), "NOTFOUND ");
    assert_eq!(server.lookup("enforce.test"), ENFORCE_OK);
    drop(server);
    // `tempfail`: without a policy, Postfix is told to defer; a policy fetched now still applies.
    let server = world.serve(&format!("{cache}[engine]\non_store_error = \"tempfail\"\n"));
    let reply = server.lookup("nopolicy.test");
    assert!(reply.starts_with("TEMP ") && reply.contains("store is unavailable"), "{reply}");
    assert_eq!(server.lookup("enforce.test"), ENFORCE_OK);
}

#[test]
fn background_refresher_keeps_policies_fresh() {
    let world = World::new("refresh");
    // DNS is asked again every 2 s while a policy is cached; the refresher runs every second.
    let server = world.serve("[engine]\ntxt_check_interval = 2\n[serve]\nrefresh_interval_s = 1\n");
    assert_eq!(server.lookup("enforce.test"), ENFORCE_OK);
    world.dns.clear_queries();
    world.publish("enforce.test", "e2", &policy("enforce", &["mx2.enforce.test"]));
    // No lookup meanwhile: only the refresher can notice the new id and fetch the new policy.
    let fetches =
        || world.https.requests().iter().filter(|r| r.sni.as_deref() == Some("mta-sts.enforce.test")).count();
    assert_eq!(fetches(), 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    while fetches() < 2 {
        assert!(Instant::now() < deadline, "the refresher did not refetch the policy");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(world.dns.queries().iter().any(|q| q.name.eq_ignore_ascii_case("_mta-sts.enforce.test")));
    // The fetch is logged before the engine has stored its result: allow a moment.
    let want = "OK secure match=mx2.enforce.test servername=hostname";
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.lookup("enforce.test") != want {
        assert!(Instant::now() < deadline, "the refreshed policy is not served");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs a command, panicking with its output on failure.
fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {:?}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A full delivery by Postfix's own smtp(8) client, from a Postfix tree unpacked with
/// `dpkg -x` (`MTASTS_E2E_POSTFIX_ROOT`; `bash tests/e2e/postfix/run.sh` prepares it), with
/// `smtp_tls_policy_maps` pointing at `mtasts serve` and `examples/postfix/main.cf` included:
///
/// * `enforce.test` (policy `mx.enforce.test`, `*.backup.enforce.test`): its server presents a
///   certificate for `mx.enforce.test` from the test CA: sent, "Verified TLS connection";
/// * `badcert.test` (`enforce`, policy `mx.badcert.test`): its server presents the same, valid,
///   certificate, whose name the policy does not list: deferred, nothing reaches the server;
/// * `testing.test` (`testing`): a certificate with a wrong name: delivered anyway (NOTFOUND,
///   opportunistic TLS).
///
/// Postfix cannot be pointed at the DNS fixture's port, so DNS is off in Postfix
/// (`smtp_dns_support_level = disabled` and native lookups, set after the example, which asks for
/// `dnssec`) and the three domains resolve through a private /etc/hosts bind-mounted in a mount
/// namespace of the master process (`unshare -m`, as root). The next hop is the recipient domain
/// itself, so the TLS policy lookup key is the domain,
/// as with MX records; the certificate checks are Postfix's own (OpenSSL, `smtp_tls_CAfile`).
#[test]
#[ignore = "needs an unpacked Postfix: bash tests/e2e/postfix/run.sh"]
fn postfix_full_delivery() {
    use mtasts_fixtures::smtp::SmtpSink;
    let root = PathBuf::from(std::env::var_os("MTASTS_E2E_POSTFIX_ROOT").expect("MTASTS_E2E_POSTFIX_ROOT"));
    let world = World::new("postfix");
    world.publish("badcert.test", "b1", &policy("enforce", &["mx.badcert.test"]));
    let good = SmtpSink::start(Ipv4Addr::new(127, 0, 0, 2), 0, Some(&pki().leaf(&["mx.enforce.test"])))
        .expect("sink");
    let port = good.addr().port();
    let bad = SmtpSink::start(Ipv4Addr::new(127, 0, 0, 3), port, Some(&pki().leaf(&["mx.enforce.test"])))
        .expect("sink");
    let testing =
        SmtpSink::start(Ipv4Addr::new(127, 0, 0, 4), port, Some(&pki().leaf(&["www.testing.test"])))
            .expect("sink");
    let server = world.serve("");

    // The Postfix instance: configuration, queue, hosts file.
    let w = world.dir.join("postfix");
    let (etc, queue, data) = (w.join("etc"), w.join("spool"), w.join("data"));
    for d in [&etc, &data] {
        std::fs::create_dir_all(d).expect("mkdir");
    }
    for sub in [
        "active", "bounce", "corrupt", "defer", "deferred", "flush", "hold", "incoming", "private", "saved",
        "trace", "maildrop", "public", "pid",
    ] {
        std::fs::create_dir_all(queue.join(sub)).expect("queue dir");
    }
    let chown = |who: &str, path: &Path| run(Command::new("chown").arg(who).arg(path));
    let chmod = |mode: &str, path: &Path| run(Command::new("chmod").arg(mode).arg(path));
    for sub in [
        "active", "bounce", "corrupt", "defer", "deferred", "flush", "hold", "incoming", "private", "saved",
        "trace",
    ] {
        chown("daemon", &queue.join(sub));
        chmod("700", &queue.join(sub));
    }
    chown("daemon:mail", &queue.join("maildrop"));
    chmod("1730", &queue.join("maildrop"));
    chown("daemon:mail", &queue.join("public"));
    chmod("710", &queue.join("public"));
    chown("daemon", &data);
    let libs = root.join("usr/lib/postfix");
    let example =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/postfix/main.cf"))
            .expect("examples/postfix/main.cf")
            .replace("127.0.0.1:8461", &format!("127.0.0.1:{}", server.port()))
            .replace("/etc/ssl/certs/ca-certificates.crt", &world.dir.join("ca.pem").display().to_string());
    let maillog = w.join("maillog");
    std::fs::write(
        etc.join("main.cf"),
        format!(
            "compatibility_level = 3.6\nqueue_directory = {q}\ndata_directory = {d}\ndaemon_directory = {r}/usr/lib/postfix/sbin\n\
             command_directory = {r}/usr/sbin\nshlib_directory = {r}/usr/lib/postfix\nmeta_directory = {e}\n\
             mail_owner = daemon\nsetgid_group = mail\nmyhostname = sender.test\nmydomain = sender.test\nmyorigin = sender.test\n\
             mydestination =\nlocal_transport = error:no local delivery\nalias_maps =\nalias_database =\ninet_interfaces = loopback-only\n\
             inet_protocols = ipv4\nmaillog_file = {log}\nmaillog_file_prefixes = {w}\nimport_environment = MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ LANG=C LD_LIBRARY_PATH={libs}\n\
             smtp_tcp_port = {port}\n\
             smtp_connection_cache_on_demand = no\nbounce_queue_lifetime = 0\n\
             mynetworks = 127.0.0.0/8\nsmtpd_relay_restrictions = permit_mynetworks, reject\n\n{example}\n\
             # After the example, which asks for DNSSEC lookups: this Postfix cannot reach the\n\
             # DNS fixture, so names come from the private hosts file.\n\
             smtp_dns_support_level = disabled\nsmtp_host_lookup = native\n",
            q = queue.display(),
            d = data.display(),
            r = root.display(),
            e = etc.display(),
            log = maillog.display(),
            w = w.display(),
            libs = libs.display(),
        ),
    )
    .expect("main.cf");
    let services = [
        ("pickup", "unix", "n", "60", "1", "pickup"),
        ("cleanup", "unix", "n", "-", "0", "cleanup"),
        ("qmgr", "unix", "n", "300", "1", "qmgr"),
        ("tlsmgr", "unix", "-", "1000?", "1", "tlsmgr"),
        ("rewrite", "unix", "-", "-", "-", "trivial-rewrite"),
        ("bounce", "unix", "-", "-", "0", "bounce"),
        ("defer", "unix", "-", "-", "0", "bounce"),
        ("trace", "unix", "-", "-", "0", "bounce"),
        ("verify", "unix", "-", "-", "1", "verify"),
        ("flush", "unix", "n", "1000?", "0", "flush"),
        ("proxymap", "unix", "-", "-", "-", "proxymap"),
        ("smtp", "unix", "-", "-", "-", "smtp"),
        ("showq", "unix", "n", "-", "-", "showq"),
        ("error", "unix", "-", "-", "-", "error"),
        ("retry", "unix", "-", "-", "-", "error"),
        ("discard", "unix", "-", "-", "-", "discard"),
        ("anvil", "unix", "-", "-", "1", "anvil"),
        ("scache", "unix", "-", "-", "1", "scache"),
        ("postlog", "unix-dgram", "n", "-", "1", "postlogd"),
    ];
    let submit_port =
        std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
    let master_cf: String = services
        .iter()
        .map(|(name, kind, private, wakeup, limit, cmd)| {
            format!("{name} {kind} {private} - n {wakeup} {limit} {cmd}\n")
        })
        .collect::<String>()
        + &format!("127.0.0.1:{submit_port} inet n - n - - smtpd\n");
    std::fs::write(etc.join("master.cf"), master_cf).expect("master.cf");
    let hosts = w.join("hosts");
    std::fs::write(
        &hosts,
        "127.0.0.1 localhost\n127.0.0.2 enforce.test\n127.0.0.3 badcert.test\n127.0.0.4 testing.test\n",
    )
    .expect("hosts");

    let master = root.join("usr/lib/postfix/sbin/master");
    let mut master = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "mount --bind '{}' /etc/hosts && exec '{}' -c '{}' -d",
            hosts.display(),
            master.display(),
            etc.display()
        ))
        .env("LD_LIBRARY_PATH", &libs)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the Postfix master");
    struct Kill(Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
            let _ = self.0.wait();
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", submit_port)).is_err() {
        assert!(Instant::now() < deadline, "the Postfix master did not start");
        assert!(master.try_wait().expect("wait").is_none(), "the Postfix master exited");
        std::thread::sleep(Duration::from_millis(100));
    }
    let _master = Kill(master);

    // Submission over SMTP to Postfix's smtpd (the sendmail command strips LD_LIBRARY_PATH
    // before running postdrop, which the unpacked tree needs).
    for rcpt in ["user@enforce.test", "user@badcert.test", "user@testing.test"] {
        submit(submit_port, rcpt);
    }

    let log = || std::fs::read_to_string(&maillog).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = |l: &str| {
        l.contains("to=<user@enforce.test>")
            && l.contains("to=<user@testing.test>")
            && l.contains("to=<user@badcert.test>")
    };
    while !done(&log()) {
        assert!(Instant::now() < deadline, "Postfix did not try all three deliveries:\n{}", log());
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = log();
    let line =
        |rcpt: &str| log.lines().rfind(|l| l.contains(&format!("to=<{rcpt}>"))).unwrap_or("").to_owned();
    // Good MX: sent, over a verified TLS connection.
    assert!(line("user@enforce.test").contains("status=sent"), "{log}");
    assert!(log.contains("Verified TLS connection established to enforce.test"), "{log}");
    let got = good.messages();
    assert_eq!(got.len(), 1, "{log}");
    assert!(got[0].tls && got[0].rcpt_to == ["user@enforce.test"]);
    // Wrong certificate name for the policy: deferred, nothing delivered.
    let badline = line("user@badcert.test");
    assert!(badline.contains("status=deferred"), "{log}");
    assert!(bad.messages().is_empty());
    // testing: delivered although the certificate does not match.
    assert!(line("user@testing.test").contains("status=sent"), "{log}");
    assert_eq!(testing.messages().len(), 1);
    // The policy lookups went to mtasts serve.
    drop(server);
    eprintln!("{log}");
}

/// Submits a one-line message to `rcpt` over SMTP on 127.0.0.1:`port`.
fn submit(port: u16, rcpt: &str) {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to smtpd");
    stream.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut w = stream;
    let mut expect = |code: &str| loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("smtpd reply");
        assert!(line.starts_with(code), "expected {code}, got {line:?}");
        if line.as_bytes().get(3) != Some(&b'-') {
            break;
        }
    };
    expect("220");
    for (cmd, code) in [
        ("EHLO client.test".to_owned(), "250"),
        ("MAIL FROM:<sender@sender.test>".to_owned(), "250"),
        (format!("RCPT TO:<{rcpt}>"), "250"),
        ("DATA".to_owned(), "354"),
        (format!("Subject: MTA-STS test to {rcpt}\r\n\r\nHello.\r\n."), "250"),
        ("QUIT".to_owned(), "221"),
    ] {
        write!(w, "{cmd}\r\n").expect("send");
        expect(code);
    }
}

/// The DANE world of the socketmap tests: zones signed at test time under `test.` (trust anchor
/// in the configuration, `[dns] dnssec = "validate"`) and MTA-STS policies on the HTTPS fixture.
///
/// The provider zone `dane.test` (signed) holds the MX hosts: `mx1` and `mx2` publish a usable
/// `3 1 1` record, `weak` only a PKIX-EE `1 1 1` one (unusable for SMTP), `plain` none, `bogus` a
/// spoiled TLSA RRset, and the TLSA name of `lame` answers SERVFAIL. For every row of
/// [`DANE_TABLE`] (a row of the README table "DANE in socketmap replies") and every MTA-STS
/// mode of [`MODES`], the policy domain `ROW-MODE.test` is a zone of its own whose MX RRset names
/// the row's hosts.
struct DaneWorld {
    world: mtasts_fixtures::world::World,
    config: PathBuf,
}

/// A row of the README table: (name, DANE-SM id, MX RRset, MX hosts in `dane.test`).
struct DaneRow {
    name: &'static str,
    id: &'static str,
    mx: MxKind,
    hosts: &'static [&'static str],
}

/// How the fixture serves a row's MX RRset.
#[derive(Clone, Copy, PartialEq, Eq)]
enum MxKind {
    Secure,
    Insecure,
    Bogus,
    Servfail,
}

const DANE_TABLE: &[DaneRow] = &[
    DaneRow { name: "sall", id: "DANE-SM-4", mx: MxKind::Secure, hosts: &["mx1", "mx2"] },
    DaneRow { name: "sweak", id: "DANE-SM-5", mx: MxKind::Secure, hosts: &["mx1", "weak"] },
    DaneRow { name: "ssome", id: "DANE-SM-6/7", mx: MxKind::Secure, hosts: &["mx1", "plain"] },
    DaneRow { name: "snone", id: "DANE-SM-3", mx: MxKind::Secure, hosts: &["plain"] },
    DaneRow { name: "iall", id: "DANE-SM-8", mx: MxKind::Insecure, hosts: &["mx1", "mx2"] },
    DaneRow { name: "isome", id: "DANE-SM-8", mx: MxKind::Insecure, hosts: &["mx1", "plain"] },
    DaneRow { name: "inone", id: "DANE-SM-3", mx: MxKind::Insecure, hosts: &["plain"] },
    DaneRow { name: "bogusmx", id: "DANE-SM-1", mx: MxKind::Bogus, hosts: &["mx1"] },
    DaneRow { name: "failmx", id: "DANE-SM-1", mx: MxKind::Servfail, hosts: &["mx1"] },
    DaneRow { name: "bogustlsa", id: "DANE-SM-2", mx: MxKind::Secure, hosts: &["mx1", "bogus"] },
    DaneRow { name: "lametlsa", id: "DANE-SM-2", mx: MxKind::Secure, hosts: &["lame"] },
];

/// The MTA-STS columns of the table: a policy of each mode, and none at all.
const MODES: &[&str] = &["enforce", "testing", "none", "nopolicy"];

/// The reply the README table gives for `row` and `mode` (a reply ending in `*` is a prefix).
fn dane_expected(row: &DaneRow, mode: &str, strict_testing: bool) -> String {
    let domain = format!("{}-{mode}.test", row.name);
    let in_force = mode == "enforce" || (mode == "testing" && strict_testing);
    let sts = if in_force {
        let patterns: Vec<String> = row.hosts.iter().map(|h| format!("{h}.dane.test")).collect();
        format!("OK secure match={} servername=hostname", patterns.join(":"))
    } else {
        "NOTFOUND ".to_owned()
    };
    match row.name {
        "sall" => "OK dane-only".into(),
        "sweak" | "iall" | "isome" => "OK dane".into(),
        "ssome" if in_force => "OK dane-only".into(),
        "ssome" => "OK dane".into(),
        "snone" | "inone" => sts,
        "bogusmx" => format!("TEMP the MX RRset of {domain} did not validate (bogus)*"),
        "failmx" => format!("TEMP the MX RRset of {domain} could not be looked up*"),
        "bogustlsa" => {
            format!(
                "TEMP the TLSA records of bogus.dane.test, an MX host of {domain}, did not validate (bogus)*"
            )
        }
        "lametlsa" => {
            format!(
                "TEMP the TLSA records of lame.dane.test, an MX host of {domain}, could not be looked up*"
            )
        }
        other => panic!("no expectation for row {other}"),
    }
}

/// Every cell of the table: (DANE-SM id, key, expected reply), then keys that are no policy
/// domain.
fn dane_cells(strict_testing: bool) -> Vec<(&'static str, String, String)> {
    let mut cells = Vec::new();
    for row in DANE_TABLE {
        for mode in MODES {
            cells.push((
                row.id,
                format!("{}-{mode}.test", row.name),
                dane_expected(row, mode, strict_testing),
            ));
        }
    }
    cells.push(("DANE-SM-3", ".sall-enforce.test".into(), "NOTFOUND ".into()));
    cells.push(("DANE-SM-3", "[mx1.dane.test]:25".into(), "NOTFOUND ".into()));
    cells
}

impl DaneWorld {
    fn start(name: &str, serve: &str) -> Self {
        use hickory_proto::rr::rdata::TXT;
        use hickory_proto::rr::{RData, RecordType};
        use mtasts_fixtures::dnssec::{AnchorForm, ZoneSet};
        let world = mtasts_fixtures::world::World::start(&format!("serve-dane-{name}")).expect("fixtures");
        let lo = Ipv4Addr::LOCALHOST;
        let digest = [0x5a; 32];
        let mut z = ZoneSet::new("test");
        z.zone("dane.test", true);
        for host in ["mx1", "mx2", "weak", "plain", "bogus", "lame"] {
            z.a(&format!("{host}.dane.test"), lo);
        }
        z.tlsa("_25._tcp.mx1.dane.test", 3, 1, 1, &digest)
            .tlsa("_25._tcp.mx2.dane.test", 3, 1, 1, &digest)
            .tlsa("_25._tcp.weak.dane.test", 1, 1, 1, &digest)
            .tlsa("_25._tcp.bogus.dane.test", 3, 1, 1, &digest)
            .spoil("_25._tcp.bogus.dane.test", RecordType::TLSA)
            .tlsa("_25._tcp.lame.dane.test", 3, 1, 1, &digest);
        let mut servfail = Vec::new();
        for row in DANE_TABLE {
            for mode in MODES {
                let domain = format!("{}-{mode}.test", row.name);
                z.zone(&domain, row.mx != MxKind::Insecure);
                for (i, host) in row.hosts.iter().enumerate() {
                    z.mx(&domain, 10 * (u16::try_from(i).expect("few") + 1), &format!("{host}.dane.test"));
                }
                match row.mx {
                    MxKind::Bogus => {
                        z.spoil(&domain, RecordType::MX);
                    }
                    MxKind::Servfail => servfail.push(domain.clone()),
                    MxKind::Secure | MxKind::Insecure => {}
                }
                if *mode != "nopolicy" {
                    z.add(&format!("_mta-sts.{domain}"), RData::TXT(TXT::new(vec!["v=STSv1; id=1".into()])))
                        .a(&format!("mta-sts.{domain}"), lo);
                    let patterns: Vec<String> = row.hosts.iter().map(|h| format!("{h}.dane.test")).collect();
                    let patterns: Vec<&str> = patterns.iter().map(String::as_str).collect();
                    // The HTTPS side only: DNS comes from the signed zones.
                    world.publish(&domain, "1", &policy(mode, &patterns));
                }
            }
        }
        let zones = z.sign();
        let anchor = world.path("anchor");
        std::fs::write(&anchor, format!("{}\n", zones.trust_anchor(AnchorForm::Ds))).expect("anchor");
        world.dns.serve_zones(zones);
        for domain in &servfail {
            world.dns.set_servfail(domain);
        }
        world.dns.set_servfail("_25._tcp.lame.dane.test");
        let base = world.base_config(true).replacen("timeout_ms = 3000", "timeout_ms = 10000", 1).replace(
            "dnssec = \"off\"",
            &format!("dnssec = \"validate\"\ntrust_anchor = \"{}\"", anchor.display()),
        );
        let config = world.write_config_text(&format!("{base}[cache]\npath = \"memory\"\n{serve}"));
        Self { world, config }
    }

    fn serve(&self) -> Server {
        Server::start(&self.config, "inet:127.0.0.1:0")
    }
}

/// Whether `reply` is what a cell expects.
fn dane_row_matches(reply: &str, want: &str) -> bool {
    want.strip_suffix('*').map_or(reply == want, |prefix| reply.starts_with(prefix))
}

/// Every cell of the README table "DANE in socketmap replies" (each row × each MTA-STS mode)
/// through `mtasts serve`, over the socketmap protocol, against the signed fixture zones
/// (DANE-SM-1 to DANE-SM-8); DANE-SM-9: Sendmail's map name gets the same replies.
#[test]
fn dane_replies_for_each_row_of_the_table() {
    let w = DaneWorld::start("rows", "");
    let server = w.serve();
    let mut c = server.connect();
    let cells = dane_cells(false);
    assert_eq!(cells.len(), DANE_TABLE.len() * MODES.len() + 2);
    for (id, key, want) in &cells {
        let reply = c.lookup(key);
        assert!(dane_row_matches(&reply, want), "{id} {key}: {reply:?}, want {want:?}\n{}", server.stderr());
    }
    // Answered again from the engine's caches: the same replies.
    for (id, key, want) in &cells {
        let reply = c.lookup(key);
        assert!(dane_row_matches(&reply, want), "{id} {key} (cached): {reply:?}, want {want:?}");
    }
    // Sendmail's map name gets the same replies.
    c.send(&netstring("sts sall-none.test"));
    assert_eq!(c.reply().as_deref(), Some("OK dane-only"));
}

/// With `strict_testing` a `testing` policy is in force: DANE on some MX hosts gives the stricter
/// `dane-only` (DANE-SM-6), and without TLSA records the `secure match=` reply; with
/// `[dns] dnssec = "off"` every reply is the MTA-STS one.
#[test]
fn dane_replies_follow_strict_testing_and_dnssec_off() {
    let w = DaneWorld::start("strict", "[serve]\nstrict_testing = true\n");
    let server = w.serve();
    let mut c = server.connect();
    for (id, key, want) in dane_cells(true) {
        let reply = c.lookup(&key);
        assert!(dane_row_matches(&reply, &want), "{id} {key} (strict_testing): {reply:?}, want {want:?}");
    }
    assert_eq!(c.lookup("ssome-testing.test"), "OK dane-only");
    drop(server);
    let text = std::fs::read_to_string(&w.config).expect("config");
    let text = text.replace("dnssec = \"validate\"", "dnssec = \"off\"");
    let text: String =
        text.lines().filter(|l| !l.starts_with("trust_anchor")).map(|l| format!("{l}\n")).collect();
    std::fs::write(&w.config, text).expect("config");
    let server = w.serve();
    assert_eq!(
        server.lookup("sall-enforce.test"),
        "OK secure match=mx1.dane.test:mx2.dane.test servername=hostname"
    );
    assert_eq!(server.lookup("bogusmx-enforce.test"), "OK secure match=mx1.dane.test servername=hostname");
    assert_eq!(server.lookup("sall-nopolicy.test"), "NOTFOUND ");
}

/// Every row of the README table "DANE in socketmap replies" as Postfix's own `postmap -q` sees
/// it through `socketmap:` (Postfix 3.7 unpacked by `bash tests/e2e/postfix/run.sh`, which runs
/// this test): `OK x` prints `x` and exits 0, `NOTFOUND ` exits 1 silently, `TEMP` exits 1
/// with a fatal error (a lookup error: Postfix defers the mail).
#[test]
#[ignore = "needs an unpacked Postfix: bash tests/e2e/postfix/run.sh"]
fn postfix_postmap_dane_rows() {
    let root = PathBuf::from(std::env::var_os("MTASTS_E2E_POSTFIX_ROOT").expect("MTASTS_E2E_POSTFIX_ROOT"));
    let w = DaneWorld::start("postmap", "");
    let server = w.serve();
    let etc = w.world.path("postfix-etc");
    std::fs::create_dir_all(&etc).expect("mkdir");
    let example =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/postfix/main.cf"))
            .expect("examples/postfix/main.cf")
            .replace("127.0.0.1:8461", &format!("127.0.0.1:{}", server.port()));
    std::fs::write(
        etc.join("main.cf"),
        format!("compatibility_level = 3.6\nmail_owner = daemon\nsetgid_group = mail\n{example}"),
    )
    .expect("main.cf");
    let libs = root.join("usr/lib/postfix");
    let map = format!("socketmap:inet:127.0.0.1:{}:postfix", server.port());
    for (id, key, want) in &dane_cells(false) {
        let out = Command::new(root.join("usr/sbin/postmap"))
            .arg("-c")
            .arg(&etc)
            .args(["-q", key.as_str(), &map])
            .env("LD_LIBRARY_PATH", &libs)
            .output()
            .expect("postmap");
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout).trim_end().to_owned(),
            String::from_utf8_lossy(&out.stderr),
        );
        let code = out.status.code();
        if let Some(value) = want.strip_prefix("OK ") {
            assert!(
                code == Some(0) && dane_row_matches(&stdout, value) && !stderr.contains("fatal"),
                "{id} postmap -q {key}: {code:?} {stdout:?} {stderr}"
            );
        } else if want.starts_with("TEMP ") {
            assert!(
                code == Some(1) && stdout.is_empty() && stderr.contains("fatal"),
                "{id} postmap -q {key}: {code:?} {stdout:?} {stderr}"
            );
        } else {
            assert!(
                code == Some(1) && stdout.is_empty() && !stderr.contains("fatal"),
                "{id} postmap -q {key}: {code:?} {stdout:?} {stderr}"
            );
        }
        eprintln!(
            "ok   {id} postmap -q {key} -> {code:?} {stdout:?} {}",
            stderr.lines().next().unwrap_or("")
        );
    }
}

/// Profiles as Postfix 3.7's own `postmap -q` sees them (unpacked by
/// `bash tests/e2e/postfix/run.sh`, which runs this test): one server, two map names in
/// `socketmap:inet:127.0.0.1:PORT:NAME`, two different replies for the same key; a third name
/// without a profile gets the `[serve]` reply.
#[test]
#[ignore = "needs an unpacked Postfix: bash tests/e2e/postfix/run.sh"]
fn postfix_postmap_profiles() {
    let root = PathBuf::from(std::env::var_os("MTASTS_E2E_POSTFIX_ROOT").expect("MTASTS_E2E_POSTFIX_ROOT"));
    let world = World::new("postmap-profiles");
    let server = world.serve(
        "[serve.profile.postfix37]\n[serve.profile.postfix310]\npostfix_tlsrpt = true\nstrict_testing = true\n",
    );
    let etc = world.path("postfix-etc");
    std::fs::create_dir_all(&etc).expect("mkdir");
    std::fs::write(
        etc.join("main.cf"),
        "compatibility_level = 3.6\nmail_owner = daemon\nsetgid_group = mail\n",
    )
    .expect("main.cf");
    let postmap = |name: &str, key: &str| {
        let map = format!("socketmap:inet:127.0.0.1:{}:{name}", server.port());
        let out = Command::new(root.join("usr/sbin/postmap"))
            .arg("-c")
            .arg(&etc)
            .args(["-q", key, &map])
            .env("LD_LIBRARY_PATH", root.join("usr/lib/postfix"))
            .output()
            .expect("postmap");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("fatal"), "postmap -q {key} {map}: {stderr}");
        let stdout = String::from_utf8_lossy(&out.stdout).trim_end().to_owned();
        eprintln!("ok   postmap -q {key} {map} -> {:?} {stdout:?}", out.status.code());
        (out.status.code(), stdout)
    };
    let secure = "secure match=mx.enforce.test:.backup.enforce.test servername=hostname";
    assert_eq!(postmap("postfix37", "enforce.test"), (Some(0), secure.to_owned()));
    let (code, tlsrpt) = postmap("postfix310", "enforce.test");
    assert_eq!(code, Some(0));
    assert!(
        tlsrpt.starts_with(&format!(
            "{secure} policy_type=sts policy_domain=enforce.test mx_host_pattern=mx.enforce.test "
        )),
        "{tlsrpt}"
    );
    assert_eq!(postmap("postfix37", "testing.test"), (Some(1), String::new()));
    let (code, testing) = postmap("postfix310", "testing.test");
    assert!(
        code == Some(0)
            && testing.starts_with("secure match=mx.testing.test servername=hostname policy_type=sts"),
        "{testing}"
    );
    assert_eq!(postmap("postfix", "enforce.test"), (Some(0), secure.to_owned()));
    assert_eq!(postmap("postfix", "testing.test"), (Some(1), String::new()));
}

/// What a Sendmail operator gets for DANE destinations (README "DANE in socketmap replies"):
/// Debian 12's sendmail 8.17 (unpacked by `bash tests/e2e/sendmail/run.sh`, which runs this test:
/// `MTASTS_E2E_SENDMAIL_ROOT`), its `FEATURE(sts)` rulesets built by m4 from
/// `examples/sendmail/sts.mc`, in address test mode. Sendmail receives the same replies as
/// Postfix; `STS_Check` acts only on `secure` ones, so a `dane-only` or `dane` destination gets no
/// MTA-STS check (any MX is accepted), a DNSSEC failure (`TEMP`) defers with 450, and a
/// destination without TLSA records keeps its MTA-STS check.
#[test]
#[ignore = "needs an unpacked Sendmail: bash tests/e2e/sendmail/run.sh"]
fn sendmail_sts_check_of_dane_replies() {
    let root = PathBuf::from(std::env::var_os("MTASTS_E2E_SENDMAIL_ROOT").expect("MTASTS_E2E_SENDMAIL_ROOT"));
    let w = DaneWorld::start("sendmail", "");
    let server = w.serve();
    // Sendmail refuses configuration files in world-writable directories such as /tmp.
    std::fs::create_dir_all("/var/tmp/mtasts-e2e").expect("mkdir");
    let dir = PathBuf::from(format!("/var/tmp/mtasts-e2e/sendmail-dane-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    run(Command::new("chmod").arg("755").arg(&dir));
    struct Remove(PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _remove = Remove(dir.clone());
    let libs = root.join("usr/lib/x86_64-linux-gnu");
    let cf_dir = root.join("usr/share/sendmail/cf");
    let mc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/sendmail/sts.mc"))
        .expect("examples/sendmail/sts.mc")
        .replace("inet:8461@127.0.0.1", &format!("inet:{}@127.0.0.1", server.port()));
    std::fs::write(dir.join("sts.mc"), mc).expect("sts.mc");
    let cf = run(Command::new(root.join("usr/bin/m4"))
        .arg(format!("-D_CF_DIR_={}/", cf_dir.display()))
        .arg(cf_dir.join("m4/cf.m4"))
        .arg(dir.join("sts.mc"))
        .env("LD_LIBRARY_PATH", &libs));
    std::fs::write(dir.join("sts.cf"), cf).expect("sts.cf");
    // Sendmail waits 60 s at start when it cannot qualify the host name: a private /etc/hosts
    // that gives it a domain, bind-mounted in a mount namespace of this sendmail only.
    let host = run(&mut Command::new("hostname")).trim().to_owned();
    let hosts = format!(
        "127.0.0.1\t{host}.localdomain {host} localhost\n{}",
        std::fs::read_to_string("/etc/hosts").unwrap_or_default()
    );
    std::fs::write(dir.join("hosts"), hosts).expect("hosts");
    let sendmail = root.join("usr/libexec/sendmail/sendmail");
    let bt = |input: &str| {
        let mut child = Command::new("unshare")
            .args(["-m", "sh", "-c", "mount --bind \"$1\" /etc/hosts && shift && exec \"$@\"", "sh"])
            .arg(dir.join("hosts"))
            .arg(&sendmail)
            .arg(format!("-C{}", dir.join("sts.cf").display()))
            .arg("-bt")
            .env("LD_LIBRARY_PATH", &libs)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sendmail -bt");
        child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("input");
        let out = child.wait_with_output().expect("sendmail -bt");
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    };
    let sts_check = |rcpt: &str, mx: &str| {
        bt(&format!(
            ".D{{rcpt_addr}}{rcpt}\n.D{{server_name}}{mx}\n.C{{cert_altnames}}{mx}\nSTS_Check {rcpt}\n"
        ))
    };
    // `STS_Check` said `ok`: the rules let the delivery go on.
    let accepted =
        |out: &str| out.lines().any(|l| l.contains("STS_Check") && l.trim_end().ends_with("returns: ok"));
    let out = bt("/map sts sall-enforce.test\n/map sts isome-enforce.test\n");
    assert!(out.contains("sts (sall-enforce.test) returns dane-only"), "{out}");
    assert!(out.contains("sts (isome-enforce.test) returns dane"), "{out}");
    // dane-only / dane: FEATURE(sts) makes no check, even for a host the MTA-STS policy omits.
    for rcpt in ["user@sall-enforce.test", "user@ssome-enforce.test", "user@isome-enforce.test"] {
        let out = sts_check(rcpt, "evil.example");
        assert!(accepted(&out), "{rcpt}: {out}");
    }
    // A DNSSEC failure: TEMP, which the -T<TMPF> map flag turns into a 450.
    for rcpt in ["user@bogusmx-enforce.test", "user@bogustlsa-enforce.test"] {
        let out = sts_check(rcpt, "mx1.dane.test");
        assert!(out.contains("450 STS lookup temp fail"), "{rcpt}: {out}");
    }
    // No TLSA records: the MTA-STS check as before.
    let out = sts_check("user@snone-enforce.test", "evil.example");
    assert!(out.contains("450 evil . example not found in"), "{out}");
    let out = sts_check("user@snone-enforce.test", "plain.dane.test");
    assert!(accepted(&out), "{out}");
}
