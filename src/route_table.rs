//! The route table: which route, if any, a request belongs to. It knows
//! routes by their index, path pattern and methods only, so the config can
//! build it to refuse routes that overlap.

use std::collections::BTreeMap;
use std::fmt;

use http::Method;

/// Paths are matched by matchit; each path holds the routes that share it,
/// told apart by method.
#[derive(Debug, Clone)]
pub(crate) struct RouteTable {
    paths: matchit::Router<Vec<(usize, Option<Vec<Method>>)>>,
}

/// What the table knows of a route.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pattern<'a> {
    pub(crate) name: &'a str,
    /// A matchit pattern.
    pub(crate) path: &'a str,
    /// `None` matches every method.
    pub(crate) methods: Option<&'a [Method]>,
}

/// Two routes that could both claim one request.
#[derive(Debug)]
pub(crate) struct Conflict {
    /// Index of the route that was refused.
    pub(crate) route: usize,
    reason: String,
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl RouteTable {
    pub(crate) fn build(routes: &[Pattern<'_>]) -> Result<RouteTable, Conflict> {
        let mut by_path: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, route) in routes.iter().enumerate() {
            let same_path = by_path.entry(route.path).or_default();
            if let Some(&other) = same_path
                .iter()
                .find(|&&j| methods_overlap(&routes[j], route))
            {
                return Err(Conflict {
                    route: i,
                    reason: format!(
                        "overlaps route `{}`: same path and a method in common",
                        routes[other].name
                    ),
                });
            }
            same_path.push(i);
        }
        let mut paths = matchit::Router::new();
        for (path, indices) in by_path {
            let entries = indices
                .iter()
                .map(|&i| (i, routes[i].methods.map(<[Method]>::to_vec)))
                .collect();
            if let Err(e) = paths.insert(path, entries) {
                let reason = match &e {
                    matchit::InsertError::Conflict { with } => {
                        let other = routes
                            .iter()
                            .find(|r| r.path == with)
                            .map_or(with.as_str(), |r| r.name);
                        format!(
                            "overlaps route `{other}` (path {with}): a request could match both"
                        )
                    }
                    other => format!("is not a valid path pattern: {other}"),
                };
                return Err(Conflict {
                    route: indices[0],
                    reason,
                });
            }
        }
        Ok(RouteTable { paths })
    }

    /// The index of the route serving `method` on `path`.
    pub(crate) fn find(&self, method: &Method, path: &str) -> Option<usize> {
        let matched = self.paths.at(path).ok()?;
        matched
            .value
            .iter()
            .find(|(_, methods)| methods.as_ref().is_none_or(|ms| ms.contains(method)))
            .map(|(i, _)| *i)
    }
}

fn methods_overlap(a: &Pattern<'_>, b: &Pattern<'_>) -> bool {
    match (a.methods, b.methods) {
        (Some(x), Some(y)) => x.iter().any(|m| y.contains(m)),
        _ => true,
    }
}
