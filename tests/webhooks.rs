//! Webhooks: signed as Standard Webhooks says, retried with backoff, shown
//! in the job document, and never sent where the route does not allow.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::{async_route, config, poll_until, Backend, Client, Received, TestGateway};
use hmac::{Hmac, Mac};
use http::Method;
use sha2::Sha256;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Webhooks to loopback are allowed here only because the test says so:
/// by default they are refused like any private address.
/// Ten quick attempts, unless `extra` sets a schedule of its own.
fn webhooks(extra: &str) -> String {
    let schedule = if extra.contains("retry_schedule") {
        ""
    } else {
        "retry_schedule = [\"10ms\", \"20ms\", \"40ms\", \"50ms\", \"50ms\", \"50ms\", \"50ms\", \"50ms\", \"50ms\"]\n"
    };
    format!(
        "[webhooks]\nsecret = \"{SECRET}\"\nallow_networks = [\"127.0.0.0/8\"]\n{schedule}{extra}\n"
    )
}

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

struct Setup {
    backend: Backend,
    receiver: Backend,
    gw: TestGateway,
    client: Client,
}

async fn setup(route_extra: &str, webhook_extra: &str) -> Setup {
    let backend = Backend::start().await;
    let receiver = Backend::start().await;
    // Async unless `route_extra` sets a mode. The last two hosts are allowed
    // by name only to show the address check still refuses them; they are
    // never dialled.
    let route = format!(
        "[[routes]]\nname = \"jobs\"\npath = \"/{{*p}}\"\nupstream = \"app\"\n\
         callback_hosts = [\"127.0.0.1\", \"10.1.2.3\", \"169.254.169.254\"]\n{route_extra}\n"
    );
    let toml = config(
        &backend.url(),
        "",
        &format!("{}{route}", webhooks(webhook_extra)),
    );
    let gw = TestGateway::start(&toml).await;
    Setup {
        backend,
        receiver,
        gw,
        client: Client::default(),
    }
}

impl Setup {
    /// The admin listener's metrics, as text.
    async fn metrics(&self) -> String {
        let url = format!("http://{}/metrics", self.gw.admin.unwrap());
        let reply = self.client.get(&url).await;
        String::from_utf8(reply.body.to_vec()).unwrap()
    }

    /// Submits a job, in the trace [`TRACEPARENT`] names.
    async fn submit(&self, path: &str, callback: &str) -> common::Reply {
        self.client
            .send(
                Method::POST,
                &self.gw.url(path),
                &[("callback-url", callback), ("traceparent", TRACEPARENT)],
                "{}",
            )
            .await
    }

    /// Polls the job document until its webhook's state is `want`.
    async fn webhook_state(&self, status_url: &str, want: &str) -> serde_json::Value {
        poll_until(20, &format!("the webhook to be {want}"), async || {
            let doc = self.client.get(status_url).await.json();
            (doc["webhook"]["state"] == want).then_some(doc)
        })
        .await
    }
}

/// Checks a delivery as a Standard Webhooks receiver would, with its own
/// HMAC rather than the gateway's code.
fn verify(delivery: &Received) -> serde_json::Value {
    let header = |name: &str| delivery.headers[name].to_str().unwrap().to_owned();
    let id = header("webhook-id");
    let timestamp = header("webhook-timestamp");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let sent: u64 = timestamp.parse().unwrap();
    assert!(
        now.abs_diff(sent) < 300,
        "timestamp {sent} is not now ({now})"
    );
    let key = STANDARD
        .decode(SECRET.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(&delivery.body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    let signatures = header("webhook-signature");
    assert!(
        signatures.split(' ').any(|s| s == expected),
        "no valid signature in {signatures}"
    );
    assert_eq!(delivery.method, Method::POST);
    assert_eq!(header("content-type"), "application/json");
    let envelope: serde_json::Value = serde_json::from_slice(&delivery.body).unwrap();
    document_in(&envelope)
}

/// The job document in a webhook's Standard Webhooks envelope, once the
/// envelope is checked: its type names the job's end, its timestamp is
/// the job's `finished_at`.
fn document_in(envelope: &serde_json::Value) -> serde_json::Value {
    let doc = envelope["data"].clone();
    assert_eq!(
        envelope["type"],
        format!("job.{}", doc["status"].as_str().unwrap()),
        "{envelope:#}"
    );
    assert_eq!(envelope["timestamp"], doc["finished_at"], "{envelope:#}");
    doc
}

#[tokio::test]
async fn a_signed_webhook_with_the_job_document_arrives_when_the_job_ends() {
    let s = setup("", "").await;
    let callback = format!("{}/hook?token=abc", s.receiver.url());
    let reply = s.submit("/hold/report", &callback).await;
    assert_eq!(reply.status, 202);
    let status_url = s.gw.url(reply.header("location"));
    let id = reply.json()["id"].as_str().unwrap().to_owned();
    let doc = s.client.get(&status_url).await.json();
    assert_eq!(doc["webhook"]["state"], "pending");
    assert_eq!(
        doc["webhook"]["url"],
        format!("{}/hook", s.receiver.url()),
        "no query shown"
    );
    s.backend.release(1);
    s.receiver.started(1).await;
    let delivery = &s.receiver.received()[0];
    assert_eq!(delivery.uri, "/hook?token=abc");
    assert_eq!(delivery.headers["webhook-id"], id.as_str());
    // No [tracing] here: the delivery carries the job's own trace context.
    assert_eq!(delivery.headers["traceparent"], TRACEPARENT);
    let payload = verify(delivery);
    assert_eq!(payload["id"], id.as_str());
    assert_eq!(payload["status"], "succeeded");
    assert!(payload["links"]["result"]
        .as_str()
        .unwrap()
        .ends_with("/result"));
    assert!(payload.get("webhook").is_none(), "{payload:#}");
    let doc = s.webhook_state(&status_url, "delivered").await;
    assert_eq!(doc["webhook"]["attempts"], 1);
    assert_eq!(doc["webhook"]["last_status"], 200);
}

#[tokio::test]
async fn a_receiver_that_fails_twice_gets_the_same_message_on_the_third_attempt() {
    let s = setup("", "").await;
    let callback = format!("{}/flaky/2/hook", s.receiver.url());
    let reply = s.submit("/done", &callback).await;
    let status_url = s.gw.url(reply.header("location"));
    let doc = s.webhook_state(&status_url, "delivered").await;
    assert_eq!(doc["webhook"]["attempts"], 3, "{doc:#}");
    let metrics = s.metrics().await;
    assert!(
        metrics.contains("asyncgate_webhook_deliveries_total{outcome=\"retried\"} 2\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("asyncgate_webhook_deliveries_total{outcome=\"delivered\"} 1\n"),
        "{metrics}"
    );
    let deliveries = s.receiver.received();
    assert_eq!(deliveries.len(), 3);
    for d in &deliveries {
        verify(d);
        assert_eq!(d.headers["webhook-id"], deliveries[0].headers["webhook-id"]);
        assert_eq!(
            d.body, deliveries[0].body,
            "every attempt sends the same payload"
        );
    }
}

#[tokio::test]
async fn delivery_gives_up_when_the_schedule_runs_out_and_says_so() {
    let s = setup("", "retry_schedule = [\"10ms\", \"20ms\"]").await;
    let callback = format!("{}/down?status=500", s.receiver.url());
    let reply = s.submit("/done", &callback).await;
    let status_url = s.gw.url(reply.header("location"));
    let doc = s.webhook_state(&status_url, "failed").await;
    assert_eq!(doc["webhook"]["attempts"], 3, "{doc:#}");
    assert_eq!(doc["webhook"]["last_status"], 500);
    assert!(doc["webhook"].get("next_attempt_at").is_none());
    assert_eq!(s.receiver.request_count(), 3);
    let metrics = s.metrics().await;
    assert!(
        metrics.contains("asyncgate_webhook_deliveries_total{outcome=\"failed\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("asyncgate_webhook_deliveries_total{outcome=\"retried\"} 2\n"),
        "{metrics}"
    );
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let s = setup("", "").await;
    // The Location is only ever a string here: it must not be dialled.
    let callback = format!(
        "{}/moved?status=302&location=http://169.254.169.254/latest/meta-data/",
        s.receiver.url()
    );
    let reply = s.submit("/done", &callback).await;
    let status_url = s.gw.url(reply.header("location"));
    let doc = s.webhook_state(&status_url, "failed").await;
    assert_eq!(
        doc["webhook"]["attempts"], 1,
        "a redirect is not retried: {doc:#}"
    );
    assert_eq!(doc["webhook"]["last_status"], 302);
    assert!(doc["webhook"]["last_error"]
        .as_str()
        .unwrap()
        .contains("not followed"));
    assert_eq!(s.receiver.request_count(), 1);
}

#[tokio::test]
async fn callbacks_the_route_does_not_allow_are_refused_and_nothing_is_queued() {
    let s = setup("", "").await;
    let port = s.receiver.addr.port();
    let refused = [
        "http://hooks.evil.example/steal".to_owned(),
        format!("http://localhost:{port}/hook"),
        // On the allow-list, but addresses no webhook may reach.
        "http://10.1.2.3/hook".to_owned(),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "not a url".to_owned(),
        format!("ftp://127.0.0.1:{port}/hook"),
        format!("http://user:pw@127.0.0.1:{port}/hook"),
    ];
    for callback in &refused {
        let reply = s.submit("/done", callback).await;
        reply.assert_problem(400, "bad-callback");
    }
    // A job accepted after them is the first the backend sees.
    let reply = s
        .submit("/first", &format!("http://127.0.0.1:{port}/ok"))
        .await;
    assert_eq!(reply.status, 202);
    s.backend.started(1).await;
    assert_eq!(s.backend.received()[0].uri, "/first");
    assert_eq!(s.backend.request_count(), 1);
}

#[tokio::test]
async fn a_route_without_an_allow_list_refuses_the_header() {
    let backend = Backend::start().await;
    let gw = TestGateway::start(&config(&backend.url(), "", &async_route("/{*p}", ""))).await;
    let refused = Client::default()
        .send(
            Method::POST,
            &gw.url("/done"),
            &[("callback-url", "http://127.0.0.1:9/hook")],
            "",
        )
        .await;
    refused.assert_problem(400, "bad-callback");
    assert!(
        refused.json()["detail"]
            .as_str()
            .unwrap()
            .contains("takes no Callback-Url"),
        "the client learns why"
    );
    assert_eq!(backend.request_count(), 0);
}

#[tokio::test]
async fn the_route_callback_url_is_used_when_the_request_names_none() {
    let receiver = Backend::start().await;
    let s = setup(&format!("callback_url = \"{}/fixed\"", receiver.url()), "").await;
    let reply = s.client.post(&s.gw.url("/done"), "x").await;
    let status_url = s.gw.url(reply.header("location"));
    s.webhook_state(&status_url, "delivered").await;
    assert_eq!(receiver.received()[0].uri, "/fixed");
    verify(&receiver.received()[0]);
}

#[tokio::test]
async fn a_canceled_job_calls_back_too() {
    let s = setup("", "").await;
    let reply = s
        .submit("/hold/x", &format!("{}/hook", s.receiver.url()))
        .await;
    let status_url = s.gw.url(reply.header("location"));
    s.backend.started(1).await;
    assert_eq!(s.client.delete(&status_url).await.status, 200);
    s.receiver.started(1).await;
    assert_eq!(verify(&s.receiver.received()[0])["status"], "canceled");
}

#[tokio::test]
async fn auto_mode_calls_back_only_when_the_client_got_a_202() {
    let s = setup("mode = \"auto\"\nsync_wait = \"1s\"", "").await;
    let hook = format!("{}/hook", s.receiver.url());
    // Answered in time: the client has its answer and no webhook follows.
    let fast = s.submit("/fast", &hook).await;
    assert_eq!(fast.status, 200);
    // Too slow: a 202, then the webhook when the job ends.
    let slow = s.submit("/hold/slow", &hook).await;
    assert_eq!(slow.status, 202);
    s.backend.release(1);
    let status_url = s.gw.url(slow.header("location"));
    s.webhook_state(&status_url, "delivered").await;
    let deliveries = s.receiver.received();
    assert_eq!(deliveries.len(), 1, "only the 202'd job calls back");
    assert_eq!(verify(&deliveries[0])["id"], slow.json()["id"]);
}

/// An `https` receiver: TLS with a certificate for 127.0.0.1 from a CA made
/// for the test, in front of a plain test backend that records everything.
#[cfg(feature = "tls")]
async fn tls_receiver() -> (common::tls::TestCa, common::tls::TlsFront) {
    let ca = common::tls::TestCa::new();
    let front = common::tls::TlsFront::start(&ca.issue(&["127.0.0.1"], "receiver")).await;
    (ca, front)
}

#[cfg(feature = "tls")]
#[tokio::test]
async fn https_receivers_are_verified_against_the_configured_ca() {
    let (ca, receiver) = tls_receiver().await;
    let ca = format!("ca_file = \"{}\"", ca.ca_file.display());
    let s = setup("", &ca).await;
    let reply = s.submit("/done", &receiver.url("/secure-hook")).await;
    assert_eq!(reply.status, 202);
    let status_url = s.gw.url(reply.header("location"));
    let doc = s.webhook_state(&status_url, "delivered").await;
    assert_eq!(doc["webhook"]["url"], receiver.url("/secure-hook"));
    let delivery = &receiver.backend.received()[0];
    assert_eq!(delivery.uri, "/secure-hook");
    assert_eq!(verify(delivery)["status"], "succeeded");
}

#[cfg(feature = "tls")]
#[tokio::test]
async fn an_https_receiver_nobody_vouches_for_gets_nothing() {
    let (_ca, receiver) = tls_receiver().await;
    let s = setup("", "retry_schedule = [\"10ms\"]").await;
    let reply = s.submit("/done", &receiver.url("/hook")).await;
    let status_url = s.gw.url(reply.header("location"));
    let doc = s.webhook_state(&status_url, "failed").await;
    let error = doc["webhook"]["last_error"].as_str().unwrap();
    assert!(error.contains("certificate"), "{error}");
    assert_eq!(receiver.backend.request_count(), 0);
}

#[tokio::test]
async fn a_receivers_retry_after_sets_the_next_attempt() {
    let backend = Backend::start().await;
    let receiver = common::RawBackend::start(|_| {
        b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 3600\r\nContent-Length: 0\r\n\r\n"
            .to_vec()
    })
    .await;
    let toml = config(
        &backend.url(),
        "",
        &format!(
            "[webhooks]\nsecret = \"{SECRET}\"\nallow_networks = [\"127.0.0.0/8\"]\n\
             retry_schedule = [\"10ms\", \"2h\"]\n\
             {}callback_hosts = [\"127.0.0.1\"]\n",
            async_route("/{*p}", "")
        ),
    );
    let gw = TestGateway::start(&toml).await;
    let client = Client::default();
    let reply = client
        .send(
            Method::POST,
            &gw.url("/x"),
            &[("callback-url", &format!("{}/hook", receiver.url()))],
            "{}",
        )
        .await;
    let status_url = gw.url(reply.header("location"));
    let doc = poll_until(20, "the first attempt to be recorded", async || {
        let doc = client.get(&status_url).await.json();
        (doc["webhook"]["attempts"] == 1).then_some(doc)
    })
    .await;
    assert_eq!(doc["webhook"]["state"], "pending", "{doc:#}");
    assert_eq!(doc["webhook"]["last_status"], 503);
    // Not the schedule's 10 ms: the hour the receiver asked for.
    let next = doc["webhook"]["next_attempt_at"].as_str().unwrap();
    let next = humantime::parse_rfc3339(next).unwrap();
    let ahead = next.duration_since(SystemTime::now()).unwrap_or_default();
    assert!(
        ahead.as_secs() > 30 * 60,
        "next attempt in {ahead:?}: {doc:#}"
    );
}

const TENANT_OLD: &str = "whsec_dGVuYW50LW9sZC1zZWNyZXQtb2YtMzItYnl0ZXMhIQ==";
const TENANT_NEW: &str = "whsec_dGVuYW50LW5ldy1zZWNyZXQtb2YtMzItYnl0ZXMhIQ==";

/// Whether Standard Webhooks' own verifier accepts `delivery` under `secret`.
fn verified_by(secret: &str, delivery: &Received) -> bool {
    standardwebhooks::Webhook::new(secret)
        .unwrap()
        .verify(&delivery.body, &delivery.headers)
        .is_ok()
}

#[tokio::test]
async fn a_routes_own_secrets_sign_its_deliveries_each_and_the_shared_one_does_not() {
    let s = setup(
        &format!("webhook_secret = [\"{TENANT_NEW}\", \"{TENANT_OLD}\"]"),
        "",
    )
    .await;
    let reply = s
        .submit("/tenant", &format!("{}/hook", s.receiver.url()))
        .await;
    let status_url = s.gw.url(reply.header("location"));
    s.webhook_state(&status_url, "delivered").await;
    let delivery = &s.receiver.received()[0];
    let signatures = delivery.headers["webhook-signature"].to_str().unwrap();
    assert_eq!(signatures.split(' ').count(), 2, "{signatures}");
    // A receiver holding either secret of the rotation verifies it; one
    // holding another tenant's (here the shared) secret cannot.
    assert!(verified_by(TENANT_NEW, delivery));
    assert!(verified_by(TENANT_OLD, delivery));
    assert!(!verified_by(SECRET, delivery));

    // A route without its own secret signs with the shared one.
    let plain = setup("", "").await;
    let reply = plain
        .submit("/shared", &format!("{}/hook", plain.receiver.url()))
        .await;
    plain
        .webhook_state(&plain.gw.url(reply.header("location")), "delivered")
        .await;
    assert!(verified_by(SECRET, &plain.receiver.received()[0]));
}

/// `webhook_result = "inline"`: a small result rides in the webhook, text as
/// text and anything else as base64; a larger one (or one already gone) is
/// a `result_url` that opens the result of a bound job without its owner's
/// credentials, and nothing else.
#[tokio::test]
async fn an_inline_webhook_carries_a_small_result_and_links_a_large_one() {
    let backend = Backend::start().await;
    let receiver = Backend::start().await;
    let route = "[[routes]]\nname = \"jobs\"\npath = \"/{*p}\"\nupstream = \"app\"\n\
                 callback_hosts = [\"127.0.0.1\"]\nwebhook_result = \"inline\"\n\
                 webhook_result_max = \"1KiB\"\n";
    // Keys before any table land in the harness's [server].
    let toml = format!(
        "public_base_url = \"https://gateway.example\"\n{}",
        config(&backend.url(), "", &format!("{}{route}", webhooks("")))
    );
    let gw = TestGateway::start(&toml).await;
    let client = Client::default();
    let hook = format!("{}/hook", receiver.url());
    let owner = ("authorization", "Bearer alice");
    let submit = async |path: &str, content_type: &str, body: Vec<u8>| {
        let reply = client
            .send(
                Method::POST,
                &gw.url(path),
                &[
                    ("callback-url", &hook),
                    ("content-type", content_type),
                    owner,
                ],
                body,
            )
            .await;
        reply.assert_status(202);
        reply.json()["id"].as_str().unwrap().to_owned()
    };
    let text = submit("/text", "application/json", b"{\"total\": 42}".to_vec()).await;
    let binary = submit("/binary", "application/octet-stream", vec![0, 159, 255]).await;
    let large = submit("/big/5000", "text/plain", Vec::new()).await;
    let received = poll_until(20, "three webhooks", async || {
        let r = receiver.received();
        (r.len() == 3).then_some(r)
    })
    .await;
    let of = |id: &str| {
        let delivery = received
            .iter()
            .find(|d| verify(d)["id"] == id)
            .unwrap_or_else(|| panic!("no webhook for {id}"));
        serde_json::from_slice::<serde_json::Value>(&delivery.body).unwrap()["data"].clone()
    };
    let doc = of(&text);
    assert_eq!(doc["result"]["status"], 200, "{doc:#}");
    assert_eq!(doc["result"]["body"], "{\"total\": 42}", "{doc:#}");
    assert_eq!(doc["result"]["headers"]["x-custom"], "kept", "{doc:#}");
    assert_eq!(
        doc["result"]["headers"]["set-cookie"], "a=1, b=2",
        "{doc:#}"
    );
    let doc = of(&binary);
    assert_eq!(doc["result"]["body_base64"], "AJ//", "{doc:#}");
    assert!(doc["result"].get("body").is_none(), "{doc:#}");
    let doc = of(&large);
    assert!(
        doc.get("result").is_none(),
        "never a truncated body: {doc:#}"
    );
    let link = doc["result_url"].as_str().unwrap();
    assert!(
        link.starts_with(&format!(
            "https://gateway.example/_jobs/{large}/result?access="
        )),
        "{link}"
    );
    let fetched = client.get(&gw.url(link)).await;
    fetched.assert_status(200);
    assert_eq!(fetched.body.len(), 5000);
    // Without the link's token, a stranger sees no such job; the link
    // opens the result alone.
    client
        .get(&gw.url(&format!("/_jobs/{large}/result")))
        .await
        .assert_problem(404, "job-not-found");
    let status_with_link = link.replace("/result?", "?");
    client
        .get(&gw.url(&status_with_link))
        .await
        .assert_problem(404, "job-not-found");
}
