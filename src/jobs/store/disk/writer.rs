//! The disk store's one writer. Every change is a step run on this thread
//! into one atomic write batch; the steps that arrive while a commit is
//! under way wait and share the next one (group commit), so concurrent
//! submissions pay for one fsync together: durability costs them latency,
//! not throughput. Being the only writer, it needs no transaction: the
//! group's own writes are kept beside the batch for its later steps to
//! read. A second thread makes each commit durable (fsync) and
//! only then answers its steps, while this one already runs the next
//! group's steps: the disk's wait and the steps' work overlap. The answers
//! go to each tokio runtime the steps came from in one message per group
//! (`answers.rs`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{mpsc, Arc};

use fjall::{
    Database, Keyspace, KeyspaceCreateOptions, OwnedWriteBatch, PersistMode, Readable, Slice,
};
use tokio::sync::oneshot;

use super::answers::{answer, Done, Inbox, Inboxes};
use crate::defaults;
use crate::jobs::id::{IdMap, JobId};
use crate::jobs::store::record::Record;
use crate::jobs::store::{Binding, Lookup, StoreError};

/// The database's keyspaces. Keys that start with a time are that time as
/// 8 big-endian bytes then the id, so that they sort by time.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Space {
    /// job -> its [`Record`].
    Jobs,
    /// (created, job) -> request body, for queued and running jobs: what a
    /// restart must carry on with, oldest first.
    Requests,
    /// Tombstones, and when each expires (8 bytes, little-endian).
    Gone,
    /// The bindings of tombstones of bound jobs ([`Binding::to_bytes`]).
    ///
    /// [`Binding::to_bytes`]: crate::jobs::store::Binding::to_bytes
    GoneBound,
    /// Idempotency scope -> holder's id, request fingerprint, expiry.
    Claims,
    /// (when, job) -> what expires then: a result or a tombstone (1 byte).
    Expiry,
    /// (when, scope) -> nothing.
    ClaimExpiry,
    /// Finished jobs with a delivery still due (webhook, Kafka record):
    /// what a restart must carry on. The keyspace keeps its first name.
    Hooks,
    /// `used`: the bytes charged to the budget (8 bytes, little-endian).
    Meta,
}

impl Space {
    const ALL: [Space; 9] = [
        Space::Jobs,
        Space::Requests,
        Space::Gone,
        Space::GoneBound,
        Space::Claims,
        Space::Expiry,
        Space::ClaimExpiry,
        Space::Hooks,
        Space::Meta,
    ];

    fn name(self) -> &'static str {
        match self {
            Space::Jobs => "jobs",
            Space::Requests => "requests",
            Space::Gone => "gone",
            Space::GoneBound => "gone_bound",
            Space::Claims => "claims",
            Space::Expiry => "expiry",
            Space::ClaimExpiry => "claim_expiry",
            Space::Hooks => "hooks",
            Space::Meta => "meta",
        }
    }
}

/// What an entry of [`Space::Expiry`] stands for.
pub(super) const EXPIRES_RESULT: u8 = 0;
pub(super) const EXPIRES_TOMBSTONE: u8 = 1;

const USED: &[u8] = b"used";

/// The most steps one commit takes: a bound on how long the first waits.
const MAX_BATCH: usize = 1024;

/// A memtable is written out as a sorted run when it reaches this size: it
/// bounds the memory each busy keyspace holds beside the block cache.
const MEMTABLE_BYTES: u64 = 16 * 1024 * 1024;

/// The database and its keyspaces, open.
#[derive(Clone)]
pub(super) struct Db {
    db: Database,
    /// One per [`Space`], in the order of [`Space::ALL`].
    spaces: Arc<[Keyspace]>,
}

impl Db {
    /// Opens the database in `dir`, with a block cache of `cache` bytes.
    pub(super) fn open(dir: &Path, cache: u64) -> fjall::Result<Db> {
        let db = Database::builder(dir).cache_size(cache).open()?;
        let spaces = Space::ALL
            .iter()
            .map(|space| {
                db.keyspace(space.name(), || {
                    KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE_BYTES)
                })
            })
            .collect::<fjall::Result<_>>()?;
        Ok(Db { db, spaces })
    }

    fn space(&self, space: Space) -> &Keyspace {
        &self.spaces[space as usize]
    }

    /// What `space` holds at `key`, as last committed.
    pub(super) fn get(&self, space: Space, key: &[u8]) -> Result<Option<Slice>, StoreError> {
        self.space(space).get(key).map_err(unavailable)
    }

    /// A job without a record, as last committed.
    pub(super) fn tombstone<T>(&self, k: &[u8; 16], now: u64) -> Result<Lookup<T>, StoreError> {
        let snapshot = self.db.snapshot();
        tombstone(now, |space| {
            snapshot.get(self.space(space), k).map_err(unavailable)
        })
    }

    /// Makes every commit so far durable.
    pub(super) fn persist(&self) -> fjall::Result<()> {
        self.db.persist(PersistMode::SyncData)
    }

    /// The budget's count, as last committed.
    pub(super) fn used(&self) -> Result<u64, StoreError> {
        Ok(self.get(Space::Meta, USED)?.map_or(0, |v| le_u64(&v)))
    }
}

/// A time-keyed entry's key: the time, big-endian so keys sort by it, then
/// what it is about.
pub(super) fn timed(at: u64, k: &[u8]) -> Vec<u8> {
    [&at.to_be_bytes()[..], k].concat()
}

/// A time-keyed entry's key taken apart.
pub(super) fn untimed<const N: usize>(key: &[u8]) -> Option<(u64, [u8; N])> {
    let (at, k) = key.split_first_chunk::<8>()?;
    Some((u64::from_be_bytes(*at), k.try_into().ok()?))
}

pub(super) fn le_u64(bytes: &[u8]) -> u64 {
    bytes
        .first_chunk::<8>()
        .map_or(0, |b| u64::from_le_bytes(*b))
}

/// The records of queued and running jobs as last written, decoded: what
/// the writer keeps so that a step on an active job (start, retry, finish)
/// takes its record without reading or decoding it. Only the writer thread
/// touches it, and it is emptied when a commit fails, the database being
/// the truth again.
pub(super) type ActiveRecords = IdMap<Record>;

/// One group's writes, and the budget's count.
pub(super) struct Tables<'t> {
    db: &'t Db,
    batch: OwnedWriteBatch,
    /// What the batch writes, by key (`None`: removed), so the group's later
    /// steps read its earlier ones' writes.
    written: HashMap<(Space, Slice), Option<Slice>>,
    active: &'t mut ActiveRecords,
    /// Bytes charged to the budget, as this group leaves them.
    pub(super) used: u64,
    /// Run once the group is durable: removing files it let go.
    pub(super) after_commit: Vec<Box<dyn FnOnce() + Send>>,
}

impl<'t> Tables<'t> {
    /// An empty group; its commit is durable once [`Db::persist`] returns.
    pub(super) fn begin(db: &'t Db, used: u64, active: &'t mut ActiveRecords) -> Tables<'t> {
        Tables {
            batch: db.db.batch().durability(None),
            written: HashMap::new(),
            db,
            active,
            used,
            after_commit: Vec::new(),
        }
    }

    /// Commits, with the budget's count as the steps left it: seen by every
    /// later group and read, durable after the next [`Db::persist`].
    pub(super) fn commit(mut self) -> fjall::Result<()> {
        let used = self.used.to_le_bytes();
        self.batch
            .insert(self.db.space(Space::Meta), USED, &used[..]);
        self.batch.commit()
    }

    /// What `space` holds at `key`, this group's writes included.
    pub(super) fn get(&self, space: Space, key: &[u8]) -> Result<Option<Slice>, StoreError> {
        if let Some(value) = self.written.get(&(space, Slice::from(key))) {
            return Ok(value.clone());
        }
        self.db.get(space, key)
    }

    pub(super) fn insert(&mut self, space: Space, key: &[u8], value: &[u8]) {
        let (key, value) = (Slice::from(key), Slice::from(value));
        self.batch
            .insert(self.db.space(space), key.clone(), value.clone());
        self.written.insert((space, key), Some(value));
    }

    pub(super) fn remove(&mut self, space: Space, key: &[u8]) {
        let key = Slice::from(key);
        self.batch.remove(self.db.space(space), key.clone());
        self.written.insert((space, key), None);
    }

    /// Up to `n` entries of a time-keyed space due at `now` or before,
    /// earliest first, with what each holds, as last committed: what the
    /// group wrote is not among them, so a step acts on each only after
    /// reading what it stands for again.
    pub(super) fn due<const N: usize>(
        &self,
        space: Space,
        now: u64,
        n: usize,
    ) -> Result<Vec<(u64, [u8; N], Slice)>, StoreError> {
        let upto = timed(now, &[0xff; N]);
        self.db
            .space(space)
            .range(..=upto)
            .take(n)
            .map(|entry| {
                let (k, v) = entry.into_inner().map_err(unavailable)?;
                let (at, k) =
                    untimed(&k).ok_or_else(|| StoreError::Corrupt("a time-keyed entry".into()))?;
                Ok((at, k, v))
            })
            .collect()
    }

    /// Every entry of `space`, in key order, as last committed.
    pub(super) fn all(&self, space: Space) -> Result<Vec<(Slice, Slice)>, StoreError> {
        self.db
            .space(space)
            .iter()
            .map(|entry| entry.into_inner().map_err(unavailable))
            .collect()
    }
}

pub(super) fn unavailable(e: impl Into<fjall::Error>) -> StoreError {
    StoreError::Unavailable(Box::new(e.into()))
}

pub(super) fn key(id: JobId) -> [u8; 16] {
    *id.as_bytes()
}

impl Tables<'_> {
    /// A job's record, if it has one, taken out of the writer's memory
    /// when it is there: a step that changes it writes it back with
    /// [`Tables::put_and_keep`] (still active) or [`Tables::put`].
    pub(super) fn record(&mut self, id: JobId) -> Result<Option<Record>, StoreError> {
        if let Some(record) = self.active.remove(&id) {
            return Ok(Some(record));
        }
        let bytes = self.get(Space::Jobs, &key(id))?;
        bytes.map(|v| Record::decode(id, &v)).transpose()
    }

    /// Writes a job's record, forgetting any decoded copy.
    pub(super) fn put(&mut self, id: JobId, record: &Record) {
        self.insert(Space::Jobs, &key(id), &record.encode());
        self.active.remove(&id);
    }

    /// Writes the record of a job that is queued or running and keeps it
    /// decoded, while there is room, for the steps that follow.
    pub(super) fn put_and_keep(&mut self, id: JobId, record: Record) {
        self.insert(Space::Jobs, &key(id), &record.encode());
        if self.active.len() < defaults::ACTIVE_RECORDS {
            self.active.insert(id, record);
        } else {
            self.active.remove(&id);
        }
    }

    /// Deletes a job's record.
    pub(super) fn remove_record(&mut self, id: JobId) {
        self.active.remove(&id);
        self.remove(Space::Jobs, &key(id));
    }

    /// A job without a record, this group's writes included.
    pub(super) fn tombstone<T>(&self, k: &[u8; 16], now: u64) -> Result<Lookup<T>, StoreError> {
        tombstone(now, |space| self.get(space, k))
    }
}

/// A job without a record, as `get` reads the database: gone while its
/// tombstone lasts, then missing.
fn tombstone<T>(
    now: u64,
    get: impl Fn(Space) -> Result<Option<Slice>, StoreError>,
) -> Result<Lookup<T>, StoreError> {
    let until = get(Space::Gone)?.map(|v| le_u64(&v));
    if until.is_none_or(|at| at <= now) {
        return Ok(Lookup::Missing);
    }
    let binding = get(Space::GoneBound)?;
    Ok(Lookup::Gone(binding.and_then(|b| Binding::from_bytes(&b))))
}

/// One change: run into the group's batch, it hands back what to do once the
/// commit has succeeded or failed.
type Step = Box<dyn FnOnce(&mut Tables<'_>) -> Done + Send>;

/// Hands steps to the writer thread.
pub(super) struct Writer {
    steps: mpsc::Sender<(Inbox, Step)>,
    state: Arc<State>,
    inboxes: Inboxes,
}

/// What the last commit left, for readers outside the writer thread.
#[derive(Default)]
struct State {
    used: AtomicU64,
    failed: AtomicBool,
}

impl Writer {
    /// Starts the writer thread over `db`, whose budget count is `used`.
    pub(super) fn start(db: Db, used: u64) -> std::io::Result<Writer> {
        let (steps, rx) = mpsc::channel();
        let state = Arc::new(State::default());
        state.used.store(used, Relaxed);
        let (commits, committed) = mpsc::channel();
        let syncer = (db.clone(), Arc::clone(&state));
        std::thread::Builder::new()
            .name("asyncgate-fsync".into())
            .spawn(move || sync_loop(&syncer.0, &committed, &syncer.1))?;
        let shared = Arc::clone(&state);
        std::thread::Builder::new()
            .name("asyncgate-store".into())
            .spawn(move || commit_loop(&db, &rx, used, &commits, &shared))?;
        Ok(Writer {
            steps,
            state,
            inboxes: Inboxes::default(),
        })
    }

    /// The budget's count as last committed; an error while the last
    /// commit failed (the disk is full, or failing).
    pub(super) fn usage(&self) -> Result<u64, StoreError> {
        if self.state.failed.load(Relaxed) {
            return Err(StoreError::Unavailable(
                "the store's last write to disk failed".into(),
            ));
        }
        Ok(self.state.used.load(Relaxed))
    }

    /// Runs `step` in the next commit; its answer once that commit is
    /// durable, or the reason it is not. A step must check before it
    /// changes anything: what it changed before an `Err` is committed too.
    pub(super) async fn write<T: Send + 'static>(
        &self,
        step: impl FnOnce(&mut Tables<'_>) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        let step: Step = Box::new(move |tables| {
            let answer = step(tables);
            Box::new(move |committed| {
                let _ = tx.send(match committed {
                    Ok(()) => answer,
                    Err(e) => Err(StoreError::Unavailable(Box::new(e))),
                });
            })
        });
        let stopped = || StoreError::Unavailable("the store could not take the change".into());
        self.steps
            .send((self.inboxes.current(), step))
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

/// A group's commit, waiting to be made durable.
struct Commit {
    done: Vec<(Inbox, Done)>,
    after_commit: Vec<Box<dyn FnOnce() + Send>>,
    used: u64,
}

/// `used`: the budget's count as committed; only this loop changes it.
fn commit_loop(
    db: &Db,
    steps: &mpsc::Receiver<(Inbox, Step)>,
    mut used: u64,
    durable: &mpsc::Sender<Commit>,
    state: &State,
) {
    let mut active = ActiveRecords::default();
    while let Ok(first) = steps.recv() {
        let batch: Vec<(Inbox, Step)> = std::iter::once(first)
            .chain(steps.try_iter().take(MAX_BATCH - 1))
            .collect();
        let mut tables = Tables::begin(db, used, &mut active);
        let done: Vec<(Inbox, Done)> = batch
            .into_iter()
            .map(|(inbox, step)| (inbox, step(&mut tables)))
            .collect();
        let after_commit = std::mem::take(&mut tables.after_commit);
        let left = tables.used;
        match tables.commit() {
            Ok(()) => {
                used = left;
                let commit = Commit {
                    done,
                    after_commit,
                    used,
                };
                if durable.send(commit).is_err() {
                    return;
                }
            }
            Err(e) => {
                state.failed.store(true, Relaxed);
                active.clear();
                tracing::error!(error = %e, "the store could not commit; the changes were not made");
                answer(done, &Err(Arc::new(e)));
            }
        }
    }
}

/// Makes commits durable, as many as have arrived by each fsync, and
/// answers their steps.
fn sync_loop(db: &Db, commits: &mpsc::Receiver<Commit>, state: &State) {
    while let Ok(first) = commits.recv() {
        let group: Vec<Commit> = std::iter::once(first).chain(commits.try_iter()).collect();
        let synced = db.persist();
        state.failed.store(synced.is_err(), Relaxed);
        let committed = match synced {
            Ok(()) => {
                for commit in &group {
                    state.used.store(commit.used, Relaxed);
                }
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "the store could not make its changes durable; they were not acknowledged");
                Err(Arc::new(e))
            }
        };
        let mut done = Vec::new();
        for commit in group {
            if committed.is_ok() {
                commit.after_commit.into_iter().for_each(|f| f());
            }
            done.extend(commit.done);
        }
        answer(done, &committed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database of its own in the system's temporary directory, removed
    /// when dropped.
    struct Scratch(std::path::PathBuf);

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn scratch() -> (Scratch, Db) {
        let dir = std::env::temp_dir().join(format!("asyncgate-writer-{}", uuid::Uuid::new_v4()));
        let db = Db::open(&dir, 1024 * 1024).unwrap();
        (Scratch(dir), db)
    }

    #[test]
    fn a_group_reads_its_own_writes_and_others_see_them_only_once_committed() {
        let (_dir, db) = scratch();
        let mut active = ActiveRecords::default();
        let mut tables = Tables::begin(&db, 0, &mut active);
        tables.insert(Space::Claims, b"scope", b"holder");
        tables.insert(Space::Gone, b"gone", b"x");
        tables.remove(Space::Gone, b"gone");
        assert_eq!(
            tables.get(Space::Claims, b"scope").unwrap().as_deref(),
            Some(&b"holder"[..])
        );
        assert!(tables.get(Space::Gone, b"gone").unwrap().is_none());
        assert!(db.get(Space::Claims, b"scope").unwrap().is_none());
        tables.used = 7;
        tables.commit().unwrap();
        assert_eq!(
            db.get(Space::Claims, b"scope").unwrap().as_deref(),
            Some(&b"holder"[..])
        );
        assert!(db.get(Space::Gone, b"gone").unwrap().is_none());
        assert_eq!(db.used().unwrap(), 7);
    }

    /// A step's answer comes through its own runtime, even on a thread
    /// that has another runtime which nobody drives, and after the
    /// runtime that wrote first is gone.
    #[test]
    fn each_runtime_gets_the_answers_to_its_own_steps() {
        let (_dir, db) = scratch();
        let writer = Writer::start(db, 0).unwrap();
        let runtime = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        };
        let write = |n: u64| {
            let writer = &writer;
            async move {
                let written = writer.write(move |t| {
                    t.used += n;
                    Ok(n)
                });
                tokio::time::timeout(std::time::Duration::from_secs(10), written)
                    .await
                    .expect("answered")
                    .unwrap()
            }
        };
        let first = runtime();
        assert_eq!(first.block_on(write(1)), 1);
        let second = runtime();
        assert_eq!(second.block_on(write(2)), 2);
        drop(first);
        assert_eq!(second.block_on(write(3)), 3);
        assert_eq!(runtime().block_on(write(4)), 4);
        assert_eq!(writer.usage().unwrap(), 10);
    }

    #[test]
    fn a_kept_record_is_the_one_last_written_and_a_removed_one_is_gone() {
        use crate::header_block::HeaderBlock;
        use crate::jobs::model::{BackendRequest, Job};
        let (_dir, db) = scratch();
        let job = Job::queued(JobId::random(), "reports".into(), http::Method::POST);
        let request = BackendRequest {
            method: http::Method::POST,
            path: http::uri::PathAndQuery::from_static("/r"),
            headers: HeaderBlock::pack(&http::HeaderMap::new()),
            body: bytes::Bytes::new(),
        };
        let mut record = Record::queued(&job, &request, false, 100);
        let mut active = ActiveRecords::default();
        let mut tables = Tables::begin(&db, 0, &mut active);
        tables.put_and_keep(job.id, record.clone());
        tables.commit().unwrap();
        assert_eq!(active.len(), 1);

        let mut tables = Tables::begin(&db, 0, &mut active);
        let mut kept = tables.record(job.id).unwrap().unwrap();
        kept.attempts = 1;
        tables.put_and_keep(job.id, kept);
        assert_eq!(tables.record(job.id).unwrap().unwrap().attempts, 1);
        tables.commit().unwrap();
        // The read above took it out of the writer's memory: from now on
        // it comes from the database.
        assert!(active.is_empty());
        record.attempts = 1;
        let mut tables = Tables::begin(&db, 0, &mut active);
        assert_eq!(tables.record(job.id).unwrap().unwrap().attempts, 1);
        tables.put_and_keep(job.id, record);
        tables.remove_record(job.id);
        assert!(tables.record(job.id).unwrap().is_none());
        tables.commit().unwrap();
        assert!(db.get(Space::Jobs, &key(job.id)).unwrap().is_none());
    }
}
