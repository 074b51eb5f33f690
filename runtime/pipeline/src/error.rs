use std::path::PathBuf;

/// Why an engine could not be built or started. Each names the config item involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A table, plug-in or other file named by the config could not be read.
    #[error("cannot read {what} from {source_name}")]
    Asset {
        /// What it is, e.g. `table visit-status`.
        what: String,
        /// Where it was looked for.
        source_name: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A table's CSV is malformed.
    #[error("{file}")]
    Table {
        /// The table's file (its source says which table and line).
        file: String,
        /// Why.
        #[source]
        source: plexus_sandbox::CsvError,
    },
    /// A plug-in could not be loaded (digest, grants, not a component, ...).
    #[error(transparent)]
    Plugin(#[from] plexus_sandbox::Error),
    /// The data folder could not be created.
    #[error("cannot create the data folder {}", path.display())]
    DataDir {
        /// The folder.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The journal could not be opened.
    #[error(transparent)]
    Journal(#[from] plexus_journal::Error),
    /// A listener could not bind its address.
    #[error("interface {interface}: cannot listen on {addr} (is another engine running?)")]
    Bind {
        /// The interface (or `http` for the HTTP server).
        interface: String,
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// TLS material could not be loaded.
    #[error("{interface}: TLS: {detail}")]
    Tls {
        /// What serves with it: `interface NAME`, or `[http]` for the HTTP server.
        interface: String,
        /// What went wrong.
        detail: String,
    },
    /// A file source's folder is missing or not a folder.
    #[error("interface {interface}: the drop folder {} cannot be read: {reason}", path.display())]
    DropFolder {
        /// The interface.
        interface: String,
        /// The folder.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A destination's settings cannot work (its TLS roots do not load, say).
    #[error("interface {interface}: destination {destination} cannot start: {reason}")]
    Destination {
        /// The interface.
        interface: String,
        /// The destination.
        destination: String,
        /// Why.
        reason: String,
    },
    /// Another engine is running on the same data folder.
    #[error(
        "another engine is running on the data folder {} (it holds {}): stop it first, or give this site a data_dir of its own",
        data_dir.display(),
        lock.display()
    )]
    Locked {
        /// The data folder.
        data_dir: PathBuf,
        /// The lock file.
        lock: PathBuf,
    },
    /// The journal is missing from a data folder where one was opened before.
    #[error(
        "the journal {} is missing, but one was opened on this data folder before ({} says so): \
         starting would make an empty journal and lose what the old one held (messages \
         acknowledged but not yet delivered, the error queue). Restore {} (with its -wal \
         file, if there is one) from a backup; or, to start over with an empty journal on \
         purpose, delete {}",
        journal.display(),
        lock.display(),
        journal.display(),
        lock.display()
    )]
    JournalMissing {
        /// The journal's path.
        journal: PathBuf,
        /// The lock file.
        lock: PathBuf,
    },
    /// A chain activated through the admin API before the last stop no longer loads.
    #[error(transparent)]
    ActivatedChain(Box<ActivatedChain>),
    /// The data folder's lock file could not be opened or locked.
    #[error("cannot lock the data folder with {}", path.display())]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The config asks for something this build cannot do.
    #[error("{0}")]
    Unsupported(String),
    /// A plug-in's configured golden cases failed or could not run (`plexus check`).
    #[error("{0}")]
    GoldenCases(String),
}

/// Why a replay or other operator action failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpError {
    /// The journal failed.
    #[error(transparent)]
    Journal(#[from] plexus_journal::Error),
    /// The message's interface is no longer in the config.
    #[error("message {id} came in on interface {interface}, which this config does not define")]
    UnknownInterface {
        /// The message.
        id: plexus_journal::MessageId,
        /// Its interface.
        interface: String,
    },
    /// A config reload that could not load what the new config names; nothing changed.
    #[error("{0}")]
    ReloadRefused(String),
    /// A grant change that a running version could not load with; nothing changed.
    #[error("grant change refused, nothing changed: {0}")]
    GrantsRefused(String),
    /// A replay of a message that has no open error.
    #[error(
        "message {id} has no open error, so there is nothing to replay ({state}); a replay never sends a message again to a destination that has it"
    )]
    NothingToReplay {
        /// The message.
        id: plexus_journal::MessageId,
        /// Where it stands (its deliveries).
        state: String,
    },
    /// The message was too large to keep: only its first segment is journaled, so a
    /// replay would send that stub on as if it were the message.
    #[error(
        "message {0} was not kept whole: it was larger than its source's limit, so only its first segment is journaled and there is nothing to replay; have the sender send it again within the limit (`max_frame` on an MLLP source; 16 MiB for a drop file, so split it), then resolve this error with a note"
    )]
    NotKept(plexus_journal::MessageId),
    /// No interface by that name.
    #[error("no interface named {0} in this config")]
    NoSuchInterface(String),
    /// A rollback with no earlier chain to go back to.
    #[error("interface {0} has no earlier chain to roll back to")]
    NothingToRollBack(String),
    /// An activation named a plug-in the config does not define (grants and limits come
    /// from its `[plugins.NAME]` entry).
    #[error(
        "plug-in {0} is not defined in the site config; add [plugins.{0}] with its grants first"
    )]
    UnknownPlugin(String),
    /// The message is being replayed already (another request got there first).
    #[error(
        "message {0} is being replayed already; look at it again once that replay has finished"
    )]
    ReplayInProgress(plexus_journal::MessageId),
    /// An activation named a version that was never uploaded.
    #[error(
        "plug-in {name} version {sha256} has not been uploaded (and is not the version the site config names): upload it first (POST /admin/v1/plugins, or `plexus admin upload FILE`)"
    )]
    NotStored {
        /// Plug-in name.
        name: String,
        /// The digest asked for.
        sha256: String,
    },
    /// The gate refused a chain (to activate, try, shadow or promote) or a grant change;
    /// what runs is untouched.
    #[error("refused: {0}")]
    Gate(String),
    /// An upload that is not a plug-in any site could run; nothing was stored.
    #[error("upload refused, nothing stored: {0}")]
    Upload(String),
    /// The chain an activation or rollback makes could not be kept for the next start
    /// (`<data_dir>/chains.json`); the running chain is unchanged.
    #[error("cannot keep the new chain for the next start: {0}")]
    ChainNotKept(String),
    /// A plug-in file could not be stored.
    #[error("cannot store the plug-in: {0}")]
    Store(String),
    /// No shadow run to act on or report.
    #[error("{}", match run {
        Some(run) => format!("interface {interface} has no shadow run {run}"),
        None => format!("interface {interface} has no shadow run; start one with POST /admin/v1/interfaces/{interface}/shadow"),
    })]
    NoShadow {
        /// The interface.
        interface: String,
        /// The run asked for, if one was named.
        run: Option<i64>,
    },
    /// A worker thread failed.
    #[error("internal error: {0}")]
    Internal(String),
}

/// See [`BuildError::ActivatedChain`].
#[derive(Debug, thiserror::Error)]
#[error(
    "interface {interface} runs {chain}, activated through the admin API by {by} (kept in {}), \
     but it no longer loads: {reason}. Put the version back in {} or restore the grant it \
     needs; or, to run the chain the config names instead, remove the interface's entry \
     from {}",
    file.display(),
    store.display(),
    file.display()
)]
pub struct ActivatedChain {
    /// The interface.
    pub interface: String,
    /// The activated chain, described.
    pub chain: String,
    /// Who activated it.
    pub by: String,
    /// `chains.json`.
    pub file: PathBuf,
    /// The plug-in store.
    pub store: PathBuf,
    /// Why it does not load.
    pub reason: String,
}
