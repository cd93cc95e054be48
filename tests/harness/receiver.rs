//! A real HTTP callback receiver for tests: records every request (time, path, headers, body)
//! and answers from a script (status, headers, delay), 200 at once when the script is empty.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// One request as it arrived.
#[derive(Clone, Debug)]
pub struct Received {
    pub at: Instant,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    }
}

/// A scripted answer.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// How long to wait before answering.
    pub delay: Duration,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            delay: Duration::ZERO,
        }
    }
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }
    pub fn after(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

#[derive(Default)]
struct Inner {
    received: Mutex<Vec<Received>>,
    script: Mutex<VecDeque<Reply>>,
    /// Answer every request this way once the script is used up (default 200 at once).
    otherwise: Mutex<Option<Reply>>,
    arrived: Notify,
}

#[derive(Clone)]
pub struct Receiver {
    /// `http://127.0.0.1:<port>` (or the address it was started on).
    pub url: String,
    inner: Arc<Inner>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        Self::start_on("127.0.0.1:0").await
    }

    /// Listens on `addr` (any 127.x.y.z works on Linux, for a second host name).
    pub async fn start_on(addr: &str) -> Receiver {
        let listener = TcpListener::bind(addr).await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let inner = Arc::new(Inner::default());
        let state = inner.clone();
        let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
            let state = state.clone();
            async move {
                let reply = {
                    state.received.lock().unwrap().push(Received {
                        at: Instant::now(),
                        path: uri.to_string(),
                        headers,
                        body,
                    });
                    state.arrived.notify_waiters();
                    let scripted = state.script.lock().unwrap().pop_front();
                    scripted.or_else(|| state.otherwise.lock().unwrap().clone())
                };
                let reply = reply.unwrap_or_else(|| Reply::status(200));
                tokio::time::sleep(reply.delay).await;
                let mut headers = HeaderMap::new();
                for (k, v) in &reply.headers {
                    headers.insert(
                        axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                        v.parse().unwrap(),
                    );
                }
                (StatusCode::from_u16(reply.status).unwrap(), headers, "").into_response()
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { url, inner }
    }

    /// Queues an answer for the next request without one.
    pub fn reply(&self, reply: Reply) {
        self.inner.script.lock().unwrap().push_back(reply);
    }

    /// How every request is answered once the script is used up.
    pub fn otherwise(&self, reply: Reply) {
        *self.inner.otherwise.lock().unwrap() = Some(reply);
    }

    pub fn received(&self) -> Vec<Received> {
        self.inner.received.lock().unwrap().clone()
    }

    /// Waits until at least `n` requests arrived; panics after `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let arrived = self.inner.arrived.notified();
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                panic!(
                    "{} of {n} callbacks arrived at {} within {timeout:?}",
                    self.received().len(),
                    self.url
                );
            }
        }
    }
}
