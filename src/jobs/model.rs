//! What a job is: its id, its lifecycle, and what it ended with.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use bytes::Bytes;
use http::{Method, StatusCode};
use uuid::Uuid;

use super::owner::Owner;
use crate::proxy::header_block::HeaderBlock;
use crate::sync::lock;
use crate::webhook::Webhook;

/// A random (v4) UUID; printed and parsed only in canonical lowercase form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobId(Uuid);

impl JobId {
    /// One word of the id's random bits.
    fn word(&self) -> u64 {
        let (high, low) = self.0.as_u64_pair();
        high ^ low.rotate_left(32)
    }
}

/// The id's random word: enough for a hash table, see [`IdHasher`].
impl Hash for JobId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.word());
    }
}

/// Hashes job ids as they are. Every id a table holds was drawn by a
/// gateway from a CSPRNG, so no client can choose ids that collide, and
/// SipHash's defence would cost every lookup for nothing.
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write_u64(&mut self, word: u64) {
        self.0 = word;
    }

    /// Only [`JobId`]'s own `write_u64` is expected; anything else is
    /// folded in FxHash's way rather than dropped.
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// What tables keyed by job id hash with.
pub type IdHash = BuildHasherDefault<IdHasher>;

/// A map keyed by job id.
pub type IdMap<V> = HashMap<JobId, V, IdHash>;

/// A map keyed by job id in shards, each behind its own lock, for maps that
/// hold every unfinished job. A table that doubles rehashes all its entries
/// while its lock is held: with one table and a backlog of a few hundred
/// thousand jobs, that stalled every submission for tens of milliseconds.
/// A shard rehashes a sixty-fourth as much, and the workers rarely wait on
/// each other.
pub struct IdShards<V> {
    shards: Box<[Mutex<IdMap<V>>]>,
}

impl<V> IdShards<V> {
    const SHARDS: usize = 64;

    /// The shard that holds `id`, locked.
    pub fn lock(&self, id: JobId) -> MutexGuard<'_, IdMap<V>> {
        // Bits well above those a shard's table indexes its buckets with,
        // and below the seven it keeps as tags: each shard still spreads
        // its ids over all of its buckets.
        lock(&self.shards[(id.word() >> 40) as usize % Self::SHARDS])
    }

    /// Keeps the entries `keep` says to, one shard at a time.
    pub fn retain(&self, mut keep: impl FnMut(&JobId, &mut V) -> bool) {
        for shard in &*self.shards {
            lock(shard).retain(&mut keep);
        }
    }

    /// The ids in the map, one shard at a time: ids added meanwhile may be missed.
    pub fn ids(&self) -> Vec<JobId> {
        self.shards
            .iter()
            .flat_map(|shard| lock(shard).keys().copied().collect::<Vec<_>>())
            .collect()
    }
}

impl<V> Default for IdShards<V> {
    fn default() -> Self {
        IdShards {
            shards: (0..Self::SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

impl JobId {
    pub fn random() -> JobId {
        JobId(Uuid::new_v4())
    }

    /// Accepts exactly what [`fmt::Display`] prints, so one job has one URL.
    pub fn parse(s: &str) -> Option<JobId> {
        let uuid = Uuid::try_parse(s).ok()?;
        let mut buf = Uuid::encode_buffer();
        let canonical = uuid.hyphenated().encode_lower(&mut buf);
        (uuid.get_version_num() == 4 && canonical == s).then_some(JobId(uuid))
    }
}

impl JobId {
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Canceled,
}

impl JobStatus {
    pub fn parse(s: &str) -> Option<JobStatus> {
        use JobStatus as S;
        [S::Queued, S::Running, S::Succeeded, S::Failed, S::Canceled]
            .into_iter()
            .find(|status| status.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Canceled => "canceled",
        }
    }

    pub fn is_terminal(self) -> bool {
        !matches!(self, JobStatus::Queued | JobStatus::Running)
    }
}

/// Why a job failed without a backend response to replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The backend could not be connected to.
    Unreachable,
    /// The backend did not answer within the upstream's `job_timeout`.
    Timeout,
    /// The connection broke before the whole response arrived.
    Reset,
    /// The response was larger than the route's `max_result`.
    ResultTooLarge,
    /// The gateway shut down before the job finished.
    Interrupted,
    /// The replica running it stopped, and the request was not one that
    /// may be sent twice.
    Lost,
}

impl Failure {
    const ALL: [Failure; 6] = [
        Failure::Unreachable,
        Failure::Timeout,
        Failure::Reset,
        Failure::ResultTooLarge,
        Failure::Interrupted,
        Failure::Lost,
    ];

    /// Its name in a store outside this process.
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Unreachable => "unreachable",
            Failure::Timeout => "timeout",
            Failure::Reset => "reset",
            Failure::ResultTooLarge => "result-too-large",
            Failure::Interrupted => "interrupted",
            Failure::Lost => "lost",
        }
    }

    pub fn parse(s: &str) -> Option<Failure> {
        Failure::ALL.into_iter().find(|f| f.as_str() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseSummary {
    pub status: u16,
    pub bytes: u64,
}

#[derive(Debug, Clone)]
pub struct Job {
    pub id: JobId,
    pub route: Arc<str>,
    pub method: Method,
    pub status: JobStatus,
    pub created_at: SystemTime,
    pub started_at: Option<SystemTime>,
    pub finished_at: Option<SystemTime>,
    pub attempts: u32,
    pub response: Option<ResponseSummary>,
    pub failure: Option<Failure>,
    /// Set when the submitting request carried credentials.
    pub owner: Option<Owner>,
    /// Shared by every copy of the job, so its delivery state is seen
    /// wherever the job is read.
    pub webhook: Option<Arc<Webhook>>,
}

impl Job {
    pub fn queued(route: Arc<str>, method: Method) -> Job {
        Job {
            id: JobId::random(),
            route,
            method,
            status: JobStatus::Queued,
            created_at: SystemTime::now(),
            started_at: None,
            finished_at: None,
            attempts: 0,
            response: None,
            failure: None,
            owner: None,
            webhook: None,
        }
    }

    pub fn start(&mut self, at: SystemTime) {
        self.status = JobStatus::Running;
        self.started_at = Some(at);
        self.attempts += 1;
    }

    pub fn finish(&mut self, outcome: &Outcome) {
        self.status = outcome.status;
        self.finished_at = Some(outcome.finished_at);
        self.failure = outcome.failure;
        self.response = outcome.response.as_ref().map(|r| ResponseSummary {
            status: r.status.as_u16(),
            bytes: r.body.len() as u64,
        });
    }

    /// Whether `GET …/result` has something other than a 409 to say.
    pub fn has_result(&self) -> bool {
        matches!(self.status, JobStatus::Succeeded | JobStatus::Failed)
    }
}

/// A backend response kept for replay: end-to-end headers only, whole body.
#[derive(Debug, Clone)]
pub struct StoredResponse {
    pub status: StatusCode,
    pub headers: HeaderBlock,
    pub body: Bytes,
}

impl StoredResponse {
    /// Bytes this response holds in memory, for the store budget.
    pub fn size(&self) -> u64 {
        (self.headers.size() + self.body.len()) as u64
    }
}

/// How a job ended, as the runner reports it to the store.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: JobStatus,
    pub finished_at: SystemTime,
    pub response: Option<StoredResponse>,
    pub failure: Option<Failure>,
}

impl Outcome {
    /// A backend answer: a 5xx fails the job, anything else is its result.
    pub fn answered(response: StoredResponse) -> Outcome {
        let status = if response.status.is_server_error() {
            JobStatus::Failed
        } else {
            JobStatus::Succeeded
        };
        Outcome {
            status,
            finished_at: SystemTime::now(),
            response: Some(response),
            failure: None,
        }
    }

    pub fn failed(failure: Failure) -> Outcome {
        Outcome {
            status: JobStatus::Failed,
            finished_at: SystemTime::now(),
            response: None,
            failure: Some(failure),
        }
    }

    pub fn canceled() -> Outcome {
        Outcome {
            status: JobStatus::Canceled,
            finished_at: SystemTime::now(),
            response: None,
            failure: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_round_trip_in_canonical_form_only() {
        let id = JobId::random();
        let text = id.to_string();
        assert_eq!(JobId::parse(&text), Some(id));
        assert_eq!(JobId::parse(&text.to_uppercase()), None);
        assert_eq!(JobId::parse(&text.replace('-', "")), None);
        assert_eq!(JobId::parse("not-a-uuid"), None);
    }

    #[test]
    fn an_id_hashes_as_its_random_bits() {
        use std::hash::BuildHasher;
        let id = JobId::random();
        assert_eq!(IdHash::default().hash_one(id), id.word());
        assert_ne!(
            IdHash::default().hash_one(JobId::random()),
            IdHash::default().hash_one(id)
        );
    }

    #[test]
    fn ids_spread_over_every_shard() {
        let shards = IdShards::default();
        for _ in 0..10_000 {
            let id = JobId::random();
            shards.lock(id).insert(id, ());
        }
        let sizes: Vec<usize> = shards.shards.iter().map(|s| lock(s).len()).collect();
        assert!(sizes.iter().all(|&n| n > 50), "{sizes:?}");
        assert_eq!(shards.ids().len(), 10_000);
        shards.retain(|id, ()| id.word() % 2 == 0);
        assert!(shards.ids().len() < 6_000);
    }

    #[test]
    fn only_v4_ids_are_accepted() {
        assert_eq!(JobId::parse("6f1c0b5e-0000-1000-8000-000000000000"), None);
    }

    #[test]
    fn server_errors_fail_the_job_but_keep_the_response() {
        let r = StoredResponse {
            status: StatusCode::BAD_GATEWAY,
            headers: HeaderBlock::default(),
            body: Bytes::from_static(b"x"),
        };
        let o = Outcome::answered(r);
        assert_eq!(o.status, JobStatus::Failed);
        assert!(o.response.is_some());
    }
}
