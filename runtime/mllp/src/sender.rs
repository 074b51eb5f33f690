//! The MLLP sender: one persistent connection to one peer, one message in flight, ACK checking and
//! retries.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout, timeout_at};
use tokio_rustls::TlsConnector;

use plexus_hl7::ack::{AckCode, AckMode, Condition, Status};

use crate::codec::{CodecError, DEFAULT_MAX_FRAME, END_BLOCK, Frame, START_BLOCK};
use crate::conn::FrameIo;
use crate::watchdog::Watchdog;

/// What to do with an error ACK (MSA-1 `AE` or `CE`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ErrorAckPolicy {
    /// Fail the send with [`SendError::ApplicationError`]; not retried. The default: the receiver
    /// looked at the message and refused it, and sending it again usually gets the same answer.
    #[default]
    Permanent,
    /// Count it as a failed attempt and retry like a missing ACK.
    Retry,
}

/// Timeouts, retries and limits of a [`Sender`]. Every field has a safe default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SenderConfig {
    /// Longest a connect (TCP plus TLS handshake) may take. Default 10 s.
    pub connect_timeout: Duration,
    /// Longest a message write may take. Default 30 s.
    pub write_timeout: Duration,
    /// Longest to wait for the ACK after the message is written. Default 30 s.
    pub ack_timeout: Duration,
    /// Longest to wait for an answer to a message whose MSH-15 is `ER` (answer only an
    /// error): none in that time (or the receiver hanging up) means it was accepted. An
    /// answer that comes later is passed over (an error among them is logged at WARN,
    /// naming the message). At most `ack_timeout`. Default 2 s.
    pub unasked_wait: Duration,
    /// The same for a message whose MSH-15 is `NE` (never answer): long enough for a
    /// receiver that answers anyway, or hangs up after each message, to do so before the
    /// next message is written. Default 250 ms.
    pub ne_wait: Duration,
    /// Tries per [`Sender::send`], the first included (0 counts as 1). Default 3.
    pub attempts: u32,
    /// Pause before the first retry; it doubles for each further retry. Default 1 s.
    pub backoff_base: Duration,
    /// Longest pause between retries. Default 30 s.
    pub backoff_max: Duration,
    /// What an `AE`/`CE` ACK means. Default [`ErrorAckPolicy::Permanent`].
    pub on_error_ack: ErrorAckPolicy,
    /// Largest payload sent and largest ACK accepted. Default 16 MiB.
    pub max_frame: usize,
    /// What an empty MSH-18 means in the messages sent and the ACKs received (a legacy
    /// link in Latin-1 that never says so). Default ASCII, read as UTF-8.
    pub charset: plexus_hl7::Charset,
}

impl Default for SenderConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
            ack_timeout: Duration::from_secs(30),
            unasked_wait: Duration::from_secs(2),
            ne_wait: Duration::from_millis(250),
            attempts: 3,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            on_error_ack: ErrorAckPolicy::Permanent,
            max_frame: DEFAULT_MAX_FRAME,
            charset: plexus_hl7::Charset::Ascii,
        }
    }
}

/// An ACK received for a sent message.
#[derive(Clone, PartialEq, Eq)]
pub struct Ack {
    code: AckCode,
    bytes: Bytes,
}

impl Ack {
    /// Its MSA-1.
    pub fn code(&self) -> AckCode {
        self.code
    }

    /// The ACK message as received (without framing), e.g. for the journal. May hold patient data
    /// (ERR, MSA-3): do not log it.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// What the peer said about an error or a rejection, for the person who has to act on
    /// it: each ERR's code and text (ERR-3, or ERR-1-4 before v2.5) and user message
    /// (ERR-8), then MSA-3 (the older text message), as present, joined with `; ` and cut to
    /// [`MAX_REASON_CHARS`] characters. `None` when the ACK says nothing more than its
    /// code. Like the ACK itself it may quote the message's values: keep it out of logs.
    pub fn reason(&self) -> Option<String> {
        // Latin-1 reads any bytes: a legacy receiver's ACK without MSH-18 still says why.
        let message = plexus_hl7::Message::parse(&self.bytes)
            .or_else(|_| {
                plexus_hl7::Message::parse_with_charset(&self.bytes, plexus_hl7::Charset::Latin1)
            })
            .ok()?;
        let text = |path: &str| {
            message
                .get(path)
                .ok()
                .flatten()
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        // Free text (ERR-8, MSA-3) whole: receivers often leave a `^` in it unescaped, and
        // what follows it is usually the useful part.
        let whole = |segment: &str, occurrence: usize, field: u32| {
            message
                .segments()
                .filter(|s| s.name() == segment)
                .nth(occurrence)
                .and_then(|s| s.field(field))
                .map(|f| f.text().trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let mut parts = Vec::new();
        let errs = message.count("ERR").unwrap_or(0).min(8);
        for i in 1..=errs {
            // ERR-3 (v2.5 on); before that the code sat in ERR-1-4, as subcomponents.
            let code = [
                format!("ERR[{i}]-3-1"),
                format!("ERR[{i}]-3-2"),
                format!("ERR[{i}]-1-4-1"),
                format!("ERR[{i}]-1-4-2"),
            ]
            .iter()
            .filter_map(|p| text(p))
            .collect::<Vec<_>>()
            .join(" ");
            if !code.is_empty() {
                parts.push(code);
            }
            parts.extend(whole("ERR", i - 1, 8));
        }
        parts.extend(whole("MSA", 0, 3));
        if parts.is_empty() {
            return None;
        }
        let joined = parts.join("; ");
        Some(match joined.char_indices().nth(MAX_REASON_CHARS) {
            Some((at, _)) => format!("{}...", &joined[..at]),
            None => joined,
        })
    }
}

/// Longest [`Ack::reason`] kept, in characters.
pub const MAX_REASON_CHARS: usize = 300;

// Debug shows the code only: an ACK can quote the message it answers.
impl fmt::Debug for Ack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ack")
            .field("code", &self.code)
            .field("len", &self.bytes.len())
            .finish_non_exhaustive()
    }
}

/// A message the peer accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Delivery {
    /// The accepting ACK (`AA` or `CA`); `None` when the message's MSH-15 (`NE` or `ER`)
    /// let the receiver leave it out and none came within
    /// [`SenderConfig::unasked_wait`].
    pub ack: Option<Ack>,
    /// Attempts it took, the successful one included.
    pub attempts: u32,
}

/// Why a send failed. Variants name the message's control id (MSH-10) and the peer, never content.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The payload does not parse as HL7; nothing was sent.
    #[error("message for {peer} is not valid HL7; not sent")]
    InvalidMessage {
        /// The peer.
        peer: String,
        /// Why.
        #[source]
        source: plexus_hl7::ParseError,
    },
    /// The payload has no MSH-10, so its ACK could not be matched; nothing was sent.
    #[error("message for {peer} has no control id (MSH-10); not sent")]
    MissingControlId {
        /// The peer.
        peer: String,
    },
    /// The payload cannot be framed (too large, or holds a block character); nothing was sent.
    #[error("message {control_id} for {peer} cannot be framed; not sent")]
    Unframeable {
        /// MSH-10.
        control_id: String,
        /// The peer.
        peer: String,
        /// Why.
        #[source]
        source: CodecError,
    },
    /// The peer rejected the message (`AR`/`CR`). Permanent: not retried.
    #[error("{peer} rejected message {control_id} ({})", ack.code())]
    Rejected {
        /// MSH-10.
        control_id: String,
        /// The peer.
        peer: String,
        /// The rejecting ACK.
        ack: Ack,
    },
    /// The peer answered with an error (`AE`/`CE`) under [`ErrorAckPolicy::Permanent`].
    #[error("{peer} returned an error for message {control_id} ({})", ack.code())]
    ApplicationError {
        /// MSH-10.
        control_id: String,
        /// The peer.
        peer: String,
        /// The error ACK.
        ack: Ack,
    },
    /// Every attempt failed without a definite answer. Retryable later; the peer may nevertheless
    /// have received (and processed) the message.
    #[error("message {control_id} to {peer} not acknowledged after {attempts} attempt(s)")]
    Exhausted {
        /// MSH-10.
        control_id: String,
        /// The peer.
        peer: String,
        /// Attempts made.
        attempts: u32,
        /// Why the last attempt failed.
        #[source]
        last: AttemptError,
    },
}

impl SendError {
    /// The peer's answer when it rejected the message or returned an error for it.
    pub fn ack(&self) -> Option<&Ack> {
        match self {
            SendError::Rejected { ack, .. } | SendError::ApplicationError { ack, .. } => Some(ack),
            _ => None,
        }
    }

    /// Whether sending the same message again later may succeed ([`SendError::Exhausted`]).
    /// The others need the message, or the peer's view of it, to change first.
    pub fn is_retryable(&self) -> bool {
        matches!(self, SendError::Exhausted { .. })
    }

    /// Whether the peer may have the message although the send failed: the last attempt
    /// got as far as writing it and no answer that settles it came back (a timeout, a
    /// closed connection, an ACK that could not be read or named another message). A
    /// send again may then give the peer the same message twice. False when the last
    /// attempt could not connect, and when the peer answered (an error ACK says it did
    /// not take the message; AR and AE under the permanent policy are not retried).
    pub fn may_have_arrived(&self) -> bool {
        match self {
            SendError::Exhausted { last, .. } => !matches!(
                last,
                AttemptError::Connect(_)
                    | AttemptError::ConnectTimeout
                    | AttemptError::TlsHandshakeTimeout
                    | AttemptError::Tls(_)
                    | AttemptError::ErrorAck { .. }
            ),
            _ => false,
        }
    }
}

/// Why one attempt to deliver a message failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttemptError {
    /// TCP connect failed.
    #[error("could not connect")]
    Connect(#[source] io::Error),
    /// Connecting (TCP and TLS) took longer than the connect timeout.
    #[error("connect timed out")]
    ConnectTimeout,
    /// TCP connected, but the TLS handshake did not finish within the connect timeout:
    /// most often a peer that does not speak TLS on that port.
    #[error(
        "connected, but the TLS handshake did not finish within the connect timeout (does the receiver speak TLS on this port?)"
    )]
    TlsHandshakeTimeout,
    /// The TLS handshake failed.
    #[error("TLS handshake failed")]
    Tls(#[source] io::Error),
    /// Writing the message failed.
    #[error("writing the message failed")]
    Write(#[source] CodecError),
    /// Writing the message took longer than the write timeout.
    #[error("writing the message timed out")]
    WriteTimeout,
    /// No ACK within the ACK timeout.
    #[error("no ACK within the ACK timeout")]
    AckTimeout,
    /// The peer closed the connection before the ACK arrived.
    #[error("connection closed before the ACK arrived")]
    Closed,
    /// Reading the ACK failed.
    #[error("reading the ACK failed")]
    Read(#[source] CodecError),
    /// The ACK was larger than the frame limit.
    #[error("the ACK ({len} bytes) exceeds the frame limit")]
    AckTooLarge {
        /// Its length.
        len: usize,
    },
    /// The ACK does not parse as HL7.
    #[error("the ACK is not valid HL7")]
    InvalidAck(#[source] plexus_hl7::ParseError),
    /// MSA could not be read from the ACK.
    #[error("cannot read MSA from the ACK")]
    AckPath(#[source] plexus_hl7::PathError),
    /// The ACK has no MSA-1.
    #[error("the ACK has no acknowledgement code (MSA-1)")]
    MissingAckCode,
    /// MSA-1 is not a table 0008 code.
    #[error("the ACK's MSA-1 is not AA, AE, AR, CA, CE or CR")]
    UnknownAckCode,
    /// MSA-2 is not the sent MSH-10: most likely the late ACK of an earlier attempt.
    #[error(
        "the ACK is for {}, not this message (a late answer to an earlier send?)",
        echoed.as_deref().map_or_else(|| "no control id".to_owned(), |id| format!("control id `{id}`"))
    )]
    ControlIdMismatch {
        /// MSA-2 as received (shortened), if present.
        echoed: Option<String>,
    },
    /// An ACK with an empty MSA-2 on a connection used before: it may be a late answer to
    /// the previous message, so the message is sent again on a fresh connection.
    #[error(
        "the ACK names no message (MSA-2 is empty) and came on a connection used before; sending again on a new connection"
    )]
    UnechoedOnReusedConnection,
    /// An error ACK under [`ErrorAckPolicy::Retry`].
    #[error("the peer returned {code}")]
    ErrorAck {
        /// `AE` or `CE`.
        code: AckCode,
    },
}

/// Longest control id kept in errors: MSH-10 is at most 199 characters in HL7 2.5+, and a broken
/// peer could echo anything.
const MAX_ID_IN_ERROR: usize = 200;

fn shorten(s: &str) -> String {
    match s.char_indices().nth(MAX_ID_IN_ERROR) {
        Some((at, _)) => s[..at].to_owned(),
        None => s.to_owned(),
    }
}

trait Io: AsyncRead + AsyncWrite + Send + Sync + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Sync + Unpin> Io for T {}

type Conn = FrameIo<Box<dyn Io>>;

/// Sends messages to one MLLP peer over a persistent connection and checks their ACKs.
///
/// The connection is opened on the first send and reused; it is dropped and reopened after any
/// failure whose effect on the stream is unknown (timeout, I/O error, unexpected ACK). Dropping a
/// [`Sender::send`] future also drops the connection, so no late ACK is read as the next one.
///
/// **Delivery is at least once.** When an attempt fails after the message was written (no ACK, a
/// broken connection, a stale ACK), the peer may have received and processed it, and the retry
/// sends it again. Receivers should treat MSH-10 as an idempotency key.
///
/// A message whose MSH-15 is `NE` or `ER` (enhanced mode: answer never, or only on an
/// error) waits [`SenderConfig::ne_wait`] or [`SenderConfig::unasked_wait`] for an
/// answer; none, or the receiver hanging up, is success ([`Delivery::ack`] `None`), and a
/// late answer is passed over. `SU` waits as `AL` does: no answer means it was not
/// accepted.
///
/// Outcomes: `AA`/`CA` → `Ok`; `AR`/`CR` → [`SendError::Rejected`], not retried; `AE`/`CE` →
/// [`SendError::ApplicationError`] or a retry, per [`SenderConfig::on_error_ack`]; anything else →
/// retried (with exponential backoff, no jitter) up to [`SenderConfig::attempts`], then
/// [`SendError::Exhausted`].
pub struct Sender {
    peer: String,
    config: SenderConfig,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    conn: Option<Conn>,
    /// The write and ACK deadlines of the connection's exchanges.
    watchdog: Watchdog,
    /// Whether the latest send has begun writing its frame (see
    /// [`Sender::may_have_delivered`]).
    wrote: bool,
    /// Control ids of messages sent on this connection whose answer MSH-15 let the
    /// receiver leave out and that got none in time: an answer that comes later is
    /// passed over, not taken for the next message's (the last few; cleared with the
    /// connection).
    unanswered: std::collections::VecDeque<String>,
}

/// How many unanswered control ids a connection remembers.
const UNANSWERED_KEPT: usize = 16;

impl fmt::Debug for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("peer", &self.peer)
            .field("tls", &self.tls.as_ref().map(|(_, name)| name))
            .field("connected", &self.conn.is_some())
            .field("config", &self.config)
            .finish()
    }
}

/// The answer of one attempt that got a matching ACK.
enum Answer {
    Accepted(Ack),
    /// None came, and MSH-15 said none need come on success.
    Unasked,
    Rejected(Ack),
    Error(Ack),
}

impl Sender {
    /// A sender to `peer` (`host:port`; resolved on each connect). Does not connect yet.
    pub fn new(peer: impl Into<String>, config: SenderConfig) -> Self {
        Self {
            peer: peer.into(),
            config,
            tls: None,
            conn: None,
            watchdog: Watchdog::new(),
            wrote: false,
            unanswered: std::collections::VecDeque::new(),
        }
    }

    /// Uses TLS, verifying the peer's certificate against `server_name` (see
    /// [`crate::tls::client_config_from_pem`] and [`crate::tls::server_name`]).
    pub fn with_tls(
        mut self,
        tls: Arc<rustls::ClientConfig>,
        server_name: ServerName<'static>,
    ) -> Self {
        self.tls = Some((TlsConnector::from(tls), server_name));
        self.conn = None;
        self
    }

    /// The peer address as configured.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// Whether a connection is open (it may still turn out to be dead on the next send).
    pub fn is_connected(&self) -> bool {
        self.conn.is_some()
    }

    /// Whether the latest send got as far as writing its frame, so the peer may have the
    /// message even if the send did not finish (it was cancelled while waiting for the
    /// ACK, say). False when it was still connecting.
    pub fn may_have_delivered(&self) -> bool {
        self.wrote
    }

    /// Closes the connection, if open. The next send reconnects.
    pub async fn close(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            let _ = timeout(self.config.write_timeout, conn.shutdown()).await;
        }
    }

    /// Sends one HL7 message (without framing) and waits for its ACK, retrying per the config.
    /// See [`Sender`] for the outcomes and the at-least-once caveat.
    pub async fn send(&mut self, payload: &[u8]) -> Result<Delivery, SendError> {
        let (control_id, asked) = self.check(payload, Check::Whole)?;
        self.send_checked(payload, control_id, asked).await
    }

    /// [`send`](Self::send) for a payload the caller has parsed as HL7 already, such as a
    /// message an engine journaled after parsing it: only its header line is parsed again
    /// (for MSH-10), not every segment. Size and frame markers are checked as by `send`;
    /// a body that does not parse is the receiver's to refuse.
    pub async fn send_parsed(&mut self, payload: &[u8]) -> Result<Delivery, SendError> {
        let (control_id, asked) = self.check(payload, Check::Header)?;
        self.send_checked(payload, control_id, asked).await
    }

    async fn send_checked(
        &mut self,
        payload: &[u8],
        control_id: String,
        asked: Condition,
    ) -> Result<Delivery, SendError> {
        let attempts = self.config.attempts.max(1);
        let mut attempt = 1;
        self.wrote = false;
        // The id as errors and logs show it; the ACK is matched against the whole id.
        let shown = shorten(&control_id);
        loop {
            let failure = match self.attempt(payload, &control_id, asked).await {
                Ok(Answer::Accepted(ack)) => {
                    return Ok(Delivery {
                        ack: Some(ack),
                        attempts: attempt,
                    });
                }
                Ok(Answer::Unasked) => {
                    return Ok(Delivery {
                        ack: None,
                        attempts: attempt,
                    });
                }
                Ok(Answer::Rejected(ack)) => {
                    return Err(SendError::Rejected {
                        control_id: shown,
                        peer: self.peer.clone(),
                        ack,
                    });
                }
                Ok(Answer::Error(ack)) => match self.config.on_error_ack {
                    ErrorAckPolicy::Permanent => {
                        return Err(SendError::ApplicationError {
                            control_id: shown,
                            peer: self.peer.clone(),
                            ack,
                        });
                    }
                    ErrorAckPolicy::Retry => AttemptError::ErrorAck { code: ack.code() },
                },
                Err(e) => e,
            };
            if attempt >= attempts {
                // The caller gets the error and reports it; one log line per failure.
                tracing::debug!(
                    control_id = %shown,
                    peer = %self.peer,
                    attempt,
                    error = %failure,
                    "MLLP send attempt failed"
                );
            } else {
                tracing::warn!(
                    control_id = %shown,
                    peer = %self.peer,
                    attempt,
                    error = %failure,
                    "MLLP send attempt failed; retrying"
                );
            }
            if attempt >= attempts {
                return Err(SendError::Exhausted {
                    control_id: shown,
                    peer: self.peer.clone(),
                    attempts: attempt,
                    last: failure,
                });
            }
            tokio::time::sleep(backoff(&self.config, attempt)).await;
            attempt += 1;
        }
    }

    /// Checks what can be checked before sending (`Check::Header`: the header line only,
    /// besides size and frame markers); returns MSH-10 and when MSH-15 asks for an
    /// accept ACK (always, in original mode).
    fn check(&self, payload: &[u8], check: Check) -> Result<(String, Condition), SendError> {
        let parsed = match check {
            Check::Whole => payload,
            Check::Header => plexus_hl7::header_line(payload),
        };
        let message = plexus_hl7::Message::parse_with_charset(parsed, self.config.charset)
            .map_err(|source| SendError::InvalidMessage {
                peer: self.peer.clone(),
                source,
            })?;
        // Whole: the ACK's MSA-2 echoes it whole. Only error text shows it shortened.
        let control_id = match message.get("MSH-10") {
            Ok(Some(id)) => id.into_owned(),
            _ => {
                return Err(SendError::MissingControlId {
                    peer: self.peer.clone(),
                });
            }
        };
        let framing_error = if payload.len() > self.config.max_frame {
            Some(CodecError::PayloadTooLarge {
                len: payload.len(),
                limit: self.config.max_frame,
            })
        } else {
            memchr::memchr2(START_BLOCK, END_BLOCK, payload).map(|offset| {
                CodecError::ReservedByte {
                    offset,
                    byte: payload[offset],
                }
            })
        };
        let asked = AckMode::of(&message).accept();
        match framing_error {
            Some(source) => Err(SendError::Unframeable {
                control_id: shorten(&control_id),
                peer: self.peer.clone(),
                source,
            }),
            None => Ok((control_id, asked)),
        }
    }

    /// One try: (re)connect if needed, write, read and check the ACK. The connection is kept only
    /// if the exchange completed cleanly.
    async fn attempt(
        &mut self,
        payload: &[u8],
        control_id: &str,
        asked: Condition,
    ) -> Result<Answer, AttemptError> {
        let expecting_late = !self.unanswered.is_empty();
        let (mut conn, fresh) = match self.conn.take().and_then(|c| still_open(c, expecting_late)) {
            Some(conn) => (conn, false),
            None => (self.connect().await?, true),
        };
        if fresh {
            self.unanswered.clear();
        }
        // This message's own answer is never a late one (a resend of an id sent before).
        self.unanswered.retain(|id| id != control_id);
        let deadline = Instant::now() + self.config.write_timeout;
        self.wrote = true;
        self.watchdog
            .run(deadline, conn.write_frame(payload))
            .await
            .ok_or(AttemptError::WriteTimeout)?
            .map_err(AttemptError::Write)?;
        // NE and ER let the receiver stay silent when it accepts the message. Both wait a
        // little all the same: for the answer of a receiver that ignores MSH-15, for an
        // error answer (ER), and for a receiver that hangs up after each message to do so
        // before the next message is written onto a connection it is closing.
        let wait = match asked {
            Condition::Never => self.config.ne_wait,
            Condition::OnError => self.config.unasked_wait,
            _ => self.config.ack_timeout,
        }
        .min(self.config.ack_timeout);
        let may_stay_silent = matches!(asked, Condition::Never | Condition::OnError);
        if may_stay_silent && wait.is_zero() {
            return Ok(self.unasked(conn, control_id));
        }
        let deadline = Instant::now() + wait;
        let ack = loop {
            let ack = match self.watchdog.run(deadline, conn.read_frame()).await {
                None if may_stay_silent => return Ok(self.unasked(conn, control_id)),
                None => return Err(AttemptError::AckTimeout),
                Some(Err(e)) => return Err(AttemptError::Read(e)),
                // Silence then a hang-up: what such a receiver does once it has taken the
                // message. The connection is not kept.
                Some(Ok(None)) if may_stay_silent => return Ok(Answer::Unasked),
                Some(Ok(None)) => return Err(AttemptError::Closed),
                Some(Ok(Some(Frame::Oversize(o)))) => {
                    return Err(AttemptError::AckTooLarge { len: o.len });
                }
                Some(Ok(Some(Frame::Message(ack)))) => ack,
            };
            if self.unanswered.is_empty() || !self.pass_over_late_answer(&ack) {
                break ack;
            }
        };
        let (answer, echoed) = classify(ack, control_id, self.config.charset)?;
        if !echoed {
            // An ACK without MSA-2 names no message. On a connection opened for this
            // attempt it can only answer this one; on a reused one it could be a late
            // second answer to the previous message (an accept ACK, then an application
            // ACK), so the message goes again on a fresh connection. Either way the
            // connection is not kept: the next message starts fresh, where the same holds.
            if !fresh {
                return Err(AttemptError::UnechoedOnReusedConnection);
            }
            return Ok(answer);
        }
        self.conn = Some(conn);
        Ok(answer)
    }

    /// Keeps `conn` after a message whose MSH-15 let it go unanswered, remembering its id
    /// so that an answer that comes after all is passed over.
    fn unasked(&mut self, conn: Conn, control_id: &str) -> Answer {
        if self.unanswered.len() == UNANSWERED_KEPT {
            self.unanswered.pop_front();
        }
        self.unanswered.push_back(control_id.to_owned());
        self.conn = Some(conn);
        Answer::Unasked
    }

    /// Whether `ack` answers one of the connection's unanswered messages (MSA-2); if so
    /// it is passed over (that message counted as accepted already), and an error answer
    /// is logged at WARN, since nothing else will tell of it.
    fn pass_over_late_answer(&mut self, ack: &[u8]) -> bool {
        let Ok(message) = plexus_hl7::Message::parse_with_charset(ack, self.config.charset) else {
            return false;
        };
        let Some(id) = message.get("MSA-2").ok().flatten() else {
            return false;
        };
        let Some(at) = self.unanswered.iter().position(|u| *u == id) else {
            return false;
        };
        let id = self.unanswered.remove(at).unwrap_or_default();
        let code = message
            .get("MSA-1")
            .ok()
            .flatten()
            .and_then(|c| AckCode::parse(&c));
        match code {
            Some(code) if code.status() == Status::Accepted => tracing::debug!(
                peer = %self.peer,
                control_id = %shorten(&id),
                "passed over a late answer to a message whose MSH-15 let it go unanswered"
            ),
            _ => tracing::warn!(
                peer = %self.peer,
                control_id = %shorten(&id),
                code = code.map_or("unreadable", |c| c.as_str()),
                "a late error answer to a message whose MSH-15 let it go unanswered; it had \
                 counted as accepted, so send it again if the receiver needs it"
            ),
        }
        true
    }

    async fn connect(&self) -> Result<Conn, AttemptError> {
        let deadline = Instant::now() + self.config.connect_timeout;
        let tcp = timeout_at(deadline, TcpStream::connect(self.peer.as_str()))
            .await
            .map_err(|_| AttemptError::ConnectTimeout)?
            .map_err(AttemptError::Connect)?;
        // One small message then a wait for the ACK: don't let Nagle delay it.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        let io: Box<dyn Io> = match &self.tls {
            None => Box::new(tcp),
            Some((connector, name)) => Box::new(
                timeout_at(deadline, connector.connect(name.clone(), tcp))
                    .await
                    .map_err(|_| AttemptError::TlsHandshakeTimeout)?
                    .map_err(AttemptError::Tls)?,
            ),
        };
        tracing::debug!(peer = %self.peer, tls = self.tls.is_some(), "MLLP sender connected");
        Ok(FrameIo::new(io, self.config.max_frame))
    }
}

/// Keeps a pooled connection only if it shows no sign of trouble without waiting: a peer that
/// closed it (idle timeout) would otherwise cost a failed attempt, and unsolicited bytes mean the
/// stream is out of step, unless `expecting_late` (an answer to a message MSH-15 let go
/// unanswered may still come; the next read passes it over).
fn still_open(mut conn: Conn, expecting_late: bool) -> Option<Conn> {
    match conn.fill().now_or_never() {
        None => Some(conn),
        Some(Ok(true)) if expecting_late => Some(conn),
        Some(Ok(false)) => {
            tracing::debug!("MLLP peer closed the pooled connection; reconnecting");
            None
        }
        Some(Ok(true)) => {
            tracing::debug!("unexpected bytes on the pooled MLLP connection; reconnecting");
            None
        }
        Some(Err(e)) => {
            tracing::debug!(error = %e, "pooled MLLP connection failed; reconnecting");
            None
        }
    }
}

/// How much of a payload [`Sender`] parses before sending it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// Every segment: [`Sender::send`].
    Whole,
    /// The header line: [`Sender::send_parsed`].
    Header,
}

/// Matches the ACK to the message and reads its code; also says whether MSA-2 echoed the
/// control id (`false`: it was empty).
fn classify(
    ack: Bytes,
    control_id: &str,
    charset: plexus_hl7::Charset,
) -> Result<(Answer, bool), AttemptError> {
    let (code, echoed) = {
        let message = plexus_hl7::Message::parse_with_charset(&ack, charset)
            .map_err(AttemptError::InvalidAck)?;
        let echoed = message
            .get("MSA-2")
            .map_err(AttemptError::AckPath)?
            .filter(|e| !e.trim().is_empty());
        // Receivers that cannot parse a message often cannot echo its id: an empty MSA-2
        // is left to the caller, who knows whether it can only answer this message. A
        // different id is another message's ACK.
        if echoed.as_deref().is_some_and(|e| e != control_id) {
            return Err(AttemptError::ControlIdMismatch {
                echoed: echoed.map(|id| shorten(&id)),
            });
        }
        let code = message
            .get("MSA-1")
            .map_err(AttemptError::AckPath)?
            .ok_or(AttemptError::MissingAckCode)?;
        (
            AckCode::parse(&code).ok_or(AttemptError::UnknownAckCode)?,
            echoed.is_some(),
        )
    };
    let ack = Ack { code, bytes: ack };
    let answer = match code.status() {
        Status::Accepted => Answer::Accepted(ack),
        Status::Rejected => Answer::Rejected(ack),
        Status::Error => Answer::Error(ack),
    };
    Ok((answer, echoed))
}

/// Pause before retry number `retry` (1-based): base, 2×base, 4×base, … capped at the maximum.
fn backoff(config: &SenderConfig, retry: u32) -> Duration {
    let factor = 1u32
        .checked_shl(retry.saturating_sub(1))
        .unwrap_or(u32::MAX);
    config
        .backoff_base
        .saturating_mul(factor)
        .min(config.backoff_max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let config = SenderConfig {
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            ..SenderConfig::default()
        };
        let pauses: Vec<u128> = (1..=6).map(|r| backoff(&config, r).as_millis()).collect();
        assert_eq!(pauses, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff(&config, 200), Duration::from_secs(1));
    }

    #[test]
    fn an_acks_reason_reads_v23_err_and_latin1() {
        let ack = |bytes: &'static [u8]| Ack {
            code: AckCode::AE,
            bytes: Bytes::from_static(bytes),
        };
        // v2.3: the code in ERR-1-4 (subcomponents), the text in MSA-3.
        let v23 = ack(b"MSH|^~\\&|R|F|S|F|2026||ACK|1|P|2.3\rMSA|AE|M1|M\xfcller^unknown\rERR|PID^1^5^204&Unknown key identifier\r");
        assert_eq!(
            v23.reason().as_deref(),
            Some("204 Unknown key identifier; M\u{fc}ller^unknown")
        );
        assert_eq!(
            ack(b"MSH|^~\\&|R|F|S|F|2026||ACK|1|P|2.5\rMSA|AE|M1\r").reason(),
            None
        );
        let long = format!(
            "MSH|^~\\&|R|F|S|F|2026||ACK|1|P|2.5\rMSA|AE|M1|{}\r",
            "x".repeat(1000)
        );
        let long = Ack {
            code: AckCode::AE,
            bytes: Bytes::from(long),
        };
        assert_eq!(
            long.reason().map(|r| r.chars().count()),
            Some(MAX_REASON_CHARS + 3)
        );
    }

    #[test]
    fn shorten_caps_length_on_char_boundary() {
        let long = "é".repeat(500);
        assert_eq!(shorten(&long).chars().count(), MAX_ID_IN_ERROR);
        assert_eq!(shorten("MSG1"), "MSG1");
    }
}
