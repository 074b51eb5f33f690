//! An MLLP listener feeding an interface: each frame is journaled and processed before
//! its ACK goes out.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use plexus_config::MllpSource;
use plexus_hl7::ack::{self, AckError, ErrorCode};
use plexus_journal::SourceKind;
use plexus_mllp::{Handler, Listener, ListenerConfig, Oversize, PeerInfo};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::engine::{Iface, Shared};
use crate::error::BuildError;
use crate::ingest::{self, acknowledgement};

/// Binds the interface's listener and spawns its accept loop; returns the bound address.
pub(crate) async fn start(
    shared: &Arc<Shared>,
    iface: &Arc<Iface>,
    source: &MllpSource,
    shutdown: CancellationToken,
    tasks: &mut JoinSet<()>,
) -> Result<SocketAddr, BuildError> {
    let max_frame = usize::try_from(source.max_frame).unwrap_or(usize::MAX);
    let config = ListenerConfig {
        max_connections: usize::try_from(source.max_connections).unwrap_or(usize::MAX),
        max_frame,
        idle_timeout: source.idle_timeout,
        ..ListenerConfig::default()
    };
    let mut listener =
        Listener::bind(source.listen, config)
            .await
            .map_err(|e| BuildError::Bind {
                interface: iface.name.clone(),
                addr: source.listen,
                source: std::io::Error::other(e),
            })?;
    if let Some(tls) = &source.tls {
        let server =
            plexus_mllp::tls::server_config_from_pem(&tls.cert, &tls.key).map_err(|e| {
                BuildError::Tls {
                    interface: format!("interface {}", iface.name),
                    detail: plexus_mllp::error_chain(&e),
                }
            })?;
        listener = listener.with_tls(server);
    }
    let addr = listener.local_addr();
    tracing::info!(
        interface = %iface.name,
        %addr,
        tls = source.tls.is_some(),
        "MLLP source listening"
    );
    let handler = Arc::new(MllpHandler {
        shared: shared.clone(),
        iface: iface.clone(),
        max_frame,
    });
    let name = iface.name.clone();
    tasks.spawn(async move {
        let summary = listener.serve(handler, shutdown).await;
        tracing::info!(
            interface = %name,
            connections_served = summary.served,
            connections_refused = summary.refused,
            connections_cut_at_the_drain_deadline = summary.aborted,
            "MLLP source stopped"
        );
    });
    Ok(addr)
}

struct MllpHandler {
    shared: Arc<Shared>,
    iface: Arc<Iface>,
    max_frame: usize,
}

impl Handler for MllpHandler {
    async fn handle(&self, payload: Bytes, peer: &PeerInfo) -> Option<Bytes> {
        let started = std::time::Instant::now();
        let accepted = ingest::accept(
            &self.shared,
            &self.iface,
            SourceKind::Mllp,
            Some(peer.addr.to_string()),
            payload.clone(),
        )
        .await;
        acknowledgement(
            &self.shared,
            &self.iface,
            self.iface.config.ack_mode,
            &payload,
            &accepted,
            started,
        )
    }

    fn on_skipped(&self, bytes: u64, _peer: &PeerInfo) {
        self.iface.metrics.outside_frames(bytes);
    }

    async fn on_oversize(&self, frame: Oversize, peer: &PeerInfo) -> Option<Bytes> {
        // The frame was read and discarded; what is kept is its start, so the error queue
        // shows that something arrived and was refused.
        let reason = format!(
            "message of {} bytes is larger than this interface's {} byte limit",
            frame.len, self.max_frame
        );
        tracing::warn!(interface = %self.iface.name, conn = peer.conn_id, bytes = frame.len, "message rejected: frame too large");
        if ingest::not_kept(
            &self.shared,
            &self.iface,
            SourceKind::Mllp,
            peer.addr.to_string(),
            &frame.head,
            reason.clone(),
        )
        .await
        .is_err()
        {
            tracing::error!(interface = %self.iface.name, "could not journal the refused frame's head");
        }
        self.iface.metrics.acked(
            Some(ack::unparseable_code(&frame.head)),
            std::time::Duration::ZERO,
        );
        let (id, ts) = self.shared.ack_ids.next();
        let nak = AckError::new(ErrorCode::ValueTooLong, reason);
        Some(Bytes::from(ack::reject_unparseable(
            &frame.head,
            &nak,
            &id,
            &ts,
        )))
    }
}
