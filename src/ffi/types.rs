//! The C-visible enums and structs, and their static names. Numeric values are stable: never
//! renumber a value, and keep retired ones reserved.
//!
//! Names are written once: verdicts, reasons and modes in the core enums' `as_str` (their C
//! strings are copied from those at compile time by `c_names!`), statuses and
//! `MTASTS_VERDICT_ERROR`, which exist only in the C ABI, here.

#![allow(non_camel_case_types)]

use std::ffi::{CStr, c_char};

use crate::policy::Mode;
use crate::verdict::{Reason, Verdict};

/// The outcome of a call (not of the MTA-STS check: that is the verdict).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum mtasts_status {
    /// The call worked.
    MTASTS_STATUS_OK = 0,
    /// A required pointer argument was NULL.
    MTASTS_STATUS_NULL_ARGUMENT = 1,
    /// A string argument was not valid UTF-8 (never returned for an MX host name: one that is not
    /// an ASCII host name matches no pattern instead).
    MTASTS_STATUS_INVALID_UTF8 = 2,
    /// The domain is not a domain name.
    MTASTS_STATUS_INVALID_DOMAIN = 3,
    /// Reserved: no call returns it (an MX that is not a host name matches no pattern instead).
    MTASTS_STATUS_INVALID_MX = 4,
    /// The configuration file cannot be read or is invalid.
    MTASTS_STATUS_CONFIG = 5,
    /// The caller's buffer is too small; `out_n` (if given) holds the length needed without the NUL.
    MTASTS_STATUS_BUFFER_TOO_SMALL = 6,
    /// An internal error (a panic was caught); the call had no effect on its out-parameters.
    MTASTS_STATUS_PANIC = 7,
    /// An index past the end.
    MTASTS_STATUS_OUT_OF_RANGE = 8,
    /// No policy applies to the domain.
    MTASTS_STATUS_NO_POLICY = 9,
    /// An argument has a value the call does not accept (an unknown reason, a malformed IP
    /// address, a buffer length above `PTRDIFF_MAX`).
    MTASTS_STATUS_INVALID_ARGUMENT = 10,
}

/// What the MTA should do with this MX (stable values).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum mtasts_verdict {
    /// No policy applies: deliver as usual.
    MTASTS_VERDICT_NO_POLICY = 0,
    /// A policy applies and this MX (and certificate, if given) satisfies it.
    MTASTS_VERDICT_PASS = 1,
    /// `enforce` policy not satisfied: do not deliver to this MX; temporary failure, try the next.
    MTASTS_VERDICT_FAIL_ENFORCE = 2,
    /// `testing` policy not satisfied: deliver, and record the failure for TLSRPT.
    MTASTS_VERDICT_FAIL_TESTING = 3,
    /// The call itself failed; `mtasts_last_error` says why.
    MTASTS_VERDICT_ERROR = 4,
}

/// Why a check failed (RFC 8460 result types, plus `mx-mismatch`), stable values.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum mtasts_reason {
    /// No failure.
    MTASTS_REASON_NONE = 0,
    /// `starttls-not-supported`.
    MTASTS_REASON_STARTTLS_NOT_SUPPORTED = 1,
    /// `certificate-host-mismatch`.
    MTASTS_REASON_CERTIFICATE_HOST_MISMATCH = 2,
    /// `certificate-expired`.
    MTASTS_REASON_CERTIFICATE_EXPIRED = 3,
    /// `certificate-not-trusted`.
    MTASTS_REASON_CERTIFICATE_NOT_TRUSTED = 4,
    /// `validation-failure`.
    MTASTS_REASON_VALIDATION_FAILURE = 5,
    /// `sts-policy-fetch-error`.
    MTASTS_REASON_STS_POLICY_FETCH_ERROR = 6,
    /// `sts-policy-invalid`.
    MTASTS_REASON_STS_POLICY_INVALID = 7,
    /// `sts-webpki-invalid`.
    MTASTS_REASON_STS_WEBPKI_INVALID = 8,
    /// `mx-mismatch`: the MX matches no pattern (reported to TLSRPT as `validation-failure`).
    MTASTS_REASON_MX_MISMATCH = 9,
    /// `tlsa-invalid`: the caller's DANE check failed.
    MTASTS_REASON_TLSA_INVALID = 10,
    /// `store-unavailable`: no policy in memory and the persistent store could not be read; the
    /// mail is held because the configuration says `[engine] on_store_error = "tempfail"`.
    MTASTS_REASON_STORE_UNAVAILABLE = 11,
    /// `dnssec-invalid`: the TLSA lookup of a DANE MX did not validate or failed (temporary).
    MTASTS_REASON_DNSSEC_INVALID = 12,
    /// `dane-required`: DANE applies to the MX but no TLS session was negotiated.
    MTASTS_REASON_DANE_REQUIRED = 13,
}

/// Where an engine's persistent store stands (stable values); see `mtasts_engine_store_state`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum mtasts_store_state {
    /// No persistent store is configured (`[cache] path = "memory"`): policies live per process.
    MTASTS_STORE_NONE = 0,
    /// The store is open for reading and writing.
    MTASTS_STORE_OK = 1,
    /// This user may read the store but not write it: stored policies are enforced, new ones are
    /// not saved. Make the store and its directory writable by the MTA's user.
    MTASTS_STORE_READ_ONLY = 2,
    /// The store could not be opened or read: a policy stored there is not seen, so a domain whose
    /// discovery is blocked gets no protection (unless `[engine] on_store_error = "tempfail"`).
    MTASTS_STORE_UNAVAILABLE = 3,
}

impl From<&crate::engine::StoreState> for mtasts_store_state {
    fn from(s: &crate::engine::StoreState) -> Self {
        use crate::engine::StoreState as S;
        match s {
            S::None => Self::MTASTS_STORE_NONE,
            S::Ok => Self::MTASTS_STORE_OK,
            S::ReadOnly(_) => Self::MTASTS_STORE_READ_ONLY,
            S::Unavailable(_) => Self::MTASTS_STORE_UNAVAILABLE,
        }
    }
}

/// Which protocol decided a check (stable values).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum mtasts_decided_by {
    /// Neither applied: no MTA-STS policy in force and no DANE for this MX.
    MTASTS_DECIDED_BY_NONE = 0,
    /// The MTA-STS policy (`enforce` or `testing`).
    MTASTS_DECIDED_BY_MTA_STS = 1,
    /// DANE (RFC 7672): the MX has DNSSEC-secure TLSA records, or their lookup failed.
    MTASTS_DECIDED_BY_DANE = 2,
}

/// DANE's part of a check, filled in by `mtasts_engine_check_dane` and
/// `mtasts_engine_check_mx_dane` beside the `mtasts_result`.
///
/// The caller sets `size` to `sizeof(mtasts_dane)` before the call; the library refuses a smaller
/// size (`MTASTS_STATUS_INVALID_ARGUMENT`), writes the fields it knows and leaves `size` as it
/// is. Later versions only append fields, so a program built against this header keeps working.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct mtasts_dane {
    /// `sizeof(mtasts_dane)` as the caller was compiled.
    pub size: usize,
    /// 1 when DANE applies to the MX: its TLSA RRset is DNSSEC-secure (DANE decides, whatever the
    /// MTA-STS mode), or its DNSSEC lookup failed (a temporary failure of the MX).
    pub applies: u32,
    /// 1 when the MTA must not deliver to this MX without TLS: DANE applies, or an `enforce`
    /// policy lists the MX. Refuse any plaintext fallback then.
    pub tls_required: u32,
    /// The TLSA records of the secure RRset (0 when DANE does not apply).
    pub tlsa_records: u32,
    /// How many of them are usable for SMTP (DANE-TA or DANE-EE with known parameters); 0 with
    /// `applies` = 1 means TLS is mandatory but not authenticated.
    pub usable_records: u32,
    /// Which protocol decided.
    pub decided_by: mtasts_decided_by,
}

impl mtasts_dane {
    pub(crate) fn from_outcome(o: &crate::engine::Outcome, size: usize) -> Self {
        let dane = o.dane.as_deref();
        let enforce_listed = o.mode() == Some(Mode::Enforce) && o.mx_matches;
        let decided_by = if dane.is_some() {
            mtasts_decided_by::MTASTS_DECIDED_BY_DANE
        } else if matches!(o.mode(), Some(Mode::Enforce | Mode::Testing)) {
            mtasts_decided_by::MTASTS_DECIDED_BY_MTA_STS
        } else {
            mtasts_decided_by::MTASTS_DECIDED_BY_NONE
        };
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Self {
            size,
            applies: u32::from(dane.is_some()),
            tls_required: u32::from(dane.is_some() || enforce_listed),
            tlsa_records: count(dane.map_or(0, |d| d.records().len())),
            usable_records: count(dane.map_or(0, |d| d.usable)),
            decided_by,
        }
    }
}

/// The mode of the policy that applied (stable values).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum mtasts_mode {
    /// No policy applied.
    MTASTS_MODE_NO_POLICY = 0,
    /// `mode: enforce`.
    MTASTS_MODE_ENFORCE = 1,
    /// `mode: testing`.
    MTASTS_MODE_TESTING = 2,
    /// `mode: none`.
    MTASTS_MODE_NONE = 3,
}

/// The result of a check, filled in by `mtasts_engine_check` and `mtasts_engine_check_mx`.
/// Plain data, owned by the caller (e.g. on the stack).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct mtasts_result {
    /// What to do with this MX.
    pub verdict: mtasts_verdict,
    /// Why, for failures; also why no policy could be had (`MTASTS_REASON_STS_*`) when the
    /// verdict is `MTASTS_VERDICT_NO_POLICY` after a failed discovery or fetch.
    pub reason: mtasts_reason,
    /// The mode of the policy applied.
    pub mode: mtasts_mode,
    /// The id of the policy applied, NUL-terminated; empty without a policy.
    pub policy_id: [c_char; 33],
    /// A human-readable detail of the failure, NUL-terminated (cut to fit); empty otherwise.
    pub detail: [c_char; 256],
}

impl mtasts_result {
    pub(crate) fn empty() -> Self {
        Self {
            verdict: mtasts_verdict::MTASTS_VERDICT_NO_POLICY,
            reason: mtasts_reason::MTASTS_REASON_NONE,
            mode: mtasts_mode::MTASTS_MODE_NO_POLICY,
            policy_id: [0; 33],
            detail: [0; 256],
        }
    }
}

impl From<Verdict> for mtasts_verdict {
    fn from(v: Verdict) -> Self {
        match v {
            Verdict::NoPolicy => Self::MTASTS_VERDICT_NO_POLICY,
            Verdict::Pass => Self::MTASTS_VERDICT_PASS,
            Verdict::FailEnforce => Self::MTASTS_VERDICT_FAIL_ENFORCE,
            Verdict::FailTesting => Self::MTASTS_VERDICT_FAIL_TESTING,
        }
    }
}

impl From<Reason> for mtasts_reason {
    fn from(r: Reason) -> Self {
        match r {
            Reason::None => Self::MTASTS_REASON_NONE,
            Reason::StarttlsNotSupported => Self::MTASTS_REASON_STARTTLS_NOT_SUPPORTED,
            Reason::CertificateHostMismatch => Self::MTASTS_REASON_CERTIFICATE_HOST_MISMATCH,
            Reason::CertificateExpired => Self::MTASTS_REASON_CERTIFICATE_EXPIRED,
            Reason::CertificateNotTrusted => Self::MTASTS_REASON_CERTIFICATE_NOT_TRUSTED,
            Reason::ValidationFailure => Self::MTASTS_REASON_VALIDATION_FAILURE,
            Reason::StsPolicyFetchError => Self::MTASTS_REASON_STS_POLICY_FETCH_ERROR,
            Reason::StsPolicyInvalid => Self::MTASTS_REASON_STS_POLICY_INVALID,
            Reason::StsWebpkiInvalid => Self::MTASTS_REASON_STS_WEBPKI_INVALID,
            Reason::MxMismatch => Self::MTASTS_REASON_MX_MISMATCH,
            Reason::TlsaInvalid => Self::MTASTS_REASON_TLSA_INVALID,
            Reason::StoreUnavailable => Self::MTASTS_REASON_STORE_UNAVAILABLE,
            Reason::DnssecInvalid => Self::MTASTS_REASON_DNSSEC_INVALID,
            Reason::DaneRequired => Self::MTASTS_REASON_DANE_REQUIRED,
        }
    }
}

impl mtasts_reason {
    /// The reason with this numeric value, if it is one.
    pub(crate) fn from_u32(value: u32) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| *r as u32 == value)
    }
}

impl From<Option<Mode>> for mtasts_mode {
    fn from(m: Option<Mode>) -> Self {
        match m {
            None => Self::MTASTS_MODE_NO_POLICY,
            Some(Mode::Enforce) => Self::MTASTS_MODE_ENFORCE,
            Some(Mode::Testing) => Self::MTASTS_MODE_TESTING,
            Some(Mode::None) => Self::MTASTS_MODE_NONE,
        }
    }
}

impl mtasts_status {
    /// Every status, in the order of their numeric values.
    const ALL: [Self; 11] = [
        Self::MTASTS_STATUS_OK,
        Self::MTASTS_STATUS_NULL_ARGUMENT,
        Self::MTASTS_STATUS_INVALID_UTF8,
        Self::MTASTS_STATUS_INVALID_DOMAIN,
        Self::MTASTS_STATUS_INVALID_MX,
        Self::MTASTS_STATUS_CONFIG,
        Self::MTASTS_STATUS_BUFFER_TOO_SMALL,
        Self::MTASTS_STATUS_PANIC,
        Self::MTASTS_STATUS_OUT_OF_RANGE,
        Self::MTASTS_STATUS_NO_POLICY,
        Self::MTASTS_STATUS_INVALID_ARGUMENT,
    ];

    /// The status's name (statuses exist only in the C ABI, so this is their one name table).
    const fn name(self) -> &'static CStr {
        match self {
            Self::MTASTS_STATUS_OK => c"ok",
            Self::MTASTS_STATUS_NULL_ARGUMENT => c"null-argument",
            Self::MTASTS_STATUS_INVALID_UTF8 => c"invalid-utf8",
            Self::MTASTS_STATUS_INVALID_DOMAIN => c"invalid-domain",
            Self::MTASTS_STATUS_INVALID_MX => c"invalid-mx",
            Self::MTASTS_STATUS_CONFIG => c"config",
            Self::MTASTS_STATUS_BUFFER_TOO_SMALL => c"buffer-too-small",
            Self::MTASTS_STATUS_PANIC => c"panic",
            Self::MTASTS_STATUS_OUT_OF_RANGE => c"out-of-range",
            Self::MTASTS_STATUS_NO_POLICY => c"no-policy",
            Self::MTASTS_STATUS_INVALID_ARGUMENT => c"invalid-argument",
        }
    }
}

const UNKNOWN: &CStr = c"unknown";

/// Room for the longest name and its NUL (a longer name fails the build).
const NAME_MAX: usize = 32;

/// `name` with a NUL, at compile time, in a fixed-size buffer.
const fn c_name(name: &str) -> [u8; NAME_MAX] {
    let bytes = name.as_bytes();
    assert!(bytes.len() < NAME_MAX, "a name is longer than NAME_MAX - 1");
    let mut out = [0; NAME_MAX];
    let mut i = 0;
    while i < bytes.len() {
        assert!(bytes[i] != 0, "a name contains a NUL");
        out[i] = bytes[i];
        i += 1;
    }
    out
}

/// The C strings of every value of a core enum, made at compile time from its `as_str`:
/// `c_names!(Reason::ALL, Reason::as_str)`, in the order of `ALL`.
macro_rules! c_names {
    ($all:expr, $as_str:path) => {{
        let mut names = [[0u8; NAME_MAX]; $all.len()];
        let mut i = 0;
        while i < names.len() {
            names[i] = c_name($as_str($all[i]));
            i += 1;
        }
        names
    }};
}

static REASON_NAMES: [[u8; NAME_MAX]; Reason::ALL.len()] = c_names!(Reason::ALL, Reason::as_str);
static VERDICT_NAMES: [[u8; NAME_MAX]; Verdict::ALL.len()] = c_names!(Verdict::ALL, Verdict::as_str);
const MODES: [Mode; 3] = [Mode::Enforce, Mode::Testing, Mode::None];
static MODE_NAMES: [[u8; NAME_MAX]; MODES.len()] = c_names!(MODES, Mode::as_str);

/// The C string at `index` of a table made by [`c_names`]; `"unknown"` when there is none.
fn name_at(table: &'static [[u8; NAME_MAX]], index: Option<usize>) -> &'static CStr {
    index.and_then(|i| table.get(i)).and_then(|name| CStr::from_bytes_until_nul(name).ok()).unwrap_or(UNKNOWN)
}

pub(crate) fn status_name(status: u32) -> &'static CStr {
    mtasts_status::ALL.into_iter().find(|s| *s as u32 == status).map_or(UNKNOWN, mtasts_status::name)
}

pub(crate) fn reason_name(reason: u32) -> &'static CStr {
    name_at(&REASON_NAMES, Reason::ALL.iter().position(|r| *r as u32 == reason))
}

pub(crate) fn verdict_name(verdict: u32) -> &'static CStr {
    if verdict == mtasts_verdict::MTASTS_VERDICT_ERROR as u32 {
        return c"error";
    }
    name_at(&VERDICT_NAMES, Verdict::ALL.iter().position(|v| *v as u32 == verdict))
}

/// [`Verdict::as_str`] as a static C string.
pub(crate) fn verdict_c_name(verdict: Verdict) -> &'static CStr {
    name_at(&VERDICT_NAMES, Verdict::ALL.iter().position(|v| *v == verdict))
}

/// [`Mode::as_str`] as a static C string.
pub(crate) fn mode_c_name(mode: Mode) -> &'static CStr {
    name_at(&MODE_NAMES, MODES.iter().position(|m| *m == mode))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_agree_with_the_rust_names() {
        for (i, r) in Reason::ALL.into_iter().enumerate() {
            let c = mtasts_reason::from(r) as u32;
            assert_eq!(c, r as u32);
            assert_eq!(c as usize, i, "Reason::ALL is in the order of the values");
            assert_eq!(reason_name(c).to_str(), Ok(r.as_str()));
        }
        for (i, v) in Verdict::ALL.into_iter().enumerate() {
            let c = mtasts_verdict::from(v) as u32;
            assert_eq!(c as usize, i, "Verdict::ALL is in the order of the values");
            assert_eq!(verdict_name(c).to_str(), Ok(v.as_str()));
            assert_eq!(verdict_c_name(v).to_str(), Ok(v.as_str()));
        }
        for m in [Mode::Enforce, Mode::Testing, Mode::None] {
            assert_eq!(mode_c_name(m).to_str(), Ok(m.as_str()));
        }
        assert_eq!(verdict_name(mtasts_verdict::MTASTS_VERDICT_ERROR as u32), c"error");
        for (i, s) in mtasts_status::ALL.into_iter().enumerate() {
            assert_eq!(s as usize, i, "mtasts_status::ALL is in the order of the values");
        }
        // The names C callers see, unchanged.
        let names: Vec<&str> = (0..12).map(|s| status_name(s).to_str().unwrap_or("?")).collect();
        assert_eq!(
            names,
            [
                "ok",
                "null-argument",
                "invalid-utf8",
                "invalid-domain",
                "invalid-mx",
                "config",
                "buffer-too-small",
                "panic",
                "out-of-range",
                "no-policy",
                "invalid-argument",
                "unknown"
            ]
        );
        assert_eq!(verdict_name(5), UNKNOWN);
        assert_eq!(reason_name(14), UNKNOWN);
        assert_eq!(status_name(99), UNKNOWN);
    }
}
