//! The boundary every exported function goes through (after rustls-ffi's `panic.rs` and
//! `ffi.rs`): [`boundary`] catches panics and turns an early `Err(status)` into the function's
//! return value, and the `*_arg` readers turn raw arguments into Rust values or a status with a
//! message for `mtasts_last_error`. An exported function then reads as its few lines of intent:
//!
//! ```ignore
//! boundary(|| {
//!     let engine = unsafe { engine_arg(engine) }?;
//!     engine.flush_reports();
//!     Ok(())
//! })
//! ```

use std::borrow::Cow;
use std::cell::RefCell;
use std::ffi::{CStr, c_char};
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr::NonNull;

use super::types::{mtasts_mode, mtasts_status, mtasts_verdict};
use crate::engine::{Engine, InputError};

thread_local! {
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Sets this thread's last error. `try_with`: a call made from another thread-local's destructor,
/// after this one is gone, loses its message instead of panicking outside [`guard`] (which would
/// abort the process).
pub(super) fn set_last_error(message: impl Into<String>) {
    let message = message.into();
    let _ = LAST_ERROR.try_with(|e| {
        if let Ok(mut e) = e.try_borrow_mut() {
            *e = message;
        }
    });
}

/// This thread's last error (empty when none, or when the thread-local is already gone).
pub(super) fn last_error() -> String {
    LAST_ERROR.try_with(|e| e.try_borrow().map(|e| e.clone()).unwrap_or_default()).unwrap_or_default()
}

/// Runs `f`, turning a panic into `on_panic`. Safe to use from thread-local destructors: it
/// touches its own thread-local only through `try_with`.
pub(super) fn guard<T>(on_panic: T, f: impl FnOnce() -> T) -> T {
    let result = guarded(on_panic, f);
    // Log lines this call produced go to the caller's callback now, with no library lock held.
    let _ = catch_unwind(crate::logging::deliver_queued);
    result
}

fn guarded<T>(on_panic: T, f: impl FnOnce() -> T) -> T {
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

/// The return type of an exported function: what it returns on success, on a failed argument
/// or call (a status, whose message is already set), and on a caught panic.
pub(super) trait Returned: Sized {
    /// What the function's body produces on success.
    type Ok;
    /// Returned when a panic was caught.
    const PANICKED: Self;
    /// The return value for a successful body.
    fn ok(value: Self::Ok) -> Self;
    /// The return value for a failed body.
    fn failed(status: mtasts_status) -> Self;
}

impl Returned for mtasts_status {
    type Ok = ();
    const PANICKED: Self = Self::MTASTS_STATUS_PANIC;
    fn ok((): ()) -> Self {
        Self::MTASTS_STATUS_OK
    }
    fn failed(status: mtasts_status) -> Self {
        status
    }
}

/// `mtasts_check`: any failure of the call is `MTASTS_VERDICT_ERROR`.
impl Returned for mtasts_verdict {
    type Ok = Self;
    const PANICKED: Self = Self::MTASTS_VERDICT_ERROR;
    fn ok(verdict: Self) -> Self {
        verdict
    }
    fn failed(_: mtasts_status) -> Self {
        Self::MTASTS_VERDICT_ERROR
    }
}

/// Calls that return nothing (`_free`) or a plain value whose "nothing" stands for NULL.
macro_rules! returned_or {
    ($($t:ty => $none:expr),* $(,)?) => {$(
        impl Returned for $t {
            type Ok = Self;
            const PANICKED: Self = $none;
            fn ok(value: Self) -> Self {
                value
            }
            fn failed(_: mtasts_status) -> Self {
                $none
            }
        }
    )*};
}

returned_or! {
    () => (),
    u32 => 0,
    u64 => 0,
    usize => 0,
    mtasts_mode => mtasts_mode::MTASTS_MODE_NO_POLICY,
}

/// Runs the body of an exported function: a panic becomes `T::PANICKED`, `Err(status)` becomes
/// `T::failed(status)`. The body reads its arguments with the `*_arg` functions and `?`.
pub(super) fn boundary<T: Returned>(body: impl FnOnce() -> Result<T::Ok, mtasts_status>) -> T {
    guard(T::PANICKED, || match body() {
        Ok(value) => T::ok(value),
        Err(status) => T::failed(status),
    })
}

/// `Err(status)` with `message` as this thread's last error.
pub(super) fn fail<T>(status: mtasts_status, message: impl Into<String>) -> Result<T, mtasts_status> {
    set_last_error(message);
    Err(status)
}

impl mtasts_status {
    /// `Ok` for `MTASTS_STATUS_OK`, the status as an error otherwise.
    pub(super) fn into_result(self) -> Result<(), mtasts_status> {
        match self {
            Self::MTASTS_STATUS_OK => Ok(()),
            failed => Err(failed),
        }
    }
}

/// The status of a bad domain argument.
pub(super) fn input_status(e: &InputError) -> mtasts_status {
    set_last_error(e.to_string());
    match e {
        InputError::Domain(_) => mtasts_status::MTASTS_STATUS_INVALID_DOMAIN,
    }
}

// ---------------------------------------------------------------------------------------------
// Arguments in

/// Reads a NUL-terminated UTF-8 string argument.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that lives for `'a`.
pub(super) unsafe fn str_arg<'a>(p: *const c_char, what: &str) -> Result<&'a str, mtasts_status> {
    if p.is_null() {
        return fail(mtasts_status::MTASTS_STATUS_NULL_ARGUMENT, format!("{what} is NULL"));
    }
    // SAFETY: non-NULL and NUL-terminated by the caller's contract.
    let c = unsafe { CStr::from_ptr(p) };
    match c.to_str() {
        Ok(s) => Ok(s),
        Err(_) => fail(mtasts_status::MTASTS_STATUS_INVALID_UTF8, format!("{what} is not valid UTF-8")),
    }
}

/// Reads an optional string argument: NULL is `None`.
///
/// # Safety
/// As for [`str_arg`].
pub(super) unsafe fn opt_str_arg<'a>(p: *const c_char, what: &str) -> Result<Option<&'a str>, mtasts_status> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: forwarded caller contract.
    unsafe { str_arg(p, what) }.map(Some)
}

/// Reads a NUL-terminated MX host name argument. Its bytes are judged, never refused: bytes that
/// are not UTF-8 become U+FFFD, and a name with any non-ASCII character is not a host name, so it
/// matches no `mx` pattern (src/mx.rs). Refusing it with `MTASTS_STATUS_INVALID_UTF8` would let a
/// garbled MX record turn an enforce failure into an error, which callers treat as "deliver
/// without MTA-STS".
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that lives for `'a`.
pub(super) unsafe fn mx_arg<'a>(p: *const c_char) -> Result<Cow<'a, str>, mtasts_status> {
    if p.is_null() {
        return fail(mtasts_status::MTASTS_STATUS_NULL_ARGUMENT, "mx is NULL");
    }
    // SAFETY: non-NULL and NUL-terminated by the caller's contract.
    Ok(String::from_utf8_lossy(unsafe { CStr::from_ptr(p) }.to_bytes()))
}

/// Parses an optional IP address argument: NULL or empty is `None`.
///
/// # Safety
/// `p` is NULL or NUL-terminated.
pub(super) unsafe fn ip_arg(p: *const c_char, what: &str) -> Result<Option<std::net::IpAddr>, mtasts_status> {
    // SAFETY: forwarded caller contract.
    let Some(text) = unsafe { opt_str_arg(p, what) }?.filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    match text.parse() {
        Ok(ip) => Ok(Some(ip)),
        Err(_) => fail(
            mtasts_status::MTASTS_STATUS_INVALID_ARGUMENT,
            format!("{what} `{text}` is not an IP address"),
        ),
    }
}

/// Reads an optional byte buffer: NULL or length 0 is `None`. A length above `isize::MAX` is
/// refused (no object is that large, so it is a caller's bug, e.g. a negative `ssize_t` cast to
/// `size_t`; `slice::from_raw_parts` would be undefined behaviour).
///
/// # Safety
/// `p` is NULL or points to `len` readable bytes.
pub(super) unsafe fn bytes_arg<'a>(
    p: *const u8,
    len: usize,
    what: &str,
) -> Result<Option<&'a [u8]>, mtasts_status> {
    if isize::try_from(len).is_err() {
        let message = format!("{what} length {len} is larger than any buffer can be (above PTRDIFF_MAX)");
        return fail(mtasts_status::MTASTS_STATUS_INVALID_ARGUMENT, message);
    }
    if p.is_null() || len == 0 {
        Ok(None)
    } else {
        // SAFETY: non-NULL, `len <= isize::MAX` readable bytes by the caller's contract.
        Ok(Some(unsafe { std::slice::from_raw_parts(p, len) }))
    }
}

/// The engine behind a handle argument.
///
/// # Safety
/// `engine` is NULL or a live engine.
pub(super) unsafe fn engine_arg<'a>(
    engine: *const super::mtasts_engine,
) -> Result<&'a Engine, mtasts_status> {
    // SAFETY: NULL or live by the caller's contract.
    match unsafe { engine.as_ref() } {
        Some(e) => Ok(&e.engine),
        None => fail(mtasts_status::MTASTS_STATUS_NULL_ARGUMENT, "engine is NULL"),
    }
}

// ---------------------------------------------------------------------------------------------
// Results out

/// An out-parameter checked for NULL, written at most once, on success.
#[derive(Debug)]
pub(super) struct Out<'a, T> {
    ptr: NonNull<T>,
    _borrow: PhantomData<&'a mut T>,
}

impl<T> Out<'_, T> {
    /// Writes the value (the previous contents, possibly uninitialised, are not read or dropped).
    pub(super) fn write(self, value: T) {
        // SAFETY: non-NULL and writable for `'a` by the contract of `out_arg`.
        unsafe { self.ptr.as_ptr().write(value) }
    }
}

/// An out-parameter: `MTASTS_STATUS_NULL_ARGUMENT` when NULL.
///
/// # Safety
/// `p` is NULL or writable for `'a`.
pub(super) unsafe fn out_arg<'a, T>(p: *mut T, what: &str) -> Result<Out<'a, T>, mtasts_status> {
    match NonNull::new(p) {
        Some(ptr) => Ok(Out { ptr, _borrow: PhantomData }),
        None => fail(mtasts_status::MTASTS_STATUS_NULL_ARGUMENT, format!("{what} is NULL")),
    }
}

/// Moves `value` to the heap for C, which gives it back to [`free_handle`].
pub(super) fn new_handle<T>(value: T) -> *mut T {
    Box::into_raw(Box::new(value))
}

/// Drops a handle made by [`new_handle`]; NULL does nothing.
///
/// # Safety
/// `p` is NULL or came from [`new_handle`] and is not used again.
pub(super) unsafe fn free_handle<T>(p: *mut T) {
    if !p.is_null() {
        // SAFETY: made by `Box::into_raw` in `new_handle`, freed once by contract.
        drop(unsafe { Box::from_raw(p) });
    }
}

/// Copies `s` with a terminating NUL into `buf` of `len` bytes; `out_n` gets the length without
/// the NUL. Fails (writing nothing) when the buffer is too small.
///
/// # Safety
/// `buf` is NULL or points to `len` writable bytes; `out_n` is NULL or writable.
pub(super) unsafe fn copy_out(
    s: &str,
    buf: *mut c_char,
    len: usize,
    out_n: *mut usize,
) -> Result<(), mtasts_status> {
    // SAFETY: forwarded caller contract.
    let status = unsafe { copy_out_quietly(s, buf, len, out_n) };
    match status {
        mtasts_status::MTASTS_STATUS_NULL_ARGUMENT => set_last_error("buf is NULL"),
        mtasts_status::MTASTS_STATUS_BUFFER_TOO_SMALL => {
            set_last_error(format!("buffer of {len} bytes is too small for {} bytes and a NUL", s.len()));
        }
        _ => {}
    }
    status.into_result()
}

/// [`copy_out`] without touching the thread's last error (for `mtasts_last_error` itself, whose
/// message must survive the retry with a larger buffer).
///
/// # Safety
/// As for [`copy_out`].
pub(super) unsafe fn copy_out_quietly(
    s: &str,
    buf: *mut c_char,
    len: usize,
    out_n: *mut usize,
) -> mtasts_status {
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

/// Copies as much of `s` as fits (cut at a character boundary) and a NUL into `buf`.
pub(super) fn fill(buf: &mut [c_char], s: &str) {
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
            let message = last_error();
            assert!(message.contains("cert length") && message.contains("PTRDIFF_MAX"), "{message}");
        }
        // SAFETY: one readable byte.
        assert_eq!(unsafe { bytes_arg(&byte, 1, "cert") }, Ok(Some(&[0u8][..])));
        // SAFETY: NULL and 0 are never read.
        assert_eq!(unsafe { bytes_arg(std::ptr::null(), 0, "cert") }, Ok(None));
    }

    #[test]
    fn boundary_maps_errors_and_panics() {
        let failed: mtasts_status = boundary(|| fail(mtasts_status::MTASTS_STATUS_CONFIG, "no config"));
        assert_eq!(failed, mtasts_status::MTASTS_STATUS_CONFIG);
        assert_eq!(last_error(), "no config");
        let verdict: mtasts_verdict = boundary(|| Err(mtasts_status::MTASTS_STATUS_NULL_ARGUMENT));
        assert_eq!(verdict, mtasts_verdict::MTASTS_VERDICT_ERROR);
        let panicked: mtasts_status = boundary(|| panic!("boom"));
        assert_eq!(panicked, mtasts_status::MTASTS_STATUS_PANIC);
        assert!(last_error().contains("boom"));
        let count: usize = boundary(|| panic!("boom"));
        assert_eq!(count, 0);
        let ok: mtasts_status = boundary(|| Ok(()));
        assert_eq!(ok, mtasts_status::MTASTS_STATUS_OK);
    }
}
