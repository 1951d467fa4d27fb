//! The chaos soak: the built binary under a steady mix of work while faults
//! strike at random moments, then a reckoning from the clients' records,
//! the backend's own log and the webhook receiver's.
//!
//! Load: POSTs (never to be sent twice), GETs (may be sent again after a
//! loss), POSTs with an `Idempotency-Key` sent twice, long-polls, proxied
//! GETs; backend answers now, slowly, or after seconds; every job calls
//! back. Faults, single node on the disk store: `kill -9` and a restart,
//! SIGTERM and a restart, a SIGUSR2 upgrade, bursts of backend resets and
//! of `503`s. On Redis: three replicas, one killed with `-9` and started
//! again, one stopped (SIGSTOP) past its lease and continued, Redis itself
//! killed and restarted (`appendfsync always`), and the backend faults.
//!
//! At the end, every violation fails the test: a `202` whose job is unknown
//! or not final; a POST that reached the backend twice; a succeeded job
//! whose result is not the backend's answer byte for byte; a job whose
//! webhook never arrived with a valid signature; a connection refused or
//! broken outside the window of a fault that stops a process (an upgrade
//! stops none); the same key answered with two jobs; memory or disk past
//! their bounds. `SOAK_SECONDS` (default 120) sets how long the load runs;
//! `bench/soak.sh` runs it for an hour.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::process::{signal, Running};
use common::redis::{Redis, Shared};
use common::{within, Backend, Client, TempDir};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// RSS any gateway process may reach, and the store's size on disk, at most.
const RSS_BOUND_KIB: u64 = 512 * 1024;
const STORE_MAX_BYTES: u64 = 256 << 20;

/// How long the reckoning may take to find every promised job final.
const RECKONING: Duration = Duration::from_secs(240);

fn seconds() -> u64 {
    std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120)
}

/// What the backend does with the requests it gets now.
const NORMAL: u8 = 0;
/// Breaks the connection without an answer.
const RESETS: u8 = 1;
/// `503` with `Retry-After: 1`.
const BUSY: u8 = 2;

/// The backend: `/{route}/{token}?ms=N` answers after N ms with a body
/// made from the token, unless a fault is on; it counts every request per
/// token as it arrives.
struct SoakBackend {
    addr: SocketAddr,
    mode: Arc<AtomicU8>,
    seen: Arc<Mutex<HashMap<String, usize>>>,
}

/// The backend's answer for `token`: known to the checker in advance.
fn answer(token: &str) -> Bytes {
    let n = 1 + token.bytes().fold(0usize, |a, b| a.wrapping_add(b.into())) % 64;
    Bytes::from(format!("{token}\n").repeat(n))
}

impl SoakBackend {
    async fn start() -> SoakBackend {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mode = Arc::new(AtomicU8::new(NORMAL));
        let seen = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
        let (m, s) = (Arc::clone(&mode), Arc::clone(&seen));
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (m, s) = (Arc::clone(&m), Arc::clone(&s));
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (m, s) = (Arc::clone(&m), Arc::clone(&s));
                        async move { serve(req, &m, &s).await }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        SoakBackend { addr, mode, seen }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn times(&self, token: &str) -> usize {
        self.seen.lock().unwrap().get(token).copied().unwrap_or(0)
    }
}

async fn serve(
    req: Request<Incoming>,
    mode: &AtomicU8,
    seen: &Mutex<HashMap<String, usize>>,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let token = req.uri().path().rsplit('/').next().unwrap_or("").to_owned();
    *seen.lock().unwrap().entry(token.clone()).or_default() += 1;
    let ms: u64 = req
        .uri()
        .query()
        .and_then(|q| q.strip_prefix("ms="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    match mode.load(Ordering::Relaxed) {
        // An error from the service: hyper drops the connection unanswered.
        RESETS => Err(std::io::Error::other("reset")),
        BUSY => Ok(Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .header("retry-after", "1")
            .body(Full::new(Bytes::from_static(b"busy")))
            .unwrap()),
        _ => Ok(Response::builder()
            .header("content-type", "text/plain")
            .body(Full::new(answer(&token)))
            .unwrap()),
    }
}

/// One gateway process, which the soak may kill, stop or upgrade; a
/// successor started by an upgrade is known by its pid only.
struct Node {
    port: u16,
    config: String,
    pid: u32,
    /// Every process started here, kept so their logs stay readable.
    started: Vec<Running>,
    known_pids: Vec<u32>,
}

impl Node {
    async fn start(port: u16, config: String) -> Node {
        let running = Running::start_exact(&config).await;
        listening(&running).await;
        let pid = running.pid();
        Node {
            port,
            config,
            pid,
            started: vec![running],
            known_pids: vec![pid],
        }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts it again after it died.
    async fn restart(&mut self) {
        // The sockets of a process gone are closed as its last thread
        // exits; what is left of the close may lag a little behind.
        let port = self.port;
        common::poll_until(60, "the node's port to be free", async || {
            std::net::TcpListener::bind(("127.0.0.1", port))
                .is_ok()
                .then_some(())
        })
        .await;
        let running = Running::start_exact(&self.config).await;
        listening(&running).await;
        self.pid = running.pid();
        self.known_pids.push(self.pid);
        self.started.push(running);
    }

    /// Until the process and all its threads have exited: its main thread
    /// turns zombie at once, but a killed process's other threads may still
    /// be finishing a system call (the disk store's fsync cannot be cut
    /// short), and its listening sockets stay open until the last one has
    /// exited. A restart in between found its port in use.
    async fn gone(&self) {
        let pid = self.pid;
        common::poll_until(60, "the gateway process to exit", async || {
            let alive = std::path::Path::new(&format!("/proc/{pid}")).exists()
                && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .unwrap_or_default()
                    .contains(") Z ");
            let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
                .map(|tasks| tasks.count())
                .unwrap_or(0);
            (!alive && threads <= 1).then_some(())
        })
        .await;
    }

    async fn kill9(&mut self) {
        signal(self.pid, "KILL");
        self.gone().await;
        self.restart().await;
    }

    async fn term(&mut self) {
        signal(self.pid, "TERM");
        self.gone().await;
        self.restart().await;
    }

    /// SIGUSR2; the successor is this node once it serves and the old
    /// process has left.
    async fn upgrade(&mut self) {
        let before = self.pid;
        signal(before, "USR2");
        let known = self.known_pids.clone();
        let line = within(60, "the successor's listening line", async {
            loop {
                for running in &self.started {
                    if let Some(l) = running
                        .lines_with("listening")
                        .into_iter()
                        .find(|l| pid_in(l).is_some_and(|p| !known.contains(&p)))
                    {
                        return l;
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        self.gone().await;
        self.pid = pid_in(&line).unwrap();
        self.known_pids.push(self.pid);
    }

    fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }
}

/// Waits for a process's `listening` line; if it never comes, fails with
/// everything the process said.
async fn listening(running: &Running) {
    let came = common::poll_until(60, "a listening line", async || {
        let said = running.lines_with("");
        if said.iter().any(|l| l.contains("listening")) {
            return Some(true);
        }
        // Exited without listening: no need to wait longer.
        said.iter()
            .any(|l| l.contains("cannot start"))
            .then_some(false)
    });
    if !came.await {
        panic!("the gateway did not start: {:#?}", running.lines_with(""));
    }
}

fn pid_in(line: &str) -> Option<u32> {
    let at = line.find(" pid=")? + 5;
    line[at..].split_whitespace().next()?.parse().ok()
}

/// A job some client was promised.
#[derive(Clone)]
struct Promise {
    token: String,
    method: Method,
    location: String,
}

/// When a fault left a node unable to answer (a process stopped, killed or
/// restarting): connection errors to it then are expected.
#[derive(Clone, Copy)]
struct Window {
    node: usize,
    from: Instant,
    to: Instant,
}

#[derive(Default)]
struct Records {
    promises: Vec<Promise>,
    /// (node, when, what) of every failed exchange.
    errors: Vec<(usize, Instant, String)>,
    requests: usize,
    refused_by_store: usize,
    key_conflicts: Vec<String>,
    windows: Vec<Window>,
    faults: HashMap<&'static str, usize>,
    max_rss_kib: u64,
}

type Shared2 = Arc<Mutex<Records>>;

async fn exchange(
    base: &str,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<common::Reply, String> {
    // A client of its own per exchange: a new connection each time.
    let client = Client::default();
    let result = match tokio::time::timeout(
        Duration::from_secs(15),
        client.try_send(method, &format!("{base}{path}"), headers, "soak"),
    )
    .await
    {
        Ok(result) => result,
        Err(_) => Err("no answer within 15 s".to_owned()),
    };
    if result.as_ref().map_or(true, |r| r.status == 503) {
        // As a client would, rather than spin on a closed port or a store
        // that is down.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    result
}

fn slowness() -> u64 {
    match fastrand::u8(0..100) {
        0..70 => fastrand::u64(0..50),
        70..95 => fastrand::u64(100..800),
        _ => fastrand::u64(2000..4000),
    }
}

/// One client: until `stop`, a random mix of work against random nodes.
async fn client(bases: Vec<String>, records: Shared2, stop: CancellationToken) {
    while !stop.is_cancelled() {
        let node = fastrand::usize(0..bases.len());
        let base = &bases[node];
        let token = uuid::Uuid::new_v4().simple().to_string();
        let ms = slowness();
        let roll = fastrand::u8(0..100);
        let (method, path, key) = match roll {
            0..35 => (Method::POST, format!("/post/{token}?ms={ms}"), None),
            35..60 => (Method::GET, format!("/get/{token}?ms={ms}"), None),
            60..75 => (
                Method::POST,
                format!("/post/{token}?ms={ms}"),
                Some(format!("k-{token}")),
            ),
            75..90 => {
                let known = {
                    let r = records.lock().unwrap();
                    (!r.promises.is_empty())
                        .then(|| r.promises[fastrand::usize(0..r.promises.len())].clone())
                };
                if let Some(p) = known {
                    let path = format!("{}?wait=2", common::path_of(&p.location));
                    let got = exchange(base, Method::GET, &path, &[]).await;
                    let mut r = records.lock().unwrap();
                    r.requests += 1;
                    match got {
                        Ok(reply) if reply.status == 200 => {}
                        Ok(reply) if reply.status == 503 => r.refused_by_store += 1,
                        Ok(reply) => r.errors.push((
                            node,
                            Instant::now(),
                            format!("long-poll {path}: {}", reply.status),
                        )),
                        Err(e) => r
                            .errors
                            .push((node, Instant::now(), format!("long-poll: {e}"))),
                    }
                }
                continue;
            }
            _ => {
                let got = exchange(base, Method::GET, &format!("/pass/{token}"), &[]).await;
                let mut r = records.lock().unwrap();
                r.requests += 1;
                if let Err(e) = got {
                    r.errors
                        .push((node, Instant::now(), format!("proxied GET: {e}")));
                }
                continue;
            }
        };
        let headers: Vec<(&str, &str)> = key
            .iter()
            .map(|k| ("idempotency-key", k.as_str()))
            .collect();
        let first = exchange(base, method.clone(), &path, &headers).await;
        let second = match &key {
            Some(_) => Some(exchange(base, method.clone(), &path, &headers).await),
            None => None,
        };
        let mut r = records.lock().unwrap();
        for got in std::iter::once(&first).chain(second.iter()) {
            r.requests += 1;
            match got {
                Ok(reply) if reply.status == 202 => {}
                Ok(reply) if reply.status == 503 => r.refused_by_store += 1,
                Ok(reply) => {
                    r.errors
                        .push((node, Instant::now(), format!("{path}: {}", reply.status)))
                }
                Err(e) => r
                    .errors
                    .push((node, Instant::now(), format!("{path}: {e}"))),
            }
        }
        let accepted: Vec<String> = std::iter::once(&first)
            .chain(second.iter())
            .filter_map(|g| g.as_ref().ok())
            .filter(|reply| reply.status == 202)
            .map(|reply| reply.header("location").to_owned())
            .collect();
        if accepted.len() == 2 && accepted[0] != accepted[1] {
            r.key_conflicts
                .push(format!("{path}: {} and {}", accepted[0], accepted[1]));
        }
        if let Some(location) = accepted.into_iter().next() {
            r.promises.push(Promise {
                token,
                method,
                location,
            });
        }
    }
}

/// The gateway's config: two async routes calling back, everything else
/// proxied. `store` is the `[store]` table.
fn gateway_config(port: u16, backend: &str, receiver: &str, store: &str) -> String {
    // Every result outlives the reckoning, which reads the first jobs'
    // last: with the default hour, an hour's soak found the jobs of its
    // first minute expired (410), not lost.
    let result_ttl = seconds() + RECKONING.as_secs() + 600;
    format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\nshutdown_delay = \"1s\"\ndrain_timeout = \"2s\"\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\
         {store}\nmax_bytes = \"{STORE_MAX_BYTES}\"\nresult_ttl = \"{result_ttl}s\"\n\
         [webhooks]\nsecret = \"{SECRET}\"\nallow_networks = [\"127.0.0.0/8\"]\n\
         retry_schedule = [\"100ms\", \"500ms\", \"1s\", \"2s\", \"2s\", \"2s\", \"2s\", \"2s\", \"2s\", \"2s\", \"2s\", \"2s\"]\n\
         [upstreams.app]\nurl = \"{backend}\"\ntimeout = \"30s\"\nmax_concurrency = 16\n\
         [[routes]]\nname = \"post\"\npath = \"/post/{{*p}}\"\nmethods = [\"POST\"]\nupstream = \"app\"\ncallback_url = \"{receiver}/hook\"\n\
         [[routes]]\nname = \"get\"\npath = \"/get/{{*p}}\"\nmethods = [\"GET\"]\nupstream = \"app\"\ncallback_url = \"{receiver}/hook\"\n\
         [default]\nupstream = \"app\"\n"
    )
}

/// A backend fault for two seconds: resets, or `503`s.
async fn backend_fault(backend: &SoakBackend, records: &Shared2, mode: u8) {
    backend.mode.store(mode, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    backend.mode.store(NORMAL, Ordering::Relaxed);
    let kind = if mode == RESETS {
        "backend resets"
    } else {
        "backend 503s"
    };
    count(records, kind);
}

fn count(records: &Shared2, kind: &'static str) {
    *records.lock().unwrap().faults.entry(kind).or_default() += 1;
}

type Nodes = Arc<tokio::sync::Mutex<Vec<Node>>>;

/// Samples the nodes' RSS every second, keeping the largest.
fn sample_rss(nodes: &Nodes, records: &Shared2) -> tokio::task::JoinHandle<()> {
    let (nodes, records) = (Arc::clone(nodes), Arc::clone(records));
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let rss = nodes
                .lock()
                .await
                .iter()
                .map(Node::rss_kib)
                .max()
                .unwrap_or(0);
            let mut r = records.lock().unwrap();
            r.max_rss_kib = r.max_rss_kib.max(rss);
        }
    })
}

/// `count` gateways on the store `store` (a `[store]` table), each on a
/// port of its own.
async fn start_nodes(
    count: usize,
    backend: &SoakBackend,
    receiver: &Backend,
    store: &str,
) -> Nodes {
    let mut started = Vec::new();
    for _ in 0..count {
        let port = common::steady_port();
        let config = gateway_config(port, &backend.url(), &receiver.url(), store);
        started.push(Node::start(port, config).await);
    }
    Arc::new(tokio::sync::Mutex::new(started))
}

/// The reckoning, the report, and the end of the nodes; fails on any
/// violation.
async fn conclude(
    label: &str,
    nodes: &Nodes,
    records: &Shared2,
    backend: &SoakBackend,
    receiver: &Backend,
    store_dir: Option<&std::path::Path>,
) {
    let bases: Vec<String> = nodes.lock().await.iter().map(Node::base).collect();
    let records = std::mem::take(&mut *records.lock().unwrap());
    let violations = reckon(label, &records, &bases, backend, receiver, store_dir).await;
    report(label, &records, &violations, seconds());
    for node in nodes.lock().await.iter() {
        signal(node.pid, "KILL");
    }
    assert!(violations.is_empty(), "{} violations", violations.len());
}

/// What the soak checks once the load has stopped; the violations.
async fn reckon(
    label: &str,
    records: &Records,
    bases: &[String],
    backend: &SoakBackend,
    receiver: &Backend,
    store_dir: Option<&std::path::Path>,
) -> Vec<String> {
    let mut violations = Vec::new();
    let client = Client::default();
    // Every promise ends, within a bound.
    let mut finals: HashMap<String, serde_json::Value> = HashMap::new();
    let deadline = Instant::now() + RECKONING;
    for p in &records.promises {
        let path = common::path_of(&p.location).to_owned();
        let doc = loop {
            let base = &bases[fastrand::usize(0..bases.len())];
            let reply = client
                .try_send(Method::GET, &format!("{base}{path}?wait=10"), &[], "")
                .await;
            match reply {
                Ok(r) if r.status == 200 => {
                    let doc = r.json();
                    if ["succeeded", "failed", "canceled"]
                        .contains(&doc["status"].as_str().unwrap_or(""))
                    {
                        break Some(doc);
                    }
                }
                Ok(r) if r.status == 404 || r.status == 410 => {
                    violations.push(format!("lost: {path} answers {}", r.status));
                    break None;
                }
                _ => {}
            }
            if Instant::now() > deadline {
                violations.push(format!("not final within the bound: {path}"));
                break None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let Some(doc) = doc else { continue };
        if p.method == Method::POST && backend.times(&p.token) > 1 {
            violations.push(format!(
                "POST {} reached the backend {} times",
                p.token,
                backend.times(&p.token)
            ));
        }
        if doc["status"] == "succeeded" {
            let result = client.get(&format!("{}{path}/result", bases[0])).await;
            if result.status != 200 || result.body != answer(&p.token) {
                violations.push(format!(
                    "{path}: result {} is not the backend's answer",
                    result.status
                ));
            }
        }
        finals.insert(doc["id"].as_str().unwrap().to_owned(), doc);
    }
    // Every job that ended called back, signed.
    let verifier = standardwebhooks::Webhook::new(SECRET).unwrap();
    // Standard Webhooks' own signing, checked without its five-minute age
    // limit: a delivery an hour old at the reckoning was fresh when it came.
    let signed = |d: &common::Received| {
        let header = |name: &str| d.headers.get(name).and_then(|v| v.to_str().ok());
        let (Some(id), Some(at), Some(signatures)) = (
            header("webhook-id"),
            header("webhook-timestamp").and_then(|t| t.parse::<i64>().ok()),
            header("webhook-signature"),
        ) else {
            return false;
        };
        verifier
            .sign(id, at, &d.body)
            .is_ok_and(|expected| signatures.split(' ').any(|s| s == expected))
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut delivered: HashMap<String, usize> = HashMap::new();
        let mut forged = 0;
        for d in receiver.received() {
            if signed(&d) {
                let id = d.headers["webhook-id"].to_str().unwrap().to_owned();
                *delivered.entry(id).or_default() += 1;
            } else {
                forged += 1;
            }
        }
        let missing: Vec<&String> = finals
            .keys()
            .filter(|id| !delivered.contains_key(*id))
            .collect();
        if missing.is_empty() && forged == 0 {
            println!(
                "[{label}] webhook deliveries: {} for {} jobs",
                delivered.values().sum::<usize>(),
                finals.len()
            );
            break;
        }
        if Instant::now() > deadline {
            violations.extend(missing.iter().map(|id| {
                let doc = &finals[*id];
                format!(
                    "no valid webhook for job {id} ({} {}, webhook {})",
                    doc["method"], doc["status"], doc["webhook"]
                )
            }));
            if forged > 0 {
                violations.push(format!(
                    "{forged} deliveries with a signature that does not verify"
                ));
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Connections refused or broken only while a fault stopped that node.
    for (node, at, what) in &records.errors {
        let excused = records
            .windows
            .iter()
            .any(|w| w.node == *node && w.from <= *at && *at <= w.to);
        if !excused {
            violations.push(format!("node {node}: {what}"));
        }
    }
    violations.extend(
        records
            .key_conflicts
            .iter()
            .map(|c| format!("one key, two jobs: {c}")),
    );
    if records.max_rss_kib > RSS_BOUND_KIB {
        violations.push(format!("RSS reached {} KiB", records.max_rss_kib));
    }
    if let Some(dir) = store_dir {
        let bytes = du(dir);
        println!("[{label}] store on disk: {bytes} bytes");
        if bytes > 2 * STORE_MAX_BYTES {
            violations.push(format!("the store takes {bytes} bytes on disk"));
        }
    }
    let mut by_status: HashMap<String, usize> = HashMap::new();
    for doc in finals.values() {
        *by_status
            .entry(doc["status"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    println!(
        "[{label}] jobs promised: {}, by final status: {by_status:?}",
        records.promises.len()
    );
    violations
}

fn du(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => du(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn report(label: &str, records: &Records, violations: &[String], seconds: u64) {
    println!("[{label}] soak of {seconds} s: {} requests, {} jobs promised, {} refused by the store (503), {} client errors, faults {:?}, max RSS {} KiB",
        records.requests,
        records.promises.len(),
        records.refused_by_store,
        records.errors.len(),
        records.faults,
        records.max_rss_kib
    );
    println!("[{label}] violations: {}", violations.len());
    for v in violations.iter().take(50) {
        println!("[{label}]   {v}");
    }
}

/// Runs the clients until the time is up, calling `fault` at random
/// moments with the records to note its window in, and the kind of fault
/// to make: every kind once, in a random order, then again.
async fn load<F>(nodes: &Nodes, records: &Shared2, mut fault: F)
where
    F: AsyncFnMut(&Shared2, u8),
{
    let bases: Vec<String> = nodes.lock().await.iter().map(Node::base).collect();
    let records = Arc::clone(records);
    let sampler = sample_rss(nodes, &records);
    let seconds = seconds();
    let stop = CancellationToken::new();
    let clients: Vec<_> = (0..8)
        .map(|_| tokio::spawn(client(bases.clone(), Arc::clone(&records), stop.clone())))
        .collect();
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut deck = Vec::new();
    while Instant::now() + Duration::from_secs(10) < end {
        tokio::time::sleep(Duration::from_millis(fastrand::u64(2000..6000))).await;
        if deck.is_empty() {
            deck = (0..FAULT_KINDS).collect();
            fastrand::shuffle(&mut deck);
        }
        fault(&records, deck.pop().unwrap()).await;
    }
    tokio::time::sleep(end.saturating_duration_since(Instant::now())).await;
    stop.cancel();
    for c in clients {
        within(60, "a soak client to stop", c).await.unwrap();
    }
    sampler.abort();
}

/// How many kinds of fault each variant makes.
const FAULT_KINDS: u8 = 5;

fn note(records: &Shared2, kind: &'static str, node: usize, from: Instant) {
    let mut r = records.lock().unwrap();
    *r.faults.entry(kind).or_default() += 1;
    // A process killed or restarting: its clients' exchanges in flight may
    // break a little after it is back.
    r.windows.push(Window {
        node,
        from,
        to: Instant::now() + Duration::from_secs(1),
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_one_node_on_the_disk_store() {
    let backend = SoakBackend::start().await;
    let receiver = Backend::start().await;
    let dir = TempDir::new();
    let store = format!("[store]\nkind = \"disk\"\npath = \"{}\"", dir.0.display());
    let nodes = start_nodes(1, &backend, &receiver, &store).await;
    let records: Shared2 = Arc::default();
    load(&nodes, &records, async |records, kind| {
        let from = Instant::now();
        let node = &mut nodes.lock().await[0];
        match kind {
            0 => {
                node.kill9().await;
                note(records, "kill -9", 0, from);
            }
            1 => {
                node.term().await;
                note(records, "SIGTERM", 0, from);
            }
            2 => {
                // An upgrade stops nothing: no window.
                node.upgrade().await;
                count(records, "SIGUSR2");
            }
            3 => backend_fault(&backend, records, RESETS).await,
            _ => backend_fault(&backend, records, BUSY).await,
        }
    })
    .await;
    conclude("disk", &nodes, &records, &backend, &receiver, Some(&dir.0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_three_replicas_on_redis() {
    let backend = SoakBackend::start().await;
    let receiver = Backend::start().await;
    let redis = Arc::new(tokio::sync::Mutex::new(Redis::start().await));
    let store = format!(
        "[store]\n{}\nlease = \"2s\"",
        redis.lock().await.store_keys()
    );
    let nodes = start_nodes(3, &backend, &receiver, &store).await;
    let records: Shared2 = Arc::default();
    load(&nodes, &records, async |records, kind| {
        let from = Instant::now();
        let n = fastrand::usize(0..3);
        match kind {
            0 => {
                nodes.lock().await[n].kill9().await;
                note(records, "kill -9 of a replica", n, from);
            }
            1 => {
                let pid = nodes.lock().await[n].pid;
                signal(pid, "STOP");
                // Past its lease: the others take over its jobs.
                tokio::time::sleep(Duration::from_secs(4)).await;
                signal(pid, "CONT");
                note(records, "SIGSTOP/SIGCONT of a replica", n, from);
            }
            2 => {
                let mut redis = redis.lock().await;
                redis.crash().await;
                redis.up().await;
                count(records, "Redis kill -9 and restart");
            }
            3 => backend_fault(&backend, records, RESETS).await,
            _ => backend_fault(&backend, records, BUSY).await,
        }
    })
    .await;
    conclude("redis", &nodes, &records, &backend, &receiver, None).await;
}
