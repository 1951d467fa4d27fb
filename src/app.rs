//! The application a connection talks to: built once from the config (the
//! composition root), it tells each request where it goes: the job API, an
//! async route, or the proxy.

mod job_api;
mod openapi;
mod opening;
mod report;
mod request_line;
mod routing;
mod submit;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use http::header::HeaderValue;
use http::{Request, Response};
use hyper::body::Incoming;

use crate::advisor::Ended;
use crate::body::Body;
use crate::config::{Config, ConfigError, Mode, RequestBody, ServerConfig};
use crate::cors;
use crate::defaults;
use crate::error::GatewayError;
use crate::error_chain::Chain;
use crate::headers::{self, Peer, X_REQUEST_ID};
use crate::jobs::store::{OpenError, StoreError};
use crate::jobs::DrainReport;
use crate::metrics::RouteMetrics;
use crate::prefer::{Preferences, PREFERENCE_APPLIED};
use crate::proxy;
use crate::route::Route;
use crate::sync::lock;
use crate::telemetry;
use crate::tunnel::Handover;
use crate::upstream::{self, Upstream, UpstreamError};
pub(crate) use opening::JobsSlot;
use report::PseudoRoutes;
pub(crate) use report::{Control, Report};
use request_line::{RequestLine, UpstreamTime};
pub(crate) use routing::Routing;
use routing::{Fixed, Kept, Reloadable};

const RESPOND_ASYNC: HeaderValue = HeaderValue::from_static("respond-async");

/// What a reload did.
pub(crate) struct Reloaded {
    pub(crate) routes: usize,
    /// The sections that changed in the file but only a restart applies.
    pub(crate) needs_restart: Vec<&'static str>,
}

/// Why the app could not be built: its store could not be opened.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BuildError {
    #[error(transparent)]
    Disk(#[from] OpenError),
    #[error("cannot use the Redis store")]
    Redis(#[from] StoreError),
    #[cfg(feature = "kafka")]
    #[error("cannot start the Kafka producer")]
    Kafka(#[from] rdkafka::error::KafkaError),
}

/// Everything a request needs: built at start-up, its routing replaced
/// whole by a reload.
pub(crate) struct App {
    server: ServerConfig,
    /// The config file, read again on reload.
    path: PathBuf,
    /// What only a restart changes, as last read, to tell what a reload
    /// could not apply.
    fixed: Mutex<Fixed>,
    /// One per worker, each swapped by a reload.
    live: Arc<[ArcSwap<Routing>]>,
    kept: Kept,
    jobs: Arc<JobsSlot>,
    store_max_bytes: u64,
    /// `{jobs_path}/openapi.json`, made once.
    openapi: bytes::Bytes,
    /// `cors_origins`, unless empty.
    cors: Option<cors::Cors>,
    /// What signs and checks bound jobs' events links.
    capabilities: Arc<job_api::Capabilities>,
    documents: Arc<job_api::Documents>,
    /// The certificate the public listener serves, if it serves HTTPS.
    #[cfg(feature = "tls")]
    served: Option<Arc<crate::tls::Served>>,
    pseudo: Arc<PseudoRoutes>,
    /// Which proxied paths should be made async, and past what p99.
    advisor: Arc<crate::advisor::Advisor>,
    advise_over: std::time::Duration,
    vitals: Arc<report::Vitals>,
}

/// Where a request goes.
enum Destination<'a> {
    /// The job API; the path's part after `jobs_path` starts at this byte.
    JobApi(usize),
    Route(&'a Arc<Route>),
    Default(&'a Upstream, RequestBody),
    Nowhere,
    /// A path with dot segments or an encoded `/` that would reach a
    /// configured route: refused.
    Unclean,
}

impl Destination<'_> {
    /// Whether the gateway itself answers here (the job API, a route that
    /// makes jobs), so CORS is its to answer.
    fn answered_here(&self) -> bool {
        match self {
            Destination::JobApi(_) => true,
            Destination::Route(route) => route.config.mode != Mode::Passthrough,
            Destination::Unclean => true,
            Destination::Default(..) | Destination::Nowhere => false,
        }
    }

    /// The methods it takes, as `Access-Control-Allow-Methods` lists them.
    fn methods(&self) -> String {
        match self {
            Destination::Route(route) => match &route.config.methods {
                Some(methods) => methods
                    .iter()
                    .map(http::Method::as_str)
                    .collect::<Vec<_>>()
                    .join(", "),
                None => "GET, HEAD, POST, PUT, PATCH, DELETE".to_owned(),
            },
            _ => "GET, HEAD, DELETE".to_owned(),
        }
    }
}

/// How CORS applies to a request the gateway answers itself.
enum Cors {
    /// A preflight, and whether its origin is allowed.
    Preflight(Option<cors::Allowed>),
    /// A request from an allowed origin.
    Allowed(cors::Allowed),
}

/// Under `jobs_path`: the job API's description, not a job.
const OPENAPI: &str = "/openapi.json";

impl App {
    /// Builds, in this order, the store, the upstreams (their connection
    /// pools), the routes over them, the webhook sender, and the jobs over
    /// all of them. `upgrade`: this process replaces one that still holds
    /// the store; its jobs are made once it is let go. Must run inside a
    /// tokio runtime.
    pub(crate) fn build(config: Config, upgrade: bool) -> Result<App, BuildError> {
        let store = match opening::open(&config.store) {
            Ok(store) => Some(store),
            Err(e) if upgrade && opening::held_elsewhere(&e) => None,
            Err(e) => return Err(e),
        };
        let store_config = config.store.clone();
        let server = config.server.clone();
        let cors = cors::Cors::new(&server.cors_origins);
        let capabilities = Arc::new(job_api::Capabilities::new(
            server.events_link_secret.as_ref().map(|s| s.key().to_vec()),
            server.events_link_ttl,
        ));
        let path = config.path.clone();
        #[cfg(feature = "tls")]
        let served = config
            .tls
            .as_ref()
            .map(|key| crate::tls::Served::new(Arc::clone(key)));
        let store_max_bytes = config.store.max_bytes;
        let advise_over = config.advise_over;
        #[cfg(feature = "kafka")]
        let config_kafka = config.kafka.clone();
        let (reloadable, fixed) = Reloadable::split(config);
        let kept = Kept::default();
        let (routing, webhooks) = kept.build(reloadable, server.workers);
        let makings = opening::Makings {
            urls: crate::jobs::JobUrls {
                prefix: format!(
                    "{}{}",
                    server.public_base_url.as_deref().unwrap_or(""),
                    server.jobs_path
                ),
                links: Arc::clone(&capabilities),
            },
            #[cfg(feature = "kafka")]
            kafka: config_kafka
                .as_ref()
                .map(|k| crate::kafka::Kafka::new(k).map(Arc::new))
                .transpose()?,
        };
        let jobs = match store {
            Some(store) => JobsSlot::open(crate::jobs::Jobs::new(
                store,
                &routing.routes,
                makings.urls,
                webhooks,
                #[cfg(feature = "kafka")]
                makings.kafka,
            )),
            None => JobsSlot::later(
                store_config,
                makings,
                routing.routes.clone(),
                webhooks,
                server.drain_timeout + opening::HANDOVER_MARGIN,
            ),
        };
        let openapi = bytes::Bytes::from(openapi::document(&server.jobs_path).to_string());
        let live = (0..server.workers.max(1))
            .map(|_| ArcSwap::from_pointee(routing.clone()))
            .collect();
        let vitals = Arc::new(report::Vitals::new());
        Ok(App {
            server,
            path,
            fixed: Mutex::new(fixed),
            live,
            kept,
            jobs,
            store_max_bytes,
            openapi,
            cors,
            capabilities,
            documents: Arc::new(job_api::Documents::new(defaults::DOCUMENT_CACHE_BYTES)),
            #[cfg(feature = "tls")]
            served,
            pseudo: Arc::default(),
            advisor: Arc::default(),
            advise_over,
            vitals,
        })
    }

    /// Reads the config file again and puts its routes, upstreams and
    /// webhooks in force for new requests and jobs; what is under way
    /// finishes as it began. A file that does not validate changes
    /// nothing. Must run inside a tokio runtime.
    pub(crate) fn reload(&self) -> Result<Reloaded, ConfigError> {
        let loaded = Config::load(&self.path);
        self.vitals.reloaded(loaded.is_ok());
        let config = loaded?;
        #[cfg(feature = "tls")]
        let tls = config.tls.clone();
        let (reloadable, fixed) = Reloadable::split(config);
        #[cfg_attr(not(feature = "tls"), allow(unused_mut))]
        let mut needs_restart = {
            let mut before = lock(&self.fixed);
            let changed = routing::changed(&before, &fixed);
            *before = fixed;
            changed
        };
        // The certificate is read again in place; turning HTTPS on or off
        // changes what the listener is.
        #[cfg(feature = "tls")]
        match (&self.served, tls) {
            (Some(served), Some(key)) => served.replace(key),
            (None, None) => {}
            _ => needs_restart.push("server.tls_cert"),
        }
        let (routing, webhooks) = self.kept.build(reloadable, self.server.workers);
        self.jobs.reconfigure(&routing.routes, webhooks);
        let routes = routing.routes.len();
        for live in self.live.iter() {
            live.store(Arc::new(routing.clone()));
        }
        Ok(Reloaded {
            routes,
            needs_restart,
        })
    }

    /// What accepts the public listener's TLS connections, if it serves HTTPS.
    #[cfg(feature = "tls")]
    pub(crate) fn tls_acceptor(&self) -> Option<tokio_rustls::TlsAcceptor> {
        self.served.as_ref().map(crate::tls::Served::acceptor)
    }

    /// The routes and upstreams in force, this worker's copy.
    pub(crate) fn routing(&self) -> Arc<Routing> {
        self.live[upstream::current_worker() % self.live.len()].load_full()
    }

    /// What the admin listener reads: counts, limits, readiness, recent jobs.
    pub(crate) fn report(&self) -> Report {
        Report {
            jobs: Arc::clone(&self.jobs),
            live: Arc::clone(&self.live),
            pseudo: Arc::clone(&self.pseudo),
            advisor: Arc::clone(&self.advisor),
            advise_over: self.advise_over,
            store_max_bytes: self.store_max_bytes,
            public_base_url: self.server.public_base_url.as_deref().map(Arc::from),
            vitals: Arc::clone(&self.vitals),
        }
    }

    /// Counts a client connection open until the guard is dropped.
    pub(crate) fn connection_opened(&self) -> report::OpenConnection {
        report::OpenConnection::new(&self.vitals)
    }

    /// How forwarding sees a client connected from `addr`.
    pub(crate) fn peer(&self, addr: SocketAddr, tls: bool) -> Peer {
        let ip = addr.ip().to_canonical();
        let trusted = self.server.trusted_proxies.iter().any(|n| n.contains(&ip));
        Peer::new(addr, tls, trusted)
    }

    fn destination<'a>(
        &self,
        routing: &'a Routing,
        method: &http::Method,
        path: &str,
    ) -> Destination<'a> {
        if let Some(rest) = path.strip_prefix(self.server.jobs_path.as_str()) {
            if rest.is_empty() || rest.starts_with('/') {
                return Destination::JobApi(self.server.jobs_path.len());
            }
        }
        if !crate::route_table::clean(path) && routing.reached_uncleanly(method, path) {
            return Destination::Unclean;
        }
        match routing.find(method, path) {
            Some(route) => Destination::Route(route),
            None => match &routing.default_upstream {
                Some(upstream) => Destination::Default(upstream, routing.default_body),
                None => Destination::Nowhere,
            },
        }
    }

    /// The job API with the URLs `req` should see: under `public_base_url`
    /// when it is set; else absolute, from the scheme the client used and
    /// the host it named (a trusted proxy's `X-Forwarded-Proto`/`-Host`
    /// count), as the Microsoft REST API guidelines want; relative only
    /// when the request names no usable host.
    async fn api(
        &self,
        req: &Request<Incoming>,
        peer: &Peer,
    ) -> Result<job_api::Api, GatewayError> {
        let jobs = match self.jobs.get() {
            Some(jobs) => Arc::clone(jobs),
            // Boxed: only while an upgrade waits for the store, and kept
            // out of every request's future.
            None => Arc::clone(
                Box::pin(self.jobs.wait())
                    .await
                    .map_err(GatewayError::Store)?,
            ),
        };
        let jobs_path = &self.server.jobs_path;
        let prefix = match &self.server.public_base_url {
            Some(base) => format!("{base}{jobs_path}"),
            None => match peer.host(req) {
                Some(host) => format!("{}://{host}{jobs_path}", peer.scheme(req.headers())),
                None => jobs_path.clone(),
            },
        };
        Ok(job_api::Api::new(
            jobs,
            prefix,
            Arc::clone(&self.capabilities),
            Arc::clone(&self.documents),
        ))
    }

    /// Where a request goes and, if browsers may use what is there, how
    /// CORS applies: a preflight is answered for the method it asks about.
    fn destination_and_cors<'a>(
        &self,
        routing: &'a Routing,
        req: &Request<Incoming>,
    ) -> (Destination<'a>, Option<Cors>) {
        let (method, path) = (req.method(), req.uri().path());
        let Some(origins) = &self.cors else {
            return (self.destination(routing, method, path), None);
        };
        if let Some(asked) = cors::preflight(method, req.headers()) {
            let destination = self.destination(routing, &asked, path);
            if destination.answered_here() {
                let allowed = origins.allows(req.headers());
                return (destination, Some(Cors::Preflight(allowed)));
            }
        }
        let destination = self.destination(routing, method, path);
        let allowed = destination
            .answered_here()
            .then(|| origins.allows(req.headers()))
            .flatten();
        (destination, allowed.map(Cors::Allowed))
    }

    /// The job API's OpenAPI document.
    fn openapi(&self, method: &http::Method) -> Result<Response<Body>, GatewayError> {
        if method != http::Method::GET && method != http::Method::HEAD {
            return Err(GatewayError::MethodNotAllowed { allow: "GET, HEAD" });
        }
        let mut response = Response::new(crate::body::full(self.openapi.clone()));
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        Ok(response)
    }

    /// Where the request is counted, and that route's name.
    fn metrics_of<'a>(&'a self, destination: &Destination<'a>) -> (&'a RouteMetrics, &'a str) {
        match destination {
            Destination::JobApi(_) => (&self.pseudo.job_api, report::JOB_API_ROUTE),
            Destination::Route(route) => (&route.metrics, &route.name),
            Destination::Default(..) => (&self.pseudo.default, report::DEFAULT_ROUTE),
            Destination::Nowhere | Destination::Unclean => (&self.pseudo.none, report::NO_ROUTE),
        }
    }

    /// Stops accepting jobs and lets those in hand finish until `deadline`.
    pub(crate) async fn drain(&self, deadline: tokio::time::Instant) -> DrainReport {
        self.jobs.drain(deadline).await
    }

    /// Answers one request; every error has become a response.
    pub(crate) async fn handle(
        &self,
        mut req: Request<Incoming>,
        peer: &Peer,
        handover: &Handover,
    ) -> Response<Body> {
        let started = std::time::Instant::now();
        let request_id = headers::request_id(req.headers_mut());
        let mut span = telemetry::Span::server(&mut req);
        // What the request line needs is captured only when it will be written.
        let logged = RequestLine::capture(&req);
        let routing = self.routing();
        let (destination, cors) = self.destination_and_cors(&routing, &req);
        let (metrics, route) = self.metrics_of(&destination);
        let answered = match &cors {
            Some(Cors::Preflight(allowed)) => Ok(match allowed {
                Some(allowed) => allowed.preflight(req.headers(), &destination.methods()),
                None => cors::refused_preflight(),
            }),
            _ => self.dispatch(destination, req, peer, handover).await,
        };
        let mut response = match answered {
            Ok(response) => response,
            Err(e) => {
                if let Some(why) = e.rejection() {
                    metrics.rejected(why);
                }
                if e.is_failure() {
                    tracing::warn!(error = %Chain(&e), "request failed");
                } else {
                    tracing::debug!(error = %Chain(&e), "request refused");
                }
                e.into_response()
            }
        };
        if let Some(Cors::Allowed(allowed)) = &cors {
            allowed.expose(&mut response);
        }
        let took = started.elapsed();
        span.route(route);
        span.status(response.status().as_u16());
        metrics.requests.count(response.status());
        metrics.request_duration.observe(took);
        if let Some(line) = logged {
            line.write(&request_id, peer, route, &response, took);
        }
        // A backend that answers with an id of its own (or a kept result
        // with the submission's) is not contradicted.
        response
            .headers_mut()
            .entry(X_REQUEST_ID)
            .or_insert(request_id);
        response
    }

    async fn dispatch(
        &self,
        destination: Destination<'_>,
        mut req: Request<Incoming>,
        peer: &Peer,
        handover: &Handover,
    ) -> Result<Response<Body>, GatewayError> {
        let route = match destination {
            Destination::JobApi(start) => {
                let rest = req.uri().path()[start..].to_owned();
                if rest == OPENAPI {
                    return self.openapi(req.method());
                }
                return Box::pin(async {
                    let api = self.api(&req, peer).await?;
                    job_api::serve(&api, &mut req, &rest, handover).await
                })
                .await;
            }
            Destination::Default(upstream, body) => {
                return self
                    .forward(upstream, true, req, peer, body, handover)
                    .await;
            }
            Destination::Nowhere => return Err(GatewayError::NoRoute),
            Destination::Unclean => return Err(GatewayError::BadPath),
            Destination::Route(route) => route,
        };
        // Only a request that becomes a job needs the job API's URLs.
        let submitter = async |req: &Request<Incoming>| {
            Ok::<_, GatewayError>(submit::Submitter {
                api: self.api(req, peer).await?,
                route,
                peer,
                body_idle_timeout: self.server.body_idle_timeout,
            })
        };
        // The job API's and a submission's futures (0.8-3 KB) are boxed,
        // so that a proxied request's future does not carry them.
        match route.config.mode {
            Mode::Async => Box::pin(async { submitter(&req).await?.accept(req).await }).await,
            Mode::Passthrough => {
                let body = route.config.request_body();
                self.forward(&route.upstream, false, req, peer, body, handover)
                    .await
            }
            Mode::Prefer | Mode::Auto => {
                let prefs = Preferences::of(req.headers());
                if prefs.respond_async && prefs.wait.is_none() {
                    let mut response =
                        Box::pin(async { submitter(&req).await?.accept(req).await }).await?;
                    response
                        .headers_mut()
                        .insert(PREFERENCE_APPLIED, RESPOND_ASYNC);
                    Ok(response)
                } else if prefs.respond_async || route.config.mode == Mode::Auto {
                    // Asked with `wait` (OData 4.01): up to N seconds, then
                    // asynchronously. Unasked, on an `auto` route: up to the
                    // client's `wait` or the route's `sync_wait`.
                    let asked = prefs.respond_async;
                    Box::pin(async {
                        submitter(&req)
                            .await?
                            .accept_or_answer(req, prefs.wait, asked)
                            .await
                    })
                    .await
                } else {
                    let body = route.config.request_body();
                    self.forward(&route.upstream, false, req, peer, body, handover)
                        .await
                }
            }
        }
    }

    /// Proxies `req` to `upstream`; the advisor counts it when `advise`
    /// (a request no route names: a configured route is the operator's
    /// choice already, and a block for its path would overlap it).
    async fn forward(
        &self,
        upstream: &Upstream,
        advise: bool,
        mut req: Request<Incoming>,
        peer: &Peer,
        body: RequestBody,
        handover: &Handover,
    ) -> Result<Response<Body>, GatewayError> {
        let watch = advise.then(|| {
            self.advisor
                .watch(req.method(), req.uri().path(), &upstream.config.name)
        });
        let receiving = proxy::Receiving {
            body,
            idle: self.server.body_idle_timeout,
            spill_dir: &self.server.body_temp_path,
        };
        let tunnel = proxy::Tunnel {
            handover,
            idle: self.server.tunnel_idle_timeout,
        };
        let mut span = telemetry::Span::client_of(req.headers_mut(), "proxy");
        let started = std::time::Instant::now();
        // Boxed: each async level keeps its arguments beside its callee's
        // future, so the exchange's kilobytes would be carried, and copied
        // as each level starts, by every level above it.
        let mut forwarded = Box::pin(proxy::forward(upstream, req, peer, receiving, tunnel)).await;
        let took = started.elapsed();
        match &forwarded {
            Ok(response) => span.status(response.status().as_u16()),
            Err(e) => span.fail(&e.to_string()),
        }
        if let Some(watch) = watch {
            watch.ended(Ended::of(&forwarded), took);
        }
        if let Ok(response) = &mut forwarded {
            response.extensions_mut().insert(UpstreamTime(took));
        }
        forwarded.map_err(|source| match source {
            UpstreamError::ClientBody(e) => GatewayError::Body(e),
            source => GatewayError::Upstream {
                upstream: upstream.config.name.clone(),
                source,
            },
        })
    }
}
