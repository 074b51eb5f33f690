//! Constructors and conversions for the contract's error and outcome types.

use crate::prelude::*;
use core::fmt;

use crate::{ErrorKind, Outcome, PathError, TransformError};

/// The result of a plug-in step: `Err` becomes an [`Outcome::Fail`].
pub type Result<T, E = TransformError> = core::result::Result<T, E>;

impl TransformError {
    /// An error of `kind` at `path` (if any) with a sentence for the error queue.
    pub fn new(kind: ErrorKind, path: Option<&str>, detail: impl Into<String>) -> Self {
        TransformError {
            kind,
            path: path.map(str::to_owned),
            detail: detail.into(),
        }
    }

    /// The value at `path` has no entry in a mapping table: fix the table, then replay.
    ///
    /// Name the unmapped value in `detail` so the operator knows what to add, e.g.
    /// ``"status `Roomed` has no entry in table `visit-status`"``.
    pub fn missing_mapping(path: &str, detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::MissingMapping, Some(path), detail)
    }

    /// The message is malformed for this mapping: a missing or impossible value at `path`.
    pub fn invalid_input(path: &str, detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput, Some(path), detail)
    }

    /// The message is well formed but must not go on (a business rule). Add a path with
    /// [`TransformError::at`] when one field is the reason.
    pub fn rejected(detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::Rejected, None, detail)
    }

    /// The plug-in itself is broken or misconfigured: a bug or an unexpected state. Add a
    /// path with [`TransformError::at`] when there is one.
    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, None, detail)
    }

    /// The same error, concerning `path`.
    #[must_use]
    pub fn at(mut self, path: &str) -> Self {
        self.path = Some(path.to_owned());
        self
    }

    /// Turns a failed path operation at `path` into an error: a value the message cannot
    /// hold is `invalid-input`; a bad or unusable path is the plug-in's own fault,
    /// `internal`.
    pub fn from_path_error(path: &str, err: PathError) -> Self {
        match err {
            PathError::InvalidValue(why) => {
                Self::invalid_input(path, format!("cannot write {path}: {why}"))
            }
            PathError::InvalidPath(why) => {
                Self::internal(format!("`{path}` is not a valid path: {why}")).at(path)
            }
            PathError::Unsupported(why) => {
                Self::internal(format!("cannot use {path} here: {why}")).at(path)
            }
        }
    }
}

/// For `?` on the raw [`Message`](crate::Message) methods, which do not know the path they
/// were given; prefer [`Message::read`](crate::Message::read) and
/// [`Message::write`](crate::Message::write), whose errors name it.
impl From<PathError> for TransformError {
    fn from(err: PathError) -> Self {
        match err {
            PathError::InvalidValue(why) => Self::new(
                ErrorKind::InvalidInput,
                None,
                format!("cannot write: {why}"),
            ),
            PathError::InvalidPath(why) => Self::internal(format!("invalid path: {why}")),
            PathError::Unsupported(why) => Self::internal(format!("unsupported path: {why}")),
        }
    }
}

impl fmt::Display for TransformError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(path) => write!(f, "{} at {path}: {}", self.kind, self.detail),
            None => write!(f, "{}: {}", self.kind, self.detail),
        }
    }
}

impl core::error::Error for TransformError {}

impl ErrorKind {
    /// The kind as the contract spells it, e.g. `missing-mapping`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidInput => "invalid-input",
            ErrorKind::MissingMapping => "missing-mapping",
            ErrorKind::Rejected => "rejected",
            ErrorKind::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Outcome {
    /// Drop the message on purpose; `reason` is journaled (keep message content out of it).
    pub fn filter(reason: impl Into<String>) -> Self {
        Outcome::Filter(reason.into())
    }

    /// Stop the message and put it in the error queue.
    pub fn fail(err: TransformError) -> Self {
        Outcome::Fail(err)
    }

    /// Is this [`Outcome::Forward`]?
    pub fn is_forward(&self) -> bool {
        matches!(self, Outcome::Forward)
    }
}

impl From<TransformError> for Outcome {
    fn from(err: TransformError) -> Self {
        Outcome::Fail(err)
    }
}

impl From<Result<Outcome>> for Outcome {
    fn from(result: Result<Outcome>) -> Self {
        result.unwrap_or_else(Outcome::Fail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_set_kind_and_path() {
        let e = TransformError::missing_mapping("SCH-25-1", "status `Roomed` unmapped");
        assert_eq!(e.kind, ErrorKind::MissingMapping);
        assert_eq!(e.path.as_deref(), Some("SCH-25-1"));
        assert_eq!(
            e.to_string(),
            "missing-mapping at SCH-25-1: status `Roomed` unmapped"
        );

        let e = TransformError::rejected("no visit number");
        assert_eq!((e.kind, e.path.as_deref()), (ErrorKind::Rejected, None));
        let e = e.at("PV1-19");
        assert_eq!(e.path.as_deref(), Some("PV1-19"));

        let e = TransformError::internal("bug");
        assert_eq!(e.to_string(), "internal: bug");
        let e = TransformError::invalid_input("PID-8", "unknown sex");
        assert_eq!(e.kind, ErrorKind::InvalidInput);
    }

    #[test]
    fn path_errors_become_kinds_that_say_whose_fault() {
        let e = TransformError::from_path_error("PID-5-1", PathError::InvalidValue("ÿ".into()));
        assert_eq!(e.kind, ErrorKind::InvalidInput);
        assert_eq!(e.path.as_deref(), Some("PID-5-1"));

        let e = TransformError::from_path_error("PID-", PathError::InvalidPath("x".into()));
        assert_eq!(
            (e.kind, e.path.as_deref()),
            (ErrorKind::Internal, Some("PID-"))
        );

        let e: TransformError = PathError::Unsupported("MSH-1".into()).into();
        assert_eq!((e.kind, e.path), (ErrorKind::Internal, None));
    }

    #[test]
    fn results_become_outcomes() {
        let ok: Outcome = Ok(Outcome::Forward).into();
        assert!(ok.is_forward());
        let failed: Outcome = Err(TransformError::rejected("no")).into();
        assert_eq!(failed, Outcome::fail(TransformError::rejected("no")));
        assert_eq!(Outcome::filter("test"), Outcome::Filter("test".into()));
    }
}
