//! One SIU message through `visit-status-map`:
//! * `fresh_instance`: a new store and instance per message, as production runs it;
//! * `reused_instance`: instances kept between messages, as production runs a plug-in
//!   that asks for reuse when the site grants `reuse-instance`;
//! * `native`: the same mapping written in plain Rust against plexus-hl7, the floor.
//!
//! `cargo bench -p plexus-sandbox --bench transform`. Criterion's median is the p50.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};

/// The allocator the `plexus` binary runs with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use plexus_hl7::Message;
use plexus_sandbox::cases::load_tables;
use plexus_sandbox::{Context, Grants, Limits, Plugin, PluginSpec, Sandbox, SandboxConfig};

fn bench(c: &mut Criterion) {
    let cases = plexus_test_artifacts::cases_dir("visit-status-map");
    let raw = std::fs::read(cases.join("siu-s12-checked-in.hl7")).expect("case input");
    let tables = load_tables(&cases).expect("tables");
    let status: HashMap<String, String> = read_csv(&cases.join("tables/visit-status.csv"));

    let sandbox = Sandbox::new(SandboxConfig::default()).expect("engine");
    let bytes = std::fs::read(plexus_test_artifacts::VISIT_STATUS_MAP).expect("plug-in built");
    let tables = Arc::new(tables);
    let load = |grants: &[&str]| {
        let spec = PluginSpec {
            name: "visit-status-map".into(),
            sha256: None,
            grants: Grants::parse(grants.iter().copied()).expect("grants"),
            limits: Limits::default(),
        };
        Plugin::load(&sandbox, &spec, &bytes, tables.clone()).expect("loads")
    };
    let tables_granted = ["tables:visit-status", "tables:visit-status-settings"];
    let plugin = load(&tables_granted);
    let kept = load(&[tables_granted.as_slice(), &["reuse-instance"]].concat());
    let ctx = Context {
        interface: "scheduling".into(),
        site: "bench".into(),
        message_id: "1".into(),
        received_at_ms: 0,
    };

    // The three must agree before they are timed.
    let expected = std::fs::read(cases.join("siu-s12-checked-in.expected.hl7")).expect("expected");
    for plugin in [&plugin, &kept, &kept] {
        let run = plugin
            .run(Message::parse_owned(raw.clone()).expect("parses"), &ctx)
            .expect("runs");
        assert_eq!(run.message.as_bytes(), expected.as_slice());
    }
    let mut native_msg = Message::parse_owned(raw.clone()).expect("parses");
    native(&mut native_msg, &status);
    assert_eq!(native_msg.as_bytes(), expected.as_slice());

    let mut group = c.benchmark_group("siu_visit_status_map");
    group.bench_function("fresh_instance", |b| {
        b.iter(|| {
            let msg = Message::parse_owned(raw.clone()).expect("parses");
            black_box(plugin.run(msg, &ctx).expect("runs"))
        })
    });
    group.bench_function("reused_instance", |b| {
        b.iter(|| {
            let msg = Message::parse_owned(raw.clone()).expect("parses");
            black_box(kept.run(msg, &ctx).expect("runs"))
        })
    });
    group.bench_function("native", |b| {
        b.iter(|| {
            let mut msg = Message::parse_owned(raw.clone()).expect("parses");
            native(&mut msg, &status);
            black_box(msg)
        })
    });
    group.finish();
}

/// The plug-in's mapping in plain Rust: each SCH-25-1 looked up as written, then folded.
fn native(msg: &mut Message<'static>, table: &HashMap<String, String>) {
    for i in 1..=msg.count("SCH").expect("path") {
        let path = format!("SCH[{i}]-25-1");
        let Some(value) = msg
            .get(path.as_str())
            .expect("path")
            .map(|v| v.into_owned())
        else {
            continue;
        };
        let folded = value
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase();
        let mapped = table
            .get(&value)
            .or_else(|| table.get(&folded))
            .expect("mapped")
            .clone();
        msg.set(path.as_str(), &mapped).expect("set");
    }
}

fn read_csv(path: &std::path::Path) -> HashMap<String, String> {
    std::fs::read_to_string(path)
        .expect("csv")
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(','))
        .map(|(k, v)| {
            (
                k.trim_matches('"').to_owned(),
                v.trim_matches('"').to_owned(),
            )
        })
        .collect()
}

criterion_group!(benches, bench);
criterion_main!(benches);
