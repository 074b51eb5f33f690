//! Delivery: one worker per interface and destination, draining that destination's queue
//! in the journal.
//!
//! * **FIFO, block** (the default): the queue is served in arrival order; when the head
//!   fails it is retried after a backoff and nothing behind it moves until it succeeds or
//!   uses up its attempts (then it goes to the error queue and the next one moves up).
//! * **FIFO, skip** and **unordered**: a failing message waits for its retry on its own;
//!   messages behind it keep flowing.
//!
//! A destination with `connections = N` gets N workers, one per connection, each serving
//! its lane of the queue as above. With `order_by` a message's lane is its order key
//! modulo N, so the messages of one key (one patient) keep their order and a failing head
//! holds back its own lane only; an unordered interface spreads messages by id.
//!
//! Every attempt is recorded; results of a batch are committed together. A crash between
//! a send and its record means the message is sent again after the restart: delivery is
//! at least once, and a receiver sees the same MSH-10. The restarted engine flags such
//! possible resends first (see [`crate::DataDirLock`] and [`UNRECORDED_WINDOW`]).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use plexus_config::{
    Destination, DestinationKind, ErrorAck, HeadFailure, Interface, MAX_DESTINATION_CONNECTIONS,
    Ordering, Retry,
};
use plexus_journal::{
    Attempt, DeliveryResult, ErrorKind, ErrorReport, LaneKey, Lanes, MessageId, PendingDelivery,
};
use plexus_mllp::{ErrorAckPolicy, Sender, SenderConfig, error_chain};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::engine::{Iface, Shared};
use crate::feed::{Feed, Take};
use crate::metrics::DeliveryOutcome;

/// Deliveries read from the journal at a time.
const BATCH: usize = 128;

/// The most deliveries a lane can have sent without their results committed: the batch
/// being sent and the one before it, whose commit runs meanwhile. After an unclean stop
/// this many of each lane's next sends are flagged as possible resends.
pub(crate) const UNRECORDED_WINDOW: usize = 2 * BATCH;

/// How long a send under way at shutdown may take to be answered before the engine stops
/// without knowing whether it arrived.
const SHUTDOWN_SEND_GRACE: Duration = Duration::from_secs(5);
/// How often an idle worker wakes without being woken, to look for work enqueued by
/// another process (`plexus errors replay`) and retries coming due: in the journal when
/// its feed is out of sync or older than the feed's refresh interval.
const POLL: Duration = Duration::from_millis(250);
/// Pause after a journal failure before trying again.
const JOURNAL_BACKOFF: Duration = Duration::from_secs(1);

/// How one send failed.
#[derive(Debug)]
pub(crate) enum SendFailure {
    /// May work later (connection refused, timeout, 5xx).
    Retryable(String),
    /// May work later, and the destination may have the message already: it was sent
    /// and no answer settled it (an MLLP ACK timeout, an HTTP request that timed out).
    Unanswered(String),
    /// Will not work by resending (AR, 4xx, unframeable).
    Permanent(String),
}

/// How many connections (lanes) a destination is served with. A file destination
/// writes one message at a time.
pub(crate) fn lane_count(dest: &Destination) -> u32 {
    match dest.kind {
        DestinationKind::File { .. } => 1,
        _ => dest.connections.clamp(1, MAX_DESTINATION_CONNECTIONS),
    }
}

/// How a destination's queue is split, one lane per connection.
pub(crate) fn lanes(iface: &Interface, dest: &Destination) -> Lanes {
    // The config refuses several connections on a FIFO interface without `order_by`; a
    // message without the field has no key and goes to lane 0.
    let key = match iface.ordering {
        Ordering::Unordered => LaneKey::MessageId,
        Ordering::Fifo => LaneKey::OrderKey,
    };
    Lanes {
        count: lane_count(dest),
        key,
    }
}

/// One lane of a destination's queue, as its worker sees it: woken when work is
/// enqueued, and fed what was just committed (see `feed`).
#[derive(Debug)]
pub(crate) struct Lane {
    pub wake: Notify,
    pub feed: Feed,
}

impl Lane {
    /// `feeding`: whether the journal answers ingests in commit order.
    pub(crate) fn new(feeding: bool) -> Lane {
        Lane {
            wake: Notify::new(),
            feed: Feed::new(feeding),
        }
    }
}

pub(crate) struct Worker {
    shared: Arc<Shared>,
    iface: Arc<Iface>,
    dest: Destination,
    /// The lane of the destination's queue this worker serves.
    lane: u32,
    signals: Arc<Lane>,
    shutdown: CancellationToken,
}

impl Worker {
    pub(crate) fn new(
        shared: Arc<Shared>,
        iface: Arc<Iface>,
        dest: Destination,
        lane: u32,
        shutdown: CancellationToken,
    ) -> Self {
        let signals = iface.lanes[dest.name.as_str()][lane as usize].clone();
        Worker {
            shared,
            iface,
            dest,
            lane,
            signals,
            shutdown,
        }
    }

    /// Whether later messages may pass a failing one.
    fn passing(&self) -> bool {
        self.iface.config.ordering == Ordering::Unordered
            || self.iface.config.retry.on_head_failure == HeadFailure::Skip
    }

    pub(crate) async fn run(self) {
        let mut connector = match Connector::new(&self.dest, &self.iface.config) {
            Ok(c) => c,
            Err(reason) => {
                tracing::error!(interface = %self.iface.name, destination = %self.dest.name, "destination cannot start: {reason}");
                return;
            }
        };
        let name = self.dest.name.to_string();
        let passing = self.passing();
        let lane = self.lane;
        tracing::debug!(interface = %self.iface.name, destination = %name, passing, lane, "delivery worker started");
        // A batch that was all delivered is committed while the next one is sent: its
        // messages are still pending in the journal until then, so the next read skips
        // them. Anything else (a retry, a failure) is committed before the next read, which
        // must see its new status and retry time.
        let mut recording: Option<Recording> = None;
        while !self.shutdown.is_cancelled() {
            let now = SystemTime::now();
            let journal = self.shared.journal.clone();
            let (iface, dest) = (self.iface.name.clone(), name.clone());
            // Still pending in the journal until its commit lands.
            let in_flight: Vec<MessageId> = recording
                .as_ref()
                .map(|r| r.ids.iter().copied().collect())
                .unwrap_or_default();
            let batch = match self.signals.feed.take(BATCH) {
                Take::Fed(fed) => fed
                    .into_iter()
                    .map(|f| (f.pending, Ok(f.payload)))
                    .collect::<Vec<_>>(),
                Take::Check => {
                    // The head of the lane, without the messages, to hold the feed against.
                    let head = tokio::task::spawn_blocking(move || {
                        let due = passing.then_some(now);
                        journal.next_in_lane(&iface, &dest, lane, due, &in_flight, BATCH)
                    })
                    .await;
                    match head {
                        Ok(Ok(head)) => self.signals.feed.confirm(&head),
                        // The read that follows reports it.
                        Ok(Err(_)) | Err(_) => self.signals.feed.stop(),
                    }
                    continue;
                }
                Take::Read => {
                    // The queue and the payloads in one trip to the blocking pool.
                    let read = tokio::task::spawn_blocking(move || {
                        let due = passing.then_some(now);
                        let pending =
                            journal.next_in_lane(&iface, &dest, lane, due, &in_flight, BATCH)?;
                        let ids: Vec<MessageId> = pending.iter().map(|p| p.id).collect();
                        let payloads = journal.payloads(&ids)?;
                        Ok::<_, plexus_journal::Error>((
                            pending.into_iter().zip(payloads).collect::<Vec<_>>(),
                            in_flight,
                        ))
                    })
                    .await;
                    match read {
                        Ok(Ok((batch, skipped))) => {
                            let read: Vec<&PendingDelivery> =
                                batch.iter().map(|(p, _)| p).collect();
                            self.signals
                                .feed
                                .synced(&read, &skipped, batch.len() < BATCH);
                            batch
                        }
                        Ok(Err(err)) => {
                            self.signals.feed.stop();
                            tracing::error!(interface = %self.iface.name, destination = %name, "cannot read the delivery queue: {err}");
                            self.pause(JOURNAL_BACKOFF).await;
                            continue;
                        }
                        Err(err) => {
                            self.signals.feed.stop();
                            tracing::error!("delivery worker task failed: {err}");
                            self.pause(JOURNAL_BACKOFF).await;
                            continue;
                        }
                    }
                }
            };
            if batch.is_empty() {
                if let Some(done) = recording.take() {
                    // Nothing new behind it: let it land before looking again.
                    done.finish(&self.shared.unrecorded_results).await;
                    continue;
                }
                tokio::select! {
                    () = self.signals.wake.notified() => {}
                    () = tokio::time::sleep(POLL) => {}
                    () = self.shutdown.cancelled() => {}
                }
                continue;
            }
            let mut attempts = Vec::new();
            let mut wait_until = None;
            let batch_len = batch.len();
            for (pending, payload) in batch {
                if let Some(next_at) = pending.next_at
                    && next_at > now
                {
                    // Only a blocking queue sees retries that are not due.
                    wait_until = Some(next_at);
                    break;
                }
                let Some(attempt) = self.attempt(&mut connector, &pending, payload).await else {
                    break; // shutting down
                };
                let blocked = !passing && matches!(attempt.result, DeliveryResult::Retry { .. });
                attempts.push(attempt);
                if blocked {
                    break;
                }
            }
            // One commit in flight at a time, in order.
            if let Some(done) = recording.take() {
                done.finish(&self.shared.unrecorded_results).await;
            }
            let clean = wait_until.is_none()
                && attempts.len() == batch_len
                && attempts
                    .iter()
                    .all(|a| matches!(a.result, DeliveryResult::Delivered));
            if !clean {
                // What is still owed is the journal's to say (a retry, a batch cut short);
                // the feed knows only what was committed since.
                self.signals.feed.stop();
            }
            if !attempts.is_empty() {
                for attempt in &attempts {
                    let outcome = match attempt.result {
                        DeliveryResult::Delivered => DeliveryOutcome::Delivered,
                        DeliveryResult::Retry { .. } => DeliveryOutcome::Retry,
                        DeliveryResult::Failed { .. } => DeliveryOutcome::Failed,
                    };
                    self.iface.metrics.delivery(&name, outcome);
                    if attempt.error.is_some() {
                        self.iface.metrics.errored(ErrorKind::Destination);
                    }
                }
                if clean && !self.shutdown.is_cancelled() {
                    recording = Some(self.record_in_background(attempts));
                } else {
                    self.record(attempts).await;
                }
            }
            if let Some(at) = wait_until {
                let wait = at.duration_since(SystemTime::now()).unwrap_or_default();
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = self.shutdown.cancelled() => {}
                }
            }
        }
        if let Some(done) = recording.take() {
            done.finish(&self.shared.unrecorded_results).await;
        }
        connector.close().await;
        tracing::debug!(interface = %self.iface.name, destination = %name, "delivery worker stopped");
    }

    async fn pause(&self, d: Duration) {
        tokio::select! {
            () = tokio::time::sleep(d) => {}
            () = self.shutdown.cancelled() => {}
        }
    }

    /// Sends one message; `None` when shutdown interrupted the send (nothing recorded:
    /// it is sent again after the restart).
    async fn attempt(
        &self,
        connector: &mut Connector,
        pending: &PendingDelivery,
        payload: plexus_journal::Result<Vec<u8>>,
    ) -> Option<Attempt> {
        let id = pending.id;
        let payload = match payload {
            // Sent as a strict receiver expects it, whatever terminators, byte order mark
            // or blank lines the sender used (the journal keeps the bytes as received).
            Ok(payload) => plexus_hl7::wire_form(&payload).unwrap_or(payload),
            Err(err) => {
                return Some(self.failed(
                    id,
                    format!("cannot read the message from the journal: {err}"),
                ));
            }
        };
        if self.shutdown.is_cancelled() {
            return None;
        }
        let sent = {
            let send = connector.send(pending, payload);
            tokio::pin!(send);
            tokio::select! {
                sent = &mut send => Some(sent),
                () = self.shutdown.cancelled() => {
                    // A send under way may already have reached the receiver: its answer
                    // says whether it did, so it gets a grace to finish and be recorded.
                    tokio::time::timeout(SHUTDOWN_SEND_GRACE, &mut send).await.ok()
                }
            }
        };
        let Some(sent) = sent else {
            if connector.may_have_delivered() {
                tracing::warn!(interface = %self.iface.name, destination = %self.dest.name, %id, "stopping with a send unanswered: the next start flags it as a possible resend");
                self.shared
                    .unrecorded_results
                    .store(true, std::sync::atomic::Ordering::SeqCst);
            }
            return None;
        };
        let attempt_no = pending.attempts.saturating_add(1);
        let result = match sent {
            Ok(()) => {
                tracing::debug!(interface = %self.iface.name, destination = %self.dest.name, %id, "delivered");
                return Some(Attempt {
                    id,
                    destination: self.dest.name.to_string(),
                    result: DeliveryResult::Delivered,
                    error: None,
                });
            }
            Err(SendFailure::Permanent(reason)) => reason,
            Err(SendFailure::Retryable(reason)) => {
                return Some(self.retry_or_give_up(id, attempt_no, reason, false));
            }
            Err(SendFailure::Unanswered(reason)) => {
                return Some(self.retry_or_give_up(id, attempt_no, reason, true));
            }
        };
        Some(self.failed(id, result))
    }

    /// After a retryable failure: the next try, or, once the attempts are used up, the
    /// failure that sends the message to the error queue.
    fn retry_or_give_up(
        &self,
        id: MessageId,
        attempt_no: u32,
        reason: String,
        may_have_arrived: bool,
    ) -> Attempt {
        let retry = &self.iface.config.retry;
        if attempt_no < retry.max_attempts {
            let wait = backoff(retry, attempt_no);
            tracing::warn!(
                interface = %self.iface.name,
                destination = %self.dest.name,
                %id,
                attempt = attempt_no,
                retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                "delivery failed, will retry: {}",
                crate::chain::masked_delivery_error(&reason)
            );
            return Attempt {
                id,
                destination: self.dest.name.to_string(),
                result: DeliveryResult::Retry {
                    error: reason,
                    next_at: SystemTime::now() + wait,
                    may_have_arrived,
                },
                error: None,
            };
        }
        self.failed_after(
            id,
            format!("gave up after {attempt_no} attempt(s): {reason}"),
            may_have_arrived,
        )
    }

    fn failed(&self, id: MessageId, reason: String) -> Attempt {
        self.failed_after(id, reason, false)
    }

    /// [`failed`](Self::failed), saying whether the last attempt may have reached the
    /// destination (see [`DeliveryResult::Failed`]).
    fn failed_after(&self, id: MessageId, reason: String, may_have_arrived: bool) -> Attempt {
        tracing::warn!(
            interface = %self.iface.name,
            destination = %self.dest.name,
            %id,
            "delivery failed; message held in the error queue: {}",
            crate::chain::masked_delivery_error(&reason)
        );
        Attempt {
            id,
            destination: self.dest.name.to_string(),
            result: DeliveryResult::Failed {
                error: reason.clone(),
                may_have_arrived,
            },
            error: Some(ErrorReport {
                message: id,
                stage: format!("destination:{}", self.dest.name),
                kind: ErrorKind::Destination,
                reason,
                path: None,
            }),
        }
    }

    /// [`record`](Self::record) on a task of its own, so the next batch can be sent
    /// while the commit's fsync runs.
    fn record_in_background(&self, attempts: Vec<Attempt>) -> Recording {
        let ids = attempts.iter().map(|a| a.id).collect();
        let recorder = self.recorder();
        Recording {
            ids,
            task: tokio::spawn(async move { recorder.record(attempts).await }),
        }
    }

    /// Commits a batch of results, retrying until the journal takes them (or shutdown).
    async fn record(&self, attempts: Vec<Attempt>) {
        self.recorder().record(attempts).await;
    }

    fn recorder(&self) -> Recorder {
        Recorder {
            journal: self.shared.journal.clone(),
            destination: self.dest.name.to_string(),
            shutdown: self.shutdown.clone(),
            unrecorded: self.shared.unrecorded_results.clone(),
        }
    }
}

/// A batch of results being committed in the background.
struct Recording {
    /// The messages it covers: still pending in the journal until it lands.
    ids: HashSet<MessageId>,
    task: tokio::task::JoinHandle<()>,
}

impl Recording {
    /// Waits for the commit; a task that failed leaves its results unrecorded, which
    /// `unrecorded` (the engine's `unrecorded_results`) is told.
    async fn finish(self, unrecorded: &std::sync::atomic::AtomicBool) {
        if let Err(err) = self.task.await {
            tracing::error!("delivery results task failed: {err}");
            unrecorded.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

/// What committing delivery results needs, apart from the worker.
struct Recorder {
    journal: Arc<dyn plexus_journal::Journal>,
    destination: String,
    shutdown: CancellationToken,
    /// Set when results are given up at shutdown (see `Shared::unrecorded_results`).
    unrecorded: Arc<std::sync::atomic::AtomicBool>,
}

impl Recorder {
    /// Commits a batch of results, retrying until the journal takes them (or shutdown):
    /// dropping them would only mean sending the messages again, but retrying keeps
    /// duplicates down.
    async fn record(&self, attempts: Vec<Attempt>) {
        loop {
            // Answered once the group commit is durable; no thread waits for the fsync.
            let (reply, answer) = tokio::sync::oneshot::channel();
            self.journal.record_attempts_detached(
                attempts.clone(),
                Box::new(move |result| {
                    // The worker may have stopped; nothing to do then.
                    let _ = reply.send(result);
                }),
            );
            match answer.await {
                Ok(Ok(())) => return,
                Ok(Err(err)) => {
                    tracing::error!(destination = %self.destination, "cannot record delivery results: {err}")
                }
                Err(_) => {
                    tracing::error!(destination = %self.destination, "the journal dropped a batch of delivery results")
                }
            }
            if self.shutdown.is_cancelled() {
                self.unrecorded
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                return;
            }
            tokio::select! {
                () = tokio::time::sleep(JOURNAL_BACKOFF) => {}
                () = self.shutdown.cancelled() => {}
            }
        }
    }
}

/// The wait before attempt `failed + 1`: `initial * 2^(failed-1)`, capped, and with
/// jitter drawn from the upper half so retries of many queues spread out.
pub(crate) fn backoff(retry: &Retry, failed: u32) -> Duration {
    let doublings = failed.saturating_sub(1).min(30);
    let base = retry
        .initial_backoff
        .saturating_mul(1 << doublings)
        .min(retry.max_backoff);
    if retry.jitter {
        let half = base / 2;
        let spread = u64::try_from(half.as_micros()).unwrap_or(u64::MAX);
        half + Duration::from_micros(rand::random_range(0..=spread))
    } else {
        base
    }
}

/// A connection (or handle) to one destination.
enum Connector {
    Mllp(Box<Sender>),
    File(FileWriter),
    Http(crate::http::HttpSender),
}

/// Builds every destination's connection settings once (TLS roots read, server names
/// checked), so a destination that could never send fails the start, and `plexus check`,
/// instead of leaving its queue to grow behind one ERROR line.
pub(crate) fn check_destinations(config: &plexus_config::Config) -> Result<(), crate::BuildError> {
    for (name, iface) in &config.interfaces {
        for dest in &iface.destinations {
            Connector::new(dest, iface).map_err(|reason| crate::BuildError::Destination {
                interface: name.to_string(),
                destination: dest.name.to_string(),
                reason,
            })?;
        }
    }
    Ok(())
}

impl Connector {
    fn new(dest: &Destination, iface: &plexus_config::Interface) -> Result<Connector, String> {
        Ok(match &dest.kind {
            DestinationKind::Mllp {
                connect,
                ack_timeout,
                ne_wait,
                er_wait,
                tls,
            } => {
                let config = SenderConfig {
                    ack_timeout: *ack_timeout,
                    ne_wait: *ne_wait,
                    unasked_wait: *er_wait,
                    // Retries are the worker's, with the interface's policy.
                    attempts: 1,
                    on_error_ack: match iface.error_ack {
                        ErrorAck::Permanent => ErrorAckPolicy::Permanent,
                        ErrorAck::Retry => ErrorAckPolicy::Retry,
                    },
                    // Messages go out in the charset they came in: an empty MSH-18 means
                    // the interface's `charset` on this side too.
                    charset: crate::engine::hl7_charset(iface.charset),
                    ..SenderConfig::default()
                };
                let mut sender = Sender::new(connect.clone(), config);
                if let Some(tls) = tls {
                    let client = plexus_mllp::tls::client_config_from_pem(&tls.ca)
                        .map_err(|e| error_chain(&e))?;
                    let host = tls.server_name.clone().unwrap_or_else(|| {
                        connect
                            .rsplit_once(':')
                            .map_or(connect.as_str(), |(h, _)| h)
                            .trim_matches(['[', ']'])
                            .to_owned()
                    });
                    let name = plexus_mllp::tls::server_name(&host).map_err(|e| e.to_string())?;
                    sender = sender.with_tls(client, name);
                }
                Connector::Mllp(Box::new(sender))
            }
            DestinationKind::File { dir } => Connector::File(FileWriter { dir: dir.clone() }),
            DestinationKind::Http { url, tls } => {
                Connector::Http(crate::http::HttpSender::new(url, tls.as_ref())?)
            }
        })
    }

    async fn send(
        &mut self,
        pending: &PendingDelivery,
        payload: Vec<u8>,
    ) -> Result<(), SendFailure> {
        match self {
            // Journaled payloads parsed at intake, or are the chain's own output.
            Connector::Mllp(sender) => {
                sender.send_parsed(&payload).await.map(|_| ()).map_err(|e| {
                    // The engine retries itself (one attempt per send): name the cause first,
                    // not an attempt count that reads against the engine's own.
                    // The error queue files it under the message already: its MSH-10
                    // in the reason would make every message of one problem (a receiver
                    // refusing the whole feed) a group of its own.
                    let mut reason = match &e {
                        plexus_mllp::SendError::Exhausted {
                            peer,
                            attempts: 1,
                            last,
                            ..
                        } => format!("{peer}: {}", error_chain(last)),
                        plexus_mllp::SendError::Rejected { peer, ack, .. } => {
                            format!("{peer} rejected the message ({})", ack.code())
                        }
                        plexus_mllp::SendError::ApplicationError { peer, ack, .. } => {
                            format!("{peer} returned an error for the message ({})", ack.code())
                        }
                        plexus_mllp::SendError::Unframeable { peer, source, .. } => format!(
                            "the message cannot be framed for {peer}; not sent: {}",
                            error_chain(source)
                        ),
                        _ => error_chain(&e),
                    };
                    // What the receiver said about it, for the operator (masked in views and
                    // kept out of logs: it may quote the message).
                    if let Some(words) = e.ack().and_then(plexus_mllp::Ack::reason) {
                        reason.push_str(crate::chain::RECEIVER_WORDS);
                        reason.push_str(&words);
                    }
                    if e.may_have_arrived() {
                        SendFailure::Unanswered(reason)
                    } else if e.is_retryable() {
                        SendFailure::Retryable(reason)
                    } else {
                        SendFailure::Permanent(reason)
                    }
                })
            }
            Connector::File(writer) => writer.write(pending, payload).await,
            Connector::Http(sender) => sender.send(payload).await,
        }
    }

    async fn close(&mut self) {
        if let Connector::Mllp(sender) = self {
            sender.close().await;
        }
    }

    /// Whether a send cut off part way may still have reached the destination: an MLLP
    /// send that was still connecting cannot have; a file or HTTP one is taken to.
    fn may_have_delivered(&self) -> bool {
        match self {
            Connector::Mllp(sender) => sender.may_have_delivered(),
            Connector::File(_) | Connector::Http(_) => true,
        }
    }
}

/// Writes one file per message: to a temporary name, synced, then renamed into place, so
/// a reader never sees a partial file. The name is fixed per message
/// (`<received ms>-<journal id>.hl7`), so a resend after a crash overwrites rather than
/// duplicates.
struct FileWriter {
    dir: PathBuf,
}

impl FileWriter {
    async fn write(&self, pending: &PendingDelivery, payload: Vec<u8>) -> Result<(), SendFailure> {
        let dir = self.dir.clone();
        let received = pending
            .received_at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let name = format!("{received:013}-{:010}.hl7", pending.id.0);
        let shown = dir.display().to_string();
        tokio::task::spawn_blocking(move || write_atomically(&dir, &name, &payload))
            .await
            .map_err(|e| SendFailure::Retryable(format!("internal error: {e}")))?
            .map_err(|e| SendFailure::Retryable(format!("cannot write to {shown}: {e}")))
    }
}

fn write_atomically(dir: &std::path::Path, name: &str, payload: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(payload)?;
    file.sync_data()?;
    drop(file);
    std::fs::rename(&tmp, dir.join(name))?;
    // Make the rename itself durable.
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_jitters_within_the_upper_half() {
        let mut retry = Retry {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            jitter: false,
            ..Retry::default()
        };
        let waits: Vec<u128> = (1..=6).map(|n| backoff(&retry, n).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff(&retry, u32::MAX), Duration::from_secs(1));
        retry.jitter = true;
        for n in 1..=6 {
            let full = Duration::from_millis(waits[n - 1] as u64);
            let got = backoff(&retry, n as u32);
            assert!(
                got >= full / 2 && got <= full,
                "attempt {n}: {got:?} vs {full:?}"
            );
        }
    }
}
