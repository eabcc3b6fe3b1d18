//! `mtasts override set|clear|list`: per-domain overrides kept in the store, so that every host
//! sharing it (and every process of this host) applies them (README, "Overrides").
//!
//! ```text
//! mtasts override set DOMAIN (--mode none | --policy FILE) [--config FILE] [--cache PATH]
//! mtasts override clear DOMAIN [--config FILE] [--cache PATH]
//! mtasts override list [--json] [--config FILE] [--cache PATH]
//! ```
//!
//! `list` shows the configuration file's overrides too, marked `config`; a store override of a
//! domain the configuration file also overrides is shown as shadowed (the file wins, D31). A
//! pinned policy file is parsed with the grammar of fetched policies before it is stored: an
//! invalid one is refused with its first problem. Running engines see a change within
//! `[engine] txt_check_interval`; new processes at once.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use mtasts::Domain;
use mtasts::cache::{PolicyStore, StoredOverride};
use mtasts::cert::rfc3339;
use mtasts::config::Config;
use mtasts::engine::{Override, OverrideOrigin};
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
    /// Skip MTA-STS for a domain, or pin its policy, in the store.
    Set {
        /// The Policy Domain.
        domain: String,
        /// `none`: skip MTA-STS for the domain (DANE still applies where it does).
        #[arg(long, value_parser = ["none"], conflicts_with = "policy", required_unless_present = "policy")]
        mode: Option<String>,
        /// A policy file applied instead of discovery (checked as a fetched policy would be).
        #[arg(long, value_name = "FILE")]
        policy: Option<PathBuf>,
    },
    /// Remove a domain's override from the store.
    Clear {
        /// The Policy Domain.
        domain: String,
    },
    /// Every override: the configuration file's and the store's.
    List,
}

pub fn run(args: &Args) -> Result<ExitCode, String> {
    let config = args.store.load()?;
    let store = config.open_store().map_err(|e| e.to_string())?.map(|s| s.policies);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    match &args.action {
        Action::Set { domain, mode: _, policy } => {
            let store = need_store(store.as_ref(), "override set")?;
            let d = parse_domain(domain)?;
            let policy_text = match policy {
                None => None,
                Some(path) => {
                    let bytes =
                        std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                    let origin = OverrideOrigin::Store { location: store.location(), set_at: now };
                    let o = Override::pinned(d.clone(), &bytes, now, origin).map_err(|e| {
                        format!("{}: not a valid MTA-STS policy, nothing stored: {e}", path.display())
                    })?;
                    o.pinned_policy().map(|p| p.text.clone())
                }
            };
            let stored = StoredOverride { domain: d.clone(), policy_text, set_at: now };
            store.override_set(&stored).map_err(|e| e.to_string())?;
            let shadowed = config_override(&config, &d);
            if args.json {
                let o = Override::from_stored(&stored, &store.location())?;
                let mut v = list_json(&o, shadowed.is_none());
                if let Some(obj) = v.as_object_mut() {
                    obj.insert("set".into(), Value::Bool(true));
                }
                println!("{v}");
            } else {
                let what = if stored.policy_text.is_some() {
                    "policy pinned"
                } else {
                    "MTA-STS skipped (mode none)"
                };
                println!("{d}: {what}, in {}", store.location());
            }
            if let Some(c) = shadowed {
                eprintln!(
                    "note: {d} is also overridden in {}, which takes precedence over the store",
                    c.location()
                );
            }
        }
        Action::Clear { domain } => {
            let store = need_store(store.as_ref(), "override clear")?;
            let d = parse_domain(domain)?;
            let removed = store.override_clear(&d).map_err(|e| e.to_string())?;
            if args.json {
                println!("{}", json!({ "domain": d.as_str(), "removed": removed }));
            } else if removed {
                println!("{d}: override removed from {}", store.location());
            } else {
                println!("{d}: no override in {}", store.location());
            }
            if let Some(c) = config_override(&config, &d) {
                eprintln!(
                    "note: {d} is still overridden in {} (remove its [override.\"{d}\"] table there)",
                    c.location()
                );
            }
        }
        Action::List => {
            let mut all: Vec<(Override, bool)> =
                config.resolved_overrides.iter().map(|o| (o.clone(), true)).collect();
            if let Some(store) = &store {
                let location = store.location();
                for row in store.overrides().map_err(|e| e.to_string())? {
                    match Override::from_stored(&row, &location) {
                        Ok(o) => {
                            let in_effect = config_override(&config, &o.domain).is_none();
                            all.push((o, in_effect));
                        }
                        Err(why) => eprintln!(
                            "warning: {location}: the override of {} is ignored (its pinned policy is invalid: {why})",
                            row.domain
                        ),
                    }
                }
            }
            all.sort_by(|a, b| (&a.0.domain, a.0.origin_str()).cmp(&(&b.0.domain, b.0.origin_str())));
            if args.json {
                let list: Vec<Value> = all.iter().map(|(o, in_effect)| list_json(o, *in_effect)).collect();
                println!("{}", serde_json::to_string_pretty(&list).map_err(|e| e.to_string())?);
            } else {
                println!("{:<40} {:<8} {:<8} WHERE", "DOMAIN", "ACTION", "ORIGIN");
                for (o, in_effect) in &all {
                    let action = match o.pinned_policy() {
                        Some(p) => format!("pinned ({}, mx {})", p.mode(), mx_list(o)),
                        None => "none".into(),
                    };
                    let mut line = format!(
                        "{:<40} {:<8} {:<8} {}",
                        o.domain.as_str(),
                        o.action_str(),
                        o.origin_str(),
                        o.location()
                    );
                    if let Some(file) = o.policy_file() {
                        line.push_str(&format!(" ({})", file.display()));
                    }
                    if let OverrideOrigin::Store { set_at, .. } = o.origin {
                        line.push_str(&format!(", set {}", rfc3339(set_at)));
                    }
                    if !in_effect {
                        line.push_str(" [shadowed by the configuration file]");
                    }
                    println!("{line}");
                    if o.pinned_policy().is_some() {
                        println!("{:<40} {action}", "");
                    }
                }
                let store_note = store.as_ref().map_or_else(|| "no store".to_owned(), |s| s.location());
                println!("{} override(s) (configuration file and {store_note})", all.len());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn need_store<'a>(
    store: Option<&'a Arc<dyn PolicyStore>>,
    what: &str,
) -> Result<&'a Arc<dyn PolicyStore>, String> {
    store.ok_or_else(|| {
        format!(
            "{what}: [cache] path is \"memory\": there is no store to keep overrides in \
             (use [override.\"DOMAIN\"] in the configuration file instead)"
        )
    })
}

fn parse_domain(domain: &str) -> Result<Domain, String> {
    Domain::parse(domain).map_err(|e| format!("{domain}: not a policy domain: {e}"))
}

fn config_override<'a>(config: &'a Config, domain: &Domain) -> Option<&'a Override> {
    config.resolved_overrides.iter().find(|o| &o.domain == domain)
}

fn mx_list(o: &Override) -> String {
    o.pinned_policy()
        .map(|p| p.policy.mx().iter().map(ToString::to_string).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// An override as `check --json` and `cache show --json` show it (`override`): what it does,
/// where it was set, the pinned file.
pub fn override_json(o: &Override) -> Value {
    let set_at = match o.origin {
        OverrideOrigin::Store { set_at, .. } => Value::String(rfc3339(set_at)),
        OverrideOrigin::Config { .. } => Value::Null,
    };
    json!({
        "action": o.action_str(),
        "origin": o.origin_str(),
        "location": o.location(),
        "policy_file": o.policy_file().map(|p| p.display().to_string()),
        "set_at": set_at,
    })
}

/// One line of `override list --json`: [`override_json`], the domain, the pinned policy, and
/// whether it is in effect (a store override of a domain the configuration file overrides too is
/// not).
fn list_json(o: &Override, in_effect: bool) -> Value {
    let mut v = override_json(o);
    let policy = o.pinned_policy().map_or(Value::Null, |p| {
        json!({
            "mode": p.mode().as_str(),
            "mx": p.policy.mx().iter().map(ToString::to_string).collect::<Vec<_>>(),
            "max_age": p.policy.max_age(),
        })
    });
    if let Some(obj) = v.as_object_mut() {
        obj.insert("domain".into(), Value::String(o.domain.to_string()));
        obj.insert("policy".into(), policy);
        obj.insert("in_effect".into(), Value::Bool(in_effect));
    }
    v
}

/// The text line of an override, for `check` and `cache show`.
pub fn override_text(o: &Override) -> String {
    match o.pinned_policy() {
        None => format!(
            "mode none ({}, {}): MTA-STS is skipped for this domain; DANE still applies",
            o.origin_str(),
            o.location()
        ),
        Some(p) => {
            let file = o.policy_file().map_or(String::new(), |f| format!(" {}", f.display()));
            format!(
                "pinned policy{file} ({}, {}): mode {}, applied instead of discovery, never expires while set",
                o.origin_str(),
                o.location(),
                p.mode()
            )
        }
    }
}
