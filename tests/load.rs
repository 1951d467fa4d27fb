//! Bounded load: many concurrent jobs, the concurrency limit, the queue bound.

mod common;

use std::sync::Arc;

use common::{async_route, config, within, Backend, Client, TestGateway};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_submissions_all_complete_with_their_own_results() {
    let backend = Arc::new(Backend::start().await);
    let toml = config(
        &backend.url(),
        "max_concurrency = 4\nmax_queue = 1000",
        &async_route("/{*p}", ""),
    );
    let gw = Arc::new(TestGateway::start(&toml).await);
    let client = Client::default();
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let (client, gw) = (client.clone(), Arc::clone(&gw));
        tasks.push(tokio::spawn(async move {
            let body = format!("job-{i}");
            let reply = client
                .post(&gw.url(&format!("/work/{i}")), body.clone())
                .await;
            reply.assert_status(202);
            (body, reply.header("location").to_owned())
        }));
    }
    let mut accepted = Vec::new();
    for t in tasks {
        accepted.push(within(60, "a submission", t).await.unwrap());
    }
    // Wait for the backend to have seen every job, then check each one; a
    // thousand clients polling at once would only measure the polling.
    backend.started(1000).await;
    for (body, location) in accepted {
        client.wait_status(&gw.url(&location), "succeeded").await;
        let result = client.get(&gw.url(&format!("{location}/result"))).await;
        assert_eq!(result.status, 200);
        assert_eq!(result.body, body);
    }
    assert_eq!(backend.request_count(), 1000);
    assert!(
        backend.max_in_flight() <= 4,
        "backend saw {} at once",
        backend.max_in_flight()
    );
}

#[tokio::test]
async fn full_queue_is_503_with_retry_after_and_loses_nothing_accepted() {
    let backend = Backend::start().await;
    let toml = config(
        &backend.url(),
        "max_concurrency = 1\nmax_queue = 2",
        &async_route("/{*p}", ""),
    );
    let gw = TestGateway::start(&toml).await;
    let client = Client::default();
    let mut accepted = Vec::new();
    let first = client.post(&gw.url("/hold/0"), "0").await;
    backend.started(1).await;
    accepted.push(first);
    for i in 1..3 {
        let r = client
            .post(&gw.url(&format!("/hold/{i}")), i.to_string())
            .await;
        assert_eq!(r.status, 202);
        accepted.push(r);
    }
    let refused = client.post(&gw.url("/hold/3"), "3").await;
    refused.assert_problem(503, "queue-full");
    assert!(refused.header("retry-after").parse::<u64>().unwrap() >= 1);

    backend.release(3);
    for (i, r) in accepted.iter().enumerate() {
        let loc = r.header("location");
        client.wait_status(&gw.url(loc), "succeeded").await;
        let result = client.get(&gw.url(&format!("{loc}/result"))).await;
        assert_eq!(result.body, i.to_string());
    }
    assert_eq!(backend.request_count(), 3);
    assert_eq!(backend.max_in_flight(), 1);
    // With the queue drained, submissions are accepted again.
    assert_eq!(client.post(&gw.url("/again"), "").await.status, 202);
}

#[tokio::test]
async fn full_store_budget_is_503_and_keeps_every_accepted_result() {
    let backend = Backend::start().await;
    let toml = format!(
        "[store]\nmax_bytes = \"4KiB\"\n{}",
        config(&backend.url(), "", &async_route("/{*p}", ""))
    );
    let gw = TestGateway::start(&toml).await;
    let client = Client::default();
    // Each job costs its bookkeeping and its 1000-byte result: the budget
    // runs out after a few, and those few stay retrievable.
    let mut accepted = Vec::new();
    let refused = within(20, "the budget to run out", async {
        loop {
            let r = client.post(&gw.url("/big/1000"), "").await;
            if r.status == 503 {
                return r;
            }
            assert_eq!(r.status, 202);
            let loc = r.header("location").to_owned();
            client.wait_status(&gw.url(&loc), "succeeded").await;
            accepted.push(loc);
        }
    })
    .await;
    refused.assert_problem(503, "store-full");
    assert!(refused.header("retry-after").parse::<u64>().unwrap() >= 1);
    assert!(!accepted.is_empty());
    for loc in &accepted {
        let result = client.get(&gw.url(&format!("{loc}/result"))).await;
        assert_eq!(result.body.len(), 1000);
    }
    // Deleting a result frees its bytes for new jobs.
    assert_eq!(client.delete(&gw.url(&accepted[0])).await.status, 204);
    assert_eq!(client.post(&gw.url("/x"), "").await.status, 202);
}
