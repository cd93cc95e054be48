//! Samples every function's queue depth into PostgreSQL for the dashboard's charts, so they
//! survive restarts and agree across gateways. Several control processes may run it: each
//! sample time is written once.

use std::time::Duration;

use fjord_common::functions::Functions;
use fjord_common::queue::Queue;
use fjord_common::store::Store;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// How often the control process samples.
pub const EVERY: Duration = Duration::from_secs(5);

pub async fn run(
    queue: Queue,
    store: Store,
    functions: Functions,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let specs = functions.list();
        let stats = futures::future::join_all(specs.iter().map(|s| queue.stats(&s.name))).await;
        let rows: Vec<(String, u64, u64)> = specs
            .iter()
            .zip(stats)
            .filter_map(|(spec, stats)| {
                let stats = stats.ok()?;
                Some((spec.name.to_string(), stats.pending, stats.in_flight))
            })
            .collect();
        if rows.is_empty() {
            continue;
        }
        let step = every.as_secs().max(1) as u32;
        if let Err(e) = store.write_samples(&rows, step).await {
            warn!(error = %e, "could not write queue samples");
        }
    }
}
