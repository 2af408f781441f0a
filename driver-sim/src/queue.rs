//! The event queue: a priority queue ordered by (virtual time, sequence number).
//!
//! A million-peer run keeps a million timer entries and hundreds of thousands of frames in
//! flight; a single binary heap over all of them costs about twenty cache misses per
//! operation. This is a calendar queue instead: a wheel of one-millisecond slots covering the
//! next half minute, each slot an unsorted `Vec` (push is an append), and a binary heap for
//! the one slot being drained. Entries beyond the wheel's horizon wait in an overflow heap and
//! move onto the wheel as it turns. The order of entries is exactly (time, sequence): the
//! structure only changes the cost, never the order, which a property test checks against a
//! plain binary heap.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use peer_relay_core::Time;
use serde::{Deserialize, Serialize};

/// Width of one wheel slot, in microseconds.
const SLOT_MICROS: u64 = 1_000;
/// Slots on the wheel: 32,768 one-millisecond slots hold the next 32.8 s, past the core's
/// longest routine timer (the 15 s +-25% discovery refresh).
const WHEEL_SLOTS: u64 = 1 << 15;

/// Emptied slot buffers kept for reuse.
const MAX_SPARE_BUFFERS: usize = 16;

/// Only slots this close to the one being drained take a spare buffer. Frames in flight
/// crowd the next few dozen milliseconds, and a spare's room came from such a crowd; a slot
/// further out mostly holds a few timer entries and would keep that room idle for seconds
/// (at 1,000 peers, 5.7 KiB per peer of the queue was such room).
const SPARE_HORIZON_SLOTS: u64 = 256;

/// A queued item and its position in the order.
#[derive(Debug, Serialize, Deserialize)]
struct Entry<T> {
    at: Time,
    seq: u64,
    item: T,
}

impl<T> Entry<T> {
    fn slot(&self) -> u64 {
        self.at.as_micros() / SLOT_MICROS
    }
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl<T> Eq for Entry<T> {}

impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<T> Ord for Entry<T> {
    /// Reversed, so that `BinaryHeap` (a max-heap) pops the earliest entry first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// A priority queue of `T` ordered by (time, insertion sequence): entries at the same time
/// come out in the order they were pushed.
#[derive(Debug, Serialize, Deserialize)]
pub struct EventQueue<T> {
    /// Entries in slots up to and including `slot`, ordered.
    current: BinaryHeap<Entry<T>>,
    /// The slot being drained; entries in later slots wait on the wheel or in `overflow`.
    slot: u64,
    /// `wheel[s % WHEEL_SLOTS]` holds entries of slot `s` for `slot < s < slot + WHEEL_SLOTS`.
    wheel: Vec<Vec<Entry<T>>>,
    on_wheel: usize,
    /// Entries at or past `slot + WHEEL_SLOTS`.
    overflow: BinaryHeap<Entry<T>>,
    /// Emptied slot buffers kept for reuse (a few, so bursts are not remembered forever).
    spare: Vec<Vec<Entry<T>>>,
    next_seq: u64,
    len: usize,
}

impl<T> Default for EventQueue<T> {
    fn default() -> Self {
        EventQueue::new()
    }
}

impl<T> EventQueue<T> {
    /// An empty queue.
    pub fn new() -> EventQueue<T> {
        EventQueue {
            current: BinaryHeap::new(),
            slot: 0,
            wheel: (0..WHEEL_SLOTS).map(|_| Vec::new()).collect(),
            on_wheel: 0,
            overflow: BinaryHeap::new(),
            spare: Vec::new(),
            next_seq: 0,
            len: 0,
        }
    }

    /// Number of queued entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Queues `item` at `at`, after everything already queued for the same time.
    pub fn push(&mut self, at: Time, item: T) {
        let entry = Entry {
            at,
            seq: self.next_seq,
            item,
        };
        self.next_seq += 1;
        self.len += 1;
        self.place(entry);
    }

    fn place(&mut self, entry: Entry<T>) {
        let slot = entry.slot();
        if slot <= self.slot {
            self.current.push(entry);
        } else if slot - self.slot < WHEEL_SLOTS {
            let bucket = &mut self.wheel[(slot % WHEEL_SLOTS) as usize];
            if bucket.capacity() == 0 && slot - self.slot <= SPARE_HORIZON_SLOTS {
                if let Some(buffer) = self.spare.pop() {
                    *bucket = buffer;
                }
            }
            bucket.push(entry);
            self.on_wheel += 1;
        } else {
            self.overflow.push(entry);
        }
    }

    /// The time of the earliest entry.
    pub fn peek_time(&mut self) -> Option<Time> {
        self.fill_current();
        self.current.peek().map(|e| e.at)
    }

    /// Removes and returns the earliest entry.
    pub fn pop(&mut self) -> Option<(Time, T)> {
        self.fill_current();
        let entry = self.current.pop()?;
        self.len -= 1;
        Some((entry.at, entry.item))
    }

    /// Turns the wheel until the current slot holds the earliest entries (or nothing is left).
    /// Turning early is harmless: later pushes for earlier slots go into `current`, which is
    /// ordered.
    fn fill_current(&mut self) {
        while self.current.is_empty() && self.len > 0 {
            if self.on_wheel == 0 {
                // Nothing on the wheel: jump straight to the overflow's first slot.
                let Some(first) = self.overflow.peek() else {
                    unreachable!("len counts an entry that is nowhere")
                };
                self.slot = first.slot();
            } else {
                self.slot += 1;
            }
            while self
                .overflow
                .peek()
                .is_some_and(|e| e.slot() < self.slot + WHEEL_SLOTS)
            {
                let entry = self.overflow.pop().unwrap_or_else(|| unreachable!());
                self.place(entry);
            }
            let bucket = &mut self.wheel[(self.slot % WHEEL_SLOTS) as usize];
            if !bucket.is_empty() {
                self.on_wheel -= bucket.len();
                // Take the slot's buffer and heapify it in place. The slot keeps no
                // capacity (a wheel that kept every slot's largest burst would hold many
                // times the live entries); the drained heap's buffer goes to the spares.
                let drained =
                    std::mem::replace(&mut self.current, BinaryHeap::from(std::mem::take(bucket)));
                if self.spare.len() < MAX_SPARE_BUFFERS {
                    self.spare.push(drained.into_vec());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::cmp::Reverse;

    #[test]
    fn same_time_entries_keep_push_order() {
        let mut q = EventQueue::new();
        let t = Time::from_millis(5);
        for i in 0..10 {
            q.push(t, i);
        }
        q.push(Time::from_millis(1), 100);
        let order: Vec<i32> = std::iter::from_fn(|| q.pop().map(|(_, x)| x)).collect();
        assert_eq!(order, vec![100, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    }

    #[test]
    fn far_future_entries_come_back_from_overflow() {
        let mut q = EventQueue::new();
        q.push(Time::from_millis(3_600_000), "hour");
        q.push(Time::from_millis(40_000), "40s");
        q.push(Time::ZERO, "now");
        assert_eq!(q.pop(), Some((Time::ZERO, "now")));
        assert_eq!(q.peek_time(), Some(Time::from_millis(40_000)));
        q.push(Time::from_millis(39_000), "39s");
        assert_eq!(q.pop(), Some((Time::from_millis(39_000), "39s")));
        assert_eq!(q.pop(), Some((Time::from_millis(40_000), "40s")));
        assert_eq!(q.pop(), Some((Time::from_millis(3_600_000), "hour")));
        assert_eq!(q.pop(), None);
        assert!(q.is_empty());
    }

    proptest! {
        /// Interleaved pushes (never before the last popped time, as in the simulator) and
        /// pops give exactly the order of a binary heap on (time, sequence).
        #[test]
        fn matches_a_binary_heap(ops in proptest::collection::vec((0u8..3, 0u64..120_000_000), 1..400)) {
            let mut q = EventQueue::new();
            let mut reference = BinaryHeap::new();
            let mut now = 0u64;
            let mut seq = 0u64;
            for (op, delta) in ops {
                if op == 0 {
                    let got = q.pop();
                    let want = reference.pop().map(|Reverse((t, s))| (Time::from_micros(t), s));
                    prop_assert_eq!(got, want);
                    if let Some((t, _)) = got {
                        now = t.as_micros();
                    }
                } else {
                    // Mostly near-future times, sometimes far ones, sometimes "now".
                    let at = match op {
                        1 => now + delta % 50_000,
                        _ => now + delta,
                    };
                    q.push(Time::from_micros(at), seq);
                    reference.push(Reverse((at, seq)));
                    seq += 1;
                }
                prop_assert_eq!(q.len(), reference.len());
            }
            while let Some(Reverse((t, s))) = reference.pop() {
                prop_assert_eq!(q.pop(), Some((Time::from_micros(t), s)));
            }
            prop_assert_eq!(q.pop(), None);
        }
    }
}
