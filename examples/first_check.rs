//! Measures what a freshly started MTA process pays for its first check when the policy is
//! already in the persistent store: from the start of `main` to the verdict, configuration,
//! store and engine included. Prints microseconds.
//!
//! `cargo run --release --example first_check -- CONFIG DOMAIN MX`

use std::time::Instant;

fn main() {
    let start = Instant::now();
    let args: Vec<String> = std::env::args().collect();
    let [_, config, domain, mx] = args.as_slice() else {
        eprintln!("usage: first_check CONFIG DOMAIN MX");
        std::process::exit(2);
    };
    let config = mtasts::config::Config::from_file(std::path::Path::new(config)).expect("configuration");
    let engine = config.build_engine().expect("engine");
    let outcome = engine.check_mx(domain, mx).expect("check");
    let elapsed = start.elapsed();
    println!("{} {}", elapsed.as_micros(), outcome.verdict);
}
