//! Clients that need not poll blindly: long-poll on the status resource.

mod common;

use std::time::Duration;

use common::{
    async_route, config, setup_async, sse_statuses as statuses, within, Backend, Client,
    TestGateway,
};

#[tokio::test]
async fn long_poll_returns_as_soon_as_the_job_finishes() {
    let (backend, gw, client) = setup_async("").await;
    let reply = client.post(&gw.url("/hold/x"), "").await;
    let url = gw.url(reply.header("location"));
    backend.started(1).await;
    // The job is running: a long-poll for 30s waits for its next change.
    let mut poll = {
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move { client.get(&format!("{url}?wait=30")).await })
    };
    let early = tokio::time::timeout(Duration::from_millis(200), &mut poll).await;
    assert!(
        early.is_err(),
        "the long-poll answered before anything changed"
    );
    backend.release(1);
    let doc = within(10, "the long-poll to return on completion", poll)
        .await
        .unwrap()
        .json();
    assert_eq!(doc["status"], "succeeded");
}

#[tokio::test]
async fn long_poll_returns_the_unchanged_job_after_its_wait() {
    let (backend, gw, client) = setup_async("").await;
    let reply = client.post(&gw.url("/hold/x"), "").await;
    let url = gw.url(reply.header("location"));
    backend.started(1).await;
    let doc = within(
        10,
        "the long-poll to time out",
        client.get(&format!("{url}?wait=1")),
    )
    .await
    .json();
    assert_eq!(doc["status"], "running");
    backend.release(1);
}

#[tokio::test]
async fn long_poll_of_a_finished_job_answers_at_once() {
    let (_backend, gw, client) = setup_async("").await;
    let reply = client.post(&gw.url("/x"), "").await;
    let url = gw.url(reply.header("location"));
    client.wait_status(&url, "succeeded").await;
    let doc = within(
        5,
        "an immediate answer",
        client.get(&format!("{url}?wait=30")),
    )
    .await
    .json();
    assert_eq!(doc["status"], "succeeded");
}

#[tokio::test]
async fn long_poll_with_a_bad_wait_is_400() {
    let (_backend, gw, client) = setup_async("").await;
    let reply = client.post(&gw.url("/x"), "").await;
    let url = gw.url(reply.header("location"));
    client
        .get(&format!("{url}?wait=soon"))
        .await
        .assert_problem(400, "bad-wait");
}

/// The `status` of each `event: job` in a Server-Sent Events text.
#[tokio::test]
async fn event_stream_shows_every_transition_in_order_then_ends() {
    use http_body_util::{BodyExt, Empty};
    let backend = Backend::start().await;
    let toml = config(
        &backend.url(),
        "max_concurrency = 1",
        &async_route("/{*p}", ""),
    );
    let gw = TestGateway::start(&toml).await;
    let client = Client::default();
    let first = client.post(&gw.url("/hold/first"), "").await;
    backend.started(1).await;
    let second = client.post(&gw.url("/hold/second"), "").await;
    let url = gw.url(second.header("location"));

    let sse: hyper_util::client::legacy::Client<_, Empty<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let req = http::Request::get(&url)
        .header("accept", "text/event-stream")
        .body(Empty::new())
        .unwrap();
    let res = within(10, "the event stream to open", sse.request(req))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut body = res.into_body();
    let mut text = String::new();
    // The first event is the job as it is now: queued behind the first job.
    while statuses(&text).is_empty() {
        let frame = within(10, "the first event", body.frame())
            .await
            .unwrap()
            .unwrap();
        text.push_str(std::str::from_utf8(&frame.into_data().unwrap()).unwrap());
    }
    // Let the first job finish: the second starts, and the stream says so
    // before the second is let go (the watch keeps only the latest status).
    backend.release(1);
    while statuses(&text).len() < 2 {
        let frame = within(10, "the running event", body.frame())
            .await
            .unwrap()
            .unwrap();
        text.push_str(std::str::from_utf8(&frame.into_data().unwrap()).unwrap());
    }
    backend.release(1);
    let rest = within(10, "the stream to end after the last event", body.collect())
        .await
        .unwrap();
    text.push_str(std::str::from_utf8(&rest.to_bytes()).unwrap());
    assert_eq!(statuses(&text), ["queued", "running", "succeeded"]);
    client
        .wait_status(&gw.url(first.header("location")), "succeeded")
        .await;
}

#[tokio::test]
async fn event_stream_of_a_finished_job_is_one_event() {
    let (_backend, gw, client) = setup_async("").await;
    let reply = client.post(&gw.url("/x"), "").await;
    let url = gw.url(reply.header("location"));
    client.wait_status(&url, "succeeded").await;
    let sse = client
        .send(
            http::Method::GET,
            &url,
            &[("accept", "text/event-stream")],
            bytes::Bytes::new(),
        )
        .await;
    assert_eq!(sse.header("content-type"), "text/event-stream");
    assert_eq!(
        statuses(std::str::from_utf8(&sse.body).unwrap()),
        ["succeeded"]
    );
}
