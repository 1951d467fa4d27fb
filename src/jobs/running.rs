//! The jobs this process is sending right now: how to stop each one, and
//! how much of its response has arrived.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio_util::sync::CancellationToken;

use super::id::{IdMap, JobId};
use crate::sync::lock;

#[derive(Default)]
pub(super) struct Running {
    live: Mutex<IdMap<Live>>,
}

struct Live {
    cancel: CancellationToken,
    progress: Arc<Progress>,
}

/// How much of a running job's response has arrived.
#[derive(Debug)]
pub(super) struct Progress {
    received: AtomicU64,
    /// `u64::MAX` while the length is unknown.
    total: AtomicU64,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            received: AtomicU64::new(0),
            total: AtomicU64::new(u64::MAX),
        }
    }

    pub(super) fn set_total(&self, bytes: u64) {
        self.total.store(bytes, Ordering::Relaxed);
    }

    pub(super) fn set_received(&self, bytes: u64) {
        self.received.store(bytes, Ordering::Relaxed);
    }

    /// Percent of a response of known length received so far.
    pub(super) fn percent(&self) -> Option<u8> {
        let total = self.total.load(Ordering::Relaxed);
        if total == u64::MAX || total == 0 {
            return None;
        }
        let received = self.received.load(Ordering::Relaxed).min(total);
        Some((received.saturating_mul(100) / total) as u8)
    }
}

impl Running {
    fn live(&self) -> MutexGuard<'_, IdMap<Live>> {
        lock(&self.live)
    }

    /// Records a job as running here until the returned guard drops.
    pub(super) fn register(&self, id: JobId) -> Registration<'_> {
        let live = Live {
            cancel: CancellationToken::new(),
            progress: Arc::new(Progress::new()),
        };
        let registration = Registration {
            running: self,
            id,
            cancel: live.cancel.clone(),
            progress: Arc::clone(&live.progress),
        };
        self.live().insert(id, live);
        registration
    }

    /// Drops a job's backend request if it runs here; whether it did.
    pub(super) fn stop(&self, id: JobId) -> bool {
        match self.live().get(&id) {
            Some(live) => {
                live.cancel.cancel();
                true
            }
            None => false,
        }
    }

    pub(super) fn progress(&self, id: JobId) -> Option<Arc<Progress>> {
        self.live().get(&id).map(|l| Arc::clone(&l.progress))
    }
}

/// A running job's handles; takes it out of the registry when dropped.
pub(super) struct Registration<'a> {
    running: &'a Running,
    id: JobId,
    pub(super) cancel: CancellationToken,
    pub(super) progress: Arc<Progress>,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.running.live().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_is_known_only_with_a_length() {
        let running = Running::default();
        let id = JobId::random();
        let registration = running.register(id);
        assert_eq!(registration.progress.percent(), None);
        registration.progress.set_total(200);
        registration.progress.set_received(50);
        assert_eq!(running.progress(id).and_then(|p| p.percent()), Some(25));
        assert!(running.stop(id));
        assert!(registration.cancel.is_cancelled());
        drop(registration);
        assert!(!running.stop(id));
    }
}
