//! The jobs, once their store is open. A plain start opens the store before
//! anything listens. A process started by an in-place upgrade listens at
//! once (passthrough and the admin listener answer) while the process
//! before it drains and still holds the disk store: its jobs open as soon
//! as the store is let go, and the requests that need them wait until then,
//! within a bound (past it, `503 store-unavailable` until the store opens).

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::BuildError;
use crate::config::StoreConfig;
use crate::jobs::store::{DiskStore, MemoryStore, OpenError, RedisStore, Store, StoreError};
use crate::jobs::{DrainReport, Jobs};
use crate::route::Route;
use crate::sync::lock;
use crate::webhook::Webhooks;

/// How often a successor tries the store its predecessor still holds:
/// within the bound, and past it.
const RETRY: Duration = Duration::from_millis(100);
const RETRY_LATE: Duration = Duration::from_secs(1);

/// What a successor waits for the store beyond its predecessor's drain: the
/// drain's grace for the last jobs to record their end, and the exit.
pub(crate) const HANDOVER_MARGIN: Duration = Duration::from_secs(10);

/// Opens the store `config` names.
pub(super) fn open(config: &StoreConfig) -> Result<Store, BuildError> {
    Ok(match (&config.disk, &config.redis) {
        (Some(disk), _) => Store::Disk(Arc::new(DiskStore::open(config, disk)?)),
        (None, Some(redis)) => Store::Redis(Arc::new(RedisStore::connect(config, redis)?)),
        (None, None) => Store::Memory(Arc::new(MemoryStore::new(config))),
    })
}

/// Whether the store failed to open only because another process holds it.
pub(super) fn held_elsewhere(e: &BuildError) -> bool {
    matches!(e, BuildError::Disk(OpenError::InUse(_)))
}

/// Where a job's URLs start, and what produces its Kafka records: what the
/// jobs are made with besides their store and routes.
pub(super) struct Makings {
    pub(super) urls: crate::jobs::JobUrls,
    #[cfg(feature = "kafka")]
    pub(super) kafka: Option<Arc<crate::kafka::Kafka>>,
}

/// The routes and webhook sender in force, for jobs not made yet: a reload
/// while the store is awaited changes what they are made with.
struct Awaited {
    makings: Makings,
    routes: Vec<Arc<Route>>,
    webhooks: Option<Arc<Webhooks>>,
}

/// How the wait for the store ended, for those who ask meanwhile.
#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    /// Past the bound, the store still held elsewhere: job requests are
    /// refused at once, and the store is still tried, less often.
    Late,
    Open,
    /// The store failed otherwise, or the drain began.
    GaveUp,
}

pub(crate) struct JobsSlot {
    jobs: OnceLock<Arc<Jobs>>,
    state: watch::Sender<State>,
    /// While the store is awaited; taken when the jobs are made.
    awaited: Mutex<Option<Awaited>>,
}

/// Why a request that needs the jobs cannot have them.
#[derive(Debug, thiserror::Error)]
#[error("the job store did not open: the process this one replaced held it too long, or it failed")]
struct NotOpen;

impl JobsSlot {
    /// Jobs over a store already open.
    pub(super) fn open(jobs: Jobs) -> Arc<JobsSlot> {
        let slot = JobsSlot {
            jobs: OnceLock::from(Arc::new(jobs)),
            state: watch::Sender::new(State::Open),
            awaited: Mutex::new(None),
        };
        Arc::new(slot)
    }

    /// Jobs made once the store `config` names is let go by the process
    /// this one replaces, tried until `within` has passed. Must be called
    /// inside a tokio runtime.
    pub(super) fn later(
        config: StoreConfig,
        makings: Makings,
        routes: Vec<Arc<Route>>,
        webhooks: Option<Arc<Webhooks>>,
        within: Duration,
    ) -> Arc<JobsSlot> {
        let slot = Arc::new(JobsSlot {
            jobs: OnceLock::new(),
            state: watch::Sender::new(State::Waiting),
            awaited: Mutex::new(Some(Awaited {
                makings,
                routes,
                webhooks,
            })),
        });
        tracing::info!(bound = %humantime::format_duration(within), "serving; the job store opens once the process before this one lets it go");
        tokio::spawn(Arc::clone(&slot).await_store(config, Instant::now() + within));
        slot
    }

    /// Tries the store until it opens. Past `until` the requests waiting
    /// for it are answered `503`, and so are those after, until it opens:
    /// a predecessor that drains for longer than this process allowed
    /// delays its jobs, and never leaves it without them.
    async fn await_store(self: Arc<Self>, config: StoreConfig, until: Instant) {
        loop {
            if !matches!(*self.state.borrow(), State::Waiting | State::Late) {
                return;
            }
            let config_now = config.clone();
            // Opening reads the database and what it must carry on with: off
            // the runtime's thread, which serves connections meanwhile.
            let opened = tokio::task::spawn_blocking(move || open(&config_now)).await;
            match opened {
                Ok(Ok(store)) => return self.adopt(store),
                Ok(Err(e)) if held_elsewhere(&e) => {
                    if Instant::now() >= until
                        && self.state.send_if_modified(|s| {
                            let late = *s == State::Waiting;
                            if late {
                                *s = State::Late;
                            }
                            late
                        })
                    {
                        tracing::warn!("the process before this one still holds the job store; job requests are refused until it lets it go");
                    }
                }
                Ok(Err(e)) => {
                    tracing::error!(error = %crate::error_chain::Chain(&e), "cannot open the job store; job requests are refused");
                    self.state.send_replace(State::GaveUp);
                    return;
                }
                Err(e) => {
                    tracing::error!(error = %e, "the store's opening failed");
                    self.state.send_replace(State::GaveUp);
                    return;
                }
            }
            let late = *self.state.borrow() == State::Late;
            tokio::time::sleep(if late { RETRY_LATE } else { RETRY }).await;
        }
    }

    /// Makes the jobs over the store just opened, with the routes and
    /// webhooks in force now.
    fn adopt(&self, store: Store) {
        let mut awaited = lock(&self.awaited);
        let Some(Awaited {
            makings,
            routes,
            webhooks,
        }) = awaited.take()
        else {
            return;
        };
        if !matches!(*self.state.borrow(), State::Waiting | State::Late) {
            return;
        }
        let jobs = Jobs::new(
            store,
            &routes,
            makings.urls,
            webhooks,
            #[cfg(feature = "kafka")]
            makings.kafka,
        );
        let _ = self.jobs.set(Arc::new(jobs));
        drop(awaited);
        self.state.send_replace(State::Open);
        tracing::info!("the job store is open; job requests are served");
    }

    /// The jobs, if their store is open.
    pub(crate) fn get(&self) -> Option<&Arc<Jobs>> {
        self.jobs.get()
    }

    /// Whether the store is still awaited (not open, not given up).
    pub(crate) fn awaiting(&self) -> bool {
        *self.state.borrow() == State::Waiting
    }

    /// The jobs, waiting for their store while it is awaited.
    pub(super) async fn wait(&self) -> Result<&Arc<Jobs>, StoreError> {
        let mut state = self.state.subscribe();
        let _ = state.wait_for(|s| *s != State::Waiting).await;
        self.jobs
            .get()
            .ok_or_else(|| StoreError::Unavailable(Box::new(NotOpen)))
    }

    /// New routes and webhook sender: for the jobs now, or for when they
    /// are made.
    pub(super) fn reconfigure(&self, routes: &[Arc<Route>], webhooks: Option<Arc<Webhooks>>) {
        let mut awaited = lock(&self.awaited);
        match (&mut *awaited, self.jobs.get()) {
            (Some(awaited), _) => {
                awaited.routes = routes.to_vec();
                awaited.webhooks = webhooks;
            }
            (None, Some(jobs)) => jobs.reconfigure(routes, webhooks),
            (None, None) => {}
        }
    }

    /// Drains the jobs, or stops awaiting their store: a process that
    /// stops before its store opened has no jobs to finish.
    pub(super) async fn drain(&self, deadline: Instant) -> DrainReport {
        {
            let _awaited = lock(&self.awaited);
            if self.jobs.get().is_none() {
                self.state.send_replace(State::GaveUp);
            }
        }
        match self.jobs.get() {
            Some(jobs) => jobs.drain(deadline).await,
            None => DrainReport::default(),
        }
    }
}
