//! Paths of the guest components the tests run, built by this crate's build script:
//! the real plug-ins under `plugins/` and the hostile guests under `tests/guests/`.

include!(concat!(env!("OUT_DIR"), "/artifacts.rs"));

/// The `cases/` folder of a plug-in under `plugins/`.
pub fn cases_dir(plugin: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../plugins")
        .join(plugin)
        .join("cases")
}
