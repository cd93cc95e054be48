//! `fjord-worker`: the worker loop that runs one function's calls (`run`), and the control
//! process (`control`) that records outcomes in PostgreSQL and keeps worker processes running.

pub mod control;
pub mod recorder;
pub mod worker;
