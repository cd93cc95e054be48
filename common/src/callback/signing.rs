//! Standard Webhooks signatures: `webhook-signature: v1,<base64 HMAC-SHA256(key, "id.timestamp.body")>`,
//! one signature per active secret, space-separated, so a receiver verifies with any one of
//! them while secrets rotate.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::Error;

/// The secrets callbacks are signed with (`FJORD_CALLBACK_SECRET`). Empty: callbacks go out
/// unsigned.
#[derive(Clone, Default)]
pub struct Signer {
    keys: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({} keys)", self.keys.len())
    }
}

impl Signer {
    /// Parses a comma-separated list of `whsec_<base64>` secrets.
    pub fn parse(list: &str) -> Result<Signer, Error> {
        let mut keys = Vec::new();
        for secret in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let key = secret
                .strip_prefix("whsec_")
                .and_then(|b64| STANDARD.decode(b64).ok())
                .filter(|k| !k.is_empty())
                .ok_or_else(|| {
                    Error::invalid(
                        "FJORD_CALLBACK_SECRET",
                        "each secret is whsec_ followed by base64 (as `fjord up` generates)",
                    )
                })?;
            keys.push(key);
        }
        Ok(Signer { keys })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The `webhook-signature` value, `None` without secrets.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> Option<String> {
        if self.keys.is_empty() {
            return None;
        }
        let signatures: Vec<String> = self
            .keys
            .iter()
            .map(|key| {
                let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key");
                mac.update(id.as_bytes());
                mac.update(b".");
                mac.update(timestamp.to_string().as_bytes());
                mac.update(b".");
                mac.update(body);
                format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
            })
            .collect();
        Some(signatures.join(" "))
    }

    /// A new random secret in the `whsec_` format (24 bytes, as the specification suggests).
    pub fn generate() -> String {
        let bytes: [u8; 24] = rand::random();
        format!("whsec_{}", STANDARD.encode(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_specification_example() {
        // The example from the Standard Webhooks specification and its reference libraries.
        let signer = Signer::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            signer.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            Some("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=".to_owned())
        );
    }

    #[test]
    fn one_signature_per_secret() {
        let a = Signer::generate();
        let b = Signer::generate();
        let both = Signer::parse(&format!("{a}, {b}")).unwrap();
        let sig = both.sign("msg_1", 1, b"x").unwrap();
        let parts: Vec<&str> = sig.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(
            Some(parts[0].to_owned()),
            Signer::parse(&a).unwrap().sign("msg_1", 1, b"x")
        );
        assert_eq!(
            Some(parts[1].to_owned()),
            Signer::parse(&b).unwrap().sign("msg_1", 1, b"x")
        );
        assert!(Signer::parse("").unwrap().sign("m", 1, b"").is_none());
        assert!(Signer::parse("secret").is_err());
        assert!(Signer::parse("whsec_!!").is_err());
    }
}
