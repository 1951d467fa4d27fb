//! Header rules of a forwarding proxy: hop-by-hop headers (RFC 9110 §7.6.1)
//! are removed, and `X-Forwarded-*` and `Via` (RFC 9110 §7.6.3) are added.

use std::net::SocketAddr;

use http::header::{
    HeaderName, HeaderValue, CONNECTION, COOKIE, HOST, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE,
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

/// The declared body length, when there is a valid one.
pub(crate) fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The client's W3C `traceparent`, when it is one (Trace Context level 1:
/// `00-{trace-id}-{parent-id}-{flags}`, neither id all zeros; a later
/// version is read by the same first four fields, as the spec asks).
pub(crate) fn traceparent(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get("traceparent")?.to_str().ok()?;
    trace_id(value).map(|_| value)
}

/// The trace id of a valid `traceparent`.
pub(crate) fn trace_id(traceparent: &str) -> Option<&str> {
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            && s.bytes().any(|b| b != b'0')
    };
    let mut fields = traceparent.splitn(5, '-');
    let (version, trace, parent, flags) = (
        fields.next()?,
        fields.next()?,
        fields.next()?,
        fields.next()?,
    );
    let rest_allowed = version != "00" || fields.next().is_none();
    let valid = version.len() == 2
        && version != "ff"
        && version
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        && hex(trace, 32)
        && hex(parent, 16)
        && flags.len() == 2
        && flags
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        && rest_allowed;
    valid.then_some(trace)
}

/// Whence a job came, for its log lines and its deliveries: the
/// submission's `X-Request-Id`, and the W3C `traceparent` it carried.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Origin {
    pub(crate) request_id: Option<std::sync::Arc<str>>,
    pub(crate) traceparent: Option<std::sync::Arc<str>>,
}

impl Origin {
    /// From the submission's headers, once the gateway has given it an id.
    pub(crate) fn of(headers: &http::HeaderMap) -> Origin {
        let id = headers.get(X_REQUEST_ID);
        Origin {
            request_id: id.and_then(|v| v.to_str().ok()).map(std::sync::Arc::from),
            traceparent: traceparent(headers).map(std::sync::Arc::from),
        }
    }

    pub(crate) fn request_id(&self) -> Option<&str> {
        self.request_id.as_deref()
    }

    /// The trace id of its `traceparent`.
    pub(crate) fn trace_id(&self) -> Option<&str> {
        self.traceparent.as_deref().and_then(trace_id)
    }
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

/// Who is on the other end of a client connection, as forwarding needs it.
/// Made once per connection, with the address written out as each
/// request's `X-Forwarded-For` and log line need it: formatting an address
/// is about 1,800 instructions, twice a request otherwise.
#[derive(Debug)]
pub(crate) struct Peer {
    /// The connection came over TLS.
    pub(crate) tls: bool,
    /// It is one of `trusted_proxies`: its `X-Forwarded-*` are believed.
    pub(crate) trusted: bool,
    /// The client's address as `X-Forwarded-For` names it.
    forwarded_for: HeaderValue,
    /// The address and port, as the request log writes them.
    remote: Box<str>,
}

impl Peer {
    pub(crate) fn new(addr: SocketAddr, tls: bool, trusted: bool) -> Peer {
        let client = addr.ip().to_canonical().to_string();
        Peer {
            tls,
            trusted,
            forwarded_for: HeaderValue::from_str(&client)
                .expect("an IP address is a valid header value"),
            remote: addr.to_string().into(),
        }
    }

    /// The address and port, as the request log writes them.
    pub(crate) fn remote(&self) -> &str {
        &self.remote
    }

    /// The scheme the client used, as a trusted proxy in front reports it
    /// or as this connection is.
    pub(crate) fn scheme<'h>(&self, headers: &'h HeaderMap) -> &'h str {
        let told = self
            .trusted
            .then(|| headers.get(X_FORWARDED_PROTO)?.to_str().ok())
            .flatten()
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .filter(|v| v.eq_ignore_ascii_case("https") || v.eq_ignore_ascii_case("http"));
        told.unwrap_or(if self.tls { "https" } else { "http" })
    }

    /// The host the client named, as a trusted proxy in front reports it
    /// or as the request carries it (`Host`, or HTTP/2's `:authority`);
    /// `None` unless it is a valid authority, so nothing else reaches a URL.
    pub(crate) fn host<B>(&self, req: &http::Request<B>) -> Option<http::uri::Authority> {
        let headers = req.headers();
        let told = self
            .trusted
            .then(|| headers.get(X_FORWARDED_HOST)?.to_str().ok())
            .flatten()
            .and_then(|v| v.split(',').next())
            .map(str::trim);
        let named = told.or_else(|| headers.get(HOST)?.to_str().ok());
        match named {
            Some(host) => host.parse().ok(),
            None => req.uri().authority().cloned(),
        }
        .filter(|a: &http::uri::Authority| !a.as_str().contains('@'))
    }
}

/// Prepares a client's request headers for the backend: hop-by-hop removed,
/// the client recorded in `X-Forwarded-For`, the original host and scheme
/// in `X-Forwarded-Host` and `-Proto`, `Via` extended, and `Host` left for
/// the client to set to the upstream's (as nginx does by default).
///
/// A trusted proxy's `X-Forwarded-For` is appended to and its `-Host` and
/// `-Proto` kept; anyone else's are replaced, so a client cannot pass for
/// another address or claim a scheme it did not use.
pub(crate) fn forward_request(
    headers: &mut HeaderMap,
    peer: &Peer,
    version: Version,
    authority: Option<&str>,
) {
    remove_hop_by_hop(headers);
    let scheme = HeaderValue::from_static(if peer.scheme(headers) == "https" {
        "https"
    } else {
        "http"
    });
    let host = headers
        .remove(HOST)
        .or_else(|| authority.and_then(|a| HeaderValue::from_str(a).ok()));
    let keep_host = peer.trusted && headers.contains_key(X_FORWARDED_HOST);
    if let (Some(host), false) = (host, keep_host) {
        headers.insert(X_FORWARDED_HOST, host);
    }
    let forwarded_for = match joined(headers, &X_FORWARDED_FOR).filter(|_| peer.trusted) {
        Some(prior) => {
            let client = peer.forwarded_for.to_str().unwrap_or_default();
            HeaderValue::from_str(&format!("{prior}, {client}")).ok()
        }
        None => Some(peer.forwarded_for.clone()),
    };
    if let Some(v) = forwarded_for {
        headers.insert(X_FORWARDED_FOR, v);
    }
    headers.insert(X_FORWARDED_PROTO, scheme);
    if version == Version::HTTP_2 {
        join_cookies(headers);
    }
    add_via(headers, version);
}

/// HTTP/2 lets a client split `Cookie` into one field per cookie; an
/// HTTP/1.1 server expects one field, so they are joined with `; ` (RFC 9113
/// §8.2.3).
fn join_cookies(headers: &mut HeaderMap) {
    let mut cookies = headers.get_all(COOKIE).iter();
    let (Some(first), Some(_)) = (cookies.next(), cookies.next()) else {
        return;
    };
    let mut joined = first.as_bytes().to_vec();
    for value in headers.get_all(COOKIE).iter().skip(1) {
        joined.extend_from_slice(b"; ");
        joined.extend_from_slice(value.as_bytes());
    }
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(COOKIE, v);
    }
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

    fn peer(addr: &str, tls: bool, trusted: bool) -> Peer {
        Peer::new(addr.parse().unwrap(), tls, trusted)
    }

    fn forwarded_by_a_proxy() -> HeaderMap {
        map(&[
            ("host", "api.example.com"),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "public.example.com"),
            ("via", "1.1 edge"),
        ])
    }

    #[test]
    fn a_trusted_proxys_forwarded_headers_are_kept_and_extended() {
        let mut h = forwarded_by_a_proxy();
        let proxy = peer("127.0.0.1:1000", false, true);
        forward_request(&mut h, &proxy, Version::HTTP_11, None);
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
        assert_eq!(h["x-forwarded-host"], "public.example.com");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["via"], "1.1 edge, 1.1 asyncgate");
        assert!(h.get("host").is_none());
    }

    #[test]
    fn anyone_elses_forwarded_headers_are_replaced() {
        let mut h = forwarded_by_a_proxy();
        let client = peer("127.0.0.1:1000", false, false);
        forward_request(&mut h, &client, Version::HTTP_11, None);
        assert_eq!(h["x-forwarded-for"], "127.0.0.1");
        assert_eq!(h["x-forwarded-host"], "api.example.com");
        assert_eq!(h["x-forwarded-proto"], "http");

        let mut h = forwarded_by_a_proxy();
        h.insert("x-forwarded-proto", HeaderValue::from_static("http"));
        let over_tls = peer("127.0.0.1:1000", true, false);
        forward_request(&mut h, &over_tls, Version::HTTP_11, None);
        assert_eq!(h["x-forwarded-proto"], "https");
    }

    #[test]
    fn an_ipv4_client_on_a_dual_stack_socket_is_written_as_ipv4() {
        let mut h = HeaderMap::new();
        forward_request(
            &mut h,
            &peer("[::ffff:10.1.2.3]:1", false, false),
            Version::HTTP_11,
            None,
        );
        assert_eq!(h["x-forwarded-for"], "10.1.2.3");
    }

    #[test]
    fn cookies_split_by_an_http2_client_are_joined_for_http1() {
        let mut h = map(&[("cookie", "a=1"), ("cookie", "b=2"), ("cookie", "c=3")]);
        forward_request(&mut h, &peer("[::1]:1", true, false), Version::HTTP_2, None);
        assert_eq!(h.get_all("cookie").iter().count(), 1);
        assert_eq!(h["cookie"], "a=1; b=2; c=3");
    }

    #[test]
    fn http2_authority_stands_in_for_host() {
        let mut h = HeaderMap::new();
        forward_request(
            &mut h,
            &peer("[::1]:1", false, false),
            Version::HTTP_2,
            Some("example.org:8080"),
        );
        assert_eq!(h["x-forwarded-host"], "example.org:8080");
        assert_eq!(h["via"], "2 asyncgate");
        assert_eq!(h["x-forwarded-for"], "::1");
    }

    #[test]
    fn a_traceparent_is_read_only_when_it_is_one() {
        let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
        let good = format!("00-{trace}-00f067aa0ba902b7-01");
        assert_eq!(trace_id(&good), Some(trace));
        assert_eq!(
            trace_id(&format!("cc-{trace}-00f067aa0ba902b7-01-what-comes-later")),
            Some(trace)
        );
        for bad in [
            format!("00-{trace}-00f067aa0ba902b7-01-extra"),
            format!("ff-{trace}-00f067aa0ba902b7-01"),
            format!("00-{}-00f067aa0ba902b7-01", "0".repeat(32)),
            format!("00-{trace}-0000000000000000-01"),
            format!("00-{}-00f067aa0ba902b7-01", trace.to_uppercase()),
            format!("00-{trace}-00f067aa0ba902b7"),
            "garbage".to_owned(),
        ] {
            assert_eq!(trace_id(&bad), None, "{bad}");
        }
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", HeaderValue::from_str(&good).unwrap());
        assert_eq!(traceparent(&headers), Some(good.as_str()));
    }
}
