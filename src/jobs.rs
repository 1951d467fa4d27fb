//! Asynchronous jobs: accepting them, running them in the background
//! against their upstream, and answering for them. [`Jobs`] is the one door:
//! submit, find, fetch a result, cancel, watch, drain.

mod adaptive;
mod core;
mod dispatch;
pub(crate) mod document;
pub(crate) mod id;
pub(crate) mod idempotency;
mod lane;
pub(crate) mod links;
pub(crate) mod model;
pub(crate) mod owner;
mod pace;
mod payload;
mod quota;
mod recent;
mod retry;
mod runner;
mod running;
pub(crate) mod store;
mod submit;
mod waiting;
mod watch;

use std::sync::Arc;
use std::time::SystemTime;

use http::HeaderMap;
use tokio::sync::watch as channel;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub(crate) use self::core::Held;
use self::core::{Core, QueuedJob};
use crate::route::Route;
use crate::webhook::Webhooks;
pub(crate) use document::Document;
use id::JobId;
pub(crate) use lane::Load;
use model::{Job, JobStatus, Replay};
use store::{Binding, Cancel, JobStore, LocalQueue, Lookup, Recovered, Store, StoreError};
pub(crate) use submit::{Submission, SubmitError};

/// Why a job cannot be shown to whoever asks.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FindError {
    /// Unknown, or bound to other credentials.
    #[error("no such job")]
    NotFound,
    /// Expired or deleted, and its tombstone is still kept.
    #[error("the job expired or was deleted")]
    Gone,
    #[error("the job store failed")]
    Store(#[source] StoreError),
}

impl From<StoreError> for FindError {
    fn from(e: StoreError) -> FindError {
        FindError::Store(e)
    }
}

/// Fails the jobs in this process's lanes that wait past their route's
/// `start_timeout`, looking once a second while any route has one, until
/// the drain begins. (A job reaching the front of its lane late is failed
/// there too, to the moment.)
async fn expire_waiting(core: Arc<Core>, closing: CancellationToken) {
    let mut tick = tokio::time::interval(crate::defaults::START_TIMEOUT_SWEEP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = closing.cancelled() => return,
        }
        if core.expires_waiting() {
            core.expire_waiting(SystemTime::now()).await;
        }
    }
}

/// Where a job's URLs start, as webhooks and Kafka records name them
/// (`public_base_url` + `jobs_path`), and what signs links to a job's
/// resources that work without the caller's credentials.
pub(crate) struct JobUrls {
    pub(crate) prefix: String,
    pub(crate) links: Arc<crate::jobs::links::Capabilities>,
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DrainReport {
    /// Jobs still running at the deadline that may not be sent again, now
    /// failed (`interrupted`).
    pub jobs_failed: usize,
    /// Jobs still running at the deadline that may be sent again, now
    /// queued: for the next start, or for another replica.
    pub jobs_put_back: usize,
}

pub(crate) struct Jobs {
    core: Arc<Core>,
    starts: Starts,
    /// Whether accepted jobs outlive this process (the disk store; a shared
    /// one): then a submission during the drain is still accepted, and left
    /// for the next start or another replica.
    outlives: bool,
    /// Fired when the drain starts: no more jobs are taken from a shared queue.
    closing: CancellationToken,
}

/// Where jobs start, chosen once from the store's kind.
enum Starts {
    /// An embedded store: its jobs wait in this process's lanes, which
    /// start them here.
    Here(Arc<dyn LocalQueue>),
    /// A shared store: a job starts as a replica takes it from the store's
    /// queue; these take this replica's part.
    Shared(dispatch::Takers),
}

impl Jobs {
    /// Must be called inside a tokio runtime: with a shared store, this
    /// replica starts taking its part of the work at once.
    pub(crate) fn new(
        store: Store,
        routes: &[Arc<Route>],
        urls: JobUrls,
        webhooks: Option<Arc<Webhooks>>,
        #[cfg(feature = "kafka")] kafka: Option<Arc<crate::kafka::Kafka>>,
    ) -> Jobs {
        let job_store: Arc<dyn JobStore> = match &store {
            Store::Memory(memory) => Arc::clone(memory) as _,
            Store::Disk(disk) => Arc::clone(disk) as _,
            Store::Redis(redis) => Arc::clone(redis) as _,
        };
        let core = Arc::new(Core::new(
            job_store,
            routes,
            urls,
            webhooks,
            TaskTracker::new(),
            #[cfg(feature = "kafka")]
            kafka,
        ));
        let closing = CancellationToken::new();
        let outlives = !matches!(store, Store::Memory(_));
        let starts = match store {
            Store::Memory(memory) => Starts::Here(memory),
            Store::Disk(disk) => Starts::Here(disk),
            Store::Redis(redis) => Starts::Shared(dispatch::spawn(&core, redis, &closing)),
        };
        let jobs = Jobs {
            core,
            starts,
            outlives,
            closing,
        };
        if let Starts::Here(local) = &jobs.starts {
            jobs.carry_on(local, local.recovered());
            tokio::spawn(expire_waiting(Arc::clone(&jobs.core), jobs.closing.clone()));
            tokio::spawn(runner::keep_time(Arc::clone(&jobs.core), Arc::clone(local)));
        }
        jobs
    }

    /// Puts the jobs a store found queued when it opened back in their
    /// lanes, past `max_queue` if need be (they were accepted), and makes
    /// the deliveries still due.
    fn carry_on(&self, local: &Arc<dyn LocalQueue>, recovered: Recovered) {
        let Recovered {
            queued,
            deliveries,
            paused,
        } = recovered;
        // Before anything is admitted: a paused upstream starts nothing.
        for upstream in paused {
            tracing::info!(upstream, "paused by hand before the restart; still paused");
            self.core.set_paused(&upstream, true);
        }
        if !queued.is_empty() || !deliveries.is_empty() {
            tracing::info!(
                queued = queued.len(),
                deliveries = deliveries.len(),
                "carrying on with what the store kept"
            );
        }
        for job in queued {
            let Some(route) = self.core.route(&job.route) else {
                tracing::error!(job = %job.id, route = job.route, "queued job of a route no longer configured; failing it");
                let core = Arc::clone(&self.core);
                self.core.tracker().spawn(async move {
                    let lost = model::Outcome::failed(model::Failure::Lost);
                    core.finish(job.id, 0, lost, &crate::telemetry::Span::default())
                        .await;
                });
                continue;
            };
            // Followed like a job just submitted.
            drop(self.core.watches().open(job.id));
            let start_by = route
                .config
                .start_timeout
                .filter(|_| !job.sent)
                .map(|t| job.created_at + t);
            let queued = QueuedJob {
                id: job.id,
                route: Arc::clone(&route),
                request: job.request,
                start_by,
                // Its caller is not known again (the store keeps only a
                // salted digest): it counts against nobody's quota, and
                // takes its turns with the jobs that have no credentials.
                quota: None,
                urgency: job.priority,
                caller: 0,
                queued_at: job.created_at,
            };
            match job.not_before {
                Some(at) => runner::retry_later(&self.core, local, queued, at),
                None => runner::admit_again(&self.core, local, queued),
            }
        }
        for job in deliveries {
            if let Some(hook) = job.webhook.as_ref().filter(|h| h.is_due()) {
                self.core.send_webhook(&job, hook);
            }
            #[cfg(feature = "kafka")]
            if let Some(publication) = job.kafka.as_ref().filter(|p| p.is_due()) {
                self.core.produce(&job, publication);
            }
        }
    }

    /// New routes and webhook sender for the jobs accepted from now on;
    /// jobs under way keep the route they were accepted on. Waiting jobs
    /// that raised limits let run start now.
    pub(crate) fn reconfigure(&self, routes: &[Arc<Route>], webhooks: Option<Arc<Webhooks>>) {
        let started = self.core.reconfigure(routes, webhooks);
        match &self.starts {
            Starts::Here(local) => {
                for (slot, first) in started {
                    runner::spawn(&self.core, local, slot, first);
                }
            }
            Starts::Shared(takers) => takers.cover(routes),
        }
    }

    /// Forgets a job no client will ask about: refused, or answered directly.
    pub(crate) async fn discard(&self, id: JobId) {
        self.core.watches().close(id);
        if let Err(e) = self.core.store().discard(id).await {
            tracing::error!(job = %id, error = %e, "could not discard a job");
        }
    }

    /// The job, if a request with these headers may see it.
    pub(crate) async fn find(&self, id: JobId, headers: &HeaderMap) -> Result<Job, FindError> {
        match self.core.store().get(id).await? {
            Lookup::Found(job) if self.visible_to(&job, headers) => Ok(job),
            Lookup::Gone(binding) if self.tombstone_visible_to(id, binding.as_ref(), headers) => {
                Err(FindError::Gone)
            }
            Lookup::Found(_) | Lookup::Gone(_) | Lookup::Missing => Err(FindError::NotFound),
        }
    }

    /// The job, for the holder of an events link for it: whoever it is
    /// bound to, as a gone job's tombstone shows it to its owner.
    pub(crate) async fn find_for_capability(&self, id: JobId) -> Result<Job, FindError> {
        match self.core.store().get(id).await? {
            Lookup::Found(job) => Ok(job),
            Lookup::Gone(_) => Err(FindError::Gone),
            Lookup::Missing => Err(FindError::NotFound),
        }
    }

    /// A job and its stored response, if it has one. `headers` are the
    /// asking request's, checked against the job's owner; `None` is the
    /// gateway asking on the submitter's behalf.
    pub(crate) async fn result(
        &self,
        id: JobId,
        headers: Option<&HeaderMap>,
    ) -> Result<(Job, Option<Replay>), FindError> {
        match self.core.store().result(id).await? {
            Lookup::Found((job, _)) if headers.is_some_and(|h| !self.visible_to(&job, h)) => {
                Err(FindError::NotFound)
            }
            Lookup::Found(found) => Ok(found),
            Lookup::Gone(binding)
                if headers.is_some_and(|h| !self.tombstone_visible_to(id, binding.as_ref(), h)) =>
            {
                Err(FindError::NotFound)
            }
            Lookup::Gone(_) => Err(FindError::Gone),
            Lookup::Missing => Err(FindError::NotFound),
        }
    }

    /// Cancels a queued or running job, or deletes a finished one's result.
    /// Deleting what is already gone changes nothing and succeeds, so a
    /// client may safely repeat a `DELETE` whose answer it lost.
    pub(crate) async fn cancel(&self, id: JobId, headers: &HeaderMap) -> Result<Cancel, FindError> {
        match self.find(id, headers).await {
            Ok(_) | Err(FindError::Gone) => {}
            Err(e) => return Err(e),
        }
        match self.core.cancel(id).await? {
            Lookup::Found(cancel) => Ok(cancel),
            Lookup::Gone(_) => Ok(Cancel::Deleted),
            Lookup::Missing => Err(FindError::NotFound),
        }
    }

    /// Whether a request with these headers may see `job`: always, unless the
    /// job was submitted with credentials and these are not the same.
    fn visible_to(&self, job: &Job, headers: &HeaderMap) -> bool {
        let Some(owner) = job.owner else { return true };
        self.admits(job.id, &job.route, owner, headers)
    }

    /// Whether a request with these headers may learn that a job is gone:
    /// the same rule as for the job it was.
    fn tombstone_visible_to(
        &self,
        id: JobId,
        binding: Option<&Binding>,
        headers: &HeaderMap,
    ) -> bool {
        binding.is_none_or(|b| self.admits(id, &b.route, b.owner, headers))
    }

    /// Whether the credentials in `headers`, read as `route` names them,
    /// are the ones `owner` was made of.
    fn admits(&self, id: JobId, route: &str, owner: owner::Owner, headers: &HeaderMap) -> bool {
        let presented = self
            .core
            .with_route(route, |r| {
                owner::credentials(headers, &r.config.bind_headers)
            })
            .unwrap_or_else(|| owner::credentials(headers, &[]));
        owner.admits(id, presented.as_deref())
    }

    /// A view of a job's status changes, from `seen` on. Whoever waits on
    /// it should look at the job once more after subscribing: a change made
    /// before the subscription (here or by another replica) is not replayed.
    pub(crate) fn watch(&self, id: JobId, seen: JobStatus) -> channel::Receiver<JobStatus> {
        self.core.watch(id, seen)
    }

    /// The client of a job whose webhook was held was answered `202` after
    /// all: the webhook is due when the job ends, or now if it has.
    pub(crate) async fn arm_webhook(&self, job: &Job) {
        let Some(hook) = &job.webhook else { return };
        match self.core.store().arm_webhook(job.id, hook).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::error!(job = %job.id, error = %e, "could not arm the webhook");
                return;
            }
        }
        match self.core.store().get(job.id).await {
            Ok(Lookup::Found(ended)) => self.core.send_webhook(&ended, hook),
            Ok(Lookup::Gone(_) | Lookup::Missing) => {}
            Err(e) => {
                tracing::error!(job = %job.id, error = %e, "could not read the job to call back")
            }
        }
    }

    /// The job document.
    pub(crate) fn document<'a>(&'a self, job: &'a Job) -> Document<'a> {
        self.core.document(job)
    }

    /// The document with its links under `prefix` instead of the configured one.
    pub(crate) fn document_at<'a>(&'a self, job: &'a Job, prefix: &'a str) -> Document<'a> {
        self.core.document_at(job, prefix)
    }

    /// `Retry-After` for an unfinished job.
    pub(crate) fn retry_after(&self, job: &Job) -> u64 {
        self.core.retry_after(job)
    }

    /// What `read` takes from the route of that name now in force.
    pub(crate) fn with_route<T>(&self, name: &str, read: impl FnOnce(&Route) -> T) -> Option<T> {
        self.core.with_route(name, read)
    }

    /// Checks and resolves a request's callback URL; `None` when no route
    /// sends webhooks.
    pub(crate) fn webhooks(&self) -> Option<Arc<Webhooks>> {
        self.core.webhooks()
    }

    /// The Kafka producer, when `[kafka]` is configured.
    #[cfg(feature = "kafka")]
    pub(crate) fn kafka(&self) -> Option<&Arc<crate::kafka::Kafka>> {
        self.core.kafka()
    }

    /// How many jobs run and wait in each upstream's lane, by upstream
    /// name; empty with a shared store, whose queue is the store's.
    pub(crate) fn loads(&self) -> Vec<(String, Load)> {
        match self.starts {
            Starts::Here(_) => self.core.loads(),
            Starts::Shared(_) => Vec::new(),
        }
    }

    /// Each adaptive upstream's running limit now, by name (with a shared
    /// store, this replica's, which it holds all replicas to).
    pub(crate) fn adaptive_limits(&self) -> Vec<(String, usize)> {
        self.core.adaptive_limits()
    }

    /// The upstreams that start none of their jobs now, and why (with a
    /// shared store, as this replica last saw it).
    pub(crate) fn holds(&self) -> Vec<Held> {
        match &self.starts {
            Starts::Here(_) => self.core.holds(),
            Starts::Shared(takers) => takers.holds(),
        }
    }

    /// Pauses an upstream by hand, or resumes it: while paused,
    /// submissions are accepted and nothing of it starts, here or on any
    /// replica; the pause is kept by the store, so a reload and a restart
    /// keep it too.
    pub(crate) async fn set_paused(&self, upstream: &str, paused: bool) -> Result<(), StoreError> {
        self.core.store().set_paused(upstream, paused).await?;
        match &self.starts {
            Starts::Here(local) => {
                for (slot, first) in self.core.set_paused(upstream, paused) {
                    runner::spawn(&self.core, local, slot, first);
                }
            }
            Starts::Shared(takers) => takers.note_paused(upstream, paused),
        }
        tracing::info!(upstream, paused, "upstream paused by hand, or resumed");
        Ok(())
    }

    /// The last jobs seen here that `keep` accepts, newest first, and the
    /// failures kept apart from them: what the dashboard lists.
    pub(crate) fn recent(&self, keep: impl Fn(&Job) -> bool, limit: usize) -> Vec<Job> {
        self.core.recent().list(keep, limit)
    }

    pub(crate) fn store(&self) -> &dyn JobStore {
        self.core.store()
    }

    /// Stops accepting jobs, waits for the ones in hand until `deadline`,
    /// then ends what still runs so nothing stays `running`: put back to
    /// `queued` when it may be sent again, else failed. Queued jobs stay
    /// queued.
    pub(crate) async fn drain(&self, deadline: Instant) -> DrainReport {
        self.core.tracker().close();
        self.closing.cancel();
        if tokio::time::timeout_at(deadline, self.core.tracker().wait())
            .await
            .is_ok()
        {
            return DrainReport {
                jobs_failed: 0,
                jobs_put_back: 0,
            };
        }
        self.core.abort();
        let grace = crate::defaults::ABORT_GRACE;
        if tokio::time::timeout(grace, self.core.tracker().wait())
            .await
            .is_err()
        {
            tracing::error!(
                workers = self.core.tracker().len(),
                "jobs did not record their failure in time"
            );
        }
        DrainReport {
            jobs_failed: self.core.interrupted(),
            jobs_put_back: self.core.put_back_count(),
        }
    }
}
