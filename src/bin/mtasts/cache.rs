//! `mtasts cache list|show DOMAIN|purge DOMAIN`: what the persistent store holds.

use std::process::ExitCode;

use mtasts::Domain;

use mtasts::cache::{Entry, PolicyStore};
use mtasts::cert::rfc3339;
use mtasts::config::Config;
use mtasts::engine::Override;
use serde_json::{Value, json};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
    #[command(flatten)]
    store: crate::store_args::StoreArgs,
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

pub fn run(args: &Args) -> Result<ExitCode, String> {
    let (config, store) = args.store.open_store()?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    match &args.action {
        Action::List => {
            let entries = store.list().map_err(|e| e.to_string())?;
            if args.json {
                let overrides = effective_overrides(&config, store.as_ref())?;
                let list: Vec<Value> = entries
                    .iter()
                    .map(|(d, e)| {
                        let o = overrides.iter().find(|o| &o.domain == d);
                        entry_json(d, Some(e), o, now)
                    })
                    .collect();
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
            let entry = store.load(&d).map_err(|e| e.to_string())?;
            let overrides = effective_overrides(&config, store.as_ref())?;
            let o = overrides.iter().find(|o| o.domain == d);
            if entry.is_none() && o.is_none() {
                return Err(format!("{d} is not in {}", store.location()));
            }
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&entry_json(&d, entry.as_ref(), o, now))
                        .map_err(|e| e.to_string())?
                );
            } else {
                print!("{}", entry_text(&d, entry.as_ref(), o, now));
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

/// The overrides in effect: the configuration file's, then the store's for other domains (D31).
pub fn effective_overrides(config: &Config, store: &dyn PolicyStore) -> Result<Vec<Override>, String> {
    let mut all = config.resolved_overrides.clone();
    let location = store.location();
    for row in store.overrides().map_err(|e| e.to_string())? {
        if all.iter().any(|o| o.domain == row.domain) {
            continue;
        }
        match Override::from_stored(&row, &location) {
            Ok(o) => all.push(o),
            Err(why) => eprintln!(
                "warning: {location}: the override of {} is ignored (its pinned policy is invalid: {why})",
                row.domain
            ),
        }
    }
    Ok(all)
}

/// A stored domain as JSON (`cache list|show --json`). A domain only overridden has no stored
/// entry: `policy`, `checked_at` and `last_failure` are then null.
fn entry_json(d: &Domain, e: Option<&Entry>, o: Option<&Override>, now: u64) -> Value {
    let overridden = o.map_or(Value::Null, crate::overrides::override_json);
    let Some(e) = e else {
        return json!({ "domain": d.as_str(), "policy": null, "checked_at": null, "last_failure": null,
                       "override": overridden });
    };
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
    json!({ "domain": d.as_str(), "policy": policy, "checked_at": rfc3339(e.checked_at), "last_failure": failure,
            "override": overridden })
}

fn entry_text(d: &Domain, e: Option<&Entry>, o: Option<&Override>, now: u64) -> String {
    let mut out = format!("Domain:       {d}\n");
    if let Some(o) = o {
        out.push_str(&format!("Override:     {}\n", crate::overrides::override_text(o)));
    }
    let Some(e) = e else {
        out.push_str("Cached:       no entry (the domain was never looked up with this store)\n");
        return out;
    };
    out.push_str(&format!("Last lookup:  {}\n", rfc3339(e.checked_at)));
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
