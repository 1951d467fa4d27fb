//! Asynchronous jobs: accepting them, running them in the background
//! against their upstream, and answering for them.

pub mod api;
pub mod id;
pub mod idempotency;
mod lane;
pub mod model;
pub mod owner;
mod runner;
mod shared;
pub mod store;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::GatewayError;
use lane::{Admission, Lane};
use crate::route::Route;
use crate::sync::lock;
use crate::webhook::{Delivery, DeliveryLog, Webhook, Webhooks};
use id::{IdMap, IdShards, JobId};
use idempotency::Idempotency;
use model::{BackendRequest, Job, JobStatus};
use store::{Created, JobStore, Lookup, MemoryStore, NewJob, ScopeClaim, Store, StoreError};

/// What a submitting request brings: the request for the backend, the
/// credentials that will bind the job, and its idempotency key if it has one.
pub struct Submission {
    pub request: BackendRequest,
    pub credentials: Option<Vec<u8>>,
    pub idempotency: Option<Idempotency>,
    pub webhook: Option<Arc<Webhook>>,
}

/// A job in its upstream's lane, waiting or about to run.
pub struct QueuedJob {
    id: JobId,
    route: Arc<Route>,
    request: BackendRequest,
}

pub struct Jobs {
    store: Arc<dyn JobStore>,
    /// The store again when it is the embedded one: its jobs wait in this
    /// process's lanes, which start them there. With a shared store a job
    /// starts as a replica takes it.
    local: Option<Arc<MemoryStore>>,
    routes: HashMap<Arc<str>, Arc<Route>>,
    /// Each upstream's jobs, by its name, when they run in this process:
    /// `max_concurrency` sent at once, `max_queue` waiting.
    lanes: HashMap<String, Arc<Lane<QueuedJob>>>,
    /// Jobs this process is running.
    live: Mutex<IdMap<Live>>,
    /// State changes of unfinished jobs, for whoever waits on them; a
    /// job's sender goes once the job is finished.
    changes: IdShards<watch::Sender<JobStatus>>,
    tracker: TaskTracker,
    /// Fired when the drain starts: no more jobs are taken from a shared queue.
    closing: CancellationToken,
    /// Fired when the drain deadline passes: every job left fails.
    abort: CancellationToken,
    /// Jobs failed because the drain deadline passed, running or waiting.
    interrupted: AtomicUsize,
    /// `public_base_url` + `jobs_path`: every job URL starts with it.
    pub(crate) url_prefix: String,
    /// `None` when no route sends webhooks.
    pub(crate) webhooks: Option<Arc<Webhooks>>,
}

struct Live {
    cancel: CancellationToken,
    progress: Arc<Progress>,
}

/// How much of a running job's response has arrived.
#[derive(Debug)]
pub struct Progress {
    received: AtomicU64,
    /// `u64::MAX` while the length is unknown.
    total: AtomicU64,
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainReport {
    /// Jobs still unfinished at the deadline, now failed.
    pub jobs_failed: usize,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            received: AtomicU64::new(0),
            total: AtomicU64::new(u64::MAX),
        }
    }

    /// Percent of a response of known length received so far.
    pub fn percent(&self) -> Option<u8> {
        let total = self.total.load(Ordering::Relaxed);
        if total == u64::MAX || total == 0 {
            return None;
        }
        let received = self.received.load(Ordering::Relaxed).min(total);
        Some((received.saturating_mul(100) / total) as u8)
    }
}

impl Jobs {
    pub fn new(
        store: Store,
        routes: &[Arc<Route>],
        url_prefix: String,
        webhooks: Option<Arc<Webhooks>>,
    ) -> Jobs {
        let (store, local): (Arc<dyn JobStore>, _) = match store {
            Store::Memory(memory) => (Arc::clone(&memory) as _, Some(memory)),
            Store::Redis(redis) => (redis as _, None),
        };
        let mut lanes = HashMap::new();
        if local.is_some() {
            for route in routes {
                let upstream = &route.upstream.config;
                lanes
                    .entry(upstream.name.clone())
                    .or_insert_with(|| Lane::new(upstream.max_concurrency, upstream.max_queue));
            }
        }
        Jobs {
            store,
            local,
            lanes,
            routes: routes
                .iter()
                .map(|r| (Arc::clone(&r.name), Arc::clone(r)))
                .collect(),
            live: Mutex::default(),
            changes: IdShards::default(),
            tracker: TaskTracker::new(),
            closing: CancellationToken::new(),
            abort: CancellationToken::new(),
            interrupted: AtomicUsize::new(0),
            url_prefix,
            webhooks,
        }
    }

    /// Accepts a job: a record in the store, then a place in its upstream's
    /// lane (or, with a shared store, in its shared queue, in the same step).
    /// Refused when the budget or the queue is full. The receiver sees the
    /// job's status change, up to its last.
    pub async fn submit(
        self: &Arc<Self>,
        route: &Arc<Route>,
        submission: Submission,
    ) -> Result<(Job, watch::Receiver<JobStatus>), GatewayError> {
        let Submission {
            request,
            credentials,
            idempotency,
            webhook,
        } = submission;
        if self.tracker.is_closed() {
            return Err(GatewayError::ShuttingDown);
        }
        let retry_after = route.retry_after(Duration::ZERO);
        let mut job = Job::queued(Arc::clone(&route.name), request.method.clone());
        job.owner = credentials.map(|c| owner::Owner::of(job.id, &c));
        job.webhook = webhook;
        // Watched before the job exists anywhere: with a shared store another
        // replica may run it at once, and no change to it may go unseen.
        let (tx, changes) = watch::channel(JobStatus::Queued);
        self.changes.lock(job.id).insert(job.id, tx);
        match self
            .record(route, &job, &request, idempotency, retry_after)
            .await
        {
            Ok(None) => {}
            Ok(Some(earlier)) => {
                self.changes.lock(job.id).remove(&job.id);
                return Ok(earlier);
            }
            Err(e) => {
                self.changes.lock(job.id).remove(&job.id);
                return Err(e);
            }
        }
        if let Some(local) = &self.local {
            self.admit(local, route, job.id, request, retry_after)
                .await?;
        }
        tracing::info!(job = %job.id, route = %route.name, status = "queued", "job");
        Ok((job, changes))
    }

    /// Records a new job in the store, unless an earlier submission with
    /// the same idempotency key is still kept: then that one, and its changes.
    async fn record(
        &self,
        route: &Route,
        job: &Job,
        request: &BackendRequest,
        idempotency: Option<Idempotency>,
        retry_after: u64,
    ) -> Result<Option<(Job, watch::Receiver<JobStatus>)>, GatewayError> {
        let upstream = &route.upstream.config;
        let resend_on_loss = route
            .config
            .resend_on_loss
            .unwrap_or_else(|| request.method.is_idempotent());
        let mut replace = false;
        loop {
            let created = self
                .store
                .create(NewJob {
                    job: job.clone(),
                    request,
                    upstream: &upstream.name,
                    max_queue: upstream.max_queue,
                    resend_on_loss,
                    idempotency: idempotency.map(|i| ScopeClaim {
                        scope: i.scope,
                        fingerprint: i.fingerprint,
                        replace,
                    }),
                })
                .await
                .map_err(|e| match e {
                    StoreError::Full => GatewayError::StoreFull { retry_after },
                    StoreError::QueueFull(upstream) => GatewayError::QueueFull {
                        upstream,
                        retry_after,
                    },
                    e => GatewayError::Store(e),
                })?;
            let Created::Taken {
                job: holder,
                fingerprint,
            } = created
            else {
                return Ok(None);
            };
            match self.store.get(holder).await.map_err(GatewayError::Store)? {
                Lookup::Found(earlier) => {
                    if Some(fingerprint) != idempotency.map(|i| i.fingerprint) {
                        return Err(GatewayError::IdempotencyKeyReused);
                    }
                    let changes = self.watch(holder, earlier.status);
                    return Ok(Some((earlier, changes)));
                }
                // Its holder is gone: the key is free again.
                Lookup::Gone | Lookup::Missing => replace = true,
            }
        }
    }

    /// Puts a job recorded in this process's store into its upstream's lane.
    async fn admit(
        self: &Arc<Self>,
        local: &Arc<MemoryStore>,
        route: &Arc<Route>,
        id: JobId,
        request: BackendRequest,
        retry_after: u64,
    ) -> Result<(), GatewayError> {
        let queued = QueuedJob {
            id,
            route: Arc::clone(route),
            request,
        };
        let lane = self.lane(route).expect("jobs run here have lanes");
        match lane.admit(queued) {
            Admission::Run(slot, first) => {
                self.tracker.spawn(runner::work(
                    Arc::clone(self),
                    Arc::clone(local),
                    slot,
                    first,
                ));
                Ok(())
            }
            Admission::Queued => Ok(()),
            Admission::Full(_) => {
                self.discard(id).await;
                Err(GatewayError::QueueFull {
                    upstream: route.upstream.config.name.clone(),
                    retry_after,
                })
            }
        }
    }

    /// Forgets a job no client will ask about: refused, or answered directly.
    pub async fn discard(&self, id: JobId) {
        self.changes.lock(id).remove(&id);
        if let Err(e) = self.store.discard(id).await {
            tracing::error!(job = %id, error = %e, "could not discard a job");
        }
    }

    /// Whether a request with these headers may see `job`: always, unless the
    /// job was submitted with credentials and these are not the same.
    pub fn visible_to(&self, job: &Job, headers: &http::HeaderMap) -> bool {
        let Some(owner) = job.owner else { return true };
        let names = self
            .route(&job.route)
            .map_or(&[][..], |r| &r.config.bind_headers[..]);
        owner.admits(job.id, owner::credentials(headers, names).as_deref())
    }

    /// A view of a job's status changes, from `seen` on. Whoever waits on
    /// it should look at the job once more after subscribing: a change made
    /// before the subscription (here or by another replica) is not replayed.
    pub fn watch(&self, id: JobId, seen: JobStatus) -> watch::Receiver<JobStatus> {
        let mut changes = self.changes.lock(id);
        match changes.get(&id) {
            Some(tx) => tx.subscribe(),
            // Here every unfinished job has its channel until it ends; one
            // that has none has just ended, as a second look will show.
            None if seen.is_terminal() || self.store.shared().is_none() => watch::channel(seen).1,
            None => {
                let (tx, rx) = watch::channel(seen);
                changes.insert(id, tx);
                rx
            }
        }
    }

    /// Forgets the channels nobody waits on any more: those of jobs that
    /// ended out of this replica's sight.
    fn prune_watches(&self) {
        self.changes.retain(|_, tx| tx.receiver_count() > 0);
    }

    /// Looks again at every job someone here waits on, after changes to
    /// them may have gone unannounced.
    async fn recheck_watched(&self) {
        let watched = self.changes.ids();
        for id in watched {
            match self.store.get(id).await {
                Ok(Lookup::Found(job)) => self.announce(id, job.status),
                Ok(Lookup::Gone | Lookup::Missing) => {
                    self.changes.lock(id).remove(&id);
                }
                Err(e) => tracing::debug!(job = %id, error = %e, "cannot recheck a watched job"),
            }
        }
    }

    /// Starts what a shared store needs of this replica; nothing otherwise.
    pub(crate) fn start(self: &Arc<Self>) {
        shared::start(self);
    }

    /// Sends the webhook of a job that just ended, when one is due.
    pub(crate) fn call_back(&self, job: &Job) {
        if let Some(hook) = job.webhook.as_ref().filter(|h| h.ended()) {
            self.send_webhook(job, hook);
        }
    }

    /// The client of a job whose webhook was held was answered `202` after
    /// all: the webhook is due when the job ends, or now if it has.
    pub(crate) async fn arm_webhook(&self, job: &Job) {
        let Some(hook) = &job.webhook else { return };
        match self.store.arm_webhook(job.id, hook).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::error!(job = %job.id, error = %e, "could not arm the webhook");
                return;
            }
        }
        match self.store.get(job.id).await {
            Ok(Lookup::Found(ended)) => self.send_webhook(&ended, hook),
            Ok(Lookup::Gone | Lookup::Missing) => {}
            Err(e) => {
                tracing::error!(job = %job.id, error = %e, "could not read the job to call back")
            }
        }
    }

    fn send_webhook(&self, job: &Job, hook: &Arc<Webhook>) {
        let Some(webhooks) = &self.webhooks else {
            return;
        };
        let payload = api::payload(self, job);
        let webhooks = Arc::clone(webhooks);
        let hook = Arc::clone(hook);
        let store = Arc::clone(&self.store);
        let id = job.id;
        tokio::spawn(async move {
            let log = StoreDeliveryLog { store, id };
            webhooks
                .deliver(&id.to_string(), &hook, payload, &log)
                .await;
        });
    }

    /// Tells waiters that a job's status changed.
    fn announce(&self, id: JobId, status: JobStatus) {
        let mut changes = self.changes.lock(id);
        if let Some(tx) = changes.get(&id) {
            tx.send_replace(status);
        }
        if status.is_terminal() {
            changes.remove(&id);
        }
    }

    /// Stops accepting jobs, waits for the ones in hand until `deadline`,
    /// then fails whatever is left so nothing stays `running`.
    pub async fn drain(&self, deadline: Instant) -> DrainReport {
        self.tracker.close();
        self.closing.cancel();
        if tokio::time::timeout_at(deadline, self.tracker.wait())
            .await
            .is_ok()
        {
            return DrainReport { jobs_failed: 0 };
        }
        self.abort.cancel();
        let grace = crate::defaults::ABORT_GRACE;
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::error!(
                workers = self.tracker.len(),
                "jobs did not record their failure in time"
            );
        }
        DrainReport {
            jobs_failed: self.interrupted.load(Ordering::Relaxed),
        }
    }

    pub fn url(&self, id: JobId) -> String {
        format!("{}/{id}", self.url_prefix)
    }

    /// The lane of a route's upstream; every route has one when jobs run
    /// here, none has with a shared store.
    fn lane(&self, route: &Route) -> Option<&Arc<Lane<QueuedJob>>> {
        self.lanes.get(&route.upstream.config.name)
    }

    fn route(&self, name: &str) -> Option<&Arc<Route>> {
        self.routes.get(name)
    }

    /// `Retry-After` for an unfinished job.
    fn retry_after(&self, job: &Job) -> u64 {
        let elapsed = job
            .started_at
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .unwrap_or_default();
        self.route(&job.route).map_or(1, |r| r.retry_after(elapsed))
    }

    fn live_map(&self) -> std::sync::MutexGuard<'_, IdMap<Live>> {
        lock(&self.live)
    }

    fn progress_of(&self, id: JobId) -> Option<Arc<Progress>> {
        self.live_map().get(&id).map(|l| Arc::clone(&l.progress))
    }

    /// Stops a job the store has just marked canceled: drops its backend
    /// request if it runs here, or takes it out of its lane if it waits.
    fn stop(&self, job: &Job) {
        if self.stop_here(job.id) {
            return;
        }
        if let Some(lane) = self.route(&job.route).and_then(|r| self.lane(r)) {
            lane.remove(|q| q.id == job.id);
        }
    }

    /// Drops a canceled job's backend request if it runs here; whether it did.
    fn stop_here(&self, id: JobId) -> bool {
        match self.live_map().get(&id) {
            Some(live) => {
                live.cancel.cancel();
                true
            }
            None => false,
        }
    }

    /// Records a job as running here until the returned guard drops.
    fn register(&self, id: JobId) -> Registration<'_> {
        let live = Live {
            cancel: CancellationToken::new(),
            progress: Arc::new(Progress::new()),
        };
        let registration = Registration {
            jobs: self,
            id,
            cancel: live.cancel.clone(),
            progress: Arc::clone(&live.progress),
        };
        self.live_map().insert(id, live);
        registration
    }
}

/// A running job's handles; removes it from the live registry when dropped.
struct Registration<'a> {
    jobs: &'a Jobs,
    id: JobId,
    cancel: CancellationToken,
    progress: Arc<Progress>,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.jobs.live_map().remove(&self.id);
    }
}

/// Keeps a job's webhook delivery state in its store.
struct StoreDeliveryLog {
    store: Arc<dyn JobStore>,
    id: JobId,
}

#[async_trait::async_trait]
impl DeliveryLog for StoreDeliveryLog {
    async fn record(&self, delivery: &Delivery) {
        if let Err(e) = self.store.record_delivery(self.id, delivery).await {
            tracing::warn!(job = %self.id, error = %e, "could not record the webhook's delivery state");
        }
    }
}
