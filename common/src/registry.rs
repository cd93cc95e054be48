//! The function registry: deployed function definitions in a NATS key-value bucket, so every
//! gateway and worker (which have NATS and nothing else) can read them and watch for changes.
//!
//! async-nats cannot create a KV bucket on NATS 2.9 (its account-info probe fails), so the
//! bucket's backing stream is created here with the same settings a KV bucket gets.

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use futures::StreamExt;

use crate::queue::{ConsumerSettings, Names, Queue};
use crate::stack::FunctionSpec;
use crate::{Error, FunctionName};

pub(crate) async fn ensure_bucket(js: &jetstream::Context, names: &Names) -> Result<(), Error> {
    let bucket = names.registry_bucket();
    js.get_or_create_stream(stream::Config {
        name: names.registry_stream(),
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
        let watch = self.kv.watch_with_history(">").await.map_err(Error::nats)?;
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

    /// Deploys (or updates) a function: its consumer first, so no call published once the
    /// definition is visible can miss its queue.
    pub async fn deploy(
        &self,
        queue: &Queue,
        spec: &FunctionSpec,
        settings: &ConsumerSettings,
    ) -> Result<(), Error> {
        queue.ensure_function_consumer(&spec.name, settings).await?;
        let value = serde_json::to_vec(spec).expect("spec serialises");
        self.kv
            .put(spec.name.as_str(), value.into())
            .await
            .map_err(Error::nats)?;
        Ok(())
    }

    /// Removes a function: new calls are refused; its consumer (and the calls queued on it) go.
    pub async fn remove(&self, queue: &Queue, name: &FunctionName) -> Result<(), Error> {
        self.kv.delete(name.as_str()).await.map_err(Error::nats)?;
        queue.delete_function_consumer(name).await
    }
}
