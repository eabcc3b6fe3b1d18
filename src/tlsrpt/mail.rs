//! The report as an email (RFC 8460 §5.3; RPT-10, RPT-11).
//!
//! ```text
//! From: <from>                      To: <the mailto: addresses, percent-decoded>
//! Date: <now, RFC 5322>             Message-ID: <report-id>
//! Subject: Report Domain: <policy-domain> Submitter: <submitter> Report-ID: <report-id>
//! MIME-Version: 1.0                 Auto-Submitted: auto-generated
//! TLS-Report-Domain: <policy-domain>
//! TLS-Report-Submitter: <submitter>           (the domain of contact-info: build_report checks)
//! TLS-Required: No                            (RFC 8689: deliver even without TLS; RPT-22)
//! Content-Type: multipart/report; report-type="tlsrpt"; boundary="=_tlsrpt_..."
//!   text/plain; charset="utf-8" (quoted-printable): a summary for people
//!   application/tlsrpt+gzip (base64), Content-Disposition: attachment; filename=<RPT-8 name>
//! ```
//!
//! Decisions:
//!
//! * The **Message-ID is the report-id** (`<report-id>`): a retry of the same report, even after a
//!   restart, carries the same Message-ID, so a receiver can drop a duplicate.
//! * The boundary begins with `=_`, which neither quoted-printable nor base64 output can contain, so
//!   no part can be mistaken for a boundary whatever the organisation name says.
//! * Lines end with LF: the message is meant for `sendmail -t -oi` on standard input, which takes
//!   local text lines. Headers longer than 78 characters are folded at spaces.
//! * `TLS-Required: No` (RFC 8689 §5) asks every MTA on the way to deliver the report even where
//!   TLS to the receiver fails or its MTA-STS / DANE policy cannot be met (RFC 8460 §3: reports
//!   about failing TLS must still arrive). mtasts's Exim example also routes such messages past
//!   the mtasts check (RPT-22).
//! * The message is signed by [`crate::tlsrpt::dkim`] when `[report.dkim]` is set (RPT-12),
//!   in [`crate::tlsrpt::deliver`](mod@crate::tlsrpt::deliver); this function writes it unsigned.

use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::calendar::rfc3339;
pub use crate::tlsrpt::address::{AddressError, EmailAddress};
use crate::tlsrpt::media_type_gzip;
use crate::tlsrpt::report::Report;

/// `Report Domain: <policy-domain> Submitter: <submitter> Report-ID: <<report-id>>` (RPT-11).
pub fn subject(report: &Report) -> String {
    format!(
        "Report Domain: {} Submitter: {} Report-ID: <{}>",
        report.policy_domain(),
        report.submitter(),
        report.report_id()
    )
}

/// The whole message, ready for `sendmail -t -oi`. `now` (Unix seconds) is the `Date`.
pub fn message(report: &Report, from: &EmailAddress, to: &[EmailAddress], now: u64) -> Vec<u8> {
    let boundary = format!("=_tlsrpt_{}", report.report_id().file_token());
    let file_name = report.file_name();
    let recipients = to.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");

    let mut m = String::new();
    header(&mut m, "From", &from.to_string());
    header(&mut m, "To", &recipients);
    header(&mut m, "Date", &rfc5322_date(now));
    header(&mut m, "Subject", &subject(report));
    header(&mut m, "Message-ID", &format!("<{}>", report.report_id()));
    header(&mut m, "MIME-Version", "1.0");
    header(&mut m, "Auto-Submitted", "auto-generated");
    header(&mut m, "TLS-Report-Domain", report.policy_domain().as_str());
    header(&mut m, "TLS-Report-Submitter", report.submitter().as_str());
    header(&mut m, "TLS-Required", "No");
    header(
        &mut m,
        "Content-Type",
        &format!("multipart/report; report-type=\"tlsrpt\"; boundary=\"{boundary}\""),
    );
    m.push_str("\nThis is a multipart message in MIME format.\n");

    let _ = write!(m, "\n--{boundary}\n");
    m.push_str(
        "Content-Type: text/plain; charset=\"utf-8\"\nContent-Transfer-Encoding: quoted-printable\n\n",
    );
    m.push_str(&quoted_printable(&summary(report, &file_name)));

    let _ = write!(m, "\n--{boundary}\n");
    let gzip = media_type_gzip();
    header(&mut m, "Content-Type", &format!("{gzip}; name=\"{file_name}\""));
    header(&mut m, "Content-Disposition", &format!("attachment; filename=\"{file_name}\""));
    m.push_str("Content-Transfer-Encoding: base64\n\n");
    let encoded = STANDARD.encode(report.to_gzip());
    for line in encoded.as_bytes().chunks(76) {
        // Base64 output is ASCII.
        m.push_str(std::str::from_utf8(line).unwrap_or_default());
        m.push('\n');
    }
    let _ = write!(m, "\n--{boundary}--\n");
    m.into_bytes()
}

/// The human-readable part.
fn summary(report: &Report, file_name: &str) -> String {
    let day = report.day();
    let mut s = String::new();
    let _ = writeln!(s, "This is an aggregate TLS report (SMTP TLS Reporting, RFC 8460).");
    let _ = writeln!(s);
    let _ = writeln!(s, "Reporting organisation: {}", printable(report.organization_name()));
    let _ = writeln!(s, "Submitter:              {}", report.submitter());
    let _ = writeln!(s, "Policy domain:          {}", report.policy_domain());
    let _ = writeln!(s, "Period:                 {} to {}", day.start_datetime(), day.end_datetime());
    let _ = writeln!(s, "Report-ID:              {}", report.report_id());
    let _ = writeln!(s);
    for p in report.policies() {
        let _ = writeln!(
            s,
            "Policy {}: {} successful sessions, {} failed sessions",
            p.policy.policy_type().as_str(),
            p.counts.successes,
            p.counts.total_failures()
        );
        for (key, n) in &p.counts.failures {
            let mx = key.receiving_mx_hostname.as_ref().map(|m| format!(" with {m}")).unwrap_or_default();
            let _ = writeln!(s, "  {n} x {}{mx}", key.result_type);
        }
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "The report is attached as {file_name} ({}).", media_type_gzip());
    let _ = writeln!(s, "Contact: {}", report.contact_info());
    s
}

/// Control characters become spaces.
fn printable(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// `Name: value`, folded at spaces so that lines stay within 78 characters where possible.
pub(crate) fn header(out: &mut String, name: &str, value: &str) {
    let mut line_len = name.len() + 1;
    out.push_str(name);
    out.push(':');
    for (i, word) in value.split(' ').enumerate() {
        if i > 0 && line_len + 1 + word.len() > 78 {
            out.push('\n');
            line_len = 0;
        }
        out.push(' ');
        out.push_str(word);
        line_len += 1 + word.len();
    }
    out.push('\n');
}

/// Quoted-printable (RFC 2045 §6.7) of UTF-8 text with LF line ends; lines of at most 76.
fn quoted_printable(text: &str) -> String {
    let mut out = String::new();
    for line in text.split('\n') {
        let bytes = line.as_bytes();
        let mut len = 0;
        for (i, &b) in bytes.iter().enumerate() {
            let last = i + 1 == bytes.len();
            let literal = (b'!'..=b'~').contains(&b) && b != b'=' || (b == b' ' || b == b'\t') && !last;
            let piece = if literal { char::from(b).to_string() } else { format!("={b:02X}") };
            if len + piece.len() > 75 {
                out.push_str("=\n");
                len = 0;
            }
            out.push_str(&piece);
            len += piece.len();
        }
        out.push('\n');
    }
    out.pop(); // the text's own last LF was turned into an empty last line
    out
}

/// `Sun, 01 Mar 2026 06:00:00 +0000`.
fn rfc5322_date(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let t = rfc3339(secs); // YYYY-MM-DDTHH:MM:SSZ
    let month = t[5..7].parse::<usize>().unwrap_or(1);
    let weekday = DAYS[usize::try_from(secs / 86_400 % 7).unwrap_or(0)];
    format!("{weekday}, {} {} {} {} +0000", &t[8..10], MONTHS[month - 1], &t[0..4], &t[11..19])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc5322_date(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        // 2016-04-02 08:00:00, a Saturday (the RFC 8460 §5.3 example is sent the day after).
        assert_eq!(rfc5322_date(1_459_584_000), "Sat, 02 Apr 2016 08:00:00 +0000");
    }

    #[test]
    fn folding_and_encoding() {
        let mut h = String::new();
        header(&mut h, "Subject", &"word ".repeat(30));
        assert!(h.lines().all(|l| l.len() <= 78), "{h}");
        assert_eq!(h.replace("\n ", " "), format!("Subject: {}\n", "word ".repeat(30)));
        assert_eq!(quoted_printable("a=b \nSüd\n"), "a=3Db=20\nS=C3=BCd\n");
        let long = quoted_printable(&"x".repeat(200));
        assert!(long.lines().all(|l| l.len() <= 76));
        assert!(!quoted_printable("--=_tlsrpt_x").contains("=_"));
    }
}
