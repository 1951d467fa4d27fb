//! The memory store's finished jobs, then their tombstones, so an expired or
//! deleted id answers `410` until its tombstone expires. A finished job is
//! kept as its encoded record beside its response's body: with a million
//! results stored, this bookkeeping is what a job costs beyond its result.
//! The map is not a cache (the memory store's results exist nowhere else,
//! so none may go before its time); the jobs read lately are, decoded, in a
//! moka cache of bounded size, since polls of one job come in runs.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;
use moka::sync::Cache;

use crate::config::StoreConfig;
use crate::defaults;
use crate::delivery::Publication;
use crate::delivery::Webhook;
use crate::header_block::HeaderBlock;
use crate::jobs::id::{IdHash, IdMap, IdShards, JobId};
use crate::jobs::model::{Job, JobStatus, Replay, StoredResponse};
use crate::jobs::store::record::Record;
use crate::jobs::store::{Binding, Budget, Cancel, Lookup, Reservation, StoreError};
use crate::room::GiveBack;
use crate::sync::lock;

pub(super) struct FinishedJobs {
    /// One entry per finished job: its result until `result_ttl`, then a
    /// tombstone until `tombstone_ttl`.
    done: IdShards<Box<Done>>,
    /// Finished jobs in the order their results expire. Every result lives
    /// `result_ttl`, so finishing order is expiry order and a queue suffices;
    /// each job's entry in `done` says when.
    expiring: Mutex<VecDeque<JobId>>,
    /// Tombstones in the order they expire, and when: each lives
    /// `tombstone_ttl` from the moment it is laid.
    burying: Mutex<VecDeque<(Instant, JobId)>>,
    /// Finished jobs read lately, decoded; weighed, and dropped at will.
    hot: Cache<JobId, Arc<Decoded>, IdHash>,
    budget: Arc<Budget>,
    result_ttl: Duration,
    tombstone_ttl: Duration,
}

/// Behind one pointer, so the map's slots stay small whatever they hold,
/// and a job's tombstone takes the place of its result in the same
/// allocation.
enum Done {
    Finished(Finished),
    Tombstone(Tomb),
}

struct Finished {
    /// [`Record::finished`], encoded.
    record: Box<[u8]>,
    body: Bytes,
    /// Shared with every copy of the job handed out, so a delivery's state
    /// is seen wherever the job is read.
    webhook: Option<Arc<Webhook>>,
    kafka: Option<Arc<Publication>>,
    /// Past this the result is gone even before the sweeper buries it.
    expires: Instant,
    _bytes: Reservation,
}

/// A finished job's record, decoded: everything but its deliveries and its
/// response's body, which [`Finished`] holds.
struct Decoded {
    job: Job,
    head: Option<(StatusCode, HeaderBlock)>,
}

impl Decoded {
    /// Bytes it holds, for the weigher.
    fn size(&self) -> u32 {
        let head = self.head.as_ref().map_or(0, |(_, h)| h.size());
        u32::try_from(std::mem::size_of::<Decoded>() + self.job.route.len() + head)
            .unwrap_or(u32::MAX)
    }
}

struct Tomb {
    binding: Option<Binding>,
    until: Instant,
    _bytes: Reservation,
}

impl Finished {
    fn decode(&self, id: JobId) -> Result<Decoded, StoreError> {
        let mut record = Record::decode(id, &self.record)?;
        let mut job = record.job(id)?;
        job.webhook = self.webhook.clone();
        job.kafka = self.kafka.clone();
        let head = record.response.as_mut().map(|r| r.head(id)).transpose()?;
        Ok(Decoded { job, head })
    }

    /// The job, and its result when `with_result`, from `decoded`.
    fn read(&self, decoded: &Decoded, with_result: bool) -> (Job, Option<Replay>) {
        let replay = match &decoded.head {
            Some((status, headers)) if with_result => Some(Replay::from(StoredResponse {
                status: *status,
                headers: headers.clone(),
                body: self.body.clone(),
            })),
            _ => None,
        };
        (decoded.job.clone(), replay)
    }

    /// Whom its tombstone will answer `410`. The record was encoded by this
    /// process, so it decodes; were it not to, the tombstone would answer
    /// anyone.
    fn binding(&self, id: JobId) -> Option<Binding> {
        Record::decode(id, &self.record).ok()?.binding()
    }
}

impl FinishedJobs {
    pub(super) fn new(config: &StoreConfig, budget: Arc<Budget>) -> FinishedJobs {
        FinishedJobs {
            done: IdShards::default(),
            expiring: Mutex::default(),
            burying: Mutex::default(),
            hot: Cache::builder()
                .weigher(|_: &JobId, d: &Arc<Decoded>| d.size())
                .max_capacity(defaults::HOT_JOBS_BYTES)
                .build_with_hasher(IdHash::default()),
            budget,
            result_ttl: config.result_ttl,
            tombstone_ttl: config.tombstone_ttl,
        }
    }

    /// Buries every result whose time is up, drops every tombstone whose
    /// time is up, and gives back the room a burst of jobs left behind.
    pub(super) fn sweep(&self) {
        let now = Instant::now();
        // One job per lock, so finishing jobs never wait for a whole sweep.
        loop {
            let mut expiring = lock(&self.expiring);
            let Some(&id) = expiring.front() else { break };
            let mut done = self.done.lock(id);
            if let Some(Done::Finished(f)) = done.get(&id).map(|d| &**d) {
                if f.expires > now {
                    break;
                }
                let binding = f.binding(id);
                self.bury(&mut done, id, binding);
            }
            expiring.pop_front();
        }
        let now = Instant::now();
        loop {
            let id = {
                let mut burying = lock(&self.burying);
                match burying.front() {
                    Some(&(until, id)) if until <= now => {
                        burying.pop_front();
                        id
                    }
                    _ => break,
                }
            };
            let mut done = self.done.lock(id);
            if matches!(done.get(&id).map(|d| &**d), Some(Done::Tombstone(t)) if t.until <= now) {
                done.remove(&id);
            }
        }
        lock(&self.expiring).give_back_room();
        lock(&self.burying).give_back_room();
        self.done.give_back_room();
        self.hot.run_pending_tasks();
    }

    /// Replaces the finished job in `done`, its shard, by its tombstone.
    fn bury(&self, done: &mut IdMap<Box<Done>>, id: JobId, binding: Option<Binding>) {
        let Some(entry) = done.get_mut(&id) else {
            return;
        };
        let mut burying = lock(&self.burying);
        let until = Instant::now() + self.tombstone_ttl;
        **entry = Done::Tombstone(Tomb {
            binding,
            until,
            _bytes: self.budget.force(defaults::TOMBSTONE_BYTES),
        });
        burying.push_back((until, id));
        self.hot.invalidate(&id);
    }

    /// Keeps a job that has just finished. The caller holds the job's
    /// `active` lock, so a reader never finds the job in neither place.
    pub(super) fn retire(&self, job: &Job, response: Option<StoredResponse>) {
        let bytes = defaults::JOB_RECORD_BYTES + response.as_ref().map_or(0, StoredResponse::size);
        let record = Record::finished(job, response.as_ref()).encode();
        let mut expiring = lock(&self.expiring);
        let finished = Finished {
            record: record.into_boxed_slice(),
            body: response.map(|r| r.body).unwrap_or_default(),
            webhook: job.webhook.clone(),
            kafka: job.kafka.clone(),
            expires: Instant::now() + self.result_ttl,
            _bytes: self.budget.force(bytes),
        };
        self.done
            .lock(job.id)
            .insert(job.id, Box::new(Done::Finished(finished)));
        expiring.push_back(job.id);
    }

    /// A finished job whose result is still kept, with its result when
    /// `with_result`; an expired result or a tombstone is `Gone`.
    pub(super) fn lookup(
        &self,
        id: JobId,
        with_result: bool,
    ) -> Result<Lookup<(Job, Option<Replay>)>, StoreError> {
        // The shard stays locked, so no job leaves the cache's sight: one
        // buried or discarded meanwhile would leave a stale entry behind.
        let done = self.done.lock(id);
        let f = match kept(&done, id) {
            Ok(f) => f,
            Err(answer) => return Ok(answer),
        };
        let decoded = match self.hot.get(&id) {
            Some(decoded) => decoded,
            None => {
                let decoded = Arc::new(f.decode(id)?);
                self.hot.insert(id, Arc::clone(&decoded));
                decoded
            }
        };
        Ok(Lookup::Found(f.read(&decoded, with_result)))
    }

    /// Deletes a finished job's result, leaving its tombstone; a canceled
    /// job stays as it is.
    pub(super) fn delete(&self, id: JobId) -> Result<Lookup<Cancel>, StoreError> {
        // Decided and done under one lock, so the sweeper cannot bury the
        // job meanwhile.
        let mut done = self.done.lock(id);
        let f = match kept(&done, id) {
            Ok(f) => f,
            Err(answer) => return Ok(answer),
        };
        // The job record only: its result, about to be deleted, need not be copied.
        let job = f.decode(id)?.job;
        if job.status == JobStatus::Canceled {
            return Ok(Lookup::Found(Cancel::AlreadyCanceled(job)));
        }
        self.bury(&mut done, id, Binding::of(&job));
        Ok(Lookup::Found(Cancel::Deleted))
    }

    /// Forgets a finished job, leaving no tombstone.
    pub(super) fn discard(&self, id: JobId) {
        let mut done = self.done.lock(id);
        done.remove(&id);
        self.hot.invalidate(&id);
    }
}

/// The finished job whose result is still kept, or what to answer instead.
fn kept<T>(done: &IdMap<Box<Done>>, id: JobId) -> Result<&Finished, Lookup<T>> {
    match done.get(&id).map(|d| &**d) {
        Some(Done::Finished(f)) if Instant::now() < f.expires => Ok(f),
        Some(Done::Finished(f)) => Err(Lookup::Gone(f.binding(id))),
        Some(Done::Tombstone(t)) => Err(Lookup::Gone(t.binding.clone())),
        None => Err(Lookup::Missing),
    }
}
