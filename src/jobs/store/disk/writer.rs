//! The disk store's one writer. Every change is a step run inside a write
//! transaction on this thread; the steps that arrive while a commit is
//! under way wait and share the next one (group commit), so concurrent
//! submissions pay for one fsync together: durability costs them latency,
//! not throughput.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{mpsc, Arc};

use redb::{Database, ReadableTable, Table, TableDefinition, WriteTransaction};
use tokio::sync::oneshot;

use super::record::Record;
use crate::jobs::id::JobId;
use crate::jobs::store::{Binding, Lookup, StoreError};

pub(super) const JOBS: TableDefinition<&[u8; 16], &[u8]> = TableDefinition::new("jobs");
/// (created, job) -> request body, for queued and running jobs: what a
/// restart must carry on with, oldest first. Keyed by time, so what a
/// commit adds lands at the end of the tree and what it removes near its
/// start, a few pages for many jobs, where ids (random) would dirty a page
/// each.
pub(super) const REQUESTS: TableDefinition<(u64, &[u8; 16]), &[u8]> =
    TableDefinition::new("requests");
/// Tombstones, and when each expires.
pub(super) const GONE: TableDefinition<&[u8; 16], u64> = TableDefinition::new("gone");
/// The bindings of tombstones of bound jobs ([`Binding::to_bytes`]).
///
/// [`Binding::to_bytes`]: crate::jobs::store::Binding::to_bytes
pub(super) const GONE_BOUND: TableDefinition<&[u8; 16], &[u8]> = TableDefinition::new("gone_bound");
/// Idempotency scope -> holder's id, request fingerprint, expiry.
pub(super) const CLAIMS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("claims");
/// (when, job) -> what expires then: a result or a tombstone.
pub(super) const EXPIRY: TableDefinition<(u64, &[u8; 16]), u8> = TableDefinition::new("expiry");
pub(super) const CLAIM_EXPIRY: TableDefinition<(u64, &[u8; 32]), ()> =
    TableDefinition::new("claim_expiry");
/// Finished jobs with a delivery still due (webhook, Kafka record): what a
/// restart must carry on. The table keeps its first name.
pub(super) const HOOKS: TableDefinition<&[u8; 16], ()> = TableDefinition::new("hooks");
/// `used`: the bytes charged to the budget.
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// What an entry of [`EXPIRY`] stands for.
pub(super) const EXPIRES_RESULT: u8 = 0;
pub(super) const EXPIRES_TOMBSTONE: u8 = 1;

/// The most steps one commit takes: a bound on how long the first waits.
const MAX_BATCH: usize = 1024;

/// Every table, open in one write transaction, and the budget's count.
pub(super) struct Tables<'t> {
    pub(super) jobs: Table<'t, &'static [u8; 16], &'static [u8]>,
    pub(super) requests: Table<'t, (u64, &'static [u8; 16]), &'static [u8]>,
    pub(super) gone: Table<'t, &'static [u8; 16], u64>,
    pub(super) gone_bound: Table<'t, &'static [u8; 16], &'static [u8]>,
    pub(super) claims: Table<'t, &'static [u8; 32], &'static [u8]>,
    pub(super) expiry: Table<'t, (u64, &'static [u8; 16]), u8>,
    pub(super) claim_expiry: Table<'t, (u64, &'static [u8; 32]), ()>,
    pub(super) hooks: Table<'t, &'static [u8; 16], ()>,
    /// Bytes charged to the budget, as this transaction leaves them.
    pub(super) used: u64,
    /// Run once the transaction is durable: removing files it let go.
    pub(super) after_commit: Vec<Box<dyn FnOnce() + Send>>,
}

impl<'t> Tables<'t> {
    pub(super) fn open(txn: &'t WriteTransaction, used: u64) -> Result<Tables<'t>, redb::Error> {
        Ok(Tables {
            jobs: txn.open_table(JOBS)?,
            requests: txn.open_table(REQUESTS)?,
            gone: txn.open_table(GONE)?,
            gone_bound: txn.open_table(GONE_BOUND)?,
            claims: txn.open_table(CLAIMS)?,
            expiry: txn.open_table(EXPIRY)?,
            claim_expiry: txn.open_table(CLAIM_EXPIRY)?,
            hooks: txn.open_table(HOOKS)?,
            used,
            after_commit: Vec::new(),
        })
    }
}

pub(super) fn unavailable(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Unavailable(Box::new(e.into()))
}

pub(super) fn key(id: JobId) -> [u8; 16] {
    *id.as_bytes()
}

impl Tables<'_> {
    /// A job's record, if it has one.
    pub(super) fn record(&self, id: JobId) -> Result<Option<Record>, StoreError> {
        let bytes = self.jobs.get(&key(id)).map_err(unavailable)?;
        bytes.map(|v| Record::decode(id, v.value())).transpose()
    }

    pub(super) fn put(&mut self, id: JobId, record: &Record) -> Result<(), StoreError> {
        self.jobs
            .insert(&key(id), record.encode().as_slice())
            .map(drop)
            .map_err(unavailable)
    }

    /// A job without a record: gone while its tombstone lasts, then missing.
    pub(super) fn tombstone<T>(&self, k: &[u8; 16], now: u64) -> Result<Lookup<T>, StoreError> {
        let until = self.gone.get(k).map_err(unavailable)?.map(|v| v.value());
        if until.is_none_or(|at| at <= now) {
            return Ok(Lookup::Missing);
        }
        let binding = self.gone_bound.get(k).map_err(unavailable)?;
        Ok(Lookup::Gone(
            binding.and_then(|b| Binding::from_bytes(b.value())),
        ))
    }
}

/// One change: run in the transaction, it hands back what to do once the
/// commit has succeeded or failed.
type Step = Box<dyn FnOnce(&mut Tables<'_>) -> Done + Send>;
type Done = Box<dyn FnOnce(Result<(), &Arc<redb::Error>>) + Send>;

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
    pub(super) fn start(db: Arc<Database>, used: u64) -> std::io::Result<Writer> {
        let (steps, rx) = mpsc::channel();
        let state = Arc::new(Committed::default());
        state.used.store(used, Relaxed);
        let shared = Arc::clone(&state);
        std::thread::Builder::new()
            .name("asyncgate-store".into())
            .spawn(move || commit_loop(&db, &rx, used, &shared))?;
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

/// `used`: the budget's count as committed; only this loop changes it.
fn commit_loop(db: &Database, steps: &mpsc::Receiver<Step>, mut used: u64, state: &Committed) {
    while let Ok(first) = steps.recv() {
        let batch: Vec<Step> = std::iter::once(first)
            .chain(steps.try_iter().take(MAX_BATCH - 1))
            .collect();
        let mut done = Vec::with_capacity(batch.len());
        let mut after_commit = Vec::new();
        let committed = (|| {
            let txn = db.begin_write()?;
            let left = {
                let mut tables = Tables::open(&txn, used)?;
                for step in batch {
                    done.push(step(&mut tables));
                }
                txn.open_table(META)?.insert("used", tables.used)?;
                after_commit = std::mem::take(&mut tables.after_commit);
                tables.used
            };
            txn.commit()?;
            used = left;
            Ok::<(), redb::Error>(())
        })();
        state.used.store(used, Relaxed);
        state.failed.store(committed.is_err(), Relaxed);
        match committed {
            Ok(()) => {
                after_commit.into_iter().for_each(|f| f());
                done.into_iter().for_each(|d| d(Ok(())));
            }
            Err(e) => {
                tracing::error!(error = %e, "the store could not commit; the changes were not made");
                let e = Arc::new(e);
                done.into_iter().for_each(|d| d(Err(&e)));
            }
        }
    }
}
