//! Shielding a backend that takes 20 requests a second: it answers `429`
//! with `Retry-After: 1` to a request that would make more than 20 in the
//! last second. The same jobs go through the gateway twice: with
//! `rate = "20/s"` (burst 1), then without a rate, shielded only by the
//! back-off (a `429` holds the whole upstream for its `Retry-After`, and the
//! job is tried again). Each run counts the `429`s the backend gave, how
//! the jobs ended, and how long they all took. The gateway is the built
//! binary; everything listens on 127.0.0.1.
//!
//!   cargo build --release
//!   cargo run --release --example bench-shield -- [JOBS] [BINARY]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// What the backend takes: this many requests in any second.
const PER_SECOND: usize = 20;

/// Submissions in flight at once.
const SUBMITTERS: usize = 16;

#[derive(Default)]
struct Backend {
    /// When the requests it answered in the last second came.
    recent: Mutex<VecDeque<Instant>>,
    answered: AtomicU64,
    refused: AtomicU64,
}

impl Backend {
    fn answer(&self) -> Response<Full<Bytes>> {
        let now = Instant::now();
        let mut recent = self.recent.lock().expect("not poisoned");
        while recent
            .front()
            .is_some_and(|&t| now.duration_since(t) >= Duration::from_secs(1))
        {
            recent.pop_front();
        }
        if recent.len() >= PER_SECOND {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Response::builder()
                .status(StatusCode::TOO_MANY_REQUESTS)
                .header("retry-after", "1")
                .body(Full::new(Bytes::new()))
                .expect("a valid response");
        }
        recent.push_back(now);
        self.answered.fetch_add(1, Ordering::Relaxed);
        Response::new(Full::new(Bytes::from_static(b"done\n")))
    }
}

async fn serve(backend: Arc<Backend>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("an address");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let backend = Arc::clone(&backend);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let backend = Arc::clone(&backend);
                    async move {
                        let _ = req.into_body().collect().await;
                        Ok::<_, Infallible>(backend.answer())
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// How one run went.
struct Run {
    seconds: f64,
    refused: u64,
    answered: u64,
    /// Jobs that ended `succeeded` with the backend's `200`.
    done: usize,
    other: Vec<String>,
}

async fn run(binary: &str, jobs: usize, upstream_extra: &str) -> Run {
    let backend = Arc::new(Backend::default());
    let backend_addr = serve(Arc::clone(&backend)).await;
    let port = free_port();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = dir.path().join("shield.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n\
             [store]\nkind = \"memory\"\n\
             [upstreams.legacy]\nurl = \"http://{backend_addr}\"\nmax_concurrency = 64\n\
             max_queue = 100000\nretries = 50\nretry_backoff = \"1s\"\nretry_backoff_max = \"5s\"\n\
             {upstream_extra}\n\
             [[routes]]\nname = \"jobs\"\npath = \"/jobs/{{*p}}\"\nupstream = \"legacy\"\n\
             mode = \"async\"\nretry_non_idempotent = true\n"
        ),
    )
    .expect("write the config");
    let mut gateway = tokio::process::Command::new(binary)
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("start {binary}: {e}"));
    let base = format!("http://127.0.0.1:{port}");
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let deadline = Instant::now() + Duration::from_secs(30);
    while client
        .get(
            format!("{base}/_jobs/00000000-0000-0000-0000-000000000000")
                .parse()
                .expect("a URI"),
        )
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "the gateway did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let submitters = (0..SUBMITTERS).map(|_| {
        let (client, base, next) = (client.clone(), base.clone(), Arc::clone(&next));
        tokio::spawn(async move {
            let mut locations = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= jobs as u64 {
                    return locations;
                }
                let req = Request::post(format!("{base}/jobs/{n}"))
                    .body(Full::new(Bytes::from_static(b"work")))
                    .expect("a request");
                let reply = client.request(req).await.expect("submitted");
                assert_eq!(reply.status(), StatusCode::ACCEPTED);
                let location = reply.headers()["location"]
                    .to_str()
                    .expect("ASCII")
                    .to_owned();
                locations.push(location);
            }
        })
    });
    let mut locations = Vec::new();
    for submitter in submitters {
        locations.extend(submitter.await.expect("a submitter"));
    }
    let waiters = locations
        .chunks(jobs.div_ceil(SUBMITTERS).max(1))
        .map(|chunk| {
            let (client, base, chunk) = (client.clone(), base.clone(), chunk.to_vec());
            tokio::spawn(async move {
                let mut ends = Vec::new();
                for location in chunk {
                    loop {
                        // Absolute when the gateway knows its host, as it does here.
                        let url = if location.starts_with("http") {
                            format!("{location}?wait=30")
                        } else {
                            format!("{base}{location}?wait=30")
                        };
                        let reply = client
                            .get(url.parse().expect("a URI"))
                            .await
                            .expect("polled");
                        let body = reply
                            .into_body()
                            .collect()
                            .await
                            .expect("a body")
                            .to_bytes();
                        let doc: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
                        let status = doc["status"].as_str().unwrap_or_default().to_owned();
                        if status != "queued" && status != "running" {
                            ends.push(format!("{status} {}", doc["response"]["status"]));
                            break;
                        }
                    }
                }
                ends
            })
        });
    let mut ends = Vec::new();
    for waiter in waiters {
        ends.extend(waiter.await.expect("a waiter"));
    }
    let seconds = started.elapsed().as_secs_f64();
    let _ = gateway.kill().await;
    let done = ends.iter().filter(|e| *e == "succeeded 200").count();
    Run {
        seconds,
        refused: backend.refused.load(Ordering::Relaxed),
        answered: backend.answered.load(Ordering::Relaxed),
        done,
        other: ends.into_iter().filter(|e| e != "succeeded 200").collect(),
    }
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let jobs: usize = args
        .next()
        .map_or(2000, |n| n.parse().expect("a number of jobs"));
    let binary = args
        .next()
        .unwrap_or_else(|| "target/release/asyncgate".to_owned());
    println!("{jobs} jobs; the backend answers 429 (Retry-After: 1) past {PER_SECOND} requests in any second");
    println!();
    println!("| upstream | 429s the backend gave | jobs succeeded (200) | other ends | seconds for all |");
    println!("|---|---|---|---|---|");
    for (label, extra) in [
        (
            "`rate = \"20/s\"`, `burst = 1`",
            "rate = \"20/s\"\nburst = 1",
        ),
        ("no rate: back-off on 429 only", ""),
    ] {
        let r = run(&binary, jobs, extra).await;
        assert_eq!(r.answered as usize, r.done, "every job answered once");
        println!(
            "| {label} | {} | {} | {} | {:.1} |",
            r.refused,
            r.done,
            r.other.len(),
            r.seconds
        );
    }
}
