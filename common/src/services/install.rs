//! Installing a missing server with apt-get, and `install_command`, the command quoted in
//! "not installed" errors.

use std::path::Path;
use std::process::Stdio;

use nix::unistd::geteuid;
use tokio::process::Command;

use super::{ServiceError, find_in_path, last_lines};

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
