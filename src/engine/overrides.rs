//! Per-domain overrides (docs/conformance.md, OVR-1..OVR-10; decision D31): an operator skips
//! MTA-STS for one domain (`mode = "none"`) or pins a policy for it (`policy = "FILE"`), in the
//! configuration file (`[override."example.com"]`) or in the store (`mtasts override set`), so
//! that a fleet sharing a store shares them.
//!
//! * An override short-circuits discovery: no DNS lookup, no policy fetch, no cache read for the
//!   domain. A skipped domain has no MTA-STS policy (the verdict is that of a domain without
//!   one); a pinned policy is applied exactly as a fetched one (MX patterns, certificates,
//!   `testing`/`enforce`) and never expires while it is configured. DANE is not affected: where an
//!   MX has DNSSEC-secure TLSA records, DANE still decides.
//! * Precedence (D31): an override in the configuration file wins over one in the store for the
//!   same domain; the store's is then shown as shadowed by `mtasts override list`.
//! * The store's overrides are read by the first check of a process, then again at most once per
//!   `[engine] txt_check_interval` (and at most once a second): never a store query per check. A
//!   store that cannot be read keeps the overrides last read.
//! * Every use is logged under the target `mtasts::override`: `warn` for a skipped domain (so
//!   that the default `[log] level` shows it), `info` for a pinned policy; the decision log
//!   carries an `override` field.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use parking_lot::{Mutex, RwLock};

use crate::cache::{CachedPolicy, PolicyStore, StoredOverride};
use crate::domain::Domain;
use crate::policy::Policy;
use crate::txt::PolicyId;

/// The id a pinned policy carries (the TXT record is never looked up for it).
pub const PINNED_ID: &str = "pinned";

/// When a pinned policy expires: never while it is configured, written as the last second of
/// year 9999 (`9999-12-31T23:59:59Z`), which every front-end can print.
///
/// cbindgen:ignore
pub const PINNED_EXPIRES_AT: u64 = 253_402_300_799;

/// What an override does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OverrideAction {
    /// MTA-STS is skipped for the domain (`mode = "none"`): it has no policy.
    Skip,
    /// This policy applies instead of the one discovery would find.
    Pinned(Arc<CachedPolicy>),
}

/// Where an override was set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OverrideOrigin {
    /// In the configuration file (`None`: configuration text without a file).
    Config {
        /// The configuration file.
        file: Option<PathBuf>,
        /// The pinned policy's file, for `policy = "FILE"`.
        policy_file: Option<PathBuf>,
    },
    /// In the store (`mtasts override set`).
    Store {
        /// The store's location.
        location: String,
        /// When it was set (Unix seconds).
        set_at: u64,
    },
}

/// One domain's override.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Override {
    /// The Policy Domain.
    pub domain: Domain,
    /// What it does.
    pub action: OverrideAction,
    /// Where it was set.
    pub origin: OverrideOrigin,
}

impl Override {
    /// MTA-STS skipped for `domain`.
    pub fn skip(domain: Domain, origin: OverrideOrigin) -> Self {
        Self { domain, action: OverrideAction::Skip, origin }
    }

    /// `text` pinned for `domain`, parsed with the grammar of fetched policies (RFC 8461 §3.2);
    /// the message of the error is the first problem of the policy. `at` is when it was read.
    pub fn pinned(domain: Domain, text: &[u8], at: u64, origin: OverrideOrigin) -> Result<Self, String> {
        let policy = Policy::parse(text).map_err(|e| e.first_error().to_string())?;
        let text = String::from_utf8_lossy(text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(text)).into_owned();
        let id = PolicyId::parse(PINNED_ID).map_err(|e| e.to_string())?;
        // Never expires while configured, whatever its max_age.
        let pinned = CachedPolicy { policy, id, text, fetched_at: at, expires_at: PINNED_EXPIRES_AT };
        Ok(Self { domain, action: OverrideAction::Pinned(Arc::new(pinned)), origin })
    }

    /// The override a store keeps, or why it cannot be used.
    pub fn from_stored(stored: &StoredOverride, location: &str) -> Result<Self, String> {
        let origin = OverrideOrigin::Store { location: location.to_owned(), set_at: stored.set_at };
        match &stored.policy_text {
            None => Ok(Self::skip(stored.domain.clone(), origin)),
            Some(text) => Self::pinned(stored.domain.clone(), text.as_bytes(), stored.set_at, origin),
        }
    }

    /// `none` (MTA-STS skipped) or `pinned`.
    pub fn action_str(&self) -> &'static str {
        match self.action {
            OverrideAction::Skip => "none",
            OverrideAction::Pinned(_) => "pinned",
        }
    }

    /// `config` or `store`.
    pub fn origin_str(&self) -> &'static str {
        match self.origin {
            OverrideOrigin::Config { .. } => "config",
            OverrideOrigin::Store { .. } => "store",
        }
    }

    /// The configuration file or the store that holds it.
    pub fn location(&self) -> String {
        match &self.origin {
            OverrideOrigin::Config { file: Some(f), .. } => f.display().to_string(),
            OverrideOrigin::Config { file: None, .. } => "the configuration".into(),
            OverrideOrigin::Store { location, .. } => location.clone(),
        }
    }

    /// The pinned policy's file, for a pinned override of the configuration file.
    pub fn policy_file(&self) -> Option<&std::path::Path> {
        match &self.origin {
            OverrideOrigin::Config { policy_file, .. } => policy_file.as_deref(),
            OverrideOrigin::Store { .. } => None,
        }
    }

    /// The pinned policy, if this pins one.
    pub fn pinned_policy(&self) -> Option<&Arc<CachedPolicy>> {
        match &self.action {
            OverrideAction::Pinned(p) => Some(p),
            OverrideAction::Skip => None,
        }
    }
}

impl fmt::Display for Override {
    /// `MTA-STS skipped for example.com by an override (mode = "none") in FILE`, or
    /// `policy for example.com pinned by an override (FILE) in FILE`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let domain = &self.domain;
        let location = self.location();
        match (&self.action, self.policy_file()) {
            (OverrideAction::Skip, _) => {
                write!(f, "MTA-STS skipped for {domain} by an override (mode = \"none\") in {location}")
            }
            (OverrideAction::Pinned(_), Some(file)) => {
                write!(f, "policy of {domain} pinned by an override ({}) in {location}", file.display())
            }
            (OverrideAction::Pinned(_), None) => {
                write!(f, "policy of {domain} pinned by an override in {location}")
            }
        }
    }
}

/// The overrides an engine applies: those of the configuration file, and those of the store,
/// read again at most once per interval.
///
/// The hot path (a check of a domain without an override) takes no lock and writes nothing
/// shared: an empty map is skipped before hashing, and the store's snapshot is looked at only
/// when it holds overrides (two atomic loads otherwise), so that checks from several threads do
/// not contend here.
#[derive(Debug)]
pub(super) struct Overrides {
    config: HashMap<Domain, Arc<Override>>,
    stored: RwLock<HashMap<Domain, Arc<Override>>>,
    /// How many overrides `stored` holds.
    stored_len: AtomicUsize,
    /// When the store was last read ([`NEVER`]: not yet).
    read_at: AtomicU64,
    /// Held by the one caller reading the store; the others go on with the last snapshot.
    reading: Mutex<()>,
}

/// `read_at` before the first read.
const NEVER: u64 = u64::MAX;

impl Overrides {
    pub(super) fn new(config: Vec<Arc<Override>>) -> Self {
        Self {
            config: config.into_iter().map(|o| (o.domain.clone(), o)).collect(),
            stored: RwLock::new(HashMap::new()),
            stored_len: AtomicUsize::new(0),
            read_at: AtomicU64::new(NEVER),
            reading: Mutex::new(()),
        }
    }

    /// The override of `domain` at `now`: the configuration file's, else the store's (read again
    /// when `interval` has passed since the last read).
    pub(super) fn get(
        &self,
        domain: &Domain,
        store: Option<&dyn PolicyStore>,
        now: u64,
        interval: u64,
        on_error: impl FnOnce(&crate::cache::StoreError),
    ) -> Option<Arc<Override>> {
        if let Some(o) = self.config.get(domain) {
            return Some(Arc::clone(o));
        }
        let store = store?;
        self.refresh(store, now, interval, on_error);
        if self.stored_len.load(Ordering::Acquire) == 0 {
            return None;
        }
        self.stored.read().get(domain).cloned()
    }

    fn due(&self, now: u64, interval: u64) -> bool {
        let at = self.read_at.load(Ordering::Acquire);
        at == NEVER || now.saturating_sub(at) >= interval.max(1)
    }

    /// Reads the store's overrides if the last read is `interval` old (at least a second), or if
    /// they were never read.
    pub(super) fn refresh(
        &self,
        store: &dyn PolicyStore,
        now: u64,
        interval: u64,
        on_error: impl FnOnce(&crate::cache::StoreError),
    ) {
        if !self.due(now, interval) {
            return;
        }
        // One reader at a time; a first read is waited for (a fresh process must see them).
        let first = self.read_at.load(Ordering::Acquire) == NEVER;
        let _reading = if first {
            self.reading.lock()
        } else {
            match self.reading.try_lock() {
                Some(guard) => guard,
                None => return,
            }
        };
        if !self.due(now, interval) {
            return;
        }
        match store.overrides() {
            Ok(rows) => {
                let location = store.location();
                let mut map = HashMap::with_capacity(rows.len());
                for row in &rows {
                    match Override::from_stored(row, &location) {
                        Ok(o) => {
                            map.insert(row.domain.clone(), Arc::new(o));
                        }
                        Err(why) => crate::cache::warn(format_args!(
                            "{location}: the override of {} is ignored (its pinned policy is invalid: {why})",
                            row.domain
                        )),
                    }
                }
                let len = map.len();
                *self.stored.write() = map;
                self.stored_len.store(len, Ordering::Release);
            }
            // Keep what was read last; try again after the interval.
            Err(e) => on_error(&e),
        }
        self.read_at.store(now, Ordering::Release);
    }

    /// Every override in effect, by domain: the configuration file's, and the store's that the
    /// configuration file does not shadow.
    pub(super) fn effective(&self) -> Vec<Arc<Override>> {
        let mut all: Vec<Arc<Override>> = self.config.values().cloned().collect();
        all.extend(self.stored.read().values().filter(|o| !self.config.contains_key(&o.domain)).cloned());
        all.sort_by(|a, b| a.domain.cmp(&b.domain));
        all
    }

    /// Whether `domain` has an override, as last read (no store query).
    pub(super) fn contains(&self, domain: &Domain) -> bool {
        self.config.contains_key(domain) || self.stored.read().contains_key(domain)
    }
}
