//! Every shipped plug-in passes its golden cases (the same runner as `plexus plugin test`).

use plexus_sandbox::Limits;
use plexus_sandbox::cases::run_cases;

fn check(name: &str, artifact: &str) {
    let bytes = std::fs::read(artifact).expect("plug-in built");
    let dir = plexus_test_artifacts::cases_dir(name);
    let results = run_cases(name, &bytes, &dir, Limits::default(), false)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(results.len() >= 5, "{name}: only {} cases", results.len());
    let failures: Vec<String> = results
        .iter()
        .filter_map(|r| {
            r.failure
                .as_ref()
                .map(|f| format!("{name}/{}: {f}", r.name))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        results.iter().all(|r| r.fuel.is_some_and(|f| f > 0)),
        "{name}: fuel is reported"
    );
}

#[test]
fn visit_status_map_cases() {
    check("visit-status-map", plexus_test_artifacts::VISIT_STATUS_MAP);
}

#[test]
fn demographics_normalize_cases() {
    check(
        "demographics-normalize",
        plexus_test_artifacts::DEMOGRAPHICS_NORMALIZE,
    );
}

#[test]
fn provider_id_map_cases() {
    check("provider-id-map", plexus_test_artifacts::PROVIDER_ID_MAP);
}

#[test]
fn a_wrong_expectation_fails_with_a_diff() {
    let name = "visit-status-map";
    let src = plexus_test_artifacts::cases_dir(name);
    let dir = std::env::temp_dir().join(format!("plexus-cases-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("tables")).expect("temp dir");
    for entry in std::fs::read_dir(src.join("tables")).expect("tables") {
        let path = entry.expect("entry").path();
        std::fs::copy(
            &path,
            dir.join("tables").join(path.file_name().expect("name")),
        )
        .expect("copy table");
    }
    let input = std::fs::read_dir(&src)
        .expect("cases")
        .map(|e| e.expect("entry").path())
        .find(|p| {
            let s = p.to_string_lossy();
            s.ends_with(".hl7")
                && !s.ends_with(".expected.hl7")
                && p.with_extension("expected.hl7").exists()
        })
        .expect("a forward case");
    std::fs::copy(&input, dir.join("one.hl7")).expect("copy input");
    std::fs::write(dir.join("one.expected.hl7"), b"MSH|^~\\&|WRONG\r").expect("write");
    let bytes = std::fs::read(plexus_test_artifacts::VISIT_STATUS_MAP).expect("built");
    let results = run_cases(name, &bytes, &dir, Limits::default(), false).expect("runs");
    let failure = results[0].failure.as_deref().expect("must fail");
    assert!(
        failure.contains("- MSH|^~\\&|WRONG") && failure.contains("segment 1"),
        "{failure}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// A plug-in that names the tables it reads is told the exact grant it lacks, and its
/// sheet lists them.
#[test]
fn a_plug_in_that_names_its_tables_is_told_the_exact_grant() {
    use std::sync::Arc;

    use plexus_sandbox::{Error, Grants, Plugin, PluginSpec, Sandbox, SandboxConfig, TableSet};

    let bytes = std::fs::read(plexus_test_artifacts::VISIT_STATUS_MAP).expect("built");
    let sheet = plexus_sandbox::inspect::inspect(&bytes).expect("inspects");
    assert_eq!(sheet.reads_tables, ["visit-status"]);
    let sandbox = Sandbox::new(SandboxConfig::default()).expect("engine");
    let spec = |grants: &[&str]| PluginSpec {
        name: "visit-status-map".to_owned(),
        sha256: None,
        grants: Grants::parse(grants.iter().copied()).expect("grants"),
        limits: Limits::default(),
    };
    // Another table granted, the one it reads not: refused at load, not at the first
    // message, with the line to add.
    let err = Plugin::load(
        &sandbox,
        &spec(&["tables:visit-status-settings"]),
        &bytes,
        Arc::new(TableSet::new()),
    )
    .expect_err("visit-status not granted");
    assert!(
        matches!(&err, Error::NotGranted { grant, .. } if grant == "tables:visit-status"),
        "{err}"
    );
    assert!(err.to_string().contains("\"tables:visit-status\""), "{err}");
    // Its optional settings table need not be granted.
    Plugin::load(
        &sandbox,
        &spec(&["tables:visit-status"]),
        &bytes,
        Arc::new(TableSet::new()),
    )
    .expect("loads");
    // A plug-in that names none keeps the generic request.
    let demo = std::fs::read(plexus_test_artifacts::DEMOGRAPHICS_NORMALIZE).expect("built");
    assert!(
        plexus_sandbox::inspect::inspect(&demo)
            .expect("inspects")
            .reads_tables
            .is_empty()
    );
}

/// An author running cases without the folder, or without a table the plug-in reads, is
/// told which file is missing, not which grant to add to a site config.
#[test]
fn missing_cases_or_tables_are_named_as_files() {
    use plexus_sandbox::cases::CasesError;
    let bytes = std::fs::read(plexus_test_artifacts::VISIT_STATUS_MAP).expect("built");
    let dir = std::env::temp_dir().join(format!("plexus-no-cases-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let nowhere = dir.join("nowhere");
    let err = run_cases(
        "visit-status-map",
        &bytes,
        &nowhere,
        Limits::default(),
        false,
    )
    .expect_err("no folder");
    assert!(matches!(err, CasesError::NoFolder(_)), "{err}");
    assert!(err.to_string().contains("does not exist"), "{err}");
    // A folder with no cases says so, before anything about tables.
    let err = run_cases("visit-status-map", &bytes, &dir, Limits::default(), false)
        .expect_err("no cases");
    assert!(matches!(err, CasesError::Empty(_)), "{err}");
    std::fs::write(
        dir.join("one.hl7"),
        "MSH|^~\\&|A|B|C|D|2026||SIU^S12|C1|P|2.5\r",
    )
    .expect("case");
    let err = run_cases("visit-status-map", &bytes, &dir, Limits::default(), false)
        .expect_err("no table");
    let text = err.to_string();
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        text.contains("reads table visit-status") && text.contains("tables/visit-status.csv"),
        "{text}"
    );
}

/// An expected file whose input was renamed or deleted fails, named, instead of being
/// ignored (the suite would shrink without anyone noticing).
#[test]
fn an_expected_file_without_its_input_fails() {
    let bytes = std::fs::read(plexus_test_artifacts::VISIT_STATUS_MAP).expect("built");
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = plexus_test_artifacts::cases_dir("visit-status-map");
    std::fs::create_dir_all(dir.path().join("tables")).expect("tables");
    for file in ["siu-s12-checked-in.hl7", "siu-s12-checked-in.expected.hl7"] {
        std::fs::copy(cases.join(file), dir.path().join(file)).expect("copy");
    }
    std::fs::copy(
        cases.join("tables/visit-status.csv"),
        dir.path().join("tables/visit-status.csv"),
    )
    .expect("copy table");
    std::fs::copy(
        cases.join("siu-s12-checked-in.expected.hl7"),
        dir.path().join("renamed.expected.hl7"),
    )
    .expect("orphan");
    let results = run_cases(
        "visit-status-map",
        &bytes,
        dir.path(),
        Limits::default(),
        false,
    )
    .expect("runs");
    let failed: Vec<(&str, &str)> = results
        .iter()
        .filter_map(|r| r.failure.as_deref().map(|f| (r.name.as_str(), f)))
        .collect();
    assert_eq!(results.len(), 2);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].0, "renamed");
    assert!(
        failed[0].1.contains("no renamed.hl7 beside it"),
        "{failed:?}"
    );
}
