//! The durable embedded store, the default: every job and result is in a
//! redb database under `path` (large results in files of their own) before
//! it is acknowledged, so a `202` survives a crash. Queued and running jobs
//! are also kept in memory, and recent results in a moka cache of bounded
//! size, so polls rarely touch the disk.

mod record;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use moka::sync::Cache;
use redb::{Database, ReadableDatabase, ReadableTable};

use super::{
    Cancel, CreateError, Created, JobStore, LocalQueue, Lookup, NewJob, Recovered, Requeued,
    StoreError,
};
use crate::body::ReplayBody;
use crate::config::{DiskConfig, StoreConfig};
use crate::defaults;
use crate::header_block::HeaderBlock;
use crate::jobs::id::{IdHash, IdShards, JobId};
use crate::jobs::model::{Failure, Job, JobStatus, Outcome, Replay, StoredResponse};
use crate::sync::lock;
use crate::webhook::{Delivery, Webhook};
use record::{millis_of, HookRecord, Record, ResponseRecord};
use writer::{Tables, Writer, BODIES, EXPIRES_RESULT, EXPIRES_TOMBSTONE, GONE, JOBS, META};

/// How many expired entries one sweep removes at most.
const SWEEP_BATCH: usize = 1000;

pub(crate) struct DiskStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Arc<Database>,
    writer: Writer,
    /// Where large results live, one file per job.
    results: PathBuf,
    /// Queued and running jobs, as they are on disk.
    active: IdShards<Job>,
    /// Recently finished jobs with their results when small, by bytes.
    hot: Cache<JobId, Arc<Finished>, IdHash>,
    recovered: Mutex<Option<Recovered>>,
    max_bytes: u64,
    result_ttl: Duration,
    tombstone_ttl: Duration,
    file_threshold: u64,
}

struct Finished {
    job: Job,
    response: Option<Kept>,
    expires: SystemTime,
}

/// A finished job's response as the cache keeps it.
struct Kept {
    status: http::StatusCode,
    headers: HeaderBlock,
    /// `None` when the body is in a file.
    body: Option<Bytes>,
    bytes: u64,
}

/// Why the store could not open.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpenError {
    #[error("cannot use the store's directory {}", .0.display())]
    Directory(PathBuf, #[source] std::io::Error),
    #[error("another asyncgate already uses the store at {}", .0.display())]
    InUse(PathBuf),
    #[error("cannot open the store's database at {}", .0.display())]
    Database(PathBuf, #[source] redb::Error),
    #[error("the store's database at {} holds a record it cannot read", .0.display())]
    Corrupt(PathBuf, #[source] StoreError),
}

fn unavailable(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Unavailable(Box::new(e.into()))
}

fn key(id: JobId) -> [u8; 16] {
    *id.as_bytes()
}

impl DiskStore {
    /// Opens the store at `disk.path`, making the directory if need be,
    /// and reads what it must carry on with. Must be called inside a tokio
    /// runtime: it starts the sweeper.
    pub(crate) fn open(config: &StoreConfig, disk: &DiskConfig) -> Result<DiskStore, OpenError> {
        let dir = &disk.path;
        let results = dir.join("results");
        std::fs::create_dir_all(&results).map_err(|e| OpenError::Directory(dir.clone(), e))?;
        let file = dir.join("jobs.redb");
        let db = match Database::create(&file) {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(OpenError::InUse(dir.clone()))
            }
            Err(e) => return Err(OpenError::Database(file, e.into())),
        };
        let db = Arc::new(db);
        let (used, recovered, active) = recover(&db, &results, config).map_err(|e| match e {
            Recovery::Db(e) => OpenError::Database(file.clone(), e),
            Recovery::Record(e) => OpenError::Corrupt(file.clone(), e),
        })?;
        let writer = Writer::start(Arc::clone(&db), used)
            .map_err(|e| OpenError::Directory(dir.clone(), e))?;
        let hot = Cache::builder()
            .weigher(|_: &JobId, f: &Arc<Finished>| {
                let body = f.response.as_ref().map_or(0, |r| {
                    r.headers.size() + r.body.as_ref().map_or(0, Bytes::len)
                });
                u32::try_from(body + 512).unwrap_or(u32::MAX)
            })
            .max_capacity(disk.cache_bytes)
            .time_to_live(config.result_ttl)
            .build_with_hasher(IdHash::default());
        let inner = Arc::new(Inner {
            db,
            writer,
            results,
            active,
            hot,
            recovered: Mutex::new(Some(recovered)),
            max_bytes: config.max_bytes,
            result_ttl: config.result_ttl,
            tombstone_ttl: config.tombstone_ttl,
            file_threshold: disk.file_threshold,
        });
        tokio::spawn(sweep(Arc::downgrade(&inner)));
        Ok(DiskStore { inner })
    }
}

enum Recovery {
    Db(redb::Error),
    Record(StoreError),
}

impl<E: Into<redb::Error>> From<E> for Recovery {
    fn from(e: E) -> Recovery {
        Recovery::Db(e.into())
    }
}

/// Reads the budget's count and every unfinished job, in one transaction
/// that also settles the jobs a crash left running: sent again if their
/// route allows, else failed as lost. Never left running.
fn recover(
    db: &Database,
    results: &Path,
    config: &StoreConfig,
) -> Result<(u64, Recovered, IdShards<Job>), Recovery> {
    let txn = db.begin_write()?;
    let mut recovered = Recovered::default();
    let active = IdShards::default();
    let used = {
        let used = txn.open_table(META)?.get("used")?.map_or(0, |v| v.value());
        let mut tables = Tables::open(&txn, used)?;
        let ids: Vec<[u8; 16]> = tables
            .active
            .iter()?
            .map(|entry| entry.map(|(k, _)| *k.value()))
            .collect::<Result<_, _>>()?;
        let mut queued = Vec::new();
        for k in ids {
            let id = JobId::from_bytes(k);
            let Some(bytes) = tables.jobs.get(&k)?.map(|v| v.value().to_vec()) else {
                tables.active.remove(&k)?;
                continue;
            };
            let mut record = Record::decode(id, &bytes).map_err(Recovery::Record)?;
            if record.status() == Some(JobStatus::Running) {
                if record.resend_on_loss {
                    record.status = JobStatus::Queued.as_str().to_owned();
                    tables.jobs.insert(&k, record.encode().as_slice())?;
                } else {
                    let outcome = Outcome::failed(Failure::Lost);
                    finish_record(
                        &mut tables,
                        id,
                        &mut record,
                        &outcome,
                        None,
                        config.result_ttl,
                    )
                    .map_err(Recovery::Record)?;
                    tracing::warn!(job = %id, "job was running when the gateway stopped and may not be sent twice; failed as lost");
                    continue;
                }
            }
            let body = tables
                .bodies
                .get(&k)?
                .map_or_else(Bytes::new, |v| Bytes::copy_from_slice(v.value()));
            let request = record.request(id, body).map_err(Recovery::Record)?;
            let job = record.job(id).map_err(Recovery::Record)?;
            queued.push((
                record.created,
                Requeued {
                    id,
                    route: record.route.clone(),
                    request,
                },
            ));
            active.lock(id).insert(id, job);
        }
        queued.sort_by_key(|(created, _)| *created);
        recovered.queued = queued.into_iter().map(|(_, q)| q).collect();
        let hooks: Vec<[u8; 16]> = tables
            .hooks
            .iter()?
            .map(|entry| entry.map(|(k, _)| *k.value()))
            .collect::<Result<_, _>>()?;
        for k in hooks {
            let id = JobId::from_bytes(k);
            if let Some(bytes) = tables.jobs.get(&k)?.map(|v| v.value().to_vec()) {
                let record = Record::decode(id, &bytes).map_err(Recovery::Record)?;
                recovered
                    .callbacks
                    .push(record.job(id).map_err(Recovery::Record)?);
            }
        }
        let used = tables.used;
        drop(tables);
        txn.open_table(META)?.insert("used", used)?;
        used
    };
    txn.commit()?;
    remove_orphans(db, results)?;
    Ok((used, recovered, active))
}

/// Removes result files no record points at: written just before a crash
/// kept their job from being recorded finished.
fn remove_orphans(db: &Database, results: &Path) -> Result<(), Recovery> {
    let Ok(entries) = std::fs::read_dir(results) else {
        return Ok(());
    };
    let txn = db.begin_read()?;
    let jobs = txn.open_table(JOBS)?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(id) = name.to_str().and_then(JobId::parse) else {
            continue;
        };
        let kept = jobs
            .get(&key(id))?
            .and_then(|v| Record::decode(id, v.value()).ok())
            .and_then(|r| r.response)
            .is_some_and(|r| r.in_file);
        if !kept {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}

/// Makes `record` the finished job `outcome` says, in the tables: its
/// request goes, its (small) response body is kept beside it, its expiry is
/// scheduled and, when a webhook is due, it is listed for a restart to send.
fn finish_record(
    tables: &mut Tables<'_>,
    id: JobId,
    record: &mut Record,
    outcome: &Outcome,
    body_inline: Option<&[u8]>,
    result_ttl: Duration,
) -> Result<(), StoreError> {
    let k = key(id);
    let expires = millis_of(outcome.finished_at + result_ttl);
    let charged =
        defaults::JOB_RECORD_BYTES + outcome.response.as_ref().map_or(0, StoredResponse::size);
    record.status = outcome.status.as_str().to_owned();
    record.finished = Some(millis_of(outcome.finished_at));
    record.failure = outcome.failure.map(|f| f.as_str().to_owned());
    record.response = outcome.response.as_ref().map(|r| ResponseRecord {
        status: r.status.as_u16(),
        headers: r.headers.as_bytes().to_vec(),
        bytes: r.body.len() as u64,
        in_file: body_inline.is_none(),
    });
    record.request = None;
    record.expires = Some(expires);
    tables.used = tables.used.saturating_sub(record.charged) + charged;
    record.charged = charged;
    tables
        .jobs
        .insert(&k, record.encode().as_slice())
        .map_err(unavailable)?;
    match body_inline {
        Some(body) => tables.bodies.insert(&k, body).map(drop),
        None => tables.bodies.remove(&k).map(drop),
    }
    .map_err(unavailable)?;
    tables.active.remove(&k).map_err(unavailable)?;
    tables
        .expiry
        .insert((expires, &k), EXPIRES_RESULT)
        .map_err(unavailable)?;
    if record.hook.as_ref().is_some_and(HookRecord::due) {
        tables.hooks.insert(&k, ()).map_err(unavailable)?;
    }
    Ok(())
}

/// Deletes a finished job's result and leaves its tombstone.
fn bury(
    tables: &mut Tables<'_>,
    id: JobId,
    record: &Record,
    results: &Path,
    tombstone_ttl: Duration,
) -> Result<(), StoreError> {
    let k = key(id);
    tables.jobs.remove(&k).map_err(unavailable)?;
    tables.bodies.remove(&k).map_err(unavailable)?;
    tables.hooks.remove(&k).map_err(unavailable)?;
    if let Some(expires) = record.expires {
        tables.expiry.remove((expires, &k)).map_err(unavailable)?;
    }
    let gone_until = millis_of(SystemTime::now() + tombstone_ttl);
    tables.gone.insert(&k, gone_until).map_err(unavailable)?;
    tables
        .expiry
        .insert((gone_until, &k), EXPIRES_TOMBSTONE)
        .map_err(unavailable)?;
    tables.used = tables.used.saturating_sub(record.charged) + defaults::TOMBSTONE_BYTES;
    if record.response.as_ref().is_some_and(|r| r.in_file) {
        let file = results.join(id.to_string());
        tables.after_commit.push(Box::new(move || {
            let _ = std::fs::remove_file(file);
        }));
    }
    Ok(())
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
    }
}

impl Inner {
    /// Buries results whose time is up and forgets tombstones and
    /// idempotency keys whose time is up, a batch at a time.
    async fn sweep(self: &Arc<Self>) -> Result<(), StoreError> {
        let inner = Arc::clone(self);
        self.writer
            .write(move |t| {
                let now = millis_of(SystemTime::now());
                let due: Vec<(u64, [u8; 16], u8)> = t
                    .expiry
                    .range(..=(now, &[0xff; 16]))
                    .map_err(unavailable)?
                    .take(SWEEP_BATCH)
                    .map(|e| e.map(|(k, v)| (k.value().0, *k.value().1, v.value())))
                    .collect::<Result<_, _>>()
                    .map_err(unavailable)?;
                for (at, k, what) in due {
                    t.expiry.remove((at, &k)).map_err(unavailable)?;
                    let id = JobId::from_bytes(k);
                    if what == EXPIRES_RESULT {
                        let record = t
                            .jobs
                            .get(&k)
                            .map_err(unavailable)?
                            .map(|v| v.value().to_vec());
                        if let Some(record) = record.map(|r| Record::decode(id, &r)).transpose()? {
                            if record.expires == Some(at) {
                                bury(t, id, &record, &inner.results, inner.tombstone_ttl)?;
                            }
                        }
                    } else {
                        let until = t.gone.get(&k).map_err(unavailable)?.map(|v| v.value());
                        if until == Some(at) {
                            t.gone.remove(&k).map_err(unavailable)?;
                            t.used = t.used.saturating_sub(defaults::TOMBSTONE_BYTES);
                        }
                    }
                }
                let claims: Vec<(u64, [u8; 32])> = t
                    .claim_expiry
                    .range(..=(now, &[0xff; 32]))
                    .map_err(unavailable)?
                    .take(SWEEP_BATCH)
                    .map(|e| e.map(|(k, _)| (k.value().0, *k.value().1)))
                    .collect::<Result<_, _>>()
                    .map_err(unavailable)?;
                for (at, scope) in claims {
                    t.claim_expiry.remove((at, &scope)).map_err(unavailable)?;
                    let held = t
                        .claims
                        .get(&scope)
                        .map_err(unavailable)?
                        .map(|v| v.value().to_vec());
                    if held.as_deref().and_then(claim_expiry) == Some(at) {
                        t.claims.remove(&scope).map_err(unavailable)?;
                        t.used = t.used.saturating_sub(defaults::TOMBSTONE_BYTES);
                    }
                }
                Ok(())
            })
            .await
    }

    /// A finished job's record, read from the database.
    fn read(&self, id: JobId) -> Result<Lookup<(Record, Option<Bytes>)>, StoreError> {
        let k = key(id);
        let txn = self.db.begin_read().map_err(unavailable)?;
        let jobs = txn.open_table(JOBS).map_err(unavailable)?;
        if let Some(bytes) = jobs.get(&k).map_err(unavailable)? {
            let record = Record::decode(id, bytes.value())?;
            let expired = record
                .expires
                .is_some_and(|at| at <= millis_of(SystemTime::now()));
            if expired {
                return Ok(Lookup::Gone);
            }
            let bodies = txn.open_table(BODIES).map_err(unavailable)?;
            let body = bodies
                .get(&k)
                .map_err(unavailable)?
                .map(|v| Bytes::copy_from_slice(v.value()));
            return Ok(Lookup::Found((record, body)));
        }
        let gone = txn.open_table(GONE).map_err(unavailable)?;
        let until = gone.get(&k).map_err(unavailable)?.map(|v| v.value());
        Ok(match until {
            Some(at) if at > millis_of(SystemTime::now()) => Lookup::Gone,
            _ => Lookup::Missing,
        })
    }

    fn finished(&self, id: JobId) -> Result<Lookup<Arc<Finished>>, StoreError> {
        if let Some(f) = self.hot.get(&id) {
            return Ok(if SystemTime::now() < f.expires {
                Lookup::Found(f)
            } else {
                Lookup::Gone
            });
        }
        let (record, body) = match self.read(id)? {
            Lookup::Found(found) => found,
            Lookup::Gone => return Ok(Lookup::Gone),
            Lookup::Missing => return Ok(Lookup::Missing),
        };
        let job = record.job(id)?;
        if record.is_active() {
            // Committed, and not yet among the active ones in memory: it was
            // created a moment ago. It is looked up as it is on disk, and not
            // cached, since it will change.
            return Ok(Lookup::Found(Arc::new(Finished {
                job,
                response: None,
                expires: SystemTime::now() + self.result_ttl,
            })));
        }
        let response = match record.response {
            Some(r) => Some(Kept {
                status: http::StatusCode::from_u16(r.status)
                    .map_err(|_| StoreError::Corrupt(format!("job {id}: response status")))?,
                headers: HeaderBlock::from_bytes(Bytes::from(r.headers))
                    .ok_or_else(|| StoreError::Corrupt(format!("job {id}: response headers")))?,
                body: if r.in_file {
                    None
                } else {
                    Some(body.unwrap_or_default())
                },
                bytes: r.bytes,
            }),
            None => None,
        };
        let finished = Arc::new(Finished {
            expires: record.expires.map_or_else(SystemTime::now, record::time_of),
            job,
            response,
        });
        self.hot.insert(id, Arc::clone(&finished));
        Ok(Lookup::Found(finished))
    }

    fn replay(&self, id: JobId, kept: &Kept) -> Result<Replay, StoreError> {
        let body = match &kept.body {
            Some(bytes) => ReplayBody::Bytes(bytes.clone()),
            None => {
                let file = std::fs::File::open(self.results.join(id.to_string()))
                    .map_err(|e| StoreError::Corrupt(format!("job {id}: result file: {e}")))?;
                ReplayBody::File(file, kept.bytes)
            }
        };
        Ok(Replay {
            status: kept.status,
            headers: kept.headers.clone(),
            body,
        })
    }

    /// Forgets a finished job in the cache, so the next lookup reads the
    /// database.
    fn forget(&self, id: JobId) {
        self.hot.invalidate(&id);
    }

    fn cache(&self, job: Job, response: Option<&StoredResponse>, inline: bool) {
        let expires = job.finished_at.unwrap_or_else(SystemTime::now) + self.result_ttl;
        let id = job.id;
        let kept = response.map(|r| Kept {
            status: r.status,
            headers: r.headers.clone(),
            body: inline.then(|| r.body.clone()),
            bytes: r.body.len() as u64,
        });
        self.hot.insert(
            id,
            Arc::new(Finished {
                job,
                response: kept,
                expires,
            }),
        );
    }
}

/// The expiry of a claim's value: holder (16), fingerprint (32), expiry (8).
fn claim_expiry(value: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(value.get(48..56)?.try_into().ok()?))
}

#[async_trait]
impl JobStore for DiskStore {
    async fn create(&self, new: NewJob<'_>) -> Result<Created, CreateError> {
        let inner = &self.inner;
        let charged = defaults::JOB_RECORD_BYTES + new.request.size();
        let id = new.job.id;
        let record = Record::queued(&new.job, new.request, new.resend_on_loss, charged);
        let body = new.request.body.clone();
        let claim = new.idempotency;
        let max = inner.max_bytes;
        let claim_until = millis_of(SystemTime::now() + inner.result_ttl + inner.tombstone_ttl);
        let created = inner
            .writer
            .write(move |t| {
                let k = key(id);
                let mut charge = charged;
                if let Some(claim) = &claim {
                    let held = t
                        .claims
                        .get(&claim.scope)
                        .map_err(unavailable)?
                        .map(|v| v.value().to_vec());
                    if let Some(held) = held.filter(|_| !claim.replace) {
                        if let (Ok(job), Ok(fingerprint)) = (
                            <[u8; 16]>::try_from(&held[..16.min(held.len())]),
                            <[u8; 32]>::try_from(held.get(16..48).unwrap_or_default()),
                        ) {
                            return Ok(Ok(Created::Taken {
                                job: JobId::from_bytes(job),
                                fingerprint,
                            }));
                        }
                    }
                    charge += defaults::TOMBSTONE_BYTES;
                }
                if t.used + charge > max {
                    return Ok(Err(CreateError::Full));
                }
                if let Some(claim) = &claim {
                    let mut value = Vec::with_capacity(56);
                    value.extend_from_slice(&k);
                    value.extend_from_slice(&claim.fingerprint);
                    value.extend_from_slice(&claim_until.to_le_bytes());
                    t.claims
                        .insert(&claim.scope, value.as_slice())
                        .map_err(unavailable)?;
                    t.claim_expiry
                        .insert((claim_until, &claim.scope), ())
                        .map_err(unavailable)?;
                }
                t.jobs
                    .insert(&k, record.encode().as_slice())
                    .map_err(unavailable)?;
                t.bodies.insert(&k, &body[..]).map_err(unavailable)?;
                t.active.insert(&k, ()).map_err(unavailable)?;
                t.used += charge;
                Ok(Ok(Created::Recorded))
            })
            .await??;
        if created == Created::Recorded {
            inner.active.lock(id).insert(id, new.job);
        }
        Ok(created)
    }

    async fn get(&self, id: JobId) -> Result<Lookup<Job>, StoreError> {
        if let Some(job) = self.inner.active.lock(id).get(&id) {
            return Ok(Lookup::Found(job.clone()));
        }
        Ok(match self.inner.finished(id)? {
            Lookup::Found(f) => Lookup::Found(f.job.clone()),
            Lookup::Gone => Lookup::Gone,
            Lookup::Missing => Lookup::Missing,
        })
    }

    async fn result(&self, id: JobId) -> Result<Lookup<(Job, Option<Replay>)>, StoreError> {
        if let Some(job) = self.inner.active.lock(id).get(&id) {
            return Ok(Lookup::Found((job.clone(), None)));
        }
        Ok(match self.inner.finished(id)? {
            Lookup::Found(f) => {
                let replay = f
                    .response
                    .as_ref()
                    .map(|kept| self.inner.replay(id, kept))
                    .transpose()?;
                Lookup::Found((f.job.clone(), replay))
            }
            Lookup::Gone => Lookup::Gone,
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
        let inline = outcome
            .response
            .as_ref()
            .filter(|_| !large)
            .map(|r| r.body.clone());
        let step_outcome = Outcome {
            status: outcome.status,
            finished_at: outcome.finished_at,
            failure: outcome.failure,
            response: outcome.response.as_ref().map(|r| StoredResponse {
                status: r.status,
                headers: r.headers.clone(),
                body: r.body.clone(),
            }),
        };
        let result_ttl = inner.result_ttl;
        let finished = inner
            .writer
            .write(move |t| {
                let k = key(id);
                if t.active.get(&k).map_err(unavailable)?.is_none() {
                    return Ok(false);
                }
                let bytes = t
                    .jobs
                    .get(&k)
                    .map_err(unavailable)?
                    .map(|v| v.value().to_vec());
                let Some(bytes) = bytes else { return Ok(false) };
                let mut record = Record::decode(id, &bytes)?;
                finish_record(
                    t,
                    id,
                    &mut record,
                    &step_outcome,
                    inline.as_deref(),
                    result_ttl,
                )?;
                Ok(true)
            })
            .await?;
        if !finished {
            return Ok(None);
        }
        let Some(mut job) = self.inner.active.lock(id).remove(&id) else {
            return Ok(None);
        };
        job.finish(&outcome);
        self.inner
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
                let bytes = t
                    .jobs
                    .get(&k)
                    .map_err(unavailable)?
                    .map(|v| v.value().to_vec());
                let Some(bytes) = bytes else {
                    let until = t.gone.get(&k).map_err(unavailable)?.map(|v| v.value());
                    return Ok(match until {
                        Some(at) if at > millis_of(now) => Lookup::Gone,
                        _ => Lookup::Missing,
                    });
                };
                let mut record = Record::decode(id, &bytes)?;
                if record.is_active() {
                    let canceled = Outcome::canceled();
                    finish_record(t, id, &mut record, &canceled, Some(b""), result_ttl)?;
                    return Ok(Lookup::Found(Cancel::Canceled(record.job(id)?)));
                }
                if record.expires.is_some_and(|at| at <= millis_of(now)) {
                    return Ok(Lookup::Gone);
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
                self.inner.cache(job.clone(), None, true);
                Lookup::Found(Cancel::Canceled(job))
            }
            Lookup::Found(Cancel::Deleted) => {
                self.inner.forget(id);
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
                let bytes = t
                    .jobs
                    .get(&k)
                    .map_err(unavailable)?
                    .map(|v| v.value().to_vec());
                let Some(bytes) = bytes else { return Ok(()) };
                let record = Record::decode(id, &bytes)?;
                t.jobs.remove(&k).map_err(unavailable)?;
                t.bodies.remove(&k).map_err(unavailable)?;
                t.active.remove(&k).map_err(unavailable)?;
                t.hooks.remove(&k).map_err(unavailable)?;
                if let Some(at) = record.expires {
                    t.expiry.remove((at, &k)).map_err(unavailable)?;
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
        self.inner.forget(id);
        Ok(())
    }

    async fn arm_webhook(&self, id: JobId, hook: &Webhook) -> Result<bool, StoreError> {
        let ended = hook.arm();
        self.update_hook(id, move |h| h.armed = true).await?;
        Ok(ended)
    }

    async fn record_delivery(&self, id: JobId, delivery: &Delivery) -> Result<(), StoreError> {
        let delivery = delivery.clone();
        self.update_hook(id, move |h| h.set(&delivery)).await
    }
}

impl DiskStore {
    /// Changes a job's recorded webhook; lists it for a restart to send
    /// while it is due and the job has ended, and unlists it after.
    async fn update_hook(
        &self,
        id: JobId,
        change: impl FnOnce(&mut HookRecord) + Send + 'static,
    ) -> Result<(), StoreError> {
        self.inner
            .writer
            .write(move |t| {
                let k = key(id);
                let bytes = t
                    .jobs
                    .get(&k)
                    .map_err(unavailable)?
                    .map(|v| v.value().to_vec());
                let Some(bytes) = bytes else { return Ok(()) };
                let mut record = Record::decode(id, &bytes)?;
                let Some(hook) = record.hook.as_mut() else {
                    return Ok(());
                };
                change(hook);
                let listed = hook.due() && !record.is_active();
                t.jobs
                    .insert(&k, record.encode().as_slice())
                    .map_err(unavailable)?;
                if listed {
                    t.hooks.insert(&k, ()).map_err(unavailable)?;
                } else {
                    t.hooks.remove(&k).map_err(unavailable)?;
                }
                Ok(())
            })
            .await
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
                let k = key(id);
                let bytes = t
                    .jobs
                    .get(&k)
                    .map_err(unavailable)?
                    .map(|v| v.value().to_vec());
                let Some(bytes) = bytes else { return Ok(None) };
                let mut record = Record::decode(id, &bytes)?;
                if record.status() != Some(JobStatus::Queued) {
                    return Ok(None);
                }
                record.status = JobStatus::Running.as_str().to_owned();
                record.started = Some(started);
                record.attempts += 1;
                t.jobs
                    .insert(&k, record.encode().as_slice())
                    .map_err(unavailable)?;
                Ok(Some(record.attempts))
            })
            .await?;
        if attempt.is_some() {
            if let Some(job) = self.inner.active.lock(id).get_mut(&id) {
                job.begin(at);
            }
        }
        Ok(attempt)
    }

    fn durable(&self) -> bool {
        true
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
