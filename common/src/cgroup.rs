//! Memory cgroups for function processes: finding a memory controller this process may use,
//! and one cgroup per process tree (an `exec` call, or an `http` function's long-lived process)
//! with the function's `limits.memory`, whose OOM kills can be read back afterwards.
//!
//! Where the cgroups go, in order of preference:
//! - cgroup v2, when its root lists `memory` in `cgroup.controllers` and is writable (root on a
//!   systemd host): `<v2 mount>/fjord/<function>-<random>`, with `memory` enabled in the
//!   subtree of the mount root and of `fjord/`.
//! - cgroup v1, when the `memory` hierarchy is mounted and this process's own cgroup in it is
//!   writable: `<memory mount><own cgroup>/fjord/<function>-<random>` (nested under our own
//!   cgroup, so whatever limits this process also bounds its functions).
//! - An already existing, writable `fjord/` in either place (an administrator may create one
//!   and hand it to an unprivileged worker user).
//!
//! Otherwise [`memory_controller`] says why not, and a function with a memory limit must not
//! run (the gateway refuses to deploy it, the worker refuses to start it).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use nix::sys::signal::{Signal, kill};
use nix::unistd::{AccessFlags, Pid, access};

/// A cgroup left empty this long is stale (its creator died before removing it).
const STALE_AFTER: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// A memory controller this process can create cgroups in.
#[derive(Clone, Debug)]
pub struct MemoryController {
    version: Version,
    /// The `fjord` folder the per-process cgroups are created in (it may not exist yet).
    dir: PathBuf,
}

/// Finds a memory cgroup controller usable by this process, or says why there is none in a
/// message fit for a user ("limits.memory cannot be enforced: ..."). Reads `/proc` and
/// `/sys/fs/cgroup` only; creates nothing.
pub fn memory_controller() -> Result<MemoryController, String> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
    let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mounts = parse_mounts(&mountinfo);
    let mut why = Vec::new();

    for m in mounts.iter().filter(|m| m.fstype == "cgroup2") {
        let controllers =
            fs::read_to_string(m.point.join("cgroup.controllers")).unwrap_or_default();
        if !controllers.split_whitespace().any(|c| c == "memory") {
            why.push(format!(
                "cgroup v2 at {} has no memory controller (controllers: {})",
                m.point.display(),
                controllers.trim()
            ));
            continue;
        }
        let dir = m.point.join("fjord");
        if writable(&dir).is_ok() {
            return Ok(MemoryController {
                version: Version::V2,
                dir,
            });
        }
        match writable(&m.point).and(writable(&m.point.join("cgroup.subtree_control"))) {
            Ok(()) => {
                return Ok(MemoryController {
                    version: Version::V2,
                    dir,
                });
            }
            Err(e) => why.push(format!(
                "cgroup v2 at {} is not writable by this process ({e})",
                m.point.display()
            )),
        }
    }

    for m in mounts
        .iter()
        .filter(|m| m.fstype == "cgroup" && m.options.split(',').any(|o| o == "memory"))
    {
        let own_path = own_cgroup_v1(&own, "memory").unwrap_or("/");
        let relative = own_path
            .strip_prefix(m.root.as_str())
            .unwrap_or(own_path)
            .trim_start_matches('/');
        let base = m.point.join(relative);
        for base in [base, m.point.clone()] {
            let dir = base.join("fjord");
            if writable(&dir).is_ok() || writable(&base).is_ok() {
                return Ok(MemoryController {
                    version: Version::V1,
                    dir,
                });
            }
        }
        why.push(format!(
            "cgroup v1 memory at {} is not writable by this process",
            m.point.display()
        ));
    }

    if why.is_empty() {
        why.push("no cgroup filesystem is mounted".into());
    }
    Err(format!(
        "no usable memory cgroup on this host: {} (run the worker as root, or create a writable \
         `fjord` cgroup with the memory controller for it)",
        why.join("; ")
    ))
}

impl MemoryController {
    pub fn version(&self) -> Version {
        self.version
    }

    /// The folder the per-process cgroups go in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates `fjord/<tag>-<random>` limited to `limit` bytes of memory, swap included.
    /// Fails with the I/O error of the step that failed (nothing is left behind).
    pub fn create(&self, tag: &str, limit: u64) -> io::Result<MemoryCgroup> {
        let name = format!("{tag}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let path = self.dir.join(name);
        // Another worker may remove an empty `fjord/` between our two mkdirs: try again.
        let mut attempts = 0;
        loop {
            self.prepare()?;
            match fs::create_dir(&path) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::NotFound && attempts < 3 => attempts += 1,
                Err(e) => return Err(with_path(e, &path)),
            }
        }
        let cgroup = MemoryCgroup {
            version: self.version,
            path,
            remove_parent: true,
        };
        match self.version {
            Version::V2 => {
                cgroup.write("memory.max", &limit.to_string())?;
                cgroup.write_if_present("memory.swap.max", "0")?;
                // One OOM kill takes the whole tree: no half-killed function lingers.
                cgroup.write_if_present("memory.oom.group", "1")?;
            }
            Version::V1 => {
                cgroup.write("memory.limit_in_bytes", &limit.to_string())?;
                cgroup.write_if_present("memory.memsw.limit_in_bytes", &limit.to_string())?;
            }
        }
        Ok(cgroup)
    }

    /// Creates `fjord/` and, for v2, enables the memory controller for its children.
    fn prepare(&self) -> io::Result<()> {
        match fs::create_dir(&self.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(with_path(e, &self.dir)),
        }
        if self.version == Version::V2 {
            if let Some(parent) = self.dir.parent() {
                enable_memory(parent)?;
            }
            enable_memory(&self.dir)?;
        }
        Ok(())
    }

    /// Removes cgroups under `fjord/` that have been empty for a minute: left by a worker that
    /// was killed before it could remove its own.
    pub fn sweep_stale(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_some_and(|age| age > STALE_AFTER);
            let empty = fs::read_to_string(path.join("cgroup.procs"))
                .is_ok_and(|procs| procs.trim().is_empty());
            if path.is_dir() && old && empty && fs::remove_dir(&path).is_ok() {
                tracing::info!(cgroup = %path.display(), "removed a stale memory cgroup");
            }
        }
    }
}

impl std::fmt::Display for MemoryController {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = match self.version {
            Version::V1 => "v1",
            Version::V2 => "v2",
        };
        write!(f, "cgroup {v} memory controller at {}", self.dir.display())
    }
}

/// One memory cgroup holding one process tree. Dropping it kills whatever still runs in it
/// and removes it.
#[derive(Debug)]
pub struct MemoryCgroup {
    version: Version,
    path: PathBuf,
    /// Also remove `fjord/` when it is left empty, so no empty folder blocks the removal of
    /// the cgroup this process runs in.
    remove_parent: bool,
}

impl MemoryCgroup {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `cgroup.procs`, open for writing: writing `0` to it moves the writing process in. Open
    /// it before forking and write from the child (the permission check uses the opener's
    /// credentials, so a child that already dropped privileges can still move itself).
    pub fn procs(&self) -> io::Result<File> {
        let path = self.path.join("cgroup.procs");
        OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| with_path(e, &path))
    }

    /// OOM kills in this cgroup so far: v2 `memory.events`, v1 `memory.oom_control`
    /// (`oom_kill`, Linux 4.13+). `None` when the kernel does not say.
    pub fn oom_kills(&self) -> Option<u64> {
        let file = match self.version {
            Version::V2 => "memory.events",
            Version::V1 => "memory.oom_control",
        };
        let text = fs::read_to_string(self.path.join(file)).ok()?;
        text.lines()
            .filter_map(|l| l.split_once(' '))
            .find(|(k, _)| *k == "oom_kill")
            .and_then(|(_, v)| v.trim().parse().ok())
    }

    /// Whether the kernel killed a process here for exceeding the limit. `sigkilled` (the main
    /// process died of SIGKILL) is the fallback evidence on kernels without `oom_kill` counts,
    /// together with the limit having been hit.
    pub fn oom_killed(&self, sigkilled: bool) -> bool {
        match self.oom_kills() {
            Some(n) => n > 0,
            None => {
                let hits = match self.version {
                    Version::V2 => "memory.events",
                    Version::V1 => "memory.failcnt",
                };
                let text = fs::read_to_string(self.path.join(hits)).unwrap_or_default();
                let hit = match self.version {
                    Version::V2 => text
                        .lines()
                        .filter_map(|l| l.split_once(' '))
                        .any(|(k, v)| k == "max" && v.trim() != "0"),
                    Version::V1 => text.trim().parse::<u64>().is_ok_and(|n| n > 0),
                };
                sigkilled && hit
            }
        }
    }

    /// SIGKILLs every process in the cgroup, including any that left the process group.
    pub fn kill_all(&self) {
        if self.version == Version::V2 && fs::write(self.path.join("cgroup.kill"), "1").is_ok() {
            return;
        }
        if let Ok(procs) = fs::read_to_string(self.path.join("cgroup.procs")) {
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }

    fn write(&self, file: &str, value: &str) -> io::Result<()> {
        let path = self.path.join(file);
        fs::write(&path, value).map_err(|e| with_path(e, &path))
    }

    fn write_if_present(&self, file: &str, value: &str) -> io::Result<()> {
        match self.write(file, value) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        self.kill_all();
        // Killed processes take a moment to leave. Wait briefly here (this process may be
        // about to exit, taking any helper thread with it), then finish off the thread.
        for _ in 0..40 {
            if remove(&self.path, self.remove_parent) {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let path = self.path.clone();
        let remove_parent = self.remove_parent;
        let _ = std::thread::Builder::new()
            .name("cgroup-rmdir".into())
            .spawn(move || {
                for _ in 0..100 {
                    std::thread::sleep(Duration::from_millis(50));
                    if remove(&path, remove_parent) {
                        return;
                    }
                }
                tracing::warn!(cgroup = %path.display(), "could not remove a memory cgroup: processes still in it");
            });
    }
}

/// Removes a cgroup folder (and its parent when that is left empty); `true` when it is gone.
fn remove(path: &Path, remove_parent: bool) -> bool {
    match fs::remove_dir(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(_) => return false,
    }
    if remove_parent && let Some(parent) = path.parent() {
        // Fails while other cgroups are in it, which is fine.
        let _ = fs::remove_dir(parent);
    }
    true
}

/// Enables the memory controller for the children of a v2 cgroup.
fn enable_memory(dir: &Path) -> io::Result<()> {
    let file = dir.join("cgroup.subtree_control");
    let current = fs::read_to_string(&file).map_err(|e| with_path(e, &file))?;
    if current.split_whitespace().any(|c| c == "memory") {
        return Ok(());
    }
    fs::write(&file, "+memory").map_err(|e| with_path(e, &file))
}

fn writable(path: &Path) -> Result<(), nix::Error> {
    access(path, AccessFlags::W_OK)
}

fn with_path(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

struct Mount {
    /// The cgroup path mounted there (`/` unless inside a cgroup namespace or a bind mount).
    root: String,
    point: PathBuf,
    fstype: String,
    options: String,
}

/// `/proc/self/mountinfo`: `id parent major:minor root point options [optional...] - fstype
/// source super-options`.
fn parse_mounts(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            let right: Vec<&str> = right.split(' ').collect();
            Some(Mount {
                root: unescape(left.get(3)?),
                point: PathBuf::from(unescape(left.get(4)?)),
                fstype: (*right.first()?).to_owned(),
                options: right.get(2).copied().unwrap_or_default().to_owned(),
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as octal (`\040`).
fn unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest
            .get(i + 1..i + 4)
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(c) => {
                out.push(c as char);
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// This process's cgroup in the v1 hierarchy that has `controller`, from `/proc/self/cgroup`
/// (`4:memory:/some/path`).
fn own_cgroup_v1<'a>(text: &'a str, controller: &str) -> Option<&'a str> {
    text.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let _id = parts.next()?;
        let controllers = parts.next()?;
        let path = parts.next()?;
        controllers
            .split(',')
            .any(|c| c == controller)
            .then_some(path)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mountinfo_and_own_cgroup() {
        let text = "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
                    41 31 0:38 / /sys/fs/cgroup/my\\040dir rw,relatime shared:1 - cgroup2 cgroup2 rw\n";
        let mounts = parse_mounts(text);
        assert_eq!(mounts.len(), 2);
        assert_eq!(mounts[0].fstype, "cgroup");
        assert_eq!(mounts[0].options, "rw,memory");
        assert_eq!(mounts[1].point, PathBuf::from("/sys/fs/cgroup/my dir"));
        assert_eq!(mounts[1].fstype, "cgroup2");
        let own = "5:devices:/\n4:memory:/process_api/abc\n0::/\n";
        assert_eq!(own_cgroup_v1(own, "memory"), Some("/process_api/abc"));
        assert_eq!(own_cgroup_v1(own, "pids"), None);
    }
}
