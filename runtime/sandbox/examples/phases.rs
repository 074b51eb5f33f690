//! Where a fresh-instance run spends its time: parse, store + instantiate, the call, and
//! dropping the store (the pooling allocator resets the instance's memory then).
//!
//! `cargo run --release -p plexus-sandbox --example phases`
//!
//! `N` sets the measured runs (default 50000), `W` the warm-up runs (default 5000),
//! `KEEP` the resident bytes kept per memory slot, `MAXI` the pool size, `PLUGIN` another
//! build of the plug-in (e.g. a `std` one, to compare). Under
//! `valgrind --tool=callgrind` use `MAXI=1`: valgrind cannot reserve the full pool.

use std::sync::Arc;
use std::time::{Duration, Instant};

/// The allocator the `plexus` binary runs with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use plexus_hl7::Message;
use plexus_sandbox::cases::load_tables;
use plexus_sandbox::{Context, Grants, Limits, Plugin, PluginSpec, Sandbox, SandboxConfig};

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> anyhow::Result<()> {
    let cases = plexus_test_artifacts::cases_dir("visit-status-map");
    let raw = std::fs::read(cases.join("siu-s12-checked-in.hl7"))?;
    let tables = load_tables(&cases)?;
    let mut config = SandboxConfig::default();
    config.keep_resident_bytes = env("KEEP", config.keep_resident_bytes);
    config.max_instances = env("MAXI", config.max_instances);
    let sandbox = Sandbox::new(config)?;
    let bytes = std::fs::read(
        std::env::var("PLUGIN")
            .unwrap_or_else(|_| plexus_test_artifacts::VISIT_STATUS_MAP.to_owned()),
    )?;
    let spec = PluginSpec {
        name: "visit-status-map".into(),
        sha256: None,
        grants: Grants::parse(["tables:visit-status", "tables:visit-status-settings"])?,
        limits: Limits::default(),
    };
    let plugin = Plugin::load(&sandbox, &spec, &bytes, Arc::new(tables))?;
    let ctx = Context {
        interface: "scheduling".into(),
        site: "phases".into(),
        message_id: "1".into(),
        received_at_ms: 0,
    };
    let (n, warm): (u32, u32) = (env("N", 50_000), env("W", 5_000));
    let [mut parse, mut instantiate, mut call, mut drop_store] = [Duration::ZERO; 4];
    for i in 0..warm + n {
        let t0 = Instant::now();
        let msg = Message::parse_owned(raw.clone())?;
        let t1 = Instant::now();
        let run = plugin.run(msg, &ctx)?;
        let stats = run.stats;
        drop(run);
        let t2 = Instant::now();
        if i >= warm {
            parse += t1 - t0;
            instantiate += stats.instantiate;
            call += stats.total - stats.instantiate;
            drop_store += (t2 - t1).saturating_sub(stats.total);
        }
    }
    let us = |d: Duration| d.as_secs_f64() * 1e6 / f64::from(n.max(1));
    println!(
        "per message (µs): parse {:.2}  store+instantiate {:.2}  call {:.2}  drop {:.2}  run total {:.2}",
        us(parse),
        us(instantiate),
        us(call),
        us(drop_store),
        us(instantiate + call + drop_store)
    );
    Ok(())
}
