//! The engine API: `mtasts_check` and `mtasts_record` over the process's default engine, and the
//! handle API (`mtasts_engine_new`, `_check`, `_check_mx`, `_record`, `_flush`, `_store_state`,
//! `_free`).

use std::ffi::c_char;
use std::path::Path;
use std::sync::Arc;

use super::boundary::{
    Out, boundary, bytes_arg, copy_out, engine_arg, fail, fill, free_handle, input_status, ip_arg, mx_arg,
    new_handle, opt_str_arg, out_arg, str_arg,
};
use super::registry::{FrontError, default_engine, default_front};
use super::types::{
    mtasts_dane, mtasts_reason, mtasts_result, mtasts_status, mtasts_store_state, mtasts_verdict,
};
use crate::config::Config;
use crate::engine::{Engine, Outcome, SessionDetails, Tls};
use crate::verdict::{Dane, Reason};

/// The default engine, or `MTASTS_STATUS_CONFIG` with the reason as the last error.
fn default_engine_arg() -> Result<Arc<Engine>, mtasts_status> {
    default_engine().or_else(|message| fail(mtasts_status::MTASTS_STATUS_CONFIG, message))
}

/// Checks a delivery to `mx` for the Policy Domain `domain` with the process-wide default engine.
///
/// - `domain`: the Policy Domain (normally the recipient domain; the smart host's domain when
///   relaying through one), UTF-8; U-labels are converted to A-labels. `mx`: the MX host name
///   being tried, as in the MX record: ASCII letters, digits and hyphens, an IDN in A-labels, any
///   case, an optional trailing dot. Any other bytes (U-labels, full-width letters or dots,
///   `U+3002`, bytes that are not UTF-8) are not a host name and match no pattern: a policy in
///   force fails them (`mx-mismatch`); they are not an error.
/// - `cert`, `cert_len`: the certificate chain the MX presented, leaf first, as PEM text or as
///   concatenated DER certificates. NULL/0 means no TLS was negotiated (no STARTTLS, or it failed).
///   To judge the MX name before connecting, use `mtasts_engine_check_mx`.
///
/// Returns the verdict; `MTASTS_VERDICT_ERROR` when an argument is bad (NULL, a `domain` that is
/// not UTF-8 or not a domain name, `cert_len` above `PTRDIFF_MAX`) or the configuration cannot be
/// used (`mtasts_last_error` says why).
///
/// The default engine is built on first use from the configuration file (`$MTASTS_CONFIG`, else
/// `/etc/mtasts/mtasts.toml`, else defaults) and kept for the life of the process; its pending
/// TLSRPT counts are written at `exit()`. Thread-safe. Fork-safe: a forked child builds its own
/// engine on its first call (cached policies of the parent are not carried over), also when
/// another thread was inside a call at the fork. The child never locks, drops or flushes the
/// parent's engine: the parent writes the counts of the sessions it judged, the child (at its
/// `exit()`) those it judged, and they add up to the sessions judged. DNS and HTTPS happen inside the call when the policy is not cached; no
/// thread or socket outlives the call.
///
/// With `[serve] check_socket` in the configuration, the call is first handed to the `mtasts
/// serve` listening there (docs/architecture.md, "Checks handed to mtasts serve"), which judges
/// it, counts the session and logs the decision; the process then opens no store. It waits at
/// most the DNS and fetch timeouts plus 5 seconds for the answer, and judges the call itself when
/// none comes (or the server is not running, or runs under another configuration).
///
/// # Safety
/// `domain` and `mx` are NULL or NUL-terminated strings; `cert` is NULL or points to `cert_len`
/// readable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mtasts_check(
    domain: *const c_char,
    mx: *const c_char,
    cert: *const u8,
    cert_len: usize,
) -> mtasts_verdict {
    boundary(|| {
        let front = default_front().or_else(|message| fail(mtasts_status::MTASTS_STATUS_CONFIG, message))?;
        // SAFETY: forwarded caller contract.
        let (domain, mx, tls) = unsafe { check_args(domain, mx, Some((cert, cert_len))) }?;
        // Handed to `mtasts serve` when `[serve] check_socket` is set (src/remote.rs).
        let outcome = front.check_with(domain, &mx, tls, Dane::NotApplicable).or_else(|e| match e {
            FrontError::Config(message) => fail(mtasts_status::MTASTS_STATUS_CONFIG, message),
            FrontError::Input(e) => Err(input_status(&e)),
        })?;
        Ok(mtasts_result::from_outcome(&outcome).verdict)
    })
}

/// The arguments of the check calls. `cert` is `None` for a name-only check.
///
/// # Safety
/// As for [`mtasts_engine_check`].
unsafe fn check_args<'a>(
    domain: *const c_char,
    mx: *const c_char,
    cert: Option<(*const u8, usize)>,
) -> Result<(&'a str, std::borrow::Cow<'a, str>, Tls<'a>), mtasts_status> {
    // One argument at a time, so that the status and the last error name the same one.
    // SAFETY: forwarded caller contract.
    let domain = unsafe { str_arg(domain, "domain") }?;
    // SAFETY: forwarded caller contract.
    let mx = unsafe { mx_arg(mx) }?;
    let tls = match cert {
        None => Tls::NotChecked,
        // SAFETY: forwarded caller contract.
        Some((p, len)) => unsafe { bytes_arg(p, len, "cert") }?.map_or(Tls::NotNegotiated, Tls::Chain),
    };
    Ok((domain, mx, tls))
}

/// Shared body of the handle API's check calls. `cert` is `None` for a name-only check.
///
/// # Safety
/// As for [`mtasts_engine_check`].
unsafe fn check(
    engine: &Engine,
    domain: *const c_char,
    mx: *const c_char,
    cert: Option<(*const u8, usize)>,
) -> Result<Outcome, mtasts_status> {
    // SAFETY: forwarded caller contract.
    let (domain, mx, tls) = unsafe { check_args(domain, mx, cert) }?;
    engine.check_with(domain, &mx, tls, Dane::NotApplicable).map_err(|e| input_status(&e))
}

/// An MTA-STS engine: configuration, trust anchors and the in-process policy cache.
///
/// Shared and immutable from the caller's side: one engine may be used by many threads at once.
/// After `fork()`, a child may keep using an engine only if no other thread was inside a call on
/// it at the time of the fork; the safe course is a new engine in the child. TLSRPT counts pending
/// at the fork are the parent's: in the child, `mtasts_engine_flush` and `mtasts_engine_free`
/// write only the sessions the child counted.
#[derive(Debug)]
pub struct mtasts_engine {
    pub(super) engine: Engine,
}

/// Creates an engine from the configuration file at `config_path`, or from the defaults when
/// `config_path` is NULL (the environment variable `MTASTS_CONFIG` is not consulted here).
/// On success `*engine_out` receives the engine, to be released with `mtasts_engine_free`.
///
/// Errors: `MTASTS_STATUS_CONFIG` when the file cannot be read or is invalid (`mtasts_last_error`
/// names the file and the key). Thread-safe.
///
/// # Safety
/// `config_path` is NULL or a NUL-terminated string; `engine_out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mtasts_engine_new(
    config_path: *const c_char,
    engine_out: *mut *mut mtasts_engine,
) -> mtasts_status {
    boundary(|| {
        // SAFETY: forwarded caller contract.
        let engine_out = unsafe { out_arg(engine_out, "engine_out") }?;
        // SAFETY: forwarded caller contract.
        let config = match unsafe { opt_str_arg(config_path, "config_path") }? {
            None => Ok(Config::default()),
            Some(path) => Config::from_file(Path::new(path)),
        };
        let config = config.inspect(|c| crate::logging::apply(&c.log));
        match config.and_then(|c| c.build_engine()) {
            Ok(engine) => {
                engine_out.write(new_handle(mtasts_engine { engine }));
                Ok(())
            }
            Err(e) => fail(mtasts_status::MTASTS_STATUS_CONFIG, e.to_string()),
        }
    })
}

/// Releases an engine. NULL does nothing. No call on the engine may be running or follow.
///
/// # Safety
/// `engine` is NULL or was returned by `mtasts_engine_new` and not freed yet.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mtasts_engine_free(engine: *mut mtasts_engine) {
    boundary(|| {
        // SAFETY: forwarded caller contract.
        unsafe { free_handle(engine) };
        Ok(())
    })
}

/// Checks a delivery to `mx` for `domain` after the TLS handshake: `cert`/`cert_len` is the chain
/// the MX presented (leaf first, PEM or concatenated DER), NULL/0 when no TLS was negotiated.
/// On success `*result` is filled in.
///
/// Errors: `MTASTS_STATUS_NULL_ARGUMENT`, `MTASTS_STATUS_INVALID_UTF8` (`domain` only),
/// `MTASTS_STATUS_INVALID_DOMAIN` (not a domain name; an address literal is not an error: it has
/// no policy), `MTASTS_STATUS_INVALID_ARGUMENT` (`cert_len` above `PTRDIFF_MAX`, which no buffer
/// can hold). An `mx` that is not an ASCII host name (letters, digits, hyphens, A-labels; any case,
/// an optional trailing dot) is not an error, whatever its bytes (U-labels, full-width letters or
/// dots, `U+3002`, invalid UTF-8): nothing is mapped onto a listed name, it matches no pattern, so
/// a policy in force fails it (`MTASTS_REASON_MX_MISMATCH`). Thread-safe. May do DNS and HTTPS
/// inside the call.
///
/// # Safety
/// `engine` is a live engine; strings are NULL or NUL-terminated; `cert` is NULL or points to
/// `cert_len` readable bytes; `result` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mtasts_engine_check(
    engine: *const mtasts_engine,
    domain: *const c_char,
    mx: *const c_char,
    cert: *const u8,
    cert_len: usize,
    result: *mut mtasts_result,
) -> mtasts_status {
    boundary(|| {
        // SAFETY: forwarded caller contract (each argument in turn).
        let (engine, result) = unsafe { (engine_arg(engine)?, out_arg(result, "result")?) };
        // SAFETY: forwarded caller contract.
        let outcome = unsafe { check(engine, domain, mx, Some((cert, cert_len))) }?;
        result.write(mtasts_result::from_outcome(&outcome));
        Ok(())
    })
}

/// Judges only the MX name, before connecting: `MTASTS_VERDICT_FAIL_ENFORCE` means do not connect
/// to this MX (try the next one), `MTASTS_VERDICT_FAIL_TESTING` means connect and report.
/// The certificate must still be checked after the handshake with `mtasts_engine_check`.
///
/// Errors and thread-safety as for `mtasts_engine_check`.
///
/// # Safety
/// As for `mtasts_engine_check`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mtasts_engine_check_mx(
    engine: *const mtasts_engine,
    domain: *const c_char,
    mx: *const c_char,
    result: *mut mtasts_result,
) -> mtasts_status {
    boundary(|| {
        // SAFETY: forwarded caller contract (each argument in turn).
        let (engine, result) = unsafe { (engine_arg(engine)?, out_arg(result, "result")?) };
        // SAFETY: forwarded caller contract.
        let outcome = unsafe { check(engine, domain, mx, None) }?;
        result.write(mtasts_result::from_outcome(&outcome));
        Ok(())
    })
}

/// The size the caller gave `dane`, refused below this version's `sizeof(mtasts_dane)`.
///
/// # Safety
/// `dane` is NULL or points to a readable `size` field.
unsafe fn dane_size(dane: *mut mtasts_dane) -> Result<usize, mtasts_status> {
    if dane.is_null() {
        return fail(mtasts_status::MTASTS_STATUS_NULL_ARGUMENT, "dane is NULL");
    }
    // SAFETY: non-NULL; the caller set `size` (the first field) by contract.
    let size = unsafe { std::ptr::addr_of!((*dane).size).read() };
    if size < std::mem::size_of::<mtasts_dane>() {
        return fail(
            mtasts_status::MTASTS_STATUS_INVALID_ARGUMENT,
            format!(
                "dane->size is {size}: set it to sizeof(mtasts_dane), {}",
                std::mem::size_of::<mtasts_dane>()
            ),
        );
    }
    Ok(size)
}

/// As `mtasts_engine_check`, and also says what DANE decided (RFC 7672): `*dane` tells whether
/// DANE applies to the MX (then it decides, whatever the MTA-STS mode: every DANE failure is
/// `MTASTS_VERDICT_FAIL_ENFORCE` with `MTASTS_REASON_TLSA_INVALID`, `_DNSSEC_INVALID` or
/// `_DANE_REQUIRED`), how many TLSA records it has and how many are usable, and which protocol
/// decided. The engine does DANE when its configuration has `[dns] dnssec` other than `"off"`.
///
/// Set `dane->size = sizeof(mtasts_dane)` first. Writes `*result` and `*dane` only on success.
/// Errors as for `mtasts_engine_check`, plus `MTASTS_STATUS_INVALID_ARGUMENT` for a `dane->size`
/// below this version's. Thread-safe.
///
/// # Safety
/// As for `mtasts_engine_check`; `dane` is NULL or points to a writable `mtasts_dane` whose `size`
/// is set.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mtasts_engine_check_dane(
    engine: *const mtasts_engine,
    domain: *const c_char,
    mx: *const c_char,
    cert: *const u8,
    cert_len: usize,
    result: *mut mtasts_result,
    dane: *mut mtasts_dane,
) -> mtasts_status {
    // SAFETY: forwarded caller contract.
    boundary(|| unsafe { check_dane(engine, domain, mx, Some((cert, cert_len)), result, dane) })
}

/// As `mtasts_engine_check_mx` (before connecting), and also says whether DANE applies to the MX
/// and whether TLS is required (`dane->tls_required`: never fall back to plaintext for this MX).
/// A DANE MX is not refused by MTA-STS before connecting: DANE decides once the chain is known.
///
/// # Safety
/// As for `mtasts_engine_check_dane`, without the certificate.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mtasts_engine_check_mx_dane(
    engine: *const mtasts_engine,
    domain: *const c_char,
    mx: *const c_char,
    result: *mut mtasts_result,
    dane: *mut mtasts_dane,
) -> mtasts_status {
    // SAFETY: forwarded caller contract.
    boundary(|| unsafe { check_dane(engine, domain, mx, None, result, dane) })
}

/// Shared body of the DANE-aware check calls. `cert` is `None` for a name-only check.
///
/// # Safety
/// As for [`mtasts_engine_check_dane`].
unsafe fn check_dane(
    engine: *const mtasts_engine,
    domain: *const c_char,
    mx: *const c_char,
    cert: Option<(*const u8, usize)>,
    result: *mut mtasts_result,
    dane: *mut mtasts_dane,
) -> Result<(), mtasts_status> {
    // SAFETY: forwarded caller contract (each argument in turn).
    let (engine, result) = unsafe { (engine_arg(engine)?, out_arg(result, "result")?) };
    // SAFETY: forwarded caller contract.
    let size = unsafe { dane_size(dane) }?;
    // SAFETY: forwarded caller contract.
    let outcome = unsafe { check(engine, domain, mx, cert) }?;
    result.write(mtasts_result::from_outcome(&outcome));
    // SAFETY: non-NULL (checked by `dane_size`) and writable by contract.
    unsafe { dane.write(mtasts_dane::from_outcome(&outcome, size)) };
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// TLSRPT recording

/// Shared body of the record calls.
///
/// # Safety
/// As for [`mtasts_engine_record`].
unsafe fn record(
    engine: &Engine,
    domain: *const c_char,
    mx: *const c_char,
    result: u32,
    sending_ip: *const c_char,
    receiving_ip: *const c_char,
    failure_reason_code: *const c_char,
) -> Result<(), mtasts_status> {
    // SAFETY: forwarded caller contract (each argument in turn).
    let (domain, mx, sending_ip, receiving_ip, code) = unsafe {
        (
            str_arg(domain, "domain")?,
            mx_arg(mx)?,
            ip_arg(sending_ip, "sending_ip")?,
            ip_arg(receiving_ip, "receiving_ip")?,
            opt_str_arg(failure_reason_code, "failure_reason_code")?,
        )
    };
    let Some(reason) = mtasts_reason::from_u32(result) else {
        return fail(
            mtasts_status::MTASTS_STATUS_INVALID_ARGUMENT,
            format!("result {result} is not an mtasts_reason"),
        );
    };
    let details = SessionDetails {
        sending_ip,
        receiving_ip,
        failure_reason_code: code.filter(|c| !c.is_empty()).map(str::to_owned),
    };
    let result = (reason != Reason::None).then_some(reason);
    engine.record_session(domain, &mx, result, &details).map_err(|e| input_status(&e))
}

/// Records, for TLSRPT (RFC 8460), the outcome of an SMTP session the MTA judged itself:
/// `result` is `MTASTS_REASON_NONE` for a session that negotiated TLS and satisfied the policy,
/// or the failure (`MTASTS_REASON_STARTTLS_NOT_SUPPORTED` when the handshake failed,
/// `MTASTS_REASON_CERTIFICATE_NOT_TRUSTED`, ...). `sending_ip`, `receiving_ip` (textual IPv4 or
/// IPv6) and `failure_reason_code` (free text, e.g. the TLS library's error) may be NULL.
///
/// `mtasts_engine_check` (and `mtasts_check`) already count the session they judge; use this
/// only for sessions that did not go through them. Counted under an `enforce` or `testing`
/// policy of `domain` (nothing under `mode: none` or without a policy), except the DANE results
/// (`MTASTS_REASON_TLSA_INVALID`, `_DNSSEC_INVALID`, `_DANE_REQUIRED`); and, when the engine does
/// DANE and `mx` has DNSSEC-secure TLSA records, also under the `tlsa` policy of `mx` (RFC 8460;
/// the DANE results always go there, `_DANE_REQUIRED` as `starttls-not-supported`). Counting costs a map increment; the
/// counts reach the store every few hundred sessions or seconds, at `mtasts_engine_flush`, when
/// the engine is freed, and (for the default engine) at `exit()`.
///
/// Sessions that deliver TLSRPT reports (messages with a `TLS-Report-Domain` header, such as
/// those `mtasts report send` writes) must not be counted (RFC 8460 §3): neither record them nor
/// judge them with `mtasts_engine_check`; deliver them without MTA-STS enforcement.
///
/// Errors: `MTASTS_STATUS_NULL_ARGUMENT`, `MTASTS_STATUS_INVALID_UTF8` (any string but `mx`),
/// `MTASTS_STATUS_INVALID_DOMAIN`, `MTASTS_STATUS_INVALID_ARGUMENT` (unknown `result`, malformed
/// IP address). An `mx` that is not an ASCII host name is not an error: the session is counted
/// without a receiving MX name. Thread-safe.
///
/// # Safety
/// `engine` is a live engine; `domain` and `mx` are NUL-terminated strings; the other strings are
/// NULL or NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mtasts_engine_record(
    engine: *const mtasts_engine,
    domain: *const c_char,
    mx: *const c_char,
    result: u32,
    sending_ip: *const c_char,
    receiving_ip: *const c_char,
    failure_reason_code: *const c_char,
) -> mtasts_status {
    boundary(|| {
        // SAFETY: forwarded caller contract.
        let engine = unsafe { engine_arg(engine) }?;
        // SAFETY: forwarded caller contract.
        unsafe { record(engine, domain, mx, result, sending_ip, receiving_ip, failure_reason_code) }
    })
}

/// As `mtasts_engine_record`, with the process-wide default engine of `mtasts_check`.
///
/// # Safety
/// As for `mtasts_engine_record`, without the engine.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mtasts_record(
    domain: *const c_char,
    mx: *const c_char,
    result: u32,
    sending_ip: *const c_char,
    receiving_ip: *const c_char,
    failure_reason_code: *const c_char,
) -> mtasts_status {
    boundary(|| {
        let engine = default_engine_arg()?;
        // SAFETY: forwarded caller contract.
        unsafe { record(&engine, domain, mx, result, sending_ip, receiving_ip, failure_reason_code) }
    })
}

/// Writes the engine's pending TLSRPT counts to its store now (they are also written every few
/// hundred sessions or seconds, and when the engine is freed). Thread-safe.
///
/// # Safety
/// `engine` is NULL or a live engine.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mtasts_engine_flush(engine: *const mtasts_engine) -> mtasts_status {
    boundary(|| {
        // SAFETY: forwarded caller contract.
        unsafe { engine_arg(engine) }?.flush_reports();
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// Store state

/// Copies the engine's store state out (see `mtasts_engine_store_state`).
///
/// # Safety
/// As for `mtasts_engine_store_state`, without the engine.
unsafe fn store_state(
    engine: &Engine,
    state_out: *mut mtasts_store_state,
    buf: *mut c_char,
    len: usize,
    out_n: *mut usize,
) -> Result<(), mtasts_status> {
    // SAFETY: forwarded caller contract.
    let state_out: Out<'_, _> = unsafe { out_arg(state_out, "state_out") }?;
    let state = engine.store_state();
    if !buf.is_null() {
        // SAFETY: `buf` has `len` writable bytes and `out_n` is NULL or writable, by contract.
        unsafe { copy_out(state.detail().unwrap_or(""), buf, len, out_n) }?;
    }
    state_out.write(mtasts_store_state::from(&state));
    Ok(())
}

/// Where the engine's persistent store stands: `MTASTS_STORE_OK`, `MTASTS_STORE_NONE` (none
/// configured), `MTASTS_STORE_READ_ONLY` (stored policies enforced, new ones not saved) or
/// `MTASTS_STORE_UNAVAILABLE` (protection degraded: a stored policy is not seen). A caller can
/// thus see degraded protection without reading stderr. When `buf` is not NULL, the message that
/// goes with the last two (empty for the others) is copied into it, as for `mtasts_last_error`.
/// The state of an unavailable store returns to `MTASTS_STORE_OK` once it answers again.
///
/// Writes `*state_out` only on success. Thread-safe.
///
/// # Safety
/// `engine` is NULL or a live engine; `state_out` is NULL or writable; `buf` is NULL or points to
/// `len` writable bytes; `out_n` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mtasts_engine_store_state(
    engine: *const mtasts_engine,
    state_out: *mut mtasts_store_state,
    buf: *mut c_char,
    len: usize,
    out_n: *mut usize,
) -> mtasts_status {
    boundary(|| {
        // SAFETY: forwarded caller contract.
        let engine = unsafe { engine_arg(engine) }?;
        // SAFETY: forwarded caller contract.
        unsafe { store_state(engine, state_out, buf, len, out_n) }
    })
}

/// As `mtasts_engine_store_state`, for the process-wide default engine of `mtasts_check`
/// (built on first use, like `mtasts_check` does).
///
/// # Safety
/// As for `mtasts_engine_store_state`, without the engine.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mtasts_default_store_state(
    state_out: *mut mtasts_store_state,
    buf: *mut c_char,
    len: usize,
    out_n: *mut usize,
) -> mtasts_status {
    boundary(|| {
        let engine = default_engine_arg()?;
        // SAFETY: forwarded caller contract.
        unsafe { store_state(&engine, state_out, buf, len, out_n) }
    })
}

impl mtasts_result {
    fn from_outcome(o: &Outcome) -> Self {
        let mut r = Self::empty();
        r.verdict = mtasts_verdict::from(o.verdict);
        r.reason = mtasts_reason::from(o.reason);
        r.mode = super::types::mtasts_mode::from(o.mode());
        if let Some(p) = &o.policy {
            fill(&mut r.policy_id, p.id.as_str());
        }
        if let Some(d) = &o.detail {
            fill(&mut r.detail, d);
        }
        r
    }
}
