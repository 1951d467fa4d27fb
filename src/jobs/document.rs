//! The job document: what `GET {jobs_path}/{id}` answers, every event
//! stream sends and every webhook carries. Serialized straight from the job:
//! ids, times and URLs are written through `Display`, with no intermediate
//! strings.

use std::time::SystemTime;

use serde::Serialize;

use super::id::JobId;
use super::model::Job;
use crate::delivery::Delivery;

#[derive(Serialize)]
pub(crate) struct Document<'a> {
    #[serde(serialize_with = "display")]
    id: JobId,
    status: &'static str,
    /// What a webhook's envelope calls the job's state.
    #[serde(skip)]
    event_type: &'static str,
    route: &'a str,
    method: &'a str,
    #[serde(serialize_with = "display")]
    created_at: Timestamp,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "display_some"
    )]
    started_at: Option<Timestamp>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "display_some"
    )]
    finished_at: Option<Timestamp>,
    attempts: u32,
    priority: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    progress: Option<ProgressDoc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response: Option<ResponseDoc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorDoc>,
    #[serde(
        rename = "resourceLocation",
        skip_serializing_if = "Option::is_none",
        serialize_with = "display_some"
    )]
    resource_location: Option<JobUrl<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry: Option<RetryDoc<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    webhook: Option<WebhookDoc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kafka: Option<KafkaDoc<'a>>,
    links: Links<'a>,
}

/// A job waiting to be tried again.
#[derive(Serialize)]
struct RetryDoc<'a> {
    #[serde(serialize_with = "display")]
    next_attempt_at: Timestamp,
    reason: &'a str,
}

/// How a delivery of the job's document goes.
#[derive(Serialize)]
struct DeliveryDoc {
    state: &'static str,
    attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_error: Option<String>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "display_some"
    )]
    next_attempt_at: Option<Timestamp>,
}

impl From<Delivery> for DeliveryDoc {
    fn from(d: Delivery) -> DeliveryDoc {
        DeliveryDoc {
            state: d.state.as_str(),
            attempts: d.attempts,
            last_status: d.last_status,
            last_error: d.last_error,
            next_attempt_at: d.next_attempt_at.map(Timestamp),
        }
    }
}

#[derive(Serialize)]
struct WebhookDoc {
    url: String,
    #[serde(flatten)]
    delivery: DeliveryDoc,
}

/// A job's Kafka record: its topic, and how producing it goes.
#[derive(Serialize)]
struct KafkaDoc<'a> {
    topic: &'a str,
    #[serde(flatten)]
    delivery: DeliveryDoc,
}

#[derive(Serialize)]
pub(super) struct ProgressDoc {
    pub(super) percent: u8,
    pub(super) estimated: bool,
}

#[derive(Serialize)]
struct ResponseDoc {
    status: u16,
    bytes: u64,
}

/// RFC 9457's members, and beside them the `code` and `message` that
/// Azure-style LRO clients (azure-core, @azure/core-lro) read from a failed
/// operation's `error` to raise a useful exception.
#[derive(Serialize)]
struct ErrorDoc {
    #[serde(rename = "type")]
    type_uri: String,
    title: &'static str,
    detail: String,
    code: &'static str,
    message: String,
}

#[derive(Serialize)]
struct Links<'a> {
    #[serde(rename = "self", serialize_with = "display")]
    self_: JobUrl<'a>,
    #[serde(serialize_with = "display")]
    result: JobUrl<'a>,
    #[serde(serialize_with = "display")]
    cancel: JobUrl<'a>,
    /// A bound job's event stream and WebSocket, without credentials.
    #[serde(skip_serializing_if = "Option::is_none")]
    events: Option<String>,
}

/// `{prefix}/{id}{suffix}`, written when serialized.
struct JobUrl<'a> {
    prefix: &'a str,
    id: JobId,
    suffix: &'static str,
}

impl std::fmt::Display for JobUrl<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}{}", self.prefix, self.id, self.suffix)
    }
}

/// RFC 3339 in whole seconds, UTC: `2026-11-21T10:00:00Z`.
struct Timestamp(SystemTime);

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&humantime::format_rfc3339_seconds(self.0), f)
    }
}

fn display<T: std::fmt::Display, S: serde::Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(value)
}

fn display_some<T: std::fmt::Display, S: serde::Serializer>(
    value: &Option<T>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(v) => s.collect_str(v),
        None => s.serialize_none(),
    }
}

impl<'a> Document<'a> {
    /// `url_prefix` starts every job URL; `progress` is how far a running
    /// job has come, when anything tells.
    pub(super) fn new(
        job: &'a Job,
        url_prefix: &'a str,
        progress: Option<ProgressDoc>,
        result_limit: Option<u64>,
    ) -> Document<'a> {
        let url = |suffix| JobUrl {
            prefix: url_prefix,
            id: job.id,
            suffix,
        };
        let error = job.failure.map(|f| {
            let p = f.problem_within(result_limit);
            ErrorDoc {
                type_uri: p.type_uri(),
                title: p.title,
                message: p.detail.clone(),
                detail: p.detail,
                code: p.kind,
            }
        });
        Document {
            id: job.id,
            status: job.status.as_str(),
            event_type: job.status.event_type(),
            route: &job.route,
            method: job.method.as_str(),
            created_at: Timestamp(job.created_at),
            started_at: job.started_at.map(Timestamp),
            finished_at: job.finished_at.map(Timestamp),
            attempts: job.attempts,
            priority: job.priority,
            progress,
            response: job.response.map(|r| ResponseDoc {
                status: r.status,
                bytes: r.bytes,
            }),
            error,
            resource_location: job.has_result().then(|| url("/result")),
            retry: job.retry.as_ref().map(|r| RetryDoc {
                next_attempt_at: Timestamp(r.at),
                reason: &r.reason,
            }),
            webhook: job.webhook.as_deref().map(|hook| WebhookDoc {
                url: hook.target.shown(),
                delivery: hook.delivery().into(),
            }),
            kafka: job.kafka.as_deref().map(|publication| KafkaDoc {
                topic: &publication.topic,
                delivery: publication.delivery().into(),
            }),
            links: Links {
                self_: url(""),
                result: url("/result"),
                cancel: url(""),
                events: None,
            },
        }
    }

    /// With a bound job's events link (see `app::job_api::Capabilities`).
    pub(crate) fn with_events_link(mut self, url: String) -> Document<'a> {
        self.links.events = Some(url);
        self
    }

    /// Without the state of its deliveries: what a webhook or a Kafka
    /// record carries, the same on every attempt.
    pub(super) fn without_deliveries(mut self) -> Document<'a> {
        self.webhook = None;
        self.kafka = None;
        self
    }

    pub(crate) fn to_json(&self) -> Vec<u8> {
        // A document is a few hundred bytes: one allocation of that size.
        let mut json = Vec::with_capacity(512);
        serde_json::to_writer(&mut json, self).expect("a job document always serializes");
        json
    }

    /// A webhook's payload: the document in Standard Webhooks' recommended
    /// envelope, `{"type": "job.succeeded", "timestamp", "data"}`, the
    /// event's time being the job's end.
    pub(super) fn to_webhook_json(&self) -> Vec<u8> {
        let envelope = Envelope {
            kind: self.event_type,
            timestamp: self
                .finished_at
                .as_ref()
                .map_or_else(|| Timestamp(SystemTime::now()), |t| Timestamp(t.0)),
            data: self,
        };
        let mut json = Vec::with_capacity(576);
        serde_json::to_writer(&mut json, &envelope).expect("an envelope always serializes");
        json
    }
}

#[derive(Serialize)]
struct Envelope<'d, 'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(serialize_with = "display")]
    timestamp: Timestamp,
    data: &'d Document<'a>,
}
