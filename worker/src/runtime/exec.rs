//! The `exec` runtime: OpenFaaS's classic watchdog contract. Each call runs `fprocess` once,
//! with the request body on stdin and the request as `Http_*` environment variables; stdout is
//! the response body, exit 0 is success.
//!
//! Each call's processes end with the call: when the process exits, whatever it left running
//! in its process group (or memory cgroup) is killed; on `exec_timeout`, or when the call is
//! cancelled, the whole group is killed.

use std::process::ExitStatus;
use std::time::Duration;

use bytes::Bytes;
use fjord_functions::{BoxFuture, Function, Request, Response};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tracing::{info, warn};

use super::output::OutputLog;
use super::process::{self, Group, Launch, REASON_TAIL, Tail, describe_exit, format_duration};

/// After the process exits, how long its output may stay open (held by a process that left its
/// group) before the call gives up on it.
const OUTPUT_GRACE: Duration = Duration::from_secs(2);

/// How much stderr is kept for the log.
const STDERR_KEPT: usize = 1024 * 1024;

/// How much of a successful call's stderr is logged.
const SUCCESS_STDERR_LOGGED: usize = 16 * 1024;

/// The default response `Content-Type` when neither `content_type` nor the request sets one:
/// what a shell command usually prints.
pub(super) const DEFAULT_CONTENT_TYPE: &str = "text/plain; charset=utf-8";

pub(super) struct Exec {
    pub launch: Launch,
    /// Where each call's stderr is kept.
    pub output: OutputLog,
    /// The `content_type` setting. Without it the response takes the request's `Content-Type`
    /// (as the classic watchdog does), else [`DEFAULT_CONTENT_TYPE`].
    pub content_type: Option<String>,
    /// `exec_timeout`: the whole process group is killed after it (504).
    pub timeout: Option<Duration>,
}

impl Function for Exec {
    fn call(&self, request: Request) -> BoxFuture<'_, Response> {
        Box::pin(self.run(request))
    }
}

/// What a finished process produced.
struct Output {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: Tail,
}

impl Exec {
    async fn run(&self, request: Request) -> Response {
        let env = request_env(&request);
        let call = super::output::call_of(&request);
        let mut running = match self.launch.spawn(&env, true) {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "cannot start the function process");
                return Response::failure(500, e.to_string());
            }
        };
        let content_type = self
            .content_type
            .clone()
            .or_else(|| request.header("content-type").map(str::to_owned))
            .unwrap_or_else(|| DEFAULT_CONTENT_TYPE.to_owned());
        let work = communicate(&mut running.child, &running.group, request.body);
        let output = match self.timeout {
            None => work.await,
            Some(limit) => match tokio::time::timeout(limit, work).await {
                Ok(output) => output,
                Err(_) => {
                    running.group.kill();
                    let reason = format!("timed out after {}", format_duration(limit));
                    warn!(%reason, "function process killed");
                    return Response::failure(504, reason);
                }
            },
        };
        let output = match output {
            Ok(o) => o,
            Err(e) => {
                let status = running.child.try_wait().ok().flatten();
                if self.launch.memory_killed(&running.group, status) {
                    return self.memory_killed();
                }
                warn!(error = %e, "function process I/O failed");
                return Response::failure(500, format!("function process I/O failed: {e}"));
            }
        };
        if !output.stderr.is_empty() {
            self.output
                .call_lines(call, "stderr", &output.stderr.all())
                .await;
        }
        if output.status.success() {
            if !output.stderr.is_empty() {
                info!(stderr = %output.stderr.last(SUCCESS_STDERR_LOGGED), "function stderr");
            }
            return Response::new(200, &content_type, output.stdout);
        }
        if self
            .launch
            .memory_killed(&running.group, Some(output.status))
        {
            warn!(stderr = %output.stderr.all(), "function process killed for its memory limit");
            return self.memory_killed();
        }
        let exit = describe_exit(output.status);
        warn!(%exit, stderr = %output.stderr.all(), "function process failed");
        let mut reason = exit;
        if !output.stderr.is_empty() {
            reason.push_str("; stderr: ");
            reason.push_str(&output.stderr.last(REASON_TAIL));
        }
        Response::failure(500, reason)
    }

    fn memory_killed(&self) -> Response {
        let reason = self
            .launch
            .memory
            .as_ref()
            .map(process::Memory::killed_reason)
            .unwrap_or_else(|| "killed: exceeded the memory limit".into());
        Response::failure(500, reason)
    }
}

/// Writes the body to stdin while reading stdout and stderr (a process that answers before it
/// has read all its input cannot deadlock), until the process exits; then kills what it left
/// in its group and collects the rest of its output.
async fn communicate(
    child: &mut tokio::process::Child,
    group: &Group,
    body: Bytes,
) -> std::io::Result<Output> {
    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let write = async move {
        if let Some(mut stdin) = stdin {
            // A process that does not read its input closes the pipe: not an error.
            let _ = stdin.write_all(&body).await;
        }
    };
    let read_out = async move {
        let mut out = Vec::new();
        if let Some(mut stdout) = stdout {
            stdout.read_to_end(&mut out).await?;
        }
        Ok::<_, std::io::Error>(out)
    };
    let read_err = read_tail(stderr, STDERR_KEPT);
    let io = async move {
        let ((), out, err) = tokio::join!(write, read_out, read_err);
        Ok::<_, std::io::Error>((out?, err?))
    };
    tokio::pin!(io);
    let mut done = None;
    let status = tokio::select! {
        status = child.wait() => status?,
        r = &mut io => {
            done = Some(r);
            child.wait().await?
        }
    };
    group.kill_and_release();
    let (stdout, stderr) = match done {
        Some(r) => r?,
        None => match tokio::time::timeout(OUTPUT_GRACE, &mut io).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(std::io::Error::other(
                    "the process exited but its output stayed open (held by a process outside its group)",
                ));
            }
        },
    };
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

async fn read_tail(stream: Option<impl AsyncRead + Unpin>, keep: usize) -> std::io::Result<Tail> {
    let mut tail = Tail::new(keep);
    if let Some(mut stream) = stream {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            tail.push(&buf[..n]);
        }
    }
    Ok(tail)
}

/// The request as classic-watchdog environment variables: `Http_<Header_Name>` for every
/// header (canonical case, `-` → `_`; repeated headers joined with `, `), then `Http_Method`,
/// `Http_Path` and, when there is a query, `Http_Query` (these win over same-named headers).
pub(super) fn request_env(request: &Request) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::with_capacity(request.headers.len() + 3);
    for (name, value) in &request.headers {
        let key = format!("Http_{}", env_name(name));
        match env.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => {
                v.push_str(", ");
                v.push_str(value);
            }
            None => env.push((key, value.clone())),
        }
    }
    let mut set = |k: &str, v: &str| {
        env.retain(|(key, _)| key != k);
        env.push((k.to_owned(), v.to_owned()));
    };
    set("Http_Method", &request.method);
    set(
        "Http_Path",
        if request.path.is_empty() {
            "/"
        } else {
            &request.path
        },
    );
    if !request.query.is_empty() {
        set("Http_Query", &request.query);
    }
    env
}

/// `x-call-id` → `X_Call_Id`: each `-`-separated part capitalised, other characters that
/// cannot be in a variable name replaced by `_`.
fn env_name(header: &str) -> String {
    header
        .split('-')
        .map(|part| {
            part.chars()
                .enumerate()
                .map(|(i, c)| {
                    if !c.is_ascii_alphanumeric() {
                        '_'
                    } else if i == 0 {
                        c.to_ascii_uppercase()
                    } else {
                        c.to_ascii_lowercase()
                    }
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_becomes_watchdog_variables() {
        let request = Request {
            method: "PUT".into(),
            path: "/a/b".into(),
            query: "x=1".into(),
            headers: vec![
                ("content-type".into(), "text/csv".into()),
                ("X-CALL-ID".into(), "abc".into()),
                ("x-multi".into(), "1".into()),
                ("X-Multi".into(), "2".into()),
            ],
            body: Bytes::new(),
        };
        let env = request_env(&request);
        let get = |k: &str| {
            env.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("Http_Content_Type"), Some("text/csv"));
        assert_eq!(get("Http_X_Call_Id"), Some("abc"));
        assert_eq!(get("Http_X_Multi"), Some("1, 2"));
        assert_eq!(get("Http_Method"), Some("PUT"));
        assert_eq!(get("Http_Path"), Some("/a/b"));
        assert_eq!(get("Http_Query"), Some("x=1"));
        let request = Request {
            method: "GET".into(),
            ..Default::default()
        };
        assert!(!request_env(&request).iter().any(|(k, _)| k == "Http_Query"));
    }
}
