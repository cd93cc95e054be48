//! Runtimes: what runs a deployed function's calls, by `lang`.
//! - `builtin`: a Rust function compiled into the worker.
//! - `exec`: a process per call (OpenFaaS's classic watchdog contract), see [`exec`].
//! - `http`: a long-lived process per worker, each call forwarded to it over local HTTP
//!   (of-watchdog http mode), see [`http`].
//! - `node18`, `node20`, `python3-http`: the http runtime running Fjord's shim for that
//!   OpenFaaS template, which loads the user's handler from the code folder.
//!
//! This module also owns a function's sandbox on the worker host: its folders under the work
//! dir and the unprivileged user its processes run as.
//!
//! Layout (when the worker runs as root; otherwise everything belongs to the worker's user and
//! functions are not isolated from each other):
//! ```text
//! <work>                          root        0711
//! <work>/templates                root        0755  template shims (written by `start`)
//! <work>/fn                       root        0711
//! <work>/fn/<name>                root:<gid>  0750  only the function (and root) enter
//! <work>/fn/<name>/code/<digest>  root:<gid>  0750  working directory, read-only to it
//! <work>/fn/<name>/secrets        root:<gid>  0750  one file per secret, read-only to it
//! <work>/fn/<name>/home           <uid>:<gid> 0700  HOME and TMPDIR, its only writable place
//! ```
//! The function's own folder is root's, not the function's: a function that owned it could
//! replace `code` or `secrets` by a symlink and have the worker, as root, write its package or
//! secrets wherever it points.

mod child;
mod exec;
mod http;
pub mod output;
mod process;

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fjord_common::FunctionName;
use fjord_common::cgroup;
use fjord_common::config::parse_duration;
use fjord_common::stack::FunctionSpec;
use fjord_functions::Function;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use fjord_common::services::FUNCTION_PATH;
use process::{Launch, Memory};

/// Why a function cannot run on this worker.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The definition is wrong: unknown runtime or built-in, missing `fprocess`, bad setting.
    #[error(transparent)]
    Spec(#[from] fjord_common::Error),
    /// The sandbox folders or template files could not be set up.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    /// `limits.memory` is set but this host has no memory controller to enforce it.
    #[error("limits.memory cannot be enforced: {0}")]
    NoMemoryController(String),
    /// The http runtime's process did not become healthy.
    #[error("the function process did not start: {0}")]
    Start(String),
}

fn io_error(what: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// A function's place on this host (see the module comment for the layout).
#[derive(Clone, Debug)]
pub struct Sandbox {
    /// The function's files: working directory of its processes (`<work>/fn/<name>/code/<package digest or "none">`).
    pub code_dir: PathBuf,
    /// Writable HOME and TMPDIR of the function (`<work>/fn/<name>/home`).
    pub home_dir: PathBuf,
    /// Where the function's secrets are, one file per secret (`<work>/fn/<name>/secrets`),
    /// passed as `secret_mount_path`. Files written there must be readable by the function's
    /// gid (e.g. 0640 root:<gid>, or 0644: the folders above keep other users out).
    pub secrets_dir: PathBuf,
    /// The unprivileged uid/gid the function's processes run as; None when the worker is not
    /// root (then they run as the worker's user, logged once as a warning).
    pub user: Option<(u32, u32)>,
    /// Where the template shims are written out (`<work>/templates`).
    pub templates_dir: PathBuf,
}

/// The default work dir: `/var/lib/fjord/work` for root, else `<temp dir>/fjord-work-<uid>`.
pub fn default_work_dir() -> PathBuf {
    let uid = nix::unistd::geteuid();
    if uid.is_root() {
        PathBuf::from("/var/lib/fjord/work")
    } else {
        std::env::temp_dir().join(format!("fjord-work-{uid}"))
    }
}

/// The uid and gid a function's processes run as: [`FunctionName::user_id`] for both.
pub fn function_user(name: &FunctionName) -> (u32, u32) {
    let id = name.user_id();
    (id, id)
}

impl Sandbox {
    /// Creates (or repairs) the function's folders with their owners and modes. Idempotent, and
    /// safe while other workers of the same function do the same.
    pub fn create(work_dir: &Path, spec: &FunctionSpec) -> Result<Sandbox, Error> {
        let root = nix::unistd::geteuid().is_root();
        let user = if root {
            Some(function_user(&spec.name))
        } else {
            warn!(
                function = %spec.name,
                "the worker is not root: function processes run as the worker's user, not isolated from each other or the worker"
            );
            None
        };
        let code = match &spec.package {
            None => "none".to_owned(),
            Some(d)
                if !d.is_empty() && d.len() <= 128 && d.bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                d.to_ascii_lowercase()
            }
            Some(d) => {
                return Err(Error::Spec(fjord_common::Error::invalid(
                    "package",
                    format!("{d:?} is not a package digest"),
                )));
            }
        };
        // root:<gid> where the function may only read; the worker's user otherwise.
        let shared = user.map(|(_, gid)| (0, gid));
        let fn_dir = work_dir.join("fn").join(spec.name.as_str());
        let sandbox = Sandbox {
            code_dir: fn_dir.join("code").join(code),
            home_dir: fn_dir.join("home"),
            secrets_dir: fn_dir.join("secrets"),
            user,
            templates_dir: work_dir.join("templates"),
        };
        let private = if root { 0o750 } else { 0o700 };
        make_dir(work_dir, 0o711, None)?;
        make_dir(&work_dir.join("fn"), 0o711, None)?;
        make_dir(&sandbox.templates_dir, 0o755, None)?;
        make_dir(&fn_dir, private, shared)?;
        make_dir(&fn_dir.join("code"), private, shared)?;
        make_dir(&sandbox.code_dir, private, shared)?;
        make_dir(&sandbox.secrets_dir, private, shared)?;
        make_dir(&sandbox.home_dir, 0o700, user)?;
        Ok(sandbox)
    }
}

/// Creates `path` (and missing parents) and sets its mode and, when given, owner. The folder
/// must be a real folder owned by us (or by `owner`): a symlink or someone else's folder in a
/// shared place such as /tmp is refused.
fn make_dir(path: &Path, mode: u32, owner: Option<(u32, u32)>) -> Result<(), Error> {
    let what = || format!("preparing {}", path.display());
    match fs::DirBuilder::new().mode(mode).create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o711)
                .create(path)
                .map_err(io_error(what()))?;
        }
        Err(e) => return Err(io_error(what())(e)),
    }
    let meta = fs::symlink_metadata(path).map_err(io_error(what()))?;
    let me = nix::unistd::geteuid().as_raw();
    let expected = owner.map_or(me, |(uid, _)| uid);
    if !meta.is_dir() || (meta.uid() != me && meta.uid() != expected) {
        return Err(io_error(what())(io::Error::other(
            "exists but is not a folder of this user",
        )));
    }
    if let Some((uid, gid)) = owner
        && (meta.uid() != uid || meta.gid() != gid)
    {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(io_error(what()))?;
    }
    if meta.mode() & 0o7777 != mode {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_error(what()))?;
    }
    Ok(())
}

/// Starts what runs the function's calls. For `http` and the templates this starts the
/// function's process and waits until it is healthy; `shutdown` fires when the worker is done
/// with the function (after its drain), and then that process is killed.
pub async fn start(
    spec: &FunctionSpec,
    sandbox: &Sandbox,
    output: output::OutputLog,
    shutdown: CancellationToken,
) -> Result<Arc<dyn Function>, Error> {
    let shim = |dir: &str, program: &str, file: &str| -> Vec<String> {
        let path = sandbox.templates_dir.join(dir).join(file);
        vec![program.to_owned(), path.display().to_string()]
    };
    match spec.lang.as_str() {
        "builtin" => builtin(spec),
        "exec" => {
            let launch = launch(spec, sandbox, fprocess(spec)?, Vec::new())?;
            Ok(Arc::new(exec::Exec {
                launch,
                output,
                content_type: spec.environment.get("content_type").cloned(),
                timeout: exec_timeout(spec)?,
            }))
        }
        "http" => {
            let health = match spec.setting(HEALTH_PATH) {
                Some(p) => http::Health::Path(p.to_owned()),
                None => http::Health::Port,
            };
            let launch = launch(spec, sandbox, fprocess(spec)?, Vec::new())?;
            let f = http::start(launch, health, exec_timeout(spec)?, output, shutdown).await?;
            Ok(Arc::new(f))
        }
        "node18" | "node20" | "python3-http" => {
            write_templates(&sandbox.templates_dir)?;
            let argv = match spec.lang.as_str() {
                "python3-http" => shim("python3-http", "python3", "index.py"),
                _ => shim("node", "node", "index.js"),
            };
            let mut env = vec![(
                "FJORD_HANDLER_DIR".to_owned(),
                sandbox.code_dir.display().to_string(),
            )];
            let health = match spec.setting(HEALTH_PATH) {
                Some(p) => {
                    env.push(("FJORD_HEALTH_PATH".to_owned(), p.to_owned()));
                    p.to_owned()
                }
                None => "/_/health".to_owned(),
            };
            let launch = launch(spec, sandbox, argv, env)?;
            let f = http::start(
                launch,
                http::Health::Path(health),
                exec_timeout(spec)?,
                output,
                shutdown,
            )
            .await?;
            Ok(Arc::new(f))
        }
        other => Err(Error::Spec(fjord_common::Error::invalid(
            "lang",
            format!(
                "runtime {other:?} is not supported (supported: {})",
                fjord_common::stack::RUNTIMES.join(", ")
            ),
        ))),
    }
}

/// The annotation (or label) naming the http runtime's health check path.
const HEALTH_PATH: &str = "com.openfaas.health.http.path";

fn builtin(spec: &FunctionSpec) -> Result<Arc<dyn Function>, Error> {
    fjord_functions::check_builtin(&spec.handler)
        .map_err(|why| Error::Spec(fjord_common::Error::invalid("handler", why)))?;
    Ok(fjord_functions::builtin(&spec.handler).expect("checked above"))
}

/// `fprocess`, split into words.
fn fprocess(spec: &FunctionSpec) -> Result<Vec<String>, Error> {
    let text = spec.environment.get("fprocess").ok_or_else(|| {
        fjord_common::Error::invalid(
            "environment.fprocess",
            format!("lang {} needs the command to run", spec.lang),
        )
    })?;
    process::split_command(text)
        .map_err(|e| fjord_common::Error::invalid("environment.fprocess", e).into())
}

/// `exec_timeout`; unset or zero means no limit.
fn exec_timeout(spec: &FunctionSpec) -> Result<Option<std::time::Duration>, Error> {
    match spec.environment.get("exec_timeout") {
        None => Ok(None),
        Some(text) => {
            let d = parse_duration(text).map_err(|_| {
                fjord_common::Error::invalid(
                    "environment.exec_timeout",
                    format!("{text:?} is not like 500ms, 30s, 2m or 1h"),
                )
            })?;
            Ok((!d.is_zero()).then_some(d))
        }
    }
}

/// How the function's processes start: the environment (never the worker's own: it holds NATS
/// and database URLs and credentials), user, folder and memory limit.
fn launch(
    spec: &FunctionSpec,
    sandbox: &Sandbox,
    argv: Vec<String>,
    extra_env: Vec<(String, String)>,
) -> Result<Launch, Error> {
    let memory = match spec.memory_limit()? {
        None => None,
        Some(limit) => {
            let controller = cgroup::memory_controller().map_err(Error::NoMemoryController)?;
            controller.sweep_stale();
            info!(function = %spec.name, limit, %controller, "memory limit enforced by cgroup");
            Some(Memory {
                controller,
                limit,
                text: spec
                    .limits
                    .as_ref()
                    .and_then(|l| l.memory.clone())
                    .unwrap_or_default(),
            })
        }
    };
    let dir = |p: &Path| p.display().to_string();
    let mut env = vec![
        ("PATH".to_owned(), FUNCTION_PATH.to_owned()),
        ("LANG".to_owned(), "C.UTF-8".to_owned()),
        ("HOME".to_owned(), dir(&sandbox.home_dir)),
        ("TMPDIR".to_owned(), dir(&sandbox.home_dir)),
        ("secret_mount_path".to_owned(), dir(&sandbox.secrets_dir)),
    ];
    for (k, v) in &spec.environment {
        if k == "fprocess" {
            continue;
        }
        env.retain(|(key, _)| key != k);
        env.push((k.clone(), v.clone()));
    }
    for (k, v) in extra_env {
        env.retain(|(key, _)| *key != k);
        env.push((k, v));
    }
    Ok(Launch {
        name: spec.name.clone(),
        argv,
        env,
        cwd: sandbox.code_dir.clone(),
        user: sandbox.user,
        memory,
    })
}

/// Writes the template shims into `dir`, each through a temporary file and a rename, so a
/// worker starting at the same time never reads half a file.
fn write_templates(dir: &Path) -> Result<(), Error> {
    for (relative, contents) in fjord_functions::templates::FILES {
        let path = dir.join(relative);
        if fs::read(&path).is_ok_and(|current| current == contents.as_bytes()) {
            continue;
        }
        let what = || format!("writing {}", path.display());
        if let Some(parent) = path.parent() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)
                .map_err(io_error(what()))?;
        }
        let temp = path.with_extension(format!(
            "tmp-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        fs::write(&temp, contents).map_err(io_error(what()))?;
        fs::set_permissions(&temp, fs::Permissions::from_mode(0o644)).map_err(io_error(what()))?;
        if let Err(e) = fs::rename(&temp, &path) {
            let _ = fs::remove_file(&temp);
            return Err(io_error(what())(e));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_users_are_stable_and_in_range() {
        let a: FunctionName = "resize".parse().unwrap();
        let b: FunctionName = "render".parse().unwrap();
        let (uid, gid) = function_user(&a);
        assert_eq!(uid, gid);
        assert_eq!(function_user(&a), (uid, gid));
        assert_ne!(function_user(&a), function_user(&b));
        assert!((0x4000_0000..0x4100_0000).contains(&uid));
    }
}
