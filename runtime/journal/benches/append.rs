//! Appends per second with 8 concurrent writers against a file on disk
//! (WAL, synchronous=FULL, group commit).
//!
//! `cargo bench -p plexus-journal --bench append` (env `APPENDS`: total, default 40000;
//! `WRITERS`: concurrent writers, default 8; `OP=ingest` writes what the pipeline writes
//! per message instead: the message, one stage with its output and an edit, one
//! delivery owed, all in one `ingest`).

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use plexus_journal::{
    Edit, Inbound, Journal, MessageId, OutcomeKind, Processing, SourceKind, SqliteJournal,
    StageRecord,
};

fn main() {
    let writers: usize = std::env::var("WRITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let total: usize = std::env::var("APPENDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40_000);
    let per_writer = total / writers;
    let ingest = std::env::var("OP").is_ok_and(|op| op == "ingest");
    // On the target dir's disk, not a tmpfs, so fsync is real.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let journal = Arc::new(SqliteJournal::open(dir.path().join("bench.db")).expect("open"));
    let raw = b"MSH|^~\\&|EHR|CLINIC|PLEXUS|SITE|20240101120000||SIU^S12|CTL|P|2.5\rSCH|1|2||||||||30|min\rPID|1||12345^^^MRN||DOE^JANE\rPV1|1|O\r".to_vec();

    let start = Instant::now();
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            let journal = Arc::clone(&journal);
            let raw = raw.clone();
            std::thread::spawn(move || {
                for i in 0..per_writer {
                    let inbound = Inbound {
                        interface: "scheduling".into(),
                        source_kind: SourceKind::Mllp,
                        source_peer: Some("127.0.0.1:40000".into()),
                        received_at: SystemTime::now(),
                        control_id: Some(format!("W{w}-{i}")),
                        message_type: Some("SIU^S12".into()),
                        raw: raw.clone(),
                    };
                    if ingest {
                        let processing = Processing {
                            stages: vec![StageRecord {
                                message: MessageId(0),
                                stage_index: 0,
                                plugin: "visit-status-map".into(),
                                plugin_sha256: "ab".repeat(32),
                                outcome: OutcomeKind::Forward,
                                detail: None,
                                output: Some(raw.clone()),
                                edits: vec![Edit {
                                    path: "SCH-25-1".into(),
                                    old: Some("Arrived".into()),
                                    new: Some("Started".into()),
                                }],
                            }],
                            enqueue: vec!["emr".into()],
                            processed: true,
                            ..Processing::default()
                        };
                        journal.ingest(inbound, processing).expect("ingest");
                    } else {
                        journal.append(inbound).expect("append");
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("writer");
    }
    let elapsed = start.elapsed();
    let n = per_writer * writers;
    println!(
        "{n} {}s, {writers} writers, {:.2} s: {:.0}/s",
        if ingest { "ingest" } else { "append" },
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64()
    );
}
