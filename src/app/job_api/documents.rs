//! Finished jobs' documents, kept as written. Polling a finished job is the
//! request a job API gets most, and its document no longer changes, so it
//! is written once instead of on every poll. Not kept: unfinished jobs'; a
//! job's with a webhook or Kafka record, whose delivery state changes; a
//! bound job's, whose events link carries a token of its own each time.

use std::sync::Arc;

use bytes::Bytes;
use moka::sync::Cache;

use crate::jobs::id::{IdHash, JobId};
use crate::jobs::model::Job;

pub(crate) struct Documents {
    kept: Cache<JobId, Arc<Kept>, IdHash>,
}

/// A document and the URL prefix it was written with: the same job seen
/// through another host name has other links.
struct Kept {
    prefix: Box<str>,
    json: Bytes,
}

impl Documents {
    /// Keeps documents up to `max_bytes` in all, the least used let go first.
    pub(crate) fn new(max_bytes: u64) -> Documents {
        let kept = Cache::builder()
            .weigher(|_: &JobId, k: &Arc<Kept>| {
                u32::try_from(k.json.len() + k.prefix.len()).unwrap_or(u32::MAX)
            })
            .max_capacity(max_bytes)
            .build_with_hasher(IdHash::default());
        Documents { kept }
    }

    /// `job`'s document with URLs under `prefix`: the one kept, or what
    /// `write` makes (then kept when it will not change).
    pub(super) fn get_or_write(
        &self,
        job: &Job,
        prefix: &str,
        write: impl FnOnce() -> Vec<u8>,
    ) -> Bytes {
        let settled = job.status.is_terminal()
            && job.owner.is_none()
            && job.webhook.is_none()
            && job.kafka.is_none();
        if !settled {
            return Bytes::from(write());
        }
        if let Some(kept) = self.kept.get(&job.id) {
            if *kept.prefix == *prefix {
                return kept.json.clone();
            }
        }
        let json = Bytes::from(write());
        let kept = Kept {
            prefix: prefix.into(),
            json: json.clone(),
        };
        self.kept.insert(job.id, Arc::new(kept));
        json
    }
}
