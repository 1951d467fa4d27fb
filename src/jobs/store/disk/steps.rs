//! The changes the disk store makes inside a group's write batch, shared by
//! the store's operations, its sweeper and its recovery.

use std::path::Path;
use std::time::{Duration, SystemTime};

use super::writer::{key, le_u64, timed, Space, Tables, EXPIRES_RESULT, EXPIRES_TOMBSTONE};
use crate::defaults;
use crate::jobs::id::JobId;
use crate::jobs::model::{Outcome, StoredResponse};
use crate::jobs::store::record::{millis_of, Record, ResponseRecord};
use crate::jobs::store::StoreError;

/// How many expired entries one sweep removes at most.
const SWEEP_BATCH: usize = 1000;

/// Makes `record` the finished job `outcome` says, in the tables: its
/// request goes, its response body is kept in the record unless `in_file`,
/// its expiry is scheduled and, when a delivery is due, it is listed for a
/// restart to carry on.
pub(super) fn finish_record(
    tables: &mut Tables<'_>,
    id: JobId,
    record: &mut Record,
    outcome: &Outcome,
    in_file: bool,
    result_ttl: Duration,
) -> Result<(), StoreError> {
    let k = key(id);
    let was_active = record.request.is_some();
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
        in_file,
        body: (!in_file).then(|| r.body.to_vec()),
    });
    record.request = None;
    record.expires = Some(expires);
    tables.used = tables.used.saturating_sub(record.charged) + charged;
    record.charged = charged;
    tables.put(id, record);
    if was_active {
        tables.remove(Space::Requests, &timed(record.created, &k));
    }
    tables.insert(Space::Expiry, &timed(expires, &k), &[EXPIRES_RESULT]);
    if record.delivery_due() {
        tables.insert(Space::Hooks, &k, &[]);
    }
    Ok(())
}

/// Deletes a finished job's result and leaves its tombstone.
pub(super) fn bury(
    tables: &mut Tables<'_>,
    id: JobId,
    record: &Record,
    results: &Path,
    tombstone_ttl: Duration,
) -> Result<(), StoreError> {
    let k = key(id);
    tables.remove_record(id);
    tables.remove(Space::Hooks, &k);
    if let Some(expires) = record.expires {
        tables.remove(Space::Expiry, &timed(expires, &k));
    }
    let gone_until = millis_of(SystemTime::now() + tombstone_ttl);
    tables.insert(Space::Gone, &k, &gone_until.to_le_bytes());
    if let Some(binding) = record.binding() {
        tables.insert(Space::GoneBound, &k, &binding.to_bytes());
    }
    tables.insert(Space::Expiry, &timed(gone_until, &k), &[EXPIRES_TOMBSTONE]);
    tables.used = tables.used.saturating_sub(record.charged) + defaults::TOMBSTONE_BYTES;
    if record.response.as_ref().is_some_and(|r| r.in_file) {
        let file = results.join(id.to_string());
        tables.after_commit.push(Box::new(move || {
            let _ = std::fs::remove_file(file);
        }));
    }
    Ok(())
}

/// The expiry of a claim's value: holder (16), fingerprint (32), expiry (8).
pub(super) fn claim_expiry(value: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(value.get(48..56)?.try_into().ok()?))
}

/// Buries results whose time is up and forgets tombstones and idempotency
/// keys whose time is up, a batch at a time. A job with a delivery still
/// under way is kept until `result_ttl` past its next attempt, so that a
/// restart finds the delivery to carry on.
pub(super) fn sweep_due(
    t: &mut Tables<'_>,
    results: &Path,
    result_ttl: Duration,
    tombstone_ttl: Duration,
) -> Result<(), StoreError> {
    let now = millis_of(SystemTime::now());
    for (at, k, what) in t.due::<16>(Space::Expiry, now, SWEEP_BATCH)? {
        t.remove(Space::Expiry, &timed(at, &k));
        let id = JobId::from_bytes(k);
        if what.first() == Some(&EXPIRES_RESULT) {
            if let Some(mut record) = t.record(id)? {
                if record.expires != Some(at) {
                    continue;
                }
                if record.delivery_due() {
                    let next = record.next_delivery().unwrap_or(now).max(now);
                    let keep = next + u64::try_from(result_ttl.as_millis()).unwrap_or(u64::MAX);
                    record.expires = Some(keep);
                    t.put(id, &record);
                    t.insert(Space::Expiry, &timed(keep, &k), &[EXPIRES_RESULT]);
                } else {
                    bury(t, id, &record, results, tombstone_ttl)?;
                }
            }
        } else {
            let until = t.get(Space::Gone, &k)?.map(|v| le_u64(&v));
            if until == Some(at) {
                t.remove(Space::Gone, &k);
                t.remove(Space::GoneBound, &k);
                t.used = t.used.saturating_sub(defaults::TOMBSTONE_BYTES);
            }
        }
    }
    for (at, scope, _) in t.due::<32>(Space::ClaimExpiry, now, SWEEP_BATCH)? {
        t.remove(Space::ClaimExpiry, &timed(at, &scope));
        let held = t.get(Space::Claims, &scope)?;
        if held.as_deref().and_then(claim_expiry) == Some(at) {
            t.remove(Space::Claims, &scope);
            t.used = t.used.saturating_sub(defaults::TOMBSTONE_BYTES);
        }
    }
    Ok(())
}
