//! The config file as written: serde structs that only mirror TOML.
//!
//! Values that need checking beyond their TOML type keep their span, so a
//! validation error can name the line they came from.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

pub(super) type Text = Spanned<String>;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(crate) server: RawServer,
    #[serde(default)]
    pub(crate) store: RawStore,
    #[serde(default)]
    pub(crate) upstreams: BTreeMap<String, RawUpstream>,
    #[serde(default)]
    pub(crate) routes: Vec<RawRoute>,
    #[serde(default)]
    pub(crate) default: RawDefault,
    #[serde(default)]
    pub(crate) webhooks: RawWebhooks,
    #[serde(default)]
    pub(crate) admin: RawAdmin,
    pub(crate) kafka: Option<Spanned<RawKafka>>,
    #[serde(default)]
    pub(crate) tracing: RawTracing,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTracing {
    pub(crate) otlp_endpoint: Option<Text>,
    pub(crate) service_name: Option<Text>,
    pub(crate) sample_ratio: Option<Spanned<f64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKafka {
    pub(crate) brokers: Option<Spanned<Vec<Text>>>,
    /// librdkafka's own settings, passed through (SASL, TLS, timeouts).
    #[serde(default)]
    pub(crate) properties: BTreeMap<String, Text>,
}

/// A config read for its `[admin]` address alone; the rest is not looked at.
#[derive(Debug, Deserialize)]
pub(super) struct AdminOnly {
    #[serde(default)]
    pub(super) admin: AdminAddress,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct AdminAddress {
    pub(super) listen: Option<Text>,
    pub(super) enabled: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub(crate) listen: Option<Text>,
    pub(crate) enabled: Option<bool>,
    pub(crate) token: Option<Text>,
    pub(crate) token_file: Option<Text>,
    pub(crate) advise_over: Option<Text>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWebhooks {
    pub(crate) secret: Option<Spanned<Secrets>>,
    pub(crate) secret_file: Option<Text>,
    pub(crate) timeout: Option<Text>,
    pub(crate) retry_schedule: Option<Vec<Text>>,
    pub(crate) allow_networks: Option<Vec<Text>>,
    pub(crate) ca_file: Option<Text>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(crate) listen: Option<Text>,
    pub(crate) jobs_path: Option<Text>,
    pub(crate) public_base_url: Option<Text>,
    pub(crate) max_connections: Option<Spanned<usize>>,
    pub(crate) workers: Option<Spanned<usize>>,
    pub(crate) header_read_timeout: Option<Text>,
    pub(crate) body_idle_timeout: Option<Text>,
    pub(crate) max_header_bytes: Option<Text>,
    pub(crate) max_headers: Option<Spanned<usize>>,
    pub(crate) drain_timeout: Option<Text>,
    pub(crate) shutdown_delay: Option<Text>,
    pub(crate) trusted_proxies: Option<Vec<Text>>,
    pub(crate) keepalive_timeout: Option<Text>,
    pub(crate) body_temp_path: Option<Text>,
    pub(crate) tunnel_idle_timeout: Option<Text>,
    pub(crate) cors_origins: Option<Vec<Text>>,
    pub(crate) events_link_secret: Option<Text>,
    pub(crate) events_link_secret_file: Option<Text>,
    pub(crate) events_link_ttl: Option<Text>,
    pub(crate) tls_cert: Option<Text>,
    pub(crate) tls_key: Option<Text>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    pub(crate) kind: Option<Spanned<StoreKind>>,
    pub(crate) max_bytes: Option<Text>,
    pub(crate) result_ttl: Option<Text>,
    pub(crate) tombstone_ttl: Option<Text>,
    pub(crate) path: Option<Text>,
    pub(crate) cache_bytes: Option<Text>,
    pub(crate) file_threshold: Option<Text>,
    pub(crate) url: Option<Text>,
    pub(crate) url_file: Option<Text>,
    pub(crate) lease: Option<Text>,
    pub(crate) key_prefix: Option<Text>,
    pub(crate) cluster: Option<Spanned<bool>>,
}

/// Which store holds jobs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum StoreKind {
    /// On this machine's disk, surviving restarts and crashes: the default.
    #[default]
    Disk,
    /// In this process's memory, lost when it exits.
    Memory,
    /// Shared by every replica pointed at the same Redis.
    Redis,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    pub(crate) url: Text,
    pub(crate) timeout: Option<Text>,
    pub(crate) job_timeout: Option<Text>,
    pub(crate) connect_timeout: Option<Text>,
    pub(crate) pool_idle_timeout: Option<Text>,
    pub(crate) max_concurrency: Option<Spanned<usize>>,
    pub(crate) max_queue: Option<usize>,
    pub(crate) retries: Option<Spanned<u32>>,
    pub(crate) retry_backoff: Option<Text>,
    pub(crate) retry_backoff_max: Option<Text>,
    pub(crate) rate: Option<Text>,
    pub(crate) burst: Option<Spanned<u32>>,
    pub(crate) adaptive: Option<bool>,
    pub(crate) fair: Option<bool>,
    pub(crate) ca_file: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub(crate) name: Text,
    pub(crate) methods: Option<Spanned<Vec<Text>>>,
    pub(crate) path: Text,
    pub(crate) upstream: Text,
    #[serde(default)]
    pub(crate) mode: Mode,
    pub(crate) max_body: Option<Text>,
    pub(crate) max_result: Option<Text>,
    pub(crate) retry_after_min: Option<Text>,
    pub(crate) retry_after_max: Option<Text>,
    pub(crate) sync_wait: Option<Text>,
    pub(crate) max_wait: Option<Text>,
    pub(crate) redirect_when_done: Option<bool>,
    pub(crate) job_headers: Option<bool>,
    pub(crate) start_timeout: Option<Text>,
    pub(crate) priority: Option<Spanned<u8>>,
    pub(crate) priority_header: Option<bool>,
    pub(crate) max_queued_per_caller: Option<Spanned<usize>>,
    pub(crate) bind_headers: Option<Vec<Text>>,
    #[serde(default)]
    pub(crate) location: LocationStyle,
    pub(crate) callback_hosts: Option<Spanned<Vec<Text>>>,
    pub(crate) callback_url: Option<Text>,
    pub(crate) resend_on_loss: Option<bool>,
    pub(crate) retry_non_idempotent: Option<bool>,
    pub(crate) request_buffering: Option<bool>,
    pub(crate) webhook_secret: Option<Spanned<Secrets>>,
    pub(crate) webhook_secret_file: Option<Text>,
    pub(crate) kafka_topic: Option<Text>,
    pub(crate) webhook_result: Option<Spanned<WebhookResult>>,
    pub(crate) webhook_result_max: Option<Text>,
}

/// What a webhook carries of the job's result.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum WebhookResult {
    /// The job document alone.
    #[default]
    None,
    /// The result itself, or a link to it when it is too large.
    Inline,
}

/// A signing secret, or several: while a secret is rotated, deliveries
/// carry a signature by each.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum Secrets {
    One(String),
    Many(Vec<String>),
}

impl Secrets {
    pub(crate) fn texts(&self) -> &[String] {
        match self {
            Secrets::One(one) => std::slice::from_ref(one),
            Secrets::Many(many) => many,
        }
    }
}

/// What the `Location` of a `202` points at.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LocationStyle {
    /// The JSON status monitor (Microsoft REST API guidelines).
    #[default]
    Status,
    /// `{id}/poll`: `202` until finished, then the result (OData, Azure
    /// Resource Manager, azure-core's Location poller).
    Poll,
}

/// What the gateway does with a request that matches a route.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Mode {
    /// Always `202 Accepted` and a job.
    #[default]
    Async,
    /// `202` only for `Prefer: respond-async`; otherwise a plain reverse proxy.
    Prefer,
    /// Wait `sync_wait` for the backend: its answer if in time, else `202`.
    Auto,
    /// A plain reverse proxy.
    Passthrough,
}

impl Mode {
    /// As the config file spells it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Mode::Async => "async",
            Mode::Prefer => "prefer",
            Mode::Auto => "auto",
            Mode::Passthrough => "passthrough",
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDefault {
    pub(crate) upstream: Option<Text>,
    pub(crate) max_body: Option<Text>,
    pub(crate) request_buffering: Option<bool>,
}
