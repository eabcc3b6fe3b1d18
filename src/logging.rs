//! What mtasts tells an operator: warnings, and at `info` one line per decision and per
//! discovery, fetch and refresh outcome.
//!
//! The library emits [`tracing`] events under the target `mtasts` (decisions under
//! `mtasts::decision`). It installs nothing by itself: a Rust program that embeds the crate sees
//! the events through its own subscriber. The front-ends (the `mtasts` CLI and `serve`, the C
//! library, Exim, Python) call [`install`], which sets one process-wide subscriber whose output
//! follows [`LogSettings`] (the `[log]` table of the configuration) and can be changed at any
//! time ([`apply`], [`set_callback`]):
//!
//! | sink | when | format |
//! |---|---|---|
//! | standard error | no callback is set | `[log] format`: `text` (tracing-subscriber's compact form) or `json` (one object per line) |
//! | syslog (`[log] target = "syslog"`) | no callback is set | one RFC 3164 message per event, facility `mail`, to `/dev/log` or `[log] syslog_socket` (journald reads the same socket) |
//! | a C callback ([`set_sink`]) | an MTA routes the lines into its own log | one text line per event, with its level |
//!
//! Both formats are written by `tracing-subscriber`; nothing here formats a line by hand.
//!
//! A callback never runs while a library lock is held: lines meant for it are queued per thread
//! and handed over when the exported function that produced them returns (the C boundary calls
//! [`deliver_queued`]). No thread is started (the process model of docs/architecture.md).

use std::cell::RefCell;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use once_cell::sync::OnceCell;
use parking_lot::RwLock;
use serde::Deserialize;
use tracing::{Level, Metadata};
use tracing_subscriber::filter::{FilterFn, LevelFilter};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{Layer, Registry};

/// How much is said: `error`, `warn` (default), `info` or `debug`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Nothing at all.
    Off,
    /// Errors only.
    Error,
    /// Warnings and errors (the default): what an operator must act on.
    #[default]
    Warn,
    /// Also one line per decision, discovery, fetch and refresh.
    Info,
    /// Also the details of each step.
    Debug,
}

impl LogLevel {
    fn as_u8(self) -> u8 {
        self as u8
    }

    fn of(level: &Level) -> Self {
        match *level {
            Level::ERROR => Self::Error,
            Level::WARN => Self::Warn,
            Level::INFO => Self::Info,
            _ => Self::Debug,
        }
    }

    /// The level's number for C callers: 0 off, 1 error, 2 warn, 3 info, 4 debug.
    pub fn number(self) -> i32 {
        i32::from(self.as_u8())
    }

    /// The level for a C caller's number: 0 off, 1 error, 2 warn, 3 info, 4 debug.
    pub fn from_number(level: i32) -> Option<Self> {
        Some(match level {
            0 => Self::Off,
            1 => Self::Error,
            2 => Self::Warn,
            3 => Self::Info,
            4 => Self::Debug,
            _ => return None,
        })
    }
}

/// The form of the lines written to standard error.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (default).
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `fields` (with `message`).
    Json,
}

/// Where the lines go when no callback takes them.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogTarget {
    /// Standard error (default).
    #[default]
    Stderr,
    /// The local syslog daemon (or journald, which reads the same socket), facility `mail`.
    Syslog,
}

/// The socket syslog and journald listen on.
pub const DEFAULT_SYSLOG_SOCKET: &str = "/dev/log";

/// `[log]`
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// How much is said.
    pub level: LogLevel,
    /// The form of the lines on standard error.
    pub format: LogFormat,
    /// Standard error or syslog.
    pub target: LogTarget,
    /// The syslog socket (`/dev/log` when not set).
    pub syslog_socket: Option<std::path::PathBuf>,
}

/// Receives the log lines instead of standard error (the C callback is one): the level and the
/// line, without its newline.
pub type Sink = Arc<dyn Fn(LogLevel, &str) + Send + Sync>;

/// The level written to standard error (`LogLevel as u8`).
static STDERR_LEVEL: AtomicU8 = AtomicU8::new(LogLevel::Warn as u8);
/// 0: text, 1: JSON, 2: syslog (text lines sent to the syslog socket).
static STDERR_FORMAT: AtomicU8 = AtomicU8::new(0);
/// The syslog connection, made for the socket and process it names (rebuilt after a `fork()`, as
/// a syslog line carries the pid).
static SYSLOG: parking_lot::Mutex<Option<Syslog>> = parking_lot::Mutex::new(None);
static SYSLOG_SOCKET: RwLock<Option<std::path::PathBuf>> = RwLock::new(None);

struct Syslog {
    pid: u32,
    socket: std::path::PathBuf,
    logger: syslog::Logger<syslog::LoggerBackend, syslog::Formatter3164>,
}
/// The level handed to the callback, when one is set.
static CALLBACK_LEVEL: AtomicU8 = AtomicU8::new(LogLevel::Warn as u8);
static SINK: RwLock<Option<Sink>> = RwLock::new(None);
/// Whether a sink is set (read on every event, without a lock).
static SINK_SET: AtomicBool = AtomicBool::new(false);
static INSTALLED: OnceCell<bool> = OnceCell::new();

thread_local! {
    /// Lines for the callback, produced during the current exported call.
    static QUEUE: RefCell<Vec<(LogLevel, String)>> = const { RefCell::new(Vec::new()) };
}

fn ours(meta: &Metadata<'_>) -> bool {
    meta.target().starts_with("mtasts")
}

fn callback_set() -> bool {
    SINK_SET.load(Ordering::Relaxed)
}

/// Whether the standard error sink in `format` (0 text, 1 JSON, 2 syslog) takes `meta`.
fn stderr_wants(meta: &Metadata<'_>, format: u8) -> bool {
    ours(meta)
        && !callback_set()
        && STDERR_FORMAT.load(Ordering::Relaxed) == format
        && LogLevel::of(meta.level()).as_u8() <= STDERR_LEVEL.load(Ordering::Relaxed)
}

/// Whether the C callback takes `meta`.
fn callback_wants(meta: &Metadata<'_>) -> bool {
    ours(meta)
        && callback_set()
        && LogLevel::of(meta.level()).as_u8() <= CALLBACK_LEVEL.load(Ordering::Relaxed)
}

/// Whether some sink takes `meta` under the settings in force (the filters of [`layered`]).
fn wanted(meta: &Metadata<'_>) -> bool {
    stderr_wants(meta, STDERR_FORMAT.load(Ordering::Relaxed)) || callback_wants(meta)
}

/// The subscriber [`install`] sets: the layered `tracing-subscriber` stack of [`layered`], built
/// when the first event or span is wanted. A process that logs nothing (an Exim delivery that
/// finds its policy, at the default level `warn`) never builds it: its registry of span slots
/// alone costs about 30,000 instructions and the page faults of code run once (BENCHMARKS.md, "A
/// process per delivery"). Built without a lock or a cell another thread could hold at a
/// `fork()`: two threads building at once keep the first one installed, and a forked child that
/// finds none builds its own.
struct Deferred {
    real: once_cell::race::OnceBox<tracing::Dispatch>,
}

impl Deferred {
    fn real(&self) -> &tracing::Dispatch {
        self.real.get_or_init(|| Box::new(tracing::Dispatch::new(layered())))
    }
}

impl tracing::Subscriber for Deferred {
    fn register_callsite(&self, _: &'static Metadata<'static>) -> tracing::subscriber::Interest {
        // The settings change at run time (`apply`, `set_sink`): ask `enabled` every time.
        tracing::subscriber::Interest::sometimes()
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::DEBUG)
    }

    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        wanted(meta) && self.real().enabled(meta)
    }

    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        self.real().new_span(span)
    }

    fn record(&self, span: &tracing::span::Id, values: &tracing::span::Record<'_>) {
        self.real().record(span, values);
    }

    fn record_follows_from(&self, span: &tracing::span::Id, follows: &tracing::span::Id) {
        self.real().record_follows_from(span, follows);
    }

    fn event(&self, event: &tracing::Event<'_>) {
        self.real().event(event);
    }

    fn enter(&self, span: &tracing::span::Id) {
        self.real().enter(span);
    }

    fn exit(&self, span: &tracing::span::Id) {
        self.real().exit(span);
    }

    fn clone_span(&self, id: &tracing::span::Id) -> tracing::span::Id {
        self.real().clone_span(id)
    }

    fn try_close(&self, id: tracing::span::Id) -> bool {
        self.real().try_close(id)
    }
}

/// The sinks: text or JSON on standard error, syslog, the C callback, each behind the filter of
/// the settings in force.
fn layered() -> impl tracing::Subscriber + Send + Sync {
    let text = tracing_subscriber::fmt::layer()
        .with_writer(io::stderr)
        .with_ansi(false)
        .with_filter(FilterFn::new(|meta| stderr_wants(meta, 0)));
    let json = tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(false)
        .with_writer(io::stderr)
        .with_filter(FilterFn::new(|meta| stderr_wants(meta, 1)));
    let callback = tracing_subscriber::fmt::layer()
        .with_writer(PerEvent(queue_line))
        .with_ansi(false)
        .without_time()
        .with_filter(FilterFn::new(callback_wants));
    let syslog = tracing_subscriber::fmt::layer()
        .with_writer(PerEvent(syslog_line))
        .with_ansi(false)
        .without_time()
        .with_filter(FilterFn::new(|meta| stderr_wants(meta, 2)));
    Registry::default().with(text).with(json).with(syslog).with(callback).with(LevelFilter::DEBUG)
}

/// Installs the process-wide subscriber, once. Returns false when the process already had
/// another one (a Rust host program): its subscriber then receives the events instead.
pub fn install() -> bool {
    *INSTALLED.get_or_init(|| {
        tracing::subscriber::set_global_default(Deferred { real: once_cell::race::OnceBox::new() }).is_ok()
    })
}

/// Applies `[log]` to standard error's output (installing the subscriber if needed).
pub fn apply(settings: &LogSettings) {
    STDERR_LEVEL.store(settings.level.as_u8(), Ordering::Relaxed);
    let format = match (settings.target, settings.format) {
        (LogTarget::Syslog, _) => 2,
        (LogTarget::Stderr, LogFormat::Json) => 1,
        (LogTarget::Stderr, LogFormat::Text) => 0,
    };
    *SYSLOG_SOCKET.write() = settings.syslog_socket.clone();
    STDERR_FORMAT.store(format, Ordering::Relaxed);
    install();
    tracing::callsite::rebuild_interest_cache();
}

/// Routes log lines at `level` and above to `sink` instead of standard error; `None` goes back
/// to standard error. Safe to call from any thread, before any engine exists.
pub fn set_sink(sink: Option<Sink>, level: LogLevel) {
    CALLBACK_LEVEL.store(level.as_u8(), Ordering::Relaxed);
    let set = sink.is_some();
    *SINK.write() = sink;
    SINK_SET.store(set, Ordering::Relaxed);
    install();
    tracing::callsite::rebuild_interest_cache();
}

/// Hands this thread's queued lines to the sink. Called by the C boundary when an exported
/// function returns, when no library lock is held; the sink itself runs with no lock held
/// either, so it may call back into the library (even to change the sink).
pub fn deliver_queued() {
    let lines =
        QUEUE.try_with(|q| q.try_borrow_mut().map(|mut q| std::mem::take(&mut *q)).unwrap_or_default());
    let Ok(lines) = lines else { return };
    if lines.is_empty() {
        return;
    }
    let Some(sink) = SINK.read().clone() else { return };
    for (level, line) in lines {
        sink(level, &line);
    }
}

/// A `MakeWriter` that hands each formatted event, with its level and without its newline, to
/// a function once the event is written: [`queue_line`] (for the callback) or [`syslog_line`].
struct PerEvent(fn(LogLevel, &str));

/// The bytes of one event on their way to the function of [`PerEvent`].
struct EventBytes {
    level: LogLevel,
    bytes: Vec<u8>,
    deliver: fn(LogLevel, &str),
}

impl io::Write for EventBytes {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for EventBytes {
    fn drop(&mut self) {
        let line = String::from_utf8_lossy(&self.bytes);
        let line = line.trim_end();
        if !line.is_empty() {
            (self.deliver)(self.level, line);
        }
    }
}

impl<'a> MakeWriter<'a> for PerEvent {
    type Writer = EventBytes;

    fn make_writer(&'a self) -> Self::Writer {
        EventBytes { level: LogLevel::Warn, bytes: Vec::new(), deliver: self.0 }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        EventBytes { level: LogLevel::of(meta.level()), bytes: Vec::new(), deliver: self.0 }
    }
}

/// Queues a line for the callback, handed over by [`deliver_queued`].
fn queue_line(level: LogLevel, line: &str) {
    let _ = QUEUE.try_with(|q| {
        if let Ok(mut q) = q.try_borrow_mut() {
            // A runaway producer outside any exported call must not grow without bound.
            if q.len() < 1000 {
                q.push((level, line.to_owned()));
            }
        }
    });
}

/// Sends a line as one syslog message (RFC 3164, facility `mail`), through the `syslog` crate;
/// one that cannot be sent (no syslog daemon) goes to standard error instead.
fn syslog_line(level: LogLevel, line: &str) {
    if send_to_syslog(level, line).is_err() {
        use io::Write as _;
        let _ = writeln!(io::stderr(), "{line}");
    }
}

fn send_to_syslog(level: LogLevel, line: &str) -> Result<(), String> {
    let socket =
        SYSLOG_SOCKET.read().clone().unwrap_or_else(|| std::path::PathBuf::from(DEFAULT_SYSLOG_SOCKET));
    let pid = std::process::id();
    let mut slot = SYSLOG.lock();
    if slot.as_ref().is_none_or(|s| s.pid != pid || s.socket != socket) {
        let formatter = syslog::Formatter3164 {
            facility: syslog::Facility::LOG_MAIL,
            hostname: None,
            process: "mtasts".into(),
            pid,
        };
        let logger = syslog::unix_custom(formatter, &socket).map_err(|e| e.to_string())?;
        *slot = Some(Syslog { pid, socket, logger });
    }
    let Some(syslog) = slot.as_mut() else { return Err("no syslog".into()) };
    let sent = match level {
        LogLevel::Off => Ok(()),
        LogLevel::Error => syslog.logger.err(line),
        LogLevel::Warn => syslog.logger.warning(line),
        LogLevel::Info => syslog.logger.info(line),
        LogLevel::Debug => syslog.logger.debug(line),
    };
    sent.map_err(|e| {
        *slot = None;
        e.to_string()
    })
}
