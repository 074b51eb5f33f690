//! Raw -> validated, in one place. Every check records its error and carries on with a
//! default, so one run reports every problem in the file, not just the first.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use crate::diag::{Sink, choices_help};
use crate::raw::{self, SizeValue};
use crate::types::*;
use crate::units::{DURATION_HELP, SIZE_HELP, parse_duration, parse_size};

const ID_HELP: &str =
    "names use a-z, 0-9 and '-', start with a letter or digit, and have at most 64 characters";
const TYPES: [&str; 3] = ["mllp", "http", "file"];

/// Validates `raw`; the result is meaningful only if `sink` holds no errors afterwards.
pub(crate) fn validate(raw: raw::Config, sink: &mut Sink<'_>, base: &Path) -> Config {
    let mut cx = Cx {
        sink,
        base,
        listeners: Vec::new(),
        http_paths: BTreeMap::new(),
    };
    let engine = Engine {
        data_dir: raw
            .engine
            .data_dir
            .as_ref()
            .map_or_else(|| base.join("plexus-data"), |d| cx.path(d)),
        site: raw
            .engine
            .site
            .as_ref()
            .map(|s| s.get_ref().trim().to_owned())
            .unwrap_or_default(),
    };
    let http = Http {
        listen: cx.listen(raw.http.listen.as_ref(), "[http] listen", "127.0.0.1:8480"),
        tls: raw.http.tls.as_ref().map(|t| cx.server_tls(t.get_ref())),
    };
    let journal = cx.journal(&raw.journal);
    let tables = cx.tables(&raw.tables);
    let plugins = cx.plugins(&raw.plugins, &raw.tables);
    let interfaces = cx.interfaces(&raw.interfaces, &raw.plugins);
    let admin = cx.admin(&raw.admin);
    Config {
        engine,
        http,
        journal,
        tables,
        plugins,
        interfaces,
        admin,
    }
}

struct Cx<'s, 'a> {
    sink: &'s mut Sink<'a>,
    base: &'s Path,
    /// Every listen address so far, with who owns it, to catch a port used twice.
    listeners: Vec<(SocketAddr, String)>,
    /// HTTP source paths so far, with their interface.
    http_paths: BTreeMap<String, String>,
}

impl Cx<'_, '_> {
    fn error(&mut self, span: Option<Range<usize>>, message: String, help: Option<String>) {
        self.sink.error(span, message, help);
    }

    /// `tls = { cert, key }` on an MLLP source or the HTTP server.
    fn server_tls(&mut self, t: &raw::ServerTls) -> ServerTls {
        ServerTls {
            cert: self.path(&t.cert),
            key: self.path(&t.key),
        }
    }

    /// `tls = { ca, server_name }` on an MLLP or HTTP destination.
    fn client_tls(&mut self, t: &raw::ClientTls) -> ClientTls {
        ClientTls {
            ca: self.path(&t.ca),
            server_name: t.server_name.as_ref().map(|s| s.get_ref().clone()),
        }
    }

    fn admin(&mut self, raw: &raw::Admin) -> Admin {
        let mut tokens: Vec<AdminToken> = Vec::new();
        for token in &raw.tokens {
            let t = token.get_ref();
            let Some(name) = self.id(&t.name, "token") else {
                continue;
            };
            if tokens.iter().any(|other| other.name == name) {
                self.error(
                    Some(t.name.span()),
                    format!("token `{name}` is defined twice"),
                    Some("give each token its own name".to_owned()),
                );
                continue;
            }
            let role = self.choice(Some(&t.role), "role", &Role::ALL, Role::Viewer);
            let digest = t.sha256.get_ref().to_ascii_lowercase();
            if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
                self.error(
                    Some(t.sha256.span()),
                    format!("token `{name}`: `sha256` must be 64 hex digits (the token's digest)"),
                    Some(
                        "`plexus token new NAME --role ROLE` prints a token and this line"
                            .to_owned(),
                    ),
                );
                continue;
            }
            if tokens.iter().any(|other| other.sha256 == digest) {
                self.error(
                    Some(t.sha256.span()),
                    format!("token `{name}` has the same digest as another token"),
                    Some("make a new token for each person or system".to_owned()),
                );
                continue;
            }
            tokens.push(AdminToken {
                name,
                role,
                sha256: digest,
            });
        }
        Admin { tokens }
    }

    fn journal(&mut self, raw: &raw::Journal) -> Journal {
        let backend = self.choice(
            raw.backend.as_ref(),
            "backend",
            &[("sqlite", JournalBackend::Sqlite)],
            JournalBackend::Sqlite,
        );
        Journal {
            backend,
            duplicate_window: self.duration(
                raw.duplicate_window.as_ref(),
                "duplicate_window",
                Duration::from_secs(24 * 3600),
            ),
            retention: self.duration(
                raw.retention.as_ref(),
                "retention",
                Duration::from_secs(30 * 24 * 3600),
            ),
        }
    }

    fn tables(&mut self, raw: &BTreeMap<raw::Name, raw::Table>) -> BTreeMap<Id, Table> {
        let mut out = BTreeMap::new();
        for (name, table) in raw {
            let file = self.file(&table.file);
            if let Some(id) = self.id(name, "table") {
                out.insert(id, Table { file });
            }
        }
        out
    }

    fn plugins(
        &mut self,
        raw: &BTreeMap<raw::Name, raw::Plugin>,
        tables: &BTreeMap<raw::Name, raw::Table>,
    ) -> BTreeMap<Id, Plugin> {
        let mut out = BTreeMap::new();
        for (name, plugin) in raw {
            let file = self.file(&plugin.file);
            let sha256 = plugin.sha256.as_ref().and_then(|s| self.sha256(s));
            let cases = plugin.cases.as_ref().map(|c| self.path(c));
            let grants = self.grants(&plugin.grants, tables);
            let limits = self.limits(&plugin.limits);
            if let Some(id) = self.id(name, "plug-in") {
                out.insert(
                    id,
                    Plugin {
                        file,
                        sha256,
                        cases,
                        grants,
                        limits,
                    },
                );
            }
        }
        out
    }

    fn sha256(&mut self, pin: &Spanned<String>) -> Option<String> {
        let digest = pin.get_ref().trim();
        if digest.len() == 64 && digest.chars().all(|c| c.is_ascii_hexdigit()) {
            return Some(digest.to_ascii_lowercase());
        }
        let found = match digest.chars().find(|c| !c.is_ascii_hexdigit()) {
            Some(c) => format!("`{c}` is not a hex digit"),
            None => format!("found {} digits", digest.len()),
        };
        self.error(
            Some(pin.span()),
            format!("`sha256` must be 64 hex digits; {found}"),
            Some("paste the output of `sha256sum FILE`, or remove the pin".to_owned()),
        );
        None
    }

    fn grants(
        &mut self,
        raw: &[Spanned<String>],
        tables: &BTreeMap<raw::Name, raw::Table>,
    ) -> Grants {
        let mut out = Grants::default();
        let table_names = || tables.keys().map(|t| t.get_ref().as_str());
        for grant in raw {
            match grant.get_ref().as_str() {
                "log" => out.log = true,
                "reuse-instance" => out.reuse_instance = true,
                g if g.starts_with("tables:") => {
                    let table = &g["tables:".len()..];
                    if !tables.keys().any(|t| t.get_ref() == table) {
                        let help = choices_help("defined tables", table, table_names());
                        self.error(
                            Some(grant.span()),
                            format!("grant `{g}` names table `{table}`, which is not defined"),
                            Some(help),
                        );
                    } else if let Some(id) = Id::new(table) {
                        out.tables.insert(id);
                    }
                }
                other => {
                    let known: Vec<String> = ["log".to_owned(), "reuse-instance".to_owned()]
                        .into_iter()
                        .chain(table_names().map(|t| format!("tables:{t}")))
                        .collect();
                    let help = choices_help("grants", other, known.iter().map(String::as_str));
                    self.error(
                        Some(grant.span()),
                        format!("unknown grant `{other}`"),
                        Some(help),
                    );
                }
            }
        }
        out
    }

    fn limits(&mut self, raw: &raw::Limits) -> Limits {
        const MAX_PLUGIN_MEMORY: u64 = 4 << 30;
        let d = Limits::default();
        let memory_bytes = self.size(raw.memory.as_ref(), "memory", d.memory_bytes);
        if memory_bytes > MAX_PLUGIN_MEMORY {
            self.error(
                raw.memory.as_ref().map(Spanned::span),
                "`memory`: a plug-in's memory is at most 4GiB (WebAssembly's 32-bit limit)"
                    .to_owned(),
                Some("a mapping plug-in needs a few MiB; the default is 64MiB".to_owned()),
            );
        }
        Limits {
            memory_bytes: memory_bytes.min(MAX_PLUGIN_MEMORY),
            timeout: self.duration(raw.timeout.as_ref(), "timeout", d.timeout),
            max_message_bytes: self.size(
                raw.max_message_bytes.as_ref(),
                "max_message_bytes",
                d.max_message_bytes,
            ),
            log_lines: self.count(raw.log_lines.as_ref(), "log_lines", d.log_lines, 0),
            log_bytes: self.size(raw.log_bytes.as_ref(), "log_bytes", d.log_bytes),
        }
    }

    fn interfaces(
        &mut self,
        raw: &BTreeMap<raw::Name, raw::Interface>,
        plugins: &BTreeMap<raw::Name, raw::Plugin>,
    ) -> BTreeMap<Id, Interface> {
        if raw.is_empty() {
            self.error(
                None,
                "no interfaces are defined".to_owned(),
                Some(
                    "add an `[interfaces.NAME]` table with a `source`; see docs/config.md"
                        .to_owned(),
                ),
            );
        }
        let mut out = BTreeMap::new();
        for (name, iface) in raw {
            let id = self.id(name, "interface");
            let source = self.inbound(&iface.source, name.get_ref());
            let chain = self.chain(&iface.chain, plugins);
            let destinations = self.destinations(&iface.destinations, name.get_ref());
            let interface = Interface {
                source,
                chain,
                destinations,
                ack_mode: self.choice(
                    iface.ack_mode.as_ref(),
                    "ack_mode",
                    &[
                        ("auto", AckMode::Auto),
                        ("original", AckMode::Original),
                        ("enhanced", AckMode::Enhanced),
                    ],
                    AckMode::Auto,
                ),
                ordering: self.choice(
                    iface.ordering.as_ref(),
                    "ordering",
                    &[("fifo", Ordering::Fifo), ("unordered", Ordering::Unordered)],
                    Ordering::Fifo,
                ),
                retry: self.retry(&iface.retry),
                error_ack: self.choice(
                    iface.error_ack.as_ref(),
                    "error_ack",
                    &[
                        ("permanent", ErrorAck::Permanent),
                        ("retry", ErrorAck::Retry),
                    ],
                    ErrorAck::Permanent,
                ),
                charset: self.choice(
                    iface.charset.as_ref(),
                    "charset",
                    &[
                        ("ASCII", Charset::Ascii),
                        ("8859/1", Charset::Latin1),
                        ("8859/15", Charset::Latin9),
                        ("UNICODE UTF-8", Charset::Utf8),
                    ],
                    Charset::Ascii,
                ),
                order_by: iface.order_by.as_ref().and_then(|p| self.hl7_path(p)),
            };
            self.ordering_fits_connections(iface, &interface, name.get_ref());
            if let Some(id) = id {
                out.insert(id, interface);
            }
        }
        out
    }

    fn chain(&mut self, raw: &[raw::Name], plugins: &BTreeMap<raw::Name, raw::Plugin>) -> Vec<Id> {
        let mut out = Vec::new();
        for entry in raw {
            let name = entry.get_ref();
            if !plugins.keys().any(|p| p.get_ref() == name) {
                let help = choices_help(
                    "defined plug-ins",
                    name,
                    plugins.keys().map(|p| p.get_ref().as_str()),
                );
                self.error(
                    Some(entry.span()),
                    format!("chain names plug-in `{name}`, which is not defined"),
                    Some(help),
                );
            } else if let Some(id) = Id::new(name) {
                out.push(id);
            }
        }
        out
    }

    fn inbound(&mut self, raw: &Spanned<raw::Source>, interface: &str) -> Inbound {
        let src = raw.get_ref();
        let kind = src.kind.get_ref().as_str();
        let keys: [(&str, Option<Range<usize>>); 9] = [
            ("listen", src.listen.as_ref().map(Spanned::span)),
            ("max_frame", src.max_frame.as_ref().map(Spanned::span)),
            (
                "max_connections",
                src.max_connections.as_ref().map(Spanned::span),
            ),
            ("idle_timeout", src.idle_timeout.as_ref().map(Spanned::span)),
            ("tls", src.tls.as_ref().map(Spanned::span)),
            ("path", src.path.as_ref().map(Spanned::span)),
            ("dir", src.dir.as_ref().map(Spanned::span)),
            ("pattern", src.pattern.as_ref().map(Spanned::span)),
            ("poll", src.poll.as_ref().map(Spanned::span)),
        ];
        let valid: &[&str] = match kind {
            "mllp" => &[
                "listen",
                "max_frame",
                "max_connections",
                "idle_timeout",
                "tls",
            ],
            "http" => &["path"],
            "file" => &["dir", "pattern", "poll"],
            other => {
                let help = choices_help("source types", other, TYPES);
                self.error(
                    Some(src.kind.span()),
                    format!("unknown source type `{other}`"),
                    Some(help),
                );
                return Inbound::Http {
                    path: String::new(),
                };
            }
        };
        self.only_keys(&keys, valid, &format!("{} {kind} source", article(kind)));
        match kind {
            "mllp" => {
                let listen = match &src.listen {
                    Some(l) => self.listen(Some(l), &format!("interface `{interface}`"), ""),
                    None => {
                        self.missing(raw.span(), "an mllp source", "listen = \"127.0.0.1:2575\"");
                        fallback_addr()
                    }
                };
                Inbound::Mllp(MllpSource {
                    listen,
                    max_frame: self.size(src.max_frame.as_ref(), "max_frame", 16 << 20),
                    max_connections: u32::try_from(self.count(
                        src.max_connections.as_ref(),
                        "max_connections",
                        128,
                        1,
                    ))
                    .unwrap_or(u32::MAX),
                    idle_timeout: self.duration(
                        src.idle_timeout.as_ref(),
                        "idle_timeout",
                        Duration::from_secs(300),
                    ),
                    tls: src.tls.as_ref().map(|t| self.server_tls(t.get_ref())),
                })
            }
            "http" => {
                let path = match &src.path {
                    Some(p) => self.http_path(p, interface),
                    None => {
                        self.missing(raw.span(), "an http source", "path = \"/ingest/NAME\"");
                        String::new()
                    }
                };
                Inbound::Http { path }
            }
            _ => {
                let dir = match &src.dir {
                    Some(d) => self.path(d),
                    None => {
                        self.missing(raw.span(), "a file source", "dir = \"inbox\"");
                        PathBuf::new()
                    }
                };
                Inbound::File(FileSource {
                    dir,
                    pattern: src
                        .pattern
                        .as_ref()
                        .map_or_else(|| "*.hl7".to_owned(), |p| p.get_ref().clone()),
                    poll: self.duration(src.poll.as_ref(), "poll", Duration::from_secs(1)),
                })
            }
        }
    }

    fn http_path(&mut self, path: &Spanned<String>, interface: &str) -> String {
        let p = path.get_ref();
        if !p.starts_with('/') {
            self.error(
                Some(path.span()),
                format!("http source path `{p}` does not start with `/`"),
                Some(format!("write it as `/{p}`")),
            );
        } else if p.len() > 1
            && !p[1..].split('/').all(|part| {
                !part.is_empty()
                    && part
                        .bytes()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
            })
        {
            self.error(
                Some(path.span()),
                format!("http source path `{p}` is not a plain path"),
                Some(
                    "use letters, digits, `-`, `_` and `.` between single slashes, e.g. `/ingest/scheduling`"
                        .to_owned(),
                ),
            );
        } else if ["/healthz", "/readyz", "/metrics", "/admin"]
            .iter()
            .any(|taken| p == taken || p.starts_with(&format!("{taken}/")))
            || p == "/"
        {
            self.error(
                Some(path.span()),
                format!("http source path `{p}` is the engine's own"),
                Some(
                    "`/`, `/healthz`, `/readyz`, `/metrics` and `/admin/...` are taken; use e.g. `/ingest/NAME`"
                        .to_owned(),
                ),
            );
        } else if let Some(owner) = self.http_paths.get(p) {
            let owner = owner.clone();
            self.error(
                Some(path.span()),
                format!("http source path `{p}` is already used by interface `{owner}`"),
                Some("give each http source its own path".to_owned()),
            );
        } else {
            self.http_paths.insert(p.clone(), interface.to_owned());
        }
        p.clone()
    }

    fn destinations(
        &mut self,
        raw: &[Spanned<raw::Destination>],
        interface: &str,
    ) -> Vec<Destination> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for dest in raw {
            let name = self.id(&dest.get_ref().name, "destination");
            let kind = self.destination(dest);
            let raw_name = dest.get_ref().name.get_ref();
            if !seen.insert(raw_name.clone()) {
                self.error(
                    Some(dest.get_ref().name.span()),
                    format!("destination `{raw_name}` is defined twice in interface `{interface}`"),
                    Some("give each destination of an interface its own name".to_owned()),
                );
            }
            let connections = match (&kind, &dest.get_ref().connections) {
                // Reported by the key check; a file destination writes one at a time.
                (Some(DestinationKind::File { .. }), _) | (_, None) => 1,
                (_, Some(raw)) => match u32::try_from(*raw.get_ref()) {
                    Ok(n) if (1..=MAX_DESTINATION_CONNECTIONS).contains(&n) => n,
                    _ => {
                        self.error(
                            Some(raw.span()),
                            format!(
                                "`connections` must be between 1 and {MAX_DESTINATION_CONNECTIONS}, not {}",
                                raw.get_ref()
                            ),
                            None,
                        );
                        1
                    }
                },
            };
            if let (Some(name), Some(kind)) = (name, kind) {
                out.push(Destination {
                    name,
                    kind,
                    connections,
                });
            }
        }
        out
    }

    fn destination(&mut self, raw: &Spanned<raw::Destination>) -> Option<DestinationKind> {
        let d = raw.get_ref();
        let kind = d.kind.get_ref().as_str();
        let keys: [(&str, Option<Range<usize>>); 8] = [
            ("connect", d.connect.as_ref().map(Spanned::span)),
            ("ack_timeout", d.ack_timeout.as_ref().map(Spanned::span)),
            ("ne_wait", d.ne_wait.as_ref().map(Spanned::span)),
            ("er_wait", d.er_wait.as_ref().map(Spanned::span)),
            ("tls", d.tls.as_ref().map(Spanned::span)),
            ("url", d.url.as_ref().map(Spanned::span)),
            ("dir", d.dir.as_ref().map(Spanned::span)),
            ("connections", d.connections.as_ref().map(Spanned::span)),
        ];
        let valid: &[&str] = match kind {
            "mllp" => &[
                "connect",
                "ack_timeout",
                "ne_wait",
                "er_wait",
                "tls",
                "connections",
            ],
            "http" => &["url", "tls", "connections"],
            "file" => &["dir"],
            other => {
                let help = choices_help("destination types", other, TYPES);
                self.error(
                    Some(d.kind.span()),
                    format!("unknown destination type `{other}`"),
                    Some(help),
                );
                return None;
            }
        };
        self.only_keys(
            &keys,
            valid,
            &format!("{} {kind} destination", article(kind)),
        );
        match kind {
            "mllp" => {
                let Some(connect) = &d.connect else {
                    self.missing(raw.span(), "an mllp destination", "connect = \"host:port\"");
                    return None;
                };
                self.host_port(connect);
                Some(DestinationKind::Mllp {
                    connect: connect.get_ref().clone(),
                    ack_timeout: self.duration(
                        d.ack_timeout.as_ref(),
                        "ack_timeout",
                        Duration::from_secs(30),
                    ),
                    ne_wait: self.duration(
                        d.ne_wait.as_ref(),
                        "ne_wait",
                        Duration::from_millis(250),
                    ),
                    er_wait: self.duration(d.er_wait.as_ref(), "er_wait", Duration::from_secs(2)),
                    tls: d.tls.as_ref().map(|t| self.client_tls(t.get_ref())),
                })
            }
            "http" => {
                let Some(url) = &d.url else {
                    self.missing(
                        raw.span(),
                        "an http destination",
                        "url = \"https://host/path\"",
                    );
                    return None;
                };
                let u = url.get_ref();
                if !(u.starts_with("http://") || u.starts_with("https://")) {
                    self.error(
                        Some(url.span()),
                        format!("`{u}` is not an http:// or https:// URL"),
                        None,
                    );
                }
                if let Some(tls) = d.tls.as_ref().filter(|_| u.starts_with("http://")) {
                    self.error(
                        Some(tls.span()),
                        format!("`tls` is for https:// URLs; `{u}` is plain HTTP"),
                        Some(format!(
                            "use `url = \"https://{}\"`",
                            u.trim_start_matches("http://")
                        )),
                    );
                }
                Some(DestinationKind::Http {
                    url: u.clone(),
                    tls: d.tls.as_ref().map(|t| self.client_tls(t.get_ref())),
                })
            }
            _ => {
                let Some(dir) = &d.dir else {
                    self.missing(raw.span(), "a file destination", "dir = \"outbox\"");
                    return None;
                };
                Some(DestinationKind::File {
                    dir: self.path(dir),
                })
            }
        }
    }

    fn host_port(&mut self, connect: &Spanned<String>) {
        let c = connect.get_ref();
        let ok = c.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !ok {
            self.error(
                Some(connect.span()),
                format!("`{c}` is not a host:port address"),
                Some("write it like \"127.0.0.1:2576\" or \"emr.local:2575\"".to_owned()),
            );
        }
    }

    fn retry(&mut self, raw: &raw::Retry) -> Retry {
        let d = Retry::default();
        let retry = Retry {
            max_attempts: u32::try_from(self.count(
                raw.max_attempts.as_ref(),
                "max_attempts",
                d.max_attempts.into(),
                1,
            ))
            .unwrap_or(u32::MAX),
            initial_backoff: self.duration(
                raw.initial_backoff.as_ref(),
                "initial_backoff",
                d.initial_backoff,
            ),
            max_backoff: self.duration(raw.max_backoff.as_ref(), "max_backoff", d.max_backoff),
            jitter: raw.jitter.unwrap_or(d.jitter),
            on_head_failure: self.choice(
                raw.on_head_failure.as_ref(),
                "on_head_failure",
                &[("block", HeadFailure::Block), ("skip", HeadFailure::Skip)],
                d.on_head_failure,
            ),
        };
        if retry.max_backoff < retry.initial_backoff
            && let Some(max) = &raw.max_backoff
        {
            self.error(
                Some(max.span()),
                "`max_backoff` is shorter than `initial_backoff`".to_owned(),
                Some("raise `max_backoff` or lower `initial_backoff`".to_owned()),
            );
        }
        retry
    }

    /// Reports keys that belong to another `type` of the same table.
    fn only_keys(&mut self, keys: &[(&str, Option<Range<usize>>)], valid: &[&str], what: &str) {
        for (key, span) in keys {
            if let Some(span) = span
                && !valid.contains(key)
            {
                let list: Vec<&str> = ["type"].iter().chain(valid).copied().collect();
                self.error(
                    Some(span.clone()),
                    format!("`{key}` does not apply to {what}"),
                    Some(format!("keys of {what}: {}", list.join(", "))),
                );
            }
        }
    }

    fn missing(&mut self, span: Range<usize>, what: &str, example: &str) {
        let key = example.split(' ').next().unwrap_or(example);
        self.error(
            Some(span),
            format!("{what} needs `{key}`"),
            Some(format!("add `{example}`")),
        );
    }

    fn id(&mut self, name: &Spanned<String>, what: &str) -> Option<Id> {
        let id = Id::new(name.get_ref());
        if id.is_none() {
            self.error(
                Some(name.span()),
                format!("`{}` is not a valid {what} name", name.get_ref()),
                Some(ID_HELP.to_owned()),
            );
        }
        id
    }

    fn path(&mut self, path: &Spanned<String>) -> PathBuf {
        if path.get_ref().trim().is_empty() {
            self.error(Some(path.span()), "the path is empty".to_owned(), None);
        }
        self.base.join(path.get_ref())
    }

    fn file(&mut self, path: &Spanned<String>) -> crate::Source {
        match path.get_ref().strip_prefix("builtin:") {
            Some("") => {
                self.error(
                    Some(path.span()),
                    "`builtin:` needs a name".to_owned(),
                    Some("write `builtin:NAME`, or a path to a file".to_owned()),
                );
                crate::Source::Builtin(String::new())
            }
            Some(name) => crate::Source::Builtin(name.to_owned()),
            None => crate::Source::Path(self.path(path)),
        }
    }

    /// A listen address; `default` applies when `raw` is absent. Records it so a second
    /// listener on the same port is reported.
    fn listen(&mut self, raw: Option<&Spanned<String>>, owner: &str, default: &str) -> SocketAddr {
        let (text, span) = match raw {
            Some(r) => (r.get_ref().as_str(), Some(r.span())),
            None => (default, None),
        };
        let Ok(addr) = text.parse::<SocketAddr>() else {
            self.error(
                span,
                format!("`{text}` is not a listen address"),
                Some(
                    "write an IP address and a port, like \"127.0.0.1:2575\" or \"0.0.0.0:2575\""
                        .to_owned(),
                ),
            );
            return fallback_addr();
        };
        // Port 0 asks the OS for a free port (tests, tools): never a clash.
        let clash = self.listeners.iter().find(|(other, _)| {
            addr.port() != 0
                && other.port() == addr.port()
                && (other.ip() == addr.ip()
                    || other.ip().is_unspecified()
                    || addr.ip().is_unspecified())
        });
        if let Some((other, who)) = clash {
            let message = if *other == addr {
                format!("`{addr}` is already used by {who}")
            } else {
                format!("`{addr}` overlaps `{other}`, used by {who}")
            };
            self.error(
                span,
                message,
                Some("give each listener its own port".to_owned()),
            );
        } else {
            self.listeners.push((addr, owner.to_owned()));
        }
        addr
    }

    fn duration(
        &mut self,
        raw: Option<&Spanned<String>>,
        key: &str,
        default: Duration,
    ) -> Duration {
        let Some(raw) = raw else { return default };
        parse_duration(raw.get_ref()).unwrap_or_else(|| {
            self.error(
                Some(raw.span()),
                format!("`{key}`: `{}` is not a duration", raw.get_ref()),
                Some(DURATION_HELP.to_owned()),
            );
            default
        })
    }

    fn size(&mut self, raw: Option<&Spanned<SizeValue>>, key: &str, default: u64) -> u64 {
        let Some(raw) = raw else { return default };
        let (parsed, shown) = match raw.get_ref() {
            SizeValue::Bytes(n) => (u64::try_from(*n).ok(), n.to_string()),
            SizeValue::Text(t) => (parse_size(t), t.clone()),
        };
        match parsed {
            Some(n) if n > 0 => n,
            Some(_) => {
                self.error(
                    Some(raw.span()),
                    format!("`{key}` must be more than zero (it is `{shown}`)"),
                    Some(format!(
                        "leave `{key}` out for its default, or give a size above zero"
                    )),
                );
                default
            }
            None => {
                self.error(
                    Some(raw.span()),
                    format!("`{key}`: `{shown}` is not a size"),
                    Some(SIZE_HELP.to_owned()),
                );
                default
            }
        }
    }

    /// An HL7 path such as `PID-3-1`.
    fn hl7_path(&mut self, raw: &Spanned<String>) -> Option<String> {
        let text = raw.get_ref().trim();
        match plexus_hl7::Path::parse(text) {
            Ok(path) => Some(path.to_string()),
            Err(err) => {
                self.error(
                    Some(raw.span()),
                    format!("`order_by` is not a field path: {err}"),
                    Some("write a path like `PID-3-1` (segment, field, component)".to_owned()),
                );
                None
            }
        }
    }

    /// Several connections to one destination send several messages at once, so a FIFO
    /// interface needs `order_by` to say what must stay in order; an unordered one has
    /// nothing to keep in order. Reads the raw destinations, so a destination that failed
    /// to parse is still named right (and a bad `order_by` is reported once, as itself).
    fn ordering_fits_connections(&mut self, raw: &raw::Interface, iface: &Interface, name: &str) {
        match iface.ordering {
            Ordering::Fifo if raw.order_by.is_none() => {
                for dest in &raw.destinations {
                    let d = dest.get_ref();
                    let Some(connections) = &d.connections else {
                        continue;
                    };
                    // A file destination's `connections` is reported as an unknown key.
                    // One out of range is reported as such.
                    let several = (2..=i64::from(MAX_DESTINATION_CONNECTIONS))
                        .contains(connections.get_ref());
                    if several && d.kind.get_ref() != "file" {
                        self.error(
                            Some(connections.span()),
                            format!(
                                "destination `{}` of interface `{name}` has `connections = {}`, which sends several messages at once and breaks arrival order",
                                d.name.get_ref(),
                                connections.get_ref()
                            ),
                            Some(format!(
                                "set `order_by` on interface `{name}` to keep the messages of each patient (or order, or visit) in order, e.g. `order_by = \"PID-3-1\"`; or set `ordering = \"unordered\"`; or remove `connections`"
                            )),
                        );
                    }
                }
            }
            Ordering::Unordered => {
                if let Some(order_by) = &raw.order_by {
                    self.error(
                        Some(order_by.span()),
                        format!(
                            "interface `{name}` has `ordering = \"unordered\"`, so `order_by` keeps nothing in order"
                        ),
                        Some(
                            "remove `order_by`, or remove `ordering = \"unordered\"` to keep order by that field"
                                .to_owned(),
                        ),
                    );
                }
            }
            Ordering::Fifo => {}
        }
    }

    fn count(&mut self, raw: Option<&Spanned<i64>>, key: &str, default: u64, min: u64) -> u64 {
        let Some(raw) = raw else { return default };
        match u64::try_from(*raw.get_ref()) {
            Ok(n) if n >= min && n <= u64::from(u32::MAX) => n,
            _ => {
                self.error(
                    Some(raw.span()),
                    format!("`{key}` must be between {min} and {}", u32::MAX),
                    None,
                );
                default
            }
        }
    }

    fn choice<T: Copy>(
        &mut self,
        raw: Option<&Spanned<String>>,
        key: &str,
        choices: &[(&str, T)],
        default: T,
    ) -> T {
        let Some(raw) = raw else { return default };
        let text = raw.get_ref().as_str();
        if let Some((_, value)) = choices.iter().find(|(name, _)| *name == text) {
            return *value;
        }
        let help = choices_help("valid values", text, choices.iter().map(|(n, _)| *n));
        self.error(
            Some(raw.span()),
            format!("`{key}` cannot be `{text}`"),
            Some(help),
        );
        default
    }
}

fn fallback_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// "a file source", but "an mllp source" and "an http source" (as they are read aloud).
fn article(kind: &str) -> &'static str {
    if kind == "file" { "a" } else { "an" }
}
