//! The integration-test harness: a backend the test controls, a gateway
//! started in-process, an HTTP client, and one bounded wait for everything.
#![allow(dead_code)] // each test binary uses a different part of the harness

mod backend;
pub(crate) mod process;
mod raw;
pub(crate) mod redis;
#[cfg(feature = "tls")]
pub(crate) mod tls;

// Each test binary uses a different part of the harness.
#[allow(unused_imports)]
pub(crate) use backend::{Backend, Received};
#[allow(unused_imports)]
pub(crate) use raw::{RawBackend, RawConnection};

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use asyncgate::{Config, Gateway, RunReport};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A free loopback port for a server the test stops and starts again on
/// the same port (a gateway killed and restarted, Redis or a broker that
/// crashes and comes back). Taken from 10000-19999, below Linux's
/// ephemeral range (32768 and up): while the server is down, a port in
/// that range may be given to any outgoing connection on the machine (a
/// soak makes thousands a second), and the server could not bind it
/// again. Cluster nodes take theirs from 20000 up (see `redis.rs`).
pub(crate) fn steady_port() -> u16 {
    for _ in 0..1000 {
        let port = 10_000 + (uuid::Uuid::new_v4().as_u128() % 10_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 10000-19999");
}

/// The path (and query) of an absolute URL; a path is returned as it is.
pub(crate) fn path_of(url: &str) -> &str {
    match url.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => url,
    }
}

/// Every wait in the tests goes through here: a hang fails the test with
/// what it was waiting for instead of stalling CI.
pub(crate) async fn within<F: Future>(secs: u64, what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(secs), fut).await {
        Ok(out) => out,
        Err(_) => panic!("timed out after {secs}s waiting for {what}"),
    }
}

/// Asks `probe` again and again until it has an answer, for at most `secs`:
/// the one place tests poll, for what nothing announces (a TTL running out,
/// a listener closing, a client library's own polling). A job's state
/// changes are waited for with the job API's long-poll instead.
pub(crate) async fn poll_until<T>(
    secs: u64,
    what: &str,
    mut probe: impl AsyncFnMut() -> Option<T>,
) -> T {
    within(secs, what, async {
        loop {
            if let Some(found) = probe().await {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

/// A directory that removes itself, with everything in it.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new() -> TempDir {
        let path = std::env::temp_dir().join(format!("asyncgate-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `toml` with its store on disk in `dir` unless it names a store kind
/// itself: every test runs on the default, durable store unless it says
/// otherwise. Its admin listener, unless it configures one, is on an
/// ephemeral port, so gateways of parallel tests never collide.
pub(crate) fn on_disk(toml: &str, dir: &Path) -> String {
    let toml = if toml.contains("[admin]") {
        toml.to_owned()
    } else {
        format!("{toml}\n[admin]\nlisten = \"127.0.0.1:0\"\n")
    };
    let store = format!("[store]\nkind = \"disk\"\npath = \"{}\"\n", dir.display());
    if toml.contains("[store]") {
        if toml.contains("\nkind = ") {
            toml
        } else {
            toml.replacen("[store]\n", &store, 1)
        }
    } else {
        format!("{toml}\n{store}")
    }
}

/// A gateway running in this process on `127.0.0.1:0`.
pub(crate) struct TestGateway {
    pub addr: SocketAddr,
    pub admin: Option<SocketAddr>,
    /// Where its store is, removed once the gateway is gone.
    _store: TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<RunReport>>,
}

impl TestGateway {
    /// Starts a gateway from config text; `listen` is forced to an ephemeral port.
    pub(crate) async fn start(toml: &str) -> TestGateway {
        let store = TempDir::new();
        let toml = on_disk(
            &format!("[server]\nlisten = \"127.0.0.1:0\"\n{toml}"),
            &store.0,
        );
        let config = Config::parse(&toml, Path::new("test.toml")).unwrap_or_else(|e| panic!("{e}"));
        let gateway = Gateway::bind(config).await.unwrap();
        let addr = gateway.local_addr();
        let admin = gateway.admin_addr();
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(gateway.run(async {
            let _ = rx.await;
        }));
        TestGateway {
            addr,
            admin,
            _store: store,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// This gateway's URL for `path`, or for the path of an absolute URL
    /// (a `Location`) another gateway may have issued.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path_of(path))
    }

    /// Starts the drain and waits for it; re-raises a panic from the gateway.
    pub(crate) async fn stop(mut self) -> RunReport {
        let _ = self.stop.take().unwrap().send(());
        let task = self.task.take().unwrap();
        match within(30, "the gateway to drain", task).await {
            Ok(report) => report,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// A response read in full.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
            .to_str()
            .unwrap()
    }

    /// Asserts the status, showing the body when it is another.
    pub(crate) fn assert_status(&self, status: u16) {
        assert_eq!(
            self.status.as_u16(),
            status,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
    }

    /// Asserts an RFC 9457 problem with this status and type suffix.
    pub(crate) fn assert_problem(&self, status: u16, kind: &str) {
        self.assert_status(status);
        assert_eq!(self.header("content-type"), "application/problem+json");
        let doc = self.json();
        assert_eq!(doc["status"], status);
        assert_eq!(doc["type"], format!("urn:asyncgate:problem:{kind}"));
        assert!(doc["title"].is_string() && doc["detail"].is_string());
    }
}

#[derive(Clone)]
pub(crate) struct Client {
    inner: HyperClient<HttpConnector, Full<Bytes>>,
}

impl Default for Client {
    fn default() -> Self {
        Client {
            inner: HyperClient::builder(TokioExecutor::new()).build_http(),
        }
    }
}

impl Client {
    pub(crate) async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Reply {
        self.try_send(method, url, headers, body)
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    /// Like [`Client::send`], but a failed exchange is an `Err`, not a panic.
    pub(crate) async fn try_send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<Reply, String> {
        let mut req = Request::builder().method(method).uri(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(body.into())).unwrap();
        within(30, &format!("a response from {url}"), async {
            let res = self.inner.request(req).await.map_err(|e| e.to_string())?;
            let (parts, body) = res.into_parts();
            let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
            Ok(Reply {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        })
        .await
    }

    pub(crate) async fn get(&self, url: &str) -> Reply {
        self.send(Method::GET, url, &[], Bytes::new()).await
    }

    pub(crate) async fn post(&self, url: &str, body: impl Into<Bytes>) -> Reply {
        self.send(Method::POST, url, &[], body).await
    }

    pub(crate) async fn delete(&self, url: &str) -> Reply {
        self.send(Method::DELETE, url, &[], Bytes::new()).await
    }

    /// Waits for a job's status to be `want`, or to be one it cannot turn
    /// into `want`, through the job API's long-poll: each request returns
    /// when the status changes.
    pub(crate) async fn wait_status(&self, status_url: &str, want: &str) -> serde_json::Value {
        self.wait_status_as(status_url, want, &[]).await
    }

    /// Waits for a job to finish, however it ends; its last document.
    pub(crate) async fn wait_finished(&self, status_url: &str) -> serde_json::Value {
        let url = format!("{status_url}?wait=5");
        within(30, "job to finish", async {
            loop {
                let doc = self.get(&url).await.json();
                let status = doc["status"].as_str().unwrap_or_default();
                if ["succeeded", "failed", "canceled"].contains(&status) {
                    return doc;
                }
            }
        })
        .await
    }

    /// [`Client::wait_status`] with these headers (credentials) on every request.
    pub(crate) async fn wait_status_as(
        &self,
        status_url: &str,
        want: &str,
        headers: &[(&str, &str)],
    ) -> serde_json::Value {
        let url = format!("{status_url}?wait=5");
        let doc = within(20, &format!("job to be {want}"), async {
            loop {
                let doc = self
                    .send(Method::GET, &url, headers, Bytes::new())
                    .await
                    .json();
                let status = doc["status"].as_str().unwrap_or_default();
                if status == want || ["succeeded", "failed", "canceled"].contains(&status) {
                    return doc;
                }
            }
        })
        .await;
        assert_eq!(doc["status"], want, "{doc:#}");
        doc
    }
}

/// A backend, a gateway in front of it (upstream `app` with
/// `upstream_extra` keys, then `routes`), and a client.
pub(crate) async fn setup(upstream_extra: &str, routes: &str) -> (Backend, TestGateway, Client) {
    let backend = Backend::start().await;
    let gateway = TestGateway::start(&config(&backend.url(), upstream_extra, routes)).await;
    (backend, gateway, Client::default())
}

/// [`setup`] with one async route `jobs` on every path, with extra keys.
pub(crate) async fn setup_async(route_extra: &str) -> (Backend, TestGateway, Client) {
    setup("", &async_route("/{*p}", route_extra)).await
}

/// A config with one upstream `app` at `backend` and the given extra TOML.
pub(crate) fn config(backend: &str, upstream_extra: &str, rest: &str) -> String {
    format!("[upstreams.app]\nurl = \"{backend}\"\n{upstream_extra}\n{rest}")
}

/// An async route `jobs` on `path` (all methods) with extra keys.
pub(crate) fn async_route(path: &str, extra: &str) -> String {
    format!("[[routes]]\nname = \"jobs\"\npath = \"{path}\"\nupstream = \"app\"\nmode = \"async\"\n{extra}\n")
}

/// Writes raw bytes to `addr` and reads until the peer closes (bounded).
pub(crate) async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(request).await;
    let mut out = Vec::new();
    let _ = within(15, "the peer to answer and close", s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The `status` of every job document in a Server-Sent Events text.
pub(crate) fn sse_statuses(sse: &str) -> Vec<String> {
    sse.split("\n\n")
        .filter_map(|event| event.lines().find_map(|l| l.strip_prefix("data: ")))
        .map(|data| {
            serde_json::from_str::<serde_json::Value>(data).unwrap()["status"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}
