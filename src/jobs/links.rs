//! Links that work without the caller's credentials, for one job and one
//! use, until they expire: `?access={expiry}.{mac}`, an HMAC-SHA256 over
//! the use, the job id and the expiry under a key of the gateway's. A
//! browser's EventSource or WebSocket cannot send `Authorization`, so a
//! job bound to credentials offers its owner an events link; a webhook
//! whose result is too large to carry inline names its result by a result
//! link. Neither opens the other's resource.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::id::JobId;

/// What a link opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// The job's event stream and WebSocket.
    Events = 1,
    /// The job's result.
    Result = 2,
}

/// The key links are signed with, and how long a link lasts.
pub(crate) struct Capabilities {
    key: Vec<u8>,
    ttl: Duration,
}

impl Capabilities {
    /// `key`: the configured `events_link_secret`, shared by replicas; `None`
    /// makes one for this process (links then work on it alone).
    pub(crate) fn new(key: Option<Vec<u8>>, ttl: Duration) -> Capabilities {
        // Two v4 UUIDs: 244 bits from the thread's CSPRNG (rand's ChaCha).
        let key = key.unwrap_or_else(|| {
            [uuid::Uuid::new_v4(), uuid::Uuid::new_v4()]
                .iter()
                .flat_map(|u| *u.as_bytes())
                .collect()
        });
        Capabilities { key, ttl }
    }

    fn mac(&self, purpose: Purpose, id: JobId, expiry: u64) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key");
        mac.update(&[purpose as u8]);
        mac.update(id.as_bytes());
        mac.update(&expiry.to_be_bytes());
        mac
    }

    /// A token for `id`'s `purpose`, valid for the configured time from now.
    pub(crate) fn issue(&self, purpose: Purpose, id: JobId) -> String {
        let expiry = unix_now() + self.ttl.as_secs();
        let tag = self.mac(purpose, id, expiry).finalize().into_bytes();
        format!("{expiry}.{}", URL_SAFE_NO_PAD.encode(tag))
    }

    /// Whether `token` was issued for `id`'s `purpose` and has not expired;
    /// the tag is compared in constant time.
    pub(crate) fn admits(&self, purpose: Purpose, id: JobId, token: &str) -> bool {
        let Some((expiry, tag)) = token.split_once('.') else {
            return false;
        };
        let (Ok(expiry), Ok(tag)) = (expiry.parse::<u64>(), URL_SAFE_NO_PAD.decode(tag)) else {
            return false;
        };
        expiry > unix_now() && self.mac(purpose, id, expiry).verify_slice(&tag).is_ok()
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;
    use Purpose::{Events, Result};

    #[test]
    fn a_token_admits_its_job_and_its_use_alone_until_it_expires() {
        let caps = Capabilities::new(None, Duration::from_secs(60));
        let (a, b) = (JobId::random(), JobId::random());
        let token = caps.issue(Events, a);
        assert!(caps.admits(Events, a, &token));
        assert!(!caps.admits(Events, b, &token));
        assert!(
            !caps.admits(Result, a, &token),
            "an events link opens no result"
        );
        assert!(caps.admits(Result, a, &caps.issue(Result, a)));
        let other_key = Capabilities::new(None, Duration::from_secs(60));
        assert!(!other_key.admits(Events, a, &token));
        let (expiry, tag) = token.split_once('.').unwrap();
        let later = format!("{}.{tag}", expiry.parse::<u64>().unwrap() + 1);
        assert!(!caps.admits(Events, a, &later), "the expiry is signed");
        let expired = Capabilities::new(None, Duration::ZERO);
        assert!(!expired.admits(Events, a, &expired.issue(Events, a)));
        for garbage in ["", ".", "x.y", "1.", "99999999999.!!"] {
            assert!(!caps.admits(Events, a, garbage), "{garbage}");
        }
    }
}
