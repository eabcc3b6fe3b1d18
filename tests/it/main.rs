//! The integration tests, as one binary with a module per subject (one link instead of twelve):
//! the conformance vectors, DNS and HTTPS against local fixtures, the engine, the SQLite and
//! Redis stores, the command line, the socketmap server, TLS reporting, and the C header.
//!
//! `cargo test --test it` runs them all; `cargo test --test it store::` one module. The
//! Redis store module needs `--features redis` (and `redis-server`); `live` holds the
//! `#[ignore]`d checks against the Internet (`cargo test --test it live:: -- --ignored`).
//! Every fixture listens on 127.0.0.0/8: nothing here leaves the machine.

mod common;

mod check_socket;
mod cli;
mod collect;
mod connect;
mod dane_config;
mod dane_dns;
mod dane_engine;
mod dns;
mod doctor;
mod engine;
mod fetch;
mod header;
mod live;
mod logging;
mod metrics;
mod overrides;
#[cfg(feature = "redis")]
mod redis_store;
mod report_flow;
mod report_mail;
mod scale;
mod serve;
mod store;
mod tlsrpt;
mod vectors;
mod verified;
