//! Running jobs: a worker holds one of its upstream's places and runs jobs
//! from the lane until none wait; each is sent once, its response kept, and
//! how it ended recorded.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use http::header::CONTENT_LENGTH;
use http::Request;

use super::id::JobId;
use super::model::{BackendRequest, Failure, JobStatus, Outcome, StoredResponse};
use super::store::MemoryStore;
use super::{Jobs, Progress, QueuedJob};
use crate::body::{self, collect_limited, BodyError};
use crate::header_block::HeaderBlock;
use crate::headers;
use super::lane::Slot;
use crate::route::Route;
use crate::upstream::UpstreamError;

pub(super) async fn work(
    jobs: Arc<Jobs>,
    store: Arc<MemoryStore>,
    mut slot: Slot<QueuedJob>,
    first: QueuedJob,
) {
    let mut next = Some(first);
    while let Some(job) = next {
        run(&jobs, &store, job).await;
        next = slot.take_next();
    }
}

/// Starts and runs a job from this process's own lane.
async fn run(jobs: &Jobs, store: &MemoryStore, job: QueuedJob) {
    if jobs.abort.is_cancelled() {
        // Past the drain deadline: what still waits here fails without being
        // sent. (Waiting in a shared queue, it waits for another replica.)
        record(
            jobs,
            &job.route,
            job.id,
            0,
            Outcome::failed(Failure::Interrupted),
        )
        .await;
        return;
    }
    // None: canceled while it waited.
    if let Some(attempt) = store.start(job.id, SystemTime::now()) {
        run_started(jobs, job, attempt).await;
    }
}

/// Runs a job the store has marked running as `attempt`.
pub(super) async fn run_started(jobs: &Jobs, job: QueuedJob, attempt: u32) {
    let QueuedJob { id, route, request } = job;
    jobs.announce(id, JobStatus::Running);
    tracing::info!(job = %id, route = %route.name, status = "running", attempt, "job");
    let live = jobs.register(id);
    let started = tokio::time::Instant::now();
    let outcome = tokio::select! {
        // Dropping the exchange future drops its connection: the backend sees the abort.
        () = live.cancel.cancelled() => return,
        () = jobs.abort.cancelled() => Outcome::failed(Failure::Interrupted),
        () = keep_lease(jobs, id, attempt) => return,
        outcome = exchange(&route, request, &live.progress) => outcome,
    };
    if outcome.failure != Some(Failure::Interrupted) {
        route.stats.record(started.elapsed());
    }
    record(jobs, &route, id, attempt, outcome).await;
}

/// Renews a shared job's lease until it is lost, which ends the job here:
/// another replica has it, or it was canceled. Never ends for a job that
/// runs in this process's own store.
async fn keep_lease(jobs: &Jobs, id: JobId, attempt: u32) {
    let Some(shared) = jobs.store.shared() else {
        return std::future::pending().await;
    };
    let mut tick = tokio::time::interval(shared.lease() / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        match shared.renew(id, attempt).await {
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

async fn record(jobs: &Jobs, route: &Route, id: JobId, attempt: u32, outcome: Outcome) {
    let status = outcome.status;
    let failure = outcome.failure;
    match jobs.store.finish(id, attempt, outcome).await {
        Ok(Some(job)) => {
            jobs.announce(id, status);
            jobs.call_back(&job);
            if failure == Some(Failure::Interrupted) {
                jobs.interrupted.fetch_add(1, Ordering::Relaxed);
            }
            let http_status = job.response.map(|r| r.status);
            match status {
                JobStatus::Failed => {
                    tracing::warn!(job = %id, route = %route.name, status = status.as_str(), ?failure, http_status, "job")
                }
                _ => {
                    tracing::info!(job = %id, route = %route.name, status = status.as_str(), http_status, "job")
                }
            }
        }
        Ok(None) => {
            tracing::info!(job = %id, attempt, "outcome dropped: the job was canceled or taken over")
        }
        Err(e) => tracing::error!(job = %id, error = %e, "could not record how the job ended"),
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
            progress.total.store(n, Ordering::Relaxed);
        }
        let body = collect_limited(body, limit, |n| {
            progress.received.store(n, Ordering::Relaxed)
        })
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
