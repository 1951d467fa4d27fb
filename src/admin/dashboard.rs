//! The dashboard: one page for people (`/`), embedded in the binary, and
//! the JSON it polls (`/jobs`): jobs per route and status, each upstream's
//! lane against its limits, the store's budget, and the last jobs.

use std::sync::atomic::Ordering::Relaxed;

use serde::Serialize;

use crate::app::{Report, Routing};
use crate::jobs::model::{Job, JobStatus};
use crate::jobs::Document;

/// Plain HTML, CSS and JS: no build step, no external assets.
pub(super) const PAGE: &str = include_str!("dashboard.html");

/// How many jobs `/jobs` lists unless asked, and at most.
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 200;

#[derive(Serialize)]
pub(super) struct Overview<'a> {
    ready: bool,
    /// Where job links point: `public_base_url`, or `null` for the page
    /// to use its own host with `public_port`.
    public_base_url: Option<&'a str>,
    public_port: u16,
    routes: Vec<RouteRow<'a>>,
    upstreams: Vec<UpstreamRow<'a>>,
    store: StoreRow,
    jobs: Vec<Document<'a>>,
}

#[derive(Serialize)]
struct RouteRow<'a> {
    route: &'a str,
    mode: &'static str,
    submitted: u64,
    /// Submitted here and not yet ended here.
    active: u64,
    succeeded: u64,
    failed: u64,
    canceled: u64,
    rejected: u64,
}

#[derive(Serialize)]
pub(super) struct UpstreamRow<'a> {
    pub(super) upstream: &'a str,
    /// `null` with a shared store, whose queue is not this process's.
    running: Option<usize>,
    queued: Option<usize>,
    max_concurrency: usize,
    /// With `adaptive = true`: how many may run at once now.
    concurrency_limit: Option<usize>,
    max_queue: usize,
    /// Jobs start no faster than this (`20/s`), `burst` at once.
    rate: Option<String>,
    burst: Option<u32>,
    /// Whether waiting jobs of one urgency take turns across callers.
    fair: bool,
    /// Paused by hand: nothing of it starts until resumed.
    paused: bool,
    /// While its backend asked to be left alone: until when nothing of it
    /// starts (RFC 3339).
    held_until: Option<String>,
}

#[derive(Serialize)]
struct StoreRow {
    used_bytes: Option<u64>,
    max_bytes: u64,
}

/// What `/jobs` was asked for.
#[derive(Debug)]
pub(super) struct Filter {
    route: Option<String>,
    status: Option<JobStatus>,
    limit: usize,
}

impl Filter {
    /// `route=`, `status=`, `limit=`; unknown parameters are ignored.
    pub(super) fn parse(query: Option<&str>) -> Result<Filter, String> {
        let mut filter = Filter {
            route: None,
            status: None,
            limit: DEFAULT_LIMIT,
        };
        for (key, value) in query
            .unwrap_or("")
            .split('&')
            .filter_map(|kv| kv.split_once('='))
        {
            match key {
                "route" if !value.is_empty() => filter.route = Some(value.to_owned()),
                "status" if !value.is_empty() => {
                    filter.status = Some(JobStatus::parse(value).ok_or_else(|| {
                        format!("status must be queued, running, succeeded, failed or canceled, not `{value}`")
                    })?);
                }
                "limit" => {
                    filter.limit = value
                        .parse::<usize>()
                        .map_err(|_| format!("limit must be a whole number, not `{value}`"))?
                        .min(MAX_LIMIT);
                }
                _ => {}
            }
        }
        Ok(filter)
    }

    fn keeps(&self, job: &Job) -> bool {
        self.route.as_deref().is_none_or(|r| *job.route == *r)
            && self.status.is_none_or(|s| job.status == s)
    }
}

pub(super) fn overview<'a>(
    report: &'a Report,
    routing: &'a Routing,
    public_port: u16,
    jobs: &'a [Job],
    ready: bool,
    store_bytes: Option<u64>,
) -> Overview<'a> {
    let routes = routing
        .routes
        .iter()
        .map(|r| {
            let m = &r.metrics;
            let finished: Vec<u64> = m.finished_counts().map(|(_, n)| n).collect();
            let submitted = m.submitted.load(Relaxed);
            RouteRow {
                route: &r.name,
                mode: r.config.mode.as_str(),
                submitted,
                active: submitted.saturating_sub(finished.iter().sum()),
                succeeded: finished[0],
                failed: finished[1],
                canceled: finished[2],
                rejected: m.rejected_counts().map(|(_, n)| n).sum(),
            }
        })
        .collect();
    let upstreams = upstream_rows(report, routing);
    Overview {
        ready,
        public_base_url: report.public_base_url(),
        public_port,
        routes,
        upstreams,
        store: StoreRow {
            used_bytes: store_bytes,
            max_bytes: report.store_max_bytes(),
        },
        jobs: report.documents(jobs),
    }
}

/// Each upstream in force: its limits, what runs and waits, and whether it
/// starts nothing now, and why.
pub(super) fn upstream_rows<'a>(report: &Report, routing: &'a Routing) -> Vec<UpstreamRow<'a>> {
    let loads = report.loads();
    let holds = report.holds();
    let adaptive = report.adaptive_limits();
    routing
        .upstreams
        .iter()
        .map(|u| {
            let load = loads
                .iter()
                .find(|(name, _)| *name == u.config.name)
                .map(|(_, l)| *l);
            let held = holds.iter().find(|h| h.upstream == u.config.name);
            UpstreamRow {
                upstream: &u.config.name,
                running: load.map(|l| l.running),
                queued: load.map(|l| l.waiting),
                max_concurrency: u.config.max_concurrency,
                concurrency_limit: adaptive
                    .iter()
                    .find(|(name, _)| *name == u.config.name)
                    .map(|(_, limit)| *limit),
                max_queue: u.config.max_queue,
                rate: u.config.rate.map(|r| r.to_string()),
                burst: u.config.rate.map(|r| r.burst),
                fair: u.config.fair,
                paused: held.is_some_and(|h| h.paused),
                held_until: held
                    .and_then(|h| h.until)
                    .map(|until| humantime::format_rfc3339_seconds(until).to_string()),
            }
        })
        .collect()
}

/// The jobs `filter` asks for, newest first.
pub(super) fn listed(report: &Report, filter: &Filter) -> Vec<Job> {
    report.recent(|j| filter.keeps(j), filter.limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_and_bad_ones_say_why() {
        let f = Filter::parse(Some("route=reports&status=failed&limit=5000&x=1")).unwrap();
        assert_eq!(f.route.as_deref(), Some("reports"));
        assert_eq!(f.status, Some(JobStatus::Failed));
        assert_eq!(f.limit, MAX_LIMIT);
        assert_eq!(Filter::parse(None).unwrap().limit, DEFAULT_LIMIT);
        assert!(Filter::parse(Some("status=done"))
            .unwrap_err()
            .contains("done"));
        assert!(Filter::parse(Some("limit=-1")).is_err());
    }
}
