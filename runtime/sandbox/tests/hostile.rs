//! Hostile plug-ins are contained, and the engine answers the next message.

use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use common::{ctx, load_guest};
use plexus_hl7::Message;
use plexus_sandbox::{
    Context, Error, FailKind, Grants, Limits, MAX_PLUGIN_TEXT, Outcome, Plugin, PluginSpec,
    RunError, Sandbox, SandboxConfig, TableSet,
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
    // Never cut before its timeout; the upper bound only catches a run never cut.
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(200),
        "cut early, after {took:?}"
    );
    assert!(took < Duration::from_secs(5), "stopped near its deadline");
    assert!(
        err.to_string().contains("hostile") && err.to_string().contains("timed out"),
        "{err}"
    );
    still_serves(&plugin);
}

/// Runs `behaviour` on another thread and waits at most a minute for it: a plug-in that
/// manages to sleep on the host would otherwise hang the test for hours.
fn run_bounded(
    plugin: &Arc<Plugin>,
    behaviour: &'static str,
) -> Result<plexus_sandbox::Run, RunError> {
    let (tx, rx) = std::sync::mpsc::channel();
    let plugin = Arc::clone(plugin);
    std::thread::spawn(move || {
        let _ = tx.send(plugin.run(msg(), &ctx(behaviour)));
    });
    rx.recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("{behaviour}: the run is still going after 60 s"))
}

#[test]
fn a_plugin_cannot_sleep() {
    let sandbox = Sandbox::new(SandboxConfig::default()).expect("engine");
    let limits = Limits {
        timeout: Duration::from_millis(500),
        ..Limits::default()
    };
    let plugin = Arc::new(load(&sandbox, &["log"], limits).expect("loads"));
    // Timers have already gone off: the sleep returns at once, in the run's time.
    for (behaviour, said) in [
        ("sleep", "slept an hour"),
        ("sleep-forever", "slept for ever"),
    ] {
        let run = run_bounded(&plugin, behaviour).expect(behaviour);
        assert_eq!(detail(&run.outcome), said);
    }
    // Waiting for the frozen clock to move runs into the deadline.
    let err = run_bounded(&plugin, "sleep-loop").expect_err("the clock never moves");
    assert!(matches!(err, RunError::Timeout { .. }), "{err}");
    still_serves(&plugin);
}

#[test]
fn oversize_arguments_are_refused_before_the_host_copies_them() {
    let sandbox = Sandbox::new(SandboxConfig::default()).expect("engine");
    let limits = Limits {
        max_message_bytes: 1 << 20,
        ..Limits::default()
    };
    let plugin = load(&sandbox, &["log"], limits).expect("loads");
    // An 8 MiB path of control characters: each would print as six bytes in the error.
    let run = plugin.run(msg(), &ctx("path-bomb")).expect("runs");
    let said = detail(&run.outcome);
    assert!(said.starts_with("4 refused, longest "), "{said}");
    let longest: usize = said["4 refused, longest ".len()..]
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a length");
    assert!(longest < 1_000, "{said}");
    assert!(said.ends_with(", 4 say why"), "{said}");
    // An 8 MiB segment into a message limited to 1 MiB.
    let run = plugin.run(msg(), &ctx("insert-bomb")).expect("runs");
    let said = detail(&run.outcome);
    assert!(
        said.contains("inserting a segment of 8388611 bytes")
            && said.contains("1048576 byte limit"),
        "{said}"
    );
    assert!(run.edits.is_empty());
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
fn a_growth_the_engine_refuses_is_reported_as_the_memory_limit_too() {
    // The plug-in's own limit is above the engine's slot size: the growth fails in the
    // engine, not in the limiter, and is still called the memory limit.
    let sandbox = Sandbox::new(SandboxConfig {
        max_memory_bytes: 16 << 20,
        ..SandboxConfig::default()
    })
    .expect("engine");
    let limits = Limits {
        memory_bytes: 64 << 20,
        ..Limits::default()
    };
    let plugin = load(&sandbox, &["log"], limits).expect("loads");
    let err = plugin
        .run(msg(), &ctx("memory-bomb"))
        .expect_err("must not finish");
    assert!(matches!(err, RunError::MemoryLimit { .. }), "{err}");
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
    // A panic's message is kept for views that show content, never in the error's text.
    let err = plugin.run(msg(), &ctx("panic")).expect_err("panics");
    let RunError::Trap { stderr, .. } = &err else {
        panic!("{err}");
    };
    assert!(stderr.contains("a plug-in bug"), "{stderr:?}");
    assert!(!err.to_string().contains("a plug-in bug"), "{err}");
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
    let kept = load(&sandbox, &["log", "reuse-instance"], Limits::default()).expect("loads");
    let first = kept.run(msg(), &ctx("counter")).expect("runs");
    let second = kept.run(msg(), &ctx("counter")).expect("runs");
    assert_eq!(
        (detail(&first.outcome), detail(&second.outcome)),
        ("seen: 1", "seen: 2")
    );
}

#[test]
fn a_granted_plugin_keeps_its_instance_but_nothing_one_message_left_in_the_host() {
    let sandbox = Sandbox::new(SandboxConfig::default()).expect("engine");
    // The flood below prints 200,000 lines: time enough for an unoptimised test build.
    let limits = Limits {
        timeout: Duration::from_secs(20),
        ..Limits::default()
    };
    let plugin = load(&sandbox, &["log", "reuse-instance"], limits).expect("loads");
    let at = |behaviour: &str, received_at_ms: u64| Context {
        received_at_ms,
        ..ctx(behaviour)
    };
    // The guest's own memory carries over: that is what the grant allows.
    let first = plugin.run(msg(), &ctx("counter")).expect("runs");
    let second = plugin.run(msg(), &ctx("counter")).expect("runs");
    assert_eq!(
        (detail(&first.outcome), detail(&second.outcome)),
        ("seen: 1", "seen: 2")
    );
    // The clock reads each message's arrival, as on a fresh instance. (Rust's std keeps
    // its hash keys in the guest's memory, so `random-probe` differs: guest state.)
    for arrival in [1_795_482_123_000, 1_795_482_999_000] {
        let clock = plugin
            .run(msg(), &at("clock-probe", arrival))
            .expect("runs");
        assert_eq!(clock.stats.instantiate, Duration::ZERO, "a kept instance");
        assert_eq!(
            detail(&clock.outcome),
            format!("wall ms: {arrival}, elapsed ns: 0")
        );
    }
    // What one message printed is never reported as the next one's: the next message
    // panics, and its trap shows its own panic message only. (Two things see to it: a
    // kept instance's stdio is emptied for each message, and a trap there is run again
    // on a new instance, whose report counts.)
    plugin.run(msg(), &ctx("stdout-flood")).expect("runs");
    let err = plugin.run(msg(), &ctx("panic")).expect_err("panics");
    let RunError::Trap { stderr, .. } = &err else {
        panic!("expected a trap, got {err}");
    };
    assert!(stderr.contains("a plug-in bug"), "{stderr}");
    assert!(!stderr.contains("stderr line"), "{stderr}");
}

#[test]
fn a_message_that_fails_on_a_kept_instance_runs_again_on_a_new_one() {
    let sandbox = Sandbox::new(SandboxConfig::default()).expect("engine");
    let plugin = load(&sandbox, &["log", "reuse-instance"], Limits::default()).expect("loads");
    let forwarded = plugin
        .run(msg(), &ctx("second-time-panics"))
        .expect("a new instance runs it");
    assert_eq!(forwarded.outcome, Outcome::Forward);
    // The kept instance panics on what the first message left; the message is run again
    // on a new instance, which forwards it, and its log says so.
    let again = plugin
        .run(msg(), &ctx("second-time-panics"))
        .expect("passes on a new instance");
    assert_eq!(again.outcome, Outcome::Forward);
    assert!(again.stats.instantiate > Duration::ZERO);
    assert!(
        again.logs[0].line.contains("kept instance failed (trap)"),
        "{:?}",
        again.logs[0].line
    );
    // So does one that fails `internal` there (a bug, or an unexpected state).
    let fresh = load(&sandbox, &["log", "reuse-instance"], Limits::default()).expect("loads");
    for _ in 0..3 {
        let run = fresh
            .run(msg(), &ctx("second-time-internal"))
            .expect("runs");
        assert_eq!(run.outcome, Outcome::Forward);
    }
    // Running out of time is not a kept instance's fault: no second run.
    let looping = load(
        &sandbox,
        &["log", "reuse-instance"],
        Limits {
            timeout: Duration::from_millis(100),
            ..Limits::default()
        },
    )
    .expect("loads");
    looping
        .run(msg(), &ctx("second-time-loops"))
        .expect("a new instance forwards it");
    // (A second run, on a new instance, would have forwarded it.)
    let err = looping
        .run(msg(), &ctx("second-time-loops"))
        .expect_err("the kept instance loops");
    assert!(matches!(err, RunError::Timeout { .. }), "{err}");
    // A message that fails on any instance still fails, and nothing is kept after it.
    plugin
        .run(msg(), &ctx("panic"))
        .expect_err("panics on any instance");
    let seen = |run: plexus_sandbox::Run| detail(&run.outcome).to_owned();
    assert_eq!(
        seen(plugin.run(msg(), &ctx("counter")).expect("runs")),
        "seen: 1"
    );
    assert_eq!(
        seen(plugin.run(msg(), &ctx("counter")).expect("runs")),
        "seen: 2"
    );
    // A version an activation left behind (running in no chain) keeps nothing...
    plugin.set_running(false);
    for _ in 0..2 {
        assert_eq!(
            seen(plugin.run(msg(), &ctx("counter")).expect("runs")),
            "seen: 1"
        );
    }
    // ...until a rollback puts it back.
    plugin.set_running(true);
    assert_eq!(
        seen(plugin.run(msg(), &ctx("counter")).expect("runs")),
        "seen: 1"
    );
    assert_eq!(
        seen(plugin.run(msg(), &ctx("counter")).expect("runs")),
        "seen: 2"
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
    // Granted anyway: the grant has no effect, every message gets a new instance.
    let granted = PluginSpec {
        grants: Grants::parse(["reuse-instance"]).expect("grants"),
        ..spec
    };
    let plugin =
        Plugin::load(&sandbox, &granted, &bytes, Arc::new(TableSet::new())).expect("loads");
    for _ in 0..3 {
        let run = plugin.run(msg(), &ctx("scheduling")).expect("runs");
        assert!(run.stats.instantiate > Duration::ZERO, "a new instance");
    }
}

#[test]
fn the_edit_history_is_capped_in_count() {
    let sandbox = Sandbox::new(SandboxConfig::default()).expect("engine");
    let plugin = load(&sandbox, &["log"], Limits::default()).expect("loads");
    let run = plugin.run(msg(), &ctx("edit-flood")).expect("runs");
    assert_eq!(run.edits.len(), 10_000, "the first 10,000 edits are kept");
    // Past the limit, every edit of ZZZ-1 is refused; every edit of ZZZ-2 merges into
    // the last recorded one (ZZZ-2, nothing recorded since) and goes through.
    let detail = detail(&run.outcome);
    assert!(
        detail.starts_with("5000 refused: ")
            && detail.contains("edit limit reached")
            && detail.contains("at most 10000 edits"),
        "the guest is told the limit: {detail}"
    );
    assert_eq!(
        run.message.get("ZZZ-1").expect("path").as_deref(),
        Some("9998"),
        "a refused edit leaves the message as it was"
    );
    let last = run.edits.last().expect("edits");
    assert_eq!(
        (last.path.as_str(), last.new.as_deref()),
        ("ZZZ-2", Some("19999"))
    );
    still_serves(&plugin);
}

#[test]
fn the_edit_history_is_capped_in_bytes() {
    let sandbox = Sandbox::new(SandboxConfig::default()).expect("engine");
    let limits = Limits {
        max_message_bytes: 1 << 20,
        ..Limits::default()
    };
    let plugin = load(&sandbox, &["log"], limits).expect("loads");
    let run = plugin.run(msg(), &ctx("edit-bytes")).expect("runs");
    let recorded: usize = run
        .edits
        .iter()
        .map(|e| e.old.as_ref().map_or(0, String::len) + e.new.as_ref().map_or(0, String::len))
        .sum();
    assert!(recorded <= 2 << 20, "{recorded} bytes recorded");
    assert_eq!(run.edits.len(), 5, "five 256 KiB values fit in 2 MiB");
    // The sixth (ZZZ-2) and every one after it on ZZZ-2 is refused; those on ZZZ-1
    // merge into the fifth and record nothing more.
    let detail = detail(&run.outcome);
    assert!(
        detail.starts_with("30 refused: ") && detail.contains("at most 2097152 bytes"),
        "{detail}"
    );
    assert!(
        !detail.contains("xxxx"),
        "the limit is named, not the value"
    );
}

#[test]
fn edits_of_one_path_in_a_row_are_recorded_once_by_canonical_path() {
    let sandbox = Sandbox::new(SandboxConfig::default()).expect("engine");
    let plugin = load(&sandbox, &["log"], Limits::default()).expect("loads");
    let run = plugin.run(msg(), &ctx("edit-same-path")).expect("runs");
    assert_eq!(detail(&run.outcome), "0 refused: None");
    let edits: Vec<_> = run
        .edits
        .iter()
        .map(|e| (e.path.as_str(), e.old.as_deref(), e.new.as_deref()))
        .collect();
    assert_eq!(
        edits,
        [("PID-5-1", Some("DOE"), Some("49999"))],
        "first old value, last new value, under the canonical path"
    );
}

#[test]
fn plug_in_text_is_bounded_and_paths_are_kept_only_when_they_are_paths() {
    let sandbox = Sandbox::new(SandboxConfig::default()).expect("engine");
    let plugin = load(&sandbox, &["log"], Limits::default()).expect("loads");
    let run = |b| plugin.run(msg(), &ctx(b)).expect(b).outcome;
    let Outcome::Fail(steer) = run("fail-steer") else {
        panic!("a failure");
    };
    assert_eq!(steer.kind, FailKind::Internal);
    assert_eq!(steer.path.as_deref(), Some("PID-5-1"), "canonical form");
    assert!(
        steer.detail.len() <= MAX_PLUGIN_TEXT,
        "{}",
        steer.detail.len()
    );
    assert!(
        steer.detail.starts_with("missing-mapping invalid-input éé")
            && steer.detail.ends_with("(cut)"),
        "cut on a character boundary and marked: {}",
        steer.detail
    );

    let Outcome::Fail(bad) = run("fail-bad-path") else {
        panic!("a failure");
    };
    assert_eq!(bad.path, None, "not a path");
    assert_eq!(bad.detail, "short", "short text is kept whole");

    let Outcome::Filter(reason) = run("filter-long") else {
        panic!("a filter");
    };
    assert!(
        reason.len() <= MAX_PLUGIN_TEXT && reason.ends_with("(cut)"),
        "{}",
        reason.len()
    );
}

#[test]
fn trap_text_is_short_and_names_no_guest_function() {
    let sandbox = Sandbox::new(SandboxConfig::default()).expect("engine");
    let plugin = load(&sandbox, &["log"], Limits::default()).expect("loads");
    let err = plugin
        .run(msg(), &ctx("bad-handle"))
        .expect_err("a bogus handle does not run");
    let RunError::Trap { trap, .. } = &err else {
        panic!("a trap: {err}");
    };
    assert!(trap.len() <= 256, "{trap}");
    assert!(
        trap.contains("handle"),
        "the operator still reads what went wrong: {trap}"
    );
    assert!(!trap.contains('\n'), "one line: {trap}");
    assert!(
        !trap.contains("doe_jane"),
        "no guest-chosen function names: {trap}"
    );
    still_serves(&plugin);
}

#[test]
fn a_loop_after_a_refused_memory_growth_is_a_timeout() {
    let sandbox = Sandbox::new(SandboxConfig::default()).expect("engine");
    let limits = Limits {
        memory_bytes: 16 << 20,
        timeout: Duration::from_millis(200),
        ..Limits::default()
    };
    let plugin = load(&sandbox, &["log"], limits).expect("loads");
    let err = plugin
        .run(msg(), &ctx("grow-then-loop"))
        .expect_err("must not finish");
    assert!(matches!(err, RunError::Timeout { .. }), "{err}");
    // Cut by a caller's shorter deadline: still a timeout, with that deadline.
    let err = plugin
        .run_within(msg(), &ctx("grow-then-loop"), Duration::from_millis(20))
        .expect_err("must not finish");
    assert!(
        matches!(err, RunError::Timeout { timeout, .. } if timeout == Duration::from_millis(20)),
        "{err}"
    );
    still_serves(&plugin);
}

#[test]
fn a_reused_instance_starts_each_message_with_its_own_budgets() {
    let sandbox = Sandbox::new(SandboxConfig::default()).expect("engine");
    let limits = Limits {
        memory_bytes: 16 << 20,
        ..Limits::default()
    };
    let kept = load(&sandbox, &["log", "reuse-instance"], limits).expect("loads");
    // 10,000 log bytes a message, under the 16 KiB per message.
    for round in 0..3 {
        let run = kept.run(msg(), &ctx("log-some")).expect("runs");
        assert_eq!(
            (run.logs.len(), run.logs_dropped),
            (10, 0),
            "message {round} keeps all its lines"
        );
    }
    let run = kept.run(msg(), &ctx("grow-refused")).expect("runs");
    assert_eq!(detail(&run.outcome), "grow refused: true");
    // The refused growth is not held against the next message on the same instance.
    let run = kept.run(msg(), &ctx("log-some")).expect("runs");
    assert_eq!(run.stats.instantiate, Duration::ZERO, "the kept instance");
    assert_eq!((run.logs.len(), run.logs_dropped), (10, 0));
}
