//! `mtasts refresh`: refreshes every stored policy that is due, for cron or a systemd timer
//! (RFC 8461 §3.3, §10.2: refresh before expiry, alert when refreshes keep failing).
//!
//! A policy is due (`Timing::refresh_due`) when it was fetched more than `[engine] refresh_interval`
//! ago, or more than half its `max_age` ago if that is shorter (default interval one
//! day). Each due domain gets a TXT lookup and, as the engine's rules say, a fetch; a failure
//! never removes the stored policy. Exit status 0 when every refresh worked, 1 when the refresh of
//! an `enforce` or `testing` policy failed (a warning is printed for each; `none` policies never
//! warn), 2 on usage or internal errors. Due policies are found through the store's indexes, and
//! the store is pruned of domains without a live policy unseen for `[cache] prune_after_days`.
//! The refreshes and their wording are the library's ([`mtasts::refresh`]).

use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    store: crate::store_args::StoreArgs,
    /// Domains refreshed at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    concurrency: u16,
    /// Print only warnings.
    #[arg(long, short)]
    quiet: bool,
}

pub fn run(args: &Args) -> Result<ExitCode, String> {
    let (config, store) = args.store.open_store()?;
    drop(store);
    let engine = config.build_engine().map_err(|e| e.to_string())?;
    if let Some(e) = engine.store_error() {
        return Err(e);
    }
    let now = engine.now();
    let interval = config.timing().refresh_interval;
    let due = engine.due_for_refresh(now).map_err(|e| e.to_string())?;
    match engine.prune_store() {
        Ok(n) if n > 0 && !args.quiet => println!("pruned {n} stale row(s) from the store"),
        Ok(_) => {}
        Err(e) => eprintln!("warning: the store could not be pruned: {e}"),
    }
    if !args.quiet {
        println!("{} polic(ies) due for refresh (fetched more than {interval} s ago)", due.len());
    }
    let lines = mtasts::refresh::refresh_all(&engine, &due, usize::from(args.concurrency))?;
    let mut warned = false;
    for refreshed in lines {
        let line = refreshed.line("stored");
        if refreshed.is_warning() {
            warned = true;
            eprintln!("{line}");
        } else if !args.quiet {
            println!("{line}");
        }
    }
    if let Some(e) = engine.store_error() {
        return Err(e);
    }
    Ok(if warned { ExitCode::from(1) } else { ExitCode::SUCCESS })
}
