//! The validated config. Every value here has been checked and has its default filled in;
//! every path is resolved against the config file's folder.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A name for an interface, plug-in, table or destination: `[a-z0-9][a-z0-9-]*`, at most
/// 64 characters. Names appear in grants, paths, metrics and the journal, so they are
/// kept to characters that need no quoting anywhere.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Id(String);

impl Id {
    /// The longest name accepted.
    pub const MAX_LEN: usize = 64;

    /// Checks `name` against the rule above.
    pub fn new(name: &str) -> Option<Id> {
        let mut chars = name.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        (first_ok && rest_ok && name.len() <= Self::MAX_LEN).then(|| Id(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::borrow::Borrow<str> for Id {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// Where a file comes from: a path, or (`builtin:NAME`) something shipped inside the
/// `plexus` binary, which the CLI resolves. Only the bundled demo uses `builtin:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `builtin:NAME`
    Builtin(String),
    /// A path, already resolved against the config file's folder.
    Path(PathBuf),
}

/// A whole site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `[engine]`
    pub engine: Engine,
    /// `[http]`
    pub http: Http,
    /// `[journal]`
    pub journal: Journal,
    /// `[tables.NAME]`
    pub tables: BTreeMap<Id, Table>,
    /// `[plugins.NAME]`
    pub plugins: BTreeMap<Id, Plugin>,
    /// `[interfaces.NAME]`; at least one.
    pub interfaces: BTreeMap<Id, Interface>,
    /// `[admin]`
    pub admin: Admin,
}

/// `[admin]`: who may use the admin API.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Admin {
    /// `tokens`: bearer tokens, stored as sha256 digests. None: the admin API refuses
    /// every request.
    pub tokens: Vec<AdminToken>,
}

/// One bearer token of the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminToken {
    /// `name`: shown in the audit log as the actor (`token:NAME`).
    pub name: Id,
    /// `role`
    pub role: Role,
    /// `sha256`: lowercase hex digest of the token.
    pub sha256: String,
}

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Read interfaces, queues and errors (message content masked).
    Viewer,
    /// A viewer who may also replay and resolve errors and see message content.
    Operator,
    /// An operator who may also activate and roll back plug-in versions.
    Deployer,
    /// Reads the audit log and reviews capabilities; nothing else.
    Reviewer,
    /// Everything.
    Admin,
}

impl Role {
    /// Every role, as written in the config.
    pub const ALL: [(&'static str, Role); 5] = [
        ("viewer", Role::Viewer),
        ("operator", Role::Operator),
        ("deployer", Role::Deployer),
        ("reviewer", Role::Reviewer),
        ("admin", Role::Admin),
    ];

    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        Role::ALL
            .iter()
            .find(|(_, r)| *r == self)
            .map_or("viewer", |(n, _)| n)
    }
}

/// `[engine]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Engine {
    /// `data_dir`: journal, file destinations' defaults and state. Default `plexus-data`.
    pub data_dir: PathBuf,
    /// `site`: the site's name, passed to plug-ins in their context. Default empty.
    pub site: String,
}

/// `[http]`: the admin and ingest HTTP server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Http {
    /// `listen`. Default `127.0.0.1:8480`.
    pub listen: SocketAddr,
    /// `tls`: serve HTTPS (admin API, ingest routes, health and metrics) with this
    /// certificate. Default: plain HTTP.
    pub tls: Option<ServerTls>,
}

/// `[journal]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Journal {
    /// `backend`. Only SQLite for now.
    pub backend: JournalBackend,
    /// `duplicate_window`: how far back a repeated MSH-10 + source is flagged. Default 24 h.
    pub duplicate_window: Duration,
    /// `retention`: delivered messages are pruned after this. Default 30 d.
    pub retention: Duration,
}

/// `backend = "sqlite"`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JournalBackend {
    /// SQLite in `data_dir`.
    Sqlite,
}

/// `[tables.NAME]`: a CSV crosswalk with a `key,value` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// `file`
    pub file: Source,
}

/// `[plugins.NAME]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plugin {
    /// `file`: the component (`.wasm`).
    pub file: Source,
    /// `sha256`: the pin, 64 lowercase hex digits. Loading fails if the file differs.
    pub sha256: Option<String>,
    /// `cases`: the plug-in's golden cases (`NAME.hl7` + expected files, `tables/`). A
    /// new version must pass them before it is activated.
    pub cases: Option<std::path::PathBuf>,
    /// `grants`
    pub grants: Grants,
    /// `[plugins.NAME.limits]`
    pub limits: Limits,
}

/// `grants = [...]`: deny by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// `"log"`
    pub log: bool,
    /// `"tables:NAME"`; each names a defined table.
    pub tables: BTreeSet<Id>,
    /// `"reuse-instance"`: keep instances across messages (for a plug-in that asks).
    pub reuse_instance: bool,
}

impl Grants {
    /// The grants as the config writes them: `log`, `tables:NAME`..., `reuse-instance`.
    pub fn to_list(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.log {
            out.push("log".to_owned());
        }
        out.extend(self.tables.iter().map(|t| format!("tables:{t}")));
        if self.reuse_instance {
            out.push("reuse-instance".to_owned());
        }
        out
    }
}

/// `[plugins.NAME.limits]`. The defaults are `plexus_sandbox::Limits::default()`'s; this
/// crate does not depend on the sandbox, so a test in the CLI keeps them equal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// `memory`: largest linear memory. Default 64 MiB.
    pub memory_bytes: u64,
    /// `timeout`: wall-clock deadline per message. Default 1 s.
    pub timeout: Duration,
    /// `max_message_bytes`: largest the message may grow to. Default 16 MiB.
    pub max_message_bytes: u64,
    /// `log_lines`: log lines kept per message. Default 100.
    pub log_lines: u64,
    /// `log_bytes`: log bytes kept per message. Default 16 KiB.
    pub log_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 64 << 20,
            timeout: Duration::from_secs(1),
            max_message_bytes: 16 << 20,
            log_lines: 100,
            log_bytes: 16 << 10,
        }
    }
}

/// `[interfaces.NAME]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// `source`
    pub source: Inbound,
    /// `chain`: plug-ins run in order; may be empty.
    pub chain: Vec<Id>,
    /// `destinations`, in the order written; names unique within the interface.
    pub destinations: Vec<Destination>,
    /// `ack_mode`. Default `auto`.
    pub ack_mode: AckMode,
    /// `ordering`. Default `fifo`.
    pub ordering: Ordering,
    /// `order_by`: the field (an HL7 path, e.g. `PID-3-1`) whose value keeps messages in
    /// order when a destination has more than one connection: messages with the same
    /// value go out in arrival order, others may pass them. Read from the message as it
    /// arrived. Default none.
    pub order_by: Option<String>,
    /// `[interfaces.NAME.retry]`
    pub retry: Retry,
    /// `error_ack`. Default `permanent`.
    pub error_ack: ErrorAck,
    /// `charset`: what an empty MSH-18 means for this interface's messages. Default
    /// `ASCII` (read as UTF-8, which ASCII is a subset of).
    pub charset: Charset,
}

/// `charset`: the character set of messages that do not name one in MSH-18 (HL7 table
/// 0211 codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Charset {
    /// `"ASCII"`: read as UTF-8, which ASCII is a subset of.
    #[default]
    Ascii,
    /// `"8859/1"`: Latin-1.
    Latin1,
    /// `"8859/15"`: Latin-9.
    Latin9,
    /// `"UNICODE UTF-8"`.
    Utf8,
}

/// `source = { type = ... }`: where an interface's messages come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// `type = "mllp"`
    Mllp(MllpSource),
    /// `type = "http"`: POSTs to `path` on the `[http]` server.
    Http {
        /// `path`, e.g. `/ingest/scheduling`.
        path: String,
    },
    /// `type = "file"`: a drop folder.
    File(FileSource),
}

/// `source = { type = "mllp", ... }`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MllpSource {
    /// `listen`
    pub listen: SocketAddr,
    /// `max_frame`. Default 16 MiB.
    pub max_frame: u64,
    /// `max_connections`. Default 128.
    pub max_connections: u32,
    /// `idle_timeout`. Default 5 m.
    pub idle_timeout: Duration,
    /// `tls`
    pub tls: Option<ServerTls>,
}

/// `tls = { cert, key }`: PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    /// `cert`
    pub cert: PathBuf,
    /// `key`
    pub key: PathBuf,
}

/// `source = { type = "file", ... }`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSource {
    /// `dir`
    pub dir: PathBuf,
    /// `pattern`. Default `*.hl7`.
    pub pattern: String,
    /// `poll`. Default 1 s.
    pub poll: Duration,
}

/// The most `connections` a destination may have.
pub const MAX_DESTINATION_CONNECTIONS: u32 = 64;

/// `[[interfaces.NAME.destinations]]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// `name`
    pub name: Id,
    /// `type` and its keys.
    pub kind: DestinationKind,
    /// `connections` (mllp and http): how many messages may be on their way to this
    /// destination at once, each connection taking one at a time. Default 1.
    pub connections: u32,
}

/// `type = ...` of a destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DestinationKind {
    /// `type = "mllp"`
    Mllp {
        /// `connect`: `host:port`.
        connect: String,
        /// `ack_timeout`. Default 30 s.
        ack_timeout: Duration,
        /// `ne_wait`: how long a message whose MSH-15 is `NE` waits for an answer it
        /// should not get. Default 250 ms.
        ne_wait: Duration,
        /// `er_wait`: the same for `ER` (an error answer may come). Default 2 s.
        er_wait: Duration,
        /// `tls`
        tls: Option<ClientTls>,
    },
    /// `type = "http"`
    Http {
        /// `url`: `http://` or `https://`.
        url: String,
        /// `tls`, for an `https://` URL: the CA to trust and the name to expect.
        /// Default: the system's CA bundle and the URL's host.
        tls: Option<ClientTls>,
    },
    /// `type = "file"`: one file per message, written then renamed into place.
    File {
        /// `dir`
        dir: PathBuf,
    },
}

/// `tls = { ca, server_name }` on an MLLP or HTTP destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTls {
    /// `ca`: PEM file of trusted roots.
    pub ca: PathBuf,
    /// `server_name`. Default: the host of `connect`.
    pub server_name: Option<String>,
}

/// `ack_mode`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckMode {
    /// `"auto"`: follow MSH-15/MSH-16.
    Auto,
    /// `"original"`: original-mode AA/AE/AR.
    Original,
    /// `"enhanced"`: enhanced-mode CA/CE/CR.
    Enhanced,
}

/// `ordering`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ordering {
    /// `"fifo"`: per destination, in arrival order.
    Fifo,
    /// `"unordered"`
    Unordered,
}

/// `[interfaces.NAME.retry]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retry {
    /// `max_attempts`. Default 10.
    pub max_attempts: u32,
    /// `initial_backoff`. Default 1 s.
    pub initial_backoff: Duration,
    /// `max_backoff`. Default 5 m.
    pub max_backoff: Duration,
    /// `jitter`. Default true.
    pub jitter: bool,
    /// `on_head_failure`. Default `block`.
    pub on_head_failure: HeadFailure,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            max_attempts: 10,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            jitter: true,
            on_head_failure: HeadFailure::Block,
        }
    }
}

/// `on_head_failure`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadFailure {
    /// `"block"`: later messages wait behind the failing one.
    Block,
    /// `"skip"`: the failing one goes to the error queue and the rest flow.
    Skip,
}

/// `error_ack`: what an AE/CE from a destination means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorAck {
    /// `"permanent"`: to the error queue at once.
    Permanent,
    /// `"retry"`: retried like a transport error.
    Retry,
}
