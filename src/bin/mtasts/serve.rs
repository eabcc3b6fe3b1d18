//! `mtasts serve`: a socketmap server (Postfix `smtp_tls_policy_maps`, Sendmail `FEATURE(sts)`).
//!
//! ```text
//! mtasts serve [--config FILE] [--listen inet:127.0.0.1:8461|unix:/path] [--cache PATH|memory]
//! ```
//!
//! Protocol (socketmap_table(5)): each request is a netstring `LEN:NAME KEY,`, each reply a
//! netstring; a connection carries any number of them, and pipelined requests are answered in
//! order, with one write per batch (or per [`MAX_PENDING_OUTPUT`] bytes of replies). The replies
//! are those of docs/architecture.md §6.3, see [`reply`]; where DANE applies to a destination, the
//! DANE reply of [`dane`] replaces the MTA-STS one (README "DANE in socketmap replies").
//!
//! * One thread per connection (buffered reads and writes); the engine answers repeated lookups
//!   from a per-thread copy of its cache, without locks. A thread whose connection ended waits
//!   up to 10 s for the next one before it exits ([`WORKER_IDLE`]).
//! * Requests longer than `[serve] max_request_bytes`, and anything that is not a netstring, close
//!   that connection (and only that one): the client has lost the framing. A length has no
//!   leading zero (`0:` aside), so no more digits than `max_request_bytes` has.
//! * A connection is closed when it is idle between requests (or stalled mid-request) for
//!   `[serve] idle_timeout_ms`, when a request is not whole `[serve] request_timeout_ms` after
//!   its first byte however the bytes trickle in, or when the client does not take a write of
//!   replies within `request_timeout_ms`. At most `[serve] max_connections` are served at once,
//!   further ones wait in the listen queue: slow clients hold a slot for `request_timeout_ms`
//!   (or `idle_timeout_ms` when idle), not for as long as they like.
//! * One connection holds at most one request and [`MAX_PENDING_OUTPUT`] bytes of replies plus
//!   one: a client that pipelines requests without reading its replies is not read any further
//!   until it takes them.
//! * One engine for the whole process, with the persistent store of `[cache]`, and a background
//!   refresher thread ([`refresher`]). New policies are written to the store in batches by a
//!   thread of their own ([`write_behind`]): a lookup never waits for a store write, and the queue
//!   is written out at SIGTERM/SIGINT and, for the engine replaced, at SIGHUP.
//! * SIGTERM or SIGINT: stop accepting, let each connection finish the requests it has received,
//!   close it, remove the unix socket, exit 0. Connections still busy after 5 s are abandoned.
//! * SIGHUP: read the configuration file again and build a new engine from it, which takes over
//!   the in-process policy cache of the one in use ([`Reloader`]); connections keep going, each
//!   switching to the new engine at its next request. A configuration that does not load is
//!   reported and the one in force kept. Listeners, connection limits and the refresher's
//!   interval stay as they were at start.
//! * systemd ([`systemd`]): `READY=1`, `RELOADING=1`, `STOPPING=1` and watchdog pings when
//!   `$NOTIFY_SOCKET` is set; the listening sockets of socket activation (`$LISTEN_FDS`) instead
//!   of `[serve] listen`. A `unix:` socket the server binds itself gets `[serve] socket_mode`,
//!   `socket_owner` and `socket_group`.
//!
//! * TLSRPT: with `[serve] tlsrpt_socket` (or `--tlsrpt-socket`), a unix datagram socket takes the
//!   per-session datagrams of Postfix 3.10 (`smtp_tlsrpt_socket_name`) and adds them to the
//!   engine's TLSRPT counts ([`collect`]: a reader and a counting thread, docs/tlsrpt-collect.md); its file gets
//!   `tlsrpt_socket_mode`, `tlsrpt_socket_owner` and `tlsrpt_socket_group`.
//! * The library's checks: with `[serve] check_socket`, a unix stream socket where the calls of
//!   the library's engines (`mtasts_check`, Exim's) are judged by this server's engine and their
//!   sessions counted ([`check`]; docs/architecture.md, "Checks handed to mtasts serve"); its
//!   connections are served like socketmap ones, with requests of up to 256 KiB; its file gets
//!   `check_socket_mode`, `check_socket_owner` and `check_socket_group`.
//!
//! Standard output gets one line per listener, `listening on inet:127.0.0.1:8461` (the real port
//! when 0 was asked for), one more, `metrics on inet:127.0.0.1:9461`, when Prometheus metrics
//! are served ([`metrics`], `--metrics` or `[serve] metrics_listen`), and `tlsrpt on
//! unix:/path` when TLSRPT datagrams are taken, and `checks on unix:/path` for the check socket;
//! everything else goes to standard error.

mod check;
mod collect;
mod dane;
mod metrics;
mod refresher;
mod reply;
mod settings;
mod systemd;
mod write_behind;

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mtasts::Engine;
use mtasts::cache::{PolicyStore, Stores};
use mtasts::config::Config;
use mtasts::dns::Lifetime;
use mtasts::engine::RecordState;
use mtasts::ports::TlsaLookup;
use parking_lot::{Condvar, Mutex};

use refresher::{Known, Stop};
use reply::{Frame, Options, Request};

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// Configuration file (default: $MTASTS_CONFIG, else /etc/mtasts/mtasts.toml if present).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where to listen, instead of [serve] listen: `inet:HOST:PORT` or `unix:/path`.
    #[arg(long, value_name = "inet:HOST:PORT|unix:PATH")]
    listen: Option<String>,
    /// Policy store: a SQLite file, or `memory` (default: [cache] path of the configuration).
    #[arg(long, value_name = "PATH|memory")]
    cache: Option<String>,
    /// Serve Prometheus metrics at http://HOST:PORT/metrics, instead of [serve] metrics_listen.
    #[arg(long, value_name = "inet:HOST:PORT")]
    metrics: Option<String>,
    /// Take Postfix 3.10's TLSRPT datagrams on this unix datagram socket (an absolute path),
    /// instead of [serve] tlsrpt_socket.
    #[arg(long, value_name = "PATH")]
    tlsrpt_socket: Option<PathBuf>,
}

/// How long connections get to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Replies of one connection waiting to be written: once this many bytes are, the connection
/// answers (and reads) nothing more until they are written, so a client that pipelines requests
/// and never reads its replies holds at most this plus one reply (`reply::MAX_REPLY`).
const MAX_PENDING_OUTPUT: usize = 64 * 1024;

/// Where to listen.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Listen {
    Inet(SocketAddr),
    Unix(PathBuf),
}

impl Listen {
    fn parse(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(format!("listen address `{s}`: empty socket path"));
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        let addr = s.strip_prefix("inet:").unwrap_or(s);
        addr.parse::<SocketAddr>().map(Self::Inet).map_err(|_| {
            format!(
                "listen address `{s}`: write inet:IP:PORT (inet:127.0.0.1:8461, inet:[::1]:8461) or unix:/path"
            )
        })
    }
}

/// What a listener's connections speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    /// Socketmap lookups (Postfix, Sendmail).
    Socketmap,
    /// The library's checks (`[serve] check_socket`, [`check`]).
    Check,
}

/// A bound listener.
enum Listener {
    Inet(TcpListener),
    /// `remove`: the socket file the server made, removed at exit (`None` for a socket passed
    /// by systemd, which owns its file).
    Unix {
        listener: UnixListener,
        addr: UnixAddr,
        remove: Option<PathBuf>,
    },
}

impl Listener {
    /// Binds `listen`; a `unix:` socket then gets the owner, group and mode of `access`.
    fn bind(listen: &Listen, access: &settings::SocketAccess) -> Result<Self, String> {
        match listen {
            Listen::Inet(addr) => TcpListener::bind(addr)
                .map(Self::Inet)
                .map_err(|e| format!("cannot listen on inet:{addr}: {e}")),
            Listen::Unix(path) => {
                remove_stale_socket(path)?;
                let (listener, addr) = access.bind(
                    path,
                    |p: &Path| UnixListener::bind(p),
                    |e| format!("cannot listen on unix:{}: {e}", path.display()),
                    |l| l.local_addr().map_err(|e| format!("unix:{}: {e}", path.display())),
                )?;
                Ok(Self::Unix { listener, addr, remove: Some(path.clone()) })
            }
        }
    }

    /// A listening socket passed by systemd.
    fn adopt(passed: systemd::Passed, name: &str) -> Result<Self, String> {
        let failed = |e: io::Error| format!("socket activation: the socket {name}: {e}");
        match passed {
            systemd::Passed::Inet(l) => {
                l.set_nonblocking(false).map_err(failed)?;
                Ok(Self::Inet(l))
            }
            systemd::Passed::Unix(listener) => {
                listener.set_nonblocking(false).map_err(failed)?;
                let addr = listener.local_addr().map_err(failed)?;
                Ok(Self::Unix { listener, addr, remove: None })
            }
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Inet(l) => l.local_addr().map_or_else(|_| "inet:?".into(), |a| format!("inet:{a}")),
            Self::Unix { addr, .. } => {
                use std::os::linux::net::SocketAddrExt as _;
                if let Some(path) = addr.as_pathname() {
                    format!("unix:{}", path.display())
                } else if let Some(name) = addr.as_abstract_name() {
                    format!("unix:@{}", String::from_utf8_lossy(name))
                } else {
                    "unix:(unnamed)".into()
                }
            }
        }
    }

    fn accept(&self) -> io::Result<Stream> {
        match self {
            Self::Inet(l) => {
                let (s, _) = l.accept()?;
                // Replies are small and answered at once: do not let Nagle hold them back.
                s.set_nodelay(true)?;
                Ok(Stream::Tcp(s))
            }
            Self::Unix { listener, .. } => listener.accept().map(|(s, _)| Stream::Unix(s)),
        }
    }

    /// A way to wake a blocked `accept` by connecting to it.
    fn waker(&self) -> Waker {
        match self {
            Self::Inet(l) => Waker::Inet(l.local_addr().ok().map(|mut a| {
                if a.ip().is_unspecified() {
                    a.set_ip(match a.ip() {
                        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
                    });
                }
                a
            })),
            Self::Unix { addr, .. } => Waker::Unix(addr.clone()),
        }
    }
}

enum Waker {
    Inet(Option<SocketAddr>),
    Unix(UnixAddr),
}

impl Waker {
    fn wake(&self) {
        let _ = match self {
            Self::Inet(Some(addr)) => TcpStream::connect_timeout(addr, Duration::from_secs(1)).map(drop),
            Self::Inet(None) => Ok(()),
            Self::Unix(addr) => UnixStream::connect_addr(addr).map(drop),
        };
    }
}

/// Removes a socket file left by a server that is gone; refuses to touch anything else.
fn remove_stale_socket(path: &Path) -> Result<(), String> {
    let Ok(meta) = std::fs::symlink_metadata(path) else { return Ok(()) };
    if !meta.file_type().is_socket() {
        return Err(format!("cannot listen on unix:{}: the file exists and is not a socket", path.display()));
    }
    if UnixStream::connect(path).is_ok() {
        return Err(format!("cannot listen on unix:{}: another server answers there", path.display()));
    }
    std::fs::remove_file(path).map_err(|e| format!("cannot remove the stale socket {}: {e}", path.display()))
}

/// A client connection.
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn try_clone(&self) -> io::Result<Self> {
        match self {
            Self::Tcp(s) => s.try_clone().map(Self::Tcp),
            Self::Unix(s) => s.try_clone().map(Self::Unix),
        }
    }

    /// Sets the read timeout; `t` is never zero.
    fn set_read_timeout(&self, t: Duration) -> io::Result<()> {
        match self {
            Self::Tcp(s) => s.set_read_timeout(Some(t)),
            Self::Unix(s) => s.set_read_timeout(Some(t)),
        }
    }

    /// Sets the write timeout; `t` is never zero.
    fn set_write_timeout(&self, t: Duration) -> io::Result<()> {
        match self {
            Self::Tcp(s) => s.set_write_timeout(Some(t)),
            Self::Unix(s) => s.set_write_timeout(Some(t)),
        }
    }

    fn shutdown(&self, how: Shutdown) {
        let _ = match self {
            Self::Tcp(s) => s.shutdown(how),
            Self::Unix(s) => s.shutdown(how),
        };
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.read(buf),
            Self::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.write(buf),
            Self::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What a reload replaces: the engine (which took over the policy cache of the one before) and
/// the shape of replies.
struct Live {
    engine: Arc<Engine>,
    /// The identity of the configuration the engine was built from (`Config::identity`): the
    /// library's calls on the check socket are judged only under the same one.
    identity: String,
    replies: settings::Replies,
    /// Whether a request with a map name that has no profile was reported (once per
    /// configuration).
    unknown_name_seen: AtomicBool,
}

impl Live {
    fn new(engine: Arc<Engine>, identity: String, replies: settings::Replies) -> Self {
        Self { engine, identity, replies, unknown_name_seen: AtomicBool::new(false) }
    }

    /// The reply options for the map name of `payload`; the first name without a profile (when
    /// profiles are configured) is reported.
    fn options(&self, payload: &[u8]) -> Options {
        let name = reply::map_name(payload);
        let (options, known) = self.replies.select(name);
        if !known && !self.unknown_name_seen.swap(true, Ordering::Relaxed) {
            eprintln!(
                "mtasts serve: warning: socketmap name {:?} has no [serve.profile] table; the [serve] reply options apply to it \
                 (reported once per configuration: other names without a profile are not reported)",
                String::from_utf8_lossy(name)
            );
        }
        options
    }
}

/// The [`Live`] in force, and how many times it was replaced.
struct Current {
    live: Mutex<Arc<Live>>,
    generation: AtomicU64,
}

impl Current {
    fn new(live: Live) -> Self {
        Self { live: Mutex::new(Arc::new(live)), generation: AtomicU64::new(0) }
    }

    /// The one in force, with its generation.
    fn get(&self) -> (u64, Arc<Live>) {
        let live = self.live.lock();
        (self.generation.load(Ordering::SeqCst), Arc::clone(&live))
    }

    /// Brings a connection's `snapshot` up to date: one atomic read when nothing changed.
    fn refresh(&self, snapshot: &mut (u64, Arc<Live>)) {
        if self.generation.load(Ordering::SeqCst) != snapshot.0 {
            *snapshot = self.get();
        }
    }

    /// Puts `new` in force. The old engine is dropped (and its TLSRPT counts flushed) by the last
    /// connection still using it.
    fn replace(&self, new: Live) {
        let mut live = self.live.lock();
        let old = std::mem::replace(&mut *live, Arc::new(new));
        self.generation.fetch_add(1, Ordering::SeqCst);
        drop(live);
        drop(old);
    }
}

/// What the connection threads share.
struct Server {
    current: Current,
    max_request: u64,
    idle: Duration,
    /// The most a request may take to arrive from its first byte, and a write of replies to be
    /// taken by the client.
    request_timeout: Duration,
    max_connections: usize,
    known: Arc<Known>,
    stopping: AtomicBool,
    next_id: AtomicU64,
    /// Open connections (a clone of each stream, to wake its reader at shutdown).
    connections: Mutex<HashMap<u64, Stream>>,
    /// Signalled when a connection ends.
    ended: Condvar,
    /// Lookups, connections and refreshes, for `--metrics`.
    counters: Arc<metrics::Counters>,
    /// Hands a new connection to a thread that finished its last one and waits for another
    /// ([`worker`]); a rendezvous, so a send succeeds only when a thread is waiting.
    handoff: std::sync::mpsc::SyncSender<Job>,
    /// Where the waiting thread takes it (one thread waits in it at a time).
    waiting: Mutex<std::sync::mpsc::Receiver<Job>>,
}

/// A connection to serve.
struct Job {
    stream: Stream,
    id: u64,
    protocol: Protocol,
}

/// How long a connection thread waits for another connection after its last one ended, before
/// it exits. The library's checks (`check_socket`) come as one short connection per delivery:
/// a waiting thread takes the next at once, where a new thread would cost its start and its exit
/// on the path of the answer.
const WORKER_IDLE: Duration = Duration::from_secs(10);

impl Server {
    /// Answers one request payload, appending the reply netstring to `out`.
    fn answer(&self, live: &Live, payload: &[u8], scratch: &mut Vec<u8>, out: &mut Vec<u8>) {
        scratch.clear();
        match reply::parse_request(payload) {
            Request::Malformed(why) => {
                scratch.extend_from_slice(b"PERM ");
                scratch.extend_from_slice(why.as_bytes());
            }
            Request::NoPolicy => scratch.extend_from_slice(b"NOTFOUND "),
            Request::Domain(key) => match live.engine.policy(key) {
                Ok(Some(resolution)) => {
                    if resolution.record != RecordState::NotLooked {
                        self.slow_path(key, &resolution);
                    }
                    let options = live.options(payload);
                    live.sts_reply(key, &resolution, options, scratch);
                    live.dane_decision(key, scratch).apply(scratch);
                }
                // Address literals and names that are no domain names have no policy.
                Ok(None) | Err(_) => scratch.extend_from_slice(b"NOTFOUND "),
            },
        }
        self.counters.reply(scratch);
        reply::put_netstring(out, scratch);
    }

    /// After a lookup that asked DNS: remember the domain for the refresher, say why a policy
    /// could not be refreshed.
    fn slow_path(&self, key: &str, resolution: &mtasts::engine::Resolution) {
        if resolution.policy.is_some() {
            self.known.note(key);
        }
        if resolution.needs_attention() {
            if let Some(e) = &resolution.error {
                eprintln!(
                    "mtasts serve: warning: {key}: {}: {}; the cached policy stays in force",
                    e.reason, e.detail
                );
            }
        }
    }
}

impl Live {
    /// The MTA-STS reply for `key` (docs/architecture.md §6.3), as without DANE.
    fn sts_reply(
        &self,
        key: &str,
        resolution: &mtasts::engine::Resolution,
        options: Options,
        scratch: &mut Vec<u8>,
    ) {
        let policy = resolution.policy.as_deref();
        if policy.is_none() {
            if let Some(why) = self.engine.holds_mail_without_policy() {
                // `[engine] on_store_error = "tempfail"`: defer rather than send unprotected
                // while a stored policy cannot be read.
                scratch.extend_from_slice(b"TEMP ");
                scratch.extend_from_slice(why.as_bytes());
                return;
            }
        }
        if options.postfix_tlsrpt && policy.is_some() {
            let domain = mtasts::Domain::parse(key).map_or_else(|_| key.to_owned(), |d| d.to_string());
            reply::policy_reply(&domain, policy, options, scratch);
        } else {
            reply::policy_reply(key, policy, options, scratch);
        }
    }

    /// What DANE makes of the reply for `key` ([`dane`]): nothing when the engine does no DANE
    /// (`[dns] dnssec = "off"`), else the decision from the MX RRset and its hosts' TLSA states,
    /// all DNSSEC-validated and cached by the engine. `sts` is the MTA-STS reply.
    fn dane_decision(&self, key: &str, sts: &[u8]) -> dane::Decision {
        let Ok(domain) = mtasts::Domain::parse(key) else { return dane::Decision::MtaSts };
        let Some(mx) = self.engine.mx_state(&domain) else { return dane::Decision::MtaSts };
        let name = domain.to_string();
        let names = dane::mx_hosts(&name, &mx);
        let mut states = Vec::with_capacity(names.len());
        for host in &names {
            // A name that is no domain name has no TLSA records (and gets no mail either).
            let state = match mtasts::Domain::parse(host) {
                Ok(h) => self.engine.tlsa_state(&h),
                Err(_) => None,
            };
            states.push(state.unwrap_or_else(|| Arc::new(TlsaLookup::NotApplicable)));
        }
        let hosts: Vec<(&str, &TlsaLookup)> =
            names.iter().map(String::as_str).zip(states.iter().map(|s| &**s)).collect();
        let sts_secure = sts.starts_with(b"OK secure") || sts.starts_with(b"TEMP");
        dane::decide(&name, &mx, &hosts, sts_secure)
    }
}

impl Server {
    /// Serves one connection until EOF, an error, a framing error or a timeout.
    ///
    /// What one connection can cost is bounded: its input buffer holds at most one request
    /// ([`reply::max_frame_len`]), at most [`MAX_PENDING_OUTPUT`] bytes of replies (plus the one
    /// being added) wait to be written before it stops answering (and so reading), a request must
    /// arrive whole within `request_timeout` of its first byte, and each write of replies must be
    /// taken by the client within `request_timeout` too.
    fn serve(&self, mut stream: Stream, id: u64, protocol: Protocol) {
        let max = match protocol {
            Protocol::Socketmap => self.max_request,
            Protocol::Check => mtasts::remote::MAX_REQUEST as u64,
        };
        let limit = reply::max_frame_len(max);
        let mut buf = vec![0u8; limit.min(16 * 1024)];
        let (mut start, mut end) = (0usize, 0usize);
        let mut out = Vec::with_capacity(4096);
        let mut scratch = Vec::with_capacity(512);
        // When the server first saw bytes of the partial request in `buf[start..end]`.
        let mut request_began: Option<Instant> = None;
        // The read timeout the socket has now (set in `start_connection`).
        let mut read_timeout = self.idle;
        // The engine this connection uses, replaced between two requests after a reload.
        let mut live = self.current.get();
        loop {
            loop {
                match reply::parse_frame(&buf[start..end], max) {
                    Frame::Complete { start: s, end: e, len } => {
                        if out.len() >= MAX_PENDING_OUTPUT && !self.flush(&mut stream, &mut out, id) {
                            return;
                        }
                        self.current.refresh(&mut live);
                        let payload = &buf[start + s..start + e];
                        match protocol {
                            Protocol::Socketmap => self.answer(&live.1, payload, &mut scratch, &mut out),
                            Protocol::Check => {
                                check::answer(&live.1.engine, &live.1.identity, payload, &mut out, |d| {
                                    self.known.note(d);
                                });
                            }
                        }
                        start += len;
                        request_began = None;
                    }
                    Frame::Partial => break,
                    Frame::TooLong(n) => {
                        self.flush(&mut stream, &mut out, id);
                        let limit = match protocol {
                            Protocol::Socketmap => "[serve] max_request_bytes",
                            Protocol::Check => "the check socket's limit",
                        };
                        eprintln!(
                            "mtasts serve: connection {id}: request of {n}+ bytes is longer than {limit} = {max}; closing it"
                        );
                        return;
                    }
                    Frame::Malformed(why) => {
                        self.flush(&mut stream, &mut out, id);
                        eprintln!("mtasts serve: connection {id}: {why}; closing it");
                        return;
                    }
                }
            }
            if !out.is_empty() && !self.flush(&mut stream, &mut out, id) {
                return;
            }
            if start == end {
                (start, end) = (0, 0);
            } else if end == buf.len() {
                if start > 0 {
                    buf.copy_within(start..end, 0);
                    (start, end) = (0, end - start);
                } else if buf.len() < limit {
                    // A long request: grow up to the longest frame.
                    buf.resize((buf.len() * 2).min(limit), 0);
                } else {
                    // parse_frame decides on any buffer of `limit` bytes; never read into nothing.
                    eprintln!("mtasts serve: connection {id}: a full buffer holds no request; closing it");
                    return;
                }
            }
            // Between requests, the idle timeout; within one, what is left of its deadline (and
            // never more than the idle timeout), however often bytes trickle in.
            let (timeout, deadline) = if start == end {
                (self.idle, false)
            } else {
                let began = *request_began.get_or_insert_with(Instant::now);
                let left = self.request_timeout.saturating_sub(began.elapsed());
                if left.is_zero() {
                    self.too_slow(id, "request not complete");
                    return;
                }
                (left.min(self.idle), left <= self.idle)
            };
            if timeout != read_timeout {
                if stream.set_read_timeout(timeout).is_err() {
                    return;
                }
                read_timeout = timeout;
            }
            match stream.read(&mut buf[end..]) {
                Ok(0) => return,
                Ok(n) => end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if deadline && is_timeout(&e) => {
                    self.too_slow(id, "request not complete");
                    return;
                }
                // Idle timeout, reset, or shut down at exit.
                Err(_) => return,
            }
        }
    }

    /// Says why the connection of a client too slow for `request_timeout` is closed.
    fn too_slow(&self, id: u64, what: &str) {
        eprintln!(
            "mtasts serve: connection {id}: {what} within [serve] request_timeout_ms = {}; closing it",
            self.request_timeout.as_millis()
        );
    }

    /// Writes and clears `out`; false when the connection is to be closed (an error, or the
    /// client did not take the replies within `request_timeout`).
    fn flush(&self, stream: &mut Stream, out: &mut Vec<u8>, id: u64) -> bool {
        let began = Instant::now();
        let mut written = 0;
        // The socket's write timeout is `request_timeout` except during a slow flush.
        let mut shortened = false;
        let ok = loop {
            if written == out.len() {
                break true;
            }
            match stream.write(&out[written..]) {
                Ok(0) => break false,
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if is_timeout(&e) {
                        self.too_slow(id, "replies not read");
                    }
                    break false;
                }
            }
            if written < out.len() {
                // A client taking its replies a little at a time: what is left of the deadline.
                let left = self.request_timeout.saturating_sub(began.elapsed());
                if left.is_zero() {
                    self.too_slow(id, "replies not read");
                    break false;
                }
                if stream.set_write_timeout(left).is_err() {
                    break false;
                }
                shortened = true;
            }
        };
        out.clear();
        if ok && shortened && stream.set_write_timeout(self.request_timeout).is_err() {
            return false;
        }
        ok
    }

    fn begin_stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let connections = self.connections.lock();
        // Wakes readers blocked in `read` (it returns 0); replies in progress are still written.
        for stream in connections.values() {
            stream.shutdown(Shutdown::Read);
        }
        self.ended.notify_all();
    }
}

/// A socket timeout (`WouldBlock` or `TimedOut`, depending on the platform).
fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

pub fn run(args: &Args) -> Result<ExitCode, String> {
    let notifier = Arc::new(systemd::Notifier::from_env()?);
    let watchdog = systemd::watchdog_interval()?;
    let mut config = Config::load(args.config.as_deref()).map_err(|e| e.to_string())?;
    mtasts::logging::apply(&config.log);
    if let Some(cache) = &args.cache {
        config.cache.path = cache.clone();
    }
    let mut serve = settings::Settings::from_config(&config, args.listen.as_deref())?;
    if let Some(metrics) = &args.metrics {
        serve.metrics_listen = Some(metrics.clone());
    }
    if let Some(path) = &args.tlsrpt_socket {
        if !path.is_absolute() {
            return Err(format!("--tlsrpt-socket {}: write the absolute path of the socket", path.display()));
        }
        serve.tlsrpt_socket = Some(path.clone());
    }
    let listen = Listen::parse(&serve.listen)?;
    let metrics_addr = serve.metrics_listen.as_deref().map(metrics::parse_listen).transpose()?;
    let engine = Arc::new(build_engine(&config, None)?);
    let passed = systemd::listen_fds()?;
    let activated = !passed.is_empty();
    let listeners = if activated {
        eprintln!(
            "mtasts serve: socket activation: serving the {} socket(s) systemd passed, not [serve] listen / --listen",
            passed.len()
        );
        if serve.socket.is_set() {
            eprintln!(
                "mtasts serve: note: [serve] socket_mode, socket_owner and socket_group apply to sockets mtasts binds; \
                 for passed ones, SocketMode=, SocketUser= and SocketGroup= of the socket unit do that"
            );
        }
        passed.into_iter().map(|(p, name)| Listener::adopt(p, &name)).collect::<Result<Vec<_>, _>>()?
    } else {
        vec![Listener::bind(&listen, &serve.socket)?]
    };
    let mut protocols = vec![Protocol::Socketmap; listeners.len()];
    let mut listeners = listeners;
    if let Some(path) = &serve.check_socket {
        listeners.push(Listener::bind(&Listen::Unix(path.clone()), &serve.check_access)?);
        protocols.push(Protocol::Check);
    }
    let known = Arc::new(Known::default());
    let counters = Arc::new(metrics::Counters::default());
    let (handoff, waiting) = std::sync::mpsc::sync_channel(0);
    let server = Arc::new(Server {
        current: Current::new(Live::new(Arc::clone(&engine), config.identity(), serve.replies())),
        max_request: serve.max_request_bytes,
        idle: Duration::from_millis(serve.idle_timeout_ms),
        request_timeout: Duration::from_millis(serve.request_timeout_ms),
        max_connections: usize::try_from(serve.max_connections).unwrap_or(usize::MAX),
        known: Arc::clone(&known),
        stopping: AtomicBool::new(false),
        next_id: AtomicU64::new(1),
        connections: Mutex::new(HashMap::new()),
        ended: Condvar::new(),
        counters: Arc::clone(&counters),
        handoff,
        waiting: Mutex::new(waiting),
    });
    let metrics_bound = match metrics_addr {
        Some(addr) => {
            // The gauges read the store through a connection of their own; a store that cannot be
            // opened is already reported by the engine, and the gauges are then left out.
            let stores = config.open_store().ok().flatten();
            // The engine in force, also after a reload (SIGHUP).
            let live = Arc::clone(&server);
            let current = Arc::new(move || Arc::clone(&live.current.get().1.engine));
            let exporter = Arc::new(metrics::Exporter::new(current, Arc::clone(&counters), stores));
            Some(metrics::spawn(addr, exporter)?)
        }
        None => None,
    };
    let collector = match &serve.tlsrpt_socket {
        Some(path) => {
            let (live, stop) = (Arc::clone(&server), Arc::clone(&server));
            Some(collect::spawn(
                path,
                &serve.tlsrpt_access,
                Arc::new(move || Arc::clone(&live.current.get().1.engine)),
                Arc::new(move || stop.stopping.load(Ordering::SeqCst)),
                Arc::clone(&counters),
            )?)
        }
        None => None,
    };
    drop(engine);

    // SIGTERM / SIGINT: stop, then wake the accept loops by connecting to them. SIGHUP: reload.
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ])
    .map_err(|e| format!("cannot handle signals: {e}"))?;
    let signal_handle = signals.handle();
    {
        let server = Arc::clone(&server);
        let wakers: Vec<Waker> = listeners.iter().map(Listener::waker).collect();
        let notifier = Arc::clone(&notifier);
        let mut reloader = Reloader { args: args.clone(), settings: serve.clone(), activated };
        std::thread::Builder::new()
            .name("mtasts-signals".into())
            .spawn(move || {
                for sig in signals.forever() {
                    if sig == signal_hook::consts::SIGHUP {
                        if !server.stopping.load(Ordering::SeqCst) {
                            reloader.reload(&server.current, (*notifier).as_ref());
                        }
                        continue;
                    }
                    eprintln!("mtasts serve: signal {sig}, shutting down");
                    systemd::notify((*notifier).as_ref(), "STOPPING=1");
                    server.begin_stop();
                    for waker in &wakers {
                        waker.wake();
                    }
                    break;
                }
            })
            .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    }

    let stop_refresh = Arc::new(Stop::default());
    if serve.refresh_interval_s > 0 {
        let server = Arc::clone(&server);
        refresher::spawn(
            move || Arc::clone(&server.current.get().1.engine),
            Arc::clone(&known),
            Arc::clone(&stop_refresh),
            Duration::from_secs(serve.refresh_interval_s),
            Arc::clone(&counters),
        )
        .map_err(|e| format!("cannot start the refresher thread: {e}"))?;
    }
    if let (Some(every), Some(_)) = (watchdog, notifier.as_ref()) {
        let server = Arc::clone(&server);
        let notifier = Arc::clone(&notifier);
        let stop = Arc::clone(&stop_refresh);
        std::thread::Builder::new()
            .name("mtasts-watchdog".into())
            .spawn(move || {
                loop {
                    // A server stuck holding the connection table stops the pings, and systemd
                    // restarts it.
                    drop(server.connections.lock());
                    systemd::notify((*notifier).as_ref(), "WATCHDOG=1");
                    if stop.wait(every) {
                        return;
                    }
                }
            })
            .map_err(|e| format!("cannot start the watchdog thread: {e}"))?;
    }

    let mut described = Vec::new();
    for (listener, protocol) in listeners.iter().zip(&protocols) {
        let where_ = listener.describe();
        if *protocol == Protocol::Check {
            println!("checks on {where_}");
            eprintln!("mtasts serve: the library's checks on {where_}");
        } else {
            println!("listening on {where_}");
            eprintln!("mtasts serve: listening on {where_}");
        }
        described.push(where_);
    }
    if let Some(addr) = metrics_bound {
        println!("metrics on inet:{addr}");
        eprintln!("mtasts serve: metrics on http://{addr}/metrics");
    }
    if let Some(c) = &collector {
        println!("tlsrpt on unix:{}", c.path().display());
        eprintln!("mtasts serve: TLSRPT datagrams on unix:{}", c.path().display());
    }
    let _ = io::stdout().flush();
    systemd::notify((*notifier).as_ref(), &format!("READY=1\nSTATUS=listening on {}", described.join(", ")));

    let listeners = Arc::new(listeners);
    let mut loops = Vec::new();
    for i in 0..listeners.len() {
        let (server, listeners, protocol) = (Arc::clone(&server), Arc::clone(&listeners), protocols[i]);
        loops.push(
            std::thread::Builder::new()
                .name("mtasts-accept".into())
                .spawn(move || accept_loop(&server, &listeners[i], protocol))
                .map_err(|e| format!("cannot start an accept thread: {e}"))?,
        );
    }
    for l in loops {
        let _ = l.join();
    }

    stop_refresh.stop();
    signal_handle.close();
    server.begin_stop();
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    let mut connections = server.connections.lock();
    while !connections.is_empty() && Instant::now() < deadline {
        let _ = server.ended.wait_until(&mut connections, deadline);
    }
    let left = connections.len();
    // What is still busy is cut off before the final flush: a library client whose answer never
    // comes judges (and counts) its call itself, so its session is counted once.
    for stream in connections.values() {
        stream.shutdown(Shutdown::Both);
    }
    drop(connections);
    let engine = Arc::clone(&server.current.get().1.engine);
    // The sessions judged for the library's checks (`check_socket`) are written now: the engine
    // would write them when dropped, but its last reference may go in a connection thread that
    // the process's exit does not wait for.
    engine.flush_reports();
    flush_store(&engine);
    drop(engine);
    if let Some(c) = collector {
        // Ends within a second of begin_stop, after flushing the counts it took.
        c.join();
        let (counted, dropped) = counters.tlsrpt_datagrams();
        eprintln!("mtasts serve: TLSRPT datagrams: {counted} counted, {dropped} dropped");
    }
    for listener in listeners.iter() {
        if let Listener::Unix { remove: Some(path), .. } = listener {
            let _ = std::fs::remove_file(path);
        }
    }
    if left > 0 {
        eprintln!("mtasts serve: {left} connection(s) still busy after {SHUTDOWN_GRACE:?}; exiting anyway");
    }
    eprintln!("mtasts serve: stopped");
    Ok(ExitCode::SUCCESS)
}

/// `[serve]` checked as the server checks it at start (for `mtasts doctor`): the `listen` address
/// when the file sets one.
pub fn settings_of(config: &Config) -> Result<Option<String>, String> {
    let s = settings::Settings::from_config(config, None)?;
    Listen::parse(&s.listen)?;
    Ok(config.serve.listen.clone())
}

pub use settings::DEFAULT_LISTEN;

/// An engine built from `config` (replacing `old` on a reload) whose store writes (policies,
/// and DANE's DNSSEC answers) go through write-behind queues ([`write_behind`]), and whose DNS
/// client keeps a runtime and resolver per thread (`mtasts serve` does not fork; `mtasts::dns`,
/// "Kept per thread").
fn build_engine(config: &Config, old: Option<&Engine>) -> Result<Engine, String> {
    config
        .build_engine_wrapping(old, Lifetime::PerThread, &mut |stores| {
            let policies: Arc<dyn PolicyStore> =
                write_behind::WriteBehind::start(Arc::clone(&stores.policies))?;
            let tlsa = match stores.tlsa {
                Some(t) => Some(write_behind::AnswersBehind::start(t)? as Arc<dyn mtasts::cache::TlsaStore>),
                None => None,
            };
            Ok(Stores { policies, tlsa, ..stores })
        })
        .map_err(|e| e.to_string())
}

/// Writes what `engine`'s store has queued; a failure is reported as any store failure is.
fn flush_store(engine: &Engine) {
    if let Some(Err(e)) = engine.store().map(PolicyStore::flush) {
        engine.report_store_error(&e);
    }
}

/// Reloads the configuration on SIGHUP.
struct Reloader {
    args: Args,
    /// The `[serve]` settings in force.
    settings: settings::Settings,
    /// Serving sockets passed by systemd (so `listen` and `socket_*` are not used).
    activated: bool,
}

impl Reloader {
    /// Reads the configuration again and, if it loads, puts an engine built from it in force,
    /// with the policy cache of the engine it replaces; else says why and keeps the one in force.
    /// systemd hears `RELOADING=1` before and `READY=1` after, either way.
    fn reload(&mut self, current: &Current, notifier: Option<&systemd::Notifier>) {
        systemd::notify(notifier, &systemd::reloading());
        let old = Arc::clone(&current.get().1.engine);
        match self.load(&old) {
            Ok((config, settings, engine)) => {
                mtasts::logging::apply(&config.log);
                current.replace(Live::new(Arc::new(engine), config.identity(), settings.replies()));
                // What the replaced engine queued is written now (and what connections still
                // using it queue later, when it is dropped).
                flush_store(&old);
                let from =
                    config.source.as_ref().map_or_else(|| "the defaults".into(), |p| p.display().to_string());
                eprintln!(
                    "mtasts serve: SIGHUP: configuration reloaded from {from} (trust anchors, [dns], [https], [engine], [cache], [log], \
                     [serve] strict_testing, postfix_tlsrpt and [serve.profile.*]); the policy cache is kept; not changed by a reload: \
                     the listeners, [serve] max_request_bytes, idle_timeout_ms, request_timeout_ms, max_connections, refresh_interval_s"
                );
                let mut ignored = self.settings.not_reloaded(&settings);
                if self.activated {
                    ignored.retain(|k| {
                        !matches!(*k, "listen" | "socket_mode" | "socket_owner" | "socket_group")
                    });
                }
                if !ignored.is_empty() {
                    eprintln!(
                        "mtasts serve: warning: [serve] {} changed; a reload does not apply it, restart mtasts serve for that",
                        ignored.join(", ")
                    );
                }
                self.settings.strict_testing = settings.strict_testing;
                self.settings.postfix_tlsrpt = settings.postfix_tlsrpt;
                self.settings.profiles = settings.profiles;
                systemd::notify(notifier, "READY=1\nSTATUS=configuration reloaded");
            }
            Err(e) => {
                eprintln!(
                    "mtasts serve: error: SIGHUP: reload failed, the configuration in force stays: {e}"
                );
                let e = e.replace('\n', " ");
                systemd::notify(
                    notifier,
                    &format!("READY=1\nSTATUS=reload failed, previous configuration in force: {e}"),
                );
            }
        }
    }

    /// The configuration, checked as at start, and an engine built from it over `cache`.
    fn load(&self, old: &Engine) -> Result<(Config, settings::Settings, Engine), String> {
        let mut config = Config::load(self.args.config.as_deref()).map_err(|e| e.to_string())?;
        if let Some(path) = &self.args.cache {
            config.cache.path = path.clone();
        }
        let settings = settings::Settings::from_config(&config, self.args.listen.as_deref())?;
        if !self.activated {
            Listen::parse(&settings.listen)?;
        }
        let engine = build_engine(&config, Some(old))?;
        Ok((config, settings, engine))
    }
}

fn accept_loop(server: &Arc<Server>, listener: &Listener, protocol: Protocol) {
    loop {
        {
            // At most max_connections at once: the others wait in the kernel's listen queue.
            let mut connections = server.connections.lock();
            while connections.len() >= server.max_connections && !server.stopping.load(Ordering::SeqCst) {
                server.ended.wait(&mut connections);
            }
        }
        if server.stopping.load(Ordering::SeqCst) {
            return;
        }
        let stream = match listener.accept() {
            Ok(s) => s,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                eprintln!("mtasts serve: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if server.stopping.load(Ordering::SeqCst) {
            return;
        }
        if let Err(e) = start_connection(server, stream, protocol) {
            eprintln!("mtasts serve: cannot serve a connection: {e}");
        }
    }
}

fn start_connection(server: &Arc<Server>, stream: Stream, protocol: Protocol) -> io::Result<()> {
    stream.set_read_timeout(server.idle)?;
    stream.set_write_timeout(server.request_timeout)?;
    let id = server.next_id.fetch_add(1, Ordering::Relaxed);
    server.connections.lock().insert(id, stream.try_clone()?);
    let job = match server.handoff.try_send(Job { stream, id, protocol }) {
        Ok(()) => return Ok(()),
        Err(std::sync::mpsc::TrySendError::Full(job) | std::sync::mpsc::TrySendError::Disconnected(job)) => {
            job
        }
    };
    let worker = Arc::clone(server);
    let spawned = std::thread::Builder::new().name("mtasts-conn".into()).spawn(move || work(&worker, job));
    if let Err(e) = spawned {
        server.connections.lock().remove(&id);
        return Err(e);
    }
    Ok(())
}

/// A connection thread: serves `job`, then the connections handed to it while it waits (at most
/// [`WORKER_IDLE`] each time), and exits.
fn work(server: &Server, mut job: Job) {
    /// Unregisters the connection even if serving it panics.
    struct Done<'a>(&'a Server, u64);
    impl Drop for Done<'_> {
        fn drop(&mut self) {
            self.0.connections.lock().remove(&self.1);
            self.0.counters.connection_closed();
            self.0.ended.notify_all();
        }
    }
    loop {
        server.counters.connection_opened();
        let done = Done(server, job.id);
        server.serve(job.stream, job.id, job.protocol);
        drop(done);
        if server.stopping.load(Ordering::SeqCst) {
            return;
        }
        // One thread waits in the channel; the others wait for their turn, as long at most.
        let Some(waiting) = server.waiting.try_lock_for(WORKER_IDLE) else { return };
        match waiting.recv_timeout(WORKER_IDLE) {
            Ok(next) => job = next,
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        assert_eq!(Listen::parse("inet:127.0.0.1:8461"), Ok(Listen::Inet("127.0.0.1:8461".parse().unwrap())));
        assert_eq!(Listen::parse("inet:[::1]:25"), Ok(Listen::Inet("[::1]:25".parse().unwrap())));
        assert_eq!(Listen::parse("127.0.0.1:0"), Ok(Listen::Inet("127.0.0.1:0".parse().unwrap())));
        assert_eq!(Listen::parse("unix:/run/x.sock"), Ok(Listen::Unix("/run/x.sock".into())));
        assert!(Listen::parse("unix:").is_err());
        assert!(Listen::parse("inet:localhost:25").is_err());
        assert!(Listen::parse("tcp:1.2.3.4").is_err());
    }
}
