//! Every message of the public sample corpus (../shared/corpus/hl7v2, MIT, from
//! Microsoft's FHIR-Converter) parses, walks, and re-encodes byte for byte.

use std::path::PathBuf;

use plexus_hl7::Message;

fn corpus_dir() -> PathBuf {
    std::env::var_os("PLEXUS_HL7_CORPUS").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus/hl7v2"),
        PathBuf::from,
    )
}

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir();
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
        panic!(
            "the HL7 corpus is expected at {} (the shared folder beside the repo): {e}",
            dir.display()
        )
    });
    let mut files: Vec<_> = entries
        .map(|e| e.expect("readable dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "hl7"))
        .map(|p| {
            let name = p
                .file_name()
                .expect("file name")
                .to_string_lossy()
                .into_owned();
            (name, std::fs::read(&p).expect("readable corpus file"))
        })
        .collect();
    files.sort();
    files
}

#[test]
fn all_139_parse_and_reencode_byte_exact() {
    let files = corpus();
    assert_eq!(files.len(), 139, "corpus size changed");
    let mut failures = Vec::new();
    for (name, bytes) in &files {
        match Message::parse(bytes) {
            Ok(msg) => {
                if msg.as_bytes() != bytes.as_slice() {
                    failures.push(format!("{name}: re-encoding differs"));
                }
                let owned = Message::parse_owned(bytes.clone()).expect("owned parse agrees");
                assert_eq!(owned.segment_count(), msg.segment_count());
            }
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} failed:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

#[test]
fn every_element_of_every_message_decodes() {
    for (name, bytes) in corpus() {
        let msg = Message::parse(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            msg.segments().next().map(|s| s.name()),
            Some("MSH"),
            "{name}"
        );
        let mut leaves = 0usize;
        for seg in msg.segments() {
            for (_, field) in seg.fields() {
                for rep in field.children() {
                    for comp in rep.children() {
                        for sub in comp.children() {
                            let _ = sub.text();
                            leaves += 1;
                        }
                    }
                }
            }
        }
        assert!(leaves > 10, "{name}: only {leaves} leaves");
        assert!(msg.control_id().is_some(), "{name}: no MSH-10");
    }
}

#[test]
fn an_edit_changes_only_what_it_touches() {
    for (name, bytes) in corpus() {
        let mut msg = Message::parse(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        let before = msg
            .get("MSH-10")
            .expect("valid path")
            .map(|c| c.into_owned());
        let before_raw = msg.get_raw("MSH-10").expect("path").map(<[u8]>::to_vec);
        msg.set("MSH-10", "PLEXUS-EDITED").expect("set MSH-10");
        assert_eq!(
            msg.get("MSH-10").expect("path").as_deref(),
            Some("PLEXUS-EDITED")
        );
        let edited = msg.as_bytes().to_vec();
        let old = before_raw.unwrap_or_default();
        let at = msh10_offset(&bytes);
        assert_eq!(&bytes[at..at + old.len()], old.as_slice(), "{name}");
        let mut expected = bytes[..at].to_vec();
        expected.extend_from_slice(b"PLEXUS-EDITED");
        expected.extend_from_slice(&bytes[at + old.len()..]);
        assert_eq!(edited, expected, "{name}: more than MSH-10 changed");

        msg.set("MSH-10", before.as_deref().unwrap_or_default())
            .expect("restore");
        assert_eq!(
            msg.as_bytes(),
            bytes.as_slice(),
            "{name}: restoring did not give back the input"
        );
    }
}

/// Where MSH-10 starts: after the ninth field separator of the header line.
fn msh10_offset(bytes: &[u8]) -> usize {
    let msh = bytes
        .windows(3)
        .position(|w| w == b"MSH")
        .expect("MSH present");
    let sep = bytes[msh + 3];
    let mut seen = 0;
    for (i, &c) in bytes.iter().enumerate().skip(msh + 3) {
        if c == sep {
            seen += 1;
            if seen == 9 {
                return i + 1;
            }
        }
    }
    panic!("no MSH-10")
}

/// Every corpus message (LF-terminated files, some with a byte order mark) has a wire
/// form a strict receiver takes: CR-terminated segments, nothing before MSH, no blank
/// lines. It holds the same segments with the same bytes, and is its own wire form.
#[test]
fn every_message_has_a_strict_wire_form_with_the_same_segments() {
    let mut changed = 0;
    for (name, bytes) in corpus() {
        let original = Message::parse(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        let Some(wire) = plexus_hl7::wire_form(&bytes) else {
            continue;
        };
        changed += 1;
        assert!(wire.starts_with(b"MSH"), "{name}");
        assert!(wire.ends_with(b"\r") && !wire.contains(&b'\n'), "{name}");
        assert!(!wire.windows(2).any(|w| w == b"\r\r"), "{name}");
        let again = Message::parse(&wire).unwrap_or_else(|e| panic!("{name}: {e}"));
        let raws = |m: &Message<'_>| m.segments().map(|s| s.raw().to_vec()).collect::<Vec<_>>();
        assert_eq!(raws(&original), raws(&again), "{name}");
        assert_eq!(plexus_hl7::wire_form(&wire), None, "{name}: stable");
    }
    assert!(
        changed >= 100,
        "the corpus files end lines with LF: {changed} changed"
    );
}

#[test]
fn wire_form_leaves_a_strict_message_alone_and_keeps_text_lfs() {
    let strict = b"MSH|^~\\&|A|B|C|D|20260101||ADT^A01|W1|P|2.5\rPID|1||X\r";
    assert_eq!(plexus_hl7::wire_form(strict), None);
    // A CR-terminated message with a line break inside a note: the LF is text.
    let note = b"MSH|^~\\&|A|B|C|D|20260101||ORU^R01|W2|P|2.5\rNTE|1||line one\nline two\r";
    assert_eq!(plexus_hl7::wire_form(note), None);
    // BOM, CRLF and trailing blank lines go; nothing else changes.
    let sloppy = b"\xEF\xBB\xBFMSH|^~\\&|A|B|C|D|20260101||ADT^A01|W3|P|2.5\r\nPID|1||X\r\n\r\n";
    assert_eq!(
        plexus_hl7::wire_form(sloppy).as_deref(),
        Some(&b"MSH|^~\\&|A|B|C|D|20260101||ADT^A01|W3|P|2.5\rPID|1||X\r"[..])
    );
    assert_eq!(plexus_hl7::wire_form(b"not hl7\n"), None);
    // A CR-terminated header with one CRLF or one blank line further on.
    let strict = &b"MSH|^~\\&|A|B|C|D|20260101||ADT^A01|W6|P|2.5\rPV1|1\rPID|1||X\r"[..];
    for sloppy in [
        &b"MSH|^~\\&|A|B|C|D|20260101||ADT^A01|W6|P|2.5\rPV1|1\r\nPID|1||X\r"[..],
        &b"MSH|^~\\&|A|B|C|D|20260101||ADT^A01|W6|P|2.5\rPV1|1\r\rPID|1||X\r"[..],
        &b"MSH|^~\\&|A|B|C|D|20260101||ADT^A01|W6|P|2.5\rPV1|1\rPID|1||X\r\r"[..],
    ] {
        assert_eq!(plexus_hl7::wire_form(sloppy).as_deref(), Some(strict));
    }
    // A last segment without its CR gets one.
    assert_eq!(
        plexus_hl7::wire_form(b"MSH|^~\\&|A|B|C|D|20260101||ADT^A01|W4|P|2.5\rPID|1||X").as_deref(),
        Some(&b"MSH|^~\\&|A|B|C|D|20260101||ADT^A01|W4|P|2.5\rPID|1||X\r"[..])
    );
    // Latin-1 without MSH-18 (not UTF-8) is normalised too, its bytes untouched.
    let latin1 = b"MSH|^~\\&|A|B|C|D|20260101||ADT^A01|W5|P|2.5\nPID|1||X||M\xfcller\n";
    assert_eq!(
        plexus_hl7::wire_form(latin1).as_deref(),
        Some(&b"MSH|^~\\&|A|B|C|D|20260101||ADT^A01|W5|P|2.5\rPID|1||X||M\xfcller\r"[..])
    );
}
