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
//! | module | what |
//! |---|---|
//! | this file | `mtasts_version`, the `mtasts_*_str` names, `mtasts_last_error` |
//! | `boundary` | the panic guard, argument readers, out-parameters, `mtasts_last_error`'s thread-local |
//! | `registry` | the per-process registry of the engines the library keeps (the default engine and Exim's `{config=...}` engines), fork handling, the flush at `exit()` |
//! | `engine` | `mtasts_check`, `mtasts_record` and the `mtasts_engine_*` handle API |
//! | `log` | `mtasts_set_log_callback`: the library's log lines into the MTA's log |
//! | `policy` | `mtasts_engine_policy` and the `mtasts_policy_*` accessors |
//! | `types` | the C enums and structs and their static names |
//! | [`exim`] | Exim's `${dlfunc}` entry points |
//!
//! All `unsafe` code of the crate is in this module, but for `crate::forks` (one
//! `pthread_atfork` registration).

#![allow(unsafe_code, non_camel_case_types)]

mod boundary;
mod engine;
pub mod exim;
mod log;
mod policy;
mod registry;
mod types;

use std::ffi::{CStr, c_char};

pub use engine::*;
pub use log::*;
pub use policy::*;
pub use types::*;

use boundary::{boundary, copy_out_quietly, last_error};

/// Major version of the library, as in `Cargo.toml`.
pub const MTASTS_VERSION_MAJOR: u32 = 0;
/// Minor version of the library, as in `Cargo.toml`.
pub const MTASTS_VERSION_MINOR: u32 = 2;
/// Patch version of the library, as in `Cargo.toml`.
pub const MTASTS_VERSION_PATCH: u32 = 0;
/// `MAJOR * 10000 + MINOR * 100 + PATCH`, for `#if` comparisons.
pub const MTASTS_VERSION_NUMBER: u32 = 200;

static VERSION: &CStr = match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
    Ok(v) => v,
    Err(_) => panic!("version string"),
};

// ---------------------------------------------------------------------------------------------
// Version, names and the last error

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
    boundary(|| {
        // SAFETY: forwarded caller contract. Quietly: a too-small buffer must not replace the
        // message the caller is about to retry for.
        unsafe { copy_out_quietly(&last_error(), buf, len, out_n) }.into_result()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use boundary::{guard, set_last_error};

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
