//! A 202 is a promise: the built binary, killed with SIGKILL and started
//! again on the same store directory, carries on with every job it accepted.
#![allow(unreachable_pub)]

mod common;

use std::path::Path;

use common::process::Running;
use common::{async_route, config, poll_until, Backend, Client, TempDir};
use http::Method;

/// A disk store at `dir`, an upstream `app` with `upstream_extra`, an async
/// route on every path with `route_extra`.
fn disk_config(dir: &Path, backend: &Backend, upstream_extra: &str, route_extra: &str) -> String {
    format!(
        "[store]\nkind = \"disk\"\npath = \"{}\"\nfile_threshold = \"4KiB\"\n{}",
        dir.display(),
        config(
            &backend.url(),
            upstream_extra,
            &async_route("/{*p}", route_extra)
        )
    )
}

/// A backend, a store directory, a config over both (its text first
/// `before`, then an upstream with `upstream_extra`), and a client: what a
/// gateway needs to be started, crashed and started again.
struct Setup {
    backend: Backend,
    store: TempDir,
    text: String,
    client: Client,
}

impl Setup {
    async fn new(before: &str, upstream_extra: &str) -> Setup {
        let backend = Backend::start().await;
        let store = TempDir::new();
        let text = format!(
            "{before}{}",
            disk_config(&store.0, &backend, upstream_extra, "")
        );
        Setup {
            backend,
            store,
            text,
            client: Client::default(),
        }
    }
}

struct Gateway {
    process: Running,
    addr: String,
}

impl Gateway {
    async fn start(text: &str) -> Gateway {
        let process = Running::start(text).await;
        let addr = process.addr().await;
        Gateway { process, addr }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, common::path_of(path))
    }

    /// SIGKILL, then waits until the process is gone.
    async fn crash(mut self) {
        self.process.kill();
        self.process.exit_code().await;
    }
}

/// How many requests for `path` the backend has received.
fn sent(backend: &Backend, path: &str) -> usize {
    backend
        .received()
        .iter()
        .filter(|r| r.uri.starts_with(path))
        .count()
}

#[tokio::test]
async fn queued_jobs_run_once_after_a_crash_and_a_running_post_fails_as_lost() {
    let Setup {
        backend,
        store: _store,
        text,
        client,
    } = Setup::new("", "max_concurrency = 1").await;
    let gw = Gateway::start(&text).await;
    let running = client.post(&gw.url("/hold/running"), "a").await;
    running.assert_status(202);
    backend.started(1).await;
    let queued = client.post(&gw.url("/hold/queued"), "b").await;
    queued.assert_status(202);
    gw.crash().await;

    let gw = Gateway::start(&text).await;
    let lost = client
        .wait_status(&gw.url(running.header("location")), "failed")
        .await;
    assert_eq!(
        lost["error"]["type"], "urn:asyncgate:problem:job-lost",
        "{lost:#}"
    );
    backend.started(2).await;
    backend.release(2);
    let done = client
        .wait_status(&gw.url(queued.header("location")), "succeeded")
        .await;
    assert_eq!(done["attempts"], 1);
    let result = client
        .get(&gw.url(&format!("{}/result", queued.header("location"))))
        .await;
    assert_eq!(result.body, "b");
    assert_eq!(sent(&backend, "/hold/queued"), 1, "the queued job ran once");
    assert_eq!(
        sent(&backend, "/hold/running"),
        1,
        "the POST was not sent again"
    );
}

#[tokio::test]
async fn a_running_idempotent_job_is_sent_again_after_a_crash() {
    let Setup {
        backend,
        store: _store,
        text,
        client,
    } = Setup::new("", "").await;
    let gw = Gateway::start(&text).await;
    let put = client
        .send(Method::PUT, &gw.url("/hold/put"), &[], "idempotent")
        .await;
    put.assert_status(202);
    backend.started(1).await;
    gw.crash().await;

    let gw = Gateway::start(&text).await;
    backend.started(2).await;
    backend.release(2);
    let done = client
        .wait_status(&gw.url(put.header("location")), "succeeded")
        .await;
    assert_eq!(done["attempts"], 2, "{done:#}");
    assert_eq!(sent(&backend, "/hold/put"), 2);
}

#[tokio::test]
async fn results_tombstones_and_keys_survive_a_crash_byte_for_byte() {
    let Setup {
        backend,
        store: _store,
        text,
        client,
    } = Setup::new("", "").await;
    let gw = Gateway::start(&text).await;
    // Small (beside its record) and large (in a file of its own).
    let small = client.post(&gw.url("/echo?status=201"), "small").await;
    let large = client.post(&gw.url("/big/100000"), "").await;
    let alice = [("authorization", "Bearer alice")];
    let deleted = client
        .send(Method::POST, &gw.url("/echo"), &alice, "deleted")
        .await;
    let keyed = client
        .send(
            Method::POST,
            &gw.url("/echo/k"),
            &[("idempotency-key", "k-1")],
            "keyed",
        )
        .await;
    for reply in [&small, &large, &keyed] {
        client
            .wait_status(&gw.url(reply.header("location")), "succeeded")
            .await;
    }
    client
        .wait_status_as(&gw.url(deleted.header("location")), "succeeded", &alice)
        .await;
    let before: Vec<_> = {
        let mut v = Vec::new();
        for reply in [&small, &large] {
            let url = gw.url(&format!("{}/result", reply.header("location")));
            v.push(client.get(&url).await);
        }
        v
    };
    client
        .send(
            Method::DELETE,
            &gw.url(deleted.header("location")),
            &alice,
            "",
        )
        .await
        .assert_status(204);
    gw.crash().await;

    let gw = Gateway::start(&text).await;
    for (reply, was) in [&small, &large].into_iter().zip(&before) {
        let url = gw.url(&format!("{}/result", reply.header("location")));
        let now = client.get(&url).await;
        assert_eq!(now.status, was.status);
        assert_eq!(now.body, was.body, "the same bytes");
        let headers = |r: &common::Reply| {
            let mut h: Vec<_> = r
                .headers
                .iter()
                // Each fetch is a request of its own, with its own id.
                .filter(|(n, _)| *n != "date" && *n != "x-request-id")
                .map(|(n, v)| (n.clone(), v.clone()))
                .collect();
            h.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
            h
        };
        assert_eq!(headers(&now), headers(was), "the same headers");
    }
    assert_eq!(before[1].body.len(), 100_000);
    // The tombstone of a bound job keeps its owner: to anyone else the job
    // never was.
    let tombstone = gw.url(deleted.header("location"));
    client
        .send(Method::GET, &tombstone, &alice, "")
        .await
        .assert_problem(410, "job-gone");
    client
        .get(&tombstone)
        .await
        .assert_problem(404, "job-not-found");
    let again = client
        .send(
            Method::POST,
            &gw.url("/echo/k"),
            &[("idempotency-key", "k-1")],
            "keyed",
        )
        .await;
    again.assert_status(202);
    assert_eq!(
        common::path_of(again.header("location")),
        common::path_of(keyed.header("location"))
    );
    assert_eq!(sent(&backend, "/echo/k"), 1);
}

#[tokio::test]
async fn every_accepted_submission_runs_exactly_once_across_a_crash() {
    let Setup {
        backend,
        store: _store,
        text,
        client,
    } = Setup::new("", "max_concurrency = 4\nmax_queue = 1000").await;
    let gw = Gateway::start(&text).await;
    let (accepted_tx, mut accepted_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for n in 0..500 {
        let (client, url, tx) = (
            client.clone(),
            gw.url(&format!("/hold/n{n}/")),
            accepted_tx.clone(),
        );
        tasks.push(tokio::spawn(async move {
            if let Ok(reply) = client.try_send(Method::POST, &url, &[], "x").await {
                if reply.status == 202 {
                    let _ = tx.send((n, reply.header("location").to_owned()));
                }
            }
        }));
    }
    drop(accepted_tx);
    // Crash with submissions in flight: once a hundred have their 202.
    let mut accepted = Vec::new();
    while accepted.len() < 100 {
        let a = accepted_rx.recv().await;
        accepted.push(a.expect("a hundred submissions accepted"));
    }
    gw.crash().await;
    for task in tasks {
        let _ = task.await;
    }
    while let Ok(a) = accepted_rx.try_recv() {
        accepted.push(a);
    }
    let gw = Gateway::start(&text).await;
    // Everything held is let go: before the crash and after.
    backend.release(2000);
    let mut lost = 0;
    for (n, location) in &accepted {
        let doc = client.wait_finished(&gw.url(location)).await;
        if doc["status"] == "failed" {
            // Running when the process died: a POST is never sent twice.
            assert_eq!(
                doc["error"]["type"], "urn:asyncgate:problem:job-lost",
                "job {n}: {doc:#}"
            );
            lost += 1;
        } else {
            assert_eq!(doc["status"], "succeeded", "job {n}: {doc:#}");
        }
    }
    assert!(
        lost <= 4,
        "at most max_concurrency jobs were running: {lost}"
    );
    assert!(accepted.len() >= 100);
    for n in 0..500 {
        let times = sent(&backend, &format!("/hold/n{n}/"));
        assert!(times <= 1, "submission {n} was sent {times} times");
    }
}

/// A deploy is not a failure: at the drain deadline a running job that may
/// be sent again (a GET) goes back to `queued` and is sent again at the
/// next start; one that may not (a POST) fails `interrupted`; a queued job
/// stays queued and runs once.
#[tokio::test]
async fn a_drain_past_its_deadline_puts_a_running_get_back_and_fails_a_running_post() {
    // Under the [server] table the harness opens.
    let Setup {
        backend,
        store: _store,
        text,
        client,
    } = Setup::new("drain_timeout = \"300ms\"\n", "max_concurrency = 2").await;
    let mut gw = Gateway::start(&text).await;
    let post = client.post(&gw.url("/hold/post"), "").await;
    let get = client.get(&gw.url("/hold/get")).await;
    get.assert_status(202);
    backend.started(2).await;
    let queued = client.post(&gw.url("/hold/queued"), "").await;
    queued.assert_status(202);
    gw.process.sigterm();
    assert_eq!(gw.process.exit_code().await, 0);
    let ended = gw.process.wait_line("drain timeout passed").await;
    assert!(ended.contains("jobs_failed=1"), "the POST only: {ended}");
    assert!(ended.contains("jobs_put_back=1"), "the GET: {ended}");
    gw.process.wait_line("job put back").await;

    let gw = Gateway::start(&text).await;
    let failed = client
        .wait_status(&gw.url(post.header("location")), "failed")
        .await;
    assert_eq!(failed["error"]["type"], "urn:asyncgate:problem:interrupted");
    // The GET again and the queued POST, each sent once more.
    backend.started(4).await;
    backend.release(4);
    let get = client
        .wait_status(&gw.url(get.header("location")), "succeeded")
        .await;
    assert_eq!(get["attempts"], 2, "{get:#}");
    client
        .wait_status(&gw.url(queued.header("location")), "succeeded")
        .await;
    assert_eq!(sent(&backend, "/hold/get"), 2);
    assert_eq!(sent(&backend, "/hold/post"), 1);
    assert_eq!(sent(&backend, "/hold/queued"), 1);
}

#[tokio::test]
async fn a_job_waiting_to_be_tried_again_is_tried_after_a_crash() {
    let Setup {
        backend,
        store: _store,
        text,
        client,
    } = Setup::new("", "retries = 2\nretry_backoff = \"1s\"").await;
    let gw = Gateway::start(&text).await;
    let reply = client
        .send(Method::PUT, &gw.url("/flaky/1/again"), &[], "")
        .await;
    let url = reply.header("location").to_owned();
    poll_until(10, "the job to wait for its second try", async || {
        let doc = client.get(&gw.url(&url)).await.json();
        doc.get("retry").is_some().then_some(())
    })
    .await;
    gw.crash().await;

    let gw = Gateway::start(&text).await;
    let doc = client.wait_status(&gw.url(&url), "succeeded").await;
    assert_eq!(doc["attempts"], 2, "{doc:#}");
    assert_eq!(sent(&backend, "/flaky/1/again"), 2);
}

#[tokio::test]
async fn a_crash_while_a_large_result_arrives_leaves_no_partial_result() {
    let Setup {
        backend,
        store,
        text,
        client,
    } = Setup::new("", "").await;
    let gw = Gateway::start(&text).await;
    // Half of a 1 MB answer arrives, then the backend holds the rest.
    let post = client.post(&gw.url("/stream/1000000"), "").await;
    let url = post.header("location").to_owned();
    poll_until(10, "half the result to arrive", async || {
        let doc = client.get(&gw.url(&url)).await.json();
        (doc["progress"]["percent"] == 50).then_some(())
    })
    .await;
    gw.crash().await;

    let gw = Gateway::start(&text).await;
    let doc = client.wait_finished(&gw.url(&url)).await;
    assert_eq!(
        doc["error"]["type"], "urn:asyncgate:problem:job-lost",
        "{doc:#}"
    );
    client
        .get(&gw.url(&format!("{url}/result")))
        .await
        .assert_problem(502, "job-lost");
    let files: Vec<_> = std::fs::read_dir(store.0.join("results"))
        .unwrap()
        .collect();
    assert!(files.is_empty(), "no partial result file: {files:?}");
    backend.release(1);
}

/// Garbage where the record of the job `submitted` answered for was,
/// written with the database's own library while no gateway holds it.
fn spoil(store: &Path, submitted: &common::Reply) {
    let id = submitted.json()["id"]
        .as_str()
        .unwrap()
        .parse::<uuid::Uuid>()
        .unwrap();
    let db = fjall::SingleWriterTxDatabase::builder(store.join("db"))
        .open()
        .unwrap();
    let jobs = db
        .keyspace("jobs", fjall::KeyspaceCreateOptions::default)
        .unwrap();
    jobs.insert(id.as_bytes(), &b"\xff\xff\xff not a record"[..])
        .unwrap();
    db.persist(fjall::PersistMode::SyncAll).unwrap();
}

/// Crashes `gw`, spoils the record of the job `spoiled` answered for and
/// starts again on the same store: asking for that job is a `503`.
async fn restart_spoiled(
    gw: Gateway,
    store: &TempDir,
    text: &str,
    client: &Client,
    spoiled: &common::Reply,
) -> Gateway {
    gw.crash().await;
    spoil(&store.0, spoiled);
    let gw = Gateway::start(text).await;
    client
        .get(&gw.url(spoiled.header("location")))
        .await
        .assert_problem(503, "store-unavailable");
    gw
}

#[tokio::test]
async fn a_corrupt_record_is_a_503_for_its_job_alone() {
    let Setup {
        backend: _backend,
        store,
        text,
        client,
    } = Setup::new("", "").await;
    let gw = Gateway::start(&text).await;
    let spoiled = client.post(&gw.url("/echo/a"), "a").await;
    let kept = client.post(&gw.url("/echo/b"), "b").await;
    for reply in [&spoiled, &kept] {
        client
            .wait_status(&gw.url(reply.header("location")), "succeeded")
            .await;
    }
    let gw = restart_spoiled(gw, &store, &text, &client, &spoiled).await;
    let result = client
        .get(&gw.url(&format!("{}/result", kept.header("location"))))
        .await;
    assert_eq!(result.body, "b", "the other job is served");
    let still = client.post(&gw.url("/echo/c"), "c").await;
    still.assert_status(202);
}

#[tokio::test]
async fn a_second_gateway_on_the_same_store_refuses_to_start() {
    let Setup {
        store: _store,
        text,
        ..
    } = Setup::new("", "").await;
    let _first = Gateway::start(&text).await;
    let mut second = Running::start(&text).await;
    assert_eq!(second.exit_code().await, 1);
    let line = second.wait_line("cannot start").await;
    assert!(
        line.contains("another asyncgate already uses the store"),
        "{line}"
    );
}

#[tokio::test]
async fn a_store_an_earlier_version_wrote_is_refused_not_started_afresh() {
    let Setup { store, text, .. } = Setup::new("", "").await;
    std::fs::write(store.0.join("jobs.redb"), b"an earlier build's database").unwrap();
    let mut gateway = Running::start(&text).await;
    assert_eq!(gateway.exit_code().await, 2);
    let line = gateway.wait_line("jobs.redb").await;
    assert!(line.contains("path"), "names the key: {line}");
    assert!(line.contains("earlier asyncgate"), "{line}");
}

#[tokio::test]
async fn a_full_disk_is_a_503_and_loses_nothing_accepted() {
    if !nix_root() {
        eprintln!("skipped: mounting a small filesystem needs root");
        return;
    }
    let mount = TempDir::new();
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
        .arg(&mount.0)
        .status()
        .unwrap();
    if !status.success() {
        eprintln!("skipped: this machine refuses to mount a tmpfs");
        return;
    }
    let _unmount = Unmount(mount.0.clone());
    let backend = Backend::start().await;
    let text = disk_config(&mount.0, &backend, "", "");
    let client = Client::default();
    let gw = Gateway::start(&text).await;
    let first = client.post(&gw.url("/echo/first"), "kept").await;
    first.assert_status(202);
    client
        .wait_status(&gw.url(first.header("location")), "succeeded")
        .await;
    let body = vec![b'x'; 256 * 1024];
    let refused = poll_until(60, "the disk to fill up", async || {
        let reply = client.post(&gw.url("/hold/fill"), body.clone()).await;
        (reply.status != 202).then_some(reply)
    })
    .await;
    refused.assert_problem(503, "store-unavailable");
    assert!(refused.header("retry-after").parse::<u64>().unwrap() >= 1);
    let admin = gw.process.admin_addr().await;
    client
        .get(&format!("http://{admin}/readyz"))
        .await
        .assert_status(503);
    let result = client
        .get(&gw.url(&format!("{}/result", first.header("location"))))
        .await;
    assert_eq!(result.body, "kept", "what was accepted is still served");
    backend.release(1000);
}

fn nix_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Unmounts when dropped, the gateway on it gone first.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// A disk store's config whose jobs take callbacks, retried once after
/// `retry`.
fn hooked(store: &TempDir, backend: &Backend, retry: &str) -> String {
    format!(
        "[webhooks]\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n\
         allow_networks = [\"127.0.0.0/8\"]\nretry_schedule = [\"{retry}\"]\n{}",
        disk_config(&store.0, backend, "", "callback_hosts = [\"127.0.0.1\"]")
    )
}

/// Submits a job whose webhook goes to a receiver path that fails once,
/// then takes it; its Location.
async fn submit_hooked(client: &Client, gw: &Gateway, receiver: &Backend) -> String {
    let reply = client
        .send(
            Method::POST,
            &gw.url("/x"),
            &[("callback-url", &format!("{}/flaky/1/hook", receiver.url()))],
            "{}",
        )
        .await;
    reply.assert_status(202);
    reply.header("location").to_owned()
}

#[tokio::test]
async fn a_webhook_still_pending_at_a_crash_is_delivered_after_the_restart() {
    let backend = Backend::start().await;
    let receiver = Backend::start().await;
    let store = TempDir::new();
    // The first attempt fails and the gateway dies before the second,
    // due two seconds later: only the restart can make it.
    let text = hooked(&store, &backend, "2s");
    let client = Client::default();
    let gw = Gateway::start(&text).await;
    let location = submit_hooked(&client, &gw, &receiver).await;
    poll_until(20, "the first attempt to fail", async || {
        let doc = client.get(&gw.url(&location)).await.json();
        (doc["webhook"]["attempts"] == 1).then_some(())
    })
    .await;
    gw.crash().await;
    assert_eq!(sent(&receiver, "/flaky/1/hook"), 1, "died before the retry");

    let gw = Gateway::start(&text).await;
    let doc = poll_until(20, "the webhook to be delivered", async || {
        let doc = client.get(&gw.url(&location)).await.json();
        (doc["webhook"]["state"] == "delivered").then_some(doc)
    })
    .await;
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    assert_eq!(
        sent(&receiver, "/flaky/1/hook"),
        2,
        "one failed attempt, one after the restart"
    );
}

/// A POST running at a crash fails as lost at the restart, and that end is
/// called back like any other (found by the chaos soak: the restart that
/// failed it did not send its webhook, only the one after it did).
#[tokio::test]
async fn a_post_failed_as_lost_at_the_restart_is_called_back() {
    let backend = Backend::start().await;
    let receiver = Backend::start().await;
    let store = TempDir::new();
    let text = hooked(&store, &backend, "1s");
    let client = Client::default();
    let gw = Gateway::start(&text).await;
    let reply = client
        .send(
            Method::POST,
            &gw.url("/hold/lost"),
            &[("callback-url", &format!("{}/hook", receiver.url()))],
            "{}",
        )
        .await;
    reply.assert_status(202);
    let location = reply.header("location").to_owned();
    backend.started(1).await;
    gw.crash().await;

    let gw = Gateway::start(&text).await;
    let doc = client.wait_status(&gw.url(&location), "failed").await;
    assert_eq!(doc["error"]["type"], "urn:asyncgate:problem:job-lost");
    let doc = poll_until(20, "the webhook of the lost job", async || {
        let doc = client.get(&gw.url(&location)).await.json();
        (doc["webhook"]["state"] == "delivered").then_some(doc)
    })
    .await;
    assert_eq!(doc["webhook"]["attempts"], 1, "{doc:#}");
    assert_eq!(sent(&receiver, "/hook"), 1);
}

#[tokio::test]
async fn a_job_is_kept_past_its_result_ttl_while_its_webhook_is_being_delivered() {
    let backend = Backend::start().await;
    let receiver = Backend::start().await;
    let store = TempDir::new();
    // The retry comes after the result would have expired: the job must
    // still be there for the delivery to be recorded, and a restart to
    // find it.
    let text =
        hooked(&store, &backend, "3s").replace("[store]\n", "[store]\nresult_ttl = \"1s\"\n");
    let client = Client::default();
    let gw = Gateway::start(&text).await;
    let location = submit_hooked(&client, &gw, &receiver).await;
    let doc = poll_until(30, "the webhook to be delivered", async || {
        let doc = client.get(&gw.url(&location)).await.json();
        (doc["webhook"]["state"] == "delivered").then_some(doc)
    })
    .await;
    assert_eq!(doc["webhook"]["attempts"], 2, "{doc:#}");
}

#[tokio::test]
async fn a_corrupt_record_of_a_running_job_does_not_keep_the_gateway_down() {
    let Setup {
        backend,
        store,
        text,
        client,
    } = Setup::new("", "").await;
    let gw = Gateway::start(&text).await;
    let spoiled = client.post(&gw.url("/hold/a"), "a").await;
    spoiled.assert_status(202);
    backend.started(1).await;
    // Recovery finds the record it must carry on with unreadable: that job
    // is left as it is, and everything else starts.
    let gw = restart_spoiled(gw, &store, &text, &client, &spoiled).await;
    let fresh = client.post(&gw.url("/echo/b"), "b").await;
    client
        .wait_status(&gw.url(fresh.header("location")), "succeeded")
        .await;
    backend.release(1);
}
