//! What a function's processes print, kept per call (see `fjord_common::logs`): an exec
//! call's stderr belongs to that call; a long-lived http process's lines belong to the call in
//! flight when only one is, and to none in particular otherwise. Each call keeps at most
//! [`MAX_PER_CALL`] bytes, then one line saying the rest was not kept.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use fjord_common::CallId;
use fjord_common::logs::{LogWriter, MAX_LINE, MAX_PER_CALL};
use fjord_functions::Request;

#[derive(Clone)]
pub struct OutputLog {
    logs: LogWriter,
    /// Calls in flight and the bytes kept for each.
    calls: Arc<Mutex<HashMap<CallId, usize>>>,
}

/// A call in flight; dropping it (the call ended, or was abandoned) forgets it.
pub struct InFlight {
    calls: Arc<Mutex<HashMap<CallId, usize>>>,
    id: Option<CallId>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.calls.lock().expect("calls lock").remove(&id);
        }
    }
}

/// What becomes of a line, given the bytes its call has kept so far.
enum Keep {
    Line,
    /// The line that crosses the bound: replaced by a note saying so.
    Note,
    Drop,
}

fn bound(kept: &mut usize, len: usize) -> Keep {
    let before = *kept;
    *kept += len.min(MAX_LINE);
    if before > MAX_PER_CALL {
        Keep::Drop
    } else if *kept > MAX_PER_CALL {
        Keep::Note
    } else {
        Keep::Line
    }
}

/// The call a request belongs to (the worker sets `X-Call-Id`).
pub fn call_of(request: &Request) -> Option<CallId> {
    request.header("x-call-id").and_then(|v| v.parse().ok())
}

impl OutputLog {
    pub fn new(logs: LogWriter) -> Self {
        OutputLog {
            logs,
            calls: Arc::default(),
        }
    }

    /// Marks the request's call as in flight until the guard is dropped.
    pub fn track(&self, request: &Request) -> InFlight {
        let id = call_of(request);
        if let Some(id) = id {
            self.calls.lock().expect("calls lock").insert(id, 0);
        }
        InFlight {
            calls: self.calls.clone(),
            id,
        }
    }

    /// Keeps the lines of `text`, one call's own captured stream, for that call.
    pub async fn call_lines(&self, call: Option<CallId>, stream: &str, text: &str) {
        let mut kept = 0;
        for line in text.lines() {
            let keep = bound(&mut kept, line.len());
            self.keep(call, keep, stream, line).await;
        }
    }

    /// Keeps one line a long-lived process printed, for the call in flight if only one is.
    pub async fn line(&self, stream: &str, text: &str) {
        let (call, keep) = {
            let mut calls = self.calls.lock().expect("calls lock");
            let single = calls.len() == 1;
            match calls.iter_mut().next() {
                Some((id, kept)) if single => (Some(*id), bound(kept, text.len())),
                _ => (None, Keep::Line),
            }
        };
        self.keep(call, keep, stream, text).await;
    }

    async fn keep(&self, call: Option<CallId>, keep: Keep, stream: &str, text: &str) {
        match keep {
            Keep::Line => self.logs.line(call, stream, text).await,
            Keep::Note => {
                let note = format!("[fjord: output beyond {MAX_PER_CALL} bytes is not kept]");
                self.logs.line(call, "fjord", &note).await;
            }
            Keep::Drop => {}
        }
    }
}
