//! Embeds the demo site's plug-ins (`builtin:` files) in the `plexus` binary, built from
//! `plugins/` by `plexus-guest-build`.

use std::path::PathBuf;

const BUILTIN: &[(&str, &str)] = &[
    ("visit-status-map", "VISIT_STATUS_MAP"),
    ("demographics-normalize", "DEMOGRAPHICS_NORMALIZE"),
];

fn main() {
    let names: Vec<&str> = BUILTIN.iter().map(|(name, _)| *name).collect();
    let files = plexus_guest_build::build("../..", &names);
    let mut code = String::new();
    for ((name, constant), file) in BUILTIN.iter().zip(files) {
        code.push_str(&format!(
            "/// The `{name}` plug-in (`builtin:{name}`).\npub const {constant}: &[u8] = include_bytes!({:?});\n",
            file.to_string_lossy()
        ));
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo"));
    std::fs::write(out.join("builtin.rs"), code).expect("write builtin.rs");
}
