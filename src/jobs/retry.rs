//! Whether a try that failed is tried again, and when. A failure that may
//! pass (the backend unreachable, slow, its connection broken, or answering
//! 502, 503, 504 or 429) is retried up to the upstream's `retries`, but a
//! request the backend may already have received is sent again only when
//! that is safe: its method is idempotent (RFC 9110), or the route opts in.

use std::time::{Duration, SystemTime};

use http::{Method, StatusCode};

use super::model::{Failure, Outcome, RetryWait};
use crate::backoff::backoff;
use crate::config::{RouteConfig, UpstreamConfig};

/// The wait before try `attempt + 1`, or `None` when `outcome` stands.
pub(super) fn after(
    upstream: &UpstreamConfig,
    route: &RouteConfig,
    method: &Method,
    attempt: u32,
    outcome: &Outcome,
) -> Option<RetryWait> {
    if attempt > upstream.retries {
        return None;
    }
    let resendable = method.is_idempotent() || route.retry_non_idempotent;
    let (reason, asked) = match (&outcome.response, outcome.failure) {
        // Nothing reached the backend: safe whatever the method.
        (None, Some(Failure::Unreachable)) => {
            ("the backend could not be connected to".to_owned(), None)
        }
        (None, Some(Failure::Timeout)) if resendable => {
            ("the backend did not answer in time".to_owned(), None)
        }
        (None, Some(Failure::Reset)) if resendable => (
            "the backend's connection broke before its answer".to_owned(),
            None,
        ),
        (Some(r), _) if resendable && may_pass(r.status) => (
            format!("the backend answered {}", r.status),
            crate::backoff::asked(&r.headers.unpack()),
        ),
        _ => return None,
    };
    let wait = asked.map_or_else(
        || backoff(upstream.retry_backoff, upstream.retry_backoff_max, attempt),
        |asked| asked.min(upstream.retry_backoff_max),
    );
    Some(RetryWait {
        at: SystemTime::now() + wait,
        reason: format!("try {attempt} failed: {reason}"),
    })
}

/// How long a backend that answered a job `429` or `503` asked its whole
/// upstream to be left alone: its `Retry-After`, at most the upstream's
/// `retry_backoff_max`; without one, the upstream's `retry_backoff`.
pub(super) fn hold(upstream: &UpstreamConfig, outcome: &Outcome) -> Option<Duration> {
    let response = outcome.response.as_ref()?;
    if !matches!(
        response.status,
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
    ) {
        return None;
    }
    Some(
        crate::backoff::asked(&response.headers.unpack()).map_or(upstream.retry_backoff, |asked| {
            asked.min(upstream.retry_backoff_max)
        }),
    )
}

fn may_pass(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::BAD_GATEWAY
            | StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::GATEWAY_TIMEOUT
            | StatusCode::TOO_MANY_REQUESTS
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header_block::HeaderBlock;
    use crate::jobs::model::StoredResponse;
    use bytes::Bytes;
    use http::header::RETRY_AFTER;

    fn upstream(retries: u32) -> UpstreamConfig {
        let text = "[store]\nkind = \"memory\"\n[upstreams.u]\nurl = \"http://127.0.0.1:1\"\n\
                    retry_backoff = \"1s\"\nretry_backoff_max = \"10s\"\n";
        let mut upstream = crate::Config::parse(text, std::path::Path::new("t.toml"))
            .unwrap()
            .upstreams
            .remove(0);
        upstream.retries = retries;
        upstream
    }

    fn route(opt_in: bool) -> RouteConfig {
        let text = format!(
            "[store]\nkind = \"memory\"\n[upstreams.u]\nurl = \"http://127.0.0.1:1\"\n\
             [[routes]]\nname = \"r\"\npath = \"/\"\nupstream = \"u\"\nretry_non_idempotent = {opt_in}\n"
        );
        let config = crate::Config::parse(&text, std::path::Path::new("t.toml")).unwrap();
        config.routes[0].clone()
    }

    fn answered(status: u16, retry_after: Option<&str>) -> Outcome {
        let mut headers = http::HeaderMap::new();
        if let Some(v) = retry_after {
            headers.insert(RETRY_AFTER, v.parse().unwrap());
        }
        Outcome::answered(StoredResponse {
            status: StatusCode::from_u16(status).unwrap(),
            headers: HeaderBlock::pack(&headers),
            body: Bytes::new(),
        })
    }

    #[test]
    fn only_failures_that_may_pass_are_retried_and_only_as_often_as_allowed() {
        let (u, r) = (upstream(2), route(false));
        let put = Method::PUT;
        assert!(after(&u, &r, &put, 1, &answered(503, None)).is_some());
        assert!(after(&u, &r, &put, 2, &Outcome::failed(Failure::Timeout)).is_some());
        assert!(
            after(&u, &r, &put, 3, &answered(503, None)).is_none(),
            "out of tries"
        );
        assert!(after(&u, &r, &put, 1, &answered(500, None)).is_none());
        assert!(after(&u, &r, &put, 1, &answered(404, None)).is_none());
        assert!(after(&u, &r, &put, 1, &Outcome::failed(Failure::ResultTooLarge)).is_none());
        assert!(after(&upstream(0), &r, &put, 1, &answered(503, None)).is_none());
    }

    #[test]
    fn a_post_is_sent_again_only_when_nothing_reached_the_backend_or_the_route_opts_in() {
        let (u, post) = (upstream(1), Method::POST);
        let plain = route(false);
        assert!(after(&u, &plain, &post, 1, &Outcome::failed(Failure::Unreachable)).is_some());
        assert!(after(&u, &plain, &post, 1, &Outcome::failed(Failure::Reset)).is_none());
        assert!(after(&u, &plain, &post, 1, &answered(503, None)).is_none());
        assert!(after(&u, &route(true), &post, 1, &answered(503, None)).is_some());
    }

    #[test]
    fn the_backend_s_retry_after_is_honoured_within_the_cap() {
        let (u, r) = (upstream(1), route(false));
        let wait = |o: &Outcome| {
            let w = after(&u, &r, &Method::GET, 1, o).unwrap();
            w.at.duration_since(SystemTime::now()).unwrap_or_default()
        };
        let asked = wait(&answered(503, Some("5")));
        assert!(
            asked > Duration::from_secs(4) && asked <= Duration::from_secs(5),
            "{asked:?}"
        );
        let capped = wait(&answered(429, Some("3600")));
        assert!(capped <= Duration::from_secs(10), "{capped:?}");
        let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(7));
        let dated = wait(&answered(503, Some(&date)));
        assert!(
            dated > Duration::from_secs(5) && dated <= Duration::from_secs(7),
            "{dated:?}"
        );
    }

    #[test]
    fn a_429_or_503_holds_the_upstream_as_long_as_asked_within_the_cap() {
        let u = upstream(0);
        assert_eq!(
            hold(&u, &answered(429, Some("2"))),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            hold(&u, &answered(503, Some("3600"))),
            Some(Duration::from_secs(10))
        );
        assert_eq!(hold(&u, &answered(503, None)), Some(Duration::from_secs(1)));
        assert_eq!(hold(&u, &answered(500, Some("2"))), None);
        assert_eq!(hold(&u, &Outcome::failed(Failure::Timeout)), None);
    }
}
