//! Grant changes made through the admin API (reviewer role): parsed like the config's
//! `grants`, kept in `<data_dir>/grants.json` so they outlive a restart, and laid over
//! the config's grants when the engine starts (with a warning naming each one, so
//! nobody wonders why the config's line is not what runs).

use std::collections::BTreeMap;
use std::path::PathBuf;

use plexus_config::{Config, Grants, Id};
use serde::Serialize;

use crate::error::{BuildError, OpError};

/// What a grant change did.
#[derive(Debug, Clone, Serialize)]
pub struct GrantChange {
    /// The plug-in.
    pub plugin: String,
    /// Its grants before, as written in the config.
    pub before: Vec<String>,
    /// And after.
    pub after: Vec<String>,
    /// Interfaces whose running chain was relinked with the new grants.
    pub relinked: Vec<String>,
    /// Shadow runs ended because their candidate includes the plug-in.
    pub shadows_ended: Vec<i64>,
}

fn file(config: &Config) -> PathBuf {
    config.engine.data_dir.join("grants.json")
}

/// Parses grants as the config's `grants` list is parsed: tables must be defined.
pub(crate) fn parse(items: &[String], config: &Config) -> Result<Grants, OpError> {
    let mut out = Grants::default();
    for item in items {
        match item.trim() {
            "log" => out.log = true,
            "reuse-instance" => out.reuse_instance = true,
            g if g.starts_with("tables:") => {
                let table = &g["tables:".len()..];
                let id = Id::new(table)
                    .filter(|id| config.tables.contains_key(id))
                    .ok_or_else(|| {
                        let defined: Vec<&str> = config.tables.keys().map(Id::as_str).collect();
                        OpError::Gate(format!(
                            "grant `{g}` names table `{table}`, which is not defined (defined: {})",
                            defined.join(", ")
                        ))
                    })?;
                out.tables.insert(id);
            }
            other => {
                return Err(OpError::Gate(format!(
                    "unknown grant `{other}`; grants are `log`, `tables:NAME` and `reuse-instance`"
                )));
            }
        }
    }
    Ok(out)
}

/// Each plug-in's grants: the config's, with the changes a reviewer made through the
/// admin API (`<data_dir>/grants.json`) laid over them.
pub fn effective(config: &Config) -> Result<BTreeMap<String, Grants>, BuildError> {
    let mut grants: BTreeMap<String, Grants> = config
        .plugins
        .iter()
        .map(|(name, p)| (name.to_string(), p.grants.clone()))
        .collect();
    let path = file(config);
    let saved: BTreeMap<String, Vec<String>> =
        crate::assets::read_state_file(&path, "a grants file")
            .map_err(|e| BuildError::Unsupported(format!("{e}; fix or remove it")))?;
    for (plugin, items) in saved {
        let Some(slot) = grants.get_mut(&plugin) else {
            tracing::warn!(
                plugin,
                file = %path.display(),
                "saved grants name a plug-in the config no longer defines; ignored"
            );
            continue;
        };
        let parsed = parse(&items, config).map_err(|e| {
            BuildError::Unsupported(format!("{}: plug-in {plugin}: {e}", path.display()))
        })?;
        tracing::warn!(
            plugin,
            grants = ?items,
            file = %path.display(),
            "grants set through the admin API override the config's"
        );
        *slot = parsed;
    }
    Ok(grants)
}

/// Saves the grants that differ from the config's, `plugin`'s set to `new` (written
/// durably: a crash leaves the old file or the new one).
pub(crate) fn save(
    config: &Config,
    plugin: &str,
    new: &Grants,
    all: &BTreeMap<String, Grants>,
) -> Result<(), OpError> {
    let mut saved: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (name, grants) in all
        .iter()
        .map(|(n, g)| (n.as_str(), g))
        .filter(|(n, _)| *n != plugin)
        .chain([(plugin, new)])
    {
        let configured = config.plugins.iter().find(|(n, _)| n.as_str() == name);
        if configured.is_some_and(|(_, p)| p.grants != *grants) {
            saved.insert(name, grants.to_list());
        }
    }
    let path = file(config);
    let text = serde_json::to_string_pretty(&saved)
        .map_err(|e| OpError::Store(format!("{}: {e}", path.display())))?;
    crate::assets::write_durably(&path, &path.with_extension("json.tmp"), text.as_bytes())
        .map_err(|e| OpError::Store(format!("{}: {e}", path.display())))
}
