//! Per-domain overrides (docs/conformance.md, OVR-1..OVR-10): the engine over fakes (no DNS and
//! no fetch for an overridden domain, a pinned policy applied as a fetched one), the
//! configuration (`[override."DOMAIN"]` and its errors), the SQLite store (`overrides` table, its
//! migration, a second engine or process seeing what another set), and the command line end to
//! end against the local fixtures (`override set|clear|list`, `check`, `cache show`, `refresh`,
//! `export opensmtpd-table`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use mtasts::cache::{PolicyStore, SqliteStore, StoredOverride};
use mtasts::config::Config;
use mtasts::engine::{Override, OverrideOrigin, Tls};
use mtasts::{Dane, Domain, Engine, Reason, Timing, TrustAnchors, Verdict};
use mtasts_fixtures::world::policy;
use serde_json::Value;

use crate::common::{FakeClock, FakeDns, FakeHttp};
use mtasts_fixtures::pki::pki;

const ENFORCE: &str = "version: STSv1\nmode: enforce\nmx: mx.example.test\nmax_age: 604800\n";
const PINNED: &str =
    "version: STSv1\nmode: enforce\nmx: mx.pinned.test\nmx: *.backup.pinned.test\nmax_age: 86400\n";

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mtasts-ovr-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn domain(s: &str) -> Domain {
    Domain::parse(s).expect("domain")
}

fn config_origin() -> OverrideOrigin {
    OverrideOrigin::Config { file: None, policy_file: None }
}

/// An engine over fakes (the test root as trust anchor), with these overrides and store.
struct Fakes {
    dns: Arc<FakeDns>,
    http: Arc<FakeHttp>,
    clock: Arc<FakeClock>,
}

impl Fakes {
    fn new() -> Self {
        let f = Self {
            dns: Arc::new(FakeDns::default()),
            http: Arc::new(FakeHttp::default()),
            clock: Arc::new(FakeClock::default()),
        };
        f.dns.set_records(&["v=STSv1; id=a1"]);
        f.http.set_body(ENFORCE);
        f
    }

    fn engine(&self, overrides: Vec<Override>, store: Option<SqliteStore>) -> Engine {
        let anchors = TrustAnchors::from_pem(pki().root_pem.as_bytes(), "test root").expect("root");
        let mut b = Engine::builder(Arc::clone(&self.dns), Arc::clone(&self.http))
            .clock(Arc::clone(&self.clock))
            .trust_anchors(anchors)
            .timing(Timing::default())
            .overrides(overrides);
        if let Some(store) = store {
            b = b.store(store);
        }
        b.build()
    }

    fn io(&self) -> (usize, usize) {
        (self.dns.lookups(), self.http.fetches())
    }
}

fn pinned(name: &str, text: &str) -> Override {
    Override::pinned(domain(name), text.as_bytes(), crate::common::START, config_origin()).expect("pinned")
}

#[test]
fn ovr_1_2_a_skipped_domain_has_no_policy_and_no_discovery() {
    let f = Fakes::new();
    let e = f.engine(vec![Override::skip(domain("example.test"), config_origin())], None);
    for _ in 0..3 {
        let o = e.check("Example.TEST.", "evil.example.net", None).expect("check");
        assert_eq!(o.verdict, Verdict::NoPolicy);
        assert_eq!(o.reason, Reason::None);
        assert!(o.policy.is_none());
        let detail = o.detail.as_deref().unwrap_or("");
        assert!(detail.contains("skipped") && detail.contains("override"), "{detail}");
        assert_eq!(o.overridden.as_ref().map(|o| o.action_str()), Some("none"));
    }
    let r = e.policy("example.test").expect("policy").expect("a domain");
    assert!(r.policy.is_none() && r.overridden.is_some());
    let r = e.recheck("example.test").expect("recheck").expect("a domain");
    assert!(r.policy.is_none() && r.overridden.is_some());
    assert_eq!(f.io(), (0, 0), "no DNS lookup and no fetch for an overridden domain");
    // Another domain is discovered as usual.
    let o = e.check_mx("other.test", "mx.example.test").expect("check");
    assert_eq!((o.verdict, o.overridden.is_none()), (Verdict::Pass, true));
    assert_eq!(f.io(), (1, 1));
}

#[test]
fn ovr_3_a_pinned_policy_applies_as_a_fetched_one() {
    let f = Fakes::new();
    let testing = PINNED.replace("enforce", "testing");
    let e = f.engine(vec![pinned("pinned.test", PINNED), pinned("testing.test", &testing)], None);
    let o = e.check_mx("pinned.test", "mx.pinned.test").expect("check");
    assert_eq!(o.verdict, Verdict::Pass);
    let p = o.policy.as_ref().expect("the pinned policy");
    assert_eq!((p.id.as_str(), p.mode().as_str()), ("pinned", "enforce"));
    assert!(p.is_live(u64::from(u32::MAX)), "a pinned policy never expires");
    assert_eq!(e.check_mx("pinned.test", "mx2.backup.pinned.test").expect("check").verdict, Verdict::Pass);
    let o = e.check_mx("pinned.test", "mx.example.test").expect("check");
    assert_eq!((o.verdict, o.reason), (Verdict::FailEnforce, Reason::MxMismatch));
    let o = e.check_mx("testing.test", "mx.example.test").expect("check");
    assert_eq!((o.verdict, o.reason), (Verdict::FailTesting, Reason::MxMismatch));
    // Certificates are judged under the pinned policy: a good chain passes, a wrong name fails.
    let good = pki().leaf(&["mx.pinned.test"]).pem();
    let o = e.check("pinned.test", "mx.pinned.test", Some(good.as_bytes())).expect("check");
    assert_eq!(o.verdict, Verdict::Pass);
    let wrong = pki().leaf(&["other.pinned.test"]).pem();
    let o = e.check("pinned.test", "mx.pinned.test", Some(wrong.as_bytes())).expect("check");
    assert_eq!((o.verdict, o.reason), (Verdict::FailEnforce, Reason::CertificateHostMismatch));
    let o = e.check("pinned.test", "mx.pinned.test", None).expect("check");
    assert_eq!((o.verdict, o.reason), (Verdict::FailEnforce, Reason::StarttlsNotSupported));
    let o =
        e.check_with("pinned.test", "mx.pinned.test", Tls::NotChecked, Dane::NotApplicable).expect("check");
    assert_eq!(o.overridden.as_ref().map(|o| o.action_str()), Some("pinned"));
    assert_eq!(f.io(), (0, 0), "no DNS lookup and no fetch for a pinned domain");
}

#[test]
fn ovr_4_an_override_is_not_refreshed_nor_pruned_into_discovery() {
    let dir = temp_dir("due-for-refresh");
    let path = dir.join("p.sqlite");
    let f = Fakes::new();
    // A stored policy due for refresh, for a domain then overridden in the store.
    {
        let e = f.engine(Vec::new(), Some(SqliteStore::open(&path, 300).expect("open")));
        e.check_mx("example.test", "mx.example.test").expect("check");
        e.check_mx("kept.test", "mx.example.test").expect("check");
    }
    let store = SqliteStore::open(&path, 300).expect("open");
    store
        .override_set(&StoredOverride { domain: domain("example.test"), policy_text: None, set_at: 1 })
        .expect("set");
    f.clock.advance(2 * 86_400);
    let e = f.engine(Vec::new(), Some(store));
    let due = e.due_for_refresh(e.now()).expect("due");
    assert_eq!(due, vec![domain("kept.test")], "an overridden domain is never due");
    let before = f.io();
    let r = mtasts::refresh::refresh(&e, &domain("example.test"));
    assert!(!r.is_warning());
    assert_eq!(f.io(), before, "refreshing an overridden domain asks nothing");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn ovr_5_the_store_s_overrides_are_read_once_then_per_txt_check_interval() {
    let dir = temp_dir("interval");
    let path = dir.join("p.sqlite");
    let f = Fakes::new();
    let e = f.engine(Vec::new(), Some(SqliteStore::open(&path, 300).expect("open")));
    assert_eq!(e.check_mx("example.test", "mx.example.test").expect("check").verdict, Verdict::Pass);
    // Another process (here: another connection) sets an override.
    let other = SqliteStore::open(&path, 300).expect("open");
    other
        .override_set(&StoredOverride { domain: domain("example.test"), policy_text: None, set_at: 1 })
        .expect("set");
    // Within txt_check_interval the engine still applies what it read (no store query per check).
    let o = e.check_mx("example.test", "mx.evil.test").expect("check");
    assert_eq!(o.verdict, Verdict::FailEnforce);
    f.clock.advance(Timing::default().txt_check_interval);
    let lookups = f.io();
    let o = e.check_mx("example.test", "mx.evil.test").expect("check");
    assert_eq!((o.verdict, o.overridden.is_some()), (Verdict::NoPolicy, true));
    assert_eq!(f.io(), lookups);
    // A new engine (a fresh process) sees it at once; clearing works the same way.
    let fresh = f.engine(Vec::new(), Some(SqliteStore::open(&path, 300).expect("open")));
    assert!(fresh.check_mx("example.test", "mx.evil.test").expect("check").overridden.is_some());
    assert!(other.override_clear(&domain("example.test")).expect("clear"));
    assert!(!other.override_clear(&domain("example.test")).expect("clear again"));
    f.clock.advance(Timing::default().txt_check_interval);
    assert_eq!(e.check_mx("example.test", "mx.evil.test").expect("check").verdict, Verdict::FailEnforce);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn ovr_6_d29_the_configuration_file_wins_over_the_store() {
    let dir = temp_dir("precedence");
    let path = dir.join("p.sqlite");
    let store = SqliteStore::open(&path, 300).expect("open");
    store
        .override_set(&StoredOverride { domain: domain("pinned.test"), policy_text: None, set_at: 1 })
        .expect("set");
    store
        .override_set(&StoredOverride {
            domain: domain("stored.test"),
            policy_text: Some(PINNED.replace("pinned.test", "stored.test")),
            set_at: 2,
        })
        .expect("set");
    let f = Fakes::new();
    let e = f.engine(vec![pinned("pinned.test", PINNED)], Some(store));
    let o = e.check_mx("pinned.test", "mx.pinned.test").expect("check");
    assert_eq!((o.verdict, o.overridden.as_ref().map(|o| o.origin_str())), (Verdict::Pass, Some("config")));
    let o = e.check_mx("stored.test", "mx.stored.test").expect("check");
    assert_eq!((o.verdict, o.overridden.as_ref().map(|o| o.origin_str())), (Verdict::Pass, Some("store")));
    let all: Vec<(String, &str)> =
        e.overrides().iter().map(|o| (o.domain.to_string(), o.origin_str())).collect();
    assert_eq!(all, vec![("pinned.test".into(), "config"), ("stored.test".into(), "store")]);
    assert_eq!(f.io(), (0, 0));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn ovr_6_an_overridden_domain_is_not_held_when_the_store_is_unavailable() {
    let f = Fakes::new();
    let anchors = TrustAnchors::from_pem(pki().root_pem.as_bytes(), "test root").expect("root");
    let e = Engine::builder(Arc::clone(&f.dns), Arc::clone(&f.http))
        .clock(Arc::clone(&f.clock))
        .trust_anchors(anchors)
        .on_store_error(mtasts::engine::OnStoreError::Tempfail)
        .store_unavailable(&mtasts::cache::StoreError("/nonexistent/p.sqlite: cannot open".into()))
        .overrides(vec![Override::skip(domain("example.test"), config_origin())])
        .build();
    let o = e.check_mx("example.test", "mx.example.test").expect("check");
    assert_eq!(o.verdict, Verdict::NoPolicy, "the operator's override does not depend on the store");
    f.http.set_error(Reason::StsPolicyFetchError, "refused");
    let o = e.check_mx("other.test", "mx.example.test").expect("check");
    assert_eq!((o.verdict, o.reason), (Verdict::FailEnforce, Reason::StoreUnavailable));
}

#[test]
fn ovr_7_8_configuration_overrides_and_their_errors() {
    let dir = temp_dir("config");
    std::fs::write(dir.join("pinned.txt"), PINNED).expect("write");
    std::fs::write(dir.join("bad.txt"), "version: STSv1\nmode: strict\nmax_age: 1\n").expect("write");
    let write = |text: &str| {
        let path = dir.join("mtasts.toml");
        std::fs::write(&path, text).expect("write");
        Config::from_file(&path)
    };
    let c = write(
        "[override.\"Skip.TEST.\"]\nmode = \"none\"\n[override.\"pinned.test\"]\npolicy = \"pinned.txt\"\n",
    )
    .expect("valid");
    let got: Vec<(String, &str)> =
        c.resolved_overrides.iter().map(|o| (o.domain.to_string(), o.action_str())).collect();
    assert_eq!(got, vec![("pinned.test".into(), "pinned"), ("skip.test".into(), "none")]);
    assert_eq!(c.resolved_overrides[0].policy_file(), Some(dir.join("pinned.txt").as_path()));
    let cases: &[(&str, &[&str])] = &[
        ("[override.\"a.test\"]\npolicy = \"missing.txt\"\n", &["a.test", "missing.txt", "cannot read"]),
        (
            "[override.\"a.test\"]\npolicy = \"bad.txt\"\n",
            &["a.test", "bad.txt", "not a valid MTA-STS policy"],
        ),
        ("[override.\"a.test\"]\nmode = \"enforce\"\n", &["a.test", "can only be \"none\""]),
        ("[override.\"a.test\"]\nmode = \"none\"\npolicy = \"pinned.txt\"\n", &["a.test", "not both"]),
        ("[override.\"a.test\"]\n", &["a.test", "give mode"]),
        ("[override.\"a..test\"]\nmode = \"none\"\n", &["a..test", "not a policy domain"]),
        ("[override.\"[192.0.2.1]\"]\nmode = \"none\"\n", &["192.0.2.1", "not a policy domain"]),
        (
            "[override.\"A.test\"]\nmode = \"none\"\n[override.\"a.test.\"]\nmode = \"none\"\n",
            &["same domain"],
        ),
        ("[override.\"a.test\"]\nmodes = \"none\"\n", &["unknown field `modes`"]),
    ];
    for (text, words) in cases {
        let e = write(text).expect_err(text);
        assert!(e.0.contains("mtasts.toml"), "the file is named: {e}");
        for w in *words {
            assert!(e.0.contains(w), "{text}: `{w}` missing from: {e}");
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn ovr_9_the_overrides_table_comes_with_a_migration_and_is_kept_as_text() {
    let dir = temp_dir("migrate");
    let path = dir.join("old.sqlite");
    {
        // A store of schema 6, before overrides.
        let store = SqliteStore::open(&path, 300).expect("open");
        drop(store);
        let c = rusqlite::Connection::open(&path).expect("open");
        c.execute_batch("DROP TABLE overrides; PRAGMA user_version = 6;").expect("downgrade");
    }
    let store = SqliteStore::open(&path, 300).expect("upgraded");
    assert_eq!(store.overrides().expect("list"), Vec::new());
    let o = StoredOverride { domain: domain("pinned.test"), policy_text: Some(PINNED.into()), set_at: 7 };
    store.override_set(&o).expect("set");
    assert_eq!(store.overrides().expect("list"), vec![o.clone()]);
    // A stored pinned policy that no longer parses is ignored with a warning, not applied.
    let c = rusqlite::Connection::open(&path).expect("open");
    c.execute("UPDATE overrides SET policy_text = 'version: STSv1' WHERE domain = 'pinned.test'", [])
        .expect("corrupt");
    let f = Fakes::new();
    let e = f.engine(Vec::new(), Some(store));
    let o = e.check_mx("pinned.test", "mx.example.test").expect("check");
    assert!(o.overridden.is_none());
    assert_eq!(o.verdict, Verdict::Pass, "discovered as usual");
    let _ = std::fs::remove_dir_all(dir);
}

// ---- the command line, end to end against the fixtures ----

struct World(mtasts_fixtures::world::World);

impl std::ops::Deref for World {
    type Target = mtasts_fixtures::world::World;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl World {
    /// The fixtures with `example.test` published (enforce), a SQLite store and `extra`.
    fn new(name: &str, extra: &str) -> Self {
        let w = mtasts_fixtures::world::World::start(&format!("ovr-{name}")).expect("fixtures");
        w.publish("example.test", "e1", &policy("enforce", &["mx.example.test"]));
        std::fs::write(w.path("pinned.txt"), PINNED).expect("write");
        let store = w.path("policies.sqlite");
        w.write_config(&format!("[cache]\npath = \"{}\"\n{extra}", store.display()));
        Self(w)
    }

    fn mtasts(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_mtasts"))
            .args(args)
            .env("MTASTS_CONFIG", self.config_path())
            .output()
            .expect("run mtasts")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.mtasts(args);
        assert!(out.status.success(), "{args:?}: {:?}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.ok(args)).expect("JSON")
    }

    /// DNS queries and HTTPS requests that concern `domain`'s MTA-STS.
    fn sts_traffic(&self, domain: &str) -> (usize, usize) {
        let dns = self.dns.queries().iter().filter(|q| q.name.to_ascii_lowercase().ends_with(domain)).count();
        let host = format!("mta-sts.{domain}");
        let https = self.https.requests().iter().filter(|r| r.sni.as_deref() == Some(host.as_str())).count();
        (dns, https)
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

#[test]
fn ovr_10_cli_override_set_is_seen_by_the_next_process_with_no_request_for_the_domain() {
    let w = World::new("cli", "");
    // First process: the policy is discovered and stored.
    let v = w.json(&["check", "example.test", "--mx", "mx.evil.test", "--json"]);
    assert_eq!(v["policy"]["mode"], "enforce");
    assert_eq!(v["override"], Value::Null);
    assert_eq!(v["mx"][0]["verdict"], "fail-enforce");
    // Second process: the override; third: a check that asks nobody about example.test.
    assert!(w.ok(&["override", "set", "example.test", "--mode", "none"]).contains("skipped"));
    w.dns.clear_queries();
    let requests = w.https.requests().len();
    let fetched = w.sts_traffic("example.test").1;
    let v = w.json(&["check", "Example.Test", "--mx", "mx.evil.test", "--json"]);
    assert_eq!(v["override"]["action"], "none");
    assert_eq!(v["override"]["origin"], "store");
    assert_eq!(v["policy"], Value::Null);
    assert_eq!(v["record"], Value::Null);
    assert_eq!(v["mx"][0]["verdict"], "no-policy");
    assert_eq!(w.sts_traffic("example.test"), (0, fetched));
    assert_eq!(w.https.requests().len(), requests, "no HTTPS request at all");
    let text = w.ok(&["check", "example.test", "--mx", "mx.evil.test"]);
    assert!(
        text.contains("Override: mode none (store,") && text.contains("not looked up (override)"),
        "{text}"
    );
    // `cache show` shows it beside the stored policy; `refresh` leaves the domain alone.
    let v = w.json(&["cache", "show", "example.test", "--json"]);
    assert_eq!(
        (v["override"]["action"].as_str(), v["policy"]["mode"].as_str()),
        (Some("none"), Some("enforce"))
    );
    assert!(w.ok(&["cache", "show", "example.test"]).contains("Override:     mode none"));
    // Pinned from a file in the store, then cleared: discovery again.
    let pinned = w.path("pinned.txt");
    w.ok(&["override", "set", "example.test", "--policy", path_str(&pinned)]);
    let v = w.json(&["check", "example.test", "--mx", "mx.pinned.test", "--json"]);
    assert_eq!(v["override"]["action"], "pinned");
    assert_eq!((v["policy"]["id"].as_str(), v["mx"][0]["verdict"].as_str()), (Some("pinned"), Some("pass")));
    assert_eq!(v["policy"]["expires_at"], "9999-12-31T23:59:59Z");
    assert_eq!(w.sts_traffic("example.test"), (0, fetched));
    assert!(w.ok(&["override", "clear", "example.test"]).contains("removed"));
    let v = w.json(&["check", "example.test", "--mx", "mx.example.test", "--json"]);
    assert_eq!((v["override"].clone(), v["policy"]["id"].as_str()), (Value::Null, Some("e1")));
    assert!(w.sts_traffic("example.test").0 > 0, "discovered again");
}

#[test]
fn ovr_10_cli_list_refresh_export_and_bad_input() {
    let pinned_cfg =
        "[override.\"pinned.test\"]\npolicy = \"pinned.txt\"\n[override.\"cfg.test\"]\nmode = \"none\"\n";
    let w = World::new("list", pinned_cfg);
    w.publish("cfg.test", "c1", &policy("enforce", &["mx.cfg.test"]));
    // Store example.test's and cfg.test's policies (cfg.test only through another config).
    w.ok(&["check", "example.test", "--mx", "mx.example.test"]);
    w.ok(&["override", "set", "cfg.test", "--mode", "none"]);
    let list = w.json(&["override", "list", "--json"]);
    let rows: Vec<(String, String, String, bool)> = list
        .as_array()
        .expect("array")
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or("").to_owned();
            (s("domain"), s("action"), s("origin"), r["in_effect"].as_bool().unwrap_or(false))
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            ("cfg.test".into(), "none".into(), "config".into(), true),
            ("cfg.test".into(), "none".into(), "store".into(), false),
            ("pinned.test".into(), "pinned".into(), "config".into(), true),
        ]
    );
    assert_eq!(list[2]["policy"]["mx"], serde_json::json!(["mx.pinned.test", "*.backup.pinned.test"]));
    let text = w.ok(&["override", "list"]);
    assert!(text.contains("shadowed by the configuration file"), "{text}");
    // Export: pinned listed (its mode), example.test from the store, cfg.test never.
    let table = w.ok(&["export", "opensmtpd-table"]);
    let domains: Vec<&str> = table.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(domains, vec!["example.test", "pinned.test"]);
    w.ok(&["override", "set", "example.test", "--mode", "none"]);
    let table = w.ok(&["export", "opensmtpd-table"]);
    let domains: Vec<&str> = table.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(domains, vec!["pinned.test"]);
    assert!(w.ok(&["export", "opensmtpd-table", "--mode", "testing"]).lines().all(|l| l.starts_with('#')));
    // Bad input: a clear error each.
    let bad = w.path("bad.txt");
    std::fs::write(&bad, "version: STSv1\nmode: enforce\n").expect("write");
    for (args, want) in [
        (vec!["override", "set", "x.test", "--policy", path_str(&bad)], "not a valid MTA-STS policy"),
        (
            vec!["override", "set", "x.test", "--policy", "/nonexistent/p.txt"],
            "cannot read /nonexistent/p.txt",
        ),
        (vec!["override", "set", "a..test", "--mode", "none"], "not a policy domain"),
        (vec!["override", "set", "x.test", "--mode", "enforce"], "invalid value"),
        (vec!["override", "set", "x.test"], "--mode"),
        (vec!["override", "set", "x.test", "--mode", "none", "--policy", "p"], "cannot be used with"),
        (
            vec!["override", "set", "x.test", "--mode", "none", "--cache", "memory"],
            "no store to keep overrides",
        ),
    ] {
        let out = w.mtasts(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(want), "{args:?}: `{want}` missing from {stderr}");
    }
    assert!(!w.ok(&["override", "list"]).contains("x.test"), "nothing stored by a refused set");
    // A configuration with a broken pinned file is refused by every command, naming both.
    std::fs::write(w.path("pinned.txt"), "garbage").expect("write");
    let out = w.mtasts(&["override", "list"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("pinned.test") && stderr.contains("pinned.txt"), "{stderr}");
}

#[test]
fn ovr_4_cli_refresh_skips_overridden_domains() {
    let w = World::new("refresh", "[engine]\nrefresh_interval = 0\n");
    w.publish("kept.test", "k1", &policy("enforce", &["mx.kept.test"]));
    w.ok(&["check", "example.test", "--mx", "mx.example.test"]);
    w.ok(&["check", "kept.test", "--mx", "mx.kept.test"]);
    w.ok(&["override", "set", "example.test", "--mode", "none"]);
    w.dns.clear_queries();
    let out = w.ok(&["refresh"]);
    assert!(out.contains("1 polic(ies) due") && out.contains("kept.test"), "{out}");
    assert_eq!(w.sts_traffic("example.test").0, 0, "{out}");
    assert!(w.sts_traffic("kept.test").0 > 0);
}

#[test]
fn ovr_5_every_use_is_logged_and_the_decision_log_names_the_override() {
    let w = World::new(
        "log",
        "[log]\nlevel = \"info\"\nformat = \"json\"\n[override.\"example.test\"]\nmode = \"none\"\n[override.\"pinned.test\"]\npolicy = \"pinned.txt\"\n",
    );
    let lines = |out: &Output| -> Vec<Value> {
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    };
    for (domain, mx, action, level, source) in [
        ("example.test", "mx.example.test", "none", "WARN", "none"),
        ("pinned.test", "mx.pinned.test", "pinned", "INFO", "override"),
    ] {
        let out = w.mtasts(&["check", domain, "--mx", mx]);
        assert!(out.status.success());
        let lines = lines(&out);
        let uses: Vec<&Value> = lines.iter().filter(|l| l["target"] == "mtasts::override").collect();
        // `check` resolves once, then judges the MX: two uses, two lines.
        assert_eq!(uses.len(), 2, "{lines:?}");
        assert_eq!(
            (uses[0]["level"].as_str(), uses[0]["fields"]["action"].as_str()),
            (Some(level), Some(action))
        );
        assert_eq!(uses[0]["fields"]["origin"], "config");
        let decision = lines.iter().find(|l| l["target"] == "mtasts::decision").expect("decision");
        assert_eq!(decision["fields"]["override"], action);
        assert_eq!(decision["fields"]["source"], source);
        assert!(!lines.iter().any(|l| l["target"] == "mtasts::discovery"), "no discovery: {lines:?}");
    }
    // Without an override the field is there, empty.
    let out = w.mtasts(&["check", "other.test", "--mx", "mx.other.test"]);
    let lines = lines(&out);
    let decision = lines.iter().find(|l| l["target"] == "mtasts::decision").expect("decision");
    assert_eq!(decision["fields"]["override"], "");
}
