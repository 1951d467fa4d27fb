//! What a reload replaces: the route table, the routes and the upstreams
//! (with their connection pools), and the webhook sender; built from a
//! config, with the counts each route and upstream has kept so far.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::callback::target::{system_resolver, Resolve};
use crate::config::{Config, RequestBody, RouteConfig, UpstreamConfig, WebhookConfig};
use crate::delivery::Outcomes;
use crate::metrics::{Histogram, RouteMetrics};
use crate::retry_after::DurationStats;
use crate::route::Route;
use crate::route_table::RouteTable;
use crate::sync::lock;
use crate::upstream::Upstream;
use crate::webhook::Webhooks;

/// The routes and upstreams in force. Each worker holds a copy of its own
/// (the parts are shared), so taking it for a request never touches a
/// counter another core writes.
#[derive(Clone)]
pub(crate) struct Routing {
    table: RouteTable,
    pub(crate) routes: Vec<Arc<Route>>,
    pub(crate) upstreams: Vec<Arc<Upstream>>,
    pub(crate) default_upstream: Option<Arc<Upstream>>,
    pub(crate) default_body: RequestBody,
}

impl Routing {
    pub(super) fn find(&self, method: &http::Method, path: &str) -> Option<&Arc<Route>> {
        self.table.find(method, path).map(|i| &self.routes[i])
    }

    /// See [`RouteTable::reached_uncleanly`].
    pub(super) fn reached_uncleanly(&self, method: &http::Method, path: &str) -> bool {
        self.table.reached_uncleanly(method, path)
    }
}

/// A route's counters, and what its jobs taught about their duration.
type RouteKept = (Arc<RouteMetrics>, Arc<DurationStats>);

/// What routes and upstreams have counted and learnt, by name, so that a
/// reload that keeps a name keeps its counters (Prometheus sees no reset)
/// and its jobs' expected duration.
#[derive(Default)]
pub(super) struct Kept {
    routes: Mutex<HashMap<String, RouteKept>>,
    upstreams: Mutex<HashMap<String, Arc<Histogram>>>,
    webhook_outcomes: Arc<Outcomes>,
    /// Webhook hosts' resolver, made once: its cache outlives reloads.
    resolver: std::sync::OnceLock<Arc<dyn Resolve>>,
}

/// The sections of a config only a restart applies, by name.
pub(super) type Fixed = [(&'static str, String); 4];

/// The sections of `after` that differ from `before`.
pub(super) fn changed(before: &Fixed, after: &Fixed) -> Vec<&'static str> {
    before
        .iter()
        .zip(after)
        .filter(|(b, a)| b.1 != a.1)
        .map(|(b, _)| b.0)
        .collect()
}

/// The parts of a config a reload applies.
pub(super) struct Reloadable {
    pub(super) table: RouteTable,
    pub(super) upstreams: Vec<UpstreamConfig>,
    pub(super) routes: Vec<RouteConfig>,
    pub(super) default_upstream: Option<usize>,
    pub(super) default_body: RequestBody,
    pub(super) webhooks: WebhookConfig,
}

impl Reloadable {
    /// Splits `config` into what a reload applies and what only a restart
    /// can: `[server]` (listeners, workers, limits), `[store]`, `[admin]`
    /// and `[kafka]`, each described so two can be compared.
    pub(super) fn split(config: Config) -> (Reloadable, Fixed) {
        let fixed = [
            ("server", format!("{:?}", config.server)),
            ("store", format!("{:?}", config.store)),
            ("admin", format!("{:?}", config.admin)),
            ("kafka", format!("{:?}", config.kafka)),
        ];
        let reloadable = Reloadable {
            table: config.route_table,
            upstreams: config.upstreams,
            routes: config.routes,
            default_upstream: config.default_upstream,
            default_body: config.default_body,
            webhooks: config.webhooks,
        };
        (reloadable, fixed)
    }
}

impl Kept {
    /// New upstreams (new pools), routes over them, and a webhook sender,
    /// from `config`; counters carried over by name.
    pub(super) fn build(
        &self,
        config: Reloadable,
        workers: usize,
    ) -> (Routing, Option<Arc<Webhooks>>) {
        let upstreams: Vec<Arc<Upstream>> = config
            .upstreams
            .into_iter()
            .map(|u| {
                let duration = Arc::clone(lock(&self.upstreams).entry(u.name.clone()).or_default());
                Arc::new(Upstream::new(u, workers, duration))
            })
            .collect();
        let routes: Vec<Arc<Route>> = config
            .routes
            .into_iter()
            .map(|r| {
                let (metrics, stats) = lock(&self.routes)
                    .entry(r.name.clone())
                    .or_default()
                    .clone();
                Arc::new(Route {
                    name: r.name.as_str().into(),
                    upstream: Arc::clone(&upstreams[r.upstream]),
                    config: r,
                    stats,
                    metrics,
                })
            })
            .collect();
        // A sender exists when something can be signed: a secret for every
        // route, or a route's own.
        let signs = !config.webhooks.secrets.is_empty()
            || routes
                .iter()
                .any(|r: &Arc<Route>| r.config.webhook_secrets.is_some());
        let webhooks = signs.then(|| {
            Arc::new(Webhooks::new(
                config.webhooks,
                Arc::clone(self.resolver.get_or_init(system_resolver)),
                Arc::clone(&self.webhook_outcomes),
            ))
        });
        let routing = Routing {
            table: config.table,
            default_upstream: config.default_upstream.map(|i| Arc::clone(&upstreams[i])),
            default_body: config.default_body,
            routes,
            upstreams,
        };
        (routing, webhooks)
    }
}
