//! HL7 v2 for Plexus: a zero-copy parser, terser-style paths, byte-exact editing and the
//! ACK builder.
//!
//! This crate does no I/O and has no async runtime, so the same code runs in the engine
//! and inside WebAssembly plug-ins (it builds for `wasm32-wasip2`).
//!
//! ```
//! use plexus_hl7::Message;
//!
//! // Any delimiters the sender declares are honoured, here `#` and `$`.
//! let raw = b"MSH#$~\\&#SCHED#CLINIC#EHR#CLINIC#20260101##SIU$S12#42#P#2.5\r\
//!             SCH#1##########Checked In\r";
//! let mut msg = Message::parse(raw)?;
//! assert_eq!(msg.get("MSH-9-2")?.as_deref(), Some("S12"));
//! assert_eq!(msg.get("SCH-11")?.as_deref(), Some("Checked In"));
//!
//! // An edit changes only what it touches; everything else stays byte for byte.
//! msg.set("SCH-25", "ARRIVED")?;
//! assert!(msg.as_bytes().starts_with(&raw[..raw.len() - 1]));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! What the parser accepts:
//! * any delimiters in MSH-1/MSH-2 (2 to 5 encoding characters, v2.7 truncation included);
//! * segment terminators CR, LF or CRLF, blank lines, a UTF-8 byte-order mark, a missing
//!   final terminator, Z-segments;
//! * MSH-18 character sets ASCII, 8859/1, 8859/15 and UTF-8; anything else is refused with
//!   a clear error rather than read as the wrong characters.
//!
//! See [`path`] for the path syntax, [`escape`](crate::Message::get) rules in the `escape`
//! module docs, and [`ack`] for acknowledgements.

pub mod ack;
mod charset;
mod delim;
mod error;
mod escape;
mod message;
pub mod path;

pub use charset::Charset;
pub use delim::Delimiters;
pub use error::{EditError, ParseError, PathError};
pub use message::{Element, Level, Message, Segment};
pub use path::{AsPath, Path};

/// Splits bytes holding several messages (a file of messages, or a batch) into one slice
/// per message, each starting at its MSH line. Batch envelope segments (FHS, BHS, BTS, FTS)
/// are left out.
pub fn split_messages(bytes: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut ends = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let line_end = memchr::memchr2(b'\r', b'\n', &bytes[pos..]).map_or(bytes.len(), |p| p + pos);
        let line = &bytes[pos..line_end];
        let line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        if line.starts_with(b"MSH") {
            if !starts.is_empty() {
                ends.push(pos);
            }
            starts.push(pos);
        } else if matches!(line.get(..3), Some(b"FHS" | b"BHS" | b"BTS" | b"FTS")) && !starts.is_empty() && ends.len() < starts.len() {
            ends.push(pos);
        }
        pos = line_end + 1;
    }
    if ends.len() < starts.len() {
        ends.push(bytes.len());
    }
    starts.into_iter().zip(ends).map(|(s, e)| &bytes[s..e]).collect()
}
