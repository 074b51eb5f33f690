//! Acknowledgements: building the ACK a receiver owes for every message it is sent.
//!
//! * **Original mode** (MSH-15 and MSH-16 both empty): `AA`, `AE` or `AR`, always sent.
//! * **Enhanced mode** (either set): an accept acknowledgement `CA`, `CE` or `CR`, sent or
//!   not as MSH-15 asks (`AL` always, `NE` never, `ER` only on error, `SU` only on success;
//!   empty counts as `AL`). The application acknowledgement follows later as its own message.
//!
//! The ACK swaps sender and receiver, echoes MSH-10 in MSA-2, echoes the version, processing
//! id and charset, and, on error, carries an ERR segment with the location, the HL7 table
//! 0357 code and a human reason. It is written with the original message's delimiters, so
//! values copied from the original need no re-encoding.
//!
//! ```
//! use plexus_hl7::{Message, ack::{self, AckError, ErrorCode, Status}};
//!
//! let msg = Message::parse(b"MSH|^~\\&|LAB|HOSP|EHR|CLINIC|20260101||ORU^R01|MSG1|P|2.5.1\rPID|1\r")?;
//! let err = AckError::new(ErrorCode::RequiredFieldMissing, "patient identifier list is empty")
//!     .at("PID-3".parse()?);
//! let reply = ack::acknowledge(&msg, Status::Error, Some(&err), "ACK1", "20260101120000").unwrap();
//! let reply = Message::parse(&reply)?;
//! assert_eq!(reply.get("MSA-1")?.as_deref(), Some("AE"));
//! assert_eq!(reply.get("MSA-2")?.as_deref(), Some("MSG1"));
//! assert_eq!(reply.get("MSH-3")?.as_deref(), Some("EHR"));
//! assert_eq!(reply.get("ERR-3-1")?.as_deref(), Some("101"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::charset::Charset;
use crate::delim::Delimiters;
use crate::escape;
use crate::message::Message;
use crate::path::Path;

/// An acknowledgement code (HL7 table 0008).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AckCode {
    /// Original mode: application accept.
    AA,
    /// Original mode: application error.
    AE,
    /// Original mode: application reject.
    AR,
    /// Enhanced mode: commit accept.
    CA,
    /// Enhanced mode: commit error.
    CE,
    /// Enhanced mode: commit reject.
    CR,
}

impl AckCode {
    /// The two-letter code.
    pub fn as_str(self) -> &'static str {
        match self {
            AckCode::AA => "AA",
            AckCode::AE => "AE",
            AckCode::AR => "AR",
            AckCode::CA => "CA",
            AckCode::CE => "CE",
            AckCode::CR => "CR",
        }
    }

    /// Reads a code; `None` for anything not in table 0008.
    pub fn parse(code: &str) -> Option<AckCode> {
        Some(match code.trim() {
            "AA" => AckCode::AA,
            "AE" => AckCode::AE,
            "AR" => AckCode::AR,
            "CA" => AckCode::CA,
            "CE" => AckCode::CE,
            "CR" => AckCode::CR,
            _ => return None,
        })
    }

    /// The status this code reports.
    pub fn status(self) -> Status {
        match self {
            AckCode::AA | AckCode::CA => Status::Accepted,
            AckCode::AE | AckCode::CE => Status::Error,
            AckCode::AR | AckCode::CR => Status::Rejected,
        }
    }

    /// Reads MSA-1 and MSA-2 of a received ACK: its code and the control id it answers.
    pub fn of_ack(ack: &Message<'_>) -> Option<(AckCode, Option<String>)> {
        let code = AckCode::parse(&ack.get(MSA_1).ok()??)?;
        let id = ack.get(MSA_2).ok().flatten().map(|c| c.into_owned());
        Some((code, id))
    }
}

const MSA_1: Path = Path::fixed(*b"MSA", 1);
const MSA_2: Path = Path::fixed(*b"MSA", 2);

impl fmt::Display for AckCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the receiver made of the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Taken (journaled, for Plexus).
    Accepted,
    /// Not taken because of something in the message; sending it again as it is won't help.
    Error,
    /// Refused (not parseable, unsupported type or version, or the receiver cannot take it).
    Rejected,
}

/// HL7 table 0357: message error condition codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum ErrorCode {
    SegmentSequence,
    RequiredFieldMissing,
    DataType,
    TableValueNotFound,
    ValueTooLong,
    UnsupportedMessageType,
    UnsupportedEventCode,
    UnsupportedProcessingId,
    UnsupportedVersionId,
    UnknownKey,
    DuplicateKey,
    RecordLocked,
    InternalError,
}

impl ErrorCode {
    /// The numeric code.
    pub fn code(self) -> u16 {
        match self {
            ErrorCode::SegmentSequence => 100,
            ErrorCode::RequiredFieldMissing => 101,
            ErrorCode::DataType => 102,
            ErrorCode::TableValueNotFound => 103,
            ErrorCode::ValueTooLong => 104,
            ErrorCode::UnsupportedMessageType => 200,
            ErrorCode::UnsupportedEventCode => 201,
            ErrorCode::UnsupportedProcessingId => 202,
            ErrorCode::UnsupportedVersionId => 203,
            ErrorCode::UnknownKey => 204,
            ErrorCode::DuplicateKey => 205,
            ErrorCode::RecordLocked => 206,
            ErrorCode::InternalError => 207,
        }
    }

    /// The table's description of the code.
    pub fn text(self) -> &'static str {
        match self {
            ErrorCode::SegmentSequence => "Segment sequence error",
            ErrorCode::RequiredFieldMissing => "Required field missing",
            ErrorCode::DataType => "Data type error",
            ErrorCode::TableValueNotFound => "Table value not found",
            ErrorCode::ValueTooLong => "Value too long",
            ErrorCode::UnsupportedMessageType => "Unsupported message type",
            ErrorCode::UnsupportedEventCode => "Unsupported event code",
            ErrorCode::UnsupportedProcessingId => "Unsupported processing id",
            ErrorCode::UnsupportedVersionId => "Unsupported version id",
            ErrorCode::UnknownKey => "Unknown key identifier",
            ErrorCode::DuplicateKey => "Duplicate key identifier",
            ErrorCode::RecordLocked => "Application record locked",
            ErrorCode::InternalError => "Application internal error",
        }
    }
}

/// The ERR segment's content: what went wrong and where. Never put message content in
/// the reason: it travels back to the sender and into logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckError {
    /// Table 0357 code.
    pub code: ErrorCode,
    /// Where in the message, if known.
    pub location: Option<Path>,
    /// A sentence a person can act on.
    pub reason: String,
}

impl AckError {
    /// An error with a code and a reason.
    pub fn new(code: ErrorCode, reason: impl Into<String>) -> Self {
        AckError {
            code,
            location: None,
            reason: reason.into(),
        }
    }

    /// Sets the location.
    pub fn at(mut self, location: Path) -> Self {
        self.location = Some(location);
        self
    }
}

/// How the sender asked to be acknowledged (MSH-15 / MSH-16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckMode {
    /// Both empty: original mode, AA/AE/AR always.
    Original,
    /// Enhanced mode: accept ACK (CA/CE/CR) per `accept`; application ACK per `application`.
    Enhanced {
        /// MSH-15.
        accept: Condition,
        /// MSH-16.
        application: Condition,
    },
}

/// HL7 table 0155: when to acknowledge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// `AL` (and empty): always.
    Always,
    /// `NE`: never.
    Never,
    /// `ER`: only on error or reject.
    OnError,
    /// `SU`: only on success.
    OnSuccess,
}

impl Condition {
    fn parse(code: Option<&str>) -> Condition {
        match code.map(str::trim) {
            Some("NE") => Condition::Never,
            Some("ER") => Condition::OnError,
            Some("SU") => Condition::OnSuccess,
            _ => Condition::Always,
        }
    }

    /// Whether an acknowledgement with this status is wanted.
    pub fn wants(self, status: Status) -> bool {
        match self {
            Condition::Always => true,
            Condition::Never => false,
            Condition::OnError => status != Status::Accepted,
            Condition::OnSuccess => status == Status::Accepted,
        }
    }
}

impl AckMode {
    /// When the receiver of a message in this mode answers with an accept ACK: always in
    /// original mode, as MSH-15 says in enhanced mode.
    pub fn accept(self) -> Condition {
        match self {
            AckMode::Original => Condition::Always,
            AckMode::Enhanced { accept, .. } => accept,
        }
    }

    /// Reads the mode from MSH-15 and MSH-16.
    pub fn of(msg: &Message<'_>) -> AckMode {
        // The explicit null `""` and a blank value ask for nothing, same as empty.
        let read = |n| {
            msg.get(Path::fixed(*b"MSH", n))
                .ok()
                .flatten()
                .filter(|v| !v.trim().is_empty() && v.trim() != "\"\"")
        };
        let accept = read(15);
        let application = read(16);
        if accept.is_none() && application.is_none() {
            return AckMode::Original;
        }
        AckMode::Enhanced {
            accept: Condition::parse(accept.as_deref()),
            application: Condition::parse(application.as_deref()),
        }
    }

    /// The code to answer with in this mode.
    pub fn code(self, status: Status) -> AckCode {
        match (self, status) {
            (AckMode::Original, Status::Accepted) => AckCode::AA,
            (AckMode::Original, Status::Error) => AckCode::AE,
            (AckMode::Original, Status::Rejected) => AckCode::AR,
            (AckMode::Enhanced { .. }, Status::Accepted) => AckCode::CA,
            (AckMode::Enhanced { .. }, Status::Error) => AckCode::CE,
            (AckMode::Enhanced { .. }, Status::Rejected) => AckCode::CR,
        }
    }
}

/// The acknowledgement owed for `msg` on receipt: `None` only when the sender asked for
/// none in this case (enhanced mode, MSH-15 `NE`, `ER` or `SU`), or when `msg` is itself
/// an ACK (answering it would start an endless exchange).
///
/// `control_id` becomes the ACK's own MSH-10; `timestamp` its MSH-7 (see [`timestamp`]).
pub fn acknowledge(
    msg: &Message<'_>,
    status: Status,
    error: Option<&AckError>,
    control_id: &str,
    timestamp: &str,
) -> Option<Vec<u8>> {
    if msg.get(Path::fixed(*b"MSH", 9)).ok().flatten().as_deref() == Some("ACK") {
        // Acknowledging an acknowledgement would start an endless exchange.
        return None;
    }
    let mode = AckMode::of(msg);
    if let AckMode::Enhanced { accept, .. } = mode
        && !accept.wants(status)
    {
        return None;
    }
    Some(build(msg, mode.code(status), error, control_id, timestamp))
}

/// Builds an ACK with exactly the code given (application ACKs, tests, replies to a
/// message already judged).
pub fn build(
    msg: &Message<'_>,
    code: AckCode,
    error: Option<&AckError>,
    control_id: &str,
    timestamp: &str,
) -> Vec<u8> {
    // Echoed values are copied raw (same delimiters and charset), but only when they cannot
    // break the ACK: no control characters (0x0B/0x1C would end an MLLP frame early) and
    // a bounded length.
    let echo = |v: &'_ [u8]| v.len() <= 512 && !v.iter().any(|c| c.is_ascii_control());
    let raw = |field: u32| -> &[u8] {
        msg.get_raw(Path::fixed(*b"MSH", field))
            .ok()
            .flatten()
            .filter(|v| echo(v))
            .unwrap_or_default()
    };
    let trigger = msg
        .get_raw("MSH-9-2")
        .ok()
        .flatten()
        .filter(|v| echo(v))
        .unwrap_or_default();
    let header = Header {
        sending: [raw(5), raw(6)],
        receiving: [raw(3), raw(4)],
        trigger,
        processing_id: raw(11),
        version: raw(12),
        // Declare the charset the echoed bytes are actually in (the one the message was
        // read in), not a raw copy of MSH-18 that the echo filter might drop.
        charset: match msg.charset() {
            Charset::Ascii => b"",
            other => other.code().as_bytes(),
        },
        original_id: raw(10),
    };
    header.write(
        *msg.delimiters(),
        msg.charset(),
        code,
        error,
        control_id,
        timestamp,
    )
}

/// The code [`reject_unparseable`] answers `raw` with: AR, or CR when what can be read of
/// its MSH asks for enhanced mode.
pub fn unparseable_code(raw: &[u8]) -> AckCode {
    match Recovered::mode(&Recovered::scan(raw)) {
        AckMode::Original => AckCode::AR,
        AckMode::Enhanced { .. } => AckCode::CR,
    }
}

/// MSH-10 as [`reject_unparseable`] echoes it from bytes that did not parse: what the
/// sender will match the answer with, and what an operator looks the message up by.
/// `None` when no MSH line can be read or its MSH-10 is empty. Not unescaped; bytes that
/// are not UTF-8 are replaced.
pub fn recovered_control_id(raw: &[u8]) -> Option<String> {
    let recovered = Recovered::scan(raw);
    let id = recovered.fields.get(10).copied().unwrap_or_default();
    (!id.trim_ascii().is_empty()).then(|| String::from_utf8_lossy(id).into_owned())
}

/// MSH-9 as `TYPE^TRIGGER` (its first two components, joined with `^` whatever the
/// message's delimiter) from bytes that did not parse, for the journal's
/// `message_type`. `None` when no MSH line can be read or its MSH-9 is empty.
pub fn recovered_message_type(raw: &[u8]) -> Option<String> {
    let recovered = Recovered::scan(raw);
    let field = recovered.fields.get(9).copied().unwrap_or_default();
    let component = recovered.delims.component;
    let (code, trigger) = (
        first_component(field, component, 1).trim_ascii(),
        first_component(field, component, 2).trim_ascii(),
    );
    match (code.is_empty(), trigger.is_empty()) {
        (true, _) => None,
        (false, true) => Some(String::from_utf8_lossy(code).into_owned()),
        (false, false) => Some(format!(
            "{}^{}",
            String::from_utf8_lossy(code),
            String::from_utf8_lossy(trigger)
        )),
    }
}

/// A negative acknowledgement for bytes that could not be parsed at all.
///
/// Whatever can be recovered from an MSH line (delimiters, sender, receiver, MSH-10,
/// version) is echoed; the rest is left empty. Always produces an answer: with nothing
/// recoverable, MSA-2 is empty and the sender still learns why.
pub fn reject_unparseable(
    raw: &[u8],
    error: &AckError,
    control_id: &str,
    timestamp: &str,
) -> Vec<u8> {
    let recovered = Recovered::scan(raw);
    let field = |n: usize| recovered.fields.get(n).copied().unwrap_or_default();
    let header = Header {
        sending: [field(5), field(6)],
        receiving: [field(3), field(4)],
        trigger: first_component(field(9), recovered.delims.component, 2),
        processing_id: field(11),
        version: field(12),
        charset: field(18),
        original_id: field(10),
    };
    // An unparseable message might not be valid text in any charset it declares, so
    // the NAK's own text is plain ASCII and the charset is not echoed.
    let header = Header {
        charset: b"",
        ..header
    };
    let code = unparseable_code(raw);
    header.write(
        recovered.delims,
        Charset::Ascii,
        code,
        Some(error),
        control_id,
        timestamp,
    )
}

struct Header<'a> {
    sending: [&'a [u8]; 2],
    receiving: [&'a [u8]; 2],
    trigger: &'a [u8],
    processing_id: &'a [u8],
    version: &'a [u8],
    charset: &'a [u8],
    original_id: &'a [u8],
}

impl Header<'_> {
    fn write(
        &self,
        d: Delimiters,
        charset: Charset,
        code: AckCode,
        error: Option<&AckError>,
        control_id: &str,
        timestamp: &str,
    ) -> Vec<u8> {
        let version = Version::parse(self.version);
        let mut out = Vec::with_capacity(256);
        let f = d.field;
        out.extend_from_slice(b"MSH");
        out.push(f);
        out.extend_from_slice(&d.encoding_characters());
        for value in [
            self.sending[0],
            self.sending[1],
            self.receiving[0],
            self.receiving[1],
        ] {
            out.push(f);
            out.extend_from_slice(value);
        }
        out.push(f);
        // A sender whose delimiters include `+` or `-` would read the UTC offset as
        // structure (escaped, it is no timestamp): leave the offset out for it.
        let is_delimiter = |c: u8| {
            [d.field, d.component, d.repetition].contains(&c)
                || [d.escape, d.subcomponent, d.truncation].contains(&Some(c))
        };
        let timestamp = match timestamp.find(['+', '-']) {
            Some(at) if is_delimiter(b'+') || is_delimiter(b'-') => &timestamp[..at],
            _ => timestamp,
        };
        text(&mut out, timestamp, d, charset);
        out.push(f); // MSH-8 security
        out.push(f);
        out.extend_from_slice(b"ACK");
        if !self.trigger.is_empty() {
            out.push(d.component);
            out.extend_from_slice(self.trigger);
            if version >= Version(2, 3, 1) {
                out.push(d.component);
                out.extend_from_slice(b"ACK");
            }
        }
        out.push(f);
        text(&mut out, control_id, d, charset);
        out.push(f);
        out.extend_from_slice(if self.processing_id.is_empty() {
            b"P"
        } else {
            self.processing_id
        });
        out.push(f);
        out.extend_from_slice(if self.version.is_empty() {
            b"2.5.1"
        } else {
            self.version
        });
        if !self.charset.is_empty() {
            // MSH-13 .. MSH-17 empty, then MSH-18.
            out.extend(std::iter::repeat_n(f, 6));
            // Written as text: a code such as `8859/1` must be escaped when `/` is one of
            // the sender's delimiters.
            text(&mut out, &String::from_utf8_lossy(self.charset), d, charset);
        }
        out.push(b'\r');

        out.extend_from_slice(b"MSA");
        out.push(f);
        out.extend_from_slice(code.as_str().as_bytes());
        out.push(f);
        out.extend_from_slice(self.original_id);
        if let Some(err) = error.filter(|_| version < Version(2, 5, 0)) {
            // MSA-3, the text message: withdrawn from 2.5 on, where ERR-8 carries it.
            out.push(f);
            text(&mut out, &err.reason, d, charset);
        }
        out.push(b'\r');

        if let Some(err) = error {
            let severity = if code.status() == Status::Accepted {
                b'W'
            } else {
                b'E'
            };
            write_err(&mut out, err, d, charset, version, severity);
        }
        out
    }
}

fn write_err(
    out: &mut Vec<u8>,
    err: &AckError,
    d: Delimiters,
    charset: Charset,
    version: Version,
    severity: u8,
) {
    let f = d.field;
    let c = d.component;
    let seg = err.location.as_ref();
    let num = |n: Option<u32>| n.map(|n| n.to_string()).unwrap_or_default();
    out.extend_from_slice(b"ERR");
    out.push(f);
    if version < Version(2, 5, 0) {
        // ERR-1 (ELD): segment^sequence^field^code&text&HL70357
        if let Some(p) = seg {
            out.extend_from_slice(p.segment().as_bytes());
            out.push(c);
            out.extend_from_slice(p.occurrence().to_string().as_bytes());
            out.push(c);
            out.extend_from_slice(num(p.field()).as_bytes());
        } else {
            out.push(c);
            out.push(c);
        }
        out.push(c);
        out.extend_from_slice(err.code.code().to_string().as_bytes());
        if let Some(s) = d.subcomponent {
            out.push(s);
            text(out, err.code.text(), d, charset);
            out.push(s);
            out.extend_from_slice(b"HL70357");
        }
        out.push(b'\r');
        return;
    }
    // ERR-2 (ERL): segment^sequence^field^repetition^component^subcomponent
    out.push(f);
    if let Some(p) = seg {
        let parts = [
            p.segment().to_owned(),
            p.occurrence().to_string(),
            num(p.field()),
            num(p.field().map(|_| p.repetition().unwrap_or(1))),
            num(p.component()),
            num(p.subcomponent()),
        ];
        let used = parts
            .iter()
            .rposition(|s| !s.is_empty())
            .map_or(0, |i| i + 1);
        for (i, part) in parts[..used].iter().enumerate() {
            if i > 0 {
                out.push(c);
            }
            out.extend_from_slice(part.as_bytes());
        }
    }
    // ERR-3 (HL7 error code), ERR-4 severity, ERR-5..7 empty, ERR-8 user message.
    out.push(f);
    out.extend_from_slice(err.code.code().to_string().as_bytes());
    out.push(c);
    text(out, err.code.text(), d, charset);
    out.push(c);
    out.extend_from_slice(b"HL70357");
    out.push(f);
    out.push(severity);
    out.extend(std::iter::repeat_n(f, 4));
    text(out, &err.reason, d, charset);
    out.push(b'\r');
}

/// Writes our own text (reasons, ids) escaped for the ACK; characters the charset cannot
/// hold become `?` rather than failing the ACK.
fn text(out: &mut Vec<u8>, value: &str, d: Delimiters, charset: Charset) {
    let mark = out.len();
    if escape::encode_into(value, &d, charset, out).is_err() {
        // encode_into wrote part of the value before it failed.
        out.truncate(mark);
        let ascii: String = value
            .chars()
            .map(|c| if c.is_ascii() { c } else { '?' })
            .collect();
        // ASCII is representable in every supported charset.
        let _ = escape::encode_into(&ascii, &d, charset, out);
    }
}

/// A version id such as `2.5.1`, compared numerically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Version(u8, u8, u8);

impl Version {
    fn parse(raw: &[u8]) -> Version {
        let text = String::from_utf8_lossy(raw);
        // The version id is the leading digits and dots, whatever delimiter follows.
        let id = text
            .split(|c: char| !(c.is_ascii_digit() || c == '.'))
            .next()
            .unwrap_or_default();
        let mut parts = id.trim().split('.').map(|p| p.parse::<u8>().ok());
        match (
            parts.next().flatten(),
            parts.next().flatten(),
            parts.next().flatten(),
        ) {
            (Some(a), Some(b), c) => Version(a, b, c.unwrap_or(0)),
            // Unknown or missing: answer in the modern form.
            _ => Version(2, 5, 1),
        }
    }
}

/// What could be read of an MSH line in bytes that did not parse.
struct Recovered<'a> {
    delims: Delimiters,
    /// Indexed by MSH field number; values cleaned of anything that could break the NAK.
    fields: Vec<&'a [u8]>,
}

impl<'a> Recovered<'a> {
    fn scan(raw: &'a [u8]) -> Recovered<'a> {
        let nothing = Recovered {
            delims: Delimiters::default(),
            fields: Vec::new(),
        };
        // Only a line that starts with MSH (after a BOM, whitespace or a stray start block)
        // is a header; "MSH" inside some other line is content and is never echoed.
        let header = raw.split(|&c| c == b'\r' || c == b'\n').find_map(|line| {
            let line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
            let start = line
                .iter()
                .position(|c| !c.is_ascii_whitespace() && *c != 0x0b)?;
            line[start..].starts_with(b"MSH").then(|| &line[start..])
        });
        let Some(line) = header else {
            return nothing;
        };
        let Some(&sep) = line.get(3) else {
            return nothing;
        };
        let parts: Vec<&[u8]> = line[4..].split(|&c| c == sep).collect();
        let Some(delims) = parts
            .first()
            .and_then(|enc| Delimiters::from_header(sep, enc).ok())
        else {
            return nothing;
        };
        // Index = MSH field number: 0 unused, 1 the separator, 2 the encoding characters.
        let mut fields = vec![&b""[..]; 3];
        fields.extend(
            parts
                .iter()
                .skip(1)
                .map(|v| if is_safe(v, &delims) { *v } else { &b""[..] }),
        );
        Recovered { delims, fields }
    }

    fn mode(&self) -> AckMode {
        let get = |n: usize| {
            self.fields
                .get(n)
                .filter(|v| !v.trim_ascii().is_empty() && v.trim_ascii() != b"\"\"")
                .map(|v| String::from_utf8_lossy(v))
        };
        match (get(15), get(16)) {
            (None, None) => AckMode::Original,
            (a, b) => AckMode::Enhanced {
                accept: Condition::parse(a.as_deref()),
                application: Condition::parse(b.as_deref()),
            },
        }
    }
}

/// A recovered value may be echoed only if it is printable ASCII (so it is valid in the
/// NAK whatever the sender's charset) and cannot end the segment or the MLLP frame.
/// When MSH-2 was unusable the NAK falls back to `|^~\&`, so a value must not hold the
/// field separator or escape character it would be written with.
fn is_safe(value: &[u8], delims: &Delimiters) -> bool {
    value.len() <= 512
        && value.iter().all(|&c| {
            (c.is_ascii_graphic() || c == b' ') && c != delims.field && Some(c) != delims.escape
        })
}

fn first_component(value: &[u8], component: u8, n: usize) -> &[u8] {
    value
        .split(|&c| c == component)
        .nth(n - 1)
        .unwrap_or_default()
}

/// An HL7 timestamp (`YYYYMMDDHHMMSS+0000`, UTC) for MSH-7.
pub fn timestamp(at: SystemTime) -> String {
    let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    // Written digit by digit: one per ACK, and `format!` with widths cost about 1% of
    // `plexus bench`'s CPU.
    let mut out = String::with_capacity(19);
    let mut digits = |value: u64, width: u32| {
        for place in (0..width).rev() {
            let digit = (value / 10_u64.pow(place)) % 10;
            out.push(char::from(b'0' + digit as u8));
        }
    };
    digits(u64::try_from(y).unwrap_or(0).min(9999), 4);
    digits(u64::from(m), 2);
    digits(u64::from(d), 2);
    digits(rem / 3600, 2);
    digits(rem / 60 % 60, 2);
    digits(rem % 60, 2);
    out.push_str("+0000");
    out
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_type_of_bytes_that_did_not_parse_is_recovered() {
        // Unparseable (a byte that is not UTF-8, undeclared), but MSH-9 can be read.
        let raw = b"MSH|^~\\&|A|B|C|D|2026||SIU^S12^SIU_S12|BAD1|P|2.5\rPID|1||caf\xe9";
        assert_eq!(recovered_message_type(raw).as_deref(), Some("SIU^S12"));
        let hash = b"MSH#$~\\&#A#B#C#D#2026##ADT$A01#X#P#2.5";
        assert_eq!(recovered_message_type(hash).as_deref(), Some("ADT^A01"));
        assert_eq!(
            recovered_message_type(b"MSH|^~\\&|A|B|C|D|2026||ACK|X"),
            Some("ACK".into())
        );
        assert_eq!(recovered_message_type(b"MSH|^~\\&|A|B|C|D|2026|||X"), None);
        assert_eq!(recovered_message_type(b"not hl7"), None);
    }

    #[test]
    fn timestamps_are_civil_dates() {
        assert_eq!(timestamp(UNIX_EPOCH), "19700101000000+0000");
        let t = UNIX_EPOCH + std::time::Duration::from_secs(1_795_482_123);
        assert_eq!(timestamp(t), "20261124010203+0000");
        let leap = UNIX_EPOCH + std::time::Duration::from_secs(951_782_400);
        assert_eq!(timestamp(leap), "20000229000000+0000");
    }

    #[test]
    fn timestamps_match_the_formatted_fields_over_two_centuries() {
        // Every field and carry: a step that is not a whole number of minutes or days.
        for secs in (0..6_400_000_000_u64).step_by(9_876_543) {
            let days = i64::try_from(secs / 86_400).expect("days");
            let rem = secs % 86_400;
            let (y, m, d) = civil_from_days(days);
            let expected = format!(
                "{y:04}{m:02}{d:02}{:02}{:02}{:02}+0000",
                rem / 3600,
                rem / 60 % 60,
                rem % 60
            );
            let at = UNIX_EPOCH + std::time::Duration::from_secs(secs);
            assert_eq!(timestamp(at), expected, "{secs}");
        }
    }

    #[test]
    fn versions_compare_numerically() {
        assert!(Version::parse(b"2.10") > Version::parse(b"2.9"));
        assert!(Version::parse(b"2.3.1") > Version::parse(b"2.3"));
        assert_eq!(Version::parse(b""), Version(2, 5, 1));
        assert_eq!(Version::parse(b"2.4^USA"), Version(2, 4, 0));
    }
}
