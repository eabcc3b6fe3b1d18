//! Checks handed to a running `mtasts serve` (decision D36, docs/architecture.md "Checks handed
//! to mtasts serve").
//!
//! An MTA that starts a process per delivery (Exim) pays, in each process, for opening the store
//! and reading its schema: most of what a delivery's check costs (BENCHMARKS.md, "A process per
//! delivery"). With `[serve] check_socket` set, the library's own engines (the default engine of
//! `mtasts_check`, Exim's) first send each check to the `mtasts serve` listening there, which
//! judges it with its engine (its memory cache, its open store, its remembered validations) and
//! counts the session, and answer with its outcome. The process then builds no engine and opens
//! no store. When the socket cannot be reached, or the server does not answer in time, or its
//! answer cannot be read, the process judges the check itself, as without the setting: the
//! setting can make a check cheaper, never weaker.
//!
//! This module holds both ends' wire form and the client. A request and its answer each travel as
//! one netstring (the socketmap's framing) holding a sequence of netstrings, the fields below; the
//! first field names the form (`mtasts-check/1`), so that a socketmap client that connects to the
//! check socket by mistake gets a clear refusal.
//!
//! Request fields: form, domain, MX, TLS (`not-checked`, `not-negotiated`, or `chain` followed by
//! the chain's bytes as given, PEM or DER), and the caller's DANE state ([`Dane::as_str`]).
//!
//! Answer fields: `ok` and the outcome ([`encode_outcome`]), or `input` and the message of the
//! [`InputError`] (the client then judges the check itself, which gives the caller the same error
//! with its kind), or `error` and a message.

use std::borrow::Cow;
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::cache::CachedPolicy;
use crate::domain::Domain;
use crate::engine::{DaneInfo, Outcome, Override, OverrideAction, OverrideOrigin, Tls};
use crate::policy::{Mode, Policy};
use crate::ports::{TlsaLookup, TlsaRecord};
use crate::txt::PolicyId;
use crate::verdict::{Dane, Reason, Verdict};

/// The first field of every request and answer.
pub const FORM: &[u8] = b"mtasts-check/1";

/// The longest request the server takes: a chain of a few certificates in PEM is some kilobytes;
/// 256 KiB leaves room for any chain an MX can present and bounds what a connection costs.
///
/// cbindgen:ignore
pub const MAX_REQUEST: usize = 256 * 1024;

/// The longest answer the client reads (a policy is at most 64 KiB, plus TLSA records).
const MAX_ANSWER: usize = 1024 * 1024;

/// Appends `field` as a netstring.
pub fn put(out: &mut Vec<u8>, field: &[u8]) {
    out.extend_from_slice(field.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(field);
    out.push(b',');
}

/// The fields of a payload, read one at a time.
#[derive(Debug)]
pub struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    /// Reads the fields of `payload`.
    pub fn new(payload: &'a [u8]) -> Self {
        Self { rest: payload }
    }

    /// The next field.
    pub fn bytes(&mut self) -> Result<&'a [u8], String> {
        let colon = self.rest.iter().take(21).position(|&b| b == b':').ok_or("a field has no length")?;
        let len = netstring_length(&self.rest[..colon])?;
        let body = colon + 1;
        let end = body.checked_add(len).filter(|&e| e < self.rest.len()).ok_or("a field is cut short")?;
        if self.rest[end] != b',' {
            return Err("a field does not end with `,`".into());
        }
        let field = &self.rest[body..end];
        self.rest = &self.rest[end + 1..];
        Ok(field)
    }

    /// The next field, as UTF-8 text.
    pub fn text(&mut self) -> Result<&'a str, String> {
        std::str::from_utf8(self.bytes()?).map_err(|_| "a text field is not UTF-8".into())
    }

    /// The next field, as a decimal number.
    pub fn number<T: std::str::FromStr>(&mut self) -> Result<T, String> {
        self.text()?.parse().map_err(|_| "a number field is not a number".into())
    }

    /// The next field, `1` or `0`.
    fn flag(&mut self) -> Result<bool, String> {
        match self.bytes()? {
            b"1" => Ok(true),
            b"0" => Ok(false),
            _ => Err("a flag field is neither 1 nor 0".into()),
        }
    }

    /// True when every field was read.
    pub fn is_done(&self) -> bool {
        self.rest.is_empty()
    }
}

/// What the library asks the server.
#[derive(Debug, PartialEq, Eq)]
pub enum Request<'a> {
    /// A check ([`crate::Engine::check_with`]).
    Check {
        /// The Policy Domain, as the caller gave it.
        domain: &'a str,
        /// The MX host, as the caller gave it (text that is no host name matches no pattern).
        mx: &'a str,
        /// What the caller knows about the TLS session.
        tls: Tls<'a>,
        /// The caller's DANE state.
        dane: Dane,
    },
    /// The mode of the domain's policy in force ([`crate::Engine::policy`]; Exim's
    /// `mtasts_exim_mode`).
    Mode {
        /// The Policy Domain.
        domain: &'a str,
    },
    /// A session the MTA judged itself, counted for TLSRPT ([`crate::Engine::record_session`],
    /// without details; Exim's `mtasts_exim_record`). `result`: `None` for a success.
    Record {
        /// The Policy Domain.
        domain: &'a str,
        /// The MX host.
        mx: &'a str,
        /// The failure, `None` for a success.
        result: Option<Reason>,
    },
}

/// The request payload for `request`, made under the configuration whose
/// [`crate::config::Config::identity`] is `identity`.
pub fn encode_request(identity: &str, request: &Request<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(192);
    put(&mut out, FORM);
    put(&mut out, identity.as_bytes());
    match *request {
        Request::Check { domain, mx, tls, dane } => {
            put(&mut out, b"check");
            put(&mut out, domain.as_bytes());
            put(&mut out, mx.as_bytes());
            match tls {
                Tls::NotChecked => put(&mut out, b"not-checked"),
                Tls::NotNegotiated => put(&mut out, b"not-negotiated"),
                Tls::Chain(c) => {
                    put(&mut out, b"chain");
                    put(&mut out, c);
                }
            }
            put(&mut out, dane.as_str().as_bytes());
        }
        Request::Mode { domain } => {
            put(&mut out, b"mode");
            put(&mut out, domain.as_bytes());
        }
        Request::Record { domain, mx, result } => {
            put(&mut out, b"record");
            put(&mut out, domain.as_bytes());
            put(&mut out, mx.as_bytes());
            put(&mut out, result.map_or("success", Reason::as_str).as_bytes());
        }
    }
    out
}

/// Reads a request payload: the identity of the client's configuration, and the request.
pub fn decode_request(payload: &[u8]) -> Result<(&str, Request<'_>), String> {
    let mut f = Fields::new(payload);
    if f.bytes().ok() != Some(FORM) {
        return Err(format!(
            "not a check request (the first field must be {})",
            String::from_utf8_lossy(FORM)
        ));
    }
    let identity = f.text()?;
    let request = match f.bytes()? {
        b"check" => {
            let domain = f.text()?;
            let mx = f.text()?;
            let tls = match f.bytes()? {
                b"not-checked" => Tls::NotChecked,
                b"not-negotiated" => Tls::NotNegotiated,
                b"chain" => Tls::Chain(f.bytes()?),
                _ => return Err("unknown TLS state".into()),
            };
            let dane = Dane::parse(f.text()?).ok_or("unknown DANE state")?;
            Request::Check { domain, mx, tls, dane }
        }
        b"mode" => Request::Mode { domain: f.text()? },
        b"record" => {
            let domain = f.text()?;
            let mx = f.text()?;
            let result = match f.text()? {
                "success" => None,
                name => Some(Reason::parse(name).ok_or("unknown result")?),
            };
            Request::Record { domain, mx, result }
        }
        _ => return Err("unknown request".into()),
    };
    if !f.is_done() {
        return Err("fields after the last one".into());
    }
    Ok((identity, request))
}

/// Appends an optional text field: `0`, or `1` and the text.
fn put_opt(out: &mut Vec<u8>, text: Option<&str>) {
    match text {
        None => put(out, b"0"),
        Some(t) => {
            put(out, b"1");
            put(out, t.as_bytes());
        }
    }
}

fn opt_text(f: &mut Fields<'_>) -> Result<Option<String>, String> {
    Ok(if f.flag()? { Some(f.text()?.to_owned()) } else { None })
}

fn put_policy(out: &mut Vec<u8>, p: &CachedPolicy) {
    put(out, p.id.as_str().as_bytes());
    put(out, p.fetched_at.to_string().as_bytes());
    put(out, p.expires_at.to_string().as_bytes());
    put(out, p.text.as_bytes());
}

fn read_policy(f: &mut Fields<'_>) -> Result<Arc<CachedPolicy>, String> {
    let id = PolicyId::parse(f.text()?).map_err(|e| format!("policy id: {e}"))?;
    let fetched_at = f.number()?;
    let expires_at = f.number()?;
    let text = f.text()?.to_owned();
    let parsed = Policy::parse(text.as_bytes()).map_err(|e| format!("policy: {}", e.first_error()))?;
    Ok(Arc::new(CachedPolicy { expires_at, fetched_at, policy: parsed, id, text }))
}

/// Appends the fields of `outcome`: verdict, reason, whether the MX matched, the detail, the
/// policy (id, fetch time, expiry, text), what DANE found (the TLSA state with its records, the
/// usable count, DANE's conclusion) and the override applied (domain, action, origin). Each
/// optional part starts with a `1` or `0` field.
pub fn encode_outcome(outcome: &Outcome, out: &mut Vec<u8>) {
    put(out, outcome.verdict.as_str().as_bytes());
    put(out, outcome.reason.as_str().as_bytes());
    put(out, if outcome.mx_matches { b"1" } else { b"0" });
    put_opt(out, outcome.detail.as_deref());
    match &outcome.policy {
        None => put(out, b"0"),
        Some(p) => {
            put(out, b"1");
            put_policy(out, p);
        }
    }
    match &outcome.dane {
        None => put(out, b"0"),
        Some(d) => {
            put(out, b"1");
            match &*d.lookup {
                TlsaLookup::NotApplicable => put(out, b"not-applicable"),
                TlsaLookup::Secure { records, ttl, base } => {
                    put(out, b"secure");
                    put(out, ttl.to_string().as_bytes());
                    put_opt(out, base.as_ref().map(Domain::as_str));
                    put(out, records.len().to_string().as_bytes());
                    for r in records {
                        put(out, &[r.usage, r.selector, r.matching_type]);
                        put(out, &r.data);
                    }
                }
                TlsaLookup::Bogus(why) => {
                    put(out, b"bogus");
                    put(out, why.as_bytes());
                }
                TlsaLookup::Failed(why) => {
                    put(out, b"failed");
                    put(out, why.as_bytes());
                }
            }
            put(out, d.usable.to_string().as_bytes());
            put(out, d.dane.as_str().as_bytes());
        }
    }
    match &outcome.overridden {
        None => put(out, b"0"),
        Some(o) => {
            put(out, b"1");
            put(out, o.domain.as_str().as_bytes());
            match &o.action {
                OverrideAction::Skip => put(out, b"skip"),
                OverrideAction::Pinned(p) => {
                    put(out, b"pinned");
                    put_policy(out, p);
                }
            }
            match &o.origin {
                OverrideOrigin::Config { file, policy_file } => {
                    put(out, b"config");
                    let text = |p: &Option<PathBuf>| p.as_ref().map(|p| p.to_string_lossy().into_owned());
                    put_opt(out, text(file).as_deref());
                    put_opt(out, text(policy_file).as_deref());
                }
                OverrideOrigin::Store { location, set_at } => {
                    put(out, b"store");
                    put(out, location.as_bytes());
                    put(out, set_at.to_string().as_bytes());
                }
            }
        }
    }
}

/// Reads what [`encode_outcome`] wrote.
pub fn decode_outcome(f: &mut Fields<'_>) -> Result<Outcome, String> {
    let verdict = Verdict::parse(f.text()?).ok_or("unknown verdict")?;
    let reason = Reason::parse(f.text()?).ok_or("unknown reason")?;
    let mx_matches = f.flag()?;
    let detail = opt_text(f)?.map(Cow::Owned);
    let policy = if f.flag()? { Some(read_policy(f)?) } else { None };
    let dane = if f.flag()? {
        let lookup = match f.bytes()? {
            b"not-applicable" => TlsaLookup::NotApplicable,
            b"secure" => {
                let ttl = f.number()?;
                let base = opt_text(f)?
                    .map(|b| Domain::parse(&b).map_err(|e| format!("TLSA base domain: {e}")))
                    .transpose()?;
                let n: usize = f.number()?;
                let mut records = Vec::with_capacity(n.min(64));
                for _ in 0..n {
                    let &[usage, selector, matching_type] = f.bytes()? else {
                        return Err("a TLSA record's parameters are not three octets".into());
                    };
                    records.push(TlsaRecord { usage, selector, matching_type, data: f.bytes()?.to_vec() });
                }
                TlsaLookup::Secure { records, ttl, base }
            }
            b"bogus" => TlsaLookup::Bogus(f.text()?.to_owned()),
            b"failed" => TlsaLookup::Failed(f.text()?.to_owned()),
            _ => return Err("unknown TLSA state".into()),
        };
        let usable = f.number()?;
        let dane = Dane::parse(f.text()?).ok_or("unknown DANE state")?;
        Some(Arc::new(DaneInfo { lookup: Arc::new(lookup), usable, dane }))
    } else {
        None
    };
    let overridden = if f.flag()? {
        let domain = Domain::parse(f.text()?).map_err(|e| format!("override domain: {e}"))?;
        let action = match f.bytes()? {
            b"skip" => OverrideAction::Skip,
            b"pinned" => OverrideAction::Pinned(read_policy(f)?),
            _ => return Err("unknown override action".into()),
        };
        let origin = match f.bytes()? {
            b"config" => OverrideOrigin::Config {
                file: opt_text(f)?.map(PathBuf::from),
                policy_file: opt_text(f)?.map(PathBuf::from),
            },
            b"store" => OverrideOrigin::Store { location: f.text()?.to_owned(), set_at: f.number()? },
            _ => return Err("unknown override origin".into()),
        };
        Some(Arc::new(Override { domain, action, origin }))
    } else {
        None
    };
    Ok(Outcome { verdict, reason, policy, mx_matches, detail, dane, overridden })
}

/// What the server answered.
#[derive(Debug)]
pub enum Answer {
    /// The outcome of a check, judged and counted by the server.
    Judged(Outcome),
    /// The mode of the policy in force (`None`: no policy).
    Mode(Option<Mode>),
    /// The session was counted.
    Recorded,
    /// The server found the arguments bad (the message of its [`crate::InputError`]).
    Input(String),
}

impl Answer {
    /// Whether this is an answer to `request` (an outcome to a check, a mode to a mode request,
    /// `recorded` to a record request), or the server's "bad arguments".
    pub fn fits(&self, request: &Request<'_>) -> bool {
        matches!(
            (self, request),
            (Self::Judged(_), Request::Check { .. })
                | (Self::Mode(_), Request::Mode { .. })
                | (Self::Recorded, Request::Record { .. })
                | (Self::Input(_), _)
        )
    }
}

/// Why a call could not be handed over: the caller then judges it itself.
#[derive(Debug)]
pub struct Unavailable {
    /// What went wrong.
    pub why: String,
    /// True when this call found the server unavailable; false when the call was not even tried
    /// because an earlier one found it so less than [`DOWN_FOR`] ago.
    pub fresh: bool,
}

/// After a call finds the server unavailable, how long this process's later calls judge by
/// themselves without trying it (a server that does not answer would otherwise cost every call
/// of a delivery its whole timeout).
pub const DOWN_FOR: Duration = Duration::from_secs(30);

/// The client end: connects to `mtasts serve`'s check socket for each call (no socket outlives
/// a call: docs/architecture.md §3, the library's process model).
///
/// A call is handed over only to a server that runs as root, as this process's user or as the
/// owner of the socket's directory (`SO_PEERCRED`): whoever else put a socket there is not asked.
/// Connecting never waits (a server whose listen queue is full is unavailable), and the whole
/// exchange must end within the timeout.
#[derive(Debug)]
pub struct Remote {
    path: PathBuf,
    timeout: Duration,
    identity: String,
    /// Until when (the monotonic clock's milliseconds) the server is taken as unavailable.
    down_until: AtomicU64,
}

impl Remote {
    /// A client of the socket at `path`, waiting at most `timeout` for each answer, for a
    /// configuration of identity `identity` ([`crate::config::Config::identity`]).
    pub fn new(path: &Path, timeout: Duration, identity: String) -> Self {
        Self { path: path.to_owned(), timeout, identity, down_until: AtomicU64::new(0) }
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// As [`Remote::new`], waiting at most `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Hands a request to the server and returns its answer.
    pub fn ask(&self, request: &Request<'_>) -> Result<Answer, Unavailable> {
        let now = monotonic_ms();
        let until = self.down_until.load(Ordering::Relaxed);
        if now < until {
            return Err(Unavailable {
                why: format!(
                    "mtasts serve at unix:{} was unavailable less than {DOWN_FOR:?} ago",
                    self.path.display()
                ),
                fresh: false,
            });
        }
        let answer = self.exchange(request).map_err(|why| {
            let down = u64::try_from(DOWN_FOR.as_millis()).unwrap_or(u64::MAX);
            self.down_until.store(monotonic_ms().saturating_add(down), Ordering::Relaxed);
            Unavailable { why: format!("mtasts serve at unix:{}: {why}", self.path.display()), fresh: true }
        })?;
        Ok(answer)
    }

    fn exchange(&self, request: &Request<'_>) -> Result<Answer, String> {
        let payload = encode_request(&self.identity, request);
        if payload.len() > MAX_REQUEST {
            return Err(format!("the request has {} bytes, more than the server takes", payload.len()));
        }
        let deadline = std::time::Instant::now() + self.timeout;
        let mut stream = self.connect()?;
        let mut frame = Vec::with_capacity(payload.len() + 12);
        put(&mut frame, &payload);
        send_all(&stream, &frame, deadline).map_err(|e| format!("cannot send the request: {e}"))?;
        let answer = read_frame(&mut stream, deadline)?;
        decode_answer(&answer).map_err(|e| {
            if e.starts_with("the server refused") { e } else { format!("unreadable answer: {e}") }
        })
    }

    /// Connects without waiting, and checks who answers.
    fn connect(&self) -> Result<UnixStream, String> {
        use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, UnixAddr, sockopt};
        let fd = socket::socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(|e| format!("socket: {e}"))?;
        let addr = UnixAddr::new(&self.path).map_err(|e| format!("bad socket path: {e}"))?;
        match socket::connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr) {
            Ok(()) => {}
            Err(nix::errno::Errno::EAGAIN) => return Err("cannot connect: its listen queue is full".into()),
            Err(e) => return Err(format!("cannot connect: {}", std::io::Error::from(e))),
        }
        let peer =
            socket::getsockopt(&fd, sockopt::PeerCredentials).map_err(|e| format!("SO_PEERCRED: {e}"))?;
        let stream = UnixStream::from(fd);
        stream.set_nonblocking(false).map_err(|e| e.to_string())?;
        let uid = peer.uid();
        let own = nix::unistd::geteuid().as_raw();
        let dir_owner = self.path.parent().and_then(|d| std::fs::metadata(d).ok()).map(|m| {
            use std::os::unix::fs::MetadataExt as _;
            m.uid()
        });
        if uid != 0 && uid != own && Some(uid) != dir_owner {
            return Err(format!(
                "the server there runs as user {uid}: neither root, this process's user ({own}) nor the owner of the \
                 socket's directory; not asked"
            ));
        }
        Ok(stream)
    }
}

/// The monotonic clock, in milliseconds.
fn monotonic_ms() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        u64::try_from(t.tv_sec()).unwrap_or(0).saturating_mul(1000)
            + u64::try_from(t.tv_nsec() / 1_000_000).unwrap_or(0)
    })
}

/// What is left of `deadline`, or an error naming `what` when nothing is.
fn left(deadline: std::time::Instant, what: &str) -> Result<Duration, String> {
    let left = deadline.saturating_duration_since(std::time::Instant::now());
    if left.is_zero() { Err(format!("no {what} in time")) } else { Ok(left) }
}

/// Writes `bytes` before `deadline`, without SIGPIPE if the server closed the connection.
fn send_all(stream: &UnixStream, mut bytes: &[u8], deadline: std::time::Instant) -> Result<(), String> {
    use nix::sys::socket::{MsgFlags, send};
    while !bytes.is_empty() {
        stream.set_write_timeout(Some(left(deadline, "room to send")?)).map_err(|e| e.to_string())?;
        match send(std::os::fd::AsRawFd::as_raw_fd(stream), bytes, MsgFlags::MSG_NOSIGNAL) {
            Ok(0) => return Err("the server closed the connection".into()),
            Ok(n) => bytes = &bytes[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(std::io::Error::from(e).to_string()),
        }
    }
    Ok(())
}

/// Reads one netstring from `stream` before `deadline`: its payload.
fn read_frame(stream: &mut UnixStream, deadline: std::time::Instant) -> Result<Vec<u8>, String> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        // What has come so far: a length, a colon, the payload and a comma.
        if let Some(colon) = buf.iter().position(|&b| b == b':') {
            let len = netstring_length(&buf[..colon])?;
            if len > MAX_ANSWER {
                return Err(format!("an answer of {len} bytes is longer than the client takes"));
            }
            let end = colon + 1 + len;
            if buf.len() > end {
                if buf[end] != b',' || buf.len() > end + 1 {
                    return Err("not one netstring".into());
                }
                buf.truncate(end);
                return Ok(buf.split_off(colon + 1));
            }
        } else if buf.len() > 8 {
            return Err("not a netstring".into());
        }
        stream.set_read_timeout(Some(left(deadline, "answer")?)).map_err(|e| e.to_string())?;
        match stream.read(&mut chunk) {
            Ok(0) => return Err("the server closed the connection before answering".into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return Err("no answer in time".into());
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// A netstring's length: decimal digits, no leading zero.
fn netstring_length(digits: &[u8]) -> Result<usize, String> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) || (digits.len() > 1 && digits[0] == b'0')
    {
        return Err("a length is not a canonical number".into());
    }
    std::str::from_utf8(digits)
        .ok()
        .and_then(|d| d.parse().ok())
        .ok_or_else(|| "a length is too large".into())
}

/// Reads an answer payload.
pub fn decode_answer(payload: &[u8]) -> Result<Answer, String> {
    let mut f = Fields::new(payload);
    if f.bytes()? != FORM {
        return Err("not a check answer".into());
    }
    let answer = match f.bytes()? {
        b"ok" => Answer::Judged(decode_outcome(&mut f)?),
        b"mode" => Answer::Mode(match f.text()? {
            "" => None,
            name => Some(Mode::parse(name).ok_or("unknown mode")?),
        }),
        b"recorded" => Answer::Recorded,
        b"input" => Answer::Input(f.text()?.to_owned()),
        b"error" => return Err(format!("the server refused: {}", f.text()?)),
        _ => return Err("unknown answer".into()),
    };
    if !f.is_done() {
        return Err("fields after the last one".into());
    }
    Ok(answer)
}

/// Judges `request` with `engine`: what the server does with a request, and what a process that
/// could not hand it over does instead (the same code, so the same answer).
pub fn judge(engine: &crate::Engine, request: &Request<'_>) -> Result<Answer, crate::InputError> {
    match *request {
        Request::Check { domain, mx, tls, dane } => {
            engine.check_with(domain, mx, tls, dane).map(Answer::Judged)
        }
        Request::Mode { domain } => Ok(Answer::Mode(engine.policy(domain)?.and_then(|r| r.mode()))),
        Request::Record { domain, mx, result } => engine
            .record_session(domain, mx, result, &crate::engine::SessionDetails::default())
            .map(|()| Answer::Recorded),
    }
}

/// The server end: the answer payload for a request payload, made by `serve` when the client's
/// configuration has `identity`, the identity of the server's.
pub fn answer(
    payload: &[u8],
    identity: &str,
    serve: impl FnOnce(&Request<'_>) -> Result<Answer, crate::InputError>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    put(&mut out, FORM);
    match decode_request(payload) {
        Err(e) => {
            put(&mut out, b"error");
            put(&mut out, format!("bad request: {e}").as_bytes());
        }
        Ok((theirs, _)) if theirs != identity => {
            put(&mut out, b"error");
            put(
                &mut out,
                b"the client's configuration is not the server's (another file, a file changed since the server \
                  read it, or another version of mtasts): reload the server (SIGHUP) or give both the same file",
            );
        }
        Ok((_, request)) => match serve(&request) {
            Ok(Answer::Judged(outcome)) => {
                put(&mut out, b"ok");
                encode_outcome(&outcome, &mut out);
            }
            Ok(Answer::Mode(mode)) => {
                put(&mut out, b"mode");
                put(&mut out, mode.map_or("", Mode::as_str).as_bytes());
            }
            Ok(Answer::Recorded) => put(&mut out, b"recorded"),
            Ok(Answer::Input(e)) => {
                put(&mut out, b"input");
                put(&mut out, e.as_bytes());
            }
            Err(e) => {
                put(&mut out, b"input");
                put(&mut out, e.to_string().as_bytes());
            }
        },
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pinned_policy() -> Arc<CachedPolicy> {
        let text = "version: STSv1\r\nmode: enforce\r\nmx: mx.example.com\r\nmx: *.example.net\r\nmax_age: 86400\r\n";
        let policy = Policy::parse(text.as_bytes()).expect("policy");
        Arc::new(CachedPolicy::new(
            policy,
            PolicyId::parse("abc123").expect("id"),
            text.into(),
            1_700_000_000,
        ))
    }

    /// Every part of an outcome crosses the wire and comes back the same.
    #[test]
    fn outcomes_cross_the_wire_unchanged() {
        let full = Outcome {
            verdict: Verdict::FailEnforce,
            reason: Reason::TlsaInvalid,
            policy: Some(pinned_policy()),
            mx_matches: true,
            detail: Some(Cow::Borrowed("no TLSA record matched: ünïcode, commas, 12:34")),
            dane: Some(Arc::new(DaneInfo {
                lookup: Arc::new(TlsaLookup::Secure {
                    records: vec![
                        TlsaRecord {
                            usage: 3,
                            selector: 1,
                            matching_type: 1,
                            data: vec![0, 1, 2, 255, b','],
                        },
                        TlsaRecord { usage: 2, selector: 0, matching_type: 0, data: vec![] },
                    ],
                    ttl: 3600,
                    base: Some(Domain::parse("mx.example.net").expect("domain")),
                }),
                usable: 2,
                dane: Dane::Failed,
            })),
            overridden: Some(Arc::new(Override {
                domain: Domain::parse("example.com").expect("domain"),
                action: OverrideAction::Pinned(pinned_policy()),
                origin: OverrideOrigin::Config {
                    file: Some("/etc/mtasts/mtasts.toml".into()),
                    policy_file: None,
                },
            })),
        };
        let bare = Outcome {
            verdict: Verdict::NoPolicy,
            reason: Reason::None,
            policy: None,
            mx_matches: false,
            detail: None,
            dane: Some(Arc::new(DaneInfo {
                lookup: Arc::new(TlsaLookup::Bogus("RRSIG expired".into())),
                usable: 0,
                dane: Dane::DnssecInvalid,
            })),
            overridden: Some(Arc::new(Override {
                domain: Domain::parse("example.org").expect("domain"),
                action: OverrideAction::Skip,
                origin: OverrideOrigin::Store { location: "/var/lib/mtasts/cache.db".into(), set_at: 17 },
            })),
        };
        for outcome in [full, bare] {
            let mut wire = Vec::new();
            encode_outcome(&outcome, &mut wire);
            let mut f = Fields::new(&wire);
            let back = decode_outcome(&mut f).expect("decodes");
            assert!(f.is_done());
            assert_eq!(format!("{back:?}"), format!("{outcome:?}"));
        }
    }

    #[test]
    fn requests_cross_the_wire_unchanged() {
        let mut requests: Vec<Request<'_>> =
            [Tls::NotChecked, Tls::NotNegotiated, Tls::Chain(b"-----BEGIN CERTIFICATE-----\n,:\0")]
                .into_iter()
                .map(|tls| Request::Check {
                    domain: "Exämple.com",
                    mx: "mx\u{fffd}.example.com",
                    tls,
                    dane: Dane::Pending,
                })
                .collect();
        requests.push(Request::Mode { domain: "example.com" });
        requests.push(Request::Record { domain: "example.com", mx: "mx.example.com", result: None });
        requests.push(Request::Record {
            domain: "example.com",
            mx: "mx",
            result: Some(Reason::CertificateExpired),
        });
        for request in requests {
            assert_eq!(decode_request(&encode_request("abc", &request)).expect("decodes"), ("abc", request));
        }
    }

    /// Anything that is not exactly a request is refused with a reason, never half read.
    #[test]
    fn malformed_requests_are_refused() {
        let good = encode_request(
            "abc",
            &Request::Check {
                domain: "example.com",
                mx: "mx.example.com",
                tls: Tls::NotNegotiated,
                dane: Dane::NotApplicable,
            },
        );
        for cut in 0..good.len() {
            assert!(decode_request(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut extra = good.clone();
        put(&mut extra, b"more");
        assert!(decode_request(&extra).unwrap_err().contains("after the last"));
        let mut socketmap = Vec::new();
        put(&mut socketmap, b"mtasts example.com");
        assert!(decode_request(&socketmap).is_err());
        assert!(decode_request(b"00:,").is_err());
        assert!(decode_request(b"99999999999999999999999:x,").is_err());
        let mut bad_dane = Vec::new();
        for field in [FORM, b"abc", b"check", b"example.com", b"mx", b"not-negotiated", b"maybe"] {
            put(&mut bad_dane, field);
        }
        assert!(decode_request(&bad_dane).unwrap_err().contains("DANE"));
    }

    /// A server under another configuration refuses, with the reason, and judges nothing.
    #[test]
    fn another_configuration_is_refused() {
        let request = encode_request("theirs", &Request::Mode { domain: "example.com" });
        let mut judged = false;
        let out = answer(&request, "ours", |_| {
            judged = true;
            Ok(Answer::Mode(None))
        });
        assert!(!judged);
        let e = decode_answer(&out).unwrap_err();
        assert!(e.contains("refused") && e.contains("not the server's"), "{e}");
        let out = answer(&request, "theirs", |_| Ok(Answer::Mode(Some(Mode::Enforce))));
        assert!(matches!(decode_answer(&out), Ok(Answer::Mode(Some(Mode::Enforce)))));
    }

    /// A fake server at a socket: accepts one connection, reads the request, then does `then`.
    fn fake(
        name: &str,
        then: impl FnOnce(&mut UnixStream) + Send + 'static,
    ) -> (PathBuf, std::thread::JoinHandle<()>) {
        let dir = std::env::temp_dir().join(format!("mtasts-remote-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("check.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).expect("bind");
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("accept");
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            then(&mut stream);
        });
        (path, server)
    }

    fn ask(path: &Path) -> Result<Answer, Unavailable> {
        Remote::new(path, Duration::from_millis(300), "id".into()).ask(&Request::Check {
            domain: "example.com",
            mx: "mx.example.com",
            tls: Tls::NotNegotiated,
            dane: Dane::NotApplicable,
        })
    }

    /// The client takes an answer only when it is whole and well formed: every shorter prefix of
    /// a good answer, garbage, a refusal and silence make the call unavailable (the caller then
    /// judges it itself), never an outcome.
    #[test]
    fn only_whole_answers_are_taken() {
        let mut good = Vec::new();
        put(&mut good, FORM);
        put(&mut good, b"ok");
        encode_outcome(
            &Outcome {
                verdict: Verdict::Pass,
                reason: Reason::None,
                policy: Some(pinned_policy()),
                mx_matches: true,
                detail: None,
                dane: None,
                overridden: None,
            },
            &mut good,
        );
        let mut framed = Vec::new();
        put(&mut framed, &good);
        let (path, server) = fake("whole", {
            let framed = framed.clone();
            move |s| std::io::Write::write_all(s, &framed).expect("write")
        });
        assert!(matches!(ask(&path), Ok(Answer::Judged(o)) if o.verdict == Verdict::Pass));
        server.join().expect("server");
        let mut wrong: Vec<Vec<u8>> = (1..framed.len()).step_by(23).map(|n| framed[..n].to_vec()).collect();
        wrong.push(framed[..framed.len() - 1].to_vec());
        wrong.push(b"garbage".to_vec());
        wrong.push(b"9:NOTFOUND ,".to_vec());
        let mut refused = Vec::new();
        put(&mut refused, FORM);
        put(&mut refused, b"error");
        put(&mut refused, b"no");
        let mut framed_refusal = Vec::new();
        put(&mut framed_refusal, &refused);
        wrong.push(framed_refusal);
        let mut extra = good.clone();
        put(&mut extra, b"1");
        let mut framed_extra = Vec::new();
        put(&mut framed_extra, &extra);
        wrong.push(framed_extra);
        for (i, bytes) in wrong.into_iter().enumerate() {
            let (path, server) = fake(&format!("wrong{i}"), move |s| {
                std::io::Write::write_all(s, &bytes).expect("write");
                // Half the answers end with the connection closed, half with silence.
                if i % 2 == 1 {
                    std::thread::sleep(Duration::from_millis(500));
                }
            });
            match ask(&path) {
                Err(Unavailable { fresh: true, .. }) => {}
                other => panic!("answer {i}: {other:?}"),
            }
            server.join().expect("server");
        }
    }

    /// No server at the path, or one found unavailable a moment ago: unavailable at once.
    #[test]
    fn a_missing_server_is_unavailable_and_not_asked_again_at_once() {
        let path = std::env::temp_dir().join(format!("mtasts-remote-none-{}.sock", std::process::id()));
        let remote = Remote::new(&path, Duration::from_secs(5), "id".into());
        let request = Request::Mode { domain: "example.com" };
        let first = remote.ask(&request).unwrap_err();
        assert!(first.fresh && first.why.contains("cannot connect"), "{first:?}");
        let second = remote.ask(&request).unwrap_err();
        assert!(!second.fresh && second.why.contains("unavailable less than"), "{second:?}");
    }
}
