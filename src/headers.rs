//! Header rules of a forwarding proxy: hop-by-hop headers (RFC 9110 §7.6.1)
//! are removed, and `X-Forwarded-*` and `Via` (RFC 9110 §7.6.3) are added.

use std::net::IpAddr;

use http::header::{
    HeaderName, HeaderValue, CONNECTION, HOST, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE,
    TRAILER, TRANSFER_ENCODING, UPGRADE, VIA,
};
use http::{HeaderMap, Version};

pub(crate) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(crate) const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub(crate) const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub(crate) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Longer ids from a client are replaced: an id is for logs, not a payload.
const MAX_REQUEST_ID: usize = 200;
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// RFC 9110 §7.6.1 names Connection, Proxy-Connection, Keep-Alive, TE,
/// Transfer-Encoding and Upgrade; the Proxy-* pair and Trailer are
/// hop-by-hop by RFC 7230's older list, which proxies still honour.
const HOP_BY_HOP: [HeaderName; 9] = [
    CONNECTION,
    PROXY_CONNECTION,
    KEEP_ALIVE,
    TE,
    TRANSFER_ENCODING,
    UPGRADE,
    PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION,
    TRAILER,
];

/// The request's id: the client's `X-Request-Id` when it sent one usable in
/// a log line (visible ASCII, at most 200 bytes), else a new UUID put in
/// its place, so the backend and the log see the same id.
pub(crate) fn request_id(headers: &mut HeaderMap) -> HeaderValue {
    let usable = |v: &HeaderValue| {
        let b = v.as_bytes();
        !b.is_empty() && b.len() <= MAX_REQUEST_ID && b.iter().all(|c| c.is_ascii_graphic())
    };
    if let Some(id) = headers.get(X_REQUEST_ID).filter(|v| usable(v)) {
        return id.clone();
    }
    let id = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
        .expect("a UUID is a valid header value");
    headers.insert(X_REQUEST_ID, id.clone());
    id
}

/// Removes the headers that describe one connection, not the message:
/// the fixed list and every header named in `Connection`.
pub(crate) fn remove_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Prepares a client's request headers for the backend: hop-by-hop removed,
/// the client appended to `X-Forwarded-For`, the original host and scheme
/// recorded, `Via` extended, and `Host` left for the client to set to the
/// upstream's (as nginx does by default).
pub(crate) fn forward_request(
    headers: &mut HeaderMap,
    client: IpAddr,
    version: Version,
    authority: Option<&str>,
) {
    remove_hop_by_hop(headers);
    let host = headers
        .remove(HOST)
        .or_else(|| authority.and_then(|a| HeaderValue::from_str(a).ok()));
    if let Some(host) = host {
        headers.insert(X_FORWARDED_HOST, host);
    }
    let client = client.to_string();
    let forwarded_for = match joined(headers, &X_FORWARDED_FOR) {
        Some(prior) => format!("{prior}, {client}"),
        None => client,
    };
    if let Ok(v) = HeaderValue::from_str(&forwarded_for) {
        headers.insert(X_FORWARDED_FOR, v);
    }
    // Overwritten, not appended: the gateway speaks plain HTTP, and a client
    // must not be able to claim otherwise.
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    add_via(headers, version);
}

/// Appends this gateway to `Via`, with the protocol version it received.
pub(crate) fn add_via(headers: &mut HeaderMap, version: Version) {
    let hop = match version {
        Version::HTTP_09 => "0.9 asyncgate",
        Version::HTTP_10 => "1.0 asyncgate",
        Version::HTTP_2 => "2 asyncgate",
        Version::HTTP_3 => "3 asyncgate",
        _ => "1.1 asyncgate",
    };
    let value = match joined(headers, &VIA) {
        Some(prior) => HeaderValue::from_str(&format!("{prior}, {hop}")).ok(),
        None => Some(HeaderValue::from_static(hop)),
    };
    if let Some(v) = value {
        headers.insert(VIA, v);
    }
}

/// All values of a list header as one comma-separated string.
fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let mut values = headers.get_all(name).iter().filter_map(|v| v.to_str().ok());
    let first = values.next()?;
    Some(values.fold(first.to_owned(), |acc, v| format!("{acc}, {v}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn removes_static_list_and_connection_tokens() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("x-kept", "yes"),
        ]);
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert_eq!(h["x-kept"], "yes");
    }

    #[test]
    fn forwarding_appends_to_existing_chains() {
        let mut h = map(&[
            ("host", "api.example.com"),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-proto", "https"),
            ("via", "1.1 edge"),
        ]);
        forward_request(&mut h, "127.0.0.1".parse().unwrap(), Version::HTTP_11, None);
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
        assert_eq!(h["x-forwarded-host"], "api.example.com");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["via"], "1.1 edge, 1.1 asyncgate");
        assert!(h.get("host").is_none());
    }

    #[test]
    fn http2_authority_stands_in_for_host() {
        let mut h = HeaderMap::new();
        forward_request(
            &mut h,
            "::1".parse().unwrap(),
            Version::HTTP_2,
            Some("example.org:8080"),
        );
        assert_eq!(h["x-forwarded-host"], "example.org:8080");
        assert_eq!(h["via"], "2 asyncgate");
        assert_eq!(h["x-forwarded-for"], "::1");
    }
}
