//! The engines the library keeps for the life of a process, in one registry: the default engine
//! of `mtasts_check` (and `mtasts_record`, Exim calls without `{config=...}`) and the engines of
//! Exim's `{config=...}` argument, one per path. Each is built once per process, on first use;
//! an exit handler writes the pending TLSRPT counts of every one of them.
//!
//! Fork safety: the registry, like every process-wide value of the C ABI, lives in a
//! [`PerProcess`], so a forked child builds its own engines and never locks, drops or flushes its
//! parent's.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::panic::catch_unwind;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use once_cell::sync::OnceCell;
use parking_lot::Mutex;

use crate::config::Config;
use crate::engine::{Engine, InputError, Outcome, Tls};
use crate::policy::Mode;
use crate::remote::{Answer, Remote, Request, Unavailable};
use crate::verdict::{Dane, Reason};

/// A value of which each process has its own, reached without touching anything a parent process
/// left behind at `fork()`.
///
/// After `fork()` a child must neither lock a mutex (nor wait on a cell being initialised)
/// inherited from the parent (another thread of the parent may have held it at the fork: it stays
/// held forever in the child) nor drop or flush the parent's engines (their pending TLSRPT counts
/// are the parent's, which writes them itself). So the value lives behind a pointer tagged with
/// the pid that made it: a process that finds another pid's value installs a fresh one with a
/// compare-and-swap and leaves the inherited one as it is, never locked, never dropped (its memory
/// goes with the child's exit). The fresh value points to the inherited one, which so stays
/// reachable (leak checkers such as valgrind count it as reachable memory, not as a leak).
pub(crate) struct PerProcess<T> {
    current: AtomicPtr<Owned<T>>,
    _value: PhantomData<T>,
}

struct Owned<T> {
    pid: u32,
    value: T,
    /// The value this one replaced: the parent process's (NULL in the first process).
    _inherited: *const Owned<T>,
}

impl<T: Default> PerProcess<T> {
    pub(crate) const fn new() -> Self {
        Self { current: AtomicPtr::new(std::ptr::null_mut()), _value: PhantomData }
    }

    /// This process's value, made (empty) on first use in each process.
    pub(crate) fn get(&self) -> &T {
        let pid = std::process::id();
        let seen = self.current.load(Ordering::Acquire);
        // SAFETY: a non-NULL pointer comes from `Box::into_raw` below and is never freed.
        if let Some(owned) = unsafe { seen.as_ref() } {
            if owned.pid == pid {
                return &owned.value;
            }
        }
        let fresh = Box::into_raw(Box::new(Owned { pid, value: T::default(), _inherited: seen }));
        match self.current.compare_exchange(seen, fresh, Ordering::AcqRel, Ordering::Acquire) {
            // SAFETY: just made, and now never freed. `seen` (NULL or a parent's) is left alone.
            Ok(_) => unsafe { &(*fresh).value },
            Err(installed) => {
                // Another thread of this process installed one first (only this process writes
                // the pointer after the fork, always with its own pid).
                // SAFETY: `fresh` was never shared; `installed` is non-NULL and never freed.
                unsafe {
                    drop(Box::from_raw(fresh));
                    &(*installed).value
                }
            }
        }
    }

    /// This process's value if it made one; never makes one (for exit handlers).
    pub(crate) fn get_if_made(&self) -> Option<&T> {
        // SAFETY: as in `get`.
        let owned = unsafe { self.current.load(Ordering::Acquire).as_ref() }?;
        (owned.pid == std::process::id()).then_some(&owned.value)
    }
}

/// Where an engine's configuration comes from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Source {
    /// `$MTASTS_CONFIG`, else `/etc/mtasts/mtasts.toml` if present, else the defaults.
    Default,
    /// A path given with Exim's `{config=...}`.
    File(PathBuf),
}

impl Source {
    /// Reads the configuration. The first front of a process (`first`) builds its engine only when
    /// a check needs it, and then leaves the DNSSEC trust anchor file to the first validation (a
    /// process per delivery seldom validates anything); a reload builds the engine at once and
    /// checks the file, so that a changed configuration with a bad file is refused and the one in
    /// force stays.
    fn build(&self, first: bool) -> Result<Front, String> {
        let config = match self {
            Self::Default => Config::load(None),
            Self::File(path) => Config::from_file(path),
        };
        let config = config.inspect(|c| crate::logging::apply(&c.log)).map_err(|e| e.to_string())?;
        let front = Front { remote: config.remote(), engine: OnceCell::new(), config };
        if !first {
            if front.remote.is_some() {
                // Calls go to mtasts serve: the engine stays unbuilt (no store opened) until one
                // is judged here; what a build would refuse cheaply is checked now.
                front.config.check_trust_anchor().map_err(|e| e.to_string())?;
            } else {
                let engine = front.config.build_engine().map_err(|e| e.to_string())?;
                let _ = front.engine.set(Arc::new(engine));
            }
        }
        Ok(front)
    }

    /// The file whose changes make the engine be built again: the one `build` reads (for the
    /// default source, the default path even while it does not exist: creating it counts).
    fn watched(&self) -> PathBuf {
        match self {
            Self::Default => std::env::var_os(crate::config::ENV_VAR)
                .filter(|v| !v.is_empty())
                .map_or_else(|| PathBuf::from(crate::config::DEFAULT_PATH), PathBuf::from),
            Self::File(path) => path.clone(),
        }
    }
}

/// What identifies a version of a configuration file: modification time, size and inode
/// (`None`: the file does not exist or cannot be read).
type Stamp = Option<(std::time::SystemTime, u64, u64)>;

fn stamp(path: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

/// What a configuration of the registry gives the calls: the `mtasts serve` its checks are handed
/// to, if `[serve] check_socket` is set ([`crate::remote`]), and the engine, built by the first
/// call that needs it: a process whose checks `mtasts serve` judges builds none (no store opened,
/// no trust anchor read).
pub(crate) struct Front {
    config: Config,
    remote: Option<Remote>,
    engine: OnceCell<Arc<Engine>>,
}

impl Front {
    /// The engine, built on first use (a failed build is tried again by the next call).
    pub(crate) fn engine(&self) -> Result<Arc<Engine>, String> {
        self.engine
            .get_or_try_init(|| self.config.build_engine_lazy().map(Arc::new).map_err(|e| e.to_string()))
            .cloned()
    }

    /// The engine if a call built it.
    fn built(&self) -> Option<&Arc<Engine>> {
        self.engine.get()
    }

    /// Answers `request`: handed to `mtasts serve` when `[serve] check_socket` is set and it
    /// answers, else judged by the engine with the same code ([`crate::remote::judge`]). A server
    /// that cannot be reached (or does not answer in time, or answers what cannot be read, or
    /// runs under another configuration) is reported at `warn` each time it is found so (at most
    /// every [`crate::remote::DOWN_FOR`]), and the call judged here, as without the setting; so
    /// is a call it found bad (not a domain name), so that the caller gets the engine's own
    /// error. A session recorded here is written at once.
    fn answer(&self, request: &Request<'_>) -> Result<Answer, FrontError> {
        if let Some(remote) = &self.remote {
            match remote.ask(request) {
                Ok(Answer::Input(_)) => {}
                Ok(answer) if answer.fits(request) => return Ok(answer),
                Ok(other) => tracing::warn!(
                    target: "mtasts",
                    "mtasts serve at unix:{} answered {request:?} with {other:?}; this process judges the call itself",
                    remote.path().display()
                ),
                Err(Unavailable { why, fresh }) => {
                    if fresh {
                        tracing::warn!(target: "mtasts", "{why}; this process judges its calls itself for a while");
                    }
                }
            }
        }
        let engine = self.engine().map_err(FrontError::Config)?;
        let answer = crate::remote::judge(&engine, request).map_err(FrontError::Input)?;
        if matches!(answer, Answer::Recorded) {
            engine.flush_reports();
        }
        Ok(answer)
    }

    /// Checks a delivery ([`Front::answer`]).
    pub(crate) fn check_with(
        &self,
        domain: &str,
        mx: &str,
        tls: Tls<'_>,
        dane: Dane,
    ) -> Result<Outcome, FrontError> {
        match self.answer(&Request::Check { domain, mx, tls, dane })? {
            Answer::Judged(outcome) => Ok(outcome),
            other => Err(FrontError::Config(format!("mtasts serve answered a check with {other:?}"))),
        }
    }

    /// The mode of `domain`'s policy in force (`None`: no policy), as [`Front::answer`] gets it.
    pub(crate) fn mode(&self, domain: &str) -> Result<Option<Mode>, FrontError> {
        match self.answer(&Request::Mode { domain })? {
            Answer::Mode(mode) => Ok(mode),
            other => Err(FrontError::Config(format!("mtasts serve answered a mode request with {other:?}"))),
        }
    }

    /// Counts a session the MTA judged itself (without details), as [`Front::answer`] does.
    pub(crate) fn record(&self, domain: &str, mx: &str, result: Option<Reason>) -> Result<(), FrontError> {
        match self.answer(&Request::Record { domain, mx, result })? {
            Answer::Recorded => Ok(()),
            other => {
                Err(FrontError::Config(format!("mtasts serve answered a record request with {other:?}")))
            }
        }
    }
}

/// Why a check of a [`Front`] failed.
#[derive(Debug)]
pub(crate) enum FrontError {
    /// The engine could not be built.
    Config(String),
    /// A bad argument.
    Input(InputError),
}

/// A front of the registry, with the configuration version it was built from. A new version
/// of the file replaces the front; calls already holding the old one finish with it, and the
/// last of them drops it (its engine's pending TLSRPT counts are then flushed).
struct Loaded {
    front: Mutex<Arc<Front>>,
    /// The version the engine was built from, or the last version that failed to build.
    stamp: Mutex<Stamp>,
}

/// Every engine this process built, by source. An engine is built in its cell outside the map's
/// lock (reading roots and opening the store take a while); threads asking for the same source
/// meanwhile wait for it (`OnceCell::get_or_try_init`), and a failed build is retried by the next
/// call.
#[derive(Default)]
struct Engines {
    by_source: Mutex<HashMap<Source, Arc<OnceCell<Loaded>>>>,
}

impl Engines {
    fn front(&self, source: Source) -> Result<Arc<Front>, String> {
        let cell = Arc::clone(self.by_source.lock().entry(source.clone()).or_default());
        let loaded = cell.get_or_try_init(|| {
            flush_at_exit();
            let before = stamp(&source.watched());
            source.build(true).map(|f| Loaded { front: Mutex::new(Arc::new(f)), stamp: Mutex::new(before) })
        })?;
        Ok(Arc::clone(&loaded.front.lock()))
    }

    /// Builds again every engine whose configuration file changed since it was built. A new
    /// configuration that fails to build is reported (a `warn` event) and the engine in use kept;
    /// it is tried again when the file changes again. True when an engine was replaced.
    fn reload_changed(&self) -> bool {
        let cells: Vec<(Source, Arc<OnceCell<Loaded>>)> =
            self.by_source.lock().iter().map(|(s, c)| (s.clone(), Arc::clone(c))).collect();
        let mut replaced = false;
        for (source, cell) in cells {
            let Some(loaded) = cell.get() else { continue };
            let path = source.watched();
            let now = stamp(&path);
            if *loaded.stamp.lock() == now {
                continue;
            }
            *loaded.stamp.lock() = now;
            match source.build(false) {
                Ok(engine) => {
                    tracing::info!(target: "mtasts", config = %path.display(), "configuration reloaded");
                    // The old engine is dropped by its last user, outside this lock.
                    let old = std::mem::replace(&mut *loaded.front.lock(), Arc::new(engine));
                    drop(old);
                    replaced = true;
                }
                Err(e) => {
                    tracing::warn!(
                        target: "mtasts",
                        config = %path.display(),
                        "the changed configuration is not used: {e}; the previous one stays in force"
                    );
                }
            }
        }
        replaced
    }

    /// The engines built so far, or `None` when another thread holds the registry (exit handlers
    /// never wait).
    fn built(&self) -> Option<Vec<Arc<Engine>>> {
        let by_source = self.by_source.try_lock()?;
        Some(
            by_source
                .values()
                .filter_map(|cell| cell.get().and_then(|l| l.front.try_lock().map(|f| Arc::clone(&f))))
                .filter_map(|front| front.built().cloned())
                .collect(),
        )
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.by_source.lock().is_empty()
    }
}

/// The registry of this process.
static ENGINES: PerProcess<Engines> = PerProcess::new();

/// The front of an Exim `{config=...}` path, made on first use in each process.
pub(crate) fn configured_front(path: &Path) -> Result<Arc<Front>, String> {
    reload_if_due();
    ENGINES.get().front(Source::File(path.to_path_buf()))
}

/// Incremented when an engine of the registry is replaced by a reload, so that per-thread
/// references to the default engine are dropped.
static RELOAD_GENERATION: AtomicU64 = AtomicU64::new(0);
/// The second (of the coarse monotonic clock) of the last look at the configuration files.
static LAST_RELOAD_CHECK: AtomicU64 = AtomicU64::new(0);

/// Looks at the configuration files of the registry's engines at most once a second (one thread
/// does; the others go on), and builds again those that changed.
fn reload_if_due() {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: writes the current time into `now`; CLOCK_MONOTONIC_COARSE is answered from the
    // vDSO without a system call.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut now) } != 0 {
        return;
    }
    let second = u64::try_from(now.tv_sec).unwrap_or(0);
    let last = LAST_RELOAD_CHECK.load(Ordering::Relaxed);
    if second == last
        || LAST_RELOAD_CHECK.compare_exchange(last, second, Ordering::AcqRel, Ordering::Relaxed).is_err()
    {
        return;
    }
    if last != 0 && ENGINES.get().reload_changed() {
        RELOAD_GENERATION.fetch_add(1, Ordering::AcqRel);
    }
}

/// The default engine of this process, built on first use (see [`default_front`]).
pub(crate) fn default_engine() -> Result<Arc<Engine>, String> {
    default_front()?.engine()
}

/// The default front of this process, made on first use from the configuration file
/// (`$MTASTS_CONFIG`, else `/etc/mtasts/mtasts.toml` if present, else defaults), and made anew
/// in a forked child.
pub(crate) fn default_front() -> Result<Arc<Front>, String> {
    thread_local! {
        /// This thread's reference to the default front, with the fork and reload generations it
        /// was taken in: the hot path then makes no system call (getpid) and takes no shared lock.
        static MINE: std::cell::RefCell<Option<(u64, u64, Arc<Front>)>> = const { std::cell::RefCell::new(None) };
    }
    reload_if_due();
    let forks = crate::forks::generation();
    let reloads = RELOAD_GENERATION.load(Ordering::Acquire);
    let mine = MINE.with(|m| {
        m.borrow().as_ref().filter(|(f, r, _)| *f == forks && *r == reloads).map(|(_, _, e)| Arc::clone(e))
    });
    if let Some(engine) = mine {
        return Ok(engine);
    }
    let engine = ENGINES.get().front(Source::Default)?;
    let before = MINE.with(|m| m.replace(Some((forks, reloads, Arc::clone(&engine)))));
    match before {
        // A reference taken before a fork is to the parent's engine: forgotten, never dropped
        // (the last reference dropped would flush the parent's pending counts from the child).
        Some((f, _, inherited)) if f != forks => std::mem::forget(inherited),
        // An engine a reload replaced: this thread's reference goes (the last one flushes it).
        other => drop(other),
    }
    Ok(engine)
}

/// Registers, once per process, an exit handler that writes the pending TLSRPT counts of every
/// engine in the registry to their stores: MTAs such as Exim run one short process per delivery
/// and leave with `exit()`, never dropping the engines. A forked child that exits writes only its
/// own engines' counts (the handler is inherited; the parent's registry is not this process's).
fn flush_at_exit() {
    static REGISTERED: std::sync::Once = std::sync::Once::new();
    extern "C" fn flush() {
        let _ = catch_unwind(|| {
            // Never wait at exit (a thread may have held the registry when exit() began).
            for engine in ENGINES.get_if_made().and_then(Engines::built).unwrap_or_default() {
                engine.flush_reports();
            }
        });
    }
    REGISTERED.call_once(|| {
        // SAFETY: registering a plain extern "C" function with no arguments; it catches panics.
        unsafe { libc::atexit(flush) };
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::panic::AssertUnwindSafe;

    #[test]
    fn a_first_build_reads_no_trust_anchor_and_a_reload_refuses_a_bad_one() {
        let dir = std::env::temp_dir().join(format!("mtasts-registry-anchor-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let (config, anchor) = (dir.join("mtasts.toml"), dir.join("missing.ds"));
        std::fs::write(
            &config,
            format!(
                "[dns]\nnameservers = [\"127.0.0.1:9\"]\ndnssec = \"validate\"\ntrust_anchor = \"{}\"\n\
                 [cache]\npath = \"memory\"\n",
                anchor.display()
            ),
        )
        .expect("config");
        let source = Source::File(config);
        let front = source.build(true).expect("a first build reads no trust anchor");
        assert!(front.engine().is_ok(), "nor does the engine built at the first check");
        let Err(e) = source.build(false) else { panic!("a reload must check the trust anchor") };
        assert!(e.contains("[dns] trust_anchor") && e.contains(&anchor.display().to_string()), "{e}");
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Forks, runs `child` in the child (exit status 0 when it returns true), and waits for it
    /// with a generous deadline that only detects a hang (a hung child is killed, and fails).
    fn in_child(child: impl FnOnce() -> bool) -> Option<i32> {
        // SAFETY: the child runs `child` and leaves with `_exit`, never returning into the test
        // harness.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let ok = catch_unwind(AssertUnwindSafe(child)).unwrap_or(false);
            // SAFETY: ends the child without running the parent's exit handlers.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            let mut status = 0;
            // SAFETY: waits for our own child.
            let done = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if done == pid {
                return libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
            }
            if std::time::Instant::now() > deadline {
                // SAFETY: our own child, hung: killed and reaped.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, &mut status, 0);
                }
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    #[test]
    fn a_child_never_locks_what_a_parent_thread_held_at_fork() {
        let registry: &'static PerProcess<Mutex<Option<u32>>> = Box::leak(Box::new(PerProcess::new()));
        let cells: &'static PerProcess<OnceCell<u32>> = Box::leak(Box::new(PerProcess::new()));
        *registry.get().lock() = Some(std::process::id());
        let (locked_tx, locked_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        // Another thread holds the locks at the moment of the fork, as a thread inside a check or
        // building an engine would, and is inside a cell's initialisation.
        let holder = std::thread::spawn(move || {
            let _engines = ENGINES.get().by_source.lock();
            let _messages = super::super::exim::KEPT_MESSAGES.get().lock();
            let _mine = registry.get().lock();
            cells.get().get_or_init(|| {
                locked_tx.send(()).expect("send");
                release_rx.recv().expect("release");
                1
            });
        });
        locked_rx.recv().expect("locked");
        let parent_slot: *const Mutex<Option<u32>> = registry.get();
        let status = in_child(move || {
            // A fresh, empty value of the child's own; the parent's is neither locked nor dropped.
            let mine = registry.get();
            let fresh = !std::ptr::eq(mine, parent_slot) && mine.lock().is_none();
            *mine.lock() = Some(std::process::id());
            let engines = ENGINES.get().is_empty();
            let messages = super::super::exim::KEPT_MESSAGES.get().lock().is_empty();
            let cell = *cells.get().get_or_init(|| 2) == 2;
            fresh && engines && messages && cell && std::ptr::eq(registry.get(), mine)
        });
        release_tx.send(()).expect("send");
        holder.join().expect("holder");
        assert_eq!(status, Some(0), "the child hung (None) or saw the parent's state");
        // The parent's value is untouched.
        assert_eq!(*registry.get().lock(), Some(std::process::id()));
        assert!(std::ptr::eq(registry.get(), parent_slot));
        assert_eq!(cells.get().get(), Some(&1));
    }
}
