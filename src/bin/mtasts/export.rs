//! `mtasts export opensmtpd-table`: the domains whose stored policy is in force in a given mode
//! (enforce by default), as an OpenSMTPD `file:` table, one domain per line.
//!
//! OpenSMTPD has no hook to ask a policy engine per delivery, but it can require verified TLS
//! for a table of destination domains (`match ... for domain <table> action "..."` with
//! `relay tls`). The file is replaced atomically (written beside it, then renamed), so smtpd never
//! reads half a table; run this from cron or a timer followed by `smtpctl update table NAME`
//! (`examples/opensmtpd/`).
//!
//! Per-domain overrides (README, "Overrides") are honoured: a domain whose MTA-STS is skipped is
//! never listed, whatever the store holds; a pinned policy is listed when its mode is the one
//! exported, whether or not the store knows the domain.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use mtasts::Mode;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    format: Format,
}

#[derive(clap::Subcommand, Debug)]
enum Format {
    /// An OpenSMTPD `file:` table of domains.
    OpensmtpdTable {
        /// Which policies to list: `enforce` (default) or `testing`.
        #[arg(long, default_value = "enforce", value_parser = ["enforce", "testing"])]
        mode: String,
        /// Write here (atomically replaced) instead of standard output.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
        #[command(flatten)]
        store: crate::store_args::StoreArgs,
    },
}

pub fn run(args: &Args) -> Result<ExitCode, String> {
    let Format::OpensmtpdTable { mode, output, store } = &args.format;
    let want = if mode == "testing" { Mode::Testing } else { Mode::Enforce };
    let (config, store) = store.open_store()?;
    let overrides = crate::cache::effective_overrides(&config, store.as_ref())?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut table = format!(
        "# Domains with an MTA-STS policy in {mode} mode, from {}.\n# Written by `mtasts export opensmtpd-table`; do not edit.\n",
        store.location()
    );
    let mut domains = Vec::new();
    for (domain, entry) in store.list().map_err(|e| e.to_string())? {
        if overrides.iter().any(|o| o.domain == domain) {
            continue;
        }
        if entry.live(now).is_some_and(|p| p.mode() == want) {
            domains.push(domain);
        }
    }
    for o in &overrides {
        if o.pinned_policy().is_some_and(|p| p.mode() == want) {
            domains.push(o.domain.clone());
        }
    }
    domains.sort();
    let count = domains.len();
    for domain in domains {
        table.push_str(domain.as_str());
        table.push('\n');
    }
    match output {
        None => print!("{table}"),
        Some(path) => {
            let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
            let write = || -> std::io::Result<()> {
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(table.as_bytes())?;
                f.sync_all()?;
                std::fs::rename(&tmp, path)
            };
            if let Err(e) = write() {
                let _ = std::fs::remove_file(&tmp);
                return Err(format!("cannot write {}: {e}", path.display()));
            }
            eprintln!("{}: {count} domain(s)", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
