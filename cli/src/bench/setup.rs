//! The installation a benchmark runs against: a fresh database and NATS prefix, the gateway and
//! a control process (recorder only) from the binaries next to `fjord`, and worker processes
//! started on demand.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use fjord_common::queue::{ConsumerSettings, Names, Queue};
use fjord_common::registry::Registry;
use fjord_common::stack::FunctionSpec;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use super::BenchArgs;
use super::cpu::{Snapshot, Usage, pids_named};

pub struct Installation {
    pub database_url: String,
    admin_url: String,
    database: String,
    gateway_url: String,
    /// The control process's `/metrics`.
    pub metrics_url: String,
    queue: Queue,
    pool: sqlx::PgPool,
    gateway: Child,
    control: Child,
    workers: Vec<Child>,
    bin_dir: PathBuf,
    env: Vec<(&'static str, String)>,
}

/// What the recorded rows of a phase say.
pub struct Recorded {
    pub calls: i64,
    pub seconds: f64,
    pub start_p50_ms: f64,
    pub start_p99_ms: f64,
}

impl Recorded {
    pub fn rate(&self) -> f64 {
        self.calls as f64 / self.seconds
    }
}

/// A built-in function for a phase.
pub fn spec(name: &str, handler: &str, max_inflight: u32, labels: &[(&str, &str)]) -> FunctionSpec {
    FunctionSpec {
        name: name.parse().expect("valid name"),
        lang: "builtin".into(),
        handler: handler.into(),
        image: None,
        environment: [("max_inflight".to_owned(), max_inflight.to_string())].into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        annotations: Default::default(),
        secrets: Vec::new(),
        limits: None,
        requests: None,
        package: None,
        incarnation: String::new(),
    }
}

impl Installation {
    /// Deploys `functions` and starts the gateway and a control process, which starts and scales
    /// workers itself when `autoscale` is set (otherwise [`Self::start_workers`] does).
    pub async fn start(
        args: &BenchArgs,
        functions: &[FunctionSpec],
        autoscale: bool,
    ) -> anyhow::Result<Self> {
        let id = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
        let prefix = format!("bench{id}");
        let database = format!("fjord_bench_{id}");
        let with_database = |db: &str| -> anyhow::Result<String> {
            let mut url = url::Url::parse(&args.database_url)?;
            url.set_path(&format!("/{db}"));
            Ok(url.to_string())
        };
        let admin_url = with_database("postgres")?;
        let admin = sqlx::PgPool::connect(&admin_url)
            .await
            .context("connecting to PostgreSQL")?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}")))
            .execute(&admin)
            .await?;
        admin.close().await;
        let database_url = with_database(&database)?;
        fjord_common::store::migrate(&database_url).await?;

        let queue = Queue::connect(&args.nats_url, Names::new(&prefix)?).await?;
        let registry = Registry::open(&queue).await?;
        for spec in functions {
            registry
                .deploy(
                    &queue,
                    spec,
                    &ConsumerSettings::for_spec(spec, Duration::from_secs(30))?,
                )
                .await?;
        }
        let port = fjord_common::services::free_port()?;
        let metrics_port = fjord_common::services::free_port()?;
        let password = uuid::Uuid::new_v4().simple().to_string();
        let env = vec![
            ("NATS_URL", args.nats_url.clone()),
            ("FJORD_NATS_PREFIX", prefix),
            ("DATABASE_URL", database_url.clone()),
            ("FJORD_GATEWAY_ADDR", format!("127.0.0.1:{port}")),
            (
                "FJORD_CONTROL_METRICS_ADDR",
                format!("127.0.0.1:{metrics_port}"),
            ),
            ("FJORD_BASIC_AUTH_USER", "bench".into()),
            ("FJORD_BASIC_AUTH_PASSWORD", password),
            ("RUST_LOG", "warn".into()),
            ("FJORD_CALLBACK_ALLOW_NETS", "127.0.0.0/8".into()),
            (
                "FJORD_CALLBACK_SECRET",
                fjord_common::callback::Signer::generate(),
            ),
        ];
        let bin_dir = std::env::current_exe()?
            .parent()
            .context("binary folder")?
            .to_path_buf();
        let spawn = |exe: &str, args: &[&str]| -> anyhow::Result<Child> {
            let path = bin_dir.join(exe);
            if !path.exists() {
                bail!(
                    "{} is missing: build with `cargo build --release --bins`",
                    path.display()
                );
            }
            let mut c = Command::new(path);
            c.args(args).stdin(Stdio::null()).kill_on_drop(true);
            for (k, v) in &env {
                c.env(k, v);
            }
            Ok(c.spawn()?)
        };
        let control = if autoscale {
            spawn("fjord-worker", &["control"])?
        } else {
            spawn("fjord-worker", &["control", "--no-spawn"])?
        };
        let gateway = spawn("fjord-gateway", &[])?;
        let gateway_url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !http
            .get(format!("{gateway_url}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            if tokio::time::Instant::now() > deadline {
                bail!("the gateway did not come up");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let pool = sqlx::PgPool::connect_with(fjord_common::store::connect_options(&database_url)?)
            .await?;
        Ok(Installation {
            database_url,
            admin_url,
            database,
            gateway_url,
            metrics_url: format!("http://127.0.0.1:{metrics_port}/metrics"),
            queue,
            pool,
            gateway,
            control,
            workers: Vec::new(),
            bin_dir,
            env,
        })
    }

    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    pub fn pool(&self) -> &sqlx::PgPool {
        &self.pool
    }

    pub fn control_pid(&self) -> Option<u32> {
        self.control.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gateway_url)
    }

    fn roles(&self) -> Vec<(&'static str, Vec<u32>)> {
        vec![
            ("gateway", self.gateway.id().into_iter().collect()),
            ("control", self.control.id().into_iter().collect()),
            (
                "workers",
                self.workers.iter().filter_map(Child::id).collect(),
            ),
            ("nats-server", pids_named("nats-server")),
            ("postgres", pids_named("postgres")),
            ("load generator", vec![std::process::id()]),
        ]
    }

    pub fn cpu_snapshot(&self) -> Snapshot {
        Snapshot::take(&self.roles())
    }

    pub fn cpu_since(&self, before: &Snapshot) -> Usage {
        Usage::between(before, &Snapshot::take(&self.roles()))
    }

    pub async fn start_workers(&mut self, function: &str, n: usize) -> anyhow::Result<()> {
        for _ in 0..n {
            let mut c = Command::new(self.bin_dir.join("fjord-worker"));
            c.args(["run", "--function", function])
                .stdin(Stdio::null())
                .kill_on_drop(true);
            for (k, v) in &self.env {
                c.env(k, v);
            }
            self.workers.push(c.spawn()?);
        }
        // Warm: wait until each answers the head count.
        let name = function.parse()?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let info = self
                .queue
                .function_consumer(&name)
                .await?
                .get_info()
                .await?;
            if info.num_waiting >= n {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("workers did not start");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Removes a function's backlog (its consumer) once its phase is measured, and waits for
    /// the recorder to catch up so the next phase starts from a quiet system.
    pub async fn drain(&self, function: &str) -> anyhow::Result<()> {
        self.queue
            .delete_function_consumer(&function.parse()?)
            .await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
        loop {
            let (last, floor) = self.queue.recorder_progress().await?;
            if floor >= last {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("the recorder did not catch up");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until `expected` calls to `function` created since `since` are recorded
    /// succeeded, then reads the phase's figures from their rows. `seconds` is wall-clock time
    /// from `began` (the phase's first POST) to the moment the last row was seen recorded.
    pub async fn wait_recorded(
        &self,
        function: &str,
        since: DateTime<Utc>,
        began: std::time::Instant,
        expected: u64,
    ) -> anyhow::Result<Recorded> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
        let seconds = loop {
            let done: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM invocations WHERE function = $1 AND created_at >= $2 AND status = 'succeeded'",
            )
            .bind(function)
            .bind(since)
            .fetch_one(&self.pool)
            .await?;
            if done as u64 >= expected {
                break began.elapsed().as_secs_f64();
            }
            if tokio::time::Instant::now() > deadline {
                bail!("only {done} of {expected} calls were recorded");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let (calls, p50, p99): (i64, f64, f64) = sqlx::query_as(
            "SELECT count(*),
                    (percentile_cont(0.5) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM started_at - created_at)) * 1000)::float8,
                    (percentile_cont(0.99) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM started_at - created_at)) * 1000)::float8
             FROM invocations WHERE function = $1 AND created_at >= $2",
        )
        .bind(function)
        .bind(since)
        .fetch_one(&self.pool)
        .await?;
        Ok(Recorded {
            calls,
            seconds,
            start_p50_ms: p50,
            start_p99_ms: p99,
        })
    }

    /// Waits until the call is recorded in a final state.
    pub async fn wait_final(&self, id: uuid::Uuid) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let status: Option<String> =
                sqlx::query_scalar("SELECT status FROM invocations WHERE call_id = $1")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
            if status
                .is_some_and(|s| fjord_common::invocation::FINAL_STATUSES.contains(&s.as_str()))
            {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("call {id} did not finish");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Writes `n` final calls of `function` whose callbacks to `url` are due, as the recorder
    /// would have left them, for the dispatcher's poll to take.
    pub async fn pending_callbacks(&self, function: &str, url: &str, n: i64) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO invocations (call_id, function, status, attempts, created_at, started_at,
                                      finished_at, duration_seconds, function_status, final_seq,
                                      callback_url, callback_host, callback_state, callback_round_at,
                                      callback_next_at, result_headers, result_body)
             SELECT gen_random_uuid(), $1, 'succeeded', 1, now(), now(), now(), 0, 200, i, $2,
                    '127.0.0.1', 'pending', now(), now(),
                    '[[\"Content-Type\",\"application/octet-stream\"]]'::jsonb, convert_to(repeat('x', 1024), 'UTF8')
             FROM generate_series(1, $3) AS i",
        )
        .bind(function)
        .bind(url)
        .bind(n)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// When each call to `function` created since `since` finished, by call id.
    pub async fn finished_at(
        &self,
        function: &str,
        since: DateTime<Utc>,
    ) -> anyhow::Result<std::collections::HashMap<uuid::Uuid, DateTime<Utc>>> {
        let rows: Vec<(uuid::Uuid, DateTime<Utc>)> = sqlx::query_as(
            "SELECT call_id, finished_at FROM invocations
             WHERE function = $1 AND created_at >= $2 AND finished_at IS NOT NULL",
        )
        .bind(function)
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().collect())
    }

    pub async fn stop(&mut self) {
        for child in self
            .workers
            .iter_mut()
            .chain([&mut self.gateway, &mut self.control])
        {
            if let Some(pid) = child.id() {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
            }
            let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
            let _ = child.start_kill();
        }
        self.pool.close().await;
        for stream in self.queue.names.streams() {
            let _ = self.queue.js.delete_stream(stream).await;
        }
        if let Ok(admin) = sqlx::PgPool::connect(&self.admin_url).await {
            let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.database);
            let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&admin).await;
        }
    }
}
