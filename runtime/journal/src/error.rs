use crate::MessageId;

/// `Result` with the journal's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Journal errors. None of them carries message content.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database could not be opened or configured.
    #[error("cannot open journal at {path}")]
    Open {
        /// The database file.
        path: String,
        /// The underlying error.
        #[source]
        source: rusqlite::Error,
    },
    /// The journal, or a file SQLite keeps beside it, cannot be written by this process.
    #[error("the journal at {path} cannot be written: {detail}")]
    ReadOnly {
        /// The database file.
        path: String,
        /// Which file is in the way, and what to do.
        detail: String,
    },
    /// The database refused WAL mode (e.g. it is on a filesystem without shared memory).
    #[error("journal at {path} cannot use WAL mode")]
    NotWal {
        /// The database file.
        path: String,
    },
    /// A statement failed.
    #[error("journal {op} failed")]
    Sqlite {
        /// What the journal was doing, e.g. "append".
        op: &'static str,
        /// The underlying error.
        #[source]
        source: rusqlite::Error,
    },
    /// The group commit holding this write failed; the write did not happen.
    #[error("journal commit failed: {detail}")]
    Commit {
        /// The database's description of the failure (shared by the whole batch).
        detail: String,
    },
    /// The database was written by a newer Plexus.
    #[error("journal schema version {found} is newer than this build supports ({supported})")]
    SchemaTooNew {
        /// The version in the file.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
    /// No message with this id.
    #[error("message {0} not found in the journal")]
    NotFound(MessageId),
    /// No shadow run with this id.
    #[error("shadow run {0} not found in the journal")]
    NoShadowRun(i64),
    /// No delivery of this message to this destination was enqueued.
    #[error("message {id} was never enqueued for destination {destination:?}")]
    NotEnqueued {
        /// The message.
        id: MessageId,
        /// The destination.
        destination: String,
    },
    /// `resolve` needs an open error.
    #[error("message {0} has no open error to resolve")]
    NoOpenError(MessageId),
    /// `resolve` was called with a blank note.
    #[error("resolving message {0} needs a note saying what was done")]
    NoteRequired(MessageId),
    /// A stored value is not one this build understands.
    #[error("journal column {column} holds an unknown value")]
    Corrupt {
        /// The column.
        column: &'static str,
    },
    /// The writer thread is gone (the journal is shutting down or it panicked).
    #[error("journal writer has stopped")]
    WriterStopped,
}

impl Error {
    pub(crate) fn sql(op: &'static str) -> impl FnOnce(rusqlite::Error) -> Error {
        move |source| Error::Sqlite { op, source }
    }
}
