//! The spans themselves, with the OpenTelemetry SDK: a batching processor
//! on a thread of its own, exporting OTLP/HTTP protobuf.

use std::sync::OnceLock;
use std::time::SystemTime;

use http::{HeaderMap, HeaderValue, Method};
use opentelemetry::trace::{
    Link, Span as _, SpanBuilder, SpanContext, SpanId, SpanKind, Status, TraceContextExt,
    TraceFlags, TraceId, TraceState, TracerProvider,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig};
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;

use crate::config::TracingConfig;
use crate::delivery::Channel;

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
    // Boxed: a request's futures carry two of these, and unboxed they
    // would carry (and move) 600 bytes when spans are off.
    span: Option<Box<opentelemetry_sdk::trace::Span>>,
    /// A server span's method, for its name once the route is known.
    method: Option<Method>,
}

impl Span {
    fn start(builder: SpanBuilder, parent: &Context) -> Span {
        Span {
            span: TRACER
                .get()
                .map(|tracer| Box::new(builder.start_with_context(tracer, parent))),
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
        let name = static_name(&method);
        let builder = SpanBuilder::from_name(name.clone())
            .with_kind(SpanKind::Server)
            .with_attributes([KeyValue::new("http.request.method", name)]);
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
    pub(crate) fn delivery(job_traceparent: Option<&str>, channel: Channel, job: &str) -> Span {
        if !on() {
            return Span::default();
        }
        let mut headers = HeaderMap::new();
        if let Some(value) = job_traceparent.and_then(|v| HeaderValue::from_str(v).ok()) {
            headers.insert("traceparent", value);
        }
        let kind = match channel {
            Channel::Kafka => SpanKind::Producer,
            Channel::Webhook => SpanKind::Client,
        };
        let builder = SpanBuilder::from_name(format!("{} delivery", channel.as_str()))
            .with_kind(kind)
            .with_attributes([KeyValue::new("asyncgate.job", job.to_owned())]);
        Span::start(builder, &extract(&headers))
    }

    /// This span as a W3C `traceparent`.
    pub(crate) fn traceparent(&self) -> Option<String> {
        let bytes = self.traceparent_bytes()?;
        Some(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// `00-{trace id}-{span id}-{flags}`, in hex. Written by hand: `{:032x}`
    /// of the ids cost a few thousand instructions per span.
    fn traceparent_bytes(&self) -> Option<[u8; 55]> {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let context = self.context()?;
        let mut out = [b'-'; 55];
        let mut at = 0;
        let mut put = |bytes: &[u8]| {
            for b in bytes {
                out[at] = HEX[usize::from(b >> 4)];
                out[at + 1] = HEX[usize::from(b & 0xf)];
                at += 2;
            }
            at += 1;
        };
        put(&[0]);
        put(&context.trace_id().to_bytes());
        put(&context.span_id().to_bytes());
        put(&[context.trace_flags().to_u8()]);
        Some(out)
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
            if !span.is_recording() {
                return;
            }
            span.update_name(format!("{method} {route}"));
            span.set_attribute(KeyValue::new("http.route", route.to_owned()));
        }
    }

    fn context(&self) -> Option<SpanContext> {
        self.span.as_ref().map(|s| s.span_context().clone())
    }

    /// Names this span in `headers`' `traceparent`, for the next hop. A
    /// `tracestate` is left as it came: the gateway adds no entry of its own.
    fn inject(&self, headers: &mut HeaderMap) {
        if let Some(value) = self
            .traceparent_bytes()
            .and_then(|t| HeaderValue::from_bytes(&t).ok())
        {
            headers.insert(TRACEPARENT, value);
        }
    }
}

/// A method's name, without an allocation for the standard ones.
fn static_name(method: &Method) -> std::borrow::Cow<'static, str> {
    const STANDARD: [Method; 9] = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::HEAD,
        Method::OPTIONS,
        Method::CONNECT,
        Method::TRACE,
    ];
    const NAMES: [&str; 9] = [
        "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE",
    ];
    match STANDARD.iter().position(|m| m == method) {
        Some(i) => NAMES[i].into(),
        None => method.to_string().into(),
    }
}

const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");

/// The W3C trace context `headers` carry, if any: a remote parent, or an
/// empty context. Read with the same check as the log's trace ids rather
/// than the SDK's propagator, which also parses `tracestate` into a map
/// no span here reads.
fn extract(headers: &HeaderMap) -> Context {
    let Some(traceparent) = crate::headers::traceparent(headers) else {
        return Context::new();
    };
    let mut fields = traceparent.split('-').skip(1);
    let (Some(trace), Some(span), Some(flags)) = (fields.next(), fields.next(), fields.next())
    else {
        return Context::new();
    };
    let (Ok(trace), Ok(span), Ok(flags)) = (
        TraceId::from_hex(trace),
        SpanId::from_hex(span),
        u8::from_str_radix(flags, 16),
    ) else {
        return Context::new();
    };
    let sampled = TraceFlags::new(flags) & TraceFlags::SAMPLED;
    Context::new().with_remote_span_context(SpanContext::new(
        trace,
        span,
        sampled,
        true,
        TraceState::NONE,
    ))
}
