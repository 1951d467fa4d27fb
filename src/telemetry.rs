//! OpenTelemetry traces (the `otel` feature), exported over OTLP/HTTP to
//! `[tracing] otlp_endpoint`. Unset, no span is ever made: every function
//! here first asks [`on`], one load of a set-once cell.
//!
//! Spans are made with the OpenTelemetry API itself, not as `tracing`
//! spans: a job's spans begin in one process and may end in another (or
//! after a restart), at times the store kept, so they are built with
//! explicit start and end times and remote parents, which the API offers
//! and a `tracing` span (scoped to one process) does not.
//!
//! What crosses from one span to the next is a W3C `traceparent`: the
//! gateway rewrites the request's own to name its server span, so the job
//! keeps it with the request and every later span (queue wait, attempts,
//! store commit, deliveries) is a child of the submission, in whatever
//! process it runs.

#[cfg(not(feature = "otel"))]
use crate::config::TracingConfig;

#[cfg(feature = "otel")]
mod otel;

#[cfg(feature = "otel")]
pub(crate) use otel::Span;
#[cfg(feature = "otel")]
pub use otel::Telemetry;

/// Without the `otel` feature: never on, and nothing to flush.
#[cfg(not(feature = "otel"))]
pub struct Telemetry;

#[cfg(not(feature = "otel"))]
impl Telemetry {
    /// A config that names an endpoint is refused by validation in a
    /// build without the feature, so there is nothing to start.
    pub fn start(_: &TracingConfig) -> Result<Option<Telemetry>, String> {
        Ok(None)
    }
}

/// A span that is never made: the build has no OpenTelemetry.
#[cfg(not(feature = "otel"))]
#[derive(Default)]
pub(crate) struct Span(());

#[cfg(not(feature = "otel"))]
impl Span {
    pub(crate) fn server<B>(_: &mut http::Request<B>) -> Span {
        Span(())
    }
    pub(crate) fn client_of(_: &mut http::HeaderMap, _: &'static str) -> Span {
        Span(())
    }
    pub(crate) fn attempt(
        _: &mut http::HeaderMap,
        _: &str,
        _: u32,
        _: Option<std::time::SystemTime>,
    ) -> Span {
        Span(())
    }
    pub(crate) fn child(&self, _: &'static str) -> Span {
        Span(())
    }
    pub(crate) fn delivery(_: Option<&str>, _: crate::delivery::Channel, _: &str) -> Span {
        Span(())
    }
    pub(crate) fn traceparent(&self) -> Option<String> {
        None
    }
    pub(crate) fn status(&mut self, _: u16) {}
    pub(crate) fn fail(&mut self, _: &str) {}
    pub(crate) fn route(&mut self, _: &str) {}
}

/// The `traceparent` a delivery carries: its span's when spans are made,
/// else the job's own (the client's), so a receiver can still join it to
/// the trace.
pub(crate) fn delivery_traceparent(span: &Span, job: Option<&str>) -> Option<String> {
    span.traceparent().or_else(|| job.map(str::to_owned))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_no_endpoint_nothing_is_made() {
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut req = http::Request::new(());
        req.headers_mut()
            .insert("traceparent", parent.parse().unwrap());
        let span = Span::server(&mut req);
        assert_eq!(span.traceparent(), None);
        assert_eq!(
            req.headers()["traceparent"],
            parent,
            "the client's, untouched"
        );
        assert_eq!(
            delivery_traceparent(
                &Span::delivery(Some(parent), crate::delivery::Channel::Webhook, "j"),
                Some(parent)
            ),
            Some(parent.to_owned())
        );
    }
}
