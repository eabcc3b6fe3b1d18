//! A store in Redis, for several MTA hosts sharing one policy cache (cargo feature `redis`).
//!
//! One key per domain, `mtasts:policy:<domain>`, holding the entry as JSON. A write merges with
//! what is stored inside one server-side script, so the rule of the SQLite store holds across
//! hosts: a stored policy fetched later than the one written is kept, and the time of the last
//! TXT lookup only moves forward. Each key expires one day after its policy does (or one day after
//! the last lookup when it holds no policy), so Redis forgets domains nobody mails any more.
//! Per-domain overrides (`mtasts override set`) live in one hash, `mtasts:overrides`, that
//! never expires. Connections are per process (a forked child opens its own) with short timeouts.

use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::{
    CountStore, Entry, OutboxItem, OutboxStore, PolicyStore, StoreError, StoredOverride, VerifiedStore,
};
use crate::counts::{Day, DayCounts, DeliveryState};
use crate::domain::Domain;

const PREFIX: &str = "mtasts:policy:";
/// One hash per UTC day of TLSRPT counters.
const COUNTS_PREFIX: &str = "mtasts:tlsrpt:";
/// One hash of engine counters (`mtasts stats`), summed over every process and host.
const STATS_KEY: &str = "mtasts:stats";
/// The hash of per-domain overrides (`mtasts override set`), one field per domain.
const OVERRIDES: &str = "mtasts:overrides";
/// One key per remembered certificate validation (docs/architecture.md, "Remembered
/// validations"): the digest in hex; the value is `VALID_FROM EXPIRES_AT`, and the key expires
/// with it.
const VERIFIED_PREFIX: &str = "mtasts:verified:";
/// The TLSRPT report outbox (RPT-25): `…:index` maps `DAY:DOMAIN` to the report id queued for
/// them (so a day and domain are queued once, fleet-wide), `…:items` a report id to what the
/// report is rebuilt from, `…:states` a report id to its delivery state; `…:claim:ID` is held
/// by the host attempting a delivery.
const OUTBOX_PREFIX: &str = "mtasts:tlsrpt:outbox:";
/// Queues a report unless its day and domain already have one (KEYS: index, items, states;
/// ARGV: DAY:DOMAIN, report id, item JSON, state JSON).
const OUTBOX_PUT: &str = r#"
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[4])
return 1
"#;
/// How long a key outlives its policy (or its last lookup).
const GRACE: u64 = 86_400;
const TIMEOUT: Duration = Duration::from_secs(2);

/// Merges the entry being written (ARGV[1]) with the stored one, by the rule of
/// [`super::Entry::saved_over`] in Lua, and sets the key's expiry.
const MERGE: &str = r#"
local new = cjson.decode(ARGV[1])
local cur = redis.call('GET', KEYS[1])
if cur then
  local old = cjson.decode(cur)
  if type(old.policy) == 'table' and (type(new.policy) ~= 'table' or old.policy.fetched_at > new.policy.fetched_at) then
    new.policy = old.policy
  end
  if old.checked_at > new.checked_at then new.checked_at = old.checked_at end
end
local now = tonumber(ARGV[2])
local until_ = new.checked_at
if type(new.policy) == 'table' and new.policy.expires_at > until_ then until_ = new.policy.expires_at end
local ttl = until_ - now + tonumber(ARGV[3])
if ttl < 60 then ttl = 60 end
redis.call('SET', KEYS[1], cjson.encode(new), 'EX', ttl)
return 1
"#;

/// The Redis store.
pub struct RedisStore {
    client: redis::Client,
    url: String,
    conn: Mutex<Option<(u32, redis::Connection)>>,
    retry_interval: u64,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").field("url", &self.url).finish_non_exhaustive()
    }
}

/// A queued report as the outbox keeps it (the state is kept beside it).
#[derive(Serialize, Deserialize)]
struct StoredItem {
    day: u64,
    domain: String,
    counts: DayCounts,
    record: String,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    policy: Option<StoredPolicy>,
    checked_at: u64,
    failed: Option<StoredFailure>,
}

#[derive(Serialize, Deserialize)]
struct StoredPolicy {
    text: String,
    id: String,
    fetched_at: u64,
    expires_at: u64,
}

#[derive(Serialize, Deserialize)]
struct StoredFailure {
    id: String,
    at: u64,
    reason: String,
    detail: String,
    next_retry_at: u64,
}

impl RedisStore {
    /// Connects to `url` (`redis://host:port/db`).
    pub fn open(url: &str, retry_interval: u64) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(|e| StoreError(format!("{url}: {e}")))?;
        let store = Self { client, url: url.to_owned(), conn: Mutex::new(None), retry_interval };
        store.with(|c| redis::cmd("PING").query::<String>(c))?;
        Ok(store)
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        let pid = std::process::id();
        let mut slot = self.conn.lock();
        if slot.as_ref().is_none_or(|(owner, _)| *owner != pid) {
            if let Some((_, inherited)) = slot.take() {
                // The parent's socket: not ours to use or to shut down.
                std::mem::forget(inherited);
            }
            let conn = self.client.get_connection_with_timeout(TIMEOUT).map_err(|e| self.error(&e))?;
            conn.set_read_timeout(Some(TIMEOUT)).map_err(|e| self.error(&e))?;
            conn.set_write_timeout(Some(TIMEOUT)).map_err(|e| self.error(&e))?;
            *slot = Some((pid, conn));
        }
        let (_, conn) = slot.as_mut().ok_or_else(|| StoreError("no connection".into()))?;
        let result = f(conn);
        if result.is_err() {
            *slot = None; // reconnect next time
        }
        result.map_err(|e| self.error(&e))
    }

    fn error(&self, e: &redis::RedisError) -> StoreError {
        StoreError(format!("{}: {e}", self.url))
    }

    fn decode(&self, domain: &Domain, json: &str) -> Result<Entry, StoreError> {
        let bad = |what: String| StoreError(format!("{}: entry for {domain}: {what}", self.url));
        let s: Stored = serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
        let policy = match s.policy {
            Some(p) => Some(super::stored_policy(p.text, &p.id, p.fetched_at).map_err(bad)?),
            None => None,
        };
        let failed =
            s.failed.and_then(|f| super::stored_failure(&self.url, domain, &f.id, f.at, &f.reason, f.detail));
        Ok(Entry { policy, checked_at: s.checked_at, failed })
    }
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl PolicyStore for RedisStore {
    fn load(&self, domain: &Domain) -> Result<Option<Entry>, StoreError> {
        let key = format!("{PREFIX}{domain}");
        let json: Option<String> = self.with(|c| redis::cmd("GET").arg(&key).query(c))?;
        json.map(|j| self.decode(domain, &j)).transpose()
    }

    fn save(&self, domain: &Domain, entry: &Entry) -> Result<(), StoreError> {
        let stored = Stored {
            policy: entry.policy.as_ref().map(|p| StoredPolicy {
                text: p.text.clone(),
                id: p.id.as_str().to_owned(),
                fetched_at: p.fetched_at,
                expires_at: p.expires_at,
            }),
            checked_at: entry.checked_at,
            failed: entry.failed.as_ref().map(|f| StoredFailure {
                id: f.id.as_str().to_owned(),
                at: f.at,
                reason: f.failure.reason.as_str().to_owned(),
                detail: f.failure.detail.clone(),
                next_retry_at: f.at.saturating_add(self.retry_interval),
            }),
        };
        let json = serde_json::to_string(&stored).map_err(|e| StoreError(e.to_string()))?;
        let key = format!("{PREFIX}{domain}");
        self.with(|c| {
            redis::cmd("EVAL").arg(MERGE).arg(1).arg(&key).arg(&json).arg(now()).arg(GRACE).query::<i64>(c)
        })?;
        Ok(())
    }

    fn list(&self) -> Result<Vec<(Domain, Entry)>, StoreError> {
        let mut keys: Vec<String> = Vec::new();
        let mut cursor = 0u64;
        loop {
            let (next, batch): (u64, Vec<String>) = self.with(|c| {
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(format!("{PREFIX}*"))
                    .arg("COUNT")
                    .arg(500)
                    .query(c)
            })?;
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        keys.sort();
        keys.dedup();
        let mut out = Vec::new();
        for key in keys {
            let Some(name) = key.strip_prefix(PREFIX) else { continue };
            // One unreadable key is skipped with a warning; the others are listed.
            let domain = match Domain::parse(name) {
                Ok(d) => d,
                Err(e) => {
                    super::warn(format_args!("unreadable key skipped: {}: key {key}: {e}", self.url));
                    continue;
                }
            };
            match self.load(&domain) {
                Ok(Some(entry)) => out.push((domain, entry)),
                Ok(None) => {}
                Err(e) => super::warn(format_args!("unreadable key skipped: {e}")),
            }
        }
        Ok(out)
    }

    fn remove(&self, domain: &Domain) -> Result<bool, StoreError> {
        let key = format!("{PREFIX}{domain}");
        let n: i64 = self.with(|c| redis::cmd("DEL").arg(&key).query(c))?;
        Ok(n > 0)
    }

    fn location(&self) -> String {
        self.url.clone()
    }

    fn overrides(&self) -> Result<Vec<StoredOverride>, StoreError> {
        let fields: Vec<(String, String)> = self.with(|c| redis::cmd("HGETALL").arg(OVERRIDES).query(c))?;
        let mut out = Vec::with_capacity(fields.len());
        for (name, json) in fields {
            let parsed = Domain::parse(&name).map_err(|e| e.to_string()).and_then(|domain| {
                let o: StoredOverrideJson = serde_json::from_str(&json).map_err(|e| e.to_string())?;
                Ok(StoredOverride { domain, policy_text: o.policy_text, set_at: o.set_at })
            });
            match parsed {
                Ok(o) => out.push(o),
                Err(e) => super::warn(format_args!("{}: override of `{name}` ignored: {e}", self.url)),
            }
        }
        out.sort_by(|a, b| a.domain.cmp(&b.domain));
        Ok(out)
    }

    fn override_set(&self, o: &StoredOverride) -> Result<(), StoreError> {
        let json = serde_json::to_string(&StoredOverrideJson {
            policy_text: o.policy_text.clone(),
            set_at: o.set_at,
        })
        .map_err(|e| StoreError(e.to_string()))?;
        self.with(|c| redis::cmd("HSET").arg(OVERRIDES).arg(o.domain.as_str()).arg(&json).query::<i64>(c))?;
        Ok(())
    }

    fn override_clear(&self, domain: &Domain) -> Result<bool, StoreError> {
        let n: i64 = self.with(|c| redis::cmd("HDEL").arg(OVERRIDES).arg(domain.as_str()).query(c))?;
        Ok(n > 0)
    }
}

/// An override in the `mtasts:overrides` hash (one field per domain), which never expires.
#[derive(Serialize, Deserialize)]
struct StoredOverrideJson {
    policy_text: Option<String>,
    set_at: u64,
}

impl CountStore for RedisStore {
    /// Nothing: each day's counters expire a week after they were last written.
    fn prune_report_counts(&self, _oldest_report_day: Day) -> Result<u64, StoreError> {
        Ok(0)
    }

    fn add_all(&self, stats: &[(&str, u64)], days: &[(Day, &DayCounts)]) -> Result<(), StoreError> {
        let mut counts = Vec::with_capacity(days.len());
        for (day, day_counts) in days {
            counts.push((format!("{COUNTS_PREFIX}{}", day.days()), super::sqlite::count_rows(day_counts)?));
        }
        if stats.is_empty() && counts.is_empty() {
            return Ok(());
        }
        self.with(|c| {
            let mut pipe = redis::pipe();
            pipe.atomic();
            for (key, n) in stats {
                pipe.cmd("HINCRBY").arg(STATS_KEY).arg(*key).arg(*n).ignore();
            }
            for (key, rows) in &counts {
                for (domain, policy, failure, n) in rows {
                    let field = serde_json::to_string(&(domain, policy, failure)).unwrap_or_default();
                    pipe.cmd("HINCRBY").arg(key).arg(field).arg(*n).ignore();
                }
                // Kept a week: long enough to build and resend the day's reports.
                pipe.cmd("EXPIRE").arg(key).arg(7 * 86_400).ignore();
            }
            pipe.query::<()>(c)
        })
    }

    fn stats(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let fields: Vec<(String, i64)> = self.with(|c| redis::cmd("HGETALL").arg(STATS_KEY).query(c))?;
        let mut rows: Vec<(String, u64)> =
            fields.into_iter().map(|(k, v)| (k, u64::try_from(v).unwrap_or(0))).collect();
        rows.sort();
        Ok(rows)
    }

    fn report_counts(&self, day: Day) -> Result<DayCounts, StoreError> {
        let key = format!("{COUNTS_PREFIX}{}", day.days());
        let fields: Vec<(String, i64)> = self.with(|c| redis::cmd("HGETALL").arg(&key).query(c))?;
        let mut rows = Vec::with_capacity(fields.len());
        for (field, n) in fields {
            let (domain, policy, failure): (String, String, String) = serde_json::from_str(&field)
                .map_err(|e| StoreError(format!("{}: TLSRPT counter {field}: {e}", self.url)))?;
            rows.push((domain, policy, failure, n));
        }
        super::sqlite::counts_from_rows(&self.url, rows)
    }
}

impl RedisStore {
    fn outbox_key(what: &str) -> String {
        format!("{OUTBOX_PREFIX}{what}")
    }

    fn outbox_state(&self, report_id: &str) -> Result<Option<DeliveryState>, StoreError> {
        let json: Option<String> =
            self.with(|c| redis::cmd("HGET").arg(Self::outbox_key("states")).arg(report_id).query(c))?;
        json.map(|j| {
            serde_json::from_str(&j)
                .map_err(|e| StoreError(format!("{}: TLSRPT outbox state of {report_id}: {e}", self.url)))
        })
        .transpose()
    }
}

/// The outbox in three hashes (see [`OUTBOX_PREFIX`]); the claim is `SET NX EX`, Redis's atomic
/// "set if absent", so of several hosts exactly one attempts a report at a time, and it
/// re-reads the state after claiming, so a report another host has just delivered is not sent
/// again. Queued reports are kept until removed, like the SQLite outbox.
impl OutboxStore for RedisStore {
    fn outbox_put(&self, item: &OutboxItem) -> Result<bool, StoreError> {
        let stored = StoredItem {
            day: item.day.days(),
            domain: item.domain.to_string(),
            counts: item.counts.clone(),
            record: item.record.clone(),
        };
        let json = serde_json::to_string(&stored).map_err(|e| StoreError(e.to_string()))?;
        let state = serde_json::to_string(&item.state).map_err(|e| StoreError(e.to_string()))?;
        let index = format!("{}:{}", item.day.days(), item.domain);
        let added: i64 = self.with(|c| {
            redis::cmd("EVAL")
                .arg(OUTBOX_PUT)
                .arg(3)
                .arg(Self::outbox_key("index"))
                .arg(Self::outbox_key("items"))
                .arg(Self::outbox_key("states"))
                .arg(index)
                .arg(&item.report_id)
                .arg(json)
                .arg(state)
                .query(c)
        })?;
        Ok(added == 1)
    }

    fn outbox(&self) -> Result<Vec<OutboxItem>, StoreError> {
        type Fields = Vec<(String, String)>;
        let (items, states): (Fields, Fields) = self.with(|c| {
            redis::pipe()
                .cmd("HGETALL")
                .arg(Self::outbox_key("items"))
                .cmd("HGETALL")
                .arg(Self::outbox_key("states"))
                .query(c)
        })?;
        let states: std::collections::HashMap<String, String> = states.into_iter().collect();
        let bad = |id: &str, what: String| StoreError(format!("{}: TLSRPT outbox {id}: {what}", self.url));
        let mut out = Vec::with_capacity(items.len());
        for (report_id, json) in items {
            let s: StoredItem = serde_json::from_str(&json).map_err(|e| bad(&report_id, e.to_string()))?;
            let state = states.get(&report_id).ok_or_else(|| bad(&report_id, "no state".into()))?;
            out.push(OutboxItem {
                day: Day::from_days(s.day),
                domain: Domain::parse(&s.domain).map_err(|e| bad(&report_id, e.to_string()))?,
                counts: s.counts,
                record: s.record,
                state: serde_json::from_str(state).map_err(|e| bad(&report_id, e.to_string()))?,
                report_id,
            });
        }
        out.sort_by(|a, b| (a.day.days(), &a.domain).cmp(&(b.day.days(), &b.domain)));
        Ok(out)
    }

    fn outbox_update(&self, report_id: &str, state: &DeliveryState) -> Result<(), StoreError> {
        let json = serde_json::to_string(state).map_err(|e| StoreError(e.to_string()))?;
        self.with(|c| {
            redis::pipe()
                .atomic()
                .cmd("HSET")
                .arg(Self::outbox_key("states"))
                .arg(report_id)
                .arg(json)
                .ignore()
                .cmd("DEL")
                .arg(Self::outbox_key(&format!("claim:{report_id}")))
                .ignore()
                .query::<()>(c)
        })
    }

    fn outbox_claim(
        &self,
        report_id: &str,
        seen: &DeliveryState,
        _now: u64,
        lease: u64,
    ) -> Result<bool, StoreError> {
        let key = Self::outbox_key(&format!("claim:{report_id}"));
        let owner = format!("{}:{}", std::process::id(), now());
        let set: Option<String> = self.with(|c| {
            redis::cmd("SET").arg(&key).arg(&owner).arg("NX").arg("EX").arg(lease.max(1)).query(c)
        })?;
        if set.is_none() {
            return Ok(false);
        }
        let current = self.outbox_state(report_id)?;
        let unchanged = current.is_some_and(|s| !s.done && s.attempts == seen.attempts);
        if !unchanged {
            self.with(|c| redis::cmd("DEL").arg(&key).query::<()>(c))?;
        }
        Ok(unchanged)
    }
}

impl VerifiedStore for RedisStore {
    fn verified_load(&self, digest: &[u8; 32], now: u64) -> Result<Option<(u64, u64)>, StoreError> {
        let key = format!("{VERIFIED_PREFIX}{}", super::digest_hex(digest));
        let value: Option<String> = self.with(|c| redis::cmd("GET").arg(&key).query(c))?;
        let Some(value) = value else { return Ok(None) };
        let window = value.split_once(' ').and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)));
        if window.is_none() {
            super::warn(format_args!(
                "{}: remembered validation `{key}` unreadable, ignored",
                self.location()
            ));
        }
        Ok(window.filter(|&(_, until): &(u64, u64)| now < until))
    }

    fn verified_save(
        &self,
        digest: &[u8; 32],
        valid_from: u64,
        now: u64,
        expires_at: u64,
    ) -> Result<(), StoreError> {
        let key = format!("{VERIFIED_PREFIX}{}", super::digest_hex(digest));
        let ttl = expires_at.saturating_sub(now).max(1);
        self.with(|c| {
            redis::cmd("SET")
                .arg(&key)
                .arg(format!("{valid_from} {expires_at}"))
                .arg("EX")
                .arg(ttl)
                .query::<()>(c)
        })
    }
}
