//! Appends per second with 8 concurrent writers against a file on disk
//! (WAL, synchronous=FULL, group commit).
//!
//! `cargo bench -p plexus-journal --bench append` (env `APPENDS`: total, default 40000;
//! `WRITERS`: concurrent writers, default 8).

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use plexus_journal::{Inbound, Journal, SourceKind, SqliteJournal};

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
                    journal
                        .append(Inbound {
                            interface: "scheduling".into(),
                            source_kind: SourceKind::Mllp,
                            source_peer: Some("127.0.0.1:40000".into()),
                            received_at: SystemTime::now(),
                            control_id: Some(format!("W{w}-{i}")),
                            message_type: Some("SIU^S12".into()),
                            raw: raw.clone(),
                        })
                        .expect("append");
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
        "{n} appends, {writers} writers, {:.2} s: {:.0} appends/s",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64()
    );
}
