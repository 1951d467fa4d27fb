//! The config file as written: serde structs that only mirror TOML.
//!
//! Values that need checking beyond their TOML type keep their span, so a
//! validation error can name the line they came from.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

type Text = Spanned<String>;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub store: RawStore,
    #[serde(default)]
    pub upstreams: BTreeMap<String, RawUpstream>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    #[serde(default)]
    pub default: RawDefault,
    #[serde(default)]
    pub webhooks: RawWebhooks,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWebhooks {
    pub secret: Option<Text>,
    pub timeout: Option<Text>,
    pub max_attempts: Option<Spanned<usize>>,
    pub backoff_initial: Option<Text>,
    pub backoff_max: Option<Text>,
    pub allow_networks: Option<Vec<Text>>,
    pub ca_file: Option<Text>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub listen: Option<Text>,
    pub jobs_path: Option<Text>,
    pub public_base_url: Option<Text>,
    pub max_connections: Option<Spanned<usize>>,
    pub workers: Option<Spanned<usize>>,
    pub header_read_timeout: Option<Text>,
    pub body_idle_timeout: Option<Text>,
    pub max_header_bytes: Option<Text>,
    pub max_headers: Option<Spanned<usize>>,
    pub drain_timeout: Option<Text>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    pub kind: Option<Spanned<StoreKind>>,
    pub max_bytes: Option<Text>,
    pub result_ttl: Option<Text>,
    pub tombstone_ttl: Option<Text>,
    pub url: Option<Text>,
    pub lease: Option<Text>,
    pub key_prefix: Option<Text>,
}

/// Which store holds jobs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum StoreKind {
    /// In this process: the embedded default.
    #[default]
    Memory,
    /// Shared by every replica pointed at the same Redis.
    Redis,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    pub url: Text,
    pub timeout: Option<Text>,
    pub job_timeout: Option<Text>,
    pub connect_timeout: Option<Text>,
    pub pool_idle_timeout: Option<Text>,
    pub max_concurrency: Option<Spanned<usize>>,
    pub max_queue: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub name: Text,
    pub methods: Option<Spanned<Vec<Text>>>,
    pub path: Text,
    pub upstream: Text,
    #[serde(default)]
    pub mode: Mode,
    pub max_body: Option<Text>,
    pub max_result: Option<Text>,
    pub retry_after_min: Option<Text>,
    pub retry_after_max: Option<Text>,
    pub sync_wait: Option<Text>,
    pub max_wait: Option<Text>,
    pub redirect_when_done: Option<bool>,
    pub bind_headers: Option<Vec<Text>>,
    #[serde(default)]
    pub location: LocationStyle,
    pub callback_hosts: Option<Spanned<Vec<Text>>>,
    pub callback_url: Option<Text>,
    pub resend_on_loss: Option<bool>,
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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDefault {
    pub upstream: Option<Text>,
}
