//! DANE end to end: an engine built from a configuration file (`[dns] dnssec = "validate"` with
//! a fixture trust anchor) against zones signed at test time, judging real certificate chains
//! (docs/dane.md). The MTA-STS side has no policy here: DANE alone decides where it applies.

use std::net::Ipv4Addr;

use hickory_proto::rr::RecordType;
use mtasts::{Reason, Verdict};
use mtasts_fixtures::dns::DnsServer;
use mtasts_fixtures::dnssec::{AnchorForm, ZoneSet};
use mtasts_fixtures::pki::pki;

/// SHA-256 of the SubjectPublicKeyInfo of the test PKI's `mx` leaf (for `3 1 1`).
fn mx_leaf_spki_sha256() -> Vec<u8> {
    let der = pki().chains["mx"].der[0].clone();
    let cert = rustls_pki_types::CertificateDer::from(der.as_slice());
    let ee = webpki::EndEntityCert::try_from(&cert).expect("certificate");
    ring::digest::digest(&ring::digest::SHA256, ee.subject_public_key_info().as_ref()).as_ref().to_vec()
}

struct Fixture {
    _dns: DnsServer,
    dir: std::path::PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Signed `test.` and `example.test.`: `mx.example.test` publishes `3 1 1` of the `mx` leaf,
/// `bad.example.test` a spoiled TLSA RRset, `plain.example.test` no TLSA. Returns the engine's
/// configuration file.
fn fixture(tag: &str) -> (Fixture, std::path::PathBuf) {
    let lo = Ipv4Addr::LOCALHOST;
    let mut z = ZoneSet::new("test");
    z.zone("example.test", true).zone("badmx.test", true).zone("hosted.test", false);
    // badmx.test: a spoiled MX RRset. hosted.test: an unsigned domain whose MX is the signed,
    // TLSA-publishing mx.example.test (a provider hosting it).
    z.mx("badmx.test", 10, "mx.example.test").spoil("badmx.test", RecordType::MX).mx(
        "hosted.test",
        10,
        "mx.example.test",
    );
    z.a("mx.example.test", lo)
        .tlsa("_25._tcp.mx.example.test", 3, 1, 1, &mx_leaf_spki_sha256())
        .a("bad.example.test", lo)
        .tlsa("_25._tcp.bad.example.test", 3, 1, 1, &mx_leaf_spki_sha256())
        .spoil("_25._tcp.bad.example.test", RecordType::TLSA)
        .a("plain.example.test", lo);
    let zones = z.sign();
    let anchor = zones.trust_anchor(AnchorForm::Ds);
    let dns = DnsServer::start().expect("dns fixture");
    dns.serve_zones(zones);
    let dir = std::env::temp_dir().join(format!("mtasts-dane-config-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("anchor"), format!("{anchor}\n")).expect("anchor");
    let config = dir.join("mtasts.toml");
    std::fs::write(
        &config,
        format!(
            "[dns]\nnameservers = [\"{}\"]\ntimeout_ms = 10000\ndnssec = \"validate\"\ntrust_anchor = \"{}\"\n[cache]\npath = \"memory\"\n",
            dns.addr(),
            dir.join("anchor").display()
        ),
    )
    .expect("config");
    (Fixture { _dns: dns, dir }, config)
}

#[test]
fn dane_decides_through_the_configured_validating_lookup() {
    let (_f, config) = fixture("decides");
    let engine = mtasts::config::Config::from_file(&config).expect("config").build_engine().expect("engine");
    let good = pki().chains["mx"].pem();
    let other_key = pki().leaf(&["mx.example.test"]).pem();

    // DANE-EE 3 1 1 matches the presented leaf: a pass, decided by DANE.
    let o = engine.check("example.test", "mx.example.test", Some(good.as_bytes())).expect("check");
    assert_eq!(o.verdict, Verdict::Pass, "{o:?}");
    let dane = o.dane.as_ref().expect("DANE applies");
    assert!(dane.secure() && dane.usable == 1 && dane.records().len() == 1, "{dane:?}");
    // Another key with the right name: tlsa-invalid, never delivered.
    let o = engine.check("example.test", "mx.example.test", Some(other_key.as_bytes())).expect("check");
    assert_eq!((o.verdict, o.reason), (Verdict::FailEnforce, Reason::TlsaInvalid), "{o:?}");
    // No TLS where DANE applies: dane-required.
    let o = engine.check("example.test", "mx.example.test", None).expect("check");
    assert_eq!((o.verdict, o.reason), (Verdict::FailEnforce, Reason::DaneRequired), "{o:?}");
    // A spoiled signature: dnssec-invalid, before connecting too.
    let o = engine.check_mx("example.test", "bad.example.test").expect("check_mx");
    assert_eq!((o.verdict, o.reason), (Verdict::FailEnforce, Reason::DnssecInvalid), "{o:?}");
    // DANE-V-13: a spoiled MX RRset fails every MX of the domain, even one DANE would pass.
    let o = engine.check("badmx.test", "mx.example.test", Some(good.as_bytes())).expect("check");
    assert_eq!((o.verdict, o.reason), (Verdict::FailEnforce, Reason::DnssecInvalid), "{o:?}");
    let o = engine.check_mx("badmx.test", "plain.example.test").expect("check_mx");
    assert_eq!((o.verdict, o.reason), (Verdict::FailEnforce, Reason::DnssecInvalid), "{o:?}");
    // DANE-V-14: an unsigned domain hosted on a DANE host is protected by the host's TLSA records.
    let o = engine.check("hosted.test", "mx.example.test", Some(other_key.as_bytes())).expect("check");
    assert_eq!((o.verdict, o.reason), (Verdict::FailEnforce, Reason::TlsaInvalid), "{o:?}");
    let o = engine.check("hosted.test", "mx.example.test", Some(good.as_bytes())).expect("check");
    assert_eq!(o.verdict, Verdict::Pass, "{o:?}");
    // A secure host without TLSA records: DANE does not apply, MTA-STS (none here) decides.
    let o = engine.check("example.test", "plain.example.test", None).expect("check");
    assert_eq!(o.verdict, Verdict::NoPolicy, "{o:?}");
    assert!(o.dane.is_none());
}

#[test]
fn dnssec_off_never_does_dane() {
    let (_f, config) = fixture("off");
    let text = std::fs::read_to_string(&config).expect("config");
    let text = text
        .replace("dnssec = \"validate\"", "dnssec = \"off\"")
        .replace(&text[text.find("trust_anchor").expect("anchor")..text.find("[cache]").expect("cache")], "");
    std::fs::write(&config, text).expect("config");
    let engine = mtasts::config::Config::from_file(&config).expect("config").build_engine().expect("engine");
    let o = engine.check("example.test", "mx.example.test", None).expect("check");
    assert_eq!(o.verdict, Verdict::NoPolicy, "{o:?}");
    assert!(o.dane.is_none());
}

#[test]
fn mtasts_check_shows_dane_per_mx() {
    let (_f, config) = fixture("cli");
    let run = |json: bool| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_mtasts"));
        cmd.args(["check", "example.test", "--mx", "mx.example.test", "--mx", "plain.example.test"])
            .arg("--config")
            .arg(&config);
        if json {
            cmd.arg("--json");
        }
        let out = cmd.output().expect("mtasts check");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("UTF-8")
    };
    let v: serde_json::Value = serde_json::from_str(&run(true)).expect("JSON");
    let hex: String = mx_leaf_spki_sha256().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        v["mx"][0]["dane"],
        serde_json::json!({"secure": true, "records": [format!("3 1 1 {hex}")], "usable": 1, "state": "tls-required"})
    );
    assert_eq!(v["mx"][1]["dane"], serde_json::Value::Null, "no TLSA records: DANE does not apply");
    let text = run(false);
    assert!(
        text.contains("DANE: 1 DNSSEC-secure TLSA record(s), 1 usable: TLS is mandatory and DANE decides"),
        "{text}"
    );
}
