//! The upstreams on the admin listener: `GET /upstreams` (their limits,
//! what runs and waits, whether they are paused or held, and why), and
//! `POST /upstreams/{name}/pause` and `…/resume`: while paused,
//! submissions are accepted and nothing of the upstream starts, on any
//! replica, across reloads and restarts.

use http::StatusCode;
use serde::Serialize;

use super::dashboard::{upstream_rows, UpstreamRow};
use super::{json, text, Reply};
use crate::app::{Control, Report};
use crate::error_chain::Chain;

#[derive(Serialize)]
struct Upstreams<'a> {
    upstreams: Vec<UpstreamRow<'a>>,
}

pub(super) fn list(report: &Report) -> Reply {
    let routing = report.routing();
    json(&Upstreams {
        upstreams: upstream_rows(report, &routing),
    })
}

/// `rest` is the path after `/upstreams/`: `{name}/pause` or
/// `{name}/resume`.
pub(super) async fn act(report: &Report, control: &Control, rest: &str) -> Reply {
    let Some((name, paused)) = rest
        .rsplit_once('/')
        .and_then(|(name, action)| match action {
            "pause" => Some((name, true)),
            "resume" => Some((name, false)),
            _ => None,
        })
    else {
        return text(
            StatusCode::NOT_FOUND,
            "not found: POST /upstreams/{name}/pause or …/resume\n",
        );
    };
    let routing = report.routing();
    if !routing.upstreams.iter().any(|u| u.config.name == name) {
        return text(
            StatusCode::NOT_FOUND,
            &format!("no upstream named `{name}`\n"),
        );
    }
    if let Err(e) = control.set_paused(name, paused).await {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("cannot keep the pause in the job store: {}\n", Chain(&e)),
        );
    }
    let rows = upstream_rows(report, &routing);
    let row = rows
        .into_iter()
        .find(|r| r.upstream == name)
        .expect("the upstream was just found in the same routing");
    json(&row)
}
