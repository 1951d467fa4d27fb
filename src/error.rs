//! The request-path error, and the one place where errors become responses.

use http::header::{HeaderValue, ALLOW, RETRY_AFTER};
use http::{Response, StatusCode};

use crate::body::{Body, BodyError};
use crate::jobs::model::{Failure, JobStatus};
use crate::jobs::store::StoreError;
use crate::jobs::{FindError, SubmitError};
use crate::metrics::Rejection;
use crate::problem::Problem;
use crate::upstream::UpstreamError;

#[derive(Debug, thiserror::Error)]
pub(crate) enum GatewayError {
    #[error("no route matches and no default upstream is set")]
    NoRoute,
    #[error("a path with dot segments or an encoded slash would reach a route")]
    BadPath,
    #[error("method not allowed on a job resource")]
    MethodNotAllowed { allow: &'static str },
    #[error("no such job")]
    JobNotFound,
    #[error("the wait parameter is not a number of seconds")]
    BadWait,
    #[error("the redirect parameter is neither true nor false")]
    BadRedirect,
    #[error("a WebSocket handshake without a version 13 key")]
    BadWebSocket,
    #[error(transparent)]
    BadIdempotencyKey(#[from] crate::jobs::idempotency::BadKey),
    #[error("the Callback-Url header was refused")]
    BadCallback(#[source] crate::callback::target::TargetError),
    #[error("the job expired or was deleted")]
    JobGone,
    #[error("the job is {}", status.as_str())]
    JobNotFinished {
        status: JobStatus,
        monitor: String,
        retry_after: u64,
    },
    #[error("the job was canceled")]
    JobCanceled { monitor: String },
    #[error("the job failed without a backend response")]
    JobFailed {
        failure: Failure,
        /// The route's `max_result`, when the route is still configured.
        result_limit: Option<u64>,
    },
    #[error("reading the request body failed")]
    Body(#[source] BodyError),
    #[error("the job was not accepted")]
    Submit(#[from] SubmitError),
    #[error("the job store failed")]
    Store(#[source] StoreError),
    #[error("upstream `{upstream}`")]
    Upstream {
        upstream: String,
        #[source]
        source: UpstreamError,
    },
}

impl GatewayError {
    /// Whether the log should warn about it: a backend or the store failed.
    /// Clients asking for something wrong, and refusals under load (which
    /// would flood the log exactly when it matters), are not failures; the
    /// request line records them anyway.
    pub(crate) fn is_failure(&self) -> bool {
        use GatewayError as E;
        match self {
            E::Upstream { .. }
            | E::Store(_)
            | E::Submit(SubmitError::Store(_))
            | E::Body(BodyError::Spill(_)) => true,
            E::NoRoute
            | E::BadPath
            | E::MethodNotAllowed { .. }
            | E::JobNotFound
            | E::BadWait
            | E::BadRedirect
            | E::BadWebSocket
            | E::BadIdempotencyKey(_)
            | E::BadCallback(_)
            | E::JobGone
            | E::JobNotFinished { .. }
            | E::JobCanceled { .. }
            | E::JobFailed { .. }
            | E::Body(BodyError::Idle(_) | BodyError::TooLarge { .. } | BodyError::Read(_))
            | E::Submit(
                SubmitError::ShuttingDown
                | SubmitError::QueueFull { .. }
                | SubmitError::CallerQuota { .. }
                | SubmitError::StoreFull { .. }
                | SubmitError::KeyReused,
            ) => false,
        }
    }

    /// Why work was turned away, when it was: what the metrics count.
    pub(crate) fn rejection(&self) -> Option<Rejection> {
        use GatewayError as E;
        match self {
            E::Submit(SubmitError::ShuttingDown) => Some(Rejection::Draining),
            E::Submit(SubmitError::QueueFull { .. }) => Some(Rejection::QueueFull),
            E::Submit(SubmitError::CallerQuota { .. }) => Some(Rejection::CallerQuota),
            E::Submit(SubmitError::StoreFull { .. }) => Some(Rejection::StoreFull),
            E::Submit(SubmitError::Store(_)) => Some(Rejection::StoreUnavailable),
            E::Body(BodyError::TooLarge { .. }) => Some(Rejection::BodyTooLarge),
            _ => None,
        }
    }

    pub(crate) fn into_response(self) -> Response<Body> {
        self.problem().into_response()
    }

    /// Every variant chooses its status here, and only here.
    pub(crate) fn problem(&self) -> Problem {
        use GatewayError as E;
        match self {
            E::NoRoute => Problem::new(
                StatusCode::NOT_FOUND,
                "no-route",
                "Not Found",
                "No route matches this request.",
            ),
            E::BadPath => Problem::new(
                StatusCode::BAD_REQUEST,
                "bad-path",
                "Bad Path",
                "A path with `.` or `..` segments or an encoded `/` (%2F) does not reach a configured route: send the path it stands for.",
            ),
            E::MethodNotAllowed { allow } => Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method Not Allowed",
                format!("This job resource allows {allow}."),
            )
            .with_header(ALLOW, HeaderValue::from_static(allow)),
            E::JobNotFound => Problem::new(
                StatusCode::NOT_FOUND,
                "job-not-found",
                "Job Not Found",
                "No job has this id.",
            ),
            E::BadWait => Problem::new(
                StatusCode::BAD_REQUEST,
                "bad-wait",
                "Bad Wait",
                "`wait` must be a whole number of seconds, e.g. ?wait=20.",
            ),
            E::BadRedirect => Problem::new(
                StatusCode::BAD_REQUEST,
                "bad-redirect",
                "Bad Redirect",
                "`redirect` must be true or false, e.g. ?redirect=false.",
            ),
            E::BadWebSocket => Problem::new(
                StatusCode::BAD_REQUEST,
                "bad-websocket",
                "Bad WebSocket Handshake",
                "A WebSocket upgrade needs Sec-WebSocket-Key and Sec-WebSocket-Version: 13.",
            )
            .with_header(
                http::header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            ),
            E::BadIdempotencyKey(e) => Problem::new(
                StatusCode::BAD_REQUEST,
                "bad-idempotency-key",
                "Bad Idempotency-Key",
                e.to_string(),
            ),
            E::BadCallback(e) => Problem::new(
                StatusCode::BAD_REQUEST,
                "bad-callback",
                "Bad Callback-Url",
                format!("{e}; nothing was queued."),
            ),
            E::Submit(SubmitError::KeyReused) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency-key-reused",
                "Idempotency-Key Reused",
                "This Idempotency-Key was already used on this route for a different request.",
            ),
            E::JobGone => Problem::new(
                StatusCode::GONE,
                "job-gone",
                "Job Gone",
                "This job's result expired or was deleted.",
            ),
            E::JobNotFinished {
                status,
                monitor,
                retry_after,
            } => {
                let mut p = Problem::new(
                    StatusCode::CONFLICT,
                    "job-not-finished",
                    "Job Not Finished",
                    format!(
                        "The job is {}; poll its status and fetch the result once it has finished.",
                        status.as_str()
                    ),
                )
                .with_header(RETRY_AFTER, HeaderValue::from(*retry_after));
                p.job_status = Some(status.as_str());
                p.monitor = Some(monitor.clone());
                p
            }
            E::JobCanceled { monitor } => {
                let mut p = Problem::new(
                    StatusCode::CONFLICT,
                    "job-canceled",
                    "Job Canceled",
                    "The job was canceled; it has no result.",
                );
                p.job_status = Some(JobStatus::Canceled.as_str());
                p.monitor = Some(monitor.clone());
                p
            }
            E::JobFailed {
                failure,
                result_limit,
            } => failure.problem_within(*result_limit),
            E::Body(e) => body_problem(e),
            E::Submit(SubmitError::QueueFull {
                upstream,
                retry_after,
            }) => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "queue-full",
                "Queue Full",
                format!(
                    "Upstream `{upstream}` has as many jobs waiting as it may; try again later."
                ),
            )
            .with_header(RETRY_AFTER, HeaderValue::from(*retry_after)),
            E::Submit(SubmitError::CallerQuota { max, retry_after }) => Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "caller-quota",
                "Too Many Jobs Waiting",
                format!(
                    "You have {max} jobs waiting on this route, as many as it allows one caller; try again when one has started."
                ),
            )
            .with_header(RETRY_AFTER, HeaderValue::from(*retry_after)),
            E::Submit(SubmitError::StoreFull { retry_after }) => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store-full",
                "Result Store Full",
                "The gateway holds as many results as its memory budget allows; try again later.",
            )
            .with_header(RETRY_AFTER, HeaderValue::from(*retry_after)),
            E::Store(StoreError::Unavailable(_) | StoreError::Corrupt(_))
            | E::Submit(SubmitError::Store(StoreError::Unavailable(_) | StoreError::Corrupt(_))) => {
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store-unavailable",
                    "Job Store Unavailable",
                    "The job store cannot be reached; nothing was queued. Try again shortly.",
                )
                .with_header(RETRY_AFTER, HeaderValue::from_static("1"))
            }
            E::Submit(SubmitError::ShuttingDown) => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting-down",
                "Shutting Down",
                "This gateway is draining and accepts no new jobs.",
            )
            .with_header(RETRY_AFTER, HeaderValue::from_static("1")),
            E::Upstream { source, .. } => match source {
                UpstreamError::Connect(_) => Failure::Unreachable.problem(),
                UpstreamError::Timeout(_) => Failure::Timeout.problem(),
                UpstreamError::Failed(_) => Failure::Reset.problem(),
                UpstreamError::ClientBody(e) => body_problem(e),
                UpstreamError::BrokenFraming(_) => Failure::BrokenFraming.problem(),
                #[cfg(feature = "tls")]
                UpstreamError::Certificate { why, .. } => {
                    let mut problem = Failure::Certificate.problem();
                    problem.detail = format!(
                        "The backend's TLS certificate was refused ({why}); nothing was sent."
                    );
                    problem
                }
            },
        }
    }
}

/// The answer to a client whose request body failed, or whose body the
/// gateway could not keep.
fn body_problem(e: &BodyError) -> Problem {
    match e {
        BodyError::TooLarge { limit } => Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            "Request Body Too Large",
            format!("This route accepts request bodies of at most {limit} bytes."),
        ),
        BodyError::Idle(after) => Problem::new(
            StatusCode::REQUEST_TIMEOUT,
            "body-timeout",
            "Request Body Timeout",
            format!("No request body data arrived for {}s.", after.as_secs()),
        ),
        BodyError::Read(_) => Problem::new(
            StatusCode::BAD_REQUEST,
            "body-unreadable",
            "Request Body Unreadable",
            "The request body could not be read to its end.",
        ),
        BodyError::Spill(_) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "body-buffer-failed",
            "Request Body Not Kept",
            "The gateway could not keep the request body in its temporary storage; \
             nothing was sent on. Try again later.",
        )
        .with_header(RETRY_AFTER, HeaderValue::from_static("1")),
    }
}

impl From<FindError> for GatewayError {
    fn from(e: FindError) -> GatewayError {
        match e {
            FindError::NotFound => GatewayError::JobNotFound,
            FindError::Gone => GatewayError::JobGone,
            FindError::Store(e) => GatewayError::Store(e),
        }
    }
}
