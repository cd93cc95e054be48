//! Local `nats-server` and PostgreSQL processes that Fjord runs itself: `fjord up` starts them
//! when nothing answers at the configured URLs, keeping their data in a directory reused across
//! runs, and the end-to-end harness starts its own so it can kill and restart them mid-test.
//! This module also finds the binaries and installs them with apt when they are missing.
//!
//! Each server runs in its own process group, so a Ctrl-C at the terminal reaches only the
//! parent, which then stops the servers in its own order. A server is killed when its handle is
//! dropped. Server output goes to log files next to the data, never to the parent's terminal.
//! Only Linux is supported: killing PostgreSQL's process tree reads `/proc`.
//!
//! `nats` owns `LocalNats`, `postgres` owns `LocalPostgres` and the root handling it needs,
//! and `install` owns the apt-get fallback; this file holds the error type and the helpers
//! they share: picking a free port, polling for readiness, signalling a child, reading a log.

use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::io::{self, Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::net::TcpStream;
use tokio::process::Child;
use tokio::time::{Instant, sleep, timeout};

mod install;
mod nats;
mod pgbouncer;
mod postgres;

pub use install::{install, install_command};
pub use nats::{LocalNats, find_nats_server};
pub use pgbouncer::LocalPgBouncer;
pub use postgres::{Durability, LocalPostgres, find_postgres_bin_dir};

const POLL: Duration = Duration::from_millis(25);
const LOG_TAIL_LINES: usize = 20;

/// Why a local server could not be provided.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The binary is missing; `hint` says how to install it.
    #[error("{what} is not installed: {hint}")]
    NotInstalled { what: String, hint: String },
    /// The server was found but did not come up; `message` ends with the tail of its log.
    #[error("{what} did not start: {message}")]
    Start { what: String, message: String },
    /// Creating directories or log files, or spawning a process, failed.
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
}

fn not_installed(package: &str) -> ServiceError {
    ServiceError::NotInstalled {
        what: package.to_owned(),
        hint: format!("install it with `{}`", install_command(package)),
    }
}

fn port_taken(what: &str, port: u16) -> ServiceError {
    ServiceError::Start {
        what: what.to_owned(),
        message: format!("127.0.0.1:{port} is already in use"),
    }
}

fn start_error(what: &str, reason: String, log: &Path, since: u64) -> ServiceError {
    let tail = log_tail(log, since);
    let message = if tail.is_empty() {
        reason
    } else {
        format!("{reason}; end of {}:\n{tail}", log.display())
    };
    ServiceError::Start {
        what: what.to_owned(),
        message,
    }
}

/// Polls `ready` until it holds, the child exits, or `deadline` passes.
async fn wait_ready<F, Fut>(
    child: &mut Child,
    deadline: Duration,
    mut ready: F,
) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let until = Instant::now() + deadline;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Err(format!("it exited with {status}")),
            Ok(None) => {}
            Err(e) => return Err(format!("waiting for it failed: {e}")),
        }
        if ready().await {
            return Ok(());
        }
        if Instant::now() >= until {
            return Err(format!("it was not ready within {} s", deadline.as_secs()));
        }
        sleep(POLL).await;
    }
}

/// Sends `signal` and waits up to `grace` for the child to exit; false when it did not.
async fn exits_after_signal(child: &mut Child, signal: Signal, grace: Duration) -> bool {
    if let Some(pid) = child_pid(child) {
        let _ = kill(pid, signal);
    }
    timeout(grace, child.wait()).await.is_ok()
}

/// The pid of a child not yet reaped (after reaping, the pid may belong to someone else).
fn child_pid(child: &Child) -> Option<Pid> {
    child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map(Pid::from_raw)
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

/// The PATH function processes (and dependency installers) get: the worker's own PATH is not
/// passed on, so what functions run must be installed system-wide.
pub const FUNCTION_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Makes sure `program` is on [`FUNCTION_PATH`], installing `package` with apt-get when it is
/// not (as root; otherwise the error says what to run).
pub async fn ensure_program(program: &str, package: &str) -> Result<(), ServiceError> {
    let present = || {
        std::env::split_paths(FUNCTION_PATH)
            .map(|dir| dir.join(program))
            .any(|p| is_executable(&p))
    };
    if present() {
        return Ok(());
    }
    install(package).await?;
    if present() {
        Ok(())
    } else {
        Err(ServiceError::NotInstalled {
            what: program.to_owned(),
            hint: format!("{package} installed no {program} on {FUNCTION_PATH}"),
        })
    }
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Binds 127.0.0.1:0 and releases it; another process could take the port before we use it.
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

async fn tcp_accepts(port: u16) -> bool {
    let connect = TcpStream::connect((Ipv4Addr::LOCALHOST, port));
    matches!(timeout(Duration::from_secs(1), connect).await, Ok(Ok(_)))
}

fn append_log(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

fn log_len(path: &Path) -> u64 {
    fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The last lines written to `path` since byte `since`, or "" when there are none.
fn log_tail(path: &Path, since: u64) -> String {
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let from = since.max(log_len(path).saturating_sub(16 * 1024));
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(from)).is_err() || file.read_to_end(&mut bytes).is_err() {
        return String::new();
    }
    last_lines(&String::from_utf8_lossy(&bytes))
}

fn last_lines(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Connection;
    use std::time::{SystemTime, UNIX_EPOCH};

    async fn stream_messages(url: &str) -> u64 {
        let client = async_nats::connect(url).await.expect("connecting to NATS");
        let js = async_nats::jetstream::new(client);
        let mut stream = js.get_stream("SERVICES_TEST").await.expect("stream");
        stream.info().await.expect("stream info").state.messages
    }

    async fn rows(url: &str) -> i64 {
        let mut conn = sqlx::PgConnection::connect(url).await.expect("connecting");
        sqlx::query_scalar("SELECT count(*) FROM kept")
            .fetch_one(&mut conn)
            .await
            .expect("counting rows")
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn servers_keep_their_data_across_kill_and_restart() {
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir =
            std::env::temp_dir().join(format!("fjord-services-{}-{stamp}", std::process::id()));
        let mut nats = LocalNats::start(&dir.join("nats"), 0)
            .await
            .expect("starting NATS");
        let mut pg = LocalPostgres::start_with(&dir.join("postgres"), 0, Durability::Fast)
            .await
            .expect("starting PostgreSQL");
        assert!(tcp_accepts(nats.port()).await);
        assert!(tcp_accepts(pg.port()).await);

        let client = async_nats::connect(nats.url())
            .await
            .expect("connecting to NATS");
        let js = async_nats::jetstream::new(client);
        js.create_stream(async_nats::jetstream::stream::Config {
            name: "SERVICES_TEST".to_owned(),
            subjects: vec!["services.test".to_owned()],
            ..Default::default()
        })
        .await
        .expect("creating a stream");
        js.publish("services.test", "kept".into())
            .await
            .expect("publishing")
            .await
            .expect("publish ack");
        drop(js);

        let mut conn = sqlx::PgConnection::connect(&pg.url("postgres"))
            .await
            .expect("connecting");
        for statement in ["CREATE TABLE kept (v int)", "INSERT INTO kept VALUES (1)"] {
            sqlx::query(statement)
                .execute(&mut conn)
                .await
                .expect("writing a row");
        }
        drop(conn);

        nats.kill().await;
        assert!(
            !tcp_accepts(nats.port()).await,
            "NATS still answers after kill"
        );
        nats.restart().await.expect("restarting NATS");
        assert_eq!(stream_messages(&nats.url()).await, 1);

        pg.kill().await;
        assert!(
            !tcp_accepts(pg.port()).await,
            "PostgreSQL still answers after kill"
        );
        pg.restart().await.expect("restarting PostgreSQL");
        assert_eq!(rows(&pg.url("postgres")).await, 1);

        nats.stop().await;
        pg.stop().await;
        assert!(
            !tcp_accepts(nats.port()).await,
            "NATS still answers after stop"
        );
        assert!(
            !tcp_accepts(pg.port()).await,
            "PostgreSQL still answers after stop"
        );
        fs::remove_dir_all(&dir).expect("removing the test directory");
    }
}
