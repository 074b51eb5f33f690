//! Contract tests every [`Journal`] backend must pass.
//!
//! Each function takes `open`, a closure that opens *the same* store every time it is
//! called (so a test can drop the journal and reopen it, as a restart would), on a store
//! that starts empty. The store must be configured with a duplicate window of
//! [`DUPLICATE_WINDOW`]. A backend's test file calls every function in [`all()`] or names
//! them one by one; `tests/contract.rs` does this for SQLite.
//!
//! # Panics
//!
//! These are tests: every function panics when the backend breaks the contract.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{
    Attempt, AuditEntry, DeliveryResult, DeliveryStatus, Edit, Error, ErrorFilter, ErrorKind,
    ErrorReport, Inbound, Journal, LaneKey, Lanes, MessageId, OutcomeKind, Processing, Resume,
    ShadowResult, ShadowRun, SourceKind, StageRecord, Unfinished,
};

/// The duplicate window the store under test must be opened with.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(60);

/// A contract test: `test(open)`.
pub type ContractTest<J> = fn(&dyn Fn() -> J);

/// Every contract test, by name, for backends that loop over them.
pub fn all<J: Journal>() -> Vec<(&'static str, ContractTest<J>)> {
    vec![
        ("durable_across_reopen", durable_across_reopen::<J>),
        ("concurrent_appends", concurrent_appends::<J>),
        ("duplicates_within_window", duplicates_within_window::<J>),
        ("next_pending_is_fifo", next_pending_is_fifo::<J>),
        ("delivery_transitions", delivery_transitions::<J>),
        ("error_queue", error_queue::<J>),
        (
            "prune_keeps_unfinished_work",
            prune_keeps_unfinished_work::<J>,
        ),
        ("unfinished_after_crash", unfinished_after_crash::<J>),
        ("ingest_is_one_unit", ingest_is_one_unit::<J>),
        ("batched_attempts_and_due", batched_attempts_and_due::<J>),
        (
            "detached_writes_answer_once_durable",
            detached_writes_answer_once_durable::<J>,
        ),
        ("lanes_split_the_queue", lanes_split_the_queue::<J>),
        (
            "possible_resends_are_each_lanes_next_sends",
            possible_resends_are_each_lanes_next_sends::<J>,
        ),
        ("audit_log_is_a_hash_chain", audit_log_is_a_hash_chain::<J>),
        (
            "resolves_and_replays_are_audited_with_their_change",
            resolves_and_replays_are_audited_with_their_change::<J>,
        ),
        ("shadow_runs_and_results", shadow_runs_and_results::<J>),
    ]
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

fn inbound(interface: &str, control_id: Option<&str>, received_at: SystemTime) -> Inbound {
    let raw = format!(
        "MSH|^~\\&|EHR|CLINIC|PLEXUS|SITE|20240101120000||SIU^S12|{}|P|2.5\rSCH|1\r",
        control_id.unwrap_or("")
    );
    Inbound {
        interface: interface.to_owned(),
        source_kind: SourceKind::Mllp,
        source_peer: Some("127.0.0.1:40000".to_owned()),
        received_at,
        control_id: control_id.map(str::to_owned),
        message_type: Some("SIU^S12".to_owned()),
        raw: raw.into_bytes(),
    }
}

fn append<J: Journal>(j: &J, interface: &str, control_id: &str, secs: u64) -> MessageId {
    j.append(inbound(interface, Some(control_id), at(secs)))
        .expect("append")
        .id
}

fn stage(message: MessageId, index: u32, output: Option<&[u8]>) -> StageRecord {
    StageRecord {
        message,
        stage_index: index,
        plugin: format!("plugin-{index}"),
        plugin_sha256: "ab".repeat(32),
        outcome: OutcomeKind::Forward,
        detail: None,
        output: output.map(<[u8]>::to_vec),
        edits: vec![
            Edit {
                path: "PID-8".to_owned(),
                old: Some("female".to_owned()),
                new: Some("F".to_owned()),
            },
            Edit {
                path: "PID-13".to_owned(),
                old: None,
                new: Some("555-0100".to_owned()),
            },
        ],
    }
}

fn report(message: MessageId, kind: ErrorKind, stage: &str) -> ErrorReport {
    ErrorReport {
        message,
        stage: stage.to_owned(),
        kind,
        reason: "missing mapping for status".to_owned(),
        path: Some("SCH-25".to_owned()),
    }
}

/// Resolves as an operator does: with its audit entry.
fn resolve<J: Journal>(j: &J, id: MessageId, note: &str) -> crate::Result<()> {
    j.resolve_audited(id, note, operator_entry("resolve", id))
        .map(|_| ())
}

/// Records a replay that ran no stage and resolves nothing, with its audit entry.
fn mark_replayed<J: Journal>(j: &J, id: MessageId) -> crate::Result<()> {
    j.process_replay(id, replayed(id, 0), None, operator_entry("replay", id))
        .map(|_| ())
}

/// What a replay that forwarded the message through one stage writes.
fn replayed(id: MessageId, stages: u32) -> Processing {
    Processing {
        stages: (0..stages)
            .map(|i| stage(id, i, Some(b"MSH|replayed")))
            .collect(),
        processed: true,
        requeue: true,
        ..Processing::default()
    }
}

fn operator_entry(action: &str, id: MessageId) -> AuditEntry {
    AuditEntry {
        actor: "ops@clinic".to_owned(),
        action: action.to_owned(),
        subject: format!("message:{id}"),
        detail: "contract test".to_owned(),
    }
}

/// Everything appended and recorded is there after the journal is dropped and reopened.
pub fn durable_across_reopen<J: Journal>(open: &dyn Fn() -> J) {
    let sent = inbound("scheduling", Some("CTL1"), at(1));
    let (id, bare) = {
        let j = open();
        let id = j.append(sent.clone()).expect("append").id;
        let bare = append(&j, "scheduling", "CTL2", 2);
        j.record_stage(stage(id, 0, Some(b"MSH|stage0")))
            .expect("stage 0");
        j.record_stage(stage(id, 1, None)).expect("stage 1");
        j.mark_processed(id).expect("processed");
        j.enqueue(id, "file-out").expect("enqueue");
        (id, bare)
    };
    let j = open();
    let record = j.show(id).expect("show after reopen");
    assert_eq!(record.id, id);
    assert_eq!(record.inbound.raw, sent.raw, "raw bytes survive");
    assert_eq!(record.inbound.interface, sent.interface);
    assert_eq!(record.inbound.source_kind, sent.source_kind);
    assert_eq!(record.inbound.source_peer, sent.source_peer);
    assert_eq!(record.inbound.received_at, sent.received_at);
    assert_eq!(record.inbound.control_id, sent.control_id);
    assert_eq!(record.inbound.message_type, sent.message_type);
    assert!(record.processed);
    assert_eq!(record.stages.len(), 2);
    let first = &record.stages[0].record;
    assert_eq!(first.plugin, "plugin-0");
    assert_eq!(first.plugin_sha256, "ab".repeat(32));
    assert_eq!(first.outcome, OutcomeKind::Forward);
    assert_eq!(first.output.as_deref(), Some(&b"MSH|stage0"[..]));
    assert_eq!(first.edits, stage(id, 0, None).edits, "edits kept in order");
    assert_eq!(record.deliveries.len(), 1);
    assert_eq!(record.deliveries[0].status, DeliveryStatus::Pending);
    // The payload is the latest stage output, or the raw bytes when there is none.
    assert_eq!(j.payload(id).expect("payload"), b"MSH|stage0");
    assert_eq!(
        j.payload(bare).expect("payload"),
        inbound("scheduling", Some("CTL2"), at(2)).raw
    );
    assert!(matches!(
        j.show(MessageId(id.0 + 1000)),
        Err(Error::NotFound(_))
    ));
}

/// Eight threads appending at once: every append gets its own id and reads back intact.
pub fn concurrent_appends<J: Journal>(open: &dyn Fn() -> J) {
    const THREADS: usize = 8;
    const PER_THREAD: usize = 100;
    let j = open();
    let ids: Vec<(MessageId, String)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let j = &j;
                scope.spawn(move || {
                    (0..PER_THREAD)
                        .map(|i| {
                            let ctl = format!("T{t}-{i}");
                            (append(j, "adt", &ctl, 0), ctl)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("appender thread"))
            .collect()
    });
    let distinct: HashSet<MessageId> = ids.iter().map(|(id, _)| *id).collect();
    assert_eq!(distinct.len(), THREADS * PER_THREAD, "ids are distinct");
    drop(j);
    let j = open();
    for (id, ctl) in &ids {
        let record = j.show(*id).expect("every append is readable");
        assert_eq!(record.inbound.control_id.as_deref(), Some(ctl.as_str()));
        assert_eq!(record.inbound.raw, inbound("adt", Some(ctl), at(0)).raw);
        assert_eq!(record.duplicate_of, None);
    }
}

/// Same interface + control id within the window is flagged (and stored); outside the
/// window, on another interface, or without a control id it is not.
pub fn duplicates_within_window<J: Journal>(open: &dyn Fn() -> J) {
    let j = open();
    let first = j.append(inbound("adt", Some("X"), at(0))).expect("append");
    assert!(!first.is_duplicate());
    let window = DUPLICATE_WINDOW.as_secs();
    let again = j
        .append(inbound("adt", Some("X"), at(window / 2)))
        .expect("append");
    assert_eq!(
        again.duplicate_of,
        Some(first.id),
        "flagged within the window"
    );
    assert_ne!(again.id, first.id, "a duplicate is stored, not dropped");
    assert_eq!(j.show(again.id).expect("show").duplicate_of, Some(first.id));
    let later = j
        .append(inbound("adt", Some("X"), at(window * 10)))
        .expect("append");
    assert!(!later.is_duplicate(), "not flagged outside the window");
    let other = j
        .append(inbound("scheduling", Some("X"), at(1)))
        .expect("append");
    assert!(!other.is_duplicate(), "other interface");
    let a = j.append(inbound("adt", None, at(1))).expect("append");
    let b = j.append(inbound("adt", None, at(1))).expect("append");
    assert!(!a.is_duplicate() && !b.is_duplicate(), "no control id");
}

/// `next_pending` is FIFO by arrival, per interface and destination, bounded by `limit`.
pub fn next_pending_is_fifo<J: Journal>(open: &dyn Fn() -> J) {
    let j = open();
    let ids: Vec<MessageId> = (0..5)
        .map(|i| append(&j, "scheduling", &format!("F{i}"), i))
        .collect();
    let elsewhere = append(&j, "adt", "F-adt", 0);
    // Enqueued out of order: the queue still follows arrival.
    for id in ids.iter().rev() {
        j.mark_processed(*id).expect("processed");
        j.enqueue(*id, "mllp-out").expect("enqueue");
    }
    j.enqueue(ids[0], "file-out").expect("enqueue");
    j.enqueue(elsewhere, "mllp-out").expect("enqueue");

    let pending = j
        .next_pending("scheduling", "mllp-out", 10)
        .expect("pending");
    let got: Vec<MessageId> = pending.iter().map(|p| p.id).collect();
    assert_eq!(got, ids, "FIFO by arrival, this interface only");
    assert!(pending.iter().all(|p| p.status == DeliveryStatus::Pending));

    let head = j
        .next_pending("scheduling", "mllp-out", 2)
        .expect("pending");
    assert_eq!(head.iter().map(|p| p.id).collect::<Vec<_>>(), ids[..2]);

    j.mark_attempt(ids[0], "mllp-out", DeliveryResult::Delivered)
        .expect("delivered");
    let rest = j
        .next_pending("scheduling", "mllp-out", 10)
        .expect("pending");
    assert_eq!(rest.iter().map(|p| p.id).collect::<Vec<_>>(), ids[1..]);
    let file = j
        .next_pending("scheduling", "file-out", 10)
        .expect("pending");
    assert_eq!(file.iter().map(|p| p.id).collect::<Vec<_>>(), [ids[0]]);
}

/// Retry keeps a delivery queued with its error and next time; Failed and Delivered take
/// it out; every attempt counts.
pub fn delivery_transitions<J: Journal>(open: &dyn Fn() -> J) {
    let j = open();
    let id = append(&j, "scheduling", "D1", 0);
    j.mark_processed(id).expect("processed");
    j.enqueue(id, "mllp-out").expect("enqueue");
    j.enqueue(id, "file-out").expect("enqueue");

    j.mark_attempt(
        id,
        "mllp-out",
        DeliveryResult::Retry {
            error: "connection refused".to_owned(),
            next_at: at(30),
            may_have_arrived: false,
        },
    )
    .expect("retry");
    let head = j
        .next_pending("scheduling", "mllp-out", 1)
        .expect("pending");
    assert_eq!(head.len(), 1, "a retry stays at the head of the queue");
    assert_eq!(head[0].status, DeliveryStatus::Retry);
    assert_eq!(head[0].attempts, 1);
    assert_eq!(head[0].next_at, Some(at(30)));
    assert_eq!(head[0].last_error.as_deref(), Some("connection refused"));
    let flagged = |j: &J| {
        j.show(id)
            .expect("show")
            .deliveries
            .iter()
            .find(|d| d.destination == "mllp-out")
            .expect("mllp delivery")
            .possible_resend
    };
    assert!(
        !flagged(&j),
        "a refused connection cannot have delivered it"
    );

    j.enqueue(id, "mllp-out").expect("enqueue again");
    let head = j
        .next_pending("scheduling", "mllp-out", 1)
        .expect("pending");
    assert_eq!(head[0].attempts, 1, "enqueue is idempotent");

    j.mark_attempt(
        id,
        "mllp-out",
        DeliveryResult::Retry {
            error: "timeout".to_owned(),
            next_at: at(90),
            may_have_arrived: true,
        },
    )
    .expect("retry");
    assert!(
        flagged(&j),
        "an attempt that may have arrived makes the retry a possible resend"
    );
    j.mark_attempt(
        id,
        "mllp-out",
        DeliveryResult::Failed {
            error: "AR: unknown patient".to_owned(),
            may_have_arrived: false,
        },
    )
    .expect("failed");
    assert!(flagged(&j), "the flag stays");
    assert!(
        j.next_pending("scheduling", "mllp-out", 10)
            .expect("pending")
            .is_empty(),
        "failed is not pending"
    );
    j.mark_attempt(id, "file-out", DeliveryResult::Delivered)
        .expect("delivered");

    let record = j.show(id).expect("show");
    let mllp = record
        .deliveries
        .iter()
        .find(|d| d.destination == "mllp-out")
        .expect("mllp delivery");
    assert_eq!(mllp.status, DeliveryStatus::Failed);
    assert_eq!(mllp.attempts, 3);
    assert_eq!(mllp.last_error.as_deref(), Some("AR: unknown patient"));
    let file = record
        .deliveries
        .iter()
        .find(|d| d.destination == "file-out")
        .expect("file delivery");
    assert_eq!((file.status, file.attempts), (DeliveryStatus::Delivered, 1));
    assert!(!file.possible_resend);

    assert!(matches!(
        j.mark_attempt(id, "nowhere", DeliveryResult::Delivered),
        Err(Error::NotEnqueued { .. })
    ));

    // Given up after an attempt that may have arrived: a replay may repeat it.
    j.enqueue(id, "http-out").expect("enqueue");
    j.mark_attempt(
        id,
        "http-out",
        DeliveryResult::Failed {
            error: "gave up after 1 attempt(s): no answer".to_owned(),
            may_have_arrived: true,
        },
    )
    .expect("failed");
    let record = j.show(id).expect("show");
    let http = record
        .deliveries
        .iter()
        .find(|d| d.destination == "http-out")
        .expect("http delivery");
    assert_eq!(http.status, DeliveryStatus::Failed);
    assert!(http.possible_resend);
}

/// The error queue: list (oldest first, filtered), show, resolve with a required note,
/// replay bookkeeping and counts.
pub fn error_queue<J: Journal>(open: &dyn Fn() -> J) {
    let j = open();
    let plugin_fail = append(&j, "scheduling", "E1", 0);
    let refused = append(&j, "scheduling", "E2", 1);
    let other = append(&j, "adt", "E3", 2);
    j.record_stage(stage(plugin_fail, 0, None)).expect("stage");
    j.error(report(
        plugin_fail,
        ErrorKind::PluginFail,
        "plugin:visit-status-map",
    ))
    .expect("error");
    j.error(report(
        refused,
        ErrorKind::Destination,
        "destination:mllp-out",
    ))
    .expect("error");
    j.error(report(other, ErrorKind::Parse, "parse"))
        .expect("error");
    // The same message failing again is one open error with two occurrences.
    j.error(report(
        plugin_fail,
        ErrorKind::PluginFail,
        "plugin:visit-status-map",
    ))
    .expect("error again");

    let open_errors = j.list_errors(&ErrorFilter::default(), 10).expect("list");
    let order: Vec<MessageId> = open_errors.iter().map(|e| e.message).collect();
    assert_eq!(order, [plugin_fail, refused, other], "oldest first");
    assert_eq!(open_errors[0].occurrences, 2);
    assert_eq!(open_errors[0].kind, ErrorKind::PluginFail);
    assert_eq!(open_errors[0].path.as_deref(), Some("SCH-25"));
    assert_eq!(open_errors[0].control_id.as_deref(), Some("E1"));

    let scheduling = ErrorFilter {
        interface: Some("scheduling".to_owned()),
        ..ErrorFilter::default()
    };
    assert_eq!(j.list_errors(&scheduling, 10).expect("list").len(), 2);
    let parse = ErrorFilter {
        kind: Some(ErrorKind::Parse),
        ..ErrorFilter::default()
    };
    let parse_errors = j.list_errors(&parse, 10).expect("list");
    assert_eq!(parse_errors.len(), 1);
    assert_eq!(parse_errors[0].message, other);
    assert_eq!(
        j.list_errors(&ErrorFilter::default(), 1)
            .expect("list")
            .len(),
        1
    );

    let shown = j.show(plugin_fail).expect("show");
    assert_eq!(shown.errors.len(), 1);
    assert_eq!(shown.stages.len(), 1);
    assert_eq!(shown.stages[0].record.edits.len(), 2);

    assert!(matches!(
        resolve(&j, plugin_fail, ""),
        Err(Error::NoteRequired(_))
    ));
    assert!(matches!(
        resolve(&j, plugin_fail, "  \n"),
        Err(Error::NoteRequired(_))
    ));
    assert!(
        j.show(plugin_fail).expect("show").errors[0]
            .resolution
            .is_none()
    );

    mark_replayed(&j, plugin_fail).expect("replayed");
    resolve(
        &j,
        plugin_fail,
        "added 'Roomed' to visit-status table, replayed",
    )
    .expect("resolve");
    assert!(matches!(
        resolve(&j, plugin_fail, "again"),
        Err(Error::NoOpenError(_))
    ));
    assert!(matches!(
        resolve(&j, MessageId(other.0 + 1000), "note"),
        Err(Error::NotFound(_))
    ));
    resolve(&j, refused, "sent by fax").expect("resolve");

    let open_errors = j.list_errors(&ErrorFilter::default(), 10).expect("list");
    assert_eq!(
        open_errors.iter().map(|e| e.message).collect::<Vec<_>>(),
        [other]
    );
    let everything = ErrorFilter {
        include_resolved: true,
        ..ErrorFilter::default()
    };
    let all = j.list_errors(&everything, 10).expect("list");
    assert_eq!(all.len(), 3);
    let resolved = all
        .iter()
        .find(|e| e.message == plugin_fail)
        .expect("resolved");
    assert_eq!(resolved.replays, 1);
    assert_eq!(
        resolved.resolution.as_ref().map(|r| r.note.as_str()),
        Some("added 'Roomed' to visit-status table, replayed")
    );
    assert_eq!(j.show(plugin_fail).expect("show").replays, 1);

    let stats = j.error_stats(None).expect("stats");
    assert_eq!((stats.open, stats.resolved, stats.corrected), (1, 2, 1));
    assert!(stats.oldest_open.is_some());
    let adt = j.error_stats(Some("adt")).expect("stats");
    assert_eq!((adt.open, adt.resolved), (1, 0));

    // A new failure after resolution opens a new error.
    j.error(report(
        refused,
        ErrorKind::Destination,
        "destination:mllp-out",
    ))
    .expect("error");
    assert_eq!(j.error_stats(Some("scheduling")).expect("stats").open, 1);
    // One after a replay's resolution keeps the first failure's age and the replay
    // count, and the correction no longer counts until it holds.
    let first_seen = all
        .iter()
        .find(|e| e.message == plugin_fail)
        .expect("resolved")
        .first_seen;
    j.error(report(
        plugin_fail,
        ErrorKind::Destination,
        "destination:mllp-out",
    ))
    .expect("error");
    let reopened = j
        .list_errors(&ErrorFilter::default(), 10)
        .expect("list")
        .into_iter()
        .find(|e| e.message == plugin_fail)
        .expect("open again");
    assert_eq!((reopened.first_seen, reopened.replays), (first_seen, 1));
    assert_eq!(j.error_stats(None).expect("stats").corrected, 0);
}

/// Pruning deletes old messages with nothing left to do, and nothing else: never an open
/// error, an undelivered or unprocessed message, or a message newer than the cutoff.
pub fn prune_keeps_unfinished_work<J: Journal>(open: &dyn Fn() -> J) {
    let j = open();
    let delivered = |ctl: &str, secs: u64| {
        let id = append(&j, "scheduling", ctl, secs);
        j.mark_processed(id).expect("processed");
        j.enqueue(id, "out").expect("enqueue");
        j.mark_attempt(id, "out", DeliveryResult::Delivered)
            .expect("delivered");
        id
    };
    let old_delivered = delivered("P1", 0);
    let new_delivered = delivered("P2", 1_000);
    let filtered = append(&j, "scheduling", "P3", 0);
    j.mark_processed(filtered).expect("processed");

    let pending = append(&j, "scheduling", "P4", 0);
    j.mark_processed(pending).expect("processed");
    j.enqueue(pending, "out").expect("enqueue");
    let retrying = append(&j, "scheduling", "P5", 0);
    j.mark_processed(retrying).expect("processed");
    j.enqueue(retrying, "out").expect("enqueue");
    j.mark_attempt(
        retrying,
        "out",
        DeliveryResult::Retry {
            error: "down".to_owned(),
            next_at: at(5),
            may_have_arrived: false,
        },
    )
    .expect("retry");
    let unprocessed = append(&j, "scheduling", "P6", 0);
    let open_error = append(&j, "scheduling", "P7", 0);
    j.error(report(open_error, ErrorKind::Trap, "plugin:x"))
        .expect("error");
    let failed_unreported = append(&j, "scheduling", "P8", 0);
    j.mark_processed(failed_unreported).expect("processed");
    j.enqueue(failed_unreported, "out").expect("enqueue");
    j.mark_attempt(
        failed_unreported,
        "out",
        DeliveryResult::Failed {
            error: "AR".to_owned(),
            may_have_arrived: false,
        },
    )
    .expect("failed");
    let resolved = append(&j, "scheduling", "P9", 0);
    j.error(report(resolved, ErrorKind::Parse, "parse"))
        .expect("error");
    resolve(&j, resolved, "sender fixed and resent").expect("resolve");

    let pruned = j.prune_delivered(at(500)).expect("prune");
    assert_eq!(pruned, 3, "old delivered, old filtered, old resolved");
    for gone in [old_delivered, filtered, resolved] {
        assert!(
            matches!(j.show(gone), Err(Error::NotFound(_))),
            "{gone} pruned"
        );
    }
    for kept in [
        new_delivered,
        pending,
        retrying,
        unprocessed,
        open_error,
        failed_unreported,
    ] {
        j.show(kept).expect("kept");
    }
    let errors = j.list_errors(&ErrorFilter::default(), 10).expect("list");
    assert_eq!(
        errors.iter().map(|e| e.message).collect::<Vec<_>>(),
        [open_error]
    );

    // Even with a cutoff in the far future, open errors survive.
    j.prune_delivered(at(10_000_000)).expect("prune");
    j.show(open_error).expect("open error never pruned");
    j.show(pending).expect("undelivered never pruned");
}

/// After a crash (drop without finishing), `unfinished` lists what to resume: chains that
/// never finished and deliveries still owed, oldest first, and nothing else.
pub fn unfinished_after_crash<J: Journal>(open: &dyn Fn() -> J) {
    let (unprocessed, owed, done, errored) = {
        let j = open();
        let unprocessed = append(&j, "scheduling", "U1", 0);
        // Crashed halfway through enqueueing: the chain counts as unfinished.
        let half = append(&j, "scheduling", "U1b", 0);
        j.enqueue(half, "a").expect("enqueue");
        let owed = append(&j, "scheduling", "U2", 0);
        j.mark_processed(owed).expect("processed");
        j.enqueue(owed, "a").expect("enqueue");
        j.enqueue(owed, "b").expect("enqueue");
        j.mark_attempt(
            owed,
            "b",
            DeliveryResult::Retry {
                error: "down".to_owned(),
                next_at: at(10),
                may_have_arrived: false,
            },
        )
        .expect("retry");
        let done = append(&j, "adt", "U3", 0);
        j.mark_processed(done).expect("processed");
        j.enqueue(done, "a").expect("enqueue");
        j.mark_attempt(done, "a", DeliveryResult::Delivered)
            .expect("delivered");
        let errored = append(&j, "adt", "U4", 0);
        j.error(report(errored, ErrorKind::Timeout, "plugin:slow"))
            .expect("error");
        assert!(j.unfinished().expect("unfinished").len() >= 2);
        (unprocessed, (half, owed), done, errored)
    };
    let (half, owed) = owed;
    let j = open();
    let work = j.unfinished().expect("unfinished");
    assert_eq!(
        work,
        [
            Unfinished {
                id: unprocessed,
                interface: "scheduling".to_owned(),
                resume: Resume::Process,
            },
            Unfinished {
                id: half,
                interface: "scheduling".to_owned(),
                resume: Resume::Process,
            },
            Unfinished {
                id: owed,
                interface: "scheduling".to_owned(),
                resume: Resume::Deliver(vec!["a".to_owned(), "b".to_owned()]),
            },
        ]
    );
    let ids: Vec<MessageId> = work.iter().map(|u| u.id).collect();
    assert!(!ids.contains(&done) && !ids.contains(&errored));

    j.mark_attempt(owed, "a", DeliveryResult::Delivered)
        .expect("delivered");
    j.mark_processed(unprocessed).expect("processed");
    j.mark_processed(half).expect("processed");
    j.mark_attempt(half, "a", DeliveryResult::Delivered)
        .expect("delivered");
    assert_eq!(
        j.unfinished().expect("unfinished"),
        [Unfinished {
            id: owed,
            interface: "scheduling".to_owned(),
            resume: Resume::Deliver(vec!["b".to_owned()]),
        }]
    );
}

/// `ingest` appends and records processing together: stages, deliveries, the error and
/// the processed mark are all there, under the new id; `process` does the same for an
/// existing message.
pub fn ingest_is_one_unit<J: Journal>(open: &dyn Fn() -> J) {
    let j = open();
    let placeholder = MessageId(-1);
    let forwarded = j
        .ingest(
            inbound("scheduling", Some("I1"), at(0)),
            Processing {
                stages: vec![stage(placeholder, 0, Some(b"MSH|out"))],
                enqueue: vec!["emr".to_owned(), "archive".to_owned()],
                error: None,
                processed: true,
                requeue: false,
                order_key: None,
            },
        )
        .expect("ingest");
    let failed = j
        .ingest(
            inbound("scheduling", Some("I2"), at(1)),
            Processing {
                stages: vec![stage(placeholder, 0, None)],
                enqueue: vec![],
                error: Some(report(placeholder, ErrorKind::PluginFail, "plugin:map")),
                processed: true,
                requeue: false,
                order_key: None,
            },
        )
        .expect("ingest");
    let unprocessed = j
        .ingest(
            inbound("scheduling", Some("I1"), at(2)),
            Processing::default(),
        )
        .expect("ingest");
    assert_eq!(
        unprocessed.duplicate_of,
        Some(forwarded.id),
        "duplicates still flagged"
    );
    drop(j);

    let j = open();
    let record = j.show(forwarded.id).expect("show");
    assert!(record.processed);
    assert_eq!(record.stages.len(), 1);
    assert_eq!(record.stages[0].record.message, forwarded.id);
    assert_eq!(record.stages[0].record.edits.len(), 2);
    let mut destinations: Vec<_> = record
        .deliveries
        .iter()
        .map(|d| d.destination.as_str())
        .collect();
    destinations.sort_unstable();
    assert_eq!(destinations, ["archive", "emr"]);
    assert_eq!(j.payload(forwarded.id).expect("payload"), b"MSH|out");

    let errors = j.list_errors(&ErrorFilter::default(), 10).expect("errors");
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].message, failed.id);
    assert_eq!(errors[0].kind, ErrorKind::PluginFail);

    let mut unfinished = j.unfinished().expect("unfinished");
    for u in &mut unfinished {
        if let Resume::Deliver(d) = &mut u.resume {
            d.sort();
        }
    }
    assert_eq!(
        unfinished,
        [
            Unfinished {
                id: forwarded.id,
                interface: "scheduling".to_owned(),
                resume: Resume::Deliver(vec!["archive".to_owned(), "emr".to_owned()]),
            },
            Unfinished {
                id: unprocessed.id,
                interface: "scheduling".to_owned(),
                resume: Resume::Process,
            },
        ]
    );

    j.process(
        unprocessed.id,
        Processing {
            stages: vec![stage(placeholder, 0, Some(b"MSH|again"))],
            enqueue: vec!["emr".to_owned()],
            error: None,
            processed: true,
            requeue: false,
            order_key: None,
        },
    )
    .expect("process");
    let record = j.show(unprocessed.id).expect("show");
    assert!(record.processed);
    assert_eq!(record.deliveries.len(), 1);
    assert!(matches!(
        j.process(MessageId(999_999), Processing::default()),
        Err(Error::NotFound(_))
    ));
}

/// After an unclean stop, each lane's owed and due deliveries are flagged as possible
/// resends up to and including the `window`-th fresh one (queued at ingest, never
/// attempted or requeued); requeued ones (however soon after they arrived) and due
/// retries ahead of it are flagged without counting;
/// delivered ones, retries not yet due and the rest of the queue are not. Flagged once,
/// and the flag survives a reopen and the delivery.
pub fn possible_resends_are_each_lanes_next_sends<J: Journal>(open: &dyn Fn() -> J) {
    let j = open();
    let lab = Lanes {
        count: 2,
        key: LaneKey::MessageId,
    };
    j.set_lanes("scheduling", "lab", lab).expect("split lab");
    let queue = |name: &str, received_at: SystemTime, to: &[&str]| {
        j.ingest(
            inbound("scheduling", Some(name), received_at),
            Processing {
                enqueue: to.iter().map(|d| (*d).to_owned()).collect(),
                processed: true,
                ..Processing::default()
            },
        )
        .expect("ingest")
        .id
    };
    let now = SystemTime::now();
    // Failed, then requeued by a replay a moment after they arrived: not fresh.
    let requeued: Vec<MessageId> = (0..2)
        .map(|i| queue(&format!("Q{i}"), now, &["emr"]))
        .collect();
    for id in &requeued {
        j.mark_attempt(
            *id,
            "emr",
            DeliveryResult::Failed {
                error: "rejected (AR)".to_owned(),
                may_have_arrived: false,
            },
        )
        .expect("failed");
        j.process(
            *id,
            Processing {
                enqueue: vec!["emr".to_owned()],
                requeue: true,
                processed: true,
                ..Processing::default()
            },
        )
        .expect("requeue");
    }
    let (retry_due, delivered, retry_later) = (
        queue("R-due", now, &["emr"]),
        queue("D", now, &["emr"]),
        queue("R-later", now, &["emr"]),
    );
    let fresh: Vec<MessageId> = (0..6)
        .map(|i| queue(&format!("F{i}"), now, &["emr", "lab"]))
        .collect();
    let retry = |id, next_at| Attempt {
        id,
        destination: "emr".to_owned(),
        result: DeliveryResult::Retry {
            error: "connection refused".to_owned(),
            next_at,
            may_have_arrived: false,
        },
        error: None,
    };
    j.record_attempts(vec![
        retry(retry_due, now - Duration::from_secs(1)),
        Attempt {
            id: delivered,
            destination: "emr".to_owned(),
            result: DeliveryResult::Delivered,
            error: None,
        },
        retry(retry_later, now + Duration::from_secs(3600)),
    ])
    .expect("record attempts");

    let flagged = j.flag_possible_resends(2).expect("flag");
    // emr (one lane): the requeued ones and the due retry, uncounted, then two fresh.
    let mut want: HashSet<(MessageId, &str)> = requeued
        .iter()
        .chain([&retry_due])
        .chain(&fresh[..2])
        .map(|id| (*id, "emr"))
        .collect();
    // lab (two lanes by message id): the first two fresh ones of each lane.
    for lane in 0..2 {
        want.extend(
            fresh
                .iter()
                .filter(|id| id.0.rem_euclid(2) == lane)
                .take(2)
                .map(|id| (*id, "lab")),
        );
    }
    assert_eq!(flagged, want.len() as u64);
    assert_eq!(j.flag_possible_resends(2).expect("flag again"), 0, "once");
    drop(j);
    let j = open();
    let all = requeued
        .iter()
        .chain([&retry_due, &delivered, &retry_later])
        .chain(&fresh);
    for id in all {
        for delivery in j.show(*id).expect("show").deliveries {
            let key = (*id, delivery.destination.as_str());
            assert_eq!(delivery.possible_resend, want.contains(&key), "{key:?}");
        }
    }
    j.mark_attempt(fresh[0], "emr", DeliveryResult::Delivered)
        .expect("delivered");
    let emr = j.show(fresh[0]).expect("show").deliveries;
    assert!(emr.iter().any(|d| d.destination == "emr"
        && d.status == DeliveryStatus::Delivered
        && d.possible_resend));
}

/// Order keys are stored by `ingest` and `process` and come back with each pending
/// delivery; `set_lanes` splits a destination's queue (moving what is owed), a lane read
/// returns exactly that lane's deliveries in arrival order, leaving out `skip`, with `due`
/// applied as in `next_due`.
pub fn lanes_split_the_queue<J: Journal>(open: &dyn Fn() -> J) {
    let j = open();
    // Keys 0..8, a large key, a negative one (never written by the engine, still placed)
    // and a message with no key (lane 0).
    let keys: Vec<Option<i64>> = (0..8)
        .map(Some)
        .chain([Some(i64::MAX), Some(-3), None])
        .collect();
    // A processed message queued for `emr`, with order key `key`.
    let for_emr = |key: Option<i64>| Processing {
        enqueue: vec!["emr".to_owned()],
        processed: true,
        order_key: key,
        ..Processing::default()
    };
    let ingest = |i: usize, key: Option<i64>| {
        j.ingest(
            inbound("scheduling", Some(&format!("L{i}")), at(i as u64)),
            for_emr(key),
        )
        .expect("ingest")
        .id
    };
    // The first half is queued before the split, the rest after.
    let mut ids: Vec<MessageId> = keys[..5]
        .iter()
        .enumerate()
        .map(|(i, k)| ingest(i, *k))
        .collect();
    let pending = j.next_pending("scheduling", "emr", 20).expect("pending");
    assert!(pending.iter().all(|p| p.lane == 0), "one lane until split");
    let four = Lanes {
        count: 4,
        key: LaneKey::OrderKey,
    };
    let moved = j.set_lanes("scheduling", "emr", four).expect("set lanes");
    assert_eq!(moved, 3, "keys 1, 2 and 3 move; 0 and 4 stay in lane 0");
    ids.extend(keys[5..].iter().enumerate().map(|(i, k)| ingest(i + 5, *k)));

    let pending = j.next_pending("scheduling", "emr", 20).expect("pending");
    let got: Vec<Option<i64>> = pending.iter().map(|p| p.order_key).collect();
    assert_eq!(
        got, keys,
        "keys come back with the deliveries, in arrival order"
    );
    for p in &pending {
        assert_eq!(p.lane, four.of(p.id, p.order_key), "{}", p.id);
    }
    let read = |lane: u32, due: Option<SystemTime>, skip: &[MessageId]| -> Vec<MessageId> {
        j.next_in_lane("scheduling", "emr", lane, due, skip, 20)
            .expect("lane read")
            .iter()
            .map(|p| p.id)
            .collect()
    };
    assert_eq!(
        read(0, None, &[]),
        [ids[0], ids[4], ids[10]],
        "no key: lane 0"
    );
    assert_eq!(
        read(1, None, &[]),
        [ids[1], ids[5], ids[9]],
        "-3 is lane 1 of 4"
    );
    assert_eq!(read(2, None, &[]), [ids[2], ids[6]]);
    assert_eq!(
        read(3, None, &[]),
        [ids[3], ids[7], ids[8]],
        "i64::MAX is lane 3"
    );
    assert_eq!(read(3, None, &[ids[7], ids[0]]), [ids[3], ids[8]], "skip");
    let lane_rows = j
        .next_in_lane("scheduling", "emr", 3, None, &[], 20)
        .expect("lane read");
    assert!(
        lane_rows
            .iter()
            .all(|p| p.lane == 3 && p.order_key.is_none())
    );
    assert!(read(4, None, &[]).is_empty(), "no lane 4 of 4");
    let other = j
        .next_in_lane("elsewhere", "emr", 0, None, &[], 20)
        .expect("read");
    assert!(
        other.is_empty(),
        "another interface's destination of the same name"
    );

    // A retry not yet due is read by a plain lane read but not by a due one.
    j.record_attempts(vec![Attempt {
        id: ids[0],
        destination: "emr".to_owned(),
        result: DeliveryResult::Retry {
            error: "AE".to_owned(),
            next_at: at(10_000),
            may_have_arrived: false,
        },
        error: None,
    }])
    .expect("record");
    assert_eq!(read(0, None, &[])[0], ids[0]);
    assert_eq!(read(0, Some(at(100)), &[]), [ids[4], ids[10]]);

    // Messages without a key are found with their bytes; keys set for them stay, and a
    // later `process` without a key keeps them.
    let unkeyed = j
        .owed_without_order_key("scheduling", MessageId(0), 10)
        .expect("unkeyed");
    assert_eq!(
        unkeyed.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        [ids[10]]
    );
    assert_eq!(unkeyed[0].1, j.show(ids[10]).expect("show").inbound.raw);
    assert!(
        j.owed_without_order_key("scheduling", ids[10], 10)
            .expect("after")
            .is_empty()
    );
    j.set_order_keys(vec![(ids[10], 6)]).expect("set keys");
    j.process(ids[10], Processing::default()).expect("process");
    let key_of = |id: MessageId| {
        j.next_pending("scheduling", "emr", 20)
            .expect("pending")
            .into_iter()
            .find(|p| p.id == id)
            .and_then(|p| p.order_key)
    };
    assert_eq!(key_of(ids[10]), Some(6), "kept");
    assert_eq!(
        read(0, None, &[]),
        [ids[0], ids[4], ids[10]],
        "still lane 0 until split"
    );
    // A requeue keeps an owed delivery where it is (a worker may be sending it)...
    j.process(
        ids[10],
        Processing {
            enqueue: vec!["emr".to_owned()],
            requeue: true,
            ..Processing::default()
        },
    )
    .expect("requeue");
    assert!(read(0, None, &[]).contains(&ids[10]));
    // ...and the next split puts it in its lane: key 6 is lane 2 of 4.
    j.set_lanes("scheduling", "emr", four).expect("split again");
    assert_eq!(read(2, None, &[]), [ids[2], ids[6], ids[10]], "now key 6");

    // A split moves only what is owed, on its own interface.
    let other = j
        .ingest(inbound("elsewhere", Some("E1"), at(50)), for_emr(Some(3)))
        .expect("ingest elsewhere")
        .id;
    j.record_attempts(vec![Attempt {
        id: ids[3],
        destination: "emr".to_owned(),
        result: DeliveryResult::Delivered,
        error: None,
    }])
    .expect("deliver one");
    let lane_of = |interface: &str, id: MessageId| {
        (0..4).find(|&lane| {
            j.next_in_lane(interface, "emr", lane, None, &[], 50)
                .expect("read")
                .iter()
                .any(|p| p.id == id)
        })
    };
    assert_eq!(lane_of("elsewhere", other), Some(0), "never split: lane 0");
    j.set_lanes("scheduling", "emr", Lanes::ONE)
        .expect("one lane");
    assert_eq!(lane_of("elsewhere", other), Some(0));
    assert_eq!(
        read(0, None, &[]).len(),
        ids.len() - 1,
        "all owed in lane 0"
    );

    // Another journal on the same file that never split the queue itself (a CLI process
    // beside the engine) queues to the split the engine made: key 3 is lane 3 of 4, where
    // the engine's worker for that lane reads it, not lane 0.
    j.set_lanes("scheduling", "emr", four).expect("split");
    let beside = open();
    let ingest_beside = |control_id: &str, ms: u64| {
        beside
            .ingest(
                inbound("scheduling", Some(control_id), at(ms)),
                for_emr(Some(3)),
            )
            .expect("ingest beside")
            .id
    };
    let late = ingest_beside("LATE", 60);
    assert!(read(3, None, &[]).contains(&late), "the engine's split");
    assert!(!read(0, None, &[]).contains(&late));
    // It sees a new split as soon as it is made (a restart with other `connections`),
    // and a destination nobody split is one lane.
    j.set_lanes("scheduling", "emr", Lanes::ONE)
        .expect("one lane");
    let later = ingest_beside("LATER", 61);
    assert!(read(0, None, &[]).contains(&later), "the new split");
    let unsplit = beside
        .ingest(
            inbound("scheduling", Some("ELSEWHERE"), at(62)),
            Processing {
                enqueue: vec!["archive".to_owned()],
                order_key: Some(3),
                processed: true,
                ..Processing::default()
            },
        )
        .expect("ingest for a destination never split");
    assert_eq!(
        beside
            .next_in_lane("scheduling", "archive", 0, None, &[], 10)
            .expect("read")
            .iter()
            .map(|p| p.id)
            .collect::<Vec<_>>(),
        [unsplit.id]
    );
    let mut owed: Vec<MessageId> = ids.iter().copied().filter(|id| *id != ids[3]).collect();
    owed.extend([late, later]);

    // Two lanes by message id: every owed delivery in exactly one, none lost.
    let by_id = Lanes {
        count: 2,
        key: LaneKey::MessageId,
    };
    j.set_lanes("scheduling", "emr", by_id).expect("set lanes");
    let mut seen: Vec<MessageId> = (0..2).flat_map(|lane| read(lane, None, &[])).collect();
    for lane in 0..2 {
        assert!(
            read(lane, None, &[])
                .iter()
                .all(|id| by_id.of(*id, None) == lane)
        );
    }
    seen.sort();
    assert_eq!(seen, owed);
    // A journal beside it queues by message id too, as recorded.
    let spread: Vec<MessageId> = (0..4)
        .map(|i| ingest_beside(&format!("SPREAD{i}"), 70 + i))
        .collect();
    drop(beside);
    for id in &spread {
        let lane = by_id.of(*id, None);
        assert!(read(lane, None, &[]).contains(id), "{id} in lane {lane}");
        assert!(!read(1 - lane, None, &[]).contains(id));
    }

    // A batch's payloads come back in the order asked, each as `payload` reads it; an
    // unknown id fails on its own.
    j.process(
        ids[2],
        Processing {
            stages: vec![stage(ids[2], 0, Some(b"MSH|mapped"))],
            ..Processing::default()
        },
    )
    .expect("process");
    let ask = [ids[3], ids[2], MessageId(999_999), ids[3]];
    let got = j.payloads(&ask).expect("payloads");
    assert_eq!(got.len(), ask.len());
    for (id, payload) in ask.iter().zip(&got) {
        match (j.payload(*id), payload) {
            (Ok(one), Ok(batch)) => assert_eq!(&one, batch, "{id}"),
            (Err(Error::NotFound(_)), Err(Error::NotFound(missing))) => {
                assert_eq!(missing, id)
            }
            (one, batch) => panic!("{id}: payload {one:?} but payloads {batch:?}"),
        }
    }
    assert_eq!(got[1].as_deref().ok(), Some(&b"MSH|mapped"[..]));
    assert!(j.payloads(&[]).expect("empty").is_empty());
}

/// `ingest_detached` and `record_attempts_detached` answer through their callback, once,
/// and what they wrote is there for the next read (on any connection) by then; a failing
/// write answers with its error.
pub fn detached_writes_answer_once_durable<J: Journal>(open: &dyn Fn() -> J) {
    let j = open();
    let delivered = |id: MessageId| Attempt {
        id,
        destination: "emr".to_owned(),
        result: DeliveryResult::Delivered,
        error: None,
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let sent = tx.clone();
    j.ingest_detached(
        inbound("scheduling", Some("D1"), at(1)),
        Processing {
            enqueue: vec!["emr".to_owned()],
            processed: true,
            ..Processing::default()
        },
        Box::new(move |r| sent.send(r.map(|a| a.id)).expect("send")),
    );
    let id = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("answered")
        .expect("ingested");
    let owed: Vec<MessageId> = j
        .next_pending("scheduling", "emr", 10)
        .expect("pending")
        .iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(owed, [id]);

    let (tx, rx) = std::sync::mpsc::channel();
    let sent = tx.clone();
    j.record_attempts_detached(
        vec![delivered(id)],
        Box::new(move |r| sent.send(r).expect("send")),
    );
    rx.recv_timeout(Duration::from_secs(10))
        .expect("answered")
        .expect("recorded");
    assert!(
        j.next_pending("scheduling", "emr", 10)
            .expect("pending")
            .is_empty(),
        "delivered by the time the answer came"
    );

    // A message the journal does not have: the whole batch is refused, and said so.
    let sent = tx.clone();
    j.record_attempts_detached(
        vec![delivered(MessageId(id.0 + 1000))],
        Box::new(move |r| sent.send(r).expect("send")),
    );
    let refused = rx.recv_timeout(Duration::from_secs(10)).expect("answered");
    assert!(refused.is_err(), "{refused:?}");
    drop(tx);
    assert!(rx.recv().is_err(), "each write answers once");
}

/// `record_attempts` applies several results at once and files their errors;
/// `next_due` leaves out retries that are not due yet but keeps arrival order.
pub fn batched_attempts_and_due<J: Journal>(open: &dyn Fn() -> J) {
    let j = open();
    let ids: Vec<MessageId> = (0..4)
        .map(|i| append(&j, "scheduling", &format!("B{i}"), i))
        .collect();
    for id in &ids {
        j.process(
            *id,
            Processing {
                enqueue: vec!["emr".to_owned()],
                processed: true,
                ..Processing::default()
            },
        )
        .expect("process");
    }
    let later = at(10_000);
    j.record_attempts(vec![
        Attempt {
            id: ids[0],
            destination: "emr".to_owned(),
            result: DeliveryResult::Retry {
                error: "connection refused".to_owned(),
                next_at: later,
                may_have_arrived: false,
            },
            error: None,
        },
        Attempt {
            id: ids[1],
            destination: "emr".to_owned(),
            result: DeliveryResult::Delivered,
            error: None,
        },
        Attempt {
            id: ids[2],
            destination: "emr".to_owned(),
            result: DeliveryResult::Failed {
                error: "rejected (AR)".to_owned(),
                may_have_arrived: false,
            },
            error: Some(report(ids[2], ErrorKind::Destination, "destination:emr")),
        },
    ])
    .expect("record attempts");

    let owed: Vec<MessageId> = j
        .next_pending("scheduling", "emr", 10)
        .expect("pending")
        .iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(owed, [ids[0], ids[3]]);
    let due_now: Vec<MessageId> = j
        .next_due("scheduling", "emr", at(100), 10)
        .expect("due")
        .iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(due_now, [ids[3]], "the retry waits for its time");
    let due_later: Vec<MessageId> = j
        .next_due("scheduling", "emr", later, 10)
        .expect("due")
        .iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(due_later, [ids[0], ids[3]]);
    let errors = j.list_errors(&ErrorFilter::default(), 10).expect("errors");
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].message, ids[2]);
    assert_eq!(errors[0].kind, ErrorKind::Destination);

    // A replay requeues what was not delivered, with a fresh count; delivered stays.
    for id in [ids[1], ids[2]] {
        j.process(
            id,
            Processing {
                enqueue: vec!["emr".to_owned()],
                processed: true,
                requeue: true,
                ..Processing::default()
            },
        )
        .expect("requeue");
    }
    let owed = j.next_pending("scheduling", "emr", 10).expect("pending");
    assert_eq!(
        owed.iter().map(|p| (p.id, p.attempts)).collect::<Vec<_>>(),
        [(ids[0], 1), (ids[2], 0), (ids[3], 0)]
    );
    let depths = j.queue_depths().expect("depths");
    assert_eq!(depths.len(), 1);
    assert_eq!(
        (
            depths[0].interface.as_str(),
            depths[0].destination.as_str(),
            depths[0].lane,
            depths[0].depth
        ),
        ("scheduling", "emr", 0, 3)
    );
    assert_eq!(depths[0].oldest, Some(at(0)));
    // Split in two lanes by id, the queue is counted per lane.
    j.set_lanes(
        "scheduling",
        "emr",
        Lanes {
            count: 2,
            key: LaneKey::MessageId,
        },
    )
    .expect("split");
    let depths = j.queue_depths().expect("depths");
    let per_lane: Vec<(u32, u64)> = depths.iter().map(|d| (d.lane, d.depth)).collect();
    let want = |lane: u32| {
        owed.iter()
            .filter(|p| p.id.0.rem_euclid(2) == i64::from(lane))
            .count() as u64
    };
    let mut expected: Vec<(u32, u64)> = (0..2)
        .map(|l| (l, want(l)))
        .filter(|(_, n)| *n > 0)
        .collect();
    expected.sort();
    assert_eq!(per_lane, expected);
}

/// Audit entries come back in order, each linked to the one before by its hash, and
/// survive a reopen; an intact log verifies.
pub fn audit_log_is_a_hash_chain<J: Journal>(open: &dyn Fn() -> J) {
    let j = open();
    assert_eq!(j.verify_audit().expect("verify").entries, 0);
    let entry = |action: &str, subject: &str| AuditEntry {
        actor: "ops@clinic".to_owned(),
        action: action.to_owned(),
        subject: subject.to_owned(),
        detail: "sha256 ab12".to_owned(),
    };
    let first = j
        .audit(entry("activate", "interface:scheduling"))
        .expect("audit");
    assert_eq!(first.prev_hash, "0".repeat(64));
    assert_eq!(first.hash.len(), 64);
    let second = j
        .audit(entry("rollback", "interface:scheduling"))
        .expect("audit");
    assert_eq!(second.prev_hash, first.hash);
    assert_ne!(second.hash, first.hash);
    drop(j);

    let j = open();
    j.audit(entry("resolve", "message:7")).expect("audit");
    let log = j.audit_log(0, 10).expect("log");
    assert_eq!(log.len(), 3);
    assert_eq!(log[0], first);
    assert_eq!(log[1], second);
    assert_eq!(log[2].entry.action, "resolve");
    assert_eq!(log[2].prev_hash, second.hash);
    assert_eq!(j.audit_log(2, 10).expect("log").len(), 1, "paging by id");
    let verified = j.verify_audit().expect("verify");
    assert_eq!(verified.entries, 3);
    assert_eq!(verified.first_broken, None);
}

/// A resolve and a replay's bookkeeping are written with their audit entry, in one
/// transaction: a change that fails leaves no entry behind, and an entry is never
/// missing for a change that was made.
pub fn resolves_and_replays_are_audited_with_their_change<J: Journal>(open: &dyn Fn() -> J) {
    let j = open();
    let failed = append(&j, "scheduling", "R1", 0);
    let replayed = append(&j, "scheduling", "R2", 1);
    let closed = append(&j, "scheduling", "R3", 2);
    for id in [failed, replayed] {
        j.error(report(id, ErrorKind::PluginFail, "plugin:visit-status-map"))
            .expect("error");
    }
    let entry = |action: &str, id: MessageId| AuditEntry {
        actor: "ops@clinic".to_owned(),
        action: action.to_owned(),
        subject: format!("message:{id}"),
        detail: "note: table fixed".to_owned(),
    };
    let entries = |j: &J| j.audit_log(0, 100).expect("log").len();

    // Refused resolves write nothing.
    for (id, note) in [
        (failed, " "),
        (closed, "no error"),
        (MessageId(closed.0 + 99), "x"),
    ] {
        assert!(j.resolve_audited(id, note, entry("resolve", id)).is_err());
    }
    assert_eq!(entries(&j), 0);
    let record = j
        .resolve_audited(failed, "table fixed", entry("resolve", failed))
        .expect("resolve");
    assert_eq!(record.entry.subject, format!("message:{failed}"));
    let shown = j.show(failed).expect("show");
    assert!(shown.errors[0].resolution.is_some());
    assert_eq!(entries(&j), 1);

    // A replay: its stage written, counted on the message and its open error, the
    // error closed, audited.
    j.process_replay(
        replayed,
        self::replayed(replayed, 1),
        Some("replayed after the fix"),
        entry("replay", replayed),
    )
    .expect("replay");
    let shown = j.show(replayed).expect("show");
    assert_eq!(shown.stages.len(), 1);
    assert_eq!(shown.replays, 1);
    assert_eq!(shown.errors[0].replays, 1);
    assert!(shown.errors[0].resolution.is_some());
    // Its error closed meanwhile (or none at all) is no failure; nothing to close.
    j.process_replay(
        closed,
        self::replayed(closed, 1),
        Some("replayed"),
        entry("replay", closed),
    )
    .expect("replay without an open error");
    j.process_replay(
        replayed,
        self::replayed(replayed, 1),
        None,
        entry("replay", replayed),
    )
    .expect("replay, error left as it is");
    assert_eq!(j.show(replayed).expect("show").replays, 2);
    // A blank note closes nothing: the whole replay is refused, its stage too.
    assert!(matches!(
        j.process_replay(
            replayed,
            self::replayed(replayed, 1),
            Some(" "),
            entry("replay", replayed)
        ),
        Err(Error::NoteRequired(_))
    ));
    let shown = j.show(replayed).expect("show");
    assert_eq!((shown.replays, shown.stages.len()), (2, 2));
    // An unknown message: nothing written.
    let unknown = MessageId(closed.0 + 99);
    assert!(matches!(
        j.process_replay(
            unknown,
            self::replayed(unknown, 0),
            None,
            entry("replay", unknown)
        ),
        Err(Error::NotFound(_))
    ));
    assert_eq!(entries(&j), 4);
    let verified = j.verify_audit().expect("verify");
    assert_eq!((verified.entries, verified.first_broken), (4, None));
}

/// Shadow runs are listed newest first per interface, end once (the first reason
/// stays), and keep each message's result, the candidate's output apart; results
/// survive a reopen; an unknown run is an error.
pub fn shadow_runs_and_results<J: Journal>(open: &dyn Fn() -> J) {
    let journal = open();
    let candidate = vec![
        ("demographics-normalize".to_owned(), "a".repeat(64)),
        ("visit-status-map".to_owned(), "b".repeat(64)),
    ];
    let first = journal
        .shadow_start(ShadowRun {
            interface: "scheduling".into(),
            candidate: candidate.clone(),
            started_by: "token:deploy".into(),
        })
        .expect("start");
    let other = journal
        .shadow_start(ShadowRun {
            interface: "lab".into(),
            candidate: vec![("provider-id-map".to_owned(), "c".repeat(64))],
            started_by: "token:deploy".into(),
        })
        .expect("start");
    assert_ne!(first, other);
    let id = journal
        .append(inbound("scheduling", Some("S1"), at(1)))
        .expect("append")
        .id;
    let result = |message: MessageId, differing: Vec<String>| ShadowResult {
        run: first,
        message,
        active: OutcomeKind::Forward,
        candidate: if differing.is_empty() {
            OutcomeKind::Forward
        } else {
            OutcomeKind::Fail
        },
        differing,
        output: Some(b"MSH|^~\\&|candidate".to_vec()),
        detail: None,
    };
    journal
        .shadow_record(vec![
            result(MessageId(id.0 + 1), vec![]),
            result(id, vec!["SCH-25-1".into()]),
        ])
        .expect("record");
    // Recording a message again replaces its result.
    journal
        .shadow_record(vec![result(id, vec!["SCH-25-1".into(), "PID-5-1".into()])])
        .expect("record again");
    journal.shadow_end(first, "stopped").expect("end");
    journal.shadow_end(first, "promoted").expect("end again");
    assert!(matches!(
        journal.shadow_end(9_999, "stopped"),
        Err(Error::NoShadowRun(9_999))
    ));
    drop(journal);

    let journal = open();
    let runs = journal.shadow_runs(Some("scheduling")).expect("runs");
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].id, first);
    assert_eq!(runs[0].run.candidate, candidate);
    assert_eq!(runs[0].run.started_by, "token:deploy");
    let (_, how) = runs[0].ended.clone().expect("ended");
    assert_eq!(how, "stopped", "the first end reason stays");
    let all = journal.shadow_runs(None).expect("all runs");
    assert_eq!(
        all.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![other, first],
        "newest first"
    );
    assert!(all[0].ended.is_none());

    let results = journal
        .shadow_results(first, MessageId(0), 100)
        .expect("results");
    assert_eq!(results.len(), 2);
    let page = journal
        .shadow_results(first, MessageId(0), 1)
        .expect("first page");
    assert_eq!(page.len(), 1, "at most `limit`");
    let rest = journal
        .shadow_results(first, page[0].message, 100)
        .expect("next page");
    assert_eq!(rest.len(), 1, "after the last one seen");
    assert_ne!(rest[0].message, page[0].message);
    assert_eq!(results[0].message, id);
    assert_eq!(results[0].differing, vec!["SCH-25-1", "PID-5-1"]);
    assert_eq!(results[0].candidate, OutcomeKind::Fail);
    assert!(results[0].output.is_none(), "listed without output bytes");
    assert!(results[1].differing.is_empty());
    assert_eq!(
        journal.shadow_output(first, id).expect("output"),
        Some(b"MSH|^~\\&|candidate".to_vec())
    );
    assert_eq!(journal.shadow_output(other, id).expect("none"), None);
    assert!(
        journal
            .shadow_results(other, MessageId(0), 100)
            .expect("empty")
            .is_empty()
    );
}
