//! Adaptive concurrency (upstream `adaptive = true`): how many of an
//! upstream's jobs run at once follows what its backend shows, between 1
//! and `max_concurrency`, by AIMD as Netflix's concurrency-limits does it
//! (its `AIMDLimit`). Each job that went well adds `1/limit`, so the limit
//! grows by about one place per round of `limit` jobs; each sign of
//! overload takes a tenth off at once. The signs: a `429` or `503`, a
//! timeout, a refused or broken connection, and a job slower than twice
//! the usual (an average of the jobs that went well, once there are
//! enough of them to say what usual is). It starts at 1: a backend just
//! come up, or just configured, is not sent everything at once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use http::StatusCode;

use super::model::{Failure, Outcome};
use crate::config::UpstreamConfig;
use crate::sync::lock;

/// What is left of the limit after a sign of overload (Netflix's
/// `backoffRatio`).
const BACK_OFF: f64 = 0.9;

/// How much one job's time moves the usual time.
const WEIGHT: f64 = 0.1;

/// Jobs that went well before their time says what usual is.
const SAMPLES: u32 = 10;

/// A job this many times slower than usual is a sign of overload.
const SLOW: f64 = 2.0;

/// The limit of each upstream with `adaptive = true`, by name; kept across
/// reloads while the upstream stays adaptive.
#[derive(Default)]
pub(super) struct Limiters(Mutex<HashMap<String, Aimd>>);

impl Limiters {
    /// Follows a reload: new adaptive upstreams start at 1, those that stay
    /// keep their limit under their new `max_concurrency`, the others are
    /// forgotten.
    pub(super) fn fit<'a>(&self, upstreams: impl IntoIterator<Item = &'a UpstreamConfig>) {
        let mut limiters = lock(&self.0);
        let mut kept = HashMap::new();
        for upstream in upstreams.into_iter().filter(|u| u.adaptive) {
            let mut aimd = limiters
                .remove(&upstream.name)
                .or_else(|| kept.remove(&upstream.name))
                .unwrap_or_else(|| Aimd::new(upstream.max_concurrency));
            aimd.set_max(upstream.max_concurrency);
            kept.insert(upstream.name.clone(), aimd);
        }
        *limiters = kept;
    }

    /// Each adaptive upstream's limit now, by name.
    pub(super) fn all(&self) -> Vec<(String, usize)> {
        lock(&self.0)
            .iter()
            .map(|(name, aimd)| (name.clone(), aimd.limit()))
            .collect()
    }

    /// The limit now of an adaptive upstream.
    pub(super) fn limit(&self, upstream: &str) -> Option<usize> {
        lock(&self.0).get(upstream).map(Aimd::limit)
    }

    /// Moves an adaptive upstream's limit after a try (see
    /// [`Aimd::record`]); its new limit, `None` for an upstream that is
    /// not adaptive.
    pub(super) fn record(
        &self,
        upstream: &str,
        outcome: Option<&Outcome>,
        took: Duration,
    ) -> Option<usize> {
        lock(&self.0)
            .get_mut(upstream)
            .map(|aimd| aimd.record(outcome, took))
    }
}

#[derive(Debug)]
pub(super) struct Aimd {
    limit: f64,
    max: usize,
    /// The average time of the jobs that went well, in seconds.
    usual: f64,
    samples: u32,
}

impl Aimd {
    pub(super) fn new(max: usize) -> Aimd {
        Aimd {
            limit: 1.0,
            max,
            usual: 0.0,
            samples: 0,
        }
    }

    /// A new `max_concurrency`, from a reload.
    pub(super) fn set_max(&mut self, max: usize) {
        self.max = max;
        self.limit = self.limit.min(max as f64);
    }

    /// How many may run at once now.
    pub(super) fn limit(&self) -> usize {
        (self.limit as usize).clamp(1, self.max.max(1))
    }

    /// Moves the limit after a try that took `took` and ended in `outcome`
    /// (`None`: it was stopped, which tells nothing); the new limit.
    pub(super) fn record(&mut self, outcome: Option<&Outcome>, took: Duration) -> usize {
        let Some(outcome) = outcome else {
            return self.limit();
        };
        let secs = took.as_secs_f64();
        let slow = self.samples >= SAMPLES && secs > SLOW * self.usual;
        if overloaded(outcome) || slow {
            self.limit = (self.limit * BACK_OFF).max(1.0);
        } else {
            self.limit = (self.limit + 1.0 / self.limit).min(self.max as f64);
            self.usual = if self.samples == 0 {
                secs
            } else {
                self.usual + WEIGHT * (secs - self.usual)
            };
            self.samples = self.samples.saturating_add(1);
        }
        self.limit()
    }
}

/// Whether the backend said, or showed, that it has too much to do.
fn overloaded(outcome: &Outcome) -> bool {
    match (&outcome.response, outcome.failure) {
        (Some(r), _) => matches!(
            r.status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        ),
        (None, Some(Failure::Timeout | Failure::Unreachable | Failure::Reset)) => true,
        (None, _) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header_block::HeaderBlock;
    use crate::jobs::model::StoredResponse;
    use bytes::Bytes;

    fn answered(status: u16) -> Outcome {
        Outcome::answered(StoredResponse {
            status: StatusCode::from_u16(status).unwrap(),
            headers: HeaderBlock::pack(&http::HeaderMap::new()),
            body: Bytes::new(),
        })
    }

    const FAST: Duration = Duration::from_millis(100);

    #[test]
    fn starts_at_one_and_grows_by_about_one_place_per_round() {
        let mut aimd = Aimd::new(8);
        assert_eq!(aimd.limit(), 1);
        let ok = answered(200);
        assert_eq!(aimd.record(Some(&ok), FAST), 2);
        // 2 + 1/2, then + 1/2.5, …: two more jobs for the next place.
        assert_eq!(aimd.record(Some(&ok), FAST), 2);
        assert_eq!(aimd.record(Some(&ok), FAST), 2);
        assert_eq!(aimd.record(Some(&ok), FAST), 3);
        for _ in 0..100 {
            aimd.record(Some(&ok), FAST);
        }
        assert_eq!(aimd.limit(), 8, "never past max_concurrency");
    }

    #[test]
    fn overload_takes_a_tenth_off_down_to_one() {
        let mut aimd = Aimd::new(8);
        for _ in 0..100 {
            aimd.record(Some(&answered(200)), FAST);
        }
        assert_eq!(aimd.record(Some(&answered(503)), FAST), 7);
        assert_eq!(aimd.record(Some(&answered(429)), FAST), 6);
        assert_eq!(
            aimd.record(Some(&Outcome::failed(Failure::Timeout)), FAST),
            5
        );
        assert_eq!(aimd.record(None, FAST), 5, "a stopped try tells nothing");
        assert_eq!(
            aimd.record(Some(&answered(500)), FAST),
            6,
            "a 500 is the job's failure, not overload"
        );
        for _ in 0..100 {
            aimd.record(Some(&answered(503)), FAST);
        }
        assert_eq!(aimd.limit(), 1);
    }

    #[test]
    fn a_job_twice_as_slow_as_usual_is_a_sign_of_overload() {
        let mut aimd = Aimd::new(8);
        for _ in 0..100 {
            aimd.record(Some(&answered(200)), FAST);
        }
        assert_eq!(aimd.record(Some(&answered(200)), FAST * 3), 7);
        assert_eq!(
            aimd.record(Some(&answered(200)), FAST * 3 / 2),
            7,
            "slower, not twice"
        );
    }

    #[test]
    fn a_lower_max_lowers_the_limit() {
        let mut aimd = Aimd::new(8);
        for _ in 0..100 {
            aimd.record(Some(&answered(200)), FAST);
        }
        aimd.set_max(3);
        assert_eq!(aimd.limit(), 3);
    }
}
