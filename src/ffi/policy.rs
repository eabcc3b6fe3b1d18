//! The policy API: `mtasts_engine_policy` and the accessors of the `mtasts_policy` it returns.

use std::ffi::c_char;
use std::sync::Arc;

use super::boundary::{
    boundary, copy_out, engine_arg, fail, free_handle, input_status, new_handle, out_arg, str_arg,
};
use super::engine::mtasts_engine;
use super::types::{mtasts_mode, mtasts_status};
use crate::cache::CachedPolicy;

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
    boundary(|| {
        // SAFETY: forwarded caller contract (each argument in turn).
        let (engine, policy_out, domain) =
            unsafe { (engine_arg(engine)?, out_arg(policy_out, "policy_out")?, str_arg(domain, "domain")?) };
        let resolution = match engine.policy(domain) {
            Ok(Some(resolution)) => resolution,
            Ok(None) => {
                return fail(mtasts_status::MTASTS_STATUS_NO_POLICY, "an address literal has no policy");
            }
            Err(e) => return Err(input_status(&e)),
        };
        match resolution.policy {
            Some(policy) => {
                policy_out.write(new_handle(mtasts_policy { policy }));
                Ok(())
            }
            None => {
                let why = resolution.error.map_or_else(|| "no policy is published".into(), |e| e.detail);
                fail(mtasts_status::MTASTS_STATUS_NO_POLICY, why)
            }
        }
    })
}

/// Releases a policy. NULL does nothing.
///
/// # Safety
/// `policy` is NULL or was returned by `mtasts_engine_policy` and not freed yet.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mtasts_policy_free(policy: *mut mtasts_policy) {
    boundary(|| {
        // SAFETY: forwarded caller contract.
        unsafe { free_handle(policy) };
        Ok(())
    })
}

/// The policy behind a handle, or `None` for NULL (the plain accessors answer 0 then).
///
/// # Safety
/// `policy` is NULL or live for `'a`.
unsafe fn policy_ref<'a>(policy: *const mtasts_policy) -> Option<&'a CachedPolicy> {
    // SAFETY: NULL or live by contract.
    unsafe { policy.as_ref() }.map(|p| &*p.policy)
}

/// The policy behind a handle: `MTASTS_STATUS_NULL_ARGUMENT` for NULL.
///
/// # Safety
/// `policy` is NULL or live for `'a`.
unsafe fn policy_arg<'a>(policy: *const mtasts_policy) -> Result<&'a CachedPolicy, mtasts_status> {
    // SAFETY: forwarded caller contract.
    match unsafe { policy_ref(policy) } {
        Some(p) => Ok(p),
        None => fail(mtasts_status::MTASTS_STATUS_NULL_ARGUMENT, "policy is NULL"),
    }
}

/// The policy's mode; `MTASTS_MODE_NO_POLICY` for NULL.
///
/// # Safety
/// `policy` is NULL or live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mtasts_policy_mode(policy: *const mtasts_policy) -> mtasts_mode {
    // SAFETY: forwarded caller contract.
    boundary(|| Ok(mtasts_mode::from(unsafe { policy_ref(policy) }.map(|p| p.mode()))))
}

/// The policy's `max_age` in seconds (already clamped to one year); 0 for NULL.
///
/// # Safety
/// `policy` is NULL or live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mtasts_policy_max_age(policy: *const mtasts_policy) -> u32 {
    // SAFETY: forwarded caller contract.
    boundary(|| Ok(unsafe { policy_ref(policy) }.map_or(0, |p| p.policy.max_age())))
}

/// When the policy was fetched, in seconds since the Unix epoch; 0 for NULL.
///
/// # Safety
/// `policy` is NULL or live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mtasts_policy_fetched_at(policy: *const mtasts_policy) -> u64 {
    // SAFETY: forwarded caller contract.
    boundary(|| Ok(unsafe { policy_ref(policy) }.map_or(0, |p| p.fetched_at)))
}

/// When the policy expires (`fetched_at + max_age`), in seconds since the Unix epoch; 0 for NULL.
///
/// # Safety
/// `policy` is NULL or live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mtasts_policy_expires_at(policy: *const mtasts_policy) -> u64 {
    // SAFETY: forwarded caller contract.
    boundary(|| Ok(unsafe { policy_ref(policy) }.map_or(0, |p| p.expires_at)))
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
    boundary(|| {
        // SAFETY: forwarded caller contract.
        let policy = unsafe { policy_arg(policy) }?;
        // SAFETY: forwarded caller contract.
        unsafe { copy_out(policy.id.as_str(), buf, len, out_n) }
    })
}

/// The number of `mx` patterns of the policy; 0 for NULL.
///
/// # Safety
/// `policy` is NULL or live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mtasts_policy_mx_count(policy: *const mtasts_policy) -> usize {
    // SAFETY: forwarded caller contract.
    boundary(|| Ok(unsafe { policy_ref(policy) }.map_or(0, |p| p.policy.mx().len())))
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
    boundary(|| {
        // SAFETY: forwarded caller contract.
        let patterns = unsafe { policy_arg(policy) }?.policy.mx();
        let Some(pattern) = patterns.get(index) else {
            let message = format!("index {index} is out of range ({} patterns)", patterns.len());
            return fail(mtasts_status::MTASTS_STATUS_OUT_OF_RANGE, message);
        };
        // SAFETY: forwarded caller contract.
        unsafe { copy_out(&pattern.to_string(), buf, len, out_n) }
    })
}
