//! Fjord's end-to-end tests: real NATS JetStream, real PostgreSQL, real HTTP. One binary; every
//! test has its own database and NATS prefix, so they run in parallel.

mod faults;
mod intake;
mod properties;
mod quickstart;
mod status;
mod sync;
