//! A job as the embedded stores keep it: one compact record (postcard) per
//! job, the request's or the response's body beside it. The disk store
//! writes it to its database; the memory store keeps finished jobs in this
//! form, under half the size of a [`Job`] and its response. Times are
//! milliseconds since the Unix epoch, so they mean the same after a restart.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{Method, StatusCode};
use serde::{Deserialize, Serialize};

use crate::callback::target::Target;
use crate::delivery::Webhook;
use crate::delivery::{Channel, Delivery, DeliveryState, Publication};
use crate::header_block::HeaderBlock;
use crate::jobs::id::JobId;
use crate::jobs::model::{
    BackendRequest, Failure, Job, JobStatus, ResponseSummary, RetryWait, StoredResponse,
};
use crate::jobs::owner::Owner;
use crate::jobs::store::{Binding, StoreError};

/// The layout of the records this build writes, first byte of each: a
/// record of another layout (an older or newer build's) is refused by
/// name, never misread. A change to [`Record`] or what it holds is a new
/// format.
const FORMAT: u8 = 3;

/// Format 2 is format 3 without the trailing `request_id` and
/// `traceparent`, and format 1 is format 2 without `priority`: in
/// postcard an absent `Option` is one zero byte, so an older record reads
/// as a current one once a zero byte is added for each field it lacks.
const OLDER_FORMATS: [(u8, &[u8]); 2] = [(1, &[0, 0, 0]), (2, &[0, 0])];

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Record {
    pub(super) status: String,
    pub(super) route: String,
    pub(super) method: String,
    pub(super) created: u64,
    pub(super) started: Option<u64>,
    pub(super) finished: Option<u64>,
    pub(super) attempts: u32,
    /// Whether a job found running after a crash is sent again.
    pub(super) resend_on_loss: bool,
    pub(super) owner: Option<[u8; 32]>,
    pub(super) hook: Option<HookRecord>,
    /// While queued or running: the request's path and headers; its body is
    /// kept beside the record.
    pub(super) request: Option<RequestRecord>,
    pub(super) failure: Option<String>,
    pub(super) response: Option<ResponseRecord>,
    /// When a finished job's result expires.
    pub(super) expires: Option<u64>,
    /// Bytes charged to the budget for it.
    pub(super) charged: u64,
    /// While it waits to be tried again: when, and why.
    pub(super) retry_at: Option<u64>,
    pub(super) retry_reason: Option<String>,
    pub(super) kafka: Option<KafkaRecord>,
    /// Last but for the fields of format 3, so that a format-1 record
    /// reads as one without it.
    pub(super) priority: Option<u8>,
    /// The submission's, for the job's log lines; last, as format 3 added them.
    pub(super) request_id: Option<String>,
    pub(super) traceparent: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct RequestRecord {
    pub(super) path: String,
    pub(super) headers: Vec<u8>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct ResponseRecord {
    pub(super) status: u16,
    pub(super) headers: Vec<u8>,
    pub(super) bytes: u64,
    /// Its body is in a file of its own rather than here.
    pub(super) in_file: bool,
    /// The body when it is small enough to live in the record.
    pub(super) body: Option<Vec<u8>>,
}

impl ResponseRecord {
    /// Its status and headers, checked; the headers are taken out of it.
    pub(super) fn head(&mut self, id: JobId) -> Result<(StatusCode, HeaderBlock), StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("job {id}: {what}"));
        let status = StatusCode::from_u16(self.status).map_err(|_| corrupt("response status"))?;
        let headers = HeaderBlock::from_bytes(Bytes::from(std::mem::take(&mut self.headers)))
            .ok_or_else(|| corrupt("response headers"))?;
        Ok((status, headers))
    }
}

/// A delivery's state as the document shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct DeliveryRecord {
    pub(super) state: String,
    pub(super) attempts: u32,
    pub(super) last_status: Option<u16>,
    pub(super) last_error: Option<String>,
    pub(super) next: Option<u64>,
}

impl DeliveryRecord {
    pub(super) fn of(delivery: &Delivery) -> DeliveryRecord {
        DeliveryRecord {
            state: delivery.state.as_str().to_owned(),
            attempts: delivery.attempts,
            last_status: delivery.last_status,
            last_error: delivery.last_error.clone(),
            next: delivery.next_attempt_at.map(millis_of),
        }
    }

    fn delivery(&self) -> Delivery {
        Delivery {
            state: DeliveryState::parse(&self.state).unwrap_or(DeliveryState::Pending),
            attempts: self.attempts,
            last_status: self.last_status,
            last_error: self.last_error.clone(),
            next_attempt_at: self.next.map(time_of),
        }
    }

    fn pending(&self) -> bool {
        self.state == DeliveryState::Pending.as_str()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct HookRecord {
    pub(super) url: String,
    pub(super) armed: bool,
    pub(super) delivery: DeliveryRecord,
}

impl HookRecord {
    fn of(hook: &Webhook) -> HookRecord {
        HookRecord {
            url: hook.target.as_str(),
            armed: hook.is_armed(),
            delivery: DeliveryRecord::of(&hook.delivery()),
        }
    }

    /// Still to be sent once the job has ended.
    fn due(&self) -> bool {
        self.armed && self.delivery.pending()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct KafkaRecord {
    pub(super) topic: String,
    pub(super) delivery: DeliveryRecord,
}

impl Record {
    /// A new queued job.
    pub(super) fn queued(
        job: &Job,
        request: &BackendRequest,
        resend_on_loss: bool,
        charged: u64,
    ) -> Record {
        Record {
            status: JobStatus::Queued.as_str().to_owned(),
            route: job.route.to_string(),
            method: job.method.as_str().to_owned(),
            created: millis_of(job.created_at),
            started: None,
            finished: None,
            attempts: job.attempts,
            resend_on_loss,
            owner: job.owner.map(|o| o.digest()),
            hook: job.webhook.as_deref().map(HookRecord::of),
            kafka: job.kafka.as_deref().map(|p| KafkaRecord {
                topic: p.topic.clone(),
                delivery: DeliveryRecord::of(&p.delivery()),
            }),
            request: Some(RequestRecord {
                path: request.path.as_str().to_owned(),
                headers: request.headers.as_bytes().to_vec(),
            }),
            failure: None,
            response: None,
            expires: None,
            charged,
            retry_at: None,
            retry_reason: None,
            priority: Some(job.priority),
            request_id: job.origin.request_id.as_deref().map(str::to_owned),
            traceparent: job.origin.traceparent.as_deref().map(str::to_owned),
        }
    }

    /// A finished job as the memory store keeps it. Its deliveries and its
    /// response's body are not in the record: the store holds them beside it.
    pub(super) fn finished(job: &Job, response: Option<&StoredResponse>) -> Record {
        Record {
            status: job.status.as_str().to_owned(),
            route: job.route.to_string(),
            method: job.method.as_str().to_owned(),
            created: millis_of(job.created_at),
            started: job.started_at.map(millis_of),
            finished: job.finished_at.map(millis_of),
            attempts: job.attempts,
            resend_on_loss: false,
            owner: job.owner.map(|o| o.digest()),
            hook: None,
            request: None,
            failure: job.failure.map(|f| f.as_str().to_owned()),
            response: response.map(|r| ResponseRecord {
                status: r.status.as_u16(),
                headers: r.headers.as_bytes().to_vec(),
                bytes: r.body.len() as u64,
                in_file: false,
                body: None,
            }),
            expires: None,
            charged: 0,
            retry_at: None,
            retry_reason: None,
            kafka: None,
            priority: Some(job.priority),
            request_id: job.origin.request_id.as_deref().map(str::to_owned),
            traceparent: job.origin.traceparent.as_deref().map(str::to_owned),
        }
    }

    /// The format byte, then the record.
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut buffer = Vec::with_capacity(self.encoded_len_bound());
        buffer.push(FORMAT);
        postcard::to_extend(self, buffer).expect("a record always serializes")
    }

    /// Room for the encoded record, so encoding does not grow its buffer
    /// step by step: every field's bytes, and for each of the fixed fields
    /// and length prefixes the most a varint of it takes.
    fn encoded_len_bound(&self) -> usize {
        const FIXED: usize = 256;
        let request = self
            .request
            .as_ref()
            .map_or(0, |r| r.path.len() + r.headers.len());
        let response = self
            .response
            .as_ref()
            .map_or(0, |r| r.headers.len() + r.body.as_ref().map_or(0, Vec::len));
        let delivery = |name: &str, d: &DeliveryRecord| {
            FIXED + name.len() + d.last_error.as_ref().map_or(0, String::len)
        };
        let deliveries = self
            .hook
            .as_ref()
            .map_or(0, |h| delivery(&h.url, &h.delivery))
            + self
                .kafka
                .as_ref()
                .map_or(0, |k| delivery(&k.topic, &k.delivery));
        let strings = [
            &self.failure,
            &self.retry_reason,
            &self.request_id,
            &self.traceparent,
        ]
        .into_iter()
        .flatten()
        .map(String::len)
        .sum::<usize>();
        FIXED
            + self.status.len()
            + self.route.len()
            + self.method.len()
            + request
            + response
            + deliveries
            + strings
    }

    pub(super) fn decode(id: JobId, bytes: &[u8]) -> Result<Record, StoreError> {
        let corrupt = |e: postcard::Error| StoreError::Corrupt(format!("job {id}: {e}"));
        let (format, record) = bytes.split_first().unwrap_or((&0, &[]));
        if *format == FORMAT {
            return postcard::from_bytes(record).map_err(corrupt);
        }
        match OLDER_FORMATS.iter().find(|(older, _)| older == format) {
            Some((_, absent)) => postcard::from_bytes(&[record, absent].concat()).map_err(corrupt),
            None => Err(StoreError::Corrupt(format!(
                "job {id}: not a record of format {FORMAT}, the one this build reads \
                 (written by another version of asyncgate?)"
            ))),
        }
    }

    pub(super) fn status(&self) -> Option<JobStatus> {
        JobStatus::parse(&self.status)
    }

    /// Whom its tombstone will answer `410`, if the job is bound.
    pub(super) fn binding(&self) -> Option<Binding> {
        self.owner.map(|digest| Binding {
            route: Arc::from(self.route.as_str()),
            owner: Owner::from_digest(digest),
        })
    }

    /// Whether a delivery of the ended job is still to be made: what a
    /// restart carries on.
    pub(super) fn delivery_due(&self) -> bool {
        !self.is_active()
            && (self.hook.as_ref().is_some_and(HookRecord::due)
                || self.kafka.as_ref().is_some_and(|k| k.delivery.pending()))
    }

    /// When its deliveries still due next try, the latest of them.
    pub(super) fn next_delivery(&self) -> Option<u64> {
        let hook = self
            .hook
            .as_ref()
            .filter(|h| h.due())
            .map(|h| h.delivery.next);
        let kafka = self
            .kafka
            .as_ref()
            .filter(|k| k.delivery.pending())
            .map(|k| k.delivery.next);
        hook.into_iter().chain(kafka).flatten().max()
    }

    /// The recorded state of one of its deliveries.
    pub(super) fn delivery_mut(&mut self, channel: Channel) -> Option<&mut DeliveryRecord> {
        match channel {
            Channel::Webhook => self.hook.as_mut().map(|h| &mut h.delivery),
            Channel::Kafka => self.kafka.as_mut().map(|k| &mut k.delivery),
        }
    }

    pub(super) fn is_active(&self) -> bool {
        self.status().is_some_and(|s| !s.is_terminal())
    }

    /// The job it records. Its webhook, if any, is a new one carrying the
    /// recorded delivery state.
    pub(super) fn job(&self, id: JobId) -> Result<Job, StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("job {id}: {what}"));
        let method = Method::from_bytes(self.method.as_bytes()).map_err(|_| corrupt("method"))?;
        let mut job = Job::queued(id, self.route.as_str().into(), method);
        job.status = self.status().ok_or_else(|| corrupt("status"))?;
        job.created_at = time_of(self.created);
        job.started_at = self.started.map(time_of);
        job.finished_at = self.finished.map(time_of);
        job.attempts = self.attempts;
        job.response = self.response.as_ref().map(|r| ResponseSummary {
            status: r.status,
            bytes: r.bytes,
        });
        job.failure = self
            .failure
            .as_deref()
            .map(|f| Failure::parse(f).ok_or_else(|| corrupt("failure")))
            .transpose()?;
        job.owner = self.owner.map(Owner::from_digest);
        job.priority = self.priority.unwrap_or(crate::priority::DEFAULT_URGENCY);
        job.origin.request_id = self.request_id.as_deref().map(Arc::from);
        job.origin.traceparent = self.traceparent.as_deref().map(Arc::from);
        job.retry = self.retry_at.map(|at| RetryWait {
            at: time_of(at),
            reason: self.retry_reason.clone().unwrap_or_default(),
        });
        if let Some(hook) = &self.hook {
            let target = Target::restore(&hook.url).ok_or_else(|| corrupt("webhook url"))?;
            let delivery = hook.delivery.delivery();
            job.webhook = Some(Arc::new(Webhook::restore(target, hook.armed, delivery)));
        }
        if let Some(kafka) = &self.kafka {
            let delivery = kafka.delivery.delivery();
            job.kafka = Some(Arc::new(Publication::restore(
                kafka.topic.clone(),
                delivery,
            )));
        }
        Ok(job)
    }

    /// The request of a queued or running job, with its body.
    pub(super) fn request(&self, id: JobId, body: Bytes) -> Result<BackendRequest, StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("job {id}: {what}"));
        let request = self.request.as_ref().ok_or_else(|| corrupt("no request"))?;
        Ok(BackendRequest {
            method: Method::from_bytes(self.method.as_bytes()).map_err(|_| corrupt("method"))?,
            path: PathAndQuery::try_from(request.path.as_str()).map_err(|_| corrupt("path"))?,
            headers: HeaderBlock::from_bytes(Bytes::from(request.headers.clone()))
                .ok_or_else(|| corrupt("headers"))?,
            body,
        })
    }
}

pub(super) fn millis_of(t: SystemTime) -> u64 {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

pub(super) fn time_of(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_gives_back_the_job_and_request_it_was_made_from() {
        let mut job = Job::queued(JobId::random(), "reports".into(), Method::PUT);
        job.owner = Some(Owner::from_digest([7; 32]));
        let mut headers = http::HeaderMap::new();
        headers.insert("x-a", "1".parse().unwrap());
        let request = BackendRequest {
            method: Method::PUT,
            path: PathAndQuery::from_static("/r?q=1"),
            headers: HeaderBlock::pack(&headers),
            body: Bytes::from_static(b"body"),
        };
        let record = Record::queued(&job, &request, true, 1000);
        let back = Record::decode(job.id, &record.encode()).unwrap();
        let again = back.job(job.id).unwrap();
        assert_eq!(again.status, JobStatus::Queued);
        assert_eq!(again.owner, job.owner);
        assert_eq!(&*again.route, "reports");
        assert_eq!(millis_of(again.created_at), millis_of(job.created_at));
        let req = back.request(job.id, Bytes::from_static(b"body")).unwrap();
        assert_eq!(req.path.as_str(), "/r?q=1");
        assert_eq!(req.headers, request.headers);
        assert!(back.resend_on_loss);
    }

    /// A queued `GET /` and its request.
    fn a_get() -> (Job, BackendRequest) {
        let job = Job::queued(JobId::random(), "reports".into(), Method::GET);
        let request = BackendRequest {
            method: Method::GET,
            path: PathAndQuery::from_static("/"),
            headers: HeaderBlock::pack(&http::HeaderMap::new()),
            body: Bytes::new(),
        };
        (job, request)
    }

    #[test]
    fn records_of_older_formats_read_without_the_fields_they_lack() {
        let (mut job, request) = a_get();
        let mut record = Record::queued(&job, &request, true, 1000);
        record.priority = None;
        let mut format_1 = record.encode();
        assert_eq!(format_1.split_off(format_1.len() - 3), [0, 0, 0]);
        format_1[0] = 1;
        let back = Record::decode(job.id, &format_1).unwrap();
        assert_eq!((back.priority, back.request_id), (None, None));
        assert_eq!(back.charged, 1000);
        record.priority = Some(0);
        let mut format_2 = record.encode();
        format_2.truncate(format_2.len() - 2);
        format_2[0] = 2;
        assert_eq!(Record::decode(job.id, &format_2).unwrap().priority, Some(0));
        job.origin.request_id = Some("req-1".into());
        let current = Record::queued(&job, &request, true, 1000);
        let back = Record::decode(job.id, &current.encode()).unwrap();
        assert_eq!(back.job(job.id).unwrap().origin.request_id(), Some("req-1"));
    }

    #[test]
    fn a_record_of_another_format_is_refused_by_name() {
        let (job, request) = a_get();
        let mut bytes = Record::queued(&job, &request, true, 1000).encode();
        bytes[0] = FORMAT + 1;
        let Err(StoreError::Corrupt(why)) = Record::decode(job.id, &bytes) else {
            panic!("read a record of another format");
        };
        assert!(why.contains("format"), "{why}");
    }

    #[test]
    fn the_room_made_for_a_record_holds_it() {
        let job = Job::queued(JobId::random(), "reports".into(), Method::POST);
        let mut headers = http::HeaderMap::new();
        headers.insert("x-long", "v".repeat(3000).parse().unwrap());
        let request = BackendRequest {
            method: Method::POST,
            path: PathAndQuery::from_static("/r?q=1"),
            headers: HeaderBlock::pack(&headers),
            body: Bytes::new(),
        };
        let mut record = Record::queued(&job, &request, false, u64::MAX);
        record.started = Some(u64::MAX);
        record.retry_reason = Some("x".repeat(500));
        let queued = record.encode();
        assert!(queued.len() <= record.encoded_len_bound());
        record.request = None;
        record.response = Some(ResponseRecord {
            status: 200,
            headers: vec![1; 700],
            bytes: 5000,
            in_file: false,
            body: Some(vec![2; 5000]),
        });
        let finished = record.encode();
        assert!(finished.len() <= record.encoded_len_bound());
        assert_eq!(Record::decode(job.id, &finished).unwrap().charged, u64::MAX);
    }

    #[test]
    fn garbage_is_a_corrupt_record_not_a_panic() {
        let id = JobId::random();
        assert!(matches!(
            Record::decode(id, b"\xff\xff\xff"),
            Err(StoreError::Corrupt(_))
        ));
    }
}
