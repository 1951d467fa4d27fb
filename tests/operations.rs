//! What the operator sees: the admin listener's health, readiness and
//! metrics, read over real sockets after known traffic; and the refusal to
//! share a port with another process.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use common::process::Running;
use common::{async_route, config, poll_until, within, Backend, Client, TestGateway};

/// One scrape, parsed: each sample by its name and its labels.
struct Scrape(BTreeMap<(String, BTreeMap<String, String>), f64>);

impl Scrape {
    async fn of(client: &Client, admin: SocketAddr) -> Scrape {
        let reply = client.get(&format!("http://{admin}/metrics")).await;
        reply.assert_status(200);
        assert!(
            reply.header("content-type").starts_with("text/plain"),
            "{:?}",
            reply.headers
        );
        Scrape::parse(std::str::from_utf8(&reply.body).unwrap())
    }

    /// The Prometheus text format: `name{k="v",…} value` per line, comments
    /// after `#`. Label values here never hold a quote or a comma.
    fn parse(text: &str) -> Scrape {
        let mut samples = BTreeMap::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => {
                    let inner = rest.strip_suffix('}').expect("labels close");
                    let labels = inner
                        .split(',')
                        .filter(|kv| !kv.is_empty())
                        .map(|kv| {
                            let (k, v) = kv.split_once('=').expect("label=value");
                            (k.to_owned(), v.trim_matches('"').to_owned())
                        })
                        .collect();
                    (name, labels)
                }
                None => (series, BTreeMap::new()),
            };
            let value = value.parse().unwrap_or_else(|_| panic!("a number: {line}"));
            samples.insert((name.to_owned(), labels), value);
        }
        Scrape(samples)
    }

    /// A sample's value; 0 when it is absent (a counter not yet counted).
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.0
            .get(&(name.to_owned(), labels))
            .copied()
            .unwrap_or(0.0)
    }

    fn has(&self, name: &str) -> bool {
        self.0.keys().any(|(n, _)| n == name)
    }
}

const PROXY_ALL: &str = "[default]\nupstream = \"app\"\n";

/// A backend, and a gateway proxying everything to it.
async fn proxying() -> (Backend, TestGateway) {
    let backend = Backend::start().await;
    let gw = TestGateway::start(&config(&backend.url(), "", PROXY_ALL)).await;
    (backend, gw)
}

fn admin(gw: &TestGateway) -> SocketAddr {
    gw.admin
        .expect("the tests' gateways have an admin listener")
}

#[tokio::test]
async fn health_and_readiness_answer_on_the_admin_listener_only() {
    let (backend, gw) = proxying().await;
    let client = Client::default();
    let admin = admin(&gw);
    assert_ne!(admin.port(), gw.addr.port());
    client
        .get(&format!("http://{admin}/healthz"))
        .await
        .assert_status(200);
    client
        .get(&format!("http://{admin}/readyz"))
        .await
        .assert_status(200);
    client
        .get(&format!("http://{admin}/nothing"))
        .await
        .assert_status(404);
    // On the public port the same path is the backend's, not the admin's.
    client.get(&gw.url("/healthz")).await;
    assert_eq!(backend.received().last().unwrap().uri, "/healthz");
}

#[tokio::test]
async fn counters_grow_by_exactly_the_traffic_and_gauges_follow_held_jobs() {
    let backend = Backend::start().await;
    let routes = format!(
        "{}[default]\nupstream = \"app\"\n",
        async_route("/hold/{*p}", "")
    );
    let gw = TestGateway::start(&config(&backend.url(), "max_concurrency = 2", &routes)).await;
    let client = Client::default();
    let admin = admin(&gw);
    let before = Scrape::of(&client, admin).await;
    assert!(before.has("asyncgate_store_max_bytes"));
    let mut monitors = Vec::new();
    for i in 0..5 {
        let reply = client.post(&gw.url(&format!("/hold/{i}")), "x").await;
        reply.assert_status(202);
        monitors.push(gw.url(reply.header("location")));
    }
    backend.started(2).await;
    let held = Scrape::of(&client, admin).await;
    let route = [("route", "jobs")];
    assert_eq!(held.get("asyncgate_jobs_submitted_total", &route), 5.0);
    assert_eq!(
        held.get(
            "asyncgate_requests_total",
            &[("route", "jobs"), ("code", "202")]
        ),
        5.0
    );
    let upstream = [("upstream", "app")];
    assert_eq!(held.get("asyncgate_jobs_running", &upstream), 2.0);
    assert_eq!(held.get("asyncgate_jobs_queued", &upstream), 3.0);
    assert!(held.get("asyncgate_store_bytes", &[]) > 0.0);

    backend.release(5);
    for url in &monitors {
        client.wait_status(url, "succeeded").await;
    }
    let done = Scrape::of(&client, admin).await;
    assert_eq!(
        done.get(
            "asyncgate_jobs_finished_total",
            &[("route", "jobs"), ("status", "succeeded")]
        ),
        5.0
    );
    assert_eq!(done.get("asyncgate_jobs_running", &upstream), 0.0);
    assert_eq!(done.get("asyncgate_jobs_queued", &upstream), 0.0);
    assert_eq!(
        done.get("asyncgate_job_duration_seconds_count", &route),
        5.0
    );
    assert_eq!(
        done.get(
            "asyncgate_job_duration_seconds_bucket",
            &[("route", "jobs"), ("le", "+Inf")]
        ),
        5.0
    );
    assert_eq!(
        done.get("asyncgate_upstream_duration_seconds_count", &upstream),
        5.0
    );
    // Polls of the job API count under its own name.
    assert!(
        done.get(
            "asyncgate_requests_total",
            &[("route", "_jobs"), ("code", "200")]
        ) >= 5.0
    );
    client
        .get(&gw.url("/passed/through"))
        .await
        .assert_status(200);
    let after = Scrape::of(&client, admin).await;
    assert_eq!(
        after.get(
            "asyncgate_requests_total",
            &[("route", "_default"), ("code", "200")]
        ),
        1.0
    );
}

#[tokio::test]
async fn a_refusal_is_counted_with_its_reason() {
    let backend = Backend::start().await;
    let gw = TestGateway::start(&config(
        &backend.url(),
        "max_concurrency = 1\nmax_queue = 0",
        &async_route("/hold/{*p}", ""),
    ))
    .await;
    let client = Client::default();
    client
        .post(&gw.url("/hold/1"), "x")
        .await
        .assert_status(202);
    backend.started(1).await;
    client
        .post(&gw.url("/hold/2"), "x")
        .await
        .assert_status(503);
    let scrape = Scrape::of(&client, admin(&gw)).await;
    assert_eq!(
        scrape.get(
            "asyncgate_rejected_total",
            &[("route", "jobs"), ("reason", "queue-full")]
        ),
        1.0
    );
    assert_eq!(
        scrape.get(
            "asyncgate_requests_total",
            &[("route", "jobs"), ("code", "503")]
        ),
        1.0
    );
    assert_eq!(
        scrape.get("asyncgate_jobs_submitted_total", &[("route", "jobs")]),
        1.0
    );
    backend.release(1);
}

#[tokio::test]
async fn a_scraper_asking_for_openmetrics_gets_it() {
    let (_backend, gw) = proxying().await;
    let client = Client::default();
    let reply = client
        .send(
            http::Method::GET,
            &format!("http://{}/metrics", admin(&gw)),
            &[("accept", "application/openmetrics-text; version=1.0.0")],
            "",
        )
        .await;
    reply.assert_status(200);
    assert!(reply
        .header("content-type")
        .starts_with("application/openmetrics-text"));
    assert!(std::str::from_utf8(&reply.body)
        .unwrap()
        .ends_with("# EOF\n"));
}

#[tokio::test]
async fn readiness_fails_as_soon_as_the_drain_starts() {
    let backend = Backend::start().await;
    let gw = TestGateway::start(&config(&backend.url(), "", &async_route("/hold/{*p}", ""))).await;
    let client = Client::default();
    let admin = admin(&gw);
    client
        .post(&gw.url("/hold/1"), "x")
        .await
        .assert_status(202);
    backend.started(1).await;
    let readyz = format!("http://{admin}/readyz");
    client.get(&readyz).await.assert_status(200);
    // The held job keeps the drain waiting; readiness must already say no.
    let stopping = tokio::spawn(gw.stop());
    poll_until(10, "readiness to fail during the drain", async || {
        (client.get(&readyz).await.status == 503).then_some(())
    })
    .await;
    backend.release(1);
    let report = within(30, "the drain to finish", stopping).await.unwrap();
    assert!(report.is_clean());
}

#[tokio::test]
async fn a_second_gateway_on_a_taken_address_refuses_to_start() {
    let backend = Backend::start().await;
    let first = Running::start(&config(&backend.url(), "", PROXY_ALL)).await;
    let taken = first.addr().await;
    let mut second = Running::start_exact(&format!(
        "[server]\nlisten = \"{taken}\"\n{}",
        config(&backend.url(), "", PROXY_ALL)
    ))
    .await;
    assert_eq!(second.exit_code().await, 1);
    let line = second.wait_line("cannot start").await;
    assert!(line.contains(&taken), "{line}");
    assert!(line.contains("already in use by another process"), "{line}");
    // The first one still has its port to itself.
    let client = Client::default();
    for _ in 0..20 {
        client
            .get(&format!("http://{taken}/x"))
            .await
            .assert_status(200);
    }
    assert_eq!(backend.request_count(), 20);
}

#[tokio::test]
async fn a_request_id_is_kept_or_made_and_reaches_the_backend_and_the_client() {
    let backend = Backend::start().await;
    let routes = format!("{}{PROXY_ALL}", async_route("/jobs/{*p}", ""));
    let gw = TestGateway::start(&config(&backend.url(), "", &routes)).await;
    let client = Client::default();
    let kept = client
        .send(
            http::Method::GET,
            &gw.url("/x"),
            &[("x-request-id", "trace-42")],
            "",
        )
        .await;
    assert_eq!(kept.header("x-request-id"), "trace-42");
    assert_eq!(backend.received()[0].headers["x-request-id"], "trace-42");

    let made = client.get(&gw.url("/y")).await;
    let id = made.header("x-request-id");
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    assert_eq!(backend.received()[1].headers["x-request-id"], id);

    // Not a log injection: an id with spaces or control bytes is replaced.
    let replaced = client
        .send(
            http::Method::GET,
            &gw.url("/z"),
            &[("x-request-id", "a b")],
            "",
        )
        .await;
    assert!(uuid::Uuid::parse_str(replaced.header("x-request-id")).is_ok());

    // A job's backend request carries the id of the submission.
    let accepted = client
        .send(
            http::Method::POST,
            &gw.url("/jobs/1"),
            &[("x-request-id", "job-7")],
            "",
        )
        .await;
    accepted.assert_status(202);
    assert_eq!(accepted.header("x-request-id"), "job-7");
    client
        .wait_status(&gw.url(accepted.header("location")), "succeeded")
        .await;
    assert_eq!(backend.received()[3].headers["x-request-id"], "job-7");
}

#[tokio::test]
async fn json_logs_are_flat_objects_with_the_request_id() {
    let backend = Backend::start().await;
    let gateway = Running::start_with(
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n{}",
            config(&backend.url(), "", PROXY_ALL)
        ),
        &["--log-format", "json"],
    )
    .await;
    let line = gateway.wait_line("listening").await;
    let listening: serde_json::Value = serde_json::from_str(&line).unwrap();
    let addr = listening["addr"].as_str().expect("fields are top-level");
    Client::default()
        .send(
            http::Method::GET,
            &format!("http://{addr}/logged"),
            &[("x-request-id", "find-me")],
            "",
        )
        .await
        .assert_status(200);
    let line = gateway.wait_line("find-me").await;
    let request: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(request["message"], "request");
    assert_eq!(request["request_id"], "find-me");
    assert_eq!(request["path"], "/logged");
    assert_eq!(request["status"], 200);
}

#[tokio::test]
async fn an_admin_listener_turned_off_listens_nowhere() {
    let backend = Backend::start().await;
    let gw = TestGateway::start(&format!(
        "{}[admin]\nenabled = false\n",
        config(&backend.url(), "", PROXY_ALL)
    ))
    .await;
    assert_eq!(gw.admin, None);
    // The public port still serves, and its /metrics is the backend's.
    Client::default()
        .get(&gw.url("/metrics"))
        .await
        .assert_status(200);
    assert_eq!(backend.received()[0].uri, "/metrics");
}

#[tokio::test]
async fn a_stderr_nobody_reads_never_holds_a_request() {
    let backend = Backend::start().await;
    let free = || {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (listen, admin) = (free(), free());
    let config = common::process::write_config(&format!(
        "[server]\nlisten = \"{listen}\"\n[admin]\nlisten = \"{admin}\"\n{}",
        config(&backend.url(), "", PROXY_ALL)
    ));
    // Its stderr is a pipe that is never read: once the pipe's buffer is
    // full, a gateway writing its log from the request path would stall.
    let _gateway = tokio::process::Command::new(common::process::BIN)
        .args(["--config", config.0.to_str().unwrap()])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let client = Client::default();
    let url = format!("http://{listen}/logged");
    poll_until(20, "the gateway to listen", async || {
        let stream = tokio::net::TcpStream::connect(listen).await.ok()?;
        drop(stream);
        Some(())
    })
    .await;
    // Far more request lines than the pipe holds (64 KiB, some 400 lines).
    within(120, "every request to be answered", async {
        for _ in 0..2000 {
            client.get(&url).await.assert_status(200);
        }
    })
    .await;
    // The lines wait in the log's queue; past its bound they would be
    // dropped, and counted here.
    let metrics = client.get(&format!("http://{admin}/metrics")).await;
    let metrics = String::from_utf8(metrics.body.to_vec()).unwrap();
    let dropped = metrics
        .lines()
        .find_map(|l| l.strip_prefix("asyncgate_log_lines_dropped_total "))
        .expect("dropped lines are counted");
    assert_eq!(dropped, "0", "{metrics}");
}
