//! `mtasts check`: what a sender would decide for a domain, shown to the person diagnosing it.
//!
//! The TXT record is always looked up (this is a diagnostic), the policy fetched, and each MX host
//! (from `--mx`, else from DNS, else the domain itself: RFC 5321 implicit MX) judged against the
//! policy's patterns. MX hosts are not contacted, so certificates are not checked here.
//! `--json` prints the object documented in README ("JSON output of `mtasts check`").
//! With a store (`--cache PATH` or `[cache] path`), a stored policy whose id is unchanged is reused
//! (`"source": "cache"`) and a stored policy applies when discovery or the fetch fails, exactly as
//! in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use mtasts::cache::CachedPolicy;
use mtasts::cert::rfc3339;
use mtasts::config::Config;
use mtasts::engine::{DnsError, RecordState, Resolution, StoreState};
use mtasts::{Domain, Mode, Reason, Verdict};
use serde_json::{Value, json};

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
    dane: Option<std::sync::Arc<mtasts::engine::DaneInfo>>,
}

/// Everything `check` found.
struct Report {
    domain: String,
    resolution: Option<Resolution>,
    mx: Vec<MxLine>,
    mx_note: Option<String>,
    store: StoreState,
}

pub fn run(args: &Args) -> Result<ExitCode, String> {
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
            },
            Err(e) => MxLine {
                preference,
                host: host.clone(),
                matches: false,
                verdict: "error",
                reason: Some("invalid-host".into()),
                detail: Some(e.to_string()),
                dane: None,
            },
        };
        mx.push(line);
    }
    let report = Report { domain: domain_name, resolution, mx, mx_note, store: engine.store_state() };
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
                json!({
                    "host": m.host, "matches": m.matches, "verdict": m.verdict, "reason": m.reason,
                    "dane": m.dane.as_deref().map(dane_json),
                })
            })
            .collect();
    let store = json!({ "state": r.store.as_str(), "detail": r.store.detail() });
    json!({ "domain": r.domain, "record": record, "policy": policy, "error": error, "mx": mx, "store": store })
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
    let record = match &res.record {
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
            push(
                &mut out,
                format!("Policy:  https://mta-sts.{}/.well-known/mta-sts.txt ({source})", r.domain),
            );
            push(
                &mut out,
                format!(
                    "         mode {}, max_age {} ({})",
                    p.mode(),
                    p.policy.max_age(),
                    human_secs(p.policy.max_age())
                ),
            );
            push(
                &mut out,
                format!(
                    "         id {}, fetched {}, expires {}",
                    p.id,
                    rfc3339(p.fetched_at),
                    rfc3339(p.expires_at)
                ),
            );
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
        if m.reason.as_deref() == Some("mx-mismatch") {
            advice.push(format!(
                "{} is an MX of {} but not in the policy: add `mx: {}` or correct the MX record",
                m.host, r.domain, m.host
            ));
        }
    }
    if res.policy.is_some() && !r.mx.is_empty() {
        push(&mut out, "  (MX hosts are not contacted: certificates are not checked by this command)".into());
    }
    if !advice.is_empty() {
        push(&mut out, "Advice:".into());
        for a in advice {
            push(&mut out, format!("  - {a}"));
        }
    }
    out
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
