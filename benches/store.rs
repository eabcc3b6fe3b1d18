//! The SQLite store: a lookup on a miss of the memory layer (`Store::load`, which also parses the
//! stored policy), with 100 and with 100,000 stored domains.
//!
//! `cargo bench --bench store`; figures in BENCHMARKS.md.

use std::hint::black_box;
use std::sync::Arc;

use criterion::Criterion;
use mtasts::Domain;
use mtasts::cache::{CachedPolicy, Entry, SqliteStore, Store};
use mtasts::policy::Policy;
use mtasts::txt::PolicyId;

const POLICY: &str =
    "version: STSv1\nmode: enforce\nmx: mx1.example.com\nmx: *.example.net\nmax_age: 604800\n";

fn filled(dir: &std::path::Path, n: usize) -> SqliteStore {
    let path = dir.join(format!("store-{n}.sqlite"));
    let _ = std::fs::remove_file(&path);
    let store = SqliteStore::open(&path, 300).expect("open");
    let policy = Policy::parse(POLICY.as_bytes()).expect("policy");
    for i in 0..n {
        let entry = Entry {
            policy: Some(Arc::new(CachedPolicy::new(
                policy.clone(),
                PolicyId::parse(&format!("id{i}")).expect("id"),
                POLICY.into(),
                1_800_000_000,
            ))),
            checked_at: 1_800_000_000,
            failed: None,
        };
        store.save(&Domain::parse(&format!("d{i}.example")).expect("domain"), &entry).expect("save");
    }
    store
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let dir = std::env::temp_dir().join(format!("mtasts-bench-store-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    for n in [100usize, 100_000] {
        let store = filled(&dir, n);
        let domains: Vec<Domain> =
            (0..64).map(|i| Domain::parse(&format!("d{}.example", i * (n / 64))).expect("d")).collect();
        let mut i = 0;
        c.bench_function(&format!("SQLite load on a memory miss, {n} domains stored"), |b| {
            b.iter(|| {
                i = (i + 1) % domains.len();
                black_box(store.load(&domains[i]).expect("load").expect("present"))
            })
        });
    }
    c.final_summary();
    let _ = std::fs::remove_dir_all(&dir);
}
