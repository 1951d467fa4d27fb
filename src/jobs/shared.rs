//! What a replica does when its store is shared: take jobs from the shared
//! queue as places free up, take over jobs whose replica is gone, and act
//! on the changes other replicas announce.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{mpsc, Notify, Semaphore};
use tokio::time::Instant;

use super::store::{Event, SharedWork, Taken};
use super::{runner, Jobs, QueuedJob};
use crate::defaults;
use crate::upstream::Upstream;

/// Starts this replica's part in the shared queue; returns at once. A
/// no-op for a store that is not shared.
pub(super) fn start(jobs: &Arc<Jobs>) {
    let Some(shared) = jobs.store.shared() else {
        return;
    };
    let mut wakers = HashMap::new();
    for route in jobs.routes.values() {
        let upstream = &route.upstream;
        wakers
            .entry(upstream.config.name.clone())
            .or_insert_with(|| {
                let wake = Arc::new(Notify::new());
                tokio::spawn(dispatch(
                    Arc::clone(jobs),
                    Arc::clone(upstream),
                    Arc::clone(&wake),
                ));
                wake
            });
    }
    if let Some(events) = shared.events() {
        tokio::spawn(follow(Arc::clone(jobs), events, wakers));
    }
    tokio::spawn(sweep(Arc::clone(jobs)));
}

fn shared(jobs: &Jobs) -> &dyn SharedWork {
    jobs.store
        .shared()
        .expect("started only for a shared store")
}

/// Takes jobs for one upstream while this replica has places for them and
/// the upstream has fewer than `max_concurrency` running across replicas;
/// sleeps until an event says there may be more, or until it is time to
/// look for jobs whose replica is gone.
async fn dispatch(jobs: Arc<Jobs>, upstream: Arc<Upstream>, wake: Arc<Notify>) {
    let name = upstream.config.name.as_str();
    let max = upstream.config.max_concurrency;
    let places = Arc::new(Semaphore::new(max));
    let lease = shared(&jobs).lease();
    let mut look_for_lost = Instant::now();
    loop {
        let place = tokio::select! {
            place = Arc::clone(&places).acquire_owned() => place.expect("never closed"),
            () = jobs.closing.cancelled() => return,
        };
        let found = if Instant::now() >= look_for_lost {
            match shared(&jobs).take_over(name, 1).await {
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
                shared(&jobs).take(name, max, count).await
            }
            other => other,
        };
        let taken = match found {
            Ok(taken) => taken,
            Err(e) => {
                tracing::warn!(upstream = name, error = %e, "cannot take jobs from the store");
                Vec::new()
            }
        };
        if taken.is_empty() {
            drop(place);
            tokio::select! {
                () = wake.notified() => {}
                () = tokio::time::sleep_until(look_for_lost) => {}
                () = jobs.closing.cancelled() => return,
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
            let jobs2 = Arc::clone(&jobs);
            jobs.tracker.spawn(async move {
                run(&jobs2, job).await;
                drop(place);
            });
        }
    }
}

async fn run(jobs: &Jobs, taken: Taken) {
    let Some(route) = jobs.route(&taken.route).cloned() else {
        // Replicas disagree on their routes. Unrenewed, its lease runs out
        // and another replica takes it over (failing it as lost if it may
        // not be sent twice: no replica can tell it was never sent).
        tracing::error!(job = %taken.id, route = taken.route, "job for a route this replica does not have");
        return;
    };
    let job = QueuedJob {
        id: taken.id,
        route,
        request: taken.request,
    };
    runner::run_started(jobs, job, taken.attempt).await;
}

/// Acts on what replicas announce: wakes waiters on a job's change, stops a
/// job running here when it is canceled elsewhere, and wakes dispatchers
/// when there may be work.
async fn follow(
    jobs: Arc<Jobs>,
    mut events: mpsc::UnboundedReceiver<Event>,
    wakers: HashMap<String, Arc<Notify>>,
) {
    while let Some(event) = events.recv().await {
        match event {
            Event::Status(id, status) => {
                jobs.announce(id, status);
                if status == super::JobStatus::Canceled {
                    jobs.stop_here(id);
                }
            }
            Event::Work(upstream) => {
                if let Some(wake) = wakers.get(&upstream) {
                    wake.notify_one();
                }
            }
            Event::Resumed => {
                wakers.values().for_each(|w| w.notify_one());
                jobs.recheck_watched().await;
            }
        }
    }
}

/// Gives expired charges back to the budget and forgets idle watches.
async fn sweep(jobs: Arc<Jobs>) {
    let mut tick = tokio::time::interval(defaults::STORE_SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = jobs.closing.cancelled() => return,
        }
        if let Err(e) = shared(&jobs).sweep().await {
            tracing::debug!(error = %e, "cannot sweep the store");
        }
        jobs.prune_watches();
    }
}
