//! SQLite-specific behaviour: pragmas, schema version, and the file being readable by
//! the `sqlite3` shell's queries from docs/journal.md.

use std::time::SystemTime;

use plexus_journal::{ErrorKind, ErrorReport, Inbound, Journal, SourceKind, SqliteJournal};

fn inbound(ctl: &str) -> Inbound {
    Inbound {
        interface: "scheduling".into(),
        source_kind: SourceKind::Mllp,
        source_peer: None,
        received_at: SystemTime::now(),
        control_id: Some(ctl.into()),
        message_type: Some("SIU^S12".into()),
        raw: b"MSH|^~\\&|SECRET-PATIENT-NAME".to_vec(),
    }
}

#[test]
fn opens_in_wal_with_full_sync_and_records_schema_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.db");
    drop(SqliteJournal::open(&path).expect("open"));
    // Reopening an up-to-date file applies nothing and succeeds.
    let journal = SqliteJournal::open(&path).expect("reopen");
    drop(journal);
    let conn = rusqlite::Connection::open(&path).expect("sqlite");
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("journal_mode");
    assert_eq!(mode, "wal");
    let version: i64 = conn
        .query_row("SELECT MAX(version) FROM schema_version", [], |r| r.get(0))
        .expect("version");
    assert_eq!(version, SqliteJournal::schema_version());
}

#[test]
fn refuses_a_newer_schema() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.db");
    drop(SqliteJournal::open(&path).expect("open"));
    let conn = rusqlite::Connection::open(&path).expect("sqlite");
    conn.execute("INSERT INTO schema_version VALUES (999, 0)", [])
        .expect("bump");
    drop(conn);
    let err = SqliteJournal::open(&path).expect_err("newer schema");
    assert!(matches!(
        err,
        plexus_journal::Error::SchemaTooNew { found: 999, .. }
    ));
}

#[test]
fn debug_output_shows_no_message_content() {
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = SqliteJournal::open(dir.path().join("j.db")).expect("open");
    let id = journal.append(inbound("C1")).expect("append").id;
    let shown = format!("{:?} {:?}", inbound("C1"), journal.show(id).expect("show"));
    assert!(!shown.contains("SECRET"), "{shown}");
}

#[test]
fn documented_query_possible_resends_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.db");
    let journal = SqliteJournal::open(&path).expect("open");
    let processing = plexus_journal::Processing {
        enqueue: vec!["emr".into()],
        processed: true,
        ..plexus_journal::Processing::default()
    };
    let id = journal
        .ingest(inbound("C1"), processing)
        .expect("ingest")
        .id;
    assert_eq!(journal.flag_possible_resends(256).expect("flag"), 1);
    let conn = rusqlite::Connection::open(&path).expect("sqlite");
    // Keep in step with docs/journal.md.
    let rows: Vec<(String, String, i64)> = conn
        .prepare(
            "SELECT m.interface, d.destination, d.message_id, m.control_id, d.status
             FROM deliveries d JOIN messages m ON m.id = d.message_id
             WHERE d.possible_resend = 1
             ORDER BY m.interface, d.destination, d.message_id",
        )
        .expect("prepare")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].1.as_str(), rows[0].2), ("emr", id.0));
}

#[test]
fn documented_query_unresolved_errors_by_interface_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.db");
    let journal = SqliteJournal::open(&path).expect("open");
    let id = journal.append(inbound("C1")).expect("append").id;
    journal
        .error(ErrorReport {
            message: id,
            stage: "plugin:visit-status-map".into(),
            kind: ErrorKind::PluginFail,
            reason: "no mapping".into(),
            path: Some("SCH-25".into()),
        })
        .expect("error");
    let conn = rusqlite::Connection::open(&path).expect("sqlite");
    // Keep in step with docs/journal.md.
    let rows: Vec<(String, i64)> = conn
        .prepare(
            "SELECT m.interface, e.message_id
             FROM errors e JOIN messages m ON m.id = e.message_id
             WHERE e.resolved_at IS NULL
             ORDER BY m.interface, e.first_seen",
        )
        .expect("prepare")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(rows, [("scheduling".to_owned(), id.0)]);
}

/// A journal at `path` whose audit log holds five activations.
fn journal_with_five_activations(path: &std::path::Path) -> SqliteJournal {
    let journal = SqliteJournal::open(path).expect("open");
    for n in 1..=5 {
        journal
            .audit(plexus_journal::AuditEntry {
                actor: "deployer".into(),
                action: "activate".into(),
                subject: "interface:scheduling".into(),
                detail: format!("version {n}"),
            })
            .expect("audit");
    }
    journal
}

/// Someone with write access to the file edits or deletes an audit row: verification
/// names the first broken entry.
#[test]
fn audit_verification_catches_an_edited_or_deleted_row() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.db");
    let journal = journal_with_five_activations(&path);
    assert_eq!(journal.verify_audit().expect("verify").first_broken, None);

    let conn = rusqlite::Connection::open(&path).expect("sqlite");
    conn.execute("UPDATE audit SET actor = 'someone-else' WHERE id = 3", [])
        .expect("tamper");
    let verified = journal.verify_audit().expect("verify");
    assert_eq!(verified.entries, 2, "entries before the edit are intact");
    let (id, why) = verified.first_broken.expect("broken");
    assert_eq!(id, 3);
    assert!(why.contains("edited"), "{why}");

    // Undoing the edit restores the chain; deleting a row breaks it at the next one.
    conn.execute("UPDATE audit SET actor = 'deployer' WHERE id = 3", [])
        .expect("undo");
    assert_eq!(journal.verify_audit().expect("verify").first_broken, None);
    conn.execute("DELETE FROM audit WHERE id = 4", [])
        .expect("delete");
    let (id, why) = journal
        .verify_audit()
        .expect("verify")
        .first_broken
        .expect("broken");
    assert_eq!(id, 5);
    assert!(why.contains("missing"), "{why}");
}

/// The newest entries cut off leave a chain that still links: the head recorded beside
/// the journal catches that, and a log rebuilt from the start to hide an edit.
#[test]
fn audit_verification_catches_deleted_newest_entries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.db");
    let journal = journal_with_five_activations(&path);
    assert!(dir.path().join("j.db-audit-head").exists());
    assert_eq!(journal.verify_audit().expect("verify").first_broken, None);
    let conn = rusqlite::Connection::open(&path).expect("sqlite");
    let hash5: String = conn
        .query_row("SELECT hash FROM audit WHERE id = 5", [], |r| r.get(0))
        .expect("row");
    conn.execute("DELETE FROM audit WHERE id >= 4", [])
        .expect("delete the newest");
    let verified = journal.verify_audit().expect("verify");
    assert_eq!(verified.entries, 3, "what is left links");
    let (id, why) = verified.first_broken.expect("caught");
    assert_eq!(id, 5);
    assert!(why.contains("newest entries were deleted"), "{why}");
    // An entry whose hash was replaced by one recomputed to fit is caught too.
    conn.execute(
        "INSERT INTO audit (id, at, actor, action, subject, detail, prev_hash, hash)
         SELECT 4, at, actor, action, subject, detail, hash, 'x' FROM audit WHERE id = 3",
        [],
    )
    .expect("forge");
    conn.execute(
        "INSERT INTO audit (id, at, actor, action, subject, detail, prev_hash, hash)
         VALUES (5, 0, 'a', 'b', 'c', 'd', 'x', 'y')",
        [],
    )
    .expect("forge");
    assert_ne!(hash5, "y");
    assert!(
        journal
            .verify_audit()
            .expect("verify")
            .first_broken
            .is_some()
    );
}

/// The duplicate window lives in memory (schema 4 dropped the index on control ids):
/// rebuilt when the journal opens, confirmed against the rows, bounded in size.
#[test]
fn duplicate_window_survives_a_restart_and_trusts_only_stored_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.db");
    let journal = SqliteJournal::open(&path).expect("open");
    let first = journal.append(inbound("D1")).expect("append").id;
    let doomed = journal.append(inbound("D2")).expect("append").id;
    drop(journal);

    let conn = rusqlite::Connection::open(&path).expect("sqlite");
    let index: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = 'messages_by_control_id'",
            [],
            |r| r.get(0),
        )
        .expect("sqlite_master");
    assert_eq!(index, 0, "schema 4 drops the control id index");

    // Rebuilt from the table at open: a repeat after the restart is still flagged.
    let journal = SqliteJournal::open(&path).expect("reopen");
    let again = journal.append(inbound("D1")).expect("append");
    assert_eq!(again.duplicate_of, Some(first));

    // A row that goes away while the journal is open (here: another process deletes
    // it) is still a candidate in memory, but is not confirmed, so not reported.
    conn.execute("DELETE FROM messages WHERE id = ?1", [doomed.0])
        .expect("delete");
    let after = journal.append(inbound("D2")).expect("append");
    assert_eq!(after.duplicate_of, None);
    // The new row is now the one a later repeat points at.
    let third = journal.append(inbound("D2")).expect("append");
    assert_eq!(third.duplicate_of, Some(after.id));
}

#[test]
fn duplicate_window_forgets_the_oldest_past_its_capacity() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = plexus_journal::JournalOptions {
        duplicate_window_entries: 2,
        ..plexus_journal::JournalOptions::default()
    };
    let path = dir.path().join("j.db");
    let journal = SqliteJournal::open_with(&path, options.clone()).expect("open");
    for ctl in ["E1", "E2", "E3"] {
        journal.append(inbound(ctl)).expect("append");
    }
    assert_eq!(
        journal.append(inbound("E1")).expect("append").duplicate_of,
        None
    );
    assert!(
        journal
            .append(inbound("E3"))
            .expect("append")
            .is_duplicate()
    );
    drop(journal);
    // The rebuild keeps the newest two: E1 (again) and E3 (again).
    let journal = SqliteJournal::open_with(&path, options).expect("reopen");
    assert!(
        journal
            .append(inbound("E1"))
            .expect("append")
            .is_duplicate()
    );
    assert_eq!(
        journal.append(inbound("E2")).expect("append").duplicate_of,
        None
    );
}

#[test]
fn the_wal_starts_over_under_a_steady_load() {
    use plexus_journal::Processing;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.db");
    // 256 frames: 1 MiB with 4 KiB pages.
    let options = plexus_journal::JournalOptions {
        wal_restart_frames: 256,
        ..plexus_journal::JournalOptions::default()
    };
    let journal = Arc::new(SqliteJournal::open_with(&path, options).expect("open"));
    let wal = dir.path().join("j.db-wal");
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    // Writers that never pause, so the background checkpoint never finds the WAL copied.
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (journal, stop, written) = (journal.clone(), stop.clone(), written.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let mut message = inbound(&format!("W{w}-{n}"));
                    message.raw = vec![b'x'; 8192];
                    let processing = Processing {
                        enqueue: vec!["emr".into()],
                        processed: true,
                        ..Processing::default()
                    };
                    journal.ingest(message, processing).expect("ingest");
                    written.fetch_add(8192, Ordering::Relaxed);
                    n += 1;
                }
            })
        })
        .collect();
    // At least 3 s, and on until four times the largest WAL seen has been written (30 s
    // at most): how large the WAL gets before it starts over depends on how far the
    // checkpoint thread lags on a busy machine, not on how much is written, so a WAL
    // that starts over falls behind what is written, and one that only grows never does.
    let mut largest = 0;
    let started = std::time::Instant::now();
    let (least, most) = (
        std::time::Duration::from_secs(3),
        std::time::Duration::from_secs(30),
    );
    while started.elapsed() < least
        || (written.load(Ordering::Relaxed) < 4 * largest && started.elapsed() < most)
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
        largest = largest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
    }
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.join().expect("writer");
    }
    let written = written.load(Ordering::Relaxed);
    assert!(
        written > 24 << 20,
        "too little written to tell ({written} bytes)"
    );
    assert!(
        largest < written / 3,
        "the WAL grew to {largest} bytes for {written} bytes of messages"
    );
}
