//! The durable embedded store, the default: every job and result is in a
//! fjall database under `path` (large results in files of their own) before
//! it is acknowledged, so a `202` survives a crash. Queued and running jobs
//! are also kept in memory, and recent results in a moka cache of bounded
//! size, so polls rarely touch the disk.

mod answers;
mod finished;
mod recover;
mod steps;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use super::record::{millis_of, DeliveryRecord, Record};
use super::{
    Cancel, CreateError, Created, JobStore, LocalQueue, Lookup, NewJob, Recovered, StoreError,
};
use crate::config::{DiskConfig, StoreConfig};
use crate::defaults;
use crate::delivery::Webhook;
use crate::delivery::{Channel, Delivery};
use crate::jobs::id::{IdShards, JobId};
use crate::jobs::model::{Job, JobStatus, Outcome, Replay, RetryWait};
use crate::sync::lock;
use finished::FinishedJobs;
use recover::Recovery;
use steps::{bury, finish_record};
use writer::{key, timed, Db, Space, Writer};

pub(crate) struct DiskStore {
    inner: Arc<Inner>,
}

struct Inner {
    writer: Writer,
    /// Finished jobs, from the database through a cache of recent ones.
    finished: FinishedJobs,
    /// Where large results live, one file per job.
    results: PathBuf,
    /// Queued and running jobs, as they are on disk.
    active: IdShards<Job>,
    recovered: Mutex<Option<Recovered>>,
    max_bytes: u64,
    result_ttl: Duration,
    tombstone_ttl: Duration,
    file_threshold: u64,
    pauses: super::pauses::Pauses,
}

/// Why the store could not open.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpenError {
    #[error("cannot use the store's directory {}", .0.display())]
    Directory(PathBuf, #[source] std::io::Error),
    #[error("another asyncgate already uses the store at {}", .0.display())]
    InUse(PathBuf),
    #[error("cannot open the store's database at {}", .0.display())]
    Database(PathBuf, #[source] fjall::Error),
    #[error("cannot carry on with what the store's database at {} holds", .0.display())]
    Recovery(PathBuf, #[source] StoreError),
}

impl DiskStore {
    /// Opens the store at `disk.path`, making the directory if need be,
    /// and reads what it must carry on with. Must be called inside a tokio
    /// runtime: it starts the sweeper.
    pub(crate) fn open(config: &StoreConfig, disk: &DiskConfig) -> Result<DiskStore, OpenError> {
        let dir = &disk.path;
        let results = dir.join("results");
        std::fs::create_dir_all(&results).map_err(|e| OpenError::Directory(dir.clone(), e))?;
        let file = dir.join("db");
        // `cache_bytes` bounds both caches: half for the database's blocks,
        // half for recent results.
        let db = match Db::open(&file, disk.cache_bytes / 2) {
            Ok(db) => db,
            Err(fjall::Error::Locked) => return Err(OpenError::InUse(dir.clone())),
            Err(e) => return Err(OpenError::Database(file, e)),
        };
        let (used, recovered, active) =
            recover::recover(&db, &results, config).map_err(|e| match e {
                Recovery::Db(e) => OpenError::Database(file.clone(), e),
                Recovery::Store(e) => OpenError::Recovery(file.clone(), e),
            })?;
        let writer =
            Writer::start(db.clone(), used).map_err(|e| OpenError::Directory(dir.clone(), e))?;
        let finished = FinishedJobs::new(db, results.clone(), config, disk.cache_bytes / 2);
        let pauses = super::pauses::Pauses::open(dir.join("paused"))
            .map_err(|e| OpenError::Directory(dir.clone(), e))?;
        let recovered = Recovered {
            paused: pauses.list(),
            ..recovered
        };
        let inner = Arc::new(Inner {
            writer,
            finished,
            results,
            active,
            recovered: Mutex::new(Some(recovered)),
            max_bytes: config.max_bytes,
            result_ttl: config.result_ttl,
            tombstone_ttl: config.tombstone_ttl,
            file_threshold: disk.file_threshold,
            pauses,
        });
        tokio::spawn(sweep(Arc::downgrade(&inner)));
        Ok(DiskStore { inner })
    }
}

async fn sweep(inner: std::sync::Weak<Inner>) {
    let mut tick = tokio::time::interval(defaults::STORE_SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        if let Err(e) = inner.sweep().await {
            tracing::warn!(error = %e, "could not sweep the store");
        }
        inner.active.give_back_room();
    }
}

impl Inner {
    /// Buries results whose time is up and forgets tombstones and
    /// idempotency keys whose time is up, a batch at a time.
    async fn sweep(self: &Arc<Self>) -> Result<(), StoreError> {
        let inner = Arc::clone(self);
        self.writer
            .write(move |t| {
                steps::sweep_due(t, &inner.results, inner.result_ttl, inner.tombstone_ttl)
            })
            .await
    }
}

#[async_trait]
impl JobStore for DiskStore {
    async fn create(&self, new: NewJob<'_>) -> Result<Created, CreateError> {
        let inner = &self.inner;
        let charged = defaults::JOB_RECORD_BYTES + new.request.size();
        let id = new.job.id;
        let record = Record::queued(&new.job, new.request, new.resend_on_loss, charged);
        let created = record.created;
        let body = new.request.body.clone();
        let claim = new.idempotency;
        let max = inner.max_bytes;
        let claim_until = millis_of(SystemTime::now() + inner.result_ttl + inner.tombstone_ttl);
        let outcome = inner
            .writer
            .write(move |t| {
                let k = key(id);
                let mut charge = charged;
                if let Some(claim) = &claim {
                    match t.get(Space::Claims, &claim.scope)? {
                        Some(held) if !claim.replace => {
                            let holder = held.get(..16).and_then(|h| <[u8; 16]>::try_from(h).ok());
                            let fingerprint =
                                held.get(16..48).and_then(|f| <[u8; 32]>::try_from(f).ok());
                            let (Some(job), Some(fingerprint)) = (holder, fingerprint) else {
                                return Err(StoreError::Corrupt("an idempotency claim".into()));
                            };
                            return Ok(Ok(Created::Taken {
                                job: JobId::from_bytes(job),
                                fingerprint,
                            }));
                        }
                        // Taken over from a holder that is gone: its charge
                        // carries over.
                        Some(_) => {}
                        None => charge += defaults::TOMBSTONE_BYTES,
                    }
                }
                if t.used + charge > max {
                    return Ok(Err(CreateError::Full));
                }
                if let Some(claim) = &claim {
                    let mut value = Vec::with_capacity(56);
                    value.extend_from_slice(&k);
                    value.extend_from_slice(&claim.fingerprint);
                    value.extend_from_slice(&claim_until.to_le_bytes());
                    t.insert(Space::Claims, &claim.scope, &value);
                    t.insert(Space::ClaimExpiry, &timed(claim_until, &claim.scope), &[]);
                }
                t.put_and_keep(id, record);
                t.insert(Space::Requests, &timed(created, &k), &body);
                t.used += charge;
                Ok(Ok(Created::Recorded))
            })
            .await??;
        if outcome == Created::Recorded {
            inner.active.lock(id).insert(id, new.job);
        }
        Ok(outcome)
    }

    async fn get(&self, id: JobId) -> Result<Lookup<Job>, StoreError> {
        if let Some(job) = self.inner.active.lock(id).get(&id) {
            return Ok(Lookup::Found(job.clone()));
        }
        Ok(self.inner.finished.lookup(id)?.map(|f| f.job.clone()))
    }

    async fn result(&self, id: JobId) -> Result<Lookup<(Job, Option<Replay>)>, StoreError> {
        if let Some(job) = self.inner.active.lock(id).get(&id) {
            return Ok(Lookup::Found((job.clone(), None)));
        }
        Ok(match self.inner.finished.lookup(id)? {
            Lookup::Found(f) => {
                let replay = f
                    .response
                    .as_ref()
                    .map(|kept| self.inner.finished.replay(id, kept))
                    .transpose()?;
                Lookup::Found((f.job.clone(), replay))
            }
            Lookup::Gone(binding) => Lookup::Gone(binding),
            Lookup::Missing => Lookup::Missing,
        })
    }

    async fn finish(
        &self,
        id: JobId,
        _attempt: u32,
        outcome: Outcome,
    ) -> Result<Option<Job>, StoreError> {
        let inner = Arc::clone(&self.inner);
        let large = outcome
            .response
            .as_ref()
            .is_some_and(|r| r.body.len() as u64 > inner.file_threshold);
        if large {
            let file = inner.results.join(id.to_string());
            let body = outcome
                .response
                .as_ref()
                .map(|r| r.body.clone())
                .unwrap_or_default();
            tokio::task::spawn_blocking(move || write_durably(&file, &body))
                .await
                .map_err(|e| StoreError::Unavailable(Box::new(e)))?
                .map_err(|e| StoreError::Unavailable(Box::new(e)))?;
        }
        // Its parts are shared, not copied.
        let step_outcome = outcome.clone();
        let result_ttl = inner.result_ttl;
        let finished = inner
            .writer
            .write(move |t| {
                let Some(mut record) = t.record(id).map(|r| r.filter(Record::is_active))? else {
                    return Ok(false);
                };
                finish_record(t, id, &mut record, &step_outcome, large, result_ttl)?;
                Ok(true)
            })
            .await?;
        if !finished {
            // Canceled meanwhile: the file written for its result is nobody's.
            if large {
                let _ = std::fs::remove_file(inner.results.join(id.to_string()));
            }
            return Ok(None);
        }
        let Some(mut job) = self.inner.active.lock(id).remove(&id) else {
            return Ok(None);
        };
        job.finish(&outcome);
        self.inner
            .finished
            .cache(job.clone(), outcome.response.as_ref(), !large);
        Ok(Some(job))
    }

    async fn cancel(&self, id: JobId) -> Result<Lookup<Cancel>, StoreError> {
        let inner = Arc::clone(&self.inner);
        let results = inner.results.clone();
        let (result_ttl, tombstone_ttl) = (inner.result_ttl, inner.tombstone_ttl);
        let now = SystemTime::now();
        let done = inner
            .writer
            .write(move |t| {
                let k = key(id);
                let Some(mut record) = t.record(id)? else {
                    return t.tombstone(&k, millis_of(now));
                };
                if record.is_active() {
                    let canceled = Outcome::canceled();
                    finish_record(t, id, &mut record, &canceled, false, result_ttl)?;
                    return Ok(Lookup::Found(Cancel::Canceled(record.job(id)?)));
                }
                if record.expires.is_some_and(|at| at <= millis_of(now)) {
                    return Ok(Lookup::Gone(record.binding()));
                }
                if record.status() == Some(JobStatus::Canceled) {
                    return Ok(Lookup::Found(Cancel::AlreadyCanceled(record.job(id)?)));
                }
                bury(t, id, &record, &results, tombstone_ttl)?;
                Ok(Lookup::Found(Cancel::Deleted))
            })
            .await?;
        Ok(match done {
            Lookup::Found(Cancel::Canceled(recorded)) => {
                // The job as this process holds it, webhook handoff included.
                let job = match self.inner.active.lock(id).remove(&id) {
                    Some(mut job) => {
                        job.finish(&Outcome {
                            finished_at: recorded.finished_at.unwrap_or(now),
                            ..Outcome::canceled()
                        });
                        job
                    }
                    None => recorded,
                };
                self.inner.finished.cache(job.clone(), None, true);
                Lookup::Found(Cancel::Canceled(job))
            }
            Lookup::Found(Cancel::Deleted) => {
                self.inner.finished.forget(id);
                Lookup::Found(Cancel::Deleted)
            }
            other => other,
        })
    }

    async fn discard(&self, id: JobId) -> Result<(), StoreError> {
        let results = self.inner.results.clone();
        self.inner
            .writer
            .write(move |t| {
                let k = key(id);
                let Some(record) = t.record(id)? else {
                    return Ok(());
                };
                t.remove_record(id);
                if record.request.is_some() {
                    t.remove(Space::Requests, &timed(record.created, &k));
                }
                t.remove(Space::Hooks, &k);
                if let Some(at) = record.expires {
                    t.remove(Space::Expiry, &timed(at, &k));
                }
                t.used = t.used.saturating_sub(record.charged);
                if record.response.is_some_and(|r| r.in_file) {
                    let file = results.join(id.to_string());
                    t.after_commit.push(Box::new(move || {
                        let _ = std::fs::remove_file(file);
                    }));
                }
                Ok(())
            })
            .await?;
        self.inner.active.lock(id).remove(&id);
        self.inner.finished.forget(id);
        Ok(())
    }

    async fn put_back(&self, id: JobId, attempt: u32) -> Result<bool, StoreError> {
        LocalQueue::retry(self, id, attempt, &super::put_back_wait()).await
    }

    async fn set_paused(&self, upstream: &str, paused: bool) -> Result<(), StoreError> {
        self.inner.pauses.set(upstream, paused).await
    }

    async fn arm_webhook(&self, id: JobId, hook: &Webhook) -> Result<bool, StoreError> {
        let ended = hook.arm();
        self.update_deliveries(id, move |r| {
            if let Some(hook) = r.hook.as_mut() {
                hook.armed = true;
            }
        })
        .await?;
        Ok(ended)
    }

    async fn record_delivery(
        &self,
        id: JobId,
        channel: Channel,
        delivery: &Delivery,
    ) -> Result<(), StoreError> {
        let recorded = DeliveryRecord::of(delivery);
        self.update_deliveries(id, move |r| {
            if let Some(d) = r.delivery_mut(channel) {
                *d = recorded;
            }
        })
        .await
    }

    async fn usage(&self) -> Result<u64, StoreError> {
        self.inner.writer.usage()
    }
}

impl DiskStore {
    /// Changes a job's recorded deliveries; lists the job for a restart to
    /// carry on while one is due and the job has ended, and unlists it
    /// after.
    async fn update_deliveries(
        &self,
        id: JobId,
        change: impl FnOnce(&mut Record) + Send + 'static,
    ) -> Result<(), StoreError> {
        self.inner
            .writer
            .write(move |t| {
                let k = key(id);
                let Some(mut record) = t.record(id)? else {
                    return Ok(());
                };
                change(&mut record);
                let listed = record.delivery_due();
                t.put(id, &record);
                if listed {
                    t.insert(Space::Hooks, &k, &[]);
                } else {
                    t.remove(Space::Hooks, &k);
                }
                Ok(())
            })
            .await?;
        // A copy cached from disk carries deliveries of its own, not those
        // being made (after a restart they differ): the next read
        // takes the state just written.
        self.inner.finished.forget(id);
        Ok(())
    }
}

#[async_trait]
impl LocalQueue for DiskStore {
    async fn begin(&self, id: JobId, at: SystemTime) -> Result<Option<u32>, StoreError> {
        let started = millis_of(at);
        let attempt = self
            .inner
            .writer
            .write(move |t| {
                let Some(mut record) = t.record(id)? else {
                    return Ok(None);
                };
                if record.status() != Some(JobStatus::Queued) {
                    return Ok(None);
                }
                record.retry_at = None;
                record.retry_reason = None;
                record.status = JobStatus::Running.as_str().to_owned();
                record.started = Some(started);
                record.attempts += 1;
                let attempt = record.attempts;
                t.put_and_keep(id, record);
                Ok(Some(attempt))
            })
            .await?;
        if attempt.is_some() {
            if let Some(job) = self.inner.active.lock(id).get_mut(&id) {
                job.begin(at);
            }
        }
        Ok(attempt)
    }

    async fn retry(&self, id: JobId, attempt: u32, wait: &RetryWait) -> Result<bool, StoreError> {
        let (at, reason) = (millis_of(wait.at), wait.reason.clone());
        let waiting = self
            .inner
            .writer
            .write(move |t| {
                let Some(mut record) = t.record(id)? else {
                    return Ok(false);
                };
                if record.status() != Some(JobStatus::Running) || record.attempts != attempt {
                    return Ok(false);
                }
                record.status = JobStatus::Queued.as_str().to_owned();
                record.retry_at = Some(at);
                record.retry_reason = Some(reason);
                t.put_and_keep(id, record);
                Ok(true)
            })
            .await?;
        if waiting {
            if let Some(job) = self.inner.active.lock(id).get_mut(&id) {
                job.wait_for_retry(wait.clone());
            }
        }
        Ok(waiting)
    }

    fn recovered(&self) -> Recovered {
        lock(&self.inner.recovered).take().unwrap_or_default()
    }
}

/// Writes a file and makes it durable before its record says it is there.
fn write_durably(path: &Path, body: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::File::create(path)?;
    file.write_all(body)?;
    file.sync_all()
}
