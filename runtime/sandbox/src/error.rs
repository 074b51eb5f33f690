//! Errors. They name the plug-in, its version digest, the capability or the limit; never
//! message content.

use std::time::Duration;

/// Why a plug-in could not be loaded, or a run could not complete.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The bytes are not a WebAssembly component (or not valid).
    #[error("plug-in {plugin}: not a valid WebAssembly component: {reason}")]
    Invalid {
        /// Plug-in name.
        plugin: String,
        /// What the validator said.
        reason: String,
    },
    /// The component's sha256 is not the one the config pins.
    #[error(
        "plug-in {plugin}: sha256 is {actual}, but the config pins {expected}; refusing to load (if the file was rebuilt on purpose, review it with `plexus review {plugin} FILE`, then pin sha256 = \"{actual}\" in [plugins.{plugin}])"
    )]
    DigestMismatch {
        /// Plug-in name.
        plugin: String,
        /// Pinned digest.
        expected: String,
        /// Digest of the bytes given.
        actual: String,
    },
    /// The component imports a capability the site did not grant.
    #[error(
        "plug-in {plugin} ({digest}) imports `{import}`, which needs the `{capability}` capability; \
         it is not granted. To allow it, add \"{grant}\" to `grants` under [plugins.{plugin}] in the site config"
    )]
    NotGranted {
        /// Plug-in name.
        plugin: String,
        /// Short digest.
        digest: String,
        /// The import as the component names it.
        import: String,
        /// The capability.
        capability: &'static str,
        /// The grant string to add.
        grant: String,
    },
    /// The component imports something no site can grant (a network, HTTP, an unknown
    /// interface).
    #[error(
        "plug-in {plugin} ({digest}) imports `{import}`, which Plexus does not provide to plug-ins ({why}); \
         refusing to load"
    )]
    Unavailable {
        /// Plug-in name.
        plugin: String,
        /// Short digest.
        digest: String,
        /// The import.
        import: String,
        /// Why it is not available.
        why: &'static str,
    },
    /// The component does not export the contract's `transform` function.
    #[error(
        "plug-in {plugin} ({digest}) does not implement plexus:transform (no `transform` export): {reason}"
    )]
    WrongWorld {
        /// Plug-in name.
        plugin: String,
        /// Short digest.
        digest: String,
        /// Details from linking.
        reason: String,
    },
    /// A grant string in the config is not one we know.
    #[error("unknown grant {grant:?}: grants are \"log\", \"tables:NAME\" and \"reuse-instance\"")]
    UnknownGrant {
        /// The grant as written.
        grant: String,
    },
    /// A run ended abnormally.
    #[error(transparent)]
    Run(#[from] RunError),
    /// The engine itself could not be set up (an operating-system or configuration problem).
    #[error("sandbox engine: {0}")]
    Engine(String),
}

/// How a run ended when the plug-in did not return an outcome. The engine keeps serving
/// after every one of these.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The plug-in hit its wall-clock deadline.
    #[error("plug-in {plugin} ({digest}) timed out after {timeout:?}")]
    Timeout {
        /// Plug-in name.
        plugin: String,
        /// Short digest.
        digest: String,
        /// The deadline.
        timeout: Duration,
    },
    /// The plug-in tried to grow its memory past its limit.
    #[error("plug-in {plugin} ({digest}) exceeded its memory limit of {limit} bytes")]
    MemoryLimit {
        /// Plug-in name.
        plugin: String,
        /// Short digest.
        digest: String,
        /// The limit.
        limit: usize,
    },
    /// The plug-in used up its fuel budget.
    #[error("plug-in {plugin} ({digest}) ran out of fuel ({budget} units)")]
    OutOfFuel {
        /// Plug-in name.
        plugin: String,
        /// Short digest.
        digest: String,
        /// The budget.
        budget: u64,
    },
    /// The plug-in trapped (a panic, `unreachable`, a bad memory access).
    #[error("plug-in {plugin} ({digest}) trapped: {trap}")]
    Trap {
        /// Plug-in name.
        plugin: String,
        /// Short digest.
        digest: String,
        /// The trap, as wasmtime describes it (no guest data).
        trap: String,
        /// The end of what the plug-in wrote to stderr (a Rust panic's message), at most
        /// [`MAX_TRAP_OUTPUT`] bytes; empty if none. Plug-in text that may quote message
        /// content: not part of the error's text, for views that show content.
        stderr: String,
    },
    /// The pool has no free instance slot (too many messages in flight at once).
    #[error("plug-in {plugin} ({digest}) could not be instantiated: {reason}")]
    Instantiate {
        /// Plug-in name.
        plugin: String,
        /// Short digest.
        digest: String,
        /// Why.
        reason: String,
    },
}

impl RunError {
    /// A short machine-readable kind: `timeout`, `memory`, `fuel`, `trap`, `instantiate`.
    pub fn kind(&self) -> &'static str {
        match self {
            RunError::Timeout { .. } => "timeout",
            RunError::MemoryLimit { .. } => "memory",
            RunError::OutOfFuel { .. } => "fuel",
            RunError::Trap { .. } => "trap",
            RunError::Instantiate { .. } => "instantiate",
        }
    }
}

/// The most of a trapped plug-in's stderr kept with [`RunError::Trap`].
pub const MAX_TRAP_OUTPUT: usize = 1024;

/// `Result` with this crate's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
