//! The guest SDK for Plexus mapping plug-ins.
//!
//! A plug-in is a WebAssembly component (`wasm32-wasip2`) that implements the
//! `plexus:transform` contract in `wit/transform.wit`: one function, `transform`, runs once
//! per message in a fresh sandbox (unless it asks for reuse, see
//! [`request_instance_reuse!`], and the site grants it). The host owns and parses the
//! message; the plug-in reads
//! and edits it through terser paths (`PID-5-1`, `PV1-7[2]-1`, `OBX[3]-5`), and the host
//! records every edit.
//!
//! This crate holds the only bindings generated from that contract on the guest side, and
//! adds what authors need on top:
//!
//! * [`Plugin`] and [`export!`]: implement the trait, export the type;
//! * [`Message::read`] and [`Message::write`]: path access with errors that name the path,
//!   and a [`Value`] that keeps *empty* apart from the HL7 explicit null `""`;
//! * [`TransformError`] constructors ([`missing_mapping`](TransformError::missing_mapping),
//!   [`invalid_input`](TransformError::invalid_input), [`rejected`](TransformError::rejected),
//!   [`internal`](TransformError::internal)) and [`Outcome`] helpers;
//! * [`tables`]: crosswalk lookups, including [`map_through_table`];
//! * [`log`]: log lines at a level;
//! * [`text`] and [`path`]: folding keys, quoting values in errors, building paths.
//!
//! # Example
//!
//! A complete plug-in: it maps the appointment status in `SCH-25-1` through the site's
//! `visit-status` table, and drops test messages.
//!
//! ```
//! use plexus_sdk::tables::{Crosswalk, Keys};
//! use plexus_sdk::{Context, Message, Outcome, Plugin};
//!
//! struct StatusMap;
//!
//! impl Plugin for StatusMap {
//!     fn transform(msg: &Message, _ctx: Context) -> plexus_sdk::Result<Outcome> {
//!         // MSH-11 is the processing id: `T` marks a test message.
//!         if msg.read("MSH-11")?.text() == Some("T") {
//!             return Ok(Outcome::filter("test message (MSH-11 = T)"));
//!         }
//!         // Reads SCH-25-1, looks it up (as written, then trimmed and lowercased), and
//!         // writes the code back. An unknown status fails with `missing-mapping`, naming
//!         // the status and the path; an empty field or `""` is left as it is.
//!         Crosswalk::new("visit-status")
//!             .keys(Keys::Folded)
//!             .map(msg, "SCH-25-1")?;
//!         Ok(Outcome::Forward)
//!     }
//! }
//!
//! plexus_sdk::export!(StatusMap);
//! // The tables it reads, for the reviewer's sheet and the site's grant check.
//! plexus_sdk::reads_tables!("visit-status");
//! # fn main() {}
//! ```
//!
//! Build it with `cargo build --target wasm32-wasip2 --profile guest -p my-plugin` (in
//! this workspace; elsewhere `--release`, see `sdk/README.md`): the `.wasm` file in
//! `target/wasm32-wasip2/guest/` is the component. `sdk/README.md` covers
//! golden cases and grants.
//!
//! # Capabilities
//!
//! A component's imports are its request for capabilities, and the site grants them per
//! plug-in. `wit-component` keeps only the imports the plug-in's code actually calls, so a
//! plug-in that never calls into [`log`] does not import `plexus:transform/log`, and one that
//! never calls into [`tables`] does not import `plexus:transform/tables`. The helpers in this
//! crate call a capability only when their names say so, so using one never adds an import
//! you did not ask for.
//!
//! # Native builds
//!
//! The crate, and plug-ins built on it, also compile for the host target, so `cargo clippy`
//! and `cargo test` cover them. Calling into the host there panics (there is no host); keep
//! the logic you want to unit-test in plain functions, as the plug-ins in `plugins/` do.

#![deny(missing_docs)]
#![no_std]

extern crate alloc;
#[cfg(test)]
extern crate std;

/// What the hand-written modules use from `alloc`: the crate is `no_std`, so it serves
/// `#![no_std]` plug-ins (see [`no_std_runtime!`]) as well as ordinary ones.
#[allow(unused_imports)]
mod prelude {
    pub(crate) use alloc::borrow::ToOwned;
    pub(crate) use alloc::format;
    pub(crate) use alloc::string::{String, ToString};
    pub(crate) use alloc::vec;
    pub(crate) use alloc::vec::Vec;
}

/// The bindings `wit-bindgen` generates from `../wit`: generated once, here, and reached by
/// authors only through the re-exports below and the [`export!`] macro.
#[doc(hidden)]
// Generated code: its items are documented by the WIT where the WIT has docs, and the
// canonical ABI glue is unsafe by nature. Nothing hand-written lives in this module.
#[allow(missing_docs, unsafe_code, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "hl7-transform",
        // The export macro is used by plug-in crates, so it must be `#[macro_export]`.
        // `export!` below calls it with `$crate::bindings`, so the default module only
        // matters to someone calling the generated macro directly.
        pub_export_macro: true,
        export_macro_name: "export_hl7_transform",
        default_bindings_module: "plexus_sdk::bindings",
        additional_derives: [PartialEq, Eq],
    });
}

/// What the SDK's macros expand to; not part of the API.
#[doc(hidden)]
pub mod __private {
    #[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
    pub use crate::no_std::{Heap, cabi_realloc};
}

mod error;
pub mod log;
mod message;
mod no_std;
pub mod path;
mod plugin;
pub mod tables;
pub mod text;

pub use bindings::plexus::transform::message::{Message, PathError};
pub use bindings::plexus::transform::types::{Context, ErrorKind, Outcome, TransformError};
pub use error::Result;
pub use message::Value;
pub use plugin::Plugin;
pub use tables::{Mapped, map_through_table};
