//! SIGHUP reloads the config file (the built binary, signalled): new
//! routes and limits for what starts from then on, jobs under way finish
//! as they began, and a file that does not validate changes nothing.

mod common;

use common::process::Running;
use common::{config, Backend, Client};

/// The async route `jobs` on `/hold/…` (with more keys); everything else
/// proxied to the same backend.
fn held_route(extra: &str) -> String {
    format!(
        "[default]\nupstream = \"app\"\n\
         [[routes]]\nname = \"jobs\"\npath = \"/hold/{{*p}}\"\nupstream = \"app\"\nmode = \"async\"\n{extra}\n"
    )
}

/// Reloads and waits for the log to say how it went; `n` counts the
/// reloads so far, so each wait is for this one's line.
async fn hangup(gw: &Running, n: usize, outcome: &str) -> String {
    gw.signal("HUP");
    common::poll_until(20, "the reload to be logged", async || {
        (gw.count_lines("reloaded the config") + gw.count_lines("config not reloaded") >= n)
            .then_some(())
    })
    .await;
    gw.wait_line(outcome).await
}

#[tokio::test]
async fn a_reload_adds_routes_and_raises_limits_while_held_jobs_finish_as_they_began() {
    let backend = Backend::start().await;
    let before = config(&backend.url(), "max_concurrency = 1", &held_route(""));
    let gw = Running::start(&before).await;
    let base = format!("http://{}", gw.addr().await);
    let client = Client::default();
    // 2 KiB echoed back: within the first config's result limit, not the second's.
    let body = vec![b'x'; 2048];
    let first = client.post(&format!("{base}/hold/1"), body.clone()).await;
    first.assert_status(202);
    let second = client.post(&format!("{base}/hold/2"), body.clone()).await;
    second.assert_status(202);
    backend.started(1).await;
    // Not yet a route of its own: proxied.
    client
        .post(&format!("{base}/extra/1"), "e")
        .await
        .assert_status(200);

    let after = config(
        &backend.url(),
        "max_concurrency = 2",
        &format!(
            "{}[[routes]]\nname = \"extra\"\npath = \"/extra/{{*p}}\"\nupstream = \"app\"\nmode = \"async\"\n",
            held_route("max_result = \"1KiB\"")
        ),
    );
    gw.config()
        .rewrite(&format!("[server]\nlisten = \"127.0.0.1:0\"\n{after}"));
    // Proxied traffic goes on through the reload, every request answered.
    let load = {
        let (client, base) = (client.clone(), base.clone());
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            for i in 0..300 {
                statuses.push(client.get(&format!("{base}/echo/{i}")).await.status);
            }
            statuses
        })
    };
    hangup(&gw, 1, "reloaded the config").await;
    let statuses = common::within(30, "the traffic through the reload", load)
        .await
        .unwrap();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(
        gw.count_lines("next restart"),
        0,
        "nothing that needs a restart changed"
    );
    // The raised limit starts the job that was waiting.
    let waiting = format!("{base}{}", common::path_of(second.header("location")));
    client.wait_status(&waiting, "running").await;
    let extra = client.post(&format!("{base}/extra/1"), "e").await;
    extra.assert_status(202);
    let third = client.post(&format!("{base}/hold/3"), body.clone()).await;
    third.assert_status(202);

    backend.release(4);
    for accepted in [&first, &second] {
        let url = format!("{base}{}", common::path_of(accepted.header("location")));
        client.wait_status(&url, "succeeded").await;
        let result = client.get(&format!("{url}/result")).await;
        assert_eq!(
            result.body.len(),
            2048,
            "finished under the config it began with"
        );
    }
    let url = format!("{base}{}", common::path_of(third.header("location")));
    let doc = client.wait_status(&url, "failed").await;
    assert_eq!(
        doc["error"]["type"],
        "urn:asyncgate:problem:result-too-large"
    );
    client
        .wait_status(
            &format!("{base}{}", common::path_of(extra.header("location"))),
            "succeeded",
        )
        .await;
}

#[tokio::test]
async fn a_broken_file_is_refused_naming_its_line_and_the_running_config_stays() {
    let backend = Backend::start().await;
    let good = config(&backend.url(), "", &held_route(""));
    let gw = Running::start(&good).await;
    let base = format!("http://{}", gw.addr().await);
    let client = Client::default();
    let metrics = format!("http://{}/metrics", gw.admin_addr().await);
    let reload_state = async || {
        let text = String::from_utf8(client.get(&metrics).await.body.to_vec()).unwrap();
        let value = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .unwrap_or_else(|| panic!("no {name} in {text}"))
                .to_owned()
        };
        (
            value("asyncgate_config_last_reload_successful"),
            value("asyncgate_config_last_reload_success_timestamp_seconds"),
        )
    };
    let (ok, loaded_at) = reload_state().await;
    assert_eq!(ok, "1", "the load at start counts");
    gw.config().rewrite(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{good}\n[[routes]]\nname = 7\n"
    ));
    let line = hangup(&gw, 1, "config not reloaded").await;
    assert!(line.contains(gw.config().0.to_str().unwrap()), "{line}");
    assert!(line.contains("routes"), "names the key: {line}");
    assert_eq!(reload_state().await, ("0".to_owned(), loaded_at));
    client
        .post(&format!("{base}/hold/1"), "")
        .await
        .assert_status(202);
    backend.release(1);
}

#[tokio::test]
async fn a_changed_setting_that_needs_a_restart_is_named() {
    let backend = Backend::start().await;
    let text = config(&backend.url(), "", &held_route(""));
    let gw = Running::start(&text).await;
    gw.addr().await;
    gw.config().rewrite(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndrain_timeout = \"5s\"\n{text}"
    ));
    hangup(&gw, 1, "reloaded the config").await;
    let warning = gw.wait_line("next restart").await;
    assert!(warning.contains("server"), "{warning}");
    assert!(!warning.contains("store"), "{warning}");
}
