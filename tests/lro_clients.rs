//! The LRO clients of the Azure SDKs drive asyncgate unchanged: Python's
//! azure-core (`LROBasePolling`) and JavaScript's `@azure/core-lro`, each
//! run as the real library against a live gateway, through both polling
//! dialects, `redirect_when_done`, a failed and a canceled job, and URLs
//! built from the request or from `public_base_url`; and the plain clients
//! the seed pattern serves, Python's requests and `curl -L`, following
//! `Location` through its `303` to the result.

mod common;

use std::process::Stdio;

use common::process::Running;
use common::{config, within, Backend, Client, TestGateway};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// The two clients, as commands taking the submission URL last.
const CLIENTS: [(&str, &[&str]); 2] = [
    ("azure-core", &["python3", "tests/lro/azure_core_poller.py"]),
    ("core-lro", &["node", "tests/browser/lro.mjs"]),
];

fn routes(down: &str) -> String {
    let route = |name: &str, extra: &str| {
        format!(
            "[[routes]]\nname = \"{name}\"\npath = \"/{name}/{{*p}}\"\nupstream = \"app\"\nmethods = [\"POST\"]\n{extra}\n"
        )
    };
    format!(
        "{}{}{}{}{}[upstreams.down]\nurl = \"{down}\"\n[[routes]]\nname = \"down\"\npath = \"/down/{{*p}}\"\nupstream = \"down\"\n",
        route("status", ""),
        route("poll", "location = \"poll\""),
        route("redirect", "location = \"poll\"\nredirect_when_done = true"),
        route("redirect-status", "redirect_when_done = true"),
        // The test backend holds requests under /hold until released.
        "[[routes]]\nname = \"hold\"\npath = \"/hold/{*p}\"\nupstream = \"app\"\n",
    )
}

/// Runs `client` on `url`; calls `accepted` with the job's `Location` once
/// the client has it; returns the client's verdict.
async fn drive(client: &[&str], url: &str, accepted: impl AsyncFnOnce(&str)) -> serde_json::Value {
    let mut child = Command::new(client[0])
        .args(&client[1..])
        .arg(url)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (bash .ci/run installs node's packages and Python's azure-core in .ci/venv)",
                client[0]
            )
        });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let what = format!("{} on {url}", client.join(" "));
    let first = within(30, &what, lines.next_line()).await.unwrap();
    let location = first
        .as_deref()
        .and_then(|l| l.strip_prefix("LOCATION "))
        .unwrap_or_else(|| panic!("{what}: {first:?}"));
    accepted(location).await;
    let verdict = within(60, &what, lines.next_line()).await.unwrap();
    let verdict = verdict.unwrap_or_else(|| panic!("{what} printed no verdict"));
    serde_json::from_str(&verdict).unwrap_or_else(|e| panic!("{what}: {e}: {verdict}"))
}

fn assert_result(verdict: &serde_json::Value, from: &str, what: &str) {
    assert_eq!(verdict["result"], 200, "{what}: {verdict}");
    let body = &verdict["body"];
    let body: serde_json::Value = match body.as_str() {
        Some(text) => serde_json::from_str(text).unwrap(),
        None => body.clone(),
    };
    assert_eq!(body["from"], from, "{what}: {verdict}");
}

#[tokio::test]
async fn azure_sdk_pollers_drive_every_dialect_to_its_end() {
    let backend = Backend::start().await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let gw = TestGateway::start(&config(
        &backend.url(),
        "",
        &routes(&format!("http://{closed}")),
    ))
    .await;
    let http = Client::default();
    for (n, (name, client)) in CLIENTS.into_iter().enumerate() {
        let from = if name == "azure-core" {
            "azure-core"
        } else {
            "core-lro"
        };
        for route in ["status", "poll", "redirect", "redirect-status"] {
            let what = format!("{name} on {route}");
            let verdict = drive(client, &gw.url(&format!("/{route}/x")), async |location| {
                assert!(location.starts_with("http://"), "{what}: {location}");
            })
            .await;
            assert_result(&verdict, from, &what);
        }

        // A job that failed without a backend response: the error carries
        // the problem's code and message.
        let verdict = drive(client, &gw.url("/down/x"), async |_| {}).await;
        assert!(verdict.get("error").is_some(), "{name}: {verdict}");
        let said = format!("{} {}", verdict["code"], verdict["message"]);
        assert!(said.contains("upstream-unreachable"), "{name}: {verdict}");
        assert!(said.contains("could not be connected"), "{name}: {verdict}");

        // Canceled while the backend holds it: its request is dropped.
        let verdict = drive(client, &gw.url("/hold/x"), async |location| {
            http.wait_status(location, "running").await;
            http.delete(location).await.assert_status(200);
        })
        .await;
        backend.disconnects(n + 1).await;
        assert!(verdict.get("error").is_some(), "{name}: {verdict}");
        assert!(
            verdict.to_string().to_lowercase().contains("cancel"),
            "{name}: {verdict}"
        );
    }
}

#[tokio::test]
async fn azure_sdk_pollers_follow_urls_under_public_base_url() {
    let backend = Backend::start().await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let gw = Running::start_exact(&format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\npublic_base_url = \"http://localhost:{port}\"\n{}",
        config(&backend.url(), "", &routes("http://127.0.0.1:9"))
    ))
    .await;
    let base = format!("http://{}", gw.addr().await);
    for (name, client) in CLIENTS {
        let from = if name == "azure-core" {
            "azure-core"
        } else {
            "core-lro"
        };
        let verdict = drive(client, &format!("{base}/status/x"), async |location| {
            assert!(
                location.starts_with(&format!("http://localhost:{port}/_jobs/")),
                "{location}"
            );
        })
        .await;
        assert_result(&verdict, from, name);
    }
}

/// A gateway whose one route holds its jobs in the backend until released
/// and sends finished ones from their status monitor to their result.
async fn seed_pattern_gateway(backend: &Backend) -> TestGateway {
    let route = "[[routes]]\nname = \"held\"\npath = \"/hold/{*p}\"\nupstream = \"app\"\nredirect_when_done = true\n";
    TestGateway::start(&config(&backend.url(), "", route)).await
}

/// Python's requests, following `Location` as people's scripts do, sees
/// the job's document while it runs and, once it is done, is taken by the
/// `303` to the backend's own answer.
#[tokio::test]
async fn python_requests_follows_location_to_the_result() {
    let backend = Backend::start().await;
    let gw = seed_pattern_gateway(&backend).await;
    let mut child = Command::new("python3")
        .arg("tests/lro/follow_location.py")
        .arg(gw.url("/hold/x"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 with requests must be installed (bash .ci/run puts them in .ci/venv)");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = async || {
        within(30, "follow_location.py", lines.next_line())
            .await
            .unwrap()
            .expect("follow_location.py ended early")
    };
    let location = next().await;
    assert!(location.starts_with("LOCATION http://"), "{location}");
    backend.started(1).await;
    // It saw the running job's document before anything was released.
    while next().await != "STATUS running" {}
    backend.release(1);
    let verdict = loop {
        let line = next().await;
        if !line.starts_with("STATUS ") {
            break serde_json::from_str::<serde_json::Value>(&line).unwrap();
        }
    };
    assert_eq!(verdict["redirects"], serde_json::json!([303]), "{verdict}");
    assert_eq!(verdict["result"], 200, "{verdict}");
    assert!(
        verdict["url"].as_str().unwrap().ends_with("/result"),
        "{verdict}"
    );
    assert_eq!(verdict["body"], r#"{"from": "requests"}"#, "{verdict}");
}

/// `curl -L` on `Location`: the document while the job runs, the backend's
/// answer after one redirect once it is done.
#[tokio::test]
async fn curl_follows_location_to_the_result() {
    let backend = Backend::start().await;
    let gw = seed_pattern_gateway(&backend).await;
    let http = Client::default();
    let accepted = http.post(&gw.url("/hold/curl"), "by curl").await;
    let location = accepted.header("location").to_owned();
    let operation = accepted.header("operation-location").to_owned();
    backend.started(1).await;
    let curl = async |url: &str| {
        let out = within(
            30,
            "curl -L",
            Command::new("curl")
                .args(["-sS", "-L", "-w", "\n%{num_redirects} %{http_code}", url])
                .output(),
        )
        .await
        .expect("curl is installed");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let running = curl(&location).await;
    let (document, trailer) = running.rsplit_once('\n').unwrap();
    assert_eq!(trailer, "0 200", "{running}");
    let document: serde_json::Value = serde_json::from_str(document).unwrap();
    assert_eq!(document["status"], "running");
    backend.release(1);
    let done = http.get(&format!("{operation}&wait=10")).await;
    assert_eq!(done.json()["status"], "succeeded");
    assert_eq!(curl(&location).await, "by curl\n1 200");
}
