//! Validation: the raw TOML structs checked, key by key, into the typed
//! config. Every refusal names the file, the line and the key.

use std::path::PathBuf;
use std::time::Duration;

use http::uri::Scheme;
use http::{Method, Uri};
use toml::Spanned;

use super::cx::Cx;
use super::raw::{RawConfig, RawRoute, RawStore, RawUpstream, RawWebhooks, Secrets, WebhookResult};
use super::{
    Config, ConfigError, DiskConfig, Mode, RedisConfig, RequestBody, RouteConfig, StoreConfig,
    StoreKind, UpstreamConfig, WebhookConfig,
};
use crate::callback::signature::Secret;
use crate::callback::target::{AddressPolicy, HostPattern, Target};
use crate::defaults;
use crate::route_table::{Pattern, RouteTable};

impl Cx<'_> {
    pub(super) fn validate(&self, mut raw: RawConfig) -> Result<Config, ConfigError> {
        self.read_secret_files(&mut raw)?;
        #[cfg(feature = "tls")]
        let tls = self.server_tls(&raw.server)?;
        #[cfg(not(feature = "tls"))]
        self.server_tls(&raw.server)?;
        let server = self.server(raw.server)?;
        let admin_token = self.admin_token(&raw.admin)?;
        let advise_over = self.duration(raw.admin.advise_over.as_ref(), defaults::ADVISE_OVER)?;
        let admin = self.admin(raw.admin, server.listen)?;
        let store = self.store(raw.store)?;
        let webhooks = self.webhooks(raw.webhooks)?;
        let kafka = raw.kafka.map(|k| self.kafka(k)).transpose()?;
        let tracing = self.tracing(raw.tracing)?;
        let raw_retries: Vec<Option<Spanned<u32>>> =
            raw.upstreams.values().map(|u| u.retries.clone()).collect();
        let upstreams = raw
            .upstreams
            .into_iter()
            .map(|(name, u)| self.upstream(name, u))
            .collect::<Result<Vec<_>, _>>()?;
        let find_upstream = |name: &Spanned<String>| {
            upstreams
                .iter()
                .position(|u| &u.name == name.get_ref())
                .ok_or_else(|| {
                    self.err(
                        name.span(),
                        format!(
                            "no upstream named `{}` is defined under [upstreams]",
                            name.get_ref()
                        ),
                    )
                })
        };
        let mut routes: Vec<RouteConfig> = Vec::with_capacity(raw.routes.len());
        let mut path_spans = Vec::with_capacity(raw.routes.len());
        for r in raw.routes {
            if routes.iter().any(|other| &other.name == r.name.get_ref()) {
                return Err(self.err(
                    r.name.span(),
                    format!("route name `{}` is used twice", r.name.get_ref()),
                ));
            }
            let upstream = find_upstream(&r.upstream)?;
            path_spans.push(r.path.span());
            if let Some(topic) = &r.kafka_topic {
                self.kafka_topic(topic, r.mode, kafka.is_some())?;
            }
            if let Some(inline) = r
                .webhook_result
                .as_ref()
                .filter(|w| *w.get_ref() == WebhookResult::Inline)
            {
                if server.public_base_url.is_none() {
                    return Err(self.err(
                        inline.span(),
                        "needs [server] public_base_url: a result too large to carry is named by an absolute URL",
                    ));
                }
            }
            routes.push(self.route(r, upstream, &server.jobs_path, &webhooks)?);
        }
        let patterns: Vec<Pattern<'_>> = routes
            .iter()
            .map(|r| Pattern {
                name: &r.name,
                path: &r.path,
                methods: r.methods.as_deref(),
            })
            .collect();
        if store.redis.is_some() {
            if let Some(retries) = raw_retries
                .iter()
                .find_map(|r| r.as_ref().filter(|r| *r.get_ref() > 0))
            {
                return Err(self.err(
                    retries.span(),
                    "jobs are retried with kind = \"disk\" or \"memory\" only; the Redis store does not retry yet",
                ));
            }
        }
        let route_table = RouteTable::build(&patterns)
            .map_err(|r| self.err(path_spans[r.route].clone(), r.to_string()))?;
        let default_upstream = raw
            .default
            .upstream
            .as_ref()
            .map(find_upstream)
            .transpose()?;
        Ok(Config {
            path: self.path.to_owned(),
            server,
            store,
            upstreams,
            routes,
            default_upstream,
            default_body: RequestBody {
                max_bytes: self.size(raw.default.max_body.as_ref(), defaults::MAX_BODY)?,
                buffering: raw.default.request_buffering.unwrap_or(true),
            },
            route_table,
            webhooks,
            kafka,
            admin,
            admin_token,
            advise_over,
            tracing,
            #[cfg(feature = "tls")]
            tls,
        })
    }

    fn webhooks(&self, raw: RawWebhooks) -> Result<WebhookConfig, ConfigError> {
        let secrets = self.secrets(raw.secret.as_ref())?.unwrap_or_default();
        let allowed = self.networks(raw.allow_networks.as_deref())?;
        let retry_schedule = match &raw.retry_schedule {
            Some(waits) => waits
                .iter()
                .map(|w| self.duration(Some(w), Duration::ZERO))
                .collect::<Result<Vec<_>, _>>()?,
            None => defaults::WEBHOOK_RETRY_SCHEDULE.to_vec(),
        };
        #[cfg(feature = "tls")]
        let extra_roots = self.ca_file(raw.ca_file.as_ref())?;
        #[cfg(not(feature = "tls"))]
        self.ca_file(raw.ca_file.as_ref())?;
        Ok(WebhookConfig {
            #[cfg(feature = "tls")]
            extra_roots,
            secrets,
            policy: AddressPolicy { allowed },
            timeout: self.duration(raw.timeout.as_ref(), defaults::WEBHOOK_TIMEOUT)?,
            retry_schedule,
        })
    }

    fn store(&self, raw: RawStore) -> Result<StoreConfig, ConfigError> {
        let kind = raw.kind.as_ref().map_or(StoreKind::Disk, |k| *k.get_ref());
        let disk_keys = [&raw.path, &raw.cache_bytes, &raw.file_threshold];
        if kind != StoreKind::Disk {
            if let Some(key) = disk_keys.into_iter().flatten().next() {
                return Err(self.err(key.span(), "is for kind = \"disk\""));
            }
        }
        let disk = (kind == StoreKind::Disk)
            .then(|| self.disk(&raw))
            .transpose()?;
        let redis = match (kind, &raw.url) {
            (StoreKind::Memory | StoreKind::Disk, None) => None,
            (StoreKind::Memory | StoreKind::Disk, Some(url)) => {
                return Err(self.err(url.span(), "is for kind = \"redis\""))
            }
            (StoreKind::Redis, None) => {
                let span = raw.kind.as_ref().map_or(0..0, Spanned::span);
                return Err(self.err(
                    span,
                    "kind = \"redis\" needs `url`, e.g. url = \"redis://127.0.0.1:6379/0\"",
                ));
            }
            (StoreKind::Redis, Some(url)) => Some(self.redis(&raw, url)?),
        };
        if let (None, Some(cluster)) = (&redis, &raw.cluster) {
            return Err(self.err(cluster.span(), "is for kind = \"redis\""));
        }
        Ok(StoreConfig {
            disk,
            max_bytes: self.size(raw.max_bytes.as_ref(), defaults::STORE_MAX_BYTES)?,
            result_ttl: self.duration(raw.result_ttl.as_ref(), defaults::RESULT_TTL)?,
            tombstone_ttl: self.duration(raw.tombstone_ttl.as_ref(), defaults::TOMBSTONE_TTL)?,
            redis,
        })
    }

    fn redis(&self, raw: &RawStore, url: &Spanned<String>) -> Result<RedisConfig, ConfigError> {
        let cluster = raw.cluster.as_ref().is_some_and(|c| *c.get_ref());
        // Parsed as the client will, so a bad URL is a config error here
        // rather than a failure at start-up.
        let seeds: Vec<&str> = url.get_ref().split(',').map(str::trim).collect();
        if seeds.len() > 1 && !cluster {
            return Err(self.err(
                url.span(),
                "lists several nodes: a Redis Cluster's seeds need cluster = true",
            ));
        }
        for seed in &seeds {
            if let Err(e) = redis::IntoConnectionInfo::into_connection_info(*seed) {
                let like = if cluster {
                    "redis://10.0.0.1:6379,redis://10.0.0.2:6379"
                } else {
                    "redis://127.0.0.1:6379/0"
                };
                return Err(self.err(
                    url.span(),
                    format!("`{seed}` is not a Redis URL like {like}: {e}"),
                ));
            }
        }
        let key_prefix = match &raw.key_prefix {
            None => defaults::REDIS_KEY_PREFIX.to_owned(),
            Some(p) => {
                let ok = !p.get_ref().is_empty()
                    && p.get_ref()
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
                if !ok {
                    return Err(self.err(p.span(), "must be letters, digits, `-`, `_`, `.` or `:`"));
                }
                p.get_ref().clone()
            }
        };
        let lease = self.duration(raw.lease.as_ref(), defaults::LEASE)?;
        if let Some(s) = &raw.lease {
            // Renewed every third of it, each renewal a Redis round trip.
            if lease < Duration::from_secs(1) {
                return Err(self.err(s.span(), "must be at least 1s"));
            }
        }
        Ok(RedisConfig {
            seeds: seeds.into_iter().map(str::to_owned).collect(),
            cluster,
            lease,
            key_prefix,
        })
    }

    fn disk(&self, raw: &RawStore) -> Result<DiskConfig, ConfigError> {
        let path = raw.path.as_ref().map_or_else(
            || PathBuf::from(defaults::STORE_PATH),
            |p| PathBuf::from(p.get_ref()),
        );
        if let Err(why) = super::directory::usable(&path) {
            let span = raw
                .path
                .as_ref()
                .map(Spanned::span)
                .or_else(|| raw.kind.as_ref().map(Spanned::span))
                .unwrap_or(0..0);
            return Err(self.err(span, format!("`{}` {why}", path.display())));
        }
        Ok(DiskConfig {
            path,
            cache_bytes: self.size(raw.cache_bytes.as_ref(), defaults::CACHE_BYTES)?,
            file_threshold: self.size(raw.file_threshold.as_ref(), defaults::FILE_THRESHOLD)?,
        })
    }

    fn upstream(&self, name: String, raw: RawUpstream) -> Result<UpstreamConfig, ConfigError> {
        let url = &raw.url;
        let bad = |why: &str| self.err(url.span(), format!("`{}` {why}", url.get_ref()));
        let uri: Uri = url.get_ref().parse().map_err(|_| bad("is not a URL"))?;
        let scheme = match uri.scheme_str() {
            Some("http") => Scheme::HTTP,
            #[cfg(feature = "tls")]
            Some("https") => Scheme::HTTPS,
            #[cfg(not(feature = "tls"))]
            Some("https") => return Err(bad("uses https: this build has no TLS (feature `tls`)")),
            _ => return Err(bad("must start with http:// or https://")),
        };
        #[cfg(feature = "tls")]
        let extra_roots = self.ca_file(raw.ca_file.as_ref())?;
        #[cfg(not(feature = "tls"))]
        self.ca_file(raw.ca_file.as_ref())?;
        let authority = uri.authority().cloned().ok_or_else(|| bad("has no host"))?;
        if uri.query().is_some() {
            return Err(bad("must not have a query"));
        }
        let retry_backoff = self.duration(raw.retry_backoff.as_ref(), defaults::RETRY_BACKOFF)?;
        let retry_backoff_max =
            self.duration(raw.retry_backoff_max.as_ref(), defaults::RETRY_BACKOFF_MAX)?;
        if let Some(s) = raw
            .retry_backoff_max
            .as_ref()
            .or(raw.retry_backoff.as_ref())
        {
            if retry_backoff_max < retry_backoff {
                return Err(self.err(
                    s.span(),
                    "retry_backoff_max must not be below retry_backoff",
                ));
            }
        }
        let path_prefix = uri.path().trim_end_matches('/').to_owned();
        Ok(UpstreamConfig {
            #[cfg(feature = "tls")]
            extra_roots,
            name,
            scheme,
            authority,
            path_prefix,
            timeout: self.duration(raw.timeout.as_ref(), defaults::UPSTREAM_TIMEOUT)?,
            job_timeout: self.duration(raw.job_timeout.as_ref(), defaults::JOB_TIMEOUT)?,
            connect_timeout: self
                .duration(raw.connect_timeout.as_ref(), defaults::CONNECT_TIMEOUT)?,
            pool_idle_timeout: self
                .duration(raw.pool_idle_timeout.as_ref(), defaults::POOL_IDLE_TIMEOUT)?,
            max_concurrency: self.positive(raw.max_concurrency, defaults::MAX_CONCURRENCY)?,
            max_queue: raw.max_queue.unwrap_or(defaults::MAX_QUEUE),
            retries: raw.retries.map_or(0, Spanned::into_inner),
            retry_backoff,
            retry_backoff_max,
            rate: self.rate(raw.rate.as_ref(), raw.burst)?,
            adaptive: raw.adaptive.unwrap_or(false),
            fair: raw.fair.unwrap_or(true),
        })
    }

    fn route(
        &self,
        raw: RawRoute,
        upstream: usize,
        jobs_path: &str,
        webhooks: &WebhookConfig,
    ) -> Result<RouteConfig, ConfigError> {
        let name = raw.name.get_ref();
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(self.err(raw.name.span(), "must be letters, digits, `-`, `_` or `.`"));
        }
        let path = raw.path.get_ref();
        if !path.starts_with('/') {
            return Err(self.err(raw.path.span(), "must start with /"));
        }
        if path == jobs_path || path.starts_with(&format!("{jobs_path}/")) {
            return Err(self.err(
                raw.path.span(),
                format!("is under the jobs path {jobs_path}, which the gateway serves itself"),
            ));
        }
        let (callback_hosts, callback_url) = self.callbacks(&raw, webhooks)?;
        if let Some(ms) = raw.methods.as_ref().filter(|ms| ms.get_ref().is_empty()) {
            return Err(self.err(
                ms.span(),
                "lists no method; omit the key to match every method",
            ));
        }
        let methods = raw
            .methods
            .map(|ms| {
                ms.get_ref()
                    .iter()
                    .map(|m| {
                        let s = m.get_ref();
                        let ok = !s.is_empty() && s.bytes().all(|b| b.is_ascii_uppercase());
                        ok.then(|| Method::from_bytes(s.as_bytes()).ok())
                            .flatten()
                            .ok_or_else(|| {
                                self.err(
                                    m.span(),
                                    format!("`{s}` is not an HTTP method in upper case"),
                                )
                            })
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        let retry_after_min =
            self.duration(raw.retry_after_min.as_ref(), defaults::RETRY_AFTER_MIN)?;
        let retry_after_max =
            self.duration(raw.retry_after_max.as_ref(), defaults::RETRY_AFTER_MAX)?;
        if let Some(s) = &raw.retry_after_min {
            if retry_after_min < Duration::from_secs(1) {
                return Err(self.err(
                    s.span(),
                    "must be at least 1s: Retry-After counts whole seconds",
                ));
            }
        }
        if let Some(s) = raw
            .retry_after_max
            .as_ref()
            .or(raw.retry_after_min.as_ref())
        {
            if retry_after_max < retry_after_min {
                return Err(self.err(
                    s.span(),
                    "retry_after_max must not be below retry_after_min",
                ));
            }
        }
        let sync_wait = self.duration(raw.sync_wait.as_ref(), defaults::SYNC_WAIT)?;
        let max_wait = self.duration(raw.max_wait.as_ref(), defaults::MAX_WAIT.max(sync_wait))?;
        if let Some(s) = raw.max_wait.as_ref().or(raw.sync_wait.as_ref()) {
            if max_wait < sync_wait {
                return Err(self.err(s.span(), "max_wait must not be below sync_wait"));
            }
        }
        let bind_headers = match &raw.bind_headers {
            None => vec![http::header::AUTHORIZATION],
            Some(names) => names
                .iter()
                .map(|n| {
                    http::HeaderName::from_bytes(n.get_ref().as_bytes()).map_err(|_| {
                        self.err(n.span(), format!("`{}` is not a header name", n.get_ref()))
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        Ok(RouteConfig {
            callback_hosts,
            callback_url,
            resend_on_loss: raw.resend_on_loss,
            retry_non_idempotent: raw.retry_non_idempotent.unwrap_or(false),
            request_buffering: raw.request_buffering.unwrap_or(true),
            webhook_secrets: self.secrets(raw.webhook_secret.as_ref())?,
            kafka_topic: raw.kafka_topic.map(Spanned::into_inner),
            webhook_result: raw
                .webhook_result
                .map_or(WebhookResult::None, Spanned::into_inner),
            webhook_result_max: self.size(
                raw.webhook_result_max.as_ref(),
                defaults::WEBHOOK_RESULT_MAX,
            )?,
            location: raw.location,
            bind_headers,
            sync_wait,
            max_wait,
            redirect_when_done: raw.redirect_when_done.unwrap_or(false),
            job_headers: raw.job_headers.unwrap_or(true),
            priority: match raw.priority {
                None => crate::priority::DEFAULT_URGENCY,
                Some(p) if *p.get_ref() > crate::priority::LEAST_URGENT => {
                    return Err(self.err(p.span(), "must be an urgency from 0 (most urgent) to 7"))
                }
                Some(p) => p.into_inner(),
            },
            priority_header: raw.priority_header.unwrap_or(true),
            max_queued_per_caller: raw
                .max_queued_per_caller
                .map(|n| self.positive(Some(n), 1))
                .transpose()?,
            start_timeout: raw
                .start_timeout
                .as_ref()
                .map(|t| self.duration(Some(t), Duration::ZERO))
                .transpose()?,
            name: name.clone(),
            methods,
            path: path.clone(),
            upstream,
            mode: raw.mode,
            max_body: self.size(raw.max_body.as_ref(), defaults::MAX_BODY)?,
            max_result: self.size(raw.max_result.as_ref(), defaults::MAX_RESULT)?,
            retry_after_min,
            retry_after_max,
        })
    }

    /// One signing secret or a list of them (rotation), each a Standard
    /// Webhooks `whsec_` secret; a list is not empty.
    fn secrets(
        &self,
        value: Option<&Spanned<Secrets>>,
    ) -> Result<Option<Vec<Secret>>, ConfigError> {
        let Some(value) = value else { return Ok(None) };
        let texts = value.get_ref().texts();
        if texts.is_empty() {
            return Err(self.err(value.span(), "needs at least one secret"));
        }
        texts
            .iter()
            .map(|t| Secret::parse(t).map_err(|e| self.err(value.span(), e.to_string())))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// A `ca_file`'s certificates: roots trusted besides Mozilla's.
    #[cfg(feature = "tls")]
    fn ca_file(
        &self,
        file: Option<&Spanned<String>>,
    ) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, ConfigError> {
        Ok(file
            .map(|f| self.certificates(f))
            .transpose()?
            .unwrap_or_default())
    }

    /// Without TLS in the build, a `ca_file` is refused.
    #[cfg(not(feature = "tls"))]
    fn ca_file(&self, file: Option<&Spanned<String>>) -> Result<(), ConfigError> {
        match file {
            Some(f) => Err(self.err(f.span(), "this build has no TLS (feature `tls`)")),
            None => Ok(()),
        }
    }

    /// The certificates of a PEM file, each one checked to be usable as a
    /// trust anchor.
    #[cfg(feature = "tls")]
    fn certificates(
        &self,
        file: &Spanned<String>,
    ) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, ConfigError> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::CertificateDer;
        let bad = |why: String| self.err(file.span(), format!("`{}`: {why}", file.get_ref()));
        let certs = CertificateDer::pem_file_iter(file.get_ref())
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| bad(e.to_string()))?;
        if certs.is_empty() {
            return Err(bad("holds no PEM certificate".to_owned()));
        }
        let mut roots = rustls::RootCertStore::empty();
        for cert in &certs {
            roots
                .add(cert.clone())
                .map_err(|e| bad(format!("not a usable CA certificate: {e}")))?;
        }
        Ok(certs)
    }

    fn callbacks(
        &self,
        raw: &RawRoute,
        webhooks: &WebhookConfig,
    ) -> Result<(Option<Vec<HostPattern>>, Option<Target>), ConfigError> {
        let hosts = raw
            .callback_hosts
            .as_ref()
            .map(|hosts| {
                hosts
                    .get_ref()
                    .iter()
                    .map(|h| {
                        HostPattern::parse(h.get_ref()).ok_or_else(|| {
                            self.err(
                                h.span(),
                                format!(
                                    "`{}` is not a host name like hooks.example.com or *.example.com",
                                    h.get_ref()
                                ),
                            )
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        let url = raw
            .callback_url
            .as_ref()
            .map(|u| {
                Target::parse(u.get_ref(), None, &webhooks.policy)
                    .map_err(|e| self.err(u.span(), e.to_string()))
            })
            .transpose()?;
        let span = match (&raw.callback_hosts, &raw.callback_url) {
            (Some(h), _) => h.span(),
            (None, Some(u)) => u.span(),
            (None, None) => return Ok((None, None)),
        };
        if webhooks.secrets.is_empty() && raw.webhook_secret.is_none() {
            return Err(self.err(
                span,
                "webhooks are signed: set `secret` under [webhooks], or the route's `webhook_secret` (a Standard Webhooks whsec_ secret)",
            ));
        }
        if raw.mode == Mode::Passthrough {
            return Err(self.err(span, "a passthrough route makes no jobs to call back about"));
        }
        Ok((hosts, url))
    }
}

#[cfg(test)]
mod example;
mod kafka;
mod listen;
mod secrets;
#[cfg(test)]
mod tests;
mod tracing;
