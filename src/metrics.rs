//! What the gateway counts, kept where it happens: plain atomics on the
//! route, the upstream and the webhook sender, so counting takes no lock on
//! the request path. The admin listener reads them when scraped and writes
//! them out with `prometheus-client` (see `admin::exposition`).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::jobs::model::JobStatus;

/// Upper bounds of the request histograms' buckets, in seconds: from a
/// fast backend's millisecond to the five minutes a client seldom waits
/// past.
pub(crate) const REQUEST_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// The job histogram's: the request buckets, then on to a day, so that a
/// job ending at any `job_timeout` up to a day (the default is 15 minutes)
/// lands in a finite bucket, queue time included.
pub(crate) const JOB_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 43200.0, 86400.0,
];

/// A histogram of durations whose observations are a few relaxed atomic
/// adds. A scrape may see a count one observation ahead of the sum; the
/// next scrape agrees again.
#[derive(Debug)]
pub(crate) struct Histogram {
    bounds: &'static [f64],
    /// Not cumulative: each observation lands in one bucket; the last is +Inf.
    buckets: Box<[AtomicU64]>,
    sum_micros: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram::with_bounds(REQUEST_BUCKETS)
    }
}

impl Histogram {
    /// Buckets with these upper bounds (ascending) and one for the rest.
    pub(crate) fn with_bounds(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }

    pub(crate) fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = self.bounds.partition_point(|&upper| upper < secs);
        self.buckets[i].fetch_add(1, Relaxed);
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Relaxed);
    }

    /// The upper bound of the bucket that holds the `q` quantile (the
    /// largest finite bound past it); `None` before any observation.
    pub(crate) fn quantile(&self, q: f64) -> Option<f64> {
        let (_, count, buckets) = self.snapshot();
        let rank = ((q * count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        let largest = self.bounds.last().copied().unwrap_or(f64::INFINITY);
        buckets.into_iter().find_map(|(upper, n)| {
            seen += n;
            (count > 0 && seen >= rank).then_some(upper.min(largest))
        })
    }

    /// Sum in seconds, count, and each bucket's upper bound (the last is
    /// +Inf) with the observations in it alone, as the encoder takes them.
    pub(crate) fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let buckets: Vec<(f64, u64)> = self
            .buckets
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let upper = self.bounds.get(i).copied().unwrap_or(f64::INFINITY);
                (upper, b.load(Relaxed))
            })
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.sum_micros.load(Relaxed) as f64 / 1e6;
        (sum, count, buckets)
    }
}

/// Responses by status code, 100 to 599.
#[derive(Debug)]
pub(crate) struct StatusCounts([AtomicU64; 500]);

impl Default for StatusCounts {
    fn default() -> StatusCounts {
        StatusCounts(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

impl StatusCounts {
    pub(crate) fn count(&self, status: http::StatusCode) {
        if let Some(c) = self.0.get(usize::from(status.as_u16()).wrapping_sub(100)) {
            c.fetch_add(1, Relaxed);
        }
    }

    /// Every code seen at least once, with its count.
    pub(crate) fn seen(&self) -> impl Iterator<Item = (u16, u64)> + '_ {
        (100u16..).zip(&self.0).filter_map(|(code, c)| {
            let n = c.load(Relaxed);
            (n > 0).then_some((code, n))
        })
    }
}

/// Why a request was turned away rather than served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejection {
    QueueFull,
    StoreFull,
    StoreUnavailable,
    Draining,
    BodyTooLarge,
    CallerQuota,
}

impl Rejection {
    pub(crate) const ALL: [Rejection; 6] = [
        Rejection::QueueFull,
        Rejection::StoreFull,
        Rejection::StoreUnavailable,
        Rejection::Draining,
        Rejection::BodyTooLarge,
        Rejection::CallerQuota,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Rejection::QueueFull => "queue-full",
            Rejection::CallerQuota => "caller-quota",
            Rejection::StoreFull => "store-full",
            Rejection::StoreUnavailable => "store-unavailable",
            Rejection::Draining => "draining",
            Rejection::BodyTooLarge => "body-too-large",
        }
    }
}

/// What a route counts; the pseudo-routes of the job API and of requests
/// no route matched count their requests here too.
#[derive(Debug)]
pub(crate) struct RouteMetrics {
    pub(crate) requests: StatusCounts,
    /// Until the response head, for every request the route answered:
    /// proxied, answered with a job's `202`, or refused.
    pub(crate) request_duration: Histogram,
    pub(crate) submitted: AtomicU64,
    /// By terminal status: succeeded, failed, canceled.
    finished: [AtomicU64; 3],
    rejected: [AtomicU64; Rejection::ALL.len()],
    /// From acceptance to the end, for jobs that ended here.
    pub(crate) job_duration: Histogram,
}

impl Default for RouteMetrics {
    fn default() -> RouteMetrics {
        RouteMetrics {
            requests: StatusCounts::default(),
            request_duration: Histogram::default(),
            submitted: AtomicU64::default(),
            finished: Default::default(),
            rejected: Default::default(),
            job_duration: Histogram::with_bounds(JOB_BUCKETS),
        }
    }
}

const TERMINAL: [JobStatus; 3] = [JobStatus::Succeeded, JobStatus::Failed, JobStatus::Canceled];

impl RouteMetrics {
    pub(crate) fn finished(&self, status: JobStatus, took: Duration) {
        if let Some(i) = TERMINAL.iter().position(|&s| s == status) {
            self.finished[i].fetch_add(1, Relaxed);
            self.job_duration.observe(took);
        }
    }

    pub(crate) fn rejected(&self, why: Rejection) {
        if let Some(i) = Rejection::ALL.iter().position(|&r| r == why) {
            self.rejected[i].fetch_add(1, Relaxed);
        }
    }

    pub(crate) fn finished_counts(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        TERMINAL
            .iter()
            .zip(&self.finished)
            .map(|(s, c)| (s.as_str(), c.load(Relaxed)))
    }

    pub(crate) fn rejected_counts(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Rejection::ALL
            .iter()
            .zip(&self.rejected)
            .map(|(r, c)| (r.as_str(), c.load(Relaxed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_puts_each_duration_in_its_bucket_and_cumulates() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(1));
        h.observe(Duration::from_millis(30));
        h.observe(Duration::from_secs(3600));
        let (sum, count, buckets) = h.snapshot();
        assert_eq!(count, 4);
        assert!((sum - 3600.0315).abs() < 1e-6);
        assert_eq!(buckets[0], (0.001, 2));
        assert_eq!(buckets[4], (0.025, 0));
        assert_eq!(buckets[5], (0.05, 1));
        assert_eq!(buckets[16], (f64::INFINITY, 1));
    }

    #[test]
    fn job_durations_up_to_a_day_land_in_a_finite_bucket() {
        let h = Histogram::with_bounds(JOB_BUCKETS);
        h.observe(Duration::from_secs(15 * 60));
        h.observe(Duration::from_secs(24 * 3600));
        let (_, _, buckets) = h.snapshot();
        let inf = buckets.last().unwrap();
        assert_eq!(*inf, (f64::INFINITY, 0));
        assert_eq!(h.quantile(1.0), Some(86400.0));
        assert!(JOB_BUCKETS.starts_with(REQUEST_BUCKETS));
    }

    #[test]
    fn status_counts_keep_only_codes_seen() {
        let s = StatusCounts::default();
        s.count(http::StatusCode::OK);
        s.count(http::StatusCode::OK);
        s.count(http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(s.seen().collect::<Vec<_>>(), vec![(200, 2), (503, 1)]);
    }
}
