//! What validation needs to point at the source, and how it reads the
//! values every section has: durations, sizes, counts.

use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use super::{ConfigError, Rate};

/// What validation needs to point at the source.
pub(super) struct Cx<'a> {
    pub(super) path: &'a Path,
    pub(super) src: &'a str,
}

impl Cx<'_> {
    pub(super) fn err(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        ConfigError::at(self.path, self.src, span, message)
    }

    pub(super) fn duration(
        &self,
        value: Option<&Spanned<String>>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        let d = self.duration_or_zero(value, default)?;
        match value {
            Some(s) if d.is_zero() => Err(self.err(s.span(), "must be longer than zero")),
            _ => Ok(d),
        }
    }

    /// A duration that may be `0s`: a wait that can be left out.
    pub(super) fn duration_or_zero(
        &self,
        value: Option<&Spanned<String>>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        let Some(s) = value else { return Ok(default) };
        humantime::parse_duration(s.get_ref()).map_err(|e| {
            self.err(
                s.span(),
                format!("`{}` is not a duration like 30s or 15m: {e}", s.get_ref()),
            )
        })
    }

    pub(super) fn size(
        &self,
        value: Option<&Spanned<String>>,
        default: u64,
    ) -> Result<u64, ConfigError> {
        let Some(s) = value else { return Ok(default) };
        let size: bytesize::ByteSize = s.get_ref().parse().map_err(|e| {
            self.err(
                s.span(),
                format!("`{}` is not a size like 512KiB or 10MiB: {e}", s.get_ref()),
            )
        })?;
        if size.as_u64() == 0 {
            return Err(self.err(s.span(), "must be larger than zero"));
        }
        Ok(size.as_u64())
    }

    pub(super) fn positive(
        &self,
        value: Option<Spanned<usize>>,
        default: usize,
    ) -> Result<usize, ConfigError> {
        match value {
            None => Ok(default),
            Some(v) if *v.get_ref() == 0 => Err(self.err(v.span(), "must be at least 1")),
            Some(v) => Ok(v.into_inner()),
        }
    }

    /// A rate like `20/s`, `100/m` or `500/h`, and its burst: by default
    /// one second's worth, at least 1.
    pub(super) fn rate(
        &self,
        value: Option<&Spanned<String>>,
        burst: Option<Spanned<u32>>,
    ) -> Result<Option<Rate>, ConfigError> {
        let Some(text) = value else {
            return match burst {
                Some(b) => Err(self.err(b.span(), "needs a `rate`")),
                None => Ok(None),
            };
        };
        let parsed = text.get_ref().split_once('/').and_then(|(count, unit)| {
            let per = match unit.trim() {
                "s" => Duration::from_secs(1),
                "m" => Duration::from_secs(60),
                "h" => Duration::from_secs(3600),
                _ => return None,
            };
            let count = count.trim().parse::<u32>().ok().filter(|&n| n > 0)?;
            Some((count, per))
        });
        let Some((count, per)) = parsed else {
            return Err(self.err(
                text.span(),
                format!(
                    "`{}` is not a rate like 20/s, 100/m or 500/h (at least 1)",
                    text.get_ref()
                ),
            ));
        };
        let per_second = u64::from(count) / per.as_secs();
        let burst = match burst {
            Some(b) if *b.get_ref() == 0 => return Err(self.err(b.span(), "must be at least 1")),
            Some(b) => b.into_inner(),
            None => u32::try_from(per_second.max(1)).unwrap_or(u32::MAX),
        };
        Ok(Some(Rate { count, per, burst }))
    }

    /// Networks (`10.0.0.0/8`, `fd00::/8`) or single addresses.
    pub(super) fn networks(
        &self,
        values: Option<&[Spanned<String>]>,
    ) -> Result<Vec<ipnet::IpNet>, ConfigError> {
        values
            .unwrap_or_default()
            .iter()
            .map(|n| {
                let text = n.get_ref();
                text.parse::<ipnet::IpNet>()
                    .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        self.err(
                            n.span(),
                            format!("`{text}` is not a network like 10.0.0.0/8 or fd00::/8, or an address"),
                        )
                    })
            })
            .collect()
    }
}
