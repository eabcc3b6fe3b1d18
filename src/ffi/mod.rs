//! The C ABI (`include/mtasts.h`, generated from this module by cbindgen).
//!
//! Conventions, after rustls-ffi:
//!
//! * Every exported function is a boundary: a panic becomes [`mtasts_status::MTASTS_STATUS_PANIC`]
//!   (or [`mtasts_verdict::MTASTS_VERDICT_ERROR`]), never an unwind into the MTA; every pointer is
//!   checked for NULL; every string is checked for UTF-8 but the MX host name, whose bytes are
//!   judged (anything but an ASCII host name matches no pattern); out-parameters are written only
//!   on success.
//! * Numeric codes are stable: a value is never renumbered, retired values stay reserved.
//! * Strings come back through caller buffers (`buf`, `len`, `out_n`) or as static strings.
//! * Opaque handles are created by `_new` and released by `_free`; `_free(NULL)` does nothing.
//! * Thread-safety and `fork()` behaviour are stated per function.
//!
//! All `unsafe` code of the crate is in this module.

#![allow(unsafe_code, non_camel_case_types)]

pub mod exim;
mod types;

use std::ffi::{CStr, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use parking_lot::Mutex;

pub use types::*;

use crate::cache::CachedPolicy;
use crate::config::Config;
use crate::engine::{Engine, InputError, Outcome, Tls};
use crate::verdict::Dane;

/// Major version of the library, as in `Cargo.toml`.
pub const MTASTS_VERSION_MAJOR: u32 = 0;
/// Minor version of the library, as in `Cargo.toml`.
pub const MTASTS_VERSION_MINOR: u32 = 1;
/// Patch version of the library, as in `Cargo.toml`.
pub const MTASTS_VERSION_PATCH: u32 = 0;
/// `MAJOR * 10000 + MINOR * 100 + PATCH`, for `#if` comparisons.
pub const MTASTS_VERSION_NUMBER: u32 = 100;

static VERSION: &CStr = match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
    Ok(v) => v,
    Err(_) => panic!("version string"),
};

thread_local! {
    static LAST_ERROR: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Sets this thread's last error. `try_with`: a call made from another thread-local's destructor,
/// after this one is gone, loses its message instead of panicking outside [`guard`] (which would
/// abort the process).
fn set_last_error(message: impl Into<String>) {
    let message = message.into();
    let _ = LAST_ERROR.try_with(|e| {
        if let Ok(mut e) = e.try_borrow_mut() {
            *e = message;
        }
    });
}

/// Runs `f`, turning a panic into `on_panic`. Safe to use from thread-local destructors: it
/// touches its own thread-local only through `try_with`.
fn guard<T>(on_panic: T, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            set_last_error(format!("internal error (panic caught): {what}"));
            on_panic
        }
    }
}

/// Reads a NUL-terminated UTF-8 string argument.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that lives for `'a`.
unsafe fn str_arg<'a>(p: *const c_char, what: &str) -> Result<&'a str, mtasts_status> {
    if p.is_null() {
        set_last_error(format!("{what} is NULL"));
        return Err(mtasts_status::MTASTS_STATUS_NULL_ARGUMENT);
    }
    // SAFETY: non-NULL and NUL-terminated by the caller's contract.
    let c = unsafe { CStr::from_ptr(p) };
    c.to_str().map_err(|_| {
        set_last_error(format!("{what} is not valid UTF-8"));
        mtasts_status::MTASTS_STATUS_INVALID_UTF8
    })
}

/// Reads a NUL-terminated MX host name argument. Its bytes are judged, never refused: bytes that
/// are not UTF-8 become U+FFFD, and a name with any non-ASCII character is not a host name, so it
/// matches no `mx` pattern (src/mx.rs). Refusing it with `MTASTS_STATUS_INVALID_UTF8` would let a
/// garbled MX record turn an enforce failure into an error, which callers treat as "deliver
/// without MTA-STS".
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that lives for `'a`.
unsafe fn mx_arg<'a>(p: *const c_char) -> Result<std::borrow::Cow<'a, str>, mtasts_status> {
    if p.is_null() {
        set_last_error("mx is NULL");
        return Err(mtasts_status::MTASTS_STATUS_NULL_ARGUMENT);
    }
    // SAFETY: non-NULL and NUL-terminated by the caller's contract.
    Ok(String::from_utf8_lossy(unsafe { CStr::from_ptr(p) }.to_bytes()))
}

/// The engine behind a handle argument.
///
/// # Safety
/// `engine` is NULL or a live engine.
unsafe fn engine_arg<'a>(engine: *const mtasts_engine) -> Result<&'a Engine, mtasts_status> {
    // SAFETY: NULL or live by the caller's contract.
    match unsafe { engine.as_ref() } {
        Some(e) => Ok(&e.engine),
        None => {
            set_last_error("engine is NULL");
            Err(mtasts_status::MTASTS_STATUS_NULL_ARGUMENT)
        }
    }
}

/// Reads an optional byte buffer: NULL or length 0 is `None`. A length above `isize::MAX` is
/// refused (no object is that large, so it is a caller's bug, e.g. a negative `ssize_t` cast to
/// `size_t`; `slice::from_raw_parts` would be undefined behaviour).
///
/// # Safety
/// `p` is NULL or points to `len` readable bytes.
unsafe fn bytes_arg<'a>(p: *const u8, len: usize, what: &str) -> Result<Option<&'a [u8]>, mtasts_status> {
    if isize::try_from(len).is_err() {
        set_last_error(format!("{what} length {len} is larger than any buffer can be (above PTRDIFF_MAX)"));
        return Err(mtasts_status::MTASTS_STATUS_INVALID_ARGUMENT);
    }
    if p.is_null() || len == 0 {
        Ok(None)
    } else {
        // SAFETY: non-NULL, `len <= isize::MAX` readable bytes by the caller's contract.
        Ok(Some(unsafe { std::slice::from_raw_parts(p, len) }))
    }
}

/// Copies `s` with a terminating NUL into `buf` of `len` bytes; `out_n` gets the length without
/// the NUL. Fails (writing nothing) when the buffer is too small.
///
/// # Safety
/// `buf` points to `len` writable bytes; `out_n` is NULL or writable.
unsafe fn copy_out(s: &str, buf: *mut c_char, len: usize, out_n: *mut usize) -> mtasts_status {
    // SAFETY: forwarded caller contract.
    let status = unsafe { copy_out_quietly(s, buf, len, out_n) };
    match status {
        mtasts_status::MTASTS_STATUS_NULL_ARGUMENT => set_last_error("buf is NULL"),
        mtasts_status::MTASTS_STATUS_BUFFER_TOO_SMALL => {
            set_last_error(format!("buffer of {len} bytes is too small for {} bytes and a NUL", s.len()));
        }
        _ => {}
    }
    status
}

/// [`copy_out`] without touching the thread's last error (for `mtasts_last_error` itself, whose
/// message must survive the retry with a larger buffer).
///
/// # Safety
/// As for [`copy_out`].
unsafe fn copy_out_quietly(s: &str, buf: *mut c_char, len: usize, out_n: *mut usize) -> mtasts_status {
    if buf.is_null() {
        return mtasts_status::MTASTS_STATUS_NULL_ARGUMENT;
    }
    if s.len() >= len {
        if !out_n.is_null() {
            // SAFETY: writable by contract. The needed size helps the caller retry.
            unsafe { *out_n = s.len() };
        }
        return mtasts_status::MTASTS_STATUS_BUFFER_TOO_SMALL;
    }
    // SAFETY: `buf` has room for `s.len() + 1` bytes, checked above.
    unsafe {
        std::ptr::copy_nonoverlapping(s.as_ptr(), buf.cast::<u8>(), s.len());
        *buf.add(s.len()) = 0;
        if !out_n.is_null() {
            *out_n = s.len();
        }
    }
    mtasts_status::MTASTS_STATUS_OK
}

fn input_status(e: &InputError) -> mtasts_status {
    set_last_error(e.to_string());
    match e {
        InputError::Domain(_) => mtasts_status::MTASTS_STATUS_INVALID_DOMAIN,
    }
}

// ---------------------------------------------------------------------------------------------
// Version and names

/// The library version, e.g. `"0.1.0"`: a static string.
///
/// Thread-safe; fork-safe.
#[unsafe(no_mangle)]
pub extern "C" fn mtasts_version() -> *const c_char {
    VERSION.as_ptr()
}

/// The name of a status code, e.g. `"null-argument"`: a static string (`"unknown"` for values
/// this version does not know).
///
/// Thread-safe; fork-safe.
#[unsafe(no_mangle)]
pub extern "C" fn mtasts_status_str(status: u32) -> *const c_char {
    types::status_name(status).as_ptr()
}

/// The name of a reason: the RFC 8460 result type (`"certificate-expired"`, ...), `"mx-mismatch"`,
/// or `"none"`: a static string (`"unknown"` for values this version does not know).
///
/// Thread-safe; fork-safe.
#[unsafe(no_mangle)]
pub extern "C" fn mtasts_reason_str(reason: u32) -> *const c_char {
    types::reason_name(reason).as_ptr()
}

/// The name of a verdict (`"pass"`, `"fail-enforce"`, ...): a static string (`"unknown"` for
/// values this version does not know).
///
/// Thread-safe; fork-safe.
#[unsafe(no_mangle)]
pub extern "C" fn mtasts_verdict_str(verdict: u32) -> *const c_char {
    types::verdict_name(verdict).as_ptr()
}

/// Copies the message of the last failed call made by this thread into `buf` (NUL-terminated);
/// `out_n` (may be NULL) gets its length. The message is empty when no call has failed. This call
/// never changes the message: after `MTASTS_STATUS_BUFFER_TOO_SMALL`, retry with `*out_n + 1`
/// bytes.
///
/// Thread-safe: each thread has its own last error.
///
/// # Safety
/// `buf` points to `len` writable bytes; `out_n` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mtasts_last_error(buf: *mut c_char, len: usize, out_n: *mut usize) -> mtasts_status {
    guard(mtasts_status::MTASTS_STATUS_PANIC, || {
        let message = LAST_ERROR.try_with(|e| e.borrow().clone()).unwrap_or_default();
        // SAFETY: forwarded caller contract. Quietly: a too-small buffer must not replace the
        // message the caller is about to retry for.
        unsafe { copy_out_quietly(&message, buf, len, out_n) }
    })
}

// ---------------------------------------------------------------------------------------------
// The headline call and its default engine

/// A value of which each process has its own, reached without touching anything a parent process
/// left behind at `fork()`.
///
/// After `fork()` a child must neither lock a mutex inherited from the parent (another thread of
/// the parent may have held it at the fork: it stays locked forever in the child) nor drop or
/// flush the parent's engines (their pending TLSRPT counts are the parent's, which writes them
/// itself). So the value lives behind a pointer tagged with the pid that made it: a process that
/// finds another pid's value installs a fresh one with a compare-and-swap and leaves the inherited
/// one as it is, never locked, never dropped (its memory goes with the child's exit). The fresh
/// value points to the inherited one, which so stays reachable (leak checkers such as valgrind
/// count it as reachable memory, not as a leak).
pub(crate) struct PerProcess<T> {
    current: AtomicPtr<Owned<T>>,
    _value: std::marker::PhantomData<Mutex<T>>,
}

struct Owned<T> {
    pid: u32,
    value: Mutex<T>,
    /// The value this one replaced: the parent process's (NULL in the first process).
    _inherited: *const Owned<T>,
}

impl<T: Default> PerProcess<T> {
    pub(crate) const fn new() -> Self {
        Self { current: AtomicPtr::new(std::ptr::null_mut()), _value: std::marker::PhantomData }
    }

    /// This process's value, made (empty) on first use in each process.
    pub(crate) fn get(&self) -> &Mutex<T> {
        let pid = std::process::id();
        let seen = self.current.load(Ordering::Acquire);
        // SAFETY: a non-NULL pointer comes from `Box::into_raw` below and is never freed.
        if let Some(owned) = unsafe { seen.as_ref() } {
            if owned.pid == pid {
                return &owned.value;
            }
        }
        let fresh = Box::into_raw(Box::new(Owned { pid, value: Mutex::new(T::default()), _inherited: seen }));
        match self.current.compare_exchange(seen, fresh, Ordering::AcqRel, Ordering::Acquire) {
            // SAFETY: just made, and now never freed. `seen` (NULL or a parent's) is left alone.
            Ok(_) => unsafe { &(*fresh).value },
            Err(installed) => {
                // Another thread of this process installed one first (only this process writes
                // the pointer after the fork, always with its own pid).
                // SAFETY: `fresh` was never shared; `installed` is non-NULL and never freed.
                unsafe {
                    drop(Box::from_raw(fresh));
                    &(*installed).value
                }
            }
        }
    }

    /// This process's value if it made one; never makes one (for exit handlers).
    pub(crate) fn get_if_made(&self) -> Option<&Mutex<T>> {
        // SAFETY: as in `get`.
        let owned = unsafe { self.current.load(Ordering::Acquire).as_ref() }?;
        (owned.pid == std::process::id()).then_some(&owned.value)
    }
}

/// The process-wide default engine.
static DEFAULT_ENGINE: PerProcess<Option<Arc<Engine>>> = PerProcess::new();

/// The default engine of this process, built on first use from the configuration file
/// (`$MTASTS_CONFIG`, else `/etc/mtasts/mtasts.toml` if present, else defaults), and built anew
/// in a forked child.
fn default_engine() -> Result<Arc<Engine>, String> {
    thread_local! {
        /// This thread's reference to the default engine, with the fork generation it was taken
        /// in: the hot path then makes no system call (getpid) and takes no shared lock.
        static MINE: std::cell::RefCell<Option<(u64, Arc<Engine>)>> = const { std::cell::RefCell::new(None) };
    }
    watch_forks();
    let generation = FORK_GENERATION.load(Ordering::Acquire);
    let mine =
        MINE.with(|m| m.borrow().as_ref().filter(|(g, _)| *g == generation).map(|(_, e)| Arc::clone(e)));
    if let Some(engine) = mine {
        return Ok(engine);
    }
    let engine = shared_default_engine()?;
    let inherited = MINE.with(|m| m.replace(Some((generation, Arc::clone(&engine)))));
    // A reference taken before a fork is to the parent's engine: forgotten, never dropped (the
    // last reference dropped would flush the parent's pending counts from the child).
    std::mem::forget(inherited);
    Ok(engine)
}

/// Incremented in every forked child (a `pthread_atfork` handler), so that per-thread references
/// to the default engine are dropped after `fork()`.
static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);

fn watch_forks() {
    static REGISTERED: std::sync::Once = std::sync::Once::new();
    extern "C" fn in_child() {
        FORK_GENERATION.fetch_add(1, Ordering::AcqRel);
    }
    REGISTERED.call_once(|| {
        // SAFETY: registers a plain extern "C" function that only touches an atomic, which is
        // async-signal-safe as a fork handler must be.
        unsafe { libc::pthread_atfork(None, None, Some(in_child)) };
    });
}

fn shared_default_engine() -> Result<Arc<Engine>, String> {
    let slot = DEFAULT_ENGINE.get();
    if let Some(engine) = slot.lock().as_ref() {
        return Ok(Arc::clone(engine));
    }
    // Built without the lock held; a racing thread may build one too, and the first stored wins.
    let engine = Arc::new(Config::load(None).and_then(|c| c.build_engine()).map_err(|e| e.to_string())?);
    flush_at_exit();
    Ok(Arc::clone(slot.lock().get_or_insert(engine)))
}

/// Registers, once per process, an exit handler that writes the default engine's pending TLSRPT
/// counts to the store: MTAs such as Exim run one short process per delivery and leave with
/// `exit()`, never dropping the engine. A forked child that exits writes only its own engine's
/// counts (the handler is inherited; the parent's engine is not this process's).
fn flush_at_exit() {
    static REGISTERED: std::sync::Once = std::sync::Once::new();
    extern "C" fn flush() {
        let _ = catch_unwind(|| {
            // try_lock: never wait at exit (a thread may have held the lock when exit() began).
            let engine = DEFAULT_ENGINE.get_if_made().and_then(|slot| slot.try_lock()?.clone());
            if let Some(engine) = engine {
                engine.flush_reports();
            }
        });
    }
    REGISTERED.call_once(|| {
        // SAFETY: registering a plain extern "C" function with no arguments; it catches panics.
        unsafe { libc::atexit(flush) };
    });
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
    guard(mtasts_verdict::MTASTS_VERDICT_ERROR, || {
        let engine = match default_engine() {
            Ok(e) => e,
            Err(message) => {
                set_last_error(message);
                return mtasts_verdict::MTASTS_VERDICT_ERROR;
            }
        };
        let mut result = mtasts_result::empty();
        // SAFETY: forwarded caller contract; `result` is a valid local.
        let status = unsafe { check_into(&engine, domain, mx, Some((cert, cert_len)), &mut result) };
        if status == mtasts_status::MTASTS_STATUS_OK {
            result.verdict
        } else {
            mtasts_verdict::MTASTS_VERDICT_ERROR
        }
    })
}

/// Shared body of the check calls. `cert` is `None` for a name-only check.
///
/// # Safety
/// As for [`mtasts_engine_check`].
unsafe fn check_into(
    engine: &Engine,
    domain: *const c_char,
    mx: *const c_char,
    cert: Option<(*const u8, usize)>,
    out: *mut mtasts_result,
) -> mtasts_status {
    if out.is_null() {
        set_last_error("result is NULL");
        return mtasts_status::MTASTS_STATUS_NULL_ARGUMENT;
    }
    // One argument at a time, so that the status and the last error name the same one.
    // SAFETY: forwarded caller contract.
    let domain = match unsafe { str_arg(domain, "domain") } {
        Ok(d) => d,
        Err(e) => return e,
    };
    // SAFETY: forwarded caller contract.
    let mx = match unsafe { mx_arg(mx) } {
        Ok(m) => m,
        Err(e) => return e,
    };
    let tls = match cert {
        None => Tls::NotChecked,
        // SAFETY: forwarded caller contract.
        Some((p, len)) => match unsafe { bytes_arg(p, len, "cert") } {
            Ok(chain) => chain.map_or(Tls::NotNegotiated, Tls::Chain),
            Err(e) => return e,
        },
    };
    match engine.check_with(domain, &mx, tls, Dane::NotApplicable) {
        Ok(outcome) => {
            // SAFETY: `out` is non-NULL and writable by contract.
            unsafe { *out = mtasts_result::from_outcome(&outcome) };
            mtasts_status::MTASTS_STATUS_OK
        }
        Err(e) => input_status(&e),
    }
}

// ---------------------------------------------------------------------------------------------
// Engines

/// An MTA-STS engine: configuration, trust anchors and the in-process policy cache.
///
/// Shared and immutable from the caller's side: one engine may be used by many threads at once.
/// After `fork()`, a child may keep using an engine only if no other thread was inside a call on
/// it at the time of the fork; the safe course is a new engine in the child. TLSRPT counts pending
/// at the fork are the parent's: in the child, `mtasts_engine_flush` and `mtasts_engine_free`
/// write only the sessions the child counted.
#[derive(Debug)]
pub struct mtasts_engine {
    engine: Engine,
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
    guard(mtasts_status::MTASTS_STATUS_PANIC, || {
        if engine_out.is_null() {
            set_last_error("engine_out is NULL");
            return mtasts_status::MTASTS_STATUS_NULL_ARGUMENT;
        }
        let config = if config_path.is_null() {
            Ok(Config::default())
        } else {
            // SAFETY: forwarded caller contract.
            match unsafe { str_arg(config_path, "config_path") } {
                Ok(path) => Config::from_file(Path::new(path)),
                Err(e) => return e,
            }
        };
        match config.and_then(|c| c.build_engine()) {
            Ok(engine) => {
                let boxed = Box::new(mtasts_engine { engine });
                // SAFETY: `engine_out` is non-NULL and writable by contract.
                unsafe { *engine_out = Box::into_raw(boxed) };
                mtasts_status::MTASTS_STATUS_OK
            }
            Err(e) => {
                set_last_error(e.to_string());
                mtasts_status::MTASTS_STATUS_CONFIG
            }
        }
    })
}

/// Releases an engine. NULL does nothing. No call on the engine may be running or follow.
///
/// # Safety
/// `engine` is NULL or was returned by `mtasts_engine_new` and not freed yet.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mtasts_engine_free(engine: *mut mtasts_engine) {
    guard((), || {
        if !engine.is_null() {
            // SAFETY: created by Box::into_raw in mtasts_engine_new, freed once.
            drop(unsafe { Box::from_raw(engine) });
        }
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
    guard(mtasts_status::MTASTS_STATUS_PANIC, || {
        // SAFETY: NULL or a live engine by contract.
        let engine = match unsafe { engine_arg(engine) } {
            Ok(e) => e,
            Err(status) => return status,
        };
        // SAFETY: forwarded caller contract.
        unsafe { check_into(engine, domain, mx, Some((cert, cert_len)), result) }
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
    guard(mtasts_status::MTASTS_STATUS_PANIC, || {
        // SAFETY: NULL or a live engine by contract.
        let engine = match unsafe { engine_arg(engine) } {
            Ok(e) => e,
            Err(status) => return status,
        };
        // SAFETY: forwarded caller contract.
        unsafe { check_into(engine, domain, mx, None, result) }
    })
}

// ---------------------------------------------------------------------------------------------
// TLSRPT recording

/// Parses an optional IP address argument.
///
/// # Safety
/// `p` is NULL or NUL-terminated.
unsafe fn ip_arg(p: *const c_char, what: &str) -> Result<Option<std::net::IpAddr>, mtasts_status> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: forwarded caller contract.
    let text = unsafe { str_arg(p, what) }?;
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| {
        set_last_error(format!("{what} `{text}` is not an IP address"));
        mtasts_status::MTASTS_STATUS_INVALID_ARGUMENT
    })
}

/// Shared body of the record calls.
///
/// # Safety
/// As for [`mtasts_engine_record`].
unsafe fn record_into(
    engine: &Engine,
    domain: *const c_char,
    mx: *const c_char,
    result: u32,
    sending_ip: *const c_char,
    receiving_ip: *const c_char,
    failure_reason_code: *const c_char,
) -> mtasts_status {
    // SAFETY: forwarded caller contract (each argument in turn).
    let args = unsafe {
        (|| {
            Ok::<_, mtasts_status>((
                str_arg(domain, "domain")?,
                mx_arg(mx)?,
                ip_arg(sending_ip, "sending_ip")?,
                ip_arg(receiving_ip, "receiving_ip")?,
                if failure_reason_code.is_null() {
                    None
                } else {
                    Some(str_arg(failure_reason_code, "failure_reason_code")?)
                },
            ))
        })()
    };
    let (domain, mx, sending_ip, receiving_ip, code) = match args {
        Ok(a) => a,
        Err(e) => return e,
    };
    let Some(reason) = mtasts_reason::from_u32(result) else {
        set_last_error(format!("result {result} is not an mtasts_reason"));
        return mtasts_status::MTASTS_STATUS_INVALID_ARGUMENT;
    };
    let result = (reason != crate::verdict::Reason::None).then_some(reason);
    let details = crate::engine::SessionDetails {
        sending_ip,
        receiving_ip,
        failure_reason_code: code.filter(|c| !c.is_empty()).map(str::to_owned),
    };
    match engine.record_session(domain, &mx, result, &details) {
        Ok(()) => mtasts_status::MTASTS_STATUS_OK,
        Err(e) => input_status(&e),
    }
}

/// Records, for TLSRPT (RFC 8460), the outcome of an SMTP session the MTA judged itself:
/// `result` is `MTASTS_REASON_NONE` for a session that negotiated TLS and satisfied the policy,
/// or the failure (`MTASTS_REASON_STARTTLS_NOT_SUPPORTED` when the handshake failed,
/// `MTASTS_REASON_CERTIFICATE_NOT_TRUSTED`, ...). `sending_ip`, `receiving_ip` (textual IPv4 or
/// IPv6) and `failure_reason_code` (free text, e.g. the TLS library's error) may be NULL.
///
/// `mtasts_engine_check` (and `mtasts_check`) already count the session they judge; use this
/// only for sessions that did not go through them. Counted only under an `enforce` or `testing`
/// policy (nothing under `mode: none` or without a policy). Counting costs a map increment; the
/// counts reach the store every few hundred sessions or seconds, at `mtasts_engine_flush`, when
/// the engine is freed, and (for the default engine) at `exit()`.
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
    guard(mtasts_status::MTASTS_STATUS_PANIC, || {
        // SAFETY: NULL or a live engine by contract.
        let engine = match unsafe { engine_arg(engine) } {
            Ok(e) => e,
            Err(status) => return status,
        };
        // SAFETY: forwarded caller contract.
        unsafe { record_into(engine, domain, mx, result, sending_ip, receiving_ip, failure_reason_code) }
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
    guard(mtasts_status::MTASTS_STATUS_PANIC, || {
        let engine = match default_engine() {
            Ok(e) => e,
            Err(message) => {
                set_last_error(message);
                return mtasts_status::MTASTS_STATUS_CONFIG;
            }
        };
        // SAFETY: forwarded caller contract.
        unsafe { record_into(&engine, domain, mx, result, sending_ip, receiving_ip, failure_reason_code) }
    })
}

/// Writes the engine's pending TLSRPT counts to its store now (they are also written every few
/// hundred sessions or seconds, and when the engine is freed). Thread-safe.
///
/// # Safety
/// `engine` is NULL or a live engine.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mtasts_engine_flush(engine: *const mtasts_engine) -> mtasts_status {
    guard(mtasts_status::MTASTS_STATUS_PANIC, || {
        // SAFETY: NULL or a live engine by contract.
        let engine = match unsafe { engine_arg(engine) } {
            Ok(e) => e,
            Err(status) => return status,
        };
        engine.flush_reports();
        mtasts_status::MTASTS_STATUS_OK
    })
}

/// Copies the engine's store state out (see `mtasts_engine_store_state`).
///
/// # Safety
/// As for `mtasts_engine_store_state`, without the engine.
unsafe fn store_state_into(
    engine: &Engine,
    state_out: *mut mtasts_store_state,
    buf: *mut c_char,
    len: usize,
    out_n: *mut usize,
) -> mtasts_status {
    if state_out.is_null() {
        set_last_error("state_out is NULL");
        return mtasts_status::MTASTS_STATUS_NULL_ARGUMENT;
    }
    let state = engine.store_state();
    if !buf.is_null() {
        // SAFETY: `buf` has `len` writable bytes and `out_n` is NULL or writable, by contract.
        let status = unsafe { copy_out(state.detail().unwrap_or(""), buf, len, out_n) };
        if status != mtasts_status::MTASTS_STATUS_OK {
            return status;
        }
    }
    // SAFETY: non-NULL and writable by contract.
    unsafe { *state_out = mtasts_store_state::from(&state) };
    mtasts_status::MTASTS_STATUS_OK
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
    guard(mtasts_status::MTASTS_STATUS_PANIC, || {
        // SAFETY: NULL or a live engine by contract.
        let engine = match unsafe { engine_arg(engine) } {
            Ok(e) => e,
            Err(status) => return status,
        };
        // SAFETY: forwarded caller contract.
        unsafe { store_state_into(engine, state_out, buf, len, out_n) }
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
    guard(mtasts_status::MTASTS_STATUS_PANIC, || {
        let engine = match default_engine() {
            Ok(e) => e,
            Err(message) => {
                set_last_error(message);
                return mtasts_status::MTASTS_STATUS_CONFIG;
            }
        };
        // SAFETY: forwarded caller contract.
        unsafe { store_state_into(&engine, state_out, buf, len, out_n) }
    })
}

// ---------------------------------------------------------------------------------------------
// Policies

/// A copy of the policy that applies to a domain: immutable, independent of the engine it came
/// from (it may outlive it), and safe to read from several threads.
#[derive(Debug)]
pub struct mtasts_policy {
    policy: Arc<CachedPolicy>,
}

/// Gets the policy that applies to `domain` now (looking up DNS and fetching as the cache rules
/// require). On success `*policy_out` receives a policy to release with `mtasts_policy_free`.
///
/// Returns `MTASTS_STATUS_NO_POLICY` (and writes nothing) when no policy applies; a `mode: none`
/// policy is returned like any other. Other errors as for `mtasts_engine_check`. Thread-safe.
///
/// # Safety
/// `engine` is a live engine; `domain` is NULL or NUL-terminated; `policy_out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mtasts_engine_policy(
    engine: *const mtasts_engine,
    domain: *const c_char,
    policy_out: *mut *mut mtasts_policy,
) -> mtasts_status {
    guard(mtasts_status::MTASTS_STATUS_PANIC, || {
        // SAFETY: NULL or a live engine by contract.
        let engine = match unsafe { engine_arg(engine) } {
            Ok(e) => e,
            Err(status) => return status,
        };
        if policy_out.is_null() {
            set_last_error("policy_out is NULL");
            return mtasts_status::MTASTS_STATUS_NULL_ARGUMENT;
        }
        // SAFETY: forwarded caller contract.
        let domain = match unsafe { str_arg(domain, "domain") } {
            Ok(d) => d,
            Err(e) => return e,
        };
        match engine.policy(domain) {
            Ok(Some(resolution)) => match resolution.policy {
                Some(policy) => {
                    let boxed = Box::new(mtasts_policy { policy });
                    // SAFETY: non-NULL and writable by contract.
                    unsafe { *policy_out = Box::into_raw(boxed) };
                    mtasts_status::MTASTS_STATUS_OK
                }
                None => {
                    let why = resolution.error.map_or_else(|| "no policy is published".into(), |e| e.detail);
                    set_last_error(why);
                    mtasts_status::MTASTS_STATUS_NO_POLICY
                }
            },
            Ok(None) => {
                set_last_error("an address literal has no policy");
                mtasts_status::MTASTS_STATUS_NO_POLICY
            }
            Err(e) => input_status(&e),
        }
    })
}

/// Releases a policy. NULL does nothing.
///
/// # Safety
/// `policy` is NULL or was returned by `mtasts_engine_policy` and not freed yet.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mtasts_policy_free(policy: *mut mtasts_policy) {
    guard((), || {
        if !policy.is_null() {
            // SAFETY: created by Box::into_raw in mtasts_engine_policy, freed once.
            drop(unsafe { Box::from_raw(policy) });
        }
    })
}

/// # Safety
/// `policy` is NULL or live.
unsafe fn policy_ref<'a>(policy: *const mtasts_policy) -> Option<&'a CachedPolicy> {
    // SAFETY: NULL or live by contract.
    unsafe { policy.as_ref() }.map(|p| &*p.policy)
}

/// The policy's mode; `MTASTS_MODE_NO_POLICY` for NULL.
///
/// # Safety
/// `policy` is NULL or live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mtasts_policy_mode(policy: *const mtasts_policy) -> mtasts_mode {
    // SAFETY: forwarded caller contract.
    guard(mtasts_mode::MTASTS_MODE_NO_POLICY, || {
        unsafe { policy_ref(policy) }
            .map_or(mtasts_mode::MTASTS_MODE_NO_POLICY, |p| mtasts_mode::from(Some(p.mode())))
    })
}

/// The policy's `max_age` in seconds (already clamped to one year); 0 for NULL.
///
/// # Safety
/// `policy` is NULL or live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mtasts_policy_max_age(policy: *const mtasts_policy) -> u32 {
    // SAFETY: forwarded caller contract.
    guard(0, || unsafe { policy_ref(policy) }.map_or(0, |p| p.policy.max_age()))
}

/// When the policy was fetched, in seconds since the Unix epoch; 0 for NULL.
///
/// # Safety
/// `policy` is NULL or live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mtasts_policy_fetched_at(policy: *const mtasts_policy) -> u64 {
    // SAFETY: forwarded caller contract.
    guard(0, || unsafe { policy_ref(policy) }.map_or(0, |p| p.fetched_at))
}

/// When the policy expires (`fetched_at + max_age`), in seconds since the Unix epoch; 0 for NULL.
///
/// # Safety
/// `policy` is NULL or live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mtasts_policy_expires_at(policy: *const mtasts_policy) -> u64 {
    // SAFETY: forwarded caller contract.
    guard(0, || unsafe { policy_ref(policy) }.map_or(0, |p| p.expires_at))
}

/// Copies the policy id (the TXT record's `id`, at most 32 characters) into `buf`, NUL-terminated;
/// `out_n` (may be NULL) gets its length. A buffer of 33 bytes always suffices.
///
/// # Safety
/// `policy` is NULL or live; `buf` points to `len` writable bytes; `out_n` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mtasts_policy_id(
    policy: *const mtasts_policy,
    buf: *mut c_char,
    len: usize,
    out_n: *mut usize,
) -> mtasts_status {
    guard(mtasts_status::MTASTS_STATUS_PANIC, || {
        // SAFETY: forwarded caller contract.
        let Some(p) = (unsafe { policy_ref(policy) }) else {
            set_last_error("policy is NULL");
            return mtasts_status::MTASTS_STATUS_NULL_ARGUMENT;
        };
        // SAFETY: forwarded caller contract.
        unsafe { copy_out(p.id.as_str(), buf, len, out_n) }
    })
}

/// The number of `mx` patterns of the policy; 0 for NULL.
///
/// # Safety
/// `policy` is NULL or live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mtasts_policy_mx_count(policy: *const mtasts_policy) -> usize {
    // SAFETY: forwarded caller contract.
    guard(0, || unsafe { policy_ref(policy) }.map_or(0, |p| p.policy.mx().len()))
}

/// Copies `mx` pattern `index` (e.g. `*.example.net`, at most 255 characters) into `buf`,
/// NUL-terminated; `out_n` (may be NULL) gets its length. `MTASTS_STATUS_OUT_OF_RANGE` when
/// `index >= mtasts_policy_mx_count(policy)`.
///
/// # Safety
/// `policy` is NULL or live; `buf` points to `len` writable bytes; `out_n` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mtasts_policy_mx(
    policy: *const mtasts_policy,
    index: usize,
    buf: *mut c_char,
    len: usize,
    out_n: *mut usize,
) -> mtasts_status {
    guard(mtasts_status::MTASTS_STATUS_PANIC, || {
        // SAFETY: forwarded caller contract.
        let Some(p) = (unsafe { policy_ref(policy) }) else {
            set_last_error("policy is NULL");
            return mtasts_status::MTASTS_STATUS_NULL_ARGUMENT;
        };
        let Some(pattern) = p.policy.mx().get(index) else {
            set_last_error(format!("index {index} is out of range ({} patterns)", p.policy.mx().len()));
            return mtasts_status::MTASTS_STATUS_OUT_OF_RANGE;
        };
        // SAFETY: forwarded caller contract.
        unsafe { copy_out(&pattern.to_string(), buf, len, out_n) }
    })
}

impl mtasts_result {
    fn from_outcome(o: &Outcome) -> Self {
        let mut r = Self::empty();
        r.verdict = mtasts_verdict::from(o.verdict);
        r.reason = mtasts_reason::from(o.reason);
        r.mode = mtasts_mode::from(o.mode());
        if let Some(p) = &o.policy {
            fill(&mut r.policy_id, p.id.as_str());
        }
        if let Some(d) = &o.detail {
            fill(&mut r.detail, d);
        }
        r
    }
}

/// Copies as much of `s` as fits (cut at a character boundary) and a NUL into `buf`.
fn fill(buf: &mut [c_char], s: &str) {
    let mut n = s.len().min(buf.len().saturating_sub(1));
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    for (dst, src) in buf.iter_mut().zip(&s.as_bytes()[..n]) {
        *dst = *src as c_char;
    }
    if let Some(end) = buf.get_mut(n) {
        *end = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_arg_refuses_lengths_above_isize_max() {
        let byte = 0u8;
        for len in [isize::MAX as usize + 1, usize::MAX] {
            // SAFETY: the length is refused before the pointer is read.
            let got = unsafe { bytes_arg(&byte, len, "cert") };
            assert_eq!(got, Err(mtasts_status::MTASTS_STATUS_INVALID_ARGUMENT));
            let message = LAST_ERROR.with(|e| e.borrow().clone());
            assert!(message.contains("cert length") && message.contains("PTRDIFF_MAX"), "{message}");
        }
        // SAFETY: one readable byte.
        assert_eq!(unsafe { bytes_arg(&byte, 1, "cert") }, Ok(Some(&[0u8][..])));
        // SAFETY: NULL and 0 are never read.
        assert_eq!(unsafe { bytes_arg(std::ptr::null(), 0, "cert") }, Ok(None));
    }

    /// Forks, runs `child` in the child (exit status 0 when it returns true), and waits for it
    /// with a generous deadline that only detects a hang (a hung child is killed, and fails).
    fn in_child(child: impl FnOnce() -> bool) -> Option<i32> {
        // SAFETY: the child runs `child` and leaves with `_exit`, never returning into the test
        // harness.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let ok = catch_unwind(AssertUnwindSafe(child)).unwrap_or(false);
            // SAFETY: ends the child without running the parent's exit handlers.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            let mut status = 0;
            // SAFETY: waits for our own child.
            let done = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if done == pid {
                return libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
            }
            if std::time::Instant::now() > deadline {
                // SAFETY: our own child, hung: killed and reaped.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, &mut status, 0);
                }
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    #[test]
    fn a_child_never_locks_what_a_parent_thread_held_at_fork() {
        let registry: &'static PerProcess<Option<u32>> = Box::leak(Box::new(PerProcess::new()));
        *registry.get().lock() = Some(std::process::id());
        let (locked_tx, locked_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        // Another thread holds the locks at the moment of the fork, as a thread inside a check or
        // building an engine would.
        let holder = std::thread::spawn(move || {
            let _default = DEFAULT_ENGINE.get().lock();
            let _configured = exim::CONFIGURED.get().lock();
            let _mine = registry.get().lock();
            locked_tx.send(()).expect("send");
            release_rx.recv().expect("release");
        });
        locked_rx.recv().expect("locked");
        let parent_slot: *const Mutex<Option<u32>> = registry.get();
        let status = in_child(move || {
            // A fresh, empty value of the child's own; the parent's is neither locked nor dropped.
            let mine = registry.get();
            let fresh = !std::ptr::eq(mine, parent_slot) && mine.lock().is_none();
            *mine.lock() = Some(std::process::id());
            let default = DEFAULT_ENGINE.get().lock().is_none();
            let configured = exim::CONFIGURED.get().lock().is_empty();
            fresh && default && configured && std::ptr::eq(registry.get(), mine)
        });
        release_tx.send(()).expect("send");
        holder.join().expect("holder");
        assert_eq!(status, Some(0), "the child hung (None) or saw the parent's state");
        // The parent's value is untouched.
        assert_eq!(*registry.get().lock(), Some(std::process::id()));
        assert!(std::ptr::eq(registry.get(), parent_slot));
    }

    #[test]
    fn guard_works_in_a_thread_local_destructor() {
        /// Runs a panicking call through `guard` (and a failing C call) when the thread ends,
        /// after `LAST_ERROR` is destroyed: its destructor was registered after this one's, and
        /// thread-local destructors run in reverse order.
        struct AtThreadExit;
        impl Drop for AtThreadExit {
            fn drop(&mut self) {
                assert_eq!(guard(1, || panic!("in a thread-local destructor")), 1);
                // SAFETY: a NULL engine is what is tested.
                let status = unsafe { mtasts_engine_flush(std::ptr::null()) };
                assert_eq!(status, mtasts_status::MTASTS_STATUS_NULL_ARGUMENT);
                let mut buf = [0 as c_char; 8];
                // SAFETY: `buf` has 8 writable bytes.
                let status = unsafe { mtasts_last_error(buf.as_mut_ptr(), buf.len(), std::ptr::null_mut()) };
                assert_eq!(status, mtasts_status::MTASTS_STATUS_OK);
            }
        }
        thread_local! {
            static EXIT: AtThreadExit = const { AtThreadExit };
        }
        let thread = std::thread::spawn(|| {
            EXIT.with(|_| {});
            set_last_error("registers LAST_ERROR's destructor after EXIT's");
        });
        // Before `try_with`, the panic escaped `guard` inside a destructor and aborted the
        // process (this test binary with it).
        assert!(thread.join().is_ok());
    }
}
