//! `fjord invoke`, `fjord status`, `fjord queues`, `fjord logs`.

use std::io::{Read, Write};

use anyhow::Context;
use reqwest::Method;

use crate::client::{Gateway, GatewayArgs};

#[derive(clap::Args)]
pub struct InvokeArgs {
    /// The function to call.
    pub name: String,
    /// Queue the call and print its id instead of waiting for the result.
    #[arg(long = "async")]
    pub asynchronous: bool,
    /// URL to POST the result to when the call finishes (async calls).
    #[arg(long)]
    pub callback: Option<String>,
    /// The body: literal text, `@FILE`, or `-` for standard input. Empty when not given.
    #[arg(short = 'd', long = "data")]
    pub data: Option<String>,
    /// Content-Type of the body.
    #[arg(long, default_value = "application/octet-stream")]
    pub content_type: String,
    #[command(flatten)]
    pub gateway: GatewayArgs,
}

fn body(data: Option<&str>) -> anyhow::Result<Vec<u8>> {
    Ok(match data {
        None => Vec::new(),
        Some("-") => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("reading standard input")?;
            buf
        }
        Some(d) if d.starts_with('@') => {
            std::fs::read(&d[1..]).with_context(|| format!("reading {}", &d[1..]))?
        }
        Some(d) => d.as_bytes().to_vec(),
    })
}

pub async fn invoke(args: InvokeArgs) -> anyhow::Result<()> {
    let gateway = Gateway::new(&args.gateway, None)?;
    let route = if args.asynchronous {
        "async-function"
    } else {
        "function"
    };
    let mut request = gateway
        .http
        .post(format!("{}/{route}/{}", gateway.url, args.name))
        .header("Content-Type", &args.content_type)
        .body(body(args.data.as_deref())?);
    if let Some(cb) = &args.callback {
        request = request.header("X-Callback-Url", cb);
    }
    let response = Gateway::send(request).await?;
    let call_id = response
        .headers()
        .get("x-call-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if args.asynchronous {
        println!("{call_id}");
    } else {
        eprintln!("call {call_id}");
        let bytes = response.bytes().await?;
        std::io::stdout().write_all(&bytes)?;
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct StatusArgs {
    pub call_id: String,
    #[command(flatten)]
    pub gateway: GatewayArgs,
}

pub async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let gateway = Gateway::new(&args.gateway, None)?;
    let path = format!("/system/invocations/{}", args.call_id);
    let value: serde_json::Value = Gateway::send(gateway.system(Method::GET, &path))
        .await?
        .json()
        .await?;
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(())
}

#[derive(clap::Args)]
pub struct QueuesArgs {
    /// Redraw the table every 2 s until interrupted.
    #[arg(long)]
    pub watch: bool,
    #[command(flatten)]
    pub gateway: GatewayArgs,
}

pub async fn queues(args: QueuesArgs) -> anyhow::Result<()> {
    let gateway = Gateway::new(&args.gateway, None)?;
    if !args.watch {
        return print_queues(&gateway).await;
    }
    loop {
        // Clear the screen and home the cursor, then draw the table.
        print!("\x1b[2J\x1b[H");
        println!(
            "{}  (every 2 s; Ctrl-C stops)",
            chrono::Utc::now().format("%H:%M:%S")
        );
        if let Err(e) = print_queues(&gateway).await {
            println!("{e:#}");
        }
        std::io::stdout().flush()?;
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
}

async fn print_queues(gateway: &Gateway) -> anyhow::Result<()> {
    let rows: Vec<serde_json::Value> = Gateway::send(gateway.system(Method::GET, "/system/queues"))
        .await?
        .json()
        .await?;
    println!(
        "{:<24} {:>10} {:>10} {:>12} {:>8} {:>16}",
        "FUNCTION", "PENDING", "IN FLIGHT", "REDELIVERED", "WORKERS", "OLDEST PENDING"
    );
    for r in rows {
        println!(
            "{:<24} {:>10} {:>10} {:>12} {:>8} {:>15.1}s",
            r["function"].as_str().unwrap_or_default(),
            r["pending"].as_u64().unwrap_or_default(),
            r["in_flight"].as_u64().unwrap_or_default(),
            r["redelivered"].as_u64().unwrap_or_default(),
            r["workers"].as_u64().unwrap_or_default(),
            r["oldest_pending_seconds"].as_f64().unwrap_or_default()
        );
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct LogsArgs {
    /// The function whose output to show.
    pub name: String,
    /// Only this call's lines.
    #[arg(long)]
    pub call: Option<String>,
    /// Only the last N lines (before following).
    #[arg(long)]
    pub tail: Option<usize>,
    /// Only lines from this time on (RFC 3339).
    #[arg(long)]
    pub since: Option<String>,
    /// Keep printing new lines until interrupted.
    #[arg(long, short)]
    pub follow: bool,
    #[command(flatten)]
    pub gateway: GatewayArgs,
}

/// Prints a function's output from `/system/logs`: time, call, stream, text.
pub async fn logs(args: LogsArgs) -> anyhow::Result<()> {
    let gateway = Gateway::new(&args.gateway, None)?;
    let mut query = vec![("name", args.name.clone())];
    query.extend(args.call.clone().map(|c| ("call", c)));
    query.extend(args.tail.map(|n| ("tail", n.to_string())));
    query.extend(args.since.clone().map(|s| ("since", s)));
    if args.follow {
        query.push(("follow", "true".into()));
    }
    let mut url = reqwest::Url::parse("http://gateway/system/logs").expect("a valid URL");
    url.query_pairs_mut().extend_pairs(&query);
    let path = format!("{}?{}", url.path(), url.query().unwrap_or_default());
    let mut response = Gateway::send(gateway.system(Method::GET, &path)).await?;
    let mut pending = Vec::new();
    let mut out = std::io::stdout().lock();
    while let Some(chunk) = response.chunk().await.context("reading the log")? {
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let Ok(line) = serde_json::from_slice::<fjord_common::logs::LogLine>(&line) else {
                continue;
            };
            let call = line
                .call_id
                .map(|c| c.to_string())
                .unwrap_or_else(|| "-".into());
            writeln!(
                out,
                "{} {call} {} {}",
                line.timestamp.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
                line.stream,
                line.text
            )?;
        }
        out.flush()?;
    }
    Ok(())
}
