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

/// Opens an event stream on `url`, resuming after `last` when given.
async fn open_events(url: &str, last: Option<&str>) -> http::Response<hyper::body::Incoming> {
    use http_body_util::Empty;
    let client: hyper_util::client::legacy::Client<_, Empty<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let mut req = http::Request::get(url).header("accept", "text/event-stream");
    if let Some(last) = last {
        req = req.header("last-event-id", last);
    }
    within(
        10,
        "the event stream to open",
        client.request(req.body(Empty::new()).unwrap()),
    )
    .await
    .unwrap()
}

/// Reads events until `n` have come or the stream ends; each as its
/// (id, event, status in data).
async fn read_events(body: &mut hyper::body::Incoming, n: usize) -> Vec<(String, String, String)> {
    use http_body_util::BodyExt;
    let mut text = String::new();
    let parse = |text: &str| -> Vec<(String, String, String)> {
        text.split("\n\n")
            .filter(|e| e.contains("data: "))
            .map(|e| {
                let field = |name: &str| {
                    e.lines()
                        .find_map(|l| l.strip_prefix(name))
                        .unwrap_or_default()
                        .to_owned()
                };
                let data: serde_json::Value = serde_json::from_str(&field("data: ")).unwrap();
                (
                    field("id: "),
                    field("event: "),
                    data["status"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    within(10, "events", async {
        while parse(&text).len() < n {
            match body.frame().await {
                Some(frame) => {
                    if let Ok(data) = frame.unwrap().into_data() {
                        text.push_str(std::str::from_utf8(&data).unwrap());
                    }
                }
                None => break,
            }
        }
    })
    .await;
    parse(&text)
}

#[tokio::test]
async fn events_carry_ids_and_names_resume_after_last_event_id_and_end_with_204() {
    let (backend, gw, client) = setup_async("").await;
    let reply = client.post(&gw.url("/hold/sse"), "").await;
    let url = gw.url(reply.header("location"));
    client.wait_status(&url, "running").await;

    let res = open_events(&url, None).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-accel-buffering"], "no");
    assert!(res.headers()["cache-control"]
        .to_str()
        .unwrap()
        .contains("no-cache"));
    let mut body = res.into_body();
    let first = read_events(&mut body, 1).await;
    let (running_id, name, status) = first[0].clone();
    assert_eq!((name.as_str(), status.as_str()), ("running", "running"));
    drop(body);

    // The client reconnects with what it has: only what came after.
    backend.release(1);
    client.wait_status(&url, "succeeded").await;
    let mut rest = open_events(&url, Some(&running_id)).await.into_body();
    let after = read_events(&mut rest, 5).await;
    assert_eq!(after.len(), 1, "{after:?}");
    let (done_id, name, _) = after[0].clone();
    assert_eq!(name, "succeeded");
    assert!(done_id.parse::<u64>().unwrap() > running_id.parse::<u64>().unwrap());

    // It has the terminal event: 204, the EventSource's "stop reconnecting".
    let again = open_events(&url, Some(&done_id)).await;
    assert_eq!(again.status(), 204);
    // Without Last-Event-ID a finished job still gives its last event.
    let mut fresh = open_events(&url, None).await.into_body();
    assert_eq!(read_events(&mut fresh, 5).await.len(), 1);
}
