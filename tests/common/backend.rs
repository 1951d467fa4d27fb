//! The test backend: a real HTTP server on `127.0.0.1:0` whose requests
//! the test holds and releases, and which records what it received.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;

use super::within;

/// What the backend received.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub method: Method,
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// When its head arrived.
    pub at: std::time::Instant,
}

struct BackendState {
    received: Mutex<Vec<Received>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    started: AtomicUsize,
    started_changed: Notify,
    gate: Semaphore,
    disconnects: AtomicUsize,
    disconnect_changed: Notify,
    /// Requests seen so far per `/flaky/…` path.
    flaky: Mutex<HashMap<String, usize>>,
}

/// A backend on `127.0.0.1:0` whose behaviour each request picks by path:
/// - `/hold/…` waits until the test calls [`Backend::release`], then echoes;
/// - `/stream/{len}` sends half of a `len`-byte body, waits for a release, sends the rest;
/// - `/big/{n}` answers `n` bytes;
/// - `/reset` promises 1000 bytes, sends 10 and breaks the connection;
/// - `/flaky/{n}/…` answers `503` to its first `n` requests, then echoes;
/// - anything else echoes: the request body back, `?status=N` as the
///   status, `?location=URL` as the `Location` header, `?retry_after=N`
///   as `Retry-After`, and in
///   `x-request-seq` which request this was (1 for the first).
///
/// It records every request, the most it served at once, and every request
/// whose client went away before the answer.
pub(crate) struct Backend {
    pub addr: SocketAddr,
    state: Arc<BackendState>,
    task: JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Counts a request as in flight and, if dropped before `done`, as abandoned
/// by its client.
struct InFlight {
    state: Arc<BackendState>,
    done: bool,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.state.in_flight.fetch_sub(1, Ordering::SeqCst);
        if !self.done {
            self.state.disconnects.fetch_add(1, Ordering::SeqCst);
            self.state.disconnect_changed.notify_waiters();
        }
    }
}

type BackendBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

impl Backend {
    pub(crate) async fn start() -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(BackendState {
            received: Mutex::default(),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            started: AtomicUsize::new(0),
            started_changed: Notify::new(),
            gate: Semaphore::new(0),
            disconnects: AtomicUsize::new(0),
            disconnect_changed: Notify::new(),
            flaky: Mutex::default(),
        });
        let st = Arc::clone(&state);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let st = Arc::clone(&st);
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |req| handle(Arc::clone(&st), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Backend { addr, state, task }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Lets `n` held requests answer.
    pub(crate) fn release(&self, n: usize) {
        self.state.gate.add_permits(n);
    }

    /// Waits until `n` requests in all have reached the backend.
    pub(crate) async fn started(&self, n: usize) {
        within(60, &format!("{n} backend requests to start"), async {
            loop {
                let notified = self.state.started_changed.notified();
                if self.state.started.load(Ordering::SeqCst) >= n {
                    return;
                }
                notified.await;
            }
        })
        .await;
    }

    /// Waits until `n` requests in all were abandoned by the gateway.
    pub(crate) async fn disconnects(&self, n: usize) {
        within(10, &format!("{n} backend disconnects"), async {
            loop {
                let notified = self.state.disconnect_changed.notified();
                if self.state.disconnects.load(Ordering::SeqCst) >= n {
                    return;
                }
                notified.await;
            }
        })
        .await;
    }

    pub(crate) fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    pub(crate) fn request_count(&self) -> usize {
        self.state.started.load(Ordering::SeqCst)
    }

    pub(crate) fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }

    pub(crate) fn disconnect_count(&self) -> usize {
        self.state.disconnects.load(Ordering::SeqCst)
    }
}

async fn handle(
    state: Arc<BackendState>,
    req: Request<Incoming>,
) -> Result<Response<BackendBody>, Infallible> {
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let mut guard = InFlight {
        state: Arc::clone(&state),
        done: false,
    };
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    state.received.lock().unwrap().push(Received {
        method: parts.method.clone(),
        uri: parts.uri.to_string(),
        headers: parts.headers.clone(),
        body: body.clone(),
        at: std::time::Instant::now(),
    });
    let seq = state.started.fetch_add(1, Ordering::SeqCst) + 1;
    state.started_changed.notify_waiters();

    let path = parts.uri.path().to_owned();
    let query: HashMap<String, String> = parts
        .uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let mut status = query
        .get("status")
        .and_then(|s| s.parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    if let Some(rest) = path.strip_prefix("/flaky/") {
        let failures: usize = rest.split('/').next().unwrap().parse().unwrap();
        let mut seen = state.flaky.lock().unwrap();
        let count = seen.entry(path.clone()).or_default();
        *count += 1;
        if *count <= failures {
            status = StatusCode::SERVICE_UNAVAILABLE;
        }
    }

    if path.starts_with("/hold") {
        state.gate.acquire().await.unwrap().forget();
    }
    let response = if let Some(n) = path.strip_prefix("/big/") {
        let n: usize = n.parse().unwrap();
        full_response(status, Bytes::from(vec![b'x'; n]))
    } else if let Some(n) = path.strip_prefix("/stream/") {
        let n: usize = n.parse().unwrap();
        let (mut tx, body) = http_body_util::channel::Channel::<Bytes, std::io::Error>::new(1);
        let st = Arc::clone(&state);
        tokio::spawn(async move {
            let _ = tx.send_data(Bytes::from(vec![b'a'; n / 2])).await;
            st.gate.acquire().await.unwrap().forget();
            let _ = tx.send_data(Bytes::from(vec![b'b'; n - n / 2])).await;
        });
        Response::builder()
            .status(status)
            .header("content-length", n)
            .body(body.boxed())
            .unwrap()
    } else if path == "/reset" {
        let (mut tx, body) = http_body_util::channel::Channel::<Bytes, std::io::Error>::new(1);
        tokio::spawn(async move {
            let _ = tx
                .send(Frame::data(Bytes::from_static(b"0123456789")))
                .await;
            tx.abort(std::io::Error::other("backend breaks the connection"));
        });
        Response::builder()
            .status(status)
            .header("content-length", 1000)
            .body(body.boxed())
            .unwrap()
    } else {
        let mut r = full_response(status, body);
        r.headers_mut()
            .insert("x-backend-method", parts.method.as_str().parse().unwrap());
        r.headers_mut().insert("x-custom", "kept".parse().unwrap());
        r.headers_mut().insert("x-request-seq", seq.into());
        r.headers_mut().append("set-cookie", "a=1".parse().unwrap());
        r.headers_mut().append("set-cookie", "b=2".parse().unwrap());
        if let Some(ct) = parts.headers.get("content-type") {
            r.headers_mut().insert("content-type", ct.clone());
        }
        if let Some(location) = query.get("location") {
            r.headers_mut()
                .insert("location", location.parse().unwrap());
        }
        if let Some(seconds) = query.get("retry_after") {
            r.headers_mut()
                .insert("retry-after", seconds.parse().unwrap());
        }
        r
    };
    guard.done = true;
    Ok(response)
}

fn full_response(status: StatusCode, body: Bytes) -> Response<BackendBody> {
    let mut r = Response::new(Full::new(body).map_err(|never| match never {}).boxed());
    *r.status_mut() = status;
    r
}
