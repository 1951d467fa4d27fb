//! Finished jobs as the disk store reads them: from the database, through a
//! cache of the recent ones (weighed by the bytes of their small results),
//! so a poll of a result just finished never touches the disk.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use moka::sync::Cache;

use super::writer::{key, Db, Space};
use crate::body::ReplayBody;
use crate::config::StoreConfig;
use crate::header_block::HeaderBlock;
use crate::jobs::id::{IdHash, JobId};
use crate::jobs::model::{Job, Replay, StoredResponse};
use crate::jobs::store::record::{self, millis_of, Record};
use crate::jobs::store::{Binding, Lookup, StoreError};

pub(super) struct FinishedJobs {
    db: Db,
    /// Where large results live, one file per job.
    results: PathBuf,
    hot: Cache<JobId, Arc<Finished>, IdHash>,
    result_ttl: Duration,
}

pub(super) struct Finished {
    pub(super) job: Job,
    pub(super) response: Option<Kept>,
    expires: SystemTime,
}

/// A finished job's response as the cache keeps it.
pub(super) struct Kept {
    status: http::StatusCode,
    headers: HeaderBlock,
    /// `None` when the body is in a file.
    body: Option<Bytes>,
    bytes: u64,
}

impl FinishedJobs {
    pub(super) fn new(
        db: Db,
        results: PathBuf,
        config: &StoreConfig,
        cache_bytes: u64,
    ) -> FinishedJobs {
        let hot = Cache::builder()
            .weigher(|_: &JobId, f: &Arc<Finished>| {
                let body = f.response.as_ref().map_or(0, |r| {
                    r.headers.size() + r.body.as_ref().map_or(0, Bytes::len)
                });
                u32::try_from(body + 512).unwrap_or(u32::MAX)
            })
            .max_capacity(cache_bytes)
            .time_to_live(config.result_ttl)
            .build_with_hasher(IdHash::default());
        FinishedJobs {
            db,
            results,
            hot,
            result_ttl: config.result_ttl,
        }
    }

    /// A finished job's record, read from the database.
    fn read(&self, id: JobId) -> Result<Lookup<Record>, StoreError> {
        let k = key(id);
        if let Some(bytes) = self.db.get(Space::Jobs, &k)? {
            let record = Record::decode(id, &bytes)?;
            let expired = record
                .expires
                .is_some_and(|at| at <= millis_of(SystemTime::now()));
            if expired {
                return Ok(Lookup::Gone(record.binding()));
            }
            return Ok(Lookup::Found(record));
        }
        self.db.tombstone(&k, millis_of(SystemTime::now()))
    }

    pub(super) fn lookup(&self, id: JobId) -> Result<Lookup<Arc<Finished>>, StoreError> {
        if let Some(f) = self.hot.get(&id) {
            return Ok(if SystemTime::now() < f.expires {
                Lookup::Found(f)
            } else {
                Lookup::Gone(Binding::of(&f.job))
            });
        }
        let record = match self.read(id)? {
            Lookup::Found(found) => found,
            Lookup::Gone(binding) => return Ok(Lookup::Gone(binding)),
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
            Some(mut r) => {
                let (status, headers) = r.head(id)?;
                Some(Kept {
                    status,
                    headers,
                    body: if r.in_file {
                        None
                    } else {
                        Some(Bytes::from(r.body.unwrap_or_default()))
                    },
                    bytes: r.bytes,
                })
            }
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

    pub(super) fn replay(&self, id: JobId, kept: &Kept) -> Result<Replay, StoreError> {
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
    pub(super) fn forget(&self, id: JobId) {
        self.hot.invalidate(&id);
    }

    pub(super) fn cache(&self, job: Job, response: Option<&StoredResponse>, inline: bool) {
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
