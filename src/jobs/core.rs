//! What every part of the jobs machinery works with: the store, the routes
//! and their lanes, who watches which job, which jobs run here, and the one
//! place where a job's end is recorded and made known.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::adaptive::Limiters;
use super::document::{Document, ProgressDoc};
use super::id::JobId;
use super::lane::{Lane, Limits, Load, Slot};
use super::model::{BackendRequest, Failure, Job, JobStatus, Outcome};
use super::recent::Recent;
use super::running::Running;
use super::store::{Cancel, JobStore, Lookup, StoreError};
use super::watch::Watches;
use crate::config::UpstreamConfig;
use crate::retry_after::estimated_percent;
use crate::route::Route;
use crate::sync::lock;
use crate::telemetry;
use crate::webhook::Webhooks;

mod outbox;

/// An upstream that starts none of its jobs now, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Held {
    pub(crate) upstream: String,
    /// Paused by hand, until resumed.
    pub(crate) paused: bool,
    /// Held because its backend asked to be left alone, until then.
    pub(crate) until: Option<SystemTime>,
}

/// A job in its upstream's lane, waiting or about to run.
pub(super) struct QueuedJob {
    pub(super) id: JobId,
    pub(super) route: Arc<Route>,
    pub(super) request: BackendRequest,
    /// Sent by then, or failed (`expired`): its route's `start_timeout`
    /// after it was accepted, for a job never sent yet.
    pub(super) start_by: Option<SystemTime>,
    /// Since when it waits: its acceptance, for its trace's queue span.
    pub(super) queued_at: SystemTime,
    /// Its place in its caller's count of waiting jobs, on a route with
    /// `max_queued_per_caller`; given back when it starts or leaves.
    pub(super) quota: Option<super::quota::Ticket>,
    /// RFC 9218's urgency: 0 starts first, 7 last.
    pub(super) urgency: u8,
    /// Whose it is, for fair turns: from its owner's digest; 0 for jobs
    /// without credentials.
    pub(super) caller: u64,
}

impl super::waiting::Place for QueuedJob {
    fn urgency(&self) -> u8 {
        self.urgency
    }

    fn caller(&self) -> u64 {
        self.caller
    }
}

impl QueuedJob {
    /// Whether it waited past its `start_timeout`.
    pub(super) fn expired(&self, now: SystemTime) -> bool {
        self.start_by.is_some_and(|by| by <= now)
    }
}

pub(super) struct Core {
    store: Arc<dyn JobStore>,
    /// The routes, lanes and webhook sender in force; replaced whole by a
    /// reload, while jobs already under way keep the route they began with.
    live: ArcSwap<Live>,
    /// Each caller's waiting jobs, per route, for `max_queued_per_caller`.
    quotas: Arc<super::quota::Quotas>,
    /// The upstreams paused by hand, for the lanes a reload adds.
    paused: Mutex<HashSet<String>>,
    /// Rung by a lane when what waits in it may start sooner than the
    /// clock was to look.
    clock: Arc<Notify>,
    /// The running limits of upstreams with `adaptive = true`.
    limiters: Limiters,
    watches: Watches,
    running: Running,
    /// The last jobs seen here, for the dashboard.
    recent: Recent,
    /// `public_base_url` + `jobs_path`: every job URL starts with it.
    url_prefix: String,
    /// Signs a webhook's link to its result.
    links: Arc<crate::jobs::links::Capabilities>,
    /// Fired when the drain deadline passes: every job left fails.
    abort: CancellationToken,
    /// Running jobs the drain deadline failed (`interrupted`), and those it
    /// put back to `queued` because they may be sent again.
    interrupted: AtomicUsize,
    put_back: AtomicUsize,
    tracker: TaskTracker,
    /// Produces the documents of jobs whose route has a `kafka_topic`.
    #[cfg(feature = "kafka")]
    kafka: Option<Arc<crate::kafka::Kafka>>,
}

/// What a reload replaces.
#[derive(Default)]
struct Live {
    routes: HashMap<Arc<str>, Arc<Route>>,
    /// Each upstream's jobs, by its name, when they run in this process:
    /// `max_concurrency` sent at once, `max_queue` waiting. Made for every
    /// upstream a route names and never removed (jobs may still wait in a
    /// lane whose upstream a reload took away), so every route has one;
    /// unused with a shared store, whose queue is the store's.
    lanes: HashMap<String, Arc<Lane<QueuedJob>>>,
    /// `None` when no route sends webhooks.
    webhooks: Option<Arc<Webhooks>>,
}

impl Live {
    /// `routes` over the lanes of `before` (new limits applied; waiting
    /// jobs that now have a place are handed back to be run), the lanes
    /// it adds paused and limited as `core` says.
    fn new(
        routes: &[Arc<Route>],
        webhooks: Option<Arc<Webhooks>>,
        before: &Live,
        core: &Core,
    ) -> (Live, Vec<(Slot<QueuedJob>, QueuedJob)>) {
        let mut lanes = before.lanes.clone();
        let mut started = Vec::new();
        let paused = lock(&core.paused);
        for route in routes {
            let upstream = &route.upstream.config;
            let limits = core.limits_of(upstream);
            match lanes.get(&upstream.name) {
                Some(lane) => started.extend(lane.set_limits(limits)),
                None => {
                    let lane = Lane::new(limits, Arc::clone(&core.clock));
                    if paused.contains(&upstream.name) {
                        lane.set_paused(true);
                    }
                    lanes.insert(upstream.name.clone(), lane);
                }
            }
        }
        let live = Live {
            routes: live_routes(routes),
            lanes,
            webhooks,
        };
        (live, started)
    }
}

fn live_routes(routes: &[Arc<Route>]) -> HashMap<Arc<str>, Arc<Route>> {
    routes
        .iter()
        .map(|r| (Arc::clone(&r.name), Arc::clone(r)))
        .collect()
}

impl Core {
    pub(super) fn new(
        store: Arc<dyn JobStore>,
        routes: &[Arc<Route>],
        urls: super::JobUrls,
        webhooks: Option<Arc<Webhooks>>,
        tracker: TaskTracker,
        #[cfg(feature = "kafka")] kafka: Option<Arc<crate::kafka::Kafka>>,
    ) -> Core {
        let core = Core {
            clock: Arc::default(),
            limiters: Limiters::default(),
            watches: Watches::new(store.work_queue().is_some()),
            store,
            live: ArcSwap::from_pointee(Live::default()),
            paused: Mutex::default(),
            quotas: Arc::default(),
            running: Running::default(),
            recent: Recent::default(),
            url_prefix: urls.prefix,
            links: urls.links,
            abort: CancellationToken::new(),
            interrupted: AtomicUsize::new(0),
            put_back: AtomicUsize::new(0),
            tracker,
            #[cfg(feature = "kafka")]
            kafka,
        };
        // Nothing waits yet: nothing to start.
        drop(core.reconfigure(routes, webhooks));
        core
    }

    /// Puts new routes and a new webhook sender in force for what starts
    /// from now on; returns the waiting jobs that raised limits let start.
    pub(super) fn reconfigure(
        &self,
        routes: &[Arc<Route>],
        webhooks: Option<Arc<Webhooks>>,
    ) -> Vec<(Slot<QueuedJob>, QueuedJob)> {
        self.limiters.fit(routes.iter().map(|r| &r.upstream.config));
        let before = self.live.load();
        let (live, started) = Live::new(routes, webhooks, &before, self);
        self.live.store(Arc::new(live));
        started
    }

    /// An upstream's limits as configured, but an adaptive upstream's
    /// running limit where it stands now.
    fn limits_of(&self, upstream: &UpstreamConfig) -> Limits {
        let mut limits = Limits::of(upstream);
        if let Some(limit) = self.limiters.limit(&upstream.name) {
            limits.max_running = limit;
        }
        limits
    }

    /// Moves an adaptive upstream's running limit after a try of one of its
    /// jobs that took `took` (`outcome` `None`: stopped); the lane's clock
    /// starts what a raised limit lets start.
    pub(super) fn adapt(&self, route: &Route, outcome: Option<&Outcome>, took: Duration) {
        let upstream = &route.upstream.config.name;
        if let Some(limit) = self.limiters.record(upstream, outcome, took) {
            self.lane(route).set_running_limit(limit);
        }
    }

    /// Each adaptive upstream's running limit now, by name.
    pub(super) fn adaptive_limits(&self) -> Vec<(String, usize)> {
        self.limiters.all()
    }

    pub(super) fn quotas(&self) -> &Arc<super::quota::Quotas> {
        &self.quotas
    }

    /// Every task that runs or waits to run a job, so a drain can wait for them.
    pub(super) fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    pub(super) fn store(&self) -> &dyn JobStore {
        &*self.store
    }

    pub(super) fn watches(&self) -> &Watches {
        &self.watches
    }

    pub(super) fn running(&self) -> &Running {
        &self.running
    }

    pub(super) fn recent(&self) -> &Recent {
        &self.recent
    }

    pub(super) fn webhooks(&self) -> Option<Arc<Webhooks>> {
        self.live.load().webhooks.clone()
    }

    pub(super) fn routes(&self) -> Vec<Arc<Route>> {
        self.live.load().routes.values().cloned().collect()
    }

    /// The route of that name now in force, to keep (a job about to run).
    pub(super) fn route(&self, name: &str) -> Option<Arc<Route>> {
        self.live.load().routes.get(name).cloned()
    }

    /// What `read` takes from the route of that name now in force: for the
    /// many reads of one setting (every status poll makes several), which
    /// need not keep the route and so touch no reference count.
    pub(super) fn with_route<T>(&self, name: &str, read: impl FnOnce(&Route) -> T) -> Option<T> {
        self.live.load().routes.get(name).map(|r| read(r))
    }

    /// The lane of a route's upstream.
    pub(super) fn lane(&self, route: &Route) -> Arc<Lane<QueuedJob>> {
        let lanes = &self.live.load().lanes;
        Arc::clone(&lanes[&route.upstream.config.name])
    }

    /// Every lane, and what rings when one of them is to be looked at
    /// sooner: for whoever keeps their clock.
    pub(super) fn clock(&self) -> (Vec<Arc<Lane<QueuedJob>>>, &Notify) {
        (
            self.live.load().lanes.values().cloned().collect(),
            &self.clock,
        )
    }

    /// The limits now in force for the upstream of that name, if a route
    /// still names it.
    pub(super) fn limits(&self, upstream: &str) -> Option<Limits> {
        self.live
            .load()
            .routes
            .values()
            .map(|r| &r.upstream.config)
            .find(|u| u.name == upstream)
            .map(|u| self.limits_of(u))
    }

    /// The lanes that start nothing now, and why.
    pub(super) fn holds(&self) -> Vec<Held> {
        let now = (std::time::Instant::now(), SystemTime::now());
        self.live
            .load()
            .lanes
            .iter()
            .filter_map(|(name, lane)| {
                let until = lane
                    .held_until()
                    .map(|until| now.1 + until.saturating_duration_since(now.0));
                let paused = lane.paused();
                (paused || until.is_some()).then(|| Held {
                    upstream: name.clone(),
                    paused,
                    until,
                })
            })
            .collect()
    }

    /// Pauses or resumes an upstream's lane, and the lanes a reload adds
    /// for it; a resume gives back the waiting jobs that may start now.
    pub(super) fn set_paused(
        &self,
        upstream: &str,
        paused: bool,
    ) -> Vec<(Slot<QueuedJob>, QueuedJob)> {
        {
            let mut names = lock(&self.paused);
            if paused {
                names.insert(upstream.to_owned());
            } else {
                names.remove(upstream);
            }
        }
        match self.live.load().lanes.get(upstream) {
            Some(lane) => lane.set_paused(paused),
            None => Vec::new(),
        }
    }

    /// Each upstream's lane occupancy, by upstream name.
    pub(super) fn loads(&self) -> Vec<(String, Load)> {
        self.live
            .load()
            .lanes
            .iter()
            .map(|(name, lane)| (name.clone(), lane.load()))
            .collect()
    }

    /// Fires once the drain deadline has passed.
    pub(super) fn aborted(&self) -> &CancellationToken {
        &self.abort
    }

    pub(super) fn abort(&self) {
        self.abort.cancel();
    }

    pub(super) fn interrupted(&self) -> usize {
        self.interrupted.load(Ordering::Relaxed)
    }

    pub(super) fn put_back_count(&self) -> usize {
        self.put_back.load(Ordering::Relaxed)
    }

    /// The drain deadline passed while the job ran here: one that may be
    /// sent again (`resend`) goes back to `queued`, never failed because of
    /// a deploy; one that may not ends `failed` (`interrupted`).
    /// `ids`: the submission's request and trace ids, for the log.
    pub(super) async fn interrupt(
        &self,
        id: JobId,
        attempt: u32,
        resend: bool,
        (request_id, trace_id): (Option<&str>, Option<&str>),
    ) {
        if resend {
            match self.store.put_back(id, attempt).await {
                Ok(true) => {
                    self.put_back.fetch_add(1, Ordering::Relaxed);
                    self.watches.announce(id, JobStatus::Queued);
                    tracing::info!(job = %id, status = "queued", attempt, request_id, trace_id, "job put back: the drain deadline passed before the backend answered");
                    return;
                }
                // Canceled or taken over meanwhile: not ours to end.
                Ok(false) => return,
                Err(e) => {
                    tracing::error!(job = %id, error = %e, "could not put the job back; failing it")
                }
            }
        }
        self.finish(
            id,
            attempt,
            Outcome::failed(Failure::Interrupted),
            &telemetry::Span::default(),
        )
        .await;
    }

    pub(super) fn watch(&self, id: JobId, seen: JobStatus) -> watch::Receiver<JobStatus> {
        self.watches.subscribe(id, seen)
    }

    /// Running → terminal, as its runner saw it end; dropped if the job was
    /// canceled or taken over meanwhile.
    /// `trace`: the attempt's span, whose child the commit is.
    pub(super) async fn finish(
        &self,
        id: JobId,
        attempt: u32,
        outcome: Outcome,
        trace: &telemetry::Span,
    ) {
        let stored = {
            let _commit = trace.child("store commit");
            self.store.finish(id, attempt, outcome).await
        };
        match stored {
            Ok(Some(job)) => self.ended(&job),
            Ok(None) => {
                tracing::info!(job = %id, attempt, "outcome dropped: the job was canceled or taken over")
            }
            Err(e) => tracing::error!(job = %id, error = %e, "could not record how the job ended"),
        }
    }

    /// Fails a job that waited past its route's `start_timeout`, never sent.
    pub(super) async fn expire(&self, id: JobId) {
        self.finish(
            id,
            0,
            Outcome::failed(Failure::Expired),
            &telemetry::Span::default(),
        )
        .await;
    }

    /// Fails, in every lane, the waiting jobs past their `start_timeout`.
    pub(super) async fn expire_waiting(&self, now: SystemTime) {
        let lanes: Vec<_> = self.live.load().lanes.values().cloned().collect();
        for lane in lanes {
            for job in lane.remove_all(|q| q.expired(now)) {
                self.expire(job.id).await;
            }
        }
    }

    /// Whether any route in force has a `start_timeout`.
    pub(super) fn expires_waiting(&self) -> bool {
        self.live
            .load()
            .routes
            .values()
            .any(|r| r.config.start_timeout.is_some())
    }

    /// Cancels a queued or running job, or deletes a finished one's result.
    pub(super) async fn cancel(&self, id: JobId) -> Result<Lookup<Cancel>, StoreError> {
        let cancel = self.store.cancel(id).await?;
        match &cancel {
            Lookup::Found(Cancel::Canceled(job)) => self.ended(job),
            Lookup::Found(Cancel::Deleted) => tracing::info!(job = %id, "job result deleted"),
            Lookup::Found(Cancel::AlreadyCanceled(_)) | Lookup::Gone(_) | Lookup::Missing => {}
        }
        Ok(cancel)
    }

    /// A job has ended here, its end recorded: whoever waits is told, its
    /// backend request is dropped if it was canceled, its webhook is sent,
    /// and the end is counted and logged. Every end of a job passes here.
    fn ended(&self, job: &Job) {
        self.watches.announce(job.id, job.status);
        self.recent.saw(job);
        if job.status == JobStatus::Canceled {
            self.stop(job);
        }
        if let Some(hook) = job.webhook.as_ref().filter(|h| h.ended()) {
            self.send_webhook(job, hook);
        }
        #[cfg(feature = "kafka")]
        if let Some(publication) = &job.kafka {
            self.produce(job, publication);
        }
        if job.failure == Some(Failure::Interrupted) {
            self.interrupted.fetch_add(1, Ordering::Relaxed);
        }
        let took = job
            .finished_at
            .and_then(|end| end.duration_since(job.created_at).ok())
            .unwrap_or_default();
        self.with_route(&job.route, |r| r.metrics.finished(job.status, took));
        let status = job.status.as_str();
        let http_status = job.response.map(|r| r.status);
        let (request_id, trace_id) = (job.origin.request_id(), job.origin.trace_id());
        if job.status == JobStatus::Failed {
            let failure = job.failure.map(Failure::as_str);
            tracing::warn!(job = %job.id, route = %job.route, status, failure, http_status, request_id, trace_id, "job");
        } else {
            tracing::info!(job = %job.id, route = %job.route, status, http_status, request_id, trace_id, "job");
        }
    }

    /// Drops a canceled job's backend request if it runs here, or takes it
    /// out of its lane if it waits.
    fn stop(&self, job: &Job) {
        if self.running.stop(job.id) {
            return;
        }
        if let Some(route) = self.route(&job.route) {
            self.lane(&route).remove(|q| q.id == job.id);
        }
    }

    pub(super) fn document<'a>(&'a self, job: &'a Job) -> Document<'a> {
        self.document_at(job, &self.url_prefix)
    }

    pub(super) fn document_at<'a>(&'a self, job: &'a Job, prefix: &'a str) -> Document<'a> {
        let result_limit = self.with_route(&job.route, |r| r.config.max_result);
        Document::new(job, prefix, self.progress(job), result_limit)
    }

    /// Measured from the response when its length is known, else estimated
    /// from the route's history; absent when there is nothing to go on.
    fn progress(&self, job: &Job) -> Option<ProgressDoc> {
        if job.status != JobStatus::Running {
            return None;
        }
        if let Some(percent) = self.running.progress(job.id).and_then(|p| p.percent()) {
            return Some(ProgressDoc {
                percent,
                estimated: false,
            });
        }
        let expected = self.with_route(&job.route, |r| r.stats.expected())??;
        let elapsed = SystemTime::now()
            .duration_since(job.started_at?)
            .unwrap_or_default();
        Some(ProgressDoc {
            percent: estimated_percent(expected, elapsed),
            estimated: true,
        })
    }

    /// `Retry-After` for an unfinished job.
    pub(super) fn retry_after(&self, job: &Job) -> u64 {
        let elapsed = job
            .started_at
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .unwrap_or_default();
        self.with_route(&job.route, |r| r.retry_after(elapsed))
            .unwrap_or(1)
    }
}
