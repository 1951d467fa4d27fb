//! The job resources over HTTP: the status monitor `{jobs_path}/{id}` (`GET`, long-poll
//! with `?wait=N`, Server-Sent Events, `DELETE`), the result `…/result`, and
//! `…/poll` for clients that read any non-`202` from `Location` as final.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{
    HeaderValue, ACCEPT, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, RETRY_AFTER,
};
use http::{HeaderMap, HeaderName, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;

use crate::body::{self, Body, BoxError, ReplayBody};
use crate::config::LocationStyle;
use crate::defaults;
use crate::error::GatewayError;
use crate::jobs::document::Document;
use crate::jobs::id::JobId;
use crate::jobs::model::{Job, JobStatus};
use crate::jobs::store::Cancel;
use crate::jobs::Jobs;
use crate::tunnel::Handover;

mod documents;
mod websocket;

pub(crate) use crate::jobs::links::Capabilities;
use crate::jobs::links::Purpose;
pub(crate) use documents::Documents;

const OPERATION_LOCATION: HeaderName = HeaderName::from_static("operation-location");
const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");
const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");

/// The job API as one request sees it: its URLs start with the prefix that
/// request should see (absolute, from the configured `public_base_url` or
/// the request's own scheme and host, or relative). What is not a URL is
/// asked of [`Api::jobs`].
#[derive(Clone)]
pub(crate) struct Api {
    jobs: Arc<Jobs>,
    prefix: String,
    capabilities: Arc<Capabilities>,
    documents: Arc<Documents>,
}

impl Api {
    pub(crate) fn new(
        jobs: Arc<Jobs>,
        prefix: String,
        capabilities: Arc<Capabilities>,
        documents: Arc<Documents>,
    ) -> Api {
        Api {
            jobs,
            prefix,
            capabilities,
            documents,
        }
    }

    pub(crate) fn jobs(&self) -> &Jobs {
        &self.jobs
    }

    /// The status monitor's URL.
    pub(crate) fn url(&self, id: JobId) -> String {
        format!("{}/{id}", self.prefix)
    }

    /// The job's document; a bound job's carries its events link, since
    /// only its owner gets to read it.
    pub(crate) fn document<'a>(&'a self, job: &'a Job) -> Document<'a> {
        let document = self.jobs.document_at(job, &self.prefix);
        match job.owner {
            Some(_) => {
                let token = self.capabilities.issue(Purpose::Events, job.id);
                document.with_events_link(format!("{}?access={token}", self.url(job.id)))
            }
            None => document,
        }
    }

    /// Who may follow a job's events: the holder of a valid `access` token
    /// for it, or else whoever the request's credentials show.
    fn asker(&self, id: JobId, req_query: Option<&str>, headers: &HeaderMap) -> Asker {
        match access_token(req_query) {
            Some(token) if self.capabilities.admits(Purpose::Events, id, token) => {
                Asker::Capability
            }
            _ => Asker::Credentials(headers.clone()),
        }
    }
}

/// The `access` token a link carries in its query, if any.
fn access_token(query: Option<&str>) -> Option<&str> {
    query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|kv| kv.strip_prefix("access="))
}

/// Who is following a job's events.
#[derive(Clone)]
pub(crate) enum Asker {
    /// Whoever the request's headers show.
    Credentials(HeaderMap),
    /// The holder of an events link for this job.
    Capability,
}

impl Asker {
    pub(crate) async fn find(&self, api: &Api, id: JobId) -> Result<Job, GatewayError> {
        Ok(match self {
            Asker::Credentials(headers) => api.jobs().find(id, headers).await?,
            Asker::Capability => api.jobs().find_for_capability(id).await?,
        })
    }
}

/// Serves a request whose path is `{jobs_path}{rest}`; a WebSocket it
/// opens is left in `handover` for the connection to drive.
pub(crate) async fn serve<B>(
    api: &Api,
    req: &mut Request<B>,
    rest: &str,
    handover: &Handover,
) -> Result<Response<Body>, GatewayError> {
    if req.method() == Method::GET && crate::tunnel::requested(req).is_some() {
        let rest = rest.strip_prefix('/').ok_or(GatewayError::JobNotFound)?;
        let id = JobId::parse(rest).ok_or(GatewayError::JobNotFound)?;
        let asker = api.asker(id, req.uri().query(), req.headers());
        return websocket::open(api, id, req, asker, handover).await;
    }
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
            let asker = api.asker(id, req.uri().query(), headers);
            events(api, id, asker, headers).await
        }
        (Resource::Status, &Method::GET | &Method::HEAD) => {
            let asked = MonitorQuery::parse(req.uri().query())?;
            status(api, id, asked, headers).await
        }
        (Resource::Status, &Method::DELETE) => cancel(api, id, headers).await,
        (Resource::Status, _) => Err(GatewayError::MethodNotAllowed {
            allow: "GET, HEAD, DELETE",
        }),
        (Resource::Result, &Method::GET | &Method::HEAD) => {
            // A result link (a webhook's `result_url`) stands for the
            // owner's credentials.
            let linked = access_token(req.uri().query())
                .is_some_and(|t| api.capabilities.admits(Purpose::Result, id, t));
            result(api, id, (!linked).then_some(headers)).await
        }
        (Resource::Poll, &Method::GET | &Method::HEAD) => poll(api, id, headers).await,
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

/// The `202 Accepted` for a job just submitted. `Location` is what people,
/// `curl -L` and plain HTTP libraries follow; `Operation-Location` is what
/// LRO clients (azure-core, `@azure/core-lro`) poll when it is present. On
/// a `redirect_when_done` route they name two monitors of the job: the one
/// that redirects to the result once it is finished, and one that never
/// does, since LRO clients take a `303` from their monitor as an error.
/// On a `202`'s response: the job it accepted, for the request's log line.
#[derive(Clone, Copy)]
pub(crate) struct AcceptedJob(pub(crate) JobId);

pub(crate) fn accepted(api: &Api, job: &Job) -> Response<Body> {
    let url = api.url(job.id);
    let (location, operation) = match api.jobs().with_route(&job.route, Monitor::of) {
        Some(Monitor::Poll) => (format!("{url}/poll"), url),
        Some(Monitor::Redirecting) => (url.clone(), format!("{url}?{NO_REDIRECT}")),
        Some(Monitor::Plain) | None => (url.clone(), url),
    };
    let mut response = document_response(api, job);
    *response.status_mut() = StatusCode::ACCEPTED;
    let headers = response.headers_mut();
    let header = |u: String| HeaderValue::try_from(u).expect("job URLs are valid header values");
    headers.insert(LOCATION, header(location));
    headers.insert(OPERATION_LOCATION, header(operation));
    response.extensions_mut().insert(AcceptedJob(job.id));
    response
}

/// What a route's `Location` points at, and whether it redirects.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Monitor {
    /// The JSON status monitor, which always answers its document.
    Plain,
    /// The JSON status monitor, which answers `303` to the result once the
    /// job is finished: the seed pattern, for `redirect_when_done`.
    Redirecting,
    /// `…/poll` (`location = "poll"`): `202` until finished.
    Poll,
}

impl Monitor {
    fn of(route: &crate::route::Route) -> Monitor {
        match (route.config.location, route.config.redirect_when_done) {
            (LocationStyle::Poll, _) => Monitor::Poll,
            (LocationStyle::Status, true) => Monitor::Redirecting,
            (LocationStyle::Status, false) => Monitor::Plain,
        }
    }
}

/// The query that makes a status monitor never redirect: the
/// `Operation-Location` of a `redirect_when_done` route's jobs.
const NO_REDIRECT: &str = "redirect=false";

/// `{id}/poll`: while the job is unfinished `202` with `Retry-After` and its
/// document; then what `{id}/result` answers, with OData's `AsyncResult`
/// naming its status, or a `303` to it on routes with `redirect_when_done`.
async fn poll(api: &Api, id: JobId, headers: &HeaderMap) -> Result<Response<Body>, GatewayError> {
    let job = api.jobs().find(id, headers).await?;
    if !job.status.is_terminal() {
        let mut response = document_response(api, &job);
        *response.status_mut() = StatusCode::ACCEPTED;
        return Ok(response);
    }
    if redirects_to_result(api, &job) {
        return Ok(see_result(api, id));
    }
    let mut response = result(api, id, Some(headers))
        .await
        .unwrap_or_else(GatewayError::into_response);
    let status = HeaderValue::from(response.status().as_u16());
    response.headers_mut().insert(ASYNC_RESULT, status);
    Ok(response)
}

/// OData 4.01: the final status of an asynchronously executed request, on
/// the status monitor's last answer.
const ASYNC_RESULT: HeaderName = HeaderName::from_static("asyncresult");

/// A finished job with a result, on a route with `redirect_when_done`.
fn redirects_to_result(api: &Api, job: &Job) -> bool {
    job.has_result()
        && api
            .jobs()
            .with_route(&job.route, |r| r.config.redirect_when_done)
            .unwrap_or(false)
}

fn see_result(api: &Api, id: JobId) -> Response<Body> {
    let mut response = Response::new(body::empty());
    *response.status_mut() = StatusCode::SEE_OTHER;
    let location = HeaderValue::try_from(format!("{}/result", api.url(id)))
        .expect("job URLs are valid header values");
    response.headers_mut().insert(LOCATION, location);
    response
}

/// What a status monitor's query asks for.
#[derive(Debug, PartialEq, Eq)]
struct MonitorQuery {
    /// `?wait=N`: how long the request may wait for the job to change,
    /// capped so a held request stays below common proxy idle timeouts.
    wait: Duration,
    /// `?redirect=false` turns off a `redirect_when_done` route's `303`.
    redirect: bool,
}

impl MonitorQuery {
    fn parse(query: Option<&str>) -> Result<MonitorQuery, GatewayError> {
        let mut asked = MonitorQuery {
            wait: Duration::ZERO,
            redirect: true,
        };
        for (key, value) in query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .filter_map(|kv| kv.split_once('='))
        {
            match key {
                "wait" => asked.wait = long_poll_wait(value)?,
                "redirect" => {
                    asked.redirect = match value {
                        "true" => true,
                        "false" => false,
                        _ => return Err(GatewayError::BadRedirect),
                    }
                }
                _ => {}
            }
        }
        Ok(asked)
    }
}

fn long_poll_wait(value: &str) -> Result<Duration, GatewayError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(GatewayError::BadWait);
    }
    // A number too large for any integer type still means "as long as you
    // allow": the cap answers it, not a 400.
    let secs = value.parse::<u64>().unwrap_or(u64::MAX);
    Ok(Duration::from_secs(secs).min(defaults::LONG_POLL_MAX))
}

async fn status(
    api: &Api,
    id: JobId,
    asked: MonitorQuery,
    headers: &HeaderMap,
) -> Result<Response<Body>, GatewayError> {
    let mut job = api.jobs().find(id, headers).await?;
    if !asked.wait.is_zero() && !job.status.is_terminal() {
        let seen = job.status;
        // Woken by the job's own state change, not by a timer loop. A
        // change between the lookup and the subscription shows on a second
        // look.
        let mut changes = api.jobs().watch(id, seen);
        job = api.jobs().find(id, headers).await?;
        if job.status == seen {
            let _ = tokio::time::timeout(asked.wait, changes.wait_for(|s| *s != seen)).await;
            job = api.jobs().find(id, headers).await?;
        }
    }
    // Any final state: the result resource then says what happened.
    let redirects = asked.redirect
        && job.status.is_terminal()
        && api.jobs().with_route(&job.route, Monitor::of) == Some(Monitor::Redirecting);
    if redirects {
        return Ok(see_result(api, id));
    }
    Ok(document_response(api, &job))
}

/// The result resource: the stored response replayed, or the problem that
/// stands for it. `headers` are the asking request's, checked against the
/// job's owner; `None` is the gateway asking on the submitter's behalf.
pub(crate) async fn result(
    api: &Api,
    id: JobId,
    headers: Option<&HeaderMap>,
) -> Result<Response<Body>, GatewayError> {
    let (job, stored) = api.jobs().result(id, headers).await?;
    if let Some(stored) = stored {
        // A streamed body has no length of its own to announce.
        let streamed = match &stored.body {
            ReplayBody::File(_, len) => Some(*len),
            ReplayBody::Bytes(_) => None,
        };
        let mut response = Response::new(body::replay(stored.body));
        *response.status_mut() = stored.status;
        *response.headers_mut() = stored.headers.unpack();
        if let Some(len) = streamed {
            response
                .headers_mut()
                .insert(CONTENT_LENGTH, HeaderValue::from(len));
        }
        return Ok(response);
    }
    match (job.status, job.failure) {
        (JobStatus::Canceled, _) => Err(GatewayError::JobCanceled {
            monitor: api.url(id),
        }),
        (JobStatus::Failed, Some(failure)) => Err(GatewayError::JobFailed {
            failure,
            result_limit: api.jobs().with_route(&job.route, |r| r.config.max_result),
        }),
        (status, _) => Err(GatewayError::JobNotFinished {
            status,
            monitor: api.url(id),
            retry_after: api.jobs().retry_after(&job),
        }),
    }
}

async fn cancel(api: &Api, id: JobId, headers: &HeaderMap) -> Result<Response<Body>, GatewayError> {
    match api.jobs().cancel(id, headers).await? {
        Cancel::Canceled(job) | Cancel::AlreadyCanceled(job) => Ok(document_response(api, &job)),
        Cancel::Deleted => {
            let mut response = Response::new(body::empty());
            *response.status_mut() = StatusCode::NO_CONTENT;
            Ok(response)
        }
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
/// each event with `id:` (the change's sequence number) and `event:` (the
/// status), then the stream ends after the last one. A reconnect with
/// `Last-Event-ID` resumes after that change; one that already has the
/// terminal event gets `204`, which tells an EventSource to stop
/// reconnecting. Comment lines keep idle proxies from cutting a stream that
/// waits long.
async fn events(
    api: &Api,
    id: JobId,
    asker: Asker,
    headers: &HeaderMap,
) -> Result<Response<Body>, GatewayError> {
    let job = asker.find(api, id).await?;
    let seen = headers
        .get(LAST_EVENT_ID)
        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    if job.status.is_terminal() && seen.is_some_and(|n| n >= job.sequence()) {
        let mut response = Response::new(body::empty());
        *response.status_mut() = StatusCode::NO_CONTENT;
        return Ok(response);
    }
    let (mut tx, body) = http_body_util::channel::Channel::<Bytes, BoxError>::new(4);
    let api = api.clone();
    tokio::spawn(async move {
        // Each later look is the asker's too.
        let mut job = job;
        let mut sent = seen.unwrap_or(0);
        loop {
            if job.sequence() > sent {
                if tx.send_data(event(&api, &job)).await.is_err() {
                    return; // the client went away
                }
                sent = job.sequence();
            }
            if job.status.is_terminal() {
                return;
            }
            let status = job.status;
            let mut changes = api.jobs().watch(id, status);
            // A change before the subscription shows on this second look.
            job = match asker.find(&api, id).await {
                Ok(j) => j,
                Err(_) => return,
            };
            if job.sequence() > sent {
                continue;
            }
            loop {
                // Woken by the job's state change; heartbeats in between.
                let changed = tokio::time::timeout(
                    defaults::SSE_HEARTBEAT,
                    changes.wait_for(|s| *s != status),
                )
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
            job = match asker.find(&api, id).await {
                Ok(j) => j,
                Err(_) => return,
            };
        }
    });
    let mut response = Response::new(body.boxed_unsync());
    let h = response.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    // Neither a cache nor a buffering proxy (nginx reads X-Accel-Buffering)
    // may hold events back.
    h.insert(
        CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store"),
    );
    h.insert(X_ACCEL_BUFFERING, HeaderValue::from_static("no"));
    Ok(response)
}

const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");
const X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");

fn event(api: &Api, job: &Job) -> Bytes {
    let mut out = format!(
        "id: {}\nevent: {}\ndata: ",
        job.sequence(),
        job.status.as_str()
    )
    .into_bytes();
    out.extend_from_slice(&api.document(job).to_json());
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

fn document_response(api: &Api, job: &Job) -> Response<Body> {
    let json = api
        .documents
        .get_or_write(job, &api.prefix, || api.document(job).to_json());
    let mut response = Response::new(body::full(json));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, APPLICATION_JSON);
    // The status changes under the client's feet: no cache may keep it.
    headers.insert(CACHE_CONTROL, NO_STORE);
    if !job.status.is_terminal() {
        headers.insert(RETRY_AFTER, HeaderValue::from(api.jobs().retry_after(job)));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_is_whole_seconds_capped_however_large() {
        let wait = |q| MonitorQuery::parse(Some(q)).ok().map(|a| a.wait);
        assert_eq!(wait("wait=5"), Some(Duration::from_secs(5)));
        assert_eq!(wait("x=1&wait=0"), Some(Duration::ZERO));
        let huge = "wait=1852020546078619633451008";
        assert_eq!(wait(huge), Some(defaults::LONG_POLL_MAX));
        for bad in ["wait=", "wait=-1", "wait=1.5", "wait=+3", "wait=ten"] {
            assert_eq!(wait(bad), None, "{bad}");
        }
        assert_eq!(
            MonitorQuery::parse(None).ok().map(|a| a.wait),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn only_redirect_false_turns_the_redirect_off() {
        let redirect = |q| MonitorQuery::parse(Some(q)).ok().map(|a| a.redirect);
        assert_eq!(redirect("redirect=false"), Some(false));
        assert_eq!(redirect("wait=3&redirect=false"), Some(false));
        assert_eq!(redirect("redirect=true"), Some(true));
        assert_eq!(redirect("access=x"), Some(true));
        for bad in ["redirect=", "redirect=no", "redirect=0"] {
            assert_eq!(redirect(bad), None, "{bad}");
        }
    }
}
