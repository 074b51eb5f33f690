//! Parsing, paths and edits on hand-written messages (synthetic data only).

use plexus_hl7::{Charset, EditError, Level, Message, ParseError, PathError};

const ADT: &str = "MSH|^~\\&|ADT|HOSP|EHR|CLINIC|20260101120000||ADT^A01^ADT_A01|MSG0001|P|2.5.1\r\
EVN|A01|20260101120000\r\
PID|1||12345^^^HOSP^MR~987-65-4320^^^SSA^SS||DOE^JANE^Q^^DR||19800101|F|||1 MAIN ST&APT 2^^SPRINGFIELD^IL^62701~PO BOX 9^^SPRINGFIELD^IL^62702||\"\"\r\
PV1|1|O|CLINIC^101^A\r\
OBX|1|NM|GLU^Glucose||98|mg/dL\r\
OBX|2|NM|NA^Sodium||140|mmol/L\r\
OBX|3|ST|NOTE^Note||high \\F\\ low \\S\\ mid \\E\\ end\r";

fn adt() -> Message<'static> {
    Message::parse(ADT.as_bytes()).expect("ADT parses")
}

fn get(msg: &Message<'_>, path: &str) -> Option<String> {
    msg.get(path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .map(|c| c.into_owned())
}

#[test]
fn documented_paths_read_what_they_say() {
    let msg = adt();
    assert_eq!(get(&msg, "PID-5-1").as_deref(), Some("DOE"));
    assert_eq!(
        get(&msg, "PID-5").as_deref(),
        Some("DOE"),
        "a field reads its first leaf"
    );
    assert_eq!(get(&msg, "PID-3[2]-4").as_deref(), Some("SSA"));
    assert_eq!(
        get(&msg, "OBX[3]-5").as_deref(),
        Some("high | low ^ mid \\ end")
    );
    assert_eq!(get(&msg, "PID-11[1]-1-2").as_deref(), Some("APT 2"));
    assert_eq!(get(&msg, "PID-11[1]-1").as_deref(), Some("1 MAIN ST"));
    assert_eq!(get(&msg, "PID-11[2]-5").as_deref(), Some("62702"));
    assert_eq!(get(&msg, "MSH-1").as_deref(), Some("|"));
    assert_eq!(get(&msg, "MSH-2").as_deref(), Some("^~\\&"));
    assert_eq!(get(&msg, "MSH-9-2").as_deref(), Some("A01"));
    assert_eq!(get(&msg, "MSH-12").as_deref(), Some("2.5.1"));
    assert_eq!(msg.control_id().as_deref(), Some("MSG0001"));
}

#[test]
fn absent_and_empty_read_as_none_and_null_is_kept() {
    let msg = adt();
    for path in [
        "PID-2",
        "PID-99",
        "PID-5-9",
        "PID-3[5]",
        "ZZZ-1",
        "OBX[9]-5",
        "PID-5-1-2",
    ] {
        assert_eq!(get(&msg, path), None, "{path}");
    }
    assert_eq!(get(&msg, "PID-13").as_deref(), Some("\"\""));
    assert!(msg.is_null("PID-13").expect("path"));
    assert!(!msg.is_null("PID-8").expect("path"));
}

#[test]
fn counts_segments_and_repetitions() {
    let msg = adt();
    assert_eq!(msg.count("OBX").expect("path"), 3);
    assert_eq!(msg.count("ZZZ").expect("path"), 0);
    assert_eq!(msg.count("PID-3").expect("path"), 2);
    assert_eq!(msg.count("PID-2").expect("path"), 0);
    assert_eq!(msg.count("PID-99").expect("path"), 0);
    assert_eq!(msg.count("PV1-3").expect("path"), 1);
    assert!(matches!(
        msg.count("PID-5-1"),
        Err(PathError::Unsupported { .. })
    ));
}

#[test]
fn bad_paths_are_errors() {
    let msg = adt();
    assert!(matches!(msg.get("PID"), Err(PathError::Unsupported { .. })));
    assert!(matches!(msg.get("PID-0"), Err(PathError::Syntax { .. })));
    assert!(matches!(msg.get("P1"), Err(PathError::Syntax { .. })));
}

#[test]
fn any_delimiters_are_honoured() {
    let raw = "MSH#$~\\&#SCHED#CLINIC#EHR#CLINIC#20260101##SIU$S12#42#P#2.5\rPID#1##A1$$$H~B2$$$H##ROE$RICHARD\r";
    let mut msg = Message::parse(raw.as_bytes()).expect("parses");
    assert_eq!(get(&msg, "MSH-1").as_deref(), Some("#"));
    assert_eq!(get(&msg, "MSH-9-2").as_deref(), Some("S12"));
    assert_eq!(get(&msg, "PID-3[2]-1").as_deref(), Some("B2"));
    assert_eq!(get(&msg, "PID-5-2").as_deref(), Some("RICHARD"));
    msg.set("PID-5-1", "A#B$C").expect("set");
    assert!(msg.as_bytes().ends_with(b"##A\\F\\B\\S\\C$RICHARD\r"));
    assert_eq!(get(&msg, "PID-5-1").as_deref(), Some("A#B$C"));
}

#[test]
fn short_and_v27_encoding_characters() {
    let msg = Message::parse(b"MSH|^~|A|B\rPID|1||X^Y&Z").expect("two encoding chars");
    assert_eq!(msg.delimiters().escape, None);
    assert_eq!(
        get(&msg, "PID-3-2").as_deref(),
        Some("Y&Z"),
        "no subcomponent separator declared"
    );
    let msg =
        Message::parse(b"MSH|^~\\&#|A|B|||||||||2.7\rNTE|1||cut\\P\\here").expect("five chars");
    assert_eq!(msg.delimiters().truncation, Some(b'#'));
    assert_eq!(get(&msg, "NTE-3").as_deref(), Some("cut#here"));
}

#[test]
fn terminators_bom_and_blank_lines() {
    let body = [
        "MSH|^~\\&|A|B|C|D|20260101||ADT^A01|1|P|2.5",
        "PID|1||X",
        "PV1|1|I",
    ];
    for (sep, tail) in [
        ("\r", "\r"),
        ("\n", "\n"),
        ("\r\n", "\r\n"),
        ("\r", ""),
        ("\n\n", "\n\n\n"),
    ] {
        let text = format!("\u{feff}{}{tail}", body.join(sep));
        let msg = Message::parse(text.as_bytes()).unwrap_or_else(|e| panic!("{sep:?}: {e}"));
        assert_eq!(
            msg.segment_names().collect::<Vec<_>>(),
            ["MSH", "PID", "PV1"],
            "{sep:?}"
        );
        assert_eq!(get(&msg, "PV1-2").as_deref(), Some("I"), "{sep:?}");
        assert_eq!(msg.as_bytes(), text.as_bytes());
    }
}

#[test]
fn malformed_messages_are_clear_errors() {
    type Check = fn(&ParseError) -> bool;
    let cases: [(&[u8], Check); 10] = [
        (b"", |e| matches!(e, ParseError::Empty)),
        (b" \r\n ", |e| matches!(e, ParseError::Empty)),
        (b"PID|1|", |e| matches!(e, ParseError::NoHeader)),
        (b"MSH", |e| matches!(e, ParseError::NoHeader)),
        (b"MSH|^|A", |e| {
            matches!(e, ParseError::BadDelimiters { .. })
        }),
        (b"MSH|^^\\&|A", |e| {
            matches!(e, ParseError::BadDelimiters { .. })
        }),
        (
            b"MSH|^~\\~|A",
            |e| matches!(e, ParseError::BadDelimiters { reason } if reason.contains("twice")),
        ),
        (b"MSH|^~\\&|A\rPI|1\r", |e| {
            matches!(e, ParseError::BadSegmentName { segment: 2, .. })
        }),
        (b"MSH|^~\\&|A\rPID|1\rMSH|^~\\&|B\r", |e| {
            matches!(e, ParseError::SecondHeader { segment: 3 })
        }),
        (
            b"MSH|^~\\&|A|B||||||||||||||ISO IR87\r",
            |e| matches!(e, ParseError::UnsupportedCharset { declared } if declared == "ISO IR87"),
        ),
    ];
    for (raw, check) in cases {
        let err = Message::parse(raw).expect_err(&String::from_utf8_lossy(raw));
        assert!(check(&err), "{:?}: got {err}", String::from_utf8_lossy(raw));
    }
}

#[test]
fn charsets_convert_to_utf8_and_back() {
    let latin =
        b"MSH|^~\\&|A|B|C|D|20260101||ADT^A01|1|P|2.5||||||8859/1\rPID|1||X||M\xdcLLER^REN\xc9E\r";
    let mut msg = Message::parse(latin).expect("latin-1 parses");
    assert_eq!(msg.charset(), Charset::Latin1);
    assert_eq!(get(&msg, "PID-5-1").as_deref(), Some("MÜLLER"));
    assert_eq!(get(&msg, "PID-5-2").as_deref(), Some("RENÉE"));
    msg.set("PID-5-2", "JOSÉ").expect("representable");
    assert!(msg.as_bytes().ends_with(b"M\xdcLLER^JOS\xc9\r"));
    let err = msg.set("PID-5-2", "李").expect_err("not latin-1");
    assert!(
        matches!(err, EditError::Unrepresentable { code: 0x674E, .. }),
        "{err}"
    );
    assert!(
        msg.as_bytes().ends_with(b"^JOS\xc9\r"),
        "failed edit leaves the message unchanged"
    );

    let utf8 =
        "MSH|^~\\&|A|B|C|D|20260101||ADT^A01|1|P|2.5||||||UNICODE UTF-8\rPID|1||X||李^小龙\r";
    let msg = Message::parse(utf8.as_bytes()).expect("utf-8 parses");
    assert_eq!(get(&msg, "PID-5-2").as_deref(), Some("小龙"));

    // Latin-1 bytes under a UTF-8 (or undeclared) charset are refused, never garbled.
    let wrong = b"MSH|^~\\&|A|B\rPID|1||X||M\xdcLLER\r";
    assert!(matches!(
        Message::parse(wrong),
        Err(ParseError::InvalidText { offset: 24, .. })
    ));
}

#[test]
fn set_creates_missing_structure() {
    let mut msg = Message::parse(b"MSH|^~\\&|A|B\rPID|1\r").expect("parses");
    msg.set("PID-5-2", "JANE").expect("set");
    assert_eq!(msg.as_bytes(), b"MSH|^~\\&|A|B\rPID|1||||^JANE\r");
    msg.set("PID-3[3]-4-2", "X").expect("set");
    assert_eq!(msg.as_bytes(), b"MSH|^~\\&|A|B\rPID|1||~~^^^&X||^JANE\r");
    msg.set("PID-5-1", "DOE").expect("set");
    assert_eq!(get(&msg, "PID-5-1").as_deref(), Some("DOE"));
    assert_eq!(get(&msg, "PID-3[3]-4-2").as_deref(), Some("X"));
    assert_eq!(msg.count("PID-3").expect("path"), 3);
}

#[test]
fn set_appends_the_next_segment_occurrence_only() {
    let mut msg = Message::parse(b"MSH|^~\\&|A|B\rOBX|1\rNTE|1\r").expect("parses");
    msg.set("OBX[2]-5", "7").expect("next occurrence");
    assert_eq!(msg.as_bytes(), b"MSH|^~\\&|A|B\rOBX|1\rOBX|||||7\rNTE|1\r");
    msg.set("ZPI-2-3", "z").expect("new segment at the end");
    assert_eq!(
        msg.as_bytes(),
        b"MSH|^~\\&|A|B\rOBX|1\rOBX|||||7\rNTE|1\rZPI||^^z\r"
    );
    let err = msg.set("OBX[4]-1", "x").expect_err("gap");
    assert!(
        matches!(err, EditError::SegmentGap { existing: 2, .. }),
        "{err}"
    );

    let mut open = Message::parse(b"MSH|^~\\&|A|B\nPID|1").expect("no final terminator");
    open.set("PV1-2", "I").expect("append");
    assert_eq!(open.as_bytes(), b"MSH|^~\\&|A|B\nPID|1\nPV1||I\n");
}

#[test]
fn set_escapes_and_refuses_header_delimiters() {
    let mut msg = adt();
    msg.set("PID-5-1", "O'NEIL|SMITH^JR\r\nNEXT").expect("set");
    assert_eq!(
        get(&msg, "PID-5-1").as_deref(),
        Some("O'NEIL|SMITH^JR\r\nNEXT")
    );
    assert!(
        std::str::from_utf8(msg.as_bytes())
            .expect("utf8")
            .contains("O'NEIL\\F\\SMITH\\S\\JR\\X0D\\\\X0A\\NEXT^JANE")
    );
    assert_eq!(msg.segment_count(), 7, "no segment was injected");
    for path in ["MSH-1", "MSH-2"] {
        assert!(matches!(
            msg.set(path, "x"),
            Err(EditError::Path(PathError::Unsupported { .. }))
        ));
    }
}

#[test]
fn remove_segments_repetitions_and_values() {
    let mut msg = adt();
    assert!(msg.remove("OBX[2]").expect("remove"));
    assert_eq!(msg.count("OBX").expect("count"), 2);
    assert_eq!(get(&msg, "OBX[2]-3-1").as_deref(), Some("NOTE"));
    assert!(msg.remove("PID-3[1]").expect("remove rep"));
    assert_eq!(msg.count("PID-3").expect("count"), 1);
    assert_eq!(get(&msg, "PID-3-4").as_deref(), Some("SSA"));
    assert!(msg.remove("PID-5-2").expect("clear component"));
    assert_eq!(get(&msg, "PID-5-2"), None);
    assert_eq!(
        get(&msg, "PID-5-3").as_deref(),
        Some("Q"),
        "later components keep their places"
    );
    assert!(!msg.remove("ZZZ").expect("absent"));
    assert!(!msg.remove("PID-3[7]").expect("absent rep"));
    assert!(msg.remove("MSH").is_err());
}

#[test]
fn insert_segment_uses_the_message_terminator() {
    let mut msg = Message::parse(b"MSH|^~\\&|A|B\r\nPID|1\r\nPV1|1").expect("parses");
    msg.insert_segment(2, "ZPI|1|Z").expect("insert");
    assert_eq!(
        msg.as_bytes(),
        b"MSH|^~\\&|A|B\r\nPID|1\r\nZPI|1|Z\r\nPV1|1"
    );
    msg.insert_segment(4, "ZZZ|end").expect("append");
    assert_eq!(
        msg.as_bytes(),
        b"MSH|^~\\&|A|B\r\nPID|1\r\nZPI|1|Z\r\nPV1|1\r\nZZZ|end\r\n"
    );
    for (pos, bad) in [
        (0, "ZPI|1"),
        (9, "ZPI|1"),
        (1, "zp|1"),
        (1, "ZPI#1"),
        (1, "MSH|^~\\&"),
        (1, "ZPI|1\rPID|2"),
    ] {
        assert!(
            matches!(
                msg.insert_segment(pos, bad),
                Err(EditError::BadSegment { .. })
            ),
            "{pos} {bad:?}"
        );
    }
}

#[test]
fn tree_walk_reports_levels() {
    let msg = adt();
    let pid = msg.segments().find(|s| s.name() == "PID").expect("PID");
    let f3 = pid.field(3).expect("PID-3");
    assert_eq!(f3.level(), Level::Field);
    assert!(f3.is_composite());
    let reps: Vec<_> = f3.children().collect();
    assert_eq!(reps.len(), 2);
    assert_eq!(
        reps[1].children().nth(3).expect("component 4").text(),
        "SSA"
    );
    let msh = msg.segments().next().expect("MSH");
    assert_eq!(msh.field(2).expect("MSH-2").level(), Level::Literal);
    assert_eq!(msh.field(2).expect("MSH-2").children().count(), 0);
    assert_eq!(msh.field_count(), 12);
}

#[test]
fn a_batch_splits_into_messages() {
    let file = b"FHS|^~\\&\rBHS|^~\\&\rMSH|^~\\&|A\rPID|1\rMSH|^~\\&|B\rPID|2\rBTS|2\rFTS|1\r";
    let batch = plexus_hl7::Batch::parse(file).expect("a well-formed batch");
    let parts: Vec<&[u8]> = batch.raw_messages().collect();
    assert_eq!(
        parts,
        [&b"MSH|^~\\&|A\rPID|1\r"[..], &b"MSH|^~\\&|B\rPID|2\r"[..]]
    );
    for part in batch.messages() {
        part.expect("each parses");
    }
    assert_eq!(
        batch.flat().get("BTS-1").expect("path").as_deref(),
        Some("2")
    );
}

#[test]
fn header_fields_of_short_headers_do_not_panic() {
    assert!(matches!(
        Message::parse(b"MSH|^~\\&\rFHS"),
        Err(ParseError::SecondHeader { segment: 2 })
    ));
    let batch = plexus_hl7::Batch::parse(b"FHS|^~\\&\rBHS").expect("envelope only");
    assert_eq!(batch.flat().get("BHS-1").expect("path"), None);
    assert_eq!(
        batch.flat().get("FHS-1").expect("path").as_deref(),
        Some("|")
    );
    assert_eq!(adt().get("MSH-1-1-2").expect("path"), None);
}

#[test]
fn a_batch_is_not_taken_for_one_message() {
    let file = b"BHS|^~\\&\rMSH|^~\\&|A\rPID|1\rMSH|^~\\&|B\rPID|2\rBTS|2\r";
    assert!(matches!(Message::parse(file), Err(ParseError::BatchGiven)));
    // Each message of a batch may declare its own charset.
    let mixed = b"BHS|^~\\&\rMSH|^~\\&|A|||||||||||||||UNICODE UTF-8\rPID|1||\xc3\xa9\rMSH|^~\\&|B|||||||||||||||8859/1\rPID|1||\xe9\rBTS|2\r";
    let batch = plexus_hl7::Batch::parse(mixed).expect("batch parses");
    let values: Vec<String> = batch
        .messages()
        .map(|m| {
            m.expect("each parses")
                .get("PID-3")
                .expect("path")
                .expect("value")
                .into_owned()
        })
        .collect();
    assert_eq!(values, ["é", "é"]);
}

#[test]
fn debug_output_never_shows_content() {
    let msg = adt();
    let seg = msg.segments().nth(2).expect("PID");
    let shown = format!(
        "{msg:?} {seg:?} {:?} {:?}",
        seg.field(5),
        seg.field(5).map(|f| f.children())
    );
    assert!(
        !shown.contains("DOE") && !shown.contains("12345"),
        "{shown}"
    );
    assert!(shown.contains("PID"), "shape is shown: {shown}");
}

#[test]
fn an_unsupported_charset_is_named_only_when_it_looks_like_a_code() {
    let mut raw = b"MSH|^~\\&|A|B||||||||||||||".to_vec();
    raw.extend_from_slice(b"DOE JANE 1980-01-01 SSN 987-65-4320 MRN 12345");
    match Message::parse(&raw) {
        Err(ParseError::UnsupportedCharset { declared }) => {
            assert_eq!(declared, "(not a charset code)")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn bare_lf_segment_ends_after_a_cr_terminated_header_are_segment_ends() {
    // CR after MSH, bare LF after the rest: the LF before `SCH|` ends PID, and the final
    // LF ends SCH instead of becoming part of its last field.
    let raw = b"MSH|^~\\&|A|B|C|D|20260101||SIU^S12|CRLF2|P|2.5\rPID|1||123||doe^jane\nSCH|1||||||||||||||||||||||||Teleported\n";
    let msg = Message::parse(raw).expect("parses");
    assert_eq!(
        msg.segment_names().collect::<Vec<_>>(),
        ["MSH", "PID", "SCH"]
    );
    assert_eq!(get(&msg, "PID-5-2").as_deref(), Some("jane"));
    assert_eq!(get(&msg, "SCH-25").as_deref(), Some("Teleported"));
    // The same with a CRLF header, and trailing whitespace lines.
    let raw =
        b"MSH|^~\\&|A|B|C|D|20260101||ADT^A01|MIX1|P|2.5\r\nPID|1||123||DOE^JANE\nPV1|1|O\n\n";
    let msg = Message::parse(raw).expect("parses");
    assert_eq!(
        msg.segment_names().collect::<Vec<_>>(),
        ["MSH", "PID", "PV1"]
    );
    assert_eq!(get(&msg, "PV1-2").as_deref(), Some("O"));
    // While CRs still follow, a line break is text (see the next tests); a final LF
    // after the last CR-terminated segment still ends its segment.
    let raw = b"MSH|^~\\&|A|B\rOBX|1|TX|NOTE||line one\nECG|normal\rNTE|1|x\n";
    let msg = Message::parse(raw).expect("parses");
    assert_eq!(
        msg.segment_names().collect::<Vec<_>>(),
        ["MSH", "OBX", "NTE"]
    );
    assert_eq!(get(&msg, "OBX-5").as_deref(), Some("line one\nECG"));
    assert_eq!(get(&msg, "NTE-2").as_deref(), Some("x"));
}

#[test]
fn edits_keep_a_message_that_mixes_terminators_in_shape() {
    let raw = b"MSH|^~\\&|A|B|C|D|20260101||SIU^S12|CRLF2|P|2.5\rPID|1||123||doe^jane\nSCH|1||||||||||||||||||||||||Teleported\n";
    let mut msg = Message::parse_owned(raw.to_vec()).expect("parses");
    // A new segment takes its neighbour's bare LF: a CR among them would make the LFs
    // before it text again.
    msg.insert_segment(2, "ZPI|1").expect("insert");
    msg.set("ZXX-1", "v").expect("append");
    assert_eq!(
        msg.segment_names().collect::<Vec<_>>(),
        ["MSH", "PID", "ZPI", "SCH", "ZXX"]
    );
    let again = Message::parse(msg.as_bytes()).expect("re-parses");
    assert_eq!(
        again.segment_names().collect::<Vec<_>>(),
        ["MSH", "PID", "ZPI", "SCH", "ZXX"]
    );
    assert_eq!(get(&again, "PID-5-2").as_deref(), Some("jane"));
    assert_eq!(get(&again, "SCH-25").as_deref(), Some("Teleported"));
}

#[test]
fn a_long_run_of_line_feeds_parses_in_linear_time() {
    // Quadratic scanning would take hours on this; a linear parse takes milliseconds.
    for tail in [&b""[..], b"X"] {
        let mut raw = b"MSH|^~\\&|A|B|C|D|2026||ADT^A01|1|P|2.5\rPID|1\n".to_vec();
        raw.extend(std::iter::repeat_n(b'\n', 1 << 20));
        raw.extend_from_slice(tail);
        let msg = Message::parse(&raw).expect("parses");
        assert_eq!(msg.count("PID").expect("path"), 1);
    }
}

#[test]
fn a_bare_lf_inside_a_cr_terminated_message_is_text() {
    let raw = b"MSH|^~\\&|A|B\rOBX|1|TX|NOTE||line one\nline two\r\nNTE|1\r";
    let msg = Message::parse(raw).expect("parses");
    assert_eq!(
        msg.segment_names().collect::<Vec<_>>(),
        ["MSH", "OBX", "NTE"]
    );
    assert_eq!(get(&msg, "OBX-5").as_deref(), Some("line one\nline two"));
    assert_eq!(msg.as_bytes(), raw);
}

#[test]
fn invalid_text_offsets_count_the_bom() {
    let raw = b"\xef\xbb\xbfMSH|^~\\&|\xff";
    assert!(matches!(
        Message::parse(raw),
        Err(ParseError::InvalidText { offset: 12, .. })
    ));
}

#[test]
fn charset_changes_that_would_reread_text_are_refused() {
    let mut msg = Message::parse("MSH|^~\\&|A|B\rPID|1||é\r".as_bytes()).expect("parses");
    let before = msg.as_bytes().to_vec();
    let err = msg.set("MSH-18", "8859/1").expect_err("would garble é");
    assert!(matches!(err, EditError::CharsetChange { .. }), "{err}");
    assert_eq!(msg.as_bytes(), before);
    let mut ascii = Message::parse(b"MSH|^~\\&|A|B\rPID|1||e\r").expect("parses");
    ascii
        .set("MSH-18", "8859/1")
        .expect("pure ASCII may change charset");
    assert_eq!(ascii.charset(), Charset::Latin1);
}

#[test]
fn header_segments_cannot_be_created_or_stripped_by_edits() {
    let mut msg = adt();
    assert!(msg.set("BHS-3", "x").is_err());
    assert!(msg.remove("MSH-1").is_err());
    assert!(msg.remove("MSH-2").is_err());
    assert_eq!(msg.as_bytes(), ADT.as_bytes());
}

#[test]
fn mllp_frame_markers_inside_a_message_are_refused_and_set_escapes_them() {
    // A raw 0x1C (or 0x0B) in a field: refused with its offset, never read as text that
    // could not be sent on over MLLP.
    let raw = b"MSH|^~\\&|A|B|C|D|2025||ADT^A01|1|P|2.5\rOBX|1|ED|PDF||abc\x1cdef\r";
    let err = Message::parse(raw).expect_err("0x1C refused");
    assert_eq!(
        err,
        ParseError::FramingByte {
            offset: 56,
            byte: 0x1C
        }
    );
    assert!(err.to_string().contains("0x1C"), "{err}");
    assert!(matches!(
        Message::parse(b"\x0bMSH|^~\\&|A|B\r"),
        Err(ParseError::FramingByte {
            offset: 0,
            byte: 0x0B
        })
    ));

    // Written through `set`, such a byte is escaped, and the message still parses.
    let mut msg = Message::parse(b"MSH|^~\\&|A|B\rPID|1\r").expect("parses");
    msg.set("PID-5-2", "JOHN\x1cSMITH").expect("set");
    assert!(!msg.as_bytes().contains(&0x1C));
    assert_eq!(get(&msg, "PID-5-2").as_deref(), Some("JOHN\x1cSMITH"));
    Message::parse(msg.as_bytes()).expect("re-parses");
}

#[test]
fn a_bare_lf_before_a_segment_ends_a_segment_even_when_msh_ends_in_crlf() {
    // Senders that mix terminators: CRLF after MSH, bare LF after the rest.
    let raw = b"MSH|^~\\&|S|F|R|F|2025||SIU^S12|MIX1|P|2.5\r\nPID|1||1||doe^john|||unknownsex\nSCH|1|2\nNTE|1||first line\nsecond line\r";
    let msg = Message::parse(raw).expect("parses");
    assert_eq!(msg.count("PID").expect("path"), 1);
    assert_eq!(get(&msg, "PID-8").as_deref(), Some("unknownsex"));
    assert_eq!(get(&msg, "SCH-2").as_deref(), Some("2"));
    // An LF followed by text is still a line break inside the note.
    assert_eq!(
        get(&msg, "NTE-3").as_deref(),
        Some("first line\nsecond line")
    );
}

#[test]
fn in_a_cr_message_a_bare_lf_is_always_text() {
    // A multi-line value whose last line looks like a segment name stays one field.
    let raw = b"MSH|^~\\&|S|F|R|F|2025||ORU^R01|LF1|P|2.5\rOBX|1|TX|BP||Systolic\n120|mmHg|N\rOBX|2|TX|NOTE||see\nPOS|x\r";
    let msg = Message::parse(raw).expect("parses");
    assert_eq!(msg.count("OBX").expect("path"), 2);
    assert_eq!(get(&msg, "OBX[1]-5").as_deref(), Some("Systolic\n120"));
    assert_eq!(get(&msg, "OBX[1]-6").as_deref(), Some("mmHg"));
    assert_eq!(get(&msg, "OBX[2]-5").as_deref(), Some("see\nPOS"));
}

#[test]
fn a_sender_known_to_use_latin1_is_read_with_a_default_charset() {
    use plexus_hl7::Charset;
    // Latin-1 bytes, MSH-18 empty: refused as UTF-8, read with the site's default.
    let raw = b"MSH|^~\\&|A|B|C|D|2025||ADT^A08|L1|P|2.5\rPID|1||X||M\xdcLLER^J\xd6RG\r".to_vec();
    assert!(matches!(
        Message::parse(&raw),
        Err(ParseError::InvalidText { .. })
    ));
    let mut msg = Message::parse_owned_with_charset(raw.clone(), Charset::Latin1).expect("parses");
    assert_eq!(msg.charset(), Charset::Latin1);
    assert_eq!(get(&msg, "PID-5-1").as_deref(), Some("MÜLLER"));
    // An edit keeps the message in Latin-1, also when it re-indexes the whole message.
    msg.set("PID-5-2", "Jürgen").expect("set");
    msg.set("MSH-3", "Zoë").expect("set in the header");
    assert!(msg.as_bytes().windows(2).any(|w| w == b"\xfcr"));
    assert_eq!(get(&msg, "MSH-3").as_deref(), Some("Zoë"));
    // A declared MSH-18 still wins over the default.
    let declared =
        b"MSH|^~\\&|A|B|C|D|2025||ADT^A08|L2|P|2.5||||||UNICODE UTF-8\rPID|1||X||M\xc3\x9cLLER\r";
    let msg = Message::parse_with_charset(declared, Charset::Latin1).expect("parses");
    assert_eq!(get(&msg, "PID-5-1").as_deref(), Some("MÜLLER"));
}

#[test]
fn emptying_a_declared_charset_is_refused_like_any_charset_change() {
    use plexus_hl7::Charset;
    let raw =
        b"MSH|^~\\&|A|B|C|D|2025||ADT^A08|L3|P|2.5||||||8859/1\rPID|1||X||M\xdcLLER\r".to_vec();
    // Parsed with the default (an empty MSH-18 would mean UTF-8): emptying MSH-18 would
    // re-read the Latin-1 text as UTF-8.
    let mut msg = Message::parse_owned(raw.clone()).expect("parses");
    assert!(msg.set("MSH-18", "").is_err());
    assert_eq!(msg.as_bytes(), &raw[..], "a refused edit changes nothing");
    // Parsed where an empty MSH-18 means Latin-1: the same edit changes nothing.
    let mut msg = Message::parse_owned_with_charset(raw, Charset::Latin1).expect("parses");
    msg.set("MSH-18", "").expect("still Latin-1");
    assert_eq!(msg.charset(), Charset::Latin1);
}

#[test]
fn an_msh_18_of_hl7_null_states_no_charset() {
    let raw = b"MSH|^~\\&|A|B|C|D|2026||ADT^A01|N1|P|2.5||||||\"\"\rPID|1\r";
    let msg = Message::parse(raw).expect("\"\" is no charset stated, not an unknown one");
    let plain =
        Message::parse(b"MSH|^~\\&|A|B|C|D|2026||ADT^A01|N1|P|2.5\rPID|1\r").expect("parses");
    assert_eq!(msg.charset(), plain.charset());
}
