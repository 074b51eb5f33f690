//! Golden config-error tests: every `ui/NAME.toml` must fail to load with exactly the
//! errors in `ui/NAME.err`. `BLESS=1 cargo test -p plexus-config --test ui` re-records them.

use std::path::Path;

use plexus_config::Config;

#[test]
fn ui() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui");
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/ui exists")
        .map(|e| e.expect("readable dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 12, "expected at least 12 ui cases");
    let failures: Vec<String> = cases.iter().filter_map(|case| check(case)).collect();
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

/// Loads `case` under its bare file name (so the goldens do not depend on where the
/// repo lives) and compares the rendered errors with `case.err`. Returns a mismatch report.
fn check(case: &Path) -> Option<String> {
    let text = std::fs::read_to_string(case).expect("readable case");
    let name = case.file_name().expect("case has a file name");
    let actual = match Config::from_toml(&text, Path::new(name)) {
        Ok(_) => "(loaded without errors)\n".to_owned(),
        Err(err) => format!("{err}\n"),
    };
    let golden = case.with_extension("err");
    if std::env::var_os("BLESS").is_some() {
        std::fs::write(&golden, &actual).expect("write golden");
        return None;
    }
    let expected = std::fs::read_to_string(&golden).unwrap_or_default();
    (expected != actual).then(|| {
        format!(
            "--- {} (expected)\n{expected}--- actual (BLESS=1 to re-record)\n{actual}",
            golden.display()
        )
    })
}
