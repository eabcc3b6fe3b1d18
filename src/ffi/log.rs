//! `mtasts_set_log_callback`: an MTA routes mtasts's log lines (warnings, and at `info` the
//! decision log) into its own log (`crate::logging`).

use std::ffi::{CString, c_char, c_int, c_void};
use std::sync::Arc;

use super::boundary::{boundary, fail};
use super::types::mtasts_status;
use crate::logging::{self, LogLevel};

/// No line at all.
pub const MTASTS_LOG_OFF: c_int = 0;
/// Errors.
pub const MTASTS_LOG_ERROR: c_int = 1;
/// Warnings: what an operator must act on (the default level).
pub const MTASTS_LOG_WARN: c_int = 2;
/// One line per decision, discovery, fetch and refresh.
pub const MTASTS_LOG_INFO: c_int = 3;
/// The details of each step.
pub const MTASTS_LOG_DEBUG: c_int = 4;

/// Receives one log line: `level` is one of `MTASTS_LOG_ERROR` .. `MTASTS_LOG_DEBUG`, `line` a
/// NUL-terminated UTF-8 string without newline, valid only during the call.
pub type mtasts_log_callback =
    Option<unsafe extern "C" fn(user_data: *mut c_void, level: c_int, line: *const c_char)>;

/// Sends the library's log lines at `level` and above (`MTASTS_LOG_OFF` .. `MTASTS_LOG_DEBUG`)
/// to `callback` instead of standard error; a NULL `callback` sends them to standard error again
/// (at the level of `[log] level`). `user_data` is passed back unchanged.
///
/// The callback runs on the thread whose call produced the line, just before that call returns,
/// never while the library holds a lock: it may call any mtasts function. Lines are queued during
/// a call (at most 1,000 per call).
///
/// Thread-safe; may be called before any engine exists. After `fork()` the child keeps the
/// callback.
///
/// # Safety
/// `callback`, if not NULL, must stay callable with `user_data` from any thread until it is
/// replaced.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mtasts_set_log_callback(
    callback: mtasts_log_callback,
    user_data: *mut c_void,
    level: c_int,
) -> mtasts_status {
    boundary(|| {
        let Some(level) = LogLevel::from_number(level) else {
            return fail(
                mtasts_status::MTASTS_STATUS_INVALID_ARGUMENT,
                format!("log level {level} is not one of MTASTS_LOG_OFF (0) .. MTASTS_LOG_DEBUG (4)"),
            );
        };
        let user_data = user_data as usize;
        let sink = callback.map(|f| -> logging::Sink {
            Arc::new(move |level: LogLevel, line: &str| {
                let line = CString::new(line.replace('\0', " ")).unwrap_or_default();
                // SAFETY: the caller's contract: callable with `user_data` from any thread.
                unsafe { f(user_data as *mut c_void, level.number(), line.as_ptr()) };
            })
        });
        logging::set_sink(sink, level);
        Ok(())
    })
}
