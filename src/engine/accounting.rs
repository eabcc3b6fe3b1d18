//! TLSRPT accounting (RFC 8460): the sessions the engine judged, and the ones the MTA reports
//! itself, counted per day in a [`Tally`] and flushed to the store's [`CountStore`].
//!
//! A session is counted under every policy that applied to it, each with its own judgement: the
//! MTA-STS policy of the recipient domain (`sts`), and the DANE policy of the MX host (`tlsa`,
//! whose policy domain is the TLSA base domain, RFC 8460 §3). docs/conformance.md, DANE-4 and
//! RPT-18..RPT-21.
//!
//! [`CountStore`]: crate::cache::CountStore

use std::sync::Arc;

use super::tally::TlsaPolicy;
use super::{Engine, InputError, parse_policy_domain};
use crate::cache::CachedPolicy;
use crate::counts::{Day, DayCounts, FailureKey, ResultType};
use crate::domain::Domain;
use crate::mx;
use crate::policy::Mode;
use crate::ports::TlsaLookup;
use crate::verdict::Reason;

/// What the MTA knows about a session beyond its result, for TLSRPT `failure-details`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionDetails {
    /// Our address for the session (`sending-mta-ip`).
    pub sending_ip: Option<std::net::IpAddr>,
    /// The MX's address (`receiving-ip`).
    pub receiving_ip: Option<std::net::IpAddr>,
    /// Free text, e.g. the TLS library's error (`failure-reason-code`).
    pub failure_reason_code: Option<String>,
}

/// One session to count.
pub(super) struct Session<'a> {
    /// The policy domain (the recipient domain).
    pub domain: &'a Domain,
    /// The MTA-STS policy that applied, if any (counted only under `enforce` or `testing`,
    /// APPLY-10).
    pub policy: Option<&'a Arc<CachedPolicy>>,
    /// What MTA-STS alone made of the session ([`Reason::None`] for a pass).
    pub sts_reason: Reason,
    /// The MX host, when it is a host name.
    pub mx: Option<&'a Domain>,
    /// The DANE side, where DANE applied.
    pub dane: Option<DaneSession<'a>>,
    /// What the MTA knows beyond the result.
    pub details: &'a SessionDetails,
}

/// The DANE side of a session to count: the MX host's `tlsa` policy and DANE's judgement of the
/// session ([`Reason::None`] for a pass).
pub(super) struct DaneSession<'a> {
    pub policy: TlsaPolicy<'a>,
    pub reason: Reason,
}

impl Engine {
    /// Counts a session for TLSRPT (RFC 8460) under each policy that applied to it, each with its
    /// own judgement (see [`Session`]). A session DANE passed but MTA-STS failed is thus a `tlsa`
    /// success and an `sts` failure (DANE-4).
    pub(super) fn count_session(&self, now: u64, s: Session<'_>) {
        let sts = s
            .policy
            .filter(|p| p.mode() != Mode::None)
            .and_then(|p| Some((s.domain, p, sts_failure(s.sts_reason, s.mx, s.details)?)));
        let tlsa = match (s.mx, s.dane) {
            (Some(host), Some(dane)) => {
                tlsa_failure(dane.reason, host, s.details).map(|failure| (host, dane.policy, failure))
            }
            _ => None,
        };
        if self.tally.add_session(now, sts, tlsa) {
            self.flush_reports();
        }
    }

    /// Records the outcome of a session the MTA judged itself (for TLSRPT): `result` is `None`
    /// for a session that negotiated TLS and satisfied the policy, or the RFC 8460 result type
    /// (`starttls-not-supported`, `certificate-not-trusted`, ...). Use it for sessions that did
    /// not go through [`Engine::check`] (which counts its own), e.g. a TLS handshake that failed
    /// before any certificate was seen.
    ///
    /// Counted under an `enforce` or `testing` MTA-STS policy of `domain`, except the DANE
    /// results (`tlsa-invalid`, `dnssec-invalid`, `dane-required`); and, when the engine does DANE
    /// and `mx` has DNSSEC-secure TLSA records, under the `tlsa` policy of `mx` too. The DANE
    /// results are always counted under the `tlsa` policy of `mx` (with its records when the
    /// engine knows them). The TLSA state comes from the engine's cache, as the check of the
    /// same MX left it (looked up if it is not there).
    pub fn record_session(
        &self,
        domain: &str,
        mx: &str,
        result: Option<Reason>,
        details: &SessionDetails,
    ) -> Result<(), InputError> {
        let Some(domain) = parse_policy_domain(domain)? else { return Ok(()) };
        let now = self.clock.now();
        let resolution = self.resolve_at(&domain, now, false);
        let mx = mx::parse_host(mx).ok();
        let reason = result.unwrap_or(Reason::None);
        let dane_result =
            matches!(reason, Reason::TlsaInvalid | Reason::DnssecInvalid | Reason::DaneRequired);
        let state = mx.as_ref().and_then(|host| self.tlsa_state(host));
        let policy = match &state {
            Some(lookup) if dane_result || matches!(&**lookup, TlsaLookup::Secure { .. }) => {
                Some(TlsaPolicy::Known(lookup))
            }
            _ if dane_result => Some(TlsaPolicy::Unknown),
            _ => None,
        };
        let dane = policy.map(|policy| DaneSession { policy, reason });
        let session = Session {
            domain: &domain,
            policy: resolution.policy.as_ref(),
            sts_reason: reason,
            mx: mx.as_ref(),
            dane,
            details,
        };
        self.count_session(now, session);
        Ok(())
    }

    /// Counts sessions an MTA judged and reported itself, already keyed by policy domain and
    /// policy (e.g. Postfix 3.10's TLSRPT datagrams, [`crate::tlsrpt::collect`]), on today's UTC
    /// day; they are flushed to the store with the engine's own counts.
    pub fn record_reported(&self, counts: &DayCounts) {
        if self.tally.add_reported(self.clock.now(), counts) {
            self.flush_reports();
        }
    }

    /// Writes pending TLSRPT counts to the persistent store (or keeps them in memory without one).
    /// Done by itself every few hundred sessions or seconds, and when the engine is dropped.
    /// The engine's counters (`crate::metrics`) are flushed with them.
    pub fn flush_reports(&self) {
        let Some(store) = self.counts.as_ref().filter(|_| self.store_writable) else {
            self.flush_metrics();
            let days = self.tally.take(self.clock.now());
            if !days.is_empty() {
                self.tally.keep(days);
            }
            return;
        };
        // The counters and every day's counts in one write (one SQLite transaction): a process
        // per delivery pays for one commit at exit, not two.
        let now = self.clock.now();
        let deltas = self.metrics.take_deltas(now);
        let days = self.tally.take(now);
        if deltas.is_empty() && days.is_empty() {
            return;
        }
        let batch: Vec<(Day, &DayCounts)> = days.iter().map(|(day, counts)| (*day, counts)).collect();
        if let Err(e) = store.add_all(&deltas, &batch) {
            self.metrics.untake(&deltas);
            self.report_store_error(&e);
            self.tally.keep(days);
        }
    }

    /// The TLSRPT counts of `day`: the persistent store's, plus what this engine holds in memory.
    pub fn report_counts(&self, day: Day) -> DayCounts {
        self.flush_reports();
        let mut counts = self.tally.kept(day);
        if let Some(store) = &self.counts {
            match store.report_counts(day) {
                Ok(stored) => counts.merge(&stored),
                Err(e) => self.report_store_error(&e),
            }
        }
        counts
    }
}

/// A failure key for a session with `mx`, with the addresses the MTA gave.
fn failure_key(result_type: ResultType, mx: Option<&Domain>, details: &SessionDetails) -> FailureKey {
    let mut key = FailureKey::new(result_type, mx.cloned());
    key.sending_mta_ip = details.sending_ip;
    key.receiving_ip = details.receiving_ip;
    key
}

/// What a session MTA-STS judged `reason` is counted as under an `enforce` or `testing` policy:
/// `Some(None)` a success, `Some(Some(key))` a failure, `None` nothing (APPLY-10; DANE's results
/// are reported under DANE's policy, not MTA-STS's).
fn sts_failure(reason: Reason, mx: Option<&Domain>, details: &SessionDetails) -> Option<Option<FailureKey>> {
    match reason {
        Reason::None => Some(None),
        Reason::TlsaInvalid | Reason::DnssecInvalid | Reason::DaneRequired => None,
        reason => {
            let result_type = ResultType::from_reason(reason)?;
            let mut key = failure_key(result_type, mx, details);
            key.failure_reason_code = details.failure_reason_code.clone().or_else(|| {
                (reason == Reason::MxMismatch)
                    .then(|| "mx-mismatch: the MX host matches no policy pattern".into())
            });
            Some(Some(key))
        }
    }
}

/// What a session DANE judged `reason` is counted as under the `tlsa` policy of the MX host
/// `host`, the TLSA base domain and so the `policy-domain` of RFC 8460 §3: `Some(None)` a
/// success, `Some(Some(key))` a failure, `None` nothing.
fn tlsa_failure(reason: Reason, host: &Domain, details: &SessionDetails) -> Option<Option<FailureKey>> {
    let result_type = match reason {
        Reason::None => return Some(None),
        // RFC 8460's `dane-required` means "the sender requires DANE and the MX has no secure
        // TLSA records"; a DANE MX that did not negotiate TLS is `starttls-not-supported`.
        Reason::DaneRequired => ResultType::StarttlsNotSupported,
        Reason::TlsaInvalid
        | Reason::DnssecInvalid
        | Reason::StarttlsNotSupported
        | Reason::CertificateHostMismatch
        | Reason::CertificateExpired
        | Reason::CertificateNotTrusted
        | Reason::ValidationFailure => ResultType::from_reason(reason)?,
        // MTA-STS's own failures, and a held message: not DANE's.
        _ => return None,
    };
    let mut key = failure_key(result_type, Some(host), details);
    key.failure_reason_code = details.failure_reason_code.clone().or_else(|| {
        (reason == Reason::DaneRequired).then(|| {
            "dane: the MX has DNSSEC-secure TLSA records, so TLS is mandatory; none was negotiated".into()
        })
    });
    Some(Some(key))
}
