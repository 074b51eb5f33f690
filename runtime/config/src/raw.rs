//! The config as written: serde structs that mirror the TOML one to one. Every value that
//! validation may complain about is `Spanned`, so its error can point at it. Nothing here
//! is checked beyond its TOML type; `validate.rs` turns these into the public types.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// A name written as a table key (`[plugins.NAME]`) or a string value.
pub(crate) type Name = Spanned<String>;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// `[engine]`
    #[serde(default)]
    pub engine: Engine,
    /// `[http]`
    #[serde(default)]
    pub http: Http,
    /// `[journal]`
    #[serde(default)]
    pub journal: Journal,
    /// `[tables.NAME]`
    #[serde(default)]
    pub tables: BTreeMap<Name, Table>,
    /// `[plugins.NAME]`
    #[serde(default)]
    pub plugins: BTreeMap<Name, Plugin>,
    /// `[interfaces.NAME]`
    #[serde(default)]
    pub interfaces: BTreeMap<Name, Interface>,
    /// `[admin]`
    #[serde(default)]
    pub admin: Admin,
}

/// `[admin]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Admin {
    /// `tokens = [{ name, role, sha256 }, ...]`
    #[serde(default)]
    pub tokens: Vec<Spanned<AdminToken>>,
}

/// One admin API token.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AdminToken {
    /// `name = "ops-desk"`
    pub name: Spanned<String>,
    /// `role = "operator"`
    pub role: Spanned<String>,
    /// `sha256 = "<64 hex digits>"`: the token's digest, never the token.
    pub sha256: Spanned<String>,
}

/// `[engine]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Engine {
    /// `data_dir = "plexus-data"`
    pub data_dir: Option<Spanned<String>>,
    /// `site = "northside-clinic"`
    pub site: Option<Spanned<String>>,
}

/// `[http]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Http {
    /// `listen = "127.0.0.1:8480"`
    pub listen: Option<Spanned<String>>,
    /// `tls = { cert = "server.pem", key = "server.key" }`
    pub tls: Option<Spanned<ServerTls>>,
}

/// `[journal]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Journal {
    /// `backend = "sqlite"`
    pub backend: Option<Spanned<String>>,
    /// `duplicate_window = "24h"`
    pub duplicate_window: Option<Spanned<String>>,
    /// `retention = "30d"`
    pub retention: Option<Spanned<String>>,
}

/// `[tables.NAME]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Table {
    /// `file = "tables/visit-status.csv"`
    pub file: Spanned<String>,
}

/// `[plugins.NAME]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Plugin {
    /// `file = "plugins/visit-status-map.wasm"`
    pub file: Spanned<String>,
    /// `sha256 = "<64 hex digits>"`
    pub sha256: Option<Spanned<String>>,
    /// `cases = "plugins/visit-status-map/cases"`
    pub cases: Option<Spanned<String>>,
    /// `grants = ["log", "tables:visit-status"]`
    #[serde(default)]
    pub grants: Vec<Spanned<String>>,
    /// `[plugins.NAME.limits]`
    #[serde(default)]
    pub limits: Limits,
}

/// `[plugins.NAME.limits]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Limits {
    /// `memory = "64MiB"`
    pub memory: Option<Spanned<SizeValue>>,
    /// `timeout = "1s"`
    pub timeout: Option<Spanned<String>>,
    /// `max_message_bytes = "16MiB"`
    pub max_message_bytes: Option<Spanned<SizeValue>>,
    /// `log_lines = 100`
    pub log_lines: Option<Spanned<i64>>,
    /// `log_bytes = "16KiB"`
    pub log_bytes: Option<Spanned<SizeValue>>,
}

/// A size as written: a byte count (`65536`) or a string with a unit (`"64KiB"`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum SizeValue {
    /// `65536`
    Bytes(i64),
    /// `"64KiB"`
    Text(String),
}

/// `[interfaces.NAME]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Interface {
    /// `source = { type = "mllp", listen = "127.0.0.1:2575" }`
    pub source: Spanned<Source>,
    /// `chain = ["demographics-normalize", "visit-status-map"]`
    #[serde(default)]
    pub chain: Vec<Name>,
    /// `[[interfaces.NAME.destinations]]`
    #[serde(default)]
    pub destinations: Vec<Spanned<Destination>>,
    /// `ack_mode = "auto"`
    pub ack_mode: Option<Spanned<String>>,
    /// `ordering = "fifo"`
    pub ordering: Option<Spanned<String>>,
    /// `order_by = "PID-3-1"`
    pub order_by: Option<Spanned<String>>,
    /// `[interfaces.NAME.retry]`
    #[serde(default)]
    pub retry: Retry,
    /// `error_ack = "permanent"`
    pub error_ack: Option<Spanned<String>>,
    /// `charset = "8859/1"`
    pub charset: Option<Spanned<String>>,
}

/// `source = { type = ..., ... }`: the keys of every source type; validation checks that
/// only the chosen type's keys are present.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Source {
    /// `type = "mllp"` (or `"http"`, `"file"`)
    #[serde(rename = "type")]
    pub kind: Spanned<String>,
    /// `listen = "127.0.0.1:2575"` (mllp)
    pub listen: Option<Spanned<String>>,
    /// `max_frame = "16MiB"` (mllp)
    pub max_frame: Option<Spanned<SizeValue>>,
    /// `max_connections = 128` (mllp)
    pub max_connections: Option<Spanned<i64>>,
    /// `idle_timeout = "5m"` (mllp)
    pub idle_timeout: Option<Spanned<String>>,
    /// `tls = { cert = "server.pem", key = "server.key" }` (mllp)
    pub tls: Option<Spanned<ServerTls>>,
    /// `path = "/ingest/scheduling"` (http)
    pub path: Option<Spanned<String>>,
    /// `dir = "inbox"` (file)
    pub dir: Option<Spanned<String>>,
    /// `pattern = "*.hl7"` (file)
    pub pattern: Option<Spanned<String>>,
    /// `poll = "1s"` (file)
    pub poll: Option<Spanned<String>>,
}

/// `tls = { cert = ..., key = ... }` on an MLLP source or the HTTP server.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ServerTls {
    /// `cert = "server.pem"`
    pub cert: Spanned<String>,
    /// `key = "server.key"`
    pub key: Spanned<String>,
}

/// `[[interfaces.NAME.destinations]]`: the keys of every destination type.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Destination {
    /// `name = "emr"`
    pub name: Name,
    /// `type = "mllp"` (or `"http"`, `"file"`)
    #[serde(rename = "type")]
    pub kind: Spanned<String>,
    /// `connect = "10.0.0.5:2575"` (mllp)
    pub connect: Option<Spanned<String>>,
    /// `ack_timeout = "30s"` (mllp)
    pub ack_timeout: Option<Spanned<String>>,
    /// `ne_wait = "250ms"` (mllp)
    pub ne_wait: Option<Spanned<String>>,
    /// `er_wait = "2s"` (mllp)
    pub er_wait: Option<Spanned<String>>,
    /// `tls = { ca = "ca.pem", server_name = "emr.local" }` (mllp)
    pub tls: Option<Spanned<ClientTls>>,
    /// `url = "https://emr.example/hl7"` (http)
    pub url: Option<Spanned<String>>,
    /// `dir = "outbox"` (file)
    pub dir: Option<Spanned<String>>,
    /// `connections = 4` (mllp, http)
    pub connections: Option<Spanned<i64>>,
}

/// `tls = { ca = ..., server_name = ... }` on an MLLP destination.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClientTls {
    /// `ca = "ca.pem"`
    pub ca: Spanned<String>,
    /// `server_name = "emr.local"`
    pub server_name: Option<Spanned<String>>,
}

/// `[interfaces.NAME.retry]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Retry {
    /// `max_attempts = 10`
    pub max_attempts: Option<Spanned<i64>>,
    /// `initial_backoff = "1s"`
    pub initial_backoff: Option<Spanned<String>>,
    /// `max_backoff = "5m"`
    pub max_backoff: Option<Spanned<String>>,
    /// `jitter = true`
    pub jitter: Option<bool>,
    /// `on_head_failure = "block"`
    pub on_head_failure: Option<Spanned<String>>,
}
