//! The local `nats-server`: `LocalNats`, which runs it with JetStream, and
//! `find_nats_server`, which finds its binary.

use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::process::{Child, Command};

use super::{
    ServiceError, append_log, exits_after_signal, find_in_path, free_port, is_executable, log_len,
    not_installed, port_taken, start_error, tcp_accepts, wait_ready,
};

const NATS_START_DEADLINE: Duration = Duration::from_secs(10);
const NATS_STOP_GRACE: Duration = Duration::from_secs(10);

/// A `nats-server` with JetStream on 127.0.0.1, owned by this process.
pub struct LocalNats {
    /// The running server; `None` after `kill` or `stop` until `restart`.
    child: Option<Child>,
    port: u16,
    /// The address it listens on (127.0.0.1 unless started with [`LocalNats::start_on`]).
    listen: IpAddr,
    store_dir: PathBuf,
    binary: PathBuf,
}

impl LocalNats {
    /// Starts nats-server with JetStream file storage in `store_dir` (created if missing) on
    /// 127.0.0.1:`port`, or on a free port when `port` is 0, and waits up to 10 s until it
    /// accepts connections. Logs go to `store_dir/nats.log`. Fails when nats-server is not
    /// installed, the port is taken, or the server exits or stays silent.
    pub async fn start(store_dir: &Path, port: u16) -> Result<Self, ServiceError> {
        Self::start_on(store_dir, port, IpAddr::V4(Ipv4Addr::LOCALHOST)).await
    }

    /// As [`LocalNats::start`], listening on `listen` (`0.0.0.0`: every interface, for clients
    /// on other hosts or network namespaces); [`LocalNats::url`] stays the loopback one.
    pub async fn start_on(
        store_dir: &Path,
        port: u16,
        listen: IpAddr,
    ) -> Result<Self, ServiceError> {
        let binary = find_nats_server().ok_or_else(|| not_installed("nats-server"))?;
        fs::create_dir_all(store_dir)?;
        let port = if port == 0 { free_port()? } else { port };
        let mut nats = LocalNats {
            child: None,
            port,
            listen,
            store_dir: std::path::absolute(store_dir)?,
            binary,
        };
        nats.spawn().await?;
        Ok(nats)
    }

    /// The client URL, for `NATS_URL`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port, fixed for the life of this handle so clients can reconnect.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's log file, worth printing when a test fails.
    pub fn log_path(&self) -> PathBuf {
        self.store_dir.join("nats.log")
    }

    /// Kills the server with SIGKILL, as a crash would, and reaps it. No-op when not running.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Stops the server if it still runs, then starts it again on the same port and store.
    /// Fails as `start` does.
    pub async fn restart(&mut self) -> Result<(), ServiceError> {
        self.stop().await;
        self.spawn().await
    }

    /// Asks the server to shut down (SIGTERM), waits up to 10 s, then kills it.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take()
            && !exits_after_signal(&mut child, Signal::SIGTERM, NATS_STOP_GRACE).await
        {
            tracing::warn!(port = self.port, "nats-server ignored SIGTERM; killing it");
            let _ = child.kill().await;
        }
    }

    async fn spawn(&mut self) -> Result<(), ServiceError> {
        let log = self.log_path();
        let since = log_len(&log);
        let port = self.port;
        if tcp_accepts(port).await {
            return Err(port_taken("nats-server", port));
        }
        let out = append_log(&log)?;
        let mut child = Command::new(&self.binary)
            .args([
                "-a",
                &self.listen.to_string(),
                "-p",
                &port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.store_dir)
            .arg("-l")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0)
            .kill_on_drop(true)
            .spawn()?;
        if let Err(reason) = wait_ready(&mut child, NATS_START_DEADLINE, || tcp_accepts(port)).await
        {
            let _ = child.kill().await;
            return Err(start_error("nats-server", reason, &log, since));
        }
        tracing::debug!(port, store_dir = %self.store_dir.display(), "nats-server started");
        self.child = Some(child);
        Ok(())
    }
}

/// Finds `nats-server` on PATH or in the usual install locations; `None` when not installed.
pub fn find_nats_server() -> Option<PathBuf> {
    find_in_path("nats-server").or_else(|| {
        [
            "/usr/sbin/nats-server",
            "/usr/local/bin/nats-server",
            "/usr/bin/nats-server",
        ]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| is_executable(p))
    })
}
