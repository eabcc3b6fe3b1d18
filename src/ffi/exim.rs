//! Exim `${dlfunc}` entry points (docs/architecture.md §6.2), in the same `libmtasts.so` as the C ABI.
//!
//! Exim calls `int fn(uschar **yield, int argc, uschar *argv[])` (`local_scan.h`), where `argc`
//! counts only the `{arg}`s after the function name and `argv[argc]` is NULL:
//!
//! | entry point | arguments | yields |
//! |---|---|---|
//! | `mtasts_exim_mode` | `{domain}` | `enforce`, `testing` or `none` |
//! | `mtasts_exim_mx_ok` | `{domain}{mx}` | `yes` or `no` |
//! | `mtasts_exim_check` | `{domain}{mx}{certificate}` | `pass`, `no-policy`, `fail-enforce`, `fail-testing` |
//! | `mtasts_exim_tls_cert` | `{domain}{mx}{depth}{certificate}` | empty, or why an `enforce` policy refuses the chain |
//!
//! Each takes an optional last argument `{config=/path/to/mtasts.toml}`; without it the
//! process-wide default engine is used (`$MTASTS_CONFIG`, else `/etc/mtasts/mtasts.toml`, else
//! defaults; note that Exim clears the environment unless `keep_environment` says otherwise).
//! Each engine (the default one, one per `config=` path) is built once per process, and built
//! anew in a forked child; the TLSRPT sessions it counted (`mtasts_exim_check`,
//! `mtasts_exim_tls_cert`) are written to its store at `exit()`, as Exim's delivery processes
//! never free it.
//!
//! Return codes, the same for every entry point:
//!
//! * `OK` (0): the answer is in `*yield`, a static string or one this library keeps until the
//!   next call from the same thread (Exim copies it at once).
//! * `FAIL` (2): the policy domain is not a domain name (an address literal is *not* an error: it
//!   has no policy). The expansion fails; in a router's `address_data` Exim then defers the
//!   address, in a transport option it defers the delivery. An MX that is not an ASCII host name
//!   (letters, digits, hyphens, A-labels; any case, an optional trailing dot) is not an error
//!   either, whatever its bytes (U-labels, full-width letters or dots, `U+3002`, invalid UTF-8):
//!   it matches no `mx` pattern, so a policy in force fails it.
//! * `ERROR` (3): a usage error (wrong number of arguments, NULL argument, an argument other
//!   than the MX that is not UTF-8, a certificate given as the text `<cert>`), a configuration that
//!   cannot be used, or an internal error (a panic caught at this boundary).
//! * `DEFER` (1) is never returned: a policy that cannot be discovered or fetched means "no policy"
//!   (RFC 8461 §5: deliver), unless an unexpired cached policy still applies.
//! * `FAIL_FORCED` (4) is never returned.
//!
//! On every failure `*yield` points to a message that stays valid for the life of the process
//! (Exim keeps the pointer, not a copy): a static string, or a message interned once per distinct
//! text (at most 64 distinct texts, then a static summary).
//!
//! Exim passes certificates only through its own expansion operators: `$tls_out_peercert`
//! expanded as a string is the literal text `<cert>`, while `${base64:$tls_out_peercert}` is the
//! base64 of the certificate's DER. That is the leaf alone; the intermediates are visible only in
//! the `tls:cert` event, raised once per certificate of the chain the MX sent (highest depth
//! first, the leaf last at depth 0). [`mtasts_exim_tls_cert`] collects them there and judges the
//! whole chain when the leaf arrives.
//!
//! Nothing here links against Exim: the library loads in any process (Python's ctypes too).

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ffi::{CStr, CString, OsStr, c_char, c_int, c_uchar};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;

use super::boundary::guard;
use super::registry::{Front, FrontError, PerProcess, configured_front, default_front};
use super::types::{mode_c_name, verdict_c_name};
use crate::engine::{InputError, Tls};
use crate::policy::Mode;
use crate::verdict::{Dane, Reason, Verdict};

/// Exim's `OK`: `*yield` is the result.
const OK: c_int = 0;
/// Exim's `FAIL`: the expansion fails with the message in `*yield`.
const FAIL: c_int = 2;
/// Exim's `ERROR`: the expansion fails with the message in `*yield`.
const ERROR: c_int = 3;

/// The most arguments Exim passes to a dlfunc (8); more is a caller bug.
const MAX_ARGS: usize = 8;
/// Distinct dynamic failure messages kept for the life of the process before falling back to
/// static summaries.
pub(crate) const MAX_KEPT_MESSAGES: usize = 64;

const PANIC: &CStr = c"mtasts: internal error (a panic was caught); nothing was decided";
const CERT_PLACEHOLDER: &CStr = c"mtasts: the certificate argument is the text <cert>: \
pass ${base64:$tls_out_peercert}, not $tls_out_peercert";
const BAD_DEPTH: &CStr =
    c"mtasts: the depth argument of mtasts_exim_tls_cert is not a number (pass $event_data)";
const BAD_CONFIG: &CStr = c"mtasts: the configuration file cannot be used";
const BAD_DOMAIN: &CStr = c"mtasts: the policy domain is not a valid domain name";
const NULL_ARG: &CStr = c"mtasts: an argument is NULL";

/// A failed call: Exim's return code and a message that outlives the call.
#[derive(Debug)]
struct Failure {
    code: c_int,
    message: &'static CStr,
}

impl Failure {
    fn error(message: &'static CStr) -> Self {
        Self { code: ERROR, message }
    }
}

/// What a successful call yields.
#[derive(Debug)]
enum Answer {
    Static(&'static CStr),
    Owned(CString),
}

thread_local! {
    /// The last dynamic answer of this thread, kept until the next call (Exim copies it first).
    static LAST_ANSWER: RefCell<Option<CString>> = const { RefCell::new(None) };
}

/// Failure messages made at run time, leaked once each so that Exim may keep the pointer. Per
/// process, like every registry here: a forked child never locks what its parent held.
pub(super) static KEPT_MESSAGES: PerProcess<Mutex<Vec<&'static CStr>>> = PerProcess::new();

/// `message` on one line, as a string that lives for the rest of the process: interned, or
/// `fallback` when the text cannot be a C string or the table is full.
fn lasting(message: String, fallback: &'static CStr) -> &'static CStr {
    kept_in(KEPT_MESSAGES.get(), message, fallback)
}

fn kept_in(table: &Mutex<Vec<&'static CStr>>, message: String, fallback: &'static CStr) -> &'static CStr {
    // One line: Exim writes the message into its logs.
    let message = message.split_whitespace().collect::<Vec<_>>().join(" ");
    let Ok(message) = CString::new(message) else { return fallback };
    let mut kept = table.lock();
    if let Some(existing) = kept.iter().find(|k| **k == message.as_c_str()) {
        return existing;
    }
    if kept.len() >= MAX_KEPT_MESSAGES {
        return fallback;
    }
    let leaked: &'static CStr = Box::leak(message.into_boxed_c_str());
    kept.push(leaked);
    leaked
}

/// The boundary every entry point goes through: checks `yield_`, catches panics, writes the
/// answer or the failure message to `*yield_`.
///
/// # Safety
/// `yield_` is NULL or writable.
unsafe fn boundary(yield_: *mut *mut c_uchar, body: impl FnOnce() -> Result<Answer, Failure>) -> c_int {
    if yield_.is_null() {
        return ERROR;
    }
    let (code, text): (c_int, *const c_char) = match guard(Err(Failure::error(PANIC)), body) {
        Ok(Answer::Static(s)) => (OK, s.as_ptr()),
        Ok(Answer::Owned(s)) => (
            OK,
            LAST_ANSWER.with(|last| {
                let mut last = last.borrow_mut();
                last.insert(s).as_ptr()
            }),
        ),
        Err(f) => (f.code, f.message.as_ptr()),
    };
    // SAFETY: non-NULL and writable by contract. Exim never writes through the yielded pointer.
    unsafe { *yield_ = text.cast_mut().cast::<c_uchar>() };
    code
}

/// The arguments of one call: the positional ones, and the path of `{config=...}` if given last.
#[derive(Debug)]
struct Args<'a> {
    values: Vec<&'a [u8]>,
    config: Option<&'a Path>,
}

/// Reads Exim's `argc`/`argv`, checking the count against `expected` positional arguments.
///
/// # Safety
/// `argv` is NULL or points to `argc` pointers, each NULL or a NUL-terminated string that lives
/// for `'a`.
unsafe fn read_args<'a>(
    argc: c_int,
    argv: *mut *mut c_uchar,
    expected: usize,
    usage: &'static CStr,
) -> Result<Args<'a>, Failure> {
    let Ok(argc) = usize::try_from(argc) else { return Err(Failure::error(usage)) };
    if argc > MAX_ARGS {
        return Err(Failure::error(usage));
    }
    if argc > 0 && argv.is_null() {
        return Err(Failure::error(NULL_ARG));
    }
    let mut values = Vec::with_capacity(argc);
    for i in 0..argc {
        // SAFETY: `argv` holds `argc` pointers by contract.
        let p = unsafe { *argv.add(i) };
        if p.is_null() {
            return Err(Failure::error(NULL_ARG));
        }
        // SAFETY: non-NULL and NUL-terminated by contract.
        values.push(unsafe { CStr::from_ptr(p.cast::<c_char>()) }.to_bytes());
    }
    // No domain, MX, depth or certificate starts with `config=`: a last argument that does is
    // always the configuration, whatever the count.
    let config = match values.last().and_then(|last| last.strip_prefix(b"config=")) {
        Some([]) => return Err(Failure::error(usage)),
        Some(path) => Some(Path::new(OsStr::from_bytes(path))),
        None => None,
    };
    if config.is_some() {
        values.pop();
    }
    if values.len() != expected {
        return Err(Failure::error(usage));
    }
    Ok(Args { values, config })
}

/// A positional argument as UTF-8.
fn text<'a>(args: &Args<'a>, index: usize, not_utf8: &'static CStr) -> Result<&'a str, Failure> {
    let bytes = args.values.get(index).copied().unwrap_or_default();
    std::str::from_utf8(bytes).map_err(|_| Failure::error(not_utf8))
}

/// The MX argument, whatever its bytes: bytes that are not UTF-8 become U+FFFD, and anything that
/// is not an ASCII host name matches no `mx` pattern (src/mx.rs), as in the C API. A usage error
/// here would defer the address or skip the check, which a garbled MX record must not achieve.
fn mx_text<'a>(args: &Args<'a>, index: usize) -> Cow<'a, str> {
    String::from_utf8_lossy(args.values.get(index).copied().unwrap_or_default())
}

/// The front for `config` (a path given with `config=`), or the default one: both kept in the
/// per-process registry of src/ffi/registry.rs, made once per process; their engines are built at
/// the first call that needs one and written at `exit()`, and their calls go to `mtasts serve`
/// first when `[serve] check_socket` is set.
fn front(config: Option<&Path>) -> Result<Arc<Front>, Failure> {
    config.map_or_else(default_front, configured_front).map_err(|e| config_failure(&e))
}

fn config_failure(e: &str) -> Failure {
    Failure::error(lasting(format!("mtasts: {e}"), BAD_CONFIG))
}

fn front_failure(e: FrontError) -> Failure {
    match e {
        FrontError::Config(e) => config_failure(&e),
        FrontError::Input(e) => input_failure(&e),
    }
}

fn input_failure(e: &InputError) -> Failure {
    Failure { code: FAIL, message: lasting(format!("mtasts: {e}"), BAD_DOMAIN) }
}

/// Reads a certificate argument: empty (no TLS) gives `None`; PEM text is used as it is; anything
/// else is taken as base64 DER certificates (what `${base64:$tls_out_peercert}` yields), several
/// separated by white space, `,`, `;` or `:`, and turned into PEM. Text that is neither still
/// reaches the certificate check, which then fails (a certificate that cannot be read is a
/// validation failure, not a usage error).
fn certificate(arg: &[u8]) -> Result<Option<Vec<u8>>, Failure> {
    let arg = arg.trim_ascii();
    if arg.is_empty() {
        return Ok(None);
    }
    if arg == b"<cert>" {
        return Err(Failure::error(CERT_PLACEHOLDER));
    }
    if arg.windows(10).any(|w| w == b"-----BEGIN") {
        return Ok(Some(arg.to_vec()));
    }
    let is_b64 = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=');
    let separator = |b: &u8| b.is_ascii_whitespace() || matches!(b, b',' | b';' | b':');
    if !arg.iter().all(|b| is_b64(b) || separator(b)) {
        return Ok(Some(arg.to_vec()));
    }
    let mut pem = Vec::new();
    for blob in arg.split(separator).filter(|b| !b.is_empty()) {
        pem.extend_from_slice(b"-----BEGIN CERTIFICATE-----\n");
        for line in blob.chunks(64) {
            pem.extend_from_slice(line);
            pem.push(b'\n');
        }
        pem.extend_from_slice(b"-----END CERTIFICATE-----\n");
    }
    Ok(Some(pem))
}

// ---------------------------------------------------------------------------------------------
// Entry points

const MODE_USAGE: &CStr = c"usage: ${dlfunc{/path/libmtasts.so}{mtasts_exim_mode}{DOMAIN}} \
(optionally followed by {config=/path/to/mtasts.toml})";

/// `${dlfunc{LIB}{mtasts_exim_mode}{DOMAIN}}` (optionally `{config=/path}` last): the mode of the
/// policy that applies to `DOMAIN`: `enforce`, `testing`, or `none` (also when no policy is
/// published, for an address literal, and when discovery or the fetch failed with nothing
/// cached). For a router's `address_data`.
///
/// Returns `OK`; `FAIL` when `DOMAIN` is not a domain name; `ERROR` for usage, configuration and
/// internal errors. Never `DEFER`. May do DNS and HTTPS inside the call when the policy is not
/// cached. Fork-safe (a child builds its own engine).
///
/// # Safety
/// Exim's dlfunc contract: `yield_` is writable, `argv` holds `argc` NUL-terminated strings.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mtasts_exim_mode(
    yield_: *mut *mut c_uchar,
    argc: c_int,
    argv: *mut *mut c_uchar,
) -> c_int {
    // SAFETY: forwarded caller contract.
    unsafe {
        boundary(yield_, || {
            let args = read_args(argc, argv, 1, MODE_USAGE)?;
            let domain = text(&args, 0, c"mtasts: the domain argument is not valid UTF-8")?;
            let mode = front(args.config)?.mode(domain).map_err(front_failure)?;
            // No policy reads as `none`.
            Ok(Answer::Static(mode_c_name(mode.unwrap_or(Mode::None))))
        })
    }
}

const MX_OK_USAGE: &CStr = c"usage: ${dlfunc{/path/libmtasts.so}{mtasts_exim_mx_ok}{DOMAIN}{MX}} \
(optionally followed by {config=/path/to/mtasts.toml})";

/// `${dlfunc{LIB}{mtasts_exim_mx_ok}{DOMAIN}{MX}}` (optionally `{config=/path}` last): `yes` when
/// the MX host may be used for `DOMAIN` (no policy, `mode: none`, or `MX` matches an `mx` pattern
/// of the policy), `no` when an `enforce` or `testing` policy does not list it (also when `MX` is
/// not an ASCII host name, whatever its bytes: nothing is mapped onto a listed name). For the
/// `tcp:connect` event (a non-empty result there skips the host); act on `no` only for `enforce`.
///
/// Returns `OK`; `FAIL` when `DOMAIN` is not a domain name; `ERROR` for usage,
/// configuration and internal errors. Never `DEFER`. Fork-safe.
///
/// # Safety
/// Exim's dlfunc contract: `yield_` is writable, `argv` holds `argc` NUL-terminated strings.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mtasts_exim_mx_ok(
    yield_: *mut *mut c_uchar,
    argc: c_int,
    argv: *mut *mut c_uchar,
) -> c_int {
    // SAFETY: forwarded caller contract.
    unsafe {
        boundary(yield_, || {
            let args = read_args(argc, argv, 2, MX_OK_USAGE)?;
            let domain = text(&args, 0, c"mtasts: the domain argument is not valid UTF-8")?;
            let mx = &*mx_text(&args, 1);
            let outcome = front(args.config)?
                .check_with(domain, mx, Tls::NotChecked, Dane::NotApplicable)
                .map_err(front_failure)?;
            Ok(Answer::Static(match outcome.verdict {
                Verdict::FailEnforce | Verdict::FailTesting => c"no",
                _ => c"yes",
            }))
        })
    }
}

const RECORD_USAGE: &CStr = c"usage: ${dlfunc{/path/libmtasts.so}{mtasts_exim_record}{DOMAIN}{MX}{RESULT}} \
with RESULT `success` or an RFC 8460 result type (optionally followed by {config=/path/to/mtasts.toml})";
const BAD_RESULT: &CStr =
    c"mtasts: the result is not `success` nor an RFC 8460 result type (e.g. starttls-not-supported)";

/// `${dlfunc{LIB}{mtasts_exim_record}{DOMAIN}{MX}{RESULT}}` (optionally `{config=/path}` last):
/// counts one SMTP session for TLSRPT (RFC 8460) under `DOMAIN`'s policy, for the `msg:delivery`
/// and `msg:host:defer` events. `RESULT` is `success` or an RFC 8460 result type
/// (`starttls-not-supported`, `certificate-not-trusted`, `certificate-host-mismatch`,
/// `certificate-expired`, `validation-failure`, or the DANE ones `tlsa-invalid`, `dnssec-invalid`,
/// `dane-required`). Counted under an `enforce` or `testing` policy, and under the `tlsa` policy
/// of `MX` where DANE applies to it (as `Engine::record_session` says), and written to the store at once (Exim runs one short process per delivery). Yields
/// the empty string. Not for the delivery of TLSRPT report mail, which RFC 8460 §3 leaves out of
/// reports (the example configuration routes it past mtasts altogether).
///
/// Returns `OK`; `FAIL` when `DOMAIN` is not a domain name; `ERROR` for usage (including an
/// unknown `RESULT`), configuration and internal errors. Never `DEFER`. Fork-safe.
///
/// # Safety
/// Exim's dlfunc contract: `yield_` is writable, `argv` holds `argc` NUL-terminated strings.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mtasts_exim_record(
    yield_: *mut *mut c_uchar,
    argc: c_int,
    argv: *mut *mut c_uchar,
) -> c_int {
    // SAFETY: forwarded caller contract.
    unsafe {
        boundary(yield_, || {
            let args = read_args(argc, argv, 3, RECORD_USAGE)?;
            let domain = text(&args, 0, c"mtasts: the domain argument is not valid UTF-8")?;
            let mx = &*mx_text(&args, 1);
            let result = match text(&args, 2, BAD_RESULT)?.trim() {
                "success" => None,
                name => match Reason::parse(name) {
                    Some(r) if r.tlsrpt_result_type() == Some(name) => Some(r),
                    _ => return Err(Failure::error(BAD_RESULT)),
                },
            };
            front(args.config)?.record(domain, mx, result).map_err(front_failure)?;
            Ok(Answer::Static(c""))
        })
    }
}

const CHECK_USAGE: &CStr =
    c"usage: ${dlfunc{/path/libmtasts.so}{mtasts_exim_check}{DOMAIN}{MX}{CERTIFICATE}} \
(optionally followed by {config=/path/to/mtasts.toml})";

/// `${dlfunc{LIB}{mtasts_exim_check}{DOMAIN}{MX}{CERTIFICATE}}` (optionally `{config=/path}`
/// last): the verdict for a delivery to `MX`: `pass`, `no-policy` (also for `mode: none`),
/// `fail-enforce` (do not deliver to this MX) or `fail-testing` (deliver, and report).
///
/// `CERTIFICATE` is the chain the MX presented, leaf first: PEM text, or base64 DER
/// certificates separated by white space or commas (`${base64:$tls_out_peercert}` gives the
/// leaf). Empty means no TLS was negotiated. Exim exposes only the leaf after the handshake, so a
/// leaf signed by an intermediate does not verify here (`certificate-not-trusted`): judge
/// certificates in the `tls:cert` event with [`mtasts_exim_tls_cert`], which sees the whole
/// chain, and use this call for chains obtained otherwise or with `{}` (no TLS).
///
/// Returns `OK`; `FAIL` when `DOMAIN` is not a domain name; `ERROR` for usage (including a
/// certificate given as the text `<cert>`), configuration and internal errors. Never `DEFER`.
///
/// # Safety
/// Exim's dlfunc contract: `yield_` is writable, `argv` holds `argc` NUL-terminated strings.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mtasts_exim_check(
    yield_: *mut *mut c_uchar,
    argc: c_int,
    argv: *mut *mut c_uchar,
) -> c_int {
    // SAFETY: forwarded caller contract.
    unsafe {
        boundary(yield_, || {
            let args = read_args(argc, argv, 3, CHECK_USAGE)?;
            let domain = text(&args, 0, c"mtasts: the domain argument is not valid UTF-8")?;
            let mx = &*mx_text(&args, 1);
            let chain = certificate(args.values[2])?;
            let tls = chain.as_deref().map_or(Tls::NotNegotiated, Tls::Chain);
            let outcome = front(args.config)?
                .check_with(domain, mx, tls, Dane::NotApplicable)
                .map_err(front_failure)?;
            Ok(Answer::Static(verdict_c_name(outcome.verdict)))
        })
    }
}

/// The chain being received in `tls:cert` events: certificates above the leaf, by depth.
#[derive(Debug)]
struct PendingChain {
    pid: u32,
    mx: String,
    above_leaf: BTreeMap<u32, Vec<u8>>,
}

static PENDING_CHAIN: PerProcess<Mutex<Option<PendingChain>>> = PerProcess::new();

const TLS_CERT_USAGE: &CStr = c"usage: ${dlfunc{/path/libmtasts.so}{mtasts_exim_tls_cert}{DOMAIN}{MX}{DEPTH}{CERTIFICATE}} \
with DEPTH $event_data and CERTIFICATE ${base64:$tls_out_peercert} (optionally followed by {config=/path/to/mtasts.toml})";

/// `${dlfunc{LIB}{mtasts_exim_tls_cert}{DOMAIN}{MX}{$event_data}{${base64:$tls_out_peercert}}}`
/// (optionally `{config=/path}` last), for the transport's `tls:cert` event, which Exim raises
/// once per certificate the MX sent, from the highest depth down to the leaf at depth 0.
///
/// Certificates above the leaf are kept (per process and MX host) and yield the empty string. At
/// depth 0 the whole chain is judged: the yield is empty unless the verdict is `fail-enforce`,
/// when it says why (`MTA-STS enforce policy of DOMAIN refuses MX: REASON: DETAIL`); a non-empty
/// result in the `tls:cert` event makes Exim refuse the certificate, so with `hosts_require_tls`
/// the delivery to that MX is deferred and the next MX is tried. `testing` failures yield the
/// empty string (deliver).
///
/// Returns `OK`; `FAIL` when `DOMAIN` is not a domain name; `ERROR` for usage (a `DEPTH`
/// that is not a number, a certificate given as `<cert>`), configuration and internal errors.
/// Never `DEFER`.
///
/// # Safety
/// Exim's dlfunc contract: `yield_` is writable, `argv` holds `argc` NUL-terminated strings.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mtasts_exim_tls_cert(
    yield_: *mut *mut c_uchar,
    argc: c_int,
    argv: *mut *mut c_uchar,
) -> c_int {
    // SAFETY: forwarded caller contract.
    unsafe {
        boundary(yield_, || {
            let args = read_args(argc, argv, 4, TLS_CERT_USAGE)?;
            let domain = text(&args, 0, c"mtasts: the domain argument is not valid UTF-8")?;
            let mx = &*mx_text(&args, 1);
            let depth: u32 =
                text(&args, 2, BAD_DEPTH)?.trim().parse().map_err(|_| Failure::error(BAD_DEPTH))?;
            let cert = certificate(args.values[3])?;
            let pid = std::process::id();
            let mut pending = PENDING_CHAIN.get().lock();
            // A chain from another process, another MX, or one that repeats a depth is stale.
            let stale = pending.as_ref().is_none_or(|p| {
                p.pid != pid || p.mx != mx || (depth > 0 && p.above_leaf.contains_key(&depth))
            });
            if stale {
                *pending = None;
            }
            if depth > 0 {
                let chain = pending.get_or_insert_with(|| PendingChain {
                    pid,
                    mx: mx.to_owned(),
                    above_leaf: BTreeMap::new(),
                });
                if let Some(cert) = cert {
                    chain.above_leaf.insert(depth, cert);
                }
                return Ok(Answer::Static(c""));
            }
            let above_leaf = pending.take().map(|p| p.above_leaf).unwrap_or_default();
            drop(pending);
            let Some(leaf) = cert else { return Ok(Answer::Static(c"")) };
            let chain: Vec<u8> = std::iter::once(leaf).chain(above_leaf.into_values()).flatten().collect();
            let outcome = front(args.config)?
                .check_with(domain, mx, Tls::Chain(&chain), Dane::NotApplicable)
                .map_err(front_failure)?;
            if outcome.verdict != Verdict::FailEnforce {
                return Ok(Answer::Static(c""));
            }
            let mut why =
                format!("MTA-STS enforce policy of {domain} refuses {mx}: {}", outcome.reason.as_str());
            if let Some(detail) = &outcome.detail {
                why.push_str(": ");
                why.push_str(detail);
            }
            Ok(Answer::Owned(CString::new(why.replace('\0', " ")).unwrap_or_default()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mtasts_fixtures::dns::DnsServer;
    use mtasts_fixtures::https::{HttpsServer, Response};
    use mtasts_fixtures::pki::pki;
    use std::path::PathBuf;
    use std::ptr::null_mut;

    type DlFunc = unsafe extern "C" fn(*mut *mut c_uchar, c_int, *mut *mut c_uchar) -> c_int;

    /// Calls `f` as Exim does (argv NULL-terminated) and returns the code and the yield.
    fn call(f: DlFunc, args: &[&[u8]]) -> (c_int, String) {
        let owned: Vec<CString> = args.iter().map(|a| CString::new(*a).expect("no NUL")).collect();
        let mut argv: Vec<*mut c_uchar> = owned.iter().map(|c| c.as_ptr().cast_mut().cast()).collect();
        argv.push(null_mut());
        let argc = c_int::try_from(args.len()).expect("few");
        let mut yielded: *mut c_uchar = null_mut();
        // SAFETY: Exim's contract, kept by this test.
        let code = unsafe { f(&mut yielded, argc, argv.as_mut_ptr()) };
        assert!(!yielded.is_null(), "a yield or a message is always written");
        // SAFETY: the library yields NUL-terminated strings.
        let text = unsafe { CStr::from_ptr(yielded.cast::<c_char>()) }.to_string_lossy().into_owned();
        (code, text)
    }

    /// A configuration that needs no network for the answers tested here.
    fn offline_config() -> (PathBuf, Vec<u8>) {
        let dir = std::env::temp_dir().join(format!("mtasts-exim-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("mtasts.toml");
        std::fs::write(
            &path,
            "[dns]\nnameservers = [\"127.0.0.1:9\"]\ntimeout_ms = 200\ndnssec = \"off\"\n[cache]\npath = \"memory\"\n",
        )
        .expect("write config");
        let arg = [b"config=".as_slice(), path.as_os_str().as_bytes()].concat();
        (path, arg)
    }

    #[test]
    fn null_yield_is_an_error() {
        let mut argv = [null_mut()];
        // SAFETY: a NULL yield is what is tested; argv is NULL-terminated.
        assert_eq!(unsafe { mtasts_exim_mode(null_mut(), 0, argv.as_mut_ptr()) }, ERROR);
    }

    #[test]
    fn bad_argc_and_argv() {
        for argc in [-1, 0, 9] {
            let mut yielded: *mut c_uchar = null_mut();
            let mut argv = [null_mut(); 10];
            // SAFETY: argv has room for every argc tried; all entries NULL.
            let code = unsafe { mtasts_exim_mode(&mut yielded, argc, argv.as_mut_ptr()) };
            assert_eq!(code, ERROR, "argc {argc}");
            assert!(!yielded.is_null());
        }
        let mut yielded: *mut c_uchar = null_mut();
        // SAFETY: argv NULL with argc 1 is what is tested.
        assert_eq!(unsafe { mtasts_exim_mode(&mut yielded, 1, null_mut()) }, ERROR);
        // SAFETY: the message is a static C string.
        assert_eq!(unsafe { CStr::from_ptr(yielded.cast::<c_char>()) }, NULL_ARG);
        let mut argv = [null_mut(), null_mut()];
        // SAFETY: a NULL entry is what is tested.
        assert_eq!(unsafe { mtasts_exim_mode(&mut yielded, 1, argv.as_mut_ptr()) }, ERROR);
    }

    #[test]
    fn usage_errors() {
        let (_, config) = offline_config();
        assert_eq!(call(mtasts_exim_mode, &[]).0, ERROR);
        assert_eq!(call(mtasts_exim_mode, &[b"a.test", b"b.test"]).0, ERROR);
        assert_eq!(call(mtasts_exim_mode, &[b"a.test", b"config="]).0, ERROR);
        assert_eq!(call(mtasts_exim_mx_ok, &[b"a.test", &config]).0, ERROR);
        assert_eq!(call(mtasts_exim_check, &[b"a.test", b"mx.a.test", &config]).0, ERROR);
        assert_eq!(call(mtasts_exim_tls_cert, &[b"a.test", b"mx.a.test", b"x", b"", &config]).0, ERROR);
        assert_eq!(call(mtasts_exim_mode, &[b"\xff.test", &config]).0, ERROR);
        let (code, text) = call(mtasts_exim_mode, &[b"a.test", b"config=/nonexistent/mtasts.toml"]);
        assert_eq!(code, ERROR);
        assert!(text.contains("/nonexistent/mtasts.toml"), "{text}");
    }

    #[test]
    fn answers_without_network() {
        let (_, config) = offline_config();
        assert_eq!(call(mtasts_exim_mode, &[b"[192.0.2.1]", &config]), (OK, "none".into()));
        assert_eq!(call(mtasts_exim_mx_ok, &[b"[192.0.2.1]", b"mx.test", &config]), (OK, "yes".into()));
        assert_eq!(
            call(mtasts_exim_check, &[b"[192.0.2.1]", b"mx.test", b"", &config]),
            (OK, "no-policy".into())
        );
        let (code, text) = call(mtasts_exim_mode, &[b"", &config]);
        assert_eq!(code, FAIL);
        assert!(text.starts_with("mtasts: policy domain:"), "{text}");
        let (code, text) = call(mtasts_exim_check, &[b"a.test", b"mx.a.test", b"<cert>", &config]);
        assert_eq!((code, text.as_str()), (ERROR, CERT_PLACEHOLDER.to_str().expect("ASCII")));
    }

    /// Local DNS and HTTPS fixtures serving an `enforce` policy for `enforce.test` (`mx:
    /// mx.enforce.test`), and the `{config=...}` argument pointing at them.
    fn enforce_world(tag: &str) -> (DnsServer, HttpsServer, Vec<u8>) {
        let dns = DnsServer::start().expect("dns fixture");
        let https = HttpsServer::start().expect("https fixture");
        let host = "mta-sts.enforce.test";
        dns.set_txt1("_mta-sts.enforce.test", &["v=STSv1; id=e1"]);
        dns.set_a(host, std::net::Ipv4Addr::LOCALHOST);
        https.set_cert(host, &pki().leaf(&[host]));
        https.set_response(
            host,
            Response::policy("version: STSv1\nmode: enforce\nmx: mx.enforce.test\nmax_age: 86400\n"),
        );
        let dir = std::env::temp_dir().join(format!("mtasts-exim-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        pki().write_root(&dir.join("ca.pem")).expect("root");
        let path = dir.join("mtasts.toml");
        std::fs::write(
            &path,
            format!(
                "[dns]\nnameservers = [\"{}\"]\ndnssec = \"off\"\n[https]\nca_file = \"{}\"\nport = {}\n[cache]\npath = \"memory\"\n",
                dns.addr(),
                dir.join("ca.pem").display(),
                https.addr().port()
            ),
        )
        .expect("write config");
        let arg = [b"config=".as_slice(), path.as_os_str().as_bytes()].concat();
        (dns, https, arg)
    }

    #[test]
    fn an_mx_that_is_not_an_ascii_host_name_is_refused_not_an_error() {
        let (_dns, _https, config) = enforce_world("mx");
        let mx_ok = |mx: &[u8]| call(mtasts_exim_mx_ok, &[b"enforce.test", mx, &config]);
        assert_eq!(mx_ok(b"mx.enforce.test"), (OK, "yes".into()));
        assert_eq!(mx_ok(b"MX.Enforce.TEST."), (OK, "yes".into()));
        assert_eq!(mx_ok(b"mx.other.test"), (OK, "no".into()));
        for mx in [
            b"mx.enforce.test\xff".as_slice(),          // not UTF-8
            b"\xc0\xaemx.enforce.test",                 // an overlong '.'
            "\u{ff4d}\u{ff58}.enforce.test".as_bytes(), // full-width letters
            "mx\u{ff0e}enforce\u{ff0e}test".as_bytes(), // full-width dots
            "mx\u{3002}enforce\u{3002}test".as_bytes(), // ideographic dots
        ] {
            assert_eq!(mx_ok(mx), (OK, "no".into()), "{}", String::from_utf8_lossy(mx));
            let check = call(mtasts_exim_check, &[b"enforce.test", mx, b"", &config]);
            assert_eq!(check, (OK, "fail-enforce".into()), "{}", String::from_utf8_lossy(mx));
        }
        // The domain argument is still refused when it is not UTF-8.
        assert_eq!(call(mtasts_exim_mx_ok, &[b"enforce.test\xff", b"mx.enforce.test", &config]).0, ERROR);
    }

    #[test]
    fn empty_certificate_means_no_tls() {
        assert!(certificate(b"").expect("ok").is_none());
        assert!(certificate(b" \n").expect("ok").is_none());
    }

    #[test]
    fn placeholder_is_a_usage_error() {
        assert_eq!(certificate(b"<cert>").expect_err("usage").code, ERROR);
    }

    #[test]
    fn base64_blobs_become_pem() {
        let pem = certificate(b"QUJD, REVG").expect("ok").expect("some");
        let text = String::from_utf8(pem).expect("ascii");
        assert_eq!(text.matches("-----BEGIN CERTIFICATE-----\n").count(), 2);
        assert!(text.contains("\nQUJD\n"));
        assert!(text.contains("\nREVG\n"));
    }

    #[test]
    fn pem_passes_through() {
        let pem = b"-----BEGIN CERTIFICATE-----\nQUJD\n-----END CERTIFICATE-----\n";
        assert_eq!(certificate(pem).expect("ok").expect("some"), pem.trim_ascii());
    }

    #[test]
    fn lasting_messages_are_interned_and_capped() {
        let table = Mutex::new(Vec::new());
        let a = kept_in(&table, "mtasts test\nmessage".into(), PANIC);
        let b = kept_in(&table, "mtasts test message".into(), PANIC);
        assert_eq!(a.as_ptr(), b.as_ptr());
        assert_eq!(a, c"mtasts test message");
        assert_eq!(kept_in(&table, "nul\0inside".into(), PANIC), PANIC);
        for i in 0..MAX_KEPT_MESSAGES {
            kept_in(&table, format!("filler {i}"), PANIC);
        }
        assert_eq!(kept_in(&table, "one too many".into(), PANIC), PANIC);
        assert_eq!(table.lock().len(), MAX_KEPT_MESSAGES);
    }
}
