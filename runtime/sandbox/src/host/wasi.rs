//! WASI preview 2, linked because Rust std guests import it, with nothing behind it:
//! no environment, arguments, stdin, directories or sockets; a frozen clock; randomness
//! from a fixed seed; stdout and stderr captured under a byte cap into the plug-in log.

use std::sync::{Arc, Mutex};

use rand::SeedableRng;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder};

/// Captured stdout and stderr of one run.
#[derive(Clone)]
pub(crate) struct Stdio {
    pub(crate) stdout: Captured,
    pub(crate) stderr: Captured,
}

impl Stdio {
    pub(crate) fn new(cap: usize) -> Self {
        Stdio {
            stdout: Captured::new(cap),
            stderr: Captured::new(cap),
        }
    }
}

/// An output stream that keeps the first `cap` bytes and counts the rest. It never
/// fails a write: a plug-in that prints too much loses output, not its run.
#[derive(Clone)]
pub(crate) struct Captured {
    inner: Arc<Mutex<CapturedInner>>,
}

struct CapturedInner {
    bytes: Vec<u8>,
    dropped: usize,
    cap: usize,
}

impl Captured {
    fn new(cap: usize) -> Self {
        Captured {
            inner: Arc::new(Mutex::new(CapturedInner {
                bytes: Vec::new(),
                dropped: 0,
                cap,
            })),
        }
    }

    fn write(&self, data: &[u8]) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let room = inner.cap.saturating_sub(inner.bytes.len());
        let keep = room.min(data.len());
        inner.bytes.extend_from_slice(&data[..keep]);
        inner.dropped += data.len() - keep;
    }

    /// The kept bytes and how many were dropped.
    pub(crate) fn take(&self) -> (Vec<u8>, usize) {
        match self.inner.lock() {
            Ok(mut inner) => (
                std::mem::take(&mut inner.bytes),
                std::mem::take(&mut inner.dropped),
            ),
            Err(_) => (Vec::new(), 0),
        }
    }
}

impl IsTerminal for Captured {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Captured {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for Captured {
    fn write(&mut self, bytes: bytes::Bytes) -> Result<(), StreamError> {
        Captured::write(self, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(64 * 1024)
    }
}

#[async_trait::async_trait]
impl Pollable for Captured {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for Captured {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        Captured::write(&self, buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// The wall clock reads the message's arrival time, always.
struct FrozenWallClock(std::time::Duration);

impl HostWallClock for FrozenWallClock {
    fn resolution(&self) -> std::time::Duration {
        std::time::Duration::from_secs(1)
    }
    fn now(&self) -> std::time::Duration {
        self.0
    }
}

/// The monotonic clock never advances.
struct FrozenMonotonicClock;

impl HostMonotonicClock for FrozenMonotonicClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

/// The seed for every plug-in's "random" bytes: fixed, so runs are reproducible and no
/// real entropy reaches a plug-in.
const SEED: u64 = 0x706c_6578_7573; // "plexus"

/// A WASI context with nothing in it but captured stdio, a frozen clock and seeded bytes.
pub(crate) fn context(stdio: &Stdio, received_at_ms: u64) -> WasiCtx {
    let mut builder = WasiCtxBuilder::new();
    builder
        .stdout(stdio.stdout.clone())
        .stderr(stdio.stderr.clone())
        .wall_clock(FrozenWallClock(std::time::Duration::from_millis(
            received_at_ms,
        )))
        .monotonic_clock(FrozenMonotonicClock)
        .secure_random(rand::rngs::StdRng::seed_from_u64(SEED))
        .insecure_random(rand::rngs::StdRng::seed_from_u64(SEED))
        .insecure_random_seed(u128::from(SEED))
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    builder.build()
}
