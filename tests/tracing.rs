//! OpenTelemetry traces, as a collector receives them: the built binary
//! exports OTLP/HTTP protobuf to a receiver written with the OpenTelemetry
//! project's own protobuf definitions (`tests/otlp/receiver.py`, Python's
//! `opentelemetry-proto`, which `.ci/run` installs in `.ci/venv`), and the
//! test reads the spans it decoded. What the backend and the webhook
//! receiver were sent is checked against them: each hop names its span.
#![cfg(feature = "otel")]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use common::process::{write_config, Running, BIN};
use common::{poll_until, Backend, Client};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// The receiver, and every span it has decoded so far.
struct Collector {
    port: u16,
    spans: Arc<Mutex<Vec<Value>>>,
    _child: Child,
}

impl Collector {
    async fn start() -> Collector {
        let mut child = Command::new("python3")
            .arg("tests/otlp/receiver.py")
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 with opentelemetry-proto (bash .ci/run puts it in .ci/venv)");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = common::within(20, "the receiver to listen", lines.next_line())
            .await
            .unwrap()
            .expect("the receiver names its port (is opentelemetry-proto installed?)");
        let port = first.strip_prefix("listening ").unwrap().parse().unwrap();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&spans);
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                kept.lock()
                    .unwrap()
                    .push(serde_json::from_str(&line).unwrap());
            }
        });
        Collector {
            port,
            spans,
            _child: child,
        }
    }

    /// The spans of `trace`, once `names` are all among them.
    async fn trace(&self, trace: &str, names: &[&str]) -> HashMap<String, Value> {
        poll_until(
            30,
            &format!("spans {names:?} of trace {trace}"),
            async || {
                let found: HashMap<String, Value> = self
                    .spans
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|s| s["trace_id"] == trace)
                    .map(|s| (s["name"].as_str().unwrap().to_owned(), s.clone()))
                    .collect();
                names
                    .iter()
                    .all(|n| found.contains_key(*n))
                    .then_some(found)
            },
        )
        .await
    }

    /// Every span named `name`.
    fn named(&self, name: &str) -> Vec<Value> {
        let spans = self.spans.lock().unwrap();
        spans
            .iter()
            .filter(|s| s["name"] == name)
            .cloned()
            .collect()
    }
}

/// Submits a job with `headers` and waits until it succeeded.
async fn job(client: &Client, method: http::Method, url: &str, headers: &[(&str, &str)]) {
    let accepted = client.send(method, url, headers, "x").await;
    accepted.assert_status(202);
    client
        .wait_status(accepted.header("location"), "succeeded")
        .await;
}

/// `00-{trace}-{parent}-01`, with a fresh trace id.
fn traceparent(n: u8) -> (String, String, String) {
    let trace = format!("4bf92f3577b34da6a3ce929d0e0e47{n:02x}");
    let parent = "00f067aa0ba902b7".to_owned();
    (format!("00-{trace}-{parent}-01"), trace, parent)
}

/// The span id a request's `traceparent` names as its parent.
fn parent_of(headers: &http::HeaderMap) -> String {
    let value = headers["traceparent"].to_str().unwrap();
    value.split('-').nth(2).unwrap().to_owned()
}

#[tokio::test]
async fn a_job_is_one_trace_from_the_clients_span_to_its_webhook() {
    let collector = Collector::start().await;
    let backend = Backend::start().await;
    let receiver = Backend::start().await;
    let config = write_config(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\
         [tracing]\notlp_endpoint = \"http://127.0.0.1:{port}\"\nservice_name = \"gateway-under-test\"\n\
         [webhooks]\nsecret = \"{SECRET}\"\nallow_networks = [\"127.0.0.0/8\"]\n\
         [upstreams.app]\nurl = \"{backend}\"\nretries = 1\nretry_backoff = \"10ms\"\n\
         [[routes]]\nname = \"reports\"\npath = \"/reports/{{*p}}\"\nupstream = \"app\"\nmode = \"async\"\n\
         callback_hosts = [\"127.0.0.1\"]\n\
         [[routes]]\nname = \"flaky\"\npath = \"/flaky/{{*p}}\"\nupstream = \"app\"\nmode = \"async\"\n\
         [default]\nupstream = \"app\"\n",
        port = collector.port,
        backend = backend.url(),
    ));
    let mut command = Command::new(BIN);
    command
        .args(["--config", config.0.to_str().unwrap()])
        // Batches go out every 100 ms rather than every 5 s.
        .env("OTEL_BSP_SCHEDULE_DELAY", "100");
    let gateway = Running::spawn(command, config);
    let base = format!("http://{}", gateway.addr().await);

    let client = Client::default();

    // A job, submitted inside the client's trace, with a webhook.
    let (parent, trace, client_span) = traceparent(1);
    let hook = format!("{}/hook", receiver.url());
    let headers = [("traceparent", parent.as_str()), ("callback-url", &hook)];
    job(
        &client,
        http::Method::POST,
        &format!("{base}/reports/1"),
        &headers,
    )
    .await;
    let spans = collector
        .trace(
            &trace,
            &[
                "POST reports",
                "queue wait",
                "backend attempt 1",
                "store commit",
                "webhook delivery",
            ],
        )
        .await;
    let server = &spans["POST reports"];
    assert_eq!(server["kind"], "server");
    assert_eq!(server["service"], "gateway-under-test");
    assert_eq!(
        server["parent_span_id"], client_span,
        "the client's span is honoured"
    );
    assert_eq!(server["attributes"]["http.response.status_code"], 202);
    let server_id = server["span_id"].as_str().unwrap();
    let attempt = &spans["backend attempt 1"];
    assert_eq!(attempt["kind"], "client");
    assert_eq!(attempt["parent_span_id"], server_id);
    assert_eq!(spans["queue wait"]["parent_span_id"], server_id);
    assert_eq!(spans["store commit"]["parent_span_id"], attempt["span_id"]);
    let sent = backend.received();
    let job_request = sent.iter().find(|r| r.uri == "/reports/1").unwrap();
    assert_eq!(
        parent_of(&job_request.headers),
        attempt["span_id"].as_str().unwrap(),
        "the backend's traceparent names the attempt"
    );
    let delivery = &spans["webhook delivery"];
    assert_eq!(delivery["parent_span_id"], server_id);
    let hook = poll_until(15, "the webhook", async || {
        receiver.received().into_iter().find(|r| r.uri == "/hook")
    })
    .await;
    assert_eq!(
        parent_of(&hook.headers),
        delivery["span_id"].as_str().unwrap(),
        "the webhook's traceparent names its delivery"
    );

    // A proxied request: a server span and its client span.
    let (parent, trace, client_span) = traceparent(2);
    client
        .send(
            http::Method::GET,
            &format!("{base}/plain/7"),
            &[("traceparent", parent.as_str())],
            "",
        )
        .await
        .assert_status(200);
    let spans = collector.trace(&trace, &["GET _default", "proxy"]).await;
    assert_eq!(spans["GET _default"]["parent_span_id"], client_span);
    assert_eq!(
        spans["proxy"]["parent_span_id"],
        spans["GET _default"]["span_id"]
    );
    let proxied = backend
        .received()
        .into_iter()
        .find(|r| r.uri == "/plain/7")
        .unwrap();
    assert_eq!(
        parent_of(&proxied.headers),
        spans["proxy"]["span_id"].as_str().unwrap()
    );

    // A retry after a back-off: a trace of its own, linked to the first.
    let (parent, trace, _) = traceparent(3);
    let headers = [("traceparent", parent.as_str())];
    job(
        &client,
        http::Method::GET,
        &format!("{base}/flaky/1/r"),
        &headers,
    )
    .await;
    let first = collector
        .trace(&trace, &["GET flaky", "backend attempt 1"])
        .await;
    let submission = first["GET flaky"]["span_id"].as_str().unwrap().to_owned();
    let retry = poll_until(30, "the retry's span", async || {
        collector.named("backend attempt 2").into_iter().next()
    })
    .await;
    assert_ne!(retry["trace_id"], trace.as_str(), "a new trace");
    assert_eq!(retry["parent_span_id"], "");
    assert_eq!(
        retry["links"],
        serde_json::json!([{ "trace_id": trace, "span_id": submission }])
    );
}

/// With no endpoint, nothing is exported and the client's `traceparent`
/// reaches the backend untouched.
#[tokio::test]
async fn without_an_endpoint_the_clients_traceparent_passes_untouched() {
    let backend = Backend::start().await;
    let gateway = Running::start(&common::config(
        &backend.url(),
        "",
        "[default]\nupstream = \"app\"\n",
    ))
    .await;
    let base = format!("http://{}", gateway.addr().await);
    let (parent, _, _) = traceparent(4);
    Client::default()
        .send(
            http::Method::GET,
            &format!("{base}/x"),
            &[("traceparent", parent.as_str())],
            "",
        )
        .await
        .assert_status(200);
    assert_eq!(
        backend.received()[0].headers["traceparent"],
        parent.as_str()
    );
}

/// `asyncgate check` says where spans go.
#[test]
fn check_names_where_spans_go() {
    let config =
        write_config("[tracing]\notlp_endpoint = \"http://127.0.0.1:4318\"\nsample_ratio = 0.5\n");
    let out = std::process::Command::new(BIN)
        .args(["check", "--config", config.0.to_str().unwrap()])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("spans to http://127.0.0.1:4318/v1/traces as asyncgate (sample ratio 0.5)"),
        "{said}"
    );
}
