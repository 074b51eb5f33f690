use std::fmt;
use std::time::SystemTime;

/// A journal-assigned message id. Ids grow in arrival order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId(pub i64);

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Generates a text-backed enum: the stored form is the `as_str` value.
macro_rules! text_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $text:literal,)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum $name { $($(#[$vm])* $variant,)* }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$(Self::$variant,)*];

            /// The stored (and displayed) form.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text,)* }
            }

            pub(crate) fn parse(s: &str) -> Option<Self> {
                match s { $($text => Some(Self::$variant),)* _ => None }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum!(
    /// Where a message came in.
    SourceKind {
        /// An MLLP listener.
        Mllp = "mllp",
        /// An HTTP POST.
        Http = "http",
        /// A file drop folder.
        File = "file",
        /// A replay or other internal source.
        Internal = "internal",
    }
);

text_enum!(
    /// What a plug-in stage returned.
    OutcomeKind {
        /// `forward`: pass the message on.
        Forward = "forward",
        /// `filter(reason)`: stop, successfully, without delivering.
        Filter = "filter",
        /// `fail(transform-error)`: the plug-in rejected the message.
        Fail = "fail",
        /// A trap, timeout or exceeded limit.
        Trap = "trap",
    }
);

text_enum!(
    /// Why a message is in the error queue.
    ErrorKind {
        /// The message did not parse.
        Parse = "parse",
        /// A plug-in returned `fail(...)`.
        PluginFail = "plugin-fail",
        /// A plug-in trapped.
        Trap = "trap",
        /// A plug-in ran out of time.
        Timeout = "timeout",
        /// A plug-in ran out of memory.
        OutOfMemory = "out-of-memory",
        /// A destination refused the message (AR) or failed permanently.
        Destination = "destination",
        /// Anything else.
        Internal = "internal",
    }
);

text_enum!(
    /// A destination's delivery state for one message.
    DeliveryStatus {
        /// Not yet attempted.
        Pending = "pending",
        /// Attempted, failed, will be tried again at `next_at`.
        Retry = "retry",
        /// Delivered (acknowledged by the destination).
        Delivered = "delivered",
        /// Failed permanently; the message should be in the error queue.
        Failed = "failed",
    }
);

/// An inbound message and its metadata, as handed to [`crate::Journal::append`].
#[derive(Clone)]
pub struct Inbound {
    /// The interface (config name) it arrived on.
    pub interface: String,
    /// The kind of source.
    pub source_kind: SourceKind,
    /// The peer (address, file name), if known.
    pub source_peer: Option<String>,
    /// When it arrived.
    pub received_at: SystemTime,
    /// MSH-10, the message control id; duplicate detection needs it.
    pub control_id: Option<String>,
    /// MSH-9, e.g. `SIU^S12`.
    pub message_type: Option<String>,
    /// The raw bytes as received.
    pub raw: Vec<u8>,
}

impl fmt::Debug for Inbound {
    // Shape only: the bytes are patient data.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inbound")
            .field("interface", &self.interface)
            .field("source_kind", &self.source_kind)
            .field("received_at", &self.received_at)
            .field("raw_len", &self.raw.len())
            .finish_non_exhaustive()
    }
}

/// The result of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The new message's id.
    pub id: MessageId,
    /// The earliest message with the same interface and control id within the duplicate
    /// window, if any. The new message is stored either way.
    pub duplicate_of: Option<MessageId>,
}

impl Appended {
    /// Whether the message was flagged as a duplicate.
    pub fn is_duplicate(&self) -> bool {
        self.duplicate_of.is_some()
    }
}

/// One field-level edit made by a plug-in.
#[derive(Clone, PartialEq, Eq)]
pub struct Edit {
    /// The terser path, e.g. `PID-5.1`.
    pub path: String,
    /// The value before (None: absent).
    pub old: Option<String>,
    /// The value after (None: removed).
    pub new: Option<String>,
}

impl fmt::Debug for Edit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Edit")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// One plug-in stage's result, for provenance.
#[derive(Clone)]
pub struct StageRecord {
    /// The message.
    pub message: MessageId,
    /// Position in the chain, from 0.
    pub stage_index: u32,
    /// The plug-in's config name.
    pub plugin: String,
    /// The component's sha256, hex.
    pub plugin_sha256: String,
    /// What it returned.
    pub outcome: OutcomeKind,
    /// A short detail: the filter reason, or the failure's kind and path followed by the
    /// plug-in's own words (which may quote field values: views mask them by default).
    pub detail: Option<String>,
    /// The message after the stage, if the stage produced one.
    pub output: Option<Vec<u8>>,
    /// The edits the stage made, in order.
    pub edits: Vec<Edit>,
}

impl fmt::Debug for StageRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StageRecord")
            .field("message", &self.message)
            .field("stage_index", &self.stage_index)
            .field("plugin", &self.plugin)
            .field("plugin_sha256", &self.plugin_sha256)
            .field("outcome", &self.outcome)
            .field("output_len", &self.output.as_ref().map(Vec::len))
            .field("edits", &self.edits.len())
            .finish_non_exhaustive()
    }
}

/// The result of one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryResult {
    /// Acknowledged by the destination.
    Delivered,
    /// Failed; try again at `next_at`.
    Retry {
        /// What went wrong (no message content).
        error: String,
        /// When to try again.
        next_at: SystemTime,
        /// Whether the failed attempt may have reached the destination all the same (the
        /// message was sent and no answer settled it): the retry may repeat it, so the
        /// delivery is flagged as a possible resend.
        may_have_arrived: bool,
    },
    /// Failed permanently.
    Failed {
        /// What went wrong (no message content).
        error: String,
        /// As for [`DeliveryResult::Retry`]: the last attempt may have reached the
        /// destination, so an operator's replay may repeat it (flagged as a possible
        /// resend).
        may_have_arrived: bool,
    },
}

/// A delivery still owed, from [`crate::Journal::next_pending`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingDelivery {
    /// The message.
    pub id: MessageId,
    /// When the message arrived.
    pub received_at: SystemTime,
    /// `Pending` or `Retry`.
    pub status: DeliveryStatus,
    /// Attempts so far.
    pub attempts: u32,
    /// Not before this time (retries only).
    pub next_at: Option<SystemTime>,
    /// The last attempt's error.
    pub last_error: Option<String>,
    /// A non-negative hash of the value that orders the message (the interface's
    /// `order_by` field): deliveries with equal keys go out in arrival order. `None` when
    /// the message has none (it then counts as key 0). Not read by
    /// [`crate::Journal::next_in_lane`], whose caller knows the lane: always `None` there.
    pub order_key: Option<i64>,
    /// The lane the delivery is queued in (see [`Lanes`]).
    pub lane: u32,
}

/// How a destination's queue is split over its connections ("lanes"): each connection
/// reads only its lane, in arrival order. Set per destination with
/// [`crate::Journal::set_lanes`]; a destination never set has one lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lanes {
    /// How many lanes (at least 1).
    pub count: u32,
    /// What a delivery's lane is computed from.
    pub key: LaneKey,
}

text_enum!(
    /// What [`Lanes`] spreads deliveries by (stored in `lane_splits.lane_key`).
    LaneKey {
        /// The message's [order key](PendingDelivery::order_key): equal keys share a lane
        /// and keep their arrival order. No key counts as 0.
        OrderKey = "order_key",
        /// The message id: an even spread, for queues that keep no order.
        MessageId = "message_id",
    }
);

impl Lanes {
    /// One lane: the whole queue in arrival order.
    pub const ONE: Lanes = Lanes {
        count: 1,
        key: LaneKey::OrderKey,
    };

    /// The lane (`0..count`) of message `id` with order key `order_key`: the key modulo
    /// `count`, taken non-negative.
    pub fn of(&self, id: MessageId, order_key: Option<i64>) -> u32 {
        let key = match self.key {
            LaneKey::OrderKey => order_key.unwrap_or(0),
            LaneKey::MessageId => id.0,
        };
        u32::try_from(key.rem_euclid(i64::from(self.count.max(1)))).unwrap_or(0)
    }
}

/// A report for the error queue.
#[derive(Debug, Clone)]
pub struct ErrorReport {
    /// The message.
    pub message: MessageId,
    /// Where it failed: `parse`, `plugin:<name>`, `destination:<name>`, ...
    pub stage: String,
    /// Why.
    pub kind: ErrorKind,
    /// The reason (no message content: names, paths, limits).
    pub reason: String,
    /// The HL7 path involved, if any.
    pub path: Option<String>,
}

/// Which errors to list.
#[derive(Debug, Clone, Default)]
pub struct ErrorFilter {
    /// Only this interface.
    pub interface: Option<String>,
    /// Only this kind.
    pub kind: Option<ErrorKind>,
    /// Include resolved errors (default: open ones only).
    pub include_resolved: bool,
}

/// How an error was closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// When.
    pub at: SystemTime,
    /// The operator's note.
    pub note: String,
}

/// An error-queue entry.
#[derive(Debug, Clone)]
pub struct ErrorEntry {
    /// The message.
    pub message: MessageId,
    /// Its interface.
    pub interface: String,
    /// Its MSH-10.
    pub control_id: Option<String>,
    /// Its MSH-9.
    pub message_type: Option<String>,
    /// Where it failed (latest occurrence).
    pub stage: String,
    /// Why (latest occurrence).
    pub kind: ErrorKind,
    /// The reason (latest occurrence).
    pub reason: String,
    /// The HL7 path (latest occurrence).
    pub path: Option<String>,
    /// First time this error was reported.
    pub first_seen: SystemTime,
    /// Latest time it was reported.
    pub last_seen: SystemTime,
    /// How many times it was reported.
    pub occurrences: u32,
    /// How many times the message was replayed while this error was open.
    pub replays: u32,
    /// Set once resolved.
    pub resolution: Option<Resolution>,
}

/// A stored stage, from [`crate::Journal::show`].
#[derive(Clone)]
pub struct StoredStage {
    /// The stage's record.
    pub record: StageRecord,
    /// When it was recorded.
    pub recorded_at: SystemTime,
}

impl fmt::Debug for StoredStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredStage")
            .field("record", &self.record)
            .field("recorded_at", &self.recorded_at)
            .finish()
    }
}

/// A destination's delivery state, from [`crate::Journal::show`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The destination's config name.
    pub destination: String,
    /// Its state.
    pub status: DeliveryStatus,
    /// Attempts so far.
    pub attempts: u32,
    /// The last attempt's error.
    pub last_error: Option<String>,
    /// Not before this time (retries only).
    pub next_at: Option<SystemTime>,
    /// It may have reached the destination already: an engine stopped uncleanly while
    /// it was among its lane's next sends, and the engine after it sends it again (see
    /// [`Journal::flag_possible_resends`](crate::Journal::flag_possible_resends)); or an
    /// attempt went out and no answer settled it (`may_have_arrived` on a result).
    pub possible_resend: bool,
}

/// Everything known about a message.
#[derive(Clone)]
pub struct MessageRecord {
    /// Its id.
    pub id: MessageId,
    /// The inbound message as appended.
    pub inbound: Inbound,
    /// Set when it was flagged as a duplicate.
    pub duplicate_of: Option<MessageId>,
    /// Whether its chain finished.
    pub processed: bool,
    /// How many times it was replayed.
    pub replays: u32,
    /// Its stages, in the order they were recorded.
    pub stages: Vec<StoredStage>,
    /// Its deliveries, by destination name.
    pub deliveries: Vec<Delivery>,
    /// Its errors, oldest first.
    pub errors: Vec<ErrorEntry>,
}

impl fmt::Debug for MessageRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessageRecord")
            .field("id", &self.id)
            .field("inbound", &self.inbound)
            .field("duplicate_of", &self.duplicate_of)
            .field("processed", &self.processed)
            .field("stages", &self.stages)
            .field("deliveries", &self.deliveries)
            .field("errors", &self.errors.len())
            .finish_non_exhaustive()
    }
}

/// Error queue counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorStats {
    /// Open errors.
    pub open: u64,
    /// First-seen time of the oldest open error (queue aging).
    pub oldest_open: Option<SystemTime>,
    /// Resolved errors.
    pub resolved: u64,
    /// Messages whose error was resolved after a replay and that have no open error since
    /// (corrections that held).
    pub corrected: u64,
}

/// What is left to do for a message after a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// The chain never finished: run it (again) and enqueue deliveries.
    Process,
    /// Deliveries still owed to these destinations.
    Deliver(Vec<String>),
}

/// A message with work left, from [`crate::Journal::unfinished`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unfinished {
    /// The message.
    pub id: MessageId,
    /// Its interface.
    pub interface: String,
    /// What is left.
    pub resume: Resume,
}

/// What processing one message produced, written in one transaction by
/// [`crate::Journal::ingest`] or [`crate::Journal::process`].
#[derive(Debug, Clone, Default)]
pub struct Processing {
    /// Stage records, in chain order (their `message` is filled in by the journal).
    pub stages: Vec<StageRecord>,
    /// Destinations to enqueue the message for.
    pub enqueue: Vec<String>,
    /// An error-queue report (its `message` is filled in by the journal).
    pub error: Option<ErrorReport>,
    /// Mark the chain as finished.
    pub processed: bool,
    /// Put deliveries that exist but were not delivered (failed or retrying) back to
    /// pending with a fresh attempt count (a replay); delivered ones are left alone.
    pub requeue: bool,
    /// The message's [order key](PendingDelivery::order_key), when the interface keeps
    /// order by a field. `None` leaves a stored key as it is.
    pub order_key: Option<i64>,
}

/// One delivery attempt for [`crate::Journal::record_attempts`].
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The message.
    pub id: MessageId,
    /// The destination.
    pub destination: String,
    /// What happened.
    pub result: DeliveryResult,
    /// An error-queue report to file with it (a permanent failure).
    pub error: Option<ErrorReport>,
}

/// An operator action for the audit log: who did what to what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Who: a user, token name, or `engine`.
    pub actor: String,
    /// What, e.g. `activate`, `rollback`, `replay`, `resolve`, `unmasked-view`.
    pub action: String,
    /// To what, e.g. `interface:scheduling`, `message:42`.
    pub subject: String,
    /// Details (digests, notes); no message content.
    pub detail: String,
}

impl AuditEntry {
    /// The entry for `actor` resolving message `id`'s error with `note`, as the CLI and
    /// the admin API write it.
    pub fn resolve(actor: &str, id: MessageId, note: &str) -> AuditEntry {
        AuditEntry {
            actor: actor.to_owned(),
            action: "resolve".to_owned(),
            subject: format!("message:{id}"),
            detail: format!("note: {note}"),
        }
    }
}

/// A stored audit entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Position in the log, from 1, without gaps.
    pub id: i64,
    /// When it was recorded.
    pub at: SystemTime,
    /// The entry.
    pub entry: AuditEntry,
    /// The previous entry's hash (64 zeros for the first).
    pub prev_hash: String,
    /// sha256 over `prev_hash` and this entry's fields, hex.
    pub hash: String,
}

/// The result of checking the audit log's hash chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditVerification {
    /// Entries checked and found intact (all of them when nothing is broken).
    pub entries: u64,
    /// The first entry that breaks the chain, and why.
    pub first_broken: Option<(i64, String)>,
}

/// How many deliveries one destination owes, from [`crate::Journal::queue_depths`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueDepth {
    /// The interface.
    pub interface: String,
    /// The destination.
    pub destination: String,
    /// The lane (one per connection; 0 for a destination with one).
    pub lane: u32,
    /// Deliveries pending or waiting for a retry.
    pub depth: u64,
    /// When the oldest of them arrived.
    pub oldest: Option<SystemTime>,
}

/// A shadow run to start: a candidate chain that runs beside an interface's active chain
/// on live traffic, journaled but never delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShadowRun {
    /// The interface.
    pub interface: String,
    /// The candidate chain: `(plug-in name, sha256)` per stage, in order.
    pub candidate: Vec<(String, String)>,
    /// Who started it (`token:NAME`, `cli:USER`).
    pub started_by: String,
}

/// A stored shadow run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShadowRunRecord {
    /// Its id.
    pub id: i64,
    /// What was started.
    pub run: ShadowRun,
    /// When.
    pub started_at: SystemTime,
    /// When it ended and why (`stopped`, `promoted`, ...); `None` while it runs.
    pub ended: Option<(SystemTime, String)>,
}

/// One message's shadow result: how the active and the candidate chain each ended and
/// where their outputs differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShadowResult {
    /// The shadow run.
    pub run: i64,
    /// The journaled message.
    pub message: MessageId,
    /// How the active chain ended.
    pub active: OutcomeKind,
    /// How the candidate chain ended.
    pub candidate: OutcomeKind,
    /// Paths whose values differ between the two outputs (`PID-5-1`, `OBX[2]`).
    pub differing: Vec<String>,
    /// The candidate's output, when it forwarded the message.
    pub output: Option<Vec<u8>>,
    /// The candidate's failure (kind and path), when it failed.
    pub detail: Option<String>,
}
