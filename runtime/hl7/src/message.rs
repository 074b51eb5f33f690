//! The message: its bytes, plus an index of where segments and fields start.
//!
//! Parsing copies nothing: it records segment and field boundaries over the input. Values
//! are sliced and decoded only when asked for. An edit splices the bytes it changes and
//! re-indexes, so everything an edit did not touch stays byte for byte as the sender wrote it.

use std::borrow::Cow;

use crate::charset::Charset;
use crate::delim::Delimiters;
use crate::error::{EditError, ParseError, PathError};
use crate::escape;
use crate::path::{AsPath, Path};

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// The start of `bytes` through the end of its first segment (the header), as the parser
/// finds it: after a byte order mark and leading whitespace, up to the first CR or LF.
/// Parsed alone it gives the same MSH values, delimiters and charset as the whole
/// message, for a fraction of the work: what an acknowledgement needs. All of `bytes`
/// when the header has no terminator.
pub fn header_line(bytes: &[u8]) -> &[u8] {
    let body = if bytes.starts_with(BOM) { BOM.len() } else { 0 };
    let Some(first) = bytes[body..]
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .map(|p| p + body)
    else {
        return bytes;
    };
    match memchr::memchr2(b'\r', b'\n', &bytes[first..]) {
        Some(end) => &bytes[..first + end],
        None => bytes,
    }
}

/// `bytes` as a strict receiver expects a message: no byte order mark or whitespace
/// before `MSH`, each segment ended by one CR, no blank lines. `None` when they are in
/// that form already (the usual case, found without parsing), or do not parse as a
/// message. The segments are the parser's own, so an LF that is text inside a
/// CR-terminated segment stays where it is, and nothing within a segment changes.
///
/// The parser accepts LF and CRLF terminators, blank lines and a BOM on the way in; an
/// engine that forwards such a message should send it in this form.
pub fn wire_form(bytes: &[u8]) -> Option<Vec<u8>> {
    // When the header line ends with a bare CR, the parser ends segments only at CRs and
    // takes every other LF as text; then CRLF, CR CR (a blank line) and a missing last
    // CR are all that could differ from the strict form.
    let header_end = memchr::memchr2(b'\r', b'\n', bytes);
    let canonical = !bytes.starts_with(BOM)
        && bytes.first().is_some_and(|c| !c.is_ascii_whitespace())
        && header_end.is_some_and(|p| bytes[p] == b'\r')
        && bytes.ends_with(b"\r")
        // No CRLF and no CR CR: one pass over the segment ends (one CR per segment).
        && memchr::memchr_iter(b'\r', bytes)
            .all(|p| !matches!(bytes.get(p + 1), Some(b'\n' | b'\r')));
    if canonical {
        return None;
    }
    // Where segments end does not depend on the character set; Latin-1 reads any bytes,
    // so a message without MSH-18 in a legacy 8-bit set is normalised too (a declared
    // MSH-18 still rules).
    let msg = Message::parse_with_charset(bytes, Charset::Latin1).ok()?;
    let mut out = Vec::with_capacity(bytes.len());
    for segment in msg.segments() {
        out.extend_from_slice(segment.raw());
        out.push(b'\r');
    }
    (out != bytes).then_some(out)
}

/// A parsed HL7 v2 message.
///
/// ```
/// use plexus_hl7::Message;
///
/// let raw = b"MSH|^~\\&|LAB|HOSP|EHR|HOSP|20260101120000||ORU^R01|MSG1|P|2.5\r\
///             PID|1||12345^^^HOSP^MR~987^^^SSA^SS||DOE^JANE\r";
/// let mut msg = Message::parse(raw)?;
/// assert_eq!(msg.get("PID-5-2")?.as_deref(), Some("JANE"));
/// assert_eq!(msg.get("PID-3[2]-4")?.as_deref(), Some("SSA"));
/// assert_eq!(msg.count("PID-3")?, 2);
///
/// msg.set("PID-5-1", "O'BRIEN")?;
/// assert!(msg.as_bytes().ends_with(b"||O'BRIEN^JANE\r"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Message<'a> {
    buf: Cow<'a, [u8]>,
    index: Index,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Index {
    delims: Delimiters,
    charset: Charset,
    /// What an empty MSH-18 meant when the message was parsed (the caller's default).
    unstated: Charset,
    segments: Vec<SegIdx>,
    /// Positions of every field separator, segment after segment.
    seps: Vec<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SegIdx {
    name: [u8; 3],
    start: u32,
    /// End of the content, before the terminator.
    end: u32,
    /// End of the terminator (CR, LF or CRLF); equals `end` for a last line without one.
    term_end: u32,
    seps_from: u32,
    seps_len: u32,
}

/// A byte range in the message.
type Span = (usize, usize);

impl<'a> Message<'a> {
    /// Parses a message without copying it.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ParseError> {
        Self::parse_with_charset(bytes, Charset::Ascii)
    }

    /// [`parse`](Self::parse) with `charset` for an empty MSH-18; see
    /// [`parse_owned_with_charset`](Self::parse_owned_with_charset).
    pub fn parse_with_charset(bytes: &'a [u8], charset: Charset) -> Result<Self, ParseError> {
        Ok(Message {
            index: Index::build_with(bytes, false, charset)?,
            buf: Cow::Borrowed(bytes),
        })
    }

    pub(crate) fn from_index(bytes: &'a [u8], index: Index) -> Self {
        Message {
            buf: Cow::Borrowed(bytes),
            index,
        }
    }

    /// The byte range of segment `i` without its terminator.
    pub(crate) fn segment_span(&self, i: usize) -> Span {
        let s = &self.index.segments[i];
        (s.start as usize, s.end as usize)
    }

    /// Parses a message that owns its bytes.
    pub fn parse_owned(bytes: Vec<u8>) -> Result<Message<'static>, ParseError> {
        Self::parse_owned_with_charset(bytes, Charset::Ascii)
    }

    /// [`parse_owned`](Self::parse_owned) for a sender whose messages are in `charset`
    /// when MSH-18 is empty (a legacy system sending Latin-1 without saying so). An
    /// MSH-18 that names a charset still wins.
    pub fn parse_owned_with_charset(
        bytes: Vec<u8>,
        charset: Charset,
    ) -> Result<Message<'static>, ParseError> {
        Ok(Message {
            index: Index::build_with(&bytes, false, charset)?,
            buf: Cow::Owned(bytes),
        })
    }

    /// Detaches the message from the input it borrowed.
    pub fn into_owned(self) -> Message<'static> {
        Message {
            buf: Cow::Owned(self.buf.into_owned()),
            index: self.index,
        }
    }

    /// The encoded message: exactly the input unless it was edited, and then the input
    /// with only the edited parts changed.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Consumes the message, returning its encoded bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf.into_owned()
    }

    /// The delimiters from MSH-1 and MSH-2.
    pub fn delimiters(&self) -> &Delimiters {
        &self.index.delims
    }

    /// The character set from MSH-18.
    pub fn charset(&self) -> Charset {
        self.index.charset
    }

    /// Number of segments.
    pub fn segment_count(&self) -> usize {
        self.index.segments.len()
    }

    /// The segments in order.
    pub fn segments(&self) -> impl ExactSizeIterator<Item = Segment<'_>> + '_ {
        (0..self.index.segments.len()).map(move |i| Segment { msg: self, idx: i })
    }

    /// The segment names in order, e.g. `["MSH", "EVN", "PID", "PV1"]`.
    pub fn segment_names(&self) -> impl Iterator<Item = &str> + '_ {
        self.segments().map(|s| s.name())
    }

    /// MSH-10, the message control id (decoded), if present.
    pub fn control_id(&self) -> Option<Cow<'_, str>> {
        self.value(&Path::fixed(*b"MSH", 10))
    }

    /// MSH-12-1, the version id, if present.
    pub fn version(&self) -> Option<Cow<'_, str>> {
        self.value(&Path::fixed(*b"MSH", 12))
    }

    /// Reads the decoded value at `path`: escapes resolved, converted to UTF-8.
    ///
    /// `None` when the segment, field or part is absent or empty. The HL7 explicit null is
    /// returned as the two characters `""`. A path above the leaf reads its first leaf
    /// (`PID-5` reads `PID-5[1]-1-1`).
    pub fn get(&self, path: impl AsPath) -> Result<Option<Cow<'_, str>>, PathError> {
        let path = path.to_path()?;
        if path.field().is_none() {
            return Err(unsupported(&path, "a value needs a field, e.g. PID-5-1"));
        }
        Ok(self.value(&path))
    }

    fn value(&self, path: &Path) -> Option<Cow<'_, str>> {
        let (span, literal) = self.locate_leaf(path)?;
        let raw = &self.buf[span.0..span.1];
        if raw.is_empty() {
            return None;
        }
        Some(if literal {
            self.index.charset.decode(raw).unwrap_or_default()
        } else {
            escape::decode(raw, &self.index.delims, self.index.charset)
        })
    }

    /// Reads the raw, still-encoded bytes at `path`, at the level the path names: a whole
    /// segment line, a whole field with all its repetitions, one repetition (`PID-3[2]`), a
    /// component or a subcomponent. `None` when absent.
    pub fn get_raw(&self, path: impl AsPath) -> Result<Option<&[u8]>, PathError> {
        let path = path.to_path()?;
        Ok(self
            .locate(&path)
            .map(|(span, _)| &self.buf[span.0..span.1]))
    }

    /// Is the value at `path` the HL7 explicit null `""` ("delete this value")?
    pub fn is_null(&self, path: impl AsPath) -> Result<bool, PathError> {
        Ok(self.get_raw(path)?.is_some_and(|raw| raw == b"\"\""))
    }

    /// Counts segments (`OBX`: how many OBX segments) or repetitions (`PID-3`: how many
    /// identifiers; 0 when the field is empty or absent).
    pub fn count(&self, path: impl AsPath) -> Result<usize, PathError> {
        let path = path.to_path()?;
        if path.component().is_some() || path.repetition().is_some() {
            return Err(unsupported(
                &path,
                "count takes a segment (OBX) or a field (PID-3)",
            ));
        }
        let Some(field) = path.field() else {
            return Ok(self.occurrences(path.segment_bytes()).count());
        };
        if path.occurrence() != 1 && field == 0 {
            return Ok(0);
        }
        let Some(seg) = self.find_segment(path.segment_bytes(), path.occurrence()) else {
            return Ok(0);
        };
        Ok(match self.field_span(seg, field) {
            FieldSpan::Literal(_) => 1,
            FieldSpan::Missing { .. } => 0,
            FieldSpan::Found(span) if span.0 == span.1 => 0,
            FieldSpan::Found(span) => {
                memchr::memchr_iter(self.index.delims.repetition, &self.buf[span.0..span.1]).count()
                    + 1
            }
        })
    }

    /// Writes `value` at `path`, escaping delimiters and converting to the message charset.
    ///
    /// Missing structure is created: fields, repetitions, components and subcomponents
    /// are padded with delimiters, and the next occurrence of a segment is appended after
    /// the last one of that name (or at the end). A path above the leaf writes its first
    /// leaf, mirroring [`Message::get`]. On error the message is unchanged.
    pub fn set(&mut self, path: impl AsPath, value: &str) -> Result<(), EditError> {
        let path = path.to_path()?;
        let field = path
            .field()
            .ok_or_else(|| unsupported(&path, "set needs a field, e.g. PID-5-1"))?;
        if is_header(path.segment_bytes()) && field <= 2 {
            return Err(unsupported(
                &path,
                "MSH-1 and MSH-2 declare the delimiters and cannot be set",
            )
            .into());
        }
        let mut encoded = Vec::with_capacity(value.len());
        escape::encode_into(value, &self.index.delims, self.index.charset, &mut encoded).map_err(
            |escape::Unrepresentable(c)| EditError::Unrepresentable {
                path: path.to_string(),
                code: u32::from(c),
                charset: self.index.charset.code(),
            },
        )?;

        let Some(seg) = self.find_segment(path.segment_bytes(), path.occurrence()) else {
            return self.append_occurrence(&path, field, &encoded);
        };
        let (at, replace_end, mut insert) = self.splice_point(seg, &path, field)?;
        insert.extend_from_slice(&encoded);
        self.splice(at, replace_end, &insert)
    }

    /// Clears the value at `path`, or removes it where removal is meaningful: a segment path
    /// (`OBX[2]`) removes the segment, a field path with an explicit repetition
    /// (`PID-3[2]`) removes that repetition. Returns whether anything was there.
    pub fn remove(&mut self, path: impl AsPath) -> Result<bool, EditError> {
        let path = path.to_path()?;
        let Some(seg) = self.find_segment(path.segment_bytes(), path.occurrence()) else {
            return Ok(false);
        };
        let Some(field) = path.field() else {
            if seg == 0 {
                return Err(unsupported(&path, "the header segment cannot be removed").into());
            }
            let s = self.index.segments[seg];
            self.splice(s.start as usize, s.term_end as usize, b"")?;
            return Ok(true);
        };
        if is_header(path.segment_bytes()) && field <= 2 {
            return Err(unsupported(
                &path,
                "MSH-1 and MSH-2 declare the delimiters and cannot be removed",
            )
            .into());
        }
        if let (Some(rep), None) = (path.repetition(), path.component()) {
            return self.remove_repetition(seg, field, rep);
        }
        let Some((span, _)) = self.locate(&path) else {
            return Ok(false);
        };
        let existed = span.0 != span.1;
        if existed {
            self.splice(span.0, span.1, b"")?;
        }
        Ok(existed)
    }

    fn remove_repetition(&mut self, seg: usize, field: u32, rep: u32) -> Result<bool, EditError> {
        let FieldSpan::Found(fspan) = self.field_span(seg, field) else {
            return Ok(false);
        };
        let delim = self.index.delims.repetition;
        let reps = children(&self.buf, fspan, delim);
        let Some(&r) = reps.get(rep as usize - 1) else {
            return Ok(false);
        };
        // Take the delimiter on one side with it so the other repetitions keep their places.
        let (a, b) = if reps.len() == 1 {
            r
        } else if rep == 1 {
            (r.0, r.1 + 1)
        } else {
            (r.0 - 1, r.1)
        };
        self.splice(a, b, b"")?;
        Ok(true)
    }

    /// Inserts a segment, given as encoded text such as `ZPI|1|ABC`, so that it becomes
    /// segment number `position` (0-based; `segment_count()` appends). Position 0 is the
    /// header's and is refused. The message's own segment terminator is used.
    pub fn insert_segment(&mut self, position: usize, segment: &str) -> Result<(), EditError> {
        let bytes = segment.as_bytes();
        let d = &self.index.delims;
        let bad = |reason| Err(EditError::BadSegment { reason });
        if position == 0 || position > self.index.segments.len() {
            return bad("position out of range (1 ..= segment count; 0 is the header's)");
        }
        if bytes.len() < 3
            || !bytes[..3]
                .iter()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        {
            return bad("a segment starts with a three-character name such as ZPI");
        }
        if bytes.len() > 3 && bytes[3] != d.field {
            return bad("the segment name must be followed by the message's field separator");
        }
        if matches!(&bytes[..3], b"MSH" | b"BHS" | b"FHS") {
            return bad("a header segment cannot be inserted into a message");
        }
        if bytes.contains(&b'\r') || bytes.contains(&b'\n') {
            return bad("a segment cannot contain a line break");
        }
        let terminator = self.terminator_after(position).to_vec();
        let mut text = Vec::new();
        self.index
            .charset
            .encode_into(segment, &mut text)
            .map_err(|c| EditError::Unrepresentable {
                path: format!("segment {position}"),
                code: u32::from(c),
                charset: self.index.charset.code(),
            })?;
        text.extend_from_slice(&terminator);
        let at = self.insertion_point(position, &terminator, &mut text);
        self.splice(at, at, &text)
    }

    /// Where a new segment that becomes number `position` goes; when appending after a last
    /// line that has no terminator, `text` gains one in front.
    fn insertion_point(&self, position: usize, terminator: &[u8], text: &mut Vec<u8>) -> usize {
        if let Some(next) = self.index.segments.get(position) {
            return next.start as usize;
        }
        let last = self.index.segments[position - 1];
        if last.term_end == last.end {
            text.splice(0..0, terminator.iter().copied());
        }
        last.term_end as usize
    }

    /// The terminator for a segment that becomes number `position`: the one the segment
    /// before it ends with (CR, CRLF or a bare LF; blank lines after it not included), or
    /// the header's when that one has none. Taking the neighbour's keeps a message that
    /// mixes terminators (CR after MSH, bare LF after the rest) parsing the same after
    /// the edit: a CR among its LF-ended segments would turn those LFs into text.
    fn terminator_after(&self, position: usize) -> &[u8] {
        let before = self.index.segments[position.max(1) - 1];
        match &self.buf[before.end as usize..before.term_end as usize] {
            [b'\r', b'\n', ..] => b"\r\n",
            [b'\r', ..] => b"\r",
            [b'\n', ..] => b"\n",
            _ => self.terminator(),
        }
    }

    /// The terminator the sender used on the header segment (CR if it used none).
    fn terminator(&self) -> &[u8] {
        let msh = self.index.segments[0];
        match &self.buf[msh.end as usize..msh.term_end as usize] {
            [] => b"\r",
            t => t,
        }
    }

    fn append_occurrence(
        &mut self,
        path: &Path,
        field: u32,
        encoded: &[u8],
    ) -> Result<(), EditError> {
        let name = path.segment_bytes();
        if is_header(name) {
            return Err(unsupported(
                path,
                "a header segment (MSH, BHS, FHS) cannot be created by an edit",
            )
            .into());
        }
        let existing = self.occurrences(name).count();
        if path.occurrence() as usize != existing + 1 {
            return Err(EditError::SegmentGap {
                path: path.to_string(),
                segment: path.segment().to_owned(),
                existing,
            });
        }
        let d = self.index.delims;
        let mut seg = name.to_vec();
        seg.extend(std::iter::repeat_n(d.field, field as usize));
        seg.extend(std::iter::repeat_n(
            d.repetition,
            path.repetition().unwrap_or(1) as usize - 1,
        ));
        seg.extend(std::iter::repeat_n(
            d.component,
            path.component().unwrap_or(1) as usize - 1,
        ));
        if let Some(sub) = path.subcomponent().filter(|s| *s > 1) {
            let delim = d
                .subcomponent
                .ok_or_else(|| unsupported(path, NO_SUBCOMPONENTS))?;
            seg.extend(std::iter::repeat_n(delim, sub as usize - 1));
        }
        seg.extend_from_slice(encoded);
        let position = self
            .occurrences(name)
            .last()
            .map_or(self.index.segments.len(), |last| last + 1);
        let terminator = self.terminator_after(position).to_vec();
        seg.extend_from_slice(&terminator);
        let at = self.insertion_point(position, &terminator, &mut seg);
        self.splice(at, at, &seg)
    }

    /// Finds where a value for `path` goes in an existing segment: the byte range to
    /// replace and the delimiters to write before the value to create missing structure.
    fn splice_point(
        &self,
        seg: usize,
        path: &Path,
        field: u32,
    ) -> Result<(usize, usize, Vec<u8>), EditError> {
        let d = self.index.delims;
        let mut pad = Vec::new();
        // `span` is the existing element while the structure exists; once a level is
        // missing, `at` is where the padding and the value go.
        let (mut span, mut at) = match self.field_span(seg, field) {
            FieldSpan::Found(span) => (Some(span), 0),
            FieldSpan::Literal(_) => {
                return Err(unsupported(
                    path,
                    "MSH-1 and MSH-2 declare the delimiters and cannot be set",
                )
                .into());
            }
            FieldSpan::Missing { at, missing } => {
                pad.extend(std::iter::repeat_n(d.field, missing as usize));
                (None, at)
            }
        };
        let levels = [
            (Some(d.repetition), path.repetition().unwrap_or(1)),
            (Some(d.component), path.component().unwrap_or(1)),
            (d.subcomponent, path.subcomponent().unwrap_or(1)),
        ];
        for (delim, k) in levels {
            let Some(delim) = delim else {
                if k > 1 {
                    return Err(unsupported(path, NO_SUBCOMPONENTS).into());
                }
                continue;
            };
            match span {
                Some(s) => match nth_child(&self.buf, s, delim, k) {
                    Ok(child) => span = Some(child),
                    Err(count) => {
                        pad.extend(std::iter::repeat_n(delim, (k - count) as usize));
                        at = s.1;
                        span = None;
                    }
                },
                None => pad.extend(std::iter::repeat_n(delim, k as usize - 1)),
            }
        }
        Ok(match span {
            Some((a, b)) => (a, b, pad),
            None => (at, at, pad),
        })
    }

    /// Replaces `buf[a..b]` with `with` and re-indexes; restores the old bytes on failure.
    fn splice(&mut self, a: usize, b: usize, with: &[u8]) -> Result<(), EditError> {
        if let Some(seg) = self.segment_holding(a, b, with) {
            self.splice_in_segment(seg, a, b, with);
            return Ok(());
        }
        let mut bytes = Vec::with_capacity(self.buf.len() + with.len());
        bytes.extend_from_slice(&self.buf[..a]);
        bytes.extend_from_slice(with);
        bytes.extend_from_slice(&self.buf[b..]);
        // An empty MSH-18 keeps meaning what it meant when the message was parsed; an
        // edit that empties a declared one is a charset change like any other.
        let index = Index::build_with(&bytes, false, self.index.unstated)?;
        if index.charset != self.index.charset && !bytes.is_ascii() {
            // The text already there would be re-read in the new charset: refuse rather
            // than silently change every non-ASCII character.
            return Err(EditError::CharsetChange {
                from: self.index.charset.code(),
                to: index.charset.code(),
            });
        }
        self.buf = Cow::Owned(bytes);
        self.index = index;
        Ok(())
    }

    /// The segment whose content holds all of `a..b`, when replacing that range with
    /// `with` can only change that one segment's fields: not a header (delimiters and
    /// charset live there), not its name, no segment terminator and nothing but ASCII
    /// in `with` (valid in every supported charset), and offsets still fit the index.
    /// Such an edit (every `set` of a field in a body segment) re-indexes that segment
    /// alone instead of the whole message.
    fn segment_holding(&self, a: usize, b: usize, with: &[u8]) -> Option<usize> {
        if !with.is_ascii() || with.iter().any(|&c| c == b'\r' || c == b'\n') {
            return None;
        }
        let grown = self.buf.len().checked_sub(b - a)?.checked_add(with.len())?;
        u32::try_from(grown).ok()?;
        let seg = self
            .index
            .segments
            .partition_point(|s| (s.end as usize) < b);
        let s = self.index.segments.get(seg)?;
        // Right after the name only what starts with a field separator keeps it a name.
        let after_name = s.start as usize + 3 < a
            || (s.start as usize + 3 == a && with.first() == Some(&self.index.delims.field));
        let inside = after_name && b <= s.end as usize;
        (inside && !is_header(&s.name)).then_some(seg)
    }

    /// Replaces `a..b` inside segment `seg` (see [`Message::segment_holding`]) and
    /// updates the index in place: that segment's separators are found again, and every
    /// offset after the edit moves by the change in length.
    fn splice_in_segment(&mut self, seg: usize, a: usize, b: usize, with: &[u8]) {
        let buf = self.buf.to_mut();
        if with.len() == b - a {
            buf[a..b].copy_from_slice(with);
        } else {
            buf.splice(a..b, with.iter().copied());
        }
        // Offsets fit in u32: `segment_holding` checked the new length.
        let grow = |x: u32| -> u32 { ((x as usize + with.len()) - (b - a)) as u32 };
        let index = &mut self.index;
        let s = index.segments[seg];
        let (from, old_len) = (s.seps_from as usize, s.seps_len as usize);
        let end = grow(s.end) as usize;
        let line = &buf[s.start as usize..end];
        let fresh: Vec<u32> = memchr::memchr_iter(index.delims.field, line)
            .map(|p| (s.start as usize + p) as u32)
            .collect();
        let new_len = fresh.len();
        index.seps.splice(from..from + old_len, fresh);
        for sep in &mut index.seps[from + new_len..] {
            *sep = grow(*sep);
        }
        let moved = |x: u32| -> u32 { ((x as usize + new_len) - old_len) as u32 };
        let current = &mut index.segments[seg];
        current.end = end as u32;
        current.term_end = grow(current.term_end);
        current.seps_len = new_len as u32;
        for later in &mut index.segments[seg + 1..] {
            later.start = grow(later.start);
            later.end = grow(later.end);
            later.term_end = grow(later.term_end);
            later.seps_from = moved(later.seps_from);
        }
    }

    fn occurrences<'s>(&'s self, name: &'s [u8; 3]) -> impl Iterator<Item = usize> + 's {
        self.index
            .segments
            .iter()
            .enumerate()
            .filter(move |(_, s)| &s.name == name)
            .map(|(i, _)| i)
    }

    fn find_segment(&self, name: &[u8; 3], occurrence: u32) -> Option<usize> {
        self.occurrences(name).nth(occurrence as usize - 1)
    }

    /// The span of a field. MSH-1 and MSH-2 are literal: never split or unescaped.
    fn field_span(&self, seg: usize, field: u32) -> FieldSpan {
        let s = &self.index.segments[seg];
        let is_header = is_header(&s.name);
        let element = if is_header {
            if field == 1 {
                let at = s.start as usize + 3;
                if at >= s.end as usize {
                    return FieldSpan::Missing {
                        at: s.end as usize,
                        missing: 1,
                    };
                }
                return FieldSpan::Literal((at, at + 1));
            }
            field - 1
        } else {
            field
        };
        let seps = &self.index.seps[s.seps_from as usize..(s.seps_from + s.seps_len) as usize];
        match seps.get(element as usize - 1) {
            Some(&sep) => {
                let start = sep as usize + 1;
                let end = seps
                    .get(element as usize)
                    .map_or(s.end as usize, |&n| n as usize);
                if is_header && field == 2 {
                    FieldSpan::Literal((start, end))
                } else {
                    FieldSpan::Found((start, end))
                }
            }
            None => FieldSpan::Missing {
                at: s.end as usize,
                missing: element - s.seps_len,
            },
        }
    }

    /// The span the path names, at the level it names; `bool` marks MSH-1/MSH-2.
    fn locate(&self, path: &Path) -> Option<(Span, bool)> {
        let seg = self.find_segment(path.segment_bytes(), path.occurrence())?;
        let Some(field) = path.field() else {
            let s = &self.index.segments[seg];
            return Some(((s.start as usize, s.end as usize), false));
        };
        let mut span = match self.field_span(seg, field) {
            FieldSpan::Found(span) => span,
            FieldSpan::Literal(span) => {
                let nested = path.repetition().unwrap_or(1) > 1
                    || path.component().unwrap_or(1) > 1
                    || path.subcomponent().unwrap_or(1) > 1;
                return (!nested).then_some((span, true));
            }
            FieldSpan::Missing { .. } => return None,
        };
        let d = &self.index.delims;
        if let Some(rep) = path.repetition() {
            span = nth_child(&self.buf, span, d.repetition, rep).ok()?;
        }
        if let Some(comp) = path.component() {
            if path.repetition().is_none() {
                span = nth_child(&self.buf, span, d.repetition, 1).ok()?;
            }
            span = nth_child(&self.buf, span, d.component, comp).ok()?;
            if let Some(sub) = path.subcomponent() {
                span = match d.subcomponent {
                    Some(delim) => nth_child(&self.buf, span, delim, sub).ok()?,
                    None if sub == 1 => span,
                    None => return None,
                };
            }
        }
        Some((span, false))
    }

    /// The first leaf under the path (terser semantics).
    fn locate_leaf(&self, path: &Path) -> Option<(Span, bool)> {
        let (span, literal) = self.locate(path)?;
        if literal {
            return Some((span, true));
        }
        let d = &self.index.delims;
        let mut span = span;
        if path.component().is_none() {
            if path.repetition().is_none() {
                span = nth_child(&self.buf, span, d.repetition, 1).ok()?;
            }
            span = nth_child(&self.buf, span, d.component, 1).ok()?;
        }
        if path.subcomponent().is_none()
            && let Some(delim) = d.subcomponent
        {
            span = nth_child(&self.buf, span, delim, 1).ok()?;
        }
        Some((span, false))
    }
}

/// In a message that mixes terminators, where the next segment ends: at the next CR, at a
/// bare LF when what follows it is a segment name and the field separator, or at a bare
/// LF with only whitespace after it.
///
/// `text_end` is where the message's last non-whitespace byte ends, relative to `rest`
/// (found once per parse: scanning the rest at each LF would make a run of LFs
/// quadratic).
fn next_cr_terminator(rest: &[u8], field: u8, text_end: usize) -> Option<usize> {
    let mut from = 0;
    while let Some(p) = memchr::memchr2(b'\r', b'\n', &rest[from..]).map(|p| p + from) {
        if rest[p] == b'\r' || p >= text_end || starts_segment(&rest[p + 1..], field) {
            return Some(p);
        }
        from = p + 1;
    }
    None
}

/// A capital, two capitals or digits, and the field separator (`PID|`, `ZV1|`); a line
/// of text rarely starts that way, since a field separator in text must be escaped.
fn starts_segment(s: &[u8], field: u8) -> bool {
    s.len() >= 4
        && s[0].is_ascii_uppercase()
        && s[1..3]
            .iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        && s[3] == field
}

/// The MSH-18 code as it may appear in an error: only if it looks like a charset code.
fn charset_label(code: String) -> String {
    let looks_like_code = code.len() <= 32
        && code
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b' ' | b'/' | b'_' | b'.' | b'-'));
    if looks_like_code {
        code
    } else {
        "(not a charset code)".to_owned()
    }
}

fn is_header(name: &[u8; 3]) -> bool {
    matches!(name, b"MSH" | b"BHS" | b"FHS")
}

const NO_SUBCOMPONENTS: &str = "this message declares no subcomponent separator in MSH-2";

fn unsupported(path: &Path, reason: &'static str) -> PathError {
    PathError::Unsupported {
        path: path.to_string(),
        reason,
    }
}

enum FieldSpan {
    Found(Span),
    Literal(Span),
    Missing { at: usize, missing: u32 },
}

/// The `k`-th (1-based) child of `span` split on `delim`, or how many children there are.
fn nth_child(buf: &[u8], span: Span, delim: u8, k: u32) -> Result<Span, u32> {
    let slice = &buf[span.0..span.1];
    let mut start = 0;
    let mut seen = 1;
    for pos in memchr::memchr_iter(delim, slice) {
        if seen == k {
            return Ok((span.0 + start, span.0 + pos));
        }
        start = pos + 1;
        seen += 1;
    }
    if seen == k {
        Ok((span.0 + start, span.1))
    } else {
        Err(seen)
    }
}

/// All children of `span` split on `delim`.
fn children(buf: &[u8], span: Span, delim: u8) -> Vec<Span> {
    let mut out = Vec::new();
    let mut start = span.0;
    for pos in memchr::memchr_iter(delim, &buf[span.0..span.1]) {
        out.push((start, span.0 + pos));
        start = span.0 + pos + 1;
    }
    out.push((start, span.1));
    out
}

impl Index {
    /// Indexes a batch: several MSH segments allowed, charset from the first MSH.
    pub(crate) fn build_batch(buf: &[u8]) -> Result<Index, ParseError> {
        Index::build_with(buf, true, Charset::Ascii)
    }

    /// `unstated`: the charset when MSH-18 is empty.
    fn build_with(buf: &[u8], batch: bool, unstated: Charset) -> Result<Index, ParseError> {
        if u32::try_from(buf.len()).is_err() {
            return Err(ParseError::TooLarge { len: buf.len() });
        }
        if let Some(offset) = memchr::memchr2(0x0B, 0x1C, buf) {
            return Err(ParseError::FramingByte {
                offset,
                byte: buf[offset],
            });
        }
        let body = if buf.starts_with(BOM) { BOM.len() } else { 0 };
        let first = buf[body..]
            .iter()
            .position(|c| !c.is_ascii_whitespace())
            .map(|p| p + body)
            .ok_or(ParseError::Empty)?;
        let header = &buf[first..];
        let header_ok = header.len() >= 4
            && if batch {
                is_header(&[header[0], header[1], header[2]])
            } else {
                header.starts_with(b"MSH")
            };
        if !header_ok {
            if !batch && (header.starts_with(b"BHS") || header.starts_with(b"FHS")) {
                return Err(ParseError::BatchGiven);
            }
            return Err(ParseError::NoHeader);
        }
        let field_sep = header[3];
        let enc_end = header[4..]
            .iter()
            .position(|&c| c == field_sep || c == b'\r' || c == b'\n')
            .map_or(header.len(), |p| p + 4);
        let delims = Delimiters::from_header(field_sep, &header[4..enc_end])?;

        let mut index = Index {
            delims,
            charset: Charset::Ascii,
            unstated,
            // Sized for typical messages, whose many empty fields put a field separator
            // every 4-8 bytes (growing the vector was a third of a parse's allocations);
            // a huge one (an embedded PDF) grows as needed instead of reserving in
            // proportion to its size.
            segments: Vec::with_capacity((buf.len() / 64).clamp(4, 256)),
            seps: Vec::with_capacity((buf.len() / 4).clamp(16, 4096)),
        };
        // CR always ends a segment. A bare LF does too when the header line ends with one
        // (LF-terminated files). Otherwise an LF is text, as in a note with a line break
        // inside a CR-terminated message; LFs right after a CR belong to its terminator.
        // The exception is for senders that mix terminators (CR or CRLF after MSH, bare
        // LF after the rest): when the header line ends in CRLF, or once no CR follows
        // anywhere in the message, a bare LF followed by a segment name and the field
        // separator ends a segment, and so does one followed by nothing but whitespace.
        let header_end = memchr::memchr2(b'\r', b'\n', header);
        let lf_mode = header_end.is_some_and(|p| header[p] == b'\n');
        let mixed = header_end.is_some_and(|p| header.get(p..p + 2) == Some(b"\r\n"));
        // Looked for once: searching each segment's rest would make a parse quadratic.
        let any_lf = !lf_mode && memchr::memchr(b'\n', &buf[first..]).is_some();
        // Only needed when there is a bare LF to decide about (rarely).
        let (last_cr, text_end) = if any_lf {
            let text_end = buf
                .iter()
                .rposition(|c| !c.is_ascii_whitespace())
                .map_or(0, |p| p + 1);
            (memchr::memrchr(b'\r', buf), text_end)
        } else {
            (None, 0)
        };
        let mut pos = first;
        while pos < buf.len() {
            let rest = &buf[pos..];
            let found = if lf_mode {
                memchr::memchr2(b'\r', b'\n', rest)
            } else if any_lf && (mixed || last_cr.is_none_or(|cr| cr < pos)) {
                next_cr_terminator(rest, index.delims.field, text_end.saturating_sub(pos))
            } else {
                memchr::memchr(b'\r', rest)
            };
            let line_end = found.map_or(buf.len(), |p| p + pos);
            let term_end = match buf.get(line_end) {
                Some(b'\r') if lf_mode => {
                    line_end + 1 + usize::from(buf.get(line_end + 1) == Some(&b'\n'))
                }
                Some(b'\r') => {
                    line_end
                        + 1
                        + buf[line_end + 1..]
                            .iter()
                            .take_while(|&&c| c == b'\n')
                            .count()
                }
                Some(_) => line_end + 1,
                None => line_end,
            };
            index.add_segment(buf, pos, line_end, term_end, batch)?;
            pos = term_end;
        }
        let code = index.header_charset_code(buf);
        // `""` is HL7's explicit null: no charset stated, as when the field is empty.
        index.charset = if code.trim().is_empty() || code.trim() == "\"\"" {
            unstated
        } else {
            Charset::from_code(&code).ok_or_else(|| ParseError::UnsupportedCharset {
                declared: charset_label(code),
            })?
        };
        if !batch {
            // A batch's messages may each declare their own charset: Batch checks each
            // message on its own.
            index.charset.validate(&buf[body..]).map_err(|e| match e {
                ParseError::InvalidText { charset, offset } => ParseError::InvalidText {
                    charset,
                    offset: offset + body,
                },
                other => other,
            })?;
        }
        Ok(index)
    }

    fn add_segment(
        &mut self,
        buf: &[u8],
        start: usize,
        end: usize,
        term_end: usize,
        batch: bool,
    ) -> Result<(), ParseError> {
        let line = &buf[start..end];
        if line.iter().all(u8::is_ascii_whitespace) {
            // Blank lines between or after segments are kept in the bytes but are not segments.
            return Ok(());
        }
        let number = self.segments.len() + 1;
        let named = line.len() >= 3
            && line[..3]
                .iter()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
            && (line.len() == 3 || line[3] == self.delims.field);
        if !named {
            return Err(ParseError::BadSegmentName {
                segment: number,
                offset: start,
            });
        }
        let name = [line[0], line[1], line[2]];
        if !batch && number > 1 && is_header(&name) {
            return Err(ParseError::SecondHeader { segment: number });
        }
        let seps_from = self.seps.len();
        // Offsets fit in u32: `build` refused anything larger.
        self.seps
            .extend(memchr::memchr_iter(self.delims.field, line).map(|p| (start + p) as u32));
        self.segments.push(SegIdx {
            name,
            start: start as u32,
            end: end as u32,
            term_end: term_end as u32,
            seps_from: seps_from as u32,
            seps_len: (self.seps.len() - seps_from) as u32,
        });
        Ok(())
    }

    /// The first repetition of MSH-18 (element 17 of the header line) of the first MSH, or
    /// of the first header when there is no MSH (a batch envelope alone).
    fn header_charset_code(&self, buf: &[u8]) -> String {
        let header = self
            .segments
            .iter()
            .find(|s| &s.name == b"MSH")
            .or(self.segments.first());
        let Some(msh) = header else {
            return String::new();
        };
        let seps = &self.seps[msh.seps_from as usize..(msh.seps_from + msh.seps_len) as usize];
        let Some(&sep) = seps.get(16) else {
            return String::new();
        };
        let end = seps.get(17).map_or(msh.end as usize, |&n| n as usize);
        let raw = &buf[sep as usize + 1..end];
        let first = raw
            .split(|&c| c == self.delims.repetition)
            .next()
            .unwrap_or_default();
        // MSH-18 is a code (ID), not a composite: a `/` in `8859/1` stays in the code even
        // when `/` is the component separator; an escaped delimiter is resolved. Latin-1
        // decoding cannot fail, and a non-ASCII code is simply not a supported one.
        escape::decode(first, &self.delims, Charset::Latin1).into_owned()
    }
}

/// One segment of a message.
#[derive(Clone, Copy)]
pub struct Segment<'m> {
    msg: &'m Message<'m>,
    idx: usize,
}

impl<'m> Segment<'m> {
    fn idx(&self) -> &'m SegIdx {
        &self.msg.index.segments[self.idx]
    }

    /// The three-character name.
    pub fn name(&self) -> &'m str {
        std::str::from_utf8(&self.idx().name).unwrap_or("???")
    }

    /// 0-based position among the message's segments.
    pub fn position(&self) -> usize {
        self.idx
    }

    /// The encoded segment line without its terminator.
    pub fn raw(&self) -> &'m [u8] {
        let s = self.idx();
        &self.msg.buf[s.start as usize..s.end as usize]
    }

    /// The number of the last field present (fields are numbered from 1; for MSH, MSH-1 is
    /// the field separator).
    pub fn field_count(&self) -> u32 {
        let s = self.idx();
        if is_header(&s.name) {
            s.seps_len + 1
        } else {
            s.seps_len
        }
    }

    /// Field `n` (1-based), if present.
    pub fn field(&self, n: u32) -> Option<Element<'m>> {
        if n == 0 {
            return None;
        }
        let (span, level) = match self.msg.field_span(self.idx, n) {
            FieldSpan::Found(span) => (span, Level::Field),
            FieldSpan::Literal(span) => (span, Level::Literal),
            FieldSpan::Missing { .. } => return None,
        };
        Some(Element {
            msg: self.msg,
            span,
            level,
        })
    }

    /// Fields 1..=`field_count()` with their numbers.
    pub fn fields(&self) -> impl Iterator<Item = (u32, Element<'m>)> + 'm {
        let seg = *self;
        (1..=seg.field_count()).filter_map(move |n| seg.field(n).map(|f| (n, f)))
    }
}

/// The level of an [`Element`] in the message tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// A whole field (all repetitions).
    Field,
    /// One repetition of a field.
    Repetition,
    /// One component.
    Component,
    /// One subcomponent (always a leaf).
    Subcomponent,
    /// MSH-1 or MSH-2: delimiters, never split or unescaped.
    Literal,
}

/// A field, repetition, component or subcomponent.
#[derive(Clone, Copy)]
pub struct Element<'m> {
    msg: &'m Message<'m>,
    span: Span,
    level: Level,
}

impl<'m> Element<'m> {
    /// The level this element sits at.
    pub fn level(&self) -> Level {
        self.level
    }

    /// The raw, encoded bytes.
    pub fn raw(&self) -> &'m [u8] {
        &self.msg.buf[self.span.0..self.span.1]
    }

    /// Empty (no bytes at all).
    pub fn is_empty(&self) -> bool {
        self.span.0 == self.span.1
    }

    /// The HL7 explicit null `""`.
    pub fn is_null(&self) -> bool {
        self.raw() == b"\"\""
    }

    /// The decoded text of this element. For an element with children, the delimiters
    /// between them stay as written; use [`Element::children`] to walk them instead.
    pub fn text(&self) -> Cow<'m, str> {
        let idx = &self.msg.index;
        match self.level {
            Level::Literal => idx.charset.decode(self.raw()).unwrap_or_default(),
            _ => escape::decode(self.raw(), &idx.delims, idx.charset),
        }
    }

    /// The elements one level down: repetitions of a field, components of a repetition,
    /// subcomponents of a component. Empty for leaves.
    pub fn children(&self) -> Children<'m> {
        let d = &self.msg.index.delims;
        let (delim, level) = match self.level {
            Level::Field => (Some(d.repetition), Level::Repetition),
            Level::Repetition => (Some(d.component), Level::Component),
            Level::Component => (d.subcomponent, Level::Subcomponent),
            Level::Subcomponent | Level::Literal => (None, Level::Literal),
        };
        Children {
            msg: self.msg,
            next: delim.map(|_| self.span.0),
            end: self.span.1,
            delim: delim.unwrap_or(0),
            level,
        }
    }

    /// True when this element has more than one child, at any depth below it.
    pub fn is_composite(&self) -> bool {
        let d = &self.msg.index.delims;
        let raw = self.raw();
        let has = |c: Option<u8>| c.is_some_and(|c| raw.contains(&c));
        match self.level {
            Level::Field => {
                has(Some(d.repetition)) || has(Some(d.component)) || has(d.subcomponent)
            }
            Level::Repetition => has(Some(d.component)) || has(d.subcomponent),
            Level::Component => has(d.subcomponent),
            Level::Subcomponent | Level::Literal => false,
        }
    }
}

/// Iterator over the children of an [`Element`]; see [`Element::children`].
#[derive(Clone)]
pub struct Children<'m> {
    msg: &'m Message<'m>,
    /// Start of the next child; `None` once exhausted (or for a leaf).
    next: Option<usize>,
    end: usize,
    delim: u8,
    level: Level,
}

impl<'m> Iterator for Children<'m> {
    type Item = Element<'m>;

    fn next(&mut self) -> Option<Element<'m>> {
        let start = self.next?;
        let (stop, next) = match memchr::memchr(self.delim, &self.msg.buf[start..self.end]) {
            Some(p) => (start + p, Some(start + p + 1)),
            None => (self.end, None),
        };
        self.next = next;
        Some(Element {
            msg: self.msg,
            span: (start, stop),
            level: self.level,
        })
    }
}

// Debug output shows shape, never content: messages are patient data and Debug output
// ends up in logs and panic messages.
impl std::fmt::Debug for Message<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("len", &self.buf.len())
            .field("segments", &self.segment_names().collect::<Vec<_>>())
            .field("charset", &self.index.charset)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Segment<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("name", &self.name())
            .field("position", &self.idx)
            .finish()
    }
}

impl std::fmt::Debug for Element<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Element")
            .field("level", &self.level)
            .field("len", &(self.span.1 - self.span.0))
            .finish()
    }
}

impl std::fmt::Debug for Children<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Children")
            .field("level", &self.level)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_line_parses_to_the_same_header() {
        let cases: [&[u8]; 5] = [
            b"MSH|^~\\&|A|B|C|D|20260101||ADT^A01|X1|P|2.5.1|||||||8859/1\rPID|1||MRN\r",
            b"\xEF\xBB\xBF\r\n  MSH|^~\\&|A|B|C|D|20260101||ADT^A01|X2|P|2.5.1\r\nPID|1\r\n",
            b"MSH|^~\\&|A|B|C|D|20260101||ADT^A01|X3|P|2.5.1\nPID|1\nPV1|1\n",
            b"MSH#^~\\&#A#B#C#D#20260101##ADT^A01#X4#P#2.3",
            b"MSH|^~\\&|A|B|C|D|20260101||SIU^S12|X5|P|2.5.1\rSCH|1\r\rPID|1\r",
        ];
        for raw in cases {
            let whole = Message::parse(raw).expect("whole");
            let head = Message::parse(header_line(raw)).expect("header alone");
            assert_eq!(head.segments().count(), 1);
            for field in 1..=18 {
                let path = format!("MSH-{field}");
                assert_eq!(
                    head.get_raw(path.as_str()).expect("path"),
                    whole.get_raw(path.as_str()).expect("path"),
                    "{path} of {:?}",
                    String::from_utf8_lossy(raw)
                );
            }
            assert_eq!(head.charset(), whole.charset());
            assert_eq!(head.delimiters(), whole.delimiters());
        }
        assert_eq!(header_line(b"  \r\n"), b"  \r\n");
    }

    /// After every edit, the index kept up to date in place equals one built from
    /// scratch, on every corpus message and edits of every shape: longer, shorter,
    /// empty, new fields past the end, components, repetitions, later segments.
    #[test]
    fn in_place_reindexing_matches_a_full_rebuild() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus/hl7v2");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).expect("corpus") {
            let bytes = std::fs::read(entry.expect("entry").path()).expect("read");
            let Ok(mut msg) = Message::parse_owned(bytes) else {
                continue;
            };
            let names: Vec<String> = msg.segment_names().map(str::to_owned).collect();
            for (n, name) in names
                .iter()
                .enumerate()
                .filter(|(_, n)| !n.ends_with("HS") && *n != "MSH")
            {
                for (path, value) in [
                    (format!("{name}-1"), "X"),
                    (format!("{name}-3-2"), "a much longer value than before"),
                    (format!("{name}-3"), ""),
                    (format!("{name}-30-4"), "far"),
                    (format!("{name}-2[2]"), "rep"),
                    (format!("{name}-5"), "with|field^and~delims&escaped"),
                ] {
                    if msg.set(path.as_str(), value).is_ok() {
                        let rebuilt = Index::build_with(&msg.buf, false, msg.index.unstated)
                            .expect("still parses");
                        assert_eq!(msg.index, rebuilt, "after setting {path} (segment {n})");
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 1000, "only {checked} edits checked");
    }
}
