//! The conformance vector runner: reads `tests/vectors/*.toml` (format in
//! `tests/vectors/README.md`) and checks every case against the library. Each case names the
//! requirement id (docs/conformance.md) it exercises; a failure message starts with that id and the case name.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use std::sync::Arc;

use crate::common::{FakeTlsa, Harness, START, pki};
use mtasts::cert::CertVerifier;
use mtasts::engine::{DnsError, RecordState, Tls};
use mtasts::mx::MxPattern;
use mtasts::policy::{Policy, Severity};
use mtasts::ports::{TlsaLookup, TlsaRecord};
use mtasts::tlsa::{self, DaneMatch};
use mtasts::txt::{self, Discovery};
use mtasts::{Dane, Domain, Reason, Timing, TrustAnchors};
use serde::Deserialize;

fn load<T: for<'de> Deserialize<'de>>(file: &str) -> T {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors").join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Collects failures so that one run reports every broken case, not just the first.
#[derive(Default)]
struct Report(Vec<String>);

impl Report {
    fn check(&mut self, ok: bool, id: &str, name: &str, what: impl FnOnce() -> String) {
        if !ok {
            self.0.push(format!("{id} ({name}): {}", what()));
        }
    }

    fn finish(self, file: &str, cases: usize) {
        assert!(cases > 0, "{file}: no cases");
        assert!(self.0.is_empty(), "{file}: {} failure(s):\n{}", self.0.len(), self.0.join("\n"));
    }
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
}

// ---------------------------------------------------------------------------------------------
// domain.toml

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DomainFile {
    case: Vec<DomainCase>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DomainCase {
    id: String,
    name: String,
    input: String,
    normalised: Option<String>,
    txt_name: Option<String>,
    policy_url: Option<String>,
    error: Option<String>,
}

#[test]
fn domain_vectors() {
    let file: DomainFile = load("domain.toml");
    let mut r = Report::default();
    for c in &file.case {
        let got = Domain::parse(&c.input);
        match (&got, &c.error) {
            (Ok(d), None) => {
                if let Some(n) = &c.normalised {
                    r.check(d.as_str() == n, &c.id, &c.name, || format!("normalised to {d}, want {n}"));
                }
                if let Some(t) = &c.txt_name {
                    r.check(&d.txt_name() == t, &c.id, &c.name, || format!("txt name {}", d.txt_name()));
                }
                if let Some(u) = &c.policy_url {
                    r.check(&d.policy_url() == u, &c.id, &c.name, || format!("url {}", d.policy_url()));
                }
            }
            (Err(e), Some(want)) => {
                let kind = if *e == mtasts::domain::DomainError::AddressLiteral {
                    "address-literal"
                } else {
                    "invalid"
                };
                r.check(kind == want, &c.id, &c.name, || format!("error {kind} ({e}), want {want}"));
            }
            (got, _) => r.check(false, &c.id, &c.name, || format!("got {got:?}, want error {:?}", c.error)),
        }
    }
    r.finish("domain.toml", file.case.len());
}

// ---------------------------------------------------------------------------------------------
// txt.toml

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TxtFile {
    case: Vec<TxtCase>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TxtCase {
    id: String,
    name: String,
    /// The RRset: one string per record.
    #[serde(default)]
    records: Vec<String>,
    /// The RRset as character-strings per record, joined by the runner as a resolver would.
    #[serde(default)]
    strings: Vec<Vec<String>>,
    /// One record given as hex bytes.
    record_hex: Option<String>,
    expect: String,
    policy_id: Option<String>,
    error: Option<String>,
}

#[test]
fn txt_vectors() {
    let file: TxtFile = load("txt.toml");
    let mut r = Report::default();
    for c in &file.case {
        let mut rrset: Vec<Vec<u8>> = c.records.iter().map(|s| s.as_bytes().to_vec()).collect();
        rrset.extend(c.strings.iter().map(|parts| parts.concat().into_bytes()));
        rrset.extend(c.record_hex.as_deref().map(hex));
        let got = txt::select(&rrset);
        let (kind, id, err) = match &got {
            Discovery::Record(rec) => ("record", Some(rec.id.as_str().to_owned()), String::new()),
            Discovery::NoRecord => ("no-record", None, String::new()),
            Discovery::Multiple(_) => ("multiple", None, String::new()),
            Discovery::Invalid(e) => ("invalid", None, e.to_string()),
        };
        r.check(kind == c.expect, &c.id, &c.name, || format!("got {got:?}, want {}", c.expect));
        if let Some(want) = &c.policy_id {
            r.check(id.as_deref() == Some(want), &c.id, &c.name, || format!("id {id:?}, want {want}"));
        }
        if let Some(want) = &c.error {
            r.check(err.contains(want.as_str()), &c.id, &c.name, || format!("error `{err}` lacks `{want}`"));
        }
    }
    r.finish("txt.toml", file.case.len());
}

// ---------------------------------------------------------------------------------------------
// policy.toml

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    case: Vec<PolicyCase>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyCase {
    id: String,
    name: String,
    body: Option<String>,
    body_hex: Option<String>,
    expect: String,
    mode: Option<String>,
    max_age: Option<u32>,
    mx: Option<Vec<String>>,
    error: Option<String>,
    error_line: Option<usize>,
    warnings: Option<usize>,
    warning: Option<String>,
}

#[test]
fn policy_vectors() {
    let file: PolicyFile = load("policy.toml");
    let mut r = Report::default();
    for c in &file.case {
        let body = match (&c.body, &c.body_hex) {
            (Some(b), None) => b.as_bytes().to_vec(),
            (None, Some(h)) => hex(h),
            _ => panic!("{}: exactly one of body and body_hex", c.name),
        };
        let (id, name) = (&c.id, &c.name);
        match (Policy::parse(&body), c.expect.as_str()) {
            (Ok(p), "valid") => {
                if let Some(m) = &c.mode {
                    r.check(p.mode().as_str() == m, id, name, || format!("mode {}", p.mode()));
                }
                if let Some(a) = c.max_age {
                    r.check(p.max_age() == a, id, name, || format!("max_age {}", p.max_age()));
                }
                if let Some(mx) = &c.mx {
                    let got: Vec<String> = p.mx().iter().map(ToString::to_string).collect();
                    r.check(&got == mx, id, name, || format!("mx {got:?}"));
                }
                if let Some(n) = c.warnings {
                    r.check(p.warnings().len() == n, id, name, || format!("warnings {:?}", p.warnings()));
                }
                if let Some(w) = &c.warning {
                    let found = p.warnings().iter().any(|x| x.message.contains(w.as_str()));
                    r.check(found, id, name, || format!("no warning with `{w}` in {:?}", p.warnings()));
                }
            }
            (Err(e), "invalid") => {
                let errors: Vec<_> = e.problems.iter().filter(|p| p.severity == Severity::Error).collect();
                if let Some(want) = &c.error {
                    let found = errors.iter().any(|p| p.message.contains(want.as_str()));
                    r.check(found, id, name, || format!("no error with `{want}` in {errors:?}"));
                }
                if let Some(line) = c.error_line {
                    r.check(errors.iter().any(|p| p.line == line), id, name, || {
                        format!("no error on line {line}: {errors:?}")
                    });
                }
            }
            (got, want) => r.check(false, id, name, || format!("got {got:?}, want {want}")),
        }
    }
    r.finish("policy.toml", file.case.len());
}

// ---------------------------------------------------------------------------------------------
// mx.toml

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MxFile {
    case: Vec<MxCase>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MxCase {
    id: String,
    name: String,
    patterns: Vec<String>,
    host: Option<String>,
    /// Whether `host` matches one of `patterns`; absent when the patterns are expected invalid.
    matches: Option<bool>,
    /// Every pattern is expected to be rejected, with this text in the error.
    invalid: Option<String>,
}

#[test]
fn mx_vectors() {
    let file: MxFile = load("mx.toml");
    let mut r = Report::default();
    for c in &file.case {
        let parsed: Vec<_> = c.patterns.iter().map(|p| MxPattern::parse(p)).collect();
        if let Some(want) = &c.invalid {
            for (p, got) in c.patterns.iter().zip(&parsed) {
                let ok = got.as_ref().err().is_some_and(|e| e.to_string().contains(want.as_str()));
                r.check(ok, &c.id, &c.name, || format!("pattern `{p}` gave {got:?}, want error `{want}`"));
            }
            continue;
        }
        let patterns: Vec<MxPattern> = parsed.into_iter().map(|p| p.expect("valid pattern")).collect();
        let host = c.host.as_deref().expect("host");
        let matched = match mtasts::mx::parse_host(host) {
            Ok(h) => mtasts::mx::any_matches(&patterns, &h),
            Err(_) => false,
        };
        let want = c.matches.expect("matches");
        r.check(matched == want, &c.id, &c.name, || {
            format!("{host} vs {:?}: {matched}, want {want}", c.patterns)
        });
    }
    r.finish("mx.toml", file.case.len());
}

// ---------------------------------------------------------------------------------------------
// cert.toml

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CertFile {
    case: Vec<CertCase>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CertCase {
    id: String,
    name: String,
    chain: String,
    #[serde(default = "pem")]
    format: String,
    host: String,
    /// Days after 2026-11-28 to validate at (may be negative).
    #[serde(default)]
    days: i64,
    expect: String,
    /// Validate twice and expect the same answer (the memoised path).
    #[serde(default)]
    twice: bool,
}

fn pem() -> String {
    "pem".into()
}

fn chain_bytes(name: &str, format: &str) -> Vec<u8> {
    let chain = pki::pki().chains.get(name).unwrap_or_else(|| panic!("no test chain `{name}`"));
    match format {
        "pem" => chain.pem().into_bytes(),
        "der" => chain.der_concat(),
        other => panic!("format `{other}`"),
    }
}

#[test]
fn cert_vectors() {
    let file: CertFile = load("cert.toml");
    let anchors = TrustAnchors::from_pem(pki::pki().root_pem.as_bytes(), "test root").expect("root");
    let verifier = CertVerifier::new(anchors);
    let mut r = Report::default();
    for c in &file.case {
        let chain = chain_bytes(&c.chain, &c.format);
        let host = Domain::parse(&c.host).expect("host");
        let at = START.checked_add_signed(c.days * 86_400).expect("time");
        let rounds = if c.twice { 2 } else { 1 };
        for round in 1..=rounds {
            let got = match verifier.verify(&chain, &host, at) {
                Ok(()) => "ok".to_owned(),
                Err(f) => f.reason.as_str().to_owned(),
            };
            r.check(got == c.expect, &c.id, &c.name, || {
                format!("round {round}: got {got}, want {}", c.expect)
            });
        }
    }
    r.finish("cert.toml", file.case.len());
}

// ---------------------------------------------------------------------------------------------
// tlsa.toml

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsaFile {
    case: Vec<TlsaCase>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsaCase {
    id: String,
    name: String,
    /// A chain of the test PKI, or `chain_text` for literal bytes.
    chain: Option<String>,
    chain_text: Option<String>,
    #[serde(default = "pem")]
    format: String,
    /// The TLSA base domain and the MX host name.
    #[serde(default = "mx_names")]
    names: Vec<String>,
    /// Days after 2026-11-28 to verify at (may be negative).
    #[serde(default)]
    days: i64,
    /// The RRset.
    tlsa: Vec<TlsaSpec>,
    /// `pass`, `fail` or `no-usable-records`.
    expect: String,
    /// `dane-ee` or `dane-ta`, for `pass`.
    by: Option<String>,
    /// The result type of a `fail`.
    reason: Option<String>,
    /// Text expected in the detail of a `fail`.
    detail: Option<String>,
    /// How many records take part in matching (`tlsa::usable`).
    usable: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsaSpec {
    usage: u8,
    selector: u8,
    matching: u8,
    /// Compute the data from this certificate: `<chain>.leaf`, `<chain>.<index>`, or a CA of the
    /// test PKI (`dane-root`, ...).
    of: Option<String>,
    /// Literal association data.
    hex: Option<String>,
}

fn mx_names() -> Vec<String> {
    vec!["mx.example.test".into()]
}

/// The DER of a certificate named as `of` names it.
fn named_cert(of: &str) -> Vec<u8> {
    let pki = pki::pki();
    if let Some(der) = pki.certs.get(of) {
        return der.clone();
    }
    let (chain, which) = of.rsplit_once('.').unwrap_or_else(|| panic!("certificate `{of}`"));
    let chain = pki.chains.get(chain).unwrap_or_else(|| panic!("no test chain in `{of}`"));
    let index = if which == "leaf" { 0 } else { which.parse::<usize>().expect("index") };
    chain.der.get(index).unwrap_or_else(|| panic!("no certificate `{of}`")).clone()
}

/// The association data for `spec`, computed with webpki's parse of the certificate (not the
/// library's DER walk, so the two are checked against each other).
fn association_data(spec: &TlsaSpec) -> Vec<u8> {
    match (&spec.of, &spec.hex) {
        (None, Some(h)) => hex(h),
        (Some(of), None) => {
            let der = named_cert(of);
            let selected = match spec.selector {
                0 => der,
                1 => {
                    let cert = rustls_pki_types::CertificateDer::from(der.as_slice());
                    let ee = webpki::EndEntityCert::try_from(&cert).expect("certificate");
                    ee.subject_public_key_info().as_ref().to_vec()
                }
                other => panic!("selector {other} cannot be computed: give `hex`"),
            };
            match spec.matching {
                0 => selected,
                1 => ring::digest::digest(&ring::digest::SHA256, &selected).as_ref().to_vec(),
                2 => ring::digest::digest(&ring::digest::SHA512, &selected).as_ref().to_vec(),
                other => panic!("matching type {other} cannot be computed: give `hex`"),
            }
        }
        _ => panic!("exactly one of `of` and `hex`"),
    }
}

#[test]
fn tlsa_vectors() {
    let file: TlsaFile = load("tlsa.toml");
    let mut r = Report::default();
    for c in &file.case {
        let (id, name) = (&c.id, &c.name);
        let chain = match (&c.chain, &c.chain_text) {
            (Some(chain), None) => chain_bytes(chain, &c.format),
            (None, Some(text)) => text.as_bytes().to_vec(),
            _ => panic!("{name}: exactly one of chain and chain_text"),
        };
        let records: Vec<TlsaRecord> = c
            .tlsa
            .iter()
            .map(|t| TlsaRecord {
                usage: t.usage,
                selector: t.selector,
                matching_type: t.matching,
                data: association_data(t),
            })
            .collect();
        let names: Vec<Domain> = c.names.iter().map(|n| Domain::parse(n).expect("name")).collect();
        let at = START.checked_add_signed(c.days * 86_400).expect("time");
        if let Some(want) = c.usable {
            let got = tlsa::usable(&records).len();
            r.check(got == want, id, name, || format!("{got} usable records, want {want}"));
        }
        let got = tlsa::verify(&records, &chain, &names, at);
        match (&got, c.expect.as_str()) {
            (DaneMatch::Passed { by }, "pass") => {
                if let Some(want) = &c.by {
                    r.check(by.as_str() == want, id, name, || format!("passed by {by}, want {want}"));
                }
            }
            (DaneMatch::Failed { reason, detail }, "fail") => {
                if let Some(want) = &c.reason {
                    r.check(reason.as_str() == want, id, name, || {
                        format!("reason {reason} ({detail}), want {want}")
                    });
                }
                if let Some(want) = &c.detail {
                    r.check(detail.contains(want.as_str()), id, name, || {
                        format!("detail `{detail}` lacks `{want}`")
                    });
                }
            }
            (DaneMatch::NoUsableRecords, "no-usable-records") => {}
            (got, want) => r.check(false, id, name, || format!("got {got:?}, want {want}")),
        }
    }
    r.finish("tlsa.toml", file.case.len());
}

// ---------------------------------------------------------------------------------------------
// engine.toml

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EngineFile {
    policies: BTreeMap<String, String>,
    scenario: Vec<Scenario>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Scenario {
    id: String,
    name: String,
    #[serde(default = "default_domain")]
    domain: String,
    #[serde(default)]
    timing: TimingOverrides,
    step: Vec<Step>,
}

fn default_domain() -> String {
    "example.test".into()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TimingOverrides {
    txt_check_interval: Option<u64>,
    no_policy_interval: Option<u64>,
    refresh_interval: Option<u64>,
    fetch_retry_interval: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Step {
    /// Seconds to move the clock forward before this step.
    #[serde(default)]
    advance: u64,
    /// DNS from now on: the RRset (one string per record).
    txt: Option<Vec<String>>,
    /// DNS from now on: `nxdomain` or `servfail`.
    dns: Option<String>,
    /// HTTPS from now on: a name from `[policies]`, or a literal body.
    policy: Option<String>,
    /// HTTPS from now on: a failure with this result type.
    fetch_error: Option<String>,
    /// What to do: `check` (default), `recheck` or `policy`.
    #[serde(default = "check_op")]
    op: String,
    /// The policy domain for this step (default: the scenario's).
    domain: Option<String>,
    /// The MX host to check.
    mx: Option<String>,
    /// `none` (no TLS), or a test chain name; absent: MX name only.
    cert: Option<String>,
    /// `passed` or `failed`: the caller's own DANE result.
    dane: Option<String>,
    /// The engine's DANE: the TLSA state of the step's MX host, for answers looked up from now
    /// on (answers are kept for their TTL): `match` (a secure `3 1 1` of the `mx` test leaf),
    /// `mismatch` (a secure `3 1 1` of another key), `unusable` (a secure RRset of PKIX-EE only),
    /// `bogus`, `failed` or `none`.
    tlsa: Option<String>,
    // Expectations.
    verdict: Option<String>,
    reason: Option<String>,
    mode: Option<String>,
    policy_id: Option<String>,
    source: Option<String>,
    record: Option<String>,
    input_error: Option<bool>,
    needs_attention: Option<bool>,
    /// Cumulative number of TXT lookups and fetches since the scenario began.
    lookups: Option<usize>,
    fetches: Option<usize>,
    /// Every TXT name looked up so far, in order.
    queried: Option<Vec<String>>,
    /// Every policy host fetched so far, in order.
    fetched_hosts: Option<Vec<String>>,
}

fn check_op() -> String {
    "check".into()
}

fn reason_from(name: &str) -> Reason {
    match name {
        "sts-policy-fetch-error" => Reason::StsPolicyFetchError,
        "sts-webpki-invalid" => Reason::StsWebpkiInvalid,
        "sts-policy-invalid" => Reason::StsPolicyInvalid,
        other => panic!("fetch_error `{other}`"),
    }
}

#[test]
fn engine_vectors() {
    let file: EngineFile = load("engine.toml");
    let mut r = Report::default();
    for s in &file.scenario {
        let defaults = Timing::default();
        let t = &s.timing;
        let tlsa = Arc::new(FakeTlsa::default());
        let h = Harness::with_tlsa(
            Timing {
                txt_check_interval: t.txt_check_interval.unwrap_or(defaults.txt_check_interval),
                no_policy_interval: t.no_policy_interval.unwrap_or(defaults.no_policy_interval),
                refresh_interval: t.refresh_interval.unwrap_or(defaults.refresh_interval),
                fetch_retry_interval: t.fetch_retry_interval.unwrap_or(defaults.fetch_retry_interval),
            },
            Some(Arc::clone(&tlsa)),
        );
        for (i, step) in s.step.iter().enumerate() {
            let label = format!("{} step {}", s.name, i + 1);
            if let Some(state) = &step.tlsa {
                let mx = step.mx.as_deref().unwrap_or("mx.example.test");
                tlsa.set(mx, tlsa_state(state));
            }
            run_step(&mut r, &file.policies, s, step, &h, &label);
        }
    }
    r.finish("engine.toml", file.scenario.len());
}

/// The TLSA state a vector names (see `Step::tlsa`).
fn tlsa_state(name: &str) -> TlsaLookup {
    let leaf = TlsaSpec { usage: 3, selector: 1, matching: 1, of: Some("mx.leaf".into()), hex: None };
    let record = |usage: u8, data: Vec<u8>| TlsaRecord { usage, selector: 1, matching_type: 1, data };
    let secure = |records| TlsaLookup::Secure { records, ttl: 3600, base: None };
    match name {
        "match" => secure(vec![record(3, association_data(&leaf))]),
        "mismatch" => secure(vec![record(3, vec![0x5a; 32])]),
        "unusable" => secure(vec![record(1, association_data(&leaf))]),
        "bogus" => TlsaLookup::Bogus("RRSIG does not validate".into()),
        "failed" => TlsaLookup::Failed("timed out".into()),
        "none" => TlsaLookup::NotApplicable,
        other => panic!("tlsa `{other}`"),
    }
}

fn run_step(
    r: &mut Report,
    policies: &BTreeMap<String, String>,
    s: &Scenario,
    step: &Step,
    h: &Harness,
    label: &str,
) {
    let id = s.id.as_str();
    h.clock.advance(step.advance);
    if let Some(records) = &step.txt {
        h.dns.set_records(&records.iter().map(String::as_str).collect::<Vec<_>>());
    }
    match step.dns.as_deref() {
        Some("nxdomain") => h.dns.set(Err(DnsError::NotFound)),
        Some("servfail") => h.dns.set(Err(DnsError::Temporary("SERVFAIL".into()))),
        Some(other) => panic!("dns `{other}`"),
        None => {}
    }
    if let Some(p) = &step.policy {
        h.http.set_body(policies.get(p).unwrap_or(p));
    }
    if let Some(e) = &step.fetch_error {
        h.http.set_error(reason_from(e), "injected failure");
    }
    let domain = step.domain.as_deref().unwrap_or(&s.domain);
    let chain = step.cert.as_deref().filter(|c| *c != "none").map(|c| chain_bytes(c, "pem"));
    let tls = match (step.cert.as_deref(), &chain) {
        (None, _) => Tls::NotChecked,
        (Some("none"), _) => Tls::NotNegotiated,
        (Some(_), Some(bytes)) => Tls::Chain(bytes),
        (Some(_), None) => unreachable!(),
    };
    let dane = match step.dane.as_deref() {
        None => Dane::NotApplicable,
        Some("passed") => Dane::Passed,
        Some("failed") => Dane::Failed,
        Some(other) => panic!("dane `{other}`"),
    };
    match step.op.as_str() {
        "check" => {
            let mx = step.mx.as_deref().unwrap_or("mx.example.test");
            match h.engine.check_with(domain, mx, tls, dane) {
                Ok(o) => {
                    if let Some(v) = &step.verdict {
                        r.check(o.verdict.as_str() == v, id, label, || {
                            format!("verdict {} ({:?}), want {v}", o.verdict, o)
                        });
                    }
                    if let Some(want) = &step.reason {
                        r.check(o.reason.as_str() == want, id, label, || {
                            format!("reason {}, want {want} ({:?})", o.reason, o.detail)
                        });
                    }
                    expect_policy(r, id, label, step, o.policy.as_deref());
                    r.check(step.input_error != Some(true), id, label, || "expected an input error".into());
                }
                Err(e) => r.check(step.input_error == Some(true), id, label, || format!("input error {e}")),
            }
        }
        "policy" | "recheck" => {
            let res = if step.op == "policy" { h.engine.policy(domain) } else { h.engine.recheck(domain) };
            match res {
                Ok(Some(res)) => {
                    expect_policy(r, id, label, step, res.policy.as_deref());
                    if let Some(src) = &step.source {
                        r.check(res.source.as_str() == src, id, label, || format!("source {:?}", res.source));
                    }
                    if let Some(want) = &step.record {
                        let got = match &res.record {
                            RecordState::NotLooked => "not-looked".to_owned(),
                            RecordState::Found(id) => format!("found:{id}"),
                            RecordState::Absent => "absent".to_owned(),
                            RecordState::DnsError => "dns-error".to_owned(),
                        };
                        r.check(&got == want, id, label, || format!("record {got}, want {want}"));
                    }
                    if let Some(want) = &step.reason {
                        let got = res.error.as_ref().map_or("none", |e| e.reason.as_str());
                        r.check(got == want, id, label, || format!("error {got}, want {want}"));
                    }
                    if let Some(want) = step.needs_attention {
                        let got = res.needs_attention();
                        r.check(got == want, id, label, || format!("needs_attention {got}, want {want}"));
                    }
                }
                Ok(None) => {
                    r.check(step.mode.as_deref() == Some("no-policy"), id, label, || "address literal".into())
                }
                Err(e) => r.check(step.input_error == Some(true), id, label, || format!("input error {e}")),
            }
        }
        other => panic!("op `{other}`"),
    }
    if let Some(n) = step.lookups {
        r.check(h.dns.lookups() == n, id, label, || format!("{} TXT lookups, want {n}", h.dns.lookups()));
    }
    if let Some(n) = step.fetches {
        r.check(h.http.fetches() == n, id, label, || format!("{} fetches, want {n}", h.http.fetches()));
    }
    if let Some(q) = &step.queried {
        let got = h.dns.names.lock().clone();
        r.check(&got == q, id, label, || format!("queried {got:?}"));
    }
    if let Some(q) = &step.fetched_hosts {
        let got = h.http.hosts.lock().clone();
        r.check(&got == q, id, label, || format!("fetched {got:?}"));
    }
}

fn expect_policy(
    r: &mut Report,
    id: &str,
    label: &str,
    step: &Step,
    policy: Option<&mtasts::cache::CachedPolicy>,
) {
    if let Some(m) = &step.mode {
        let got = policy.map_or("no-policy", |p| p.mode().as_str());
        r.check(got == m, id, label, || format!("mode {got}, want {m}"));
    }
    if let Some(want) = &step.policy_id {
        let got = policy.map(|p| p.id.as_str());
        r.check(got == Some(want.as_str()), id, label, || format!("policy id {got:?}, want {want}"));
    }
}

// ---------------------------------------------------------------------------------------------
// Coverage of the requirement ids (docs/conformance.md)

/// The requirement ids (docs/conformance.md) a library can decide, which the vectors must cover between them.
const REQUIRED: &[(&str, u32)] =
    &[("DISC", 15), ("HOST", 7), ("POL", 18), ("CACHE", 15), ("MX", 11), ("APPLY", 11)];
/// Certificate ids about names and chains (the rest concern the SMTP session itself).
const REQUIRED_CERT: &[&str] = &["CERT-2", "CERT-3", "CERT-4", "CERT-5", "CERT-6", "CERT-12"];
/// Ids that belong to other layers and are tested there (see tests/vectors/README.md).
const ELSEWHERE: &[&str] = &["CACHE-12", "MX-8", "APPLY-10"];

#[test]
fn vectors_cover_the_requirement_ids() {
    let mut ids = BTreeSet::new();
    let mut total = 0;
    let d: DomainFile = load("domain.toml");
    let t: TxtFile = load("txt.toml");
    let p: PolicyFile = load("policy.toml");
    let m: MxFile = load("mx.toml");
    let c: CertFile = load("cert.toml");
    let e: EngineFile = load("engine.toml");
    let tl: TlsaFile = load("tlsa.toml");
    for id in d
        .case
        .iter()
        .map(|c| &c.id)
        .chain(t.case.iter().map(|c| &c.id))
        .chain(p.case.iter().map(|c| &c.id))
        .chain(m.case.iter().map(|c| &c.id))
        .chain(c.case.iter().map(|c| &c.id))
        .chain(e.scenario.iter().map(|c| &c.id))
        .chain(tl.case.iter().map(|c| &c.id))
    {
        total += 1;
        let (prefix, n) = id.rsplit_once('-').unwrap_or_else(|| panic!("bad id `{id}`"));
        assert!(n.parse::<u32>().is_ok(), "bad id `{id}`");
        assert!(
            [
                "DISC",
                "HOST",
                "FETCH",
                "POL",
                "CACHE",
                "MX",
                "CERT",
                "APPLY",
                "DANE",
                "DANE-TLSA",
                "DANE-V",
                "SEC"
            ]
            .contains(&prefix),
            "unknown requirement category in `{id}`"
        );
        ids.insert(id.clone());
    }
    assert!(total >= 150, "only {total} vectors");
    let mut missing = Vec::new();
    for (prefix, count) in REQUIRED {
        for n in 1..=*count {
            let id = format!("{prefix}-{n}");
            if !ids.contains(&id) && !ELSEWHERE.contains(&id.as_str()) {
                missing.push(id);
            }
        }
    }
    missing.extend(REQUIRED_CERT.iter().filter(|id| !ids.contains(**id)).map(|s| s.to_string()));
    let dane = dane_tlsa_ids();
    assert!(dane.len() >= 15, "docs/dane.md lists only {} DANE-TLSA ids", dane.len());
    missing.extend(dane.iter().filter(|id| !ids.contains(*id)).cloned());
    assert!(missing.is_empty(), "requirement ids without a vector: {missing:?}");
    let unknown: Vec<_> = tl.case.iter().map(|c| &c.id).filter(|id| !dane.contains(*id)).collect();
    assert!(unknown.is_empty(), "tlsa.toml cites ids docs/dane.md does not list: {unknown:?}");
}

/// The ids of the "TLSA matching" table of docs/dane.md: the first cell of each row.
fn dane_tlsa_ids() -> BTreeSet<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/dane.md");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let section = text.split("\n## TLSA matching\n").nth(1).expect("docs/dane.md: no `## TLSA matching`");
    let section = section.split("\n## ").next().unwrap_or(section);
    section
        .lines()
        .filter_map(|line| line.strip_prefix("| DANE-TLSA-"))
        .map(|rest| format!("DANE-TLSA-{}", rest.split(' ').next().unwrap_or_default()))
        .collect()
}
