//! A delivery lane's feed: the messages just committed for the lane, handed to its worker
//! from memory instead of read back from the journal.
//!
//! The journal stays the record of what is owed; the feed is a shortcut that is only
//! trusted while it provably holds everything the journal would return. Reading the lane
//! back for every batch took about a tenth of `plexus bench`'s CPU (the queue query and
//! the payloads, through the blocking pool), for bytes the engine had in memory a moment
//! before.
//!
//! How it stays exact:
//! * Ingest pushes each forwarded message after its commit is durable, from the journal's
//!   commit answer, which the journal gives in commit order
//!   ([`Journal::answers_in_commit_order`](plexus_journal::Journal::answers_in_commit_order));
//!   a journal that cannot promise that gets no feed.
//! * The worker reads the journal whenever the feed is not in sync, and brings it into
//!   sync with that read: what was pushed while the read ran is kept, less what the read
//!   returned, and only when the read saw the whole lane (fewer rows than asked for, and
//!   no retries).
//! * Anything the feed cannot account for drops it out of sync, and the next batch is
//!   read from the journal: a delivery that was not delivered, a batch cut short, a replay
//!   (which requeues old messages), a push out of order, a feed grown past its bounds.
//! * Work the feed never sees (another process queuing to the same journal) is found by a
//!   check at least every [`REFRESH`]: the worker reads the head of the lane from the
//!   journal (the queue only, not the messages) and the feed must hold the same messages
//!   at its front, or it drops out of sync. A requeued message (a replay) is older than
//!   what the feed holds, so it shows at the head. The check keeps a feed in sync behind
//!   a backlog, which a full read could not bring back into sync until the backlog was
//!   gone: it had cost the journal reads a feed is there to save.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use plexus_journal::{DeliveryStatus, MessageId, PendingDelivery};

/// The longest a feed is trusted without checking it against the journal (see the module
/// docs). With the idle worker's 250 ms poll on top, work another process queues is found
/// within a second.
const REFRESH: Duration = Duration::from_millis(750);
/// Most messages a feed holds; past it the lane is read from the journal (a backlog).
const MAX_ENTRIES: usize = 2048;
/// Most payload bytes a feed holds (so at most this much memory per connection of a
/// destination); a larger message is always read from the journal.
pub(crate) const MAX_BYTES: usize = 4 << 20;

/// What [`Feed::take`] says to do.
#[derive(Debug)]
pub(crate) enum Take {
    /// In sync: these messages, oldest first (none: wait for a push).
    Fed(Vec<Fed>),
    /// In sync and holding messages, but due for its check: read the head of the lane
    /// from the journal and pass it to [`Feed::confirm`].
    Check,
    /// Out of sync: read the journal, then report the read to [`Feed::synced`].
    Read,
}

/// One message for the lane: its delivery as the journal would list it, and the bytes
/// the journal would return for it.
#[derive(Debug)]
pub(crate) struct Fed {
    pub pending: PendingDelivery,
    pub payload: Vec<u8>,
}

#[derive(Debug)]
pub(crate) struct Feed {
    /// Whether the journal answers in commit order; without that the feed stays off.
    enabled: bool,
    state: Mutex<State>,
    /// Holds in force (see [`Feed::hold`]): while any is, the feed stays out of sync.
    holds: AtomicUsize,
}

#[derive(Debug)]
struct State {
    mode: Mode,
    /// In sync: pushed and not yet handed to the worker, in commit order.
    entries: VecDeque<Fed>,
    bytes: usize,
    /// The ids the last sync's journal read returned or skipped: a push of one of them
    /// (its commit answer came after the read) was already handed over.
    seen: HashSet<MessageId>,
}

#[derive(Debug)]
enum Mode {
    /// Out of sync: pushes are dropped, the worker reads the journal.
    Off,
    /// A journal read is under way; pushes are kept until it is known which it saw.
    Syncing { buffer: VecDeque<Fed>, bytes: usize },
    /// In sync since the instant.
    On(Instant),
}

impl Feed {
    pub(crate) fn new(enabled: bool) -> Feed {
        Feed {
            enabled,
            state: Mutex::new(State {
                mode: Mode::Off,
                entries: VecDeque::new(),
                bytes: 0,
                seen: HashSet::new(),
            }),
            holds: AtomicUsize::new(0),
        }
    }

    /// Whether a push of `size` bytes would be kept now, so that no copy is made for a
    /// feed that would drop it. It may be dropped by the time it is made; that is safe.
    /// Not a push skipped on a `false`: it comes after its commit, and the read that
    /// brings this feed out of `Off` comes after this check (the lock orders the two), so
    /// that read sees the commit.
    pub(crate) fn wants(&self, size: usize) -> bool {
        self.enabled && size <= MAX_BYTES && !matches!(self.state().mode, Mode::Off)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Every change below leaves the state whole; a panic elsewhere cannot tear it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A message committed for this lane. Call only once its commit is durable, and in
    /// commit order.
    pub(crate) fn push(&self, fed: Fed) {
        if !self.enabled {
            return;
        }
        let mut guard = self.state();
        let state = &mut *guard;
        let size = fed.payload.len();
        let fits = |len: usize, bytes: usize| len < MAX_ENTRIES && bytes + size <= MAX_BYTES;
        match &mut state.mode {
            Mode::Off => {}
            Mode::Syncing { buffer, bytes } if fits(buffer.len(), *bytes) => {
                *bytes += size;
                buffer.push_back(fed);
            }
            Mode::Syncing { .. } => state.off(),
            // Its commit answer came after the read that handed it over.
            Mode::On(_) if state.seen.contains(&fed.pending.id) => {}
            Mode::On(_)
                if fits(state.entries.len(), state.bytes)
                    && state
                        .entries
                        .back()
                        .is_none_or(|last| last.pending.id < fed.pending.id) =>
            {
                state.bytes += size;
                state.entries.push_back(fed);
            }
            Mode::On(_) => state.off(),
        }
    }

    /// Up to `max` messages, oldest first, when the feed is in sync; otherwise what to
    /// read first (see [`Take`]).
    pub(crate) fn take(&self, max: usize) -> Take {
        if !self.enabled {
            return Take::Read;
        }
        let mut state = self.state();
        match state.mode {
            Mode::On(since) if since.elapsed() < REFRESH => {
                let n = max.min(state.entries.len());
                let taken: Vec<Fed> = state.entries.drain(..n).collect();
                state.bytes -= taken.iter().map(|f| f.payload.len()).sum::<usize>();
                Take::Fed(taken)
            }
            // An empty feed is read again whole: that costs no more than the check.
            Mode::On(_) if !state.entries.is_empty() => Take::Check,
            _ => {
                state.entries.clear();
                state.bytes = 0;
                state.seen.clear();
                state.mode = Mode::Syncing {
                    buffer: VecDeque::new(),
                    bytes: 0,
                };
                Take::Read
            }
        }
    }

    /// The check after [`Take::Check`]: `head` is the lane as the journal lists it now,
    /// less the messages being recorded, up to a batch. The feed stays in sync, for
    /// another [`REFRESH`], only if it holds the same messages at its front; otherwise it
    /// drops out, and the next batch is read from the journal. Rows committed after the
    /// read may be in the feed behind them; a row committed before the read and not yet
    /// pushed makes a false alarm, which only costs that read.
    pub(crate) fn confirm(&self, head: &[PendingDelivery]) {
        let mut state = self.state();
        if !matches!(state.mode, Mode::On(_)) {
            return; // dropped out meanwhile
        }
        let same = self.holds.load(Ordering::SeqCst) == 0
            && head.len() <= state.entries.len()
            && head.iter().zip(&state.entries).all(|(row, fed)| {
                row.id == fed.pending.id && row.status == DeliveryStatus::Pending
            });
        if same {
            state.mode = Mode::On(Instant::now());
        } else {
            state.off();
        }
    }

    /// What the journal read after a [`Take::Read`] returned (`read`), with the
    /// ids it was told to skip (those being recorded) and whether it saw the whole lane
    /// (fewer rows than asked for). Brings the feed into sync when it can.
    pub(crate) fn synced(&self, read: &[&PendingDelivery], skipped: &[MessageId], whole: bool) {
        if !self.enabled {
            return;
        }
        let mut state = self.state();
        let Mode::Syncing { buffer, .. } = std::mem::replace(&mut state.mode, Mode::Off) else {
            // Dropped out of sync while the read ran (a replay, an overflow).
            return;
        };
        // A retry is owed at a time of its own: the journal keeps track of it. A hold
        // means something is being queued that no push will announce.
        if !whole
            || read.iter().any(|p| p.status != DeliveryStatus::Pending)
            || self.holds.load(Ordering::SeqCst) > 0
        {
            return;
        }
        let seen: HashSet<MessageId> = read
            .iter()
            .map(|p| p.id)
            .chain(skipped.iter().copied())
            .collect();
        let entries: VecDeque<Fed> = buffer
            .into_iter()
            .filter(|f| !seen.contains(&f.pending.id))
            .collect();
        if entries
            .iter()
            .zip(entries.iter().skip(1))
            .any(|(a, b)| a.pending.id >= b.pending.id)
        {
            return;
        }
        state.bytes = entries.iter().map(|f| f.payload.len()).sum();
        state.entries = entries;
        state.seen = seen;
        state.mode = Mode::On(Instant::now());
    }

    /// Out of sync: the next batch is read from the journal.
    pub(crate) fn stop(&self) {
        self.state().off();
    }

    /// Out of sync until [`Feed::release`]: for a write that queues deliveries without a
    /// push (a replay requeues old messages), from before it commits until after, so no
    /// read can bring the feed into sync without seeing it.
    pub(crate) fn hold(&self) {
        self.holds.fetch_add(1, Ordering::SeqCst);
        self.stop();
    }

    /// Ends a [`Feed::hold`]; the feed comes into sync with the next read after it.
    pub(crate) fn release(&self) {
        self.holds.fetch_sub(1, Ordering::SeqCst);
        self.stop();
    }
}

impl State {
    fn off(&mut self) {
        self.mode = Mode::Off;
        self.entries.clear();
        self.bytes = 0;
        self.seen.clear();
    }
}

/// A fresh delivery, as the journal lists one that has not been tried.
pub(crate) fn fresh(
    id: MessageId,
    received_at: std::time::SystemTime,
    lane: u32,
) -> PendingDelivery {
    // The journal keeps whole milliseconds; a file destination names its file by them,
    // and a resend after a restart must land on the same name.
    let whole_ms =
        |d: Duration| Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let received_at = match received_at.duration_since(std::time::UNIX_EPOCH) {
        Ok(after) => std::time::UNIX_EPOCH + whole_ms(after),
        Err(before) => std::time::UNIX_EPOCH - whole_ms(before.duration()),
    };
    PendingDelivery {
        id,
        received_at,
        status: DeliveryStatus::Pending,
        attempts: 0,
        next_at: None,
        last_error: None,
        order_key: None,
        lane,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fed(id: i64) -> Fed {
        Fed {
            pending: fresh(MessageId(id), std::time::SystemTime::now(), 0),
            payload: vec![b'x'; 10],
        }
    }

    fn ids(batch: &[Fed]) -> Vec<i64> {
        batch.iter().map(|f| f.pending.id.0).collect()
    }

    impl Take {
        fn is_read(&self) -> bool {
            matches!(self, Take::Read)
        }

        fn expect(self, what: &str) -> Vec<Fed> {
            match self {
                Take::Fed(batch) => batch,
                other => panic!("{what}: {other:?}"),
            }
        }
    }

    /// The feed's check against a journal that lists `ids` at the head of the lane.
    fn check(feed: &Feed, ids: &[i64]) {
        feed.confirm(&read(ids));
    }

    /// A feed in sync holding `ids`, whose refresh has come due: it asks for its check.
    fn due_for_check(ids: impl IntoIterator<Item = i64>) -> Feed {
        let feed = Feed::new(true);
        assert!(feed.take(10).is_read());
        sync(&feed, &[], &[], true);
        for id in ids {
            feed.push(fed(id));
        }
        feed.state().mode = Mode::On(Instant::now() - REFRESH);
        assert!(matches!(feed.take(10), Take::Check), "due for its check");
        feed
    }

    /// A journal read that returned `ids`, all pending.
    fn read(ids: &[i64]) -> Vec<PendingDelivery> {
        ids.iter()
            .map(|&id| fresh(MessageId(id), std::time::SystemTime::now(), 0))
            .collect()
    }

    fn sync(feed: &Feed, returned: &[i64], skipped: &[i64], whole: bool) {
        let rows = read(returned);
        let refs: Vec<&PendingDelivery> = rows.iter().collect();
        let skipped: Vec<MessageId> = skipped.iter().map(|&i| MessageId(i)).collect();
        feed.synced(&refs, &skipped, whole);
    }

    #[test]
    fn out_of_sync_until_a_whole_read_and_pushes_are_dropped_meanwhile() {
        let feed = Feed::new(true);
        feed.push(fed(1));
        assert!(
            feed.take(10).is_read(),
            "a new feed is read from the journal"
        );
        sync(&feed, &[1], &[], true);
        assert_eq!(ids(&feed.take(10).expect("in sync")), Vec::<i64>::new());
        feed.push(fed(2));
        feed.push(fed(3));
        assert_eq!(ids(&feed.take(1).expect("in sync")), [2]);
        assert_eq!(ids(&feed.take(10).expect("in sync")), [3]);
    }

    #[test]
    fn pushes_during_the_read_are_kept_less_what_the_read_returned() {
        let feed = Feed::new(true);
        assert!(feed.take(10).is_read());
        // 4 and 5 committed before the read's snapshot (it returns them), 6 after; 3 is
        // being recorded and was skipped.
        feed.push(fed(4));
        feed.push(fed(5));
        feed.push(fed(6));
        sync(&feed, &[4, 5], &[3], true);
        // Answers that come after the sync for rows the read returned are not handed twice.
        feed.push(fed(3));
        feed.push(fed(5));
        feed.push(fed(7));
        assert_eq!(ids(&feed.take(10).expect("in sync")), [6, 7]);
    }

    #[test]
    fn a_partial_read_or_a_retry_keeps_the_journal_in_charge() {
        let feed = Feed::new(true);
        assert!(feed.take(10).is_read());
        sync(&feed, &[1, 2], &[], false);
        assert!(feed.take(10).is_read(), "the read was cut at its limit");
        let mut rows = read(&[3]);
        rows[0].status = DeliveryStatus::Retry;
        feed.synced(&rows.iter().collect::<Vec<_>>(), &[], true);
        assert!(feed.take(10).is_read(), "a retry is owed at its own time");
    }

    #[test]
    fn stop_during_a_read_wins() {
        let feed = Feed::new(true);
        assert!(feed.take(10).is_read());
        feed.stop(); // a replay requeued something the read may not have seen
        sync(&feed, &[], &[], true);
        assert!(feed.take(10).is_read());
    }

    #[test]
    fn disorder_and_overflow_drop_out_of_sync() {
        let feed = Feed::new(true);
        assert!(feed.take(10).is_read());
        sync(&feed, &[], &[], true);
        feed.push(fed(5));
        feed.push(fed(4));
        assert!(feed.take(10).is_read(), "a push out of order");

        sync(&feed, &[], &[], true);
        for id in 10..10 + MAX_ENTRIES as i64 {
            feed.push(fed(id));
        }
        assert_eq!(feed.take(1).expect("in sync").len(), 1);
        feed.push(fed(10_000));
        feed.push(fed(10_001));
        assert!(feed.take(10).is_read(), "more than the feed holds");

        sync(&feed, &[], &[], true);
        feed.push(Fed {
            pending: fresh(MessageId(20_000), std::time::SystemTime::now(), 0),
            payload: vec![0; MAX_BYTES + 1],
        });
        assert!(feed.take(10).is_read(), "more bytes than the feed holds");
    }

    #[test]
    fn an_empty_feed_is_read_again_after_the_refresh_interval() {
        let feed = Feed::new(true);
        assert!(feed.take(10).is_read());
        sync(&feed, &[], &[], true);
        feed.state().mode = Mode::On(Instant::now() - REFRESH);
        assert!(feed.take(10).is_read(), "work the feed never saw is found");
    }

    #[test]
    fn a_feed_that_matches_the_head_of_the_lane_stays_in_sync() {
        let feed = due_for_check(1..=5);
        // The journal's read stopped at its limit, or before the last commits.
        check(&feed, &[1, 2, 3]);
        feed.push(fed(6));
        assert_eq!(
            ids(&feed.take(10).expect("still in sync")),
            [1, 2, 3, 4, 5, 6]
        );
    }

    #[test]
    fn a_feed_that_differs_from_the_head_of_the_lane_drops_out() {
        let with = |head: &[i64], why: &str| {
            let feed = due_for_check(10..=12);
            check(&feed, head);
            assert!(!feed.wants(1), "{why}: pushes are dropped until the read");
            assert!(feed.take(10).is_read(), "{why}");
        };
        with(&[3, 10, 11], "a requeued older message the feed never saw");
        with(&[10, 11, 12, 13], "a message the feed does not hold");
        with(&[10, 12], "a message missing from the journal");
        let feed = due_for_check([10]);
        let mut rows = read(&[10]);
        rows[0].status = DeliveryStatus::Retry;
        feed.confirm(&rows);
        assert!(feed.take(10).is_read(), "a retry is the journal's to time");
    }

    #[test]
    fn a_hold_during_the_check_drops_the_feed() {
        let feed = due_for_check([1]);
        feed.hold();
        check(&feed, &[1]);
        feed.release();
        assert!(feed.take(10).is_read());
    }

    #[test]
    fn a_hold_keeps_the_feed_out_of_sync_until_released() {
        let feed = Feed::new(true);
        assert!(feed.take(10).is_read());
        feed.hold(); // a replay is about to queue old messages
        sync(&feed, &[], &[], true);
        assert!(
            feed.take(10).is_read(),
            "held: the read may predate the requeue"
        );
        feed.release();
        assert!(feed.take(10).is_read(), "read again after the requeue");
        sync(&feed, &[3], &[], true);
        feed.push(fed(7));
        assert_eq!(ids(&feed.take(10).expect("in sync")), [7]);
    }

    #[test]
    fn only_a_feed_that_would_keep_a_push_wants_its_bytes() {
        let feed = Feed::new(true);
        assert!(!feed.wants(10), "out of sync");
        assert!(feed.take(10).is_read());
        assert!(feed.wants(10), "syncing keeps pushes");
        assert!(!feed.wants(MAX_BYTES + 1), "too large for any feed");
        sync(&feed, &[], &[], true);
        assert!(feed.wants(10));
        feed.stop();
        assert!(!feed.wants(10));
        assert!(!Feed::new(false).wants(10));
    }

    #[test]
    fn a_disabled_feed_never_answers() {
        let feed = Feed::new(false);
        assert!(feed.take(10).is_read());
        sync(&feed, &[], &[], true);
        feed.push(fed(1));
        assert!(feed.take(10).is_read());
    }

    #[test]
    fn fresh_deliveries_carry_whole_milliseconds_like_the_journal() {
        let at = std::time::UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
        let p = fresh(MessageId(9), at, 3);
        assert_eq!(
            p.received_at,
            std::time::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123)
        );
        assert_eq!(
            (p.lane, p.attempts, p.status),
            (3, 0, DeliveryStatus::Pending)
        );
    }
}
