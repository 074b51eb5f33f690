//! Helpers shared by the tests: HL7 fixtures, a framed test client and a scriptable MLLP server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use plexus_mllp::{Frame, MllpCodec};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::codec::Framed;

/// Generous bound for things that should happen within milliseconds.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// An ADT message with MSH-10 = `id`. The PID holds a marker that must never show up in errors.
pub fn message(id: &str) -> Vec<u8> {
    format!("MSH|^~\\&|SND|FAC|RCV|FAC|20250101120000||ADT^A01|{id}|P|2.5\rPID|1||SECRET-PATIENT")
        .into_bytes()
}

/// An ACK with MSA-1 = `code` and MSA-2 = `id`.
pub fn ack(code: &str, id: &str) -> Bytes {
    Bytes::from(format!(
        "MSH|^~\\&|RCV|FAC|SND|FAC|20250101120001||ACK^A01|ACK{id}|P|2.5\rMSA|{code}|{id}"
    ))
}

/// MSH-10 of a message, by plain splitting (the tests do not depend on the parser).
pub fn control_id(payload: &[u8]) -> String {
    let text = String::from_utf8_lossy(payload);
    let msh = text.split('\r').next().unwrap_or_default();
    msh.split('|').nth(9).unwrap_or_default().to_owned()
}

/// A framed client connection.
pub type Client = Framed<TcpStream, MllpCodec>;

pub async fn connect(addr: SocketAddr) -> Client {
    let tcp = TcpStream::connect(addr).await.expect("connects");
    Framed::new(tcp, MllpCodec::default())
}

/// The next frame's payload; `None` if the server closed the connection.
pub async fn recv(client: &mut Client) -> Option<Bytes> {
    match tokio::time::timeout(PATIENCE, client.next())
        .await
        .expect("server answers or closes in time")
    {
        Some(Ok(Frame::Message(payload))) => Some(payload),
        Some(Ok(other)) => panic!("unexpected frame {other:?}"),
        Some(Err(e)) => panic!("client read failed: {e}"),
        None => None,
    }
}

pub async fn send(client: &mut Client, payload: &[u8]) {
    client.send(payload).await.expect("client writes");
}

/// What the scripted server does with one received message.
#[derive(Debug, Clone)]
pub enum Act {
    Reply(Bytes),
    /// Several frames in a row (a receiver that answers twice).
    Replies(Vec<Bytes>),
    /// Reply, then close the connection (like a server's idle timeout right after).
    ReplyAndClose(Bytes),
    /// Keep the connection open and answer nothing.
    Ignore,
    /// Close the connection without answering.
    Close,
}

/// A tiny MLLP server driven by `script(connection_index, message_index_on_connection, payload)`.
/// Counts connections and messages.
pub struct ScriptServer {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
    pub messages: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl ScriptServer {
    pub async fn start<F>(script: F) -> Self
    where
        F: Fn(usize, usize, &[u8]) -> Act + Send + Sync + 'static,
    {
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        Self::start_on(tcp, script)
    }

    pub fn start_on<F>(tcp: TcpListener, script: F) -> Self
    where
        F: Fn(usize, usize, &[u8]) -> Act + Send + Sync + 'static,
    {
        let addr = tcp.local_addr().expect("has address");
        let connections = Arc::new(AtomicUsize::new(0));
        let messages = Arc::new(AtomicUsize::new(0));
        let script = Arc::new(script);
        let task = {
            let connections = Arc::clone(&connections);
            let messages = Arc::clone(&messages);
            tokio::spawn(async move {
                let mut conns = tokio::task::JoinSet::new();
                while let Ok((tcp, _)) = tcp.accept().await {
                    let index = connections.fetch_add(1, Ordering::SeqCst);
                    let script = Arc::clone(&script);
                    let messages = Arc::clone(&messages);
                    conns.spawn(async move {
                        let mut framed = Framed::new(tcp, MllpCodec::default());
                        let mut n = 0;
                        while let Some(Ok(Frame::Message(payload))) = framed.next().await {
                            messages.fetch_add(1, Ordering::SeqCst);
                            match script(index, n, &payload) {
                                Act::Reply(reply) => {
                                    if framed.send(reply).await.is_err() {
                                        return;
                                    }
                                }
                                Act::Replies(replies) => {
                                    for reply in replies {
                                        if framed.send(reply).await.is_err() {
                                            return;
                                        }
                                    }
                                }
                                Act::ReplyAndClose(reply) => {
                                    let _ = framed.send(reply).await;
                                    return;
                                }
                                Act::Ignore => {}
                                Act::Close => return,
                            }
                            n += 1;
                        }
                    });
                }
            })
        };
        Self {
            addr,
            connections,
            messages,
            task,
        }
    }

    /// Stops accepting and drops every open connection (a crash, as the peer sees it).
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}
