//! Building an engine from a config, starting its sources and delivery workers, and the
//! operator actions (replay) that run against the same journal.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::SystemTime;

use arc_swap::{ArcSwap, ArcSwapOption};
use plexus_config::{Config, Inbound};
use plexus_hl7::Message;
use plexus_journal::{Journal, JournalOptions, MessageId, Resume, SqliteJournal};
use plexus_sandbox::{Context, Plugin, PluginSpec, Sandbox, SandboxConfig, Table, TableSet};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::assets::{Assets, describe};
use crate::chain::{self, Verdict};
use crate::chains::Standing;
use crate::error::{BuildError, OpError};
use crate::ingest::{self, millis, processing_for};
use crate::shadow::{ReportOptions, Shadow, ShadowReport};

/// A built engine: plug-ins loaded, journal open, nothing listening yet.
#[derive(Debug, Clone)]
pub struct Engine {
    shared: Arc<Shared>,
}

/// State shared by every task.
pub(crate) struct Shared {
    pub config: Config,
    pub journal: Arc<dyn Journal>,
    pub interfaces: BTreeMap<String, Arc<Iface>>,
    pub chain_permits: Arc<Semaphore>,
    pub ack_ids: AckIds,
    pub site: String,
    /// Loads plug-in versions; keeps the epoch ticker (plug-in timeouts) alive.
    sandbox: Sandbox,
    /// The site's tables, shared by every plug-in version; replaced by a config reload.
    tables: ArcSwap<TableSet>,
    /// The admin API's tokens; replaced by a config reload.
    pub tokens: ArcSwap<Vec<plexus_config::AdminToken>>,
    /// Each plug-in's grants: the config's, or what a reviewer set through the admin
    /// API (kept in `<data_dir>/grants.json`). The lock also serialises grant changes.
    grants: std::sync::RwLock<BTreeMap<String, plexus_config::Grants>>,
    /// Serialises everything that changes what runs (activations, rollbacks, shadow
    /// starts and promotions, grant changes, reloads): each reads grants and chains,
    /// relinks, and swaps, and none may interleave with another (a grant revoked in
    /// between could come back; a relinked old chain could overwrite a new one).
    control: std::sync::Mutex<()>,
    /// The bytes of the versions the site config names, by sha256: they can be activated
    /// (say, in a chain that changes another stage) without being uploaded first.
    configured_wasm: HashMap<String, Arc<[u8]>>,
    /// The version the site config names of each plug-in, by name (sha256).
    configured_versions: BTreeMap<String, String>,
    /// Messages being replayed now: a second replay of one waits its turn (refused), so
    /// two operators clicking at once run the chain and write the audit log once.
    replaying: std::sync::Mutex<std::collections::HashSet<MessageId>>,
    /// Inspections of the plug-in store's files, by file name (`SHA256.wasm`): the files
    /// never change, so `GET /admin/v1/plugins` reads and inspects each one once.
    stored_inspections: std::sync::Mutex<HashMap<String, plexus_sandbox::inspect::Inspection>>,
    /// Set when what the delivery workers sent may not all be recorded (results given
    /// up at shutdown, a send cut off unanswered, a task that failed): the stop does not
    /// count as clean (see [`DataDirLock`]).
    pub unrecorded_results: Arc<std::sync::atomic::AtomicBool>,
    /// When the journal last refused a message's commit (ms since the Unix epoch; 0 once
    /// one has been taken since): every message is refused then, and `/readyz` says so
    /// for [`JOURNAL_FAILURE_HOLD`] after it, so that a balancer that stops sending on a
    /// 503 sends again to find out whether the journal has recovered.
    pub journal_failed_at: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("interfaces", &self.interfaces.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// One interface at run time.
pub(crate) struct Iface {
    pub name: String,
    /// This interface's share of the engine's chain permits ([`interface_share`]): a
    /// plug-in that loops to its timeout on every message holds at most this many, and
    /// the other interfaces keep the rest.
    pub chain_share: Arc<Semaphore>,
    pub config: plexus_config::Interface,
    /// The active chain. A message takes the chain once, when it starts, and runs every
    /// stage on that version: an activation never mixes versions within a message.
    pub chain: ArcSwap<ActiveChain>,
    /// Earlier chains, newest last, for rollback (at most [`HISTORY`]). The lock also
    /// serialises activations.
    history: std::sync::Mutex<Vec<Arc<ActiveChain>>>,
    /// The chain the config names, as `(name, sha256)` per stage: an activation kept in
    /// `chains.json` is honoured at start only while the config still names this.
    config_chain: crate::chains::Digests,
    /// Each destination's lanes (one per connection): the worker's wake-up and feed.
    pub lanes: HashMap<String, Vec<Arc<crate::deliver::Lane>>>,
    /// Whether the journal answers ingests in commit order, so that delivery can be
    /// fed from memory (see `feed`).
    feeding: bool,
    /// Counters for `/metrics`.
    pub metrics: crate::metrics::IfaceMetrics,
    /// Whether the chain runs on the blocking pool because it was slow recently.
    pub slow: SlowChain,
    /// The candidate chain running beside the active one, if any.
    pub shadow: ArcSwapOption<Shadow>,
    /// `order_by`, parsed (the config checked it).
    pub order_by: Option<plexus_hl7::Path>,
}

/// Chains kept for rollback per interface.
const HISTORY: usize = 16;

/// One version of an interface's plug-in chain.
#[derive(Debug, Clone)]
pub struct ActiveChain {
    /// The plug-ins, in order.
    pub plugins: Vec<Arc<Plugin>>,
}

impl ActiveChain {
    /// `(name, sha256)` of each stage.
    pub fn digests(&self) -> Vec<(String, String)> {
        self.plugins
            .iter()
            .map(|p| (p.name().to_owned(), p.sha256().to_owned()))
            .collect()
    }
}

/// The activation gate's golden-case run: every case in `dir` must pass, as
/// `plexus plugin test` runs them (same engine settings, fuel-bounded).
fn golden_cases(
    name: &str,
    bytes: &[u8],
    dir: &std::path::Path,
    limits: &plexus_config::Limits,
) -> Result<(), OpError> {
    let results = plexus_sandbox::cases::run_cases(name, bytes, dir, self::limits(limits), false)
        .map_err(|e| {
        OpError::Gate(format!(
            "{name}: golden cases in {} could not run: {e}",
            dir.display()
        ))
    })?;
    let failed: Vec<&str> = results
        .iter()
        .filter(|r| r.failure.is_some())
        .map(|r| r.name.as_str())
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(OpError::Gate(format!(
            "{name}: {} of {} golden case(s) failed: {} (run `plexus plugin test` for the diffs)",
            failed.len(),
            results.len(),
            failed.join(", ")
        )))
    }
}

/// How one stage's capability requests change with an activation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapabilityChange {
    /// The plug-in.
    pub plugin: String,
    /// The new version.
    pub sha256: String,
    /// Capabilities the new version requests that the active one did not.
    pub added: Vec<String>,
    /// Capabilities the active version requested that the new one does not.
    pub removed: Vec<String>,
}

/// A chain run longer than this is "slow" (a mapping takes tens of microseconds). It is
/// also the inline budget a run on an async worker gets before it is cut. When runs prove
/// slow (see [`SlowChain`]) the interface's chain moves to the blocking pool for
/// [`SLOW_COOL_DOWN`].
pub(crate) const SLOW_CHAIN: std::time::Duration = std::time::Duration::from_millis(20);
/// Before any delivery worker runs: fills in the order keys of owed messages queued
/// before their interface had `order_by` (so they keep their place ahead of the same
/// patient's later messages), then tells the journal how each destination's queue is
/// split over its connections, which moves owed deliveries to their lanes should
/// `connections` or `order_by` have changed since the last run. Only the running engine
/// does this; the journal records the split, and a CLI process beside it queues by it.
fn set_up_lanes(shared: &Shared) -> Result<(), BuildError> {
    const PAGE: usize = 1000;
    for iface in shared.interfaces.values() {
        if iface.order_by.is_some() {
            let mut after = MessageId(0);
            let mut filled = 0_usize;
            loop {
                let page = shared
                    .journal
                    .owed_without_order_key(&iface.name, after, PAGE)?;
                let Some(last) = page.last().map(|(id, _)| *id) else {
                    break;
                };
                let keys: Vec<(MessageId, i64)> = page
                    .into_iter()
                    .map(|(id, raw)| {
                        // One that no longer parses is ordered with those lacking the field.
                        let key = iface
                            .parse(raw)
                            .ok()
                            .and_then(|msg| iface.order_key(&msg))
                            .unwrap_or_else(|| order_key(""));
                        (id, key)
                    })
                    .collect();
                filled += keys.len();
                shared.journal.set_order_keys(keys)?;
                after = last;
            }
            if filled > 0 {
                tracing::info!(interface = %iface.name, messages = filled, "order keys filled in for queued messages");
            }
        }
        for dest in &iface.config.destinations {
            let lanes = crate::deliver::lanes(&iface.config, dest);
            let moved = shared
                .journal
                .set_lanes(&iface.name, dest.name.as_str(), lanes)?;
            if moved > 0 {
                tracing::info!(interface = %iface.name, destination = %dest.name, moved, lanes = lanes.count, "queued deliveries moved to their lanes");
            }
        }
    }
    Ok(())
}

/// The order key of an `order_by` value: a stable, non-negative hash (64-bit FNV-1a of
/// the trimmed value, top bit dropped). The same value gets the same key in every process
/// and version, so a journal written earlier still groups a patient's messages together;
/// at a destination with `connections = N` the message goes on lane `key % N`.
pub fn order_key(value: &str) -> i64 {
    let value = value.trim();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in value.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash >> 1).cast_signed()
}

/// How long an interface's chain stays on the blocking pool once it proved slow.
pub(crate) const SLOW_COOL_DOWN: std::time::Duration = std::time::Duration::from_secs(60);

/// Slow runs in a row that prove a chain slow. One slow run proves little: on a busy
/// two-core machine the scheduler can leave a thread off the CPU for longer than
/// [`SLOW_CHAIN`] in the middle of a 10 µs mapping. And a fast chain sent to the
/// blocking pool pays dearly: with many connections, dozens of pool threads take turns
/// on two cores, and `plexus bench` measured half its usual throughput in runs where a
/// single preempted run had done that.
pub(crate) const SLOW_STRIKES: u32 = 3;

/// When an interface's chain runs on the blocking pool instead of the async threads.
#[derive(Debug, Default)]
pub(crate) struct SlowChain {
    /// Until when (ms since the epoch) the chain runs on the blocking pool.
    until_ms: AtomicU64,
    /// Slow runs since the last fast one.
    strikes: AtomicU32,
}

impl SlowChain {
    /// Whether the chain should run on the blocking pool now.
    pub(crate) fn active(&self) -> bool {
        // Zero until a chain first proves slow: no clock read per message until then.
        let until = self.until_ms.load(Ordering::Relaxed);
        until != 0 && until > millis(SystemTime::now())
    }

    /// Records how long a run took. [`SLOW_STRIKES`] slow runs in a row start the
    /// cool-down (or extend it, if it is running) and count again from zero, so strikes
    /// left over from before a quiet spell cannot combine with one unlucky run later.
    /// True when this run started it.
    pub(crate) fn note(&self, took: std::time::Duration) -> bool {
        if took <= SLOW_CHAIN {
            // Read first: the common case writes nothing to a line both cores share.
            if self.strikes.load(Ordering::Relaxed) != 0 {
                self.strikes.store(0, Ordering::Relaxed);
            }
            return false;
        }
        if self
            .strikes
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1)
            < SLOW_STRIKES
        {
            return false;
        }
        self.start()
    }

    /// A run that was cut at the inline budget and then ran again in full: the second
    /// run is the evidence. Slow again, and the chain is slow (cutting it every time
    /// would waste the budget on each message); fast, and the first run was unlucky.
    pub(crate) fn note_rerun(&self, took: std::time::Duration) -> bool {
        if took > SLOW_CHAIN {
            self.strikes.store(SLOW_STRIKES, Ordering::Relaxed);
            return self.start();
        }
        self.note(took)
    }

    /// Starts or extends the cool-down; true when it was not running.
    fn start(&self) -> bool {
        self.strikes.store(0, Ordering::Relaxed);
        let now = SystemTime::now();
        self.until_ms
            .swap(millis(now + SLOW_COOL_DOWN), Ordering::Relaxed)
            <= millis(now)
    }
}

impl Iface {
    /// Parses a message received on this interface: an empty MSH-18 means the
    /// interface's `charset`. Every path that reads a stored message back (replay,
    /// resume, trials, shadow runs) parses through here, as intake does.
    pub(crate) fn parse(&self, raw: Vec<u8>) -> Result<Message<'static>, plexus_hl7::ParseError> {
        Message::parse_owned_with_charset(raw, self.unstated_charset())
    }

    /// [`Iface::parse`] without copying.
    pub(crate) fn parse_borrowed<'a>(
        &self,
        raw: &'a [u8],
    ) -> Result<Message<'a>, plexus_hl7::ParseError> {
        Message::parse_with_charset(raw, self.unstated_charset())
    }

    /// The message's order key: a hash of its value at `order_by`, when the interface
    /// has one. Deliveries with equal keys share a lane (a connection) and keep their
    /// arrival order. A message without the field counts as an empty value.
    pub(crate) fn order_key(&self, msg: &Message<'_>) -> Option<i64> {
        let path = self.order_by.as_ref()?;
        let value = msg.get(path).ok().flatten().unwrap_or_default();
        Some(order_key(&value))
    }

    /// The lane message `id` is queued in at each destination.
    fn lanes_of(
        &self,
        id: MessageId,
        order_key: Option<i64>,
    ) -> impl Iterator<Item = (u32, &Arc<crate::deliver::Lane>)> {
        self.config.destinations.iter().filter_map(move |dest| {
            let lane = crate::deliver::lanes(&self.config, dest).of(id, order_key);
            self.lanes
                .get(dest.name.as_str())
                .and_then(|lanes| lanes.get(lane as usize))
                .map(|l| (lane, l))
        })
    }

    /// Wakes the worker of the lane message `id` is queued in, at every destination.
    pub(crate) fn wake_lanes(&self, id: MessageId, order_key: Option<i64>) {
        for (_, lane) in self.lanes_of(id, order_key) {
            lane.wake.notify_one();
        }
    }

    /// Whether delivery gets freshly committed messages from memory (see `feed`).
    pub(crate) fn feeds_deliveries(&self) -> bool {
        self.feeding && !self.config.destinations.is_empty()
    }

    /// Hands message `id`, just committed for every destination with `payload` as the
    /// bytes to send, to the feeds of its lanes. Called in commit order (see `feed`).
    /// `None`: the message is too large for a feed; its lanes drop out of sync, so that
    /// they read it, in its place, from the journal.
    pub(crate) fn feed_lanes(
        &self,
        id: MessageId,
        order_key: Option<i64>,
        received_at: std::time::SystemTime,
        payload: Option<Vec<u8>>,
    ) {
        let Some(payload) = payload else {
            for (_, lane) in self.lanes_of(id, order_key) {
                lane.feed.stop();
            }
            return;
        };
        // No copy for a lane whose feed would drop it (a backlog is read from the journal).
        let size = payload.len();
        let mut payload = Some(payload);
        let mut lanes = self
            .lanes_of(id, order_key)
            .filter(|(_, lane)| lane.feed.wants(size))
            .peekable();
        while let Some((n, lane)) = lanes.next() {
            // The last destination takes the bytes themselves.
            let bytes = if lanes.peek().is_some() {
                payload.clone()
            } else {
                payload.take()
            };
            lane.feed.push(crate::feed::Fed {
                pending: crate::feed::fresh(id, received_at, n),
                payload: bytes.unwrap_or_default(),
            });
        }
    }

    /// What an empty MSH-18 means on this interface.
    pub(crate) fn unstated_charset(&self) -> plexus_hl7::Charset {
        hl7_charset(self.config.charset)
    }

    /// Whether the chain should run on the blocking pool (it was slow recently).
    pub(crate) fn chain_is_slow(&self) -> bool {
        self.slow.active()
    }

    /// Records how long a chain run took (see [`SlowChain::note`]); `rerun` when it ran
    /// again in full after being cut at the inline budget.
    pub(crate) fn note_chain_time(&self, took: std::time::Duration, rerun: bool) {
        let started = if rerun {
            self.slow.note_rerun(took)
        } else {
            self.slow.note(took)
        };
        if started {
            tracing::info!(
                interface = %self.name,
                took_ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
                "plug-in chain was slow; running it off the async threads for {}s",
                SLOW_COOL_DOWN.as_secs()
            );
        }
    }

    /// Wakes every worker of every destination, each to read its lane from the journal
    /// (a replay: a requeued delivery may still sit in the lane it had, and its feed
    /// never saw it).
    pub(crate) fn wake_destinations(&self) {
        for lane in self.lanes.values().flatten() {
            lane.feed.stop();
            lane.wake.notify_one();
        }
    }

    /// Holds every lane's feed out of sync (see `Feed::hold`) until the guard drops.
    pub(crate) fn hold_feeds(&self) -> FeedHold<'_> {
        for lane in self.lanes.values().flatten() {
            lane.feed.hold();
        }
        FeedHold(self)
    }
}

/// Releases an interface's feeds when dropped (see [`Iface::hold_feeds`]).
pub(crate) struct FeedHold<'a>(&'a Iface);

impl Drop for FeedHold<'_> {
    fn drop(&mut self) {
        for lane in self.0.lanes.values().flatten() {
            lane.feed.release();
        }
    }
}

/// Control ids and timestamps for the ACKs the engine sends: `PLX<start>-<n>`, unique
/// across restarts to the second.
pub(crate) struct AckIds {
    prefix: String,
    next: AtomicU64,
}

impl AckIds {
    fn new() -> Self {
        AckIds {
            prefix: format!("PLX{}-", millis(SystemTime::now()) / 1000),
            next: AtomicU64::new(1),
        }
    }

    pub(crate) fn next(&self) -> (String, String) {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        (
            format!("{}{n}", self.prefix),
            plexus_hl7::ack::timestamp(SystemTime::now()),
        )
    }
}

/// What a running engine is listening on.
#[derive(Debug)]
pub struct Running {
    /// Each MLLP-source interface's bound address.
    pub mllp: BTreeMap<String, SocketAddr>,
    /// The HTTP server's bound address.
    pub http: SocketAddr,
    tasks: JoinSet<()>,
    /// Holds the data folder's lock while the engine runs.
    lock: DataDirLock,
    unrecorded_results: Arc<std::sync::atomic::AtomicBool>,
}

/// How many of the engine's `permits` chain runs one of `interfaces` may hold at once:
/// all of them on a site with one interface; otherwise half (at least one), so that an
/// interface whose plug-in loops to its timeout on every message leaves the others half
/// the permits (two such interfaces can still take them all).
pub(crate) fn interface_share(permits: usize, interfaces: usize) -> usize {
    if interfaces <= 1 {
        permits.max(1)
    } else {
        (permits / 2).max(1)
    }
}

/// How long `/readyz` answers 503 after the journal refused a commit, unless one is taken
/// first.
pub(crate) const JOURNAL_FAILURE_HOLD: std::time::Duration = std::time::Duration::from_secs(30);

/// The exclusive lock on a data folder (`<data_dir>/engine.lock`), held while it lives.
/// See [`Engine::start`] and [`lock_data_dir`].
///
/// The file also says how the last engine on the folder stopped: `running` from the
/// moment its delivery workers start, `stopped` once [`Running::wait`] has seen every
/// worker finish with its results recorded (and when a new data folder's file is
/// created). An engine that finds `running` (or an empty file, from a release that wrote
/// nothing) knows its predecessor may have been killed, or lost power, after sending
/// messages it never recorded as sent; it flags them as possible resends before sending
/// them again.
///
/// A new file reads `new` until the journal has been opened once on the folder (see
/// [`DataDirLock::journal_opened`]); any other state means a journal has lived here, so
/// one that is missing now was lost, not never made ([`DataDirLock::check_journal`]).
#[derive(Debug)]
pub struct DataDirLock {
    file: std::fs::File,
    path: PathBuf,
    unclean_before: bool,
    journal_before: bool,
}

impl DataDirLock {
    /// Whether the last engine on this folder stopped without recording a clean stop
    /// (including one from before this release, which recorded nothing).
    pub fn unclean_before(&self) -> bool {
        self.unclean_before
    }

    /// Refuses to go on when the journal at `journal` is missing from a folder where one
    /// has been opened before: opening it would make a new, empty journal, and whatever
    /// the lost one held (messages acknowledged but not yet delivered, the error queue,
    /// the duplicate window) would be gone without a word. The operator restores the
    /// journal, or deletes the lock file to start over with an empty one on purpose.
    ///
    /// `plexus run` calls it before it builds the engine; a program that embeds the
    /// engine calls it too (neither `Engine::build` nor `Engine::start` does).
    pub fn check_journal(&self, journal: &std::path::Path) -> Result<(), BuildError> {
        if !self.journal_before {
            return Ok(());
        }
        match journal.try_exists() {
            Ok(true) => Ok(()),
            Ok(false) => Err(BuildError::JournalMissing {
                journal: journal.to_path_buf(),
                lock: self.path.clone(),
            }),
            Err(source) => Err(BuildError::DataDir {
                path: journal.to_path_buf(),
                source,
            }),
        }
    }

    /// Records that the folder's journal now exists (the lock file's `new` becomes
    /// `stopped`), so that [`DataDirLock::check_journal`] notices if it goes missing.
    pub fn journal_opened(&mut self) -> Result<(), BuildError> {
        if self.journal_before {
            return Ok(());
        }
        self.record_state("stopped\n")?;
        self.journal_before = true;
        Ok(())
    }

    /// [`write_state`](Self::write_state), failing the start or build that needs it.
    fn record_state(&mut self, state: &str) -> Result<(), BuildError> {
        self.write_state(state).map_err(|source| BuildError::Lock {
            path: self.path.clone(),
            source,
        })
    }

    fn write_state(&mut self, state: &str) -> std::io::Result<()> {
        use std::io::{Seek, Write};
        self.file.set_len(0)?;
        self.file.seek(std::io::SeekFrom::Start(0))?;
        self.file.write_all(state.as_bytes())?;
        self.file.sync_data()
    }
}

impl Running {
    /// Waits until every source and worker has stopped (after the shutdown token fires),
    /// then records a clean stop in the data folder's lock file when every delivery
    /// result was committed.
    pub async fn wait(mut self) {
        while let Some(result) = self.tasks.join_next().await {
            if let Err(err) = result {
                tracing::error!("engine task failed: {err}");
                // A delivery worker that panicked may have sent what it never recorded.
                self.unrecorded_results
                    .store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        if self
            .unrecorded_results
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            tracing::warn!(
                "some delivery results were not recorded; the next start flags possible resends"
            );
        } else if let Err(err) = self.lock.write_state("stopped\n") {
            tracing::warn!(
                lock = %self.lock.path.display(),
                "cannot record the clean stop ({err}); the next start flags possible resends"
            );
        }
    }
}

/// The result of a replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayOutcome {
    /// The chain passed: deliveries are queued again and the error is resolved.
    Requeued {
        /// Destinations queued again.
        destinations: Vec<String>,
        /// Destinations that already have it: a replay never sends a message twice to
        /// the same destination.
        already_delivered: Vec<String>,
    },
    /// The chain filtered it: nothing to deliver; the error is resolved.
    Filtered {
        /// The plug-in's reason.
        reason: String,
    },
    /// It failed again; the error stays open with the new reason.
    FailedAgain(chain::Failure),
}

impl Engine {
    /// Loads tables and plug-ins and opens the journal. Every failure names the config
    /// item involved.
    pub fn build(config: Config, assets: &dyn Assets) -> Result<Engine, BuildError> {
        let data_dir = config.engine.data_dir.clone();
        std::fs::create_dir_all(&data_dir).map_err(|source| BuildError::DataDir {
            path: data_dir.clone(),
            source,
        })?;
        let journal = SqliteJournal::open_with(
            journal_path(&config),
            JournalOptions {
                duplicate_window: config.journal.duplicate_window,
                ..JournalOptions::default()
            },
        )?;
        Self::with_journal(config, assets, Arc::new(journal))
    }

    /// Like [`Engine::build`] with a journal of the caller's choosing.
    pub fn with_journal(
        config: Config,
        assets: &dyn Assets,
        journal: Arc<dyn Journal>,
    ) -> Result<Engine, BuildError> {
        let tables = Arc::new(load_tables(&config, assets)?);
        let sandbox = Sandbox::new(sandbox_config(&config))?;
        let grants = crate::grants::effective(&config)?;
        let (plugins, configured_wasm) = load_plugins(&config, assets, &sandbox, &grants, &tables)?;
        let configured_versions = plugins
            .iter()
            .map(|(name, p)| (name.clone(), p.sha256().to_owned()))
            .collect();
        let feeding = journal.answers_in_commit_order();
        // Two chains in flight per core, but never more than half the sandbox's instance
        // slots: shadow runs, trials and replays take slots too, instances kept under
        // `reuse-instance` an eighth, and a message must never fail for want of one.
        let permits = (std::thread::available_parallelism().map_or(2, |n| n.get()) * 2)
            .min(usize::try_from(sandbox.config().max_instances / 2).unwrap_or(usize::MAX))
            .max(1);
        let interfaces = config
            .interfaces
            .iter()
            .map(|(name, interface)| {
                let chain = ActiveChain {
                    plugins: interface
                        .chain
                        .iter()
                        .map(|p| plugins[p.as_str()].clone())
                        .collect(),
                };
                let lanes = interface
                    .destinations
                    .iter()
                    .map(|d| {
                        let lanes = (0..crate::deliver::lane_count(d))
                            .map(|_| Arc::new(crate::deliver::Lane::new(feeding)))
                            .collect();
                        (d.name.to_string(), lanes)
                    })
                    .collect();
                let iface = Iface {
                    name: name.to_string(),
                    config: interface.clone(),
                    config_chain: chain.digests(),
                    chain: ArcSwap::from_pointee(chain),
                    history: std::sync::Mutex::new(Vec::new()),
                    lanes,
                    feeding,
                    slow: SlowChain::default(),
                    chain_share: Arc::new(Semaphore::new(interface_share(
                        permits,
                        config.interfaces.len(),
                    ))),
                    shadow: ArcSwapOption::empty(),
                    order_by: interface
                        .order_by
                        .as_deref()
                        .and_then(|p| plexus_hl7::Path::parse(p).ok()),
                    metrics: crate::metrics::IfaceMetrics::new(
                        interface.destinations.iter().map(|d| d.name.as_str()),
                    ),
                };
                (name.to_string(), Arc::new(iface))
            })
            .collect();
        let tokens = config.admin.tokens.clone();
        let site = config.engine.site.clone();
        let engine = Engine {
            shared: Arc::new(Shared {
                config,
                journal,
                interfaces,
                chain_permits: Arc::new(Semaphore::new(permits)),
                ack_ids: AckIds::new(),
                site,
                sandbox,
                tables: ArcSwap::new(tables),
                tokens: ArcSwap::from_pointee(tokens),
                grants: std::sync::RwLock::new(grants),
                control: std::sync::Mutex::new(()),
                configured_wasm,
                configured_versions,
                replaying: std::sync::Mutex::default(),
                stored_inspections: std::sync::Mutex::default(),
                unrecorded_results: Arc::default(),
                journal_failed_at: std::sync::atomic::AtomicU64::new(0),
            }),
        };
        engine.restore_chains()?;
        Ok(engine)
    }

    /// Puts back the chains activated through the admin API before the engine last
    /// stopped (`<data_dir>/chains.json`), each over the config's chain, which stays one
    /// `rollback` away. An entry made while the config named another chain is passed
    /// over with a warning: the config has been edited since, and it wins. One whose
    /// versions no longer load stops the build: running the config's older chain
    /// instead would undo a deployment without anyone knowing.
    fn restore_chains(&self) -> Result<(), BuildError> {
        let file = crate::chains::file(&self.shared.config);
        for (interface, kept) in crate::chains::load(&self.shared.config)? {
            let Some(iface) = self.shared.interfaces.get(&interface) else {
                tracing::warn!(
                    interface,
                    file = %file.display(),
                    "an activated chain names an interface the config no longer defines; ignored"
                );
                continue;
            };
            let activated = describe_digests(&kept.chain);
            match kept.standing(
                &iface.config_chain,
                &self.shared.config,
                &self.shared.configured_versions,
            ) {
                Standing::Runs => {}
                Standing::ConfigNamesIt => {
                    tracing::info!(
                        interface,
                        chain = activated,
                        "the config now names the chain activated through the admin API"
                    );
                    continue;
                }
                other => {
                    tracing::warn!(
                        interface,
                        activated,
                        by = kept.by,
                        file = %file.display(),
                        "not running the chain activated through the admin API: {}; running \
                         the config's chain",
                        other.reason()
                    );
                    continue;
                }
            }
            let (plugins, _) = self
                .load_stored_chain(&interface, &kept.chain, false)
                .map_err(|e| {
                    let reason = match e {
                        OpError::NotStored { name, sha256 } => format!(
                            "{name} {sha256}: {} is missing",
                            self.plugin_store().join(format!("{sha256}.wasm")).display()
                        ),
                        other => other.to_string(),
                    };
                    kept_chain_refused(&self.shared.config, &interface, &kept, reason)
                })?;
            let chain = Arc::new(ActiveChain { plugins });
            let configured = iface.chain.swap(chain.clone());
            self.settle_kept(&configured, &chain);
            iface
                .history
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(configured);
            tracing::warn!(
                interface,
                chain = activated,
                by = kept.by,
                file = %file.display(),
                "running the chain activated through the admin API, not the config's \
                 (a rollback puts the config's back)"
            );
        }
        Ok(())
    }

    /// Drops the entries of `chains.json` that [`Engine::restore_chains`] passed over
    /// (made while the config named another chain, or running a plug-in it no longer
    /// defines), so that putting the config's old
    /// chain back later does not bring the old activation back with it. Run by a
    /// start, which owns the data folder; a build beside a running engine (a CLI replay)
    /// writes nothing.
    fn forget_stale_chains(&self) -> Result<(), BuildError> {
        let kept = crate::chains::load(&self.shared.config)?;
        for (interface, entry) in kept {
            let why = match self.shared.interfaces.get(&interface) {
                None => "the config no longer defines the interface".to_owned(),
                // Activated in this process since it was built: current, whatever the
                // config says.
                Some(iface) if iface.chain.load().digests() == entry.chain => continue,
                Some(iface) => match entry.standing(
                    &iface.config_chain,
                    &self.shared.config,
                    &self.shared.configured_versions,
                ) {
                    Standing::Runs => continue,
                    other => other.reason(),
                },
            };
            crate::chains::forget(&self.shared.config, &interface).map_err(|e| {
                BuildError::Unsupported(format!(
                    "cannot drop the outdated entry of interface {interface} from the kept \
                     chains: {e}"
                ))
            })?;
            // The audit log's last word on the interface was that activation: say that
            // it no longer runs, and why.
            if let Err(e) = self.audit(
                "engine",
                "activation-dropped",
                &format!("interface:{interface}"),
                &format!(
                    "{} (activated by {}): {why}; the config's chain runs",
                    describe_digests(&entry.chain),
                    entry.by
                ),
            ) {
                tracing::warn!(interface, "could not audit the dropped activation: {e}");
            }
        }
        Ok(())
    }

    pub(crate) fn from_shared(shared: Arc<Shared>) -> Engine {
        Engine { shared }
    }

    /// The journal.
    pub fn journal(&self) -> &Arc<dyn Journal> {
        &self.shared.journal
    }

    /// The config it was built from.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Loads a plug-in version on this engine's sandbox and tables, checking its digest
    /// pin and refusing imports its grants do not cover, ready for [`Engine::activate`].
    pub fn load_plugin(
        &self,
        name: &str,
        bytes: &[u8],
        sha256: Option<String>,
        grants: &plexus_config::Grants,
        limits: &plexus_config::Limits,
    ) -> Result<Arc<Plugin>, BuildError> {
        let spec = PluginSpec {
            name: name.to_owned(),
            sha256,
            grants: sandbox_grants(grants),
            limits: self::limits(limits),
        };
        Ok(Arc::new(Plugin::load(
            &self.shared.sandbox,
            &spec,
            bytes,
            self.shared.tables.load_full(),
        )?))
    }

    /// Makes `plugins` the interface's chain, atomically: messages already running
    /// finish on the chain they started with; the next one uses the new chain. The old
    /// chain is kept for [`Engine::rollback`].
    ///
    /// The activation is recorded in the audit log under `actor`.
    pub fn activate(
        &self,
        interface: &str,
        plugins: Vec<Arc<Plugin>>,
        actor: &str,
    ) -> Result<(), OpError> {
        let _control = self.control();
        self.activate_locked(interface, plugins, actor)
    }

    /// Holds the control lock (see `Shared::control`) for one change to what runs.
    fn control(&self) -> std::sync::MutexGuard<'_, ()> {
        self.shared
            .control
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn activate_locked(
        &self,
        interface: &str,
        plugins: Vec<Arc<Plugin>>,
        actor: &str,
    ) -> Result<(), OpError> {
        let iface = self.iface(interface)?;
        let mut history = iface.history.lock().unwrap_or_else(|e| e.into_inner());
        let chain = Arc::new(ActiveChain { plugins });
        let detail = describe_chain(&chain);
        // Recorded before it takes effect: no message runs on a version whose
        // activation is not in the audit log. Messages never wait for this; they keep
        // taking the current chain until the swap below.
        self.audit(
            actor,
            "activate",
            &format!("interface:{interface}"),
            &detail,
        )?;
        // Kept before it takes effect, so that a restart runs it too.
        self.keep_chain(iface, &chain, actor, "activate-not-kept", &detail)?;
        let swap = std::time::Instant::now();
        let previous = iface.chain.swap(chain.clone());
        self.settle_kept(&previous, &chain);
        history.push(previous);
        if history.len() > HISTORY {
            history.remove(0);
        }
        drop(history);
        iface.metrics.swapped(swap.elapsed());
        tracing::info!(interface, chain = %detail, "chain activated");
        Ok(())
    }

    /// Records `chain` in `chains.json` as the one `iface` runs from now on, first copying
    /// into the plug-in store any version it has only from the config's files (so the
    /// next start finds it even after the config's file changes). On failure the swap
    /// must not happen, and the audit log, which already names the change, gets an entry
    /// `not_kept` saying it did not take effect.
    fn keep_chain(
        &self,
        iface: &Iface,
        chain: &ActiveChain,
        actor: &str,
        not_kept: &str,
        detail: &str,
    ) -> Result<(), OpError> {
        let digests = chain.digests();
        let copied = if digests == iface.config_chain {
            Ok(())
        } else {
            self.store_configured(chain)
        };
        let kept = copied.and_then(|()| {
            crate::chains::save(
                &self.shared.config,
                &iface.name,
                &digests,
                &iface.config_chain,
                &self.shared.configured_versions,
                actor,
            )
        });
        if let Err(e) = &kept {
            let _ = self.audit(
                actor,
                not_kept,
                &format!("interface:{}", iface.name),
                &format!("{detail}: {e}"),
            );
        }
        kept
    }

    /// Copies into the plug-in store the versions of `chain` it lacks (those the engine
    /// has from the config's files), unless the chain is the config's own.
    fn store_configured(&self, chain: &ActiveChain) -> Result<(), OpError> {
        for plugin in &chain.plugins {
            if let Some(bytes) = self.shared.configured_wasm.get(plugin.sha256()) {
                self.put_in_store(plugin.sha256(), bytes)
                    .map_err(OpError::ChainNotKept)?;
            }
        }
        Ok(())
    }

    /// Writes `bytes` to the plug-in store as `<sha256>.wasm`, unless it is there already
    /// (content addressed). The error names the file.
    fn put_in_store(&self, sha256: &str, bytes: &[u8]) -> Result<(), String> {
        let dir = self.plugin_store();
        let path = dir.join(format!("{sha256}.wasm"));
        if path.exists() {
            return Ok(());
        }
        crate::assets::write_durably(&path, &dir.join(format!(".{sha256}.tmp")), bytes)
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    /// After a chain swap from `left` to `now`: the plug-in versions that no interface
    /// runs any more keep no instances while they wait in the history (the slots go to
    /// what runs), and those that run again may keep some (`reuse-instance`).
    fn settle_kept(&self, left: &ActiveChain, now: &ActiveChain) {
        for plugin in &now.plugins {
            plugin.set_running(true);
        }
        for plugin in &left.plugins {
            let runs_somewhere = self.shared.interfaces.values().any(|iface| {
                iface
                    .chain
                    .load()
                    .plugins
                    .iter()
                    .any(|p| Arc::ptr_eq(p, plugin))
            });
            if !runs_somewhere {
                plugin.set_running(false);
            }
        }
    }

    /// Records an operator action in the audit log.
    pub fn audit_action(
        &self,
        actor: &str,
        action: &str,
        subject: &str,
        detail: &str,
    ) -> Result<(), OpError> {
        self.audit(actor, action, subject, detail)
    }

    fn audit(&self, actor: &str, action: &str, subject: &str, detail: &str) -> Result<(), OpError> {
        self.shared.journal.audit(plexus_journal::AuditEntry {
            actor: actor.to_owned(),
            action: action.to_owned(),
            subject: subject.to_owned(),
            detail: detail.to_owned(),
        })?;
        Ok(())
    }

    /// Puts back the chain that was active before the last activation.
    /// Recorded in the audit log under `actor`.
    pub fn rollback(&self, interface: &str, actor: &str) -> Result<(), OpError> {
        let _control = self.control();
        let iface = self.iface(interface)?;
        let mut history = iface.history.lock().unwrap_or_else(|e| e.into_inner());
        let previous = history
            .last()
            .cloned()
            .ok_or_else(|| OpError::NothingToRollBack(interface.to_owned()))?;
        let detail = describe_chain(&previous);
        // Audited before it takes effect, as an activation is.
        self.audit(
            actor,
            "rollback",
            &format!("interface:{interface}"),
            &detail,
        )?;
        self.keep_chain(iface, &previous, actor, "rollback-not-kept", &detail)?;
        let swap = std::time::Instant::now();
        history.pop();
        let replaced = iface.chain.swap(previous.clone());
        self.settle_kept(&replaced, &previous);
        drop(history);
        iface.metrics.swapped(swap.elapsed());
        tracing::info!(interface, chain = %detail, "chain rolled back");
        Ok(())
    }

    /// How long the last swaps of the interface's chain took (activations, rollbacks;
    /// up to 1024, oldest first): the window in which the active version changes.
    /// Messages never wait for it; each takes whichever chain is current when it starts.
    pub fn swap_times(&self, interface: &str) -> Result<Vec<std::time::Duration>, OpError> {
        Ok(self.iface(interface)?.metrics.swap_times())
    }

    /// The interface's active chain.
    pub fn active_chain(&self, interface: &str) -> Result<Arc<ActiveChain>, OpError> {
        Ok(self.iface(interface)?.chain.load_full())
    }

    /// Stores an uploaded plug-in under `<data_dir>/plugins/<sha256>.wasm` (content
    /// addressed: uploading the same bytes twice is a no-op) after checking that it is a
    /// component implementing the contract. Returns its inspection.
    pub fn store_plugin(
        &self,
        bytes: &[u8],
    ) -> Result<plexus_sandbox::inspect::Inspection, OpError> {
        let inspection = plexus_sandbox::inspect::inspect(bytes).map_err(OpError::Upload)?;
        if !inspection.implements_contract() {
            return Err(OpError::Upload(
                "the component exports no `transform` function (not a plexus:transform plug-in)"
                    .to_owned(),
            ));
        }
        // No grant can give it these, so it could never load: say so now, not at the
        // activation that would fail.
        let refused = inspection.refused_imports();
        if !refused.is_empty() {
            return Err(OpError::Upload(format!(
                "the component imports {}, which no site can grant (a plug-in reaches only the message, its log and its tables); `plexus plugin inspect FILE` shows every import",
                refused.join(", ")
            )));
        }
        self.put_in_store(&inspection.sha256, bytes)
            .map_err(OpError::Store)?;
        Ok(inspection)
    }

    /// Every plug-in version this engine knows: the ones uploaded to its store and the
    /// ones its interfaces run (the configured files), each inspected once per call.
    /// Returns `(inspection, interfaces whose active chain runs it)`, by digest.
    pub fn plugin_versions(
        &self,
    ) -> Result<Vec<(plexus_sandbox::inspect::Inspection, Vec<String>)>, OpError> {
        let mut found: BTreeMap<String, plexus_sandbox::inspect::Inspection> = BTreeMap::new();
        for iface in self.shared.interfaces.values() {
            for plugin in &iface.chain.load().plugins {
                found
                    .entry(plugin.sha256().to_owned())
                    .or_insert_with(|| plugin.inspection().clone());
            }
        }
        let dir = self.plugin_store();
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries.filter_map(Result::ok).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(OpError::Store(format!("{}: {e}", dir.display()))),
        };
        for entry in entries {
            let path = entry.path();
            let Some(sha) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".wasm"))
            else {
                continue;
            };
            if found.contains_key(sha) {
                continue;
            }
            let cached = self
                .shared
                .stored_inspections
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(sha)
                .cloned();
            if let Some(inspection) = cached {
                found.insert(inspection.sha256.clone(), inspection);
                continue;
            }
            let bytes = crate::assets::read_bounded(&path)
                .map_err(|e| OpError::Store(format!("{}: {e}", path.display())))?;
            match plexus_sandbox::inspect::inspect(&bytes) {
                Ok(inspection) => {
                    self.shared
                        .stored_inspections
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .insert(sha.to_owned(), inspection.clone());
                    found.insert(inspection.sha256.clone(), inspection);
                }
                Err(e) => tracing::warn!(path = %path.display(), "stored plug-in unreadable: {e}"),
            }
        }
        Ok(found
            .into_values()
            .map(|inspection| {
                let active_on = self
                    .shared
                    .interfaces
                    .values()
                    .filter(|i| {
                        i.chain
                            .load()
                            .plugins
                            .iter()
                            .any(|p| p.sha256() == inspection.sha256)
                    })
                    .map(|i| i.name.clone())
                    .collect();
                (inspection, active_on)
            })
            .collect())
    }

    fn plugin_store(&self) -> PathBuf {
        plugin_store_path(&self.shared.config)
    }

    /// Activates a chain of uploaded versions, `(plug-in name, sha256)` per stage, after
    /// the gate: each version must be stored, its name defined in the config (whose
    /// grants and limits apply), and it must compile and link against those grants. Any
    /// failure refuses the activation and leaves the running chain untouched. Returns
    /// the capability changes against the active chain, stage by stage. When the plug-in's
    /// config names `cases`, every golden case must pass too.
    pub fn activate_stored(
        &self,
        interface: &str,
        chain: &[(String, String)],
        actor: &str,
    ) -> Result<Vec<CapabilityChange>, OpError> {
        let _control = self.control();
        let (plugins, changes) = self.load_stored_chain(interface, chain, true)?;
        self.activate_locked(interface, plugins, actor)?;
        Ok(changes)
    }

    /// Runs messages through a candidate chain of uploaded versions without journaling
    /// or delivering anything: does the fix fix them? Each version passes the same
    /// grant check as an activation (golden cases are not run). The trial is audited;
    /// the results carry verdicts, never message content.
    pub async fn trial(
        &self,
        interface: &str,
        chain: &[(String, String)],
        ids: &[MessageId],
        actor: &str,
    ) -> Result<Vec<(MessageId, Result<Verdict, OpError>)>, OpError> {
        // Loading compiles: off the async threads, which serve MLLP and HTTP meanwhile.
        let (plugins, _) = {
            let (engine, interface, chain) = (self.clone(), interface.to_owned(), chain.to_vec());
            tokio::task::spawn_blocking(move || engine.load_stored_chain(&interface, &chain, false))
                .await
                .map_err(|e| OpError::Internal(e.to_string()))??
        };
        let iface = self.iface(interface)?.clone();
        let mut results = Vec::with_capacity(ids.len());
        for &id in ids {
            let journal = self.shared.journal.clone();
            let plugins = plugins.clone();
            let iface = iface.clone();
            let site = self.shared.site.clone();
            let run = tokio::task::spawn_blocking(move || -> Result<Verdict, OpError> {
                let record = journal.show(id)?;
                if record.inbound.interface != iface.name {
                    return Err(OpError::Gate(format!(
                        "message {id} came in on interface {}, not {}",
                        record.inbound.interface, iface.name
                    )));
                }
                let msg = match iface.parse(record.inbound.raw) {
                    Ok(msg) => msg,
                    Err(error) => return Ok(Verdict::Failed(chain::Failure::parse(&error))),
                };
                let ctx = Context {
                    interface: iface.name.clone(),
                    site,
                    message_id: record.inbound.control_id.clone().unwrap_or_default(),
                    received_at_ms: millis(record.inbound.received_at),
                };
                Ok(chain::run(&plugins, msg, &ctx).verdict)
            })
            .await
            .map_err(|e| OpError::Internal(e.to_string()))?;
            results.push((id, run));
        }
        let passed = results
            .iter()
            .filter(|(_, r)| matches!(r, Ok(Verdict::Forwarded | Verdict::Filtered { .. })))
            .count();
        let tried = describe_chain(&ActiveChain { plugins });
        self.audit(
            actor,
            "trial",
            &format!("interface:{interface}"),
            &format!("{tried} on {} message(s): {passed} passed", results.len()),
        )?;
        Ok(results)
    }

    /// Loads a chain of uploaded versions through the gate (see
    /// [`Engine::activate_stored`]); `cases` runs the golden cases too.
    fn load_stored_chain(
        &self,
        interface: &str,
        chain: &[(String, String)],
        cases: bool,
    ) -> Result<(Vec<Arc<Plugin>>, Vec<CapabilityChange>), OpError> {
        let iface = self.iface(interface)?;
        if chain.len() > MAX_CHAIN_STAGES {
            return Err(OpError::Gate(format!(
                "a chain has at most {MAX_CHAIN_STAGES} stages; this one has {}",
                chain.len()
            )));
        }
        let active = iface.chain.load_full();
        let mut plugins = Vec::new();
        let mut changes = Vec::new();
        for (name, given) in chain {
            let configured = self
                .shared
                .config
                .plugins
                .get(name.as_str())
                .ok_or_else(|| OpError::UnknownPlugin(name.clone()))?;
            let sha256 = crate::chains::resolve_digest(
                Some(&self.plugin_store()),
                self.shared.configured_wasm.keys().map(String::as_str),
                given,
            )
            .map_err(|e| OpError::Gate(format!("plug-in {name}: {e}")))?
            .unwrap_or_else(|| given.to_ascii_lowercase());
            let path = self.plugin_store().join(format!("{sha256}.wasm"));
            let bytes: Arc<[u8]> = if path.exists() {
                let bytes = crate::assets::read_bounded(&path)
                    .map_err(|e| OpError::Store(format!("{}: {e}", path.display())))?;
                let actual = plexus_sandbox::inspect::sha256_hex(&bytes);
                if actual != sha256 {
                    return Err(OpError::Gate(format!(
                        "{}: the stored file is not the version its name says (its sha256 is \
                         {actual}); upload that version again",
                        path.display()
                    )));
                }
                bytes.into()
            } else if let Some(bytes) = self.shared.configured_wasm.get(&sha256) {
                // The version the site config names: no upload needed to keep it.
                bytes.clone()
            } else {
                return Err(OpError::NotStored {
                    name: name.clone(),
                    sha256,
                });
            };
            let grants = self.grants_of(name);
            let plugin = self
                .load_plugin(
                    name,
                    &bytes,
                    Some(sha256.clone()),
                    grants.as_ref().unwrap_or(&configured.grants),
                    &configured.limits,
                )
                .map_err(|e| OpError::Gate(e.to_string()))?;
            if let Some(dir) = configured.cases.as_ref().filter(|_| cases) {
                golden_cases(name, &bytes, dir, &configured.limits)?;
            }
            let before: Vec<&str> = active
                .plugins
                .iter()
                .find(|p| p.name() == name)
                .map(|p| p.inspection().capabilities())
                .unwrap_or_default();
            let after = plugin.inspection().capabilities();
            changes.push(CapabilityChange {
                plugin: name.clone(),
                sha256: sha256.clone(),
                added: after
                    .iter()
                    .filter(|c| !before.contains(c))
                    .map(|c| (*c).to_owned())
                    .collect(),
                removed: before
                    .iter()
                    .filter(|c| !after.contains(c))
                    .map(|c| (*c).to_owned())
                    .collect(),
            });
            plugins.push(plugin);
        }
        Ok((plugins, changes))
    }

    /// Starts a shadow run: `chain` (uploaded versions, through the same grant check as
    /// an activation) runs beside the interface's active chain on every message from now
    /// on; its results are journaled and never delivered. A shadow run already going on
    /// the interface ends (`replaced`). Audited. Returns the run id and the capability
    /// changes against the active chain.
    pub fn shadow_start(
        &self,
        interface: &str,
        chain: &[(String, String)],
        actor: &str,
    ) -> Result<(i64, Vec<CapabilityChange>), OpError> {
        let _control = self.control();
        let (plugins, changes) = self.load_stored_chain(interface, chain, false)?;
        let iface = self.iface(interface)?;
        // As loaded: full digests, whatever prefix the caller gave.
        let candidate = ActiveChain {
            plugins: plugins.clone(),
        }
        .digests();
        let run = self
            .shared
            .journal
            .shadow_start(plexus_journal::ShadowRun {
                interface: interface.to_owned(),
                candidate: candidate.clone(),
                started_by: actor.to_owned(),
            })?;
        // Audited before it runs on any message, as activations are, naming the run it
        // replaces (under the control lock, no other start can slip in between).
        let described = describe_digests(&candidate);
        let replacing = iface
            .shadow
            .load()
            .as_ref()
            .map(|s| format!("; replaces run {}", s.run))
            .unwrap_or_default();
        if let Err(e) = self.audit(
            actor,
            "shadow-start",
            &format!("interface:{interface}"),
            &format!("run {run}: {described}{replacing}"),
        ) {
            let _ = self.shared.journal.shadow_end(run, "not audited");
            return Err(e);
        }
        let shadow = Shadow::start(run, candidate, plugins, self.shared.journal.clone())?;
        if let Some(previous) = iface.shadow.swap(Some(Arc::new(shadow))) {
            self.shared.journal.shadow_end(previous.run, "replaced")?;
        }
        tracing::info!(interface, run, chain = %described, "shadow run started");
        Ok((run, changes))
    }

    /// Stops the interface's shadow run. Audited. Returns its id.
    pub fn shadow_stop(&self, interface: &str, actor: &str) -> Result<i64, OpError> {
        let _control = self.control();
        let iface = self.iface(interface)?;
        let shadow = iface.shadow.swap(None).ok_or_else(|| OpError::NoShadow {
            interface: interface.to_owned(),
            run: None,
        })?;
        self.shared.journal.shadow_end(shadow.run, "stopped")?;
        tracing::info!(interface, run = shadow.run, "shadow run stopped");
        self.audit(
            actor,
            "shadow-stop",
            &format!("interface:{interface}"),
            &format!("run {}", shadow.run),
        )?;
        Ok(shadow.run)
    }

    /// Promotes the interface's shadow candidate: activates it through the full gate
    /// (grants and golden cases) and ends the shadow run (`promoted`). If the gate
    /// refuses, nothing changes and the shadow keeps running. Audited.
    ///
    /// Also returns the stage names the promotion took out of the chain and put in, read
    /// under the control lock (so no other activation can come between).
    #[allow(clippy::type_complexity)]
    pub fn shadow_promote(
        &self,
        interface: &str,
        actor: &str,
    ) -> Result<(i64, Vec<CapabilityChange>, Vec<String>, Vec<String>), OpError> {
        let _control = self.control();
        let iface = self.iface(interface)?;
        let shadow = iface.shadow.load_full().ok_or_else(|| OpError::NoShadow {
            interface: interface.to_owned(),
            run: None,
        })?;
        let before: Vec<String> = iface
            .chain
            .load()
            .digests()
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        let after: Vec<String> = shadow.candidate.iter().map(|(n, _)| n.clone()).collect();
        let removed = before
            .iter()
            .filter(|n| !after.contains(n))
            .cloned()
            .collect();
        let added = after
            .iter()
            .filter(|n| !before.contains(n))
            .cloned()
            .collect();
        let (plugins, changes) = self.load_stored_chain(interface, &shadow.candidate, true)?;
        self.activate_locked(interface, plugins, actor)?;
        // Only the run that was promoted ends; one started meanwhile keeps going.
        let _ = iface
            .shadow
            .compare_and_swap(&Some(shadow.clone()), None::<Arc<Shadow>>);
        self.shared.journal.shadow_end(shadow.run, "promoted")?;
        self.audit(
            actor,
            "shadow-promote",
            &format!("interface:{interface}"),
            &format!("run {}", shadow.run),
        )?;
        Ok((shadow.run, changes, removed, added))
    }

    /// The report of a shadow run on `interface` (its latest when `run` is `None`).
    /// For a live run it includes how many messages were skipped because the candidate
    /// fell behind. An unmasked report is the caller's to audit.
    pub fn shadow_report(
        &self,
        interface: &str,
        run: Option<i64>,
        options: ReportOptions,
    ) -> Result<ShadowReport, OpError> {
        let iface = self.iface(interface)?;
        let mut report =
            crate::shadow::report(self.shared.journal.as_ref(), interface, run, options)?;
        if let Some(live) = iface.shadow.load_full().filter(|s| s.run == report.run) {
            report.skipped = Some(live.counters.skipped.load(Ordering::Relaxed));
        }
        Ok(report)
    }

    /// Applies a re-read config to the running engine (`plexus run` does this on
    /// SIGHUP): the tables are read again and, when any changed, every running plug-in
    /// version (and its rollback history) is relinked to the new ones and swapped in
    /// atomically; the admin tokens are replaced. Other changes (sources, destinations,
    /// chains, plug-in files, grants, limits, `[engine]`, `[http]`, `[journal]`) need a
    /// restart: they are reported, not applied. If a table does not load, nothing
    /// changes. Audited as `config-reload`; a refused one as `config-reload-refused`,
    /// with the reason.
    pub fn reload(
        &self,
        new: &Config,
        assets: &dyn Assets,
        actor: &str,
    ) -> Result<ReloadReport, OpError> {
        let done = self.reload_checked(new, assets, actor);
        if let Err(OpError::ReloadRefused(reason)) = &done {
            // Best effort: the refusal changed nothing, and the log has it either way.
            if let Err(e) = self.audit(actor, "config-reload-refused", "config", reason) {
                tracing::warn!("the refused reload was not audited: {e}");
            }
        }
        done
    }

    fn reload_checked(
        &self,
        new: &Config,
        assets: &dyn Assets,
        actor: &str,
    ) -> Result<ReloadReport, OpError> {
        // Everything the engine's start loads (plug-in files, pins, grants, certificates,
        // folders; not the golden cases, which only `plexus check` and the activation
        // gate run): a config that would not start is refused now, not reported as
        // reloaded to fail at the next restart. Before the control lock: compiling
        // takes a moment, and it changes nothing. (The grants it reads may change before
        // the lock is taken; relinking below reads them again, under it.)
        let verified = verify_loading(new, assets, false).map_err(|e| {
            OpError::ReloadRefused(format!(
                "the new config would not start: {}",
                plexus_mllp::error_chain(&e)
            ))
        })?;
        let _control = self.control();
        let current = &self.shared.config;
        let mut report = ReloadReport::default();
        for (what, changed) in [
            ("[engine]", new.engine != current.engine),
            ("[http]", new.http != current.http),
            ("[journal]", new.journal != current.journal),
        ] {
            if changed {
                report.restart_needed.push(what.to_owned());
            }
        }
        let names = |a: Vec<String>, b: Vec<String>| -> Vec<String> {
            let mut all: Vec<String> = a.into_iter().chain(b).collect();
            all.sort();
            all.dedup();
            all
        };
        for name in names(
            current.plugins.keys().map(|k| k.to_string()).collect(),
            new.plugins.keys().map(|k| k.to_string()).collect(),
        ) {
            if current.plugins.get(name.as_str()) != new.plugins.get(name.as_str()) {
                report.restart_needed.push(format!("[plugins.{name}]"));
            } else if verified
                .plugins
                .iter()
                .any(|(n, sha)| *n == name && !self.shared.configured_wasm.contains_key(sha))
            {
                // Same config, other bytes: the file was replaced on disk.
                report
                    .restart_needed
                    .push(format!("[plugins.{name}] (its file changed on disk)"));
            }
        }
        for name in names(
            current.interfaces.keys().map(|k| k.to_string()).collect(),
            new.interfaces.keys().map(|k| k.to_string()).collect(),
        ) {
            let (old, next) = (
                current.interfaces.get(name.as_str()),
                new.interfaces.get(name.as_str()),
            );
            if old != next {
                // Which keys, so the operator knows what waits for the restart.
                let keys: Vec<&str> = match (old, next) {
                    (Some(a), Some(b)) => {
                        // Destructured, so a new key cannot be left out of this list.
                        let plexus_config::Interface {
                            source,
                            chain,
                            destinations,
                            ack_mode,
                            ordering,
                            order_by,
                            retry,
                            error_ack,
                            charset,
                        } = a;
                        [
                            ("source", *source != b.source),
                            ("chain", *chain != b.chain),
                            ("destinations", *destinations != b.destinations),
                            ("ack_mode", *ack_mode != b.ack_mode),
                            ("ordering", *ordering != b.ordering),
                            ("order_by", *order_by != b.order_by),
                            ("retry", *retry != b.retry),
                            ("error_ack", *error_ack != b.error_ack),
                            ("charset", *charset != b.charset),
                        ]
                        .into_iter()
                        .filter_map(|(key, changed)| changed.then_some(key))
                        .collect()
                    }
                    (None, _) => vec!["(added)"],
                    (_, None) => vec!["(removed)"],
                };
                report
                    .restart_needed
                    .push(format!("[interfaces.{name}] {}", keys.join(", ")));
            }
        }

        // The whole cause (`table visit-status: line 22: duplicate key`), not its summary.
        let tables = load_tables(new, assets)
            .map_err(|e| OpError::ReloadRefused(plexus_mllp::error_chain(&e)))?;
        let old = self.shared.tables.load_full();
        for name in names(
            old.keys().cloned().collect(),
            tables.keys().cloned().collect(),
        ) {
            if old.get(&name).map(|t| &**t) != tables.get(&name).map(|t| &**t) {
                report.tables_changed.push(name);
            }
        }
        report.tokens_changed = **self.shared.tokens.load() != new.admin.tokens;
        // Relink first; nothing changes unless every running version accepts.
        let tables = Arc::new(tables);
        let mut swaps = Vec::new();
        if !report.tables_changed.is_empty() {
            let relink = |chain: &ActiveChain| -> Result<ActiveChain, OpError> {
                let plugins = chain
                    .plugins
                    .iter()
                    .map(|p| {
                        let grants = self.grants_of(p.name()).unwrap_or_default();
                        p.relink(
                            &self.shared.sandbox,
                            &sandbox_grants(&grants),
                            tables.clone(),
                        )
                        .map(Arc::new)
                        .map_err(|e| OpError::ReloadRefused(plexus_mllp::error_chain(&e)))
                    })
                    .collect::<Result<Vec<_>, OpError>>()?;
                Ok(ActiveChain { plugins })
            };
            for iface in self.shared.interfaces.values() {
                let history = iface.history.lock().unwrap_or_else(|e| e.into_inner());
                let chain = relink(&iface.chain.load())?;
                let kept = history
                    .iter()
                    .map(|c| relink(c).map(Arc::new))
                    .collect::<Result<Vec<_>, OpError>>()?;
                swaps.push((iface.clone(), Arc::new(chain), kept));
            }
        }
        // A shadow comparing against the old tables would report their change as the
        // candidate's: those runs end, and the report (and its audit entry) says so.
        report.shadows_ended = swaps
            .iter()
            .filter_map(|(iface, _, _)| iface.shadow.load().as_ref().map(|s| s.run))
            .collect();
        // Audited before it takes effect; if the audit log cannot record it, nothing
        // changes.
        self.audit(actor, "config-reload", "config", &report.to_string())?;
        // Tokens first: whoever sees the new tables at work may count on the new tokens.
        if report.tokens_changed {
            self.shared.tokens.store(Arc::new(new.admin.tokens.clone()));
        }
        if !swaps.is_empty() {
            self.shared.tables.store(tables);
        }
        for (iface, chain, kept) in swaps {
            let mut history = iface.history.lock().unwrap_or_else(|e| e.into_inner());
            iface.chain.store(chain);
            *history = kept;
            if let Some(shadow) = iface.shadow.swap(None) {
                if let Err(e) = self
                    .shared
                    .journal
                    .shadow_end(shadow.run, "tables reloaded")
                {
                    tracing::warn!(run = shadow.run, "shadow run end not recorded: {e}");
                }
                if !report.shadows_ended.contains(&shadow.run) {
                    report.shadows_ended.push(shadow.run);
                }
            }
        }
        tracing::info!(
            tables = ?report.tables_changed,
            tokens_changed = report.tokens_changed,
            shadows_ended = ?report.shadows_ended,
            restart_needed = ?report.restart_needed,
            "config reloaded"
        );
        Ok(report)
    }

    /// Restarts the shadow runs that were going when the engine stopped. One whose
    /// versions no longer load (deleted, grants changed) is ended with the reason.
    fn resume_shadows(&self) {
        let runs = match self.shared.journal.shadow_runs(None) {
            Ok(runs) => runs,
            Err(e) => {
                tracing::error!("cannot read shadow runs: {e}");
                return;
            }
        };
        for record in runs.into_iter().filter(|r| r.ended.is_none()) {
            let interface = record.run.interface.clone();
            let restarted = self.iface(&interface).and_then(|iface| {
                if iface.shadow.load().is_some() {
                    // A newer run on this interface was restarted already.
                    return Err(OpError::Gate("a newer shadow run replaced it".into()));
                }
                let (plugins, _) =
                    self.load_stored_chain(&interface, &record.run.candidate, false)?;
                let shadow = Shadow::start(
                    record.id,
                    record.run.candidate.clone(),
                    plugins,
                    self.shared.journal.clone(),
                )?;
                iface.shadow.store(Some(Arc::new(shadow)));
                Ok(())
            });
            match restarted {
                Ok(()) => tracing::info!(interface, run = record.id, "shadow run resumed"),
                Err(e) => {
                    tracing::warn!(interface, run = record.id, "shadow run not resumed: {e}");
                    let _ = self
                        .shared
                        .journal
                        .shadow_end(record.id, &format!("not resumed: {e}"));
                }
            }
        }
    }

    /// The admin API's tokens now (the config's, or a reload's).
    pub fn tokens(&self) -> Arc<Vec<plexus_config::AdminToken>> {
        self.shared.tokens.load_full()
    }

    /// The plug-in's grants now: the config's, or a reviewer's change.
    pub fn grants_of(&self, plugin: &str) -> Option<plexus_config::Grants> {
        self.shared
            .grants
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(plugin)
            .cloned()
    }

    /// Changes a plug-in's grants (the reviewer's decision), effective at once: every
    /// running version of it is relinked against the new grants and swapped in
    /// atomically, its earlier chains (for rollback) too, so a revoked capability cannot
    /// come back with a rollback. If a running version imports a capability the new
    /// grants do not cover, nothing changes and the error names it. Shadow runs that
    /// include the plug-in end (`grants changed`). The change is kept in
    /// `<data_dir>/grants.json`, which overrides the config's `grants` for the plug-in
    /// from then on, and is audited with the grants before and after.
    pub fn set_grants(
        &self,
        plugin: &str,
        grants: &[String],
        actor: &str,
    ) -> Result<crate::grants::GrantChange, OpError> {
        let _control = self.control();
        let configured = self
            .shared
            .config
            .plugins
            .get(plugin)
            .ok_or_else(|| OpError::UnknownPlugin(plugin.to_owned()))?;
        let new = crate::grants::parse(grants, &self.shared.config)?;
        // The control lock keeps other writers out; readers of the grants wait only for
        // the final insert below.
        let all = self
            .shared
            .grants
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let before = all
            .get(plugin)
            .cloned()
            .unwrap_or_else(|| configured.grants.clone());
        let sandbox_new = sandbox_grants(&new);
        let tables = self.shared.tables.load_full();
        let regrant = |chain: &ActiveChain, iface: &str| -> Result<ActiveChain, OpError> {
            let plugins = chain
                .plugins
                .iter()
                .map(|p| {
                    if p.name() != plugin {
                        return Ok(p.clone());
                    }
                    p.relink(&self.shared.sandbox, &sandbox_new, tables.clone())
                        .map(Arc::new)
                        .map_err(|e| {
                            OpError::GrantsRefused(match e {
                                plexus_sandbox::Error::NotGranted {
                                    digest,
                                    import,
                                    capability,
                                    grant,
                                    ..
                                } => format!(
                                    "the version of {plugin} ({digest}) running on interface \
                                     {iface} imports {capability} ({import}); keep \"{grant}\" \
                                     in the new grants, or first activate a version that does \
                                     not import it"
                                ),
                                other => format!(
                                    "the version running on interface {iface} would not load \
                                     with them: {other}"
                                ),
                            })
                        })
                })
                .collect::<Result<Vec<_>, OpError>>()?;
            Ok(ActiveChain { plugins })
        };
        // Relink everything first; change nothing unless every running version accepts.
        let mut swaps = Vec::new();
        for iface in self.shared.interfaces.values() {
            let history = iface.history.lock().unwrap_or_else(|e| e.into_inner());
            let active = iface.chain.load_full();
            if !active.plugins.iter().any(|p| p.name() == plugin)
                && !history
                    .iter()
                    .any(|c| c.plugins.iter().any(|p| p.name() == plugin))
            {
                continue;
            }
            let chain = regrant(&active, &iface.name)?;
            // Earlier chains that no longer load under the new grants are dropped from
            // the rollback history.
            let kept: Vec<Arc<ActiveChain>> = history
                .iter()
                .filter_map(|c| regrant(c, &iface.name).ok().map(Arc::new))
                .collect();
            swaps.push((iface.clone(), Arc::new(chain), kept));
        }
        let mut change = crate::grants::GrantChange {
            plugin: plugin.to_owned(),
            before: before.to_list(),
            after: new.to_list(),
            relinked: swaps.iter().map(|(i, _, _)| i.name.clone()).collect(),
            shadows_ended: Vec::new(),
        };
        // Audited, then saved, then in effect: a failure at either step changes nothing.
        self.audit(
            actor,
            "grant-change",
            &format!("plugin:{plugin}"),
            &format!(
                "before [{}] after [{}]; relinked on [{}]",
                change.before.join(", "),
                change.after.join(", "),
                change.relinked.join(", ")
            ),
        )?;
        crate::grants::save(&self.shared.config, plugin, &new, &all)?;
        self.shared
            .grants
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(plugin.to_owned(), new);
        for (iface, chain, kept) in swaps {
            let mut history = iface.history.lock().unwrap_or_else(|e| e.into_inner());
            iface.chain.store(chain);
            *history = kept;
        }
        for iface in self.shared.interfaces.values() {
            let shadow = iface.shadow.load_full();
            if let Some(shadow) = shadow.filter(|s| s.candidate.iter().any(|(n, _)| n == plugin)) {
                let _ = iface
                    .shadow
                    .compare_and_swap(&Some(shadow.clone()), None::<Arc<Shadow>>);
                if let Err(e) = self.shared.journal.shadow_end(shadow.run, "grants changed") {
                    tracing::warn!(run = shadow.run, "shadow run end not recorded: {e}");
                }
                change.shadows_ended.push(shadow.run);
            }
        }
        tracing::info!(
            plugin,
            before = ?change.before,
            after = ?change.after,
            "grants changed"
        );
        Ok(change)
    }

    fn iface(&self, interface: &str) -> Result<&Arc<Iface>, OpError> {
        self.shared
            .interfaces
            .get(interface)
            .ok_or_else(|| OpError::NoSuchInterface(interface.to_owned()))
    }

    /// Resumes unfinished work, binds every source and starts the delivery workers.
    /// Everything stops when `shutdown` is cancelled; [`Running::wait`] waits for that.
    ///
    /// One engine at a time may run on a data folder: a second one would deliver the same
    /// queues again and keep a duplicate window of its own. The first takes an exclusive
    /// lock on `<data_dir>/engine.lock` and holds it until [`Running`] is dropped (or the
    /// process ends, however it ends); a second gets [`BuildError::Locked`] before it
    /// touches anything. Tools beside a running engine (`plexus errors`) take no lock.
    ///
    /// `plexus run` takes the lock with [`lock_data_dir`] before it even builds the engine
    /// (so a second one does not open, let alone migrate, the journal) and hands it to
    /// [`Engine::start_locked`].
    pub async fn start(&self, shutdown: CancellationToken) -> Result<Running, BuildError> {
        let lock = lock_data_dir(&self.shared.config.engine.data_dir)?;
        self.start_locked(lock, shutdown).await
    }

    /// [`Engine::start`] with the data folder's lock already taken.
    pub async fn start_locked(
        &self,
        mut lock: DataDirLock,
        shutdown: CancellationToken,
    ) -> Result<Running, BuildError> {
        check_can_serve(&self.shared.config)?;
        // Built, so the journal is open: from now on the folder is known to have one.
        lock.journal_opened()?;
        self.forget_stale_chains()?;
        if lock.unclean_before() {
            // Before the lanes are set up: a changed split moves deliveries, and the
            // window is each lane as the stopped engine served it.
            self.flag_possible_resends().await?;
        }
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || set_up_lanes(&shared))
            .await
            .map_err(|e| BuildError::Unsupported(format!("setting up delivery lanes: {e}")))??;
        self.resume().await?;
        let mut tasks = JoinSet::new();
        let mut mllp = BTreeMap::new();
        // Every listener is bound before any folder is read or anything delivered, so an
        // address in use stops the start before it has taken or sent a message.
        for iface in self.shared.interfaces.values() {
            if let Inbound::Mllp(source) = &iface.config.source {
                let addr = crate::mllp_source::start(
                    &self.shared,
                    iface,
                    source,
                    shutdown.clone(),
                    &mut tasks,
                )
                .await?;
                mllp.insert(iface.name.clone(), addr);
            }
        }
        let http = crate::http::start(&self.shared, shutdown.clone(), &mut tasks).await?;
        // From here on a kill leaves sends unrecorded: the next start must know.
        lock.record_state(&format!("running (pid {})\n", std::process::id()))?;
        for iface in self.shared.interfaces.values() {
            if let Inbound::File(source) = &iface.config.source {
                tasks.spawn(crate::file_source::run(
                    self.shared.clone(),
                    iface.clone(),
                    source.clone(),
                    shutdown.clone(),
                ));
            }
            for dest in &iface.config.destinations {
                // One worker per connection, each serving its lane of the queue.
                for lane in 0..crate::deliver::lane_count(dest) {
                    let worker = crate::deliver::Worker::new(
                        self.shared.clone(),
                        iface.clone(),
                        dest.clone(),
                        lane,
                        shutdown.clone(),
                    );
                    tasks.spawn(worker.run());
                }
            }
        }
        tasks.spawn(retention(self.shared.clone(), shutdown));
        Ok(Running {
            mllp,
            http,
            tasks,
            lock,
            unrecorded_results: self.shared.unrecorded_results.clone(),
        })
    }

    /// After an unclean stop: flags what the stopped engine's lanes may have sent
    /// without recording (see [`Journal::flag_possible_resends`]).
    async fn flag_possible_resends(&self) -> Result<(), BuildError> {
        let journal = self.shared.journal.clone();
        let flagged = tokio::task::spawn_blocking(move || {
            journal.flag_possible_resends(crate::deliver::UNRECORDED_WINDOW)
        })
        .await
        .map_err(|e| BuildError::Unsupported(format!("flagging possible resends: {e}")))??;
        if flagged > 0 {
            tracing::warn!(
                deliveries = flagged,
                "the engine before this one did not record a clean stop (it was killed, the \
                 power went, or it was an earlier release): deliveries it may have sent \
                 without recording are flagged `possible_resend`; their receivers may get \
                 them twice, with the same MSH-10"
            );
        } else {
            tracing::info!(
                "the engine before this one did not record a clean stop; nothing owed needed a flag"
            );
        }
        Ok(())
    }

    /// Runs messages whose chain never finished (a crash between journal and chain can
    /// only happen for messages appended by other tools; the engine's own ingest commits
    /// both together) before any new message is taken.
    async fn resume(&self) -> Result<(), BuildError> {
        self.resume_shadows();
        let journal = self.shared.journal.clone();
        let unfinished = tokio::task::spawn_blocking(move || journal.unfinished())
            .await
            .map_err(|e| BuildError::Unsupported(format!("resume failed: {e}")))??;
        let mut owed = 0_usize;
        for work in unfinished {
            match work.resume {
                Resume::Process => {
                    if let Err(err) = self.reprocess(work.id, None).await {
                        tracing::error!(id = %work.id, "cannot resume message: {err}");
                    }
                }
                Resume::Deliver(_) => owed += 1,
            }
        }
        if owed > 0 {
            tracing::info!(
                messages = owed,
                "resuming deliveries owed before the restart"
            );
        }
        Ok(())
    }

    /// Replays a message through its interface's current chain (an operator action):
    /// on success its deliveries are queued again (destinations that already have it are
    /// left alone) and its open error is resolved with `note`; on failure the error is
    /// updated. Needs no running engine: a running one picks the deliveries up.
    pub async fn replay(
        &self,
        id: MessageId,
        note: &str,
        actor: &str,
    ) -> Result<ReplayOutcome, OpError> {
        // The note closes the error when the replay succeeds: refused before anything
        // runs, as a resolve without one is.
        if note.trim().is_empty() {
            return Err(plexus_journal::Error::NoteRequired(id).into());
        }
        let _turn = ReplayTurn::take(&self.shared, id)?;
        // Replay works the error queue: a message with no open error has nothing to
        // replay, and running it again would only add stages to its history.
        let journal = self.shared.journal.clone();
        let record = blocking(move || journal.show(id)).await?;
        if !record.errors.iter().any(|e| e.resolution.is_none()) {
            return Err(OpError::NothingToReplay {
                id,
                state: replay_state(&record),
            });
        }
        if record
            .errors
            .iter()
            .any(|e| e.resolution.is_none() && e.stage == crate::ingest::NOT_KEPT_STAGE)
        {
            return Err(OpError::NotKept(id));
        }
        self.reprocess(
            id,
            Some(Replayed {
                note: note.to_owned(),
                actor: actor.to_owned(),
            }),
        )
        .await
    }

    /// Runs message `id` through its interface's current chain again and writes the
    /// result. With `replay` (an operator's replay) it also requeues what was not
    /// delivered, and writes the replay's count, the resolution of its open error
    /// (unless it failed again) and its audit entry in the same transaction.
    async fn reprocess(
        &self,
        id: MessageId,
        replay: Option<Replayed>,
    ) -> Result<ReplayOutcome, OpError> {
        let journal = self.shared.journal.clone();
        let record = blocking(move || journal.show(id)).await?;
        let iface = self
            .shared
            .interfaces
            .get(&record.inbound.interface)
            .cloned()
            .ok_or_else(|| OpError::UnknownInterface {
                id,
                interface: record.inbound.interface.clone(),
            })?;
        let shared = self.shared.clone();
        let task_iface = iface.clone();
        let outcome = tokio::task::spawn_blocking(move || -> Result<_, OpError> {
            let iface = task_iface;
            let (processing, outcome) = match iface.parse(record.inbound.raw.clone()) {
                Err(error) => {
                    let failure = chain::Failure::parse(&error);
                    let verdict = Verdict::Failed(failure.clone());
                    let processing = processing_for(&iface, Vec::new(), &verdict);
                    (processing, ReplayOutcome::FailedAgain(failure))
                }
                Ok(msg) => {
                    let order_key = iface.order_key(&msg);
                    // The intake rules hold on replay and resume as on arrival: an ACK is
                    // never forwarded, and a stored copy without a usable MSH-10 is
                    // refused again (only the sender can fix it).
                    let (stages, verdict) = match ingest::intake_verdict(&msg) {
                        Some(verdict) => (Vec::new(), verdict),
                        None => {
                            let ctx = Context {
                                interface: iface.name.clone(),
                                site: shared.site.clone(),
                                message_id: record.inbound.control_id.clone().unwrap_or_default(),
                                received_at_ms: millis(record.inbound.received_at),
                            };
                            let run = chain::run(&iface.chain.load().plugins, msg, &ctx);
                            (run.stages, run.verdict)
                        }
                    };
                    let mut processing = processing_for(&iface, stages, &verdict);
                    processing.requeue = replay.is_some();
                    processing.order_key = order_key;
                    let delivered = |d: &String| {
                        record.deliveries.iter().any(|x| {
                            x.destination == *d
                                && x.status == plexus_journal::DeliveryStatus::Delivered
                        })
                    };
                    let outcome = match verdict {
                        Verdict::Forwarded => {
                            let (already_delivered, destinations) =
                                processing.enqueue.iter().cloned().partition(delivered);
                            ReplayOutcome::Requeued {
                                destinations,
                                already_delivered,
                            }
                        }
                        Verdict::Filtered { reason, .. } => ReplayOutcome::Filtered { reason },
                        Verdict::Failed(failure) => ReplayOutcome::FailedAgain(failure),
                    };
                    (processing, outcome)
                }
            };
            // A requeue is announced by no push: no lane may come into sync before it
            // commits without seeing it, or newer messages could go out ahead of it.
            let _hold = iface.hold_feeds();
            match replay {
                None => shared.journal.process(id, processing)?,
                Some(Replayed { note, actor }) => {
                    let result = match &outcome {
                        ReplayOutcome::Requeued { .. } => "requeued".to_owned(),
                        ReplayOutcome::Filtered { .. } => "filtered".to_owned(),
                        ReplayOutcome::FailedAgain(f) => format!("failed again at {}", f.stage),
                    };
                    let resolve = !matches!(outcome, ReplayOutcome::FailedAgain(_));
                    let entry = plexus_journal::AuditEntry {
                        actor,
                        action: "replay".to_owned(),
                        subject: format!("message:{id}"),
                        detail: format!("{result}; note: {note}"),
                    };
                    shared.journal.process_replay(
                        id,
                        processing,
                        resolve.then_some(note.as_str()),
                        entry,
                    )?;
                }
            }
            Ok(outcome)
        })
        .await
        .map_err(|e| OpError::Internal(e.to_string()))??;
        if matches!(outcome, ReplayOutcome::Requeued { .. }) {
            iface.wake_destinations();
        }
        Ok(outcome)
    }
}

/// Who replays a message, and their note (see `Engine::reprocess`).
struct Replayed {
    note: String,
    actor: String,
}

/// Where a message with no open error stands, for the refusal to replay it.
fn replay_state(record: &plexus_journal::MessageRecord) -> String {
    if record.deliveries.is_empty() {
        return if record.errors.is_empty() {
            "it was never in the error queue and is owed to no destination".to_owned()
        } else {
            "its error was resolved and it is owed to no destination".to_owned()
        };
    }
    let each: Vec<String> = record
        .deliveries
        .iter()
        .map(|d| format!("{} {}", d.destination, d.status.as_str()))
        .collect();
    format!("its deliveries: {}", each.join(", "))
}

/// How often delivered messages past the retention period are pruned.
const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Prunes delivered messages older than `[journal] retention`, at start and hourly.
/// Messages with open errors or owed deliveries are never pruned (the journal's rule).
async fn retention(shared: Arc<Shared>, shutdown: CancellationToken) {
    let keep = shared.config.journal.retention;
    loop {
        let journal = shared.journal.clone();
        let cutoff = SystemTime::now().checked_sub(keep);
        if let Some(cutoff) = cutoff {
            match tokio::task::spawn_blocking(move || journal.prune_delivered(cutoff)).await {
                Ok(Ok(0)) => {}
                Ok(Ok(n)) => {
                    tracing::info!(messages = n, "pruned delivered messages past retention")
                }
                Ok(Err(err)) => tracing::error!("pruning the journal failed: {err}"),
                Err(err) => tracing::error!("pruning task failed: {err}"),
            }
        }
        tokio::select! {
            () = tokio::time::sleep(PRUNE_EVERY) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// `name@sha256-prefix` of each stage, for logs and the audit trail.
fn describe_chain(chain: &ActiveChain) -> String {
    describe_digests(&chain.digests())
}

fn describe_digests(chain: &[(String, String)]) -> String {
    let stages: Vec<String> = chain.iter().map(|(n, d)| stage_label(n, d)).collect();
    format!("[{}]", stages.join(", "))
}

/// `name@sha256-prefix`.
fn stage_label(name: &str, digest: &str) -> String {
    format!("{name}@{}", plexus_sandbox::inspect::short(digest))
}

/// The configured plug-ins, loaded, by name; and their bytes, by sha256.
type Loaded = (HashMap<String, Arc<Plugin>>, HashMap<String, Arc<[u8]>>);

/// Loads every plug-in of the site (pin, world and grants checked, compiled).
fn load_plugins(
    config: &Config,
    assets: &dyn Assets,
    sandbox: &Sandbox,
    grants: &std::collections::BTreeMap<String, plexus_config::Grants>,
    tables: &Arc<TableSet>,
) -> Result<Loaded, BuildError> {
    let (mut plugins, mut wasm) = (HashMap::new(), HashMap::new());
    for (name, plugin) in &config.plugins {
        let bytes = read_plugin(assets, name.as_str(), plugin)?;
        let (loaded, reuse) = load_plugin(sandbox, grants, tables, name.as_str(), plugin, &bytes)?;
        match reuse {
            Some(Reuse::Kept(note)) => tracing::info!(plugin = %name, "{note}"),
            Some(Reuse::Ignored(note)) => tracing::warn!(plugin = %name, "{note}"),
            None => {}
        }
        wasm.insert(loaded.sha256().to_owned(), Arc::from(bytes));
        plugins.insert(name.to_string(), Arc::new(loaded));
    }
    Ok((plugins, wasm))
}

/// The bytes of a configured plug-in.
fn read_plugin(
    assets: &dyn Assets,
    name: &str,
    plugin: &plexus_config::Plugin,
) -> Result<Vec<u8>, BuildError> {
    assets
        .read(&plugin.file)
        .map_err(|source| BuildError::Asset {
            what: format!("plug-in {name}"),
            source_name: describe(&plugin.file),
            source,
        })
}

/// Loads one configured plug-in from its bytes with its effective grants; with what its
/// `reuse-instance` grant does, if it has one.
fn load_plugin(
    sandbox: &Sandbox,
    grants: &std::collections::BTreeMap<String, plexus_config::Grants>,
    tables: &Arc<TableSet>,
    name: &str,
    plugin: &plexus_config::Plugin,
    bytes: &[u8],
) -> Result<(Plugin, Option<Reuse>), BuildError> {
    let spec = PluginSpec {
        name: name.to_owned(),
        sha256: plugin.sha256.clone(),
        grants: sandbox_grants(grants.get(name).unwrap_or(&plugin.grants)),
        limits: limits(&plugin.limits),
    };
    let loaded = Plugin::load(sandbox, &spec, bytes, tables.clone())?;
    tracing::info!(
        plugin = %name,
        sha256 = loaded.sha256(),
        "plug-in loaded"
    );
    let reuse = reuse_note(name, &loaded, &spec.grants);
    Ok((loaded, reuse))
}

/// What a `reuse-instance` grant does for a plug-in.
enum Reuse {
    /// Its instances are kept between messages.
    Kept(String),
    /// Granted, but the plug-in does not ask: it has no effect.
    Ignored(String),
}

impl Reuse {
    fn into_note(self) -> String {
        match self {
            Reuse::Kept(note) | Reuse::Ignored(note) => note,
        }
    }
}

/// A note for grants the component cannot use, since it does not import what they give
/// (`log`, or any `tables:` when it imports no table lookups): least privilege says remove
/// them. (`reuse-instance` has its own note.)
fn surplus_note(
    name: &str,
    plugin: &Plugin,
    grants: Option<&plexus_config::Grants>,
) -> Option<String> {
    let grants = grants?;
    let imports = plugin.inspection().capabilities();
    let mut surplus = Vec::new();
    let mut missing = Vec::new();
    if grants.log && !imports.contains(&"log") {
        surplus.push("log".to_owned());
        missing.push("the log");
    }
    if !grants.tables.is_empty() && !imports.contains(&"tables") {
        surplus.extend(grants.tables.iter().map(|t| format!("tables:{t}")));
        missing.push("table lookups");
    }
    (!surplus.is_empty()).then(|| {
        format!(
            "plug-in {name}: granted {} but the component does not import {}, so the grant \
             has no effect; remove it for least privilege",
            surplus.join(", "),
            missing.join(" or ")
        )
    })
}

fn reuse_note(name: &str, plugin: &Plugin, grants: &plexus_sandbox::Grants) -> Option<Reuse> {
    if !grants.reuse_instance {
        return None;
    }
    Some(if plugin.inspection().requests_reuse {
        Reuse::Kept(format!(
            "plug-in {name}: instances are kept between messages (`reuse-instance` granted): \
             whatever it leaves in its memory reaches the next message"
        ))
    } else {
        Reuse::Ignored(format!(
            "plug-in {name}: `reuse-instance` is granted but the plug-in does not ask for \
             reuse, so it has no effect (a fresh instance per message); remove the grant"
        ))
    })
}

/// What [`verify`] loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Each plug-in's name and hex sha256, by name.
    pub plugins: Vec<(String, String)>,
    /// Each table's name and row count, by name.
    pub tables: Vec<(String, usize)>,
    /// What an operator should know about what loads, though it is not wrong: a
    /// `reuse-instance` grant in effect, or one with no effect; a chain kept from an
    /// activation that will run instead of the config's.
    pub notes: Vec<String>,
}

/// The most stages a chain sent to activate, trial or shadow may have: each stage is a
/// plug-in run per message, and a real chain has a handful.
const MAX_CHAIN_STAGES: usize = 32;

/// One replay's hold on its message (see `Shared::replaying`), let go when dropped.
struct ReplayTurn<'a> {
    shared: &'a Shared,
    id: MessageId,
}

impl<'a> ReplayTurn<'a> {
    fn take(shared: &'a Shared, id: MessageId) -> Result<Self, OpError> {
        let mut replaying = shared
            .replaying
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !replaying.insert(id) {
            return Err(OpError::ReplayInProgress(id));
        }
        Ok(ReplayTurn { shared, id })
    }
}

impl Drop for ReplayTurn<'_> {
    fn drop(&mut self) {
        self.shared
            .replaying
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.id);
    }
}

/// What the start needs beyond the config's own validity, checked by `plexus check` and
/// again by the start before it takes anything: every certificate and key it would serve
/// with, every destination's connection settings, every drop folder.
fn check_can_serve(config: &Config) -> Result<(), BuildError> {
    check_server_tls(config)?;
    crate::deliver::check_destinations(config)?;
    check_drop_folders(config)
}

/// Every file source's folder exists and is a folder: a typo in `dir` would otherwise
/// show only as a warning at each poll while the producer's files pile up elsewhere.
fn check_drop_folders(config: &Config) -> Result<(), BuildError> {
    for (name, iface) in &config.interfaces {
        if let Inbound::File(source) = &iface.source {
            let problem = match std::fs::metadata(&source.dir) {
                Ok(meta) if meta.is_dir() => None,
                Ok(_) => Some("it is not a folder".to_owned()),
                Err(e) => Some(format!("{e} (create it, or fix `dir`)")),
            };
            if let Some(reason) = problem {
                return Err(BuildError::DropFolder {
                    interface: name.to_string(),
                    path: source.dir.clone(),
                    reason,
                });
            }
        }
    }
    Ok(())
}

/// Loads every certificate and key the HTTP server and the MLLP sources would serve with,
/// so a missing or malformed one is found by `plexus check` and before the start takes
/// anything.
fn check_server_tls(config: &Config) -> Result<(), BuildError> {
    let servers = config
        .http
        .tls
        .as_ref()
        .map(|t| ("[http]".to_owned(), t))
        .into_iter()
        .chain(config.interfaces.iter().filter_map(|(name, i)| {
            match &i.source {
                Inbound::Mllp(source) => source
                    .tls
                    .as_ref()
                    .map(|t| (format!("interface {name}"), t)),
                _ => None,
            }
        }));
    for (interface, tls) in servers {
        plexus_mllp::tls::server_config_from_pem(&tls.cert, &tls.key).map_err(|e| {
            BuildError::Tls {
                interface,
                detail: plexus_mllp::error_chain(&e),
            }
        })?;
    }
    Ok(())
}

/// Takes the exclusive lock on `<data_dir>/engine.lock` (see [`Engine::start`]),
/// creating the folder if need be. The operating system releases it when the process
/// ends, so a killed engine leaves no stale lock behind.
pub fn lock_data_dir(data_dir: &std::path::Path) -> Result<DataDirLock, BuildError> {
    std::fs::create_dir_all(data_dir).map_err(|source| BuildError::DataDir {
        path: data_dir.to_path_buf(),
        source,
    })?;
    let path = data_dir.join("engine.lock");
    // An existing but empty file was left by an engine that never wrote its state there
    // (one from before this release): how it stopped is unknown.
    let existed = path.exists();
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|source| BuildError::Lock {
            path: path.clone(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(BuildError::Locked {
                data_dir: data_dir.to_path_buf(),
                lock: path,
            });
        }
        Err(std::fs::TryLockError::Error(source)) => {
            return Err(BuildError::Lock { path, source });
        }
    }
    // A few bytes say how the last engine stopped; a new file means none ran.
    let mut head = [0_u8; 16];
    let read = std::io::Read::read(&mut file, &mut head).map_err(|source| BuildError::Lock {
        path: path.clone(),
        source,
    })?;
    let state = &head[..read];
    let mut lock = DataDirLock {
        file,
        path,
        unclean_before: state.starts_with(b"running") || (existed && read == 0),
        // `stopped` and `running` mean a journal was opened here. An empty file may be
        // an earlier release's, or one whose first write a crash cut off: not evidence
        // enough to refuse a start.
        journal_before: state.starts_with(b"stopped") || state.starts_with(b"running"),
    };
    if !existed {
        // No engine has run here; say so, so that a start that fails before its workers
        // run does not leave an empty file that reads as an earlier release's.
        lock.record_state("new\n")?;
    }
    Ok(lock)
}

/// Everything [`Engine::build`] checks except the journal, with nothing started or
/// written: every table file read and parsed, every plug-in read, its pin, world and
/// grants checked (including grants changed through the admin API) and compiled, and
/// the golden cases a plug-in's config names run as the activation gate runs them.
/// `plexus check` runs it after the config itself validates, so a site that passes
/// check does not fail at start for a missing or malformed file.
pub fn verify(config: &Config, assets: &dyn Assets) -> Result<Verified, BuildError> {
    verify_loading(config, assets, true)
}

/// [`verify`], with or without the golden cases. A reload leaves them out: the engine's
/// start does not run them, and a case folder already updated for an uploaded version
/// (the gate runs it against candidates) would refuse every table edit.
fn verify_loading(
    config: &Config,
    assets: &dyn Assets,
    golden: bool,
) -> Result<Verified, BuildError> {
    check_can_serve(config)?;
    let tables = Arc::new(load_tables(config, assets)?);
    let sandbox = Sandbox::new(SandboxConfig {
        max_instances: 1,
        ..sandbox_config(config)
    })?;
    let grants = crate::grants::effective(config)?;
    let (mut plugins, mut notes) = (Vec::new(), Vec::new());
    for (name, plugin) in &config.plugins {
        let bytes = read_plugin(assets, name.as_str(), plugin)?;
        let (loaded, reuse) =
            load_plugin(&sandbox, &grants, &tables, name.as_str(), plugin, &bytes)?;
        notes.extend(reuse.map(Reuse::into_note));
        notes.extend(surplus_note(
            name.as_str(),
            &loaded,
            grants.get(name.as_str()),
        ));
        if let Some(dir) = plugin.cases.as_ref().filter(|_| golden) {
            golden_cases(name.as_str(), &bytes, dir, &plugin.limits).map_err(|e| {
                BuildError::GoldenCases(match e {
                    OpError::Gate(why) => why,
                    other => other.to_string(),
                })
            })?;
        }
        plugins.push((name.to_string(), loaded.sha256().to_owned()));
    }
    notes.extend(verify_kept_chains(
        config, &sandbox, &grants, &tables, &plugins,
    )?);
    plugins.sort();
    let mut tables: Vec<_> = tables.iter().map(|(n, t)| (n.clone(), t.len())).collect();
    tables.sort();
    Ok(Verified {
        plugins,
        tables,
        notes,
    })
}

/// Loads the chains kept in `chains.json` that a start would run (see
/// [`Engine::restore_chains`]) as the start would, so that `plexus check` predicts it;
/// returns a note for each. `plugins`: each configured plug-in's name and digest.
fn verify_kept_chains(
    config: &Config,
    sandbox: &Sandbox,
    grants: &BTreeMap<String, plexus_config::Grants>,
    tables: &Arc<TableSet>,
    plugins: &[(String, String)],
) -> Result<Vec<String>, BuildError> {
    let file = crate::chains::file(config);
    let store = plugin_store_path(config);
    let configured: BTreeMap<String, String> = plugins.iter().cloned().collect();
    let mut notes = Vec::new();
    for (interface, kept) in crate::chains::load(config)? {
        let Some(iface) = config
            .interfaces
            .iter()
            .find(|(n, _)| n.as_str() == interface)
        else {
            continue;
        };
        let config_chain: crate::chains::Digests = iface
            .1
            .chain
            .iter()
            .filter_map(|p| plugins.iter().find(|(n, _)| n == p.as_str()).cloned())
            .collect();
        let activated = describe_digests(&kept.chain);
        match kept.standing(&config_chain, config, &configured) {
            Standing::Runs => {}
            Standing::ConfigNamesIt => continue,
            other => {
                notes.push(format!(
                    "interface {interface}: {activated}, activated through the admin API by {}, \
                     will not run: {}; the config's chain runs, and the start forgets the \
                     activation",
                    kept.by,
                    other.reason()
                ));
                continue;
            }
        }
        for (name, sha256) in &kept.chain {
            let refused = |reason: String| kept_chain_refused(config, &interface, &kept, reason);
            let Some((id, plugin)) = config.plugins.iter().find(|(n, _)| n.as_str() == name) else {
                continue;
            };
            let path = store.join(format!("{sha256}.wasm"));
            let bytes = crate::assets::read_bounded(&path)
                .map_err(|e| refused(format!("{name} {sha256}: {}: {e}", path.display())))?;
            let pinned = plexus_config::Plugin {
                sha256: Some(sha256.clone()),
                ..plugin.clone()
            };
            load_plugin(sandbox, grants, tables, id.as_str(), &pinned, &bytes)
                .map_err(|e| refused(e.to_string()))?;
        }
        notes.push(format!(
            "interface {interface} will run {activated}, activated through the admin API by {} \
             (kept in {}), not the config's chain",
            kept.by,
            file.display()
        ));
    }
    Ok(notes)
}

/// The error for a chain kept in `chains.json` that no longer loads (`reason`).
fn kept_chain_refused(
    config: &Config,
    interface: &str,
    kept: &crate::chains::Kept,
    reason: String,
) -> BuildError {
    BuildError::ActivatedChain(Box::new(crate::error::ActivatedChain {
        interface: interface.to_owned(),
        chain: describe_digests(&kept.chain),
        by: kept.by.clone(),
        file: crate::chains::file(config),
        store: plugin_store_path(config),
        reason,
    }))
}

/// Reads and parses every table the config declares.
fn load_tables(config: &Config, assets: &dyn Assets) -> Result<TableSet, BuildError> {
    let mut tables = TableSet::new();
    for (name, table) in &config.tables {
        let bytes = assets
            .read(&table.file)
            .map_err(|source| BuildError::Asset {
                what: format!("table {name}"),
                source_name: describe(&table.file),
                source,
            })?;
        let text = String::from_utf8_lossy(&bytes);
        let table = Table::from_csv(name.as_str(), &text).map_err(|source| BuildError::Table {
            file: describe(&table.file),
            source,
        })?;
        tables.insert(name.to_string(), Arc::new(table));
    }
    Ok(tables)
}

/// What a config reload did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReloadReport {
    /// Tables whose content changed (or that were added or removed): applied.
    pub tables_changed: Vec<String>,
    /// The admin tokens changed: applied.
    pub tokens_changed: bool,
    /// Shadow runs ended because the tables changed under them.
    pub shadows_ended: Vec<i64>,
    /// Sections that changed but take effect only after a restart.
    pub restart_needed: Vec<String>,
}

impl std::fmt::Display for ReloadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |v: &[String]| {
            if v.is_empty() {
                "none".to_owned()
            } else {
                v.join(", ")
            }
        };
        write!(
            f,
            "tables reloaded: {}; tokens {}; needs a restart: {}",
            list(&self.tables_changed),
            if self.tokens_changed {
                "replaced"
            } else {
                "unchanged"
            },
            list(&self.restart_needed)
        )?;
        if !self.shadows_ended.is_empty() {
            let runs: Vec<String> = self.shadows_ended.iter().map(i64::to_string).collect();
            write!(
                f,
                "; shadow runs ended (the tables changed under them; start them again): {}",
                runs.join(", ")
            )?;
        }
        Ok(())
    }
}

/// The HL7 charset a config `charset` names.
pub(crate) fn hl7_charset(charset: plexus_config::Charset) -> plexus_hl7::Charset {
    match charset {
        plexus_config::Charset::Ascii => plexus_hl7::Charset::Ascii,
        plexus_config::Charset::Latin1 => plexus_hl7::Charset::Latin1,
        plexus_config::Charset::Latin9 => plexus_hl7::Charset::Latin9,
        plexus_config::Charset::Utf8 => plexus_hl7::Charset::Utf8,
    }
}

/// The journal file for a config.
pub fn journal_path(config: &Config) -> PathBuf {
    config.engine.data_dir.join("journal.db")
}

/// The plug-in store for a config: uploaded versions, as `<sha256>.wasm`.
pub fn plugin_store_path(config: &Config) -> PathBuf {
    config.engine.data_dir.join("plugins")
}

fn sandbox_grants(g: &plexus_config::Grants) -> plexus_sandbox::Grants {
    plexus_sandbox::Grants {
        log: g.log,
        tables: g.tables.iter().map(|t| t.to_string()).collect(),
        reuse_instance: g.reuse_instance,
    }
}

/// The engine's sandbox: pool slots with room for the largest memory limit a plug-in
/// is given.
fn sandbox_config(config: &Config) -> SandboxConfig {
    let largest = config
        .plugins
        .values()
        .map(|p| usize::try_from(p.limits.memory_bytes).unwrap_or(usize::MAX))
        .max()
        .unwrap_or(0);
    SandboxConfig::default().with_room_for(largest)
}

fn limits(l: &plexus_config::Limits) -> plexus_sandbox::Limits {
    let size = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
    plexus_sandbox::Limits {
        memory_bytes: size(l.memory_bytes),
        timeout: l.timeout,
        max_message_bytes: size(l.max_message_bytes),
        log_lines: size(l.log_lines),
        log_bytes: size(l.log_bytes),
        ..plexus_sandbox::Limits::default()
    }
}

/// Runs a journal call off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> plexus_journal::Result<T> + Send + 'static,
) -> Result<T, OpError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| OpError::Internal(e.to_string()))?
        .map_err(OpError::Journal)
}

#[cfg(test)]
mod tests {
    /// What a reload ended is in its report, and so in its audit entry and on stdout.
    #[test]
    fn a_reload_report_names_the_shadow_runs_it_ended() {
        let report = super::ReloadReport {
            tables_changed: vec!["visit-status".into()],
            tokens_changed: false,
            shadows_ended: vec![5],
            restart_needed: Vec::new(),
        };
        assert_eq!(
            report.to_string(),
            "tables reloaded: visit-status; tokens unchanged; needs a restart: none; \
             shadow runs ended (the tables changed under them; start them again): 5"
        );
        let quiet = super::ReloadReport::default().to_string();
        assert!(!quiet.contains("shadow"), "{quiet}");
    }

    /// `plexus-config` cannot depend on the sandbox, so its defaults are a copy: keep the
    /// two equal.
    #[test]
    fn config_limit_defaults_are_the_sandboxes() {
        assert_eq!(
            super::limits(&plexus_config::Limits::default()),
            plexus_sandbox::Limits::default()
        );
    }

    #[test]
    fn one_slow_run_is_bad_luck_and_three_in_a_row_are_a_slow_chain() {
        use super::{SLOW_CHAIN, SLOW_STRIKES, SlowChain};
        let (fast, slow) = (SLOW_CHAIN / 1000, SLOW_CHAIN * 2);
        let chain = SlowChain::default();
        // A preempted run now and then, between fast ones, never moves the chain.
        for _ in 0..10 {
            for _ in 1..SLOW_STRIKES {
                assert!(!chain.note(slow));
            }
            assert!(!chain.note(fast));
        }
        assert!(!chain.active());
        for _ in 1..SLOW_STRIKES {
            assert!(!chain.note(slow));
        }
        assert!(
            chain.note(slow),
            "the third slow run in a row starts the cool-down"
        );
        assert!(chain.active());
        // The count starts again: the next slow runs keep it going without a new start,
        // and no old strike is left to join a single unlucky run later.
        for _ in 0..SLOW_STRIKES {
            assert!(!chain.note(slow));
        }
        assert!(chain.active());
        assert!(!chain.note(fast));
        assert_eq!(chain.strikes.load(std::sync::atomic::Ordering::Relaxed), 0);
    }

    #[test]
    fn a_cut_run_is_judged_by_its_rerun() {
        use super::{SLOW_CHAIN, SlowChain};
        let chain = SlowChain::default();
        assert!(!chain.note_rerun(SLOW_CHAIN / 1000), "fast again: bad luck");
        assert!(!chain.active());
        assert!(
            chain.note_rerun(SLOW_CHAIN * 2),
            "slow again: the chain is slow"
        );
        assert!(chain.active());
    }
}
