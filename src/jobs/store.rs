//! Where jobs and their results live. Handlers and the runner speak only to
//! [`JobStore`], so a networked store can replace the embedded one.

mod budget;
mod disk;
mod memory;
mod pauses;
mod record;
mod redis;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

pub(crate) use budget::{Budget, Reservation};
pub(crate) use disk::{DiskStore, OpenError};
pub(crate) use memory::MemoryStore;
pub(crate) use redis::RedisStore;

/// The store the config chose.
pub(crate) enum Store {
    /// Jobs run in the process that accepted them, started by its lanes,
    /// and are lost with it.
    Memory(Arc<MemoryStore>),
    /// Likewise, but every job and result is on disk before it is
    /// acknowledged, and a restart carries on from there.
    Disk(Arc<DiskStore>),
    /// Jobs run in whichever replica takes them, started as it takes them.
    Redis(Arc<RedisStore>),
}

use super::id::JobId;
use super::model::{BackendRequest, Job, JobStatus, Outcome, Replay, RetryWait};
use super::owner::Owner;

use crate::delivery::Webhook;
use crate::delivery::{Channel, Delivery};

/// The store failed: whatever was asked did not happen.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    #[error("the store cannot be reached")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the store holds a record it cannot read: {0}")]
    Corrupt(String),
}

/// Why a job was not recorded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CreateError {
    #[error("the result store's byte budget is spent")]
    Full,
    #[error("the queue of upstream `{0}` is full")]
    QueueFull(String),
    #[error("the caller has as many jobs waiting as the route allows")]
    CallerQuota,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a lookup by id found.
#[derive(Debug)]
pub(crate) enum Lookup<T> {
    Found(T),
    /// Expired or deleted, and its tombstone is still kept, with the
    /// binding of a job that had one.
    Gone(Option<Binding>),
    Missing,
}

impl<T> Lookup<T> {
    /// What was found, made into something else; `Gone` and `Missing` stay.
    pub(crate) fn map<U>(self, f: impl FnOnce(T) -> U) -> Lookup<U> {
        match self {
            Lookup::Found(found) => Lookup::Found(f(found)),
            Lookup::Gone(binding) => Lookup::Gone(binding),
            Lookup::Missing => Lookup::Missing,
        }
    }
}

/// A bound job's tombstone keeps whom it answers `410`: the submitter,
/// recognised by its route's credential headers. Anyone else is told
/// `404`, as if the job had never existed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Binding {
    pub(crate) route: Arc<str>,
    pub(crate) owner: Owner,
}

impl Binding {
    pub(crate) fn of(job: &Job) -> Option<Binding> {
        job.owner.map(|owner| Binding {
            route: Arc::clone(&job.route),
            owner,
        })
    }

    /// As a store outside this process keeps it: the digest, then the
    /// route's name.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = self.owner.digest().to_vec();
        bytes.extend_from_slice(self.route.as_bytes());
        bytes
    }

    /// `None` for an empty value (the job was not bound) or one that is not
    /// a binding.
    pub(crate) fn from_bytes(bytes: &[u8]) -> Option<Binding> {
        let (digest, route) = bytes.split_first_chunk::<32>()?;
        Some(Binding {
            route: Arc::from(std::str::from_utf8(route).ok()?),
            owner: Owner::from_digest(*digest),
        })
    }
}

/// A job to record, with what a store that also queues work needs.
pub(crate) struct NewJob<'a> {
    pub(crate) job: Job,
    pub(crate) request: &'a BackendRequest,
    /// The upstream's name and `max_queue`.
    pub(crate) upstream: &'a str,
    pub(crate) max_queue: usize,
    /// Whether the job may be sent again when the replica running it is lost.
    pub(crate) resend_on_loss: bool,
    pub(crate) idempotency: Option<ScopeClaim>,
    /// When it fails (`expired`) if it has not been sent by then: a store
    /// that queues jobs itself keeps it; the others' lanes do.
    pub(crate) start_by: Option<SystemTime>,
    /// Its caller's key and the most jobs that caller may have waiting on
    /// the route: a store that queues jobs itself counts them; the others'
    /// lanes do.
    pub(crate) quota: Option<(&'a str, usize)>,
}

/// The idempotency scope a new job claims along with being recorded.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ScopeClaim {
    pub(crate) scope: [u8; 32],
    pub(crate) fingerprint: [u8; 32],
    /// Take the scope even from another job: that job is gone.
    pub(crate) replace: bool,
}

/// What [`JobStore::create`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Created {
    Recorded,
    /// Nothing was recorded: another job holds the idempotency scope, and
    /// was submitted with this fingerprint.
    Taken {
        job: JobId,
        fingerprint: [u8; 32],
    },
}

/// What a `DELETE` did.
#[derive(Debug)]
pub(crate) enum Cancel {
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
pub(crate) trait JobStore: Send + Sync + 'static {
    /// The id for a new job bound for `upstream`: random, or, for a store
    /// that files jobs by upstream, carrying where they are filed.
    fn new_id(&self, _upstream: &str) -> JobId {
        JobId::random()
    }

    /// Records a new queued job, claiming its idempotency scope in the same
    /// step, so the holder of a scope always exists; refused when the budget
    /// (or, for a store that queues, the upstream's queue) is full.
    async fn create(&self, new: NewJob<'_>) -> Result<Created, CreateError>;

    async fn get(&self, id: JobId) -> Result<Lookup<Job>, StoreError>;

    async fn result(&self, id: JobId) -> Result<Lookup<(Job, Option<Replay>)>, StoreError>;

    /// Running → terminal, if `attempt` is still the job's current one;
    /// otherwise (canceled meanwhile, or taken over by another replica) the
    /// outcome is dropped and `None` returned.
    async fn finish(
        &self,
        id: JobId,
        attempt: u32,
        outcome: Outcome,
    ) -> Result<Option<Job>, StoreError>;

    async fn cancel(&self, id: JobId) -> Result<Lookup<Cancel>, StoreError>;

    /// Running → queued again, because this process stops before the
    /// backend answered (a drain's deadline), if `attempt` is still the
    /// job's; false when it was canceled or taken over meanwhile. An
    /// embedded store keeps it for its next start; a shared one offers it
    /// to the other replicas at once.
    async fn put_back(&self, id: JobId, attempt: u32) -> Result<bool, StoreError>;

    /// Pauses or resumes an upstream, where every process that runs its
    /// jobs, now or after a restart, sees it.
    async fn set_paused(&self, upstream: &str, paused: bool) -> Result<(), StoreError>;

    /// Forgets a job, queued or finished, whose id no client was given:
    /// no tombstone is left.
    async fn discard(&self, id: JobId) -> Result<(), StoreError>;

    /// A client was answered `202` for a job whose webhook was held; true
    /// when the job has already ended, so the caller sends the webhook.
    async fn arm_webhook(&self, id: JobId, hook: &Webhook) -> Result<bool, StoreError>;

    /// Keeps the state of a job's delivery where every replica reads it.
    async fn record_delivery(
        &self,
        id: JobId,
        channel: Channel,
        delivery: &Delivery,
    ) -> Result<(), StoreError>;

    /// The bytes charged to the budget; an error when the store cannot take
    /// work (unreachable, or its last write failed): what readiness asks.
    async fn usage(&self) -> Result<u64, StoreError>;

    /// The shared work queue, for a store that is one; `None` for a store
    /// whose jobs run in the process that accepted them (a [`LocalQueue`]).
    fn work_queue(&self) -> Option<&dyn WorkQueue> {
        None
    }
}

/// A store whose jobs run in the process that accepted them: its lanes
/// start them.
#[async_trait]
pub(crate) trait LocalQueue: Send + Sync {
    /// Queued → running: the attempt's number, or `None` when the job was
    /// canceled while it waited.
    async fn begin(&self, id: JobId, at: SystemTime) -> Result<Option<u32>, StoreError>;

    /// Running → queued again, to be tried at `wait.at`, if `attempt` is
    /// still the job's try; false when it was canceled meanwhile.
    async fn retry(&self, id: JobId, attempt: u32, wait: &RetryWait) -> Result<bool, StoreError>;

    /// What the store found to carry on with when it opened; taken once.
    fn recovered(&self) -> Recovered;
}

/// Why an embedded store's job put back by a drain waits: the `retry`
/// reason its document shows until the next start sends it.
pub(crate) fn put_back_wait() -> RetryWait {
    RetryWait {
        at: SystemTime::now(),
        reason: "the gateway stopped before the backend answered; sent again when it starts"
            .to_owned(),
    }
}

/// What a store found unfinished when it opened.
#[derive(Default)]
pub(crate) struct Recovered {
    /// Queued jobs, oldest first, to put in their lanes again.
    pub(crate) queued: Vec<Requeued>,
    /// Finished jobs with a delivery still due.
    pub(crate) deliveries: Vec<Job>,
    /// The upstreams an operator paused: nothing of theirs starts.
    pub(crate) paused: Vec<String>,
}

/// A queued job found when the store opened, and its request.
pub(crate) struct Requeued {
    pub(crate) id: JobId,
    pub(crate) route: String,
    pub(crate) request: BackendRequest,
    /// When it waits to be tried again.
    pub(crate) not_before: Option<SystemTime>,
    pub(crate) created_at: SystemTime,
    /// Whether it was sent before (tried, or running when the gateway
    /// stopped): such a job no longer waits to start.
    pub(crate) sent: bool,
    /// Its urgency, RFC 9218's `u`.
    pub(crate) priority: u8,
}

/// What one take from the shared queue brought.
#[derive(Default)]
pub(crate) struct Took {
    pub(crate) jobs: Vec<Taken>,
    /// While the upstream is held, nothing is taken: until when.
    pub(crate) held_until: Option<SystemTime>,
    /// Paused by hand: nothing is taken until it is resumed.
    pub(crate) paused: bool,
    /// The upstream's rate allows no start before then: nothing was taken.
    pub(crate) paced_until: Option<SystemTime>,
}

/// A job this replica took from the shared queue and started, and what
/// running it needs.
pub(crate) struct Taken {
    pub(crate) id: JobId,
    pub(crate) route: String,
    pub(crate) request: BackendRequest,
    /// The attempt its outcome must bring back to [`JobStore::finish`].
    pub(crate) attempt: u32,
    /// When it was accepted, for its trace's queue span.
    pub(crate) queued_at: Option<std::time::SystemTime>,
}

/// What the replicas sharing a store tell each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    /// A job's status changed, wherever that happened.
    Status(JobId, JobStatus),
    /// An upstream may have work to take: a job was queued, or a place freed.
    Work(String),
    /// Events may have been missed while the store was out of reach.
    Resumed,
}

/// A queue of jobs shared by several replicas: each job is taken by one
/// replica at a time under a lease it renews while the job runs; a replica
/// that stops renewing loses its jobs to the others.
#[async_trait]
pub(crate) trait WorkQueue: Send + Sync {
    /// Takes up to `count` of the oldest waiting jobs of `upstream`, as
    /// many as keep at most `limits.max_running` of its jobs running across
    /// all replicas and its starts within `limits.rate`, and starts them
    /// under this replica's lease.
    async fn take(
        &self,
        upstream: &str,
        limits: super::lane::Limits,
        count: usize,
    ) -> Result<Took, StoreError>;

    /// Nothing of `upstream` starts, on any replica, before `until`: its
    /// backend asked to be left alone. A later hold already set stands.
    async fn hold(&self, upstream: &str, until: SystemTime) -> Result<(), StoreError>;

    /// Takes over up to `count` jobs of `upstream` whose lease ran out. A
    /// job that may be sent again comes back started, to be run here; one
    /// that may not is failed as lost.
    async fn take_over(&self, upstream: &str, count: usize) -> Result<Vec<Taken>, StoreError>;

    /// Fails, among the oldest `count` waiting jobs of `upstream`, those
    /// past their `start_by`; how many.
    async fn expire(&self, upstream: &str, count: usize) -> Result<usize, StoreError>;

    /// Renews this replica's lease on a running job; false when the lease
    /// was lost (the job was canceled, or taken over).
    async fn renew(&self, id: JobId, attempt: u32) -> Result<bool, StoreError>;

    fn lease(&self) -> Duration;

    /// The events of every replica, this one's included; taken once.
    fn events(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<Event>>;

    /// Takes over up to `count` deliveries on `channel` that their sender
    /// let go of more than `idle` ago (it died, or was stopped): the ended
    /// jobs, each with its deliveries as far as they got, now held by this
    /// replica.
    async fn take_deliveries(
        &self,
        channel: Channel,
        idle: Duration,
        count: usize,
    ) -> Result<Vec<Job>, StoreError>;

    /// Returns the bytes of expired results and tombstones to the budget.
    async fn sweep(&self) -> Result<(), StoreError>;
}
