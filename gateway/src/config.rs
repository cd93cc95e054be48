//! The gateway's configuration: one flag and one environment variable per setting.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use fjord_common::config::{NatsArgs, duration_arg};

#[derive(Clone, Debug, clap::Parser)]
#[command(name = "fjord-gateway", version, about = "Fjord's HTTP gateway")]
pub struct GatewayConfig {
    #[command(flatten)]
    pub nats: NatsArgs,
    /// PostgreSQL URL, for status reads only (intake never waits on the database).
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// Address to listen on.
    #[arg(long, env = "FJORD_GATEWAY_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "FJORD_MAX_BODY", default_value_t = 33_554_432)]
    pub max_body: usize,
    /// Seconds a synchronous call (`/function/...`) waits before answering 504.
    #[arg(long, env = "FJORD_SYNC_TIMEOUT", default_value_t = 60)]
    pub sync_timeout: u64,
    /// How long intake waits for JetStream's acknowledgement before answering 503.
    #[arg(long, env = "FJORD_PUBLISH_TIMEOUT", default_value = "1500ms", value_parser = duration_arg)]
    pub publish_timeout: Duration,
    /// How long a status read of an unknown id waits for the recorder to catch up.
    #[arg(long, env = "FJORD_READ_WAIT", default_value = "1s", value_parser = duration_arg)]
    pub read_wait: Duration,
    /// Lease of a running call, set in a function's queue when it is deployed: a worker silent
    /// this long is presumed dead and its call is redelivered (running calls renew it; this is
    /// not an execution time limit).
    #[arg(long, env = "FJORD_ACK_WAIT", default_value = "30s", value_parser = duration_arg)]
    pub ack_wait: Duration,
    /// Address ranges callback URLs may point to although they are loopback, private or
    /// link-local (CIDR, comma-separated); give the control process the same list.
    #[arg(long, env = "FJORD_CALLBACK_ALLOW_NETS", default_value = "")]
    pub callback_allow_nets: String,
    /// How long repeats of a POST with the same `Idempotency-Key` name the same call.
    #[arg(long, env = "FJORD_IDEMPOTENCY_WINDOW", default_value = "24h", value_parser = duration_arg)]
    pub idempotency_window: Duration,
    /// `DATABASE_URL` points at PgBouncer in transaction-pooling mode: run every read in a
    /// transaction of unnamed statements.
    #[arg(long, env = "FJORD_PGBOUNCER", value_parser = clap::builder::BoolishValueParser::new(), num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub pgbouncer: bool,
    /// PostgreSQL connections for reads.
    #[arg(long, env = "FJORD_GATEWAY_DB_POOL", default_value_t = 4)]
    pub db_pool: u32,
    /// User name for /system/* (basic auth).
    #[arg(long, env = "FJORD_BASIC_AUTH_USER")]
    pub basic_auth_user: Option<String>,
    /// Password for /system/* (basic auth).
    #[arg(long, env = "FJORD_BASIC_AUTH_PASSWORD", hide_env_values = true)]
    pub basic_auth_password: Option<String>,
    /// Folder holding `basic-auth-user` and `basic-auth-password` files (as OpenFaaS mounts
    /// its secrets); used when the two variables above are not set.
    #[arg(long, env = "FJORD_BASIC_AUTH_FILE_DIR")]
    pub basic_auth_file_dir: Option<PathBuf>,
}

/// Basic-auth credentials for `/system/*`.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl GatewayConfig {
    /// The credentials from the variables, else from the secrets folder; an error if neither
    /// is configured, since `/system/*` is never served open.
    pub fn credentials(&self) -> Result<Credentials, String> {
        if let (Some(user), Some(password)) = (&self.basic_auth_user, &self.basic_auth_password) {
            return Ok(Credentials {
                user: user.clone(),
                password: password.clone(),
            });
        }
        if let Some(dir) = &self.basic_auth_file_dir {
            let read = |name: &str| {
                std::fs::read_to_string(dir.join(name))
                    .map(|s| s.trim().to_owned())
                    .map_err(|e| format!("reading {}: {e}", dir.join(name).display()))
            };
            return Ok(Credentials {
                user: read("basic-auth-user")?,
                password: read("basic-auth-password")?,
            });
        }
        Err("no credentials for /system/*: set FJORD_BASIC_AUTH_USER and FJORD_BASIC_AUTH_PASSWORD, \
             or FJORD_BASIC_AUTH_FILE_DIR"
            .into())
    }
}
