//! Standard Webhooks signatures (www.standardwebhooks.com): the secret
//! `whsec_<base64>`, whose decoded bytes are the HMAC-SHA256 key, and the
//! signature `v1,<base64 of HMAC-SHA256(key, "id.timestamp.body")>` sent
//! in `webhook-signature` beside `webhook-id` and `webhook-timestamp`
//! (Unix seconds). Pure: the unit tests hold it to the spec's example.

use std::fmt;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

pub const SECRET_PREFIX: &str = "whsec_";
/// The spec: a key "between 24 bytes (192 bits) and 64 bytes (512 bits)".
pub const MIN_KEY_BYTES: usize = 24;
pub const MAX_KEY_BYTES: usize = 64;
/// What weft generates for a subscription made through the API.
const GENERATED_KEY_BYTES: usize = 32;

/// A validated `whsec_` secret. `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    text: String,
    key: Vec<u8>,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(whsec_…)")
    }
}

impl Secret {
    /// `whsec_` + standard base64 of 24 to 64 bytes; surrounding white
    /// space (a newline at the end of a secret file) is ignored.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let encoded = text.strip_prefix(SECRET_PREFIX).ok_or_else(|| {
            format!("a webhook secret starts with '{SECRET_PREFIX}' followed by base64 (the Standard Webhooks format)")
        })?;
        let key = B64
            .decode(encoded)
            .map_err(|e| format!("the part after '{SECRET_PREFIX}' is not standard base64 ({e})"))?;
        if !(MIN_KEY_BYTES..=MAX_KEY_BYTES).contains(&key.len()) {
            return Err(format!(
                "a webhook secret's key must be {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes (Standard Webhooks); \
                 this one is {} bytes. Make one with: echo \"whsec_$(openssl rand -base64 32)\"",
                key.len()
            ));
        }
        Ok(Self {
            text: text.to_string(),
            key,
        })
    }

    /// A new random secret of 32 bytes.
    pub fn generate() -> Self {
        let mut key = [0u8; GENERATED_KEY_BYTES];
        getrandom::fill(&mut key).expect("the OS random source");
        let text = format!("{SECRET_PREFIX}{}", B64.encode(key));
        Self {
            text,
            key: key.to_vec(),
        }
    }

    /// `whsec_...`, as stored and as shown once to whoever subscribed.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The `webhook-signature` value for one attempt.
    pub fn sign(&self, id: &str, timestamp: u64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks reference libraries' tests
    /// (also checked with Python's hmac module).
    #[test]
    fn signs_the_specs_example() {
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn refuses_what_the_libraries_would_not_take() {
        assert!(Secret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .unwrap_err()
            .contains("whsec_"));
        assert!(Secret::parse("whsec_not base64!").unwrap_err().contains("base64"));
        // 18 bytes: below the spec's 24.
        let short = format!("whsec_{}", B64.encode([7u8; 18]));
        assert!(Secret::parse(&short).unwrap_err().contains("24 to 64 bytes"));
        let long = format!("whsec_{}", B64.encode([7u8; 65]));
        assert!(Secret::parse(&long).is_err());
        assert!(Secret::parse(&format!(" whsec_{}\n", B64.encode([7u8; 64]))).is_ok());
    }

    #[test]
    fn generated_secrets_parse_and_differ() {
        let (a, b) = (Secret::generate(), Secret::generate());
        assert_ne!(a.as_str(), b.as_str());
        assert_eq!(Secret::parse(a.as_str()).unwrap(), a);
        assert!(!format!("{a:?}").contains(&a.as_str()[6..]));
    }
}
