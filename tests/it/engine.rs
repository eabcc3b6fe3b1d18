//! Engine behaviour that data vectors cannot express: concurrency (single-flight, threads) and
//! robustness of the flight mechanism.

use std::sync::{Arc, Barrier};
use std::time::Duration;

use crate::common::Harness;
use mtasts::engine::{DnsError, Resolver};
use mtasts::{Engine, Timing, Verdict};

const ENFORCE: &str = "version: STSv1\nmode: enforce\nmx: mx.example.test\nmax_age: 86400\n";

#[test]
fn engine_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Engine>();
}

/// Concurrent checks of one uncached domain share one TXT lookup and one fetch, and all of them
/// get the fetched policy (none of them sees "no policy" while the fetch is in flight).
#[test]
fn single_flight_for_an_uncached_domain() {
    let h = Arc::new(Harness::new(Timing::default()));
    h.dns.set_records(&["v=STSv1; id=a"]);
    h.http.set_body(ENFORCE);
    *h.dns.delay.lock() = Duration::from_millis(100);
    *h.http.delay.lock() = Duration::from_millis(100);
    let threads = 8;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let (h, barrier) = (Arc::clone(&h), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                let mx = if i % 2 == 0 { "mx.example.test" } else { "bad.example.test" };
                h.engine.check_mx("example.test", mx).expect("check").verdict
            })
        })
        .collect();
    let verdicts: Vec<Verdict> = handles.into_iter().map(|t| t.join().expect("thread")).collect();
    assert_eq!(h.dns.lookups(), 1, "TXT lookups");
    assert_eq!(h.http.fetches(), 1, "fetches");
    for (i, v) in verdicts.iter().enumerate() {
        let want = if i % 2 == 0 { Verdict::Pass } else { Verdict::FailEnforce };
        assert_eq!(*v, want, "thread {i}");
    }
}

/// Different domains do not wait for each other.
#[test]
fn flights_are_per_domain() {
    let h = Arc::new(Harness::new(Timing::default()));
    h.dns.set_records(&["v=STSv1; id=a"]);
    h.http.set_body(ENFORCE);
    let handles: Vec<_> = ["a.example", "b.example", "c.example", "d.example"]
        .into_iter()
        .map(|d| {
            let h = Arc::clone(&h);
            std::thread::spawn(move || h.engine.check_mx(d, "mx.example.test").expect("check").verdict)
        })
        .collect();
    for t in handles {
        assert_eq!(t.join().expect("thread"), Verdict::Pass);
    }
    assert_eq!(h.dns.lookups(), 4);
    assert_eq!(h.http.fetches(), 4);
}

struct PanickingDns;

impl Resolver for PanickingDns {
    fn txt(&self, _name: &str) -> Result<Vec<Vec<u8>>, DnsError> {
        std::thread::sleep(Duration::from_millis(100));
        panic!("resolver bug");
    }
}

/// A panic during discovery releases the callers waiting on that flight.
#[test]
fn a_panicking_leader_does_not_strand_its_followers() {
    let http = Arc::new(crate::common::FakeHttp::default());
    let engine = Arc::new(Engine::builder(PanickingDns, http).build());
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let engine = Arc::clone(&engine);
            std::thread::spawn(move || engine.check_mx("example.test", "mx.example.test").map(|o| o.verdict))
        })
        .collect();
    let mut panicked = 0;
    for t in handles {
        match t.join() {
            Ok(v) => assert_eq!(v.expect("check"), Verdict::NoPolicy),
            Err(_) => panicked += 1,
        }
    }
    assert!(panicked >= 1, "the leader's panic propagates to its own caller");
    // The flight is gone: a later call starts a new one rather than waiting forever.
    let later = std::thread::spawn(move || engine.check_mx("example.test", "mx.example.test").is_ok());
    assert!(later.join().is_err(), "the next call becomes leader and meets the same bug");
}
