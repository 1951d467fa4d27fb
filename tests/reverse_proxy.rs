//! The reverse proxy's contract beyond plain forwarding: broken backend
//! framing, request buffering, idle connections, forwarded headers from
//! trusted proxies, cookies from HTTP/2 clients, and CORS.

mod common;

use common::{async_route, config, Client, RawBackend, TestGateway};

/// A gateway proxying everything to `backend` through `[default]`, with
/// extra `[server]` keys and routes.
async fn proxy_to(backend: &str, server_extra: &str, routes: &str) -> TestGateway {
    TestGateway::start(&format!(
        "{server_extra}\n{}\n[default]\nupstream = \"app\"\n",
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
