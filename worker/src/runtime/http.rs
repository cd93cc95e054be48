//! The `http` runtime: OpenFaaS's of-watchdog http mode. `fprocess` starts once per worker with
//! `PORT` (a free local port, so many workers share a host) and serves HTTP there; each call is
//! forwarded to it and its answer is the call's response.
//!
//! A supervisor task owns the process: it starts it, waits until it is healthy (the
//! `com.openfaas.health.http.path` answering 2xx, else the port accepting connections),
//! restarts it with backoff when it dies, and kills its process group when the worker is done.
//! Calls wait (bounded) for a healthy process; a call that could not even connect to a process
//! that then died is sent again to its replacement, since it never reached the function.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use fjord_functions::{BoxFuture, Function, Request, Response};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{Instrument, info, info_span, warn};

use super::Error;
use super::output::OutputLog;
use super::process::{Launch, REASON_TAIL, Running, Tail, describe_exit, format_duration};

/// How long a process may take to become healthy.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a call waits for a healthy process (while it is being restarted).
const READY_WAIT: Duration = Duration::from_secs(30);
/// After a failed request, how long to wait for the process's death to be noticed, to tell
/// "it died" (and why) from "it refused".
const DEATH_WAIT: Duration = Duration::from_secs(2);
/// How often the health check is tried while the process starts.
const PROBE_EVERY: Duration = Duration::from_millis(50);
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A process that lived this long resets the restart backoff.
const STABLE_AFTER: Duration = Duration::from_secs(30);
/// Sends of one call to successive processes that refused its connection, then died.
const MAX_SENDS: usize = 3;

/// Request and response headers that describe one hop, not the message.
const HOP_BY_HOP: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
];

/// How to tell the process is up.
pub(super) enum Health {
    /// GET this path until it answers 2xx.
    Path(String),
    /// Until the port accepts TCP connections.
    Port,
}

pub(super) struct Http {
    client: reqwest::Client,
    /// Where the process's lines are kept, with the call in flight when only one is.
    output: OutputLog,
    state: watch::Receiver<State>,
    timeout: Option<Duration>,
    /// Stops the supervisor (and the process) when the function is dropped.
    _stop: DropGuard,
}

#[derive(Clone)]
enum State {
    /// No healthy process yet, or it is being restarted.
    Starting {
        last_failure: Option<String>,
    },
    Ready(Arc<Instance>),
    /// The supervisor has ended (the worker is done).
    Stopped,
}

/// One healthy process.
struct Instance {
    port: u16,
    /// Set once the process has died: the status and reason calls in flight fail with.
    died: watch::Receiver<Option<Death>>,
}

#[derive(Clone)]
struct Death {
    status: u16,
    reason: String,
}

/// Starts the process and returns once it is healthy; `shutdown` (or dropping the function)
/// stops it. Fails, with the cause and the process's stderr tail, when the first process
/// does not become healthy within [`START_TIMEOUT`].
pub(super) async fn start(
    launch: Launch,
    health: Health,
    timeout: Option<Duration>,
    output: OutputLog,
    shutdown: CancellationToken,
) -> Result<Http, Error> {
    // reqwest's TLS needs a crypto provider even for plain HTTP clients.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .http1_only()
        // A fresh loopback connection per call. A kept-alive one can outlive the process it
        // was made to: a call sent on it after a crash would fail although the replacement is
        // up, while a fresh connect to a dead port is refused and goes to the replacement.
        .pool_max_idle_per_host(0)
        .build()
        .map_err(|e| Error::Start(format!("building the HTTP client: {e}")))?;
    let stop = shutdown.child_token();
    let (state_tx, state_rx) = watch::channel(State::Starting { last_failure: None });
    let (first_tx, first_rx) = oneshot::channel();
    let span = info_span!("function process", function = %launch.name);
    let supervisor = Supervisor {
        launch,
        health,
        client: client.clone(),
        state: state_tx,
        stop: stop.clone(),
        output: output.clone(),
    };
    tokio::spawn(supervisor.run(first_tx).instrument(span));
    match first_rx.await {
        Ok(Ok(())) => Ok(Http {
            client,
            output,
            state: state_rx,
            timeout,
            _stop: stop.drop_guard(),
        }),
        Ok(Err(reason)) => Err(Error::Start(reason)),
        Err(_) => Err(Error::Start("stopped before it became healthy".into())),
    }
}

impl Function for Http {
    fn call(&self, request: Request) -> BoxFuture<'_, Response> {
        Box::pin(async move {
            let _in_flight = self.output.track(&request);
            match self.timeout {
                None => self.forward(request).await,
                Some(limit) => match tokio::time::timeout(limit, self.forward(request)).await {
                    Ok(response) => response,
                    Err(_) => {
                        let reason = format!("timed out after {}", format_duration(limit));
                        warn!(%reason, "call to the function process abandoned");
                        Response::failure(504, reason)
                    }
                },
            }
        })
    }
}

impl Http {
    async fn forward(&self, request: Request) -> Response {
        let mut previous: Option<Arc<Instance>> = None;
        for _ in 0..MAX_SENDS {
            let instance = match self.ready(previous.as_ref()).await {
                Ok(i) => i,
                Err(reason) => return Response::failure(502, reason),
            };
            let e = match self.send(&instance, &request).await {
                Ok(response) => return response,
                Err(e) => e,
            };
            let mut died = instance.died.clone();
            let death = tokio::time::timeout(DEATH_WAIT, died.wait_for(Option::is_some))
                .await
                .ok()
                .and_then(|r| r.ok().and_then(|d| d.clone()));
            match death {
                // The request never reached it: send it to the replacement.
                Some(_) if e.is_connect() => previous = Some(instance),
                Some(d) => return Response::failure(d.status, d.reason),
                None => {
                    return Response::failure(502, format!("upstream unreachable: {}", chain(&e)));
                }
            }
        }
        Response::failure(
            502,
            "upstream unreachable: the function process keeps exiting",
        )
    }

    /// A healthy process other than `previous`, waiting for one (bounded).
    async fn ready(&self, previous: Option<&Arc<Instance>>) -> Result<Arc<Instance>, String> {
        let mut state = self.state.clone();
        let wanted = |s: &State| match s {
            State::Ready(i) => previous.is_none_or(|p| !Arc::ptr_eq(p, i)),
            State::Stopped => true,
            State::Starting { .. } => false,
        };
        match tokio::time::timeout(READY_WAIT, state.wait_for(wanted)).await {
            Ok(Ok(s)) => match &*s {
                State::Ready(i) => Ok(i.clone()),
                _ => Err("upstream unreachable: the worker is stopping".into()),
            },
            Ok(Err(_)) => Err("upstream unreachable: the worker is stopping".into()),
            Err(_) => {
                let last = match &*self.state.borrow() {
                    State::Starting {
                        last_failure: Some(r),
                    } => format!(" (last failure: {r})"),
                    _ => String::new(),
                };
                Err(format!(
                    "upstream unreachable: no healthy function process after {}{last}",
                    format_duration(READY_WAIT)
                ))
            }
        }
    }

    async fn send(
        &self,
        instance: &Instance,
        request: &Request,
    ) -> Result<Response, reqwest::Error> {
        let path = if request.path.is_empty() {
            "/"
        } else {
            &request.path
        };
        let mut url = format!("http://127.0.0.1:{}{path}", instance.port);
        if !request.query.is_empty() {
            url.push('?');
            url.push_str(&request.query);
        }
        let Ok(method) = reqwest::Method::from_bytes(request.method.as_bytes()) else {
            return Ok(Response::bad_request("invalid method"));
        };
        let mut headers = HeaderMap::with_capacity(request.headers.len());
        for (k, v) in &request.headers {
            if is_hop_by_hop(k) {
                continue;
            }
            if let (Ok(k), Ok(v)) = (HeaderName::try_from(k.as_str()), HeaderValue::try_from(v)) {
                headers.append(k, v);
            }
        }
        let response = self
            .client
            .request(method, url)
            .headers(headers)
            .body(request.body.clone())
            .send()
            .await?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .filter(|(k, _)| !is_hop_by_hop(k.as_str()))
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body: Bytes = response.bytes().await?;
        Ok(Response {
            status,
            headers,
            body,
            reason: None,
        })
    }
}

fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
}

/// An error with its sources: reqwest's own message rarely says what went wrong.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// Owns the function's process: starts, health-checks, restarts and finally kills it.
struct Supervisor {
    launch: Launch,
    health: Health,
    client: reqwest::Client,
    state: watch::Sender<State>,
    stop: CancellationToken,
    output: OutputLog,
}

/// Why one process's run ended.
enum End {
    Stopped,
    Failed(String),
}

impl Supervisor {
    async fn run(self, first: oneshot::Sender<Result<(), String>>) {
        let mut first = Some(first);
        let mut backoff = MIN_BACKOFF;
        loop {
            let started = Instant::now();
            let reason = match self.run_once(&mut first).await {
                End::Stopped => break,
                End::Failed(reason) => reason,
            };
            if let Some(first) = first.take() {
                let _ = first.send(Err(reason));
                break;
            }
            if started.elapsed() > STABLE_AFTER {
                backoff = MIN_BACKOFF;
            }
            warn!(%reason, restart_in_ms = backoff.as_millis() as u64, "function process failed; restarting it");
            self.state.send_replace(State::Starting {
                last_failure: Some(reason),
            });
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = self.stop.cancelled() => break,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        self.state.send_replace(State::Stopped);
    }

    /// Starts one process and runs it until it dies or the worker is done.
    async fn run_once(&self, first: &mut Option<oneshot::Sender<Result<(), String>>>) -> End {
        let port = match fjord_common::services::free_port() {
            Ok(p) => p,
            Err(e) => return End::Failed(format!("no free local port: {e}")),
        };
        let env = [
            ("PORT".to_owned(), port.to_string()),
            (
                "upstream_url".to_owned(),
                format!("http://127.0.0.1:{port}"),
            ),
        ];
        let mut running = match self.launch.spawn(&env, false) {
            Ok(r) => r,
            Err(e) => return End::Failed(e.to_string()),
        };
        let stderr = Arc::new(Mutex::new(Tail::new(REASON_TAIL)));
        pump(running.child.stdout.take(), "stdout", None, &self.output);
        pump(
            running.child.stderr.take(),
            "stderr",
            Some(stderr.clone()),
            &self.output,
        );
        info!(port, pid = running.child.id(), "function process started");

        let healthy = tokio::select! {
            r = self.wait_healthy(port, &mut running) => r,
            _ = self.stop.cancelled() => return End::Stopped,
        };
        if let Err(reason) = healthy {
            running.group.kill();
            // Give its last words a moment to arrive.
            let _ = tokio::time::timeout(Duration::from_millis(200), running.child.wait()).await;
            return End::Failed(with_stderr(reason, &stderr));
        }
        let (died_tx, died_rx) = watch::channel(None);
        self.state.send_replace(State::Ready(Arc::new(Instance {
            port,
            died: died_rx,
        })));
        if let Some(first) = first.take() {
            let _ = first.send(Ok(()));
        }
        info!(port, "function process healthy");

        let status = tokio::select! {
            status = running.child.wait() => status.ok(),
            _ = self.stop.cancelled() => {
                running.group.kill();
                let _ = tokio::time::timeout(Duration::from_secs(2), running.child.wait()).await;
                died_tx.send_replace(Some(Death {
                    status: 502,
                    reason: "upstream unreachable: the worker is stopping".into(),
                }));
                info!("function process stopped");
                return End::Stopped;
            }
        };
        let death = if self.launch.memory_killed(&running.group, status) {
            let reason = self
                .launch
                .memory
                .as_ref()
                .map(|m| m.killed_reason())
                .unwrap_or_default();
            Death {
                status: 500,
                reason,
            }
        } else {
            let exit = status.map_or_else(|| "exit status unknown".into(), describe_exit);
            Death {
                status: 502,
                reason: with_stderr(
                    format!("upstream unreachable: the function process exited ({exit})"),
                    &stderr,
                ),
            }
        };
        died_tx.send_replace(Some(death.clone()));
        running.group.kill_and_release();
        End::Failed(death.reason)
    }

    /// Probes until healthy, the process exits, or [`START_TIMEOUT`] is over.
    async fn wait_healthy(&self, port: u16, running: &mut Running) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let probe = async {
                match &self.health {
                    Health::Port => tokio::net::TcpStream::connect(("127.0.0.1", port))
                        .await
                        .map(drop)
                        .map_err(|e| format!("port {port}: {e}")),
                    Health::Path(path) => {
                        let url = format!("http://127.0.0.1:{port}{path}");
                        match self
                            .client
                            .get(&url)
                            .timeout(Duration::from_secs(2))
                            .send()
                            .await
                        {
                            Ok(r) if r.status().is_success() => Ok(()),
                            Ok(r) => Err(format!("GET {path} answered {}", r.status().as_u16())),
                            Err(e) => Err(format!("GET {path}: {}", chain(&e))),
                        }
                    }
                }
            };
            let last_error = tokio::select! {
                status = running.child.wait() => {
                    let exit = status.map_or_else(|e| e.to_string(), describe_exit);
                    return Err(format!("the function process exited before it was healthy ({exit})"));
                }
                r = probe => match r {
                    Ok(()) => return Ok(()),
                    Err(e) => e,
                },
            };
            if Instant::now() + PROBE_EVERY > deadline {
                return Err(format!(
                    "the function process was not healthy after {} ({last_error})",
                    format_duration(START_TIMEOUT)
                ));
            }
            tokio::select! {
                status = running.child.wait() => {
                    let exit = status.map_or_else(|e| e.to_string(), describe_exit);
                    return Err(format!("the function process exited before it was healthy ({exit})"));
                }
                _ = tokio::time::sleep(PROBE_EVERY) => {}
            }
        }
    }
}

fn with_stderr(reason: String, stderr: &Mutex<Tail>) -> String {
    let tail = stderr.lock().expect("stderr tail lock").last(REASON_TAIL);
    if tail.is_empty() {
        reason
    } else {
        format!("{reason}; stderr: {tail}")
    }
}

/// Logs a stream of the process line by line, keeping the tail in `tail`.
fn pump(
    stream: Option<impl AsyncRead + Unpin + Send + 'static>,
    name: &'static str,
    tail: Option<Arc<Mutex<Tail>>>,
    output: &OutputLog,
) {
    let Some(stream) = stream else { return };
    let output = output.clone();
    tokio::spawn(
        async move {
            let mut reader = BufReader::new(stream);
            let mut line = Vec::new();
            loop {
                line.clear();
                match reader.read_until(b'\n', &mut line).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        if let Some(tail) = &tail {
                            tail.lock().expect("stderr tail lock").push(&line);
                        }
                        let text = String::from_utf8_lossy(&line);
                        let text = text.trim_end();
                        info!(stream = name, "{text}");
                        output.line(name, text).await;
                    }
                }
            }
        }
        .in_current_span(),
    );
}
