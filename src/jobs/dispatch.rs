//! What a replica does when its store is shared: take jobs from the shared
//! queue as places free up, take over jobs whose replica is gone, and act
//! on the changes other replicas announce.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, Notify, Semaphore};
use tokio::time::Instant;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::core::{Core, Held};
use super::lane::Limits;
use super::model::{Job, JobStatus};
use super::runner;
use super::store::{Event, Lookup, Taken, WorkQueue};
use crate::defaults;
use crate::delivery::Channel;
use crate::route::Route;
use crate::sync::lock;

/// How many abandoned deliveries of a channel one sweep takes over at most.
const DELIVERIES_PER_SWEEP: usize = 100;

/// How many of an upstream's oldest waiting jobs one sweep looks at for one
/// past its `start_timeout`.
const EXPIRED_PER_SWEEP: usize = 1000;

/// What the loops of a replica need: the jobs, the shared queue, the
/// tracker their runs are drained through, and the token that says the
/// drain has begun.
#[derive(Clone)]
struct Dispatch {
    core: Arc<Core>,
    queue: Arc<dyn WorkQueue>,
    holds: Arc<Holds>,
    tracker: TaskTracker,
    closing: CancellationToken,
}

/// The loops taking each upstream's jobs, by upstream name, and what wakes
/// each: one per upstream any route has named since the start.
type Wakers = Arc<Mutex<HashMap<String, Arc<Notify>>>>;

/// This replica's takers, which a reload extends to new upstreams.
pub(super) struct Takers {
    dispatch: Dispatch,
    wakers: Wakers,
}

/// Which upstreams start nothing now, and why, as this replica last saw
/// it: what its metrics and dashboard show.
#[derive(Default)]
pub(super) struct Holds(Mutex<HashMap<String, Held>>);

impl Holds {
    fn note(&self, upstream: &str, until: Option<SystemTime>) {
        self.change(upstream, |h| h.until = until);
    }

    fn note_paused(&self, upstream: &str, paused: bool) {
        self.change(upstream, |h| h.paused = paused);
    }

    fn change(&self, upstream: &str, change: impl FnOnce(&mut Held)) {
        let mut holds = lock(&self.0);
        let held = holds.entry(upstream.to_owned()).or_insert_with(|| Held {
            upstream: upstream.to_owned(),
            paused: false,
            until: None,
        });
        change(held);
        if !held.paused && held.until.is_none() {
            holds.remove(upstream);
        }
    }

    /// Those that hold now.
    pub(super) fn current(&self) -> Vec<Held> {
        let now = SystemTime::now();
        lock(&self.0)
            .values()
            .map(|h| Held {
                until: h.until.filter(|&t| t > now),
                ..h.clone()
            })
            .filter(|h| h.paused || h.until.is_some())
            .collect()
    }
}

/// Starts this replica's part in the shared queue; returns at once.
pub(super) fn spawn(
    core: &Arc<Core>,
    queue: Arc<dyn WorkQueue>,
    closing: &CancellationToken,
) -> Takers {
    let events = queue.events();
    let takers = Takers {
        dispatch: Dispatch {
            core: Arc::clone(core),
            queue,
            holds: Arc::default(),
            tracker: core.tracker().clone(),
            closing: closing.clone(),
        },
        wakers: Wakers::default(),
    };
    takers.cover(&core.routes());
    if let Some(events) = events {
        tokio::spawn(follow(Arc::clone(core), events, Arc::clone(&takers.wakers)));
    }
    tokio::spawn(sweep(takers.dispatch.clone()));
    takers
}

impl Takers {
    /// The upstreams that start nothing now, and why, as this replica last
    /// saw it.
    pub(super) fn holds(&self) -> Vec<Held> {
        self.dispatch.holds.current()
    }

    /// An upstream paused or resumed through this replica.
    pub(super) fn note_paused(&self, upstream: &str, paused: bool) {
        self.dispatch.holds.note_paused(upstream, paused);
    }

    /// Starts taking jobs for the upstreams of `routes` not yet taken for,
    /// and has the others look at their limits again.
    pub(super) fn cover(&self, routes: &[Arc<Route>]) {
        let mut wakers = lock(&self.wakers);
        wakers.values().for_each(|w| w.notify_one());
        for route in routes {
            let name = &route.upstream.config.name;
            wakers.entry(name.clone()).or_insert_with(|| {
                let wake = Arc::new(Notify::new());
                tokio::spawn(take_work(
                    self.dispatch.clone(),
                    name.clone(),
                    Arc::clone(&wake),
                ));
                wake
            });
        }
    }
}

/// Takes jobs for one upstream while this replica has places for them and
/// the upstream has fewer than `max_concurrency` running across replicas
/// and its `rate` allows; sleeps until an event says there may be more, or until it is time to
/// look for jobs whose replica is gone.
///
/// The limits are read again on every round, so a reload changes them:
/// places are added at once, or taken away as running jobs end.
async fn take_work(dispatch: Dispatch, name: String, wake: Arc<Notify>) {
    let Dispatch {
        core,
        queue,
        holds,
        tracker,
        closing,
    } = dispatch;
    let name = name.as_str();
    let mut limits = core.limits(name).unwrap_or(Limits {
        max_running: 1,
        max_waiting: 0,
        rate: None,
        fair: false,
    });
    let places = Arc::new(Semaphore::new(limits.max_running));
    let lease = queue.lease();
    let mut look_for_lost = Instant::now();
    loop {
        if let Some(now) = core.limits(name) {
            if now.max_running != limits.max_running {
                resize(&places, limits.max_running, now.max_running);
            }
            limits = now;
        }
        let place = tokio::select! {
            place = Arc::clone(&places).acquire_owned() => place.expect("never closed"),
            // A reload may have added places: look again.
            () = wake.notified() => continue,
            () = closing.cancelled() => return,
        };
        let found = if Instant::now() >= look_for_lost {
            match queue.take_over(name, 1).await {
                Ok(lost) if !lost.is_empty() => Ok(lost),
                other => {
                    // Nothing lost (or no answer): look again half a lease on.
                    look_for_lost = Instant::now() + lease / 2;
                    other
                }
            }
        } else {
            Ok(Vec::new())
        };
        // As many as this replica has places for, in one round trip: only
        // this loop takes places, so those free now stay free.
        let found = match found {
            Ok(lost) if lost.is_empty() => {
                let count = 1 + places.available_permits();
                queue.take(name, limits, count).await.map(|took| {
                    // Held, or paced: nothing to take before then, and no
                    // wake comes when that time comes.
                    if let Some(until) = took.held_until.or(took.paced_until) {
                        let left = until.duration_since(SystemTime::now()).unwrap_or_default();
                        look_for_lost = look_for_lost.min(Instant::now() + left);
                    }
                    holds.note(name, took.held_until);
                    holds.note_paused(name, took.paused);
                    took.jobs
                })
            }
            other => other,
        };
        let taken = match found {
            Ok(taken) => taken,
            Err(e) => {
                tracing::warn!(upstream = name, error = %e, "cannot take jobs from the store");
                // A failed take left this replica off the idle list that the
                // next job's wake goes to: look again soon instead.
                look_for_lost = look_for_lost.min(Instant::now() + defaults::RECORD_RETRY_INTERVAL);
                Vec::new()
            }
        };
        if taken.is_empty() {
            drop(place);
            tokio::select! {
                () = wake.notified() => {}
                () = tokio::time::sleep_until(look_for_lost) => {}
                () = closing.cancelled() => return,
            }
            continue;
        }
        let mut place = Some(place);
        for job in taken {
            let place = match place.take() {
                Some(p) => p,
                None => Arc::clone(&places)
                    .try_acquire_owned()
                    .expect("taken no more than the places free"),
            };
            let core = Arc::clone(&core);
            let (queue, holds) = (Arc::clone(&queue), Arc::clone(&holds));
            tracker.spawn(async move {
                run(&core, &*queue, &holds, job).await;
                drop(place);
            });
        }
    }
}

async fn run(core: &Core, queue: &dyn WorkQueue, holds: &Holds, taken: Taken) {
    let Some(route) = core.route(&taken.route) else {
        // Replicas disagree on their routes. Unrenewed, its lease runs out
        // and another replica takes it over (failing it as lost if it may
        // not be sent twice: no replica can tell it was never sent).
        tracing::error!(job = %taken.id, route = taken.route, "job for a route this replica does not have");
        return;
    };
    let (id, attempt) = (taken.id, taken.attempt);
    let this = runner::Try {
        id,
        attempt,
        queued_since: taken.queued_at,
    };
    if let Some((outcome, span)) = runner::attempt(core, &route, taken.request, this).await {
        if let Some(pause) = super::retry::hold(&route.upstream.config, &outcome) {
            let upstream = &route.upstream.config.name;
            let until = SystemTime::now() + pause;
            tracing::warn!(
                upstream,
                pause = %humantime::format_duration(pause),
                "the backend asked to be left alone; every replica holds its jobs"
            );
            holds.note(upstream, Some(until));
            if let Err(e) = queue.hold(upstream, until).await {
                tracing::warn!(upstream, error = %e, "cannot hold the upstream's jobs in the store");
            }
        }
        core.finish(id, attempt, outcome, &span).await;
    }
}

/// Acts on what replicas announce: wakes waiters on a job's change, stops a
/// job running here when it is canceled elsewhere, and wakes dispatchers
/// when there may be work.
/// Gives `places` `now` places where it had `before`: more at once; fewer
/// as the places in use come back.
fn resize(places: &Arc<Semaphore>, before: usize, now: usize) {
    if now > before {
        places.add_permits(now - before);
        return;
    }
    let surplus = u32::try_from(before - now).unwrap_or(u32::MAX);
    let places = Arc::clone(places);
    tokio::spawn(async move {
        if let Ok(taken) = places.acquire_many_owned(surplus).await {
            taken.forget();
        }
    });
}

async fn follow(core: Arc<Core>, mut events: mpsc::UnboundedReceiver<Event>, wakers: Wakers) {
    while let Some(event) = events.recv().await {
        match event {
            Event::Status(id, status) => {
                core.watches().announce(id, status);
                if status == JobStatus::Canceled {
                    core.running().stop(id);
                }
            }
            Event::Work(upstream) => {
                if let Some(wake) = lock(&wakers).get(&upstream) {
                    wake.notify_one();
                }
            }
            Event::Resumed => {
                lock(&wakers).values().for_each(|w| w.notify_one());
                recheck_watched(&core).await;
            }
        }
    }
}

/// Gives expired charges back to the budget, forgets idle watches, and
/// carries on the webhook deliveries of replicas gone.
async fn sweep(dispatch: Dispatch) {
    let Dispatch {
        core,
        queue,
        closing,
        ..
    } = dispatch;
    let mut tick = tokio::time::interval(defaults::STORE_SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = closing.cancelled() => return,
        }
        if let Err(e) = queue.sweep().await {
            tracing::debug!(error = %e, "cannot sweep the store");
        }
        core.watches().prune();
        expire_waiting(&core, &*queue).await;
        take_deliveries(&core, &*queue).await;
    }
}

/// Fails the waiting jobs of upstreams whose routes have a `start_timeout`
/// once it has passed; every replica looks, and the script's check makes
/// each end once.
async fn expire_waiting(core: &Core, queue: &dyn WorkQueue) {
    let mut upstreams: Vec<String> = core
        .routes()
        .iter()
        .filter(|r| r.config.start_timeout.is_some())
        .map(|r| r.upstream.config.name.clone())
        .collect();
    upstreams.sort_unstable();
    upstreams.dedup();
    for upstream in upstreams {
        if let Err(e) = queue.expire(&upstream, EXPIRED_PER_SWEEP).await {
            tracing::debug!(upstream, error = %e, "cannot look for expired jobs");
        }
    }
}

/// Carries on the deliveries whose sender has let go of them for a lease
/// past the attempt it was making, which may take an attempt's whole
/// timeout.
async fn take_deliveries(core: &Core, queue: &dyn WorkQueue) {
    if let Some(webhooks) = core.webhooks() {
        for job in let_go(queue, Channel::Webhook, webhooks.attempt_timeout()).await {
            if let Some(hook) = &job.webhook {
                core.send_webhook(&job, hook);
            }
        }
    }
    #[cfg(feature = "kafka")]
    if let Some(kafka) = core.kafka() {
        for job in let_go(queue, Channel::Kafka, kafka.attempt_timeout()).await {
            if let Some(publication) = &job.kafka {
                core.produce(&job, publication);
            }
        }
    }
}

/// The jobs whose delivery on `channel` this replica takes over.
async fn let_go(queue: &dyn WorkQueue, channel: Channel, attempt: Duration) -> Vec<Job> {
    let idle = queue.lease() + attempt;
    match queue
        .take_deliveries(channel, idle, DELIVERIES_PER_SWEEP)
        .await
    {
        Ok(jobs) => {
            for job in &jobs {
                tracing::info!(job = %job.id, channel = channel.as_str(), request_id = job.origin.request_id(), trace_id = job.origin.trace_id(), "carrying on a delivery its replica let go of");
            }
            jobs
        }
        Err(e) => {
            tracing::debug!(channel = channel.as_str(), error = %e, "cannot look for deliveries let go of");
            Vec::new()
        }
    }
}

/// Looks again at every job someone here waits on, after changes to them
/// may have gone unannounced.
async fn recheck_watched(core: &Core) {
    for id in core.watches().ids() {
        match core.store().get(id).await {
            Ok(Lookup::Found(job)) => core.watches().announce(id, job.status),
            Ok(Lookup::Gone(_) | Lookup::Missing) => core.watches().close(id),
            Err(e) => tracing::debug!(job = %id, error = %e, "cannot recheck a watched job"),
        }
    }
}
