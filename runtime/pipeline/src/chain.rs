//! Running an interface's plug-in chain over one message and recording what each stage
//! did (provenance).

use std::sync::Arc;
use std::time::{Duration, Instant};

use plexus_hl7::Message;
use plexus_journal::{Edit, ErrorKind, OutcomeKind, StageRecord};
use plexus_sandbox::{Context, EditOp, FailKind, Outcome, Plugin, RunError};

/// How a message came out of its chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every stage forwarded it: deliver.
    Forwarded,
    /// A stage filtered it out on purpose: nothing to deliver.
    Filtered {
        /// The plug-in.
        plugin: String,
        /// Its reason.
        reason: String,
    },
    /// It failed: it is in the error queue.
    Failed(Failure),
}

/// Why a message failed, as filed in the error queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The error-queue kind.
    pub kind: ErrorKind,
    /// Where: `parse`, `plugin:<name>`, ...
    pub stage: String,
    /// The reason an operator reads: names, paths, kinds and limits, never the plug-in's
    /// own words (they may quote field values; the failing stage's journaled detail
    /// keeps them, for unmasked views).
    pub reason: String,
    /// The HL7 path involved, if any.
    pub path: Option<String>,
    /// The plug-in's own error kind, when a plug-in failed the message (not when it
    /// trapped). What the ACK's error code follows.
    pub plugin_kind: Option<FailKind>,
}

impl Failure {
    /// The error-queue entry for a message that does not parse.
    pub(crate) fn parse(error: &plexus_hl7::ParseError) -> Failure {
        Failure {
            kind: ErrorKind::Parse,
            stage: "parse".to_owned(),
            reason: format!("message could not be parsed: {error}"),
            path: error.location().map(|p| p.to_string()),
            plugin_kind: None,
        }
    }
}

/// Where a `fail` stage's journaled detail (`KIND[ at PATH]`) ends and the plug-in's own
/// words begin. Neither a failure kind nor a canonical path contains it.
const PLUGIN_WORDS: &str = ": ";

/// What a `plugin-fail` reason says before the failure's kind and path.
const FAILED: &str = "failed the message: ";

/// Which run of the chain each stored stage belongs to, from 1 (on arrival): a replay
/// runs the chain again from stage 0, and the journal keeps every run's stages in order.
pub fn stage_runs(stages: &[plexus_journal::StoredStage]) -> Vec<u32> {
    let mut run = 0;
    stages
        .iter()
        .map(|s| {
            if s.record.stage_index == 0 || run == 0 {
                run += 1;
            }
            run
        })
        .collect()
}

/// A journaled stage detail as views without message content show it: a `fail` stage's
/// kind and path, without the plug-in's own words (which may quote field values); a
/// `trap` stage's kind without what the plug-in wrote to stderr (a panic's message); a
/// `filter` stage's reason is all the plug-in's words, so none of it.
pub fn masked_stage_detail(outcome: OutcomeKind, detail: &str) -> &str {
    if outcome == OutcomeKind::Filter {
        return "filtered (the plug-in's reason shows unmasked)";
    }
    if !matches!(outcome, OutcomeKind::Fail | OutcomeKind::Trap) {
        return detail;
    }
    detail
        .split_once(PLUGIN_WORDS)
        .map_or(detail, |(summary, _)| summary)
}

/// An error-queue reason as views without message content show it. Reasons journaled now
/// hold no plug-in text and come back unchanged; a `plugin-fail` reason journaled by an
/// earlier version ends with the plug-in's own words (`...: KIND[ at PATH]: WORDS`), which
/// this cuts off.
pub fn masked_reason(kind: ErrorKind, reason: &str) -> &str {
    if kind == ErrorKind::Destination {
        return masked_delivery_error(reason);
    }
    if kind != ErrorKind::PluginFail {
        return reason;
    }
    let Some(start) = reason.find(FAILED).map(|i| i + FAILED.len()) else {
        // Not a shape this engine writes: show none of it.
        return "a plug-in failed the message (the reason is shown unmasked)";
    };
    match reason[start..].find(PLUGIN_WORDS) {
        Some(end) => &reason[..start + end],
        None => reason,
    }
}

/// What a destination failure's text says before the receiver's own words (its ERR and
/// MSA-3 text, which may quote field values).
pub(crate) const RECEIVER_WORDS: &str = "; the receiver said: ";

/// A delivery error (a destination's error-queue reason, or a delivery's last error) as
/// views without message content show it: without the receiver's own words.
pub fn masked_delivery_error(text: &str) -> &str {
    match text.find(RECEIVER_WORDS) {
        Some(end) => &text[..end],
        None => text,
    }
}

/// What the chain produced: stage records and the verdict.
#[derive(Debug)]
pub(crate) struct ChainRun {
    pub stages: Vec<StageRecord>,
    pub verdict: Verdict,
    /// How long each stage took, fresh instance included.
    pub took: Vec<std::time::Duration>,
}

impl ChainRun {
    /// The message as the last stage that edited it left it; `None` when no stage did.
    pub fn output(&self) -> Option<&[u8]> {
        self.stages.iter().rev().find_map(|s| s.output.as_deref())
    }
}

/// Runs `chain` over `msg`. Never fails: a trap or a plug-in's `fail` is a verdict.
pub(crate) fn run(chain: &[Arc<Plugin>], msg: Message<'static>, ctx: &Context) -> ChainRun {
    match run_stages(chain, msg, ctx, None) {
        Some(run) => run,
        None => unreachable!("a chain run without a budget is never cut"),
    }
}

/// [`run`], but the whole chain gets at most `budget` of wall time (each plug-in still at
/// most its own timeout). `None` when the chain hit the budget, with nothing logged: it
/// says nothing about the message, and a plug-in run has no effect outside its own
/// sandbox, so the caller runs the message again with [`run`], somewhere it may take its
/// full time. (A plug-in granted `reuse-instance` may then see the message twice on
/// the instance it keeps; such a plug-in promises to keep nothing between messages.)
pub(crate) fn run_within(
    chain: &[Arc<Plugin>],
    msg: Message<'static>,
    ctx: &Context,
    budget: Duration,
) -> Option<ChainRun> {
    run_stages(chain, msg, ctx, Some(budget))
}

fn run_stages(
    chain: &[Arc<Plugin>],
    mut msg: Message<'static>,
    ctx: &Context,
    budget: Option<Duration>,
) -> Option<ChainRun> {
    let chain_started = Instant::now();
    let mut stages = Vec::with_capacity(chain.len());
    let mut took = Vec::with_capacity(chain.len());
    for (index, plugin) in (0_u32..).zip(chain) {
        let mut record = StageRecord {
            message: plexus_journal::MessageId(0),
            stage_index: index,
            plugin: plugin.name().to_owned(),
            plugin_sha256: plugin.sha256().to_owned(),
            outcome: OutcomeKind::Forward,
            detail: None,
            output: None,
            edits: Vec::new(),
        };
        let started = Instant::now();
        let ran = match budget {
            None => plugin.run(msg, ctx),
            Some(budget) => {
                let left = budget.saturating_sub(chain_started.elapsed());
                plugin.run_within(msg, ctx, left.max(Duration::from_millis(1)))
            }
        };
        took.push(started.elapsed());
        let run = match ran {
            Ok(run) => run,
            // The budget's deadline, not the plug-in's own timeout.
            Err(RunError::Timeout { timeout, .. })
                if budget.is_some() && timeout < plugin.timeout() =>
            {
                return None;
            }
            Err(err) => {
                let kind = match &err {
                    RunError::Timeout { .. } => ErrorKind::Timeout,
                    RunError::MemoryLimit { .. } => ErrorKind::OutOfMemory,
                    _ => ErrorKind::Trap,
                };
                tracing::warn!(
                    interface = %ctx.interface,
                    plugin = plugin.name(),
                    kind = err.kind(),
                    "plug-in did not finish: {err}"
                );
                record.outcome = OutcomeKind::Trap;
                // A panic's message, for whoever may see content (`errors show
                // --unmasked`); masked views show the kind only.
                record.detail = Some(match &err {
                    RunError::Trap { stderr, .. } if !stderr.is_empty() => {
                        format!("{}{PLUGIN_WORDS}{stderr}", err.kind())
                    }
                    _ => err.kind().to_owned(),
                });
                stages.push(record);
                return Some(ChainRun {
                    stages,
                    took,
                    verdict: Verdict::Failed(Failure {
                        kind,
                        stage: format!("plugin:{}", plugin.name()),
                        reason: err.to_string(),
                        path: None,
                        plugin_kind: None,
                    }),
                });
            }
        };
        for line in &run.logs {
            // Plug-in log lines may quote patient data: debug level only.
            tracing::debug!(plugin = plugin.name(), level = ?line.level, "{}", line.line);
        }
        if run.logs_dropped > 0 {
            // Beside the lines it concerns, at their level.
            tracing::debug!(
                plugin = plugin.name(),
                dropped = run.logs_dropped,
                "plug-in log lines dropped over the log caps"
            );
        }
        if !run.edits.is_empty() {
            record.output = Some(run.message.as_bytes().to_vec());
        }
        record.edits = run
            .edits
            .into_iter()
            .map(|e| Edit {
                path: match e.op {
                    EditOp::Set => e.path,
                    EditOp::Remove => format!("remove {}", e.path),
                    EditOp::InsertSegment => format!("insert {}", e.path),
                },
                old: e.old,
                new: e.new,
            })
            .collect();
        match run.outcome {
            Outcome::Forward => {
                stages.push(record);
                msg = run.message;
            }
            Outcome::Filter(reason) => {
                record.outcome = OutcomeKind::Filter;
                record.detail = Some(reason.clone());
                stages.push(record);
                return Some(ChainRun {
                    stages,
                    took,
                    verdict: Verdict::Filtered {
                        plugin: plugin.name().to_owned(),
                        reason,
                    },
                });
            }
            Outcome::Fail(failure) => {
                let at = failure
                    .path
                    .as_deref()
                    .map(|p| format!(" at {p}"))
                    .unwrap_or_default();
                let summary = format!("{}{at}", failure.kind);
                record.outcome = OutcomeKind::Fail;
                // The plug-in's words may quote field values (on purpose: the unmapped
                // code is what the operator fixes), so they go only where message content
                // goes: the stage's journaled detail, shown by unmasked views.
                record.detail = Some(if failure.detail.is_empty() {
                    summary.clone()
                } else {
                    format!("{summary}{PLUGIN_WORDS}{}", failure.detail)
                });
                stages.push(record);
                return Some(ChainRun {
                    stages,
                    took,
                    verdict: Verdict::Failed(Failure {
                        kind: ErrorKind::PluginFail,
                        stage: format!("plugin:{}", plugin.name()),
                        reason: format!(
                            "plug-in {} ({}) {FAILED}{summary}",
                            plugin.name(),
                            plexus_sandbox::inspect::short(plugin.sha256()),
                        ),
                        path: failure.path,
                        plugin_kind: Some(failure.kind),
                    }),
                });
            }
        }
    }
    Some(ChainRun {
        stages,
        took,
        verdict: Verdict::Forwarded,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_are_numbered_by_run() {
        let stage = |index| plexus_journal::StoredStage {
            record: plexus_journal::StageRecord {
                message: plexus_journal::MessageId(1),
                stage_index: index,
                plugin: "p".to_owned(),
                plugin_sha256: String::new(),
                outcome: OutcomeKind::Forward,
                detail: None,
                output: None,
                edits: Vec::new(),
            },
            recorded_at: std::time::SystemTime::UNIX_EPOCH,
        };
        let stages: Vec<_> = [0, 1, 0, 1, 0].into_iter().map(stage).collect();
        assert_eq!(stage_runs(&stages), [1, 1, 2, 2, 3]);
        assert!(stage_runs(&[]).is_empty());
    }

    #[test]
    fn masked_views_drop_the_plug_ins_words() {
        let detail = "missing-mapping at SCH-25-1: SCH-25-1 value `Teleported` has no entry";
        assert_eq!(
            masked_stage_detail(OutcomeKind::Fail, detail),
            "missing-mapping at SCH-25-1"
        );
        assert_eq!(
            masked_stage_detail(OutcomeKind::Fail, "rejected"),
            "rejected"
        );
        assert_eq!(masked_stage_detail(OutcomeKind::Trap, "timeout"), "timeout");
        assert_eq!(
            masked_stage_detail(OutcomeKind::Trap, "trap: panicked at DOE^JANE"),
            "trap"
        );
        assert!(!masked_stage_detail(OutcomeKind::Filter, "test patient DOE^JANE").contains("DOE"));

        // As an earlier version journaled it, and as this one does.
        let old = "plug-in visit-status-map (3f2a9c1b0d4e) failed the message: \
                   missing-mapping at SCH-25-1: SCH-25-1 value `Teleported` has no entry";
        let now = "plug-in visit-status-map (3f2a9c1b0d4e) failed the message: \
                   missing-mapping at SCH-25-1";
        assert_eq!(masked_reason(ErrorKind::PluginFail, old), now);
        assert_eq!(masked_reason(ErrorKind::PluginFail, now), now);
        assert!(!masked_reason(ErrorKind::PluginFail, "value `Teleported`").contains("Teleported"));
        let parse = "message could not be parsed: segment 2: bad: name";
        assert_eq!(masked_reason(ErrorKind::Parse, parse), parse);

        // A receiver's own words about a rejection are content too.
        let refused = "127.0.0.1:2576 rejected message P1 (AR)";
        let full = format!("{refused}{RECEIVER_WORDS}207 Application error; patient DOE not found");
        assert_eq!(masked_reason(ErrorKind::Destination, &full), refused);
        assert_eq!(masked_delivery_error(&full), refused);
        assert_eq!(masked_delivery_error(refused), refused);
    }
}
