//! The SQLite store: a lookup on a miss of the memory layer (`PolicyStore::load`, which also parses the
//! stored policy), with 100 and with 100,000 stored domains; and with 100,000 stored domains, one
//! refresher pass that finds nothing due (`PolicyStore::due_for_refresh`, through the indexes) against
//! the way it was done before (`PolicyStore::list` and a filter), and the CPU `mtasts serve` uses while
//! idle with its refresher running every second.
//!
//! `cargo bench --bench store`; figures in BENCHMARKS.md.

use std::hint::black_box;
use std::sync::Arc;

use criterion::Criterion;
use mtasts::Domain;
use mtasts::cache::{CachedPolicy, Entry, PolicyStore, SqliteStore};
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

/// One refresher pass that finds nothing due, the indexed query against reading every row.
fn refresher_pass(c: &mut Criterion, store: &SqliteStore) {
    // An hour after the fetch of week-long policies: nothing is due.
    let now = 1_800_000_000 + 3600;
    assert!(store.due_for_refresh(now, 86_400).expect("due").is_empty());
    c.bench_function("refresher pass, nothing due, 100000 stored (indexed query)", |b| {
        b.iter(|| black_box(store.due_for_refresh(black_box(now), 86_400).expect("due")))
    });
    let mut group = c.benchmark_group("baseline");
    group.sample_size(10);
    group.bench_function("refresher pass, nothing due, 100000 stored (every row read, before)", |b| {
        b.iter(|| {
            let rows = store.list().expect("list");
            black_box(
                rows.into_iter()
                    .filter(|(_, e)| e.live(now).is_some_and(|p| now - p.fetched_at >= 86_400))
                    .count(),
            )
        })
    });
    group.finish();
}

/// CPU time of an idle `mtasts serve` over the store, refresher every second, for 20 s.
fn serve_idle(store: &std::path::Path) {
    use std::io::BufRead as _;
    let dir = store.parent().expect("dir");
    let config = dir.join("serve.toml");
    std::fs::write(
        &config,
        format!(
            "[dns]\nnameservers = [\"127.0.0.1:9\"]\ntimeout_ms = 200\ndnssec = \"off\"\n[cache]\npath = \"{}\"\n[serve]\nlisten = \"inet:127.0.0.1:0\"\nrefresh_interval_s = 1\n",
            store.display()
        ),
    )
    .expect("config");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mtasts"))
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("mtasts serve");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("listening line");
    let ticks = |pid: u32| -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
        let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
        // utime and stime are fields 14 and 15 of stat(5); fields[0] is field 3.
        fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0)
    };
    // The first pass (and the daily prune) is allowed to cost; measure the idle state after it.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let (t0, c0) = (std::time::Instant::now(), ticks(child.id()));
    std::thread::sleep(std::time::Duration::from_secs(20));
    let (t1, c1) = (t0.elapsed(), ticks(child.id()));
    // Clock ticks are 100 per second on Linux (sysconf(_SC_CLK_TCK)).
    let cpu = (c1 - c0) as f64 / 100.0;
    println!(
        "mtasts serve idle, 100000 stored, refresher every 1 s: {:.2} s CPU in {:.1} s = {:.2}% of a core",
        cpu,
        t1.as_secs_f64(),
        100.0 * cpu / t1.as_secs_f64()
    );
    let _ = child.kill();
    let _ = child.wait();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let dir = std::env::temp_dir().join(format!("mtasts-bench-store-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    for n in [100usize, 100_000] {
        let store = filled(&dir, n);
        if n == 100_000 {
            refresher_pass(&mut c, &store);
            serve_idle(&dir.join(format!("store-{n}.sqlite")));
        }
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
