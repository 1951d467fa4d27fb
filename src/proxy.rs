//! Passthrough: a reverse proxy, as nginx would do it. The request body is
//! received whole before the backend is contacted (or, with buffering off,
//! streamed); the response is streamed back.

use std::path::Path;
use std::time::Duration;

use http::header::{HeaderValue, CONTENT_LENGTH, UPGRADE};
use http::{Request, Response, StatusCode, Version};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::body::{self, Body, BodyError, IdleTimeout};
use crate::config::RequestBody;
use crate::defaults;
use crate::headers::{self, Peer};
use crate::tunnel::{self, Handover};
use crate::upstream::{Upstream, UpstreamError};

/// How a client's request body is received.
#[derive(Clone, Copy)]
pub(crate) struct Receiving<'a> {
    pub(crate) body: RequestBody,
    /// The longest a body may stall.
    pub(crate) idle: Duration,
    /// Where a buffered body too large for memory is kept.
    pub(crate) spill_dir: &'a Path,
}

/// Where an upgraded request's tunnel goes, and how long it may be silent.
#[derive(Clone, Copy)]
pub(crate) struct Tunnel<'a> {
    pub(crate) handover: &'a Handover,
    pub(crate) idle: Duration,
}

/// Forwards `req` to `upstream` and streams the answer back; each body may
/// stall for at most its idle timeout. A client's broken body is its own
/// error ([`UpstreamError::ClientBody`]); buffered, the backend never sees
/// it.
pub(crate) async fn forward(
    upstream: &Upstream,
    mut req: Request<Incoming>,
    client: &Peer,
    receiving: Receiving<'_>,
    tunnel: Tunnel<'_>,
) -> Result<Response<Body>, UpstreamError> {
    let upgrade = tunnel::requested(&req).map(|protocol| (protocol, hyper::upgrade::on(&mut req)));
    let (mut parts, incoming) = req.into_parts();
    let limit = receiving.body.max_bytes;
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(UpstreamError::ClientBody(BodyError::TooLarge { limit }));
    }
    let version = parts.version;
    headers::forward_request(
        &mut parts.headers,
        client,
        version,
        parts.uri.authority().map(|a| a.as_str()),
    );
    if let Some((protocol, _)) = &upgrade {
        tunnel::ask_again(&mut parts.headers, protocol.clone());
    }
    parts.uri = upstream.uri_for(parts.uri.path_and_query());
    // The upstream pool speaks HTTP/1.1 whatever the client spoke.
    parts.version = Version::HTTP_11;
    let incoming = IdleTimeout::new(incoming, receiving.idle).with_limit(limit);
    // An upgrade's body, if it has one, is not held back: what follows the
    // switch is the tunnel's.
    let body = if receiving.body.buffering && upgrade.is_none() && !incoming.is_end_stream() {
        let kept = body::buffer(
            incoming,
            limit,
            defaults::REQUEST_BUFFER_MEMORY,
            receiving.spill_dir,
        )
        .await
        .map_err(UpstreamError::ClientBody)?;
        // Sent whole, so framed afresh by its real length.
        parts
            .headers
            .insert(CONTENT_LENGTH, HeaderValue::from(kept.len()));
        kept.into_body()
    } else {
        incoming.boxed_unsync()
    };
    let mut response = upstream
        .send(Request::from_parts(parts, body), upstream.config.timeout)
        .await?;
    let switched = match upgrade {
        Some((_, client)) if response.status() == StatusCode::SWITCHING_PROTOCOLS => {
            let backend = hyper::upgrade::on(&mut response);
            tunnel
                .handover
                .give(tunnel::join(client, backend, tunnel.idle));
            response.headers().get(UPGRADE).cloned()
        }
        _ => None,
    };
    let (mut parts, body) = response.into_parts();
    headers::remove_hop_by_hop(&mut parts.headers);
    if let Some(protocol) = switched {
        tunnel::ask_again(&mut parts.headers, protocol);
    }
    headers::add_via(&mut parts.headers, parts.version);
    parts.version = version;
    let body = IdleTimeout::new(body, upstream.config.timeout).boxed_unsync();
    Ok(Response::from_parts(parts, body))
}
