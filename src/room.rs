//! Giving back the room a burst grew. A std map or queue keeps its largest
//! capacity for good: once a backlog of a million jobs has drained, the
//! tables and queues that held it would otherwise keep that size for the
//! life of the process.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash};

/// Collections this small are never shrunk: they cost little, and would
/// shrink and grow again every few jobs.
const FLOOR: usize = 1024;

pub(crate) trait GiveBack {
    /// Shrinks to twice its length once it is a quarter full or less, so a
    /// shrink (a copy or a rehash of what is left) is rare, and paid for by
    /// the pushes that grew it.
    fn give_back_room(&mut self);
}

fn oversized(capacity: usize, len: usize) -> bool {
    capacity > 4 * len.max(FLOOR)
}

impl<T> GiveBack for VecDeque<T> {
    fn give_back_room(&mut self) {
        if oversized(self.capacity(), self.len()) {
            self.shrink_to(2 * self.len());
        }
    }
}

impl<K: Eq + Hash, V, S: BuildHasher> GiveBack for HashMap<K, V, S> {
    fn give_back_room(&mut self) {
        if oversized(self.capacity(), self.len()) {
            self.shrink_to(2 * self.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drained_queue_shrinks_and_a_busy_one_does_not() {
        let mut queue: VecDeque<u64> = (0..100_000).collect();
        queue.give_back_room();
        assert!(
            queue.capacity() >= 100_000,
            "a full queue must keep its room"
        );
        queue.truncate(10);
        queue.give_back_room();
        assert!(queue.capacity() < 4 * FLOOR, "{}", queue.capacity());
        assert_eq!(queue.len(), 10);
    }

    #[test]
    fn a_drained_map_shrinks_and_keeps_its_entries() {
        let mut map: HashMap<u64, u64> = (0..100_000).map(|i| (i, i)).collect();
        map.retain(|&k, _| k < 5000);
        map.give_back_room();
        assert!(map.capacity() < 4 * 5000 * 2, "{}", map.capacity());
        assert_eq!(map.get(&4999), Some(&4999));
    }
}
