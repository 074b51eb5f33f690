//! The journal contract, run against SQLite. The PostgreSQL backend will run the same list.

use plexus_journal::contract;
use plexus_journal::{JournalOptions, SqliteJournal};

/// Runs one contract test on a fresh database file; `open` reopens that same file.
fn check(test: contract::ContractTest<SqliteJournal>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("journal.db");
    let options = JournalOptions {
        duplicate_window: contract::DUPLICATE_WINDOW,
        ..JournalOptions::default()
    };
    test(&|| SqliteJournal::open_with(&path, options.clone()).expect("open journal"));
}

macro_rules! contract_tests {
    ($($name:ident),* $(,)?) => {
        $(#[test] fn $name() { check(contract::$name::<SqliteJournal>); })*

        /// Every contract test has a #[test] here.
        #[test]
        fn every_contract_test_is_run() {
            let here = [$(stringify!($name)),*];
            for (name, _) in contract::all::<SqliteJournal>() {
                assert!(here.contains(&name), "contract test {name} is not run for SQLite");
            }
        }
    };
}

contract_tests!(
    durable_across_reopen,
    concurrent_appends,
    duplicates_within_window,
    next_pending_is_fifo,
    delivery_transitions,
    error_queue,
    prune_keeps_unfinished_work,
    unfinished_after_crash,
    ingest_is_one_unit,
    batched_attempts_and_due,
    detached_writes_answer_once_durable,
    lanes_split_the_queue,
    possible_resends_are_each_lanes_next_sends,
    audit_log_is_a_hash_chain,
    resolves_and_replays_are_audited_with_their_change,
    shadow_runs_and_results,
);
