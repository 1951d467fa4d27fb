//! An upstream: how it is dialled, and its connections, pooled per worker.

mod pool;

use std::cell::Cell;
use std::sync::Arc;

use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::uri::PathAndQuery;
use http::{Request, Response, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use tower::ServiceExt;

use crate::body::{Body, BodyError, BoxError};
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

pub(crate) use pool::UpstreamBody;

pub(crate) struct Upstream {
    pub(crate) config: UpstreamConfig,
    dialer: Dialer,
    /// One pool per worker: a connection's socket is registered with the
    /// runtime that opened it, so sharing pools across workers would hand
    /// every request's I/O to another thread and back.
    pools: Arc<pool::Pools>,
    /// Until the response head, or the failure, of every request sent;
    /// kept by name across reloads.
    pub(crate) duration: Arc<Histogram>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error("could not connect")]
    Connect(#[source] BoxError),
    #[cfg(feature = "tls")]
    #[error("its TLS certificate was refused: {why}")]
    Certificate {
        why: String,
        #[source]
        source: BoxError,
    },
    #[error("no response within {0:?}")]
    Timeout(std::time::Duration),
    /// The client's body failed while it streamed: the client's fault.
    #[error("the client's request body failed")]
    ClientBody(#[source] BodyError),
    #[error("the exchange failed")]
    Failed(#[source] hyper::Error),
    #[error("the response's framing is broken: {0}")]
    BrokenFraming(&'static str),
}

/// How a new connection is made: plain HTTP takes no detour through a TLS
/// connector.
enum Dialer {
    Plain(HttpConnector),
    #[cfg(feature = "tls")]
    Tls(hyper_rustls::HttpsConnector<HttpConnector>),
}

impl Dialer {
    async fn dial(&self, uri: Uri) -> Result<pool::Io, BoxError> {
        Ok(match self {
            Dialer::Plain(connector) => Box::new(connector.clone().oneshot(uri).await?),
            #[cfg(feature = "tls")]
            Dialer::Tls(connector) => Box::new(connector.clone().oneshot(uri).await?),
        })
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
        let dialer = Dialer::Plain(connector.clone());
        #[cfg(feature = "tls")]
        let dialer = if config.scheme == http::uri::Scheme::HTTPS {
            let mut connector = connector;
            connector.enforce_http(false);
            // The pool speaks HTTP/1.1 to every upstream, so ALPN offers only it.
            Dialer::Tls(
                hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(crate::tls::client_config(&config.extra_roots))
                    .https_only()
                    .enable_http1()
                    .wrap_connector(connector),
            )
        } else {
            dialer
        };
        Upstream {
            pools: pool::Pools::new(workers, config.pool_idle_timeout),
            config,
            dialer,
            duration,
        }
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
        req: Request<Body>,
        timeout: std::time::Duration,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let started = tokio::time::Instant::now();
        let uri = req.uri().clone();
        let dial = || self.dialer.dial(uri);
        let answer = self.pools.send(req, dial, started + timeout).await;
        self.duration.observe(started.elapsed());
        match answer {
            Err(pool::SendError::TimedOut) => Err(UpstreamError::Timeout(timeout)),
            // Dropped with its connection, which is never pooled again.
            Ok(response) => match broken_framing(response.headers()) {
                None => Ok(response),
                Some(why) => Err(UpstreamError::BrokenFraming(why)),
            },
            Err(pool::SendError::Connect(e)) => {
                #[cfg(feature = "tls")]
                if let Some(why) = crate::tls::certificate_refused(&*e) {
                    return Err(UpstreamError::Certificate { why, source: e });
                }
                Err(UpstreamError::Connect(e))
            }
            Err(pool::SendError::Failed(e)) => match BodyError::find_in(&e) {
                Some(BodyError::Idle(after)) => {
                    Err(UpstreamError::ClientBody(BodyError::Idle(*after)))
                }
                Some(BodyError::TooLarge { limit }) => {
                    Err(UpstreamError::ClientBody(BodyError::TooLarge {
                        limit: *limit,
                    }))
                }
                Some(_) => Err(UpstreamError::ClientBody(BodyError::Read(Box::new(e)))),
                None => Err(UpstreamError::Failed(e)),
            },
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
