//! Shielding the backend with a shared store: a backend's `429`, a pause,
//! `start_timeout`, caller quotas and the rate hold across replicas.

use http::Method;

use super::{replica, submit, Replica};
use crate::common::redis::Redis;
use crate::common::{poll_until, Backend, Client};

/// With a shared queue too, a job still waiting past its route's
/// `start_timeout` fails (`expired`) without being sent, while the job
/// ahead of it still runs.
#[tokio::test]
async fn a_shared_queue_fails_a_job_waiting_past_start_timeout() {
    let redis = Redis::start().await;
    let backend = Backend::start().await;
    let config = replica(&redis, &backend, "", "max_concurrency = 1").replace(
        "name = \"held\"\n",
        "name = \"held\"\nstart_timeout = \"1s\"\n",
    );
    let a = Replica::start(&config).await;
    let client = Client::default();
    let first = submit(&client, &a, Method::POST, "/hold/first").await;
    backend.started(1).await;
    let second = submit(&client, &a, Method::POST, "/hold/second").await;
    let doc = client
        .wait_status(&a.url(second.header("location")), "failed")
        .await;
    assert_eq!(doc["error"]["code"], "expired", "{doc:#}");
    backend.release(1);
    client
        .wait_status(&a.url(first.header("location")), "succeeded")
        .await;
    assert_eq!(backend.request_count(), 1, "the expired job was never sent");
}

/// A backend's `429` to a job on one replica holds the upstream on every
/// replica: a job submitted to another waits out the `Retry-After`, though
/// its places are free.
#[tokio::test]
async fn a_backend_429_on_one_replica_holds_the_upstream_on_all() {
    let redis = Redis::start().await;
    let backend = Backend::start().await;
    let config = replica(&redis, &backend, "", "max_concurrency = 4");
    let (a, b) = Replica::pair(&config).await;
    let client = Client::default();
    let busy = submit(
        &client,
        &a,
        Method::POST,
        "/echo/busy?status=429&retry_after=5",
    )
    .await;
    let busy = client.wait_finished(&a.url(busy.header("location"))).await;
    assert_eq!(busy["response"]["status"], 429, "{busy:#}");
    let next = submit(&client, &b, Method::POST, "/echo/after").await;
    let next = client.wait_finished(&b.url(next.header("location"))).await;
    assert_eq!(next["status"], "succeeded");
    let at = |v: &serde_json::Value| {
        humantime::parse_rfc3339(v.as_str().unwrap())
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    let waited = at(&next["started_at"]) - at(&busy["finished_at"]);
    assert!(waited >= 4, "started {waited} s after the 429: {next:#}");
}

/// A pause on one replica's admin listener holds the upstream on every
/// replica; a resume on another sends what waits.
#[tokio::test]
async fn a_pause_on_one_replica_holds_the_upstream_on_all_until_resumed_on_any() {
    let redis = Redis::start().await;
    let backend = Backend::start().await;
    let config = replica(&redis, &backend, "", "max_concurrency = 4");
    let (a, b) = Replica::pair(&config).await;
    let client = Client::default();
    let admin_a = format!("http://{}", a.process.admin_addr().await);
    let admin_b = format!("http://{}", b.process.admin_addr().await);
    client
        .post(&format!("{admin_a}/upstreams/app/pause"), "")
        .await
        .assert_status(200);
    let mut locations = Vec::new();
    for n in 0..4 {
        let r = if n % 2 == 0 { &a } else { &b };
        let reply = submit(&client, r, Method::POST, &format!("/echo/paused/{n}")).await;
        locations.push(reply.header("location").to_owned());
    }
    // Both replicas have looked at the queue since: a job submitted wakes
    // whichever is idle, and a paused upstream gives it nothing.
    poll_until(10, "B to see the pause", async || {
        let listed = client.get(&format!("{admin_b}/upstreams")).await.json();
        (listed["upstreams"][0]["paused"] == true).then_some(())
    })
    .await;
    assert_eq!(backend.request_count(), 0, "nothing was sent while paused");
    client
        .post(&format!("{admin_b}/upstreams/app/resume"), "")
        .await
        .assert_status(200);
    for location in &locations {
        let doc = client.wait_finished(&a.url(location)).await;
        assert_eq!(doc["status"], "succeeded", "{doc:#}");
    }
    assert_eq!(backend.request_count(), 4);
}

/// A caller's waiting jobs are counted across replicas: past the route's
/// `max_queued_per_caller` on any of them, `429 caller-quota`.
#[tokio::test]
async fn max_queued_per_caller_counts_across_replicas() {
    let redis = Redis::start().await;
    let backend = Backend::start().await;
    let config = replica(&redis, &backend, "", "max_concurrency = 1").replace(
        "name = \"held\"\n",
        "name = \"held\"\nmax_queued_per_caller = 2\n",
    );
    let (a, b) = Replica::pair(&config).await;
    let client = Client::default();
    let alice = [("authorization", "Bearer alice")];
    let send =
        async |r: &Replica, path: &str| client.send(Method::POST, &r.url(path), &alice, "").await;
    send(&a, "/hold/running").await.assert_status(202);
    backend.started(1).await;
    send(&a, "/hold/waiting-1").await.assert_status(202);
    send(&b, "/hold/waiting-2").await.assert_status(202);
    send(&b, "/hold/one-too-many")
        .await
        .assert_problem(429, "caller-quota");
    send(&a, "/hold/one-too-many")
        .await
        .assert_problem(429, "caller-quota");
    client
        .send(
            Method::POST,
            &b.url("/hold/bob"),
            &[("authorization", "Bearer bob")],
            "",
        )
        .await
        .assert_status(202);
    backend.release(1);
    backend.started(2).await;
    send(&b, "/hold/later").await.assert_status(202);
    backend.release(10);
}

/// An upstream's `rate` is one for all replicas (a GCRA in Redis): eight
/// jobs submitted half to each of two start no faster than 5/s together.
/// Only the lower bound is checked, less a grain for the time between a
/// replica's start and the backend's clock.
#[tokio::test]
async fn a_rate_holds_across_replicas() {
    let redis = Redis::start().await;
    let backend = Backend::start().await;
    let config = replica(
        &redis,
        &backend,
        "",
        "max_concurrency = 8\nrate = \"5/s\"\nburst = 1",
    );
    let (a, b) = Replica::pair(&config).await;
    let client = Client::default();
    let mut locations = Vec::new();
    for n in 0..8 {
        let to = if n % 2 == 0 { &a } else { &b };
        let reply = submit(&client, to, Method::POST, &format!("/echo/{n}")).await;
        locations.push(reply.header("location").to_owned());
    }
    for location in &locations {
        client.wait_status(&a.url(location), "succeeded").await;
    }
    let mut starts: Vec<std::time::Instant> = backend.received().iter().map(|r| r.at).collect();
    starts.sort_unstable();
    assert_eq!(starts.len(), 8);
    let grain = std::time::Duration::from_millis(50);
    for (k, at) in starts.iter().enumerate() {
        let earliest = std::time::Duration::from_millis(200 * k as u64);
        let after = at.duration_since(starts[0]);
        assert!(
            after + grain >= earliest,
            "start {k} came {after:?} after the first, before {earliest:?}"
        );
    }
}

/// The shared queue starts jobs by urgency too (one stream per urgency,
/// read most urgent first): with one place across two replicas, jobs
/// submitted to either with RFC 9218 `Priority` start most urgent first,
/// then in order.
#[tokio::test]
async fn the_shared_queue_starts_jobs_by_urgency() {
    let redis = Redis::start().await;
    let backend = Backend::start().await;
    let config = replica(&redis, &backend, "", "max_concurrency = 1");
    let (a, b) = Replica::pair(&config).await;
    let client = Client::default();
    let post = async |to: &Replica, path: &str, priority: Option<&str>| {
        let headers: Vec<(&str, &str)> = priority.map(|p| ("priority", p)).into_iter().collect();
        let reply = client.send(Method::POST, &to.url(path), &headers, "").await;
        reply.assert_status(202);
        reply.header("location").to_owned()
    };
    post(&a, "/hold/first", None).await;
    backend.started(1).await;
    post(&a, "/hold/low", Some("u=7")).await;
    post(&b, "/hold/plain", None).await;
    let urgent = post(&b, "/hold/urgent", Some("u=0")).await;
    post(&a, "/hold/high", Some("u=1")).await;
    let doc = client.get(&a.url(&urgent)).await.json();
    assert_eq!(doc["priority"], 0, "{doc:#}");
    backend.release(10);
    backend.started(5).await;
    let sent: Vec<String> = backend.received().into_iter().map(|r| r.uri).collect();
    assert_eq!(
        sent,
        [
            "/hold/first",
            "/hold/urgent",
            "/hold/high",
            "/hold/plain",
            "/hold/low"
        ]
    );
}
