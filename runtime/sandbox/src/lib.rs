//! The sandbox that runs Plexus mapping plug-ins: WebAssembly components implementing
//! `plexus:transform` (see `wit/`), hosted by wasmtime.
//!
//! * **One engine per process** ([`Sandbox`]): pooling allocator, copy-on-write memory
//!   images, epoch interruption driven by one ticker thread, compiled components cached
//!   by sha256.
//! * **One plug-in per version** ([`Plugin`]): loading checks the digest pin, refuses
//!   imports that are not granted (naming the grant to add), compiles and links only the
//!   granted capabilities.
//! * **One fresh instance per message** ([`Plugin::run`]): a new store, a new instance,
//!   limits armed (memory, wall time, optional fuel), dropped afterwards, so no data
//!   carries from one message to the next. The one exception: a plug-in that asks for
//!   reuse and is granted `reuse-instance` keeps its instances between messages.
//!
//! A bad message is an [`Outcome`]; a trap, timeout or exhausted memory is a typed
//! [`RunError`] naming the plug-in and its digest, and the engine keeps serving.

mod bindings;
pub mod cases;
mod config;
mod engine;
mod error;
mod host;
pub mod inspect;

pub use config::{Grants, Limits, SandboxConfig};
pub use engine::{
    Context, FailKind, Failure, MAX_PLUGIN_TEXT, Outcome, Plugin, PluginSpec, Run, Sandbox, Stats,
};
pub use error::{Error, MAX_TRAP_OUTPUT, Result, RunError};
pub use host::log::{LogLevel, LogLine};
pub use host::message::{Edit, EditOp};
pub use host::tables::{CsvError, Table, TableSet};
