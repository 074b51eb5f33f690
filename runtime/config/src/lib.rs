//! The site configuration: one TOML file that declares tables, plug-ins and interfaces.
//!
//! Parsing happens in two steps. Serde reads the file into raw structs that mirror the
//! TOML and reject unknown keys; then one validation pass turns them into the types
//! below, filling in defaults, resolving paths against the config file's folder and
//! checking every cross-reference. Validation reports every problem it finds, each with
//! `file:line:col` and, where there is one, the fix. The reference for every key is
//! `docs/config.md`.
//!
//! ```
//! use std::path::Path;
//! use std::time::Duration;
//!
//! let text = r#"
//! [plugins.visit-status-map]
//! file = "plugins/visit-status-map.wasm"
//! grants = ["tables:visit-status"]
//!
//! [tables.visit-status]
//! file = "tables/visit-status.csv"
//!
//! [interfaces.scheduling]
//! source = { type = "mllp", listen = "127.0.0.1:2575" }
//! chain = ["visit-status-map"]
//! destinations = [{ name = "emr", type = "mllp", connect = "10.0.0.5:2575" }]
//! "#;
//! let config = plexus_config::Config::from_toml(text, Path::new("/etc/plexus/site.toml"))?;
//! let scheduling = &config.interfaces["scheduling"];
//! assert_eq!(scheduling.retry.max_backoff, Duration::from_secs(300));
//! assert_eq!(
//!     config.tables["visit-status"].file,
//!     plexus_config::Source::Path("/etc/plexus/tables/visit-status.csv".into()),
//! );
//!
//! // A typo is reported with its position and the likely fix.
//! let err = plexus_config::Config::from_toml(
//!     &text.replace(r#"chain = ["visit-status-map"]"#, r#"chain = ["visit-status-mapp"]"#),
//!     Path::new("site.toml"),
//! )
//! .unwrap_err();
//! assert_eq!(
//!     err.to_string(),
//!     "site.toml:11:10: error: chain names plug-in `visit-status-mapp`, which is not defined\n  \
//!      help: defined plug-ins: visit-status-map (did you mean `visit-status-map`?)",
//! );
//! # Ok::<(), plexus_config::Error>(())
//! ```

mod diag;
mod raw;
mod types;
mod units;
mod validate;

use std::io::Read;
use std::path::{Path, PathBuf};

pub use diag::Diagnostic;
pub use types::*;

/// The bundled demo site (`plexus run` with no config). Its plug-ins and table are
/// `builtin:` files, which the CLI supplies.
pub const DEMO_TOML: &str = include_str!("demo.toml");

/// The demo's `visit-status` table (`builtin:visit-status.csv`).
pub const DEMO_VISIT_STATUS_CSV: &str = include_str!("demo/visit-status.csv");

/// Config files larger than this are refused unread: a site config is a few KiB.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// What can go wrong loading a config.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    // The cause is in the message, not also a `source`: printed with its chain
    // (`{:#}`), it would read "No such file ...: No such file ...".
    #[error("cannot read config {}: {reason}", path.display())]
    Read {
        /// The config file.
        path: PathBuf,
        /// Why.
        reason: std::io::Error,
    },
    /// The file is larger than [`MAX_CONFIG_BYTES`].
    #[error("config {} is larger than {MAX_CONFIG_BYTES} bytes", path.display())]
    TooLarge {
        /// The config file.
        path: PathBuf,
    },
    /// The file is not a valid config. Displays every diagnostic, one after another.
    #[error("{}", diag::render(diagnostics))]
    Invalid {
        /// Every problem found, in file order.
        diagnostics: Vec<Diagnostic>,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Config {
    /// Reads and validates the config at `path`. Relative paths inside it are resolved
    /// against its folder.
    pub fn load(path: &Path) -> Result<Config> {
        let read_err = |reason| Error::Read {
            path: path.to_owned(),
            reason,
        };
        let file = std::fs::File::open(path).map_err(read_err)?;
        let mut text = String::new();
        file.take(MAX_CONFIG_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(read_err)?;
        if text.len() as u64 > MAX_CONFIG_BYTES {
            return Err(Error::TooLarge {
                path: path.to_owned(),
            });
        }
        Config::from_toml(&text, path)
    }

    /// Validates config `text`. `path` names the file in errors, and its folder is the
    /// base for relative paths; nothing is read from disk.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config> {
        let file = path.display().to_string();
        let mut sink = diag::Sink::new(&file, text);
        let config = match toml::from_str::<raw::Config>(text) {
            Ok(raw) => {
                let base = path.parent().unwrap_or(Path::new(""));
                Some(validate::validate(raw, &mut sink, base))
            }
            Err(err) => {
                diag::from_toml(&mut sink, &err);
                None
            }
        };
        match config {
            Some(config) if sink.out.is_empty() => Ok(config),
            _ => {
                let mut diagnostics = sink.out;
                diagnostics.sort_by_key(|d| (d.line, d.column));
                Err(Error::Invalid { diagnostics })
            }
        }
    }

    /// The bundled demo site, with relative paths left relative (to the current folder).
    pub fn demo() -> Config {
        // The demo is a constant checked by this crate's tests; failing here is a bug
        // in the build, not bad input.
        Config::from_toml(DEMO_TOML, Path::new("demo.toml"))
            .expect("the bundled demo config is valid")
    }
}
