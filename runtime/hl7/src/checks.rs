//! Invariants shared by the fuzz targets (`fuzz/`) and the regression test that replays
//! their corpus in CI. Each function panics when an invariant breaks; that is the signal
//! a fuzzer looks for. Not part of the API.

use crate::ack::{self, AckCode, AckError, ErrorCode, Status};
use crate::message::Message;
use crate::path::Path;

/// parse → encode → parse is stable, every element decodes, and any input gets an answer.
pub fn parse_roundtrip(data: &[u8]) {
    let nak = ack::reject_unparseable(
        data,
        &AckError::new(ErrorCode::InternalError, "fuzz"),
        "N",
        "T",
    );
    let nak = Message::parse(&nak).unwrap_or_else(|e| panic!("NAK does not parse: {e}"));
    assert!(matches!(
        AckCode::of_ack(&nak),
        Some((AckCode::AR | AckCode::CR, _))
    ));

    let Ok(msg) = Message::parse(data) else {
        return;
    };
    assert_eq!(
        msg.as_bytes(),
        data,
        "an unedited message re-encodes byte for byte"
    );
    let again = Message::parse(msg.as_bytes()).unwrap_or_else(|e| panic!("re-parse failed: {e}"));
    assert_eq!(again.segment_count(), msg.segment_count());
    for seg in msg.segments() {
        for (_, field) in seg.fields() {
            let _ = field.text();
            for rep in field.children() {
                for comp in rep.children() {
                    for sub in comp.children() {
                        let _ = sub.text();
                    }
                }
            }
        }
    }
    if let Some(reply) = ack::acknowledge(&msg, Status::Accepted, None, "A", "T") {
        let reply = Message::parse(&reply).unwrap_or_else(|e| panic!("ACK does not parse: {e}"));
        assert!(AckCode::of_ack(&reply).is_some());
    }
}

/// Path operations on a fixed message never panic, and a successful `set` reads back.
///
/// `data` is `path \0 value`; without a NUL it is all path.
pub fn path_ops(data: &[u8]) {
    const BASE: &[u8] =
        b"MSH|^~\\&|A|B|C|D|20260101||ADT^A01|1|P|2.5\rPID|1||X~Y^^^Z&Q||DOE^JANE\rOBX|1\rOBX|2\r";
    let (path, value) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    let (Ok(path), Ok(value)) = (std::str::from_utf8(path), std::str::from_utf8(value)) else {
        return;
    };
    let mut msg = Message::parse(BASE).expect("the base message parses");
    let _ = msg.get(path);
    let _ = msg.get_raw(path);
    let _ = msg.count(path);
    let Ok(parsed) = Path::parse(path) else {
        return;
    };
    let before = msg.segment_count();
    if msg.set(parsed, value).is_ok() {
        let read = msg.get(parsed).expect("a path that set accepted reads");
        let want = (!value.is_empty()).then_some(value);
        assert_eq!(read.as_deref(), want, "set then get at {parsed}");
        assert!(msg.segment_count() <= before + 1);
        Message::parse(msg.as_bytes()).expect("an edited message parses");
    } else {
        assert_eq!(
            msg.as_bytes(),
            BASE,
            "a failed set leaves the message unchanged"
        );
    }
    let _ = msg.remove(parsed);
    Message::parse(msg.as_bytes()).expect("after remove the message parses");
}
