//! Retries: a job whose backend fails in a way that may pass is tried again,
//! as often as its upstream allows, when that is safe for its method.

mod common;

use common::{async_route, setup, Client};
use http::Method;

/// An upstream that retries `retries` times, 10 ms apart at first, and an
/// async route with `route_extra`.
async fn gateway(
    retries: u32,
    backoff: &str,
    route_extra: &str,
) -> (common::Backend, common::TestGateway, Client) {
    setup(
        &format!("retries = {retries}\nretry_backoff = \"{backoff}\""),
        &async_route("/{*p}", route_extra),
    )
    .await
}

#[tokio::test]
async fn a_flaky_backend_is_tried_again_until_it_answers() {
    let (backend, gw, client) = gateway(3, "10ms", "").await;
    let reply = client
        .send(Method::PUT, &gw.url("/flaky/2/x"), &[], "body")
        .await;
    reply.assert_status(202);
    let doc = client
        .wait_status(&gw.url(reply.header("location")), "succeeded")
        .await;
    assert_eq!(doc["attempts"], 3, "{doc:#}");
    assert!(doc.get("retry").is_none(), "done waiting: {doc:#}");
    assert_eq!(backend.request_count(), 3);
    let result = client
        .get(&gw.url(&format!("{}/result", reply.header("location"))))
        .await;
    assert_eq!(result.status, 200);
    assert_eq!(result.body, "body");
}

#[tokio::test]
async fn tries_run_out_and_the_last_answer_stands() {
    let (backend, gw, client) = gateway(1, "10ms", "").await;
    let reply = client
        .send(Method::GET, &gw.url("/flaky/5/y"), &[], "")
        .await;
    let doc = client
        .wait_status(&gw.url(reply.header("location")), "failed")
        .await;
    assert_eq!(doc["attempts"], 2);
    assert_eq!(doc["response"]["status"], 503);
    assert_eq!(backend.request_count(), 2);
}

#[tokio::test]
async fn a_post_the_backend_may_have_received_is_not_sent_again() {
    let (backend, gw, client) = gateway(3, "10ms", "").await;
    let reply = client.post(&gw.url("/flaky/1/z"), "order").await;
    let doc = client
        .wait_status(&gw.url(reply.header("location")), "failed")
        .await;
    assert_eq!(doc["attempts"], 1);
    assert_eq!(backend.request_count(), 1, "sent once");
}

#[tokio::test]
async fn a_route_may_opt_in_to_retrying_posts() {
    let (backend, gw, client) = gateway(3, "10ms", "retry_non_idempotent = true").await;
    let reply = client.post(&gw.url("/flaky/1/z"), "order").await;
    let doc = client
        .wait_status(&gw.url(reply.header("location")), "succeeded")
        .await;
    assert_eq!(doc["attempts"], 2);
    assert_eq!(backend.request_count(), 2);
}

#[tokio::test]
async fn a_job_waiting_to_be_tried_again_says_when_and_why_and_a_cancel_ends_it() {
    let (backend, gw, client) = gateway(3, "30s", "").await;
    let reply = client
        .send(Method::PUT, &gw.url("/flaky/9/w"), &[], "")
        .await;
    let url = gw.url(reply.header("location"));
    // Submitted, then running, then queued again to wait for its next try.
    let waiting = common::poll_until(10, "the job to wait for a retry", async || {
        let doc = client.get(&url).await.json();
        doc.get("retry").is_some().then_some(doc)
    })
    .await;
    assert_eq!(waiting["status"], "queued", "{waiting:#}");
    assert_eq!(waiting["attempts"], 1);
    let reason = waiting["retry"]["reason"].as_str().unwrap();
    assert!(reason.contains("503"), "{reason}");
    assert!(waiting["retry"]["next_attempt_at"].is_string());
    let canceled = client.delete(&url).await;
    canceled.assert_status(200);
    assert_eq!(canceled.json()["status"], "canceled");
    assert_eq!(client.get(&url).await.json()["status"], "canceled");
    assert_eq!(backend.request_count(), 1, "no further try");
}

#[tokio::test]
async fn retries_are_refused_with_the_redis_store() {
    let text = "[store]\nkind = \"redis\"\nurl = \"redis://127.0.0.1:1/0\"\n\
                [upstreams.app]\nurl = \"http://127.0.0.1:1\"\nretries = 2\n";
    let file = common::process::write_config(text);
    let out = tokio::process::Command::new(common::process::BIN)
        .args(["check", "--config", file.0.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("upstreams.app.retries"), "{stderr}");
}

/// What a job's backend request says of itself: which job, which try,
/// whatever the client claimed, so a legacy backend can log jobs and tell a
/// retry from a new request.
#[tokio::test]
async fn job_requests_say_which_job_and_which_try_they_are() {
    let (backend, gw, client) = setup(
        "retries = 1\nretry_backoff = \"10ms\"",
        &async_route("/{*p}", ""),
    )
    .await;
    let forged = [("asyncgate-job-id", "forged"), ("asyncgate-attempt", "9")];
    let reply = client
        .send(Method::PUT, &gw.url("/flaky/1/told"), &forged, "")
        .await;
    reply.assert_status(202);
    let doc = client
        .wait_finished(&gw.url(reply.header("location")))
        .await;
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    let tries: Vec<_> = backend
        .received()
        .into_iter()
        .filter(|r| r.uri.starts_with("/flaky/1/told"))
        .collect();
    assert_eq!(tries.len(), 2);
    for (n, r) in tries.iter().enumerate() {
        let values = |name: &str| -> Vec<String> {
            r.headers
                .get_all(name)
                .iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(values("asyncgate-job-id"), [doc["id"].as_str().unwrap()]);
        assert_eq!(values("asyncgate-attempt"), [(n + 1).to_string()]);
    }
}

#[tokio::test]
async fn job_headers_false_leaves_the_clients_headers_as_they_were() {
    let (backend, gw, client) = setup("", &async_route("/{*p}", "job_headers = false")).await;
    let reply = client
        .send(
            Method::POST,
            &gw.url("/quiet"),
            &[("asyncgate-job-id", "mine")],
            "",
        )
        .await;
    client
        .wait_finished(&gw.url(reply.header("location")))
        .await;
    let received = &backend.received()[0];
    assert_eq!(received.headers["asyncgate-job-id"], "mine");
    assert!(received.headers.get("asyncgate-attempt").is_none());
}
