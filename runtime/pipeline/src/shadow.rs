//! Shadow runs: a candidate chain runs beside an interface's active chain on live
//! traffic. Its results are journaled (`shadow_results`) and never delivered, so an
//! integration engineer sees what a new mapping would change before it goes live, then
//! promotes it (through the activation gate) or stops it.
//!
//! The candidate never slows the live path: after the message is journaled, ingest hands
//! it to the run's worker thread through a bounded queue and moves on. When the queue is
//! full the message is skipped for the shadow (and counted), never waited for.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};

use plexus_hl7::{Message, Segment};
use plexus_journal::{ErrorKind, Journal, MessageId, OutcomeKind, ShadowResult, ShadowRunRecord};
use plexus_sandbox::{Context, Plugin};
use serde::Serialize;

use crate::chain::{self, Verdict};
use crate::error::OpError;

/// Messages waiting for the shadow worker, at most.
const QUEUE: usize = 1024;
/// Bytes (inbound plus active output) waiting for the shadow worker, at most: a burst of
/// large messages is skipped for the shadow rather than held in memory.
const QUEUE_BYTES: usize = 64 << 20;
/// Results written per journal commit, at most, and their output bytes.
const BATCH: usize = 256;
const BATCH_BYTES: usize = 16 << 20;

/// A live shadow run on one interface.
pub(crate) struct Shadow {
    pub run: i64,
    pub candidate: Vec<(String, String)>,
    tx: SyncSender<Job>,
    pub counters: Arc<Counters>,
}

/// What the run has done since it started (or since the engine restarted).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub compared: AtomicU64,
    pub skipped: AtomicU64,
    /// Bytes of the jobs queued now.
    queued_bytes: std::sync::atomic::AtomicUsize,
}

/// One message for the candidate: what came in and what the active chain made of it.
pub(crate) struct Job {
    pub message: MessageId,
    pub raw: Vec<u8>,
    pub ctx: Context,
    pub active: OutcomeKind,
    /// The active chain's output (the inbound bytes when no stage edited them).
    pub active_output: Vec<u8>,
    /// What an empty MSH-18 means on the interface (its `charset`).
    pub charset: plexus_hl7::Charset,
}

impl Job {
    /// What it holds in the queue.
    pub(crate) fn bytes(&self) -> usize {
        self.raw.len() + self.active_output.len()
    }
}

impl Shadow {
    /// Starts the worker for run `run` of `candidate` on `plugins`.
    pub(crate) fn start(
        run: i64,
        candidate: Vec<(String, String)>,
        plugins: Vec<Arc<Plugin>>,
        journal: Arc<dyn Journal>,
    ) -> Result<Shadow, OpError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let counters = Arc::new(Counters::default());
        let worker_counters = counters.clone();
        std::thread::Builder::new()
            .name(format!("plexus-shadow-{run}"))
            .spawn(move || work(run, &plugins, &rx, journal.as_ref(), &worker_counters))
            .map_err(|e| OpError::Internal(format!("starting the shadow worker: {e}")))?;
        Ok(Shadow {
            run,
            candidate,
            tx,
            counters,
        })
    }

    /// Reserves room for a message of `bytes` (inbound plus active output) in the
    /// queue; `false` (and the message is counted as skipped) when the candidate is that
    /// far behind. Checked before anything is copied for the shadow.
    pub(crate) fn reserve(&self, bytes: usize) -> bool {
        let queued = self
            .counters
            .queued_bytes
            .fetch_add(bytes, Ordering::Relaxed);
        if queued + bytes > QUEUE_BYTES {
            self.counters
                .queued_bytes
                .fetch_sub(bytes, Ordering::Relaxed);
            self.counters.skipped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Hands a journaled message, whose room [`Shadow::reserve`] took, to the candidate,
    /// unless its queue is full.
    pub(crate) fn offer(&self, job: Job) {
        let bytes = job.bytes();
        match self.tx.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.counters
                    .queued_bytes
                    .fetch_sub(bytes, Ordering::Relaxed);
                self.counters.skipped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Gives back a reservation whose message never came (it was not journaled).
    pub(crate) fn release(&self, bytes: usize) {
        self.counters
            .queued_bytes
            .fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// How a chain run ended, as journaled.
pub(crate) fn outcome_kind(verdict: &Verdict) -> OutcomeKind {
    match verdict {
        Verdict::Forwarded => OutcomeKind::Forward,
        Verdict::Filtered { .. } => OutcomeKind::Filter,
        Verdict::Failed(f) => match f.kind {
            ErrorKind::Trap | ErrorKind::Timeout | ErrorKind::OutOfMemory => OutcomeKind::Trap,
            _ => OutcomeKind::Fail,
        },
    }
}

fn work(
    run: i64,
    plugins: &[Arc<Plugin>],
    rx: &Receiver<Job>,
    journal: &dyn Journal,
    counters: &Counters,
) {
    let take = |job: Job| {
        counters
            .queued_bytes
            .fetch_sub(job.bytes(), Ordering::Relaxed);
        compare(run, plugins, job)
    };
    while let Ok(first) = rx.recv() {
        let mut batch = vec![take(first)];
        let mut bytes = 0;
        while batch.len() < BATCH && bytes < BATCH_BYTES {
            match rx.try_recv() {
                Ok(job) => {
                    let result = take(job);
                    bytes += result.output.as_ref().map_or(0, Vec::len);
                    batch.push(result);
                }
                Err(_) => break,
            }
        }
        let n = batch.len() as u64;
        match journal.shadow_record(batch) {
            Ok(()) => {
                counters.compared.fetch_add(n, Ordering::Relaxed);
            }
            Err(e) => {
                counters.skipped.fetch_add(n, Ordering::Relaxed);
                tracing::warn!(run, "could not journal {n} shadow result(s): {e}");
            }
        }
    }
}

/// Runs the candidate on one message and compares its result with the active one's.
fn compare(run: i64, plugins: &[Arc<Plugin>], job: Job) -> ShadowResult {
    let mut result = ShadowResult {
        run,
        message: job.message,
        active: job.active,
        candidate: OutcomeKind::Trap,
        differing: Vec::new(),
        output: None,
        detail: None,
    };
    let msg = match Message::parse_owned_with_charset(job.raw.clone(), job.charset) {
        Ok(msg) => msg,
        Err(e) => {
            // Ingest parsed these same bytes; this cannot happen short of a bug.
            result.detail = Some(format!("parse: {e}"));
            return result;
        }
    };
    let ran = chain::run(plugins, msg, &job.ctx);
    result.candidate = outcome_kind(&ran.verdict);
    match &ran.verdict {
        Verdict::Forwarded => {
            // No stage edited it: the candidate forwards the inbound bytes.
            let output = ran.output().map_or(job.raw, <[u8]>::to_vec);
            if job.active == OutcomeKind::Forward {
                result.differing = differing_paths_in(&job.active_output, &output, job.charset);
            }
            // An output equal to the active one is journaled already.
            if output != job.active_output {
                result.output = Some(output);
            }
        }
        Verdict::Filtered { plugin, reason } => {
            result.detail = Some(format!("filtered by {plugin}: {reason}"));
        }
        Verdict::Failed(f) => {
            result.detail = Some(match &f.path {
                Some(path) => format!("{} at {path} ({})", f.kind, f.stage),
                None => format!("{} ({})", f.kind, f.stage),
            });
        }
    }
    result
}

/// The paths whose values differ between two messages: a field path (`PID-5`), or a
/// component path (`PID-5-1`) when the field has no repetitions; a segment present in
/// only one of them is named by itself (`OBX[2]`). Bytes that do not parse compare as
/// one difference, `(message)`.
pub fn differing_paths(a: &[u8], b: &[u8]) -> Vec<String> {
    differing_paths_in(a, b, plexus_hl7::Charset::Ascii)
}

/// [`differing_paths`] for messages whose empty MSH-18 means `charset`.
fn differing_paths_in(a: &[u8], b: &[u8], charset: plexus_hl7::Charset) -> Vec<String> {
    if a == b {
        return Vec::new();
    }
    let (Ok(a), Ok(b)) = (
        Message::parse_with_charset(a, charset),
        Message::parse_with_charset(b, charset),
    ) else {
        return vec!["(message)".to_owned()];
    };
    let (sa, sb) = (segment_index(&a), segment_index(&b));
    let in_b: std::collections::HashMap<(&str, u32), &Segment<'_>> = sb
        .iter()
        .map(|(name, occ, seg)| ((name.as_str(), *occ), seg))
        .collect();
    let in_a: std::collections::HashSet<(&str, u32)> = sa
        .iter()
        .map(|(name, occ, _)| (name.as_str(), *occ))
        .collect();
    let label = |name: &str, occ: u32| {
        if occ == 1 {
            name.to_owned()
        } else {
            format!("{name}[{occ}]")
        }
    };
    let mut paths = Vec::new();
    for (name, occ, seg) in &sa {
        let Some(other) = in_b.get(&(name.as_str(), *occ)) else {
            paths.push(label(name, *occ));
            continue;
        };
        if seg.raw() == other.raw() {
            continue;
        }
        let delims = a.delimiters();
        for field in 1..=seg.field_count().max(other.field_count()) {
            let fa = seg.field(field).map(|f| f.raw()).unwrap_or_default();
            let fb = other.field(field).map(|f| f.raw()).unwrap_or_default();
            if fa == fb {
                continue;
            }
            let at = format!("{}-{field}", label(name, *occ));
            let repeats = fa.contains(&delims.repetition) || fb.contains(&delims.repetition);
            let (ca, cb): (Vec<&[u8]>, Vec<&[u8]>) = (
                fa.split(|c| *c == delims.component).collect(),
                fb.split(|c| *c == delims.component).collect(),
            );
            if repeats || (ca.len() == 1 && cb.len() == 1) {
                paths.push(at);
                continue;
            }
            for c in 0..ca.len().max(cb.len()) {
                if ca.get(c) != cb.get(c) {
                    paths.push(format!("{at}-{}", c + 1));
                }
            }
        }
    }
    for (name, occ, _) in &sb {
        if !in_a.contains(&(name.as_str(), *occ)) {
            paths.push(label(name, *occ));
        }
    }
    paths
}

/// Each segment with its name and occurrence number (1 for the first `OBX`, ...).
fn segment_index<'m>(m: &'m Message<'m>) -> Vec<(String, u32, Segment<'m>)> {
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    m.segments()
        .map(|seg| {
            let n = seen.entry(seg.name().to_owned()).or_default();
            *n += 1;
            (seg.name().to_owned(), *n, seg)
        })
        .collect()
}

/// A shadow run's report: counts, the paths that differ (most frequent first) and an
/// example for the top ones.
#[derive(Debug, Clone, Serialize)]
pub struct ShadowReport {
    /// The run.
    pub run: i64,
    /// Its interface.
    pub interface: String,
    /// The candidate chain, `plugin@sha256` per stage.
    pub candidate: Vec<String>,
    /// Who started it.
    pub started_by: String,
    /// When (ms since the Unix epoch).
    pub started_at_ms: u64,
    /// How it ended (`stopped`, `promoted`, ...); `None` while it runs.
    pub ended: Option<String>,
    /// Messages the candidate ran on.
    pub messages: u64,
    /// Same outcome and same output.
    pub same: u64,
    /// Both forwarded, with different output.
    pub changed_output: u64,
    /// Different outcomes, as `(active, candidate, messages)`.
    pub changed_outcome: Vec<(String, String, u64)>,
    /// Messages the live run skipped because the candidate fell behind (since the
    /// engine started; `None` when the run is not live in this process).
    pub skipped: Option<u64>,
    /// Each differing path and on how many messages it differed, most first.
    pub paths: Vec<(String, u64)>,
    /// The candidate's failures, by detail (kind, path and stage), most first.
    pub failures: Vec<(String, u64)>,
    /// One example per top path.
    pub examples: Vec<Example>,
    /// Whether example values are shown as they are (otherwise masked).
    pub unmasked: bool,
}

/// One message where a path differs.
#[derive(Debug, Clone, Serialize)]
pub struct Example {
    /// The path.
    pub path: String,
    /// The message (journal id).
    pub message: i64,
    /// The active chain's value (masked unless the report is unmasked).
    pub active: Option<String>,
    /// The candidate's value.
    pub candidate: Option<String>,
}

/// How a report is built.
#[derive(Debug, Clone, Copy)]
pub struct ReportOptions {
    /// Show example values as they are. Whoever asks must be allowed to see message
    /// content, and the view must be audited.
    pub unmasked: bool,
    /// Examples, at most (one per path, most frequent paths first).
    pub examples: usize,
}

impl Default for ReportOptions {
    fn default() -> Self {
        ReportOptions {
            unmasked: false,
            examples: 5,
        }
    }
}

/// Hides a value's content but keeps its shape: letters become `x`/`X`, digits `9`;
/// punctuation, spaces and length stay (so `Checked In` reads `Xxxxxxx Xx`).
pub fn mask(value: &str) -> String {
    value
        .chars()
        .take(64)
        .map(|c| {
            if c.is_uppercase() {
                'X'
            } else if c.is_alphabetic() {
                'x'
            } else if c.is_numeric() {
                '9'
            } else {
                c
            }
        })
        .collect()
}

/// The shadow runs of `interface`, newest first.
pub fn runs(journal: &dyn Journal, interface: &str) -> Result<Vec<ShadowRunRecord>, OpError> {
    Ok(journal.shadow_runs(Some(interface))?)
}

/// Builds the report of run `run` on `interface` (its latest run when `None`) from the
/// journal.
pub fn report(
    journal: &dyn Journal,
    interface: &str,
    run: Option<i64>,
    options: ReportOptions,
) -> Result<ShadowReport, OpError> {
    let runs = journal.shadow_runs(Some(interface))?;
    let record = match run {
        Some(id) => runs.into_iter().find(|r| r.id == id),
        None => runs.into_iter().next(),
    }
    .ok_or_else(|| OpError::NoShadow {
        interface: interface.to_owned(),
        run,
    })?;
    let mut same = 0;
    let mut changed_output = 0;
    let mut messages = 0_u64;
    let mut outcomes: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut paths: BTreeMap<String, (u64, MessageId)> = BTreeMap::new();
    let mut failures: BTreeMap<String, u64> = BTreeMap::new();
    let mut after = MessageId(0);
    // Page through the results: a long run's rows never sit in memory together, only
    // the tallies (distinct paths and failure details, each capped).
    loop {
        let page = journal.shadow_results(record.id, after, PAGE)?;
        let Some(last) = page.last() else {
            break;
        };
        after = last.message;
        messages += page.len() as u64;
        for r in &page {
            if r.active != r.candidate {
                *outcomes
                    .entry((
                        r.active.as_str().to_owned(),
                        r.candidate.as_str().to_owned(),
                    ))
                    .or_default() += 1;
            } else if r.differing.is_empty() {
                same += 1;
            } else {
                changed_output += 1;
            }
            for p in &r.differing {
                paths.entry(capped(&paths, p)).or_insert((0, r.message)).0 += 1;
            }
            if matches!(r.candidate, OutcomeKind::Fail | OutcomeKind::Trap)
                && let Some(d) = &r.detail
            {
                *failures.entry(capped(&failures, d)).or_default() += 1;
            }
        }
    }
    let mut ranked: Vec<(String, u64, MessageId)> =
        paths.into_iter().map(|(p, (n, m))| (p, n, m)).collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let mut examples = Vec::new();
    for (path, _, message) in ranked.iter().take(options.examples) {
        examples.push(example(
            journal,
            record.id,
            path,
            *message,
            options.unmasked,
        )?);
    }
    let mut failures: Vec<(String, u64)> = failures.into_iter().collect();
    failures.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Ok(ShadowReport {
        run: record.id,
        interface: record.run.interface,
        candidate: record
            .run
            .candidate
            .iter()
            .map(|(name, sha)| format!("{name}@{sha}"))
            .collect(),
        started_by: record.run.started_by,
        started_at_ms: crate::ingest::millis(record.started_at),
        ended: record.ended.map(|(_, how)| how),
        messages,
        same,
        changed_output,
        changed_outcome: outcomes.into_iter().map(|((a, c), n)| (a, c, n)).collect(),
        skipped: None,
        paths: ranked.into_iter().map(|(p, n, _)| (p, n)).collect(),
        failures,
        examples,
        unmasked: options.unmasked,
    })
}

/// Results read per page when building a report.
const PAGE: usize = 10_000;
/// Distinct paths (and failure details) tallied, at most; the rest count as `(other)`.
const DISTINCT: usize = 10_000;

/// `key` itself while the tally has room for it, `(other)` once it is full.
fn capped<V>(tally: &BTreeMap<String, V>, key: &str) -> String {
    if tally.len() < DISTINCT || tally.contains_key(key) {
        key.to_owned()
    } else {
        "(other)".to_owned()
    }
}

/// The value at a path [`differing_paths`] names, whole: a component path's component, but
/// a field path's entire field (every component and repetition, as encoded) and a segment
/// path's entire segment, so the example shows what differs, not just the first part.
fn whole_value(msg: &Message<'_>, path: &str) -> Option<String> {
    let (segment, field) = match path.split_once('-') {
        Some((segment, rest)) if !rest.contains('-') => (segment, rest.parse::<u32>().ok()),
        Some(_) => return Some(msg.get(path).ok()??.into_owned()),
        None => (path, None),
    };
    let (name, occurrence) = match segment.split_once('[') {
        Some((name, n)) => (name, n.trim_end_matches(']').parse::<usize>().ok()?),
        None => (segment, 1),
    };
    let seg = msg
        .segments()
        .filter(|s| s.name() == name)
        .nth(occurrence.checked_sub(1)?)?;
    let raw = match field {
        Some(n) => seg.field(n).map(|f| f.raw()).unwrap_or_default(),
        None => seg.raw(),
    };
    Some(String::from_utf8_lossy(raw).into_owned())
}

fn example(
    journal: &dyn Journal,
    run: i64,
    path: &str,
    message: MessageId,
    unmasked: bool,
) -> Result<Example, OpError> {
    let value = |bytes: &[u8]| -> Option<String> {
        let msg = Message::parse(bytes).ok()?;
        let v = whole_value(&msg, path)?;
        Some(if unmasked { v } else { mask(&v) })
    };
    // The message may have been pruned since; the example then has no values.
    let (active, candidate) = match journal.show(message) {
        Ok(record) => {
            let active = record
                .stages
                .iter()
                .rev()
                .find_map(|s| s.record.output.clone())
                .unwrap_or(record.inbound.raw);
            let candidate = journal.shadow_output(run, message)?.unwrap_or_default();
            (value(&active), value(&candidate))
        }
        Err(plexus_journal::Error::NotFound(_)) => (None, None),
        Err(e) => return Err(e.into()),
    };
    Ok(Example {
        path: path.to_owned(),
        message: message.0,
        active,
        candidate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &[u8] = b"MSH|^~\\&|A|B|C|D|20240101||SIU^S12|1|P|2.5\rSCH|1||||||||||||||||||||||||Arrived^Arrived\rPID|1||123||Doe^Jane\r";

    #[test]
    fn equal_messages_have_no_differing_paths() {
        assert!(differing_paths(A, A).is_empty());
    }

    #[test]
    fn component_field_and_segment_differences_are_named() {
        let b = String::from_utf8_lossy(A)
            .replace("Arrived^Arrived", "ARR^Arrived")
            .replace("Doe^Jane", "DOE^Jane")
            + "OBX|1\rOBX|2\r";
        let mut paths = differing_paths(A, b.as_bytes());
        paths.sort();
        assert_eq!(paths, vec!["OBX", "OBX[2]", "PID-5-1", "SCH-25-1"]);
        let c = String::from_utf8_lossy(A).replace("|123|", "|123~456|");
        assert_eq!(differing_paths(A, c.as_bytes()), vec!["PID-3"]);
        let d = String::from_utf8_lossy(A).replace("PID|1||123", "PID|1|X|123");
        assert_eq!(differing_paths(A, d.as_bytes()), vec!["PID-2"]);
    }

    #[test]
    fn an_example_shows_the_whole_field_or_segment_that_differs() {
        let msg = Message::parse(b"MSH|^~\\&|A|B|C|D|2024||ADT^A01|1|P|2.5\rPID|1||123~456||EVERYMAN^Adam^A\rOBX|1|x\rOBX|2|y\r")
            .expect("parses");
        assert_eq!(
            whole_value(&msg, "PID-5").as_deref(),
            Some("EVERYMAN^Adam^A")
        );
        assert_eq!(whole_value(&msg, "PID-3").as_deref(), Some("123~456"));
        assert_eq!(whole_value(&msg, "PID-5-2").as_deref(), Some("Adam"));
        assert_eq!(whole_value(&msg, "OBX[2]").as_deref(), Some("OBX|2|y"));
        assert_eq!(whole_value(&msg, "OBX[3]"), None);
        assert_eq!(whole_value(&msg, "PID-9").as_deref(), Some(""));
    }

    #[test]
    fn unparseable_output_is_one_difference() {
        assert_eq!(differing_paths(A, b"garbage"), vec!["(message)"]);
    }

    #[test]
    fn masking_keeps_shape_not_content() {
        assert_eq!(mask("Checked In"), "Xxxxxxx Xx");
        assert_eq!(mask("555-0100"), "999-9999");
        assert_eq!(mask(&"a".repeat(100)).len(), 64);
    }
}
