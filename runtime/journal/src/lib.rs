//! The durable message journal: every inbound message is written here before it is
//! acknowledged, and everything that happens to it afterwards (plug-in stages, deliveries,
//! errors, replays) is recorded against it.
//!
//! [`Journal`] is the store contract; [`SqliteJournal`] is the embedded default. Any other
//! backend must pass the functions in [`contract`]. The SQLite schema is documented for
//! `sqlite3` users in `docs/journal.md`.
//!
//! # Blocking API
//!
//! The trait is synchronous: every call may block on disk I/O (an append blocks until its
//! group commit has been fsynced). Async callers run it under `tokio::task::spawn_blocking`;
//! a `SqliteJournal` is `Send + Sync`, so one `Arc<SqliteJournal>` serves every task.
//!
//! # Example
//!
//! ```
//! use std::time::SystemTime;
//! use plexus_journal::{Inbound, Journal, SourceKind, SqliteJournal};
//!
//! let dir = tempfile::tempdir()?;
//! let journal = SqliteJournal::open(dir.path().join("journal.db"))?;
//! let appended = journal.append(Inbound {
//!     interface: "scheduling".into(),
//!     source_kind: SourceKind::Mllp,
//!     source_peer: Some("10.0.0.7:51234".into()),
//!     received_at: SystemTime::now(),
//!     control_id: Some("MSG00001".into()),
//!     message_type: Some("SIU^S12".into()),
//!     raw: b"MSH|^~\\&|...".to_vec(),
//! })?;
//! assert!(appended.duplicate_of.is_none());
//! // The bytes are on disk: the ACK may go out now.
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod contract;
mod dups;
mod error;
mod sqlite;
mod types;

pub use error::{Error, Result};
pub use sqlite::{JournalOptions, SqliteJournal};
pub use types::*;

use std::time::SystemTime;

/// The journal contract the pipeline relies on. See [`contract`] for the tests that pin
/// down its behaviour.
pub trait Journal: Send + Sync {
    /// Durably records an inbound message. When this returns `Ok`, the raw bytes and
    /// metadata survive a crash or power loss (commit-before-ACK).
    ///
    /// Concurrent appends share one transaction and one fsync. A message whose
    /// `(interface, control_id)` was already seen within the duplicate window is stored
    /// anyway and flagged in [`Appended::duplicate_of`].
    fn append(&self, inbound: Inbound) -> Result<Appended>;

    /// Records one plug-in stage's result (provenance). A replay records its stages again;
    /// every record is kept, in order.
    fn record_stage(&self, stage: StageRecord) -> Result<()>;

    /// Appends an inbound message and, in the same transaction, what processing it
    /// produced (stages, deliveries to enqueue, an error, the processed mark). The
    /// pipeline's fast path: one durable commit per message before its ACK. The `message`
    /// fields inside `processing` are ignored; the new id is used.
    fn ingest(&self, inbound: Inbound, processing: Processing) -> Result<Appended>;

    /// [`Journal::ingest`] without waiting: `done` is called with the result once the
    /// commit is durable (or has failed), possibly on another thread, so an async caller
    /// can wait on a channel instead of holding a thread. `done` must be quick. The
    /// default runs `ingest` and calls `done` before returning.
    fn ingest_detached(
        &self,
        inbound: Inbound,
        processing: Processing,
        done: Box<dyn FnOnce(Result<Appended>) + Send>,
    ) {
        done(self.ingest(inbound, processing));
    }

    /// Whether [`Journal::ingest_detached`] calls `done` in commit order, one call at a
    /// time, and only once what it answers is visible to reads: when `done` runs for a
    /// message, every ingest committed before it has been answered. A single writer that
    /// answers each group commit's jobs in order after the commit can promise it; the
    /// default cannot (concurrent callers answer themselves). With it, the pipeline hands
    /// freshly committed messages to delivery from memory instead of reading them back.
    fn answers_in_commit_order(&self) -> bool {
        false
    }

    /// Records what (re-)processing an existing message produced, in one transaction
    /// (resume after a crash, replay). The `message` fields inside `processing` are
    /// ignored; `id` is used.
    fn process(&self, id: MessageId, processing: Processing) -> Result<()>;

    /// Records several delivery attempts (and the errors they raise) in one transaction.
    fn record_attempts(&self, attempts: Vec<Attempt>) -> Result<()>;

    /// [`Journal::record_attempts`] without waiting, as [`Journal::ingest_detached`] is
    /// to `ingest`: `done` gets the result once the commit is durable (or has failed),
    /// possibly on another thread, and must be quick. The default records and calls
    /// `done` before returning.
    fn record_attempts_detached(
        &self,
        attempts: Vec<Attempt>,
        done: Box<dyn FnOnce(Result<()>) + Send>,
    ) {
        done(self.record_attempts(attempts));
    }

    /// Like [`Journal::next_pending`], but only deliveries that may be tried at `now`:
    /// pending ones and retries whose `next_at` has come. For queues that let later
    /// messages pass a failing one.
    fn next_due(
        &self,
        interface: &str,
        destination: &str,
        now: SystemTime,
        limit: usize,
    ) -> Result<Vec<PendingDelivery>>;

    /// [`Journal::next_pending`] (or, with `due`, [`Journal::next_due`]) for one lane of
    /// a destination with several connections: the oldest `limit` deliveries queued in
    /// lane `lane`, in arrival order, leaving out the messages in `skip` (a batch whose
    /// results are still being committed).
    fn next_in_lane(
        &self,
        interface: &str,
        destination: &str,
        lane: u32,
        due: Option<SystemTime>,
        skip: &[MessageId],
        limit: usize,
    ) -> Result<Vec<PendingDelivery>>;

    /// Up to `limit` messages of `interface`, after `after`, that are still owed to some
    /// destination and have no order key, with their raw bytes, in id order: messages
    /// queued before the interface had `order_by`, whose keys the engine fills in (with
    /// [`Journal::set_order_keys`]) before it splits the queue.
    fn owed_without_order_key(
        &self,
        interface: &str,
        after: MessageId,
        limit: usize,
    ) -> Result<Vec<(MessageId, Vec<u8>)>>;

    /// Stores the order keys of several messages in one transaction.
    fn set_order_keys(&self, keys: Vec<(MessageId, i64)>) -> Result<()>;

    /// Splits the queue of `destination` on `interface` into `lanes` from now on:
    /// deliveries enqueued later go to their lane, and those still owed (pending or
    /// retrying) are moved to the lane they belong in now, keeping each key's deliveries
    /// together. Returns how many were moved. Call it before any worker reads the lanes:
    /// a delivery being sent must not change lanes. The split is stored with the queue:
    /// another journal on the same store that did not split the destination itself (a
    /// CLI process beside the engine) queues to the same lanes; a destination nobody
    /// split has one.
    fn set_lanes(&self, interface: &str, destination: &str, lanes: Lanes) -> Result<u64>;

    /// Marks the plug-in chain as finished for this message: its deliveries (if any) have
    /// been enqueued. Until then [`Journal::unfinished`] reports it for re-processing.
    fn mark_processed(&self, id: MessageId) -> Result<()>;

    /// Queues the message for a destination. Idempotent: enqueueing twice keeps the
    /// existing delivery state.
    fn enqueue(&self, id: MessageId, destination: &str) -> Result<()>;

    /// The oldest `limit` deliveries still owed to `destination` on `interface` (pending or
    /// waiting for a retry), in arrival order. A retry whose `next_at` is in the future is
    /// included so that a blocking FIFO can wait on its head.
    fn next_pending(
        &self,
        interface: &str,
        destination: &str,
        limit: usize,
    ) -> Result<Vec<PendingDelivery>>;

    /// Records one delivery attempt and its result; increments the attempt counter.
    fn mark_attempt(&self, id: MessageId, destination: &str, result: DeliveryResult) -> Result<()>;

    /// The bytes to deliver: the output of the most recent stage that produced output,
    /// or the raw inbound bytes when no stage did.
    fn payload(&self, id: MessageId) -> Result<Vec<u8>>;

    /// [`Journal::payload`] of each of `ids`, in the same order, read together: a delivery
    /// worker reads a batch's bytes in one trip. The outer error is a failed read; an id
    /// that is not stored is an inner [`Error::NotFound`]. The default reads them one by
    /// one.
    fn payloads(&self, ids: &[MessageId]) -> Result<Vec<Result<Vec<u8>>>> {
        Ok(ids.iter().map(|id| self.payload(*id)).collect())
    }

    /// Puts the message in the error queue. A message has at most one open error: a new
    /// report for a message with an open error updates it and counts an occurrence.
    fn error(&self, report: ErrorReport) -> Result<()>;

    /// Errors matching `filter`, oldest first (by first seen).
    fn list_errors(&self, filter: &ErrorFilter, limit: usize) -> Result<Vec<ErrorEntry>>;

    /// Everything known about one message.
    fn show(&self, id: MessageId) -> Result<MessageRecord>;

    /// Closes the message's open error and appends `audit` to the audit log, in one
    /// transaction: the error is closed only with its entry written, and no entry is
    /// written for a resolve that fails. The note is required (not blank). There is no
    /// way to resolve without an audit entry.
    fn resolve_audited(&self, id: MessageId, note: &str, audit: AuditEntry) -> Result<AuditRecord>;

    /// A replay through the interface's current chain, in one transaction: `processing`
    /// written as [`process`](Self::process) writes it, the replay counted on the
    /// message and its open error, that error closed with `resolve_note` when one is
    /// given (not blank; no open error is not a failure here: it may have been closed
    /// meanwhile), and `audit` appended. All of it, or none.
    fn process_replay(
        &self,
        id: MessageId,
        processing: Processing,
        resolve_note: Option<&str>,
        audit: AuditEntry,
    ) -> Result<AuditRecord>;

    /// Deliveries owed per interface and destination (only those owing any), for metrics.
    fn queue_depths(&self) -> Result<Vec<QueueDepth>>;

    /// Error queue counts, for queue aging and correction metrics.
    fn error_stats(&self, interface: Option<&str>) -> Result<ErrorStats>;

    /// Flags the deliveries an engine that stopped without finishing (`kill -9`, power
    /// loss) may have sent without recording, when a lane can have at most `window`
    /// such sends: in each lane of each destination, the owed deliveries that are due,
    /// in queue order, up to and including the `window`-th one that was queued at
    /// ingest and never attempted (retries and requeued deliveries ahead of it are
    /// flagged without being counted: they may have been passed over). Sending them
    /// again may repeat what the destination already has; [`Delivery::possible_resend`]
    /// says so. Flags stay after delivery. Returns how many were newly flagged.
    fn flag_possible_resends(&self, window: usize) -> Result<u64>;

    /// Work to resume after a restart: messages whose chain never finished (and that are
    /// not in the error queue), and messages with deliveries still owed. Oldest first.
    fn unfinished(&self) -> Result<Vec<Unfinished>>;

    /// Appends an entry to the audit log: append-only, each entry holding the hash of
    /// the one before, so an edited or deleted entry breaks the chain.
    fn audit(&self, entry: AuditEntry) -> Result<AuditRecord>;

    /// Audit entries with id greater than `after`, oldest first.
    fn audit_log(&self, after: i64, limit: usize) -> Result<Vec<AuditRecord>>;

    /// Recomputes the audit log's hash chain and reports the first broken entry.
    fn verify_audit(&self) -> Result<AuditVerification>;

    /// Records the start of a shadow run; returns its id.
    fn shadow_start(&self, run: ShadowRun) -> Result<i64>;

    /// Marks a shadow run ended, saying why (`stopped`, `promoted`, ...). Ending one that
    /// has ended already keeps the first reason.
    fn shadow_end(&self, run: i64, how: &str) -> Result<()>;

    /// Records shadow results, all in one commit. A result recorded twice for the same
    /// run and message replaces the first.
    fn shadow_record(&self, results: Vec<ShadowResult>) -> Result<()>;

    /// Shadow runs, newest first; only `interface`'s when given.
    fn shadow_runs(&self, interface: Option<&str>) -> Result<Vec<ShadowRunRecord>>;

    /// A run's results for messages after `after`, in message order, at most `limit`,
    /// without their output bytes (see [`Journal::shadow_output`]).
    fn shadow_results(&self, run: i64, after: MessageId, limit: usize)
    -> Result<Vec<ShadowResult>>;

    /// The candidate's output for one message of a run.
    fn shadow_output(&self, run: i64, message: MessageId) -> Result<Option<Vec<u8>>>;

    /// Deletes messages received before `older_than` that have nothing left to do:
    /// processed, no delivery pending, retrying or failed, and no open error. A message
    /// whose error was resolved may be pruned. Returns the number deleted.
    fn prune_delivered(&self, older_than: SystemTime) -> Result<u64>;
}
