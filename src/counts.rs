//! What TLSRPT counts and keeps (RFC 8460 §4): the day's session counts per policy domain and
//! per policy, the keys they are counted under, and where the delivery of a built report stands.
//!
//! Plain values, below the stores that keep them ([`crate::cache::CountStore`],
//! [`crate::cache::OutboxStore`]), the engine that counts sessions into them and the report
//! pipeline ([`crate::tlsrpt`]) that builds reports from them. `crate::tlsrpt::report` and
//! `crate::tlsrpt::deliver` re-export them under their old paths.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::cert::rfc3339;
use crate::domain::Domain;
use crate::mx::MxPattern;
use crate::policy::Policy;
use crate::verdict::Reason;

/// RFC 8460 result types (§4.3; IANA "STARTTLS Validation Result Types").
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum ResultType {
    /// `starttls-not-supported`.
    StarttlsNotSupported,
    /// `certificate-host-mismatch`.
    CertificateHostMismatch,
    /// `certificate-expired`.
    CertificateExpired,
    /// `certificate-not-trusted`.
    CertificateNotTrusted,
    /// `validation-failure`.
    ValidationFailure,
    /// `tlsa-invalid`.
    TlsaInvalid,
    /// `dnssec-invalid`.
    DnssecInvalid,
    /// `dane-required`.
    DaneRequired,
    /// `sts-policy-fetch-error`.
    StsPolicyFetchError,
    /// `sts-policy-invalid`.
    StsPolicyInvalid,
    /// `sts-webpki-invalid`.
    StsWebpkiInvalid,
}

impl ResultType {
    const ALL: [ResultType; 11] = [
        Self::StarttlsNotSupported,
        Self::CertificateHostMismatch,
        Self::CertificateExpired,
        Self::CertificateNotTrusted,
        Self::ValidationFailure,
        Self::TlsaInvalid,
        Self::DnssecInvalid,
        Self::DaneRequired,
        Self::StsPolicyFetchError,
        Self::StsPolicyInvalid,
        Self::StsWebpkiInvalid,
    ];

    /// The name in the report.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::StarttlsNotSupported => "starttls-not-supported",
            Self::CertificateHostMismatch => "certificate-host-mismatch",
            Self::CertificateExpired => "certificate-expired",
            Self::CertificateNotTrusted => "certificate-not-trusted",
            Self::ValidationFailure => "validation-failure",
            Self::TlsaInvalid => "tlsa-invalid",
            Self::DnssecInvalid => "dnssec-invalid",
            Self::DaneRequired => "dane-required",
            Self::StsPolicyFetchError => "sts-policy-fetch-error",
            Self::StsPolicyInvalid => "sts-policy-invalid",
            Self::StsWebpkiInvalid => "sts-webpki-invalid",
        }
    }

    /// The result type with this name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == name)
    }

    /// The result type of an engine [`Reason`] ([`Reason::tlsrpt_result_type`]); `None` for
    /// [`Reason::None`].
    pub fn from_reason(reason: Reason) -> Option<Self> {
        reason.tlsrpt_result_type().and_then(Self::parse)
    }
}

impl fmt::Display for ResultType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kind of policy a report section is about (`policy-type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum PolicyType {
    /// An MTA-STS policy applied.
    Sts,
    /// DANE TLSA records applied.
    Tlsa,
    /// Neither applied.
    NoPolicyFound,
}

impl PolicyType {
    /// The name in the report.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sts => "sts",
            Self::Tlsa => "tlsa",
            Self::NoPolicyFound => "no-policy-found",
        }
    }
}

/// The policy a session was judged by: one `policies[]` entry of the report per distinct key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "PolicyKeyRepr", into = "PolicyKeyRepr")]
pub struct PolicyKey {
    policy_type: PolicyType,
    strings: Vec<String>,
    /// The `mx` patterns in display form (A-labels); made from [`MxPattern`]s only.
    mx: Vec<String>,
    /// The `policy-domain` when an MTA reported one that differs from the domain the policy is
    /// counted under (docs/tlsrpt-collect.md, COLL-7); `None`: that domain.
    domain: Option<Domain>,
}

impl PolicyKey {
    /// An MTA-STS policy: its lines (`policy-string`) and its `mx` patterns (`mx-host`).
    pub fn sts(lines: Vec<String>, mx: &[MxPattern]) -> Self {
        Self {
            policy_type: PolicyType::Sts,
            strings: lines,
            mx: mx.iter().map(ToString::to_string).collect(),
            domain: None,
        }
    }

    /// An MTA-STS policy from its body as fetched and the parsed policy.
    pub fn sts_from_body(body: &[u8], policy: &Policy) -> Self {
        Self::sts(policy_lines(body), policy.mx())
    }

    /// DANE: one `"usage selector matching data"` string per TLSA record.
    pub fn tlsa(records: Vec<String>) -> Self {
        Self { policy_type: PolicyType::Tlsa, strings: records, mx: Vec::new(), domain: None }
    }

    /// No policy applied (`no-policy-found`).
    pub fn no_policy_found() -> Self {
        Self { policy_type: PolicyType::NoPolicyFound, strings: Vec::new(), mx: Vec::new(), domain: None }
    }

    /// A policy as an MTA reported it (docs/tlsrpt-collect.md): its type, `policy-string` and
    /// `mx-host` as given, and its `policy-domain` when that differs from the domain it is counted
    /// under.
    pub fn reported(
        policy_type: PolicyType,
        strings: Vec<String>,
        mx: &[MxPattern],
        domain: Option<Domain>,
    ) -> Self {
        Self { policy_type, strings, mx: mx.iter().map(ToString::to_string).collect(), domain }
    }

    /// The policy type.
    pub fn policy_type(&self) -> PolicyType {
        self.policy_type
    }

    /// The `policy-string` lines.
    pub fn strings(&self) -> &[String] {
        &self.strings
    }

    /// The `mx-host` patterns.
    pub fn mx_hosts(&self) -> &[String] {
        &self.mx
    }

    /// The `policy-domain`, when it is not the domain the policy is counted under (only for
    /// policies an MTA reported, COLL-7).
    pub fn policy_domain(&self) -> Option<&Domain> {
        self.domain.as_ref()
    }
}

/// The lines of a policy body for `policy-string`: a leading byte-order mark, line ends (LF or
/// CRLF), surrounding spaces and tabs and blank lines removed.
pub fn policy_lines(body: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(body);
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    text.split('\n')
        .map(|l| l.trim_matches([' ', '\t', '\r']))
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

#[derive(Serialize, Deserialize)]
struct PolicyKeyRepr {
    #[serde(rename = "type")]
    policy_type: PolicyType,
    #[serde(default)]
    strings: Vec<String>,
    #[serde(default)]
    mx: Vec<String>,
    /// Absent in rows written before it existed, and whenever it is `None`: older rows read the
    /// same, and a key without it is stored exactly as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    domain: Option<String>,
}

impl TryFrom<PolicyKeyRepr> for PolicyKey {
    type Error = String;
    fn try_from(r: PolicyKeyRepr) -> Result<Self, String> {
        let mx =
            r.mx.iter()
                .map(|m| MxPattern::parse(m).map(|p| p.to_string()).map_err(|e| format!("mx `{m}`: {e}")))
                .collect::<Result<_, _>>()?;
        let domain = r
            .domain
            .map(|d| Domain::parse(&d).map_err(|e| format!("policy domain `{d}`: {e}")))
            .transpose()?;
        Ok(Self { policy_type: r.policy_type, strings: r.strings, mx, domain })
    }
}

impl From<PolicyKey> for PolicyKeyRepr {
    fn from(k: PolicyKey) -> Self {
        Self {
            policy_type: k.policy_type,
            strings: k.strings,
            mx: k.mx,
            domain: k.domain.map(|d| d.to_string()),
        }
    }
}

/// What a failed session is counted under: one `failure-details` entry per distinct key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "FailureKeyRepr", into = "FailureKeyRepr")]
#[non_exhaustive]
pub struct FailureKey {
    /// `result-type`.
    pub result_type: ResultType,
    /// `receiving-mx-hostname`: the MX the session was with (absent for failures before any MX,
    /// such as a policy fetch error).
    pub receiving_mx_hostname: Option<Domain>,
    /// `sending-mta-ip`: our address for the session.
    pub sending_mta_ip: Option<IpAddr>,
    /// `receiving-ip`: the MX's address.
    pub receiving_ip: Option<IpAddr>,
    /// `receiving-mx-helo`: the name in the MX's greeting.
    pub receiving_mx_helo: Option<String>,
    /// `failure-reason-code`: free text, e.g. a TLS library's error (SHOULD for
    /// `certificate-not-trusted` and `validation-failure`).
    pub failure_reason_code: Option<String>,
    /// `additional-information`: a URI with more details.
    pub additional_information: Option<String>,
}

impl FailureKey {
    /// A key with this result type and MX, and nothing else yet.
    pub fn new(result_type: ResultType, receiving_mx_hostname: Option<Domain>) -> Self {
        Self {
            result_type,
            receiving_mx_hostname,
            sending_mta_ip: None,
            receiving_ip: None,
            receiving_mx_helo: None,
            failure_reason_code: None,
            additional_information: None,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct FailureKeyRepr {
    result_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    receiving_mx_hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sending_mta_ip: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    receiving_ip: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    receiving_mx_helo: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    failure_reason_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    additional_information: Option<String>,
}

impl TryFrom<FailureKeyRepr> for FailureKey {
    type Error = String;
    fn try_from(r: FailureKeyRepr) -> Result<Self, String> {
        let result_type = ResultType::parse(&r.result_type)
            .ok_or_else(|| format!("unknown result type `{}`", r.result_type))?;
        let receiving_mx_hostname = r
            .receiving_mx_hostname
            .map(|h| Domain::parse(&h).map_err(|e| format!("receiving MX `{h}`: {e}")))
            .transpose()?;
        Ok(Self {
            result_type,
            receiving_mx_hostname,
            sending_mta_ip: r.sending_mta_ip,
            receiving_ip: r.receiving_ip,
            receiving_mx_helo: r.receiving_mx_helo,
            failure_reason_code: r.failure_reason_code,
            additional_information: r.additional_information,
        })
    }
}

impl From<FailureKey> for FailureKeyRepr {
    fn from(k: FailureKey) -> Self {
        Self {
            result_type: k.result_type.as_str().to_owned(),
            receiving_mx_hostname: k.receiving_mx_hostname.map(|d| d.to_string()),
            sending_mta_ip: k.sending_mta_ip,
            receiving_ip: k.receiving_ip,
            receiving_mx_helo: k.receiving_mx_helo,
            failure_reason_code: k.failure_reason_code,
            additional_information: k.additional_information,
        }
    }
}

/// The counts of one policy on one day.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyCounts {
    /// Sessions that negotiated TLS and passed the policy.
    pub successes: u64,
    /// Failed sessions, by what they failed with.
    pub failures: BTreeMap<FailureKey, u64>,
}

impl PolicyCounts {
    /// All failed sessions (`total-failure-session-count`).
    pub fn total_failures(&self) -> u64 {
        self.failures.values().fold(0, |a, &n| a.saturating_add(n))
    }
}

/// Days of TLSRPT counts kept: a report can be built (`mtasts report build --date`) up to this
/// many days late; older counts are pruned from the store.
pub const REPORT_WINDOW_DAYS: u64 = 14;

/// One UTC day's session counts, per policy domain and per policy. Serialisable (JSON), for the
/// caller's store; counts saturate rather than wrap.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<DomainEntry>", into = "Vec<DomainEntry>")]
pub struct DayCounts {
    domains: BTreeMap<Domain, BTreeMap<PolicyKey, PolicyCounts>>,
}

impl DayCounts {
    /// No counts.
    pub fn new() -> Self {
        Self::default()
    }

    fn entry(&mut self, domain: &Domain, policy: &PolicyKey) -> &mut PolicyCounts {
        self.domains.entry(domain.clone()).or_default().entry(policy.clone()).or_default()
    }

    /// Counts `sessions` successful sessions.
    pub fn add_success(&mut self, domain: &Domain, policy: &PolicyKey, sessions: u64) {
        let counts = self.entry(domain, policy);
        counts.successes = counts.successes.saturating_add(sessions);
    }

    /// Counts `sessions` failed sessions under `failure`.
    pub fn add_failure(&mut self, domain: &Domain, policy: &PolicyKey, failure: FailureKey, sessions: u64) {
        let count = self.entry(domain, policy).failures.entry(failure).or_default();
        *count = count.saturating_add(sessions);
    }

    /// Adds every count of `other` (e.g. from another MTA host).
    pub fn merge(&mut self, other: &DayCounts) {
        for (domain, policies) in &other.domains {
            for (policy, counts) in policies {
                self.add_success(domain, policy, counts.successes);
                for (failure, &n) in &counts.failures {
                    self.add_failure(domain, policy, failure.clone(), n);
                }
            }
        }
    }

    /// True when nothing was counted.
    pub fn is_empty(&self) -> bool {
        self.domains.is_empty()
    }

    /// The number of counters held: one per (domain, policy) for successes, one per failure kind.
    pub fn counters(&self) -> usize {
        self.domains.values().flat_map(|p| p.values()).map(|c| 1 + c.failures.len()).sum()
    }

    /// The policy domains with counts, in order.
    pub fn domains(&self) -> impl Iterator<Item = &Domain> {
        self.domains.keys()
    }

    /// The policies of one domain and their counts, in order.
    pub fn policies(&self, domain: &Domain) -> impl Iterator<Item = (&PolicyKey, &PolicyCounts)> {
        self.domains.get(domain).into_iter().flatten()
    }
}

#[derive(Serialize, Deserialize)]
struct DomainEntry {
    domain: String,
    policies: Vec<PolicyEntry>,
}

#[derive(Serialize, Deserialize)]
struct PolicyEntry {
    policy: PolicyKey,
    successes: u64,
    #[serde(default)]
    failures: Vec<FailureEntry>,
}

#[derive(Serialize, Deserialize)]
struct FailureEntry {
    failure: FailureKey,
    sessions: u64,
}

impl TryFrom<Vec<DomainEntry>> for DayCounts {
    type Error = String;
    fn try_from(entries: Vec<DomainEntry>) -> Result<Self, String> {
        let mut counts = DayCounts::new();
        for entry in entries {
            let domain =
                Domain::parse(&entry.domain).map_err(|e| format!("domain `{}`: {e}", entry.domain))?;
            for p in entry.policies {
                counts.add_success(&domain, &p.policy, p.successes);
                for f in p.failures {
                    counts.add_failure(&domain, &p.policy, f.failure, f.sessions);
                }
            }
        }
        Ok(counts)
    }
}

impl From<DayCounts> for Vec<DomainEntry> {
    fn from(counts: DayCounts) -> Self {
        counts
            .domains
            .into_iter()
            .map(|(domain, policies)| DomainEntry {
                domain: domain.to_string(),
                policies: policies
                    .into_iter()
                    .map(|(policy, c)| PolicyEntry {
                        policy,
                        successes: c.successes,
                        failures: c
                            .failures
                            .into_iter()
                            .map(|(failure, sessions)| FailureEntry { failure, sessions })
                            .collect(),
                    })
                    .collect(),
            })
            .collect()
    }
}

/// A UTC day, the period of one report (§4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Day(u64);

impl Day {
    /// The day that contains this instant (Unix seconds).
    pub fn from_unix(secs: u64) -> Self {
        Self(secs / 86_400)
    }

    /// The day this many days after 1970-01-01.
    pub fn from_days(days: u64) -> Self {
        Self(days)
    }

    /// A `YYYY-MM-DD` day from 1970 to 9999, written exactly so; `None` for anything else
    /// (`2026-02-30`, `2026-1-01`, `yesterday`).
    pub fn parse(s: &str) -> Option<Self> {
        crate::calendar::parse_date(s).map(Self)
    }

    /// Days since 1970-01-01.
    pub fn days(self) -> u64 {
        self.0
    }

    /// The day before (the one to report on, when called with today).
    pub fn previous(self) -> Self {
        Self(self.0.saturating_sub(1))
    }

    /// Unix seconds of 00:00:00 UTC.
    pub fn start(self) -> u64 {
        self.0 * 86_400
    }

    /// Unix seconds of 23:59:59 UTC, the last second of the day (`end-datetime`).
    pub fn end(self) -> u64 {
        self.start() + 86_399
    }

    /// `YYYY-MM-DDT00:00:00Z`.
    pub fn start_datetime(self) -> String {
        rfc3339(self.start())
    }

    /// `YYYY-MM-DDT23:59:59Z`.
    pub fn end_datetime(self) -> String {
        rfc3339(self.end())
    }
}

impl fmt::Display for Day {
    /// `YYYY-MM-DD`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.start_datetime()[..10])
    }
}

/// When to try again after a failure (RPT-14): `first_delay`, doubling with each failure, at most
/// `max_delay`; no attempt later than `give_up_after` seconds after the first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetrySchedule {
    /// Delay after the first failure, in seconds. Default 300 (5 min).
    pub first_delay: u64,
    /// Longest delay between attempts, in seconds. Default 14400 (4 h).
    pub max_delay: u64,
    /// Seconds after the first attempt at which the last one is made. Default 86400 (24 h).
    pub give_up_after: u64,
}

impl Default for RetrySchedule {
    fn default() -> Self {
        Self { first_delay: 300, max_delay: 4 * 3600, give_up_after: 24 * 3600 }
    }
}

impl RetrySchedule {
    /// The delay after the `failures`-th failed attempt (1-based).
    pub fn delay(&self, failures: u32) -> u64 {
        let doublings = failures.saturating_sub(1).min(63);
        self.first_delay.saturating_mul(1u64 << doublings).min(self.max_delay)
    }
}

/// Where the delivery of one report stands. Plain data: keep it with the pending report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryState {
    /// Attempts made so far.
    pub attempts: u32,
    /// When the first attempt was made (Unix seconds).
    pub first_attempt_at: Option<u64>,
    /// When the next attempt is due (Unix seconds); meaningless once `done`.
    pub next_attempt_at: u64,
    /// No more attempts: delivered, or given up.
    pub done: bool,
    /// Delivered to at least one destination.
    #[serde(default)]
    pub delivered: bool,
    /// Why the last attempt failed; `None` after a success.
    pub last_error: Option<String>,
    /// Destinations that refused this report for good (HTTP 4xx, a mail command's "no such
    /// user/host" exit), by URI: not tried again for this report, and counted towards
    /// suppressing the destination (RPT-24).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub refused: BTreeMap<String, Refusal>,
    /// Destinations left out of this report because they were suppressed (RPT-24).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub suppressed: Vec<String>,
}

/// A destination's final refusal of one report (RPT-24).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// When (Unix seconds).
    pub at: u64,
    /// What it said.
    pub error: String,
}

impl DeliveryState {
    /// A report to send from `not_before` on (e.g. the end of the day plus a random delay).
    pub fn new(not_before: u64) -> Self {
        Self {
            attempts: 0,
            first_attempt_at: None,
            next_attempt_at: not_before,
            done: false,
            delivered: false,
            last_error: None,
            refused: BTreeMap::new(),
            suppressed: Vec::new(),
        }
    }

    /// True when an attempt should be made now.
    pub fn is_due(&self, now: u64) -> bool {
        !self.done && now >= self.next_attempt_at
    }

    /// Records an attempt made at `now` that succeeded (`Ok`) or failed with this error.
    pub fn record_result(&mut self, now: u64, result: Result<(), String>, schedule: &RetrySchedule) {
        self.attempts = self.attempts.saturating_add(1);
        let first = *self.first_attempt_at.get_or_insert(now);
        match result {
            Ok(()) => {
                self.done = true;
                self.delivered = true;
                self.last_error = None;
            }
            Err(e) => {
                self.last_error = Some(e);
                let deadline = first.saturating_add(schedule.give_up_after);
                if now >= deadline {
                    self.done = true;
                } else {
                    self.next_attempt_at = now.saturating_add(schedule.delay(self.attempts)).min(deadline);
                }
            }
        }
    }
}

impl fmt::Display for DeliveryState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.done, self.delivered, &self.last_error) {
            (true, true, _) => write!(f, "delivered after {} attempt(s)", self.attempts),
            (true, false, e) => write!(
                f,
                "given up after {} attempt(s): {}",
                self.attempts,
                e.as_deref().unwrap_or("no destination accepted the report")
            ),
            (false, _, None) => write!(f, "due at {}", self.next_attempt_at),
            (false, _, Some(e)) => {
                write!(f, "{} failed attempt(s), next at {}: {e}", self.attempts, self.next_attempt_at)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Domain {
        Domain::parse(s).unwrap()
    }

    /// 2016-04-01, the day of RFC 8460 Appendix B.
    const APRIL_1_2016: u64 = 1_459_468_800;

    #[test]
    fn rfc_example_day_and_policy() {
        // RFC 8460 Appendix B: the date range and the policy of the example report.
        let day = Day::from_unix(APRIL_1_2016 + 3600);
        assert_eq!(day.start_datetime(), "2016-04-01T00:00:00Z");
        assert_eq!(day.end_datetime(), "2016-04-01T23:59:59Z");
        assert_eq!(day.to_string(), "2016-04-01");
        let body = b"version: STSv1\r\nmode: testing\r\nmx: *.mail.company-y.example\r\nmax_age: 86400\r\n";
        let policy = Policy::parse(body).unwrap();
        let key = PolicyKey::sts_from_body(body, &policy);
        assert_eq!(
            key.strings(),
            ["version: STSv1", "mode: testing", "mx: *.mail.company-y.example", "max_age: 86400"]
        );
        assert_eq!(key.mx_hosts(), ["*.mail.company-y.example"]);
    }

    #[test]
    fn result_types_follow_the_engine() {
        assert_eq!(ResultType::from_reason(Reason::MxMismatch), Some(ResultType::ValidationFailure));
        assert_eq!(ResultType::from_reason(Reason::CertificateExpired), Some(ResultType::CertificateExpired));
        assert_eq!(
            ResultType::from_reason(Reason::StsPolicyFetchError),
            Some(ResultType::StsPolicyFetchError)
        );
        assert_eq!(ResultType::from_reason(Reason::None), None);
        for r in ResultType::ALL {
            assert_eq!(ResultType::parse(r.as_str()), Some(r));
        }
    }

    #[test]
    fn counts_merge_and_round_trip() {
        let dom = d("example.com");
        let sts =
            PolicyKey::sts(vec!["version: STSv1".into()], &[MxPattern::parse("mx.example.com").unwrap()]);
        let mut failure = FailureKey::new(ResultType::CertificateExpired, Some(d("mx.example.com")));
        failure.receiving_ip = Some("192.0.2.1".parse().unwrap());
        let mut a = DayCounts::new();
        a.add_success(&dom, &sts, 3);
        a.add_failure(&dom, &sts, failure.clone(), 2);
        let mut b = a.clone();
        b.add_success(&dom, &PolicyKey::no_policy_found(), 1);
        a.merge(&b);
        let (_, c) = a.policies(&dom).find(|(k, _)| k.policy_type() == PolicyType::Sts).unwrap();
        assert_eq!((c.successes, c.total_failures()), (6, 4));
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<DayCounts>(&json).unwrap(), a);
        assert!(serde_json::from_str::<DayCounts>(r#"[{"domain":"-bad-","policies":[]}]"#).is_err());
    }

    #[test]
    fn policy_keys_without_a_domain_are_stored_as_before() {
        // A row written before `domain` existed reads back, and writes back identically.
        let old = r#"{"type":"sts","strings":["version: STSv1"],"mx":["mx.example.com"]}"#;
        let key: PolicyKey = serde_json::from_str(old).unwrap();
        assert_eq!(key.policy_domain(), None);
        assert_eq!(serde_json::to_string(&key).unwrap(), old);
        let reported =
            PolicyKey::reported(PolicyType::Tlsa, vec!["3 1 1 0aff".into()], &[], Some(d("MX.example.com")));
        let json = serde_json::to_string(&reported).unwrap();
        assert!(json.contains(r#""domain":"mx.example.com""#), "{json}");
        assert_eq!(serde_json::from_str::<PolicyKey>(&json).unwrap(), reported);
        assert!(serde_json::from_str::<PolicyKey>(r#"{"type":"tlsa","domain":"-x-"}"#).is_err());
    }

    #[test]
    fn backoff() {
        let s = RetrySchedule::default();
        let delays: Vec<u64> = (1..=8).map(|n| s.delay(n)).collect();
        assert_eq!(delays, [300, 600, 1200, 2400, 4800, 9600, 14400, 14400]);
        assert_eq!(s.delay(200), 14400);
    }

    #[test]
    fn success_ends_it() {
        let mut st = DeliveryState::new(100);
        assert!(!st.is_due(99) && st.is_due(100));
        st.record_result(100, Err("HTTP 503".into()), &RetrySchedule::default());
        assert_eq!((st.attempts, st.next_attempt_at, st.done), (1, 400, false));
        st.record_result(400, Ok(()), &RetrySchedule::default());
        assert!(st.done && st.delivered && st.last_error.is_none() && !st.is_due(10_000));
        let json = serde_json::to_string(&st).unwrap();
        assert_eq!(serde_json::from_str::<DeliveryState>(&json).unwrap(), st);
    }
}
