//! The jobs waiting in a lane, in the order they start: by urgency (RFC
//! 9218's `u=0` first, `u=7` last), and within one urgency round-robin
//! across callers, each caller's own in the order they came. A caller with
//! a burst of thousands thus delays another's next job by at most one of
//! its own. Without fairness every job is one caller's: plain order.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};

use crate::room::GiveBack;

const URGENCIES: usize = crate::priority::LEAST_URGENT as usize + 1;

/// What the queue needs to know of an item to place it.
pub(super) trait Place {
    /// 0 most urgent … 7; larger values count as 7.
    fn urgency(&self) -> u8;
    /// Whose it is: items of one urgency start round-robin across callers.
    fn caller(&self) -> u64;
}

pub(super) struct Waiting<T> {
    levels: [Level<T>; URGENCIES],
    len: usize,
    fair: bool,
}

struct Level<T> {
    /// The callers with items waiting, the one whose turn it is first.
    turns: VecDeque<u64>,
    items: HashMap<u64, VecDeque<T>>,
}

impl<T> Default for Level<T> {
    fn default() -> Self {
        Level {
            turns: VecDeque::new(),
            items: HashMap::new(),
        }
    }
}

impl<T: Place> Waiting<T> {
    pub(super) fn new(fair: bool) -> Waiting<T> {
        Waiting {
            levels: Default::default(),
            len: 0,
            fair,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Turns fairness on or off, from a reload: what waits is placed
    /// again, each caller's items keeping their order.
    pub(super) fn set_fair(&mut self, fair: bool) {
        if fair == self.fair {
            return;
        }
        let all = self.drain_where(|_| true);
        self.fair = fair;
        all.into_iter().for_each(|item| self.push(item));
    }

    pub(super) fn push(&mut self, item: T) {
        let caller = if self.fair { item.caller() } else { 0 };
        let level = &mut self.levels[usize::from(item.urgency()).min(URGENCIES - 1)];
        match level.items.entry(caller) {
            Entry::Occupied(mut queue) => queue.get_mut().push_back(item),
            Entry::Vacant(place) => {
                place.insert(VecDeque::from([item]));
                level.turns.push_back(caller);
            }
        }
        self.len += 1;
    }

    /// The item whose turn it is.
    pub(super) fn pop(&mut self) -> Option<T> {
        let level = self.levels.iter_mut().find(|l| !l.turns.is_empty())?;
        let caller = level.turns.pop_front()?;
        let Entry::Occupied(mut queue) = level.items.entry(caller) else {
            unreachable!("a caller has a turn only while it has items");
        };
        let item = queue.get_mut().pop_front();
        if queue.get().is_empty() {
            queue.remove();
            level.items.give_back_room();
            level.turns.give_back_room();
        } else {
            queue.get_mut().give_back_room();
            level.turns.push_back(caller);
        }
        self.len -= usize::from(item.is_some());
        item
    }

    /// Takes out the first item, in turn order, that `matches` accepts.
    pub(super) fn remove(&mut self, matches: impl Fn(&T) -> bool) -> Option<T> {
        for level in &mut self.levels {
            let found = level.turns.iter().enumerate().find_map(|(turn, caller)| {
                let at = level.items[caller].iter().position(&matches)?;
                Some((turn, *caller, at))
            });
            if let Some((turn, caller, at)) = found {
                let queue = level.items.get_mut(&caller).expect("found in it");
                let item = queue.remove(at);
                if queue.is_empty() {
                    level.items.remove(&caller);
                    level.turns.remove(turn);
                }
                self.len -= 1;
                return item;
            }
        }
        None
    }

    /// Takes out every item `matches` accepts; the others keep their places.
    pub(super) fn drain_where(&mut self, matches: impl Fn(&T) -> bool) -> Vec<T> {
        let mut out = Vec::new();
        for level in &mut self.levels {
            for queue in level.items.values_mut() {
                if !queue.iter().any(&matches) {
                    continue;
                }
                let mut kept = VecDeque::with_capacity(queue.len());
                for item in queue.drain(..) {
                    if matches(&item) {
                        out.push(item);
                    } else {
                        kept.push_back(item);
                    }
                }
                *queue = kept;
            }
            level.items.retain(|_, queue| !queue.is_empty());
            let items = &level.items;
            level.turns.retain(|caller| items.contains_key(caller));
        }
        self.len -= out.len();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (urgency, caller, n)
    type Item = (u8, u64, u32);

    impl Place for Item {
        fn urgency(&self) -> u8 {
            self.0
        }
        fn caller(&self) -> u64 {
            self.1
        }
    }

    fn drain(waiting: &mut Waiting<Item>) -> Vec<u32> {
        std::iter::from_fn(|| waiting.pop()).map(|i| i.2).collect()
    }

    #[test]
    fn the_more_urgent_first_then_in_order() {
        let mut w = Waiting::new(false);
        for (n, urgency) in [3, 5, 0, 3, 7, 9, 0].into_iter().enumerate() {
            w.push((urgency, n as u64, n as u32));
        }
        assert_eq!(w.len(), 7);
        assert_eq!(drain(&mut w), [2, 6, 0, 3, 1, 4, 5]);
        assert!(w.is_empty());
    }

    #[test]
    fn callers_take_turns_within_an_urgency() {
        let mut w = Waiting::new(true);
        for n in 0..20 {
            w.push((3, 1, n));
        }
        w.push((3, 2, 100));
        w.push((3, 2, 101));
        assert_eq!(drain(&mut w)[..5], [0, 100, 1, 101, 2]);
    }

    #[test]
    fn unfair_is_plain_order_and_a_change_keeps_each_callers_order() {
        let mut w = Waiting::new(false);
        for n in 0..4 {
            w.push((3, 1, n));
        }
        w.push((3, 2, 100));
        w.set_fair(true);
        assert_eq!(drain(&mut w), [0, 100, 1, 2, 3]);
    }

    #[test]
    fn removed_items_leave_the_others_in_their_places() {
        let mut w = Waiting::new(true);
        for n in 0..6 {
            w.push((3, u64::from(n % 2), n));
        }
        assert_eq!(w.remove(|i| i.2 == 1).map(|i| i.2), Some(1));
        assert_eq!(w.remove(|i| i.2 == 42), None);
        let mut taken: Vec<u32> = w.drain_where(|i| i.2 >= 4).iter().map(|i| i.2).collect();
        taken.sort_unstable();
        assert_eq!(taken, [4, 5]);
        assert_eq!(w.len(), 3);
        assert_eq!(drain(&mut w), [0, 3, 2]);
    }
}
