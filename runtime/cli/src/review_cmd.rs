//! `plexus review PLUGIN[@SHA256] [CANDIDATE.wasm]`: the security reviewer's sheet for one
//! plug-in of a site: what it imports, what it requests against what the site grants
//! (the config's grants, or a reviewer's change made through the admin API), its limits,
//! and (with a candidate file, or `@SHA256` naming an uploaded version) what a new
//! version would change.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use plexus_pipeline::Assets;
use plexus_sandbox::inspect::{self, Class, Inspection};

use crate::site::{BuiltinAssets, SiteArgs};

#[derive(Debug, clap::Args)]
pub struct ReviewArgs {
    #[command(flatten)]
    site: SiteArgs,
    /// The plug-in's name in the site config; `NAME@SHA256` reviews that uploaded
    /// version (from the engine's plug-in store) as the candidate.
    #[arg(value_name = "PLUGIN[@SHA256]")]
    plugin: String,
    /// A candidate version to compare with the configured one.
    #[arg(value_name = "CANDIDATE")]
    candidate: Option<PathBuf>,
}

pub fn review(args: &ReviewArgs) -> anyhow::Result<ExitCode> {
    let config = args.site.load()?;
    let (name, uploaded) = match args.plugin.split_once('@') {
        Some((name, sha)) => (name, Some(sha.to_ascii_lowercase())),
        None => (args.plugin.as_str(), None),
    };
    let Some(entry) = config.plugins.get(name) else {
        let names: Vec<&str> = config.plugins.keys().map(|k| k.as_str()).collect();
        anyhow::bail!(
            "no plug-in `{name}` in the site config; defined: {}",
            names.join(", ")
        );
    };
    let candidate = match (&uploaded, &args.candidate) {
        (Some(_), Some(_)) => {
            anyhow::bail!("give the candidate either as NAME@SHA256 or as a file, not both")
        }
        (Some(sha), None) => {
            let store = plexus_pipeline::plugin_store_path(&config);
            let configured = BuiltinAssets
                .read(&entry.file)
                .ok()
                .map(|bytes| plexus_pipeline::sha256_hex(&bytes));
            let full = plexus_pipeline::resolve_digest(Some(&store), configured.as_deref(), sha)
                .map_err(|e| anyhow::anyhow!("{name}@{sha}: {e}"))?;
            let path = full.as_ref().map(|sha| store.join(format!("{sha}.wasm")));
            match path {
                Some(path) if path.exists() => Some(path),
                // Not uploaded, but the version the config names: that is the sheet
                // without a candidate.
                _ if full.is_some() && full == configured => None,
                _ => anyhow::bail!(
                    "{name}@{sha}: no such version has been uploaded to this site's store ({})",
                    store.display()
                ),
            }
        }
        (None, file) => file.clone(),
    };
    let bytes = BuiltinAssets
        .read(&entry.file)
        .with_context(|| format!("reading plug-in {name}"))?;
    let current = inspect::inspect(&bytes).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    let effective = plexus_pipeline::effective_grants(&config)?;
    let now = effective.get(name).unwrap_or(&entry.grants);
    let granted: Vec<String> = now.to_list();

    println!("plug-in      {name}");
    println!("sha256       {}", current.sha256);
    let mut refused = Vec::new();
    match &entry.sha256 {
        Some(pin) if pin.eq_ignore_ascii_case(&current.sha256) => println!("pin          matches"),
        Some(pin) => {
            println!("pin          MISMATCH: config pins {pin}; the engine will refuse to load it");
            refused.push("its sha256 does not match the pin".to_owned());
        }
        None => println!(
            "pin          none (add sha256 = \"{}\" to pin this version)",
            current.sha256
        ),
    }
    println!(
        "limits       memory {} MiB, timeout {:?}, message up to {} MiB, log {} lines / {} KiB",
        entry.limits.memory_bytes >> 20,
        entry.limits.timeout,
        entry.limits.max_message_bytes >> 20,
        entry.limits.log_lines,
        entry.limits.log_bytes >> 10
    );
    if now != &entry.grants {
        println!(
            "grants       set through the admin API ({}); the config says [{}]",
            config.engine.data_dir.join("grants.json").display(),
            entry.grants.to_list().join(", ")
        );
    }
    println!();
    print_imports(&current);
    let missing = print_grants(&current, &granted);
    if missing {
        refused.push("it imports a capability the site does not grant".to_owned());
    }
    let unavailable = current.refused_imports();
    if !unavailable.is_empty() {
        refused.push(format!(
            "it imports what no site can grant: {}",
            unavailable.join(", ")
        ));
    }
    if !current.implements_contract() {
        refused.push("it does not export `transform`".to_owned());
    }
    if refused.is_empty() {
        println!(
            "
verdict      loads with the current grants"
        );
    } else {
        println!(
            "
verdict      WILL NOT LOAD: {}",
            refused.join("; ")
        );
    }
    let mut problems = !refused.is_empty();
    if let Some(candidate) = &candidate {
        let bytes = crate::read_input(candidate)?;
        let next = inspect::inspect(&bytes)
            .map_err(|e| anyhow::anyhow!("{}: {e}", candidate.display()))?;
        println!("\ncandidate    {} ({})", candidate.display(), next.sha256);
        let before = current.capabilities();
        let after = next.capabilities();
        let added: Vec<&&str> = after.iter().filter(|c| !before.contains(c)).collect();
        let removed: Vec<&&str> = before.iter().filter(|c| !after.contains(c)).collect();
        println!("  requests added    {}", list(&added));
        println!("  requests removed  {}", list(&removed));
        let imports_before: Vec<&String> = current.imports.iter().map(|(n, _)| n).collect();
        for (name, class) in &next.imports {
            if !imports_before.contains(&name) {
                println!("  new import        {name} ({})", class.label());
            }
        }
        let missing = missing_grants(&next, &granted);
        let unavailable = next.refused_imports();
        if missing.is_empty() && unavailable.is_empty() {
            println!("  verdict           loads with the current grants");
        } else {
            problems = true;
            if !missing.is_empty() {
                println!(
                    "  verdict           REFUSED with the current grants: needs {}",
                    missing.join(", ")
                );
            }
            if !unavailable.is_empty() {
                println!(
                    "  verdict           REFUSED: imports what no site can grant: {}",
                    unavailable.join(", ")
                );
            }
        }
    }
    Ok(if problems {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn print_imports(i: &Inspection) {
    println!("imports");
    for (name, class) in &i.imports {
        let note = match class {
            Class::Contract => "always provided".to_owned(),
            Class::Capability { grant, .. } => format!("needs grant \"{grant}\""),
            Class::Inert { effect } => (*effect).to_owned(),
            Class::Unavailable { why } => format!("REFUSED: {why}"),
        };
        println!("  {name:<44} {:<12} {note}", class.label());
    }
}

/// Prints requested vs granted; true when the plug-in would not load.
fn print_grants(i: &Inspection, granted: &[String]) -> bool {
    let requested = i.capabilities();
    println!("\ncapabilities");
    println!(
        "  requested    {}",
        list(&requested.iter().collect::<Vec<_>>())
    );
    println!(
        "  granted      {}",
        list(&granted.iter().collect::<Vec<_>>())
    );
    if !i.reads_tables.is_empty() {
        println!("  reads tables {}", list(&i.reads_tables));
    }
    let missing = missing_grants(i, granted);
    if !missing.is_empty() {
        println!(
            "  MISSING      {} (the engine refuses to load it)",
            missing.join(", ")
        );
    }
    // A capability the component does not import cannot be used: the grant can go. A
    // table the plug-in does not declare may still be looked up by name (an optional
    // settings table): the declaration is the author's word, not something we can check.
    let (unused, undeclared): (Vec<&String>, Vec<&String>) = granted
        .iter()
        .filter(|g| {
            let cap = g.split(':').next().unwrap_or(g);
            if cap == "reuse-instance" {
                return !i.requests_reuse;
            }
            !requested.contains(&cap)
                || (cap == "tables"
                    && !i.reads_tables.is_empty()
                    && !i.reads_tables.iter().any(|t| format!("tables:{t}") == **g))
        })
        .partition(|g| !(g.starts_with("tables:") && requested.contains(&"tables")));
    if !unused.is_empty() {
        println!(
            "  unused       {} (granted but not requested: remove for least privilege)",
            list(&unused)
        );
    }
    if !undeclared.is_empty() {
        println!(
            "  undeclared   {} (not among the tables it declares, but it imports table lookups and may read it by name, as an optional settings table; check its documentation before removing the grant)",
            list(&undeclared)
        );
    }
    if i.requests_reuse {
        let granted_reuse = granted.iter().any(|g| g == "reuse-instance");
        println!(
            "  reuse        requested; {}",
            if granted_reuse {
                "GRANTED: state may carry between messages"
            } else {
                "not granted: fresh instance per message"
            }
        );
    }
    !missing.is_empty()
}

fn missing_grants(i: &Inspection, granted: &[String]) -> Vec<String> {
    let mut missing: Vec<String> = i
        .capabilities()
        .into_iter()
        .filter(|cap| !granted.iter().any(|g| g.split(':').next() == Some(cap)))
        .map(|cap| {
            if cap == "tables" {
                "tables:<table-name>".to_owned()
            } else {
                cap.to_owned()
            }
        })
        .collect();
    // The tables it names and the site does not grant, by name.
    if i.capabilities().contains(&"tables") && !i.reads_tables.is_empty() {
        missing.retain(|m| m != "tables:<table-name>");
        missing.extend(
            i.reads_tables
                .iter()
                .map(|t| format!("tables:{t}"))
                .filter(|g| !granted.contains(g)),
        );
    }
    missing
}

fn list<T: std::fmt::Display>(items: &[T]) -> String {
    if items.is_empty() {
        "(none)".to_owned()
    } else {
        items
            .iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}
