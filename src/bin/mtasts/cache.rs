//! `mtasts cache list|show DOMAIN|purge DOMAIN`: what the persistent store holds.

use std::path::PathBuf;
use std::process::ExitCode;

use mtasts::Domain;
use std::sync::Arc;

use mtasts::cache::{Entry, PolicyStore, ReportStores};
use mtasts::cert::rfc3339;
use mtasts::config::Config;
use serde_json::{Value, json};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
    /// Configuration file (default: $MTASTS_CONFIG, else /etc/mtasts/mtasts.toml if present).
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Policy store to read instead of [cache] path.
    #[arg(long, value_name = "PATH", global = true)]
    cache: Option<String>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(clap::Subcommand, Debug)]
enum Action {
    /// Every stored domain.
    List,
    /// One domain in detail.
    Show { domain: String },
    /// Forget a domain (its policy will be fetched again on the next check).
    Purge { domain: String },
}

/// Opens the store named by the configuration (and `--cache`), which must be persistent.
pub fn open_store(
    config: Option<&std::path::Path>,
    cache: Option<&str>,
) -> Result<(Config, Arc<dyn PolicyStore>), String> {
    let config = load(config, cache)?;
    match config.open_store().map_err(|e| e.to_string())? {
        Some(stores) => Ok((config, stores.policies)),
        None => Err(NO_STORE.into()),
    }
}

/// Opens the TLSRPT counts and report outbox of the store named by the configuration (and
/// `--cache`); refused at once for a store that keeps none.
pub fn open_report_stores(
    config: Option<&std::path::Path>,
    cache: Option<&str>,
) -> Result<(Config, ReportStores), String> {
    let config = load(config, cache)?;
    match config.open_report_stores().map_err(|e| e.to_string())? {
        Some(stores) => Ok((config, stores)),
        None => Err(NO_STORE.into()),
    }
}

const NO_STORE: &str = "[cache] path is \"memory\": there is no persistent store to read";

fn load(config: Option<&std::path::Path>, cache: Option<&str>) -> Result<Config, String> {
    let mut config = Config::load(config).map_err(|e| e.to_string())?;
    mtasts::logging::apply(&config.log);
    if let Some(cache) = cache {
        config.cache.path = cache.to_owned();
    }
    Ok(config)
}

pub fn run(args: &Args) -> Result<ExitCode, String> {
    let (_, store) = open_store(args.config.as_deref(), args.cache.as_deref())?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    match &args.action {
        Action::List => {
            let entries = store.list().map_err(|e| e.to_string())?;
            if args.json {
                let list: Vec<Value> = entries.iter().map(|(d, e)| entry_json(d, e, now)).collect();
                println!("{}", serde_json::to_string_pretty(&list).map_err(|e| e.to_string())?);
            } else {
                println!("{:<40} {:<8} {:<20} {:<21} LAST FAILURE", "DOMAIN", "MODE", "ID", "EXPIRES");
                for (d, e) in &entries {
                    let (mode, id, expires) = match &e.policy {
                        Some(p) => (
                            p.mode().as_str().to_owned(),
                            p.id.to_string(),
                            if p.is_live(now) { rfc3339(p.expires_at) } else { "expired".into() },
                        ),
                        None => ("-".into(), "-".into(), "-".into()),
                    };
                    let failure =
                        e.failed.as_ref().map_or_else(|| "-".into(), |f| f.failure.reason.to_string());
                    println!("{:<40} {mode:<8} {id:<20} {expires:<21} {failure}", d.as_str());
                }
                println!("{} domain(s) in {}", entries.len(), store.location());
            }
        }
        Action::Show { domain } => {
            let d = Domain::parse(domain).map_err(|e| format!("{domain}: {e}"))?;
            let Some(entry) = store.load(&d).map_err(|e| e.to_string())? else {
                return Err(format!("{d} is not in {}", store.location()));
            };
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&entry_json(&d, &entry, now)).map_err(|e| e.to_string())?
                );
            } else {
                print!("{}", entry_text(&d, &entry, now));
            }
        }
        Action::Purge { domain } => {
            let d = Domain::parse(domain).map_err(|e| format!("{domain}: {e}"))?;
            let removed = store.remove(&d).map_err(|e| e.to_string())?;
            if args.json {
                println!("{}", json!({ "domain": d.as_str(), "removed": removed }));
            } else if removed {
                println!("{d}: removed from {}", store.location());
            } else {
                println!("{d}: not in {}", store.location());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn entry_json(d: &Domain, e: &Entry, now: u64) -> Value {
    let policy = e.policy.as_ref().map_or(Value::Null, |p| {
        json!({
            "mode": p.mode().as_str(),
            "mx": p.policy.mx().iter().map(ToString::to_string).collect::<Vec<_>>(),
            "max_age": p.policy.max_age(),
            "id": p.id.as_str(),
            "fetched_at": rfc3339(p.fetched_at),
            "expires_at": rfc3339(p.expires_at),
            "live": p.is_live(now),
        })
    });
    let failure = e.failed.as_ref().map_or(Value::Null, |f| {
        json!({ "id": f.id.as_str(), "at": rfc3339(f.at), "result_type": f.failure.reason.as_str(), "detail": f.failure.detail })
    });
    json!({ "domain": d.as_str(), "policy": policy, "checked_at": rfc3339(e.checked_at), "last_failure": failure })
}

fn entry_text(d: &Domain, e: &Entry, now: u64) -> String {
    let mut out = format!("Domain:       {d}\nLast lookup:  {}\n", rfc3339(e.checked_at));
    match &e.policy {
        Some(p) => {
            let state = if p.is_live(now) { "in force" } else { "expired" };
            out.push_str(&format!(
                "Policy:       mode {}, id {}, max_age {} ({state})\nFetched:      {}\nExpires:      {}\n",
                p.mode(),
                p.id,
                p.policy.max_age(),
                rfc3339(p.fetched_at),
                rfc3339(p.expires_at)
            ));
            for m in p.policy.mx() {
                out.push_str(&format!("              mx: {m}\n"));
            }
        }
        None => out.push_str("Policy:       none\n"),
    }
    if let Some(f) = &e.failed {
        out.push_str(&format!(
            "Last failure: {} for id {}: {}: {}\n",
            rfc3339(f.at),
            f.id,
            f.failure.reason,
            f.failure.detail
        ));
    }
    out
}
