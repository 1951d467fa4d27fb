//! Kafka for services: when a job of a route with `kafka_topic` ends, its
//! document is produced to that topic (key: the job id; headers: the job id
//! and its status), at least once: `acks=all`, an idempotent producer, and
//! tries again, past librdkafka's own, while the brokers are away.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::future_producer::Delivery as Delivered;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::ClientConfig;

use crate::backoff::backoff;
use crate::config::KafkaConfig;
use crate::delivery::{self, Attempts, Channel, DeliveryLog, Failed, Outcomes, Publication};
use crate::headers::Origin;
use crate::telemetry;

/// How long one produce may wait for the brokers before the gateway tries
/// again itself (librdkafka's `message.timeout.ms`; its default is five
/// minutes, during which a job document would say nothing of the outage).
const MESSAGE_TIMEOUT: &str = "30000";

/// A job's record is produced again for this long after the job ended,
/// then given up as failed: about a day, like a webhook's schedule.
const RETRY_FOR: Duration = Duration::from_secs(27 * 3600);

/// Waits between tries to produce a job's record: from a second, doubling,
/// at most a minute.
const BACKOFF: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// Produces job documents; one per gateway, shared by every route.
pub(crate) struct Kafka {
    producer: FutureProducer,
    /// librdkafka's `message.timeout.ms` in force: the longest one try
    /// takes.
    attempt_timeout: Duration,
    /// Produce attempts by how they ended.
    outcomes: Outcomes,
}

/// A job's record: what it says besides its topic.
pub(crate) struct Record {
    pub(crate) job: String,
    pub(crate) status: &'static str,
    /// When the job ended: tries stop [`RETRY_FOR`] after.
    pub(crate) ended: SystemTime,
    pub(crate) document: Bytes,
    /// Whence the job came: its record carries its trace.
    pub(crate) origin: Origin,
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
    pub(crate) fn new(config: &KafkaConfig) -> Result<Kafka, KafkaError> {
        let client = client_config(config);
        let attempt_timeout = client
            .get("message.timeout.ms")
            .and_then(|ms| ms.parse().ok())
            .map_or(Duration::ZERO, Duration::from_millis);
        Ok(Kafka {
            producer: client.create()?,
            attempt_timeout,
            outcomes: Default::default(),
        })
    }

    /// The longest one try to produce a record takes.
    pub(crate) fn attempt_timeout(&self) -> Duration {
        self.attempt_timeout
    }

    /// Produce attempts so far, by how they ended.
    pub(crate) fn outcomes(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.outcomes.counts()
    }

    /// Produces `record` to the publication's topic until the brokers
    /// acknowledge it, or [`RETRY_FOR`] after the job ended. `publication`
    /// follows along, and `log` keeps its state after every try; one
    /// carried on from the store goes on where it stopped.
    pub(crate) async fn publish(
        &self,
        record: &Record,
        publication: &Publication,
        log: &dyn DeliveryLog,
    ) {
        let topic = publication.topic.as_str();
        let attempts = Attempts {
            job: &record.job,
            origin: &record.origin,
            channel: Channel::Kafka,
            progress: publication.progress(),
            outcomes: &self.outcomes,
            log,
        };
        delivery::drive(attempts, |n| async move {
            let job_trace = record.origin.traceparent.as_deref();
            let mut span = telemetry::Span::delivery(job_trace, Channel::Kafka, &record.job);
            let traceparent = telemetry::delivery_traceparent(&span, job_trace);
            let error = match self.produce(topic, record, traceparent.as_deref()).await {
                Ok(delivered) => {
                    tracing::debug!(
                        job = record.job,
                        topic,
                        partition = delivered.partition,
                        offset = delivered.offset,
                        "job record produced"
                    );
                    return Ok(None);
                }
                Err(error) => error,
            };
            span.fail(&error.to_string());
            let spent = SystemTime::now()
                .duration_since(record.ended)
                .unwrap_or_default();
            Err(Failed {
                error: error.to_string(),
                status: None,
                retry_in: (spent < RETRY_FOR).then(|| backoff(BACKOFF, BACKOFF_MAX, n)),
            })
        })
        .await;
    }

    /// `traceparent`: the W3C trace context the record carries, as a
    /// header of that name.
    async fn produce(
        &self,
        topic: &str,
        record: &Record,
        traceparent: Option<&str>,
    ) -> Result<Delivered, KafkaError> {
        let mut headers = OwnedHeaders::new()
            .insert(Header {
                key: "asyncgate-job-id",
                value: Some(&record.job),
            })
            .insert(Header {
                key: "asyncgate-job-status",
                value: Some(record.status),
            });
        if let Some(traceparent) = traceparent {
            headers = headers.insert(Header {
                key: "traceparent",
                value: Some(traceparent),
            });
        }
        let message = FutureRecord::to(topic)
            .key(&record.job)
            .payload(&record.document[..])
            .headers(headers);
        // No deadline for room in librdkafka's queue: only this record
        // waits, never a job.
        self.producer
            .send(message, Timeout::Never)
            .await
            .map_err(|(error, _)| error)
    }
}
