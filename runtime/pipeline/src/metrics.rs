//! Counters for `/metrics` (Prometheus text format). Counting is a relaxed atomic add on
//! the hot path; queue depths and error-queue figures are read from the journal when
//! `/metrics` is scraped.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use std::sync::Arc;

use plexus_hl7::ack::AckCode;
use plexus_journal::{ErrorKind, OutcomeKind, StageRecord};

/// Upper bounds (seconds) of the ACK-latency histogram buckets.
const LATENCY_BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.0,
];

const ACK_CODES: [AckCode; 6] = [
    AckCode::AA,
    AckCode::AE,
    AckCode::AR,
    AckCode::CA,
    AckCode::CE,
    AckCode::CR,
];

/// One counter per error kind, in `ErrorKind::ALL` order.
const ERROR_KINDS: &[ErrorKind] = ErrorKind::ALL;

/// One interface's counters.
#[derive(Debug, Default)]
pub(crate) struct IfaceMetrics {
    received: AtomicU64,
    /// Bytes an MLLP source skipped outside frames (not framed, or after an early 0x1C).
    outside_frames: AtomicU64,
    filtered: AtomicU64,
    acks: [AtomicU64; 6],
    errored: [AtomicU64; ErrorKind::ALL.len()],
    activations: AtomicU64,
    latency_buckets: [AtomicU64; 10],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
    /// Per destination: delivered, retried, failed.
    destinations: BTreeMap<String, [AtomicU64; 3]>,
    /// The last swaps' durations.
    swap_times: std::sync::Mutex<std::collections::VecDeque<Duration>>,
    /// Per plug-in version that has run here: name, then sha256. Nested so that the
    /// lookup (one per stage run) borrows the names instead of copying them into a key.
    plugins: std::sync::RwLock<BTreeMap<String, BTreeMap<String, Arc<PluginCounters>>>>,
}

/// Swap durations kept.
const SWAP_TIMES: usize = 1024;

/// Upper bounds (seconds) of the plug-in run-time histogram buckets.
const RUN_BUCKETS: [f64; 9] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.005, 0.025, 0.1, 1.0,
];

/// How a stage ended, in [`OutcomeKind::ALL`] order.
const OUTCOMES: &[OutcomeKind] = OutcomeKind::ALL;

/// Trap kinds, as `plexus_sandbox::RunError::kind` names them.
const TRAP_KINDS: [&str; 5] = ["timeout", "memory", "fuel", "trap", "instantiate"];

/// One plug-in version's counters on one interface.
#[derive(Debug, Default)]
pub(crate) struct PluginCounters {
    outcomes: [AtomicU64; OutcomeKind::ALL.len()],
    traps: [AtomicU64; 5],
    buckets: [AtomicU64; 9],
    count: AtomicU64,
    sum_us: AtomicU64,
}

/// What a delivery attempt came to.
#[derive(Debug, Clone, Copy)]
pub(crate) enum DeliveryOutcome {
    Delivered = 0,
    Retry = 1,
    Failed = 2,
}

impl IfaceMetrics {
    pub(crate) fn new<'a>(destinations: impl Iterator<Item = &'a str>) -> Self {
        IfaceMetrics {
            destinations: destinations
                .map(|d| (d.to_owned(), Default::default()))
                .collect(),
            ..IfaceMetrics::default()
        }
    }

    pub(crate) fn received(&self) {
        self.received.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn outside_frames(&self, bytes: u64) {
        self.outside_frames.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn filtered(&self) {
        self.filtered.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn errored(&self, kind: ErrorKind) {
        if let Some(i) = ERROR_KINDS.iter().position(|k| *k == kind) {
            self.errored[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A chain swap (activation, rollback) that took `took`.
    pub(crate) fn swapped(&self, took: Duration) {
        self.activations.fetch_add(1, Ordering::Relaxed);
        let mut times = self.swap_times.lock().unwrap_or_else(|e| e.into_inner());
        if times.len() == SWAP_TIMES {
            times.pop_front();
        }
        times.push_back(took);
    }

    pub(crate) fn swap_times(&self) -> Vec<Duration> {
        self.swap_times
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .copied()
            .collect()
    }

    /// An answer went out after `took` (receive to ACK).
    pub(crate) fn acked(&self, code: Option<AckCode>, took: Duration) {
        if let Some(i) = code.and_then(|c| ACK_CODES.iter().position(|k| *k == c)) {
            self.acks[i].fetch_add(1, Ordering::Relaxed);
        }
        let secs = took.as_secs_f64();
        for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&self.latency_buckets) {
            if secs <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us.fetch_add(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Counts each stage of a chain run: outcome, trap kind, run time.
    pub(crate) fn stages(&self, stages: &[StageRecord], took: &[Duration]) {
        for (stage, took) in stages.iter().zip(took) {
            let known = self
                .plugins
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(stage.plugin.as_str())
                .and_then(|versions| versions.get(stage.plugin_sha256.as_str()))
                .cloned();
            let counters = match known {
                Some(c) => c,
                None => self
                    .plugins
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(stage.plugin.clone())
                    .or_default()
                    .entry(stage.plugin_sha256.clone())
                    .or_default()
                    .clone(),
            };
            if let Some(i) = OUTCOMES.iter().position(|o| *o == stage.outcome) {
                counters.outcomes[i].fetch_add(1, Ordering::Relaxed);
            }
            if stage.outcome == OutcomeKind::Trap
                && let Some(i) = stage
                    .detail
                    .as_deref()
                    // `KIND`, or `KIND: what the plug-in wrote to stderr`: the masked
                    // view is the kind.
                    .map(|d| crate::chain::masked_stage_detail(OutcomeKind::Trap, d))
                    .and_then(|d| TRAP_KINDS.iter().position(|k| *k == d))
            {
                counters.traps[i].fetch_add(1, Ordering::Relaxed);
            }
            let secs = took.as_secs_f64();
            for (bound, bucket) in RUN_BUCKETS.iter().zip(&counters.buckets) {
                if secs <= *bound {
                    bucket.fetch_add(1, Ordering::Relaxed);
                }
            }
            counters.count.fetch_add(1, Ordering::Relaxed);
            counters.sum_us.fetch_add(
                u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
        }
    }

    pub(crate) fn delivery(&self, destination: &str, outcome: DeliveryOutcome) {
        if let Some(counters) = self.destinations.get(destination) {
            counters[outcome as usize].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Figures read from the journal at scrape time.
#[derive(Debug, Default)]
pub(crate) struct JournalFigures {
    /// (interface, destination, lane) -> (owed, oldest received_at)
    pub queues: BTreeMap<(String, String, u32), (u64, Option<SystemTime>)>,
    /// interface -> (open errors, oldest open)
    pub errors: BTreeMap<String, (u64, Option<SystemTime>)>,
    /// interface -> (shadow run, messages compared, messages skipped) of live runs
    pub shadows: BTreeMap<String, (i64, u64, u64)>,
}

/// Renders every interface's metrics in the Prometheus text format.
pub(crate) fn render<'a>(
    interfaces: impl Iterator<Item = (&'a str, &'a IfaceMetrics)> + Clone,
    figures: &JournalFigures,
) -> String {
    let mut out = String::new();
    let v = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let family = |out: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    family(
        &mut out,
        "plexus_messages_received_total",
        "counter",
        "Messages received, per interface.",
    );
    for (i, m) in interfaces.clone() {
        let _ = writeln!(
            out,
            "plexus_messages_received_total{{interface=\"{i}\"}} {}",
            v(&m.received)
        );
    }
    family(
        &mut out,
        "plexus_mllp_bytes_outside_frames_total",
        "counter",
        "Bytes an MLLP source skipped because they came outside any frame (a sender that does not frame with 0x0B ... 0x1C 0x0D, or the rest of a message after an early 0x1C); never journaled or answered.",
    );
    for (i, m) in interfaces.clone() {
        let _ = writeln!(
            out,
            "plexus_mllp_bytes_outside_frames_total{{interface=\"{i}\"}} {}",
            v(&m.outside_frames)
        );
    }
    family(
        &mut out,
        "plexus_acks_total",
        "counter",
        "Acknowledgements sent, by code.",
    );
    for (i, m) in interfaces.clone() {
        for (code, n) in ACK_CODES.iter().zip(&m.acks) {
            let _ = writeln!(
                out,
                "plexus_acks_total{{interface=\"{i}\",code=\"{}\"}} {}",
                code.as_str(),
                v(n)
            );
        }
    }
    family(
        &mut out,
        "plexus_messages_filtered_total",
        "counter",
        "Messages a plug-in filtered out.",
    );
    for (i, m) in interfaces.clone() {
        let _ = writeln!(
            out,
            "plexus_messages_filtered_total{{interface=\"{i}\"}} {}",
            v(&m.filtered)
        );
    }
    family(
        &mut out,
        "plexus_messages_errored_total",
        "counter",
        "Messages put in the error queue, by kind.",
    );
    for (i, m) in interfaces.clone() {
        for (kind, n) in ERROR_KINDS.iter().zip(&m.errored) {
            let _ = writeln!(
                out,
                "plexus_messages_errored_total{{interface=\"{i}\",kind=\"{kind}\"}} {}",
                v(n)
            );
        }
    }
    family(
        &mut out,
        "plexus_deliveries_total",
        "counter",
        "Delivery attempts, by destination and result.",
    );
    for (i, m) in interfaces.clone() {
        for (dest, counters) in &m.destinations {
            for (result, n) in ["delivered", "retry", "failed"].iter().zip(counters) {
                let _ = writeln!(
                    out,
                    "plexus_deliveries_total{{interface=\"{i}\",destination=\"{dest}\",result=\"{result}\"}} {}",
                    v(n)
                );
            }
        }
    }
    family(
        &mut out,
        "plexus_chain_activations_total",
        "counter",
        "Chain activations and rollbacks.",
    );
    for (i, m) in interfaces.clone() {
        let _ = writeln!(
            out,
            "plexus_chain_activations_total{{interface=\"{i}\"}} {}",
            v(&m.activations)
        );
    }
    family(
        &mut out,
        "plexus_ack_latency_seconds",
        "histogram",
        "Receive to acknowledgement, journal commit included.",
    );
    for (i, m) in interfaces.clone() {
        for (bound, n) in LATENCY_BUCKETS.iter().zip(&m.latency_buckets) {
            let _ = writeln!(
                out,
                "plexus_ack_latency_seconds_bucket{{interface=\"{i}\",le=\"{bound}\"}} {}",
                v(n)
            );
        }
        let count = v(&m.latency_count);
        let _ = writeln!(
            out,
            "plexus_ack_latency_seconds_bucket{{interface=\"{i}\",le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "plexus_ack_latency_seconds_sum{{interface=\"{i}\"}} {}",
            v(&m.latency_sum_us) as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "plexus_ack_latency_seconds_count{{interface=\"{i}\"}} {count}"
        );
    }
    let now = SystemTime::now();
    let age = |t: &Option<SystemTime>| {
        t.and_then(|t| now.duration_since(t).ok())
            .map_or(0.0, |d| d.as_secs_f64())
    };
    family(
        &mut out,
        "plexus_queue_depth",
        "gauge",
        "Deliveries owed, per destination.",
    );
    // Per destination: the lanes added up.
    let mut destinations: BTreeMap<(&str, &str), (u64, Option<SystemTime>)> = BTreeMap::new();
    for ((i, d, _), (depth, oldest)) in &figures.queues {
        let entry = destinations.entry((i, d)).or_default();
        entry.0 += depth;
        entry.1 = match (entry.1, *oldest) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    for ((i, d), (depth, _)) in &destinations {
        let _ = writeln!(
            out,
            "plexus_queue_depth{{interface=\"{i}\",destination=\"{d}\"}} {depth}"
        );
    }
    family(
        &mut out,
        "plexus_queue_oldest_seconds",
        "gauge",
        "Age of the oldest delivery owed.",
    );
    for ((i, d), (_, oldest)) in &destinations {
        let _ = writeln!(
            out,
            "plexus_queue_oldest_seconds{{interface=\"{i}\",destination=\"{d}\"}} {}",
            age(oldest)
        );
    }
    family(
        &mut out,
        "plexus_lane_depth",
        "gauge",
        "Deliveries owed, per connection (lane) of a destination: one lane growing while the others drain is a head waiting for a retry.",
    );
    for ((i, d, lane), (depth, _)) in &figures.queues {
        let _ = writeln!(
            out,
            "plexus_lane_depth{{interface=\"{i}\",destination=\"{d}\",lane=\"{lane}\"}} {depth}"
        );
    }
    family(
        &mut out,
        "plexus_lane_oldest_seconds",
        "gauge",
        "Age of the oldest delivery owed, per lane.",
    );
    for ((i, d, lane), (_, oldest)) in &figures.queues {
        let _ = writeln!(
            out,
            "plexus_lane_oldest_seconds{{interface=\"{i}\",destination=\"{d}\",lane=\"{lane}\"}} {}",
            age(oldest)
        );
    }
    family(
        &mut out,
        "plexus_errors_open",
        "gauge",
        "Open entries in the error queue.",
    );
    for (i, (open, _)) in &figures.errors {
        let _ = writeln!(out, "plexus_errors_open{{interface=\"{i}\"}} {open}");
    }
    family(
        &mut out,
        "plexus_errors_oldest_open_seconds",
        "gauge",
        "Age of the oldest open error.",
    );
    for (i, (_, oldest)) in &figures.errors {
        let _ = writeln!(
            out,
            "plexus_errors_oldest_open_seconds{{interface=\"{i}\"}} {}",
            age(oldest)
        );
    }
    render_plugins(&mut out, interfaces);
    family(
        &mut out,
        "plexus_shadow_messages_total",
        "counter",
        "Messages of the live shadow run compared with the candidate, or skipped because it fell behind.",
    );
    for (i, (run, compared, skipped)) in &figures.shadows {
        for (result, n) in [("compared", compared), ("skipped", skipped)] {
            let _ = writeln!(
                out,
                "plexus_shadow_messages_total{{interface=\"{i}\",run=\"{run}\",result=\"{result}\"}} {n}"
            );
        }
    }
    out
}

/// `((plug-in name, sha256), counters)`.
type VersionCounters = ((String, String), Arc<PluginCounters>);

/// Per plug-in version: runs by outcome, traps by kind, run time.
fn render_plugins<'a>(
    out: &mut String,
    interfaces: impl Iterator<Item = (&'a str, &'a IfaceMetrics)> + Clone,
) {
    let v = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let family = |out: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    let snapshot: Vec<(&str, Vec<VersionCounters>)> = interfaces
        .map(|(i, m)| {
            let plugins = m.plugins.read().unwrap_or_else(|e| e.into_inner());
            (
                i,
                plugins
                    .iter()
                    .flat_map(|(name, versions)| {
                        versions
                            .iter()
                            .map(|(sha, c)| ((name.clone(), sha.clone()), c.clone()))
                    })
                    .collect(),
            )
        })
        .collect();
    family(
        out,
        "plexus_plugin_runs_total",
        "counter",
        "Plug-in stage runs by plug-in version digest and outcome (forward, filter, fail, trap).",
    );
    for (i, plugins) in &snapshot {
        for ((name, sha), c) in plugins {
            for (outcome, n) in OUTCOMES.iter().zip(&c.outcomes) {
                let _ = writeln!(
                    out,
                    "plexus_plugin_runs_total{{interface=\"{i}\",plugin=\"{name}\",sha256=\"{sha}\",outcome=\"{outcome}\"}} {}",
                    v(n)
                );
            }
        }
    }
    family(
        out,
        "plexus_plugin_traps_total",
        "counter",
        "Plug-in runs that did not finish, by version digest and kind (timeout, memory, fuel, trap, instantiate).",
    );
    for (i, plugins) in &snapshot {
        for ((name, sha), c) in plugins {
            for (kind, n) in TRAP_KINDS.iter().zip(&c.traps) {
                let _ = writeln!(
                    out,
                    "plexus_plugin_traps_total{{interface=\"{i}\",plugin=\"{name}\",sha256=\"{sha}\",kind=\"{kind}\"}} {}",
                    v(n)
                );
            }
        }
    }
    family(
        out,
        "plexus_plugin_run_seconds",
        "histogram",
        "Time of one plug-in stage, fresh instance included, by version digest.",
    );
    for (i, plugins) in &snapshot {
        for ((name, sha), c) in plugins {
            let labels = format!("interface=\"{i}\",plugin=\"{name}\",sha256=\"{sha}\"");
            for (bound, bucket) in RUN_BUCKETS.iter().zip(&c.buckets) {
                let _ = writeln!(
                    out,
                    "plexus_plugin_run_seconds_bucket{{{labels},le=\"{bound}\"}} {}",
                    v(bucket)
                );
            }
            let count = v(&c.count);
            let _ = writeln!(
                out,
                "plexus_plugin_run_seconds_bucket{{{labels},le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                out,
                "plexus_plugin_run_seconds_sum{{{labels}}} {}",
                v(&c.sum_us) as f64 / 1e6
            );
            let _ = writeln!(out, "plexus_plugin_run_seconds_count{{{labels}}} {count}");
        }
    }
}
