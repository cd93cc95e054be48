//! The one piece of `unsafe` in Fjord: what a function's process does between `fork` and
//! `exec`. It moves itself into its memory cgroup (so the limit holds from the first
//! instruction of user code) and asks to be SIGKILLed when the worker dies (so no function
//! process outlives a crashed worker).
//!
//! std runs this hook after its own setup (stdio, `setgid`, `setgroups(0)`, `setuid`, `chdir`,
//! `setpgid`), so the parent-death signal is set after the credential change that would reset
//! it. Caveat of `PR_SET_PDEATHSIG`: it fires when the *thread* that forked exits, so children
//! must be spawned from threads that live as long as the worker (tokio's worker threads, never
//! a `spawn_blocking` thread).
#![allow(unsafe_code)]

use std::io;
use std::os::fd::OwnedFd;

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::unistd::{Pid, getppid, write};

/// Adds the pre-exec hook to `command`. `cgroup_procs` is the function's `cgroup.procs`, opened
/// for writing before the fork (opening it allocates; the child only writes to it).
pub(super) fn confine(command: &mut tokio::process::Command, cgroup_procs: Option<OwnedFd>) {
    let parent = Pid::this();
    // SAFETY: the closure runs in the forked child of a multi-threaded process, where only
    // async-signal-safe functions may be called. It calls write(2), prctl(2) and getppid(2)
    // through nix's thin wrappers: plain syscalls, no allocation, no locks. It captures only
    // an already-open file descriptor and a pid, and builds its errors with
    // `io::Error::from(Errno)`, which stores the number without allocating.
    unsafe {
        command.pre_exec(move || {
            if let Some(fd) = &cgroup_procs {
                // "0" means "the writing process".
                write(fd, b"0").map_err(io::Error::from)?;
            }
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from)?;
            // The worker may have died before the line above: then no signal will come.
            if getppid() != parent {
                return Err(io::Error::from(Errno::ESRCH));
            }
            Ok(())
        });
    }
}
