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
