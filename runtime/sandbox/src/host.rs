//! Per-message host state: the store's data. One is built for every message and dropped
//! with the store, so nothing a plug-in saw can reach the next message. A kept instance
//! (`reuse-instance`) keeps its store; `HostState::next_message` clears what the host
//! holds for one message before the next.
//!
//! Each capability has its own module with the same three parts: linking it (only when
//! granted), its per-instance state, and its host functions.

pub(crate) mod log;
pub(crate) mod message;
pub(crate) mod tables;
pub(crate) mod wasi;

use wasmtime::component::ResourceTable;

use crate::config::Limits;

/// The data of one store.
pub(crate) struct HostState {
    pub(crate) table: ResourceTable,
    /// Built on the plug-in's first WASI call (a print, a panic message): most runs
    /// make none, and building it is a good share of a fresh instance's cost.
    wasi: Option<wasmtime_wasi::WasiCtx>,
    received_at_ms: u64,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) log: log::LogSink,
    pub(crate) tables: tables::TableAccess,
    pub(crate) max_message_bytes: usize,
    pub(crate) max_edits: usize,
    /// stdout and stderr, captured; made with the WASI context, so a run that never
    /// prints (every `no_std` plug-in) allocates nothing for them.
    pub(crate) stdio: Option<wasi::Stdio>,
    stdio_cap: usize,
}

impl HostState {
    pub(crate) fn new(limits: &Limits, tables: tables::TableAccess, received_at_ms: u64) -> Self {
        HostState {
            table: ResourceTable::new(),
            wasi: None,
            received_at_ms,
            limiter: MemoryLimiter::new(limits.memory_bytes),
            log: log::LogSink::new(limits),
            tables,
            max_message_bytes: limits.max_message_bytes,
            max_edits: limits.max_edits,
            stdio: None,
            stdio_cap: limits.log_bytes,
        }
    }

    /// Clears what one run left behind before a kept instance takes the next message:
    /// each message gets the whole log budget, a refused memory growth is not blamed on
    /// a later message, and a trap's report never shows what an earlier message printed.
    /// The WASI context is made again on the next WASI call, so the clock reads the new
    /// message's arrival and the seeded random bytes start over, as on a fresh instance;
    /// stdout and stderr stay the same streams (a guest may hold their handles), emptied.
    /// The memory high-water mark stays: a kept instance's memory never shrinks, so it
    /// is still what this run has.
    pub(crate) fn next_message(&mut self, received_at_ms: u64) {
        self.log.clear();
        self.limiter.hit_limit = false;
        self.received_at_ms = received_at_ms;
        self.wasi = None;
        if let Some(stdio) = &self.stdio {
            stdio.clear();
        }
    }
}

/// Caps linear memory and remembers why a growth failed, so an out-of-memory trap is
/// reported as "memory limit exceeded" rather than a bare `unreachable`. The cap is on
/// all of a plug-in's memories together: a component may hold more than one.
pub(crate) struct MemoryLimiter {
    limit: usize,
    /// Bytes of all the store's memories now.
    total: usize,
    /// The last growth allowed, taken back if the engine then refuses it.
    last_growth: usize,
    pub(crate) high_water: usize,
    pub(crate) hit_limit: bool,
}

impl MemoryLimiter {
    fn new(limit: usize) -> Self {
        MemoryLimiter {
            limit,
            total: 0,
            last_growth: 0,
            high_water: 0,
            hit_limit: false,
        }
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Past the memory's own declared maximum: the guest's choice, not our limit.
        if maximum.is_some_and(|max| desired > max) {
            return Ok(false);
        }
        let growth = desired.saturating_sub(current);
        let total = self.total.saturating_add(growth);
        if total > self.limit {
            self.hit_limit = true;
            return Ok(false);
        }
        self.total = total;
        self.last_growth = growth;
        self.high_water = self.high_water.max(total);
        Ok(true)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        // Allowed here but refused by the engine (the pool's per-memory size): to the
        // plug-in author it is the same limit. The growth did not happen.
        self.total = self
            .total
            .saturating_sub(std::mem::take(&mut self.last_growth));
        self.hit_limit = true;
        Ok(())
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables hold function references; a mapping plug-in needs few. The cap stops a
        // plug-in from using tables to get around the memory limit.
        Ok(desired <= 100_000)
    }
}

impl wasmtime_wasi::WasiView for HostState {
    fn ctx(&mut self) -> wasmtime_wasi::WasiCtxView<'_> {
        let (cap, at) = (self.stdio_cap, self.received_at_ms);
        let stdio = self.stdio.get_or_insert_with(|| wasi::Stdio::new(cap));
        wasmtime_wasi::WasiCtxView {
            ctx: self.wasi.get_or_insert_with(|| wasi::context(stdio, at)),
            table: &mut self.table,
        }
    }
}

// `types` has no functions; linking it only makes its type names resolvable.
impl crate::bindings::plexus::transform::types::Host for HostState {}
