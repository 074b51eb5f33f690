//! The duplicate window, kept in memory by the SQLite backend.
//!
//! Flagging a duplicate needs "which earlier message had this interface and control id?".
//! An SQL index on `(interface, control_id)` answered that until schema version 4, but
//! control ids arrive in no particular order, so every insert landed on a different
//! leaf page of that index and every group commit rewrote one page per message: the
//! largest single share of the journal's writes. Dropping the index made the end-to-end
//! bench about 30% faster.
//!
//! Instead the writer thread keeps, for every message inside the window, a 64-bit hash
//! of its interface and control id and the message id. The hash only finds candidates:
//! each one is confirmed against the `messages` row by primary key (same interface, same
//! control id, received within the window) before a message is flagged. A hash
//! collision, a candidate whose transaction rolled back, or one that retention pruned is
//! therefore never reported as a duplicate.
//!
//! The window is rebuilt from the `messages` table by the first write that needs it after
//! the journal opens (a CLI that only reads never loads it), so flags survive a restart.
//! It holds at most [`JournalOptions::duplicate_window_entries`] messages (about 100 bytes
//! each); past that the oldest are forgotten first, and a repeat of one of them is no
//! longer flagged.
//!
//! [`JournalOptions::duplicate_window_entries`]: crate::JournalOptions::duplicate_window_entries

use std::collections::VecDeque;
use std::collections::hash_map::{Entry as MapEntry, HashMap, RandomState};
use std::hash::BuildHasher;

/// Message ids inside the duplicate window, by hash of interface and control id.
#[derive(Debug)]
pub(crate) struct DupWindow {
    window_ms: i64,
    capacity: usize,
    hasher: RandomState,
    /// Ids per key hash: the earliest candidate is tried first.
    by_key: HashMap<u64, Ids>,
    /// Entries in the order they were added, for eviction.
    order: VecDeque<Entry>,
    /// The latest `received_at` seen.
    newest_ms: i64,
}

/// One key's ids, ascending. Nearly every key has one, kept inline; the rest are
/// evicted from the front, oldest first.
#[derive(Debug)]
struct Ids {
    first: i64,
    rest: VecDeque<i64>,
}

impl Ids {
    fn iter(&self) -> impl Iterator<Item = i64> + '_ {
        std::iter::once(self.first).chain(self.rest.iter().copied())
    }

    /// Adds `id` in order; false when it is already there.
    fn add(&mut self, id: i64) -> bool {
        if id == self.first {
            return false;
        }
        if id < self.first {
            self.rest.push_front(std::mem::replace(&mut self.first, id));
            return true;
        }
        // Ids normally arrive in ascending order; a rebuild or a rollback may not.
        match self.rest.binary_search(&id) {
            Ok(_) => false,
            Err(at) => {
                self.rest.insert(at, id);
                true
            }
        }
    }

    /// Removes `id`; true when none are left.
    fn remove(&mut self, id: i64) -> bool {
        if id == self.first {
            match self.rest.pop_front() {
                Some(next) => self.first = next,
                None => return true,
            }
        } else if let Ok(at) = self.rest.binary_search(&id) {
            self.rest.remove(at);
        }
        false
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    at_ms: i64,
    key: u64,
    id: i64,
}

impl DupWindow {
    pub(crate) fn new(window_ms: i64, capacity: usize) -> Self {
        Self {
            window_ms,
            capacity: capacity.max(1),
            hasher: RandomState::new(),
            by_key: HashMap::new(),
            order: VecDeque::new(),
            newest_ms: i64::MIN,
        }
    }

    fn key(&self, interface: &str, control_id: &str) -> u64 {
        // Length-prefixed, so ("ab", "c") and ("a", "bc") hash different bytes.
        self.hasher
            .hash_one((interface.len(), interface, control_id))
    }

    /// The ids that may be earlier messages with this interface and control id, earliest
    /// first. Callers confirm each against the stored row.
    pub(crate) fn candidates(&self, interface: &str, control_id: &str) -> Vec<i64> {
        self.by_key
            .get(&self.key(interface, control_id))
            .map_or_else(Vec::new, |ids| ids.iter().collect())
    }

    /// Adds `id` under `key`; false when it was already there.
    fn add(&mut self, key: u64, id: i64) -> bool {
        match self.by_key.entry(key) {
            MapEntry::Occupied(mut ids) => ids.get_mut().add(id),
            MapEntry::Vacant(slot) => {
                slot.insert(Ids {
                    first: id,
                    rest: VecDeque::new(),
                });
                true
            }
        }
    }

    /// Records message `id`, received at `at_ms`, and forgets what fell out of the window
    /// or past the capacity. `now_ms` is the wall clock: the window ends where the clock
    /// or the newest message is, whichever is earlier, so one message stamped far ahead
    /// (a clock that jumped, then was corrected) does not push everything else out.
    pub(crate) fn insert(
        &mut self,
        interface: &str,
        control_id: &str,
        at_ms: i64,
        id: i64,
        now_ms: i64,
    ) {
        let key = self.key(interface, control_id);
        // A rolled-back id can come back for the same message: keep one entry for it.
        if self.add(key, id) {
            self.order.push_back(Entry { at_ms, key, id });
        }
        self.newest_ms = self.newest_ms.max(at_ms);
        self.evict(now_ms);
    }

    /// Adds a message older than every one held so far: how the window is rebuilt from
    /// the table, newest first. Stops adding once full.
    pub(crate) fn push_oldest(&mut self, interface: &str, control_id: &str, at_ms: i64, id: i64) {
        if self.order.len() >= self.capacity {
            return;
        }
        let key = self.key(interface, control_id);
        if self.add(key, id) {
            self.order.push_front(Entry { at_ms, key, id });
        }
        self.newest_ms = self.newest_ms.max(at_ms);
    }

    fn evict(&mut self, now_ms: i64) {
        let oldest_kept = self.newest_ms.min(now_ms).saturating_sub(self.window_ms);
        while let Some(front) = self.order.front().copied() {
            if self.order.len() <= self.capacity && front.at_ms >= oldest_kept {
                break;
            }
            self.order.pop_front();
            if let MapEntry::Occupied(mut ids) = self.by_key.entry(front.key)
                && ids.get_mut().remove(front.id)
            {
                ids.remove();
            }
        }
    }

    /// How many messages the window holds.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A wall clock far past every test time: the newest message bounds the window.
    const FAR: i64 = i64::MAX / 2;

    #[test]
    fn finds_candidates_by_interface_and_control_id() {
        let mut w = DupWindow::new(1_000, 100);
        w.insert("adt", "X", 0, 1, FAR);
        w.insert("adt", "X", 10, 2, FAR);
        w.insert("lab", "X", 10, 3, FAR);
        assert_eq!(w.candidates("adt", "X"), &[1, 2]);
        assert_eq!(w.candidates("lab", "X"), &[3]);
        assert!(w.candidates("adt", "Y").is_empty());
        // The interface/control id boundary is part of the key.
        w.insert("ab", "c", 10, 4, FAR);
        assert!(w.candidates("a", "bc").is_empty());
    }

    #[test]
    fn forgets_what_falls_out_of_the_window() {
        let mut w = DupWindow::new(1_000, 100);
        w.insert("adt", "X", 0, 1, FAR);
        w.insert("adt", "Y", 700, 2, FAR);
        w.insert("adt", "Z", 1_600, 3, FAR);
        assert!(
            w.candidates("adt", "X").is_empty(),
            "1.6 s older: outside 1 s"
        );
        assert_eq!(w.candidates("adt", "Y"), &[2], "0.9 s older: inside");
        w.insert("adt", "Z", 1_800, 4, FAR);
        assert!(w.candidates("adt", "Y").is_empty());
        assert_eq!(w.candidates("adt", "Z"), &[3, 4]);
        assert_eq!(w.len(), 2);
    }

    #[test]
    fn capacity_bounds_the_window() {
        let mut w = DupWindow::new(i64::MAX, 3);
        for id in 1..=10 {
            w.insert("adt", &format!("C{id}"), id, id, FAR);
        }
        assert_eq!(w.len(), 3);
        assert!(w.candidates("adt", "C7").is_empty());
        assert_eq!(w.candidates("adt", "C8"), &[8]);
        assert_eq!(w.candidates("adt", "C10"), &[10]);
    }

    #[test]
    fn a_rebuild_newest_first_keeps_the_newest_up_to_capacity() {
        let mut w = DupWindow::new(1_000, 2);
        w.push_oldest("adt", "C", 900, 3);
        w.push_oldest("adt", "B", 500, 2);
        w.push_oldest("adt", "A", 100, 1);
        assert_eq!(w.len(), 2);
        assert!(w.candidates("adt", "A").is_empty());
        // Later inserts evict from the oldest end.
        w.insert("adt", "D", 1_600, 4, FAR);
        assert!(w.candidates("adt", "B").is_empty());
        assert_eq!(w.candidates("adt", "C"), &[3]);
        assert_eq!(w.candidates("adt", "D"), &[4]);
    }

    #[test]
    fn after_a_clock_correction_the_window_follows_the_clock() {
        // The clock jumped ahead for one message, then was corrected: what arrives after
        // the correction must not be evicted against the jumped stamp.
        let mut w = DupWindow::new(60, 100);
        w.insert("adt", "A", 50, 1, 50);
        w.insert("adt", "JUMP", 10_000, 2, 10_000);
        w.insert("adt", "B", 60, 3, 60);
        w.insert("adt", "C", 61, 4, 61);
        assert_eq!(w.candidates("adt", "B"), &[3]);
        assert_eq!(w.candidates("adt", "C"), &[4]);
        // Eviction is in arrival order: what queued behind the jumped stamp leaves with
        // it (candidates are confirmed against their rows, so staying longer is harmless;
        // the capacity still bounds memory).
        w.insert("adt", "D", 200, 5, 200);
        assert_eq!(w.candidates("adt", "D"), &[5]);
        assert_eq!(w.len(), 4);
    }

    #[test]
    fn an_id_that_comes_back_is_held_once() {
        // A batch rolled back and its id was used again for the same message.
        let mut w = DupWindow::new(1_000, 100);
        w.insert("adt", "X", 0, 7, FAR);
        w.insert("adt", "X", 500, 7, FAR);
        assert_eq!(w.len(), 1);
        assert_eq!(w.candidates("adt", "X"), &[7]);
    }

    #[test]
    fn many_ids_under_one_key_are_evicted_oldest_first() {
        // A sender that repeats one MSH-10: the window stays right and bounded.
        let mut w = DupWindow::new(i64::MAX, 1_000);
        for id in 1..=10_000 {
            w.insert("adt", "SAME", id, id, FAR);
        }
        assert_eq!(w.len(), 1_000);
        let ids = w.candidates("adt", "SAME");
        assert_eq!(ids.len(), 1_000);
        assert_eq!((ids[0], ids[999]), (9_001, 10_000));
    }

    #[test]
    fn ids_stay_sorted_whatever_the_insert_order() {
        let mut w = DupWindow::new(i64::MAX, 100);
        for id in [5, 2, 9, 2] {
            w.insert("adt", "X", 0, id, FAR);
        }
        assert_eq!(w.candidates("adt", "X"), &[2, 5, 9]);
    }
}
