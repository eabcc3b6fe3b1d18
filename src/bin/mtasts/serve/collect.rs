//! `[serve] tlsrpt_socket` (or `--tlsrpt-socket`): the unix datagram socket taking the TLSRPT
//! datagrams of Postfix 3.10 (`smtp_tlsrpt_enable = yes`, `smtp_tlsrpt_socket_name`), one per TLS
//! session, in libtlsrpt's format (docs/tlsrpt-collect.md).
//!
//! One thread reads the socket. Each datagram is checked whole by
//! [`mtasts::tlsrpt::collect::parse_datagram`] and its session added to the counts of the engine
//! in force ([`mtasts::Engine::record_reported`]), which flushes them to the store with its own;
//! counts pending when the socket is idle for a second are flushed then, and at shutdown. A
//! datagram that is malformed or larger than [`MAX_DATAGRAM`] is dropped: counted in
//! `mtasts_serve_tlsrpt_datagrams_total{result="dropped"}` and logged (at most one line a second, with
//! the number of drops not logged since). Nothing a sender does can stop the thread or make it
//! wait on that sender: datagrams are read as they come, and a full socket buffer only makes
//! libtlsrpt's non-blocking send fail on the MTA's side.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mtasts::Engine;
use mtasts::tlsrpt::collect::{MAX_DATAGRAM, parse_datagram};

use super::metrics::Counters;
use super::settings::SocketAccess;

/// How long a read waits before the thread looks at the stop flag and flushes pending counts.
const IDLE: Duration = Duration::from_secs(1);

/// The running collector.
pub struct Collector {
    thread: JoinHandle<()>,
    path: PathBuf,
}

impl Collector {
    /// The socket path, for the start-up line.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits for the thread (it ends within [`IDLE`] of `stopping` turning true) and removes the
    /// socket file.
    pub fn join(self) {
        let _ = self.thread.join();
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
    let thread = std::thread::Builder::new()
        .name("mtasts-tlsrpt".into())
        .spawn(move || read_loop(&socket, &*engine, &*stopping, &counters))
        .map_err(|e| format!("cannot start the TLSRPT collector thread: {e}"))?;
    Ok(Collector { thread, path: path.to_owned() })
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

fn read_loop(
    socket: &UnixDatagram,
    engine: &dyn Fn() -> Arc<Engine>,
    stopping: &dyn Fn() -> bool,
    counters: &Counters,
) {
    // One byte more than the largest datagram taken: a read that fills it was larger (the kernel
    // cuts a datagram to the buffer and drops the rest).
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    let mut pending = false;
    let mut log = DropLog::default();
    let take = |n: usize, buf: &[u8], log: &mut DropLog| {
        if n > MAX_DATAGRAM {
            counters.tlsrpt_datagram(true);
            log.dropped(&format!("larger than {MAX_DATAGRAM} bytes"));
            return false;
        }
        match parse_datagram(&buf[..n]) {
            Ok(counts) => {
                engine().record_reported(&counts);
                counters.tlsrpt_datagram(false);
                true
            }
            Err(e) => {
                counters.tlsrpt_datagram(true);
                log.dropped(&e.to_string());
                false
            }
        }
    };
    while !stopping() {
        match socket.recv(&mut buf) {
            Ok(n) => pending |= take(n, &buf, &mut log),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                if std::mem::take(&mut pending) {
                    engine().flush_reports();
                }
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
                Ok(n) => {
                    take(n, &buf, &mut log);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    }
    log.unlogged_at_exit();
    engine().flush_reports();
}
