//! The binary's contract: config errors exit 2 before binding, `check`
//! prints the routes, and SIGTERM drains.

mod common;

use std::process::Stdio;

use common::process::{write_config, Running, BIN};
use common::{async_route, config, poll_until, within, Backend, Client, TempDir};
use tokio::process::Command;

async fn run_to_end(args: &[&str]) -> (i32, String, String) {
    let out = within(
        30,
        "the binary to exit",
        Command::new(BIN).args(args).output(),
    )
    .await
    .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn bad_configs_exit_2_naming_file_line_and_key() {
    // Each rule has a unit test beside the validator; these pin what the
    // binary does with any of them: one line naming file, line and key, and
    // exit code 2, for a TOML error, an unknown key and a refused value.
    let cases: &[(&str, &str, &str)] = &[
        ("[server\n", ":1:", "table"),
        ("[server]\nlistn = \"127.0.0.1:1\"\n", ":2: server.listn:", "unknown field"),
        (
            "[upstreams.u]\nurl = \"http://127.0.0.1:1\"\n[[routes]]\nname = \"a\"\npath = \"/x/{id}\"\nupstream = \"u\"\n[[routes]]\nname = \"b\"\npath = \"/x/{other}\"\nupstream = \"u\"\n",
            ":9: routes[1].path:",
            "overlaps route `a`",
        ),
    ];
    for (text, location, message) in cases {
        let file = write_config(text);
        let path = file.0.to_str().unwrap();
        for args in [vec!["--config", path], vec!["check", "--config", path]] {
            let (code, _, stderr) = run_to_end(&args).await;
            assert_eq!(code, 2, "{text}\n{stderr}");
            assert!(
                stderr.contains(&format!("{path}{location}")),
                "want {location} in: {stderr}"
            );
            assert!(stderr.contains(message), "want {message} in: {stderr}");
            assert_eq!(stderr.lines().count(), 1, "one clear line: {stderr}");
        }
    }
}

#[tokio::test]
async fn missing_config_file_exits_2() {
    let (code, _, stderr) = run_to_end(&["--config", "/nonexistent/asyncgate.toml"]).await;
    assert_eq!(code, 2);
    assert!(stderr.contains("/nonexistent/asyncgate.toml"), "{stderr}");
}

#[tokio::test]
async fn check_prints_the_routes_of_the_shipped_example() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/asyncgate.toml");
    let (code, stdout, stderr) = run_to_end(&["check", "--config", example]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("reports"), "{stdout}");
    assert!(stdout.contains("/reports/{*rest}"), "{stdout}");
    assert!(stdout.contains("(async)"), "{stdout}");
}

#[tokio::test]
async fn health_asks_the_admin_listener_the_config_names() {
    let backend = Backend::start().await;
    let mut gw = Running::start(&config(
        &backend.url(),
        "",
        "[default]\nupstream = \"app\"\n",
    ))
    .await;
    let admin = gw.admin_addr().await;
    // The probe's own config: the running gateway's admin address.
    let probe = write_config(&format!("[admin]\nlisten = \"{admin}\"\n"));
    let probe = probe.0.to_str().unwrap();
    let (code, _, stderr) = run_to_end(&["health", "--config", probe]).await;
    assert_eq!(code, 0, "{stderr}");
    let (code, _, stderr) = run_to_end(&["health", "--ready", "--config", probe]).await;
    assert_eq!(code, 0, "{stderr}");
    // An edit a reload would refuse says nothing about the running
    // gateway: only [admin] is read.
    let edited = write_config(&format!(
        "[admin]\nlisten = \"{admin}\"\n[[routes]]\nname = \"broken\"\nupstream = \"nowhere\"\n"
    ));
    let (code, _, stderr) = run_to_end(&["health", "--config", edited.0.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{stderr}");
    let (code, _, stderr) =
        run_to_end(&["health", "--admin", &admin, "--config", "/nonexistent"]).await;
    assert_eq!(code, 0, "no file read with --admin: {stderr}");
    let bad = write_config("[admin]\nlisten = \"not an address\"\n");
    let (code, _, stderr) = run_to_end(&["health", "--config", bad.0.to_str().unwrap()]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("admin.listen"), "{stderr}");
    gw.kill();
    gw.exit_code().await;
    let (code, _, stderr) = run_to_end(&["health", "--config", probe]).await;
    assert_eq!(code, 1);
    assert!(stderr.contains(&admin), "{stderr}");
}

#[tokio::test]
async fn sigterm_drains_a_running_job_then_exits_0() {
    let backend = Backend::start().await;
    let mut gw = Running::start(&config(&backend.url(), "", &async_route("/{*p}", ""))).await;
    let addr = gw.addr().await;
    let client = Client::default();
    let reply = client.post(&format!("http://{addr}/hold/x"), "").await;
    assert_eq!(reply.status, 202);
    backend.started(1).await;
    gw.sigterm();
    gw.wait_line("draining").await;
    backend.release(1);
    assert_eq!(gw.exit_code().await, 0);
    gw.wait_line("status=\"succeeded\"").await;
    gw.wait_line("drained cleanly").await;
    assert_eq!(backend.disconnect_count(), 0);
    assert_eq!(
        gw.count_lines("stopped accepting"),
        1,
        "once, not per worker"
    );
}

#[tokio::test]
async fn sigterm_past_the_drain_timeout_fails_only_the_running_job_that_may_not_be_resent() {
    let backend = Backend::start().await;
    // The memory store: what is queued dies with the process, but is never
    // failed by the drain. (The disk store keeps it for the next start: see
    // tests/durability.rs.)
    let text = format!(
        "drain_timeout = \"300ms\"\n{}[store]\nkind = \"memory\"\n",
        config(
            &backend.url(),
            "max_concurrency = 2",
            &async_route("/{*p}", "")
        )
    );
    let mut gw = Running::start(&text).await;
    let addr = gw.addr().await;
    let client = Client::default();
    let running = client.post(&format!("http://{addr}/hold/x"), "").await;
    assert_eq!(running.status, 202);
    let get = client.get(&format!("http://{addr}/hold/g")).await;
    assert_eq!(get.status, 202);
    backend.started(2).await;
    let queued = client.post(&format!("http://{addr}/hold/y"), "").await;
    assert_eq!(queued.status, 202);
    gw.sigterm();
    assert_eq!(gw.exit_code().await, 0);
    let failed = gw.wait_line("status=\"failed\"").await;
    assert!(failed.contains("failure=\"interrupted\""), "{failed}");
    let ended = gw.wait_line("drain timeout passed").await;
    assert!(ended.contains("jobs_failed=1"), "the POST: {ended}");
    assert!(ended.contains("jobs_put_back=1"), "the GET: {ended}");
    assert_eq!(
        gw.count_lines("status=\"failed\""),
        1,
        "the queued job was not failed"
    );
    backend.disconnects(2).await;
    assert_eq!(backend.request_count(), 2, "the queued job was never sent");
}

/// `shutdown_delay`: readiness fails at once on SIGTERM, while new
/// connections are still accepted and served until the delay is over; only
/// then do the listeners close and the drain begin.
#[tokio::test]
async fn shutdown_delay_serves_new_connections_while_readiness_fails() {
    let backend = Backend::start().await;
    let text = format!(
        "shutdown_delay = \"5s\"\n{}",
        config(&backend.url(), "", &async_route("/jobs/{*p}", ""))
    );
    let mut gw = Running::start(&format!("{text}[default]\nupstream = \"app\"\n")).await;
    let addr = gw.addr().await;
    let admin = gw.admin_addr().await;
    let ready = format!("http://{admin}/readyz");
    assert_eq!(Client::default().get(&ready).await.status, 200);
    gw.sigterm();
    poll_until(10, "readiness to fail", async || {
        (Client::default().get(&ready).await.status == 503).then_some(())
    })
    .await;
    gw.wait_line("still serving until the drain").await;
    // A client that has not heard yet: a new connection, served, and a job
    // accepted and run.
    let late = Client::default();
    let proxied = late.get(&format!("http://{addr}/hello")).await;
    assert_eq!(proxied.status, 200);
    let job = late.post(&format!("http://{addr}/jobs/x"), "late").await;
    assert_eq!(job.status, 202);
    assert_eq!(gw.exit_code().await, 0);
    gw.wait_line("status=\"succeeded\"").await;
    gw.wait_line("stopped accepting").await;
    gw.wait_line("drained cleanly").await;
}

#[tokio::test]
async fn out_of_file_descriptors_pauses_accepting_and_recovers() {
    let backend = Backend::start().await;
    let config = write_config(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{}\n[default]\nupstream = \"app\"\n",
        config(&backend.url(), "", "")
    ));
    // A descriptor limit far below max_connections makes accept fail with EMFILE.
    let script = format!("ulimit -n 48 && exec {BIN} --config {}", config.0.display());
    let mut child = Command::new("bash")
        .args(["-c", &script])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let gw = Running::attach(&mut child);
    let addr = gw.addr().await;
    let mut hogs = Vec::new();
    for _ in 0..80 {
        if let Ok(s) = tokio::net::TcpStream::connect(&addr).await {
            hogs.push(s);
        }
    }
    gw.wait_line("accept failed; pausing").await;
    drop(hogs);
    let reply = poll_until(20, "the gateway to serve again", async || {
        // Connections the gateway accepted while out of descriptors may
        // fail; the point is that it serves again afterwards.
        Client::default()
            .try_send(
                http::Method::GET,
                &format!("http://{addr}/ok"),
                &[],
                bytes::Bytes::new(),
            )
            .await
            .ok()
            .filter(|r| r.status == 200)
    })
    .await;
    assert_eq!(reply.status, 200);
    drop(gw);
    let _ = child.kill().await;
}

/// The shipped systemd units are ones systemd accepts as they are, run
/// against this binary: `systemd-analyze verify` says nothing of them.
#[tokio::test]
async fn the_shipped_systemd_units_verify() {
    let dir = TempDir::new();
    let units = ["asyncgate.socket", "asyncgate.service"].map(|unit| {
        let shipped = std::fs::read_to_string(format!("deploy/systemd/{unit}")).unwrap();
        let path = dir.0.join(unit);
        std::fs::write(&path, shipped.replace("/usr/local/bin/asyncgate", BIN)).unwrap();
        path
    });
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&units)
        .output()
        .await
        .expect("systemd-analyze is installed (apt-get install systemd; .ci/run does)");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
}

/// `--version` names the release, the commit it was built from and the
/// features built in, so a bug report says what ran.
#[tokio::test]
async fn version_names_the_commit_and_the_features() {
    let (code, out, _) = run_to_end(&["--version"]).await;
    assert_eq!(code, 0);
    let line = out.trim();
    assert!(
        line.starts_with(&format!("asyncgate {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{line}"
    );
    let commit = line
        .split("commit ")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap();
    assert!(
        commit == "unknown"
            || (commit.len() == 12 && commit.bytes().all(|b| b.is_ascii_hexdigit())),
        "{line}"
    );
    let features = line
        .split("features: ")
        .nth(1)
        .unwrap()
        .trim_end_matches(')');
    let built: Vec<&str> = features.split(',').collect();
    assert_eq!(built.contains(&"tls"), cfg!(feature = "tls"), "{line}");
    assert_eq!(built.contains(&"kafka"), cfg!(feature = "kafka"), "{line}");
}

/// `asyncgate completions SHELL` needs no config, and each shell gets a
/// script of its own kind.
#[tokio::test]
async fn completions_are_printed_for_each_shell_without_a_config() {
    for (shell, marker) in [
        ("bash", "complete -F _asyncgate"),
        ("zsh", "#compdef asyncgate"),
        ("fish", "complete -c asyncgate"),
    ] {
        let (code, out, err) =
            run_to_end(&["completions", shell, "--config", "/nonexistent.toml"]).await;
        assert_eq!(code, 0, "{shell}: {err}");
        assert!(out.contains(marker), "{shell}: {out}");
        assert!(
            out.contains("completions"),
            "{shell}: the subcommands are offered"
        );
    }
    let (code, _, err) = run_to_end(&["completions", "tcsh"]).await;
    assert_eq!(code, 2, "{err}");
}

/// `ASYNCGATE_CONFIG` names the config file when `--config` does not;
/// `--config` wins.
#[tokio::test]
async fn asyncgate_config_names_the_file() {
    let named = write_config("[server]\nlisten = \"127.0.0.1:18999\"\n");
    let path = named.0.to_str().unwrap();
    let out = within(
        30,
        "check to exit",
        Command::new(BIN)
            .arg("check")
            .env("ASYNCGATE_CONFIG", path)
            .output(),
    )
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.starts_with(&format!("{path}: ok, listening on 127.0.0.1:18999")),
        "{stdout}"
    );
    let out = within(
        30,
        "check to exit",
        Command::new(BIN)
            .args(["check", "--config", "/nonexistent.toml"])
            .env("ASYNCGATE_CONFIG", path)
            .output(),
    )
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(2), "--config wins: {out:?}");
}

/// `asyncgate man` prints a roff manual page with every subcommand, no
/// config needed.
#[tokio::test]
async fn the_manual_page_is_printed_without_a_config() {
    let (code, out, err) = run_to_end(&["man", "--config", "/nonexistent.toml"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(".TH asyncgate 1"), "{out}");
    for subcommand in ["check", "health", "completions", "man"] {
        assert!(out.contains(subcommand), "{subcommand} in {out}");
    }
}

/// A submission still reaching a draining gateway (its request under way
/// when the listener closed) is accepted on the disk store, which keeps it
/// for the next start, rather than refused.
#[tokio::test]
async fn a_submission_during_the_drain_is_kept_for_the_next_start() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let backend = Backend::start().await;
    let text = format!(
        "drain_timeout = \"10s\"\n{}",
        config(&backend.url(), "", &async_route("/{*p}", ""))
    );
    let mut gw = Running::start(&text).await;
    let addr = gw.addr().await;
    let client = Client::default();
    client
        .post(&format!("http://{addr}/hold/running"), "")
        .await
        .assert_status(202);
    backend.started(1).await;
    // A request whose head is under way when the drain begins.
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    conn.write_all(b"POST /late HTTP/1.1\r\nHost: gw\r\n")
        .await
        .unwrap();
    gw.sigterm();
    gw.wait_line("draining").await;
    conn.write_all(b"Content-Length: 0\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    within(10, "the late submission's answer", async {
        let mut buf = [0u8; 4096];
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = conn.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&answer));
            answer.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    backend.release(1);
    assert_eq!(gw.exit_code().await, 0);
    assert_eq!(
        backend.request_count(),
        1,
        "the late job waits for the next start"
    );

    let gw = Running::start_exact(&std::fs::read_to_string(&gw.config().0).unwrap()).await;
    gw.wait_line("carrying on").await;
    backend.started(2).await;
    backend.release(1);
    let late: Vec<String> = backend.received().into_iter().map(|r| r.uri).collect();
    assert_eq!(late, ["/hold/running", "/late"]);
}
