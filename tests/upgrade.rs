//! Deploys that refuse nothing, over the built binary: an in-place upgrade
//! on SIGUSR2 under a stream of fresh connections, an upgrade to a broken
//! config that leaves the old process serving, and systemd's socket
//! activation.

mod common;

use command_fds::{CommandFdExt, FdMapping};
use common::process::{write_config, Running, BIN};
use common::{async_route, config, poll_until, within, Backend, Client};
use http::Method;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// What a stream of clients saw: each request on a connection of its own.
#[derive(Default)]
struct Seen {
    requests: usize,
    /// Anything but the answer expected: a refused or broken connection,
    /// a status other than 200 for a proxied GET or 202 for a submission.
    errors: Vec<String>,
    /// The status URLs of the jobs accepted.
    accepted: Vec<String>,
}

/// Sends a proxied GET, and every fourth time a job, each on a new
/// connection, until `stop` or 5,000 requests; `done` counts them.
async fn clients(base: String, stop: CancellationToken, done: watch::Sender<usize>) -> Seen {
    let mut seen = Seen::default();
    for n in 0..5000 {
        if stop.is_cancelled() {
            break;
        }
        // A client of its own: a new connection.
        let client = Client::default();
        let (method, path, want) = if n % 4 == 3 {
            (Method::POST, format!("/jobs/{n}"), 202)
        } else {
            (Method::GET, format!("/hello/{n}"), 200)
        };
        match client
            .try_send(method, &format!("{base}{path}"), &[], "x")
            .await
        {
            Ok(reply) if reply.status == want => {
                if want == 202 {
                    seen.accepted.push(reply.header("location").to_owned());
                }
            }
            Ok(reply) => seen
                .errors
                .push(format!("{path}: {} {:?}", reply.status, reply.body)),
            Err(e) => seen.errors.push(format!("{path}: {e}")),
        }
        seen.requests += 1;
        done.send_replace(seen.requests);
    }
    seen
}

/// The pid in the "listening" line of a process other than `not`.
async fn other_pid(gw: &Running, not: u32) -> u32 {
    let line = gw
        .wait_for("a second listening line", |l| {
            l.contains("listening") && l.contains(" pid=") && !l.contains(&format!(" pid={not}"))
        })
        .await;
    let at = line.find(" pid=").unwrap() + 5;
    line[at..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Kills a process the test did not start itself (the successor), however
/// the test ends.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-9", &self.0.to_string()])
            .status();
    }
}

fn gateway_config(backend: &Backend) -> String {
    format!(
        "drain_timeout = \"5s\"\n{}[default]\nupstream = \"app\"\n",
        config(&backend.url(), "", &async_route("/jobs/{*p}", ""))
    )
}

#[tokio::test]
async fn sigusr2_hands_the_sockets_to_a_new_process_and_refuses_nothing() {
    let backend = Backend::start().await;
    let mut old = Running::start(&gateway_config(&backend)).await;
    let base = format!("http://{}", old.addr().await);
    let old_pid = old.pid();
    let stop = CancellationToken::new();
    let (done, mut progress) = watch::channel(0);
    let stream = tokio::spawn(clients(base.clone(), stop.clone(), done));
    within(
        30,
        "traffic before the upgrade",
        progress.wait_for(|n| *n >= 40),
    )
    .await
    .unwrap();
    old.signal("USR2");
    old.wait_line("the new process serves").await;
    let new_pid = other_pid(&old, old_pid).await;
    let _new = KillOnDrop(new_pid);
    assert_ne!(new_pid, old_pid);
    assert_eq!(old.exit_code().await, 0, "the old process drained and left");
    old.wait_line("the job store is open").await;
    let after = *progress.borrow();
    within(
        30,
        "traffic after the upgrade",
        progress.wait_for(|n| *n >= after + 40),
    )
    .await
    .unwrap();
    stop.cancel();
    let seen = within(60, "the clients to stop", stream).await.unwrap();
    assert!(
        seen.errors.is_empty(),
        "{} of {}: {:?}",
        seen.errors.len(),
        seen.requests,
        seen.errors
    );
    // Every job accepted, by either process, ends succeeded on the new one.
    let client = Client::default();
    for location in &seen.accepted {
        let doc = client
            .wait_finished(&format!("{base}{}", common::path_of(location)))
            .await;
        assert_eq!(doc["status"], "succeeded", "{doc:#}");
    }
    assert!(seen.accepted.len() >= 20, "{}", seen.accepted.len());
}

#[tokio::test]
async fn an_upgrade_to_a_broken_config_leaves_the_old_process_serving() {
    let backend = Backend::start().await;
    let mut gw = Running::start(&gateway_config(&backend)).await;
    let base = format!("http://{}", gw.addr().await);
    let admin = gw.admin_addr().await;
    gw.config()
        .rewrite("[server]\nlisten = \"127.0.0.1:0\"\nworkers = 0\n");
    gw.signal("USR2");
    let failed = gw.wait_line("upgrade failed").await;
    assert!(failed.contains("exited"), "{failed}");
    let client = Client::default();
    assert_eq!(client.get(&format!("{base}/hello")).await.status, 200);
    let job = client.post(&format!("{base}/jobs/x"), "after").await;
    assert_eq!(job.status, 202);
    let doc = client
        .wait_finished(&format!(
            "{base}{}",
            common::path_of(job.header("location"))
        ))
        .await;
    assert_eq!(doc["status"], "succeeded");
    let ready = client.get(&format!("http://{admin}/readyz")).await;
    assert_eq!(ready.status, 200);
    assert_eq!(gw.count_lines("the new process serves"), 0);
    gw.sigterm();
    assert_eq!(gw.exit_code().await, 0);
}

/// systemd's socket activation: the listeners come from the sockets passed
/// as fds 3 and 4 with `LISTEN_FDS=2` and `LISTEN_PID` naming the process
/// (set by a shell that then execs the gateway, keeping its pid). The test
/// keeps its own copies open: a gateway that bound the addresses itself
/// would find them taken and exit.
#[tokio::test]
async fn socket_activation_serves_on_the_sockets_passed() {
    let backend = Backend::start().await;
    let public = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let admin = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (public_addr, admin_addr) = (public.local_addr().unwrap(), admin.local_addr().unwrap());
    let text = format!(
        "[server]\nlisten = \"{public_addr}\"\n[admin]\nlisten = \"{admin_addr}\"\n{}[default]\nupstream = \"app\"\n",
        config(&backend.url(), "", "")
    );
    let config = write_config(&text);
    let mut command = std::process::Command::new("sh");
    command
        .args(["-c", "LISTEN_PID=$$ exec \"$0\" \"$@\"", BIN, "--config"])
        .arg(&config.0)
        .env("LISTEN_FDS", "2")
        .fd_mappings(vec![
            FdMapping {
                parent_fd: public.try_clone().unwrap().into(),
                child_fd: 3,
            },
            FdMapping {
                parent_fd: admin.try_clone().unwrap().into(),
                child_fd: 4,
            },
        ])
        .unwrap();
    let mut gw = Running::spawn(command.into(), config);
    gw.wait_line("listening on sockets handed to this process")
        .await;
    assert_eq!(gw.addr().await, public_addr.to_string());
    let client = Client::default();
    assert_eq!(
        client
            .get(&format!("http://{public_addr}/hello"))
            .await
            .status,
        200
    );
    let ready = client.get(&format!("http://{admin_addr}/readyz")).await;
    assert_eq!(ready.status, 200);
    drop((public, admin));
    assert_eq!(
        client
            .get(&format!("http://{public_addr}/again"))
            .await
            .status,
        200
    );
    gw.sigterm();
    assert_eq!(gw.exit_code().await, 0);
    let refused = poll_until(10, "the address to be closed", async || {
        std::net::TcpStream::connect(public_addr).err().map(|_| ())
    });
    refused.await;
}

/// A successor whose store is still held past its own `drain_timeout` +
/// 10 s (the old process drains a job for longer) answers job requests
/// `503 store-unavailable` with `Retry-After` rather than hold them
/// forever, and serves them once the old process lets the store go.
#[tokio::test]
async fn a_successor_waiting_too_long_for_the_store_answers_503() {
    let backend = Backend::start().await;
    let routes = format!(
        "{}[default]\nupstream = \"app\"\n",
        async_route("/hold/{*p}", "")
    );
    let mut old = Running::start(&format!(
        "drain_timeout = \"60s\"\n{}",
        config(&backend.url(), "", &routes)
    ))
    .await;
    let base = format!("http://{}", old.addr().await);
    let old_pid = old.pid();
    let client = Client::default();
    let held = client.post(&format!("{base}/hold/long"), "x").await;
    assert_eq!(held.status, 202);
    backend.started(1).await;
    // The successor reads the file as it is now: it waits 1 s + 10 s.
    old.config().rewrite(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndrain_timeout = \"1s\"\n{}",
        config(&backend.url(), "", &routes)
    ));
    old.signal("USR2");
    old.wait_line("the new process serves").await;
    let _new = KillOnDrop(other_pid(&old, old_pid).await);
    // Until the old process has stopped accepting, a new connection may
    // still be its own, and it has the store.
    old.wait_line("stopped accepting; draining").await;
    // A new client: the old one's kept-alive connection is the draining
    // process's, which closes it. Proxying needs no store: answered at once.
    let client = Client::default();
    assert_eq!(client.get(&format!("{base}/hello")).await.status, 200);
    let refused = within(
        30,
        "the successor to give up waiting for the store",
        client.post(&format!("{base}/hold/late"), "y"),
    )
    .await;
    assert_eq!(refused.status, 503, "{:?}", refused.body);
    assert!(
        refused.json()["type"]
            .as_str()
            .unwrap()
            .ends_with("store-unavailable"),
        "{:?}",
        refused.body
    );
    assert!(!refused.header("retry-after").is_empty());
    // The old process finishes its job and lets the store go.
    backend.release(1);
    assert_eq!(old.exit_code().await, 0);
    old.wait_line("the job store is open").await;
    let later = client.post(&format!("{base}/hold/after"), "z").await;
    assert_eq!(later.status, 202);
    backend.release(1);
    let doc = client
        .wait_finished(&format!(
            "{base}{}",
            common::path_of(held.header("location"))
        ))
        .await;
    assert_eq!(doc["status"], "succeeded");
}
