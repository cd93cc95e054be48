//! Starting a function's processes the same way for every runtime: the command line from
//! `fprocess`, a clean environment, the function's user and working directory, a process group
//! of its own, its memory cgroup, and a guard that kills the whole group when dropped.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use fjord_common::FunctionName;
use fjord_common::cgroup::{MemoryCgroup, MemoryController};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use super::child;

/// How much of a process's stderr a failure reason quotes.
pub(super) const REASON_TAIL: usize = 2048;

/// A function's `limits.memory`, with the controller that enforces it.
pub(super) struct Memory {
    pub controller: MemoryController,
    pub limit: u64,
    /// As written in the definition (`64Mi`), for messages.
    pub text: String,
}

impl Memory {
    pub fn killed_reason(&self) -> String {
        format!("killed: exceeded the memory limit ({})", self.text)
    }
}

/// How to start one of a function's processes.
pub(super) struct Launch {
    pub name: FunctionName,
    pub argv: Vec<String>,
    /// The whole environment of the process, before per-process additions.
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    pub user: Option<(u32, u32)>,
    pub memory: Option<Memory>,
}

/// A started process, and the guard of its process group and cgroup.
pub(super) struct Running {
    pub child: Child,
    pub group: Group,
}

impl Launch {
    /// Starts the process with `extra_env` added, stdout and stderr piped, stdin piped when
    /// `stdin` (else `/dev/null`).
    pub fn spawn(&self, extra_env: &[(String, String)], stdin: bool) -> io::Result<Running> {
        let cgroup = match &self.memory {
            Some(m) => Some(m.controller.create(self.name.as_str(), m.limit)?),
            None => None,
        };
        let procs: Option<OwnedFd> = cgroup
            .as_ref()
            .map(|c| c.procs().map(OwnedFd::from))
            .transpose()?;
        let mut command = Command::new(&self.argv[0]);
        command
            .args(&self.argv[1..])
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .envs(extra_env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.cwd)
            .process_group(0)
            .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some((uid, gid)) = self.user {
            // With a uid set, std also drops the supplementary groups (setgroups(0)).
            command.uid(uid).gid(gid);
        }
        child::confine(&mut command, procs);
        let child = command.spawn().map_err(|e| {
            io::Error::new(e.kind(), format!("cannot start {:?}: {e}", self.argv[0]))
        })?;
        let pgid = AtomicI32::new(child.id().map_or(0, |id| id as i32));
        Ok(Running {
            child,
            group: Group { pgid, cgroup },
        })
    }

    /// Whether the kernel killed this process tree for its memory limit.
    pub fn memory_killed(&self, group: &Group, status: Option<ExitStatus>) -> bool {
        let sigkilled = status.and_then(|s| s.signal()) == Some(Signal::SIGKILL as i32);
        group
            .cgroup
            .as_ref()
            .is_some_and(|c| c.oom_killed(sigkilled))
    }
}

/// A process group (the process started and everything it forked) and its memory cgroup.
/// Dropping it SIGKILLs the group and removes the cgroup, so a call whose future is dropped
/// (cancelled, abandoned, timed out) leaves nothing running.
pub(super) struct Group {
    /// The group's id: the pid of the process started, which led it; 0 once released. The
    /// group is killed once more right after its leader is reaped (for what it left behind),
    /// then released: its id could later be reused by an unrelated process group.
    pgid: AtomicI32,
    cgroup: Option<MemoryCgroup>,
}

impl Group {
    /// SIGKILLs every process of the group (and of the cgroup, which also catches processes
    /// that moved to a group of their own).
    pub fn kill(&self) {
        let pgid = self.pgid.load(Ordering::Relaxed);
        if pgid > 0 {
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        }
        if let Some(c) = &self.cgroup {
            c.kill_all();
        }
    }

    /// [`Group::kill`] for the last time by process group: call it right after the leader was
    /// reaped. The cgroup (when there is one) still catches stragglers later.
    pub fn kill_and_release(&self) {
        self.kill();
        self.pgid.store(0, Ordering::Relaxed);
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
        // The cgroup's own drop removes it.
    }
}

/// `exit code 3`, `killed by signal SIGSEGV`.
pub(super) fn describe_exit(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exit code {code}");
    }
    match status.signal() {
        Some(n) => match Signal::try_from(n) {
            Ok(s) => format!("killed by signal {}", s.as_str()),
            Err(_) => format!("killed by signal {n}"),
        },
        None => format!("{status}"),
    }
}

/// `30s`, `500ms`, `1.5s`.
pub(super) fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else if ms < 1000 {
        format!("{ms}ms")
    } else {
        format!("{}s", d.as_secs_f64())
    }
}

/// The last bytes written to a stream, bounded: keeps at least the last `keep` bytes.
pub(super) struct Tail {
    buf: Vec<u8>,
    keep: usize,
    dropped: u64,
}

impl Tail {
    pub fn new(keep: usize) -> Tail {
        Tail {
            buf: Vec::new(),
            keep,
            dropped: 0,
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        if self.buf.len() > 2 * self.keep {
            let cut = self.buf.len() - self.keep;
            self.buf.drain(..cut);
            self.dropped += cut as u64;
        }
    }

    /// Everything kept, as text (`[N earlier bytes dropped]` first when some were).
    pub fn all(&self) -> String {
        let text = String::from_utf8_lossy(&self.buf);
        if self.dropped > 0 {
            format!("[{} earlier bytes dropped]\n{text}", self.dropped)
        } else {
            text.into_owned()
        }
    }

    /// The last `n` bytes or so, trimmed, as text.
    pub fn last(&self, n: usize) -> String {
        let start = self.buf.len().saturating_sub(n);
        let text = String::from_utf8_lossy(&self.buf[start..]);
        text.trim().to_owned()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.iter().all(u8::is_ascii_whitespace)
    }
}

/// Splits a command line as a shell would split simple words: whitespace separates, single
/// quotes keep everything literally, double quotes keep whitespace and honour `\"`, `\\`,
/// `\$` and `` \` ``, a backslash outside quotes escapes the next character. No expansion,
/// no operators: write `sh -c '...'` for those.
pub(super) fn split_command(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("unterminated single quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err("unterminated double quote".into()),
                        },
                        Some(c) => word.push(c),
                        None => return Err("unterminated double quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => word.push(c),
                    None => return Err("trailing backslash".into()),
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    if words.is_empty() {
        return Err("empty command".into());
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_like_a_shell() {
        assert_eq!(
            split_command(r#"sh -c 'echo "$X" | wc -c'"#).unwrap(),
            ["sh", "-c", r#"echo "$X" | wc -c"#]
        );
        assert_eq!(
            split_command(r#"  python3   "my file.py" a\ b "q\"t" '' "#).unwrap(),
            ["python3", "my file.py", "a b", "q\"t", ""]
        );
        assert!(split_command("sh -c 'oops").is_err());
        assert!(split_command("   ").is_err());
    }

    #[test]
    fn tail_keeps_the_end() {
        let mut t = Tail::new(4);
        t.push(b"0123456789");
        assert_eq!(t.last(4), "6789");
        assert!(t.all().contains("dropped"));
        assert_eq!(format_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(format_duration(Duration::from_secs(30)), "30s");
    }
}
