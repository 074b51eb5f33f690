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
//! It holds at most [`JournalOptions::duplicate_window_entries`] messages (about 60 bytes
//! each); past that the oldest are forgotten first, and a repeat of one of them is no
//! longer flagged.
//!
//! [`JournalOptions::duplicate_window_entries`]: crate::JournalOptions::duplicate_window_entries

use std::collections::VecDeque;
use std::collections::hash_map::{HashMap, RandomState};
use std::hash::BuildHasher;

/// Message ids inside the duplicate window, by hash of interface and control id.
#[derive(Debug)]
pub(crate) struct DupWindow {
    window_ms: i64,
    capacity: usize,
    hasher: RandomState,
    /// Ids per key hash, ascending: the earliest candidate is tried first.
    by_key: HashMap<u64, Vec<i64>>,
    /// Entries in the order they were added, for eviction.
    order: VecDeque<Entry>,
    /// The latest `received_at` seen; entries older than it by more than the window go.
    newest_ms: i64,
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
    pub(crate) fn candidates(&self, interface: &str, control_id: &str) -> &[i64] {
        self.by_key
            .get(&self.key(interface, control_id))
            .map_or(&[], Vec::as_slice)
    }

    /// Records message `id`, received at `at_ms`, and forgets what fell out of the window
    /// or past the capacity.
    pub(crate) fn insert(&mut self, interface: &str, control_id: &str, at_ms: i64, id: i64) {
        let key = self.key(interface, control_id);
        let ids = self.by_key.entry(key).or_default();
        // Ids normally arrive in ascending order; a rebuild or rollback may not.
        let at = ids.partition_point(|&other| other < id);
        if ids.get(at) != Some(&id) {
            ids.insert(at, id);
        }
        self.order.push_back(Entry { at_ms, key, id });
        self.newest_ms = self.newest_ms.max(at_ms);
        self.evict();
    }

    /// Adds a message older than every one held so far: how the window is rebuilt from
    /// the table, newest first. Stops adding once full.
    pub(crate) fn push_oldest(&mut self, interface: &str, control_id: &str, at_ms: i64, id: i64) {
        if self.order.len() >= self.capacity {
            return;
        }
        let key = self.key(interface, control_id);
        let ids = self.by_key.entry(key).or_default();
        let at = ids.partition_point(|&other| other < id);
        if ids.get(at) != Some(&id) {
            ids.insert(at, id);
        }
        self.order.push_front(Entry { at_ms, key, id });
        self.newest_ms = self.newest_ms.max(at_ms);
    }

    fn evict(&mut self) {
        let oldest_kept = self.newest_ms.saturating_sub(self.window_ms);
        while let Some(front) = self.order.front().copied() {
            if self.order.len() <= self.capacity && front.at_ms >= oldest_kept {
                break;
            }
            self.order.pop_front();
            if let Some(ids) = self.by_key.get_mut(&front.key) {
                ids.retain(|&id| id != front.id);
                if ids.is_empty() {
                    self.by_key.remove(&front.key);
                }
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

    #[test]
    fn finds_candidates_by_interface_and_control_id() {
        let mut w = DupWindow::new(1_000, 100);
        w.insert("adt", "X", 0, 1);
        w.insert("adt", "X", 10, 2);
        w.insert("lab", "X", 10, 3);
        assert_eq!(w.candidates("adt", "X"), &[1, 2]);
        assert_eq!(w.candidates("lab", "X"), &[3]);
        assert!(w.candidates("adt", "Y").is_empty());
        // The interface/control id boundary is part of the key.
        w.insert("ab", "c", 10, 4);
        assert!(w.candidates("a", "bc").is_empty());
    }

    #[test]
    fn forgets_what_falls_out_of_the_window() {
        let mut w = DupWindow::new(1_000, 100);
        w.insert("adt", "X", 0, 1);
        w.insert("adt", "Y", 700, 2);
        w.insert("adt", "Z", 1_600, 3);
        assert!(
            w.candidates("adt", "X").is_empty(),
            "1.6 s older: outside 1 s"
        );
        assert_eq!(w.candidates("adt", "Y"), &[2], "0.9 s older: inside");
        w.insert("adt", "Z", 1_800, 4);
        assert!(w.candidates("adt", "Y").is_empty());
        assert_eq!(w.candidates("adt", "Z"), &[3, 4]);
        assert_eq!(w.len(), 2);
    }

    #[test]
    fn capacity_bounds_the_window() {
        let mut w = DupWindow::new(i64::MAX, 3);
        for id in 1..=10 {
            w.insert("adt", &format!("C{id}"), id, id);
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
        w.insert("adt", "D", 1_600, 4);
        assert!(w.candidates("adt", "B").is_empty());
        assert_eq!(w.candidates("adt", "C"), &[3]);
        assert_eq!(w.candidates("adt", "D"), &[4]);
    }

    #[test]
    fn ids_stay_sorted_whatever_the_insert_order() {
        let mut w = DupWindow::new(i64::MAX, 100);
        for id in [5, 2, 9, 2] {
            w.insert("adt", "X", 0, id);
        }
        assert_eq!(w.candidates("adt", "X"), &[2, 5, 9]);
    }
}
