//! The engine's counters: what `mtasts serve --metrics` exposes and `mtasts stats` sums over
//! processes (README "Metrics").
//!
//! Counting must not slow the hot path (a cached check is a few hundred nanoseconds), so every
//! counter is a relaxed atomic increment at a fixed index of a flat array: no lock, no hashing,
//! no allocation. The label values of each family are a fixed list, so the array's size is known
//! when the engine is built and a hostile domain cannot create new series. The array is kept in
//! `SHARDS` (8) copies and each thread increments its own (chosen once per thread), so that two
//! threads checking at once do not fight over one cache line (the cached check scales with
//! threads, BENCHMARKS.md); reading sums the copies.
//!
//! Persisting: like the TLSRPT tally, an engine with a writable store adds what it counted since
//! its last flush to the store's `stats` table every few seconds (at most every
//! `FLUSH_AFTER` (10) seconds, on the next check), when asked, and when it is dropped, so that
//! `mtasts stats` can sum the counts of every process that used the store (Exim runs one per
//! delivery). Without a store, or with a read-only one, counts stay in the process. Across
//! `fork()`: a child's first flush takes what is in the counters then as its starting point, so
//! counts the parent made before the fork are never added twice (the parent flushes them
//! itself); what the child counted before that first flush is lost, which is why a child should
//! build its own engine (as the C ABI's registry does).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use once_cell::sync::Lazy;
use parking_lot::Mutex;

use crate::policy::Mode;
use crate::verdict::{Reason, Verdict};

/// Seconds after which counts are flushed to the store on the next check.
pub(crate) const FLUSH_AFTER: u64 = 10;

/// Upper bounds (seconds) of the latency histograms' buckets; `+Inf` follows ([`latency_buckets`]).
const LATENCY_BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// Upper bounds (seconds) of the latency histograms' buckets, in order; `+Inf` follows.
pub fn latency_buckets() -> &'static [f64] {
    &LATENCY_BUCKETS
}

/// Copies of the counters; a thread increments copy `thread number % SHARDS`.
const SHARDS: usize = 8;

/// The copy of the counters this thread increments.
fn shard() -> usize {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    thread_local! {
        static SHARD: usize = (NEXT.fetch_add(1, Relaxed) % SHARDS as u64) as usize;
    }
    SHARD.with(|s| *s)
}

/// Slots of one histogram: a count per bucket (not cumulative), one for `+Inf`, and the sum in
/// microseconds.
const HIST_SLOTS: usize = LATENCY_BUCKETS.len() + 2;

/// What a metric family is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A monotonic counter (served with the `_total` suffix).
    Counter,
    /// A latency histogram in seconds (`_bucket`, `_sum`, `_count`).
    Histogram,
}

/// A family of metrics: a name, its help text and the fixed values of each label.
#[derive(Debug, PartialEq, Eq)]
pub struct Family {
    /// The name as served, without `_total` (counters) or `_bucket`/`_sum`/`_count` (histograms).
    pub name: &'static str,
    /// The `# HELP` text.
    pub help: &'static str,
    /// Counter or histogram.
    pub kind: Kind,
    /// Label names and, for each, its possible values.
    pub labels: &'static [(&'static str, &'static [&'static str])],
}

impl Family {
    /// Series of the family (one per combination of label values).
    pub fn series(&self) -> usize {
        self.labels.iter().map(|(_, v)| v.len()).product()
    }

    fn slots(&self) -> usize {
        self.series() * if self.kind == Kind::Histogram { HIST_SLOTS } else { 1 }
    }

    /// The label values of series `i` (in the order of `labels`).
    pub fn label_values(&self, mut i: usize) -> Vec<(&'static str, &'static str)> {
        let mut out = vec![("", ""); self.labels.len()];
        for (n, (name, values)) in self.labels.iter().enumerate().rev() {
            out[n] = (*name, values[i % values.len()]);
            i /= values.len();
        }
        out
    }
}

/// In the order of `Verdict`'s numeric values.
const VERDICT_NAMES: &[&str] = &[
    Verdict::NoPolicy.as_str(),
    Verdict::Pass.as_str(),
    Verdict::FailEnforce.as_str(),
    Verdict::FailTesting.as_str(),
];
const REASON_NAMES: &[&str] = &{
    let mut names = [""; Reason::ALL.len()];
    let mut i = 0;
    while i < names.len() {
        names[i] = Reason::ALL[i].as_str();
        i += 1;
    }
    names
};
const MODE_NAMES: &[&str] = &["enforce", "testing", "none", "no-policy"];

/// Where a policy lookup was answered from (`mtasts_policy_lookups_total{layer}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layer {
    /// The in-process cache, without I/O.
    Memory = 0,
    /// The persistent store (the in-process cache had nothing fresh).
    Store = 1,
    /// DNS was asked, no policy fetch was needed (or none could be made).
    Dns = 2,
    /// The policy was fetched over HTTPS.
    Network = 3,
    /// A per-domain override decided (`[override."DOMAIN"]`, `mtasts override set`).
    Override = 4,
}
const LAYER_NAMES: &[&str] = &["memory", "store", "dns", "network", "override"];

/// What a TXT lookup of `_mta-sts.<domain>` found (`mtasts_discoveries_total{result}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiscoveryResult {
    /// One valid STS record.
    Record = 0,
    /// No STS record (NXDOMAIN, no data, or no `v=STSv1` record).
    NoRecord = 1,
    /// Several STS records, or an invalid one.
    Invalid = 2,
    /// The lookup failed.
    DnsError = 3,
}
const DISCOVERY_NAMES: &[&str] = &["record", "no-record", "invalid", "dns-error"];

const FETCH_NAMES: &[&str] = &["ok", "fetch-error", "policy-invalid", "webpki-invalid"];

/// Which DNS lookup a latency is of (`mtasts_dns_lookup_seconds{kind}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DnsKind {
    /// `_mta-sts.<domain>` TXT.
    Txt = 0,
    /// TLSA of an MX host (DANE), with its DNSSEC validation.
    Tlsa = 1,
    /// The MX RRset of a domain (DANE), with its DNSSEC validation.
    Mx = 2,
}
const DNS_KIND_NAMES: &[&str] = &["txt", "tlsa", "mx"];

/// Every family the library counts, in the order of the flat array.
pub static FAMILIES: [Family; 6] = [
    Family {
        name: "mtasts_verdicts",
        help: "Checks answered, by verdict, reason and the mode of the policy applied",
        kind: Kind::Counter,
        labels: &[("verdict", VERDICT_NAMES), ("reason", REASON_NAMES), ("mode", MODE_NAMES)],
    },
    Family {
        name: "mtasts_policy_lookups",
        help: "Policy lookups (checks and socketmap queries) by the layer that answered: memory and store are cache hits",
        kind: Kind::Counter,
        labels: &[("layer", LAYER_NAMES)],
    },
    Family {
        name: "mtasts_discoveries",
        help: "TXT lookups of _mta-sts.<domain>, by what they found",
        kind: Kind::Counter,
        labels: &[("result", DISCOVERY_NAMES)],
    },
    Family {
        name: "mtasts_fetches",
        help: "HTTPS policy fetches, by result",
        kind: Kind::Counter,
        labels: &[("result", FETCH_NAMES)],
    },
    Family {
        name: "mtasts_dns_lookup_seconds",
        help: "Latency of the engine's DNS lookups (TXT discovery; MX and TLSA with DNSSEC validation for DANE)",
        kind: Kind::Histogram,
        labels: &[("kind", DNS_KIND_NAMES)],
    },
    Family {
        name: "mtasts_fetch_seconds",
        help: "Latency of HTTPS policy fetches, failed ones included",
        kind: Kind::Histogram,
        labels: &[],
    },
];

const F_VERDICTS: usize = 0;
const F_LOOKUPS: usize = 1;
const F_DISCOVERIES: usize = 2;
const F_FETCHES: usize = 3;
const F_DNS: usize = 4;
const F_FETCH_SECONDS: usize = 5;

/// Where each family starts in the flat array, and the array's length.
static LAYOUT: Lazy<(Vec<usize>, usize)> = Lazy::new(|| {
    let mut offsets = Vec::with_capacity(FAMILIES.len());
    let mut at = 0;
    for f in &FAMILIES {
        offsets.push(at);
        at += f.slots();
    }
    (offsets, at)
});

/// The stored key of every slot, and the slot of every key (see [`Metrics::keys`]). Made only
/// when all of them are needed (`mtasts stats`, reading a key back); a flush uses [`slot_key`].
static KEYS: Lazy<(Vec<String>, std::collections::HashMap<String, usize>)> = Lazy::new(|| {
    let keys: Vec<String> = (0..LAYOUT.1).map(|i| slot_key(i).to_owned()).collect();
    let index = keys.iter().enumerate().map(|(i, k)| (k.clone(), i)).collect();
    (keys, index)
});

/// The stored key of slot `i`, formatted on first use. A short-lived process (an Exim delivery)
/// writes a handful of counters at its exit: formatting the keys of every slot (about a
/// thousand) for them cost more than the rest of the flush (issue 17, BENCHMARKS.md "A process
/// per delivery"). Each cell is set by a compare-and-swap, never waited for: a child forked while
/// a parent thread was formatting a key formats it again instead of waiting forever.
fn slot_key(i: usize) -> &'static str {
    use once_cell::race::OnceBox;
    static CELLS: OnceBox<Vec<OnceBox<String>>> = OnceBox::new();
    let cells = CELLS.get_or_init(|| Box::new((0..LAYOUT.1).map(|_| OnceBox::new()).collect()));
    cells[i].get_or_init(|| Box::new(make_slot_key(i))).as_str()
}

fn make_slot_key(i: usize) -> String {
    let (family, start) = FAMILIES
        .iter()
        .zip(&LAYOUT.0)
        .take_while(|(_, start)| **start <= i)
        .last()
        .unwrap_or((&FAMILIES[0], &0));
    let offset = i - start;
    match family.kind {
        Kind::Counter => series_key(family.name, &family.label_values(offset)),
        Kind::Histogram => {
            let base = series_key(family.name, &family.label_values(offset / HIST_SLOTS));
            match LATENCY_BUCKETS.get(offset % HIST_SLOTS) {
                Some(le) => format!("{base}#le={le}"),
                None if offset % HIST_SLOTS == LATENCY_BUCKETS.len() => format!("{base}#le=+Inf"),
                None => format!("{base}#sum_us"),
            }
        }
    }
}

fn series_key(name: &str, labels: &[(&str, &str)]) -> String {
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    if inner.is_empty() { name.to_owned() } else { format!("{name}{{{}}}", inner.join(",")) }
}

/// One series of a snapshot.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A counter's value.
    Counter(u64),
    /// A histogram: the count of each bucket of [`latency_buckets`] and `+Inf` (not cumulative),
    /// and the sum of the observations in seconds.
    Histogram {
        /// Per-bucket counts (not cumulative), `+Inf` last.
        buckets: Vec<u64>,
        /// Sum of the observations, seconds.
        sum: f64,
    },
}

impl Value {
    /// The counter's value, or the histogram's count.
    pub fn count(&self) -> u64 {
        match self {
            Self::Counter(n) => *n,
            Self::Histogram { buckets, .. } => buckets.iter().sum(),
        }
    }
}

/// One series: its family, label values and value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The family.
    pub family: &'static Family,
    /// Label names and values.
    pub labels: Vec<(&'static str, &'static str)>,
    /// The value.
    pub value: Value,
}

/// The counters of one engine (or the sums read back from a store).
#[derive(Debug)]
pub struct Metrics {
    slots: Box<[AtomicU64]>,
    /// When counts were last flushed (Unix seconds; 0: never).
    last_flush: AtomicU64,
    /// What was flushed so far, and by which process.
    flushed: Mutex<Flushed>,
}

#[derive(Debug, Default)]
struct Flushed {
    pid: u32,
    values: Vec<u64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            slots: (0..LAYOUT.1 * SHARDS).map(|_| AtomicU64::new(0)).collect(),
            last_flush: AtomicU64::new(0),
            flushed: Mutex::new(Flushed::default()),
        }
    }
}

impl Metrics {
    #[inline]
    fn add(&self, family: usize, index: usize, n: u64) {
        if let Some(slot) = self.slots.get(shard() * LAYOUT.1 + LAYOUT.0[family] + index) {
            slot.fetch_add(n, Relaxed);
        }
    }

    #[inline]
    fn bump(&self, family: usize, index: usize) {
        self.add(family, index, 1);
    }

    /// The value of every slot, summed over the copies.
    fn values(&self) -> Vec<u64> {
        let mut values = vec![0u64; LAYOUT.1];
        for copy in self.slots.chunks(LAYOUT.1) {
            for (v, slot) in values.iter_mut().zip(copy) {
                *v = v.wrapping_add(slot.load(Relaxed));
            }
        }
        values
    }

    /// Counts a check's answer.
    #[inline]
    pub fn verdict(&self, verdict: Verdict, reason: Reason, mode: Option<Mode>) {
        let v = verdict as usize;
        let m = match mode {
            Some(Mode::Enforce) => 0,
            Some(Mode::Testing) => 1,
            Some(Mode::None) => 2,
            None => 3,
        };
        self.bump(F_VERDICTS, (v * REASON_NAMES.len() + reason as usize) * MODE_NAMES.len() + m);
    }

    /// Counts a policy lookup answered by `layer`.
    #[inline]
    pub fn lookup(&self, layer: Layer) {
        self.bump(F_LOOKUPS, layer as usize);
    }

    /// Counts a TXT discovery.
    pub fn discovery(&self, result: DiscoveryResult) {
        self.bump(F_DISCOVERIES, result as usize);
    }

    /// Counts a policy fetch: `Ok`, or the reason it failed.
    pub fn fetch(&self, result: Result<(), Reason>) {
        let i = match result {
            Ok(()) => 0,
            Err(Reason::StsPolicyInvalid) => 2,
            Err(Reason::StsWebpkiInvalid) => 3,
            Err(_) => 1,
        };
        self.bump(F_FETCHES, i);
    }

    fn observe(&self, family: usize, series: usize, took: Duration) {
        let secs = took.as_secs_f64();
        let bucket = LATENCY_BUCKETS.iter().position(|le| secs <= *le).unwrap_or(LATENCY_BUCKETS.len());
        let base = series * HIST_SLOTS;
        self.bump(family, base + bucket);
        self.add(family, base + HIST_SLOTS - 1, u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
    }

    /// Records how long a DNS lookup took.
    pub fn dns_latency(&self, kind: DnsKind, took: Duration) {
        self.observe(F_DNS, kind as usize, took);
    }

    /// Records how long a policy fetch took.
    pub fn fetch_latency(&self, took: Duration) {
        self.observe(F_FETCH_SECONDS, 0, took);
    }

    /// Every series with its current value, family by family.
    pub fn samples(&self) -> Vec<Sample> {
        let values = self.values();
        let mut out = Vec::new();
        for (f, family) in FAMILIES.iter().enumerate() {
            let base = LAYOUT.0[f];
            for s in 0..family.series() {
                let value = match family.kind {
                    Kind::Counter => Value::Counter(values[base + s]),
                    Kind::Histogram => {
                        let at = base + s * HIST_SLOTS;
                        Value::Histogram {
                            buckets: values[at..at + HIST_SLOTS - 1].to_vec(),
                            sum: values[at + HIST_SLOTS - 1] as f64 / 1e6,
                        }
                    }
                };
                out.push(Sample { family, labels: family.label_values(s), value });
            }
        }
        out
    }

    /// The value of one counter series, by its stored key (e.g.
    /// `mtasts_policy_lookups{layer="memory"}`); 0 for an unknown key.
    pub fn get(&self, key: &str) -> u64 {
        KEYS.1.get(key).map_or(0, |&i| self.values()[i])
    }

    /// The stored key of every slot, in the order of the flat array: `NAME{LABELS}` for a
    /// counter, `NAME{LABELS}#le=BOUND` and `NAME{LABELS}#sum_us` for a histogram's slots.
    pub fn keys() -> &'static [String] {
        &KEYS.0
    }

    /// Adds stored counts (`mtasts stats`): keys this version does not know are returned.
    pub fn add_stored<'a>(&self, rows: impl IntoIterator<Item = (&'a str, u64)>) -> Vec<String> {
        let mut unknown = Vec::new();
        for (key, n) in rows {
            // Into the first copy: only the sum is ever read.
            match KEYS.1.get(key).and_then(|&i| self.slots.get(i)) {
                Some(slot) => {
                    slot.fetch_add(n, Relaxed);
                }
                None => unknown.push(key.to_owned()),
            }
        }
        unknown
    }

    /// True when a flush is due at `now` (cheap: one atomic load). The first call starts the
    /// clock instead, so that a short-lived process (an Exim delivery) writes its counts once,
    /// when its engine ends, rather than also on its first check.
    #[inline]
    pub fn flush_due(&self, now: u64) -> bool {
        let last = self.last_flush.load(Relaxed);
        if last == 0 {
            self.last_flush.store(now, Relaxed);
            return false;
        }
        now >= last.saturating_add(FLUSH_AFTER)
    }

    /// What was counted since the last call, by stored key (non-zero counts only), and marks it
    /// taken. In a forked child, the first call takes nothing and starts from the counts as
    /// they are (the parent's are the parent's to flush).
    pub fn take_deltas(&self, now: u64) -> Vec<(&'static str, u64)> {
        self.last_flush.store(now, Relaxed);
        let pid = std::process::id();
        let mut flushed = self.flushed.lock();
        let current = self.values();
        let inherited = flushed.pid != 0 && flushed.pid != pid;
        if flushed.values.len() != current.len() {
            flushed.values = vec![0; current.len()];
        }
        let mut out = Vec::new();
        if !inherited {
            for (i, (now_v, then)) in current.iter().zip(&flushed.values).enumerate() {
                if now_v > then {
                    out.push((slot_key(i), now_v - then));
                }
            }
        }
        flushed.values = current;
        flushed.pid = pid;
        out
    }

    /// Gives back deltas that could not be stored, so that the next flush retries them.
    pub fn untake(&self, deltas: &[(&str, u64)]) {
        let mut flushed = self.flushed.lock();
        for (key, n) in deltas {
            if let Some(v) = KEYS.1.get(*key).and_then(|&i| flushed.values.get_mut(i)) {
                *v = v.saturating_sub(*n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cover_every_slot_once() {
        assert_eq!(Metrics::keys().len(), LAYOUT.1);
        // The order of the flat array: families in turn, each series' slots together.
        let mut expected = Vec::new();
        for f in &FAMILIES {
            for s in 0..f.series() {
                let base = series_key(f.name, &f.label_values(s));
                match f.kind {
                    Kind::Counter => expected.push(base),
                    Kind::Histogram => {
                        expected.extend(LATENCY_BUCKETS.iter().map(|le| format!("{base}#le={le}")));
                        expected.push(format!("{base}#le=+Inf"));
                        expected.push(format!("{base}#sum_us"));
                    }
                }
            }
        }
        assert_eq!(Metrics::keys(), expected.as_slice());
        assert_eq!(KEYS.1.len(), LAYOUT.1, "keys are unique");
        assert!(
            Metrics::keys()
                .contains(&r#"mtasts_verdicts{verdict="pass",reason="none",mode="enforce"}"#.into())
        );
    }

    #[test]
    fn counts_land_in_their_series_and_flush_as_deltas() {
        let m = Metrics::default();
        m.verdict(Verdict::FailEnforce, Reason::MxMismatch, Some(Mode::Enforce));
        m.verdict(Verdict::FailEnforce, Reason::MxMismatch, Some(Mode::Enforce));
        m.lookup(Layer::Store);
        m.dns_latency(DnsKind::Txt, Duration::from_millis(3));
        m.fetch_latency(Duration::from_secs(30));
        let key = r#"mtasts_verdicts{verdict="fail-enforce",reason="mx-mismatch",mode="enforce"}"#;
        assert_eq!(m.get(key), 2);
        assert_eq!(m.get(r#"mtasts_policy_lookups{layer="store"}"#), 1);
        let samples = m.samples();
        let txt = samples
            .iter()
            .find(|s| s.family.name == "mtasts_dns_lookup_seconds" && s.labels == [("kind", "txt")])
            .expect("txt series");
        let Value::Histogram { buckets, sum } = &txt.value else { panic!("histogram") };
        assert_eq!(buckets[LATENCY_BUCKETS.iter().position(|b| *b == 0.005).expect("bound")], 1);
        assert!((sum - 0.003).abs() < 1e-9);
        let fetch = samples.iter().find(|s| s.family.name == "mtasts_fetch_seconds").expect("fetch");
        let Value::Histogram { buckets, .. } = &fetch.value else { panic!("histogram") };
        assert_eq!(buckets.last(), Some(&1), "30 s lands in +Inf");

        let deltas = m.take_deltas(100);
        assert!(deltas.contains(&(key, 2)), "{deltas:?}");
        assert!(m.take_deltas(101).is_empty(), "nothing new");
        m.lookup(Layer::Store);
        let again = m.take_deltas(102);
        assert_eq!(again, vec![(r#"mtasts_policy_lookups{layer="store"}"#, 1)]);
        m.untake(&again);
        assert_eq!(m.take_deltas(103), again, "a failed write is retried");

        let sums = Metrics::default();
        let unknown = sums.add_stored([(key, 5), ("mtasts_future{x=\"y\"}", 1)]);
        assert_eq!(sums.get(key), 5);
        assert_eq!(unknown, ["mtasts_future{x=\"y\"}"]);
    }

    #[test]
    fn counts_inherited_through_fork_are_left_to_the_parent() {
        let m = Metrics::default();
        m.lookup(Layer::Memory);
        assert_eq!(m.take_deltas(1).len(), 1);
        m.lookup(Layer::Memory);
        // What a forked child sees: the last flush was made by another process.
        m.flushed.lock().pid = std::process::id().wrapping_add(1);
        assert!(m.take_deltas(2).is_empty(), "the parent's unflushed count is not the child's");
        m.lookup(Layer::Memory);
        assert_eq!(m.take_deltas(3), vec![(r#"mtasts_policy_lookups{layer="memory"}"#, 1)]);
    }

    #[test]
    fn counts_of_several_threads_add_up() {
        let m = std::sync::Arc::new(Metrics::default());
        let threads: Vec<_> = (0..SHARDS + 3)
            .map(|_| {
                let m = std::sync::Arc::clone(&m);
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        m.lookup(Layer::Memory);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert_eq!(m.get(r#"mtasts_policy_lookups{layer="memory"}"#), 1000 * (SHARDS as u64 + 3));
    }

    #[test]
    fn flush_is_due_every_few_seconds() {
        let m = Metrics::default();
        assert!(!m.flush_due(1_000), "the first call starts the clock");
        assert!(m.flush_due(1_000 + FLUSH_AFTER));
        m.take_deltas(1_000);
        assert!(!m.flush_due(1_000 + FLUSH_AFTER - 1));
        assert!(m.flush_due(1_000 + FLUSH_AFTER));
    }
}
