//! One function's worker processes: `fjord-worker run --function NAME` children, one per
//! replica slot. A slot keeps its process running: a crash is restarted after a backoff that
//! doubles up to 30 s, so a worker that cannot start costs a process start every 30 s rather
//! than a CPU; three quick crashes in a row mark the function as crash-looping until a worker
//! stays up. Removing a slot sends SIGTERM: the worker stops pulling, finishes its running calls
//! within its drain grace, and exits.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fjord_common::FunctionName;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

/// How a worker process is started.
#[derive(Clone, Debug)]
pub struct WorkerCommand {
    /// The `fjord-worker` executable.
    pub exe: PathBuf,
    /// Environment the worker gets on top of the control process's own (its NATS settings).
    pub env: Vec<(String, String)>,
    /// How long a worker may take to drain after SIGTERM before it is killed.
    pub stop_timeout: Duration,
}

/// A worker that lived at least this long was not crash-looping: its backoff starts over.
const STEADY_UPTIME: Duration = Duration::from_secs(30);
/// Quick crashes in a row that make a crash loop.
const CRASH_LOOP_AFTER: u32 = 3;
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How the function's workers fare, shared by its slots.
#[derive(Clone, Debug, Default)]
pub struct Health {
    /// Processes alive now, draining ones included.
    pub alive: u32,
    /// Exits nobody asked for.
    pub crashes: u64,
    /// Quick crashes since a worker last stayed up.
    pub quick_crashes: u32,
    pub last_exit: Option<String>,
}

impl Health {
    pub fn crash_loop(&self) -> bool {
        self.quick_crashes >= CRASH_LOOP_AFTER
    }
}

pub struct Pool {
    function: FunctionName,
    command: Arc<WorkerCommand>,
    slots: Vec<CancellationToken>,
    health: Arc<Mutex<Health>>,
}

impl Pool {
    pub fn new(function: FunctionName, command: Arc<WorkerCommand>) -> Self {
        Pool {
            function,
            command,
            slots: Vec::new(),
            health: Arc::default(),
        }
    }

    /// Replica slots (workers wanted and not told to stop).
    pub fn replicas(&self) -> u32 {
        self.slots.len() as u32
    }

    pub fn health(&self) -> Health {
        self.health.lock().expect("health lock").clone()
    }

    /// Starts or stops workers until `replicas` slots remain; the newest stop first. `waiting`:
    /// calls are queued, so a worker started while none runs is a cold start for them.
    pub fn resize(
        &mut self,
        replicas: u32,
        waiting: bool,
        tracker: &TaskTracker,
        shutdown: &CancellationToken,
    ) {
        let before = self.replicas();
        while self.replicas() < replicas {
            let stop = shutdown.child_token();
            // The first worker of a function that had none reports its first call's cold start.
            let cold = waiting && self.replicas() == 0 && self.health().alive == 0;
            tracker.spawn(keep_running(
                self.function.clone(),
                self.command.clone(),
                self.health.clone(),
                cold,
                stop.clone(),
            ));
            self.slots.push(stop);
        }
        while self.replicas() > replicas {
            if let Some(stop) = self.slots.pop() {
                stop.cancel();
            }
        }
        if before != replicas {
            info!(function = %self.function, from = before, to = replicas, "scaled");
        }
    }

    /// Stops every worker (the function was removed or redeployed).
    pub fn stop(&mut self) {
        for stop in self.slots.drain(..) {
            stop.cancel();
        }
    }
}

/// Keeps one worker process alive until `stop` fires.
async fn keep_running(
    function: FunctionName,
    command: Arc<WorkerCommand>,
    health: Arc<Mutex<Health>>,
    mut cold: bool,
    stop: CancellationToken,
) {
    let mut backoff = FIRST_BACKOFF;
    while !stop.is_cancelled() {
        let started = Instant::now();
        let mut command_line = Command::new(&command.exe);
        command_line.args(["run", "--function", function.as_str()]);
        if std::mem::take(&mut cold) {
            command_line.arg("--cold-start");
        }
        let mut child = match command_line
            .envs(command.env.iter().map(|(k, v)| (k, v)))
            .kill_on_drop(true)
            .spawn()
        {
            Ok(child) => child,
            Err(e) => {
                error!(function = %function, error = %e, exe = %command.exe.display(), "cannot start a worker");
                note_exit(&health, format!("cannot start: {e}"), false, true);
                tokio::select! {
                    _ = tokio::time::sleep(MAX_BACKOFF) => continue,
                    _ = stop.cancelled() => return,
                }
            }
        };
        health.lock().expect("health lock").alive += 1;
        // A worker that stays up ends a crash loop while it runs, not only once it exits.
        let steady_timer = tokio::time::sleep(STEADY_UPTIME);
        tokio::pin!(steady_timer);
        let mut steady_seen = false;
        let status = loop {
            tokio::select! {
                status = child.wait() => break status,
                _ = &mut steady_timer, if !steady_seen => {
                    steady_seen = true;
                    health.lock().expect("health lock").quick_crashes = 0;
                }
                _ = stop.cancelled() => {
                    terminate(&mut child, command.stop_timeout).await;
                    health.lock().expect("health lock").alive -= 1;
                    return;
                }
            }
        };
        health.lock().expect("health lock").alive -= 1;
        let uptime = started.elapsed();
        let steady = uptime >= STEADY_UPTIME;
        if steady {
            backoff = FIRST_BACKOFF;
        }
        let clean = status.as_ref().is_ok_and(|s| s.success());
        let described = match &status {
            Ok(s) => s.to_string(),
            Err(e) => e.to_string(),
        };
        // A clean exit is a worker that saw its definition change and drained: start one with
        // the current definition at once, unless it keeps doing so.
        note_exit(&health, described.clone(), clean, !steady);
        if clean && uptime > Duration::from_secs(1) {
            info!(function = %function, "worker exited cleanly; restarting");
            continue;
        }
        warn!(function = %function, status = %described, restart_in_ms = backoff.as_millis() as u64, "worker exited");
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.cancelled() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

fn note_exit(health: &Mutex<Health>, status: String, clean: bool, quick: bool) {
    let mut health = health.lock().expect("health lock");
    if clean {
        return;
    }
    health.crashes += 1;
    health.quick_crashes = if quick { health.quick_crashes + 1 } else { 0 };
    health.last_exit = Some(status);
}

/// SIGTERM, then SIGKILL if the child has not exited within `timeout`.
async fn terminate(child: &mut Child, timeout: Duration) {
    if let Some(pid) = child.id() {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    }
    if tokio::time::timeout(timeout, child.wait()).await.is_err() {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
}
