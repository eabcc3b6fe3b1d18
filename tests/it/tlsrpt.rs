//! SMTP TLS Reporting (RFC 8460; docs/conformance.md, RPT-1..RPT-17): the `_smtp._tls` record vectors
//! (`tests/tlsrpt/records.toml`), the report JSON checked against `tests/tlsrpt/report.schema.json`
//! by an independent validator, the email parsed by an independent MIME parser (both through
//! `tests/tlsrpt/check.py`, Python's `jsonschema` and `email`), HTTPS delivery to the local fixture
//! server, mail delivery to fake `sendmail` commands, and the retry schedule. Each test names the
//! requirement id (docs/conformance.md) it covers. Nothing leaves the machine.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, mpsc};
use std::time::Duration;

use base64::Engine as _;
use flate2::read::GzDecoder;
use mtasts::cert::rfc3339;
use mtasts::engine::{AddressResolver, DnsError, Resolver};
use mtasts::policy::{Mode, Policy};
use mtasts::tlsrpt::deliver::{self, DeliverySettings, DeliveryState, RetrySchedule};
use mtasts::tlsrpt::record::{self, Discovery, ReportUri};
use mtasts::tlsrpt::report::{
    Day, DayCounts, FailureKey, PolicyKey, Report, ReportId, ResultType, build_report,
};
use mtasts::tlsrpt::{EmailAddress, mail};
use mtasts::verdict::{Dane, TlsOutcome, decide};
use mtasts::{Domain, Reason, TrustAnchors, Verdict};
use mtasts_fixtures::https::{HttpsServer, Response};
use mtasts_fixtures::pki::{Chain, pki};
use serde::Deserialize;
use serde_json::Value;

fn data(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tlsrpt").join(file)
}

fn d(name: &str) -> Domain {
    Domain::parse(name).expect("domain")
}

fn addr(s: &str) -> EmailAddress {
    EmailAddress::parse(s).expect("address")
}

/// A fresh directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let path = std::env::temp_dir().join(format!("mtasts-tlsrpt-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("temp dir");
        Self(path)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `tests/tlsrpt/check.py` with these arguments; panics unless it exits 0.
fn check_py(args: &[&Path]) -> String {
    let out = Command::new("python3")
        .arg(data("check.py"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("python3 is needed for the TLSRPT schema and MIME checks: {e}"));
    assert!(
        out.status.success(),
        "check.py {args:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// Validates report files (JSON or gzip) against the schema with Python's `jsonschema`.
fn assert_valid(files: &[&Path]) {
    let mut args = vec![Path::new("schema"), Path::new("")];
    let schema = data("report.schema.json");
    args[1] = &schema;
    args.extend_from_slice(files);
    check_py(&args);
}

/// Writes the report's gzip to `dir` under its RPT-8 name and validates it.
fn assert_report_valid(report: &Report, dir: &TempDir) -> Value {
    let path = dir.path(&report.file_name());
    std::fs::write(&path, report.to_gzip()).expect("write report");
    assert_valid(&[&path]);
    serde_json::from_str(&report.to_json()).expect("JSON")
}

fn gunzip(bytes: &[u8]) -> String {
    let mut json = String::new();
    GzDecoder::new(bytes).read_to_string(&mut json).expect("gzip");
    json
}

// ---------------------------------------------------------------------------------------------
// RPT-1..RPT-5: the record.

/// Answers TXT queries from a list, and remembers the names asked for.
struct Txt {
    answer: Result<Vec<Vec<u8>>, DnsError>,
    asked: parking_lot::Mutex<Vec<String>>,
}

impl Resolver for Txt {
    fn txt(&self, name: &str) -> Result<Vec<Vec<u8>>, DnsError> {
        self.asked.lock().push(name.to_owned());
        self.answer.clone()
    }
}

fn txt(answer: Result<Vec<&str>, DnsError>) -> Txt {
    Txt {
        answer: answer.map(|rs| rs.into_iter().map(|r| r.as_bytes().to_vec()).collect()),
        asked: parking_lot::Mutex::new(Vec::new()),
    }
}

#[test]
fn rpt_1_record_is_at_smtp_tls() {
    let domain = d("Example.COM.");
    assert_eq!(record::record_name(&domain), "_smtp._tls.example.com");

    let dns = txt(Ok(vec!["v=spf1 -all", "v=TLSRPTv1; rua=mailto:tlsrpt@example.com"]));
    let found = record::discover(&dns, &domain).expect("lookup");
    assert_eq!(*dns.asked.lock(), ["_smtp._tls.example.com"]);
    let Discovery::Record(r) = found else { panic!("{found:?}") };
    assert_eq!(r.rua.len(), 1);

    assert_eq!(record::discover(&txt(Err(DnsError::NotFound)), &domain), Ok(Discovery::NoRecord));
    let temporary = DnsError::Temporary("SERVFAIL".into());
    assert_eq!(record::discover(&txt(Err(temporary.clone())), &domain), Err(temporary));
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordFile {
    case: Vec<RecordCase>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordCase {
    id: String,
    name: String,
    #[serde(default)]
    records: Vec<String>,
    #[serde(default)]
    strings: Vec<String>,
    expect: String,
    rua: Option<Vec<String>>,
    ignored: Option<Vec<String>>,
    mailto: Option<Vec<String>>,
    https: Option<Vec<String>>,
    error: Option<String>,
}

/// RPT-2, RPT-3, RPT-4, RPT-5 (and the first-wins rule, docs/conformance.md, decision D12): every case of
/// `records.toml`, all failures reported at once.
#[test]
fn rpt_2_to_5_record_vectors() {
    let text = std::fs::read_to_string(data("records.toml")).expect("records.toml");
    let file: RecordFile = toml::from_str(&text).expect("records.toml");
    let mut failures = Vec::new();
    let mut ids = BTreeSet::new();
    for case in &file.case {
        ids.insert(case.id.clone());
        let mut rrset: Vec<Vec<u8>> = case.records.iter().map(|r| r.as_bytes().to_vec()).collect();
        if !case.strings.is_empty() {
            rrset.push(case.strings.concat().into_bytes());
        }
        let mut fail = |what: String| failures.push(format!("{} ({}): {what}", case.id, case.name));
        match (case.expect.as_str(), record::select(&rrset)) {
            ("record", Discovery::Record(r)) => {
                let rua: Vec<String> = r.rua.iter().map(|u| u.as_str().to_owned()).collect();
                if let Some(want) = &case.rua {
                    if &rua != want {
                        fail(format!("rua {rua:?}, expected {want:?}"));
                    }
                }
                if let Some(want) = &case.ignored {
                    if &r.ignored != want {
                        fail(format!("ignored {:?}, expected {want:?}", r.ignored));
                    }
                }
                let mailto: Vec<String> = r
                    .rua
                    .iter()
                    .filter_map(|u| match u {
                        ReportUri::Mailto(m) => {
                            Some(m.to().iter().map(ToString::to_string).collect::<Vec<_>>())
                        }
                        _ => None,
                    })
                    .flatten()
                    .collect();
                if let Some(want) = &case.mailto {
                    if &mailto != want {
                        fail(format!("mailto {mailto:?}, expected {want:?}"));
                    }
                }
                let https: Vec<String> = r
                    .rua
                    .iter()
                    .filter_map(|u| match u {
                        ReportUri::Https(h) => Some(format!("{} {}", h.host(), h.port())),
                        _ => None,
                    })
                    .collect();
                if let Some(want) = &case.https {
                    if &https != want {
                        fail(format!("https {https:?}, expected {want:?}"));
                    }
                }
            }
            ("no-record", Discovery::NoRecord) | ("multiple", Discovery::Multiple(_)) => {}
            ("invalid", Discovery::Invalid(e)) => {
                let message = e.to_string();
                if let Some(want) = &case.error {
                    if !message.contains(want.as_str()) {
                        fail(format!("error `{message}` does not contain `{want}`"));
                    }
                }
            }
            (want, got) => fail(format!("expected {want}, got {got:?}")),
        }
    }
    assert!(file.case.len() >= 40, "only {} cases", file.case.len());
    for id in ["RPT-2", "RPT-3", "RPT-4", "RPT-5"] {
        assert!(ids.contains(id), "no case for {id}");
    }
    assert!(failures.is_empty(), "{} failure(s):\n{}", failures.len(), failures.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// The report JSON (RFC 8460 §4.4).

/// 2026-03-01T00:00:00Z.
const MARCH_1: u64 = 1_772_323_200;
/// Sent the morning after.
const MARCH_2_MORNING: u64 = MARCH_1 + 86_400 + 5 * 3600;

fn sts_key(body: &str) -> (Policy, PolicyKey) {
    let policy = Policy::parse(body.as_bytes()).expect("policy");
    let key = PolicyKey::sts_from_body(body.as_bytes(), &policy);
    (policy, key)
}

/// Judges one session with the engine's verdict rules and counts it, as the recorder will.
#[allow(clippy::too_many_arguments)]
fn session(
    counts: &mut DayCounts,
    domain: &Domain,
    policy: &Policy,
    key: &PolicyKey,
    mx: &str,
    tls: TlsOutcome,
    receiving_ip: &str,
    reason_code: Option<&str>,
) -> Verdict {
    let mx = d(mx);
    let matches = mtasts::mx::any_matches(policy.mx(), &mx);
    let decision = decide(Some(policy.mode()), matches, tls, Dane::NotApplicable);
    match ResultType::from_reason(decision.reason) {
        None => counts.add_success(domain, key, 1),
        Some(result_type) => {
            let mut failure = FailureKey::new(result_type, Some(mx));
            failure.sending_mta_ip = Some("192.0.2.25".parse().expect("ip"));
            failure.receiving_ip = Some(receiving_ip.parse().expect("ip"));
            failure.failure_reason_code = reason_code.map(str::to_owned);
            counts.add_failure(domain, key, failure, 1);
        }
    }
    decision.verdict
}

fn id(day: Day, domain: &Domain, nonce: u64) -> ReportId {
    ReportId::new(day, domain, nonce, &d("mail.sender.example"))
}

fn report_for(domain: &str, counts: &DayCounts) -> Report {
    let day = Day::from_unix(MARCH_1);
    build_report(
        "Sender Example Ltd",
        &addr("tlsrpt@mail.sender.example"),
        &d("mail.sender.example"),
        &d(domain),
        day,
        counts,
        id(day, &d(domain), 0x2a),
    )
    .expect("report")
}

fn failure_details(policy: &Value) -> Vec<(String, u64)> {
    policy["failure-details"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|f| {
                    (
                        f["result-type"].as_str().expect("type").to_owned(),
                        f["failed-session-count"].as_u64().expect("n"),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

const TESTING_POLICY: &str = "version: STSv1\r\nmode: testing\r\nmx: mx1.example.com\r\nmx: *.backup.example.com\r\nmax_age: 604800\r\n";

#[test]
fn rpt_json_testing_mode_day() {
    let dir = TempDir::new("testing");
    let domain = d("example.com");
    let (policy, key) = sts_key(TESTING_POLICY);
    assert_eq!(policy.mode(), Mode::Testing);
    let mut counts = DayCounts::new();
    let valid = TlsOutcome::Valid;
    for _ in 0..40 {
        assert_eq!(
            session(&mut counts, &domain, &policy, &key, "mx1.example.com", valid, "198.51.100.1", None),
            Verdict::Pass
        );
    }
    let expired = TlsOutcome::Invalid(Reason::CertificateExpired);
    for _ in 0..3 {
        let v =
            session(&mut counts, &domain, &policy, &key, "mx1.example.com", expired, "198.51.100.1", None);
        assert_eq!(v, Verdict::FailTesting, "testing mode delivers and reports");
    }
    for _ in 0..2 {
        let code = Some("mx.other.example matches no mx pattern of the policy");
        session(&mut counts, &domain, &policy, &key, "mx.other.example", valid, "198.51.100.9", code);
    }
    let no_tls = TlsOutcome::NotNegotiated;
    session(&mut counts, &domain, &policy, &key, "a.backup.example.com", no_tls, "2001:db8::25", None);

    let report = report_for("example.com", &counts);
    let json = assert_report_valid(&report, &dir);
    assert_eq!(json["organization-name"], "Sender Example Ltd");
    assert_eq!(json["contact-info"], "tlsrpt@mail.sender.example");
    assert_eq!(json["report-id"], "20260301.000000000000002a.example.com@mail.sender.example");
    assert_eq!(json["date-range"]["start-datetime"], "2026-03-01T00:00:00Z");
    assert_eq!(json["date-range"]["end-datetime"], "2026-03-01T23:59:59Z");
    let policies = json["policies"].as_array().expect("policies is an array");
    assert_eq!(policies.len(), 1);
    let p = &policies[0];
    assert_eq!(p["policy"]["policy-type"], "sts");
    assert_eq!(p["policy"]["policy-domain"], "example.com");
    assert_eq!(
        p["policy"]["policy-string"],
        serde_json::json!([
            "version: STSv1",
            "mode: testing",
            "mx: mx1.example.com",
            "mx: *.backup.example.com",
            "max_age: 604800"
        ])
    );
    // RFC 8460 §4.4: "a JSON array of strings", one per pattern (module docs of report.rs).
    assert_eq!(p["policy"]["mx-host"], serde_json::json!(["mx1.example.com", "*.backup.example.com"]));
    assert_eq!(p["summary"]["total-successful-session-count"], 40);
    assert_eq!(p["summary"]["total-failure-session-count"], 6);
    let mut details = failure_details(p);
    details.sort();
    assert_eq!(
        details,
        [
            ("certificate-expired".to_owned(), 3),
            ("starttls-not-supported".to_owned(), 1),
            ("validation-failure".to_owned(), 2)
        ]
    );
    let detail = p["failure-details"]
        .as_array()
        .expect("details")
        .iter()
        .find(|f| f["result-type"] == "validation-failure")
        .expect("mx mismatch");
    assert_eq!(detail["receiving-mx-hostname"], "mx.other.example");
    assert_eq!(detail["sending-mta-ip"], "192.0.2.25");
    assert_eq!(detail["receiving-ip"], "198.51.100.9");
    assert!(detail["failure-reason-code"].as_str().expect("code").contains("matches no mx pattern"));
    let ipv6 = p["failure-details"]
        .as_array()
        .expect("details")
        .iter()
        .find(|f| f["result-type"] == "starttls-not-supported");
    assert_eq!(ipv6.expect("starttls")["receiving-ip"], "2001:db8::25");
}

#[test]
fn rpt_json_enforce_mode_day() {
    let dir = TempDir::new("enforce");
    let domain = d("example.net");
    let body = "version: STSv1\nmode: enforce\nmx: mail.example.net\nmax_age: 86400\n";
    let (policy, key) = sts_key(body);
    let mut counts = DayCounts::new();
    for _ in 0..100 {
        session(
            &mut counts,
            &domain,
            &policy,
            &key,
            "mail.example.net",
            TlsOutcome::Valid,
            "203.0.113.5",
            None,
        );
    }
    let untrusted = TlsOutcome::Invalid(Reason::CertificateNotTrusted);
    for _ in 0..5 {
        let v = session(
            &mut counts,
            &domain,
            &policy,
            &key,
            "mail.example.net",
            untrusted,
            "203.0.113.5",
            Some("UnknownIssuer"),
        );
        assert_eq!(v, Verdict::FailEnforce, "enforce mode does not deliver");
    }
    let mismatch = TlsOutcome::Invalid(Reason::CertificateHostMismatch);
    for _ in 0..2 {
        session(&mut counts, &domain, &policy, &key, "mail.example.net", mismatch, "203.0.113.6", None);
    }
    // Before the policy could be fetched: sessions under no policy, and the fetch failure.
    let none = PolicyKey::no_policy_found();
    counts.add_success(&domain, &none, 7);
    counts.add_failure(
        &domain,
        &none,
        FailureKey::new(ResultType::from_reason(Reason::StsPolicyFetchError).expect("type"), None),
        1,
    );
    // Another domain's counts stay out of this report.
    counts.add_success(&d("elsewhere.example"), &none, 1000);

    let report = report_for("example.net", &counts);
    let json = assert_report_valid(&report, &dir);
    let policies = json["policies"].as_array().expect("array");
    assert_eq!(policies.len(), 2);
    let sts = policies.iter().find(|p| p["policy"]["policy-type"] == "sts").expect("sts");
    assert_eq!(sts["policy"]["mx-host"], serde_json::json!(["mail.example.net"]));
    assert_eq!(sts["summary"]["total-successful-session-count"], 100);
    assert_eq!(sts["summary"]["total-failure-session-count"], 7);
    let mut details = failure_details(sts);
    details.sort();
    assert_eq!(
        details,
        [("certificate-host-mismatch".to_owned(), 2), ("certificate-not-trusted".to_owned(), 5)]
    );
    let not_trusted = sts["failure-details"]
        .as_array()
        .expect("details")
        .iter()
        .find(|f| f["result-type"] == "certificate-not-trusted");
    assert_eq!(not_trusted.expect("detail")["failure-reason-code"], "UnknownIssuer");

    let nopol = policies.iter().find(|p| p["policy"]["policy-type"] == "no-policy-found").expect("no policy");
    assert_eq!(nopol["policy"].as_object().expect("object").len(), 2, "only policy-type and policy-domain");
    assert_eq!(nopol["policy"]["policy-domain"], "example.net");
    assert_eq!(nopol["summary"]["total-successful-session-count"], 7);
    assert_eq!(failure_details(nopol), [("sts-policy-fetch-error".to_owned(), 1)]);
    let fetch = &nopol["failure-details"][0];
    assert!(fetch.get("receiving-mx-hostname").is_none());

    // A day without failures: no failure-details at all.
    let quiet = report_for("elsewhere.example", &counts);
    let json = assert_report_valid(&quiet, &dir);
    assert!(json["policies"][0].get("failure-details").is_none());
    assert_eq!(json["policies"][0]["summary"]["total-failure-session-count"], 0);

    // Nothing counted: no report.
    let day = Day::from_unix(MARCH_1);
    let sender = d("mail.sender.example");
    let contact = addr("tlsrpt@mail.sender.example");
    assert!(
        build_report(
            "x",
            &contact,
            &sender,
            &d("idle.example"),
            day,
            &counts,
            id(day, &d("idle.example"), 1)
        )
        .is_err()
    );
}

/// The schema accepts RFC 8460's own example and refuses a broken report: it does check.
#[test]
fn rpt_json_schema_accepts_the_rfc_example_only() {
    assert_valid(&[&data("rfc8460-example.json")]);
    let dir = TempDir::new("schema");
    let mut broken: Value =
        serde_json::from_str(&std::fs::read_to_string(data("rfc8460-example.json")).expect("example"))
            .expect("json");
    broken["policies"][0]["summary"]["total-failure-session-count"] = serde_json::json!("303");
    broken["policies"][0]["failure-details"][0]["result-type"] = serde_json::json!("mx-mismatch");
    let path = dir.path("broken.json");
    std::fs::write(&path, broken.to_string()).expect("write");
    let out = Command::new("python3")
        .arg(data("check.py"))
        .args([Path::new("schema"), &data("report.schema.json"), &path])
        .output()
        .expect("python3");
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("total-failure-session-count") && said.contains("mx-mismatch"), "{said}");

    // RPT-18: a tlsa policy carries TLSA records in presentation form and no mx-host.
    let example: Value =
        serde_json::from_str(&std::fs::read_to_string(data("rfc8460-example.json")).expect("example"))
            .expect("json");
    let tlsa = |strings: Value, mx_host: Option<Value>| {
        let mut report = example.clone();
        let policy = &mut report["policies"][0]["policy"];
        policy["policy-type"] = serde_json::json!("tlsa");
        policy["policy-string"] = strings;
        let object = policy.as_object_mut().expect("object");
        object.remove("mx-host");
        if let Some(mx) = mx_host {
            object.insert("mx-host".into(), mx);
        }
        report
    };
    let good = dir.path("tlsa.json");
    std::fs::write(&good, tlsa(serde_json::json!(["3 1 1 0aFF", "2 0 2 ab"]), None).to_string())
        .expect("write");
    assert_valid(&[&good]);
    for (i, bad) in [
        tlsa(serde_json::json!(["3 1 1 0aff"]), Some(serde_json::json!(["mx.example"]))),
        tlsa(serde_json::json!(["3 1 1"]), None),
        tlsa(serde_json::json!(["256 1 1 ab"]), None),
        tlsa(serde_json::json!(["3 1 1 abc"]), None),
        tlsa(serde_json::json!(["version: STSv1"]), None),
    ]
    .into_iter()
    .enumerate()
    {
        let path = dir.path(&format!("bad-tlsa-{i}.json"));
        std::fs::write(&path, bad.to_string()).expect("write");
        let out = Command::new("python3")
            .arg(data("check.py"))
            .args([Path::new("schema"), &data("report.schema.json"), &path])
            .output()
            .expect("python3");
        assert!(!out.status.success(), "refused: {bad}");
    }
}

#[test]
fn rpt_7_report_is_gzip() {
    let mut counts = DayCounts::new();
    counts.add_success(&d("example.com"), &PolicyKey::no_policy_found(), 1);
    let report = report_for("example.com", &counts);
    let gz = report.to_gzip();
    assert_eq!(&gz[..2], &[0x1f, 0x8b], "gzip magic (RFC 1952)");
    assert_eq!(gunzip(&gz), report.to_json());
    assert_eq!(mtasts::tlsrpt::media_type_gzip(), "application/tlsrpt+gzip");
    assert_eq!(mtasts::tlsrpt::media_type_json(), "application/tlsrpt+json");
}

#[test]
fn rpt_8_file_name() {
    let mut counts = DayCounts::new();
    counts.add_success(&d("xn--bcher-kva.example"), &PolicyKey::no_policy_found(), 1);
    let report = report_for("Bücher.example", &counts);
    let name = report.file_name();
    assert_eq!(
        name,
        format!(
            "mail.sender.example!xn--bcher-kva.example!{}!{}!20260301000000000000002axnbcherk.json.gz",
            MARCH_1,
            MARCH_1 + 86_399
        )
    );
    let (stem, ext) = name.split_once(".json").expect("extension");
    assert_eq!(ext, ".gz");
    let fields: Vec<&str> = stem.rsplit('!').collect();
    assert!(fields[0].bytes().all(|b| b.is_ascii_alphanumeric()), "unique-id is 1*(ALPHA / DIGIT)");
}

#[test]
fn rpt_17_failure_reason_codes_can_be_removed() {
    let domain = d("example.com");
    let (_, key) = sts_key(TESTING_POLICY);
    let mut counts = DayCounts::new();
    for code in ["X509_V_ERR_A", "X509_V_ERR_B"] {
        let mut f = FailureKey::new(ResultType::CertificateNotTrusted, Some(d("mx1.example.com")));
        f.failure_reason_code = Some(code.into());
        counts.add_failure(&domain, &key, f, 2);
    }
    let mut report = report_for("example.com", &counts);
    report.redact_failure_reason_codes();
    let json: Value = serde_json::from_str(&report.to_json()).expect("json");
    let details = json["policies"][0]["failure-details"].as_array().expect("details");
    assert_eq!(details.len(), 1, "entries that differed only by the code are merged");
    assert_eq!(details[0]["failed-session-count"], 4);
    assert!(details[0].get("failure-reason-code").is_none());
}

// ---------------------------------------------------------------------------------------------
// RPT-10, RPT-11, RPT-15: the email.

#[derive(Deserialize)]
struct ParsedMail {
    defects: Vec<String>,
    headers: std::collections::BTreeMap<String, Vec<String>>,
    content_type: String,
    params: std::collections::BTreeMap<String, String>,
    from: Vec<String>,
    to: Vec<String>,
    date_unix: u64,
    parts: Vec<ParsedPart>,
}

#[derive(Deserialize)]
struct ParsedPart {
    content_type: String,
    charset: Option<String>,
    disposition: Option<String>,
    filename: Option<String>,
    transfer_encoding: Option<String>,
    defects: Vec<String>,
    text: Option<String>,
    base64: Option<String>,
}

impl ParsedMail {
    fn header(&self, name: &str) -> &str {
        let values = self.headers.get(name).unwrap_or_else(|| panic!("no {name} header"));
        assert_eq!(values.len(), 1, "one {name} header");
        &values[0]
    }
}

#[test]
fn rpt_10_11_15_mime_message() {
    let dir = TempDir::new("mime");
    let domain = d("example.com");
    let (policy, key) = sts_key(TESTING_POLICY);
    let mut counts = DayCounts::new();
    session(&mut counts, &domain, &policy, &key, "mx1.example.com", TlsOutcome::Valid, "198.51.100.1", None);
    let expired = TlsOutcome::Invalid(Reason::CertificateExpired);
    session(&mut counts, &domain, &policy, &key, "mx1.example.com", expired, "198.51.100.1", None);
    let report = report_for("example.com", &counts);
    let to = [addr("tlsrpt@example.com"), addr("tls+rpt@xn--bcher-kva.example")];
    let message = mail::message(&report, &addr("noreply@mail.sender.example"), &to, MARCH_2_MORNING);
    let path = dir.path("report.eml");
    std::fs::write(&path, &message).expect("write");
    let parsed: ParsedMail = serde_json::from_str(&check_py(&[Path::new("mime"), &path])).expect("parsed");

    assert!(parsed.defects.is_empty(), "{:?}", parsed.defects);
    assert_eq!(parsed.from, ["noreply@mail.sender.example"]);
    assert_eq!(parsed.to, ["tlsrpt@example.com", "tls+rpt@xn--bcher-kva.example"]);
    assert_eq!(parsed.date_unix, MARCH_2_MORNING);
    assert_eq!(parsed.header("MIME-Version"), "1.0");
    // RPT-10: both headers, and the submitter is the domain of contact-info.
    assert_eq!(parsed.header("TLS-Report-Domain"), "example.com");
    assert_eq!(parsed.header("TLS-Report-Submitter"), "mail.sender.example");
    let json: Value = serde_json::from_str(&report.to_json()).expect("json");
    let contact = json["contact-info"].as_str().expect("contact");
    assert_eq!(contact.rsplit_once('@').expect("@").1, parsed.header("TLS-Report-Submitter"));
    // RPT-11: the Subject, with a msg-id shaped report id.
    let subject = parsed.header("Subject");
    assert_eq!(
        subject,
        "Report Domain: example.com Submitter: mail.sender.example Report-ID: <20260301.000000000000002a.example.com@mail.sender.example>"
    );
    assert_eq!(parsed.header("Message-ID"), "<20260301.000000000000002a.example.com@mail.sender.example>");
    assert_eq!(parsed.content_type, "multipart/report");
    assert_eq!(parsed.params.get("report-type").map(String::as_str), Some("tlsrpt"));

    assert_eq!(parsed.parts.len(), 2);
    let text = &parsed.parts[0];
    assert_eq!((text.content_type.as_str(), text.charset.as_deref()), ("text/plain", Some("utf-8")));
    assert!(text.text.as_deref().expect("text").contains("1 successful sessions, 1 failed sessions"));
    let attachment = &parsed.parts[1];
    assert!(attachment.defects.is_empty() && text.defects.is_empty());
    assert_eq!(attachment.content_type, "application/tlsrpt+gzip");
    assert_eq!(attachment.disposition.as_deref(), Some("attachment"));
    assert_eq!(attachment.transfer_encoding.as_deref(), Some("base64"));
    let file_name = attachment.filename.as_deref().expect("filename");
    assert_eq!(file_name, report.file_name());
    let gz = base64::engine::general_purpose::STANDARD
        .decode(attachment.base64.as_deref().expect("payload"))
        .expect("base64");
    assert_eq!(&gz[..2], &[0x1f, 0x8b]);
    let attached: Value = serde_json::from_str(&gunzip(&gz)).expect("attached JSON");
    assert_eq!(attached, json, "the attachment decodes to the same JSON");

    // RPT-15: the Subject, the headers and the file name agree with the JSON.
    let report_id = json["report-id"].as_str().expect("id");
    assert!(subject.ends_with(&format!("Report-ID: <{report_id}>")));
    assert!(subject.starts_with(&format!(
        "Report Domain: {} ",
        json["policies"][0]["policy"]["policy-domain"].as_str().expect("d")
    )));
    let fields: Vec<&str> = file_name.trim_end_matches(".json.gz").split('!').collect();
    assert_eq!(fields[0], parsed.header("TLS-Report-Submitter"));
    assert_eq!(fields[1], json["policies"][0]["policy"]["policy-domain"]);
    assert_eq!(rfc3339(fields[2].parse().expect("begin")), json["date-range"]["start-datetime"]);
    assert_eq!(rfc3339(fields[3].parse().expect("end")), json["date-range"]["end-datetime"]);

    // Raw form: LF line ends, no header line over 78 characters, the boundary nowhere else.
    let raw = String::from_utf8(message).expect("ASCII message");
    let (head, _) = raw.split_once("\n\n").expect("header/body");
    assert!(head.lines().all(|l| l.len() <= 78), "{head}");
    assert!(!raw.contains('\r'));
}

#[test]
fn rpt_10_contact_must_be_at_the_submitter() {
    let mut counts = DayCounts::new();
    counts.add_success(&d("example.com"), &PolicyKey::no_policy_found(), 1);
    let day = Day::from_unix(MARCH_1);
    let wrong = build_report(
        "x",
        &addr("tlsrpt@other.example"),
        &d("mail.sender.example"),
        &d("example.com"),
        day,
        &counts,
        id(day, &d("example.com"), 1),
    );
    let error = wrong.expect_err("contact at another domain");
    assert!(error.to_string().contains("must be at the submitter domain"), "{error}");
}

// ---------------------------------------------------------------------------------------------
// RPT-6, RPT-9, RPT-13, RPT-14: delivery.

const COLLECTOR: &str = "tlsrpt.collector.test";

/// Every host is 127.0.0.1.
struct Loopback;

impl AddressResolver for Loopback {
    fn addresses(&self, _host: &str) -> Result<Vec<IpAddr>, DnsError> {
        Ok(vec![IpAddr::V4(Ipv4Addr::LOCALHOST)])
    }
}

fn anchors() -> TrustAnchors {
    TrustAnchors::from_pem(pki().root_pem.as_bytes(), "test root").expect("anchors")
}

fn settings() -> DeliverySettings {
    let mut s = DeliverySettings::new(anchors(), addr("noreply@mail.sender.example"));
    s.timeout = Duration::from_secs(10);
    s
}

fn small_report() -> Report {
    let (_, key) = sts_key(TESTING_POLICY);
    let mut counts = DayCounts::new();
    counts.add_success(&d("example.com"), &key, 12);
    counts.add_failure(
        &d("example.com"),
        &key,
        FailureKey::new(ResultType::CertificateExpired, Some(d("mx1.example.com"))),
        2,
    );
    report_for("example.com", &counts)
}

fn rua(record: &str) -> Vec<ReportUri> {
    match record::select(&[record]) {
        Discovery::Record(r) => r.rua,
        other => panic!("{record}: {other:?}"),
    }
}

/// RPT-9, RPT-14: 503 is retried on the schedule; the next 201 ends it. The POST carries
/// `application/tlsrpt+gzip` and the gzip report.
#[test]
fn rpt_9_14_https_503_then_201() {
    let server = HttpsServer::start().expect("server");
    server.set_cert(COLLECTOR, &pki().leaf(&[COLLECTOR]));
    server.set_response(COLLECTOR, Response::status(503));
    let port = server.addr().port();
    let destinations = rua(&format!("v=TLSRPTv1; rua=https://{COLLECTOR}:{port}/v1/tlsrpt?k=1"));
    let report = small_report();
    let schedule = RetrySchedule::default();
    let mut state = DeliveryState::new(MARCH_2_MORNING);

    assert!(state.is_due(MARCH_2_MORNING));
    let first = deliver::deliver(&settings(), Arc::new(Loopback), &report, &destinations, MARCH_2_MORNING);
    assert!(!first.delivered(), "{first:?}");
    let error = first.results[0].result.clone().expect_err("503");
    assert!(error.contains("HTTP 503 Service Unavailable"), "{error}");
    state.record(MARCH_2_MORNING, &first, &schedule);
    assert_eq!((state.attempts, state.done, state.next_attempt_at), (1, false, MARCH_2_MORNING + 300));
    assert!(state.last_error.as_deref().expect("error").contains("503"));
    assert!(!state.is_due(MARCH_2_MORNING + 299));

    server.set_response(COLLECTOR, Response::status(201));
    let now = state.next_attempt_at;
    let second = deliver::deliver(&settings(), Arc::new(Loopback), &report, &destinations, now);
    assert!(second.delivered(), "{second:?}");
    assert_eq!(second.results[0].result, Ok("HTTP 201".to_owned()));
    state.record(now, &second, &schedule);
    assert!(state.done && state.delivered && state.last_error.is_none());
    assert!(!state.is_due(now + 86_400), "a delivered report is never sent again");

    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    for r in &requests {
        assert_eq!(r.request_line, "POST /v1/tlsrpt?k=1 HTTP/1.1");
        assert_eq!(r.sni.as_deref(), Some(COLLECTOR));
        assert_eq!(r.header("Content-Type"), Some("application/tlsrpt+gzip"));
        assert_eq!(r.header("Content-Length"), Some(report.to_gzip().len().to_string().as_str()));
    }
}

/// A one-request HTTPS collector that keeps the body (the fixture server logs only the head).
fn body_collector(chain: &Chain) -> (u16, mpsc::Receiver<(String, Vec<u8>)>) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let certs: Vec<CertificateDer<'static>> =
        chain.der.iter().map(|d| CertificateDer::from(d.clone())).collect();
    let key = PrivateKeyDer::from_pem_slice(chain.key_pem.as_bytes()).expect("key");
    let config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("server config");
    let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (tcp, _) = listener.accept().expect("accept");
        tcp.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let conn = rustls::ServerConnection::new(Arc::new(config)).expect("connection");
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let mut data = Vec::new();
        let mut buf = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = tls.read(&mut buf).expect("read");
            assert!(n > 0, "connection closed before the end of the head");
            data.extend_from_slice(&buf[..n]);
        };
        let head = String::from_utf8(data[..head_end].to_vec()).expect("head");
        let length: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().expect("length"))
            })
            .expect("Content-Length");
        while data.len() < head_end + length {
            let n = tls.read(&mut buf).expect("read body");
            assert!(n > 0, "connection closed before the end of the body");
            data.extend_from_slice(&buf[..n]);
        }
        tls.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").expect("respond");
        tls.conn.send_close_notify();
        let _ = tls.flush();
        let _ = tx.send((head, data[head_end..].to_vec()));
    });
    (port, rx)
}

#[test]
fn rpt_9_https_body_is_the_gzip_report() {
    let (port, rx) = body_collector(&pki().leaf(&[COLLECTOR]));
    let report = small_report();
    let destinations = rua(&format!("v=TLSRPTv1; rua=https://{COLLECTOR}:{port}/upload"));
    let outcome = deliver::deliver(&settings(), Arc::new(Loopback), &report, &destinations, MARCH_2_MORNING);
    assert_eq!(outcome.results[0].result, Ok("HTTP 200".to_owned()));
    let (head, body) = rx.recv_timeout(Duration::from_secs(10)).expect("the collector got a request");
    assert!(head.starts_with("POST /upload HTTP/1.1\r\n"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: application/tlsrpt+gzip\r\n"), "{head}");
    assert_eq!(&body[..2], &[0x1f, 0x8b]);
    assert_eq!(gunzip(&body), report.to_json());
}

#[test]
fn rpt_9_https_failures_are_retryable_errors() {
    // Untrusted certificate: the report endpoint is validated like the policy host.
    let server = HttpsServer::start().expect("server");
    server.set_cert(
        COLLECTOR,
        &pki().leaf_with(&[COLLECTOR], mtasts_fixtures::pki::VALID.0, mtasts_fixtures::pki::VALID.1, false),
    );
    server.set_response(COLLECTOR, Response::status(200));
    let port = server.addr().port();
    let report = small_report();
    let outcome = deliver::deliver(
        &settings(),
        Arc::new(Loopback),
        &report,
        &rua(&format!("v=TLSRPTv1; rua=https://{COLLECTOR}:{port}/")),
        MARCH_2_MORNING,
    );
    let error = outcome.results[0].result.clone().expect_err("untrusted");
    assert!(error.contains("untrusted CA"), "{error}");

    // A redirect is not followed.
    let server = HttpsServer::start().expect("server");
    server.set_cert(COLLECTOR, &pki().leaf(&[COLLECTOR]));
    server.set_response(COLLECTOR, Response::redirect(307, "https://elsewhere.test/"));
    let port = server.addr().port();
    let outcome = deliver::deliver(
        &settings(),
        Arc::new(Loopback),
        &report,
        &rua(&format!("v=TLSRPTv1; rua=https://{COLLECTOR}:{port}/")),
        MARCH_2_MORNING,
    );
    let error = outcome.results[0].result.clone().expect_err("redirect");
    assert!(error.contains("HTTP 307 redirect to https://elsewhere.test/ (not followed)"), "{error}");
    assert_eq!(server.requests().len(), 1);

    // Nothing listening.
    let closed = TcpListener::bind(("127.0.0.1", 0)).expect("bind").local_addr().expect("addr").port();
    let outcome = deliver::deliver(
        &settings(),
        Arc::new(Loopback),
        &report,
        &rua(&format!("v=TLSRPTv1; rua=https://{COLLECTOR}:{closed}/")),
        MARCH_2_MORNING,
    );
    assert!(!outcome.delivered());
}

/// RPT-6: delivered as soon as one destination accepts; each destination is tried.
#[test]
fn rpt_6_one_accepting_destination_is_enough() {
    let server = HttpsServer::start().expect("server");
    let (bad, good) = ("bad.collector.test", "good.collector.test");
    server.set_cert(bad, &pki().leaf(&[bad]));
    server.set_cert(good, &pki().leaf(&[good]));
    server.set_response(bad, Response::status(500));
    server.set_response(good, Response::status(200));
    let port = server.addr().port();
    let destinations = rua(&format!("v=TLSRPTv1; rua=https://{bad}:{port}/r, https://{good}:{port}/r"));
    let outcome =
        deliver::deliver(&settings(), Arc::new(Loopback), &small_report(), &destinations, MARCH_2_MORNING);
    assert!(outcome.delivered());
    assert!(outcome.results[0].result.as_ref().expect_err("500").contains("HTTP 500"));
    assert_eq!(outcome.results[1].result, Ok("HTTP 200".to_owned()));
    assert!(outcome.errors().expect("one error").starts_with(&format!("https://{bad}:{port}/r: HTTP 500")));
    let mut state = DeliveryState::new(MARCH_2_MORNING);
    state.record(MARCH_2_MORNING, &outcome, &RetrySchedule::default());
    assert!(state.done && state.delivered);
}

fn script(dir: &TempDir, name: &str, body: &str) -> String {
    let path = dir.path(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path.to_string_lossy().into_owned()
}

/// RPT-10: the message goes to the mail command's standard input, with the mailto: recipients.
#[test]
fn rpt_10_mail_to_fake_sendmail() {
    let dir = TempDir::new("sendmail");
    let out = dir.path("message");
    let args = dir.path("args");
    let command = script(
        &dir,
        "sendmail",
        &format!("printf '%s\\n' \"$@\" > '{}'\ncat > '{}'", args.display(), out.display()),
    );
    let mut s = settings();
    s.sendmail = vec![command, "-t".into(), "-oi".into()];
    s.spool_dir = dir.0.clone();
    let report = small_report();
    let destinations = rua("v=TLSRPTv1; rua=mailto:tlsrpt@example.com");
    let outcome = deliver::deliver(&s, Arc::new(Loopback), &report, &destinations, MARCH_2_MORNING);
    assert_eq!(outcome.results[0].result, Ok("accepted by the mail command".to_owned()), "{outcome:?}");
    assert_eq!(std::fs::read_to_string(&args).expect("args"), "-t\n-oi\n");
    let sent = std::fs::read(&out).expect("message");
    let expected = mail::message(
        &report,
        &addr("noreply@mail.sender.example"),
        &[addr("tlsrpt@example.com")],
        MARCH_2_MORNING,
    );
    assert_eq!(sent, expected);
    let parsed: ParsedMail = serde_json::from_str(&check_py(&[Path::new("mime"), &out])).expect("parsed");
    assert_eq!(parsed.to, ["tlsrpt@example.com"]);
    assert_eq!(parsed.header("TLS-Report-Domain"), "example.com");
    let leftovers: Vec<_> = std::fs::read_dir(&dir.0)
        .expect("dir")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(".mtasts-tlsrpt-"))
        .collect();
    assert!(leftovers.is_empty(), "spool files are unlinked: {leftovers:?}");
}

/// RPT-14: a failing mail command is a failure with its message; one that never reads its input
/// and exits 0 is a success (and raises no SIGPIPE); a hung one is killed.
#[test]
fn rpt_14_failing_mail_command() {
    let dir = TempDir::new("sendmail-fail");
    let failing =
        script(&dir, "fail", "cat > /dev/null\necho 'sendmail: fatal: queue file write error' >&2\nexit 75");
    let mut s = settings();
    s.sendmail = vec![failing];
    s.spool_dir = dir.0.clone();
    let report = small_report();
    let destinations = rua("v=TLSRPTv1; rua=mailto:tlsrpt@example.com");
    let outcome = deliver::deliver(&s, Arc::new(Loopback), &report, &destinations, MARCH_2_MORNING);
    let error = outcome.results[0].result.clone().expect_err("exit 75");
    assert!(error.ends_with("exit status 75: sendmail: fatal: queue file write error"), "{error}");
    let mut state = DeliveryState::new(MARCH_2_MORNING);
    state.record(MARCH_2_MORNING, &outcome, &RetrySchedule::default());
    assert!(!state.done && state.last_error.as_deref().expect("error").contains("exit status 75"));

    s.sendmail = vec![script(&dir, "quick", "exit 0")];
    assert_eq!(deliver::send_mail(&s, &vec![b'x'; 1 << 20]), Ok(()));

    s.sendmail = vec!["/nonexistent/sendmail".into()];
    assert!(deliver::send_mail(&s, b"x").expect_err("missing").contains("cannot run /nonexistent/sendmail"));

    s.sendmail = vec![script(&dir, "hang", "exec sleep 30")];
    s.sendmail_timeout = Duration::from_millis(300);
    assert!(deliver::send_mail(&s, b"x").expect_err("hung").contains("did not finish within 300 ms"));
}

/// RPT-14: exponential backoff, the last attempt 24 h after the first, then no more.
#[test]
fn rpt_14_retry_schedule_stops_at_24_hours() {
    let schedule = RetrySchedule::default();
    let start = MARCH_2_MORNING;
    let mut state = DeliveryState::new(start);
    let mut now = start;
    let mut times = Vec::new();
    while !state.done {
        assert!(state.is_due(now));
        times.push(now - start);
        state.record_result(now, Err("HTTP 503".into()), &schedule);
        now = state.next_attempt_at;
        assert!(times.len() < 100, "the schedule must end");
    }
    let minutes: Vec<u64> = times.iter().map(|t| t / 60).collect();
    assert_eq!(minutes, [0, 5, 15, 35, 75, 155, 315, 555, 795, 1035, 1275, 1440]);
    let gaps: Vec<u64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.windows(2).all(|g| g[1] >= g[0] || g[1] < 4 * 3600), "growing, capped at 4 h");
    assert!(gaps.iter().all(|&g| g <= 4 * 3600));
    assert_eq!(*times.last().expect("last"), 24 * 3600);
    assert!(state.done && !state.delivered);
    assert_eq!(state.attempts, 12);
    assert!(!state.is_due(start + 48 * 3600));
    assert!(state.to_string().starts_with("given up after 12 attempt(s): HTTP 503"));
}

/// RPT-14: the state is data; a restart from the stored form continues the same schedule, and a
/// finished delivery stays finished.
#[test]
fn rpt_14_state_survives_a_restart() {
    let schedule = RetrySchedule::default();
    let mut live = DeliveryState::new(1000);
    live.record_result(1000, Err("HTTP 503".into()), &schedule);
    live.record_result(1300, Err("HTTP 503".into()), &schedule);
    let stored = serde_json::to_string(&live).expect("serialise");
    let mut restarted: DeliveryState = serde_json::from_str(&stored).expect("deserialise");
    assert_eq!(restarted, live);
    assert!(!restarted.is_due(1899) && restarted.is_due(1900));
    restarted.record_result(1900, Ok(()), &schedule);
    let stored = serde_json::to_string(&restarted).expect("serialise");
    let after: DeliveryState = serde_json::from_str(&stored).expect("deserialise");
    assert!(after.done && after.delivered && !after.is_due(u64::MAX));
    assert_eq!(after.first_attempt_at, Some(1000));

    // Counts are data too.
    let (_, key) = sts_key(TESTING_POLICY);
    let mut counts = DayCounts::new();
    let mut f = FailureKey::new(ResultType::StarttlsNotSupported, Some(d("mx1.example.com")));
    f.sending_mta_ip = Some("2001:db8::1".parse().expect("ip"));
    counts.add_failure(&d("example.com"), &key, f, 3);
    let back: DayCounts =
        serde_json::from_str(&serde_json::to_string(&counts).expect("json")).expect("counts");
    assert_eq!(back, counts);
}

// ---------------------------------------------------------------------------------------------
// RPT-18..RPT-21, DANE-4: sessions judged under DANE, counted by the engine under `tlsa` policies.

/// `3 1 1` (DANE-EE, SPKI, SHA-256) of a chain's leaf.
fn dane_ee(chain: &Chain) -> mtasts::ports::TlsaRecord {
    let cert = rustls_pki_types::CertificateDer::from(chain.der[0].as_slice());
    let ee = webpki::EndEntityCert::try_from(&cert).expect("certificate");
    let data = ring::digest::digest(&ring::digest::SHA256, ee.subject_public_key_info().as_ref());
    mtasts::ports::TlsaRecord { usage: 3, selector: 1, matching_type: 1, data: data.as_ref().to_vec() }
}

/// The report of `domain` from the engine's counts of the fake clock's day, schema-validated.
fn engine_report(h: &crate::common::Harness, domain: &str, dir: &TempDir) -> Value {
    let day = Day::from_unix(h.engine.now());
    let counts = h.engine.report_counts(day);
    let report = build_report(
        "Sender Example Ltd",
        &addr("tlsrpt@mail.sender.example"),
        &d("mail.sender.example"),
        &d(domain),
        day,
        &counts,
        id(day, &d(domain), 7),
    )
    .unwrap_or_else(|e| panic!("{domain}: {e}"));
    assert_report_valid(&report, dir)
}

fn policy_of<'a>(json: &'a Value, policy_type: &str) -> &'a Value {
    let policies = json["policies"].as_array().expect("policies");
    let found: Vec<&Value> = policies.iter().filter(|p| p["policy"]["policy-type"] == policy_type).collect();
    assert_eq!(found.len(), 1, "one {policy_type} policy in {json}");
    found[0]
}

fn totals(policy: &Value) -> (u64, u64) {
    (
        policy["summary"]["total-successful-session-count"].as_u64().expect("n"),
        policy["summary"]["total-failure-session-count"].as_u64().expect("n"),
    )
}

fn sorted_details(policy: &Value) -> Vec<(String, u64)> {
    let mut details = failure_details(policy);
    details.sort();
    details
}

/// RPT-18 (tlsa policy, records in presentation form, policy domain = TLSA base domain = the MX
/// host), RPT-19 (DANE result types), RPT-21 (a DANE MX without TLS is `starttls-not-supported`),
/// DANE-4 (a session under both policies, each with its own judgement): sessions through
/// `Engine::check` and `Engine::record_session`, a DNSSEC-validating lookup faked per MX host.
#[test]
fn rpt_18_19_21_dane_sessions_are_counted_under_tlsa() {
    use crate::common::{FakeTlsa, Harness};
    use mtasts::engine::{SessionDetails, Tls};
    use mtasts::ports::TlsaLookup;

    let dir = TempDir::new("dane");
    let chains = &pki().chains;
    let good = chains["mx"].pem(); // valid for mx.example.test under the test root
    let other_key = pki().leaf(&["mx.example.test"]).pem(); // right name, PKIX-valid, another key
    let spare = mtasts::ports::TlsaRecord { data: vec![0xab; 32], ..dane_ee(&chains["mx"]) };
    let fake = Arc::new(FakeTlsa::default());
    let records = vec![dane_ee(&chains["mx"]), spare];
    fake.set("mx.example.test", TlsaLookup::Secure { records: records.clone(), ttl: 3600, base: None });
    fake.set(
        "mx2.example.test",
        TlsaLookup::Secure { records: vec![dane_ee(&chains["mx"])], ttl: 3600, base: None },
    );
    fake.set("mx3.example.test", TlsaLookup::Bogus("RRSIG expired".into()));
    let h = Harness::with_tlsa(mtasts::Timing::default(), Some(fake));
    // One policy for every domain of the fake: testing, listing mx.example.test only.
    h.dns.set_records(&["v=STSv1; id=1"]);
    h.http.set_body("version: STSv1\nmode: testing\nmx: mx.example.test\nmax_age: 86400\n");

    let check = |domain: &str, mx: &str, chain: Option<&str>| {
        h.engine.check(domain, mx, chain.map(str::as_bytes)).expect("check")
    };
    // DANE and MTA-STS both pass.
    for _ in 0..3 {
        assert_eq!(check("example.test", "mx.example.test", Some(&good)).verdict, Verdict::Pass);
    }
    // DANE fails (no record matches the key), MTA-STS passes: not delivered (DANE decides).
    for _ in 0..2 {
        let o = check("example.test", "mx.example.test", Some(&other_key));
        assert_eq!((o.verdict, o.reason), (Verdict::FailEnforce, Reason::TlsaInvalid));
    }
    // No TLS with a DANE MX.
    let o = check("example.test", "mx.example.test", None);
    assert_eq!(o.reason, Reason::DaneRequired);
    // DANE passes, MTA-STS fails (mx2 is not listed): delivered, and the STS failure reported.
    for _ in 0..2 {
        let o = check("example.test", "mx2.example.test", Some(&good));
        assert_eq!((o.verdict, o.reason), (Verdict::FailTesting, Reason::MxMismatch));
    }
    // A bogus TLSA answer.
    assert_eq!(check("example.test", "mx3.example.test", Some(&good)).reason, Reason::DnssecInvalid);
    // The caller judged DANE itself, for an MX the engine has no TLSA records for.
    let o = h
        .engine
        .check_with("example.test", "mx4.example.test", Tls::Chain(good.as_bytes()), Dane::Failed)
        .expect("check");
    assert_eq!(o.reason, Reason::TlsaInvalid);
    // The MTA records sessions itself: a bad certificate, a DANE failure and a success.
    let details = SessionDetails {
        sending_ip: Some("192.0.2.25".parse().expect("ip")),
        receiving_ip: Some("198.51.100.7".parse().expect("ip")),
        failure_reason_code: None,
    };
    let record = |result: Option<Reason>, details: &SessionDetails| {
        h.engine.record_session("example.test", "mx.example.test", result, details).expect("record")
    };
    record(Some(Reason::CertificateExpired), &details);
    record(Some(Reason::TlsaInvalid), &SessionDetails::default());
    record(None, &SessionDetails::default());
    // A domain whose MX is itself: one report holds both its sts and its tlsa policy.
    assert_eq!(check("mx.example.test", "mx.example.test", Some(&good)).verdict, Verdict::Pass);

    // The recipient domain's report: MTA-STS's own judgement of every session.
    let json = engine_report(&h, "example.test", &dir);
    assert_eq!(json["policies"].as_array().expect("policies").len(), 1, "no tlsa policy here: {json}");
    let sts = policy_of(&json, "sts");
    assert_eq!(sts["policy"]["policy-domain"], "example.test");
    assert_eq!(totals(sts), (3 + 2 + 1, 1 + 2 + 1 + 1 + 1), "{sts}");
    // One validation-failure entry per unlisted MX (mx2 twice, mx3, mx4).
    assert_eq!(
        sorted_details(sts),
        [
            ("certificate-expired".to_owned(), 1),
            ("starttls-not-supported".to_owned(), 1),
            ("validation-failure".to_owned(), 1),
            ("validation-failure".to_owned(), 1),
            ("validation-failure".to_owned(), 2),
        ]
    );

    // The MX host's report: DANE's judgement of the sessions with it, whatever the recipient
    // domain, under its TLSA records; and the sts policy of the domain mx.example.test.
    let json = engine_report(&h, "mx.example.test", &dir);
    assert_eq!(json["policies"].as_array().expect("policies").len(), 2, "sts and tlsa: {json}");
    let tlsa = policy_of(&json, "tlsa");
    assert_eq!(tlsa["policy"]["policy-domain"], "mx.example.test");
    let strings: Vec<String> = records.iter().map(ToString::to_string).collect();
    assert_eq!(tlsa["policy"]["policy-string"], serde_json::json!(strings));
    assert!(strings[0].starts_with("3 1 1 ") && strings[1] == format!("3 1 1 {}", "ab".repeat(32)));
    assert!(tlsa["policy"].get("mx-host").is_none());
    assert_eq!(totals(tlsa), (3 + 1 + 1, 2 + 1 + 1 + 1), "{tlsa}");
    assert_eq!(
        sorted_details(tlsa),
        [
            ("certificate-expired".to_owned(), 1),
            ("starttls-not-supported".to_owned(), 1),
            ("tlsa-invalid".to_owned(), 3),
        ]
    );
    let no_tls = tlsa["failure-details"]
        .as_array()
        .expect("details")
        .iter()
        .find(|f| f["result-type"] == "starttls-not-supported")
        .expect("no TLS");
    assert_eq!(no_tls["receiving-mx-hostname"], "mx.example.test");
    assert!(no_tls["failure-reason-code"].as_str().expect("code").contains("TLS is mandatory"));
    let expired = tlsa["failure-details"]
        .as_array()
        .expect("details")
        .iter()
        .find(|f| f["result-type"] == "certificate-expired")
        .expect("recorded");
    assert_eq!(expired["sending-mta-ip"], "192.0.2.25");
    assert_eq!(expired["receiving-ip"], "198.51.100.7");
    let sts = policy_of(&json, "sts");
    assert_eq!(sts["policy"]["policy-domain"], "mx.example.test");
    assert_eq!(totals(sts), (1, 0));

    // DANE passed where MTA-STS failed: a tlsa success.
    let json = engine_report(&h, "mx2.example.test", &dir);
    let tlsa = policy_of(&json, "tlsa");
    assert_eq!(totals(tlsa), (2, 0));
    assert_eq!(tlsa["policy"]["policy-string"], serde_json::json!([dane_ee(&chains["mx"]).to_string()]));
    // A bogus answer: dnssec-invalid, under a tlsa policy without records.
    let json = engine_report(&h, "mx3.example.test", &dir);
    let tlsa = policy_of(&json, "tlsa");
    assert_eq!(tlsa["policy"]["policy-string"], serde_json::json!([]));
    assert_eq!((totals(tlsa), sorted_details(tlsa)), ((0, 1), vec![("dnssec-invalid".to_owned(), 1)]));
    // The caller's DANE failure, records unknown to the engine.
    let json = engine_report(&h, "mx4.example.test", &dir);
    let tlsa = policy_of(&json, "tlsa");
    assert_eq!((totals(tlsa), sorted_details(tlsa)), ((0, 1), vec![("tlsa-invalid".to_owned(), 1)]));
}
