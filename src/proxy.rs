//! Passthrough: a streaming reverse proxy, as nginx would do it.

use std::time::Duration;

use http::{Request, Response, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::body::{Body, IdleTimeout};
use crate::headers::{self, Peer};
use crate::upstream::{Upstream, UpstreamError};

/// Forwards `req` to `upstream` and streams the answer back. Neither body is
/// buffered; each may stall for at most its idle timeout.
pub(crate) async fn forward(
    upstream: &Upstream,
    req: Request<Incoming>,
    client: Peer,
    body_idle_timeout: Duration,
) -> Result<Response<Body>, UpstreamError> {
    let (mut parts, body) = req.into_parts();
    let version = parts.version;
    headers::forward_request(
        &mut parts.headers,
        client,
        version,
        parts.uri.authority().map(|a| a.as_str()),
    );
    parts.uri = upstream.uri_for(parts.uri.path_and_query());
    // The upstream pool speaks HTTP/1.1 whatever the client spoke.
    parts.version = Version::HTTP_11;
    let body = IdleTimeout::new(body, body_idle_timeout).boxed_unsync();
    let response = upstream
        .send(Request::from_parts(parts, body), upstream.config.timeout)
        .await?;
    let (mut parts, body) = response.into_parts();
    headers::remove_hop_by_hop(&mut parts.headers);
    headers::add_via(&mut parts.headers, parts.version);
    parts.version = version;
    let body = IdleTimeout::new(body, upstream.config.timeout).boxed_unsync();
    Ok(Response::from_parts(parts, body))
}
