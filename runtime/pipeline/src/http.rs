//! The engine's HTTP side: the server (`/healthz`, `/readyz`, and a POST route per
//! HTTP-source interface) and the client for HTTP destinations.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use plexus_journal::SourceKind;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::chain::Verdict;
use crate::deliver::SendFailure;
use crate::engine::{Iface, Shared};
use crate::error::BuildError;
use crate::ingest::{self, Accepted, NotAccepted, acknowledgement};
use plexus_mllp::error_chain;

/// The media type of an ER7 (pipe-delimited) HL7 v2 message.
pub const HL7_MEDIA_TYPE: &str = "x-application/hl7-v2+er7";

/// Largest body accepted on an ingest route.
pub(crate) const MAX_BODY: usize = plexus_mllp::DEFAULT_MAX_FRAME;

/// Binds the HTTP server and spawns it.
pub(crate) async fn start(
    shared: &Arc<Shared>,
    shutdown: CancellationToken,
    tasks: &mut JoinSet<()>,
) -> Result<SocketAddr, BuildError> {
    let addr = shared.config.http.listen;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| BuildError::Bind {
            interface: "http".to_owned(),
            addr,
            source,
        })?;
    let local = listener.local_addr().map_err(|source| BuildError::Bind {
        interface: "http".to_owned(),
        addr,
        source,
    })?;
    let mut router = Router::new().route("/healthz", get(|| async { "ok\n" }));
    let scraped = shared.clone();
    router = router.route(
        "/metrics",
        get(move || {
            let shared = scraped.clone();
            async move { metrics(shared).await }
        }),
    );
    let ready = shared.clone();
    router = router.route(
        "/readyz",
        get(move || {
            let shared = ready.clone();
            async move { readyz(shared).await }
        }),
    );
    for iface in shared.interfaces.values() {
        if let plexus_config::Inbound::Http { path } = &iface.config.source {
            let shared = shared.clone();
            let iface = iface.clone();
            router = router.route(
                path,
                post(
                    move |headers: axum::http::HeaderMap,
                          body: Result<Bytes, axum::extract::rejection::BytesRejection>| {
                        let shared = shared.clone();
                        let iface = iface.clone();
                        async move {
                            match (form_body(&headers), body) {
                                (Some(refusal), _) => refusal,
                                (None, Ok(body)) => ingest_route(shared, iface, body).await,
                                (None, Err(e)) => body_refused(e),
                            }
                        }
                    },
                )
                .fallback(|| async {
                    (
                        StatusCode::METHOD_NOT_ALLOWED,
                        [(header::ALLOW, "POST")],
                        "this path takes POST: one HL7 v2 message per request\n",
                    )
                }),
            );
            tracing::info!(path, "HTTP source listening");
        }
    }
    let router = router
        .merge(crate::admin::router(shared))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        // Reading a body is part of a request: a client that stalls mid-body is cut.
        .layer(axum::middleware::from_fn(request_deadline));
    if let Some(tls) = &shared.config.http.tls {
        let config =
            plexus_mllp::tls::server_config_from_pem(&tls.cert, &tls.key).map_err(|e| {
                BuildError::Tls {
                    interface: "[http]".to_owned(),
                    detail: plexus_mllp::error_chain(&e),
                }
            })?;
        tracing::info!(addr = %local, "HTTPS server listening");
        tasks.spawn(serve(listener, router, Some(config), shutdown));
        return Ok(local);
    }
    tracing::info!(addr = %local, "HTTP server listening");
    tasks.spawn(serve(listener, router, None, shutdown));
    Ok(local)
}

/// The answer for an HTTP source's body that could not be read: over the size limit, it
/// says the limit (axum's own text does not).
fn body_refused(e: axum::extract::rejection::BytesRejection) -> Response {
    if e.status() != StatusCode::PAYLOAD_TOO_LARGE {
        return e.into_response();
    }
    (
        StatusCode::PAYLOAD_TOO_LARGE,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!(
            "the body is larger than the {} MiB a message may be; nothing was journaled\n",
            MAX_BODY >> 20
        ),
    )
        .into_response()
}

/// Longest a client may take to finish the TLS handshake, and then each request's
/// headers (an idle keep-alive connection is closed after this long, too).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest one request may take, its body included: enough for a 16 MiB upload on a slow
/// link, and it bounds how long a client that stalls mid-body holds its connection.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a stopping engine waits for HTTP requests in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Connections served at once. Over it a new connection is accepted and closed at once,
/// as MLLP does: anonymous clients cannot use up the process's file descriptors, which
/// MLLP and the journal need too.
const MAX_HTTP_CONNECTIONS: usize = 1024;

/// Answers 408 for a request not done within [`REQUEST_TIMEOUT`].
async fn request_deadline(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => (
            StatusCode::REQUEST_TIMEOUT,
            "the request was not complete within 120 s\n",
        )
            .into_response(),
    }
}

/// The HTTP server, plain or over TLS: each accepted connection (after its TLS handshake,
/// bounded in time) is served HTTP/1.1 on its own task, with a deadline for each
/// request's headers. Stops accepting on shutdown; a request in flight then finishes,
/// and idle connections close.
async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: CancellationToken,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let connections = Arc::new(tokio::sync::Semaphore::new(MAX_HTTP_CONNECTIONS));
    let mut refused: u64 = 0;
    let mut served = JoinSet::new();
    loop {
        while served.try_join_next().is_some() {}
        let (tcp, peer) = tokio::select! {
            () = shutdown.cancelled() => {
                // Requests in flight are answered (a message posted is journaled and
                // its answer sent) before the engine stops; idle connections close.
                let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
                    while served.join_next().await.is_some() {}
                })
                .await;
                if drained.is_err() {
                    tracing::warn!("HTTP requests still in flight at shutdown were cut");
                }
                return;
            }
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off a little.
                    tracing::warn!("HTTP accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            refused += 1;
            if refused.is_power_of_two() {
                tracing::warn!(
                    limit = MAX_HTTP_CONNECTIONS,
                    refused,
                    "HTTP connection refused: the server is at its connection limit"
                );
            }
            drop(tcp);
            continue;
        };
        let acceptor = acceptor.clone();
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let stop = shutdown.clone();
        served.spawn(async move {
            let _permit = permit;
            let builder = {
                let mut b = hyper::server::conn::http1::Builder::new();
                b.timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT);
                b
            };
            match acceptor {
                None => {
                    let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(tcp), service);
                    drive(conn, &stop, peer).await;
                }
                Some(acceptor) => {
                    let tls = match tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(tcp)).await
                    {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, "TLS handshake failed: {e}");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(tls), service);
                    drive(conn, &stop, peer).await;
                }
            }
        });
    }
}

/// Serves one connection until it ends, or, after shutdown, until its request in flight
/// is answered.
async fn drive<I, S>(
    conn: hyper::server::conn::http1::Connection<I, S>,
    stop: &CancellationToken,
    peer: SocketAddr,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResBody: 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    tokio::pin!(conn);
    tokio::select! {
        served = conn.as_mut() => {
            if let Err(e) = served {
                tracing::debug!(%peer, "HTTP connection ended: {e}");
            }
        }
        () = stop.cancelled() => {
            // Let the request in flight finish (bounded by its deadline), then close.
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, conn).await;
        }
    }
}

/// Prometheus text format: counters kept in memory since start, plus queue and
/// error-queue figures read from the journal now.
async fn metrics(shared: Arc<Shared>) -> Response {
    let journal = shared.journal.clone();
    let names: Vec<String> = shared.interfaces.keys().cloned().collect();
    // interface -> [(destination, lanes)]
    let lanes: Vec<(String, Vec<(String, u32)>)> = shared
        .interfaces
        .iter()
        .map(|(name, iface)| {
            let dests = iface
                .config
                .destinations
                .iter()
                .map(|d| (d.name.to_string(), crate::deliver::lane_count(d)))
                .collect();
            (name.clone(), dests)
        })
        .collect();
    let figures = tokio::task::spawn_blocking(move || {
        let mut figures = crate::metrics::JournalFigures::default();
        for q in journal.queue_depths()? {
            figures
                .queues
                .insert((q.interface, q.destination, q.lane), (q.depth, q.oldest));
        }
        // Every configured lane, owed or not: an empty one reads 0 rather than vanishing.
        for (name, iface) in &lanes {
            for (dest, count) in iface {
                for lane in 0..*count {
                    figures
                        .queues
                        .entry((name.clone(), dest.clone(), lane))
                        .or_insert((0, None));
                }
            }
        }
        for name in names {
            let stats = journal.error_stats(Some(&name))?;
            figures.errors.insert(name, (stats.open, stats.oldest_open));
        }
        Ok::<_, plexus_journal::Error>(figures)
    })
    .await;
    let mut figures = match figures {
        Ok(Ok(figures)) => figures,
        _ => {
            return (StatusCode::SERVICE_UNAVAILABLE, "journal unavailable\n").into_response();
        }
    };
    for (name, iface) in &shared.interfaces {
        if let Some(shadow) = iface.shadow.load_full() {
            figures.shadows.insert(
                name.to_string(),
                (
                    shadow.run,
                    shadow
                        .counters
                        .compared
                        .load(std::sync::atomic::Ordering::Relaxed),
                    shadow
                        .counters
                        .skipped
                        .load(std::sync::atomic::Ordering::Relaxed),
                ),
            );
        }
    }
    let body = crate::metrics::render(
        shared
            .interfaces
            .iter()
            .map(|(name, iface)| (name.as_str(), &iface.metrics)),
        &figures,
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// No route for this path: under `/admin/` a JSON error, as every admin answer is.
async fn not_found(uri: axum::http::Uri) -> Response {
    if uri.path().starts_with("/admin/") {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({
                "error": format!("no admin route {} (docs/admin-api.yaml lists them)", uri.path())
            })),
        )
            .into_response();
    }
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

async fn readyz(shared: Arc<Shared>) -> Response {
    let failed_at = shared
        .journal_failed_at
        .load(std::sync::atomic::Ordering::Relaxed);
    let since = crate::ingest::millis(std::time::SystemTime::now()).saturating_sub(failed_at);
    if failed_at != 0 && u128::from(since) < crate::engine::JOURNAL_FAILURE_HOLD.as_millis() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "journal commits are failing: messages are refused until one succeeds (the log says why)\n",
        )
            .into_response();
    }
    let journal = shared.journal.clone();
    match tokio::task::spawn_blocking(move || journal.error_stats(None)).await {
        Ok(Ok(_)) => (StatusCode::OK, "ready\n").into_response(),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "journal unavailable\n").into_response(),
    }
}

/// A POST whose body was sent as a form: `curl -d @msg.hl7` does that, and drops the
/// file's line breaks, which run every segment into MSH. Refused (415) before it is read
/// as a message, with the command that sends it as it is; not journaled (the sender
/// learns at once).
fn form_body(headers: &axum::http::HeaderMap) -> Option<Response> {
    let kind = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let essence = kind.split(';').next()?.trim().to_ascii_lowercase();
    if essence != "application/x-www-form-urlencoded" && essence != "multipart/form-data" {
        return None;
    }
    Some(
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "the message was sent as a form ({essence}), which loses its segment breaks: \
                 send it as it is, with Content-Type {HL7_MEDIA_TYPE} (curl: --data-binary @FILE \
                 -H 'Content-Type: {HL7_MEDIA_TYPE}')\n"
            ),
        )
            .into_response(),
    )
}

/// POST of one message: the reply body is the HL7 ACK; the status says the same thing in
/// HTTP terms (200 accepted, 422 held in the error queue, 400 unparseable or refused at
/// intake, 503 not stored: send again).
async fn ingest_route(shared: Arc<Shared>, iface: Arc<Iface>, body: Bytes) -> Response {
    let started = std::time::Instant::now();
    let accepted = ingest::accept(&shared, &iface, SourceKind::Http, None, body.clone()).await;
    let status = match &accepted {
        Ok(Accepted::Processed { verdict, .. }) => match verdict {
            Verdict::Forwarded | Verdict::Filtered { .. } => StatusCode::OK,
            Verdict::Failed(_) => StatusCode::UNPROCESSABLE_ENTITY,
        },
        Ok(Accepted::Unparseable { .. } | Accepted::Refused { .. }) => StatusCode::BAD_REQUEST,
        Err(NotAccepted::Journal(_) | NotAccepted::Internal(_)) => StatusCode::SERVICE_UNAVAILABLE,
    };
    // The HTTP status is the answer; an ACK body is sent even when MSH-15 asked for none.
    let ack = acknowledgement(
        &shared,
        &iface,
        plexus_config::AckMode::Original,
        &body,
        &accepted,
        started,
    )
    .unwrap_or_default();
    (status, [(header::CONTENT_TYPE, HL7_MEDIA_TYPE)], ack).into_response()
}

/// Posts messages to an HTTP destination: `http://` through hyper's pooled client;
/// `https://` over one kept-alive rustls connection (a destination's worker sends one
/// message at a time), made again when it breaks.
pub(crate) struct HttpSender {
    url: hyper::Uri,
    transport: Transport,
}

enum Transport {
    Plain(Client<HttpConnector, Full<Bytes>>),
    Tls {
        config: Arc<rustls::ClientConfig>,
        name: rustls::pki_types::ServerName<'static>,
        addr: String,
        conn: tokio::sync::Mutex<Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>>,
    },
}

/// Longest a POST may take, response included.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest answer body read from a destination (its content is not used).
const MAX_ANSWER: usize = 1 << 20;

/// Where the system keeps its CA bundle (Debian and Ubuntu, RHEL and Fedora, Alpine and
/// others): the trust for an `https://` destination without `tls.ca`.
const SYSTEM_CA_BUNDLES: [&str; 3] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

impl HttpSender {
    pub(crate) fn new(
        url: &str,
        tls: Option<&plexus_config::ClientTls>,
    ) -> Result<HttpSender, String> {
        let uri: hyper::Uri = url.parse().map_err(|e| format!("bad URL {url}: {e}"))?;
        if uri.scheme_str() != Some("https") {
            let mut connector = HttpConnector::new();
            connector.set_connect_timeout(Some(Duration::from_secs(10)));
            let client = Client::builder(TokioExecutor::new()).build(connector);
            return Ok(HttpSender {
                url: uri,
                transport: Transport::Plain(client),
            });
        }
        let host = uri
            .host()
            .ok_or_else(|| format!("{url} names no host"))?
            .trim_matches(['[', ']'])
            .to_owned();
        let port = uri.port_u16().unwrap_or(443);
        let config = match tls {
            Some(tls) => plexus_mllp::tls::client_config_from_pem(&tls.ca)
                .map_err(|e| format!("{url}: {}", plexus_mllp::error_chain(&e)))?,
            None => {
                let bundle = SYSTEM_CA_BUNDLES
                    .iter()
                    .map(std::path::Path::new)
                    .find(|p| p.exists())
                    .ok_or_else(|| {
                        format!(
                            "{url}: no system CA bundle found ({}); set `tls = {{ ca = \"ca.pem\" }}` on the destination",
                            SYSTEM_CA_BUNDLES.join(", ")
                        )
                    })?;
                plexus_mllp::tls::client_config_from_pem(bundle)
                    .map_err(|e| format!("{url}: {e}"))?
            }
        };
        let expected = tls
            .and_then(|t| t.server_name.clone())
            .unwrap_or_else(|| host.clone());
        let name = plexus_mllp::tls::server_name(&expected).map_err(|e| format!("{url}: {e}"))?;
        Ok(HttpSender {
            url: uri,
            transport: Transport::Tls {
                config,
                name,
                addr: format!("{host}:{port}"),
                conn: tokio::sync::Mutex::new(None),
            },
        })
    }

    /// Sends one request over the destination's transport.
    async fn request(
        &self,
        mut request: hyper::Request<Full<Bytes>>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, String> {
        match &self.transport {
            Transport::Plain(client) => client
                .request(request)
                .await
                .map_err(|e| format!("POST to {}: {}", self.url, error_chain(&e))),
            Transport::Tls {
                config,
                name,
                addr,
                conn,
            } => {
                let mut conn = conn.lock().await;
                let reusable = match conn.as_mut() {
                    Some(sender) => sender.ready().await.is_ok(),
                    None => false,
                };
                if !reusable {
                    *conn = None;
                    let tcp = tokio::time::timeout(
                        Duration::from_secs(10),
                        tokio::net::TcpStream::connect(addr.as_str()),
                    )
                    .await
                    .map_err(|_| format!("connecting to {addr} timed out"))?
                    .map_err(|e| format!("connecting to {addr}: {e}"))?;
                    let tls = tokio::time::timeout(
                        HEADER_TIMEOUT,
                        tokio_rustls::TlsConnector::from(config.clone()).connect(name.clone(), tcp),
                    )
                    .await
                    .map_err(|_| format!("TLS handshake with {addr} timed out"))?
                    .map_err(|e| format!("TLS handshake with {addr}: {e}"))?;
                    let (sender, connection) =
                        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                            .await
                            .map_err(|e| format!("HTTP handshake with {addr}: {e}"))?;
                    tokio::spawn(async move {
                        if let Err(e) = connection.await {
                            tracing::debug!("HTTPS destination connection ended: {e}");
                        }
                    });
                    *conn = Some(sender);
                }
                let Some(sender) = conn.as_mut() else {
                    return Err(format!("no connection to {addr}"));
                };
                // On a connection of its own the request names the path, and the host
                // in a header.
                let path = self
                    .url
                    .path_and_query()
                    .map_or("/", |p| p.as_str())
                    .parse()
                    .map_err(|e| format!("bad URL {}: {e}", self.url))?;
                *request.uri_mut() = path;
                let host = self.url.authority().map_or(addr.as_str(), |a| a.as_str());
                request.headers_mut().insert(
                    header::HOST,
                    host.parse()
                        .map_err(|e| format!("bad host in {}: {e}", self.url))?,
                );
                match sender.send_request(request).await {
                    Ok(response) => Ok(response),
                    Err(e) => {
                        // The next message connects again.
                        *conn = None;
                        Err(format!("POST to {}: {}", self.url, error_chain(&e)))
                    }
                }
            }
        }
    }

    pub(crate) async fn send(&self, payload: Vec<u8>) -> Result<(), SendFailure> {
        let request = hyper::Request::post(self.url.clone())
            .header(header::CONTENT_TYPE, HL7_MEDIA_TYPE)
            .body(Full::new(Bytes::from(payload)))
            .map_err(|e| SendFailure::Permanent(format!("cannot build the request: {e}")))?;
        let response = tokio::time::timeout(HTTP_TIMEOUT, self.request(request))
            .await
            .map_err(|_| {
                SendFailure::Unanswered(format!(
                    "{} did not answer within {HTTP_TIMEOUT:?}",
                    self.url
                ))
            })?
            .map_err(SendFailure::Retryable)?;
        let status = response.status();
        // A redirect is not followed (the message goes where the config says, or
        // nowhere): say where it pointed, so the operator can fix `url`.
        let moved_to = status
            .is_redirection()
            .then(|| response.headers().get(header::LOCATION))
            .flatten()
            .and_then(|v| v.to_str().ok())
            .map(|to| format!(" (to {})", to.chars().take(200).collect::<String>()))
            .unwrap_or_default();
        // Read (and drop) a bounded amount of the answer so the connection can carry the
        // next message; an answer larger than that, or slow, just closes the connection.
        let _ = tokio::time::timeout(
            HTTP_TIMEOUT,
            http_body_util::BodyExt::collect(http_body_util::Limited::new(
                response.into_body(),
                MAX_ANSWER,
            )),
        )
        .await;
        if status.is_success() {
            Ok(())
        } else if status.is_server_error()
            || status == StatusCode::REQUEST_TIMEOUT
            || status == StatusCode::TOO_MANY_REQUESTS
        {
            Err(SendFailure::Retryable(format!(
                "{} answered {status}",
                self.url
            )))
        } else {
            Err(SendFailure::Permanent(format!(
                "{} answered {status}{moved_to}",
                self.url
            )))
        }
    }
}
