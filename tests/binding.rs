//! Caller binding: a job submitted with credentials is visible only to
//! requests carrying the same ones; everyone else gets 404.

mod common;

use bytes::Bytes;
use common::{setup_async, Client};
use http::Method;

async fn as_caller(
    client: &Client,
    method: Method,
    url: &str,
    creds: &[(&str, &str)],
) -> common::Reply {
    client.send(method, url, creds, Bytes::new()).await
}

#[tokio::test]
async fn a_job_with_credentials_is_seen_only_with_the_same_credentials() {
    let (_backend, gw, client) = setup_async("").await;
    let alice = [("authorization", "Bearer alice")];
    let bob = [("authorization", "Bearer bob")];
    let reply = client
        .send(Method::POST, &gw.url("/x"), &alice, "secret report")
        .await;
    assert_eq!(reply.status, 202);
    let url = gw.url(reply.header("location"));
    let result = format!("{url}/result");

    // Alice sees her job finish.
    client.wait_status_as(&url, "succeeded", &alice).await;
    assert_eq!(
        as_caller(&client, Method::GET, &result, &alice).await.body,
        "secret report"
    );

    for creds in [&bob[..], &[]] {
        as_caller(&client, Method::GET, &url, creds)
            .await
            .assert_problem(404, "job-not-found");
        as_caller(&client, Method::GET, &result, creds)
            .await
            .assert_problem(404, "job-not-found");
        as_caller(&client, Method::DELETE, &url, creds)
            .await
            .assert_problem(404, "job-not-found");
    }
    // Bob's DELETE changed nothing: Alice still has her result.
    assert_eq!(
        as_caller(&client, Method::GET, &result, &alice)
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn a_job_without_credentials_is_visible_to_anyone_who_has_its_id() {
    let (_backend, gw, client) = setup_async("").await;
    let reply = client.post(&gw.url("/x"), "open").await;
    let url = gw.url(reply.header("location"));
    let doc = client.wait_status(&url, "succeeded").await;
    assert_eq!(doc["status"], "succeeded");
    let someone = as_caller(&client, Method::GET, &url, &[("authorization", "Bearer x")]).await;
    assert_eq!(someone.status, 200);
}

#[tokio::test]
async fn a_route_may_bind_on_other_headers() {
    let (_backend, gw, client) = setup_async("bind_headers = [\"X-Api-Key\", \"Cookie\"]").await;
    let reply = client
        .send(
            Method::POST,
            &gw.url("/x"),
            &[("x-api-key", "k1"), ("authorization", "ignored")],
            "",
        )
        .await;
    let url = gw.url(reply.header("location"));
    as_caller(&client, Method::GET, &url, &[("x-api-key", "k2")])
        .await
        .assert_problem(404, "job-not-found");
    let mine = as_caller(&client, Method::GET, &url, &[("x-api-key", "k1")]).await;
    assert_eq!(mine.status, 200);
}

#[tokio::test]
async fn a_bound_job_is_gone_to_its_owner_and_unknown_to_everyone_else() {
    let (_backend, gw, client) = setup_async("").await;
    let alice = [("authorization", "Bearer alice")];
    let bob = [("authorization", "Bearer bob")];
    let reply = client
        .send(Method::POST, &gw.url("/x"), &alice, "report")
        .await;
    let url = gw.url(reply.header("location"));
    client.wait_status_as(&url, "succeeded", &alice).await;
    as_caller(&client, Method::DELETE, &url, &alice)
        .await
        .assert_status(204);

    let result = format!("{url}/result");
    for target in [&url, &result] {
        as_caller(&client, Method::GET, target, &alice)
            .await
            .assert_problem(410, "job-gone");
        for creds in [&bob[..], &[]] {
            as_caller(&client, Method::GET, target, creds)
                .await
                .assert_problem(404, "job-not-found");
        }
    }
    as_caller(&client, Method::DELETE, &url, &bob)
        .await
        .assert_problem(404, "job-not-found");
    as_caller(&client, Method::DELETE, &url, &alice)
        .await
        .assert_status(204);
}

/// Reads a whole event stream opened without credentials; its status.
async fn events_without_credentials(url: &str) -> (u16, String) {
    use http_body_util::{BodyExt, Empty};
    let client: hyper_util::client::legacy::Client<_, Empty<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let req = http::Request::get(url)
        .header("accept", "text/event-stream")
        .body(Empty::new())
        .unwrap();
    let res = common::within(10, "the event stream", client.request(req))
        .await
        .unwrap();
    let status = res.status().as_u16();
    let body = common::within(10, "the stream's end", res.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn a_bound_jobs_events_link_opens_its_stream_without_credentials_and_nothing_else() {
    let (backend, gw, client) = setup_async("").await;
    let alice = [("authorization", "Bearer alice")];
    let reply = client
        .send(Method::POST, &gw.url("/hold/bound"), &alice, "")
        .await;
    let status_url = gw.url(reply.header("location"));
    let events = reply.json()["links"]["events"]
        .as_str()
        .expect("a bound job's document has an events link")
        .to_owned();
    assert!(
        events.starts_with(&status_url) && events.contains("?access="),
        "{events}"
    );
    backend.release(1);
    client
        .wait_status_as(&status_url, "succeeded", &alice)
        .await;

    // The "browser": an EventSource sends no Authorization.
    let (status, text) = events_without_credentials(&events).await;
    assert_eq!(status, 200);
    assert_eq!(common::sse_statuses(&text), ["succeeded"]);

    // The link is for event streams only, and for this job only.
    as_caller(&client, Method::GET, &events, &[])
        .await
        .assert_problem(404, "job-not-found");
    let other = client
        .send(Method::POST, &gw.url("/other"), &alice, "")
        .await;
    let token = events.split_once("?access=").unwrap().1;
    let borrowed = format!("{}?access={token}", gw.url(other.header("location")));
    let (status, _) = events_without_credentials(&borrowed).await;
    assert_eq!(status, 404);
    // A job without credentials needs no link.
    let open = client.post(&gw.url("/open"), "").await;
    assert!(open.json()["links"].get("events").is_none());
}
