//! What the sandbox's guest tests share. The test guests choose what to do by the
//! interface name in their context.

use std::sync::Arc;

use plexus_sandbox::{Context, Error, Grants, Limits, Plugin, PluginSpec, Sandbox, TableSet};

/// A context whose interface name picks the guest's behaviour.
pub fn ctx(behaviour: &str) -> Context {
    Context {
        interface: behaviour.to_owned(),
        site: "test-site".to_owned(),
        message_id: "m-1".to_owned(),
        received_at_ms: 1_795_482_123_000,
    }
}

/// Loads the guest built at `artifact` as plug-in `name`, with `grants`, no tables.
pub fn load_guest(
    sandbox: &Sandbox,
    name: &str,
    artifact: &str,
    grants: &[&str],
    limits: Limits,
) -> Result<Plugin, Error> {
    let bytes = std::fs::read(artifact).unwrap_or_else(|e| panic!("{name} built: {e}"));
    let spec = PluginSpec {
        name: name.to_owned(),
        sha256: None,
        grants: Grants::parse(grants.iter().copied()).expect("grants"),
        limits,
    };
    Plugin::load(sandbox, &spec, &bytes, Arc::new(TableSet::new()))
}
