//! The control process: runs the recorder, the retrier and the callback dispatcher, and keeps each deployed
//! function's worker processes running (`com.openfaas.scale.min`, at least one), restarting crashed ones with backoff. It
//! watches the registry, so deploying, updating or removing a function takes effect at once.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use fjord_common::functions::Functions;
use fjord_common::queue::Queue;
use fjord_common::registry::{Change, Registry};
use fjord_common::stack::FunctionSpec;
use fjord_common::store::Store;
use fjord_common::{Error, FunctionName};
use futures::StreamExt;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::dispatcher::{self, DispatchConfig};

pub struct ControlOptions {
    /// The `fjord-worker` executable to start workers with.
    pub worker_exe: PathBuf,
    /// Start worker processes (off when another system, such as KEDA, runs them).
    pub spawn_workers: bool,
    /// How long a worker may take to drain after SIGTERM before it is killed.
    pub stop_timeout: Duration,
    pub dispatch: DispatchConfig,
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
    let (dispatcher, handoff) =
        dispatcher::new(store.clone(), functions.clone(), options.dispatch.clone())?;
    let dispatcher = tokio::spawn(dispatcher.run(dispatcher_stop.clone()));
    let recorder_stop = CancellationToken::new();
    let recorder = tokio::spawn(crate::recorder::run(
        queue.clone(),
        store.clone(),
        Some(handoff),
        recorder_stop.clone(),
    ));
    let retire = tokio::spawn(crate::retire::run(queue.clone(), shutdown.clone()));
    let retrier = tokio::spawn(crate::retrier::run(
        queue.clone(),
        store.clone(),
        functions,
        shutdown.clone(),
    ));
    let workers = TaskTracker::new();
    if options.spawn_workers {
        supervise(&queue, &options, &workers, &shutdown).await?;
    }
    workers.close();
    shutdown.cancelled().await;
    workers.wait().await;
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

/// Watches the registry and keeps one supervising task per function.
async fn supervise(
    queue: &Queue,
    options: &ControlOptions,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) -> Result<(), Error> {
    let registry = Registry::open(queue).await?;
    let mut changes = registry.watch().await?;
    // Per function: the spec it runs and the token that stops its workers.
    let mut running: HashMap<FunctionName, (FunctionSpec, CancellationToken)> = HashMap::new();
    loop {
        let change = tokio::select! {
            change = changes.next() => change,
            _ = shutdown.cancelled() => return Ok(()),
        };
        let change = match change {
            Some(Ok(change)) => change,
            Some(Err(e)) => {
                warn!(error = %e, "registry watch error");
                continue;
            }
            None => {
                warn!("registry watch ended; re-opening");
                changes = registry.watch().await?;
                continue;
            }
        };
        match change {
            Change::Deployed(spec) => {
                if running
                    .get(&spec.name)
                    .is_some_and(|(s, _)| s == spec.as_ref())
                {
                    continue;
                }
                if let Some((_, stop)) = running.remove(&spec.name) {
                    stop.cancel();
                }
                let replicas = match spec.scale_min() {
                    Ok(n) => n.max(1),
                    Err(e) => {
                        error!(function = %spec.name, error = %e, "not starting workers");
                        continue;
                    }
                };
                let stop = shutdown.child_token();
                for replica in 0..replicas {
                    tracker.spawn(keep_running(
                        spec.name.clone(),
                        replica,
                        options.worker_exe.clone(),
                        options.stop_timeout,
                        stop.clone(),
                    ));
                }
                info!(function = %spec.name, replicas, "workers scheduled");
                running.insert(spec.name.clone(), (*spec, stop));
            }
            Change::Removed(name) => {
                if let Some((_, stop)) = running.remove(&name) {
                    info!(function = %name, "function removed; stopping its workers");
                    stop.cancel();
                }
            }
        }
    }
}

/// Keeps one worker process alive until `stop` fires; crashes restart with exponential backoff
/// (reset after a minute of uptime).
async fn keep_running(
    function: FunctionName,
    replica: u32,
    exe: PathBuf,
    stop_timeout: Duration,
    stop: CancellationToken,
) {
    let mut backoff = Duration::from_millis(250);
    loop {
        let started = Instant::now();
        let mut child = match Command::new(&exe)
            .args(["run", "--function", function.as_str()])
            .kill_on_drop(true)
            .spawn()
        {
            Ok(child) => child,
            Err(e) => {
                error!(function = %function, error = %e, exe = %exe.display(), "cannot start a worker");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => continue,
                    _ = stop.cancelled() => return,
                }
            }
        };
        tokio::select! {
            status = child.wait() => {
                if status.as_ref().is_ok_and(|s| s.success()) {
                    // A clean exit: the worker saw its definition change and drained; start
                    // one with the current definition at once.
                    info!(function = %function, replica, "worker exited cleanly; restarting");
                    continue;
                }
                if started.elapsed() > Duration::from_secs(60) {
                    backoff = Duration::from_millis(250);
                }
                warn!(function = %function, replica, status = ?status.ok(), restart_in_ms = backoff.as_millis() as u64, "worker exited");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
            _ = stop.cancelled() => {
                terminate(&mut child, stop_timeout).await;
                return;
            }
        }
    }
}

/// SIGTERM, then SIGKILL if the child has not exited within `timeout`.
pub async fn terminate(child: &mut Child, timeout: Duration) {
    if let Some(pid) = child.id() {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    }
    if tokio::time::timeout(timeout, child.wait()).await.is_err() {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
}
