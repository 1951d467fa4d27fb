//! Webhooks with a shared store: sent once whichever replica runs the job,
//! carried on by another when the one delivering dies.

use http::Method;

use super::{replica, Replica};
use crate::common::redis::Redis;
use crate::common::{poll_until, Backend, Client};

/// A replica's config (see [`replica`]) with webhooks (`webhooks_extra`
/// under `[webhooks]`) on a route `/hooked/…` that takes callbacks.
fn hooked(redis: &Redis, backend: &Backend, webhooks_extra: &str, store_extra: &str) -> String {
    format!(
        "{}\n[webhooks]\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n\
         allow_networks = [\"127.0.0.0/8\"]\n{webhooks_extra}\n\
         [[routes]]\nname = \"hooked\"\npath = \"/hooked/{{*p}}\"\nupstream = \"app\"\n\
         callback_hosts = [\"127.0.0.1\"]\n",
        replica(redis, backend, store_extra, "")
    )
}

/// Submits a job on `/hooked/…` whose webhook goes to a receiver path that
/// fails once, then takes it; its Location.
async fn submit_hooked(client: &Client, replica: &Replica, receiver: &Backend) -> String {
    let reply = client
        .send(
            Method::POST,
            &replica.url("/hooked/x"),
            &[("callback-url", &format!("{}/flaky/1/hook", receiver.url()))],
            "x",
        )
        .await;
    assert_eq!(reply.status, 202);
    reply.header("location").to_owned()
}

/// Waits until `replica` shows the webhook delivered on its second
/// attempt, the receiver having had both, under the same webhook-id.
async fn delivered_on_the_retry(
    client: &Client,
    replica: &Replica,
    location: &str,
    receiver: &Backend,
) {
    let doc = poll_until(30, "the webhook to be delivered", async || {
        let doc = client.get(&replica.url(location)).await.json();
        (doc["webhook"]["state"] == "delivered").then_some(doc)
    })
    .await;
    assert_eq!(doc["webhook"]["attempts"], 2, "{doc:#}");
    assert_eq!(receiver.request_count(), 2, "one failure, one delivery");
    let received = receiver.received();
    assert_eq!(
        received[0].headers["webhook-id"],
        received[1].headers["webhook-id"]
    );
}

#[tokio::test]
async fn a_webhook_is_sent_once_and_its_delivery_shows_on_every_replica() {
    let redis = Redis::start().await;
    let backend = Backend::start().await;
    let receiver = Backend::start().await;
    let config = hooked(&redis, &backend, "retry_schedule = [\"10ms\"]", "");
    let (a, b) = Replica::pair(&config).await;
    let client = Client::default();
    let location = submit_hooked(&client, &a, &receiver).await;
    delivered_on_the_retry(&client, &b, &location, &receiver).await;
}

#[tokio::test]
async fn a_webhook_whose_replica_died_between_attempts_is_finished_by_another() {
    let redis = Redis::start().await;
    let backend = Backend::start().await;
    let receiver = Backend::start().await;
    // A's first attempt fails; the second is due a second later, but A is
    // killed first: only B can make it, once A's hold has lapsed (a lease
    // plus an attempt's timeout past the attempt it was due).
    let config = hooked(
        &redis,
        &backend,
        "retry_schedule = [\"1s\", \"1s\"]\ntimeout = \"1s\"",
        "lease = \"1s\"",
    );
    // A alone runs the job and so sends its webhook.
    let mut a = Replica::start(&config).await;
    let client = Client::default();
    let location = submit_hooked(&client, &a, &receiver).await;
    poll_until(20, "the first attempt to fail", async || {
        let doc = client.get(&a.url(&location)).await.json();
        (doc["webhook"]["attempts"] == 1).then_some(())
    })
    .await;
    let b = Replica::start(&config).await;
    a.kill();
    assert_eq!(receiver.request_count(), 1, "A died before its retry");

    delivered_on_the_retry(&client, &b, &location, &receiver).await;
}

#[tokio::test]
async fn a_job_is_kept_past_its_result_ttl_while_its_webhook_is_being_delivered() {
    let redis = Redis::start().await;
    let backend = Backend::start().await;
    let receiver = Backend::start().await;
    // The retry comes after the result would have expired: the job must
    // still be there for another replica to take the delivery over.
    let config = hooked(
        &redis,
        &backend,
        "retry_schedule = [\"3s\"]",
        "result_ttl = \"1s\"",
    );
    let a = Replica::start(&config).await;
    let client = Client::default();
    let location = submit_hooked(&client, &a, &receiver).await;
    delivered_on_the_retry(&client, &a, &location, &receiver).await;
}

#[tokio::test]
async fn a_lost_job_s_webhook_is_sent_though_its_replica_is_gone() {
    let redis = Redis::start().await;
    let backend = Backend::start().await;
    let receiver = Backend::start().await;
    // `/holdhook/…` is held by the backend, and calls back.
    let config = format!(
        "{}[[routes]]\nname = \"holdhook\"\npath = \"/holdhook/{{*p}}\"\nupstream = \"app\"\n\
         callback_hosts = [\"127.0.0.1\"]\n",
        hooked(&redis, &backend, "", "lease = \"1s\"")
    );
    let mut a = Replica::start(&config).await;
    let client = Client::default();
    let reply = client
        .send(
            Method::POST,
            &a.url("/holdhook/x"),
            &[("callback-url", &format!("{}/hook", receiver.url()))],
            "x",
        )
        .await;
    assert_eq!(reply.status, 202);
    let location = reply.header("location").to_owned();
    backend.started(1).await;
    let b = Replica::start(&config).await;
    a.kill();
    backend.disconnects(1).await;
    // B finds the POST lost (never sent twice), and the webhook A would
    // have sent goes out all the same.
    let doc = poll_until(30, "the lost job's webhook", async || {
        let doc = client.get(&b.url(&location)).await.json();
        (doc["webhook"]["state"] == "delivered").then_some(doc)
    })
    .await;
    assert_eq!(doc["status"], "failed", "{doc:#}");
    let sent: serde_json::Value = serde_json::from_slice(&receiver.received()[0].body).unwrap();
    assert_eq!(sent["type"], "job.failed", "{sent:#}");
    assert_eq!(
        sent["data"]["error"]["type"],
        "urn:asyncgate:problem:job-lost"
    );
}
