//! `mtasts report build|send|list`: TLSRPT (RFC 8460) daily reports from the counts in the store.
//!
//! `build --date YYYY-MM-DD` makes, for each policy domain counted that day that publishes a
//! `_smtp._tls` record, the RFC 8460 JSON report and queues it in the store (a report already
//! queued for that day and domain is left alone, so building twice never sends twice); `--out DIR`
//! also writes each gzipped report under its RFC file name. `send` delivers every queued report
//! that is due (HTTPS POST or mail through `sendmail -t`), retrying with backoff for up to 24 hours;
//! the state is kept in the store, so a restart neither loses nor duplicates a report. The
//! pipeline is the library's ([`mtasts::tlsrpt::pipeline`]); this file parses and prints.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use mtasts::tlsrpt::pipeline::{self, Built, DayRun, Sender};
use mtasts::tlsrpt::report::Day;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
    #[command(flatten)]
    store: crate::store_args::StoreArgs,
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
    /// The DKIM TXT record to publish for `[report.dkim]`: its name and its text.
    DkimRecord,
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `YYYY-MM-DD` as a UTC day.
fn parse_date(s: &str) -> Result<Day, String> {
    Day::parse(s).ok_or_else(|| format!("--date {s}: expected YYYY-MM-DD"))
}

pub fn run(args: &Args) -> Result<ExitCode, String> {
    if let Action::DkimRecord = args.action {
        return dkim_record(&args.store);
    }
    let (config, stores) = args.store.open_report_stores()?;
    match &args.action {
        Action::Build { date, out } => {
            let sender = Sender::from_config(&config)?;
            let day = match date {
                Some(d) => parse_date(d)?,
                None => Day::from_unix(now()).previous(),
            };
            let dns = config.dns_resolver().map_err(|e| e.to_string())?;
            let built = pipeline::build_day(
                &stores,
                &dns,
                &sender,
                DayRun {
                    day,
                    now: now(),
                    out: out.as_deref(),
                    send_delay_max: config.report.send_delay_max_s,
                },
                &mut rand::random::<u64>,
                &mut |step| match step {
                    Built::Queued { domain, report_id, rua, due } => {
                        println!(
                            "{domain}: report {report_id} queued for {}, due {}",
                            rua.join(", "),
                            mtasts::cert::rfc3339(due)
                        );
                    }
                    Built::AlreadyQueued { domain } => {
                        println!("{domain}: a report for {} is already queued", day.start_datetime());
                    }
                    Built::NoRecord { domain } => println!("{domain}: no TLSRPT record, no report"),
                    Built::LookupFailed { domain, error } => {
                        eprintln!(
                            "warning: {domain}: TLSRPT record lookup failed ({error:?}); try again later"
                        );
                    }
                },
            )?;
            println!("{built} report(s) built for {}", &day.start_datetime()[..10]);
            Ok(ExitCode::SUCCESS)
        }
        Action::Send { force } => {
            let sender = Sender::from_config(&config)?;
            let settings = sender.delivery_settings(&config)?;
            let resolver: Arc<dyn mtasts::engine::AddressResolver> =
                Arc::new(config.dns_resolver().map_err(|e| e.to_string())?);
            let failed = pipeline::send_due(
                &*stores.outbox,
                &settings,
                &resolver,
                &sender,
                pipeline::Suppression::from_config(&config),
                now(),
                *force,
                &mut |item, outcome| {
                    if outcome.delivered() {
                        println!("{}: report {} delivered", item.domain, item.report_id);
                    } else {
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
                },
            )?;
            Ok(if failed > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
        }
        Action::List => {
            let items = stores.outbox.outbox().map_err(|e| e.to_string())?;
            for item in &items {
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
                let mut notes = String::new();
                for uri in s.refused.keys() {
                    notes.push_str(&format!("; refused by {uri}"));
                }
                for uri in &s.suppressed {
                    notes.push_str(&format!("; not sent to {uri} (suppressed)"));
                }
                println!(
                    "{} {} {} {status}{notes}",
                    &item.day.start_datetime()[..10],
                    item.domain,
                    item.report_id
                );
            }
            for s in pipeline::suppressed(&items, pipeline::Suppression::from_config(&config), now()) {
                println!(
                    "suppressed {} until {} after {} refused reports: {}",
                    s.uri,
                    mtasts::cert::rfc3339(s.until),
                    s.refusals,
                    s.last_error
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Action::DkimRecord => dkim_record(&args.store),
    }
}

/// `mtasts report dkim-record`: `NAME IN TXT "..."` for the key of `[report.dkim]` (RPT-12).
fn dkim_record(store: &crate::store_args::StoreArgs) -> Result<ExitCode, String> {
    let config = store.load()?;
    let d = config.report.dkim.as_ref().ok_or("[report.dkim] is not set: mailed reports are not signed")?;
    let signer = mtasts::tlsrpt::dkim::DkimSigner::from_key_file(&d.domain, &d.selector, &d.key_file)
        .map_err(|e| format!("[report.dkim]: {e}"))?;
    let record = signer.dns_record();
    // TXT character-strings hold at most 255 octets each; an RSA key's record is longer.
    let strings: Vec<String> =
        record.as_bytes().chunks(255).map(|c| format!("\"{}\"", String::from_utf8_lossy(c))).collect();
    println!("{}. IN TXT ( {} )", signer.record_name(), strings.join(" "));
    Ok(ExitCode::SUCCESS)
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
