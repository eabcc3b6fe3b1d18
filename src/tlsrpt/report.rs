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
//!   prose is the normative text, and large senders send an array too (docs/conformance.md,
//!   decision D7).
//!   `mx-host` is omitted for `no-policy-found`, as is `policy-string`.
//! * **`policy-string`** for `sts` holds the policy body's lines, one string each, with line ends,
//!   surrounding whitespace and blank lines removed ([`policy_lines`]).
//! * **`tlsa` policies** (DANE, RFC 8460 §4.4): `policy-string` holds the MX host's TLSA records,
//!   one `usage selector matching-type hex-data` string each; it is an empty array when no
//!   DNSSEC-validated records were had (`dnssec-invalid`). `policy-domain` is the TLSA base domain
//!   (RFC 8460 §3: for DANE the Policy Domain is the TLSA base domain of the receiving server), which
//!   is the MX host: the report goes to the MX host's `_smtp._tls` record. No `mx-host`.
//! * **Policies an MTA reported itself** (Postfix 3.10's datagrams, docs/tlsrpt-collect.md) keep
//!   the `policy-domain` the MTA gave when it differs from the report's domain (COLL-7).
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

use std::fmt;
use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;
use serde::Serialize;

pub use crate::counts::{
    Day, DayCounts, FailureKey, PolicyCounts, PolicyKey, PolicyType, REPORT_WINDOW_DAYS, ResultType,
    policy_lines,
};
use crate::domain::Domain;
use crate::tlsrpt::address::{EmailAddress, is_dot_atom};

/// Largest integer I-JSON guarantees to carry exactly (RFC 7493 §2.2).
const IJSON_MAX: u64 = (1 << 53) - 1;

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
                        policy_type: p.policy.policy_type().as_str(),
                        policy_string: (p.policy.policy_type() == PolicyType::Tlsa
                            || !p.policy.strings().is_empty())
                        .then(|| p.policy.strings()),
                        policy_domain: p
                            .policy
                            .policy_domain()
                            .map_or(self.policy_domain.as_str(), Domain::as_str),
                        mx_host: p.policy.mx_hosts(),
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
    #[serde(skip_serializing_if = "Option::is_none")]
    policy_string: Option<&'a [String]>,
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
}
