//! `#![no_std]` plug-ins on the SDK's runtime (`plexus_sdk::no_std_runtime!`): they link no
//! WASI, their heap works (inside the arena and past it), their limits and traps are
//! reported as for any plug-in, and a kept instance reuses freed memory. A plug-in that
//! asks for reuse and is granted it keeps its instances between runs, within a budget.

mod common;

use common::{ctx, load_guest};
use plexus_hl7::Message;
use plexus_sandbox::{Limits, Outcome, Plugin, RunError, Sandbox, SandboxConfig, inspect};

fn load(sandbox: &Sandbox, limits: Limits) -> Plugin {
    load_guest(
        sandbox,
        "no-std",
        plexus_test_artifacts::NO_STD,
        &[],
        limits,
    )
    .expect("loads")
}

fn msg(sizes: &str) -> Message<'static> {
    let raw = format!(
        "MSH|^~\\&|SCHED|CLINIC|EHR|CLINIC|20260101120000||SIU^S12|MSG1|P|2.5\rZHP|{sizes}\r"
    );
    Message::parse_owned(raw.into_bytes()).expect("parses")
}

fn zhp2(plugin_run: &plexus_sandbox::Run) -> Option<String> {
    plugin_run
        .message
        .get("ZHP-2")
        .expect("path")
        .map(|v| v.into_owned())
}

#[test]
fn no_std_plugins_import_no_wasi() {
    for (name, file) in [
        ("no-std guest", plexus_test_artifacts::NO_STD),
        ("visit-status-map", plexus_test_artifacts::VISIT_STATUS_MAP),
        (
            "demographics-normalize",
            plexus_test_artifacts::DEMOGRAPHICS_NORMALIZE,
        ),
        ("provider-id-map", plexus_test_artifacts::PROVIDER_ID_MAP),
    ] {
        let sheet = inspect::inspect(&std::fs::read(file).expect("built")).expect("inspects");
        assert!(!sheet.imports_wasi(), "{name} imports {:?}", sheet.imports);
        assert!(sheet.implements_contract(), "{name}");
    }
    // The std guest, for contrast, does import WASI: the check above can fail.
    let hostile = std::fs::read(plexus_test_artifacts::HOSTILE).expect("built");
    assert!(inspect::inspect(&hostile).expect("inspects").imports_wasi());
}

#[test]
fn the_heap_serves_the_arena_and_grows_past_it() {
    let sandbox = Sandbox::new(SandboxConfig::default()).expect("engine");
    let plugin = load(&sandbox, Limits::default());
    // A run that allocates next to nothing shows the module's initial memory.
    let idle = plugin.run(msg(""), &ctx("other")).expect("runs");
    assert_eq!(zhp2(&idle).as_deref(), Some("forwarded"));
    let initial = idle.stats.memory_high_water;
    // Blocks that fit the 512 KiB arena together: memory does not grow at all.
    for sizes in ["1,16,100", "200,200"] {
        let small = plugin.run(msg(sizes), &ctx("heap")).expect("runs");
        assert_eq!(small.outcome, Outcome::Forward);
        assert!(
            zhp2(&small).is_some_and(|v| v.starts_with("ok ")),
            "{sizes}"
        );
        assert_eq!(
            small.stats.memory_high_water, initial,
            "{sizes} grew memory"
        );
    }
    // Blocks that each fit the arena but not all together: the heap grows for the rest,
    // and no block overlaps another (the guest checks every byte).
    let mixed = plugin.run(msg("300,300,300"), &ctx("heap")).expect("runs");
    assert_eq!(zhp2(&mixed).as_deref(), Some("ok 900"));
    assert!(mixed.stats.memory_high_water > initial);
    // Large ones grow linear memory, and every block keeps its own bytes.
    let large = plugin
        .run(msg("1,100,600,4096,3000"), &ctx("heap"))
        .expect("runs");
    assert_eq!(zhp2(&large).as_deref(), Some("ok 7797"));
    assert!(
        large.stats.memory_high_water >= initial + (7 << 20),
        "grew from {initial} to {}",
        large.stats.memory_high_water
    );
    // A fresh instance starts again from the initial size.
    let again = plugin.run(msg("1,16,100"), &ctx("heap")).expect("runs");
    assert_eq!(again.stats.memory_high_water, initial);
}

#[test]
fn a_kept_instance_reuses_what_was_freed() {
    let sandbox = Sandbox::new(SandboxConfig::default()).expect("engine");
    let limits = Limits {
        memory_bytes: 32 << 20,
        ..Limits::default()
    };
    let kept = load_guest(
        &sandbox,
        "no-std",
        plexus_test_artifacts::NO_STD,
        &["reuse-instance"],
        limits,
    )
    .expect("loads");
    let mut high_water = Vec::new();
    // 40 runs of 900 KiB each, past the 512 KiB arena, would need 36 MiB if nothing were
    // freed; the limit is 32. (More growth than this and the host would not keep the
    // instance at all.)
    for n in 0..40 {
        let run = kept.run(msg("300,300,300"), &ctx("heap")).expect("runs");
        assert_eq!(zhp2(&run).as_deref(), Some("ok 900"));
        if n > 0 {
            assert_eq!(run.stats.instantiate, std::time::Duration::ZERO, "kept");
        }
        high_water.push(run.stats.memory_high_water);
    }
    assert!(
        high_water.iter().all(|&h| h < 4 << 20),
        "memory stays bounded: {high_water:?}"
    );
}

#[test]
fn granted_reuse_keeps_instances_between_runs_and_drops_one_that_failed() {
    let sandbox = Sandbox::new(SandboxConfig::default()).expect("engine");
    let load_with = |grants: &[&str]| {
        load_guest(
            &sandbox,
            "no-std",
            plexus_test_artifacts::NO_STD,
            grants,
            Limits::default(),
        )
        .expect("loads")
    };
    let grow = "300,300,300";
    let too_much = "2048";
    // Asked for but not granted: every run starts from the module's initial memory.
    let fresh = load_with(&[]);
    let initial = fresh
        .run(msg(""), &ctx("other"))
        .expect("runs")
        .stats
        .memory_high_water;
    fresh.run(msg(grow), &ctx("heap")).expect("runs");
    let after = fresh.run(msg(""), &ctx("other")).expect("runs");
    assert_eq!(after.stats.memory_high_water, initial);
    assert!(after.stats.instantiate > std::time::Duration::ZERO);

    // Granted: the next run lands on the instance the last one left, memory grown and
    // nothing instantiated.
    let kept = load_with(&["reuse-instance"]);
    let first = kept.run(msg(grow), &ctx("heap")).expect("runs");
    assert!(first.stats.instantiate > std::time::Duration::ZERO);
    assert!(first.stats.memory_high_water > initial);
    let second = kept.run(msg(""), &ctx("other")).expect("runs");
    assert_eq!(zhp2(&second).as_deref(), Some("forwarded"));
    assert_eq!(second.stats.instantiate, std::time::Duration::ZERO);
    assert_eq!(
        second.stats.memory_high_water,
        first.stats.memory_high_water
    );
    // An instance whose memory grew by more than a MiB gives it back.
    kept.run(msg(too_much), &ctx("heap")).expect("runs");
    let after_growth = kept.run(msg(""), &ctx("other")).expect("runs");
    assert!(after_growth.stats.instantiate > std::time::Duration::ZERO);
    assert_eq!(after_growth.stats.memory_high_water, initial);
    // A run that traps may have stopped anywhere: its instance is dropped, and the next
    // run starts afresh.
    kept.run(msg(""), &ctx("panic")).expect_err("panics");
    let after_trap = kept.run(msg(""), &ctx("other")).expect("runs");
    assert!(after_trap.stats.instantiate > std::time::Duration::ZERO);
    assert_eq!(after_trap.stats.memory_high_water, initial);
    // So is one cut off by its deadline.
    kept.run_within(msg(""), &ctx("loop"), std::time::Duration::from_millis(20))
        .expect_err("cut off");
    let after_cut = kept.run(msg(""), &ctx("other")).expect("runs");
    assert!(after_cut.stats.instantiate > std::time::Duration::ZERO);
}

#[test]
fn kept_instances_stay_within_an_eighth_of_the_sandboxs_slots() {
    // Eight slots: at most one instance is kept, across plug-ins.
    let sandbox = Sandbox::new(SandboxConfig {
        max_instances: 8,
        ..SandboxConfig::default()
    })
    .expect("engine");
    let load_as = |name: &str| {
        load_guest(
            &sandbox,
            name,
            plexus_test_artifacts::NO_STD,
            &["reuse-instance"],
            Limits::default(),
        )
        .expect("loads")
    };
    let reused = |plugin: &Plugin| {
        plugin
            .run(msg(""), &ctx("other"))
            .expect("runs")
            .stats
            .instantiate
            == std::time::Duration::ZERO
    };
    let a = load_as("a");
    let b = load_as("b");
    assert!(!reused(&a), "the first run instantiates");
    assert!(reused(&a), "then a keeps its instance");
    assert!(!reused(&b));
    assert!(
        !reused(&b),
        "a holds the one kept instance the sandbox allows"
    );
    // Runs at once on more threads than anything keeps all get a slot, and still run.
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                for _ in 0..20 {
                    b.run(msg(""), &ctx("other")).expect("a slot");
                }
            });
        }
    });
    // A plug-in version that goes away gives its kept instance back to the budget.
    drop(a);
    assert!(!reused(&b));
    assert!(reused(&b), "b may keep one now");
}

#[test]
fn limits_and_panics_are_reported_as_for_any_plugin() {
    let sandbox = Sandbox::new(SandboxConfig::default()).expect("engine");
    let limits = Limits {
        memory_bytes: 16 << 20,
        ..Limits::default()
    };
    let plugin = load(&sandbox, limits);
    let err = plugin
        .run(msg(""), &ctx("memory-bomb"))
        .expect_err("must not finish");
    assert!(
        matches!(err, RunError::MemoryLimit { limit, .. } if limit == 16 << 20),
        "{err}"
    );
    let err = plugin.run(msg(""), &ctx("panic")).expect_err("panics");
    assert!(matches!(err, RunError::Trap { .. }), "{err}");
    assert!(err.to_string().contains("no-std"), "{err}");
    // And the next message runs.
    let run = plugin.run(msg(""), &ctx("other")).expect("runs");
    assert_eq!(zhp2(&run).as_deref(), Some("forwarded"));
}
