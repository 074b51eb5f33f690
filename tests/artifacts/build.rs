//! Builds every guest component the tests use (see `plexus-guest-build`).

use std::path::PathBuf;

/// (crate name, constant name)
const GUESTS: &[(&str, &str)] = &[
    ("visit-status-map", "VISIT_STATUS_MAP"),
    ("demographics-normalize", "DEMOGRAPHICS_NORMALIZE"),
    ("provider-id-map", "PROVIDER_ID_MAP"),
    ("plexus-guest-hostile", "HOSTILE"),
    ("plexus-guest-net-probe", "NET_PROBE"),
    ("plexus-guest-no-std", "NO_STD"),
];

fn main() {
    let names: Vec<&str> = GUESTS.iter().map(|(name, _)| *name).collect();
    let files = plexus_guest_build::build("../..", &names);
    let mut consts = String::new();
    let mut all = String::from("pub const ALL: &[(&str, &str)] = &[\n");
    for ((name, constant), file) in GUESTS.iter().zip(files) {
        consts.push_str(&format!(
            "/// `{name}` built for wasm32-wasip2.\npub const {constant}: &str = {:?};\n",
            file.to_string_lossy()
        ));
        all.push_str(&format!("    ({name:?}, {constant}),\n"));
    }
    all.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo"));
    std::fs::write(out.join("artifacts.rs"), consts + &all).expect("write artifacts.rs");
}
