//! Waiting between attempts: exponential, capped, with equal jitter. Half
//! of each step is fixed, so retries never bunch at zero, and half random,
//! so peers that failed together are not hit together again.

use std::time::{Duration, SystemTime};

use http::header::RETRY_AFTER;

/// The wait after the `attempt`-th failure (1 for the first): `initial`,
/// doubling, at most `max`, of which the upper half is random.
pub(crate) fn backoff(initial: Duration, max: Duration, attempt: u32) -> Duration {
    let step = initial
        .saturating_mul(1 << attempt.saturating_sub(1).min(20))
        .min(max);
    let half = step / 2;
    half + half.mul_f64(fastrand::f64())
}

/// A wait from a fixed schedule, stretched by up to a tenth at random so
/// that deliveries that failed together do not all come back together.
pub(crate) fn stretched(step: Duration) -> Duration {
    step + step.mul_f64(fastrand::f64() / 10.0)
}

/// The wait a peer asked for with `Retry-After` (RFC 9110 §10.2.3):
/// seconds, or an HTTP date.
pub(crate) fn asked(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_jitter_and_stops_growing_at_the_cap() {
        let (initial, max) = (Duration::from_secs(1), Duration::from_secs(60));
        for attempt in 1..=12 {
            let step = Duration::from_secs(1 << (attempt - 1)).min(max);
            let wait = backoff(initial, max, attempt);
            assert!(
                wait >= step / 2 && wait <= step,
                "attempt {attempt}: {wait:?}"
            );
        }
        assert!(backoff(initial, max, u32::MAX) <= max);
    }
}
