//! # mtasts: an MTA-STS (RFC 8461) engine for sending mail servers
//!
//! A sending MTA asks one question per delivery attempt: *may I deliver this domain's mail to this
//! MX, with this certificate?* [`Engine::check`] answers it with a [`Verdict`]:
//!
//! | verdict | what the MTA does |
//! |---|---|
//! | [`Verdict::NoPolicy`] | deliver as usual (no policy, `mode: none`, or none could be had) |
//! | [`Verdict::Pass`] | deliver: the policy is satisfied |
//! | [`Verdict::FailEnforce`] | do not deliver to this MX; temporary failure, try the next MX |
//! | [`Verdict::FailTesting`] | deliver, and report the failure (TLSRPT) |
//!
//! ## Data flow
//!
//! ```text
//!  domain, mx, cert ─► Engine::check
//!                        ├─ cache (memory) ───────────── fresh? ─► apply
//!                        ├─ Resolver: TXT _mta-sts.<domain> ─► txt::select
//!                        ├─ Fetcher: https://mta-sts.<domain>/.well-known/mta-sts.txt ─► Policy::parse
//!                        └─ apply: mx::MxPattern::matches ─► CertVerifier::verify ─► verdict::decide
//! ```
//!
//! ## Contents, by RFC 8461 section
//!
//! | module | what | RFC |
//! |---|---|---|
//! | [`domain`] | normalised domain names (lower case, A-labels, no trailing dot) | §3.2, §4.1 |
//! | [`txt`] | the `_mta-sts` TXT record and discovery | §3.1 |
//! | [`policy`] | the policy body grammar, [`Mode`] | §3.2 |
//! | [`mx`] | MX patterns and matching | §4.1 |
//! | [`cert`] | MX certificate chains, trust anchors | §4.2 |
//! | [`verdict`] | mode semantics: verdicts and reasons | §5 |
//! | [`tlsa`] | DANE for SMTP: usable TLSA records, DANE-EE and DANE-TA matching of an MX chain | RFC 7672 §3 |
//! | [`ports`] | the traits the engine needs from outside (DNS, HTTPS, clock) and their errors | — |
//! | [`dns`], [`fetch`] | the real DNS client (hickory) and policy fetch (ureq + rustls) | §3.1, §3.3 |
//! | [`counts`] | TLSRPT's counted data: day counts and report delivery state | RFC 8460 §4 |
//! | [`cache`] | what is remembered: policies per domain (memory, SQLite, Redis), TLSRPT counts, the report outbox | §3.3, §10.2 |
//! | [`engine`] | discovery, fetch, cache and apply | §5.1 |
//! | [`config`] | the configuration file every front-end reads | — |
//! | [`logging`] | warnings and the decision log: `tracing` events, and the subscriber the front-ends install (`[log]`, a C callback) | — |
//! | [`refresh`] | refreshing stored policies before they age out, as `mtasts refresh` and `serve` do | §3.3, §10.2 |
//! | [`tlsrpt`] | TLS reporting: the `_smtp._tls` record, counters, reports, delivery | RFC 8460 |
//! | [`ffi`] | the C ABI (`include/mtasts.h`) and Exim's dlfunc entry points | — |
//! | [`forks`] | which side of a `fork()` a process is on, without a system call | — |
//!
//! Private helpers: `fxhash` (a fast hasher for the hot path's small or trusted maps), `taglist` (the `tag=value;` tokenizer of the `_mta-sts` and `_smtp._tls`
//! records), `calendar` (UTC days and RFC 3339 times), `https` (the hardened HTTPS agent of the
//! policy fetch and the TLSRPT upload). The layers, the process model and the interfaces are
//! described in `docs/architecture.md`; every requirement id named by the tests, with its RFC
//! section and the project's decisions, in `docs/conformance.md`.
//!
//! Grammar and checks are pure functions (time is an argument); DNS, HTTPS and the clock sit
//! behind the [`Resolver`], [`Fetcher`] and [`Clock`] traits, so every rule is tested without a
//! network. The project's decisions on points the RFC leaves open are listed in [`policy`] and
//! [`txt`], and in the README.

#![deny(unsafe_code)]

pub mod cache;
mod calendar;
pub mod cert;
pub mod config;
pub mod counts;
pub mod dns;
pub mod dnssec;
pub mod domain;
pub mod engine;
pub mod fetch;
pub mod ffi;
pub mod forks;
mod fxhash;
mod https;
pub mod logging;
pub mod metrics;
pub mod mx;
pub mod policy;
pub mod ports;
pub mod refresh;
pub mod remote;
mod taglist;
pub mod tlsa;
pub mod tlsrpt;
pub mod txt;
pub mod verdict;

pub use cert::TrustAnchors;
pub use domain::Domain;
pub use engine::{Engine, InputError, Outcome, Timing, Tls};
pub use policy::{Mode, Policy};
pub use ports::{Clock, DnsError, Fetcher, Resolver};
pub use verdict::{Dane, Reason, Verdict};
