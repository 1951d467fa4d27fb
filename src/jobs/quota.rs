//! How many jobs each caller has waiting on a route, for the route's
//! `max_queued_per_caller`: a place in the count is a ticket a waiting job
//! holds, given back when the ticket is dropped (the job starts, ends, or
//! is refused), so no path can leak one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use crate::sync::lock;

/// Waiting jobs by caller key.
#[derive(Default)]
pub(crate) struct Quotas(Mutex<HashMap<String, usize>>);

/// One waiting job's place in its caller's count.
pub(crate) struct Ticket {
    quotas: Arc<Quotas>,
    key: String,
}

/// The key a caller's jobs on a route are counted under: a digest of the
/// route and the job's credentials (all unbound jobs of a route share
/// one), never the credentials themselves.
pub(crate) fn caller_key(route: &str, credentials: Option<&[u8]>) -> String {
    let mut hasher = Sha256::new();
    hasher.update(route.as_bytes());
    hasher.update([0]);
    hasher.update(credentials.unwrap_or_default());
    let digest = hasher.finalize();
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

impl Quotas {
    /// A place for one more job of `key`, if it has fewer than `max`.
    pub(crate) fn take(self: &Arc<Self>, key: &str, max: usize) -> Option<Ticket> {
        let mut counts = lock(&self.0);
        let count = counts.entry(key.to_owned()).or_default();
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(self.ticket(key))
    }

    fn ticket(self: &Arc<Self>, key: &str) -> Ticket {
        Ticket {
            quotas: Arc::clone(self),
            key: key.to_owned(),
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut counts = lock(&self.quotas.0);
        if let Some(count) = counts.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_has_at_most_max_places_given_back_when_dropped() {
        let quotas = Arc::new(Quotas::default());
        let a = caller_key("r", Some(b"authorization\0Bearer a\0"));
        let b = caller_key("r", Some(b"authorization\0Bearer b\0"));
        assert_ne!(a, b);
        assert_eq!(caller_key("r", None), caller_key("r", None));
        let first = quotas.take(&a, 2).unwrap();
        let _second = quotas.take(&a, 2).unwrap();
        assert!(quotas.take(&a, 2).is_none());
        assert!(quotas.take(&b, 2).is_some(), "another caller has its own");
        drop(first);
        let _again = quotas.take(&a, 2).unwrap();
        assert!(quotas.take(&a, 2).is_none());
    }
}
