//! One delivery attempt: the POST in OpenFaaS's callback format, signed, with 307/308
//! redirects followed (each target checked like the first) and every address the client
//! connects to checked at connect time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fjord_common::callback::{Networks, Signer, networks};
use fjord_common::retry::parse_retry_after;
use fjord_common::store::callbacks::Callback;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use super::DispatchConfig;

/// Redirects (307/308) followed in one attempt at most.
const MAX_REDIRECTS: usize = 5;
/// Bytes of a receiver's answer read (and thrown away) so its connection can be reused.
const MAX_ANSWER: usize = 64 * 1024;

/// Headers of the function's response that are not passed on: hop-by-hop ones, the length
/// (the client sets it), and the ones the dispatcher sets itself.
const NOT_PASSED: [&str; 17] = [
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
    "content-length",
    "host",
    "x-call-id",
    "x-function-name",
    "x-function-status",
    "x-duration-seconds",
    "x-start-time",
    "traceparent",
    "x-fjord-status",
];

/// What one attempt found out.
pub struct Sent {
    /// The last URL posted to (after redirects).
    pub url: String,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub retry_after: Option<Duration>,
    pub duration: Duration,
}

/// The HTTP client: no automatic redirects, no proxies from the environment (they would
/// bypass the address checks), and a resolver that only returns permitted addresses.
pub fn client(config: &DispatchConfig) -> Result<reqwest::Client, fjord_common::Error> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent(concat!("fjord-callback/", env!("CARGO_PKG_VERSION")))
        .dns_resolver(Arc::new(CheckedResolver {
            networks: config.networks.clone(),
        }))
        .pool_max_idle_per_host(config.host_concurrency)
        .pool_idle_timeout(Duration::from_secs(30))
        .tcp_nodelay(true)
        .build()
        .map_err(|e| fjord_common::Error::invalid("callback client", e.to_string()))
}

struct CheckedResolver {
    networks: Networks,
}

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let networks = self.networks.clone();
        Box::pin(async move {
            let ips = networks::resolve_name(name.as_str()).await?;
            let mut refusal = None;
            let permitted: Vec<SocketAddr> = ips
                .into_iter()
                .filter(|ip| match networks.permit(*ip) {
                    Ok(()) => true,
                    Err(why) => {
                        refusal.get_or_insert(why);
                        false
                    }
                })
                .map(|ip| SocketAddr::new(ip, 0))
                .collect();
            if permitted.is_empty() {
                let why = refusal.unwrap_or_else(|| "no address".into());
                return Err(format!("refused: {} resolves to {why}", name.as_str()).into());
            }
            Ok(Box::new(permitted.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The headers every attempt carries; `retry_max` is the function's `X-Retry-Max`.
fn headers(callback: &Callback, signer: &Signer, retry_max: u32) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in &callback.headers {
        if NOT_PASSED.contains(&name.to_ascii_lowercase().as_str())
            || name.to_ascii_lowercase().starts_with("webhook-")
        {
            continue;
        }
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            map.append(n, v);
        }
    }
    let timestamp = chrono::Utc::now().timestamp();
    let mut set = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            map.insert(HeaderName::from_static(name), v);
        }
    };
    set("x-call-id", callback.call_id.to_string());
    set("x-function-name", callback.function.clone());
    set("x-function-status", callback.function_status.to_string());
    set("x-fjord-status", callback.status.clone());
    set(
        "x-duration-seconds",
        format!("{:.6}", callback.duration_seconds),
    );
    set("x-start-time", callback.start_time_ns.to_string());
    set("x-retry", callback.call_attempts.max(1).to_string());
    set("x-retry-max", retry_max.to_string());
    if let Some(tp) = &callback.traceparent {
        set("traceparent", tp.clone());
    }
    set("webhook-id", callback.webhook_id.clone());
    set("webhook-timestamp", timestamp.to_string());
    if let Some(signature) = signer.sign(&callback.webhook_id, timestamp, &callback.body) {
        set("webhook-signature", signature);
    }
    map
}

/// Makes one attempt within `timeout` (redirects included).
pub async fn send(
    client: &reqwest::Client,
    signer: &Signer,
    networks: &Networks,
    callback: &Callback,
    timeout: Duration,
    retry_max: u32,
) -> Sent {
    let started = Instant::now();
    let mut sent = Sent {
        url: callback.url.clone(),
        status: None,
        error: None,
        retry_after: None,
        duration: Duration::ZERO,
    };
    let headers = headers(callback, signer, retry_max);
    let mut url = callback.url.clone();
    for hop in 0..=MAX_REDIRECTS {
        sent.url = url.clone();
        if let Err(why) = check_literal(networks, &url) {
            sent.error = Some(why);
            break;
        }
        let left = timeout.saturating_sub(started.elapsed());
        let request = client
            .post(&url)
            .headers(headers.clone())
            .body(callback.body.clone())
            .timeout(left);
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => {
                sent.error = Some(describe(&e, timeout));
                break;
            }
        };
        let status = response.status().as_u16();
        sent.status = Some(status);
        sent.retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if let Err(e) = drain(response).await {
            sent.error = Some(describe(&e, timeout));
            break;
        }
        match (status, location) {
            (307 | 308, Some(location)) if hop < MAX_REDIRECTS => {
                match reqwest::Url::parse(&url).and_then(|base| base.join(&location)) {
                    Ok(next) => {
                        url = next.to_string();
                        continue;
                    }
                    Err(e) => {
                        sent.error =
                            Some(format!("redirect to an invalid location {location:?}: {e}"));
                        break;
                    }
                }
            }
            (307 | 308, _) => {
                sent.error = Some(format!(
                    "redirect {status} without a usable Location, or too many redirects"
                ));
            }
            (300..=399, location) => {
                sent.error = Some(format!(
                    "redirect {status} not followed for a POST (only 307 and 308 are){}",
                    location
                        .map(|l| format!("; Location: {l}"))
                        .unwrap_or_default()
                ));
            }
            _ => {}
        }
        break;
    }
    sent.duration = started.elapsed();
    sent
}

/// A URL whose host is an address literal never reaches the resolver: check it here. Also the
/// scheme check for redirect targets.
fn check_literal(networks: &Networks, url: &str) -> Result<(), String> {
    let parsed = networks::check_syntax(url)?;
    match parsed.host() {
        Some(url::Host::Ipv4(ip)) => networks.permit(ip.into()),
        Some(url::Host::Ipv6(ip)) => networks.permit(ip.into()),
        _ => Ok(()),
    }
    .map_err(|why| format!("refused: {why}"))
}

async fn drain(mut response: reqwest::Response) -> Result<(), reqwest::Error> {
    let mut read = 0;
    while let Some(chunk) = response.chunk().await? {
        read += chunk.len();
        if read > MAX_ANSWER {
            break;
        }
    }
    Ok(())
}

/// The error and its causes in one line (reqwest's own message hides the cause).
fn describe(error: &reqwest::Error, timeout: Duration) -> String {
    if error.is_timeout() {
        return format!("timed out after {:.1} s", timeout.as_secs_f64());
    }
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
