//! Hostile plug-ins are contained, and the engine answers the next message.

use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use common::{ctx, load_guest};
use plexus_hl7::Message;
use plexus_sandbox::{
    Error, Grants, Limits, Outcome, Plugin, PluginSpec, RunError, Sandbox, SandboxConfig, TableSet,
};

const ADT: &[u8] = b"MSH|^~\\&|ADT|HOSP|EHR|CLINIC|20260101120000||ADT^A01|MSG1|P|2.5\rPID|1||123^^^HOSP^MR||DOE^JANE\r";

fn hostile_bytes() -> Vec<u8> {
    std::fs::read(plexus_test_artifacts::HOSTILE).expect("hostile guest built")
}

fn load(sandbox: &Sandbox, grants: &[&str], limits: Limits) -> Result<Plugin, Error> {
    load_guest(
        sandbox,
        "hostile",
        plexus_test_artifacts::HOSTILE,
        grants,
        limits,
    )
}

fn msg() -> Message<'static> {
    Message::parse_owned(ADT.to_vec()).expect("parses")
}

fn detail(outcome: &Outcome) -> &str {
    match outcome {
        Outcome::Fail(f) => &f.detail,
        other => panic!("expected a failure outcome, got {other:?}"),
    }
}

/// After any misbehaviour, the same plug-in still serves a normal message.
fn still_serves(plugin: &Plugin) {
    let run = plugin
        .run(msg(), &ctx("edit"))
        .expect("a normal message runs");
    assert_eq!(run.outcome, Outcome::Forward);
    assert_eq!(
        run.message.get("PID-5-1").expect("path").as_deref(),
        Some("EDITED")
    );
}

#[test]
fn infinite_loop_times_out() {
    let sandbox = Sandbox::new(SandboxConfig::default()).expect("engine");
    let limits = Limits {
        timeout: Duration::from_millis(200),
        ..Limits::default()
    };
    let plugin = load(&sandbox, &["log"], limits).expect("loads");
    let started = Instant::now();
    let err = plugin
        .run(msg(), &ctx("loop"))
        .expect_err("must not finish");
    assert!(matches!(err, RunError::Timeout { .. }), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stopped near its deadline"
    );
    assert!(
        err.to_string().contains("hostile") && err.to_string().contains("timed out"),
        "{err}"
    );
    still_serves(&plugin);
}

#[test]
fn memory_bomb_reports_the_memory_limit() {
    let sandbox = Sandbox::new(SandboxConfig::default()).expect("engine");
    let limits = Limits {
        memory_bytes: 16 << 20,
        ..Limits::default()
    };
    let plugin = load(&sandbox, &["log"], limits).expect("loads");
    let err = plugin
        .run(msg(), &ctx("memory-bomb"))
        .expect_err("must not finish");
    assert!(
        matches!(err, RunError::MemoryLimit { limit, .. } if limit == 16 << 20),
        "{err}"
    );
    assert!(err.to_string().contains("memory limit"), "{err}");
    still_serves(&plugin);
}

#[test]
fn traps_are_typed_errors() {
    let sandbox = Sandbox::new(SandboxConfig::default()).expect("engine");
    let plugin = load(&sandbox, &["log"], Limits::default()).expect("loads");
    for behaviour in ["unreachable", "panic"] {
        let err = plugin.run(msg(), &ctx(behaviour)).expect_err(behaviour);
        assert!(matches!(err, RunError::Trap { .. }), "{behaviour}: {err}");
        assert_eq!(err.kind(), "trap");
        still_serves(&plugin);
    }
}

#[test]
fn fuel_budget_stops_a_loop_deterministically() {
    let config = SandboxConfig {
        fuel: Some(5_000_000),
        ..SandboxConfig::default()
    };
    let sandbox = Sandbox::new(config).expect("engine");
    let plugin = load(
        &sandbox,
        &["log"],
        Limits {
            timeout: Duration::from_secs(30),
            ..Limits::default()
        },
    )
    .expect("loads");
    let err = plugin
        .run(msg(), &ctx("loop"))
        .expect_err("must not finish");
    assert!(
        matches!(
            err,
            RunError::OutOfFuel {
                budget: 5_000_000,
                ..
            }
        ),
        "{err}"
    );
    let run = plugin.run(msg(), &ctx("edit")).expect("runs");
    let fuel = run.stats.fuel_used.expect("metered");
    assert!(fuel > 0 && fuel < 5_000_000, "{fuel}");
    let again = plugin.run(msg(), &ctx("edit")).expect("runs");
    assert_eq!(again.stats.fuel_used, Some(fuel), "fuel is deterministic");
}

#[test]
fn oversize_output_is_refused_edit_by_edit() {
    let sandbox = Sandbox::new(SandboxConfig::default()).expect("engine");
    let limits = Limits {
        max_message_bytes: 1 << 20,
        ..Limits::default()
    };
    let plugin = load(&sandbox, &["log"], limits).expect("loads");
    let run = plugin
        .run(msg(), &ctx("huge-output"))
        .expect("returns an outcome");
    assert_eq!(detail(&run.outcome), "8 oversize edits refused");
    assert_eq!(run.message.as_bytes(), ADT, "the message is unchanged");
    assert!(run.edits.is_empty());
}

#[test]
fn log_and_stdio_floods_are_capped() {
    let sandbox = Sandbox::new(SandboxConfig::default()).expect("engine");
    let limits = Limits {
        timeout: Duration::from_secs(20),
        ..Limits::default()
    };
    let plugin = load(&sandbox, &["log"], limits.clone()).expect("loads");
    let run = plugin.run(msg(), &ctx("log-flood")).expect("runs");
    assert_eq!(run.outcome, Outcome::Forward);
    assert!(run.logs.len() <= limits.log_lines);
    assert!(run.logs.iter().map(|l| l.line.len()).sum::<usize>() <= limits.log_bytes);
    assert!(run.logs_dropped > 0);

    let run = plugin.run(msg(), &ctx("stdout-flood")).expect("runs");
    assert_eq!(
        run.outcome,
        Outcome::Forward,
        "printing too much loses output, not the run"
    );
    assert!(run.logs.len() <= limits.log_lines);
    assert!(run.logs_dropped > 0);
}

#[test]
fn no_ambient_filesystem_environment_clock_or_randomness() {
    let sandbox = Sandbox::new(SandboxConfig::default()).expect("engine");
    let plugin = load(&sandbox, &["log"], Limits::default()).expect("loads");
    let run = |b| plugin.run(msg(), &ctx(b)).expect(b);
    assert_eq!(detail(&run("fs-probe").outcome), "fs reachable: 0");
    let env = run("env-probe");
    assert!(
        detail(&env.outcome).starts_with("env vars: 0, args: 0"),
        "{}",
        detail(&env.outcome)
    );
    let clock = run("clock-probe");
    assert_eq!(
        detail(&clock.outcome),
        "wall ms: 1795482123000, elapsed ns: 0",
        "the clock is frozen at arrival"
    );
    let (a, b) = (run("random-probe"), run("random-probe"));
    assert_eq!(
        detail(&a.outcome),
        detail(&b.outcome),
        "randomness is a fixed seed"
    );
}

#[test]
fn a_fresh_instance_per_message_unless_reuse_is_granted() {
    let sandbox = Sandbox::new(SandboxConfig::default()).expect("engine");
    let plugin = load(&sandbox, &["log"], Limits::default()).expect("loads");
    for _ in 0..3 {
        let run = plugin.run(msg(), &ctx("counter")).expect("runs");
        assert_eq!(detail(&run.outcome), "seen: 1", "no state carries over");
    }
    let denied = plugin
        .reusable_instance(&Grants::default())
        .expect_err("not granted");
    assert!(denied.to_string().contains("reuse-instance"), "{denied}");
    let grants = Grants::parse(["log", "reuse-instance"]).expect("grants");
    let mut kept = plugin.reusable_instance(&grants).expect("granted");
    let first = kept.run(msg(), &ctx("counter")).expect("runs");
    let second = kept.run(msg(), &ctx("counter")).expect("runs");
    assert_eq!(
        (detail(&first.outcome), detail(&second.outcome)),
        ("seen: 1", "seen: 2")
    );
}

#[test]
fn edits_are_recorded_for_provenance() {
    let sandbox = Sandbox::new(SandboxConfig::default()).expect("engine");
    let plugin = load(&sandbox, &["log"], Limits::default()).expect("loads");
    let run = plugin.run(msg(), &ctx("edit")).expect("runs");
    assert_eq!(run.edits.len(), 1);
    let edit = &run.edits[0];
    assert_eq!(
        (edit.path.as_str(), edit.old.as_deref(), edit.new.as_deref()),
        ("PID-5-1", Some("DOE"), Some("EDITED"))
    );
    assert!(!format!("{edit:?}").contains("DOE"), "Debug hides values");
    assert!(run.stats.total >= run.stats.instantiate);
    assert!(run.stats.memory_high_water > 0);
}

#[test]
fn ungranted_and_ungrantable_imports_refuse_to_load() {
    let sandbox = Sandbox::new(SandboxConfig::default()).expect("engine");
    let err = load(&sandbox, &[], Limits::default()).expect_err("log not granted");
    let text = err.to_string();
    assert!(
        matches!(
            err,
            Error::NotGranted {
                capability: "log",
                ..
            }
        ),
        "{text}"
    );
    assert!(
        text.contains("plexus:transform/log")
            && text.contains("\"log\"")
            && text.contains("[plugins.hostile]"),
        "{text}"
    );

    let bytes = std::fs::read(plexus_test_artifacts::NET_PROBE).expect("net probe built");
    let spec = PluginSpec {
        name: "net-probe".to_owned(),
        ..PluginSpec::default()
    };
    let err =
        Plugin::load(&sandbox, &spec, &bytes, Arc::new(TableSet::new())).expect_err("sockets");
    assert!(matches!(err, Error::Unavailable { .. }), "{err}");
    assert!(err.to_string().contains("wasi:sockets"), "{err}");
}

#[test]
fn a_digest_pin_must_match() {
    let sandbox = Sandbox::new(SandboxConfig::default()).expect("engine");
    let bytes = hostile_bytes();
    let mut spec = PluginSpec {
        name: "hostile".to_owned(),
        sha256: Some("00".repeat(32)),
        grants: Grants::parse(["log"]).expect("grants"),
        limits: Limits::default(),
    };
    let err = Plugin::load(&sandbox, &spec, &bytes, Arc::new(TableSet::new()))
        .expect_err("pinned elsewhere");
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    spec.sha256 = Some(plexus_sandbox::inspect::sha256_hex(&bytes).to_uppercase());
    let plugin =
        Plugin::load(&sandbox, &spec, &bytes, Arc::new(TableSet::new())).expect("pinned right");
    assert_eq!(plugin.sha256(), plexus_sandbox::inspect::sha256_hex(&bytes));
}

#[test]
fn inspect_is_the_reviewers_sheet() {
    let sheet = plexus_sandbox::inspect::inspect(&hostile_bytes()).expect("a component");
    assert!(sheet.implements_contract());
    assert_eq!(sheet.capabilities(), ["log"]);
    let names: Vec<&str> = sheet.imports.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("plexus:transform/message")),
        "{names:?}"
    );
    assert!(names.iter().any(|n| n.starts_with("wasi:")), "{names:?}");
    assert!(!sheet.producers.is_empty());
}

#[test]
fn reuse_needs_the_plugin_to_ask() {
    let sandbox = Sandbox::new(SandboxConfig::default()).expect("engine");
    let bytes = std::fs::read(plexus_test_artifacts::DEMOGRAPHICS_NORMALIZE).expect("built");
    let spec = PluginSpec {
        name: "demographics-normalize".to_owned(),
        ..PluginSpec::default()
    };
    let plugin = Plugin::load(&sandbox, &spec, &bytes, Arc::new(TableSet::new())).expect("loads");
    assert!(!plugin.inspection().requests_reuse);
    let grants = Grants::parse(["reuse-instance"]).expect("grants");
    let err = plugin.reusable_instance(&grants).expect_err("did not ask");
    assert!(matches!(err, Error::ReuseNotRequested { .. }), "{err}");
}
