//! The `Function` trait and Fjord's built-in functions. This crate knows nothing of NATS or
//! SQL: a function gets a request and returns a response, and the worker does the rest.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;

mod echo;
pub mod image_resize;
mod inspect;
pub mod pdf;
mod sleep;
pub mod templates;

/// One call as a function sees it.
#[derive(Clone, Debug, Default)]
pub struct Request {
    pub method: String,
    /// The sub-path after the function's name, starting with `/`.
    pub path: String,
    /// The raw query string without `?`.
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Request {
    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The first query parameter with this name (no percent-decoding: built-ins take plain
    /// values).
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .split('&')
            .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }
}

/// A function's answer; a status outside 2xx is a failure.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// Why a failed call failed, for the call's status (`error`): an exit code and a bounded
    /// stderr tail, a timeout, a memory kill, an unreachable upstream. `None` for a plain
    /// non-2xx answer, which the worker describes by its status code.
    pub reason: Option<String>,
}

impl Response {
    pub fn new(status: u16, content_type: &str, body: impl Into<Bytes>) -> Self {
        Response {
            status,
            headers: vec![("Content-Type".to_owned(), content_type.to_owned())],
            body: body.into(),
            reason: None,
        }
    }

    /// A failure the function could not answer itself (it did not run, crashed, timed out):
    /// `status` is what the caller sees, `reason` goes to the call's status.
    pub fn failure(status: u16, reason: impl Into<String>) -> Self {
        let reason = reason.into();
        Response {
            status,
            headers: vec![(
                "Content-Type".to_owned(),
                "text/plain; charset=utf-8".to_owned(),
            )],
            body: Bytes::from(format!("{reason}\n")),
            reason: Some(reason),
        }
    }

    pub fn bad_request(message: &str) -> Self {
        Response::new(400, "text/plain; charset=utf-8", format!("{message}\n"))
    }
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A function the worker can run. CPU-heavy bodies must move their work to a blocking thread
/// (`tokio::task::spawn_blocking`) so the worker keeps its lease alive meanwhile.
pub trait Function: Send + Sync {
    fn call(&self, request: Request) -> BoxFuture<'_, Response>;
}

/// The names `lang: builtin` accepts as `handler`.
pub const BUILTINS: [&str; 5] = ["echo", "sleep", "inspect", "image-resize", "pdf"];

/// Whether `handler` names a built-in; the error says which ones exist (the same words
/// wherever a definition is checked).
pub fn check_builtin(handler: &str) -> Result<(), String> {
    if BUILTINS.contains(&handler) {
        Ok(())
    } else {
        Err(format!(
            "no built-in {handler:?} (built-ins: {})",
            BUILTINS.join(", ")
        ))
    }
}

/// The built-in function called `handler`, if there is one.
pub fn builtin(handler: &str) -> Option<Arc<dyn Function>> {
    match handler {
        "echo" => Some(Arc::new(echo::Echo)),
        "sleep" => Some(Arc::new(sleep::Sleep)),
        "inspect" => Some(Arc::new(inspect::Inspect)),
        "pdf" => Some(Arc::new(pdf::Pdf)),
        "image-resize" => Some(Arc::new(image_resize::ImageResize::from_env())),
        _ => None,
    }
}
