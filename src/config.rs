//! The validated configuration: parsed once at start-up, so nothing after it
//! sees an `Option` that should have been a default or a string that should
//! have been a duration.

mod cx;
mod directory;
mod error;
mod expand;
mod raw;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::Method;

pub use error::ConfigError;
pub(crate) use raw::{LocationStyle, Mode, StoreKind, WebhookResult};

use crate::callback::signature::Secret;
use crate::callback::target::{AddressPolicy, HostPattern, Target};
use crate::defaults;
use crate::route_table::RouteTable;
use cx::Cx;
use raw::RawConfig;

#[derive(Debug)]
pub struct Config {
    pub(crate) path: PathBuf,
    pub(crate) server: ServerConfig,
    pub(crate) store: StoreConfig,
    pub(crate) upstreams: Vec<UpstreamConfig>,
    pub(crate) routes: Vec<RouteConfig>,
    /// Index into `upstreams` for requests no route matches.
    pub(crate) default_upstream: Option<usize>,
    /// How the bodies of those requests are received.
    pub(crate) default_body: RequestBody,
    pub(crate) route_table: RouteTable,
    pub(crate) webhooks: WebhookConfig,
    /// Where jobs' documents are produced for routes with a `kafka_topic`.
    pub(crate) kafka: Option<KafkaConfig>,
    /// Where the admin listener listens; `None` when it is turned off.
    pub(crate) admin: Option<SocketAddr>,
    /// What the admin listener's endpoints that change things (and show
    /// jobs) ask for in `Authorization: Bearer`; `None`: loopback peers
    /// only may change things.
    pub(crate) admin_token: Option<AdminToken>,
    /// The latency advisor names passthrough paths whose p99 is over this.
    pub(crate) advise_over: Duration,
    /// Where spans are exported, if anywhere.
    pub(crate) tracing: TracingConfig,
    /// What `tls_cert` and `tls_key` held when read: the public listener
    /// serves HTTPS with it; `None`: HTTP.
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<std::sync::Arc<rustls::sign::CertifiedKey>>,
}

/// `[tracing]`: OpenTelemetry spans over OTLP/HTTP.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingConfig {
    /// The collector's base URL (as `OTEL_EXPORTER_OTLP_ENDPOINT`); spans
    /// go to `{otlp_endpoint}/v1/traces`. `None`: no spans at all.
    pub otlp_endpoint: Option<String>,
    pub service_name: String,
    /// Of the traces this gateway starts, the share kept; a client's
    /// `traceparent` decides for its own.
    pub sample_ratio: f64,
}

/// The Kafka producer's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KafkaConfig {
    /// `bootstrap.servers`: `host:port`, comma-separated.
    pub(crate) brokers: String,
    /// librdkafka settings from the config, checked by librdkafka itself.
    pub(crate) properties: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub(crate) struct WebhookConfig {
    /// `None` when no route sends webhooks.
    /// What deliveries are signed with unless their route has its own;
    /// empty when no route sends webhooks without its own.
    pub(crate) secrets: Vec<Secret>,
    pub(crate) policy: AddressPolicy,
    /// For one attempt: connecting, sending, and the receiver's status line.
    pub(crate) timeout: Duration,
    /// The waits before the second attempt, the third, and so on; one
    /// attempt more than there are waits.
    pub(crate) retry_schedule: Vec<Duration>,
    /// Certificates trusted for `https` receivers besides Mozilla's roots.
    #[cfg(feature = "tls")]
    pub(crate) extra_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
}

impl Default for WebhookConfig {
    fn default() -> WebhookConfig {
        WebhookConfig {
            secrets: Vec::new(),
            policy: AddressPolicy::default(),
            timeout: defaults::WEBHOOK_TIMEOUT,
            retry_schedule: defaults::WEBHOOK_RETRY_SCHEDULE.to_vec(),
            #[cfg(feature = "tls")]
            extra_roots: Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct ServerConfig {
    pub(crate) listen: SocketAddr,
    pub(crate) jobs_path: String,
    /// Without a trailing slash; `None` means URLs are relative.
    pub(crate) public_base_url: Option<String>,
    pub(crate) max_connections: usize,
    /// Threads accepting and serving connections, each with its own runtime.
    pub(crate) workers: usize,
    pub(crate) header_read_timeout: Duration,
    /// How long a connection may idle between requests.
    pub(crate) keepalive_timeout: Duration,
    /// How long an upgraded connection (a WebSocket) may be silent both ways.
    pub(crate) tunnel_idle_timeout: Duration,
    pub(crate) body_idle_timeout: Duration,
    pub(crate) max_header_bytes: usize,
    pub(crate) max_headers: usize,
    pub(crate) drain_timeout: Duration,
    /// After SIGTERM, how long the listeners go on accepting and serving
    /// while readiness already answers `503`, before the drain begins.
    pub(crate) shutdown_delay: Duration,
    /// Where request bodies too large to buffer in memory are kept.
    pub(crate) body_temp_path: PathBuf,
    /// The key of bound jobs' events links (shared by replicas); `None`: a
    /// key of this process's own.
    pub(crate) events_link_secret: Option<Secret>,
    /// How long an events link works.
    pub(crate) events_link_ttl: Duration,
    /// Origins whose scripts may use the job API (`*`: any).
    pub(crate) cors_origins: Vec<String>,
    /// Peers whose `X-Forwarded-*` headers are believed.
    pub(crate) trusted_proxies: Vec<ipnet::IpNet>,
}

#[derive(Debug, Clone)]
pub(crate) struct StoreConfig {
    pub(crate) max_bytes: u64,
    pub(crate) result_ttl: Duration,
    pub(crate) tombstone_ttl: Duration,
    /// Set exactly when the config's `kind` is `disk`.
    pub(crate) disk: Option<DiskConfig>,
    /// Set exactly when the config's `kind` is `redis`.
    pub(crate) redis: Option<RedisConfig>,
}

#[derive(Debug, Clone)]
pub(crate) struct DiskConfig {
    /// A directory: the database file and the large results' files.
    pub(crate) path: PathBuf,
    /// The memory cache of recent results.
    pub(crate) cache_bytes: u64,
    /// Results above it live in files of their own.
    pub(crate) file_threshold: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct RedisConfig {
    /// The URLs dialled: `url`, or each of a cluster's seed nodes.
    pub(crate) seeds: Vec<String>,
    /// A Redis Cluster: every job's keys are put in one hash slot, see the
    /// Redis store.
    pub(crate) cluster: bool,
    /// How long a replica keeps a running job without renewing its lease.
    pub(crate) lease: Duration,
    /// Starts every key and channel, so gateways can share one Redis.
    pub(crate) key_prefix: String,
}

#[derive(Debug, Clone)]
pub(crate) struct UpstreamConfig {
    pub(crate) name: String,
    pub(crate) scheme: Scheme,
    pub(crate) authority: Authority,
    /// Prepended to every forwarded path; empty or starting with `/`, never ending with one.
    pub(crate) path_prefix: String,
    pub(crate) timeout: Duration,
    pub(crate) job_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) pool_idle_timeout: Duration,
    pub(crate) max_concurrency: usize,
    pub(crate) max_queue: usize,
    /// Jobs sent again after a failure that may pass, at most this often.
    pub(crate) retries: u32,
    pub(crate) retry_backoff: Duration,
    pub(crate) retry_backoff_max: Duration,
    /// Jobs start no faster than this, across all routes and replicas.
    pub(crate) rate: Option<Rate>,
    /// The concurrency limit follows the backend's latency and refusals,
    /// between 1 and `max_concurrency`.
    pub(crate) adaptive: bool,
    /// Within one urgency, waiting jobs start round-robin across callers.
    pub(crate) fair: bool,
    /// Certificates trusted for an `https` upstream besides Mozilla's roots.
    #[cfg(feature = "tls")]
    pub(crate) extra_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
}

/// At most `count` job starts per `per`, `burst` of them at once after a
/// quiet spell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rate {
    pub(crate) count: u32,
    pub(crate) per: Duration,
    pub(crate) burst: u32,
}

impl Rate {
    /// The time one start uses up.
    pub(crate) fn interval(&self) -> Duration {
        self.per / self.count
    }

    /// How much earlier than exactly on time a start may come: the burst
    /// less the one start it always allows.
    pub(crate) fn tolerance(&self) -> Duration {
        self.interval() * self.burst.saturating_sub(1)
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "s",
            60 => "m",
            _ => "h",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct RouteConfig {
    pub(crate) name: String,
    /// `None` matches every method.
    pub(crate) methods: Option<Vec<Method>>,
    pub(crate) path: String,
    pub(crate) upstream: usize,
    pub(crate) mode: Mode,
    pub(crate) max_body: u64,
    pub(crate) max_result: u64,
    pub(crate) retry_after_min: Duration,
    pub(crate) retry_after_max: Duration,
    /// `auto` mode: how long to wait for the backend before answering `202`.
    pub(crate) sync_wait: Duration,
    /// `auto` mode: the most a client's `Prefer: wait` may ask for.
    pub(crate) max_wait: Duration,
    /// A finished job's status URL answers `303 See Other` to its result.
    pub(crate) redirect_when_done: bool,
    /// Whether a job's backend request carries `Asyncgate-Job-Id` and
    /// `Asyncgate-Attempt`.
    pub(crate) job_headers: bool,
    /// A job still queued this long after it was accepted fails
    /// (`expired`) and is never sent; `None`: it waits as long as it takes.
    pub(crate) start_timeout: Option<Duration>,
    /// The urgency of its jobs (RFC 9218, 0 most urgent … 7) when the
    /// request says none, or when `priority_header` is off.
    pub(crate) priority: u8,
    /// Whether a request's `Priority` header sets its job's urgency.
    pub(crate) priority_header: bool,
    /// The most jobs one caller may have waiting on this route; past it a
    /// submission is `429 caller-quota`.
    pub(crate) max_queued_per_caller: Option<usize>,
    /// Request headers that carry credentials: a job submitted with any of
    /// them is visible only to requests with the same values.
    pub(crate) bind_headers: Vec<http::HeaderName>,
    pub(crate) location: LocationStyle,
    /// Hosts a request's `Callback-Url` may name; `None` refuses the header.
    pub(crate) callback_hosts: Option<Vec<HostPattern>>,
    /// Where the webhook goes when the request names none.
    pub(crate) callback_url: Option<Target>,
    /// Whether a job whose replica was lost is sent again; `None`: when its
    /// method is idempotent (RFC 9110).
    pub(crate) resend_on_loss: Option<bool>,
    /// Whether jobs of methods that are not idempotent are retried even
    /// when the backend may have received the request.
    pub(crate) retry_non_idempotent: bool,
    /// Proxied request bodies are received whole before the backend is
    /// contacted.
    pub(crate) request_buffering: bool,
    /// Its own webhook signing secrets, instead of `[webhooks]`'s.
    pub(crate) webhook_secrets: Option<Vec<Secret>>,
    /// Where the document of each job that ends is produced.
    pub(crate) kafka_topic: Option<String>,
    /// What the route's webhooks carry of the result, and the most bytes
    /// of it carried inline.
    pub(crate) webhook_result: WebhookResult,
    pub(crate) webhook_result_max: u64,
}

impl RouteConfig {
    pub(crate) fn request_body(&self) -> RequestBody {
        RequestBody {
            max_bytes: self.max_body,
            buffering: self.request_buffering,
        }
    }
}

/// How a proxied request's body is received.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestBody {
    /// Larger bodies are refused with `413`.
    pub(crate) max_bytes: u64,
    /// Received whole (in memory, then in a temporary file) before the
    /// backend is contacted; otherwise streamed as it arrives.
    pub(crate) buffering: bool,
}

impl Config {
    pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let src = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&src, path)
    }

    /// Parses `src` as if read from `path` (which only names it in errors).
    pub fn parse(src: &str, path: &Path) -> Result<Config, ConfigError> {
        let src = &*expand::expand(src, path, |name| std::env::var(name).ok())?;
        let cx = Cx { path, src };
        let raw: RawConfig = toml::from_str(src).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            cx.err(span, e.message().trim().replace('\n', "; "))
        })?;
        cx.validate(raw)
    }

    /// The admin listener's address as the file at `path` names it (`None`
    /// when it is turned off), reading `[admin]` alone: what `asyncgate
    /// health` asks. An edit elsewhere in the file that a reload would
    /// refuse says nothing about the running gateway's health.
    pub fn admin_address(path: impl AsRef<Path>) -> Result<Option<SocketAddr>, ConfigError> {
        let path = path.as_ref();
        let src = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let src = expand::expand(&src, path, |name| std::env::var(name).ok())?;
        let cx = Cx { path, src: &src };
        let raw: raw::AdminOnly = toml::from_str(&src).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            cx.err(span, e.message().trim().replace('\n', "; "))
        })?;
        cx.admin_address(raw.admin)
    }

    pub(crate) fn upstream_of(&self, route: &RouteConfig) -> &UpstreamConfig {
        &self.upstreams[route.upstream]
    }

    /// The address the gateway listens on.
    pub fn listen(&self) -> std::net::SocketAddr {
        self.server.listen
    }

    /// Where spans go, if anywhere (`[tracing]`).
    pub fn tracing(&self) -> &TracingConfig {
        &self.tracing
    }

    /// The admin listener's address, unless it is turned off.
    pub fn admin_listen(&self) -> Option<std::net::SocketAddr> {
        self.admin
    }

    /// What `asyncgate check` prints: the file, the address, a line per
    /// route with its methods, path, upstream and mode, and where spans go.
    pub fn describe(&self) -> String {
        use std::fmt::Write;
        let mut out = format!(
            "{}: ok, listening on {}\n",
            self.path.display(),
            self.server.listen
        );
        for route in &self.routes {
            let methods = route.methods.as_ref().map_or_else(
                || "*".to_owned(),
                |ms| ms.iter().map(Method::as_str).collect::<Vec<_>>().join(","),
            );
            let mode = route.mode.as_str();
            let _ = writeln!(
                out,
                "  {:<16} {:<12} {:<32} -> {} ({mode})",
                route.name,
                methods,
                route.path,
                self.upstream_of(route).name
            );
        }
        let _ = match self.default_upstream {
            Some(i) => writeln!(
                out,
                "  {:<16} {:<12} {:<32} -> {} (passthrough)",
                "[default]", "*", "*", self.upstreams[i].name
            ),
            None => writeln!(out, "  unmatched requests: 404"),
        };
        if let Some(endpoint) = &self.tracing.otlp_endpoint {
            let _ = writeln!(
                out,
                "  spans to {endpoint}/v1/traces as {} (sample ratio {})",
                self.tracing.service_name, self.tracing.sample_ratio
            );
        }
        out
    }
}

/// The admin listener's bearer token: compared in constant time, never
/// printed.
#[derive(Clone)]
pub(crate) struct AdminToken(Vec<u8>);

impl AdminToken {
    pub(crate) fn new(token: &str) -> AdminToken {
        AdminToken(token.as_bytes().to_vec())
    }

    /// Whether `presented` is the token.
    pub(crate) fn admits(&self, presented: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        self.0.len() == presented.len() && bool::from(self.0.ct_eq(presented))
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(..)")
    }
}
