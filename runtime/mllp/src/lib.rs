//! MLLP (Minimal Lower Layer Protocol) for Plexus: the framing codec, a listener and a sender.
//!
//! # Framing
//!
//! A frame is `0x0B payload 0x1C 0x0D`. [`MllpCodec`] is a `tokio_util` `Decoder`/`Encoder`; the
//! decoder yields [`Frame`]s and is lenient where peers are sloppy, strict where memory is at stake:
//!
//! - **Junk** before a start block (`0x0B`) is skipped, counted ([`MllpCodec::skipped_bytes`]) and
//!   logged at debug as a count, never as content.
//! - **A missing final CR** is tolerated: a frame is delivered as soon as its end block (`0x1C`)
//!   arrives, and one CR right after it is swallowed if and when it comes.
//! - **A `0x0B` inside a frame** is payload, not a restart, even when `MSH` follows it: the
//!   message is refused whole (the parser names the byte) and kept in the error queue. A
//!   restart there would answer a sender that cut its own frame short and started over on
//!   the same connection (rare: a cut-off usually ends the connection) at once instead of
//!   after its ACK timeout, but it would also drop the message before the `0x0B` and take
//!   the text after it, which a field's content can forge, as a message of its own.
//! - **Oversize**: when a payload passes the limit (default 16 MiB), what is buffered is dropped and
//!   the rest of the frame is discarded as it arrives. At its end block the decoder yields
//!   [`Frame::Oversize`] with the full length and the first segment (capped at
//!   [`codec::OVERSIZE_HEAD_LIMIT`]), so a NAK can echo MSH-10; the next frame on the connection is
//!   decoded normally. The decoder never holds more than the limit plus one read.
//! - **End of stream inside a frame** is [`CodecError::Truncated`]; between frames it is a clean end.
//!
//! The encoder refuses payloads over the limit and payloads containing `0x0B` or `0x1C`.
//!
//! # Listener
//!
//! [`Listener`] accepts connections (TCP or TLS) under a connection cap, reads frames with idle and
//! per-frame timeouts and passes each to a [`Handler`], writing its reply before reading the next
//! frame. Over the cap, a new connection is accepted and closed at once. A [`CancellationToken`]
//! stops it: it stops accepting, lets frames in flight finish and be answered, and returns within
//! the drain deadline.
//!
//! # Sender
//!
//! [`Sender`] keeps one connection to a peer, sends a message, waits for the ACK whose MSA-2 echoes
//! the message's MSH-10, and classifies it by MSA-1. Missing ACKs and broken connections are retried
//! with exponential backoff. Delivery is **at least once**: a retry after a lost ACK may duplicate
//! the message at the receiver. [`Sender::send`] parses the message whole before sending it;
//! [`Sender::send_parsed`], for bytes the caller parsed already, parses only the header line.
//!
//! # Example
//!
//! ```no_run
//! use std::sync::Arc;
//! use bytes::Bytes;
//! use plexus_mllp::{Listener, ListenerConfig, Sender, SenderConfig, handler_fn};
//! use tokio_util::sync::CancellationToken;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let listener = Listener::bind("127.0.0.1:0".parse()?, ListenerConfig::default()).await?;
//! let addr = listener.local_addr();
//! let shutdown = CancellationToken::new();
//! let handler = handler_fn(|_payload: Bytes, _peer| async move {
//!     // A real handler stores the message and builds its ACK from it.
//!     Some(Bytes::from_static(b"MSH|^~\\&|||||||ACK|1|P|2.5\rMSA|AA|MSG0001"))
//! });
//! let server = tokio::spawn(listener.serve(Arc::new(handler), shutdown.clone()));
//!
//! let mut sender = Sender::new(addr.to_string(), SenderConfig::default());
//! let delivery = sender
//!     .send(b"MSH|^~\\&|A|B|C|D|20250101||ADT^A01|MSG0001|P|2.5\rPID|1")
//!     .await?;
//! // `None` only when the message's MSH-15 (NE, ER) let the receiver stay silent.
//! if let Some(ack) = &delivery.ack {
//!     println!("accepted with {}", ack.code());
//! }
//!
//! shutdown.cancel();
//! server.await?;
//! # Ok(())
//! # }
//! ```
//!
//! [`CancellationToken`]: tokio_util::sync::CancellationToken

pub mod codec;
mod conn;
pub mod listener;
pub mod sender;
pub mod tls;
mod watchdog;

pub use codec::{CodecError, DEFAULT_MAX_FRAME, Frame, MllpCodec, Oversize};
pub use listener::{
    Handler, HandlerFn, ListenError, Listener, ListenerConfig, PeerInfo, ServeSummary, handler_fn,
};
/// The acknowledgement code type, shared with `plexus-hl7`.
pub use plexus_hl7::ack::AckCode;
pub use sender::{Ack, AttemptError, Delivery, ErrorAckPolicy, SendError, Sender, SenderConfig};
pub use tls::TlsError;
pub use watchdog::Watchdog;

/// An error and its sources on one line, `: `-separated (`a: b: c`). An I/O error's own
/// text says what happened (reset by the peer, broken pipe); none of the errors of this
/// crate holds message content. The engine formats its own errors the same way.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
