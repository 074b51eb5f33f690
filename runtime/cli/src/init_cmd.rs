//! `plexus init DIR`: writes the bundled demo site out as files a site can edit: the
//! config, its crosswalk table and the two plug-ins, each pinned to its sha256.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;

use crate::site::builtin;

#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// The folder to write the site into; created if missing, refused if not empty.
    #[arg(value_name = "DIR", default_value = "plexus-site")]
    dir: PathBuf,
}

/// The files written, by the `builtin:` name the demo config uses for each.
const FILES: [(&str, &str); 3] = [
    ("visit-status.csv", "visit-status.csv"),
    ("demographics-normalize", "demographics-normalize.wasm"),
    ("visit-status-map", "visit-status-map.wasm"),
];

pub fn init(args: &InitArgs) -> anyhow::Result<ExitCode> {
    let dir = &args.dir;
    if dir.exists() {
        let mut entries =
            std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
        anyhow::ensure!(
            entries.next().is_none(),
            "{} is not empty; name a new or empty folder (nothing was written)",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut config = site_config();
    for (name, file) in FILES {
        let bytes = builtin(name).with_context(|| format!("no built-in {name}"))?;
        write(&dir.join(file), bytes)?;
        config = config.replace(&format!("\"builtin:{name}\""), &format!("\"{file}\""));
        if file.ends_with(".wasm") {
            // Pin each plug-in: the engine refuses a file that changed under the config.
            let digest = plexus_pipeline::sha256_hex(bytes);
            config = config.replace(
                &format!("file = \"{file}\"\n"),
                &format!("file = \"{file}\"\nsha256 = \"{digest}\"\n"),
            );
        }
    }
    anyhow::ensure!(
        !config.contains("builtin:"),
        "the demo config names a built-in file this command does not write"
    );
    write(&dir.join("site.toml"), config.as_bytes())?;
    let site = dir.join("site.toml");
    println!("wrote the demo site to {}:", dir.display());
    for (_, file) in FILES {
        println!("  {}", dir.join(file).display());
    }
    println!("  {}", site.display());
    println!("next:");
    println!("  plexus check {}", site.display());
    println!("  plexus run --config {}", site.display());
    println!(
        "  plexus token new ops --role operator   # then append the [[admin.tokens]] lines it prints to {}",
        site.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The demo config with its header rewritten for a site of its own.
fn site_config() -> String {
    let body = plexus_config::DEMO_TOML
        .lines()
        .skip_while(|l| l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    format!(
        "# A Plexus site, written by `plexus init` from the bundled demo. Paths are relative\n\
         # to this file's folder; every key is in docs/config.md. Edit the table and run\n\
         # `plexus check` on this file after any change.\n{body}\n"
    )
}

fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}
