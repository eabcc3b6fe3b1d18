//! The aggregate report: the day's counts in, RFC 8460 JSON, gzip and file name out (RFC 8460 §4,
//! §5.1, §5.2).
//!
//! ```text
//! { "organization-name": str, "date-range": { "start-datetime": str, "end-datetime": str },
//!   "contact-info": str, "report-id": str,
//!   "policies": [ { "policy": { "policy-type": str, "policy-string": [str], "policy-domain": str,
//!                               "mx-host": [str] },
//!                   "summary": { "total-successful-session-count": int,
//!                                "total-failure-session-count": int },
//!                   "failure-details": [ { "result-type": str, "sending-mta-ip": str,
//!                                          "receiving-mx-hostname": str, "receiving-mx-helo": str,
//!                                          "receiving-ip": str, "failed-session-count": int,
//!                                          "additional-information": str,
//!                                          "failure-reason-code": str } ] } ] }
//! ```
//!
//! The caller counts sessions into a [`DayCounts`] (per policy domain, per policy, successes and
//! failures by [`FailureKey`]); at the end of the UTC day, [`build_report`] makes one [`Report`] per
//! policy domain, and [`Report::to_json`], [`Report::to_gzip`] and [`Report::file_name`] give what
//! is delivered. The output is I-JSON (RFC 7493): UTF-8, no duplicate names, integers of at most
//! 2^53 - 1 (larger counts are capped there).
//!
//! Decisions on points the RFC leaves open:
//!
//! * **`mx-host` is a JSON array of strings**, one per `mx` pattern of the policy, in the policy's
//!   order. RFC 8460 §4.4 says so in words ("provided as a JSON array of strings"); its figure shows
//!   only the placeholder `mx-host-pattern`, and its Appendix B example has a single string. The
//!   prose is the normative text, and large senders send an array too. This supersedes the
//!   checklist's §14a #7 wording ("a string per the RFC schema"), which was based on the example.
//!   `mx-host` is omitted for `no-policy-found`, as is `policy-string`.
//! * **`policy-string`** for `sts` holds the policy body's lines, one string each, with line ends,
//!   surrounding whitespace and blank lines removed ([`policy_lines`]).
//! * **The date range** is one UTC day: `start-datetime` `YYYY-MM-DDT00:00:00Z`, `end-datetime`
//!   `YYYY-MM-DDT23:59:59Z`, as in RFC 8460 Appendix B and in Google's and Microsoft's reports.
//!   The file name's end timestamp is the same instant (start + 86399), so the two agree (RPT-15).
//! * **`report-id`** is shaped like a Message-ID's content (`id-left@id-right`, dot-atoms), so that
//!   it can stand in the Subject (RPT-11) and as the Message-ID. [`ReportId::new`] makes
//!   `<yyyymmdd>.<nonce as 16 hex digits>.<policy-domain>@<submitter>`; the caller supplies the
//!   nonce (random, or a sequence from its store) and keeps the id with the pending report, so a
//!   retry after a restart sends the same id.
//! * **The file name's unique-id** (RPT-8, `1*(ALPHA / DIGIT)`) is the letters and digits of the
//!   report-id's left part, at most 32 of them: for our ids, the date, the nonce and the start of
//!   the policy domain.
//! * **`failure-details`** is omitted when there is no failure (as Google does), and
//!   `total-failure-session-count` is the sum of the failure counts: the recorder counts each failed
//!   session once, under the one result type the engine gave it.
//! * `failure-reason-code` can be removed before sending ([`Report::redact_failure_reason_codes`],
//!   RPT-17).

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::net::IpAddr;

use flate2::Compression;
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};

use crate::calendar::rfc3339;
use crate::domain::Domain;
use crate::mx::MxPattern;
use crate::policy::Policy;
use crate::tlsrpt::mail::EmailAddress;
use crate::verdict::Reason;

/// Largest integer I-JSON guarantees to carry exactly (RFC 7493 §2.2).
const IJSON_MAX: u64 = (1 << 53) - 1;

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
}

impl PolicyKey {
    /// An MTA-STS policy: its lines (`policy-string`) and its `mx` patterns (`mx-host`).
    pub fn sts(lines: Vec<String>, mx: &[MxPattern]) -> Self {
        Self {
            policy_type: PolicyType::Sts,
            strings: lines,
            mx: mx.iter().map(ToString::to_string).collect(),
        }
    }

    /// An MTA-STS policy from its body as fetched and the parsed policy.
    pub fn sts_from_body(body: &[u8], policy: &Policy) -> Self {
        Self::sts(policy_lines(body), policy.mx())
    }

    /// DANE: one `"usage selector matching data"` string per TLSA record.
    pub fn tlsa(records: Vec<String>) -> Self {
        Self { policy_type: PolicyType::Tlsa, strings: records, mx: Vec::new() }
    }

    /// No policy applied (`no-policy-found`).
    pub fn no_policy_found() -> Self {
        Self { policy_type: PolicyType::NoPolicyFound, strings: Vec::new(), mx: Vec::new() }
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
}

impl TryFrom<PolicyKeyRepr> for PolicyKey {
    type Error = String;
    fn try_from(r: PolicyKeyRepr) -> Result<Self, String> {
        let mx =
            r.mx.iter()
                .map(|m| MxPattern::parse(m).map(|p| p.to_string()).map_err(|e| format!("mx `{m}`: {e}")))
                .collect::<Result<_, _>>()?;
        Ok(Self { policy_type: r.policy_type, strings: r.strings, mx })
    }
}

impl From<PolicyKey> for PolicyKeyRepr {
    fn from(k: PolicyKey) -> Self {
        Self { policy_type: k.policy_type, strings: k.strings, mx: k.mx }
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

/// A report's unique id, shaped `id-left@id-right` like the content of a Message-ID (RPT-11).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReportId(Box<str>);

impl ReportId {
    /// `<yyyymmdd>.<nonce, 16 hex digits>.<policy-domain>@<submitter>`. Unique as long as the
    /// nonce is unique per day and policy domain (a random `u64`, or a sequence number).
    pub fn new(day: Day, policy_domain: &Domain, nonce: u64, submitter: &Domain) -> Self {
        let date: String = day.to_string().chars().filter(char::is_ascii_digit).collect();
        Self(format!("{date}.{nonce:016x}.{policy_domain}@{submitter}").into())
    }

    /// Parses an id kept by the caller. Both sides must be dot-atoms (RFC 5322 `dot-atom-text`),
    /// 255 characters at most in all.
    pub fn parse(id: &str) -> Result<Self, ReportError> {
        let bad = || ReportError::BadReportId(id.to_owned());
        let (left, right) = id.rsplit_once('@').ok_or_else(bad)?;
        if id.len() > 255 || !is_dot_atom(left) || !is_dot_atom(right) {
            return Err(bad());
        }
        Ok(Self(id.into()))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The letters and digits of the left part, at most 32: the file name's unique-id (RPT-8).
    pub fn file_token(&self) -> String {
        let left = self.0.rsplit_once('@').map_or(&*self.0, |(l, _)| l);
        left.chars().filter(char::is_ascii_alphanumeric).take(32).collect()
    }
}

impl fmt::Display for ReportId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ReportId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReportId({})", self.0)
    }
}

/// RFC 5322 `dot-atom-text`: atext runs separated by single dots.
pub(crate) fn is_dot_atom(s: &str) -> bool {
    let atext = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b);
    !s.is_empty() && s.split('.').all(|part| !part.is_empty() && part.bytes().all(atext))
}

/// Why no report could be built.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReportError {
    /// `contact-info` must be at the submitter's domain (TLS-Report-Submitter, RPT-10).
    ContactNotAtSubmitter {
        /// The contact address.
        contact: String,
        /// The submitter domain.
        submitter: String,
    },
    /// Nothing was counted for this policy domain on that day.
    NoCounts(String),
    /// Not `id-left@id-right` with dot-atoms on both sides.
    BadReportId(String),
}

impl fmt::Display for ReportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ContactNotAtSubmitter { contact, submitter } => write!(
                f,
                "the contact address {contact} must be at the submitter domain {submitter} (RFC 8460 §5.3)"
            ),
            Self::NoCounts(domain) => write!(f, "no sessions were counted for {domain}"),
            Self::BadReportId(id) => {
                write!(f, "report id `{id}` is not `left@right` with dot-atoms (letters, digits, `.-_`...)")
            }
        }
    }
}

impl std::error::Error for ReportError {}

/// One `policies[]` entry: a policy and its counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyReport {
    /// The policy.
    pub policy: PolicyKey,
    /// Its counts.
    pub counts: PolicyCounts,
}

/// One day's report for one policy domain. Only [`build_report`] makes one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    organization_name: String,
    contact_info: EmailAddress,
    submitter: Domain,
    policy_domain: Domain,
    day: Day,
    report_id: ReportId,
    policies: Vec<PolicyReport>,
}

/// Builds the report of `policy_domain` for `day` from `counts`. `contact` (`contact-info`) must
/// be at `submitter_domain`, the domain that also names the sender in the file name, the Subject and
/// the `TLS-Report-Submitter` header.
pub fn build_report(
    organization_name: &str,
    contact: &EmailAddress,
    submitter_domain: &Domain,
    policy_domain: &Domain,
    day: Day,
    counts: &DayCounts,
    report_id: ReportId,
) -> Result<Report, ReportError> {
    if contact.domain() != submitter_domain {
        return Err(ReportError::ContactNotAtSubmitter {
            contact: contact.to_string(),
            submitter: submitter_domain.to_string(),
        });
    }
    let policies: Vec<PolicyReport> = counts
        .policies(policy_domain)
        .map(|(policy, counts)| PolicyReport { policy: policy.clone(), counts: counts.clone() })
        .collect();
    if policies.is_empty() {
        return Err(ReportError::NoCounts(policy_domain.to_string()));
    }
    Ok(Report {
        organization_name: organization_name.to_owned(),
        contact_info: contact.clone(),
        submitter: submitter_domain.clone(),
        policy_domain: policy_domain.clone(),
        day,
        report_id,
        policies,
    })
}

impl Report {
    /// `organization-name`.
    pub fn organization_name(&self) -> &str {
        &self.organization_name
    }

    /// `contact-info`.
    pub fn contact_info(&self) -> &EmailAddress {
        &self.contact_info
    }

    /// The submitter (sender) domain.
    pub fn submitter(&self) -> &Domain {
        &self.submitter
    }

    /// `policy-domain`.
    pub fn policy_domain(&self) -> &Domain {
        &self.policy_domain
    }

    /// The day reported on.
    pub fn day(&self) -> Day {
        self.day
    }

    /// `report-id`.
    pub fn report_id(&self) -> &ReportId {
        &self.report_id
    }

    /// The `policies` entries.
    pub fn policies(&self) -> &[PolicyReport] {
        &self.policies
    }

    /// Drops every `failure-reason-code`, merging the entries that then coincide (RPT-17: the
    /// codes can reveal details of the sender's TLS setup).
    pub fn redact_failure_reason_codes(&mut self) {
        for p in &mut self.policies {
            let failures = std::mem::take(&mut p.counts.failures);
            for (mut key, n) in failures {
                key.failure_reason_code = None;
                let count = p.counts.failures.entry(key).or_default();
                *count = count.saturating_add(n);
            }
        }
    }

    /// The report as compact JSON (RFC 8460 §4.4).
    pub fn to_json(&self) -> String {
        // Plain structs of strings and integers: serialisation cannot fail.
        serde_json::to_string(&self.wire()).expect("the report serialises")
    }

    /// The JSON, gzip-compressed (RFC 1952; RPT-7): what is POSTed and attached.
    pub fn to_gzip(&self) -> Vec<u8> {
        let mut gz = GzEncoder::new(Vec::new(), Compression::default());
        // Writing into a Vec cannot fail.
        gz.write_all(self.to_json().as_bytes()).expect("gzip into memory");
        gz.finish().expect("gzip into memory")
    }

    /// `<submitter>!<policy-domain>!<begin>!<end>!<unique-id>.json.gz` (RPT-8), the timestamps
    /// being those of the date range.
    pub fn file_name(&self) -> String {
        format!(
            "{}!{}!{}!{}!{}.json.gz",
            self.submitter,
            self.policy_domain,
            self.day.start(),
            self.day.end(),
            self.report_id.file_token()
        )
    }

    fn wire(&self) -> WireReport<'_> {
        WireReport {
            organization_name: &self.organization_name,
            date_range: WireRange {
                start_datetime: self.day.start_datetime(),
                end_datetime: self.day.end_datetime(),
            },
            contact_info: self.contact_info.to_string(),
            report_id: self.report_id.as_str(),
            policies: self
                .policies
                .iter()
                .map(|p| WirePolicyReport {
                    policy: WirePolicy {
                        policy_type: p.policy.policy_type.as_str(),
                        policy_string: &p.policy.strings,
                        policy_domain: self.policy_domain.as_str(),
                        mx_host: &p.policy.mx,
                    },
                    summary: WireSummary {
                        total_successful_session_count: p.counts.successes.min(IJSON_MAX),
                        total_failure_session_count: p.counts.total_failures().min(IJSON_MAX),
                    },
                    failure_details: p
                        .counts
                        .failures
                        .iter()
                        .map(|(k, &n)| WireFailure {
                            result_type: k.result_type.as_str(),
                            sending_mta_ip: k.sending_mta_ip.map(|ip| ip.to_string()),
                            receiving_mx_hostname: k.receiving_mx_hostname.as_ref().map(Domain::as_str),
                            receiving_mx_helo: k.receiving_mx_helo.as_deref(),
                            receiving_ip: k.receiving_ip.map(|ip| ip.to_string()),
                            failed_session_count: n.min(IJSON_MAX),
                            additional_information: k.additional_information.as_deref(),
                            failure_reason_code: k.failure_reason_code.as_deref(),
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

// The JSON as sent, field order as in RFC 8460 §4.4.

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct WireReport<'a> {
    organization_name: &'a str,
    date_range: WireRange,
    contact_info: String,
    report_id: &'a str,
    policies: Vec<WirePolicyReport<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct WireRange {
    start_datetime: String,
    end_datetime: String,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct WirePolicyReport<'a> {
    policy: WirePolicy<'a>,
    summary: WireSummary,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    failure_details: Vec<WireFailure<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct WirePolicy<'a> {
    policy_type: &'static str,
    #[serde(skip_serializing_if = "no_strings")]
    policy_string: &'a [String],
    policy_domain: &'a str,
    #[serde(skip_serializing_if = "no_strings")]
    mx_host: &'a [String],
}

fn no_strings(strings: &&[String]) -> bool {
    strings.is_empty()
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct WireSummary {
    total_successful_session_count: u64,
    total_failure_session_count: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct WireFailure<'a> {
    result_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    sending_mta_ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    receiving_mx_hostname: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    receiving_mx_helo: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    receiving_ip: Option<String>,
    failed_session_count: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    additional_information: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure_reason_code: Option<&'a str>,
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
    fn report_ids() {
        let day = Day::from_unix(APRIL_1_2016);
        let id = ReportId::new(day, &d("company-y.example"), 0x4d2, &d("company-x.example"));
        assert_eq!(id.as_str(), "20160401.00000000000004d2.company-y.example@company-x.example");
        assert_eq!(ReportId::parse(id.as_str()).unwrap(), id);
        assert_eq!(id.file_token(), "2016040100000000000004d2companyy");
        // RFC 8460 §5.3's example id.
        assert!(ReportId::parse("735ff.e317+bf22029@company-x.example").is_ok());
        for bad in ["5065427c-23d3-47ca-b6e0-946ea0e8c4be", "a..b@x", "a b@x", "@x", "a@", "<a@x>"] {
            assert!(ReportId::parse(bad).is_err(), "{bad}");
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
}
