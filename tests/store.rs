//! The SQLite policy store: round trips, the newest-policy rule, foreign/corrupt/unwritable
//! files, schema migration, downgrade resistance across restarts (CACHE-4, CACHE-12), many
//! processes at once, and SIGKILL in the middle of writes.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{FakeClock, FakeDns, FakeHttp};
use mtasts::cache::{CachedPolicy, Entry, FailedFetch, Failure, SqliteStore, Store};
use mtasts::engine::DnsError;
use mtasts::policy::Policy;
use mtasts::txt::PolicyId;
use mtasts::{Domain, Engine, Reason, Timing, TrustAnchors, Verdict};

const ENFORCE: &str = "version: STSv1\nmode: enforce\nmx: mx.example.test\nmax_age: 86400\n";

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mtasts-store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn policy(text: &str, id: &str, fetched_at: u64) -> Arc<CachedPolicy> {
    let parsed = Policy::parse(text.as_bytes()).expect("policy");
    Arc::new(CachedPolicy::new(parsed, PolicyId::parse(id).expect("id"), text.to_owned(), fetched_at))
}

fn domain(s: &str) -> Domain {
    Domain::parse(s).expect("domain")
}

#[test]
fn cache_12_entries_round_trip() {
    let dir = temp_dir("roundtrip");
    let store = SqliteStore::open(&dir.join("p.sqlite"), 300).expect("open");
    let entry = Entry {
        policy: Some(policy(ENFORCE, "a1", 1_000)),
        checked_at: 1_200,
        failed: Some(FailedFetch {
            id: PolicyId::parse("b2").expect("id"),
            at: 1_100,
            failure: Failure { reason: Reason::StsWebpkiInvalid, detail: "certificate expired".into() },
        }),
    };
    store.save(&domain("example.test"), &entry).expect("save");
    assert_eq!(store.load(&domain("example.test")).expect("load"), Some(entry.clone()));
    assert_eq!(store.load(&domain("other.test")).expect("load"), None);
    // A reopened store (another process, later) sees the same.
    drop(store);
    let store = SqliteStore::open(&dir.join("p.sqlite"), 300).expect("reopen");
    assert_eq!(store.load(&domain("example.test")).expect("load"), Some(entry));
    let listed = store.list().expect("list");
    assert_eq!(listed.len(), 1);
    assert!(store.remove(&domain("example.test")).expect("remove"));
    assert!(!store.remove(&domain("example.test")).expect("remove again"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_newest_policy_wins_between_writers() {
    let dir = temp_dir("newest");
    let store = SqliteStore::open(&dir.join("p.sqlite"), 300).expect("open");
    let d = domain("example.test");
    let newer = Entry { policy: Some(policy(ENFORCE, "new", 2_000)), checked_at: 2_000, failed: None };
    let older = Entry {
        policy: Some(policy(&ENFORCE.replace("enforce", "testing"), "old", 1_000)),
        checked_at: 2_500,
        failed: None,
    };
    store.save(&d, &newer).expect("save");
    store.save(&d, &older).expect("save");
    let got = store.load(&d).expect("load").expect("entry");
    assert_eq!(got.policy.expect("policy").id.as_str(), "new");
    assert_eq!(got.checked_at, 2_500, "the last lookup time moves forward");
    // An entry without a policy never erases a stored one (CACHE-4).
    store.save(&d, &Entry { policy: None, checked_at: 3_000, failed: None }).expect("save");
    assert_eq!(store.load(&d).expect("load").expect("entry").policy.expect("kept").id.as_str(), "new");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn foreign_corrupt_and_unwritable_files_are_refused_clearly() {
    let dir = temp_dir("bad");
    let foreign = dir.join("foreign.sqlite");
    {
        let c = rusqlite::Connection::open(&foreign).expect("create");
        c.execute_batch("CREATE TABLE mail (id INTEGER PRIMARY KEY); INSERT INTO mail VALUES (1);")
            .expect("table");
    }
    let e = SqliteStore::open(&foreign, 300).expect_err("foreign");
    assert!(e.0.contains("foreign.sqlite") && e.0.contains("not an mtasts policy store"), "{e}");

    let corrupt = dir.join("corrupt.sqlite");
    std::fs::write(&corrupt, vec![0xA5u8; 8192]).expect("write");
    let e = SqliteStore::open(&corrupt, 300).expect_err("corrupt");
    assert!(e.0.contains("corrupt.sqlite") && e.0.contains("not an mtasts policy store"), "{e}");

    let missing_dir = dir.join("no/such/dir/p.sqlite");
    let e = SqliteStore::open(&missing_dir, 300).expect_err("missing directory");
    assert!(e.0.contains("cannot open") && e.0.contains("writable"), "{e}");

    let e = SqliteStore::open(&dir, 300).expect_err("a directory");
    assert!(e.0.contains(&dir.display().to_string()), "{e}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn an_engine_with_a_broken_store_carries_on_in_memory() {
    let dir = temp_dir("carryon");
    let path = dir.join("corrupt.sqlite");
    std::fs::write(&path, b"this is not a database, it is a text file that happens to be here")
        .expect("write");
    let toml = format!(
        "[dns]\nnameservers = [\"127.0.0.1:9\"]\ntimeout_ms = 200\n[cache]\npath = \"{}\"\n",
        path.display()
    );
    let config = mtasts::config::Config::parse(&toml).expect("config");
    let engine = config.build_engine().expect("an engine, without its store");
    assert!(engine.store_error().is_some_and(|e| e.contains("corrupt.sqlite")));
    let outcome = engine.check_mx("example.test", "mx.example.test").expect("check");
    assert_eq!(outcome.verdict, Verdict::NoPolicy);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn old_schemas_are_migrated_and_newer_ones_refused() {
    let dir = temp_dir("migrate");
    let v1 = dir.join("v1.sqlite");
    {
        let c = rusqlite::Connection::open(&v1).expect("create");
        c.execute_batch(&format!(
            "PRAGMA application_id = {}; PRAGMA user_version = 1;
             CREATE TABLE policies (domain TEXT PRIMARY KEY NOT NULL, policy_text TEXT, policy_id TEXT, mode TEXT,
               max_age INTEGER, fetched_at INTEGER, expires_at INTEGER, checked_at INTEGER NOT NULL DEFAULT 0,
               failed_id TEXT, failed_at INTEGER, failed_reason TEXT, failed_detail TEXT, next_retry_at INTEGER) WITHOUT ROWID;
             INSERT INTO policies (domain, policy_text, policy_id, mode, max_age, fetched_at, expires_at, checked_at)
               VALUES ('example.test', '{ENFORCE}', 'a1', 'enforce', 86400, 1000, 87400, 1000);",
            0x4D54_5354
        ))
        .expect("v1 schema");
    }
    let store = SqliteStore::open(&v1, 300).expect("migrated");
    let got = store.load(&domain("example.test")).expect("load").expect("entry kept by the migration");
    assert_eq!(got.policy.expect("policy").id.as_str(), "a1");
    drop(store);
    let c = rusqlite::Connection::open(&v1).expect("open");
    let version: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0)).expect("version");
    assert_eq!(version, mtasts::cache::sqlite_schema_version());
    c.execute_batch("PRAGMA user_version = 99").expect("bump");
    drop(c);
    let e = SqliteStore::open(&v1, 300).expect_err("newer schema");
    assert!(e.0.contains("newer than this mtasts"), "{e}");
    let _ = std::fs::remove_dir_all(dir);
}

fn engine_over(
    store: SqliteStore,
    dns: &Arc<FakeDns>,
    http: &Arc<FakeHttp>,
    clock: &Arc<FakeClock>,
) -> Engine {
    Engine::builder(Arc::clone(dns), Arc::clone(http))
        .clock(Arc::clone(clock))
        .trust_anchors(TrustAnchors::webpki())
        .timing(Timing::default())
        .store(store)
        .build()
}

#[test]
fn cache_12_a_restarted_engine_still_enforces_after_discovery_is_blocked() {
    let dir = temp_dir("restart");
    let path = dir.join("p.sqlite");
    let (dns, http, clock) =
        (Arc::new(FakeDns::default()), Arc::new(FakeHttp::default()), Arc::new(FakeClock::default()));
    dns.set_records(&["v=STSv1; id=a1"]);
    http.set_body(ENFORCE);
    {
        let first = engine_over(SqliteStore::open(&path, 300).expect("open"), &dns, &http, &clock);
        assert_eq!(first.check_mx("example.test", "mx.example.test").expect("check").verdict, Verdict::Pass);
    }
    // The attacker removes the TXT record and breaks the policy host; the engine restarts.
    dns.set(Err(DnsError::NotFound));
    http.set_error(Reason::StsPolicyFetchError, "connection refused");
    clock.advance(3600);
    let second = engine_over(SqliteStore::open(&path, 300).expect("open"), &dns, &http, &clock);
    let o = second.check_mx("example.test", "evil.example.test").expect("check");
    assert_eq!((o.verdict, o.reason), (Verdict::FailEnforce, Reason::MxMismatch));
    // Until fetched_at + max_age, and not beyond (CACHE-10).
    clock.advance(86_400 - 3600);
    let third = engine_over(SqliteStore::open(&path, 300).expect("open"), &dns, &http, &clock);
    assert_eq!(
        third.check_mx("example.test", "evil.example.test").expect("check").verdict,
        Verdict::NoPolicy
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn fetch_10_the_negative_cache_holds_across_restarts() {
    let dir = temp_dir("negative");
    let path = dir.join("p.sqlite");
    let (dns, http, clock) =
        (Arc::new(FakeDns::default()), Arc::new(FakeHttp::default()), Arc::new(FakeClock::default()));
    dns.set_records(&["v=STSv1; id=a1"]);
    http.set_error(Reason::StsPolicyFetchError, "HTTP 500");
    engine_over(SqliteStore::open(&path, 300).expect("open"), &dns, &http, &clock)
        .check_mx("x.test", "mx.x.test")
        .expect("check");
    assert_eq!(http.fetches(), 1);
    // A restarted engine: past the 5-minute retry interval, the same id may be fetched again.
    clock.advance(400);
    http.set_body(ENFORCE);
    let e = engine_over(SqliteStore::open(&path, 300).expect("open"), &dns, &http, &clock);
    assert_eq!(e.check_mx("x.test", "mx.example.test").expect("check").verdict, Verdict::Pass);
    assert_eq!(http.fetches(), 2, "retried once 5 minutes had passed");
    // A failure remembered by one process stops another from retrying within 5 minutes.
    dns.set_records(&["v=STSv1; id=b2"]);
    http.set_error(Reason::StsPolicyFetchError, "HTTP 500");
    clock.advance(400);
    e.recheck("x.test").expect("recheck");
    assert_eq!(http.fetches(), 3);
    clock.advance(60);
    let other = engine_over(SqliteStore::open(&path, 300).expect("open"), &dns, &http, &clock);
    other.recheck("x.test").expect("recheck");
    assert_eq!(http.fetches(), 3, "the stored failure of id b2 holds");
    let _ = std::fs::remove_dir_all(dir);
}

// ---------------------------------------------------------------------------------------------
// Several processes, and SIGKILL: the test binary runs itself as worker processes.

const WORKER_ENV: &str = "MTASTS_STORE_WORKER";

fn spawn_worker(mode: &str, path: &Path, extra: &[(&str, String)]) -> std::process::Child {
    let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
    cmd.args(["--exact", "store_worker", "--ignored", "--nocapture", "--test-threads=1"])
        .env(WORKER_ENV, mode)
        .env("MTASTS_STORE_PATH", path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn worker")
}

/// The body of the worker processes; does nothing unless started by the tests below.
#[test]
#[ignore = "run by the multi-process store tests as a separate process"]
fn store_worker() {
    let Ok(mode) = std::env::var(WORKER_ENV) else { return };
    let path = PathBuf::from(std::env::var("MTASTS_STORE_PATH").expect("path"));
    match mode.as_str() {
        "writer" => {
            // Writes entries one by one and says which ones committed, until killed.
            let store = SqliteStore::open(&path, 300).expect("open");
            for i in 0.. {
                let d = domain(&format!("d{i}.test"));
                let entry = Entry {
                    policy: Some(policy(ENFORCE, &format!("id{i}"), 1_000 + i)),
                    checked_at: 1_000 + i,
                    failed: None,
                };
                store.save(&d, &entry).expect("save");
                println!("{i}");
            }
        }
        "checker" => checker(&path),
        other => panic!("worker mode {other}"),
    }
}

/// 4 threads checking overlapping domains through the real DNS and HTTPS clients for a while.
fn checker(path: &Path) {
    let config_path = std::env::var("MTASTS_CONFIG").expect("config");
    let seconds: u64 = std::env::var("MTASTS_STRESS_SECONDS").expect("seconds").parse().expect("number");
    let mut config = mtasts::config::Config::from_file(Path::new(&config_path)).expect("config");
    config.cache.path = path.display().to_string();
    let engine = Arc::new(config.build_engine().expect("engine"));
    assert!(engine.store_error().is_none(), "{:?}", engine.store_error());
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let engine = Arc::clone(&engine);
            std::thread::spawn(move || {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    for i in 0..8u64 {
                        let d = format!("s{}.test", (i + t) % 8);
                        let want = if i % 2 == 0 { Verdict::Pass } else { Verdict::FailEnforce };
                        let mx = if i % 2 == 0 { "mx.stress.test" } else { "evil.stress.test" };
                        let o = engine.check_mx(&d, mx).expect("check");
                        assert_eq!(o.verdict, want, "{d} {mx}: {o:?}");
                        if n % 50 == 0 {
                            // Force DNS and refreshes now and then, so that the store is written.
                            engine.recheck(&d).expect("recheck");
                        }
                        n += 1;
                    }
                }
                n
            })
        })
        .collect();
    let total: u64 = threads.into_iter().map(|t| t.join().expect("checker thread")).sum();
    assert!(engine.store_error().is_none(), "{:?}", engine.store_error());
    println!("checks {total}");
}

#[test]
fn sigkill_in_the_middle_of_writes_loses_nothing_committed() {
    let dir = temp_dir("sigkill");
    let path = dir.join("p.sqlite");
    SqliteStore::open(&path, 300).expect("create");
    let mut child = spawn_worker("writer", &path, &[]);
    let stdout = child.stdout.take().expect("stdout");
    let mut committed = Vec::new();
    let mut lines = BufReader::new(stdout).lines();
    while committed.len() < 300 {
        match lines.next() {
            Some(Ok(line)) => committed.extend(line.trim().parse::<u64>().ok()),
            _ => break,
        }
    }
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    // Whatever the child printed after our last read also committed; read the rest.
    committed.extend(lines.map_while(Result::ok).filter_map(|l| l.trim().parse::<u64>().ok()));
    assert!(committed.len() >= 300, "the writer made progress: {}", committed.len());
    let store = SqliteStore::open(&path, 300).expect("the store opens after SIGKILL");
    for i in &committed {
        let got = store.load(&domain(&format!("d{i}.test"))).expect("load").expect("committed entry present");
        assert_eq!(got.policy.expect("policy").id.as_str(), format!("id{i}"));
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn four_processes_by_four_threads_share_one_store() {
    use mtasts_fixtures::dns::DnsServer;
    use mtasts_fixtures::https::{HttpsServer, Response};
    use mtasts_fixtures::pki::pki;
    let dir = temp_dir("multi");
    let path = dir.join("p.sqlite");
    let dns = DnsServer::start().expect("dns");
    let https = HttpsServer::start().expect("https");
    let body = "version: STSv1\nmode: enforce\nmx: mx.stress.test\nmax_age: 86400\n";
    for i in 0..8 {
        let d = format!("s{i}.test");
        let host = format!("mta-sts.{d}");
        dns.set_txt1(&format!("_mta-sts.{d}"), &[&format!("v=STSv1; id=v{i}")]);
        dns.set_a(&host, std::net::Ipv4Addr::LOCALHOST);
        https.set_cert(&host, &pki().leaf(&[&host]));
        https.set_response(&host, Response::policy(body));
    }
    pki().write_root(&dir.join("ca.pem")).expect("ca");
    let config = dir.join("mtasts.toml");
    std::fs::write(
        &config,
        format!(
            "[dns]\nnameservers = [\"{}\"]\ntimeout_ms = 3000\n[https]\nca_file = \"{}\"\nport = {}\n[engine]\ntxt_check_interval = 0\nrefresh_interval = 1\n",
            dns.addr(),
            dir.join("ca.pem").display(),
            https.addr().port()
        ),
    )
    .expect("config");
    SqliteStore::open(&path, 300).expect("create");
    let seconds = std::env::var("MTASTS_STRESS_SECONDS").unwrap_or_else(|_| "20".into());
    let workers: Vec<_> = (0..4)
        .map(|_| {
            spawn_worker(
                "checker",
                &path,
                &[
                    ("MTASTS_CONFIG", config.display().to_string()),
                    ("MTASTS_STRESS_SECONDS", seconds.clone()),
                ],
            )
        })
        .collect();
    let mut checks = 0u64;
    for w in workers {
        let out = w.wait_with_output().expect("worker");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "a worker failed: {text}");
        checks += text
            .lines()
            .find_map(|l| l.split("checks ").nth(1))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .expect("count");
    }
    // Every domain is stored once, with a valid enforce policy.
    let store = SqliteStore::open(&path, 300).expect("open");
    let listed = store.list().expect("list");
    assert_eq!(listed.len(), 8, "{listed:?}");
    for (d, e) in listed {
        let p = e.policy.unwrap_or_else(|| panic!("{d} has its policy"));
        assert_eq!(p.mode(), mtasts::Mode::Enforce);
        assert!(p.id.as_str().starts_with('v'));
    }
    assert!(checks > 1000, "the workers did work: {checks} checks");
    eprintln!("4 processes x 4 threads: {checks} checks in {seconds} s");
    let _ = std::fs::remove_dir_all(dir);
}

/// The store across `fork()`: a child opens its own connection (SQLite forbids using the
/// parent's) and sees and writes the same store.
#[test]
fn the_store_is_safe_across_fork() {
    let dir = temp_dir("fork");
    let path = dir.join("p.sqlite");
    let (dns, http, clock) =
        (Arc::new(FakeDns::default()), Arc::new(FakeHttp::default()), Arc::new(FakeClock::default()));
    dns.set_records(&["v=STSv1; id=a1"]);
    http.set_body(ENFORCE);
    let engine = engine_over(SqliteStore::open(&path, 300).expect("open"), &dns, &http, &clock);
    assert_eq!(engine.check_mx("parent.test", "mx.example.test").expect("check").verdict, Verdict::Pass);
    // SAFETY: the child only uses the engine and leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        let ok = engine.check_mx("child.test", "mx.example.test").is_ok_and(|o| o.verdict == Verdict::Pass)
            && engine.store_error().is_none();
        // SAFETY: _exit skips the parent's atexit handlers and test harness.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "child status {status}");
    // The parent's connection still works, and the child's write is there.
    let stored = engine.store().expect("store").load(&domain("child.test")).expect("load");
    assert!(stored.is_some_and(|e| e.policy.is_some()));
    assert!(engine.store_error().is_none());
    let _ = std::fs::remove_dir_all(dir);
}
