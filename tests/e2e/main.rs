//! Fjord's end-to-end tests: real NATS JetStream, real PostgreSQL, real HTTP. One binary; every
//! test has its own database and NATS prefix, so they run in parallel.

mod autoscale;
mod backpressure;
mod bad_input;
mod callbacks;
mod cancel;
mod dashboard;
mod deploy;
mod drain;
mod fault_suite;
mod faults;
mod idempotency;
mod image_resize;
mod intake;
mod k8s;
mod logs;
mod management;
mod metrics;
mod pdf;
mod pgbouncer;
mod properties;
mod quickstart;
mod retries;
mod runtimes;
mod status;
mod sync;
mod templates;
mod traces;
