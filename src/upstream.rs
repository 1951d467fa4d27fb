//! An upstream: its pooled HTTP client, and the concurrency limit and
//! bounded queue that keep jobs from overrunning the backend.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use http::uri::PathAndQuery;
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::body::{Body, BodyError};
use crate::config::UpstreamConfig;

pub struct Upstream {
    pub config: UpstreamConfig,
    client: Client<HttpConnector, Body>,
    limit: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("could not connect")]
    Connect(#[source] hyper_util::client::legacy::Error),
    #[error("no response within {0:?}")]
    Timeout(std::time::Duration),
    #[error("the client's request body stalled")]
    ClientBodyStalled(#[source] hyper_util::client::legacy::Error),
    #[error("the exchange failed")]
    Failed(#[source] hyper_util::client::legacy::Error),
}

/// A job's place at an upstream: running, or waiting in its bounded queue.
pub enum Admission {
    Running(OwnedSemaphorePermit),
    Waiting(QueueSlot),
}

/// One of `max_queue` places, given back when dropped.
pub struct QueueSlot(Arc<AtomicUsize>);

impl Drop for QueueSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Upstream {
    pub fn new(config: UpstreamConfig) -> Upstream {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(config.pool_idle_timeout)
            // A request hyper saw fail on a pooled connection is never sent
            // again behind the client's back: a POST must reach the backend once.
            .retry_canceled_requests(false)
            .build(connector);
        Upstream {
            limit: Arc::new(Semaphore::new(config.max_concurrency)),
            waiting: Arc::default(),
            config,
            client,
        }
    }

    /// The backend URI for a request's path and query.
    pub fn uri_for(&self, path_and_query: Option<&PathAndQuery>) -> Uri {
        let pq = path_and_query.map_or("/", PathAndQuery::as_str);
        let pq = if self.config.path_prefix.is_empty() {
            PathAndQuery::try_from(pq)
        } else {
            PathAndQuery::try_from(format!("{}{pq}", self.config.path_prefix))
        };
        Uri::builder()
            .scheme(self.config.scheme.clone())
            .authority(self.config.authority.clone())
            .path_and_query(pq.expect("a valid path stays valid behind a valid prefix"))
            .build()
            .expect("scheme, authority and path make a URI")
    }

    /// Sends a request and waits up to `timeout` for the response head.
    pub async fn send(
        &self,
        req: Request<Body>,
        timeout: std::time::Duration,
    ) -> Result<Response<Incoming>, UpstreamError> {
        match tokio::time::timeout(timeout, self.client.request(req)).await {
            Err(_) => Err(UpstreamError::Timeout(timeout)),
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) if e.is_connect() => Err(UpstreamError::Connect(e)),
            Ok(Err(e)) if matches!(BodyError::find_in(&e), Some(BodyError::Idle(_))) => {
                Err(UpstreamError::ClientBodyStalled(e))
            }
            Ok(Err(e)) => Err(UpstreamError::Failed(e)),
        }
    }

    /// Admits a job now if a request slot is free, else into the queue;
    /// `None` when the queue is full.
    pub fn admit(&self) -> Option<Admission> {
        if let Ok(permit) = Arc::clone(&self.limit).try_acquire_owned() {
            return Some(Admission::Running(permit));
        }
        let max = self.config.max_queue;
        self.waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(Admission::Waiting(QueueSlot(Arc::clone(&self.waiting))))
    }

    /// Waits for a request slot; the semaphore is FIFO, so the queue is too.
    pub async fn permit(&self) -> OwnedSemaphorePermit {
        Arc::clone(&self.limit)
            .acquire_owned()
            .await
            .expect("the upstream semaphore is never closed")
    }
}
