//! [`Watchdog`]: one timer per connection for deadlines that move with every message.
//!
//! A connection loop waits under a deadline at each step: the next frame (idle timeout), the
//! handler, the write, the ACK. `tokio::time::timeout` gives each wait a timer of its own,
//! entered into the runtime's timer wheel when the wait starts and taken out when it ends:
//! several wheel operations per message, most of them for timeouts that never fire. Under
//! load that was about 3% of `plexus bench`'s CPU.
//!
//! A watchdog keeps one timer and moves it only when a wait needs it to fire sooner. A later
//! deadline leaves the timer where it is; should it fire first, the wait sees that its own
//! deadline has not come and sets the timer to it. With the usual timeouts (seconds to
//! minutes) a busy connection touches the wheel a few times a minute instead of several
//! times per message. Timing is as exact as with `timeout`: a wait ends at its deadline,
//! never earlier, and at most one timer tick later.

use std::future::Future;
use std::pin::{Pin, pin};
use std::task::Poll;

use tokio::task::coop;
use tokio::time::{Instant, Sleep, sleep_until};

/// Runs futures under deadlines with one timer, reused from wait to wait. See the module
/// docs. The timer is created on the first wait, so a watchdog may be made outside a runtime.
#[derive(Debug, Default)]
pub struct Watchdog {
    timer: Option<Pin<Box<Sleep>>>,
}

impl Watchdog {
    /// A watchdog with no timer yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `fut` until it completes (`Some` of its output) or `deadline` passes (`None`).
    /// Like `tokio::time::timeout_at`, `fut` is polled first, so one that is ready at once
    /// is never timed out.
    pub async fn run<F: Future>(&mut self, deadline: Instant, fut: F) -> Option<F::Output> {
        let timer = match &mut self.timer {
            Some(timer) => {
                if deadline < timer.deadline() {
                    timer.as_mut().reset(deadline);
                }
                timer
            }
            None => self.timer.insert(Box::pin(sleep_until(deadline))),
        };
        let mut fut = pin!(fut);
        std::future::poll_fn(|cx| {
            let had_budget = coop::has_budget_remaining();
            if let Poll::Ready(out) = fut.as_mut().poll(cx) {
                return Poll::Ready(Some(out));
            }
            // Polling the timer takes from the task's budget too. When `fut` used up the
            // budget (a peer that keeps the socket full), the timer is polled without it,
            // as `tokio::time::timeout` does; otherwise such a peer would never time out.
            let unbudgeted = had_budget && !coop::has_budget_remaining();
            let mut fired = |timer: &mut Pin<Box<Sleep>>| {
                if unbudgeted {
                    pin!(coop::unconstrained(timer.as_mut()))
                        .poll(cx)
                        .is_ready()
                } else {
                    timer.as_mut().poll(cx).is_ready()
                }
            };
            // The timer is at or before `deadline`. Each time it fires before `deadline`
            // (it was set for an earlier wait), it moves to `deadline` and is polled again,
            // which registers it; it fires at `deadline` at the latest.
            while fired(timer) {
                if timer.deadline() >= deadline {
                    return Poll::Ready(None);
                }
                timer.as_mut().reset(deadline);
            }
            Poll::Pending
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    /// Like a peer that keeps the socket full: every poll makes progress and uses up the
    /// task's budget, so it is never idle and never done.
    async fn busy() {
        loop {
            coop::consume_budget().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_ends_at_its_deadline_not_at_an_earlier_waits() {
        let mut dog = Watchdog::new();
        let start = Instant::now();
        // An earlier wait leaves the timer set for 10 s.
        assert_eq!(dog.run(start + 10 * SECOND, async { 1 }).await, Some(1));
        // This one's deadline is later: the timer fires at 10 s, moves, fires at 30 s.
        let out = dog
            .run(start + 30 * SECOND, std::future::pending::<()>())
            .await;
        assert_eq!(out, None);
        assert_eq!(Instant::now() - start, 30 * SECOND);
    }

    #[tokio::test(start_paused = true)]
    async fn a_sooner_deadline_moves_the_timer_forward() {
        let mut dog = Watchdog::new();
        let start = Instant::now();
        assert_eq!(dog.run(start + 300 * SECOND, async {}).await, Some(()));
        let out = dog
            .run(start + 5 * SECOND, std::future::pending::<()>())
            .await;
        assert_eq!(out, None);
        assert_eq!(Instant::now() - start, 5 * SECOND);
    }

    #[tokio::test(start_paused = true)]
    async fn work_that_finishes_in_time_is_not_cut_short() {
        let mut dog = Watchdog::new();
        let start = Instant::now();
        let slow = async {
            tokio::time::sleep(7 * SECOND).await;
            "done"
        };
        assert_eq!(dog.run(start + 8 * SECOND, slow).await, Some("done"));
        assert_eq!(Instant::now() - start, 7 * SECOND);
        // The timer, still set for 8 s, does not end the next wait, due at 20 s.
        let slower = async {
            tokio::time::sleep(12 * SECOND).await;
            "also done"
        };
        assert_eq!(
            dog.run(start + 20 * SECOND, slower).await,
            Some("also done")
        );
        assert_eq!(Instant::now() - start, 19 * SECOND);
    }

    #[tokio::test]
    async fn work_that_uses_up_the_tasks_budget_still_times_out() {
        let mut dog = Watchdog::new();
        let deadline = Instant::now() + Duration::from_millis(50);
        let guard = tokio::time::timeout(10 * SECOND, dog.run(deadline, busy())).await;
        assert_eq!(guard, Ok(None), "the watchdog ends it, not the guard");
        assert!(Instant::now() >= deadline);
    }

    #[tokio::test]
    async fn a_timer_moved_while_the_budget_is_used_up_still_fires() {
        let mut dog = Watchdog::new();
        // An earlier wait leaves the timer at 20 ms; this wait's deadline is 80 ms, so the
        // timer fires early and is moved while the busy future keeps the budget used up.
        let start = Instant::now();
        assert_eq!(
            dog.run(start + Duration::from_millis(20), async {}).await,
            Some(())
        );
        let deadline = start + Duration::from_millis(80);
        let guard = tokio::time::timeout(10 * SECOND, dog.run(deadline, busy())).await;
        assert_eq!(guard, Ok(None), "the watchdog ends it, not the guard");
        assert!(
            Instant::now() >= deadline,
            "not at the earlier wait's deadline"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_that_fired_unnoticed_does_not_end_a_later_wait() {
        let mut dog = Watchdog::new();
        let start = Instant::now();
        assert_eq!(dog.run(start + SECOND, async {}).await, Some(()));
        tokio::time::sleep(5 * SECOND).await;
        // The timer's deadline has passed; this wait's has not.
        let out = dog
            .run(start + 9 * SECOND, std::future::pending::<()>())
            .await;
        assert_eq!(out, None);
        assert_eq!(Instant::now() - start, 9 * SECOND);
    }
}
