//! The route table: which route, if any, a request belongs to. It knows
//! routes by their index, path pattern and methods only, so the config can
//! build it to refuse routes that overlap.
//!
//! One rule decides: a request goes to the most specific route whose path
//! and methods both admit it. Patterns are compared segment by segment from
//! the left, a literal segment before `{name}` before `{*rest}`. Two routes
//! whose patterns differ never claim the same request at the same
//! specificity, so only routes with the same pattern (parameter names
//! aside) and a method in common overlap.
//!
//! matchit, which this table used before, keeps one value per path and
//! refuses `{name}` beside `{*rest}`: it cannot fall back to a less specific
//! pattern when the most specific one does not take the method.

use std::cmp::Ordering;
use std::fmt;

use http::Method;

#[derive(Debug, Clone)]
pub(crate) struct RouteTable {
    /// Most specific first: the first entry that admits a request is the one.
    entries: Vec<Entry>,
}

#[derive(Debug, Clone)]
struct Entry {
    route: usize,
    segments: Vec<Segment>,
    /// `None` matches every method.
    methods: Option<Vec<Method>>,
}

/// One `/`-separated piece of a pattern, in order of specificity: a
/// literal matches one text, a parameter any non-empty segment, a
/// catch-all whatever non-empty rest of the path follows.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    CatchAll,
    Param,
    Literal(String),
}

impl Segment {
    fn rank(&self) -> u8 {
        match self {
            Segment::CatchAll => 0,
            Segment::Param => 1,
            Segment::Literal(_) => 2,
        }
    }
}

impl Ord for Segment {
    fn cmp(&self, other: &Segment) -> Ordering {
        match (self, other) {
            (Segment::Literal(a), Segment::Literal(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl PartialOrd for Segment {
    fn partial_cmp(&self, other: &Segment) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// What the table knows of a route.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pattern<'a> {
    pub(crate) name: &'a str,
    /// `/`-separated segments: literals, `{name}`, and a last `{*name}`.
    pub(crate) path: &'a str,
    /// `None` matches every method.
    pub(crate) methods: Option<&'a [Method]>,
}

/// A route the table refuses: its pattern is not one, or it overlaps a
/// route before it.
#[derive(Debug)]
pub(crate) struct Refused {
    /// Index of the route that was refused.
    pub(crate) route: usize,
    reason: String,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl RouteTable {
    pub(crate) fn build(routes: &[Pattern<'_>]) -> Result<RouteTable, Refused> {
        let mut entries: Vec<Entry> = Vec::with_capacity(routes.len());
        for (i, route) in routes.iter().enumerate() {
            let segments = parse(route.path).map_err(|why| Refused {
                route: i,
                reason: format!("is not a valid path pattern: {why}"),
            })?;
            if let Some(other) = entries.iter().find(|e| {
                e.segments == segments && methods_overlap(e.methods.as_deref(), route.methods)
            }) {
                return Err(Refused {
                    route: i,
                    reason: format!(
                        "overlaps route `{}` (path {}): the same pattern with a method in common",
                        routes[other.route].name, routes[other.route].path
                    ),
                });
            }
            entries.push(Entry {
                route: i,
                segments,
                methods: route.methods.map(<[Method]>::to_vec),
            });
        }
        // Descending: among the entries a request matches, the first is the
        // most specific. Routes of one pattern keep their config order.
        entries.sort_by(|a, b| b.segments.cmp(&a.segments));
        Ok(RouteTable { entries })
    }

    /// Whether a path that is not [`clean`] would reach a route, as it is or
    /// as a backend that resolves its dot segments would read it: such a
    /// request is refused rather than matched (or let slip past the route
    /// by a `..` that leads back into it).
    pub(crate) fn reached_uncleanly(&self, method: &Method, path: &str) -> bool {
        self.find(method, path).is_some()
            || self.find(method, &without_dot_segments(path)).is_some()
    }

    /// The index of the route serving `method` on `path`.
    pub(crate) fn find(&self, method: &Method, path: &str) -> Option<usize> {
        let rest = path.strip_prefix('/')?;
        self.entries
            .iter()
            .find(|e| {
                e.methods.as_ref().is_none_or(|ms| ms.contains(method))
                    && matches(&e.segments, rest)
            })
            .map(|e| e.route)
    }
}

/// Whether a path has no `.` or `..` segment (also spelt `%2E`) and no
/// encoded `/` (`%2F`): a backend may resolve or decode either into a path
/// other than the one the route table saw. Checked on every request, so
/// bytes are looked at once and only `.` and `%` stop the scan.
pub(crate) fn clean(path: &str) -> bool {
    let bytes = path.as_bytes();
    if !bytes.iter().any(|&b| b == b'.' || b == b'%') {
        return true;
    }
    path.split('/').all(|segment| {
        let decoded = segment.replace("%2e", ".").replace("%2E", ".");
        decoded != "." && decoded != ".." && !segment.contains("%2f") && !segment.contains("%2F")
    })
}

/// `path` with its dot segments resolved as RFC 3986 (5.2.4) resolves them.
fn without_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match segment.replace("%2e", ".").replace("%2E", ".").as_str() {
            "." if last => out.push(""),
            "." => {}
            ".." => {
                out.pop();
                if last {
                    out.push("");
                }
            }
            _ => out.push(segment),
        }
    }
    format!("/{}", out.join("/"))
}

/// Whether `segments` match `path` (without its leading `/`).
fn matches(segments: &[Segment], mut path: &str) -> bool {
    for (i, segment) in segments.iter().enumerate() {
        if i > 0 {
            match path.strip_prefix('/') {
                Some(rest) => path = rest,
                None => return false,
            }
        }
        let (head, tail) = path.split_at(path.find('/').unwrap_or(path.len()));
        match segment {
            Segment::CatchAll => return !path.is_empty(),
            Segment::Param if head.is_empty() => return false,
            Segment::Param => {}
            Segment::Literal(text) if text != head => return false,
            Segment::Literal(_) => {}
        }
        path = tail;
    }
    path.is_empty()
}

fn parse(pattern: &str) -> Result<Vec<Segment>, String> {
    let rest = pattern
        .strip_prefix('/')
        .ok_or_else(|| "it must start with /".to_owned())?;
    let pieces: Vec<&str> = rest.split('/').collect();
    let last = pieces.len() - 1;
    pieces
        .iter()
        .enumerate()
        .map(|(i, piece)| {
            let named = |name: &str| {
                !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            };
            match piece.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                Some(inner) => match inner.strip_prefix('*') {
                    Some(name) if named(name) && i == last => Ok(Segment::CatchAll),
                    Some(name) if named(name) => Err(format!(
                        "`{piece}` takes the rest of the path, so it must come last"
                    )),
                    None if named(inner) => Ok(Segment::Param),
                    _ => Err(format!(
                        "`{piece}`: a parameter's name is letters, digits, `_` and `-`"
                    )),
                },
                None if piece.contains(['{', '}']) => Err(format!(
                    "`{piece}`: a parameter must be a whole segment, `{{name}}` or `{{*name}}`"
                )),
                None => Ok(Segment::Literal((*piece).to_owned())),
            }
        })
        .collect()
}

fn methods_overlap(a: Option<&[Method]>, b: Option<&[Method]>) -> bool {
    match (a, b) {
        (Some(x), Some(y)) => x.iter().any(|m| y.contains(m)),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_and_encoded_slashes_are_not_clean() {
        for path in ["/", "/reports/q1", "/a.b/c.d", "/v1.2/%20x", "/file..txt"] {
            assert!(clean(path), "{path}");
        }
        for path in [
            "/a/../b",
            "/a/./b",
            "/..",
            "/a/%2e%2E/b",
            "/a/%2E",
            "/a%2Fb",
            "/a%2f",
        ] {
            assert!(!clean(path), "{path}");
        }
    }

    #[test]
    fn dot_segments_resolve_as_rfc_3986_says() {
        assert_eq!(without_dot_segments("/a/b/../c"), "/a/c");
        assert_eq!(without_dot_segments("/a/./b/."), "/a/b/");
        assert_eq!(without_dot_segments("/../../x"), "/x");
        assert_eq!(
            without_dot_segments("/other/%2e%2e/reports/1"),
            "/reports/1"
        );
        assert_eq!(without_dot_segments("/a/b/.."), "/a/");
    }

    fn table(routes: &[(&'static str, &'static str, Option<&'static [Method]>)]) -> RouteTable {
        try_table(routes).unwrap()
    }

    fn try_table(
        routes: &[(&'static str, &'static str, Option<&'static [Method]>)],
    ) -> Result<RouteTable, Refused> {
        let patterns: Vec<Pattern<'_>> = routes
            .iter()
            .map(|&(name, path, methods)| Pattern {
                name,
                path,
                methods,
            })
            .collect();
        RouteTable::build(&patterns)
    }

    const GET: &[Method] = &[Method::GET];
    const POST: &[Method] = &[Method::POST];

    #[test]
    fn falls_back_to_a_less_specific_route_that_takes_the_method() {
        let t = table(&[
            ("q3", "/reports/q3", Some(GET)),
            ("all", "/reports/{*rest}", Some(POST)),
        ]);
        assert_eq!(t.find(&Method::GET, "/reports/q3"), Some(0));
        assert_eq!(t.find(&Method::POST, "/reports/q3"), Some(1));
        assert_eq!(t.find(&Method::POST, "/reports/a/b"), Some(1));
        assert_eq!(t.find(&Method::GET, "/reports/a"), None);
        assert_eq!(t.find(&Method::POST, "/reports/"), None);
        assert_eq!(t.find(&Method::POST, "/reports"), None);
    }

    #[test]
    fn literal_beats_parameter_beats_catch_all_segment_by_segment() {
        let t = table(&[
            ("rest", "/r/{*rest}", None),
            ("name", "/r/{name}", None),
            ("lit", "/r/q3", None),
            ("deep", "/r/{name}/x", None),
            ("left", "/{a}/q3", None),
        ]);
        assert_eq!(t.find(&Method::GET, "/r/q3"), Some(2));
        assert_eq!(t.find(&Method::GET, "/r/q4"), Some(1));
        assert_eq!(t.find(&Method::GET, "/r/q4/x"), Some(3));
        assert_eq!(t.find(&Method::GET, "/r/q4/y"), Some(0));
        // The leftmost segment decides first: a literal `r` outranks `{a}`.
        assert_eq!(t.find(&Method::GET, "/s/q3"), Some(4));
        assert_eq!(t.find(&Method::GET, "/r//x"), Some(0));
    }

    #[test]
    fn one_overlap_rule_for_every_kind_of_segment() {
        // The same pattern, parameter names aside, with a method in common.
        for (a, b) in [
            ("/r/q3", "/r/q3"),
            ("/r/{id}", "/r/{name}"),
            ("/r/{*rest}", "/r/{*all}"),
        ] {
            let refused = try_table(&[("a", a, Some(POST)), ("b", b, None)]).unwrap_err();
            assert_eq!(refused.route, 1);
            assert!(
                refused.to_string().contains("overlaps route `a`"),
                "{refused}"
            );
            try_table(&[("a", a, Some(POST)), ("b", b, Some(GET))]).unwrap();
        }
        // Different patterns stand side by side, whatever their segments.
        try_table(&[
            ("a", "/r/q3", Some(POST)),
            ("b", "/r/{name}", Some(POST)),
            ("c", "/r/{*rest}", Some(POST)),
        ])
        .unwrap();
    }

    #[test]
    fn the_refusal_names_the_later_route() {
        let refused = try_table(&[
            ("first", "/a/{x}", None),
            ("ok", "/b", None),
            ("second", "/a/{y}", None),
        ])
        .unwrap_err();
        assert_eq!(refused.route, 2);
        assert!(refused.to_string().contains("`first` (path /a/{x})"));
    }

    #[test]
    fn malformed_patterns_are_refused() {
        for bad in [
            "/r/{*rest}/x",
            "/r/{x}.json",
            "/r/{}",
            "/r/{a b}",
            "r",
            "/r/}",
        ] {
            let refused = try_table(&[("a", bad, None)]).unwrap_err();
            assert!(
                refused.to_string().contains("not a valid path pattern"),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_root_and_trailing_slashes_are_exact() {
        let t = table(&[
            ("root", "/", None),
            ("slash", "/r/", None),
            ("r", "/r", None),
        ]);
        assert_eq!(t.find(&Method::GET, "/"), Some(0));
        assert_eq!(t.find(&Method::GET, "/r/"), Some(1));
        assert_eq!(t.find(&Method::GET, "/r"), Some(2));
        assert_eq!(t.find(&Method::GET, "/r//"), None);
    }
}
