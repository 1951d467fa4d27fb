//! Shielding the backend: what keeps jobs from reaching a fragile backend
//! when they should not.

mod common;

use common::{async_route, setup};

/// A job still waiting `start_timeout` after it was accepted fails
/// (`expired`) and is never sent, even while the job ahead of it runs on;
/// a job that started in time is not cut short by it.
#[tokio::test]
async fn a_job_not_started_within_start_timeout_fails_expired_and_is_never_sent() {
    let (backend, gw, client) = setup(
        "max_concurrency = 1",
        &async_route("/{*p}", "start_timeout = \"1s\""),
    )
    .await;
    let first = client.post(&gw.url("/hold/first"), "").await;
    backend.started(1).await;
    let second = client.post(&gw.url("/hold/second"), "").await;
    second.assert_status(202);
    let location = gw.url(second.header("location"));
    let doc = client.wait_status(&location, "failed").await;
    assert_eq!(doc["error"]["code"], "expired", "{doc:#}");
    assert!(doc.get("started_at").is_none(), "{doc:#}");
    client
        .get(&format!("{location}/result"))
        .await
        .assert_problem(503, "expired");
    backend.release(1);
    let doc = client
        .wait_status(&gw.url(first.header("location")), "succeeded")
        .await;
    assert_eq!(doc["attempts"], 1);
    let sent: Vec<String> = backend.received().into_iter().map(|r| r.uri).collect();
    assert_eq!(sent, ["/hold/first"]);
}

/// Seconds between two of a job document's RFC 3339 times.
fn seconds_between(from: &serde_json::Value, to: &serde_json::Value) -> i64 {
    let at = |v: &serde_json::Value| {
        humantime::parse_rfc3339(v.as_str().unwrap())
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    };
    at(to) - at(from)
}

/// A backend that answers a job `429` with `Retry-After: 5` holds every job
/// of its upstream, not only that one, for five seconds: the next job waits
/// though places are free, the metrics and the dashboard say why, and then
/// it runs.
#[tokio::test]
async fn a_backend_429_holds_every_job_of_its_upstream_for_its_retry_after() {
    let (backend, gw, client) = setup("max_concurrency = 4", &async_route("/{*p}", "")).await;
    let busy = client
        .post(&gw.url("/busy?status=429&retry_after=5"), "")
        .await;
    let busy = client.wait_finished(&gw.url(busy.header("location"))).await;
    assert_eq!(busy["response"]["status"], 429, "{busy:#}");
    let next = client.post(&gw.url("/after"), "").await;
    let admin = gw.admin.unwrap();
    let metrics = client.get(&format!("http://{admin}/metrics")).await;
    let metrics = String::from_utf8_lossy(&metrics.body).into_owned();
    assert!(
        metrics.contains("asyncgate_upstream_paused{upstream=\"app\",reason=\"backoff\"} 1"),
        "{metrics}"
    );
    let overview = client.get(&format!("http://{admin}/jobs")).await.json();
    assert!(
        overview["upstreams"][0]["held_until"].is_string(),
        "{overview:#}"
    );
    let next = client.wait_finished(&gw.url(next.header("location"))).await;
    assert_eq!(next["status"], "succeeded");
    let waited = seconds_between(&busy["finished_at"], &next["started_at"]);
    assert!(waited >= 4, "started {waited} s after the 429: {next:#}");
    assert_eq!(backend.request_count(), 2);
}
