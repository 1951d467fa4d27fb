//! The job API describes itself at `{jobs_path}/openapi.json`; the
//! document is checked against the gateway that serves it, by hand and by
//! schemathesis (from PyPI; `.ci/run` installs it).

mod common;

use std::process::Stdio;

use common::{async_route, config, within, Backend, Client, TempDir, TestGateway};
use tokio::process::Command;

#[tokio::test]
async fn the_document_names_the_job_endpoints_under_the_configured_path() {
    let backend = Backend::start().await;
    let gw = TestGateway::start(&format!(
        "jobs_path = \"/ops\"\n{}",
        config(&backend.url(), "", &async_route("/r/{*p}", ""))
    ))
    .await;
    let client = Client::default();
    let reply = client.get(&gw.url("/ops/openapi.json")).await;
    reply.assert_status(200);
    assert_eq!(reply.header("content-type"), "application/json");
    let doc = reply.json();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    let mut names: Vec<&str> = paths.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["/ops/{id}", "/ops/{id}/poll", "/ops/{id}/result"]);
    // Every operation answers an unknown id with a status it documents.
    let unknown = "0b6f5e0e-3c1c-4b0e-9d7e-5f3c2a9e8d11";
    for (path, item) in paths {
        for method in ["get", "delete"] {
            let Some(operation) = item.get(method) else {
                continue;
            };
            let url = gw.url(&path.replace("{id}", unknown));
            let status = client
                .send(method.to_uppercase().parse().unwrap(), &url, &[], "")
                .await
                .status;
            assert!(
                operation["responses"].get(status.as_str()).is_some(),
                "{method} {path} answered {status}, which it does not document"
            );
        }
    }
    client
        .post(&gw.url("/ops/openapi.json"), "")
        .await
        .assert_problem(405, "method-not-allowed");
}

/// Runs schemathesis's every check against the document the gateway at
/// `base` serves, with `id` for every job id when given.
async fn schemathesis(base: &str, id: Option<&str>, extra: &[&str]) {
    let dir = TempDir::new();
    let settings = dir.0.join("schemathesis.toml");
    let text = id.map_or(String::new(), |id| format!("[parameters]\nid = \"{id}\"\n"));
    std::fs::write(&settings, text).unwrap();
    let mut args = vec![
        "--config-file".to_owned(),
        settings.to_str().unwrap().to_owned(),
        "run".to_owned(),
        format!("{base}/_jobs/openapi.json"),
        "--checks".to_owned(),
        "all".to_owned(),
        "--max-examples".to_owned(),
        "30".to_owned(),
        "--request-timeout".to_owned(),
        "35".to_owned(),
        "--seed".to_owned(),
        "1".to_owned(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let out = within(
        240,
        "schemathesis to finish",
        Command::new("schemathesis")
            .args(&args)
            .current_dir(&dir.0)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("schemathesis must be installed (pip install schemathesis; .ci/run does)");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn schemathesis_finds_no_server_error_and_no_answer_off_the_document() {
    let (_backend, gw, client) = common::setup_async("").await;
    let base = gw.url("");
    // Made-up ids: what every endpoint answers for a job that is not there.
    schemathesis(&base, None, &[]).await;
    // A finished job: its document, result and poll. Not DELETE, which
    // would leave the rest of the run a deleted job.
    let reply = client.post(&gw.url("/report"), "body").await;
    let doc = client
        .wait_status(&gw.url(reply.header("location")), "succeeded")
        .await;
    let id = doc["id"].as_str().unwrap();
    schemathesis(&base, Some(id), &["--exclude-method", "DELETE"]).await;
}
