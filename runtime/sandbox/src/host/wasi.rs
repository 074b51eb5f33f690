//! WASI preview 2, linked because Rust std guests import it, with nothing behind it:
//! no environment, arguments, stdin, directories or sockets; a frozen clock whose timers
//! have always gone off (a plug-in cannot sleep); randomness from a fixed seed; stdout and
//! stderr captured under a byte cap into the plug-in log.

use std::sync::{Arc, Mutex};

use rand::SeedableRng;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{DynPollable, OutputStream, Pollable, StreamError};
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

    /// Empties both streams, their counts and their tails, for the next message.
    pub(crate) fn clear(&self) {
        for stream in [&self.stdout, &self.stderr] {
            if let Ok(mut inner) = stream.inner.lock() {
                inner.bytes.clear();
                inner.dropped = 0;
                inner.tail.clear();
            }
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
    /// The last [`TAIL`] bytes written, kept whatever the cap: where a panic's message
    /// is when a run trapped after printing a lot.
    tail: std::collections::VecDeque<u8>,
}

/// Bytes of a stream's end kept for a trap's report.
pub(crate) const TAIL: usize = crate::error::MAX_TRAP_OUTPUT;

impl Captured {
    fn new(cap: usize) -> Self {
        Captured {
            inner: Arc::new(Mutex::new(CapturedInner {
                bytes: Vec::new(),
                dropped: 0,
                cap,
                tail: std::collections::VecDeque::new(),
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
        let recent = &data[data.len().saturating_sub(TAIL)..];
        inner.tail.extend(recent);
        let over = inner.tail.len().saturating_sub(TAIL);
        inner.tail.drain(..over);
    }

    /// The last bytes written (at most [`TAIL`]).
    pub(crate) fn tail(&self) -> Vec<u8> {
        match self.inner.lock() {
            Ok(inner) => inner.tail.iter().copied().collect(),
            Err(_) => Vec::new(),
        }
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

/// The most random bytes one call may ask for; more traps. A mapping needs a few (a
/// hash seed), not megabytes.
const MAX_RANDOM_BYTES: u64 = 64 << 10;

/// The monotonic clock's interface as wasmtime-wasi links it. Its timers are replaced
/// under this exact name; a test fails if the name stops matching.
pub(crate) const MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";

/// A timer that has already gone off.
struct Elapsed;

#[async_trait::async_trait]
impl Pollable for Elapsed {
    async fn ready(&mut self) {}
}

/// Replaces the monotonic clock's timers (`subscribe-duration`, `subscribe-instant`)
/// with ones that have already gone off. wasmtime-wasi's wait on the host thread, where
/// neither the epoch deadline nor fuel reaches: a plug-in that slept for a day would hold
/// its message, a pool slot and a chain permit for a day. With the clock frozen, no time
/// passes during a sleep either way; a plug-in that polls in a loop for time to pass
/// runs into its deadline.
pub(crate) fn replace_timers(linker: &mut Linker<super::HostState>) -> wasmtime::Result<()> {
    fn elapsed(state: &mut super::HostState) -> wasmtime::Result<(Resource<DynPollable>,)> {
        let timer = state.table.push(Elapsed)?;
        Ok((wasmtime_wasi::p2::subscribe(&mut state.table, timer)?,))
    }
    linker.allow_shadowing(true);
    let mut clock = linker.instance(MONOTONIC_CLOCK)?;
    clock.func_wrap("subscribe-duration", |mut store, (_,): (u64,)| {
        elapsed(store.data_mut())
    })?;
    clock.func_wrap("subscribe-instant", |mut store, (_,): (u64,)| {
        elapsed(store.data_mut())
    })?;
    linker.allow_shadowing(false);
    Ok(())
}

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
        // wasmtime-wasi would build up to 64 MiB on the host per call.
        .max_random_size(MAX_RANDOM_BYTES)
        .secure_random(rand::rngs::StdRng::seed_from_u64(SEED))
        .insecure_random(rand::rngs::StdRng::seed_from_u64(SEED))
        .insecure_random_seed(u128::from(SEED))
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    builder.build()
}
