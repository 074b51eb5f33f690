//! End-to-end tests of the pipeline in one process: real plug-ins, a real journal, MLLP
//! and HTTP sources, MLLP and file destinations, and a test receiver that can be down.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use plexus_hl7::Message;
use plexus_hl7::ack::{self, AckCode, Status};
use plexus_journal::{DeliveryStatus, ErrorFilter, ErrorKind, MessageId};
use plexus_mllp::{Listener, ListenerConfig, Sender, SenderConfig, handler_fn};
use plexus_pipeline::{Engine, FsAssets, ReplayOutcome, Running};
use tokio_util::sync::CancellationToken;

const STATUS_CSV: &str = "key,value\narrived,Started\n\"checked in\",Started\nroomed,Started\nready,Started\nbooked,Booked\n";

/// A site in a temp folder: the two demo plug-ins, one MLLP interface to an MLLP
/// receiver and a folder.
struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new() -> Site {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("visit-status.csv"), STATUS_CSV).expect("csv");
        Site { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn outbox(&self) -> PathBuf {
        self.path().join("outbox")
    }

    /// The config, with the receiver at `emr` and `extra` TOML appended to the interface.
    fn config(&self, emr: SocketAddr, extra: &str) -> plexus_config::Config {
        let text = format!(
            r#"
[engine]
data_dir = "data"

[http]
listen = "127.0.0.1:0"

[tables.visit-status]
file = "visit-status.csv"

[plugins.demographics-normalize]
file = "{demo}"

[plugins.visit-status-map]
file = "{status}"
grants = ["tables:visit-status"]

[interfaces.scheduling]
source = {{ type = "mllp", listen = "127.0.0.1:0" }}
chain = ["demographics-normalize", "visit-status-map"]
{extra}

[[interfaces.scheduling.destinations]]
name = "archive"
type = "file"
dir = "outbox"

[[interfaces.scheduling.destinations]]
name = "emr"
type = "mllp"
connect = "{emr}"
ack_timeout = "2s"

[interfaces.scheduling.retry]
max_attempts = 1000
initial_backoff = "20ms"
max_backoff = "200ms"

[interfaces.intake]
source = {{ type = "http", path = "/ingest/intake" }}
chain = ["visit-status-map"]
destinations = [{{ name = "inbox", type = "file", dir = "http-outbox" }}]
"#,
            demo = plexus_test_artifacts::DEMOGRAPHICS_NORMALIZE,
            status = plexus_test_artifacts::VISIT_STATUS_MAP,
        );
        plexus_config::Config::from_toml(&text, &self.path().join("site.toml"))
            .unwrap_or_else(|e| panic!("config: {e}"))
    }
}

/// An MLLP receiver that ACKs (AA) everything and records MSH-10s in arrival order.
struct Receiver {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<String>>>,
    stop: CancellationToken,
}

impl Receiver {
    async fn start(addr: SocketAddr) -> Receiver {
        let listener = Listener::bind(addr, ListenerConfig::default())
            .await
            .expect("bind receiver");
        let addr = listener.local_addr();
        let received = Arc::new(Mutex::new(Vec::new()));
        let seen = received.clone();
        let stop = CancellationToken::new();
        let handler = handler_fn(move |payload: Bytes, _peer| {
            let seen = seen.clone();
            async move {
                // Latin-1 without MSH-18 too, as a legacy receiver reads it.
                let msg = Message::parse(&payload)
                    .or_else(|_| Message::parse_with_charset(&payload, plexus_hl7::Charset::Latin1))
                    .ok()?;
                seen.lock()
                    .expect("lock")
                    .push(msg.control_id().unwrap_or_default().into_owned());
                ack::acknowledge(&msg, Status::Accepted, None, "RCV", "20260101000000")
                    .map(Bytes::from)
            }
        });
        tokio::spawn(listener.serve(Arc::new(handler), stop.clone()));
        Receiver {
            addr,
            received,
            stop,
        }
    }

    fn received(&self) -> Vec<String> {
        self.received.lock().expect("lock").clone()
    }
}

/// A port that nothing listens on (yet), held for as long as the test holds this: a
/// connection to it is refused, and no other test's `127.0.0.1:0` listener can be handed
/// it. A port bound and released at once could be, and that test would then receive this
/// one's messages. [`ReservedPort::release`] gives it up just before a receiver binds it.
struct ReservedPort {
    socket: tokio::net::TcpSocket,
    addr: SocketAddr,
}

impl ReservedPort {
    fn new() -> ReservedPort {
        // Bound without listening, and without SO_REUSEADDR, so no one else may bind it.
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind("127.0.0.1:0".parse().expect("addr"))
            .expect("bind");
        let addr = socket.local_addr().expect("addr");
        ReservedPort { socket, addr }
    }

    /// Frees the port for the receiver about to bind it.
    fn release(self) -> SocketAddr {
        drop(self.socket);
        self.addr
    }
}

fn siu(control_id: &str, status: &str) -> Vec<u8> {
    format!(
        "MSH|^~\\&|SCHED|NORTHSIDE|EHR|NORTHSIDE|20260105083000||SIU^S12^SIU_S12|{control_id}|P|2.5.1\r\
         SCH|10001^SCHED|20001^EHR||||NEW|FOLLOWUP^Follow-up visit|ROUTINE|20|MIN|^^^202601050900^202601050920||||||||||||||{status}\r\
         PID|1||MRN10001^^^NORTHSIDE^MR||testpatient^alpha||19800101|female\r"
    )
    .into_bytes()
}

async fn start(site: &Site, emr: SocketAddr, extra: &str) -> (Engine, Running, CancellationToken) {
    start_config(site.config(emr, extra)).await
}

/// Builds and starts an engine on `config`; cancel the token to stop it.
async fn start_config(config: plexus_config::Config) -> (Engine, Running, CancellationToken) {
    let engine = Engine::build(config, &FsAssets).expect("engine builds");
    let stop = CancellationToken::new();
    let running = engine.start(stop.clone()).await.expect("engine starts");
    (engine, running, stop)
}

async fn send(to: SocketAddr, payload: &[u8]) -> (AckCode, Vec<u8>) {
    let mut sender = Sender::new(
        to.to_string(),
        SenderConfig {
            attempts: 1,
            on_error_ack: plexus_mllp::ErrorAckPolicy::Permanent,
            ..SenderConfig::default()
        },
    );
    match sender.send(payload).await {
        Ok(delivery) => {
            let ack = delivery.ack.expect("an ACK");
            (ack.code(), ack.bytes().to_vec())
        }
        Err(plexus_mllp::SendError::ApplicationError { ack, .. })
        | Err(plexus_mllp::SendError::Rejected { ack, .. }) => (ack.code(), ack.bytes().to_vec()),
        Err(e) => panic!("send failed: {e}"),
    }
}

/// Whether the journal records every delivery of message `id` as delivered.
fn all_delivered(engine: &Engine, id: MessageId) -> bool {
    engine.journal().show(id).is_ok_and(|r| {
        r.deliveries
            .iter()
            .all(|d| d.status == DeliveryStatus::Delivered)
    })
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    // Up to 30 s: the 50,000-message test may be sharing the two cores.
    for _ in 0..1200 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_are_mapped_journaled_acked_and_delivered_in_order() {
    let site = Site::new();
    let emr = Receiver::start("127.0.0.1:0".parse().expect("addr")).await;
    let (engine, running, stop) = start(&site, emr.addr, "").await;
    let src = running.mllp["scheduling"];

    let statuses = ["Arrived", "Checked In", "  ROOMED ", "Ready", "booked"];
    let ids: Vec<String> = (0..25).map(|i| format!("M{i:03}")).collect();
    for (i, id) in ids.iter().enumerate() {
        let (code, _) = send(src, &siu(id, statuses[i % statuses.len()])).await;
        assert_eq!(code, AckCode::AA, "message {id}");
    }
    eventually("all delivered to the EMR", || {
        emr.received().len() == ids.len()
    })
    .await;
    assert_eq!(emr.received(), ids, "FIFO, exactly once");
    let outbox = site.outbox();
    eventually("all written to the archive", || {
        std::fs::read_dir(&outbox).map_or(0, |d| {
            d.filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".hl7"))
            })
            .count()
        }) == ids.len()
    })
    .await;

    // The archive holds the mapped message: status coded, name and sex normalised.
    let mut files: Vec<PathBuf> = std::fs::read_dir(&outbox)
        .expect("outbox")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    let first = std::fs::read(&files[0]).expect("read");
    let msg = Message::parse(&first).expect("archived message parses");
    assert_eq!(msg.control_id().as_deref(), Some("M000"));
    assert_eq!(
        msg.get("SCH-25-1").expect("path").as_deref(),
        Some("Started")
    );
    assert_eq!(msg.get("PID-8").expect("path").as_deref(), Some("F"));

    // Provenance: both stages with digests and edits, both deliveries done.
    let record = engine.journal().show(MessageId(1)).expect("show");
    assert!(record.processed);
    assert_eq!(record.stages.len(), 2);
    assert_eq!(record.stages[1].record.plugin, "visit-status-map");
    assert_eq!(record.stages[1].record.plugin_sha256.len(), 64);
    assert!(
        record.stages[1]
            .record
            .edits
            .iter()
            .any(|e| e.path == "SCH-25-1" && e.new.as_deref() == Some("Started"))
    );
    assert_eq!(record.deliveries.len(), 2);
    // Results are recorded after each batch is sent.
    eventually("both deliveries recorded", || {
        all_delivered(&engine, MessageId(1))
    })
    .await;
    stop.cancel();
    running.wait().await;
}

/// How the last engine stopped, as the lock file tells it: a new file, or `stopped`, is
/// clean; `running`, or a file an earlier release left empty, is not.
#[test]
fn the_lock_file_tells_whether_the_last_engine_stopped_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lock_file = dir.path().join("engine.lock");
    let unclean = |content: Option<&str>| {
        if let Some(content) = content {
            std::fs::write(&lock_file, content).expect("write");
        }
        let lock = plexus_pipeline::lock_data_dir(dir.path()).expect("lock");
        lock.unclean_before()
    };
    assert!(!unclean(None), "a new data folder");
    assert!(!unclean(Some("stopped\n")));
    assert!(unclean(Some("running (pid 4242)\n")));
    assert!(unclean(Some("")), "an earlier release's empty file");
}

/// The lock file remembers that a journal was opened in the folder, so a journal that is
/// missing later is reported, not replaced: `new` (a folder no journal was opened in)
/// lets one be made; `stopped` and `running` do not.
#[test]
fn the_lock_file_remembers_that_a_journal_was_opened() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lock_file = dir.path().join("engine.lock");
    let journal = dir.path().join("journal.db");
    let state = || std::fs::read_to_string(&lock_file).expect("lock file");

    let mut lock = plexus_pipeline::lock_data_dir(dir.path()).expect("lock");
    assert_eq!(state(), "new\n");
    lock.check_journal(&journal)
        .expect("a new folder may make its journal");
    lock.journal_opened().expect("record");
    assert_eq!(state(), "stopped\n");
    drop(lock);

    let lock = plexus_pipeline::lock_data_dir(dir.path()).expect("lock");
    let err = lock
        .check_journal(&journal)
        .expect_err("the journal went missing");
    assert!(
        matches!(&err, plexus_pipeline::BuildError::JournalMissing { journal: j, .. } if *j == journal),
        "{err}"
    );
    std::fs::write(&journal, b"").expect("journal");
    lock.check_journal(&journal).expect("present");
    drop(lock);
    std::fs::remove_file(&journal).expect("remove");

    std::fs::write(&lock_file, "running (pid 4242)\n").expect("write");
    let lock = plexus_pipeline::lock_data_dir(dir.path()).expect("lock");
    assert!(lock.check_journal(&journal).is_err(), "killed, then lost");
    drop(lock);
    // `new`, and an empty file (an earlier release's, or a first write cut off by a
    // crash), are not evidence enough to refuse a start.
    for before in ["new\n", ""] {
        std::fs::write(&lock_file, before).expect("write");
        let lock = plexus_pipeline::lock_data_dir(dir.path()).expect("lock");
        lock.check_journal(&journal)
            .expect("nothing known to be opened here");
    }
}

/// An engine that finds its predecessor did not stop cleanly (the lock file still says
/// `running`, as a `kill -9` leaves it) flags, before sending anything again, the owed
/// deliveries that predecessor may have sent without recording; a clean stop flags none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_unclean_stop_possible_resends_are_flagged_before_anything_is_sent_again() {
    let site = Site::new();
    let emr_port = ReservedPort::new();
    let lock_file = site.path().join("data/engine.lock");
    let state = || std::fs::read_to_string(&lock_file).expect("lock file");
    // Whether each message's delivery to `destination` is flagged.
    let flags = |engine: &Engine, ids: &[MessageId], destination: &str| -> Vec<bool> {
        ids.iter()
            .map(|id| {
                let record = engine.journal().show(*id).expect("show");
                let delivery = record
                    .deliveries
                    .iter()
                    .find(|d| d.destination == destination);
                delivery.expect("delivery").possible_resend
            })
            .collect()
    };

    // First run: the EMR is down and three messages wait for it; a clean stop.
    let (engine, running, stop) = start(&site, emr_port.addr, "").await;
    assert!(state().starts_with("running"), "{}", state());
    let src = running.mllp["scheduling"];
    for n in 0..3 {
        let (code, _) = send(src, &siu(&format!("U{n}"), "Arrived")).await;
        assert_eq!(code, AckCode::AA);
    }
    let ids: Vec<MessageId> = engine
        .journal()
        .next_pending("scheduling", "emr", 10)
        .expect("pending")
        .iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(ids.len(), 3);
    // The file destination has them all before the stop, so none of it is owed later.
    eventually("archived", || {
        ids.iter().all(|id| {
            engine.journal().show(*id).is_ok_and(|r| {
                r.deliveries.iter().any(|d| {
                    d.destination == "archive"
                        && d.status == plexus_journal::DeliveryStatus::Delivered
                })
            })
        })
    })
    .await;
    stop.cancel();
    running.wait().await;
    drop(engine);
    assert_eq!(state(), "stopped\n");

    // Second run: nothing flagged after a clean stop. Then dropped without `wait`: its
    // workers are cut off, and the lock file is left as a kill leaves it.
    let (engine, running, _stop) = start(&site, emr_port.addr, "").await;
    assert_eq!(
        flags(&engine, &ids, "emr"),
        [false; 3],
        "a clean stop flags nothing"
    );
    drop(running);
    drop(engine);
    assert!(state().starts_with("running"), "{}", state());
    // Well past `max_backoff` (200 ms), so every retry the cut-off workers recorded is
    // due again, as it would be for the workers.
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Third run: flagged at the start, while the EMR is still down; the file destination
    // had everything before the stop, so nothing of it is flagged.
    let (engine, running, stop) = start(&site, emr_port.addr, "").await;
    assert_eq!(flags(&engine, &ids, "emr"), [true; 3]);
    assert_eq!(flags(&engine, &ids, "archive"), [false; 3]);
    let emr = Receiver::start(emr_port.release()).await;
    eventually("all delivered", || {
        ids.iter().all(|id| all_delivered(&engine, *id))
    })
    .await;
    assert_eq!(flags(&engine, &ids, "emr"), [true; 3], "the flag stays");
    stop.cancel();
    running.wait().await;
    emr.stop.cancel();
    assert_eq!(state(), "stopped\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_that_is_down_gets_everything_in_order_when_it_comes_back() {
    let site = Site::new();
    let emr_port = ReservedPort::new();
    let (engine, running, stop) = start(&site, emr_port.addr, "").await;
    let src = running.mllp["scheduling"];
    let ids: Vec<String> = (0..30).map(|i| format!("D{i:03}")).collect();
    for id in &ids {
        let (code, _) = send(src, &siu(id, "Arrived")).await;
        assert_eq!(code, AckCode::AA, "accepted while the EMR is down");
    }
    // Let a few retries fail.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let head = engine
        .journal()
        .next_pending("scheduling", "emr", 1)
        .expect("pending");
    assert!(head[0].attempts >= 1, "the head was tried: {head:?}");
    assert!(
        head[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("connect")),
        "{head:?}"
    );

    let emr = Receiver::start(emr_port.release()).await;
    eventually("all delivered after the EMR came back", || {
        emr.received().len() >= ids.len()
    })
    .await;
    assert_eq!(emr.received(), ids, "in order, none lost, none twice");
    assert_eq!(engine.journal().error_stats(None).expect("stats").open, 0);
    stop.cancel();
    running.wait().await;
    emr.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_another_process_queues_beside_the_running_engine_is_delivered() {
    // The engine hands what it commits to delivery from memory. What another process
    // queues in the same journal (the CLI's `errors replay`) it never sees committed,
    // and must still find and deliver, once.
    let site = Site::new();
    let emr = Receiver::start("127.0.0.1:0".parse().expect("addr")).await;
    let config = site.config(emr.addr, "");
    let (engine, running, stop) = start(&site, emr.addr, "").await;
    let src = running.mllp["scheduling"];
    assert_eq!(send(src, &siu("F1", "Arrived")).await.0, AckCode::AA);
    // Unknown status: the plug-in fails it into the error queue, nothing is owed.
    assert_eq!(send(src, &siu("F2", "Teleported")).await.0, AckCode::AE);
    assert_eq!(send(src, &siu("F3", "Arrived")).await.0, AckCode::AA);
    eventually("the engine's own messages delivered", || {
        emr.received().len() == 2
    })
    .await;
    let poison = engine
        .journal()
        .list_errors(&ErrorFilter::default(), 10)
        .expect("errors")[0]
        .message;

    // What `plexus errors replay` does from its own process: queue the message again.
    let other = plexus_journal::SqliteJournal::open(plexus_pipeline::journal_path(&config))
        .expect("a second process");
    let requeue = plexus_journal::Processing {
        enqueue: vec!["emr".into()],
        requeue: true,
        processed: true,
        ..plexus_journal::Processing::default()
    };
    plexus_journal::Journal::process(&other, poison, requeue).expect("queued by the other");
    drop(other);
    assert_eq!(send(src, &siu("F4", "Arrived")).await.0, AckCode::AA);
    eventually("the other process's delivery made too", || {
        emr.received().len() >= 4
    })
    .await;
    // Give a second copy, were one coming, the time to arrive.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut received = emr.received();
    assert_eq!(received[..2], ["F1", "F3"]);
    received.sort();
    assert_eq!(received, ["F1", "F2", "F3", "F4"], "each once");
    stop.cancel();
    running.wait().await;
    emr.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_too_large_for_the_feed_keeps_its_place_in_the_queue() {
    // Delivery takes what was just committed from memory, but a lane's feed holds at
    // most 4 MiB; a larger message is read from the journal, in its place.
    let site = Site::new();
    let emr = Receiver::start("127.0.0.1:0".parse().expect("addr")).await;
    let (_engine, running, stop) = start(&site, emr.addr, "").await;
    let src = running.mllp["scheduling"];
    assert_eq!(send(src, &siu("G1", "Arrived")).await.0, AckCode::AA);
    eventually("the first delivered", || emr.received().len() == 1).await;
    // The lane's read that found G1 alone brought its feed into sync.
    let mut large = siu("G2", "Arrived");
    large.extend_from_slice(b"NTE|1||");
    large.resize(large.len() + (5 << 20), b'x');
    large.push(b'\r');
    assert_eq!(send(src, &large).await.0, AckCode::AA);
    assert_eq!(send(src, &siu("G3", "Arrived")).await.0, AckCode::AA);
    assert_eq!(send(src, &siu("G4", "Arrived")).await.0, AckCode::AA);
    eventually("all delivered", || emr.received().len() >= 4).await;
    assert_eq!(
        emr.received(),
        ["G1", "G2", "G3", "G4"],
        "in the order received"
    );
    stop.cancel();
    running.wait().await;
    emr.stop.cancel();
}

/// `"like": true` on the admin API's replay and resolve acts on a whole group of open
/// errors (the named message's line of `errors?group=true`), oldest first, one audit
/// entry each; another problem's errors are left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_replays_and_resolves_a_whole_group_of_errors() {
    let site = Site::new();
    let emr = Receiver::start("127.0.0.1:0".parse().expect("addr")).await;
    let tokens = admin_tokens(&[("ops", "operator", "ops-secret")]);
    let json = |b: &[u8]| serde_json::from_slice::<serde_json::Value>(b).expect("json");
    let (engine, running, stop) = start(&site, emr.addr, &tokens).await;
    let src = running.mllp["scheduling"];
    // One problem three times (a status the table lacks), and another: MSH-10 is the
    // HL7 null, which no answer could be matched by.
    for id in ["G1", "G2", "G3"] {
        let (code, _) = send(src, &siu(id, "Teleported")).await;
        assert_eq!(code, AckCode::AE, "{id}");
    }
    let (code, _) = send(src, &siu("\"\"", "Arrived")).await;
    assert_eq!(code, AckCode::AR);
    let open = engine
        .journal()
        .list_errors(&ErrorFilter::default(), 10)
        .expect("errors");
    assert_eq!(open.len(), 4);
    let group: Vec<i64> = open
        .iter()
        .filter(|e| e.control_id.as_deref().is_some_and(|c| c.starts_with('G')))
        .map(|e| e.message.0)
        .collect();
    let other = open
        .iter()
        .find(|e| e.control_id.is_none())
        .expect("the refused one")
        .message;
    stop.cancel();
    running.wait().await;
    drop(engine);

    // The site adds the status and restarts; one request replays the whole group.
    std::fs::write(
        site.path().join("visit-status.csv"),
        format!("{STATUS_CSV}teleported,Started\n"),
    )
    .expect("csv");
    let (engine, running, stop) = start(&site, emr.addr, &tokens).await;
    let http = running.http;
    let replay_like = |model: i64, body: String| async move {
        let (status, answer) = http_request_with(
            http,
            "POST",
            &format!("/admin/v1/messages/{model}/replay"),
            Some("ops-secret"),
            body.as_bytes(),
        )
        .await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
        json(&answer)
    };
    let ids_of = |answer: &serde_json::Value| -> Vec<i64> {
        answer["results"]
            .as_array()
            .expect("results")
            .iter()
            .map(|r| r["id"].as_i64().expect("id"))
            .collect()
    };
    // From a cursor: the members after the first, in message order.
    let answer = replay_like(
        group[1],
        format!(
            r#"{{"note": "added teleported", "like": true, "after": {}}}"#,
            group[0]
        ),
    )
    .await;
    assert_eq!(answer["group"]["kind"], "plugin-fail", "{answer}");
    assert_eq!(answer["group"]["stage"], "plugin:visit-status-map");
    assert_eq!(ids_of(&answer), group[1..]);
    assert_eq!(
        (&answer["requeued"], &answer["failed"], &answer["remaining"]),
        (
            &serde_json::json!(2),
            &serde_json::json!(0),
            &serde_json::json!(0)
        )
    );
    assert!(answer["next_after"].is_null());
    // Then the rest of the group: the first, which the cursor passed.
    let answer = replay_like(
        group[0],
        r#"{"note": "added teleported", "like": true}"#.to_owned(),
    )
    .await;
    assert_eq!(ids_of(&answer), group[..1]);
    assert_eq!(answer["replayed"], 1);
    eventually("the group is delivered", || {
        let got = emr.received();
        ["G1", "G2", "G3"]
            .iter()
            .all(|id| got.iter().any(|g| g == id))
    })
    .await;
    let open = engine
        .journal()
        .list_errors(&ErrorFilter::default(), 10)
        .expect("errors");
    assert_eq!(
        open.iter().map(|e| e.message).collect::<Vec<_>>(),
        [other],
        "the other problem is left open"
    );

    // Nothing like a message whose error is closed; resolving the other group needs a
    // note and closes it.
    let (status, _) = http_request_with(
        http,
        "POST",
        &format!("/admin/v1/messages/{}/replay", group[0]),
        Some("ops-secret"),
        br#"{"like": true}"#,
    )
    .await;
    assert_eq!(status, 409);
    let path = format!("/admin/v1/messages/{}/resolve", other.0);
    let (status, _) = http_request_with(
        http,
        "POST",
        &path,
        Some("ops-secret"),
        br#"{"like": true}"#,
    )
    .await;
    assert_eq!(status, 400, "a note is required");
    let (status, body) = http_request_with(
        http,
        "POST",
        &path,
        Some("ops-secret"),
        br#"{"note": "sender fixed its ids", "like": true}"#,
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json(&body)["resolved"], 1);
    assert_eq!(engine.journal().error_stats(None).expect("stats").open, 0);
    // One audit entry per message, with the operator's name.
    let audit = engine.journal().audit_log(0, 100).expect("audit");
    let acted: Vec<(&str, &str)> = audit
        .iter()
        .filter(|a| a.entry.action == "replay" || a.entry.action == "resolve")
        .map(|a| (a.entry.action.as_str(), a.entry.actor.as_str()))
        .collect();
    assert_eq!(acted.len(), 4, "{acted:?}");
    assert!(
        acted.iter().all(|(_, actor)| actor.contains("ops")),
        "{acted:?}"
    );
    stop.cancel();
    running.wait().await;
    emr.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_go_to_the_error_queue_while_the_rest_flow_and_replay_fixes_them() {
    let site = Site::new();
    let emr = Receiver::start("127.0.0.1:0".parse().expect("addr")).await;
    let (engine, running, stop) = start(&site, emr.addr, "").await;
    let src = running.mllp["scheduling"];

    let (code, _) = send(src, &siu("P001", "Arrived")).await;
    assert_eq!(code, AckCode::AA);
    // Unknown status: the plug-in fails it; the sender gets AE naming the path.
    let (code, ack_bytes) = send(src, &siu("P002", "Teleported")).await;
    assert_eq!(code, AckCode::AE);
    let ack_msg = Message::parse(&ack_bytes).expect("ack parses");
    assert_eq!(
        ack_msg.get("ERR-3-1").expect("path").as_deref(),
        Some("103"),
        "table value not found"
    );
    assert_eq!(
        ack_msg.get("ERR-2-1").expect("path").as_deref(),
        Some("SCH")
    );
    let ack_text = String::from_utf8_lossy(&ack_bytes);
    assert!(
        !ack_text.contains("testpatient"),
        "no patient data in the ACK"
    );
    // Garbage: rejected with AR, and still journaled.
    let mut sender = Sender::new(
        src.to_string(),
        SenderConfig {
            attempts: 1,
            ..SenderConfig::default()
        },
    );
    let err = sender
        .send(b"this is not HL7")
        .await
        .expect_err("not HL7 is refused locally");
    assert!(matches!(err, plexus_mllp::SendError::InvalidMessage { .. }));
    let (code, _) = send(src, &siu("P003", "Ready")).await;
    assert_eq!(code, AckCode::AA);

    eventually("the good ones flow past the poison", || {
        emr.received().len() == 2
    })
    .await;
    assert_eq!(emr.received(), ["P001", "P003"]);
    let errors = engine
        .journal()
        .list_errors(&ErrorFilter::default(), 10)
        .expect("errors");
    assert_eq!(errors.len(), 1);
    let poison = &errors[0];
    assert_eq!(poison.kind, ErrorKind::PluginFail);
    assert_eq!(poison.stage, "plugin:visit-status-map");
    assert_eq!(poison.path.as_deref(), Some("SCH-25-1"));
    assert_eq!(poison.control_id.as_deref(), Some("P002"));
    assert!(
        poison.reason.contains("missing-mapping"),
        "{}",
        poison.reason
    );
    stop.cancel();
    running.wait().await;

    // The site adds the missing status and restarts; the operator replays the message.
    std::fs::write(
        site.path().join("visit-status.csv"),
        format!("{STATUS_CSV}teleported,Started\n"),
    )
    .expect("csv");
    let (engine, running, stop) = start(&site, emr.addr, "").await;
    // Four operators press replay at once: one replay runs; the others are told it is
    // running, or that the message has no open error any more.
    let attempts = futures::future::join_all(
        (0..4).map(|_| engine.replay(poison.message, "added teleported", "ops")),
    )
    .await;
    let mut outcome = None;
    for attempt in attempts {
        match attempt {
            Ok(done) => assert!(outcome.replace(done).is_none(), "replayed twice"),
            Err(
                plexus_pipeline::OpError::ReplayInProgress(_)
                | plexus_pipeline::OpError::NothingToReplay { .. },
            ) => {}
            Err(other) => panic!("{other}"),
        }
    }
    let outcome = outcome.expect("one replay ran");
    assert_eq!(
        outcome,
        ReplayOutcome::Requeued {
            destinations: vec!["archive".into(), "emr".into()],
            already_delivered: vec![],
        }
    );
    eventually("the replayed message is delivered", || {
        emr.received().len() == 3
    })
    .await;
    assert_eq!(emr.received()[2], "P002");
    // The receiver has it a moment before the journal records it (results are recorded
    // after each batch is sent).
    eventually("both deliveries of the replay recorded", || {
        all_delivered(&engine, poison.message)
    })
    .await;
    let stats = engine.journal().error_stats(None).expect("stats");
    assert_eq!((stats.open, stats.resolved, stats.corrected), (0, 1, 1));
    // Its error is resolved: a second replay is refused, says where the message stands
    // and neither re-runs the chain nor sends it again.
    let stages = engine
        .journal()
        .show(poison.message)
        .expect("show")
        .stages
        .len();
    let again = engine
        .replay(poison.message, "once more", "ops")
        .await
        .expect_err("nothing to replay");
    let text = again.to_string();
    assert!(
        text.contains("no open error") && text.contains("emr delivered"),
        "{text}"
    );
    let record = engine.journal().show(poison.message).expect("show");
    assert_eq!(record.stages.len(), stages);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(emr.received().len(), 3);
    stop.cancel();
    running.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unparseable_frames_are_rejected_with_ar_and_kept_in_the_error_queue() {
    let site = Site::new();
    let emr = Receiver::start("127.0.0.1:0".parse().expect("addr")).await;
    let (engine, running, stop) = start(&site, emr.addr, "").await;
    let src = running.mllp["scheduling"];
    // A raw MLLP client: the Sender refuses to send non-HL7.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(src).await.expect("connect");
    tcp.write_all(b"\x0bMSH|^~\\&|A|B|C|D|2026||ADT^A01|BAD1|P|2.5\rPID|1|\x1c\r")
        .await
        .expect("write");
    tcp.write_all(b"\x0bnot hl7 at all\x1c\r")
        .await
        .expect("write");
    // Unparseable (a lowercase segment name), but its MSH-10 can be read.
    tcp.write_all(b"\x0bMSH|^~\\&|A|B|C|D|2026||ADT^A01|LOW1|P|2.5\rpid|1|\x1c\r")
        .await
        .expect("write");
    let mut buf = vec![0; 4096];
    let mut got = Vec::new();
    while got.iter().filter(|&&b| b == 0x1c).count() < 3 {
        let n = tcp.read(&mut buf).await.expect("read");
        assert!(n > 0, "connection closed early");
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    let acks: Vec<&str> = text.split('\x1c').filter(|s| s.contains("MSA")).collect();
    assert_eq!(acks.len(), 3);
    assert!(acks[2].contains("MSA|AR|LOW1"), "{}", acks[2]);
    assert!(
        acks[0].contains("MSA|AA|BAD1"),
        "a short but valid message is fine: {}",
        acks[0]
    );
    assert!(acks[1].contains("MSA|AR"), "{}", acks[1]);
    let errors = engine
        .journal()
        .list_errors(
            &ErrorFilter {
                kind: Some(ErrorKind::Parse),
                ..ErrorFilter::default()
            },
            10,
        )
        .expect("errors");
    assert_eq!(errors.len(), 2);
    let record = engine.journal().show(errors[0].message).expect("show");
    assert_eq!(
        record.inbound.raw, b"not hl7 at all",
        "the bytes are kept as received"
    );
    assert_eq!(record.inbound.control_id, None);
    // The id the AR echoed is journaled, so the operator can find the message by it.
    let record = engine.journal().show(errors[1].message).expect("show");
    assert_eq!(record.inbound.control_id.as_deref(), Some("LOW1"));
    stop.cancel();
    running.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_source_answers_with_an_ack_and_status_and_health_endpoints_work() {
    let site = Site::new();
    let emr = Receiver::start("127.0.0.1:0".parse().expect("addr")).await;
    let (engine, running, stop) = start(&site, emr.addr, "").await;
    let http = running.http;

    let (status, body) = http_request(http, "GET", "/healthz", b"").await;
    assert_eq!((status, body.as_slice()), (200, b"ok\n".as_slice()));
    let (status, _) = http_request(http, "GET", "/readyz", b"").await;
    assert_eq!(status, 200);
    let (status, body) =
        http_request(http, "POST", "/ingest/intake", &siu("H001", "Arrived")).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("MSA|AA|H001"));
    let (status, body) =
        http_request(http, "POST", "/ingest/intake", &siu("H002", "Teleported")).await;
    assert_eq!(status, 422);
    assert!(String::from_utf8_lossy(&body).contains("MSA|AE|H002"));
    let (status, _) = http_request(http, "POST", "/ingest/intake", b"garbage").await;
    assert_eq!(status, 400);
    let (status, _) = http_request(http, "POST", "/ingest/nowhere", b"x").await;
    assert_eq!(status, 404);
    let (status, body) = http_request(http, "GET", "/ingest/intake", b"").await;
    assert_eq!(status, 405);
    assert!(String::from_utf8_lossy(&body).contains("takes POST"));

    let inbox = site.path().join("http-outbox");
    eventually("the HTTP message is written", || {
        std::fs::read_dir(&inbox).map_or(0, |d| d.count()) == 1
    })
    .await;
    assert_eq!(
        engine
            .journal()
            .error_stats(Some("intake"))
            .expect("stats")
            .open,
        2
    );
    let wanted = [
        "plexus_messages_received_total{interface=\"intake\"} 3",
        "plexus_acks_total{interface=\"intake\",code=\"AA\"} 1",
        "plexus_acks_total{interface=\"intake\",code=\"AE\"} 1",
        "plexus_acks_total{interface=\"intake\",code=\"AR\"} 1",
        "plexus_messages_errored_total{interface=\"intake\",kind=\"plugin-fail\"} 1",
        "plexus_messages_errored_total{interface=\"intake\",kind=\"parse\"} 1",
        "plexus_deliveries_total{interface=\"intake\",destination=\"inbox\",result=\"delivered\"} 1",
        "plexus_ack_latency_seconds_count{interface=\"intake\"} 3",
        "plexus_errors_open{interface=\"intake\"} 2",
    ];
    let sha = engine.active_chain("intake").expect("chain").digests()[0]
        .1
        .clone();
    let per_version = [
        format!(
            "plexus_plugin_runs_total{{interface=\"intake\",plugin=\"visit-status-map\",sha256=\"{sha}\",outcome=\"forward\"}} 1"
        ),
        format!(
            "plexus_plugin_runs_total{{interface=\"intake\",plugin=\"visit-status-map\",sha256=\"{sha}\",outcome=\"fail\"}} 1"
        ),
        format!(
            "plexus_plugin_run_seconds_count{{interface=\"intake\",plugin=\"visit-status-map\",sha256=\"{sha}\"}} 2"
        ),
    ];
    let wanted: Vec<&str> = wanted
        .iter()
        .copied()
        .chain(per_version.iter().map(String::as_str))
        .collect();
    // The delivery counter moves once its batch is done: poll briefly.
    let mut metrics = String::new();
    for _ in 0..100 {
        let (status, body) = http_request(http, "GET", "/metrics", b"").await;
        assert_eq!(status, 200);
        metrics = String::from_utf8_lossy(&body).into_owned();
        if wanted.iter().all(|w| metrics.lines().any(|l| l == *w)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for line in wanted {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing `{line}` in:\n{metrics}"
        );
    }
    assert!(!metrics.contains("H001"), "no message content in metrics");
    stop.cancel();
    running.wait().await;
}

/// Bytes outside any frame are skipped, never answered or journaled: the interface's
/// counter says how many, so an operator can alert on a sender that does not frame (or
/// whose message went on after an early 0x1C). Line breaks between frames do not count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_outside_frames_are_counted_per_interface() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let site = Site::new();
    let emr = Receiver::start("127.0.0.1:0".parse().expect("addr")).await;
    let (_engine, running, stop) = start(&site, emr.addr, "").await;
    let mut tcp = tokio::net::TcpStream::connect(running.mllp["scheduling"])
        .await
        .expect("connect");
    let mut wire = b"stray text\r".to_vec();
    wire.push(0x0b);
    wire.extend_from_slice(&siu("J001", "Arrived"));
    wire.extend_from_slice(b"\x1c\r\r\n");
    wire.push(0x0b);
    wire.extend_from_slice(&siu("J002", "Arrived"));
    wire.extend_from_slice(b"\x1c\r");
    tcp.write_all(&wire).await.expect("send");
    let mut acks = Vec::new();
    let mut chunk = [0_u8; 4096];
    while acks.iter().filter(|&&b| b == 0x1c).count() < 2 {
        let n = tcp.read(&mut chunk).await.expect("read");
        assert!(n > 0, "closed before both ACKs");
        acks.extend_from_slice(&chunk[..n]);
    }
    let acks = String::from_utf8_lossy(&acks);
    assert!(
        acks.contains("MSA|AA|J001") && acks.contains("MSA|AA|J002"),
        "{acks}"
    );
    drop(tcp);
    let line = "plexus_mllp_bytes_outside_frames_total{interface=\"scheduling\"} 11";
    let mut metrics = String::new();
    for _ in 0..100 {
        let (_, body) = http_request(running.http, "GET", "/metrics", b"").await;
        metrics = String::from_utf8_lossy(&body).into_owned();
        if metrics.lines().any(|l| l == line) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(metrics.lines().any(|l| l == line), "{metrics}");
    stop.cancel();
    running.wait().await;
}

/// `curl -d @msg.hl7` posts the message as a form, with its line breaks dropped: refused
/// with 415 and the command that works, before anything is journaled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_posted_as_a_form_is_refused_with_the_command_that_works() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let site = Site::new();
    let emr = Receiver::start("127.0.0.1:0".parse().expect("addr")).await;
    let (engine, running, stop) = start(&site, emr.addr, "").await;
    let body: Vec<u8> = siu("F001", "Arrived")
        .into_iter()
        .filter(|&b| b != b'\r')
        .collect();
    let mut tcp = tokio::net::TcpStream::connect(running.http)
        .await
        .expect("connect");
    let head = format!(
        "POST /ingest/intake HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.expect("write");
    tcp.write_all(&body).await.expect("write");
    let mut response = Vec::new();
    tcp.read_to_end(&mut response).await.expect("read");
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 415"), "{response}");
    assert!(response.contains("--data-binary"), "{response}");
    // A body over the limit is told the limit (axum's own text does not say it).
    let big = vec![b'x'; plexus_mllp::DEFAULT_MAX_FRAME + 1];
    let (status, answer) =
        http_request_with(running.http, "POST", "/ingest/intake", None, &big).await;
    assert_eq!(status, 413);
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.contains("16 MiB") && answer.contains("nothing was journaled"),
        "{answer}"
    );
    assert!(
        engine.journal().show(MessageId(1)).is_err(),
        "nothing journaled"
    );
    stop.cancel();
    running.wait().await;
}

/// While the journal refuses commits (here a trigger stands in for a full disk or a
/// damaged file), every message is refused and `/readyz` says the engine is not ready;
/// the first commit that succeeds makes it ready again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_not_ready_while_the_journal_refuses_commits() {
    let site = Site::new();
    let emr = Receiver::start("127.0.0.1:0".parse().expect("addr")).await;
    let (engine, running, stop) = start(&site, emr.addr, "").await;
    let http = running.http;
    let side = rusqlite::Connection::open(plexus_pipeline::journal_path(engine.config()))
        .expect("open the journal beside the engine");
    side.busy_timeout(Duration::from_secs(5))
        .expect("busy timeout");
    side.execute_batch(
        "CREATE TRIGGER refuse BEFORE INSERT ON messages
         BEGIN SELECT RAISE(ABORT, 'refused for the test'); END;",
    )
    .expect("trigger");
    let (code, _) = send(running.mllp["scheduling"], &siu("R001", "Arrived")).await;
    assert_eq!(code, AckCode::AR, "not stored, so not accepted");
    let (status, body) = http_request(http, "GET", "/readyz", b"").await;
    assert_eq!(status, 503);
    assert!(
        String::from_utf8_lossy(&body).contains("journal commits are failing"),
        "{}",
        String::from_utf8_lossy(&body)
    );

    side.execute_batch("DROP TRIGGER refuse")
        .expect("drop trigger");
    let (code, _) = send(running.mllp["scheduling"], &siu("R002", "Arrived")).await;
    assert_eq!(code, AckCode::AA);
    let (status, _) = http_request(http, "GET", "/readyz", b"").await;
    assert_eq!(status, 200);
    drop(side);
    stop.cancel();
    running.wait().await;
}

/// A minimal HTTP/1.1 exchange (Connection: close), enough for these checks.
async fn http_request(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.expect("write");
    tcp.write_all(body).await.expect("write");
    let mut response = Vec::new();
    tcp.read_to_end(&mut response).await.expect("read");
    let text = String::from_utf8_lossy(&response);
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("headers end");
    (status, response[split + 4..].to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_plug_ins_are_contained_and_the_engine_keeps_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("visit-status.csv"), STATUS_CSV).expect("csv");
    let mut text = format!(
        r#"
[engine]
data_dir = "data"
[http]
listen = "127.0.0.1:0"
[tables.visit-status]
file = "visit-status.csv"
[plugins.hostile]
file = "{hostile}"
grants = ["log"]
limits = {{ timeout = "300ms", memory = "16MiB" }}
[plugins.no-std]
file = "{no_std}"
limits = {{ timeout = "300ms" }}
[interfaces.no-std-loop]
source = {{ type = "mllp", listen = "127.0.0.1:0" }}
chain = ["no-std"]
[interfaces.no-std-grow-then-loop]
source = {{ type = "mllp", listen = "127.0.0.1:0" }}
chain = ["no-std"]
[plugins.visit-status-map]
file = "{status}"
grants = ["tables:visit-status"]
[interfaces.scheduling]
source = {{ type = "mllp", listen = "127.0.0.1:0" }}
chain = ["visit-status-map"]
destinations = [{{ name = "out", type = "file", dir = "out" }}]
"#,
        hostile = plexus_test_artifacts::HOSTILE,
        no_std = plexus_test_artifacts::NO_STD,
        status = plexus_test_artifacts::VISIT_STATUS_MAP,
    );
    let hostile = ["loop", "memory-bomb", "unreachable", "panic"];
    let no_std = ["no-std-loop", "no-std-grow-then-loop"];
    let looping = ["loop", "no-std-loop", "no-std-grow-then-loop"];
    for name in hostile {
        text.push_str(&format!(
            "[interfaces.{name}]\nsource = {{ type = \"mllp\", listen = \"127.0.0.1:0\" }}\nchain = [\"hostile\"]\n"
        ));
    }
    let config = plexus_config::Config::from_toml(&text, &dir.path().join("site.toml"))
        .unwrap_or_else(|e| panic!("config: {e}"));
    let (engine, running, stop) = start_config(config).await;

    for round in 0..2 {
        // `no-std` imports no WASI, so its chain starts on the async worker: cut there
        // after a few milliseconds, then run again in full elsewhere. A loop after a
        // refused memory growth is cut (a timeout) all the same.
        for name in hostile.into_iter().chain(no_std) {
            let started = std::time::Instant::now();
            let (code, ack) = send(
                running.mllp[name],
                &siu(&format!("{name}-{round}"), "Arrived"),
            )
            .await;
            assert_eq!(
                code,
                AckCode::AE,
                "{name}: {}",
                String::from_utf8_lossy(&ack)
            );
            if looping.contains(&name) {
                assert!(
                    started.elapsed() >= std::time::Duration::from_millis(300),
                    "{name}: the full timeout applies"
                );
            }
        }
        let (code, _) = send(
            running.mllp["scheduling"],
            &siu(&format!("ok-{round}"), "Arrived"),
        )
        .await;
        assert_eq!(
            code,
            AckCode::AA,
            "the engine keeps serving after round {round}"
        );
    }
    let kind_of = |interface: &str| {
        let plugin = if interface.starts_with("no-std") {
            "no-std"
        } else {
            "hostile"
        };
        let errors = engine
            .journal()
            .list_errors(
                &ErrorFilter {
                    interface: Some(interface.to_owned()),
                    ..ErrorFilter::default()
                },
                10,
            )
            .expect("errors");
        assert_eq!(errors.len(), 2, "{interface}: one entry per message");
        assert!(
            errors[0].reason.contains(plugin) && !errors[0].reason.contains("run again"),
            "the reason names the plug-in: {}",
            errors[0].reason
        );
        if looping.contains(&interface) {
            assert!(errors[0].reason.contains("300ms"), "{}", errors[0].reason);
        }
        errors[0].kind
    };
    assert_eq!(kind_of("loop"), ErrorKind::Timeout);
    assert_eq!(kind_of("no-std-loop"), ErrorKind::Timeout);
    assert_eq!(kind_of("no-std-grow-then-loop"), ErrorKind::Timeout);
    assert_eq!(kind_of("memory-bomb"), ErrorKind::OutOfMemory);
    assert_eq!(kind_of("unreachable"), ErrorKind::Trap);
    assert_eq!(kind_of("panic"), ErrorKind::Trap);
    // Traps are counted per plug-in version digest and kind.
    let sha = engine.active_chain("loop").expect("chain").digests()[0]
        .1
        .clone();
    let (status, body) = http_request(running.http, "GET", "/metrics", b"").await;
    assert_eq!(status, 200);
    let metrics = String::from_utf8_lossy(&body);
    let no_std_sha = engine.active_chain("no-std-loop").expect("chain").digests()[0]
        .1
        .clone();
    for (interface, plugin, sha, kind) in [
        ("loop", "hostile", &sha, "timeout"),
        ("memory-bomb", "hostile", &sha, "memory"),
        ("unreachable", "hostile", &sha, "trap"),
        ("panic", "hostile", &sha, "trap"),
        // The runs cut on the async worker are not counted: one timeout per message.
        ("no-std-loop", "no-std", &no_std_sha, "timeout"),
        ("no-std-grow-then-loop", "no-std", &no_std_sha, "timeout"),
    ] {
        let line = format!(
            "plexus_plugin_traps_total{{interface=\"{interface}\",plugin=\"{plugin}\",sha256=\"{sha}\",kind=\"{kind}\"}} 2"
        );
        assert!(
            metrics.lines().any(|l| l == line),
            "missing `{line}` in:\n{metrics}"
        );
    }
    let out = dir.path().join("out");
    eventually("the good messages are delivered", || {
        std::fs::read_dir(&out).map_or(0, |d| d.count()) == 2
    })
    .await;
    stop.cancel();
    running.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plug_in_text_cannot_steer_the_ack_or_flood_the_error_queue() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = hostile_site(dir.path(), r#"["log"]"#, "fail-steer");
    let (engine, running, stop) = start_config(config).await;

    // An `internal` failure whose detail says "missing-mapping invalid-input", with a
    // padded path and 8 KB of text.
    let (code, ack) = send(running.mllp["fail-steer"], &siu("steer-1", "Arrived")).await;
    assert_eq!(code, AckCode::AE);
    let ack = Message::parse(&ack).expect("the ACK parses");
    assert_eq!(
        ack.get("ERR-3-1").expect("path").as_deref(),
        Some("207"),
        "the code follows the plug-in's error kind (internal), not its words"
    );
    let errors = engine
        .journal()
        .list_errors(&ErrorFilter::default(), 10)
        .expect("errors");
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].kind, ErrorKind::PluginFail);
    assert_eq!(errors[0].path.as_deref(), Some("PID-5-1"), "canonical path");
    assert!(
        errors[0].reason.len() <= 2 << 10,
        "the plug-in's text is bounded: {} bytes",
        errors[0].reason.len()
    );
    stop.cancel();
    running.wait().await;
}

/// What producers actually drop: a link to a file written elsewhere, an upper-case
/// `.HL7`, a name that is not UTF-8 (kept byte for byte in `processed/`).
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drop_folder_takes_links_upper_case_names_and_names_that_are_not_utf8() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let (inbox, config) = drop_site(dir.path());
    let elsewhere = dir.path().join("written-elsewhere.txt");
    std::fs::write(&elsewhere, siu("L001", "Ready")).expect("write");
    std::os::unix::fs::symlink(&elsewhere, inbox.join("link.hl7")).expect("link");
    std::fs::write(inbox.join("UPPER.HL7"), siu("U001", "Ready")).expect("write");
    let latin1 = std::ffi::OsStr::from_bytes(b"caf\xe9.hl7");
    std::fs::write(inbox.join(latin1), siu("N001", "Ready")).expect("write");
    let (_engine, running, stop) = start_config(config).await;
    let out = dir.path().join("out");
    eventually("three delivered", || files_in(&out).len() == 3).await;
    eventually("three moved", || {
        files_in(&inbox.join("processed")).len() == 3
    })
    .await;
    assert!(
        inbox.join("processed").join(latin1).exists(),
        "the name's own bytes"
    );
    assert!(elsewhere.exists(), "the link moves, not what it points at");
    stop.cancel();
    running.wait().await;
}

/// A drop file over the limit goes to `rejected/` and, as an oversize MLLP frame does,
/// into the error queue with its first segment under its MSH-10 (so whoever works the
/// queue sees it); it cannot be replayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drop_file_too_large_to_take_is_filed_in_the_error_queue() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (inbox, config) = drop_site(dir.path());
    // A batch, as the largest drop files are: what is kept is its first MSH.
    let mut big = b"FHS|^~\\&|SCHED\rBHS|^~\\&|SCHED\r".to_vec();
    big.extend_from_slice(&siu("HUGE1", "Ready"));
    big.extend_from_slice(b"NTE|1||");
    big.resize(plexus_mllp::DEFAULT_MAX_FRAME + 1024, b'X');
    big.push(b'\r');
    std::fs::write(inbox.join("huge.hl7"), &big).expect("write");
    let (engine, running, stop) = start_config(config).await;
    eventually("moved to rejected/", || {
        files_in(&inbox.join("rejected")).len() == 1
    })
    .await;
    let errors = engine
        .journal()
        .list_errors(&ErrorFilter::default(), 10)
        .expect("list");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].control_id.as_deref(), Some("HUGE1"));
    assert!(
        errors[0].reason.contains("huge.hl7") && errors[0].reason.contains("rejected/"),
        "{}",
        errors[0].reason
    );
    let record = engine.journal().show(errors[0].message).expect("show");
    assert!(record.inbound.raw.starts_with(b"MSH|") && !record.inbound.raw.contains(&b'\r'));
    assert!(matches!(
        engine.replay(errors[0].message, "again", "ops").await,
        Err(plexus_pipeline::OpError::NotKept(_))
    ));
    assert!(
        files_in(&dir.path().join("out")).is_empty(),
        "nothing delivered"
    );
    stop.cancel();
    running.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_file_in_the_drop_folder_is_split_into_its_messages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (inbox, config) = drop_site(dir.path());
    let mut batch = b"FHS|^~\\&|SCHED|NORTHSIDE\rBHS|^~\\&|SCHED|NORTHSIDE\r".to_vec();
    for id in ["B001", "B002", "B003"] {
        batch.extend(siu(id, "Roomed"));
    }
    batch.extend(b"BTS|3\rFTS|1\r");
    std::fs::write(inbox.join("batch.hl7"), &batch).expect("write");
    // One message with trailers but no headers: the trailers do not go downstream.
    std::fs::write(
        inbox.join("trailer.hl7"),
        [siu("T001", "Ready"), b"BTS|1\rFTS|1\r".to_vec()].concat(),
    )
    .expect("write");
    // Several messages with no envelope are a batch too.
    std::fs::write(
        inbox.join("pair.hl7"),
        [siu("P001", "Arrived"), siu("P002", "Ready")].concat(),
    )
    .expect("write");
    let (engine, running, stop) = start_config(config).await;

    let out = dir.path().join("out");
    eventually("six messages delivered", || files_in(&out).len() == 6).await;
    let mut ids: Vec<String> = files_in(&out)
        .iter()
        .map(|f| {
            let msg = Message::parse_owned(std::fs::read(f).expect("read")).expect("parses");
            assert_eq!(msg.get("SCH-25").expect("path").as_deref(), Some("Started"));
            assert_eq!(msg.count("BTS").expect("path"), 0, "no trailer inside");
            msg.control_id().expect("MSH-10").into_owned()
        })
        .collect();
    ids.sort();
    assert_eq!(ids, ["B001", "B002", "B003", "P001", "P002", "T001"]);
    eventually("the three files are moved", || {
        files_in(&inbox.join("processed")).len() == 3
    })
    .await;
    // Each message is journaled on its own, named by its file and place.
    let record = engine.journal().show(MessageId(2)).expect("show");
    assert!(
        record
            .inbound
            .source_peer
            .as_deref()
            .is_some_and(|p| p.ends_with("#2")),
        "{:?}",
        record.inbound.source_peer
    );
    assert!(!record.inbound.raw.starts_with(b"FHS"));
    assert!(
        engine
            .journal()
            .list_errors(&ErrorFilter::default(), 10)
            .expect("errors")
            .is_empty()
    );
    stop.cancel();
    running.wait().await;
}

/// An `[admin]` table with one token per `(name, role, secret)`, to end a site config.
fn admin_tokens(tokens: &[(&str, &str, &str)]) -> String {
    let entries: Vec<String> = tokens
        .iter()
        .map(|(name, role, secret)| {
            format!(
                "{{ name = \"{name}\", role = \"{role}\", sha256 = \"{}\" }}",
                plexus_pipeline::sha256_hex(secret.as_bytes())
            )
        })
        .collect();
    format!("\n[admin]\ntokens = [{}]\n", entries.join(", "))
}

/// A site with one interface fed by `source` (TOML inline table) and the destinations
/// and retry/ordering settings in `rest`.
fn site_with(dir: &Path, source: &str, rest: &str) -> plexus_config::Config {
    std::fs::write(dir.join("visit-status.csv"), STATUS_CSV).expect("csv");
    let text = format!(
        r#"
[engine]
data_dir = "data"
[http]
listen = "127.0.0.1:0"
[tables.visit-status]
file = "visit-status.csv"
[plugins.visit-status-map]
file = "{status}"
cases = "{cases}"
grants = ["tables:visit-status"]
[interfaces.feed]
source = {source}
chain = ["visit-status-map"]
{rest}
"#,
        status = plexus_test_artifacts::VISIT_STATUS_MAP,
        cases = plexus_test_artifacts::cases_dir("visit-status-map").display(),
    );
    plexus_config::Config::from_toml(&text, &dir.join("site.toml"))
        .unwrap_or_else(|e| panic!("config: {e}"))
}

/// A plug-in that loops to its timeout on every message, sent more messages at once
/// than the engine has chain permits, does not hold up another interface: that one is
/// answered while the loops still run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_looping_plug_in_on_one_interface_does_not_hold_up_another() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        r#"
[engine]
data_dir = "data"
[http]
listen = "127.0.0.1:0"
[tables.visit-status]
file = "{status}"
[plugins.hostile]
file = "{hostile}"
grants = ["log"]
limits = {{ timeout = "2s" }}
[plugins.visit-status-map]
file = "{vsm}"
grants = ["tables:visit-status"]
[interfaces.loop]
source = {{ type = "mllp", listen = "127.0.0.1:0" }}
chain = ["hostile"]
[interfaces.feed]
source = {{ type = "mllp", listen = "127.0.0.1:0" }}
chain = ["visit-status-map"]
"#,
        hostile = plexus_test_artifacts::HOSTILE,
        vsm = plexus_test_artifacts::VISIT_STATUS_MAP,
        status = dir.path().join("visit-status.csv").display(),
    );
    std::fs::write(dir.path().join("visit-status.csv"), STATUS_CSV).expect("csv");
    let config = plexus_config::Config::from_toml(&text, &dir.path().join("site.toml"))
        .unwrap_or_else(|e| panic!("config: {e}"));
    let (_engine, running, stop) = start_config(config).await;
    // More loops at once than there are permits (two per core).
    let loops = std::thread::available_parallelism().map_or(2, |n| n.get()) * 2 + 2;
    let looping: Vec<_> = (0..loops)
        .map(|i| {
            let to = running.mllp["loop"];
            tokio::spawn(async move {
                send(to, &siu(&format!("LOOP{i}"), "Ready")).await;
                std::time::Instant::now()
            })
        })
        .collect();
    // Let them reach their plug-in.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (code, _) = send(running.mllp["feed"], &siu("FEED1", "Ready")).await;
    let answered = std::time::Instant::now();
    assert_eq!(code, AckCode::AA);
    for handle in looping {
        let cut = handle.await.expect("loop sender");
        assert!(answered < cut, "the feed waited for a loop's timeout");
    }
    stop.cancel();
    running.wait().await;
}

/// A site whose one interface, `interface` (the name picks the hostile guest's
/// behaviour), runs the hostile guest with `grants` (a TOML array) and delivers nowhere.
fn hostile_site(dir: &Path, grants: &str, interface: &str) -> plexus_config::Config {
    let text = format!(
        r#"
[engine]
data_dir = "data"
[http]
listen = "127.0.0.1:0"
[plugins.hostile]
file = "{hostile}"
grants = {grants}
[interfaces.{interface}]
source = {{ type = "mllp", listen = "127.0.0.1:0" }}
chain = ["hostile"]
"#,
        hostile = plexus_test_artifacts::HOSTILE,
    );
    plexus_config::Config::from_toml(&text, &dir.join("site.toml"))
        .unwrap_or_else(|e| panic!("config: {e}"))
}

/// A site whose one interface takes files from `dir/inbox` (created here), polled every
/// 50 ms, and writes them to `dir/out`; returns the inbox and the config.
fn drop_site(dir: &Path) -> (PathBuf, plexus_config::Config) {
    let inbox = dir.join("inbox");
    std::fs::create_dir_all(&inbox).expect("inbox");
    let config = site_with(
        dir,
        r#"{ type = "file", dir = "inbox", poll = "50ms" }"#,
        r#"destinations = [{ name = "out", type = "file", dir = "out" }]"#,
    );
    (inbox, config)
}

/// The files a destination has finished writing: not its `.NAME.tmp` files, which are
/// renamed into place once synced.
fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .filter(|p| {
                    !p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drop_folder_feeds_the_chain_and_files_move_to_processed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (inbox, config) = drop_site(dir.path());
    std::fs::write(inbox.join("a.hl7"), siu("F001", "Roomed")).expect("write");
    std::fs::write(inbox.join("b.hl7"), b"not a message").expect("write");
    std::fs::write(inbox.join("ignored.txt"), siu("F002", "Roomed")).expect("write");
    let (engine, running, stop) = start_config(config).await;

    let out = dir.path().join("out");
    eventually("the message is delivered", || files_in(&out).len() == 1).await;
    let delivered =
        Message::parse_owned(std::fs::read(&files_in(&out)[0]).expect("read")).expect("parses");
    assert_eq!(
        delivered.get("SCH-25").expect("path").as_deref(),
        Some("Started")
    );
    let processed = inbox.join("processed");
    eventually("both .hl7 files are moved", || {
        files_in(&processed).len() == 2
    })
    .await;
    assert!(
        inbox.join("ignored.txt").exists(),
        "the pattern is respected"
    );
    let errors = engine
        .journal()
        .list_errors(&ErrorFilter::default(), 10)
        .expect("errors");
    assert_eq!(errors.len(), 1, "the bad file is in the error queue");
    assert_eq!(errors[0].kind, ErrorKind::Parse);
    let record = engine.journal().show(errors[0].message).expect("show");
    assert_eq!(
        record.inbound.source_peer.as_deref(),
        Some("b.hl7"),
        "the file name is kept"
    );
    stop.cancel();
    running.wait().await;
}

/// An HTTP receiver that answers each POST with the next status from `script` (then
/// 200), and records the bodies it accepted.
async fn http_receiver(script: Vec<u16>) -> (SocketAddr, Arc<Mutex<Vec<Vec<u8>>>>) {
    let (addr, accepted, _) = scripted_receiver(script, None).await;
    (addr, accepted)
}

/// An HTTP(S) receiver that answers each POST with the next status of `script` (then
/// 200) and keeps the bodies it accepted (200). Each accepted request's head is checked
/// for a path and a Host header. Also counts the connections it accepted.
async fn scripted_receiver(
    script: Vec<u16>,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> (
    SocketAddr,
    Arc<Mutex<Vec<Vec<u8>>>>,
    Arc<std::sync::atomic::AtomicUsize>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let script = Arc::new(Mutex::new(std::collections::VecDeque::from(script)));
    let seen = accepted.clone();
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let (seen, script, acceptor) = (seen.clone(), script.clone(), acceptor.clone());
            tokio::spawn(async move {
                match acceptor {
                    None => serve_script(tcp, seen, script).await,
                    Some(acceptor) => {
                        if let Ok(tls) = acceptor.accept(tcp).await {
                            serve_script(tls, seen, script).await;
                        }
                    }
                }
            });
        }
    });
    (addr, accepted, connections)
}

async fn serve_script<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut tcp: S,
    seen: Arc<Mutex<Vec<Vec<u8>>>>,
    script: Arc<Mutex<std::collections::VecDeque<u16>>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        // One request: headers, then Content-Length bytes of body.
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        assert!(head.starts_with("post /hl7 "), "origin-form path: {head}");
        assert!(head.contains("\r\nhost: "), "a Host header: {head}");
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + len {
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = buf[head_end..head_end + len].to_vec();
        buf.drain(..head_end + len);
        let status = script.lock().expect("lock").pop_front().unwrap_or(200);
        if status == 200 {
            seen.lock().expect("lock").push(body);
        }
        // A body larger than one read, as a FHIR server's answer can be: the sender must
        // read it to reuse the connection.
        let body = vec![b'x'; 256 * 1024];
        let location = if (300..400).contains(&status) {
            "Location: http://elsewhere.example/hl7\r\n"
        } else {
            ""
        };
        let reply = format!(
            "HTTP/1.1 {status} X\r\n{location}Content-Length: {}\r\n\r\n",
            body.len()
        );
        if tcp.write_all(reply.as_bytes()).await.is_err() || tcp.write_all(&body).await.is_err() {
            return;
        }
    }
}

/// An `https://` destination with the site's CA: delivered over one kept-alive TLS
/// connection, a 5xx retried on it, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_destinations_deliver_over_tls_with_the_sites_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let cert_pem = cert.cert.pem();
    std::fs::write(dir.path().join("ca.pem"), &cert_pem).expect("ca");
    let server = plexus_mllp::tls::server_config_from_pem_bytes(
        cert_pem.as_bytes(),
        cert.signing_key.serialize_pem().as_bytes(),
    )
    .expect("server config");
    let (addr, accepted, connections) = scripted_receiver(vec![200, 503, 200], Some(server)).await;
    let config = site_with(
        dir.path(),
        r#"{ type = "mllp", listen = "127.0.0.1:0" }"#,
        &format!(
            "destinations = [{{ name = \"api\", type = \"http\", url = \"https://localhost:{}/hl7\", tls = {{ ca = \"ca.pem\" }} }}]\n\
             retry = {{ initial_backoff = \"20ms\", max_backoff = \"50ms\" }}",
            addr.port()
        ),
    );
    let (_engine, running, stop) = start_config(config).await;
    for id in ["T001", "T002", "T003"] {
        let (code, _) = send(running.mllp["feed"], &siu(id, "Ready")).await;
        assert_eq!(code, AckCode::AA);
    }
    eventually("three messages delivered over TLS", || {
        accepted.lock().expect("lock").len() == 3
    })
    .await;
    let ids: Vec<String> = accepted
        .lock()
        .expect("lock")
        .iter()
        .map(|b| {
            Message::parse(b)
                .expect("parses")
                .control_id()
                .unwrap_or_default()
                .into_owned()
        })
        .collect();
    assert_eq!(ids, ["T001", "T002", "T003"]);
    assert_eq!(
        connections.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "one kept-alive connection carried every attempt"
    );
    stop.cancel();
    running.wait().await;

    // An https:// URL with `tls` on a plain http:// URL is a config error.
    let bad = plexus_config::Config::from_toml(
        "[interfaces.a]\nsource = { type = \"mllp\", listen = \"127.0.0.1:0\" }\n\
         destinations = [{ name = \"x\", type = \"http\", url = \"http://h/p\", tls = { ca = \"ca.pem\" } }]\n",
        &dir.path().join("bad.toml"),
    );
    assert!(
        bad.is_err_and(|e| e.to_string().contains("`tls` is for https:// URLs")),
        "plain http with tls is refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_destinations_retry_5xx_and_send_4xx_to_the_error_queue() {
    let dir = tempfile::tempdir().expect("tempdir");
    // First message: 503 twice, then accepted. Second: 400 (permanent). Third: 200.
    // Fourth: a redirect (not followed: permanent, saying where it pointed).
    let (addr, accepted) = http_receiver(vec![503, 503, 200, 400, 200, 302]).await;
    let config = site_with(
        dir.path(),
        r#"{ type = "mllp", listen = "127.0.0.1:0" }"#,
        &format!(
            "destinations = [{{ name = \"api\", type = \"http\", url = \"http://{addr}/hl7\" }}]\n\
             retry = {{ initial_backoff = \"20ms\", max_backoff = \"50ms\" }}"
        ),
    );
    let (engine, running, stop) = start_config(config).await;
    for id in ["W001", "W002", "W003", "W004"] {
        let (code, _) = send(running.mllp["feed"], &siu(id, "Ready")).await;
        assert_eq!(code, AckCode::AA);
    }
    eventually("two messages accepted by the receiver", || {
        accepted.lock().expect("lock").len() == 2
    })
    .await;
    let bodies: Vec<String> = accepted
        .lock()
        .expect("lock")
        .iter()
        .map(|b| {
            Message::parse(b)
                .expect("parses")
                .control_id()
                .unwrap_or_default()
                .into_owned()
        })
        .collect();
    assert_eq!(
        bodies,
        ["W001", "W003"],
        "in order; the refused one is skipped after failing"
    );
    // The worker records a batch's results after the batch.
    let journal = engine.journal().clone();
    eventually("the refusals are recorded", || {
        journal
            .list_errors(&ErrorFilter::default(), 10)
            .is_ok_and(|e| e.len() == 2)
    })
    .await;
    let errors = engine
        .journal()
        .list_errors(&ErrorFilter::default(), 10)
        .expect("errors");
    assert_eq!(errors[0].kind, ErrorKind::Destination);
    assert_eq!(errors[0].stage, "destination:api");
    assert!(errors[0].reason.contains("400"), "{}", errors[0].reason);
    assert!(
        errors[1].reason.contains("302")
            && errors[1]
                .reason
                .contains("(to http://elsewhere.example/hl7)"),
        "{}",
        errors[1].reason
    );
    let first = engine.journal().show(MessageId(1)).expect("show");
    assert_eq!(first.deliveries[0].attempts, 3, "two 503s, then delivered");
    stop.cancel();
    running.wait().await;
}

/// The receiver answers AE to `bad` the first `fails` times it sees it.
async fn flaky_receiver(bad: &'static str, fails: usize) -> Receiver {
    flaky_receiver_on(any_port(), bad, fails).await.0
}

/// [`flaky_receiver`] on `addr`; it also records `(MSH-10, connection)` of each message
/// it accepts.
async fn flaky_receiver_on(
    addr: SocketAddr,
    bad: &'static str,
    fails: usize,
) -> (Receiver, Arc<Mutex<Vec<(String, u64)>>>) {
    let listener = Listener::bind(addr, ListenerConfig::default())
        .await
        .expect("bind receiver");
    let addr = listener.local_addr();
    let received = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::new(Mutex::new(Vec::new()));
    let (seen, by_conn) = (received.clone(), log.clone());
    let refusals = Arc::new(Mutex::new(0_usize));
    let stop = CancellationToken::new();
    let handler = handler_fn(move |payload: Bytes, peer: plexus_mllp::PeerInfo| {
        let (seen, by_conn, refusals) = (seen.clone(), by_conn.clone(), refusals.clone());
        async move {
            let msg = Message::parse(&payload).ok()?;
            let id = msg.control_id().unwrap_or_default().into_owned();
            let status = {
                let mut refused = refusals.lock().expect("lock");
                if id == bad && *refused < fails {
                    *refused += 1;
                    Status::Error
                } else {
                    seen.lock().expect("lock").push(id.clone());
                    by_conn.lock().expect("lock").push((id, peer.conn_id));
                    Status::Accepted
                }
            };
            ack::acknowledge(&msg, status, None, "RCV", "20260101000000").map(Bytes::from)
        }
    });
    tokio::spawn(listener.serve(Arc::new(handler), stop.clone()));
    (
        Receiver {
            addr,
            received,
            stop,
        },
        log,
    )
}

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().expect("addr")
}

/// An MLLP receiver on a free port answering with `handler`; cancel the token to stop it.
async fn serve_receiver<H: plexus_mllp::Handler>(handler: H) -> (SocketAddr, CancellationToken) {
    let listener = Listener::bind(any_port(), ListenerConfig::default())
        .await
        .expect("bind receiver");
    let addr = listener.local_addr();
    let stop = CancellationToken::new();
    tokio::spawn(listener.serve(Arc::new(handler), stop.clone()));
    (addr, stop)
}

/// How many connections the messages in a [`flaky_receiver_on`] log came over.
fn connections_used(log: &Mutex<Vec<(String, u64)>>) -> usize {
    let log = log.lock().expect("lock");
    log.iter()
        .map(|(_, conn)| *conn)
        .collect::<std::collections::HashSet<u64>>()
        .len()
}

/// [`siu`] for patient `MRN{patient:05}`.
fn siu_for(control_id: &str, patient: usize) -> Vec<u8> {
    String::from_utf8(siu(control_id, "Ready"))
        .expect("utf-8")
        .replace("MRN10001", &format!("MRN{patient:05}"))
        .into_bytes()
}

async fn ordering_run(policy: &str) -> Vec<String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let emr = flaky_receiver("O002", 3).await;
    let config = site_with(
        dir.path(),
        r#"{ type = "mllp", listen = "127.0.0.1:0" }"#,
        &format!(
            "error_ack = \"retry\"\n\
             destinations = [{{ name = \"emr\", type = \"mllp\", connect = \"{}\" }}]\n\
             retry = {{ initial_backoff = \"150ms\", max_backoff = \"150ms\", jitter = false, on_head_failure = \"{policy}\" }}",
            emr.addr
        ),
    );
    let (_engine, running, stop) = start_config(config).await;
    for i in 1..=4 {
        let (code, _) = send(running.mllp["feed"], &siu(&format!("O{i:03}"), "Ready")).await;
        assert_eq!(code, AckCode::AA);
    }
    eventually("all four delivered", || emr.received().len() == 4).await;
    stop.cancel();
    running.wait().await;
    emr.stop.cancel();
    emr.received()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_holds_the_queue_behind_a_failing_head_and_skip_lets_it_flow() {
    assert_eq!(
        ordering_run("block").await,
        ["O001", "O002", "O003", "O004"],
        "block: strict arrival order"
    );
    assert_eq!(
        ordering_run("skip").await,
        ["O001", "O003", "O004", "O002"],
        "skip: the others pass the failing one"
    );
}

/// A send that got no answer may have reached the receiver all the same: the retry that
/// follows is flagged as a possible resend. One answered at once is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_an_unanswered_send_is_flagged_as_a_possible_resend() {
    let silent_once = Arc::new(Mutex::new(true));
    let handler = handler_fn(move |payload: Bytes, _peer: plexus_mllp::PeerInfo| {
        let silent_once = silent_once.clone();
        async move {
            let msg = Message::parse(&payload).ok()?;
            if msg.control_id().as_deref() == Some("QUIET1")
                && std::mem::take(&mut *silent_once.lock().expect("lock"))
            {
                return None; // received, never answered
            }
            ack::acknowledge(&msg, Status::Accepted, None, "RCV", "20260101000000").map(Bytes::from)
        }
    });
    let (emr, receiver) = serve_receiver(handler).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = site_with(
        dir.path(),
        r#"{ type = "mllp", listen = "127.0.0.1:0" }"#,
        &format!(
            "destinations = [{{ name = \"emr\", type = \"mllp\", connect = \"{emr}\", ack_timeout = \"300ms\" }}]\n\
             retry = {{ initial_backoff = \"50ms\", max_backoff = \"50ms\", jitter = false }}"
        ),
    );
    let (engine, running, stop) = start_config(config).await;
    for id in ["QUIET1", "PROMPT1"] {
        let (code, _) = send(running.mllp["feed"], &siu(id, "Ready")).await;
        assert_eq!(code, AckCode::AA);
    }
    for id in [MessageId(1), MessageId(2)] {
        eventually("delivered", || all_delivered(&engine, id)).await;
    }
    let delivery = |id| engine.journal().show(id).expect("show").deliveries[0].clone();
    let (quiet, prompt) = (delivery(MessageId(1)), delivery(MessageId(2)));
    assert_eq!(quiet.attempts, 2, "timed out once, then answered");
    assert!(quiet.possible_resend, "the receiver may have it twice");
    assert_eq!(prompt.attempts, 1);
    assert!(!prompt.possible_resend);
    stop.cancel();
    running.wait().await;
    receiver.cancel();
}

/// A frame over the source's limit is refused (AR) and only its first segment is kept,
/// under the MSH-10 its AR echoed; a replay is refused, since it would send that stub on
/// as if it were the message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_too_large_to_keep_is_found_by_its_id_and_never_replayed() {
    let got = Arc::new(Mutex::new(0_usize));
    let seen = got.clone();
    let handler = handler_fn(move |payload: Bytes, _peer: plexus_mllp::PeerInfo| {
        let seen = seen.clone();
        async move {
            *seen.lock().expect("lock") += 1;
            let msg = Message::parse(&payload).ok()?;
            ack::acknowledge(&msg, Status::Accepted, None, "RCV", "20260101000000").map(Bytes::from)
        }
    });
    let (emr, receiver) = serve_receiver(handler).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = site_with(
        dir.path(),
        r#"{ type = "mllp", listen = "127.0.0.1:0", max_frame = "1KiB" }"#,
        &format!("destinations = [{{ name = \"emr\", type = \"mllp\", connect = \"{emr}\" }}]"),
    );
    let (engine, running, stop) = start_config(config).await;
    let mut big = siu("BIG1", "Ready");
    big.extend_from_slice(format!("NTE|1||{}\r", "X".repeat(2000)).as_bytes());
    let (code, ack) = send(running.mllp["feed"], &big).await;
    assert_eq!(code, AckCode::AR);
    assert!(String::from_utf8_lossy(&ack).contains("MSA|AR|BIG1"));

    let errors = engine
        .journal()
        .list_errors(&ErrorFilter::default(), 10)
        .expect("list");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(
        errors[0].control_id.as_deref(),
        Some("BIG1"),
        "found by its id"
    );
    let id = errors[0].message;
    let err = engine
        .replay(id, "sent again", "ops")
        .await
        .expect_err("a stub is not the message");
    assert!(
        matches!(err, plexus_pipeline::OpError::NotKept(m) if m == id),
        "{err}"
    );
    assert!(err.to_string().contains("send it again"), "{err}");
    let record = engine.journal().show(id).expect("show");
    assert!(record.deliveries.is_empty(), "nothing queued");
    assert!(record.errors[0].resolution.is_none(), "still open");
    // A normal message still flows, and only it reaches the receiver.
    let (code, _) = send(running.mllp["feed"], &siu("SMALL1", "Ready")).await;
    assert_eq!(code, AckCode::AA);
    eventually("the small one delivered", || {
        *got.lock().expect("lock") == 1
    })
    .await;
    stop.cancel();
    running.wait().await;
    receiver.cancel();
    assert_eq!(*got.lock().expect("lock"), 1, "the stub never went out");
}

/// A receiver that refuses the whole feed puts every message in the error queue for one
/// cause: they form one group, and `--like` any of them takes them all. (Each reason
/// used to name its message's MSH-10, which made every message a group of its own.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_refusing_the_whole_feed_is_one_group_of_errors() {
    use plexus_pipeline::error_groups::{group_errors, open_errors_like};
    let handler = handler_fn(|payload: Bytes, _peer: plexus_mllp::PeerInfo| async move {
        let msg = Message::parse(&payload).ok()?;
        ack::acknowledge(&msg, Status::Error, None, "RCV", "20260101000000").map(Bytes::from)
    });
    let (emr, refuse) = serve_receiver(handler).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = site_with(
        dir.path(),
        r#"{ type = "mllp", listen = "127.0.0.1:0" }"#,
        &format!("destinations = [{{ name = \"emr\", type = \"mllp\", connect = \"{emr}\" }}]"),
    );
    let (engine, running, stop) = start_config(config).await;
    for i in 1..=3 {
        let (code, _) = send(running.mllp["feed"], &siu(&format!("REF{i}"), "Ready")).await;
        assert_eq!(code, AckCode::AA);
    }
    let open = || {
        engine
            .journal()
            .list_errors(&ErrorFilter::default(), 100)
            .expect("list")
    };
    eventually("all three refused", || open().len() == 3).await;
    let errors = open();
    for e in &errors {
        assert_eq!(e.kind, ErrorKind::Destination);
        assert!(
            e.reason.contains("returned an error for the message (AE)")
                && !e.reason.contains("REF"),
            "{}",
            e.reason
        );
    }
    let groups = group_errors(&errors);
    assert_eq!(groups.len(), 1, "{groups:?}");
    assert_eq!(groups[0].ids.len(), 3);
    let (_, like) = open_errors_like(engine.journal().as_ref(), errors[1].message).expect("like");
    assert_eq!(like.len(), 3);
    stop.cancel();
    running.wait().await;
    refuse.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activations_and_rollbacks_under_load_lose_nothing_and_never_mix_versions() {
    // 100 activations and rollbacks spread over a 50,000-message stream.
    const SENDERS: usize = 8;
    const PER_SENDER: usize = 6_250;
    const SWAPS: usize = 100;
    const TOTAL: usize = SENDERS * PER_SENDER;
    let dir = tempfile::tempdir().expect("tempdir");
    // No destinations: this is about the chain each message ran, and every ACKed
    // message's journal record says which.
    let config = site_with(
        dir.path(),
        r#"{ type = "mllp", listen = "127.0.0.1:0" }"#,
        "destinations = []",
    );
    let engine = Engine::build(config, &FsAssets).expect("engine builds");
    let status = std::fs::read(plexus_test_artifacts::VISIT_STATUS_MAP).expect("wasm");
    let demo = std::fs::read(plexus_test_artifacts::DEMOGRAPHICS_NORMALIZE).expect("wasm");
    let mut grants = plexus_config::Grants::default();
    grants
        .tables
        .insert(plexus_config::Id::new("visit-status").expect("id"));
    let limits = plexus_config::Limits::default();
    let vsm = engine
        .load_plugin("visit-status-map", &status, None, &grants, &limits)
        .expect("load");
    let norm = engine
        .load_plugin(
            "demographics-normalize",
            &demo,
            None,
            &plexus_config::Grants::default(),
            &limits,
        )
        .expect("load");
    // Version A maps then normalises; version B the other way round. A message run
    // half on each would show the same plug-in at both stages.
    let a = vec![vsm.clone(), norm.clone()];
    let b = vec![norm.clone(), vsm.clone()];
    engine
        .activate("feed", a.clone(), "deployer")
        .expect("activate A");

    let stop = CancellationToken::new();
    let running = engine.start(stop.clone()).await.expect("engine starts");
    let src = running.mllp["feed"];
    let acked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let senders: Vec<_> = (0..SENDERS)
        .map(|s| {
            let acked = acked.clone();
            tokio::spawn(async move {
                let mut sender = Sender::new(src.to_string(), SenderConfig::default());
                let mut latencies = Vec::with_capacity(PER_SENDER);
                for i in 0..PER_SENDER {
                    let started = std::time::Instant::now();
                    let delivery = sender
                        .send(&siu(&format!("S{s}-{i:05}"), "Roomed"))
                        .await
                        .expect("accepted");
                    assert_eq!(delivery.ack.as_ref().expect("an ACK").code(), AckCode::AA);
                    latencies.push(started.elapsed());
                    acked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                latencies
            })
        })
        .collect();
    let swapper = {
        let engine = engine.clone();
        let (a, b) = (a.clone(), b.clone());
        let acked = acked.clone();
        tokio::spawn(async move {
            for n in 0..SWAPS {
                // Spread the swaps evenly over the stream.
                while acked.load(std::sync::atomic::Ordering::Relaxed)
                    < TOTAL * (n + 1) / (SWAPS + 2)
                {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                let engine = engine.clone();
                let (a, b) = (a.clone(), b.clone());
                tokio::task::spawn_blocking(move || {
                    if n % 3 == 2 {
                        engine.rollback("feed", "deployer").expect("rollback");
                    } else {
                        engine
                            .activate("feed", if n % 2 == 0 { b } else { a }, "deployer")
                            .expect("activate");
                    }
                })
                .await
                .expect("swap");
            }
        })
    };
    let mut latencies = Vec::with_capacity(TOTAL);
    for s in senders {
        latencies.extend(s.await.expect("sender"));
    }
    swapper.await.expect("swapper");
    let mut swaps = engine.swap_times("feed").expect("swap times");
    assert_eq!(swaps.len(), SWAPS + 1, "every swap happened");
    swaps.sort();
    latencies.sort();
    let pct = |v: &[Duration], p: usize| v[(v.len() * p / 100).min(v.len() - 1)];
    // Figures for the closing note, not assertions: timing on a shared machine is noise.
    eprintln!(
        "{TOTAL} messages, {SWAPS} activations/rollbacks: swap pause p50 {:?} p99 {:?} max {:?}; \
         ACK latency p50 {:?} p99 {:?}",
        pct(&swaps, 50),
        pct(&swaps, 99),
        swaps[swaps.len() - 1],
        pct(&latencies, 50),
        pct(&latencies, 99),
    );

    let digest_a: Vec<String> = a.iter().map(|p| p.sha256().to_owned()).collect();
    let digest_b: Vec<String> = b.iter().map(|p| p.sha256().to_owned()).collect();
    let (mut on_a, mut on_b) = (0, 0);
    for id in 1..=TOTAL as i64 {
        let record = engine
            .journal()
            .show(MessageId(id))
            .expect("every ACKed message is journaled");
        let digests: Vec<String> = record
            .stages
            .iter()
            .map(|s| s.record.plugin_sha256.clone())
            .collect();
        if digests == digest_a {
            on_a += 1;
        } else if digests == digest_b {
            on_b += 1;
        } else {
            panic!("message {id} ran a mixed chain: {digests:?}");
        }
    }
    assert_eq!(on_a + on_b, TOTAL, "zero lost");
    // Every activation and rollback is in the audit trail, and the chain is intact.
    let audit = engine.journal().audit_log(0, 1000).expect("audit");
    assert_eq!(
        audit.len(),
        SWAPS + 1,
        "{:?}",
        audit
            .iter()
            .filter(|e| e.entry.action != "activate" && e.entry.action != "rollback")
            .map(|e| (&e.entry.action, &e.entry.detail))
            .collect::<Vec<_>>()
    );
    assert!(
        audit
            .iter()
            .all(|e| e.entry.actor == "deployer" && e.entry.subject == "interface:feed")
    );
    assert_eq!(
        engine
            .journal()
            .verify_audit()
            .expect("verify")
            .first_broken,
        None
    );
    assert!(
        on_a > 0 && on_b > 0,
        "both versions carried traffic: {on_a} / {on_b}"
    );
    stop.cancel();
    running.wait().await;
}

async fn http_request_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> (u16, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.expect("write");
    tcp.write_all(body).await.expect("write");
    let mut response = Vec::new();
    tcp.read_to_end(&mut response).await.expect("read");
    let text = String::from_utf8_lossy(&response);
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("headers end");
    (status, response[split + 4..].to_vec())
}

/// An MLLP site with no destinations and one admin token per role (`secret-ROLE`),
/// started.
async fn start_admin_site(
    roles: &[&str],
) -> (tempfile::TempDir, Engine, Running, CancellationToken) {
    let tokens: String = roles
        .iter()
        .map(|r| {
            format!(
                "{{ name = \"{r}-token\", role = \"{r}\", sha256 = \"{}\" }},",
                plexus_pipeline::sha256_hex(format!("secret-{r}").as_bytes())
            )
        })
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = site_with(
        dir.path(),
        r#"{ type = "mllp", listen = "127.0.0.1:0" }"#,
        &format!("destinations = []\n\n[admin]\ntokens = [{tokens}]"),
    );
    let (engine, running, stop) = start_config(config).await;
    (dir, engine, running, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_admin_route_rejects_the_wrong_role() {
    let roles = ["viewer", "operator", "deployer", "reviewer", "admin"];
    let (_dir, engine, running, stop) = start_admin_site(&roles).await;
    let (code, _) = send(running.mllp["feed"], &siu("A001", "Teleported")).await;
    assert_eq!(code, AckCode::AE, "message 1 is in the error queue");
    let http = running.http;

    for (method, route, allowed) in plexus_pipeline::ADMIN_ROUTES {
        let path = route.replace("{id}", "1").replace("{name}", "feed");
        let body: &[u8] = if method == &"POST" {
            br#"{"note": "checked"}"#
        } else {
            b""
        };
        let (status, _) = http_request_with(http, method, &path, None, body).await;
        assert_eq!(status, 401, "{method} {path} without a token");
        let (status, _) = http_request_with(http, method, &path, Some("not-a-token"), body).await;
        assert_eq!(status, 401, "{method} {path} with an unknown token");
        for role in roles {
            let token = format!("secret-{role}");
            let (status, reply) = http_request_with(http, method, &path, Some(&token), body).await;
            let may = allowed.iter().any(|r| r.as_str() == role);
            if may {
                assert!(
                    status != 401 && status != 403,
                    "{method} {path} as {role}: {status} {}",
                    String::from_utf8_lossy(&reply)
                );
            } else {
                assert_eq!(status, 403, "{method} {path} as {role}");
            }
        }
    }

    // Content is masked for a viewer; an operator's unmasked view is audited.
    let (_, masked) = http_request_with(
        http,
        "GET",
        "/admin/v1/messages/1",
        Some("secret-viewer"),
        b"",
    )
    .await;
    let masked: serde_json::Value = serde_json::from_slice(&masked).expect("json");
    assert!(masked["raw"].is_null(), "{masked}");
    let audit = engine.journal().audit_log(0, 100).expect("audit");
    assert!(
        audit
            .iter()
            .any(|e| e.entry.action == "unmasked-view" && e.entry.actor == "token:operator-token")
    );
    assert!(audit.iter().any(|e| e.entry.action == "resolve"));
    assert_eq!(
        engine
            .journal()
            .verify_audit()
            .expect("verify")
            .first_broken,
        None
    );
    stop.cancel();
    running.wait().await;
}

/// The admin API groups the open errors by problem, as `plexus errors list --group`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_groups_open_errors_by_problem() {
    let (_dir, _engine, running, stop) = start_admin_site(&["viewer"]).await;
    let src = running.mllp["feed"];
    for (id, status) in [("G1", "Teleported"), ("G2", "Beamed"), ("G3", "Warped")] {
        assert_eq!(send(src, &siu(id, status)).await.0, AckCode::AE);
    }
    // No message type: refused at intake, a problem of its own.
    let untyped = String::from_utf8(siu("G4", "Arrived"))
        .expect("utf-8")
        .replace("SIU^S12^SIU_S12", "");
    assert_eq!(send(src, untyped.as_bytes()).await.0, AckCode::AR);
    let http = running.http;
    let get = |path: &'static str| async move {
        let (status, body) = http_request_with(http, "GET", path, Some("secret-viewer"), b"").await;
        let body = String::from_utf8(body).expect("utf-8");
        let json: serde_json::Value = serde_json::from_str(&body).expect("json");
        (status, body, json)
    };
    let (status, body, v) = get("/admin/v1/errors?group=true").await;
    assert_eq!(status, 200, "{body}");
    for value in ["Teleported", "Beamed", "Warped"] {
        assert!(!body.contains(value), "no field values: {body}");
    }
    assert_eq!(v["groups_total"], 2, "{body}");
    assert_eq!(v["all_grouped"], true, "{body}");
    let first = &v["groups"][0];
    assert_eq!(first["count"], 3, "{body}");
    assert_eq!(first["ids"], serde_json::json!([1, 2, 3]), "{body}");
    assert_eq!(first["kind"], "plugin-fail", "{body}");
    assert_eq!(first["stage"], "plugin:visit-status-map", "{body}");
    assert!(
        first["reason"]
            .as_str()
            .is_some_and(|r| r.contains("missing-mapping at SCH-25-1")),
        "{body}"
    );
    assert_eq!(first["ids_truncated"], false, "{body}");
    assert_eq!(v["groups"][1]["count"], 1, "{body}");
    assert_eq!(v["groups"][1]["kind"], "parse", "{body}");
    assert_eq!(v["open"], 4, "{body}");

    let (_, body, v) = get("/admin/v1/errors?group=true&limit=1").await;
    assert_eq!(v["groups"].as_array().map(Vec::len), Some(1), "{body}");
    assert_eq!(v["groups_total"], 2, "{body}");
    let (status, body, _) = get("/admin/v1/errors?group=true&all=true").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("open errors only"), "{body}");
    stop.cancel();
    running.wait().await;
}

/// A plug-in's failure detail quotes the value it could not map, on purpose (the
/// operator fixes the table with it): the journal keeps it, but only unmasked views show
/// it. The error queue's reason names the plug-in, its version, the kind and the path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plug_ins_failure_detail_is_shown_only_unmasked() {
    let (_dir, engine, running, stop) = start_admin_site(&["viewer", "operator"]).await;
    let (code, ack) = send(running.mllp["feed"], &siu("A001", "Teleported")).await;
    assert_eq!(code, AckCode::AE);
    assert!(!String::from_utf8_lossy(&ack).contains("Teleported"));

    // The journal: a reason without the value; the stage's detail keeps it.
    let errors = engine
        .journal()
        .list_errors(&ErrorFilter::default(), 10)
        .expect("errors");
    let reason = &errors[0].reason;
    let sha = engine.active_chain("feed").expect("chain").digests()[0]
        .1
        .clone();
    assert_eq!(
        reason,
        &format!(
            "plug-in visit-status-map ({}) failed the message: missing-mapping at SCH-25-1",
            &sha[..12]
        )
    );
    let record = engine.journal().show(errors[0].message).expect("show");
    let detail = record.stages[0].record.detail.as_deref().expect("detail");
    assert!(
        detail.starts_with("missing-mapping at SCH-25-1: ") && detail.contains("`Teleported`"),
        "{detail}"
    );

    // A viewer's error list and message view: names, kinds and paths, no value.
    let http = running.http;
    let get = |path: &'static str, role: &'static str| async move {
        let (status, body) =
            http_request_with(http, "GET", path, Some(&format!("secret-{role}")), b"").await;
        assert_eq!(status, 200, "{path} as {role}");
        let body = String::from_utf8(body).expect("utf-8");
        serde_json::from_str::<serde_json::Value>(&body).expect("json");
        body
    };
    let list = get("/admin/v1/errors", "viewer").await;
    assert!(list.contains("missing-mapping at SCH-25-1"), "{list}");
    assert!(!list.contains("Teleported"), "{list}");
    let queue: serde_json::Value = serde_json::from_str(&list).expect("json");
    assert_eq!(queue["open"], 1, "{list}");
    assert!(
        queue["errors"][0]["first_seen_ms"]
            .as_u64()
            .is_some_and(|t| t > 0),
        "{list}"
    );
    assert!(queue["errors"][0]["age_s"].is_u64(), "{list}");
    let by_kind = get("/admin/v1/errors?kind=plugin-fail", "viewer").await;
    assert!(by_kind.contains("missing-mapping at SCH-25-1"), "{by_kind}");
    let none = get("/admin/v1/errors?kind=parse", "viewer").await;
    assert!(none.contains("\"errors\":[]"), "{none}");
    let masked = get("/admin/v1/messages/1", "viewer").await;
    assert!(masked.contains("missing-mapping at SCH-25-1"), "{masked}");
    assert!(!masked.contains("Teleported"), "{masked}");
    let masked = get("/admin/v1/messages/1", "operator").await;
    assert!(
        !masked.contains("Teleported"),
        "masked unless asked: {masked}"
    );

    // The operator's unmasked view (audited) shows the plug-in's words.
    let unmasked = get("/admin/v1/messages/1?unmasked=true", "operator").await;
    let unmasked: serde_json::Value = serde_json::from_str(&unmasked).expect("json");
    let detail = unmasked["stages"][0]["detail"].as_str().expect("detail");
    assert!(
        detail.contains("value `Teleported` has no entry"),
        "{detail}"
    );
    stop.cancel();
    running.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploaded_versions_activate_through_the_gate_or_are_refused_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = site_with(
        dir.path(),
        r#"{ type = "mllp", listen = "127.0.0.1:0" }"#,
        &format!(
            "destinations = []\n{}",
            admin_tokens(&[("release", "deployer", "deploy-secret")])
        ),
    );
    let (engine, running, stop) = start_config(config).await;
    let http = running.http;
    let token = Some("deploy-secret");
    let json = |b: &[u8]| serde_json::from_slice::<serde_json::Value>(b).expect("json");
    let active = |engine: &Engine| engine.active_chain("feed").expect("chain").digests();
    let before = active(&engine);

    // The same mapping, uploaded: stored by digest, then activated.
    let vsm = std::fs::read(plexus_test_artifacts::VISIT_STATUS_MAP).expect("wasm");
    let (status, body) = http_request_with(http, "POST", "/admin/v1/plugins", token, &vsm).await;
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let sha = json(&body)["sha256"].as_str().expect("sha").to_owned();
    assert!(dir.path().join(format!("data/plugins/{sha}.wasm")).exists());
    let activate = |sha: &str| {
        format!(r#"{{"chain": [{{"plugin": "visit-status-map", "sha256": "{sha}"}}]}}"#)
    };
    let (status, body) = http_request_with(
        http,
        "POST",
        "/admin/v1/interfaces/feed/activate",
        token,
        activate(&sha).as_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        json(&body)["capability_changes"][0]["added"],
        serde_json::json!([])
    );

    // A version that asks for a capability the site did not grant is refused, and the
    // running chain is untouched.
    let hostile = std::fs::read(plexus_test_artifacts::HOSTILE).expect("wasm");
    let (status, body) =
        http_request_with(http, "POST", "/admin/v1/plugins", token, &hostile).await;
    assert_eq!(status, 201);
    let hostile_sha = json(&body)["sha256"].as_str().expect("sha").to_owned();
    let (status, body) = http_request_with(
        http,
        "POST",
        "/admin/v1/interfaces/feed/activate",
        token,
        activate(&hostile_sha).as_bytes(),
    )
    .await;
    assert_eq!(status, 422);
    let reason = json(&body)["error"].as_str().expect("error").to_owned();
    assert!(reason.contains("log"), "names the missing grant: {reason}");
    assert_eq!(
        active(&engine),
        before,
        "still the version that was running"
    );

    // A version that loads with the grants but does not pass the plug-in's golden
    // cases is refused too.
    let other = std::fs::read(plexus_test_artifacts::DEMOGRAPHICS_NORMALIZE).expect("wasm");
    let (status, body) = http_request_with(http, "POST", "/admin/v1/plugins", token, &other).await;
    assert_eq!(status, 201);
    let other_sha = json(&body)["sha256"].as_str().expect("sha").to_owned();
    let (status, body) = http_request_with(
        http,
        "POST",
        "/admin/v1/interfaces/feed/activate",
        token,
        activate(&other_sha).as_bytes(),
    )
    .await;
    assert_eq!(status, 422);
    let reason = json(&body)["error"].as_str().expect("error").to_owned();
    assert!(reason.contains("golden case(s) failed"), "{reason}");
    assert_eq!(
        active(&engine),
        before,
        "still the version that was running"
    );

    // Not uploaded, not a component: refused with the reason.
    let (status, body) = http_request_with(
        http,
        "POST",
        "/admin/v1/interfaces/feed/activate",
        token,
        activate(&"ab".repeat(32)).as_bytes(),
    )
    .await;
    assert_eq!(status, 422);
    assert!(String::from_utf8_lossy(&body).contains("has not been uploaded"));
    let (status, body) =
        http_request_with(http, "POST", "/admin/v1/plugins", token, b"not wasm").await;
    assert_eq!(status, 422);
    assert!(
        String::from_utf8_lossy(&body).contains("upload refused, nothing stored"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    // A component no site could ever load (it imports sockets) is refused at upload,
    // not stored to look harmless in the list until an activation fails.
    let net_probe = std::fs::read(plexus_test_artifacts::NET_PROBE).expect("net probe");
    let (status, body) =
        http_request_with(http, "POST", "/admin/v1/plugins", token, &net_probe).await;
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, 422, "{text}");
    assert!(
        text.contains("wasi:sockets") && text.contains("no site can grant"),
        "{text}"
    );

    // A failed message, tried against a candidate before any activation: nothing is
    // journaled or delivered, the verdicts come back.
    let (code, _) = send(running.mllp["feed"], &siu("T001", "Teleported")).await;
    assert_eq!(code, AckCode::AE);
    let failed = engine
        .journal()
        .list_errors(&ErrorFilter::default(), 10)
        .expect("errors")[0]
        .message;
    let stages_before = engine.journal().show(failed).expect("show").stages.len();
    let trial = format!(
        r#"{{"chain": [{{"plugin": "visit-status-map", "sha256": "{sha}"}}], "messages": [{}]}}"#,
        failed.0
    );
    let (status, body) = http_request_with(
        http,
        "POST",
        "/admin/v1/interfaces/feed/trial",
        token,
        trial.as_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let result = &json(&body)["results"][0];
    assert_eq!(
        result["result"], "failed",
        "the same mapping fails it again: {result}"
    );
    assert_eq!(result["path"], "SCH-25-1");
    assert_eq!(
        engine.journal().show(failed).expect("show").stages.len(),
        stages_before,
        "a trial journals nothing"
    );

    let audit = engine.journal().audit_log(0, 100).expect("audit");
    let actions: Vec<&str> = audit.iter().map(|e| e.entry.action.as_str()).collect();
    assert_eq!(actions, ["upload", "activate", "upload", "upload", "trial"]);
    stop.cancel();
    running.wait().await;
}

/// docs/admin-api.yaml documents every admin route, with the roles the code enforces.
#[test]
fn the_openapi_document_lists_every_route_and_its_roles() {
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/admin-api.yaml"),
    )
    .expect("docs/admin-api.yaml");
    for (method, route, roles) in plexus_pipeline::ADMIN_ROUTES {
        let path = route.split('?').next().expect("path");
        let at = doc
            .find(&format!("  {path}:\n"))
            .unwrap_or_else(|| panic!("{path} is not in docs/admin-api.yaml"));
        let section = &doc[at..];
        let section = &section[..section[3..].find("\n  /").map_or(section.len(), |i| i + 3)];
        assert!(
            section.contains(&format!("    {}:", method.to_lowercase())),
            "{method} {path} is not documented"
        );
        let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        assert!(
            section.contains(&names.join(", ")),
            "{method} {path}: the document should say roles {names:?}"
        );
    }
}

/// A candidate shadowing the live chain: its results are journaled and reported (ranked
/// paths, masked examples), nothing of it is delivered, the run survives a restart, and
/// promoting it activates it through the gate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_run_reports_what_a_candidate_would_change_and_promotes_it() {
    let site = Site::new();
    let emr = Receiver::start("127.0.0.1:0".parse().expect("addr")).await;
    let tokens = admin_tokens(&[
        ("release", "deployer", "deploy-secret"),
        ("desk", "viewer", "view-secret"),
        ("ops", "operator", "ops-secret"),
    ]);
    let (engine, running, stop) = start(&site, emr.addr, &tokens).await;
    let http = running.http;
    let json = |b: &[u8]| serde_json::from_slice::<serde_json::Value>(b).expect("json");
    let upload = |path: &'static str| async move {
        let bytes = std::fs::read(path).expect("wasm");
        let (status, body) = http_request_with(
            http,
            "POST",
            "/admin/v1/plugins",
            Some("deploy-secret"),
            &bytes,
        )
        .await;
        assert_eq!(status, 201);
        json(&body)["sha256"].as_str().expect("sha").to_owned()
    };
    let vsm = upload(plexus_test_artifacts::VISIT_STATUS_MAP).await;
    let demo = upload(plexus_test_artifacts::DEMOGRAPHICS_NORMALIZE).await;
    let live = engine.active_chain("intake").expect("chain").digests();

    // Versions uploaded or running are listed, with where they run, and inspectable.
    let (status, body) =
        http_request_with(http, "GET", "/admin/v1/plugins", Some("view-secret"), b"").await;
    assert_eq!(status, 200);
    let listed = json(&body)["plugins"].as_array().expect("plugins").clone();
    let active_on = |sha: &str| {
        listed
            .iter()
            .find(|p| p["sha256"] == sha)
            .unwrap_or_else(|| panic!("{sha} listed"))["active_on"]
            .clone()
    };
    assert_eq!(active_on(&vsm), serde_json::json!(["intake", "scheduling"]));
    assert_eq!(active_on(&demo), serde_json::json!(["scheduling"]));
    let (status, body) = http_request_with(
        http,
        "GET",
        &format!("/admin/v1/plugins/{vsm}"),
        Some("view-secret"),
        b"",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(json(&body)["capabilities"], serde_json::json!(["tables"]));
    // By the prefix `plexus admin interfaces` shows, too.
    let (status, body) = http_request_with(
        http,
        "GET",
        &format!("/admin/v1/plugins/{}", &vsm[..12]),
        Some("view-secret"),
        b"",
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json(&body)["sha256"], serde_json::json!(vsm));

    // The candidate adds name and sex normalisation in front of the status mapping.
    let candidate = format!(
        r#"{{"chain": [{{"plugin": "demographics-normalize", "sha256": "{demo}"}}, {{"plugin": "visit-status-map", "sha256": "{vsm}"}}]}}"#
    );
    let (status, body) = http_request_with(
        http,
        "POST",
        "/admin/v1/interfaces/intake/shadow",
        Some("deploy-secret"),
        candidate.as_bytes(),
    )
    .await;
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let run = json(&body)["run"].as_i64().expect("run id");

    for i in 0..20 {
        let (status, _) = http_request(
            http,
            "POST",
            "/ingest/intake",
            &siu(&format!("S{i:03}"), "Checked In"),
        )
        .await;
        assert_eq!(status, 200);
    }
    // Both chains fail this one the same way.
    let (status, _) =
        http_request(http, "POST", "/ingest/intake", &siu("S999", "Teleported")).await;
    assert_eq!(status, 422);

    let report = |token: &'static str, query: &'static str| async move {
        http_request_with(
            http,
            "GET",
            &format!("/admin/v1/interfaces/intake/shadow{query}"),
            Some(token),
            b"",
        )
        .await
    };
    for _ in 0..400 {
        let (_, body) = report("view-secret", "").await;
        if json(&body)["messages"] == 21 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (status, body) = report("view-secret", "").await;
    assert_eq!(status, 200);
    let r = json(&body);
    assert_eq!(r["run"], run);
    assert_eq!(r["messages"], 21, "{r}");
    assert_eq!(r["changed_output"], 20, "{r}");
    assert_eq!(r["same"], 1, "the poison message fails on both: {r}");
    assert_eq!(r["skipped"], 0);
    assert!(r["ended"].is_null());
    let paths: Vec<(String, u64)> = serde_json::from_value(r["paths"].clone()).expect("paths");
    assert!(
        paths.contains(&("PID-5-1".to_owned(), 20)),
        "the family name differs on every message: {paths:?}"
    );
    assert!(paths.windows(2).all(|w| w[0].1 >= w[1].1), "ranked");
    let example = r["examples"]
        .as_array()
        .expect("examples")
        .iter()
        .find(|e| e["path"] == "PID-5-1")
        .expect("an example for PID-5-1")
        .clone();
    assert_eq!(
        example["active"],
        plexus_pipeline::shadow::mask("testpatient")
    );
    assert_ne!(example["active"], "testpatient", "masked for a viewer");

    // Unmasked needs a role that may see content, and is audited.
    let (status, _) = report("view-secret", "?unmasked=true").await;
    assert_eq!(status, 403);
    let (status, body) = report("ops-secret", "?unmasked=true").await;
    assert_eq!(status, 200);
    let example = json(&body)["examples"]
        .as_array()
        .expect("examples")
        .iter()
        .find(|e| e["path"] == "PID-5-1")
        .expect("example")
        .clone();
    assert_eq!(example["active"], "testpatient");
    assert_ne!(example["candidate"], "testpatient");

    // Nothing the candidate produced was delivered: the outbox holds the live output.
    let outbox = site.path().join("http-outbox");
    eventually("the live messages are written", || {
        std::fs::read_dir(&outbox).map_or(0, |d| d.count()) == 20
    })
    .await;
    for file in files_in(&outbox) {
        let text = std::fs::read_to_string(&file).expect("read");
        assert!(text.contains("testpatient^alpha"), "live output delivered");
    }
    assert_eq!(
        engine.active_chain("intake").expect("chain").digests(),
        live
    );

    // The run survives a restart.
    stop.cancel();
    running.wait().await;
    drop(engine);
    let (engine, running, stop) = start(&site, emr.addr, &tokens).await;
    let http = running.http;
    let resumed = engine
        .shadow_report("intake", None, Default::default())
        .expect("report");
    assert_eq!(resumed.run, run);
    assert!(resumed.ended.is_none());
    assert_eq!(resumed.skipped, Some(0), "live again after the restart");

    // Promote: the candidate becomes the active chain through the gate.
    let (status, body) = http_request_with(
        http,
        "POST",
        "/admin/v1/interfaces/intake/shadow/promote",
        Some("deploy-secret"),
        b"",
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    // Which stages the promotion took out of the live path or put in, as an activation
    // says: the candidate puts demographics-normalize in front.
    let promoted: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(
        promoted["stages_removed"],
        serde_json::json!([]),
        "{promoted}"
    );
    assert_eq!(
        promoted["stages_added"],
        serde_json::json!(["demographics-normalize"]),
        "{promoted}"
    );
    let now: Vec<String> = engine
        .active_chain("intake")
        .expect("chain")
        .digests()
        .into_iter()
        .map(|(_, sha)| sha)
        .collect();
    assert_eq!(now, vec![demo.clone(), vsm.clone()]);
    let after = engine
        .shadow_report("intake", None, Default::default())
        .expect("report");
    assert_eq!(after.ended.as_deref(), Some("promoted"));
    let (status, _) = http_request_with(
        http,
        "DELETE",
        "/admin/v1/interfaces/intake/shadow",
        Some("deploy-secret"),
        b"",
    )
    .await;
    assert_eq!(status, 404, "no shadow run left to stop");

    let audit = engine.journal().audit_log(0, 100).expect("audit");
    let actions: Vec<&str> = audit.iter().map(|e| e.entry.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "upload",
            "upload",
            "shadow-start",
            "unmasked-view",
            "activate",
            "shadow-promote"
        ]
    );
    stop.cancel();
    running.wait().await;
}

/// `[http] tls` serves the admin API (and everything else on that port) over HTTPS only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_server_speaks_only_https_when_tls_is_configured() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let site = Site::new();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let (cert_pem, key_pem) = (cert.cert.pem(), cert.signing_key.serialize_pem());
    std::fs::write(site.path().join("cert.pem"), &cert_pem).expect("cert");
    std::fs::write(site.path().join("key.pem"), &key_pem).expect("key");
    let tokens = admin_tokens(&[("desk", "viewer", "view-secret")]);
    let emr_port = ReservedPort::new();
    let mut config = site.config(emr_port.addr, &tokens);
    config.http.tls = Some(plexus_config::ServerTls {
        cert: site.path().join("cert.pem"),
        key: site.path().join("key.pem"),
    });
    let (_engine, running, stop) = start_config(config).await;

    let client =
        plexus_mllp::tls::client_config_from_pem_bytes(cert_pem.as_bytes()).expect("client");
    let tcp = tokio::net::TcpStream::connect(running.http)
        .await
        .expect("connect");
    let mut tls = tokio_rustls::TlsConnector::from(client)
        .connect(
            plexus_mllp::tls::server_name("localhost").expect("name"),
            tcp,
        )
        .await
        .expect("TLS handshake");
    tls.write_all(
        b"GET /admin/v1/interfaces HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer view-secret\r\nConnection: close\r\n\r\n",
    )
    .await
    .expect("write");
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"scheduling\""), "{answer}");

    // Plain HTTP on the same port gets no HTTP answer.
    let mut plain = tokio::net::TcpStream::connect(running.http)
        .await
        .expect("connect");
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut answer)).await;
    assert!(
        !String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"),
        "plain HTTP must not be served"
    );
    stop.cancel();
    running.wait().await;
}

/// Grant changes need the reviewer role, take effect on the running versions at once,
/// refuse to take away what a running version imports, survive a restart, and are
/// audited with the grants before and after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grant_changes_need_a_reviewer_apply_at_once_and_persist() {
    let site = Site::new();
    let emr = Receiver::start("127.0.0.1:0".parse().expect("addr")).await;
    let tokens = admin_tokens(&[
        ("sec", "reviewer", "review-secret"),
        ("release", "deployer", "deploy-secret"),
    ]);
    let (engine, running, stop) = start(&site, emr.addr, &tokens).await;
    let http = running.http;
    let put = |token: &'static str, grants: &'static str| async move {
        http_request_with(
            http,
            "PUT",
            "/admin/v1/grants/visit-status-map",
            Some(token),
            format!(r#"{{"grants": {grants}}}"#).as_bytes(),
        )
        .await
    };
    let (status, _) = put("deploy-secret", r#"["tables:visit-status", "log"]"#).await;
    assert_eq!(status, 403, "a deployer may not change grants");

    // Taking away the table the running version reads is refused; nothing changes.
    let digests = engine.active_chain("scheduling").expect("chain").digests();
    let (status, body) = put("review-secret", "[]").await;
    assert_eq!(status, 422);
    let reason = String::from_utf8_lossy(&body);
    assert!(reason.contains("tables"), "names the capability: {reason}");
    assert!(
        reason.contains("grant change refused") && reason.contains("keep \\\"tables:"),
        "says what to keep, not to edit the config the grants override: {reason}"
    );
    for bad in [r#"["tables:nope"]"#, r#"["network"]"#] {
        let (status, body) = put("review-secret", bad).await;
        assert_eq!(status, 422, "{}", String::from_utf8_lossy(&body));
    }
    assert!(!engine.grants_of("visit-status-map").expect("grants").log);

    let (status, body) = put("review-secret", r#"["tables:visit-status", "log"]"#).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let change: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(change["before"], serde_json::json!(["tables:visit-status"]));
    assert_eq!(
        change["after"],
        serde_json::json!(["log", "tables:visit-status"])
    );
    assert_eq!(
        change["relinked"],
        serde_json::json!(["intake", "scheduling"])
    );
    assert_eq!(
        engine.active_chain("scheduling").expect("chain").digests(),
        digests,
        "the same versions, relinked"
    );
    let (code, _) = send(running.mllp["scheduling"], &siu("G001", "Roomed")).await;
    assert_eq!(code, AckCode::AA, "the relinked chain runs");
    let (status, body) = http_request_with(
        http,
        "GET",
        "/admin/v1/grants/visit-status-map",
        Some("deploy-secret"),
        b"",
    )
    .await;
    assert_eq!(status, 200);
    let now: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(now["overridden"], true);
    assert_eq!(now["config"], serde_json::json!(["tables:visit-status"]));

    // The change outlives a restart.
    stop.cancel();
    running.wait().await;
    drop(engine);
    assert!(site.path().join("data/grants.json").exists());
    let (engine, running, stop) = start(&site, emr.addr, &tokens).await;
    assert!(engine.grants_of("visit-status-map").expect("grants").log);
    let audit = engine.journal().audit_log(0, 100).expect("audit");
    let change = audit
        .iter()
        .find(|e| e.entry.action == "grant-change")
        .expect("audited");
    assert_eq!(change.entry.actor, "token:sec");
    assert!(change.entry.detail.contains("before [tables:visit-status]"));
    assert_eq!(
        audit
            .iter()
            .filter(|e| e.entry.action == "grant-change")
            .count(),
        1,
        "refused changes are not recorded as changes"
    );
    stop.cancel();
    running.wait().await;
}

/// Reads `n` MLLP replies from `tcp` (or fewer, when the engine stops answering).
async fn read_replies(tcp: &mut tokio::net::TcpStream, n: usize) -> Vec<String> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = vec![0; 4096];
    while got.iter().filter(|&&b| b == 0x1c).count() < n {
        let read = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf))
            .await
            .expect("a reply in time")
            .expect("read");
        assert!(read > 0, "connection closed early");
        got.extend_from_slice(&buf[..read]);
    }
    String::from_utf8_lossy(&got)
        .split('\x1c')
        .filter(|s| s.contains("MSA"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_that_parse_but_cannot_be_handled_are_answered_and_never_forwarded() {
    use tokio::io::AsyncWriteExt;
    let site = Site::new();
    let emr = Receiver::start("127.0.0.1:0".parse().expect("addr")).await;
    let (engine, running, stop) = start(&site, emr.addr, "").await;
    let mut tcp = tokio::net::TcpStream::connect(running.mllp["scheduling"])
        .await
        .expect("connect");
    let frame = |payload: &[u8]| [&[0x0b][..], payload, b"\x1c\r"].concat();

    // No MSH-10: refused at once (AR, ERR 101 at MSH-10) and kept in the error queue,
    // not accepted and then undeliverable.
    let no_id = siu("", "Checked In");
    tcp.write_all(&frame(&no_id)).await.expect("write");
    // An acknowledgement sent to a source: journaled, not answered, not forwarded.
    let ack_in = b"MSH|^~\\&|EHR|NORTHSIDE|SCHED|NORTHSIDE|20260105083000||ACK^S12|ACK1|P|2.5.1\rMSA|AA|X1\r";
    tcp.write_all(&frame(ack_in)).await.expect("write");
    // A raw 0x1C inside a field: the frame runs to its real end and is refused whole.
    let stray = [&siu("STRAY1", "Checked In")[..], b"NTE|1||abc\x1cdef\r"].concat();
    tcp.write_all(&frame(&stray)).await.expect("write");
    tcp.write_all(&frame(&siu("FINE1", "Checked In")))
        .await
        .expect("write");
    // No message type: refused as no MSH-10 is.
    let no_type = String::from_utf8(siu("NOTYPE1", "Checked In"))
        .expect("utf-8")
        .replacen("SIU^S12^SIU_S12", "", 1);
    tcp.write_all(&frame(no_type.as_bytes()))
        .await
        .expect("write");
    let replies = read_replies(&mut tcp, 4).await;
    assert_eq!(replies.len(), 4, "{replies:?}");
    assert!(replies[3].contains("MSA|AR|NOTYPE1"), "{}", replies[3]);
    assert!(
        replies[3].contains("|101") && replies[3].contains("MSH^1^9^1"),
        "ERR 101 at MSH-9: {}",
        replies[3]
    );
    assert!(replies[0].contains("MSA|AR|"), "{}", replies[0]);
    assert!(replies[0].contains("|101"), "ERR-3 101: {}", replies[0]);
    assert!(
        replies[0].contains("MSH^1^10"),
        "ERR-2 at MSH-10: {}",
        replies[0]
    );
    assert!(replies[1].contains("MSA|AR|"), "{}", replies[1]);
    assert!(replies[1].contains("0x1C"), "{}", replies[1]);
    assert!(replies[2].contains("MSA|AA|FINE1"), "{}", replies[2]);
    eventually("FINE1 delivered", || emr.received() == ["FINE1"]).await;

    let journal = engine.journal();
    let errors = journal
        .list_errors(&ErrorFilter::default(), 10)
        .expect("errors");
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(
        errors.iter().any(|e| e.path.as_deref() == Some("MSH-9-1")),
        "{errors:?}"
    );
    let refused = errors
        .iter()
        .find(|e| e.path.as_deref() == Some("MSH-10"))
        .expect("the refused message is in the error queue");
    assert_eq!(refused.stage, "intake");
    assert_eq!(
        journal.show(refused.message).expect("show").inbound.raw,
        no_id
    );
    // Replay cannot fix it (only the sender can): refused again, nothing owed.
    let again = engine
        .replay(refused.message, "tried again", "ops")
        .await
        .expect("replay");
    assert!(
        matches!(&again, ReplayOutcome::FailedAgain(f) if f.path.as_deref() == Some("MSH-10")),
        "{again:?}"
    );
    assert!(
        journal
            .show(refused.message)
            .expect("show")
            .deliveries
            .is_empty()
    );
    let whole = errors
        .iter()
        .find(|e| e.path.is_none())
        .expect("the 0x1C message is in the error queue");
    assert_eq!(
        journal.show(whole.message).expect("show").inbound.raw,
        stray,
        "kept whole, not cut at the stray byte"
    );
    // The ACK: journaled, nothing owed to any destination.
    let id = (1..=10)
        .map(MessageId)
        .find(|id| {
            journal
                .show(*id)
                .is_ok_and(|r| r.inbound.control_id.as_deref() == Some("ACK1"))
        })
        .expect("the ACK is journaled");
    let record = journal.show(id).expect("show");
    assert!(record.deliveries.is_empty(), "{:?}", record.deliveries);
    assert!(record.processed);
    // Nor does a replay forward it: it was never in the error queue.
    let again = engine
        .replay(id, "tried again", "ops")
        .await
        .expect_err("no open error");
    assert!(again.to_string().contains("no open error"), "{again}");
    assert!(journal.show(id).expect("show").deliveries.is_empty());

    // A message the journal cannot store is answered even when MSH-15 asked for no
    // answer: otherwise the sender would take it as delivered. (A trigger stands in for a
    // full disk.)
    let conn =
        rusqlite::Connection::open(plexus_pipeline::journal_path(&site.config(emr.addr, "")))
            .expect("open journal");
    conn.busy_timeout(Duration::from_secs(5))
        .expect("busy timeout");
    conn.execute_batch(
        "CREATE TRIGGER refuse_full BEFORE INSERT ON messages WHEN NEW.control_id = 'FULL1'
         BEGIN SELECT RAISE(ABORT, 'database or disk is full (test)'); END;",
    )
    .expect("trigger");
    let full = String::from_utf8(siu("FULL1", "Checked In"))
        .expect("utf-8")
        .replacen("|P|2.5.1\r", "|P|2.5.1|||NE|NE\r", 1);
    tcp.write_all(&frame(full.as_bytes())).await.expect("write");
    let replies = read_replies(&mut tcp, 1).await;
    // MSH-15 set means enhanced mode: CE, a commit error (send it again).
    assert!(replies[0].contains("MSA|CE|FULL1"), "{}", replies[0]);
    assert!(replies[0].contains("send it again"), "{}", replies[0]);

    stop.cancel();
    running.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sloppy_terminators_a_bom_and_blank_lines_are_accepted_and_sent_on_strictly() {
    let site = Site::new();
    let emr = Receiver::start("127.0.0.1:0".parse().expect("addr")).await;
    let (engine, running, stop) = start(&site, emr.addr, "").await;
    // As many real senders write files: a byte order mark, LF line ends, blank lines.
    let strict = siu("LF001", "Checked In");
    let sloppy = [
        b"\xEF\xBB\xBF".as_slice(),
        &strict
            .iter()
            .map(|&b| if b == b'\r' { b'\n' } else { b })
            .collect::<Vec<u8>>(),
        b"\n\n",
    ]
    .concat();
    let (code, _) = send(running.mllp["scheduling"], &sloppy).await;
    assert_eq!(code, AckCode::AA);
    eventually("delivered", || emr.received() == ["LF001"]).await;
    eventually("archived", || !files_in(&site.outbox()).is_empty()).await;
    let out = std::fs::read(&files_in(&site.outbox())[0]).expect("archive");
    assert!(out.starts_with(b"MSH|"), "no BOM on the way out");
    assert!(
        !out.contains(&b'\n') && out.ends_with(b"\r"),
        "CR-terminated"
    );
    assert!(!out.windows(2).any(|w| w == b"\r\r"), "no blank lines");
    let msg = Message::parse(&out).expect("parses");
    assert_eq!(msg.get("SCH-25").expect("path").as_deref(), Some("Started"));
    // The journal keeps what the sender sent, byte for byte.
    let id = MessageId(1);
    assert_eq!(engine.journal().show(id).expect("show").inbound.raw, sloppy);
    stop.cancel();
    running.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interface_charset_reads_latin1_from_a_sender_that_does_not_say_so() {
    let site = Site::new();
    let emr = Receiver::start("127.0.0.1:0".parse().expect("addr")).await;
    let (engine, running, stop) = start(&site, emr.addr, r#"charset = "8859/1""#).await;
    // Latin-1 bytes, MSH-18 empty: refused on an interface left at the default, read
    // here.
    let latin1 = String::from_utf8(siu("L001", "Checked In"))
        .expect("utf-8")
        .replacen("^alpha", "^\u{1}lpha", 1)
        .into_bytes()
        .into_iter()
        .map(|b| if b == 1 { 0xE4 } else { b })
        .collect::<Vec<u8>>();
    assert!(Message::parse(&latin1).is_err(), "not UTF-8");
    use tokio::io::AsyncWriteExt;
    let mut tcp = tokio::net::TcpStream::connect(running.mllp["scheduling"])
        .await
        .expect("connect");
    tcp.write_all(&[&[0x0b][..], &latin1, b"\x1c\r"].concat())
        .await
        .expect("write");
    let replies = read_replies(&mut tcp, 1).await;
    assert!(replies[0].contains("MSA|AA|L001"), "{}", replies[0]);
    eventually("delivered", || emr.received() == ["L001"]).await;
    // The archive is a destination of its own, with its own worker (and an fsync).
    eventually("archived", || !files_in(&site.outbox()).is_empty()).await;
    let out = std::fs::read(&files_in(&site.outbox())[0]).expect("archive");
    let msg = Message::parse_with_charset(&out, plexus_hl7::Charset::Latin1).expect("parses");
    assert_eq!(msg.get("SCH-25").expect("path").as_deref(), Some("Started"));
    assert_eq!(
        msg.get("PID-5-2")
            .expect("path")
            .map(|n| n.to_lowercase())
            .as_deref(),
        Some("älpha")
    );
    assert!(
        std::str::from_utf8(&out).is_err(),
        "still Latin-1 on the way out"
    );
    assert!(
        engine
            .journal()
            .list_errors(&ErrorFilter::default(), 10)
            .expect("errors")
            .is_empty()
    );
    stop.cancel();
    running.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_file_stored_in_part_goes_on_where_it_stopped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (inbox, config) = drop_site(dir.path());
    let journal_file = plexus_pipeline::journal_path(&config);
    let engine = Engine::build(config, &FsAssets).expect("engine builds");
    // The journal refuses the second message (a trigger stands in for a full disk).
    let conn = rusqlite::Connection::open(&journal_file).expect("open journal");
    conn.busy_timeout(Duration::from_secs(5))
        .expect("busy timeout");
    conn.execute_batch(
        "CREATE TRIGGER refuse_b002 BEFORE INSERT ON messages WHEN NEW.control_id = 'B002'
         BEGIN SELECT RAISE(ABORT, 'database or disk is full (test)'); END;",
    )
    .expect("trigger");
    let stop = CancellationToken::new();
    let running = engine.start(stop.clone()).await.expect("engine starts");
    let batch: Vec<u8> = ["B001", "B002", "B003"]
        .iter()
        .flat_map(|id| siu(id, "Roomed"))
        .collect();
    std::fs::write(inbox.join("batch.hl7"), &batch).expect("write");

    let out = dir.path().join("out");
    eventually("the first message is delivered", || {
        files_in(&out).len() == 1
    })
    .await;
    // A few polls later it is still waiting for the second, not storing the first again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(inbox.join("batch.hl7").exists(), "left in place");
    conn.execute_batch("DROP TRIGGER refuse_b002")
        .expect("drop trigger");
    eventually("all three are delivered", || files_in(&out).len() == 3).await;
    eventually("the file is moved", || {
        files_in(&inbox.join("processed")).len() == 1
    })
    .await;
    let stored: i64 = conn
        .query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
        .expect("count");
    assert_eq!(stored, 3, "each message stored once");
    stop.cancel();
    running.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_keep_each_patients_order_and_a_failing_head_holds_only_its_lane() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Patient 1's first message is refused (AE, retried) five times, 150 ms apart.
    let (emr, by_conn) = flaky_receiver_on(any_port(), "P1-1", 5).await;
    let config = site_with(
        dir.path(),
        r#"{ type = "mllp", listen = "127.0.0.1:0" }"#,
        &format!(
            "error_ack = \"retry\"\n\
             order_by = \"PID-3-1\"\n\
             destinations = [{{ name = \"emr\", type = \"mllp\", connect = \"{}\", connections = 4 }}]\n\
             retry = {{ initial_backoff = \"150ms\", max_backoff = \"150ms\", jitter = false }}",
            emr.addr
        ),
    );
    let (engine, running, stop) = start_config(config).await;
    let (patients, per_patient) = (6, 4);
    for n in 1..=per_patient {
        for p in 1..=patients {
            let msg = siu_for(&format!("P{p}-{n}"), p);
            let (code, _) = send(running.mllp["feed"], &msg).await;
            assert_eq!(code, AckCode::AA);
        }
    }
    eventually("every message delivered", || {
        emr.received().len() == patients * per_patient
    })
    .await;
    stop.cancel();
    running.wait().await;
    emr.stop.cancel();

    let received = emr.received();
    let position = |id: &str| received.iter().position(|r| r == id).expect("received");
    for p in 1..=patients {
        let order: Vec<usize> = (1..=per_patient)
            .map(|n| position(&format!("P{p}-{n}")))
            .collect();
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "patient {p} out of order: {received:?}"
        );
    }
    // Patients on other lanes than patient 1 went through while patient 1's head was
    // being retried; every message on its lane waited behind it.
    let lane = |p: usize| plexus_pipeline::order_key(&format!("MRN{p:05}")) % 4;
    let held = position("P1-1");
    let (mut passed, mut waited) = (0, 0);
    for p in 2..=patients {
        let at: Vec<usize> = (1..=per_patient)
            .map(|n| position(&format!("P{p}-{n}")))
            .collect();
        if lane(p) == lane(1) {
            assert!(
                at.iter().all(|&i| i > held),
                "patient {p} passed patient 1's head on its lane: {received:?}"
            );
            waited += 1;
        } else {
            // Sent right after P1-1, which is refused for at least 750 ms.
            assert!(
                at[0] < held,
                "patient {p} waited for another lane: {received:?}"
            );
            passed += 1;
        }
    }
    assert!(
        passed > 0 && waited > 0,
        "the patients cover both cases: {passed} passed, {waited} waited"
    );
    let connections = connections_used(&by_conn);
    assert!(
        connections >= 2,
        "the messages used {connections} connection(s)"
    );
    let first = engine.journal().show(MessageId(1)).expect("show");
    assert_eq!(first.deliveries[0].attempts, 6, "five AEs, then delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_built_without_order_by_keeps_each_patients_order_when_spread_over_four() {
    let dir = tempfile::tempdir().expect("tempdir");
    let emr_port = ReservedPort::new();
    let emr_addr = emr_port.addr;
    let config = |lanes: &str| {
        site_with(
            dir.path(),
            r#"{ type = "mllp", listen = "127.0.0.1:0" }"#,
            &format!(
                "{lanes}\n\
                 destinations = [{{ name = \"emr\", type = \"mllp\", connect = \"{emr_addr}\"{} }}]\n\
                 retry = {{ initial_backoff = \"50ms\", max_backoff = \"100ms\", max_attempts = 1000 }}",
                if lanes.is_empty() {
                    ""
                } else {
                    ", connections = 4"
                }
            ),
        )
    };
    let (patients, before, after) = (5, 3, 2);
    let send_round = |running: &Running, n: usize| {
        let to = running.mllp["feed"];
        async move {
            for p in 1..=patients {
                let msg = siu_for(&format!("P{p}-{n}"), p);
                let (code, _) = send(to, &msg).await;
                assert_eq!(code, AckCode::AA);
            }
        }
    };
    // First run: one connection, no `order_by`, the receiver down: a queue without keys.
    let engine = Engine::build(config(""), &FsAssets).expect("engine builds");
    let stop = CancellationToken::new();
    let running = engine.start(stop.clone()).await.expect("engine starts");
    for n in 1..=before {
        send_round(&running, n).await;
    }
    stop.cancel();
    running.wait().await;
    drop(engine);

    // Second run: `order_by` and four connections; more messages for the same patients
    // arrive before the receiver is back. The old ones must still go first.
    let engine =
        Engine::build(config("order_by = \"PID-3-1\""), &FsAssets).expect("engine builds again");
    let stop = CancellationToken::new();
    let running = engine
        .start(stop.clone())
        .await
        .expect("engine starts again");
    for n in before + 1..=before + after {
        send_round(&running, n).await;
    }
    // While the receiver is down, /metrics shows the queue per lane and in all.
    let total = patients * (before + after);
    let (status, body) = http_request(running.http, "GET", "/metrics", b"").await;
    assert_eq!(status, 200);
    let metrics = String::from_utf8_lossy(&body).into_owned();
    let lanes: Vec<usize> = metrics
        .lines()
        .filter(|l| l.starts_with("plexus_lane_depth{interface=\"feed\",destination=\"emr\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    assert_eq!(lanes.len(), 4, "every lane, empty or not, in:\n{metrics}");
    assert_eq!(lanes.iter().sum::<usize>(), total, "{metrics}");
    assert!(
        metrics.lines().any(|l| l
            == format!("plexus_queue_depth{{interface=\"feed\",destination=\"emr\"}} {total}")),
        "{metrics}"
    );
    let (emr, by_conn) = flaky_receiver_on(emr_port.release(), "", 0).await;
    eventually("every message delivered", || {
        emr.received().len() == patients * (before + after)
    })
    .await;
    stop.cancel();
    running.wait().await;
    emr.stop.cancel();
    let received = emr.received();
    for p in 1..=patients {
        let mine: Vec<&String> = received
            .iter()
            .filter(|id| id.starts_with(&format!("P{p}-")))
            .collect();
        let want: Vec<String> = (1..=before + after).map(|n| format!("P{p}-{n}")).collect();
        assert_eq!(
            mine,
            want.iter().collect::<Vec<_>>(),
            "patient {p}: {received:?}"
        );
    }
    let connections = connections_used(&by_conn);
    assert!(connections >= 2, "{connections} connection(s)");
}

/// A journal whose lane reads are slow, so that commits, and the pushes to the lanes'
/// feeds that follow them, land while a worker reads: before its snapshot and after it.
/// Its commit answers come a little late too, so that some arrive after a read that
/// already returned their rows has brought the feed into sync. That is the moment a
/// feed comes into sync from; everything else is the real journal.
struct SlowLaneReads {
    inner: plexus_journal::SqliteJournal,
    reads: std::sync::atomic::AtomicUsize,
}

mod slow_lane_reads {
    use super::SlowLaneReads;
    use plexus_journal::*;
    use std::time::{Duration, SystemTime};

    const PAUSE: Duration = Duration::from_millis(5);
    const LATE_ANSWER: Duration = Duration::from_micros(300);

    impl Journal for SlowLaneReads {
        fn next_in_lane(
            &self,
            interface: &str,
            destination: &str,
            lane: u32,
            due: Option<SystemTime>,
            skip: &[MessageId],
            limit: usize,
        ) -> Result<Vec<PendingDelivery>> {
            std::thread::sleep(PAUSE);
            let read = self
                .inner
                .next_in_lane(interface, destination, lane, due, skip, limit);
            // Every other read returns at once: answers still on their way then arrive
            // after the feed is in sync.
            let n = self
                .reads
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if n.is_multiple_of(2) {
                std::thread::sleep(PAUSE);
            }
            read
        }
        fn ingest_detached(
            &self,
            inbound: Inbound,
            processing: Processing,
            done: Box<dyn FnOnce(Result<Appended>) + Send>,
        ) {
            let late = Box::new(move |appended| {
                std::thread::sleep(LATE_ANSWER);
                done(appended)
            });
            self.inner.ingest_detached(inbound, processing, late)
        }
        fn answers_in_commit_order(&self) -> bool {
            self.inner.answers_in_commit_order()
        }
        fn record_attempts_detached(
            &self,
            attempts: Vec<Attempt>,
            done: Box<dyn FnOnce(Result<()>) + Send>,
        ) {
            self.inner.record_attempts_detached(attempts, done)
        }
        fn payloads(&self, ids: &[MessageId]) -> Result<Vec<Result<Vec<u8>>>> {
            self.inner.payloads(ids)
        }
        fn append(&self, inbound: Inbound) -> Result<Appended> {
            self.inner.append(inbound)
        }
        fn record_stage(&self, stage: StageRecord) -> Result<()> {
            self.inner.record_stage(stage)
        }
        fn ingest(&self, inbound: Inbound, processing: Processing) -> Result<Appended> {
            self.inner.ingest(inbound, processing)
        }
        fn process(&self, id: MessageId, processing: Processing) -> Result<()> {
            self.inner.process(id, processing)
        }
        fn record_attempts(&self, attempts: Vec<Attempt>) -> Result<()> {
            self.inner.record_attempts(attempts)
        }
        fn next_due(
            &self,
            interface: &str,
            destination: &str,
            now: SystemTime,
            limit: usize,
        ) -> Result<Vec<PendingDelivery>> {
            self.inner.next_due(interface, destination, now, limit)
        }
        fn owed_without_order_key(
            &self,
            interface: &str,
            after: MessageId,
            limit: usize,
        ) -> Result<Vec<(MessageId, Vec<u8>)>> {
            self.inner.owed_without_order_key(interface, after, limit)
        }
        fn set_order_keys(&self, keys: Vec<(MessageId, i64)>) -> Result<()> {
            self.inner.set_order_keys(keys)
        }
        fn set_lanes(&self, interface: &str, destination: &str, lanes: Lanes) -> Result<u64> {
            self.inner.set_lanes(interface, destination, lanes)
        }
        fn mark_processed(&self, id: MessageId) -> Result<()> {
            self.inner.mark_processed(id)
        }
        fn enqueue(&self, id: MessageId, destination: &str) -> Result<()> {
            self.inner.enqueue(id, destination)
        }
        fn next_pending(
            &self,
            interface: &str,
            destination: &str,
            limit: usize,
        ) -> Result<Vec<PendingDelivery>> {
            self.inner.next_pending(interface, destination, limit)
        }
        fn mark_attempt(
            &self,
            id: MessageId,
            destination: &str,
            result: DeliveryResult,
        ) -> Result<()> {
            self.inner.mark_attempt(id, destination, result)
        }
        fn payload(&self, id: MessageId) -> Result<Vec<u8>> {
            self.inner.payload(id)
        }
        fn error(&self, report: ErrorReport) -> Result<()> {
            self.inner.error(report)
        }
        fn list_errors(&self, filter: &ErrorFilter, limit: usize) -> Result<Vec<ErrorEntry>> {
            self.inner.list_errors(filter, limit)
        }
        fn show(&self, id: MessageId) -> Result<MessageRecord> {
            self.inner.show(id)
        }
        fn resolve_audited(
            &self,
            id: MessageId,
            note: &str,
            audit: plexus_journal::AuditEntry,
        ) -> Result<plexus_journal::AuditRecord> {
            self.inner.resolve_audited(id, note, audit)
        }
        fn process_replay(
            &self,
            id: MessageId,
            processing: Processing,
            resolve_note: Option<&str>,
            audit: plexus_journal::AuditEntry,
        ) -> Result<plexus_journal::AuditRecord> {
            self.inner
                .process_replay(id, processing, resolve_note, audit)
        }
        fn queue_depths(&self) -> Result<Vec<QueueDepth>> {
            self.inner.queue_depths()
        }
        fn error_stats(&self, interface: Option<&str>) -> Result<ErrorStats> {
            self.inner.error_stats(interface)
        }
        fn flag_possible_resends(&self, window: usize) -> Result<u64> {
            self.inner.flag_possible_resends(window)
        }
        fn unfinished(&self) -> Result<Vec<Unfinished>> {
            self.inner.unfinished()
        }
        fn audit(&self, entry: AuditEntry) -> Result<AuditRecord> {
            self.inner.audit(entry)
        }
        fn audit_log(&self, after: i64, limit: usize) -> Result<Vec<AuditRecord>> {
            self.inner.audit_log(after, limit)
        }
        fn verify_audit(&self) -> Result<AuditVerification> {
            self.inner.verify_audit()
        }
        fn shadow_start(&self, run: ShadowRun) -> Result<i64> {
            self.inner.shadow_start(run)
        }
        fn shadow_end(&self, run: i64, how: &str) -> Result<()> {
            self.inner.shadow_end(run, how)
        }
        fn shadow_record(&self, results: Vec<ShadowResult>) -> Result<()> {
            self.inner.shadow_record(results)
        }
        fn shadow_runs(&self, interface: Option<&str>) -> Result<Vec<ShadowRunRecord>> {
            self.inner.shadow_runs(interface)
        }
        fn shadow_results(
            &self,
            run: i64,
            after: MessageId,
            limit: usize,
        ) -> Result<Vec<ShadowResult>> {
            self.inner.shadow_results(run, after, limit)
        }
        fn shadow_output(&self, run: i64, message: MessageId) -> Result<Option<Vec<u8>>> {
            self.inner.shadow_output(run, message)
        }
        fn prune_delivered(&self, older_than: SystemTime) -> Result<u64> {
            self.inner.prune_delivered(older_than)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lanes_fed_while_they_read_deliver_each_message_once_in_each_patients_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let emr = Receiver::start(any_port()).await;
    let config = site_with(
        dir.path(),
        r#"{ type = "mllp", listen = "127.0.0.1:0" }"#,
        &format!(
            "order_by = \"PID-3-1\"\n\
             destinations = [{{ name = \"emr\", type = \"mllp\", connect = \"{}\", connections = 4 }}]",
            emr.addr
        ),
    );
    let path = plexus_pipeline::journal_path(&config);
    std::fs::create_dir_all(path.parent().expect("data dir")).expect("data dir");
    let journal = SlowLaneReads {
        inner: plexus_journal::SqliteJournal::open(&path).expect("journal"),
        reads: std::sync::atomic::AtomicUsize::new(0),
    };
    let engine = Engine::with_journal(config, &FsAssets, Arc::new(journal)).expect("engine builds");
    let stop = CancellationToken::new();
    let running = engine.start(stop.clone()).await.expect("engine starts");
    let src = running.mllp["feed"];
    // Eight senders side by side, three patients each, sixty messages each.
    let (senders, per_sender) = (8, 60);
    let tasks: Vec<_> = (0..senders)
        .map(|s| {
            tokio::spawn(async move {
                for n in 0..per_sender {
                    let patient = s * 3 + n % 3;
                    let (code, _) = send(src, &siu_for(&format!("T{s}-{n}"), patient)).await;
                    assert_eq!(code, AckCode::AA);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("sender");
    }
    let total = senders * per_sender;
    eventually("every message delivered", || emr.received().len() >= total).await;
    // Time for a second copy to show up, were one coming (a feed refresh included).
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.cancel();
    running.wait().await;
    emr.stop.cancel();

    let received = emr.received();
    let unique: std::collections::HashSet<&String> = received.iter().collect();
    assert_eq!(
        (received.len(), unique.len()),
        (total, total),
        "each message exactly once"
    );
    let position: std::collections::HashMap<&str, usize> = received
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    for s in 0..senders {
        for first in 0..3 {
            let order: Vec<usize> = (first..per_sender)
                .step_by(3)
                .map(|n| position[format!("T{s}-{n}").as_str()])
                .collect();
            assert!(
                order.windows(2).all(|w| w[0] < w[1]),
                "patient {} out of order: {received:?}",
                s * 3 + first
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_engine_on_the_same_data_folder_is_refused_until_the_first_stops() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A file destination: an MLLP one to a port nobody listens on could, once the OS
    // hands that port to another test's receiver, deliver there.
    let config = || {
        site_with(
            dir.path(),
            r#"{ type = "mllp", listen = "127.0.0.1:0" }"#,
            r#"destinations = [{ name = "out", type = "file", dir = "out" }]"#,
        )
    };
    let first = Engine::build(config(), &FsAssets).expect("engine builds");
    let stop = CancellationToken::new();
    let running = first.start(stop.clone()).await.expect("engine starts");
    // Building takes no lock (`plexus errors replay` builds one beside a running engine);
    // starting does, before it binds, reads or delivers anything.
    let second = Engine::build(config(), &FsAssets).expect("a second engine builds");
    let err = second
        .start(CancellationToken::new())
        .await
        .expect_err("a second engine on one data folder is refused");
    assert!(
        matches!(err, plexus_pipeline::BuildError::Locked { .. }),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("another engine is running") && text.contains("engine.lock"),
        "{text}"
    );
    // The first still serves.
    let (code, _) = send(running.mllp["feed"], &siu_for("LOCK-1", 1)).await;
    assert_eq!(code, AckCode::AA);
    stop.cancel();
    running.wait().await;
    drop(first);
    // Once the first has stopped, the lock is free again.
    let stop = CancellationToken::new();
    let running = second
        .start(stop.clone())
        .await
        .expect("starts once the first has stopped");
    stop.cancel();
    running.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drop_file_that_cannot_be_moved_is_journaled_once_and_moved_when_it_can() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (inbox, config) = drop_site(dir.path());
    // A file where `processed/` should go: every move fails until it is removed.
    std::fs::write(inbox.join("processed"), b"in the way").expect("blocker");
    std::fs::write(inbox.join("visit.hl7"), siu("MV-1", "Roomed")).expect("write");
    let (engine, running, stop) = start_config(config).await;

    let out = dir.path().join("out");
    eventually("the message delivered", || files_in(&out).len() == 1).await;
    // Ten polls or so with the move failing: the file is not taken again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(inbox.join("visit.hl7").exists(), "left in place");
    assert!(engine.journal().show(MessageId(1)).is_ok());
    assert!(
        engine.journal().show(MessageId(2)).is_err(),
        "journaled once, not at every poll"
    );
    // Once the way is clear, the move goes through.
    std::fs::remove_file(inbox.join("processed")).expect("unblock");
    eventually("the file moved", || {
        files_in(&inbox.join("processed")).len() == 1 && !inbox.join("visit.hl7").exists()
    })
    .await;
    // A producer reusing the name: the archived copy is kept, the new one beside it.
    std::fs::write(inbox.join("visit.hl7"), siu("MV-2", "Ready")).expect("write");
    eventually("the second file moved beside the first", || {
        files_in(&inbox.join("processed")).len() == 2
    })
    .await;
    let archived = std::fs::read(inbox.join("processed").join("visit.hl7")).expect("first");
    assert!(String::from_utf8_lossy(&archived).contains("MV-1"));
    let second = std::fs::read(inbox.join("processed").join("visit.hl7.1")).expect("second");
    assert!(String::from_utf8_lossy(&second).contains("MV-2"));
    assert!(engine.journal().show(MessageId(3)).is_err());
    stop.cancel();
    running.wait().await;
}

/// A chain activated through the admin API outlives a restart (it used to be replaced
/// by the config's older chain without a word); the config's chain stays one rollback
/// away; an activation whose version is gone stops the start, naming the way out; and
/// once the config names another chain, the config wins and the old entry is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_activated_chain_outlives_a_restart_until_the_config_names_another() {
    let dir = tempfile::tempdir().expect("tempdir");
    let site = || {
        site_with(
            dir.path(),
            r#"{ type = "mllp", listen = "127.0.0.1:0" }"#,
            "destinations = []",
        )
    };
    let kept = dir.path().join("data/chains.json");
    let active = |engine: &Engine| engine.active_chain("feed").expect("chain").digests();
    let mut grants = plexus_config::Grants::default();
    grants
        .tables
        .insert(plexus_config::Id::new("visit-status").expect("id"));
    let limits = plexus_config::Limits::default();

    // Another version of visit-status-map, uploaded to the store and activated.
    let engine = Engine::build(site(), &FsAssets).expect("engine builds");
    let configured = active(&engine);
    let other = std::fs::read(plexus_test_artifacts::NO_STD).expect("wasm");
    let sha = engine.store_plugin(&other).expect("stored").sha256;
    let version = engine
        .load_plugin("visit-status-map", &other, None, &grants, &limits)
        .expect("loads");
    engine
        .activate("feed", vec![version], "release")
        .expect("activated");
    let deployed = vec![("visit-status-map".to_owned(), sha.clone())];
    assert_eq!(active(&engine), deployed);
    assert!(kept.exists(), "kept for the next start");
    drop(engine);

    // A restart runs what was deployed; a rollback puts the config's chain back and
    // forgets the activation.
    let engine = Engine::build(site(), &FsAssets).expect("engine builds");
    assert_eq!(active(&engine), deployed, "the deployed version survives");
    engine.rollback("feed", "release").expect("rolled back");
    assert_eq!(active(&engine), configured);
    drop(engine);
    let engine = Engine::build(site(), &FsAssets).expect("engine builds");
    assert_eq!(active(&engine), configured, "the rollback survives too");

    // Activated again, then its stored file is lost: the start refuses rather than run
    // the older chain, and says how to go on.
    let version = engine
        .load_plugin("visit-status-map", &other, None, &grants, &limits)
        .expect("loads");
    engine
        .activate("feed", vec![version], "release")
        .expect("activated");
    drop(engine);
    let stored = dir.path().join(format!("data/plugins/{sha}.wasm"));
    std::fs::rename(&stored, dir.path().join("aside.wasm")).expect("moved away");
    let err = Engine::build(site(), &FsAssets).expect_err("the deployed version is gone");
    let text = err.to_string();
    assert!(
        matches!(err, plexus_pipeline::BuildError::ActivatedChain(_))
            && text.contains("interface feed")
            && text.contains("release")
            && text.contains("chains.json")
            && text.contains("is missing"),
        "{text}"
    );
    // `plexus check` says so too, before any start.
    let err = plexus_pipeline::verify(&site(), &FsAssets).expect_err("check predicts it");
    assert!(
        matches!(err, plexus_pipeline::BuildError::ActivatedChain(_)),
        "{err}"
    );
    std::fs::rename(dir.path().join("aside.wasm"), &stored).expect("put back");
    assert_eq!(
        active(&Engine::build(site(), &FsAssets).expect("builds again")),
        deployed
    );
    let checked = plexus_pipeline::verify(&site(), &FsAssets).expect("check passes");
    assert!(
        checked
            .notes
            .iter()
            .any(|n| n.contains("interface feed will run") && n.contains("release")),
        "{:?}",
        checked.notes
    );

    // The config now names another version: it runs, and starting drops the entry, so
    // going back to the old config later does not bring the activation back.
    let mut edited = site();
    let plugin = edited
        .plugins
        .values_mut()
        .next()
        .expect("visit-status-map");
    plugin.file = plexus_config::Source::Path(plexus_test_artifacts::DEMOGRAPHICS_NORMALIZE.into());
    let engine = Engine::build(edited, &FsAssets).expect("engine builds");
    let now = active(&engine);
    assert_ne!(now, deployed);
    assert_ne!(now, configured);
    let stop = CancellationToken::new();
    let running = engine.start(stop.clone()).await.expect("starts");
    stop.cancel();
    running.wait().await;
    let audit = engine.journal().audit_log(0, 100).expect("audit");
    let dropped = audit
        .iter()
        .find(|r| r.entry.action == "activation-dropped")
        .expect("the start audits the activation it drops");
    assert_eq!(dropped.entry.subject, "interface:feed");
    assert!(
        dropped.entry.detail.contains("changed"),
        "{}",
        dropped.entry.detail
    );
    drop(engine);
    let left: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&kept).expect("file")).expect("json");
    assert_eq!(left, serde_json::json!({}), "the stale entry is gone");
    assert_eq!(
        active(&Engine::build(site(), &FsAssets).expect("engine builds")),
        configured
    );
}

/// A kept chain that runs a version the engine had only from the config's files (a
/// plug-in the config defines but the interface's chain does not name) is copied into
/// the plug-in store, so the next start finds it after that file changes; once the
/// config no longer defines a plug-in the kept chain runs, the config's chain runs.
#[test]
fn a_kept_chain_keeps_its_configured_versions_and_yields_to_a_removed_plug_in() {
    let dir = tempfile::tempdir().expect("tempdir");
    let demo_file = dir.path().join("demo.wasm");
    std::fs::copy(plexus_test_artifacts::DEMOGRAPHICS_NORMALIZE, &demo_file).expect("copy");
    let site = |with_demo: bool| {
        let extra = if with_demo {
            format!(
                "destinations = []\n[plugins.demographics-normalize]\nfile = \"{}\"",
                demo_file.display()
            )
        } else {
            "destinations = []".to_owned()
        };
        site_with(
            dir.path(),
            r#"{ type = "mllp", listen = "127.0.0.1:0" }"#,
            &extra,
        )
    };
    let active = |engine: &Engine| engine.active_chain("feed").expect("chain").digests();
    let engine = Engine::build(site(true), &FsAssets).expect("engine builds");
    let configured = active(&engine);
    let demo_sha = plexus_pipeline::sha256_hex(&std::fs::read(&demo_file).expect("read"));
    let mut deployed = configured.clone();
    deployed.push((
        "demographics-normalize".to_owned(),
        demo_sha[..10].to_owned(),
    ));
    engine
        .activate_stored("feed", &deployed, "release")
        .expect("activated (a 10-digit prefix will do)");
    deployed[1].1 = demo_sha.clone();
    assert_eq!(active(&engine), deployed, "full digests run");
    assert!(
        dir.path()
            .join(format!("data/plugins/{demo_sha}.wasm"))
            .exists(),
        "the configured-only version is in the store"
    );
    drop(engine);

    // The stored copy serves the restore even with the config's file gone.
    std::fs::remove_file(&demo_file).expect("removed");
    std::fs::copy(plexus_test_artifacts::DEMOGRAPHICS_NORMALIZE, &demo_file).expect("back");
    let engine = Engine::build(site(true), &FsAssets).expect("engine builds");
    assert_eq!(active(&engine), deployed);
    drop(engine);

    // The config no longer defines it: the config's chain runs.
    let engine = Engine::build(site(false), &FsAssets).expect("engine builds");
    assert_eq!(active(&engine), configured);
    drop(engine);

    // The config names another version of it: that is an edit too, and the config wins.
    std::fs::copy(plexus_test_artifacts::NO_STD, &demo_file).expect("another version");
    let engine = Engine::build(site(true), &FsAssets).expect("engine builds");
    assert_eq!(active(&engine), configured);
}

/// An activation whose chain cannot be kept for the next start (here the temporary file
/// cannot be written) does not take effect: the running chain stays, the caller is told,
/// and the audit log, which named the activation, says it did not take.
#[test]
fn an_activation_that_cannot_be_kept_does_not_take_effect() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = site_with(
        dir.path(),
        r#"{ type = "mllp", listen = "127.0.0.1:0" }"#,
        "destinations = []",
    );
    let engine = Engine::build(config, &FsAssets).expect("engine builds");
    let before = engine.active_chain("feed").expect("chain").digests();
    let other = std::fs::read(plexus_test_artifacts::NO_STD).expect("wasm");
    engine.store_plugin(&other).expect("stored");
    let mut grants = plexus_config::Grants::default();
    grants
        .tables
        .insert(plexus_config::Id::new("visit-status").expect("id"));
    let version = engine
        .load_plugin(
            "visit-status-map",
            &other,
            None,
            &grants,
            &plexus_config::Limits::default(),
        )
        .expect("loads");
    std::fs::create_dir_all(dir.path().join("data/chains.json.tmp")).expect("in the way");
    let err = engine
        .activate("feed", vec![version], "release")
        .expect_err("cannot be kept");
    assert!(
        matches!(err, plexus_pipeline::OpError::ChainNotKept(_))
            && err.to_string().contains("chains.json"),
        "{err}"
    );
    assert_eq!(
        engine.active_chain("feed").expect("chain").digests(),
        before
    );
    let audit = engine.journal().audit_log(0, 100).expect("audit");
    let actions: Vec<&str> = audit.iter().map(|r| r.entry.action.as_str()).collect();
    assert_eq!(actions, ["activate", "activate-not-kept"]);
}

#[test]
fn the_configured_version_activates_without_an_upload() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = site_with(
        dir.path(),
        r#"{ type = "mllp", listen = "127.0.0.1:0" }"#,
        "destinations = []",
    );
    let engine = Engine::build(config, &FsAssets).expect("engine builds");
    let running = engine.active_chain("feed").expect("chain").digests();
    // Nothing uploaded: the version the site config names is known all the same, so a
    // deployer can send the whole chain back with one stage changed.
    assert!(!dir.path().join("data/plugins").exists());
    engine
        .activate_stored("feed", &running, "test")
        .expect("the configured version activates");
    assert_eq!(
        engine.active_chain("feed").expect("chain").digests(),
        running
    );
    // So does a prefix of its digest, as `plexus admin interfaces` shows it.
    let short: Vec<(String, String)> = running
        .iter()
        .map(|(name, sha)| (name.clone(), sha[..12].to_owned()))
        .collect();
    engine
        .activate_stored("feed", &short, "test")
        .expect("a 12-digit prefix names it");
    assert_eq!(
        engine.active_chain("feed").expect("chain").digests(),
        running
    );
    // Any other digest still has to be uploaded first.
    let err = engine
        .activate_stored(
            "feed",
            &[("visit-status-map".to_owned(), "ab".repeat(32))],
            "test",
        )
        .expect_err("not uploaded");
    assert!(err.to_string().contains("has not been uploaded"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_that_could_never_send_fails_check_and_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = site_with(
        dir.path(),
        r#"{ type = "mllp", listen = "127.0.0.1:0" }"#,
        r#"destinations = [{ name = "emr", type = "http", url = "https://emr.example:8443/in", tls = { ca = "missing-ca.pem" } }]"#,
    );
    // `plexus check` runs `verify`: it reads the CA file as the start would.
    let err = plexus_pipeline::verify(&config, &FsAssets).expect_err("the CA file is missing");
    let text = err.to_string();
    assert!(
        text.contains("destination emr cannot start") && text.contains("missing-ca.pem"),
        "{text}"
    );
    let engine = Engine::build(config, &FsAssets).expect("engine builds");
    let err = engine
        .start(CancellationToken::new())
        .await
        .expect_err("refuses to start rather than queue for ever");
    assert!(
        matches!(err, plexus_pipeline::BuildError::Destination { .. }),
        "{err}"
    );
}

#[test]
fn a_missing_drop_folder_fails_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = site_with(
        dir.path(),
        r#"{ type = "file", dir = "inbx" }"#,
        r#"destinations = [{ name = "out", type = "file", dir = "out" }]"#,
    );
    let err = plexus_pipeline::verify(&config, &FsAssets).expect_err("no such folder");
    let text = err.to_string();
    assert!(
        text.contains("drop folder") && text.contains("inbx") && text.contains("fix `dir`"),
        "{text}"
    );
    std::fs::create_dir_all(dir.path().join("inbx")).expect("folder");
    plexus_pipeline::verify(&config, &FsAssets).expect("passes once it exists");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_refuses_a_request_without_a_token_before_reading_its_body() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().expect("tempdir");
    let config = site_with(
        dir.path(),
        r#"{ type = "mllp", listen = "127.0.0.1:0" }"#,
        &format!(
            "destinations = []\n{}",
            admin_tokens(&[("ops", "operator", "ops-secret")])
        ),
    );
    let (_engine, running, stop) = start_config(config).await;
    // Announces 15 MB and sends none of it: the answer must not wait for the body.
    for path in ["/admin/v1/plugins", "/admin/v1/messages/abc/replay"] {
        let mut tcp = tokio::net::TcpStream::connect(running.http)
            .await
            .expect("connect");
        let head =
            format!("POST {path} HTTP/1.1\r\nHost: test\r\nContent-Length: 15000000\r\n\r\n");
        tcp.write_all(head.as_bytes()).await.expect("write");
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf))
            .await
            .expect("answered without the body")
            .expect("read");
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(text.starts_with("HTTP/1.1 401"), "{path}: {text}");
        assert!(text.contains("bearer token"), "{path}: {text}");
    }
    // With a token, a JSON route takes small bodies only.
    let big = format!(r#"{{"note": "{}"}}"#, "x".repeat(1 << 20));
    let (status, _) = http_request_with(
        running.http,
        "POST",
        "/admin/v1/messages/1/resolve",
        Some("ops-secret"),
        big.as_bytes(),
    )
    .await;
    assert_eq!(status, 413);
    // What axum refuses for us is JSON, as every other admin error is.
    for (method, path, body) in [
        ("GET", "/admin/v1/messages/abc", &b""[..]),
        ("POST", "/admin/v1/messages/1/resolve", b"not json"),
        ("GET", "/admin/v1/no-such-route", b""),
        ("DELETE", "/admin/v1/interfaces", b""),
    ] {
        let (status, body) =
            http_request_with(running.http, method, path, Some("ops-secret"), body).await;
        assert!((400..500).contains(&status), "{path}: {status}");
        let json: serde_json::Value = serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("{path}: {e}: {}", String::from_utf8_lossy(&body)));
        assert!(
            json["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{json}"
        );
    }
    // The scheme is case-insensitive.
    let mut tcp = tokio::net::TcpStream::connect(running.http)
        .await
        .expect("connect");
    tcp.write_all(
        b"GET /admin/v1/interfaces HTTP/1.1\r\nHost: t\r\nConnection: close\r\nAuthorization: bearer ops-secret\r\n\r\n",
    )
    .await
    .expect("write");
    let mut response = Vec::new();
    tcp.read_to_end(&mut response).await.expect("read");
    assert!(
        response.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&response)
    );
    stop.cancel();
    running.wait().await;
}

#[test]
fn a_version_no_interface_runs_keeps_no_instances_until_a_rollback() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = site_with(
        dir.path(),
        r#"{ type = "mllp", listen = "127.0.0.1:0" }"#,
        "destinations = []",
    );
    let engine = Engine::build(config, &FsAssets).expect("engine builds");
    // The hostile test guest asks for reuse; on `counter` it reports how many messages
    // its instance has seen.
    let wasm = std::fs::read(plexus_test_artifacts::HOSTILE).expect("wasm");
    let mut grants = plexus_config::Grants::default();
    (grants.log, grants.reuse_instance) = (true, true);
    let limits = plexus_config::Limits::default();
    let load = || {
        engine
            .load_plugin("hostile", &wasm, None, &grants, &limits)
            .expect("load")
    };
    let (old, new) = (load(), load());
    let ctx = plexus_sandbox::Context {
        interface: "counter".to_owned(),
        site: "test".to_owned(),
        message_id: "C1".to_owned(),
        received_at_ms: 0,
    };
    let seen = |plugin: &plexus_sandbox::Plugin| {
        let run = plugin.run(siu_message(), &ctx).expect("runs");
        match run.outcome {
            plexus_sandbox::Outcome::Fail(f) => f.detail,
            other => panic!("counter reports through a failure, got {other:?}"),
        }
    };
    engine
        .activate("feed", vec![old.clone()], "deployer")
        .expect("activate");
    assert_eq!(
        (seen(&old), seen(&old)),
        ("seen: 1".into(), "seen: 2".into())
    );
    // Left behind by the next activation: its instances go, and none are kept.
    engine
        .activate("feed", vec![new.clone()], "deployer")
        .expect("activate");
    assert_eq!(
        (seen(&old), seen(&old)),
        ("seen: 1".into(), "seen: 1".into())
    );
    assert_eq!(
        (seen(&new), seen(&new)),
        ("seen: 1".into(), "seen: 2".into())
    );
    // A rollback puts it back, and it keeps instances again; the version it replaced
    // keeps none.
    engine.rollback("feed", "deployer").expect("rollback");
    assert_eq!(
        (seen(&old), seen(&old)),
        ("seen: 1".into(), "seen: 2".into())
    );
    assert_eq!(
        (seen(&new), seen(&new)),
        ("seen: 1".into(), "seen: 1".into())
    );
}

fn siu_message() -> Message<'static> {
    Message::parse_owned(siu("C1", "Roomed")).expect("parses")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_keeps_instances_only_for_a_plugin_granted_reuse() {
    // The hostile guest asks for reuse; on an interface named `counter` it fails
    // (`rejected`) with how many messages its instance has seen.
    for (grants, expected) in [
        (r#"["log", "reuse-instance"]"#, [1, 2, 3]),
        (r#"["log"]"#, [1, 1, 1]),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = hostile_site(dir.path(), grants, "counter");
        let (engine, running, stop) = start_config(config).await;
        for n in 0..3 {
            let (code, _) = send(running.mllp["counter"], &siu(&format!("C{n}"), "Roomed")).await;
            assert_eq!(code, AckCode::AE, "counter reports as a failure");
        }
        let mut details = Vec::new();
        for error in engine
            .journal()
            .list_errors(&ErrorFilter::default(), 10)
            .expect("errors")
        {
            let shown = engine.journal().show(error.message).expect("show");
            details.push(shown.stages[0].record.detail.clone().unwrap_or_default());
        }
        // One message at a time: with the grant, a single kept instance takes them all.
        let expected: Vec<String> = expected
            .iter()
            .map(|n| format!("rejected: seen: {n}"))
            .collect();
        assert_eq!(details, expected, "grants {grants}");
        stop.cancel();
        running.wait().await;
    }
}
