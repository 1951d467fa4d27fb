//! Deliveries of an ended job's document to where it is awaited: a
//! webhook receiver, a Kafka topic. Each keeps its state in the job
//! document and in the store, so that it is shown wherever the job is read
//! and carried on after a restart or by another replica; both are driven
//! by one loop of attempts ([`drive`]), each sender making one attempt.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use crate::callback::target::Target;
use crate::headers::Origin;
use crate::sync::lock;

/// Where a job's document is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Channel {
    Webhook,
    /// Made only by a build with the `kafka` feature; the stores keep its
    /// state either way.
    #[cfg_attr(not(feature = "kafka"), allow(dead_code))]
    Kafka,
}

impl Channel {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Channel::Webhook => "webhook",
            Channel::Kafka => "kafka",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeliveryState {
    /// Not yet taken: the job runs, or attempts go on.
    Pending,
    Delivered,
    /// Attempts ran out, or the receiver refused it for good.
    Failed,
}

impl DeliveryState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<DeliveryState> {
        [
            DeliveryState::Pending,
            DeliveryState::Delivered,
            DeliveryState::Failed,
        ]
        .into_iter()
        .find(|d| d.as_str() == s)
    }
}

/// What the job document shows of a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Delivery {
    pub(crate) state: DeliveryState,
    pub(crate) attempts: u32,
    pub(crate) last_status: Option<u16>,
    pub(crate) last_error: Option<String>,
    pub(crate) next_attempt_at: Option<SystemTime>,
}

impl Default for Delivery {
    fn default() -> Delivery {
        Delivery {
            state: DeliveryState::Pending,
            attempts: 0,
            last_status: None,
            last_error: None,
            next_attempt_at: None,
        }
    }
}

/// A delivery's state as its sender changes it and readers see it.
#[derive(Debug, Default)]
pub(crate) struct Progress(Mutex<Delivery>);

impl Progress {
    pub(crate) fn get(&self) -> Delivery {
        lock(&self.0).clone()
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut Delivery)) {
        f(&mut lock(&self.0));
    }
}

/// Where a delivery's state is kept after each attempt.
#[async_trait::async_trait]
pub(crate) trait DeliveryLog: Send + Sync {
    async fn record(&self, delivery: &Delivery);
}

/// A job's Kafka record: the topic of its route when it was accepted, and
/// how producing it is going.
#[derive(Debug)]
pub(crate) struct Publication {
    pub(crate) topic: String,
    progress: Progress,
}

impl Publication {
    pub(crate) fn new(topic: String) -> Publication {
        Publication {
            topic,
            progress: Progress::default(),
        }
    }

    /// A publication read back from a store.
    pub(crate) fn restore(topic: String, delivery: Delivery) -> Publication {
        let publication = Publication::new(topic);
        publication.progress.update(|d| *d = delivery);
        publication
    }

    pub(crate) fn delivery(&self) -> Delivery {
        self.progress.get()
    }

    /// Whether it is still to be produced, the job having ended.
    #[cfg(feature = "kafka")]
    pub(crate) fn is_due(&self) -> bool {
        self.delivery().state == DeliveryState::Pending
    }

    #[cfg(feature = "kafka")]
    pub(crate) fn progress(&self) -> &Progress {
        &self.progress
    }
}

/// A job's webhook: where it goes and how its delivery is going.
#[derive(Debug)]
pub(crate) struct Webhook {
    pub(crate) target: Target,
    handoff: AtomicU8,
    delivery: Progress,
}

/// Who sends the webhook of an `auto` job: none while a client waits for it
/// synchronously; once it is `202`, whichever of the runner and the waiter
/// sees the other's step first.
const HELD: u8 = 0;
const ARMED: u8 = 1;
const FINISHED_WHILE_HELD: u8 = 2;

impl Webhook {
    /// `armed`: sent when the job ends. Unarmed, it waits for [`Webhook::arm`].
    pub(crate) fn new(target: Target, armed: bool) -> Webhook {
        Webhook {
            target,
            handoff: AtomicU8::new(if armed { ARMED } else { HELD }),
            delivery: Progress::default(),
        }
    }

    /// A webhook read back from a store outside this process.
    pub(crate) fn restore(target: Target, armed: bool, delivery: Delivery) -> Webhook {
        let hook = Webhook::new(target, armed);
        hook.delivery.update(|d| *d = delivery);
        hook
    }

    /// Whether it is still to be sent, the job having ended.
    pub(crate) fn is_due(&self) -> bool {
        self.is_armed() && self.delivery().state == DeliveryState::Pending
    }

    /// Whether it will be sent when the job ends.
    pub(crate) fn is_armed(&self) -> bool {
        self.handoff.load(Ordering::Acquire) == ARMED
    }

    /// The client was told `202` after all; true when the job has already
    /// ended, so the caller must send the webhook itself.
    pub(crate) fn arm(&self) -> bool {
        self.handoff
            .compare_exchange(HELD, ARMED, Ordering::AcqRel, Ordering::Acquire)
            .is_err_and(|now| now == FINISHED_WHILE_HELD)
    }

    /// The job ended; true when the webhook is to be sent now.
    pub(crate) fn ended(&self) -> bool {
        match self.handoff.compare_exchange(
            HELD,
            FINISHED_WHILE_HELD,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => false,
            Err(now) => now == ARMED,
        }
    }

    pub(crate) fn delivery(&self) -> Delivery {
        self.delivery.get()
    }

    pub(crate) fn progress(&self) -> &Progress {
        &self.delivery
    }
}

/// Attempts by how they ended: delivered, to be retried, given up; one set
/// per channel, kept across reloads.
#[derive(Debug, Default)]
pub(crate) struct Outcomes([AtomicU64; 3]);

/// How an attempt ended, as the metrics name it.
const OUTCOMES: [&str; 3] = ["delivered", "retried", "failed"];

impl Outcomes {
    pub(crate) fn counts(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        OUTCOMES
            .into_iter()
            .zip(self.0.iter())
            .map(|(name, n)| (name, n.load(Relaxed)))
    }

    fn count(&self, outcome: usize) {
        self.0[outcome].fetch_add(1, Relaxed);
    }
}

/// How one attempt failed, and whether another may follow.
#[derive(Debug)]
pub(crate) struct Failed {
    pub(crate) error: String,
    /// The receiver's status code, when it answered.
    pub(crate) status: Option<u16>,
    /// When to try again; `None` gives up.
    pub(crate) retry_in: Option<Duration>,
}

/// One delivery's attempts, for [`drive`]: who it is for, and how its
/// progress is shown, kept and counted.
pub(crate) struct Attempts<'a> {
    /// The job's id, and whence it came, for the log.
    pub(crate) job: &'a str,
    pub(crate) origin: &'a Origin,
    pub(crate) channel: Channel,
    pub(crate) progress: &'a Progress,
    pub(crate) outcomes: &'a Outcomes,
    pub(crate) log: &'a dyn DeliveryLog,
}

/// Makes a delivery's attempts until one is taken or a failure gives up:
/// the loop webhooks and Kafka records share. One carried on from the
/// store (after a restart, or from a replica that died) goes on where it
/// stopped. After each attempt its end is counted, then shown in the
/// progress (whoever sees it in the job also sees it in the metrics), then
/// kept by the log. `attempt(n)` makes attempt number `n`: `Ok` with the
/// receiver's status code, if it has one, when it was taken.
pub(crate) async fn drive<F>(attempts: Attempts<'_>, mut attempt: impl FnMut(u32) -> F)
where
    F: Future<Output = Result<Option<u16>, Failed>>,
{
    let Attempts {
        job,
        origin,
        channel,
        progress,
        outcomes,
        log,
    } = attempts;
    let resumed = progress.get();
    if let Some(at) = resumed.next_attempt_at {
        tokio::time::sleep(at.duration_since(SystemTime::now()).unwrap_or_default()).await;
    }
    let mut n = resumed.attempts;
    loop {
        n += 1;
        let failed = match attempt(n).await {
            Ok(status) => {
                outcomes.count(0);
                progress.update(|d| {
                    d.state = DeliveryState::Delivered;
                    d.attempts = n;
                    d.last_status = status;
                    d.last_error = None;
                    d.next_attempt_at = None;
                });
                log.record(&progress.get()).await;
                tracing::info!(
                    job,
                    channel = channel.as_str(),
                    attempt = n,
                    status,
                    request_id = origin.request_id(),
                    trace_id = origin.trace_id(),
                    "delivered"
                );
                return;
            }
            Err(failed) => failed,
        };
        outcomes.count(if failed.retry_in.is_some() { 1 } else { 2 });
        progress.update(|d| {
            d.attempts = n;
            d.last_status = failed.status;
            d.last_error = Some(failed.error.clone());
            d.next_attempt_at = failed.retry_in.map(|wait| SystemTime::now() + wait);
            if failed.retry_in.is_none() {
                d.state = DeliveryState::Failed;
            }
        });
        log.record(&progress.get()).await;
        let channel = channel.as_str();
        let Some(wait) = failed.retry_in else {
            tracing::warn!(
                job,
                channel,
                attempt = n,
                error = failed.error,
                request_id = origin.request_id(),
                trace_id = origin.trace_id(),
                "not delivered; giving up"
            );
            return;
        };
        tracing::info!(job, channel, attempt = n, error = failed.error, retry_in = %humantime::format_duration(wait), request_id = origin.request_id(), trace_id = origin.trace_id(), "delivery attempt failed");
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handoff_sends_exactly_once() {
        let target = Target::parse("http://hooks.example.com/", None, &Default::default()).unwrap();
        // The job ends while the client still waits, then the wait runs out.
        let hook = Webhook::new(target.clone(), false);
        assert!(!hook.ended());
        assert!(hook.arm());
        // The wait runs out first.
        let hook = Webhook::new(target.clone(), false);
        assert!(!hook.arm());
        assert!(hook.ended());
        // Never armed: the client had its answer directly.
        let hook = Webhook::new(target.clone(), false);
        assert!(!hook.ended());
        // Armed from the start.
        assert!(Webhook::new(target, true).ended());
    }
}
