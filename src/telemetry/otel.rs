//! The spans themselves, with the OpenTelemetry SDK: a batching processor
//! on a thread of its own, exporting OTLP/HTTP protobuf.

use std::sync::OnceLock;
use std::time::SystemTime;

use http::{HeaderMap, HeaderValue, Method};

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{
    Link, Span as _, SpanBuilder, SpanContext, SpanKind, Status, TraceContextExt, TracerProvider,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;

use crate::config::TracingConfig;

/// Set once, when the endpoint is configured; never unset.
static TRACER: OnceLock<SdkTracer> = OnceLock::new();

pub(super) fn on() -> bool {
    TRACER.get().is_some()
}

/// The exporter running: dropped at exit, it exports what is still
/// batched.
#[must_use = "dropping it stops the export"]
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Starts the export if `config` names an endpoint. Once per process.
    pub fn start(config: &TracingConfig) -> Result<Option<Telemetry>, String> {
        let Some(endpoint) = &config.otlp_endpoint else {
            return Ok(None);
        };
        let exporter = SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(format!("{endpoint}/v1/traces"))
            .build()
            .map_err(|e| format!("cannot start the OTLP exporter: {e}"))?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            // A client's traceparent decides whether its trace is kept.
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                config.sample_ratio,
            ))))
            .with_resource(
                Resource::builder()
                    .with_service_name(config.service_name.clone())
                    .build(),
            )
            .build();
        TRACER
            .set(provider.tracer("asyncgate"))
            .map_err(|_| "tracing is started once per process".to_owned())?;
        Ok(Some(Telemetry { provider }))
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        let _ = self.provider.shutdown();
    }
}

/// A span under way, ended when dropped; nothing when spans are not made.
#[derive(Default)]
pub(crate) struct Span {
    span: Option<opentelemetry_sdk::trace::Span>,
    /// A server span's method, for its name once the route is known.
    method: Option<Method>,
}

impl Span {
    fn start(builder: SpanBuilder, parent: &Context) -> Span {
        Span {
            span: TRACER
                .get()
                .map(|tracer| builder.start_with_context(tracer, parent)),
            method: None,
        }
    }

    /// A request's server span, a child of the client's `traceparent` if
    /// it sent one; the request's `traceparent` then names this span, so
    /// what the gateway does for it (proxy it, or keep it as a job's) is
    /// its child.
    pub(crate) fn server<B>(req: &mut http::Request<B>) -> Span {
        if !on() {
            return Span::default();
        }
        let method = req.method().clone();
        let headers = req.headers_mut();
        let builder = SpanBuilder::from_name(method.to_string())
            .with_kind(SpanKind::Server)
            .with_attributes([KeyValue::new("http.request.method", method.to_string())]);
        let mut span = Span::start(builder, &extract(headers));
        span.method = Some(method);
        span.inject(headers);
        span
    }

    /// A request sent on for the span its `traceparent` names (the
    /// server span): a client span, which the request names instead.
    pub(crate) fn client_of(headers: &mut HeaderMap, name: &'static str) -> Span {
        if !on() {
            return Span::default();
        }
        let builder = SpanBuilder::from_name(name).with_kind(SpanKind::Client);
        let span = Span::start(builder, &extract(headers));
        span.inject(headers);
        span
    }

    /// A job's attempt, from the `traceparent` its request was kept with
    /// (its submission's server span). The first is a child of the
    /// submission, after a span for its time in the queue since
    /// `queued_since`; a later one (a retry after a back-off, maybe hours
    /// on) starts a trace of its own, linked to the submission's. The
    /// request then names the attempt's span.
    pub(crate) fn attempt(
        headers: &mut HeaderMap,
        route: &str,
        attempt: u32,
        queued_since: Option<SystemTime>,
    ) -> Span {
        let Some(tracer) = TRACER.get() else {
            return Span::default();
        };
        let submission = extract(headers);
        let attributes = [
            KeyValue::new("asyncgate.route", route.to_owned()),
            KeyValue::new("asyncgate.attempt", i64::from(attempt)),
        ];
        let (parent, links) = if attempt <= 1 {
            if let Some(since) = queued_since {
                let mut queued = SpanBuilder::from_name("queue wait")
                    .with_start_time(since)
                    .with_attributes(attributes.clone())
                    .start_with_context(tracer, &submission);
                queued.end();
            }
            (submission, Vec::new())
        } else {
            let first = submission.span().span_context().clone();
            let links = if first.is_valid() {
                vec![Link::with_context(first)]
            } else {
                Vec::new()
            };
            (Context::new(), links)
        };
        let builder = SpanBuilder::from_name(format!("backend attempt {attempt}"))
            .with_kind(SpanKind::Client)
            .with_links(links)
            .with_attributes(attributes);
        let span = Span::start(builder, &parent);
        span.inject(headers);
        span
    }

    /// Part of this span's work, such as the store's commit of its outcome.
    pub(crate) fn child(&self, name: &'static str) -> Span {
        let Some(context) = self.context() else {
            return Span::default();
        };
        Span::start(
            SpanBuilder::from_name(name),
            &Context::new().with_remote_span_context(context),
        )
    }

    /// One delivery attempt of a job's end (`channel`: webhook or kafka),
    /// a child of the job's submission.
    pub(crate) fn delivery(
        job_traceparent: Option<&str>,
        channel: &'static str,
        job: &str,
    ) -> Span {
        if !on() {
            return Span::default();
        }
        let mut headers = HeaderMap::new();
        if let Some(value) = job_traceparent.and_then(|v| HeaderValue::from_str(v).ok()) {
            headers.insert("traceparent", value);
        }
        let kind = if channel == "kafka" {
            SpanKind::Producer
        } else {
            SpanKind::Client
        };
        let builder = SpanBuilder::from_name(format!("{channel} delivery"))
            .with_kind(kind)
            .with_attributes([KeyValue::new("asyncgate.job", job.to_owned())]);
        Span::start(builder, &extract(&headers))
    }

    /// This span as a W3C `traceparent`.
    pub(crate) fn traceparent(&self) -> Option<String> {
        let context = self.context()?;
        Some(format!(
            "00-{}-{}-{:02x}",
            context.trace_id(),
            context.span_id(),
            context.trace_flags().to_u8()
        ))
    }

    /// The answer's status code; a 5xx marks the span an error.
    pub(crate) fn status(&mut self, code: u16) {
        if let Some(span) = &mut self.span {
            span.set_attribute(KeyValue::new("http.response.status_code", i64::from(code)));
            if code >= 500 {
                span.set_status(Status::error(code.to_string()));
            }
        }
    }

    /// It failed, and why.
    pub(crate) fn fail(&mut self, why: &str) {
        if let Some(span) = &mut self.span {
            span.set_status(Status::error(why.to_owned()));
        }
    }

    /// A server span's route, once known: its name becomes `METHOD route`.
    pub(crate) fn route(&mut self, route: &str) {
        if let (Some(span), Some(method)) = (&mut self.span, &self.method) {
            span.update_name(format!("{method} {route}"));
            span.set_attribute(KeyValue::new("http.route", route.to_owned()));
        }
    }

    fn context(&self) -> Option<SpanContext> {
        self.span.as_ref().map(|s| s.span_context().clone())
    }

    /// Names this span in `headers`' `traceparent`, for the next hop.
    fn inject(&self, headers: &mut HeaderMap) {
        if let Some(value) = self
            .traceparent()
            .and_then(|t| HeaderValue::from_str(&t).ok())
        {
            headers.insert("traceparent", value);
        }
    }
}

/// The W3C trace context `headers` carry, if any.
fn extract(headers: &HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&Headers(headers))
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}
