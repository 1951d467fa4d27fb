//! The admin listener: liveness, readiness, metrics and the dashboard for
//! the operator, on an address of its own so that none of it is ever
//! reachable through the public port.

mod dashboard;
mod exposition;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::header::{ACCEPT, CACHE_CONTROL, CONTENT_TYPE, HOST};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::accept;
use crate::app::Report;
use crate::defaults;
use crate::error_chain::Chain;

/// What the admin endpoints read: the app's report, and whether it is
/// draining.
pub(crate) struct Admin {
    report: Report,
    /// The public listener's port, for the dashboard's links to jobs.
    public_port: u16,
    draining: AtomicBool,
}

type Reply = Response<Full<Bytes>>;

impl Admin {
    pub(crate) fn new(report: Report, public_port: u16) -> Admin {
        Admin {
            report,
            public_port,
            draining: AtomicBool::new(false),
        }
    }

    /// From now on, readiness answers `503`: a load balancer stops sending
    /// work while the drain finishes what it has.
    pub(crate) fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Serves until `stop` fires. Connections are few (probes, scrapes, a
    /// browser), so each is served on its own task, HTTP/1.1 only.
    pub(crate) async fn serve(self: Arc<Self>, listener: TcpListener, stop: CancellationToken) {
        loop {
            let (stream, _) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        accept::on_error("admin", e).await;
                        continue;
                    }
                },
                () = stop.cancelled() => return,
            };
            let admin = Arc::clone(&self);
            let stop = stop.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let admin = Arc::clone(&admin);
                    async move { Ok::<_, Infallible>(admin.answer(&req).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(defaults::HEADER_READ_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service);
                tokio::pin!(conn);
                tokio::select! {
                    result = conn.as_mut() => if let Err(e) = result {
                        tracing::debug!(error = %e, "admin connection ended with an error");
                    },
                    () = stop.cancelled() => {},
                }
            });
        }
    }

    async fn answer(&self, req: &Request<Incoming>) -> Reply {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
        }
        match req.uri().path() {
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/readyz" => self.readiness().await,
            "/metrics" => self.metrics(req).await,
            "/" => page(),
            "/jobs" => self.jobs(req).await,
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }

    /// Why the gateway does not take work now, if it does not.
    async fn unready(&self) -> Option<String> {
        if self.draining.load(Ordering::Relaxed) {
            return Some("draining".to_owned());
        }
        let store = self.report.store_bytes().await;
        store
            .err()
            .map(|e| format!("the job store cannot take work: {}", Chain(&e)))
    }

    async fn readiness(&self) -> Reply {
        match self.unready().await {
            None => text(StatusCode::OK, "ready\n"),
            Some(why) => text(StatusCode::SERVICE_UNAVAILABLE, &format!("{why}\n")),
        }
    }

    async fn jobs(&self, req: &Request<Incoming>) -> Reply {
        let filter = match dashboard::Filter::parse(req.uri().query()) {
            Ok(filter) => filter,
            Err(why) => return text(StatusCode::BAD_REQUEST, &format!("{why}\n")),
        };
        // One question to the store answers both.
        let store = self.report.store_bytes().await;
        let ready = store.is_ok() && !self.draining.load(Ordering::Relaxed);
        let store_bytes = store.ok().flatten();
        let jobs = dashboard::listed(&self.report, &filter);
        let routing = self.report.routing();
        let overview = dashboard::overview(
            &self.report,
            &routing,
            self.public_port,
            &jobs,
            ready,
            store_bytes,
        );
        let body = serde_json::to_vec(&overview).expect("the overview always serializes");
        reply(StatusCode::OK, "application/json", Bytes::from(body))
    }

    /// OpenMetrics to a scraper that asks for it, the classic Prometheus
    /// text format to anyone else (curl, older Prometheus).
    async fn metrics(&self, req: &Request<Incoming>) -> Reply {
        let store_bytes = self.report.store_bytes().await.ok().flatten();
        let openmetrics = req
            .headers()
            .get(ACCEPT)
            .and_then(|a| a.to_str().ok())
            .is_some_and(|a| a.contains("application/openmetrics-text"));
        let (body, content_type) = exposition::render(&self.report, store_bytes, openmetrics);
        reply(StatusCode::OK, content_type, Bytes::from(body))
    }
}

/// Asks a running gateway's admin listener for `path` (`/healthz`,
/// `/readyz`) and gives its status code: what a container's health check
/// runs, with no curl in the image.
pub async fn probe(addr: SocketAddr, path: &str) -> Result<u16, String> {
    let exchange = async {
        let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let req = Request::get(path)
            .header(HOST, addr.to_string())
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let response = sender.send_request(req).await.map_err(|e| e.to_string())?;
        Ok(response.status().as_u16())
    };
    tokio::time::timeout(defaults::PROBE_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("no answer within {:?}", defaults::PROBE_TIMEOUT))?
}

fn page() -> Reply {
    let page = Bytes::from_static(dashboard::PAGE.as_bytes());
    reply(StatusCode::OK, "text/html; charset=utf-8", page)
}

fn text(status: StatusCode, body: &str) -> Reply {
    let body = Bytes::copy_from_slice(body.as_bytes());
    reply(status, "text/plain; charset=utf-8", body)
}

/// Every admin answer is about now: none may be cached.
fn reply(status: StatusCode, content_type: &'static str, body: Bytes) -> Reply {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
