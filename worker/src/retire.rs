//! Retiring removed functions: once a function is gone from the registry (new calls already
//! answer 404) and its workers have stopped, the calls still queued on its consumer are ended
//! as `cancelled` and the consumer is deleted. The control process runs this for every removal
//! it sees and, at start, for consumers whose function is no longer deployed, so a removal is
//! finished even if the process that saw it died.
//!
//! Calls that were running when the function was removed finish on their workers (which stop
//! pulling when their definition disappears). A redeploy of the same name while this runs stops
//! it; the new deployment's workers cancel calls of the old incarnation themselves.

use std::time::Duration;

use async_nats::jetstream::AckKind;
use bytes::Bytes;
use fjord_common::invocation::{self, CallMeta, Event, FinalStatus};
use fjord_common::queue::Queue;
use fjord_common::registry::{Change, Registry};
use fjord_common::{Error, FunctionName};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Watches the registry and retires each removed function; at start, retires every function
/// consumer without a definition.
pub async fn run(queue: Queue, shutdown: CancellationToken) -> Result<(), Error> {
    let registry = Registry::open(&queue).await?;
    let mut changes = registry.watch().await?;
    // One task per function: a removal waiting on a long-running call delays no other.
    let spawn = |name: FunctionName| {
        let (queue, registry, shutdown) = (queue.clone(), registry.clone(), shutdown.clone());
        tokio::spawn(async move { retire_logged(&queue, &registry, &name, &shutdown).await });
    };
    for name in orphans(&queue, &registry).await? {
        spawn(name);
    }
    loop {
        let change = tokio::select! {
            change = changes.next() => change,
            _ = shutdown.cancelled() => return Ok(()),
        };
        match change {
            Some(Ok(Change::Removed(name))) => spawn(name),
            Some(Ok(Change::Deployed(_))) => {}
            Some(Err(e)) => warn!(error = %e, "registry watch error"),
            None => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                changes = registry.watch().await?;
            }
        }
    }
}

async fn retire_logged(
    queue: &Queue,
    registry: &Registry,
    name: &FunctionName,
    shutdown: &CancellationToken,
) {
    match retire(queue, registry, name, shutdown).await {
        Ok(0) => info!(function = %name, "function retired"),
        Ok(n) => info!(function = %name, cancelled = n, "function retired; queued calls cancelled"),
        Err(e) => {
            warn!(function = %name, error = %e, "retiring the function failed; it is retried at the next start")
        }
    }
}

/// Function consumers whose function is not deployed.
async fn orphans(queue: &Queue, registry: &Registry) -> Result<Vec<FunctionName>, Error> {
    let mut names = queue.stream().await?.consumer_names();
    let mut orphans = Vec::new();
    while let Some(consumer) = names.next().await {
        let consumer = consumer.map_err(Error::nats)?;
        if let Some(name) = consumer
            .strip_prefix("fn_")
            .and_then(|n| n.parse::<FunctionName>().ok())
            && registry.get(&name).await?.is_none()
        {
            orphans.push(name);
        }
    }
    Ok(orphans)
}

/// Cancels the function's queued calls and deletes its consumer; returns how many calls were
/// cancelled. Stops early (leaving the consumer) if the function is deployed again.
pub async fn retire(
    queue: &Queue,
    registry: &Registry,
    name: &FunctionName,
    shutdown: &CancellationToken,
) -> Result<u64, Error> {
    let consumer = match queue.function_consumer(name).await {
        Ok(c) => c,
        Err(_) => return Ok(0),
    };
    let mut cancelled = 0;
    loop {
        if shutdown.is_cancelled() || registry.get(name).await?.is_some() {
            return Ok(cancelled);
        }
        let mut batch = consumer
            .fetch()
            .max_messages(256)
            .expires(Duration::from_millis(500))
            .messages()
            .await
            .map_err(Error::nats)?;
        let mut seen = 0;
        while let Some(message) = batch.next().await {
            let message = message.map_err(Error::nats)?;
            seen += 1;
            let attempt = message.info().map(|i| i.delivered as u32).unwrap_or(1);
            let Ok((meta, _)) = invocation::decode(&message.payload) else {
                let _ = message.ack_with(AckKind::Term).await;
                continue;
            };
            let meta: CallMeta = meta;
            let error = format!("function {name} was removed before the call ran");
            let finished = crate::worker::finished(
                &meta,
                attempt.saturating_sub(1),
                None,
                FinalStatus::Cancelled,
                503,
                error,
            );
            queue
                .publish_event(Event::Finished(Box::new(finished)), Bytes::new())
                .await?;
            let _ = message.ack_with(AckKind::Term).await;
            cancelled += 1;
        }
        if seen == 0 {
            let info = queue
                .stream()
                .await?
                .consumer_info(queue.names.function_consumer(name))
                .await
                .map_err(Error::nats)?;
            if info.num_pending == 0 && info.num_ack_pending == 0 {
                break;
            }
            // Calls still held by stopping workers: they finish, or come back to us when their
            // lease runs out.
        }
    }
    if registry.get(name).await?.is_none() {
        queue.delete_function_consumer(name).await?;
    }
    Ok(cancelled)
}
