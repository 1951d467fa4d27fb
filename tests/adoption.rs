//! Adopting the gateway one client at a time: `prefer` and `auto` routes,
//! `Prefer` (RFC 7240), and `redirect_when_done`.

mod common;

use bytes::Bytes;
use common::{config, Backend, Client, TestGateway};
use http::Method;

fn route(mode: &str, extra: &str) -> String {
    format!("[[routes]]\nname = \"r\"\npath = \"/{{*p}}\"\nupstream = \"app\"\nmode = \"{mode}\"\n{extra}\n")
}

async fn setup(mode: &str, extra: &str) -> (Backend, TestGateway, Client) {
    common::setup("", &route(mode, extra)).await
}

#[tokio::test]
async fn prefer_route_without_respond_async_is_a_plain_proxy() {
    let (backend, gw, client) = setup("prefer", "").await;
    let reply = client.post(&gw.url("/x?status=201"), "sync body").await;
    assert_eq!(reply.status, 201);
    assert_eq!(reply.body, "sync body");
    assert_eq!(reply.header("x-custom"), "kept");
    assert!(reply.headers.get("preference-applied").is_none());
    assert!(reply.headers.get("location").is_none());
    assert_eq!(backend.request_count(), 1);
}

#[tokio::test]
async fn prefer_route_with_respond_async_answers_202_and_says_so() {
    let (backend, gw, client) = setup("prefer", "").await;
    let reply = client
        .send(
            Method::POST,
            &gw.url("/x"),
            &[("prefer", "Respond-Async")],
            "async body",
        )
        .await;
    assert_eq!(reply.status, 202);
    assert_eq!(reply.header("preference-applied"), "respond-async");
    let loc = reply.header("location").to_owned();
    client.wait_status(&gw.url(&loc), "succeeded").await;
    let result = client.get(&gw.url(&format!("{loc}/result"))).await;
    assert_eq!(result.body, "async body");
    assert_eq!(backend.request_count(), 1);
}

/// OData 4.01: `respond-async, wait=N` is "wait up to N seconds, then
/// answer asynchronously", on `prefer` and `auto` routes alike.
#[tokio::test]
async fn respond_async_with_a_wait_answers_directly_in_time_and_202_after_it() {
    for mode in ["prefer", "auto"] {
        let (backend, gw, client) = setup(mode, "").await;
        let fast = client
            .send(
                Method::POST,
                &gw.url("/fast?status=201"),
                &[("prefer", "respond-async, wait=10")],
                "quick",
            )
            .await;
        assert_eq!(fast.status, 201, "{mode}");
        assert_eq!(fast.body, "quick");
        assert_eq!(fast.header("preference-applied"), "wait=10");
        assert!(fast.headers.get("location").is_none());

        let slow = client
            .send(
                Method::POST,
                &gw.url("/hold/slow"),
                &[("prefer", "respond-async, wait=1")],
                "slow",
            )
            .await;
        assert_eq!(slow.status, 202, "{mode}");
        assert_eq!(slow.header("preference-applied"), "respond-async, wait=1");
        backend.release(1);
        let doc = client.wait_finished(&gw.url(slow.header("location"))).await;
        assert_eq!(doc["status"], "succeeded");
    }
}

#[tokio::test]
async fn auto_route_answers_directly_when_the_backend_is_fast() {
    let (backend, gw, client) = setup("auto", "sync_wait = \"10s\"").await;
    let reply = client.post(&gw.url("/fast?status=201"), "quick").await;
    assert_eq!(reply.status, 201);
    assert_eq!(reply.body, "quick");
    assert_eq!(reply.header("x-custom"), "kept");
    assert!(reply.headers.get("location").is_none());
    assert!(reply.headers.get("preference-applied").is_none());
    assert_eq!(backend.request_count(), 1);
}

#[tokio::test]
async fn auto_route_turns_a_slow_request_into_the_same_job() {
    let (backend, gw, client) = setup("auto", "sync_wait = \"200ms\"").await;
    let reply = client.post(&gw.url("/hold/slow"), "slow").await;
    assert_eq!(reply.status, 202);
    let loc = reply.header("location").to_owned();
    backend.started(1).await;
    backend.release(1);
    client.wait_status(&gw.url(&loc), "succeeded").await;
    let result = client.get(&gw.url(&format!("{loc}/result"))).await;
    assert_eq!(result.body, "slow");
    assert_eq!(
        backend.request_count(),
        1,
        "the backend saw the request exactly once"
    );
}

#[tokio::test]
async fn auto_route_honours_prefer_wait_within_max_wait() {
    let (backend, gw, client) = setup("auto", "sync_wait = \"500ms\"\nmax_wait = \"1s\"").await;
    let reply = client
        .send(
            Method::POST,
            &gw.url("/hold/w"),
            &[("prefer", "wait=100")],
            Bytes::new(),
        )
        .await;
    assert_eq!(reply.status, 202, "wait=100 is capped at max_wait, 1s");
    assert_eq!(reply.header("preference-applied"), "wait=1");
    backend.release(1);
    client
        .wait_status(&gw.url(reply.header("location")), "succeeded")
        .await;
}

#[tokio::test]
async fn auto_route_says_which_wait_it_honoured_on_a_direct_answer() {
    let (_backend, gw, client) = setup("auto", "sync_wait = \"500ms\"\nmax_wait = \"30s\"").await;
    let quick = client
        .send(
            Method::POST,
            &gw.url("/q"),
            &[("prefer", "wait=20, wait=1")],
            "q",
        )
        .await;
    assert_eq!(quick.status, 200);
    assert_eq!(quick.body, "q");
    // The first wait counts (RFC 7240 §2).
    assert_eq!(quick.header("preference-applied"), "wait=20");
}

#[tokio::test]
async fn auto_route_with_respond_async_answers_202_at_once() {
    let (backend, gw, client) = setup("auto", "sync_wait = \"30s\"").await;
    let reply = client
        .send(
            Method::POST,
            &gw.url("/hold/a"),
            &[("prefer", "respond-async")],
            Bytes::new(),
        )
        .await;
    assert_eq!(reply.status, 202);
    assert_eq!(reply.header("preference-applied"), "respond-async");
    backend.release(1);
    client
        .wait_status(&gw.url(reply.header("location")), "succeeded")
        .await;
}

#[tokio::test]
async fn auto_route_answers_a_failed_backend_as_a_proxy_would() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let gw = TestGateway::start(&config(&format!("http://{closed}"), "", &route("auto", ""))).await;
    let reply = Client::default().post(&gw.url("/x"), "").await;
    reply.assert_problem(502, "upstream-unreachable");
}

/// The seed pattern: on a `redirect_when_done` route the status monitor at
/// `Location` answers `200` with the document while the job runs and `303`
/// to the result once it is done; `Operation-Location`, which LRO clients
/// poll, names a monitor of the same job that never redirects.
#[tokio::test]
async fn redirect_when_done_monitor_answers_200_while_running_then_303_to_the_result() {
    let (backend, gw, client) = setup("async", "redirect_when_done = true").await;
    let reply = client.post(&gw.url("/hold/r?status=201"), "done").await;
    let loc = reply.header("location").to_owned();
    let operation = reply.header("operation-location").to_owned();
    assert_eq!(operation, format!("{loc}?redirect=false"));
    // Sent, so running: the next change is its end.
    backend.started(1).await;
    let running = client.get(&gw.url(&loc)).await;
    assert_eq!(running.status, 200);
    assert_eq!(running.json()["status"], "running");
    assert!(running.header("retry-after").parse::<u64>().unwrap() >= 1);
    assert_eq!(
        client.get(&gw.url(&format!("{loc}/poll"))).await.status,
        202
    );
    backend.release(1);
    let done = client.get(&gw.url(&format!("{operation}&wait=10"))).await;
    assert_eq!(done.status, 200);
    assert_eq!(done.json()["status"], "succeeded");
    for method in [Method::GET, Method::HEAD] {
        let redirect = client.send(method, &gw.url(&loc), &[], "").await;
        assert_eq!(redirect.status, 303);
        assert_eq!(redirect.header("location"), format!("{loc}/result"));
    }
    let result = client.get(&gw.url(&format!("{loc}/result"))).await;
    assert_eq!(result.status, 201);
    assert_eq!(result.body, "done");
    // The poll resource redirects as before.
    let poll = client.get(&gw.url(&format!("{loc}/poll"))).await;
    assert_eq!(poll.status, 303);
    // A monitor's query is checked, not guessed at.
    let bad = client.get(&gw.url(&format!("{loc}?redirect=no"))).await;
    bad.assert_problem(400, "bad-redirect");
}

/// Any final state redirects: the result resource then says what happened.
#[tokio::test]
async fn redirect_when_done_monitor_redirects_a_canceled_job_to_its_409() {
    let (backend, gw, client) = setup("async", "redirect_when_done = true").await;
    let reply = client.post(&gw.url("/hold/c"), "").await;
    let loc = reply.header("location").to_owned();
    backend.started(1).await;
    client.delete(&gw.url(&loc)).await.assert_status(200);
    let redirect = client.get(&gw.url(&loc)).await;
    assert_eq!(redirect.status, 303);
    let result = client.get(&gw.url(redirect.header("location"))).await;
    result.assert_problem(409, "job-canceled");
    let operation = client
        .get(&gw.url(reply.header("operation-location")))
        .await;
    assert_eq!(operation.status, 200);
    assert_eq!(operation.json()["status"], "canceled");
}

/// `location = "poll"` keeps its dialect: `Location` is `…/poll`, and the
/// status monitor at `Operation-Location` never redirects.
#[tokio::test]
async fn poll_dialect_with_redirect_keeps_a_monitor_that_never_redirects() {
    let (backend, gw, client) =
        setup("async", "location = \"poll\"\nredirect_when_done = true").await;
    let reply = client.post(&gw.url("/r"), "").await;
    let monitor = reply.header("operation-location").to_owned();
    assert_eq!(reply.header("location"), format!("{monitor}/poll"));
    let done = client.wait_finished(&gw.url(&monitor)).await;
    assert_eq!(done["status"], "succeeded");
    assert_eq!(client.get(&gw.url(&monitor)).await.status, 200);
    assert_eq!(backend.request_count(), 1);
}

/// Polls the way azure-core's Location poller, OData and ARM clients do:
/// any answer from `Location` other than `202` is the final one.
async fn drive_location_poller(client: &Client, gw: &TestGateway, location: &str) -> common::Reply {
    common::poll_until(20, "the Location poller to finish", async || {
        let r = client.get(&gw.url(location)).await;
        if r.status == 202 {
            assert!(r.header("retry-after").parse::<u64>().unwrap() >= 1);
            return None;
        }
        Some(r)
    })
    .await
}

/// Polls the way a Microsoft REST API guidelines client does: the JSON
/// status monitor at `Operation-Location` until a terminal `status`, then
/// `resourceLocation`.
async fn drive_status_monitor(client: &Client, gw: &TestGateway, monitor: &str) -> common::Reply {
    let done = common::poll_until(20, "the status monitor to finish", async || {
        let r = client.get(&gw.url(monitor)).await;
        assert_eq!(r.status, 200);
        let doc = r.json();
        let status = doc["status"].as_str().unwrap();
        ["succeeded", "failed", "canceled"]
            .contains(&status)
            .then_some(doc)
    })
    .await;
    assert_eq!(done["status"], "succeeded");
    client
        .get(&gw.url(done["resourceLocation"].as_str().unwrap()))
        .await
}

#[tokio::test]
async fn status_monitor_dialect_drives_to_the_result() {
    let (backend, gw, client) = setup("async", "").await;
    let reply = client
        .post(&gw.url("/hold/m?status=201"), "monitored")
        .await;
    assert_eq!(reply.header("location"), reply.header("operation-location"));
    backend.release(1);
    let result = drive_status_monitor(&client, &gw, reply.header("operation-location")).await;
    assert_eq!(result.status, 201);
    assert_eq!(result.body, "monitored");
}

#[tokio::test]
async fn location_dialect_answers_202_until_done_then_the_result() {
    let (backend, gw, client) = setup("async", "location = \"poll\"").await;
    let reply = client.post(&gw.url("/hold/l?status=201"), "polled").await;
    let location = reply.header("location").to_owned();
    let monitor = reply.header("operation-location").to_owned();
    assert_eq!(location, format!("{monitor}/poll"));
    backend.started(1).await;
    let pending = client.get(&gw.url(&location)).await;
    assert_eq!(pending.status, 202);
    assert_eq!(pending.json()["status"], "running");
    backend.release(1);
    let result = drive_location_poller(&client, &gw, &location).await;
    assert_eq!(result.status, 201);
    assert_eq!(result.body, "polled");
    // OData 4.01 clients read the final status from `AsyncResult`.
    assert_eq!(result.header("asyncresult"), "201");
    // The JSON status monitor still works beside it.
    assert_eq!(
        client.get(&gw.url(&monitor)).await.json()["status"],
        "succeeded"
    );
}

#[tokio::test]
async fn location_dialect_with_redirect_ends_in_a_303_to_the_result() {
    let (backend, gw, client) =
        setup("async", "location = \"poll\"\nredirect_when_done = true").await;
    let reply = client.post(&gw.url("/hold/r"), "redirected").await;
    let location = reply.header("location").to_owned();
    backend.release(1);
    let last = drive_location_poller(&client, &gw, &location).await;
    assert_eq!(last.status, 303);
    let result = client.get(&gw.url(last.header("location"))).await;
    assert_eq!(result.body, "redirected");
}

#[tokio::test]
async fn job_urls_are_absolute_from_the_requests_own_host_unless_configured() {
    let (_backend, gw, client) = setup("async", "").await;
    let reply = client
        .send(
            Method::POST,
            &gw.url("/x"),
            &[("x-forwarded-host", "evil.example")],
            "",
        )
        .await;
    let origin = format!("http://{}", gw.addr);
    let location = reply.header("location").to_owned();
    assert!(
        location.starts_with(&format!("{origin}/_jobs/")),
        "{location}"
    );
    assert_eq!(reply.header("operation-location"), location);
    let doc = client.get(&location).await.json();
    assert_eq!(doc["links"]["self"], location.as_str(), "{doc:#}");

    // A client that names another host (a DNS name for the same gateway)
    // gets URLs under it; a host that is not one gives relative URLs.
    let named = client
        .send(
            Method::POST,
            &gw.url("/x"),
            &[("host", "api.example.com:8443")],
            "",
        )
        .await;
    assert!(named
        .header("location")
        .starts_with("http://api.example.com:8443/_jobs/"));

    // `public_base_url` wins over whatever the request says.
    let backend = Backend::start().await;
    let configured = TestGateway::start(&format!(
        "public_base_url = \"https://api.example.com\"\n{}",
        config(&backend.url(), "", &route("async", ""))
    ))
    .await;
    let reply = client.post(&configured.url("/x"), "").await;
    assert!(reply
        .header("location")
        .starts_with("https://api.example.com/_jobs/"));
}

#[tokio::test]
async fn a_finished_jobs_document_read_under_two_host_names_links_to_each() {
    let (_backend, gw, client) = setup("async", "").await;
    let location = client
        .post(&gw.url("/x"), "")
        .await
        .header("location")
        .to_owned();
    client.wait_status(&location, "succeeded").await;
    // Twice each, so that a document kept from one read serves the next.
    for host in [
        "a.example",
        "a.example",
        "b.example",
        "b.example",
        "a.example",
    ] {
        let doc = client
            .send(Method::GET, &location, &[("host", host)], "")
            .await
            .json();
        let link = doc["links"]["result"].as_str().unwrap().to_owned();
        assert!(
            link.starts_with(&format!("http://{host}/_jobs/")),
            "{host}: {link}"
        );
        assert_eq!(doc["status"], "succeeded");
    }
}
