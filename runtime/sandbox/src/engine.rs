//! The engine (one per process), plug-ins (compiled once per version), and runs (one
//! fresh store and instance per message, unless the plug-in asked for reuse and the site
//! granted it).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use plexus_hl7::Message;
use wasmtime::component::{Component, HasSelf, Linker, Resource};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap};

use crate::bindings::plexus::transform::types::{
    Context as WitContext, ErrorKind, Outcome as WitOutcome,
};
use crate::bindings::{Hl7Transform, Hl7TransformPre};
use crate::config::{Grants, Limits, SandboxConfig};
use crate::error::{Error, Result, RunError};
use crate::host::HostState;
use crate::host::log::{LogLevel, LogLine, bounded};
use crate::host::message::{Edit, MessageState};
use crate::host::tables::{TableAccess, TableSet};
use crate::inspect::{self, Class, Inspection};

/// The sandbox engine: one per process. It owns the wasmtime engine (pooling allocator,
/// copy-on-write memory images, epoch interruption), the epoch ticker thread and the
/// cache of compiled components.
pub struct Sandbox {
    engine: Engine,
    config: SandboxConfig,
    /// Compiled components by sha256 of their bytes, at most [`COMPILED_KEPT`] of them
    /// (the oldest go first: a loaded plug-in holds its own reference, so only a reload
    /// of an evicted version compiles again). Only components compiled here go in:
    /// precompiled code from outside is never accepted.
    compiled: Mutex<(
        HashMap<String, Component>,
        std::collections::VecDeque<String>,
    )>,
    ticker: Option<Ticker>,
    /// How many more instances plug-ins may keep between messages, across all of them:
    /// an eighth of the instance slots (see [`KeptInstances`]).
    kept_budget: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

struct Ticker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(mut ticker) = self.ticker.take() {
            ticker.stop.store(true, Ordering::Relaxed);
            if let Some(thread) = ticker.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

impl Sandbox {
    /// Sets up the engine and starts the epoch ticker.
    pub fn new(config: SandboxConfig) -> Result<Sandbox> {
        let mut pool = PoolingAllocationConfig::default();
        let n = config.max_instances;
        // A Rust component holds a few core instances (its module plus the shims
        // wit-component adds), one memory and a couple of tables.
        pool.total_component_instances(n)
            .total_core_instances(n.saturating_mul(16))
            .total_memories(n.saturating_mul(2))
            .total_tables(n.saturating_mul(8))
            .max_core_instances_per_component(16)
            .max_memories_per_component(2)
            .max_tables_per_component(8)
            .max_memory_size(config.max_memory_bytes);
        // Keep linear memory pages resident between instances and reset only the pages a
        // run dirtied (PAGEMAP_SCAN) instead of unmapping them: a fresh instance per
        // message then costs no page faults. Without the ioctl every reset would memset
        // the whole resident range, so only a small range is kept there.
        let scan = pagemap_scan_available();
        let keep = if scan {
            config.keep_resident_bytes
        } else {
            config.keep_resident_bytes.min(64 << 10)
        };
        pool.linear_memory_keep_resident(keep)
            .table_keep_resident(keep.min(64 << 10));
        if scan {
            pool.pagemap_scan(wasmtime::Enabled::Yes);
        }

        let mut wasm = Config::new();
        // No wasm backtraces: they name the guest's functions, which the guest chooses,
        // and trap text reaches WARN logs and the error queue.
        wasm.epoch_interruption(true)
            .wasm_backtrace_max_frames(None)
            .consume_fuel(config.fuel.is_some())
            .memory_init_cow(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&wasm).map_err(|e| Error::Engine(format!("{e:#}")))?;

        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (engine, stop, tick) = (engine.clone(), stop.clone(), config.epoch_tick);
            std::thread::Builder::new()
                .name("plexus-epoch".to_owned())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(tick);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| Error::Engine(format!("starting the epoch ticker: {e}")))?
        };
        let kept_budget = Arc::new(AtomicUsize::new(
            usize::try_from(config.max_instances / 8).unwrap_or(usize::MAX),
        ));
        Ok(Sandbox {
            engine,
            config,
            compiled: Mutex::new((HashMap::new(), std::collections::VecDeque::new())),
            ticker: Some(Ticker {
                stop,
                thread: Some(thread),
            }),
            kept_budget,
        })
    }

    /// The engine-wide settings.
    pub fn config(&self) -> &SandboxConfig {
        &self.config
    }

    fn compile(&self, name: &str, digest: &str, bytes: &[u8]) -> Result<Component> {
        if let Some(c) = self
            .compiled
            .lock()
            .ok()
            .and_then(|m| m.0.get(digest).cloned())
        {
            return Ok(c);
        }
        let component = Component::new(&self.engine, bytes).map_err(|e| Error::Invalid {
            plugin: name.to_owned(),
            reason: format!("{e:#}"),
        })?;
        if let Ok(mut guard) = self.compiled.lock() {
            let (map, order) = &mut *guard;
            if map.insert(digest.to_owned(), component.clone()).is_none() {
                order.push_back(digest.to_owned());
            }
            // Every upload tried or activated would otherwise stay compiled for the
            // process's life.
            while order.len() > COMPILED_KEPT {
                if let Some(oldest) = order.pop_front() {
                    map.remove(&oldest);
                }
            }
        }
        Ok(component)
    }
}

/// Compiled versions kept for reuse (see [`Sandbox`]).
const COMPILED_KEPT: usize = 32;

/// PAGEMAP_SCAN arrived in Linux 6.7.
fn pagemap_scan_available() -> bool {
    if !cfg!(target_os = "linux") {
        return false;
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (6, 7)
}

/// Everything needed to load one plug-in version.
#[derive(Debug, Clone, Default)]
pub struct PluginSpec {
    /// The name the site config gives it (used in messages and metrics).
    pub name: String,
    /// The sha256 the config pins, if any; a mismatch refuses the load.
    pub sha256: Option<String>,
    /// What it may use.
    pub grants: Grants,
    /// How much.
    pub limits: Limits,
}

/// A loaded plug-in version: compiled, checked against its grants, linked, ready to
/// instantiate once per message (or to keep its instances, under `reuse-instance`).
pub struct Plugin {
    name: String,
    digest: String,
    inspection: Inspection,
    uses_wasi: bool,
    limits: Limits,
    fuel: Option<u64>,
    epoch_tick: Duration,
    tables: TableAccess,
    pre: Hl7TransformPre<HostState>,
    component: Component,
    engine: Engine,
    /// Instances kept between messages: only when the plug-in asks for reuse and the
    /// site granted it.
    kept: Option<KeptInstances>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("sha256", &self.digest)
            .finish_non_exhaustive()
    }
}

impl Plugin {
    /// Loads a plug-in: verifies the digest pin, refuses imports that are not granted or
    /// cannot be granted, compiles (cached by digest) and links only what is granted.
    pub fn load(
        sandbox: &Sandbox,
        spec: &PluginSpec,
        bytes: &[u8],
        tables: Arc<TableSet>,
    ) -> Result<Plugin> {
        let name = spec.name.clone();
        let inspection = inspect::inspect(bytes).map_err(|reason| Error::Invalid {
            plugin: name.clone(),
            reason,
        })?;
        let digest = inspection.sha256.clone();
        if let Some(pinned) = &spec.sha256
            && !pinned.eq_ignore_ascii_case(&digest)
        {
            return Err(Error::DigestMismatch {
                plugin: name,
                expected: pinned.clone(),
                actual: digest,
            });
        }
        check_grants(&name, &inspection, &spec.grants)?;
        if !inspection.implements_contract() {
            return Err(Error::WrongWorld {
                plugin: name,
                digest: inspect::short(&digest).to_owned(),
                reason: "it exports no `transform` function".to_owned(),
            });
        }
        let component = sandbox.compile(&name, &digest, bytes)?;
        let linker =
            linker(&sandbox.engine, &spec.grants).map_err(|e| Error::Engine(format!("{e:#}")))?;
        let pre = linker
            .instantiate_pre(&component)
            .and_then(Hl7TransformPre::new)
            .map_err(|e| Error::WrongWorld {
                plugin: name.clone(),
                digest: inspect::short(&digest).to_owned(),
                reason: format!("{e:#}"),
            })?;
        let kept = KeptInstances::for_plugin(sandbox, &inspection, &spec.grants);
        Ok(Plugin {
            name,
            digest,
            uses_wasi: inspection.imports_wasi(),
            inspection,
            limits: spec.limits.clone(),
            fuel: sandbox.config.fuel,
            epoch_tick: sandbox.config.epoch_tick,
            tables: TableAccess {
                tables,
                granted: Arc::new(spec.grants.tables.clone()),
            },
            pre,
            component,
            engine: sandbox.engine.clone(),
            kept,
        })
    }

    /// The same version linked against different grants (a reviewer changed them):
    /// refused, as a load would be, when it imports a capability the new grants do not
    /// cover. The compiled code is reused.
    pub fn regrant(&self, sandbox: &Sandbox, grants: &Grants) -> Result<Plugin> {
        self.relink(sandbox, grants, self.tables.tables.clone())
    }

    /// The same version linked against `grants` and reading `tables` (the site's
    /// tables were reloaded). The compiled code is reused.
    pub fn relink(
        &self,
        sandbox: &Sandbox,
        grants: &Grants,
        tables: Arc<TableSet>,
    ) -> Result<Plugin> {
        check_grants(&self.name, &self.inspection, grants)?;
        let linker =
            linker(&sandbox.engine, grants).map_err(|e| Error::Engine(format!("{e:#}")))?;
        let pre = linker
            .instantiate_pre(&self.component)
            .and_then(Hl7TransformPre::new)
            .map_err(|e| Error::WrongWorld {
                plugin: self.name.clone(),
                digest: inspect::short(&self.digest).to_owned(),
                reason: format!("{e:#}"),
            })?;
        Ok(Plugin {
            kept: KeptInstances::for_plugin(sandbox, &self.inspection, grants),
            name: self.name.clone(),
            digest: self.digest.clone(),
            inspection: self.inspection.clone(),
            uses_wasi: self.uses_wasi,
            limits: self.limits.clone(),
            fuel: self.fuel,
            epoch_tick: self.epoch_tick,
            tables: TableAccess {
                tables,
                granted: Arc::new(grants.tables.clone()),
            },
            pre,
            component: self.component.clone(),
            engine: self.engine.clone(),
        })
    }

    /// Whether this version runs in some chain, for a plug-in that keeps instances
    /// between messages (`reuse-instance`). A version an activation left behind, kept
    /// only for a rollback, is set not running: it drops the instances it keeps and
    /// keeps none (a run still going on drops its own at the end), so the sandbox's
    /// budget for kept instances goes to what runs. A rollback sets it running again.
    pub fn set_running(&self, running: bool) {
        if let Some(kept) = &self.kept {
            kept.retired.store(!running, Ordering::Relaxed);
            if !running {
                kept.release();
            }
        }
    }

    /// The plug-in's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The wall-clock deadline for one message (its `timeout_ms`).
    pub fn timeout(&self) -> Duration {
        self.limits.timeout
    }

    /// Whether the component imports any WASI interface: only such a plug-in can make
    /// the blocking host calls that need a thread allowed to block (`std` guests that
    /// print). `no_std` plug-ins never do. Worked out once, at load.
    pub fn uses_wasi(&self) -> bool {
        self.uses_wasi
    }

    /// Hex sha256 of the component: the version identity.
    pub fn sha256(&self) -> &str {
        &self.digest
    }

    /// What the component imports and exports.
    pub fn inspection(&self) -> &Inspection {
        &self.inspection
    }

    /// Runs the plug-in on one message in a fresh instance, or in one an earlier message
    /// left when the plug-in asked for reuse and was granted it. `Ok` whenever the
    /// plug-in returned an outcome (including `fail`); `Err` when it trapped, timed out,
    /// ran out of memory or fuel. An instance that failed is never used again.
    pub fn run(&self, msg: Message<'static>, ctx: &Context) -> Result<Run, RunError> {
        self.run_within(msg, ctx, self.limits.timeout)
    }

    /// [`run`](Self::run) with a deadline of `deadline` when that is shorter than the
    /// plug-in's own timeout. A host that runs plug-ins on an async thread uses it to
    /// bound how long a looping plug-in can hold that thread, then runs the message again
    /// elsewhere with the full timeout: a run has no effect outside its own store.
    pub fn run_within(
        &self,
        msg: Message<'static>,
        ctx: &Context,
        deadline: Duration,
    ) -> Result<Run, RunError> {
        let deadline = deadline.min(self.limits.timeout);
        let Some(kept) = &self.kept else {
            return self.run_on(None, msg, ctx, deadline).0;
        };
        let Some(instance) = kept.take() else {
            let (run, instance) = self.run_on(None, msg, ctx, deadline);
            kept.put(instance);
            return run;
        };
        // What earlier messages left in a kept instance must not fail this one: a run
        // that fails there (other than by running out of time) runs again on a new
        // instance, and that run's result is the message's.
        let started = Instant::now();
        let (run, instance) = self.run_on(Some(instance), msg.clone(), ctx, deadline);
        let retry = match &run {
            Ok(run) => internal_failure(&run.outcome),
            Err(e) => !matches!(e, RunError::Timeout { .. }),
        };
        if !retry {
            kept.put(instance);
            return run;
        }
        let failed = match &run {
            Ok(_) => "failed (internal)".to_owned(),
            Err(e) => format!("failed ({})", e.kind()),
        };
        // The whole timeout again, so the result does not depend on how long the kept
        // instance took to fail (a message may then take up to twice the timeout). Under
        // a caller's shorter budget, what is left of it: a run cut there is run again in
        // full elsewhere.
        let again_deadline = if deadline < self.limits.timeout {
            deadline
                .saturating_sub(started.elapsed())
                .max(self.epoch_tick)
        } else {
            deadline
        };
        let (mut again, instance) = self.run_on(None, msg, ctx, again_deadline);
        kept.put(instance);
        let passed = again.as_ref().is_ok_and(|r| !internal_failure(&r.outcome));
        if passed {
            // The plug-in left state behind that broke a later message: the operator
            // should hear of it. No message content: the name, version and kind only.
            tracing::warn!(
                interface = %ctx.interface,
                plugin = %self.name,
                sha256 = inspect::short(&self.digest),
                "a kept instance {failed} on a message that a new instance then ran"
            );
        }
        if let Ok(again) = &mut again {
            again.logs.insert(
                0,
                LogLine {
                    level: LogLevel::Info,
                    line: format!(
                        "host: the plug-in's kept instance {failed} on this message; \
                         this is its run on a new instance"
                    ),
                },
            );
        }
        again
    }

    /// Runs one message on `kept`, an instance an earlier message ran on, or else on a
    /// new one. Gives the instance back when it may be kept for another message (see
    /// [`Kept::may_keep`]).
    fn run_on(
        &self,
        kept: Option<Kept>,
        msg: Message<'static>,
        ctx: &Context,
        deadline: Duration,
    ) -> (Result<Run, RunError>, Option<Kept>) {
        let started = Instant::now();
        let (mut store, instance, instantiate, memory_at_start) = match kept {
            Some(Kept {
                mut store,
                instance,
                memory_at_start,
            }) => {
                store.data_mut().next_message(ctx.received_at_ms);
                self.arm(&mut store, deadline);
                (store, instance, Duration::ZERO, memory_at_start)
            }
            None => {
                let mut store = self.store(ctx.received_at_ms, deadline);
                match self.pre.instantiate(&mut store) {
                    Ok(instance) => {
                        let memory = store.data().limiter.high_water;
                        (store, instance, started.elapsed(), memory)
                    }
                    Err(e) => return (Err(self.classify(e, &store, true, deadline)), None),
                }
            }
        };
        let call = CallTiming {
            started,
            instantiate,
            deadline,
        };
        let run = self.call(&mut store, &instance, msg, ctx, call);
        // A plug-in that keeps no instances (the default) drops its store here.
        if self.kept.is_none() {
            return (run, None);
        }
        let mut kept = Kept {
            store,
            instance,
            memory_at_start,
        };
        let keep = run.as_ref().is_ok_and(|r| kept.may_keep(&r.outcome));
        (run, keep.then_some(kept))
    }

    fn store(&self, received_at_ms: u64, timeout: Duration) -> Store<HostState> {
        let state = HostState::new(&self.limits, self.tables.clone(), received_at_ms);
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_trap();
        self.arm(&mut store, timeout);
        store
    }

    /// Sets the deadline and fuel budget for the next call.
    fn arm(&self, store: &mut Store<HostState>, timeout: Duration) {
        store.set_epoch_deadline(deadline_ticks(timeout, self.epoch_tick));
        if let Some(fuel) = self.fuel {
            // Only fails when fuel metering is off, which `fuel: Some` rules out.
            let _ = store.set_fuel(fuel);
        }
    }

    fn call(
        &self,
        store: &mut Store<HostState>,
        instance: &Hl7Transform,
        msg: Message<'static>,
        ctx: &Context,
        timing: CallTiming,
    ) -> Result<Run, RunError> {
        let CallTiming {
            started,
            instantiate,
            deadline,
        } = timing;
        let resource = store
            .data_mut()
            .table
            .push(MessageState::new(msg))
            .map_err(|e| self.trap(format!("{e}")))?;
        let borrowed = Resource::<MessageState>::new_borrow(resource.rep());
        let wit_ctx = WitContext {
            interface: ctx.interface.clone(),
            site: ctx.site.clone(),
            message_id: ctx.message_id.clone(),
            received_at_ms: ctx.received_at_ms,
        };
        let outcome = instance
            .call_transform(&mut *store, borrowed, &wit_ctx)
            .map_err(|e| self.classify(e, store, false, deadline))?;
        let fuel_used = self
            .fuel
            .map(|budget| budget.saturating_sub(store.get_fuel().unwrap_or(0)));
        let state = store.data_mut();
        let message = state
            .table
            .delete(resource)
            .map_err(|e| self.trap(format!("{e}")))?;
        // stdout and stderr join the log as info and warn lines, under the same caps.
        if let Some(stdio) = state.stdio.clone() {
            for (captured, level) in [
                (stdio.stdout, LogLevel::Info),
                (stdio.stderr, LogLevel::Warn),
            ] {
                let (bytes, lost) = captured.take();
                state.log.dropped += lost.min(1);
                for line in String::from_utf8_lossy(&bytes).lines() {
                    state.log.push(level, line);
                }
            }
        }
        Ok(Run {
            outcome: Outcome::from(outcome),
            message: message.msg,
            edits: message.edits,
            logs: std::mem::take(&mut state.log.lines),
            logs_dropped: std::mem::take(&mut state.log.dropped),
            stats: Stats {
                instantiate,
                total: started.elapsed(),
                fuel_used,
                memory_high_water: state.limiter.high_water,
            },
        })
    }

    fn trap(&self, trap: String) -> RunError {
        RunError::Trap {
            plugin: self.name.clone(),
            digest: inspect::short(&self.digest).to_owned(),
            trap,
            stderr: String::new(),
        }
    }

    fn classify(
        &self,
        err: wasmtime::Error,
        store: &Store<HostState>,
        instantiating: bool,
        deadline: Duration,
    ) -> RunError {
        let plugin = self.name.clone();
        let digest = inspect::short(&self.digest).to_owned();
        // The deadline and the fuel budget first: a plug-in whose memory growth was
        // refused and that then loops has timed out, and a run cut by a caller's shorter
        // deadline must be reported as a timeout to be run again in full.
        match err.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => RunError::Timeout {
                plugin,
                digest,
                timeout: deadline,
            },
            Some(Trap::OutOfFuel) => RunError::OutOfFuel {
                plugin,
                digest,
                budget: self.fuel.unwrap_or(0),
            },
            _ if store.data().limiter.hit_limit => RunError::MemoryLimit {
                plugin,
                digest,
                limit: self.limits.memory_bytes,
            },
            Some(trap) => RunError::Trap {
                plugin,
                digest,
                trap: trap.to_string(),
                stderr: trap_output(store),
            },
            None if instantiating => RunError::Instantiate {
                plugin,
                digest,
                reason: brief(&err),
            },
            None => RunError::Trap {
                plugin,
                digest,
                trap: brief(&err),
                stderr: trap_output(store),
            },
        }
    }
}

/// The end of what a trapped run wrote to stderr, where a Rust panic's message goes,
/// with control characters escaped (it is shown in a terminal).
fn trap_output(store: &Store<HostState>) -> String {
    let Some(stdio) = &store.data().stdio else {
        return String::new();
    };
    let bytes = stdio.stderr.tail();
    let text = String::from_utf8_lossy(&bytes);
    let text = text.trim();
    let mut start = text.len().saturating_sub(crate::error::MAX_TRAP_OUTPUT);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    crate::host::log::escape_controls(&text[start..]).into_owned()
}

/// The epoch deadline, in ticks, for a run of `timeout`: the run is cut after at least
/// `timeout` and before `timeout` plus two ticks. The next tick comes anywhere from at
/// once to a whole tick away, so one tick more than the timeout rounded up.
fn deadline_ticks(timeout: Duration, tick: Duration) -> u64 {
    let tick = tick.as_nanos().max(1);
    let ticks = timeout.as_nanos().div_ceil(tick) + 1;
    u64::try_from(ticks).unwrap_or(u64::MAX)
}

/// Longest text kept from an error wasmtime raised that is not a plain trap.
const MAX_ERROR_TEXT: usize = 256;

/// Longest plug-in supplied text kept (a failure's detail, a filter reason): it reaches
/// the journal and the error queue.
pub const MAX_PLUGIN_TEXT: usize = 1 << 10;

/// An error's first line, bounded: operators read it in WARN logs and the error queue.
fn brief(err: &wasmtime::Error) -> String {
    let text = format!("{err:#}");
    bounded(
        text.lines().next().unwrap_or_default().to_owned(),
        MAX_ERROR_TEXT,
    )
}

/// When a call started, how long instantiation took, and the deadline it runs under.
#[derive(Clone, Copy)]
struct CallTiming {
    started: Instant,
    instantiate: Duration,
    deadline: Duration,
}

/// A store and the instance in it, kept for the next message.
struct Kept {
    store: Store<HostState>,
    instance: Hl7Transform,
    /// Its memory when it was made.
    memory_at_start: usize,
}

/// An `internal` failure: a bug or an unexpected state in the plug-in.
fn internal_failure(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Fail(f) if f.kind == FailKind::Internal)
}

/// How far a kept instance's memory may grow past its first size: an instance that
/// needed more for some message gives it back (its slot is reset) rather than hold it
/// for every message after.
const KEPT_GROWTH_MAX: usize = 1 << 20;

/// Most entries a kept instance's resource table may hold between messages (a std
/// guest keeps its stdout and stderr handles); past that it leaks handles, and a
/// later message would fail when the table fills.
const KEPT_TABLE_MAX: usize = 16;

impl Kept {
    /// Whether it may take another message after a run that returned `outcome`: not
    /// after an internal failure (a bug or an unexpected state in the plug-in), nor
    /// with memory grown or handles left behind past the bounds above.
    fn may_keep(&mut self, outcome: &Outcome) -> bool {
        if internal_failure(outcome) {
            return false;
        }
        let state = self.store.data_mut();
        state.limiter.high_water <= self.memory_at_start.saturating_add(KEPT_GROWTH_MAX)
            && state.table.iter_mut().take(KEPT_TABLE_MAX + 1).count() <= KEPT_TABLE_MAX
    }
}

/// The instances a plug-in keeps between messages when it asked for reuse and the site
/// granted `reuse-instance`: those that runs going on at once needed, at most
/// [`KEPT_PER_PLUGIN`]. Across plug-ins no more than an eighth of the sandbox's instance
/// slots are kept ([`Sandbox::kept_budget`]), so that fresh instances (every other
/// plug-in, shadow runs, trials, replays) never run short of slots; past that a run's
/// instance is dropped as a fresh one would be.
struct KeptInstances {
    idle: Mutex<Vec<Kept>>,
    budget: Arc<AtomicUsize>,
    /// Set while the version runs in no chain ([`Plugin::set_running`]).
    retired: AtomicBool,
}

/// The most instances one plug-in keeps: as many as the engine runs chains at once on
/// a small machine.
const KEPT_PER_PLUGIN: usize = 4;

impl KeptInstances {
    fn for_plugin(sandbox: &Sandbox, inspection: &Inspection, grants: &Grants) -> Option<Self> {
        (inspection.requests_reuse && grants.reuse_instance).then(|| KeptInstances {
            idle: Mutex::new(Vec::new()),
            budget: sandbox.kept_budget.clone(),
            retired: AtomicBool::new(false),
        })
    }

    /// Drops every idle instance.
    fn release(&self) {
        let idle = std::mem::take(&mut *self.idle.lock().unwrap_or_else(|p| p.into_inner()));
        self.budget.fetch_add(idle.len(), Ordering::Relaxed);
        drop(idle);
    }

    fn take(&self) -> Option<Kept> {
        let kept = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()?;
        self.budget.fetch_add(1, Ordering::Relaxed);
        Some(kept)
    }

    /// Keeps `instance` for a later message, or drops it when this plug-in or the
    /// sandbox keeps enough already, or the version runs in no chain.
    fn put(&self, instance: Option<Kept>) {
        let Some(instance) = instance else { return };
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if !self.retired.load(Ordering::Relaxed)
            && idle.len() < KEPT_PER_PLUGIN
            && self
                .budget
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
        {
            idle.push(instance);
            return;
        }
        drop(idle);
        drop(instance);
    }
}

impl Drop for KeptInstances {
    fn drop(&mut self) {
        let idle = self.idle.get_mut().unwrap_or_else(|p| p.into_inner());
        self.budget.fetch_add(idle.len(), Ordering::Relaxed);
    }
}

/// Refuses imports that are not granted, or that no grant can give.
fn check_grants(name: &str, inspection: &Inspection, grants: &Grants) -> Result<()> {
    let digest = inspect::short(&inspection.sha256).to_owned();
    for (import, class) in &inspection.imports {
        match class {
            Class::Contract | Class::Inert { .. } => {}
            Class::Capability { name: "log", grant } if !grants.log => {
                return Err(Error::NotGranted {
                    plugin: name.to_owned(),
                    digest,
                    import: import.clone(),
                    capability: "log",
                    grant: (*grant).to_owned(),
                });
            }
            Class::Capability { name: "tables", .. } => {
                // A plug-in that names its tables gets the exact grant it lacks.
                let missing = match inspection.reads_tables.as_slice() {
                    [] if grants.tables.is_empty() => Some("<table-name>"),
                    declared => declared
                        .iter()
                        .find(|t| !grants.tables.contains(t.as_str()))
                        .map(String::as_str),
                };
                if let Some(table) = missing {
                    return Err(Error::NotGranted {
                        plugin: name.to_owned(),
                        digest,
                        import: import.clone(),
                        capability: "tables",
                        grant: format!("tables:{table}"),
                    });
                }
            }
            Class::Capability { .. } => {}
            Class::Unavailable { why } => {
                return Err(Error::Unavailable {
                    plugin: name.to_owned(),
                    digest,
                    import: import.clone(),
                    why,
                });
            }
        }
    }
    Ok(())
}

/// A linker with the contract, WASI (empty) and exactly the granted capabilities.
fn linker(engine: &Engine, grants: &Grants) -> wasmtime::Result<Linker<HostState>> {
    use crate::bindings::plexus::transform;
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    crate::host::wasi::replace_timers(&mut linker)?;
    transform::message::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
    transform::types::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
    if grants.log {
        transform::log::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
    }
    if !grants.tables.is_empty() {
        transform::tables::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
    }
    Ok(linker)
}

/// Facts about the message the host passes in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context {
    /// The interface it arrived on.
    pub interface: String,
    /// The site.
    pub site: String,
    /// The engine's message id.
    pub message_id: String,
    /// Arrival time, ms since the Unix epoch.
    pub received_at_ms: u64,
}

/// What a plug-in decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Send on.
    Forward,
    /// Dropped on purpose, with the reason (cut to [`MAX_PLUGIN_TEXT`] bytes).
    Filter(String),
    /// Failed: goes to the error queue.
    Fail(Failure),
}

/// A failure a plug-in reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// What kind of failure.
    pub kind: FailKind,
    /// The path concerned, in canonical form; `None` also when the plug-in named
    /// something that is not a path.
    pub path: Option<String>,
    /// The plug-in's explanation, cut to [`MAX_PLUGIN_TEXT`] bytes.
    pub detail: String,
}

/// The kind of a [`Failure`], as the plug-in chose it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailKind {
    /// `invalid-input`: the message is wrong.
    InvalidInput,
    /// `missing-mapping`: a value has no entry in a crosswalk.
    MissingMapping,
    /// `rejected`: refused by a business rule.
    Rejected,
    /// `internal`: a bug or an unexpected state in the plug-in.
    Internal,
}

impl FailKind {
    /// The name the contract gives it: `invalid-input`, `missing-mapping`, `rejected`
    /// or `internal`.
    pub fn as_str(self) -> &'static str {
        match self {
            FailKind::InvalidInput => "invalid-input",
            FailKind::MissingMapping => "missing-mapping",
            FailKind::Rejected => "rejected",
            FailKind::Internal => "internal",
        }
    }
}

impl std::fmt::Display for FailKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

// Plug-in text goes on to WARN logs, the journal and the error queue: a path is kept
// only when it is one (and then in canonical form), and free text is bounded.
impl From<WitOutcome> for Outcome {
    fn from(o: WitOutcome) -> Self {
        match o {
            WitOutcome::Forward => Outcome::Forward,
            WitOutcome::Filter(reason) => Outcome::Filter(bounded(reason, MAX_PLUGIN_TEXT)),
            WitOutcome::Fail(e) => Outcome::Fail(Failure {
                kind: match e.kind {
                    ErrorKind::InvalidInput => FailKind::InvalidInput,
                    ErrorKind::MissingMapping => FailKind::MissingMapping,
                    ErrorKind::Rejected => FailKind::Rejected,
                    ErrorKind::Internal => FailKind::Internal,
                },
                path: e
                    .path
                    .and_then(|p| plexus_hl7::Path::parse(&p).ok())
                    .map(|p| p.to_string()),
                detail: bounded(e.detail, MAX_PLUGIN_TEXT),
            }),
        }
    }
}

/// Per-call accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Time to instantiate (zero for a reused instance).
    pub instantiate: Duration,
    /// Time for instantiate plus the call.
    pub total: Duration,
    /// Fuel consumed, when metering is on.
    pub fuel_used: Option<u64>,
    /// Largest linear memory size reached, in bytes.
    pub memory_high_water: usize,
}

/// The result of one run.
#[derive(Debug)]
pub struct Run {
    /// What the plug-in decided.
    pub outcome: Outcome,
    /// The message after its edits.
    pub message: Message<'static>,
    /// Every edit, in order (provenance).
    pub edits: Vec<Edit>,
    /// Log lines kept (log capability, stdout as info, stderr as warn).
    pub logs: Vec<LogLine>,
    /// Lines dropped over the caps.
    pub logs_dropped: usize,
    /// Accounting.
    pub stats: Stats,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_is_never_shorter_than_its_timeout() {
        let tick = Duration::from_millis(5);
        // The next tick may come at once: ticks - 1 whole ticks must cover the timeout,
        // and ticks whole ticks stay under the timeout plus two ticks.
        for ms in [0_u64, 1, 4, 5, 6, 20, 999, 1000] {
            let timeout = Duration::from_millis(ms);
            let ticks = u32::try_from(deadline_ticks(timeout, tick)).expect("small");
            assert!(tick * (ticks - 1) >= timeout, "{ms} ms: {ticks} ticks");
            assert!(tick * ticks < timeout + 2 * tick, "{ms} ms: {ticks} ticks");
        }
        assert_eq!(deadline_ticks(Duration::MAX, Duration::ZERO), u64::MAX);
    }
}
