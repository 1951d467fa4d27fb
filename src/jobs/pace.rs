//! Pacing an upstream's job starts to its `rate`: the generic cell rate
//! algorithm (GCRA), whose one state is when the next start would be
//! exactly on time. A start is allowed when that is no further ahead than
//! the burst's tolerance; it moves the time on by one interval. The Redis
//! store runs the same arithmetic in its take script, for all replicas.

use std::time::{Duration, Instant};

use crate::config::Rate;

#[derive(Debug)]
pub(super) struct Pace {
    interval: Duration,
    /// How far ahead of now the next on-time start may be and still start:
    /// `burst - 1` intervals.
    tolerance: Duration,
    on_time: Instant,
}

impl Pace {
    pub(super) fn new(rate: Rate, now: Instant) -> Pace {
        let mut pace = Pace {
            interval: Duration::ZERO,
            tolerance: Duration::ZERO,
            on_time: now,
        };
        pace.set(rate);
        pace
    }

    /// A new rate, from a reload; the starts already made still count.
    pub(super) fn set(&mut self, rate: Rate) {
        self.interval = rate.interval();
        self.tolerance = rate.tolerance();
    }

    /// Uses up one start at `now` if the rate allows it; else when it will.
    pub(super) fn take(&mut self, now: Instant) -> Result<(), Instant> {
        let on_time = self.on_time.max(now);
        if on_time > now + self.tolerance {
            return Err(on_time - self.tolerance);
        }
        self.on_time = on_time + self.interval;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(count: u32, burst: u32) -> Rate {
        Rate {
            count,
            per: Duration::from_secs(1),
            burst,
        }
    }

    #[test]
    fn a_burst_then_one_start_per_interval() {
        let t0 = Instant::now();
        let mut pace = Pace::new(rate(10, 3), t0);
        for _ in 0..3 {
            assert_eq!(pace.take(t0), Ok(()));
        }
        let next = t0 + Duration::from_millis(100);
        assert_eq!(pace.take(t0), Err(next));
        assert_eq!(pace.take(next - Duration::from_millis(1)), Err(next));
        assert_eq!(pace.take(next), Ok(()));
        assert_eq!(pace.take(next), Err(next + Duration::from_millis(100)));
    }

    #[test]
    fn a_quiet_spell_earns_no_more_than_the_burst() {
        let t0 = Instant::now();
        let mut pace = Pace::new(rate(10, 2), t0);
        let later = t0 + Duration::from_secs(60);
        assert_eq!(pace.take(later), Ok(()));
        assert_eq!(pace.take(later), Ok(()));
        assert!(pace.take(later).is_err());
    }

    #[test]
    fn a_burst_of_one_spaces_every_start() {
        let t0 = Instant::now();
        let mut pace = Pace::new(rate(4, 1), t0);
        assert_eq!(pace.take(t0), Ok(()));
        assert_eq!(pace.take(t0), Err(t0 + Duration::from_millis(250)));
    }
}
