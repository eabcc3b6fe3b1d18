//! Measures what a freshly started MTA process pays for its first check when the policy (and,
//! with DANE, the MX host's TLSA answer) is already in the persistent store: from the start of
//! `main` to the verdict, configuration, store and engine included. Prints microseconds and the
//! verdict; with a chain file, also which protocol decided (`dane` or `mta-sts`).
//!
//! `cargo run --release --example first_check -- CONFIG DOMAIN MX [CHAIN]`
//!
//! Without CHAIN: `Engine::check_mx` (the name only, before connecting). With CHAIN (a file, PEM
//! or concatenated DER, leaf first): `Engine::check` after the handshake, where DANE decides for
//! an MX with DNSSEC-secure TLSA records (`benches/first_check.sh`).

use std::time::Instant;

fn main() {
    let start = Instant::now();
    let args: Vec<String> = std::env::args().collect();
    let (config, domain, mx, chain) = match args.as_slice() {
        [_, config, domain, mx] => (config, domain, mx, None),
        [_, config, domain, mx, chain] => (config, domain, mx, Some(chain)),
        _ => {
            eprintln!("usage: first_check CONFIG DOMAIN MX [CHAIN]");
            std::process::exit(2);
        }
    };
    let config = mtasts::config::Config::from_file(std::path::Path::new(config)).expect("configuration");
    let engine = config.build_engine().expect("engine");
    let (outcome, decided) = match chain {
        None => (engine.check_mx(domain, mx).expect("check"), ""),
        Some(path) => {
            let chain = std::fs::read(path).expect("certificate chain");
            let outcome = engine.check(domain, mx, Some(&chain)).expect("check");
            let decided = if outcome.dane.is_some() { " dane" } else { " mta-sts" };
            (outcome, decided)
        }
    };
    let elapsed = start.elapsed();
    println!("{} {}{decided}", elapsed.as_micros(), outcome.verdict);
}
