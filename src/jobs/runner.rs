//! Running jobs: a worker holds one of its upstream's places and runs jobs
//! from the lane until none wait; each is sent, its response kept, and how
//! it ended recorded, or, after a failure that may pass, put back in its
//! lane to be tried again later (holding no place while it waits).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::header::{HeaderValue, CONTENT_LENGTH};
use http::{HeaderName, Request};

use super::core::{Core, QueuedJob};
use super::id::JobId;
use super::lane::{Admission, Slot};
use super::model::{BackendRequest, Failure, JobStatus, Outcome, StoredResponse};
use super::retry;
use super::running::Progress;
use super::store::LocalQueue;
use crate::body::Body;
use crate::body::{self, collect_limited, BodyError};
use crate::header_block::HeaderBlock;
use crate::headers;
use crate::route::Route;
use crate::telemetry;
use crate::upstream::UpstreamError;

/// Starts a worker on one of the upstream's places, `first` its first job.
pub(super) fn spawn(
    core: &Arc<Core>,
    store: &Arc<dyn LocalQueue>,
    slot: Slot<QueuedJob>,
    first: QueuedJob,
) {
    let work = work(Arc::clone(core), Arc::clone(store), slot, first);
    core.tracker().spawn(work);
}

/// Runs jobs from this process's own lane while it has any, holding one of
/// the upstream's places.
async fn work(
    core: Arc<Core>,
    store: Arc<dyn LocalQueue>,
    mut slot: Slot<QueuedJob>,
    first: QueuedJob,
) {
    let mut next = Some(first);
    while let Some(job) = next {
        run(&core, &store, job).await;
        next = slot.take_next();
    }
}

/// Puts a job in its lane again, past `max_queue` if need be (it was
/// accepted), and starts a worker if a place is free.
pub(super) fn admit_again(core: &Arc<Core>, store: &Arc<dyn LocalQueue>, job: QueuedJob) {
    if let Admission::Run(slot, first) = core.lane(&job.route).readmit(job) {
        spawn(core, store, slot, first);
    }
}

/// Puts a job back in its lane at `at`. Past the drain deadline it stays
/// queued in a store that outlives the process, and fails otherwise.
pub(super) fn retry_later(
    core: &Arc<Core>,
    store: &Arc<dyn LocalQueue>,
    job: QueuedJob,
    at: SystemTime,
) {
    let tracker = core.tracker().clone();
    let (core, store) = (Arc::clone(core), Arc::clone(store));
    let waiting = async move {
        let wait = at.duration_since(SystemTime::now()).unwrap_or_default();
        let mut changes = core.watch(job.id, JobStatus::Queued);
        // Canceled while it waits: nothing more to do. A channel closed
        // without an end tells nothing, and the wait goes on.
        let ended = async {
            if changes.wait_for(|s| s.is_terminal()).await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => admit_again(&core, &store, job),
            () = ended => {}
            // Past the drain deadline it stays queued (in an embedded store
            // that outlives the process, for its next start).
            () = core.aborted().cancelled() => {}
        }
    };
    tracker.spawn(waiting);
}

/// Marks a job from this process's own lane running, and runs it.
async fn run(core: &Arc<Core>, store: &Arc<dyn LocalQueue>, mut job: QueuedJob) {
    // Past the drain deadline a queued job is not sent; it stays queued.
    if core.aborted().is_cancelled() {
        return;
    }
    let now = SystemTime::now();
    if job.expired(now) {
        core.expire(job.id).await;
        return;
    }
    // Started: it no longer waits to start, whatever comes after, nor
    // counts among its caller's waiting jobs.
    job.start_by = None;
    job.quota = None;
    let attempt = match store.begin(job.id, now).await {
        Ok(Some(attempt)) => attempt,
        // Canceled while it waited.
        Ok(None) => return,
        // Not marked running, so not sent: it stays queued in the store.
        Err(e) => {
            tracing::error!(job = %job.id, error = %e, "could not start the job");
            return;
        }
    };
    // Kept for another try: its parts are shared, not copied.
    let request = job.request.clone();
    let this = Try {
        id: job.id,
        attempt,
        queued_since: Some(job.queued_at),
    };
    let Some((outcome, span)) = self::attempt(core, &job.route, request, this).await else {
        return;
    };
    let route = &job.route;
    if let Some(pause) = retry::hold(&route.upstream.config, &outcome) {
        hold_lane(core, route, pause);
    }
    let again = retry::after(
        &route.upstream.config,
        &route.config,
        &job.request.method,
        attempt,
        &outcome,
    );
    if let Some(wait) = again {
        match store.retry(job.id, attempt, &wait).await {
            Ok(true) => {
                core.watches().announce(job.id, JobStatus::Queued);
                let (request_id, trace_id) = job.request.log_ids();
                tracing::info!(job = %job.id, route = %route.name, status = "queued", attempt, reason = wait.reason, request_id, trace_id, "job to be tried again");
                retry_later(core, store, job, wait.at);
                return;
            }
            // Canceled meanwhile: its outcome is dropped below.
            Ok(false) => {}
            Err(e) => {
                tracing::error!(job = %job.id, error = %e, "could not queue the job again; it ends here")
            }
        }
    }
    core.finish(job.id, attempt, outcome, &span).await;
}

/// The backend asked to be left alone (`429`, `503`): nothing more starts
/// on the route's upstream for `pause`, then what waits starts as places
/// allow (the lanes' clock sees to it). A longer hold already set covers
/// this one.
fn hold_lane(core: &Core, route: &Route, pause: Duration) {
    let until = std::time::Instant::now() + pause;
    if core.lane(route).hold(until) {
        tracing::warn!(upstream = %route.upstream.config.name, pause = %humantime::format_duration(pause), "the backend asked to be left alone; its jobs wait");
    }
}

/// Keeps the lanes' clock: starts what waits in a lane once the time it
/// waited for has come (a hold's end, the rate's next start). Returns when
/// the drain deadline passes, after which nothing starts.
pub(super) async fn keep_time(core: Arc<Core>, store: Arc<dyn LocalQueue>) {
    loop {
        let next = {
            let (lanes, _) = core.clock();
            lanes.iter().filter_map(|lane| lane.wake()).min()
        };
        let due = async {
            match next {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = due => {}
            // A lane is to be looked at sooner.
            () = core.clock().1.notified() => {}
            () = core.aborted().cancelled() => return,
        }
        let now = std::time::Instant::now();
        for lane in core.clock().0 {
            for (slot, first) in lane.tick(now) {
                spawn(&core, &store, slot, first);
            }
        }
    }
}

/// Sends a job the store has marked running as `this` attempt: how it
/// ended, and its span (the store's commit of the outcome is its child);
/// `None` when it was canceled or its lease lost meanwhile.
pub(super) async fn attempt(
    core: &Core,
    route: &Route,
    request: BackendRequest,
    this: Try,
) -> Option<(Outcome, telemetry::Span)> {
    let Try { id, attempt, .. } = this;
    core.watches().announce(id, JobStatus::Running);
    core.recent().began(id, SystemTime::now());
    // A refcount, not a copy: the ids for a put-back's line.
    let head = request.clone();
    let (request_id, trace_id) = head.log_ids();
    tracing::info!(job = %id, route = %route.name, status = "running", attempt, request_id, trace_id, "job");
    let live = core.running().register(id);
    let resend = route.resends(&request.method);
    let mut req = backend_request(route, request, this);
    let mut span =
        telemetry::Span::attempt(req.headers_mut(), &route.name, attempt, this.queued_since);
    let started = tokio::time::Instant::now();
    let outcome = tokio::select! {
        // Dropping the exchange future drops its connection: the backend sees the abort.
        () = live.cancel.cancelled() => return None,
        () = core.aborted().cancelled() => {
            // Boxed: a drain's path, kept out of every job's future.
            Box::pin(core.interrupt(id, attempt, resend, head.log_ids())).await;
            return None;
        }
        () = keep_lease(core, id, attempt) => return None,
        outcome = exchange(route, req, &live.progress) => outcome,
    };
    let took = started.elapsed();
    route.stats.record(took);
    core.adapt(route, Some(&outcome), took);
    match (&outcome.response, outcome.failure) {
        (Some(response), _) => span.status(response.status.as_u16()),
        (None, Some(failure)) => span.fail(failure.as_str()),
        (None, None) => {}
    }
    Some((outcome, span))
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

fn job_id_value(id: JobId) -> HeaderValue {
    HeaderValue::try_from(id.to_string()).expect("a job id is a valid header value")
}

/// Which try of which job a backend request is, and since when the job
/// waited (for its trace), if that is known.
#[derive(Clone, Copy)]
pub(super) struct Try {
    pub(super) id: JobId,
    pub(super) attempt: u32,
    pub(super) queued_since: Option<SystemTime>,
}

/// Named by the job, for the backend: a legacy backend can log jobs and tell
/// a retry from a new request.
const JOB_ID: HeaderName = HeaderName::from_static("asyncgate-job-id");
const ATTEMPT: HeaderName = HeaderName::from_static("asyncgate-attempt");

/// The job's request as its backend gets it.
fn backend_request(route: &Route, request: BackendRequest, this: Try) -> Request<Body> {
    let mut req = Request::new(body::full(request.body));
    *req.method_mut() = request.method;
    *req.uri_mut() = route.upstream.uri_for(Some(&request.path));
    *req.headers_mut() = request.headers.unpack();
    if route.config.job_headers {
        let headers = req.headers_mut();
        // Replacing any the client sent: the backend may trust these.
        headers.insert(JOB_ID, job_id_value(this.id));
        headers.insert(ATTEMPT, HeaderValue::from(this.attempt));
    }
    req
}

/// One request to the backend, its whole response read within the
/// upstream's `job_timeout` and the route's `max_result`.
async fn exchange(route: &Route, req: Request<Body>, progress: &Progress) -> Outcome {
    let upstream = &route.upstream;
    let limit = route.config.max_result;
    let read = async {
        let response = upstream
            .send(req, upstream.config.job_timeout)
            .await
            .map_err(|e| match e {
                UpstreamError::Connect(_) => Failure::Unreachable,
                UpstreamError::Timeout(_) => Failure::Timeout,
                UpstreamError::ClientBody(_) | UpstreamError::Failed(_) => Failure::Reset,
                UpstreamError::BrokenFraming(_) => Failure::BrokenFraming,
                #[cfg(feature = "tls")]
                UpstreamError::Certificate { .. } => Failure::Certificate,
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
                BodyError::Idle(_) | BodyError::Read(_) | BodyError::Spill(_) => Failure::Reset,
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
