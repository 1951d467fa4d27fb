//! The admin listener: liveness, readiness, metrics and the dashboard for
//! the operator, on an address of its own so that none of it is ever
//! reachable through the public port.

mod dashboard;
mod exposition;
mod process;
mod upstreams;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, HOST, WWW_AUTHENTICATE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::accept;
use crate::app::{Control, Report};
use crate::config::AdminToken;
use crate::defaults;
use crate::error_chain::Chain;

/// What the admin endpoints read: the app's report, and whether it is
/// draining; and what they may change.
pub(crate) struct Admin {
    report: Report,
    control: Control,
    /// What every endpoint but the probes and metrics asks for, if set.
    token: Option<AdminToken>,
    /// The public listener's port, for the dashboard's links to jobs.
    public_port: u16,
    draining: AtomicBool,
}

pub(super) type Reply = Response<Full<Bytes>>;

impl Admin {
    pub(crate) fn new(report: Report, public_port: u16, token: Option<AdminToken>) -> Admin {
        Admin {
            control: report.control(),
            token,
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
            let (stream, peer) = tokio::select! {
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
                    async move { Ok::<_, Infallible>(admin.answer(&req, peer).await) }
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

    async fn answer(&self, req: &Request<Incoming>, peer: SocketAddr) -> Reply {
        let path = req.uri().path();
        // Probes and scrapers carry no token; nor does a browser opening
        // the page, which holds no data (it sends the token with what it
        // fetches).
        if !matches!(path, "/healthz" | "/readyz" | "/metrics" | "/") {
            if let Some(refused) = self.refuses(req, peer) {
                return refused;
            }
        }
        let read = req.method() == Method::GET || req.method() == Method::HEAD;
        match path {
            "/healthz" if read => text(StatusCode::OK, "ok\n"),
            "/readyz" if read => self.readiness().await,
            "/metrics" if read => self.metrics(req).await,
            "/" if read => page(),
            "/jobs" if read => self.jobs(req).await,
            "/upstreams" if read => upstreams::list(&self.report),
            "/advisor" if read => {
                let (suggestions, untracked) = self.report.suggestions();
                json(&Advice {
                    suggestions,
                    untracked,
                })
            }
            "/healthz" | "/readyz" | "/metrics" | "/" | "/jobs" | "/upstreams" | "/advisor" => {
                text(StatusCode::METHOD_NOT_ALLOWED, "GET or HEAD\n")
            }
            _ => match path.strip_prefix("/upstreams/") {
                Some(rest) if req.method() == Method::POST => {
                    upstreams::act(&self.report, &self.control, rest).await
                }
                Some(_) => text(StatusCode::METHOD_NOT_ALLOWED, "POST\n"),
                None => text(StatusCode::NOT_FOUND, "not found\n"),
            },
        }
    }

    fn refuses(&self, req: &Request<Incoming>, peer: SocketAddr) -> Option<Reply> {
        let presented = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let (status, why) = refusal(self.token.as_ref(), req.method(), presented, peer.ip())?;
        let mut refused = text(status, why);
        if status == StatusCode::UNAUTHORIZED {
            refused.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"asyncgate admin\""),
            );
        }
        Some(refused)
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
        let store = self.report.store_bytes().await;
        let store_up = store.is_ok();
        let store_bytes = store.ok().flatten();
        let openmetrics = req
            .headers()
            .get(ACCEPT)
            .and_then(|a| a.to_str().ok())
            .is_some_and(|a| a.contains("application/openmetrics-text"));
        let (body, content_type) =
            exposition::render(&self.report, store_up, store_bytes, openmetrics);
        reply(StatusCode::OK, content_type, Bytes::from(body))
    }
}

/// Whether a request for an endpoint that shows jobs or changes things is
/// refused, and why. With a token, whoever does not present it gets `401`.
/// Without one, what changes things is refused (`403`) to any peer but a
/// loopback one.
fn refusal(
    token: Option<&AdminToken>,
    method: &Method,
    authorization: Option<&str>,
    peer: IpAddr,
) -> Option<(StatusCode, &'static str)> {
    match token {
        Some(token) => {
            let presented = authorization
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim);
            if presented.is_some_and(|p| token.admits(p.as_bytes())) {
                return None;
            }
            Some((
                StatusCode::UNAUTHORIZED,
                "Authorization: Bearer <[admin] token> needed\n",
            ))
        }
        None if *method == Method::POST && !peer.to_canonical().is_loopback() => Some((
            StatusCode::FORBIDDEN,
            "without [admin] token, only a loopback peer may change things\n",
        )),
        None => None,
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

/// `value` as a `200` JSON answer.
pub(super) fn json(value: &impl serde::Serialize) -> Reply {
    let body = serde_json::to_vec(value).expect("what the admin listener answers serializes");
    reply(StatusCode::OK, "application/json", Bytes::from(body))
}

/// What `GET /advisor` answers.
#[derive(serde::Serialize)]
struct Advice {
    suggestions: Vec<crate::advisor::Suggestion>,
    /// Requests on paths past the 1,000 kept, not counted.
    untracked: u64,
}

pub(super) fn text(status: StatusCode, body: &str) -> Reply {
    let body = Bytes::copy_from_slice(body.as_bytes());
    reply(status, "text/plain; charset=utf-8", body)
}

/// Every admin answer is about now: none may be cached.
pub(super) fn reply(status: StatusCode, content_type: &'static str, body: Bytes) -> Reply {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_token_only_loopback_peers_change_things() {
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        let remote: IpAddr = "192.0.2.10".parse().unwrap();
        assert_eq!(refusal(None, &Method::POST, None, local), None);
        assert_eq!(refusal(None, &Method::POST, None, mapped), None);
        assert_eq!(refusal(None, &Method::GET, None, remote), None);
        assert_eq!(
            refusal(None, &Method::POST, None, remote).map(|r| r.0),
            Some(StatusCode::FORBIDDEN)
        );
    }

    #[test]
    fn with_a_token_everyone_presents_it() {
        let token = AdminToken::new("an-admin-token-of-length");
        let remote: IpAddr = "192.0.2.10".parse().unwrap();
        let ask = |auth| refusal(Some(&token), &Method::POST, auth, remote).map(|r| r.0);
        assert_eq!(ask(Some("Bearer an-admin-token-of-length")), None);
        assert_eq!(
            ask(Some("Bearer an-admin-token-of-lengtH")),
            Some(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(
            ask(Some("an-admin-token-of-length")),
            Some(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(ask(None), Some(StatusCode::UNAUTHORIZED));
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(
            refusal(Some(&token), &Method::GET, None, local).map(|r| r.0),
            Some(StatusCode::UNAUTHORIZED),
            "loopback presents it too"
        );
    }
}
