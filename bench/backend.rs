//! The benchmark backend: a bare hyper server, the baseline every proxy is
//! compared with. `GET` answers a small body; `POST` echoes its body;
//! `GET /stats` tells how many `POST`s it has answered, so the benchmark can
//! see when every job has reached it.
//!
//! `cargo run --release --example bench-backend -- 127.0.0.1:18081`

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const SMALL: &[u8] = b"hello, world\n";

#[tokio::main]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18081".into());
    let listener = TcpListener::bind(&addr)
        .await
        .expect("bind the benchmark backend");
    let posts = Arc::new(AtomicU64::new(0));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let posts = Arc::clone(&posts);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| answer(Arc::clone(&posts), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(
    posts: Arc<AtomicU64>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() == Method::POST {
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        posts.fetch_add(1, Ordering::Relaxed);
        return Ok(Response::new(Full::new(body)));
    }
    if req.uri().path() == "/stats" {
        let n = posts.load(Ordering::Relaxed);
        return Ok(Response::new(Full::new(Bytes::from(n.to_string()))));
    }
    Ok(Response::new(Full::new(Bytes::from_static(SMALL))))
}
