//! Getting a function's files onto this host before its worker starts: the handler package
//! (fetched from NATS by digest, unpacked, its dependencies installed once per version and
//! host) and the secrets the function names (written as files only it can read).
//!
//! Several workers of one function may start at once: the package is installed under a file
//! lock, into a temporary folder renamed into place when complete, so a half-installed version
//! is never used and never installed twice.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use fjord_common::Error;
use fjord_common::package::{self, Packages};
use fjord_common::queue::Queue;
use fjord_common::secrets::{SecretName, Secrets};
use fjord_common::stack::FunctionSpec;
use tracing::info;

use crate::runtime::Sandbox;

/// Present in a code folder once it is complete.
const READY: &str = ".fjord-ready";
/// How much of an installer's output an error keeps.
const OUTPUT_TAIL: usize = 4096;

fn io(context: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::Malformed(format!("{context}: {e}"))
}

/// Installs the package (if any) into `sandbox.code_dir` and writes the secrets.
pub async fn prepare(queue: &Queue, spec: &FunctionSpec, sandbox: &Sandbox) -> Result<(), Error> {
    if sandbox.user.is_some() {
        reachable(&sandbox.code_dir)?;
    }
    if let Some(digest) = &spec.package {
        install_package(queue, digest, sandbox).await?;
    }
    write_secrets(queue, spec, sandbox).await
}

async fn install_package(queue: &Queue, digest: &str, sandbox: &Sandbox) -> Result<(), Error> {
    let code_dir = sandbox.code_dir.clone();
    if code_dir.join(READY).exists() {
        return Ok(());
    }
    let lock_path = code_dir.with_extension("lock");
    let lock = tokio::task::spawn_blocking(move || lock_file(&lock_path))
        .await
        .map_err(|e| Error::Malformed(format!("lock task: {e}")))??;
    if code_dir.join(READY).exists() {
        return Ok(());
    }
    let bytes = Packages::open(queue).await?.get(digest).await?;
    let staging = code_dir.with_extension(format!("tmp-{}", std::process::id()));
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(io(staging.display()))?;
    }
    std::fs::create_dir_all(&staging).map_err(io(staging.display()))?;
    std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o700))
        .map_err(io(staging.display()))?;
    let dest = staging.clone();
    tokio::task::spawn_blocking(move || package::unpack(&bytes, &dest))
        .await
        .map_err(|e| Error::Malformed(format!("unpack task: {e}")))??;
    if let Some((uid, gid)) = sandbox.user {
        chown_tree(&staging, uid, gid)?;
    }
    install_dependencies(&staging, sandbox).await?;
    if let Some((_, gid)) = sandbox.user {
        // Installed as the function's user; from now on the function may only read it.
        seal_tree(&staging, gid)?;
    }
    std::fs::write(staging.join(READY), digest).map_err(io("marking the package ready"))?;
    if code_dir.exists() {
        std::fs::remove_dir_all(&code_dir).map_err(io(code_dir.display()))?;
    }
    std::fs::rename(&staging, &code_dir).map_err(io(code_dir.display()))?;
    drop(lock);
    info!(package = digest, dir = %code_dir.display(), "package installed");
    Ok(())
}

/// An exclusive lock held until the returned file is dropped.
fn lock_file(path: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, Error> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io(path.display()))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| Error::Malformed(format!("locking {}: {e}", path.display())))
}

/// Function users must be able to enter every folder above their own: a work dir inside a
/// private folder (such as a 0700 home or `mktemp -d`) would let nothing run.
fn reachable(code_dir: &Path) -> Result<(), Error> {
    // `<work>/fn/<name>/code/<digest>`: the work dir and everything above it.
    for ancestor in code_dir.ancestors().skip(4) {
        if let Ok(meta) = std::fs::metadata(ancestor)
            && meta.permissions().mode() & 0o001 == 0
        {
            return Err(Error::invalid(
                "FJORD_WORK_DIR",
                format!(
                    "{} is inside {}, which function users cannot enter (mode {:o}); use a work dir under a path others may traverse, such as /var/lib/fjord",
                    code_dir.display(),
                    ancestor.display(),
                    meta.permissions().mode() & 0o7777
                ),
            ));
        }
    }
    Ok(())
}

/// Gives an installed package to root with the function's group able to read (and enter, and
/// run what its owner could run) but not write, as the sandbox's folders are.
fn seal_tree(path: &Path, gid: u32) -> Result<(), Error> {
    let meta = std::fs::symlink_metadata(path).map_err(io(path.display()))?;
    std::os::unix::fs::lchown(path, Some(0), Some(gid)).map_err(io(path.display()))?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    let mode = if meta.is_dir() {
        0o750
    } else {
        let owner = meta.permissions().mode() & 0o700;
        owner | ((owner & 0o500) >> 3)
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io(path.display()))?;
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).map_err(io(path.display()))? {
            seal_tree(&entry.map_err(io(path.display()))?.path(), gid)?;
        }
    }
    Ok(())
}

fn chown_tree(path: &Path, uid: u32, gid: u32) -> Result<(), Error> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(io(path.display()))?;
    if path.is_dir() && !path.is_symlink() {
        for entry in std::fs::read_dir(path).map_err(io(path.display()))? {
            chown_tree(&entry.map_err(io(path.display()))?.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// `npm install` for a `package.json`, `pip install --target .python` for a
/// `requirements.txt` with requirements in it; run as the function's user, in the staging
/// folder, with the function's home.
async fn install_dependencies(dir: &Path, sandbox: &Sandbox) -> Result<(), Error> {
    if dir.join("package.json").is_file() {
        run_installer(
            dir,
            sandbox,
            "npm",
            &[
                "install",
                "--omit=dev",
                "--no-audit",
                "--no-fund",
                "--no-update-notifier",
            ],
        )
        .await?;
    }
    let requirements = dir.join("requirements.txt");
    if let Ok(text) = std::fs::read_to_string(&requirements)
        && text
            .lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
    {
        run_installer(
            dir,
            sandbox,
            "python3",
            &[
                "-m",
                "pip",
                "install",
                "--no-input",
                "--disable-pip-version-check",
                "--target",
                ".python",
                "-r",
                "requirements.txt",
            ],
        )
        .await?;
    }
    Ok(())
}

async fn run_installer(
    dir: &Path,
    sandbox: &Sandbox,
    program: &str,
    args: &[&str],
) -> Result<(), Error> {
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", fjord_common::services::FUNCTION_PATH)
        .env("HOME", &sandbox.home_dir)
        .env("TMPDIR", &sandbox.home_dir)
        .env("LANG", "C.UTF-8")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Some((uid, gid)) = sandbox.user {
        command.uid(uid).gid(gid);
    }
    let output = command
        .output()
        .await
        .map_err(io(format!("running {program}")))?;
    if output.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&output.stderr).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stdout));
    let tail: String = {
        let chars: Vec<char> = text.chars().collect();
        chars[chars.len().saturating_sub(OUTPUT_TAIL)..]
            .iter()
            .collect()
    };
    Err(Error::invalid(
        "package",
        format!(
            "`{program} {}` failed ({}): {tail}",
            args.join(" "),
            output.status
        ),
    ))
}

/// Keeps the secrets folder current while the worker runs: a secret the function names that is
/// updated (`PUT /system/secrets`) is rewritten, one that is deleted is removed.
pub async fn follow_secrets(
    queue: &Queue,
    spec: &FunctionSpec,
    sandbox: &Sandbox,
    stop: tokio_util::sync::CancellationToken,
) -> Result<Option<tokio::task::JoinHandle<()>>, Error> {
    if spec.secrets.is_empty() {
        return Ok(None);
    }
    let mut changes = Box::pin(Secrets::open(queue).await?.watch().await?);
    let names = spec.secrets.clone();
    let (dir, user) = (sandbox.secrets_dir.clone(), sandbox.user);
    Ok(Some(tokio::spawn(async move {
        use futures::StreamExt;
        loop {
            let change = tokio::select! {
                change = changes.next() => change,
                _ = stop.cancelled() => return,
            };
            let Some((name, value)) = change else { return };
            if !names.iter().any(|n| n == name.as_str()) {
                continue;
            }
            let result = match value {
                Some(value) => write_secret(&dir, &name, &value, user),
                None => std::fs::remove_file(dir.join(name.as_str()))
                    .or_else(|e| {
                        if e.kind() == std::io::ErrorKind::NotFound {
                            Ok(())
                        } else {
                            Err(e)
                        }
                    })
                    .map_err(io(name.as_str())),
            };
            match result {
                Ok(()) => info!(secret = %name, "secret changed; file updated"),
                Err(e) => {
                    tracing::warn!(secret = %name, error = %e, "updating a secret file failed")
                }
            }
        }
    })))
}

/// Writes one secret file atomically: mode 0400, owned by the function's user.
fn write_secret(
    dir: &Path,
    name: &SecretName,
    value: &[u8],
    user: Option<(u32, u32)>,
) -> Result<(), Error> {
    let path = dir.join(name.as_str());
    let staging: PathBuf = dir.join(format!(".{}.tmp-{}", name, std::process::id()));
    std::fs::write(&staging, value).map_err(io(staging.display()))?;
    std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o400))
        .map_err(io(staging.display()))?;
    if let Some((uid, gid)) = user {
        std::os::unix::fs::chown(&staging, Some(uid), Some(gid)).map_err(io(staging.display()))?;
    }
    std::fs::rename(&staging, &path).map_err(io(path.display()))
}

/// Writes each secret the function names into its secrets folder (mode 0400, owned by the
/// function's user) and removes any it no longer names. A named secret that does not exist
/// stops the worker from starting.
async fn write_secrets(queue: &Queue, spec: &FunctionSpec, sandbox: &Sandbox) -> Result<(), Error> {
    let dir = &sandbox.secrets_dir;
    std::fs::create_dir_all(dir).map_err(io(dir.display()))?;
    let mut wanted = Vec::new();
    if !spec.secrets.is_empty() {
        let secrets = Secrets::open(queue).await?;
        for name in &spec.secrets {
            let name: SecretName = name.parse()?;
            let value = secrets.get(&name).await?.ok_or_else(|| {
                Error::invalid(
                    "secrets",
                    format!("the function names secret {name:?}, which does not exist"),
                )
            })?;
            write_secret(dir, &name, &value, sandbox.user)?;
            wanted.push(name.to_string());
        }
    }
    for entry in std::fs::read_dir(dir).map_err(io(dir.display()))? {
        let entry = entry.map_err(io(dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') && !wanted.contains(&name) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}
