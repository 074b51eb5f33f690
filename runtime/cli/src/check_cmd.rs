//! `plexus check FILE`: validate a site config, and load the tables and plug-ins it
//! names, without starting or writing anything.

use std::path::PathBuf;
use std::process::ExitCode;

use plexus_config::{Config, Error};

use crate::site::BuiltinAssets;

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The site config (TOML). See docs/config.md for every key.
    #[arg(value_name = "FILE")]
    file: PathBuf,
}

pub fn check(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    match Config::load(&args.file) {
        // The config is valid; now everything it names, as `plexus run` would load it.
        Ok(config) => match plexus_pipeline::verify(&config, &BuiltinAssets) {
            Ok(verified) => {
                let rows: usize = verified.tables.iter().map(|(_, n)| n).sum();
                println!(
                    "{}: ok ({} interface(s), {} plug-in(s) loaded, {} table(s) with {rows} row(s))",
                    args.file.display(),
                    config.interfaces.len(),
                    verified.plugins.len(),
                    verified.tables.len(),
                );
                for note in &verified.notes {
                    println!("  note: {note}");
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("{}: {:#}", args.file.display(), anyhow::Error::new(e));
                eprintln!(
                    "{}: the config is valid, but what it names does not load; nothing was started",
                    args.file.display()
                );
                Ok(ExitCode::from(1))
            }
        },
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
