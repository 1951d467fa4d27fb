//! How a job is laid out in its Redis hash: the fields lookups read, what
//! `create` writes, and times as milliseconds since the Unix epoch.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::Method;

use crate::callback::target::Target;
use crate::delivery::Webhook;
use crate::delivery::{Channel, Delivery, DeliveryState, Publication};
use crate::header_block::HeaderBlock;
use crate::jobs::id::JobId;
use crate::jobs::model::{BackendRequest, Failure, Job, JobStatus, ResponseSummary};
use crate::jobs::owner::Owner;
use crate::jobs::store::{NewJob, StoreError, Taken};

/// The job fields a lookup reads, in the order [`decode_job`] expects;
/// the scripts get the same list.
pub(super) const META: [&str; 27] = [
    "status",
    "route",
    "method",
    "created",
    "started",
    "finished",
    "attempts",
    "resp_status",
    "resp_len",
    "failure",
    "bound",
    "hook_url",
    "hook_armed",
    "hook_state",
    "hook_attempts",
    "hook_last_status",
    "hook_last_error",
    "hook_next",
    "kafka_topic",
    "kafka_state",
    "kafka_attempts",
    "kafka_last_status",
    "kafka_last_error",
    "kafka_next",
    "priority",
    "request_id",
    "traceparent",
];

/// The prefix of a delivery's fields (`{prefix}_state`, `_attempts`,
/// `_last_status`, `_last_error`, `_next`), and the name of the set of
/// those under way (`P:{set}`).
pub(super) fn delivery_names(channel: Channel) -> (&'static str, &'static str) {
    match channel {
        Channel::Webhook => ("hook", "hooks"),
        Channel::Kafka => ("kafka", "kafka"),
    }
}

/// `{id, route, method, path, headers, body, attempt}` as the scripts return it.
pub(super) type TakenRow = (String, String, String, String, Bytes, Bytes, u32, String);

/// A job taken from the shared queue, from the row a script returns.
pub(super) fn decode_taken(row: TakenRow) -> Result<Taken, StoreError> {
    let (id, route, method, path, headers, body, attempt, created) = row;
    let corrupt = |what: &str| StoreError::Corrupt(format!("job {id}: {what}"));
    Ok(Taken {
        id: JobId::parse(&id).ok_or_else(|| corrupt("id"))?,
        route,
        request: BackendRequest {
            method: Method::from_bytes(method.as_bytes()).map_err(|_| corrupt("method"))?,
            path: PathAndQuery::try_from(path).map_err(|_| corrupt("path"))?,
            headers: HeaderBlock::from_bytes(headers).ok_or_else(|| corrupt("headers"))?,
            body,
        },
        attempt,
        queued_at: created.parse().ok().map(time_of),
    })
}

pub(super) fn now_ms() -> u64 {
    millis(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default(),
    )
}

pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

pub(super) fn time_of(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// A job from its META fields.
pub(super) fn decode_job(id: JobId, f: &[Option<Bytes>]) -> Result<Job, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("job {id}: {what}"));
    if f.len() != META.len() {
        return Err(corrupt("field count"));
    }
    let text = |i: usize| f[i].as_deref().and_then(|b| std::str::from_utf8(b).ok());
    let number = |i: usize| text(i).and_then(|t| t.parse::<u64>().ok());
    let status = text(0)
        .and_then(JobStatus::parse)
        .ok_or_else(|| corrupt("status"))?;
    let route = text(1).ok_or_else(|| corrupt("route"))?;
    let method = text(2)
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
        .ok_or_else(|| corrupt("method"))?;
    let mut job = Job::queued(id, route.into(), method);
    job.status = status;
    job.created_at = time_of(number(3).ok_or_else(|| corrupt("created"))?);
    job.started_at = number(4).map(time_of);
    job.finished_at = number(5).map(time_of);
    job.attempts = number(6).and_then(|n| u32::try_from(n).ok()).unwrap_or(0);
    job.response = match (number(7), number(8)) {
        (Some(status), Some(bytes)) => Some(ResponseSummary {
            status: u16::try_from(status).map_err(|_| corrupt("resp_status"))?,
            bytes,
        }),
        _ => None,
    };
    job.failure = text(9)
        .map(|t| Failure::parse(t).ok_or_else(|| corrupt("failure")))
        .transpose()?;
    job.owner = f[10]
        .as_deref()
        .map(|b| {
            <[u8; 32]>::try_from(b)
                .map(Owner::from_digest)
                .map_err(|_| corrupt("bound"))
        })
        .transpose()?;
    // A delivery's five fields, from `at`.
    let delivery = |at: usize| Delivery {
        state: text(at)
            .and_then(DeliveryState::parse)
            .unwrap_or(DeliveryState::Pending),
        attempts: number(at + 1)
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0),
        last_status: number(at + 2).and_then(|n| u16::try_from(n).ok()),
        last_error: text(at + 3).map(str::to_owned),
        next_attempt_at: number(at + 4).map(time_of),
    };
    if let Some(url) = text(11) {
        let target = Target::restore(url).ok_or_else(|| corrupt("hook_url"))?;
        job.webhook = Some(Arc::new(Webhook::restore(
            target,
            text(12) == Some("1"),
            delivery(13),
        )));
    }
    if let Some(topic) = text(18) {
        job.kafka = Some(Arc::new(Publication::restore(
            topic.to_owned(),
            delivery(19),
        )));
    }
    // A job queued by a build before priorities has none: the default.
    job.priority = number(24)
        .and_then(|n| u8::try_from(n).ok())
        .unwrap_or(crate::priority::DEFAULT_URGENCY);
    job.origin.request_id = text(25).map(Arc::from);
    job.origin.traceparent = text(26).map(Arc::from);
    Ok(job)
}

/// The fields of a job as `create` records them, besides status and times.
pub(super) fn job_fields(new: &NewJob<'_>) -> Vec<(&'static str, Vec<u8>)> {
    let job = &new.job;
    let request = new.request;
    let mut fields = vec![
        ("route", job.route.as_bytes().to_vec()),
        ("method", job.method.as_str().as_bytes().to_vec()),
        (
            "resend",
            if new.resend_on_loss {
                b"1".to_vec()
            } else {
                b"0".to_vec()
            },
        ),
        ("req_path", request.path.as_str().as_bytes().to_vec()),
        ("req_headers", request.headers.as_bytes().to_vec()),
        ("req_body", request.body.to_vec()),
        ("priority", job.priority.to_string().into_bytes()),
    ];
    if let Some(owner) = job.owner {
        fields.push(("bound", owner.digest().to_vec()));
    }
    if let Some(id) = &job.origin.request_id {
        fields.push(("request_id", id.as_bytes().to_vec()));
    }
    if let Some(parent) = &job.origin.traceparent {
        fields.push(("traceparent", parent.as_bytes().to_vec()));
    }
    if let Some(by) = new.start_by {
        let ms = millis(by.duration_since(UNIX_EPOCH).unwrap_or_default());
        fields.push(("start_by", ms.to_string().into_bytes()));
    }
    if let Some(publication) = &job.kafka {
        fields.push(("kafka_topic", publication.topic.as_bytes().to_vec()));
        fields.push(("kafka_state", DeliveryState::Pending.as_str().into()));
    }
    if let Some(hook) = &job.webhook {
        fields.push(("hook_url", hook.target.as_str().into_bytes()));
        fields.push((
            "hook_armed",
            if hook.is_armed() {
                b"1".to_vec()
            } else {
                b"0".to_vec()
            },
        ));
    }
    fields
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(super) fn unhex(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if text.len() != 64 {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_round_trip_through_hex() {
        let scope = [0xab; 32];
        assert_eq!(unhex(&hex(&scope)), Some(scope));
        assert_eq!(unhex("zz"), None);
    }
}
