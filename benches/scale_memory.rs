//! Many domains in memory (issue 17, item 2): one engine holding the policies of N domains, as a
//! long-running `mtasts serve` would.
//!
//! The engine is filled through its normal path: one `check_mx` per domain, which looks up the
//! TXT record (a resolver answering from memory), fetches the policy (a fetcher answering from
//! memory), parses it and writes it to the in-process cache as any discovery does. Then:
//!
//! * RSS (`/proc/self/statm`) and live heap bytes (a counting allocator) before and after the
//!   fill, per domain;
//! * the cached `check_mx` of one domain over and over (the baseline) against the cached
//!   `check_mx` of a domain drawn at random among the N, in alternating batches; the medians of
//!   the batches and their ratio;
//! * in the same alternation, the machine's own floor: a chase of dependent random reads (one,
//!   two and three per step) through a buffer as large as the heap the fill added, each line
//!   pointing at the next of a random cycle over all of them, allocated by the same allocator with
//!   the same huge-page setting. One step of one read is what one cache miss to main memory costs
//!   here; a random check cannot cost less than the single-domain check plus one of them (the
//!   policy's reference count lives in the policy, which a check hands out), so when that miss
//!   alone is more than half the single-domain check, a ratio of 1.5 is out of reach of any table.
//!
//! Two kinds of policies, each in its own child process (so that one's memory is not the
//! other's): `distinct`, where every domain has its own MX host names (the worst case for
//! memory), and `shared`, where the domains are hosted by eight providers and each serves its
//! provider's policy text (the common case: many domains point at the same few mail hosts).
//! Every domain has its own TXT id in both.
//!
//! `cargo bench --bench scale_memory` (N = 1,000,000); `-- --domains N` to change N,
//! `-- --kind distinct|shared` to run one kind in this process; `-- --malloc-hugetlb` runs each
//! kind twice, without and then with `GLIBC_TUNABLES=glibc.malloc.hugetlb=1` (glibc's allocator
//! asks for transparent huge pages, as `examples/systemd/mtasts-serve.service` sets it), and
//! prints how much of the heap the kernel backed with huge pages. Figures in BENCHMARKS.md
//! ("Scale").

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

use mtasts::cache::Failure;
use mtasts::engine::{DnsError, Fetcher, Resolver};
use mtasts::{Domain, Engine, Timing, TrustAnchors, Verdict};

/// Live heap bytes, counted by the allocator.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; only a counter is kept.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Distinct,
    Shared,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Distinct => "distinct",
            Self::Shared => "shared",
        }
    }
}

/// Providers of the `shared` kind.
const PROVIDERS: usize = 8;

/// The number in a generated name `customer0001234.com` (and `_mta-sts.` / `mta-sts.` forms).
fn index_of(name: &str) -> usize {
    let digits: String = name.chars().filter(char::is_ascii_digit).collect();
    digits.parse().unwrap_or(usize::MAX)
}

struct Dns;
impl Resolver for Dns {
    fn txt(&self, name: &str) -> Result<Vec<Vec<u8>>, DnsError> {
        Ok(vec![format!("v=STSv1; id=2026{}", index_of(name)).into_bytes()])
    }
}

struct Http(Kind);
impl Fetcher for Http {
    fn fetch(&self, domain: &Domain) -> Result<Vec<u8>, Failure> {
        let i = index_of(domain.as_str());
        let mx = match self.0 {
            Kind::Distinct => format!("mx: mx1.customer{i:07}.com\nmx: mx2.customer{i:07}.com\n"),
            Kind::Shared => format!("mx: *.mail.provider{}.net\n", i % PROVIDERS),
        };
        Ok(format!("version: STSv1\nmode: enforce\n{mx}max_age: 604800\n").into_bytes())
    }
}

/// Writes `customer{i:07}.com` and the MX host a check names into fixed buffers: the same work
/// for the baseline and the random case, and no heap.
struct Names {
    domain: [u8; 32],
    mx: [u8; 48],
    domain_len: usize,
    mx_len: usize,
}

impl Names {
    fn new() -> Self {
        Self { domain: [0; 32], mx: [0; 48], domain_len: 0, mx_len: 0 }
    }

    fn set(&mut self, kind: Kind, i: usize) -> (&str, &str) {
        let mut digits = [b'0'; 7];
        let mut n = i;
        for d in digits.iter_mut().rev() {
            *d = b'0' + (n % 10) as u8;
            n /= 10;
        }
        let put = |buf: &mut [u8], parts: &[&[u8]]| {
            let mut at = 0;
            for p in parts {
                buf[at..at + p.len()].copy_from_slice(p);
                at += p.len();
            }
            at
        };
        self.domain_len = put(&mut self.domain, &[b"customer", &digits, b".com"]);
        self.mx_len = match kind {
            Kind::Distinct => put(&mut self.mx, &[b"mx1.customer", &digits, b".com"]),
            Kind::Shared => {
                let p = [b'0' + (i % PROVIDERS) as u8];
                put(&mut self.mx, &[b"mx", &digits, b".mail.provider", &p, b".net"])
            }
        };
        let domain = std::str::from_utf8(&self.domain[..self.domain_len]).unwrap_or("");
        let mx = std::str::from_utf8(&self.mx[..self.mx_len]).unwrap_or("");
        (domain, mx)
    }
}

/// Resident set size in bytes.
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: usize = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).expect("resident");
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    pages * page
}

/// xorshift64*: a reproducible random sequence without a dependency.
fn random_indices(n: usize, count: usize) -> Vec<u32> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..count)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) % n as u64) as u32
        })
        .collect()
}

/// A buffer of `bytes` (rounded down to whole cache lines) whose lines form one random cycle:
/// the first word of each line is the index of the next line. Sattolo's shuffle gives a single
/// cycle through every line, so a chase visits them all in an order no prefetcher can guess.
struct Chase {
    words: Vec<u64>,
}

/// Words in a cache line.
const LINE_WORDS: usize = 8;

impl Chase {
    fn new(bytes: usize) -> Self {
        let lines = (bytes / (LINE_WORDS * 8)).max(2);
        let mut order: Vec<u32> = (0..lines as u32).collect();
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        for i in (1..lines).rev() {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            let j = (x.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) as usize % i;
            order.swap(i, j);
        }
        let mut words = vec![0u64; lines * LINE_WORDS];
        for k in 0..lines {
            words[order[k] as usize * LINE_WORDS] = u64::from(order[(k + 1) % lines]);
        }
        Self { words }
    }

    /// Nanoseconds per step of `steps` steps of `reads` dependent reads each, from line `at`;
    /// returns where the chase stopped, to go on from there next time.
    fn batch(&self, at: &mut usize, steps: usize, reads: usize) -> f64 {
        let began = Instant::now();
        let mut i = *at;
        for _ in 0..steps {
            for _ in 0..reads {
                i = self.words[i * LINE_WORDS] as usize;
            }
            i = black_box(i);
        }
        let ns = began.elapsed().as_nanos() as f64 / steps as f64;
        *at = i;
        ns
    }

    fn bytes(&self) -> usize {
        self.words.len() * 8
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Nanoseconds per check over a batch of checks of the domains `indices` names.
fn batch(engine: &Engine, kind: Kind, names: &mut Names, indices: impl Iterator<Item = usize>) -> f64 {
    let began = Instant::now();
    let mut n = 0u32;
    for i in indices {
        let (domain, mx) = names.set(kind, i);
        let outcome = engine.check_mx(black_box(domain), black_box(mx)).expect("check");
        debug_assert_eq!(outcome.verdict, Verdict::Pass);
        black_box(outcome);
        n += 1;
    }
    began.elapsed().as_nanos() as f64 / f64::from(n)
}

fn run(kind: Kind, n: usize) {
    const BATCH: usize = 200_000;
    const ROUNDS: usize = 15;
    let random = random_indices(n, BATCH * ROUNDS);
    let timing = Timing { txt_check_interval: 86_400, ..Timing::default() };
    let engine =
        Engine::builder(Dns, Http(kind)).trust_anchors(TrustAnchors::webpki()).timing(timing).build();
    let mut names = Names::new();
    // The engine's own first-use costs (metrics, thread-locals) before the first measurement.
    let (d, mx) = names.set(kind, 0);
    assert_eq!(engine.check_mx(d, mx).expect("check").verdict, Verdict::Pass);

    let (rss0, heap0) = (rss(), LIVE.load(Ordering::Relaxed));
    let began = Instant::now();
    for i in 0..n {
        let (d, mx) = names.set(kind, i);
        let outcome = engine.check_mx(d, mx).expect("fill");
        assert_eq!(outcome.verdict, Verdict::Pass, "{d} {mx}: {:?}", outcome.reason);
    }
    let fill = began.elapsed();
    let (rss1, heap1) = (rss(), LIVE.load(Ordering::Relaxed));
    assert_eq!(engine.cache().len(), n);
    let per = |a: usize, b: usize| (b as f64 - a as f64) / n as f64;
    println!(
        "[{}] filled {n} domains through check_mx in {:.1} s ({:.2} µs each)",
        kind.as_str(),
        fill.as_secs_f64(),
        fill.as_secs_f64() * 1e6 / n as f64
    );
    println!(
        "[{}] RSS {:.1} MiB -> {:.1} MiB: {:.0} bytes per domain; live heap {:.0} bytes per domain",
        kind.as_str(),
        rss0 as f64 / 1048576.0,
        rss1 as f64 / 1048576.0,
        per(rss0, rss1),
        (heap1 - heap0) as f64 / n as f64
    );

    // The machine's floor: dependent reads through a buffer as large as the heap the fill added.
    let huge_before = anon_huge();
    let chase = Chase::new(usize::try_from(heap1 - heap0).unwrap_or(0));
    let chase_huge = anon_huge().saturating_sub(huge_before);
    let mut at = 0;

    // Warm-up of every case, then alternating batches.
    batch(&engine, kind, &mut names, std::iter::repeat_n(0, BATCH));
    batch(&engine, kind, &mut names, random[..BATCH].iter().map(|&i| i as usize));
    chase.batch(&mut at, BATCH, 1);
    let (mut single, mut spread) = (Vec::new(), Vec::new());
    let mut reads: [Vec<f64>; 3] = Default::default();
    for r in 0..ROUNDS {
        single.push(batch(&engine, kind, &mut names, std::iter::repeat_n(0, BATCH)));
        let chunk = &random[r * BATCH..(r + 1) * BATCH];
        spread.push(batch(&engine, kind, &mut names, chunk.iter().map(|&i| i as usize)));
        for (k, v) in reads.iter_mut().enumerate() {
            v.push(chase.batch(&mut at, BATCH, k + 1));
        }
    }
    let (single, spread) = (median(&mut single), median(&mut spread));
    let [one, two, three] = reads.map(|mut v| median(&mut v));
    println!(
        "[{}] cached check_mx, one domain: {single:.0} ns; a random one of {n}: {spread:.0} ns; ratio {:.2}x (medians of {ROUNDS} batches of {BATCH})",
        kind.as_str(),
        spread / single
    );
    println!(
        "[{}] the same run's dependent random reads through {:.0} MiB ({:.0} MiB of it in huge pages): one {one:.0} ns, two {two:.0} ns, three {three:.0} ns",
        kind.as_str(),
        chase.bytes() as f64 / 1048576.0,
        chase_huge as f64 / 1048576.0,
    );
    let floor = (single + one) / single;
    println!(
        "[{}] the floor, one domain's check + one miss: {:.0} ns, {floor:.2}x; the random check is {:.1} misses above the one-domain check{}",
        kind.as_str(),
        single + one,
        (spread - single) / one,
        if one > single / 2.0 {
            "; one miss alone is more than half the one-domain check, so 1.5x is below what any table can do on this machine"
        } else {
            ""
        }
    );
    println!("[{}] load average {}", kind.as_str(), loadavg());
    drop(chase);
    println!(
        "[{}] RSS at the end {:.1} MiB, of which in huge pages {:.1} MiB ({})",
        kind.as_str(),
        rss() as f64 / 1048576.0,
        anon_huge() as f64 / 1048576.0,
        std::env::var("GLIBC_TUNABLES")
            .map_or_else(|_| "GLIBC_TUNABLES unset".to_owned(), |t| format!("GLIBC_TUNABLES={t}"))
    );
}

/// The first three fields of `/proc/loadavg`.
fn loadavg() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// Bytes of this process's memory in transparent huge pages (`/proc/self/smaps_rollup`).
fn anon_huge() -> usize {
    let rollup = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap_or_default();
    rollup
        .lines()
        .find_map(|l| l.strip_prefix("AnonHugePages:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
    let n: usize = value("--domains").map_or(1_000_000, |v| v.parse().expect("--domains N"));
    match value("--kind").as_deref() {
        Some("distinct") => run(Kind::Distinct, n),
        Some("shared") => run(Kind::Shared, n),
        Some(other) => panic!("--kind {other}: distinct or shared"),
        None => {
            // Each kind in a process of its own, one after the other, in this environment; with
            // `--malloc-hugetlb`, each without and then with glibc's huge-page tunable (glibc
            // reads it at process start).
            let runs: &[Option<&str>] = if args.iter().any(|a| a == "--malloc-hugetlb") {
                &[Some(""), Some("glibc.malloc.hugetlb=1")]
            } else {
                &[None]
            };
            for kind in ["distinct", "shared"] {
                for tunable in runs {
                    let mut child = std::process::Command::new(std::env::current_exe().expect("exe"));
                    child.args(["--kind", kind, "--domains", &n.to_string()]);
                    match tunable {
                        Some("") => {
                            child.env_remove("GLIBC_TUNABLES");
                        }
                        Some(t) => {
                            child.env("GLIBC_TUNABLES", t);
                        }
                        None => {}
                    }
                    let status = child.status().expect("child");
                    assert!(status.success(), "{kind}: {status}");
                }
            }
        }
    }
}
