//! The store's byte budget, kept by hand: moka's own size bound is
//! best-effort and may evict silently, which a result store must never do.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

#[derive(Debug)]
pub(crate) struct Budget {
    used: AtomicU64,
    max: u64,
}

/// Bytes charged to a budget until dropped.
#[derive(Debug)]
pub(crate) struct Reservation {
    budget: Arc<Budget>,
    bytes: u64,
}

impl Budget {
    pub(crate) fn new(max: u64) -> Arc<Budget> {
        Arc::new(Budget {
            used: AtomicU64::new(0),
            max,
        })
    }

    pub(crate) fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Charges `bytes` if they fit.
    pub(crate) fn try_reserve(self: &Arc<Self>, bytes: u64) -> Option<Reservation> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&total| total <= self.max)
            })
            .ok()?;
        Some(Reservation {
            budget: Arc::clone(self),
            bytes,
        })
    }

    /// Charges `bytes` even past the limit: for what was already promised,
    /// such as the result of a job accepted earlier.
    pub(crate) fn force(self: &Arc<Self>, bytes: u64) -> Reservation {
        self.used.fetch_add(bytes, Ordering::AcqRel);
        Reservation {
            budget: Arc::clone(self),
            bytes,
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_return_their_bytes_when_dropped() {
        let b = Budget::new(100);
        let r = b.try_reserve(60).unwrap();
        assert!(b.try_reserve(50).is_none());
        drop(r);
        assert!(b.try_reserve(100).is_some());
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn forced_reservations_may_exceed_the_limit_and_block_new_ones() {
        let b = Budget::new(10);
        let forced = b.force(25);
        assert_eq!(b.used(), 25);
        assert!(b.try_reserve(1).is_none());
        drop(forced);
        assert!(b.try_reserve(10).is_some());
    }
}
