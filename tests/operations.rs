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
    /// after `#`. Label values here never hold a quote (the build's
    /// features hold commas).
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
                        .split_terminator("\",")
                        .map(|kv| {
                            let (k, v) = kv.split_once("=\"").expect("label=\"value\"");
                            (k.to_owned(), v.trim_end_matches('"').to_owned())
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
    assert_eq!(
        done.get("asyncgate_request_duration_seconds_count", &route),
        5.0
    );
    // A job's hour lands in a finite bucket, past the requests' 300 s.
    assert_eq!(
        done.get(
            "asyncgate_job_duration_seconds_bucket",
            &[("route", "jobs"), ("le", "3600")]
        ),
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
async fn the_process_and_its_build_and_connections_are_measured() {
    let (_backend, gw) = proxying().await;
    let client = Client::default();
    let admin = admin(&gw);
    let scrape = Scrape::of(&client, admin).await;
    let build = scrape
        .0
        .keys()
        .find(|(name, _)| name == "asyncgate_build_info")
        .map(|(_, labels)| labels.clone())
        .expect("build info");
    assert_eq!(build["version"], env!("CARGO_PKG_VERSION"));
    assert!(!build["commit"].is_empty() && build.contains_key("features"));
    assert!(scrape.get("process_resident_memory_bytes", &[]) > 1e6);
    assert!(scrape.get("process_open_fds", &[]) > 0.0);
    assert!(scrape.has("process_cpu_seconds_total") && scrape.has("process_start_time_seconds"));
    assert_eq!(
        scrape.get("asyncgate_config_last_reload_successful", &[]),
        1.0
    );
    // The scrapes go to the admin listener; only these count.
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(tokio::net::TcpStream::connect(gw.addr).await.unwrap());
    }
    let connections = async |n: f64| {
        common::poll_until(15, "the connections to be counted", async || {
            let scrape = Scrape::of(&client, admin).await;
            (scrape.get("asyncgate_connections_open", &[]) == n).then_some(())
        })
        .await;
    };
    connections(3.0).await;
    drop(open);
    connections(0.0).await;
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
    assert_eq!(request["route"], "_default");
    assert_eq!(request["bytes_out"], 0, "the backend's empty echo");
    assert!(request["upstream_micros"].as_u64().is_some(), "{line}");
}

/// A job's lines join its submission's: the `202`'s line names the job,
/// and each of the job's lines names the request and its trace, as plain
/// JSON values (a failure is its name, never Rust's `Some(…)`).
#[tokio::test]
async fn a_jobs_log_lines_join_its_requests_by_id_and_trace() {
    let backend = Backend::start().await;
    // Nothing listens on a port just let go of: every try fails at once.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let gateway = Running::start_with(
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n{}\
             [upstreams.gone]\nurl = \"http://{closed}\"\nretries = 0\n\
             [[routes]]\nname = \"lost\"\npath = \"/lost\"\nupstream = \"gone\"\nmode = \"async\"\n",
            config(&backend.url(), "", &async_route("/jobs/{*p}", ""))
        ),
        &["--log-format", "json"],
    )
    .await;
    let listening: serde_json::Value =
        serde_json::from_str(&gateway.wait_line("listening").await).unwrap();
    let addr = listening["addr"].as_str().unwrap().to_owned();
    let client = Client::default();
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{trace}-00f067aa0ba902b7-01");
    let mut jobs = Vec::new();
    for (path, id) in [("/jobs/1", "join-me"), ("/lost", "lose-me")] {
        let accepted = client
            .send(
                http::Method::POST,
                &format!("http://{addr}{path}"),
                &[("x-request-id", id), ("traceparent", &traceparent)],
                "x",
            )
            .await;
        accepted.assert_status(202);
        let job = accepted
            .header("location")
            .rsplit('/')
            .next()
            .unwrap()
            .to_owned();
        jobs.push((id, job));
    }
    let parsed = |line: String| -> serde_json::Value { serde_json::from_str(&line).unwrap() };
    for (id, job) in &jobs {
        let request = parsed(
            gateway
                .wait_for("the 202's line", |l| {
                    l.contains("\"message\":\"request\"") && l.contains(id)
                })
                .await,
        );
        assert_eq!(request["job"], job.as_str());
        assert_eq!(request["status"], 202);
        assert_eq!(request["bytes_in"], 1);
        for status in ["queued", "running"] {
            let line = parsed(
                gateway
                    .wait_for(status, |l| {
                        l.contains(&format!("\"status\":\"{status}\"")) && l.contains(job)
                    })
                    .await,
            );
            assert_eq!(line["request_id"], *id, "{line}");
            assert_eq!(line["trace_id"], trace, "{line}");
        }
    }
    let (_, lost) = &jobs[1];
    let failed = parsed(
        gateway
            .wait_for("the failed line", |l| {
                l.contains("\"status\":\"failed\"") && l.contains(lost)
            })
            .await,
    );
    assert_eq!(failed["failure"], "unreachable", "{failed}");
    assert_eq!(failed["request_id"], "lose-me");
    assert_eq!(failed["trace_id"], trace);
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

/// The shipped alerting rules are valid and fire on what they should
/// (`promtool test rules`), and they and the shipped Grafana dashboard name
/// only series a gateway serves: a renamed metric fails here, not in an
/// operator's empty panel.
#[tokio::test]
async fn the_shipped_alerts_and_dashboard_name_only_served_metrics() {
    for args in [
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts_test.yml"],
    ] {
        let out = std::process::Command::new("promtool")
            .args(args)
            .current_dir("deploy/prometheus")
            .output()
            .expect("promtool is installed (apt-get install prometheus; .ci/run does)");
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string("deploy/grafana/asyncgate.json").unwrap())
            .expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    let mut panels: Vec<&serde_json::Value> =
        dashboard["panels"].as_array().unwrap().iter().collect();
    while let Some(panel) = panels.pop() {
        panels.extend(panel["panels"].as_array().into_iter().flatten());
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(
                target["expr"]
                    .as_str()
                    .expect("a target has an expr")
                    .to_owned(),
            );
        }
    }
    assert!(exprs.len() > 20, "the dashboard's panels were read");
    let alerts = std::fs::read_to_string("deploy/prometheus/alerts.yml").unwrap();
    exprs.extend(
        alerts
            .lines()
            .filter_map(|l| l.trim().strip_prefix("expr:"))
            .map(str::to_owned),
    );

    // A gateway with everything the files chart: an async route sending
    // webhooks, and a Kafka producer where the feature is built.
    let backend = Backend::start().await;
    let kafka = if cfg!(feature = "kafka") {
        "[kafka]\nbrokers = [\"127.0.0.1:1\"]\n"
    } else {
        ""
    };
    let gw = TestGateway::start(&format!(
        "{}[webhooks]\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\nallow_networks = [\"127.0.0.0/8\"]\n{kafka}",
        config(
            &backend.url(),
            "",
            &async_route("/jobs/{*p}", "callback_hosts = [\"127.0.0.1\"]")
        )
    ))
    .await;
    let client = Client::default();
    let text = client
        .get(&format!("http://{}/metrics", admin(&gw)))
        .await
        .body;
    let served: std::collections::BTreeSet<&str> = std::str::from_utf8(&text)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let mut named = std::collections::BTreeSet::new();
    for expr in &exprs {
        for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with("asyncgate_") || word.starts_with("process_") {
                named.insert(word.to_owned());
            }
        }
    }
    for name in &named {
        // A histogram's and a counter's series carry suffixes its family lacks.
        let family = ["_bucket", "_total"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        assert!(
            served.contains(family) || served.contains(name.as_str()),
            "{name} is charted or alerted on but not served; served: {served:?}"
        );
    }
    assert!(named.len() > 15, "{named:?}");
}
