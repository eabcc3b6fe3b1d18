//! `mtasts`: the operator's command line.
//!
//! ```text
//! mtasts check DOMAIN [--mx HOST]... [--config FILE] [--ca-file PEM] [--cache PATH|memory] [--json]
//!              [--connect [--port N] [--timeout SECONDS] [--ehlo NAME]]
//! mtasts lint [FILE|-]
//! mtasts refresh [--config FILE] [--cache PATH] [--concurrency N] [--quiet]
//! mtasts cache list|show DOMAIN|purge DOMAIN [--config FILE] [--cache PATH] [--json]
//! mtasts report build [--date YYYY-MM-DD] [--out DIR] | send | list [--config FILE] [--cache PATH]
//! mtasts stats [--config FILE] [--cache PATH] [--json]
//! mtasts export opensmtpd-table [--mode enforce|testing] [--output FILE] [--config FILE] [--cache PATH]
//! mtasts override set DOMAIN (--mode none | --policy FILE) | clear DOMAIN | list [--json] [--config FILE] [--cache PATH]
//! mtasts doctor [--config FILE] [--user NAME] [--json] [--exim-dir DIR] [--postfix-dir DIR] [--dnssec-probe NAME]
//! ```
//!
//! Exit status: `check` 0 when the command worked, whatever the verdicts; `lint` 0 for a valid
//! policy, 1 for an invalid one; `doctor` 0 when no check fails, 1 when one does; 2 for usage and
//! internal errors.

mod cache;
mod check;
mod connect;
mod doctor;
mod export;
mod exposition;
mod lint;
mod manpages;
mod overrides;
mod refresh;
mod report;
mod serve;
mod stats;
mod store_args;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "mtasts",
    version,
    about = "MTA-STS (RFC 8461) for mail servers: check domains, lint policies"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Look up a domain's MTA-STS policy and judge its MX hosts.
    Check(check::Args),
    /// Check a policy file as a domain owner would publish it.
    Lint {
        /// The policy file (`-` or nothing: standard input).
        file: Option<PathBuf>,
    },
    /// Refresh every stored policy that is due (for cron or a systemd timer).
    Refresh(refresh::Args),
    /// Show or edit the persistent policy store.
    Cache(cache::Args),
    /// Answer socketmap lookups (Postfix smtp_tls_policy_maps, Sendmail FEATURE(sts)).
    Serve(serve::Args),
    /// Export stored policies for MTAs that read tables (OpenSMTPD).
    Export(export::Args),
    /// TLSRPT (RFC 8460) daily reports: build, send, list.
    Report(report::Args),
    /// The engine's counters summed over every process that used the store.
    Stats(stats::Args),
    /// Per-domain overrides in the store: skip MTA-STS for a domain, or pin its policy.
    Override(overrides::Args),
    /// Check the installation: configuration, store, trust anchors, DNS, DNSSEC, serve, MTA snippets.
    Doctor(doctor::Args),
    /// Write the man pages (mtasts.1, mtasts-SUBCOMMAND.1) into a directory (for packagers).
    #[command(hide = true)]
    Manpages {
        /// The directory to write into (created if missing).
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(2) } else { ExitCode::SUCCESS };
        }
    };
    let result = match cli.command {
        Command::Check(args) => check::run(&args),
        Command::Lint { file } => lint::run(file.as_deref()),
        Command::Refresh(args) => refresh::run(&args),
        Command::Cache(args) => cache::run(&args),
        Command::Serve(args) => serve::run(&args),
        Command::Export(args) => export::run(&args),
        Command::Report(args) => report::run(&args),
        Command::Stats(args) => stats::run(&args),
        Command::Override(args) => overrides::run(&args),
        Command::Doctor(args) => doctor::run(&args),
        Command::Manpages { dir } => manpages::run(<Cli as clap::CommandFactory>::command(), &dir),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("mtasts: {message}");
            ExitCode::from(2)
        }
    }
}
