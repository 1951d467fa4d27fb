//! The embedded store: jobs in flight in a map; finished jobs, and then
//! their tombstones, in one moka cache, so an expired or deleted id answers
//! `410` until its tombstone expires.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use moka::sync::Cache;
use moka::Expiry;

use super::{
    Binding, Budget, Cancel, CreateError, Created, JobStore, LocalQueue, Lookup, NewJob, Recovered,
    Reservation, StoreError,
};
use crate::config::StoreConfig;
use crate::defaults;
use crate::delivery::{Channel, Delivery};
use crate::jobs::id::{IdHash, IdShards, JobId};
use crate::jobs::model::{Job, JobStatus, Outcome, Replay, RetryWait, StoredResponse};
use crate::sync::lock;
use crate::webhook::Webhook;

pub(crate) struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// Queued and running jobs: never evicted, so kept out of the cache.
    active: IdShards<Active>,
    /// One entry per finished job: its result until `result_ttl`, then a
    /// tombstone until `tombstone_ttl`.
    done: Cache<JobId, Done, IdHash>,
    /// When each stored result expires, oldest first. Every result lives
    /// `result_ttl`, so finishing order is expiry order and a queue suffices.
    expiring: Mutex<VecDeque<(Instant, JobId)>>,
    /// Idempotency scope -> the job holding it and its request's fingerprint.
    claims: Cache<[u8; 32], Arc<ClaimEntry>>,
    budget: Arc<Budget>,
    result_ttl: Duration,
}

struct Active {
    job: Job,
    _bytes: Reservation,
}

/// Who holds an idempotency scope, charged to the budget like a tombstone.
struct ClaimEntry {
    job: JobId,
    fingerprint: [u8; 32],
    _bytes: Reservation,
}

struct Finished {
    job: Job,
    response: Option<StoredResponse>,
    /// Past this the result is gone even before the sweeper buries it.
    expires: Instant,
    _bytes: Reservation,
}

/// A cache value: a tag and a pointer, held inline by moka. A tombstone,
/// which outlives its result by far, stays small.
#[derive(Clone)]
enum Done {
    Finished(Arc<Finished>),
    Tombstone(Arc<Tomb>),
}

struct Tomb {
    binding: Option<Binding>,
    /// Holds the tombstone's share of the budget until moka drops it.
    _bytes: Reservation,
}

/// Lets moka drop each entry at the end of its own lifetime. A finished
/// entry is normally replaced by its tombstone when its result expires; its
/// own TTL only bounds how long it could outlive a sweeper that stopped.
struct DoneExpiry {
    result_ttl: Duration,
    tombstone_ttl: Duration,
}

impl DoneExpiry {
    fn ttl(&self, value: &Done) -> Duration {
        match value {
            Done::Finished(_) => self.result_ttl + self.tombstone_ttl,
            Done::Tombstone(_) => self.tombstone_ttl,
        }
    }
}

impl Expiry<JobId, Done> for DoneExpiry {
    fn expire_after_create(&self, _: &JobId, value: &Done, _: Instant) -> Option<Duration> {
        Some(self.ttl(value))
    }

    fn expire_after_update(
        &self,
        _: &JobId,
        value: &Done,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(self.ttl(value))
    }
}

impl MemoryStore {
    /// Must be called inside a tokio runtime: it starts the sweeper that
    /// turns expired results into tombstones and returns their bytes.
    pub(crate) fn new(config: &StoreConfig) -> MemoryStore {
        let expiry = DoneExpiry {
            result_ttl: config.result_ttl,
            tombstone_ttl: config.tombstone_ttl,
        };
        let inner = Arc::new(Inner {
            active: IdShards::default(),
            done: Cache::builder()
                .expire_after(expiry)
                .build_with_hasher(IdHash::default()),
            // As long as a job can be looked up, tombstone included.
            claims: Cache::builder()
                .time_to_live(config.result_ttl + config.tombstone_ttl)
                .build(),
            expiring: Mutex::default(),
            budget: Budget::new(config.max_bytes),
            result_ttl: config.result_ttl,
        });
        tokio::spawn(sweep(Arc::downgrade(&inner)));
        MemoryStore { inner }
    }

    /// Bytes currently charged to the budget.
    pub(crate) fn used_bytes(&self) -> u64 {
        self.inner.budget.used()
    }
}

#[async_trait]
impl LocalQueue for MemoryStore {
    async fn begin(&self, id: JobId, at: SystemTime) -> Result<Option<u32>, StoreError> {
        let mut active = self.inner.active.lock(id);
        Ok(active
            .get_mut(&id)
            .filter(|a| a.job.status == JobStatus::Queued)
            .map(|a| {
                a.job.begin(at);
                a.job.attempts
            }))
    }

    async fn retry(&self, id: JobId, attempt: u32, wait: &RetryWait) -> Result<bool, StoreError> {
        let mut active = self.inner.active.lock(id);
        let Some(a) = active
            .get_mut(&id)
            .filter(|a| a.job.status == JobStatus::Running && a.job.attempts == attempt)
        else {
            return Ok(false);
        };
        a.job.wait_for_retry(wait.clone());
        Ok(true)
    }

    fn durable(&self) -> bool {
        false
    }

    fn recovered(&self) -> Recovered {
        Recovered::default()
    }
}

async fn sweep(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(defaults::STORE_SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        inner.sweep();
    }
}

impl Inner {
    /// Buries every result whose time is up, then lets moka drop what expired.
    fn sweep(&self) {
        let now = Instant::now();
        loop {
            let due = {
                let mut expiring = lock(&self.expiring);
                match expiring.front() {
                    Some(&(at, id)) if at <= now => {
                        expiring.pop_front();
                        id
                    }
                    _ => break,
                }
            };
            if let Some(Done::Finished(f)) = self.done.get(&due) {
                self.bury(due, Binding::of(&f.job));
            }
        }
        self.done.run_pending_tasks();
        self.claims.run_pending_tasks();
    }

    fn claim_entry(&self, job: JobId, fingerprint: [u8; 32]) -> Arc<ClaimEntry> {
        Arc::new(ClaimEntry {
            job,
            fingerprint,
            _bytes: self.budget.force(defaults::TOMBSTONE_BYTES),
        })
    }

    fn bury(&self, id: JobId, binding: Option<Binding>) {
        let tombstone = Done::Tombstone(Arc::new(Tomb {
            binding,
            _bytes: self.budget.force(defaults::TOMBSTONE_BYTES),
        }));
        self.done.insert(id, tombstone);
    }

    /// Moves a job out of `active` into the cache. Runs under the `active`
    /// lock so a reader never finds the job in neither place.
    fn retire(&self, job: Job, response: Option<StoredResponse>) {
        let bytes = defaults::JOB_RECORD_BYTES + response.as_ref().map_or(0, StoredResponse::size);
        let id = job.id;
        let mut expiring = lock(&self.expiring);
        let expires = Instant::now() + self.result_ttl;
        let finished = Done::Finished(Arc::new(Finished {
            job,
            response,
            expires,
            _bytes: self.budget.force(bytes),
        }));
        self.done.insert(id, finished);
        expiring.push_back((expires, id));
    }

    /// What `read` takes from a finished job whose result is still kept;
    /// an expired result or a tombstone is `Gone`.
    fn lookup<T>(&self, id: JobId, read: impl FnOnce(&Finished) -> T) -> Lookup<T> {
        match self.done.get(&id) {
            Some(Done::Finished(f)) if Instant::now() < f.expires => Lookup::Found(read(&f)),
            Some(Done::Finished(f)) => Lookup::Gone(Binding::of(&f.job)),
            Some(Done::Tombstone(t)) => Lookup::Gone(t.binding.clone()),
            None => Lookup::Missing,
        }
    }

    /// A finished job's record and result, if it has not expired.
    fn finished(&self, id: JobId) -> Lookup<(Job, Option<Replay>)> {
        self.lookup(id, |f| {
            (f.job.clone(), f.response.clone().map(Replay::from))
        })
    }
}

#[async_trait]
impl JobStore for MemoryStore {
    async fn create(&self, new: NewJob<'_>) -> Result<Created, CreateError> {
        let bytes = defaults::JOB_RECORD_BYTES + new.request.size();
        let reservation = match self.inner.budget.try_reserve(bytes) {
            Some(r) => r,
            None => {
                // Expired results may still hold bytes until the next sweep.
                self.inner.sweep();
                self.inner
                    .budget
                    .try_reserve(bytes)
                    .ok_or(CreateError::Full)?
            }
        };
        let id = new.job.id;
        // Claimed under the lock that inserts the job, so whoever finds the
        // claim finds its job too.
        let mut active = self.inner.active.lock(id);
        if let Some(claim) = new.idempotency {
            let entry = || self.inner.claim_entry(id, claim.fingerprint);
            let held = if claim.replace {
                let e = entry();
                self.inner.claims.insert(claim.scope, Arc::clone(&e));
                e
            } else {
                self.inner
                    .claims
                    .entry(claim.scope)
                    .or_insert_with(entry)
                    .into_value()
            };
            if held.job != id {
                return Ok(Created::Taken {
                    job: held.job,
                    fingerprint: held.fingerprint,
                });
            }
        }
        active.insert(
            id,
            Active {
                job: new.job,
                _bytes: reservation,
            },
        );
        Ok(Created::Recorded)
    }

    async fn get(&self, id: JobId) -> Result<Lookup<Job>, StoreError> {
        if let Some(a) = self.inner.active.lock(id).get(&id) {
            return Ok(Lookup::Found(a.job.clone()));
        }
        Ok(self.inner.lookup(id, |f| f.job.clone()))
    }

    async fn result(&self, id: JobId) -> Result<Lookup<(Job, Option<Replay>)>, StoreError> {
        if let Some(a) = self.inner.active.lock(id).get(&id) {
            return Ok(Lookup::Found((a.job.clone(), None)));
        }
        Ok(self.inner.finished(id))
    }

    /// One process cannot lose its own lease: `attempt` needs no checking.
    async fn finish(
        &self,
        id: JobId,
        _attempt: u32,
        outcome: Outcome,
    ) -> Result<Option<Job>, StoreError> {
        let mut active = self.inner.active.lock(id);
        let Some(Active { mut job, .. }) = active.remove(&id) else {
            return Ok(None);
        };
        job.finish(&outcome);
        self.inner.retire(job.clone(), outcome.response);
        Ok(Some(job))
    }

    async fn arm_webhook(&self, _id: JobId, hook: &Webhook) -> Result<bool, StoreError> {
        Ok(hook.arm())
    }

    /// Every copy of the job shares its deliveries, their state included.
    async fn record_delivery(
        &self,
        _id: JobId,
        _channel: Channel,
        _delivery: &Delivery,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    async fn usage(&self) -> Result<u64, StoreError> {
        Ok(self.used_bytes())
    }

    async fn discard(&self, id: JobId) -> Result<(), StoreError> {
        if self.inner.active.lock(id).remove(&id).is_none() {
            self.inner.done.invalidate(&id);
        }
        Ok(())
    }

    async fn cancel(&self, id: JobId) -> Result<Lookup<Cancel>, StoreError> {
        let mut active = self.inner.active.lock(id);
        if let Some(Active { mut job, .. }) = active.remove(&id) {
            job.finish(&Outcome::canceled());
            self.inner.retire(job.clone(), None);
            return Ok(Lookup::Found(Cancel::Canceled(job)));
        }
        drop(active);
        // The job record only: its result, about to be deleted, need not be copied.
        Ok(match self.inner.lookup(id, |f| f.job.clone()) {
            Lookup::Found(job) if job.status == JobStatus::Canceled => {
                Lookup::Found(Cancel::AlreadyCanceled(job))
            }
            Lookup::Found(job) => {
                self.inner.bury(id, Binding::of(&job));
                Lookup::Found(Cancel::Deleted)
            }
            Lookup::Gone(binding) => Lookup::Gone(binding),
            Lookup::Missing => Lookup::Missing,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::uri::PathAndQuery;
    use http::{Method, StatusCode};

    use crate::body::ReplayBody;
    use crate::jobs::model::BackendRequest;

    use crate::header_block::HeaderBlock;

    fn config(max_bytes: u64) -> StoreConfig {
        StoreConfig {
            max_bytes,
            result_ttl: Duration::from_secs(60),
            tombstone_ttl: Duration::from_secs(60),
            disk: None,
            redis: None,
        }
    }

    fn response(len: usize) -> StoredResponse {
        StoredResponse {
            status: StatusCode::OK,
            headers: HeaderBlock::default(),
            body: Bytes::from(vec![b'x'; len]),
        }
    }

    fn request() -> BackendRequest {
        BackendRequest {
            method: Method::POST,
            path: PathAndQuery::from_static("/"),
            headers: HeaderBlock::default(),
            body: Bytes::new(),
        }
    }

    async fn record(store: &MemoryStore, job: &Job) -> Result<Created, CreateError> {
        store
            .create(NewJob {
                job: job.clone(),
                request: &request(),
                upstream: "app",
                max_queue: 10,
                resend_on_loss: false,
                idempotency: None,
            })
            .await
    }

    #[tokio::test]
    async fn full_budget_refuses_new_jobs_but_keeps_accepted_results() {
        let store = MemoryStore::new(&config(2 * (defaults::JOB_RECORD_BYTES + request().size())));
        let a = Job::queued(JobId::random(), "r".into(), Method::POST);
        record(&store, &a).await.unwrap();
        let b = Job::queued(JobId::random(), "r".into(), Method::POST);
        record(&store, &b).await.unwrap();
        let c = Job::queued(JobId::random(), "r".into(), Method::POST);
        assert!(matches!(record(&store, &c).await, Err(CreateError::Full)));

        store.begin(a.id, SystemTime::now()).await.unwrap().unwrap();
        store
            .finish(a.id, 1, Outcome::answered(response(10_000)))
            .await
            .unwrap()
            .unwrap();
        let Lookup::Found((_, Some(kept))) = store.result(a.id).await.unwrap() else {
            panic!("the accepted job's result must be stored even over budget");
        };
        assert!(matches!(kept.body, ReplayBody::Bytes(b) if b.len() == 10_000));
    }

    #[tokio::test]
    async fn delete_of_finished_job_leaves_a_tombstone_and_frees_bytes() {
        let store = MemoryStore::new(&config(1 << 20));
        let job = Job::queued(JobId::random(), "r".into(), Method::POST);
        record(&store, &job).await.unwrap();
        store
            .finish(job.id, 1, Outcome::answered(response(1000)))
            .await
            .unwrap();
        let before = store.used_bytes();
        assert!(matches!(
            store.cancel(job.id).await.unwrap(),
            Lookup::Found(Cancel::Deleted)
        ));
        store.inner.sweep();
        assert!(store.used_bytes() < before);
        assert!(matches!(
            store.get(job.id).await.unwrap(),
            Lookup::Gone(None)
        ));
        assert!(matches!(
            store.cancel(job.id).await.unwrap(),
            Lookup::Gone(None)
        ));
    }

    #[tokio::test]
    async fn canceled_jobs_never_start_and_ignore_late_outcomes() {
        let store = MemoryStore::new(&config(1 << 20));
        let job = Job::queued(JobId::random(), "r".into(), Method::POST);
        record(&store, &job).await.unwrap();
        assert!(matches!(
            store.cancel(job.id).await.unwrap(),
            Lookup::Found(Cancel::Canceled(_))
        ));
        assert!(store
            .begin(job.id, SystemTime::now())
            .await
            .unwrap()
            .is_none());
        assert!(store
            .finish(job.id, 1, Outcome::answered(response(1)))
            .await
            .unwrap()
            .is_none());
        assert!(matches!(
            store.cancel(job.id).await.unwrap(),
            Lookup::Found(Cancel::AlreadyCanceled(_))
        ));
        let Lookup::Found(j) = store.get(job.id).await.unwrap() else {
            panic!()
        };
        assert_eq!(j.status, JobStatus::Canceled);
    }
}
