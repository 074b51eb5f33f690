//! Golden cases for a plug-in: `NAME.hl7` in, and beside it either `NAME.expected.hl7`
//! (the exact message after a `forward`) or `NAME.expected.json` (any other outcome):
//!
//! ```json
//! {"outcome": "fail", "kind": "missing-mapping", "path": "SCH-25-1", "detail_contains": "Roomed"}
//! {"outcome": "filter", "reason_contains": "test patient"}
//! {"outcome": "forward"}
//! ```
//!
//! Tables the cases need live in `tables/NAME.csv` beside them; the run grants `log` and
//! every table found there. Cases run on the production engine settings plus fuel
//! metering, so each case reports deterministic fuel next to its time and memory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use plexus_hl7::Message;

use crate::config::{Grants, Limits, SandboxConfig};
use crate::engine::{Context, Outcome, Plugin, PluginSpec, Sandbox};
use crate::error::Error;
use crate::host::tables::{Table, TableSet};

/// Fuel budget per case: far above any sane mapping, low enough to stop a runaway loop
/// quickly and deterministically.
pub const CASE_FUEL: u64 = 2_000_000_000;

/// The result of one case.
#[derive(Debug)]
pub struct CaseResult {
    /// The case name (file stem).
    pub name: String,
    /// `None` when it passed; otherwise what differed.
    pub failure: Option<String>,
    /// Fuel used (deterministic across runs and machines).
    pub fuel: Option<u64>,
    /// Wall time of instantiate plus call.
    pub time: Duration,
    /// Largest linear memory reached.
    pub memory: usize,
}

/// Why a case folder could not be run at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CasesError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A table is not valid CSV.
    #[error(transparent)]
    Table(#[from] crate::host::tables::CsvError),
    /// The plug-in did not load.
    #[error(transparent)]
    Load(#[from] Error),
    /// The folder holds no cases.
    #[error("{0}: no NAME.hl7 cases found")]
    Empty(PathBuf),
    /// The cases folder does not exist.
    #[error("the cases folder {0} does not exist (or is not a folder)")]
    NoFolder(PathBuf),
    /// The plug-in reads a table the cases do not provide.
    #[error(
        "the plug-in reads table {table}, but {} is missing: put the table the cases need there (CSV with a `key,value` header)",
        path.display()
    )]
    MissingTable {
        /// The table.
        table: String,
        /// Where the cases' copy of it belongs.
        path: PathBuf,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CasesError + '_ {
    move |source| CasesError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Loads the tables in `dir/tables/*.csv`.
pub fn load_tables(dir: &Path) -> Result<TableSet, CasesError> {
    let mut tables = TableSet::new();
    let tables_dir = dir.join("tables");
    let Ok(entries) = std::fs::read_dir(&tables_dir) else {
        return Ok(tables);
    };
    for entry in entries {
        let path = entry.map_err(io(&tables_dir))?.path();
        if path.extension().is_some_and(|e| e == "csv") {
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let text = std::fs::read_to_string(&path).map_err(io(&path))?;
            tables.insert(name.clone(), Arc::new(Table::from_csv(&name, &text)?));
        }
    }
    Ok(tables)
}

/// Runs every case in `dir` against the component `bytes`. With `bless`, expected files
/// are (re)written from what the plug-in did, and every case passes but one: an expected
/// file with no input beside it fails either way (bless cannot make its input).
pub fn run_cases(
    name: &str,
    bytes: &[u8],
    dir: &Path,
    limits: Limits,
    bless: bool,
) -> Result<Vec<CaseResult>, CasesError> {
    if !dir.is_dir() {
        return Err(CasesError::NoFolder(dir.to_owned()));
    }
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|e| e == "hl7")
                && !p.to_string_lossy().ends_with(".expected.hl7")
        })
        .collect();
    inputs.sort();
    if inputs.is_empty() {
        return Err(CasesError::Empty(dir.to_owned()));
    }
    let tables = load_tables(dir)?;
    let grants = Grants {
        log: true,
        tables: tables.keys().cloned().collect(),
        reuse_instance: false,
    };
    let sandbox = Sandbox::new(
        SandboxConfig {
            fuel: Some(CASE_FUEL),
            max_instances: 4,
            ..SandboxConfig::default()
        }
        .with_room_for(limits.memory_bytes),
    )?;
    let spec = PluginSpec {
        name: name.to_owned(),
        sha256: None,
        grants,
        limits,
    };
    // An expected file with no input beside it (a renamed or deleted case) would
    // otherwise be ignored: it fails, named, so the suite does not shrink unnoticed.
    let orphans: Vec<CaseResult> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| {
            let name = p.file_name()?.to_string_lossy().into_owned();
            let stem = name
                .strip_suffix(".expected.hl7")
                .or_else(|| name.strip_suffix(".expected.json"))?
                .to_owned();
            (!dir.join(format!("{stem}.hl7")).exists()).then(|| CaseResult {
                name: stem.clone(),
                failure: Some(format!(
                    "{name} has no {stem}.hl7 beside it: add the input, or remove it"
                )),
                fuel: None,
                time: Duration::ZERO,
                memory: 0,
            })
        })
        .collect();
    let plugin = match Plugin::load(&sandbox, &spec, bytes, Arc::new(tables)) {
        Ok(plugin) => plugin,
        // The cases grant exactly the tables they bring: a refused table is a missing file.
        Err(Error::NotGranted { grant, .. })
            if grant.starts_with("tables:") && !grant.contains('<') =>
        {
            let table = grant["tables:".len()..].to_owned();
            let path = dir.join("tables").join(format!("{table}.csv"));
            return Err(CasesError::MissingTable { table, path });
        }
        Err(e) => return Err(e.into()),
    };

    inputs
        .iter()
        .map(|input| run_case(&plugin, input, bless))
        .chain(orphans.into_iter().map(Ok))
        .collect()
}

fn run_case(plugin: &Plugin, input: &Path, bless: bool) -> Result<CaseResult, CasesError> {
    let stem = input
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut result = CaseResult {
        name: stem.clone(),
        failure: None,
        fuel: None,
        time: Duration::ZERO,
        memory: 0,
    };
    let raw = std::fs::read(input).map_err(io(input))?;
    let msg = match Message::parse_owned(raw) {
        Ok(msg) => msg,
        Err(e) => {
            result.failure = Some(format!("the input does not parse: {e}"));
            return Ok(result);
        }
    };
    let ctx = Context {
        interface: "cases".to_owned(),
        site: "test".to_owned(),
        message_id: stem.clone(),
        received_at_ms: 1_767_225_600_000, // 2026-01-01T00:00:00Z, fixed for reproducible cases
    };
    let run = match plugin.run(msg, &ctx) {
        Ok(run) => run,
        Err(e) => {
            // Cases are the author's own test data: a panic's message may be shown.
            result.failure = Some(match &e {
                crate::RunError::Trap { stderr, .. } if !stderr.is_empty() => {
                    format!("the run failed: {e}; stderr: {stderr}")
                }
                _ => format!("the run failed: {e}"),
            });
            return Ok(result);
        }
    };
    result.fuel = run.stats.fuel_used;
    result.time = run.stats.total;
    result.memory = run.stats.memory_high_water;

    let expected_hl7 = input.with_file_name(format!("{stem}.expected.hl7"));
    let expected_json = input.with_file_name(format!("{stem}.expected.json"));
    if bless {
        match &run.outcome {
            Outcome::Forward => {
                std::fs::write(&expected_hl7, run.message.as_bytes()).map_err(io(&expected_hl7))?;
                let _ = std::fs::remove_file(&expected_json);
            }
            other => {
                std::fs::write(&expected_json, outcome_json(other)).map_err(io(&expected_json))?;
                let _ = std::fs::remove_file(&expected_hl7);
            }
        }
        return Ok(result);
    }
    result.failure = if expected_hl7.exists() {
        let expected = std::fs::read(&expected_hl7).map_err(io(&expected_hl7))?;
        match &run.outcome {
            Outcome::Forward if run.message.as_bytes() == expected.as_slice() => None,
            Outcome::Forward => Some(diff(&expected, run.message.as_bytes())),
            other => Some(format!(
                "expected forward with {}, got {}",
                file_name(&expected_hl7),
                describe(other)
            )),
        }
    } else if expected_json.exists() {
        let text = std::fs::read_to_string(&expected_json).map_err(io(&expected_json))?;
        check_outcome(&text, &run.outcome).err()
    } else {
        Some(format!(
            "no {stem}.expected.hl7 or {stem}.expected.json (run with --bless to record one)"
        ))
    };
    Ok(result)
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn describe(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Forward => "forward".to_owned(),
        Outcome::Filter(reason) => format!("filter ({reason})"),
        Outcome::Fail(f) => format!(
            "fail {} at {} ({})",
            f.kind,
            f.path.as_deref().unwrap_or("-"),
            f.detail
        ),
    }
}

/// The expected-outcome JSON for `outcome`, as `--bless` writes it.
fn outcome_json(outcome: &Outcome) -> String {
    let mut fields = serde_json::Map::new();
    let mut put =
        |k: &str, v: &str| fields.insert(k.to_owned(), serde_json::Value::String(v.to_owned()));
    match outcome {
        Outcome::Forward => {
            put("outcome", "forward");
        }
        Outcome::Filter(reason) => {
            put("outcome", "filter");
            put("reason_contains", reason);
        }
        Outcome::Fail(f) => {
            put("outcome", "fail");
            put("kind", f.kind.as_str());
            if let Some(path) = &f.path {
                put("path", path);
            }
            put("detail_contains", &f.detail);
        }
    }
    let mut text =
        serde_json::to_string_pretty(&serde_json::Value::Object(fields)).unwrap_or_default();
    text.push('\n');
    text
}

/// Checks an outcome against the expected JSON (a flat object of strings).
fn check_outcome(expected: &str, outcome: &Outcome) -> Result<(), String> {
    let want = parse_flat_json(expected).map_err(|e| format!("expected.json: {e}"))?;
    // A misspelt key would silently drop its check and let the case pass.
    const KEYS: [&str; 5] = [
        "outcome",
        "reason_contains",
        "kind",
        "path",
        "detail_contains",
    ];
    if let Some(unknown) = want.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(format!(
            "expected.json: unknown key {unknown:?}; the keys are {}",
            KEYS.join(", ")
        ));
    }
    let get = |k: &str| want.get(k).map(String::as_str);
    let mismatch = |what: &str| Err(format!("{what}; got {}", describe(outcome)));
    match (get("outcome"), outcome) {
        (Some("forward"), Outcome::Forward) => Ok(()),
        (Some("filter"), Outcome::Filter(reason)) => match get("reason_contains") {
            Some(part) if !reason.contains(part) => {
                mismatch(&format!("expected a filter reason containing {part:?}"))
            }
            _ => Ok(()),
        },
        (Some("fail"), Outcome::Fail(f)) => {
            if let Some(kind) = get("kind").filter(|k| *k != f.kind.as_str()) {
                return mismatch(&format!(
                    "expected kind {kind} (the kinds: invalid-input, missing-mapping, \
                     rejected, internal)"
                ));
            }
            if let Some(path) = get("path").filter(|p| Some(*p) != f.path.as_deref()) {
                return mismatch(&format!("expected path {path}"));
            }
            if let Some(part) = get("detail_contains").filter(|p| !f.detail.contains(p)) {
                return mismatch(&format!("expected a detail containing {part:?}"));
            }
            Ok(())
        }
        (Some(kind @ ("forward" | "filter" | "fail")), _) => mismatch(&format!("expected {kind}")),
        (other, _) => Err(format!(
            "expected.json: \"outcome\" must be forward, filter or fail, not {other:?}"
        )),
    }
}

/// Reads the expected-outcome object: string values only.
fn parse_flat_json(text: &str) -> Result<BTreeMap<String, String>, String> {
    let map: BTreeMap<String, serde_json::Value> =
        serde_json::from_str(text).map_err(|e| e.to_string())?;
    map.into_iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => Ok((k, s)),
            other => Err(format!("{k}: values are strings, not {other}")),
        })
        .collect()
}

/// A segment-by-segment diff of two messages.
fn diff(expected: &[u8], actual: &[u8]) -> String {
    let split = |b: &[u8]| -> Vec<String> {
        String::from_utf8_lossy(b)
            .split(['\r', '\n'])
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let (want, got) = (split(expected), split(actual));
    let mut out = String::from("the message differs from expected (- expected, + actual):\n");
    for i in 0..want.len().max(got.len()) {
        match (want.get(i), got.get(i)) {
            (Some(w), Some(g)) if w == g => {}
            (w, g) => {
                if let Some(w) = w {
                    out.push_str(&format!("  segment {}: - {w}\n", i + 1));
                }
                if let Some(g) = g {
                    out.push_str(&format!("  segment {}: + {g}\n", i + 1));
                }
            }
        }
    }
    if want == got {
        out.push_str("  (segments equal; the terminators or trailing bytes differ)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{FailKind, Failure};

    #[test]
    fn outcome_json_round_trips_through_the_checker() {
        let fail = Outcome::Fail(Failure {
            kind: FailKind::MissingMapping,
            path: Some("SCH-25-1".to_owned()),
            detail: "no \"Roomed\"\n".to_owned(),
        });
        for outcome in [
            Outcome::Forward,
            Outcome::Filter("test patient".to_owned()),
            fail,
        ] {
            let json = outcome_json(&outcome);
            assert_eq!(check_outcome(&json, &outcome), Ok(()), "{json}");
        }
    }

    #[test]
    fn mismatches_say_what_was_expected() {
        let err = check_outcome(
            r#"{"outcome": "fail", "kind": "missing-mapping"}"#,
            &Outcome::Forward,
        )
        .expect_err("differs");
        assert!(
            err.contains("expected fail") && err.contains("got forward"),
            "{err}"
        );
        assert!(check_outcome(r#"{"outcome": "maybe"}"#, &Outcome::Forward).is_err());
    }

    #[test]
    fn diff_names_the_segments_that_differ() {
        let d = diff(b"MSH|a\rPID|1|x\r", b"MSH|a\rPID|1|y\r");
        assert!(
            d.contains("segment 2: - PID|1|x") && d.contains("segment 2: + PID|1|y"),
            "{d}"
        );
    }
}
