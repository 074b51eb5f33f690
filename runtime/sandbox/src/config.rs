//! What a plug-in may use (grants) and how much (limits). Both come from the site config;
//! every field has a safe default.

use std::collections::BTreeSet;
use std::time::Duration;

/// Resource limits for one plug-in. The defaults suit a mapping plug-in on messages of a
/// few KiB; a site raises them per plug-in in its config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest linear memory, in bytes (`memory_limit` in config). Default 64 MiB.
    pub memory_bytes: usize,
    /// Wall-clock deadline for one message, instantiation included (`timeout_ms`).
    /// Default 1 s. Enforced with epoch interruption, so the host keeps control even in
    /// an infinite loop.
    pub timeout: Duration,
    /// Largest the message may grow to through edits (`max_message_bytes`). Default 16 MiB.
    /// It also bounds the edit history a run records: the old and new values of its
    /// edits may total at most twice this.
    pub max_message_bytes: usize,
    /// Edits recorded per message (provenance). Consecutive sets of one path count once
    /// (first old value, last new value); an edit past the limit is refused with a path
    /// error. Default 10,000.
    pub max_edits: usize,
    /// Log lines kept per message (`log_lines`); the rest are counted, not kept. Default 100.
    pub log_lines: usize,
    /// Log bytes kept per message, all lines together (`log_bytes`). Default 16 KiB.
    pub log_bytes: usize,
    /// Longest single log line kept (longer ones are cut). Default 1 KiB.
    pub log_line_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 64 << 20,
            timeout: Duration::from_secs(1),
            max_message_bytes: 16 << 20,
            max_edits: 10_000,
            log_lines: 100,
            log_bytes: 16 << 10,
            log_line_bytes: 1 << 10,
        }
    }
}

/// The capabilities a site grants one plug-in (`grants = [...]` in its config). Deny by
/// default: an empty set grants nothing but the message itself.
///
/// | grant           | gives                                                      |
/// |-----------------|------------------------------------------------------------|
/// | `log`           | the `plexus:transform/log` interface                       |
/// | `tables:NAME`   | read-only lookups in table NAME (`plexus:transform/tables`) |
/// | `reuse-instance`| instances kept across messages (faster; state carries over) |
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// `log` granted.
    pub log: bool,
    /// Tables granted by name.
    pub tables: BTreeSet<String>,
    /// `reuse-instance`: the plug-in may keep instances across messages. Off by
    /// default: a fresh instance per message is what keeps one patient's data from
    /// reaching the next message.
    pub reuse_instance: bool,
}

impl Grants {
    /// Parses grant strings as written in the config (`log`, `tables:visit-status`).
    pub fn parse<'a>(grants: impl IntoIterator<Item = &'a str>) -> Result<Grants, crate::Error> {
        let mut out = Grants::default();
        for grant in grants {
            match grant.trim() {
                "log" => out.log = true,
                "reuse-instance" => out.reuse_instance = true,
                g if g.starts_with("tables:") && g.len() > "tables:".len() => {
                    out.tables.insert(g["tables:".len()..].to_owned());
                }
                other => {
                    return Err(crate::Error::UnknownGrant {
                        grant: other.to_owned(),
                    });
                }
            }
        }
        Ok(out)
    }

    /// The grant strings, as they would be written in the config.
    pub fn to_strings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.log {
            out.push("log".to_owned());
        }
        out.extend(self.tables.iter().map(|t| format!("tables:{t}")));
        if self.reuse_instance {
            out.push("reuse-instance".to_owned());
        }
        out
    }
}

/// The default [`SandboxConfig::epoch_tick`].
pub const DEFAULT_EPOCH_TICK: Duration = Duration::from_millis(5);

/// Engine-wide settings, shared by every plug-in the engine runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxConfig {
    /// Instances that may exist at once (the pooling allocator's slots). Default 64.
    pub max_instances: u32,
    /// Largest memory any plug-in may be granted; slots are sized for it. Default 256 MiB.
    pub max_memory_bytes: usize,
    /// Epoch tick: the granularity of timeouts. A run is cut after at least its timeout
    /// and at most two ticks more. Default 5 ms: the ticker thread wakes once per tick,
    /// and on a 2-core machine each wake-up preempts a worker (at 1 ms those wake-ups
    /// were a quarter of `plexus bench`'s context switches and cost 5% of its CPU).
    pub epoch_tick: Duration,
    /// Meter fuel (instructions, roughly) per call and stop at this budget. Off in
    /// production (it costs time); `plexus plugin test` turns it on for deterministic,
    /// comparable figures.
    pub fuel: Option<u64>,
    /// Linear-memory bytes per instance slot kept resident between messages, so a fresh
    /// instance does not page-fault its memory back in. Default 1 MiB (64 KiB on kernels
    /// older than 6.7, where resetting it would cost a full memset).
    pub keep_resident_bytes: usize,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            max_instances: 64,
            max_memory_bytes: 256 << 20,
            epoch_tick: DEFAULT_EPOCH_TICK,
            fuel: None,
            keep_resident_bytes: 1 << 20,
        }
    }
}

impl SandboxConfig {
    /// These settings with slots large enough for a plug-in given `memory_bytes` (never
    /// smaller than they were), so it gets the limit its config says, not less.
    pub fn with_room_for(mut self, memory_bytes: usize) -> Self {
        self.max_memory_bytes = self.max_memory_bytes.max(memory_bytes);
        self
    }
}
