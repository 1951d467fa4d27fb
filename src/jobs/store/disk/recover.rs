//! Opening the disk store after a restart or a crash: what it must carry on
//! with, and what it must settle first.

use std::path::Path;

use bytes::Bytes;

use super::steps::finish_record;
use super::writer::{key, untimed, ActiveRecords, Db, Space, Tables};
use crate::config::StoreConfig;
use crate::jobs::id::{IdShards, JobId};
use crate::jobs::model::{Failure, Job, JobStatus, Outcome};
use crate::jobs::store::record::{time_of, Record};
use crate::jobs::store::{Recovered, Requeued, StoreError};

pub(super) enum Recovery {
    Db(fjall::Error),
    Store(StoreError),
}

impl From<StoreError> for Recovery {
    fn from(e: StoreError) -> Recovery {
        Recovery::Store(e)
    }
}

/// Reads the budget's count and every unfinished job, in one write batch
/// that also settles the jobs a crash left running: sent again if their
/// route allows, else failed as lost. Never left running.
pub(super) fn recover(
    db: &Db,
    results: &Path,
    config: &StoreConfig,
) -> Result<(u64, Recovered, IdShards<Job>), Recovery> {
    let mut recovered = Recovered::default();
    let active = IdShards::default();
    let mut kept = ActiveRecords::default();
    let mut tables = Tables::begin(db, db.used()?, &mut kept);
    // Oldest first: the order they were accepted in.
    for (timed_key, body) in tables.all(Space::Requests)? {
        let Some((_, k)) = untimed::<16>(&timed_key) else {
            tables.remove(Space::Requests, &timed_key);
            continue;
        };
        let id = JobId::from_bytes(k);
        let Some(bytes) = tables.get(Space::Jobs, &k)? else {
            tables.remove(Space::Requests, &timed_key);
            continue;
        };
        let Some(mut record) = readable(id, &bytes[..], Record::decode) else {
            continue;
        };
        if record.status() == Some(JobStatus::Running) {
            if record.resend_on_loss {
                record.status = JobStatus::Queued.as_str().to_owned();
                tables.put(id, &record);
            } else {
                let outcome = Outcome::failed(Failure::Lost);
                finish_record(
                    &mut tables,
                    id,
                    &mut record,
                    &outcome,
                    false,
                    config.result_ttl,
                )?;
                tracing::warn!(job = %id, "job was running when the gateway stopped and may not be sent twice; failed as lost");
                // Its webhook and Kafka record are due now. The scan of
                // due deliveries below reads what is committed, which this
                // end is not yet.
                if record.delivery_due() {
                    recovered
                        .deliveries
                        .extend(readable(id, &record, |id, r| r.job(id)));
                }
                continue;
            }
        }
        let body = Bytes::copy_from_slice(&body);
        let Some((request, job)) =
            readable(id, &record, |id, r| Ok((r.request(id, body)?, r.job(id)?)))
        else {
            continue;
        };
        recovered.queued.push(Requeued {
            id,
            route: record.route.clone(),
            request,
            not_before: record.retry_at.map(time_of),
            created_at: job.created_at,
            sent: job.attempts > 0,
            priority: job.priority,
        });
        active.lock(id).insert(id, job);
    }
    for (k, _) in tables.all(Space::Hooks)? {
        let Ok(k) = <[u8; 16]>::try_from(&k[..]) else {
            continue;
        };
        let id = JobId::from_bytes(k);
        if let Some(bytes) = tables.get(Space::Jobs, &k)? {
            let job = readable(id, &bytes[..], |id, b| Record::decode(id, b)?.job(id));
            recovered.deliveries.extend(job);
        }
    }
    let used = tables.used;
    tables
        .commit()
        .and_then(|()| db.persist())
        .map_err(Recovery::Db)?;
    remove_orphans(db, results)?;
    Ok((used, recovered, active))
}

/// What `read` makes of a job's record, or `None` when it cannot be read:
/// that job is left as it is (asking for it answers a problem) and the
/// others carry on, rather than one bad record keeping the gateway down.
fn readable<R: ?Sized, T>(
    id: JobId,
    record: &R,
    read: impl FnOnce(JobId, &R) -> Result<T, StoreError>,
) -> Option<T> {
    read(id, record)
        .inspect_err(|e| tracing::error!(job = %id, error = %e, "a record the store cannot read; its job is left as it is"))
        .ok()
}

/// Removes result files no record points at: written just before a crash
/// kept their job from being recorded finished.
fn remove_orphans(db: &Db, results: &Path) -> Result<(), Recovery> {
    let Ok(entries) = std::fs::read_dir(results) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(id) = name.to_str().and_then(JobId::parse) else {
            continue;
        };
        let kept = db
            .get(Space::Jobs, &key(id))?
            .and_then(|v| Record::decode(id, &v).ok())
            .and_then(|r| r.response)
            .is_some_and(|r| r.in_file);
        if !kept {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}
