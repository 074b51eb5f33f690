//! The writer thread's group commit.
//!
//! The thread takes the first waiting job, then every job already queued behind it (up to
//! `max_batch`), runs them in one `BEGIN IMMEDIATE` transaction, commits once (one fsync
//! under `synchronous=FULL`) and only then answers each caller, in job order.
//!
//! One failing job must not undo the others. A job that can only run once ([`Job::Once`])
//! runs in a savepoint of its own, rolled back if it fails. A savepoint has a price, though:
//! SQLite copies each page a job first changes into a sub-journal, so it can roll back to
//! it. Per message that was about 3% of `plexus bench`'s CPU. So the jobs on the hot path
//! (ingest, delivery attempts) are written to run again ([`Job::Again`]): a run of them
//! shares one savepoint. Should one fail, the run goes back to that savepoint and each of
//! its jobs runs again in a savepoint of its own, where the failing one fails alone.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use rusqlite::Connection;

use crate::error::{Error, Result};

/// Answers a caller once its batch has committed (`Ok`) or failed (`Err(detail)`).
pub(super) type Reply = Box<dyn FnOnce(std::result::Result<(), &str>) + Send>;

/// A write that runs once against the writer's connection inside the open transaction,
/// or gets the reason the transaction could not be started.
type RunOnce = Box<dyn FnOnce(std::result::Result<&Connection, &str>) -> Reply + Send>;

/// A write waiting for the writer thread.
pub(super) enum Job {
    /// Runs once, in a savepoint of its own.
    Once(RunOnce),
    /// May run again after what it wrote was rolled back (see the module docs).
    Again(Box<dyn Redo>),
}

impl Job {
    /// A job that runs `f` once, in a savepoint of its own, and hands its result to
    /// `done` once the batch's fate is known.
    pub(super) fn once<T: Send + 'static>(
        op: &'static str,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
        done: Box<dyn FnOnce(Result<T>) + Send>,
    ) -> Job {
        Job::Once(Box::new(move |conn| {
            let result = match conn {
                Ok(conn) => in_savepoint(conn, op, f),
                Err(detail) => Err(Error::Commit {
                    detail: detail.to_owned(),
                }),
            };
            Box::new(move |commit| done(settled(result, commit)))
        }))
    }

    /// A job that may run `f` more than once: each run must start from what it was
    /// given, as the writes of an earlier run were rolled back. `done` gets the last
    /// run's result.
    pub(super) fn again<T: Send + 'static>(
        op: &'static str,
        f: impl FnMut(&Connection) -> Result<T> + Send + 'static,
        done: Box<dyn FnOnce(Result<T>) + Send>,
    ) -> Job {
        Job::Again(Box::new(Rerunnable {
            op,
            f,
            result: None,
            done,
        }))
    }

    /// Answers the job without running it: the transaction could not be started or the
    /// writer is gone.
    pub(super) fn fail(self, detail: &str) {
        match self {
            Job::Once(job) => job(Err(detail))(Err(detail)),
            Job::Again(job) => job.finish(Err(detail)),
        }
    }
}

/// A write that may run again; see [`Job::again`].
pub(super) trait Redo: Send {
    /// Runs the write, in a savepoint of its own when `alone`; whether it succeeded.
    fn run(&mut self, conn: &Connection, alone: bool) -> bool;
    /// Answers the caller with the last run's result, once the batch's fate is known.
    fn finish(self: Box<Self>, commit: std::result::Result<(), &str>);
}

struct Rerunnable<T, F> {
    op: &'static str,
    f: F,
    result: Option<Result<T>>,
    done: Box<dyn FnOnce(Result<T>) + Send>,
}

impl<T, F> Redo for Rerunnable<T, F>
where
    T: Send + 'static,
    F: FnMut(&Connection) -> Result<T> + Send + 'static,
{
    fn run(&mut self, conn: &Connection, alone: bool) -> bool {
        let result = if alone {
            in_savepoint(conn, self.op, &mut self.f)
        } else {
            (self.f)(conn)
        };
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn finish(self: Box<Self>, commit: std::result::Result<(), &str>) {
        let result = self.result.unwrap_or_else(|| {
            Err(Error::Commit {
                detail: "the write did not run".to_owned(),
            })
        });
        (self.done)(settled(result, commit));
    }
}

/// A job's own result once its batch committed, or the commit's failure.
fn settled<T>(result: Result<T>, commit: std::result::Result<(), &str>) -> Result<T> {
    match commit {
        Ok(()) => result,
        Err(detail) => Err(Error::Commit {
            detail: detail.to_owned(),
        }),
    }
}

/// Runs `f` in a savepoint of its own, rolled back if `f` fails.
pub(super) fn in_savepoint<T>(
    conn: &Connection,
    op: &'static str,
    f: impl FnOnce(&Connection) -> Result<T>,
) -> Result<T> {
    run(conn, "SAVEPOINT job").map_err(Error::sql(op))?;
    match f(conn) {
        Ok(value) => {
            run(conn, "RELEASE job").map_err(Error::sql(op))?;
            Ok(value)
        }
        Err(e) => {
            let _ = run(conn, "ROLLBACK TO job");
            let _ = run(conn, "RELEASE job");
            Err(e)
        }
    }
}

/// Runs one statement without results. Cached: a batch runs several savepoint statements,
/// and parsing the SQL each time showed up in the writer thread's profile.
fn run(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.execute([]))
        .map(|_| ())
}

/// One transaction's jobs as they run.
#[derive(Default)]
struct Batch {
    /// The answers of the jobs settled so far, in job order.
    replies: Vec<Reply>,
    /// The run of `Again` jobs since the last `Once` job, under the savepoint `run`.
    again: Vec<Box<dyn Redo>>,
    /// Whether the savepoint `run` is open.
    open: bool,
    /// A job of the run failed (or the savepoint could not be opened): the run goes again,
    /// each job in a savepoint of its own. Jobs after the failed one wait for that.
    failed: bool,
    /// Going back to the savepoint failed, or SQLite ended the transaction itself (as
    /// it may on an I/O error or a full disk): the transaction is rolled back whole,
    /// every job of the batch fails with this, and no further job runs (outside a
    /// transaction, its writes would stay although it is answered with a failure).
    doomed: Option<String>,
}

impl Batch {
    fn len(&self) -> usize {
        self.replies.len() + self.again.len()
    }

    fn add(&mut self, conn: &Connection, job: Job) {
        if matches!(job, Job::Once(_)) {
            // The run before it ends first, and is answered first.
            self.settle(conn);
        }
        if !still_open(conn, &mut self.doomed) {
            // Answered with the batch's failure, without running.
            match job {
                Job::Once(job) => self.replies.push(job(Err("the batch failed"))),
                Job::Again(job) => self.again.push(job),
            }
            return;
        }
        match job {
            Job::Once(job) => self.replies.push(job(Ok(conn))),
            Job::Again(mut job) => {
                if self.again.is_empty() {
                    self.open = run(conn, "SAVEPOINT run").is_ok();
                    self.failed = !self.open;
                }
                if !self.failed && !job.run(conn, false) {
                    self.failed = true;
                }
                self.again.push(job);
            }
        }
    }

    /// Ends the run of `Again` jobs: keeps its writes, or, if one failed, runs each again
    /// in a savepoint of its own.
    fn settle(&mut self, conn: &Connection) {
        if self.again.is_empty() {
            return;
        }
        // Kept unless a job failed or the savepoint cannot be released; a doomed batch
        // runs nothing more.
        if self.doomed.is_none() && (self.failed || run(conn, "RELEASE run").is_err()) {
            if self.open
                && let Err(e) = run(conn, "ROLLBACK TO run").and_then(|()| run(conn, "RELEASE run"))
            {
                self.doomed = Some(e.to_string());
            }
            for job in &mut self.again {
                if !still_open(conn, &mut self.doomed) {
                    break;
                }
                job.run(conn, true);
            }
        }
        self.open = false;
        self.failed = false;
        self.replies.extend(self.again.drain(..).map(|job| {
            Box::new(move |commit: std::result::Result<(), &str>| job.finish(commit)) as Reply
        }));
    }
}

/// Whether the batch's transaction is still there to run jobs in; if SQLite has ended it
/// (as it may on an I/O error or a full disk), the batch is `doomed` from then on.
fn still_open(conn: &Connection, doomed: &mut Option<String>) -> bool {
    if doomed.is_none() && conn.is_autocommit() {
        *doomed = Some("the transaction was rolled back by SQLite".to_owned());
    }
    doomed.is_none()
}

/// The writer thread: group commits until every sender is gone. After a commit, if the
/// checkpoint thread asked for it (`wal_full`), finishes copying the WAL so it starts over.
pub(super) fn write_loop(
    conn: &Connection,
    rx: &mpsc::Receiver<Job>,
    max_batch: usize,
    wal_full: &AtomicBool,
) {
    // A batch of `Again` jobs keeps its savepoint's sub-journal in memory: past 64 KiB
    // SQLite would spill it to a temporary file, which a run of a few dozen messages
    // passes, and such a batch changes a bounded number of pages. A `Once` job may
    // change any number (a prune deletes a day's messages), so a batch with one spills.
    let mut in_memory = false;
    // A `Once` job that arrived during an in-memory batch, for the next one.
    let mut held: Option<Job> = None;
    while let Some(first) = held.take().or_else(|| rx.recv().ok()) {
        let want = matches!(first, Job::Again(_));
        if want != in_memory {
            let pragma = if want {
                "PRAGMA temp_store = MEMORY"
            } else {
                "PRAGMA temp_store = DEFAULT"
            };
            if conn.execute_batch(pragma).is_ok() {
                in_memory = want;
            }
        }
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            first.fail(&e.to_string());
            continue;
        }
        let mut batch = Batch::default();
        batch.add(conn, first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(job @ Job::Once(_)) if in_memory => {
                    held = Some(job);
                    break;
                }
                Ok(job) => batch.add(conn, job),
                Err(_) => break,
            }
        }
        batch.settle(conn);
        let committed = match batch.doomed {
            Some(detail) => {
                let _ = conn.execute_batch("ROLLBACK");
                Err(detail)
            }
            None => conn.execute_batch("COMMIT").map_err(|e| {
                let _ = conn.execute_batch("ROLLBACK");
                e.to_string()
            }),
        };
        for reply in batch.replies {
            reply(committed.as_ref().map(|_| ()).map_err(String::as_str));
        }
        if wal_full.swap(false, Ordering::Relaxed) {
            // The background checkpoint has just copied nearly all of a large WAL; copy
            // the rest (what was committed while it ran) before the next write, which
            // then starts the WAL over. It waits for no one: should a reader still use
            // the WAL, the next round tries again.
            let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A connection with a table `t (job, part)` and a writer that will find `jobs`
    /// queued in one batch, after that batch.
    fn run_batch(jobs: Vec<Job>) -> Connection {
        let conn = Connection::open_in_memory().expect("open");
        conn.execute_batch("CREATE TABLE t (job INTEGER NOT NULL, part INTEGER NOT NULL)")
            .expect("create");
        let (tx, rx) = mpsc::sync_channel(jobs.len());
        for job in jobs {
            tx.send(job).expect("queue");
        }
        drop(tx);
        write_loop(&conn, &rx, 64, &AtomicBool::new(false));
        conn
    }

    /// Inserts two rows for `job`; fails between them when `fails`. Counts its runs.
    fn two_rows(
        job: i64,
        fails: bool,
        runs: &Arc<Mutex<Vec<i64>>>,
    ) -> impl FnMut(&Connection) -> Result<i64> + Send + 'static {
        let runs = runs.clone();
        move |conn| {
            runs.lock().expect("runs").push(job);
            let insert = |part: i64| {
                conn.execute("INSERT INTO t (job, part) VALUES (?1, ?2)", [job, part])
                    .map_err(Error::sql("test"))
            };
            insert(1)?;
            if fails {
                return Err(Error::Commit {
                    detail: format!("job {job} fails"),
                });
            }
            insert(2)?;
            Ok(conn.last_insert_rowid())
        }
    }

    type Answers = Arc<Mutex<Vec<(i64, std::result::Result<i64, String>)>>>;

    fn answer(job: i64, answers: &Answers) -> Box<dyn FnOnce(Result<i64>) + Send> {
        let answers = answers.clone();
        Box::new(move |r| {
            answers
                .lock()
                .expect("answers")
                .push((job, r.map_err(|e| e.to_string())))
        })
    }

    fn rows(conn: &Connection) -> Vec<(i64, i64)> {
        let mut stmt = conn
            .prepare("SELECT job, part FROM t ORDER BY rowid")
            .expect("prepare");
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("query")
            .collect::<rusqlite::Result<_>>()
            .expect("rows")
    }

    #[test]
    fn a_failing_job_in_a_run_fails_alone_and_the_run_goes_again() {
        let runs = Arc::new(Mutex::new(Vec::new()));
        let answers = Answers::default();
        let jobs = (1..=5)
            .map(|job| {
                Job::again(
                    "test",
                    two_rows(job, job == 3, &runs),
                    answer(job, &answers),
                )
            })
            .collect();
        let conn = run_batch(jobs);

        // Jobs 1 and 2 ran, 3 failed; the run went back and each ran again alone.
        assert_eq!(*runs.lock().expect("runs"), [1, 2, 3, 1, 2, 3, 4, 5]);
        assert_eq!(
            rows(&conn),
            [
                (1, 1),
                (1, 2),
                (2, 1),
                (2, 2),
                (4, 1),
                (4, 2),
                (5, 1),
                (5, 2)
            ],
            "job 3's first row was rolled back, the others' rows kept once"
        );
        let answers = answers.lock().expect("answers");
        let order: Vec<i64> = answers.iter().map(|(job, _)| *job).collect();
        assert_eq!(order, [1, 2, 3, 4, 5], "answered in job order");
        assert_eq!(answers[0].1, Ok(2), "the rowid of the run that was kept");
        assert_eq!(answers[3].1, Ok(6));
        let failed = answers[2].1.as_ref().expect_err("job 3 fails");
        assert!(failed.contains("job 3 fails"), "{failed}");
    }

    #[test]
    fn a_run_that_succeeds_runs_each_job_once() {
        let runs = Arc::new(Mutex::new(Vec::new()));
        let answers = Answers::default();
        let jobs = (1..=4)
            .map(|job| Job::again("test", two_rows(job, false, &runs), answer(job, &answers)))
            .collect();
        let conn = run_batch(jobs);
        assert_eq!(*runs.lock().expect("runs"), [1, 2, 3, 4]);
        assert_eq!(rows(&conn).len(), 8);
        assert!(
            answers
                .lock()
                .expect("answers")
                .iter()
                .all(|(_, r)| r.is_ok())
        );
    }

    #[test]
    fn only_batches_of_rerunnable_jobs_keep_their_sub_journal_in_memory() {
        let seen: Arc<Mutex<Vec<(&str, i64)>>> = Arc::default();
        let temp_store = |name: &'static str| {
            let seen = seen.clone();
            move |conn: &Connection| {
                let mode: i64 = conn
                    .query_row("PRAGMA temp_store", [], |r| r.get(0))
                    .map_err(Error::sql("test"))?;
                seen.lock().expect("seen").push((name, mode));
                Ok(mode)
            }
        };
        let answers = Answers::default();
        let once = |name: &'static str, job: i64| {
            let f = temp_store(name);
            Job::once("test", move |conn| f(conn), answer(job, &answers))
        };
        let jobs = vec![
            Job::again("test", temp_store("again 1"), answer(1, &answers)),
            Job::again("test", temp_store("again 2"), answer(2, &answers)),
            // Held back from the in-memory batch: it starts the next one.
            once("once 3", 3),
            Job::again("test", temp_store("again 4"), answer(4, &answers)),
        ];
        run_batch(jobs);
        // 2 is MEMORY, 0 the default (a file past the spill threshold).
        assert_eq!(
            *seen.lock().expect("seen"),
            [
                ("again 1", 2),
                ("again 2", 2),
                ("once 3", 0),
                ("again 4", 0)
            ]
        );
        let order: Vec<i64> = answers
            .lock()
            .expect("answers")
            .iter()
            .map(|a| a.0)
            .collect();
        assert_eq!(
            order,
            [1, 2, 3, 4],
            "answered in job order across the two batches"
        );
    }

    #[test]
    fn no_job_runs_after_the_transaction_is_gone() {
        let runs = Arc::new(Mutex::new(Vec::new()));
        let answers = Answers::default();
        // As SQLite may on an I/O error: the transaction ends under the batch.
        let ends_it = Job::once(
            "test",
            |conn: &Connection| {
                conn.execute_batch("ROLLBACK").map_err(Error::sql("test"))?;
                Ok(0)
            },
            answer(2, &answers),
        );
        // One batch: it starts with a job that runs once, so jobs of both kinds join it.
        let jobs = vec![
            Job::once("test", two_rows(1, false, &runs), answer(1, &answers)),
            ends_it,
            Job::again("test", two_rows(3, false, &runs), answer(3, &answers)),
            Job::once("test", two_rows(4, false, &runs), answer(4, &answers)),
        ];
        let conn = run_batch(jobs);
        assert_eq!(*runs.lock().expect("runs"), [1], "3 and 4 never ran");
        assert_eq!(
            rows(&conn),
            [],
            "nothing was written outside the transaction"
        );
        let answers = answers.lock().expect("answers");
        assert_eq!(answers.len(), 4);
        assert!(answers.iter().all(|(_, r)| r.is_err()), "{answers:?}");
    }

    #[test]
    fn no_job_runs_after_a_job_run_again_ends_the_transaction() {
        let runs = Arc::new(Mutex::new(Vec::new()));
        let answers = Answers::default();
        // Fails in the shared run; run again alone, it ends the transaction (as SQLite
        // may on an I/O error).
        let mut tries = 0;
        let ends_it_alone = move |conn: &Connection| {
            tries += 1;
            if tries == 1 {
                return Err(Error::Commit {
                    detail: "first try fails".to_owned(),
                });
            }
            conn.execute_batch("ROLLBACK").map_err(Error::sql("test"))?;
            Ok(0)
        };
        // One batch: it starts with a job that runs once, so jobs of both kinds join it.
        let jobs = vec![
            Job::once("test", two_rows(1, false, &runs), answer(1, &answers)),
            Job::again("test", ends_it_alone, answer(2, &answers)),
            Job::once("test", two_rows(3, false, &runs), answer(3, &answers)),
        ];
        let conn = run_batch(jobs);
        assert_eq!(*runs.lock().expect("runs"), [1], "3 never ran");
        assert_eq!(
            rows(&conn),
            [],
            "nothing was written outside the transaction"
        );
        let answers = answers.lock().expect("answers");
        assert_eq!(answers.len(), 3);
        assert!(answers.iter().all(|(_, r)| r.is_err()), "{answers:?}");
    }

    #[test]
    fn a_job_that_runs_once_ends_a_run_and_keeps_its_place() {
        let runs = Arc::new(Mutex::new(Vec::new()));
        let answers = Answers::default();
        let once = {
            let mut f = two_rows(3, true, &runs);
            Job::once("test", move |conn| f(conn), answer(3, &answers))
        };
        let jobs = vec![
            Job::again("test", two_rows(1, false, &runs), answer(1, &answers)),
            Job::again("test", two_rows(2, false, &runs), answer(2, &answers)),
            once,
            Job::again("test", two_rows(4, true, &runs), answer(4, &answers)),
            Job::again("test", two_rows(5, false, &runs), answer(5, &answers)),
        ];
        let conn = run_batch(jobs);
        // The once job failed in its own savepoint without touching the run before it;
        // job 4 failed in the run after it, which went again alone.
        assert_eq!(*runs.lock().expect("runs"), [1, 2, 3, 4, 4, 5]);
        assert_eq!(
            rows(&conn),
            [(1, 1), (1, 2), (2, 1), (2, 2), (5, 1), (5, 2)]
        );
        let answers = answers.lock().expect("answers");
        let ok: Vec<(i64, bool)> = answers.iter().map(|(job, r)| (*job, r.is_ok())).collect();
        assert_eq!(
            ok,
            [(1, true), (2, true), (3, false), (4, false), (5, true)]
        );
    }
}
