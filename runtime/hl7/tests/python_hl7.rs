//! Golden cases ported from python-hl7's test suite (see tests/python_hl7/NOTICE).
//!
//! Each `NAME.hl7` has a `NAME.expected.json` with the values at paths (`get`), counts
//! (`count`), or an error substring (`error`). Top-level cases are single messages;
//! `batch/` holds files and batches, read through [`Batch`] and its flat view.

use std::path::{Path, PathBuf};

use plexus_hl7::{Batch, Message};
use serde_json::Value;

fn cases(dir: &Path) -> Vec<(String, Vec<u8>, Value)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .expect("golden folder")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "hl7"))
        .map(|p| {
            let name = p.file_stem().expect("stem").to_string_lossy().into_owned();
            let expected = p.with_file_name(format!("{name}.expected.json"));
            let json = std::fs::read_to_string(&expected)
                .unwrap_or_else(|e| panic!("{}: {e}", expected.display()));
            let json = serde_json::from_str(&json)
                .unwrap_or_else(|e| panic!("{}: {e}", expected.display()));
            (name, std::fs::read(&p).expect("case bytes"), json)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python_hl7")
}

/// Checks one case against a parse result; returns the failures.
fn check<E: std::fmt::Display>(
    name: &str,
    parsed: Result<&Message<'_>, E>,
    expected: &Value,
) -> Vec<String> {
    let mut failures = Vec::new();
    let msg = match (parsed, expected.get("error")) {
        (Err(e), Some(Value::String(want))) => {
            if !e.to_string().contains(want.as_str()) {
                failures.push(format!(
                    "{name}: error {e:?} does not contain {want:?}",
                    e = e.to_string()
                ));
            }
            return failures;
        }
        (Err(e), _) => return vec![format!("{name}: did not parse: {e}")],
        (Ok(_), Some(want)) => return vec![format!("{name}: parsed, but should fail with {want}")],
        (Ok(msg), None) => msg,
    };
    let gets = expected
        .get("get")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for (path, want) in gets {
        let got = msg.get(path.as_str()).map(|v| v.map(|c| c.into_owned()));
        let want = want.as_str().map(str::to_owned);
        match got {
            Ok(got) if got == want => {}
            Ok(got) => failures.push(format!("{name}: {path}: got {got:?}, want {want:?}")),
            Err(e) => failures.push(format!("{name}: {path}: {e}")),
        }
    }
    let counts = expected
        .get("count")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for (path, want) in counts {
        match msg.count(path.as_str()) {
            Ok(got) if Some(got as u64) == want.as_u64() => {}
            Ok(got) => failures.push(format!("{name}: count {path}: got {got}, want {want}")),
            Err(e) => failures.push(format!("{name}: count {path}: {e}")),
        }
    }
    failures
}

#[test]
fn single_message_cases() {
    let cases = cases(&golden_dir());
    assert!(cases.len() >= 25, "only {} cases found", cases.len());
    let failures: Vec<String> = cases
        .iter()
        .flat_map(|(name, bytes, expected)| {
            let parsed = Message::parse(bytes);
            check(name, parsed.as_ref(), expected)
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn batch_and_file_cases() {
    let cases = cases(&golden_dir().join("batch"));
    assert!(cases.len() >= 15, "only {} cases found", cases.len());
    let failures: Vec<String> = cases
        .iter()
        .flat_map(|(name, bytes, expected)| {
            let batch = Batch::parse(bytes);
            let mut failures = check(name, batch.as_ref().map(Batch::flat), expected);
            if let Ok(batch) = &batch {
                for (i, msg) in batch.messages().enumerate() {
                    if let Err(e) = msg {
                        failures.push(format!("{name}: message {}: {e}", i + 1));
                    }
                }
            }
            failures
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
