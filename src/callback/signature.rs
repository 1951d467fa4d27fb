//! Signing as the Standard Webhooks spec says: an HMAC-SHA256 over
//! `{webhook-id}.{webhook-timestamp}.{body}`, keyed with the bytes behind a
//! `whsec_` secret, sent as `webhook-signature: v1,{base64}`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const PREFIX: &str = "whsec_";

/// The key webhooks are signed with; never printed.
#[derive(Clone)]
pub(crate) struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SecretError {
    #[error("must start with `whsec_`, as Standard Webhooks secrets do")]
    Prefix,
    #[error("the part after `whsec_` must be base64")]
    Base64,
    #[error("must hold at least 24 bytes of key; this one holds {0}")]
    TooShort(usize),
}

impl Secret {
    pub(crate) fn parse(text: &str) -> Result<Secret, SecretError> {
        let encoded = text.strip_prefix(PREFIX).ok_or(SecretError::Prefix)?;
        let key = STANDARD.decode(encoded).map_err(|_| SecretError::Base64)?;
        // The spec asks for 24 to 64 bytes; shorter keys are guessable.
        if key.len() < 24 {
            return Err(SecretError::TooShort(key.len()));
        }
        Ok(Secret(key))
    }

    /// The key's bytes, for another MAC made with a secret of this form.
    pub(crate) fn key(&self) -> &[u8] {
        &self.0
    }

    /// The `webhook-signature` header value for one delivery attempt.
    pub(crate) fn sign(&self, id: &str, timestamp: u64, body: &[u8]) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example from the Standard Webhooks reference libraries' tests.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    #[test]
    fn signs_like_the_reference_implementation() {
        let secret = Secret::parse(SECRET).unwrap();
        let signature = secret.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn any_change_changes_the_signature() {
        let secret = Secret::parse(SECRET).unwrap();
        let base = secret.sign("a", 1, b"body");
        assert_ne!(base, secret.sign("b", 1, b"body"));
        assert_ne!(base, secret.sign("a", 2, b"body"));
        assert_ne!(base, secret.sign("a", 1, b"bodY"));
    }

    #[test]
    fn bad_secrets_are_refused_with_a_reason() {
        assert_eq!(
            Secret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap_err(),
            SecretError::Prefix
        );
        assert_eq!(
            Secret::parse("whsec_not base64!").unwrap_err(),
            SecretError::Base64
        );
        assert_eq!(
            Secret::parse("whsec_c2hvcnQ=").unwrap_err(),
            SecretError::TooShort(5)
        );
    }

    #[test]
    fn the_secret_never_prints() {
        let secret = Secret::parse(SECRET).unwrap();
        assert_eq!(format!("{secret:?}"), "Secret(..)");
    }
}
