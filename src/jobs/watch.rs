//! Who waits on which job: a watch channel per unfinished job, which its
//! state changes wake, so long-polls and event streams never poll.

use tokio::sync::watch;

use super::id::{IdShards, JobId};
use super::model::JobStatus;
use crate::room::GiveBack;

pub(super) struct Watches {
    /// A job's sender goes once the job is finished.
    changes: IdShards<watch::Sender<JobStatus>>,
    /// Whether the store is shared: then other replicas change jobs too,
    /// and a job may be watched here that was never opened here.
    shared: bool,
}

impl Watches {
    pub(super) fn new(shared: bool) -> Watches {
        Watches {
            changes: IdShards::default(),
            shared,
        }
    }

    /// Starts following a job that is about to be created, so no change to
    /// it goes unseen, even one another replica makes at once.
    pub(super) fn open(&self, id: JobId) -> watch::Receiver<JobStatus> {
        let (tx, rx) = watch::channel(JobStatus::Queued);
        self.changes.lock(id).insert(id, tx);
        rx
    }

    /// Stops following a job: it was never created, or it was discarded.
    pub(super) fn close(&self, id: JobId) {
        self.changes.lock(id).remove(&id);
    }

    /// A view of a job's status changes, from `seen` on. Whoever waits on
    /// it should look at the job once more after subscribing: a change made
    /// before the subscription (here or by another replica) is not replayed.
    pub(super) fn subscribe(&self, id: JobId, seen: JobStatus) -> watch::Receiver<JobStatus> {
        let mut changes = self.changes.lock(id);
        match changes.get(&id) {
            Some(tx) => tx.subscribe(),
            // Here every unfinished job has its channel until it ends; one
            // that has none has just ended, as a second look will show.
            None if seen.is_terminal() || !self.shared => watch::channel(seen).1,
            None => {
                let (tx, rx) = watch::channel(seen);
                changes.insert(id, tx);
                rx
            }
        }
    }

    /// Tells waiters that a job's status changed; a finished job's channel goes.
    pub(super) fn announce(&self, id: JobId, status: JobStatus) {
        let mut changes = self.changes.lock(id);
        if let Some(tx) = changes.get(&id) {
            tx.send_replace(status);
        }
        if status.is_terminal() {
            changes.remove(&id);
            changes.give_back_room();
        }
    }

    /// Forgets the channels nobody waits on any more: those of jobs that
    /// ended out of this replica's sight.
    pub(super) fn prune(&self) {
        self.changes.retain(|_, tx| tx.receiver_count() > 0);
    }

    /// The jobs someone here follows.
    pub(super) fn ids(&self) -> Vec<JobId> {
        self.changes.ids()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finished_job_wakes_its_waiters_and_lets_its_channel_go() {
        let watches = Watches::new(false);
        let id = JobId::random();
        let mut rx = watches.open(id);
        watches.announce(id, JobStatus::Running);
        assert_eq!(*rx.borrow_and_update(), JobStatus::Running);
        watches.announce(id, JobStatus::Succeeded);
        assert_eq!(*rx.borrow_and_update(), JobStatus::Succeeded);
        assert!(watches.ids().is_empty());
    }

    #[test]
    fn with_a_shared_store_a_job_from_elsewhere_can_be_followed() {
        let local = Watches::new(false);
        let shared = Watches::new(true);
        let id = JobId::random();
        drop(local.subscribe(id, JobStatus::Running));
        assert!(local.ids().is_empty());
        let rx = shared.subscribe(id, JobStatus::Running);
        assert_eq!(shared.ids(), vec![id]);
        drop(rx);
        shared.prune();
        assert!(shared.ids().is_empty());
    }
}
