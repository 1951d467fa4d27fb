//! An upstream: its pooled HTTP clients, one per worker.

use std::cell::Cell;
use std::sync::Arc;

use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::uri::PathAndQuery;
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::{capture_connection, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::{Body, BodyError};
use crate::config::UpstreamConfig;
use crate::metrics::Histogram;

thread_local! {
    /// Which worker this thread is; picks the worker's own client.
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// Marks the current thread as worker `index`.
pub(crate) fn enter_worker(index: usize) {
    WORKER.with(|w| w.set(index));
}

/// The worker this thread is (0 for threads outside the workers).
pub(crate) fn current_worker() -> usize {
    WORKER.with(Cell::get)
}

pub(crate) struct Upstream {
    pub(crate) config: UpstreamConfig,
    /// One pool per worker: a pooled connection is driven by a task on the
    /// runtime that opened it, so sharing pools across workers would hand
    /// every request to another thread and back.
    clients: Vec<Pool>,
    /// Until the response head, or the failure, of every request sent;
    /// kept by name across reloads.
    pub(crate) duration: Arc<Histogram>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error("could not connect")]
    Connect(#[source] hyper_util::client::legacy::Error),
    #[cfg(feature = "tls")]
    #[error("its TLS certificate was refused: {why}")]
    Certificate {
        why: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("no response within {0:?}")]
    Timeout(std::time::Duration),
    /// The client's body failed while it streamed: the client's fault.
    #[error("the client's request body failed")]
    ClientBody(#[source] BodyError),
    #[error("the exchange failed")]
    Failed(#[source] hyper_util::client::legacy::Error),
    #[error("the response's framing is broken: {0}")]
    BrokenFraming(&'static str),
}

/// A worker's connections to the upstream: plain HTTP takes no detour
/// through a TLS connector.
enum Pool {
    Plain(Client<HttpConnector, Body>),
    #[cfg(feature = "tls")]
    Tls(Client<hyper_rustls::HttpsConnector<HttpConnector>, Body>),
}

impl Pool {
    fn request(&self, req: Request<Body>) -> hyper_util::client::legacy::ResponseFuture {
        match self {
            Pool::Plain(client) => client.request(req),
            #[cfg(feature = "tls")]
            Pool::Tls(client) => client.request(req),
        }
    }
}

impl Upstream {
    pub(crate) fn new(
        config: UpstreamConfig,
        workers: usize,
        duration: Arc<Histogram>,
    ) -> Upstream {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.set_nodelay(true);
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(config.pool_idle_timeout)
            // A request hyper saw fail on a pooled connection is never sent
            // again behind the client's back: a POST must reach the backend once.
            .retry_canceled_requests(false);
        #[cfg(feature = "tls")]
        let tls = (config.scheme == http::uri::Scheme::HTTPS).then(|| {
            let mut connector = connector.clone();
            connector.enforce_http(false);
            // The pool speaks HTTP/1.1 to every upstream, so ALPN offers only it.
            hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(crate::tls::client_config(&config.extra_roots))
                .https_only()
                .enable_http1()
                .wrap_connector(connector)
        });
        let clients = (0..workers.max(1))
            .map(|_| {
                #[cfg(feature = "tls")]
                if let Some(tls) = &tls {
                    return Pool::Tls(builder.build(tls.clone()));
                }
                Pool::Plain(builder.build(connector.clone()))
            })
            .collect();
        Upstream {
            config,
            clients,
            duration,
        }
    }

    fn client(&self) -> &Pool {
        &self.clients[current_worker() % self.clients.len()]
    }

    /// The backend URI for a request's path and query.
    pub(crate) fn uri_for(&self, path_and_query: Option<&PathAndQuery>) -> Uri {
        let pq = match (path_and_query, self.config.path_prefix.is_empty()) {
            (Some(pq), true) => pq.clone(),
            (None, true) => PathAndQuery::from_static("/"),
            (pq, false) => {
                let pq = pq.map_or("/", PathAndQuery::as_str);
                PathAndQuery::try_from(format!("{}{pq}", self.config.path_prefix))
                    .expect("a valid path stays valid behind a valid prefix")
            }
        };
        Uri::builder()
            .scheme(self.config.scheme.clone())
            .authority(self.config.authority.clone())
            .path_and_query(pq)
            .build()
            .expect("scheme, authority and path make a URI")
    }

    /// Sends a request and waits up to `timeout` for the response head.
    /// A response whose framing is broken is refused, and its connection
    /// never used again: what follows on it cannot be trusted.
    pub(crate) async fn send(
        &self,
        mut req: Request<Body>,
        timeout: std::time::Duration,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let connection = capture_connection(&mut req);
        let started = tokio::time::Instant::now();
        let answer = tokio::time::timeout(timeout, self.client().request(req)).await;
        self.duration.observe(started.elapsed());
        match answer {
            Err(_) => Err(UpstreamError::Timeout(timeout)),
            Ok(Ok(response)) => match broken_framing(response.headers()) {
                None => Ok(response),
                Some(why) => {
                    if let Some(connected) = connection.connection_metadata().as_ref() {
                        connected.poison();
                    }
                    Err(UpstreamError::BrokenFraming(why))
                }
            },
            Ok(Err(e)) if e.is_connect() => {
                #[cfg(feature = "tls")]
                if let Some(why) = crate::tls::certificate_refused(&e) {
                    return Err(UpstreamError::Certificate { why, source: e });
                }
                Err(UpstreamError::Connect(e))
            }
            Ok(Err(e)) if BodyError::find_in(&e).is_some() => {
                Err(UpstreamError::ClientBody(match BodyError::find_in(&e) {
                    Some(BodyError::Idle(after)) => BodyError::Idle(*after),
                    Some(BodyError::TooLarge { limit }) => BodyError::TooLarge { limit: *limit },
                    _ => BodyError::Read(Box::new(e)),
                }))
            }
            Ok(Err(e)) => Err(UpstreamError::Failed(e)),
        }
    }
}

/// Why a response's framing cannot be trusted (RFC 9112 §6.3), if it cannot.
/// hyper reads a body by `Transfer-Encoding` when both it and
/// `Content-Length` are there, and an unknown coding as "until close"; a
/// proxy passing either on would hand its client a body that does not match
/// its headers, the stuff of response splitting.
fn broken_framing(headers: &http::HeaderMap) -> Option<&'static str> {
    let mut codings = headers.get_all(TRANSFER_ENCODING).iter();
    let first = codings.next()?;
    if headers.contains_key(CONTENT_LENGTH) {
        return Some("Content-Length beside Transfer-Encoding");
    }
    let only_chunked = codings.next().is_none()
        && first
            .to_str()
            .is_ok_and(|v| v.trim().eq_ignore_ascii_case("chunked"));
    (!only_chunked).then_some("a transfer coding other than chunked")
}
