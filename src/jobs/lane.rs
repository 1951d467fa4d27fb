//! A lane: at most `max_running` items in progress and at most `max_waiting`
//! waiting their turn, first in, first out; while it is held (its backend
//! asked to be left alone), nothing new starts.
//!
//! Waiting items are plain values in a queue, not parked tasks, so a deep
//! queue costs only what its items hold. Whoever is admitted to run keeps a
//! [`Slot`] and takes the next waiting item from it when done.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crate::room::GiveBack;
use crate::sync::lock;

pub(super) struct Lane<T> {
    state: Mutex<State<T>>,
}

struct State<T> {
    running: usize,
    waiting: VecDeque<T>,
    /// Changed by a reload; a lowered `max_running` takes effect as
    /// running items end.
    max_running: usize,
    max_waiting: usize,
    /// Nothing starts before this.
    held_until: Option<Instant>,
    /// Nothing starts until resumed.
    paused: bool,
}

impl<T> State<T> {
    fn held(&self) -> bool {
        self.paused || self.held_until.is_some_and(|until| Instant::now() < until)
    }
}

/// A lane's occupancy at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Load {
    pub(crate) running: usize,
    pub(crate) waiting: usize,
}

/// What [`Lane::admit`] did with an item.
pub(super) enum Admission<T> {
    /// Run this item now (it may be an older one that was waiting); take
    /// further work from the slot.
    Run(Slot<T>, T),
    Queued,
    /// Both running and waiting places are taken; the item comes back.
    Full(T),
}

/// One of `max_running` places, held by whoever runs items; given back when
/// [`Slot::take_next`] finds nothing waiting, or when dropped.
pub(super) struct Slot<T> {
    lane: Arc<Lane<T>>,
    held: bool,
}

impl<T> Lane<T> {
    pub(super) fn new(max_running: usize, max_waiting: usize) -> Arc<Lane<T>> {
        Arc::new(Lane {
            state: Mutex::new(State {
                running: 0,
                waiting: VecDeque::new(),
                max_running,
                max_waiting,
                held_until: None,
                paused: false,
            }),
        })
    }

    fn state(&self) -> MutexGuard<'_, State<T>> {
        lock(&self.state)
    }

    /// How many items run and how many wait, now.
    pub(super) fn load(&self) -> Load {
        let state = self.state();
        Load {
            running: state.running,
            waiting: state.waiting.len(),
        }
    }

    pub(super) fn admit(self: &Arc<Self>, item: T) -> Admission<T> {
        let mut state = self.state();
        if state.running < state.max_running && !state.held() {
            state.running += 1;
            // Older items go first; they can only be waiting here if a
            // runner died without taking them.
            let item = match state.waiting.pop_front() {
                Some(older) => {
                    state.waiting.push_back(item);
                    older
                }
                None => item,
            };
            let slot = Slot {
                lane: Arc::clone(self),
                held: true,
            };
            return Admission::Run(slot, item);
        }
        if state.waiting.len() < state.max_waiting {
            state.waiting.push_back(item);
            return Admission::Queued;
        }
        Admission::Full(item)
    }

    /// Like [`Lane::admit`], but an item that finds no running place waits
    /// even past `max_waiting`: it was accepted before, and is never dropped.
    pub(crate) fn readmit(self: &Arc<Self>, item: T) -> Admission<T> {
        match self.admit(item) {
            Admission::Full(item) => {
                self.state().waiting.push_back(item);
                Admission::Queued
            }
            admitted => admitted,
        }
    }

    /// New limits, from a reload. Waiting items that now have a running
    /// place come back with it, for the caller to run.
    pub(super) fn set_limits(
        self: &Arc<Self>,
        max_running: usize,
        max_waiting: usize,
    ) -> Vec<(Slot<T>, T)> {
        let mut state = self.state();
        state.max_running = max_running;
        state.max_waiting = max_waiting;
        self.start_waiting(state)
    }

    /// Nothing starts before `until`; false when an earlier hold already
    /// lasts that long, so whoever set it will start what waits.
    pub(super) fn hold(&self, until: Instant) -> bool {
        let mut state = self.state();
        if state.held_until.is_some_and(|t| t >= until) {
            return false;
        }
        state.held_until = Some(until);
        true
    }

    /// Until when nothing starts, if that is still ahead.
    pub(super) fn held_until(&self) -> Option<Instant> {
        let state = self.state();
        state.held_until.filter(|&until| Instant::now() < until)
    }

    /// Pauses the lane until resumed; a resume gives back the waiting
    /// items that may start now, each with its place, for the caller to run.
    pub(super) fn set_paused(self: &Arc<Self>, paused: bool) -> Vec<(Slot<T>, T)> {
        let mut state = self.state();
        state.paused = paused;
        if paused {
            return Vec::new();
        }
        self.start_waiting(state)
    }

    pub(super) fn paused(&self) -> bool {
        self.state().paused
    }

    /// The waiting items that may start now that a hold has passed, each
    /// with its place, for the caller to run.
    pub(super) fn release(self: &Arc<Self>) -> Vec<(Slot<T>, T)> {
        self.start_waiting(self.state())
    }

    fn start_waiting(self: &Arc<Self>, mut state: MutexGuard<'_, State<T>>) -> Vec<(Slot<T>, T)> {
        let mut started = Vec::new();
        while state.running < state.max_running && !state.held() {
            let Some(item) = state.waiting.pop_front() else {
                break;
            };
            state.running += 1;
            let slot = Slot {
                lane: Arc::clone(self),
                held: true,
            };
            started.push((slot, item));
        }
        started
    }

    /// Takes a waiting item out of the queue, e.g. because it was canceled.
    pub(super) fn remove(&self, matches: impl Fn(&T) -> bool) -> Option<T> {
        let mut state = self.state();
        let at = state.waiting.iter().position(matches)?;
        state.waiting.remove(at)
    }

    /// Takes every waiting item `matches` accepts out of the queue, the
    /// others keeping their order.
    pub(super) fn remove_all(&self, matches: impl Fn(&T) -> bool) -> Vec<T> {
        let mut state = self.state();
        if !state.waiting.iter().any(&matches) {
            return Vec::new();
        }
        let waiting = std::mem::take(&mut state.waiting);
        let mut out = Vec::new();
        state.waiting = VecDeque::with_capacity(waiting.len());
        for item in waiting {
            if matches(&item) {
                out.push(item);
            } else {
                state.waiting.push_back(item);
            }
        }
        out
    }
}

impl<T> Slot<T> {
    /// The next waiting item, or `None` after giving the place back (also
    /// when a reload lowered the limit below the places taken).
    pub(super) fn take_next(&mut self) -> Option<T> {
        let mut state = self.lane.state();
        let next = if state.running > state.max_running || state.held() {
            None
        } else {
            let next = state.waiting.pop_front();
            state.waiting.give_back_room();
            next
        };
        if next.is_none() && self.held {
            state.running -= 1;
            self.held = false;
        }
        next
    }
}

impl<T> Drop for Slot<T> {
    fn drop(&mut self) {
        if self.held {
            self.lane.state().running -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run<T>(a: Admission<T>) -> (Slot<T>, T) {
        match a {
            Admission::Run(slot, item) => (slot, item),
            _ => panic!("expected to run"),
        }
    }

    #[test]
    fn runs_up_to_the_limit_then_queues_then_refuses() {
        let lane = Lane::new(1, 2);
        let (mut slot, first) = run(lane.admit(1));
        assert_eq!(first, 1);
        assert!(matches!(lane.admit(2), Admission::Queued));
        assert!(matches!(lane.admit(3), Admission::Queued));
        assert!(matches!(lane.admit(4), Admission::Full(4)));
        assert_eq!(slot.take_next(), Some(2));
        assert_eq!(slot.take_next(), Some(3));
        assert_eq!(slot.take_next(), None);
        let (_slot, again) = run(lane.admit(5));
        assert_eq!(again, 5);
    }

    #[test]
    fn items_removed_together_free_their_places_and_the_rest_keep_their_order() {
        let lane = Lane::new(1, 4);
        let (_slot, _) = run(lane.admit(0));
        for i in 1..=4 {
            assert!(matches!(lane.admit(i), Admission::Queued));
        }
        assert_eq!(lane.remove_all(|&i| i % 2 == 0), vec![2, 4]);
        assert!(lane.remove_all(|&i| i > 10).is_empty());
        assert_eq!(lane.load().waiting, 2);
        assert!(matches!(lane.admit(5), Admission::Queued));
        assert_eq!(lane.remove(|_| true), Some(1), "the oldest first");
    }

    #[test]
    fn a_held_lane_starts_nothing_until_released() {
        let lane = Lane::new(2, 5);
        let (mut slot, _) = run(lane.admit(1));
        assert!(lane.hold(Instant::now() + std::time::Duration::from_secs(60)));
        assert!(!lane.hold(Instant::now()), "an earlier hold lasts longer");
        assert!(lane.held_until().is_some());
        assert!(
            matches!(lane.admit(2), Admission::Queued),
            "a place is free, but held"
        );
        assert_eq!(slot.take_next(), None, "the runner gives its place back");
        assert_eq!(
            lane.load(),
            Load {
                running: 0,
                waiting: 1
            }
        );
        assert!(lane.release().is_empty(), "still held");
        assert!(lane.hold(Instant::now() + std::time::Duration::from_secs(120)));
        lane.state().held_until = Some(Instant::now());
        let started = lane.release();
        assert_eq!(started.iter().map(|(_, i)| *i).collect::<Vec<_>>(), [2]);
        assert_eq!(lane.held_until(), None);
    }

    #[test]
    fn a_paused_lane_starts_nothing_until_resumed() {
        let lane = Lane::new(1, 5);
        assert!(lane.set_paused(true).is_empty());
        assert!(matches!(lane.admit(1), Admission::Queued));
        assert!(lane.release().is_empty());
        let started = lane.set_paused(false);
        assert_eq!(started.iter().map(|(_, i)| *i).collect::<Vec<_>>(), [1]);
        assert!(!lane.paused());
    }

    #[test]
    fn removed_items_free_their_place() {
        let lane = Lane::new(1, 1);
        let (_slot, _) = run(lane.admit(1));
        assert!(matches!(lane.admit(2), Admission::Queued));
        assert_eq!(lane.remove(|&i| i == 2), Some(2));
        assert!(matches!(lane.admit(3), Admission::Queued));
    }

    #[test]
    fn a_dropped_slot_gives_its_place_back_and_older_items_go_first() {
        let lane = Lane::new(1, 5);
        let (slot, _) = run(lane.admit(1));
        assert!(matches!(lane.admit(2), Admission::Queued));
        drop(slot);
        let (_slot, item) = run(lane.admit(3));
        assert_eq!(item, 2, "the stranded older item runs first");
    }

    #[test]
    fn new_limits_start_waiting_items_or_shrink_as_items_end() {
        let lane = Lane::new(1, 5);
        let (mut first, _) = run(lane.admit(1));
        for i in 2..=4 {
            assert!(matches!(lane.admit(i), Admission::Queued));
        }
        let started = lane.set_limits(3, 5);
        let items: Vec<i32> = started.iter().map(|(_, i)| *i).collect();
        assert_eq!(items, [2, 3], "oldest first, up to the new limit");
        assert_eq!(
            lane.load(),
            Load {
                running: 3,
                waiting: 1
            }
        );
        assert!(lane.set_limits(1, 5).is_empty());
        // Over the lowered limit: a runner gives its place back instead of
        // taking the next item.
        assert_eq!(first.take_next(), None);
        assert_eq!(
            lane.load(),
            Load {
                running: 2,
                waiting: 1
            }
        );
        drop(started);
        assert_eq!(
            lane.load(),
            Load {
                running: 0,
                waiting: 1
            }
        );
        assert!(matches!(lane.admit(5), Admission::Run(_, 4)));
    }
}
