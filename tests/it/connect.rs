//! `mtasts check --connect` end to end: the real binary contacts SMTP sinks on 127.0.0.0/8 (one
//! address per MX host, all on one port given with `--port`), and the engine judges what each
//! presented. MTA-STS: a good chain, a wrong name, an expired certificate, no STARTTLS, an
//! address that refuses connections and one that never answers, all in one run (one failing MX
//! does not stop the others). DANE: a DANE-EE pass with a self-signed certificate, a DANE
//! mismatch, and an MX whose first address is down (docs/dane.md for the DANE rules).

use std::io::Read;
use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::process::{Command, Output};

use mtasts_fixtures::dns::DnsServer;
use mtasts_fixtures::dnssec::{AnchorForm, ZoneSet};
use mtasts_fixtures::pki::{Chain, pki};
use mtasts_fixtures::smtp::SmtpSink;
use serde_json::{Value, json};

fn mtasts(args: &[&str], config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mtasts"))
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("run mtasts")
}

fn json_of(out: &Output) -> Value {
    assert!(out.status.success(), "status {:?}: {}", out.status, String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

/// Sinks on 127.0.0.x, all on the port of the first one.
struct Sinks {
    port: u16,
    sinks: Vec<SmtpSink>,
}

impl Sinks {
    fn start(first: (u8, Option<&Chain>)) -> Self {
        let sink = SmtpSink::start(Ipv4Addr::new(127, 0, 0, first.0), 0, first.1).expect("sink");
        Self { port: sink.addr().port(), sinks: vec![sink] }
    }

    fn add(&mut self, last: u8, chain: Option<&Chain>) {
        let sink = SmtpSink::start(Ipv4Addr::new(127, 0, 0, last), self.port, chain)
            .expect("sink on the shared port");
        self.sinks.push(sink);
    }

    /// The probes never send mail, and each sink was contacted once.
    fn assert_contacted_once_without_mail(&self) {
        for s in &self.sinks {
            assert!(s.messages().is_empty(), "{s:?} received mail");
            assert_eq!(s.connections(), 1, "{s:?}");
        }
    }
}

/// A server on `127.0.0.last:port` that accepts a connection and never says anything (it keeps
/// the connection until the client gives up).
fn silent_server(last: u8, port: u16) -> std::thread::JoinHandle<usize> {
    let listener = TcpListener::bind((Ipv4Addr::new(127, 0, 0, last), port)).expect("silent server");
    std::thread::spawn(move || {
        let Ok((mut conn, _)) = listener.accept() else { return 0 };
        let mut buf = [0u8; 512];
        let mut got = 0;
        while let Ok(n) = conn.read(&mut buf) {
            if n == 0 {
                break;
            }
            got += n;
        }
        got
    })
}

fn mx<'a>(v: &'a Value, host: &str) -> &'a Value {
    v["mx"]
        .as_array()
        .expect("mx array")
        .iter()
        .find(|m| m["host"] == host)
        .unwrap_or_else(|| panic!("{host} in {v}"))
}

#[test]
fn connect_judges_every_mx_and_one_failure_stops_none() {
    let w = mtasts_fixtures::world::World::start("connect-sts").expect("fixtures");
    let config = w.write_config_text(&format!("{}[cache]\npath = \"memory\"\n", w.base_config(false)));
    w.publish(
        "example.test",
        "c1",
        "version: STSv1\nmode: enforce\nmx: mx.example.test\nmx: *.example.test\nmax_age: 604800\n",
    );
    let good = &pki().chains["mx"];
    let wrong = pki().leaf(&["www.example.test"]);
    let expired = pki().leaf_with(&["old.example.test"], (2020, 1, 1), (2024, 1, 1), true);
    let mut sinks = Sinks::start((11, Some(good)));
    sinks.add(12, Some(&wrong));
    sinks.add(13, Some(&expired));
    sinks.add(14, None);
    let silent = silent_server(16, sinks.port);
    for (host, last) in [("mx", 11), ("wrong", 12), ("old", 13), ("plain", 14), ("down", 15), ("silent", 16)]
    {
        w.dns.set_a(&format!("{host}.example.test"), Ipv4Addr::new(127, 0, 0, last));
    }
    // AAAA addresses are tried after the A ones.
    w.dns.set_aaaa("down.example.test", std::net::Ipv6Addr::LOCALHOST);
    let port = sinks.port.to_string();
    let ca = w.ca_file();
    let mut args = vec!["check", "example.test", "--connect", "--port", &port, "--timeout", "2"];
    args.extend(["--ca-file", ca.to_str().expect("UTF-8 path")]);
    let hosts: Vec<String> = ["mx", "wrong", "old", "plain", "down", "silent"]
        .iter()
        .map(|h| format!("{h}.example.test"))
        .collect();
    for h in &hosts {
        args.extend(["--mx", h.as_str()]);
    }
    let mut json_args = args.clone();
    json_args.push("--json");
    let v = json_of(&mtasts(&json_args, &config));

    // Before connecting every host matches the policy: the pre-connection fields are as before.
    assert_eq!(mx(&v, "mx.example.test")["verdict"], "pass");

    // A good chain: TLS, the chain shown, the pattern that matched, pass.
    let c = &mx(&v, "mx.example.test")["connection"];
    assert_eq!(c["addresses"], json!([{"address": "127.0.0.11", "port": sinks.port, "error": null}]), "{c}");
    assert_eq!(c["address"], "127.0.0.11");
    assert!(c["greeting"].as_str().is_some_and(|g| g.starts_with("220 ")), "{c}");
    assert_eq!(c["starttls"], true);
    assert_eq!(c["tls"]["version"], "TLSv1.3");
    assert!(c["tls"]["cipher"].as_str().is_some_and(|s| s.starts_with("TLS13_")), "{c}");
    assert_eq!(c["tls"]["sni"], "mx.example.test");
    let chain = c["chain"].as_array().expect("chain");
    assert_eq!(chain.len(), 2, "leaf and intermediate: {c}");
    assert_eq!(chain[0]["subject"], "CN=mx.example.test");
    assert_eq!(chain[0]["sans"], json!(["mx.example.test", "mx2.example.test"]));
    assert_eq!(chain[0]["issuer"], "CN=mtasts test intermediate");
    assert_eq!(chain[0]["not_after"], "2035-01-01T00:00:00Z");
    assert_eq!(chain[1]["subject"], "CN=mtasts test intermediate");
    assert_eq!((&c["verdict"], &c["reason"], &c["error"]), (&json!("pass"), &Value::Null, &Value::Null));
    assert_eq!(c["matched"], json!({"mx_pattern": "mx.example.test", "tlsa": []}));

    // A certificate for another name.
    let c = &mx(&v, "wrong.example.test")["connection"];
    assert_eq!(
        (&c["verdict"], &c["reason"]),
        (&json!("fail-enforce"), &json!("certificate-host-mismatch")),
        "{c}"
    );
    assert_eq!(c["chain"][0]["sans"], json!(["www.example.test"]));
    assert_eq!(c["matched"]["mx_pattern"], "*.example.test");

    // An expired certificate.
    let c = &mx(&v, "old.example.test")["connection"];
    assert_eq!((&c["verdict"], &c["reason"]), (&json!("fail-enforce"), &json!("certificate-expired")), "{c}");
    assert_eq!(c["chain"][0]["not_after"], "2024-01-01T00:00:00Z");

    // No STARTTLS: judged as a session without TLS.
    let c = &mx(&v, "plain.example.test")["connection"];
    assert_eq!((&c["starttls"], &c["tls"]), (&json!(false), &Value::Null), "{c}");
    assert_eq!(c["chain"], json!([]));
    assert_eq!(
        (&c["verdict"], &c["reason"]),
        (&json!("fail-enforce"), &json!("starttls-not-supported")),
        "{c}"
    );

    // Nothing listening, and a server that never greets: no session, no verdict, a reason.
    let c = &mx(&v, "down.example.test")["connection"];
    assert_eq!((&c["address"], &c["verdict"]), (&Value::Null, &Value::Null), "{c}");
    let tried: Vec<&str> = c["addresses"]
        .as_array()
        .expect("addresses")
        .iter()
        .map(|a| a["address"].as_str().expect("ip"))
        .collect();
    assert_eq!(tried, ["127.0.0.15", "::1"], "{c}");
    for a in c["addresses"].as_array().expect("addresses") {
        assert!(a["error"].as_str().is_some_and(|e| e.starts_with("connect: ")), "{c}");
    }
    assert_eq!(
        c["error"],
        format!("no address of down.example.test answered on port {} (2 tried)", sinks.port)
    );
    let c = &mx(&v, "silent.example.test")["connection"];
    assert_eq!(c["addresses"][0]["error"], "greeting: no answer within 2 s", "{c}");
    assert_eq!(c["verdict"], Value::Null);

    // The text output says the same for a person.
    let out = mtasts(&args, &config);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    eprintln!("{text}");
    for want in [
        "STARTTLS: offered; TLSv1.3, TLS13_",
        "certificate 0: CN=mx.example.test",
        "    SANs: mx.example.test, mx2.example.test",
        "    notAfter: 2035-01-01T00:00:00Z",
        "matched: MTA-STS pattern `mx.example.test`",
        "after the handshake: pass",
        "after the handshake: fail-enforce  certificate-host-mismatch",
        "after the handshake: fail-enforce  certificate-expired",
        "STARTTLS: not offered",
        "without TLS: fail-enforce  starttls-not-supported",
        "not reached: no address of down.example.test answered",
        "add wrong.example.test to its subjectAltName",
        "renew the certificate of old.example.test",
    ] {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }
    assert!(!text.contains("MX hosts are not contacted"), "{text}");
    // Each sink saw the JSON run and the text run, and no mail.
    for s in &sinks.sinks {
        assert!(s.messages().is_empty());
        assert_eq!(s.connections(), 2, "{s:?}");
    }
    assert_eq!(silent.join().expect("silent server"), 0, "the client sent nothing before a greeting");
}

/// SHA-256 of the SubjectPublicKeyInfo of a chain's leaf (for `3 1 1`).
fn spki_sha256(chain: &Chain) -> Vec<u8> {
    let cert = rustls_pki_types::CertificateDer::from(chain.der[0].as_slice());
    let ee = webpki::EndEntityCert::try_from(&cert).expect("certificate");
    ring::digest::digest(&ring::digest::SHA256, ee.subject_public_key_info().as_ref()).as_ref().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn connect_judges_dane_sessions() {
    let self_signed = &pki().chains["self-signed"];
    let other = &pki().chains["mx"];
    let lo = |last| Ipv4Addr::new(127, 0, 0, last);
    let mut z = ZoneSet::new("test");
    z.zone("example.test", true);
    z.mx("example.test", 10, "dane.example.test")
        .mx("example.test", 20, "mismatch.example.test")
        .mx("example.test", 30, "two.example.test")
        // DANE-EE for the self-signed leaf, beside a record for another key.
        .a("dane.example.test", lo(21))
        .tlsa("_25._tcp.dane.example.test", 3, 1, 1, &spki_sha256(other))
        .tlsa("_25._tcp.dane.example.test", 3, 1, 1, &spki_sha256(self_signed))
        // Records for a key the server does not present.
        .a("mismatch.example.test", lo(22))
        .tlsa("_25._tcp.mismatch.example.test", 3, 1, 1, &spki_sha256(other))
        // The first address refuses connections; the second answers.
        .a("two.example.test", lo(23))
        .a("two.example.test", lo(24))
        .tlsa("_25._tcp.two.example.test", 3, 1, 1, &spki_sha256(self_signed))
        // Only a PKIX-EE record, which SMTP does not use: TLS without authentication.
        .mx("example.test", 40, "pkix.example.test")
        .a("pkix.example.test", lo(25))
        .tlsa("_25._tcp.pkix.example.test", 1, 1, 1, &spki_sha256(self_signed));
    let zones = z.sign();
    let anchor = zones.trust_anchor(AnchorForm::Ds);
    let dns = DnsServer::start().expect("dns fixture");
    dns.serve_zones(zones);
    let dir = std::env::temp_dir().join(format!("mtasts-connect-dane-{}", std::process::id()));
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
    let mut sinks = Sinks::start((21, Some(self_signed)));
    sinks.add(22, Some(self_signed));
    sinks.add(24, Some(self_signed));
    sinks.add(25, Some(self_signed));
    let port = sinks.port.to_string();

    let v = json_of(&mtasts(&["check", "example.test", "--connect", "--port", &port, "--json"], &config));
    let hosts: Vec<&str> =
        v["mx"].as_array().expect("mx").iter().map(|m| m["host"].as_str().expect("host")).collect();
    assert_eq!(
        hosts,
        ["dane.example.test", "mismatch.example.test", "two.example.test", "pkix.example.test"],
        "{v}"
    );

    // DANE-EE with a self-signed certificate: a pass, and the record that matched is named.
    let m = mx(&v, "dane.example.test");
    assert_eq!(m["dane"]["state"], "tls-required", "{m}");
    let c = &m["connection"];
    assert_eq!((&c["verdict"], &c["reason"]), (&json!("pass"), &Value::Null), "{c}");
    assert_eq!(
        c["matched"],
        json!({"mx_pattern": null, "tlsa": [format!("3 1 1 {}", hex(&spki_sha256(self_signed)))]})
    );
    assert_eq!(c["chain"].as_array().map(Vec::len), Some(1));
    assert_eq!(c["chain"][0]["subject"], c["chain"][0]["issuer"], "self-signed: {c}");

    // The TLSA records name another key: tlsa-invalid, whatever MTA-STS says.
    let c = &mx(&v, "mismatch.example.test")["connection"];
    assert_eq!((&c["verdict"], &c["reason"]), (&json!("fail-enforce"), &json!("tlsa-invalid")), "{c}");
    assert_eq!(c["matched"]["tlsa"], json!([]));

    // Addresses in order: the first refuses, the second gives the session.
    let c = &mx(&v, "two.example.test")["connection"];
    let tried: Vec<&str> = c["addresses"]
        .as_array()
        .expect("addresses")
        .iter()
        .map(|a| a["address"].as_str().expect("ip"))
        .collect();
    assert_eq!(tried, ["127.0.0.23", "127.0.0.24"], "{c}");
    assert!(c["addresses"][0]["error"].as_str().is_some_and(|e| e.starts_with("connect: ")), "{c}");
    assert_eq!(c["addresses"][1]["error"], Value::Null);
    assert_eq!((&c["address"], &c["verdict"]), (&json!("127.0.0.24"), &json!("pass")), "{c}");

    // No usable record: any chain passes over TLS.
    let c = &mx(&v, "pkix.example.test")["connection"];
    assert_eq!((&c["verdict"], &c["matched"]["tlsa"]), (&json!("pass"), &json!([])), "{c}");

    sinks.assert_contacted_once_without_mail();
    let out = mtasts(&["check", "example.test", "--connect", "--port", &port], &config);
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}");
    for want in [
        &format!("matched: TLSA 3 1 1 {}", hex(&spki_sha256(self_signed)))[..],
        "after the handshake: fail-enforce  tlsa-invalid",
        "matched: no usable TLSA record: TLS is required, the certificate is not authenticated",
        "no TLSA record of mismatch.example.test matches the certificate it presents",
    ] {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn connect_options_are_checked() {
    let dir = std::env::temp_dir().join(format!("mtasts-connect-args-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("mtasts.toml");
    std::fs::write(&config, "[cache]\npath = \"memory\"\n").expect("config");
    for args in [
        &["check", "example.test", "--port", "2525"][..],
        &["check", "example.test", "--timeout", "5"],
        &["check", "example.test", "--connect", "--port", "0"],
        &["check", "example.test", "--connect", "--port", "65536"],
        &["check", "example.test", "--connect", "--timeout", "0"],
        &["check", "example.test", "--connect", "--ehlo", "not a name"],
        &["check", "example.test", "--connect", "--ehlo", "[300.1.1.1]"],
    ] {
        let out = mtasts(args, &config);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!out.stderr.is_empty() && out.stdout.is_empty(), "{args:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
