//! `fjord deploy -f stack.yml`: validates a stack and writes its functions to the registry
//! (creating each function's queue first).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use fjord_common::config::{NatsArgs, duration_arg};
use fjord_common::queue::{ConsumerSettings, Queue};
use fjord_common::registry::Registry;
use fjord_common::stack::{FunctionSpec, Stack};

#[derive(clap::Args)]
pub struct DeployArgs {
    /// The stack file.
    #[arg(short = 'f', long = "file", default_value = "stack.yml")]
    pub file: PathBuf,
    #[command(flatten)]
    pub nats: NatsArgs,
    #[command(flatten)]
    pub queue: QueueArgs,
}

#[derive(Clone, Debug, clap::Args)]
pub struct QueueArgs {
    /// Lease of a running call: a worker silent this long is presumed dead and its call is
    /// redelivered (running calls renew it; this is not an execution time limit).
    #[arg(long, env = "FJORD_ACK_WAIT", default_value = "30s", value_parser = duration_arg)]
    pub ack_wait: Duration,
}

/// Reads and validates a stack file.
pub fn load(file: &Path) -> anyhow::Result<Vec<FunctionSpec>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let specs = Stack::parse(&text, |v| std::env::var(v).ok())?.specs()?;
    for spec in &specs {
        if spec.lang == "builtin" && fjord_functions::builtin(&spec.handler).is_none() {
            anyhow::bail!(
                "functions.{}.handler: no built-in {:?} (built-ins: {})",
                spec.name,
                spec.handler,
                fjord_functions::BUILTINS.join(", ")
            );
        }
    }
    Ok(specs)
}

/// Deploys every function of the stack; returns their names.
pub async fn deploy(
    queue: &Queue,
    specs: &[FunctionSpec],
    args: &QueueArgs,
) -> anyhow::Result<Vec<String>> {
    let registry = Registry::open(queue).await?;
    let mut names = Vec::new();
    for spec in specs {
        let settings = ConsumerSettings::for_spec(spec, args.ack_wait)?;
        registry.deploy(queue, spec, &settings).await?;
        names.push(spec.name.to_string());
    }
    Ok(names)
}

pub async fn run(args: DeployArgs) -> anyhow::Result<()> {
    let specs = load(&args.file)?;
    let queue = Queue::connect(&args.nats.nats_url, args.nats.names()?).await?;
    for name in deploy(&queue, &specs, &args.queue).await? {
        println!("deployed {name}");
    }
    Ok(())
}
