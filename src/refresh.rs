//! Refreshing stored policies before they age out (RFC 8461 §3.3, §10.2: refresh before expiry,
//! alert when refreshes keep failing): the step `mtasts refresh` and the refresher of
//! `mtasts serve` share.
//!
//! Which domains are due is [`Engine::due_for_refresh`] (and, for `serve`, the domains it
//! served). Each is [`Engine::recheck`]ed: a TXT lookup, and a fetch when the id changed or the
//! refresh is due; a failure never removes the stored policy. [`refresh`] says what became of
//! one domain, [`refresh_all`] does a list a few at a time, and [`Refresh`] words the result,
//! the warning included, so that every front-end says the same.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;

use crate::cache::CachedPolicy;
use crate::calendar::rfc3339;
use crate::domain::Domain;
use crate::engine::{Engine, InputError};

/// What became of one domain's refresh.
#[derive(Clone, Debug)]
pub struct Refresh {
    /// The domain.
    pub domain: Domain,
    /// What happened.
    pub result: Refreshed,
}

/// What a refresh found.
#[derive(Clone, Debug)]
pub enum Refreshed {
    /// The refresh failed while an `enforce` or `testing` policy is still applied
    /// ([`crate::engine::Resolution::needs_attention`]): an operator should hear of it.
    Failed {
        /// The policy that stays in force until it expires.
        policy: Option<Arc<CachedPolicy>>,
        /// `result-type: detail` of the failure.
        why: String,
    },
    /// The policy that applies now (fetched again or not); `None`: the domain has no policy any
    /// more (or a failure under `mode: none`, which never warns).
    Current(Option<Arc<CachedPolicy>>),
    /// An address literal, which has no policy.
    AddressLiteral,
    /// The domain could not be checked.
    Error(InputError),
}

impl Refresh {
    /// True when the result is a warning ([`Refresh::warning`] says it).
    pub fn is_warning(&self) -> bool {
        matches!(self.result, Refreshed::Failed { .. } | Refreshed::Error(_))
    }

    /// The warning, `warning: <domain>: ...`, if this is one. `held` names the caller's copy of
    /// the policy that stays in force (`stored`, `cached`).
    pub fn warning(&self, held: &str) -> Option<String> {
        let domain = &self.domain;
        match &self.result {
            Refreshed::Failed { policy, why } => {
                let (mode, expires) = policy.as_ref().map_or(("", 0), |p| (p.mode().as_str(), p.expires_at));
                Some(format!(
                    "warning: {domain}: refresh failed ({why}); the {held} {mode} policy stays in force until {}",
                    rfc3339(expires)
                ))
            }
            Refreshed::Error(e) => Some(format!("warning: {domain}: {e}")),
            Refreshed::Current(_) | Refreshed::AddressLiteral => None,
        }
    }

    /// The line saying what became of the domain: the warning, or where its policy stands.
    pub fn line(&self, held: &str) -> String {
        let domain = &self.domain;
        match &self.result {
            Refreshed::Current(Some(p)) => format!(
                "{domain}: {} policy id {} fetched {}, expires {}",
                p.mode(),
                p.id,
                rfc3339(p.fetched_at),
                rfc3339(p.expires_at)
            ),
            Refreshed::Current(None) => format!("{domain}: no policy any more"),
            Refreshed::AddressLiteral => format!("{domain}: address literal, skipped"),
            Refreshed::Failed { .. } | Refreshed::Error(_) => self.warning(held).unwrap_or_default(),
        }
    }
}

/// Refreshes one domain now ([`Engine::recheck`]). A domain with a per-domain override is left
/// alone (nothing is looked up, nothing is logged): its override is the policy state (OVR-4).
pub fn refresh(engine: &Engine, domain: &Domain) -> Refresh {
    if let Some(o) = engine.override_of(domain) {
        let policy = o.pinned_policy().cloned();
        return Refresh { domain: domain.clone(), result: Refreshed::Current(policy) };
    }
    let result = match engine.recheck(domain.as_str()) {
        Ok(Some(r)) if r.needs_attention() => Refreshed::Failed {
            why: r.error.as_ref().map_or_else(String::new, |e| format!("{}: {}", e.reason, e.detail)),
            policy: r.policy,
        },
        Ok(Some(r)) => Refreshed::Current(r.policy),
        Ok(None) => Refreshed::AddressLiteral,
        Err(e) => Refreshed::Error(e),
    };
    Refresh { domain: domain.clone(), result }
}

/// Refreshes `domains`, `concurrency` at a time (at least one); the results in the order the
/// refreshes ended. `Err` when a refresh thread panicked.
pub fn refresh_all(engine: &Engine, domains: &[Domain], concurrency: usize) -> Result<Vec<Refresh>, String> {
    let next = AtomicUsize::new(0);
    let done = Mutex::new(Vec::with_capacity(domains.len()));
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..concurrency.max(1).min(domains.len().max(1)))
            .map(|_| {
                scope.spawn(|| {
                    while let Some(domain) = domains.get(next.fetch_add(1, Ordering::Relaxed)) {
                        let refreshed = refresh(engine, domain);
                        done.lock().push(refreshed);
                    }
                })
            })
            .collect();
        let mut panicked = false;
        for w in workers {
            panicked |= w.join().is_err();
        }
        if panicked { Err("a refresh thread panicked".to_string()) } else { Ok(()) }
    })?;
    let done = done.into_inner();
    let failed = done.iter().filter(|r| r.is_warning()).count();
    tracing::info!(target: "mtasts::refresh", domains = done.len(), failed, "refresh pass");
    Ok(done)
}
