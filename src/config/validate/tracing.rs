//! The `[tracing]` section: where OpenTelemetry spans go.

use http::Uri;

use super::super::cx::Cx;
use super::super::raw::RawTracing;
use super::super::{ConfigError, TracingConfig};

impl Cx<'_> {
    pub(super) fn tracing(&self, raw: RawTracing) -> Result<TracingConfig, ConfigError> {
        let otlp_endpoint = match raw.otlp_endpoint {
            Some(url) if !cfg!(feature = "otel") => {
                return Err(self.err(
                    url.span(),
                    "this build has no OpenTelemetry export (the `otel` feature)",
                ))
            }
            Some(url) => {
                let base = url.get_ref().trim_end_matches('/');
                let uri: Uri = base
                    .parse()
                    .map_err(|_| self.err(url.span(), "not a URL"))?;
                if !matches!(uri.scheme_str(), Some("http")) || uri.host().is_none() {
                    return Err(self.err(
                        url.span(),
                        "an http:// URL of the collector, e.g. http://127.0.0.1:4318 (spans go to its /v1/traces)",
                    ));
                }
                Some(base.to_owned())
            }
            None => None,
        };
        let sample_ratio = match raw.sample_ratio {
            Some(r) if !(0.0..=1.0).contains(r.get_ref()) => {
                return Err(self.err(r.span(), "a share from 0.0 to 1.0"))
            }
            Some(r) => *r.get_ref(),
            None => 1.0,
        };
        Ok(TracingConfig {
            otlp_endpoint,
            service_name: match raw.service_name {
                Some(name) if name.get_ref().trim().is_empty() => {
                    return Err(self.err(name.span(), "a service name, not empty"))
                }
                Some(name) => name.into_inner(),
                None => "asyncgate".to_owned(),
            },
            sample_ratio,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{parse, refused};

    #[test]
    fn tracing_keys() {
        let none = parse("").unwrap();
        assert_eq!(none.tracing().otlp_endpoint, None);
        assert_eq!(none.tracing().service_name, "asyncgate");
        for bad in [
            "\"127.0.0.1:4318\"",
            "\"https://collector:4318\"",
            "\"http://\"",
        ] {
            refused(
                &format!("[tracing]\notlp_endpoint = {bad}\n"),
                "2: tracing.otlp_endpoint",
                if cfg!(feature = "otel") {
                    "URL"
                } else {
                    "otel"
                },
            );
        }
        refused(
            "[tracing]\nservice_name = \" \"\n",
            "2: tracing.service_name",
            "not empty",
        );
        for bad in ["1.5", "-0.1", "nan"] {
            refused(
                &format!("[tracing]\nsample_ratio = {bad}\n"),
                "2: tracing.sample_ratio",
                "0.0 to 1.0",
            );
        }
        if cfg!(feature = "otel") {
            let set = parse(
                "[tracing]\notlp_endpoint = \"http://127.0.0.1:4318/\"\nsample_ratio = 0.25\n",
            )
            .unwrap();
            let tracing = set.tracing();
            assert_eq!(
                tracing.otlp_endpoint.as_deref(),
                Some("http://127.0.0.1:4318")
            );
            assert_eq!(tracing.sample_ratio, 0.25);
        }
    }
}
