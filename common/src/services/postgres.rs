//! The local PostgreSQL server: `LocalPostgres` and its `Durability`, finding its binaries
//! with `find_postgres_bin_dir`, running it as the `postgres` user when we are root (and
//! preparing a data directory that user can reach), its readiness probe, and killing its
//! process tree through `/proc`.

use std::fs;
use std::io;
use std::net::Ipv4Addr;
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

use super::{
    POLL, ServiceError, append_log, child_pid, exits_after_signal, find_in_path, free_port,
    is_executable, log_len, not_installed, port_taken, start_error, tcp_accepts, wait_ready,
};

const PG_START_DEADLINE: Duration = Duration::from_secs(30);
const PG_STOP_GRACE: Duration = Duration::from_secs(15);
const REAP_DEADLINE: Duration = Duration::from_secs(5);
/// `sun_path` holds 108 bytes including the terminating NUL.
const UNIX_SOCKET_PATH_MAX: usize = 107;

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

fn pg_error(message: String) -> ServiceError {
    ServiceError::Start {
        what: "PostgreSQL".to_owned(),
        message,
    }
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

pub(super) fn postgres_user() -> Result<(Uid, Gid), ServiceError> {
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
