//! A `#![no_std]` plug-in for the sandbox tests, built on `plexus_sdk::no_std_runtime!`.
//! What it does depends on the interface name in its context:
//!
//! * `heap`: allocates one block per KiB size listed in `ZHP-1` (e.g. `1,100,600,4096`),
//!   all alive at once, fills each with its own pattern, checks every byte, frees them
//!   and writes `ZHP-2` = `ok <total KiB>`. Sizes past the 512 KiB arena make the heap
//!   grow linear memory.
//! * `memory-bomb`: allocates 1 MiB blocks until the memory limit stops it.
//! * `panic`: panics (a trap, with no message, without `std`).
//! * `loop` or `no-std-loop`: loops until the deadline stops it.
//! * `no-std-grow-then-loop`: asks for 128 MiB (refused under the default memory limit),
//!   then loops until the deadline stops it.
//! * anything else: writes `ZHP-2` = `forwarded` and forwards.

#![cfg_attr(target_arch = "wasm32", no_std)]
extern crate alloc;

use alloc::format;
use alloc::vec;
use alloc::vec::Vec;
use plexus_sdk::{Context, Message, Outcome, Plugin, Result, TransformError};

struct NoStd;

impl Plugin for NoStd {
    fn transform(msg: &Message, ctx: Context) -> Result<Outcome> {
        match ctx.interface.as_str() {
            "heap" => {
                let sizes = msg.read("ZHP-1")?;
                let sizes = sizes.text().unwrap_or("");
                let total = exercise(sizes).map_err(TransformError::internal)?;
                msg.write("ZHP-2", &format!("ok {total}"))?;
            }
            "memory-bomb" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![7u8; 1 << 20]);
                    core::hint::black_box(&hoard);
                }
            }
            "panic" => panic!("a plug-in bug"),
            "loop" | "no-std-loop" => {
                let mut n = 0u64;
                loop {
                    n = core::hint::black_box(n.wrapping_add(1));
                }
            }
            "no-std-grow-then-loop" => {
                let refused = Vec::<u8>::new().try_reserve_exact(128 << 20).is_err();
                let mut n = u64::from(refused);
                loop {
                    n = core::hint::black_box(n.wrapping_add(1));
                }
            }
            _ => msg.write("ZHP-2", "forwarded")?,
        }
        Ok(Outcome::Forward)
    }
}

/// Allocates, fills and checks one block per size (KiB); returns the total KiB.
fn exercise(sizes: &str) -> core::result::Result<usize, &'static str> {
    let mut blocks = Vec::new();
    for (i, size) in sizes.split(',').filter(|s| !s.is_empty()).enumerate() {
        let kib: usize = size
            .trim()
            .parse()
            .map_err(|_| "ZHP-1 is not a size list")?;
        // Truncation is the pattern: block `i` holds the byte `i`.
        #[allow(clippy::cast_possible_truncation)]
        blocks.push(vec![i as u8; kib << 10]);
    }
    for (i, block) in blocks.iter().enumerate() {
        #[allow(clippy::cast_possible_truncation)]
        if block.iter().any(|&b| b != i as u8) {
            return Err("a block was overwritten");
        }
    }
    Ok(blocks.iter().map(|b| b.len() >> 10).sum())
}

plexus_sdk::export!(NoStd);

// The tests run it on a kept instance too, to show the heap reuses what was freed.
plexus_sdk::request_instance_reuse!();

plexus_sdk::no_std_runtime!();
