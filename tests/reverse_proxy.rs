//! The reverse proxy's contract beyond plain forwarding: broken backend
//! framing, request buffering, idle connections, forwarded headers from
//! trusted proxies, cookies from HTTP/2 clients, and CORS.

mod common;

use bytes::Bytes;
use common::{async_route, config, raw_exchange, within, Backend, Client, RawBackend, TestGateway};
use http::Method;
use http_body_util::Full;

/// A gateway proxying everything to `backend` through `[default]`, with
/// extra `[server]` keys and routes.
async fn proxy_to(backend: &str, server_extra: &str, routes: &str) -> TestGateway {
    proxy_with(backend, server_extra, routes, "").await
}

/// [`proxy_to`] with extra `[default]` keys.
async fn proxy_with(backend: &str, server_extra: &str, routes: &str, default: &str) -> TestGateway {
    TestGateway::start(&format!(
        "{server_extra}\n{}\n[default]\nupstream = \"app\"\n{default}\n",
        config(backend, "", routes)
    ))
    .await
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

#[tokio::test]
async fn broken_backend_framing_is_a_502_and_its_connection_is_not_reused() {
    let backend = RawBackend::start(|head| {
        let path = head.split(' ').nth(1).unwrap_or_default();
        if path.starts_with("/both") {
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_vec()
        } else if path.starts_with("/gzip") {
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nnot gzip at all".to_vec()
        } else {
            OK.to_vec()
        }
    })
    .await;
    let gw = proxy_to(
        &backend.url(),
        "",
        &async_route("/both/{*p}", "methods = [\"POST\"]"),
    )
    .await;
    let client = Client::default();
    for path in ["/both", "/gzip"] {
        client
            .get(&gw.url(path))
            .await
            .assert_problem(502, "upstream-broken-framing");
        // The next request is clean.
        let next = client.get(&gw.url("/ok")).await;
        assert_eq!((next.status.as_u16(), &next.body[..]), (200, &b"ok"[..]));
    }
    // Nothing followed a broken answer on its connection.
    let connections = backend.connections();
    for path in ["/both", "/gzip"] {
        let broken = connections
            .iter()
            .find(|c| c.requests.iter().any(|r| r.contains(path)))
            .unwrap();
        assert!(
            broken.requests.last().unwrap().contains(path),
            "{connections:#?}"
        );
    }

    // A job whose backend answers so fails, and says why.
    let reply = client.post(&gw.url("/both/job"), "").await;
    assert_eq!(reply.status, 202);
    let status = gw.url(reply.header("location"));
    let doc = client.wait_finished(&status).await;
    assert_eq!(doc["status"], "failed", "{doc:#}");
    assert_eq!(doc["error"]["code"], "upstream-broken-framing", "{doc:#}");
    client
        .get(&format!("{status}/result"))
        .await
        .assert_problem(502, "upstream-broken-framing");
}

/// What the backend saw of one request carrying a proxy's forwarded headers,
/// through a gateway with these `trusted_proxies`.
async fn forwarded_as_seen(trusted: &str) -> http::HeaderMap {
    let backend = Backend::start().await;
    let gw = proxy_to(&backend.url(), &format!("trusted_proxies = {trusted}"), "").await;
    Client::default()
        .send(
            Method::GET,
            &gw.url("/seen"),
            &[
                ("x-forwarded-for", "203.0.113.7"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "api.example.com"),
            ],
            "",
        )
        .await
        .assert_status(200);
    backend.received().remove(0).headers
}

#[tokio::test]
async fn forwarded_headers_are_kept_from_trusted_proxies_and_replaced_from_anyone_else() {
    let trusted = forwarded_as_seen(r#"["127.0.0.0/8", "::1"]"#).await;
    assert_eq!(trusted["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(trusted["x-forwarded-proto"], "https");
    assert_eq!(trusted["x-forwarded-host"], "api.example.com");

    let untrusted = forwarded_as_seen(r#"["10.0.0.0/8"]"#).await;
    assert_eq!(untrusted["x-forwarded-for"], "127.0.0.1");
    assert_eq!(untrusted["x-forwarded-proto"], "http");
    assert!(untrusted["x-forwarded-host"]
        .to_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
}

#[tokio::test]
async fn cookies_an_http2_client_split_reach_an_http1_backend_as_one_field() {
    let backend = Backend::start().await;
    let gw = proxy_to(&backend.url(), "", "").await;
    let h2: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build_http();
    let req = http::Request::get(gw.url("/cookies"))
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let res = within(10, "an h2 response", h2.request(req)).await.unwrap();
    assert_eq!(res.status(), 200);
    let seen = backend.received().remove(0).headers;
    assert_eq!(seen.get_all("cookie").iter().count(), 1, "{seen:?}");
    assert_eq!(seen["cookie"], "a=1; b=2");
}

/// Opens a connection, has one request answered on it, and returns it.
async fn kept_alive(gw: &TestGateway) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    stream
        .write_all(b"GET /_jobs/openapi.json HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0; 64 * 1024];
    let n = within(10, "the answer", stream.read(&mut buf))
        .await
        .unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    stream
}

/// Waits for the gateway to close `stream`, reading nothing more.
async fn closed(stream: &mut tokio::net::TcpStream, secs: u64) {
    use tokio::io::AsyncReadExt;
    let mut rest = Vec::new();
    within(
        secs,
        "the gateway to close the connection",
        stream.read_to_end(&mut rest),
    )
    .await
    .unwrap();
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_keepalive_timeout_not_header_read_timeout() {
    let backend = Backend::start().await;
    let gw = proxy_to(
        &backend.url(),
        "keepalive_timeout = \"1s\"\nheader_read_timeout = \"30s\"",
        "",
    )
    .await;
    let started = std::time::Instant::now();
    let mut stream = kept_alive(&gw).await;
    closed(&mut stream, 10).await;
    // Bounded above by `within`; below, the close was not the head timer's.
    assert!(started.elapsed() < std::time::Duration::from_secs(30));

    // HTTP/2 has no idle timer of its own: the gateway's sends GOAWAY, and
    // the client's connection ends.
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    let req = http::Request::get(gw.url("/a"))
        .body(Full::<Bytes>::default())
        .unwrap();
    let res = within(10, "an h2 answer", sender.send_request(req))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    drop(res);
    within(10, "the h2 connection to be closed", conn)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_request_head_that_stalls_is_cut_at_header_read_timeout_even_with_a_long_keepalive() {
    use tokio::io::AsyncWriteExt;
    let backend = Backend::start().await;
    let gw = proxy_to(
        &backend.url(),
        "keepalive_timeout = \"300s\"\nheader_read_timeout = \"1s\"",
        "",
    )
    .await;
    let mut stream = kept_alive(&gw).await;
    stream
        .write_all(b"GET /slow HTTP/1.1\r\nHost:")
        .await
        .unwrap();
    closed(&mut stream, 10).await;
    assert_eq!(backend.request_count(), 0);
}

/// A recording raw backend behind a gateway whose `[default]` and a
/// streaming passthrough route (`/stream/...`, `request_buffering = false`)
/// both lead to it.
async fn uploads_to(server_extra: &str) -> (RawBackend, TestGateway) {
    let backend = RawBackend::start(|_| OK.to_vec()).await;
    let streaming =
        "[[routes]]\nname = \"streaming\"\npath = \"/stream/{*p}\"\nupstream = \"app\"\n\
                     mode = \"passthrough\"\nrequest_buffering = false\nmax_body = \"1KiB\"\n";
    let gw = proxy_with(
        &backend.url(),
        server_extra,
        streaming,
        "max_body = \"2MiB\"",
    )
    .await;
    (backend, gw)
}

/// Sends `request` raw, half-closes, and reads the answer.
async fn upload(gw: &TestGateway, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(request).await.unwrap();
    s.shutdown().await.unwrap();
    let mut out = Vec::new();
    within(15, "the gateway's answer", s.read_to_end(&mut out))
        .await
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// The request lines that reached `backend`.
fn reached(backend: &RawBackend) -> Vec<String> {
    backend
        .connections()
        .into_iter()
        .flat_map(|c| c.requests)
        .collect()
}

#[tokio::test]
async fn a_broken_upload_never_reaches_the_backend_and_is_the_clients_error() {
    let (backend, gw) = uploads_to("body_idle_timeout = \"1s\"").await;
    // Stalls, breaks off, is malformed: 408, 400, 400; the backend sees none.
    let stalled = raw_exchange(
        gw.addr,
        b"POST /up HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nonly a little",
    )
    .await;
    assert!(stalled.starts_with("HTTP/1.1 408"), "{stalled}");
    let cut = upload(
        &gw,
        b"POST /up HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\npartial",
    )
    .await;
    assert!(cut.starts_with("HTTP/1.1 400"), "{cut}");
    let malformed = upload(
        &gw,
        b"POST /up HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n",
    )
    .await;
    assert!(malformed.starts_with("HTTP/1.1 400"), "{malformed}");
    assert!(malformed.contains("body-unreadable"), "{malformed}");
    assert_eq!(reached(&backend), Vec::<String>::new());

    // Streamed instead: the backend may see the start, but the client's
    // broken body is still the client's 400, never a 502.
    let malformed = upload(
        &gw,
        b"POST /stream/up HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n",
    )
    .await;
    assert!(malformed.starts_with("HTTP/1.1 400"), "{malformed}");
}

#[tokio::test]
async fn a_buffered_body_reaches_the_backend_whole_with_its_length_from_memory_or_a_file() {
    let backend = Backend::start().await;
    let gw = proxy_with(&backend.url(), "", "", "max_body = \"2MiB\"").await;
    let client = Client::default();
    for size in [1024, 1024 * 1024] {
        let body: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let reply = client.post(&gw.url("/echo"), body.clone()).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body, body, "{size} bytes echoed");
    }
    let got = backend.received();
    assert_eq!(got[1].headers["content-length"], "1048576");
    assert!(got[1].headers.get("transfer-encoding").is_none());
}

#[tokio::test]
async fn bodies_over_max_body_are_413_declared_or_streamed() {
    let (backend, gw) = uploads_to("").await;
    let declared = upload(
        &gw,
        b"POST /stream/up HTTP/1.1\r\nhost: x\r\ncontent-length: 5000\r\n\r\n",
    )
    .await;
    assert!(declared.starts_with("HTTP/1.1 413"), "{declared}");
    // Buffered, the backend is never contacted for a body over the limit.
    let mut big = b"POST /up HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    big.extend_from_slice(b"300000\r\n");
    big.extend_from_slice(&vec![b'x'; 0x30_0000]);
    big.extend_from_slice(b"\r\n0\r\n\r\n");
    let over = upload(&gw, &big).await;
    assert!(over.starts_with("HTTP/1.1 413"), "{over}");
    assert_eq!(reached(&backend), Vec::<String>::new());

    // Streamed, the body is cut off at the limit on its way.
    let backend = Backend::start().await;
    let route = "[[routes]]\nname = \"streaming\"\npath = \"/{*p}\"\nupstream = \"app\"\n\
                 mode = \"passthrough\"\nrequest_buffering = false\nmax_body = \"1KiB\"\n";
    let gw = proxy_to(&backend.url(), "", route).await;
    let mut chunked = b"POST /echo HTTP/1.1\r\nhost: x\r\nconnection: close\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        chunked.extend_from_slice(b"200\r\n");
        chunked.extend_from_slice(&[b'x'; 512]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let streamed = raw_exchange(gw.addr, &chunked).await;
    assert!(streamed.starts_with("HTTP/1.1 413"), "{streamed}");
}

#[tokio::test]
async fn browsers_on_listed_origins_may_use_the_job_api_and_proxied_routes_keep_their_own_cors() {
    let backend = Backend::start().await;
    let routes = format!(
        "{}[[routes]]\nname = \"pt\"\npath = \"/api/{{*p}}\"\nupstream = \"app\"\nmode = \"passthrough\"\n",
        async_route("/jobs/{*p}", "methods = [\"POST\"]")
    );
    let gw = proxy_to(
        &backend.url(),
        "cors_origins = [\"https://app.example.com\"]",
        &routes,
    )
    .await;
    let client = Client::default();
    let preflight = |path: &str, origin: &'static str, method: &'static str| {
        let (client, url) = (client.clone(), gw.url(path));
        async move {
            client
                .send(
                    Method::OPTIONS,
                    &url,
                    &[
                        ("origin", origin),
                        ("access-control-request-method", method),
                        ("access-control-request-headers", "authorization, prefer"),
                    ],
                    "",
                )
                .await
        }
    };

    let submit = preflight("/jobs/report", "https://app.example.com", "POST").await;
    assert_eq!(submit.status, 204);
    assert_eq!(
        submit.header("access-control-allow-origin"),
        "https://app.example.com"
    );
    assert_eq!(submit.header("access-control-allow-methods"), "POST");
    assert_eq!(
        submit.header("access-control-allow-headers"),
        "authorization, prefer"
    );
    assert_eq!(submit.header("access-control-allow-credentials"), "true");
    let status = preflight("/_jobs/some-id", "https://app.example.com", "DELETE").await;
    assert_eq!(status.status, 204);
    assert!(status
        .header("access-control-allow-methods")
        .contains("DELETE"));
    let stranger = preflight("/jobs/report", "https://evil.example", "POST").await;
    assert_eq!(stranger.status, 204);
    assert!(stranger
        .headers
        .get("access-control-allow-origin")
        .is_none());
    assert_eq!(backend.request_count(), 0, "no preflight became a job");

    // The real request: the script may read where its job is.
    let reply = client
        .send(
            Method::POST,
            &gw.url("/jobs/report"),
            &[("origin", "https://app.example.com")],
            "x",
        )
        .await;
    assert_eq!(reply.status, 202);
    assert_eq!(
        reply.header("access-control-allow-origin"),
        "https://app.example.com"
    );
    let exposed = reply.header("access-control-expose-headers");
    for name in ["Location", "Operation-Location", "Retry-After"] {
        assert!(exposed.contains(name), "{exposed}");
    }
    let doc = client
        .send(
            Method::GET,
            &gw.url(reply.header("location")),
            &[("origin", "https://app.example.com")],
            "",
        )
        .await;
    assert_eq!(
        doc.header("access-control-allow-origin"),
        "https://app.example.com"
    );

    // A proxied route's preflight is its backend's to answer.
    let proxied = preflight("/api/things", "https://app.example.com", "PUT").await;
    assert_eq!(proxied.status, 200);
    assert!(proxied.headers.get("access-control-allow-origin").is_none());
    assert!(backend
        .received()
        .iter()
        .any(|r| r.method == Method::OPTIONS));
}
