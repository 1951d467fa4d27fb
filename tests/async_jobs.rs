//! SPEC §1 end to end: submitting, polling, fetching, canceling.

mod common;

use bytes::Bytes;
use common::{
    async_route, config, poll_until, setup, setup_async, within, Backend, Client, TestGateway,
};
use http::Method;

#[tokio::test]
async fn submit_answers_202_with_location_and_job_document() {
    let (backend, gw, client) = setup_async("").await;
    let reply = client.post(&gw.url("/hold/report?q=1"), "payload").await;
    assert_eq!(reply.status, 202);
    let location = reply.header("location").to_owned();
    assert_eq!(reply.header("operation-location"), location);
    assert!(reply.header("retry-after").parse::<u64>().unwrap() >= 1);
    assert_eq!(reply.header("content-type"), "application/json");
    let doc = reply.json();
    let id = doc["id"].as_str().unwrap();
    assert_eq!(location, gw.url(&format!("/_jobs/{id}")));
    assert_eq!(id.len(), 36);
    assert_eq!(id, id.to_lowercase());
    assert_eq!(doc["route"], "jobs");
    assert_eq!(doc["method"], "POST");
    assert!(doc["created_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(doc["links"]["self"], location);
    assert_eq!(doc["links"]["result"], format!("{location}/result"));
    assert!(doc.get("resourceLocation").is_none());
    assert!(doc.get("finished_at").is_none());
    assert!(doc.get("response").is_none());
    backend.release(1);
    client.wait_status(&gw.url(&location), "succeeded").await;
}

#[tokio::test]
async fn backend_gets_original_request_with_forwarding_headers_and_fresh_framing() {
    let (backend, gw, client) = setup_async("").await;
    let reply = client
        .send(
            Method::PUT,
            &gw.url("/import/a%20b?x=1&y=2"),
            &[
                ("content-type", "text/csv"),
                ("x-request-id", "abc"),
                ("connection", "x-hop"),
                ("x-hop", "secret"),
                ("x-forwarded-for", "203.0.113.9"),
            ],
            "a,b\n1,2\n",
        )
        .await;
    assert_eq!(reply.status, 202);
    client
        .wait_status(&gw.url(reply.header("location")), "succeeded")
        .await;
    let got = &backend.received()[0];
    assert_eq!(got.method, Method::PUT);
    assert_eq!(got.uri, "/import/a%20b?x=1&y=2");
    assert_eq!(got.body, "a,b\n1,2\n");
    assert_eq!(got.headers["content-type"], "text/csv");
    assert_eq!(got.headers["x-request-id"], "abc");
    assert_eq!(got.headers["content-length"], "8");
    assert!(got.headers.get("transfer-encoding").is_none());
    assert!(got.headers.get("x-hop").is_none());
    // The client is no trusted proxy: what it claimed is replaced.
    assert_eq!(got.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(got.headers["x-forwarded-proto"], "http");
    assert_eq!(got.headers["x-forwarded-host"], gw.addr.to_string());
    assert_eq!(got.headers["via"], "1.1 asyncgate");
    assert_eq!(got.headers["host"], backend.addr.to_string());
}

#[tokio::test]
async fn status_moves_queued_running_succeeded_and_result_replays_byte_for_byte() {
    let (backend, gw, client) = setup("max_concurrency = 1", &async_route("/{*p}", "")).await;
    let first = client.post(&gw.url("/hold/1"), "one").await;
    backend.started(1).await;
    let second = client
        .send(
            Method::POST,
            &gw.url("/hold/2?status=201"),
            &[("content-type", "application/x-thing")],
            "two",
        )
        .await;
    let first_url = gw.url(first.header("location"));
    let second_url = gw.url(second.header("location"));

    let running = client.get(&first_url).await;
    assert_eq!(running.json()["status"], "running");
    assert_eq!(running.json()["attempts"], 1);
    assert!(running.json()["started_at"].is_string());
    assert!(running.header("retry-after").parse::<u64>().unwrap() >= 1);
    let queued = client.get(&second_url).await;
    assert_eq!(queued.json()["status"], "queued");
    assert_eq!(queued.json()["attempts"], 0);
    assert!(queued.json().get("started_at").is_none());

    let early = client.get(&format!("{second_url}/result")).await;
    early.assert_problem(409, "job-not-finished");
    assert_eq!(early.json()["job_status"], "queued");
    assert_eq!(early.json()["monitor"], second.header("location"));
    assert!(early.header("retry-after").parse::<u64>().unwrap() >= 1);

    backend.release(2);
    client.wait_status(&first_url, "succeeded").await;
    let done = client.wait_status(&second_url, "succeeded").await;
    assert_eq!(done["response"]["status"], 201);
    assert_eq!(done["response"]["bytes"], 3);
    assert_eq!(
        done["resourceLocation"],
        format!("{}/result", second.header("location"))
    );
    assert!(done["finished_at"].is_string());
    assert!(client
        .get(&second_url)
        .await
        .headers
        .get("retry-after")
        .is_none());

    for _ in 0..2 {
        let result = client.get(&format!("{second_url}/result")).await;
        assert_eq!(result.status, 201);
        assert_eq!(result.body, "two");
        assert_eq!(result.header("content-type"), "application/x-thing");
        assert_eq!(result.header("x-custom"), "kept");
        let cookies: Vec<_> = result.headers.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
    }
}

#[tokio::test]
async fn backend_4xx_is_a_success_and_5xx_a_failure_both_replayed() {
    let (_backend, gw, client) = setup_async("").await;
    let not_found = client.post(&gw.url("/x?status=404"), "").await;
    let broken = client.post(&gw.url("/x?status=503"), "oops").await;
    let nf = client
        .wait_status(&gw.url(not_found.header("location")), "succeeded")
        .await;
    assert_eq!(nf["response"]["status"], 404);
    let br = client
        .wait_status(&gw.url(broken.header("location")), "failed")
        .await;
    assert_eq!(br["response"]["status"], 503);
    assert!(br.get("error").is_none());
    let replay = client
        .get(&gw.url(&format!("{}/result", broken.header("location"))))
        .await;
    assert_eq!(replay.status, 503);
    assert_eq!(replay.body, "oops");
}

#[tokio::test]
async fn large_results_are_kept_whole() {
    let (_backend, gw, client) = setup_async("").await;
    let reply = client.post(&gw.url("/big/3000000"), "").await;
    let loc = reply.header("location").to_owned();
    client.wait_status(&gw.url(&loc), "succeeded").await;
    let result = client.get(&gw.url(&format!("{loc}/result"))).await;
    assert_eq!(result.body.len(), 3_000_000);
    assert_eq!(result.header("content-length"), "3000000");
}

#[tokio::test]
async fn progress_is_measured_from_content_length_while_the_body_arrives() {
    let (backend, gw, client) = setup_async("").await;
    let reply = client.post(&gw.url("/stream/1000"), "").await;
    let url = gw.url(reply.header("location"));
    let doc = poll_until(10, "half the body to arrive", async || {
        let doc = client.get(&url).await.json();
        (doc["progress"]["percent"] == 50).then_some(doc)
    })
    .await;
    assert_eq!(doc["status"], "running");
    assert_eq!(doc["progress"]["estimated"], false);
    backend.release(1);
    let done = client.wait_status(&url, "succeeded").await;
    assert!(done.get("progress").is_none());
}

#[tokio::test]
async fn result_over_the_route_limit_fails_the_job_with_502() {
    let (_backend, gw, client) = setup_async("max_result = \"1KiB\"").await;
    for path in ["/big/5000", "/stream/5000"] {
        let reply = client.post(&gw.url(path), "").await;
        let loc = reply.header("location").to_owned();
        let doc = client.wait_status(&gw.url(&loc), "failed").await;
        assert_eq!(
            doc["error"]["type"],
            "urn:asyncgate:problem:result-too-large"
        );
        assert_eq!(doc["resourceLocation"], format!("{loc}/result"));
        let says_limit = |detail: &str| detail.contains("max_result = 1024 bytes");
        assert!(
            says_limit(doc["error"]["detail"].as_str().unwrap()),
            "{doc}"
        );
        // What Azure-style LRO clients read, beside RFC 9457's members.
        assert_eq!(doc["error"]["code"], "result-too-large");
        assert_eq!(doc["error"]["message"], doc["error"]["detail"]);
        let result = client.get(&gw.url(&format!("{loc}/result"))).await;
        result.assert_problem(502, "result-too-large");
        assert!(says_limit(result.json()["detail"].as_str().unwrap()));
    }
}

#[tokio::test]
async fn over_limit_body_is_413_and_nothing_is_queued() {
    let (backend, gw, client) = setup_async("max_body = \"1KiB\"").await;
    let big = vec![b'x'; 2048];
    client
        .post(&gw.url("/x"), big.clone())
        .await
        .assert_problem(413, "body-too-large");
    // Without Content-Length (chunked), the limit is found while reading.
    let chunked = raw_chunked_post(&gw, &big).await;
    assert!(chunked.starts_with("HTTP/1.1 413"), "{chunked}");
    let ok = client.post(&gw.url("/x"), vec![b'y'; 1024]).await;
    assert_eq!(ok.status, 202);
    client
        .wait_status(&gw.url(ok.header("location")), "succeeded")
        .await;
    assert_eq!(backend.request_count(), 1);
}

async fn raw_chunked_post(gw: &TestGateway, body: &[u8]) -> String {
    let mut req =
        b"POST /x HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
            .to_vec();
    req.extend_from_slice(format!("{:x}\r\n", body.len()).as_bytes());
    req.extend_from_slice(body);
    req.extend_from_slice(b"\r\n0\r\n\r\n");
    common::raw_exchange(gw.addr, &req).await
}

#[tokio::test]
async fn cancel_of_queued_job_never_reaches_the_backend() {
    let (backend, gw, client) = setup("max_concurrency = 1", &async_route("/{*p}", "")).await;
    let running = client.post(&gw.url("/hold/a"), "").await;
    backend.started(1).await;
    let queued = client.post(&gw.url("/hold/b"), "").await;
    let url = gw.url(queued.header("location"));
    let canceled = client.delete(&url).await;
    assert_eq!(canceled.status, 200);
    assert_eq!(canceled.json()["status"], "canceled");
    // Repeating the DELETE changes nothing.
    let again = client.delete(&url).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.json()["status"], "canceled");
    client
        .get(&format!("{url}/result"))
        .await
        .assert_problem(409, "job-canceled");

    backend.release(1);
    client
        .wait_status(&gw.url(running.header("location")), "succeeded")
        .await;
    // A job submitted after the canceled one runs next: the canceled one's
    // place was freed and it never reached the backend.
    let after = client.post(&gw.url("/after"), "").await;
    client
        .wait_status(&gw.url(after.header("location")), "succeeded")
        .await;
    let paths: Vec<_> = backend.received().iter().map(|r| r.uri.clone()).collect();
    assert_eq!(paths, ["/hold/a", "/after"]);
}

#[tokio::test]
async fn cancel_of_running_job_drops_backend_connection() {
    let (backend, gw, client) = setup_async("").await;
    let reply = client.post(&gw.url("/hold/x"), "").await;
    backend.started(1).await;
    let url = gw.url(reply.header("location"));
    let canceled = client.delete(&url).await;
    assert_eq!(canceled.status, 200);
    assert_eq!(canceled.json()["status"], "canceled");
    backend.disconnects(1).await;
    assert_eq!(client.get(&url).await.json()["status"], "canceled");
}

/// The finished job's life in each store that keeps it in this process:
/// each is what the `[store]` table says besides the default (disk).
const EMBEDDED_STORES: [&str; 2] = ["", "kind = \"memory\"\n"];

#[tokio::test]
async fn delete_of_finished_job_is_204_then_410_and_repeats_are_204() {
    for store in EMBEDDED_STORES {
        delete_of_finished_job(store).await;
    }
}

/// A gateway whose `[store]` table says `store`, and the status URL of a
/// job it has finished.
async fn finished_job(store: &str) -> (Backend, TestGateway, Client, String) {
    let backend = Backend::start().await;
    let toml = format!(
        "[store]\n{store}{}",
        config(&backend.url(), "", &async_route("/{*p}", ""))
    );
    let gw = TestGateway::start(&toml).await;
    let client = Client::default();
    let reply = client.post(&gw.url("/x"), "").await;
    let url = gw.url(reply.header("location"));
    client.wait_status(&url, "succeeded").await;
    (backend, gw, client, url)
}

async fn delete_of_finished_job(store: &str) {
    let (_backend, _gw, client, url) = finished_job(store).await;
    assert_eq!(client.delete(&url).await.status, 204);
    client.get(&url).await.assert_problem(410, "job-gone");
    client
        .get(&format!("{url}/result"))
        .await
        .assert_problem(410, "job-gone");
    assert_eq!(client.delete(&url).await.status, 204);
}

#[tokio::test]
async fn results_expire_to_410_and_tombstones_to_404() {
    for store in EMBEDDED_STORES {
        results_expire(store).await;
    }
}

async fn results_expire(store: &str) {
    let ttls = format!("{store}result_ttl = \"300ms\"\ntombstone_ttl = \"300ms\"\n");
    let (_backend, _gw, client, url) = finished_job(&ttls).await;
    let mut statuses = Vec::new();
    poll_until(
        10,
        "the result to expire and then its tombstone",
        async || {
            let s = client.get(&url).await.status.as_u16();
            if statuses.last() != Some(&s) {
                statuses.push(s);
            }
            (s == 404).then_some(())
        },
    )
    .await;
    assert_eq!(statuses, [200, 410, 404]);
}

#[tokio::test]
async fn unknown_and_malformed_ids_are_404() {
    let (_backend, gw, client) = setup_async("").await;
    let unknown = uuid::Uuid::new_v4();
    for path in [
        format!("/_jobs/{unknown}"),
        format!("/_jobs/{unknown}/result"),
        "/_jobs/not-a-uuid".to_owned(),
        format!("/_jobs/{}", unknown.to_string().to_uppercase()),
        "/_jobs".to_owned(),
        "/_jobs/".to_owned(),
    ] {
        client
            .get(&gw.url(&path))
            .await
            .assert_problem(404, "job-not-found");
    }
    client
        .delete(&gw.url(&format!("/_jobs/{unknown}")))
        .await
        .assert_problem(404, "job-not-found");
}

#[tokio::test]
async fn wrong_method_on_a_job_is_405_with_allow() {
    let (_backend, gw, client) = setup_async("").await;
    let reply = client.post(&gw.url("/x"), "").await;
    let url = gw.url(reply.header("location"));
    let r = client.post(&url, "").await;
    r.assert_problem(405, "method-not-allowed");
    assert_eq!(r.header("allow"), "GET, HEAD, DELETE");
    let r = client
        .send(Method::PUT, &format!("{url}/result"), &[], Bytes::new())
        .await;
    assert_eq!(r.header("allow"), "GET, HEAD");
}

#[tokio::test]
async fn backend_that_resets_mid_body_fails_the_job_with_502() {
    let (_backend, gw, client) = setup_async("").await;
    let reply = client.post(&gw.url("/reset"), "").await;
    let loc = reply.header("location").to_owned();
    let doc = client.wait_status(&gw.url(&loc), "failed").await;
    assert_eq!(doc["error"]["type"], "urn:asyncgate:problem:upstream-reset");
    client
        .get(&gw.url(&format!("{loc}/result")))
        .await
        .assert_problem(502, "upstream-reset");
}

#[tokio::test]
async fn backend_that_never_answers_fails_the_job_with_504() {
    let (backend, gw, client) = setup("job_timeout = \"300ms\"", &async_route("/{*p}", "")).await;
    let reply = client.post(&gw.url("/hold/forever"), "").await;
    let loc = reply.header("location").to_owned();
    let doc = client.wait_status(&gw.url(&loc), "failed").await;
    assert_eq!(
        doc["error"]["type"],
        "urn:asyncgate:problem:upstream-timeout"
    );
    client
        .get(&gw.url(&format!("{loc}/result")))
        .await
        .assert_problem(504, "upstream-timeout");
    backend.disconnects(1).await;
}

#[tokio::test]
async fn backend_that_is_down_fails_the_job_with_502() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let toml = config(&format!("http://{closed}"), "", &async_route("/{*p}", ""));
    let gw = TestGateway::start(&toml).await;
    let client = Client::default();
    let reply = client.post(&gw.url("/x"), "").await;
    let loc = reply.header("location").to_owned();
    let doc = client.wait_status(&gw.url(&loc), "failed").await;
    assert_eq!(
        doc["error"]["type"],
        "urn:asyncgate:problem:upstream-unreachable"
    );
    client
        .get(&gw.url(&format!("{loc}/result")))
        .await
        .assert_problem(502, "upstream-unreachable");
}

#[tokio::test]
async fn public_base_url_makes_every_url_absolute() {
    let backend = Backend::start().await;
    let toml = format!(
        "public_base_url = \"https://api.example.com/\"\n{}",
        config(&backend.url(), "", &async_route("/{*p}", ""))
    );
    let gw = TestGateway::start(&toml).await;
    let client = Client::default();
    let reply = client.post(&gw.url("/x"), "").await;
    let location = reply.header("location").to_owned();
    assert!(
        location.starts_with("https://api.example.com/_jobs/"),
        "{location}"
    );
    let path = location.trim_start_matches("https://api.example.com");
    let done = client.wait_status(&gw.url(path), "succeeded").await;
    assert_eq!(done["links"]["self"], location);
    assert_eq!(done["resourceLocation"], format!("{location}/result"));
}

#[tokio::test]
async fn retry_after_follows_observed_durations() {
    let (backend, gw, client) =
        setup_async("retry_after_min = \"1s\"\nretry_after_max = \"5s\"").await;
    let reply = client.post(&gw.url("/hold/a"), "").await;
    assert_eq!(reply.header("retry-after"), "1");
    backend.release(1);
    client
        .wait_status(&gw.url(reply.header("location")), "succeeded")
        .await;
    let next = client.post(&gw.url("/hold/b"), "").await;
    let ra: u64 = next.header("retry-after").parse().unwrap();
    assert!((1..=5).contains(&ra));
    backend.release(1);
}

#[tokio::test]
async fn chunked_submission_reaches_the_backend_with_a_content_length() {
    let (backend, gw, client) = setup_async("").await;
    let raw = common::raw_exchange(
        gw.addr,
        b"POST /chunked HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )
    .await;
    assert!(raw.starts_with("HTTP/1.1 202"), "{raw}");
    let location = raw
        .lines()
        .find_map(|l| l.strip_prefix("location: "))
        .unwrap()
        .to_owned();
    client.wait_status(&gw.url(&location), "succeeded").await;
    let got = &backend.received()[0];
    assert_eq!(got.body, "hello world");
    assert_eq!(got.headers["content-length"], "11");
    assert!(got.headers.get("transfer-encoding").is_none());
}

#[tokio::test]
async fn head_of_a_job_answers_its_status_without_a_body() {
    let (_backend, gw, client) = setup_async("").await;
    let reply = client.post(&gw.url("/x"), "").await;
    let url = gw.url(reply.header("location"));
    client.wait_status(&url, "succeeded").await;
    let head = client.send(Method::HEAD, &url, &[], Bytes::new()).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-type"), "application/json");
    assert!(head.body.is_empty());
}

#[tokio::test]
async fn http2_clients_get_the_same_job_api() {
    use http_body_util::{BodyExt, Full};
    let (_backend, gw, _) = setup_async("").await;
    let h2: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build_http();
    let send = |method: Method, url: String| {
        let h2 = h2.clone();
        async move {
            let req = http::Request::builder()
                .method(method)
                .uri(url)
                .body(Full::new(Bytes::from_static(b"over h2")))
                .unwrap();
            let res = within(10, "an h2 response", h2.request(req)).await.unwrap();
            assert_eq!(res.version(), http::Version::HTTP_2);
            let status = res.status();
            let location = res
                .headers()
                .get("location")
                .map(|v| v.to_str().unwrap().to_owned());
            let body = res.into_body().collect().await.unwrap().to_bytes();
            (status, location, body)
        }
    };
    let (status, location, _) = send(Method::POST, gw.url("/h2")).await;
    assert_eq!(status, 202);
    let location = location.unwrap();
    Client::default()
        .wait_status(&gw.url(&location), "succeeded")
        .await;
    let (status, _, body) = send(Method::GET, gw.url(&format!("{location}/result"))).await;
    assert_eq!(status, 200);
    assert_eq!(body, "over h2");
}

#[tokio::test]
async fn progress_is_estimated_from_past_durations_and_never_reaches_100_early() {
    let (backend, gw, client) = setup_async("").await;
    // Nothing to go on yet: no progress member.
    let first = client.post(&gw.url("/hold/1"), "").await;
    let first_url = gw.url(first.header("location"));
    backend.started(1).await;
    assert!(client
        .get(&first_url)
        .await
        .json()
        .get("progress")
        .is_none());
    backend.release(1);
    client.wait_status(&first_url, "succeeded").await;
    // Now the route has a duration: a running job's progress is an estimate.
    let second = client.post(&gw.url("/hold/2"), "").await;
    let second_url = gw.url(second.header("location"));
    backend.started(2).await;
    let doc = client.get(&second_url).await.json();
    assert_eq!(doc["status"], "running");
    assert_eq!(doc["progress"]["estimated"], true);
    assert!(doc["progress"]["percent"].as_u64().unwrap() < 100);
    backend.release(1);
    client.wait_status(&second_url, "succeeded").await;
}
