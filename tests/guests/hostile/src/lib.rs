//! A hostile plug-in for the sandbox tests. What it does depends on the interface name in
//! its context, so one component covers every misbehaviour that needs no extra imports.
#![allow(clippy::unwrap_used)]
#![allow(
    unsafe_code,
    reason = "the export glue wit-bindgen generates is unsafe by nature"
)]
#![allow(
    clippy::too_many_arguments,
    reason = "the generated export glue takes the flattened context"
)]

wit_bindgen::generate!({ path: "../../../wit", world: "hl7-transform" });

use plexus::transform::log::{Level, log};
use plexus::transform::types::{ErrorKind, TransformError};

struct Hostile;

/// Carried between calls only if an instance is reused.
static SEEN: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Guest for Hostile {
    fn transform(msg: &Message, ctx: Context) -> Outcome {
        match ctx.interface.as_str() {
            "loop" => {
                let mut n = 0u64;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "memory-bomb" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![7u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "unreachable" => std::process::abort(),
            "panic" => panic!("a plug-in bug"),
            "huge-output" => {
                let big = "x".repeat(8 << 20);
                let mut refused = 0;
                for i in 1..=8 {
                    if msg.set(&format!("ZZZ-{i}"), &big).is_err() {
                        refused += 1;
                    }
                }
                fail(&format!("{refused} oversize edits refused"))
            }
            "log-flood" => {
                for i in 0..100_000 {
                    log(Level::Info, &format!("line {i} {}", "y".repeat(200)));
                }
                Outcome::Forward
            }
            "stdout-flood" => {
                for i in 0..100_000 {
                    println!("stdout line {i}");
                    eprintln!("stderr line {i}");
                }
                Outcome::Forward
            }
            "fs-probe" => {
                let found = ["/", "/etc/passwd", ".", "/tmp"]
                    .iter()
                    .filter(|p| std::fs::metadata(p).is_ok() || std::fs::read_dir(p).is_ok())
                    .count();
                fail(&format!("fs reachable: {found}"))
            }
            "env-probe" => {
                let vars = std::env::vars().count();
                let args = std::env::args().count();
                let cwd = std::env::current_dir().is_ok();
                fail(&format!("env vars: {vars}, args: {args}, cwd: {cwd}"))
            }
            "clock-probe" => {
                let wall = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis())
                    .unwrap_or(0);
                let t0 = std::time::Instant::now();
                std::hint::black_box((0..10_000).sum::<u64>());
                fail(&format!(
                    "wall ms: {wall}, elapsed ns: {}",
                    t0.elapsed().as_nanos()
                ))
            }
            "random-probe" => {
                use std::hash::{BuildHasher, RandomState};
                let h = RandomState::new().hash_one(42u8);
                fail(&format!("hash: {h}"))
            }
            "counter" => {
                let n = SEEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                fail(&format!("seen: {n}"))
            }
            "edit" => {
                msg.set("PID-5-1", "EDITED").unwrap();
                Outcome::Forward
            }
            other => fail(&format!("unknown behaviour {other}")),
        }
    }
}

fn fail(detail: &str) -> Outcome {
    Outcome::Fail(TransformError {
        kind: ErrorKind::Internal,
        path: None,
        detail: detail.to_owned(),
    })
}

export!(Hostile);

// Asks for instance reuse so the tests can show what reuse carries over (`counter`).
#[used]
#[unsafe(link_section = "plexus:reuse-instance")]
static REQUEST_INSTANCE_REUSE: [u8; 1] = [1];
