//! CORS for browser clients of what the gateway itself answers: the job API
//! and async routes' submissions (`[server] cors_origins`). Proxied routes
//! are the backend's business: their preflights and headers pass through.
//!
//! tower-http's `CorsLayer` would answer every preflight of the service it
//! wraps, proxied paths included, with one list of methods for all; here a
//! preflight is answered only where the gateway answers the request, with
//! the methods that destination takes.

use http::header::{
    HeaderValue, ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS,
    ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS,
    ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN,
    VARY,
};
use http::{HeaderMap, Method, Response, StatusCode};

use crate::body::{self, Body};

/// What a browser script may read of the gateway's answers: where its job
/// is, when to ask again, what was done with its `Prefer`, and the request id.
const EXPOSED: HeaderValue = HeaderValue::from_static(
    "Location, Operation-Location, Retry-After, Preference-Applied, X-Request-Id",
);

/// How long a browser may keep a preflight's answer.
const MAX_AGE: HeaderValue = HeaderValue::from_static("600");

/// The origins whose scripts may use the job API.
#[derive(Debug, Clone)]
pub(crate) struct Cors {
    /// Exact origins (`https://app.example.com`), allowed with credentials.
    origins: Vec<HeaderValue>,
    /// `*`: any origin, without credentials.
    any: bool,
}

/// A request from an allowed origin, and how to answer it.
#[derive(Debug)]
pub(crate) struct Allowed {
    origin: HeaderValue,
    /// The origin was listed by name: cookies and credentials may go along.
    credentials: bool,
}

impl Cors {
    /// From `cors_origins`: each `*` or a `scheme://host[:port]` origin, as
    /// checked when the config was read. `None` when the list is empty.
    pub(crate) fn new(origins: &[String]) -> Option<Cors> {
        if origins.is_empty() {
            return None;
        }
        Some(Cors {
            any: origins.iter().any(|o| o == "*"),
            origins: origins
                .iter()
                .filter(|o| *o != "*")
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect(),
        })
    }

    /// Whether `origin` may be one: `*`, or `scheme://host[:port]` with no
    /// path.
    pub(crate) fn valid_origin(origin: &str) -> bool {
        if origin == "*" {
            return true;
        }
        let Some((scheme, rest)) = origin.split_once("://") else {
            return false;
        };
        matches!(scheme, "http" | "https")
            && !rest.is_empty()
            && !rest.contains(['/', '?', '#', ' '])
    }

    /// The request's origin, if it has one this gateway allows.
    pub(crate) fn allows(&self, headers: &HeaderMap) -> Option<Allowed> {
        let origin = headers.get(ORIGIN)?;
        if self.origins.iter().any(|o| o == origin) {
            return Some(Allowed {
                origin: origin.clone(),
                credentials: true,
            });
        }
        self.any.then(|| Allowed {
            origin: HeaderValue::from_static("*"),
            credentials: false,
        })
    }
}

/// The method a preflight asks about, if the request is a preflight.
pub(crate) fn preflight(method: &Method, headers: &HeaderMap) -> Option<Method> {
    if method != Method::OPTIONS || !headers.contains_key(ORIGIN) {
        return None;
    }
    Method::from_bytes(headers.get(ACCESS_CONTROL_REQUEST_METHOD)?.as_bytes()).ok()
}

/// The answer to a preflight from an origin not allowed: no CORS headers,
/// so the browser stops there.
pub(crate) fn refused_preflight() -> Response<Body> {
    let mut response = Response::new(body::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

impl Allowed {
    /// The answer to a preflight for a destination that takes `methods`.
    pub(crate) fn preflight(&self, request: &HeaderMap, methods: &str) -> Response<Body> {
        let mut response = Response::new(body::empty());
        *response.status_mut() = StatusCode::NO_CONTENT;
        let headers = response.headers_mut();
        self.allow(headers);
        if let Ok(methods) = HeaderValue::from_str(methods) {
            headers.insert(ACCESS_CONTROL_ALLOW_METHODS, methods);
        }
        // Whatever headers the script wants to send: credentials are
        // checked by the job's binding, not by CORS.
        if let Some(asked) = request.get(ACCESS_CONTROL_REQUEST_HEADERS) {
            headers.insert(ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
        }
        headers.insert(ACCESS_CONTROL_MAX_AGE, MAX_AGE);
        headers.insert(
            VARY,
            HeaderValue::from_static(
                "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
            ),
        );
        response
    }

    /// Lets the script read `response`.
    pub(crate) fn expose(&self, response: &mut Response<Body>) {
        let headers = response.headers_mut();
        self.allow(headers);
        headers.insert(ACCESS_CONTROL_EXPOSE_HEADERS, EXPOSED);
        headers.append(VARY, HeaderValue::from_static("Origin"));
    }

    fn allow(&self, headers: &mut HeaderMap) {
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, self.origin.clone());
        if self.credentials {
            headers.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    http::HeaderName::from_static(k),
                    HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    #[test]
    fn listed_origins_get_credentials_and_the_wildcard_does_not() {
        let cors = Cors::new(&["https://app.example.com".to_owned(), "*".to_owned()]).unwrap();
        let listed = cors
            .allows(&headers(&[("origin", "https://app.example.com")]))
            .unwrap();
        assert!(listed.credentials);
        assert_eq!(listed.origin, "https://app.example.com");
        let other = cors
            .allows(&headers(&[("origin", "https://else.example")]))
            .unwrap();
        assert!(!other.credentials);
        assert_eq!(other.origin, "*");
        assert!(cors.allows(&HeaderMap::new()).is_none());

        let strict = Cors::new(&["https://app.example.com".to_owned()]).unwrap();
        assert!(strict
            .allows(&headers(&[("origin", "https://else.example")]))
            .is_none());
        assert!(Cors::new(&[]).is_none());
    }

    #[test]
    fn only_options_with_origin_and_a_requested_method_is_a_preflight() {
        let asked = headers(&[
            ("origin", "https://a.b"),
            ("access-control-request-method", "POST"),
        ]);
        assert_eq!(preflight(&Method::OPTIONS, &asked), Some(Method::POST));
        assert_eq!(preflight(&Method::GET, &asked), None);
        let plain = headers(&[("origin", "https://a.b")]);
        assert_eq!(preflight(&Method::OPTIONS, &plain), None);
    }

    #[test]
    fn origins_are_checked() {
        for good in ["*", "https://app.example.com", "http://localhost:3000"] {
            assert!(Cors::valid_origin(good), "{good}");
        }
        for bad in [
            "app.example.com",
            "https://a.b/path",
            "ftp://a.b",
            "https://",
        ] {
            assert!(!Cors::valid_origin(bad), "{bad}");
        }
    }
}
