//! The background refresher of `mtasts serve`: keeps cached policies fresh so that lookups are
//! answered from memory, and refreshes stored policies before they age out (RFC 8461 §3.3, §10.2).
//!
//! Every `[serve] refresh_interval_s` seconds (and once at start) one pass looks at:
//!
//! * the domains of the persistent store (if one is configured) whose policy is due for refresh by
//!   `Timing::refresh_due` (older than `[engine] refresh_interval`, or half its `max_age`), as
//!   `mtasts refresh` does, found through the store's indexes ([`Engine::due_for_refresh`]);
//! * every domain for which this server found a policy, also rechecked when its TXT check would
//!   fall due before the next pass (`[engine] txt_check_interval`), so that no lookup has to wait
//!   for DNS.
//!
//! A refresh is [`mtasts::refresh::refresh`] ([`Engine::recheck`]): a TXT lookup, and a fetch when the id changed or the refresh
//! is due; a failure never removes a policy. Domains without a policy are not refreshed here (the
//! lookup path asks DNS for them every `no_policy_interval`).
//!
//! Once a day the store is pruned ([`Engine::prune_store`], `[cache] prune_after_days`).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use mtasts::cache::Entry;
use mtasts::{Domain, Engine};
use parking_lot::{Condvar, Mutex};

/// Most domains remembered as "served with a policy" (beyond that, new ones are not added).
const MAX_KNOWN: usize = 100_000;
/// Seconds between two prunes of the store.
const PRUNE_EVERY: u64 = 86_400;

/// Domains for which a lookup of this server found a policy (filled on the slow path only).
#[derive(Debug, Default)]
pub struct Known(Mutex<HashSet<Domain>>);

impl Known {
    /// Remembers `domain` (given as the client wrote it).
    pub fn note(&self, domain: &str) {
        let Ok(domain) = Domain::parse(domain) else { return };
        let mut known = self.0.lock();
        if known.len() < MAX_KNOWN {
            known.insert(domain);
        }
    }

    fn snapshot(&self) -> Vec<Domain> {
        self.0.lock().iter().cloned().collect()
    }
}

/// Tells the refresher to stop.
#[derive(Debug, Default)]
pub struct Stop {
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl Stop {
    /// Stops the refresher (after the refresh in progress, if any).
    pub fn stop(&self) {
        *self.stopped.lock() = true;
        self.wake.notify_all();
    }

    /// Waits `d`; true when stopped meanwhile.
    pub fn wait(&self, d: Duration) -> bool {
        let mut stopped = self.stopped.lock();
        if !*stopped {
            let _ = self.wake.wait_for(&mut stopped, d);
        }
        *stopped
    }

    fn is_stopped(&self) -> bool {
        *self.stopped.lock()
    }
}

/// Starts the refresher thread; `engine` gives the engine in force (a reload replaces it), asked
/// again for each pass.
pub fn spawn(
    engine: impl Fn() -> Arc<Engine> + Send + 'static,
    known: Arc<Known>,
    stop: Arc<Stop>,
    every: Duration,
    counters: Arc<super::metrics::Counters>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("mtasts-refresh".into()).spawn(move || {
        let mut last_prune: Option<u64> = None;
        loop {
            let engine = engine();
            pass(&engine, &known, &stop, every, &counters);
            // Once a day (and at start): forget what has been useless for `prune_after_days`.
            let now = engine.now();
            if last_prune.is_none_or(|t| now.saturating_sub(t) >= PRUNE_EVERY) {
                last_prune = Some(now);
                match engine.prune_store() {
                    Ok(0) => {}
                    Ok(n) => eprintln!("mtasts serve: pruned {n} stale row(s) from the policy store"),
                    Err(e) => engine.report_store_error(&e),
                }
            }
            // The engine counts failed policy fetches for TLSRPT; write them to the store now
            // rather than waiting for the next session to be counted.
            engine.flush_reports();
            if stop.wait(every) {
                engine.flush_reports();
                return;
            }
        }
    })
}

/// Whether `entry` should be rechecked now.
fn due(engine: &Engine, entry: &Entry, now: u64, every: u64, served: bool) -> bool {
    let Some(policy) = entry.live(now) else { return false };
    let timing = engine.timing();
    if timing.refresh_due(policy, now) {
        return true;
    }
    served && now.saturating_add(every) >= entry.checked_at.saturating_add(timing.txt_check_interval)
}

/// One pass over the known and stored domains.
fn pass(engine: &Engine, known: &Known, stop: &Stop, every: Duration, counters: &super::metrics::Counters) {
    counters.refresher_run();
    let now = engine.now();
    let every = every.as_secs();
    let mut candidates: Vec<(Domain, bool)> = known.snapshot().into_iter().map(|d| (d, true)).collect();
    let served: HashSet<Domain> = candidates.iter().map(|(d, _)| d.clone()).collect();
    // The stored domains due for refresh, from the store's indexes: a pass that finds nothing
    // due reads nothing else, however many domains are stored.
    match engine.due_for_refresh(now) {
        Ok(due) => candidates.extend(due.into_iter().filter(|d| !served.contains(d)).map(|d| (d, false))),
        Err(e) => engine.report_store_error(&e),
    }
    for (domain, served) in candidates {
        if stop.is_stopped() {
            return;
        }
        if served {
            let Some(entry) = engine.cache().get(&domain) else { continue };
            if !due(engine, &entry, now, every, true) {
                continue;
            }
        }
        let refreshed = mtasts::refresh::refresh(engine, &domain);
        counters.refresh(refreshed.is_warning());
        if let Some(warning) = refreshed.warning("cached") {
            eprintln!("mtasts serve: {warning}");
        }
    }
}
