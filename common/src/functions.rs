//! A process's view of the function registry: an in-memory copy kept current by a registry
//! watch, so the gateway's intake answers "unknown function" without a round trip and the
//! callback dispatcher reads a function's retry policy for free. A miss is checked against the
//! registry itself (a deploy may be milliseconds old).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::queue::Queue;
use crate::registry::{Change, Registry};
use crate::stack::FunctionSpec;
use crate::{Error, FunctionName};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
pub struct Functions {
    registry: Registry,
    /// Written by the watch task, read by every request.
    known: Arc<RwLock<HashMap<FunctionName, FunctionSpec>>>,
}

impl Functions {
    pub async fn follow(queue: &Queue, shutdown: CancellationToken) -> Result<Self, Error> {
        let registry = Registry::open(queue).await?;
        let known = Arc::new(RwLock::new(HashMap::new()));
        let mut changes = registry.watch().await?;
        let copy = known.clone();
        let watch_registry = registry.clone();
        tokio::spawn(async move {
            loop {
                let change = tokio::select! {
                    c = changes.next() => c,
                    _ = shutdown.cancelled() => return,
                };
                match change {
                    Some(Ok(Change::Deployed(spec))) => {
                        copy.write().expect("lock").insert(spec.name.clone(), *spec);
                    }
                    Some(Ok(Change::Removed(name))) => {
                        copy.write().expect("lock").remove(&name);
                    }
                    Some(Err(e)) => tracing::warn!(error = %e, "registry watch error"),
                    None => match watch_registry.watch().await {
                        Ok(c) => changes = c,
                        Err(e) => {
                            tracing::warn!(error = %e, "re-opening the registry watch failed");
                            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                        }
                    },
                }
            }
        });
        Ok(Functions { registry, known })
    }

    /// The incarnation of a deployed function, `None` when it is not deployed (the intake
    /// check; it copies one string, not the definition).
    pub async fn incarnation(&self, name: &FunctionName) -> Result<Option<String>, Error> {
        if let Some(spec) = self.known.read().expect("lock").get(name) {
            return Ok(Some(spec.incarnation.clone()));
        }
        Ok(self.registry.get(name).await?.map(|spec| spec.incarnation))
    }

    /// A deployed function's definition, checked against the registry on a miss.
    pub async fn get(&self, name: &FunctionName) -> Result<Option<FunctionSpec>, Error> {
        if let Some(spec) = self.known.read().expect("lock").get(name) {
            return Ok(Some(spec.clone()));
        }
        self.registry.get(name).await
    }

    /// A deployed function's definition from the in-memory copy only (no round trip).
    pub fn cached(&self, name: &str) -> Option<FunctionSpec> {
        let name: FunctionName = name.parse().ok()?;
        self.known.read().expect("lock").get(&name).cloned()
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn list(&self) -> Vec<FunctionSpec> {
        let mut specs: Vec<_> = self.known.read().expect("lock").values().cloned().collect();
        specs.sort_by(|a, b| a.name.cmp(&b.name));
        specs
    }
}
