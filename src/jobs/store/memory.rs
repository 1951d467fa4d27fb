//! The embedded store: jobs in flight in a map, finished jobs in moka with
//! their TTL, and tombstones so an expired or deleted id answers `410`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use moka::sync::Cache;
use moka::Expiry;

use super::{Budget, Cancel, JobStore, Lookup, Reservation, StoreError};
use crate::config::StoreConfig;
use crate::defaults;
use crate::jobs::model::{Job, JobId, JobStatus, Outcome, StoredResponse};

pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// Queued and running jobs: never evicted, so kept out of the cache.
    active: Mutex<HashMap<JobId, Active>>,
    finished: Cache<JobId, Arc<Finished>>,
    tombstones: Cache<JobId, Arc<Tombstone>>,
    budget: Arc<Budget>,
    result_ttl: Duration,
    tombstone_ttl: Duration,
}

struct Active {
    job: Job,
    _bytes: Reservation,
}

struct Finished {
    job: Job,
    response: Option<StoredResponse>,
    _bytes: Reservation,
}

struct Tombstone {
    ttl: Duration,
    _bytes: Reservation,
}

/// Each tombstone carries its own lifetime: one laid at finish time covers
/// the result's TTL and then the tombstone TTL; one laid by a delete covers
/// only the tombstone TTL.
struct TombstoneExpiry;

impl Expiry<JobId, Arc<Tombstone>> for TombstoneExpiry {
    fn expire_after_create(
        &self,
        _: &JobId,
        value: &Arc<Tombstone>,
        _: Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }

    fn expire_after_update(
        &self,
        _: &JobId,
        value: &Arc<Tombstone>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

impl MemoryStore {
    /// Must be called inside a tokio runtime: it starts the sweeper that
    /// returns expired results' bytes to the budget.
    pub fn new(config: &StoreConfig) -> MemoryStore {
        let inner = Arc::new(Inner {
            active: Mutex::default(),
            finished: Cache::builder().time_to_live(config.result_ttl).build(),
            tombstones: Cache::builder().expire_after(TombstoneExpiry).build(),
            budget: Budget::new(config.max_bytes),
            result_ttl: config.result_ttl,
            tombstone_ttl: config.tombstone_ttl,
        });
        tokio::spawn(sweep(Arc::downgrade(&inner)));
        MemoryStore { inner }
    }

    /// Bytes currently charged to the budget.
    pub fn used_bytes(&self) -> u64 {
        self.inner.budget.used()
    }
}

/// moka drops expired entries only when it does maintenance, which it does
/// on activity; an idle gateway must still give the bytes back.
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
        self.finished.run_pending_tasks();
        self.tombstones.run_pending_tasks();
    }

    fn active(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, Active>> {
        // A panic while holding the lock cannot leave the map half-updated:
        // every critical section is a single insert or remove.
        self.active
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn bury(&self, id: JobId, ttl: Duration) {
        let tombstone = Tombstone {
            ttl,
            _bytes: self.budget.force(defaults::TOMBSTONE_BYTES),
        };
        self.tombstones.insert(id, Arc::new(tombstone));
    }

    /// Moves a job out of `active` into the finished cache. Runs under the
    /// `active` lock so a reader never finds the job in neither place.
    fn retire(&self, job: Job, response: Option<StoredResponse>) {
        let bytes = defaults::JOB_RECORD_BYTES + response.as_ref().map_or(0, StoredResponse::size);
        let id = job.id;
        let finished = Finished {
            job,
            response,
            _bytes: self.budget.force(bytes),
        };
        self.finished.insert(id, Arc::new(finished));
        self.bury(id, self.result_ttl + self.tombstone_ttl);
    }

    fn lookup(&self, id: JobId) -> Lookup<Arc<Finished>> {
        match self.finished.get(&id) {
            Some(f) => Lookup::Found(f),
            None if self.tombstones.contains_key(&id) => Lookup::Gone,
            None => Lookup::Missing,
        }
    }
}

#[async_trait]
impl JobStore for MemoryStore {
    async fn create(&self, job: Job, request_bytes: u64) -> Result<(), StoreError> {
        let bytes = defaults::JOB_RECORD_BYTES + request_bytes;
        let reservation = match self.inner.budget.try_reserve(bytes) {
            Some(r) => r,
            None => {
                // Expired results may still hold bytes until the next sweep.
                self.inner.sweep();
                self.inner
                    .budget
                    .try_reserve(bytes)
                    .ok_or(StoreError::Full)?
            }
        };
        let active = Active {
            job,
            _bytes: reservation,
        };
        self.inner.active().insert(active.job.id, active);
        Ok(())
    }

    async fn get(&self, id: JobId) -> Result<Lookup<Job>, StoreError> {
        if let Some(a) = self.inner.active().get(&id) {
            return Ok(Lookup::Found(a.job.clone()));
        }
        Ok(match self.inner.lookup(id) {
            Lookup::Found(f) => Lookup::Found(f.job.clone()),
            Lookup::Gone => Lookup::Gone,
            Lookup::Missing => Lookup::Missing,
        })
    }

    async fn result(&self, id: JobId) -> Result<Lookup<(Job, Option<StoredResponse>)>, StoreError> {
        if let Some(a) = self.inner.active().get(&id) {
            return Ok(Lookup::Found((a.job.clone(), None)));
        }
        Ok(match self.inner.lookup(id) {
            Lookup::Found(f) => Lookup::Found((f.job.clone(), f.response.clone())),
            Lookup::Gone => Lookup::Gone,
            Lookup::Missing => Lookup::Missing,
        })
    }

    async fn start(&self, id: JobId, at: SystemTime) -> Result<Option<Job>, StoreError> {
        let mut active = self.inner.active();
        Ok(active
            .get_mut(&id)
            .filter(|a| a.job.status == JobStatus::Queued)
            .map(|a| {
                a.job.start(at);
                a.job.clone()
            }))
    }

    async fn finish(&self, id: JobId, outcome: Outcome) -> Result<Option<Job>, StoreError> {
        let mut active = self.inner.active();
        let Some(Active { mut job, .. }) = active.remove(&id) else {
            return Ok(None);
        };
        job.finish(&outcome);
        self.inner.retire(job.clone(), outcome.response);
        Ok(Some(job))
    }

    async fn cancel(&self, id: JobId) -> Result<Lookup<Cancel>, StoreError> {
        let mut active = self.inner.active();
        if let Some(Active { mut job, .. }) = active.remove(&id) {
            job.finish(&Outcome::canceled());
            self.inner.retire(job.clone(), None);
            return Ok(Lookup::Found(Cancel::Canceled(job)));
        }
        drop(active);
        Ok(match self.inner.lookup(id) {
            Lookup::Found(f) if f.job.status == JobStatus::Canceled => {
                Lookup::Found(Cancel::AlreadyCanceled(f.job.clone()))
            }
            Lookup::Found(_) => {
                self.inner.finished.invalidate(&id);
                self.inner.bury(id, self.inner.tombstone_ttl);
                Lookup::Found(Cancel::Deleted)
            }
            Lookup::Gone => Lookup::Gone,
            Lookup::Missing => Lookup::Missing,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::{HeaderMap, Method, StatusCode};

    fn config(max_bytes: u64) -> StoreConfig {
        StoreConfig {
            kind: crate::config::StoreKind::Memory,
            max_bytes,
            result_ttl: Duration::from_secs(60),
            tombstone_ttl: Duration::from_secs(60),
        }
    }

    fn response(len: usize) -> StoredResponse {
        StoredResponse {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::from(vec![b'x'; len]),
        }
    }

    #[tokio::test]
    async fn full_budget_refuses_new_jobs_but_keeps_accepted_results() {
        let store = MemoryStore::new(&config(2 * defaults::JOB_RECORD_BYTES));
        let a = Job::queued("r".into(), Method::POST);
        store.create(a.clone(), 0).await.unwrap();
        let b = Job::queued("r".into(), Method::POST);
        store.create(b.clone(), 0).await.unwrap();
        let c = Job::queued("r".into(), Method::POST);
        assert!(matches!(store.create(c, 0).await, Err(StoreError::Full)));

        store.start(a.id, SystemTime::now()).await.unwrap().unwrap();
        store
            .finish(a.id, Outcome::answered(response(10_000)))
            .await
            .unwrap()
            .unwrap();
        let Lookup::Found((_, Some(kept))) = store.result(a.id).await.unwrap() else {
            panic!("the accepted job's result must be stored even over budget");
        };
        assert_eq!(kept.body.len(), 10_000);
    }

    #[tokio::test]
    async fn delete_of_finished_job_leaves_a_tombstone_and_frees_bytes() {
        let store = MemoryStore::new(&config(1 << 20));
        let job = Job::queued("r".into(), Method::POST);
        store.create(job.clone(), 0).await.unwrap();
        store
            .finish(job.id, Outcome::answered(response(1000)))
            .await
            .unwrap();
        let before = store.used_bytes();
        assert!(matches!(
            store.cancel(job.id).await.unwrap(),
            Lookup::Found(Cancel::Deleted)
        ));
        store.inner.sweep();
        assert!(store.used_bytes() < before);
        assert!(matches!(store.get(job.id).await.unwrap(), Lookup::Gone));
        assert!(matches!(store.cancel(job.id).await.unwrap(), Lookup::Gone));
    }

    #[tokio::test]
    async fn canceled_jobs_never_start_and_ignore_late_outcomes() {
        let store = MemoryStore::new(&config(1 << 20));
        let job = Job::queued("r".into(), Method::POST);
        store.create(job.clone(), 0).await.unwrap();
        assert!(matches!(
            store.cancel(job.id).await.unwrap(),
            Lookup::Found(Cancel::Canceled(_))
        ));
        assert!(store
            .start(job.id, SystemTime::now())
            .await
            .unwrap()
            .is_none());
        assert!(store
            .finish(job.id, Outcome::answered(response(1)))
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
