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
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
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
        let digits = &self.rest[..colon];
        if digits.is_empty()
            || !digits.iter().all(u8::is_ascii_digit)
            || (digits.len() > 1 && digits[0] == b'0')
        {
            return Err("a field's length is not a number".into());
        }
        let len: usize = std::str::from_utf8(digits)
            .ok()
            .and_then(|d| d.parse().ok())
            .ok_or("a field's length is too large")?;
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

/// The request payload for `request`.
pub fn encode_request(request: &Request<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    put(&mut out, FORM);
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

/// Reads a request payload.
pub fn decode_request(payload: &[u8]) -> Result<Request<'_>, String> {
    let mut f = Fields::new(payload);
    if f.bytes().ok() != Some(FORM) {
        return Err(format!(
            "not a check request (the first field must be {})",
            String::from_utf8_lossy(FORM)
        ));
    }
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
    Ok(request)
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

/// Why a check could not be handed over: the caller then judges it itself.
#[derive(Debug)]
pub struct Unavailable(pub String);

/// The client end: connects to `mtasts serve`'s check socket for each check (no socket outlives
/// a call: docs/architecture.md §3, the library's process model).
#[derive(Clone, Debug)]
pub struct Remote {
    path: PathBuf,
    timeout: Duration,
}

impl Remote {
    /// A client of the socket at `path`, waiting at most `timeout` for each answer.
    pub fn new(path: &Path, timeout: Duration) -> Self {
        Self { path: path.to_owned(), timeout }
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Hands a request to the server and returns its answer.
    pub fn ask(&self, request: &Request<'_>) -> Result<Answer, Unavailable> {
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            Unavailable(format!("mtasts serve at unix:{}: {what}: {e}", self.path.display()))
        };
        let mut stream = UnixStream::connect(&self.path).map_err(|e| fail("cannot connect", &e))?;
        stream.set_read_timeout(Some(self.timeout)).map_err(|e| fail("socket", &e))?;
        stream.set_write_timeout(Some(self.timeout)).map_err(|e| fail("socket", &e))?;
        let payload = encode_request(request);
        let mut frame = Vec::with_capacity(payload.len() + 12);
        put(&mut frame, &payload);
        stream.write_all(&frame).map_err(|e| fail("cannot send the check", &e))?;
        let answer = read_frame(&mut stream).map_err(|e| fail("no answer", &e))?;
        let mut f = Fields::new(&answer);
        let read = |f: &mut Fields<'_>| -> Result<Answer, String> {
            if f.bytes()? != FORM {
                return Err("not a check answer".into());
            }
            let answer = match f.bytes()? {
                b"ok" => Answer::Judged(decode_outcome(f)?),
                b"mode" => Answer::Mode(match f.text()? {
                    "" => None,
                    name => Some(Mode::parse(name).ok_or("unknown mode")?),
                }),
                b"recorded" => Answer::Recorded,
                b"input" => Answer::Input(f.text()?.to_owned()),
                b"error" => return Err(format!("the server failed: {}", f.text()?)),
                _ => return Err("unknown answer".into()),
            };
            if !f.is_done() {
                return Err("fields after the last one".into());
            }
            Ok(answer)
        };
        read(&mut f).map_err(|e| fail("unreadable answer", &e))
    }
}

/// Reads one netstring from `stream`: its payload.
fn read_frame(stream: &mut UnixStream) -> Result<Vec<u8>, String> {
    let mut head = Vec::with_capacity(16);
    let mut byte = [0u8; 1];
    loop {
        match stream.read(&mut byte) {
            Ok(0) => return Err("the server closed the connection".into()),
            Ok(_) if byte[0] == b':' => break,
            Ok(_) if byte[0].is_ascii_digit() && head.len() < 8 => head.push(byte[0]),
            Ok(_) => return Err("not a netstring".into()),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    let len: usize = std::str::from_utf8(&head)
        .ok()
        .and_then(|d| d.parse().ok())
        .filter(|&n| n <= MAX_ANSWER)
        .ok_or("an answer's length is missing or too large")?;
    let mut body = vec![0u8; len + 1];
    stream.read_exact(&mut body).map_err(|e| e.to_string())?;
    if body.pop() != Some(b',') {
        return Err("the answer does not end with `,`".into());
    }
    Ok(body)
}

/// The server end: the answer payload for a request payload, made by `serve`.
pub fn answer(
    payload: &[u8],
    serve: impl FnOnce(&Request<'_>) -> Result<Answer, crate::InputError>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    put(&mut out, FORM);
    match decode_request(payload) {
        Err(e) => {
            put(&mut out, b"error");
            put(&mut out, format!("bad request: {e}").as_bytes());
        }
        Ok(request) => match serve(&request) {
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
            assert_eq!(decode_request(&encode_request(&request)).expect("decodes"), request);
        }
    }

    /// Anything that is not exactly a request is refused with a reason, never half read.
    #[test]
    fn malformed_requests_are_refused() {
        let good = encode_request(&Request::Check {
            domain: "example.com",
            mx: "mx.example.com",
            tls: Tls::NotNegotiated,
            dane: Dane::NotApplicable,
        });
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
        for field in [FORM, b"check", b"example.com", b"mx", b"not-negotiated", b"maybe"] {
            put(&mut bad_dane, field);
        }
        assert!(decode_request(&bad_dane).unwrap_err().contains("DANE"));
    }
}
