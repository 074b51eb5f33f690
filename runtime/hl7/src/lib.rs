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
mod batch;
mod charset;
mod delim;
mod error;
mod escape;
mod message;
pub mod path;

#[doc(hidden)]
pub mod checks;

pub use batch::Batch;
pub use charset::Charset;
pub use delim::Delimiters;
pub use error::{BatchError, EditError, ParseError, PathError};
pub use message::{Children, Element, Level, Message, Segment, header_line, wire_form};
pub use path::{AsPath, Path};
