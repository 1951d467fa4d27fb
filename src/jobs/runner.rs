//! Running jobs: a worker holds one of its upstream's places and runs jobs
//! from the lane until none wait; each is sent once, its response kept, and
//! how it ended recorded.

use std::sync::Arc;
use std::time::SystemTime;

use http::header::CONTENT_LENGTH;
use http::Request;

use super::core::{Core, QueuedJob};
use super::id::JobId;
use super::lane::Slot;
use super::model::{BackendRequest, Failure, JobStatus, Outcome, StoredResponse};
use super::running::Progress;
use super::store::LocalQueue;
use crate::body::{self, collect_limited, BodyError};
use crate::header_block::HeaderBlock;
use crate::headers;
use crate::route::Route;
use crate::upstream::UpstreamError;

/// Runs jobs from this process's own lane while it has any, holding one of
/// the upstream's places.
pub(super) async fn work(
    core: Arc<Core>,
    store: Arc<dyn LocalQueue>,
    mut slot: Slot<QueuedJob>,
    first: QueuedJob,
) {
    let mut next = Some(first);
    while let Some(job) = next {
        run(&core, &*store, job).await;
        next = slot.take_next();
    }
}

/// Marks a job from this process's own lane running, and runs it.
async fn run(core: &Core, store: &dyn LocalQueue, job: QueuedJob) {
    if core.aborted().is_cancelled() {
        // Past the drain deadline, what still waits is not sent. In a store
        // that outlives the process it stays queued for the next start (as
        // it would in a shared queue for another replica); otherwise it
        // fails now rather than vanish.
        if !store.durable() {
            core.finish(job.id, 0, Outcome::failed(Failure::Interrupted))
                .await;
        }
        return;
    }
    match store.begin(job.id, SystemTime::now()).await {
        Ok(Some(attempt)) => run_begun(core, job, attempt).await,
        // Canceled while it waited.
        Ok(None) => {}
        // Not marked running, so not sent: it stays queued in the store.
        Err(e) => tracing::error!(job = %job.id, error = %e, "could not start the job"),
    }
}

/// Runs a job the store has marked running as `attempt`.
pub(super) async fn run_begun(core: &Core, job: QueuedJob, attempt: u32) {
    let QueuedJob { id, route, request } = job;
    core.watches().announce(id, JobStatus::Running);
    tracing::info!(job = %id, route = %route.name, status = "running", attempt, "job");
    let live = core.running().register(id);
    let started = tokio::time::Instant::now();
    let outcome = tokio::select! {
        // Dropping the exchange future drops its connection: the backend sees the abort.
        () = live.cancel.cancelled() => return,
        () = core.aborted().cancelled() => Outcome::failed(Failure::Interrupted),
        () = keep_lease(core, id, attempt) => return,
        outcome = exchange(&route, request, &live.progress) => outcome,
    };
    if outcome.failure != Some(Failure::Interrupted) {
        route.stats.record(started.elapsed());
    }
    core.finish(id, attempt, outcome).await;
}

/// Renews a shared job's lease until it is lost, which ends the job here:
/// another replica has it, or it was canceled. Never ends for a job that
/// runs in this process's own store.
async fn keep_lease(core: &Core, id: JobId, attempt: u32) {
    let Some(queue) = core.store().work_queue() else {
        return std::future::pending().await;
    };
    let mut tick = tokio::time::interval(queue.lease() / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        match queue.renew(id, attempt).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(job = %id, attempt, "lease lost; dropping the job here");
                return;
            }
            // Out of reach for now: the lease may still hold; the next
            // renewal tells.
            Err(e) => tracing::warn!(job = %id, error = %e, "could not renew the lease"),
        }
    }
}

/// One request to the backend, its whole response read within the
/// upstream's `job_timeout` and the route's `max_result`.
async fn exchange(route: &Route, request: BackendRequest, progress: &Progress) -> Outcome {
    let upstream = &route.upstream;
    let limit = route.config.max_result;
    let mut req = Request::new(body::full(request.body));
    *req.method_mut() = request.method;
    *req.uri_mut() = upstream.uri_for(Some(&request.path));
    *req.headers_mut() = request.headers.unpack();
    let read = async {
        let response = upstream
            .send(req, upstream.config.job_timeout)
            .await
            .map_err(|e| match e {
                UpstreamError::Connect(_) => Failure::Unreachable,
                UpstreamError::Timeout(_) => Failure::Timeout,
                UpstreamError::ClientBodyStalled(_) | UpstreamError::Failed(_) => Failure::Reset,
            })?;
        let (mut parts, body) = response.into_parts();
        let length = parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if length.is_some_and(|n| n > limit) {
            return Err(Failure::ResultTooLarge);
        }
        if let Some(n) = length {
            progress.set_total(n);
        }
        let body = collect_limited(body, limit, |n| progress.set_received(n))
            .await
            .map_err(|e| match e {
                BodyError::TooLarge { .. } => Failure::ResultTooLarge,
                BodyError::Idle(_) | BodyError::Read(_) => Failure::Reset,
            })?;
        headers::remove_hop_by_hop(&mut parts.headers);
        // The replay carries the body whole; its length is set when it is sent.
        parts.headers.remove(CONTENT_LENGTH);
        Ok(StoredResponse {
            status: parts.status,
            headers: HeaderBlock::pack(&parts.headers),
            body,
        })
    };
    let result = match tokio::time::timeout(upstream.config.job_timeout, read).await {
        Ok(r) => r,
        Err(_) => Err(Failure::Timeout),
    };
    match result {
        Ok(response) => Outcome::answered(response),
        Err(failure) => Outcome::failed(failure),
    }
}
