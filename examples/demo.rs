//! A stand-in legacy API on 127.0.0.1:8081 and the gateway in front of it on
//! 127.0.0.1:8080, configured by `config/asyncgate.toml`:
//!
//! ```text
//! cargo run --release --example demo
//! curl -i -X POST 'localhost:8080/reports/q3?seconds=5'
//! ```
//!
//! The backend's endpoints:
//! - `/reports/{name}?seconds=N` takes N seconds (default 5), then answers a JSON report;
//! - `…?fail=1` answers 500 after the wait, `…?status=N` answers status N;
//! - `/exports/{id}?bytes=N` answers N bytes of CSV (default 1 MiB);
//! - anything else answers a small JSON greeting at once.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use asyncgate::{Config, Gateway};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const BACKEND: &str = "127.0.0.1:8081";

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "config/asyncgate.toml".into());
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("demo: {e}");
            std::process::exit(2);
        }
    };
    let listener = match TcpListener::bind(BACKEND).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("demo: cannot bind the demo backend on {BACKEND}: {e}");
            std::process::exit(1);
        }
    };
    tokio::spawn(serve_backend(listener));
    let gateway = match Gateway::bind(config).await {
        Ok(g) => g,
        Err(e) => {
            eprintln!("demo: cannot bind the gateway: {e}");
            std::process::exit(1);
        }
    };
    let addr = gateway.local_addr();
    tracing::info!(backend = BACKEND, gateway = %addr, "demo running; try: curl -i -X POST 'http://{addr}/reports/q3?seconds=5'");
    let report = gateway.run(asyncgate::shutdown::signal()).await;
    tracing::info!(clean = report.is_clean(), "demo stopped");
}

async fn serve_backend(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let service = hyper::service::service_fn(legacy_api);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn legacy_api(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let query: HashMap<String, String> = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let number = |key: &str, default: u64| {
        query
            .get(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let path = req.uri().path().to_owned();

    if let Some(name) = path.strip_prefix("/reports/") {
        let seconds = number("seconds", 5).min(600);
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        if query.contains_key("fail") {
            return Ok(json(
                StatusCode::INTERNAL_SERVER_ERROR,
                r#"{"error":"the report generator crashed"}"#.into(),
            ));
        }
        let status = StatusCode::from_u16(number("status", 200) as u16).unwrap_or(StatusCode::OK);
        let body = format!(r#"{{"report":"{name}","rows":1234,"took_seconds":{seconds}}}"#);
        return Ok(json(status, body));
    }
    if path.starts_with("/exports/") {
        let bytes = number("bytes", 1 << 20).min(256 << 20) as usize;
        let line = b"id,name,amount\n";
        let body: Vec<u8> = line.iter().copied().cycle().take(bytes).collect();
        let mut r = Response::new(Full::new(Bytes::from(body)));
        r.headers_mut()
            .insert("content-type", "text/csv".parse().unwrap());
        return Ok(r);
    }
    Ok(json(
        StatusCode::OK,
        format!(r#"{{"hello":"from the legacy backend","path":"{path}"}}"#),
    ))
}

fn json(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r
}
