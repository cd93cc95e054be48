//! The control process: runs the recorder, the retrier, the callback dispatcher, the retirement
//! of removed functions and, unless another system (KEDA) runs the workers, the autoscaler that
//! starts and stops each function's worker processes ([`crate::autoscale`]).

use std::sync::Arc;

use fjord_common::Error;
use fjord_common::functions::Functions;
use fjord_common::queue::Queue;
use fjord_common::store::Store;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use crate::autoscale::AutoscaleOptions;
use crate::dispatcher::{self, DispatchConfig};
use crate::metrics::ControlMetrics;

pub struct ControlOptions {
    /// Start and scale worker processes; `None` when another system, such as KEDA, runs them.
    pub autoscale: Option<AutoscaleOptions>,
    pub dispatch: DispatchConfig,
    /// What this process counts (the autoscaler's cold starts too).
    pub metrics: Arc<ControlMetrics>,
    /// Where `/metrics` is served, if anywhere.
    pub metrics_listener: Option<tokio::net::TcpListener>,
}

pub async fn run(
    queue: Queue,
    store: Store,
    options: ControlOptions,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    // The recorder stops only after the workers have exited, so the outcomes they publish while
    // draining are recorded by this process rather than left for the next one; the dispatcher
    // stops after the recorder, so it takes every callback the recorder hands over.
    let dispatcher_stop = CancellationToken::new();
    let functions = Functions::follow(&queue, dispatcher_stop.clone()).await?;
    let (dispatcher, handoff) = dispatcher::new(
        store.clone(),
        functions.clone(),
        options.dispatch.clone(),
        options.metrics.clone(),
    )?;
    let dispatcher = tokio::spawn(dispatcher.run(dispatcher_stop.clone()));
    let recorder_stop = CancellationToken::new();
    let recorder = tokio::spawn(crate::recorder::run(
        queue.clone(),
        store.clone(),
        Some(handoff),
        options.metrics.clone(),
        recorder_stop.clone(),
    ));
    let retire = tokio::spawn(crate::retire::run(queue.clone(), shutdown.clone()));
    tokio::spawn(crate::sampler::run(
        queue.clone(),
        store.clone(),
        functions.clone(),
        crate::sampler::EVERY,
        shutdown.clone(),
    ));
    let retrier = tokio::spawn(crate::retrier::run(
        queue.clone(),
        store.clone(),
        functions,
        shutdown.clone(),
    ));
    if let Some(listener) = options.metrics_listener {
        let (queue, metrics, stop) = (queue.clone(), options.metrics.clone(), shutdown.clone());
        tokio::spawn(async move {
            if let Err(e) = crate::metrics::serve(listener, queue, metrics, stop).await {
                error!(error = %e, "serving /metrics stopped");
            }
        });
    }
    match options.autoscale {
        Some(autoscale) => {
            if let Err(e) = crate::autoscale::run(queue.clone(), autoscale, shutdown.clone()).await
            {
                error!(error = %e, "the autoscaler stopped");
                shutdown.cancelled().await;
            }
        }
        None => shutdown.cancelled().await,
    }
    if let Ok(Err(e)) = retire.await {
        warn!(error = %e, "retiring removed functions stopped");
    }
    if let Ok(Err(e)) = retrier.await {
        warn!(error = %e, "the retrier stopped");
    }
    recorder_stop.cancel();
    let recorded = match recorder.await {
        Ok(result) => result,
        Err(e) => Err(Error::Nats(format!("recorder task failed: {e}"))),
    };
    dispatcher_stop.cancel();
    let _ = dispatcher.await;
    recorded
}
