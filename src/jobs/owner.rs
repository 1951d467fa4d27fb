//! Binding a job to the credentials that submitted it: only requests with the
//! same credentials see it; everyone else gets `404`, as if it did not exist.
//!
//! The job keeps a SHA-256 digest of the credentials salted with its own id,
//! never the credentials themselves; digests are compared in constant time.

use http::{HeaderMap, HeaderName};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::id::JobId;

/// The digest binding a job to its submitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Owner([u8; 32]);

/// The credential headers of a request, in the route's order; `None` when
/// the request carried none of them (the job is then visible to anyone).
pub(crate) fn credentials(headers: &HeaderMap, names: &[HeaderName]) -> Option<Vec<u8>> {
    let mut raw = Vec::new();
    for name in names {
        for value in headers.get_all(name) {
            raw.extend_from_slice(name.as_str().as_bytes());
            raw.push(0);
            raw.extend_from_slice(value.as_bytes());
            raw.push(0);
        }
    }
    (!raw.is_empty()).then_some(raw)
}

/// Whose a job is, for taking turns: the same for every job submitted with
/// the same credentials (a digest, unsalted, never kept in a store), 0 for
/// jobs without any.
pub(crate) fn caller(credentials: Option<&[u8]>) -> u64 {
    credentials.map_or(0, |c| {
        let digest = Sha256::digest(c);
        u64::from_le_bytes(digest[..8].try_into().expect("eight bytes"))
    })
}

impl Owner {
    pub(crate) fn of(id: JobId, credentials: &[u8]) -> Owner {
        let mut hasher = Sha256::new();
        hasher.update(id.as_bytes());
        hasher.update(credentials);
        Owner(hasher.finalize().into())
    }

    /// The digest as a store outside this process keeps it.
    pub(crate) fn digest(&self) -> [u8; 32] {
        self.0
    }

    pub(crate) fn from_digest(digest: [u8; 32]) -> Owner {
        Owner(digest)
    }

    /// Whether a request with these credentials may see the job.
    pub(crate) fn admits(&self, id: JobId, credentials: Option<&[u8]>) -> bool {
        // Every request pays for one digest, so a stranger's 404 costs the
        // same as a wrong credential's.
        let presented = Owner::of(id, credentials.unwrap_or_default());
        bool::from(self.0.ct_eq(&presented.0)) && credentials.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::{AUTHORIZATION, COOKIE};
    use http::HeaderValue;

    fn headers(pairs: &[(HeaderName, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k.clone(), HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn no_credentials_means_no_binding() {
        assert_eq!(credentials(&HeaderMap::new(), &[AUTHORIZATION]), None);
    }

    #[test]
    fn same_credentials_are_admitted_and_others_are_not() {
        let id = JobId::random();
        let mine = credentials(&headers(&[(AUTHORIZATION, "Bearer a")]), &[AUTHORIZATION]).unwrap();
        let theirs =
            credentials(&headers(&[(AUTHORIZATION, "Bearer b")]), &[AUTHORIZATION]).unwrap();
        let owner = Owner::of(id, &mine);
        assert!(owner.admits(id, Some(&mine)));
        assert!(!owner.admits(id, Some(&theirs)));
        assert!(!owner.admits(id, None));
    }

    #[test]
    fn the_digest_depends_on_the_job_and_keeps_no_credential() {
        let creds = credentials(&headers(&[(COOKIE, "session=s3cret")]), &[COOKIE]).unwrap();
        let a = Owner::of(JobId::random(), &creds);
        let b = Owner::of(JobId::random(), &creds);
        assert_ne!(a, b);
        assert!(!format!("{a:?}").contains("s3cret"));
    }
}
