//! The gateway's view of the function registry: an in-memory copy kept current by a registry
//! watch, so intake answers "unknown function" without a round trip. A miss is checked against
//! the registry itself before it becomes a 404 (a deploy may be milliseconds old).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use fjord_common::queue::Queue;
use fjord_common::registry::{Change, Registry};
use fjord_common::stack::FunctionSpec;
use fjord_common::{Error, FunctionName};
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

    /// Whether the function is deployed (the intake check: no copy of the definition).
    pub async fn exists(&self, name: &FunctionName) -> Result<bool, Error> {
        if self.known.read().expect("lock").contains_key(name) {
            return Ok(true);
        }
        Ok(self.registry.get(name).await?.is_some())
    }

    pub fn list(&self) -> Vec<FunctionSpec> {
        let mut specs: Vec<_> = self.known.read().expect("lock").values().cloned().collect();
        specs.sort_by(|a, b| a.name.cmp(&b.name));
        specs
    }
}
