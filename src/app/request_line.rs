//! The request's log line: what it needs is captured before the request
//! is handed on (only when the line will be written), and the line is
//! written once the response head is known.

use std::time::Duration;

use http::{HeaderValue, Request, Response};

use super::job_api::AcceptedJob;
use crate::body::Body;
use crate::headers::{self, Peer};

/// On a proxied response: how long the upstream took to its head, for the
/// line.
#[derive(Clone, Copy)]
pub(super) struct UpstreamTime(pub(super) Duration);

/// What the line needs of the request.
pub(super) struct RequestLine {
    method: http::Method,
    path: String,
    bytes_in: Option<u64>,
}

impl RequestLine {
    /// `None` when info lines are not written.
    pub(super) fn capture<B>(req: &Request<B>) -> Option<RequestLine> {
        tracing::enabled!(tracing::Level::INFO).then(|| RequestLine {
            method: req.method().clone(),
            path: req.uri().path().to_owned(),
            bytes_in: headers::content_length(req.headers()),
        })
    }

    /// `route`: the route's name, or the pseudo-route's; `took`: until the
    /// response head.
    pub(super) fn write(
        self,
        request_id: &HeaderValue,
        peer: &Peer,
        route: &str,
        response: &Response<Body>,
        took: Duration,
    ) {
        let extensions = response.extensions();
        tracing::info!(
            request_id = request_id.to_str().unwrap_or_default(),
            remote = peer.remote(),
            method = %self.method,
            path = self.path,
            route,
            status = response.status().as_u16(),
            micros = took.as_micros() as u64,
            bytes_in = self.bytes_in,
            bytes_out = http_body::Body::size_hint(response.body()).exact(),
            upstream_micros = extensions.get::<UpstreamTime>().map(|t| t.0.as_micros() as u64),
            job = extensions.get::<AcceptedJob>().map(|j| tracing::field::display(j.0)),
            "request"
        );
    }
}
