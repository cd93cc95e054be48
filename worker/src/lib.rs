//! `fjord-worker`: the worker loop that runs one function's calls (`run`), and the control
//! process (`control`) that records outcomes in PostgreSQL, delivers callbacks and keeps worker
//! processes running.

pub mod control;
pub mod dispatcher;
mod lease;
pub mod prepare;
pub mod recorder;
pub mod retire;
pub mod retrier;
pub mod runtime;
pub mod worker;
