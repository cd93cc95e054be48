//! Pieces shared by every Fjord binary: the invocation model and its wire format, NATS subjects
//! and stream setup, the function registry, the PostgreSQL store and migrator, `stack.yml`
//! parsing and telemetry setup.

pub mod callback;
pub mod cancel;
pub mod cgroup;
pub mod config;
pub mod error;
pub mod functions;
pub mod ids;
pub mod invocation;
pub mod logs;
pub mod metrics;
pub mod otlp;
pub mod package;
pub mod queue;
pub mod registry;
pub mod retry;
pub mod scale;
pub mod secrets;
pub mod services;
pub mod signal;
pub mod stack;
pub mod store;
pub mod telemetry;
pub mod trace;

pub use error::Error;
pub use ids::{CallId, FunctionName};
