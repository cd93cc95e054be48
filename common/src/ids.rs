//! Identifiers that can only hold valid values: `CallId` (a UUID) and `FunctionName`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Error;

/// The id of one invocation. Clients may choose it (`X-Call-Id`); otherwise it is a UUIDv7, so
/// ids sort roughly by creation time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CallId(pub Uuid);

impl CallId {
    pub fn new() -> Self {
        CallId(Uuid::now_v7())
    }

    /// The call id an `Idempotency-Key` stands for: a UUIDv8 from SHA-256 of the function, the
    /// key and `round` (a key may be used again once its earlier call is older than the
    /// idempotency window; each round gets the next id). Every gateway derives the same id, so
    /// no table of keys is needed.
    pub fn for_key(function: &FunctionName, key: &str, round: u32) -> Self {
        use sha2::Digest;
        let mut hash = sha2::Sha256::new();
        for part in [
            b"fjord-idempotency".as_slice(),
            function.as_str().as_bytes(),
            key.as_bytes(),
        ] {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part);
        }
        hash.update(round.to_be_bytes());
        let digest = hash.finalize();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        CallId(Uuid::new_v8(bytes))
    }
}

impl Default for CallId {
    fn default() -> Self {
        Self::new()
    }
}

impl FromStr for CallId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Uuid::parse_str(s.trim())
            .map(CallId)
            .map_err(|_| Error::invalid("call id", format!("{s:?} is not a UUID")))
    }
}

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.as_hyphenated().fmt(f)
    }
}

/// A function name as OpenFaaS accepts it: a DNS label (lowercase letters, digits and `-`, at
/// most 63 characters, starting and ending with a letter or digit). It is safe to use inside a
/// NATS subject, a consumer name and a URL path segment.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FunctionName(String);

impl FunctionName {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The uid (and gid) the function's processes run as: `0x4000_0000 + (FNV-1a-32(name) &
    /// 0x00FF_FFFF)`, so every host derives the same ids without a user database, and the ids
    /// stay clear of ordinary users and the nobody/65534 range. Two names can share an id (one
    /// chance in 16.7 million per pair): deploying refuses a name whose id a deployed function
    /// has, since the two would not be isolated from each other.
    pub fn user_id(&self) -> u32 {
        let mut hash: u32 = 0x811c_9dc5;
        for byte in self.0.bytes() {
            hash ^= u32::from(byte);
            hash = hash.wrapping_mul(0x0100_0193);
        }
        0x4000_0000 + (hash & 0x00FF_FFFF)
    }
}

impl FromStr for FunctionName {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
        let valid = !s.is_empty()
            && s.len() <= 63
            && s.chars().all(ok_char)
            && !s.starts_with('-')
            && !s.ends_with('-');
        if valid {
            Ok(FunctionName(s.to_owned()))
        } else {
            Err(Error::invalid(
                "function name",
                format!(
                    "{s:?} must be 1-63 lowercase letters, digits or '-', not starting or ending with '-'"
                ),
            ))
        }
    }
}

impl TryFrom<String> for FunctionName {
    type Error = Error;
    fn try_from(s: String) -> Result<Self, Error> {
        s.parse()
    }
}

impl From<FunctionName> for String {
    fn from(n: FunctionName) -> String {
        n.0
    }
}

impl fmt::Display for FunctionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_names() {
        for ok in ["echo", "a", "resize-image", "x1"] {
            assert!(ok.parse::<FunctionName>().is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "Echo", "a.b", "a b", "a>", &"a".repeat(64)] {
            assert!(bad.parse::<FunctionName>().is_err(), "{bad}");
        }
    }

    #[test]
    fn idempotency_keys_map_to_stable_distinct_ids() {
        let f: FunctionName = "pdf".parse().unwrap();
        let g: FunctionName = "pdfx".parse().unwrap();
        let id = CallId::for_key(&f, "order-17", 0);
        assert_eq!(id, CallId::for_key(&f, "order-17", 0));
        assert_eq!(id.0.get_version_num(), 8);
        assert_ne!(id, CallId::for_key(&f, "order-17", 1));
        assert_ne!(id, CallId::for_key(&f, "order-18", 0));
        assert_ne!(id, CallId::for_key(&g, "order-17", 0));
        // Length-prefixed: moving a boundary changes the id.
        assert_ne!(
            CallId::for_key(&"ab".parse().unwrap(), "c", 0),
            CallId::for_key(&"a".parse().unwrap(), "bc", 0)
        );
    }

    #[test]
    fn call_ids() {
        let id = CallId::new();
        assert_eq!(id.to_string().parse::<CallId>().unwrap(), id);
        assert!("nope".parse::<CallId>().is_err());
    }
}
