//! TLSRPT accounting (RFC 8460): the sessions the engine judged, and the ones the MTA reports
//! itself, counted per day in a [`Tally`] and flushed to the store's [`CountStore`].
//!
//! [`CountStore`]: crate::cache::CountStore

use super::{Engine, InputError, Outcome, parse_policy_domain};
use crate::counts::{Day, DayCounts, FailureKey, ResultType};
use crate::domain::Domain;
use crate::mx;
use crate::policy::Mode;
use crate::verdict::{Reason, Verdict};

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

impl Engine {
    /// Counts a session for TLSRPT (RFC 8460): sessions under an `enforce` or `testing` policy,
    /// successful or not. Nothing is counted without a policy or under `mode: none` (APPLY-10).
    pub(super) fn count_session(
        &self,
        now: u64,
        domain: &Domain,
        outcome: &Outcome,
        mx: Option<&Domain>,
        details: &SessionDetails,
    ) {
        let Some(policy) = outcome.policy.as_ref().filter(|p| p.mode() != Mode::None) else { return };
        let failure = match outcome.reason {
            Reason::None => None,
            // DANE outcomes are reported under DANE's policy, not MTA-STS's.
            Reason::TlsaInvalid | Reason::DnssecInvalid | Reason::DaneRequired => return,
            reason => {
                let Some(result_type) = ResultType::from_reason(reason) else { return };
                let mut key = FailureKey::new(result_type, mx.cloned());
                key.sending_mta_ip = details.sending_ip;
                key.receiving_ip = details.receiving_ip;
                key.failure_reason_code = details.failure_reason_code.clone().or_else(|| {
                    (reason == Reason::MxMismatch)
                        .then(|| "mx-mismatch: the MX host matches no policy pattern".into())
                });
                Some(key)
            }
        };
        if self.tally.add(now, domain, Some(policy), failure) {
            self.flush_reports();
        }
    }

    /// Records the outcome of a session the MTA judged itself (for TLSRPT): `result` is `None`
    /// for a session that negotiated TLS and satisfied the policy, or the RFC 8460 result type
    /// (`starttls-not-supported`, `certificate-not-trusted`, ...). Use it for sessions that did
    /// not go through [`Engine::check`] (which counts its own), e.g. a TLS handshake that failed
    /// before any certificate was seen. Counted only under an `enforce` or `testing` policy.
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
        let outcome = Outcome {
            verdict: Verdict::Pass,
            reason,
            policy: resolution.policy,
            mx_matches: false,
            detail: None,
            dane: None,
            overridden: resolution.overridden,
        };
        self.count_session(now, &domain, &outcome, mx.as_ref(), details);
        Ok(())
    }

    /// Writes pending TLSRPT counts to the persistent store (or keeps them in memory without one).
    /// Done by itself every few hundred sessions or seconds, and when the engine is dropped.
    pub fn flush_reports(&self) {
        let days = self.tally.take(self.clock.now());
        if days.is_empty() {
            return;
        }
        match self.counts.as_ref().filter(|_| self.store_writable) {
            Some(store) => {
                for (day, counts) in days {
                    if let Err(e) = store.add_report_counts(day, &counts) {
                        self.report_store_error(&e);
                        self.tally.keep([(day, counts)].into());
                    }
                }
            }
            None => self.tally.keep(days),
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
