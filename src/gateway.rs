//! The service hyper runs: what to do with each request.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{HeaderValue, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, Request, Response};
use hyper::body::Incoming;

use crate::body::{collect_limited, Body, IdleTimeout};
use crate::config::{Config, Mode, ServerConfig};
use crate::error::GatewayError;
use crate::error_chain::Chain;
use crate::header_block::HeaderBlock;
use crate::headers;
use crate::jobs::idempotency::Idempotency;
use crate::jobs::model::BackendRequest;
use crate::jobs::store::Store;
use crate::jobs::{api, owner, Jobs, Submission};
use crate::prefer::{self, Preferences, PREFERENCE_APPLIED};
use crate::proxy;
use crate::route::Route;
use crate::route_table::RouteTable;
use crate::upstream::Upstream;
use crate::webhook::target::{SystemResolver, Target, TargetError};
use crate::webhook::{Webhook, Webhooks};

const RESPOND_ASYNC: HeaderValue = HeaderValue::from_static("respond-async");
const CALLBACK_URL: HeaderName = HeaderName::from_static("callback-url");

/// Everything a request needs, built once at start-up.
pub(crate) struct Shared {
    server: ServerConfig,
    table: RouteTable,
    routes: Vec<Arc<Route>>,
    default_upstream: Option<Arc<Upstream>>,
    pub(crate) jobs: Arc<Jobs>,
}

impl Shared {
    pub(crate) fn new(config: Config, store: Store) -> Shared {
        let workers = config.server.workers;
        let upstreams: Vec<Arc<Upstream>> = config
            .upstreams
            .into_iter()
            .map(|u| Arc::new(Upstream::new(u, workers)))
            .collect();
        let routes: Vec<Arc<Route>> = config
            .routes
            .into_iter()
            .map(|r| {
                Arc::new(Route {
                    name: r.name.as_str().into(),
                    upstream: Arc::clone(&upstreams[r.upstream]),
                    config: r,
                    stats: Default::default(),
                })
            })
            .collect();
        let url_prefix = format!(
            "{}{}",
            config.server.public_base_url.as_deref().unwrap_or(""),
            config.server.jobs_path
        );
        let webhooks = config.webhooks.secret.clone().map(|secret| {
            Arc::new(Webhooks::new(
                config.webhooks,
                secret,
                Arc::new(SystemResolver),
            ))
        });
        let jobs = Arc::new(Jobs::new(store, &routes, url_prefix, webhooks));
        jobs.start();
        Shared {
            table: config.route_table,
            default_upstream: config.default_upstream.map(|i| Arc::clone(&upstreams[i])),
            server: config.server,
            routes,
            jobs,
        }
    }

    async fn handle(&self, req: Request<Incoming>, remote: SocketAddr) -> Response<Body> {
        // What the request line needs is captured only when it will be written.
        let logged = tracing::enabled!(tracing::Level::INFO).then(|| {
            (
                tokio::time::Instant::now(),
                req.method().clone(),
                req.uri().path().to_owned(),
            )
        });
        let response = match self.dispatch(req, remote).await {
            Ok(response) => response,
            Err(e) => {
                if e.is_failure() {
                    tracing::warn!(error = %Chain(&e), "request failed");
                } else {
                    tracing::debug!(error = %Chain(&e), "request refused");
                }
                e.into_response()
            }
        };
        if let Some((started, method, path)) = logged {
            tracing::info!(
                %remote,
                %method,
                path,
                status = response.status().as_u16(),
                micros = started.elapsed().as_micros() as u64,
                "request"
            );
        }
        response
    }

    async fn dispatch(
        &self,
        req: Request<Incoming>,
        remote: SocketAddr,
    ) -> Result<Response<Body>, GatewayError> {
        let path = req.uri().path();
        if let Some(rest) = path.strip_prefix(self.server.jobs_path.as_str()) {
            if rest.is_empty() || rest.starts_with('/') {
                return api::serve(&self.jobs, &req, rest).await;
            }
        }
        let Some(route) = self.table.find(req.method(), path).map(|i| &self.routes[i]) else {
            return match &self.default_upstream {
                Some(upstream) => self.forward(upstream, req, remote).await,
                None => Err(GatewayError::NoRoute),
            };
        };
        match route.config.mode {
            Mode::Async => self.submit(route, req, remote).await,
            Mode::Passthrough => self.forward(&route.upstream, req, remote).await,
            Mode::Prefer | Mode::Auto => {
                let prefs = Preferences::of(req.headers());
                if prefs.respond_async {
                    let mut response = self.submit(route, req, remote).await?;
                    response
                        .headers_mut()
                        .insert(PREFERENCE_APPLIED, RESPOND_ASYNC);
                    Ok(response)
                } else if route.config.mode == Mode::Auto {
                    self.submit_and_wait(route, req, remote, prefs.wait).await
                } else {
                    self.forward(&route.upstream, req, remote).await
                }
            }
        }
    }

    async fn forward(
        &self,
        upstream: &Upstream,
        req: Request<Incoming>,
        remote: SocketAddr,
    ) -> Result<Response<Body>, GatewayError> {
        proxy::forward(upstream, req, remote, self.server.body_idle_timeout).await
    }

    /// An async route: the job is accepted and the client gets `202` at once.
    async fn submit(
        &self,
        route: &Arc<Route>,
        req: Request<Incoming>,
        remote: SocketAddr,
    ) -> Result<Response<Body>, GatewayError> {
        let submission = self.buffer(route, req, remote, true).await?;
        let (job, _) = self.jobs.submit(route, submission).await?;
        Ok(api::accepted(&self.jobs, &job))
    }

    /// An `auto` route: the job is accepted, and if it finishes within the
    /// wait (the route's, or the client's `Prefer: wait` within the route's
    /// maximum) its result is the answer, as a proxy would have given it, and
    /// the job is forgotten; otherwise the same job goes on behind a `202`.
    async fn submit_and_wait(
        &self,
        route: &Arc<Route>,
        req: Request<Incoming>,
        remote: SocketAddr,
        preferred_wait: Option<u64>,
    ) -> Result<Response<Body>, GatewayError> {
        let wait = preferred_wait
            .map_or(route.config.sync_wait, Duration::from_secs)
            .min(route.config.max_wait);
        // The webhook is held while the client waits: an answer in time
        // makes it pointless.
        let submission = self.buffer(route, req, remote, false).await?;
        let keyed = submission.idempotency.is_some();
        let (job, mut changes) = self.jobs.submit(route, submission).await?;
        // A closed channel also means finished: the sender goes last.
        let finished = tokio::time::timeout(wait, changes.wait_for(|s| s.is_terminal()))
            .await
            .is_ok();
        let mut response = if finished {
            let response = api::result(&self.jobs, job.id, None).await;
            // A keyed job stays, so a repeat of the request gets the same answer.
            if !keyed {
                self.jobs.discard(job.id).await;
            }
            response.unwrap_or_else(GatewayError::into_response)
        } else {
            self.jobs.arm_webhook(&job).await;
            api::accepted(&self.jobs, &job)
        };
        if preferred_wait.is_some() {
            response
                .headers_mut()
                .insert(PREFERENCE_APPLIED, prefer::wait_applied(wait.as_secs()));
        }
        Ok(response)
    }

    /// Reads the whole request (the job outlives the client's connection)
    /// into what the backend will receive. A bad idempotency key or callback,
    /// or a declared length over the limit, is refused before the body is
    /// read. `armed`: the webhook, if any, is sent when the job ends.
    async fn buffer(
        &self,
        route: &Route,
        req: Request<Incoming>,
        remote: SocketAddr,
        armed: bool,
    ) -> Result<Submission, GatewayError> {
        let limit = route.config.max_body;
        if content_length(req.headers()).is_some_and(|n| n > limit) {
            return Err(GatewayError::BodyTooLarge { limit });
        }
        let (mut parts, body) = req.into_parts();
        let credentials = owner::credentials(&parts.headers, &route.config.bind_headers);
        let scope = Idempotency::scope(&parts.headers, &route.name, credentials.as_deref())?;
        let webhook = self
            .callback(route, &parts.headers)
            .await?
            .map(|target| Arc::new(Webhook::new(target, armed)));
        let framed = parts.headers.contains_key(CONTENT_LENGTH)
            || parts.headers.contains_key(TRANSFER_ENCODING);
        let body = collect_limited(
            IdleTimeout::new(body, self.server.body_idle_timeout),
            limit,
            |_| {},
        )
        .await
        .map_err(GatewayError::Body)?;
        let authority = parts.uri.authority().map(|a| a.as_str());
        headers::forward_request(&mut parts.headers, remote.ip(), parts.version, authority);
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
        let request = BackendRequest {
            path: PathAndQuery::try_from(path).expect("a parsed path parses again"),
            method: parts.method,
            headers: HeaderBlock::pack(&parts.headers),
            body,
        };
        Ok(Submission {
            request,
            credentials,
            idempotency,
            webhook,
        })
    }

    /// Where this job's webhook goes: the request's `Callback-Url` if its
    /// host is allowed and stands only for acceptable addresses, else the
    /// route's fixed `callback_url`.
    async fn callback(
        &self,
        route: &Route,
        headers: &HeaderMap,
    ) -> Result<Option<Target>, GatewayError> {
        let Some(value) = headers.get(CALLBACK_URL) else {
            return Ok(route.config.callback_url.clone());
        };
        // A config with an allow-list always has webhooks.
        let (Some(hosts), Some(webhooks)) = (&route.config.callback_hosts, &self.jobs.webhooks)
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

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// One connection's view of the gateway, as a tower service so layers can
/// wrap it; it never fails, because every error has become a response.
#[derive(Clone)]
pub(crate) struct GatewayService {
    pub(crate) shared: Arc<Shared>,
    pub(crate) remote: SocketAddr,
}

impl tower::Service<Request<Incoming>> for GatewayService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let shared = Arc::clone(&self.shared);
        let remote = self.remote;
        Box::pin(async move { Ok(shared.handle(req, remote).await) })
    }
}
