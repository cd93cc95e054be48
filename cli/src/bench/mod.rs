//! `fjord bench`: the speed figures of the core path, measured on this machine.
//!
//! It starts its own installation (gateway and control process from the binaries next to
//! `fjord`, a fresh database, its own NATS prefix) on the NATS and PostgreSQL at `NATS_URL` /
//! `DATABASE_URL`, drives it over 64 keep-alive HTTP connections with 1 KiB bodies, and in the
//! same run measures the raw baselines (JetStream publish-with-ack, pull-and-ack, a PostgreSQL
//! batched insert of the same rows). CPU seconds are read from /proc for every process.

mod baseline;
mod callbacks;
mod cpu;
mod load;
mod scaling;
mod setup;

use std::time::Duration;

use fjord_common::config::duration_arg;
use reqwest::header::{HeaderMap, HeaderValue};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// How long each measured phase lasts.
    #[arg(long, default_value = "30s", value_parser = duration_arg)]
    pub duration: Duration,
    /// Keep-alive HTTP connections of the load generator.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Request body size in bytes.
    #[arg(long, default_value_t = 1024)]
    pub body_size: usize,
    /// Worker processes for the end-to-end phases.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Cold starts measured (each from zero workers).
    #[arg(long, default_value_t = 100)]
    pub cold_starts: usize,
    /// Only the autoscaler's phases (cold start, burst, memory).
    #[arg(long)]
    pub skip_core: bool,
    /// NATS server URL.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// PostgreSQL URL; the benchmark creates (and drops) a database of its own on this server.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pub database_url: String,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: this is a debug build of fjord; figures are only meaningful with --release"
        );
    }
    if !args.skip_core {
        let functions = ["sink", "echo", "hook"].map(|name| setup::spec(name, "echo", 256, &[]));
        let mut install = setup::Installation::start(&args, &functions, false).await?;
        let result = phases(&args, &mut install).await;
        install.stop().await;
        result?;
    }
    // Scaling on an installation of its own, whose control process starts the workers.
    let mut install = setup::Installation::start(&args, &scaling::functions(), true).await?;
    let result = scaling::run(&args, &install).await;
    install.stop().await;
    result
}

async fn phases(args: &BenchArgs, install: &mut setup::Installation) -> anyhow::Result<()> {
    let body = vec![b'x'; args.body_size];
    let none = HeaderMap::new();
    let d = args.duration;
    println!(
        "fjord bench: {} s per phase, {} connections, {} B bodies, {} workers, {} cores",
        d.as_secs_f64(),
        args.connections,
        args.body_size,
        args.workers,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );

    // Raw baselines first, on a quiet system: the same servers, message and row sizes.
    let raw = baseline::run(
        &args.nats_url,
        &install.database_url,
        args.body_size,
        args.connections,
        d.min(Duration::from_secs(10)),
    )
    .await?;
    println!(
        "\nraw baselines (same NATS and PostgreSQL, {} B)",
        args.body_size
    );
    println!(
        "  JetStream publish-with-ack, {} in flight: {:.0} msg/s",
        args.connections, raw.publish
    );
    println!(
        "  JetStream pull + ack:                     {:.0} msg/s",
        raw.pull
    );
    println!(
        "  PostgreSQL batched INSERT (1,000/txn):    {:.0} rows/s",
        raw.insert
    );

    // 1. Intake: the gateway alone accepting calls (no workers drain the queue).
    let cpu = install.cpu_snapshot();
    let intake = load::closed_loop(
        &install.url("/async-function/sink"),
        &body,
        &none,
        args.connections,
        d,
    )
    .await?;
    let intake_cpu = install.cpu_since(&cpu);
    println!(
        "\nintake (closed loop, {} connections) to a queue without workers",
        args.connections
    );
    println!(
        "  {:.0} calls/s accepted; 202 latency p50 {:.2} ms, p99 {:.2} ms; errors {}",
        intake.rate(),
        intake.p(50.0),
        intake.p(99.0),
        intake.errors
    );
    println!("  CPU s: {intake_cpu}");

    let paced = load::open_loop(
        &install.url("/async-function/sink"),
        &body,
        &none,
        args.connections,
        2000.0,
        d,
    )
    .await?;
    println!("\nintake at 2,000 calls/s offered");
    println!(
        "  {:.0} calls/s accepted; 202 latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; errors {}",
        paced.rate(),
        paced.p(50.0),
        paced.p(99.0),
        paced.p(100.0),
        paced.errors
    );
    install.drain("sink").await?;

    // 2. End to end with warm workers.
    install.start_workers("echo", args.workers).await?;
    let cpu = install.cpu_snapshot();
    let e2e_start = chrono::Utc::now();
    let began = std::time::Instant::now();
    let e2e_load = load::closed_loop(
        &install.url("/async-function/echo"),
        &body,
        &none,
        args.connections,
        d,
    )
    .await?;
    let e2e = install
        .wait_recorded("echo", e2e_start, began, e2e_load.ok)
        .await?;
    let e2e_cpu = install.cpu_since(&cpu);
    println!(
        "\nend to end (closed loop, {} connections), first POST to the last call seen recorded succeeded",
        args.connections
    );
    println!(
        "  {} calls in {:.1} s = {:.0} calls/s end to end (intake ran at {:.0} calls/s)",
        e2e.calls,
        e2e.seconds,
        e2e.rate(),
        e2e_load.rate()
    );
    println!("  CPU s: {e2e_cpu}");

    let start_1k = chrono::Utc::now();
    let began = std::time::Instant::now();
    let paced = load::open_loop(
        &install.url("/async-function/echo"),
        &body,
        &none,
        args.connections,
        1000.0,
        d,
    )
    .await?;
    let waits = install
        .wait_recorded("echo", start_1k, began, paced.ok)
        .await?;
    println!("\nend to end at 1,000 calls/s offered");
    println!(
        "  accept to function start: p50 {:.2} ms, p99 {:.2} ms; 202 latency p50 {:.2} ms, p99 {:.2} ms",
        waits.start_p50_ms,
        waits.start_p99_ms,
        paced.p(50.0),
        paced.p(99.0)
    );

    // 3. Callbacks: every call carries an X-Callback-Url to a receiver in this process.
    install.drain("echo").await?;
    install.start_workers("hook", args.workers).await?;
    let receiver = callbacks::Receiver::start().await?;
    let mut with_callback = HeaderMap::new();
    with_callback.insert("x-callback-url", HeaderValue::from_str(&receiver.url)?);
    let cpu = install.cpu_snapshot();
    let load = load::closed_loop(
        &install.url("/async-function/hook"),
        &body,
        &with_callback,
        args.connections,
        d,
    )
    .await?;
    receiver.wait_for(load.ok).await?;
    let cb_cpu = install.cpu_since(&cpu);
    let arrivals = receiver.take();
    println!(
        "\ncallbacks (closed loop, {} connections, each call with a callback to a local receiver answering 200)",
        args.connections
    );
    println!(
        "  {} callbacks delivered at {:.0} callbacks/s (intake ran at {:.0} calls/s)",
        arrivals.len(),
        callbacks::rate(&arrivals),
        load.rate()
    );
    println!("  CPU s: {cb_cpu}");

    let since = chrono::Utc::now();
    let paced = load::open_loop(
        &install.url("/async-function/hook"),
        &body,
        &with_callback,
        args.connections,
        1000.0,
        d,
    )
    .await?;
    receiver.wait_for(paced.ok).await?;
    let arrivals = receiver.take();
    // A callback may arrive before its outcome is written: wait (bounded) until each one is.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let finished = loop {
        let finished = install.finished_at("hook", since).await?;
        if arrivals.keys().all(|id| finished.contains_key(id))
            || tokio::time::Instant::now() > deadline
        {
            break finished;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let delays = callbacks::delays(&arrivals, &finished);
    println!("\ncallbacks at 1,000 calls/s offered: function finished to callback arrived");
    println!(
        "  p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms over {} callbacks",
        callbacks::percentile(&delays, 50.0),
        callbacks::percentile(&delays, 99.0),
        callbacks::percentile(&delays, 100.0),
        delays.len()
    );

    // The dispatcher alone: due callbacks already in PostgreSQL (as after an outage of the
    // receiver), taken by its poll and delivered.
    let backlog = 20_000;
    install
        .pending_callbacks("backlog", &receiver.url, backlog)
        .await?;
    let cpu = install.cpu_snapshot();
    receiver.wait_for(backlog as u64).await?;
    let backlog_cpu = install.cpu_since(&cpu);
    let arrivals = receiver.take();
    println!(
        "\ncallback dispatcher alone: {backlog} due callbacks in PostgreSQL, delivered by its poll"
    );
    println!("  {:.0} callbacks/s delivered", callbacks::rate(&arrivals));
    println!("  CPU s: {backlog_cpu}");

    println!("\nFjord as a fraction of the raw baselines");
    println!(
        "  intake / JetStream publish:          {:.2}",
        intake.rate() / raw.publish
    );
    println!(
        "  end to end / JetStream pull + ack:   {:.2}",
        e2e.rate() / raw.pull
    );
    println!(
        "  end to end / PostgreSQL insert:      {:.2}",
        e2e.rate() / raw.insert
    );
    Ok(())
}
