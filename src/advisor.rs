//! The latency advisor: which proxied paths should be made async. Every
//! request no route names, proxied to `[default]`, is counted under its
//! path's template (ids and numbers become `{id}`): its time to the
//! response head, and whether it timed out, got a `502`/`504`, or lost its
//! client before the answer. `GET /advisor` names the paths
//! whose p99 is over `[admin] advise_over`, or that lose clients, each
//! with a `[[routes]]` block that makes it `mode = "auto"`.
//!
//! Counting takes a read lock and a few relaxed atomic adds; a path's
//! first request takes the write lock once. At most [`MAX_PATHS`] templates
//! are kept: a flood of odd paths cannot grow it without bound.

use std::collections::HashMap;
use std::hash::Hasher;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use http::{Method, StatusCode};
use serde::Serialize;

use crate::jobs::id::{IdHash, IdHasher};
use crate::metrics::Histogram;
use crate::upstream::UpstreamError;

/// Templates kept at most; requests on others are counted as untracked.
const MAX_PATHS: usize = 1000;

/// Templates by the hash of method and template, which is its own hash
/// in the map. The hash is FxHash's (see [`IdHasher`]), not SipHash: it
/// runs on every proxied request, and paths made to collide could only
/// merge two paths' counts.
#[derive(Default)]
pub(crate) struct Advisor {
    paths: RwLock<HashMap<u64, Arc<PathStats>, IdHash>>,
    untracked: AtomicU64,
}

/// What one template has seen.
struct PathStats {
    method: Method,
    template: String,
    upstream: String,
    head: Histogram,
    timeouts: AtomicU64,
    bad_gateway: AtomicU64,
    client_aborts: AtomicU64,
}

/// One proxied request on its way: dropped before [`Watch::ended`], its
/// client hung up.
pub(crate) struct Watch {
    stats: Option<Arc<PathStats>>,
}

/// How a proxied request ended, as far as the advisor cares.
pub(crate) enum Ended {
    Answered(StatusCode),
    TimedOut,
    Failed,
}

impl Ended {
    /// How `forwarded` ended, as its client saw it.
    pub(crate) fn of<B>(forwarded: &Result<http::Response<B>, UpstreamError>) -> Ended {
        match forwarded {
            Ok(response) => Ended::Answered(response.status()),
            Err(UpstreamError::Timeout(_)) => Ended::TimedOut,
            Err(UpstreamError::ClientBody(_)) => Ended::Failed,
            // The gateway answers these 502.
            Err(_) => Ended::Answered(StatusCode::BAD_GATEWAY),
        }
    }
}

/// A path worth making async.
#[derive(Debug, Serialize)]
pub(crate) struct Suggestion {
    pub(crate) method: String,
    pub(crate) path: String,
    /// Requests seen: answered, failed, or abandoned by their client.
    pub(crate) count: u64,
    /// Seconds, each the upper bound of its histogram bucket, over the
    /// requests that got an answer or failed (0 when none did).
    pub(crate) p50: f64,
    pub(crate) p99: f64,
    pub(crate) timeouts: u64,
    pub(crate) bad_gateway: u64,
    pub(crate) client_aborts: u64,
    /// Why it is suggested, in words.
    pub(crate) seen: String,
    /// A `[[routes]]` block that `asyncgate check` accepts.
    pub(crate) config: String,
}

impl Advisor {
    /// Starts counting a request on `path` to `upstream`.
    pub(crate) fn watch(&self, method: &Method, path: &str, upstream: &str) -> Watch {
        let key = key(method, path);
        let known = self
            .paths
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned();
        let stats = known.or_else(|| {
            let mut paths = self.paths.write().unwrap_or_else(|e| e.into_inner());
            if paths.len() >= MAX_PATHS && !paths.contains_key(&key) {
                self.untracked.fetch_add(1, Relaxed);
                return None;
            }
            let stats = paths.entry(key).or_insert_with(|| {
                Arc::new(PathStats {
                    method: method.clone(),
                    template: template(path),
                    upstream: upstream.to_owned(),
                    head: Histogram::default(),
                    timeouts: AtomicU64::new(0),
                    bad_gateway: AtomicU64::new(0),
                    client_aborts: AtomicU64::new(0),
                })
            });
            Some(Arc::clone(stats))
        });
        Watch { stats }
    }

    /// Requests on paths past the [`MAX_PATHS`] kept, not counted.
    pub(crate) fn untracked(&self) -> u64 {
        self.untracked.load(Relaxed)
    }

    /// The paths whose p99 is over `over`, or that lost clients, slowest first.
    pub(crate) fn suggestions(&self, over: Duration) -> Vec<Suggestion> {
        let paths = self.paths.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<Suggestion> = paths
            .values()
            .filter_map(|stats| stats.suggestion(over))
            .collect();
        out.sort_by(|a, b| b.p99.total_cmp(&a.p99).then(a.path.cmp(&b.path)));
        out
    }
}

impl Watch {
    /// `took`: until the response head, or the failure.
    pub(crate) fn ended(mut self, how: Ended, took: Duration) {
        let Some(stats) = self.stats.take() else {
            return;
        };
        stats.head.observe(took);
        match how {
            Ended::Answered(StatusCode::BAD_GATEWAY | StatusCode::GATEWAY_TIMEOUT) => {
                stats.bad_gateway.fetch_add(1, Relaxed);
            }
            Ended::Answered(_) | Ended::Failed => {}
            Ended::TimedOut => {
                stats.timeouts.fetch_add(1, Relaxed);
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(stats) = self.stats.take() {
            stats.client_aborts.fetch_add(1, Relaxed);
        }
    }
}

impl PathStats {
    fn suggestion(&self, over: Duration) -> Option<Suggestion> {
        let (_, count, _) = self.head.snapshot();
        let aborts = self.client_aborts.load(Relaxed);
        let p50 = self.head.quantile(0.5).unwrap_or(0.0);
        let p99 = self.head.quantile(0.99).unwrap_or(0.0);
        let slow = count > 0 && p99 > over.as_secs_f64();
        if !slow && aborts == 0 {
            return None;
        }
        let timeouts = self.timeouts.load(Relaxed);
        let bad_gateway = self.bad_gateway.load(Relaxed);
        let mut seen = Vec::new();
        if slow {
            seen.push(format!("p99 up to {p99} s, over advise_over"));
        }
        if aborts > 0 {
            seen.push(format!("{aborts} clients hung up before the answer"));
        }
        if timeouts > 0 {
            seen.push(format!("{timeouts} timed out"));
        }
        if bad_gateway > 0 {
            seen.push(format!("{bad_gateway} answered 502 or 504"));
        }
        Some(Suggestion {
            method: self.method.to_string(),
            path: self.template.clone(),
            count: count + aborts,
            p50,
            p99,
            timeouts,
            bad_gateway,
            client_aborts: aborts,
            seen: seen.join("; "),
            config: self.route_block(p50),
        })
    }

    /// A route that makes the path `auto`: answered as it is when the
    /// backend is as quick as usual (`sync_wait` from the p50), else `202`.
    fn route_block(&self, p50: f64) -> String {
        let slug: String = format!("{}{}", self.method, self.template)
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect();
        let slug = slug
            .split('-')
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("-");
        let sync_wait = Duration::from_secs_f64(p50.clamp(0.001, 300.0));
        format!(
            "[[routes]]\nname = \"advised-{slug}\"\nmethods = [\"{}\"]\npath = \"{}\"\nupstream = \"{}\"\nmode = \"auto\"\nsync_wait = \"{}ms\"\n",
            self.method,
            self.template,
            self.upstream,
            sync_wait.as_millis().max(1)
        )
    }
}

/// The method and template, hashed without making the template.
fn key(method: &Method, path: &str) -> u64 {
    let mut h = IdHasher::default();
    h.write(method.as_str().as_bytes());
    for segment in segments(path) {
        h.write_u8(b'/');
        h.write(if is_id(segment) {
            b"{id}"
        } else {
            segment.as_bytes()
        });
    }
    h.finish()
}

fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').skip(1)
}

/// A path's template: each segment that looks like an id (see [`is_id`])
/// becomes `{id}`, then `{id2}`, … so the template is a route pattern.
pub(crate) fn template(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut ids = 0;
    for segment in segments(path) {
        out.push('/');
        if is_id(segment) {
            ids += 1;
            match ids {
                1 => out.push_str("{id}"),
                n => out.push_str(&format!("{{id{n}}}")),
            }
        } else {
            out.push_str(segment);
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// Numbers, UUIDs, and long tokens with digits in them: what varies per
/// resource rather than per endpoint.
fn is_id(segment: &str) -> bool {
    let digits = segment.bytes().filter(u8::is_ascii_digit).count();
    if segment.is_empty() || digits == 0 {
        return false;
    }
    let token = segment
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    digits == segment.len() || (token && segment.len() >= 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_numbers_become_placeholders() {
        assert_eq!(template("/reports/123/pdf"), "/reports/{id}/pdf");
        assert_eq!(
            template("/users/0b6f5e0e-3c1c-4b0e-9d7e-5f3c2a9e8d11/orders/42"),
            "/users/{id}/orders/{id2}"
        );
        assert_eq!(template("/v2/export"), "/v2/export", "short words stay");
        assert_eq!(template("/"), "/");
        assert_eq!(template("/files/a1b2c3d4e5"), "/files/{id}");
    }

    #[test]
    fn a_slow_or_abandoned_path_is_suggested_with_a_route_check_accepts() {
        let advisor = Advisor::default();
        advisor
            .watch(&Method::POST, "/reports/7", "legacy")
            .ended(Ended::Answered(StatusCode::OK), Duration::from_millis(30));
        advisor
            .watch(&Method::GET, "/fast", "legacy")
            .ended(Ended::Answered(StatusCode::OK), Duration::from_millis(1));
        drop(advisor.watch(&Method::GET, "/export/9", "legacy"));
        let found = advisor.suggestions(Duration::from_millis(10));
        let paths: Vec<&str> = found.iter().map(|s| s.path.as_str()).collect();
        assert_eq!(paths, ["/reports/{id}", "/export/{id}"]);
        assert_eq!((found[1].client_aborts, found[1].count), (1, 1));
        let config = format!(
            "[upstreams.legacy]\nurl = \"http://127.0.0.1:1\"\n{}{}",
            found[0].config, found[1].config
        );
        crate::Config::parse(&config, std::path::Path::new("advised.toml"))
            .unwrap_or_else(|e| panic!("{e}\n{config}"));
    }
}
