//! `mtasts report build|send|list`: TLSRPT (RFC 8460) daily reports from the counts in the store.
//!
//! `build --date YYYY-MM-DD` makes, for each policy domain counted that day that publishes a
//! `_smtp._tls` record, the RFC 8460 JSON report and queues it in the store (a report already
//! queued for that day and domain is left alone, so building twice never sends twice); `--out DIR`
//! also writes each gzipped report under its RFC file name. `send` delivers every queued report
//! that is due (HTTPS POST or mail through `sendmail -t`), retrying with backoff for up to 24 hours;
//! the state is kept in the store, so a restart neither loses nor duplicates a report.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use mtasts::Domain;
use mtasts::cache::OutboxItem;
use mtasts::config::Config;
use mtasts::tlsrpt::report::{Day, DayCounts, ReportId, build_report};
use mtasts::tlsrpt::{DeliverySettings, DeliveryState, Discovery, EmailAddress, RetrySchedule, deliver};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
    /// Configuration file (default: $MTASTS_CONFIG, else /etc/mtasts/mtasts.toml if present).
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Policy store instead of [cache] path.
    #[arg(long, value_name = "PATH", global = true)]
    cache: Option<String>,
}

#[derive(clap::Subcommand, Debug)]
enum Action {
    /// Build and queue the reports of one UTC day (default: yesterday).
    Build {
        /// The day, `YYYY-MM-DD`.
        #[arg(long)]
        date: Option<String>,
        /// Also write each report (`.json.gz`, RFC 8460 file name) into this directory.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Deliver the queued reports that are due.
    Send {
        /// Try every undelivered report now, whatever its retry schedule says.
        #[arg(long)]
        force: bool,
    },
    /// The queued reports and where their delivery stands.
    List,
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `YYYY-MM-DD` as a UTC day.
fn parse_date(s: &str) -> Result<Day, String> {
    Day::parse(s).ok_or_else(|| format!("--date {s}: expected YYYY-MM-DD"))
}

/// Who submits the reports, from `[report]`.
struct Sender {
    organization: String,
    contact: EmailAddress,
    submitter: Domain,
    from: EmailAddress,
}

fn sender(config: &Config) -> Result<Sender, String> {
    let r = &config.report;
    let missing = |key: &str| format!("[report] {key} must be set to build and send TLSRPT reports");
    let organization = r.organization.clone().ok_or_else(|| missing("organization"))?;
    let contact_text = r.contact.as_deref().ok_or_else(|| missing("contact"))?;
    let contact = EmailAddress::parse(contact_text).map_err(|e| format!("[report] contact: {e}"))?;
    let submitter = match &r.submitter {
        Some(s) => Domain::parse(s).map_err(|e| format!("[report] submitter: {e}"))?,
        None => contact.domain().clone(),
    };
    let from = match &r.from {
        Some(f) => EmailAddress::parse(f).map_err(|e| format!("[report] from: {e}"))?,
        None => contact.clone(),
    };
    Ok(Sender { organization, contact, submitter, from })
}

pub fn run(args: &Args) -> Result<ExitCode, String> {
    let (config, store) = crate::cache::open_store(args.config.as_deref(), args.cache.as_deref())?;
    match &args.action {
        Action::Build { date, out } => {
            let sender = sender(&config)?;
            let day = match date {
                Some(d) => parse_date(d)?,
                None => Day::from_unix(now()).previous(),
            };
            let counts = store.report_counts(day).map_err(|e| e.to_string())?;
            let dns = config.dns_resolver().map_err(|e| e.to_string())?;
            if let Some(dir) = out {
                std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            }
            let mut built = 0;
            for domain in counts.domains() {
                let record = match mtasts::tlsrpt::discover(&dns, domain) {
                    Ok(Discovery::Record(r)) => r,
                    Ok(_) => {
                        println!("{domain}: no TLSRPT record, no report");
                        continue;
                    }
                    Err(e) => {
                        eprintln!("warning: {domain}: TLSRPT record lookup failed ({e:?}); try again later");
                        continue;
                    }
                };
                let mut only = DayCounts::new();
                for (policy, c) in counts.policies(domain) {
                    only.add_success(domain, policy, c.successes);
                    for (f, &n) in &c.failures {
                        only.add_failure(domain, policy, f.clone(), n);
                    }
                }
                let id = ReportId::new(day, domain, rand::random::<u64>(), &sender.submitter);
                let report = build_report(
                    &sender.organization,
                    &sender.contact,
                    &sender.submitter,
                    domain,
                    day,
                    &only,
                    id,
                )
                .map_err(|e| format!("{domain}: {e}"))?;
                let rua: Vec<String> = record.rua.iter().map(ToString::to_string).collect();
                let item = OutboxItem {
                    report_id: report.report_id().as_str().to_owned(),
                    day,
                    domain: domain.clone(),
                    counts: only,
                    record: format!("v=TLSRPTv1; rua={}", rua.join(",")),
                    state: DeliveryState::new(now()),
                };
                let queued = store.outbox_put(&item).map_err(|e| e.to_string())?;
                if let Some(dir) = out {
                    let path = dir.join(report.file_name());
                    std::fs::write(&path, report.to_gzip())
                        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                }
                if queued {
                    built += 1;
                    println!(
                        "{domain}: report {} queued for {}",
                        report.report_id().as_str(),
                        rua.join(", ")
                    );
                } else {
                    println!("{domain}: a report for {} is already queued", day.start_datetime());
                }
            }
            println!("{built} report(s) built for {}", &day.start_datetime()[..10]);
            Ok(ExitCode::SUCCESS)
        }
        Action::Send { force } => {
            let sender = sender(&config)?;
            let anchors = config.trust_anchors().map_err(|e| e.to_string())?;
            let mut settings = DeliverySettings::new(anchors, sender.from.clone());
            settings.sendmail = config.report.sendmail.clone();
            let resolver: Arc<dyn mtasts::engine::AddressResolver> =
                Arc::new(config.dns_resolver().map_err(|e| e.to_string())?);
            let schedule = RetrySchedule::default();
            let now = now();
            let mut failed = 0;
            for mut item in store.outbox().map_err(|e| e.to_string())? {
                if item.state.done || !(*force || item.state.is_due(now)) {
                    continue;
                }
                let record = mtasts::tlsrpt::record::parse_record(item.record.as_bytes())
                    .map_err(|e| format!("{}: stored record: {e}", item.domain))?;
                let id = ReportId::parse(&item.report_id).map_err(|e| format!("{}: {e}", item.report_id))?;
                let report = build_report(
                    &sender.organization,
                    &sender.contact,
                    &sender.submitter,
                    &item.domain,
                    item.day,
                    &item.counts,
                    id,
                )
                .map_err(|e| format!("{}: {e}", item.domain))?;
                let outcome = deliver(&settings, Arc::clone(&resolver), &report, &record.rua, now);
                item.state.record(now, &outcome, &schedule);
                store.outbox_update(&item.report_id, &item.state).map_err(|e| e.to_string())?;
                if outcome.delivered() {
                    println!("{}: report {} delivered", item.domain, item.report_id);
                } else {
                    failed += 1;
                    let next = if item.state.done {
                        "given up".to_owned()
                    } else {
                        format!("next try {}", mtasts::cert::rfc3339(item.state.next_attempt_at))
                    };
                    eprintln!(
                        "warning: {}: report {} not delivered ({}); {next}",
                        item.domain,
                        item.report_id,
                        outcome.errors().unwrap_or_default()
                    );
                }
            }
            Ok(if failed > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
        }
        Action::List => {
            for item in store.outbox().map_err(|e| e.to_string())? {
                let s = &item.state;
                let status = if s.delivered {
                    "delivered".to_owned()
                } else if s.done {
                    format!("given up after {} attempts", s.attempts)
                } else {
                    format!(
                        "pending, {} attempts, next {}",
                        s.attempts,
                        mtasts::cert::rfc3339(s.next_attempt_at)
                    )
                };
                println!("{} {} {} {status}", &item.day.start_datetime()[..10], item.domain, item.report_id);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(parse_date("2026-11-27").unwrap().start_datetime(), "2026-11-27T00:00:00Z");
        assert_eq!(parse_date("1970-01-01").unwrap().days(), 0);
        assert!(parse_date("2026-02-30").is_err());
        assert!(parse_date("2026-13-01").is_err());
        assert!(parse_date("yesterday").is_err());
    }
}
