//! Listener tests on 127.0.0.1:0 with a raw framed client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use plexus_mllp::{
    Handler, Listener, ListenerConfig, Oversize, PeerInfo, ServeSummary, handler_fn,
};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::support::{PATIENCE, connect, recv, send};

/// Replies `ACK:<payload>`; sleeps first for payloads starting with `slow`, replies nothing to
/// `noack`, and NAKs oversize frames with their length and head.
#[derive(Debug, Default)]
struct Echo;

impl Handler for Echo {
    async fn handle(&self, payload: Bytes, _peer: &PeerInfo) -> Option<Bytes> {
        if payload.starts_with(b"slow") {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if &payload[..] == b"noack" {
            return None;
        }
        Some(Bytes::from([&b"ACK:"[..], &payload].concat()))
    }

    async fn on_oversize(&self, frame: Oversize, _peer: &PeerInfo) -> Option<Bytes> {
        let head = String::from_utf8_lossy(&frame.head).into_owned();
        Some(Bytes::from(format!("NAK:{}:{head}", frame.len)))
    }
}

struct Running {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<ServeSummary>,
}

impl Running {
    async fn stop(self) -> ServeSummary {
        self.shutdown.cancel();
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("serve returns after shutdown")
            .expect("serve does not panic")
    }
}

async fn start<H: Handler>(config: ListenerConfig, handler: H) -> Running {
    let listener = Listener::bind("127.0.0.1:0".parse().expect("addr"), config)
        .await
        .expect("binds");
    run(listener, handler)
}

fn run<H: Handler>(listener: Listener, handler: H) -> Running {
    let addr = listener.local_addr();
    assert_ne!(addr.port(), 0);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(listener.serve(Arc::new(handler), shutdown.clone()));
    Running {
        addr,
        shutdown,
        task,
    }
}

/// Reads until EOF, failing if the server sends anything or takes too long to close.
async fn expect_closed(tcp: &mut TcpStream) {
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(PATIENCE, tcp.read(&mut buf))
        .await
        .expect("server closes in time")
        .unwrap_or(0); // a reset is a close too
    assert_eq!(n, 0, "expected the server to close, got {n} bytes");
}

/// One frame and its reply on a new connection; `None` if the server closed or reset it instead
/// (as it does to connections over the cap).
async fn try_round_trip(addr: SocketAddr, payload: &[u8]) -> Option<Bytes> {
    use futures::{SinkExt, StreamExt};
    let mut client = connect(addr).await;
    client.send(payload).await.ok()?;
    match tokio::time::timeout(PATIENCE, client.next()).await {
        Ok(Some(Ok(plexus_mllp::Frame::Message(reply)))) => Some(reply),
        _ => None,
    }
}

#[tokio::test]
async fn ack_round_trip_in_order() {
    let server = start(ListenerConfig::default(), Echo).await;
    let mut client = connect(server.addr).await;

    send(&mut client, b"MSH|one").await;
    assert_eq!(
        recv(&mut client).await.as_deref(),
        Some(&b"ACK:MSH|one"[..])
    );

    // Pipelined: the slow first frame is still answered first; `noack` gets no reply.
    send(&mut client, b"slow-1").await;
    send(&mut client, b"noack").await;
    send(&mut client, b"fast-2").await;
    assert_eq!(recv(&mut client).await.as_deref(), Some(&b"ACK:slow-1"[..]));
    assert_eq!(recv(&mut client).await.as_deref(), Some(&b"ACK:fast-2"[..]));

    drop(client);
    let summary = server.stop().await;
    assert_eq!(summary.served, 1);
    assert_eq!(summary.refused, 0);
}

#[tokio::test]
async fn handler_fn_sees_peer() {
    let server = start(
        ListenerConfig::default(),
        handler_fn(|_payload, peer: PeerInfo| async move {
            Some(Bytes::from(format!("{}:{}", peer.addr.ip(), peer.tls)))
        }),
    )
    .await;
    let mut client = connect(server.addr).await;
    send(&mut client, b"MSH|x").await;
    assert_eq!(
        recv(&mut client).await.as_deref(),
        Some(&b"127.0.0.1:false"[..])
    );
    server.stop().await;
}

#[tokio::test]
async fn oversize_frame_gets_nak_and_connection_stays_usable() {
    let config = ListenerConfig {
        // Room for the NAK (the limit bounds replies too), not for the big message.
        max_frame: 64,
        ..ListenerConfig::default()
    };
    let server = start(config, Echo).await;
    let mut client = connect(server.addr).await;
    let big = [
        &b"MSH|^~\\&|A|B|C|D|2025||ADT|BIG1|P\r"[..],
        &[b'x'; 100_000],
    ]
    .concat();
    send(&mut client, &big).await;
    send(&mut client, b"MSH|small").await;
    let nak = recv(&mut client).await.expect("a NAK");
    assert_eq!(
        String::from_utf8_lossy(&nak),
        format!("NAK:{}:MSH|^~\\&|A|B|C|D|2025||ADT|BIG1|P", big.len())
    );
    assert_eq!(
        recv(&mut client).await.as_deref(),
        Some(&b"ACK:MSH|small"[..])
    );
    server.stop().await;
}

#[tokio::test]
async fn connection_over_cap_is_closed_then_slot_is_reused() {
    let config = ListenerConfig {
        max_connections: 1,
        ..ListenerConfig::default()
    };
    let server = start(config, Echo).await;

    // A round trip proves the first connection holds the only slot.
    let mut first = connect(server.addr).await;
    send(&mut first, b"first").await;
    assert_eq!(recv(&mut first).await.as_deref(), Some(&b"ACK:first"[..]));

    let mut second = TcpStream::connect(server.addr).await.expect("connects");
    expect_closed(&mut second).await;

    // Once the first leaves, its slot frees up (asynchronously, hence the retry loop).
    drop(first);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match try_round_trip(server.addr, b"third").await {
            Some(reply) => {
                assert_eq!(&reply[..], b"ACK:third");
                break;
            }
            None => {
                assert!(tokio::time::Instant::now() < deadline, "slot never freed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    let summary = server.stop().await;
    assert!(summary.refused >= 1);
    assert!(summary.served >= 2);
}

#[tokio::test]
async fn idle_connection_is_closed() {
    let config = ListenerConfig {
        idle_timeout: Duration::from_millis(200),
        ..ListenerConfig::default()
    };
    let server = start(config, Echo).await;
    let started = std::time::Instant::now();
    let mut tcp = TcpStream::connect(server.addr).await.expect("connects");
    expect_closed(&mut tcp).await;
    assert!(started.elapsed() >= Duration::from_millis(200));
    server.stop().await;
}

#[tokio::test]
async fn traffic_keeps_connection_open() {
    let config = ListenerConfig {
        idle_timeout: Duration::from_millis(500),
        ..ListenerConfig::default()
    };
    let server = start(config, Echo).await;
    let mut client = connect(server.addr).await;
    // Four gaps of 200 ms: 800 ms in all, longer than the idle timeout, none of them longer.
    for i in 0..5 {
        let payload = format!("m{i}");
        send(&mut client, payload.as_bytes()).await;
        assert!(
            recv(&mut client).await.is_some(),
            "closed before message {i}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn stalled_frame_is_closed_by_frame_timeout() {
    let config = ListenerConfig {
        frame_timeout: Duration::from_millis(200),
        ..ListenerConfig::default()
    };
    let server = start(config, Echo).await;
    let mut tcp = TcpStream::connect(server.addr).await.expect("connects");
    tokio::io::AsyncWriteExt::write_all(&mut tcp, b"\x0bMSH|partial")
        .await
        .expect("writes");
    expect_closed(&mut tcp).await;
    server.stop().await;
}

/// Blocks in the handler until released, telling the test when it has started.
#[derive(Debug, Default)]
struct Gate {
    entered: Notify,
    release: Notify,
}

#[tokio::test]
async fn shutdown_drains_in_flight_frame() {
    let gate = Arc::new(Gate::default());
    let handler = {
        let gate = Arc::clone(&gate);
        handler_fn(move |payload: Bytes, _| {
            let gate = Arc::clone(&gate);
            async move {
                gate.entered.notify_one();
                gate.release.notified().await;
                Some(Bytes::from([&b"ACK:"[..], &payload].concat()))
            }
        })
    };
    let server = start(ListenerConfig::default(), handler).await;
    let mut busy = connect(server.addr).await;
    let mut idle = TcpStream::connect(server.addr).await.expect("connects");

    send(&mut busy, b"in-flight").await;
    tokio::time::timeout(PATIENCE, gate.entered.notified())
        .await
        .expect("handler starts");
    server.shutdown.cancel();

    // The idle connection is closed at once, while the busy one waits for its handler.
    expect_closed(&mut idle).await;
    gate.release.notify_one();
    assert_eq!(
        recv(&mut busy).await.as_deref(),
        Some(&b"ACK:in-flight"[..])
    );
    assert_eq!(recv(&mut busy).await, None, "closed after the reply");

    let addr = server.addr;
    let summary = server.stop().await;
    assert_eq!(summary.aborted, 0);
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn drain_deadline_drops_stuck_connections() {
    let config = ListenerConfig {
        drain_timeout: Duration::from_millis(200),
        ..ListenerConfig::default()
    };
    let entered = Arc::new(Notify::new());
    let handler = {
        let entered = Arc::clone(&entered);
        handler_fn(move |_payload: Bytes, _| {
            let entered = Arc::clone(&entered);
            async move {
                entered.notify_one();
                std::future::pending::<()>().await;
                None
            }
        })
    };
    let server = start(config, handler).await;
    let mut client = connect(server.addr).await;
    send(&mut client, b"stuck").await;
    tokio::time::timeout(PATIENCE, entered.notified())
        .await
        .expect("handler starts");
    let summary = server.stop().await;
    assert_eq!(summary.aborted, 1);
    assert_eq!(recv(&mut client).await, None);
}

#[tokio::test]
async fn tls_round_trip() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let cert_pem = cert.cert.pem();
    let key_pem = cert.signing_key.serialize_pem();

    // From files, as the CLI will do it.
    let dir = tempfile::tempdir().expect("tempdir");
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, &cert_pem).expect("writes cert");
    std::fs::write(&key_path, &key_pem).expect("writes key");
    let server_tls =
        plexus_mllp::tls::server_config_from_pem(&cert_path, &key_path).expect("server config");

    let listener = Listener::bind(
        "127.0.0.1:0".parse().expect("addr"),
        ListenerConfig::default(),
    )
    .await
    .expect("binds")
    .with_tls(server_tls);
    let server = run(listener, Echo);

    let client_tls =
        plexus_mllp::tls::client_config_from_pem_bytes(cert_pem.as_bytes()).expect("client config");
    let tcp = TcpStream::connect(server.addr).await.expect("connects");
    let tls = tokio_rustls::TlsConnector::from(client_tls)
        .connect(
            plexus_mllp::tls::server_name("localhost").expect("name"),
            tcp,
        )
        .await
        .expect("handshake");
    let mut client = tokio_util::codec::Framed::new(tls, plexus_mllp::MllpCodec::default());
    futures::SinkExt::send(&mut client, &b"MSH|secure"[..])
        .await
        .expect("writes");
    let reply = tokio::time::timeout(PATIENCE, futures::StreamExt::next(&mut client))
        .await
        .expect("in time");
    assert!(matches!(
        reply,
        Some(Ok(plexus_mllp::Frame::Message(ref p))) if &p[..] == b"ACK:MSH|secure"
    ));
    server.stop().await;
}

#[tokio::test]
async fn plain_client_on_tls_listener_is_closed() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let server_tls = plexus_mllp::tls::server_config_from_pem_bytes(
        cert.cert.pem().as_bytes(),
        cert.signing_key.serialize_pem().as_bytes(),
    )
    .expect("server config");
    let listener = Listener::bind(
        "127.0.0.1:0".parse().expect("addr"),
        ListenerConfig::default(),
    )
    .await
    .expect("binds")
    .with_tls(server_tls);
    let server = run(listener, Echo);
    let mut client = connect(server.addr).await;
    send(&mut client, b"MSH|plaintext").await;
    // The server answers a failed handshake with a TLS alert or nothing, never an MLLP reply.
    let mut raw = client.into_inner();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, raw.read_to_end(&mut buf))
        .await
        .expect("server closes in time");
    assert!(!buf.contains(&0x0B));
    server.stop().await;
}

#[tokio::test]
async fn tls_config_errors_name_the_file() {
    let missing = std::path::Path::new("/nonexistent/plexus/cert.pem");
    let err = plexus_mllp::tls::server_config_from_pem(missing, missing).expect_err("fails");
    assert!(
        err.to_string().contains("/nonexistent/plexus/cert.pem"),
        "{err}"
    );

    let err = plexus_mllp::tls::server_config_from_pem_bytes(b"not pem", b"").expect_err("fails");
    assert!(
        matches!(err, plexus_mllp::TlsError::NoCertificate { .. }),
        "{err}"
    );
}

#[tokio::test]
async fn a_frame_without_its_cr_is_answered_and_a_stray_end_block_split_off_is_not_a_frame() {
    use tokio::io::AsyncWriteExt;
    // Answers with the payload's length and last byte: a reply cannot hold a raw 0x1C.
    let handler = handler_fn(|payload: Bytes, _| async move {
        let last = payload.last().copied().unwrap_or(0);
        Some(Bytes::from(format!("LEN:{}:{last}", payload.len())))
    });
    let server = start(ListenerConfig::default(), handler).await;
    let mut client = connect(server.addr).await;
    // No Nagle: the test controls when each part leaves.
    client.get_ref().set_nodelay(true).expect("nodelay");

    // A sender that omits the CR and waits: answered once it has been quiet briefly.
    client
        .get_mut()
        .write_all(b"\x0bMSH|no-cr\x1c")
        .await
        .expect("write");
    assert_eq!(recv(&mut client).await.as_deref(), Some(&b"LEN:9:114"[..]));

    // A stray 0x1C inside a payload, written in two parts split right after it: the frame
    // runs to its real end. (No pause between the parts: the codec's own tests cover every
    // split point without depending on timing.)
    let raw = client.get_mut();
    raw.write_all(b"\x0bMSH|abc\x1c").await.expect("write");
    raw.write_all(b"def\x1c\r").await.expect("write");
    assert_eq!(recv(&mut client).await.as_deref(), Some(&b"LEN:11:102"[..]));

    drop(client);
    server.stop().await;
}

#[tokio::test]
async fn a_stray_byte_after_the_end_block_does_not_cost_the_answer() {
    use tokio::io::AsyncWriteExt;
    let handler = handler_fn(|payload: Bytes, _| async move {
        let last = payload.last().copied().unwrap_or(0);
        Some(Bytes::from(format!("LEN:{}:{last}", payload.len())))
    });
    // A frame timeout far beyond the test's patience: the answer must not wait for it.
    let config = ListenerConfig {
        frame_timeout: Duration::from_secs(600),
        ..ListenerConfig::default()
    };
    let server = start(config, handler).await;
    let mut client = connect(server.addr).await;
    client.get_ref().set_nodelay(true).expect("nodelay");
    // One write: the payload ends its segment, then 0x1C and a byte that is no trailer.
    for junk in [&b"X"[..], b"\x00", b"XYZ"] {
        let frame = [&b"\x0bMSH|x\r\x1c"[..], junk].concat();
        client.get_mut().write_all(&frame).await.expect("write");
        let answer = tokio::time::timeout(PATIENCE, recv(&mut client))
            .await
            .expect("answered once the sender went quiet");
        assert_eq!(answer.as_deref(), Some(&b"LEN:6:13"[..]), "{junk:?}");
    }
    // The connection goes on as usual.
    client
        .get_mut()
        .write_all(b"\x0bMSH|y\x1c\r")
        .await
        .expect("write");
    assert_eq!(recv(&mut client).await.as_deref(), Some(&b"LEN:5:121"[..]));
    drop(client);
    server.stop().await;
}

#[tokio::test]
async fn a_frame_kept_held_by_trickled_bytes_still_ends_at_the_frame_timeout() {
    use tokio::io::AsyncWriteExt;
    let handler = handler_fn(|payload: Bytes, _| async move {
        Some(Bytes::from(format!("LEN:{}", payload.len())))
    });
    let config = ListenerConfig {
        frame_timeout: Duration::from_millis(300),
        ..ListenerConfig::default()
    };
    let server = start(config, handler).await;
    let mut client = connect(server.addr).await;
    client.get_ref().set_nodelay(true).expect("nodelay");
    client
        .get_mut()
        .write_all(b"\x0bMSH|a\x1c")
        .await
        .expect("write");
    // Every 20 ms one more byte and a stray 0x1C: without the frame deadline the frame
    // would stay held for as long as this goes on (here, past the test's patience).
    let (mut read, mut write) = client.into_inner().into_split();
    let trickle = tokio::spawn(async move {
        for _ in 0..1_000 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if write.write_all(b"b\x1c").await.is_err() {
                break;
            }
        }
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while !got.contains(&0x1c) {
        let n = tokio::time::timeout(PATIENCE, read.read(&mut buf))
            .await
            .expect("answered at the frame deadline, not held while bytes trickle in")
            .expect("read");
        assert!(n > 0, "closed");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got.starts_with(b"\x0bLEN:"), "{got:?}");
    trickle.abort();
    server.stop().await;
}
