//! Sessions an MTA judged itself and reports one datagram at a time: the datagrams of sys4's
//! libtlsrpt, which Postfix 3.10 sends when `smtp_tlsrpt_enable = yes` (docs/tlsrpt-collect.md has
//! the format, rules COLL-1..COLL-10).
//!
//! [`parse_datagram`] checks one datagram and turns it into [`DayCounts`] keyed as the engine keys
//! its own sessions (policy domain, policy, failure details), so that [`crate::Engine::record_reported`]
//! adds them to the same counts and `mtasts report build` reports them with the rest. A datagram is
//! taken whole or not at all: anything that does not follow the format is an error naming what is
//! wrong, and the caller drops the datagram (COLL-9).

use std::fmt;
use std::net::IpAddr;

use serde_json::{Map, Value};

use crate::counts::{DayCounts, FailureKey, PolicyKey, PolicyType, ResultType};
use crate::domain::Domain;
use crate::mx::MxPattern;

/// Largest datagram taken, in bytes (COLL-1): libtlsrpt builds datagrams in a 65000-byte buffer,
/// so a larger one is not theirs.
pub const MAX_DATAGRAM: usize = 65_536;

/// Why a datagram was dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatagramError(String);

impl fmt::Display for DatagramError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DatagramError {}

fn err<T>(msg: impl Into<String>) -> Result<T, DatagramError> {
    Err(DatagramError(msg.into()))
}

/// The RFC 8460 result type of a libtlsrpt failure code (COLL-5).
pub fn result_type_of_code(code: u64) -> Option<ResultType> {
    Some(match code {
        201 => ResultType::StarttlsNotSupported,
        202 => ResultType::CertificateHostMismatch,
        203 => ResultType::CertificateNotTrusted,
        204 => ResultType::CertificateExpired,
        205 => ResultType::ValidationFailure,
        301 => ResultType::StsPolicyFetchError,
        302 => ResultType::StsPolicyInvalid,
        303 => ResultType::StsWebpkiInvalid,
        304 => ResultType::TlsaInvalid,
        305 => ResultType::DnssecInvalid,
        306 => ResultType::DaneRequired,
        _ => return None,
    })
}

/// The libtlsrpt failure code of a result type (the inverse of [`result_type_of_code`]).
pub fn code_of_result_type(result_type: ResultType) -> u64 {
    (201..=205).chain(301..=306).find(|&c| result_type_of_code(c) == Some(result_type)).unwrap_or(0)
}

/// The libtlsrpt number of a policy type (COLL-4): 1 `tlsa`, 2 `sts`, 9 `no-policy-found`.
fn policy_type_of(n: u64) -> Option<PolicyType> {
    match n {
        1 => Some(PolicyType::Tlsa),
        2 => Some(PolicyType::Sts),
        9 => Some(PolicyType::NoPolicyFound),
        _ => None,
    }
}

/// A field that must be a string, if present.
fn opt_str<'a>(obj: &'a Map<String, Value>, key: &str, what: &str) -> Result<Option<&'a str>, DatagramError> {
    match obj.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => err(format!("{what} `{key}` is not a string")),
    }
}

/// A field that must be a non-negative integer.
fn uint(obj: &Map<String, Value>, key: &str, what: &str) -> Result<u64, DatagramError> {
    match obj.get(key) {
        Some(v) => {
            v.as_u64().map_or_else(|| err(format!("{what} `{key}` is not a non-negative integer")), Ok)
        }
        None => err(format!("{what} has no `{key}`")),
    }
}

/// A field that must be an array of strings, if present.
fn opt_strings(obj: &Map<String, Value>, key: &str) -> Result<Vec<String>, DatagramError> {
    match obj.get(key) {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                _ => err(format!("policy `{key}` holds something other than strings")),
            })
            .collect(),
        Some(_) => err(format!("policy `{key}` is not an array")),
    }
}

fn ip(obj: &Map<String, Value>, key: &str, name: &str) -> Result<Option<IpAddr>, DatagramError> {
    opt_str(obj, key, "failure detail")?
        .map(|s| {
            s.parse().or_else(|_| err(format!("failure detail `{key}` ({name}) `{s}` is not an IP address")))
        })
        .transpose()
}

/// One failure detail (COLL-5).
fn failure_detail(v: &Value) -> Result<FailureKey, DatagramError> {
    let Value::Object(obj) = v else { return err("a failure detail is not an object") };
    let code = uint(obj, "c", "failure detail")?;
    let result_type =
        result_type_of_code(code).map_or_else(|| err(format!("unknown failure code {code}")), Ok)?;
    let mx = opt_str(obj, "n", "failure detail")?
        .map(|n| {
            Domain::parse(n)
                .or_else(|e| err(format!("failure detail `n` (receiving-mx-hostname) `{n}`: {e}")))
        })
        .transpose()?;
    let mut key = FailureKey::new(result_type, mx);
    key.sending_mta_ip = ip(obj, "s", "sending-mta-ip")?;
    key.receiving_ip = ip(obj, "r", "receiving-ip")?;
    key.receiving_mx_helo = opt_str(obj, "h", "failure detail")?.map(str::to_owned);
    key.additional_information = opt_str(obj, "a", "failure detail")?.map(str::to_owned);
    key.failure_reason_code = opt_str(obj, "f", "failure detail")?.map(str::to_owned);
    Ok(key)
}

/// One `policies[]` entry: the policy and the session's outcome under it (COLL-4, COLL-6).
fn policy(v: &Value, domain: &Domain) -> Result<(PolicyKey, Option<FailureKey>), DatagramError> {
    let Value::Object(obj) = v else { return err("a policy is not an object") };
    let n = uint(obj, "policy-type", "policy")?;
    let policy_type = policy_type_of(n).map_or_else(|| err(format!("unknown policy-type {n}")), Ok)?;
    let policy_domain = opt_str(obj, "policy-domain", "policy")?
        .map(|d| Domain::parse(d).or_else(|e| err(format!("policy-domain `{d}`: {e}"))))
        .transpose()?
        .filter(|d| d != domain);
    let strings = opt_strings(obj, "policy-string")?;
    let mx = opt_strings(obj, "mx-host")?
        .iter()
        .map(|m| MxPattern::parse(m).or_else(|e| err(format!("mx-host `{m}`: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let details = match obj.get("failure-details") {
        None => Vec::new(),
        Some(Value::Array(items)) => items.iter().map(failure_detail).collect::<Result<Vec<_>, _>>()?,
        Some(_) => return err("policy `failure-details` is not an array"),
    };
    let t = uint(obj, "t", "policy")?;
    if t != details.len() as u64 {
        return err(format!("policy `t` is {t} but {} failure detail(s) follow", details.len()));
    }
    let failed = match uint(obj, "f", "policy")? {
        0 => false,
        1 => true,
        f => return err(format!("policy `f` is {f}, not 0 (success) or 1 (failure)")),
    };
    let failure = match (failed, details.len()) {
        (false, 0) => None,
        (true, 1) => details.into_iter().next(),
        (false, n) => return err(format!("a successful session (`f` 0) with {n} failure detail(s)")),
        (true, n) => return err(format!("a failed session (`f` 1) needs one failure detail, not {n}")),
    };
    Ok((PolicyKey::reported(policy_type, strings, &mx, policy_domain), failure))
}

/// Checks one datagram (COLL-1..COLL-8) and returns the session it reports, counted under each of
/// its policies; an error says what is wrong, and nothing of the datagram is counted.
pub fn parse_datagram(bytes: &[u8]) -> Result<DayCounts, DatagramError> {
    if bytes.len() > MAX_DATAGRAM {
        return err(format!("{} bytes, more than the {MAX_DATAGRAM} taken", bytes.len()));
    }
    let value: Value = serde_json::from_slice(bytes).or_else(|e| err(format!("not JSON: {e}")))?;
    let Value::Object(obj) = value else { return err("not a JSON object") };
    match obj.get("dpv") {
        None => {}
        Some(Value::String(v)) if v == "1" => {}
        Some(v) => return err(format!("datagram protocol version `dpv` {v} is not \"1\"")),
    }
    let d = opt_str(&obj, "d", "datagram")?.map_or_else(|| err("datagram has no `d` (domain)"), Ok)?;
    let domain = Domain::parse(d).or_else(|e| err(format!("domain `d` `{d}`: {e}")))?;
    if opt_str(&obj, "pr", "datagram")?.is_none() {
        return err("datagram has no `pr` (TLSRPT record)");
    }
    let policies = match obj.get("policies") {
        Some(Value::Array(p)) if !p.is_empty() => p,
        Some(Value::Array(_)) => return err("datagram `policies` is empty"),
        Some(_) => return err("datagram `policies` is not an array"),
        None => return err("datagram has no `policies`"),
    };
    let mut counts = DayCounts::new();
    for p in policies {
        let (key, failure) = policy(p, &domain)?;
        match failure {
            None => counts.add_success(&domain, &key, 1),
            Some(f) => counts.add_failure(&domain, &key, f, 1),
        }
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Domain {
        Domain::parse(s).unwrap()
    }

    /// A policy's successes and failures.
    type Counted = (PolicyKey, u64, Vec<(FailureKey, u64)>);

    fn one(counts: &DayCounts, domain: &str) -> Vec<Counted> {
        counts
            .policies(&d(domain))
            .map(|(k, c)| (k.clone(), c.successes, c.failures.iter().map(|(f, n)| (f.clone(), *n)).collect()))
            .collect()
    }

    /// COLL-2, COLL-4: an STS success as libtlsrpt writes it.
    #[test]
    fn coll_sts_success() {
        let dg = br#"{"d": "Example.COM.","pr": "v=TLSRPTv1; rua=mailto:r@example.com","policies":[{"policy-type":2,"policy-domain": "example.com","policy-string":["version: STSv1","mode: enforce","mx: *.example.com","max_age: 86400"],"mx-host":["*.example.com"],"t":0,"f":0}]}"#;
        let counts = parse_datagram(dg).unwrap();
        let got = one(&counts, "example.com");
        assert_eq!(got.len(), 1);
        let (key, ok, fails) = &got[0];
        assert_eq!(key.policy_type(), PolicyType::Sts);
        assert_eq!(key.strings().len(), 4);
        assert_eq!(key.mx_hosts(), ["*.example.com"]);
        assert_eq!(key.policy_domain(), None, "the same as d");
        assert_eq!((*ok, fails.len()), (1, 0));
    }

    /// COLL-5, COLL-6: a DANE failure with every detail; COLL-7: a policy-domain other than `d`.
    #[test]
    fn coll_tlsa_failure_with_details() {
        let dg = br#"{"dpv":"1","d":"example.com","pr":"v=TLSRPTv1; rua=mailto:r@example.com","policies":[{"policy-type":1,"policy-domain":"mx.example.com","policy-string":["3 1 1 0aff"],"failure-details":[{"c":304,"s":"192.0.2.1","n":"mx.example.com","h":"mx.example.com ESMTP","r":"2001:db8::25","a":"https://example.com/why","f":"tlsa mismatch"}],"t":1,"f":1}]}"#;
        let counts = parse_datagram(dg).unwrap();
        let got = one(&counts, "example.com");
        let (key, ok, fails) = &got[0];
        assert_eq!(key.policy_type(), PolicyType::Tlsa);
        assert_eq!(key.policy_domain(), Some(&d("mx.example.com")));
        assert_eq!(*ok, 0);
        let (f, n) = &fails[0];
        assert_eq!(*n, 1);
        assert_eq!(f.result_type, ResultType::TlsaInvalid);
        assert_eq!(f.receiving_mx_hostname, Some(d("mx.example.com")));
        assert_eq!(f.sending_mta_ip, Some("192.0.2.1".parse().unwrap()));
        assert_eq!(f.receiving_ip, Some("2001:db8::25".parse().unwrap()));
        assert_eq!(f.receiving_mx_helo.as_deref(), Some("mx.example.com ESMTP"));
        assert_eq!(f.additional_information.as_deref(), Some("https://example.com/why"));
        assert_eq!(f.failure_reason_code.as_deref(), Some("tlsa mismatch"));
    }

    /// COLL-5: every libtlsrpt failure code maps to its RFC 8460 result type, and back.
    #[test]
    fn coll_failure_codes() {
        let names: Vec<&str> =
            (201..=205).chain(301..=306).map(|c| result_type_of_code(c).unwrap().as_str()).collect();
        assert_eq!(
            names,
            [
                "starttls-not-supported",
                "certificate-host-mismatch",
                "certificate-not-trusted",
                "certificate-expired",
                "validation-failure",
                "sts-policy-fetch-error",
                "sts-policy-invalid",
                "sts-webpki-invalid",
                "tlsa-invalid",
                "dnssec-invalid",
                "dane-required"
            ]
        );
        for c in (201..=205).chain(301..=306) {
            assert_eq!(code_of_result_type(result_type_of_code(c).unwrap()), c);
        }
        assert_eq!(result_type_of_code(901), None, "libtlsrpt's internal code is not a result");
    }

    /// COLL-4: one session with two policies is counted under both; `no-policy-found` too.
    #[test]
    fn coll_several_policies() {
        let dg = br#"{"d":"example.com","pr":"v=TLSRPTv1; rua=mailto:r@example.com","policies":[{"policy-type":2,"policy-string":["version: STSv1"],"mx-host":["mx.example.com"],"t":0,"f":0},{"policy-type":9,"failure-details":[{"c":201,"n":"mx.example.com"}],"t":1,"f":1}]}"#;
        let counts = parse_datagram(dg).unwrap();
        let got = one(&counts, "example.com");
        assert_eq!(got.len(), 2);
        assert!(got.iter().any(|(k, ok, _)| k.policy_type() == PolicyType::Sts && *ok == 1));
        assert!(got.iter().any(|(k, ok, f)| k.policy_type() == PolicyType::NoPolicyFound
            && *ok == 0
            && f[0].0.result_type == ResultType::StarttlsNotSupported));
    }

    /// COLL-9: every malformed datagram is refused with a reason, and nothing of it is counted.
    #[test]
    fn coll_malformed_datagrams_are_refused() {
        let ok = r#"{"d":"example.com","pr":"v=TLSRPTv1; rua=mailto:r@example.com","policies":[{"policy-type":2,"t":0,"f":0}]}"#;
        assert!(parse_datagram(ok.as_bytes()).is_ok());
        let cases: &[(&str, &str)] = &[
            ("", "not JSON"),
            ("{", "not JSON"),
            ("[]", "not a JSON object"),
            (r#"{"pr":"x","policies":[{"policy-type":2,"t":0,"f":0}]}"#, "no `d`"),
            (r#"{"d":"-bad-","pr":"x","policies":[{"policy-type":2,"t":0,"f":0}]}"#, "domain `d`"),
            (r#"{"d":"example.com","policies":[{"policy-type":2,"t":0,"f":0}]}"#, "no `pr`"),
            (r#"{"d":"example.com","pr":"x","policies":[]}"#, "empty"),
            (r#"{"d":"example.com","pr":"x"}"#, "no `policies`"),
            (r#"{"dpv":"2","d":"example.com","pr":"x","policies":[{"policy-type":2,"t":0,"f":0}]}"#, "dpv"),
            (r#"{"dpv":1,"d":"example.com","pr":"x","policies":[{"policy-type":2,"t":0,"f":0}]}"#, "dpv"),
            (r#"{"d":"example.com","pr":"x","policies":[{"policy-type":3,"t":0,"f":0}]}"#, "policy-type 3"),
            (r#"{"d":"example.com","pr":"x","policies":[{"policy-type":2,"t":0}]}"#, "no `f`"),
            (r#"{"d":"example.com","pr":"x","policies":[{"policy-type":2,"t":0,"f":2}]}"#, "`f` is 2"),
            (r#"{"d":"example.com","pr":"x","policies":[{"policy-type":2,"t":1,"f":1}]}"#, "`t` is 1"),
            (r#"{"d":"example.com","pr":"x","policies":[{"policy-type":2,"t":0,"f":1}]}"#, "needs one"),
            (
                r#"{"d":"example.com","pr":"x","policies":[{"policy-type":2,"failure-details":[{"c":201}],"t":1,"f":0}]}"#,
                "successful session",
            ),
            (
                r#"{"d":"example.com","pr":"x","policies":[{"policy-type":2,"failure-details":[{"c":201},{"c":202}],"t":2,"f":1}]}"#,
                "not 2",
            ),
            (
                r#"{"d":"example.com","pr":"x","policies":[{"policy-type":2,"failure-details":[{"c":999}],"t":1,"f":1}]}"#,
                "unknown failure code 999",
            ),
            (
                r#"{"d":"example.com","pr":"x","policies":[{"policy-type":2,"failure-details":[{"c":201,"r":"mx"}],"t":1,"f":1}]}"#,
                "not an IP address",
            ),
            (
                r#"{"d":"example.com","pr":"x","policies":[{"policy-type":2,"failure-details":[{"c":201,"n":"a b"}],"t":1,"f":1}]}"#,
                "receiving-mx-hostname",
            ),
            (
                r#"{"d":"example.com","pr":"x","policies":[{"policy-type":2,"mx-host":["*.*.x"],"t":0,"f":0}]}"#,
                "mx-host",
            ),
            (
                r#"{"d":"example.com","pr":"x","policies":[{"policy-type":2,"policy-string":[1],"t":0,"f":0}]}"#,
                "strings",
            ),
            (r#"{"d":"example.com","pr":"x","policies":[{"policy-type":"2","t":0,"f":0}]}"#, "policy-type"),
            // One good policy and one bad: the whole datagram is refused.
            (
                r#"{"d":"example.com","pr":"x","policies":[{"policy-type":2,"t":0,"f":0},{"policy-type":7,"t":0,"f":0}]}"#,
                "policy-type 7",
            ),
        ];
        for (dg, why) in cases {
            let e = parse_datagram(dg.as_bytes()).expect_err(dg).to_string();
            assert!(e.contains(why), "{dg}: {e}");
        }
        // COLL-1: larger than MAX_DATAGRAM, whatever it holds.
        let big = format!("{ok}{}", " ".repeat(MAX_DATAGRAM));
        assert!(parse_datagram(big.as_bytes()).unwrap_err().to_string().contains("more than"));
        assert!(parse_datagram(&[0xff, 0xfe]).unwrap_err().to_string().contains("not JSON"));
    }
}
