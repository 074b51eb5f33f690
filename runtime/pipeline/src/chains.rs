//! Chains activated through the admin API (activate, rollback, shadow promote), kept in
//! `<data_dir>/chains.json` so that a restart runs what was deployed, not the older
//! version the config names.
//!
//! Each entry records the chain the config named when the activation was made. At start
//! an entry is honoured only while the config still names that chain: an operator who
//! has since edited the interface's `chain` (or a plug-in's `file`) meant the config's
//! chain to run, and it does, with a warning naming the activation it replaces.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use plexus_config::Config;
use serde::{Deserialize, Serialize};

use crate::error::{BuildError, OpError};

/// A chain as `(plug-in name, sha256)` per stage, in order.
pub(crate) type Digests = Vec<(String, String)>;

/// One interface's activated chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Kept {
    /// The chain that runs.
    pub chain: Digests,
    /// The chain the config named when it was activated.
    pub config_chain: Digests,
    /// The version the config named then of each plug-in the kept chain runs (by name):
    /// a change to one of them is a config edit, and the config wins.
    #[serde(default)]
    pub config_versions: BTreeMap<String, String>,
    /// Who activated it (the admin token's name).
    pub by: String,
    /// When, in ms since the Unix epoch.
    pub at_ms: u64,
}

/// The file's path.
pub(crate) fn file(config: &Config) -> PathBuf {
    config.engine.data_dir.join("chains.json")
}

/// The kept chains by interface (none when the file does not exist).
pub(crate) fn load(config: &Config) -> Result<BTreeMap<String, Kept>, BuildError> {
    let path = file(config);
    read(&path).map_err(BuildError::Unsupported)
}

fn read(path: &Path) -> Result<BTreeMap<String, Kept>, String> {
    crate::assets::read_state_file(path, "a chains file").map_err(|e| {
        format!("{e}; restore it from a backup, or delete it to run the chains the config names")
    })
}

/// Records that `interface` now runs `chain` (removing the entry when that is the
/// config's chain), before the caller swaps the chain in.
pub(crate) fn save(
    config: &Config,
    interface: &str,
    chain: &Digests,
    config_chain: &Digests,
    configured: &BTreeMap<String, String>,
    by: &str,
) -> Result<(), OpError> {
    let path = file(config);
    let mut kept = read(&path).map_err(OpError::ChainNotKept)?;
    if chain == config_chain {
        if kept.remove(interface).is_none() {
            return Ok(());
        }
    } else {
        let at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        kept.insert(
            interface.to_owned(),
            Kept {
                chain: chain.clone(),
                config_chain: config_chain.clone(),
                config_versions: chain
                    .iter()
                    .filter_map(|(name, _)| {
                        configured.get(name).map(|sha| (name.clone(), sha.clone()))
                    })
                    .collect(),
                by: by.to_owned(),
                at_ms,
            },
        );
    }
    write(&path, &kept).map_err(|e| {
        OpError::ChainNotKept(format!(
            "{e}; the chain was not changed, so that a restart does not run another"
        ))
    })
}

/// What an entry means for a start with the config as it is now.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Standing<'a> {
    /// It runs, over the config's chain.
    Runs,
    /// The config now names the kept chain itself.
    ConfigNamesIt,
    /// The kept chain runs a plug-in the config no longer defines: the config wins.
    PluginRemoved(&'a str),
    /// The config's chain for the interface changed since, or the version it names of a
    /// plug-in the kept chain runs: the config wins.
    ConfigChanged,
}

impl Standing<'_> {
    /// Why an entry that does not run yields to the config, for logs and notes.
    pub(crate) fn reason(&self) -> String {
        match self {
            Standing::Runs => "it runs".to_owned(),
            Standing::ConfigNamesIt => "the config now names that chain itself".to_owned(),
            Standing::PluginRemoved(plugin) => {
                format!("the config no longer defines plug-in {plugin}, which it runs")
            }
            Standing::ConfigChanged => {
                "the config's chain, or a version it names, changed after the activation".to_owned()
            }
        }
    }
}

impl Kept {
    /// Its standing against `config_chain` (the interface's chain as the config names it
    /// now), the plug-ins the config defines and the versions it names (`configured`, by
    /// name).
    pub(crate) fn standing(
        &self,
        config_chain: &Digests,
        config: &Config,
        configured: &BTreeMap<String, String>,
    ) -> Standing<'_> {
        if self.chain == *config_chain {
            return Standing::ConfigNamesIt;
        }
        if let Some((name, _)) = self
            .chain
            .iter()
            .find(|(name, _)| !config.plugins.contains_key(name.as_str()))
        {
            return Standing::PluginRemoved(name);
        }
        let version_changed = self
            .chain
            .iter()
            .any(|(name, _)| self.config_versions.get(name) != configured.get(name));
        if self.config_chain != *config_chain || version_changed {
            return Standing::ConfigChanged;
        }
        Standing::Runs
    }
}

/// The shortest digest prefix [`resolve_digest`] takes: `plexus admin interfaces` shows
/// twelve digits.
pub const MIN_DIGEST_PREFIX: usize = 8;

/// The full sha256 that `given` names among the versions in `store` (the data folder's
/// `plugins/`, if any) and `also` (the versions the config names): `given` itself when it is 64
/// hex digits, else the one known digest that starts with it (at least
/// [`MIN_DIGEST_PREFIX`] hex digits). `None` when nothing matches; an error for a
/// prefix too short, not hex, or shared by several versions.
pub fn resolve_digest<'a>(
    store: Option<&Path>,
    also: impl IntoIterator<Item = &'a str>,
    given: &str,
) -> Result<Option<String>, String> {
    let given = given.to_ascii_lowercase();
    let hex = !given.is_empty() && given.bytes().all(|b| b.is_ascii_hexdigit());
    if hex && given.len() == 64 {
        return Ok(Some(given));
    }
    if !hex || given.len() < MIN_DIGEST_PREFIX || given.len() > 64 {
        return Err(format!(
            "`{given}` is not a sha256: give the 64 hex digits, or at least the first \
             {MIN_DIGEST_PREFIX} (as `plexus admin plugins` lists them)"
        ));
    }
    let stored = store
        .and_then(|dir| std::fs::read_dir(dir).ok())
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".wasm"))
                .map(str::to_owned)
        });
    let mut found: Vec<String> = stored
        .chain(also.into_iter().map(str::to_owned))
        .filter(|d| d.len() == 64 && d.starts_with(&given))
        .collect();
    found.sort();
    found.dedup();
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.pop()),
        _ => Err(format!(
            "`{given}` is the start of {} versions ({}): give more digits",
            found.len(),
            found.join(", ")
        )),
    }
}

/// Removes `interface`'s entry, if it has one.
pub(crate) fn forget(config: &Config, interface: &str) -> Result<(), String> {
    let path = file(config);
    let mut kept = read(&path)?;
    if kept.remove(interface).is_some() {
        write(&path, &kept)?;
    }
    Ok(())
}

/// Rewrites the file durably (a crash leaves the old file or the new one).
fn write(path: &Path, kept: &BTreeMap<String, Kept>) -> Result<(), String> {
    let text =
        serde_json::to_string_pretty(kept).map_err(|e| format!("{}: {e}", path.display()))?;
    // Never write what the next read would refuse.
    if text.len() as u64 > crate::assets::MAX_STATE_FILE {
        return Err(format!(
            "{}: the kept chains would take {} bytes, more than the {} a state file may hold",
            path.display(),
            text.len(),
            crate::assets::MAX_STATE_FILE
        ));
    }
    crate::assets::write_durably(path, &path.with_extension("json.tmp"), text.as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> Config {
        let mut config = Config::demo();
        config.engine.data_dir = dir.join("data");
        config
    }

    fn digests(pairs: &[(&str, &str)]) -> Digests {
        pairs
            .iter()
            .map(|(n, s)| ((*n).to_owned(), (*s).to_owned()))
            .collect()
    }

    #[test]
    fn a_saved_chain_reads_back_and_the_configs_own_chain_removes_the_entry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = config(dir.path());
        assert!(load(&config).expect("no file").is_empty());
        let base = digests(&[("vsm", "aa")]);
        let new = digests(&[("vsm", "bb")]);
        save(&config, "feed", &new, &base, &BTreeMap::new(), "release").expect("saved");
        let kept = load(&config).expect("reads");
        assert_eq!(kept["feed"].chain, new);
        assert_eq!(kept["feed"].config_chain, base);
        assert_eq!(kept["feed"].by, "release");
        save(&config, "feed", &base, &base, &BTreeMap::new(), "release").expect("saved");
        assert!(load(&config).expect("reads").is_empty());
        assert!(!file(&config).with_extension("json.tmp").exists());
    }

    #[test]
    fn a_digest_prefix_names_the_one_version_it_starts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b, c) = (
            "ab".repeat(32),
            format!("abababab{}", "cd".repeat(28)),
            "ef".repeat(32),
        );
        for d in [&a, &b] {
            std::fs::write(dir.path().join(format!("{d}.wasm")), b"").expect("write");
        }
        let resolve = |given: &str| resolve_digest(Some(dir.path()), [c.as_str()], given);
        assert_eq!(resolve(&a.to_ascii_uppercase()), Ok(Some(a.clone())));
        assert_eq!(resolve("ababababab"), Ok(Some(a.clone())));
        assert_eq!(resolve("ababababcd"), Ok(Some(b.clone())));
        assert_eq!(
            resolve("efefefef"),
            Ok(Some(c.clone())),
            "a configured version"
        );
        assert_eq!(resolve("12345678"), Ok(None));
        let err = resolve("abababab").expect_err("two start so");
        assert!(
            err.contains("2 versions") && err.contains(&a) && err.contains(&b),
            "{err}"
        );
        assert!(
            resolve("abab")
                .expect_err("short")
                .contains("at least the first 8")
        );
        assert!(resolve("a436fddf...").is_err());
        let missing = resolve_digest(Some(&dir.path().join("none")), [], "abababab");
        assert_eq!(missing, Ok(None), "no store yet");
    }

    #[test]
    fn a_damaged_file_is_refused_with_the_way_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = config(dir.path());
        std::fs::create_dir_all(dir.path().join("data")).expect("dir");
        std::fs::write(file(&config), "{not json").expect("write");
        let err = load(&config).expect_err("damaged").to_string();
        assert!(
            err.contains("chains.json") && err.contains("delete it"),
            "{err}"
        );
        let err = save(
            &config,
            "feed",
            &digests(&[]),
            &digests(&[("a", "b")]),
            &BTreeMap::new(),
            "x",
        )
        .expect_err("not overwritten");
        assert!(err.to_string().contains("not a chains file"), "{err}");
    }
}
