//! Deliveries of an ended job's document to where it is awaited: a
//! webhook receiver, a Kafka topic. Each keeps its state in the job
//! document and in the store, so that it is shown wherever the job is read
//! and carried on after a restart or by another replica.

use std::sync::Mutex;
use std::time::SystemTime;

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
    pub(crate) fn update(&self, f: impl FnOnce(&mut Delivery)) {
        self.progress.update(f);
    }
}
