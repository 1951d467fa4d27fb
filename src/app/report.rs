//! What the admin listener reads of the app: counts, limits, readiness and
//! recent jobs. It holds this narrow view instead of the app, as linkerd's
//! admin server holds readiness and the registry rather than the proxy, so
//! nothing on the operator's port can reach a request's way through the
//! gateway.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;

use super::opening::JobsSlot;
use super::routing::Routing;
use crate::jobs::model::Job;
use crate::jobs::store::StoreError;
use crate::jobs::{Document, Held, Load};
use crate::metrics::RouteMetrics;

/// Route names the metrics give requests that no configured route took.
pub(super) const JOB_API_ROUTE: &str = "_jobs";
pub(super) const DEFAULT_ROUTE: &str = "_default";
pub(super) const NO_ROUTE: &str = "_none";

/// What requests to the job API, to the default upstream and to no route
/// at all count, as routes of their own.
#[derive(Default)]
pub(crate) struct PseudoRoutes {
    pub(super) job_api: RouteMetrics,
    pub(super) default: RouteMetrics,
    pub(super) none: RouteMetrics,
}

/// The process's own gauges: its connections, and how the config's last
/// load went (the one at start counts).
pub(crate) struct Vitals {
    connections: AtomicUsize,
    reload_ok: AtomicBool,
    /// Seconds since the Unix epoch of the last load that succeeded.
    reloaded_at: AtomicU64,
}

impl Vitals {
    pub(super) fn new() -> Vitals {
        Vitals {
            connections: AtomicUsize::new(0),
            reload_ok: AtomicBool::new(true),
            reloaded_at: AtomicU64::new(unix_seconds()),
        }
    }

    pub(super) fn reloaded(&self, ok: bool) {
        self.reload_ok.store(ok, Relaxed);
        if ok {
            self.reloaded_at.store(unix_seconds(), Relaxed);
        }
    }

    pub(crate) fn connections_open(&self) -> usize {
        self.connections.load(Relaxed)
    }

    /// Whether the last load succeeded, and when the last that did was.
    pub(crate) fn last_reload(&self) -> (bool, u64) {
        (self.reload_ok.load(Relaxed), self.reloaded_at.load(Relaxed))
    }
}

/// A client connection, counted open until dropped.
pub(crate) struct OpenConnection(Arc<Vitals>);

impl OpenConnection {
    pub(super) fn new(vitals: &Arc<Vitals>) -> OpenConnection {
        vitals.connections.fetch_add(1, Relaxed);
        OpenConnection(Arc::clone(vitals))
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Relaxed);
    }
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[derive(Clone)]
pub(crate) struct Report {
    pub(super) jobs: Arc<JobsSlot>,
    /// The routing in force, as the first worker holds it.
    pub(super) live: Arc<[ArcSwap<Routing>]>,
    pub(super) pseudo: Arc<PseudoRoutes>,
    pub(super) advisor: Arc<crate::advisor::Advisor>,
    pub(super) advise_over: std::time::Duration,
    pub(super) store_max_bytes: u64,
    pub(super) public_base_url: Option<Arc<str>>,
    pub(super) vitals: Arc<Vitals>,
}

impl Report {
    /// The routes and upstreams in force, with their counters and limits.
    pub(crate) fn routing(&self) -> Arc<Routing> {
        self.live[0].load_full()
    }

    /// The bytes charged to the store's budget; `None` while the store is
    /// awaited from the process this one replaced (job requests wait for
    /// it, so the gateway is ready); an error when the store cannot be
    /// reached or did not open (the gateway is then not ready).
    pub(crate) async fn store_bytes(&self) -> Result<Option<u64>, StoreError> {
        match self.jobs.get() {
            Some(jobs) => jobs.store().usage().await.map(Some),
            None if self.jobs.awaiting() => Ok(None),
            None => Err(StoreError::Unavailable("the job store did not open".into())),
        }
    }

    pub(crate) fn vitals(&self) -> &Vitals {
        &self.vitals
    }

    pub(crate) fn store_max_bytes(&self) -> u64 {
        self.store_max_bytes
    }

    pub(crate) fn public_base_url(&self) -> Option<&str> {
        self.public_base_url.as_deref()
    }

    /// How many jobs run and wait in each upstream's lane, by upstream
    /// name; empty with a shared store.
    pub(crate) fn loads(&self) -> Vec<(String, Load)> {
        self.jobs.get().map(|j| j.loads()).unwrap_or_default()
    }

    /// Each adaptive upstream's running limit now, by name.
    pub(crate) fn adaptive_limits(&self) -> Vec<(String, usize)> {
        self.jobs
            .get()
            .map(|j| j.adaptive_limits())
            .unwrap_or_default()
    }

    /// The proxied paths that should be made async, and how many requests
    /// went uncounted (past the paths kept).
    pub(crate) fn suggestions(&self) -> (Vec<crate::advisor::Suggestion>, u64) {
        (
            self.advisor.suggestions(self.advise_over),
            self.advisor.untracked(),
        )
    }

    /// The upstreams that start none of their jobs now, and why.
    pub(crate) fn holds(&self) -> Vec<Held> {
        self.jobs.get().map(|j| j.holds()).unwrap_or_default()
    }

    /// What the admin listener may change.
    pub(crate) fn control(&self) -> Control {
        Control {
            jobs: Arc::clone(&self.jobs),
        }
    }

    /// The last jobs seen here that `keep` accepts, newest first.
    pub(crate) fn recent(&self, keep: impl Fn(&Job) -> bool, limit: usize) -> Vec<Job> {
        self.jobs
            .get()
            .map(|j| j.recent(keep, limit))
            .unwrap_or_default()
    }

    /// A job's document; only jobs [`Report::recent`] gave are asked for,
    /// so the jobs exist.
    pub(crate) fn documents<'a>(&'a self, jobs: &'a [Job]) -> Vec<Document<'a>> {
        match self.jobs.get() {
            Some(all) => jobs.iter().map(|j| all.document(j)).collect(),
            None => Vec::new(),
        }
    }

    /// The requests counted under pseudo-route names, with those names.
    pub(crate) fn other_metrics(&self) -> [(&'static str, &RouteMetrics); 3] {
        [
            (JOB_API_ROUTE, &self.pseudo.job_api),
            (DEFAULT_ROUTE, &self.pseudo.default),
            (NO_ROUTE, &self.pseudo.none),
        ]
    }

    /// Webhook delivery attempts by outcome, when any route sends webhooks.
    pub(crate) fn webhook_outcomes(&self) -> Option<Vec<(&'static str, u64)>> {
        Some(self.jobs.get()?.webhooks()?.outcomes().collect())
    }

    /// Kafka produce attempts by outcome, when `[kafka]` is configured.
    #[cfg(feature = "kafka")]
    pub(crate) fn kafka_outcomes(&self) -> Option<Vec<(&'static str, u64)>> {
        Some(self.jobs.get()?.kafka()?.outcomes().collect())
    }
}

/// What the admin listener may change: which upstreams are paused.
pub(crate) struct Control {
    jobs: Arc<JobsSlot>,
}

impl Control {
    /// Pauses or resumes `upstream` by hand, for every process that runs
    /// its jobs, until resumed.
    pub(crate) async fn set_paused(&self, upstream: &str, paused: bool) -> Result<(), StoreError> {
        let Some(jobs) = self.jobs.get() else {
            return Err(StoreError::Unavailable(
                "the job store is not open yet".into(),
            ));
        };
        jobs.set_paused(upstream, paused).await
    }
}
