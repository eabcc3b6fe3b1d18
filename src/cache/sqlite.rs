//! The default persistent store: one SQLite database (bundled SQLite, WAL mode) shared by every
//! process of the host.
//!
//! * Many processes: WAL lets readers and one writer work at once; a busy timeout makes writers
//!   wait for each other instead of failing. Each write is one transaction.
//! * Durability: a process killed in the middle of a write leaves the last committed state
//!   (SQLite's journal); `synchronous = NORMAL` in WAL mode survives process crashes.
//! * Newest policy wins: when two processes store the same domain, a stored policy fetched later
//!   than the one being written is kept; the time of the last TXT lookup only moves forward.
//! * `fork()`: the connection is keyed by process id; a child opens its own and never touches the
//!   parent's (SQLite forbids carrying a connection across `fork()`).
//! * Foreign or corrupt files are refused with a message naming the file: the database carries
//!   an application id, and a schema version with a migration step per version.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use super::{CachedPolicy, Entry, FailedFetch, Failure, OutboxItem, Store, StoreError};
use crate::domain::Domain;
use crate::policy::Policy;
use crate::tlsrpt::DeliveryState;
use crate::tlsrpt::report::{Day, DayCounts, FailureKey, PolicyKey};
use crate::txt::PolicyId;
use crate::verdict::Reason;

/// `PRAGMA application_id` of an mtasts store ("MTST").
const APPLICATION_ID: i64 = 0x4D54_5354;
/// Schema migrations; entry `n` brings a database from version `n` to version `n + 1`.
const MIGRATIONS: &[&str] = &[
    // 0 -> 1: the table of domains.
    "CREATE TABLE policies (
        domain        TEXT PRIMARY KEY NOT NULL,
        policy_text   TEXT,
        policy_id     TEXT,
        mode          TEXT,
        max_age       INTEGER,
        fetched_at    INTEGER,
        expires_at    INTEGER,
        checked_at    INTEGER NOT NULL DEFAULT 0,
        failed_id     TEXT,
        failed_at     INTEGER,
        failed_reason TEXT,
        failed_detail TEXT,
        next_retry_at INTEGER
    ) WITHOUT ROWID;",
    // 1 -> 2: listing policies due for refresh reads by fetch time.
    "CREATE INDEX policies_fetched_at ON policies (fetched_at);",
    // 2 -> 3: TLSRPT session counts per day, and reports waiting for delivery.
    "CREATE TABLE tlsrpt_counts (
        day      INTEGER NOT NULL,
        domain   TEXT NOT NULL,
        policy   TEXT NOT NULL,
        failure  TEXT NOT NULL,
        sessions INTEGER NOT NULL,
        PRIMARY KEY (day, domain, policy, failure)
    ) WITHOUT ROWID;
    CREATE TABLE tlsrpt_outbox (
        report_id TEXT PRIMARY KEY NOT NULL,
        day       INTEGER NOT NULL,
        domain    TEXT NOT NULL,
        counts    TEXT NOT NULL,
        record    TEXT NOT NULL,
        state     TEXT NOT NULL,
        UNIQUE (day, domain)
    );",
];
/// The schema version this code writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;
/// How long a writer waits for another process's write.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The SQLite store.
#[derive(Debug)]
pub struct SqliteStore {
    path: PathBuf,
    /// The connection of the process that opened it.
    conn: Mutex<Option<(u32, Connection)>>,
    /// Seconds a failed fetch is not retried (to record the next retry time).
    retry_interval: u64,
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path`, checking that it is an mtasts store and
    /// bringing its schema up to date. `retry_interval` is the engine's fetch retry interval.
    pub fn open(path: &Path, retry_interval: u64) -> Result<Self, StoreError> {
        let conn = connect(path)?;
        Ok(Self { path: path.to_owned(), conn: Mutex::new(Some((std::process::id(), conn))), retry_interval })
    }

    /// Runs `f` with this process's connection, opening one after `fork()`.
    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        let pid = std::process::id();
        let mut slot = self.conn.lock();
        if slot.as_ref().is_none_or(|(owner, _)| *owner != pid) {
            if let Some((_, inherited)) = slot.take() {
                // The parent's connection: never used or closed here (SQLite forbids both).
                std::mem::forget(inherited);
            }
            *slot = Some((pid, connect(&self.path)?));
        }
        let (_, conn) = slot.as_mut().ok_or_else(|| StoreError("no connection".into()))?;
        f(conn).map_err(|e| describe(&self.path, &e))
    }
}

/// Opens and checks the database at `path`.
fn connect(path: &Path) -> Result<Connection, StoreError> {
    let flags =
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut conn = Connection::open_with_flags(path, flags).map_err(|e| describe(path, &e))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| describe(path, &e))?;
    prepare(&mut conn).map_err(|e| describe(path, &e))?;
    let app: i64 =
        conn.query_row("PRAGMA application_id", [], |r| r.get(0)).map_err(|e| describe(path, &e))?;
    if app != APPLICATION_ID {
        return Err(StoreError(format!(
            "{} is not an mtasts policy store (it is another application's SQLite database); \
             move it away or choose another [cache] path",
            path.display()
        )));
    }
    Ok(conn)
}

/// Sets the pragmas, claims a new database and runs pending migrations.
fn prepare(conn: &mut Connection) -> rusqlite::Result<()> {
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(rusqlite::Error::ToSqlConversionFailure(
            format!("cannot switch to WAL mode (journal mode is {mode})").into(),
        ));
    }
    conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = OFF;")?;
    // The common case, a current store: no write transaction at all.
    let app: i64 = conn.query_row("PRAGMA application_id", [], |r| r.get(0))?;
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if app == APPLICATION_ID && version == SCHEMA_VERSION {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let app: i64 = tx.query_row("PRAGMA application_id", [], |r| r.get(0))?;
    let tables: i64 = tx.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
    if app == 0 && tables == 0 {
        tx.execute_batch(&format!("PRAGMA application_id = {APPLICATION_ID}"))?;
    } else if app != APPLICATION_ID {
        return Ok(()); // reported by the caller, which names the file
    }
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(rusqlite::Error::ToSqlConversionFailure(
            format!("the store has schema version {version}, newer than this mtasts ({SCHEMA_VERSION}); upgrade mtasts")
                .into(),
        ));
    }
    for (from, sql) in MIGRATIONS.iter().enumerate().skip(usize::try_from(version).unwrap_or(0)) {
        tx.execute_batch(sql)?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", from + 1))?;
    }
    tx.commit()
}

/// An error message naming the file, with the likely cause in words.
fn describe(path: &Path, e: &rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode as C;
    let p = path.display();
    let msg = match e.sqlite_error_code() {
        Some(C::NotADatabase) => {
            format!("{p} is not an mtasts policy store (not a SQLite database, or corrupt)")
        }
        Some(C::DatabaseCorrupt) => format!("{p} is corrupt; move it away and mtasts will start a new store"),
        Some(C::CannotOpen) => format!(
            "cannot open {p}: the directory must exist and be writable by the user the MTA runs as \
             (e.g. Debian-exim, postfix)"
        ),
        Some(C::ReadOnly) | Some(C::PermissionDenied) => {
            format!("{p} is not writable by this user (the MTA's user must own the store and its directory)")
        }
        Some(C::DatabaseBusy) | Some(C::DatabaseLocked) => {
            format!("{p} stayed locked by another process: {e}")
        }
        _ => match e {
            rusqlite::Error::ToSqlConversionFailure(inner) => format!("{p}: {inner}"),
            other => format!("{p}: {other}"),
        },
    };
    StoreError(msg)
}

impl Store for SqliteStore {
    fn load(&self, domain: &Domain) -> Result<Option<Entry>, StoreError> {
        let row = self.with(|c| {
            c.prepare_cached(
                "SELECT policy_text, policy_id, fetched_at, checked_at, failed_id, failed_at, failed_reason, failed_detail
                 FROM policies WHERE domain = ?1",
            )?
            .query_row(params![domain.as_str()], Row::read)
            .optional()
        })?;
        row.map(|r| r.into_entry(&self.path, domain)).transpose()
    }

    fn save(&self, domain: &Domain, entry: &Entry) -> Result<(), StoreError> {
        let failed = entry.failed.as_ref();
        let retry_interval = self.retry_interval;
        self.with(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            tx.prepare_cached(
                "INSERT INTO policies (domain, checked_at, failed_id, failed_at, failed_reason, failed_detail, next_retry_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (domain) DO UPDATE SET
                   checked_at = max(checked_at, excluded.checked_at),
                   failed_id = excluded.failed_id, failed_at = excluded.failed_at,
                   failed_reason = excluded.failed_reason, failed_detail = excluded.failed_detail,
                   next_retry_at = excluded.next_retry_at",
            )?
            .execute(params![
                domain.as_str(),
                to_sql(entry.checked_at),
                failed.map(|f| f.id.as_str()),
                failed.map(|f| to_sql(f.at)),
                failed.map(|f| f.failure.reason.as_str()),
                failed.map(|f| f.failure.detail.as_str()),
                failed.map(|f| to_sql(f.at.saturating_add(retry_interval))),
            ])?;
            if let Some(p) = &entry.policy {
                // Only a policy fetched no earlier than the stored one replaces it.
                tx.prepare_cached(
                    "UPDATE policies SET policy_text = ?2, policy_id = ?3, mode = ?4, max_age = ?5,
                       fetched_at = ?6, expires_at = ?7
                     WHERE domain = ?1 AND (fetched_at IS NULL OR fetched_at <= ?6)",
                )?
                .execute(params![
                    domain.as_str(),
                    p.text,
                    p.id.as_str(),
                    p.mode().as_str(),
                    p.policy.max_age(),
                    to_sql(p.fetched_at),
                    to_sql(p.expires_at),
                ])?;
            }
            tx.commit()
        })
    }

    fn list(&self) -> Result<Vec<(Domain, Entry)>, StoreError> {
        let rows = self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT domain, policy_text, policy_id, fetched_at, checked_at, failed_id, failed_at, failed_reason, failed_detail
                 FROM policies ORDER BY domain",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, Row::read_from(r, 1)?)))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        rows.into_iter()
            .map(|(name, row)| {
                let domain = Domain::parse(&name).map_err(|e| {
                    StoreError(format!("{}: stored domain `{name}`: {e}", self.path.display()))
                })?;
                let entry = row.into_entry(&self.path, &domain)?;
                Ok((domain, entry))
            })
            .collect()
    }

    fn remove(&self, domain: &Domain) -> Result<bool, StoreError> {
        self.with(|c| {
            c.execute("DELETE FROM policies WHERE domain = ?1", params![domain.as_str()]).map(|n| n > 0)
        })
    }

    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn add_report_counts(&self, day: Day, counts: &DayCounts) -> Result<(), StoreError> {
        let rows = count_rows(counts)?;
        self.with(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT INTO tlsrpt_counts (day, domain, policy, failure, sessions) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (day, domain, policy, failure) DO UPDATE SET sessions = sessions + excluded.sessions",
                )?;
                for (domain, policy, failure, n) in &rows {
                    stmt.execute(params![to_sql(day.days()), domain, policy, failure, to_sql(*n)])?;
                }
            }
            tx.commit()
        })
    }

    fn report_counts(&self, day: Day) -> Result<DayCounts, StoreError> {
        let rows = self.with(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT domain, policy, failure, sessions FROM tlsrpt_counts WHERE day = ?1 ORDER BY domain",
            )?;
            let rows = stmt.query_map(params![to_sql(day.days())], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        counts_from_rows(&self.location(), rows)
    }

    fn outbox_put(&self, item: &OutboxItem) -> Result<bool, StoreError> {
        let counts = serde_json::to_string(&item.counts).map_err(|e| StoreError(e.to_string()))?;
        let state = serde_json::to_string(&item.state).map_err(|e| StoreError(e.to_string()))?;
        self.with(|c| {
            c.execute(
                "INSERT OR IGNORE INTO tlsrpt_outbox (report_id, day, domain, counts, record, state)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    item.report_id,
                    to_sql(item.day.days()),
                    item.domain.as_str(),
                    counts,
                    item.record,
                    state
                ],
            )
            .map(|n| n > 0)
        })
    }

    fn outbox(&self) -> Result<Vec<OutboxItem>, StoreError> {
        let rows = self.with(|c| {
            let mut stmt =
                c.prepare("SELECT report_id, day, domain, counts, record, state FROM tlsrpt_outbox ORDER BY day, domain")?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                ))
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        let bad = |what: String| StoreError(format!("{}: TLSRPT outbox: {what}", self.path.display()));
        rows.into_iter()
            .map(|(report_id, day, domain, counts, record, state)| {
                Ok(OutboxItem {
                    report_id,
                    day: Day::from_days(from_sql(Some(day)).unwrap_or(0)),
                    domain: Domain::parse(&domain).map_err(|e| bad(e.to_string()))?,
                    counts: serde_json::from_str(&counts).map_err(|e| bad(e.to_string()))?,
                    record,
                    state: serde_json::from_str(&state).map_err(|e| bad(e.to_string()))?,
                })
            })
            .collect()
    }

    fn outbox_update(&self, report_id: &str, state: &DeliveryState) -> Result<(), StoreError> {
        let state = serde_json::to_string(state).map_err(|e| StoreError(e.to_string()))?;
        self.with(|c| {
            c.execute("UPDATE tlsrpt_outbox SET state = ?2 WHERE report_id = ?1", params![report_id, state])
        })
        .map(|_| ())
    }
}

/// The counters of `counts` as (domain, policy JSON, failure JSON or "", sessions) rows.
pub(super) fn count_rows(counts: &DayCounts) -> Result<Vec<(String, String, String, u64)>, StoreError> {
    let mut rows = Vec::new();
    for domain in counts.domains() {
        for (policy, c) in counts.policies(domain) {
            let policy_json = to_json(policy)?;
            if c.successes > 0 {
                rows.push((domain.to_string(), policy_json.clone(), String::new(), c.successes));
            }
            for (failure, &n) in &c.failures {
                rows.push((domain.to_string(), policy_json.clone(), to_json(failure)?, n));
            }
        }
    }
    Ok(rows)
}

/// Rebuilds day counts from stored rows.
pub(super) fn counts_from_rows(
    location: &str,
    rows: Vec<(String, String, String, i64)>,
) -> Result<DayCounts, StoreError> {
    let bad = |what: String| StoreError(format!("{location}: TLSRPT counts: {what}"));
    let mut counts = DayCounts::new();
    for (domain, policy, failure, n) in rows {
        let domain = Domain::parse(&domain).map_err(|e| bad(e.to_string()))?;
        let policy: PolicyKey = serde_json::from_str(&policy).map_err(|e| bad(e.to_string()))?;
        let n = u64::try_from(n).unwrap_or(0);
        if failure.is_empty() {
            counts.add_success(&domain, &policy, n);
        } else {
            let failure: FailureKey = serde_json::from_str(&failure).map_err(|e| bad(e.to_string()))?;
            counts.add_failure(&domain, &policy, failure, n);
        }
    }
    Ok(counts)
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError(e.to_string()))
}

/// Seconds as SQLite's 64-bit integer (saturating: times are far below 2^63).
fn to_sql(secs: u64) -> i64 {
    i64::try_from(secs).unwrap_or(i64::MAX)
}

fn from_sql(secs: Option<i64>) -> Option<u64> {
    secs.map(|s| u64::try_from(s).unwrap_or(0))
}

/// The columns of one stored domain, before they are checked.
struct Row {
    policy_text: Option<String>,
    policy_id: Option<String>,
    fetched_at: Option<i64>,
    checked_at: i64,
    failed_id: Option<String>,
    failed_at: Option<i64>,
    failed_reason: Option<String>,
    failed_detail: Option<String>,
}

impl Row {
    fn read(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Self::read_from(r, 0)
    }

    fn read_from(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Self> {
        Ok(Self {
            policy_text: r.get(at)?,
            policy_id: r.get(at + 1)?,
            fetched_at: r.get(at + 2)?,
            checked_at: r.get(at + 3)?,
            failed_id: r.get(at + 4)?,
            failed_at: r.get(at + 5)?,
            failed_reason: r.get(at + 6)?,
            failed_detail: r.get(at + 7)?,
        })
    }

    /// Rebuilds the entry; the policy text is parsed again, so a stored policy obeys exactly the
    /// rules of a fetched one.
    fn into_entry(self, path: &Path, domain: &Domain) -> Result<Entry, StoreError> {
        let bad = |what: String| StoreError(format!("{}: entry for {domain}: {what}", path.display()));
        let policy = match (self.policy_text, self.policy_id, from_sql(self.fetched_at)) {
            (Some(text), Some(id), Some(fetched_at)) => {
                let parsed = Policy::parse(text.as_bytes()).map_err(|e| bad(e.to_string()))?;
                let id = PolicyId::parse(&id).map_err(|e| bad(e.to_string()))?;
                Some(Arc::new(CachedPolicy::new(parsed, id, text, fetched_at)))
            }
            (None, _, _) => None,
            _ => return Err(bad("incomplete policy columns".into())),
        };
        let failed = match (self.failed_id, from_sql(self.failed_at), self.failed_reason) {
            (Some(id), Some(at), Some(reason)) => Some(FailedFetch {
                id: PolicyId::parse(&id).map_err(|e| bad(e.to_string()))?,
                at,
                failure: Failure {
                    reason: Reason::parse(&reason)
                        .ok_or_else(|| bad(format!("unknown reason `{reason}`")))?,
                    detail: self.failed_detail.unwrap_or_default(),
                },
            }),
            _ => None,
        };
        Ok(Entry { policy, checked_at: from_sql(Some(self.checked_at)).unwrap_or(0), failed })
    }
}
