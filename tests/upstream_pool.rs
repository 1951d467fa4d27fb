//! The upstream's connection pool: a connection kept for the next request
//! whatever the framing of the last answer, checked before it is given a
//! request, and closed once idle past `pool_idle_timeout`.

mod common;

use common::{config, poll_until, Client, RawBackend, TestGateway};
use http::Method;

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
const CHUNKED: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n";

/// One worker, so every request draws on the same pool.
async fn gateway(backend: &RawBackend, upstream_extra: &str) -> TestGateway {
    TestGateway::start(&format!(
        "workers = 1\n{}\n[default]\nupstream = \"app\"\n",
        config(&backend.url(), upstream_extra, "")
    ))
    .await
}

#[tokio::test]
async fn requests_in_turn_share_one_backend_connection_whatever_the_framing() {
    let backend = RawBackend::start(|head| {
        if head.contains("/chunked") {
            CHUNKED
        } else {
            OK
        }
        .to_vec()
    })
    .await;
    let gw = gateway(&backend, "").await;
    let client = Client::default();
    for path in ["/a", "/chunked", "/b", "/chunked"] {
        assert_eq!(&client.get(&gw.url(path)).await.body[..], b"ok");
    }
    let posted = client.send(Method::POST, &gw.url("/c"), &[], "body").await;
    assert_eq!(&posted.body[..], b"ok");
    let connections = backend.connections();
    assert_eq!(connections.len(), 1, "{connections:#?}");
    assert_eq!(connections[0].requests.len(), 5, "{connections:#?}");
}

#[tokio::test]
async fn a_connection_the_backend_closed_while_idle_is_never_given_a_post() {
    let backend = RawBackend::hanging_up(|_| OK.to_vec()).await;
    let gw = gateway(&backend, "").await;
    let client = Client::default();
    for _ in 0..3 {
        let reply = client.send(Method::POST, &gw.url("/p"), &[], "once").await;
        assert_eq!(reply.status, 200);
    }
    let connections = backend.connections();
    assert_eq!(connections.len(), 3, "{connections:#?}");
    assert!(connections.iter().all(|c| c.requests.len() == 1));
}

#[tokio::test]
async fn an_idle_pooled_connection_is_closed_after_pool_idle_timeout() {
    let backend = RawBackend::start(|_| OK.to_vec()).await;
    let gw = gateway(&backend, "pool_idle_timeout = \"1s\"").await;
    assert_eq!(&Client::default().get(&gw.url("/")).await.body[..], b"ok");
    poll_until(10, "the idle connection to be closed", async || {
        backend.connections()[0].closed.then_some(())
    })
    .await;
}
