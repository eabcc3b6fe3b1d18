//! `mtasts doctor` against the fixtures: a DNS fixture serving zones signed at test time with
//! their trust anchor (`[dns] dnssec = "validate"`), a store directory whose mode decides
//! whether `--user nobody` may write it, a running `mtasts serve`, and MTA configuration
//! directories made here (`--exim-dir`, `--postfix-dir`).

use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use mtasts_fixtures::dns::DnsServer;
use mtasts_fixtures::dnssec::{AnchorForm, ZoneSet};

/// Signed `test.` and `example.test.` (with an MX record), served by a DNS fixture; the
/// directory of the test; the trust anchor of those zones and one of other keys.
struct Fixture {
    _dns: DnsServer,
    dns_addr: String,
    dir: PathBuf,
    serve: Option<Child>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(mut child) = self.serve.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn zones() -> ZoneSet {
    let mut z = ZoneSet::new("test");
    z.zone("example.test", true);
    z.mx("example.test", 10, "mx.example.test").a("mx.example.test", Ipv4Addr::LOCALHOST);
    z
}

impl Fixture {
    fn new(tag: &str) -> Self {
        let signed = zones().sign();
        let anchor = signed.trust_anchor(AnchorForm::Ds);
        // The same names signed with other keys: their anchor matches nothing served.
        let wrong = zones().sign().trust_anchor(AnchorForm::Ds);
        let dns = DnsServer::start().expect("dns fixture");
        dns.serve_zones(signed);
        let dir = std::env::temp_dir().join(format!("mtasts-doctor-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("store")).expect("dir");
        // Reachable by any user (temp_dir may be private to the runner on some systems).
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::write(dir.join("anchor"), format!("{anchor}\n")).expect("anchor");
        std::fs::write(dir.join("wrong-anchor"), format!("{wrong}\n")).expect("anchor");
        let dns_addr = dns.addr().to_string();
        Self { _dns: dns, dns_addr, dir, serve: None }
    }

    /// A configuration validating from `anchor` (a file of the fixture directory), with the
    /// store in `store/` and `extra` appended.
    fn config(&self, anchor: &str, extra: &str) -> PathBuf {
        let path = self.dir.join("mtasts.toml");
        std::fs::write(
            &path,
            format!(
                "[dns]\nnameservers = [\"{}\"]\ntimeout_ms = 5000\ndnssec = \"validate\"\ntrust_anchor = \"{}\"\n\
                 [cache]\npath = \"{}\"\n{extra}",
                self.dns_addr,
                self.dir.join(anchor).display(),
                self.dir.join("store/policies.sqlite").display()
            ),
        )
        .expect("config");
        path
    }

    /// Starts `mtasts serve` with the configuration as it is now; returns its port.
    fn start_serve(&mut self, config: &Path) -> u16 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mtasts"))
            .args(["serve", "--cache", "memory", "--listen", "inet:127.0.0.1:0", "--config"])
            .arg(config)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("mtasts serve");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
            &mut line,
        )
        .expect("listening line");
        self.serve = Some(child);
        line.trim().rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("{line:?}"))
    }

    fn mkdir(&self, name: &str) -> PathBuf {
        let d = self.dir.join(name);
        std::fs::create_dir_all(&d).expect("mkdir");
        d
    }
}

/// Runs `mtasts doctor ARGS`: exit code and standard output.
fn doctor(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mtasts")).arg("doctor").args(args).output().expect("doctor");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// The line of check `what`.
fn line<'a>(out: &'a str, what: &str) -> &'a str {
    out.lines()
        .find(|l| l[6..].starts_with(&format!("{what}: ")))
        .unwrap_or_else(|| panic!("no {what} in {out}"))
}

/// A sound installation: every line `ok`, exit 0.
#[test]
fn a_sound_installation_passes() {
    let mut f = Fixture::new("sound");
    let config = f.config("anchor", "");
    let port = f.start_serve(&config);
    let config = f.config("anchor", &format!("[serve]\nlisten = \"inet:127.0.0.1:{port}\"\n"));
    std::fs::set_permissions(f.dir.join("store"), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let postfix = f.mkdir("postfix");
    std::fs::write(
        postfix.join("main.cf"),
        format!("# mtasts\nsmtp_tls_policy_maps = socketmap:inet:127.0.0.1:{port}:postfix\n"),
    )
    .expect("main.cf");
    let exim = f.mkdir("exim4/conf.d/router");
    std::fs::write(
        exim.join("150_mtasts"),
        "condition = ${dlfunc{/usr/local/lib/libmtasts.so}{mtasts_exim_mode}{$domain}}\n",
    )
    .expect("exim");
    let (exim_dir, postfix_dir) = (f.dir.join("exim4"), postfix);
    let (code, out, err) = doctor(&[
        "--config",
        s(&config),
        "--user",
        "nobody",
        "--exim-dir",
        s(&exim_dir),
        "--postfix-dir",
        s(&postfix_dir),
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    for l in out.lines() {
        assert!(l.starts_with("ok    ") && !l.contains("->"), "{out}");
    }
    for what in ["config", "store", "trust anchors", "dns", "dnssec", "serve", "snippets"] {
        line(&out, what);
    }
    assert!(line(&out, "store").contains("can create it"), "{out}");
    assert!(line(&out, "dnssec").contains("MX of test validated as secure"), "{out}");
    assert!(
        line(&out, "serve").contains(&format!("inet:127.0.0.1:{port} answers socketmap lookups")),
        "{out}"
    );
    assert!(out.contains("Exim: mtasts dlfunc calls in") && out.contains("Postfix: "), "{out}");
    assert_eq!(out.lines().count(), 9, "{out}");

    // A named signed domain as the probe, and JSON.
    let (code, out, err) = doctor(&[
        "--config",
        s(&config),
        "--dnssec-probe",
        "example.test",
        "--json",
        "--exim-dir",
        s(&exim_dir),
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(doc["ok"], true, "{out}");
    let checks = doc["checks"].as_array().expect("checks");
    assert!(checks.iter().all(|c| c["status"] == "ok" && c["todo"] == ""), "{out}");
    assert!(checks.iter().any(|c| c["check"] == "dnssec"
        && c["detail"].as_str().is_some_and(|d| d.contains("MX of example.test validated as secure"))));
}

/// What fails is said, with what to do, and the exit status is 1: a trust anchor that matches
/// nothing served (bogus), a store directory `nobody` may not write, a server not running.
/// Missing snippets are warnings.
#[test]
fn problems_are_reported_with_what_to_do() {
    let f = Fixture::new("problems");
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let config = f.config("wrong-anchor", &format!("[serve]\nlisten = \"inet:127.0.0.1:{closed}\"\n"));
    std::fs::set_permissions(f.dir.join("store"), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let postfix = f.mkdir("postfix");
    std::fs::write(postfix.join("main.cf"), "smtp_tls_security_level = may\n").expect("main.cf");
    let exim = f.mkdir("exim4");
    let (code, out, err) = doctor(&[
        "--config",
        s(&config),
        "--user",
        "nobody",
        "--exim-dir",
        s(&exim),
        "--postfix-dir",
        s(&postfix),
    ]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(line(&out, "config").starts_with("ok "), "{out}");
    let store = line(&out, "store");
    assert!(
        store.starts_with("fail  store: nobody cannot write in ") && store.contains("-> chown nobody "),
        "{out}"
    );
    let dnssec = line(&out, "dnssec");
    assert!(dnssec.starts_with("fail  dnssec: MX of test is bogus") && dnssec.contains("-> "), "{out}");
    // DNS itself answers.
    assert!(line(&out, "dns").starts_with("ok "), "{out}");
    let serve = line(&out, "serve");
    assert!(
        serve.starts_with(&format!("fail  serve: inet:127.0.0.1:{closed}: "))
            && serve.contains("-> start it"),
        "{out}"
    );
    let snippets: Vec<&str> = out.lines().filter(|l| l.contains(" snippets: ")).collect();
    assert_eq!(snippets.len(), 2, "{out}");
    assert!(snippets.iter().all(|l| l.starts_with("warn  ") && l.contains("-> add examples/")), "{out}");

    // Profiles configured, and main.cf names a map that has none.
    std::fs::write(
        postfix.join("main.cf"),
        format!("smtp_tls_policy_maps = socketmap:inet:127.0.0.1:{closed}:postfix\n"),
    )
    .expect("main.cf");
    let with_profiles = f.config(
        "wrong-anchor",
        &format!("[serve]\nlisten = \"inet:127.0.0.1:{closed}\"\n[serve.profile.postfix310]\npostfix_tlsrpt = true\n"),
    );
    let (_, out, _) =
        doctor(&["--config", s(&with_profiles), "--exim-dir", "/nonexistent", "--postfix-dir", s(&postfix)]);
    assert!(
        line(&out, "snippets").starts_with("warn  snippets: Postfix: ")
            && line(&out, "snippets")
                .contains("the map name \"postfix\", which has no [serve.profile.postfix]"),
        "{out}"
    );
    std::fs::write(
        postfix.join("main.cf"),
        format!("smtp_tls_policy_maps = socketmap:inet:127.0.0.1:{closed}:postfix310\n"),
    )
    .expect("main.cf");
    let (_, out, _) =
        doctor(&["--config", s(&with_profiles), "--exim-dir", "/nonexistent", "--postfix-dir", s(&postfix)]);
    assert!(line(&out, "snippets").starts_with("ok    snippets: Postfix: "), "{out}");
    let config = f.config("wrong-anchor", &format!("[serve]\nlisten = \"inet:127.0.0.1:{closed}\"\n"));

    // The store readable by its owner but not by nobody: the running user (the owner) passes,
    // and, once the store exists (made by `mtasts cache list`), it is opened.
    let (_, out, _) = doctor(&["--config", s(&config), "--exim-dir", s(&exim), "--postfix-dir", s(&postfix)]);
    assert!(line(&out, "store").starts_with("ok ") && line(&out, "store").contains("can create it"), "{out}");
    let made = Command::new(env!("CARGO_BIN_EXE_mtasts"))
        .args(["cache", "list", "--config"])
        .arg(&config)
        .output()
        .expect("cache list");
    assert!(made.status.success(), "{made:?}");
    let (_, out, _) = doctor(&["--config", s(&config), "--exim-dir", s(&exim), "--postfix-dir", s(&postfix)]);
    assert!(line(&out, "store").starts_with("ok ") && line(&out, "store").ends_with("and opens"), "{out}");
    // Checked for nobody (by another user), it is not opened.
    std::fs::set_permissions(f.dir.join("store"), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    std::fs::set_permissions(f.dir.join("store/policies.sqlite"), std::fs::Permissions::from_mode(0o666))
        .expect("chmod");
    let (_, out, _) = doctor(&["--config", s(&config), "--user", "nobody", "--exim-dir", s(&exim)]);
    assert!(line(&out, "store").contains("is writable by nobody (not opened"), "{out}");
    std::fs::set_permissions(f.dir.join("store"), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    // A corrupt store file fails.
    let db = f.dir.join("store/policies.sqlite");
    std::fs::write(&db, vec![b'x'; 4096]).expect("spoil");
    let (code, out, _) =
        doctor(&["--config", s(&config), "--exim-dir", s(&exim), "--postfix-dir", s(&postfix)]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        line(&out, "store").starts_with("fail  store: ")
            && line(&out, "store").contains("-> move or repair "),
        "{out}"
    );
    std::fs::remove_file(&db).expect("rm");

    // No search permission on the way to the store.
    std::fs::create_dir_all(f.dir.join("store/deep")).expect("mkdir");
    std::fs::set_permissions(f.dir.join("store"), std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let text =
        std::fs::read_to_string(&config).expect("config").replace("store/policies", "store/deep/policies");
    std::fs::write(&config, text).expect("config");
    let (code, out, _) = doctor(&["--config", s(&config), "--user", "nobody", "--exim-dir", s(&exim)]);
    assert_eq!(code, Some(1));
    assert!(line(&out, "store").contains("no search permission on "), "{out}");

    // An unreadable trust anchor.
    std::fs::set_permissions(f.dir.join("wrong-anchor"), std::fs::Permissions::from_mode(0o600))
        .expect("chmod");
    let (_, out, _) = doctor(&["--config", s(&config), "--user", "nobody", "--exim-dir", s(&exim)]);
    assert!(out.contains("fail  trust anchors: nobody cannot read "), "{out}");
}

/// A configuration that does not load (or a bad `[serve]`) is the one failing check; a user
/// that does not exist is a usage error.
#[test]
fn bad_configurations_and_users() {
    let f = Fixture::new("badconfig");
    let config = f.config("anchor", "[serve]\nlisten_on = \"x\"\n");
    let (code, out, _) = doctor(&["--config", s(&config)]);
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.starts_with("fail  config: ") && out.contains("listen_on") && out.contains("-> fix the file"),
        "{out}"
    );

    let config = f.config("anchor", "[serve.profile.p]\nservername = \"nexthop\"\n");
    let (code, out, _) =
        doctor(&["--config", s(&config), "--exim-dir", "/nonexistent", "--postfix-dir", "/nonexistent"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(line(&out, "config").contains("[serve.profile.p] servername"), "{out}");
    assert!(line(&out, "snippets").starts_with("ok "), "{out}");

    let (code, _, err) = doctor(&["--config", s(&config), "--user", "no-such-user-mtasts"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--user no-such-user-mtasts: no such user"), "{err}");
}
