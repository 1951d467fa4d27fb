//! Where jobs and their results live. Handlers and the runner speak only to
//! [`JobStore`], so a networked store can replace the embedded one.

mod budget;
mod memory;

use std::time::SystemTime;

use async_trait::async_trait;

pub use budget::{Budget, Reservation};
pub use memory::MemoryStore;

use super::model::{Job, JobId, Outcome, StoredResponse};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the result store's byte budget is spent")]
    Full,
}

/// What a lookup by id found.
#[derive(Debug)]
pub enum Lookup<T> {
    Found(T),
    /// Expired or deleted, and its tombstone is still kept.
    Gone,
    Missing,
}

/// What claiming an idempotency scope found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The scope is now this job's.
    Won,
    /// Another job holds it, submitted with this fingerprint.
    Taken { job: JobId, fingerprint: [u8; 32] },
}

/// What a `DELETE` did.
#[derive(Debug)]
pub enum Cancel {
    /// It was queued or running and is now canceled.
    Canceled(Job),
    /// It had been canceled before; nothing changed.
    AlreadyCanceled(Job),
    /// It had finished; its result is now deleted.
    Deleted,
}

/// Every method owns its data and is atomic on its own: two transitions of
/// one job never interleave, whichever task or replica makes them.
#[async_trait]
pub trait JobStore: Send + Sync + 'static {
    /// Records a new queued job whose request body holds `request_bytes`,
    /// or refuses it when the budget is spent.
    async fn create(&self, job: Job, request_bytes: u64) -> Result<(), StoreError>;

    async fn get(&self, id: JobId) -> Result<Lookup<Job>, StoreError>;

    async fn result(&self, id: JobId) -> Result<Lookup<(Job, Option<StoredResponse>)>, StoreError>;

    /// Queued → running; `None` when the job is no longer queued (canceled).
    async fn start(&self, id: JobId, at: SystemTime) -> Result<Option<Job>, StoreError>;

    /// Queued or running → terminal; `None` when it already was terminal
    /// (canceled meanwhile), in which case the outcome is dropped.
    async fn finish(&self, id: JobId, outcome: Outcome) -> Result<Option<Job>, StoreError>;

    async fn cancel(&self, id: JobId) -> Result<Lookup<Cancel>, StoreError>;

    /// Claims an idempotency scope for `job` unless another job holds it;
    /// atomic, so of two racing submissions exactly one wins. A claim lasts
    /// as long as a job is kept.
    async fn claim(
        &self,
        scope: [u8; 32],
        job: JobId,
        fingerprint: [u8; 32],
    ) -> Result<Claim, StoreError>;

    /// Gives a scope to `job` whatever held it (its job is gone).
    async fn reclaim(
        &self,
        scope: [u8; 32],
        job: JobId,
        fingerprint: [u8; 32],
    ) -> Result<(), StoreError>;

    /// Forgets a job, queued or finished, whose id no client was given:
    /// no tombstone is left.
    async fn discard(&self, id: JobId) -> Result<(), StoreError>;
}
