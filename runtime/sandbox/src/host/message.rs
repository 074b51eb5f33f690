//! The `message` resource: the host-owned message the plug-in reads and edits by path.
//! Always linked (it is the data, not a capability). Every edit is recorded, up to the
//! edit limits in [`crate::Limits`].

use plexus_hl7::{EditError, Message, Path, PathError};
use wasmtime::component::Resource;

use crate::bindings::plexus::transform::message::{self as wit, PathError as WitPathError};
use crate::host::HostState;

/// One recorded edit: what the plug-in changed, for provenance.
#[derive(Clone, PartialEq, Eq)]
pub struct Edit {
    /// What kind of edit.
    pub op: EditOp,
    /// The path in canonical form (`PID-5-1`, however the plug-in spelled it), or
    /// `segment N` for an inserted segment.
    pub path: String,
    /// The decoded value before (patient data: journal it, never log it).
    pub old: Option<String>,
    /// The decoded value after.
    pub new: Option<String>,
}

/// The kind of an [`Edit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EditOp {
    /// `set`.
    Set,
    /// `remove`.
    Remove,
    /// `insert-segment`.
    InsertSegment,
}

// Values are patient data: Debug shows the operation and path only.
impl std::fmt::Debug for Edit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Edit")
            .field("op", &self.op)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// The state behind one `message` resource.
pub struct MessageState {
    pub(crate) msg: Message<'static>,
    pub(crate) edits: Vec<Edit>,
    /// Bytes of old and new values held in `edits`.
    recorded_bytes: usize,
}

impl MessageState {
    pub(crate) fn new(msg: Message<'static>) -> Self {
        MessageState {
            msg,
            edits: Vec::new(),
            recorded_bytes: 0,
        }
    }

    /// Where the history would stand with `edit` recorded: whether it merges into the
    /// last edit (a set of the path the last edit set: first old value, last new value),
    /// how many edits there would be and how many value bytes they would hold. Removes
    /// never merge: removing `OBX[2]` twice removes two segments.
    fn with(&self, edit: &Edit) -> (bool, usize, usize) {
        let len = |v: &Option<String>| v.as_ref().map_or(0, String::len);
        match self.edits.last() {
            Some(last)
                if last.op == EditOp::Set && edit.op == EditOp::Set && last.path == edit.path =>
            {
                let bytes = self
                    .recorded_bytes
                    .saturating_sub(len(&last.new))
                    .saturating_add(len(&edit.new));
                (true, self.edits.len(), bytes)
            }
            _ => {
                let bytes = self
                    .recorded_bytes
                    .saturating_add(len(&edit.old))
                    .saturating_add(len(&edit.new));
                (false, self.edits.len().saturating_add(1), bytes)
            }
        }
    }
}

fn path_error(e: PathError) -> WitPathError {
    match e {
        PathError::Syntax { .. } => WitPathError::InvalidPath(e.to_string()),
        _ => WitPathError::Unsupported(e.to_string()),
    }
}

fn edit_error(e: EditError) -> WitPathError {
    match e {
        EditError::Path(p) => path_error(p),
        other => WitPathError::InvalidValue(other.to_string()),
    }
}

impl HostState {
    fn message(&self, r: &Resource<MessageState>) -> wasmtime::Result<&MessageState> {
        Ok(self.table.get(r)?)
    }

    fn message_mut(&mut self, r: &Resource<MessageState>) -> wasmtime::Result<&mut MessageState> {
        Ok(self.table.get_mut(r)?)
    }

    /// Runs an edit, refusing it (message unchanged) if it would grow the message past
    /// the limit or the edit history past its limits, and records it when it succeeds.
    fn edit(
        &mut self,
        r: &Resource<MessageState>,
        edit: Edit,
        growth_bound: usize,
        apply: impl FnOnce(&mut Message<'static>, &Edit) -> Result<(), EditError>,
    ) -> wasmtime::Result<Result<(), WitPathError>> {
        let max = self.max_message_bytes;
        // Every edit keeps copies of its old and new values until the run ends: without
        // a cap, a plug-in looping over `set` holds unbounded host memory and journal rows.
        let (max_edits, max_recorded) = (self.max_edits, max.saturating_mul(2));
        let state = self.message_mut(r)?;
        let (merges, count, recorded) = state.with(&edit);
        if count > max_edits {
            return Ok(Err(WitPathError::Unsupported(format!(
                "edit limit reached: a run may record at most {max_edits} edits"
            ))));
        }
        if recorded > max_recorded {
            return Ok(Err(WitPathError::Unsupported(format!(
                "edit limit reached: the old and new values of a run's edits may total at most {max_recorded} bytes"
            ))));
        }
        // Keep a copy to roll back to only when the edit could cross the limit; normal
        // edits on normal messages never need one.
        let backup = (state.msg.as_bytes().len().saturating_add(growth_bound) > max)
            .then(|| state.msg.clone());
        if let Err(e) = apply(&mut state.msg, &edit) {
            return Ok(Err(edit_error(e)));
        }
        if state.msg.as_bytes().len() > max {
            if let Some(backup) = backup {
                state.msg = backup;
            }
            return Ok(Err(WitPathError::InvalidValue(format!(
                "the edit at {} would make the message larger than its {max} byte limit",
                edit.path
            ))));
        }
        state.recorded_bytes = recorded;
        match state.edits.last_mut() {
            Some(last) if merges => last.new = edit.new,
            _ => state.edits.push(edit),
        }
        Ok(Ok(()))
    }
}

impl wit::Host for HostState {}

impl wit::HostMessage for HostState {
    fn get(
        &mut self,
        r: Resource<MessageState>,
        path: String,
    ) -> wasmtime::Result<Result<Option<String>, WitPathError>> {
        let msg = &self.message(&r)?.msg;
        Ok(msg
            .get(path.as_str())
            .map(|v| v.map(|c| c.into_owned()))
            .map_err(path_error))
    }

    fn set(
        &mut self,
        r: Resource<MessageState>,
        path: String,
        value: String,
    ) -> wasmtime::Result<Result<(), WitPathError>> {
        let path = match Path::parse(&path) {
            Ok(path) => path,
            Err(e) => return Ok(Err(path_error(e))),
        };
        if value.len() > self.max_message_bytes {
            return Ok(Err(WitPathError::InvalidValue(format!(
                "the value for {path} is larger than the message limit ({} bytes)",
                self.max_message_bytes
            ))));
        }
        let old = self
            .message(&r)?
            .msg
            .get(path)
            .ok()
            .flatten()
            .map(|c| c.into_owned());
        // Escaping writes at most 5 bytes per byte (`\X0D\`); padding for missing
        // structure is at most one delimiter per index at four levels.
        let bound = value
            .len()
            .saturating_mul(5)
            .saturating_add(4 * plexus_hl7::path::MAX_INDEX as usize + 16);
        // Recorded in its canonical form, so spellings of one path compare equal and
        // padding cannot inflate the history.
        let edit = Edit {
            op: EditOp::Set,
            path: path.to_string(),
            old,
            new: Some(value),
        };
        self.edit(&r, edit, bound, move |msg, edit| {
            msg.set(path, edit.new.as_deref().unwrap_or_default())
        })
    }

    fn count(
        &mut self,
        r: Resource<MessageState>,
        path: String,
    ) -> wasmtime::Result<Result<u32, WitPathError>> {
        let msg = &self.message(&r)?.msg;
        Ok(msg
            .count(path.as_str())
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
            .map_err(path_error))
    }

    fn remove(
        &mut self,
        r: Resource<MessageState>,
        path: String,
    ) -> wasmtime::Result<Result<bool, WitPathError>> {
        let path = match Path::parse(&path) {
            Ok(path) => path,
            Err(e) => return Ok(Err(path_error(e))),
        };
        let old = self
            .message(&r)?
            .msg
            .get_raw(path)
            .ok()
            .flatten()
            .map(|b| String::from_utf8_lossy(b).into_owned());
        let edit = Edit {
            op: EditOp::Remove,
            path: path.to_string(),
            old,
            new: None,
        };
        let mut existed = false;
        let result = self.edit(&r, edit, 0, |msg, _| {
            existed = msg.remove(path)?;
            Ok(())
        })?;
        Ok(result.map(|()| existed))
    }

    fn insert_segment(
        &mut self,
        r: Resource<MessageState>,
        position: u32,
        segment: String,
    ) -> wasmtime::Result<Result<(), WitPathError>> {
        // Refused before any work: encoding and indexing an oversize segment would
        // allocate several times its size on the host.
        let max = self.max_message_bytes;
        if self
            .message(&r)?
            .msg
            .as_bytes()
            .len()
            .saturating_add(segment.len())
            > max
        {
            return Ok(Err(WitPathError::InvalidValue(format!(
                "inserting a segment of {} bytes would make the message larger than its {max} byte limit",
                segment.len()
            ))));
        }
        let bound = segment.len() + 4;
        let edit = Edit {
            op: EditOp::InsertSegment,
            path: format!("segment {position}"),
            old: None,
            new: Some(segment),
        };
        self.edit(&r, edit, bound, move |msg, edit| {
            msg.insert_segment(position as usize, edit.new.as_deref().unwrap_or_default())
        })
    }

    fn segment_names(&mut self, r: Resource<MessageState>) -> wasmtime::Result<Vec<String>> {
        Ok(self
            .message(&r)?
            .msg
            .segment_names()
            .map(str::to_owned)
            .collect())
    }

    fn encode(&mut self, r: Resource<MessageState>) -> wasmtime::Result<Vec<u8>> {
        Ok(self.message(&r)?.msg.as_bytes().to_vec())
    }

    fn drop(&mut self, r: Resource<MessageState>) -> wasmtime::Result<()> {
        // The host owns the message; the guest only ever borrows it, so a drop from the
        // guest side releases nothing. The host takes it back after the call.
        let _ = r;
        Ok(())
    }
}
