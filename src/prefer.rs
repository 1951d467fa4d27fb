//! The `Prefer` request header (RFC 7240), reduced to the preferences the
//! gateway honours: `respond-async` and `wait`.
//!
//! Grammar (RFC 7240 §2): `Prefer: 1#preference`, where
//! `preference = token [ BWS "=" BWS word ] *( OWS ";" [ OWS parameter ] )`
//! and `word = token / quoted-string`. Names are case-insensitive; a
//! preference given more than once counts only the first time (§2).

use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;

pub(crate) const PREFER: HeaderName = HeaderName::from_static("prefer");
pub(crate) const PREFERENCE_APPLIED: HeaderName = HeaderName::from_static("preference-applied");

/// What a request prefers, of what the gateway understands.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Preferences {
    pub(crate) respond_async: bool,
    /// Seconds the client is willing to wait for a synchronous answer.
    pub(crate) wait: Option<u64>,
}

impl Preferences {
    pub(crate) fn of(headers: &HeaderMap) -> Preferences {
        let mut prefs = Preferences::default();
        let mut seen_async = false;
        let mut seen_wait = false;
        for value in headers.get_all(PREFER) {
            let Ok(value) = value.to_str() else { continue };
            for (name, arg) in split_preferences(value) {
                if name.eq_ignore_ascii_case("respond-async") && !seen_async {
                    seen_async = true;
                    prefs.respond_async = true;
                } else if name.eq_ignore_ascii_case("wait") && !seen_wait {
                    seen_wait = true;
                    prefs.wait = arg.and_then(|a| a.parse().ok());
                }
            }
        }
        prefs
    }
}

/// `Preference-Applied: wait=N`, after `respond-async` when that was
/// applied too.
pub(crate) fn wait_applied(seconds: u64, respond_async: bool) -> HeaderValue {
    let applied = if respond_async {
        format!("respond-async, wait={seconds}")
    } else {
        format!("wait={seconds}")
    };
    HeaderValue::from_str(&applied).expect("digits make a valid header value")
}

/// Each preference's name and value (unquoted), parameters dropped.
fn split_preferences(value: &str) -> Vec<(&str, Option<String>)> {
    split_outside_quotes(value, ',')
        .into_iter()
        .filter_map(|pref| {
            // Parameters follow the first `;` and are not used here.
            let head = split_outside_quotes(pref, ';').into_iter().next()?;
            let (name, arg) = match head.split_once('=') {
                Some((n, a)) => (n.trim(), Some(unquote(a.trim()))),
                None => (head.trim(), None),
            };
            (!name.is_empty()).then_some((name, arg))
        })
        .collect()
}

fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                parts.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

fn unquote(word: &str) -> String {
    match word.strip_prefix('"').and_then(|w| w.strip_suffix('"')) {
        Some(inner) => {
            let mut out = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                out.push(if c == '\\' {
                    chars.next().unwrap_or('\\')
                } else {
                    c
                });
            }
            out
        }
        None => word.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefs(values: &[&'static str]) -> Preferences {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(PREFER, HeaderValue::from_static(v));
        }
        Preferences::of(&h)
    }

    #[test]
    fn absent_means_nothing_preferred() {
        assert_eq!(prefs(&[]), Preferences::default());
    }

    #[test]
    fn respond_async_in_any_case() {
        assert!(prefs(&["respond-async"]).respond_async);
        assert!(prefs(&["Respond-Async"]).respond_async);
        assert!(!prefs(&["respond-asyncx"]).respond_async);
    }

    #[test]
    fn several_preferences_in_one_header_or_many() {
        let p = prefs(&["respond-async, wait=10"]);
        assert_eq!(
            p,
            Preferences {
                respond_async: true,
                wait: Some(10)
            }
        );
        let p = prefs(&["wait=5", "respond-async"]);
        assert_eq!(
            p,
            Preferences {
                respond_async: true,
                wait: Some(5)
            }
        );
    }

    #[test]
    fn whitespace_quotes_and_parameters() {
        assert_eq!(prefs(&["wait = 7"]).wait, Some(7));
        assert_eq!(prefs(&["wait=\"8\""]).wait, Some(8));
        assert_eq!(prefs(&["wait=9; foo=bar"]).wait, Some(9));
        assert_eq!(prefs(&["return=minimal; x=\"a,b\", wait=3"]).wait, Some(3));
    }

    #[test]
    fn first_occurrence_wins() {
        assert_eq!(prefs(&["wait=2, wait=30"]).wait, Some(2));
        assert_eq!(prefs(&["wait=2", "wait=30"]).wait, Some(2));
    }

    #[test]
    fn malformed_waits_are_ignored() {
        assert_eq!(prefs(&["wait"]).wait, None);
        assert_eq!(prefs(&["wait=-1"]).wait, None);
        assert_eq!(prefs(&["wait=soon"]).wait, None);
        assert_eq!(prefs(&["wait=99999999999999999999999"]).wait, None);
    }

    #[test]
    fn unknown_preferences_are_ignored() {
        assert_eq!(
            prefs(&["handling=lenient, return=representation"]),
            Preferences::default()
        );
    }
}
