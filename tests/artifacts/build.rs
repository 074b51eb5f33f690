//! Builds every guest component the tests use, so `cargo test` needs no manual step.
//!
//! Guests are workspace members (one Cargo.lock) built by a nested `cargo build
//! --target wasm32-wasip2` into their own target directory, which avoids waiting on the
//! outer build's lock and keeps them incremental between runs.

use std::path::{Path, PathBuf};
use std::process::Command;

/// (crate name, artifact file stem, constant name)
const GUESTS: &[(&str, &str)] = &[
    ("visit-status-map", "VISIT_STATUS_MAP"),
    ("demographics-normalize", "DEMOGRAPHICS_NORMALIZE"),
    ("provider-id-map", "PROVIDER_ID_MAP"),
    ("plexus-guest-hostile", "HOSTILE"),
    ("plexus-guest-net-probe", "NET_PROBE"),
];

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest
        .join("../..")
        .canonicalize()
        .expect("workspace root");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo"));
    // OUT_DIR is <target>/<profile>/build/<crate>-<hash>/out.
    let target = out
        .ancestors()
        .nth(4)
        .expect("target dir")
        .join("wasm-guests");

    for dir in [
        "sdk",
        "plugins",
        "tests/guests",
        "wit",
        "runtime/hl7/src",
        "runtime/hl7/Cargo.toml",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&target);
    for (name, _) in GUESTS {
        cmd.args(["-p", name]);
    }
    // The outer build's flags and wrappers (clippy, coverage) are for the host, not guests.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_TARGET_DIR",
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

    let mut consts = String::new();
    let mut all = String::from("pub const ALL: &[(&str, &str)] = &[\n");
    for (name, constant) in GUESTS {
        let file = target
            .join("wasm32-wasip2/release")
            .join(format!("{}.wasm", name.replace('-', "_")));
        assert!(
            file.exists(),
            "guest {name} was not produced at {}",
            file.display()
        );
        consts.push_str(&format!(
            "/// `{name}` built for wasm32-wasip2.\npub const {constant}: &str = {:?};\n",
            path_str(&file)
        ));
        all.push_str(&format!("    ({name:?}, {constant}),\n"));
    }
    all.push_str("];\n");
    std::fs::write(out.join("artifacts.rs"), consts + &all).expect("write artifacts.rs");
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}
