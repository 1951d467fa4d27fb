//! The admin dashboard: its JSON over real sockets, and its page in a real
//! browser (Debian's headless Chromium, driven by playwright-core from
//! `tests/browser`; `.ci/run` installs both).

mod common;

use std::net::SocketAddr;
use std::process::Stdio;

use common::{config, within, Backend, Client, TestGateway};
use tokio::process::Command;

/// A gateway with two async routes: `jobs` (POST) to a backend that holds
/// requests (two at a time), `broken` to an address nothing listens on;
/// everything else proxied to the backend.
async fn gateway() -> (Backend, TestGateway) {
    let backend = Backend::start().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let rest = format!(
        "[upstreams.dead]\nurl = \"http://{closed}\"\n\
         [default]\nupstream = \"app\"\n\
         [[routes]]\nname = \"jobs\"\npath = \"/hold/{{*p}}\"\nmethods = [\"POST\"]\nupstream = \"app\"\n\
         [[routes]]\nname = \"broken\"\npath = \"/broken/{{*p}}\"\nupstream = \"dead\"\n"
    );
    let gw = TestGateway::start(&config(&backend.url(), "max_concurrency = 2", &rest)).await;
    (backend, gw)
}

/// Three jobs held (two running, one queued) and one failed; the failed
/// one's id.
async fn traffic(client: &Client, gw: &TestGateway, backend: &Backend) -> String {
    for i in 0..3 {
        client
            .post(&gw.url(&format!("/hold/{i}")), "x")
            .await
            .assert_status(202);
    }
    backend.started(2).await;
    let failed = client.post(&gw.url("/broken/1"), "x").await;
    let doc = client
        .wait_status(&gw.url(failed.header("location")), "failed")
        .await;
    doc["id"].as_str().unwrap().to_owned()
}

fn admin(gw: &TestGateway) -> SocketAddr {
    gw.admin.unwrap()
}

#[tokio::test]
async fn the_jobs_json_counts_per_route_and_lists_with_filters() {
    let (backend, gw) = gateway().await;
    let client = Client::default();
    let failed = traffic(&client, &gw, &backend).await;
    let base = format!("http://{}/jobs", admin(&gw));
    let all = client.get(&base).await;
    all.assert_status(200);
    let all = all.json();
    assert_eq!(all["ready"], true);
    let jobs_route = &all["routes"][0];
    assert_eq!(jobs_route["route"], "jobs");
    assert_eq!(jobs_route["submitted"], 3);
    assert_eq!(jobs_route["active"], 3);
    assert_eq!(all["routes"][1]["failed"], 1);
    let app = all["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["upstream"] == "app")
        .unwrap();
    assert_eq!(
        (app["running"].as_u64(), app["queued"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(app["max_concurrency"], 2);
    assert_eq!(all["jobs"].as_array().unwrap().len(), 4);
    assert_eq!(all["jobs"][0]["id"], failed.as_str(), "newest first");
    assert!(all["store"]["max_bytes"].as_u64().unwrap() > 0);

    let failures = client.get(&format!("{base}?status=failed")).await.json();
    let failures = failures["jobs"].as_array().unwrap();
    assert_eq!(failures.len(), 1);
    assert_eq!(
        failures[0]["error"]["type"],
        "urn:asyncgate:problem:upstream-unreachable"
    );
    let held = client
        .get(&format!("{base}?route=jobs&limit=2"))
        .await
        .json();
    let held = held["jobs"].as_array().unwrap();
    assert_eq!(held.len(), 2);
    assert!(held.iter().all(|j| j["route"] == "jobs"));
    client
        .get(&format!("{base}?status=done"))
        .await
        .assert_status(400);
    backend.release(3);
}

#[tokio::test]
async fn the_page_shows_the_jobs_in_a_real_browser() {
    let (backend, gw) = gateway().await;
    let client = Client::default();
    let page = client.get(&format!("http://{}/", admin(&gw))).await;
    page.assert_status(200);
    assert!(page.header("content-type").starts_with("text/html"));
    let failed = traffic(&client, &gw, &backend).await;
    // A proxied request whose client hangs up before the answer: the
    // advisor suggests making its path async.
    let abandoned = tokio::spawn({
        let url = gw.url("/hold/export/9");
        async move { Client::default().get(&url).await }
    });
    backend.started(3).await;
    abandoned.abort();
    common::poll_until(15, "the advisor to see the hang-up", async || {
        let advice = client
            .get(&format!("http://{}/advisor", admin(&gw)))
            .await
            .json();
        (advice["suggestions"][0]["client_aborts"] == 1).then_some(())
    })
    .await;
    let browser_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser");
    assert!(
        std::path::Path::new(browser_dir)
            .join("node_modules")
            .exists(),
        "run `npm ci` in tests/browser first (.ci/run does)"
    );
    let screenshot = concat!(env!("CARGO_MANIFEST_DIR"), "/target/dashboard.png");
    let expect = serde_json::json!({
        "route": "jobs",
        "route_counts": { "submitted": 3, "active": 3 },
        "upstream": "app",
        "running": "2 / 2",
        "failed_job": failed,
        "failed_title": "Upstream Unreachable",
        "jobs": 4,
        "advised": "/hold/export/{id}",
    });
    let out = within(
        60,
        "the browser to check the dashboard",
        Command::new("node")
            .current_dir(browser_dir)
            .args([
                "dashboard.mjs",
                &format!("http://{}/", admin(&gw)),
                &expect.to_string(),
                screenshot,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("node must be installed (.ci/run installs it)");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::metadata(screenshot).unwrap().len() > 0);
    backend.release(4);
}
