//! The security reviewer's sheet: what a component is and what it asks for, read from
//! its bytes without running or compiling it.

use sha2::{Digest, Sha256};

/// Hex sha256 of component bytes: the identity a grant is pinned to.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The first 12 hex digits of a digest, for messages.
pub fn short(digest: &str) -> &str {
    digest.get(..12).unwrap_or(digest)
}

/// What an import means for the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Part of the contract (the message, shared types): always provided.
    Contract,
    /// A capability the site must grant; `grant` is the config string as a person writes
    /// it (`tables:<table-name>` stands for one grant per table).
    Capability {
        /// The capability's name.
        name: &'static str,
        /// The grant string, with `<table-name>` where a name goes.
        grant: &'static str,
    },
    /// WASI, linked with an empty or deterministic context; `effect` says what the plug-in
    /// actually gets.
    Inert {
        /// What the plug-in gets from it.
        effect: &'static str,
    },
    /// Something no site can grant; loading is refused.
    Unavailable {
        /// Why.
        why: &'static str,
    },
}

impl Class {
    /// Classifies an import by its interface name (`wasi:cli/stdout@0.2.6`).
    pub fn of(import: &str) -> Class {
        let (name, version) = import.split_once('@').unwrap_or((import, ""));
        if name.starts_with("plexus:transform/") && !version.starts_with(CONTRACT_SERIES) {
            return Class::Unavailable {
                why: "another version of the plexus:transform contract than this engine's 0.1.x: rebuild the plug-in against this engine's wit/",
            };
        }
        match name {
            "plexus:transform/message" | "plexus:transform/types" => Class::Contract,
            "plexus:transform/log" => Class::Capability {
                name: "log",
                grant: "log",
            },
            "plexus:transform/tables" => Class::Capability {
                name: "tables",
                grant: "tables:<table-name>",
            },
            n if n.starts_with("wasi:cli/") => Class::Inert {
                effect: "no environment, arguments or stdin; stdout/stderr captured into the plug-in log under its caps",
            },
            n if n.starts_with("wasi:io/") => Class::Inert {
                effect: "streams for the captured stdio only",
            },
            n if n.starts_with("wasi:clocks/") => Class::Inert {
                effect: "a frozen clock: wall time is the message's arrival time, monotonic time does not advance",
            },
            n if n.starts_with("wasi:random/") => Class::Inert {
                effect: "deterministic bytes from a fixed seed, not real randomness",
            },
            n if n.starts_with("wasi:filesystem/") => Class::Inert {
                effect: "no directories are opened: no file is reachable",
            },
            n if n.starts_with("wasi:sockets/") => Class::Unavailable {
                why: "network access is never granted to plug-ins",
            },
            n if n.starts_with("wasi:http/") => Class::Unavailable {
                why: "HTTP is never granted to plug-ins",
            },
            _ => Class::Unavailable {
                why: "not part of the Plexus plug-in contract",
            },
        }
    }

    /// A short label: `contract`, `capability`, `inert`, `unavailable`.
    pub fn label(&self) -> &'static str {
        match self {
            Class::Contract => "contract",
            Class::Capability { .. } => "capability",
            Class::Inert { .. } => "inert",
            Class::Unavailable { .. } => "unavailable",
        }
    }
}

/// The reviewer's sheet for one component.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// Hex sha256 of the bytes.
    pub sha256: String,
    /// Size in bytes.
    pub size: usize,
    /// Top-level imports with their classification.
    pub imports: Vec<(String, Class)>,
    /// Top-level exports.
    pub exports: Vec<String>,
    /// Producer metadata (language, toolchain, SDK), as `field: name version`.
    pub producers: Vec<String>,
    /// The plug-in asks to keep its instances across messages (a `plexus:reuse-instance`
    /// custom section, from `plexus_sdk::request_instance_reuse!`). The site must also
    /// grant `reuse-instance`.
    pub requests_reuse: bool,
    /// The site tables the plug-in says it reads (a `plexus:tables` custom section, from
    /// `plexus_sdk::reads_tables!`), sorted; empty when it does not say.
    pub reads_tables: Vec<String>,
}

impl Inspection {
    /// Each import as the reviewer's sheet gives it in JSON (`plexus plugin inspect
    /// --json`, the admin API): `{import, class}` plus `capability` and `grant`, `effect`
    /// or `refused`.
    pub fn imports_json(&self) -> Vec<serde_json::Value> {
        use serde_json::json;
        self.imports
            .iter()
            .map(|(name, class)| {
                let mut entry = json!({ "import": name, "class": class.label() });
                match class {
                    Class::Capability { name, grant } => {
                        entry["capability"] = json!(name);
                        entry["grant"] = json!(grant);
                    }
                    Class::Inert { effect } => entry["effect"] = json!(effect),
                    Class::Unavailable { why } => entry["refused"] = json!(why),
                    Class::Contract => {}
                }
                entry
            })
            .collect()
    }

    /// Imports no site can grant (sockets, HTTP, unknown interfaces): a component with any
    /// of these never loads.
    pub fn refused_imports(&self) -> Vec<&str> {
        self.imports
            .iter()
            .filter(|(_, c)| matches!(c, Class::Unavailable { .. }))
            .map(|(n, _)| n.as_str())
            .collect()
    }

    /// Whether any site could load it: it exports `transform` and imports nothing that no
    /// site can grant.
    pub fn loadable(&self) -> bool {
        self.implements_contract() && self.refused_imports().is_empty()
    }

    /// Whether the component exports the contract's `transform` function.
    pub fn implements_contract(&self) -> bool {
        self.exports.iter().any(|e| e == "transform")
    }

    /// Whether the component imports any WASI interface (`std` guests do; `no_std` ones
    /// built on the SDK's runtime do not).
    pub fn imports_wasi(&self) -> bool {
        self.imports
            .iter()
            .any(|(import, _)| import.starts_with("wasi:"))
    }

    /// Capabilities the component requests, by name.
    pub fn capabilities(&self) -> Vec<&'static str> {
        let mut caps: Vec<_> = self
            .imports
            .iter()
            .filter_map(|(_, c)| match c {
                Class::Capability { name, .. } => Some(*name),
                _ => None,
            })
            .collect();
        caps.dedup();
        caps
    }
}

/// The custom section a plug-in carries to ask for instance reuse.
pub const REUSE_SECTION: &str = "plexus:reuse-instance";

/// The custom section in which a plug-in names the tables it reads, one per line.
pub const TABLES_SECTION: &str = "plexus:tables";

/// At most this many declared table names are read (a table name has at most 64
/// characters, like every config name).
const MAX_DECLARED_TABLES: usize = 64;

/// The contract versions this engine links: `plexus:transform@0.1.*`.
const CONTRACT_SERIES: &str = "0.1.";

/// Producer lines kept for the report; a component can carry millions, and the report is
/// built on every load and listing.
const MAX_PRODUCERS: usize = 64;

/// Reads a component's imports, exports and producers.
pub fn inspect(bytes: &[u8]) -> Result<Inspection, String> {
    use wasmparser::{KnownCustom, Parser, Payload};

    let mut imports = Vec::new();
    let mut exports = Vec::new();
    let mut producers = Vec::new();
    let mut requests_reuse = false;
    let mut reads_tables: Vec<String> = Vec::new();
    let mut depth = 0usize;
    let mut saw_component = false;
    if !bytes.starts_with(b"\0asm") {
        return Err(
            "not a WebAssembly file (it does not start with the `\\0asm` magic bytes); a plug-in \
             is the .wasm component a wasm32-wasip2 build writes"
                .to_owned(),
        );
    }
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| e.to_string())?;
        match payload {
            Payload::Version { encoding, .. } if depth == 0 && !saw_component => {
                if encoding != wasmparser::Encoding::Component {
                    return Err(
                        "this is a core WebAssembly module, not a component; build plug-ins with \
                                    --target wasm32-wasip2"
                            .to_owned(),
                    );
                }
                saw_component = true;
            }
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(reader) if depth == 0 => {
                for import in reader {
                    let import = import.map_err(|e| e.to_string())?;
                    // Type imports (`use types.{context}` in a world) are names for types,
                    // not things a plug-in can call.
                    if matches!(import.ty, wasmparser::ComponentTypeRef::Type(_)) {
                        continue;
                    }
                    let name = import.name.name.to_owned();
                    let class = Class::of(&name);
                    imports.push((name, class));
                }
            }
            Payload::ComponentExportSection(reader) if depth == 0 => {
                for export in reader {
                    exports.push(export.map_err(|e| e.to_string())?.name.name.to_owned());
                }
            }
            Payload::CustomSection(custom) if custom.name() == REUSE_SECTION => {
                requests_reuse = true
            }
            Payload::CustomSection(custom) if custom.name() == TABLES_SECTION => {
                let text = std::str::from_utf8(custom.data())
                    .map_err(|_| format!("the {TABLES_SECTION} section is not text"))?;
                for name in text
                    .split(['\n', '\0'])
                    .map(str::trim)
                    .filter(|n| !n.is_empty())
                {
                    if !valid_table_name(name) {
                        return Err(format!(
                            "the {TABLES_SECTION} section names {:?}, which is not a table name \
                             ([a-z0-9][a-z0-9-]*, at most 64 characters)",
                            name.chars().take(80).collect::<String>()
                        ));
                    }
                    if !reads_tables.iter().any(|t| t == name) {
                        reads_tables.push(name.to_owned());
                    }
                    if reads_tables.len() > MAX_DECLARED_TABLES {
                        return Err(format!(
                            "the {TABLES_SECTION} section names more than {MAX_DECLARED_TABLES} tables"
                        ));
                    }
                }
            }
            Payload::CustomSection(custom) => {
                if let KnownCustom::Producers(reader) = custom.as_known() {
                    let values = reader.into_iter().flatten().flat_map(|field| {
                        field
                            .values
                            .into_iter()
                            .flatten()
                            .map(move |v| (field.name, v))
                    });
                    for (field, value) in values {
                        if producers.len() >= MAX_PRODUCERS {
                            break;
                        }
                        let line = format!("{field}: {} {}", value.name, value.version);
                        if !producers.contains(&line) {
                            producers.push(line);
                        }
                    }
                }
            }
            _ => {}
        }
    }
    if !saw_component {
        return Err("empty input".to_owned());
    }
    reads_tables.sort();
    Ok(Inspection {
        sha256: sha256_hex(bytes),
        size: bytes.len(),
        imports,
        exports,
        producers,
        requests_reuse,
        reads_tables,
    })
}

/// A config name: `[a-z0-9][a-z0-9-]*`, at most 64 characters.
fn valid_table_name(name: &str) -> bool {
    name.len() <= 64
        && name
            .bytes()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_imports() {
        assert_eq!(Class::of("plexus:transform/message@0.1.0"), Class::Contract);
        assert_eq!(Class::of("plexus:transform/message@0.1.7"), Class::Contract);
        // Another contract version would fail to link: the report says so up front.
        for other in [
            "plexus:transform/message@0.2.0",
            "plexus:transform/log@1.0.0",
            "plexus:transform/types",
        ] {
            assert!(
                matches!(Class::of(other), Class::Unavailable { why } if why.contains("0.1.x")),
                "{other}"
            );
        }
        assert!(matches!(
            Class::of("plexus:transform/tables@0.1.0"),
            Class::Capability { name: "tables", .. }
        ));
        assert!(matches!(
            Class::of("wasi:filesystem/preopens@0.2.6"),
            Class::Inert { .. }
        ));
        assert!(matches!(
            Class::of("wasi:sockets/tcp@0.2.6"),
            Class::Unavailable { .. }
        ));
        assert!(matches!(
            Class::of("evil:backdoor/run"),
            Class::Unavailable { .. }
        ));
    }

    #[test]
    fn digests_are_hex_sha256() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn core_modules_are_refused_with_a_hint() {
        let module = wat_module();
        let err = inspect(&module).expect_err("a core module");
        assert!(err.contains("wasm32-wasip2"), "{err}");
    }

    fn wat_module() -> Vec<u8> {
        // The smallest core module: magic and version 1.
        vec![0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00]
    }
}
