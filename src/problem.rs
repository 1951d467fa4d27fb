//! Problem documents (RFC 9457): the body of every error the gateway itself
//! produces. Backend responses are never turned into problems.

use http::header::{HeaderValue, CONTENT_TYPE};
use http::{HeaderMap, Response, StatusCode};
use serde::Serialize;

use crate::body::{self, Body};

pub(crate) const CONTENT_TYPE_PROBLEM: HeaderValue =
    HeaderValue::from_static("application/problem+json");

/// One problem; `kind` becomes the `type` URI `urn:asyncgate:problem:{kind}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    pub(crate) status: StatusCode,
    pub(crate) kind: &'static str,
    pub(crate) title: &'static str,
    pub(crate) detail: String,
    /// Extension members, for problems about a job.
    pub(crate) job_status: Option<&'static str>,
    pub(crate) monitor: Option<String>,
    pub(crate) headers: HeaderMap,
}

#[derive(Serialize)]
struct Document<'a> {
    #[serde(rename = "type")]
    type_uri: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    job_status: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    monitor: Option<&'a str>,
}

impl Problem {
    pub(crate) fn new(
        status: StatusCode,
        kind: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Problem {
        Problem {
            status,
            kind,
            title,
            detail: detail.into(),
            job_status: None,
            monitor: None,
            headers: HeaderMap::new(),
        }
    }

    pub(crate) fn type_uri(&self) -> String {
        format!("urn:asyncgate:problem:{}", self.kind)
    }

    pub(crate) fn with_header(mut self, name: http::HeaderName, value: HeaderValue) -> Problem {
        self.headers.insert(name, value);
        self
    }

    pub(crate) fn into_response(self) -> Response<Body> {
        let doc = Document {
            type_uri: self.type_uri(),
            title: self.title,
            status: self.status.as_u16(),
            detail: &self.detail,
            job_status: self.job_status,
            monitor: self.monitor.as_deref(),
        };
        let json = serde_json::to_vec(&doc).expect("a problem document always serializes");
        let mut response = Response::new(body::full(json));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.extend(self.headers);
        headers.insert(CONTENT_TYPE, CONTENT_TYPE_PROBLEM);
        response
    }
}
