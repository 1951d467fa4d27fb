//! Running one job: wait for a place at the upstream, send the request once,
//! keep the response, and record how it ended.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use http::header::CONTENT_LENGTH;
use http::Request;
use tokio_util::sync::CancellationToken;

use super::model::{Failure, JobId, JobStatus, Outcome, StoredResponse};
use super::{BackendRequest, Jobs, Progress};
use crate::body::{self, collect_limited, BodyError};
use crate::proxy::headers;
use crate::routes::Route;
use crate::upstream::{Admission, UpstreamError};

pub(super) struct Work {
    pub id: JobId,
    pub route: Arc<Route>,
    pub request: BackendRequest,
    pub admission: Admission,
    pub cancel: CancellationToken,
    pub progress: Arc<Progress>,
}

/// Removes the job from the live registry however the task ends.
struct Forget<'a>(&'a Jobs, JobId);

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.0.forget(self.1);
    }
}

pub(super) async fn run(jobs: Arc<Jobs>, work: Work) {
    let Work {
        id,
        route,
        request,
        admission,
        cancel,
        progress,
    } = work;
    let _forget = Forget(&jobs, id);
    let _permit = match admission {
        Admission::Running(permit) => permit,
        Admission::Waiting(slot) => {
            let permit = tokio::select! {
                permit = route.upstream.permit() => permit,
                // The store already says canceled; dropping the slot frees the queue place.
                () = cancel.cancelled() => return,
                () = jobs.abort.cancelled() => {
                    record(&jobs, &route, id, Outcome::failed(Failure::Interrupted)).await;
                    return;
                }
            };
            drop(slot);
            permit
        }
    };
    match jobs.store.start(id, SystemTime::now()).await {
        Ok(Some(_)) => tracing::info!(job = %id, route = %route.name, status = "running", "job"),
        Ok(None) => return,
        Err(e) => {
            tracing::error!(job = %id, error = %e, "could not mark the job running");
            return;
        }
    }
    let started = tokio::time::Instant::now();
    let outcome = tokio::select! {
        // Dropping the exchange future drops its connection: the backend sees the abort.
        () = cancel.cancelled() => return,
        () = jobs.abort.cancelled() => Outcome::failed(Failure::Interrupted),
        outcome = exchange(&route, request, &progress) => outcome,
    };
    if outcome.failure != Some(Failure::Interrupted) {
        route.stats.record(started.elapsed());
    }
    record(&jobs, &route, id, outcome).await;
}

async fn record(jobs: &Jobs, route: &Route, id: JobId, outcome: Outcome) {
    let status = outcome.status;
    let failure = outcome.failure;
    match jobs.store.finish(id, outcome).await {
        Ok(Some(job)) => {
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
        Ok(None) => {}
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
    *req.uri_mut() = request.uri;
    *req.headers_mut() = request.headers;
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
            headers: headers::detach(&parts.headers),
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
