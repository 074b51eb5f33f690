//! The one way a message enters the engine, whatever its source: parse, run the chain,
//! and commit the message with everything the chain produced in one journal transaction.
//! Only after that commit may the source acknowledge it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use plexus_hl7::Message;
use plexus_hl7::ack::{self, AckError, ErrorCode, Status};
use plexus_journal::{ErrorKind, ErrorReport, Inbound, MessageId, Processing, SourceKind};
use plexus_sandbox::{Context, FailKind};

use crate::chain::{self, Failure, Verdict};
use crate::engine::{Iface, Shared};
use crate::shadow;

/// What became of an inbound message.
#[derive(Debug)]
pub(crate) enum Accepted {
    /// Journaled and run through the chain.
    Processed {
        id: MessageId,
        duplicate_of: Option<MessageId>,
        verdict: Verdict,
    },
    /// Journaled and put in the error queue: it does not parse.
    Unparseable {
        id: MessageId,
        error: plexus_hl7::ParseError,
    },
    /// Journaled and put in the error queue without running the chain: it parses but
    /// cannot be handled (no usable MSH-10). Answered AR/CR.
    Refused { id: MessageId, failure: Failure },
}

/// Why a message that parses is refused at intake, if it is.
///
/// MSH-10 is required: without a usable one the sender cannot match the answer to the
/// message (it is echoed in MSA-2 only when it holds no control characters and at most
/// 512 bytes), and an MLLP destination could never be sent it. Refusing at once, AR and
/// into the error queue, beats an AA now and a delivery that can only fail later.
/// What makes an MSH-10 unusable as the id a sender matches its answer by, if anything.
fn control_id_problem(id: Option<&str>) -> Option<&'static str> {
    match id {
        None => Some("is empty"),
        Some(id) if id.trim().is_empty() => Some("is blank"),
        // HL7's explicit null: every such message would share one id.
        Some(id) if id.trim() == "\"\"" => Some("is the HL7 null \"\""),
        Some(id) if id.len() > 512 => Some("is longer than 512 bytes"),
        Some(id) if id.chars().any(char::is_control) => Some("holds control characters"),
        Some(_) => None,
    }
}

fn intake_refusal(msg: &Message<'_>) -> Option<Failure> {
    let code = msg.get("MSH-9-1").ok().flatten();
    if code
        .as_deref()
        .is_none_or(|c| c.trim().is_empty() || c.trim() == "\"\"")
    {
        // No message type: no receiver can tell what it is, and no plug-in or route can
        // act on it.
        return Some(Failure {
            kind: ErrorKind::Parse,
            stage: INTAKE.to_owned(),
            reason: "MSH-9-1 (the message code of the message type) is empty: no receiver \
                     can tell what the message is; have the sender send it again with a \
                     message type such as ADT^A01"
                .to_owned(),
            path: Some("MSH-9-1".to_owned()),
            plugin_kind: None,
        });
    }
    let problem = control_id_problem(msg.control_id().as_deref())?;
    Some(Failure {
        kind: ErrorKind::Parse,
        stage: INTAKE.to_owned(),
        reason: format!(
            "MSH-10 (message control id) {problem}: the sender could not match an answer to \
             the message, and it could not be sent on; have the sender send it again with a \
             control id"
        ),
        path: Some("MSH-10".to_owned()),
        plugin_kind: None,
    })
}

/// A message that is itself an acknowledgement (MSH-9 `ACK`): journaled, never answered
/// (that would start an endless exchange) and never forwarded (no receiver acknowledges
/// an ACK, so it would stall an MLLP destination's queue).
fn is_acknowledgement(msg: &Message<'_>) -> bool {
    msg.get("MSH-9-1")
        .ok()
        .flatten()
        .is_some_and(|code| code.trim().eq_ignore_ascii_case("ACK"))
}

/// The verdict for a message that [`is_acknowledgement`].
fn acknowledgement_filtered() -> Verdict {
    Verdict::Filtered {
        plugin: INTAKE.to_owned(),
        reason: ACK_FILTERED.to_owned(),
    }
}

/// The stage name intake's own verdicts carry.
const INTAKE: &str = "intake";

/// The stage of the error filed for a message too large to keep: only its first segment
/// is journaled, so it cannot be replayed (the sender must send it again).
pub(crate) const NOT_KEPT_STAGE: &str = "receive";

/// Files a message too large to keep in the error queue: its first segment `head` (under
/// the MSH-10 it holds, so the operator finds it by the id its sender knows) and why.
/// Counted as received and errored. `Err` when the journal would not take it.
pub(crate) async fn not_kept(
    shared: &Arc<Shared>,
    iface: &Arc<Iface>,
    source_kind: SourceKind,
    peer: String,
    head: &[u8],
    reason: String,
) -> Result<MessageId, NotAccepted> {
    let inbound = Inbound {
        interface: iface.name.clone(),
        source_kind,
        source_peer: Some(peer),
        received_at: SystemTime::now(),
        control_id: ack::recovered_control_id(head),
        message_type: ack::recovered_message_type(head),
        raw: head.to_vec(),
    };
    let processing = Processing {
        error: Some(ErrorReport {
            message: MessageId(0),
            stage: NOT_KEPT_STAGE.to_owned(),
            kind: ErrorKind::Parse,
            reason,
            path: None,
        }),
        processed: true,
        ..Processing::default()
    };
    let journal = shared.journal.clone();
    let stored = tokio::task::spawn_blocking(move || journal.ingest(inbound, processing))
        .await
        .map_err(|e| NotAccepted::Internal(format!("journaling the refused message: {e}")))?;
    iface.metrics.received();
    iface.metrics.errored(ErrorKind::Parse);
    Ok(stored?.id)
}

/// Why intake filters an acknowledgement.
const ACK_FILTERED: &str = "an acknowledgement received on a source is journaled, not forwarded";

/// What intake decides without the chain, for a message read back from the journal
/// (replay, resume): filtered when it is an ACK, failed when it has no usable MSH-10.
pub(crate) fn intake_verdict(msg: &Message<'_>) -> Option<Verdict> {
    if is_acknowledgement(msg) {
        return Some(acknowledgement_filtered());
    }
    intake_refusal(msg).map(Verdict::Failed)
}

/// What the processing closure hands back besides the journal writes.
enum Outcome {
    Ran(Verdict),
    Unparseable(plexus_hl7::ParseError),
    Refused(Failure),
}

/// Why a message could not be accepted. The source must not acknowledge it as accepted.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NotAccepted {
    #[error("the journal could not store the message: {0}")]
    Journal(#[from] plexus_journal::Error),
    #[error("internal error while processing the message: {0}")]
    Internal(String),
}

/// The longest a chain runs on an async worker before it is cut and run again on a
/// thread allowed to block; the same as what counts as a slow chain.
const INLINE_BUDGET: std::time::Duration = crate::engine::SLOW_CHAIN;

/// Where a message's chain runs; see `accept`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
    Inline,
    BlockInPlace,
    BlockingPool,
}

/// Journals and processes one inbound message.
pub(crate) async fn accept(
    shared: &Arc<Shared>,
    iface: &Arc<Iface>,
    source_kind: SourceKind,
    peer: Option<String>,
    raw: Bytes,
) -> Result<Accepted, NotAccepted> {
    let received_at = SystemTime::now();
    iface.metrics.received();
    // Bounds the plug-in work in flight to the sandbox's capacity; journal waits are
    // outside it so that group commit still sees every connection's message.
    // The interface's share first: a slow interface queues on its own, not in the line
    // every interface shares.
    let closed = |_| NotAccepted::Internal("engine is shutting down".into());
    let share = iface
        .chain_share
        .clone()
        .acquire_owned()
        .await
        .map_err(closed)?;
    let permit = (
        shared
            .chain_permits
            .clone()
            .acquire_owned()
            .await
            .map_err(closed)?,
        share,
    );
    let task_shared = shared.clone();
    let task_iface = iface.clone();
    // The journal answers through a oneshot once the group commit is durable, so no
    // thread waits for the fsync. Where the chain runs is chosen per message:
    // * right here, on the async worker, within `INLINE_BUDGET`: a mapping takes tens
    //   of microseconds, and a hop to another thread costs more than that (a hop to the
    //   blocking pool cost 40% of `plexus bench`, `block_in_place` about 20%). A chain
    //   that runs past the budget is cut and run again in full under `block_in_place`,
    //   so a looping plug-in holds an async worker for at most the budget;
    // * under `block_in_place` when a plug-in in the chain imports WASI: its blocking
    //   host calls (a `std` plug-in printing) must run on a thread allowed to block;
    // * on the blocking pool when the interface's chain was slow recently (it stays
    //   there for a cool-down), or on a current-thread runtime.
    let multi_thread = tokio::runtime::Handle::current().runtime_flavor()
        == tokio::runtime::RuntimeFlavor::MultiThread;
    // One load per message: every stage runs on the same chain version.
    let chain = iface.chain.load_full();
    let placement = if iface.chain_is_slow() || !multi_thread {
        Placement::BlockingPool
    } else if chain.plugins.iter().any(|p| p.uses_wasi()) {
        Placement::BlockInPlace
    } else {
        Placement::Inline
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    let raw_for_log = raw.clone();
    let work = move || {
        let shared = task_shared;
        let iface = task_iface;
        let mut inbound = Inbound {
            interface: iface.name.clone(),
            source_kind,
            source_peer: peer,
            received_at,
            control_id: None,
            message_type: None,
            raw: raw.to_vec(),
        };
        let mut shadow_job = None;
        let parsed = iface.parse(raw.to_vec());
        let refusal = parsed.as_ref().ok().and_then(|msg| intake_refusal(msg));
        let (processing, outcome) = match (parsed, refusal) {
            (Err(error), _) => {
                drop(permit);
                // The id the NAK echoes, so the operator can find the message by it.
                inbound.control_id = plexus_hl7::ack::recovered_control_id(&raw);
                inbound.message_type = plexus_hl7::ack::recovered_message_type(&raw);
                let verdict = Verdict::Failed(Failure::parse(&error));
                (
                    processing_for(&iface, Vec::new(), &verdict),
                    Outcome::Unparseable(error),
                )
            }
            (Ok(msg), _) if is_acknowledgement(&msg) => {
                drop(permit);
                inbound.control_id = msg.control_id().map(|c| c.into_owned());
                inbound.message_type = message_type(&msg);
                let verdict = acknowledgement_filtered();
                (
                    processing_for(&iface, Vec::new(), &verdict),
                    Outcome::Ran(verdict),
                )
            }
            (Ok(msg), Some(failure)) => {
                drop(permit);
                // Kept when usable (the refusal may be about MSH-9), so the operator can
                // find the message by the id the sender knows.
                inbound.control_id = msg
                    .control_id()
                    .filter(|id| control_id_problem(Some(id)).is_none())
                    .map(|c| c.into_owned());
                inbound.message_type = message_type(&msg);
                let verdict = Verdict::Failed(failure.clone());
                (
                    processing_for(&iface, Vec::new(), &verdict),
                    Outcome::Refused(failure),
                )
            }
            (Ok(msg), None) => {
                inbound.control_id = msg.control_id().map(|c| c.into_owned());
                inbound.message_type = message_type(&msg);
                let order_key = iface.order_key(&msg);
                let ctx = Context {
                    interface: iface.name.clone(),
                    site: shared.site.clone(),
                    message_id: inbound.control_id.clone().unwrap_or_default(),
                    received_at_ms: millis(received_at),
                };
                let mut started = std::time::Instant::now();
                let mut rerun = false;
                let run = match placement {
                    Placement::Inline => {
                        match chain::run_within(&chain.plugins, msg, &ctx, INLINE_BUDGET) {
                            Some(run) => run,
                            // Cut: again, in full, on a thread allowed to block. The
                            // message parsed a moment ago from the same bytes.
                            None => {
                                (started, rerun) = (std::time::Instant::now(), true);
                                match iface.parse(raw.to_vec()) {
                                    Ok(msg) => tokio::task::block_in_place(|| {
                                        chain::run(&chain.plugins, msg, &ctx)
                                    }),
                                    Err(error) => chain::ChainRun {
                                        stages: Vec::new(),
                                        took: Vec::new(),
                                        verdict: Verdict::Failed(Failure::parse(&error)),
                                    },
                                }
                            }
                        }
                    }
                    _ => chain::run(&chain.plugins, msg, &ctx),
                };
                iface.note_chain_time(started.elapsed(), rerun);
                iface.metrics.stages(&run.stages, &run.took);
                drop(permit);
                // A candidate running in the shadow gets the message once it is journaled.
                if let Some(shadow) = iface.shadow.load_full() {
                    let output = run.output().unwrap_or(&raw);
                    // Nothing is copied for a shadow that is too far behind.
                    if shadow.reserve(raw.len() + output.len()) {
                        let active = shadow::outcome_kind(&run.verdict);
                        shadow_job = Some((shadow, active, output.to_vec(), ctx, raw.clone()));
                    }
                }
                let mut processing = processing_for(&iface, run.stages, &run.verdict);
                processing.order_key = order_key;
                (processing, Outcome::Ran(run.verdict))
            }
        };
        let charset = iface.unstated_charset();
        let order_key = processing.order_key;
        // What delivery will send, as the journal would return it: the last stage's
        // output, or the message as received; `Some(None)` when it is too large for a
        // feed, whose lanes must then read it from the journal.
        let fed = if iface.feeds_deliveries() && !processing.enqueue.is_empty() {
            let bytes = processing
                .stages
                .iter()
                .rev()
                .find_map(|s| s.output.as_deref())
                .unwrap_or(&inbound.raw);
            Some((bytes.len() <= crate::feed::MAX_BYTES).then(|| bytes.to_vec()))
        } else {
            None
        };
        shared.journal.ingest_detached(
            inbound,
            processing,
            Box::new(move |appended| {
                // Runs once the commit is durable, in commit order: the lanes' feeds get
                // the message before anything else can see it.
                if let (Some(payload), Ok(appended)) = (fed, &appended) {
                    iface.feed_lanes(appended.id, order_key, received_at, payload);
                }
                if let Some((shadow, active, active_output, ctx, raw)) = shadow_job {
                    match &appended {
                        Ok(appended) => shadow.offer(shadow::Job {
                            message: appended.id,
                            raw: raw.to_vec(),
                            ctx,
                            active,
                            active_output,
                            charset,
                        }),
                        Err(_) => shadow.release(raw.len() + active_output.len()),
                    }
                }
                let accepted = appended.map(|appended| match outcome {
                    Outcome::Ran(verdict) => Accepted::Processed {
                        id: appended.id,
                        duplicate_of: appended.duplicate_of,
                        verdict,
                    },
                    Outcome::Unparseable(error) => Accepted::Unparseable {
                        id: appended.id,
                        error,
                    },
                    Outcome::Refused(failure) => Accepted::Refused {
                        id: appended.id,
                        failure,
                    },
                });
                // The source may have gone away (connection closed); nothing to do then.
                let _ = reply.send((accepted, order_key));
            }),
        );
    };
    match placement {
        Placement::BlockingPool => drop(tokio::task::spawn_blocking(work)),
        // `block_in_place` tells tokio this worker is busy (its other tasks move on), and
        // lets WASI's blocking host calls (a plug-in writing to stdout) enter the runtime.
        Placement::BlockInPlace => tokio::task::block_in_place(work),
        Placement::Inline => work(),
    }
    let (accepted, order_key) = match answer.await {
        Ok((result, order_key)) => (result.map_err(NotAccepted::from), order_key),
        // The task panicked before answering.
        Err(_) => (
            Err(NotAccepted::Internal(
                "processing the message failed unexpectedly".to_owned(),
            )),
            None,
        ),
    };
    if let Ok(Accepted::Processed {
        id,
        verdict: Verdict::Forwarded,
        ..
    }) = &accepted
    {
        iface.wake_lanes(*id, order_key);
    }
    // Whether the journal takes commits, for `/readyz`. The load first: the value is
    // shared by every connection, and a store on each message would bounce its line.
    match &accepted {
        Err(NotAccepted::Journal(_)) => shared
            .journal_failed_at
            .store(millis(SystemTime::now()).max(1), Ordering::Relaxed),
        Ok(_) if shared.journal_failed_at.load(Ordering::Relaxed) != 0 => {
            shared.journal_failed_at.store(0, Ordering::Relaxed)
        }
        _ => {}
    }
    match &accepted {
        Ok(Accepted::Processed {
            verdict: Verdict::Filtered { .. },
            ..
        }) => iface.metrics.filtered(),
        Ok(Accepted::Processed {
            verdict: Verdict::Failed(f),
            ..
        }) => iface.metrics.errored(f.kind),
        Ok(Accepted::Unparseable { .. } | Accepted::Refused { .. }) => {
            iface.metrics.errored(ErrorKind::Parse)
        }
        _ => {}
    }
    log_accepted(iface, &accepted, &raw_for_log);
    accepted
}

/// The journal writes for a chain's result.
pub(crate) fn processing_for(
    iface: &Iface,
    stages: Vec<plexus_journal::StageRecord>,
    verdict: &Verdict,
) -> Processing {
    let mut processing = Processing {
        stages,
        processed: true,
        ..Processing::default()
    };
    match verdict {
        Verdict::Forwarded => {
            processing.enqueue = iface
                .config
                .destinations
                .iter()
                .map(|d| d.name.as_str().to_owned())
                .collect();
        }
        Verdict::Filtered { .. } => {}
        Verdict::Failed(failure) => processing.error = Some(report(failure)),
    }
    processing
}

fn report(failure: &Failure) -> ErrorReport {
    ErrorReport {
        message: MessageId(0),
        stage: failure.stage.clone(),
        kind: failure.kind,
        reason: failure.reason.clone(),
        path: failure.path.clone(),
    }
}

fn log_accepted(iface: &Iface, accepted: &Result<Accepted, NotAccepted>, raw: &[u8]) {
    match accepted {
        Ok(Accepted::Processed {
            id,
            duplicate_of,
            verdict,
        }) => match verdict {
            Verdict::Forwarded => {
                tracing::debug!(interface = %iface.name, %id, ?duplicate_of, "message accepted")
            }
            // An ACK arriving on a source usually means a sender that mixes up its
            // connections: worth an operator's notice.
            Verdict::Filtered { plugin, reason } if plugin == INTAKE && reason == ACK_FILTERED => {
                tracing::info!(
                interface = %iface.name,
                %id,
                    "an acknowledgement (MSH-9 ACK) arrived on this source: journaled, not answered or forwarded"
                )
            }
            Verdict::Filtered { plugin, .. } => {
                tracing::debug!(interface = %iface.name, %id, plugin, "message filtered")
            }
            // The masked reason: for a plug-in's failure, its name, version digest, error
            // kind and path, without the plug-in's own words (they may quote the message).
            Verdict::Failed(f) => tracing::warn!(
                interface = %iface.name,
                %id,
                stage = %f.stage,
                kind = %f.kind,
                path = f.path.as_deref().unwrap_or(""),
                "message held in the error queue: {}",
                crate::chain::masked_reason(f.kind, &f.reason)
            ),
        },
        Ok(Accepted::Unparseable { id, error }) => tracing::warn!(
            interface = %iface.name,
            %id,
            "message held in the error queue: not parseable: {error}"
        ),
        Ok(Accepted::Refused { id, failure }) => tracing::warn!(
            interface = %iface.name,
            %id,
            "message held in the error queue: refused: {}",
            failure.reason
        ),
        Err(err) => {
            // MSH-10 (not patient data) tells the operator which message the sender must
            // send again.
            let control_id = iface.parse_borrowed(raw).ok().and_then(|m| {
                m.control_id()
                    .map(|c| c.chars().take(64).collect::<String>())
            });
            tracing::error!(
                interface = %iface.name,
                control_id = control_id.as_deref().unwrap_or("(none)"),
                "message NOT accepted: {err}"
            );
        }
    }
}

/// MSH-9 as `TYPE^TRIGGER` (components 1 and 2 only).
fn message_type(msg: &Message<'_>) -> Option<String> {
    let code = msg.get("MSH-9-1").ok().flatten()?;
    match msg.get("MSH-9-2").ok().flatten() {
        Some(trigger) => Some(format!("{code}^{trigger}")),
        None => Some(code.into_owned()),
    }
}

pub(crate) fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The status and ERR content an acknowledgement of `accepted` carries.
pub(crate) fn ack_status(accepted: &Result<Accepted, NotAccepted>) -> (Status, Option<AckError>) {
    match accepted {
        Ok(Accepted::Processed { verdict, id, .. }) => match verdict {
            Verdict::Forwarded | Verdict::Filtered { .. } => (Status::Accepted, None),
            Verdict::Failed(failure) => {
                let code = match failure.plugin_kind {
                    Some(FailKind::MissingMapping) => ErrorCode::TableValueNotFound,
                    Some(FailKind::InvalidInput) => ErrorCode::DataType,
                    _ => ErrorCode::InternalError,
                };
                let mut err = AckError::new(
                    code,
                    format!(
                        "held in the error queue as message {id}: {} failed ({})",
                        failure.stage, failure.kind
                    ),
                );
                if let Some(path) = failure.path.as_deref().and_then(|p| p.parse().ok()) {
                    err = err.at(path);
                }
                (Status::Error, Some(err))
            }
        },
        Ok(Accepted::Unparseable { id, error }) => {
            let mut err = AckError::new(
                error.ack_code(),
                format!("message could not be parsed (held as message {id}): {error}"),
            );
            err.location = error.location();
            (Status::Rejected, Some(err))
        }
        Ok(Accepted::Refused { id, failure }) => {
            let mut err = AckError::new(
                ErrorCode::RequiredFieldMissing,
                format!(
                    "held in the error queue as message {id}: {}",
                    failure.reason
                ),
            );
            if let Some(path) = failure.path.as_deref().and_then(|p| p.parse().ok()) {
                err = err.at(path);
            }
            (Status::Rejected, Some(err))
        }
        Err(_) => (
            Status::Rejected,
            Some(AckError::new(
                ErrorCode::InternalError,
                "the engine could not store the message and did not accept it; send it again",
            )),
        ),
    }
}

/// Builds the acknowledgement for `raw` in the interface's ACK mode, and counts it with
/// its latency (`started`: when the message arrived). `None` when none is owed (the
/// sender asked for none, or the message is itself an ACK).
pub(crate) fn acknowledgement(
    shared: &Shared,
    iface: &Iface,
    mode: plexus_config::AckMode,
    raw: &[u8],
    accepted: &Result<Accepted, NotAccepted>,
    started: std::time::Instant,
) -> Option<Bytes> {
    let (status, error) = ack_status(accepted);
    let (control_id, ts) = shared.ack_ids.next();
    // The ACK echoes header fields only. A message that parsed at intake is read again
    // up to the end of its MSH segment, not whole (a second full parse was 1% of the
    // CPU under load); anything else is read whole, as its answer depends on whether it
    // parses.
    let parsed = matches!(
        accepted,
        Ok(Accepted::Processed { .. } | Accepted::Refused { .. })
    );
    let head = if parsed {
        plexus_hl7::header_line(raw)
    } else {
        raw
    };
    let Ok(msg) = iface.parse_borrowed(head) else {
        let error = error.unwrap_or_else(|| AckError::new(ErrorCode::InternalError, "unparseable"));
        iface
            .metrics
            .acked(Some(ack::unparseable_code(raw)), started.elapsed());
        return Some(Bytes::from(ack::reject_unparseable(
            raw,
            &error,
            &control_id,
            &ts,
        )));
    };
    if is_acknowledgement(&msg) {
        iface.metrics.acked(None, started.elapsed());
        return None;
    }
    let ack_mode = match mode {
        plexus_config::AckMode::Auto => ack::AckMode::of(&msg),
        plexus_config::AckMode::Original => ack::AckMode::Original,
        plexus_config::AckMode::Enhanced => ack::AckMode::Enhanced {
            accept: ack::Condition::Always,
            application: ack::Condition::Always,
        },
    };
    let code = match (accepted, ack_mode) {
        // Not stored: AR in original mode (the receiver could not take it); CE in
        // enhanced mode (commit error: send it again).
        (Err(_), ack::AckMode::Original) => ack::AckCode::AR,
        (Err(_), ack::AckMode::Enhanced { .. }) => ack::AckCode::CE,
        (Ok(_), _) => ack_mode.code(status),
    };
    let bytes = match (mode, accepted) {
        // Only a stored message follows MSH-15: a sender that wanted no answer would take
        // one that was not stored as delivered.
        (plexus_config::AckMode::Auto, Ok(_)) => {
            ack::acknowledge(&msg, status, error.as_ref(), &control_id, &ts)
        }
        _ => Some(ack::build(&msg, code, error.as_ref(), &control_id, &ts)),
    };
    iface
        .metrics
        .acked(bytes.as_ref().map(|_| code), started.elapsed());
    bytes.map(Bytes::from)
}

#[cfg(test)]
mod tests {
    use super::control_id_problem;

    #[test]
    fn unusable_control_ids() {
        for (id, problem) in [
            (None, "is empty"),
            (Some("  "), "is blank"),
            (Some("\"\""), "is the HL7 null \"\""),
            (Some("A\u{7}"), "holds control characters"),
        ] {
            assert_eq!(control_id_problem(id), Some(problem), "{id:?}");
        }
        assert_eq!(
            control_id_problem(Some(&"x".repeat(513))),
            Some("is longer than 512 bytes")
        );
        // Longer than HL7's 199 but echoed whole, and matched whole by the MLLP sender.
        assert_eq!(control_id_problem(Some(&"L".repeat(300))), None);
        assert_eq!(control_id_problem(Some("MSG00001")), None);
    }
}
