//! A route at run time: its config, its upstream, and what its jobs have
//! taught the gateway about their duration.

use std::sync::Arc;
use std::time::Duration;

use crate::config::RouteConfig;
use crate::metrics::RouteMetrics;
use crate::retry_after::{self, DurationStats};
use crate::upstream::Upstream;

pub(crate) struct Route {
    pub(crate) config: RouteConfig,
    pub(crate) name: Arc<str>,
    pub(crate) upstream: Arc<Upstream>,
    /// Both kept by name across reloads.
    pub(crate) stats: Arc<DurationStats>,
    pub(crate) metrics: Arc<RouteMetrics>,
}

impl Route {
    /// Whether a job of this route with this method may be sent again when
    /// its first sending may or may not have reached the backend (a crash,
    /// a drain's deadline): the route's `resend_on_loss`, by default
    /// whether the method is idempotent (RFC 9110 §9.2.2).
    pub(crate) fn resends(&self, method: &http::Method) -> bool {
        self.config
            .resend_on_loss
            .unwrap_or_else(|| method.is_idempotent())
    }

    /// `Retry-After` seconds for a job of this route that has run for `elapsed`.
    pub(crate) fn retry_after(&self, elapsed: Duration) -> u64 {
        retry_after::retry_after(
            self.stats.expected(),
            elapsed,
            self.config.retry_after_min,
            self.config.retry_after_max,
        )
    }
}
