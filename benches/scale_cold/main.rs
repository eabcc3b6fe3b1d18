//! Cold lookups and failing domains at scale (issue 17, items 3 and 4): `mtasts serve` answering
//! thousands of distinct domains nobody has looked up yet, over many socketmap connections, against
//! the local DNS and HTTPS fixtures serving generated domains (certificates issued on the fly by
//! SNI), beside the fixtures' own ceiling measured in the same run.
//!
//! ```text
//! cargo bench --bench scale_cold -- [--domains 2000] [--conns 32] [--reps 3] [--passes 10]
//!     [--store sqlite|memory] [--mtasts PATH] [--compare PATH] [--dane]
//! cargo bench --bench scale_cold -- --breakdown [--domains 2000]
//! ```
//!
//! Each repetition uses fresh generated names (`dN.cR.scale.test`, `dN.nR.scale.test`,
//! `dN.mR.scale.test`, `dN.fR.scale.test`), so nothing is cached by anyone, and measures in turn:
//!
//! 1. **ceiling**: a client that only does what a cold lookup cannot avoid, the TXT lookup of
//!    `_mta-sts.<domain>` (UDP, one query), the policy host's A and AAAA lookups (UDP, both
//!    queries sent at once, the connection made to the A answer: a fetch cannot connect without
//!    resolving the host, and a client that may use either family asks for both) and the HTTPS
//!    GET of the policy (TCP, TLS with the certificate validated against the test CA, no session
//!    resumption, `Connection: close`; a DNS question unanswered after a second is asked again,
//!    as any stub resolver does), for `domains` distinct domains at `conns` concurrent
//!    clients. It shows how fast the fixtures (and the loopback, and the machine) can serve cold
//!    lookups at all. The same without the address lookups (connecting to 127.0.0.1 directly, the
//!    ceiling of the first version of this bench) is measured too, for comparison.
//! 2. **cold**: `mtasts serve` (release binary, the configured store) asked for `domains` other
//!    distinct domains over `conns` socketmap connections, one request outstanding per connection
//!    as a Postfix smtp(8) process has: each lookup is a TXT lookup, the policy host's A and AAAA
//!    lookups, the HTTPS fetch, the parse, the store write, and the reply.
//! 3. **cached**: the same domains again, `passes` times over (10 by default, so that the round
//!    lasts long enough to measure): the cached path, the baseline of item 4.
//! 4. **failing, first round**: `domains` distinct domains whose TXT record is there and whose
//!    policy host (127.0.0.2) refuses connections on the HTTPS port.
//! 5. **failing, second round**: the same domains again (`passes` times over), within
//!    `[engine] no_policy_interval` and `fetch_retry_interval`: answered from the negative cache,
//!    no DNS and no connection.
//!
//! Rates are the lookups of a round over the wall time from the start of its first lookup to the
//! end of its last; latencies are per lookup (write of the request to the last byte of the reply). The
//! bench fails if any reply is wrong, if `mtasts serve` fetched a policy more or less than once
//! per domain (counted at the HTTPS fixture), or if the second round of failing domains asked DNS
//! or connected anywhere (counted at the DNS fixture: no address lookup, no connection).
//! The median repetition (by rate) of each measurement is reported, with the CPU time per lookup
//! of `mtasts serve` and of this process (fixtures and clients), from `/proc`; the ratios (cold
//! to ceiling, negative cache to cached path) are taken within each repetition, and their median
//! reported.
//!
//! `--mtasts PATH` measures another `mtasts` binary than this build's (a copy of an earlier build,
//! to compare two versions in one session). `--compare PATH` runs a second `mtasts serve` from
//! PATH beside the first, with its own store, and asks it for another set of cold domains in
//! every repetition, right before or right after the first one's cold round (alternating), so
//! that both see the same load; the report adds its cold round and the paired difference of CPU
//! per cold lookup.
//!
//! `--dane` turns DANE on: the DNS fixture serves every name of every repetition from signed
//! zones instead (`test.` and `scale.test.`, signed by the fixture before the first round; each
//! domain also has an MX record, `mx.scale.test`, which publishes no TLSA records), and `mtasts
//! serve` runs with `[dns] dnssec = "validate"` and the zones' trust anchor, so each cold lookup
//! also makes the validated MX lookup of the domain (and, once, the TLSA lookup of the MX host)
//! that DANE needs. The ceiling client is unchanged (plain queries, answered without signatures).
//!
//! `--breakdown` measures instead, on one thread, the CPU time per call of each step of a cold
//! lookup alone (the TXT lookup, the policy host's address lookup, the fetch, and with DANE the
//! validated MX lookup, per call and kept per thread) and of the ceiling client's lookup, to show
//! where a cold lookup's time goes.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

#[path = "../support/socketmap_client.rs"]
mod socketmap_client;

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RData, RecordType};
use mtasts_fixtures::dns::DnsServer;
use mtasts_fixtures::https::{HttpsServer, Response};
use mtasts_fixtures::pki::pki;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use socketmap_client::Conn;

/// The policy every generated domain publishes.
const POLICY: &str = "version: STSv1\nmode: enforce\nmx: *.scale.test\nmax_age: 604800\n";
/// The reply of `mtasts serve` for it.
const OK_REPLY: &str = "OK secure match=.scale.test servername=hostname";
/// Where the failing domains' policy hosts are: nothing listens there.
const REFUSING: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opt = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let domains: usize = opt("--domains").map_or(2000, |s| s.parse().expect("--domains"));
    let conns: usize = opt("--conns").map_or(32, |s| s.parse().expect("--conns"));
    let reps: usize = opt("--reps").map_or(3, |s| s.parse().expect("--reps"));
    // Passes over the domains for the cached and negative-cache rounds, so that they last long
    // enough to be measured.
    let passes: usize = opt("--passes").map_or(10, |s| s.parse().expect("--passes"));
    let store = opt("--store").unwrap_or_else(|| "sqlite".into());
    if args.iter().any(|a| a == "--breakdown") {
        breakdown(domains);
        return;
    }
    assert!(store == "sqlite" || store == "memory", "--store sqlite|memory");

    let dir = std::env::temp_dir().join(format!("mtasts-bench-scale-cold-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    pki().write_root(&dir.join("ca.pem")).expect("ca");
    let dns = DnsServer::start().expect("dns fixture");
    let https = HttpsServer::start().expect("https fixture");
    let https_port = https.addr().port();
    // The failing domains' policy hosts must refuse: nothing may listen at 127.0.0.2 on the port.
    assert!(
        TcpStream::connect((REFUSING, https_port)).is_err(),
        "something listens on {REFUSING}:{https_port}"
    );
    let binary = opt("--mtasts").map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_mtasts")), PathBuf::from);
    let dane = args.iter().any(|a| a == "--dane");
    if dane {
        sign_all(&dns, &dir, reps, domains);
    }
    let mut serve = Serve::start(&binary, &dir, &dns, &https, &store, dane);
    let mut other = opt("--compare").map(|path| {
        let dir = dir.join("compare");
        std::fs::create_dir_all(&dir).expect("compare dir");
        pki().write_root(&dir.join("ca.pem")).expect("ca");
        std::fs::copy(dir.parent().expect("parent").join("anchor"), dir.join("anchor")).ok();
        Serve::start(Path::new(&path), &dir, &dns, &https, &store, dane)
    });
    let mut compared: Vec<(Run, Run)> = Vec::new();
    let tls = ceiling_tls();

    let mut runs: [Vec<Run>; 6] = Default::default();
    for rep in 0..reps {
        let set = |tag: char| -> (String, Vec<String>) {
            let suffix = format!("{tag}{rep}.scale.test");
            let names = (0..domains).map(|i| format!("d{i}.{suffix}")).collect();
            (suffix, names)
        };
        let (c_suffix, c_names) = set('c');
        let (n_suffix, n_names) = set('n');
        let (m_suffix, m_names) = set('m');
        let (f_suffix, f_names) = set('f');
        let (b_suffix, b_names) = set('b');
        for s in [&c_suffix, &n_suffix, &m_suffix, &b_suffix] {
            dns.generate(s, "s1", Ipv4Addr::LOCALHOST);
            https.generate(s, Response::policy(POLICY));
        }
        dns.generate(&f_suffix, "s1", REFUSING);

        // 1. The ceiling, and the same without the policy host's address lookup.
        let dns_addr = dns.addr();
        let tls = Arc::clone(&tls);
        let pid = serve.child.id();
        let ceiling_of = |names: &[String], resolve_host: bool| {
            let run = with_cpu(pid, domains, || {
                drive(
                    conns,
                    names,
                    || UdpSocket::bind("127.0.0.1:0").expect("udp"),
                    |sock, name| ceiling_lookup(sock, dns_addr, &tls, https_port, name, resolve_host),
                )
            });
            for r in &run.replies {
                assert!(r.ends_with(POLICY.as_bytes()), "ceiling: bad policy {:?}", show(r));
            }
            run
        };
        let ceiling = ceiling_of(&c_names, true);
        report_line(rep, "ceiling (TXT, A+AAAA, GET)", &ceiling);
        let no_host = ceiling_of(&n_names, false);
        report_line(rep, "ceiling without A+AAAA", &no_host);

        // 2. and 3. Cold, then cached.
        let fetched_before = requests_under(&https, &m_suffix);
        let compare_cold = |other: &Serve| {
            let run = with_cpu(other.child.id(), domains, || socketmap(conns, &b_names, other.port));
            report_line(rep, "--compare serve, cold", &run);
            for r in &run.replies {
                assert_eq!(show(r), OK_REPLY, "--compare serve: wrong reply");
            }
            run
        };
        let before = other.as_ref().filter(|_| rep % 2 == 1).map(compare_cold);
        let cold = with_cpu(pid, domains, || socketmap(conns, &m_names, serve.port));
        report_line(rep, "mtasts serve, cold", &cold);
        if let Some(b) = before.or_else(|| other.as_ref().map(compare_cold)) {
            compared.push((Run { serve_cpu_us: cold.serve_cpu_us, rate: cold.rate, ..Run::default() }, b));
        }
        let again = |names: &[String]| -> Vec<String> {
            names.iter().cycle().take(names.len() * passes).cloned().collect()
        };
        let cached = with_cpu(pid, domains * passes, || socketmap(conns, &again(&m_names), serve.port));
        report_line(rep, "mtasts serve, cached", &cached);
        for r in cold.replies.iter().chain(&cached.replies) {
            assert_eq!(show(r), OK_REPLY, "mtasts serve: wrong reply");
        }
        let fetched = requests_under(&https, &m_suffix) - fetched_before;
        assert_eq!(fetched, domains, "mtasts serve fetched {fetched} policies for {domains} domains");

        // 4. and 5. Failing domains, twice.
        let fail1 = with_cpu(pid, domains, || socketmap(conns, &f_names, serve.port));
        report_line(rep, "mtasts serve, failing 1st", &fail1);
        let asked = dns.queries().len();
        let fail2 = with_cpu(pid, domains * passes, || socketmap(conns, &again(&f_names), serve.port));
        report_line(rep, "mtasts serve, failing 2nd", &fail2);
        assert_eq!(dns.queries().len(), asked, "the second round of failing domains asked DNS");
        for pass in fail2.replies.chunks(domains) {
            assert_eq!(fail1.replies, pass, "the failing domains' replies changed");
        }
        let host_lookups = dns
            .queries()
            .iter()
            .filter(|q| q.name.starts_with("mta-sts.") && q.name.ends_with(&f_suffix) && q.qtype == "A")
            .count();
        assert_eq!(host_lookups, domains, "policy host lookups (connection attempts) of failing domains");

        for (all, run) in runs.iter_mut().zip([ceiling, cold, cached, fail1, fail2, no_host]) {
            all.push(run);
        }
    }
    serve.check_stderr();
    serve.stop();
    if let Some(other) = other.as_mut() {
        other.check_stderr();
        other.stop();
    }

    // The ratios of each repetition (both sides of a ratio from the same repetition).
    let ratios =
        |a: usize, b: usize| -> Vec<f64> { (0..reps).map(|i| runs[a][i].rate / runs[b][i].rate).collect() };
    let (cold_ratios, negative_ratios, no_host_ratios) = (ratios(1, 0), ratios(4, 2), ratios(1, 5));
    let [ceiling, cold, cached, fail1, fail2, no_host] = runs.map(|mut r| {
        r.sort_by(|a, b| a.rate.total_cmp(&b.rate));
        r.swap_remove(r.len() / 2)
    });
    println!(
        "{}",
        report(
            domains,
            conns,
            reps,
            passes,
            &store,
            [&ceiling, &cold, &cached, &fail1, &fail2, &no_host],
            [&cold_ratios, &negative_ratios, &no_host_ratios]
        )
    );
    if !compared.is_empty() {
        let mut diffs: Vec<f64> = compared.iter().map(|(a, b)| b.serve_cpu_us - a.serve_cpu_us).collect();
        let mut rates: Vec<f64> = compared.iter().map(|(a, b)| b.rate / a.rate).collect();
        let pairs: Vec<String> =
            compared.iter().map(|(a, b)| format!("{:.0}/{:.0}", a.serve_cpu_us, b.serve_cpu_us)).collect();
        diffs.sort_by(f64::total_cmp);
        rates.sort_by(f64::total_cmp);
        println!(
            "- --compare: CPU per cold lookup of `mtasts serve`, this/other by repetition: {}; median difference (other - this) {:+.0} µs; median rate ratio (other / this) {:.2}",
            pairs.join(", "),
            diffs[diffs.len() / 2],
            rates[rates.len() / 2]
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--dane`: signs `test.` and `scale.test.` with every generated name of every repetition (the
/// `_mta-sts` TXT record, the policy host's A record, the domain's MX record `mx.scale.test`),
/// serves them from the DNS fixture and writes their trust anchor to `dir/anchor`.
fn sign_all(dns: &DnsServer, dir: &Path, reps: usize, domains: usize) {
    use hickory_proto::rr::rdata::TXT;
    use mtasts_fixtures::dnssec::{AnchorForm, ZoneSet};
    let began = Instant::now();
    let mut z = ZoneSet::new("test");
    z.zone("scale.test", true);
    z.a("mx.scale.test", Ipv4Addr::LOCALHOST);
    for rep in 0..reps {
        for tag in ['c', 'n', 'm', 'f', 'b'] {
            let addr = if tag == 'f' { REFUSING } else { Ipv4Addr::LOCALHOST };
            for i in 0..domains {
                let domain = format!("d{i}.{tag}{rep}.scale.test");
                z.add(&format!("_mta-sts.{domain}"), RData::TXT(TXT::new(vec!["v=STSv1; id=s1".into()])));
                z.a(&format!("mta-sts.{domain}"), addr);
                z.mx(&domain, 10, "mx.scale.test");
            }
        }
    }
    let zones = z.sign();
    std::fs::write(dir.join("anchor"), format!("{}\n", zones.trust_anchor(AnchorForm::Ds))).expect("anchor");
    dns.serve_zones(zones);
    eprintln!("--dane: signed {} domains in {:.1} s", reps * 5 * domains, began.elapsed().as_secs_f64());
}

/// One measurement: rate and latency percentiles, CPU time per lookup, and the replies in the
/// order of the names.
#[derive(Default)]
struct Run {
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// CPU time of this process (the fixtures and the clients) per lookup, µs.
    own_cpu_us: f64,
    /// CPU time of `mtasts serve` per lookup, µs.
    serve_cpu_us: f64,
    replies: Vec<Vec<u8>>,
}

/// User and system CPU time of process `pid` so far, in seconds (`/proc/PID/stat`).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat(5), 12 and 13 after the name, in USER_HZ
    // ticks (100 a second on Linux).
    (ticks(11) + ticks(12)) / 100.0
}

/// Runs `f` (which looks up `n` names) and adds the CPU time both processes spent per lookup.
fn with_cpu(serve: u32, n: usize, f: impl FnOnce() -> Run) -> Run {
    let (own0, serve0) = (cpu_seconds(std::process::id()), cpu_seconds(serve));
    let mut run = f();
    let (own1, serve1) = (cpu_seconds(std::process::id()), cpu_seconds(serve));
    run.own_cpu_us = (own1 - own0) * 1e6 / n as f64;
    run.serve_cpu_us = (serve1 - serve0) * 1e6 / n as f64;
    run
}

/// CPU time of the calling thread, in µs.
fn thread_cpu_us() -> f64 {
    use nix::time::{ClockId, clock_gettime};
    let t = clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).expect("thread CPU clock");
    t.tv_sec() as f64 * 1e6 + t.tv_nsec() as f64 / 1e3
}

/// Where a cold lookup's CPU time goes: each step of it alone, one thread, `n` distinct domains
/// each, CPU time of the calling thread per call (the fixtures' threads not included).
fn breakdown(n: usize) {
    use mtasts::dns::{DnsResolver, DnsSettings};
    use mtasts::fetch::{FetchSettings, HttpsFetcher};
    use mtasts::ports::{AddressResolver, Fetcher, Resolver};

    let dns = DnsServer::start().expect("dns fixture");
    let https = HttpsServer::start().expect("https fixture");
    let settings = DnsSettings { nameservers: vec![dns.addr()], ..DnsSettings::default() };
    let resolver = DnsResolver::new(settings);
    // What `mtasts serve` uses: the runtime and resolver kept by the calling thread.
    let kept = resolver.clone().with_lifetime(mtasts::dns::Lifetime::PerThread);
    let anchors = mtasts::TrustAnchors::from_pem(pki().root_pem.as_bytes(), "test CA").expect("anchors");
    let mut fetch_settings = FetchSettings::new(anchors);
    fetch_settings.port = https.addr().port();
    let fetcher = HttpsFetcher::new(fetch_settings, Arc::new(resolver.clone()));
    let tls = ceiling_tls();
    let mut sock = UdpSocket::bind("127.0.0.1:0").expect("udp");
    for (tag, what) in [
        ('t', "DnsResolver::txt (one TXT query)"),
        ('a', "DnsResolver::addresses (A + AAAA)"),
        ('k', "the same TXT, resolver kept per thread"),
        ('l', "the same A + AAAA, resolver kept per thread"),
        ('f', "HttpsFetcher::fetch (A + AAAA, TCP, TLS, GET)"),
        ('c', "ceiling client: TXT query + TLS GET"),
        ('h', "ceiling client: TXT, A + AAAA queries, TLS GET"),
    ] {
        let suffix = format!("{tag}.breakdown.test");
        dns.generate(&suffix, "b1", Ipv4Addr::LOCALHOST);
        https.generate(&suffix, Response::policy(POLICY));
        let names: Vec<String> = (0..n).map(|i| format!("d{i}.{suffix}")).collect();
        // Certificates are issued ahead, so that the fixture's work is not in the way.
        for name in &names {
            let _ = ceiling_lookup(&mut sock, dns.addr(), &tls, https.addr().port(), name, false);
        }
        let began = thread_cpu_us();
        let mut walls = Vec::with_capacity(names.len());
        for name in &names {
            let t0 = Instant::now();
            match tag {
                't' => drop(resolver.txt(&format!("_mta-sts.{name}")).expect("txt")),
                'a' => drop(resolver.addresses(&format!("mta-sts.{name}")).expect("addresses")),
                'k' => drop(kept.txt(&format!("_mta-sts.{name}")).expect("txt")),
                'l' => drop(kept.addresses(&format!("mta-sts.{name}")).expect("addresses")),
                'f' => {
                    let domain = mtasts::Domain::parse(name).expect("domain");
                    drop(fetcher.fetch(&domain).expect("fetch"));
                }
                'h' => drop(ceiling_lookup(&mut sock, dns.addr(), &tls, https.addr().port(), name, true)),
                _ => drop(ceiling_lookup(&mut sock, dns.addr(), &tls, https.addr().port(), name, false)),
            }
            walls.push(t0.elapsed());
        }
        print_step(what, (thread_cpu_us() - began) / n as f64, walls);
    }

    // DANE's validated MX lookup of a cold domain (signed zones, a DS trust anchor, as `--dane`):
    // a validator built per call (the library) and one kept per thread (`mtasts serve`).
    let signed = DnsServer::start().expect("dns fixture");
    let dir = std::env::temp_dir().join(format!("mtasts-bench-breakdown-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    sign_all(&signed, &dir, 1, n);
    let validating = DnsResolver::new(DnsSettings {
        nameservers: vec![signed.addr()],
        dnssec: mtasts::dns::DnssecMode::Validate,
        trust_anchor: Some(dir.join("anchor")),
        ..DnsSettings::default()
    });
    let kept_validating = validating.clone().with_lifetime(mtasts::dns::Lifetime::PerThread);
    for (set, what, resolver) in [
        ('c', "DnsResolver::mx_dnssec (validated MX)", &validating),
        ('n', "the same, validator kept per thread", &kept_validating),
    ] {
        let began = thread_cpu_us();
        let mut walls = Vec::with_capacity(n);
        for i in 0..n {
            let domain = mtasts::Domain::parse(&format!("d{i}.{set}0.scale.test")).expect("domain");
            let t0 = Instant::now();
            let got = resolver.mx_dnssec(&domain);
            walls.push(t0.elapsed());
            assert!(
                matches!(
                    got,
                    mtasts::dnssec::MxLookup::Records { security: mtasts::ports::Security::Secure, .. }
                ),
                "{domain}: {got:?}"
            );
        }
        print_step(what, (thread_cpu_us() - began) / n as f64, walls);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// One line of `--breakdown`: the CPU per call and the wall-time percentiles of a step.
fn print_step(what: &str, cpu: f64, mut walls: Vec<Duration>) {
    walls.sort_unstable();
    let at = |p: usize| walls[(walls.len() * p / 100).min(walls.len() - 1)].as_secs_f64() * 1e3;
    println!(
        "{what:<48} {cpu:>7.1} µs CPU per call; wall p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        at(50),
        at(99),
        walls.last().map_or(0.0, |d| d.as_secs_f64() * 1e3)
    );
}

/// Asks `mtasts serve` for every name once, over `conns` connections.
fn socketmap(conns: usize, names: &[String], port: u16) -> Run {
    drive(conns, names, || Conn::connect(port, Duration::from_secs(60)), |c, name| c.lookup(name))
}

/// Looks up every name once, `conns` at a time (one thread each, with its own `state`).
fn drive<S>(
    conns: usize,
    names: &[String],
    state: impl Fn() -> S + Sync,
    lookup: impl Fn(&mut S, &str) -> Vec<u8> + Sync,
) -> Run {
    let next = AtomicUsize::new(0);
    let barrier = Barrier::new(conns + 1);
    let (began, per_thread) = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..conns)
            .map(|_| {
                scope.spawn(|| {
                    let mut s = state();
                    let mut mine = Vec::new();
                    barrier.wait();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(name) = names.get(i) else { break };
                        let t0 = Instant::now();
                        let reply = lookup(&mut s, name);
                        mine.push((i, t0.elapsed(), reply));
                    }
                    (mine, Instant::now())
                })
            })
            .collect();
        barrier.wait();
        let began = Instant::now();
        (began, handles.into_iter().map(|h| h.join().expect("client thread")).collect::<Vec<_>>())
    });
    let ended = per_thread.iter().map(|(_, end)| *end).max().unwrap_or(began);
    let mut replies = vec![Vec::new(); names.len()];
    let mut lat: Vec<Duration> = Vec::with_capacity(names.len());
    for (mine, _) in per_thread {
        for (i, took, reply) in mine {
            replies[i] = reply;
            lat.push(took);
        }
    }
    lat.sort_unstable();
    let pct = |p: usize| {
        lat.get((lat.len() * p / 100).min(lat.len().saturating_sub(1))).map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    Run {
        rate: names.len() as f64 / ended.duration_since(began).as_secs_f64(),
        p50_ms: pct(50),
        p99_ms: pct(99),
        replies,
        ..Run::default()
    }
}

fn report_line(rep: usize, what: &str, r: &Run) {
    eprintln!(
        "rep {} {what:<28} {:>9.0} lookups/s  p50 {:>8.3} ms  p99 {:>8.3} ms  CPU/lookup: serve {:>6.0} µs, fixtures+client {:>6.0} µs",
        rep + 1,
        r.rate,
        r.p50_ms,
        r.p99_ms,
        r.serve_cpu_us,
        r.own_cpu_us
    );
}

fn show(reply: &[u8]) -> String {
    let text = String::from_utf8_lossy(reply);
    let payload = text.split_once(':').map_or(&*text, |(_, p)| p);
    payload.strip_suffix(',').unwrap_or(payload).to_owned()
}

/// Requests the HTTPS fixture received for policy hosts under `suffix`.
fn requests_under(https: &HttpsServer, suffix: &str) -> usize {
    https.requests().iter().filter(|r| r.sni.as_deref().is_some_and(|s| s.ends_with(suffix))).count()
}

/// The ceiling client's TLS: the test CA only, TLS 1.2 and 1.3, no resumption, AES-128-GCM
/// offered first (all as mtasts; the fixture follows the client's order, so both hash the
/// handshake with SHA-256).
fn ceiling_tls() -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(pki().certs["root"].clone())).expect("root");
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites.sort_by_key(|s| {
        !matches!(
            s.suite(),
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
                | rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                | rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
        )
    });
    let provider = Arc::new(provider);
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

/// The TXT lookup of `_mta-sts.<name>` and the GET of its policy: the least a cold lookup does.
fn ceiling_lookup(
    sock: &mut UdpSocket,
    dns: SocketAddr,
    tls: &Arc<ClientConfig>,
    https_port: u16,
    name: &str,
    resolve_host: bool,
) -> Vec<u8> {
    // TXT, over UDP.
    let answer = &ask(sock, dns, &[(&format!("_mta-sts.{name}."), RecordType::TXT)])[0];
    assert!(
        answer.answers.iter().any(
            |r| matches!(&r.data, RData::TXT(t) if t.txt_data.iter().any(|s| s.starts_with(b"v=STSv1")))
        ),
        "no STS record for {name}"
    );
    let host = format!("mta-sts.{name}");
    // The policy host's addresses: A and AAAA asked together, both answers awaited (what any
    // client that may connect over either family does, and what `mtasts serve` does).
    let addr = if resolve_host {
        let fqdn = format!("{host}.");
        let got = ask(sock, dns, &[(&fqdn, RecordType::A), (&fqdn, RecordType::AAAA)]);
        got[0]
            .answers
            .iter()
            .find_map(|r| match &r.data {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no A record for {host}"))
    } else {
        Ipv4Addr::LOCALHOST
    };
    // The policy, over HTTPS.
    let tcp = TcpStream::connect((addr, https_port)).expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    tcp.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let conn = ClientConnection::new(Arc::clone(tls), ServerName::try_from(host.clone()).expect("sni"))
        .expect("tls");
    let mut stream = StreamOwned::new(conn, tcp);
    let request = format!(
        "GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: {host}\r\nUser-Agent: ceiling\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).expect("request");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("response");
    assert!(response.starts_with(b"HTTP/1.1 200 "), "{host}: {}", String::from_utf8_lossy(&response));
    response
}

/// One query for `name` with the id `id`: its id and wire form.
fn query(id: u16, name: &str, rtype: RecordType) -> (u16, Vec<u8>) {
    let mut q = Message::query();
    q.metadata.id = id;
    q.metadata.recursion_desired = true;
    q.add_query(Query::query(Name::from_ascii(name).expect("name"), rtype));
    (id, q.to_vec().expect("encode"))
}

/// Asks `questions` at once and gives their answers, in their order (stale answers of other ids
/// are skipped). Questions still unanswered after a second are sent again, up to 5 times, as any
/// stub resolver would: under load the fixture's UDP socket may drop a datagram.
fn ask(sock: &UdpSocket, dns: SocketAddr, questions: &[(&str, RecordType)]) -> Vec<Message> {
    // Distinct ids (a random first one, the next ones after it): with an id each drawn at random,
    // the A and AAAA questions of one lookup had the same id once in 65,536 lookups, and the
    // second answer was then never matched (a run of 12,000 lookups failed about once in six).
    let first = rand::random::<u16>();
    let queries: Vec<(u16, Vec<u8>)> = (0u16..)
        .zip(questions)
        .map(|(i, (name, rtype))| query(first.wrapping_add(i), name, *rtype))
        .collect();
    let mut got: Vec<Option<Message>> = queries.iter().map(|_| None).collect();
    let mut buf = [0u8; 4096];
    sock.set_read_timeout(Some(Duration::from_secs(1))).expect("timeout");
    for _attempt in 0..5 {
        for ((_, wire), answer) in queries.iter().zip(&got) {
            if answer.is_none() {
                sock.send_to(wire, dns).expect("send");
            }
        }
        while got.iter().any(Option::is_none) {
            let n = match sock.recv_from(&mut buf) {
                Ok((n, _)) => n,
                Err(e)
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
                {
                    break;
                }
                Err(e) => panic!("DNS answer: {e}"),
            };
            let m = Message::from_vec(&buf[..n]).expect("decode");
            if let Some(i) = queries.iter().position(|(id, _)| *id == m.metadata.id) {
                got[i] = Some(m);
            }
        }
        if got.iter().all(Option::is_some) {
            return got.into_iter().flatten().collect();
        }
    }
    panic!("no DNS answer to {questions:?} after 5 attempts");
}

/// `mtasts serve` (the release binary) pointed at the fixtures.
struct Serve {
    child: Child,
    port: u16,
    stderr: PathBuf,
}

impl Serve {
    fn start(
        binary: &Path,
        dir: &Path,
        dns: &DnsServer,
        https: &HttpsServer,
        store: &str,
        dane: bool,
    ) -> Self {
        let dnssec = if dane {
            format!("dnssec = \"validate\"\ntrust_anchor = \"{}\"\n", dir.join("anchor").display())
        } else {
            "dnssec = \"off\"\n".to_owned()
        };
        let cache = if store == "memory" {
            "memory".to_owned()
        } else {
            dir.join("policies.sqlite").display().to_string()
        };
        let config = dir.join("mtasts.toml");
        std::fs::write(
            &config,
            format!(
                "[dns]\nnameservers = [\"{}\"]\n{dnssec}[https]\nca_file = \"{}\"\nport = {}\n[cache]\npath = \"{cache}\"\n[serve]\nlisten = \"inet:127.0.0.1:0\"\n",
                dns.addr(),
                dir.join("ca.pem").display(),
                https.addr().port(),
            ),
        )
        .expect("config");
        let stderr = dir.join("serve.stderr");
        let mut child = Command::new(binary)
            .args(["serve", "--config"])
            .arg(&config)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("start mtasts serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("listening line");
        let port =
            line.trim().rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("{line:?}"));
        Self { child, port, stderr }
    }

    /// `mtasts serve` said nothing unexpected (a warning about a failing domain with a cached
    /// policy would mean the sets overlap).
    fn check_stderr(&self) {
        let text = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        let said: Vec<&str> =
            text.lines().filter(|l| !l.starts_with("mtasts serve: listening on ")).collect();
        assert!(said.is_empty(), "mtasts serve said: {said:?}");
    }

    fn stop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn report(
    domains: usize,
    conns: usize,
    reps: usize,
    passes: usize,
    store: &str,
    r: [&Run; 6],
    ratios: [&[f64]; 3],
) -> String {
    use std::fmt::Write as _;
    let [ceiling, cold, cached, fail1, fail2, no_host] = r;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{domains} distinct domains per set, {conns} concurrent connections (clients), {cores} cores shared by the \
         fixtures, the clients and `mtasts serve` (store: {store}); the cached and second rounds make {passes} passes over their domains; median of {reps} \
         repetitions, fresh names each.\n"
    );
    let _ = writeln!(
        s,
        "| measurement | lookups/s | p50 ms | p99 ms | CPU µs per lookup: `mtasts serve` | CPU µs per lookup: fixtures + client |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|");
    for (what, run) in [
        ("ceiling: TXT lookup, policy host's A + AAAA, HTTPS GET (same fixtures, other names)", ceiling),
        ("the same without the A + AAAA lookups (the ceiling before 2026-11-30 04:30)", no_host),
        ("`mtasts serve`, cold (TXT, A+AAAA, fetch, parse, store, reply)", cold),
        ("`mtasts serve`, the same domains again (cached path)", cached),
        ("`mtasts serve`, failing domains, first round (connection refused)", fail1),
        ("`mtasts serve`, failing domains, second round (negative cache)", fail2),
    ] {
        let _ = writeln!(
            s,
            "| {what} | {:.0} | {:.3} | {:.3} | {:.0} | {:.0} |",
            run.rate, run.p50_ms, run.p99_ms, run.serve_cpu_us, run.own_cpu_us
        );
    }
    let _ = writeln!(s);
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    let list = |v: &[f64], scale: f64, unit: &str| {
        v.iter().map(|x| format!("{:.2}{unit}", x * scale)).collect::<Vec<_>>().join(", ")
    };
    let _ = writeln!(
        s,
        "- cold: {:.0}% of the ceiling (target ≥ 80%; each repetition: {}), p99 {:.1} ms",
        100.0 * median(ratios[0]),
        list(ratios[0], 100.0, "%"),
        cold.p99_ms
    );
    let _ = writeln!(
        s,
        "- CPU per cold lookup, all processes: {:.0} µs for mtasts ({:.0} serve + {:.0} fixtures and client), {:.0} µs for the ceiling",
        cold.serve_cpu_us + cold.own_cpu_us,
        cold.serve_cpu_us,
        cold.own_cpu_us,
        ceiling.serve_cpu_us + ceiling.own_cpu_us
    );
    let _ = writeln!(
        s,
        "- against the ceiling without the policy host's address lookup: {:.0}% (each repetition: {}; {:.0} µs CPU per lookup)",
        100.0 * median(ratios[2]),
        list(ratios[2], 100.0, "%"),
        no_host.serve_cpu_us + no_host.own_cpu_us
    );
    let _ = writeln!(
        s,
        "- failing, second round: {:.2}× the cached path's rate (each repetition: {}), p99 {:.3} ms vs {:.3} ms",
        median(ratios[1]),
        list(ratios[1], 1.0, "×"),
        fail2.p99_ms,
        cached.p99_ms
    );
    s
}
