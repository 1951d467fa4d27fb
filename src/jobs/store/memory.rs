//! The embedded store: jobs in flight in one map, finished jobs in
//! [`FinishedJobs`]; both lost when the process exits.

mod finished;

use std::sync::{Arc, Weak};
use std::time::SystemTime;

use async_trait::async_trait;
use moka::sync::Cache;

use super::{
    Budget, Cancel, CreateError, Created, JobStore, LocalQueue, Lookup, NewJob, Recovered,
    Reservation, StoreError,
};
use crate::config::StoreConfig;
use crate::defaults;
use crate::delivery::Webhook;
use crate::delivery::{Channel, Delivery};
use crate::jobs::id::{IdShards, JobId};
use crate::jobs::model::{Job, JobStatus, Outcome, Replay, RetryWait};
use finished::FinishedJobs;

pub(crate) struct MemoryStore {
    inner: Arc<Inner>,
    pauses: super::pauses::Pauses,
}

struct Inner {
    /// Queued and running jobs.
    active: IdShards<Active>,
    finished: FinishedJobs,
    /// Idempotency scope -> the job holding it and its request's fingerprint.
    claims: Cache<[u8; 32], Arc<ClaimEntry>>,
    budget: Arc<Budget>,
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

impl MemoryStore {
    /// Must be called inside a tokio runtime: it starts the sweeper that
    /// turns expired results into tombstones and returns their bytes.
    pub(crate) fn new(config: &StoreConfig) -> MemoryStore {
        let budget = Budget::new(config.max_bytes);
        let inner = Arc::new(Inner {
            active: IdShards::default(),
            finished: FinishedJobs::new(config, Arc::clone(&budget)),
            // As long as a job can be looked up, tombstone included.
            claims: Cache::builder()
                .time_to_live(config.result_ttl + config.tombstone_ttl)
                .build(),
            budget,
        });
        tokio::spawn(sweep(Arc::downgrade(&inner)));
        MemoryStore {
            inner,
            pauses: super::pauses::Pauses::in_memory(),
        }
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
    fn sweep(&self) {
        self.finished.sweep();
        self.active.give_back_room();
        self.claims.run_pending_tasks();
    }

    fn claim_entry(&self, job: JobId, fingerprint: [u8; 32]) -> Arc<ClaimEntry> {
        Arc::new(ClaimEntry {
            job,
            fingerprint,
            _bytes: self.budget.force(defaults::TOMBSTONE_BYTES),
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
        Ok(self.inner.finished.lookup(id, false)?.map(|(job, _)| job))
    }

    async fn result(&self, id: JobId) -> Result<Lookup<(Job, Option<Replay>)>, StoreError> {
        if let Some(a) = self.inner.active.lock(id).get(&id) {
            return Ok(Lookup::Found((a.job.clone(), None)));
        }
        self.inner.finished.lookup(id, true)
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
        self.inner.finished.retire(&job, outcome.response);
        Ok(Some(job))
    }

    async fn put_back(&self, id: JobId, attempt: u32) -> Result<bool, StoreError> {
        LocalQueue::retry(self, id, attempt, &super::put_back_wait()).await
    }

    async fn set_paused(&self, upstream: &str, paused: bool) -> Result<(), StoreError> {
        self.pauses.set(upstream, paused).await
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
            self.inner.finished.discard(id);
        }
        Ok(())
    }

    async fn cancel(&self, id: JobId) -> Result<Lookup<Cancel>, StoreError> {
        let mut active = self.inner.active.lock(id);
        if let Some(Active { mut job, .. }) = active.remove(&id) {
            job.finish(&Outcome::canceled());
            self.inner.finished.retire(&job, None);
            return Ok(Lookup::Found(Cancel::Canceled(job)));
        }
        drop(active);
        self.inner.finished.delete(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use bytes::Bytes;
    use http::uri::PathAndQuery;
    use http::{Method, StatusCode};

    use crate::body::ReplayBody;
    use crate::callback::target::Target;
    use crate::jobs::model::{BackendRequest, StoredResponse};
    use crate::jobs::owner::Owner;

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
                start_by: None,
                quota: None,
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
        // Read first, so it is among the hot jobs when it is deleted.
        assert!(matches!(store.get(job.id).await.unwrap(), Lookup::Found(_)));
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

    /// Records `job`, starts it and finishes it with a 100-byte result.
    async fn answered(store: &MemoryStore, job: &Job) {
        record(store, job).await.unwrap();
        store.begin(job.id, SystemTime::now()).await.unwrap();
        store
            .finish(job.id, 1, Outcome::answered(response(100)))
            .await
            .unwrap();
    }

    /// A finished job with an owner, the store holding it for `result_ttl`
    /// and its tombstone for `tombstone_ttl`.
    async fn finished_bound_job(
        result_ttl: Duration,
        tombstone_ttl: Duration,
    ) -> (MemoryStore, Job) {
        let store = MemoryStore::new(&StoreConfig {
            result_ttl,
            tombstone_ttl,
            ..config(1 << 20)
        });
        let mut job = Job::queued(JobId::random(), "r".into(), Method::POST);
        job.owner = Some(Owner::from_digest([7; 32]));
        answered(&store, &job).await;
        (store, job)
    }

    #[tokio::test]
    async fn an_expired_result_leaves_a_tombstone_that_answers_only_its_owner() {
        let (store, job) = finished_bound_job(Duration::ZERO, Duration::from_secs(3600)).await;
        store.inner.sweep();
        let Lookup::Gone(Some(binding)) = store.get(job.id).await.unwrap() else {
            panic!("an expired result must answer 410 to its owner");
        };
        assert_eq!(Some(binding.owner), job.owner);
        assert_eq!(&*binding.route, "r");
        assert_eq!(store.used_bytes(), defaults::TOMBSTONE_BYTES);
    }

    #[tokio::test]
    async fn an_expired_tombstone_is_forgotten_and_gives_its_bytes_back() {
        let (store, job) = finished_bound_job(Duration::ZERO, Duration::ZERO).await;
        store.inner.sweep();
        assert!(matches!(store.get(job.id).await.unwrap(), Lookup::Missing));
        assert_eq!(store.used_bytes(), 0);
    }

    #[tokio::test]
    async fn a_finished_job_reads_back_whole_and_shares_its_webhook() {
        let store = MemoryStore::new(&config(1 << 20));
        let mut job = Job::queued(JobId::random(), "r".into(), Method::PUT);
        let target = Target::restore("http://127.0.0.1:9/hook").unwrap();
        job.webhook = Some(Arc::new(Webhook::new(target, true)));
        answered(&store, &job).await;
        let Lookup::Found((again, Some(replay))) = store.result(job.id).await.unwrap() else {
            panic!("the finished job and its result must be found");
        };
        assert_eq!(again.status, JobStatus::Succeeded);
        assert_eq!(again.method, Method::PUT);
        assert_eq!(again.attempts, 1);
        assert_eq!(
            again.response.map(|r| (r.status, r.bytes)),
            Some((200, 100))
        );
        assert!(Arc::ptr_eq(
            again.webhook.as_ref().unwrap(),
            job.webhook.as_ref().unwrap()
        ));
        assert_eq!(replay.status, StatusCode::OK);
        assert!(matches!(replay.body, ReplayBody::Bytes(b) if b.len() == 100));
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
