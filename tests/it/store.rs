//! The SQLite policy store: round trips, the newest-policy rule, foreign/corrupt/unwritable
//! files, schema migration, downgrade resistance across restarts (CACHE-4, CACHE-12), many
//! processes at once, and SIGKILL in the middle of writes.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{FakeClock, FakeDns, FakeHttp};
use mtasts::cache::{CachedPolicy, CountStore, Entry, FailedFetch, Failure, PolicyStore, SqliteStore};
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
        "[dns]\nnameservers = [\"127.0.0.1:9\"]\ntimeout_ms = 200\ndnssec = \"off\"\n[cache]\npath = \"{}\"\n",
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
    // The migrated store keeps the engine counters (`mtasts stats`) too.
    mtasts::cache::CountStore::add_stats(&store, &[("mtasts_fetches{result=\"ok\"}", 2)]).expect("stats");
    let stats = mtasts::cache::CountStore::stats(&store).expect("stats");
    assert_eq!(stats, [("mtasts_fetches{result=\"ok\"}".to_owned(), 2)]);
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

/// A policy store that counts its reads.
#[derive(Debug)]
struct CountingLoads {
    inner: SqliteStore,
    loads: std::sync::atomic::AtomicUsize,
}

impl PolicyStore for CountingLoads {
    fn load(&self, domain: &Domain) -> Result<Option<Entry>, mtasts::cache::StoreError> {
        self.loads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.load(domain)
    }
    fn save(&self, domain: &Domain, entry: &Entry) -> Result<(), mtasts::cache::StoreError> {
        self.inner.save(domain, entry)
    }
    fn list(&self) -> Result<Vec<(Domain, Entry)>, mtasts::cache::StoreError> {
        self.inner.list()
    }
    fn remove(&self, domain: &Domain) -> Result<bool, mtasts::cache::StoreError> {
        self.inner.remove(domain)
    }
    fn location(&self) -> String {
        self.inner.location()
    }
}

/// A cold lookup (in neither the memory cache nor the store) reads the store once: the miss
/// that sends it to discovery is not read again before the fetch. A domain the memory cache
/// holds is still merged with the store's entry before its discovery (one read), so that a
/// policy another process fetched meanwhile is seen.
#[test]
fn a_cold_lookup_reads_the_store_once() {
    let dir = temp_dir("cold-reads");
    let path = dir.join("p.sqlite");
    let (dns, http, clock) =
        (Arc::new(FakeDns::default()), Arc::new(FakeHttp::default()), Arc::new(FakeClock::default()));
    dns.set_records(&["v=STSv1; id=a1"]);
    http.set_body(ENFORCE);
    let counting = Arc::new(CountingLoads {
        inner: SqliteStore::open(&path, 300).expect("open"),
        loads: std::sync::atomic::AtomicUsize::new(0),
    });
    let stores = mtasts::cache::Stores {
        policies: Arc::clone(&counting) as Arc<dyn PolicyStore>,
        ..SqliteStore::open(&path, 300).expect("open").into()
    };
    let engine = Engine::builder(Arc::clone(&dns), Arc::clone(&http))
        .clock(Arc::clone(&clock))
        .trust_anchors(TrustAnchors::webpki())
        .timing(Timing::default())
        .store(stores)
        .build();
    let loads = || counting.loads.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(engine.check_mx("example.test", "mx.example.test").expect("check").verdict, Verdict::Pass);
    assert_eq!((loads(), dns.lookups(), http.fetches()), (1, 1, 1), "one read, one TXT lookup, one fetch");
    assert!(counting.inner.load(&domain("example.test")).expect("load").is_some(), "saved");

    // In memory: no read while fresh; at the next TXT check, one read (the merge) before it.
    assert_eq!(engine.check_mx("example.test", "mx.example.test").expect("check").verdict, Verdict::Pass);
    assert_eq!(loads(), 1);
    clock.advance(Timing::default().txt_check_interval);
    assert_eq!(engine.check_mx("example.test", "mx.example.test").expect("check").verdict, Verdict::Pass);
    assert_eq!((loads(), dns.lookups(), http.fetches()), (2, 2, 1));
    let _ = std::fs::remove_dir_all(dir);
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
    cmd.args(["--exact", "store::store_worker", "--ignored", "--nocapture", "--test-threads=1"])
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
        "readonly-check" => readonly_checker(),
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
    let world = mtasts_fixtures::world::World::start("store-multi").expect("fixtures");
    let dir = world.dir.clone();
    let path = dir.join("p.sqlite");
    let body = "version: STSv1\nmode: enforce\nmx: mx.stress.test\nmax_age: 86400\n";
    for i in 0..8 {
        world.publish(&format!("s{i}.test"), &format!("v{i}"), body);
    }
    // The checkers set the store path themselves; DNS may be asked on every check.
    let config = world.write_config("[engine]\ntxt_check_interval = 0\nrefresh_interval = 1\n");
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

// ---------------------------------------------------------------------------------------------
// Fail closed at the edges of the store (README, "Where policies are kept").

/// Seconds since the epoch (the engines built from a configuration use the system clock).
fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A configuration whose DNS server never answers (discovery fails) over the store at `path`.
fn blocked_discovery_config(dir: &Path, path: &Path, extra: &str) -> PathBuf {
    let config = dir.join("mtasts.toml");
    std::fs::write(
        &config,
        format!(
            "[dns]\nnameservers = [\"127.0.0.1:9\"]\ntimeout_ms = 300\ndnssec = \"off\"\n[cache]\npath = \"{}\"\n{extra}",
            path.display()
        ),
    )
    .expect("config");
    config
}

/// Stores a live `enforce` policy for `example.test` (listing only `mx.example.test`).
fn store_enforce_policy(path: &Path) {
    let store = SqliteStore::open(path, 300).expect("open");
    let entry =
        Entry { policy: Some(policy(ENFORCE, "a1", now() - 60)), checked_at: now() - 60, failed: None };
    store.save(&domain("example.test"), &entry).expect("save");
}

/// Runs the `readonly-check` worker, as `nobody` when we are root (from a copy of this test binary
/// that `nobody` may execute), as ourselves otherwise; returns its stdout.
fn run_check_worker(dir: &Path, config: &Path) -> String {
    let exe = dir.join("store-test-worker");
    std::fs::copy(std::env::current_exe().expect("test binary"), &exe).expect("copy test binary");
    let args = ["--exact", "store::store_worker", "--ignored", "--nocapture", "--test-threads=1"];
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "nobody", "--"]).arg(&exe).args(args);
        c
    } else {
        let mut c = Command::new(&exe);
        c.args(args);
        c
    };
    let out = cmd
        .env(WORKER_ENV, "readonly-check")
        .env("MTASTS_STORE_PATH", dir.join("unused"))
        .env("MTASTS_CONFIG", config)
        .output()
        .expect("run the worker");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "worker failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

/// The `readonly-check` worker: an engine from the configuration checks an unlisted MX.
fn readonly_checker() {
    let config_path = std::env::var("MTASTS_CONFIG").expect("config");
    let config = mtasts::config::Config::from_file(Path::new(&config_path)).expect("config");
    let engine = config.build_engine().expect("engine");
    let o = engine.check_mx("example.test", "evil.example.test").expect("check");
    let state = engine.store_state();
    println!("verdict={} reason={} state={}", o.verdict, o.reason, state.as_str());
    // Nothing the read-only engine does may write: a second check is still answered.
    let o = engine.check_mx("example.test", "mx.example.test").expect("check");
    println!("listed={}", o.verdict);
}

/// Makes the store unwritable for the worker: root's files are already so for `nobody`; when not
/// root, the files and the directory lose their write bits.
fn make_unwritable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if is_root() {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        return;
    }
    for e in std::fs::read_dir(dir).expect("dir").flatten() {
        std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(0o444)).expect("chmod");
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).expect("chmod");
}

fn make_writable_again(dir: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
}

#[test]
fn cache_4_a_store_the_mta_user_cannot_write_is_read_only_and_still_enforced() {
    // WAL side files absent: the last writer closed the store cleanly.
    let dir = temp_dir("readonly-closed");
    let path = dir.join("p.sqlite");
    store_enforce_policy(&path);
    assert!(!dir.join("p.sqlite-wal").exists() && !dir.join("p.sqlite-shm").exists());
    let config = blocked_discovery_config(&dir, &path, "");
    make_unwritable(&dir);
    let out = run_check_worker(&dir, &config);
    make_writable_again(&dir);
    assert!(out.contains("verdict=fail-enforce reason=mx-mismatch state=read-only"), "{out}");
    assert!(out.contains("listed=pass"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);

    // WAL side files present: another process (the operator's, root's) has the store open.
    let dir = temp_dir("readonly-open");
    let path = dir.join("p.sqlite");
    store_enforce_policy(&path);
    let holder = SqliteStore::open(&path, 300).expect("open");
    holder.load(&domain("example.test")).expect("load");
    assert!(dir.join("p.sqlite-wal").exists() && dir.join("p.sqlite-shm").exists());
    let config = blocked_discovery_config(&dir, &path, "");
    make_unwritable(&dir);
    let out = run_check_worker(&dir, &config);
    make_writable_again(&dir);
    assert!(out.contains("verdict=fail-enforce reason=mx-mismatch state=read-only"), "{out}");
    drop(holder);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn files_created_by_root_belong_to_the_owner_of_the_directory() {
    use std::os::unix::fs::MetadataExt as _;
    assert!(is_root(), "this test gives files to another user and needs root (CI runs as root)");
    let dir = temp_dir("owner");
    let (uid, gid) = (65_534, 65_534); // nobody:nogroup
    std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown dir");
    let path = dir.join("policies.sqlite");
    // The operator, as root, runs a command that creates the store in the MTA's directory.
    let out = Command::new(env!("CARGO_BIN_EXE_mtasts"))
        .args(["cache", "list", "--cache"])
        .arg(&path)
        .env("MTASTS_CONFIG", "/nonexistent/not-used.toml")
        .env_remove("MTASTS_CONFIG")
        .output()
        .expect("mtasts cache list");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let owner = |p: &Path| std::fs::metadata(p).map(|m| (m.uid(), m.gid())).expect("metadata");
    assert_eq!(owner(&path), (uid, gid), "the database belongs to the directory's owner");
    // While root holds it open, its WAL side files belong to the same user.
    let store = SqliteStore::open(&path, 300).expect("open as root");
    store_enforce_policy(&path);
    for side in ["policies.sqlite-wal", "policies.sqlite-shm"] {
        assert_eq!(owner(&dir.join(side)), (uid, gid), "{side}");
    }
    // And the MTA's user can write the store.
    let config = blocked_discovery_config(&dir, &path, "");
    let out = run_check_worker(&dir, &config);
    assert!(out.contains("state=ok"), "{out}");
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The store's files get 0666 less the umask (SQLite alone makes them 0644 whatever the umask):
/// under the Debian package's `UMask=0002` the store, its WAL and its shm file are writable by
/// the group `mtasts` that the MTA's user joins.
#[test]
fn a_new_store_follows_the_umask() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = temp_dir("umask");
    let mode = |p: &Path| std::fs::metadata(p).map(|m| m.permissions().mode() & 0o777).expect("metadata");
    for (umask, want) in [("002", 0o664), ("022", 0o644), ("077", 0o600)] {
        let path = dir.join(format!("umask-{umask}.sqlite"));
        // A child process, so that this process's umask (shared by the other tests) is untouched;
        // `cache list` saves nothing but opens the store for writing, which creates it.
        let out = Command::new("sh")
            .args(["-c", "umask \"$1\" && exec \"$2\" cache list --cache \"$3\"", "sh", umask])
            .arg(env!("CARGO_BIN_EXE_mtasts"))
            .arg(&path)
            .env_remove("MTASTS_CONFIG")
            .output()
            .expect("sh -c mtasts cache list");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(mode(&path), want, "umask {umask}: the database file");
        // The side files SQLite makes later take the database file's mode.
        let store = SqliteStore::open(&path, 300).expect("open");
        store
            .save(&domain("umask.test"), &Entry { policy: None, checked_at: now(), failed: None })
            .expect("save");
        for side in ["-wal", "-shm"] {
            let mut p = path.clone().into_os_string();
            p.push(side);
            assert_eq!(mode(Path::new(&p)), want, "umask {umask}: {side}");
        }
        drop(store);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn one_bad_row_spoils_nothing_else() {
    let dir = temp_dir("badrow");
    let path = dir.join("p.sqlite");
    let store = SqliteStore::open(&path, 300).expect("open");
    let good =
        Entry { policy: Some(policy(ENFORCE, "a1", now() - 60)), checked_at: now() - 60, failed: None };
    for d in ["a.test", "b.test", "c.test", "d.test"] {
        store.save(&domain(d), &good).expect("save");
    }
    let failed = Entry {
        failed: Some(FailedFetch {
            id: PolicyId::parse("b2").expect("id"),
            at: now() - 30,
            failure: Failure { reason: Reason::StsPolicyFetchError, detail: "HTTP 500".into() },
        }),
        ..good.clone()
    };
    store.save(&domain("b.test"), &failed).expect("save");
    {
        let c = rusqlite::Connection::open(&path).expect("sqlite");
        // b.test: failed-fetch metadata written by a newer mtasts (a reason this one does not know).
        c.execute("UPDATE policies SET failed_reason = 'from-the-future' WHERE domain = 'b.test'", [])
            .expect("update");
        // c.test: a policy that no longer parses; d.test: a column of the wrong type.
        c.execute("UPDATE policies SET policy_text = 'garbage' WHERE domain = 'c.test'", []).expect("update");
        c.execute("UPDATE policies SET checked_at = NULL WHERE domain = 'd.test'", [])
            .expect_err("NOT NULL holds");
        c.execute("UPDATE policies SET fetched_at = 'yesterday' WHERE domain = 'd.test'", [])
            .expect("update");
        c.execute("INSERT INTO policies (domain, checked_at) VALUES ('not a domain!', 0)", [])
            .expect("insert");
    }
    // The valid policy of b.test survives its unreadable metadata.
    let b = store.load(&domain("b.test")).expect("load").expect("entry");
    assert_eq!(b.policy.expect("the policy is kept").id.as_str(), "a1");
    assert_eq!(b.failed, None, "the unreadable failed-fetch record is dropped");
    // Unreadable rows are skipped; the others are listed.
    let listed: Vec<String> = store.list().expect("list").into_iter().map(|(d, _)| d.to_string()).collect();
    assert_eq!(listed, ["a.test", "b.test"]);
    // The commands that read every row keep going.
    for args in [&["cache", "list"][..], &["export", "opensmtpd-table"][..]] {
        let out = Command::new(env!("CARGO_BIN_EXE_mtasts"))
            .args(args)
            .arg("--cache")
            .arg(&path)
            .env_remove("MTASTS_CONFIG")
            .output()
            .expect("mtasts");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {stderr}");
        assert!(stdout.contains("a.test") && stdout.contains("b.test"), "{args:?}: {stdout}");
        assert!(stderr.contains("c.test") && stderr.contains("unreadable row skipped"), "{args:?}: {stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn on_store_error_tempfail_holds_mail_while_the_store_is_unavailable() {
    let dir = temp_dir("tempfail");
    let path = dir.join("corrupt.sqlite");
    std::fs::write(&path, b"this is not a database, it is a text file that happens to be here")
        .expect("write");
    for (extra, want) in [
        ("", (Verdict::NoPolicy, Reason::StsPolicyFetchError)),
        ("[engine]\non_store_error = \"continue\"\n", (Verdict::NoPolicy, Reason::StsPolicyFetchError)),
        ("[engine]\non_store_error = \"tempfail\"\n", (Verdict::FailEnforce, Reason::StoreUnavailable)),
    ] {
        let config = blocked_discovery_config(&dir, &path, extra);
        let config = mtasts::config::Config::from_file(&config).expect("config");
        let engine = config.build_engine().expect("an engine, without its store");
        let state = engine.store_state();
        assert_eq!(state.as_str(), "unavailable");
        assert!(state.detail().is_some_and(|d| d.contains("corrupt.sqlite")), "{state:?}");
        let o = engine.check_mx("example.test", "mx.example.test").expect("check");
        assert_eq!((o.verdict, o.reason), want, "{extra}: {o:?}");
        if want.0 == Verdict::FailEnforce {
            assert!(o.detail.as_deref().is_some_and(|d| d.contains("store is unavailable")), "{o:?}");
        }
    }
    // A store that works: the same setting changes nothing.
    let good = dir.join("good.sqlite");
    let config = blocked_discovery_config(&dir, &good, "[engine]\non_store_error = \"tempfail\"\n");
    let engine = mtasts::config::Config::from_file(&config).expect("config").build_engine().expect("engine");
    assert_eq!(engine.store_state(), mtasts::engine::StoreState::Ok);
    assert_eq!(engine.check_mx("example.test", "mx.example.test").expect("check").verdict, Verdict::NoPolicy);
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------
// Nothing grows without bound (README, "Where policies are kept").

#[test]
fn due_for_refresh_finds_exactly_the_due_policies() {
    let dir = temp_dir("due");
    let store = SqliteStore::open(&dir.join("p.sqlite"), 300).expect("open");
    let now = 1_800_000_000u64;
    let body =
        |max_age: u64| format!("version: STSv1\nmode: enforce\nmx: mx.example.test\nmax_age: {max_age}\n");
    // (domain, max_age, age of the policy): refresh_interval is one day.
    let cases = [
        ("fresh.test", 604_800, 3600, false),
        ("day-old.test", 604_800, 86_400, true),
        ("half-life.test", 7200, 3600, true),
        ("short-young.test", 7200, 3000, false),
        ("expired.test", 3600, 7200, false),
    ];
    for (d, max_age, age, _) in cases {
        let entry = Entry {
            policy: Some(policy(&body(max_age), "a1", now - age)),
            checked_at: now - age,
            failed: None,
        };
        store.save(&domain(d), &entry).expect("save");
    }
    store.save(&domain("nopolicy.test"), &Entry { checked_at: now, ..Entry::default() }).expect("save");
    let due: Vec<String> =
        store.due_for_refresh(now, 86_400).expect("due").into_iter().map(|(d, _)| d.to_string()).collect();
    let want: Vec<&str> = cases.iter().filter(|c| c.3).map(|c| c.0).collect();
    assert_eq!(due, ["day-old.test", "half-life.test"]);
    assert_eq!(due, want);
    // The engine applies the same rule (Timing::refresh_due) on top.
    let (dns, http, clock) =
        (Arc::new(FakeDns::default()), Arc::new(FakeHttp::default()), Arc::new(FakeClock::default()));
    clock.0.store(now, std::sync::atomic::Ordering::SeqCst);
    let engine = engine_over(store, &dns, &http, &clock);
    let due: Vec<String> =
        engine.due_for_refresh(now).expect("due").iter().map(ToString::to_string).collect();
    assert_eq!(due, want);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_store_forgets_what_has_been_useless_for_the_prune_age() {
    use mtasts::tlsrpt::report::{Day, DayCounts, PolicyKey};
    let dir = temp_dir("prune");
    let path = dir.join("p.sqlite");
    let store = SqliteStore::open(&path, 300).expect("open");
    let now = 1_800_000_000u64;
    let day = 86_400u64;
    let short = "version: STSv1\nmode: enforce\nmx: mx.example.test\nmax_age: 86400\n";
    let save = |d: &str, policy_age: Option<u64>, checked_age: u64| {
        let entry = Entry {
            policy: policy_age.map(|age| policy(short, "a1", now - age)),
            checked_at: now - checked_age,
            failed: None,
        };
        store.save(&domain(d), &entry).expect("save");
    };
    save("old-nopolicy.test", None, 40 * day);
    save("recent-nopolicy.test", None, day);
    save("old-expired.test", Some(41 * day), 40 * day);
    save("expired-but-looked-up.test", Some(41 * day), day);
    save("live.test", Some(3600), 3600);
    // TLSRPT counts of 20 days ago and of yesterday.
    let mut counts = DayCounts::new();
    counts.add_success(&domain("live.test"), &PolicyKey::no_policy_found(), 3);
    store.add_report_counts(Day::from_unix(now - 20 * day), &counts).expect("counts");
    store.add_report_counts(Day::from_unix(now - day), &counts).expect("counts");

    let removed = store.prune(now, 30 * day).expect("prune")
        + store
            .prune_report_counts(Day::from_unix(now - mtasts::tlsrpt::report::REPORT_WINDOW_DAYS * day))
            .expect("prune counts");
    assert_eq!(removed, 4, "two rows deleted, one policy cleared, one day of counts deleted");
    let left: Vec<(String, bool)> =
        store.list().expect("list").into_iter().map(|(d, e)| (d.to_string(), e.policy.is_some())).collect();
    assert_eq!(
        left,
        [
            ("expired-but-looked-up.test".to_owned(), false),
            ("live.test".to_owned(), true),
            ("recent-nopolicy.test".to_owned(), false)
        ]
    );
    assert!(store.report_counts(Day::from_unix(now - 20 * day)).expect("counts").is_empty());
    assert!(!store.report_counts(Day::from_unix(now - day)).expect("counts").is_empty());
    let _ = std::fs::remove_dir_all(dir);
}

/// RPT-20: a domain's day holds an `sts` and a `tlsa` policy side by side in the store, and rows
/// written before DANE was counted (an `sts` policy row as the earlier versions wrote it) read
/// back unchanged next to the new ones.
#[test]
fn rpt_20_counts_of_two_policy_types_per_domain_and_day() {
    use mtasts::mx::MxPattern;
    use mtasts::tlsrpt::report::{Day, DayCounts, FailureKey, PolicyKey, PolicyType, ResultType};
    let dir = temp_dir("two-policies");
    let path = dir.join("c.sqlite");
    let store = SqliteStore::open(&path, 300).expect("open");
    let day = Day::from_unix(1_800_000_000);
    let dom = domain("mail.example.test");
    // A row as the earlier versions wrote it: an sts policy, 4 successes.
    let old_policy = r#"{"type":"sts","strings":["version: STSv1","mode: enforce","mx: mail.example.test","max_age: 86400"],"mx":["mail.example.test"]}"#;
    {
        let c = rusqlite::Connection::open(&path).expect("open");
        c.execute(
            "INSERT INTO tlsrpt_counts (day, domain, policy, failure, sessions) VALUES (?1, ?2, ?3, '', 4)",
            rusqlite::params![day.days() as i64, "mail.example.test", old_policy],
        )
        .expect("old row");
    }
    let sts = PolicyKey::sts(
        ["version: STSv1", "mode: enforce", "mx: mail.example.test", "max_age: 86400"]
            .map(str::to_owned)
            .to_vec(),
        &[MxPattern::parse("mail.example.test").expect("pattern")],
    );
    let tlsa = PolicyKey::tlsa(vec!["3 1 1 0a0b".to_owned(), "2 0 1 ff00".to_owned()]);
    let mut counts = DayCounts::new();
    counts.add_success(&dom, &sts, 1);
    counts.add_success(&dom, &tlsa, 5);
    counts.add_failure(&dom, &tlsa, FailureKey::new(ResultType::TlsaInvalid, Some(dom.clone())), 2);
    store.add_report_counts(day, &counts).expect("add");
    store.add_report_counts(day, &counts).expect("add again");
    let read = store.report_counts(day).expect("read");
    let policies: Vec<_> = read.policies(&dom).collect();
    assert_eq!(policies.len(), 2, "{policies:?}");
    let (key, c) = policies.iter().find(|(k, _)| k.policy_type() == PolicyType::Sts).expect("sts");
    assert_eq!((*key, c.successes), (&sts, 4 + 2), "the old row and the new ones are one policy");
    let (key, c) = policies.iter().find(|(k, _)| k.policy_type() == PolicyType::Tlsa).expect("tlsa");
    assert_eq!(key.strings(), ["3 1 1 0a0b", "2 0 1 ff00"]);
    assert!(key.mx_hosts().is_empty());
    assert_eq!((c.successes, c.total_failures()), (10, 4));
    let _ = std::fs::remove_dir_all(dir);
}
