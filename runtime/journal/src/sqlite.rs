//! The SQLite backend: one writer thread that group-commits, a few reader connections.
//!
//! Every write goes through the writer thread ([`writer`]), which runs the writes waiting
//! for it in one transaction, commits once (one fsync under `synchronous=FULL`), and only
//! then answers each caller; one failing write does not undo the others. Under
//! concurrency, appends therefore share fsyncs; alone, an append costs one.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};

use crate::Journal;
use crate::dups::DupWindow;
use crate::error::{Error, Result};
use crate::types::*;

mod writer;

use writer::{Job, write_loop};

/// The schema migrations, in order; the schema version is the number applied.
const MIGRATIONS: &[&str] = &[
    include_str!("schema.sql"),
    include_str!("schema_v2_audit.sql"),
    include_str!("schema_v3_shadow.sql"),
    include_str!("schema_v4_dup_window.sql"),
    include_str!("schema_v5_order_key.sql"),
    include_str!("schema_v6_lane_splits.sql"),
    include_str!("schema_v7_possible_resend.sql"),
];

/// Tuning for [`SqliteJournal`].
#[derive(Debug, Clone)]
pub struct JournalOptions {
    /// A message whose interface and control id match one received within this window
    /// (either side) is flagged as a duplicate. Default: 24 hours.
    pub duplicate_window: Duration,
    /// How long a statement waits for a lock held by another process (e.g. an operator's
    /// `sqlite3` shell) before failing. Default: 5 s.
    pub busy_timeout: Duration,
    /// The most writes committed in one transaction. Default: 1024.
    pub max_batch: usize,
    /// The most messages the duplicate window remembers (about 100 bytes each, in
    /// memory); past that the oldest are forgotten first. Default: 500,000.
    pub duplicate_window_entries: usize,
    /// WAL frames (pages) past which the writer starts the WAL over, pausing between two
    /// group commits to copy the rest of it into the database file. Bounds the WAL under
    /// a load the background checkpoint cannot keep up with. Default: 8,192 (32 MiB).
    pub wal_restart_frames: i64,
}

impl Default for JournalOptions {
    fn default() -> Self {
        Self {
            duplicate_window: Duration::from_secs(24 * 60 * 60),
            busy_timeout: Duration::from_secs(5),
            max_batch: 1024,
            duplicate_window_entries: 500_000,
            wal_restart_frames: WAL_RESTART_FRAMES,
        }
    }
}

/// The embedded SQLite journal. `Send + Sync`: share one behind an `Arc`.
pub struct SqliteJournal {
    path: PathBuf,
    options: JournalOptions,
    jobs: Option<mpsc::SyncSender<Job>>,
    writer: Option<JoinHandle<()>>,
    /// Reads run side by side on these (in WAL mode readers never block each other or
    /// the writer): a destination's lanes read their queues at the same time, and with
    /// one connection they queued on its lock.
    readers: Vec<Mutex<Connection>>,
    /// Where a read that finds every connection busy waits.
    next_reader: AtomicUsize,
    /// The duplicate window, loaded by the first write that needs it (a CLI that only
    /// reads never pays for it); only the writer thread uses it (see `Dups`).
    dups: Arc<Mutex<Option<DupWindow>>>,
    /// How each destination's queue is split into lanes ([`Journal::set_lanes`]); only
    /// the writer thread reads it.
    lanes: LaneMap,
    /// Dropping it stops the checkpoint thread.
    checkpoint_stop: Option<mpsc::Sender<()>>,
    checkpointer: Option<JoinHandle<()>>,
}

/// Interface, then destination, to the lanes this process split its queue into
/// ([`Journal::set_lanes`]). Nested so that a lookup (one per message enqueued) borrows
/// the names instead of copying them. A destination not in it was split by another
/// process, if at all: its split is read from `lane_splits` (see [`lanes_for`]).
#[derive(Debug, Clone, Default)]
struct LaneMap(Arc<Mutex<HashMap<String, HashMap<String, Lanes>>>>);

impl LaneMap {
    fn get(&self, interface: &str, destination: &str) -> Option<Lanes> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(interface)
            .and_then(|destinations| destinations.get(destination))
            .copied()
    }

    fn set(&self, interface: &str, destination: &str, lanes: Lanes) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(interface.to_owned())
            .or_default()
            .insert(destination.to_owned(), lanes);
    }
}

/// Read connections per journal.
const READERS: usize = 4;

/// How often the background thread folds the WAL back into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// WAL frames (pages) past which the writer starts the WAL over. Under a steady load the
/// background checkpoint never quite catches up with the writer, and SQLite starts the
/// WAL over only when a write finds it wholly copied: without help the WAL grew by about
/// 100 MB a second under `plexus bench` and shrank only at idle. Starting over costs the
/// writer a pause (copying what was committed while the last checkpoint ran, and syncing
/// the database file), but a WAL that keeps growing costs more: every frame written past
/// the end of the file makes the filesystem allocate and zero a page. 8192 frames are
/// 32 MiB with 4 KiB pages. With one checkpoint round's growth on top (25-40 MB per round
/// at full speed; the largest WAL seen was 71 MiB, at 32,000 msg/s) the WAL stays under
/// [`WAL_SIZE_LIMIT`], so the file is written over from the start, in pages already
/// cached, instead of being cut back and grown again. Against 65536 frames, over 20
/// paired runs of `plexus bench`: 7% less CPU, 5% more messages accepted (medians). At a
/// clinic's usual pace the checkpoints keep up and this never applies.
const WAL_RESTART_FRAMES: i64 = 8192;

/// The most WAL frames (16 MiB) a checkpoint round may leave uncopied for the writer to
/// finish; with more, the writer's pause would be long, and the next round tries again.
const WAL_REST_FRAMES: i64 = 4096;

/// The size the WAL file is cut back to when it starts over after growing past it: well
/// above what a WAL that starts over past [`WAL_RESTART_FRAMES`] reaches, so that under a
/// steady load the file is reused rather than cut back and grown again.
const WAL_SIZE_LIMIT: i64 = 128 << 20;

impl fmt::Debug for SqliteJournal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteJournal")
            .field("path", &self.path)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl SqliteJournal {
    /// Opens (creating if needed) the journal at `path` with default options.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, JournalOptions::default())
    }

    /// Opens (creating if needed) the journal at `path`: WAL mode, `synchronous=FULL`,
    /// foreign keys on, and any pending schema migrations applied.
    pub fn open_with(path: impl AsRef<Path>, options: JournalOptions) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let mut writer = connect(&path, &options).map_err(|e| explain_read_only(&path, e))?;
        if writer.is_readonly(rusqlite::MAIN_DB).unwrap_or(false) {
            // SQLite falls back to reading a file it may not write; every commit would fail.
            return Err(explain_read_only(
                &path,
                Error::ReadOnly {
                    path: path.display().to_string(),
                    detail: String::new(),
                },
            ));
        }
        migrate(&mut writer).map_err(|e| explain_read_only(&path, e))?;
        let dups = Arc::new(Mutex::new(None));
        // Checkpoints run on their own connection and thread, so the writer never stalls
        // a group commit copying the WAL into the database file.
        writer
            .execute_batch("PRAGMA wal_autocheckpoint = 0")
            .map_err(|source| Error::Open {
                path: path.display().to_string(),
                source,
            })?;
        let checkpoint_conn = connect(&path, &options)?;
        let (checkpoint_stop, stop_rx) = mpsc::channel::<()>();
        let wal_full = Arc::new(AtomicBool::new(false));
        let restart_at = options.wal_restart_frames.max(1);
        let checkpointer = {
            let wal_full = wal_full.clone();
            std::thread::Builder::new()
                .name("plexus-journal-checkpoint".into())
                .spawn(move || checkpoint_loop(&checkpoint_conn, &stop_rx, &wal_full, restart_at))
                .map_err(|_| Error::WriterStopped)?
        };
        let readers = (0..READERS)
            .map(|_| connect(&path, &options).map(Mutex::new))
            .collect::<Result<Vec<_>>>()?;
        let (jobs, rx) = mpsc::sync_channel::<Job>(options.max_batch.max(1) * 4);
        let max_batch = options.max_batch.max(1);
        let handle = std::thread::Builder::new()
            .name("plexus-journal-writer".into())
            .spawn(move || write_loop(&writer, &rx, max_batch, &wal_full))
            .map_err(|_| Error::WriterStopped)?;
        Ok(Self {
            path,
            options,
            jobs: Some(jobs),
            writer: Some(handle),
            readers,
            next_reader: AtomicUsize::new(0),
            dups,
            lanes: LaneMap::default(),
            checkpoint_stop: Some(checkpoint_stop),
            checkpointer: Some(checkpointer),
        })
    }

    /// The schema version this build writes.
    pub fn schema_version() -> i64 {
        MIGRATIONS.len() as i64
    }

    /// Runs `f` on the writer thread in the next group commit and waits until that commit
    /// is durable.
    fn write<T: Send + 'static>(
        &self,
        op: &'static str,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.wait(|done| Job::once(op, f, done))
    }

    /// Runs `change` and appends `entry` to the audit log in the same savepoint: both
    /// are written, or neither. Records the new head of the chain beside the journal.
    fn audited(
        &self,
        op: &'static str,
        entry: AuditEntry,
        change: impl FnOnce(&Connection) -> Result<()> + Send + 'static,
    ) -> Result<AuditRecord> {
        let record = self.write(op, move |conn| {
            change(conn)?;
            audit_in(conn, entry)
        })?;
        write_audit_head(&audit_head_path(&self.path), &record);
        Ok(record)
    }

    /// As [`Self::write`], for a write that may run again (see [`Job::again`]).
    fn write_again<T: Send + 'static>(
        &self,
        op: &'static str,
        f: impl FnMut(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.wait(|done| Job::again(op, f, done))
    }

    /// Queues the job `make` builds around its answer, and waits for that answer.
    fn wait<T: Send + 'static>(
        &self,
        make: impl FnOnce(Box<dyn FnOnce(Result<T>) + Send>) -> Job,
    ) -> Result<T> {
        let (tx, rx) = mpsc::sync_channel::<Result<T>>(1);
        self.submit(make(Box::new(move |result| {
            // The caller may have gone away; nothing to do then.
            let _ = tx.send(result);
        })));
        rx.recv().map_err(|_| Error::WriterStopped)?
    }

    /// Queues `job` for the next group commit; it is answered once that commit is durable
    /// (or failed), on the writer thread: its answer must be quick.
    fn submit(&self, job: Job) {
        const STOPPED: &str = "journal writer has stopped";
        match self.jobs.as_ref() {
            Some(jobs) => {
                if let Err(mpsc::SendError(job)) = jobs.send(job) {
                    // The writer is gone: answer here.
                    job.fail(STOPPED);
                }
            }
            None => job.fail(STOPPED),
        }
    }

    /// Deliveries owed, oldest first; with `due`, only those that may be tried at that time.
    fn pending_query(
        &self,
        interface: &str,
        destination: &str,
        due: Option<SystemTime>,
        lane: Option<u32>,
        skip: &[MessageId],
        limit: usize,
    ) -> Result<Vec<PendingDelivery>> {
        let sql = Error::sql("next_pending");
        let conn = self.read();
        let mut stmt = conn
            .prepare_cached(&pending_sql(lane.is_some(), limit))
            .map_err(Error::sql("next_pending"))?;
        let skip = id_list(skip);
        let rows = stmt
            .query_map(
                params![
                    destination,
                    interface,
                    due.map(to_ms),
                    lane.map(i64::from),
                    skip,
                ],
                |r| {
                    Ok((
                        (
                            r.get::<_, i64>(0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, i64>(3)?,
                        ),
                        r.get::<_, Option<i64>>(4)?,
                        r.get::<_, Option<String>>(5)?,
                        (r.get::<_, Option<i64>>(6)?, r.get::<_, i64>(7)?),
                    ))
                },
            )
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(sql)?;
        rows.into_iter()
            .map(
                |((id, received_at, status, attempts), next_at, last_error, (order_key, lane))| {
                    Ok(PendingDelivery {
                        id: MessageId(id),
                        received_at: from_ms(received_at),
                        status: parse_text("deliveries.status", DeliveryStatus::parse, &status)?,
                        attempts: count(attempts),
                        next_at: next_at.map(from_ms),
                        last_error,
                        order_key,
                        lane: u32::try_from(lane).unwrap_or(0),
                    })
                },
            )
            .collect()
    }

    fn dups(&self) -> Dups {
        Dups {
            window: self.dups.clone(),
            width_ms: i64::try_from(self.options.duplicate_window.as_millis()).unwrap_or(i64::MAX),
            capacity: self.options.duplicate_window_entries,
        }
    }

    fn read(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves no half-done state on a read connection.
        // The first free connection, so a quiet journal keeps using one warm page cache.
        for reader in &self.readers {
            match reader.try_lock() {
                Ok(conn) => return conn,
                Err(TryLockError::Poisoned(e)) => return e.into_inner(),
                Err(TryLockError::WouldBlock) => {}
            }
        }
        let at = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len();
        self.readers[at].lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for SqliteJournal {
    fn drop(&mut self) {
        // Closing the channel lets the writer finish queued jobs and exit.
        drop(self.jobs.take());
        if let Some(handle) = self.writer.take() {
            let _ = handle.join();
        }
        drop(self.checkpoint_stop.take());
        if let Some(handle) = self.checkpointer.take() {
            let _ = handle.join();
        }
    }
}

/// `err` with the file that is in the way named, when it is SQLite refusing to write
/// (the journal, or the `-wal` or `-shm` file beside it, not writable by this user: say,
/// left by a start as another user), or the folder when none of them is.
fn explain_read_only(path: &Path, err: Error) -> Error {
    let sqlite_said = match &err {
        Error::ReadOnly { .. } => None,
        Error::Open { source, .. } | Error::Sqlite { source, .. }
            if source.sqlite_error_code() == Some(rusqlite::ErrorCode::ReadOnly) =>
        {
            Some(source.to_string())
        }
        _ => return err,
    };
    let blocked: Vec<String> = ["", "-wal", "-shm"]
        .iter()
        .map(|suffix| PathBuf::from(format!("{}{suffix}", path.display())))
        .filter(|file| file.exists() && std::fs::OpenOptions::new().write(true).open(file).is_err())
        .map(|file| file.display().to_string())
        .collect();
    let detail = if blocked.is_empty() {
        format!(
            "this user may not create or write files in {} (SQLite keeps `-wal` and `-shm` files beside the journal)",
            path.parent()
                .map_or_else(|| ".".into(), |d| d.display().to_string())
        )
    } else {
        format!(
            "this user may not write {}: give it to the user the engine runs as (a start as another user may have left it)",
            blocked.join(", ")
        )
    };
    Error::ReadOnly {
        path: path.display().to_string(),
        detail: match sqlite_said {
            Some(said) => format!("{detail} (SQLite: {said})"),
            None => detail,
        },
    }
}

fn connect(path: &Path, options: &JournalOptions) -> Result<Connection> {
    let open_err = |source| Error::Open {
        path: path.display().to_string(),
        source,
    };
    let conn = Connection::open(path).map_err(open_err)?;
    conn.busy_timeout(options.busy_timeout).map_err(open_err)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(open_err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::NotWal {
            path: path.display().to_string(),
        });
    }
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
        .map_err(open_err)?;
    // A WAL that grew during a burst is cut back when it starts over.
    conn.query_row(
        &format!("PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}"),
        [],
        |_| Ok(()),
    )
    .map_err(open_err)?;
    // Every statement the journal runs stays prepared (rusqlite keeps 16 by default,
    // fewer than the writer uses, and a miss means parsing the SQL again).
    conn.set_prepared_statement_cache_capacity(128);
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let sql = Error::sql("migrate");
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(Error::sql("migrate"))?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_version (
            version    INTEGER NOT NULL PRIMARY KEY,
            applied_at INTEGER NOT NULL
        )",
    )
    .map_err(Error::sql("migrate"))?;
    let found: i64 = tx
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_version",
            [],
            |r| r.get(0),
        )
        .map_err(Error::sql("migrate"))?;
    let supported = MIGRATIONS.len() as i64;
    if found > supported {
        return Err(Error::SchemaTooNew { found, supported });
    }
    for (version, migration) in (1..).zip(MIGRATIONS).skip(found as usize) {
        tx.execute_batch(migration).map_err(Error::sql("migrate"))?;
        tx.execute(
            "INSERT INTO schema_version (version, applied_at) VALUES (?1, ?2)",
            params![version, to_ms(SystemTime::now())],
        )
        .map_err(Error::sql("migrate"))?;
    }
    tx.commit().map_err(sql)
}

/// Runs a passive checkpoint (it never blocks the writer or readers) every
/// [`CHECKPOINT_EVERY`] until told to stop, then a last one. When the WAL has grown past
/// `restart_at` frames and this round left at most [`WAL_REST_FRAMES`] uncopied (a long
/// reader can hold part of the WAL back), asks the writer to copy the rest between two
/// commits (see `write_loop`), after which the WAL starts over.
fn checkpoint_loop(
    conn: &Connection,
    stop: &mpsc::Receiver<()>,
    wal_full: &AtomicBool,
    restart_at: i64,
) {
    // Failure is harmless: the WAL keeps the data and the next round tries again. The
    // answer: busy, frames in the WAL, frames copied to the database file.
    let checkpoint = || {
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .ok()
    };
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(CHECKPOINT_EVERY) {
        if let Some((_, frames, copied)) = checkpoint()
            && frames >= restart_at
            && frames - copied <= WAL_REST_FRAMES
        {
            wal_full.store(true, Ordering::Relaxed);
        }
    }
    let _ = checkpoint();
}

pub(crate) fn to_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_millis()).map_or(i64::MIN, |ms| -ms),
    }
}

pub(crate) fn from_ms(ms: i64) -> SystemTime {
    let magnitude = Duration::from_millis(ms.unsigned_abs());
    if ms >= 0 {
        UNIX_EPOCH + magnitude
    } else {
        UNIX_EPOCH - magnitude
    }
}

fn parse_text<T>(column: &'static str, parse: fn(&str) -> Option<T>, s: &str) -> Result<T> {
    parse(s).ok_or(Error::Corrupt { column })
}

fn count(n: i64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn message_exists(conn: &Connection, id: MessageId, op: &'static str) -> Result<()> {
    let found = conn
        .prepare_cached("SELECT 1 FROM messages WHERE id = ?1")
        .and_then(|mut s| s.exists([id.0]))
        .map_err(Error::sql(op))?;
    if found {
        Ok(())
    } else {
        Err(Error::NotFound(id))
    }
}

const ERROR_COLUMNS: &str = "e.message_id, m.interface, m.control_id, m.message_type, e.stage,
    e.kind, e.reason, e.path, e.first_seen, e.last_seen, e.occurrences, e.replays,
    e.resolved_at, e.resolution_note";

/// Raw row of `ERROR_COLUMNS`; the kind is checked after the row is read.
fn error_row(r: &Row<'_>) -> rusqlite::Result<(String, ErrorEntry)> {
    let resolved_at: Option<i64> = r.get(12)?;
    let note: Option<String> = r.get(13)?;
    Ok((
        r.get(5)?,
        ErrorEntry {
            message: MessageId(r.get(0)?),
            interface: r.get(1)?,
            control_id: r.get(2)?,
            message_type: r.get(3)?,
            stage: r.get(4)?,
            kind: ErrorKind::Internal,
            reason: r.get(6)?,
            path: r.get(7)?,
            first_seen: from_ms(r.get(8)?),
            last_seen: from_ms(r.get(9)?),
            occurrences: count(r.get(10)?),
            replays: count(r.get(11)?),
            resolution: resolved_at.map(|at| Resolution {
                at: from_ms(at),
                note: note.unwrap_or_default(),
            }),
        },
    ))
}

fn finish_error((kind, mut entry): (String, ErrorEntry)) -> Result<ErrorEntry> {
    entry.kind = parse_text("errors.kind", ErrorKind::parse, &kind)?;
    Ok(entry)
}

fn append_in(conn: &Connection, inbound: &Inbound, dups: &Dups) -> Result<Appended> {
    append_with(conn, inbound, dups, false, None)
}

/// The duplicate window and its settings, as the writer's jobs use them.
#[derive(Clone)]
struct Dups {
    window: Arc<Mutex<Option<DupWindow>>>,
    width_ms: i64,
    capacity: usize,
}

impl Dups {
    /// Runs `f` on the window, loading it from the table first if this is the first use.
    fn with<T>(&self, conn: &Connection, f: impl FnOnce(&mut DupWindow) -> Result<T>) -> Result<T> {
        // Only the writer thread locks it, one job at a time; a panic mid-update leaves
        // at worst a stale candidate, which `earlier_copy` confirms before use.
        let mut window = self
            .window
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let window = match &mut *window {
            Some(window) => window,
            empty => empty.insert(load_dup_window(conn, self.width_ms, self.capacity)?),
        };
        f(window)
    }

    /// The earliest message within the window with the same interface and control id:
    /// candidates from memory, each confirmed against its row.
    fn earlier_copy(
        &self,
        conn: &Connection,
        interface: &str,
        control_id: &str,
        at: i64,
    ) -> Result<Option<MessageId>> {
        self.with(conn, |window| {
            let mut confirm = conn
                .prepare_cached(
                    "SELECT 1 FROM messages
                     WHERE id = ?1 AND interface = ?2 AND control_id = ?3
                       AND received_at BETWEEN ?4 AND ?5",
                )
                .map_err(Error::sql("append"))?;
            for id in window.candidates(interface, control_id) {
                let found = confirm
                    .exists(params![
                        id,
                        interface,
                        control_id,
                        at.saturating_sub(self.width_ms),
                        at.saturating_add(self.width_ms)
                    ])
                    .map_err(Error::sql("append"))?;
                if found {
                    return Ok(Some(MessageId(id)));
                }
            }
            Ok(None)
        })
    }
}

/// The duplicate window as the `messages` table holds it: the newest messages with a
/// control id, up to the capacity, received within the window before the newest one or
/// the clock, whichever is earlier (see [`DupWindow::insert`]).
fn load_dup_window(conn: &Connection, width_ms: i64, capacity: usize) -> Result<DupWindow> {
    let mut window = DupWindow::new(width_ms, capacity);
    let sql = Error::sql("load duplicate window");
    let mut rows = conn
        .prepare(
            "SELECT id, interface, control_id, received_at FROM messages
             WHERE control_id IS NOT NULL
               AND received_at >= MIN(?3, (SELECT MAX(received_at) FROM messages)) - ?1
             ORDER BY received_at DESC, id DESC
             LIMIT ?2",
        )
        .map_err(sql)?;
    let limit = i64::try_from(capacity).unwrap_or(i64::MAX);
    let rows = rows
        .query_map(params![width_ms, limit, to_ms(SystemTime::now())], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })
        .map_err(Error::sql("load duplicate window"))?;
    for row in rows {
        let (id, interface, control_id, at) = row.map_err(Error::sql("load duplicate window"))?;
        window.push_oldest(&interface, &control_id, at, id);
    }
    Ok(window)
}

/// Inserts the message row; `processed` is set at once when the caller also writes the
/// chain's results in the same transaction.
fn append_with(
    conn: &Connection,
    inbound: &Inbound,
    dups: &Dups,
    processed: bool,
    order_key: Option<i64>,
) -> Result<Appended> {
    let at = to_ms(inbound.received_at);
    let duplicate_of = match &inbound.control_id {
        Some(control_id) => dups.earlier_copy(conn, &inbound.interface, control_id, at)?,
        None => None,
    };
    conn.prepare_cached(
        "INSERT INTO messages (interface, source_kind, source_peer, received_at,
                               control_id, message_type, duplicate_of, raw, processed,
                               order_key)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )
    .and_then(|mut s| {
        s.execute(params![
            inbound.interface,
            inbound.source_kind.as_str(),
            inbound.source_peer,
            at,
            inbound.control_id,
            inbound.message_type,
            duplicate_of.map(|d| d.0),
            inbound.raw,
            processed,
            order_key,
        ])
    })
    .map_err(Error::sql("append"))?;
    let id = conn.last_insert_rowid();
    if let Some(control_id) = &inbound.control_id {
        // Should this job or its batch roll back, the id stays behind as a candidate
        // that `earlier_copy` no longer confirms.
        dups.with(conn, |window| {
            window.insert(
                &inbound.interface,
                control_id,
                at,
                id,
                to_ms(SystemTime::now()),
            );
            Ok(())
        })?;
    }
    Ok(Appended {
        id: MessageId(id),
        duplicate_of,
    })
}

/// Writes `stage` as a stage of message `id` (its own `message` is not read).
fn record_stage_in(conn: &Connection, id: MessageId, stage: &StageRecord) -> Result<()> {
    let sql = Error::sql("record_stage");
    conn.prepare_cached(
        "INSERT INTO stages (message_id, stage_index, plugin, plugin_sha256, outcome,
                             detail, output, recorded_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )
    .and_then(|mut s| {
        s.execute(params![
            id.0,
            stage.stage_index,
            stage.plugin,
            stage.plugin_sha256,
            stage.outcome.as_str(),
            stage.detail,
            stage.output,
            to_ms(SystemTime::now()),
        ])
    })
    .map_err(sql)?;
    let stage_id = conn.last_insert_rowid();
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO edits (stage_id, seq, path, old, new) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .map_err(Error::sql("record_stage"))?;
    for (seq, edit) in (0_i64..).zip(&stage.edits) {
        insert
            .execute(params![stage_id, seq, edit.path, edit.old, edit.new])
            .map_err(Error::sql("record_stage"))?;
    }
    Ok(())
}

/// Closes message `id`'s open error with `note`, which must not be blank.
fn resolve_in(conn: &Connection, id: MessageId, note: &str) -> Result<()> {
    if note.trim().is_empty() {
        return Err(Error::NoteRequired(id));
    }
    let n = conn
        .prepare_cached(
            "UPDATE errors SET resolved_at = ?1, resolution_note = ?2
             WHERE message_id = ?3 AND resolved_at IS NULL",
        )
        .and_then(|mut s| s.execute(params![to_ms(SystemTime::now()), note, id.0]))
        .map_err(Error::sql("resolve"))?;
    if n == 0 {
        message_exists(conn, id, "resolve")?;
        return Err(Error::NoOpenError(id));
    }
    Ok(())
}

/// Counts a replay of message `id`, on the message and on its open error if any.
fn mark_replayed_in(conn: &Connection, id: MessageId) -> Result<()> {
    let n = conn
        .prepare_cached("UPDATE messages SET replays = replays + 1 WHERE id = ?1")
        .and_then(|mut s| s.execute([id.0]))
        .map_err(Error::sql("mark_replayed"))?;
    if n == 0 {
        return Err(Error::NotFound(id));
    }
    conn.prepare_cached(
        "UPDATE errors SET replays = replays + 1
         WHERE message_id = ?1 AND resolved_at IS NULL",
    )
    .and_then(|mut s| s.execute([id.0]))
    .map_err(Error::sql("mark_replayed"))?;
    Ok(())
}

/// Appends `entry` to the audit log's hash chain.
fn audit_in(conn: &Connection, entry: AuditEntry) -> Result<AuditRecord> {
    let prev: String = conn
        .prepare_cached("SELECT hash FROM audit ORDER BY id DESC LIMIT 1")
        .and_then(|mut s| s.query_row([], |r| r.get(0)).optional())
        .map_err(Error::sql("audit"))?
        .unwrap_or_else(|| GENESIS.to_owned());
    let at = to_ms(SystemTime::now());
    let hash = audit_hash(
        &prev,
        at,
        &entry.actor,
        &entry.action,
        &entry.subject,
        &entry.detail,
    );
    conn.prepare_cached(
        "INSERT INTO audit (at, actor, action, subject, detail, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .and_then(|mut s| {
        s.execute(params![
            at,
            entry.actor,
            entry.action,
            entry.subject,
            entry.detail,
            prev,
            hash
        ])
    })
    .map_err(Error::sql("audit"))?;
    Ok(AuditRecord {
        id: conn.last_insert_rowid(),
        at: from_ms(at),
        entry,
        prev_hash: prev,
        hash,
    })
}

/// What enqueueing a message needs to know about it: its interface and order key.
struct Owner<'a> {
    interface: &'a str,
    order_key: Option<i64>,
}

fn owner_of(conn: &Connection, id: MessageId, op: &'static str) -> Result<(String, Option<i64>)> {
    conn.prepare_cached("SELECT interface, order_key FROM messages WHERE id = ?1")
        .and_then(|mut s| {
            s.query_row([id.0], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .map_err(Error::sql(op))?
        .ok_or(Error::NotFound(id))
}

/// Queues message `id` for `destination` in its lane. With `requeue`, a delivery that
/// exists and was not delivered goes back to pending with a fresh attempt count (a
/// failed one to its lane now; one still owed keeps its lane, as a worker may be sending
/// it); otherwise an existing delivery is left as it is.
fn enqueue_in(
    conn: &Connection,
    id: MessageId,
    destination: &str,
    owner: &Owner<'_>,
    lanes: &LaneMap,
    requeue: bool,
    at_ingest: bool,
) -> Result<()> {
    let lane = lanes_for(conn, lanes, owner.interface, destination)?.of(id, owner.order_key);
    let sql = if requeue {
        "INSERT INTO deliveries (message_id, destination, status, updated_at, lane,
                                 queued_at_ingest)
         VALUES (?1, ?2, 'pending', ?3, ?4, ?5)
         ON CONFLICT (message_id, destination) DO UPDATE
         SET lane = CASE WHEN status IN ('pending', 'retry') THEN lane ELSE ?4 END,
             status = 'pending', attempts = 0, next_at = NULL, updated_at = ?3,
             queued_at_ingest = 0
         WHERE status <> 'delivered'"
    } else {
        "INSERT INTO deliveries (message_id, destination, status, updated_at, lane,
                                 queued_at_ingest)
         VALUES (?1, ?2, 'pending', ?3, ?4, ?5)
         ON CONFLICT (message_id, destination) DO NOTHING"
    };
    conn.prepare_cached(sql)
        .and_then(|mut s| {
            s.execute(params![
                id.0,
                destination,
                to_ms(SystemTime::now()),
                i64::from(lane),
                at_ingest && !requeue,
            ])
        })
        .map_err(Error::sql("enqueue"))?;
    Ok(())
}

/// How the queue of `destination` on `interface` is split: as this process split it, or
/// else as the engine last recorded in `lane_splits` (read inside the caller's write
/// transaction, so a split being changed is seen whole), or else one lane. The engine
/// splits every destination when it starts, so only other processes (a CLI replay beside
/// it) read the table.
fn lanes_for(
    conn: &Connection,
    lanes: &LaneMap,
    interface: &str,
    destination: &str,
) -> Result<Lanes> {
    if let Some(split) = lanes.get(interface, destination) {
        return Ok(split);
    }
    let stored = conn
        .prepare_cached(
            "SELECT lanes, lane_key FROM lane_splits WHERE interface = ?1 AND destination = ?2",
        )
        .and_then(|mut s| {
            s.query_row(params![interface, destination], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })
            .optional()
        })
        .map_err(Error::sql("enqueue"))?;
    match stored {
        None => Ok(Lanes::ONE),
        Some((count, key)) => Ok(Lanes {
            count: u32::try_from(count).unwrap_or(1).max(1),
            key: parse_text("lane_splits.lane_key", LaneKey::parse, &key)?,
        }),
    }
}

/// The query behind [`SqliteJournal::pending_query`]: one lane's deliveries, or a whole
/// destination's. A lane is read straight off the index (destination, lane, message_id);
/// the ids to skip go in as a JSON array. The limit is written into the SQL, not bound:
/// SQLite's planner reads a bound LIMIT's value, so each new binding expired the
/// statement and it was compiled again on every call (2% of `plexus bench`'s CPU). A
/// caller uses one or two limits, so the statement cache holds one statement per limit.
fn pending_sql(lane: bool, limit: usize) -> String {
    let text = if lane {
        // No `order_key` here: it is stored after `raw`, so reading it would walk a
        // large message's overflow pages, and a lane's reader knows its lane.
        "SELECT d.message_id, m.received_at, d.status, d.attempts, d.next_at,
                d.last_error, NULL, d.lane
         FROM deliveries d JOIN messages m ON m.id = d.message_id
         WHERE d.destination = ?1 AND d.lane = ?4 AND d.status IN ('pending', 'retry')
           AND d.message_id NOT IN (SELECT value FROM json_each(?5))
           AND m.interface = ?2
           AND (?3 IS NULL OR d.next_at IS NULL OR d.next_at <= ?3)
         ORDER BY d.message_id
         LIMIT "
    } else {
        "SELECT d.message_id, m.received_at, d.status, d.attempts, d.next_at,
                d.last_error, m.order_key, d.lane
         FROM deliveries d JOIN messages m ON m.id = d.message_id
         WHERE d.destination = ?1 AND d.status IN ('pending', 'retry')
           AND ?4 IS NULL
           AND d.message_id NOT IN (SELECT value FROM json_each(?5))
           AND m.interface = ?2
           AND (?3 IS NULL OR d.next_at IS NULL OR d.next_at <= ?3)
         ORDER BY d.message_id
         LIMIT "
    };
    format!("{text}{}", i64::try_from(limit).unwrap_or(i64::MAX))
}

/// The ids as a JSON array, for `json_each`.
fn id_list(ids: &[MessageId]) -> String {
    let mut out = String::with_capacity(ids.len() * 8 + 2);
    out.push('[');
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&id.0.to_string());
    }
    out.push(']');
    out
}

fn mark_attempt_in(
    conn: &Connection,
    id: MessageId,
    destination: &str,
    result: &DeliveryResult,
) -> Result<()> {
    let (status, error, next_at, resend) = match result {
        DeliveryResult::Delivered => (DeliveryStatus::Delivered, None, None, false),
        DeliveryResult::Retry {
            error,
            next_at,
            may_have_arrived,
        } => (
            DeliveryStatus::Retry,
            Some(error),
            Some(to_ms(*next_at)),
            *may_have_arrived,
        ),
        DeliveryResult::Failed {
            error,
            may_have_arrived,
        } => (DeliveryStatus::Failed, Some(error), None, *may_have_arrived),
    };
    let n = conn
        .prepare_cached(
            "UPDATE deliveries
             SET status = ?1, attempts = attempts + 1,
                 last_error = COALESCE(?2, last_error), next_at = ?3, updated_at = ?4,
                 possible_resend = MAX(possible_resend, ?7)
             WHERE message_id = ?5 AND destination = ?6",
        )
        .and_then(|mut s| {
            s.execute(params![
                status.as_str(),
                error,
                next_at,
                to_ms(SystemTime::now()),
                id.0,
                destination,
                resend,
            ])
        })
        .map_err(Error::sql("mark_attempt"))?;
    if n == 0 {
        message_exists(conn, id, "mark_attempt")?;
        return Err(Error::NotEnqueued {
            id,
            destination: destination.to_owned(),
        });
    }
    Ok(())
}

/// The write behind `ingest`: the message row (processed already set when the chain's
/// results come with it), then those results. It may run again (see [`Job::again`]).
fn ingest_job(
    inbound: Inbound,
    processing: Processing,
    dups: Dups,
    lanes: LaneMap,
) -> impl FnMut(&Connection) -> Result<Appended> + Send + 'static {
    // The order key and `processed` go in with the message row.
    let results = Processing {
        processed: false,
        order_key: None,
        ..processing
    };
    move |conn| {
        let appended = append_with(
            conn,
            &inbound,
            &dups,
            processing.processed,
            processing.order_key,
        )?;
        let owner = Owner {
            interface: &inbound.interface,
            order_key: processing.order_key,
        };
        process_in(conn, appended.id, &results, Some(&owner), &lanes, true)?;
        Ok(appended)
    }
}

/// The write behind `record_attempts`: each attempt's delivery status, and the error it
/// raises, if any. It may run again (see [`Job::again`]).
fn attempts_job(attempts: Vec<Attempt>) -> impl FnMut(&Connection) -> Result<()> + Send + 'static {
    move |conn| {
        for attempt in &attempts {
            mark_attempt_in(conn, attempt.id, &attempt.destination, &attempt.result)?;
            if let Some(report) = &attempt.error {
                error_in(conn, attempt.id, report)?;
            }
        }
        Ok(())
    }
}

/// Writes everything processing produced for message `id`; `owner` when the caller
/// knows it (it is read from the message otherwise, if anything is enqueued).
/// `at_ingest` when the message row is written in the same transaction (see
/// `deliveries.queued_at_ingest`).
fn process_in(
    conn: &Connection,
    id: MessageId,
    processing: &Processing,
    owner: Option<&Owner<'_>>,
    lanes: &LaneMap,
    at_ingest: bool,
) -> Result<()> {
    for stage in &processing.stages {
        record_stage_in(conn, id, stage)?;
    }
    if let Some(key) = processing.order_key {
        conn.prepare_cached("UPDATE messages SET order_key = ?2 WHERE id = ?1")
            .and_then(|mut s| s.execute(params![id.0, key]))
            .map_err(Error::sql("process"))?;
    }
    if !processing.enqueue.is_empty() {
        let stored;
        let owner = match owner {
            Some(owner) => owner,
            None => {
                stored = owner_of(conn, id, "process")?;
                &Owner {
                    interface: &stored.0,
                    order_key: stored.1,
                }
            }
        };
        for destination in &processing.enqueue {
            enqueue_in(
                conn,
                id,
                destination,
                owner,
                lanes,
                processing.requeue,
                at_ingest,
            )?;
        }
    }
    if let Some(report) = &processing.error {
        error_in(conn, id, report)?;
    }
    if processing.processed {
        conn.prepare_cached("UPDATE messages SET processed = 1 WHERE id = ?1")
            .and_then(|mut s| s.execute([id.0]))
            .map_err(Error::sql("process"))?;
    }
    Ok(())
}

/// Files `report` for message `id` (its own `message` is not read).
fn error_in(conn: &Connection, id: MessageId, report: &ErrorReport) -> Result<()> {
    let sql = Error::sql("error");
    let now = to_ms(SystemTime::now());
    let updated = conn
        .prepare_cached(
            "UPDATE errors
             SET stage = ?1, kind = ?2, reason = ?3, path = ?4, last_seen = ?5,
                 occurrences = occurrences + 1
             WHERE message_id = ?6 AND resolved_at IS NULL",
        )
        .and_then(|mut s| {
            s.execute(params![
                report.stage,
                report.kind.as_str(),
                report.reason,
                report.path,
                now,
                id.0,
            ])
        })
        .map_err(sql)?;
    if updated == 0 {
        // A message that fails again after its error was resolved (a replay that failed
        // at delivery) keeps its age and replay count: the queue shows how long it has
        // really been a problem, not since the last attempt to fix it.
        conn.prepare_cached(
            "INSERT INTO errors (message_id, stage, kind, reason, path, first_seen, last_seen,
                                 replays)
             VALUES (?1, ?2, ?3, ?4, ?5,
                     COALESCE((SELECT MIN(first_seen) FROM errors WHERE message_id = ?1), ?6),
                     ?6,
                     COALESCE((SELECT MAX(replays) FROM errors WHERE message_id = ?1), 0))",
        )
        .and_then(|mut s| {
            s.execute(params![
                id.0,
                report.stage,
                report.kind.as_str(),
                report.reason,
                report.path,
                now,
            ])
        })
        .map_err(Error::sql("error"))?;
    }
    Ok(())
}

/// The `prev_hash` of the first audit entry.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// sha256 over the previous hash and the entry's fields, each length-prefixed so no two
/// different entries hash the same bytes.
fn audit_hash(
    prev: &str,
    at_ms: i64,
    actor: &str,
    action: &str,
    subject: &str,
    detail: &str,
) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"plexus-audit-v1");
    for field in [
        prev.as_bytes(),
        at_ms.to_string().as_bytes(),
        actor.as_bytes(),
        action.as_bytes(),
        subject.as_bytes(),
        detail.as_bytes(),
    ] {
        h.update((field.len() as u64).to_le_bytes());
        h.update(field);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn audit_row(r: &Row<'_>) -> rusqlite::Result<AuditRecord> {
    Ok(AuditRecord {
        id: r.get(0)?,
        at: from_ms(r.get(1)?),
        entry: AuditEntry {
            actor: r.get(2)?,
            action: r.get(3)?,
            subject: r.get(4)?,
            detail: r.get(5)?,
        },
        prev_hash: r.get(6)?,
        hash: r.get(7)?,
    })
}

/// The file beside the journal that records the newest audit entry (`ID HASH`): without
/// it, deleting the newest entries would leave a chain that still verifies.
fn audit_head_path(journal: &Path) -> PathBuf {
    let mut name = journal.as_os_str().to_owned();
    name.push("-audit-head");
    PathBuf::from(name)
}

/// The recorded head, if there is one that reads.
fn read_audit_head(path: &Path) -> Option<(i64, String)> {
    let text = std::fs::read_to_string(path).ok()?;
    let (id, hash) = text.trim().split_once(' ')?;
    Some((id.parse().ok()?, hash.to_owned()))
}

/// Records `record` as the head unless a newer one is recorded (the engine and a CLI may
/// both append; the head only moves forward). Written to a temporary file and renamed,
/// so it is never half written. A failure is logged, not returned: the entry itself is
/// committed, and an older head only checks less.
fn write_audit_head(path: &Path, record: &AuditRecord) {
    if read_audit_head(path).is_some_and(|(id, _)| id >= record.id) {
        return;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let written = std::fs::write(&tmp, format!("{} {}\n", record.id, record.hash))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        tracing::warn!(path = %path.display(), error = %e, "could not record the audit head");
    }
}

impl Journal for SqliteJournal {
    fn audit(&self, entry: AuditEntry) -> Result<AuditRecord> {
        self.audited("audit", entry, |_| Ok(()))
    }

    fn queue_depths(&self) -> Result<Vec<QueueDepth>> {
        let conn = self.read();
        conn.prepare_cached(
            "SELECT m.interface, d.destination, d.lane, COUNT(*), MIN(m.received_at)
             FROM deliveries d JOIN messages m ON m.id = d.message_id
             WHERE d.status IN ('pending', 'retry')
             GROUP BY m.interface, d.destination, d.lane
             ORDER BY m.interface, d.destination, d.lane",
        )
        .and_then(|mut s| {
            s.query_map([], |r| {
                Ok(QueueDepth {
                    interface: r.get(0)?,
                    destination: r.get(1)?,
                    lane: u32::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
                    depth: u64::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
                    oldest: r.get::<_, Option<i64>>(4)?.map(from_ms),
                })
            })?
            .collect()
        })
        .map_err(Error::sql("queue_depths"))
    }

    fn audit_log(&self, after: i64, limit: usize) -> Result<Vec<AuditRecord>> {
        let conn = self.read();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        conn.prepare_cached(
            "SELECT id, at, actor, action, subject, detail, prev_hash, hash
             FROM audit WHERE id > ?1 ORDER BY id LIMIT ?2",
        )
        .and_then(|mut s| s.query_map(params![after, limit], audit_row)?.collect())
        .map_err(Error::sql("audit_log"))
    }

    fn verify_audit(&self) -> Result<AuditVerification> {
        let conn = self.read();
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, at, actor, action, subject, detail, prev_hash, hash
                 FROM audit ORDER BY id",
            )
            .map_err(Error::sql("verify_audit"))?;
        let rows = stmt
            .query_map([], audit_row)
            .map_err(Error::sql("verify_audit"))?;
        let mut expected_prev = GENESIS.to_owned();
        let mut checked = 0_u64;
        let mut last_id = 0_i64;
        for row in rows {
            let record = row.map_err(Error::sql("verify_audit"))?;
            let broken = |reason: &str| AuditVerification {
                entries: checked,
                first_broken: Some((record.id, reason.to_owned())),
            };
            if record.id != last_id + 1 {
                return Ok(broken("an entry before it is missing"));
            }
            if record.prev_hash != expected_prev {
                return Ok(broken(
                    "its prev_hash is not the hash of the entry before it",
                ));
            }
            let e = &record.entry;
            let hash = audit_hash(
                &record.prev_hash,
                to_ms(record.at),
                &e.actor,
                &e.action,
                &e.subject,
                &e.detail,
            );
            if hash != record.hash {
                return Ok(broken("its content does not match its hash (edited)"));
            }
            expected_prev = record.hash.clone();
            last_id = record.id;
            checked += 1;
        }
        // The chain cannot show that its newest entries were cut off: the head recorded
        // beside the journal can.
        if let Some((id, hash)) = read_audit_head(&audit_head_path(&self.path)) {
            let kept: Option<String> = conn
                .prepare_cached("SELECT hash FROM audit WHERE id = ?1")
                .and_then(|mut s| s.query_row([id], |r| r.get(0)).optional())
                .map_err(Error::sql("verify_audit"))?;
            let reason = match kept {
                None => Some(format!(
                    "entries up to {id} were recorded, but the log ends at {last_id}: its newest entries were deleted"
                )),
                Some(h) if h != hash => Some(
                    "it does not match the hash recorded for it when it was written (rewritten)"
                        .to_owned(),
                ),
                Some(_) => None,
            };
            if let Some(reason) = reason {
                return Ok(AuditVerification {
                    entries: checked,
                    first_broken: Some((id, reason)),
                });
            }
        }
        Ok(AuditVerification {
            entries: checked,
            first_broken: None,
        })
    }

    fn append(&self, inbound: Inbound) -> Result<Appended> {
        let dups = self.dups();
        self.write("append", move |conn| append_in(conn, &inbound, &dups))
    }

    fn record_stage(&self, stage: StageRecord) -> Result<()> {
        self.write("record_stage", move |conn| {
            message_exists(conn, stage.message, "record_stage")?;
            record_stage_in(conn, stage.message, &stage)
        })
    }

    fn ingest(&self, inbound: Inbound, processing: Processing) -> Result<Appended> {
        self.write_again(
            "ingest",
            ingest_job(inbound, processing, self.dups(), self.lanes.clone()),
        )
    }

    fn ingest_detached(
        &self,
        inbound: Inbound,
        processing: Processing,
        done: Box<dyn FnOnce(Result<Appended>) + Send>,
    ) {
        self.submit(Job::again(
            "ingest",
            ingest_job(inbound, processing, self.dups(), self.lanes.clone()),
            done,
        ));
    }

    fn answers_in_commit_order(&self) -> bool {
        // One writer thread assigns ids in job order and answers each group's jobs in
        // that order after its COMMIT.
        true
    }

    fn process(&self, id: MessageId, processing: Processing) -> Result<()> {
        let lanes = self.lanes.clone();
        self.write("process", move |conn| {
            message_exists(conn, id, "process")?;
            process_in(conn, id, &processing, None, &lanes, false)
        })
    }

    fn record_attempts(&self, attempts: Vec<Attempt>) -> Result<()> {
        self.write_again("record_attempts", attempts_job(attempts))
    }

    fn record_attempts_detached(
        &self,
        attempts: Vec<Attempt>,
        done: Box<dyn FnOnce(Result<()>) + Send>,
    ) {
        self.submit(Job::again("record_attempts", attempts_job(attempts), done));
    }

    fn next_due(
        &self,
        interface: &str,
        destination: &str,
        now: SystemTime,
        limit: usize,
    ) -> Result<Vec<PendingDelivery>> {
        self.pending_query(interface, destination, Some(now), None, &[], limit)
    }

    fn mark_processed(&self, id: MessageId) -> Result<()> {
        self.write("mark_processed", move |conn| {
            let n = conn
                .prepare_cached("UPDATE messages SET processed = 1 WHERE id = ?1")
                .and_then(|mut s| s.execute([id.0]))
                .map_err(Error::sql("mark_processed"))?;
            if n == 0 {
                Err(Error::NotFound(id))
            } else {
                Ok(())
            }
        })
    }

    fn enqueue(&self, id: MessageId, destination: &str) -> Result<()> {
        let destination = destination.to_owned();
        let lanes = self.lanes.clone();
        self.write("enqueue", move |conn| {
            let (interface, order_key) = owner_of(conn, id, "enqueue")?;
            let owner = Owner {
                interface: &interface,
                order_key,
            };
            enqueue_in(conn, id, &destination, &owner, &lanes, false, false)
        })
    }

    fn next_pending(
        &self,
        interface: &str,
        destination: &str,
        limit: usize,
    ) -> Result<Vec<PendingDelivery>> {
        self.pending_query(interface, destination, None, None, &[], limit)
    }

    fn next_in_lane(
        &self,
        interface: &str,
        destination: &str,
        lane: u32,
        due: Option<SystemTime>,
        skip: &[MessageId],
        limit: usize,
    ) -> Result<Vec<PendingDelivery>> {
        self.pending_query(interface, destination, due, Some(lane), skip, limit)
    }

    fn owed_without_order_key(
        &self,
        interface: &str,
        after: MessageId,
        limit: usize,
    ) -> Result<Vec<(MessageId, Vec<u8>)>> {
        let conn = self.read();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        conn.prepare_cached(
            // From the index of owed deliveries: what is owed, not the whole history kept.
            "SELECT m.id, m.raw FROM messages m
             WHERE m.id IN (SELECT message_id FROM deliveries INDEXED BY deliveries_owed
                            WHERE status IN ('pending', 'retry') AND message_id > ?2)
               AND m.interface = ?1 AND m.order_key IS NULL
             ORDER BY m.id
             LIMIT ?3",
        )
        .and_then(|mut s| {
            s.query_map(params![interface, after.0, limit], |r| {
                Ok((MessageId(r.get(0)?), r.get(1)?))
            })?
            .collect()
        })
        .map_err(Error::sql("owed_without_order_key"))
    }

    fn set_order_keys(&self, keys: Vec<(MessageId, i64)>) -> Result<()> {
        self.write("set_order_keys", move |conn| {
            let mut stmt = conn
                .prepare_cached("UPDATE messages SET order_key = ?2 WHERE id = ?1")
                .map_err(Error::sql("set_order_keys"))?;
            for (id, key) in keys {
                stmt.execute(params![id.0, key])
                    .map_err(Error::sql("set_order_keys"))?;
            }
            Ok(())
        })
    }

    fn flag_possible_resends(&self, window: usize) -> Result<u64> {
        let window = i64::try_from(window).unwrap_or(i64::MAX);
        self.write("flag_possible_resends", move |conn| {
            // A lane sends what is owed and due in queue order, a batch at a time, so what
            // a stopped engine sent without recording came from the head of each lane's
            // queue. Only *fresh* deliveries are counted towards `window`: queued at
            // ingest (`queued_at_ingest`: in the message's own transaction, so in commit
            // order) and never attempted or requeued. Every fresh one queued ahead of a
            // send was sent too, so at most `window - 1` fresh ones precede the last
            // unrecorded send.
            // Whatever else is owed ahead of it (a retry that was not due then but is
            // now, a replay requeued while the lane read from memory) may have been
            // passed over; it is flagged but not counted, so it cannot push a real
            // resend out of the window. Time only moves on: what was due then is due now.
            let flagged = conn
                .prepare_cached(
                    "WITH owed AS (
                         SELECT d.message_id AS id, d.destination AS destination,
                                SUM(CASE WHEN d.status = 'pending' AND d.attempts = 0
                                              AND d.queued_at_ingest = 1
                                         THEN 1 ELSE 0 END) OVER (
                                    PARTITION BY m.interface, d.destination, d.lane
                                    ORDER BY d.message_id
                                    ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
                                    AS fresh_before
                         FROM deliveries d JOIN messages m ON m.id = d.message_id
                         WHERE d.status IN ('pending', 'retry')
                           AND (d.next_at IS NULL OR d.next_at <= ?2))
                     UPDATE deliveries SET possible_resend = 1
                     FROM owed
                     WHERE deliveries.message_id = owed.id
                       AND deliveries.destination = owed.destination
                       AND COALESCE(owed.fresh_before, 0) < ?1
                       AND deliveries.possible_resend = 0",
                )
                .and_then(|mut s| s.execute(params![window, to_ms(SystemTime::now())]))
                .map_err(Error::sql("flag_possible_resends"))?;
            Ok(flagged as u64)
        })
    }

    fn set_lanes(&self, interface: &str, destination: &str, lanes: Lanes) -> Result<u64> {
        let (interface, destination) = (interface.to_owned(), destination.to_owned());
        let map = self.lanes.clone();
        // On the writer thread, so no enqueue runs between the new split and the move.
        self.write("set_lanes", move |conn| {
            let count = i64::from(lanes.count.max(1));
            let moved = conn
                .prepare_cached(
                    "WITH owed AS (
                         SELECT d.message_id AS id,
                                ((CASE WHEN ?4 THEN m.id ELSE COALESCE(m.order_key, 0) END)
                                  % ?3 + ?3) % ?3 AS lane
                         FROM deliveries d JOIN messages m ON m.id = d.message_id
                         WHERE d.destination = ?2 AND d.status IN ('pending', 'retry')
                           AND m.interface = ?1)
                     UPDATE deliveries SET lane = owed.lane
                     FROM owed
                     WHERE deliveries.message_id = owed.id AND deliveries.destination = ?2
                       AND deliveries.lane <> owed.lane",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        interface,
                        destination,
                        count,
                        lanes.key == LaneKey::MessageId
                    ])
                })
                .map_err(Error::sql("set_lanes"))?;
            // Recorded for the other processes on the journal (see `lanes_for`).
            conn.prepare_cached(
                "INSERT INTO lane_splits (interface, destination, lanes, lane_key, set_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (interface, destination) DO UPDATE
                 SET lanes = excluded.lanes, lane_key = excluded.lane_key,
                     set_at = excluded.set_at",
            )
            .and_then(|mut s| {
                s.execute(params![
                    interface,
                    destination,
                    count,
                    lanes.key.as_str(),
                    to_ms(SystemTime::now()),
                ])
            })
            .map_err(Error::sql("set_lanes"))?;
            // Only once the move is done: a failed write leaves the old split in force.
            map.set(&interface, &destination, lanes);
            Ok(moved as u64)
        })
    }

    fn mark_attempt(&self, id: MessageId, destination: &str, result: DeliveryResult) -> Result<()> {
        let destination = destination.to_owned();
        self.write("mark_attempt", move |conn| {
            mark_attempt_in(conn, id, &destination, &result)
        })
    }

    fn payload(&self, id: MessageId) -> Result<Vec<u8>> {
        let conn = self.read();
        conn.prepare_cached(
            "SELECT COALESCE(
                 (SELECT output FROM stages
                  WHERE message_id = ?1 AND output IS NOT NULL ORDER BY id DESC LIMIT 1),
                 raw)
             FROM messages WHERE id = ?1",
        )
        .and_then(|mut s| s.query_row([id.0], |r| r.get(0)).optional())
        .map_err(Error::sql("payload"))?
        .ok_or(Error::NotFound(id))
    }

    fn payloads(&self, ids: &[MessageId]) -> Result<Vec<Result<Vec<u8>>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // One statement for the batch: the ids go in as a JSON array.
        let list = format!(
            "[{}]",
            ids.iter()
                .map(|id| id.0.to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
        let mut found = {
            let conn = self.read();
            conn.prepare_cached(
                "SELECT m.id, COALESCE(
                     (SELECT output FROM stages
                      WHERE message_id = m.id AND output IS NOT NULL ORDER BY id DESC LIMIT 1),
                     m.raw)
                 FROM json_each(?1) AS j JOIN messages m ON m.id = j.value",
            )
            .and_then(|mut s| {
                s.query_map([&list], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
                })?
                .collect::<rusqlite::Result<HashMap<i64, Vec<u8>>>>()
            })
            .map_err(Error::sql("payloads"))?
        };
        // Each row moves into its first place; an id asked twice gets a copy.
        let mut out: Vec<Result<Vec<u8>>> = Vec::with_capacity(ids.len());
        let mut first_at: HashMap<i64, usize> = HashMap::new();
        for id in ids {
            let entry = match found.remove(&id.0) {
                Some(bytes) => {
                    first_at.insert(id.0, out.len());
                    Ok(bytes)
                }
                None => match first_at.get(&id.0).and_then(|&at| out[at].as_ref().ok()) {
                    Some(bytes) => Ok(bytes.clone()),
                    None => Err(Error::NotFound(*id)),
                },
            };
            out.push(entry);
        }
        Ok(out)
    }

    fn error(&self, report: ErrorReport) -> Result<()> {
        self.write("error", move |conn| {
            message_exists(conn, report.message, "error")?;
            error_in(conn, report.message, &report)
        })
    }

    fn list_errors(&self, filter: &ErrorFilter, limit: usize) -> Result<Vec<ErrorEntry>> {
        let conn = self.read();
        let query = format!(
            "SELECT {ERROR_COLUMNS}
             FROM errors e JOIN messages m ON m.id = e.message_id
             WHERE (?1 IS NULL OR m.interface = ?1)
               AND (?2 IS NULL OR e.kind = ?2)
               AND (?3 OR e.resolved_at IS NULL)
             ORDER BY e.first_seen, e.id
             LIMIT ?4"
        );
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = conn
            .prepare_cached(&query)
            .and_then(|mut s| {
                s.query_map(
                    params![
                        filter.interface,
                        filter.kind.map(ErrorKind::as_str),
                        filter.include_resolved,
                        limit
                    ],
                    error_row,
                )?
                .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(Error::sql("list_errors"))?;
        rows.into_iter().map(finish_error).collect()
    }

    fn show(&self, id: MessageId) -> Result<MessageRecord> {
        let conn = self.read();
        let sql = Error::sql("show");
        let head = conn
            .prepare_cached(
                "SELECT interface, source_kind, source_peer, received_at, control_id,
                        message_type, raw, duplicate_of, processed, replays
                 FROM messages WHERE id = ?1",
            )
            .and_then(|mut s| {
                s.query_row([id.0], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, Option<String>>(4)?,
                        r.get::<_, Option<String>>(5)?,
                        r.get::<_, Vec<u8>>(6)?,
                        r.get::<_, Option<i64>>(7)?,
                        r.get::<_, bool>(8)?,
                        r.get::<_, i64>(9)?,
                    ))
                })
                .optional()
            })
            .map_err(sql)?
            .ok_or(Error::NotFound(id))?;
        let (interface, source_kind, source_peer, received_at, control_id, message_type) =
            (head.0, head.1, head.2, head.3, head.4, head.5);
        let inbound = Inbound {
            interface,
            source_kind: parse_text("messages.source_kind", SourceKind::parse, &source_kind)?,
            source_peer,
            received_at: from_ms(received_at),
            control_id,
            message_type,
            raw: head.6,
        };

        let stage_rows = conn
            .prepare_cached(
                "SELECT id, stage_index, plugin, plugin_sha256, outcome, detail, output, recorded_at
                 FROM stages WHERE message_id = ?1 ORDER BY id",
            )
            .and_then(|mut s| {
                s.query_map([id.0], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, u32>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, Option<String>>(5)?,
                        r.get::<_, Option<Vec<u8>>>(6)?,
                        r.get::<_, i64>(7)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(Error::sql("show"))?;
        let mut stages = Vec::with_capacity(stage_rows.len());
        for (stage_id, stage_index, plugin, plugin_sha256, outcome, detail, output, at) in
            stage_rows
        {
            let edits = conn
                .prepare_cached("SELECT path, old, new FROM edits WHERE stage_id = ?1 ORDER BY seq")
                .and_then(|mut s| {
                    s.query_map([stage_id], |r| {
                        Ok(Edit {
                            path: r.get(0)?,
                            old: r.get(1)?,
                            new: r.get(2)?,
                        })
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(Error::sql("show"))?;
            stages.push(StoredStage {
                record: StageRecord {
                    message: id,
                    stage_index,
                    plugin,
                    plugin_sha256,
                    outcome: parse_text("stages.outcome", OutcomeKind::parse, &outcome)?,
                    detail,
                    output,
                    edits,
                },
                recorded_at: from_ms(at),
            });
        }

        let delivery_rows = conn
            .prepare_cached(
                "SELECT destination, status, attempts, last_error, next_at, possible_resend
                 FROM deliveries WHERE message_id = ?1 ORDER BY destination",
            )
            .and_then(|mut s| {
                s.query_map([id.0], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, Option<String>>(3)?,
                        r.get::<_, Option<i64>>(4)?,
                        r.get::<_, bool>(5)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(Error::sql("show"))?;
        let deliveries = delivery_rows
            .into_iter()
            .map(
                |(destination, status, attempts, last_error, next_at, possible_resend)| {
                    Ok(Delivery {
                        destination,
                        status: parse_text("deliveries.status", DeliveryStatus::parse, &status)?,
                        attempts: count(attempts),
                        last_error,
                        next_at: next_at.map(from_ms),
                        possible_resend,
                    })
                },
            )
            .collect::<Result<Vec<_>>>()?;

        let errors = conn
            .prepare_cached(&format!(
                "SELECT {ERROR_COLUMNS}
                 FROM errors e JOIN messages m ON m.id = e.message_id
                 WHERE e.message_id = ?1 ORDER BY e.id"
            ))
            .and_then(|mut s| {
                s.query_map([id.0], error_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(Error::sql("show"))?
            .into_iter()
            .map(finish_error)
            .collect::<Result<Vec<_>>>()?;

        Ok(MessageRecord {
            id,
            inbound,
            duplicate_of: head.7.map(MessageId),
            processed: head.8,
            replays: count(head.9),
            stages,
            deliveries,
            errors,
        })
    }

    fn resolve_audited(&self, id: MessageId, note: &str, audit: AuditEntry) -> Result<AuditRecord> {
        let note = note.to_owned();
        self.audited("resolve", audit, move |conn| resolve_in(conn, id, &note))
    }

    fn process_replay(
        &self,
        id: MessageId,
        processing: Processing,
        resolve_note: Option<&str>,
        audit: AuditEntry,
    ) -> Result<AuditRecord> {
        let lanes = self.lanes.clone();
        let note = resolve_note.map(str::to_owned);
        self.audited("process_replay", audit, move |conn| {
            message_exists(conn, id, "process")?;
            process_in(conn, id, &processing, None, &lanes, false)?;
            mark_replayed_in(conn, id)?;
            match note {
                Some(note) => match resolve_in(conn, id, &note) {
                    Ok(()) | Err(Error::NoOpenError(_)) => Ok(()),
                    Err(e) => Err(e),
                },
                None => Ok(()),
            }
        })
    }

    fn error_stats(&self, interface: Option<&str>) -> Result<ErrorStats> {
        let conn = self.read();
        conn.prepare_cached(
            "SELECT COALESCE(SUM(e.resolved_at IS NULL), 0),
                    MIN(CASE WHEN e.resolved_at IS NULL THEN e.first_seen END),
                    COALESCE(SUM(e.resolved_at IS NOT NULL), 0),
                    COUNT(DISTINCT CASE
                        WHEN e.resolved_at IS NOT NULL AND e.replays > 0
                             AND NOT EXISTS (SELECT 1 FROM errors o
                                             WHERE o.message_id = e.message_id
                                               AND o.resolved_at IS NULL)
                        THEN e.message_id END)
             FROM errors e JOIN messages m ON m.id = e.message_id
             WHERE (?1 IS NULL OR m.interface = ?1)",
        )
        .and_then(|mut s| {
            s.query_row([interface], |r| {
                Ok(ErrorStats {
                    open: r.get::<_, i64>(0)?.unsigned_abs(),
                    oldest_open: r.get::<_, Option<i64>>(1)?.map(from_ms),
                    resolved: r.get::<_, i64>(2)?.unsigned_abs(),
                    corrected: r.get::<_, i64>(3)?.unsigned_abs(),
                })
            })
        })
        .map_err(Error::sql("error_stats"))
    }

    fn unfinished(&self) -> Result<Vec<Unfinished>> {
        let conn = self.read();
        // Messages in the error queue wait for a person, not for recovery.
        let unprocessed = conn
            .prepare_cached(
                "SELECT m.id, m.interface FROM messages m
                 WHERE m.processed = 0
                   AND NOT EXISTS (SELECT 1 FROM errors e WHERE e.message_id = m.id)
                 ORDER BY m.id",
            )
            .and_then(|mut s| {
                s.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(Error::sql("unfinished"))?;
        let owed = conn
            .prepare_cached(
                "SELECT d.message_id, m.interface, d.destination
                 FROM deliveries d JOIN messages m ON m.id = d.message_id
                 WHERE d.status IN ('pending', 'retry') AND m.processed = 1
                 ORDER BY d.message_id, d.destination",
            )
            .and_then(|mut s| {
                s.query_map([], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(Error::sql("unfinished"))?;

        let mut work: BTreeMap<i64, Unfinished> = BTreeMap::new();
        for (id, interface) in unprocessed {
            work.insert(
                id,
                Unfinished {
                    id: MessageId(id),
                    interface,
                    resume: Resume::Process,
                },
            );
        }
        for (id, interface, destination) in owed {
            let entry = work.entry(id).or_insert_with(|| Unfinished {
                id: MessageId(id),
                interface,
                resume: Resume::Deliver(Vec::new()),
            });
            if let Resume::Deliver(destinations) = &mut entry.resume {
                destinations.push(destination);
            }
        }
        Ok(work.into_values().collect())
    }

    fn shadow_start(&self, run: ShadowRun) -> Result<i64> {
        self.write("shadow_start", move |conn| {
            let candidate: Vec<String> = run
                .candidate
                .iter()
                .map(|(name, sha)| format!("{name}@{sha}"))
                .collect();
            conn.prepare_cached(
                "INSERT INTO shadow_runs (interface, candidate, started_at, started_by)
                 VALUES (?1, ?2, ?3, ?4)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    run.interface,
                    candidate.join(" "),
                    to_ms(SystemTime::now()),
                    run.started_by
                ])
            })
            .map_err(Error::sql("shadow_start"))?;
            Ok(conn.last_insert_rowid())
        })
    }

    fn shadow_end(&self, run: i64, how: &str) -> Result<()> {
        let how = how.to_owned();
        self.write("shadow_end", move |conn| {
            let found = conn
                .prepare_cached("SELECT 1 FROM shadow_runs WHERE id = ?1")
                .and_then(|mut s| s.exists([run]))
                .map_err(Error::sql("shadow_end"))?;
            if !found {
                return Err(Error::NoShadowRun(run));
            }
            conn.prepare_cached(
                "UPDATE shadow_runs SET ended_at = ?2, ended_how = ?3
                 WHERE id = ?1 AND ended_at IS NULL",
            )
            .and_then(|mut s| s.execute(params![run, to_ms(SystemTime::now()), how]))
            .map_err(Error::sql("shadow_end"))?;
            Ok(())
        })
    }

    fn shadow_record(&self, results: Vec<ShadowResult>) -> Result<()> {
        if results.is_empty() {
            return Ok(());
        }
        self.write("shadow_record", move |conn| {
            let at = to_ms(SystemTime::now());
            let mut stmt = conn
                .prepare_cached(
                    "INSERT OR REPLACE INTO shadow_results
                     (run_id, message_id, at, active, candidate, differing, output, detail)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .map_err(Error::sql("shadow_record"))?;
            for r in results {
                stmt.execute(params![
                    r.run,
                    r.message.0,
                    at,
                    r.active.as_str(),
                    r.candidate.as_str(),
                    r.differing.join("\n"),
                    r.output,
                    r.detail
                ])
                .map_err(Error::sql("shadow_record"))?;
            }
            Ok(())
        })
    }

    fn shadow_runs(&self, interface: Option<&str>) -> Result<Vec<ShadowRunRecord>> {
        let conn = self.read();
        conn.prepare_cached(
            "SELECT id, interface, candidate, started_at, started_by, ended_at, ended_how
             FROM shadow_runs WHERE ?1 IS NULL OR interface = ?1 ORDER BY id DESC",
        )
        .and_then(|mut s| {
            s.query_map([interface], |r| {
                let candidate: String = r.get(2)?;
                let ended_at: Option<i64> = r.get(5)?;
                let ended_how: Option<String> = r.get(6)?;
                Ok(ShadowRunRecord {
                    id: r.get(0)?,
                    run: ShadowRun {
                        interface: r.get(1)?,
                        candidate: candidate
                            .split_whitespace()
                            .map(|stage| match stage.rsplit_once('@') {
                                Some((name, sha)) => (name.to_owned(), sha.to_owned()),
                                None => (stage.to_owned(), String::new()),
                            })
                            .collect(),
                        started_by: r.get(4)?,
                    },
                    started_at: from_ms(r.get(3)?),
                    ended: ended_at.map(|at| (from_ms(at), ended_how.unwrap_or_default())),
                })
            })?
            .collect()
        })
        .map_err(Error::sql("shadow_runs"))
    }

    fn shadow_results(
        &self,
        run: i64,
        after: MessageId,
        limit: usize,
    ) -> Result<Vec<ShadowResult>> {
        let conn = self.read();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows: Vec<(i64, String, String, String, Option<String>)> = conn
            .prepare_cached(
                "SELECT message_id, active, candidate, differing, detail
                 FROM shadow_results WHERE run_id = ?1 AND message_id > ?2
                 ORDER BY message_id LIMIT ?3",
            )
            .and_then(|mut s| {
                s.query_map(params![run, after.0, limit], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })?
                .collect()
            })
            .map_err(Error::sql("shadow_results"))?;
        rows.into_iter()
            .map(|(message, active, candidate, differing, detail)| {
                Ok(ShadowResult {
                    run,
                    message: MessageId(message),
                    active: parse_text("shadow_results.active", OutcomeKind::parse, &active)?,
                    candidate: parse_text(
                        "shadow_results.candidate",
                        OutcomeKind::parse,
                        &candidate,
                    )?,
                    differing: differing
                        .lines()
                        .filter(|l| !l.is_empty())
                        .map(str::to_owned)
                        .collect(),
                    output: None,
                    detail,
                })
            })
            .collect()
    }

    fn shadow_output(&self, run: i64, message: MessageId) -> Result<Option<Vec<u8>>> {
        let conn = self.read();
        conn.prepare_cached(
            "SELECT output FROM shadow_results WHERE run_id = ?1 AND message_id = ?2",
        )
        .and_then(|mut s| {
            s.query_row(params![run, message.0], |r| r.get(0))
                .optional()
        })
        .map(Option::flatten)
        .map_err(Error::sql("shadow_output"))
    }

    fn prune_delivered(&self, older_than: SystemTime) -> Result<u64> {
        let cutoff = to_ms(older_than);
        self.write("prune_delivered", move |conn| {
            let n = conn
                .prepare_cached(
                    "DELETE FROM messages
                     WHERE received_at < ?1
                       AND NOT EXISTS (SELECT 1 FROM errors e
                                       WHERE e.message_id = messages.id AND e.resolved_at IS NULL)
                       AND NOT EXISTS (SELECT 1 FROM deliveries d
                                       WHERE d.message_id = messages.id
                                         AND d.status IN ('pending', 'retry'))
                       AND (
                           -- finished normally: processed, nothing failed
                           (processed = 1 AND NOT EXISTS (SELECT 1 FROM deliveries d
                                WHERE d.message_id = messages.id AND d.status = 'failed'))
                           -- or a person resolved its errors
                           OR EXISTS (SELECT 1 FROM errors e WHERE e.message_id = messages.id)
                       )",
                )
                .and_then(|mut s| s.execute([cutoff]))
                .map_err(Error::sql("prune_delivered"))?;
            // Shadow results age out with the messages they compare.
            conn.prepare_cached("DELETE FROM shadow_results WHERE at < ?1")
                .and_then(|mut s| s.execute([cutoff]))
                .map_err(Error::sql("prune_delivered"))?;
            Ok(n as u64)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_a_lane_reuses_its_compiled_statement() {
        let dir = tempfile::tempdir().expect("tempdir");
        let journal = SqliteJournal::open(dir.path().join("journal.db")).expect("open");
        for n in 0..3 {
            let inbound = Inbound {
                interface: "scheduling".into(),
                source_kind: crate::SourceKind::Mllp,
                source_peer: None,
                received_at: SystemTime::now(),
                control_id: Some(format!("C{n}")),
                message_type: Some("SIU^S12".into()),
                raw: b"MSH|^~\\&|A".to_vec(),
            };
            let processing = Processing {
                enqueue: vec!["emr".into()],
                processed: true,
                ..Processing::default()
            };
            journal.ingest(inbound, processing).expect("ingest");
        }
        // Each call binds new values (the time, the ids to skip), as a delivery worker's do.
        for n in 0..5_i64 {
            let skip: Vec<MessageId> = (1..=n % 3).map(MessageId).collect();
            let owed = journal
                .next_in_lane("scheduling", "emr", 0, Some(SystemTime::now()), &skip, 128)
                .expect("read the lane");
            assert_eq!(owed.len(), 3 - skip.len());
        }
        let conn = journal.readers[0].lock().expect("reader");
        let stmt = conn
            .prepare_cached(&pending_sql(true, 128))
            .expect("the cached statement");
        assert_eq!(
            stmt.get_status(rusqlite::StatementStatus::RePrepare),
            0,
            "the lane query was compiled again on a new binding"
        );
    }
}
