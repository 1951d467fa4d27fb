//! The job resources: the status monitor `{jobs_path}/{id}` (`GET`, long-poll
//! with `?wait=N`, Server-Sent Events, `DELETE`), the result `…/result`, and
//! `…/poll` for clients that read any non-`202` from `Location` as final.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{HeaderValue, ACCEPT, CACHE_CONTROL, CONTENT_TYPE, LOCATION, RETRY_AFTER};
use http::{HeaderMap, HeaderName, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use serde::Serialize;

use super::id::JobId;
use super::model::{Job, JobStatus};
use super::store::{Cancel, Lookup};
use super::Jobs;
use crate::body::{self, Body, BoxError};
use crate::config::LocationStyle;
use crate::defaults;
use crate::error::GatewayError;
use crate::retry_after::estimated_percent;
use crate::webhook::Webhook;

const OPERATION_LOCATION: HeaderName = HeaderName::from_static("operation-location");
const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");
const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");

/// Serves a request whose path is `{jobs_path}{rest}`.
pub async fn serve<B>(
    jobs: &Arc<Jobs>,
    req: &Request<B>,
    rest: &str,
) -> Result<Response<Body>, GatewayError> {
    let headers = req.headers();
    let rest = rest.strip_prefix('/').ok_or(GatewayError::JobNotFound)?;
    let (id, resource) = match rest.split_once('/') {
        None => (rest, Resource::Status),
        Some((id, "result")) => (id, Resource::Result),
        Some((id, "poll")) => (id, Resource::Poll),
        Some(_) => return Err(GatewayError::JobNotFound),
    };
    let id = JobId::parse(id).ok_or(GatewayError::JobNotFound)?;
    match (resource, req.method()) {
        (Resource::Status, &Method::GET) if wants_event_stream(headers) => {
            events(jobs, id, headers).await
        }
        (Resource::Status, &Method::GET | &Method::HEAD) => {
            let wait = long_poll_wait(req.uri().query())?;
            status(jobs, id, wait, headers).await
        }
        (Resource::Status, &Method::DELETE) => cancel(jobs, id, headers).await,
        (Resource::Status, _) => Err(GatewayError::MethodNotAllowed {
            allow: "GET, HEAD, DELETE",
        }),
        (Resource::Result, &Method::GET | &Method::HEAD) => result(jobs, id, Some(headers)).await,
        (Resource::Poll, &Method::GET | &Method::HEAD) => poll(jobs, id, headers).await,
        (Resource::Result | Resource::Poll, _) => {
            Err(GatewayError::MethodNotAllowed { allow: "GET, HEAD" })
        }
    }
}

/// The resources under a job's URL.
#[derive(Clone, Copy)]
enum Resource {
    /// `{id}`: the JSON status monitor.
    Status,
    /// `{id}/result`: the backend's response.
    Result,
    /// `{id}/poll`: `202` until finished, then the result, for clients that
    /// take any non-`202` answer from `Location` as the final one.
    Poll,
}

/// The `202 Accepted` for a job just submitted.
pub fn accepted(jobs: &Jobs, job: &Job) -> Response<Body> {
    let url = jobs.url(job.id);
    let location = match jobs.route(&job.route).map(|r| r.config.location) {
        Some(LocationStyle::Poll) => format!("{url}/poll"),
        Some(LocationStyle::Status) | None => url.clone(),
    };
    let mut response = document_response(jobs, job);
    *response.status_mut() = StatusCode::ACCEPTED;
    let headers = response.headers_mut();
    let header = |u: String| HeaderValue::try_from(u).expect("job URLs are valid header values");
    headers.insert(LOCATION, header(location));
    headers.insert(OPERATION_LOCATION, header(url));
    response
}

/// The job, if this request may see it; otherwise the answer for a job that
/// is not there (or no longer is).
async fn visible_job(jobs: &Jobs, id: JobId, headers: &HeaderMap) -> Result<Job, GatewayError> {
    match jobs.store.get(id).await.map_err(GatewayError::Store)? {
        Lookup::Found(job) if jobs.visible_to(&job, headers) => Ok(job),
        Lookup::Found(_) | Lookup::Missing => Err(GatewayError::JobNotFound),
        Lookup::Gone => Err(GatewayError::JobGone),
    }
}

/// `{id}/poll`: while the job is unfinished `202` with `Retry-After` and its
/// document; then what `{id}/result` answers, or a `303` to it on routes
/// with `redirect_when_done`.
async fn poll(jobs: &Jobs, id: JobId, headers: &HeaderMap) -> Result<Response<Body>, GatewayError> {
    let job = visible_job(jobs, id, headers).await?;
    if !job.status.is_terminal() {
        let mut response = document_response(jobs, &job);
        *response.status_mut() = StatusCode::ACCEPTED;
        return Ok(response);
    }
    if redirects_to_result(jobs, &job) {
        return Ok(see_result(jobs, id));
    }
    result(jobs, id, Some(headers)).await
}

/// A finished job with a result, on a route with `redirect_when_done`.
fn redirects_to_result(jobs: &Jobs, job: &Job) -> bool {
    job.has_result()
        && jobs
            .route(&job.route)
            .is_some_and(|r| r.config.redirect_when_done)
}

fn see_result(jobs: &Jobs, id: JobId) -> Response<Body> {
    let mut response = Response::new(body::empty());
    *response.status_mut() = StatusCode::SEE_OTHER;
    let location = HeaderValue::try_from(format!("{}/result", jobs.url(id)))
        .expect("job URLs are valid header values");
    response.headers_mut().insert(LOCATION, location);
    response
}

/// `?wait=N`: how long a status request may wait for the job to change,
/// capped so a held request stays below common proxy idle timeouts.
fn long_poll_wait(query: Option<&str>) -> Result<Duration, GatewayError> {
    let Some(value) = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|kv| kv.strip_prefix("wait="))
    else {
        return Ok(Duration::ZERO);
    };
    let secs: u64 = value.parse().map_err(|_| GatewayError::BadWait)?;
    Ok(Duration::from_secs(secs).min(defaults::LONG_POLL_MAX))
}

async fn status(
    jobs: &Jobs,
    id: JobId,
    wait: Duration,
    headers: &HeaderMap,
) -> Result<Response<Body>, GatewayError> {
    let mut job = visible_job(jobs, id, headers).await?;
    if !wait.is_zero() && !job.status.is_terminal() {
        let seen = job.status;
        // Woken by the job's own state change, not by a timer loop. A
        // change between the lookup and the subscription shows on a second
        // look.
        let mut changes = jobs.watch(id, seen);
        job = visible_job(jobs, id, headers).await?;
        if job.status == seen {
            let _ = tokio::time::timeout(wait, changes.wait_for(|s| *s != seen)).await;
            job = visible_job(jobs, id, headers).await?;
        }
    }
    if redirects_to_result(jobs, &job) {
        return Ok(see_result(jobs, id));
    }
    Ok(document_response(jobs, &job))
}

/// The result resource: the stored response replayed, or the problem that
/// stands for it. `headers` are the asking request's, checked against the
/// job's owner; `None` is the gateway asking on the submitter's behalf.
pub async fn result(
    jobs: &Jobs,
    id: JobId,
    headers: Option<&HeaderMap>,
) -> Result<Response<Body>, GatewayError> {
    let (job, stored) = match jobs.store.result(id).await.map_err(GatewayError::Store)? {
        Lookup::Found(found) => found,
        Lookup::Gone => return Err(GatewayError::JobGone),
        Lookup::Missing => return Err(GatewayError::JobNotFound),
    };
    if headers.is_some_and(|h| !jobs.visible_to(&job, h)) {
        return Err(GatewayError::JobNotFound);
    }
    if let Some(stored) = stored {
        let mut response = Response::new(body::full(stored.body));
        *response.status_mut() = stored.status;
        *response.headers_mut() = stored.headers.unpack();
        return Ok(response);
    }
    match (job.status, job.failure) {
        (JobStatus::Canceled, _) => Err(GatewayError::JobCanceled {
            monitor: jobs.url(id),
        }),
        (JobStatus::Failed, Some(failure)) => Err(GatewayError::JobFailed(failure)),
        (status, _) => Err(GatewayError::JobNotFinished {
            status,
            monitor: jobs.url(id),
            retry_after: jobs.retry_after(&job),
        }),
    }
}

async fn cancel(
    jobs: &Jobs,
    id: JobId,
    headers: &HeaderMap,
) -> Result<Response<Body>, GatewayError> {
    if let Lookup::Found(job) = jobs.store.get(id).await.map_err(GatewayError::Store)? {
        if !jobs.visible_to(&job, headers) {
            return Err(GatewayError::JobNotFound);
        }
    }
    match jobs.store.cancel(id).await.map_err(GatewayError::Store)? {
        Lookup::Found(Cancel::Canceled(job)) => {
            jobs.stop(&job);
            jobs.announce(id, JobStatus::Canceled);
            jobs.call_back(&job);
            tracing::info!(job = %id, route = %job.route, status = "canceled", "job");
            Ok(document_response(jobs, &job))
        }
        Lookup::Found(Cancel::AlreadyCanceled(job)) => Ok(document_response(jobs, &job)),
        // Deleting what is already gone changes nothing and succeeds, so a
        // client may safely repeat a DELETE whose answer it lost.
        Lookup::Found(Cancel::Deleted) | Lookup::Gone => {
            tracing::info!(job = %id, "job result deleted");
            let mut response = Response::new(body::empty());
            *response.status_mut() = StatusCode::NO_CONTENT;
            Ok(response)
        }
        Lookup::Missing => Err(GatewayError::JobNotFound),
    }
}

fn wants_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|media| {
            media
                .split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("text/event-stream"))
        })
}

/// Server-Sent Events: the job document now and after every state change,
/// then the stream ends after the last one. Comment lines keep idle proxies
/// from cutting a stream that waits long.
async fn events(
    jobs: &Arc<Jobs>,
    id: JobId,
    headers: &HeaderMap,
) -> Result<Response<Body>, GatewayError> {
    let job = visible_job(jobs, id, headers).await?;
    let (mut tx, body) = http_body_util::channel::Channel::<Bytes, BoxError>::new(4);
    let jobs = Arc::clone(jobs);
    tokio::spawn(async move {
        let mut job = job;
        loop {
            if tx.send_data(event(&jobs, &job)).await.is_err() {
                return; // the client went away
            }
            if job.status.is_terminal() {
                return;
            }
            let seen = job.status;
            let mut changes = jobs.watch(id, seen);
            // A change before the subscription shows on this second look.
            job = match jobs.store.get(id).await {
                Ok(Lookup::Found(j)) => j,
                _ => return,
            };
            if job.status != seen {
                continue;
            }
            loop {
                // Woken by the job's state change; heartbeats in between.
                let changed =
                    tokio::time::timeout(defaults::SSE_HEARTBEAT, changes.wait_for(|s| *s != seen))
                        .await
                        .is_ok();
                if changed {
                    break;
                }
                if tx
                    .send_data(Bytes::from_static(b": keep-alive\n\n"))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            job = match jobs.store.get(id).await {
                Ok(Lookup::Found(j)) => j,
                _ => return,
            };
        }
    });
    let mut response = Response::new(body.boxed_unsync());
    let h = response.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(CACHE_CONTROL, NO_STORE);
    Ok(response)
}

fn event(jobs: &Jobs, job: &Job) -> Bytes {
    let mut out = b"event: job\ndata: ".to_vec();
    serde_json::to_writer(&mut out, &document(jobs, job))
        .expect("a job document always serializes");
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

fn document_response(jobs: &Jobs, job: &Job) -> Response<Body> {
    // A document is a few hundred bytes: one allocation of that size.
    let mut json = Vec::with_capacity(512);
    serde_json::to_writer(&mut json, &document(jobs, job))
        .expect("a job document always serializes");
    let mut response = Response::new(body::full(json));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, APPLICATION_JSON);
    // The status changes under the client's feet: no cache may keep it.
    headers.insert(CACHE_CONTROL, NO_STORE);
    if !job.status.is_terminal() {
        headers.insert(RETRY_AFTER, HeaderValue::from(jobs.retry_after(job)));
    }
    response
}

/// The job document, serialized straight from the job: ids, times and URLs
/// are written through `Display`, with no intermediate strings.
#[derive(Serialize)]
struct Document<'a> {
    #[serde(serialize_with = "display")]
    id: JobId,
    status: &'static str,
    route: &'a str,
    method: &'a str,
    #[serde(serialize_with = "display")]
    created_at: Timestamp,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "display_some"
    )]
    started_at: Option<Timestamp>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "display_some"
    )]
    finished_at: Option<Timestamp>,
    attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    progress: Option<ProgressDoc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response: Option<ResponseDoc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorDoc>,
    #[serde(
        rename = "resourceLocation",
        skip_serializing_if = "Option::is_none",
        serialize_with = "display_some"
    )]
    resource_location: Option<JobUrl<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    webhook: Option<WebhookDoc>,
    links: Links<'a>,
}

#[derive(Serialize)]
struct WebhookDoc {
    url: String,
    state: &'static str,
    attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_error: Option<String>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "display_some"
    )]
    next_attempt_at: Option<Timestamp>,
}

impl WebhookDoc {
    fn of(hook: &Webhook) -> WebhookDoc {
        let d = hook.delivery();
        WebhookDoc {
            url: hook.target.shown(),
            state: d.state.as_str(),
            attempts: d.attempts,
            last_status: d.last_status,
            last_error: d.last_error,
            next_attempt_at: d.next_attempt_at.map(Timestamp),
        }
    }
}

/// What a webhook carries: the job document as it ended, without the
/// webhook's own delivery state, so every attempt sends the same bytes.
pub(crate) fn payload(jobs: &Jobs, job: &Job) -> Bytes {
    let mut doc = document(jobs, job);
    doc.webhook = None;
    Bytes::from(serde_json::to_vec(&doc).expect("a job document always serializes"))
}

#[derive(Serialize)]
struct ProgressDoc {
    percent: u8,
    estimated: bool,
}

#[derive(Serialize)]
struct ResponseDoc {
    status: u16,
    bytes: u64,
}

#[derive(Serialize)]
struct ErrorDoc {
    #[serde(rename = "type")]
    type_uri: String,
    title: &'static str,
    detail: String,
}

#[derive(Serialize)]
struct Links<'a> {
    #[serde(rename = "self", serialize_with = "display")]
    self_: JobUrl<'a>,
    #[serde(serialize_with = "display")]
    result: JobUrl<'a>,
    #[serde(serialize_with = "display")]
    cancel: JobUrl<'a>,
}

/// `{prefix}/{id}{suffix}`, written when serialized.
struct JobUrl<'a> {
    prefix: &'a str,
    id: JobId,
    suffix: &'static str,
}

impl std::fmt::Display for JobUrl<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}{}", self.prefix, self.id, self.suffix)
    }
}

/// RFC 3339 in whole seconds, UTC: `2026-11-21T10:00:00Z`.
struct Timestamp(SystemTime);

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&humantime::format_rfc3339_seconds(self.0), f)
    }
}

fn display<T: std::fmt::Display, S: serde::Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(value)
}

fn display_some<T: std::fmt::Display, S: serde::Serializer>(
    value: &Option<T>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(v) => s.collect_str(v),
        None => s.serialize_none(),
    }
}

fn document<'a>(jobs: &'a Jobs, job: &'a Job) -> Document<'a> {
    let url = |suffix| JobUrl {
        prefix: &jobs.url_prefix,
        id: job.id,
        suffix,
    };
    let error = job.failure.map(|f| {
        let p = f.problem();
        ErrorDoc {
            type_uri: p.type_uri(),
            title: p.title,
            detail: p.detail,
        }
    });
    Document {
        id: job.id,
        status: job.status.as_str(),
        route: &job.route,
        method: job.method.as_str(),
        created_at: Timestamp(job.created_at),
        started_at: job.started_at.map(Timestamp),
        finished_at: job.finished_at.map(Timestamp),
        attempts: job.attempts,
        progress: progress(jobs, job),
        response: job.response.map(|r| ResponseDoc {
            status: r.status,
            bytes: r.bytes,
        }),
        error,
        resource_location: job.has_result().then(|| url("/result")),
        webhook: job.webhook.as_deref().map(WebhookDoc::of),
        links: Links {
            self_: url(""),
            result: url("/result"),
            cancel: url(""),
        },
    }
}

/// Measured from the response when its length is known, else estimated from
/// the route's history; absent when there is nothing to go on.
fn progress(jobs: &Jobs, job: &Job) -> Option<ProgressDoc> {
    if job.status != JobStatus::Running {
        return None;
    }
    if let Some(percent) = jobs.progress_of(job.id).and_then(|p| p.percent()) {
        return Some(ProgressDoc {
            percent,
            estimated: false,
        });
    }
    let expected = jobs.route(&job.route)?.stats.expected()?;
    let elapsed = SystemTime::now()
        .duration_since(job.started_at?)
        .unwrap_or_default();
    Some(ProgressDoc {
        percent: estimated_percent(expected, elapsed),
        estimated: true,
    })
}
