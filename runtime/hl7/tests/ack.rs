//! ACK building in original and enhanced mode, and NAKs for unparseable input.

use plexus_hl7::Message;
use plexus_hl7::ack::{self, AckCode, AckError, ErrorCode, Status};

const TS: &str = "20261124120000+0000";

fn msg_with(ack_fields: &str, version: &str) -> Vec<u8> {
    format!(
        "MSH|^~\\&|SCHED|CLINIC|EHR|HOSP|20260101||SIU^S12^SIU_S12|CTRL-42|T|{version}{ack_fields}\rSCH|1\r"
    )
    .into_bytes()
}

fn parse_ack(bytes: &[u8]) -> Message<'static> {
    Message::parse_owned(bytes.to_vec()).expect("ACK parses")
}

fn get(msg: &Message<'_>, path: &str) -> Option<String> {
    msg.get(path).expect("path").map(|c| c.into_owned())
}

#[test]
fn original_mode_accept_swaps_parties_and_echoes() {
    let raw = msg_with("", "2.5.1");
    let msg = Message::parse(&raw).expect("parses");
    let reply =
        ack::acknowledge(&msg, Status::Accepted, None, "ACK-1", TS).expect("always answered");
    let ack = parse_ack(&reply);
    assert_eq!(get(&ack, "MSA-1").as_deref(), Some("AA"));
    assert_eq!(get(&ack, "MSA-2").as_deref(), Some("CTRL-42"));
    assert_eq!(get(&ack, "MSH-3").as_deref(), Some("EHR"));
    assert_eq!(get(&ack, "MSH-4").as_deref(), Some("HOSP"));
    assert_eq!(get(&ack, "MSH-5").as_deref(), Some("SCHED"));
    assert_eq!(get(&ack, "MSH-6").as_deref(), Some("CLINIC"));
    assert_eq!(get(&ack, "MSH-7").as_deref(), Some(TS));
    assert_eq!(get(&ack, "MSH-9-1").as_deref(), Some("ACK"));
    assert_eq!(get(&ack, "MSH-9-2").as_deref(), Some("S12"));
    assert_eq!(get(&ack, "MSH-9-3").as_deref(), Some("ACK"));
    assert_eq!(get(&ack, "MSH-10").as_deref(), Some("ACK-1"));
    assert_eq!(get(&ack, "MSH-11").as_deref(), Some("T"));
    assert_eq!(get(&ack, "MSH-12").as_deref(), Some("2.5.1"));
    assert_eq!(ack.count("ERR").expect("count"), 0);
    assert_eq!(
        AckCode::of_ack(&ack),
        Some((AckCode::AA, Some("CTRL-42".to_owned())))
    );
}

#[test]
fn blank_msh15_and_msh16_mean_original_mode() {
    // A sender that pads MSH-15/16 with spaces (seen in the public corpus) asked for
    // nothing: it gets AA, not CA.
    for fields in ["||| | ", "||| ", "|||\"\"|  "] {
        let raw = msg_with(fields, "2.5.1");
        let msg = Message::parse(&raw).expect("parses");
        let reply = ack::acknowledge(&msg, Status::Accepted, None, "A1", TS).expect("answered");
        assert_eq!(
            get(&parse_ack(&reply), "MSA-1").as_deref(),
            Some("AA"),
            "{fields:?}"
        );
    }
}

#[test]
fn error_carries_err_segment_with_location_code_and_reason() {
    let raw = msg_with("", "2.5.1");
    let msg = Message::parse(&raw).expect("parses");
    let err = AckError::new(
        ErrorCode::TableValueNotFound,
        "status \"Roomed\" has no mapping | see table",
    )
    .at("SCH[1]-25-1".parse().expect("path"));
    let ack =
        parse_ack(&ack::acknowledge(&msg, Status::Error, Some(&err), "A2", TS).expect("answered"));
    assert_eq!(get(&ack, "MSA-1").as_deref(), Some("AE"));
    assert_eq!(get(&ack, "ERR-2-1").as_deref(), Some("SCH"));
    assert_eq!(get(&ack, "ERR-2-2").as_deref(), Some("1"));
    assert_eq!(get(&ack, "ERR-2-3").as_deref(), Some("25"));
    assert_eq!(get(&ack, "ERR-2-4").as_deref(), Some("1"));
    assert_eq!(get(&ack, "ERR-2-5").as_deref(), Some("1"));
    assert_eq!(get(&ack, "ERR-3-1").as_deref(), Some("103"));
    assert_eq!(
        get(&ack, "ERR-3-2").as_deref(),
        Some("Table value not found")
    );
    assert_eq!(get(&ack, "ERR-3-3").as_deref(), Some("HL70357"));
    assert_eq!(get(&ack, "ERR-4").as_deref(), Some("E"));
    assert_eq!(
        get(&ack, "ERR-8").as_deref(),
        Some("status \"Roomed\" has no mapping | see table"),
        "the reason is escaped, not allowed to break the segment"
    );
    assert_eq!(get(&ack, "MSA-3"), None, "MSA-3 is withdrawn in 2.5+");
}

#[test]
fn older_versions_get_msa3_and_err1() {
    let raw = msg_with("", "2.3");
    let msg = Message::parse(&raw).expect("parses");
    let err = AckError::new(ErrorCode::RequiredFieldMissing, "PID-3 is empty")
        .at("PID-3".parse().expect("path"));
    let ack = parse_ack(
        &ack::acknowledge(&msg, Status::Rejected, Some(&err), "A3", TS).expect("answered"),
    );
    assert_eq!(get(&ack, "MSA-1").as_deref(), Some("AR"));
    assert_eq!(get(&ack, "MSA-3").as_deref(), Some("PID-3 is empty"));
    assert_eq!(get(&ack, "ERR-1-1").as_deref(), Some("PID"));
    assert_eq!(get(&ack, "ERR-1-3").as_deref(), Some("3"));
    assert_eq!(get(&ack, "ERR-1-4-1").as_deref(), Some("101"));
    assert_eq!(get(&ack, "ERR-1-4-3").as_deref(), Some("HL70357"));
    assert_eq!(
        get(&ack, "MSH-9-3"),
        None,
        "2.3 message types have two components"
    );
}

#[test]
fn enhanced_mode_follows_msh15() {
    let cases = [
        ("|||AL|NE", Status::Accepted, Some("CA")),
        ("|||AL|AL", Status::Error, Some("CE")),
        ("|||AL|AL", Status::Rejected, Some("CR")),
        ("|||NE|AL", Status::Accepted, None),
        ("|||NE|AL", Status::Rejected, None),
        ("|||ER|AL", Status::Accepted, None),
        ("|||ER|AL", Status::Error, Some("CE")),
        ("|||SU|AL", Status::Accepted, Some("CA")),
        ("|||SU|AL", Status::Rejected, None),
        ("||||AL", Status::Accepted, Some("CA")),
        ("|||AL", Status::Accepted, Some("CA")),
        ("||||", Status::Accepted, Some("AA")),
    ];
    for (fields, status, expected) in cases {
        let raw = msg_with(fields, "2.5");
        let msg = Message::parse(&raw).expect("parses");
        let reply = ack::acknowledge(&msg, status, None, "A", TS);
        let code = reply.map(|r| get(&parse_ack(&r), "MSA-1").expect("MSA-1"));
        assert_eq!(code.as_deref(), expected, "{fields} {status:?}");
    }
}

#[test]
fn the_ack_uses_the_senders_delimiters() {
    let raw = b"MSH#$~\\&#SCHED#CLINIC#EHR#HOSP#20260101##SIU$S12#ID$1#P#2.5\rSCH#1\r";
    let msg = Message::parse(raw).expect("parses");
    let reply = ack::acknowledge(&msg, Status::Accepted, None, "A", TS).expect("answered");
    assert!(reply.starts_with(b"MSH#$~\\&#EHR#HOSP#SCHED#CLINIC#"));
    let ack = parse_ack(&reply);
    assert_eq!(get(&ack, "MSA-2-1").as_deref(), Some("ID"));
    assert_eq!(get(&ack, "MSA-2-2").as_deref(), Some("1"));
    assert_eq!(get(&ack, "MSH-7").as_deref(), Some(TS));
}

#[test]
fn a_plus_delimiter_gets_a_timestamp_without_its_offset() {
    // `+` is the component separator here: `+0000` would be a second component.
    let raw = b"MSH|+~\\&|SCHED|CLINIC|EHR|HOSP|20260101||SIU+S12|ID1|P|2.5\rSCH|1\r";
    let msg = Message::parse(raw).expect("parses");
    let reply = ack::acknowledge(&msg, Status::Accepted, None, "A", TS).expect("answered");
    let ack = parse_ack(&reply);
    assert_eq!(get(&ack, "MSH-7").as_deref(), Some("20261124120000"));
    assert!(
        !String::from_utf8_lossy(&reply).contains("\\S\\"),
        "nothing escaped"
    );
}

#[test]
fn unparseable_input_still_gets_an_answer() {
    let err = AckError::new(
        ErrorCode::SegmentSequence,
        "segment 2 does not start with a segment name",
    );
    // MSH readable, body broken: MSH-10 is echoed.
    let raw = b"MSH|^~\\&|LAB|HOSP|EHR|CLINIC|20260101||ORU^R01|LAB-77|P|2.4\r!!broken\r";
    assert!(Message::parse(raw).is_err());
    let ack = parse_ack(&ack::reject_unparseable(raw, &err, "N1", TS));
    assert_eq!(get(&ack, "MSA-1").as_deref(), Some("AR"));
    assert_eq!(get(&ack, "MSA-2").as_deref(), Some("LAB-77"));
    assert_eq!(get(&ack, "MSH-5").as_deref(), Some("LAB"));
    assert_eq!(
        get(&ack, "MSA-3").as_deref(),
        Some("segment 2 does not start with a segment name")
    );

    // Enhanced mode asked for: CR.
    let raw = b"MSH|^~\\&|LAB|HOSP|EHR|CLINIC|20260101||ORU^R01|LAB-78|P|2.5|||AL|NE\rPI\r";
    let ack = parse_ack(&ack::reject_unparseable(raw, &err, "N2", TS));
    assert_eq!(get(&ack, "MSA-1").as_deref(), Some("CR"));

    // Nothing recoverable: still an answer, with an empty MSA-2.
    for raw in [&b"garbage"[..], b"", b"\x00\x01\x02", b"MSH"] {
        let ack = parse_ack(&ack::reject_unparseable(raw, &err, "N3", TS));
        assert_eq!(get(&ack, "MSA-1").as_deref(), Some("AR"));
        assert_eq!(get(&ack, "MSA-2"), None);
    }

    // Hostile MSH-10 (control characters, delimiters of the fallback) is not echoed.
    let raw = b"MSH|^~|LAB|HOSP|EHR|CLINIC|20260101||ORU^R01|ID\x1c\x0bX|P|2.4\rPI\r";
    let reply = ack::reject_unparseable(raw, &err, "N4", TS);
    assert!(!reply.contains(&0x1c) && !reply.contains(&0x0b));
    parse_ack(&reply);
}

#[test]
fn echoed_values_cannot_break_the_frame() {
    // MLLP's own markers never parse (see `reject_unparseable` for their NAK); other
    // control characters do, and are not echoed either.
    let raw = b"MSH|^~\\&|SCHED|CLINIC|EHR|HOSP|20260101||SIU^S12|ID\x0bX|P|2.5\rSCH|1\r";
    assert!(Message::parse(raw).is_err());
    let raw = b"MSH|^~\\&|SCHED|CLINIC|EHR|HOSP|20260101||SIU^S12|ID\x07\x00X|P|2.5\rSCH|1\r";
    let msg = Message::parse(raw).expect("parses");
    let reply = ack::acknowledge(&msg, Status::Accepted, None, "A", TS).expect("answered");
    assert!(!reply.contains(&0x07) && !reply.contains(&0x00));
    assert_eq!(get(&parse_ack(&reply), "MSA-2"), None);
}

#[test]
fn unrepresentable_reason_is_written_once() {
    let raw = b"MSH|^~\\&|A|B|C|D|2026||ADT^A01|X|P|2.5||||||8859/1\rPID|1\r";
    let msg = Message::parse(raw).expect("parses");
    let err = AckError::new(ErrorCode::InternalError, "a|b \u{65e5}");
    let ack =
        parse_ack(&ack::acknowledge(&msg, Status::Error, Some(&err), "A", TS).expect("answered"));
    assert_eq!(get(&ack, "ERR-8").as_deref(), Some("a|b ?"));
}

#[test]
fn nak_echoes_only_a_real_header_line() {
    let raw = b"XYZ|broken\rPID|1||||DOE^JANE||||||1 MSH|^~\\&|LEAK|LEAK\r";
    let err = AckError::new(ErrorCode::SegmentSequence, "no header");
    let reply = ack::reject_unparseable(raw, &err, "N", TS);
    assert!(!String::from_utf8_lossy(&reply).contains("LEAK"));
    let framed = b"\x0bMSH|^~\\&|LAB|H|EHR|H|2026||ORU^R01|L-1|P|2.5\rPI\r";
    let ack = parse_ack(&ack::reject_unparseable(framed, &err, "N", TS));
    assert_eq!(get(&ack, "MSA-2").as_deref(), Some("L-1"));
}

#[test]
fn explicit_null_ack_fields_mean_original_mode() {
    let raw = msg_with("|||\"\"|\"\"", "2.5");
    let msg = Message::parse(&raw).expect("parses");
    let ack =
        parse_ack(&ack::acknowledge(&msg, Status::Accepted, None, "A", TS).expect("answered"));
    assert_eq!(get(&ack, "MSA-1").as_deref(), Some("AA"));
}

#[test]
fn acks_are_not_acknowledged_and_warnings_are_not_errors() {
    let incoming = b"MSH|^~\\&|EHR|H|LAB|H|2026||ACK^R01^ACK|A9|P|2.5\rMSA|AA|L-1\r";
    let msg = Message::parse(incoming).expect("parses");
    assert_eq!(
        ack::acknowledge(&msg, Status::Accepted, None, "A", TS),
        None
    );

    let raw = msg_with("", "2.5");
    let msg = Message::parse(&raw).expect("parses");
    let warn = AckError::new(
        ErrorCode::TableValueNotFound,
        "status passed through unmapped",
    );
    let ack = parse_ack(
        &ack::acknowledge(&msg, Status::Accepted, Some(&warn), "A", TS).expect("answered"),
    );
    assert_eq!(get(&ack, "ERR-4").as_deref(), Some("W"));
}

#[test]
fn versions_with_custom_delimiters_pick_the_right_err_layout() {
    let raw = b"MSH#$~\\&#A#B#C#D#2026##ORU$R01#X#P#2.4$USA\rPID#1\r";
    let msg = Message::parse(raw).expect("parses");
    let err = AckError::new(ErrorCode::RequiredFieldMissing, "missing");
    let ack =
        parse_ack(&ack::acknowledge(&msg, Status::Error, Some(&err), "A", TS).expect("answered"));
    assert_eq!(
        get(&ack, "ERR-1-4-1").as_deref(),
        Some("101"),
        "2.4 uses ERR-1"
    );
    assert_eq!(get(&ack, "MSA-3").as_deref(), Some("missing"));
}

#[test]
fn the_ack_declares_the_charset_its_echoed_bytes_are_in() {
    // MSH-18 with a second repetition holding a control character: the raw field cannot
    // be echoed, but the Latin-1 sender name is, so the ACK must still say 8859/1.
    let raw = b"MSH|^~\\&|\xd8LAB|B|C|D|20260101||ADT^A01|1|P|2.5||||||8859/1~\x00\r";
    let msg = Message::parse(raw).expect("parses");
    let ack =
        parse_ack(&ack::acknowledge(&msg, Status::Accepted, None, "A", TS).expect("answered"));
    assert_eq!(get(&ack, "MSH-18").as_deref(), Some("8859/1"));
    assert_eq!(get(&ack, "MSH-5").as_deref(), Some("ØLAB"));
}

#[test]
fn the_charset_code_survives_delimiters_that_appear_in_it() {
    // `/` is the component separator here, and `8859/1` holds one.
    let raw = b"MSH|/~\\&|\xd8LAB|B|C|D|20260101||ADT/A01|1|P|2.5||||||8859\\S\\1\r";
    let msg = Message::parse(raw).expect("parses");
    assert_eq!(msg.charset(), plexus_hl7::Charset::Latin1);
    let ack =
        parse_ack(&ack::acknowledge(&msg, Status::Accepted, None, "A", TS).expect("answered"));
    assert_eq!(ack.charset(), plexus_hl7::Charset::Latin1);
    assert_eq!(get(&ack, "MSH-5").as_deref(), Some("ØLAB"));
    // MSH-18 is a code, not a composite: the raw `8859/1` reads whole.
    let unescaped = b"MSH|/~\\&|A|B|C|D|20260101||ADT/A01|1|P|2.5||||||8859/1\r";
    assert_eq!(
        Message::parse(unescaped).expect("parses").charset(),
        plexus_hl7::Charset::Latin1
    );
}

#[test]
fn the_code_for_an_unparseable_message_follows_what_its_msh_asks_for() {
    use plexus_hl7::ack::AckCode;
    let original = b"MSH|^~\\&|A|B|C|D|2026||ADT^A01|N5|P|2.5\rPID|1\r\x00";
    let enhanced = b"MSH|^~\\&|A|B|C|D|2026||ADT^A01|N6|P|2.5|||AL|NE\r\x00";
    assert_eq!(ack::unparseable_code(original), AckCode::AR);
    assert_eq!(ack::unparseable_code(enhanced), AckCode::CR);
    let err = AckError::new(ErrorCode::SegmentSequence, "bad");
    let reply = parse_ack(&ack::reject_unparseable(enhanced, &err, "N", TS));
    assert_eq!(get(&reply, "MSA-1").as_deref(), Some("CR"));
}
