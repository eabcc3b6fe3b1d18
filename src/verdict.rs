//! Verdicts: what the mode of a policy means for one MX (RFC 8461 §4, §5; RFC 8460 §4.3).
//!
//! Mode semantics live here and nowhere else. The inputs are the facts of one delivery attempt
//! (is there a policy and what is its mode, does the MX match, what became of TLS, what did DANE
//! say); the output is a [`Verdict`] and, for every failure, a [`Reason`].
//!
//! * No policy, and `mode: none`, behave alike: [`Verdict::NoPolicy`] (APPLY-1, APPLY-6).
//! * `enforce` failures give [`Verdict::FailEnforce`]: do not deliver to this MX, treat it as a
//!   temporary failure and try the next MX (APPLY-2, APPLY-3, MX-7).
//! * `testing` failures give [`Verdict::FailTesting`]: deliver, and report (APPLY-5, APPLY-9).
//! * The MX name is checked first, then TLS (Appendix B order), so a name mismatch is reported as
//!   such even when the certificate is also bad.
//! * DANE (RFC 8461 §2): a caller-supplied "DANE failed" is never turned into a pass, whatever the
//!   MTA-STS mode (DANE-1, DANE-3). When DANE passed, DANE decides: MTA-STS failures are still
//!   reported but no longer stop delivery (DANE-2).

use std::fmt;

use crate::policy::Mode;

/// The answer for one (domain, MX, certificate) question. Numeric values are stable (C ABI,
/// whose `mtasts_verdict` adds `MTASTS_VERDICT_ERROR = 4` for a call that failed: a call's
/// failure, not an answer, so it is not a verdict here).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Verdict {
    /// No policy applies: deliver as usual.
    NoPolicy = 0,
    /// A policy applies and this MX (and certificate, if given) satisfies it.
    Pass = 1,
    /// An `enforce` policy is not satisfied: do not deliver to this MX (temporary failure).
    FailEnforce = 2,
    /// A `testing` policy is not satisfied: deliver, and record the failure for TLSRPT.
    FailTesting = 3,
}

impl Verdict {
    /// Lower-case name used in JSON, logs, the CLI and the C ABI (`mtasts_verdict_str`, whose
    /// C strings are made from these at compile time).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::NoPolicy => "no-policy",
            Self::Pass => "pass",
            Self::FailEnforce => "fail-enforce",
            Self::FailTesting => "fail-testing",
        }
    }

    /// Every verdict, in the order of their numeric values.
    pub(crate) const ALL: [Verdict; 4] =
        [Verdict::NoPolicy, Verdict::Pass, Verdict::FailEnforce, Verdict::FailTesting];

    /// The verdict with this name (the inverse of [`Verdict::as_str`]).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == name)
    }

    /// True when the MTA may deliver to this MX.
    pub fn may_deliver(self) -> bool {
        matches!(self, Self::NoPolicy | Self::Pass | Self::FailTesting)
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a check failed, or why no policy could be had. Numeric values are stable (C ABI); names are
/// RFC 8460 result types where one exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
#[non_exhaustive]
pub enum Reason {
    /// No failure.
    None = 0,
    /// `starttls-not-supported`: the MX offered no STARTTLS, or TLS could not be negotiated.
    StarttlsNotSupported = 1,
    /// `certificate-host-mismatch`: no SAN dNSName of the certificate matches the MX host name.
    CertificateHostMismatch = 2,
    /// `certificate-expired`.
    CertificateExpired = 3,
    /// `certificate-not-trusted`: the chain does not lead to a trusted root.
    CertificateNotTrusted = 4,
    /// `validation-failure`: any other validation problem.
    ValidationFailure = 5,
    /// `sts-policy-fetch-error`: the policy could not be fetched (network, HTTP, timeout).
    StsPolicyFetchError = 6,
    /// `sts-policy-invalid`: the policy was fetched but does not parse.
    StsPolicyInvalid = 7,
    /// `sts-webpki-invalid`: the policy host's certificate failed PKIX validation.
    StsWebpkiInvalid = 8,
    /// `mx-mismatch`: the MX host name matches no pattern of the policy (reported to TLSRPT as
    /// `validation-failure`).
    MxMismatch = 9,
    /// `tlsa-invalid`: the caller's DANE validation failed (DANE-1).
    TlsaInvalid = 10,
    /// `store-unavailable`: no policy is in memory and the persistent store could not be read, so
    /// the mail is held (`[engine] on_store_error = "tempfail"`). Not reported to TLSRPT.
    StoreUnavailable = 11,
    /// `dnssec-invalid`: the TLSA lookup of a DANE MX did not validate (bogus) or could not be
    /// completed; a temporary failure of that MX, never "no DANE".
    DnssecInvalid = 12,
    /// `dane-required`: DANE applies to the MX (a secure TLSA RRset) but no TLS session was
    /// negotiated, or no certificate was given to judge.
    DaneRequired = 13,
}

impl Reason {
    /// The name used by the library (the RFC 8460 result type, or `mx-mismatch`), and by the C
    /// ABI (`mtasts_reason_str`, whose C strings are made from these at compile time).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::StarttlsNotSupported => "starttls-not-supported",
            Self::CertificateHostMismatch => "certificate-host-mismatch",
            Self::CertificateExpired => "certificate-expired",
            Self::CertificateNotTrusted => "certificate-not-trusted",
            Self::ValidationFailure => "validation-failure",
            Self::StsPolicyFetchError => "sts-policy-fetch-error",
            Self::StsPolicyInvalid => "sts-policy-invalid",
            Self::StsWebpkiInvalid => "sts-webpki-invalid",
            Self::MxMismatch => "mx-mismatch",
            Self::TlsaInvalid => "tlsa-invalid",
            Self::StoreUnavailable => "store-unavailable",
            Self::DnssecInvalid => "dnssec-invalid",
            Self::DaneRequired => "dane-required",
        }
    }

    /// Every reason, in the order of their numeric values.
    pub(crate) const ALL: [Reason; 14] = [
        Reason::None,
        Reason::StarttlsNotSupported,
        Reason::CertificateHostMismatch,
        Reason::CertificateExpired,
        Reason::CertificateNotTrusted,
        Reason::ValidationFailure,
        Reason::StsPolicyFetchError,
        Reason::StsPolicyInvalid,
        Reason::StsWebpkiInvalid,
        Reason::MxMismatch,
        Reason::TlsaInvalid,
        Reason::StoreUnavailable,
        Reason::DnssecInvalid,
        Reason::DaneRequired,
    ];

    /// The reason with this name (the inverse of [`Reason::as_str`]).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == name)
    }

    /// The RFC 8460 result type to put in a TLSRPT report, if the reason is reportable.
    pub fn tlsrpt_result_type(self) -> Option<&'static str> {
        match self {
            Self::None | Self::StoreUnavailable => None,
            Self::MxMismatch => Some("validation-failure"),
            other => Some(other.as_str()),
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What became of TLS with this MX, as far as the caller knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsOutcome {
    /// Not known yet (a check before connecting): only the MX name is judged.
    NotChecked,
    /// STARTTLS was not offered or the handshake failed (CERT-1).
    NotNegotiated,
    /// The certificate chain was validated for the MX host name.
    Valid,
    /// The certificate chain failed validation; the reason is one of the certificate reasons.
    Invalid(Reason),
}

/// What DANE (RFC 7672) says about this MX, from the engine's own TLSA lookup or the caller's
/// DANE validation (RFC 8461 §2: where DANE applies, it decides).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Dane {
    /// DANE does not apply (no authenticated TLSA records), or the caller does not do DANE.
    #[default]
    NotApplicable,
    /// DANE applies and the TLS session is not judged yet (a check before connecting): DANE
    /// will decide, and TLS is mandatory.
    Pending,
    /// DANE applied and the connection satisfied it: DANE decides (DANE-2).
    Passed,
    /// DANE applied and no TLSA record matched: never delivered on MTA-STS's say-so (DANE-1,
    /// DANE-3); reason `tlsa-invalid`.
    Failed,
    /// The TLSA lookup did not validate (bogus) or failed: a temporary failure of this MX, never
    /// "no DANE"; reason `dnssec-invalid`.
    DnssecInvalid,
    /// DANE applies but no TLS session was negotiated (or no certificate was given); reason
    /// `dane-required`.
    Required,
}

impl Dane {
    /// Lower-case name used in logs: `not-applicable`, `pending`, `passed`, `tlsa-invalid`,
    /// `dnssec-invalid`, `dane-required`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::NotApplicable => "not-applicable",
            Self::Pending => "pending",
            Self::Passed => "passed",
            Self::Failed => "tlsa-invalid",
            Self::DnssecInvalid => "dnssec-invalid",
            Self::Required => "dane-required",
        }
    }

    /// Every value.
    pub(crate) const ALL: [Dane; 6] =
        [Dane::NotApplicable, Dane::Pending, Dane::Passed, Dane::Failed, Dane::DnssecInvalid, Dane::Required];

    /// The value with this name (the inverse of [`Dane::as_str`]).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_str() == name)
    }

    /// True when DANE decides for this MX (it applies, whatever the outcome).
    pub fn applies(self) -> bool {
        self != Self::NotApplicable
    }
}

/// A verdict with its reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The verdict.
    pub verdict: Verdict,
    /// Why, for failures; [`Reason::None`] otherwise.
    pub reason: Reason,
}

/// Applies a policy's mode to the facts of one attempt. `mode` is `None` when no unexpired
/// policy exists.
pub fn decide(mode: Option<Mode>, mx_matches: bool, tls: TlsOutcome, dane: Dane) -> Decision {
    let dane_failure = match dane {
        Dane::Failed => Some(Reason::TlsaInvalid),
        Dane::DnssecInvalid => Some(Reason::DnssecInvalid),
        Dane::Required => Some(Reason::DaneRequired),
        Dane::NotApplicable | Dane::Pending | Dane::Passed => None,
    };
    if let Some(reason) = dane_failure {
        return Decision { verdict: Verdict::FailEnforce, reason };
    }
    let enforcing = match mode {
        // Without an MTA-STS policy, a DANE pass is a pass (DANE decides); otherwise no policy.
        None | Some(Mode::None) if dane == Dane::Passed => {
            return Decision { verdict: Verdict::Pass, reason: Reason::None };
        }
        None | Some(Mode::None) => {
            return Decision { verdict: Verdict::NoPolicy, reason: Reason::None };
        }
        Some(Mode::Enforce) => dane == Dane::NotApplicable,
        Some(Mode::Testing) => false,
    };
    let reason = if !mx_matches {
        Reason::MxMismatch
    } else {
        match tls {
            TlsOutcome::NotChecked | TlsOutcome::Valid => Reason::None,
            TlsOutcome::NotNegotiated => Reason::StarttlsNotSupported,
            TlsOutcome::Invalid(reason) => reason,
        }
    };
    let verdict = match (reason, enforcing) {
        (Reason::None, _) => Verdict::Pass,
        (_, true) => Verdict::FailEnforce,
        (_, false) => Verdict::FailTesting,
    };
    Decision { verdict, reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        let bad = TlsOutcome::Invalid(Reason::CertificateExpired);
        let na = Dane::NotApplicable;
        assert_eq!(decide(None, false, bad, na).verdict, Verdict::NoPolicy);
        assert_eq!(decide(Some(Mode::None), false, bad, na).verdict, Verdict::NoPolicy);
        assert_eq!(decide(Some(Mode::Enforce), true, TlsOutcome::Valid, na).verdict, Verdict::Pass);
        assert_eq!(
            decide(Some(Mode::Enforce), true, bad, na),
            Decision { verdict: Verdict::FailEnforce, reason: Reason::CertificateExpired }
        );
        assert_eq!(decide(Some(Mode::Testing), true, bad, na).verdict, Verdict::FailTesting);
        assert_eq!(decide(Some(Mode::Enforce), false, TlsOutcome::Valid, na).reason, Reason::MxMismatch);
    }

    #[test]
    fn dane_is_never_loosened() {
        for mode in [None, Some(Mode::None), Some(Mode::Testing), Some(Mode::Enforce)] {
            assert_eq!(decide(mode, true, TlsOutcome::Valid, Dane::Failed).verdict, Verdict::FailEnforce);
        }
        assert_eq!(
            decide(Some(Mode::Enforce), false, TlsOutcome::Valid, Dane::Passed).verdict,
            Verdict::FailTesting
        );
    }

    #[test]
    fn every_dane_failure_is_enforced_whatever_the_mode() {
        for mode in [None, Some(Mode::None), Some(Mode::Testing), Some(Mode::Enforce)] {
            for (dane, reason) in [
                (Dane::Failed, Reason::TlsaInvalid),
                (Dane::DnssecInvalid, Reason::DnssecInvalid),
                (Dane::Required, Reason::DaneRequired),
            ] {
                let d = decide(mode, true, TlsOutcome::Valid, dane);
                assert_eq!((d.verdict, d.reason), (Verdict::FailEnforce, reason), "{mode:?} {dane:?}");
            }
        }
        // A DANE pass without an MTA-STS policy is a pass; a pending DANE MX is not enforced by
        // MTA-STS (DANE will decide once TLS is up).
        assert_eq!(decide(None, false, TlsOutcome::Valid, Dane::Passed).verdict, Verdict::Pass);
        assert_eq!(
            decide(Some(Mode::Enforce), false, TlsOutcome::NotChecked, Dane::Pending).verdict,
            Verdict::FailTesting
        );
    }
}
