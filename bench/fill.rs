//! Submits exactly COUNT requests (POST, a body of BYTES, 1 KiB unless
//! given) with CONCURRENCY connections and reports how they were answered:
//! what wrk cannot do, since it always runs for a fixed duration.
//!
//! `cargo run --release --example bench-fill -- URL COUNT CONCURRENCY [BYTES]`
//! prints `FILL <2xx> <503> <other> <seconds>`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (url, count, concurrency, bytes) = match args.as_slice() {
        [_, url, count, concurrency] => (url, count, concurrency, "1024"),
        [_, url, count, concurrency, bytes] => (url, count, concurrency, bytes.as_str()),
        _ => {
            eprintln!("usage: bench-fill URL COUNT CONCURRENCY [BYTES]");
            std::process::exit(2);
        }
    };
    let count: u64 = count.parse().expect("COUNT is a number");
    let concurrency: u64 = concurrency.parse().expect("CONCURRENCY is a number");
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(concurrency as usize)
        .build_http();
    let bytes: usize = bytes.parse().expect("BYTES is a number");
    let body = Bytes::from(vec![b'x'; bytes]);
    let next = Arc::new(AtomicU64::new(0));
    let tallies = Arc::new([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]);
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, body, next, tallies, url) = (
                client.clone(),
                body.clone(),
                Arc::clone(&next),
                Arc::clone(&tallies),
                url.clone(),
            );
            tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < count {
                    let req = Request::builder()
                        .method(Method::POST)
                        .uri(&url)
                        .body(Full::new(body.clone()))
                        .expect("a valid request");
                    let slot = match client.request(req).await {
                        Ok(res) => {
                            let status = res.status();
                            let _ = res.into_body().collect().await;
                            match status.as_u16() {
                                200..=299 => 0,
                                503 => 1,
                                _ => 2,
                            }
                        }
                        Err(_) => 2,
                    };
                    tallies[slot].fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for w in workers {
        w.await.expect("a fill worker panicked");
    }
    let [ok, refused, other] = tallies
        .as_ref()
        .each_ref()
        .map(|t| t.load(Ordering::Relaxed));
    println!(
        "FILL {ok} {refused} {other} {:.3}",
        started.elapsed().as_secs_f64()
    );
}
