//! Requests on async routes: read whole into a job's submission, then
//! answered `202`, or, on `auto` routes, with the backend's answer when it
//! comes within the wait.

use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderValue, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, Request, Response};
use hyper::body::Incoming;

use super::job_api::{self, Api};
use crate::body::{collect_limited, Body, BodyError, IdleTimeout};
use crate::callback::target::{Target, TargetError};
use crate::delivery::Webhook;
use crate::error::GatewayError;
use crate::header_block::HeaderBlock;
use crate::headers::Origin;
use crate::headers::{self, Peer};
use crate::jobs::idempotency::Idempotency;
use crate::jobs::model::BackendRequest;
use crate::jobs::{owner, Submission};
use crate::prefer::{self, PREFERENCE_APPLIED};
use crate::priority;
use crate::route::Route;

const CALLBACK_URL: HeaderName = HeaderName::from_static("callback-url");

/// A request on an async route, about to become a job.
pub(super) struct Submitter<'a> {
    pub(super) api: Api,
    pub(super) route: &'a Arc<Route>,
    pub(super) peer: &'a Peer,
    pub(super) body_idle_timeout: Duration,
}

impl Submitter<'_> {
    /// The job is accepted and the client gets `202` at once.
    pub(super) async fn accept(
        &self,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, GatewayError> {
        let submission = self.read(req, true).await?;
        let (job, _) = self.api.jobs().submit(self.route, submission).await?;
        Ok(job_api::accepted(&self.api, &job))
    }

    /// An `auto` route, or `Prefer: respond-async, wait=N`: the job is
    /// accepted, and if it finishes within the wait (the route's, or the
    /// client's `Prefer: wait` within the route's `max_wait`) its result is
    /// the answer, as a proxy would have given it, and the job is
    /// forgotten; otherwise the same job goes on behind a `202`.
    /// `Preference-Applied` names the wait, and `respond-async` when the
    /// client asked for it and got a `202`.
    pub(super) async fn accept_or_answer(
        &self,
        req: Request<Incoming>,
        preferred_wait: Option<u64>,
        respond_async: bool,
    ) -> Result<Response<Body>, GatewayError> {
        let config = &self.route.config;
        let wait = preferred_wait
            .map_or(config.sync_wait, Duration::from_secs)
            .min(config.max_wait);
        // The webhook is held while the client waits: an answer in time
        // makes it pointless.
        let submission = self.read(req, false).await?;
        let keyed = submission.idempotency.is_some();
        let (job, mut changes) = self.api.jobs().submit(self.route, submission).await?;
        // A closed channel also means finished: the sender goes last.
        let finished = tokio::time::timeout(wait, changes.wait_for(|s| s.is_terminal()))
            .await
            .is_ok();
        let mut response = if finished {
            let response = job_api::result(&self.api, job.id, None).await;
            // A keyed job stays, so a repeat of the request gets the same answer.
            if !keyed {
                self.api.jobs().discard(job.id).await;
            }
            response.unwrap_or_else(GatewayError::into_response)
        } else {
            self.api.jobs().arm_webhook(&job).await;
            job_api::accepted(&self.api, &job)
        };
        if preferred_wait.is_some() {
            let went_async = respond_async && !finished;
            response.headers_mut().insert(
                PREFERENCE_APPLIED,
                prefer::wait_applied(wait.as_secs(), went_async),
            );
        }
        Ok(response)
    }

    /// Reads the whole request (the job outlives the client's connection)
    /// into what the backend will receive. A bad idempotency key or callback,
    /// or a declared length over the limit, is refused before the body is
    /// read. `armed`: the webhook, if any, is sent when the job ends.
    async fn read(&self, req: Request<Incoming>, armed: bool) -> Result<Submission, GatewayError> {
        let route = self.route;
        let limit = route.config.max_body;
        if headers::content_length(req.headers()).is_some_and(|n| n > limit) {
            return Err(GatewayError::Body(BodyError::TooLarge { limit }));
        }
        let (mut parts, body) = req.into_parts();
        let credentials = owner::credentials(&parts.headers, &route.config.bind_headers);
        let priority = route
            .config
            .priority_header
            .then(|| priority::urgency(&parts.headers))
            .flatten()
            .unwrap_or(route.config.priority);
        let scope = Idempotency::scope(&parts.headers, &route.name, credentials.as_deref())?;
        let webhook = self
            .callback(&parts.headers)
            .await?
            .map(|target| Arc::new(Webhook::new(target, armed)));
        let framed = parts.headers.contains_key(CONTENT_LENGTH)
            || parts.headers.contains_key(TRANSFER_ENCODING);
        let body = collect_limited(
            IdleTimeout::new(body, self.body_idle_timeout),
            limit,
            |_| {},
        )
        .await
        .map_err(GatewayError::Body)?;
        let authority = parts.uri.authority().map(|a| a.as_str());
        headers::forward_request(&mut parts.headers, self.peer, parts.version, authority);
        // The body is sent whole, so it is framed afresh by its real length.
        parts.headers.remove(CONTENT_LENGTH);
        if framed || !body.is_empty() {
            parts
                .headers
                .insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
        }
        // Copied, not sliced: the parsed URI shares the connection's read buffer.
        let path = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let idempotency = scope.map(|scope| Idempotency {
            scope,
            fingerprint: Idempotency::fingerprint(&parts.method, path, &body),
        });
        let origin = Origin::of(&parts.headers);
        let request = BackendRequest {
            path: PathAndQuery::try_from(path).expect("a parsed path parses again"),
            method: parts.method,
            headers: HeaderBlock::pack(&parts.headers),
            body,
        };
        Ok(Submission {
            request,
            priority,
            credentials,
            idempotency,
            webhook,
            origin,
        })
    }

    /// Where this job's webhook goes: the request's `Callback-Url` if its
    /// host is allowed and stands only for acceptable addresses, else the
    /// route's fixed `callback_url`.
    async fn callback(&self, headers: &HeaderMap) -> Result<Option<Target>, GatewayError> {
        let config = &self.route.config;
        let Some(value) = headers.get(CALLBACK_URL) else {
            return Ok(config.callback_url.clone());
        };
        // A config with an allow-list always has webhooks.
        let (Some(hosts), Some(webhooks)) = (&config.callback_hosts, self.api.jobs().webhooks())
        else {
            return Err(GatewayError::BadCallback(TargetError::NotAccepted));
        };
        let url = value
            .to_str()
            .map_err(|_| GatewayError::BadCallback(TargetError::Invalid))?;
        let target = webhooks
            .check(url, hosts)
            .await
            .map_err(GatewayError::BadCallback)?;
        Ok(Some(target))
    }
}
