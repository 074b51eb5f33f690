//! The `log` capability: log lines at a level.
//!
//! Calling any function here makes the plug-in import `plexus:transform/log`, so the site
//! must grant `log`. The host caps line length and lines per message.
//!
//! Never log message content above `debug`: no names, identifiers or values from the
//! message. Counts, paths and codes are fine.
//!
//! ```no_run
//! let mapped = 2;
//! plexus_sdk::log::info(format_args!("mapped {mapped} provider ids to NPI"));
//! plexus_sdk::log::warn("settings table not granted; using defaults");
//! ```

use crate::prelude::*;
use core::fmt::Display;

pub use crate::bindings::plexus::transform::log::Level;

/// Logs `line` at `level`. Anything [`Display`] works: `&str`, `String`, `format_args!`.
pub fn log(level: Level, line: impl Display) {
    crate::bindings::plexus::transform::log::log(level, &line.to_string());
}

/// Logs at [`Level::Trace`].
pub fn trace(line: impl Display) {
    log(Level::Trace, line);
}

/// Logs at [`Level::Debug`].
pub fn debug(line: impl Display) {
    log(Level::Debug, line);
}

/// Logs at [`Level::Info`].
pub fn info(line: impl Display) {
    log(Level::Info, line);
}

/// Logs at [`Level::Warn`].
pub fn warn(line: impl Display) {
    log(Level::Warn, line);
}

/// Logs at [`Level::Error`].
pub fn error(line: impl Display) {
    log(Level::Error, line);
}
