//! `plexus bench`: end-to-end throughput and latency of the engine on this machine.
//!
//! The default mode runs three things in this process: an MLLP **sink** standing in for
//! the receiving system, the **engine** on a throw-away site (one MLLP interface, the
//! `visit-status-map` plug-in mapping SCH-25, one MLLP destination to the sink, and the
//! journal as always: SQLite in WAL mode with `synchronous=FULL`), and a **load
//! generator**: K persistent connections, each sending its share of the messages one at a
//! time and waiting for the ACK before the next. Per message it measures the ACK latency
//! (sent -> ACK back: parsed, mapped and journaled) and the end-to-end latency (sent ->
//! the sink has it).
//!
//! With `--target` only the load generator runs, against any MLLP server that ACKs; that
//! is how `bench/compare.py` measures python-hl7 with the same client.
//!
//! The three share the machine's cores, so the figures are a floor for the engine alone.
//! Messages are synthetic; nothing here logs message content.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::{Bytes, BytesMut};
use plexus_hl7::ack;
use plexus_mllp::{Frame, Listener, ListenerConfig, MllpCodec, Watchdog, handler_fn};
use plexus_pipeline::Engine;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::{Decoder, Encoder};
use tokio_util::sync::CancellationToken;

use crate::site::BuiltinAssets;

/// Longest the generator waits for one ACK before the run is abandoned.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest the deliveries may make no progress before the missing ones are given up on.
const DELIVERY_STALL: Duration = Duration::from_secs(30);
/// Longest the engine and the sink get to stop at the end.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(60);
/// The status words SCH-25 cycles through; all are in the bundled `visit-status` table.
const STATUSES: [&str; 4] = ["Arrived", "Checked In", "Roomed", "Ready"];
/// What the table maps each of them to; the sink checks that deliveries carry it.
const MAPPED: &str = "Started";

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Messages to send in all, spread evenly over the connections.
    #[arg(long, short = 'n', value_name = "N", default_value_t = 50_000,
          value_parser = clap::value_parser!(u32).range(1..))]
    messages: u32,
    /// Connections, each sending one message at a time (send, wait for the ACK).
    #[arg(long, short = 'k', value_name = "K", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    connections: u32,
    /// Load an external MLLP server that ACKs instead (no engine, no sink): reports the
    /// ACK rate and latency only.
    #[arg(long, value_name = "HOST:PORT")]
    target: Option<String>,
    /// Connections from the engine to the sink (the destination's `connections`). Above 1
    /// the bench interface sets `order_by = "PID-3-1"`: each patient's messages keep their
    /// order (the sink checks it) while different patients' messages go out side by side.
    #[arg(long, value_name = "N", default_value_t = 1, conflicts_with = "target",
          value_parser = clap::value_parser!(u32).range(1..=i64::from(plexus_config::MAX_DESTINATION_CONNECTIONS)))]
    destination_connections: u32,
    /// Grant `reuse-instance` to the plug-in: it keeps instances between messages
    /// instead of a fresh one per message (faster; see the grant in docs/config.md).
    #[arg(long, conflicts_with = "target")]
    reuse_instance: bool,
    /// Print one JSON object on stdout instead of text.
    #[arg(long)]
    json: bool,
    /// Keep the bench site (config and journal) in DIR, which must be new or empty,
    /// instead of a temporary folder that is removed at the end.
    #[arg(long, value_name = "DIR", conflicts_with = "target")]
    keep: Option<PathBuf>,
}

pub fn bench(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    let plan = Arc::new(Plan {
        messages: args.messages as usize,
        connections: args.connections as usize,
        destination_connections: args.destination_connections as usize,
        reuse_instance: args.reuse_instance,
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let report = runtime.block_on(async {
        match &args.target {
            Some(target) => against_target(&plan, target).await,
            None => against_engine(&plan, args.keep.as_deref()).await,
        }
    })?;
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// How the messages are spread over the connections, and their control ids.
#[derive(Debug)]
struct Plan {
    messages: usize,
    connections: usize,
    /// The destination's `connections`.
    destination_connections: usize,
    /// Whether the plug-in is granted `reuse-instance`.
    reuse_instance: bool,
}

impl Plan {
    /// Messages connection `conn` sends: an even share, the first ones taking the rest.
    fn share(&self, conn: usize) -> usize {
        self.messages / self.connections + usize::from(conn < self.messages % self.connections)
    }

    /// The index of connection `conn`'s first message among all messages.
    fn offset(&self, conn: usize) -> usize {
        conn * (self.messages / self.connections) + conn.min(self.messages % self.connections)
    }

    /// [`Plan::write_control_id`] into a new string.
    #[cfg(test)]
    fn control_id(conn: usize, n: usize) -> String {
        let mut id = String::new();
        Plan::write_control_id(&mut id, conn, n);
        id
    }

    /// Writes MSH-10 of message `n` of connection `conn` into `id`, replacing what it held.
    fn write_control_id(id: &mut String, conn: usize, n: usize) {
        id.clear();
        // Writing to a String cannot fail.
        let _ = write!(id, "B{conn}-{n}");
    }

    /// The patient of message `n` of connection `conn`: each connection cycles through
    /// its own [`PATIENTS`], so one patient's messages arrive in a known order.
    fn patient(&self, conn: usize, n: usize) -> usize {
        conn * PATIENTS + n % PATIENTS
    }

    /// The index among all messages of a control id from [`Plan::write_control_id`].
    fn index_of(&self, control_id: &str) -> Option<usize> {
        let (conn, n) = Plan::parts(control_id)?;
        (conn < self.connections && n < self.share(conn)).then(|| self.offset(conn) + n)
    }

    /// `(conn, n)` of a control id from [`Plan::write_control_id`].
    fn parts(control_id: &str) -> Option<(usize, usize)> {
        let (conn, n) = control_id.strip_prefix('B')?.split_once('-')?;
        Some((conn.parse::<usize>().ok()?, n.parse::<usize>().ok()?))
    }
}

/// Patients per generator connection.
const PATIENTS: usize = 50;

/// Writes into `text` a synthetic SIU^S12 for patient `patient` whose SCH-25 holds a
/// local status word the chain maps.
fn siu_into(text: &mut String, control_id: &str, n: usize, patient: usize) {
    let status = STATUSES[n % STATUSES.len()];
    text.clear();
    // Writing to a String cannot fail.
    let _ = write!(
        text,
        "MSH|^~\\&|BENCH|NORTHSIDE|EHR|NORTHSIDE|20260105083000||SIU^S12^SIU_S12|{control_id}|P|2.5.1\r\
         SCH|{n}^BENCH|{n}^EHR||||NEW|FOLLOWUP^Follow-up visit|ROUTINE|20|MIN|^^^202601050900^202601050920||||||||||||||{status}\r\
         PID|1||MRN{patient}^^^NORTHSIDE^MR||testpatient^bench||19800101|F\r"
    );
}

/// Nanoseconds since the clock was made; every recorded instant is one of these, so
/// instants taken by the generator and by the sink compare directly.
#[derive(Debug, Clone, Copy)]
struct Clock(Instant);

impl Clock {
    fn now(self) -> u64 {
        u64::try_from(self.0.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// Running totals for the progress line.
#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    acked: AtomicU64,
}

// ---------------------------------------------------------------------------------------
// The sink

/// What the sink has received: per message, when it first arrived.
#[derive(Debug)]
struct Sink {
    plan: Arc<Plan>,
    clock: Clock,
    /// Nanoseconds since the start at first arrival, by message index; 0 = not yet.
    arrived: Vec<AtomicU64>,
    delivered: AtomicU64,
    duplicates: AtomicU64,
    /// Frames that were not one of ours (or did not parse).
    unexpected: AtomicU64,
    /// Deliveries whose SCH-25 was not mapped (proof that the chain ran).
    unmapped: AtomicU64,
    /// Per patient, 1 + the highest message number delivered so far.
    patient_high: Vec<AtomicU64>,
    /// First deliveries that arrived after a later message of the same patient.
    out_of_order: AtomicU64,
}

impl Sink {
    fn new(plan: Arc<Plan>, clock: Clock) -> Sink {
        let arrived = (0..plan.messages).map(|_| AtomicU64::new(0)).collect();
        let patient_high = (0..plan.connections * PATIENTS)
            .map(|_| AtomicU64::new(0))
            .collect();
        Sink {
            patient_high,
            out_of_order: AtomicU64::new(0),
            plan,
            clock,
            arrived,
            delivered: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            unexpected: AtomicU64::new(0),
            unmapped: AtomicU64::new(0),
        }
    }

    /// Records a frame and builds its AA.
    ///
    /// The sink reads the three fields it checks straight from the bytes, and answers with
    /// a fixed minimal AA: it stands in for the receiving system, and a full parse and a
    /// full ACK here cost a few percent of the CPU the engine shares with it.
    fn receive(&self, payload: &[u8], ack_ts: &str) -> Option<Bytes> {
        let at = self.clock.now().max(1);
        let control_id = field(payload, b"MSH", 10)
            .filter(|id| !id.is_empty())
            .and_then(|id| std::str::from_utf8(id).ok());
        let Some(control_id) = control_id else {
            self.unexpected.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        if field(payload, b"SCH", 25) != Some(MAPPED.as_bytes()) {
            self.unmapped.fetch_add(1, Ordering::Relaxed);
        }
        match self.plan.index_of(control_id).zip(Plan::parts(control_id)) {
            None => {
                self.unexpected.fetch_add(1, Ordering::Relaxed);
            }
            // At-least-once delivery may repeat a message; its first arrival counts.
            Some((i, (conn, n))) => {
                match self.arrived[i].compare_exchange(0, at, Ordering::Relaxed, Ordering::Relaxed)
                {
                    Ok(_) => {
                        self.delivered.fetch_add(1, Ordering::Relaxed);
                        let high = &self.patient_high[self.plan.patient(conn, n)];
                        if high.fetch_max(n as u64 + 1, Ordering::Relaxed) > n as u64 + 1 {
                            self.out_of_order.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(_) => {
                        self.duplicates.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        Some(Bytes::from(format!(
            "MSH|^~\\&|BENCHSINK|NORTHSIDE|BENCH|NORTHSIDE|{ack_ts}||ACK^S12^ACK|A{control_id}|P|2.5.1\r\
             MSA|AA|{control_id}\r"
        )))
    }
}

/// Field `n` of the first `segment` in `message`, as sent (not unescaped); MSH counts its
/// field separator as MSH-1, as HL7 does. Enough for the bench's own messages and the
/// engine's strict wire form: segments end with CR, and MSH-1 names the field separator.
fn field<'m>(message: &'m [u8], segment: &[u8; 3], n: usize) -> Option<&'m [u8]> {
    let sep = *message.get(3).filter(|_| message.starts_with(b"MSH"))?;
    let mut start = 0;
    let line = loop {
        let rest = message.get(start..)?;
        let end = memchr::memchr(b'\r', rest).map_or(message.len(), |p| start + p);
        let line = &message[start..end];
        if line.starts_with(segment) && line.get(3) == Some(&sep) {
            break line;
        }
        start = end + 1;
    };
    let nth = |n: usize| {
        let mut seps = memchr::memchr_iter(sep, line);
        let mut from = 0;
        for _ in 0..n {
            from = seps.next()? + 1;
        }
        Some(&line[from..seps.next().unwrap_or(line.len())])
    };
    match (segment, n) {
        (b"MSH", 0) => None,
        (b"MSH", 1) => line.get(3..4),
        (b"MSH", n) => nth(n - 1),
        (_, n) => nth(n),
    }
}

// ---------------------------------------------------------------------------------------
// The load generator

/// What one connection measured, by message number within the connection.
#[derive(Debug)]
struct ConnLog {
    sent: Vec<u64>,
    /// When the ACK came back, for messages answered with an AA that names them.
    accepted: Vec<Option<u64>>,
    non_aa: u64,
}

impl ConnLog {
    fn accepted(&self) -> u64 {
        self.accepted.iter().filter(|a| a.is_some()).count() as u64
    }
}

/// Sends connection `conn`'s share over one persistent connection, one message at a time.
async fn connection(
    addr: String,
    conn: usize,
    plan: Arc<Plan>,
    clock: Clock,
    counters: Arc<Counters>,
) -> anyhow::Result<ConnLog> {
    let share = plan.share(conn);
    let mut stream = TcpStream::connect(&addr)
        .await
        .with_context(|| format!("connection {conn}: cannot connect to {addr}"))?;
    stream.set_nodelay(true).context("setting TCP_NODELAY")?;
    let mut codec = MllpCodec::default();
    let (mut out, mut buf) = (BytesMut::with_capacity(1024), BytesMut::with_capacity(1024));
    // One timer for the connection's ACK waits, as the engine's own MLLP code does.
    let mut watchdog = Watchdog::new();
    let mut log = ConnLog {
        sent: Vec::with_capacity(share),
        accepted: Vec::with_capacity(share),
        non_aa: 0,
    };
    let (mut id, mut text) = (String::new(), String::new());
    for n in 0..share {
        Plan::write_control_id(&mut id, conn, n);
        siu_into(&mut text, &id, n, plan.patient(conn, n));
        out.clear();
        codec
            .encode(text.as_bytes(), &mut out)
            .context("framing a message")?;
        let sent = clock.now();
        stream
            .write_all(&out)
            .await
            .with_context(|| format!("connection {conn}: sending {id}"))?;
        counters.sent.fetch_add(1, Ordering::Relaxed);
        let deadline = tokio::time::Instant::now() + ACK_TIMEOUT;
        let reply = watchdog
            .run(deadline, read_frame(&mut stream, &mut codec, &mut buf))
            .await
            .ok_or_else(|| {
                anyhow::anyhow!("connection {conn}: no ACK for {id} within {ACK_TIMEOUT:?}")
            })?
            .with_context(|| format!("connection {conn}: waiting for the ACK of {id}"))?;
        let acked = clock.now();
        counters.acked.fetch_add(1, Ordering::Relaxed);
        log.sent.push(sent);
        if is_aa_for(&reply, &id) {
            log.accepted.push(Some(acked));
        } else {
            log.accepted.push(None);
            log.non_aa += 1;
        }
    }
    Ok(log)
}

/// Reads the next frame; an oversize frame is returned empty (it is no AA anyway).
async fn read_frame(
    stream: &mut TcpStream,
    codec: &mut MllpCodec,
    buf: &mut BytesMut,
) -> anyhow::Result<Bytes> {
    loop {
        match codec.decode(buf)? {
            Some(Frame::Message(payload)) => return Ok(payload),
            Some(Frame::Oversize(_)) => return Ok(Bytes::new()),
            None => {}
        }
        if stream.read_buf(buf).await? == 0 {
            anyhow::bail!("the server closed the connection");
        }
    }
}

/// Whether `reply` is an AA answering `control_id` (MSA-1 and MSA-2), read straight from
/// the bytes: the generator shares the CPU with the engine it measures.
fn is_aa_for(reply: &[u8], control_id: &str) -> bool {
    field(reply, b"MSA", 1) == Some(b"AA") && field(reply, b"MSA", 2) == Some(control_id.as_bytes())
}

/// Runs every connection to the end; the first failure ends the run.
async fn load(
    addr: &str,
    plan: &Arc<Plan>,
    clock: Clock,
    counters: &Arc<Counters>,
) -> anyhow::Result<Vec<ConnLog>> {
    let tasks: Vec<_> = (0..plan.connections)
        .map(|conn| {
            tokio::spawn(connection(
                addr.to_owned(),
                conn,
                plan.clone(),
                clock,
                counters.clone(),
            ))
        })
        .collect();
    let mut logs = Vec::with_capacity(tasks.len());
    for task in tasks {
        logs.push(task.await.context("a load connection panicked")??);
    }
    Ok(logs)
}

/// Prints sent/acked (and delivered) to stderr once a second until `stop`.
fn progress(counters: Arc<Counters>, sink: Option<Arc<Sink>>, stop: CancellationToken) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stop.cancelled() => return,
            }
            let sent = counters.sent.load(Ordering::Relaxed);
            let acked = counters.acked.load(Ordering::Relaxed);
            match &sink {
                Some(sink) => eprintln!(
                    "bench: sent {sent}, acked {acked}, delivered {}",
                    sink.delivered.load(Ordering::Relaxed)
                ),
                None => eprintln!("bench: sent {sent}, acked {acked}"),
            }
        }
    });
}

// ---------------------------------------------------------------------------------------
// The two modes

/// `--target`: the load generator alone.
async fn against_target(plan: &Arc<Plan>, target: &str) -> anyhow::Result<Report> {
    let counters = Arc::new(Counters::default());
    let stop = CancellationToken::new();
    progress(counters.clone(), None, stop.clone());
    let clock = Clock(Instant::now());
    let logs = load(target, plan, clock, &counters).await;
    let span = Span {
        start: 0,
        end: clock.now(),
    };
    stop.cancel();
    Ok(Report::new(
        plan,
        Mode::Target(target.to_owned()),
        &logs?,
        None,
        span,
    ))
}

/// The default: sink, engine and load generator in this process.
async fn against_engine(plan: &Arc<Plan>, keep: Option<&Path>) -> anyhow::Result<Report> {
    let folder = BenchFolder::new(keep)?;
    // One clock for the sink and the generator, so end-to-end latencies are differences
    // on one scale; rates are measured from the load's start (`Span`).
    let clock = Clock(Instant::now());
    let sink = Arc::new(Sink::new(plan.clone(), clock));
    let (sink_addr, sink_stop, sink_task) = start_sink(&sink).await?;

    let config = folder.write_config(sink_addr, plan)?;
    let engine = Engine::build(config, &BuiltinAssets).context("cannot build the bench engine")?;
    let shutdown = CancellationToken::new();
    let running = engine
        .start(shutdown.clone())
        .await
        .context("cannot start the bench engine")?;
    let source = running
        .mllp
        .get("bench")
        .context("the bench interface has no MLLP address")?
        .to_string();

    let counters = Arc::new(Counters::default());
    let stop_progress = CancellationToken::new();
    progress(counters.clone(), Some(sink.clone()), stop_progress.clone());
    let load_start = clock.now();
    let outcome = match load(&source, plan, clock, &counters).await {
        Ok(logs) => {
            let accepted = logs.iter().map(ConnLog::accepted).sum();
            wait_for_deliveries(&sink, accepted).await;
            Ok(logs)
        }
        Err(e) => Err(e),
    };
    let end = clock.now();
    stop_progress.cancel();

    // Stop in the order data flows: sources and workers first, then the sink.
    shutdown.cancel();
    if tokio::time::timeout(SHUTDOWN_TIMEOUT, running.wait())
        .await
        .is_err()
    {
        eprintln!("bench: the engine did not stop within {SHUTDOWN_TIMEOUT:?}");
    }
    drop(engine);
    sink_stop.cancel();
    if tokio::time::timeout(SHUTDOWN_TIMEOUT, sink_task)
        .await
        .is_err()
    {
        eprintln!("bench: the sink did not stop within {SHUTDOWN_TIMEOUT:?}");
    }
    let kept = folder.finish()?;
    let span = Span {
        start: load_start,
        end,
    };
    Ok(Report::new(
        plan,
        Mode::Engine { kept },
        &outcome?,
        Some(&sink),
        span,
    ))
}

/// Waits until the sink has `expected` messages, or nothing has arrived for a while.
async fn wait_for_deliveries(sink: &Sink, expected: u64) {
    let mut last = sink.delivered.load(Ordering::Relaxed);
    let mut last_change = Instant::now();
    while last < expected && last_change.elapsed() < DELIVERY_STALL {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let now = sink.delivered.load(Ordering::Relaxed);
        if now != last {
            (last, last_change) = (now, Instant::now());
        }
    }
    if last < expected {
        eprintln!(
            "bench: gave up waiting: {last} of {expected} delivered, none for {DELIVERY_STALL:?}"
        );
    }
}

type SinkHandle = (
    std::net::SocketAddr,
    CancellationToken,
    tokio::task::JoinHandle<plexus_mllp::ServeSummary>,
);

async fn start_sink(sink: &Arc<Sink>) -> anyhow::Result<SinkHandle> {
    let listener = Listener::bind(
        "127.0.0.1:0".parse().context("sink address")?,
        ListenerConfig::default(),
    )
    .await
    .context("cannot start the sink")?;
    let addr = listener.local_addr();
    let ack_ts: Arc<str> = ack::timestamp(std::time::SystemTime::now()).into();
    let sink = sink.clone();
    let handler = handler_fn(move |payload: Bytes, _peer| {
        let reply = sink.receive(&payload, &ack_ts);
        async move { reply }
    });
    let stop = CancellationToken::new();
    let task = tokio::spawn(listener.serve(Arc::new(handler), stop.clone()));
    Ok((addr, stop, task))
}

/// The bench site's folder: temporary, or the one `--keep` named.
enum BenchFolder {
    Temp(tempfile::TempDir),
    Kept(PathBuf),
}

impl BenchFolder {
    fn new(keep: Option<&Path>) -> anyhow::Result<BenchFolder> {
        let Some(dir) = keep else {
            let temp = tempfile::Builder::new()
                .prefix("plexus-bench-")
                .tempdir()
                .context("cannot create a temporary folder")?;
            return Ok(BenchFolder::Temp(temp));
        };
        // An old journal would flag this run's control ids as duplicates.
        let empty = match std::fs::read_dir(dir) {
            Ok(mut entries) => entries.next().is_none(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(e) => return Err(e).with_context(|| format!("{}", dir.display())),
        };
        anyhow::ensure!(
            empty,
            "{}: not empty; --keep needs a new or empty folder",
            dir.display()
        );
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(BenchFolder::Kept(dir.to_owned()))
    }

    fn path(&self) -> &Path {
        match self {
            BenchFolder::Temp(t) => t.path(),
            BenchFolder::Kept(p) => p,
        }
    }

    /// Writes `bench.toml` (kept with the journal, for `plexus errors --config`) and
    /// loads it.
    fn write_config(
        &self,
        sink: std::net::SocketAddr,
        plan: &Plan,
    ) -> anyhow::Result<plexus_config::Config> {
        let text = bench_config(sink, plan);
        let path = self.path().join("bench.toml");
        std::fs::write(&path, &text).with_context(|| format!("writing {}", path.display()))?;
        plexus_config::Config::from_toml(&text, &path)
            .with_context(|| format!("the generated {} is invalid", path.display()))
    }

    /// Removes a temporary folder; returns a kept one.
    fn finish(self) -> anyhow::Result<Option<PathBuf>> {
        match self {
            BenchFolder::Temp(t) => {
                let shown = t.path().display().to_string();
                t.close().with_context(|| format!("removing {shown}"))?;
                Ok(None)
            }
            BenchFolder::Kept(p) => Ok(Some(p)),
        }
    }
}

/// The bench site: one MLLP interface, a one-field mapping, one MLLP destination (the sink).
fn bench_config(sink: std::net::SocketAddr, plan: &Plan) -> String {
    // The engine closes connections over its cap at once; leave room for all of ours.
    let max_connections = plan.connections.max(128);
    // Several connections to the sink need a field to keep order by: the patient.
    let (order_by, lanes) = match plan.destination_connections {
        0 | 1 => (String::new(), String::new()),
        n => (
            "order_by = \"PID-3-1\"\n".to_owned(),
            format!("connections = {n}\n"),
        ),
    };
    let reuse = if plan.reuse_instance {
        ", \"reuse-instance\""
    } else {
        ""
    };
    format!(
        r#"# Written by `plexus bench`. Ports are chosen at run time, so this file documents the
# run (and serves `plexus errors --config`) rather than being runnable as is.

[engine]
data_dir = "data"

[http]
listen = "127.0.0.1:0"

[tables.visit-status]
file = "builtin:visit-status.csv"

[plugins.visit-status-map]
file = "builtin:visit-status-map"
grants = ["tables:visit-status"{reuse}]

[interfaces.bench]
source = {{ type = "mllp", listen = "127.0.0.1:0", max_connections = {max_connections} }}
chain = ["visit-status-map"]
{order_by}
[[interfaces.bench.destinations]]
name = "sink"
type = "mllp"
connect = "{sink}"
{lanes}"#
    )
}

// ---------------------------------------------------------------------------------------
// The report

#[derive(Debug)]
enum Mode {
    Engine { kept: Option<PathBuf> },
    Target(String),
}

/// Percentiles of a set of durations, in nanoseconds.
#[derive(Debug, Clone, Copy)]
struct Latency {
    p50: u64,
    p99: u64,
    max: u64,
}

impl Latency {
    fn of(mut samples: Vec<u64>) -> Option<Latency> {
        samples.sort_unstable();
        let max = *samples.last()?;
        Some(Latency {
            p50: percentile(&samples, 50),
            p99: percentile(&samples, 99),
            max,
        })
    }

    fn to_json(self) -> serde_json::Value {
        json!({ "p50": ms(self.p50), "p99": ms(self.p99), "max": ms(self.max) })
    }

    fn to_text(self) -> String {
        format!(
            "p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
            ms(self.p50),
            ms(self.p99),
            ms(self.max)
        )
    }
}

/// Nearest-rank percentile of sorted, non-empty samples.
fn percentile(sorted: &[u64], p: usize) -> u64 {
    let rank = (sorted.len() * p).div_ceil(100).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

fn per_second(count: u64, ns: u64) -> f64 {
    if ns == 0 {
        0.0
    } else {
        count as f64 * 1e9 / ns as f64
    }
}

/// The stretch of the clock a run covers: from the first send to the end (the last ACK,
/// or the last delivery waited for).
#[derive(Debug, Clone, Copy)]
struct Span {
    start: u64,
    end: u64,
}

impl Span {
    /// Time from the start to `at`.
    fn until(self, at: u64) -> u64 {
        at.saturating_sub(self.start)
    }
}

/// What the sink saw (default mode only).
#[derive(Debug)]
struct Delivery {
    delivered: u64,
    missing: u64,
    duplicates: u64,
    unexpected: u64,
    unmapped: u64,
    out_of_order: u64,
    /// From the start until the last first arrival.
    elapsed: u64,
    end_to_end: Option<Latency>,
}

#[derive(Debug)]
struct Report {
    mode: Mode,
    messages: usize,
    connections: usize,
    destination_connections: usize,
    reuse_instance: bool,
    cores: usize,
    wall: u64,
    /// Messages answered with any ACK.
    acked: u64,
    /// Of those, ACKs that were not an AA for the message sent.
    non_aa: u64,
    /// From the start until the last AA came back.
    ack_elapsed: u64,
    ack_latency: Option<Latency>,
    delivery: Option<Delivery>,
}

impl Report {
    fn new(plan: &Plan, mode: Mode, logs: &[ConnLog], sink: Option<&Sink>, span: Span) -> Report {
        let mut ack_latency = Vec::with_capacity(plan.messages);
        let mut end_to_end = Vec::with_capacity(plan.messages);
        let mut last_ack = span.start;
        for (conn, log) in logs.iter().enumerate() {
            for (n, (&sent, &accepted)) in log.sent.iter().zip(&log.accepted).enumerate() {
                if let Some(acked) = accepted {
                    ack_latency.push(acked.saturating_sub(sent));
                    last_ack = last_ack.max(acked);
                }
                let arrived = sink.map_or(0, |s| {
                    s.arrived[plan.offset(conn) + n].load(Ordering::Relaxed)
                });
                if arrived != 0 {
                    end_to_end.push(arrived.saturating_sub(sent));
                }
            }
        }
        let delivery = sink.map(|sink| {
            let delivered = sink.delivered.load(Ordering::Relaxed);
            let last = sink
                .arrived
                .iter()
                .map(|a| a.load(Ordering::Relaxed))
                .max()
                .unwrap_or(0);
            Delivery {
                delivered,
                missing: (plan.messages as u64).saturating_sub(delivered),
                duplicates: sink.duplicates.load(Ordering::Relaxed),
                unexpected: sink.unexpected.load(Ordering::Relaxed),
                unmapped: sink.unmapped.load(Ordering::Relaxed),
                out_of_order: sink.out_of_order.load(Ordering::Relaxed),
                elapsed: span.until(last),
                end_to_end: Latency::of(end_to_end),
            }
        });
        Report {
            mode,
            messages: plan.messages,
            connections: plan.connections,
            destination_connections: plan.destination_connections,
            reuse_instance: plan.reuse_instance,
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            wall: span.until(span.end),
            acked: logs.iter().map(|l| l.sent.len() as u64).sum(),
            non_aa: logs.iter().map(|l| l.non_aa).sum(),
            ack_elapsed: span.until(last_ack),
            ack_latency: Latency::of(ack_latency),
            delivery,
        }
    }

    fn accepted(&self) -> u64 {
        self.acked - self.non_aa
    }

    /// Every message AA'd and (in the default mode) delivered, mapped.
    fn passed(&self) -> bool {
        self.acked == self.messages as u64
            && self.non_aa == 0
            && self
                .delivery
                .as_ref()
                .is_none_or(|d| d.missing == 0 && d.unmapped == 0 && d.out_of_order == 0)
    }

    fn to_json(&self) -> serde_json::Value {
        let mut out = json!({
            "mode": match self.mode { Mode::Engine { .. } => "engine", Mode::Target(_) => "target" },
            "cores": self.cores,
            "messages": self.messages,
            "connections": self.connections,
            "wall_seconds": secs(self.wall),
            "acked": self.acked,
            "non_aa_acks": self.non_aa,
            "accepted_per_second": per_second(self.accepted(), self.ack_elapsed),
            "ack_latency_ms": self.ack_latency.map(Latency::to_json),
        });
        match &self.mode {
            Mode::Target(target) => out["target"] = json!(target),
            Mode::Engine { kept } => {
                out["journal"] = json!(JOURNAL);
                out["chain"] = json!(["visit-status-map"]);
                out["instance"] = json!(if self.reuse_instance { "kept" } else { "fresh" });
                out["destination_connections"] = json!(self.destination_connections);
                out["kept"] = json!(kept.as_ref().map(|p| p.display().to_string()));
            }
        }
        if let Some(d) = &self.delivery {
            out["delivered"] = json!(d.delivered);
            out["missing"] = json!(d.missing);
            out["duplicates"] = json!(d.duplicates);
            out["unexpected"] = json!(d.unexpected);
            out["unmapped"] = json!(d.unmapped);
            out["out_of_order"] = json!(d.out_of_order);
            out["delivered_per_second"] = json!(per_second(d.delivered, d.elapsed));
            out["end_to_end_ms"] = json!(d.end_to_end.map(Latency::to_json));
        }
        out
    }

    fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let what = match &self.mode {
            Mode::Engine { .. } => "the engine, in this process".to_owned(),
            Mode::Target(target) => target.clone(),
        };
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "plexus bench: {} messages over {} connections to {what}; {} cores",
            self.messages, self.connections, self.cores
        );
        if let Mode::Engine { .. } = self.mode {
            let instance = if self.reuse_instance {
                "instances kept (reuse-instance granted)"
            } else {
                "a fresh instance per message"
            };
            let _ = writeln!(
                out,
                "  chain                visit-status-map (SCH-25), {instance}; journal {JOURNAL}"
            );
            let lanes = match self.destination_connections {
                1 => "1 connection, arrival order".to_owned(),
                n => {
                    format!("{n} connections, each patient's messages in order (order_by PID-3-1)")
                }
            };
            let _ = writeln!(out, "  to the sink          {lanes}");
        }
        let _ = writeln!(out, "  wall time            {:.2} s", secs(self.wall));
        let _ = writeln!(
            out,
            "  accepted (AA)        {} in {:.2} s = {:.0} msg/s",
            self.accepted(),
            secs(self.ack_elapsed),
            per_second(self.accepted(), self.ack_elapsed)
        );
        if let Some(l) = self.ack_latency {
            let _ = writeln!(out, "  ACK latency          {}", l.to_text());
        }
        if let Some(d) = &self.delivery {
            let _ = writeln!(
                out,
                "  delivered            {} in {:.2} s = {:.0} msg/s",
                d.delivered,
                secs(d.elapsed),
                per_second(d.delivered, d.elapsed)
            );
            if let Some(l) = d.end_to_end {
                let _ = writeln!(out, "  end-to-end latency   {}", l.to_text());
            }
        }
        let _ = writeln!(out, "  non-AA ACKs          {}", self.non_aa);
        if let Some(d) = &self.delivery {
            let _ = writeln!(out, "  missing deliveries   {}", d.missing);
            let _ = writeln!(out, "  SCH-25 not mapped    {}", d.unmapped);
            let _ = writeln!(out, "  patient order broken {}", d.out_of_order);
            if d.duplicates > 0 || d.unexpected > 0 {
                let _ = writeln!(
                    out,
                    "  duplicates           {} (and {} unexpected frames)",
                    d.duplicates, d.unexpected
                );
            }
        }
        if let Mode::Engine { kept: Some(dir) } = &self.mode {
            let _ = writeln!(out, "  site and journal kept in {}", dir.display());
        }
        if !self.passed() {
            let _ = writeln!(
                out,
                "FAILED: not every message was accepted, mapped and delivered in each patient's order"
            );
        }
        out
    }
}

/// How the journal runs; there is no switch to turn it off.
const JOURNAL: &str = "SQLite WAL, synchronous=FULL";

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;
    use plexus_hl7::Message;
    use plexus_hl7::ack::AckCode;

    fn sink(messages: usize, connections: usize) -> Sink {
        let plan = Plan {
            messages,
            connections,
            destination_connections: 1,
            reuse_instance: false,
        };
        Sink::new(Arc::new(plan), Clock(Instant::now()))
    }

    /// What the engine delivers: the bench message with SCH-25 mapped.
    fn delivered(id: &str, n: usize, patient: usize) -> String {
        let mut text = String::new();
        siu_into(&mut text, id, n, patient);
        text.replace(STATUSES[n % STATUSES.len()], MAPPED)
    }

    #[test]
    fn fields_are_numbered_as_hl7_numbers_them() {
        let mut text = String::new();
        siu_into(&mut text, "B3-7", 7, 12);
        let bytes = text.as_bytes();
        let msg = Message::parse(bytes).expect("the bench message parses");
        for (segment, n, path) in [
            (b"MSH", 10, "MSH-10"),
            (b"MSH", 3, "MSH-3"),
            (b"MSH", 2, "MSH-2"),
            (b"SCH", 25, "SCH-25"),
            (b"SCH", 1, "SCH-1"),
            (b"PID", 3, "PID-3"),
        ] {
            let raw = field(bytes, segment, n).map(|f| String::from_utf8_lossy(f).into_owned());
            let parsed = msg.get(path).expect("path").map(|v| v.into_owned());
            // SCH-1 and PID-3 hold components: compare the whole field as sent.
            let whole = msg
                .segments()
                .find(|s| s.name().as_bytes() == segment)
                .and_then(|s| s.field(if segment == b"MSH" { n - 1 } else { n } as u32))
                .map(|f| f.text().into_owned());
            assert!(
                raw == parsed || raw == whole,
                "{path}: {raw:?} vs {parsed:?}"
            );
        }
        assert_eq!(
            field(bytes, b"MSH", 1),
            Some(&b"|"[..]),
            "MSH-1 is the separator"
        );
        assert_eq!(field(bytes, b"MSH", 0), None);
        assert_eq!(field(bytes, b"SCH", 99), None);
        assert_eq!(field(bytes, b"OBX", 1), None);
        assert_eq!(field(b"not hl7", b"MSH", 10), None);
    }

    #[test]
    fn the_sink_counts_what_arrives_and_its_ack_is_an_aa_for_the_message() {
        let sink = sink(4, 2);
        let id = Plan::control_id(1, 0);
        let ack = sink
            .receive(delivered(&id, 0, 3).as_bytes(), "20260105083000")
            .expect("an ACK");
        // The engine's sender reads the ACK with the real parser.
        let parsed = Message::parse(&ack).expect("the sink's ACK parses");
        assert_eq!(
            AckCode::of_ack(&parsed),
            Some((AckCode::AA, Some(id.clone())))
        );
        assert!(is_aa_for(&ack, &id));
        assert!(!is_aa_for(&ack, "B1-1"));
        assert_eq!(sink.delivered.load(Ordering::Relaxed), 1);
        assert_eq!(sink.unmapped.load(Ordering::Relaxed), 0);
        // Again: a duplicate. Unmapped: counted. Not ours: unexpected, still answered.
        sink.receive(delivered(&id, 0, 3).as_bytes(), "20260105083000");
        let mut unmapped = String::new();
        siu_into(&mut unmapped, &Plan::control_id(0, 1), 1, 1);
        sink.receive(unmapped.as_bytes(), "20260105083000");
        assert!(
            sink.receive(delivered("X9", 0, 3).as_bytes(), "20260105083000")
                .is_some()
        );
        assert!(sink.receive(b"garbage", "20260105083000").is_none());
        assert_eq!(sink.delivered.load(Ordering::Relaxed), 2);
        assert_eq!(sink.duplicates.load(Ordering::Relaxed), 1);
        assert_eq!(sink.unmapped.load(Ordering::Relaxed), 1);
        assert_eq!(sink.unexpected.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn an_ack_that_is_not_an_aa_for_the_message_is_not_counted_as_one() {
        let aa = "MSH|^~\\&|E|F|B|N|20260105083000||ACK|9|P|2.5.1\rMSA|AA|B0-1\r";
        assert!(is_aa_for(aa.as_bytes(), "B0-1"));
        assert!(!is_aa_for(aa.as_bytes(), "B0-10"));
        assert!(!is_aa_for(aa.replace("|AA|", "|AE|").as_bytes(), "B0-1"));
        assert!(!is_aa_for(aa.replace("MSA", "ERR").as_bytes(), "B0-1"));
        assert!(!is_aa_for(b"", "B0-1"));
    }

    #[test]
    fn every_message_has_one_index_and_shares_add_up() {
        let plan = Plan {
            messages: 10,
            connections: 4,
            destination_connections: 1,
            reuse_instance: false,
        };
        let shares: Vec<_> = (0..4).map(|c| plan.share(c)).collect();
        assert_eq!(shares, [3, 3, 2, 2]);
        let mut indexes: Vec<_> = (0..4)
            .flat_map(|c| (0..plan.share(c)).map(move |n| (c, n)))
            .map(|(c, n)| plan.index_of(&Plan::control_id(c, n)).expect("ours"))
            .collect();
        indexes.sort_unstable();
        assert_eq!(indexes, (0..10).collect::<Vec<_>>());
        for stranger in ["B4-0", "B0-3", "B3-2", "X0-0", "B0", "B-1-0", ""] {
            assert_eq!(plan.index_of(stranger), None, "{stranger}");
        }
    }

    #[test]
    fn the_bench_site_loads_with_one_or_several_sink_connections() {
        let sink: std::net::SocketAddr = "127.0.0.1:9".parse().expect("addr");
        for (lanes, reuse_instance) in [(1, false), (4, false), (1, true)] {
            let plan = Plan {
                messages: 10,
                connections: 2,
                destination_connections: lanes,
                reuse_instance,
            };
            let config =
                plexus_config::Config::from_toml(&bench_config(sink, &plan), Path::new("b.toml"))
                    .unwrap_or_else(|e| panic!("{lanes} connection(s): {e}"));
            let iface = &config.interfaces["bench"];
            assert_eq!(iface.destinations[0].connections, lanes as u32);
            assert_eq!(iface.order_by.is_some(), lanes > 1);
            let grants = &config.plugins["visit-status-map"].grants;
            assert_eq!(grants.reuse_instance, reuse_instance);
        }
        let plan = Plan {
            messages: 200,
            connections: 3,
            destination_connections: 1,
            reuse_instance: false,
        };
        // Each patient belongs to one generator connection and recurs every PATIENTS.
        assert_eq!(plan.patient(2, 7), plan.patient(2, 7 + PATIENTS));
        assert_ne!(plan.patient(1, 7), plan.patient(2, 7));
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let samples: Vec<u64> = (1..=200).collect();
        let l = Latency::of(samples).expect("samples");
        assert_eq!((l.p50, l.p99, l.max), (100, 198, 200));
        let one = Latency::of(vec![7]).expect("one sample");
        assert_eq!((one.p50, one.p99, one.max), (7, 7, 7));
        assert!(Latency::of(Vec::new()).is_none());
    }
}
