//! Secrets (`/system/secrets`): named values in a NATS key-value bucket of the installation, so
//! a worker on any host can fetch the ones its function names. Values are only ever read by
//! workers, which write them as files into the function's own folder; the API lists names only.

use std::fmt;
use std::str::FromStr;

use async_nats::jetstream::kv;
use bytes::Bytes;
use futures::StreamExt;

use crate::Error;
use crate::queue::Queue;

/// The largest secret value accepted.
pub const MAX_SECRET_BYTES: usize = 512 * 1024;

/// A secret name as Kubernetes (and so OpenFaaS) accepts it: lowercase letters, digits, `-`
/// and `.`, starting and ending with a letter or digit, at most 253 characters. It is safe as a
/// file name and a NATS key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SecretName(String);

impl SecretName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for SecretName {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let ok_char =
            |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
        let edge =
            |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if s.len() <= 253
            && s.chars().all(ok_char)
            && edge(s.chars().next())
            && edge(s.chars().last())
        {
            Ok(SecretName(s.to_owned()))
        } else {
            Err(Error::invalid(
                "name",
                format!(
                    "{s:?} is not a valid secret name (lowercase letters, digits, '-' and '.', at most 253)"
                ),
            ))
        }
    }
}

impl fmt::Display for SecretName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[derive(Clone)]
pub struct Secrets {
    kv: kv::Store,
}

impl Secrets {
    pub async fn open(queue: &Queue) -> Result<Self, Error> {
        let kv = queue
            .js
            .get_key_value(queue.names.secrets_bucket())
            .await
            .map_err(Error::nats)?;
        Ok(Secrets { kv })
    }

    /// Creates a secret; `Ok(false)` when one with that name exists already.
    pub async fn create(&self, name: &SecretName, value: Bytes) -> Result<bool, Error> {
        match self.kv.create(name.as_str(), value).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(Error::nats(e)),
        }
    }

    /// Replaces a secret's value; `Ok(false)` when there is no such secret.
    pub async fn update(&self, name: &SecretName, value: Bytes) -> Result<bool, Error> {
        match self.kv.entry(name.as_str()).await.map_err(Error::nats)? {
            Some(entry) if entry.operation == kv::Operation::Put => {
                self.kv
                    .update(name.as_str(), value, entry.revision)
                    .await
                    .map_err(Error::nats)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Deletes a secret; `Ok(false)` when there is no such secret.
    pub async fn delete(&self, name: &SecretName) -> Result<bool, Error> {
        if self.get(name).await?.is_none() {
            return Ok(false);
        }
        self.kv.delete(name.as_str()).await.map_err(Error::nats)?;
        Ok(true)
    }

    pub async fn get(&self, name: &SecretName) -> Result<Option<Bytes>, Error> {
        self.kv.get(name.as_str()).await.map_err(Error::nats)
    }

    /// Changes to any secret from now on: `(name, Some(value))` when set, `(name, None)` when
    /// deleted.
    pub async fn watch(
        &self,
    ) -> Result<impl futures::Stream<Item = (SecretName, Option<Bytes>)> + use<>, Error> {
        let watch = self.kv.watch_all().await.map_err(Error::nats)?;
        Ok(watch.filter_map(|entry| async move {
            let entry = entry.ok()?;
            let name = entry.key.parse().ok()?;
            match entry.operation {
                kv::Operation::Put => Some((name, Some(entry.value))),
                kv::Operation::Delete | kv::Operation::Purge => Some((name, None)),
            }
        }))
    }

    /// The names of every secret, sorted.
    pub async fn names(&self) -> Result<Vec<SecretName>, Error> {
        let mut keys = match self.kv.keys().await {
            Ok(keys) => keys,
            Err(e) => return Err(Error::nats(e)),
        };
        let mut names = Vec::new();
        while let Some(key) = keys.next().await {
            if let Ok(name) = key.map_err(Error::nats)?.parse() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }
}
