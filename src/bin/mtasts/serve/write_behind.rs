//! Write-behind for the persistent store of `mtasts serve`: a policy the engine saves is queued
//! and written by a thread of its own, with the others queued meanwhile, in one transaction.
//!
//! A cold lookup used to wait for its own SQLite write transaction (about 150 µs of CPU per
//! discovery, BENCHMARKS.md "Cold lookups"); the engine answers from its in-process cache anyway,
//! so the write need not be on the request's path. Writing a batch every [`INTERVAL`] (or
//! [`MAX_BATCH`] entries, whichever comes first) makes it one commit for many discoveries.
//!
//! * Reads see queued writes: [`WriteBehind::load`] merges the queued entry of a domain into the
//!   stored one exactly as the store's own write would (newest policy, latest TXT lookup, the
//!   last failure); every other read ([`PolicyStore::list`], the refresher's query, pruning,
//!   removal, the gauges) writes the queue first.
//! * Nothing queued is lost on an orderly stop or reload: [`PolicyStore::flush`] writes the queue
//!   (`mtasts serve` calls it at SIGTERM/SIGINT and at SIGHUP for the engine it replaces), and
//!   dropping the write-behind stops its thread after a last write.
//! * A crash (SIGKILL, power loss) loses at most the last [`INTERVAL`] of discoveries: those
//!   domains are fetched again at their next lookup. That is what a cache that had never held
//!   them would do, which RFC 8461 allows (§3.3, §5.1: a sender fetches when it has no cached
//!   policy); what a sender must not do, forget a policy it has relied on for its `max_age`
//!   across a restart while discovery is blocked (§10.2), stays covered for everything written
//!   more than [`INTERVAL`] before the crash.
//! * A failed write keeps the batch queued (merged under anything queued since) and is retried
//!   at the next interval; until a write succeeds, [`PolicyStore::save`] answers the error, so the
//!   engine reports the store as unavailable, as it does for a direct write that fails.
//!
//! [`AnswersBehind`] does the same for the DNSSEC answers DANE keeps in the store (MX RRsets and
//! TLSA states, `TlsaStore`): with DANE on, each cold lookup wrote its domain's MX answer in a
//! transaction of its own on the request's path. Reads see the queue; a later answer replaces an
//! earlier one, as the store's own write does. Nothing else reads those rows through another
//! path, so there is nothing to write first; an answer lost to a crash is looked up again.
//!
//! Only `mtasts serve` uses this: the library, loaded into MTAs, starts no thread of its own.

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mtasts::Domain;
use mtasts::cache::{Entry, PolicyStore, StoreError, TlsaStore};
use mtasts::ports::{MxLookup, TlsaLookup};
use parking_lot::{Condvar, Mutex};

/// The longest a saved entry waits in the queue.
pub const INTERVAL: Duration = Duration::from_millis(5);
/// A queue this long is written at once.
pub const MAX_BATCH: usize = 256;

/// What a write-behind queues: saves merged by name, written together.
trait Batch: Default + Send + Sync + 'static {
    fn len(&self) -> usize;
    /// Puts back a batch whose write failed, under what was queued since (which is newer).
    fn put_back(&mut self, failed: &Self);
}

/// Writes a batch to the store.
type Write<B> = Box<dyn Fn(&B) -> Result<(), StoreError> + Send + Sync>;

/// A queue and the thread that writes it: the part [`WriteBehind`] and [`AnswersBehind`] share.
struct Queue<B: Batch> {
    shared: Arc<Shared<B>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

struct Shared<B> {
    /// How long the first entry queued waits for others ([`INTERVAL`]).
    interval: Duration,
    /// A queue this long is written at once ([`MAX_BATCH`]).
    max_batch: usize,
    state: Mutex<State<B>>,
    /// Signalled when the queue gets its first entry or reaches [`MAX_BATCH`], and at stop.
    wake: Condvar,
    /// Held for the whole of a write, so that writes keep their order.
    writing: Mutex<()>,
    write: Write<B>,
}

#[derive(Default)]
struct State<B> {
    /// Saved and not yet being written (later saves merged into earlier ones).
    queued: B,
    /// Being written now (still visible to reads until committed).
    in_flight: Option<Arc<B>>,
    /// Why the last write failed, until one succeeds.
    error: Option<StoreError>,
    stop: bool,
}

impl<B: Batch> Queue<B> {
    /// Starts the thread `name`, which writes with `write`.
    fn start(name: &str, interval: Duration, max_batch: usize, write: Write<B>) -> Result<Self, StoreError> {
        let shared = Arc::new(Shared {
            interval,
            max_batch,
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            writing: Mutex::default(),
            write,
        });
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || writer(&shared))
                .map_err(|e| StoreError(format!("cannot start the store writer thread {name}: {e}")))?
        };
        Ok(Self { shared, thread: Mutex::new(Some(thread)) })
    }

    /// Reads the queue: what is queued, and what is being written.
    fn read<R>(&self, f: impl FnOnce(&B, Option<&B>) -> R) -> R {
        let st = self.shared.state.lock();
        f(&st.queued, st.in_flight.as_deref())
    }

    /// Queues a save; the error of the last failed write, if any.
    fn save(&self, put: impl FnOnce(&mut B)) -> Result<(), StoreError> {
        let mut st = self.shared.state.lock();
        put(&mut st.queued);
        let len = st.queued.len();
        if len == 1 || len >= self.shared.max_batch {
            self.shared.wake.notify_one();
        }
        st.error.clone().map_or(Ok(()), Err)
    }

    /// Writes what is queued now.
    fn flush(&self) -> Result<(), StoreError> {
        write_queue(&self.shared)
    }
}

impl<B: Batch> Drop for Queue<B> {
    /// Stops the thread after it has written what is queued.
    fn drop(&mut self) {
        self.shared.state.lock().stop = true;
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.lock().take() {
            let _ = thread.join();
        }
    }
}

fn writer<B: Batch>(shared: &Shared<B>) {
    loop {
        let stop = {
            let mut st = shared.state.lock();
            while st.queued.len() == 0 && !st.stop {
                shared.wake.wait(&mut st);
            }
            let deadline = Instant::now() + shared.interval;
            while st.queued.len() < shared.max_batch && !st.stop {
                if shared.wake.wait_until(&mut st, deadline).timed_out() {
                    break;
                }
            }
            st.stop
        };
        let _ = write_queue(shared);
        if stop {
            return;
        }
    }
}

fn write_queue<B: Batch>(shared: &Shared<B>) -> Result<(), StoreError> {
    let _one = shared.writing.lock();
    let batch = {
        let mut st = shared.state.lock();
        if st.queued.len() == 0 {
            return st.error.clone().map_or(Ok(()), Err);
        }
        let batch = Arc::new(std::mem::take(&mut st.queued));
        st.in_flight = Some(Arc::clone(&batch));
        batch
    };
    let result = (shared.write)(&batch);
    let mut st = shared.state.lock();
    st.in_flight = None;
    match result {
        Ok(()) => {
            st.error = None;
            Ok(())
        }
        Err(e) => {
            st.queued.put_back(&batch);
            st.error = Some(e.clone());
            Err(e)
        }
    }
}

/// Policies queued, by domain.
impl Batch for HashMap<Domain, Entry> {
    fn len(&self) -> usize {
        HashMap::len(self)
    }

    fn put_back(&mut self, failed: &Self) {
        for (domain, entry) in failed {
            let merged = match self.remove(domain) {
                Some(later) => entry.clone().saved_over(&later),
                None => entry.clone(),
            };
            self.insert(domain.clone(), merged);
        }
    }
}

/// A [`PolicyStore`] whose writes are queued and written in batches by a thread of its own.
pub struct WriteBehind {
    inner: Arc<dyn PolicyStore>,
    queue: Queue<HashMap<Domain, Entry>>,
}

impl std::fmt::Debug for WriteBehind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteBehind").field("inner", &self.inner).finish_non_exhaustive()
    }
}

impl WriteBehind {
    /// Wraps `inner` and starts the writing thread.
    pub fn start(inner: Arc<dyn PolicyStore>) -> Result<Arc<Self>, StoreError> {
        Self::start_with(inner, INTERVAL, MAX_BATCH)
    }

    fn start_with(
        inner: Arc<dyn PolicyStore>,
        interval: Duration,
        max_batch: usize,
    ) -> Result<Arc<Self>, StoreError> {
        let store = Arc::clone(&inner);
        let write: Write<HashMap<Domain, Entry>> = Box::new(move |batch| {
            let entries: Vec<(&Domain, &Entry)> = batch.iter().collect();
            store.save_many(&entries)
        });
        let queue = Queue::start("mtasts-store", interval, max_batch, write)?;
        Ok(Arc::new(Self { inner, queue }))
    }
}

impl PolicyStore for WriteBehind {
    fn load(&self, domain: &Domain) -> Result<Option<Entry>, StoreError> {
        let (in_flight, queued) = self.queue.read(|queued, in_flight| {
            (in_flight.and_then(|b| b.get(domain).cloned()), queued.get(domain).cloned())
        });
        let stored = self.inner.load(domain)?;
        if in_flight.is_none() && queued.is_none() {
            return Ok(stored);
        }
        // Writing the same entry twice changes nothing, so a batch committed since the queue was
        // read is merged harmlessly a second time.
        let mut entry = stored;
        for next in [in_flight, queued].iter().flatten() {
            entry = Some(match entry {
                Some(written) => written.saved_over(next),
                None => next.clone(),
            });
        }
        Ok(entry)
    }

    fn save(&self, domain: &Domain, entry: &Entry) -> Result<(), StoreError> {
        if let Some(why) = self.inner.read_only() {
            return Err(StoreError(why));
        }
        self.queue.save(|queued| {
            let next = match queued.remove(domain) {
                Some(earlier) => earlier.saved_over(entry),
                None => entry.clone(),
            };
            queued.insert(domain.clone(), next);
        })
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.queue.flush()
    }

    fn list(&self) -> Result<Vec<(Domain, Entry)>, StoreError> {
        self.flush()?;
        self.inner.list()
    }

    fn due_for_refresh(&self, now: u64, refresh_interval: u64) -> Result<Vec<(Domain, Entry)>, StoreError> {
        self.flush()?;
        self.inner.due_for_refresh(now, refresh_interval)
    }

    fn prune(&self, now: u64, keep: u64) -> Result<u64, StoreError> {
        self.flush()?;
        self.inner.prune(now, keep)
    }

    fn remove(&self, domain: &Domain) -> Result<bool, StoreError> {
        self.flush()?;
        self.inner.remove(domain)
    }

    fn location(&self) -> String {
        self.inner.location()
    }

    fn read_only(&self) -> Option<String> {
        self.inner.read_only()
    }

    fn count_by_mode(&self, now: u64) -> Result<[u64; 3], StoreError> {
        self.flush()?;
        self.inner.count_by_mode(now)
    }

    fn overrides(&self) -> Result<Vec<mtasts::cache::StoredOverride>, StoreError> {
        self.inner.overrides()
    }

    fn override_set(&self, o: &mtasts::cache::StoredOverride) -> Result<(), StoreError> {
        self.inner.override_set(o)
    }

    fn override_clear(&self, domain: &Domain) -> Result<bool, StoreError> {
        self.inner.override_clear(domain)
    }
}

/// DNSSEC answers saved and not written yet, by name, each with the time it expires.
#[derive(Clone, Default)]
struct Answers {
    tlsa: HashMap<Domain, (TlsaLookup, u64)>,
    mx: HashMap<Domain, (MxLookup, u64)>,
}

impl Batch for Answers {
    fn len(&self) -> usize {
        self.tlsa.len() + self.mx.len()
    }

    fn put_back(&mut self, failed: &Self) {
        for (d, a) in &failed.tlsa {
            self.tlsa.entry(d.clone()).or_insert_with(|| a.clone());
        }
        for (d, a) in &failed.mx {
            self.mx.entry(d.clone()).or_insert_with(|| a.clone());
        }
    }
}

/// A [`TlsaStore`] whose saves are queued and written in batches by a thread of its own (see the
/// [module docs](self)).
pub struct AnswersBehind {
    inner: Arc<dyn TlsaStore>,
    queue: Queue<Answers>,
}

impl std::fmt::Debug for AnswersBehind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnswersBehind").field("inner", &self.inner).finish_non_exhaustive()
    }
}

impl AnswersBehind {
    /// Wraps `inner` and starts the writing thread.
    pub fn start(inner: Arc<dyn TlsaStore>) -> Result<Arc<Self>, StoreError> {
        Self::start_with(inner, INTERVAL, MAX_BATCH)
    }

    fn start_with(
        inner: Arc<dyn TlsaStore>,
        interval: Duration,
        max_batch: usize,
    ) -> Result<Arc<Self>, StoreError> {
        let store = Arc::clone(&inner);
        let write: Write<Answers> = Box::new(move |batch| {
            let tlsa: Vec<(&Domain, &TlsaLookup, u64)> =
                batch.tlsa.iter().map(|(d, (a, u))| (d, a, *u)).collect();
            let mx: Vec<(&Domain, &MxLookup, u64)> = batch.mx.iter().map(|(d, (a, u))| (d, a, *u)).collect();
            store.save_answers(&tlsa, &mx)
        });
        let queue = Queue::start("mtasts-answers", interval, max_batch, write)?;
        Ok(Arc::new(Self { inner, queue }))
    }

    /// Writes what is queued now.
    #[cfg(test)]
    fn flush(&self) -> Result<(), StoreError> {
        self.queue.flush()
    }

    /// The queued (or in-flight) answer of `name` in the map `pick` chooses, newest first:
    /// `Some(None)` when the newest has expired at `now` (the store would not give it either).
    fn queued<T: Clone>(
        &self,
        pick: impl Fn(&Answers) -> &HashMap<Domain, (T, u64)>,
        name: &Domain,
        now: u64,
    ) -> Option<Option<(T, u64)>> {
        self.queue.read(|queued, in_flight| {
            let found = pick(queued).get(name).or_else(|| in_flight.and_then(|b| pick(b).get(name)));
            found.map(|(answer, until)| (*until > now).then(|| (answer.clone(), *until)))
        })
    }
}

impl TlsaStore for AnswersBehind {
    fn tlsa_load(&self, host: &Domain, now: u64) -> Result<Option<(TlsaLookup, u64)>, StoreError> {
        match self.queued(|q| &q.tlsa, host, now) {
            Some(answer) => Ok(answer),
            None => self.inner.tlsa_load(host, now),
        }
    }

    fn tlsa_save(&self, host: &Domain, lookup: &TlsaLookup, expires_at: u64) -> Result<(), StoreError> {
        self.queue.save(|q| {
            q.tlsa.insert(host.clone(), (lookup.clone(), expires_at));
        })
    }

    fn mx_load(&self, domain: &Domain, now: u64) -> Result<Option<(MxLookup, u64)>, StoreError> {
        match self.queued(|q| &q.mx, domain, now) {
            Some(answer) => Ok(answer),
            None => self.inner.mx_load(domain, now),
        }
    }

    fn mx_save(&self, domain: &Domain, lookup: &MxLookup, expires_at: u64) -> Result<(), StoreError> {
        self.queue.save(|q| {
            q.mx.insert(domain.clone(), (lookup.clone(), expires_at));
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mtasts::cache::{CachedPolicy, SqliteStore};
    use mtasts::txt::PolicyId;

    fn policy(mx: &str, fetched_at: u64) -> Arc<CachedPolicy> {
        let text = format!("version: STSv1\nmode: enforce\nmx: {mx}\nmax_age: 86400\n");
        let parsed = mtasts::Policy::parse(text.as_bytes()).expect("policy");
        Arc::new(CachedPolicy::new(parsed, PolicyId::parse("id1").expect("id"), text, fetched_at))
    }

    fn entry(mx: &str, fetched_at: u64) -> Entry {
        Entry { policy: Some(policy(mx, fetched_at)), checked_at: fetched_at, failed: None }
    }

    fn temp_store(name: &str) -> (std::path::PathBuf, Arc<dyn PolicyStore>) {
        let dir = std::env::temp_dir().join(format!("mtasts-write-behind-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("policies.sqlite");
        let store = SqliteStore::open(&path, 300).expect("open");
        (path, Arc::new(store))
    }

    /// A write-behind whose thread writes only a full batch of 3, or at the drop.
    fn held(inner: &Arc<dyn PolicyStore>) -> Arc<WriteBehind> {
        WriteBehind::start_with(Arc::clone(inner), Duration::from_secs(3600), 3).expect("start")
    }

    #[test]
    fn queued_entries_are_read_back_and_written_at_drop() {
        let (path, inner) = temp_store("drop");
        let other = SqliteStore::open(&path, 300).expect("second connection");
        let d = Domain::parse("a.test").expect("domain");
        {
            let wb = held(&inner);
            wb.save(&d, &entry("mx1.a.test", 100)).expect("save");
            // A later save of an older policy does not replace the newer one (as in the store),
            // but its TXT lookup time counts.
            let mut older = entry("old.a.test", 50);
            older.checked_at = 200;
            wb.save(&d, &older).expect("save");
            let got = wb.load(&d).expect("load").expect("entry");
            assert_eq!(got.policy.as_ref().map(|p| p.text.contains("mx1.a.test")), Some(true));
            assert_eq!(got.checked_at, 200);
            assert_eq!(other.load(&d).expect("load"), None, "queued, not written yet");
        }
        // The write-behind is gone: another connection sees what it had queued.
        let other = SqliteStore::open(&path, 300).expect("reopen");
        let got = other.load(&d).expect("load").expect("written at drop");
        assert_eq!(got.policy.as_ref().map(|p| p.fetched_at), Some(100));
        assert_eq!(got.checked_at, 200);
        let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
    }

    #[test]
    fn flush_writes_the_queue_and_reads_write_it_first() {
        let (path, inner) = temp_store("flush");
        let wb = held(&inner);
        let other = SqliteStore::open(&path, 300).expect("second connection");
        let (a, b) = (Domain::parse("a.test").expect("a"), Domain::parse("b.test").expect("b"));
        wb.save(&a, &entry("mx.a.test", 100)).expect("save");
        assert_eq!(other.load(&a).expect("load"), None, "queued, not written yet");
        wb.flush().expect("flush");
        assert!(other.load(&a).expect("load").is_some(), "flushed");
        wb.save(&b, &entry("mx.b.test", 100)).expect("save");
        let listed: Vec<Domain> = wb.list().expect("list").into_iter().map(|(d, _)| d).collect();
        assert_eq!(listed, vec![a.clone(), b.clone()]);
        assert!(other.load(&b).expect("load").is_some(), "written before the list");
        assert!(wb.remove(&b).expect("remove"));
        assert!(wb.load(&b).expect("load").is_none());
        // A full batch is written by the thread without a flush.
        let names: Vec<Domain> =
            ["c.test", "d.test", "e.test"].iter().map(|n| Domain::parse(n).expect("domain")).collect();
        for d in &names {
            wb.save(d, &entry("mx.x.test", 100)).expect("save");
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while names.iter().any(|d| other.load(d).expect("load").is_none()) {
            assert!(Instant::now() < deadline, "a full batch was not written");
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(wb);
        let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
    }

    fn mx_answer(exchange: &str) -> MxLookup {
        MxLookup::Records {
            records: vec![mtasts::ports::MxRecord { preference: 10, exchange: exchange.into() }],
            security: mtasts::ports::Security::Secure,
            ttl: 300,
        }
    }

    /// DNSSEC answers: read back from the queue (the latest, unless expired), written in one
    /// batch, at a flush or when the write-behind goes.
    #[test]
    fn answers_are_read_back_and_written_in_one_batch() {
        let (path, _) = temp_store("answers");
        let store: Arc<dyn TlsaStore> = Arc::new(SqliteStore::open(&path, 300).expect("open"));
        let other = SqliteStore::open(&path, 300).expect("second connection");
        let (a, b) = (Domain::parse("a.test").expect("a"), Domain::parse("mx.b.test").expect("b"));
        {
            let ab =
                AnswersBehind::start_with(Arc::clone(&store), Duration::from_secs(3600), 100).expect("start");
            ab.mx_save(&a, &mx_answer("old.a.test"), 1_000).expect("save");
            ab.mx_save(&a, &mx_answer("mx.a.test"), 1_000).expect("save");
            ab.tlsa_save(&b, &TlsaLookup::NotApplicable, 2_000).expect("save");
            assert_eq!(ab.mx_load(&a, 500).expect("load"), Some((mx_answer("mx.a.test"), 1_000)));
            assert_eq!(ab.mx_load(&a, 1_000).expect("load"), None, "expired");
            assert_eq!(ab.tlsa_load(&b, 500).expect("load"), Some((TlsaLookup::NotApplicable, 2_000)));
            assert_eq!(other.mx_load(&a, 500).expect("load"), None, "queued, not written yet");
            ab.flush().expect("flush");
            assert_eq!(other.mx_load(&a, 500).expect("load"), Some((mx_answer("mx.a.test"), 1_000)));
            assert_eq!(other.tlsa_load(&b, 500).expect("load"), Some((TlsaLookup::NotApplicable, 2_000)));
            // Read from the store once written.
            assert_eq!(ab.mx_load(&a, 500).expect("load"), Some((mx_answer("mx.a.test"), 1_000)));
            ab.mx_save(&a, &mx_answer("new.a.test"), 3_000).expect("save");
        }
        assert_eq!(
            other.mx_load(&a, 500).expect("load"),
            Some((mx_answer("new.a.test"), 3_000)),
            "written at drop"
        );

        // One batch for everything queued.
        let counting = Arc::new(CountingAnswers::default());
        let ab = AnswersBehind::start_with(
            Arc::clone(&counting) as Arc<dyn TlsaStore>,
            Duration::from_secs(3600),
            100,
        )
        .expect("start");
        for n in ["a.test", "b.test", "c.test"] {
            ab.mx_save(&Domain::parse(n).expect("domain"), &mx_answer("mx.test"), 1_000).expect("save");
        }
        ab.tlsa_save(&b, &TlsaLookup::NotApplicable, 1_000).expect("save");
        ab.flush().expect("flush");
        assert_eq!(*counting.batches.lock(), vec![(1, 3)]);
        drop(ab);
        let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
    }

    /// A DNSSEC answer store that records the batches it is given (TLSA, MX) and fails while
    /// told to.
    #[derive(Debug, Default)]
    struct CountingAnswers {
        batches: Mutex<Vec<(usize, usize)>>,
        fail: std::sync::atomic::AtomicBool,
    }

    impl TlsaStore for CountingAnswers {
        fn tlsa_load(&self, _: &Domain, _: u64) -> Result<Option<(TlsaLookup, u64)>, StoreError> {
            Ok(None)
        }
        fn tlsa_save(&self, _: &Domain, _: &TlsaLookup, _: u64) -> Result<(), StoreError> {
            Err(StoreError("one at a time".into()))
        }
        fn mx_load(&self, _: &Domain, _: u64) -> Result<Option<(MxLookup, u64)>, StoreError> {
            Ok(None)
        }
        fn mx_save(&self, _: &Domain, _: &MxLookup, _: u64) -> Result<(), StoreError> {
            Err(StoreError("one at a time".into()))
        }
        fn save_answers(
            &self,
            tlsa: &[(&Domain, &TlsaLookup, u64)],
            mx: &[(&Domain, &MxLookup, u64)],
        ) -> Result<(), StoreError> {
            if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(StoreError("disk full".into()));
            }
            self.batches.lock().push((tlsa.len(), mx.len()));
            Ok(())
        }
    }

    #[test]
    fn a_failed_answers_write_is_kept_queued_reported_and_retried() {
        let counting = Arc::new(CountingAnswers::default());
        counting.fail.store(true, std::sync::atomic::Ordering::SeqCst);
        let ab = AnswersBehind::start_with(
            Arc::clone(&counting) as Arc<dyn TlsaStore>,
            Duration::from_secs(3600),
            100,
        )
        .expect("start");
        let d = Domain::parse("a.test").expect("domain");
        ab.mx_save(&d, &mx_answer("mx.a.test"), 1_000).expect("accepted");
        assert_eq!(ab.flush(), Err(StoreError("disk full".into())));
        assert_eq!(ab.mx_load(&d, 500).expect("load"), Some((mx_answer("mx.a.test"), 1_000)), "still queued");
        assert_eq!(ab.mx_save(&d, &mx_answer("mx2.a.test"), 1_000), Err(StoreError("disk full".into())));
        counting.fail.store(false, std::sync::atomic::Ordering::SeqCst);
        ab.flush().expect("retried");
        assert_eq!(*counting.batches.lock(), vec![(0, 1)]);
        assert_eq!(ab.mx_load(&d, 500).expect("load"), None, "written (this store forgets)");
    }

    /// A store whose writes fail until told otherwise.
    #[derive(Debug, Default)]
    struct Failing {
        ok: std::sync::atomic::AtomicBool,
        rows: Mutex<HashMap<Domain, Entry>>,
    }

    impl PolicyStore for Failing {
        fn load(&self, domain: &Domain) -> Result<Option<Entry>, StoreError> {
            Ok(self.rows.lock().get(domain).cloned())
        }
        fn save(&self, domain: &Domain, entry: &Entry) -> Result<(), StoreError> {
            if !self.ok.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(StoreError("disk full".into()));
            }
            self.rows.lock().insert(domain.clone(), entry.clone());
            Ok(())
        }
        fn list(&self) -> Result<Vec<(Domain, Entry)>, StoreError> {
            Ok(self.rows.lock().iter().map(|(d, e)| (d.clone(), e.clone())).collect())
        }
        fn remove(&self, domain: &Domain) -> Result<bool, StoreError> {
            Ok(self.rows.lock().remove(domain).is_some())
        }
        fn location(&self) -> String {
            "failing".into()
        }
    }

    #[test]
    fn a_failed_write_is_kept_queued_reported_and_retried() {
        let inner = Arc::new(Failing::default());
        let wb = held(&(Arc::clone(&inner) as Arc<dyn PolicyStore>));
        let d = Domain::parse("a.test").expect("domain");
        wb.save(&d, &entry("mx.a.test", 100)).expect("accepted");
        assert_eq!(wb.flush(), Err(StoreError("disk full".into())));
        // Still visible, and the next save says the store is failing.
        assert!(wb.load(&d).expect("load").is_some());
        assert_eq!(wb.save(&d, &entry("mx.a.test", 100)), Err(StoreError("disk full".into())));
        assert!(wb.list().is_err(), "a read that needs the queue written fails with it");
        inner.ok.store(true, std::sync::atomic::Ordering::SeqCst);
        wb.flush().expect("retried");
        assert!(inner.rows.lock().contains_key(&d));
        wb.save(&d, &entry("mx.a.test", 101)).expect("the error is cleared");
    }
}
