//! `fjord-worker`: the worker loop that runs one function's calls (`run`), and the control
//! process (`control`) that records outcomes in PostgreSQL, delivers callbacks and starts and
//! stops worker processes as calls come and go.

pub mod autoscale;
pub mod control;
pub mod dispatcher;
mod lease;
pub mod metrics;
pub mod prepare;
pub mod recorder;
pub mod retire;
pub mod retrier;
pub mod runtime;
pub mod sampler;
pub mod worker;
