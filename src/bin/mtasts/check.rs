//! `mtasts check`: what a sender would decide for a domain, shown to the person diagnosing it.
//!
//! The TXT record is always looked up (this is a diagnostic), the policy fetched, and each MX host
//! (from `--mx`, else from DNS, else the domain itself: RFC 5321 implicit MX) judged against the
//! policy's patterns. Without `--connect`, MX hosts are not contacted, so certificates are not
//! checked. With `--connect`, each MX host is contacted (EHLO, STARTTLS, the TLS handshake, QUIT:
//! `connect.rs`) and the session is judged by the engine's own check (`Engine::check` with the
//! presented chain: MTA-STS and DANE), one thread per MX so that one slow host does not hold up
//! the others. `--json` prints the object documented in README ("JSON output of `mtasts check`"),
//! with `mx[].connection` under `--connect`.
//! With a store (`--cache PATH` or `[cache] path`), a stored policy whose id is unchanged is reused
//! (`"source": "cache"`) and a stored policy applies when discovery or the fetch fails, exactly as
//! in the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use mtasts::cache::CachedPolicy;
use mtasts::cert::rfc3339;
use mtasts::config::Config;
use mtasts::dns::DnsResolver;
use mtasts::engine::{DaneInfo, DnsError, Override, RecordState, Resolution, StoreState};
use mtasts::ports::{AddressResolver, TlsaRecord};
use mtasts::tlsa::{DaneMatch, UsableTlsa};
use mtasts::{Domain, Engine, Mode, Reason, Verdict};
use serde_json::{Value, json};

use crate::connect::{self, Probe, Settings};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The Policy Domain (normally the recipient domain).
    domain: String,
    /// An MX host to judge (repeatable); default: the domain's MX records.
    #[arg(long = "mx", value_name = "HOST")]
    mx: Vec<String>,
    /// Configuration file (default: $MTASTS_CONFIG, else /etc/mtasts/mtasts.toml if present).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Trust anchors (PEM) for the policy host, instead of [https] ca_file or the system's roots.
    #[arg(long = "ca-file", value_name = "PEM")]
    ca_file: Option<PathBuf>,
    /// Policy store: a SQLite file, or `memory` (default: [cache] path of the configuration).
    #[arg(long, value_name = "PATH|memory")]
    cache: Option<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Contact each MX (EHLO, STARTTLS, TLS handshake, QUIT; no mail is sent) and judge the
    /// chain it presents.
    #[arg(long)]
    connect: bool,
    /// The SMTP port for `--connect` (other values than 25 are for test servers).
    #[arg(long, value_name = "PORT", requires = "connect", default_value_t = 25,
          value_parser = clap::value_parser!(u16).range(1..))]
    port: u16,
    /// With `--connect`: bound, in seconds, of the connection to each address, of each SMTP reply
    /// and of the TLS handshake.
    #[arg(long, value_name = "SECONDS", requires = "connect", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    timeout: u64,
    /// With `--connect`: the EHLO name (default: the local address, as an address literal).
    #[arg(long, value_name = "NAME", requires = "connect")]
    ehlo: Option<String>,
}

/// One judged MX host.
struct MxLine {
    preference: Option<u16>,
    host: String,
    matches: bool,
    verdict: &'static str,
    reason: Option<String>,
    detail: Option<String>,
    /// What DANE found for this MX (`None`: DANE does not apply).
    dane: Option<Arc<DaneInfo>>,
    /// With `--connect`: what contacting the MX gave, and the engine's verdict on it.
    connection: Option<Connection>,
}

/// One MX contacted (`--connect`).
struct Connection {
    probe: Probe,
    /// The engine's judgement of the session (`None`: no address answered).
    judged: Option<Judged>,
}

/// The verdict on a session, and what matched.
struct Judged {
    verdict: &'static str,
    reason: Option<String>,
    detail: Option<String>,
    /// The policy pattern the MX host matched (none without a policy in force).
    mx_pattern: Option<String>,
    /// The TLSA records that authenticate the presented chain, each on its own.
    tlsa: Vec<String>,
}

/// Everything `check` found.
struct Report {
    domain: String,
    resolution: Option<Resolution>,
    mx: Vec<MxLine>,
    mx_note: Option<String>,
    store: StoreState,
    /// The per-domain override that replaced discovery, if any.
    overridden: Option<Arc<Override>>,
}

pub fn run(args: &Args) -> Result<ExitCode, String> {
    let ehlo = match &args.ehlo {
        Some(name) => Some(ehlo_name(name)?),
        None => None,
    };
    let mut config = Config::load(args.config.as_deref()).map_err(|e| e.to_string())?;
    mtasts::logging::apply(&config.log);
    if let Some(ca) = &args.ca_file {
        config.https.ca_file = Some(ca.clone());
    }
    if let Some(cache) = &args.cache {
        config.cache.path = cache.clone();
    }
    let engine = config.build_engine().map_err(|e| e.to_string())?;
    let domain_name = match Domain::parse(&args.domain) {
        Ok(d) => d.to_string(),
        Err(mtasts::domain::DomainError::AddressLiteral) => args.domain.clone(),
        Err(e) => return Err(format!("{}: {e}", args.domain)),
    };
    // A diagnostic always asks DNS, even when the store holds the policy.
    let resolution = engine.recheck(&args.domain).map_err(|e| e.to_string())?;

    let (hosts, mx_note) = if args.mx.is_empty() {
        mx_hosts(&config, &args.domain)?
    } else {
        (args.mx.iter().map(|h| (None, h.clone())).collect(), None)
    };
    let mut mx = Vec::new();
    for (preference, host) in hosts {
        let line = match engine.check_mx(&args.domain, &host) {
            Ok(o) => MxLine {
                preference,
                host: mtasts::mx::parse_host(&host).map_or(host.clone(), |d| d.to_string()),
                matches: o.mx_matches,
                verdict: o.verdict.as_str(),
                reason: (o.reason != Reason::None && o.verdict != Verdict::NoPolicy)
                    .then(|| o.reason.as_str().to_owned()),
                detail: o.detail.filter(|_| o.verdict != Verdict::NoPolicy).map(String::from),
                dane: o.dane,
                connection: None,
            },
            Err(e) => MxLine {
                preference,
                host: host.clone(),
                matches: false,
                verdict: "error",
                reason: Some("invalid-host".into()),
                detail: Some(e.to_string()),
                dane: None,
                connection: None,
            },
        };
        mx.push(line);
    }
    if args.connect {
        let settings = Settings { port: args.port, timeout: Duration::from_secs(args.timeout), ehlo };
        let dns = config.dns_resolver().map_err(|e| e.to_string())?;
        let connections = connect_all(&engine, &dns, &args.domain, &mx, &settings);
        for (line, c) in mx.iter_mut().zip(connections) {
            line.connection = Some(c);
        }
    }
    let overridden = resolution.as_ref().and_then(|r| r.overridden.clone());
    let report =
        Report { domain: domain_name, resolution, mx, mx_note, store: engine.store_state(), overridden };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&to_json(&report)).map_err(|e| e.to_string())?);
    } else {
        print!("{}", to_text(&report));
    }
    Ok(ExitCode::SUCCESS)
}

/// The MX hosts of `domain` in preference order; the domain itself when it has none (MX-9).
#[allow(clippy::type_complexity)]
fn mx_hosts(config: &Config, domain: &str) -> Result<(Vec<(Option<u16>, String)>, Option<String>), String> {
    let Ok(d) = Domain::parse(domain) else {
        return Ok((Vec::new(), Some("an address literal has no MX records".into())));
    };
    let dns = config.dns_resolver().map_err(|e| e.to_string())?;
    match dns.mx(&d) {
        Ok(records) if records.iter().any(|r| r.exchange.is_empty() || r.exchange == ".") => {
            Ok((Vec::new(), Some("null MX (RFC 7505): the domain accepts no mail".into())))
        }
        Ok(records) => Ok((records.into_iter().map(|r| (Some(r.preference), r.exchange)).collect(), None)),
        Err(DnsError::NotFound) => {
            Ok((vec![(None, d.to_string())], Some("no MX records: the domain itself is the MX".into())))
        }
        Err(DnsError::Temporary(why)) => Ok((Vec::new(), Some(format!("MX lookup failed: {why}")))),
    }
}

/// An EHLO name: a host name, or an address literal (`[192.0.2.1]`, `[IPv6:2001:db8::1]`).
fn ehlo_name(name: &str) -> Result<String, String> {
    if let Some(inner) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        let ip = inner.strip_prefix("IPv6:").map_or_else(
            || inner.parse::<std::net::Ipv4Addr>().map(std::net::IpAddr::from).ok(),
            |v6| v6.parse::<std::net::Ipv6Addr>().map(std::net::IpAddr::from).ok(),
        );
        return ip.map(|_| name.to_owned()).ok_or_else(|| {
            format!("--ehlo {name}: not an address literal (`[192.0.2.1]` or `[IPv6:2001:db8::1]`)")
        });
    }
    Domain::parse(name)
        .map(|d| d.to_string())
        .map_err(|e| format!("--ehlo {name}: not a host name or an address literal ({e})"))
}

/// Contacts every MX at once (one thread each) and judges each session with the engine.
fn connect_all(
    engine: &Engine,
    dns: &DnsResolver,
    domain: &str,
    mx: &[MxLine],
    settings: &Settings,
) -> Vec<Connection> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = mx
            .iter()
            .map(|line| scope.spawn(move || connect_one(engine, dns, domain, &line.host, settings)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| Connection {
                    probe: Probe {
                        attempts: Vec::new(),
                        session: None,
                        error: Some("internal error: the probe of this MX panicked".into()),
                    },
                    judged: None,
                })
            })
            .collect()
    })
}

fn connect_one(
    engine: &Engine,
    dns: &DnsResolver,
    domain: &str,
    host: &str,
    settings: &Settings,
) -> Connection {
    let addresses = match dns.addresses(host) {
        Ok(a) => a,
        Err(e) => {
            let error = match e {
                DnsError::NotFound => format!("{host} has no A or AAAA record"),
                DnsError::Temporary(why) => format!("address lookup of {host} failed: {why}"),
            };
            return Connection {
                probe: Probe { attempts: Vec::new(), session: None, error: Some(error) },
                judged: None,
            };
        }
    };
    let probe = connect::probe(host, &addresses, settings);
    let judged = probe.session.as_ref().map(|s| {
        let chain = s.tls.as_ref().map(|t| t.chain.concat());
        judge(engine, domain, host, chain.as_deref())
    });
    Connection { probe, judged }
}

/// The engine's verdict on a session (`chain`: what the MX presented; `None`: no TLS), the
/// same call an MTA makes; then what matched, with the crate's pure functions.
fn judge(engine: &Engine, domain: &str, host: &str, chain: Option<&[u8]>) -> Judged {
    let o = match engine.check(domain, host, chain) {
        Ok(o) => o,
        Err(e) => {
            return Judged {
                verdict: "error",
                reason: None,
                detail: Some(e.to_string()),
                mx_pattern: None,
                tlsa: Vec::new(),
            };
        }
    };
    let name = mtasts::mx::parse_host(host).ok();
    let mx_pattern = match (&o.policy, &name) {
        (Some(p), Some(name)) if p.mode() != Mode::None => {
            p.policy.mx().iter().find(|pat| pat.matches(name)).map(ToString::to_string)
        }
        _ => None,
    };
    let tlsa = match (o.dane.as_deref(), chain, &name) {
        (Some(d), Some(chain), Some(name)) => {
            let names: Vec<Domain> = d.base().into_iter().chain([name]).cloned().collect();
            matching_tlsa(d.records(), chain, &names, engine.now())
        }
        _ => Vec::new(),
    };
    Judged {
        verdict: o.verdict.as_str(),
        reason: (o.reason != Reason::None && o.verdict != Verdict::NoPolicy)
            .then(|| o.reason.as_str().to_owned()),
        detail: o.detail.filter(|_| o.verdict != Verdict::NoPolicy).map(String::from),
        mx_pattern,
        tlsa,
    }
}

/// The records of a secure TLSA RRset that authenticate `chain` each on its own: among those
/// that take part in matching (usable, digest agility applied), the ones that
/// [`mtasts::tlsa::verify`] passes alone. `names`: the TLSA base domain and the MX host name,
/// the names a DANE-TA leaf may carry.
fn matching_tlsa(records: &[TlsaRecord], chain: &[u8], names: &[Domain], now: u64) -> Vec<String> {
    let usable = mtasts::tlsa::usable(records);
    records
        .iter()
        .filter(|r| UsableTlsa::parse(r).is_ok_and(|u| usable.contains(&u)))
        .filter(|r| {
            let one = std::slice::from_ref(*r);
            matches!(mtasts::tlsa::verify(one, chain, names, now), DaneMatch::Passed { .. })
        })
        .map(ToString::to_string)
        .collect()
}

fn policy_json(p: &CachedPolicy, source: &str) -> Value {
    json!({
        "mode": p.mode().as_str(),
        "mx": p.policy.mx().iter().map(ToString::to_string).collect::<Vec<_>>(),
        "max_age": p.policy.max_age(),
        "id": p.id.as_str(),
        "fetched_at": rfc3339(p.fetched_at),
        "expires_at": rfc3339(p.expires_at),
        "source": source,
    })
}

fn to_json(r: &Report) -> Value {
    let res = r.resolution.as_ref();
    let record = match res.map(|r| &r.record) {
        Some(RecordState::Found(id)) => json!({ "id": id.as_str() }),
        _ => Value::Null,
    };
    let policy = res
        .and_then(|res| res.policy.as_ref().map(|p| policy_json(p, res.source.as_str())))
        .unwrap_or(Value::Null);
    let error = res
        .and_then(|res| res.error.as_ref())
        .map_or(Value::Null, |e| json!({ "result_type": e.reason.as_str(), "detail": e.detail }));
    let mx: Vec<Value> =
        r.mx.iter()
            .map(|m| {
                let mut v = json!({
                    "host": m.host, "matches": m.matches, "verdict": m.verdict, "reason": m.reason,
                    "dane": m.dane.as_deref().map(dane_json),
                });
                // Only under `--connect`: the object is otherwise exactly as before.
                if let (Some(c), Some(obj)) = (&m.connection, v.as_object_mut()) {
                    obj.insert("connection".into(), connection_json(c));
                }
                v
            })
            .collect();
    let store = json!({ "state": r.store.as_str(), "detail": r.store.detail() });
    let overridden = r.overridden.as_deref().map_or(Value::Null, crate::overrides::override_json);
    json!({ "domain": r.domain, "record": record, "policy": policy, "error": error, "mx": mx, "store": store,
            "override": overridden })
}

/// `mx[].connection` (`--connect`): the addresses tried, the session, the chain, the verdict on
/// it and what matched.
fn connection_json(c: &Connection) -> Value {
    let p = &c.probe;
    let session = p.session.as_ref();
    let tls = session.and_then(|s| s.tls.as_ref());
    let chain: Vec<Value> = tls.map_or(&[][..], |t| &t.chain[..]).iter().map(|der| cert_json(der)).collect();
    let j = c.judged.as_ref();
    json!({
        "addresses": p.attempts.iter().map(|a| json!({"address": a.address.ip().to_string(), "port": a.address.port(), "error": a.error})).collect::<Vec<_>>(),
        "address": session.map(|s| s.address.ip().to_string()),
        "greeting": session.map(|s| s.greeting.clone()),
        "starttls": session.map(|s| s.starttls),
        "tls": tls.map(|t| json!({"version": t.version, "cipher": t.cipher, "sni": t.sni})),
        "chain": chain,
        "verdict": j.map(|j| j.verdict),
        "reason": j.and_then(|j| j.reason.clone()),
        "detail": j.and_then(|j| j.detail.clone()),
        "matched": j.map(|j| json!({"mx_pattern": j.mx_pattern, "tlsa": j.tlsa})),
        "error": p.error.clone().or_else(|| session.and_then(|s| s.note.clone())),
    })
}

fn cert_json(der: &[u8]) -> Value {
    match connect::summarize(der) {
        Ok(c) => json!({"subject": c.subject, "sans": c.sans, "issuer": c.issuer, "not_after": c.not_after}),
        Err(e) => json!({"error": e}),
    }
}

/// `mx[].dane`: whether the TLSA RRset was DNSSEC-secure, its records (`usage selector matching
/// hex`), how many are usable, and DANE's state for this check.
fn dane_json(d: &mtasts::engine::DaneInfo) -> Value {
    let records: Vec<String> = d.records().iter().map(ToString::to_string).collect();
    json!({ "secure": d.secure(), "records": records, "usable": d.usable, "state": dane_state(d) })
}

/// DANE's state for a check made before connecting (this command never connects).
fn dane_state(d: &mtasts::engine::DaneInfo) -> &'static str {
    use mtasts::Dane;
    match d.dane {
        Dane::Pending | Dane::Passed => "tls-required",
        Dane::DnssecInvalid => "dnssec-invalid",
        Dane::Failed => "tlsa-invalid",
        Dane::Required => "dane-required",
        Dane::NotApplicable => "not-applicable",
    }
}

fn to_text(r: &Report) -> String {
    let mut out = String::new();
    let mut advice: Vec<String> = Vec::new();
    let push = |out: &mut String, s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    push(&mut out, format!("Domain:  {}", r.domain));
    if let Some(detail) = r.store.detail() {
        // Degraded protection is said first: it changes how every line below may be read.
        push(&mut out, format!("Store:   {}: {detail}", r.store.as_str()));
    }
    let Some(res) = &r.resolution else {
        push(&mut out, "Policy:  none (an address literal has no MTA-STS policy)".into());
        return out;
    };
    let txt_name = format!("_mta-sts.{}", r.domain);
    if let Some(o) = &r.overridden {
        push(&mut out, format!("Override: {}", crate::overrides::override_text(o)));
    }
    let record = match &res.record {
        RecordState::NotLooked if r.overridden.is_some() => format!("{txt_name}: not looked up (override)"),
        RecordState::Found(id) => format!("{txt_name}: v=STSv1, id={id}"),
        RecordState::Absent if res.error.is_none() => format!("{txt_name}: no MTA-STS record"),
        RecordState::Absent => format!("{txt_name}: no usable record"),
        RecordState::DnsError => format!("{txt_name}: lookup failed"),
        RecordState::NotLooked => format!("{txt_name}: not looked up (cached)"),
    };
    push(&mut out, format!("TXT:     {record}"));
    if let Some(e) = &res.error {
        push(&mut out, format!("Error:   {}: {}", e.reason, e.detail));
        advice.extend(advice_for(e.reason, &e.detail, &r.domain));
    }
    match &res.policy {
        Some(p) => {
            let source = if res.source.as_str() == "network" { "fetched now" } else { "from cache" };
            match r.overridden.as_deref().and_then(Override::policy_file) {
                Some(file) => push(&mut out, format!("Policy:  {} (pinned by override)", file.display())),
                None if r.overridden.is_some() => push(&mut out, "Policy:  pinned by override".into()),
                None => push(
                    &mut out,
                    format!("Policy:  https://mta-sts.{}/.well-known/mta-sts.txt ({source})", r.domain),
                ),
            }
            push(
                &mut out,
                format!(
                    "         mode {}, max_age {} ({})",
                    p.mode(),
                    p.policy.max_age(),
                    human_secs(p.policy.max_age())
                ),
            );
            let times = if r.overridden.is_some() {
                format!("read {}, never expires while the override is set", rfc3339(p.fetched_at))
            } else {
                format!("fetched {}, expires {}", rfc3339(p.fetched_at), rfc3339(p.expires_at))
            };
            push(&mut out, format!("         id {}, {times}", p.id));
            for m in p.policy.mx() {
                push(&mut out, format!("         mx: {m}"));
            }
            for w in p.policy.warnings() {
                push(&mut out, format!("         {w}"));
            }
            if p.mode() == Mode::Testing {
                advice.push("mode testing: failures are reported but mail is delivered; switch to enforce once reports are clean".into());
            }
            if p.mode() != Mode::None && p.policy.max_age() < 86_400 {
                advice.push(format!(
                    "max_age {} is under a day; weeks are usual (604800 = one week)",
                    p.policy.max_age()
                ));
            }
        }
        None if res.error.is_some() => {
            push(
                &mut out,
                "Policy:  none could be had; senders deliver as if the domain had no MTA-STS".into(),
            );
        }
        None if r.overridden.is_some() => {
            push(&mut out, "Policy:  none (MTA-STS skipped by override)".into());
        }
        None => push(&mut out, "Policy:  none".into()),
    }
    push(&mut out, "MX:".into());
    if let Some(note) = &r.mx_note {
        push(&mut out, format!("  ({note})"));
    }
    for m in &r.mx {
        let pref = m.preference.map_or_else(|| "  ".to_owned(), |p| format!("{p:>2}"));
        let mut line = format!("  {pref} {:<32} {}", m.host, m.verdict);
        if let Some(reason) = &m.reason {
            line.push_str(&format!("  {reason}"));
        }
        if let Some(detail) = &m.detail {
            line.push_str(&format!(": {detail}"));
        }
        if m.connection.is_some() {
            // The verdict after connecting is given below, on its own line.
            line.push_str("  (the name alone, before connecting)");
        }
        push(&mut out, line);
        if let Some(d) = &m.dane {
            let line = if d.secure() {
                format!(
                    "       DANE: {} DNSSEC-secure TLSA record(s), {} usable: TLS is mandatory and DANE decides for this MX",
                    d.records().len(),
                    d.usable
                )
            } else {
                format!(
                    "       DANE: the TLSA lookup failed ({}): this MX is not used until it works",
                    dane_state(d)
                )
            };
            push(&mut out, line);
        }
        if let Some(c) = &m.connection {
            connection_text(&mut out, &mut advice, &m.host, c, m.dane.as_deref());
        }
        if m.reason.as_deref() == Some("mx-mismatch") {
            advice.push(format!(
                "{} is an MX of {} but not in the policy: add `mx: {}` or correct the MX record",
                m.host, r.domain, m.host
            ));
        }
    }
    if res.policy.is_some() && !r.mx.is_empty() && r.mx.iter().all(|m| m.connection.is_none()) {
        push(
            &mut out,
            "  (MX hosts are not contacted: certificates are not checked; `--connect` checks them)".into(),
        );
    }
    if !advice.is_empty() {
        push(&mut out, "Advice:".into());
        for a in advice {
            push(&mut out, format!("  - {a}"));
        }
    }
    out
}

/// The lines of one contacted MX, under its verdict line.
fn connection_text(
    out: &mut String,
    advice: &mut Vec<String>,
    host: &str,
    c: &Connection,
    dane: Option<&DaneInfo>,
) {
    let mut push = |s: String| {
        out.push_str("       ");
        out.push_str(&s);
        out.push('\n');
    };
    for a in &c.probe.attempts {
        match &a.error {
            Some(e) => push(format!("tried {}: {e}", a.address)),
            None => {
                let greeting = c.probe.session.as_ref().map_or("", |s| s.greeting.as_str());
                push(format!("tried {}: {greeting}", a.address));
            }
        }
    }
    let Some(s) = &c.probe.session else {
        let e = c.probe.error.as_deref().unwrap_or("no session");
        push(format!("not reached: {e}"));
        advice.push(format!("{host} could not be reached: {e}"));
        return;
    };
    let starttls = match (&s.tls, s.starttls) {
        (Some(t), _) => format!(
            "STARTTLS: offered; {}, {}, SNI {}",
            t.version,
            t.cipher,
            t.sni.as_deref().unwrap_or("(none: address literal)")
        ),
        (None, true) => format!("STARTTLS: offered; {}", s.note.as_deref().unwrap_or("no TLS session")),
        (None, false) => match &s.note {
            Some(note) => format!("STARTTLS: not offered ({note})"),
            None => "STARTTLS: not offered".to_owned(),
        },
    };
    push(starttls);
    for (i, der) in s.tls.iter().flat_map(|t| t.chain.iter()).enumerate() {
        match connect::summarize(der) {
            Ok(cert) => {
                push(format!("certificate {i}: {}", cert.subject));
                let sans = if cert.sans.is_empty() { "(none)".to_owned() } else { cert.sans.join(", ") };
                push(format!("    SANs: {sans}"));
                push(format!("    issuer: {}", cert.issuer));
                push(format!("    notAfter: {}", cert.not_after));
            }
            Err(e) => push(format!("certificate {i}: {e}")),
        }
    }
    let Some(j) = &c.judged else { return };
    if let Some(p) = &j.mx_pattern {
        push(format!("matched: MTA-STS pattern `{p}`"));
    }
    for t in &j.tlsa {
        push(format!("matched: TLSA {t}"));
    }
    if s.tls.is_some() && dane.is_some_and(|d| d.secure() && d.usable == 0) {
        push("matched: no usable TLSA record: TLS is required, the certificate is not authenticated".into());
    }
    let mut line = format!("after the handshake: {}", j.verdict);
    if s.tls.is_none() {
        line = format!("without TLS: {}", j.verdict);
    }
    if let Some(reason) = &j.reason {
        line.push_str(&format!("  {reason}"));
    }
    if let Some(detail) = &j.detail {
        line.push_str(&format!(": {detail}"));
    }
    push(line);
    let fix = match j.reason.as_deref() {
        Some("certificate-host-mismatch") => {
            format!("the certificate of {host} does not name it: add {host} to its subjectAltName")
        }
        Some("certificate-expired") => format!("renew the certificate of {host}"),
        Some("certificate-not-trusted") => {
            format!("{host} must present a chain to a trusted root, with its intermediates")
        }
        Some("starttls-not-supported" | "dane-required") => {
            format!("{host} must offer STARTTLS with a working certificate")
        }
        Some("tlsa-invalid") => format!(
            "no TLSA record of {host} matches the certificate it presents: publish a record for its current key (or present the key the records name)"
        ),
        _ => return,
    };
    advice.push(fix);
}

/// What an operator can do about a discovery or fetch failure.
fn advice_for(reason: Reason, detail: &str, domain: &str) -> Option<String> {
    let host = format!("mta-sts.{domain}");
    let d = detail.to_ascii_lowercase();
    Some(match reason {
        Reason::StsWebpkiInvalid if d.contains("not valid for") || d.contains("it is for") => {
            format!("the policy host's certificate does not name {host}: add {host} to its subjectAltName")
        }
        Reason::StsWebpkiInvalid if d.contains("expired") => format!("renew the certificate of {host}"),
        Reason::StsWebpkiInvalid => {
            format!("{host} must present a certificate from a public CA, with its intermediates")
        }
        Reason::StsPolicyInvalid if d.contains("txt records") => {
            format!("publish exactly one v=STSv1 TXT record at _mta-sts.{domain}")
        }
        Reason::StsPolicyInvalid if d.contains("txt record") => {
            format!("fix the TXT record at _mta-sts.{domain}: `v=STSv1; id=<1-32 letters or digits>`")
        }
        Reason::StsPolicyInvalid => "fix the policy file; `mtasts lint FILE` lists every problem".into(),
        Reason::StsPolicyFetchError if d.contains("redirect") => {
            format!(
                "serve the policy at https://{host}/.well-known/mta-sts.txt directly: redirects are not followed"
            )
        }
        Reason::StsPolicyFetchError if d.contains("content-type") => "serve the policy as text/plain".into(),
        Reason::StsPolicyFetchError if d.contains("http 404") => {
            format!("publish the policy at https://{host}/.well-known/mta-sts.txt, or remove the TXT record")
        }
        Reason::StsPolicyFetchError if d.contains("txt lookup") => {
            "the DNS lookup failed; try again later".into()
        }
        Reason::StsPolicyFetchError => {
            format!("make https://{host}/.well-known/mta-sts.txt reachable (status 200)")
        }
        _ => return None,
    })
}

fn human_secs(secs: u32) -> String {
    let plural = |n: u32, unit: &str| format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
    match secs {
        s if s >= 86_400 && s % 86_400 == 0 => plural(s / 86_400, "day"),
        s if s >= 3600 && s % 3600 == 0 => plural(s / 3600, "hour"),
        s => format!("{s} s"),
    }
}
