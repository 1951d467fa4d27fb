//! Kafka for services: when a job of a route with `kafka_topic` ends, its
//! document is produced to that topic (key: the job id; headers: the job id
//! and its status), at least once: `acks=all`, an idempotent producer, and
//! tries again, past librdkafka's own, while the brokers are away.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::ClientConfig;

use crate::backoff::backoff;
use crate::config::KafkaConfig;

/// How long one produce may wait for the brokers before the gateway tries
/// again itself (librdkafka's `message.timeout.ms`; its default is five
/// minutes, during which a job document would say nothing of the outage).
const MESSAGE_TIMEOUT: &str = "30000";

/// A job's record is produced again for this long after its first try,
/// then given up as failed: about a day, like a webhook's schedule.
const RETRY_FOR: Duration = Duration::from_secs(27 * 3600);

/// Waits between tries to produce a job's record: from a second, doubling,
/// at most a minute.
const BACKOFF: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// Produces job documents; one per gateway, shared by every route.
pub(crate) struct Kafka {
    producer: FutureProducer,
    /// Produce attempts by how they ended: delivered, to be retried, given
    /// up.
    outcomes: [AtomicU64; 3],
}

const OUTCOMES: [&str; 3] = ["delivered", "retried", "failed"];

/// What a record of a job says besides its document.
pub(crate) struct Record<'a> {
    pub(crate) topic: &'a str,
    pub(crate) job: &'a str,
    pub(crate) status: &'a str,
    pub(crate) document: Bytes,
}

fn client_config(config: &KafkaConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set("client.id", "asyncgate")
        .set("message.timeout.ms", MESSAGE_TIMEOUT);
    for (key, value) in &config.properties {
        client.set(key, value);
    }
    client
        .set("bootstrap.servers", &config.brokers)
        .set("acks", "all")
        .set("enable.idempotence", "true");
    client
}

/// Whether librdkafka takes the settings: names it knows, values it
/// accepts. Nothing is connected.
pub(crate) fn check(config: &KafkaConfig) -> Result<(), String> {
    client_config(config)
        .create_native_config()
        .map(drop)
        .map_err(|e| e.to_string())
}

impl Kafka {
    /// Starts the producer; it connects in the background, so a broker
    /// that is down delays records, never the gateway's start.
    pub(crate) fn new(config: &KafkaConfig) -> Result<Kafka, rdkafka::error::KafkaError> {
        Ok(Kafka {
            producer: client_config(config).create()?,
            outcomes: Default::default(),
        })
    }

    /// Produce attempts so far, by how they ended.
    pub(crate) fn outcomes(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        OUTCOMES
            .into_iter()
            .zip(self.outcomes.iter())
            .map(|(name, n)| (name, n.load(Relaxed)))
    }

    /// Produces `record` until the brokers acknowledge it, or
    /// [`RETRY_FOR`] has passed.
    pub(crate) async fn publish(&self, record: Record<'_>) {
        let first = Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "asyncgate-job-id",
                    value: Some(record.job),
                })
                .insert(Header {
                    key: "asyncgate-job-status",
                    value: Some(record.status),
                });
            let message = FutureRecord::to(record.topic)
                .key(record.job)
                .payload(&record.document[..])
                .headers(headers);
            // Never waits for room in librdkafka's queue with a deadline:
            // only this job's record waits, never a job.
            let error = match self.producer.send(message, Timeout::Never).await {
                Ok(delivered) => {
                    self.outcomes[0].fetch_add(1, Relaxed);
                    tracing::info!(
                        job = record.job,
                        topic = record.topic,
                        partition = delivered.partition,
                        offset = delivered.offset,
                        attempt,
                        "job record produced"
                    );
                    return;
                }
                Err((error, _)) => error,
            };
            if first.elapsed() >= RETRY_FOR {
                self.outcomes[2].fetch_add(1, Relaxed);
                tracing::warn!(job = record.job, topic = record.topic, attempt, %error, "job record not produced; giving up");
                return;
            }
            self.outcomes[1].fetch_add(1, Relaxed);
            let wait = backoff(BACKOFF, BACKOFF_MAX, attempt);
            tracing::warn!(job = record.job, topic = record.topic, attempt, %error, retry_in = ?wait, "job record not produced yet");
            tokio::time::sleep(wait).await;
        }
    }
}
