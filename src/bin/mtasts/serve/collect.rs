//! `[serve] tlsrpt_socket` (or `--tlsrpt-socket`): the unix datagram socket taking the TLSRPT
//! datagrams of Postfix 3.10 (`smtp_tlsrpt_enable = yes`, `smtp_tlsrpt_socket_name`), one per TLS
//! session, in libtlsrpt's format (docs/tlsrpt-collect.md).
//!
//! Two threads. The reader takes each datagram off the socket and checks it whole
//! ([`mtasts::tlsrpt::collect::parse_datagram`]); a datagram that is malformed or larger than
//! [`MAX_DATAGRAM`] is dropped: counted in `mtasts_serve_tlsrpt_datagrams_total{result="dropped"}`
//! and logged (at most one line a second, with the number of drops not logged since). Good ones
//! go, through a queue of [`QUEUE`] sessions, to the counter, which adds them to the counts of the
//! engine in force ([`mtasts::Engine::record_reported`]); the engine writes them to the store with
//! its own counts, and the counter flushes what is pending after a second without sessions and
//! at shutdown. So the reader never waits on the store: the socket's queue is short (Linux's
//! `net.unix.max_dgram_qlen`, 10 by default on many kernels) and libtlsrpt sends without
//! blocking, so a reader that paused would make the MTA lose datagrams. Should the counter fall
//! [`QUEUE`] sessions behind, further datagrams are dropped (and counted so), never waited for.
//! At shutdown the datagrams already queued on the socket are still read and counted.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mtasts::Engine;
use mtasts::tlsrpt::collect::{MAX_DATAGRAM, parse_datagram};
use mtasts::tlsrpt::report::DayCounts;

use super::metrics::Counters;
use super::settings::SocketAccess;

/// How long a read waits before the reader looks at the stop flag, and the counter waits before
/// it flushes pending counts.
const IDLE: Duration = Duration::from_secs(1);

/// Sessions checked but not yet counted, at most (a few MiB for ordinary datagrams; bounded by
/// 4096 x 64 KiB whatever a sender does).
pub const QUEUE: usize = 4096;

/// The running collector.
pub struct Collector {
    reader: JoinHandle<()>,
    counter: JoinHandle<()>,
    path: PathBuf,
}

impl Collector {
    /// The socket path, for the start-up line.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits for the threads (the reader ends within [`IDLE`] of `stopping` turning true, the
    /// counter once it has counted and flushed what the reader passed on) and removes the socket
    /// file.
    pub fn join(self) {
        let _ = self.reader.join();
        let _ = self.counter.join();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Removes a datagram socket file left by a collector that is gone; refuses to touch anything
/// else, or a socket something still reads.
fn remove_stale(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::FileTypeExt as _;
    let Ok(meta) = std::fs::symlink_metadata(path) else { return Ok(()) };
    if !meta.file_type().is_socket() {
        return Err(format!("[serve] tlsrpt_socket {}: the file exists and is not a socket", path.display()));
    }
    let probe = UnixDatagram::unbound().map_err(|e| format!("[serve] tlsrpt_socket: {e}"))?;
    if probe.connect(path).is_ok() {
        return Err(format!("[serve] tlsrpt_socket {}: another process reads that socket", path.display()));
    }
    std::fs::remove_file(path)
        .map_err(|e| format!("[serve] tlsrpt_socket: cannot remove the stale socket {}: {e}", path.display()))
}

/// Binds `path` (given `access`) and starts the reading thread. `engine` gives the engine in
/// force at each datagram (a reload replaces it); the thread ends once `stopping` says so.
pub fn spawn(
    path: &Path,
    access: &SocketAccess,
    engine: Arc<dyn Fn() -> Arc<Engine> + Send + Sync>,
    stopping: Arc<dyn Fn() -> bool + Send + Sync>,
    counters: Arc<Counters>,
) -> Result<Collector, String> {
    remove_stale(path)?;
    let (socket, ()) = access.bind(
        path,
        |p: &Path| UnixDatagram::bind(p),
        |e| format!("[serve] tlsrpt_socket: cannot bind {}: {e}", path.display()),
        |s| s.set_read_timeout(Some(IDLE)).map_err(|e| format!("[serve] tlsrpt_socket: {e}")),
    )?;
    let (queue, sessions) = std::sync::mpsc::sync_channel::<DayCounts>(QUEUE);
    let started = std::thread::Builder::new()
        .name("mtasts-tlsrpt-count".into())
        .spawn(move || count_loop(&sessions, &*engine))
        .and_then(|counter| {
            std::thread::Builder::new()
                .name("mtasts-tlsrpt".into())
                .spawn(move || read_loop(&socket, &queue, &*stopping, &counters))
                .map(|reader| (reader, counter))
        });
    match started {
        Ok((reader, counter)) => Ok(Collector { reader, counter, path: path.to_owned() }),
        Err(e) => {
            let _ = std::fs::remove_file(path);
            Err(format!("cannot start the TLSRPT collector threads: {e}"))
        }
    }
}

/// The counter: adds each checked session to the engine's counts; flushes after [`IDLE`] without
/// any, and when the reader is gone.
fn count_loop(sessions: &Receiver<DayCounts>, engine: &dyn Fn() -> Arc<Engine>) {
    let mut pending = false;
    loop {
        match sessions.recv_timeout(IDLE) {
            Ok(counts) => {
                engine().record_reported(&counts);
                pending = true;
            }
            Err(RecvTimeoutError::Timeout) => {
                if std::mem::take(&mut pending) {
                    engine().flush_reports();
                }
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    engine().flush_reports();
}

/// Drop lines, at most one a second.
#[derive(Default)]
struct DropLog {
    last: Option<Instant>,
    unlogged: u64,
}

impl DropLog {
    /// Reports the drops not logged yet, whatever the time.
    fn unlogged_at_exit(&mut self) {
        if self.unlogged > 0 {
            eprintln!("mtasts serve: warning: {} more TLSRPT datagram(s) dropped", self.unlogged);
            self.unlogged = 0;
        }
    }

    /// Reports the drops not logged yet, once their second is over.
    fn catch_up(&mut self) {
        if self.unlogged > 0 && self.last.is_some_and(|t| t.elapsed() >= Duration::from_secs(1)) {
            eprintln!("mtasts serve: warning: {} more TLSRPT datagram(s) dropped", self.unlogged);
            self.unlogged = 0;
            self.last = Some(Instant::now());
        }
    }

    fn dropped(&mut self, why: &str) {
        if self.last.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            self.unlogged += 1;
            return;
        }
        let more = match std::mem::take(&mut self.unlogged) {
            0 => String::new(),
            n => format!(" ({n} more dropped since the last line)"),
        };
        eprintln!("mtasts serve: warning: TLSRPT datagram dropped: {why}{more}");
        self.last = Some(Instant::now());
    }
}

/// The reader: checks each datagram and passes its session to the counter (the queue is dropped,
/// ending the counter, when this returns).
fn read_loop(
    socket: &UnixDatagram,
    queue: &SyncSender<DayCounts>,
    stopping: &dyn Fn() -> bool,
    counters: &Counters,
) {
    // One byte more than the largest datagram taken: a read that fills it was larger (the kernel
    // cuts a datagram to the buffer and drops the rest).
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    let mut log = DropLog::default();
    let take = |n: usize, buf: &[u8], log: &mut DropLog| {
        let why = if n > MAX_DATAGRAM {
            format!("larger than {MAX_DATAGRAM} bytes")
        } else {
            match parse_datagram(&buf[..n]).map(|counts| queue.try_send(counts)) {
                Ok(Ok(())) => return counters.tlsrpt_datagram(false),
                Ok(Err(TrySendError::Full(_))) => {
                    format!("{QUEUE} sessions are waiting to be counted (the store is slow?)")
                }
                Ok(Err(TrySendError::Disconnected(_))) => "the counting thread is gone".to_owned(),
                Err(e) => e.to_string(),
            }
        };
        counters.tlsrpt_datagram(true);
        log.dropped(&why);
    };
    while !stopping() {
        match socket.recv(&mut buf) {
            Ok(n) => take(n, &buf, &mut log),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                log.catch_up();
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                eprintln!("mtasts serve: warning: TLSRPT socket: {e}");
                std::thread::sleep(IDLE);
            }
        }
    }
    // Stopping: what was sent before is still taken (the socket is not read once this returns).
    if socket.set_nonblocking(true).is_ok() {
        loop {
            match socket.recv(&mut buf) {
                Ok(n) => take(n, &buf, &mut log),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    }
    log.unlogged_at_exit();
}
