//! Job ids, and the maps keyed by them: ids are random, so tables hash
//! their bits as they are.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::{Mutex, MutexGuard};

use uuid::Uuid;

use crate::room::GiveBack;
use crate::sync::lock;

/// A random (v4) UUID; printed and parsed only in canonical lowercase form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct JobId(Uuid);

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
pub(crate) struct IdHasher(u64);

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
pub(crate) type IdHash = BuildHasherDefault<IdHasher>;

/// A map keyed by job id.
pub(crate) type IdMap<V> = HashMap<JobId, V, IdHash>;

/// A map keyed by job id in shards, each behind its own lock, for maps that
/// hold every unfinished job. A table that doubles rehashes all its entries
/// while its lock is held: with one table and a backlog of a few hundred
/// thousand jobs, that stalled every submission for tens of milliseconds.
/// A shard rehashes a sixty-fourth as much, and the workers rarely wait on
/// each other.
pub(crate) struct IdShards<V> {
    shards: Box<[Mutex<IdMap<V>>]>,
}

impl<V> IdShards<V> {
    const SHARDS: usize = 64;

    /// The shard that holds `id`, locked.
    pub(crate) fn lock(&self, id: JobId) -> MutexGuard<'_, IdMap<V>> {
        // Bits well above those a shard's table indexes its buckets with,
        // and below the seven it keeps as tags: each shard still spreads
        // its ids over all of its buckets.
        lock(&self.shards[(id.word() >> 40) as usize % Self::SHARDS])
    }

    /// Keeps the entries `keep` says to, one shard at a time.
    pub(crate) fn retain(&self, mut keep: impl FnMut(&JobId, &mut V) -> bool) {
        for shard in &*self.shards {
            lock(shard).retain(&mut keep);
        }
    }

    /// Gives back the room a burst of entries grew, one shard at a time.
    pub(crate) fn give_back_room(&self) {
        for shard in &*self.shards {
            lock(shard).give_back_room();
        }
    }

    /// The ids in the map, one shard at a time: ids added meanwhile may be missed.
    pub(crate) fn ids(&self) -> Vec<JobId> {
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
    pub(crate) fn random() -> JobId {
        JobId(Uuid::new_v4())
    }

    /// A random id whose first 16 bits are `tag`: a store that files jobs
    /// by tag finds one's keys from its id alone. Those bits are random in
    /// a v4 id, so 106 random bits remain.
    pub(crate) fn random_tagged(tag: u16) -> JobId {
        let mut bytes = *Uuid::new_v4().as_bytes();
        bytes[..2].copy_from_slice(&tag.to_be_bytes());
        JobId(Uuid::from_bytes(bytes))
    }

    /// The id's first 16 bits: its first four hex digits.
    pub(crate) fn tag(&self) -> u16 {
        let bytes = self.0.as_bytes();
        u16::from_be_bytes([bytes[0], bytes[1]])
    }

    /// Accepts exactly what [`fmt::Display`] prints, so one job has one URL.
    pub(crate) fn parse(s: &str) -> Option<JobId> {
        let uuid = Uuid::try_parse(s).ok()?;
        let mut buf = Uuid::encode_buffer();
        let canonical = uuid.hyphenated().encode_lower(&mut buf);
        (uuid.get_version_num() == 4 && canonical == s).then_some(JobId(uuid))
    }
}

impl JobId {
    /// An id as a store outside this process keeps it.
    pub(crate) fn from_bytes(bytes: [u8; 16]) -> JobId {
        JobId(Uuid::from_bytes(bytes))
    }

    pub(crate) fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
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
    fn a_tagged_id_starts_with_its_tag_and_is_still_a_random_v4_id() {
        let id = JobId::random_tagged(0xa1b2);
        assert!(id.to_string().starts_with("a1b2"), "{id}");
        assert_eq!(id.tag(), 0xa1b2);
        assert_eq!(JobId::parse(&id.to_string()), Some(id));
        assert_ne!(JobId::random_tagged(0xa1b2), id);
    }

    #[test]
    fn only_v4_ids_are_accepted() {
        assert_eq!(JobId::parse("6f1c0b5e-0000-1000-8000-000000000000"), None);
    }
}
