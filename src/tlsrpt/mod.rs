//! SMTP TLS Reporting (RFC 8460), the sending MTA's side: find where a domain wants its reports,
//! write the daily report, and deliver it.
//!
//! | module | what | RFC 8460 |
//! |---|---|---|
//! | [`address`] | email addresses (`contact-info`, `From`, `mailto:` recipients) | §3, §4.1, §5.3 |
//! | [`record`] | the `_smtp._tls` TXT record: grammar and discovery (RPT-1..6) | §3 |
//! | [`report`] | the report JSON, gzip and the file name (RPT-7, RPT-8); the day's counts are [`crate::counts`] | §4, §5.1, §5.2 |
//! | [`mail`] | the report as a `multipart/report` email, `TLS-Required: No` (RPT-10, RPT-11, RPT-22) | §5.3 |
//! | [`dkim`] | the DKIM signature of mailed reports (`[report.dkim]`; RPT-12) | §3 |
//! | [`deliver`](mod@deliver) | HTTPS POST and sendmail delivery, and the retry schedule (RPT-6, RPT-9, RPT-14) | §5.4, §5.5 |
//! | [`collect`] | the datagrams an MTA sends per TLS session (libtlsrpt, Postfix 3.10), as counts (COLL-1..10) | §4 |
//! | [`pipeline`] | the daily run over a store: build and queue a day's reports (first due at a random time after the day, RPT-23), send those due, one claimed attempt at a time (RPT-25), leaving out suppressed destinations (RPT-24) (`mtasts report`) | §4, §5 |
//!
//! ## Data flow
//!
//! ```text
//!  sessions ─► DayCounts (per policy domain, per policy; kept by the caller, e.g. in the store)
//!  end of the UTC day:
//!    record::discover(resolver, domain) ─► TlsRptRecord { rua }        (no record: no report)
//!    report::build_report(.., domain, day, &counts, report_id) ─► Report
//!        Report::to_json ─► Report::to_gzip ─► Report::file_name
//!    deliver::DeliveryState::new(not_before) ─► due(now)? ─► deliver::deliver(.., rua, now)
//!        https: POST application/tlsrpt+gzip     mailto: mail::message ─► dkim::DkimSigner ─► sendmail -t -oi
//!    DeliveryState::record(now, &outcome): done, or next_attempt_at (backoff, 24 h at most)
//! ```
//!
//! Like the rest of the crate, nothing here reads the clock or makes up random numbers: the day,
//! `now` and the report-id nonce are arguments, so every rule is tested without waiting. Only
//! [`deliver::deliver`] does I/O (HTTPS through the same rustls and resolver pieces as the policy
//! fetch, and a local mail command).

pub mod address;
pub mod collect;
pub mod deliver;
pub mod dkim;
pub mod mail;
pub mod pipeline;
pub mod record;
pub mod report;

pub use address::EmailAddress;
pub use deliver::{DeliveryOutcome, DeliverySettings, DeliveryState, RetrySchedule, deliver};
pub use record::{Discovery, RecordError, ReportUri, TlsRptRecord, discover};
pub use report::{
    Day, DayCounts, FailureKey, PolicyKey, PolicyType, Report, ReportError, ReportId, ResultType,
    build_report,
};

/// The media type of a gzip-compressed report (RFC 8460 §6.5), for HTTPS bodies and attachments.
pub fn media_type_gzip() -> &'static str {
    "application/tlsrpt+gzip"
}

/// The media type of an uncompressed report (RFC 8460 §6.4).
pub fn media_type_json() -> &'static str {
    "application/tlsrpt+json"
}
