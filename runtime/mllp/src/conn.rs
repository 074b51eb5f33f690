//! A byte stream with MLLP framing, shared by the listener and the sender.
//!
//! Not `tokio_util::codec::Framed`: both sides need to know whether a frame is in progress between
//! reads (to pick the idle or the frame deadline, and to decide whether shutdown may close the
//! connection), and to cap the size of each read.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::{Decoder, Encoder};

use crate::codec::{CodecError, Frame, MllpCodec};

/// Most bytes taken from the stream per read, so the buffer never exceeds the frame limit by more.
pub(crate) const READ_CHUNK: usize = 16 * 1024;

#[derive(Debug)]
pub(crate) struct FrameIo<S> {
    io: S,
    buf: BytesMut,
    codec: MllpCodec,
    /// What [`FrameIo::take_skipped`] has reported.
    skipped_reported: u64,
}

impl<S: AsyncRead + AsyncWrite + Unpin> FrameIo<S> {
    pub(crate) fn new(io: S, max_frame: usize) -> Self {
        Self {
            io,
            buf: BytesMut::with_capacity(READ_CHUNK),
            codec: MllpCodec::new(max_frame),
            skipped_reported: 0,
        }
    }

    /// For a listener: a frame whose end block is the last byte read waits for the next
    /// byte (see [`MllpCodec::wait_for_trailer`]).
    pub(crate) fn waiting_for_trailers(mut self) -> Self {
        self.codec = MllpCodec::new(self.codec.max_frame()).wait_for_trailer(true);
        self
    }

    /// Bytes read and not yet decoded.
    pub(crate) fn held(&self) -> usize {
        self.buf.len()
    }

    /// Whether the partial frame began without a start block (`MSH...` with no 0x0B).
    pub(crate) fn unframed_partial(&self) -> bool {
        self.codec.unframed_partial()
    }

    /// See [`crate::MllpCodec::holds_candidate`].
    pub(crate) fn holds_candidate(&self) -> bool {
        self.codec.holds_candidate(&self.buf)
    }

    /// Ends the frame at a stray-looking end block, the sender having gone quiet.
    pub(crate) fn release_candidate(&mut self) -> Option<Frame> {
        self.codec.release_candidate(&mut self.buf)
    }

    /// Whether a frame is complete but for the byte after its end block.
    pub(crate) fn holds_end(&self) -> bool {
        self.codec.holds_end()
    }

    /// Ends a held frame at its end block.
    pub(crate) fn release_held(&mut self) -> Option<Frame> {
        self.codec.release_held(&mut self.buf)
    }

    /// A frame from what has been read so far, without reading.
    pub(crate) fn decode_buffered(&mut self) -> Result<Option<Frame>, CodecError> {
        self.codec.decode(&mut self.buf)
    }

    /// Ends the run of skipped bytes (see [`MllpCodec::flush_junk`]).
    pub(crate) fn flush_junk(&mut self) {
        self.codec.flush_junk();
    }

    /// Bytes skipped outside frames (in runs with more than whitespace) since the last
    /// call.
    pub(crate) fn take_skipped(&mut self) -> u64 {
        let total = self.codec.skipped_text_bytes();
        let new = total - self.skipped_reported;
        self.skipped_reported = total;
        new
    }

    /// Whether a frame is partly received.
    pub(crate) fn in_frame(&self) -> bool {
        self.codec.in_frame()
    }

    /// Reads once, at most [`READ_CHUNK`] bytes. `Ok(false)` means the peer closed the stream.
    ///
    /// Cancel-safe: dropping the future before it completes loses no bytes.
    pub(crate) async fn fill(&mut self) -> Result<bool, CodecError> {
        self.buf.reserve(READ_CHUNK);
        let n = (&mut self.io)
            .take(READ_CHUNK as u64)
            .read_buf(&mut self.buf)
            .await?;
        Ok(n > 0)
    }

    /// What is left once the peer has closed: a final frame, nothing (`Ok(None)`), or
    /// [`CodecError::Truncated`] if it closed inside a frame.
    pub(crate) fn decode_eof(&mut self) -> Result<Option<Frame>, CodecError> {
        self.codec.decode_eof(&mut self.buf)
    }

    /// Reads until one frame is complete. `Ok(None)` means the peer closed the stream between
    /// frames; closing inside a frame is [`CodecError::Truncated`].
    pub(crate) async fn read_frame(&mut self) -> Result<Option<Frame>, CodecError> {
        loop {
            if let Some(frame) = self.decode_buffered()? {
                return Ok(Some(frame));
            }
            if !self.fill().await? {
                return self.decode_eof();
            }
        }
    }

    /// Frames and writes one payload, then flushes (TLS buffers otherwise).
    pub(crate) async fn write_frame(&mut self, payload: &[u8]) -> Result<(), CodecError> {
        let mut out = BytesMut::new();
        self.codec.encode(payload, &mut out)?;
        self.io.write_all(&out).await?;
        self.io.flush().await?;
        Ok(())
    }

    /// Closes the write side (sends TLS close_notify). Best effort: the peer may be gone.
    pub(crate) async fn shutdown(&mut self) {
        if let Err(e) = self.io.shutdown().await {
            tracing::trace!(error = %e, "MLLP stream shutdown failed");
        }
    }
}
