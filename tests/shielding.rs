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

/// A gateway binary on the disk store with an admin listener on a port of
/// its own, its config rewritable.
fn paused_config(backend: &common::Backend, admin_port: u16) -> String {
    format!(
        "[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n{}",
        common::config(&backend.url(), "", &async_route("/{*p}", ""))
    )
}

/// An upstream paused by hand takes submissions and sends nothing; the
/// pause holds across a reload and a restart; a resume sends what waits.
#[tokio::test]
async fn a_paused_upstream_accepts_sends_nothing_and_stays_paused_across_reload_and_restart() {
    let backend = common::Backend::start().await;
    let admin_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let text = paused_config(&backend, admin_port);
    let mut gw = common::process::Running::start(&text).await;
    let base = format!("http://{}", gw.addr().await);
    let admin = format!("http://127.0.0.1:{admin_port}");
    let client = common::Client::default();
    let paused = client
        .post(&format!("{admin}/upstreams/app/pause"), "")
        .await;
    paused.assert_status(200);
    assert_eq!(paused.json()["paused"], true);
    let mut locations = Vec::new();
    for n in 0..3 {
        let reply = client.post(&format!("{base}/paused/{n}"), "").await;
        reply.assert_status(202);
        locations.push(reply.header("location").to_owned());
    }
    gw.signal("HUP");
    gw.wait_line("reloaded the config").await;
    let listed = client.get(&format!("{admin}/upstreams")).await.json();
    assert_eq!(listed["upstreams"][0]["paused"], true, "{listed:#}");
    assert_eq!(listed["upstreams"][0]["queued"], 3, "{listed:#}");
    let metrics = client.get(&format!("{admin}/metrics")).await;
    assert!(String::from_utf8_lossy(&metrics.body)
        .contains("asyncgate_upstream_paused{upstream=\"app\",reason=\"manual\"} 1"));
    gw.sigterm();
    assert_eq!(gw.exit_code().await, 0);
    assert_eq!(backend.request_count(), 0, "nothing was sent while paused");

    let gw =
        common::process::Running::start_exact(&std::fs::read_to_string(&gw.config().0).unwrap())
            .await;
    let base = format!("http://{}", gw.addr().await);
    gw.wait_line("still paused").await;
    let listed = client.get(&format!("{admin}/upstreams")).await.json();
    assert_eq!(listed["upstreams"][0]["paused"], true, "{listed:#}");
    assert_eq!(backend.request_count(), 0);
    client
        .post(&format!("{admin}/upstreams/app/resume"), "")
        .await
        .assert_status(200);
    for location in &locations {
        let doc = client
            .wait_finished(&format!("{base}{}", common::path_of(location)))
            .await;
        assert_eq!(doc["status"], "succeeded", "{doc:#}");
    }
    assert_eq!(backend.request_count(), 3);
    client
        .post(&format!("{admin}/upstreams/nope/pause"), "")
        .await
        .assert_status(404);
    client
        .get(&format!("{admin}/upstreams/app/pause"))
        .await
        .assert_status(405);
}

/// With `[admin] token`, everything but the probes and metrics asks for it.
#[tokio::test]
async fn an_admin_token_guards_all_but_the_probes_and_metrics() {
    let backend = common::Backend::start().await;
    let text = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"a-token-of-twenty-chars\"\n{}",
        common::config(&backend.url(), "", &async_route("/{*p}", ""))
    );
    let gw = common::TestGateway::start(&text).await;
    let admin = format!("http://{}", gw.admin.unwrap());
    let client = common::Client::default();
    for open in ["/healthz", "/readyz", "/metrics", "/"] {
        client
            .get(&format!("{admin}{open}"))
            .await
            .assert_status(200);
    }
    let refused = client.get(&format!("{admin}/jobs")).await;
    refused.assert_status(401);
    assert!(refused.header("www-authenticate").starts_with("Bearer"));
    client
        .send(
            http::Method::POST,
            &format!("{admin}/upstreams/app/pause"),
            &[],
            "",
        )
        .await
        .assert_status(401);
    let bearer = [("authorization", "Bearer a-token-of-twenty-chars")];
    client
        .send(http::Method::GET, &format!("{admin}/jobs"), &bearer, "")
        .await
        .assert_status(200);
    client
        .send(
            http::Method::POST,
            &format!("{admin}/upstreams/app/pause"),
            &bearer,
            "",
        )
        .await
        .assert_status(200);
}

/// `max_queued_per_caller`: a caller with as many jobs waiting as the
/// route allows gets `429 caller-quota` and nothing is stored; another
/// caller is not held back; a repeat of an earlier request's idempotency
/// key is still answered; a place frees as a job starts.
#[tokio::test]
async fn a_caller_past_max_queued_per_caller_gets_429_and_others_are_not_held_back() {
    let (backend, gw, client) = setup(
        "max_concurrency = 1",
        &async_route("/{*p}", "max_queued_per_caller = 2"),
    )
    .await;
    let alice = [("authorization", "Bearer alice")];
    let keyed = [("authorization", "Bearer alice"), ("idempotency-key", "k1")];
    let send = async |path: &str, headers: &[(&str, &str)]| {
        client
            .send(http::Method::POST, &gw.url(path), headers, "")
            .await
    };
    send("/hold/running", &alice).await.assert_status(202);
    backend.started(1).await;
    send("/hold/waiting-1", &alice).await.assert_status(202);
    let repeatable = send("/hold/waiting-2", &keyed).await;
    repeatable.assert_status(202);
    let refused = send("/hold/one-too-many", &alice).await;
    refused.assert_problem(429, "caller-quota");
    assert!(refused.header("retry-after").parse::<u64>().unwrap() >= 1);
    let again = send("/hold/waiting-2", &keyed).await;
    again.assert_status(202);
    assert_eq!(again.header("location"), repeatable.header("location"));
    send("/hold/bob", &[("authorization", "Bearer bob")])
        .await
        .assert_status(202);
    // The running job ends and the first waiting one starts: a place frees.
    backend.release(1);
    backend.started(2).await;
    send("/hold/later", &alice).await.assert_status(202);
    backend.release(10);
    let sent: Vec<String> = backend.received().into_iter().map(|r| r.uri).collect();
    assert!(!sent.contains(&"/hold/one-too-many".to_owned()), "{sent:?}");
    let admin = gw.admin.unwrap();
    let metrics = client.get(&format!("http://{admin}/metrics")).await;
    assert!(String::from_utf8_lossy(&metrics.body)
        .contains("asyncgate_rejected_total{route=\"jobs\",reason=\"caller-quota\"} 1"));
}

/// Submits `count` jobs on `path_prefix/{n}` with `headers`; their
/// `Location`s.
async fn submit_many(
    client: &common::Client,
    gw: &common::TestGateway,
    path_prefix: &str,
    count: usize,
    headers: &[(&str, &str)],
) -> Vec<String> {
    let mut locations = Vec::new();
    for n in 0..count {
        let url = gw.url(&format!("{path_prefix}/{n}"));
        let reply = client.send(http::Method::POST, &url, headers, "").await;
        reply.assert_status(202);
        locations.push(reply.header("location").to_owned());
    }
    locations
}

/// The paths the backend received, in the order their requests came.
fn sent(backend: &common::Backend) -> Vec<String> {
    backend.received().into_iter().map(|r| r.uri).collect()
}

/// `rate = "5/s"` with `burst = 2`: though eight places are free, two jobs
/// start at once and then one each 200 ms, in order. Only the lower bound
/// is checked (a slow machine starts them later, never sooner), less a
/// grain for the time between the gateway's start and the backend's clock.
#[tokio::test]
async fn under_a_rate_jobs_start_no_faster_than_it_allows() {
    let (backend, gw, client) = setup(
        "max_concurrency = 8\nrate = \"5/s\"\nburst = 2",
        &async_route("/{*p}", ""),
    )
    .await;
    let locations = submit_many(&client, &gw, "/paced", 6, &[]).await;
    for location in &locations {
        client.wait_status(&gw.url(location), "succeeded").await;
    }
    let received = backend.received();
    let uris: Vec<&str> = received.iter().map(|r| r.uri.as_str()).collect();
    assert_eq!(
        uris,
        ["/paced/0", "/paced/1", "/paced/2", "/paced/3", "/paced/4", "/paced/5"]
    );
    let grain = std::time::Duration::from_millis(25);
    for (k, r) in received.iter().enumerate().skip(2) {
        let earliest = std::time::Duration::from_millis(200 * (k as u64 - 1));
        let after = r.at.duration_since(received[0].at);
        assert!(
            after + grain >= earliest,
            "job {k} started {after:?} after the first, before {earliest:?}"
        );
    }
    let admin = gw.admin.unwrap();
    let listed = client
        .get(&format!("http://{admin}/upstreams"))
        .await
        .json();
    assert_eq!(listed["upstreams"][0]["rate"], "5/s", "{listed:#}");
    assert_eq!(listed["upstreams"][0]["burst"], 2, "{listed:#}");
}

/// With one place, waiting jobs start by urgency (RFC 9218 `Priority`),
/// then in order; an invalid urgency counts as none (`u=3`); a route's
/// `priority` sets its default, and with `priority_header = false` the
/// client's is ignored. The document shows each job's urgency.
#[tokio::test]
async fn waiting_jobs_start_by_urgency_then_in_order() {
    let routes = format!(
        "{}{}",
        async_route("/hold/{*p}", ""),
        "[[routes]]\nname = \"batch\"\npath = \"/batch/{*p}\"\nupstream = \"app\"\n\
         mode = \"async\"\npriority = 6\npriority_header = false\n"
    );
    let (backend, gw, client) = setup("max_concurrency = 1", &routes).await;
    let post = async |path: &str, priority: Option<&str>| {
        let headers: Vec<(&str, &str)> = priority.map(|p| ("priority", p)).into_iter().collect();
        let reply = client
            .send(http::Method::POST, &gw.url(path), &headers, "")
            .await;
        reply.assert_status(202);
        client.get(&gw.url(reply.header("location"))).await.json()
    };
    post("/hold/first", None).await;
    backend.started(1).await;
    let batch = post("/batch/late", Some("u=0")).await;
    assert_eq!(
        batch["priority"], 6,
        "the route's, not the client's: {batch:#}"
    );
    assert_eq!(post("/hold/low", Some("u=6, i")).await["priority"], 6);
    assert_eq!(post("/hold/plain", None).await["priority"], 3);
    assert_eq!(post("/hold/urgent", Some("u=0")).await["priority"], 0);
    assert_eq!(post("/hold/invalid", Some("u=9")).await["priority"], 3);
    backend.release(10);
    backend.started(6).await;
    assert_eq!(
        sent(&backend),
        [
            "/hold/first",
            "/hold/urgent",
            "/hold/plain",
            "/hold/invalid",
            "/batch/late",
            "/hold/low"
        ]
    );
}

/// Within one urgency, waiting jobs start round-robin across callers (the
/// credentials that bind them): caller A's 20 jobs, then caller B's 2, and
/// B's start before A's third and fourth. With `fair = false`, plain order.
#[tokio::test]
async fn callers_take_turns_so_one_callers_burst_does_not_starve_another() {
    for fair in [true, false] {
        let (backend, gw, client) = setup(
            &format!("max_concurrency = 1\nfair = {fair}"),
            &async_route("/{*p}", ""),
        )
        .await;
        let alice = [("authorization", "Bearer alice")];
        let bob = [("authorization", "Bearer bob")];
        submit_many(&client, &gw, "/hold/a", 20, &alice).await;
        backend.started(1).await;
        submit_many(&client, &gw, "/hold/b", 2, &bob).await;
        backend.release(30);
        backend.started(22).await;
        let sent = sent(&backend);
        let at = |path: &str| sent.iter().position(|s| s == path).unwrap();
        if fair {
            assert!(at("/hold/b/0") < at("/hold/a/2"), "{sent:?}");
            assert!(at("/hold/b/1") < at("/hold/a/3"), "{sent:?}");
        } else {
            assert_eq!(at("/hold/b/0"), 20, "plain order: {sent:?}");
        }
    }
}

/// `asyncgate_upstream_concurrency_limit{upstream="app"}` now.
async fn concurrency_limit(client: &common::Client, gw: &common::TestGateway) -> u64 {
    let metrics = client
        .get(&format!("http://{}/metrics", gw.admin.unwrap()))
        .await;
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    let line = text
        .lines()
        .find(|l| l.starts_with("asyncgate_upstream_concurrency_limit{upstream=\"app\"}"))
        .unwrap_or_else(|| panic!("no concurrency limit in {text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// `adaptive = true`: the limit starts at 1 (of five jobs, one runs though
/// `max_concurrency` is 8), grows by about one place per round of jobs
/// that went well, and each `429` takes a tenth off; the metric and
/// `GET /upstreams` show it.
#[tokio::test]
async fn an_adaptive_upstream_starts_at_one_grows_with_success_and_backs_off_on_429() {
    let (backend, gw, client) = setup(
        "max_concurrency = 8\nadaptive = true",
        &async_route("/{*p}", ""),
    )
    .await;
    assert_eq!(concurrency_limit(&client, &gw).await, 1);
    let admin = gw.admin.unwrap();
    // Five held jobs: as many run as the limit lets, the others wait.
    let round = async |prefix: &str, running: u64, started: usize| {
        let locations = submit_many(&client, &gw, prefix, 5, &[]).await;
        backend.started(started).await;
        let listed = client
            .get(&format!("http://{admin}/upstreams"))
            .await
            .json();
        let app = &listed["upstreams"][0];
        assert_eq!(
            (app["running"].as_u64(), app["queued"].as_u64()),
            (Some(running), Some(5 - running)),
            "{listed:#}"
        );
        assert_eq!(app["concurrency_limit"], running, "{listed:#}");
        backend.release(5);
        for location in &locations {
            client.wait_status(&gw.url(location), "succeeded").await;
        }
    };
    round("/hold/first", 1, 1).await;
    // 1, 2, 2.5, 2.9, 3.24, 3.55: five that went well.
    assert_eq!(concurrency_limit(&client, &gw).await, 3);
    round("/hold/second", 3, 8).await;
    // 3.83, 4.09, 4.34, 4.57, 4.79.
    assert_eq!(concurrency_limit(&client, &gw).await, 4);
    for _ in 0..3 {
        let busy = client
            .post(&gw.url("/busy?status=429&retry_after=0"), "")
            .await;
        client.wait_finished(&gw.url(busy.header("location"))).await;
    }
    // 4.79 × 0.9³ = 3.49.
    assert_eq!(concurrency_limit(&client, &gw).await, 3);
}
