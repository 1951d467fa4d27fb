//! How long a route's jobs take, and what follows for `Retry-After` and
//! estimated progress.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Weight of the newest observation: recent jobs matter most, and one
/// outlier moves the estimate by a fifth.
const ALPHA: f64 = 0.2;

/// An exponentially weighted moving average of job durations, lock-free so
/// status polls never contend with finishing jobs.
#[derive(Debug, Default)]
pub(crate) struct DurationStats {
    /// f64 seconds as bits; 0 means nothing observed yet.
    ewma_bits: AtomicU64,
}

impl DurationStats {
    pub(crate) fn record(&self, d: Duration) {
        let sample = d.as_secs_f64().max(f64::MIN_POSITIVE);
        let _ = self
            .ewma_bits
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |bits| {
                let old = f64::from_bits(bits);
                let new = if bits == 0 {
                    sample
                } else {
                    old + ALPHA * (sample - old)
                };
                Some(new.to_bits())
            });
    }

    pub(crate) fn expected(&self) -> Option<Duration> {
        let bits = self.ewma_bits.load(Ordering::Acquire);
        (bits != 0).then(|| Duration::from_secs_f64(f64::from_bits(bits)))
    }
}

/// Seconds a client should wait before polling again: the expected time
/// left, within the route's bounds, and never less than one second.
pub(crate) fn retry_after(
    expected: Option<Duration>,
    elapsed: Duration,
    min: Duration,
    max: Duration,
) -> u64 {
    let left = expected.map_or(min, |e| e.saturating_sub(elapsed));
    let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
    secs.clamp(min.as_secs().max(1), max.as_secs().max(1))
}

/// Share of the expected duration already spent, capped at 99 so an
/// estimate never claims a job is done.
pub(crate) fn estimated_percent(expected: Duration, elapsed: Duration) -> u8 {
    if expected.is_zero() {
        return 99;
    }
    let pct = elapsed.as_secs_f64() / expected.as_secs_f64() * 100.0;
    pct.clamp(0.0, 99.0) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn no_history_means_the_minimum() {
        assert_eq!(retry_after(None, S(0), S(2), S(60)), 2);
    }

    #[test]
    fn time_left_is_rounded_up_and_clamped() {
        assert_eq!(
            retry_after(Some(S(10)), Duration::from_millis(2500), S(1), S(60)),
            8
        );
        assert_eq!(retry_after(Some(S(600)), S(0), S(1), S(60)), 60);
        assert_eq!(retry_after(Some(S(5)), S(30), S(1), S(60)), 1);
    }

    #[test]
    fn ewma_starts_at_first_sample_and_moves_a_fifth() {
        let s = DurationStats::default();
        assert_eq!(s.expected(), None);
        s.record(S(10));
        assert_eq!(s.expected(), Some(S(10)));
        s.record(S(20));
        assert_eq!(s.expected().unwrap().as_secs(), 12);
    }

    #[test]
    fn estimates_stop_short_of_done() {
        assert_eq!(estimated_percent(S(10), S(4)), 40);
        assert_eq!(estimated_percent(S(10), S(100)), 99);
        assert_eq!(estimated_percent(Duration::ZERO, S(1)), 99);
    }
}
