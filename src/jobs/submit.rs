//! Accepting a job: a record in the store (with its idempotency key, its
//! caller's quota), then a place in its upstream's lane, or in the shared
//! queue in the same step.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch as channel;

use super::core::QueuedJob;
use super::id::JobId;
use super::idempotency::Idempotency;
use super::lane::Admission;
use super::model::{BackendRequest, Job, JobStatus};
use super::store::{CreateError, Created, LocalQueue, Lookup, NewJob, ScopeClaim, StoreError};
use super::{owner, quota, runner, Jobs, Starts};
use crate::delivery::{Publication, Webhook};
use crate::headers::Origin;
use crate::route::Route;

/// What a submitting request brings: the request for the backend, the
/// credentials that will bind the job, its idempotency key and its webhook.
pub(crate) struct Submission {
    pub(crate) request: BackendRequest,
    /// Its urgency, RFC 9218's `u`.
    pub(crate) priority: u8,
    pub(crate) credentials: Option<Vec<u8>>,
    pub(crate) idempotency: Option<Idempotency>,
    pub(crate) webhook: Option<Arc<Webhook>>,
    pub(crate) origin: Origin,
}

/// What a job brings to its lane besides itself: until when it may start,
/// and its place in its caller's count.
struct Waiting {
    start_by: Option<SystemTime>,
    queued_at: SystemTime,
    quota: Option<quota::Ticket>,
    urgency: u8,
    caller: u64,
}

/// Why a job was not accepted.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SubmitError {
    #[error("the gateway is shutting down")]
    ShuttingDown,
    #[error("the queue of upstream `{upstream}` is full")]
    QueueFull { upstream: String, retry_after: u64 },
    #[error("the result store's byte budget is spent")]
    StoreFull { retry_after: u64 },
    #[error("the idempotency key was used for a different request")]
    KeyReused,
    #[error("the caller has {max} jobs waiting on the route, as many as it allows")]
    CallerQuota { max: usize, retry_after: u64 },
    #[error("the job store failed")]
    Store(#[source] StoreError),
}

impl Jobs {
    /// Accepts a job: a record in the store, then a place in its upstream's
    /// lane (or, with a shared store, in its shared queue, in the same step).
    /// Refused when the budget or the queue is full. The receiver sees the
    /// job's status change, up to its last.
    pub(crate) async fn submit(
        &self,
        route: &Arc<Route>,
        submission: Submission,
    ) -> Result<(Job, channel::Receiver<JobStatus>), SubmitError> {
        let Submission {
            request,
            priority,
            credentials,
            idempotency,
            webhook,
            origin,
        } = submission;
        // Draining: a request still reaching this process (on a connection
        // it accepted before it stopped, or during an upgrade's hand-over)
        // is accepted when the job outlives the process, and left queued
        // for the next start or another replica; otherwise it would be lost.
        // Counted as a task in hand until the job is in its lane (and its
        // worker tracked), so a drain that begins meanwhile waits for it
        // rather than end with the job started and untracked.
        let _in_hand = self.core.tracker().token();
        let draining = self.core.tracker().is_closed();
        if draining && !self.outlives {
            return Err(SubmitError::ShuttingDown);
        }
        let retry_after = route.retry_after(Duration::ZERO);
        let caller = route
            .config
            .max_queued_per_caller
            .map(|max| (quota::caller_key(&route.name, credentials.as_deref()), max));
        // A caller past its quota is refused before anything is stored,
        // unless the request repeats an earlier one's idempotency key: that
        // one is answered (below), and a new job is never made.
        let (ticket, past_quota) = match (&caller, &self.starts) {
            (Some((key, max)), Starts::Here(_)) => match self.core.quotas().take(key, *max) {
                Some(ticket) => (Some(ticket), None),
                None if idempotency.is_some() => (None, Some(*max)),
                None => {
                    return Err(SubmitError::CallerQuota {
                        max: *max,
                        retry_after,
                    })
                }
            },
            _ => (None, None),
        };
        let id = self.core.store().new_id(&route.upstream.config.name);
        let mut job = Job::queued(id, Arc::clone(&route.name), request.method.clone());
        job.owner = credentials.as_ref().map(|c| owner::Owner::of(job.id, c));
        job.priority = priority;
        job.webhook = webhook;
        job.origin = origin;
        job.kafka = route
            .config
            .kafka_topic
            .clone()
            .map(|topic| Arc::new(Publication::new(topic)));
        // Watched before the job exists anywhere: with a shared store another
        // replica may run it at once, and no change to it may go unseen.
        let changes = self.core.watches().open(job.id);
        let shared_quota = match &self.starts {
            Starts::Shared(_) => caller.as_ref().map(|(key, max)| (key.as_str(), *max)),
            Starts::Here(_) => None,
        };
        match self
            .create(
                route,
                &job,
                &request,
                idempotency,
                shared_quota,
                retry_after,
            )
            .await
        {
            Ok(None) => {}
            Ok(Some(earlier)) => {
                self.core.watches().close(job.id);
                return Ok(earlier);
            }
            Err(e) => {
                self.core.watches().close(job.id);
                return Err(e);
            }
        }
        if let Some(max) = past_quota {
            self.discard(job.id).await;
            return Err(SubmitError::CallerQuota { max, retry_after });
        }
        if let (Starts::Here(local), false) = (&self.starts, draining) {
            let waiting = Waiting {
                start_by: route.config.start_timeout.map(|t| job.created_at + t),
                queued_at: job.created_at,
                quota: ticket,
                urgency: job.priority,
                caller: owner::caller(credentials.as_deref()),
            };
            self.admit(local, route, job.id, request, waiting, retry_after)
                .await?;
        }
        route
            .metrics
            .submitted
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.core.recent().saw(&job);
        tracing::info!(
            job = %job.id,
            route = %route.name,
            status = "queued",
            request_id = job.origin.request_id(),
            trace_id = job.origin.trace_id(),
            "job"
        );
        Ok((job, changes))
    }

    /// Records a new job in the store, unless an earlier submission with
    /// the same idempotency key is still kept: then that one, and its changes.
    async fn create(
        &self,
        route: &Route,
        job: &Job,
        request: &BackendRequest,
        idempotency: Option<Idempotency>,
        quota: Option<(&str, usize)>,
        retry_after: u64,
    ) -> Result<Option<(Job, channel::Receiver<JobStatus>)>, SubmitError> {
        let upstream = &route.upstream.config;
        let resend_on_loss = route.resends(&request.method);
        let mut replace = false;
        loop {
            let created = self
                .core
                .store()
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
                    start_by: route.config.start_timeout.map(|t| job.created_at + t),
                    quota,
                })
                .await
                .map_err(|e| match e {
                    CreateError::Full => SubmitError::StoreFull { retry_after },
                    CreateError::QueueFull(upstream) => SubmitError::QueueFull {
                        upstream,
                        retry_after,
                    },
                    CreateError::CallerQuota => SubmitError::CallerQuota {
                        max: quota.map_or(0, |(_, max)| max),
                        retry_after,
                    },
                    CreateError::Store(e) => SubmitError::Store(e),
                })?;
            let Created::Taken {
                job: holder,
                fingerprint,
            } = created
            else {
                return Ok(None);
            };
            let earlier = self
                .core
                .store()
                .get(holder)
                .await
                .map_err(SubmitError::Store)?;
            match earlier {
                Lookup::Found(earlier) => {
                    if Some(fingerprint) != idempotency.map(|i| i.fingerprint) {
                        return Err(SubmitError::KeyReused);
                    }
                    let changes = self.core.watch(holder, earlier.status);
                    return Ok(Some((earlier, changes)));
                }
                // Its holder is gone: the key is free again.
                Lookup::Gone(_) | Lookup::Missing => replace = true,
            }
        }
    }

    /// Puts a job recorded in this process's store into its upstream's lane.
    async fn admit(
        &self,
        local: &Arc<dyn LocalQueue>,
        route: &Arc<Route>,
        id: JobId,
        request: BackendRequest,
        waiting: Waiting,
        retry_after: u64,
    ) -> Result<(), SubmitError> {
        let queued = QueuedJob {
            id,
            route: Arc::clone(route),
            request,
            start_by: waiting.start_by,
            queued_at: waiting.queued_at,
            quota: waiting.quota,
            urgency: waiting.urgency,
            caller: waiting.caller,
        };
        match self.core.lane(route).admit(queued) {
            Admission::Run(slot, first) => {
                runner::spawn(&self.core, local, slot, first);
                Ok(())
            }
            Admission::Queued => Ok(()),
            Admission::Full(_) => {
                self.discard(id).await;
                Err(SubmitError::QueueFull {
                    upstream: route.upstream.config.name.clone(),
                    retry_after,
                })
            }
        }
    }
}
