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

use parking_lot::Mutex;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use super::{CountStore, Entry, OutboxItem, OutboxStore, PolicyStore, StoreError};
use crate::counts::{Day, DayCounts, DeliveryState, FailureKey, PolicyKey};
use crate::domain::Domain;

/// `PRAGMA application_id` of an mtasts store ("MTST").
const APPLICATION_ID: i64 = 0x4D54_5354;
/// Schema migrations; entry `n` brings a database from version `n` to version `n + 1`.
const MIGRATIONS: &[&str] = &[
    // 0 -> 1: the table of domains. `next_retry_at` is no longer written nor read (the engine
    // derives the retry time from `failed_at` and its own `fetch_retry_interval`); the column
    // stays, so that no migration is needed.
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
    // 3 -> 4: the refresher finds due policies without reading every row: fetched long ago
    // (policies_fetched_at), or past half their life (this index on an expression).
    "CREATE INDEX policies_half_life ON policies (fetched_at + max_age / 2);",
    // 4 -> 5: DANE answers (the TLSA state of MX hosts) until they expire.
    "CREATE TABLE tlsa (
        host       TEXT PRIMARY KEY NOT NULL,
        answer     TEXT NOT NULL,
        expires_at INTEGER NOT NULL
    ) WITHOUT ROWID;",
    // 5 -> 6: engine counters summed over processes (`mtasts stats`, src/metrics.rs).
    "CREATE TABLE stats (
        key   TEXT PRIMARY KEY NOT NULL,
        value INTEGER NOT NULL
    ) WITHOUT ROWID;",
    // 6 -> 7: per-domain overrides (`mtasts override set`): MTA-STS skipped (no text) or a
    // pinned policy, kept as its text.
    "CREATE TABLE overrides (
        domain      TEXT PRIMARY KEY NOT NULL,
        policy_text TEXT,
        set_at      INTEGER NOT NULL
    ) WITHOUT ROWID;",
];
/// One domain's row: the read of a memory miss ([`PolicyStore::load`]).
const LOAD: &str =
    "SELECT policy_text, policy_id, fetched_at, checked_at, failed_id, failed_at, failed_reason,
    failed_detail FROM policies WHERE domain = ?1";
/// The schema version this code writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;
/// How long a writer waits for another process's write.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// The size of the write-ahead log, in pages, past which a commit copies it into the database
/// and empties it (a `TRUNCATE` checkpoint, [`checkpoint_and_restart`]: the log and the database
/// are synced), so that the next writer starts the log again (its new header is synced too).
/// SQLite's default is 1,000 pages (4 MB). A
/// process that opens the store while no other process has it open rebuilds its index of the
/// log by reading all of it, and Exim opens it that way for every delivery, whose exit flush adds
/// two pages: with the default, a delivery spent about 1.3 µs per page in the log, 1.4 ms at 800
/// pages, more than everything else it did. At 100 pages the rebuild stays under about 130 µs
/// (65 µs on average) and the checkpoint's fsyncs (four in the process that runs it) fall on one
/// delivery in 50 (BENCHMARKS.md "A process per delivery").
const WAL_AUTOCHECKPOINT_PAGES: u32 = 100;

/// The stored policies due for refresh (`?1` now, `?2` the refresh interval). Both terms of the
/// OR are indexed (`policies_fetched_at`, `policies_half_life`), so rows with nothing due are never
/// visited: a refresher pass over 100,000 domains that finds nothing due reads nothing.
const DUE_FOR_REFRESH: &str = "SELECT domain, policy_text, policy_id, fetched_at, checked_at, failed_id, failed_at, failed_reason, failed_detail
     FROM policies
     WHERE (fetched_at <= ?1 - ?2 OR fetched_at + max_age / 2 <= ?1) AND expires_at > ?1";

/// The SQLite store.
#[derive(Debug)]
pub struct SqliteStore {
    path: PathBuf,
    /// The connection of the process that opened it.
    conn: Mutex<Option<(u32, Connection)>>,
    /// How the store was opened; a child after `fork()` reopens it the same way.
    access: Access,
}

/// How a store is opened.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Access {
    /// Read and write (the normal case).
    ReadWrite,
    /// Read-only: this user may read the files but not write them. Stored policies are still
    /// applied; nothing new is saved. `immutable` when SQLite's WAL side files could be neither
    /// opened nor created, so the database file is read as it stands.
    ReadOnly { why: String, immutable: bool },
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path`, checking that it is an mtasts store and
    /// bringing its schema up to date. `retry_interval` (the engine's fetch retry interval) is
    /// not used: the engine applies its own interval to the time of a failure when it loads it.
    ///
    /// A store this user can read but not write (created by root for the MTA's user, say) is
    /// opened read-only: its policies are still enforced ([`PolicyStore::read_only`] says why nothing
    /// new is saved). Files this call creates get the owner and group of their directory, so that
    /// an operator running `mtasts` as root never leaves a store the MTA's user cannot write.
    pub fn open(path: &Path, _retry_interval: u64) -> Result<Self, StoreError> {
        let (conn, access) = connect_any(path)?;
        Ok(Self { path: path.to_owned(), conn: Mutex::new(Some((std::process::id(), conn))), access })
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
            let conn = match &self.access {
                Access::ReadWrite => connect(&self.path).map_err(|(e, _)| e)?,
                Access::ReadOnly { immutable, .. } => connect_read_only(&self.path, *immutable)?,
            };
            *slot = Some((pid, conn));
        }
        let (_, conn) = slot.as_mut().ok_or_else(|| StoreError("no connection".into()))?;
        f(conn).map_err(|e| describe(&self.path, &e))
    }

    /// Refuses a write to a read-only store.
    fn writable(&self) -> Result<(), StoreError> {
        match &self.access {
            Access::ReadWrite => Ok(()),
            Access::ReadOnly { why, .. } => Err(StoreError(why.clone())),
        }
    }
}

/// The side files SQLite keeps next to a WAL-mode database.
fn side_files(path: &Path) -> [PathBuf; 2] {
    let with = |suffix: &str| {
        let mut s = path.as_os_str().to_owned();
        s.push(suffix);
        PathBuf::from(s)
    };
    [with("-wal"), with("-shm")]
}

impl SqliteStore {
    /// The entries a query selects (its columns as in [`SqliteStore::list`]). Each row is read on
    /// its own: one that cannot be read is skipped with a warning naming the domain, not fatal.
    fn entries(&self, sql: &str, args: impl rusqlite::Params) -> Result<Vec<(Domain, Entry)>, StoreError> {
        let rows = self.with(|c| {
            let mut stmt = c.prepare_cached(sql)?;
            let rows = stmt.query_map(args, |r| {
                let name = match r.get_ref(0)? {
                    rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                    other => format!("{other:?}"),
                };
                Ok((name, Row::read_from(r, 1)))
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        let location = self.location();
        Ok(rows
            .into_iter()
            .filter_map(|(name, row)| {
                let entry = Domain::parse(&name)
                    .map_err(|e| StoreError(format!("{location}: stored domain `{name}`: {e}")))
                    .and_then(|domain| {
                        let row = row.map_err(|e| describe(&self.path, &e))?;
                        Ok((domain.clone(), row.into_entry(&self.path, &domain)?))
                    });
                entry.map_err(|e| super::warn(format_args!("unreadable row skipped: {e}"))).ok()
            })
            .collect())
    }
}

/// Creates the (empty) database file with mode 0666 less the umask, as any Unix program would:
/// SQLite itself creates files 0644 whatever the umask, and its `-wal` and `-shm` files take the
/// database file's mode. So a store made under `UMask=0002` (the Debian package's units) is
/// writable by its group, which the MTA's user joins to share it. An empty file is a valid new
/// database. A failure (another process created it first, no permission) is left for SQLite to
/// report when it opens the path.
fn create_empty(path: &Path) {
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o666).open(path);
}

/// Opens the store read-write, or read-only when this user may read it but not write it.
fn connect_any(path: &Path) -> Result<(Connection, Access), StoreError> {
    let [wal, shm] = side_files(path);
    let existed = [path.exists(), wal.exists(), shm.exists()];
    if !existed[0] {
        create_empty(path);
    }
    let read_write = connect(path);
    adopt_directory_owner([path, &wal, &shm], existed);
    let error = match read_write {
        Ok(conn) => return Ok((conn, Access::ReadWrite)),
        Err(e) => e,
    };
    // Only a store that exists and can be read is worth a read-only try: anything else (a
    // missing directory, a foreign or corrupt file) is reported as it is.
    if !existed[0] || std::fs::File::open(path).is_err() || !error.1 {
        return Err(error.0);
    }
    let why = format!(
        "{} is read-only for this user: stored policies are applied, but new policies and TLSRPT \
         counts are not saved (make the store, its -wal/-shm files and its directory writable by \
         the user the MTA runs as)",
        path.display()
    );
    if let Ok(conn) = connect_read_only(path, false) {
        return Ok((conn, Access::ReadOnly { why, immutable: false }));
    }
    // SQLite could neither open nor create the WAL side files. With no write-ahead log holding
    // changes, the database file alone is the whole store and may be read as immutable.
    if std::fs::metadata(&wal).map_or(true, |m| m.len() == 0) {
        if let Ok(conn) = connect_read_only(path, true) {
            return Ok((conn, Access::ReadOnly { why, immutable: true }));
        }
    }
    Err(error.0)
}

/// SQLite's process-wide memory settings, made once before this process's first connection.
/// By default every connection sets up 120 KB of lookaside memory and 20 pages of page cache at
/// once and writes a free list through all of it, so a process that opens one connection for a
/// few reads touches (and takes a page fault for) each of those pages: about 40 faults more per
/// Exim delivery (BENCHMARKS.md "A process per delivery"). 19 KB of lookaside still serve most of
/// the schema parser's small allocations (0.15% more instructions than the default; none costs
/// 2%); the page cache takes memory a page at a time as pages are read.
#[allow(unsafe_code)] // sqlite3_config: SQLite's C interface, which rusqlite does not wrap
fn configure_sqlite() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // 16 slots of 1,200 bytes (SQLite carves them into large and small ones), not 100.
        let (lookaside_size, lookaside_slots) = (1200i32, 16i32);
        // SAFETY: called once, before this process's first connection (every connection of
        // the library is opened after this `Once`, which makes other threads wait), so no other
        // SQLite call runs meanwhile. A SQLite already initialised answers SQLITE_MISUSE and
        // keeps its settings, which is harmless.
        unsafe {
            rusqlite::ffi::sqlite3_config(
                rusqlite::ffi::SQLITE_CONFIG_LOOKASIDE,
                lookaside_size,
                lookaside_slots,
            );
            // No memory of its own and no initial bulk: pages from the heap as they are read.
            rusqlite::ffi::sqlite3_config(
                rusqlite::ffi::SQLITE_CONFIG_PAGECACHE,
                std::ptr::null_mut::<std::ffi::c_void>(),
                0i32,
                0i32,
            );
        }
    });
}

/// Opens and checks the database at `path` for reading and writing. The flag of the error says
/// whether the cause is a permission (so that a read-only open may succeed).
fn connect(path: &Path) -> Result<Connection, (StoreError, bool)> {
    let flags =
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let fail = |e: rusqlite::Error| {
        let permission = matches!(
            e.sqlite_error_code(),
            Some(
                rusqlite::ErrorCode::ReadOnly
                    | rusqlite::ErrorCode::PermissionDenied
                    | rusqlite::ErrorCode::CannotOpen
            )
        );
        (describe(path, &e), permission)
    };
    configure_sqlite();
    let mut conn = Connection::open_with_flags(path, flags).map_err(fail)?;
    // SQLite opens a file it may not write read-only without saying so.
    if conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(true) {
        return Err((
            StoreError(format!(
                "{} is not writable by this user (the MTA's user must own the store and its directory)",
                path.display()
            )),
            true,
        ));
    }
    conn.busy_timeout(BUSY_TIMEOUT).map_err(fail)?;
    prepare(&mut conn).map_err(fail)?;
    check_application_id(path, &conn).map_err(|e| (e, false))?;
    Ok(conn)
}

/// Opens the database at `path` for reading only; `immutable` reads the file as it stands,
/// without the WAL side files (SQLite's `immutable` URI parameter).
fn connect_read_only(path: &Path, immutable: bool) -> Result<Connection, StoreError> {
    let flags =
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
    configure_sqlite();
    let conn = if immutable {
        let uri = format!("file:{}?immutable=1", uri_path(path));
        Connection::open_with_flags(uri, flags)
    } else {
        Connection::open_with_flags(path, flags - OpenFlags::SQLITE_OPEN_URI)
    }
    .map_err(|e| describe(path, &e))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| describe(path, &e))?;
    check_application_id(path, &conn)?;
    let version: i64 =
        conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(|e| describe(path, &e))?;
    if !(1..=SCHEMA_VERSION).contains(&version) {
        return Err(StoreError(format!(
            "{} has schema version {version}, which this mtasts cannot read without writing it",
            path.display()
        )));
    }
    Ok(conn)
}

/// A path as the path part of a `file:` URI (`%`, `?` and `#` escaped).
fn uri_path(path: &Path) -> String {
    let mut out = String::new();
    for c in path.to_string_lossy().chars() {
        match c {
            '%' => out.push_str("%25"),
            '?' => out.push_str("%3f"),
            '#' => out.push_str("%23"),
            c => out.push(c),
        }
    }
    out
}

fn check_application_id(path: &Path, conn: &Connection) -> Result<(), StoreError> {
    let app: i64 =
        conn.query_row("PRAGMA application_id", [], |r| r.get(0)).map_err(|e| describe(path, &e))?;
    if app != APPLICATION_ID {
        return Err(StoreError(format!(
            "{} is not an mtasts policy store (it is another application's SQLite database); \
             move it away or choose another [cache] path",
            path.display()
        )));
    }
    Ok(())
}

/// Gives the files this process created the owner an operator expects: a new database the owner
/// and group of its directory, new WAL side files those of the database (as SQLite itself does for
/// root). So `mtasts` run as root in the MTA's directory never leaves a store the MTA's user
/// cannot write. Changing an owner needs root; for other users the files are already theirs, and
/// a failed change is ignored (the store works for the user who made it).
fn adopt_directory_owner(files: [&Path; 3], existed: [bool; 3]) {
    use std::os::unix::fs::MetadataExt as _;
    let [db, wal, shm] = files;
    let owner_of = |p: &Path| std::fs::metadata(p).ok().map(|m| (m.uid(), m.gid()));
    let give = |file: &Path, owner: Option<(u32, u32)>| {
        if let (Some(want), Some(has)) = (owner, owner_of(file)) {
            if want != has {
                let _ = std::os::unix::fs::chown(file, Some(want.0), Some(want.1));
            }
        }
    };
    if !existed[0] {
        let dir = db.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        give(db, owner_of(dir));
    }
    let db_owner = owner_of(db);
    for (file, existed) in [(wal, existed[1]), (shm, existed[2])] {
        if !existed {
            give(file, db_owner);
        }
    }
}

/// Replaces SQLite's automatic checkpoint (passive, at 1,000 pages) with one at
/// [`WAL_AUTOCHECKPOINT_PAGES`] that also empties the log (`TRUNCATE`), run by the commit that
/// takes the log past that size. A passive checkpoint copies the log into the database but leaves
/// the log for the next write to start again, and only a write whose transaction began after the
/// checkpoint in the same process can: a process that opens the store alone rebuilds its index of
/// the log and forgets that it was copied. An Exim delivery writes once (its exit flush), so the
/// log was never started again and grew by every delivery's pages, each delivery reading all of
/// it and repeating the checkpoint with its fsyncs. Emptied, the log is read from its start by
/// the next process. The truncation waits (the busy timeout) for readers still in the old log;
/// if they outlast it, the checkpoint is the passive one and a later commit tries again.
fn checkpoint_and_restart(conn: &mut Connection) -> rusqlite::Result<()> {
    let at = i32::try_from(WAL_AUTOCHECKPOINT_PAGES).unwrap_or(i32::MAX);
    conn.wal_hook(Some(move |wal: &mut rusqlite::hooks::Wal, pages: i32| {
        if pages >= at {
            // The commit has happened; a checkpoint that could not finish is no error of it.
            let _ = wal.checkpoint_v2(rusqlite::wal::CheckpointMode::TRUNCATE);
        }
        Ok(())
    }))
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
    checkpoint_and_restart(conn)?;
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

impl PolicyStore for SqliteStore {
    fn count_by_mode(&self, now: u64) -> Result<[u64; 3], StoreError> {
        let rows = self.with(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT mode, COUNT(*) FROM policies WHERE policy_text IS NOT NULL AND expires_at > ?1 GROUP BY mode",
            )?;
            let rows = stmt.query_map(params![to_sql(now)], |r| {
                Ok((r.get::<_, Option<String>>(0)?, r.get::<_, i64>(1)?))
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        let mut counts = [0u64; 3];
        for (mode, n) in rows {
            let i = match mode.as_deref() {
                Some("enforce") => 0,
                Some("testing") => 1,
                Some("none") => 2,
                _ => continue,
            };
            counts[i] += u64::try_from(n).unwrap_or(0);
        }
        Ok(counts)
    }

    fn load(&self, domain: &Domain) -> Result<Option<Entry>, StoreError> {
        let row =
            self.with(|c| c.prepare_cached(LOAD)?.query_row(params![domain.as_str()], Row::read).optional())?;
        row.map(|r| r.into_entry(&self.path, domain)).transpose()
    }

    fn save(&self, domain: &Domain, entry: &Entry) -> Result<(), StoreError> {
        self.save_many(&[(domain, entry)])
    }

    fn save_many(&self, entries: &[(&Domain, &Entry)]) -> Result<(), StoreError> {
        self.writable()?;
        self.with(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            for (domain, entry) in entries {
                save_in(&tx, domain, entry)?;
            }
            tx.commit()
        })
    }

    fn list(&self) -> Result<Vec<(Domain, Entry)>, StoreError> {
        self.entries("SELECT domain, policy_text, policy_id, fetched_at, checked_at, failed_id, failed_at, failed_reason, failed_detail
             FROM policies ORDER BY domain", [])
    }

    fn due_for_refresh(&self, now: u64, refresh_interval: u64) -> Result<Vec<(Domain, Entry)>, StoreError> {
        let mut due = self.entries(DUE_FOR_REFRESH, params![to_sql(now), to_sql(refresh_interval)])?;
        due.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(due)
    }

    fn prune(&self, now: u64, keep: u64) -> Result<u64, StoreError> {
        self.writable()?;
        let before = to_sql(now.saturating_sub(keep));
        self.with(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            // Rows with nothing worth keeping: no live policy for `keep`, not looked up for `keep`.
            let mut n = tx.execute(
                "DELETE FROM policies WHERE checked_at < ?1 AND (policy_text IS NULL OR expires_at < ?1)",
                params![before],
            )?;
            // A domain still looked up keeps its row, without a policy long expired.
            n += tx.execute(
                "UPDATE policies SET policy_text = NULL, policy_id = NULL, mode = NULL, max_age = NULL,
                   fetched_at = NULL, expires_at = NULL
                 WHERE expires_at < ?1",
                params![before],
            )?;
            // DANE answers past their TTL (they are never used again).
            n += tx.execute("DELETE FROM tlsa WHERE expires_at <= ?1", params![to_sql(now)])?;
            tx.commit()?;
            Ok(u64::try_from(n).unwrap_or(u64::MAX))
        })
    }

    fn remove(&self, domain: &Domain) -> Result<bool, StoreError> {
        self.writable()?;
        self.with(|c| {
            c.execute("DELETE FROM policies WHERE domain = ?1", params![domain.as_str()]).map(|n| n > 0)
        })
    }

    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn read_only(&self) -> Option<String> {
        match &self.access {
            Access::ReadWrite => None,
            Access::ReadOnly { why, .. } => Some(why.clone()),
        }
    }

    fn overrides(&self) -> Result<Vec<super::StoredOverride>, StoreError> {
        // A store opened for writing has the current schema (its migrations ran at open); a
        // read-only store of an older schema has no table yet: it holds no override.
        let may_lack_table = self.access != Access::ReadWrite;
        let rows: Vec<(String, Option<String>, i64)> = self.with(|c| {
            if may_lack_table {
                let exists: i64 = c.query_row(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'overrides'",
                    [],
                    |r| r.get(0),
                )?;
                if exists == 0 {
                    return Ok(Vec::new());
                }
            }
            let mut stmt =
                c.prepare_cached("SELECT domain, policy_text, set_at FROM overrides ORDER BY domain")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        let location = self.location();
        Ok(rows
            .into_iter()
            .filter_map(|(name, policy_text, set_at)| match Domain::parse(&name) {
                Ok(domain) => Some(super::StoredOverride {
                    domain,
                    policy_text,
                    set_at: from_sql(Some(set_at)).unwrap_or(0),
                }),
                Err(e) => {
                    super::warn(format_args!("{location}: override of `{name}` ignored: {e}"));
                    None
                }
            })
            .collect())
    }

    fn override_set(&self, o: &super::StoredOverride) -> Result<(), StoreError> {
        self.writable()?;
        self.with(|c| {
            c.execute(
                "INSERT INTO overrides (domain, policy_text, set_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (domain) DO UPDATE SET policy_text = excluded.policy_text, set_at = excluded.set_at",
                params![o.domain.as_str(), o.policy_text, to_sql(o.set_at)],
            )
            .map(|_| ())
        })
    }

    fn override_clear(&self, domain: &Domain) -> Result<bool, StoreError> {
        self.writable()?;
        self.with(|c| {
            c.execute("DELETE FROM overrides WHERE domain = ?1", params![domain.as_str()]).map(|n| n > 0)
        })
    }
}

impl CountStore for SqliteStore {
    fn prune_report_counts(&self, oldest_report_day: Day) -> Result<u64, StoreError> {
        self.writable()?;
        self.with(|c| {
            c.execute("DELETE FROM tlsrpt_counts WHERE day < ?1", params![to_sql(oldest_report_day.days())])
                .map(|n| u64::try_from(n).unwrap_or(u64::MAX))
        })
    }

    fn add_all(&self, stats: &[(&str, u64)], days: &[(Day, &DayCounts)]) -> Result<(), StoreError> {
        self.writable()?;
        let mut rows = Vec::with_capacity(days.len());
        for (day, counts) in days {
            rows.push((*day, count_rows(counts)?));
        }
        if stats.is_empty() && rows.iter().all(|(_, r)| r.is_empty()) {
            return Ok(());
        }
        self.with(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            if !stats.is_empty() {
                let mut stmt = tx.prepare_cached(
                    "INSERT INTO stats (key, value) VALUES (?1, ?2)
                     ON CONFLICT (key) DO UPDATE SET value = value + excluded.value",
                )?;
                for (key, n) in stats {
                    stmt.execute(params![key, to_sql(*n)])?;
                }
            }
            if rows.iter().any(|(_, r)| !r.is_empty()) {
                let mut stmt = tx.prepare_cached(
                    "INSERT INTO tlsrpt_counts (day, domain, policy, failure, sessions) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (day, domain, policy, failure) DO UPDATE SET sessions = sessions + excluded.sessions",
                )?;
                for (day, rows) in &rows {
                    for (domain, policy, failure, n) in rows {
                        stmt.execute(params![to_sql(day.days()), domain, policy, failure, to_sql(*n)])?;
                    }
                }
            }
            tx.commit()
        })
    }

    fn stats(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let rows = self.with(|c| {
            let mut stmt = c.prepare_cached("SELECT key, value FROM stats ORDER BY key")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        Ok(rows.into_iter().map(|(k, v)| (k, u64::try_from(v).unwrap_or(0))).collect())
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
}

impl OutboxStore for SqliteStore {
    fn outbox_put(&self, item: &OutboxItem) -> Result<bool, StoreError> {
        self.writable()?;
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
        self.writable()?;
        let state = serde_json::to_string(state).map_err(|e| StoreError(e.to_string()))?;
        self.with(|c| {
            c.execute("UPDATE tlsrpt_outbox SET state = ?2 WHERE report_id = ?1", params![report_id, state])
        })
        .map(|_| ())
    }

    /// One `UPDATE` (atomic across processes): the claim is a `claimed_until` member added to
    /// the state's JSON, which [`DeliveryState`] ignores and `outbox_update` overwrites.
    fn outbox_claim(
        &self,
        report_id: &str,
        seen: &DeliveryState,
        now: u64,
        lease: u64,
    ) -> Result<bool, StoreError> {
        self.writable()?;
        let until = now.saturating_add(lease);
        self.with(|c| {
            c.execute(
                "UPDATE tlsrpt_outbox SET state = json_set(state, '$.claimed_until', ?2)
                 WHERE report_id = ?1 AND json_extract(state, '$.done') = 0
                   AND json_extract(state, '$.attempts') = ?3
                   AND COALESCE(json_extract(state, '$.claimed_until'), 0) <= ?4",
                params![report_id, to_sql(until), seen.attempts, to_sql(now)],
            )
            .map(|n| n == 1)
        })
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

/// Writes one entry inside the caller's transaction, by the rule of [`Entry::saved_over`] in
/// SQL: the TXT lookup time only moves forward, the last failure is replaced, and a policy
/// replaces the stored one only if fetched no earlier.
fn save_in(tx: &rusqlite::Transaction<'_>, domain: &Domain, entry: &Entry) -> rusqlite::Result<()> {
    let failed = entry.failed.as_ref();
    tx.prepare_cached(
        "INSERT INTO policies (domain, checked_at, failed_id, failed_at, failed_reason, failed_detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (domain) DO UPDATE SET
           checked_at = max(checked_at, excluded.checked_at),
           failed_id = excluded.failed_id, failed_at = excluded.failed_at,
           failed_reason = excluded.failed_reason, failed_detail = excluded.failed_detail",
    )?
    .execute(params![
        domain.as_str(),
        to_sql(entry.checked_at),
        failed.map(|f| f.id.as_str()),
        failed.map(|f| to_sql(f.at)),
        failed.map(|f| f.failure.reason.as_str()),
        failed.map(|f| f.failure.detail.as_str()),
    ])?;
    if let Some(p) = &entry.policy {
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
    Ok(())
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

    /// Rebuilds the entry. An unreadable policy makes the row unreadable; unreadable failed-fetch
    /// metadata is dropped with a warning and the policy kept.
    fn into_entry(self, path: &Path, domain: &Domain) -> Result<Entry, StoreError> {
        let bad = |what: String| StoreError(format!("{}: entry for {domain}: {what}", path.display()));
        let policy = match (self.policy_text, self.policy_id, from_sql(self.fetched_at)) {
            (Some(text), Some(id), Some(fetched_at)) => {
                Some(super::stored_policy(text, &id, fetched_at).map_err(bad)?)
            }
            (None, _, _) => None,
            _ => return Err(bad("incomplete policy columns".into())),
        };
        let failed = match (self.failed_id, from_sql(self.failed_at), self.failed_reason) {
            (Some(id), Some(at), Some(reason)) => super::stored_failure(
                &path.display().to_string(),
                domain,
                &id,
                at,
                &reason,
                self.failed_detail.unwrap_or_default(),
            ),
            _ => None,
        };
        Ok(Entry { policy, checked_at: from_sql(Some(self.checked_at)).unwrap_or(0), failed })
    }
}

/// The DNSSEC answers DANE keeps share the `tlsa` table: a TLSA state under the MX host's name,
/// an MX RRset under `mx ` and the domain (a space is never part of a domain name).
/// Stores an answer of the `tlsa` table (`host`, `answer`, `expires_at`), replacing the last.
const ANSWER_SAVE: &str = "INSERT INTO tlsa (host, answer, expires_at) VALUES (?1, ?2, ?3)
     ON CONFLICT (host) DO UPDATE SET answer = excluded.answer, expires_at = excluded.expires_at";

fn mx_key(domain: &Domain) -> String {
    format!("mx {domain}")
}

/// Remembered certificate validations share it too, under `cert ` and the digest in hex; the
/// answer is the time from which the validation holds (docs/architecture.md, "Remembered
/// validations"). One table keeps a fresh process's schema reading and statements to those it
/// already needs for DANE.
fn verified_key(digest: &[u8; 32]) -> String {
    format!("cert {}", super::digest_hex(digest))
}

impl SqliteStore {
    /// The stored, unexpired answer under `key`, decoded by `decode`, with its expiry.
    fn answer_load<T>(
        &self,
        key: &str,
        now: u64,
        decode: fn(&str) -> Option<T>,
    ) -> Result<Option<(T, u64)>, StoreError> {
        let row: Option<(String, i64)> = self.with(|c| {
            c.prepare_cached("SELECT answer, expires_at FROM tlsa WHERE host = ?1 AND expires_at > ?2")?
                .query_row(params![key, to_sql(now)], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })?;
        Ok(row.and_then(|(text, until)| {
            let answer = decode(&text);
            if answer.is_none() {
                super::warn(format_args!("{}: DNSSEC answer `{key}` unreadable, ignored", self.location()));
            }
            answer.map(|a| (a, from_sql(Some(until)).unwrap_or(0)))
        }))
    }

    /// Stores `text` under `key` until `expires_at`.
    fn answer_save(&self, key: &str, text: &str, expires_at: u64) -> Result<(), StoreError> {
        self.writable()?;
        self.with(|c| {
            c.prepare_cached(ANSWER_SAVE)?.execute(params![key, text, to_sql(expires_at)]).map(|_| ())
        })
    }
}

impl super::VerifiedStore for SqliteStore {
    fn verified_load(&self, digest: &[u8; 32], now: u64) -> Result<Option<(u64, u64)>, StoreError> {
        self.answer_load(&verified_key(digest), now, |text| text.parse::<u64>().ok())
    }

    fn verified_save(
        &self,
        digest: &[u8; 32],
        valid_from: u64,
        _now: u64,
        expires_at: u64,
    ) -> Result<(), StoreError> {
        self.answer_save(&verified_key(digest), &valid_from.to_string(), expires_at)
    }
}

impl super::TlsaStore for SqliteStore {
    fn tlsa_load(
        &self,
        host: &Domain,
        now: u64,
    ) -> Result<Option<(crate::ports::TlsaLookup, u64)>, StoreError> {
        self.answer_load(host.as_str(), now, super::tlsa_from_text)
    }

    fn tlsa_save(
        &self,
        host: &Domain,
        lookup: &crate::ports::TlsaLookup,
        expires_at: u64,
    ) -> Result<(), StoreError> {
        self.answer_save(host.as_str(), &super::tlsa_to_text(lookup), expires_at)
    }

    fn mx_load(
        &self,
        domain: &Domain,
        now: u64,
    ) -> Result<Option<(crate::ports::MxLookup, u64)>, StoreError> {
        self.answer_load(&mx_key(domain), now, super::mx_from_text)
    }

    fn mx_save(
        &self,
        domain: &Domain,
        lookup: &crate::ports::MxLookup,
        expires_at: u64,
    ) -> Result<(), StoreError> {
        self.answer_save(&mx_key(domain), &super::mx_to_text(lookup), expires_at)
    }

    fn save_answers(
        &self,
        tlsa: &[(&Domain, &crate::ports::TlsaLookup, u64)],
        mx: &[(&Domain, &crate::ports::MxLookup, u64)],
    ) -> Result<(), StoreError> {
        self.writable()?;
        let rows = tlsa
            .iter()
            .map(|(host, lookup, until)| (host.as_str().to_owned(), super::tlsa_to_text(lookup), *until))
            .chain(
                mx.iter().map(|(domain, lookup, until)| (mx_key(domain), super::mx_to_text(lookup), *until)),
            );
        let rows: Vec<(String, String, u64)> = rows.collect();
        self.with(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            {
                let mut stmt = tx.prepare_cached(ANSWER_SAVE)?;
                for (key, text, until) in &rows {
                    stmt.execute(params![key, text, to_sql(*until)])?;
                }
            }
            tx.commit()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_write_ahead_log_stays_short() {
        // Exim's deliveries each open the store alone and rebuild the log's index by reading
        // all of it: many small commits must not let the log grow to SQLite's default 1,000
        // pages (4 MB) before it is checkpointed and started again.
        let dir = std::env::temp_dir().join(format!("mtasts-sqlite-wal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("w.sqlite");
        // The commit that takes the log to the limit also empties it (a passive checkpoint would
        // leave it for the next write, which a process writing once never makes).
        let store = SqliteStore::open(&path, 300).expect("open");
        let [wal, _] = side_files(&path);
        let frame = 24 + 4096;
        let mut emptied = 0;
        for i in 0..400u64 {
            store.add_stats(&[("k", i)]).expect("add");
            let len = std::fs::metadata(&wal).expect("wal").len();
            let frames = len.saturating_sub(32) / frame;
            assert!(frames < u64::from(WAL_AUTOCHECKPOINT_PAGES), "{frames} frames in the log");
            emptied += u32::from(len == 0);
        }
        assert!(emptied >= 3, "the log was emptied {emptied} times in 400 commits");
        let total: i64 = store
            .with(|c| c.query_row("SELECT value FROM stats WHERE key = 'k'", [], |r| r.get(0)))
            .expect("sum");
        assert_eq!(total, (0..400).sum::<i64>());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_refresh_query_reads_through_indexes_only() {
        let dir = std::env::temp_dir().join(format!("mtasts-sqlite-plan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let store = SqliteStore::open(&dir.join("p.sqlite"), 300).expect("open");
        let plan: Vec<String> = store
            .with(|c| {
                let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {DUE_FOR_REFRESH}"))?;
                let rows = stmt.query_map(params![1_800_000_000i64, 86_400i64], |r| r.get::<_, String>(3))?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })
            .expect("plan");
        let text = plan.join("\n");
        assert!(!text.contains("SCAN policies"), "a full scan:\n{text}");
        assert!(text.contains("policies_fetched_at") && text.contains("policies_half_life"), "{text}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_lookup_is_one_primary_key_search() {
        let dir = std::env::temp_dir().join(format!("mtasts-sqlite-lookup-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let store = SqliteStore::open(&dir.join("p.sqlite"), 300).expect("open");
        let plan: Vec<String> = store
            .with(|c| {
                let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {LOAD}"))?;
                let rows = stmt.query_map(params!["example.com"], |r| r.get::<_, String>(3))?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })
            .expect("plan");
        assert_eq!(plan, ["SEARCH policies USING PRIMARY KEY (domain=?)"]);
        let _ = std::fs::remove_dir_all(dir);
    }
}
