//! The `plexus` binary as a person uses it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

fn plexus() -> Command {
    Command::new(env!("CARGO_BIN_EXE_plexus"))
}

/// Runs `cmd`, asserts it succeeded (showing its command line, stdout and stderr if not)
/// and returns its stdout.
fn stdout_of_success(cmd: &mut Command) -> String {
    let out = cmd.output().expect("runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

fn sample(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/corpus/hl7v2")
        .join(name)
}

#[test]
fn help_names_the_commands() {
    let out = plexus().arg("--help").output().expect("runs");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for word in ["run", "hl7", "HL7 v2"] {
        assert!(text.contains(word), "--help lacks {word}: {text}");
    }
    let out = plexus()
        .args(["hl7", "parse", "--help"])
        .output()
        .expect("runs");
    assert!(String::from_utf8_lossy(&out.stdout).contains("--path"));
}

#[test]
fn output_into_a_pipe_that_closes_early_ends_quietly() {
    // Big enough that the writes outlast the pipe's buffer after the reader has gone.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut msg = String::from("MSH|^~\\&|LAB|CLINIC|EMR|CLINIC|20260101||ORU^R01|PIPE1|P|2.5\r");
    msg.push_str("PID|1||P1^^^CLINIC^MR||TEST^PIPE\r");
    for i in 1..=4000 {
        msg.push_str(&format!("OBX|{i}|NM|GLU^Glucose||{i}|mg/dL\r"));
    }
    let file = dir.path().join("big.hl7");
    std::fs::write(&file, msg).expect("write");
    let mut child = plexus()
        .args(["hl7", "parse"])
        .arg(&file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawns");
    let mut first = [0u8; 16];
    std::io::Read::read_exact(child.stdout.as_mut().expect("stdout"), &mut first).expect("reads");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("waits");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_ne!(out.status.code(), Some(101), "a panic's exit status: {err}");
}

#[test]
fn parse_prints_a_decoded_tree() {
    let out = plexus()
        .args(["hl7", "parse"])
        .arg(sample("SIU-S12-01.hl7"))
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(tree["message_type"], "SIU");
    assert_eq!(tree["trigger_event"], "S12");
    let segments = tree["segments"].as_array().expect("segments");
    assert_eq!(segments[0]["segment"], "MSH");
    assert_eq!(segments[0]["fields"]["MSH-1"], "|");
    let pid = segments
        .iter()
        .find(|s| s["segment"] == "PID")
        .expect("PID");
    assert_eq!(
        pid["fields"]["PID-5"][0]["1"]["1"], "EVERYMAN",
        "repetitions are arrays, components objects"
    );
    assert_eq!(pid["fields"]["PID-5"][1]["3"], "stanley");
}

#[test]
fn parse_decodes_escapes_and_charsets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("latin1.hl7");
    std::fs::write(&file, b"MSH|^~\\&|A|B|C|D|20260101||ADT^A01|X1|P|2.5||||||8859/1\rPID|1||1||M\xdcLLER\\S\\X^ANN\r")
        .expect("write");
    let out = plexus()
        .args(["hl7", "parse"])
        .arg(&file)
        .args(["--path", "PID-5-1"])
        .output()
        .expect("runs");
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "MÜLLER^X\n");
    let out = plexus()
        .args(["hl7", "parse"])
        .arg(&file)
        .args(["--path", "PID-5", "--raw"])
        .output()
        .expect("runs");
    assert_eq!(
        out.stdout, b"M\xef\xbf\xbdLLER\\S\\X^ANN\n",
        "raw bytes, shown lossily"
    );
}

#[test]
fn parse_exit_codes() {
    let out = plexus()
        .args(["hl7", "parse"])
        .arg(sample("ADT-A01-01.hl7"))
        .args(["--path", "PID-99"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1), "absent value");
    assert!(out.stdout.is_empty());

    let mut child = plexus()
        .args(["hl7", "parse", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"MSH|^~\\&|A\rPID|1\r\x00garbage\r")
        .expect("write");
    let out = child.wait_with_output().expect("waits");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("segment 3") && err.contains("<stdin>"),
        "{err}"
    );
    assert!(!err.contains("garbage"), "no message content in errors");

    let out = plexus()
        .args(["hl7", "parse", "/nonexistent/x.hl7"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let out = plexus()
        .args(["hl7", "parse"])
        .arg(sample("ADT-A01-01.hl7"))
        .args(["--path", "PID-0"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("1-based"));
}

fn frame(payload: &[u8]) -> Vec<u8> {
    [&[0x0b][..], payload, &[0x1c, 0x0d]].concat()
}

fn read_frame(stream: &mut TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(&[0x1c, 0x0d]) {
        let n = stream.read(&mut byte).expect("read reply");
        assert_eq!(n, 1, "connection closed before the reply ended");
        buf.push(byte[0]);
    }
    buf[1..buf.len() - 2].to_vec()
}

/// The demo site with its ports moved to free ones and its data in `dir`.
fn demo_site(dir: &std::path::Path) -> PathBuf {
    let toml = plexus_config::DEMO_TOML
        .replace("127.0.0.1:2575", "127.0.0.1:0")
        .replace("127.0.0.1:8480", "127.0.0.1:0")
        .replace(
            "[interfaces.scheduling]\nsource = { type = \"mllp\", listen = \"127.0.0.1:0\" }",
            "[interfaces.scheduling]\nsource = { type = \"mllp\", listen = \"127.0.0.1:0\", max_frame = \"16KiB\" }",
        );
    assert!(
        toml.contains("max_frame"),
        "the demo's source line changed; update this test"
    );
    let path = dir.join("site.toml");
    std::fs::write(&path, toml).expect("write config");
    path
}

/// Stops an engine from `start_engine` with SIGTERM and waits for it to exit.
fn stop_engine(child: &mut std::process::Child) -> std::process::ExitStatus {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    child.wait().expect("exits")
}

/// Starts `plexus run --config FILE` and reads its banner: (child, MLLP address, HTTP address).
fn start_engine(config: &std::path::Path) -> (std::process::Child, String, String) {
    let mut child = plexus()
        .args(["run", "--log", "warn", "--config"])
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let (mut mllp, mut http) = (None, None);
    while mllp.is_none() || http.is_none() {
        let line = lines
            .next()
            .expect("the engine printed its banner")
            .expect("read banner");
        let addr = line.split_whitespace().find_map(|w| {
            w.trim_start_matches("http://")
                .strip_prefix("127.0.0.1:")
                .map(|p| format!("127.0.0.1:{}", p.trim_end_matches([';', ','])))
        });
        if line.contains("MLLP on") {
            mllp = addr;
        } else if line.contains("HTTP on") {
            http = addr;
        }
    }
    (child, mllp.expect("mllp"), http.expect("http"))
}

#[test]
fn run_serves_the_demo_site_acks_maps_and_naks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = demo_site(dir.path());
    let (mut child, addr, http) = start_engine(&config);
    let mut conn = TcpStream::connect(&addr).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");

    // Any valid message passes, even one without a status field.
    let msg = std::fs::read(sample("ADT-A01-01.hl7")).expect("sample");
    conn.write_all(&frame(&msg)).expect("send");
    let reply = read_frame(&mut conn);
    let ack = plexus_hl7::Message::parse(&reply).expect("ACK parses");
    assert_eq!(ack.get("MSA-1").expect("path").as_deref(), Some("AA"));
    assert_eq!(ack.get("MSA-2").expect("path").as_deref(), Some("MSG00001"));

    // A scheduling message: its local status is mapped through the demo table.
    let siu = b"MSH|^~\\&|SCHED|CLINIC|EHR|CLINIC|20260105083000||SIU^S12|SIU-1|P|2.5.1\r\
SCH|1^S|2^E||||NEW|||20|MIN|^^^202601050900||||||||||||||Roomed\r\
PID|1||MRN1^^^CLINIC^MR||testpatient^alpha||19800101|female\r";
    conn.write_all(&frame(siu)).expect("send");
    let ack = plexus_hl7::Message::parse_owned(read_frame(&mut conn)).expect("ACK parses");
    assert_eq!(ack.get("MSA-1").expect("path").as_deref(), Some("AA"));

    conn.write_all(&frame(
        b"MSH|^~\\&|LAB|H|EHR|H|2026||ORU^R01|BAD-1|P|2.5\rP\r",
    ))
    .expect("send");
    let nak = plexus_hl7::Message::parse_owned(read_frame(&mut conn)).expect("NAK parses");
    assert_eq!(nak.get("MSA-1").expect("path").as_deref(), Some("AR"));
    assert_eq!(nak.get("MSA-2").expect("path").as_deref(), Some("BAD-1"));
    assert!(
        nak.get("ERR-8")
            .expect("path")
            .expect("reason")
            .contains("segment 2")
    );

    let mut big = b"MSH|^~\\&|LAB|H|EHR|H|2026||ORU^R01|BIG-1|P|2.5\rNTE|1||".to_vec();
    big.resize(20_000, b'x');
    conn.write_all(&frame(&big)).expect("send");
    let nak = plexus_hl7::Message::parse_owned(read_frame(&mut conn)).expect("NAK parses");
    assert_eq!(nak.get("MSA-1").expect("path").as_deref(), Some("AR"));
    assert_eq!(nak.get("MSA-2").expect("path").as_deref(), Some("BIG-1"));
    assert_eq!(nak.get("ERR-3-1").expect("path").as_deref(), Some("104"));

    // The connection is still usable after an oversize frame.
    conn.write_all(&frame(&msg)).expect("send");
    let ack = plexus_hl7::Message::parse_owned(read_frame(&mut conn)).expect("ACK parses");
    assert_eq!(ack.get("MSA-1").expect("path").as_deref(), Some("AA"));

    // The archive destination gets the mapped SIU.
    let outbox = dir.path().join("plexus-data/outbox/scheduling");
    let mut mapped = None;
    for _ in 0..200 {
        mapped = std::fs::read_dir(&outbox).ok().and_then(|d| {
            d.filter_map(|e| e.ok())
                // Not a `.NAME.tmp` still being written.
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .map(|e| std::fs::read(e.path()).unwrap_or_default())
                .find(|b| b.windows(5).any(|w| w == b"SIU-1"))
        });
        if mapped.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mapped = plexus_hl7::Message::parse_owned(mapped.expect("SIU archived")).expect("parses");
    assert_eq!(
        mapped.get("SCH-25").expect("path").as_deref(),
        Some("Started")
    );
    assert_eq!(mapped.get("PID-8").expect("path").as_deref(), Some("F"));

    let mut health = TcpStream::connect(&http).expect("connect http");
    health
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut text = String::new();
    health.read_to_string(&mut text).expect("read");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");

    let status = stop_engine(&mut child);
    assert!(status.success(), "graceful stop on SIGTERM: {status}");

    // The operator's view: the unparseable and oversize messages are in the error queue.
    let out = plexus()
        .args(["errors", "list", "--config"])
        .arg(&config)
        .current_dir(dir.path())
        .output()
        .expect("runs");
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{list}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(list.contains("2 open"), "{list}");
    assert!(list.contains("parse"), "{list}");
    assert!(!list.contains("testpatient"), "no patient data in the list");
    assert!(list.contains("listed by kind: parse 2"), "{list}");
    // A cut list says so; a mistyped interface is an error, not an empty queue.
    let out = plexus()
        .args(["errors", "list", "--limit", "1", "--config"])
        .arg(&config)
        .output()
        .expect("runs");
    let cut = String::from_utf8_lossy(&out.stdout);
    assert!(cut.contains("the first 1 shown; more match"), "{cut}");
    let out = plexus()
        .args(["errors", "list", "--interface", "schedulin", "--config"])
        .arg(&config)
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no interface `schedulin`"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Resolve one with a note and look at another unmasked: both are audited.
    let out = plexus()
        .args(["errors", "list", "--json", "--config"])
        .arg(&config)
        .output()
        .expect("runs");
    let ids: Vec<i64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("json")["id"]
                .as_i64()
                .expect("id")
        })
        .collect();
    assert_eq!(ids.len(), 2);
    let resolve = plexus()
        .args([
            "errors",
            "resolve",
            &ids[0].to_string(),
            "--note",
            "sender fixed its feed",
            "--config",
        ])
        .arg(&config)
        .output()
        .expect("runs");
    assert!(
        resolve.status.success(),
        "{}",
        String::from_utf8_lossy(&resolve.stderr)
    );
    let show = plexus()
        .args([
            "errors",
            "show",
            &ids[1].to_string(),
            "--unmasked",
            "--config",
        ])
        .arg(&config)
        .output()
        .expect("runs");
    assert!(String::from_utf8_lossy(&show.stdout).contains("BIG-1"));
    let audit = plexus()
        .args(["audit", "list", "--config"])
        .arg(&config)
        .output()
        .expect("runs");
    let audit = String::from_utf8_lossy(&audit.stdout);
    assert!(
        audit.contains("resolve") && audit.contains("sender fixed its feed"),
        "{audit}"
    );
    assert!(audit.contains("unmasked-view"), "{audit}");
    let verify = plexus()
        .args(["audit", "verify", "--config"])
        .arg(&config)
        .output()
        .expect("runs");
    assert!(verify.status.success());
    assert!(String::from_utf8_lossy(&verify.stdout).contains("2 entries"));
}

/// A plug-in's failure detail quotes the value it could not map: `errors list` and
/// `errors show` leave it out, `errors show --unmasked` shows it.
#[test]
fn a_plug_ins_failure_detail_is_shown_only_unmasked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = demo_site(dir.path());
    let (mut child, addr, _) = start_engine(&config);
    let mut conn = TcpStream::connect(&addr).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let siu = b"MSH|^~\\&|SCHED|CLINIC|EHR|CLINIC|20260105083000||SIU^S12|SIU-9|P|2.5.1\r\
SCH|1^S|2^E||||NEW|||20|MIN|^^^202601050900||||||||||||||Teleported\r\
PID|1||MRN1^^^CLINIC^MR||testpatient^alpha||19800101|female\r";
    conn.write_all(&frame(siu)).expect("send");
    let ack = plexus_hl7::Message::parse_owned(read_frame(&mut conn)).expect("ACK parses");
    assert_eq!(ack.get("MSA-1").expect("path").as_deref(), Some("AE"));
    assert!(stop_engine(&mut child).success());

    let errors = |args: &[&str]| {
        stdout_of_success(
            plexus()
                .arg("errors")
                .args(args)
                .arg("--config")
                .arg(&config),
        )
    };
    let list = errors(&["list", "--json"]);
    let entry: serde_json::Value = serde_json::from_str(list.trim()).expect("one entry");
    let reason = entry["reason"].as_str().expect("reason");
    assert!(
        reason.starts_with("plug-in visit-status-map (")
            && reason.ends_with(") failed the message: missing-mapping at SCH-25-1"),
        "names the plug-in, its version, the kind and the path: {reason}"
    );
    let id = entry["id"].to_string();
    for args in [&["list"][..], &["show", &id], &["show", &id, "--json"]] {
        let text = errors(args);
        assert!(
            text.contains("missing-mapping at SCH-25-1"),
            "{args:?}: {text}"
        );
        assert!(
            !text.contains("Tel") && !text.contains("value `"),
            "no field value in `errors {}`: {text}",
            args.join(" ")
        );
    }
    let unmasked = errors(&["show", &id, "--unmasked"]);
    assert!(
        unmasked.contains("missing-mapping at SCH-25-1: SCH-25-1 value `Teleported` has no entry"),
        "{unmasked}"
    );
}

#[test]
fn errors_list_group_shows_each_problem_once_with_its_ids() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = demo_site(dir.path());
    let (mut child, addr, _) = start_engine(&config);
    let mut conn = TcpStream::connect(&addr).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let siu = |id: &str, status: &str| {
        format!(
            "MSH|^~\\&|SCHED|CLINIC|EHR|CLINIC|20260105083000||SIU^S12|{id}|P|2.5.1\r\
             SCH|1^S|2^E||||NEW|||20|MIN|^^^202601050900||||||||||||||{status}\r\
             PID|1||MRN1^^^CLINIC^MR||testpatient^alpha||19800101|F\r"
        )
    };
    // Three statuses the table lacks (one problem), and a message without MSH-10.
    for (id, status, code) in [
        ("G-1", "Teleported", "AE"),
        ("G-2", "Beamed Up", "AE"),
        ("G-3", "Teleported", "AE"),
        ("", "Arrived", "AR"),
    ] {
        conn.write_all(&frame(siu(id, status).as_bytes()))
            .expect("send");
        let ack = plexus_hl7::Message::parse_owned(read_frame(&mut conn)).expect("ACK parses");
        assert_eq!(
            ack.get("MSA-1").expect("path").as_deref(),
            Some(code),
            "{id}"
        );
    }
    assert!(stop_engine(&mut child).success());

    let errors = |args: &[&str]| {
        stdout_of_success(
            plexus()
                .args(["errors", "list", "--group"])
                .args(args)
                .arg("--config")
                .arg(&config),
        )
    };
    let text = errors(&[]);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with(" COUNT  INTERFACE"), "{text}");
    // The largest group first, then its ids, ready for `plexus errors replay`.
    assert!(
        lines[1].trim_start().starts_with("3  scheduling")
            && lines[1].contains("plugin-fail")
            && lines[1].ends_with("missing-mapping at SCH-25-1"),
        "{text}"
    );
    let ids: Vec<i64> = lines[2]
        .trim()
        .strip_prefix("ids ")
        .expect("ids line")
        .split(' ')
        .map(|n| n.parse().expect("id"))
        .collect();
    assert_eq!(ids.len(), 3, "{text}");
    assert!(
        lines[3].trim_start().starts_with("1  scheduling") && lines[3].contains("MSH-10"),
        "{text}"
    );
    assert!(text.contains("4 open"), "{text}");
    for value in ["Teleported", "Beamed", "testpatient"] {
        assert!(!text.contains(value), "no field values: {text}");
    }

    let json = errors(&["--json", "--kind", "plugin-fail"]);
    let groups: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(groups.len(), 1, "{json}");
    assert_eq!(groups[0]["count"], 3);
    let json_ids: Vec<i64> = groups[0]["ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|v| v.as_i64().expect("id"))
        .collect();
    assert_eq!(json_ids, ids);
    assert!(
        text.contains("--like ID"),
        "says how to act on a group: {text}"
    );

    // A whole group at once: replayed (the table still lacks the values, so each fails
    // again and the exit status says so), then resolved with one note.
    let run = |args: &[&str]| {
        plexus()
            .arg("errors")
            .args(args)
            .arg("--config")
            .arg(&config)
            .output()
            .expect("runs")
    };
    let like = ids[1].to_string();
    let replay = run(&["replay", "--like", &like]);
    let out = String::from_utf8_lossy(&replay.stdout);
    assert_eq!(replay.status.code(), Some(1), "{out}");
    assert!(
        !String::from_utf8_lossy(&replay.stderr).contains("an engine is running"),
        "the engine is stopped"
    );
    assert_eq!(out.matches("failed again").count(), 3, "{out}");
    assert!(
        String::from_utf8_lossy(&replay.stderr).contains("3 open error(s) like message"),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    let resolve = run(&[
        "resolve",
        "--like",
        &like,
        "--note",
        "statuses added upstream",
    ]);
    assert!(resolve.status.success());
    assert_eq!(
        String::from_utf8_lossy(&resolve.stdout)
            .matches("error resolved")
            .count(),
        3
    );
    let left = errors(&["--json"]);
    assert_eq!(
        left.lines().count(),
        1,
        "only the MSH-10 problem is left: {left}"
    );
    let none = run(&["resolve", "--like", &like, "--note", "again"]);
    assert!(!none.status.success(), "no open error to be like any more");
    let none = String::from_utf8_lossy(&none.stderr).into_owned();
    assert!(none.contains("has no open error"), "{none}");
    // Groups are of open errors; a list of nothing is refused, not printed.
    assert!(!run(&["list", "--group", "--all"]).status.success());
    assert!(!run(&["list", "--limit", "0"]).status.success());
}

#[test]
fn plugin_inspect_is_the_reviewers_sheet() {
    let out = plexus()
        .args(["plugin", "inspect", plexus_test_artifacts::VISIT_STATUS_MAP])
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let bytes = std::fs::read(plexus_test_artifacts::VISIT_STATUS_MAP).expect("built");
    assert!(
        text.contains(&plexus_sandbox::inspect::sha256_hex(&bytes)),
        "{text}"
    );
    assert!(
        text.contains("plexus:transform/tables") && text.contains("CAPABILITY"),
        "{text}"
    );

    let out = plexus()
        .args([
            "plugin",
            "inspect",
            "--json",
            plexus_test_artifacts::DEMOGRAPHICS_NORMALIZE,
        ])
        .output()
        .expect("runs");
    let sheet: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(sheet["world"], "plexus:transform/hl7-transform@0.1.0");
    assert!(
        sheet["imports"]
            .as_array()
            .expect("imports")
            .iter()
            .all(|i| i["class"] != "unavailable")
    );

    let out = plexus()
        .args(["plugin", "inspect", plexus_test_artifacts::NET_PROBE])
        .output()
        .expect("runs");
    assert_eq!(
        out.status.code(),
        Some(1),
        "a component that can never load"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("REFUSED"));
}

#[test]
fn plugin_test_runs_golden_cases() {
    let cases = plexus_test_artifacts::cases_dir("visit-status-map");
    let out = plexus()
        .args([
            "plugin",
            "test",
            plexus_test_artifacts::VISIT_STATUS_MAP,
            "--cases",
        ])
        .arg(&cases)
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("0 failed") && text.contains("fuel"), "{text}");

    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("tables")).expect("mkdir");
    for table in ["visit-status", "visit-status-settings"] {
        std::fs::copy(
            cases.join(format!("tables/{table}.csv")),
            dir.path().join(format!("tables/{table}.csv")),
        )
        .expect("copy");
    }
    std::fs::copy(
        cases.join("siu-s12-checked-in.hl7"),
        dir.path().join("a.hl7"),
    )
    .expect("copy");
    std::fs::write(
        dir.path().join("a.expected.json"),
        r#"{"outcome": "fail", "kind": "rejected"}"#,
    )
    .expect("write");
    let out = plexus()
        .args([
            "plugin",
            "test",
            plexus_test_artifacts::VISIT_STATUS_MAP,
            "--cases",
        ])
        .arg(dir.path())
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("FAIL") && text.contains("expected fail") && text.contains("got forward"),
        "{text}"
    );
}

#[test]
fn init_writes_the_demo_as_an_editable_pinned_site_that_checks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let site = dir.path().join("my-site");
    let text = stdout_of_success(plexus().arg("init").arg(&site));
    assert!(text.contains("plexus run --config"), "{text}");
    let config = std::fs::read_to_string(site.join("site.toml")).expect("site.toml");
    assert!(!config.contains("builtin:"), "{config}");
    assert_eq!(config.matches("sha256 = \"").count(), 2, "{config}");
    let csv = std::fs::read_to_string(site.join("visit-status.csv")).expect("csv");
    assert!(csv.starts_with("key,value"), "{csv}");
    let checked = stdout_of_success(plexus().arg("check").arg(site.join("site.toml")));
    assert!(checked.contains("2 plug-in(s) loaded"), "{checked}");
    assert!(!checked.contains("note:"), "{checked}");
    // `reuse-instance`: check says what it does for a plug-in that asks for reuse
    // (visit-status-map), and that it does nothing for one that does not.
    let reuse = config
        .replace("grants = []", "grants = [\"reuse-instance\"]")
        .replace(
            "grants = [\"tables:visit-status\"]",
            "grants = [\"tables:visit-status\", \"reuse-instance\"]",
        );
    assert_eq!(reuse.matches("reuse-instance").count(), 2, "{reuse}");
    std::fs::write(site.join("reuse.toml"), &reuse).expect("write");
    let checked = stdout_of_success(plexus().arg("check").arg(site.join("reuse.toml")));
    assert!(
        checked.contains("plug-in visit-status-map: instances are kept between messages"),
        "{checked}"
    );
    assert!(
        checked.contains("plug-in demographics-normalize: `reuse-instance` is granted but")
            && checked.contains("no effect"),
        "{checked}"
    );
    // Grants the component cannot use (it imports neither the log nor table lookups).
    let surplus = config.replace("grants = []", "grants = [\"log\", \"tables:visit-status\"]");
    std::fs::write(site.join("surplus.toml"), &surplus).expect("write");
    let checked = stdout_of_success(plexus().arg("check").arg(site.join("surplus.toml")));
    assert!(
        checked.contains(
            "plug-in demographics-normalize: granted log, tables:visit-status but the component does not import the log or table lookups"
        ),
        "{checked}"
    );
    assert!(
        !checked.contains("plug-in visit-status-map: granted"),
        "{checked}"
    );
    // Golden cases the config names run too: a failing one fails check.
    let cases = site.join("cases");
    std::fs::create_dir_all(cases.join("tables")).expect("cases dir");
    std::fs::copy(
        site.join("visit-status.csv"),
        cases.join("tables/visit-status.csv"),
    )
    .expect("table");
    std::fs::write(
        cases.join("roomed.hl7"),
        "MSH|^~\\&|A|B|C|D|20260101||SIU^S12|C1|P|2.5\rSCH|1||||||||||||||||||||||||Roomed\r",
    )
    .expect("case");
    std::fs::write(
        cases.join("roomed.expected.json"),
        r#"{"outcome": "filter"}"#,
    )
    .expect("case");
    let with_cases = config.replacen(
        "file = \"visit-status-map.wasm\"\n",
        "file = \"visit-status-map.wasm\"\ncases = \"cases\"\n",
        1,
    );
    assert_ne!(with_cases, config);
    std::fs::write(site.join("cases.toml"), &with_cases).expect("write");
    let out = plexus()
        .arg("check")
        .arg(site.join("cases.toml"))
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("golden case") && err.contains("roomed"),
        "{err}"
    );
    std::fs::write(
        cases.join("roomed.expected.json"),
        r#"{"outcome": "forward"}"#,
    )
    .expect("case");
    stdout_of_success(plexus().arg("check").arg(site.join("cases.toml")));
    // An edited plug-in no longer matches its pin.
    std::fs::write(site.join("visit-status-map.wasm"), b"\0asm changed").expect("write");
    let out = plexus()
        .arg("check")
        .arg(site.join("site.toml"))
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    // A folder with files in it is left alone.
    let out = plexus().arg("init").arg(&site).output().expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not empty"));
}

#[test]
fn check_reports_every_config_problem_with_its_location() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("good.toml");
    std::fs::write(&good, plexus_config::DEMO_TOML).expect("write");
    let out = plexus().arg("check").arg(&good).output().expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));

    let bad = dir.path().join("bad.toml");
    let text = plexus_config::DEMO_TOML.replacen("visit-status-map\"]", "visit-status-mapp\"]", 1);
    assert_ne!(
        text,
        plexus_config::DEMO_TOML,
        "the demo names visit-status-map in a chain"
    );
    std::fs::write(&bad, text).expect("write");
    let out = plexus().arg("check").arg(&bad).output().expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:") && err.contains("did you mean `visit-status-map`"),
        "{err}"
    );

    // A valid config whose files do not load fails check as it would fail `run`.
    let tables = dir.path().join("tables.toml");
    let missing =
        plexus_config::DEMO_TOML.replacen("builtin:visit-status.csv", "no-such-table.csv", 1);
    assert_ne!(
        missing,
        plexus_config::DEMO_TOML,
        "the demo has a built-in table"
    );
    std::fs::write(&tables, &missing).expect("write");
    let out = plexus().arg("check").arg(&tables).output().expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("table visit-status") && err.contains("no-such-table.csv"),
        "{err}"
    );
    // A table saved without its header is refused, not read one row short.
    std::fs::write(dir.path().join("no-such-table.csv"), "arrived,Started\n").expect("csv");
    let out = plexus().arg("check").arg(&tables).output().expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 1") && err.contains("header `key,value`"),
        "{err}"
    );
    std::fs::write(
        dir.path().join("no-such-table.csv"),
        "key,value\narrived,Started\n",
    )
    .expect("csv");
    let out = plexus().arg("check").arg(&tables).output().expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("plug-in(s) loaded") && text.contains("1 row(s)"),
        "{text}"
    );
}

#[test]
fn token_new_prints_a_token_and_the_config_line_with_its_digest() {
    let out = plexus()
        .args(["token", "new", "ops-desk", "--role", "operator"])
        .output()
        .expect("runs");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let token = text
        .lines()
        .map(str::trim)
        .find(|l| l.len() == 64 && l.bytes().all(|b| b.is_ascii_hexdigit()))
        .expect("a 64-hex-digit token");
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("{ name = "))
        .expect("config line");
    let toml = format!(
        "[interfaces.a]\nsource = {{ type = \"mllp\", listen = \"127.0.0.1:0\" }}\n[admin]\ntokens = [{line}]\n"
    );
    let config = plexus_config::Config::from_toml(&toml, std::path::Path::new("site.toml"))
        .expect("the printed line is valid config");
    let stored = &config.admin.tokens[0];
    assert_eq!(stored.role, plexus_config::Role::Operator);
    assert_eq!(stored.sha256, plexus_pipeline::sha256_hex(token.as_bytes()));
    assert!(
        !line.contains(token),
        "the token itself is not in the config line"
    );
    // The block form, appended to the end of a site (here one whose last table is
    // another), parses to the same token.
    let block: String = text
        .lines()
        .skip_while(|l| *l != "[[admin.tokens]]")
        .take(4)
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(block.starts_with("[[admin.tokens]]\nname = "), "{text}");
    let toml = format!(
        "[interfaces.a]\nsource = {{ type = \"mllp\", listen = \"127.0.0.1:0\" }}\n\n{block}"
    );
    let config = plexus_config::Config::from_toml(&toml, std::path::Path::new("site.toml"))
        .expect("the printed block is valid config at the end of a site");
    assert_eq!(config.admin.tokens[0].sha256, stored.sha256);
    let bad = plexus()
        .args(["token", "new", "Bad Name", "--role", "operator"])
        .output()
        .expect("runs");
    assert_eq!(bad.status.code(), Some(2));
}

/// A table grant the plug-in does not declare (visit-status-map's optional settings
/// table, looked up by name) is not called unused: removing it would change what the
/// plug-in does. A capability it does not import at all is.
#[test]
fn review_does_not_advise_removing_a_table_the_plug_in_may_read_by_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let site = dir.path().join("site");
    stdout_of_success(plexus().arg("init").arg(&site));
    std::fs::write(site.join("settings.csv"), "key,value\nextra-path,ZVS-1\n").expect("csv");
    let config = std::fs::read_to_string(site.join("site.toml"))
        .expect("site.toml")
        .replace(
            "grants = [\"tables:visit-status\"]",
            "grants = [\"tables:visit-status\", \"tables:visit-status-settings\", \"reuse-instance\"]",
        )
        .replace(
            "[tables.visit-status]\n",
            "[tables.visit-status-settings]\nfile = \"settings.csv\"\n\n[tables.visit-status]\n",
        );
    std::fs::write(site.join("site.toml"), &config).expect("write");
    let text = stdout_of_success(
        plexus()
            .args(["review", "visit-status-map", "--config"])
            .arg(site.join("site.toml")),
    );
    assert!(
        text.contains("undeclared   tables:visit-status-settings"),
        "{text}"
    );
    assert!(
        !text.contains("unused       tables:visit-status-settings"),
        "{text}"
    );
    // demographics-normalize imports no table lookups: a table grant there is unused.
    let config = config.replace("grants = []", "grants = [\"tables:visit-status\"]");
    std::fs::write(site.join("site.toml"), &config).expect("write");
    let text = stdout_of_success(
        plexus()
            .args(["review", "demographics-normalize", "--config"])
            .arg(site.join("site.toml")),
    );
    assert!(text.contains("unused       tables:visit-status"), "{text}");
}

/// `NAME@PREFIX` takes a digest prefix, as `plexus admin interfaces` shows digests: the
/// configured version's is the sheet without a candidate; too short a prefix is refused
/// with the rule, and one that names nothing says so.
#[test]
fn review_takes_a_digest_prefix() {
    let bytes = std::fs::read(plexus_test_artifacts::VISIT_STATUS_MAP).expect("wasm");
    let sha = plexus_pipeline::sha256_hex(&bytes);
    let text =
        stdout_of_success(plexus().args(["review", &format!("visit-status-map@{}", &sha[..12])]));
    assert!(text.contains(&sha) && !text.contains("candidate"), "{text}");
    let short = plexus()
        .args(["review", "visit-status-map@abc"])
        .output()
        .expect("runs");
    assert!(!short.status.success());
    assert!(
        String::from_utf8_lossy(&short.stderr).contains("at least the first 8"),
        "{}",
        String::from_utf8_lossy(&short.stderr)
    );
    let none = plexus()
        .args(["review", "visit-status-map@0000000000"])
        .output()
        .expect("runs");
    assert!(
        String::from_utf8_lossy(&none.stderr).contains("no such version has been uploaded"),
        "{}",
        String::from_utf8_lossy(&none.stderr)
    );
}

#[test]
fn review_shows_requested_against_granted_and_a_candidates_changes() {
    let out = plexus()
        .args(["review", "visit-status-map", plexus_test_artifacts::HOSTILE])
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    // The configured version loads, the candidate would not: a release gate fails.
    assert_eq!(
        out.status.code(),
        Some(1),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("requested    tables"), "{text}");
    assert!(text.contains("granted      tables:visit-status"), "{text}");
    assert!(text.contains("requests added    log"), "{text}");
    assert!(
        text.contains("REFUSED with the current grants: needs log"),
        "{text}"
    );
    assert!(
        text.contains("verdict      loads with the current grants"),
        "{text}"
    );
    // A configured version that will not load fails the review, and says why.
    let dir = tempfile::tempdir().expect("tempdir");
    let site = dir.path().join("site");
    stdout_of_success(plexus().arg("init").arg(&site));
    let config = std::fs::read_to_string(site.join("site.toml")).expect("site.toml");
    std::fs::copy(
        plexus_test_artifacts::NET_PROBE,
        site.join("visit-status-map.wasm"),
    )
    .expect("copy");
    let unpinned: String = config
        .lines()
        .filter(|l| !l.starts_with("sha256"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(site.join("site.toml"), unpinned).expect("write");
    let out = plexus()
        .args(["review", "visit-status-map", "--config"])
        .arg(site.join("site.toml"))
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("WILL NOT LOAD") && text.contains("wasi:sockets"),
        "{text}"
    );
    let out = plexus()
        .args([
            "plugin",
            "inspect",
            "--json",
            plexus_test_artifacts::NET_PROBE,
        ])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let sheet: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(sheet["loadable"], false);
    let out = plexus()
        .args(["review", "no-such-plugin"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("defined: demographics-normalize, visit-status-map")
    );
}

/// `plexus admin` and `plexus shadow` against a running engine: list, upload, shadow a
/// candidate on live traffic, read its report from the journal, promote it, read the
/// audit log; a wrong token is refused with a hint.
#[test]
fn admin_and_shadow_commands_drive_a_running_engine() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = demo_site(dir.path());
    let token = "cli-admin-secret";
    let mut toml = std::fs::read_to_string(&config).expect("config");
    toml.push_str(&format!(
        "\n[admin]\ntokens = [{{ name = \"ci\", role = \"admin\", sha256 = \"{}\" }}]\n",
        plexus_pipeline::sha256_hex(token.as_bytes())
    ));
    std::fs::write(&config, toml).expect("write config");
    let (mut child, mllp, http) = start_engine(&config);
    let url = format!("http://{http}");
    let run = |args: &[&str]| {
        stdout_of_success(
            plexus()
                .args(args)
                .env("PLEXUS_URL", &url)
                .env("PLEXUS_TOKEN", token)
                .env("PLEXUS_CONFIG", &config),
        )
    };

    let listed = run(&["admin", "interfaces"]);
    assert!(
        listed.contains("scheduling") && listed.contains("demographics-normalize@"),
        "{listed}"
    );
    let groups = run(&["admin", "errors", "--group"]);
    assert!(
        groups.contains("no open errors") && groups.contains("0 open; 0 resolved"),
        "{groups}"
    );
    let uploaded = run(&["admin", "upload", plexus_test_artifacts::VISIT_STATUS_MAP]);
    let sha = uploaded
        .split_whitespace()
        .find(|w| w.len() == 64)
        .expect("the digest")
        .to_owned();
    assert!(run(&["admin", "plugins"]).contains(&sha));

    // The reviewer's sheet for the uploaded version, and a grant change through the API
    // that the sheet then shows.
    let sheet = run(&["review", &format!("visit-status-map@{sha}")]);
    assert!(sheet.contains("candidate    "), "{sheet}");
    assert!(sheet.contains("loads with the current grants"), "{sheet}");
    let changed = run(&[
        "admin",
        "grants",
        "visit-status-map",
        "--set",
        "tables:visit-status,log",
    ]);
    assert!(changed.contains("relinked"), "{changed}");
    let sheet = run(&["review", "visit-status-map"]);
    assert!(sheet.contains("set through the admin API"), "{sheet}");
    assert!(
        sheet.contains("granted      log, tables:visit-status"),
        "{sheet}"
    );

    // Shadow a chain without the demographics stage: names would stay as sent.
    let started = run(&[
        "shadow",
        "start",
        "scheduling",
        &format!("visit-status-map@{sha}"),
    ]);
    assert!(started.contains("shadow run"), "{started}");
    let mut conn = TcpStream::connect(&mllp).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    for i in 0..3 {
        let siu = format!(
            "MSH|^~\\&|SCHED|CLINIC|EHR|CLINIC|20260105083000||SIU^S12|SH-{i}|P|2.5.1\r\
SCH|1^S|2^E||||NEW|||20|MIN|^^^202601050900||||||||||||||Roomed\r\
PID|1||MRN1^^^CLINIC^MR||testpatient^alpha||19800101|female\r"
        );
        conn.write_all(&frame(siu.as_bytes())).expect("send");
        let ack = plexus_hl7::Message::parse_owned(read_frame(&mut conn)).expect("ACK");
        assert_eq!(ack.get("MSA-1").expect("path").as_deref(), Some("AA"));
    }
    // No status field: the candidate edits nothing while the live chain still fixes the
    // name, which is a difference too.
    let adt = "MSH|^~\\&|REG|CLINIC|EHR|CLINIC|20260105083000||ADT^A04|SH-ADT|P|2.5.1\r\
PID|1||MRN2^^^CLINIC^MR||testpatient^beta||19800101|female\r";
    conn.write_all(&frame(adt.as_bytes())).expect("send");
    let ack = plexus_hl7::Message::parse_owned(read_frame(&mut conn)).expect("ACK");
    assert_eq!(ack.get("MSA-1").expect("path").as_deref(), Some("AA"));
    let mut report = serde_json::Value::Null;
    for _ in 0..200 {
        report = serde_json::from_str(&run(&["shadow", "report", "scheduling", "--json"]))
            .expect("json report");
        if report["messages"] == 4 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(report["messages"], 4, "{report}");
    assert_eq!(report["changed_output"], 4, "{report}");
    let text = run(&["shadow", "report", "scheduling"]);
    assert!(text.contains("paths that differ"), "{text}");
    assert!(text.contains("PID-5-1"), "{text}");
    assert!(!text.contains("testpatient"), "masked: {text}");

    let promoted = run(&["shadow", "promote", "scheduling"]);
    assert!(promoted.contains("promoted"), "{promoted}");
    let listed = run(&["admin", "interfaces"]);
    assert!(!listed.contains("demographics-normalize@"), "{listed}");
    let audit = run(&["admin", "audit"]);
    for action in [
        "upload",
        "grant-change",
        "shadow-start",
        "activate",
        "shadow-promote",
    ] {
        assert!(audit.contains(action), "{action} in {audit}");
    }

    // Two messages with statuses nobody maps: one problem, two ids.
    for (i, status) in ["Teleported", "Beamed"].iter().enumerate() {
        let siu = format!(
            "MSH|^~\\&|SCHED|CLINIC|EHR|CLINIC|20260105083000||SIU^S12|BAD-{i}|P|2.5.1\r\
SCH|1^S|2^E||||NEW|||20|MIN|^^^202601050900||||||||||||||{status}\r\
PID|1||MRN1^^^CLINIC^MR||testpatient^alpha||19800101|female\r"
        );
        conn.write_all(&frame(siu.as_bytes())).expect("send");
        let ack = plexus_hl7::Message::parse_owned(read_frame(&mut conn)).expect("ACK");
        assert_eq!(ack.get("MSA-1").expect("path").as_deref(), Some("AE"));
    }
    let groups = run(&["admin", "errors", "--group"]);
    let row = groups
        .lines()
        .find(|l| l.contains("plugin-fail"))
        .unwrap_or_else(|| panic!("a plugin-fail group: {groups}"));
    assert!(row.trim_start().starts_with("2 "), "{groups}");
    assert!(row.contains("missing-mapping at SCH-25-1"), "{groups}");
    assert!(groups.contains("2 open;"), "{groups}");
    assert!(
        !groups.contains("Teleported") && !groups.contains("testpatient"),
        "{groups}"
    );
    // One command closes the whole group.
    let errors = run(&["admin", "errors"]);
    let id = errors
        .lines()
        .find(|l| l.contains("plugin-fail"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("an error line: {errors}"))
        .to_owned();
    let resolved = run(&[
        "admin",
        "resolve",
        &id,
        "--like",
        "--note",
        "statuses retired",
    ]);
    assert!(resolved.contains("\"resolved\": 2"), "{resolved}");
    assert!(run(&["admin", "errors", "--group"]).contains("0 open;"));

    let refused = plexus()
        .args(["admin", "interfaces"])
        .env("PLEXUS_URL", &url)
        .env("PLEXUS_TOKEN", "wrong")
        .output()
        .expect("runs");
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("wants a valid token"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    child.kill().expect("kill");
    child.wait().expect("exits");
}

/// SIGHUP re-reads the config: a changed table applies at once (a status that was
/// unknown now maps), a changed token takes over, a change that needs a restart is
/// reported and not applied; the reload is in the audit log.
#[test]
fn sighup_reloads_tables_and_tokens_while_running() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = demo_site(dir.path());
    let csv = dir.path().join("status.csv");
    std::fs::write(&csv, "key,value\nroomed,Started\n").expect("csv");
    let token_line = |secret: &str| {
        format!(
            "\n[admin]\ntokens = [{{ name = \"ops\", role = \"admin\", sha256 = \"{}\" }}]\n",
            plexus_pipeline::sha256_hex(secret.as_bytes())
        )
    };
    let base = std::fs::read_to_string(&config).expect("config").replace(
        "file = \"builtin:visit-status.csv\"",
        "file = \"status.csv\"",
    );
    assert!(base.contains("status.csv"), "the demo's table line changed");
    std::fs::write(&config, format!("{base}{}", token_line("first-secret"))).expect("write");
    let (mut child, mllp, http) = start_engine(&config);
    let mut conn = TcpStream::connect(&mllp).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut send = |id: &str, status: &str| {
        let siu = format!(
            "MSH|^~\\&|SCHED|CLINIC|EHR|CLINIC|20260105083000||SIU^S12|{id}|P|2.5.1\r\
SCH|1^S|2^E||||NEW|||20|MIN|^^^202601050900||||||||||||||{status}\r"
        );
        conn.write_all(&frame(siu.as_bytes())).expect("send");
        let ack = plexus_hl7::Message::parse_owned(read_frame(&mut conn)).expect("ACK");
        ack.get("MSA-1").expect("path").map(|c| c.into_owned())
    };
    assert_eq!(
        send("R-1", "Ready").as_deref(),
        Some("AE"),
        "not in the table yet"
    );
    let api = |secret: &str| {
        plexus()
            .args(["admin", "interfaces"])
            .env("PLEXUS_URL", format!("http://{http}"))
            .env("PLEXUS_TOKEN", secret)
            .output()
            .expect("runs")
            .status
            .success()
    };
    assert!(api("first-secret"));

    std::fs::write(&csv, "key,value\nroomed,Started\nready,Started\n").expect("csv");
    let restart = base.replace("retention = \"30d\"", "retention = \"10d\"");
    assert_ne!(restart, base, "the demo's retention line changed");
    std::fs::write(&config, format!("{restart}{}", token_line("second-secret"))).expect("write");
    Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .expect("kill");
    let mut mapped = None;
    for i in 0..200 {
        mapped = send(&format!("R-{}", i + 2), "Ready");
        if mapped.as_deref() == Some("AA") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        mapped.as_deref(),
        Some("AA"),
        "the reloaded table maps Ready"
    );
    assert!(api("second-secret"), "the new token works");
    assert!(!api("first-secret"), "the old one does not");
    // A CLI replay beside the running engine reads the tables on disk: it says so.
    let replay = plexus()
        .args(["errors", "replay", "1", "--note", "table fixed", "--config"])
        .arg(&config)
        .output()
        .expect("runs");
    let said = String::from_utf8_lossy(&replay.stderr);
    assert!(
        said.contains("an engine is running on")
            && said.contains("plexus admin replay")
            && said.contains("this replay runs ["),
        "{replay:?}"
    );

    // A config that would not start (the plug-in loses the grant it needs) is refused
    // whole, as `plexus check` refuses it: not audited as reloaded, the running
    // engine untouched (the new tokens still work).
    let ungranted = restart.replace("grants = [\"tables:visit-status\"]", "grants = []");
    assert_ne!(ungranted, restart, "the demo's grants line changed");
    std::fs::write(
        &config,
        format!("{ungranted}{}", token_line("third-secret")),
    )
    .expect("write");
    Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .expect("kill");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(api("second-secret"), "nothing changed");
    assert!(!api("third-secret"), "not even the tokens");
    assert_eq!(send("R-AFTER", "Ready").as_deref(), Some("AA"));

    stop_engine(&mut child);
    let audit = plexus()
        .args(["audit", "list", "--config"])
        .arg(&config)
        .output()
        .expect("runs");
    let audit = String::from_utf8_lossy(&audit.stdout);
    let line = audit
        .lines()
        .find(|l| l.contains("config-reload"))
        .unwrap_or_else(|| panic!("reload audited: {audit}"));
    assert!(line.contains("signal:SIGHUP"), "{line}");
    assert!(line.contains("tables reloaded: visit-status"), "{line}");
    assert!(line.contains("needs a restart: [journal]"), "{line}");
    assert_eq!(
        audit
            .lines()
            .filter(|l| l.contains("config-reload ") || l.ends_with("config-reload"))
            .count(),
        1,
        "the refused reload is not recorded as one: {audit}"
    );
    let refused = audit
        .lines()
        .find(|l| l.contains("config-reload-refused"))
        .unwrap_or_else(|| panic!("the refusal audited: {audit}"));
    assert!(refused.contains("not granted"), "{refused}");
}

#[test]
fn send_and_parse_take_a_charset_for_senders_that_leave_msh_18_empty() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("latin1.hl7");
    std::fs::write(
        &file,
        b"MSH|^~\\&|A|B|C|D|2026||ADT^A08|LAT1|P|2.5\rPID|1||X||M\xdcLLER\r",
    )
    .expect("write");

    // `plexus hl7 parse`: refused as UTF-8, read with --charset.
    let plain = plexus()
        .args(["hl7", "parse", "--path", "PID-5-1"])
        .arg(&file)
        .output()
        .expect("runs");
    assert!(!plain.status.success());
    let latin1 = plexus()
        .args(["hl7", "parse", "--path", "PID-5-1", "--charset", "8859/1"])
        .arg(&file)
        .output()
        .expect("runs");
    assert!(latin1.status.success(), "{latin1:?}");
    assert_eq!(String::from_utf8_lossy(&latin1.stdout).trim(), "MÜLLER");
    let bad = plexus()
        .args(["hl7", "parse", "--charset", "KOI8-R"])
        .arg(&file)
        .output()
        .expect("runs");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("8859/1"));

    // `plexus send`: a receiver that answers AA to whatever it gets.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let receiver = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        let got = read_frame(&mut conn);
        let ack = b"MSH|^~\\&|C|D|A|B|2026||ACK^A08|R1|P|2.5\rMSA|AA|LAT1\r";
        conn.write_all(&frame(ack)).expect("ack");
        got
    });
    let refused = plexus()
        .args(["send", "--to", &addr.to_string()])
        .arg(&file)
        .output()
        .expect("runs");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stdout).contains("not sent"));
    let sent = plexus()
        .args(["send", "--charset", "latin1", "--to", &addr.to_string()])
        .arg(&file)
        .output()
        .expect("runs");
    assert!(sent.status.success(), "{sent:?}");
    assert!(String::from_utf8_lossy(&sent.stdout).contains("AA for LAT1"));
    let got = receiver.join().expect("receiver");
    assert!(got.contains(&0xdc), "sent as it is, in Latin-1");
}

/// A message whose MSH-15 asks for no answer (`NE`), or for one only on an error (`ER`),
/// is not reported as failed when no answer comes, and `send` waits only briefly for it;
/// one that asks for an answer only on success (`SU`) and gets none was not accepted.
#[test]
fn send_does_not_wait_out_the_ack_timeout_for_messages_that_ask_for_no_answer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, id: &str, msh15: &str| {
        let path = dir.path().join(name);
        let msg = format!("MSH|^~\\&|A|B|C|D|2026||ADT^A08|{id}|P|2.5|||{msh15}|AL\rPID|1||X\r");
        std::fs::write(&path, msg).expect("write");
        path
    };
    let never = write("ne.hl7", "NE1", "NE");
    let on_error = write("er.hl7", "ER1", "ER");
    let always = write("al.hl7", "AL1", "");
    let on_success = write("su.hl7", "SU1", "SU");
    // Answers only messages that ask for an answer whatever happens (MSH-15 empty or AL).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut got = Vec::new();
                let mut byte = [0u8; 1];
                // Until the sender closes the connection (after a wait that timed out).
                while matches!(conn.read(&mut byte), Ok(1)) {
                    got.push(byte[0]);
                    if !got.ends_with(&[0x1c, 0x0d]) {
                        continue;
                    }
                    let text = String::from_utf8_lossy(&std::mem::take(&mut got)).into_owned();
                    if text.contains("|AL1|") {
                        let ack = b"MSH|^~\\&|C|D|A|B|2026||ACK^A08|R1|P|2.5\rMSA|CA|AL1\r";
                        conn.write_all(&frame(ack)).expect("ack");
                    }
                    if text.contains("|AE1|") {
                        let ack = b"MSH|^~\\&|C|D|A|B|2026||ACK^A08|R2|P|2.5\rMSA|AE|AE1\r\
ERR||SCH^1^25^1^1|103^Table value not found^HL70357|E||||value has no entry\r";
                        conn.write_all(&frame(ack)).expect("ack");
                    }
                }
            });
        }
    });
    let quiet = plexus()
        .args(["send", "--ack-timeout", "60", "--to", &addr.to_string()])
        .args([&never, &on_error, &always])
        .output()
        .expect("runs");
    let out = String::from_utf8_lossy(&quiet.stdout);
    assert!(quiet.status.success(), "{quiet:?}");
    assert!(
        out.contains("ne.hl7: sent; MSH-15 is NE (never answer), and no answer came within 0.25 s"),
        "{out}"
    );
    assert!(out.contains("er.hl7: sent; MSH-15 is ER"), "{out}");
    assert!(out.contains("al.hl7: CA for AL1"), "{out}");
    // An error ACK: the reason with where it is (ERR-2), so the user knows what to fix.
    let refused = plexus()
        .args(["send", "--to", &addr.to_string()])
        .arg(write("ae.hl7", "AE1", ""))
        .output()
        .expect("runs");
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stdout)
            .contains("AE for AE1 (103 at SCH-25-1: value has no entry)"),
        "{refused:?}"
    );
    let unanswered = plexus()
        .args(["send", "--ack-timeout", "60", "--to", &addr.to_string()])
        .arg(&on_success)
        .output()
        .expect("runs");
    assert!(!unanswered.status.success(), "{unanswered:?}");
    assert!(
        String::from_utf8_lossy(&unanswered.stdout).contains("MSH-15 is SU"),
        "{unanswered:?}"
    );
}

#[test]
fn a_second_run_on_the_same_data_folder_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = demo_site(dir.path());
    let (mut first, _, _) = start_engine(&config);
    let out = plexus()
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("another engine is running"), "{err}");
    assert!(stop_engine(&mut first).success());
}
