//! `fjord deploy -f stack.yml`, `fjord remove NAME`, `fjord list`: the management API as
//! faas-cli drives it. Deploying packs each non-built-in function's handler folder, uploads it
//! (once per content digest) and then deploys by `PUT`, falling back to `POST` for a new
//! function.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use fjord_common::package;
use fjord_common::stack::{Deployment, FunctionSpec, Stack, TEMPLATE_RUNTIMES};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::client::{Gateway, GatewayArgs};

#[derive(clap::Args)]
pub struct DeployArgs {
    /// The stack file.
    #[arg(short = 'f', long = "file", default_value = "stack.yml")]
    pub file: PathBuf,
    #[command(flatten)]
    pub gateway: GatewayArgs,
    #[command(flatten)]
    pub k8s: crate::k8s::K8sArgs,
}

#[derive(clap::Args)]
pub struct RemoveArgs {
    /// The function to remove.
    pub name: String,
    #[command(flatten)]
    pub gateway: GatewayArgs,
}

#[derive(clap::Args)]
pub struct ListArgs {
    /// Print the gateway's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub gateway: GatewayArgs,
}

/// A stack read from disk: its functions (validated), the folder it lives in (handler paths
/// and `environment_file`s are relative to it) and `provider.gateway`.
pub struct LoadedStack {
    pub specs: Vec<FunctionSpec>,
    pub base: PathBuf,
    pub gateway: Option<String>,
}

/// Reads and validates a stack file.
pub fn load(file: &Path) -> anyhow::Result<LoadedStack> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let base = file
        .parent()
        .map(Path::to_path_buf)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."));
    let stack = Stack::parse(&text, |v| std::env::var(v).ok())?;
    let specs = stack.specs(&base)?;
    for spec in &specs {
        if spec.lang == "builtin"
            && let Err(why) = fjord_functions::check_builtin(&spec.handler)
        {
            bail!("functions.{}.handler: {why}", spec.name);
        }
    }
    Ok(LoadedStack {
        specs,
        base,
        gateway: stack.provider.and_then(|p| p.gateway),
    })
}

/// The handler folder of a function that runs files, if its `handler` names one.
fn handler_dir(spec: &FunctionSpec, base: &Path) -> anyhow::Result<Option<PathBuf>> {
    if spec.lang == "builtin" {
        return Ok(None);
    }
    let dir = base.join(&spec.handler);
    if !spec.handler.is_empty() && dir.is_dir() {
        return Ok(Some(dir));
    }
    if TEMPLATE_RUNTIMES.contains(&spec.lang.as_str()) {
        bail!(
            "functions.{}.handler: {} is not a folder (lang {} runs a handler folder)",
            spec.name,
            dir.display(),
            spec.lang
        );
    }
    Ok(None)
}

/// Uploads a package unless the gateway has it already; returns its digest.
async fn upload(gateway: &Gateway, bytes: Vec<u8>) -> anyhow::Result<String> {
    let digest = package::digest(&bytes);
    let path = format!("/system/packages/{digest}");
    let head = gateway
        .system(Method::HEAD, &path)
        .send()
        .await
        .context("reaching the gateway")?;
    if head.status() != StatusCode::OK {
        Gateway::send(gateway.system(Method::PUT, &path).body(bytes)).await?;
    }
    Ok(digest)
}

/// Deploys every function of the stack; returns their names.
pub async fn deploy(gateway: &Gateway, stack: &LoadedStack) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    for spec in &stack.specs {
        let mut spec = spec.clone();
        if let Some(dir) = handler_dir(&spec, &stack.base)? {
            let bytes = package::pack(&dir)?;
            spec.package = Some(upload(gateway, bytes).await?);
        }
        let body = Deployment::from_spec(&spec);
        let update = gateway
            .system(Method::PUT, "/system/functions")
            .json(&body)
            .send()
            .await
            .context("reaching the gateway")?;
        if update.status() == StatusCode::NOT_FOUND {
            Gateway::send(
                gateway
                    .system(Method::POST, "/system/functions")
                    .json(&body),
            )
            .await
            .with_context(|| format!("deploying {}", spec.name))?;
        } else {
            Gateway::check(update)
                .await
                .with_context(|| format!("deploying {}", spec.name))?;
        }
        names.push(spec.name.to_string());
    }
    Ok(names)
}

pub async fn run(args: DeployArgs) -> anyhow::Result<()> {
    let stack = load(&args.file)?;
    if args.k8s.k8s {
        return crate::k8s::write(&args.k8s, &stack.specs);
    }
    let gateway = Gateway::new(&args.gateway, stack.gateway.as_deref())?;
    for name in deploy(&gateway, &stack).await? {
        println!("deployed {name}");
    }
    Ok(())
}

pub async fn remove(args: RemoveArgs) -> anyhow::Result<()> {
    let gateway = Gateway::new(&args.gateway, None)?;
    Gateway::send(
        gateway
            .system(Method::DELETE, "/system/functions")
            .json(&json!({"functionName": args.name})),
    )
    .await?;
    println!("removed {} (calls still queued are cancelled)", args.name);
    Ok(())
}

pub async fn list(args: ListArgs) -> anyhow::Result<()> {
    let gateway = Gateway::new(&args.gateway, None)?;
    let functions: Value = Gateway::send(gateway.system(Method::GET, "/system/functions"))
        .await?
        .json()
        .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&functions)?);
        return Ok(());
    }
    println!(
        "{:<32} {:<14} {:>12} {:>9} {:>9}",
        "Function", "Lang", "Invocations", "Replicas", "Available"
    );
    for f in functions.as_array().into_iter().flatten() {
        println!(
            "{:<32} {:<14} {:>12} {:>9} {:>9}",
            f["name"].as_str().unwrap_or(""),
            f["lang"].as_str().unwrap_or(""),
            // Values ignore the width in `{:>12}`; their text does not.
            f["invocationCount"].to_string(),
            f["replicas"].to_string(),
            f["availableReplicas"].to_string(),
        );
    }
    Ok(())
}
