//! Many domains in the SQLite store (issue 17, item 2): a load on a miss of the memory layer
//! (`PolicyStore::load`, which also parses the stored policy) of a domain drawn at random among
//! 1,000,000 stored rows, against the same among 100 rows, in alternating batches; medians and
//! their ratio.
//!
//! The rows are written through `SqliteStore::save`, the path the engine takes, each domain with
//! its own policy (its own MX host names and TXT id). The database lives in the temporary
//! directory and is deleted at the end (about 300 MB for 1,000,000 rows).
//!
//! `cargo bench --bench scale_store`; `-- --domains N` to change the large N. Figures in
//! BENCHMARKS.md ("Scale").

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use mtasts::Domain;
use mtasts::cache::{CachedPolicy, Entry, PolicyStore, SqliteStore};
use mtasts::policy::Policy;
use mtasts::txt::PolicyId;

const FETCHED_AT: u64 = 1_800_000_000;

fn name(i: usize) -> String {
    format!("customer{i:07}.com")
}

fn fill(path: &std::path::Path, n: usize) -> SqliteStore {
    let _ = std::fs::remove_file(path);
    let store = SqliteStore::open(path, 300).expect("open");
    let began = Instant::now();
    for i in 0..n {
        let text = format!(
            "version: STSv1\nmode: enforce\nmx: mx1.customer{i:07}.com\nmx: mx2.customer{i:07}.com\nmax_age: 604800\n"
        );
        let policy = Policy::parse(text.as_bytes()).expect("policy");
        let entry = Entry {
            policy: Some(Arc::new(CachedPolicy::new(
                policy,
                PolicyId::parse(&format!("2026{i}")).expect("id"),
                text,
                FETCHED_AT,
            ))),
            checked_at: FETCHED_AT,
            failed: None,
        };
        store.save(&Domain::parse(&name(i)).expect("domain"), &entry).expect("save");
    }
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    println!(
        "stored {n} rows through SqliteStore::save in {:.1} s; database {:.0} MB",
        began.elapsed().as_secs_f64(),
        size as f64 / 1e6
    );
    store
}

/// xorshift64*: a reproducible random sequence without a dependency.
fn random_indices(n: usize, count: usize, seed: u64) -> Vec<usize> {
    let mut x = seed;
    (0..count)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) % n as u64) as usize
        })
        .collect()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Nanoseconds per load over a batch.
fn batch(store: &SqliteStore, domains: &[Domain]) -> f64 {
    let began = Instant::now();
    for d in domains {
        let entry = store.load(black_box(d)).expect("load").expect("stored");
        black_box(entry);
    }
    began.elapsed().as_nanos() as f64 / domains.len() as f64
}

fn main() {
    const BATCH: usize = 20_000;
    const ROUNDS: usize = 15;
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args
        .iter()
        .position(|a| a == "--domains")
        .and_then(|i| args.get(i + 1))
        .map_or(1_000_000, |v| v.parse().expect("--domains N"));
    let dir = std::env::temp_dir().join(format!("mtasts-bench-scale-store-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let small = fill(&dir.join("small.sqlite"), 100);
    let large = fill(&dir.join("large.sqlite"), n);
    let domains = |n: usize, seed| -> Vec<Vec<Domain>> {
        random_indices(n, BATCH * (ROUNDS + 1), seed)
            .chunks(BATCH)
            .map(|c| c.iter().map(|&i| Domain::parse(&name(i)).expect("domain")).collect())
            .collect()
    };
    let (small_batches, large_batches) = (domains(100, 7), domains(n, 11));
    // Warm-up of both (statements prepared, the first pages read).
    batch(&small, &small_batches[ROUNDS]);
    batch(&large, &large_batches[ROUNDS]);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for r in 0..ROUNDS {
        a.push(batch(&small, &small_batches[r]));
        b.push(batch(&large, &large_batches[r]));
    }
    let (a, b) = (median(&mut a), median(&mut b));
    println!(
        "SQLite load on a memory miss, a random one of 100 rows: {:.2} µs; of {n} rows: {:.2} µs; ratio {:.2}x (medians of {ROUNDS} batches of {BATCH})",
        a / 1000.0,
        b / 1000.0,
        b / a
    );
    drop((small, large));
    let _ = std::fs::remove_dir_all(&dir);
}
