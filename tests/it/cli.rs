//! The `mtasts` command line end to end: the real binary, the real DNS and HTTPS clients, and the
//! local fixtures (DNS and HTTPS on 127.0.0.1, certificates from the test PKI). Also the fork test
//! of the engine (issue: two forked children check against the fixtures with distinct DNS ids).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use mtasts_fixtures::https::Response;
use mtasts_fixtures::pki::pki;
use serde_json::Value;

const ENFORCE: &str =
    "version: STSv1\nmode: enforce\nmx: mx.example.test\nmx: *.backup.example.test\nmax_age: 604800\n";

/// The shared fixture world (DNS, HTTPS, CA, directory), with the CLI's configuration: no
/// `ca_file`, as `mtasts check` is given `--ca-file`.
struct World(mtasts_fixtures::world::World);

impl std::ops::Deref for World {
    type Target = mtasts_fixtures::world::World;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl World {
    fn new(name: &str) -> Self {
        let w = mtasts_fixtures::world::World::start(&format!("cli-{name}")).expect("fixtures");
        w.write_config_text(&format!("{}[cache]\npath = \"memory\"\n", w.base_config(false)));
        Self(w)
    }

    fn config(&self) -> PathBuf {
        self.config_path()
    }

    fn ca(&self) -> PathBuf {
        self.ca_file()
    }

    fn mtasts(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_mtasts"))
            .args(args)
            .env("MTASTS_CONFIG", self.config())
            .output()
            .expect("run mtasts")
    }

    fn check_json(&self, domain: &str, mx: &[&str]) -> Value {
        let ca = self.ca();
        let mut args = vec!["check", domain, "--json", "--ca-file", path_str(&ca)];
        for m in mx {
            args.extend(["--mx", m]);
        }
        let out = self.mtasts(&args);
        assert!(
            out.status.success(),
            "status {:?}, stderr {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("JSON on stdout")
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

#[test]
fn check_json_enforce_policy() {
    // README, "JSON output of `mtasts check`": the JSON object, field by field.
    let w = World::new("enforce");
    w.publish("example.test", "20260101", ENFORCE);
    let v =
        w.check_json("Example.TEST.", &["mx.example.test", "b1.backup.example.test", "evil.example.test"]);
    assert_eq!(v["domain"], "example.test");
    assert_eq!(v["record"]["id"], "20260101");
    assert_eq!(v["policy"]["mode"], "enforce");
    assert_eq!(v["policy"]["mx"], serde_json::json!(["mx.example.test", "*.backup.example.test"]));
    assert_eq!(v["policy"]["max_age"], 604800);
    assert_eq!(v["policy"]["id"], "20260101");
    assert_eq!(v["policy"]["source"], "network");
    assert!(v["policy"]["fetched_at"].as_str().is_some_and(|s| s.ends_with('Z')));
    assert!(v["policy"]["expires_at"].as_str().is_some_and(|s| s.ends_with('Z')));
    assert_eq!(v["error"], Value::Null);
    assert_eq!(v["store"], serde_json::json!({"state": "none", "detail": null}));
    let mx = v["mx"].as_array().expect("mx array");
    assert_eq!(mx.len(), 3);
    assert_eq!(
        mx[0],
        serde_json::json!({"host": "mx.example.test", "matches": true, "verdict": "pass", "reason": null, "dane": null})
    );
    assert_eq!(mx[1]["verdict"], "pass");
    assert_eq!(
        mx[2],
        serde_json::json!({"host": "evil.example.test", "matches": false, "verdict": "fail-enforce", "reason": "mx-mismatch", "dane": null})
    );
    // FETCH-13, FETCH-15: SNI is the policy host and the request line is exact.
    let requests = w.https.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].sni.as_deref(), Some("mta-sts.example.test"));
    assert_eq!(requests[0].request_line, "GET /.well-known/mta-sts.txt HTTP/1.1");
}

#[test]
fn check_json_testing_and_none() {
    let w = World::new("modes");
    w.publish("testing.test", "t1", &ENFORCE.replace("enforce", "testing"));
    w.publish("none.test", "n1", "version: STSv1\nmode: none\nmax_age: 86400\n");
    let v = w.check_json("testing.test", &["other.example.test"]);
    assert_eq!(v["policy"]["mode"], "testing");
    assert_eq!(v["mx"][0]["verdict"], "fail-testing");
    assert_eq!(v["mx"][0]["reason"], "mx-mismatch");
    let v = w.check_json("none.test", &["other.example.test"]);
    assert_eq!(v["policy"]["mode"], "none");
    assert_eq!(v["mx"][0]["verdict"], "no-policy");
    assert_eq!(v["mx"][0]["reason"], Value::Null);
}

#[test]
fn check_json_no_record() {
    // FETCH-11 and DISC-15: no TXT record, no fetch.
    let w = World::new("norecord");
    let v = w.check_json("plain.test", &["mx.plain.test"]);
    assert_eq!(v["record"], Value::Null);
    assert_eq!(v["policy"], Value::Null);
    assert_eq!(v["error"], Value::Null);
    assert_eq!(v["mx"][0]["verdict"], "no-policy");
    assert!(w.https.requests().is_empty());
}

#[test]
fn check_json_fetch_errors() {
    // FETCH-5: 404; FETCH-1/HOST-6: wrong certificate; DISC-3: two records.
    let w = World::new("errors");
    w.publish("missing.test", "a", ENFORCE);
    w.https.set_response("mta-sts.missing.test", Response::status(404));
    let v = w.check_json("missing.test", &["mx.example.test"]);
    assert_eq!(v["record"]["id"], "a");
    assert_eq!(v["policy"], Value::Null);
    assert_eq!(v["error"]["result_type"], "sts-policy-fetch-error");
    assert!(v["error"]["detail"].as_str().is_some_and(|d| d.contains("404")), "{v}");
    assert_eq!(v["mx"][0]["verdict"], "no-policy");

    w.publish("wrongcert.test", "a", ENFORCE);
    w.https.set_cert("mta-sts.wrongcert.test", &pki().leaf(&["www.wrongcert.test"]));
    let v = w.check_json("wrongcert.test", &[]);
    assert_eq!(v["error"]["result_type"], "sts-webpki-invalid");

    w.dns.set_txt1("_mta-sts.twice.test", &["v=STSv1; id=a", "v=STSv1; id=b"]);
    let v = w.check_json("twice.test", &["mx.example.test"]);
    assert_eq!(v["record"], Value::Null);
    assert_eq!(v["error"]["result_type"], "sts-policy-invalid");
}

#[test]
fn check_text_gives_advice() {
    let w = World::new("advice");
    w.publish("wrongcert.test", "a", ENFORCE);
    w.https.set_cert("mta-sts.wrongcert.test", &pki().leaf(&["www.wrongcert.test"]));
    let ca = w.ca();
    let out = w.mtasts(&["check", "wrongcert.test", "--mx", "mx.example.test", "--ca-file", path_str(&ca)]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}");
    assert!(text.contains("sts-webpki-invalid"), "{text}");
    assert!(text.contains("www.wrongcert.test"), "the detail names the certificate's name: {text}");
    assert!(text.contains("add mta-sts.wrongcert.test to its subjectAltName"), "{text}");

    w.publish("example.test", "a", ENFORCE);
    let out = w.mtasts(&["check", "example.test", "--mx", "evil.example.test", "--ca-file", path_str(&ca)]);
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}");
    assert!(text.contains("mode enforce, max_age 604800 (7 days)"), "{text}");
    assert!(text.contains("evil.example.test") && text.contains("fail-enforce  mx-mismatch"), "{text}");
    assert!(text.contains("add `mx: evil.example.test`"), "{text}");
}

#[test]
fn check_looks_up_mx_records() {
    // MX-7 order; MX-9: no MX means the domain itself.
    let w = World::new("mxlookup");
    w.publish("example.test", "a", ENFORCE);
    w.dns.set_mx("example.test", &[(20, "evil.example.test"), (10, "mx.example.test")]);
    let v = w.check_json("example.test", &[]);
    let hosts: Vec<&str> =
        v["mx"].as_array().expect("mx").iter().map(|m| m["host"].as_str().expect("host")).collect();
    assert_eq!(hosts, ["mx.example.test", "evil.example.test"]);
    assert_eq!(v["mx"][1]["verdict"], "fail-enforce");

    w.publish("implicit.test", "a", ENFORCE);
    let v = w.check_json("implicit.test", &[]);
    assert_eq!(v["mx"][0]["host"], "implicit.test");
    assert_eq!(v["mx"][0]["verdict"], "fail-enforce");
}

#[test]
fn check_bad_input_exits_2() {
    let w = World::new("badinput");
    for domain in ["", "exa mple.test", "a..b"] {
        let out = w.mtasts(&["check", domain]);
        assert_eq!(out.status.code(), Some(2), "{domain:?}");
        assert!(!out.stderr.is_empty());
    }
    // HOST-5: an address literal is not an error; it has no policy.
    let v = w.check_json("[192.0.2.1]", &["mx.example.test"]);
    assert_eq!(v["policy"], Value::Null);
    assert!(w.dns.queries().is_empty(), "no DNS for an address literal");
    let out = w.mtasts(&["check"]);
    assert_eq!(out.status.code(), Some(2));
    // An unusable store is reported, and the check carries on without it.
    let out = w.mtasts(&["check", "example.test", "--cache", "/nonexistent/dir/x.sqlite"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/dir/x.sqlite"));
}

#[test]
fn config_errors_name_the_key_and_file() {
    let w = World::new("config");
    let bad = w.dir.join("bad.toml");
    std::fs::write(&bad, "[dns]\ntimeout = 5\n").expect("write");
    let out = w.mtasts(&["check", "example.test", "--config", path_str(&bad)]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml") && err.contains("timeout"), "{err}");
    let out = w.mtasts(&["check", "example.test", "--config", "/nonexistent/mtasts.toml"]);
    assert_eq!(out.status.code(), Some(2));
}

fn lint(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mtasts"))
        .arg("lint")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    if let Some(input) = stdin {
        use std::io::Write;
        child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write");
    } else {
        drop(child.stdin.take());
    }
    child.wait_with_output().expect("wait")
}

#[test]
fn lint_exit_codes_and_lines() {
    let dir = std::env::temp_dir().join(format!("mtasts-lint-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let good = dir.join("good.txt");
    std::fs::write(&good, ENFORCE).expect("write");
    let out = lint(&[path_str(&good)], None);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid policy: mode enforce"));

    let out = lint(&["-"], Some("version: STSv1\nmode: report\nmx: .x.example\nmax_age: 1d\n"));
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("<stdin>:2: error:") && text.contains("`testing`"), "{text}");
    assert!(text.contains("<stdin>:3: warning:"), "{text}");
    assert!(text.contains("<stdin>:4: error:"), "{text}");

    let out = lint(&[], Some(ENFORCE));
    assert_eq!(out.status.code(), Some(0));
    let out = lint(&["/nonexistent/policy.txt"], None);
    assert_eq!(out.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 3, item 6: an engine used in the parent, then two forked children each check against
/// the fixtures; both succeed and their DNS queries differ in (id, source port).
#[test]
fn forked_children_check_with_distinct_dns_ids() {
    let w = World::new("fork");
    w.publish("example.test", "a", ENFORCE);
    w.publish("child.test", "c", ENFORCE);
    let mut config = mtasts::config::Config::from_file(&w.config()).expect("config");
    config.https.ca_file = Some(w.ca());
    let engine = config.build_engine().expect("engine");
    let parent = engine.check_mx("example.test", "mx.example.test").expect("parent check");
    assert_eq!(parent.verdict, mtasts::Verdict::Pass);
    let before = w.dns.queries().len();
    let mut pids = Vec::new();
    for _ in 0..2 {
        // SAFETY: the test process is single-threaded at this point apart from the fixtures'
        // threads; the child only runs the check and exits with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let ok = engine
                .recheck("child.test")
                .ok()
                .flatten()
                .is_some_and(|r| r.policy.is_some_and(|p| p.mode() == mtasts::Mode::Enforce));
            // SAFETY: _exit is async-signal-safe and skips the parent's atexit handlers.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        pids.push(pid);
    }
    for pid in pids {
        let mut status = 0;
        // SAFETY: waiting for our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(r, pid);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "child {pid} status {status}");
    }
    let queries: Vec<_> =
        w.dns.queries().into_iter().skip(before).filter(|q| q.name.contains("_mta-sts.child.test")).collect();
    assert!(queries.len() >= 2, "{queries:?}");
    let pairs: std::collections::BTreeSet<_> = queries.iter().map(|q| (q.id, q.src.port())).collect();
    assert_eq!(pairs.len(), queries.len(), "two children sent the same DNS id and port: {queries:?}");
}

/// Issue "persistent store", item 8: `check --cache PATH` reuses a stored policy whose id is
/// unchanged, and applies it when discovery or the fetch fails (CACHE-4, CACHE-12 across
/// processes: each command is a new process).
#[test]
fn check_with_a_store_survives_blocked_discovery() {
    let w = World::new("store");
    let store = w.dir.join("policies.sqlite");
    let store = path_str(&store).to_owned();
    w.publish("example.test", "a1", ENFORCE);
    let run = |w: &World| {
        let ca = w.ca();
        let out = w.mtasts(&[
            "check",
            "example.test",
            "--mx",
            "evil.example.test",
            "--json",
            "--ca-file",
            path_str(&ca),
            "--cache",
            &store,
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<Value>(&out.stdout).expect("JSON")
    };
    let v = run(&w);
    assert_eq!(v["policy"]["source"], "network");
    let v = run(&w);
    assert_eq!(v["policy"]["source"], "cache", "same id: the stored policy is reused");
    assert_eq!(w.https.requests().len(), 1);
    // The attacker removes the TXT record and breaks the policy host.
    w.dns.remove("_mta-sts.example.test");
    w.https.set_response("mta-sts.example.test", Response::status(500));
    let v = run(&w);
    assert_eq!(v["record"], Value::Null);
    assert_eq!(v["policy"]["mode"], "enforce");
    assert_eq!(v["policy"]["source"], "cache");
    assert_eq!(v["mx"][0]["verdict"], "fail-enforce");
}

#[test]
fn cache_list_show_purge() {
    let w = World::new("cachecmd");
    let store = w.dir.join("policies.sqlite");
    let store = path_str(&store).to_owned();
    w.publish("example.test", "a1", ENFORCE);
    let ca = w.ca();
    assert!(
        w.mtasts(&[
            "check",
            "example.test",
            "--ca-file",
            path_str(&ca),
            "--cache",
            &store,
            "--mx",
            "mx.example.test"
        ])
        .status
        .success()
    );
    let out = w.mtasts(&["cache", "list", "--json", "--cache", &store]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v[0]["domain"], "example.test");
    assert_eq!(v[0]["policy"]["id"], "a1");
    assert_eq!(v[0]["policy"]["live"], true);
    let out = w.mtasts(&["cache", "show", "Example.TEST", "--cache", &store]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("mode enforce, id a1") && text.contains("mx: mx.example.test"), "{text}");
    let out = w.mtasts(&["cache", "purge", "example.test", "--cache", &store, "--json"]);
    assert_eq!(serde_json::from_slice::<Value>(&out.stdout).expect("JSON")["removed"], true);
    let out = w.mtasts(&["cache", "show", "example.test", "--cache", &store]);
    assert_eq!(out.status.code(), Some(2));
    let out = w.mtasts(&["cache", "list", "--cache", "memory"]);
    assert_eq!(out.status.code(), Some(2), "no persistent store to list");
}

/// CACHE-5..7: `mtasts refresh` refetches due policies, warns (exit 1) when the refresh of an
/// enforce policy fails, and never warns for `mode: none`.
#[test]
fn refresh_refetches_due_policies_and_warns_on_failure() {
    let w = World::new("refresh");
    let store = w.dir.join("policies.sqlite");
    let store = path_str(&store).to_owned();
    // Every policy is due at once.
    let config = std::fs::read_to_string(w.config()).expect("config") + "[engine]\nrefresh_interval = 0\n";
    let config = config.replace("[https]\n", &format!("[https]\nca_file = \"{}\"\n", w.ca().display()));
    std::fs::write(w.config(), config).expect("config");
    w.publish("example.test", "a1", ENFORCE);
    w.publish("none.test", "n1", "version: STSv1\nmode: none\nmax_age: 86400\n");
    for d in ["example.test", "none.test"] {
        assert!(w.mtasts(&["check", d, "--cache", &store, "--mx", "mx.example.test"]).status.success());
    }
    let before = w.https.requests().len();
    let out = w.mtasts(&["refresh", "--cache", &store]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(w.https.requests().len(), before + 2, "both policies fetched again");
    // Both policy hosts now fail.
    w.https.set_response("mta-sts.example.test", Response::status(503));
    w.https.set_response("mta-sts.none.test", Response::status(503));
    std::thread::sleep(std::time::Duration::from_millis(1100)); // a new second: a new fetch time
    let out = w.mtasts(&["refresh", "--cache", &store]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("warning: example.test: refresh failed") && err.contains("stays in force"), "{err}");
    assert!(!err.contains("none.test"), "no alert for mode none: {err}");
    // The stored enforce policy is untouched.
    let out = w.mtasts(&["cache", "show", "example.test", "--cache", &store, "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["policy"]["mode"], "enforce");
    assert_eq!(v["last_failure"]["result_type"], "sts-policy-fetch-error");
}

/// OpenSMTPD: the exported table lists exactly the domains whose stored policy is in force in the
/// requested mode.
#[test]
fn export_opensmtpd_table() {
    let w = World::new("export");
    let store = w.dir.join("policies.sqlite");
    let store = path_str(&store).to_owned();
    w.publish("a.test", "a", ENFORCE);
    w.publish("b.test", "b", &ENFORCE.replace("enforce", "testing"));
    w.publish("c.test", "c", "version: STSv1\nmode: none\nmax_age: 86400\n");
    let ca = w.ca();
    for d in ["a.test", "b.test", "c.test", "nothing.test"] {
        assert!(
            w.mtasts(&["check", d, "--ca-file", path_str(&ca), "--cache", &store, "--mx", "mx.example.test"])
                .status
                .success()
        );
    }
    let table = w.dir.join("table");
    let out = w.mtasts(&["export", "opensmtpd-table", "--cache", &store, "--output", path_str(&table)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&table).expect("table");
    let domains: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(domains, ["a.test"]);
    let out = w.mtasts(&["export", "opensmtpd-table", "--mode", "testing", "--cache", &store]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().filter(|l| !l.starts_with('#')).collect::<Vec<_>>(), ["b.test"]);
    let out =
        w.mtasts(&["export", "opensmtpd-table", "--cache", &store, "--output", "/nonexistent/dir/table"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn check_says_when_the_store_is_unavailable() {
    let w = World::new("store-state");
    w.publish("example.test", "20260101", ENFORCE);
    let corrupt = w.dir.join("corrupt.sqlite");
    std::fs::write(&corrupt, b"not a database, only text that happens to be here").expect("write");
    let ca = w.ca();
    let args = ["check", "example.test", "--mx", "mx.example.test", "--ca-file", path_str(&ca), "--cache"];
    let mut json_args = args.to_vec();
    json_args.extend([path_str(&corrupt), "--json"]);
    let out = w.mtasts(&json_args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["store"]["state"], "unavailable");
    assert!(v["store"]["detail"].as_str().is_some_and(|d| d.contains("corrupt.sqlite")), "{v}");
    let mut text_args = args.to_vec();
    text_args.push(path_str(&corrupt));
    let out = w.mtasts(&text_args);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines().any(|l| l.starts_with("Store:   unavailable: ") && l.contains("corrupt.sqlite")),
        "{text}"
    );
}

#[test]
fn report_fails_at_once_on_a_store_it_cannot_open() {
    // A Redis store keeps the report outbox too (RPT-25); one that cannot be reached (or a
    // build without Redis) stops `mtasts report` before it looks up a record or builds anything.
    let dir = std::env::temp_dir().join(format!("mtasts-cli-redis-report-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("mtasts.toml");
    std::fs::write(&config, "[cache]\nredis_url = \"redis://127.0.0.1:1/0\"\n").expect("config");
    for action in ["build", "send", "list"] {
        let out = Command::new(env!("CARGO_BIN_EXE_mtasts"))
            .args(["report", action, "--config", path_str(&config)])
            .stdin(Stdio::null())
            .output()
            .expect("run mtasts");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && out.stdout.is_empty(), "{action}: {stderr}");
        assert!(stderr.contains("redis://127.0.0.1:1/0"), "{action}: {stderr}");
    }
    let _ = std::fs::remove_dir_all(dir);
}
