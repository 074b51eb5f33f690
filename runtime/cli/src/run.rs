//! `plexus run`: today, an MLLP front door that answers every frame.
//!
//! Each parseable message is acknowledged (AA, or CA in enhanced mode); each one that
//! cannot be parsed is rejected (AR/CR) with the reason in ERR, and an oversize frame is
//! rejected with its size. Messages are not yet journaled or delivered: the durable
//! pipeline replaces this handler.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use bytes::Bytes;
use plexus_hl7::Message;
use plexus_hl7::ack::{self, AckError, ErrorCode, Status};
use plexus_mllp::{Handler, Listener, ListenerConfig, Oversize, PeerInfo};
use tokio_util::sync::CancellationToken;

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Address the MLLP listener binds (port 0 picks a free one; the address is printed).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:2575")]
    mllp: SocketAddr,
    /// Largest MLLP frame accepted, in bytes; larger ones are rejected with an AR.
    #[arg(long, value_name = "BYTES", default_value_t = plexus_mllp::DEFAULT_MAX_FRAME)]
    max_frame: usize,
    /// Most MLLP connections served at once; more are closed on arrival.
    #[arg(long, value_name = "N", default_value_t = 128)]
    max_connections: usize,
    /// Seconds a connection may sit without starting a frame before it is closed.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    idle_timeout: u64,
    /// Serve MLLP over TLS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The TLS private key (PEM); needs --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(args))?;
    Ok(ExitCode::SUCCESS)
}

async fn serve(args: RunArgs) -> anyhow::Result<()> {
    let config = ListenerConfig {
        max_connections: args.max_connections,
        max_frame: args.max_frame,
        idle_timeout: Duration::from_secs(args.idle_timeout),
        ..ListenerConfig::default()
    };
    let mut listener = Listener::bind(args.mllp, config).await.with_context(|| {
        format!(
            "cannot listen for MLLP on {} (is another engine running?)",
            args.mllp
        )
    })?;
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        let tls = plexus_mllp::tls::server_config_from_pem(cert, key)
            .context("loading the TLS certificate and key")?;
        listener = listener.with_tls(tls);
    }
    let tls = if args.tls_cert.is_some() {
        " over TLS"
    } else {
        ""
    };
    println!(
        "plexus: MLLP listening on {}{tls}; Ctrl-C stops (in-flight messages are answered first)",
        listener.local_addr()
    );

    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::info!("shutdown requested; draining connections");
        }
        stop.cancel();
    });
    let handler = Arc::new(AckResponder::new(args.max_frame));
    let summary = listener.serve(handler, shutdown).await;
    tracing::info!(?summary, "MLLP listener stopped");
    Ok(())
}

/// Answers each frame on receipt.
#[derive(Debug)]
struct AckResponder {
    max_frame: usize,
    /// ACK control ids are `PLX<start second>-<n>`: unique across restarts to the second.
    id_prefix: String,
    next: AtomicU64,
}

impl AckResponder {
    fn new(max_frame: usize) -> Self {
        let started = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        AckResponder {
            max_frame,
            id_prefix: format!("PLX{started}-"),
            next: AtomicU64::new(1),
        }
    }

    fn ids(&self) -> (String, String) {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        (
            format!("{}{n}", self.id_prefix),
            ack::timestamp(SystemTime::now()),
        )
    }

    fn answer(&self, payload: &[u8], peer: &PeerInfo) -> Option<Bytes> {
        let (id, ts) = self.ids();
        match Message::parse(payload) {
            Ok(msg) => {
                tracing::info!(
                    conn = peer.conn_id,
                    control_id = msg.control_id().as_deref().unwrap_or(""),
                    message_type = msg.get("MSH-9-1").ok().flatten().as_deref().unwrap_or(""),
                    trigger = msg.get("MSH-9-2").ok().flatten().as_deref().unwrap_or(""),
                    bytes = payload.len(),
                    "message accepted"
                );
                ack::acknowledge(&msg, Status::Accepted, None, &id, &ts).map(Bytes::from)
            }
            Err(err) => {
                tracing::warn!(conn = peer.conn_id, bytes = payload.len(), reason = %err, "message rejected: not parseable");
                let mut nak = AckError::new(
                    err.ack_code(),
                    format!("message could not be parsed: {err}"),
                );
                nak.location = err.location();
                Some(Bytes::from(ack::reject_unparseable(
                    payload, &nak, &id, &ts,
                )))
            }
        }
    }
}

impl Handler for AckResponder {
    async fn handle(&self, payload: Bytes, peer: &PeerInfo) -> Option<Bytes> {
        self.answer(&payload, peer)
    }

    async fn on_oversize(&self, frame: Oversize, peer: &PeerInfo) -> Option<Bytes> {
        tracing::warn!(
            conn = peer.conn_id,
            bytes = frame.len,
            limit = self.max_frame,
            "message rejected: frame too large"
        );
        let (id, ts) = self.ids();
        let reason = format!(
            "message of {} bytes is larger than this interface's {} byte limit",
            frame.len, self.max_frame
        );
        let nak = AckError::new(ErrorCode::ValueTooLong, reason);
        Some(Bytes::from(ack::reject_unparseable(
            &frame.head,
            &nak,
            &id,
            &ts,
        )))
    }
}
