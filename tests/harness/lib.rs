//! The end-to-end test harness. Each test gets its own PostgreSQL database (created, migrated,
//! dropped) and its own NATS prefix (stream, subjects, consumers, buckets: deleted at the end),
//! so tests run in parallel against one NATS server and one PostgreSQL server.
//!
//! Servers: `NATS_URL` / `DATABASE_URL` when set; else the standard local ports when they answer;
//! else throwaway `nats-server` / PostgreSQL processes started here. Tests that must kill a
//! server start their own with [`fjord_common::services`].

pub mod netns;
pub mod receiver;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use fjord_common::callback::{Networks, Signer};
use fjord_common::functions::Functions;
use fjord_common::queue::{ConsumerSettings, Names, Queue};
use fjord_common::registry::Registry;
use fjord_common::services::{LocalNats, LocalPostgres};
use fjord_common::stack::FunctionSpec;
use fjord_common::store::{self, Store};
use fjord_gateway::config::Credentials;
use fjord_gateway::pressure::Pressure;
use fjord_gateway::{AppState, Settings};
use fjord_worker::dispatcher::{self, DispatchConfig};
use fjord_worker::metrics::ControlMetrics;
use fjord_worker::worker::{self, WorkerOptions};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub const USER: &str = "admin";
pub const PASSWORD: &str = "test-password";
/// The callback signing secrets of every test platform (two, as during a rotation).
pub const CALLBACK_SECRETS: &str =
    "whsec_dGVzdC1jYWxsYmFjay1zZWNyZXQtb25l,whsec_dGVzdC1jYWxsYmFjay1zZWNyZXQtdHdv";
/// Loopback is refused by default; tests' receivers listen there.
pub const CALLBACK_ALLOW_NETS: &str = "127.0.0.0/8";

/// The status and `code` of an error answer, checking it is the JSON error format with a
/// message.
pub async fn error_code(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    let v: Value = r.json().await.expect("error body is JSON");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    (status, v["code"].as_str().unwrap().to_owned())
}

/// A unique, short id for names.
pub fn unique(tag: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{tag}{}", &id[..12])
}

/// An HTTP client (installs the TLS crypto provider reqwest needs first). A request that gets
/// no answer within a minute fails, so a hang shows as an error, not as a test timeout.
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// Whether a test that needs something optional must fail instead of skipping.
pub fn require_all() -> bool {
    std::env::var("FJORD_REQUIRE_ALL").is_ok_and(|v| v == "1")
}

/// For a test that needs an optional tool: `true` when it is there; otherwise the test skips
/// itself saying why (returns `false`), or fails under `FJORD_REQUIRE_ALL=1`.
pub fn available(present: bool, what: &str) -> bool {
    if present {
        return true;
    }
    assert!(
        !require_all(),
        "{what} is required (FJORD_REQUIRE_ALL=1) but missing"
    );
    eprintln!("skipping: {what} is missing");
    false
}

/// Whether this machine can start its own PostgreSQL and nats-server processes.
pub fn can_start_servers() -> bool {
    available(
        fjord_common::services::find_postgres_bin_dir().is_some()
            && fjord_common::services::find_nats_server().is_some(),
        "PostgreSQL server binaries and nats-server (to start servers the test can stop)",
    )
}

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn answers(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
}

/// Servers started by this test process when none was configured or running.
struct OwnServers {
    _nats: Option<LocalNats>,
    _postgres: Option<LocalPostgres>,
    #[cfg(feature = "testcontainers")]
    _containers: Vec<Box<dyn std::any::Any + Send + Sync>>,
    nats_url: String,
    admin_url: String,
}

/// NATS (with JetStream) and PostgreSQL as containers, for machines with a Docker engine but
/// neither the servers nor their binaries. Returns the URLs and the handles that keep the
/// containers alive.
#[cfg(feature = "testcontainers")]
async fn containers(
    nats: bool,
    postgres: bool,
) -> (
    Option<String>,
    Option<String>,
    Vec<Box<dyn std::any::Any + Send + Sync>>,
) {
    use testcontainers_modules::nats::{Nats, NatsServerCmd};
    use testcontainers_modules::postgres::Postgres;
    use testcontainers_modules::testcontainers::ImageExt;
    use testcontainers_modules::testcontainers::runners::AsyncRunner;
    let mut handles: Vec<Box<dyn std::any::Any + Send + Sync>> = Vec::new();
    let mut nats_url = None;
    let mut admin_url = None;
    if nats {
        let cmd = NatsServerCmd::default().with_jetstream();
        let c = Nats::default()
            .with_cmd(&cmd)
            .start()
            .await
            .expect("starting a NATS container");
        let port = c.get_host_port_ipv4(4222).await.expect("NATS port");
        nats_url = Some(format!("nats://127.0.0.1:{port}"));
        handles.push(Box::new(c));
    }
    if postgres {
        let c = Postgres::default()
            .start()
            .await
            .expect("starting a PostgreSQL container");
        let port = c.get_host_port_ipv4(5432).await.expect("PostgreSQL port");
        admin_url = Some(format!(
            "postgres://postgres:postgres@127.0.0.1:{port}/postgres"
        ));
        handles.push(Box::new(c));
    }
    (nats_url, admin_url, handles)
}

static SERVERS: tokio::sync::OnceCell<OwnServers> = tokio::sync::OnceCell::const_new();

async fn servers() -> &'static OwnServers {
    SERVERS
        .get_or_init(|| async {
            let scratch = std::env::temp_dir().join(unique("fjord-harness-"));
            let nats_configured = match std::env::var("NATS_URL") {
                Ok(url) => Some(url),
                Err(_) if answers(4222).await => Some("nats://127.0.0.1:4222".to_owned()),
                Err(_) => None,
            };
            let postgres_configured = match std::env::var("DATABASE_URL") {
                Ok(url) => Some(url),
                Err(_) if answers(5432).await => {
                    Some("postgres://postgres@127.0.0.1:5432/postgres".to_owned())
                }
                Err(_) => None,
            };
            // Neither configured nor running nor installed: containers, where the build has them.
            #[cfg(feature = "testcontainers")]
            let (nats_configured, postgres_configured, containers) = {
                let need_nats = nats_configured.is_none()
                    && fjord_common::services::find_nats_server().is_none();
                let need_pg = postgres_configured.is_none()
                    && fjord_common::services::find_postgres_bin_dir().is_none();
                let (n, p, handles) = containers(need_nats, need_pg).await;
                (nats_configured.or(n), postgres_configured.or(p), handles)
            };
            let (nats, nats_url) = match nats_configured {
                Some(url) => (None, url),
                None => {
                    let n = LocalNats::start(&scratch.join("nats"), 0)
                        .await
                        .expect("starting nats-server");
                    let url = n.url();
                    (Some(n), url)
                }
            };
            let (postgres, admin_url) = match postgres_configured {
                Some(url) => (None, url),
                None => {
                    let p = LocalPostgres::start(&scratch.join("postgres"), 0)
                        .await
                        .expect("starting PostgreSQL");
                    let url = p.url("postgres");
                    (Some(p), url)
                }
            };
            OwnServers {
                _nats: nats,
                _postgres: postgres,
                #[cfg(feature = "testcontainers")]
                _containers: containers,
                nats_url,
                admin_url,
            }
        })
        .await
}

pub async fn nats_url() -> String {
    servers().await.nats_url.clone()
}

/// A database of this test's own, dropped when the value is dropped.
pub struct TestDb {
    pub url: String,
    admin_url: String,
    pub name: String,
}

/// `url` with its database replaced.
pub fn with_database(url: &str, database: &str) -> String {
    let mut u = url::Url::parse(url).expect("database URL");
    u.set_path(&format!("/{database}"));
    u.to_string()
}

impl TestDb {
    /// Creates and migrates a fresh database on the server at `admin_url`.
    pub async fn create_on(admin_url: &str) -> TestDb {
        let name = unique("fjord_t_");
        let admin = sqlx::PgPool::connect(admin_url)
            .await
            .expect("connecting to PostgreSQL");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .expect("creating the test database");
        admin.close().await;
        let url = with_database(admin_url, &name);
        store::migrate(&url).await.expect("migrating");
        TestDb {
            url,
            admin_url: admin_url.to_owned(),
            name,
        }
    }

    pub async fn create() -> TestDb {
        Self::create_on(&servers().await.admin_url).await
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        blocking_cleanup(async move {
            if let Ok(admin) = sqlx::PgPool::connect(&admin_url).await {
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&admin)
                .await;
            }
        });
    }
}

/// Runs async cleanup from `Drop` (also while unwinding from a failed assertion).
fn blocking_cleanup<F: std::future::Future<Output = ()> + Send + 'static>(cleanup: F) {
    let _ = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let _ = tokio::time::timeout(Duration::from_secs(10), cleanup).await;
        });
    })
    .join();
}

/// How a test wants its platform.
#[derive(Clone)]
pub struct Options {
    pub nats_url: Option<String>,
    pub admin_database_url: Option<String>,
    pub max_body: usize,
    pub sync_timeout: Duration,
    pub publish_timeout: Duration,
    pub read_wait: Duration,
    /// Lease length of function consumers created by [`Platform::deploy`].
    pub ack_wait: Duration,
    /// Run the recorder in this process.
    pub recorder: bool,
    /// Run the callback dispatcher in this process (with the recorder), with these settings.
    pub dispatcher: Option<DispatchConfig>,
    /// `FJORD_CALLBACK_ALLOW_NETS` of the gateway.
    pub gateway_allow_nets: String,
    pub idempotency_window: Duration,
    /// The call stream's byte cap (0: none), set before the gateway starts.
    pub stream_max_bytes: u64,
    /// A PgBouncer (transaction pooling) URL on the test database's server: the platform's
    /// store goes through it, with `FJORD_PGBOUNCER`'s behaviour.
    pub pgbouncer_url: Option<String>,
    /// Where the gateway's and in-process workers' spans go (the dispatcher's: in
    /// `dispatcher`'s config).
    pub tracer: fjord_common::otlp::Tracer,
}

/// The dispatcher settings tests use: loopback allowed, [`CALLBACK_SECRETS`], quick polls.
pub fn dispatch_config() -> DispatchConfig {
    DispatchConfig {
        signer: Signer::parse(CALLBACK_SECRETS).unwrap(),
        networks: Networks::parse(CALLBACK_ALLOW_NETS).unwrap(),
        poll_interval: Duration::from_millis(50),
        ..DispatchConfig::default()
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            nats_url: None,
            admin_database_url: None,
            max_body: 33_554_432,
            sync_timeout: Duration::from_secs(30),
            publish_timeout: Duration::from_millis(1500),
            read_wait: Duration::from_secs(1),
            ack_wait: Duration::from_secs(30),
            recorder: true,
            dispatcher: Some(dispatch_config()),
            gateway_allow_nets: CALLBACK_ALLOW_NETS.into(),
            idempotency_window: Duration::from_secs(24 * 3600),
            stream_max_bytes: 0,
            pgbouncer_url: None,
            tracer: Default::default(),
        }
    }
}

/// A whole installation for one test: gateway (on an ephemeral port) and recorder in this
/// process, workers in this process or as `fjord-worker` processes.
pub struct Platform {
    pub prefix: String,
    pub nats_url: String,
    pub queue: Queue,
    pub store: Store,
    pub db: TestDb,
    pub url: String,
    pub http: reqwest::Client,
    pub options: Options,
    /// This platform's worker work dir (functions' files, homes, secrets): workers of two
    /// tests never share one, even for functions of the same name.
    pub work_dir: PathBuf,
    /// What this platform's recorder, dispatcher and autoscaler count (the control process's
    /// `/metrics`).
    pub control_metrics: std::sync::Arc<ControlMetrics>,
    shutdown: CancellationToken,
    workers: Vec<CancellationToken>,
}

impl Platform {
    pub async fn start() -> Platform {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> Platform {
        fjord_common::telemetry::init();
        let nats_url = match &options.nats_url {
            Some(u) => u.clone(),
            None => nats_url().await,
        };
        let db = match &options.admin_database_url {
            Some(u) => TestDb::create_on(u).await,
            None => TestDb::create().await,
        };
        let prefix = unique("t");
        let queue = Queue::connect(&nats_url, Names::new(&prefix).unwrap())
            .await
            .expect("NATS");
        let store = match &options.pgbouncer_url {
            None => Store::connect(&db.url, 4).await.unwrap(),
            Some(url) => Store::connect_with(&with_database(url, &db.name), 4, true)
                .await
                .unwrap(),
        };
        let shutdown = CancellationToken::new();
        if options.stream_max_bytes > 0 {
            queue
                .limit_stream_bytes(options.stream_max_bytes)
                .await
                .unwrap();
        }
        let url = serve_gateway(&queue, &store, &options, shutdown.clone()).await;
        let control_metrics = std::sync::Arc::new(ControlMetrics::default());
        if options.recorder {
            let handoff = match &options.dispatcher {
                None => None,
                Some(config) => {
                    let functions = Functions::follow(&queue, shutdown.clone()).await.unwrap();
                    let (dispatcher, handoff) = dispatcher::new(
                        store.clone(),
                        functions,
                        config.clone(),
                        control_metrics.clone(),
                    )
                    .unwrap();
                    tokio::spawn(dispatcher.run(shutdown.clone()));
                    Some(handoff)
                }
            };
            let functions = Functions::follow(&queue, shutdown.clone()).await.unwrap();
            // The control process's queue sampler, every second (5 s in production).
            tokio::spawn(fjord_worker::sampler::run(
                queue.clone(),
                store.clone(),
                functions.clone(),
                Duration::from_secs(1),
                shutdown.clone(),
            ));
            tokio::spawn(fjord_worker::retrier::run(
                queue.clone(),
                store.clone(),
                functions,
                shutdown.clone(),
            ));
            tokio::spawn(fjord_worker::recorder::run(
                queue.clone(),
                store.clone(),
                handoff,
                control_metrics.clone(),
                shutdown.clone(),
            ));
            // The control process's retirement of removed functions, as in production.
            tokio::spawn(fjord_worker::retire::run(queue.clone(), shutdown.clone()));
        }
        Platform {
            prefix,
            nats_url,
            queue,
            store,
            db,
            url,
            http: http_client(),
            options,
            work_dir: std::env::temp_dir().join(unique("fjord-work-")),
            control_metrics,
            shutdown,
            workers: Vec::new(),
        }
    }

    /// Another gateway on the same installation (its own NATS connection, no recorder), as a
    /// second instance behind a load balancer would be. Returns its base URL.
    pub async fn second_gateway(&self) -> String {
        let queue = Queue::connect(&self.nats_url, Names::new(&self.prefix).unwrap())
            .await
            .unwrap();
        let store = Store::connect(&self.db.url, 2).await.unwrap();
        serve_gateway(&queue, &store, &self.options, self.shutdown.clone()).await
    }

    /// Deploys a built-in function under `name`.
    pub async fn deploy(&self, name: &str, handler: &str) -> FunctionSpec {
        self.deploy_spec(spec(name, handler)).await
    }

    pub async fn deploy_spec(&self, spec: FunctionSpec) -> FunctionSpec {
        let settings = ConsumerSettings::for_spec(&spec, self.options.ack_wait).unwrap();
        self.deploy_with(spec, settings).await
    }

    /// Deploys with consumer settings of the test's choosing (a small `max_ack_pending`).
    pub async fn deploy_with(
        &self,
        spec: FunctionSpec,
        settings: ConsumerSettings,
    ) -> FunctionSpec {
        let registry = Registry::open(&self.queue).await.unwrap();
        registry
            .deploy(&self.queue, &spec, &settings)
            .await
            .unwrap()
    }

    /// The function's definition as the registry holds it (with its incarnation).
    pub async fn queue_spec(&self, name: &str) -> Option<FunctionSpec> {
        let registry = Registry::open(&self.queue).await.unwrap();
        registry.get(&name.parse().unwrap()).await.unwrap()
    }

    /// Starts an in-process worker for a deployed function; it stops with the platform.
    pub async fn start_worker(&mut self, spec: &FunctionSpec) -> CancellationToken {
        let token = self.shutdown.child_token();
        let options = WorkerOptions {
            tracer: self.options.tracer.clone(),
            drain_grace: Duration::from_secs(5),
            work_dir: self.work_dir.clone(),
            cold_start: false,
        };
        let run = worker::run(
            self.queue.clone(),
            spec.name.clone(),
            options,
            token.clone(),
        );
        let name = spec.name.clone();
        tokio::spawn(async move {
            if let Err(e) = run.await {
                eprintln!("worker for {name} failed: {e}");
            }
        });
        self.workers.push(token.clone());
        token
    }

    /// The environment of this platform's `fjord-worker` processes.
    pub fn worker_env(&self) -> Vec<(String, String)> {
        [
            ("NATS_URL", self.nats_url.as_str()),
            ("FJORD_NATS_PREFIX", &self.prefix),
            ("DATABASE_URL", &self.db.url),
            ("FJORD_DRAIN_GRACE", "5s"),
            ("FJORD_WORK_DIR", &self.work_dir.to_string_lossy()),
            ("FJORD_CALLBACK_SECRET", CALLBACK_SECRETS),
            ("FJORD_CALLBACK_ALLOW_NETS", CALLBACK_ALLOW_NETS),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// A `fjord-worker` command set up for this platform (the caller adds arguments).
    pub fn worker_command(&self) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(bin("fjord-worker"));
        c.envs(self.worker_env()).kill_on_drop(true);
        c
    }

    /// Runs the control process's autoscaler in this process, starting real `fjord-worker`
    /// processes; it stops (and stops its workers) with the platform.
    pub fn start_autoscaler(&self, interval: Duration) -> std::sync::Arc<ControlMetrics> {
        let metrics = self.control_metrics.clone();
        let options = fjord_worker::autoscale::AutoscaleOptions {
            worker: fjord_worker::autoscale::WorkerCommand {
                exe: bin("fjord-worker"),
                env: self.worker_env(),
                stop_timeout: Duration::from_secs(10),
            },
            interval,
            metrics: metrics.clone(),
        };
        let run = fjord_worker::autoscale::run(self.queue.clone(), options, self.shutdown.clone());
        tokio::spawn(async move {
            if let Err(e) = run.await {
                eprintln!("the autoscaler failed: {e}");
            }
        });
        metrics
    }

    /// PIDs of this platform's worker processes for `function` (read from /proc).
    pub fn worker_pids(&self, function: &str) -> Vec<i32> {
        let wanted = format!("run\0--function\0{function}\0");
        let mut pids = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
                continue;
            };
            let prefix = format!("FJORD_NATS_PREFIX={}\0", self.prefix);
            let contains = |hay: &[u8], needle: &str| {
                hay.windows(needle.len()).any(|w| w == needle.as_bytes())
            };
            if contains(&cmdline, &wanted) && contains(&environ, &prefix) {
                pids.push(pid);
            }
        }
        pids
    }

    /// A `fjord-gateway` process for this platform listening on `addr` (the caller spawns it).
    pub fn gateway_command(&self, addr: std::net::SocketAddr) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(bin("fjord-gateway"));
        c.env("NATS_URL", &self.nats_url)
            .env("FJORD_NATS_PREFIX", &self.prefix)
            .env("DATABASE_URL", &self.db.url)
            .env("FJORD_GATEWAY_ADDR", addr.to_string())
            .env("FJORD_BASIC_AUTH_USER", USER)
            .env("FJORD_BASIC_AUTH_PASSWORD", PASSWORD)
            .env("FJORD_CALLBACK_ALLOW_NETS", CALLBACK_ALLOW_NETS)
            .kill_on_drop(true);
        c
    }

    /// Starts a worker process for a function.
    pub fn spawn_worker(&self, function: &str) -> tokio::process::Child {
        self.worker_command()
            .args(["run", "--function", function])
            .spawn()
            .expect("starting fjord-worker")
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.post(format!("{}{path}", self.url))
    }

    /// An authenticated request to the management API with any method.
    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.url))
            .basic_auth(USER, Some(PASSWORD))
    }

    /// A `fjord` command line pointed at this platform's gateway with its credentials (async:
    /// the gateway it talks to runs on the test's own runtime).
    pub fn cli(&self) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(bin("fjord"));
        c.env("FJORD_GATEWAY_URL", &self.url)
            .env("FJORD_BASIC_AUTH_USER", USER)
            .env("FJORD_BASIC_AUTH_PASSWORD", PASSWORD)
            .env_remove("OPENFAAS_URL");
        c
    }

    pub fn system(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .get(format!("{}{path}", self.url))
            .basic_auth(USER, Some(PASSWORD))
    }

    /// POSTs an async call and returns its id (asserting 202).
    pub async fn call_async(&self, function: &str, body: impl Into<reqwest::Body>) -> String {
        let r = self
            .post(&format!("/async-function/{function}"))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            202,
            "async call to {function}: {:?}",
            r.text().await
        );
        r.headers()["x-call-id"].to_str().unwrap().to_owned()
    }

    /// The status JSON of a call (asserting 200).
    pub async fn status(&self, call_id: &str) -> Value {
        let r = self
            .system(&format!("/system/invocations/{call_id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "status of {call_id}");
        r.json().await.unwrap()
    }

    /// Waits until the call is in one of the final states and returns its status JSON.
    pub async fn wait_final(&self, call_id: &str, timeout: Duration) -> Value {
        wait_for(&format!("call {call_id} to finish"), timeout, || async {
            let s = self.status(call_id).await;
            let status = s["status"].as_str().unwrap_or_default().to_owned();
            fjord_common::invocation::FINAL_STATUSES
                .contains(&status.as_str())
                .then_some(s)
        })
        .await
    }

    /// A token cancelled when the platform stops.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    pub fn stop_workers(&mut self) {
        for w in self.workers.drain(..) {
            w.cancel();
        }
    }
}

impl Drop for Platform {
    fn drop(&mut self) {
        self.shutdown.cancel();
        let nats_url = self.nats_url.clone();
        let prefix = self.prefix.clone();
        blocking_cleanup(async move {
            if let Ok(client) = async_nats::connect(&nats_url).await {
                let js = async_nats::jetstream::new(client);
                for stream in Names::new(&prefix).expect("valid prefix").streams() {
                    let _ = js.delete_stream(stream).await;
                }
            }
        });
        let _ = std::fs::remove_dir_all(&self.work_dir);
    }
}

/// Serves a gateway on an ephemeral port until `shutdown`; returns its base URL.
async fn serve_gateway(
    queue: &Queue,
    store: &Store,
    options: &Options,
    shutdown: CancellationToken,
) -> String {
    let functions = Functions::follow(queue, shutdown.clone()).await.unwrap();
    let pressure = Pressure::follow(queue.clone(), functions.clone(), shutdown.clone()).await;
    let state = AppState {
        queue: queue.clone(),
        store: store.clone(),
        functions,
        pressure,
        metrics: Default::default(),
        tracer: options.tracer.clone(),
        recent: Default::default(),
        settings: std::sync::Arc::new(Settings {
            max_body: options.max_body,
            sync_timeout: options.sync_timeout,
            publish_timeout: options.publish_timeout,
            read_wait: options.read_wait,
            ack_wait: options.ack_wait,
            credentials: Credentials {
                user: USER.into(),
                password: PASSWORD.into(),
            },
            callback_networks: Networks::parse(&options.gateway_allow_nets).unwrap(),
            idempotency_window: options.idempotency_window,
        }),
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(fjord_gateway::serve(listener, state, shutdown));
    url
}

/// A fresh folder every function user can read and write (scripts, marks, pid files).
pub fn shared_dir(tag: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(unique(tag));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

/// An `exec` function running the shell script `body`, written to `dir/<name>.sh`.
pub fn script_spec(name: &str, dir: &std::path::Path, body: &str) -> FunctionSpec {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(format!("{name}.sh"));
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut s = spec(name, "");
    s.lang = "exec".into();
    s.environment
        .insert("fprocess".into(), path.display().to_string());
    s
}

/// Whether a process is gone (or a zombie nobody reaped yet, which runs no more).
pub fn process_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

/// A built-in function definition.
pub fn spec(name: &str, handler: &str) -> FunctionSpec {
    FunctionSpec {
        name: name.parse().unwrap(),
        lang: "builtin".into(),
        handler: handler.into(),
        image: None,
        environment: Default::default(),
        labels: Default::default(),
        annotations: Default::default(),
        secrets: Vec::new(),
        limits: None,
        requests: None,
        package: None,
        incarnation: String::new(),
    }
}

/// Path of a workspace binary, built once per test process (cargo's lock serialises parallel
/// test processes; a no-op build takes a moment).
pub fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let exe = std::env::current_exe().expect("test exe");
        // target/<profile>/deps/e2e-<hash>
        let profile_dir = exe
            .parent()
            .and_then(|p| p.parent())
            .expect("target dir")
            .to_path_buf();
        let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = std::process::Command::new(cargo);
        build
            .current_dir(&workspace)
            .args(["build", "--quiet", "--workspace", "--bins"]);
        // The test runner's own CARGO_* variables (package name, manifest dir, ...) would be
        // seen by build scripts that rerun on environment changes, rebuilding half the
        // dependency tree on every test run: build as a plain `cargo build` would.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy().into_owned();
            let keep =
                ["CARGO_HOME", "CARGO_TARGET_DIR", "CARGO_INCREMENTAL"].contains(&key.as_str());
            if (key.starts_with("CARGO_") && !keep)
                || key.starts_with("NEXTEST")
                || key == "OUT_DIR"
            {
                build.env_remove(&key);
            }
        }
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("running cargo build");
        assert!(status.success(), "building the binaries failed");
        profile_dir
    });
    dir.join(name)
}
