//! `mtasts serve --metrics inet:HOST:PORT` (or `[serve] metrics_listen`): Prometheus metrics
//! over HTTP (`GET /metrics`, text format 0.0.4; any other path is 404, any other method 405).
//!
//! Served: the library's counters of this server's engine ([`mtasts::metrics`]), the socketmap
//! counters below (lookups by reply kind, connections, refresher passes and refreshes), and
//! gauges read from the store when scraped: live stored policies by mode, and TLSRPT reports in
//! the outbox by state (pending, delivered, given up). Those store reads are cached for
//! [`STORE_GAUGES_TTL`], so that scraping often costs the store one count per interval.
//!
//! The responder is one thread answering one scrape at a time, with a short read timeout: a
//! scraper is a single trusted client (bind it to a loopback or management address), and a slow
//! one delays other scrapes, never socketmap lookups.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use mtasts::Engine;
use mtasts::cache::Stores;
use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::exposition;

/// How long store gauges are reused between scrapes.
pub const STORE_GAUGES_TTL: Duration = Duration::from_secs(30);
/// Longest request head read from a scraper.
const MAX_REQUEST_HEAD: u64 = 8 * 1024;
/// How long a scraper may take to send its request, and to take the reply.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// Kinds of socketmap replies (`mtasts_serve_lookups_total{reply}`).
pub const REPLY_KINDS: [&str; 7] =
    ["ok-secure", "ok-dane", "ok-dane-only", "notfound", "temp", "perm", "other"];

/// The kind of a socketmap reply, from its first words.
pub fn reply_kind(reply: &[u8]) -> usize {
    let starts = |p: &[u8]| reply.starts_with(p) && matches!(reply.get(p.len()), None | Some(b' '));
    if starts(b"OK secure") {
        0
    } else if starts(b"OK dane") {
        1
    } else if starts(b"OK dane-only") {
        2
    } else if starts(b"NOTFOUND") {
        3
    } else if starts(b"TEMP") {
        4
    } else if starts(b"PERM") {
        5
    } else {
        6
    }
}

/// What the socketmap server counts (in this process only; not kept in the store).
#[derive(Debug, Default)]
pub struct Counters {
    lookups: [AtomicU64; REPLY_KINDS.len()],
    connections: AtomicU64,
    open: AtomicU64,
    refresher_runs: AtomicU64,
    refreshes_ok: AtomicU64,
    refreshes_failed: AtomicU64,
    tlsrpt_counted: AtomicU64,
    tlsrpt_dropped: AtomicU64,
}

impl Counters {
    /// Counts a reply.
    pub fn reply(&self, reply: &[u8]) {
        self.lookups[reply_kind(reply)].fetch_add(1, Relaxed);
    }

    /// Counts a connection accepted (and now open).
    pub fn connection_opened(&self) {
        self.connections.fetch_add(1, Relaxed);
        self.open.fetch_add(1, Relaxed);
    }

    /// Counts a connection ended.
    pub fn connection_closed(&self) {
        let _ = self.open.fetch_update(Relaxed, Relaxed, |n| Some(n.saturating_sub(1)));
    }

    /// Counts a pass of the refresher.
    pub fn refresher_run(&self) {
        self.refresher_runs.fetch_add(1, Relaxed);
    }

    /// Counts a TLSRPT datagram: counted, or dropped (malformed or oversized).
    pub fn tlsrpt_datagram(&self, dropped: bool) {
        if dropped { &self.tlsrpt_dropped } else { &self.tlsrpt_counted }.fetch_add(1, Relaxed);
    }

    /// TLSRPT datagrams counted and dropped so far.
    pub fn tlsrpt_datagrams(&self) -> (u64, u64) {
        (self.tlsrpt_counted.load(Relaxed), self.tlsrpt_dropped.load(Relaxed))
    }

    /// Counts one domain's refresh: failed (a warning) or not.
    pub fn refresh(&self, failed: bool) {
        if failed { &self.refreshes_failed } else { &self.refreshes_ok }.fetch_add(1, Relaxed);
    }
}

/// Store gauges as last read.
#[derive(Debug, Default, Clone)]
struct StoreGauges {
    /// Live stored policies by mode (enforce, testing, none), if the store could say.
    policies: Option<[u64; 3]>,
    /// Outbox reports: pending, delivered, given up; `None` without an outbox.
    reports: Option<[u64; 3]>,
}

/// The engine in force (a reload replaces it).
pub type CurrentEngine = Arc<dyn Fn() -> Arc<Engine> + Send + Sync>;

/// Everything `/metrics` shows.
pub struct Exporter {
    engine: CurrentEngine,
    counters: Arc<Counters>,
    stores: Option<Stores>,
    cached: Mutex<Option<(Instant, StoreGauges)>>,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter").field("counters", &self.counters).finish_non_exhaustive()
    }
}

impl Exporter {
    /// An exporter over the server's engine and counters; `stores` is the configured store
    /// (opened again for the gauges), if any.
    pub fn new(engine: CurrentEngine, counters: Arc<Counters>, stores: Option<Stores>) -> Self {
        Self { engine, counters, stores, cached: Mutex::new(None) }
    }

    fn store_gauges(&self) -> StoreGauges {
        let mut cached = self.cached.lock();
        if let Some((_, g)) = cached.as_ref().filter(|(at, _)| at.elapsed() < STORE_GAUGES_TTL) {
            return g.clone();
        }
        let engine = (self.engine)();
        let now = engine.now();
        let mut g = StoreGauges::default();
        if let Some(stores) = &self.stores {
            // The engine's queued writes first, so that the gauges count every policy it has.
            super::flush_store(&engine);
            match stores.policies.count_by_mode(now) {
                Ok(c) => g.policies = Some(c),
                Err(e) => engine.report_store_error(&e),
            }
            if let Some(outbox) = &stores.outbox {
                match outbox.outbox() {
                    Ok(items) => {
                        let mut r = [0u64; 3];
                        for item in items {
                            let i = match (item.state.done, item.state.delivered) {
                                (false, _) => 0,
                                (true, true) => 1,
                                (true, false) => 2,
                            };
                            r[i] += 1;
                        }
                        g.reports = Some(r);
                    }
                    Err(e) => engine.report_store_error(&e),
                }
            }
        }
        *cached = Some((Instant::now(), g.clone()));
        g
    }

    /// The Prometheus text of a scrape.
    pub fn scrape(self: &Arc<Self>) -> Result<String, String> {
        exposition::text(Box::new(Arc::clone(self)))
    }
}

fn counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    series: &[(&[(&str, &str)], u64)],
) -> std::fmt::Result {
    let mut metric =
        encoder.encode_descriptor(name, help, None, prometheus_client::metrics::MetricType::Counter)?;
    for (labels, n) in series {
        ConstCounter::new(*n).encode(metric.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    series: &[(&[(&str, &str)], u64)],
) -> std::fmt::Result {
    let mut metric =
        encoder.encode_descriptor(name, help, None, prometheus_client::metrics::MetricType::Gauge)?;
    for (labels, n) in series {
        ConstGauge::new(i64::try_from(*n).unwrap_or(i64::MAX)).encode(metric.encode_family(labels)?)?;
    }
    Ok(())
}

impl Collector for Exporter {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        exposition::encode_library(&(self.engine)().metrics().samples(), &mut encoder)?;
        let c = &self.counters;
        let replies: Vec<[(&str, &str); 1]> = REPLY_KINDS.iter().map(|k| [("reply", *k)]).collect();
        let lookups: Vec<(&[(&str, &str)], u64)> =
            replies.iter().zip(&c.lookups).map(|(l, n)| (&l[..], n.load(Relaxed))).collect();
        counter(
            &mut encoder,
            "mtasts_serve_lookups",
            "Socketmap lookups answered, by the kind of reply",
            &lookups,
        )?;
        counter(
            &mut encoder,
            "mtasts_serve_connections",
            "Socketmap connections accepted",
            &[(&[], c.connections.load(Relaxed))],
        )?;
        gauge(
            &mut encoder,
            "mtasts_serve_connections_open",
            "Socketmap connections open now",
            &[(&[], c.open.load(Relaxed))],
        )?;
        gauge(
            &mut encoder,
            "mtasts_serve_lookups_waiting",
            "Lookups waiting now for the discovery of their domain that another lookup is making (single-flight)",
            &[(&[], (self.engine)().waiting_for_discovery() as u64)],
        )?;
        counter(
            &mut encoder,
            "mtasts_serve_refresher_runs",
            "Passes of the background refresher",
            &[(&[], c.refresher_runs.load(Relaxed))],
        )?;
        counter(
            &mut encoder,
            "mtasts_serve_refreshes",
            "Domains refreshed by the background refresher, by result (failed: an enforce or testing policy could not be refreshed)",
            &[
                (&[("result", "ok")], c.refreshes_ok.load(Relaxed)),
                (&[("result", "failed")], c.refreshes_failed.load(Relaxed)),
            ],
        )?;
        counter(
            &mut encoder,
            "mtasts_serve_tlsrpt_datagrams",
            "TLSRPT datagrams taken on [serve] tlsrpt_socket, by result (dropped: malformed or oversized, see the log)",
            &[
                (&[("result", "counted")], c.tlsrpt_counted.load(Relaxed)),
                (&[("result", "dropped")], c.tlsrpt_dropped.load(Relaxed)),
            ],
        )?;
        let g = self.store_gauges();
        let policies: Vec<(&[(&str, &str)], u64)> = match g.policies {
            Some([e, t, n]) => {
                vec![(&[("mode", "enforce")], e), (&[("mode", "testing")], t), (&[("mode", "none")], n)]
            }
            None => Vec::new(),
        };
        gauge(
            &mut encoder,
            "mtasts_policies_stored",
            "Live policies in the persistent store, by mode",
            &policies,
        )?;
        let reports: Vec<(&[(&str, &str)], u64)> = match g.reports {
            Some([p, d, x]) => {
                vec![
                    (&[("state", "pending")], p),
                    (&[("state", "delivered")], d),
                    (&[("state", "given-up")], x),
                ]
            }
            None => Vec::new(),
        };
        gauge(
            &mut encoder,
            "mtasts_tlsrpt_reports",
            "TLSRPT reports in the outbox, by delivery state (pending: the queue)",
            &reports,
        )?;
        let store_ok = u64::from((self.engine)().store_error().is_none());
        gauge(
            &mut encoder,
            "mtasts_store_up",
            "1 when the persistent store answered its last read or write (or none is configured), else 0",
            &[(&[], store_ok)],
        )?;
        Ok(())
    }
}

/// Where to serve metrics: `inet:HOST:PORT` (or `HOST:PORT`).
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let addr = s.strip_prefix("inet:").unwrap_or(s);
    addr.parse::<SocketAddr>().map_err(|_| {
        format!(
            "metrics address `{s}`: write inet:IP:PORT (inet:127.0.0.1:9461, inet:[::1]:9461); HTTP needs TCP"
        )
    })
}

/// Binds the metrics listener and serves scrapes on a thread of its own; returns the address
/// bound (the real port when 0 was asked for).
pub fn spawn(addr: SocketAddr, exporter: Arc<Exporter>) -> Result<SocketAddr, String> {
    let listener =
        TcpListener::bind(addr).map_err(|e| format!("cannot serve metrics on inet:{addr}: {e}"))?;
    let bound = listener.local_addr().map_err(|e| format!("cannot serve metrics on inet:{addr}: {e}"))?;
    std::thread::Builder::new()
        .name("mtasts-metrics".into())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(s) => {
                        if let Err(e) = answer(s, &exporter) {
                            eprintln!("mtasts serve: metrics: {e}");
                        }
                    }
                    Err(e) => {
                        eprintln!("mtasts serve: metrics: accept failed: {e}");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })
        .map_err(|e| format!("cannot start the metrics thread: {e}"))?;
    Ok(bound)
}

/// Answers one HTTP request.
fn answer(stream: TcpStream, exporter: &Arc<Exporter>) -> io::Result<()> {
    stream.set_read_timeout(Some(SCRAPE_TIMEOUT))?;
    stream.set_write_timeout(Some(SCRAPE_TIMEOUT))?;
    let mut reader = BufReader::new((&stream).take(MAX_REQUEST_HEAD));
    let mut line = String::new();
    reader.read_line(&mut line)?;
    // The rest of the head, up to the empty line.
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" || header == "\n" {
            break;
        }
    }
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, body, content_type) = match (method, path) {
        ("GET" | "HEAD", "/metrics") => match exporter.scrape() {
            Ok(text) => ("200 OK", text, "text/plain; version=0.0.4; charset=utf-8"),
            Err(e) => ("500 Internal Server Error", format!("{e}\n"), "text/plain; charset=utf-8"),
        },
        ("GET" | "HEAD", _) => {
            ("404 Not Found", "not found: metrics are at /metrics\n".into(), "text/plain; charset=utf-8")
        }
        _ => ("405 Method Not Allowed", "only GET and HEAD\n".into(), "text/plain; charset=utf-8"),
    };
    let mut out = &stream;
    write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    if method != "HEAD" {
        out.write_all(body.as_bytes())?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_kinds() {
        assert_eq!(
            REPLY_KINDS[reply_kind(b"OK secure match=mx.example.com servername=hostname")],
            "ok-secure"
        );
        assert_eq!(REPLY_KINDS[reply_kind(b"OK dane")], "ok-dane");
        assert_eq!(REPLY_KINDS[reply_kind(b"OK dane-only")], "ok-dane-only");
        assert_eq!(REPLY_KINDS[reply_kind(b"NOTFOUND ")], "notfound");
        assert_eq!(REPLY_KINDS[reply_kind(b"TEMP the store")], "temp");
        assert_eq!(REPLY_KINDS[reply_kind(b"PERM bad")], "perm");
        assert_eq!(REPLY_KINDS[reply_kind(b"OKAY")], "other");
    }

    #[test]
    fn metrics_addresses() {
        assert_eq!(parse_listen("inet:127.0.0.1:9461"), Ok("127.0.0.1:9461".parse().unwrap()));
        assert_eq!(parse_listen("[::1]:0"), Ok("[::1]:0".parse().unwrap()));
        assert!(parse_listen("unix:/run/m.sock").unwrap_err().contains("TCP"));
        assert!(parse_listen("inet:localhost:9461").is_err());
    }
}
