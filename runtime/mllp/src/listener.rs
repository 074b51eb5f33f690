//! The MLLP listener: accepts connections (optionally TLS) under a cap, reads frames, hands each to
//! a [`Handler`] and writes its reply, in order, until the peer leaves, a timeout fires or shutdown.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::codec::{CodecError, DEFAULT_MAX_FRAME, Frame, Oversize};
use crate::conn::FrameIo;
use crate::watchdog::Watchdog;

/// How long a frame whose end block was the last byte received, right after text that
/// does not end a segment, waits for the next byte (its CR, or the proof that the 0x1C was
/// a stray byte in the payload) before it is taken as ended. Only a sender that omits both
/// the last segment's CR and the frame's ever waits this long.
const TRAILER_GRACE: Duration = Duration::from_millis(50);
/// How long a sender must be quiet after `...\r 0x1C X` (a stray byte after its end block)
/// before the frame is taken to have ended at the 0x1C: well past a TCP retransmit
/// (200 ms at least), so a message with a stray 0x1C inside is not cut by a pause.
const CANDIDATE_GRACE: Duration = Duration::from_secs(1);

/// Limits and timeouts of a [`Listener`]. Every field has a safe default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    /// Most connections served at once. A connection accepted while this many are open is closed
    /// straight away (see [`Listener`]); 0 refuses every connection. Default 128.
    pub max_connections: usize,
    /// Largest payload accepted; larger frames go to [`Handler::on_oversize`]. A reply over this
    /// size is not sent (the connection is closed instead). Default 16 MiB.
    pub max_frame: usize,
    /// A connection that starts no frame for this long (after connecting or after the last reply)
    /// is closed. Default 5 minutes; senders reconnect when they next have a message.
    pub idle_timeout: Duration,
    /// A frame must be complete this long after its start block arrived, or the connection is
    /// closed. Guards against peers that stall or trickle mid-frame. Default 60 s.
    pub frame_timeout: Duration,
    /// Longest the handler may take for one frame. When exceeded the frame gets no reply and the
    /// connection is closed (a late reply would be out of order). Default 60 s.
    pub handler_timeout: Duration,
    /// Longest a reply write may take. Default 30 s.
    pub write_timeout: Duration,
    /// Longest a TLS handshake may take. Default 10 s.
    pub tls_handshake_timeout: Duration,
    /// After shutdown is signalled, how long in-flight frames get to finish and be answered before
    /// their connections are dropped. Default 30 s.
    pub drain_timeout: Duration,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        Self {
            max_connections: 128,
            max_frame: DEFAULT_MAX_FRAME,
            idle_timeout: Duration::from_secs(300),
            frame_timeout: Duration::from_secs(60),
            handler_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(30),
            tls_handshake_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// Who sent a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerInfo {
    /// Per-listener connection number, for correlating log lines.
    pub conn_id: u64,
    /// The remote address.
    pub addr: SocketAddr,
    /// The local address the connection arrived on.
    pub local_addr: SocketAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
}

/// Turns a received frame into the reply sent back on the same connection.
///
/// Frames on one connection are handled one at a time, in order, so replies go out in request
/// order. Different connections are handled concurrently. Implementations may write the methods as
/// `async fn`, as long as the future is `Send`.
pub trait Handler: Send + Sync + 'static {
    /// Handles one payload (without MLLP framing). `Some(reply)` is framed and sent back; `None`
    /// sends nothing (e.g. the sender asked for no acknowledgement).
    fn handle(&self, payload: Bytes, peer: &PeerInfo)
    -> impl Future<Output = Option<Bytes>> + Send;

    /// Called instead of [`Handler::handle`] for a frame larger than
    /// [`ListenerConfig::max_frame`], once the whole frame has been read and discarded. The default
    /// replies nothing, which leaves the sender waiting for its ACK timeout; an engine should reply
    /// with a reject (MSA-1 `AR`) built from [`Oversize::head`], so the sender stops retrying.
    fn on_oversize(
        &self,
        frame: Oversize,
        peer: &PeerInfo,
    ) -> impl Future<Output = Option<Bytes>> + Send {
        let _ = (frame, peer);
        std::future::ready(None)
    }

    /// Told how many bytes the connection skipped outside frames since the last call (see
    /// the crate docs: junk, or the rest of a message after an early end block). Such
    /// bytes are not handled or answered; this lets an engine count them. Called before
    /// the next frame is handled and when the connection ends. The default does nothing.
    fn on_skipped(&self, bytes: u64, peer: &PeerInfo) {
        let _ = (bytes, peer);
    }
}

/// A [`Handler`] made from a closure; see [`handler_fn`].
pub struct HandlerFn<F>(F);

impl<F> fmt::Debug for HandlerFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HandlerFn")
    }
}

/// A handler from an async closure taking the payload and the peer. Oversize frames get no reply.
pub fn handler_fn<F, Fut>(f: F) -> HandlerFn<F>
where
    F: Fn(Bytes, PeerInfo) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Option<Bytes>> + Send,
{
    HandlerFn(f)
}

impl<F, Fut> Handler for HandlerFn<F>
where
    F: Fn(Bytes, PeerInfo) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Option<Bytes>> + Send,
{
    fn handle(
        &self,
        payload: Bytes,
        peer: &PeerInfo,
    ) -> impl Future<Output = Option<Bytes>> + Send {
        (self.0)(payload, peer.clone())
    }
}

/// Why a listener could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ListenError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// What a finished [`Listener::serve`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServeSummary {
    /// Connections accepted and served.
    pub served: u64,
    /// Connections accepted and closed at once because the cap was reached.
    pub refused: u64,
    /// Connections still open when the drain deadline passed, and dropped.
    pub aborted: usize,
}

/// A bound MLLP listener.
///
/// **Connection cap:** at most [`ListenerConfig::max_connections`] connections are served at once.
/// One more is accepted and closed immediately (logged at warn): the peer sees the connection
/// close, and a sending engine retries later, instead of hanging unanswered in the accept backlog.
///
/// **Shutdown:** when the token passed to [`Listener::serve`] is cancelled, the listener stops
/// accepting and closes its socket. Idle connections are closed; a connection in the middle of a
/// frame (or of its handler) finishes that frame and sends its reply, then closes. `serve` returns
/// once all connections have closed, or after [`ListenerConfig::drain_timeout`], when the rest are
/// dropped.
pub struct Listener {
    tcp: TcpListener,
    local_addr: SocketAddr,
    tls: Option<TlsAcceptor>,
    config: ListenerConfig,
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("local_addr", &self.local_addr)
            .field("tls", &self.tls.is_some())
            .field("config", &self.config)
            .finish()
    }
}

/// How long to pause after a failed `accept` (e.g. out of file descriptors) before trying again.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

impl Listener {
    /// Binds `addr` (port 0 picks a free port; see [`Listener::local_addr`]).
    pub async fn bind(addr: SocketAddr, config: ListenerConfig) -> Result<Self, ListenError> {
        let tcp = TcpListener::bind(addr)
            .await
            .map_err(|source| ListenError::Bind { addr, source })?;
        let local_addr = tcp
            .local_addr()
            .map_err(|source| ListenError::Bind { addr, source })?;
        Ok(Self {
            tcp,
            local_addr,
            tls: None,
            config,
        })
    }

    /// Serves TLS with this configuration (see [`crate::tls::server_config_from_pem`]).
    pub fn with_tls(mut self, tls: Arc<rustls::ServerConfig>) -> Self {
        self.tls = Some(TlsAcceptor::from(tls));
        self
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Accepts and serves connections until `shutdown` is cancelled, then drains (see
    /// [`Listener`]). Errors on single connections are logged, never returned.
    pub async fn serve<H: Handler>(
        self,
        handler: Arc<H>,
        shutdown: CancellationToken,
    ) -> ServeSummary {
        let Listener {
            tcp,
            local_addr,
            tls,
            config,
        } = self;
        let config = Arc::new(config);
        let permits = Arc::new(Semaphore::new(config.max_connections));
        let mut tasks = JoinSet::new();
        let mut summary = ServeSummary::default();
        let mut next_id = 0u64;
        // Accept failures in a row: said at the first and then less and less often, so a
        // process out of file descriptors does not also flood its log.
        let mut accept_failures = 0u64;
        tracing::info!(%local_addr, tls = tls.is_some(), "MLLP listener started");

        loop {
            let (stream, addr) = tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    log_join(done);
                    continue;
                }
                accepted = tcp.accept() => match accepted {
                    Ok(accepted) => {
                        accept_failures = 0;
                        accepted
                    }
                    Err(e) => {
                        // Usually transient (out of descriptors, aborted handshake): keep serving.
                        accept_failures += 1;
                        if accept_failures.is_power_of_two() {
                            tracing::warn!(error = %e, failures = accept_failures, "MLLP accept failed");
                        }
                        tokio::select! {
                            () = shutdown.cancelled() => break,
                            () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                        }
                    }
                },
            };
            let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                summary.refused += 1;
                tracing::warn!(
                    peer = %addr,
                    max_connections = config.max_connections,
                    "MLLP connection cap reached; closing new connection"
                );
                drop(stream);
                continue;
            };
            next_id += 1;
            summary.served += 1;
            let peer = PeerInfo {
                conn_id: next_id,
                addr,
                local_addr: stream.local_addr().unwrap_or(local_addr),
                tls: tls.is_some(),
            };
            let span = tracing::info_span!("mllp_conn", id = peer.conn_id, peer = %peer.addr);
            let task = run_connection(
                stream,
                peer,
                tls.clone(),
                Arc::clone(&handler),
                Arc::clone(&config),
                shutdown.clone(),
                permit,
            );
            tasks.spawn(task.instrument(span));
        }

        // Refuse new connections at the OS level while draining.
        drop(tcp);
        let open = tasks.len();
        if open > 0 {
            tracing::info!(open, "MLLP listener draining");
        }
        let drained = timeout(config.drain_timeout, async {
            while let Some(done) = tasks.join_next().await {
                log_join(done);
            }
        })
        .await;
        if drained.is_err() {
            summary.aborted = tasks.len();
            tracing::warn!(
                aborted = summary.aborted,
                "MLLP drain deadline passed; dropping connections"
            );
            tasks.shutdown().await;
        }
        tracing::info!(%local_addr, "MLLP listener stopped");
        summary
    }
}

fn log_join(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done
        && e.is_panic()
    {
        tracing::error!("MLLP connection task panicked");
    }
}

/// How a connection ended without error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closed {
    ByPeer,
    Idle,
    Shutdown,
}

/// How a connection ended with an error. Logged, never returned to the caller.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("TLS handshake failed")]
    Handshake(#[source] io::Error),
    #[error("TLS handshake timed out")]
    HandshakeTimeout,
    #[error("frame not complete within the frame timeout ({held} bytes held{})", if *unframed {
        "; no start block (0x0B) came before them: is the sender framing with 0x0B ... 0x1C 0x0D?"
    } else {
        ""
    })]
    FrameTimeout { held: usize, unframed: bool },
    #[error("handler did not finish within the handler timeout")]
    HandlerTimeout,
    #[error("reply write timed out")]
    WriteTimeout,
    #[error(transparent)]
    Codec(#[from] CodecError),
}

async fn run_connection<H: Handler>(
    stream: TcpStream,
    peer: PeerInfo,
    tls: Option<TlsAcceptor>,
    handler: Arc<H>,
    config: Arc<ListenerConfig>,
    shutdown: CancellationToken,
    _permit: OwnedSemaphorePermit,
) {
    tracing::debug!("MLLP connection opened");
    // Replies are small and latency matters more than packet count.
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "could not set TCP_NODELAY");
    }
    let result = match tls {
        None => serve_stream(stream, &peer, &*handler, &config, &shutdown).await,
        Some(acceptor) => {
            match timeout(config.tls_handshake_timeout, acceptor.accept(stream)).await {
                Err(_) => Err(ConnError::HandshakeTimeout),
                Ok(Err(e)) => Err(ConnError::Handshake(e)),
                Ok(Ok(stream)) => serve_stream(stream, &peer, &*handler, &config, &shutdown).await,
            }
        }
    };
    match result {
        Ok(closed) => tracing::debug!(?closed, "MLLP connection closed"),
        Err(e @ (ConnError::Handshake(_) | ConnError::HandshakeTimeout)) => {
            tracing::info!(error = %crate::error_chain(&e), "MLLP connection closed")
        }
        Err(e) => tracing::warn!(error = %crate::error_chain(&e), "MLLP connection closed"),
    }
}

async fn serve_stream<S, H>(
    io: S,
    peer: &PeerInfo,
    handler: &H,
    config: &ListenerConfig,
    shutdown: &CancellationToken,
) -> Result<Closed, ConnError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    H: Handler,
{
    let mut conn = FrameIo::new(io, config.max_frame).waiting_for_trailers();
    let result = read_loop(&mut conn, peer, handler, config, shutdown).await;
    // However it ended (a timeout, a reset): junk still being skipped counts.
    conn.flush_junk();
    let skipped = conn.take_skipped();
    if skipped > 0 {
        handler.on_skipped(skipped, peer);
    }
    // Bounded, because a peer that stopped reading could block the TLS close_notify.
    let _ = timeout(config.write_timeout, conn.shutdown()).await;
    result
}

async fn read_loop<S, H>(
    conn: &mut FrameIo<S>,
    peer: &PeerInfo,
    handler: &H,
    config: &ListenerConfig,
    shutdown: &CancellationToken,
) -> Result<Closed, ConnError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    H: Handler,
{
    let mut watchdog = Watchdog::new();
    let mut idle_deadline = Instant::now() + config.idle_timeout;
    let mut frame_deadline = None;
    let mut eof = false;
    loop {
        let next = if eof {
            conn.decode_eof()?
        } else {
            conn.decode_buffered()?
        };
        match next {
            Some(frame) => {
                frame_deadline = None;
                let skipped = conn.take_skipped();
                if skipped > 0 {
                    handler.on_skipped(skipped, peer);
                }
                answer(conn, frame, peer, handler, config, &mut watchdog).await?;
                idle_deadline = Instant::now() + config.idle_timeout;
                continue;
            }
            None if eof => return Ok(Closed::ByPeer),
            None => {}
        }

        let in_frame = conn.in_frame();
        let held = conn.holds_end();
        let candidate = !held && conn.holds_candidate();
        let deadline = if in_frame {
            let frame_end =
                *frame_deadline.get_or_insert_with(|| Instant::now() + config.frame_timeout);
            if held {
                // A complete frame but for its CR: a sender that omits the CR waits for
                // the ACK, so the frame ends once the sender has been quiet for a moment,
                // or at the frame deadline (bytes trickled in to keep it held).
                (Instant::now() + TRAILER_GRACE).min(frame_end)
            } else if candidate {
                // An end block after a segment's end, then a stray byte or few: longer
                // quiet than a TCP retransmit before that is taken as the frame's end.
                (Instant::now() + CANDIDATE_GRACE).min(frame_end)
            } else {
                frame_end
            }
        } else {
            idle_deadline
        };
        tokio::select! {
            biased;
            // Only between frames: a frame already started is in flight and gets finished.
            () = shutdown.cancelled(), if !in_frame => return Ok(Closed::Shutdown),
            read = watchdog.run(deadline, conn.fill()) => match read {
                None if held || candidate => {
                    let frame = if held {
                        conn.release_held()
                    } else {
                        conn.release_candidate()
                    };
                    if let Some(frame) = frame {
                        frame_deadline = None;
                        answer(conn, frame, peer, handler, config, &mut watchdog).await?;
                        idle_deadline = Instant::now() + config.idle_timeout;
                    }
                }
                None if in_frame => {
                    return Err(ConnError::FrameTimeout {
                        held: conn.held(),
                        unframed: conn.unframed_partial(),
                    });
                }
                None => return Ok(Closed::Idle),
                Some(filled) => {
                    eof = match filled {
                        Ok(filled) => !filled,
                        // A TLS peer that hangs up without close_notify (many do): an end
                        // of stream like TCP's, so a frame cut off is still `Truncated`
                        // and one between frames is a quiet close, not a WARN.
                        Err(CodecError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                            true
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            },
        }
    }
}

/// Runs the handler for one frame and writes its reply, if any.
async fn answer<S, H>(
    conn: &mut FrameIo<S>,
    frame: Frame,
    peer: &PeerInfo,
    handler: &H,
    config: &ListenerConfig,
    watchdog: &mut Watchdog,
) -> Result<(), ConnError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    H: Handler,
{
    let handler_deadline = Instant::now() + config.handler_timeout;
    let reply = match frame {
        Frame::Message(payload) => {
            tracing::debug!(len = payload.len(), "MLLP frame received");
            watchdog
                .run(handler_deadline, handler.handle(payload, peer))
                .await
        }
        Frame::Oversize(oversize) => {
            tracing::warn!(
                len = oversize.len,
                limit = config.max_frame,
                "MLLP frame over the size limit discarded"
            );
            watchdog
                .run(handler_deadline, handler.on_oversize(oversize, peer))
                .await
        }
    }
    .ok_or(ConnError::HandlerTimeout)?;
    if let Some(reply) = reply {
        let write_deadline = Instant::now() + config.write_timeout;
        watchdog
            .run(write_deadline, conn.write_frame(&reply))
            .await
            .ok_or(ConnError::WriteTimeout)??;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! Connection-loop timing on an in-memory stream with paused time: exact and deterministic,
    //! where the socket tests in `tests/` can only use generous margins.

    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
    use tokio::task::JoinHandle;

    use super::*;

    fn peer() -> PeerInfo {
        let addr = SocketAddr::from(([127, 0, 0, 1], 2575));
        PeerInfo {
            conn_id: 1,
            addr,
            local_addr: addr,
            tls: false,
        }
    }

    fn echo() -> impl Handler {
        handler_fn(|payload: Bytes, _| async move {
            Some(Bytes::from([&b"ACK:"[..], &payload].concat()))
        })
    }

    /// Serves one in-memory connection; returns the client end and the connection task.
    fn serve_duplex(
        config: ListenerConfig,
        shutdown: CancellationToken,
    ) -> (DuplexStream, JoinHandle<Result<Closed, ConnError>>) {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let task = tokio::spawn(async move {
            serve_stream(server, &peer(), &echo(), &config, &shutdown).await
        });
        (client, task)
    }

    async fn read_all(client: &mut DuplexStream) -> Vec<u8> {
        let mut out = Vec::new();
        client.read_to_end(&mut out).await.expect("reads");
        out
    }

    #[tokio::test(start_paused = true)]
    async fn idle_timeout_is_exact() {
        let config = ListenerConfig {
            idle_timeout: Duration::from_secs(300),
            ..ListenerConfig::default()
        };
        let started = Instant::now();
        let (mut client, task) = serve_duplex(config, CancellationToken::new());
        client.write_all(b"\x0bMSH|1\x1c\r").await.expect("writes");
        tokio::time::sleep(Duration::from_secs(100)).await;
        // The reply came at once; the idle clock restarted after it.
        let result = task.await.expect("no panic");
        assert!(matches!(result, Ok(Closed::Idle)));
        assert_eq!(started.elapsed(), Duration::from_secs(300));
        assert_eq!(read_all(&mut client).await, b"\x0bACK:MSH|1\x1c\r");
    }

    #[tokio::test(start_paused = true)]
    async fn trickling_frame_hits_the_frame_deadline() {
        let config = ListenerConfig {
            idle_timeout: Duration::from_secs(30),
            frame_timeout: Duration::from_secs(60),
            ..ListenerConfig::default()
        };
        let started = Instant::now();
        let (mut client, task) = serve_duplex(config, CancellationToken::new());
        // One byte every 10 s: never idle for 30 s, but the frame never completes.
        client.write_all(b"\x0b").await.expect("writes");
        let trickle = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                if client.write_all(b"x").await.is_err() {
                    return;
                }
            }
        });
        let result = task.await.expect("no panic");
        assert!(
            matches!(
                result,
                Err(ConnError::FrameTimeout {
                    unframed: false,
                    ..
                })
            ),
            "{result:?}"
        );
        assert_eq!(started.elapsed(), Duration::from_secs(60));
        trickle.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_sender_that_never_frames_is_told_so_at_the_frame_deadline() {
        let config = ListenerConfig {
            frame_timeout: Duration::from_secs(60),
            ..ListenerConfig::default()
        };
        let (mut client, task) = serve_duplex(config, CancellationToken::new());
        // HL7 with no 0x0B and no 0x1C, then waiting for an answer.
        client.write_all(b"MSH|^~\\&|A|B\r").await.expect("writes");
        let result = task.await.expect("no panic");
        let Err(
            err @ ConnError::FrameTimeout {
                unframed: true,
                held: 13,
            },
        ) = &result
        else {
            panic!("{result:?}");
        };
        assert!(err.to_string().contains("is the sender framing"), "{err}");
        drop(client);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_finishes_the_frame_in_progress() {
        let shutdown = CancellationToken::new();
        let (mut client, task) = serve_duplex(ListenerConfig::default(), shutdown.clone());
        client.write_all(b"\x0bMSH|half").await.expect("writes");
        // Paused time advances only when every task is blocked: the server has read the half.
        tokio::time::sleep(Duration::from_secs(1)).await;
        shutdown.cancel();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            !task.is_finished(),
            "a frame in progress keeps the connection"
        );
        client.write_all(b"-rest\x1c\r").await.expect("writes");
        let result = task.await.expect("no panic");
        assert!(matches!(result, Ok(Closed::Shutdown)), "{result:?}");
        assert_eq!(read_all(&mut client).await, b"\x0bACK:MSH|half-rest\x1c\r");
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_closes_an_idle_connection_at_once() {
        let shutdown = CancellationToken::new();
        let (mut client, task) = serve_duplex(ListenerConfig::default(), shutdown.clone());
        tokio::time::sleep(Duration::from_secs(1)).await;
        shutdown.cancel();
        let result = task.await.expect("no panic");
        assert!(matches!(result, Ok(Closed::Shutdown)));
        assert!(read_all(&mut client).await.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn eof_mid_frame_is_reported_as_truncated() {
        let (mut client, task) = serve_duplex(ListenerConfig::default(), CancellationToken::new());
        client.write_all(b"\x0bMSH|cut").await.expect("writes");
        drop(client);
        let result = task.await.expect("no panic");
        assert!(
            matches!(
                result,
                Err(ConnError::Codec(CodecError::Truncated { received: 7 }))
            ),
            "{result:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn slow_handler_is_cut_off() {
        let config = ListenerConfig {
            handler_timeout: Duration::from_secs(5),
            ..ListenerConfig::default()
        };
        let (mut client, server) = tokio::io::duplex(1024);
        let stuck = handler_fn(|_payload: Bytes, _| async move {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            None
        });
        let task = tokio::spawn(async move {
            serve_stream(server, &peer(), &stuck, &config, &CancellationToken::new()).await
        });
        client.write_all(b"\x0bMSH|1\x1c\r").await.expect("writes");
        let result = task.await.expect("no panic");
        assert!(
            matches!(result, Err(ConnError::HandlerTimeout)),
            "{result:?}"
        );
        assert!(read_all(&mut client).await.is_empty());
    }
}
