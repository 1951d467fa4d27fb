//! The keys of what listens: the public server and the admin listener.

use std::net::SocketAddr;
#[cfg(feature = "tls")]
use std::path::Path;

use http::Uri;
use toml::Spanned;

use super::super::cx::Cx;
use super::super::raw::{AdminAddress, RawAdmin, RawServer};
use super::super::{AdminToken, ConfigError, ServerConfig};
use crate::callback::signature::Secret;
use crate::defaults;

impl Cx<'_> {
    pub(super) fn server(&self, raw: RawServer) -> Result<ServerConfig, ConfigError> {
        let listen = match raw.listen {
            None => defaults::LISTEN
                .parse()
                .expect("the default listen address parses"),
            Some(s) => self.address(&s)?,
        };
        let jobs_path = match raw.jobs_path {
            None => defaults::JOBS_PATH.to_owned(),
            Some(s) => {
                let p = s.get_ref();
                let ok = p.len() > 1
                    && p.starts_with('/')
                    && !p.ends_with('/')
                    && p.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"/-._~".contains(&b));
                if !ok {
                    return Err(self.err(
                        s.span(),
                        "must be a plain path like /_jobs: starting with /, not ending with one, no patterns",
                    ));
                }
                p.clone()
            }
        };
        let public_base_url = raw.public_base_url.map(|s| self.base_url(&s)).transpose()?;
        let max_header_bytes =
            self.size(raw.max_header_bytes.as_ref(), defaults::MAX_HEADER_BYTES)?;
        if let Some(s) = &raw.max_header_bytes {
            // hyper refuses read buffers below 8 KiB.
            if max_header_bytes < 8192 {
                return Err(self.err(s.span(), "must be at least 8KiB"));
            }
        }
        Ok(ServerConfig {
            listen,
            jobs_path,
            public_base_url,
            max_connections: self.positive(raw.max_connections, defaults::MAX_CONNECTIONS)?,
            workers: self.positive(raw.workers, defaults::workers())?,
            header_read_timeout: self.duration(
                raw.header_read_timeout.as_ref(),
                defaults::HEADER_READ_TIMEOUT,
            )?,
            keepalive_timeout: self
                .duration(raw.keepalive_timeout.as_ref(), defaults::KEEPALIVE_TIMEOUT)?,
            tunnel_idle_timeout: self.duration(
                raw.tunnel_idle_timeout.as_ref(),
                defaults::TUNNEL_IDLE_TIMEOUT,
            )?,
            body_idle_timeout: self
                .duration(raw.body_idle_timeout.as_ref(), defaults::BODY_IDLE_TIMEOUT)?,
            max_header_bytes: usize::try_from(max_header_bytes).unwrap_or(usize::MAX),
            max_headers: self.positive(raw.max_headers, defaults::MAX_HEADERS)?,
            drain_timeout: self.duration(raw.drain_timeout.as_ref(), defaults::DRAIN_TIMEOUT)?,
            shutdown_delay: self
                .duration_or_zero(raw.shutdown_delay.as_ref(), defaults::SHUTDOWN_DELAY)?,
            trusted_proxies: self.networks(raw.trusted_proxies.as_deref())?,
            events_link_secret: raw
                .events_link_secret
                .as_ref()
                .map(|s| Secret::parse(s.get_ref()).map_err(|e| self.err(s.span(), e.to_string())))
                .transpose()?,
            events_link_ttl: self
                .duration(raw.events_link_ttl.as_ref(), defaults::EVENTS_LINK_TTL)?,
            cors_origins: raw
                .cors_origins
                .unwrap_or_default()
                .into_iter()
                .map(|o| {
                    if crate::cors::Cors::valid_origin(o.get_ref()) {
                        Ok(o.into_inner())
                    } else {
                        Err(self.err(
                            o.span(),
                            format!(
                                "`{}` is not an origin like https://app.example.com, or *",
                                o.get_ref()
                            ),
                        ))
                    }
                })
                .collect::<Result<_, _>>()?,
            body_temp_path: match raw.body_temp_path {
                None => std::env::temp_dir(),
                Some(s) => {
                    let path = std::path::PathBuf::from(s.get_ref());
                    if !path.is_dir() {
                        return Err(
                            self.err(s.span(), format!("`{}` is not a directory", path.display()))
                        );
                    }
                    path
                }
            },
        })
    }

    /// `tls_cert` and `tls_key`, both or neither, read and checked to make a
    /// certificate.
    #[cfg(feature = "tls")]
    pub(super) fn server_tls(
        &self,
        raw: &RawServer,
    ) -> Result<Option<std::sync::Arc<rustls::sign::CertifiedKey>>, ConfigError> {
        let (cert, key) = match (&raw.tls_cert, &raw.tls_key) {
            (None, None) => return Ok(None),
            (Some(c), None) => return Err(self.err(c.span(), "needs tls_key beside it")),
            (None, Some(k)) => return Err(self.err(k.span(), "needs tls_cert beside it")),
            (Some(c), Some(k)) => (c, k),
        };
        let loaded = crate::tls::load(Path::new(cert.get_ref()), Path::new(key.get_ref()))
            .map_err(|bad| {
                let span = if bad.in_key { key.span() } else { cert.span() };
                self.err(span, bad.why)
            })?;
        Ok(Some(loaded))
    }

    /// Without TLS in the build, `tls_cert` is refused.
    #[cfg(not(feature = "tls"))]
    pub(super) fn server_tls(&self, raw: &RawServer) -> Result<(), ConfigError> {
        match raw.tls_cert.as_ref().or(raw.tls_key.as_ref()) {
            Some(s) => Err(self.err(s.span(), "this build has no TLS (feature `tls`)")),
            None => Ok(()),
        }
    }

    fn base_url(&self, s: &Spanned<String>) -> Result<String, ConfigError> {
        let bad = || {
            self.err(
                s.span(),
                "must be an absolute http(s) URL like https://api.example.com, with no query",
            )
        };
        let uri: Uri = s.get_ref().parse().map_err(|_| bad())?;
        let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
        if !scheme_ok || uri.authority().is_none() || uri.query().is_some() {
            return Err(bad());
        }
        Ok(s.get_ref().trim_end_matches('/').to_owned())
    }

    /// `[admin] token` (from `token_file` if that is given).
    pub(super) fn admin_token(&self, raw: &RawAdmin) -> Result<Option<AdminToken>, ConfigError> {
        let Some(token) = &raw.token else {
            return Ok(None);
        };
        if token.get_ref().len() < 16 {
            return Err(self.err(
                token.span(),
                "must be at least 16 characters: it guards the admin listener",
            ));
        }
        Ok(Some(AdminToken::new(token.get_ref())))
    }

    pub(super) fn admin(
        &self,
        raw: RawAdmin,
        public: SocketAddr,
    ) -> Result<Option<SocketAddr>, ConfigError> {
        let listen = raw.listen.clone();
        let Some(addr) = self.admin_address(AdminAddress {
            listen: raw.listen,
            enabled: raw.enabled,
        })?
        else {
            return Ok(None);
        };
        let Some(s) = listen else {
            return Ok(Some(addr));
        };
        let overlaps =
            addr.ip() == public.ip() || addr.ip().is_unspecified() || public.ip().is_unspecified();
        if addr.port() != 0 && addr.port() == public.port() && overlaps {
            return Err(self.err(
                s.span(),
                "must not be the public listen address: the admin listener never shares the public port",
            ));
        }
        Ok(Some(addr))
    }

    /// The admin listener's address, `None` when it is turned off.
    pub(in crate::config) fn admin_address(
        &self,
        raw: AdminAddress,
    ) -> Result<Option<SocketAddr>, ConfigError> {
        if raw.enabled == Some(false) {
            return Ok(None);
        }
        match raw.listen {
            Some(s) => self.address(&s).map(Some),
            None => Ok(Some(
                defaults::ADMIN_LISTEN
                    .parse()
                    .expect("the default admin address parses"),
            )),
        }
    }

    fn address(&self, s: &Spanned<String>) -> Result<SocketAddr, ConfigError> {
        s.get_ref().parse().map_err(|_| {
            self.err(
                s.span(),
                format!(
                    "`{}` is not an IP address and port like 127.0.0.1:8080",
                    s.get_ref()
                ),
            )
        })
    }
}
