//! Process-level durability: `kill -9` the engine at random moments while a sender
//! streams messages, restart it each time, and check that every message the engine
//! acknowledged reaches the destination, in order. Delivery is at least once: a message
//! the engine sent but had not yet recorded as delivered when it died is sent again after
//! the restart, with the same MSH-10, and a sender that resends a message whose ACK it
//! never got produces a journal entry flagged as a duplicate. The same holds with four
//! connections to the destination and `order_by = "PID-3-1"`, per patient.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

const MESSAGES: usize = 400;
const KILLS: usize = 4;

fn frame(payload: &[u8]) -> Vec<u8> {
    [&[0x0b][..], payload, &[0x1c, 0x0d]].concat()
}

/// Reads one MLLP frame; `None` when the connection ends or times out first.
fn read_frame(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(&[0x1c, 0x0d]) {
        match stream.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            _ => return None,
        }
    }
    let start = buf.iter().position(|&b| b == 0x0b)? + 1;
    Some(buf[start..buf.len() - 2].to_vec())
}

fn field(msg: &[u8], path: &str) -> Option<String> {
    plexus_hl7::Message::parse(msg)
        .ok()?
        .get(path)
        .ok()
        .flatten()
        .map(|v| v.into_owned())
}

/// The receiving system: ACKs everything, records each MSH-10 in arrival order.
fn start_receiver() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind receiver");
    let addr = listener.local_addr().expect("addr").to_string();
    let received = Arc::new(Mutex::new(Vec::new()));
    let seen = received.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let seen = seen.clone();
            std::thread::spawn(move || {
                while let Some(msg) = read_frame(&mut conn) {
                    let id = field(&msg, "MSH-10").unwrap_or_default();
                    seen.lock().expect("lock").push(id.clone());
                    let ack = format!(
                        "MSH|^~\\&|EMR|X|PLEXUS|X|20260101||ACK|A{id}|P|2.5\rMSA|AA|{id}\r"
                    );
                    if conn.write_all(&frame(ack.as_bytes())).is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, received)
}

/// Patients the messages cycle through (`MRN{n % PATIENTS}`).
const PATIENTS: usize = 7;

/// How the engine delivers to the receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lanes {
    /// One connection: strict arrival order.
    One,
    /// Four connections with `order_by = "PID-3-1"`: arrival order per patient.
    FourByPatient,
}

fn site(dir: &Path, receiver: &str, lanes: Lanes) -> std::path::PathBuf {
    let (order_by, connections) = match lanes {
        Lanes::One => ("", ""),
        Lanes::FourByPatient => ("order_by = \"PID-3-1\"", ", connections = 4"),
    };
    let toml = format!(
        r#"
[engine]
data_dir = "data"

[http]
listen = "127.0.0.1:0"

[tables.visit-status]
file = "builtin:visit-status.csv"

[plugins.visit-status-map]
file = "builtin:visit-status-map"
grants = ["tables:visit-status"]

[interfaces.scheduling]
source = {{ type = "mllp", listen = "127.0.0.1:0" }}
chain = ["visit-status-map"]
{order_by}
destinations = [{{ name = "emr", type = "mllp", connect = "{receiver}", ack_timeout = "5s"{connections} }}]
retry = {{ max_attempts = 1000, initial_backoff = "20ms", max_backoff = "200ms" }}
"#
    );
    let path = dir.join("site.toml");
    std::fs::write(&path, toml).expect("write config");
    path
}

fn start_engine(config: &Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_plexus"))
        .args(["run", "--log", "error", "--config"])
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn plexus");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("engine printed its banner")
            .expect("read banner");
        if let Some(rest) = line.split("MLLP on ").nth(1) {
            break rest.trim().to_owned();
        }
    };
    // Keep draining stdout so the engine never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}

/// A small deterministic generator, so a failing run can be repeated from its seed.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below
    }
}

fn message(n: usize) -> Vec<u8> {
    let statuses = ["Arrived", "Checked In", "Roomed", "Ready"];
    format!(
        "MSH|^~\\&|SCHED|CLINIC|EHR|CLINIC|20260105083000||SIU^S12|C{n:05}|P|2.5.1\r\
         SCH|{n}^S|{n}^E||||NEW|||20|MIN|^^^202601050900||||||||||||||{}\r\
         PID|1||MRN{}^^^CLINIC^MR||TESTPATIENT^SYNTHETIC||19800101|F\r",
        statuses[n % statuses.len()],
        n % PATIENTS
    )
    .into_bytes()
}

#[test]
fn kill_9_at_random_moments_loses_no_acknowledged_message() {
    crash_run(Lanes::One);
}

#[test]
fn kill_9_with_four_connections_keeps_each_patients_order() {
    crash_run(Lanes::FourByPatient);
}

fn crash_run(lanes: Lanes) {
    let seed = std::env::var("PLEXUS_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("crash test seed {seed} (set PLEXUS_CRASH_SEED to repeat)");
    let mut rng = Lcg(seed);

    let dir = tempfile::tempdir().expect("tempdir");
    let (receiver, received) = start_receiver();
    let config = site(dir.path(), &receiver, lanes);
    let (child, addr) = start_engine(&config);
    let engine = Arc::new(Mutex::new((child, addr)));

    // The killer: kill -9 at random moments, then restart.
    let killer = {
        let engine = engine.clone();
        let config = config.clone();
        let delays: Vec<u64> = (0..KILLS).map(|_| 150 + rng.next(600)).collect();
        std::thread::spawn(move || {
            for delay in delays {
                std::thread::sleep(Duration::from_millis(delay));
                let mut guard = engine.lock().expect("lock");
                guard.0.kill().expect("kill -9");
                guard.0.wait().expect("reaped");
                *guard = start_engine(&config);
            }
        })
    };

    // The sender: one message at a time; a message without an ACK is sent again (as a
    // real sending system does), on a new connection to whatever engine is up.
    let mut acked = Vec::new();
    let mut resends = 0;
    let mut n = 0;
    let mut conn: Option<TcpStream> = None;
    let deadline = Instant::now() + Duration::from_secs(240);
    while n < MESSAGES {
        assert!(Instant::now() < deadline, "sender made no progress");
        let stream = match &mut conn {
            Some(stream) => stream,
            None => {
                let addr = engine.lock().expect("lock").1.clone();
                match TcpStream::connect(&addr) {
                    Ok(stream) => {
                        stream
                            .set_read_timeout(Some(Duration::from_secs(10)))
                            .expect("timeout");
                        conn.insert(stream)
                    }
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                }
            }
        };
        let payload = message(n);
        let answer = stream
            .write_all(&frame(&payload))
            .ok()
            .and_then(|()| read_frame(stream));
        match answer.as_deref().and_then(|a| field(a, "MSA-1")) {
            Some(code) => {
                assert_eq!(code, "AA", "message {n}");
                acked.push(format!("C{n:05}"));
                n += 1;
            }
            None => {
                conn = None;
                resends += 1;
            }
        }
    }
    killer.join().expect("killer thread");

    // Everything acknowledged arrives, first arrivals in sending order.
    let wanted: HashSet<&String> = acked.iter().collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let got: HashSet<String> = received.lock().expect("lock").iter().cloned().collect();
        if wanted.iter().all(|id| got.contains(*id)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} acknowledged message(s) never delivered",
            wanted.iter().filter(|id| !got.contains(**id)).count()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let received = received.lock().expect("lock").clone();
    let mut first = Vec::new();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for id in &received {
        let count = counts.entry(id.as_str()).or_default();
        if *count == 0 {
            first.push(id.clone());
        }
        *count += 1;
    }
    match lanes {
        Lanes::One => assert_eq!(
            first, acked,
            "delivered in order, nothing lost, nothing invented"
        ),
        Lanes::FourByPatient => {
            let patient = |id: &String| {
                id[1..]
                    .parse::<usize>()
                    .map_or(usize::MAX, |n| n % PATIENTS)
            };
            for p in 0..PATIENTS {
                let got: Vec<&String> = first.iter().filter(|id| patient(id) == p).collect();
                let want: Vec<&String> = acked.iter().filter(|id| patient(id) == p).collect();
                assert_eq!(got, want, "patient {p}: in order, nothing lost");
            }
            assert_eq!(first.len(), acked.len(), "nothing invented");
        }
    }
    let redelivered = counts.values().filter(|&&c| c > 1).count();
    eprintln!(
        "{} messages, {KILLS} kills, {resends} resent by the sender, {redelivered} delivered more than once",
        acked.len()
    );

    let mut guard = engine.lock().expect("lock");
    guard.0.kill().expect("stop engine");
    guard.0.wait().expect("reaped");
    drop(guard);

    // In the journal: every message the sender sent twice is either stored once or
    // flagged as a duplicate of its first copy; nothing is in the error queue.
    use plexus_journal::{ErrorFilter, Journal, MessageId, SqliteJournal};
    let journal = SqliteJournal::open(dir.path().join("data/journal.db")).expect("journal");
    let mut first_by_control: HashMap<String, MessageId> = HashMap::new();
    // Per control id: the copies stored, and whether any copy's delivery is flagged as
    // a possible resend.
    let mut copies: HashMap<String, (usize, bool)> = HashMap::new();
    let (mut stored, mut flagged, mut misses) = (0, 0, 0);
    let mut id = 1;
    while misses < 50 {
        match journal.show(MessageId(id)) {
            Ok(record) => {
                misses = 0;
                stored += 1;
                let control = record.inbound.control_id.clone().expect("MSH-10");
                let entry = copies.entry(control.clone()).or_default();
                entry.0 += 1;
                entry.1 |= record.deliveries.iter().any(|d| d.possible_resend);
                match first_by_control.get(&control) {
                    None => {
                        assert_eq!(record.duplicate_of, None, "message {id}");
                        first_by_control.insert(control, record.id);
                    }
                    Some(first) => {
                        assert_eq!(
                            record.duplicate_of,
                            Some(*first),
                            "message {id} ({control})"
                        );
                        flagged += 1;
                    }
                }
            }
            Err(_) => misses += 1,
        }
        id += 1;
    }
    assert_eq!(first_by_control.len(), acked.len());
    assert!(flagged <= resends, "{flagged} flagged, {resends} resent");
    // Every copy the receiver got beyond those stored is a resend by a restarted engine,
    // and the journal says so: "exactly once, or duplicates flagged".
    let mut possible = 0;
    for (control, times) in &counts {
        let (stored_copies, resend_flagged) = copies.get(*control).copied().unwrap_or_default();
        possible += usize::from(resend_flagged);
        assert!(
            *times <= stored_copies || resend_flagged,
            "{control} reached the receiver {times} time(s), stored {stored_copies} time(s), \
             and no delivery of it is flagged as a possible resend"
        );
    }
    eprintln!(
        "journal: {stored} stored, {flagged} flagged as duplicates, {possible} control id(s) \
         with a delivery flagged as a possible resend"
    );
    let open = journal
        .list_errors(&ErrorFilter::default(), 10)
        .expect("errors");
    assert!(open.is_empty(), "{open:?}");
}

/// A journal deleted while the engine was down is not replaced by an empty one: the
/// next start refuses, naming the journal and the lock file, and makes no journal;
/// deleting the lock file is the explicit way to start over with an empty journal.
#[test]
fn a_journal_deleted_after_a_kill_stops_the_next_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    // No receiver listens there: the message stays owed, as in the probe that found this.
    let unused = TcpListener::bind("127.0.0.1:0").expect("bind");
    let receiver = unused.local_addr().expect("addr").to_string();
    drop(unused);
    let config = site(dir.path(), &receiver, Lanes::One);
    let (mut child, addr) = start_engine(&config);
    let mut conn = TcpStream::connect(&addr).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    conn.write_all(&frame(&message(1))).expect("send");
    let ack = read_frame(&mut conn).expect("ACK");
    assert_eq!(field(&ack, "MSA-1").as_deref(), Some("AA"));
    child.kill().expect("kill -9");
    child.wait().expect("reaped");

    let data = dir.path().join("data");
    for file in ["journal.db", "journal.db-wal", "journal.db-shm"] {
        let _ = std::fs::remove_file(data.join(file));
    }
    let refused = Command::new(env!("CARGO_BIN_EXE_plexus"))
        .args(["run", "--log", "error", "--config"])
        .arg(&config)
        .output()
        .expect("run plexus");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "started without its journal");
    assert!(
        stderr.contains(&format!("{} is missing", data.join("journal.db").display()))
            && stderr.contains("delete")
            && stderr.contains("engine.lock"),
        "names the journal, the lock file and the way out: {stderr}"
    );
    assert!(!data.join("journal.db").exists(), "made an empty journal");

    // Deleting the lock file is the operator saying: start over, empty.
    std::fs::remove_file(data.join("engine.lock")).expect("remove lock file");
    let (mut child, _) = start_engine(&config);
    assert!(data.join("journal.db").exists(), "a new journal");
    child.kill().expect("stop");
    child.wait().expect("reaped");
}
