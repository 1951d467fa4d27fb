//! A lane: at most `max_running` items in progress and at most `max_waiting`
//! waiting their turn (by urgency, then round-robin across callers, see
//! [`Waiting`]); while it is held (its backend asked to be left alone) or
//! paused, nothing new starts, and with a `rate` items start no faster.
//!
//! Waiting items are plain values in a queue, not parked tasks, so a deep
//! queue costs only what its items hold. Whoever is admitted to run keeps a
//! [`Slot`] and takes the next waiting item from it when done. What waits
//! only for time to pass (a hold's end, the rate's next start) is started
//! by whoever keeps the lane's clock: [`Lane::wake`] says when to look
//! again, and the clock's [`Notify`] rings when that moves earlier.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::Notify;

use super::pace::Pace;
use super::waiting::{Place, Waiting};
use crate::config::{Rate, UpstreamConfig};
use crate::sync::lock;

pub(super) struct Lane<T> {
    state: Mutex<State<T>>,
}

/// What a lane is configured with; a reload may change any of it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_running: usize,
    pub(crate) max_waiting: usize,
    pub(crate) rate: Option<Rate>,
    pub(crate) fair: bool,
}

impl Limits {
    pub(crate) fn of(upstream: &UpstreamConfig) -> Limits {
        Limits {
            max_running: upstream.max_concurrency,
            max_waiting: upstream.max_queue,
            rate: upstream.rate,
            fair: upstream.fair,
        }
    }
}

struct State<T> {
    running: usize,
    waiting: Waiting<T>,
    /// Changed by a reload; a lowered `max_running` takes effect as
    /// running items end.
    max_running: usize,
    max_waiting: usize,
    /// Nothing starts before this.
    held_until: Option<Instant>,
    /// Nothing starts until resumed.
    paused: bool,
    pace: Option<Pace>,
    /// When the clock is to look at the lane again: what waits may start then.
    wake: Option<Instant>,
    clock: Arc<Notify>,
}

impl<T> State<T> {
    /// Whether one item may start now as far as pauses, holds and the rate
    /// go, using up the rate's share if so. When only time stands in the
    /// way, the clock is asked to look again then.
    fn gate(&mut self, now: Instant) -> bool {
        if self.paused {
            return false;
        }
        let not_before = match self.held_until.filter(|&until| now < until) {
            Some(until) => until,
            None => match self.pace.as_mut().map(|pace| pace.take(now)) {
                None | Some(Ok(())) => return true,
                Some(Err(at)) => at,
            },
        };
        self.wake_at(not_before);
        false
    }

    fn wake_at(&mut self, at: Instant) {
        if self.wake.is_none_or(|wake| at < wake) {
            self.wake = Some(at);
            self.clock.notify_one();
        }
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
    /// Run this item now (it may be one that was waiting before it); take
    /// further work from the slot.
    Run(Slot<T>, T),
    Queued,
    /// Both running and waiting places are taken; the item comes back.
    Full(T),
}

/// One of `max_running` places, held by whoever runs items; given back when
/// [`Slot::take_next`] finds nothing to start, or when dropped.
pub(super) struct Slot<T> {
    lane: Arc<Lane<T>>,
    held: bool,
}

impl<T: Place> Lane<T> {
    pub(super) fn new(limits: Limits, clock: Arc<Notify>) -> Arc<Lane<T>> {
        Arc::new(Lane {
            state: Mutex::new(State {
                running: 0,
                waiting: Waiting::new(limits.fair),
                max_running: limits.max_running,
                max_waiting: limits.max_waiting,
                held_until: None,
                paused: false,
                pace: limits.rate.map(|rate| Pace::new(rate, Instant::now())),
                wake: None,
                clock,
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
        if state.running < state.max_running && state.gate(Instant::now()) {
            state.running += 1;
            // One that waits may come first: more urgent, another caller's
            // turn, or left by a runner that died without taking it.
            let item = if state.waiting.is_empty() {
                item
            } else {
                state.waiting.push(item);
                state.waiting.pop().expect("just pushed")
            };
            return Admission::Run(self.slot(), item);
        }
        if state.waiting.len() < state.max_waiting {
            state.waiting.push(item);
            return Admission::Queued;
        }
        Admission::Full(item)
    }

    /// Like [`Lane::admit`], but an item that finds no running place waits
    /// even past `max_waiting`: it was accepted before, and is never dropped.
    pub(crate) fn readmit(self: &Arc<Self>, item: T) -> Admission<T> {
        match self.admit(item) {
            Admission::Full(item) => {
                self.state().waiting.push(item);
                Admission::Queued
            }
            admitted => admitted,
        }
    }

    /// New limits, from a reload. Waiting items that now may start come
    /// back with their places, for the caller to run.
    pub(super) fn set_limits(self: &Arc<Self>, limits: Limits) -> Vec<(Slot<T>, T)> {
        let mut state = self.state();
        state.max_running = limits.max_running;
        state.max_waiting = limits.max_waiting;
        state.waiting.set_fair(limits.fair);
        match (&mut state.pace, limits.rate) {
            (Some(pace), Some(rate)) => pace.set(rate),
            (pace, rate) => *pace = rate.map(|rate| Pace::new(rate, Instant::now())),
        }
        self.start_waiting(state, Instant::now())
    }

    /// A new running limit, from adaptive concurrency: a lower one takes
    /// effect as running items end; for a higher one the clock is rung to
    /// start what waits.
    pub(super) fn set_running_limit(&self, max_running: usize) {
        let mut state = self.state();
        let raised = max_running > state.max_running;
        state.max_running = max_running;
        if raised && !state.waiting.is_empty() {
            state.wake_at(Instant::now());
        }
    }

    /// Nothing starts before `until`; false when an earlier hold already
    /// lasts that long.
    pub(super) fn hold(&self, until: Instant) -> bool {
        let mut state = self.state();
        if state.held_until.is_some_and(|t| t >= until) {
            return false;
        }
        state.held_until = Some(until);
        state.wake_at(until);
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
        self.start_waiting(state, Instant::now())
    }

    pub(super) fn paused(&self) -> bool {
        self.state().paused
    }

    /// When the clock is to call [`Lane::tick`] next, if anything waits
    /// for time to pass.
    pub(super) fn wake(&self) -> Option<Instant> {
        self.state().wake
    }

    /// The clock's call: once the time asked for has come, the waiting
    /// items that may start now, each with its place, for the caller to run.
    pub(super) fn tick(self: &Arc<Self>, now: Instant) -> Vec<(Slot<T>, T)> {
        let mut state = self.state();
        if state.wake.is_none_or(|wake| now < wake) {
            return Vec::new();
        }
        state.wake = None;
        self.start_waiting(state, now)
    }

    fn start_waiting(
        self: &Arc<Self>,
        mut state: MutexGuard<'_, State<T>>,
        now: Instant,
    ) -> Vec<(Slot<T>, T)> {
        let mut started = Vec::new();
        while state.running < state.max_running && !state.waiting.is_empty() && state.gate(now) {
            let item = state.waiting.pop().expect("not empty");
            state.running += 1;
            started.push((self.slot(), item));
        }
        started
    }

    fn slot(self: &Arc<Self>) -> Slot<T> {
        Slot {
            lane: Arc::clone(self),
            held: true,
        }
    }

    /// Takes a waiting item out of the queue, e.g. because it was canceled.
    pub(super) fn remove(&self, matches: impl Fn(&T) -> bool) -> Option<T> {
        self.state().waiting.remove(matches)
    }

    /// Takes every waiting item `matches` accepts out of the queue, the
    /// others keeping their places.
    pub(super) fn remove_all(&self, matches: impl Fn(&T) -> bool) -> Vec<T> {
        self.state().waiting.drain_where(matches)
    }
}

impl<T: Place> Slot<T> {
    /// The next item to start, or `None` after giving the place back (also
    /// when a reload lowered the limit below the places taken).
    pub(super) fn take_next(&mut self) -> Option<T> {
        let mut state = self.lane.state();
        let next = if state.running > state.max_running
            || state.waiting.is_empty()
            || !state.gate(Instant::now())
        {
            None
        } else {
            state.waiting.pop()
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
            lock(&self.lane.state).running -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    impl Place for i32 {
        fn urgency(&self) -> u8 {
            3
        }
        fn caller(&self) -> u64 {
            0
        }
    }

    fn limits(max_running: usize, max_waiting: usize) -> Limits {
        Limits {
            max_running,
            max_waiting,
            rate: None,
            fair: true,
        }
    }

    fn lane(max_running: usize, max_waiting: usize) -> Arc<Lane<i32>> {
        Lane::new(limits(max_running, max_waiting), Arc::default())
    }

    fn run<T>(a: Admission<T>) -> (Slot<T>, T) {
        match a {
            Admission::Run(slot, item) => (slot, item),
            _ => panic!("expected to run"),
        }
    }

    #[test]
    fn runs_up_to_the_limit_then_queues_then_refuses() {
        let lane = lane(1, 2);
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
        let lane = lane(1, 4);
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
        let lane = lane(2, 5);
        let (mut slot, _) = run(lane.admit(1));
        assert!(lane.hold(Instant::now() + Duration::from_secs(60)));
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
        assert!(lane.tick(Instant::now()).is_empty(), "still held");
        let wake = lane.wake().expect("the clock is to look again");
        assert!(lane.hold(Instant::now() + Duration::from_secs(120)));
        assert_eq!(lane.wake(), Some(wake), "the earlier look stays");
        lane.state().held_until = Some(Instant::now());
        let started = lane.tick(wake);
        assert_eq!(started.iter().map(|(_, i)| *i).collect::<Vec<_>>(), [2]);
        assert_eq!(lane.held_until(), None);
    }

    #[test]
    fn a_paused_lane_starts_nothing_until_resumed() {
        let lane = lane(1, 5);
        assert!(lane.set_paused(true).is_empty());
        assert!(matches!(lane.admit(1), Admission::Queued));
        assert!(lane.tick(Instant::now()).is_empty());
        let started = lane.set_paused(false);
        assert_eq!(started.iter().map(|(_, i)| *i).collect::<Vec<_>>(), [1]);
        assert!(!lane.paused());
    }

    #[test]
    fn removed_items_free_their_place() {
        let lane = lane(1, 1);
        let (_slot, _) = run(lane.admit(1));
        assert!(matches!(lane.admit(2), Admission::Queued));
        assert_eq!(lane.remove(|&i| i == 2), Some(2));
        assert!(matches!(lane.admit(3), Admission::Queued));
    }

    #[test]
    fn a_dropped_slot_gives_its_place_back_and_older_items_go_first() {
        let lane = lane(1, 5);
        let (slot, _) = run(lane.admit(1));
        assert!(matches!(lane.admit(2), Admission::Queued));
        drop(slot);
        let (_slot, item) = run(lane.admit(3));
        assert_eq!(item, 2, "the stranded older item runs first");
    }

    #[test]
    fn new_limits_start_waiting_items_or_shrink_as_items_end() {
        let lane = lane(1, 5);
        let (mut first, _) = run(lane.admit(1));
        for i in 2..=4 {
            assert!(matches!(lane.admit(i), Admission::Queued));
        }
        let started = lane.set_limits(limits(3, 5));
        let items: Vec<i32> = started.iter().map(|(_, i)| *i).collect();
        assert_eq!(items, [2, 3], "oldest first, up to the new limit");
        assert_eq!(
            lane.load(),
            Load {
                running: 3,
                waiting: 1
            }
        );
        assert!(lane.set_limits(limits(1, 5)).is_empty());
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

    #[test]
    fn with_a_rate_items_start_no_faster_and_the_clock_starts_the_rest() {
        let rate = Rate {
            count: 10,
            per: Duration::from_secs(1),
            burst: 1,
        };
        let lane: Arc<Lane<i32>> = Lane::new(
            Limits {
                rate: Some(rate),
                ..limits(4, 10)
            },
            Arc::default(),
        );
        let (mut slot, _) = run(lane.admit(1));
        assert!(
            matches!(lane.admit(2), Admission::Queued),
            "a place is free, but too soon"
        );
        assert_eq!(slot.take_next(), None, "too soon for the runner too");
        let wake = lane.wake().expect("the clock is to look again");
        assert!(lane.tick(wake - Duration::from_millis(1)).is_empty());
        let started = lane.tick(wake);
        assert_eq!(started.iter().map(|(_, i)| *i).collect::<Vec<_>>(), [2]);
        assert_eq!(lane.wake(), None);
    }
}
