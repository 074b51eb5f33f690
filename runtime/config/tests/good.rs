//! Configs that load, and what they load to.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use plexus_config::*;

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

fn ids(names: &[&str]) -> Vec<Id> {
    names.iter().map(|n| Id::new(n).expect("test id")).collect()
}

fn full() -> Config {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/good/full.toml");
    Config::load(&path).expect("full.toml loads")
}

#[test]
fn every_key_set() {
    let config = full();
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/good");

    assert_eq!(config.engine.data_dir, PathBuf::from("/var/lib/plexus"));
    assert_eq!(config.engine.site, "northside-clinic");
    assert_eq!(config.http.listen, addr("0.0.0.0:9000"));
    assert_eq!(
        config.journal,
        Journal {
            backend: JournalBackend::Sqlite,
            duplicate_window: Duration::from_secs(12 * 3600),
            retention: Duration::from_secs(90 * 86_400),
        }
    );

    assert_eq!(
        config.tables["visit-status"].file,
        Source::Path(base.join("tables/visit-status.csv"))
    );
    assert_eq!(
        config.tables["providers"].file,
        Source::Path("/srv/tables/providers.csv".into())
    );

    let vsm = &config.plugins["visit-status-map"];
    assert_eq!(
        vsm.file,
        Source::Path(base.join("plugins/visit-status-map.wasm"))
    );
    assert_eq!(
        vsm.sha256.as_deref(),
        Some("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08")
    );
    assert!(vsm.grants.log && vsm.grants.reuse_instance);
    assert_eq!(
        vsm.grants.tables.iter().cloned().collect::<Vec<_>>(),
        ids(&["visit-status"])
    );
    assert_eq!(
        vsm.limits,
        Limits {
            memory_bytes: 128 << 20,
            timeout: Duration::from_millis(250),
            max_message_bytes: 1 << 20,
            log_lines: 10,
            log_bytes: 4 << 10,
        }
    );
    let pim = &config.plugins["provider-id-map"];
    assert_eq!(pim.file, Source::Builtin("provider-id-map".into()));
    assert_eq!(pim.sha256, None);
    assert!(!pim.grants.log && !pim.grants.reuse_instance);
    assert_eq!(pim.limits, Limits::default());

    let sched = &config.interfaces["scheduling"];
    assert_eq!(
        sched.source,
        Inbound::Mllp(MllpSource {
            listen: addr("0.0.0.0:2575"),
            max_frame: 1 << 20,
            max_connections: 8,
            idle_timeout: Duration::from_secs(30),
            tls: Some(ServerTls {
                cert: base.join("tls/server.pem"),
                key: base.join("tls/server.key"),
            }),
        })
    );
    assert_eq!(sched.chain, ids(&["provider-id-map", "visit-status-map"]));
    assert_eq!(
        sched.destinations,
        vec![
            Destination {
                name: ids(&["emr"]).remove(0),
                kind: DestinationKind::Mllp {
                    connect: "emr.local:2575".into(),
                    ack_timeout: Duration::from_secs(10),
                    ne_wait: Duration::ZERO,
                    er_wait: Duration::from_secs(5),
                    tls: Some(ClientTls {
                        ca: base.join("tls/ca.pem"),
                        server_name: Some("emr.clinic.example".into()),
                    }),
                },
                connections: 4,
            },
            Destination {
                name: ids(&["portal"]).remove(0),
                kind: DestinationKind::Http {
                    url: "https://portal.example/hl7".into(),
                    tls: None,
                },
                connections: 1,
            },
            Destination {
                name: ids(&["archive"]).remove(0),
                kind: DestinationKind::File {
                    dir: base.join("archive")
                },
                connections: 1,
            },
        ]
    );
    assert_eq!(sched.ack_mode, AckMode::Enhanced);
    assert_eq!(sched.ordering, Ordering::Unordered);
    assert_eq!(sched.error_ack, ErrorAck::Retry);
    assert_eq!(sched.charset, Charset::Latin1);
    assert_eq!(
        sched.retry,
        Retry {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(3600),
            jitter: false,
            on_head_failure: HeadFailure::Skip,
        }
    );

    assert_eq!(
        config.interfaces["web"].source,
        Inbound::Http {
            path: "/ingest/web".into()
        }
    );
    assert_eq!(
        config.interfaces["drop"].source,
        Inbound::File(FileSource {
            dir: base.join("inbox"),
            pattern: "*.txt".into(),
            poll: Duration::from_secs(10),
        })
    );
    assert!(config.interfaces["drop"].chain.is_empty());
}

#[test]
fn order_by_is_a_canonical_path_and_allows_several_connections() {
    let config = Config::from_toml(
        "[interfaces.adt]\nsource = { type = \"mllp\", listen = \"127.0.0.1:2575\" }\n\
         order_by = \" PID.3.1 \"\n\
         destinations = [{ name = \"out\", type = \"mllp\", connect = \"127.0.0.1:2576\", connections = 8 }]\n",
        Path::new("site/plexus.toml"),
    )
    .expect("fifo with order_by and 8 connections loads");
    let adt = &config.interfaces["adt"];
    assert_eq!(adt.order_by.as_deref(), Some("PID-3-1"));
    assert_eq!(adt.destinations[0].connections, 8);
}

#[test]
fn defaults() {
    let config = Config::from_toml(
        "[interfaces.adt]\nsource = { type = \"mllp\", listen = \"127.0.0.1:2575\" }\n\
         destinations = [{ name = \"out\", type = \"mllp\", connect = \"127.0.0.1:2576\" }]\n",
        Path::new("site/plexus.toml"),
    )
    .expect("minimal config loads");
    assert_eq!(config.engine.data_dir, PathBuf::from("site/plexus-data"));
    assert_eq!(config.engine.site, "", "no site named: empty");
    assert_eq!(config.http.listen, addr("127.0.0.1:8480"));
    assert_eq!(config.journal.duplicate_window, Duration::from_secs(86_400));
    assert_eq!(config.journal.retention, Duration::from_secs(30 * 86_400));
    assert!(config.tables.is_empty() && config.plugins.is_empty());
    let adt = &config.interfaces["adt"];
    assert_eq!(
        adt.source,
        Inbound::Mllp(MllpSource {
            listen: addr("127.0.0.1:2575"),
            max_frame: 16 << 20,
            max_connections: 128,
            idle_timeout: Duration::from_secs(300),
            tls: None,
        })
    );
    assert_eq!(
        adt.destinations[0].kind,
        DestinationKind::Mllp {
            connect: "127.0.0.1:2576".into(),
            ack_timeout: Duration::from_secs(30),
            ne_wait: Duration::from_millis(250),
            er_wait: Duration::from_secs(2),
            tls: None,
        }
    );
    assert_eq!(adt.ack_mode, AckMode::Auto);
    assert_eq!(adt.ordering, Ordering::Fifo);
    assert_eq!(adt.order_by, None);
    assert_eq!(adt.destinations[0].connections, 1, "one message at a time");
    assert_eq!(adt.error_ack, ErrorAck::Permanent);
    assert_eq!(adt.charset, Charset::Ascii, "the default");
    assert_eq!(adt.retry, Retry::default());
    assert_eq!(adt.retry.max_attempts, 10);
    assert_eq!(adt.retry.initial_backoff, Duration::from_secs(1));
    assert_eq!(adt.retry.max_backoff, Duration::from_secs(300));
    assert!(adt.retry.jitter);
    assert_eq!(adt.retry.on_head_failure, HeadFailure::Block);

    let file = Config::from_toml(
        "[interfaces.drop]\nsource = { type = \"file\", dir = \"in\" }\n",
        Path::new("plexus.toml"),
    )
    .expect("file source loads");
    assert_eq!(
        file.interfaces["drop"].source,
        Inbound::File(FileSource {
            dir: "in".into(),
            pattern: "*.hl7".into(),
            poll: Duration::from_secs(1),
        })
    );
}

/// The limits defaults must stay those of `plexus_sandbox::Limits::default()`.
#[test]
fn limits_defaults_match_the_sandbox() {
    assert_eq!(
        Limits::default(),
        Limits {
            memory_bytes: 64 << 20,
            timeout: Duration::from_secs(1),
            max_message_bytes: 16 << 20,
            log_lines: 100,
            log_bytes: 16 << 10,
        }
    );
}

#[test]
fn demo() {
    let config = Config::demo();
    assert_eq!(config.engine.data_dir, PathBuf::from("plexus-data"));
    assert_eq!(config.http.listen, addr("127.0.0.1:8480"));
    let sched = &config.interfaces["scheduling"];
    let Inbound::Mllp(source) = &sched.source else {
        panic!("demo source is MLLP: {:?}", sched.source)
    };
    assert_eq!(source.listen, addr("127.0.0.1:2575"));
    assert_eq!(
        sched.chain,
        ids(&["demographics-normalize", "visit-status-map"])
    );
    assert!(sched.destinations.iter().any(|d| matches!(
        &d.kind,
        DestinationKind::File { dir } if dir.starts_with(&config.engine.data_dir)
    )));
    assert!(sched.destinations.iter().any(|d| matches!(
        &d.kind,
        DestinationKind::Mllp { connect, .. } if connect == "127.0.0.1:2576"
    )));
    assert_eq!(
        config.plugins["visit-status-map"].file,
        Source::Builtin("visit-status-map".into())
    );
    assert_eq!(
        config.plugins["demographics-normalize"].file,
        Source::Builtin("demographics-normalize".into())
    );
    assert_eq!(
        config.tables["visit-status"].file,
        Source::Builtin("visit-status.csv".into())
    );
    assert!(
        config.plugins["visit-status-map"]
            .grants
            .tables
            .contains("visit-status")
    );
}

/// The demo table's keys are folded the way `visit-status-map` folds values (trim,
/// collapse whitespace, lowercase), so these spellings all match.
#[test]
fn demo_table_covers_the_front_desk_words() {
    let keys: Vec<String> = DEMO_VISIT_STATUS_CSV
        .lines()
        .skip(1)
        .filter_map(|line| line.rsplit_once(','))
        .map(|(key, _)| key.trim_matches('"').to_owned())
        .collect();
    assert_eq!(DEMO_VISIT_STATUS_CSV.lines().next(), Some("key,value"));
    for word in [
        "Arrived",
        "Checked In",
        "Roomed",
        "Ready",
        "  CHECKED   in ",
    ] {
        let folded = word
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase();
        assert!(keys.contains(&folded), "{word:?} is not in the demo table");
    }
    // A sender that already sends HL7 table 0278 codes (the corpus's SIU^S16 sends `Dc`,
    // its SIU^S26 `Noshow`) passes: every code maps to itself.
    let table: std::collections::HashMap<String, &str> = DEMO_VISIT_STATUS_CSV
        .lines()
        .skip(1)
        .filter_map(|line| line.rsplit_once(','))
        .map(|(key, value)| (key.trim_matches('"').to_owned(), value))
        .collect();
    for code in [
        "Pending",
        "Waitlist",
        "Booked",
        "Started",
        "Complete",
        "Cancelled",
        "Dc",
        "Deleted",
        "Blocked",
        "Overbook",
        "Noshow",
    ] {
        assert_eq!(
            table.get(&code.to_lowercase()).copied(),
            Some(code),
            "{code} does not map to itself"
        );
    }
    assert_eq!(
        table.get("discontinued").copied(),
        Some("Dc"),
        "what `Dc` stands for"
    );
}

#[test]
fn load_reports_missing_file_and_resolves_against_its_folder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nope.toml");
    assert!(matches!(Config::load(&missing), Err(Error::Read { .. })));

    let path = dir.path().join("plexus.toml");
    std::fs::write(
        &path,
        "[interfaces.drop]\nsource = { type = \"file\", dir = \"in\" }\n",
    )
    .expect("write config");
    let config = Config::load(&path).expect("loads");
    assert_eq!(config.engine.data_dir, dir.path().join("plexus-data"));
    assert_eq!(
        config.interfaces["drop"].source,
        Inbound::File(FileSource {
            dir: dir.path().join("in"),
            pattern: "*.hl7".into(),
            poll: Duration::from_secs(1),
        })
    );

    let big = dir.path().join("big.toml");
    std::fs::write(&big, vec![b'#'; MAX_CONFIG_BYTES as usize + 1]).expect("write big");
    assert!(matches!(Config::load(&big), Err(Error::TooLarge { .. })));
}

#[test]
fn errors_are_structured_too() {
    let Err(Error::Invalid { diagnostics }) = Config::from_toml("", Path::new("plexus.toml"))
    else {
        panic!("an empty config is invalid")
    };
    assert_eq!(diagnostics.len(), 1);
    assert_eq!((diagnostics[0].line, diagnostics[0].column), (1, 1));
    assert_eq!(diagnostics[0].message, "no interfaces are defined");
}

#[test]
fn id_rule() {
    for good in ["a", "0", "visit-status-map", "a-", &"x".repeat(64)] {
        assert!(Id::new(good).is_some(), "{good}");
    }
    for bad in ["", "-a", "A", "a_b", "a.b", "é", &"x".repeat(65)] {
        assert!(Id::new(bad).is_none(), "{bad}");
    }
}

/// docs/config.md names every key that full.toml uses (and full.toml uses every key).
#[test]
fn docs_name_every_key() {
    let docs =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/config.md"))
            .expect("docs/config.md");
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/good/full.toml"))
            .expect("full.toml");
    let table: toml::Table = text.parse().expect("full.toml is TOML");
    let mut missing = Vec::new();
    walk(&table, &mut |key| {
        // As a key in a table row (`key`), inline (`key = `), or as a section heading.
        let forms = [
            format!("`{key}`"),
            format!("{key} = "),
            format!("[{key}"),
            format!(".{key}]"),
        ];
        if !forms.iter().any(|form| docs.contains(form.as_str())) {
            missing.push(key.to_owned());
        }
    });
    assert!(missing.is_empty(), "not in docs/config.md: {missing:?}");
}

/// Calls `f` with every key, skipping the user-chosen names under tables/plugins/interfaces.
fn walk(table: &toml::Table, f: &mut dyn FnMut(&str)) {
    for (key, value) in table {
        let named = matches!(key.as_str(), "tables" | "plugins" | "interfaces");
        f(key);
        match value {
            toml::Value::Table(t) if named => t.values().for_each(|v| {
                if let toml::Value::Table(inner) = v {
                    walk(inner, f);
                }
            }),
            toml::Value::Table(t) => walk(t, f),
            toml::Value::Array(items) => items.iter().for_each(|v| {
                if let toml::Value::Table(t) = v {
                    walk(t, f);
                }
            }),
            _ => {}
        }
    }
}
