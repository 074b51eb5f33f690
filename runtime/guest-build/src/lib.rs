//! Builds guest crates of this workspace (plug-ins, test guests) to `wasm32-wasip2`
//! components from a build script, so `cargo build` and `cargo test` need no manual step.
//!
//! Guests are workspace members (one `Cargo.lock`) built by a nested `cargo build
//! --profile guest --target wasm32-wasip2` into their own target directory
//! (`<target>/wasm-guests`): that avoids waiting on the outer build's lock and keeps the
//! guests incremental between runs. Used by the `plexus` binary (which embeds the demo
//! plug-ins) and by the test artifacts crate.
//!
//! Everything here runs inside a build script, where a failure can only be reported by
//! panicking with a message cargo shows.

#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Folders and files whose changes should rebuild the guests, relative to the workspace.
const WATCH: &[&str] = &[
    "sdk",
    "plugins",
    "tests/guests",
    "wit",
    "runtime/hl7/src",
    "runtime/hl7/Cargo.toml",
    "Cargo.lock",
];

/// Builds `crates` (package names) and returns each one's `.wasm` path, in order.
///
/// `manifest_dir_to_root` is the relative path from the calling crate's manifest folder
/// to the workspace root (e.g. `"../.."`).
///
/// # Panics
///
/// When the nested build fails (typically: the `wasm32-wasip2` target is not installed)
/// or an artifact is missing. The message says what to do.
pub fn build(manifest_dir_to_root: &str, crates: &[&str]) -> Vec<PathBuf> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest
        .join(manifest_dir_to_root)
        .canonicalize()
        .expect("workspace root");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo"));
    // OUT_DIR is <target>/<profile>/build/<crate>-<hash>/out, or one level deeper when
    // cross-compiling (<target>/<triple>/<profile>/...); find the folder holding the
    // profile folders by looking for cargo's lock-free marker, `CACHEDIR.TAG`.
    let target = out
        .ancestors()
        .find(|dir| dir.join("CACHEDIR.TAG").exists())
        .or_else(|| out.ancestors().nth(4))
        .expect("target dir")
        .join("wasm-guests");

    for dir in WATCH {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }

    ensure_target();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args([
            "build",
            "--profile",
            PROFILE,
            "--locked",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&target);
    for name in crates {
        cmd.args(["-p", name]);
    }
    // The outer build's flags and wrappers (clippy, coverage) are for the host, not guests.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
    ] {
        cmd.env_remove(var);
    }
    let output = cmd
        .output()
        .expect("running cargo to build the wasm guests");
    if !output.status.success() {
        panic!(
            "building the wasm32-wasip2 guests failed (is the target installed? `rustup target add wasm32-wasip2`):\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    crates
        .iter()
        .map(|name| {
            let file = artifact(&target, name);
            assert!(
                file.exists(),
                "guest {name} was not produced at {}",
                file.display()
            );
            file
        })
        .collect()
}

/// The guests' target triple.
const TARGET: &str = "wasm32-wasip2";
/// The workspace profile guests are built with (LTO, one codegen unit, no debug info).
const PROFILE: &str = "guest";

/// Adds the `wasm32-wasip2` standard library with rustup when the toolchain lacks it.
/// `rust-toolchain.toml` lists the target, but rustup only installs listed targets with
/// the toolchain itself, not into a toolchain that is already there; this keeps "clone,
/// then `cargo test`" working on a machine with only rustup.
fn ensure_target() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let Some(sysroot) = sysroot else { return };
    if sysroot.join("lib/rustlib").join(TARGET).exists() {
        return;
    }
    println!(
        "cargo:warning=installing the {TARGET} target with rustup (needed to build the plug-ins)"
    );
    let added = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status();
    if !matches!(added, Ok(status) if status.success()) {
        println!("cargo:warning=`rustup target add {TARGET}` failed; install the target by hand");
    }
}

fn artifact(target: &Path, name: &str) -> PathBuf {
    target
        .join(TARGET)
        .join(PROFILE)
        .join(format!("{}.wasm", name.replace('-', "_")))
}
