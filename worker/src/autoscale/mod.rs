//! The single-host autoscaler, in the control process: per deployed function, between
//! `com.openfaas.scale.min` and `max` worker processes sized from the backlog, to zero after
//! an idle period (see [`fjord_common::scale`] for the settings and [`sizing`] for the rule).
//!
//! It learns of calls two ways:
//! - **Wake-ups**: every publish of a call is followed by a body-less message on
//!   `<prefix>.wake.<function>` (core NATS). A function with no worker gets one at once, without
//!   waiting for a look at its queue; that is what keeps the cold start in milliseconds.
//! - **Queue figures**: every `interval`, and at most every [`REFRESH_AFTER_WAKE`] while
//!   wake-ups arrive, the function consumer's pending + in-flight counts size the pool.
//!
//! It answers [`ScaleRequest`]s on `<prefix>.autoscaler.<function>` (the gateway's
//! `POST /system/scale-function` and the `replicas` it shows). One control process per
//! installation spawns workers; on Kubernetes none does and KEDA scales the Deployments.

mod pool;
mod sizing;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::Message;
use fjord_common::queue::{Queue, QueueStats};
use fjord_common::registry::{Change, Registry};
use fjord_common::scale::{ScalePolicy, ScaleRequest, ScaleStatus};
use fjord_common::stack::FunctionSpec;
use fjord_common::{Error, FunctionName};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, warn};

use crate::metrics::ControlMetrics;

use pool::Pool;
pub use pool::WorkerCommand;
pub use sizing::Sizing;

/// While wake-ups arrive, the queue is looked at again after this long at most (a burst reaches
/// its worker count within a fraction of a second, not at the next interval).
pub const REFRESH_AFTER_WAKE: Duration = Duration::from_millis(100);

pub struct AutoscaleOptions {
    pub worker: WorkerCommand,
    /// How often every function's queue is looked at.
    pub interval: Duration,
    /// Where the cold starts that workers started from zero report are observed.
    pub metrics: Arc<ControlMetrics>,
}

/// One function the autoscaler keeps workers for.
struct Scaled {
    spec: FunctionSpec,
    sizing: Sizing,
    pool: Pool,
    /// Calls queued + running at the last look.
    load: u64,
    looked_at: Option<Instant>,
    looking: bool,
}

impl Scaled {
    fn status(&self, now: Instant) -> ScaleStatus {
        let health = self.pool.health();
        let policy = &self.sizing.policy;
        ScaleStatus {
            replicas: self.pool.replicas(),
            running: health.alive,
            manual: self.sizing.manual(),
            min: policy.min,
            max: policy.max,
            target: policy.target,
            scale_to_zero: policy.zero,
            idle_seconds: self.sizing.idle_for(now).map(|d| d.as_secs_f64()),
            crash_loop: health.crash_loop(),
            crashes: health.crashes,
            last_exit: health.last_exit,
        }
    }
}

/// The autoscaler's state and the work it hands out.
struct Autoscaler {
    queue: Queue,
    command: Arc<WorkerCommand>,
    functions: HashMap<FunctionName, Scaled>,
    looks: mpsc::UnboundedSender<(FunctionName, Result<QueueStats, Error>)>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

/// Runs until `shutdown` fires, then stops every worker and waits for them to drain.
pub async fn run(
    queue: Queue,
    options: AutoscaleOptions,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let registry = Registry::open(&queue).await?;
    let mut changes = registry.watch().await?;
    let mut wakes = queue
        .client
        .subscribe(queue.names.wakes())
        .await
        .map_err(Error::nats)?;
    let mut requests = queue
        .client
        .subscribe(queue.names.autoscaler_all())
        .await
        .map_err(Error::nats)?;
    let mut cold_starts = queue
        .client
        .subscribe(queue.names.cold_starts())
        .await
        .map_err(Error::nats)?;
    let (looks, mut looked) = mpsc::unbounded_channel();
    let mut scaler = Autoscaler {
        queue: queue.clone(),
        command: Arc::new(options.worker),
        functions: HashMap::new(),
        looks,
        tracker: TaskTracker::new(),
        shutdown: shutdown.clone(),
    };
    let mut tick = tokio::time::interval(options.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            change = changes.next() => match change {
                Some(Ok(change)) => scaler.apply(change),
                Some(Err(e)) => warn!(error = %e, "registry watch error"),
                None => {
                    warn!("registry watch ended; re-opening");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    changes = registry.watch().await?;
                }
            },
            Some(wake) = wakes.next() => scaler.wake(&wake),
            Some(request) = requests.next() => scaler.answer(request).await,
            Some(report) = cold_starts.next() => {
                let seconds = std::str::from_utf8(&report.payload).ok().and_then(|t| t.parse::<f64>().ok());
                if let (Some(function), Some(seconds)) = (function_of(&report.subject), seconds) {
                    options.metrics.cold_starts.observe(&[function.as_str()], seconds);
                }
            }
            Some((name, stats)) = looked.recv() => scaler.looked(name, stats),
            _ = tick.tick() => {
                let names: Vec<FunctionName> = scaler.functions.keys().cloned().collect();
                for name in names {
                    scaler.look(&name);
                }
            }
        }
    }
    for scaled in scaler.functions.values_mut() {
        scaled.pool.stop();
    }
    scaler.tracker.close();
    scaler.tracker.wait().await;
    Ok(())
}

impl Autoscaler {
    fn apply(&mut self, change: Change) {
        match change {
            Change::Deployed(spec) => {
                if self
                    .functions
                    .get(&spec.name)
                    .is_some_and(|s| s.spec == *spec)
                {
                    return;
                }
                let policy = match ScalePolicy::for_spec(&spec) {
                    Ok(p) => p,
                    Err(e) => {
                        error!(function = %spec.name, error = %e, "not starting workers");
                        return;
                    }
                };
                let name = spec.name.clone();
                // A redeploy replaces every worker (the old ones drain) with as many new ones,
                // so capacity does not dip; sizing goes on from there.
                let (sizing, replicas) = match self.functions.remove(&name) {
                    Some(mut old) => {
                        old.pool.stop();
                        (old.sizing.redeployed(policy), old.pool.replicas())
                    }
                    None => (Sizing::new(policy), 0),
                };
                let pool = Pool::new(name.clone(), self.command.clone());
                self.functions.insert(
                    name.clone(),
                    Scaled {
                        spec: *spec,
                        sizing,
                        pool,
                        load: 0,
                        looked_at: None,
                        looking: false,
                    },
                );
                if let Some(scaled) = self.functions.get_mut(&name) {
                    scaled
                        .pool
                        .resize(replicas, false, &self.tracker, &self.shutdown);
                }
                self.look(&name);
            }
            Change::Removed(name) => {
                if let Some(mut scaled) = self.functions.remove(&name) {
                    scaled.pool.stop();
                }
            }
        }
    }

    /// A call was published: a function without workers gets one now; the queue is looked at
    /// soon for the rest.
    fn wake(&mut self, message: &Message) {
        let Some(name) = function_of(&message.subject) else {
            return;
        };
        let Some(scaled) = self.functions.get_mut(&name) else {
            return;
        };
        let now = Instant::now();
        scaled.sizing.wake(now);
        if scaled.pool.replicas() == 0 {
            let wanted = scaled.sizing.decide(0, scaled.load.max(1), now);
            scaled
                .pool
                .resize(wanted, true, &self.tracker, &self.shutdown);
        }
        if scaled
            .looked_at
            .is_none_or(|t| now.duration_since(t) >= REFRESH_AFTER_WAKE)
        {
            self.look(&name);
        }
    }

    /// Reads the function's queue figures in the background ([`Self::looked`] gets them).
    fn look(&mut self, name: &FunctionName) {
        let Some(scaled) = self.functions.get_mut(name) else {
            return;
        };
        if scaled.looking {
            return;
        }
        scaled.looking = true;
        scaled.looked_at = Some(Instant::now());
        let (queue, looks, name) = (self.queue.clone(), self.looks.clone(), name.clone());
        tokio::spawn(async move {
            let stats = tokio::time::timeout(Duration::from_secs(5), queue.stats(&name))
                .await
                .unwrap_or_else(|_| Err(Error::Nats("queue figures timed out".into())));
            let _ = looks.send((name, stats));
        });
    }

    fn looked(&mut self, name: FunctionName, stats: Result<QueueStats, Error>) {
        let Some(scaled) = self.functions.get_mut(&name) else {
            return;
        };
        scaled.looking = false;
        match stats {
            Ok(stats) => scaled.load = stats.pending + stats.in_flight,
            // Without figures the pool is left as it is: never scaled down on a guess.
            Err(e) => {
                warn!(function = %name, error = %e, "cannot read the queue; not rescaling");
                return;
            }
        }
        let now = Instant::now();
        let wanted = scaled
            .sizing
            .decide(scaled.pool.replicas(), scaled.load, now);
        let waiting = scaled.load > 0;
        scaled
            .pool
            .resize(wanted, waiting, &self.tracker, &self.shutdown);
    }

    async fn answer(&mut self, request: Message) {
        let Some(reply) = request.reply.clone() else {
            return;
        };
        let asked = serde_json::from_slice::<ScaleRequest>(&request.payload);
        let mut answer = None;
        if let (Some(name), Ok(asked)) = (function_of(&request.subject), asked)
            && let Some(scaled) = self.functions.get_mut(&name)
        {
            let now = Instant::now();
            if let Some(replicas) = asked.replicas {
                // As asked, at once; a fresh look at the queue overrides it only if the backlog
                // needs more workers.
                scaled.sizing.set_manual(replicas, now);
                let wanted = replicas.min(scaled.sizing.policy.max);
                scaled
                    .pool
                    .resize(wanted, false, &self.tracker, &self.shutdown);
            }
            answer = Some(scaled.status(now));
            if asked.replicas.is_some() {
                self.look(&name);
            }
        }
        // `null` for a function this autoscaler does not know (yet): the gateway checks the
        // registry itself.
        let body = serde_json::to_vec(&answer).unwrap_or_else(|_| b"null".to_vec());
        let _ = self.queue.client.publish(reply, body.into()).await;
    }
}

/// The function a per-function subject (`<prefix>.<kind>.<function>`) names.
fn function_of(subject: &str) -> Option<FunctionName> {
    subject.rsplit('.').next()?.parse().ok()
}
