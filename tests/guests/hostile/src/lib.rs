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
use plexus::transform::message::PathError;
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
                report(&format!(
                    "wall ms: {wall}, elapsed ns: {}",
                    t0.elapsed().as_nanos()
                ))
            }
            "random-probe" => {
                use std::hash::{BuildHasher, RandomState};
                let h = RandomState::new().hash_one(42u8);
                report(&format!("hash: {h}"))
            }
            "counter" => {
                let n = SEEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                report(&format!("seen: {n}"))
            }
            "second-time-panics" => {
                if SEEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed) > 0 {
                    panic!("state an earlier message left");
                }
                Outcome::Forward
            }
            "second-time-internal" => {
                if SEEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed) > 0 {
                    return fail("an earlier message's state");
                }
                Outcome::Forward
            }
            "second-time-loops" => {
                if SEEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed) > 0 {
                    let mut n = 0u64;
                    loop {
                        n = std::hint::black_box(n.wrapping_add(1));
                    }
                }
                Outcome::Forward
            }
            "edit" => {
                msg.set("PID-5-1", "EDITED").unwrap();
                Outcome::Forward
            }
            // Two paths in turn, so no edit merges into the one before.
            "edit-flood" => {
                let results =
                    (0..20_000).map(|i| msg.set(&format!("ZZZ-{}", i % 2 + 1), &i.to_string()));
                refusals(results)
            }
            "edit-bytes" => {
                let big = "x".repeat(256 << 10);
                let results = (0..64).map(|i| msg.set(&format!("ZZZ-{}", i % 2 + 1), &big));
                refusals(results)
            }
            // One path, spelled three ways, padded first.
            "edit-same-path" => {
                let spellings = ["  pid.5.1  ", "PID-5-1", "pid-5.1"];
                let results = (0..50_000).map(|i| msg.set(spellings[i % 3], &i.to_string()));
                refusals(results)
            }
            "fail-steer" => Outcome::Fail(TransformError {
                kind: ErrorKind::Internal,
                path: Some("  pid.5.1  ".to_owned()),
                detail: format!("missing-mapping invalid-input {}", "é".repeat(4_000)),
            }),
            "fail-bad-path" => Outcome::Fail(TransformError {
                kind: ErrorKind::MissingMapping,
                path: Some(format!("not a path {}", "x".repeat(10_000))),
                detail: "short".to_owned(),
            }),
            "filter-long" => Outcome::Filter("z".repeat(100_000)),
            "bad-handle" => a_function_named_doe_jane_born_1970(),
            "grow-refused" => {
                let refused = Vec::<u8>::new().try_reserve_exact(48 << 20).is_err();
                report(&format!("grow refused: {refused}"))
            }
            "grow-then-loop" => {
                let refused = Vec::<u8>::new().try_reserve_exact(48 << 20).is_err();
                let mut n = u64::from(refused);
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "log-some" => {
                for _ in 0..10 {
                    log(Level::Info, &"y".repeat(1_000));
                }
                Outcome::Forward
            }
            "sleep" => {
                std::thread::sleep(std::time::Duration::from_secs(3_600));
                fail("slept an hour")
            }
            "sleep-forever" => {
                std::thread::sleep(std::time::Duration::MAX);
                fail("slept for ever")
            }
            "sleep-loop" => {
                // Waits for time to pass on a clock that does not move.
                let t0 = std::time::Instant::now();
                while t0.elapsed() < std::time::Duration::from_millis(10) {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                fail("time passed")
            }
            "path-bomb" => {
                let path = "\u{1}".repeat(8 << 20);
                let errors = [
                    msg.get(&path).err(),
                    msg.set(&path, "x").err(),
                    msg.count(&path).err(),
                    msg.remove(&path).err(),
                ];
                let texts: Vec<String> =
                    errors.iter().flatten().map(|e| format!("{e:?}")).collect();
                let longest = texts.iter().map(String::len).max().unwrap_or(0);
                let why = texts
                    .iter()
                    .filter(|t| t.contains("at most 64 characters"))
                    .count();
                fail(&format!(
                    "{} refused, longest {longest} bytes, {why} say why",
                    texts.len()
                ))
            }
            "insert-bomb" => {
                let segment = format!("ZZZ{}", "|".repeat(8 << 20));
                fail(&format!("{:?}", msg.insert_segment(1, &segment).err()))
            }
            other => fail(&format!("unknown behaviour {other}")),
        }
    }
}

/// How many edits were refused, and what the first refusal said.
fn refusals(results: impl Iterator<Item = Result<(), PathError>>) -> Outcome {
    let mut refused = 0;
    let mut first = None;
    for result in results {
        if let Err(e) = result {
            refused += 1;
            first.get_or_insert(e);
        }
    }
    fail(&format!("{refused} refused: {first:?}"))
}

/// Hands the host a message handle it never gave out. The name is what a guest could
/// put in a wasm backtrace.
#[inline(never)]
fn a_function_named_doe_jane_born_1970() -> Outcome {
    let bogus = unsafe { Message::from_handle(0x7ff) };
    let read = bogus.get("PID-5-1");
    std::mem::forget(bogus);
    fail(&format!("read {}", read.is_ok()))
}

fn fail(detail: &str) -> Outcome {
    Outcome::Fail(TransformError {
        kind: ErrorKind::Internal,
        path: None,
        detail: detail.to_owned(),
    })
}

/// What a probe found, as a `rejected` failure: not `internal`, which would make the
/// host drop a kept instance and run the message again on a new one.
fn report(detail: &str) -> Outcome {
    Outcome::Fail(TransformError {
        kind: ErrorKind::Rejected,
        path: None,
        detail: detail.to_owned(),
    })
}

export!(Hostile);

// Asks for instance reuse so the tests can show what reuse carries over (`counter`).
#[used]
#[unsafe(link_section = "plexus:reuse-instance")]
static REQUEST_INSTANCE_REUSE: [u8; 1] = [1];
