//! The `message` resource: the host-owned message the plug-in reads and edits by path.
//! Always linked (it is the data, not a capability). Every edit is recorded.

use plexus_hl7::{EditError, Message, PathError};
use wasmtime::component::Resource;

use crate::bindings::plexus::transform::message::{self as wit, PathError as WitPathError};
use crate::host::HostState;

/// One recorded edit: what the plug-in changed, for provenance.
#[derive(Clone, PartialEq, Eq)]
pub struct Edit {
    /// What kind of edit.
    pub op: EditOp,
    /// The path (or `segment N` for an inserted segment).
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
    /// the limit, and records it when it succeeds.
    fn edit(
        &mut self,
        r: &Resource<MessageState>,
        op: EditOp,
        path: String,
        old: Option<String>,
        growth_bound: usize,
        apply: impl FnOnce(&mut Message<'static>) -> Result<Option<String>, EditError>,
    ) -> wasmtime::Result<Result<(), WitPathError>> {
        let max = self.max_message_bytes;
        let state = self.message_mut(r)?;
        // Keep a copy to roll back to only when the edit could cross the limit; normal
        // edits on normal messages never need one.
        let backup = (state.msg.as_bytes().len().saturating_add(growth_bound) > max)
            .then(|| state.msg.clone());
        let new = match apply(&mut state.msg) {
            Ok(new) => new,
            Err(e) => return Ok(Err(edit_error(e))),
        };
        if state.msg.as_bytes().len() > max {
            if let Some(backup) = backup {
                state.msg = backup;
            }
            return Ok(Err(WitPathError::InvalidValue(format!(
                "the edit at {path} would make the message larger than its {max} byte limit"
            ))));
        }
        state.edits.push(Edit { op, path, old, new });
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
        if value.len() > self.max_message_bytes {
            return Ok(Err(WitPathError::InvalidValue(format!(
                "the value for {path} is larger than the message limit ({} bytes)",
                self.max_message_bytes
            ))));
        }
        let old = self
            .message(&r)?
            .msg
            .get(path.as_str())
            .ok()
            .flatten()
            .map(|c| c.into_owned());
        let target = path.clone();
        // Escaping writes at most 5 bytes per byte (`\X0D\`); padding for missing
        // structure is at most one delimiter per index at four levels.
        let bound = value
            .len()
            .saturating_mul(5)
            .saturating_add(4 * plexus_hl7::path::MAX_INDEX as usize + 16);
        self.edit(&r, EditOp::Set, path, old, bound, move |msg| {
            msg.set(target.as_str(), &value)?;
            Ok(Some(value))
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
        let msg = &self.message(&r)?.msg;
        let old = msg
            .get_raw(path.as_str())
            .ok()
            .flatten()
            .map(|b| String::from_utf8_lossy(b).into_owned());
        let mut existed = false;
        let target = path.clone();
        let result = self.edit(&r, EditOp::Remove, path, old, 0, |msg| {
            existed = msg.remove(target.as_str())?;
            Ok(None)
        })?;
        Ok(result.map(|()| existed))
    }

    fn insert_segment(
        &mut self,
        r: Resource<MessageState>,
        position: u32,
        segment: String,
    ) -> wasmtime::Result<Result<(), WitPathError>> {
        let label = format!("segment {position}");
        let bound = segment.len() + 4;
        self.edit(&r, EditOp::InsertSegment, label, None, bound, move |msg| {
            msg.insert_segment(position as usize, &segment)?;
            Ok(Some(segment))
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
