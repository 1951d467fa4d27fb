//! Clients that need not poll blindly: long-poll on the status resource.

mod common;

use std::time::Duration;

use common::{async_route, config, within, Backend, Client, TestGateway};

async fn setup() -> (Backend, TestGateway, Client) {
    let backend = Backend::start().await;
    let gw = TestGateway::start(&config(&backend.url(), "", &async_route("/{*p}", ""))).await;
    (backend, gw, Client::default())
}

#[tokio::test]
async fn long_poll_returns_as_soon_as_the_job_finishes() {
    let (backend, gw, client) = setup().await;
    let reply = client.post(&gw.url("/hold/x"), "").await;
    let url = gw.url(reply.header("location"));
    backend.started(1).await;
    // The job is running: a long-poll for 30s waits for its next change.
    let poll = {
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move { client.get(&format!("{url}?wait=30")).await })
    };
    let early = tokio::time::timeout(Duration::from_millis(200), async {
        while !poll.is_finished() {
            tokio::task::yield_now().await;
        }
    })
    .await;
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
    let (backend, gw, client) = setup().await;
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
    let (_backend, gw, client) = setup().await;
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
    let (_backend, gw, client) = setup().await;
    let reply = client.post(&gw.url("/x"), "").await;
    let url = gw.url(reply.header("location"));
    client
        .get(&format!("{url}?wait=soon"))
        .await
        .assert_problem(400, "bad-wait");
}
