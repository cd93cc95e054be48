//! `fjord up`: the whole platform on one machine. Uses NATS at `NATS_URL` and PostgreSQL at
//! `DATABASE_URL` when they answer; otherwise starts its own (data under `FJORD_DATA_DIR`),
//! installing them with apt when it can. Then deploys the stack, starts the gateway and the
//! control process (which starts the workers), prints how to reach it, and on Ctrl-C stops
//! everything in order. A second run reuses the data.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use fjord_common::config::NatsArgs;
use fjord_common::queue::Queue;
use fjord_common::services::{self, LocalNats, LocalPostgres};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rand::Rng;
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use tokio::process::{Child, Command};

use crate::client::{Gateway, GatewayArgs, credentials, secrets_dir};
use crate::deploy::{self, LoadedStack};

#[derive(clap::Args)]
pub struct UpArgs {
    /// The stack to deploy.
    #[arg(short = 'f', long = "file", default_value = "functions/stack.yml")]
    pub file: PathBuf,
    /// Where Fjord keeps its own NATS and PostgreSQL data and generated credentials.
    #[arg(long, env = "FJORD_DATA_DIR", default_value = ".fjord")]
    pub data_dir: PathBuf,
    #[command(flatten)]
    pub nats: NatsArgs,
    /// PostgreSQL URL; its database is created when missing.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/fjord"
    )]
    pub database_url: String,
    /// Address the gateway listens on.
    #[arg(long, env = "FJORD_GATEWAY_ADDR", default_value = "127.0.0.1:8080")]
    pub gateway_addr: String,
}

/// Processes `up` started, stopped in reverse order.
#[derive(Default)]
struct Running {
    nats: Option<LocalNats>,
    postgres: Option<LocalPostgres>,
    children: Vec<(&'static str, Child)>,
}

impl Running {
    async fn stop(&mut self) {
        while let Some((name, mut child)) = self.children.pop() {
            if let Some(pid) = child.id() {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
            }
            if tokio::time::timeout(Duration::from_secs(40), child.wait())
                .await
                .is_err()
            {
                eprintln!("fjord: {name} did not stop in time; killing it");
                let _ = child.start_kill();
                let _ = child.wait().await;
            }
        }
        if let Some(pg) = &mut self.postgres {
            pg.stop().await;
        }
        if let Some(nats) = &mut self.nats {
            nats.stop().await;
        }
    }
}

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let data_dir = args.data_dir.canonicalize()?;
    let stack = deploy::load(&args.file)?;
    let mut running = Running::default();
    let result = start(&args, &data_dir, &stack, &mut running).await;
    if let Err(e) = &result {
        eprintln!("fjord: {e:#}");
    }
    running.stop().await;
    println!("Fjord stopped.");
    result
}

async fn start(
    args: &UpArgs,
    data_dir: &Path,
    stack: &LoadedStack,
    running: &mut Running,
) -> anyhow::Result<()> {
    ensure_runtimes(stack).await?;
    let nats_url = ensure_nats(&args.nats.nats_url, data_dir, running).await?;
    let database_url = ensure_postgres(&args.database_url, data_dir, running).await?;
    let (user, password) = ensure_credentials(data_dir)?;
    let callback_secret = ensure_callback_secret(data_dir)?;
    // Before anything serves reads (the control process applies them too, idempotently).
    fjord_common::store::migrate(&database_url)
        .await
        .context("applying migrations")?;

    // Creates the stream and buckets before the gateway and control process start.
    Queue::connect(&nats_url, args.nats.names()?).await?;

    let bin_dir = std::env::current_exe()?
        .parent()
        .map(Path::to_path_buf)
        .context("locating the fjord binaries")?;
    let env = [
        ("FJORD_CALLBACK_SECRET", callback_secret),
        ("NATS_URL", nats_url.clone()),
        ("FJORD_NATS_PREFIX", args.nats.nats_prefix.clone()),
        ("DATABASE_URL", database_url.clone()),
        ("FJORD_GATEWAY_ADDR", args.gateway_addr.clone()),
        (
            "FJORD_BASIC_AUTH_FILE_DIR",
            secrets_dir(data_dir).display().to_string(),
        ),
        (
            "FJORD_WORK_DIR",
            std::env::var("FJORD_WORK_DIR").unwrap_or_else(|_| {
                // As root, functions run as their own users, who must be able to reach the work
                // dir: a data dir under a private home would not do.
                if nix::unistd::geteuid().is_root() {
                    format!("/var/lib/fjord/{}/work", args.nats.nats_prefix)
                } else {
                    data_dir.join("work").display().to_string()
                }
            }),
        ),
    ];
    let control = spawn(&bin_dir, "fjord-worker", &["control"], &env)?;
    running.children.push(("control", control));
    let gateway = spawn(&bin_dir, "fjord-gateway", &[], &env)?;
    running.children.push(("gateway", gateway));

    let url = format!("http://{}", args.gateway_addr);
    wait_healthy(&url, running).await?;
    let gateway = Gateway::new(
        &GatewayArgs {
            gateway: Some(url.clone()),
            data_dir: data_dir.to_path_buf(),
        },
        None,
    )?;
    let names = deploy::deploy(&gateway, stack).await?;
    println!("Fjord is up.");
    println!("  gateway     {url}");
    println!("  dashboard   {url}/ui/  (metrics: {url}/metrics)");
    println!("  user        {user}");
    println!("  password    {password}");
    println!("  credentials {}", secrets_dir(data_dir).display());
    println!(
        "  callbacks   signed with the secret in {}",
        secrets_dir(data_dir).join(CALLBACK_SECRET_FILE).display()
    );
    println!(
        "  NATS        {nats_url}{}",
        if running.nats.is_some() {
            " (started by fjord)"
        } else {
            ""
        }
    );
    println!(
        "  PostgreSQL  {database_url}{}",
        if running.postgres.is_some() {
            " (started by fjord)"
        } else {
            ""
        }
    );
    println!("  functions   {}", names.join(", "));
    println!("Try: curl -i -X POST {url}/async-function/echo -d hello");
    println!("Press Ctrl-C to stop.");

    tokio::select! {
        _ = fjord_common::signal::terminated() => Ok(()),
        (name, status) = first_exit(running) => bail!("{name} exited unexpectedly ({status})"),
    }
}

/// Resolves when any child exits, naming it.
async fn first_exit(running: &mut Running) -> (&'static str, String) {
    loop {
        for (name, child) in running.children.iter_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                return (name, status.to_string());
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn spawn(
    bin_dir: &Path,
    exe: &str,
    args: &[&str],
    env: &[(&str, String)],
) -> anyhow::Result<Child> {
    let path = bin_dir.join(exe);
    if !path.exists() {
        bail!(
            "{} is missing: build all binaries with `cargo build --release --bins`",
            path.display()
        );
    }
    let mut command = Command::new(&path);
    command.args(args).stdin(Stdio::null()).kill_on_drop(true);
    for (k, v) in env {
        command.env(k, v);
    }
    command
        .spawn()
        .with_context(|| format!("starting {}", path.display()))
}

async fn wait_healthy(url: &str, running: &mut Running) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(format!("{url}/healthz")).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        for (name, child) in running.children.iter_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                bail!("{name} exited during start-up ({status})");
            }
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the gateway did not become healthy at {url} within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn host_port(url: &str, default_port: u16) -> anyhow::Result<(String, u16)> {
    let parsed = url::Url::parse(url).with_context(|| format!("parsing {url}"))?;
    let host = parsed.host_str().unwrap_or("127.0.0.1").to_owned();
    Ok((host, parsed.port().unwrap_or(default_port)))
}

async fn answers(host: &str, port: u16) -> bool {
    matches!(
        tokio::time::timeout(
            Duration::from_secs(1),
            tokio::net::TcpStream::connect((host, port))
        )
        .await,
        Ok(Ok(_))
    )
}

fn is_local(host: &str) -> bool {
    matches!(host, "127.0.0.1" | "localhost" | "::1" | "[::1]")
}

/// The programs the stack's template functions run and install with: Node.js and npm for
/// `node18`/`node20`, Python 3 and pip for `python3-http`.
async fn ensure_runtimes(stack: &LoadedStack) -> anyhow::Result<()> {
    let langs: Vec<&str> = stack.specs.iter().map(|s| s.lang.as_str()).collect();
    if langs.iter().any(|l| l.starts_with("node")) {
        services::ensure_program("node", "nodejs").await?;
        services::ensure_program("npm", "npm").await?;
    }
    if langs.contains(&"python3-http") {
        services::ensure_program("python3", "python3").await?;
        let pip = tokio::process::Command::new("/usr/bin/python3")
            .args(["-m", "pip", "--version"])
            .output()
            .await;
        if !pip.is_ok_and(|o| o.status.success()) {
            services::install("python3-pip").await?;
        }
    }
    Ok(())
}

async fn ensure_nats(url: &str, data_dir: &Path, running: &mut Running) -> anyhow::Result<String> {
    let (host, port) = host_port(url, 4222)?;
    if answers(&host, port).await {
        return Ok(url.to_owned());
    }
    if !is_local(&host) {
        bail!("no NATS server answers at {url}");
    }
    if services::find_nats_server().is_none() {
        println!("nats-server is not installed; installing it");
        services::install("nats-server").await?;
    }
    println!(
        "starting nats-server on port {port} (data in {})",
        data_dir.join("nats").display()
    );
    let nats = LocalNats::start(&data_dir.join("nats"), port).await?;
    let url = nats.url();
    running.nats = Some(nats);
    Ok(url)
}

async fn ensure_postgres(
    url: &str,
    data_dir: &Path,
    running: &mut Running,
) -> anyhow::Result<String> {
    let options: PgConnectOptions = url
        .parse()
        .with_context(|| format!("parsing DATABASE_URL {url}"))?;
    let database = options.get_database().unwrap_or("fjord").to_owned();
    let (host, port) = (options.get_host().to_owned(), options.get_port());
    let url = if answers(&host, port).await {
        url.to_owned()
    } else {
        if !is_local(&host) {
            bail!("no PostgreSQL server answers at {host}:{port}");
        }
        if services::find_postgres_bin_dir().is_none() {
            println!("PostgreSQL is not installed; installing it");
            services::install("postgresql").await?;
        }
        println!(
            "starting PostgreSQL on port {port} (data in {})",
            data_dir.join("postgres").display()
        );
        let pg = LocalPostgres::start(&data_dir.join("postgres"), port).await?;
        let url = pg.url(&database);
        running.postgres = Some(pg);
        url
    };
    create_database(&url, &database).await?;
    Ok(url)
}

/// Creates the database when it does not exist, through the server's `postgres` database.
async fn create_database(url: &str, database: &str) -> anyhow::Result<()> {
    let options: PgConnectOptions = url.parse()?;
    let mut conn = PgConnection::connect_with(&options.clone().database("postgres"))
        .await
        .context("connecting to PostgreSQL")?;
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(database)
        .fetch_optional(&mut conn)
        .await?;
    if exists.is_none() {
        let sql = format!("CREATE DATABASE \"{}\"", database.replace('"', "\"\""));
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await?;
        println!("created database {database}");
    }
    Ok(())
}

/// Credentials from the environment or the secrets folder; generated once when neither has any.
fn ensure_credentials(data_dir: &Path) -> anyhow::Result<(String, String)> {
    let dir = secrets_dir(data_dir);
    if let Some(found) = credentials(data_dir) {
        if std::env::var_os("FJORD_BASIC_AUTH_USER").is_some() {
            write_secrets(&dir, &found.0, &found.1)?;
        }
        return Ok(found);
    }
    let password: String = rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(24)
        .map(char::from)
        .collect();
    write_secrets(&dir, "admin", &password)?;
    Ok(("admin".to_owned(), password))
}

fn write_secrets(dir: &Path, user: &str, password: &str) -> anyhow::Result<()> {
    write_secret(dir, "basic-auth-user", user)?;
    write_secret(dir, "basic-auth-password", password)
}

fn write_secret(dir: &Path, name: &str, value: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    let path = dir.join(name);
    std::fs::write(&path, value)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

/// The file in the secrets folder holding the callback signing secret.
pub const CALLBACK_SECRET_FILE: &str = "callback-secret";

/// `FJORD_CALLBACK_SECRET` when set, else the one stored in the secrets folder, generated the
/// first time: callbacks are always signed.
fn ensure_callback_secret(data_dir: &Path) -> anyhow::Result<String> {
    if let Ok(secret) = std::env::var("FJORD_CALLBACK_SECRET")
        && !secret.trim().is_empty()
    {
        return Ok(secret);
    }
    let dir = secrets_dir(data_dir);
    if let Ok(secret) = std::fs::read_to_string(dir.join(CALLBACK_SECRET_FILE)) {
        return Ok(secret.trim().to_owned());
    }
    let secret = fjord_common::callback::Signer::generate();
    write_secret(&dir, CALLBACK_SECRET_FILE, &secret)?;
    Ok(secret)
}
