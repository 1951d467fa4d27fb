//! `Idempotency-Key` (IETF httpapi draft): a client that repeats a
//! submission with the same key gets the same job back, not a second backend
//! request; the same key with a different request is refused.
//!
//! The key is scoped to the route and the caller's credentials; the store
//! keeps only digests of that scope and of the request.

use http::{HeaderMap, HeaderName, Method};
use sha2::{Digest, Sha256};

pub(crate) const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// Longest key accepted; the draft sets none, and 255 covers UUIDs and ULIDs
/// with room to spare.
const MAX_KEY_LEN: usize = 255;

/// A submission's key and what it asked for, as digests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Idempotency {
    /// Route, caller and key together.
    pub(crate) scope: [u8; 32],
    /// Method, path and body of the request.
    pub(crate) fingerprint: [u8; 32],
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters")]
pub(crate) struct BadKey;

impl Idempotency {
    /// The key's scope, or `None` when the request carries no key. Checked
    /// from the headers alone, so a bad key is refused before the body is read.
    pub(crate) fn scope(
        headers: &HeaderMap,
        route: &str,
        credentials: Option<&[u8]>,
    ) -> Result<Option<[u8; 32]>, BadKey> {
        let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
            return Ok(None);
        };
        let raw = value.as_bytes();
        // The draft's structured-field string, or the bare token most clients send.
        let key = raw
            .strip_prefix(b"\"")
            .and_then(|k| k.strip_suffix(b"\""))
            .unwrap_or(raw);
        if key.is_empty()
            || key.len() > MAX_KEY_LEN
            || !key.iter().all(|b| (0x21..=0x7e).contains(b))
        {
            return Err(BadKey);
        }
        Ok(Some(digest(&[
            route.as_bytes(),
            credentials.unwrap_or_default(),
            key,
        ])))
    }

    /// What the request asked for, to tell a repeat from a reused key.
    pub(crate) fn fingerprint(method: &Method, path: &str, body: &[u8]) -> [u8; 32] {
        digest(&[method.as_str().as_bytes(), path.as_bytes(), body])
    }
}

/// SHA-256 of the parts, each length-prefixed so no two splits collide.
fn digest(parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn with_key(key: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(IDEMPOTENCY_KEY, HeaderValue::from_static(key));
        h
    }

    fn of(h: &HeaderMap, creds: Option<&[u8]>, body: &[u8]) -> Result<Option<Idempotency>, BadKey> {
        let scope = Idempotency::scope(h, "r", creds)?;
        Ok(scope.map(|scope| Idempotency {
            scope,
            fingerprint: Idempotency::fingerprint(&Method::POST, "/x", body),
        }))
    }

    #[test]
    fn no_header_no_key() {
        assert_eq!(of(&HeaderMap::new(), None, b""), Ok(None));
    }

    #[test]
    fn quoted_and_bare_keys_are_the_same_key() {
        let a = of(&with_key("\"abc-123\""), None, b"x").unwrap().unwrap();
        let b = of(&with_key("abc-123"), None, b"x").unwrap().unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn scope_follows_the_caller_and_fingerprint_the_body() {
        let h = with_key("k");
        let mine = of(&h, Some(b"alice"), b"x").unwrap().unwrap();
        let theirs = of(&h, Some(b"bob"), b"x").unwrap().unwrap();
        assert_ne!(mine.scope, theirs.scope);
        let other_body = of(&h, Some(b"alice"), b"y").unwrap().unwrap();
        assert_eq!(mine.scope, other_body.scope);
        assert_ne!(mine.fingerprint, other_body.fingerprint);
    }

    #[test]
    fn bad_keys_are_refused() {
        assert_eq!(of(&with_key(""), None, b""), Err(BadKey));
        assert_eq!(of(&with_key("\"\""), None, b""), Err(BadKey));
        assert_eq!(of(&with_key("has space"), None, b""), Err(BadKey));
        let long: &'static str = Box::leak("k".repeat(256).into_boxed_str());
        assert_eq!(of(&with_key(long), None, b""), Err(BadKey));
    }
}
