//! MLLP framing as a [`tokio_util::codec`] `Decoder`/`Encoder`.
//!
//! A frame is `0x0B payload 0x1C 0x0D`. See the crate docs for what the decoder does with junk, a
//! missing final CR, oversize frames and a stream that ends mid-frame.

use std::fmt;
use std::io;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// Start block: the byte that opens a frame.
pub const START_BLOCK: u8 = 0x0B;
/// End block: the byte that closes a frame's payload.
pub const END_BLOCK: u8 = 0x1C;
/// Carriage return: follows the end block in a well-formed frame.
pub const CARRIAGE_RETURN: u8 = 0x0D;
/// The most bytes after an end block, with no line break among them, that may be a
/// sender's stray bytes rather than more of the message (see
/// [`MllpCodec::holds_candidate`]).
pub const MAX_STRAY_AFTER_END: usize = 8;
/// Default largest payload accepted: 16 MiB.
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;
/// Most bytes of an oversize frame kept in [`Oversize::head`].
pub const OVERSIZE_HEAD_LIMIT: usize = 8 * 1024;

/// One decoded item.
#[derive(Clone, PartialEq, Eq)]
pub enum Frame {
    /// A complete payload, without the block characters.
    Message(Bytes),
    /// A frame whose payload was larger than the limit. Its bytes were discarded (except
    /// [`Oversize::head`]); the stream is positioned after its end block and stays usable.
    Oversize(Oversize),
}

/// What is left of a frame that exceeded the limit.
#[derive(Clone, PartialEq, Eq)]
pub struct Oversize {
    /// The payload's full length in bytes.
    pub len: usize,
    /// The start of the payload up to (not including) its first segment terminator, at most
    /// [`OVERSIZE_HEAD_LIMIT`] bytes: normally the MSH segment, so a handler can build a NAK that
    /// echoes MSH-10 without the decoder holding the whole frame.
    pub head: Bytes,
}

// Debug shows sizes only: payloads are patient data and Debug output ends up in logs.
impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Frame::Message(payload) => f
                .debug_struct("Message")
                .field("len", &payload.len())
                .finish_non_exhaustive(),
            Frame::Oversize(oversize) => oversize.fmt(f),
        }
    }
}

impl fmt::Debug for Oversize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Oversize")
            .field("len", &self.len)
            .field("head_len", &self.head.len())
            .finish_non_exhaustive()
    }
}

/// Why framing failed. No variant carries payload bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The stream ended after a start block but before the frame's end block.
    #[error(
        "the stream ended inside an MLLP frame ({received} payload bytes received, no end block)"
    )]
    Truncated {
        /// Payload bytes received before the end.
        received: usize,
    },
    /// A payload given to the encoder is larger than the limit.
    #[error("a payload of {len} bytes exceeds the {limit}-byte MLLP frame limit")]
    PayloadTooLarge {
        /// The payload's length.
        len: usize,
        /// The configured limit.
        limit: usize,
    },
    /// A payload given to the encoder contains a block character, which would end the frame early
    /// at the receiver.
    #[error(
        "payload byte {offset} is 0x{byte:02X}, an MLLP block character, so it cannot be framed"
    )]
    ReservedByte {
        /// Offset of the first such byte.
        offset: usize,
        /// The byte (0x0B or 0x1C).
        byte: u8,
    },
    /// Reading or writing the underlying stream failed.
    #[error("MLLP stream I/O failed")]
    Io(#[from] io::Error),
}

/// Where the decoder is in the byte stream.
#[derive(Debug)]
enum State {
    /// Between frames: everything up to a start block is junk.
    Seeking,
    /// Just after an end block: one CR here is the normal trailer, not junk. Delivering the frame at
    /// the end block (instead of waiting for the CR) is what makes a missing CR harmless.
    AfterEnd,
    /// Inside a frame; the first `scanned` buffered bytes hold no end block.
    InFrame { scanned: usize },
    /// An end block at `len` was the last byte read, and the codec waits for the next one
    /// to tell a frame's end from a stray 0x1C in the payload (see
    /// [`MllpCodec::wait_for_trailer`]).
    EndHeld { len: usize },
    /// Inside a frame that passed the limit: dropping bytes up to its end block.
    Discarding { len: usize, head: Bytes },
    /// Between frames, the buffer starts with `MSH`: a frame whose start block was lost,
    /// if an end block comes before any start block. The first `scanned` bytes hold
    /// neither.
    Unframed { scanned: usize },
}

/// The MLLP codec. Decodes to [`Frame`]s and encodes payloads (`&[u8]` or [`Bytes`]).
///
/// The decoder never holds more than `max_frame` payload bytes plus whatever the last read added:
/// when a frame passes the limit its buffered bytes are dropped and the rest of it is discarded as
/// it arrives.
#[derive(Debug)]
pub struct MllpCodec {
    max_frame: usize,
    state: State,
    /// Junk bytes skipped since the last log line about them.
    junk_pending: u64,
    /// Whether any of those bytes was more than whitespace: a sender writing HL7 without
    /// MLLP framing, say, rather than a stray line break between frames.
    junk_pending_text: bool,
    /// Junk bytes skipped over the codec's lifetime.
    junk_total: u64,
    /// Of those, the bytes of runs that held more than whitespace, once each run ended.
    junk_text_total: u64,
    /// See [`MllpCodec::wait_for_trailer`].
    wait_for_trailer: bool,
    /// Frames taken without their start block (see [`MllpCodec::unframed_frames`]).
    unframed: u64,
    /// In a frame: the last end block seen right after a segment's end (CR or LF) but
    /// followed by a byte that is not a trailer. Taken for a stray 0x1C while bytes keep
    /// coming; the frame's end, with junk after it, once the sender goes quiet (see
    /// [`MllpCodec::release_candidate`]).
    candidate_end: Option<usize>,
}

impl Default for MllpCodec {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME)
    }
}

impl MllpCodec {
    /// A codec that accepts payloads up to `max_frame` bytes (in both directions).
    pub fn new(max_frame: usize) -> Self {
        Self {
            max_frame,
            state: State::Seeking,
            junk_pending: 0,
            junk_pending_text: false,
            junk_total: 0,
            junk_text_total: 0,
            wait_for_trailer: false,
            unframed: 0,
            candidate_end: None,
        }
    }

    /// When an end block is the last byte read so far and the payload before it does not
    /// end a segment (no CR or LF right before it), wait for the next byte before ending
    /// the frame: a CR, LF or the next start block ends it; anything else means the 0x1C
    /// was a stray byte inside the payload, and the frame goes on to its real end. So how
    /// such a stream decodes does not depend on where TCP split it. The frame is also
    /// ended by end of stream or by [`MllpCodec::release_held`], which a listener calls
    /// once the sender has been quiet briefly (a sender that omits both the last segment's
    /// CR and the frame's). A frame over the limit is never held. Off by default (a
    /// sender reading ACKs has no use for it); with a `Framed`, which has no timer, a held
    /// frame waits for the next byte or the end of the stream.
    pub fn wait_for_trailer(mut self, wait: bool) -> Self {
        self.wait_for_trailer = wait;
        self
    }

    /// Whether a frame is complete but for the byte after its end block.
    pub fn holds_end(&self) -> bool {
        matches!(self.state, State::EndHeld { .. })
    }

    /// Ends a held frame at its end block (see [`MllpCodec::wait_for_trailer`]).
    pub fn release_held(&mut self, buf: &mut BytesMut) -> Option<Frame> {
        let State::EndHeld { len } = self.state else {
            return None;
        };
        Some(self.end_frame(buf, len))
    }

    /// With [`MllpCodec::wait_for_trailer`]: whether the frame being read has had an end
    /// block right after a segment's end (CR or LF) that was followed by at most
    /// [`MAX_STRAY_AFTER_END`] bytes with no line break among them (`...\r 0x1C X`), and
    /// nothing else since. Either a stray 0x1C inside the message, if more of it follows,
    /// or a sender's stray byte after its frame, if the sender goes quiet waiting for its
    /// answer; [`MllpCodec::release_candidate`] takes the second view.
    pub fn holds_candidate(&self, buf: &BytesMut) -> bool {
        matches!(self.state, State::InFrame { .. })
            && self.wait_for_trailer
            && self.candidate_end.is_some_and(|len| {
                let after = buf.get(len + 1..).unwrap_or_default();
                after.len() <= MAX_STRAY_AFTER_END
                    && !after.iter().any(|c| matches!(c, b'\r' | b'\n'))
            })
    }

    /// Ends the frame at the end block [`MllpCodec::holds_candidate`] saw; the bytes after
    /// it are then decoded as usual (junk up to the next start block). A listener calls it
    /// once the sender has been quiet for a while: a sender that puts a stray byte after
    /// its end block still gets its answer, and not only after the frame timeout.
    pub fn release_candidate(&mut self, buf: &mut BytesMut) -> Option<Frame> {
        if !self.holds_candidate(buf) {
            return None;
        }
        let len = self.candidate_end?;
        let frame = self.end_frame(buf, len);
        tracing::warn!(
            following = buf.len(),
            "an MLLP end block (0x1C) was followed by bytes that are not its trailer, \
             and the sender went quiet: the frame was ended there"
        );
        Some(frame)
    }

    /// Takes the frame whose end block is at `len` out of `buf`.
    fn end_frame(&mut self, buf: &mut BytesMut, len: usize) -> Frame {
        self.state = State::AfterEnd;
        self.candidate_end = None;
        if len > self.max_frame {
            // The whole oversize frame arrived in one read.
            let head = head_of(&buf[..len]);
            buf.advance(len + 1);
            tracing::debug!(len, limit = self.max_frame, "oversize MLLP frame");
            return Frame::Oversize(Oversize { len, head });
        }
        let payload = buf.split_to(len).freeze();
        buf.advance(1);
        Frame::Message(payload)
    }

    /// The payload limit.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Whether the frame partly received began without its start block (`MSH...` with no
    /// 0x0B before it): a sender that does not frame at all looks like this until its
    /// frame timeout.
    pub fn unframed_partial(&self) -> bool {
        matches!(self.state, State::Unframed { .. })
    }

    /// True between a start block and its end block, i.e. while a frame is partly received.
    pub fn in_frame(&self) -> bool {
        matches!(
            self.state,
            State::InFrame { .. }
                | State::Discarding { .. }
                | State::EndHeld { .. }
                | State::Unframed { .. }
        )
    }

    /// Messages that arrived without their start block (`MSH...` then `0x1C 0x0D`, with no
    /// `0x0B` before it) and were taken as frames anyway: a sender that loses or omits the
    /// start block would otherwise wait for an answer that never comes. Only bytes that
    /// begin with `MSH` after the previous frame (or whitespace) and reach an end block
    /// before any start block count; anything else outside frames is still skipped.
    pub fn unframed_frames(&self) -> u64 {
        self.unframed
    }

    /// Bytes skipped outside frames so far (not counting the CR after an end block).
    pub fn skipped_bytes(&self) -> u64 {
        self.junk_total
    }

    /// Ends the run of junk being skipped, if any (logged and counted as at a start
    /// block): for a connection that ends without one, by a timeout or a reset.
    pub fn flush_junk(&mut self) {
        self.log_junk();
    }

    /// Of [`MllpCodec::skipped_bytes`], those in runs of junk that held more than
    /// whitespace (a stray line break between frames is common and harmless), counted
    /// once each run has ended (at the next start block, or the end of the stream).
    pub fn skipped_text_bytes(&self) -> u64 {
        self.junk_text_total
    }

    fn skip_junk(&mut self, junk: &[u8]) {
        if !self.junk_pending_text {
            self.junk_pending_text = junk.iter().any(|c| !c.is_ascii_whitespace());
        }
        let n = junk.len() as u64;
        self.junk_pending += n;
        self.junk_total += n;
    }

    /// Between frames: whether `buf` (after whitespace) starts with `MSH`, or with the
    /// start of it, before any start block. If so the whitespace is skipped and the codec
    /// either moves to [`State::Unframed`] or waits for more bytes; the caller goes on.
    fn unframed_ahead(&mut self, buf: &mut BytesMut) -> bool {
        let start = memchr::memchr(START_BLOCK, buf).unwrap_or(buf.len());
        let Some(lead) = buf[..start].iter().position(|c| !c.is_ascii_whitespace()) else {
            return false;
        };
        let rest = &buf[lead..start];
        let complete = rest.starts_with(b"MSH");
        // With a start block ahead, only a message already ended before it counts.
        if start < buf.len() && !(complete && memchr::memchr(END_BLOCK, rest).is_some()) {
            return false;
        }
        if !complete && !b"MSH".starts_with(rest) {
            return false;
        }
        self.skip_junk(&buf[..lead]);
        buf.advance(lead);
        if complete {
            self.state = State::Unframed { scanned: 0 };
        }
        true
    }

    fn log_junk(&mut self) {
        let skipped = std::mem::take(&mut self.junk_pending);
        if skipped == 0 {
            return;
        }
        // Counts only: junk may be a fragment of a message. Text is logged loudly, because
        // nothing answers it and the operator must learn that a sender is not framing;
        // stray line breaks between frames are common and harmless.
        if std::mem::take(&mut self.junk_pending_text) {
            self.junk_text_total += skipped;
            tracing::warn!(
                skipped,
                "skipped bytes outside MLLP frames (is the sender framing with 0x0B ... 0x1C 0x0D?)"
            );
        } else {
            tracing::debug!(skipped, "skipped whitespace outside MLLP frames");
        }
    }
}

/// Whether `byte`, right after an end block, shows that the end block ended the frame:
/// its trailer (CR, or LF from senders that use one) or the next frame's start block.
fn ends_frame(byte: u8) -> bool {
    matches!(byte, CARRIAGE_RETURN | b'\n' | START_BLOCK)
}

/// The kept start of an oversize payload: up to its first CR, at most [`OVERSIZE_HEAD_LIMIT`].
fn head_of(payload: &[u8]) -> Bytes {
    let window = &payload[..payload.len().min(OVERSIZE_HEAD_LIMIT)];
    let end = memchr::memchr(CARRIAGE_RETURN, window).unwrap_or(window.len());
    Bytes::copy_from_slice(&window[..end])
}

impl Decoder for MllpCodec {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        loop {
            if matches!(self.state, State::Seeking) && self.unframed_ahead(buf) {
                if matches!(self.state, State::Seeking) {
                    // Only the start of `MSH` so far: wait for the rest.
                    return Ok(None);
                }
                continue;
            }
            match &mut self.state {
                State::Seeking => match memchr::memchr(START_BLOCK, buf) {
                    Some(at) => {
                        self.skip_junk(&buf[..at]);
                        self.log_junk();
                        buf.advance(at + 1);
                        self.state = State::InFrame { scanned: 0 };
                    }
                    None => {
                        self.skip_junk(&buf[..]);
                        buf.clear();
                        return Ok(None);
                    }
                },
                State::AfterEnd => match buf.first() {
                    None => return Ok(None),
                    Some(&byte) => {
                        if byte == CARRIAGE_RETURN {
                            buf.advance(1);
                        }
                        self.state = State::Seeking;
                    }
                },
                State::InFrame { scanned } => {
                    match memchr::memchr(END_BLOCK, &buf[*scanned..]) {
                        Some(offset) => {
                            let len = *scanned + offset;
                            match buf.get(len + 1) {
                                // An end block followed by anything but a trailer or the
                                // next frame is a stray 0x1C inside the payload (a sender
                                // that does not escape it): keep reading to the real end, so
                                // the message is refused whole (the HL7 parser names the
                                // byte) rather than cut short, the rest skipped as junk.
                                Some(&next) if !ends_frame(next) => {
                                    if len > 0
                                        && len <= self.max_frame
                                        && matches!(buf[len - 1], CARRIAGE_RETURN | b'\n')
                                    {
                                        self.candidate_end = Some(len);
                                    }
                                    *scanned = len + 1;
                                }
                                // A payload that ends its last segment (CR or LF before
                                // the end block) is complete: no need to wait.
                                None if self.wait_for_trailer
                                    && len <= self.max_frame
                                    && !(len > 0
                                        && matches!(buf[len - 1], CARRIAGE_RETURN | b'\n')) =>
                                {
                                    self.state = State::EndHeld { len };
                                    return Ok(None);
                                }
                                // Without waiting, an end block that is the last byte read
                                // ends the frame at once.
                                _ => return Ok(Some(self.end_frame(buf, len))),
                            }
                        }
                        None if buf.len() > self.max_frame => {
                            // Drop what we hold now rather than at the end block, so memory
                            // stays bounded however long the frame is.
                            let head = head_of(buf);
                            let len = buf.len();
                            buf.clear();
                            self.candidate_end = None;
                            tracing::debug!(
                                limit = self.max_frame,
                                "MLLP frame exceeds the limit; discarding up to its end block"
                            );
                            self.state = State::Discarding { len, head };
                            return Ok(None);
                        }
                        None => {
                            *scanned = buf.len();
                            return Ok(None);
                        }
                    }
                }
                State::EndHeld { len } => {
                    let len = *len;
                    match buf.get(len + 1) {
                        None => return Ok(None),
                        Some(&next) if ends_frame(next) => {
                            return Ok(Some(self.end_frame(buf, len)));
                        }
                        // A stray 0x1C: the frame goes on.
                        Some(_) => self.state = State::InFrame { scanned: len + 1 },
                    }
                }
                State::Unframed { scanned } => {
                    match memchr::memchr2(START_BLOCK, END_BLOCK, &buf[*scanned..]) {
                        Some(offset) if buf[*scanned + offset] == END_BLOCK => {
                            // The frame's end: take it as a frame that lost its start.
                            self.unframed += 1;
                            if self.unframed == 1 {
                                tracing::warn!(
                                    "an MLLP frame arrived without its start block (0x0B) and was \
                                     taken as a message; the sender should frame with 0x0B ... 0x1C 0x0D"
                                );
                            }
                            self.state = State::InFrame {
                                scanned: *scanned + offset,
                            };
                        }
                        Some(offset) => {
                            // A start block first: what came before it was junk.
                            let at = *scanned + offset;
                            self.skip_junk(&buf[..at]);
                            self.log_junk();
                            buf.advance(at + 1);
                            self.state = State::InFrame { scanned: 0 };
                        }
                        None if buf.len() > self.max_frame => {
                            // Too long to be a frame: junk, and memory stays bounded.
                            self.skip_junk(&buf[..]);
                            buf.clear();
                            self.state = State::Seeking;
                            return Ok(None);
                        }
                        None => {
                            *scanned = buf.len();
                            return Ok(None);
                        }
                    }
                }
                State::Discarding { len, head } => match memchr::memchr(END_BLOCK, buf) {
                    Some(offset) => {
                        let oversize = Oversize {
                            len: *len + offset,
                            head: std::mem::take(head),
                        };
                        buf.advance(offset + 1);
                        self.state = State::AfterEnd;
                        tracing::debug!(
                            len = oversize.len,
                            limit = self.max_frame,
                            "oversize MLLP frame"
                        );
                        return Ok(Some(Frame::Oversize(oversize)));
                    }
                    None => {
                        *len += buf.len();
                        buf.clear();
                        return Ok(None);
                    }
                },
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        if let Some(frame) = self.decode(buf)? {
            return Ok(Some(frame));
        }
        // The stream ended right after an end block: that was the frame's end.
        if let Some(frame) = self.release_held(buf) {
            return Ok(Some(frame));
        }
        // `decode` consumed everything it could; what is left is a partial frame, if anything.
        let state = std::mem::replace(&mut self.state, State::Seeking);
        if matches!(state, State::Unframed { .. } | State::Seeking) {
            // An unended `MSH...` (or the start of one) outside frames is junk.
            self.skip_junk(&buf[..]);
        }
        let received = match state {
            State::Seeking | State::AfterEnd | State::EndHeld { .. } | State::Unframed { .. } => {
                None
            }
            State::InFrame { .. } => Some(buf.len()),
            State::Discarding { len, .. } => Some(len + buf.len()),
        };
        buf.clear();
        self.log_junk();
        match received {
            None => Ok(None),
            Some(received) => Err(CodecError::Truncated { received }),
        }
    }
}

impl Encoder<&[u8]> for MllpCodec {
    type Error = CodecError;

    fn encode(&mut self, payload: &[u8], dst: &mut BytesMut) -> Result<(), CodecError> {
        if payload.len() > self.max_frame {
            return Err(CodecError::PayloadTooLarge {
                len: payload.len(),
                limit: self.max_frame,
            });
        }
        if let Some(offset) = memchr::memchr2(START_BLOCK, END_BLOCK, payload) {
            return Err(CodecError::ReservedByte {
                offset,
                byte: payload[offset],
            });
        }
        dst.reserve(payload.len() + 3);
        dst.put_u8(START_BLOCK);
        dst.put_slice(payload);
        dst.put_slice(&[END_BLOCK, CARRIAGE_RETURN]);
        Ok(())
    }
}

impl Encoder<Bytes> for MllpCodec {
    type Error = CodecError;

    fn encode(&mut self, payload: Bytes, dst: &mut BytesMut) -> Result<(), CodecError> {
        self.encode(&payload[..], dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut out = vec![START_BLOCK];
        out.extend_from_slice(payload);
        out.extend_from_slice(&[END_BLOCK, CARRIAGE_RETURN]);
        out
    }

    fn msg(payload: &[u8]) -> Frame {
        Frame::Message(Bytes::copy_from_slice(payload))
    }

    /// Feeds `chunks` one at a time, as separate reads would, then signals EOF.
    fn decode_chunks(
        codec: &mut MllpCodec,
        chunks: &[&[u8]],
    ) -> (Vec<Frame>, Result<(), CodecError>) {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            loop {
                match codec.decode(&mut buf) {
                    Ok(Some(frame)) => out.push(frame),
                    Ok(None) => break,
                    Err(e) => return (out, Err(e)),
                }
                // Bounded: never more than the limit plus this read.
                assert!(buf.len() <= codec.max_frame() + chunk.len());
            }
        }
        loop {
            match codec.decode_eof(&mut buf) {
                Ok(Some(frame)) => out.push(frame),
                Ok(None) => return (out, Ok(())),
                Err(e) => return (out, Err(e)),
            }
        }
    }

    #[test]
    fn one_frame() {
        let (frames, end) = decode_chunks(&mut MllpCodec::default(), &[&frame(b"MSH|a")]);
        assert_eq!(frames, vec![msg(b"MSH|a")]);
        assert!(end.is_ok());
    }

    #[test]
    fn a_start_block_inside_a_frame_is_payload_even_before_msh() {
        // Text in a field that holds `0x0B MSH...` must not become a message of its own,
        // nor cost the message around it: the frame runs to its end block, whole.
        for inner in [
            &b"\x0bMSH|^~\\&|A|B|C|D|2026||ADT^A01|FORGED|P|2.5\r"[..],
            b"\x0bMSH|b\r",
            b"a\x0bb",
        ] {
            let payload = [
                &b"MSH|^~\\&|A|B|C|D|2026||ADT^A01|REAL|P|2.5\rNTE|1||"[..],
                inner,
                b"\r",
            ]
            .concat();
            let wire = frame(&payload);
            for cut in 0..=wire.len() {
                let mut codec = MllpCodec::default();
                let (frames, end) = decode_chunks(&mut codec, &[&wire[..cut], &wire[cut..]]);
                assert_eq!(frames, vec![msg(&payload)], "cut at {cut}");
                assert!(end.is_ok(), "cut at {cut}");
            }
        }
    }

    #[test]
    fn a_stray_end_block_inside_the_payload_does_not_cut_the_frame() {
        // Read whole, the frame runs to its real end; the HL7 parser then refuses the
        // 0x1C by offset, and nothing is skipped as junk.
        let payload = b"MSH|^~\\&|A\rOBX|1|ED|PDF||abc\x1cdef\rNTE|1||tail\r";
        let mut wire = frame(payload);
        wire.extend(frame(b"MSH|next"));
        let mut codec = MllpCodec::default();
        let (frames, end) = decode_chunks(&mut codec, &[&wire]);
        assert_eq!(frames, vec![msg(payload), msg(b"MSH|next")]);
        assert!(end.is_ok());
        assert_eq!(codec.skipped_bytes(), 0);
        // A lone end block at the end of what was read still ends the frame (a sender
        // that omits the CR), and one followed by LF or the next start block does too.
        for tail in [
            &[END_BLOCK][..],
            &[END_BLOCK, b'\n'],
            &[END_BLOCK, START_BLOCK],
        ] {
            let mut wire = vec![START_BLOCK];
            wire.extend_from_slice(b"MSH|x");
            wire.extend_from_slice(tail);
            let (frames, _) = decode_chunks(&mut MllpCodec::default(), &[&wire]);
            assert_eq!(frames.first(), Some(&msg(b"MSH|x")), "{tail:?}");
        }
    }

    #[test]
    fn a_waiting_codec_decodes_the_same_however_the_stream_is_split() {
        let payload = b"MSH|^~\\&|A\rOBX|1|ED|PDF||abc\x1cdef\rNTE|1||tail\r";
        let mut wire = frame(payload);
        wire.extend(frame(b"MSH|next"));
        for cut in 0..=wire.len() {
            let mut codec = MllpCodec::default().wait_for_trailer(true);
            let (frames, end) = decode_chunks(&mut codec, &[&wire[..cut], &wire[cut..]]);
            assert_eq!(frames, vec![msg(payload), msg(b"MSH|next")], "cut at {cut}");
            assert!(end.is_ok(), "cut at {cut}");
            assert_eq!(codec.skipped_bytes(), 0, "cut at {cut}");
        }
        // A payload that ends its segment does not wait for the frame's CR.
        let mut codec = MllpCodec::default().wait_for_trailer(true);
        let mut buf = BytesMut::from(&b"\x0bMSH|x\r\x1c"[..]);
        assert_eq!(
            codec.decode(&mut buf).expect("decode"),
            Some(msg(b"MSH|x\r"))
        );
        // One that does not waits for the next byte, or for `release_held`.
        let mut codec = MllpCodec::default().wait_for_trailer(true);
        let mut buf = BytesMut::from(&b"\x0bMSH|x\x1c"[..]);
        assert_eq!(codec.decode(&mut buf).expect("decode"), None);
        assert!(codec.holds_end() && codec.in_frame());
        assert_eq!(codec.release_held(&mut buf), Some(msg(b"MSH|x")));
        assert!(!codec.holds_end());
        // The next frame after a released one.
        buf.extend_from_slice(b"\x0bMSH|abc\x1c");
        assert_eq!(codec.decode(&mut buf).expect("decode"), None);
        assert!(codec.holds_end());
        buf.extend_from_slice(b"def\x1c\r");
        assert_eq!(
            codec.decode(&mut buf).expect("decode"),
            Some(msg(b"MSH|abc\x1cdef"))
        );
    }

    #[test]
    fn a_waiting_codec_still_bounds_what_it_holds() {
        // Chunks that each end in a stray 0x1C: held, then continued, but never past the
        // limit.
        let mut codec = MllpCodec::new(100).wait_for_trailer(true);
        let mut buf = BytesMut::from(&b"\x0b"[..]);
        let mut frames = Vec::new();
        for _ in 0..100 {
            buf.extend_from_slice(b"bbbbbbbbbbbbbbbbbbbb\x1c");
            while let Some(frame) = codec.decode(&mut buf).expect("decode") {
                frames.push(frame);
            }
            assert!(buf.len() <= 100 + 21, "{}", buf.len());
        }
        assert!(
            matches!(frames.first(), Some(Frame::Oversize(_))),
            "{frames:?}"
        );
    }

    #[test]
    fn empty_payload_is_a_frame() {
        let (frames, _) = decode_chunks(&mut MllpCodec::default(), &[&frame(b"")]);
        assert_eq!(frames, vec![msg(b"")]);
    }

    #[test]
    fn split_at_every_byte_boundary() {
        let mut wire = frame(b"MSH|^~\\&|A\rPID|1");
        wire.extend(frame(b"MSH|second"));
        for cut in 0..=wire.len() {
            let mut codec = MllpCodec::default();
            let (frames, end) = decode_chunks(&mut codec, &[&wire[..cut], &wire[cut..]]);
            assert_eq!(
                frames,
                vec![msg(b"MSH|^~\\&|A\rPID|1"), msg(b"MSH|second")],
                "cut at {cut}"
            );
            assert!(end.is_ok(), "cut at {cut}");
            assert_eq!(codec.skipped_bytes(), 0, "cut at {cut}");
        }
    }

    #[test]
    fn one_byte_per_read() {
        let mut wire = frame(b"MSH|one");
        wire.extend(frame(b"MSH|two"));
        let chunks: Vec<&[u8]> = wire.chunks(1).collect();
        let (frames, end) = decode_chunks(&mut MllpCodec::default(), &chunks);
        assert_eq!(frames, vec![msg(b"MSH|one"), msg(b"MSH|two")]);
        assert!(end.is_ok());
    }

    #[test]
    fn several_frames_in_one_read() {
        let mut wire = Vec::new();
        for i in 0..5u8 {
            wire.extend(frame(&[b'M', b'0' + i]));
        }
        let (frames, _) = decode_chunks(&mut MllpCodec::default(), &[&wire]);
        let expected: Vec<Frame> = (0..5u8).map(|i| msg(&[b'M', b'0' + i])).collect();
        assert_eq!(frames, expected);
    }

    #[test]
    fn junk_before_start_is_skipped_and_counted() {
        let mut wire = b"\r\nGARBAGE".to_vec();
        wire.extend(frame(b"MSH|x"));
        wire.extend(b"xy");
        wire.extend(frame(b"MSH|y"));
        let mut codec = MllpCodec::default();
        let (frames, end) = decode_chunks(&mut codec, &[&wire]);
        assert_eq!(frames, vec![msg(b"MSH|x"), msg(b"MSH|y")]);
        assert!(end.is_ok());
        assert_eq!(codec.skipped_bytes(), 9 + 2);
    }

    #[test]
    fn a_message_that_lost_its_start_block_is_taken_as_a_frame_wherever_tcp_splits() {
        // After a frame (and a stray line break), `MSH...` then 0x1C 0x0D with no 0x0B.
        let mut wire = frame(b"MSH|a");
        wire.extend(b"\r\nMSH|b\rPID|1");
        wire.extend([END_BLOCK, CARRIAGE_RETURN]);
        wire.extend(frame(b"MSH|c"));
        for cut in 0..=wire.len() {
            let mut codec = MllpCodec::default();
            let (frames, end) = decode_chunks(&mut codec, &[&wire[..cut], &wire[cut..]]);
            assert_eq!(
                frames,
                vec![msg(b"MSH|a"), msg(b"MSH|b\rPID|1"), msg(b"MSH|c")],
                "cut at {cut}"
            );
            assert!(end.is_ok());
            assert_eq!(codec.unframed_frames(), 1, "cut at {cut}");
        }
        // Byte by byte, as a slow sender writes.
        let mut codec = MllpCodec::default();
        let chunks: Vec<&[u8]> = wire.chunks(1).collect();
        let (frames, _) = decode_chunks(&mut codec, &chunks);
        assert_eq!(frames.len(), 3);
    }

    #[test]
    fn only_msh_text_ended_before_any_start_block_counts_as_unframed() {
        // Text that is not MSH stays junk; so does MSH text a start block cuts short.
        let mut wire = b"GARBAGE".to_vec();
        wire.extend([END_BLOCK, CARRIAGE_RETURN]);
        wire.extend(b"MSH|half");
        wire.extend(frame(b"MSH|d"));
        let mut codec = MllpCodec::default();
        let (frames, end) = decode_chunks(&mut codec, &[&wire]);
        assert_eq!(frames, vec![msg(b"MSH|d")]);
        assert!(end.is_ok());
        assert_eq!(codec.unframed_frames(), 0);
        assert_eq!(codec.skipped_bytes(), 9 + 8);
        // An unended MSH text is junk at the end of the stream, not a truncated frame.
        let mut codec = MllpCodec::default();
        let (frames, end) = decode_chunks(&mut codec, &[b"MSH|never ends"]);
        assert!(frames.is_empty() && end.is_ok());
        assert_eq!(codec.skipped_bytes(), 14);
        // And one longer than the limit is dropped as it arrives: memory stays bounded.
        let mut codec = MllpCodec::new(16);
        let long = [&b"MSH|"[..], &[b'x'; 64], &[END_BLOCK, CARRIAGE_RETURN]].concat();
        let chunks: Vec<&[u8]> = long.chunks(8).collect();
        let (frames, end) = decode_chunks(&mut codec, &chunks);
        assert!(frames.is_empty(), "{frames:?}");
        assert!(end.is_ok());
    }

    #[test]
    fn junk_only_then_eof_is_not_an_error() {
        let mut codec = MllpCodec::default();
        let (frames, end) = decode_chunks(&mut codec, &[b"noise", b"more"]);
        assert!(frames.is_empty());
        assert!(end.is_ok());
        assert_eq!(codec.skipped_bytes(), 9);
    }

    #[test]
    fn missing_final_cr_is_tolerated() {
        let wire = [
            &[START_BLOCK][..],
            b"MSH|a",
            &[END_BLOCK, START_BLOCK],
            b"MSH|b",
            &[END_BLOCK],
        ]
        .concat();
        for cut in 0..=wire.len() {
            let mut codec = MllpCodec::default();
            let (frames, end) = decode_chunks(&mut codec, &[&wire[..cut], &wire[cut..]]);
            assert_eq!(frames, vec![msg(b"MSH|a"), msg(b"MSH|b")], "cut at {cut}");
            assert!(end.is_ok());
            assert_eq!(codec.skipped_bytes(), 0);
        }
    }

    #[test]
    fn frame_is_delivered_before_its_cr_arrives() {
        let mut codec = MllpCodec::default();
        let mut buf = BytesMut::from(&[START_BLOCK, b'M', END_BLOCK][..]);
        assert_eq!(codec.decode(&mut buf).ok().flatten(), Some(msg(b"M")));
        buf.extend_from_slice(&[CARRIAGE_RETURN]);
        assert!(matches!(codec.decode(&mut buf), Ok(None)));
        assert_eq!(
            codec.skipped_bytes(),
            0,
            "the late CR is the trailer, not junk"
        );
    }

    #[test]
    fn oversize_in_one_read_then_normal_frame() {
        let mut codec = MllpCodec::new(8);
        let mut wire = frame(b"MSH|0123456789\rPID|x");
        wire.extend(frame(b"MSH|ok"));
        let (frames, end) = decode_chunks(&mut codec, &[&wire]);
        assert_eq!(
            frames,
            vec![
                Frame::Oversize(Oversize {
                    len: 20,
                    head: Bytes::from_static(b"MSH|0123456789"),
                }),
                msg(b"MSH|ok"),
            ]
        );
        assert!(end.is_ok());
    }

    #[test]
    fn oversize_across_reads_then_normal_frame_at_every_boundary() {
        let mut wire = frame(b"MSH|0123456789\rPID|x");
        wire.extend(frame(b"MSH|ok"));
        for cut in 0..=wire.len() {
            let mut codec = MllpCodec::new(8);
            let chunks: Vec<&[u8]> = [&wire[..cut], &wire[cut..]]
                .into_iter()
                .flat_map(|part| part.chunks(3))
                .collect();
            let (frames, end) = decode_chunks(&mut codec, &chunks);
            assert_eq!(frames.len(), 2, "cut at {cut}");
            match &frames[0] {
                Frame::Oversize(o) => {
                    assert_eq!(o.len, 20, "cut at {cut}");
                    // Only what was buffered when the limit was crossed is kept.
                    assert!(b"MSH|0123456789".starts_with(&o.head), "cut at {cut}");
                    assert!(o.head.len() >= 8, "cut at {cut}");
                }
                other => panic!("expected oversize, got {other:?} (cut at {cut})"),
            }
            assert_eq!(frames[1], msg(b"MSH|ok"), "cut at {cut}");
            assert!(end.is_ok(), "cut at {cut}");
        }
    }

    #[test]
    fn frame_at_exactly_the_limit_is_accepted() {
        let mut codec = MllpCodec::new(5);
        let (frames, _) = decode_chunks(&mut codec, &[&frame(b"12345"), &frame(b"123456")]);
        assert!(matches!(&frames[0], Frame::Message(p) if p.len() == 5));
        assert!(matches!(&frames[1], Frame::Oversize(o) if o.len == 6));
    }

    #[test]
    fn oversize_head_is_capped() {
        let payload = vec![b'A'; OVERSIZE_HEAD_LIMIT * 3];
        let mut codec = MllpCodec::new(16);
        let (frames, _) = decode_chunks(&mut codec, &[&frame(&payload)]);
        assert!(
            matches!(&frames[0], Frame::Oversize(o) if o.len == payload.len() && o.head.len() == OVERSIZE_HEAD_LIMIT)
        );
    }

    #[test]
    fn discarding_keeps_memory_bounded() {
        let mut codec = MllpCodec::new(1024);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[START_BLOCK]);
        for _ in 0..1000 {
            buf.extend_from_slice(&[b'x'; 4096]);
            assert!(matches!(codec.decode(&mut buf), Ok(None)));
            assert!(buf.len() <= 1024 + 4096);
        }
        assert!(codec.in_frame());
    }

    #[test]
    fn eof_mid_frame_is_truncated() {
        let mut codec = MllpCodec::default();
        let (frames, end) =
            decode_chunks(&mut codec, &[&frame(b"MSH|a"), &[START_BLOCK], b"MSH|b"]);
        assert_eq!(frames, vec![msg(b"MSH|a")]);
        assert!(matches!(end, Err(CodecError::Truncated { received: 5 })));
    }

    #[test]
    fn eof_right_after_start_block_is_truncated() {
        let (_, end) = decode_chunks(&mut MllpCodec::default(), &[&[START_BLOCK]]);
        assert!(matches!(end, Err(CodecError::Truncated { received: 0 })));
    }

    #[test]
    fn eof_while_discarding_is_truncated() {
        let (frames, end) = decode_chunks(&mut MllpCodec::new(4), &[&[START_BLOCK], b"0123456789"]);
        assert!(frames.is_empty());
        assert!(matches!(end, Err(CodecError::Truncated { received: 10 })));
    }

    #[test]
    fn encode_frames_payload() {
        let mut out = BytesMut::new();
        let mut codec = MllpCodec::default();
        codec.encode(&b"MSH|a"[..], &mut out).expect("encodes");
        codec
            .encode(Bytes::from_static(b"MSH|b"), &mut out)
            .expect("encodes");
        assert_eq!(&out[..], &[frame(b"MSH|a"), frame(b"MSH|b")].concat()[..]);
    }

    #[test]
    fn encode_rejects_oversize_and_block_bytes() {
        let mut out = BytesMut::new();
        let mut codec = MllpCodec::new(4);
        assert!(matches!(
            codec.encode(&b"12345"[..], &mut out),
            Err(CodecError::PayloadTooLarge { len: 5, limit: 4 })
        ));
        assert!(matches!(
            codec.encode(&b"a\x1cb"[..], &mut out),
            Err(CodecError::ReservedByte {
                offset: 1,
                byte: END_BLOCK
            })
        ));
        assert!(out.is_empty());
    }

    #[test]
    fn encode_then_decode_round_trips() {
        let mut codec = MllpCodec::default();
        let mut wire = BytesMut::new();
        codec
            .encode(&b"MSH|^~\\&|X\rPID|1"[..], &mut wire)
            .expect("encodes");
        assert_eq!(
            codec.decode(&mut wire).ok().flatten(),
            Some(msg(b"MSH|^~\\&|X\rPID|1"))
        );
    }

    #[test]
    fn debug_does_not_show_payload() {
        let shown = format!("{:?}", msg(b"SECRET"));
        assert!(!shown.contains("SECRET"), "{shown}");
    }
}
