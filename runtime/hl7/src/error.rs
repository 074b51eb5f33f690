//! Errors. None of them carries message content: they name positions, paths and codes,
//! so they can be logged and shown to operators without exposing patient data.

/// Why a message could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// Nothing but whitespace (or nothing at all).
    #[error("the message is empty")]
    Empty,
    /// The first segment is not a header (`MSH`, or `BHS`/`FHS` for batches).
    #[error("the message does not start with an MSH segment")]
    NoHeader,
    /// MSH-1/MSH-2 are unusable.
    #[error("bad delimiters: {reason}")]
    BadDelimiters {
        /// What is wrong with them.
        reason: &'static str,
    },
    /// A segment does not start with a three-character name.
    #[error(
        "segment {segment} (byte {offset}) does not start with a three-character segment name (capital letters and digits, then the field separator)"
    )]
    BadSegmentName {
        /// 1-based segment number.
        segment: usize,
        /// Byte offset of the segment in the input.
        offset: usize,
    },
    /// The input starts with a batch header (FHS/BHS): read it with `Batch::parse`.
    #[error(
        "the input is a batch (it starts with FHS or BHS), not one message: over MLLP, send its messages one per frame; a batch file dropped in a folder is split into its messages when it is well formed, so fix the file and drop it in again"
    )]
    BatchGiven,
    /// A second `MSH` appeared: the input holds more than one message.
    #[error(
        "segment {segment} is a second MSH: the input holds more than one message; send one message per MLLP frame (or split it first)"
    )]
    SecondHeader {
        /// 1-based segment number.
        segment: usize,
    },
    /// MSH-18 names a character set we do not convert. `declared` is the code when it
    /// looks like one (short, letters, digits, `/ _ . -`), else a placeholder: MSH-18 is
    /// message content and may hold anything.
    #[error(
        "unsupported character set {declared:?} in MSH-18 (supported: ASCII, 8859/1, 8859/15, UNICODE UTF-8)"
    )]
    UnsupportedCharset {
        /// The code as declared (an HL7 table 0211 code, not patient data).
        declared: String,
    },
    /// Bytes that are not valid in the declared character set.
    #[error(
        "byte {offset} is not valid {charset} text (a sender that uses Latin-1 must say 8859/1 in MSH-18, or the receiving interface must read its messages so: `charset = \"8859/1\"`)"
    )]
    InvalidText {
        /// The declared charset.
        charset: &'static str,
        /// Byte offset of the first invalid byte.
        offset: usize,
    },
    /// An MLLP frame marker (0x0B or 0x1C) inside the message: no HL7 text holds one, and
    /// a message holding one could not be sent on over MLLP.
    #[error(
        "byte {offset} is 0x{byte:02X}, an MLLP frame marker, which cannot appear in a message (escape it as \\X{byte:02X}\\)"
    )]
    FramingByte {
        /// Byte offset in the input.
        offset: usize,
        /// 0x0B or 0x1C.
        byte: u8,
    },
    /// The message is larger than this crate indexes (4 GiB).
    #[error("the message is too large to index ({len} bytes)")]
    TooLarge {
        /// Its length.
        len: usize,
    },
}

/// Why a path is not valid, or cannot be used for the operation asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// The text is not a path.
    #[error("invalid path {path:?}: {reason}")]
    Syntax {
        /// The path as given.
        path: String,
        /// What is wrong, and what a path looks like.
        reason: &'static str,
    },
    /// The path is valid, but not for this operation.
    #[error("path {path}: {reason}")]
    Unsupported {
        /// The path.
        path: String,
        /// Why it cannot be used here.
        reason: &'static str,
    },
}

/// Why an edit was refused. The message is unchanged when an edit fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EditError {
    /// The path is invalid or unusable for this edit.
    #[error(transparent)]
    Path(#[from] PathError),
    /// A segment occurrence would leave a gap (e.g. setting `OBX[5]` when there are 3).
    #[error(
        "path {path}: there are only {existing} {segment} segments; an edit may add the next one, not skip ahead"
    )]
    SegmentGap {
        /// The path.
        path: String,
        /// The segment name.
        segment: String,
        /// How many exist.
        existing: usize,
    },
    /// The value holds a character the message's charset (MSH-18) cannot represent.
    #[error("path {path}: character U+{code:04X} cannot be written in {charset}")]
    Unrepresentable {
        /// The path.
        path: String,
        /// The character's code point (not the value around it).
        code: u32,
        /// The message charset.
        charset: &'static str,
    },
    /// A segment given to insert is not a segment.
    #[error("cannot insert segment: {reason}")]
    BadSegment {
        /// What is wrong.
        reason: &'static str,
    },
    /// An MSH-18 edit would re-read existing non-ASCII text in another charset.
    #[error("MSH-18 cannot change from {from} to {to} while the message holds non-ASCII text")]
    CharsetChange {
        /// The current charset.
        from: &'static str,
        /// The charset the edit asked for.
        to: &'static str,
    },
    /// An edit produced a message that no longer parses (only possible for raw edits).
    #[error("the edit would make the message unparseable: {0}")]
    Reparse(#[from] ParseError),
}

/// Why a batch or file could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BatchError {
    /// The segments themselves did not parse.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// Envelope segments out of place.
    #[error("segment {segment}: {reason}")]
    Structure {
        /// 1-based segment number.
        segment: usize,
        /// What is out of place.
        reason: &'static str,
    },
}

impl ParseError {
    /// The HL7 table 0357 code to report this error with in an ACK.
    pub fn ack_code(&self) -> crate::ack::ErrorCode {
        use crate::ack::ErrorCode;
        match self {
            ParseError::Empty
            | ParseError::NoHeader
            | ParseError::BatchGiven
            | ParseError::BadSegmentName { .. }
            | ParseError::SecondHeader { .. } => ErrorCode::SegmentSequence,
            ParseError::BadDelimiters { .. }
            | ParseError::InvalidText { .. }
            | ParseError::FramingByte { .. } => ErrorCode::DataType,
            ParseError::UnsupportedCharset { .. } => ErrorCode::TableValueNotFound,
            ParseError::TooLarge { .. } => ErrorCode::ValueTooLong,
        }
    }

    /// Where in the message the error sits, when a path can say it.
    pub fn location(&self) -> Option<crate::Path> {
        match self {
            ParseError::BadDelimiters { .. } => Some(crate::Path::fixed(*b"MSH", 2)),
            ParseError::UnsupportedCharset { .. } => Some(crate::Path::fixed(*b"MSH", 18)),
            _ => None,
        }
    }
}
