//! The real DNS client (`mtasts::dns`) against the local DNS fixture (127.0.0.1 only).
//!
//! Tests are named after the requirement id they cover (docs/conformance.md); transport and
//! process-model tests without an id are named after what they check (docs/architecture.md §3 for
//! fork safety).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mtasts::cache::Failure;
use mtasts::dns::{DnsResolver, DnsSettings, Lifetime, MxRecord};
use mtasts::engine::{AddressResolver, DnsError, Fetcher, Resolver};
use mtasts::{Domain, Engine, Reason, TrustAnchors, Verdict};
use mtasts_fixtures::dns::{DnsServer, QueryLog};
use parking_lot::Mutex;

const NAME: &str = "_mta-sts.example.test";

fn server() -> DnsServer {
    DnsServer::start().expect("start the DNS fixture")
}

/// A resolver asking only the fixture. The timeout is generous: the machine is shared.
fn resolver(server: &DnsServer) -> DnsResolver {
    resolver_with_timeout(server, Duration::from_secs(3))
}

fn resolver_with_timeout(server: &DnsServer, timeout: Duration) -> DnsResolver {
    DnsResolver::new(DnsSettings { nameservers: vec![server.addr()], timeout, ..DnsSettings::default() })
}

fn strings(records: Vec<Vec<u8>>) -> Vec<String> {
    records.into_iter().map(|r| String::from_utf8(r).expect("ASCII record")).collect()
}

fn asked(log: &[QueryLog]) -> Vec<(String, String)> {
    log.iter().map(|q| (q.name.to_ascii_lowercase(), q.qtype.clone())).collect()
}

fn temporary(result: Result<Vec<Vec<u8>>, DnsError>) -> String {
    match result {
        Err(DnsError::Temporary(detail)) => detail,
        other => panic!("expected a temporary error, got {other:?}"),
    }
}

#[test]
fn defaults_use_the_system_configuration_and_five_seconds() {
    let d = DnsSettings::default();
    assert!(d.nameservers.is_empty());
    assert_eq!(d.timeout, Duration::from_secs(5));
}

/// DISC-1: one TXT record at `_mta-sts.<domain>` comes back as it is.
#[test]
fn disc_1_single_txt_record() {
    let server = server();
    server.set_txt1(NAME, &["v=STSv1; id=20240101T000000"]);
    let records = resolver(&server).txt(NAME).expect("lookup");
    assert_eq!(strings(records), ["v=STSv1; id=20240101T000000"]);
}

/// HOST-4 / DISC-1: a TXT lookup of `_mta-sts.example.test` sends exactly one question, for
/// exactly that name (absolute: no search list, no local domain appended).
#[test]
fn host_4_one_query_for_exactly_the_name_asked() {
    let server = server();
    server.set_txt1(NAME, &["v=STSv1; id=a"]);
    resolver(&server).txt(NAME).expect("lookup");
    assert_eq!(asked(&server.queries()), [(NAME.to_owned(), "TXT".to_owned())]);
}

/// HOST-4: a policy published only at the parent is not found, and the parent is not asked.
#[test]
fn host_4_no_walking_up_to_the_parent() {
    let server = server();
    server.set_txt1(NAME, &["v=STSv1; id=a"]);
    let sub = "_mta-sts.mail.example.test";
    assert_eq!(resolver(&server).txt(sub), Err(DnsError::NotFound));
    assert_eq!(asked(&server.queries()), [(sub.to_owned(), "TXT".to_owned())]);
}

/// DISC-6: the character-strings of one TXT record are joined with nothing between them.
#[test]
fn disc_6_multi_string_txt_joined_without_separator() {
    let server = server();
    server.set_txt(NAME, &[&["v=STSv1; id=ab", "cd"]]);
    server.set_txt("_mta-sts.two.test", &[&["v=STSv1;", " id=x"]]);
    let r = resolver(&server);
    assert_eq!(strings(r.txt(NAME).expect("lookup")), ["v=STSv1; id=abcd"]);
    assert_eq!(strings(r.txt("_mta-sts.two.test").expect("lookup")), ["v=STSv1; id=x"]);
}

/// DISC-3: the whole RRset comes back, non-STS records included and unchanged; choosing is
/// `txt::select`'s job.
#[test]
fn disc_3_several_txt_records_returned_as_is() {
    let server = server();
    server.set_txt(NAME, &[&["v=spf1 -all"], &["v=STSv1; id=a"], &["hello", " ", "world"]]);
    let mut got = strings(resolver(&server).txt(NAME).expect("lookup"));
    got.sort();
    assert_eq!(got, ["hello world", "v=STSv1; id=a", "v=spf1 -all"]);
}

/// DISC-13: `_mta-sts.<domain>` delegated by CNAME; the answer carries the CNAME and the
/// target's TXT record, and only the TXT data is returned.
#[test]
fn disc_13_cname_delegated_record_resolved_to_target_txt() {
    let server = server();
    server.set_cname("_mta-sts.user.test", "_mta-sts.provider.test");
    server.set_txt1("_mta-sts.provider.test", &["v=STSv1; id=provider1"]);
    let records = resolver(&server).txt("_mta-sts.user.test").expect("lookup");
    assert_eq!(strings(records), ["v=STSv1; id=provider1"]);
}

/// DISC-13: when the answer holds the CNAME alone, the client asks for the target itself.
#[test]
fn disc_13_cname_target_asked_separately() {
    let server = server();
    server.set_follow_cnames(false);
    server.set_cname("_mta-sts.user.test", "_mta-sts.provider.test");
    server.set_txt1("_mta-sts.provider.test", &["v=STSv1; id=provider1"]);
    let records = resolver(&server).txt("_mta-sts.user.test").expect("lookup");
    assert_eq!(strings(records), ["v=STSv1; id=provider1"]);
    assert_eq!(
        asked(&server.queries()),
        [
            ("_mta-sts.user.test".to_owned(), "TXT".to_owned()),
            ("_mta-sts.provider.test".to_owned(), "TXT".to_owned())
        ]
    );
}

/// DISC-13 / DISC-14: a CNAME to a name without TXT records is NODATA.
#[test]
fn disc_13_cname_to_a_name_without_txt_is_not_found() {
    let server = server();
    server.set_cname("_mta-sts.user.test", "elsewhere.provider.test");
    server.set_a("elsewhere.provider.test", Ipv4Addr::new(192, 0, 2, 1));
    assert_eq!(resolver(&server).txt("_mta-sts.user.test"), Err(DnsError::NotFound));
}

/// DISC-14: NXDOMAIN is "not found".
#[test]
fn disc_14_nxdomain_is_not_found() {
    let server = server();
    assert_eq!(resolver(&server).txt(NAME), Err(DnsError::NotFound));
}

/// DISC-14: NODATA (the name has only an A record) is "not found".
#[test]
fn disc_14_nodata_is_not_found() {
    let server = server();
    server.set_a(NAME, Ipv4Addr::new(192, 0, 2, 1));
    assert_eq!(resolver(&server).txt(NAME), Err(DnsError::NotFound));
}

/// DISC-14: SERVFAIL is a temporary error whose detail names the code and the server.
#[test]
fn disc_14_servfail_is_temporary() {
    let server = server();
    server.set_servfail(NAME);
    let detail = temporary(resolver(&server).txt(NAME));
    assert_eq!(detail, format!("SERVFAIL from {}", server.addr()));
}

/// DISC-14: REFUSED is a temporary error.
#[test]
fn disc_14_refused_is_temporary() {
    let server = server();
    server.set_refused(NAME);
    let detail = temporary(resolver(&server).txt(NAME));
    assert_eq!(detail, format!("REFUSED from {}", server.addr()));
}

/// DISC-14: a server that never answers gives a temporary error after about the configured
/// timeout (300 ms), not after hickory's (attempts + 1) x timeout. Only a generous bound is
/// asserted: the machine is shared.
#[test]
fn disc_14_silent_server_times_out_as_temporary() {
    let server = server();
    server.set_silent(NAME);
    let r = resolver_with_timeout(&server, Duration::from_millis(300));
    let start = Instant::now();
    let detail = temporary(r.txt(NAME));
    let elapsed = start.elapsed();
    assert!(detail.starts_with("timed out after 300 ms"), "{detail}");
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    assert!(!server.queries().is_empty());
}

/// Transport: a truncated UDP answer (TC=1) is asked again over TCP, and the lookup succeeds.
#[test]
fn truncated_udp_answer_is_retried_over_tcp() {
    let server = server();
    server.set_truncate_udp(true);
    server.set_txt1(NAME, &["v=STSv1; id=tcp1"]);
    let records = resolver(&server).txt(NAME).expect("lookup");
    assert_eq!(strings(records), ["v=STSv1; id=tcp1"]);
    let log = server.queries();
    assert!(log.iter().any(|q| !q.tcp), "a UDP query first: {log:?}");
    assert!(log.iter().any(|q| q.tcp && q.name.eq_ignore_ascii_case(NAME)), "then TCP: {log:?}");
}

/// Transport: an RRset larger than the client's EDNS payload size is truncated over UDP by the
/// server and fetched whole over TCP.
#[test]
fn large_txt_rrset_is_fetched_over_tcp() {
    let server = server();
    let long: Vec<String> = (0..12).map(|i| format!("filler-{i:02}-{}", "x".repeat(200))).collect();
    let refs: Vec<&str> = long.iter().map(String::as_str).collect();
    server.set_txt1(NAME, &refs);
    let mut got = strings(resolver(&server).txt(NAME).expect("lookup"));
    got.sort();
    assert_eq!(got, long);
    assert!(server.queries().iter().any(|q| q.tcp));
}

/// MX-2 / MX-9: MX records come back by preference, exchange names as published (no trailing
/// dot); a domain without MX records is "not found" (the caller then uses the implicit MX).
#[test]
fn mx_2_mx_records_sorted_by_preference() {
    let server = server();
    server.set_mx(
        "example.test",
        &[(20, "mx2.example.test"), (5, "MX0.Example.TEST"), (10, "mx1.example.test")],
    );
    let domain = Domain::parse("example.test").expect("domain");
    let mx = resolver(&server).mx(&domain).expect("lookup");
    let want = [(5, "mx0.example.test"), (10, "mx1.example.test"), (20, "mx2.example.test")]
        .map(|(preference, exchange)| MxRecord { preference, exchange: exchange.to_owned() });
    assert_eq!(mx, want);
    assert_eq!(asked(&server.queries()), [("example.test".to_owned(), "MX".to_owned())]);
}

/// MX-9: no MX records (NODATA or NXDOMAIN) is "not found".
#[test]
fn mx_9_no_mx_records_is_not_found() {
    let server = server();
    server.set_a("example.test", Ipv4Addr::new(192, 0, 2, 1));
    let r = resolver(&server);
    assert_eq!(r.mx(&Domain::parse("example.test").expect("domain")), Err(DnsError::NotFound));
    assert_eq!(r.mx(&Domain::parse("nowhere.test").expect("domain")), Err(DnsError::NotFound));
}

/// HOST-2: the policy host is resolved to its A and AAAA addresses, IPv4 first.
#[test]
fn host_2_policy_host_addresses_a_and_aaaa() {
    let server = server();
    let v4 = Ipv4Addr::new(127, 0, 0, 1);
    let v6 = Ipv6Addr::LOCALHOST;
    server.set_aaaa("mta-sts.example.test", v6);
    server.set_a("mta-sts.example.test", v4);
    server.set_a("v4only.example.test", v4);
    server.set_aaaa("v6only.example.test", v6);
    let r = resolver(&server);
    assert_eq!(r.addresses("mta-sts.example.test"), Ok(vec![IpAddr::V4(v4), IpAddr::V6(v6)]));
    assert_eq!(r.addresses("v4only.example.test"), Ok(vec![IpAddr::V4(v4)]));
    assert_eq!(r.addresses("v6only.example.test"), Ok(vec![IpAddr::V6(v6)]));
    assert_eq!(r.addresses("missing.example.test"), Err(DnsError::NotFound));
    server.set_servfail("broken.example.test");
    assert!(matches!(r.addresses("broken.example.test"), Err(DnsError::Temporary(_))));
    let log = server.queries();
    let first = asked(&log[..2]);
    assert!(first.contains(&("mta-sts.example.test".to_owned(), "A".to_owned())), "{log:?}");
    assert!(first.contains(&("mta-sts.example.test".to_owned(), "AAAA".to_owned())), "{log:?}");
}

/// Addresses through a CNAME (the policy host may be delegated, HOST-6).
#[test]
fn host_6_policy_host_cname_is_followed() {
    let server = server();
    server.set_cname("mta-sts.user.test", "mta-sts.provider.test");
    server.set_a("mta-sts.provider.test", Ipv4Addr::new(127, 0, 0, 2));
    let got = resolver(&server).addresses("mta-sts.user.test");
    assert_eq!(got, Ok(vec![IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))]));
}

/// docs/architecture.md §3: the resolver keeps nothing between calls, so changes in DNS show at once and
/// each call asks again (no cache).
#[test]
fn nothing_is_cached_between_calls() {
    let server = server();
    let r = resolver(&server);
    server.set_txt1(NAME, &["v=STSv1; id=one"]);
    assert_eq!(strings(r.txt(NAME).expect("lookup")), ["v=STSv1; id=one"]);
    server.set_txt1(NAME, &["v=STSv1; id=two"]);
    assert_eq!(strings(r.txt(NAME).expect("lookup")), ["v=STSv1; id=two"]);
    server.remove(NAME);
    assert_eq!(r.txt(NAME), Err(DnsError::NotFound));
    assert_eq!(server.queries().len(), 3);
}

/// `Lifetime::PerThread` (`mtasts serve`): the thread's kept resolver still asks on every call
/// (its response cache is emptied first), TXT and address lookups alike, and sees changes at once.
#[test]
fn a_resolver_kept_per_thread_asks_again_on_every_call() {
    let server = server();
    let r = resolver(&server).with_lifetime(Lifetime::PerThread);
    server.set_txt1(NAME, &["v=STSv1; id=one"]);
    server.set_a("mta-sts.example.test", Ipv4Addr::new(127, 0, 0, 1));
    assert_eq!(strings(r.txt(NAME).expect("lookup")), ["v=STSv1; id=one"]);
    assert_eq!(strings(r.txt(NAME).expect("lookup")), ["v=STSv1; id=one"]);
    server.set_txt1(NAME, &["v=STSv1; id=two"]);
    assert_eq!(strings(r.txt(NAME).expect("lookup")), ["v=STSv1; id=two"]);
    let v4 = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
    assert_eq!(r.addresses("mta-sts.example.test"), Ok(vec![v4]));
    assert_eq!(r.addresses("mta-sts.example.test"), Ok(vec![v4]));
    server.remove(NAME);
    assert_eq!(r.txt(NAME), Err(DnsError::NotFound));
    let log = asked(&server.queries());
    assert_eq!(log.iter().filter(|(_, t)| t == "TXT").count(), 4, "{log:?}");
    assert_eq!(log.iter().filter(|(_, t)| t == "A").count(), 2, "{log:?}");
    assert_eq!(log.iter().filter(|(_, t)| t == "AAAA").count(), 2, "{log:?}");
}

/// `Lifetime::PerThread`: a call that runs out of time leaves the kept resolver usable, and the
/// next call has its whole deadline (nothing of the abandoned query is in its way).
#[test]
fn a_resolver_kept_per_thread_works_after_a_timeout() {
    let server = server();
    server.set_silent(NAME);
    server.set_txt1("_mta-sts.after.test", &["v=STSv1; id=after"]);
    server.set_a("mta-sts.after.test", Ipv4Addr::new(127, 0, 0, 1));
    let r = resolver_with_timeout(&server, Duration::from_millis(300)).with_lifetime(Lifetime::PerThread);
    assert!(temporary(r.txt(NAME)).starts_with("timed out after 300 ms"));
    assert_eq!(strings(r.txt("_mta-sts.after.test").expect("lookup")), ["v=STSv1; id=after"]);
    server.set_silent("mta-sts.silent.test");
    assert!(matches!(r.addresses("mta-sts.silent.test"), Err(DnsError::Temporary(_))));
    assert_eq!(r.addresses("mta-sts.after.test"), Ok(vec![IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1))]));
}

/// `Lifetime::PerThread`: resolvers with other settings on one thread (a reload of `mtasts serve`
/// that changes `[dns] nameservers`) each ask their own servers.
#[test]
fn resolvers_kept_per_thread_ask_the_servers_of_their_settings() {
    let (one, two) = (server(), server());
    one.set_txt1(NAME, &["v=STSv1; id=one"]);
    two.set_txt1(NAME, &["v=STSv1; id=two"]);
    let r1 = resolver(&one).with_lifetime(Lifetime::PerThread);
    let r2 = resolver(&two).with_lifetime(Lifetime::PerThread);
    for _ in 0..2 {
        assert_eq!(strings(r1.txt(NAME).expect("lookup")), ["v=STSv1; id=one"]);
        assert_eq!(strings(r2.txt(NAME).expect("lookup")), ["v=STSv1; id=two"]);
    }
    assert_eq!(one.queries().len(), 2);
    assert_eq!(two.queries().len(), 2);
    // And from another thread, which keeps its own.
    std::thread::scope(|s| {
        s.spawn(|| assert_eq!(strings(r2.txt(NAME).expect("lookup")), ["v=STSv1; id=two"]));
    });
    assert_eq!(two.queries().len(), 3);
}

/// Waits for a child with a deadline; kills it if it hangs.
fn wait_child(pid: libc::pid_t) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut status = 0;
    loop {
        // SAFETY: plain waitpid on our own child, with a valid pointer to `status`.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            assert!(libc::WIFEXITED(status), "child {pid} did not exit normally: status {status}");
            return libc::WEXITSTATUS(status);
        }
        assert_eq!(r, 0, "waitpid failed");
        if Instant::now() > deadline {
            // SAFETY: killing and reaping our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            panic!("child {pid} hung");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The number of threads of this process (Linux).
fn threads() -> Option<usize> {
    std::fs::read_dir("/proc/self/task").ok().map(Iterator::count)
}

/// Forks a child that does one TXT lookup and exits 0 on success, 1 on failure, 2 on panic,
/// 3 when a thread outlived the lookup.
fn fork_lookup(resolver: &DnsResolver) -> libc::pid_t {
    // SAFETY: the child only runs the lookup (a fresh runtime, sockets, no locks shared with
    // other threads of the test process) and leaves with `_exit`, running no destructors and no
    // test-harness code.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let ok = std::panic::catch_unwind(|| {
            resolver.txt(NAME).is_ok_and(|r| r == [b"v=STSv1; id=fork".to_vec()])
        });
        let code = match ok {
            // The child has one thread (fork copies only the caller); the lookup must leave it so.
            Ok(true) if threads() != Some(1) => 3,
            Ok(true) => 0,
            Ok(false) => 1,
            Err(_) => 2,
        };
        // SAFETY: ends the child at once.
        unsafe { libc::_exit(code) };
    }
    pid
}

/// docs/architecture.md §3 (fork safety): children forked after the parent used the resolver can use it,
/// start no thread that outlives the call, and send their queries with different (id, source
/// port) pairs. Without the reseed on a new pid, both
/// children would inherit the parent's generator and send identical ones. The children run
/// one after the other, so neither can push the other off a port.
#[test]
fn fork_children_send_different_query_ids_and_ports() {
    fork_children(Lifetime::PerCall);
}

/// The same with the runtime and resolver kept per thread (`mtasts serve`'s mode): the slot the
/// parent's thread kept is not used in the children (each builds its own), and the parent's
/// still works after the forks.
#[test]
fn fork_children_of_a_thread_that_keeps_its_resolver_build_their_own() {
    fork_children(Lifetime::PerThread);
}

fn fork_children(lifetime: Lifetime) {
    let server = server();
    server.set_txt1(NAME, &["v=STSv1; id=fork"]);
    let r = resolver(&server).with_lifetime(lifetime);
    // The parent's lookup seeds this thread's generator before the forks.
    r.txt(NAME).expect("parent lookup");
    server.clear_queries();

    let first = fork_lookup(&r);
    assert_eq!(wait_child(first), 0, "first child's lookup");
    let after_first = server.queries().len();
    let second = fork_lookup(&r);
    assert_eq!(wait_child(second), 0, "second child's lookup");

    let log = server.queries();
    assert!(after_first >= 1 && log.len() > after_first, "{log:?}");
    let (a, b) = (&log[0], &log[after_first]);
    assert_ne!((a.id, a.src.port()), (b.id, b.src.port()), "children repeated the (id, port) pair: {log:?}");
    // And the parent still works after forking.
    r.txt(NAME).expect("parent lookup after the forks");
}

/// A fetcher counting requests, always serving one policy.
struct CountingFetcher {
    body: &'static str,
    fetches: AtomicUsize,
    hosts: Mutex<Vec<String>>,
}

impl Fetcher for CountingFetcher {
    fn fetch(&self, domain: &Domain) -> Result<Vec<u8>, Failure> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        self.hosts.lock().push(domain.policy_host());
        Ok(self.body.as_bytes().to_vec())
    }
}

const ENFORCE: &str = "version: STSv1\nmode: enforce\nmx: mx.example.test\nmax_age: 86400\n";

fn engine(server: &DnsServer) -> (Engine, Arc<CountingFetcher>) {
    let fetcher =
        Arc::new(CountingFetcher { body: ENFORCE, fetches: AtomicUsize::new(0), hosts: Mutex::default() });
    let engine =
        Engine::builder(resolver(server), Arc::clone(&fetcher)).trust_anchors(TrustAnchors::webpki()).build();
    (engine, fetcher)
}

/// DISC-1 end to end: a TXT record served by the fixture leads the engine to one fetch, and the
/// fetched policy applies.
#[test]
fn disc_1_engine_end_to_end_one_fetch() {
    let server = server();
    server.set_txt1(NAME, &["v=spf1 -all", "v=STSv1; id=e2e"]);
    let (engine, fetcher) = engine(&server);
    let outcome = engine.check_mx("example.test", "mx.example.test").expect("check");
    assert_eq!(outcome.verdict, Verdict::Pass);
    let outcome = engine.check_mx("example.test", "other.example.test").expect("check");
    assert_eq!(outcome.verdict, Verdict::FailEnforce);
    assert_eq!(fetcher.fetches.load(Ordering::SeqCst), 1);
    assert_eq!(*fetcher.hosts.lock(), ["mta-sts.example.test"]);
    assert_eq!(asked(&server.queries()), [(NAME.to_owned(), "TXT".to_owned())]);
}

/// DISC-13 / HOST-6 end to end: a delegated record is found through the CNAME, and the policy
/// is still fetched from `mta-sts.<policy domain>`.
#[test]
fn disc_13_engine_delegated_record_fetches_from_the_policy_domain() {
    let server = server();
    server.set_cname("_mta-sts.user.test", "_mta-sts.provider.test");
    server.set_txt1("_mta-sts.provider.test", &["v=STSv1; id=p1"]);
    let (engine, fetcher) = engine(&server);
    let outcome = engine.check_mx("user.test", "mx.example.test").expect("check");
    assert_eq!(outcome.verdict, Verdict::Pass);
    assert_eq!(*fetcher.hosts.lock(), ["mta-sts.user.test"]);
}

/// DISC-14 end to end: SERVFAIL with nothing cached means no policy and no fetch, and the
/// reason carries the resolver's detail.
#[test]
fn disc_14_engine_servfail_means_no_policy() {
    let server = server();
    server.set_servfail(NAME);
    let (engine, fetcher) = engine(&server);
    let resolution = engine.policy("example.test").expect("input").expect("a policy domain");
    assert!(resolution.policy.is_none());
    let error = resolution.error.expect("an error");
    assert_eq!(error.reason, Reason::StsPolicyFetchError);
    assert!(error.detail.contains("SERVFAIL from 127.0.0.1:"), "{}", error.detail);
    assert_eq!(fetcher.fetches.load(Ordering::SeqCst), 0);
    let outcome = engine.check_mx("example.test", "anything.example.test").expect("check");
    assert_eq!(outcome.verdict, Verdict::NoPolicy);
}
