//! Open errors that are the same problem: one interface, kind, stage and masked reason.
//! A destination that was down, or a status code a plug-in does not know, puts hundreds
//! of messages in the error queue for one cause; grouped, the queue reads as a few
//! problems, each with its message ids. `plexus errors list --group` and the admin API's
//! `GET /admin/v1/errors?group=true` both show these groups.

use std::collections::HashMap;
use std::time::SystemTime;

use plexus_journal::{ErrorEntry, ErrorFilter, ErrorKind, Journal, MessageId};

use crate::chain::masked_reason;

/// The most errors grouped at once (oldest first); past it a caller narrows by interface
/// or kind.
pub const GROUP_SCAN: usize = 100_000;
/// The most message ids a group's JSON lists.
pub const GROUP_IDS: usize = 1000;

/// Errors that are the same problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorGroup {
    pub interface: String,
    pub kind: ErrorKind,
    pub stage: String,
    /// The masked reason (no message content), on one line.
    pub reason: String,
    /// When the oldest error of the group was first seen.
    pub oldest: SystemTime,
    /// The messages, oldest error first.
    pub ids: Vec<i64>,
}

impl ErrorGroup {
    /// The group as JSON: `count, interface, kind, stage, reason, oldest_first_seen_ms,
    /// ids` (at most [`GROUP_IDS`]) `, ids_truncated`.
    pub fn to_json(&self) -> serde_json::Value {
        let oldest_ms = self
            .oldest
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        serde_json::json!({
            "count": self.ids.len(),
            "interface": self.interface,
            "kind": self.kind.as_str(),
            "stage": self.stage,
            "reason": self.reason,
            "oldest_first_seen_ms": oldest_ms,
            "ids": &self.ids[..self.ids.len().min(GROUP_IDS)],
            "ids_truncated": self.ids.len() > GROUP_IDS,
        })
    }
}

/// What makes two errors the same problem.
type Key<'a> = (&'a str, ErrorKind, &'a str, String);

fn key(e: &ErrorEntry) -> Key<'_> {
    let reason: String = masked_reason(e.kind, &e.reason)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    (
        e.interface.as_str(),
        e.kind,
        e.stage.as_str(),
        without_ids(&without_offsets(&reason)),
    )
}

/// `reason` with the control id a wrong ACK named (`` control id `X` ``) left out: a
/// receiver that answers every message with the wrong MSA-2 is one problem.
fn without_ids(reason: &str) -> String {
    masked_after(reason, "control id `", "...`", |after| {
        after.find('`').map(|end| end + 1)
    })
}

/// `reason` with each `byte N` (where in the message a parse error sits) as `byte N`
/// literally: a sender that switched to Latin-1 fails every message at the first accented
/// name, at a different byte in each, and that is one problem.
fn without_offsets(reason: &str) -> String {
    masked_after(reason, "byte ", "N", |after| {
        Some(after.len() - after.trim_start_matches(|c: char| c.is_ascii_digit()).len())
    })
}

/// `reason` with what follows each `marker` (as long as `span` says, in bytes) replaced
/// by `with`; a span of 0 replaces nothing, and `None` leaves the rest as it is.
fn masked_after(
    reason: &str,
    marker: &str,
    with: &str,
    span: impl Fn(&str) -> Option<usize>,
) -> String {
    let mut out = String::with_capacity(reason.len());
    let mut rest = reason;
    while let Some(at) = rest.find(marker) {
        let after = &rest[at + marker.len()..];
        let Some(len) = span(after) else { break };
        out.push_str(&rest[..at + marker.len()]);
        if len > 0 {
            out.push_str(with);
        }
        rest = &after[len..];
    }
    out.push_str(rest);
    out
}

/// Whether `a` and `b` are the same problem (they would share a group).
pub fn same_problem(a: &ErrorEntry, b: &ErrorEntry) -> bool {
    key(a) == key(b)
}

/// Groups `entries` (oldest first, as the journal lists them): the largest group first,
/// then the one with the oldest error.
pub fn group_errors(entries: &[ErrorEntry]) -> Vec<ErrorGroup> {
    let mut groups: Vec<ErrorGroup> = Vec::new();
    let mut index: HashMap<Key<'_>, usize> = HashMap::new();
    for e in entries {
        let key = key(e);
        match index.get(&key) {
            Some(&at) => {
                let g = &mut groups[at];
                g.ids.push(e.message.0);
                g.oldest = g.oldest.min(e.first_seen);
            }
            None => {
                groups.push(ErrorGroup {
                    interface: key.0.to_owned(),
                    kind: key.1,
                    stage: key.2.to_owned(),
                    reason: key.3.clone(),
                    oldest: e.first_seen,
                    ids: vec![e.message.0],
                });
                index.insert(key, groups.len() - 1);
            }
        }
    }
    groups.sort_by(|a, b| b.ids.len().cmp(&a.ids.len()).then(a.oldest.cmp(&b.oldest)));
    groups
}

/// Why the open errors like a message's could not be listed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LikeError {
    /// The model message has no open error (or does not exist).
    #[error("message {0} has no open error (`plexus errors list` shows the open ones)")]
    NoOpenError(MessageId),
    /// More open errors of that kind on that interface than one action takes.
    #[error(
        "more than {GROUP_SCAN} open {kind} errors on interface {interface}: too many to act on at once; resolve or replay by id"
    )]
    TooMany {
        /// The interface.
        interface: String,
        /// The kind.
        kind: &'static str,
    },
    /// The journal failed.
    #[error(transparent)]
    Journal(#[from] plexus_journal::Error),
}

/// The open errors that are the same problem as message `like`'s open error (its group
/// in `plexus errors list --group`), oldest first: the model error, and their messages
/// (`like` among them).
pub fn open_errors_like(
    journal: &dyn Journal,
    like: MessageId,
) -> Result<(ErrorEntry, Vec<MessageId>), LikeError> {
    let model = match journal.show(like) {
        Ok(record) => record.errors.into_iter().find(|e| e.resolution.is_none()),
        Err(plexus_journal::Error::NotFound(_)) => None,
        Err(e) => return Err(e.into()),
    }
    .ok_or(LikeError::NoOpenError(like))?;
    let filter = ErrorFilter {
        interface: Some(model.interface.clone()),
        kind: Some(model.kind),
        include_resolved: false,
    };
    let entries = journal.list_errors(&filter, GROUP_SCAN.saturating_add(1))?;
    if entries.len() > GROUP_SCAN {
        return Err(LikeError::TooMany {
            interface: model.interface.clone(),
            kind: model.kind.as_str(),
        });
    }
    let ids = entries
        .iter()
        .filter(|e| same_problem(e, &model))
        .map(|e| e.message)
        .collect();
    Ok((model, ids))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_error(id: i64, reason: &str) -> ErrorEntry {
        ErrorEntry {
            message: MessageId(id),
            interface: "adt".to_owned(),
            control_id: Some(format!("C{id}")),
            message_type: None,
            stage: "parse".to_owned(),
            kind: ErrorKind::Parse,
            reason: reason.to_owned(),
            path: None,
            first_seen: SystemTime::UNIX_EPOCH,
            last_seen: SystemTime::UNIX_EPOCH,
            occurrences: 1,
            replays: 0,
            resolution: None,
        }
    }

    #[test]
    fn where_in_the_message_a_parse_error_sits_does_not_split_its_group() {
        let latin1 = |id, byte| {
            parse_error(
                id,
                &format!("byte {byte} is not valid UTF-8 text (a sender that uses Latin-1 ...)"),
            )
        };
        let groups = group_errors(&[
            latin1(1, 108),
            latin1(2, 120),
            parse_error(
                3,
                "segment 2 (byte 40) does not start with a three-character segment name",
            ),
        ]);
        assert_eq!(groups.len(), 2, "{groups:?}");
        assert_eq!(groups[0].ids, [1, 2]);
        assert_eq!(
            groups[0].reason,
            "byte N is not valid UTF-8 text (a sender that uses Latin-1 ...)"
        );
        assert_eq!(
            without_offsets("no offsets, bytes 12"),
            "no offsets, bytes 12"
        );
        assert_eq!(without_offsets("byte 7, byte x"), "byte N, byte x");
        assert_eq!(
            without_ids("the ACK is for control id `A1`, not this message"),
            "the ACK is for control id `...`, not this message"
        );
        assert_eq!(without_ids("control id `unended"), "control id `unended");
    }
}
