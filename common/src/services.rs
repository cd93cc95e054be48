//! Local `nats-server` and PostgreSQL processes that Fjord runs itself: `fjord up` starts them
//! when nothing answers at the configured URLs, keeping their data in a directory reused across
//! runs, and the end-to-end harness starts its own so it can kill and restart them mid-test.
//! This module also finds the binaries and installs them with apt when they are missing.
//!
//! Each server runs in its own process group, so a Ctrl-C at the terminal reaches only the
//! parent, which then stops the servers in its own order. A server is killed when its handle is
//! dropped. Server output goes to log files next to the data, never to the parent's terminal.
//! Only Linux is supported: killing PostgreSQL's process tree reads `/proc`.

use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::io::{self, Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt, chown};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::{Gid, Pid, Uid, User, geteuid};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::{Instant, sleep, timeout};

const POLL: Duration = Duration::from_millis(25);
const NATS_START_DEADLINE: Duration = Duration::from_secs(10);
const NATS_STOP_GRACE: Duration = Duration::from_secs(10);
const PG_START_DEADLINE: Duration = Duration::from_secs(30);
const PG_STOP_GRACE: Duration = Duration::from_secs(15);
const REAP_DEADLINE: Duration = Duration::from_secs(5);
const LOG_TAIL_LINES: usize = 20;
/// `sun_path` holds 108 bytes including the terminating NUL.
const UNIX_SOCKET_PATH_MAX: usize = 107;

/// Why a local server could not be provided.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The binary is missing; `hint` says how to install it.
    #[error("{what} is not installed: {hint}")]
    NotInstalled { what: String, hint: String },
    /// The server was found but did not come up; `message` ends with the tail of its log.
    #[error("{what} did not start: {message}")]
    Start { what: String, message: String },
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
}

/// A `nats-server` with JetStream on 127.0.0.1, owned by this process.
pub struct LocalNats {
    /// The running server; `None` after `kill` or `stop` until `restart`.
    child: Option<Child>,
    port: u16,
    store_dir: PathBuf,
    binary: PathBuf,
}

impl LocalNats {
    /// Starts nats-server with JetStream file storage in `store_dir` (created if missing) on
    /// 127.0.0.1:`port`, or on a free port when `port` is 0, and waits up to 10 s until it
    /// accepts connections. Logs go to `store_dir/nats.log`. Fails when nats-server is not
    /// installed, the port is taken, or the server exits or stays silent.
    pub async fn start(store_dir: &Path, port: u16) -> Result<Self, ServiceError> {
        let binary = find_nats_server().ok_or_else(|| not_installed("nats-server"))?;
        fs::create_dir_all(store_dir)?;
        let port = if port == 0 { free_port()? } else { port };
        let mut nats = LocalNats {
            child: None,
            port,
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
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
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

/// How much a local PostgreSQL trades crash safety for speed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// fsync on: committed data survives power loss. For data kept across `fjord up` runs.
    #[default]
    Safe,
    /// fsync off and initdb without syncing: committed data survives a killed server (the
    /// kernel still holds the writes) but not an OS crash. For tests.
    Fast,
}

/// A PostgreSQL server on 127.0.0.1 with trust authentication, owned by this process.
///
/// When running as root the server runs as the `postgres` system user, which must be able to
/// traverse every parent of the data directory: a data directory under a 0700 home such as
/// `/root` fails with an error saying which directory blocks it. The log is written next to
/// the data directory, as `<data dir>.log` (e.g. `.fjord/postgres.log` for `.fjord/postgres`),
/// because initdb wants an empty directory. The Unix socket lives in the data directory, or is
/// left out when that path is too long for a socket address.
pub struct LocalPostgres {
    /// The postmaster; `None` after `kill` or `stop` until `restart`.
    child: Option<Child>,
    port: u16,
    data_dir: PathBuf,
    bin_dir: PathBuf,
    durability: Durability,
    /// Whom to run as: `Some` when we are root, since PostgreSQL refuses to run as root.
    run_as: Option<(Uid, Gid)>,
}

impl LocalPostgres {
    /// `start_with` at `Durability::Safe`.
    pub async fn start(data_dir: &Path, port: u16) -> Result<Self, ServiceError> {
        Self::start_with(data_dir, port, Durability::Safe).await
    }

    /// Runs initdb (trust auth, superuser `postgres`, UTF8, C locale) when `data_dir` has no
    /// `PG_VERSION`, then starts the server on 127.0.0.1:`port`, or on a free port when `port`
    /// is 0, and waits up to 30 s until it answers a startup request. Fails when PostgreSQL is
    /// not installed, the `postgres` user is missing or cannot reach `data_dir` (as root), the
    /// port is taken, or initdb or the server fails; the error then ends with the log's tail.
    pub async fn start_with(
        data_dir: &Path,
        port: u16,
        durability: Durability,
    ) -> Result<Self, ServiceError> {
        let bin_dir = find_postgres_bin_dir().ok_or_else(|| not_installed("postgresql"))?;
        let data_dir = std::path::absolute(data_dir)?;
        if data_dir.file_name().is_none() {
            return Err(pg_error(format!(
                "{} cannot be a data directory",
                data_dir.display()
            )));
        }
        let run_as = if geteuid().is_root() {
            Some(postgres_user()?)
        } else {
            None
        };
        prepare_data_dir(&data_dir, run_as)?;
        let port = if port == 0 { free_port()? } else { port };
        let mut pg = LocalPostgres {
            child: None,
            port,
            data_dir,
            bin_dir,
            durability,
            run_as,
        };
        if !pg.data_dir.join("PG_VERSION").exists() {
            pg.initdb().await?;
        }
        pg.spawn().await?;
        Ok(pg)
    }

    /// The URL of `database` as superuser `postgres`, for `DATABASE_URL`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// The TCP port, fixed for the life of this handle so clients can reconnect.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's log file (initdb's output too), worth printing when a test fails.
    pub fn log_path(&self) -> PathBuf {
        let mut name = self.data_dir.file_name().unwrap_or_default().to_owned();
        name.push(".log");
        self.data_dir.with_file_name(name)
    }

    /// Requests a fast shutdown (SIGINT: running transactions roll back), waits up to 15 s,
    /// then kills the server. No-op when not running.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take()
            && !exits_after_signal(&mut child, Signal::SIGINT, PG_STOP_GRACE).await
        {
            tracing::warn!(port = self.port, "PostgreSQL ignored SIGINT; killing it");
            kill_postgres(&mut child).await;
        }
    }

    /// Kills the postmaster and its children with SIGKILL, as a crash would, and waits until
    /// they are gone so that a restart finds no server attached to the old shared memory.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_postgres(&mut child).await;
        }
    }

    /// Stops the server if it still runs, then starts it again on the same port and data
    /// directory; after `kill` it runs crash recovery first. Fails as `start` does.
    pub async fn restart(&mut self) -> Result<(), ServiceError> {
        self.stop().await;
        self.spawn().await
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin_dir.join(program));
        cmd.current_dir("/").stdin(Stdio::null());
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid.as_raw()).gid(gid.as_raw());
        }
        cmd
    }

    async fn initdb(&self) -> Result<(), ServiceError> {
        let log = self.log_path();
        let since = log_len(&log);
        let out = append_log(&log)?;
        let mut cmd = self.command("initdb");
        cmd.arg("-D")
            .arg(&self.data_dir)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-locale",
            ])
            .stdout(out.try_clone()?)
            .stderr(out);
        if self.durability == Durability::Fast {
            cmd.arg("--no-sync");
        }
        let status = cmd.status().await?;
        if !status.success() {
            let reason = format!("initdb exited with {status}");
            return Err(start_error("PostgreSQL", reason, &log, since));
        }
        Ok(())
    }

    async fn spawn(&mut self) -> Result<(), ServiceError> {
        let log = self.log_path();
        let since = log_len(&log);
        let port = self.port;
        if tcp_accepts(port).await {
            return Err(port_taken("PostgreSQL", port));
        }
        let socket_dir = self.data_dir.as_os_str();
        let socket_fits = socket_dir.len() + "/.s.PGSQL.65535".len() <= UNIX_SOCKET_PATH_MAX;
        let fsync = match self.durability {
            Durability::Safe => "fsync=on",
            Durability::Fast => "fsync=off",
        };
        let out = append_log(&log)?;
        let mut child = self
            .command("postgres")
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-p", &port.to_string(), "-k"])
            .arg(if socket_fits { socket_dir } else { "".as_ref() })
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "logging_collector=off", "-c", fsync])
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0)
            .kill_on_drop(true)
            .spawn()?;
        let ready = wait_ready(&mut child, PG_START_DEADLINE, || async move {
            tcp_accepts(port).await && pg_accepts_queries(port).await
        })
        .await;
        if let Err(reason) = ready {
            kill_postgres(&mut child).await;
            return Err(start_error("PostgreSQL", reason, &log, since));
        }
        tracing::debug!(port, data_dir = %self.data_dir.display(), "PostgreSQL started");
        self.child = Some(child);
        Ok(())
    }
}

impl Drop for LocalPostgres {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            signal_postgres_tree(child);
        }
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

/// Finds the directory holding `postgres` and `initdb`: the highest version under
/// `/usr/lib/postgresql/*/bin` (Debian keeps them off PATH), else PATH; `None` when not
/// installed.
pub fn find_postgres_bin_dir() -> Option<PathBuf> {
    let is_bin_dir =
        |dir: &Path| is_executable(&dir.join("postgres")) && is_executable(&dir.join("initdb"));
    let versioned = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version: Vec<u32> = entry
                .file_name()
                .to_str()?
                .split('.')
                .map(|part| part.parse().ok())
                .collect::<Option<_>>()?;
            let bin = entry.path().join("bin");
            is_bin_dir(&bin).then_some((version, bin))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, bin)| bin);
    versioned.or_else(|| {
        find_in_path("postgres")
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .filter(|dir| is_bin_dir(dir))
    })
}

/// The command a user runs to install `package`, for error messages.
pub fn install_command(package: &str) -> String {
    format!("apt-get install -y {package}")
}

/// Installs `package` with apt-get, updating the package lists and retrying once if the first
/// attempt fails. Fails with `NotInstalled`, holding the command to run by hand, when we are
/// not root, apt-get is missing, or apt-get fails.
pub async fn install(package: &str) -> Result<(), ServiceError> {
    let refuse = |why: String| ServiceError::NotInstalled {
        what: package.to_owned(),
        hint: format!("{why}; install it with `{}`", install_command(package)),
    };
    if !geteuid().is_root() {
        return Err(refuse("installing it needs root".to_owned()));
    }
    let Some(apt) = find_in_path("apt-get") else {
        return Err(refuse("apt-get is not available".to_owned()));
    };
    tracing::info!(package, "installing with apt-get");
    if apt_get(&apt, &["install", "-y", package]).await.is_ok() {
        return Ok(());
    }
    tracing::info!(
        package,
        "apt-get install failed; updating package lists and retrying"
    );
    apt_get(&apt, &["update"]).await.map_err(&refuse)?;
    apt_get(&apt, &["install", "-y", package])
        .await
        .map_err(refuse)
}

/// Runs apt-get non-interactively; on failure returns its exit status and output's tail.
async fn apt_get(apt: &Path, args: &[&str]) -> Result<(), String> {
    let output = Command::new(apt)
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("running apt-get failed: {e}"))?;
    if output.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    Err(format!(
        "`apt-get {}` exited with {}:\n{}",
        args.join(" "),
        output.status,
        last_lines(&text)
    ))
}

fn not_installed(package: &str) -> ServiceError {
    ServiceError::NotInstalled {
        what: package.to_owned(),
        hint: format!("install it with `{}`", install_command(package)),
    }
}

fn pg_error(message: String) -> ServiceError {
    ServiceError::Start {
        what: "PostgreSQL".to_owned(),
        message,
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

/// SIGKILLs a postmaster and its children, reaps it, and waits for the children to be gone.
async fn kill_postgres(child: &mut Child) {
    let children = signal_postgres_tree(child);
    let _ = child.wait().await;
    let until = Instant::now() + REAP_DEADLINE;
    while children.iter().any(|&pid| is_alive(pid)) {
        if Instant::now() >= until {
            tracing::warn!(?children, "PostgreSQL processes outlived SIGKILL");
            return;
        }
        sleep(POLL).await;
    }
}

/// Stops the postmaster so it forks no more, SIGKILLs its children (each backend is its own
/// process group, so a group kill misses them), then SIGKILLs it. Returns the children.
fn signal_postgres_tree(child: &Child) -> Vec<Pid> {
    let Some(postmaster) = child_pid(child) else {
        return Vec::new();
    };
    let _ = kill(postmaster, Signal::SIGSTOP);
    let children = children_of(postmaster);
    for &pid in &children {
        let _ = kill(pid, Signal::SIGKILL);
    }
    let _ = kill(postmaster, Signal::SIGKILL);
    children
}

/// The pid of a child not yet reaped (after reaping, the pid may belong to someone else).
fn child_pid(child: &Child) -> Option<Pid> {
    child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map(Pid::from_raw)
}

/// Fields of `/proc/<pid>/stat` after the command name: state, then parent pid.
fn proc_state(pid: &str) -> Option<(char, i32)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

fn children_of(parent: Pid) -> Vec<Pid> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            let pid: i32 = name.to_str()?.parse().ok()?;
            let (_, ppid) = proc_state(name.to_str()?)?;
            (ppid == parent.as_raw()).then_some(Pid::from_raw(pid))
        })
        .collect()
}

/// A zombie has already released its memory, so it counts as gone.
fn is_alive(pid: Pid) -> bool {
    proc_state(&pid.to_string()).is_some_and(|(state, _)| state != 'Z' && state != 'X')
}

fn postgres_user() -> Result<(Uid, Gid), ServiceError> {
    match User::from_name("postgres").map_err(io::Error::from)? {
        Some(user) => Ok((user.uid, user.gid)),
        None => Err(pg_error(
            "PostgreSQL refuses to run as root and there is no `postgres` user to run it as \
             (the postgresql package creates one)"
                .to_owned(),
        )),
    }
}

/// Creates the data directory's missing parents (0755) and the directory itself (0700); as
/// root, first checks that `postgres` can reach it, then hands a not yet initialised directory
/// to that user.
fn prepare_data_dir(data_dir: &Path, run_as: Option<(Uid, Gid)>) -> Result<(), ServiceError> {
    if let Some((uid, gid)) = run_as {
        check_reachable(data_dir, uid, gid)?;
    }
    if let Some(parent) = data_dir.parent() {
        create_traversable_dirs(parent)?;
    }
    if !data_dir.exists() {
        fs::DirBuilder::new().mode(0o700).create(data_dir)?;
    }
    if let Some((uid, gid)) = run_as
        && !data_dir.join("PG_VERSION").exists()
    {
        chown(data_dir, Some(uid.as_raw()), Some(gid.as_raw()))?;
    }
    Ok(())
}

/// Fails when an existing parent of `data_dir` is not searchable by `uid`/`gid`. Supplementary
/// groups do not count: `Command::uid` drops them.
fn check_reachable(data_dir: &Path, uid: Uid, gid: Gid) -> Result<(), ServiceError> {
    for dir in data_dir.ancestors().skip(1).filter(|d| d.exists()) {
        let meta = fs::metadata(dir)?;
        let search_bit = if meta.uid() == uid.as_raw() {
            0o100
        } else if meta.gid() == gid.as_raw() {
            0o010
        } else {
            0o001
        };
        if meta.mode() & search_bit == 0 {
            return Err(pg_error(format!(
                "the `postgres` user cannot reach {}: {} (mode {:o}) is closed to it; choose a \
                 data directory elsewhere (e.g. under /var/lib or /tmp) or run `chmod o+x {}`",
                data_dir.display(),
                dir.display(),
                meta.mode() & 0o7777,
                dir.display(),
            )));
        }
    }
    Ok(())
}

/// Like `create_dir_all`, but each directory it creates is 0755 whatever the umask.
fn create_traversable_dirs(dir: &Path) -> io::Result<()> {
    let missing: Vec<&Path> = dir.ancestors().take_while(|d| !d.exists()).collect();
    for d in missing.into_iter().rev() {
        match fs::create_dir(d) {
            Ok(()) => fs::set_permissions(d, fs::Permissions::from_mode(0o755))?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Binds 127.0.0.1:0 and releases it; another process could take the port before we use it.
fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

async fn tcp_accepts(port: u16) -> bool {
    let connect = TcpStream::connect((Ipv4Addr::LOCALHOST, port));
    matches!(timeout(Duration::from_secs(1), connect).await, Ok(Ok(_)))
}

/// What `pg_isready` checks, without a process per poll: a startup message as `postgres` is
/// answered with an authentication request ('R') once the server accepts queries, and with an
/// error ('E') while it is still starting or recovering.
async fn pg_accepts_queries(port: u16) -> bool {
    let probe = async {
        let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await?;
        let params = b"user\0postgres\0database\0postgres\0\0";
        let length = u32::try_from(8 + params.len()).expect("a short startup message");
        let mut startup = Vec::with_capacity(8 + params.len());
        startup.extend_from_slice(&length.to_be_bytes());
        startup.extend_from_slice(&196_608u32.to_be_bytes());
        startup.extend_from_slice(params);
        stream.write_all(&startup).await?;
        let accepted = stream.read_u8().await? == b'R';
        if accepted {
            stream.write_all(b"X\0\0\0\x04").await?;
        }
        io::Result::Ok(accepted)
    };
    matches!(timeout(Duration::from_secs(2), probe).await, Ok(Ok(true)))
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
