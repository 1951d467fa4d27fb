//! Idempotency-Key: repeats get the same job; a reused key with another
//! request is 422; a burst of identical submissions makes one job.

mod common;

use std::sync::Arc;

use common::{setup_async, within};
use http::Method;

#[tokio::test]
async fn a_repeat_with_the_same_key_gets_the_same_job() {
    let (backend, gw, client) = setup_async("").await;
    let key = [("idempotency-key", "order-42")];
    let first = client
        .send(Method::POST, &gw.url("/orders"), &key, "body")
        .await;
    let loc = first.header("location").to_owned();
    client.wait_status(&gw.url(&loc), "succeeded").await;
    let again = client
        .send(Method::POST, &gw.url("/orders"), &key, "body")
        .await;
    assert_eq!(again.status, 202);
    assert_eq!(again.header("location"), loc);
    assert_eq!(again.json()["status"], "succeeded");
    assert_eq!(backend.request_count(), 1);
    // A different key is a different job.
    let other = client
        .send(
            Method::POST,
            &gw.url("/orders"),
            &[("idempotency-key", "order-43")],
            "body",
        )
        .await;
    assert_ne!(other.header("location"), loc);
}

#[tokio::test]
async fn the_same_key_with_another_request_is_422_and_queues_nothing() {
    let (backend, gw, client) = setup_async("").await;
    let key = [("idempotency-key", "k")];
    let first = client
        .send(Method::POST, &gw.url("/orders"), &key, "one")
        .await;
    client
        .wait_status(&gw.url(first.header("location")), "succeeded")
        .await;
    let changed = client
        .send(Method::POST, &gw.url("/orders"), &key, "two")
        .await;
    changed.assert_problem(422, "idempotency-key-reused");
    let elsewhere = client
        .send(Method::POST, &gw.url("/other"), &key, "one")
        .await;
    elsewhere.assert_problem(422, "idempotency-key-reused");
    assert_eq!(backend.request_count(), 1);
}

#[tokio::test]
async fn keys_are_scoped_to_the_caller() {
    let (backend, gw, client) = setup_async("").await;
    let alice = [("idempotency-key", "k"), ("authorization", "Bearer alice")];
    let bob = [("idempotency-key", "k"), ("authorization", "Bearer bob")];
    let a = client
        .send(Method::POST, &gw.url("/x"), &alice, "same")
        .await;
    let b = client.send(Method::POST, &gw.url("/x"), &bob, "same").await;
    assert_ne!(a.header("location"), b.header("location"));
    backend.started(2).await;
}

#[tokio::test]
async fn malformed_keys_are_400() {
    let (backend, gw, client) = setup_async("").await;
    for bad in ["has space", "\"\""] {
        let r = client
            .send(Method::POST, &gw.url("/x"), &[("idempotency-key", bad)], "")
            .await;
        r.assert_problem(400, "bad-idempotency-key");
    }
    let long = "k".repeat(300);
    let r = client
        .send(
            Method::POST,
            &gw.url("/x"),
            &[("idempotency-key", &long)],
            "",
        )
        .await;
    r.assert_problem(400, "bad-idempotency-key");
    assert_eq!(backend.request_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_identical_submissions_make_one_job() {
    let (backend, gw, client) = setup_async("").await;
    let gw = Arc::new(gw);
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (client, gw) = (client.clone(), Arc::clone(&gw));
        tasks.push(tokio::spawn(async move {
            let r = client
                .send(
                    Method::POST,
                    &gw.url("/hold/race"),
                    &[("idempotency-key", "race")],
                    "payload",
                )
                .await;
            assert_eq!(r.status, 202);
            r.header("location").to_owned()
        }));
    }
    let mut locations = Vec::new();
    for t in tasks {
        locations.push(within(30, "a racing submission", t).await.unwrap());
    }
    locations.dedup();
    assert_eq!(
        locations.len(),
        1,
        "all racers got the same job: {locations:?}"
    );
    backend.started(1).await;
    backend.release(1);
    client
        .wait_status(&gw.url(&locations[0]), "succeeded")
        .await;
    assert_eq!(backend.request_count(), 1);
}

#[tokio::test]
async fn a_malformed_key_is_refused_before_the_body_is_read() {
    let (backend, gw, _client) = setup_async("").await;
    // The body never comes: an answer at all shows the gateway did not wait for it.
    let raw = common::raw_exchange(
        gw.addr,
        b"POST /x HTTP/1.1\r\nhost: t\r\nidempotency-key: has space\r\ncontent-length: 100\r\n\r\n",
    )
    .await;
    assert!(raw.starts_with("HTTP/1.1 400"), "{raw}");
    assert!(raw.contains("bad-idempotency-key"), "{raw}");
    assert_eq!(backend.request_count(), 0);
}
