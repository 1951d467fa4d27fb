//! Passthrough routes and the default upstream: a plain reverse proxy.

mod common;

use bytes::Bytes;
use common::{config, Backend, Client, TestGateway};
use http::Method;

/// A config whose default upstream is `app`, so every request is proxied.
fn proxy_all(backend: &str, upstream_extra: &str, routes: &str) -> String {
    format!(
        "{}\n[default]\nupstream = \"app\"\n",
        config(backend, upstream_extra, routes)
    )
}

/// A gateway whose only route is a passthrough on `/api/{*rest}`.
async fn api_route() -> (Backend, TestGateway, Client) {
    let backend = Backend::start().await;
    let route = "[[routes]]\nname = \"pt\"\npath = \"/api/{*rest}\"\nupstream = \"app\"\nmode = \"passthrough\"\n";
    let gw = TestGateway::start(&config(&backend.url(), "", route)).await;
    (backend, gw, Client::default())
}

#[tokio::test]
async fn passthrough_route_proxies_request_and_response_unchanged() {
    let (backend, gw, client) = api_route().await;
    let reply = client
        .send(
            Method::POST,
            &gw.url("/api/things?status=201&x=1"),
            &[
                ("content-type", "application/json"),
                ("connection", "x-drop"),
                ("x-drop", "1"),
                ("te", "trailers"),
            ],
            r#"{"a":1}"#,
        )
        .await;
    assert_eq!(reply.status, 201);
    assert_eq!(reply.body, r#"{"a":1}"#);
    assert_eq!(reply.header("content-type"), "application/json");
    assert_eq!(reply.header("x-custom"), "kept");
    assert_eq!(reply.header("via"), "1.1 asyncgate");
    let got = &backend.received()[0];
    assert_eq!(got.method, Method::POST);
    assert_eq!(got.uri, "/api/things?status=201&x=1");
    assert!(got.headers.get("x-drop").is_none());
    assert!(got.headers.get("te").is_none());
    assert_eq!(got.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(got.headers["via"], "1.1 asyncgate");
}

#[tokio::test]
async fn unmatched_requests_go_to_the_default_upstream() {
    let backend = Backend::start().await;
    let toml = proxy_all(&backend.url(), "", "");
    let gw = TestGateway::start(&toml).await;
    let reply = Client::default().get(&gw.url("/anything?status=418")).await;
    assert_eq!(reply.status, 418);
    assert_eq!(backend.received()[0].uri, "/anything?status=418");
}

#[tokio::test]
async fn unmatched_requests_without_a_default_are_404() {
    let (backend, gw, client) = api_route().await;
    client
        .get(&gw.url("/elsewhere"))
        .await
        .assert_problem(404, "no-route");
    assert_eq!(backend.request_count(), 0);
}

#[tokio::test]
async fn routes_match_on_method_as_well_as_path() {
    let backend = Backend::start().await;
    let routes = "[[routes]]\nname = \"submit\"\nmethods = [\"POST\"]\npath = \"/r/{id}\"\nupstream = \"app\"\nmode = \"async\"\n";
    let toml = proxy_all(&backend.url(), "", routes);
    let gw = TestGateway::start(&toml).await;
    let client = Client::default();
    assert_eq!(client.post(&gw.url("/r/1"), "").await.status, 202);
    let get = client.get(&gw.url("/r/1")).await;
    assert_eq!(get.status, 200);
    assert_eq!(get.header("x-backend-method"), "GET");
}

#[tokio::test]
async fn upstream_path_prefix_is_prepended() {
    let backend = Backend::start().await;
    let toml = proxy_all(&format!("{}/legacy/", backend.url()), "", "");
    let gw = TestGateway::start(&toml).await;
    Client::default().get(&gw.url("/a/b?c=d")).await;
    assert_eq!(backend.received()[0].uri, "/legacy/a/b?c=d");
}

#[tokio::test]
async fn large_bodies_stream_through_both_ways() {
    let backend = Backend::start().await;
    let toml = proxy_all(&backend.url(), "", "");
    let gw = TestGateway::start(&toml).await;
    let client = Client::default();
    let body = Bytes::from(vec![7u8; 8 * 1024 * 1024]);
    let echoed = client.post(&gw.url("/echo"), body.clone()).await;
    assert_eq!(echoed.body, body);
    let big = client.get(&gw.url("/big/20000000")).await;
    assert_eq!(big.body.len(), 20_000_000);
}

#[tokio::test]
async fn upstream_down_is_502_problem() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let toml = proxy_all(&format!("http://{closed}"), "", "");
    let gw = TestGateway::start(&toml).await;
    Client::default()
        .get(&gw.url("/x"))
        .await
        .assert_problem(502, "upstream-unreachable");
}

#[tokio::test]
async fn upstream_timeout_is_504_problem_and_the_backend_sees_the_abort() {
    let backend = Backend::start().await;
    let toml = proxy_all(&backend.url(), "timeout = \"300ms\"", "");
    let gw = TestGateway::start(&toml).await;
    Client::default()
        .get(&gw.url("/hold/x"))
        .await
        .assert_problem(504, "upstream-timeout");
    backend.disconnects(1).await;
}

#[tokio::test]
async fn upstream_reset_mid_body_cuts_the_client_connection() {
    let backend = Backend::start().await;
    let toml = proxy_all(&backend.url(), "", "");
    let gw = TestGateway::start(&toml).await;
    let raw = common::raw_exchange(gw.addr, b"GET /reset HTTP/1.1\r\nhost: x\r\n\r\n").await;
    // hyper may or may not have flushed the head before the break; either
    // way the client must not receive what looks like a complete response.
    let body_len = raw.split_once("\r\n\r\n").map_or(0, |(_, b)| b.len());
    assert!(raw.is_empty() || raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert!(
        body_len < 1000,
        "the client must not receive a complete body"
    );
    // The gateway still serves.
    assert_eq!(Client::default().get(&gw.url("/ok")).await.status, 200);
}

/// The latency advisor: a slow path behind `[default]` (ids templated as
/// `{id}`) is named by `GET /advisor`, and a quick one is not; its
/// `[[routes]]` block, added to the config, passes `asyncgate check` and
/// makes the path answer `202` when the backend is slow. The backend holds
/// each request until the test releases it; the wait before the release is
/// the latency being measured, not a synchronisation.
#[tokio::test]
async fn the_advisor_names_a_slow_path_with_a_route_that_makes_it_async() {
    let backend = Backend::start().await;
    let toml = format!(
        "[admin]\nadvise_over = \"50ms\"\n{}",
        proxy_all(&backend.url(), "", "")
    );
    let gw = TestGateway::start(&toml).await;
    let client = Client::default();
    for n in 0..3 {
        let url = gw.url(&format!("/hold/reports/{}", 1000 + n));
        let slow = client.get(&url);
        let release = async {
            backend.started(n + 1).await;
            tokio::time::sleep(std::time::Duration::from_millis(120)).await;
            backend.release(1);
        };
        let (reply, ()) = tokio::join!(slow, release);
        reply.assert_status(200);
    }
    client.get(&gw.url("/quick/7")).await.assert_status(200);
    let advice = client
        .get(&format!("http://{}/advisor", gw.admin.unwrap()))
        .await
        .json();
    let suggestions = advice["suggestions"].as_array().unwrap();
    assert_eq!(suggestions.len(), 1, "{advice:#}");
    let s = &suggestions[0];
    assert_eq!(s["method"], "GET");
    assert_eq!(s["path"], "/hold/reports/{id}");
    assert_eq!(s["count"], 3);
    assert!(s["p99"].as_f64().unwrap() >= 0.1, "{s:#}");
    let block = s["config"].as_str().unwrap();
    assert!(block.contains("mode = \"auto\""), "{block}");
    let advised = format!("{}{block}", proxy_all(&backend.url(), "", ""));
    let file = common::process::write_config(&advised);
    let checked = std::process::Command::new(common::process::BIN)
        .args(["check", "--config", file.0.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(checked.status.success(), "{checked:?}\n{advised}");
    let advised_gw = TestGateway::start(&advised).await;
    let accepted = client.get(&advised_gw.url("/hold/reports/2000")).await;
    accepted.assert_status(202);
    backend.release(1);
}
