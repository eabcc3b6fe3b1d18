//! The Redis store against a real `redis-server` started by the test on a loopback port
//! (Debian package `redis-server`; `.ci/run` installs it). Built only with `--features redis`.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{FakeClock, FakeDns, FakeHttp};
use mtasts::cache::{CachedPolicy, Entry, PolicyStore, RedisStore};
use mtasts::engine::DnsError;
use mtasts::policy::Policy;
use mtasts::txt::PolicyId;
use mtasts::{Domain, Engine, Reason, Timing, TrustAnchors, Verdict};

const ENFORCE: &str = "version: STSv1\nmode: enforce\nmx: mx.example.test\nmax_age: 86400\n";

struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn redis_server() -> Server {
    let port = TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().expect("addr").port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server must be installed (Debian package redis-server)");
    let url = format!("redis://127.0.0.1:{port}/0");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Server { child, url }
}

fn policy(id: &str, fetched_at: u64) -> Arc<CachedPolicy> {
    let parsed = Policy::parse(ENFORCE.as_bytes()).expect("policy");
    Arc::new(CachedPolicy::new(parsed, PolicyId::parse(id).expect("id"), ENFORCE.into(), fetched_at))
}

#[test]
fn round_trip_newest_wins_list_remove() {
    let server = redis_server();
    let store = RedisStore::open(&server.url, 300).expect("connect");
    let d = Domain::parse("example.test").expect("domain");
    let now = 1_795_824_000;
    let entry = Entry { policy: Some(policy("new", now)), checked_at: now, failed: None };
    store.save(&d, &entry).expect("save");
    assert_eq!(store.load(&d).expect("load"), Some(entry));
    let older = Entry { policy: Some(policy("old", now - 10)), checked_at: now + 5, failed: None };
    store.save(&d, &older).expect("save");
    let got = store.load(&d).expect("load").expect("entry");
    assert_eq!(got.policy.expect("policy").id.as_str(), "new");
    assert_eq!(got.checked_at, now + 5);
    assert_eq!(store.list().expect("list").len(), 1);
    assert!(store.remove(&d).expect("remove"));
    assert_eq!(store.load(&d).expect("load"), None);
}

#[test]
fn engine_counters_of_two_hosts_add_up() {
    use mtasts::cache::CountStore;
    let server = redis_server();
    let (a, b) = (
        RedisStore::open(&server.url, 300).expect("connect"),
        RedisStore::open(&server.url, 300).expect("connect"),
    );
    let key = r#"mtasts_policy_lookups{layer="memory"}"#;
    a.add_stats(&[(key, 3)]).expect("add");
    b.add_stats(&[(key, 4), (r#"mtasts_fetches{result="ok"}"#, 1)]).expect("add");
    let rows = a.stats().expect("stats");
    assert_eq!(rows, [(r#"mtasts_fetches{result="ok"}"#.to_owned(), 1), (key.to_owned(), 7)]);
}

#[test]
fn keys_expire_after_their_policy() {
    let server = redis_server();
    let store = RedisStore::open(&server.url, 300).expect("connect");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    store
        .save(
            &Domain::parse("ttl.test").expect("d"),
            &Entry { policy: Some(policy("a", now)), checked_at: now, failed: None },
        )
        .expect("save");
    let client = redis::Client::open(server.url.as_str()).expect("client");
    let mut c = client.get_connection().expect("connection");
    let ttl: i64 = redis::cmd("TTL").arg("mtasts:policy:ttl.test").query(&mut c).expect("ttl");
    assert!((86_400..=2 * 86_400 + 5).contains(&ttl), "ttl {ttl}: max_age plus one day");
}

#[test]
fn cache_12_two_hosts_share_policies_through_redis() {
    let server = redis_server();
    let (dns, http, clock) =
        (Arc::new(FakeDns::default()), Arc::new(FakeHttp::default()), Arc::new(FakeClock::default()));
    dns.set_records(&["v=STSv1; id=a1"]);
    http.set_body(ENFORCE);
    let host = |dns: &Arc<FakeDns>, http: &Arc<FakeHttp>| {
        Engine::builder(Arc::clone(dns), Arc::clone(http))
            .clock(Arc::clone(&clock))
            .trust_anchors(TrustAnchors::webpki())
            .timing(Timing::default())
            .store(RedisStore::open(&server.url, 300).expect("connect"))
            .build()
    };
    let first = host(&dns, &http);
    assert_eq!(first.check_mx("example.test", "mx.example.test").expect("check").verdict, Verdict::Pass);
    // The second host never reaches DNS or the policy host, yet enforces.
    let (dns2, http2) = (Arc::new(FakeDns::default()), Arc::new(FakeHttp::default()));
    dns2.set(Err(DnsError::Temporary("SERVFAIL".into())));
    http2.set_error(Reason::StsPolicyFetchError, "blocked");
    let second = host(&dns2, &http2);
    let o = second.check_mx("example.test", "evil.example.test").expect("check");
    assert_eq!(o.verdict, Verdict::FailEnforce);
    assert_eq!(http2.fetches(), 0);
}

/// RPT-20 in Redis: an `sts` and a `tlsa` policy side by side for one domain and day, next to a
/// counter written as the earlier versions wrote it (set here with `redis-cli`).
#[test]
fn rpt_20_counts_of_two_policy_types_per_domain_and_day() {
    use mtasts::cache::CountStore;
    use mtasts::mx::MxPattern;
    use mtasts::tlsrpt::report::{Day, DayCounts, FailureKey, PolicyKey, PolicyType, ResultType};
    let server = redis_server();
    let store = RedisStore::open(&server.url, 300).expect("connect");
    let day = Day::from_unix(1_800_000_000);
    let dom = Domain::parse("mail.example.test").expect("domain");
    let old_policy = r#"{"type":"sts","strings":["version: STSv1","mode: enforce","mx: mail.example.test","max_age: 86400"],"mx":["mail.example.test"]}"#;
    let field = serde_json::to_string(&("mail.example.test", old_policy, "")).expect("field");
    let port = server.url.trim_start_matches("redis://127.0.0.1:").trim_end_matches("/0").to_owned();
    let out = Command::new("redis-cli")
        .args(["-p", &port, "HINCRBY", &format!("mtasts:tlsrpt:{}", day.days()), &field, "4"])
        .output()
        .expect("redis-cli must be installed (Debian package redis-tools)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let sts = PolicyKey::sts(
        ["version: STSv1", "mode: enforce", "mx: mail.example.test", "max_age: 86400"]
            .map(str::to_owned)
            .to_vec(),
        &[MxPattern::parse("mail.example.test").expect("pattern")],
    );
    let tlsa = PolicyKey::tlsa(vec!["3 1 1 0a0b".to_owned()]);
    let mut counts = DayCounts::new();
    counts.add_success(&dom, &sts, 1);
    counts.add_success(&dom, &tlsa, 5);
    counts.add_failure(&dom, &tlsa, FailureKey::new(ResultType::DnssecInvalid, Some(dom.clone())), 2);
    store.add_report_counts(day, &counts).expect("add");
    store.add_report_counts(day, &counts).expect("add again");
    let read = store.report_counts(day).expect("read");
    let policies: Vec<_> = read.policies(&dom).collect();
    assert_eq!(policies.len(), 2, "{policies:?}");
    let (key, c) = policies.iter().find(|(k, _)| k.policy_type() == PolicyType::Sts).expect("sts");
    assert_eq!((*key, c.successes), (&sts, 4 + 2), "the old counter and the new ones are one policy");
    let (key, c) = policies.iter().find(|(k, _)| k.policy_type() == PolicyType::Tlsa).expect("tlsa");
    assert_eq!(key.strings(), ["3 1 1 0a0b"]);
    assert_eq!((c.successes, c.total_failures()), (10, 4));
}

#[test]
fn overrides_are_shared_through_redis() {
    // OVR-9: one hash, `mtasts:overrides`; another host's engine sees them (README "Overrides").
    let server = redis_server();
    let store = RedisStore::open(&server.url, 300).expect("connect");
    let d = Domain::parse("example.test").expect("domain");
    let pinned = mtasts::cache::StoredOverride {
        domain: Domain::parse("pinned.test").expect("domain"),
        policy_text: Some(ENFORCE.replace("example.test", "pinned.test")),
        set_at: 2,
    };
    store
        .override_set(&mtasts::cache::StoredOverride { domain: d.clone(), policy_text: None, set_at: 1 })
        .expect("set");
    store.override_set(&pinned).expect("set");
    assert_eq!(store.overrides().expect("list").len(), 2);
    assert!(store.list().expect("policies").is_empty(), "overrides are not policies");
    let (dns, http) = (Arc::new(FakeDns::default()), Arc::new(FakeHttp::default()));
    let other_host = Engine::builder(Arc::clone(&dns), Arc::clone(&http))
        .clock(FakeClock::default())
        .trust_anchors(TrustAnchors::webpki())
        .store(RedisStore::open(&server.url, 300).expect("connect"))
        .build();
    let o = other_host.check_mx("example.test", "mx.example.test").expect("check");
    assert_eq!(
        (o.verdict, o.overridden.as_ref().map(|o| o.origin_str())),
        (Verdict::NoPolicy, Some("store"))
    );
    let o = other_host.check_mx("pinned.test", "mx.evil.test").expect("check");
    assert_eq!((o.verdict, o.reason), (Verdict::FailEnforce, Reason::MxMismatch));
    assert_eq!(o.policy.as_ref().map(|p| p.id.as_str()), Some("pinned"));
    assert_eq!((dns.lookups(), http.fetches()), (0, 0));
    assert!(store.override_clear(&d).expect("clear"));
    assert!(!store.override_clear(&d).expect("clear again"));
    assert_eq!(store.overrides().expect("list"), vec![pinned]);
}

/// A queued report for the outbox tests.
fn outbox_item(report_id: &str, day: u64) -> mtasts::cache::OutboxItem {
    use mtasts::tlsrpt::report::{Day, DayCounts};
    mtasts::cache::OutboxItem {
        report_id: report_id.to_owned(),
        day: Day::from_days(day),
        domain: Domain::parse("dest.test").expect("domain"),
        counts: DayCounts::new(),
        record: "v=TLSRPTv1; rua=mailto:reports@dest.test".to_owned(),
        state: mtasts::tlsrpt::DeliveryState::new(1_800_000_000),
    }
}

/// RPT-25: the outbox in Redis, seen by two hosts: a day and domain are queued once; of two
/// hosts claiming an attempt one wins; once the winner has recorded its attempt, a host that
/// read the older state cannot claim it again; the state round-trips.
#[test]
fn rpt_25_outbox_in_redis_is_shared_and_claimed_once() {
    use mtasts::cache::OutboxStore;
    use mtasts::tlsrpt::RetrySchedule;
    let server = redis_server();
    let (a, b) = (
        RedisStore::open(&server.url, 300).expect("connect"),
        RedisStore::open(&server.url, 300).expect("connect"),
    );
    let item = outbox_item("2026-03-01T00:00:00Z_dest.test_1@sender.test", 20_513);
    assert!(a.outbox_put(&item).expect("put"));
    let again = outbox_item("2026-03-01T00:00:00Z_dest.test_2@sender.test", 20_513);
    assert!(!b.outbox_put(&again).expect("put"), "one report per day and domain, fleet-wide");
    assert!(b.outbox_put(&outbox_item("2026-03-02T00:00:00Z_dest.test_3@sender.test", 20_514)).expect("put"));
    let seen = b.outbox().expect("outbox");
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0], item);
    let now = 1_800_000_100;
    assert!(a.outbox_claim(&item.report_id, &item.state, now, 600).expect("claim"));
    assert!(!b.outbox_claim(&item.report_id, &item.state, now, 600).expect("claim"), "held by a");
    let mut state = item.state.clone();
    state.record_result(now, Ok(()), &RetrySchedule::default());
    a.outbox_update(&item.report_id, &state).expect("update");
    assert!(
        !b.outbox_claim(&item.report_id, &item.state, now, 600).expect("claim"),
        "b read the state before a's attempt: no second send"
    );
    assert_eq!(b.outbox().expect("outbox")[0].state, state);
}

/// RPT-25 end to end: `mtasts report build` on two hosts queues one report; four `mtasts report
/// send` processes started together against the same Redis deliver it exactly once.
#[test]
fn rpt_25_a_fleet_sharing_redis_sends_each_report_once() {
    use mtasts::cache::CountStore;
    use mtasts::tlsrpt::report::{Day, DayCounts, PolicyKey};
    let server = redis_server();
    let w = mtasts_fixtures::world::World::start("redis-outbox").expect("fixtures");
    let sendmail = w.path("sendmail.sh");
    std::fs::write(&sendmail, format!("#!/bin/sh\ncat > {}/mail.$$.eml\n", w.dir.display())).expect("script");
    std::fs::set_permissions(&sendmail, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    w.write_config(&format!(
        "[cache]\nredis_url = \"{}\"\n[report]\norganization = \"Fleet\"\ncontact = \"tlsrpt@sender.test\"\n\
         sendmail = [\"{}\"]\nsend_delay_max_s = 0\n",
        server.url,
        sendmail.display()
    ));
    w.dns.set_txt1("_smtp._tls.dest.test", &["v=TLSRPTv1; rua=mailto:reports@dest.test"]);
    let store = RedisStore::open(&server.url, 300).expect("connect");
    let policy = Policy::parse(ENFORCE.as_bytes()).expect("policy");
    let mut counts = DayCounts::new();
    counts.add_success(
        &Domain::parse("dest.test").expect("domain"),
        &PolicyKey::sts_from_body(ENFORCE.as_bytes(), &policy),
        5,
    );
    store.add_report_counts(Day::parse("2026-03-01").expect("day"), &counts).expect("counts");
    let mtasts = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_mtasts"))
            .args(args)
            .env("MTASTS_CONFIG", w.config_path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mtasts")
    };
    for host in ["first", "second"] {
        let out = mtasts(&["report", "build", "--date", "2026-03-01"]).wait_with_output().expect("build");
        assert!(out.status.success(), "{host}: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout);
        let expected = if host == "first" { "queued for mailto:reports@dest.test" } else { "already queued" };
        assert!(text.contains(expected), "{host}: {text}");
    }
    let senders: Vec<_> = (0..4).map(|_| mtasts(&["report", "send"])).collect();
    for s in senders {
        let out = s.wait_with_output().expect("send");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let mails = std::fs::read_dir(&w.dir)
        .expect("dir")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".eml"))
        .count();
    assert_eq!(mails, 1, "sent once");
    let list = mtasts(&["report", "list"]).wait_with_output().expect("list");
    assert!(String::from_utf8_lossy(&list.stdout).contains(" delivered"), "{list:?}");
}

/// D35 with the Redis store: a validation one process made is found by the next process of the
/// same host (same roots file), which reads no roots; other roots do not find it; failures are
/// not kept.
#[test]
fn d35_cert_2_remembered_validations_are_shared_through_redis() {
    use mtasts::Dane;
    use mtasts::engine::Tls;
    use mtasts_fixtures::pki::{Chain, pki};
    let server = redis_server();
    let dir = std::env::temp_dir().join(format!("mtasts-redis-verified-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (roots, rogue) = (dir.join("roots.pem"), dir.join("rogue.pem"));
    std::fs::write(&roots, &pki().root_pem).expect("roots");
    let rogue_pem = Chain { der: vec![pki().certs["rogue-root"].clone()], key_pem: String::new() }.pem();
    std::fs::write(&rogue, rogue_pem).expect("rogue");
    let (dns, http, clock) =
        (Arc::new(FakeDns::default()), Arc::new(FakeHttp::default()), Arc::new(FakeClock::default()));
    dns.set_records(&["v=STSv1; id=r1"]);
    http.set_body(ENFORCE);
    let process = |anchors: &std::path::Path| {
        Engine::builder(Arc::clone(&dns), Arc::clone(&http))
            .clock(Arc::clone(&clock))
            .trust_anchors(TrustAnchors::from_pem_file_lazy(anchors))
            .timing(Timing::default())
            .store(RedisStore::open(&server.url, 300).expect("redis"))
            .build()
    };
    let check = |e: &Engine, chain: &Chain| {
        let pem = chain.pem();
        let o =
            e.check_with("example.test", "mx.example.test", Tls::Chain(pem.as_bytes()), Dane::NotApplicable);
        let o = o.expect("check");
        (o.verdict, o.reason)
    };
    let mx = &pki().chains["mx"];
    let first = process(&roots);
    assert_eq!(check(&first, mx), (Verdict::Pass, Reason::None));
    assert!(first.cert_verifier().anchors().is_loaded());
    let next = process(&roots);
    assert_eq!(check(&next, mx), (Verdict::Pass, Reason::None));
    assert!(!next.cert_verifier().anchors().is_loaded(), "found in Redis: the roots were not read");
    let other = process(&rogue);
    assert_eq!(check(&other, mx), (Verdict::FailEnforce, Reason::CertificateNotTrusted));
    // Failures are not kept: the untrusted chain is validated by every process.
    for _ in 0..2 {
        let e = process(&roots);
        assert_eq!(
            check(&e, &pki().chains["untrusted"]),
            (Verdict::FailEnforce, Reason::CertificateNotTrusted)
        );
        assert!(e.cert_verifier().anchors().is_loaded());
    }
    let mut c =
        redis::Client::open(server.url.as_str()).expect("client").get_connection().expect("connection");
    let keys: Vec<String> = redis::cmd("KEYS").arg("mtasts:verified:*").query(&mut c).expect("keys");
    assert_eq!(keys.len(), 1, "{keys:?}");
    let ttl: i64 = redis::cmd("TTL").arg(&keys[0]).query(&mut c).expect("ttl");
    assert!((86_300..=86_400).contains(&ttl), "a day, by the engine's clock: {ttl}");
    std::fs::remove_dir_all(&dir).expect("cleanup");
}
