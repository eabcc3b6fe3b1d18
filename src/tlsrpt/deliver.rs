//! Delivering a report to its `rua` destinations, and when to try again (RFC 8460 §5.3-§5.5;
//! RPT-6, RPT-9, RPT-13, RPT-14).
//!
//! [`deliver`] sends one report to every destination of the record (RPT-6: "to each"):
//!
//! * **`https:`** — one `POST` of the gzip report with `Content-Type: application/tlsrpt+gzip`
//!   (RPT-7, RPT-9), with the same hardened agent as the policy fetch ([`crate::fetch`];
//!   `src/https.rs`): ring, TLS 1.2 and 1.3, PKIX validation against the configured
//!   [`TrustAnchors`], SNI, no proxy, no pooled connection, DNS through the caller's
//!   [`AddressResolver`]. Any 2xx is success; any other status, a redirect (not followed) and every
//!   network or TLS error is a failure to retry. The RFC allows ignoring certificate errors on the
//!   report endpoint (RPT-9 MAY); this implementation does not.
//! * **`mailto:`** — the [`crate::tlsrpt::mail`] message is given to a local command, by default
//!   `/usr/sbin/sendmail -t -oi`, on standard input; exit status 0 means the MTA took it. The
//!   message goes through a file in [`DeliverySettings::spool_dir`] that is unlinked as soon as it
//!   is open, not through a pipe: a command that exits without reading cannot raise `SIGPIPE` in the
//!   host process (this code may run inside an MTA that does not ignore it), and a command that
//!   never reads cannot block us. The command is killed after [`DeliverySettings::sendmail_timeout`].
//!   With [`DeliverySettings::dkim`] the message is DKIM-signed first (RPT-12); a signing error is
//!   a failure of that destination, never an unsigned message.
//!   RPT-13 (deliver the report even when the receiving domain's TLS fails, and do not count that
//!   session) is for the MTA doing the SMTP delivery: it must exempt these messages from MTA-STS and
//!   DANE enforcement.
//!
//! The report counts as delivered when at least one destination accepted it (RPT-6).
//!
//! [`DeliveryState`] and [`RetrySchedule`] decide when to try again (RPT-14): exponential backoff
//! (5 min, doubling, at most 4 h between attempts), and no attempt later than 24 h after the first.
//! The state is plain data (serde), kept by the caller next to the pending report: persist it after
//! each [`DeliveryState::record`], and a restart neither forgets a report nor sends it again once
//! it is done. (A crash between a successful delivery and that write sends the report once more;
//! the report-id and Message-ID stay the same, so a receiver can tell.) Time is always an argument.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::cert::TrustAnchors;
pub use crate::counts::{DeliveryState, RetrySchedule};
use crate::https::{self, AgentSettings, client_config, printable, rustls_error, seconds, tls_failure};
use crate::ports::{AddressResolver, DnsError};
use crate::tlsrpt::address::EmailAddress;
use crate::tlsrpt::dkim::DkimSigner;
use crate::tlsrpt::mail;
use crate::tlsrpt::media_type_gzip;
use crate::tlsrpt::record::{HttpsUri, ReportUri};
use crate::tlsrpt::report::Report;

/// The `User-Agent` of report uploads.
const USER_AGENT: &str = concat!("mtasts/", env!("CARGO_PKG_VERSION"), " (TLSRPT)");

/// How reports are delivered. [`DeliverySettings::new`] gives the defaults; change fields after.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct DeliverySettings {
    /// Roots the report endpoint's certificate must chain to.
    pub anchors: TrustAnchors,
    /// Budget for a whole HTTPS upload. Default 60 s.
    pub timeout: Duration,
    /// Budget for the TCP connection and the TLS handshake (within `timeout`). Default 10 s.
    pub connect_timeout: Duration,
    /// Refuse report endpoints that resolve only to loopback, private and other non-global
    /// addresses (the URI comes from the receiving domain's DNS). Default `false`.
    pub refuse_private_addresses: bool,
    /// The `From` of report emails.
    pub from: EmailAddress,
    /// The mail command and its arguments; the message comes on standard input. Default
    /// `/usr/sbin/sendmail -t -oi`.
    pub sendmail: Vec<String>,
    /// How long the mail command may run. Default 120 s.
    pub sendmail_timeout: Duration,
    /// Where the message is written for the mail command's standard input (the file is unlinked
    /// once open, and is private to the process). Default: the system's temporary directory.
    pub spool_dir: PathBuf,
    /// Signs mailed reports (`[report.dkim]`; RPT-12). Default: none, the message goes unsigned
    /// (for an MTA that signs what it relays).
    pub dkim: Option<Arc<DkimSigner>>,
}

impl DeliverySettings {
    /// The defaults, with these anchors and this `From` address.
    pub fn new(anchors: TrustAnchors, from: EmailAddress) -> Self {
        Self {
            anchors,
            timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            refuse_private_addresses: false,
            from,
            sendmail: ["/usr/sbin/sendmail", "-t", "-oi"].map(String::from).to_vec(),
            sendmail_timeout: Duration::from_secs(120),
            spool_dir: std::env::temp_dir(),
            dkim: None,
        }
    }
}

/// What became of one destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UriOutcome {
    /// The destination, as published.
    pub uri: String,
    /// What it said: `Ok("HTTP 201")`, `Ok("accepted by the mail command")`, or why not.
    pub result: Result<String, String>,
    /// The failure is final for this destination (RPT-24): an HTTP 4xx other than 408 and 429,
    /// or a mail command exiting with `EX_DATAERR` (65), `EX_NOUSER` (67) or `EX_NOHOST` (68),
    /// as sendmail does for an address it knows cannot be delivered. Retrying will not help.
    pub permanent: bool,
}

/// The result of one delivery attempt to every destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryOutcome {
    /// One entry per destination, in the record's order.
    pub results: Vec<UriOutcome>,
}

impl DeliveryOutcome {
    /// True when at least one destination accepted the report (RPT-6).
    pub fn delivered(&self) -> bool {
        self.results.iter().any(|r| r.result.is_ok())
    }

    /// The failures, `uri: why`, joined by `; `.
    pub fn errors(&self) -> Option<String> {
        let errors: Vec<String> = self
            .results
            .iter()
            .filter_map(|r| r.result.as_ref().err().map(|e| format!("{}: {e}", r.uri)))
            .collect();
        (!errors.is_empty()).then(|| errors.join("; "))
    }
}

/// Sends `report` to every destination in `rua` (RPT-6). `now` (Unix seconds) is the email's
/// `Date`. Blocks for at most about `timeout` per HTTPS destination and `sendmail_timeout` per
/// mail destination.
pub fn deliver(
    settings: &DeliverySettings,
    resolver: Arc<dyn AddressResolver>,
    report: &Report,
    rua: &[ReportUri],
    now: u64,
) -> DeliveryOutcome {
    let gzip = report.to_gzip();
    let results = rua
        .iter()
        .map(|uri| {
            let result = match uri {
                ReportUri::Https(https) => post_report(settings, Arc::clone(&resolver), https, &gzip)
                    .map(|status| format!("HTTP {status}")),
                ReportUri::Mailto(mailto) => {
                    let message = mail::message(report, &settings.from, mailto.to(), now);
                    let signed = match &settings.dkim {
                        Some(signer) => signer.signed(&message, now).map_err(|e| format!("DKIM: {e}")),
                        None => Ok(message),
                    };
                    signed
                        .and_then(|m| send_mail(settings, &m))
                        .map(|()| "accepted by the mail command".to_owned())
                }
            };
            let permanent = result.as_ref().err().is_some_and(|e| is_permanent(e));
            UriOutcome { uri: uri.to_string(), result, permanent }
        })
        .collect();
    DeliveryOutcome { results }
}

/// Whether a failure message of [`post_report`] or [`send_mail`] is final (see
/// [`UriOutcome::permanent`]).
fn is_permanent(error: &str) -> bool {
    if let Some(rest) = error.strip_prefix("HTTP ") {
        let status: u16 = rest.get(..3).and_then(|s| s.parse().ok()).unwrap_or(0);
        return (400..500).contains(&status) && status != 408 && status != 429;
    }
    [65, 67, 68].iter().any(|code| {
        error.contains(&format!(": exit status {code}:")) || error.ends_with(&format!(": exit status {code}"))
    })
}

/// POSTs a gzip report to an `https:` destination (RPT-9). `Ok` carries the 2xx status.
pub fn post_report(
    settings: &DeliverySettings,
    resolver: Arc<dyn AddressResolver>,
    uri: &HttpsUri,
    gzip: &[u8],
) -> Result<u16, String> {
    let tls = client_config(&settings.anchors).map_err(|e| format!("TLS setup: {e}"))?;
    let addrs = Arc::new(Mutex::new(Vec::new()));
    let agent_settings = AgentSettings {
        user_agent: USER_AGENT,
        timeout: settings.timeout,
        connect_timeout: settings.connect_timeout,
        port: uri.port(),
        refuse_private: settings.refuse_private_addresses,
    };
    let agent = https::agent(&agent_settings, tls, Arc::new(LiteralsFirst(resolver)), Arc::clone(&addrs));

    let response = agent
        .post(uri.request_uri())
        .header("Content-Type", media_type_gzip())
        .send(gzip)
        .map_err(|e| describe(e, uri.host(), &addrs.lock(), settings))?;
    let status = response.status();
    if status.is_success() {
        return Ok(status.as_u16());
    }
    let location = response.headers().get("Location").filter(|_| status.is_redirection());
    Err(match location {
        Some(to) => {
            format!("HTTP {} redirect to {} (not followed)", status.as_u16(), printable(to.as_bytes()))
        }
        None => {
            let text = status.canonical_reason().map(|r| format!(" {r}")).unwrap_or_default();
            format!("HTTP {}{text}", status.as_u16())
        }
    })
}

/// A ureq error in words an operator can act on.
fn describe(
    error: ureq::Error,
    host: &str,
    addrs: &[std::net::SocketAddr],
    settings: &DeliverySettings,
) -> String {
    use ureq::Error as E;
    if let Some(tls) = rustls_error(&error) {
        return tls_failure(tls, host).1;
    }
    let peers = if addrs.is_empty() {
        host.to_owned()
    } else {
        addrs.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    };
    match error {
        E::Timeout(ureq::Timeout::Connect) => {
            format!("could not connect to {peers} within {}", seconds(settings.connect_timeout))
        }
        E::Timeout(_) => format!("timed out after {}", seconds(settings.timeout)),
        E::Other(inner) => inner.to_string(),
        E::HostNotFound => format!("{host} has no address"),
        E::Io(e) => format!("network error with {peers}: {e}"),
        other => other.to_string(),
    }
}

/// Answers IP-literal hosts itself; asks the caller's resolver for names.
struct LiteralsFirst(Arc<dyn AddressResolver>);

impl AddressResolver for LiteralsFirst {
    fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        match host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            Ok(ip) => Ok(vec![ip]),
            Err(_) => self.0.addresses(host),
        }
    }
}

/// Gives a message to the mail command on its standard input (RPT-10). `Ok` when it exits with
/// status 0.
pub fn send_mail(settings: &DeliverySettings, message: &[u8]) -> Result<(), String> {
    let (program, args) = settings.sendmail.split_first().ok_or("no mail command is configured")?;
    let mut input = spool_file(&settings.spool_dir)
        .map_err(|e| format!("cannot write the message in {}: {e}", settings.spool_dir.display()))?;
    input
        .write_all(message)
        .and_then(|()| input.seek(SeekFrom::Start(0)).map(drop))
        .map_err(|e| format!("cannot write the message in {}: {e}", settings.spool_dir.display()))?;
    let mut errors = spool_file(&settings.spool_dir).map_err(|e| format!("cannot capture errors: {e}"))?;
    let stderr = errors.try_clone().map_err(|e| format!("cannot capture errors: {e}"))?;

    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::from(input))
        .stdout(Stdio::null())
        .stderr(Stdio::from(stderr))
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() >= settings.sendmail_timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{program} did not finish within {}",
                    seconds(settings.sendmail_timeout)
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(format!("cannot wait for {program}: {e}")),
        }
    };
    if status.success() {
        return Ok(());
    }
    let mut said = Vec::new();
    let _ = errors.seek(SeekFrom::Start(0));
    let _ = errors.take(512).read_to_end(&mut said);
    let said = String::from_utf8_lossy(&said);
    let said = said.trim();
    let how = match status.code() {
        Some(code) => format!("exit status {code}"),
        None => "killed by a signal".to_owned(),
    };
    Err(if said.is_empty() { format!("{program}: {how}") } else { format!("{program}: {how}: {said}") })
}

/// A new file in `dir`, readable only by us, already unlinked: it lives as long as the handle.
fn spool_file(dir: &Path) -> std::io::Result<File> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!(".mtasts-tlsrpt-{}-{n}", std::process::id()));
        match OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(&path) {
            Ok(file) => {
                std::fs::remove_file(&path)?;
                return Ok(file);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

impl DeliveryState {
    /// Records an attempt made at `now`.
    pub fn record(&mut self, now: u64, outcome: &DeliveryOutcome, schedule: &RetrySchedule) {
        let result = if outcome.delivered() {
            Ok(())
        } else {
            Err(outcome.errors().unwrap_or_else(|| {
                "no destination left to try (each refused the report for good or is suppressed)".to_owned()
            }))
        };
        self.record_result(now, result, schedule);
    }
}

#[cfg(test)]
mod tests {
    use super::is_permanent;

    #[test]
    fn permanent_failures() {
        assert!(is_permanent("HTTP 404 Not Found"));
        assert!(is_permanent("HTTP 410"));
        assert!(!is_permanent("HTTP 429 Too Many Requests"));
        assert!(!is_permanent("HTTP 408"));
        assert!(!is_permanent("HTTP 503 Service Unavailable"));
        assert!(!is_permanent("HTTP 301 redirect to https://x/ (not followed)"));
        assert!(is_permanent("/usr/sbin/sendmail: exit status 67: no such user"));
        assert!(is_permanent("/usr/sbin/sendmail: exit status 68"));
        assert!(!is_permanent("/usr/sbin/sendmail: exit status 75: queue file write error"));
        assert!(!is_permanent("could not connect to 192.0.2.1:443 within 10 s"));
    }
}
