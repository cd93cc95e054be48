//! The function registry: deployed function definitions in a NATS key-value bucket, so every
//! gateway and worker (which have NATS and nothing else) can read them and watch for changes.
//!
//! async-nats cannot create a KV bucket on NATS 2.9 (its account-info probe fails), so the
//! bucket's backing stream is created here with the same settings a KV bucket gets.

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use futures::StreamExt;

use crate::queue::{ConsumerSettings, Queue};
use crate::stack::FunctionSpec;
use crate::{Error, FunctionName};

/// Creates a KV bucket's backing stream (the registry's, the secrets') if it does not exist.
pub(crate) async fn ensure_bucket(js: &jetstream::Context, bucket: &str) -> Result<(), Error> {
    ensure_expiring_bucket(js, bucket, Duration::ZERO).await
}

/// [`ensure_bucket`] whose entries expire after `max_age` (zero: never).
pub(crate) async fn ensure_expiring_bucket(
    js: &jetstream::Context,
    bucket: &str,
    max_age: Duration,
) -> Result<(), Error> {
    js.get_or_create_stream(stream::Config {
        max_age,
        name: format!("KV_{bucket}"),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        storage: stream::StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .map_err(Error::nats)?;
    Ok(())
}

/// A change seen by [`Registry::watch`].
#[derive(Debug)]
pub enum Change {
    Deployed(Box<FunctionSpec>),
    Removed(FunctionName),
}

#[derive(Clone)]
pub struct Registry {
    kv: kv::Store,
}

impl Registry {
    pub async fn open(queue: &Queue) -> Result<Self, Error> {
        let kv = queue
            .js
            .get_key_value(queue.names.registry_bucket())
            .await
            .map_err(Error::nats)?;
        Ok(Registry { kv })
    }

    pub async fn get(&self, name: &FunctionName) -> Result<Option<FunctionSpec>, Error> {
        match self.kv.get(name.as_str()).await.map_err(Error::nats)? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::Malformed(format!("registry entry {name}: {e}"))),
        }
    }

    pub async fn list(&self) -> Result<Vec<FunctionSpec>, Error> {
        let mut keys = self.kv.keys().await.map_err(Error::nats)?;
        let mut names = Vec::new();
        while let Some(key) = keys.next().await {
            names.push(key.map_err(Error::nats)?);
        }
        let mut specs = Vec::new();
        for key in names {
            if let Ok(name) = key.parse::<FunctionName>()
                && let Some(spec) = self.get(&name).await?
            {
                specs.push(spec);
            }
        }
        specs.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(specs)
    }

    /// Every current definition first, then changes as they happen.
    pub async fn watch(
        &self,
    ) -> Result<impl futures::Stream<Item = Result<Change, Error>> + use<>, Error> {
        self.watch_key(">").await
    }

    /// One function's current definition first, then its changes.
    pub async fn watch_one(
        &self,
        name: &FunctionName,
    ) -> Result<impl futures::Stream<Item = Result<Change, Error>> + use<>, Error> {
        self.watch_key(name.as_str()).await
    }

    async fn watch_key(
        &self,
        key: &str,
    ) -> Result<impl futures::Stream<Item = Result<Change, Error>> + use<>, Error> {
        let watch = self.kv.watch_with_history(key).await.map_err(Error::nats)?;
        Ok(watch.map(|entry| {
            let entry = entry.map_err(Error::nats)?;
            match entry.operation {
                kv::Operation::Put => serde_json::from_slice(&entry.value)
                    .map(|spec| Change::Deployed(Box::new(spec)))
                    .map_err(|e| Error::Malformed(format!("registry entry {}: {e}", entry.key))),
                kv::Operation::Delete | kv::Operation::Purge => entry
                    .key
                    .parse()
                    .map(Change::Removed)
                    .map_err(|_| Error::Malformed(format!("registry key {}", entry.key))),
            }
        }))
    }

    /// Creates a function that is not deployed yet, with a fresh incarnation; `None` when one
    /// with that name exists. Its consumer comes first, so no call published once the
    /// definition is visible can miss its queue.
    pub async fn create(
        &self,
        queue: &Queue,
        spec: &FunctionSpec,
        settings: &ConsumerSettings,
    ) -> Result<Option<FunctionSpec>, Error> {
        let mut spec = spec.clone();
        spec.incarnation = uuid::Uuid::now_v7().simple().to_string();
        queue.ensure_function_consumer(&spec.name, settings).await?;
        let value = serde_json::to_vec(&spec).expect("spec serialises");
        match self.kv.create(spec.name.as_str(), value.into()).await {
            Ok(_) => Ok(Some(spec)),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(Error::nats(e)),
        }
    }

    /// Replaces a deployed function's definition, keeping its incarnation (queued calls run
    /// under the new definition); `None` when it is not deployed. Fails on a concurrent update
    /// rather than losing one.
    pub async fn update(
        &self,
        queue: &Queue,
        spec: &FunctionSpec,
        settings: &ConsumerSettings,
    ) -> Result<Option<FunctionSpec>, Error> {
        let Some(entry) = self
            .kv
            .entry(spec.name.as_str())
            .await
            .map_err(Error::nats)?
        else {
            return Ok(None);
        };
        if entry.operation != kv::Operation::Put {
            return Ok(None);
        }
        let current: FunctionSpec = serde_json::from_slice(&entry.value)
            .map_err(|e| Error::Malformed(format!("registry entry {}: {e}", spec.name)))?;
        let mut spec = spec.clone();
        spec.incarnation = current.incarnation;
        queue.ensure_function_consumer(&spec.name, settings).await?;
        let value = serde_json::to_vec(&spec).expect("spec serialises");
        self.kv
            .update(spec.name.as_str(), value.into(), entry.revision)
            .await
            .map_err(Error::nats)?;
        Ok(Some(spec))
    }

    /// Updates the function, or creates it when it is not deployed (`fjord up`, tests).
    pub async fn deploy(
        &self,
        queue: &Queue,
        spec: &FunctionSpec,
        settings: &ConsumerSettings,
    ) -> Result<FunctionSpec, Error> {
        for _ in 0..3 {
            if let Some(spec) = self.update(queue, spec, settings).await? {
                return Ok(spec);
            }
            if let Some(spec) = self.create(queue, spec, settings).await? {
                return Ok(spec);
            }
        }
        Err(Error::Nats(format!(
            "function {} kept changing while being deployed",
            spec.name
        )))
    }

    /// Removes a function: new calls are refused at once. Its queued calls are ended as
    /// `cancelled` and its consumer deleted by the control process (`retire`), after its
    /// workers have stopped.
    pub async fn remove(&self, name: &FunctionName) -> Result<bool, Error> {
        if self.get(name).await?.is_none() {
            return Ok(false);
        }
        self.kv.delete(name.as_str()).await.map_err(Error::nats)?;
        Ok(true)
    }
}
