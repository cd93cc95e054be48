//! A local PgBouncer in transaction-pooling mode in front of a PostgreSQL server, as a
//! production installation would run it; the end-to-end tests use it to prove that Fjord works
//! through one (see `FJORD_PGBOUNCER` in the store).

use std::fs;
use std::os::unix::fs::chown;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::geteuid;
use tokio::process::{Child, Command};

use super::{
    ServiceError, append_log, exits_after_signal, find_in_path, free_port, log_len, not_installed,
    start_error, tcp_accepts, wait_ready,
};

const START_DEADLINE: Duration = Duration::from_secs(10);

/// A `pgbouncer` on 127.0.0.1, owned by this process; killed when dropped.
pub struct LocalPgBouncer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl LocalPgBouncer {
    /// Starts PgBouncer on a free port with its config and log in `dir`, pooling every
    /// database of the PostgreSQL server at 127.0.0.1:`upstream_port` in transaction mode with
    /// trust auth. As root it runs as the `postgres` user (PgBouncer refuses root).
    pub async fn start(dir: &Path, upstream_port: u16) -> Result<Self, ServiceError> {
        let binary = find_in_path("pgbouncer")
            .or_else(|| Some(PathBuf::from("/usr/sbin/pgbouncer")).filter(|p| p.exists()))
            .ok_or_else(|| not_installed("pgbouncer"))?;
        fs::create_dir_all(dir)?;
        let dir = std::path::absolute(dir)?;
        let port = free_port()?;
        fs::write(
            dir.join("userlist.txt"),
            "\"postgres\" \"\"\n\"root\" \"\"\n",
        )?;
        fs::write(
            dir.join("pgbouncer.ini"),
            format!(
                "[databases]\n* = host=127.0.0.1 port={upstream_port}\n\n[pgbouncer]\n\
                 listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
                 auth_type = trust\nauth_file = {dir}/userlist.txt\npool_mode = transaction\n\
                 ignore_startup_parameters = extra_float_digits\nmax_client_conn = 1000\n\
                 default_pool_size = 20\nlogfile = {dir}/pgbouncer.log\n\
                 pidfile = {dir}/pgbouncer.pid\n",
                dir = dir.display()
            ),
        )?;
        let mut command = Command::new(&binary);
        if geteuid().is_root() {
            let (uid, gid) = super::postgres::postgres_user()?;
            for entry in fs::read_dir(&dir)? {
                chown(entry?.path(), Some(uid.as_raw()), Some(gid.as_raw()))?;
            }
            chown(&dir, Some(uid.as_raw()), Some(gid.as_raw()))?;
            command.uid(uid.as_raw()).gid(gid.as_raw());
        }
        let log = dir.join("pgbouncer.log");
        let since = log_len(&log);
        let out = append_log(&dir.join("pgbouncer.out"))?;
        let mut child = command
            .arg(dir.join("pgbouncer.ini"))
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0)
            .kill_on_drop(true)
            .spawn()?;
        if let Err(reason) = wait_ready(&mut child, START_DEADLINE, || tcp_accepts(port)).await {
            let _ = child.kill().await;
            return Err(start_error("pgbouncer", reason, &log, since));
        }
        Ok(LocalPgBouncer {
            child: Some(child),
            port,
            dir,
        })
    }

    /// The URL of `database` through PgBouncer, as superuser `postgres`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("pgbouncer.log")
    }

    /// Asks PgBouncer to shut down and waits a moment for it.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take()
            && !exits_after_signal(&mut child, Signal::SIGINT, Duration::from_secs(5)).await
        {
            let _ = child.kill().await;
        }
    }
}
