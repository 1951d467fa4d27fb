//! What a job is: its lifecycle, and what it ended with.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{Method, StatusCode};

use super::id::JobId;
use super::owner::Owner;
use crate::body::ReplayBody;
use crate::delivery::Publication;
use crate::delivery::Webhook;
use crate::header_block::HeaderBlock;
use crate::headers::Origin;
use crate::problem::Problem;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JobStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Canceled,
}

impl JobStatus {
    pub(crate) fn parse(s: &str) -> Option<JobStatus> {
        use JobStatus as S;
        [S::Queued, S::Running, S::Succeeded, S::Failed, S::Canceled]
            .into_iter()
            .find(|status| status.as_str() == s)
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Canceled => "canceled",
        }
    }

    /// The event a webhook of a job in this state carries as its `type`.
    pub(crate) fn event_type(self) -> &'static str {
        match self {
            JobStatus::Queued => "job.queued",
            JobStatus::Running => "job.running",
            JobStatus::Succeeded => "job.succeeded",
            JobStatus::Failed => "job.failed",
            JobStatus::Canceled => "job.canceled",
        }
    }

    pub(crate) fn is_terminal(self) -> bool {
        !matches!(self, JobStatus::Queued | JobStatus::Running)
    }
}

/// Why a job failed without a backend response to replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The backend could not be connected to.
    Unreachable,
    /// The backend did not answer within the upstream's `job_timeout`.
    Timeout,
    /// The connection broke before the whole response arrived.
    Reset,
    /// The response was larger than the route's `max_result`.
    ResultTooLarge,
    /// The gateway shut down before the job finished.
    Interrupted,
    /// The replica running it stopped, and the request was not one that
    /// may be sent twice.
    Lost,
    /// The backend's response had framing no proxy may trust.
    BrokenFraming,
    /// The backend's TLS certificate was refused.
    Certificate,
    /// It waited longer than its route's `start_timeout` and was never sent.
    Expired,
}

impl Failure {
    const ALL: [Failure; 9] = [
        Failure::Unreachable,
        Failure::Timeout,
        Failure::Reset,
        Failure::ResultTooLarge,
        Failure::Interrupted,
        Failure::Lost,
        Failure::BrokenFraming,
        Failure::Certificate,
        Failure::Expired,
    ];

    /// Its name in a store outside this process.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Failure::Unreachable => "unreachable",
            Failure::Timeout => "timeout",
            Failure::Reset => "reset",
            Failure::ResultTooLarge => "result-too-large",
            Failure::Interrupted => "interrupted",
            Failure::Lost => "lost",
            Failure::BrokenFraming => "broken-framing",
            Failure::Certificate => "certificate",
            Failure::Expired => "expired",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Failure> {
        Failure::ALL.into_iter().find(|f| f.as_str() == s)
    }

    /// The answer a synchronous proxy would have given for this failure; also the
    /// `error` member of a failed job's document.
    /// [`Failure::problem`], saying the limit a result went past when the
    /// route's `max_result` is known.
    pub(crate) fn problem_within(self, result_limit: Option<u64>) -> Problem {
        let mut problem = self.problem();
        if let (Failure::ResultTooLarge, Some(limit)) = (self, result_limit) {
            problem.detail = format!(
                "The backend's response was larger than this route's result limit (max_result = {limit} bytes)."
            );
        }
        problem
    }

    pub(crate) fn problem(self) -> Problem {
        match self {
            Failure::Unreachable => Problem::new(
                StatusCode::BAD_GATEWAY,
                "upstream-unreachable",
                "Upstream Unreachable",
                "The backend could not be connected to.",
            ),
            Failure::Timeout => Problem::new(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream-timeout",
                "Upstream Timeout",
                "The backend did not answer in time.",
            ),
            Failure::Reset => Problem::new(
                StatusCode::BAD_GATEWAY,
                "upstream-reset",
                "Upstream Connection Broken",
                "The backend's connection broke before its whole response arrived.",
            ),
            Failure::ResultTooLarge => Problem::new(
                StatusCode::BAD_GATEWAY,
                "result-too-large",
                "Result Too Large",
                "The backend's response was larger than this route's result limit.",
            ),
            Failure::Interrupted => Problem::new(
                StatusCode::BAD_GATEWAY,
                "interrupted",
                "Job Interrupted",
                "The gateway shut down before the backend answered.",
            ),
            Failure::Lost => Problem::new(
                StatusCode::BAD_GATEWAY,
                "job-lost",
                "Job Lost",
                "The gateway (or replica) running this job stopped before the backend answered; \
                 the request is not idempotent, so it was not sent again.",
            ),
            Failure::BrokenFraming => Problem::new(
                StatusCode::BAD_GATEWAY,
                "upstream-broken-framing",
                "Upstream Response Malformed",
                "The backend's response framed its body ambiguously (Content-Length beside \
                 Transfer-Encoding, or a transfer coding other than chunked); it was not passed on.",
            ),
            Failure::Certificate => Problem::new(
                StatusCode::BAD_GATEWAY,
                "upstream-certificate",
                "Upstream Certificate Refused",
                "The backend's TLS certificate was refused (not issued by a trusted CA, \
                 for another name, or expired); nothing was sent.",
            ),
            Failure::Expired => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "expired",
                "Job Expired",
                "The job waited longer than its route's start_timeout for a place at the \
                 backend; it was never sent.",
            ),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ResponseSummary {
    pub(crate) status: u16,
    pub(crate) bytes: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub(crate) id: JobId,
    pub(crate) route: Arc<str>,
    pub(crate) method: Method,
    pub(crate) status: JobStatus,
    pub(crate) created_at: SystemTime,
    pub(crate) started_at: Option<SystemTime>,
    pub(crate) finished_at: Option<SystemTime>,
    pub(crate) attempts: u32,
    pub(crate) response: Option<ResponseSummary>,
    pub(crate) failure: Option<Failure>,
    /// Set when the submitting request carried credentials.
    pub(crate) owner: Option<Owner>,
    /// Shared by every copy of the job, so its delivery state is seen
    /// wherever the job is read.
    pub(crate) webhook: Option<Arc<Webhook>>,
    /// Its Kafka record, when its route has a topic; shared like the
    /// webhook.
    pub(crate) kafka: Option<Arc<Publication>>,
    /// Set while the job waits to be tried again.
    pub(crate) retry: Option<RetryWait>,
    /// RFC 9218's urgency: among an upstream's waiting jobs, 0 starts
    /// first, 7 last.
    pub(crate) priority: u8,
    pub(crate) origin: Origin,
}

/// A job waiting to be tried again: when, and why the last try failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RetryWait {
    pub(crate) at: SystemTime,
    pub(crate) reason: String,
}

impl Job {
    /// The number of the job's latest state change (SSE's `id:`): it only
    /// grows over the job's life, and names each state once. A try is
    /// counted when it starts, so a retry's `queued` and `running` come
    /// after the try before them, and an end after everything.
    pub(crate) fn sequence(&self) -> u64 {
        let tries = u64::from(self.attempts);
        match self.status {
            JobStatus::Queued => 2 * tries + 1,
            JobStatus::Running => 2 * tries,
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Canceled => 2 * tries + 2,
        }
    }

    pub(crate) fn queued(id: JobId, route: Arc<str>, method: Method) -> Job {
        Job {
            id,
            route,
            method,
            status: JobStatus::Queued,
            created_at: SystemTime::now(),
            started_at: None,
            finished_at: None,
            attempts: 0,
            response: None,
            failure: None,
            owner: None,
            webhook: None,
            kafka: None,
            retry: None,
            priority: crate::priority::DEFAULT_URGENCY,
            origin: Origin::default(),
        }
    }

    /// Running → queued again, to be tried at `wait.at`.
    pub(crate) fn wait_for_retry(&mut self, wait: RetryWait) {
        self.status = JobStatus::Queued;
        self.retry = Some(wait);
    }

    pub(crate) fn begin(&mut self, at: SystemTime) {
        self.retry = None;
        self.status = JobStatus::Running;
        self.started_at = Some(at);
        self.attempts += 1;
    }

    pub(crate) fn finish(&mut self, outcome: &Outcome) {
        self.status = outcome.status;
        self.retry = None;
        self.finished_at = Some(outcome.finished_at);
        self.failure = outcome.failure;
        self.response = outcome.response.as_ref().map(|r| ResponseSummary {
            status: r.status.as_u16(),
            bytes: r.body.len() as u64,
        });
    }

    /// Whether `GET …/result` has something other than a 409 to say.
    pub(crate) fn has_result(&self) -> bool {
        matches!(self.status, JobStatus::Succeeded | JobStatus::Failed)
    }
}

/// A request as it will be sent to the backend: body read in full, headers
/// packed, everything in allocations of its own, since it may wait long.
/// A clone shares those allocations.
#[derive(Clone)]
pub(crate) struct BackendRequest {
    pub(crate) method: Method,
    pub(crate) path: PathAndQuery,
    pub(crate) headers: HeaderBlock,
    pub(crate) body: Bytes,
}

impl BackendRequest {
    /// The submission's request id and trace id, which the job's log lines
    /// carry: the gateway put the first in the request, the client the
    /// second.
    pub(crate) fn log_ids(&self) -> (Option<&str>, Option<&str>) {
        let trace = self.headers.get("traceparent");
        (
            self.headers.get("x-request-id"),
            trace.and_then(crate::headers::trace_id),
        )
    }

    /// Bytes it holds, for the store budget.
    pub(crate) fn size(&self) -> u64 {
        (self.path.as_str().len() + self.headers.size() + self.body.len()) as u64
    }
}

/// A backend response kept for replay: end-to-end headers only, whole body.
#[derive(Debug, Clone)]
pub(crate) struct StoredResponse {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderBlock,
    pub(crate) body: Bytes,
}

impl StoredResponse {
    /// Bytes this response holds in memory, for the store budget.
    pub(crate) fn size(&self) -> u64 {
        (self.headers.size() + self.body.len()) as u64
    }
}

/// A stored response as a lookup hands it out, to be replayed: its body in
/// memory, or in a file of its own that is streamed and never read whole.
#[derive(Debug)]
pub(crate) struct Replay {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderBlock,
    pub(crate) body: ReplayBody,
}

impl From<StoredResponse> for Replay {
    fn from(r: StoredResponse) -> Replay {
        Replay {
            status: r.status,
            headers: r.headers,
            body: ReplayBody::Bytes(r.body),
        }
    }
}

/// How a job ended, as the runner reports it to the store.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    pub(crate) status: JobStatus,
    pub(crate) finished_at: SystemTime,
    pub(crate) response: Option<StoredResponse>,
    pub(crate) failure: Option<Failure>,
}

impl Outcome {
    /// A backend answer: a 5xx fails the job, anything else is its result.
    pub(crate) fn answered(response: StoredResponse) -> Outcome {
        let status = if response.status.is_server_error() {
            JobStatus::Failed
        } else {
            JobStatus::Succeeded
        };
        Outcome {
            status,
            finished_at: SystemTime::now(),
            response: Some(response),
            failure: None,
        }
    }

    pub(crate) fn failed(failure: Failure) -> Outcome {
        Outcome {
            status: JobStatus::Failed,
            finished_at: SystemTime::now(),
            response: None,
            failure: Some(failure),
        }
    }

    pub(crate) fn canceled() -> Outcome {
        Outcome {
            status: JobStatus::Canceled,
            finished_at: SystemTime::now(),
            response: None,
            failure: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_fail_the_job_but_keep_the_response() {
        let r = StoredResponse {
            status: StatusCode::BAD_GATEWAY,
            headers: HeaderBlock::default(),
            body: Bytes::from_static(b"x"),
        };
        let o = Outcome::answered(r);
        assert_eq!(o.status, JobStatus::Failed);
        assert!(o.response.is_some());
    }

    #[test]
    fn the_change_sequence_only_grows_through_retries_and_ends() {
        let at = |status, attempts| {
            let mut job = Job::queued(JobId::random(), "r".into(), Method::POST);
            job.status = status;
            job.attempts = attempts;
            job.sequence()
        };
        let life = [
            at(JobStatus::Queued, 0),
            at(JobStatus::Running, 1),
            at(JobStatus::Queued, 1),
            at(JobStatus::Running, 2),
            at(JobStatus::Succeeded, 2),
        ];
        assert!(life.windows(2).all(|w| w[0] < w[1]), "{life:?}");
        assert!(at(JobStatus::Canceled, 0) > at(JobStatus::Queued, 0));
        assert!(at(JobStatus::Failed, 1) > at(JobStatus::Running, 1));
    }
}
