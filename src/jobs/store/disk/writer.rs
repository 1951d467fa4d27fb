//! The disk store's one writer. Every change is a step run inside a write
//! transaction on this thread; the steps that arrive while a commit is
//! under way wait and share the next one (group commit), so concurrent
//! submissions pay for one fsync together: durability costs them latency,
//! not throughput. A second thread makes each commit durable (fsync) and
//! only then answers its steps, while this one already runs the next
//! group's steps: the disk's wait and the steps' work overlap.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{mpsc, Arc};

use fjall::{
    KeyspaceCreateOptions, PersistMode, Readable, SingleWriterTxDatabase, SingleWriterTxKeyspace,
    SingleWriterWriteTx as WriteTransaction, Slice,
};
use tokio::sync::oneshot;

use super::record::Record;
use crate::jobs::id::JobId;
use crate::jobs::store::{Binding, Lookup, StoreError};

/// The database's keyspaces. Keys that start with a time are that time as
/// 8 big-endian bytes then the id, so that they sort by time.
#[derive(Clone, Copy)]
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
    db: SingleWriterTxDatabase,
    /// One per [`Space`], in the order of [`Space::ALL`].
    spaces: Arc<[SingleWriterTxKeyspace]>,
}

impl Db {
    /// Opens the database in `dir`, with a block cache of `cache` bytes.
    pub(super) fn open(dir: &Path, cache: u64) -> fjall::Result<Db> {
        let db = SingleWriterTxDatabase::builder(dir)
            .cache_size(cache)
            .open()?;
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

    fn space(&self, space: Space) -> &SingleWriterTxKeyspace {
        &self.spaces[space as usize]
    }

    /// What `space` holds at `key`, as last committed.
    pub(super) fn get(&self, space: Space, key: &[u8]) -> Result<Option<Slice>, StoreError> {
        self.space(space).get(key).map_err(unavailable)
    }

    /// A job without a record, as last committed.
    pub(super) fn tombstone<T>(&self, k: &[u8; 16], now: u64) -> Result<Lookup<T>, StoreError> {
        tombstone(self, &self.db.read_tx(), k, now)
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

/// One write transaction, and the budget's count.
pub(super) struct Tables<'t> {
    tx: WriteTransaction<'t>,
    db: &'t Db,
    /// Bytes charged to the budget, as this transaction leaves them.
    pub(super) used: u64,
    /// Run once the transaction is durable: removing files it let go.
    pub(super) after_commit: Vec<Box<dyn FnOnce() + Send>>,
}

impl<'t> Tables<'t> {
    /// A transaction; its commit is durable once [`Db::persist`] returns.
    pub(super) fn begin(db: &'t Db, used: u64) -> Tables<'t> {
        Tables {
            tx: db.db.write_tx().durability(None),
            db,
            used,
            after_commit: Vec::new(),
        }
    }

    /// Commits, with the budget's count as the steps left it: seen by every
    /// later transaction and read, durable after the next [`Db::persist`].
    pub(super) fn commit(mut self) -> fjall::Result<()> {
        let used = self.used.to_le_bytes();
        self.tx.insert(self.db.space(Space::Meta), USED, &used[..]);
        self.tx.commit()
    }

    /// What `space` holds at `key`, this transaction's changes included.
    pub(super) fn get(&self, space: Space, key: &[u8]) -> Result<Option<Slice>, StoreError> {
        self.tx.get(self.db.space(space), key).map_err(unavailable)
    }

    pub(super) fn insert(&mut self, space: Space, key: &[u8], value: &[u8]) {
        self.tx.insert(self.db.space(space), key, value);
    }

    pub(super) fn remove(&mut self, space: Space, key: &[u8]) {
        self.tx.remove(self.db.space(space), key);
    }

    /// Up to `n` entries of a time-keyed space due at `now` or before,
    /// earliest first, with what each holds.
    pub(super) fn due<const N: usize>(
        &self,
        space: Space,
        now: u64,
        n: usize,
    ) -> Result<Vec<(u64, [u8; N], Slice)>, StoreError> {
        let upto = timed(now, &[0xff; N]);
        self.tx
            .range(self.db.space(space), ..=upto)
            .take(n)
            .map(|entry| {
                let (k, v) = entry.into_inner().map_err(unavailable)?;
                let (at, k) =
                    untimed(&k).ok_or_else(|| StoreError::Corrupt("a time-keyed entry".into()))?;
                Ok((at, k, v))
            })
            .collect()
    }

    /// Every entry of `space`, in key order.
    pub(super) fn all(&self, space: Space) -> Result<Vec<(Slice, Slice)>, StoreError> {
        self.tx
            .iter(self.db.space(space))
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
    /// A job's record, if it has one.
    pub(super) fn record(&self, id: JobId) -> Result<Option<Record>, StoreError> {
        let bytes = self.get(Space::Jobs, &key(id))?;
        bytes.map(|v| Record::decode(id, &v)).transpose()
    }

    pub(super) fn put(&mut self, id: JobId, record: &Record) {
        self.insert(Space::Jobs, &key(id), &record.encode());
    }

    /// A job without a record, this transaction's changes included.
    pub(super) fn tombstone<T>(&self, k: &[u8; 16], now: u64) -> Result<Lookup<T>, StoreError> {
        tombstone(self.db, &self.tx, k, now)
    }
}

/// A job without a record, as `reader` sees the database: gone while its
/// tombstone lasts, then missing.
fn tombstone<T>(
    db: &Db,
    reader: &impl Readable,
    k: &[u8; 16],
    now: u64,
) -> Result<Lookup<T>, StoreError> {
    let get = |space| reader.get(db.space(space), k).map_err(unavailable);
    let until = get(Space::Gone)?.map(|v| le_u64(&v));
    if until.is_none_or(|at| at <= now) {
        return Ok(Lookup::Missing);
    }
    let binding = get(Space::GoneBound)?;
    Ok(Lookup::Gone(binding.and_then(|b| Binding::from_bytes(&b))))
}

/// One change: run in the transaction, it hands back what to do once the
/// commit has succeeded or failed.
type Step = Box<dyn FnOnce(&mut Tables<'_>) -> Done + Send>;
type Done = Box<dyn FnOnce(Result<(), &Arc<fjall::Error>>) + Send>;

/// Hands steps to the writer thread.
pub(super) struct Writer {
    steps: mpsc::Sender<Step>,
    state: Arc<Committed>,
}

/// What the last commit left, for readers outside the writer thread.
#[derive(Default)]
struct Committed {
    used: AtomicU64,
    failed: AtomicBool,
}

impl Writer {
    /// Starts the writer thread over `db`, whose budget count is `used`.
    pub(super) fn start(db: Db, used: u64) -> std::io::Result<Writer> {
        let (steps, rx) = mpsc::channel();
        let state = Arc::new(Committed::default());
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
        Ok(Writer { steps, state })
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
                    Err(e) => Err(StoreError::Unavailable(Box::new(Arc::clone(e)))),
                });
            })
        });
        let stopped = || StoreError::Unavailable("the store could not take the change".into());
        self.steps.send(step).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

/// A group's commit, waiting to be made durable.
struct Commit {
    done: Vec<Done>,
    after_commit: Vec<Box<dyn FnOnce() + Send>>,
    used: u64,
}

/// `used`: the budget's count as committed; only this loop changes it.
fn commit_loop(
    db: &Db,
    steps: &mpsc::Receiver<Step>,
    mut used: u64,
    durable: &mpsc::Sender<Commit>,
    state: &Committed,
) {
    while let Ok(first) = steps.recv() {
        let batch: Vec<Step> = std::iter::once(first)
            .chain(steps.try_iter().take(MAX_BATCH - 1))
            .collect();
        let mut tables = Tables::begin(db, used);
        let done: Vec<Done> = batch.into_iter().map(|step| step(&mut tables)).collect();
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
                tracing::error!(error = %e, "the store could not commit; the changes were not made");
                let e = Arc::new(e);
                done.into_iter().for_each(|d| d(Err(&e)));
            }
        }
    }
}

/// Makes commits durable, as many as have arrived by each fsync, and
/// answers their steps.
fn sync_loop(db: &Db, commits: &mpsc::Receiver<Commit>, state: &Committed) {
    while let Ok(first) = commits.recv() {
        let group: Vec<Commit> = std::iter::once(first).chain(commits.try_iter()).collect();
        let synced = db.persist();
        state.failed.store(synced.is_err(), Relaxed);
        match synced {
            Ok(()) => {
                for commit in group {
                    state.used.store(commit.used, Relaxed);
                    commit.after_commit.into_iter().for_each(|f| f());
                    commit.done.into_iter().for_each(|d| d(Ok(())));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "the store could not make its changes durable; they were not acknowledged");
                let e = Arc::new(e);
                for commit in group {
                    commit.done.into_iter().for_each(|d| d(Err(&e)));
                }
            }
        }
    }
}
