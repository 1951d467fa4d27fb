//! Several gateway processes (the built binary) sharing one real Redis,
//! which the test starts itself on a free port, or a real Redis Cluster.

mod cluster;
#[path = "../common/mod.rs"]
mod common;
mod shielding;
mod webhooks;

use common::process::Running;
use common::redis::{Redis, Shared};
use common::{poll_until, sse_statuses, within, Backend, Client, Reply};
use http::Method;
use http_body_util::BodyExt;

/// A replica's config: the shared store, one upstream, async routes for
/// every method on `/hold/…` (held by the backend until released) and
/// `/echo/…` (answered at once); everything else proxied.
fn replica(
    store: &impl Shared,
    backend: &Backend,
    extra_store: &str,
    extra_upstream: &str,
) -> String {
    format!(
        "[store]\n{}\n{extra_store}\n\
         [upstreams.app]\nurl = \"{}\"\n{extra_upstream}\n\
         [[routes]]\nname = \"held\"\npath = \"/hold/{{*p}}\"\nupstream = \"app\"\n\
         [[routes]]\nname = \"fast\"\npath = \"/echo/{{*p}}\"\nupstream = \"app\"\n\
         [default]\nupstream = \"app\"\n",
        store.store_keys(),
        backend.url()
    )
}

struct Replica {
    process: Running,
    base: String,
}

impl Replica {
    async fn start(config: &str) -> Replica {
        let process = Running::start(config).await;
        let base = format!("http://{}", process.addr().await);
        Replica { process, base }
    }

    /// Two replicas on the same config, started side by side.
    async fn pair(config: &str) -> (Replica, Replica) {
        tokio::join!(Replica::start(config), Replica::start(config))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, common::path_of(path))
    }

    /// Ends it as a crash would: no drain, no goodbye.
    fn kill(&mut self) {
        self.process.kill();
    }
}

async fn submit(client: &Client, replica: &Replica, method: Method, path: &str) -> Reply {
    let reply = client
        .send(method, &replica.url(path), &[], "payload")
        .await;
    reply.assert_status(202);
    reply
}

#[tokio::test]
async fn any_replica_answers_for_any_job() {
    answers_anywhere(&Redis::start().await).await;
}

/// Submitted on A: seen running on B, its end heard by a long-poll on C
/// and an event stream on B, its result read on C, deleted on B.
async fn answers_anywhere(store: &impl Shared) {
    let backend = Backend::start().await;
    let config = replica(store, &backend, "", "");
    let (a, b, c) = tokio::join!(
        Replica::start(&config),
        Replica::start(&config),
        Replica::start(&config)
    );
    let client = Client::default();
    let reply = submit(&client, &a, Method::POST, "/hold/report").await;
    let location = reply.header("location").to_owned();
    backend.started(1).await;
    let doc = client.get(&b.url(&location)).await.json();
    assert_eq!(doc["status"], "running");
    // A long-poll on C and an event stream on B are woken by the change
    // wherever it is made.
    let poll = {
        let (client, url) = (client.clone(), c.url(&format!("{location}?wait=30")));
        tokio::spawn(async move { client.get(&url).await })
    };
    let mut events = EventStream::open(&b.url(&location)).await;
    events.until(1).await;
    backend.release(1);
    assert_eq!(events.read_to_end().await, ["running", "succeeded"]);
    let doc = within(10, "the long-poll on another replica", poll)
        .await
        .unwrap()
        .json();
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    let result = client.get(&c.url(&format!("{location}/result"))).await;
    assert_eq!(result.status, 200);
    assert_eq!(&result.body[..], b"payload");
    assert_eq!(result.header("x-custom"), "kept");
    // Deleted on one, gone on all.
    assert_eq!(client.delete(&b.url(&location)).await.status, 204);
    client
        .get(&a.url(&location))
        .await
        .assert_problem(410, "job-gone");
    assert_eq!(backend.request_count(), 1);
}

#[tokio::test]
async fn cancel_on_one_replica_drops_the_backend_request_on_the_replica_running_it() {
    cancel_across(&Redis::start().await).await;
}

async fn cancel_across(store: &impl Shared) {
    let backend = Backend::start().await;
    let config = replica(store, &backend, "", "");
    // A alone can take the job, so A is the one running it.
    let a = Replica::start(&config).await;
    let client = Client::default();
    let reply = submit(&client, &a, Method::POST, "/hold/x").await;
    let location = reply.header("location").to_owned();
    backend.started(1).await;
    let b = Replica::start(&config).await;
    let canceled = client.delete(&b.url(&location)).await;
    assert_eq!(canceled.status, 200);
    assert_eq!(canceled.json()["status"], "canceled");
    backend.disconnects(1).await;
    let doc = client.get(&a.url(&location)).await.json();
    assert_eq!(doc["status"], "canceled");
}

#[tokio::test]
async fn an_idle_replica_is_woken_by_the_next_job_queued() {
    let redis = Redis::start().await;
    let backend = Backend::start().await;
    // Its look for lost jobs comes every minute: only the wake published
    // when a job is queued can start one sooner.
    let config = replica(&redis, &backend, "lease = \"120s\"", "");
    let a = Replica::start(&config).await;
    let client = Client::default();
    for n in 1..=2 {
        let location = submit(&client, &a, Method::POST, "/hold/x")
            .await
            .header("location")
            .to_owned();
        within(10, "the job to be taken at once", backend.started(n)).await;
        backend.release(1);
        client.wait_status(&a.url(&location), "succeeded").await;
    }
}

/// Starts A alone with a held job on it, then B, then kills A.
async fn kill_the_replica_running(
    store: &impl Shared,
    method: Method,
) -> (Backend, Replica, String) {
    let backend = Backend::start().await;
    let config = replica(store, &backend, "lease = \"1s\"", "");
    let mut a = Replica::start(&config).await;
    let client = Client::default();
    let reply = submit(&client, &a, method, "/hold/x").await;
    let location = reply.header("location").to_owned();
    backend.started(1).await;
    let b = Replica::start(&config).await;
    a.kill();
    backend.disconnects(1).await;
    (backend, b, location)
}

#[tokio::test]
async fn a_killed_replica_s_idempotent_job_is_sent_again_by_another() {
    sent_again_by_another(&Redis::start().await).await;
}

async fn sent_again_by_another(store: &impl Shared) {
    let (backend, b, location) = kill_the_replica_running(store, Method::PUT).await;
    // B takes it over once A's lease has run out, and sends it again.
    backend.started(2).await;
    backend.release(1);
    let client = Client::default();
    let doc = client.wait_status(&b.url(&location), "succeeded").await;
    assert_eq!(doc["attempts"], 2, "{doc:#}");
    assert_eq!(backend.request_count(), 2);
}

#[tokio::test]
async fn a_killed_replica_s_non_idempotent_job_fails_as_lost() {
    let redis = Redis::start().await;
    let (backend, b, location) = kill_the_replica_running(&redis, Method::POST).await;
    let client = Client::default();
    let doc = client.wait_status(&b.url(&location), "failed").await;
    assert_eq!(
        doc["error"]["type"], "urn:asyncgate:problem:job-lost",
        "{doc:#}"
    );
    assert_eq!(doc["attempts"], 1);
    let result = client.get(&b.url(&format!("{location}/result"))).await;
    result.assert_problem(502, "job-lost");
    assert_eq!(backend.request_count(), 1, "a POST is never sent twice");
}

#[tokio::test]
async fn redis_down_refuses_submissions_keeps_proxying_and_recovers_by_itself() {
    let mut redis = Redis::start().await;
    let backend = Backend::start().await;
    let a = Replica::start(&replica(&redis, &backend, "", "")).await;
    let client = Client::default();
    let before = submit(&client, &a, Method::POST, "/hold/before").await;
    let before = before.header("location").to_owned();
    backend.started(1).await;

    redis.down().await;
    let refused = client.post(&a.url("/echo/x"), "x").await;
    refused.assert_problem(503, "store-unavailable");
    assert!(!refused.header("retry-after").is_empty());
    let proxied = client.post(&a.url("/plain?status=201"), "through").await;
    assert_eq!(proxied.status, 201);
    assert_eq!(&proxied.body[..], b"through");
    // The held job ends while Redis is away: its outcome waits to be recorded.
    backend.release(1);

    redis.up().await;
    let reply = poll_until(20, "submissions to work again", async || {
        let reply = client.post(&a.url("/echo/after"), "y").await;
        (reply.status == 202).then_some(reply)
    })
    .await;
    let after = reply.header("location").to_owned();
    client.wait_status(&a.url(&after), "succeeded").await;
    let doc = client.wait_status(&a.url(&before), "succeeded").await;
    assert_eq!(
        doc["attempts"], 1,
        "kept across the restart, sent once: {doc:#}"
    );
}

#[tokio::test]
async fn a_thousand_submissions_across_three_replicas_complete_within_max_concurrency() {
    const JOBS: usize = 1000;
    const MAX: usize = 4;
    let redis = Redis::start().await;
    let backend = std::sync::Arc::new(Backend::start().await);
    let config = replica(&redis, &backend, "", &format!("max_concurrency = {MAX}"));
    let replicas = tokio::join!(
        Replica::start(&config),
        Replica::start(&config),
        Replica::start(&config)
    );
    let replicas = [replicas.0, replicas.1, replicas.2];
    // Each request is held until MAX - 1 more have reached the backend, so
    // the backend sees as many at once as the gateways allow, and more if
    // they allowed more.
    let releaser = {
        let backend_started = std::sync::Arc::clone(&backend);
        tokio::spawn(async move {
            for n in 1..=JOBS {
                backend_started.started((n + MAX - 1).min(JOBS)).await;
                backend_started.release(1);
            }
        })
    };
    let client = Client::default();
    let submissions = (0..JOBS).map(|i| {
        let client = client.clone();
        let url = replicas[i % 3].url(&format!("/hold/{i}"));
        async move {
            let reply = client.post(&url, format!("job {i}")).await;
            assert_eq!(reply.status, 202);
            reply.header("location").to_owned()
        }
    });
    let locations = within(60, "1000 submissions", futures_join_all(submissions)).await;
    within(120, "every job to be released", releaser)
        .await
        .unwrap();
    for (i, location) in locations.iter().enumerate() {
        let doc = client
            .wait_status(&replicas[(i + 1) % 3].url(location), "succeeded")
            .await;
        assert_eq!(doc["attempts"], 1);
    }
    assert_eq!(backend.request_count(), JOBS);
    assert_eq!(
        backend.max_in_flight(),
        MAX,
        "max_concurrency holds across replicas"
    );
}

/// `join_all` without pulling in a futures crate: each on its own task.
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

/// A Server-Sent Events stream of a job, read as it comes.
struct EventStream {
    body: hyper::body::Incoming,
    text: String,
}

impl EventStream {
    async fn open(url: &str) -> EventStream {
        let client: hyper_util::client::legacy::Client<_, http_body_util::Empty<bytes::Bytes>> =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http();
        let req = http::Request::get(url)
            .header("accept", "text/event-stream")
            .body(http_body_util::Empty::new())
            .unwrap();
        let res = within(10, "the event stream to open", client.request(req))
            .await
            .unwrap();
        assert_eq!(res.headers()["content-type"], "text/event-stream");
        EventStream {
            body: res.into_body(),
            text: String::new(),
        }
    }

    /// Reads until `n` events have come.
    async fn until(&mut self, n: usize) {
        while sse_statuses(&self.text).len() < n {
            let frame = within(10, "an event", self.body.frame())
                .await
                .unwrap()
                .unwrap();
            if let Ok(data) = frame.into_data() {
                self.text.push_str(std::str::from_utf8(&data).unwrap());
            }
        }
    }

    /// Reads to the end of the stream: the statuses of every event.
    async fn read_to_end(mut self) -> Vec<String> {
        let rest = within(10, "the stream to end", self.body.collect())
            .await
            .unwrap();
        self.text
            .push_str(std::str::from_utf8(&rest.to_bytes()).unwrap());
        sse_statuses(&self.text)
    }
}

#[tokio::test]
async fn a_replica_that_lost_its_lease_cannot_overwrite_the_one_that_took_over() {
    let redis = Redis::start().await;
    let backend = Backend::start().await;
    let config = replica(&redis, &backend, "lease = \"1s\"", "");
    let a = Replica::start(&config).await;
    let client = Client::default();
    let reply = submit(&client, &a, Method::PUT, "/hold/x").await;
    let location = reply.header("location").to_owned();
    let id = reply.json()["id"].as_str().unwrap().to_owned();
    backend.started(1).await;
    let b = Replica::start(&config).await;
    // Paused, A renews nothing; B takes the job over and sends it again.
    a.process.signal("STOP");
    backend.started(2).await;
    // Both requests are answered; A's answer waits in its socket.
    backend.release(2);
    let doc = client.wait_status(&b.url(&location), "succeeded").await;
    assert_eq!(doc["attempts"], 2);
    a.process.signal("CONT");
    a.process
        .wait_for("A giving the job up", |l| {
            l.contains(&id) && (l.contains("lease lost") || l.contains("outcome dropped"))
        })
        .await;
    let result = client.get(&b.url(&format!("{location}/result"))).await;
    assert_eq!(result.header("x-request-seq"), "2", "B's answer stands");
    let doc = client.get(&a.url(&location)).await.json();
    assert_eq!(doc["attempts"], 2);
}

#[tokio::test]
async fn the_queue_bound_holds_across_replicas() {
    let redis = Redis::start().await;
    let backend = Backend::start().await;
    let config = replica(&redis, &backend, "", "max_concurrency = 1\nmax_queue = 2");
    let (a, b) = Replica::pair(&config).await;
    let client = Client::default();
    submit(&client, &a, Method::POST, "/hold/running").await;
    backend.started(1).await;
    submit(&client, &b, Method::POST, "/hold/waiting-1").await;
    submit(&client, &a, Method::POST, "/hold/waiting-2").await;
    let refused = client.post(&b.url("/hold/one-too-many"), "").await;
    refused.assert_problem(503, "queue-full");
    assert!(!refused.header("retry-after").is_empty());
    backend.release(3);
    backend.started(3).await;
    assert_eq!(backend.max_in_flight(), 1);
}

#[tokio::test]
async fn the_byte_budget_holds_across_replicas() {
    let redis = Redis::start().await;
    let backend = Backend::start().await;
    // Two jobs' bookkeeping (1 KiB each) and small requests fit; a third does not.
    let config = replica(
        &redis,
        &backend,
        "max_bytes = \"3KiB\"",
        "max_concurrency = 1",
    );
    let (a, b) = Replica::pair(&config).await;
    let client = Client::default();
    submit(&client, &a, Method::POST, "/hold/1").await;
    submit(&client, &b, Method::POST, "/hold/2").await;
    let refused = client.post(&a.url("/hold/3"), "payload").await;
    refused.assert_problem(503, "store-full");
    backend.release(2);
}

#[tokio::test]
async fn results_expire_by_redis_ttl_to_410_for_their_owner_then_404_on_every_replica() {
    let redis = Redis::start().await;
    let backend = Backend::start().await;
    let config = replica(
        &redis,
        &backend,
        "result_ttl = \"1s\"\ntombstone_ttl = \"1s\"",
        "",
    );
    let (a, b) = Replica::pair(&config).await;
    let client = Client::default();
    let alice = [("authorization", "Bearer alice")];
    let reply = client
        .send(Method::POST, &a.url("/echo/x"), &alice, "payload")
        .await;
    reply.assert_status(202);
    let location = reply.header("location").to_owned();
    client
        .wait_status_as(&b.url(&location), "succeeded", &alice)
        .await;
    for (status, kind) in [(410, "job-gone"), (404, "job-not-found")] {
        let reply = poll_until(10, &format!("the job to answer {status}"), async || {
            let reply = client
                .send(Method::GET, &b.url(&location), &alice, "")
                .await;
            (reply.status == status).then_some(reply)
        })
        .await;
        reply.assert_problem(status, kind);
        // The tombstone keeps its owner: to anyone else the job never was.
        client
            .send(
                Method::GET,
                &a.url(&location),
                &[("authorization", "Bearer bob")],
                "",
            )
            .await
            .assert_problem(404, "job-not-found");
    }
}

#[tokio::test]
async fn the_same_idempotency_key_on_two_replicas_makes_one_job() {
    let redis = Redis::start().await;
    let backend = Backend::start().await;
    let config = replica(&redis, &backend, "", "");
    let (a, b) = Replica::pair(&config).await;
    let client = Client::default();
    let key = [("idempotency-key", "order-42")];
    let sends = (0..20).map(|i| {
        let client = client.clone();
        let url = if i % 2 == 0 {
            a.url("/echo/order")
        } else {
            b.url("/echo/order")
        };
        async move { client.send(Method::POST, &url, &key, "same").await }
    });
    let replies = within(20, "20 keyed submissions", futures_join_all(sends)).await;
    let ids: std::collections::HashSet<String> = replies
        .iter()
        .map(|r| r.json()["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 1, "one job for one key");
    let other = client
        .send(Method::POST, &a.url("/echo/order"), &key, "different")
        .await;
    other.assert_problem(422, "idempotency-key-reused");
    let location = replies[0].header("location").to_owned();
    client.wait_status(&b.url(&location), "succeeded").await;
    assert_eq!(backend.request_count(), 1);
}

#[tokio::test]
async fn binary_bodies_are_kept_byte_for_byte_without_base64_bloat() {
    let redis = Redis::start().await;
    let backend = Backend::start().await;
    let config = replica(&redis, &backend, "", "");
    let (a, b) = Replica::pair(&config).await;
    let client = Client::default();
    let body: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    let reply = client
        .send(Method::POST, &a.url("/echo/blob"), &[], body.clone())
        .await;
    assert_eq!(reply.status, 202);
    let location = reply.header("location").to_owned();
    let id = reply.json()["id"].as_str().unwrap().to_owned();
    client.wait_status(&b.url(&location), "succeeded").await;
    let result = client.get(&b.url(&format!("{location}/result"))).await;
    assert_eq!(result.body.len(), body.len());
    assert!(result.body[..] == body[..], "the result is the bytes sent");
    let mut conn = redis.conn().await;
    let key = format!("asyncgate:job:{id}");
    let stored: u64 = redis::cmd("HSTRLEN")
        .arg(&key)
        .arg("resp_body")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(stored, body.len() as u64, "raw bytes; base64 would be 4/3");
    // Every field counted (the default samples five and extrapolates). The
    // request body is dropped when the job ends; the allocator rounds a
    // 1 MiB value up to 1.25 MiB.
    let used: u64 = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(&key)
        .arg("SAMPLES")
        .arg(0)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        used < body.len() as u64 * 13 / 10,
        "{used} bytes for a 1 MiB result"
    );
}

#[tokio::test]
async fn a_corrupt_record_in_redis_is_a_503_not_a_crash() {
    let redis = Redis::start().await;
    let backend = Backend::start().await;
    let a = Replica::start(&replica(&redis, &backend, "", "")).await;
    let client = Client::default();
    let reply = submit(&client, &a, Method::POST, "/echo/x").await;
    let location = reply.header("location").to_owned();
    let id = reply.json()["id"].as_str().unwrap().to_owned();
    client.wait_status(&a.url(&location), "succeeded").await;
    let mut conn = redis.conn().await;
    let _: () = redis::cmd("HSET")
        .arg(format!("asyncgate:job:{id}"))
        .arg("status")
        .arg("sleeping")
        .arg("resp_headers")
        .arg(&b"\xff\xff\xff"[..])
        .query_async(&mut conn)
        .await
        .unwrap();
    for path in [location.clone(), format!("{location}/result")] {
        client
            .get(&a.url(&path))
            .await
            .assert_problem(503, "store-unavailable");
    }
    // The gateway itself is fine.
    let next = submit(&client, &a, Method::POST, "/echo/y").await;
    client
        .wait_status(&a.url(next.header("location")), "succeeded")
        .await;
}

/// How many consumers the `app` upstream's group has: one per replica
/// that has taken part.
async fn consumers(conn: &mut redis::aio::MultiplexedConnection) -> usize {
    let consumers: Vec<redis::Value> = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg("asyncgate:work:app")
        .arg("workers")
        .query_async(conn)
        .await
        .unwrap();
    consumers.len()
}

#[tokio::test]
async fn replicas_that_are_gone_leave_no_consumer_behind() {
    let redis = Redis::start().await;
    let backend = Backend::start().await;
    let config = replica(&redis, &backend, "lease = \"1s\"", "");
    let client = Client::default();
    let mut conn = redis.conn().await;
    let mut a = Replica::start(&config).await;
    let reply = submit(&client, &a, Method::POST, "/echo/a").await;
    client
        .wait_status(&a.url(reply.header("location")), "succeeded")
        .await;
    assert_eq!(consumers(&mut conn).await, 1, "A joined by taking its job");
    let b = Replica::start(&config).await;
    a.kill();
    poll_until(
        15,
        "the dead replica's consumer to be forgotten",
        async || (consumers(&mut conn).await == 0).then_some(()),
    )
    .await;
    let reply = submit(&client, &b, Method::POST, "/echo/b").await;
    client
        .wait_status(&b.url(reply.header("location")), "succeeded")
        .await;
    assert_eq!(consumers(&mut conn).await, 1, "B joined by taking its job");
}

/// At its drain deadline a replica fails the running job that may not be
/// sent again, and puts back the one that may, at once: another replica
/// takes it long before its lease (a minute here) would have run out.
#[tokio::test]
async fn a_draining_replica_puts_back_what_may_be_resent_and_leaves_the_queue_to_others() {
    let redis = Redis::start().await;
    let backend = Backend::start().await;
    // Keys before the first table belong to the [server] the harness opens.
    let config = format!(
        "drain_timeout = \"300ms\"\n{}",
        replica(&redis, &backend, "lease = \"60s\"", "max_concurrency = 2")
    );
    let mut a = Replica::start(&config).await;
    let client = Client::default();
    let running = submit(&client, &a, Method::POST, "/hold/running").await;
    let running = running.header("location").to_owned();
    let resendable = submit(&client, &a, Method::PUT, "/hold/resendable").await;
    let resendable = resendable.header("location").to_owned();
    backend.started(2).await;
    // Both places are taken: this one waits in Redis.
    let waiting = submit(&client, &a, Method::POST, "/hold/waiting").await;
    let waiting = waiting.header("location").to_owned();
    let b = Replica::start(&config).await;
    a.process.sigterm();
    assert_eq!(a.process.exit_code().await, 0);
    let ended = a.process.wait_line("drain timeout passed").await;
    assert!(ended.contains("jobs_put_back=1"), "{ended}");
    backend.disconnects(2).await;
    let doc = client.wait_status(&b.url(&running), "failed").await;
    assert_eq!(
        doc["error"]["type"], "urn:asyncgate:problem:interrupted",
        "{doc:#}"
    );
    // B takes the put-back job and the waiting one, well within the lease.
    within(
        10,
        "B to send the put-back and the waiting job",
        backend.started(4),
    )
    .await;
    backend.release(2);
    let doc = client.wait_status(&b.url(&resendable), "succeeded").await;
    assert_eq!(doc["attempts"], 2, "{doc:#}");
    let doc = client.wait_status(&b.url(&waiting), "succeeded").await;
    assert_eq!(doc["attempts"], 1);
    let sent = |path: &str| backend.received().iter().filter(|r| r.uri == path).count();
    assert_eq!(sent("/hold/resendable"), 2);
    assert_eq!(sent("/hold/running"), 1);
}

#[tokio::test]
async fn readiness_follows_the_store_down_and_back() {
    let mut redis = Redis::start().await;
    let backend = Backend::start().await;
    let replica = Replica::start(&replica(&redis, &backend, "", "")).await;
    let readyz = format!("http://{}/readyz", replica.process.admin_addr().await);
    let client = Client::default();
    client.get(&readyz).await.assert_status(200);
    redis.down().await;
    poll_until(20, "readiness to fail with Redis down", async || {
        (client.get(&readyz).await.status == 503).then_some(())
    })
    .await;
    // Alive all the while: a restart would not bring Redis back.
    let healthz = readyz.replace("/readyz", "/healthz");
    client.get(&healthz).await.assert_status(200);
    redis.up().await;
    poll_until(20, "readiness to come back with Redis", async || {
        (client.get(&readyz).await.status == 200).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_reload_raises_the_shared_limit_and_takes_jobs_for_a_new_upstream() {
    let redis = Redis::start().await;
    let backend = Backend::start().await;
    let before = replica(&redis, &backend, "", "max_concurrency = 1");
    let one = Replica::start(&before).await;
    let client = Client::default();
    let first = submit(&client, &one, Method::POST, "/hold/1").await;
    let second = submit(&client, &one, Method::POST, "/hold/2").await;
    backend.started(1).await;
    let waiting = one.url(second.header("location"));
    assert_eq!(client.get(&waiting).await.json()["status"], "queued");

    let after = format!(
        "{}[upstreams.other]\nurl = \"{}\"\n\
         [[routes]]\nname = \"more\"\npath = \"/more/{{*p}}\"\nupstream = \"other\"\n",
        replica(&redis, &backend, "", "max_concurrency = 2"),
        backend.url()
    );
    one.process
        .config()
        .rewrite(&format!("[server]\nlisten = \"127.0.0.1:0\"\n{after}"));
    one.process.signal("HUP");
    one.process.wait_line("reloaded the config").await;
    client.wait_status(&waiting, "running").await;
    let more = submit(&client, &one, Method::POST, "/more/1").await;
    client
        .wait_status(&one.url(more.header("location")), "succeeded")
        .await;
    backend.release(2);
    for accepted in [&first, &second] {
        client
            .wait_status(&one.url(accepted.header("location")), "succeeded")
            .await;
    }
}
