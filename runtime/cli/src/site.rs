//! The site a command works on: `--config FILE`, or the bundled demo, whose `builtin:`
//! files ship inside this binary.

use std::path::{Path, PathBuf};

use anyhow::Context;
use plexus_config::{Config, Source};
use plexus_journal::{JournalOptions, SqliteJournal};
use plexus_pipeline::{Assets, FsAssets};

mod builtin {
    include!(concat!(env!("OUT_DIR"), "/builtin.rs"));
}

/// `--config`, shared by the commands that work on a site.
#[derive(Debug, Clone, clap::Args)]
pub struct SiteArgs {
    /// The site config (TOML); without it, the bundled demo site (see `plexus check`).
    #[arg(long, short = 'c', value_name = "FILE", env = "PLEXUS_CONFIG")]
    pub config: Option<PathBuf>,
}

impl SiteArgs {
    /// Loads and validates the config; problems are printed as `plexus check` prints them.
    pub fn load(&self) -> anyhow::Result<Config> {
        self.load_for("nothing was started")
    }

    /// [`load`](Self::load), ending the summary of problems with `outcome` (what the
    /// caller did not do because of them).
    pub fn load_for(&self, outcome: &str) -> anyhow::Result<Config> {
        match &self.config {
            None => Ok(Config::demo()),
            Some(path) => match Config::load(path) {
                Ok(config) => Ok(config),
                Err(plexus_config::Error::Invalid { diagnostics }) => {
                    for d in &diagnostics {
                        eprintln!("{d}");
                    }
                    anyhow::bail!(
                        "{}: {} problem(s) in the config; {outcome}",
                        path.display(),
                        diagnostics.len()
                    )
                }
                Err(other) => Err(other.into()),
            },
        }
    }
}

/// Files shipped inside the binary, then the filesystem.
#[derive(Debug, Clone, Copy, Default)]
pub struct BuiltinAssets;

impl Assets for BuiltinAssets {
    fn read(&self, source: &Source) -> std::io::Result<Vec<u8>> {
        match source {
            Source::Builtin(name) => builtin(name).map(<[u8]>::to_vec).ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!(
                        "no built-in file `{name}`; built-ins: visit-status-map, \
                         demographics-normalize, visit-status.csv"
                    ),
                )
            }),
            Source::Path(_) => FsAssets.read(source),
        }
    }
}

/// A file shipped inside the binary, by its `builtin:` name.
pub(crate) fn builtin(name: &str) -> Option<&'static [u8]> {
    match name {
        "visit-status-map" => Some(builtin::VISIT_STATUS_MAP),
        "demographics-normalize" => Some(builtin::DEMOGRAPHICS_NORMALIZE),
        "visit-status.csv" => Some(plexus_config::DEMO_VISIT_STATUS_CSV.as_bytes()),
        _ => None,
    }
}

/// Opens the site's existing journal (never creates one).
pub fn open_journal(config: &Config) -> anyhow::Result<SqliteJournal> {
    let path = plexus_pipeline::journal_path(config);
    anyhow::ensure!(
        path.exists(),
        "no journal at {} (has the engine run with this config, from this folder?)",
        path.display()
    );
    SqliteJournal::open_with(
        &path,
        JournalOptions {
            duplicate_window: config.journal.duplicate_window,
            ..JournalOptions::default()
        },
    )
    .with_context(|| format!("opening the journal at {}", path.display()))
}

/// Shown in messages: the config file, or "the demo site".
pub fn label(config: Option<&Path>) -> String {
    config.map_or_else(|| "the demo site".to_owned(), |p| p.display().to_string())
}
