//! `plexus check FILE`: validate a site config without running anything.

use std::path::PathBuf;
use std::process::ExitCode;

use plexus_config::{Config, Error};

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The site config (TOML). See docs/config.md for every key.
    #[arg(value_name = "FILE")]
    file: PathBuf,
}

pub fn check(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    match Config::load(&args.file) {
        Ok(config) => {
            println!(
                "{}: ok ({} interface(s), {} plug-in(s), {} table(s))",
                args.file.display(),
                config.interfaces.len(),
                config.plugins.len(),
                config.tables.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        // Every problem, each with file:line:col and the fix; exit 1 as a linter would.
        Err(Error::Invalid { diagnostics }) => {
            for d in &diagnostics {
                eprintln!("{d}");
            }
            eprintln!(
                "{}: {} problem(s); nothing was started",
                args.file.display(),
                diagnostics.len()
            );
            Ok(ExitCode::from(1))
        }
        Err(other) => Err(other.into()),
    }
}
