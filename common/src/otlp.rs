//! OpenTelemetry traces over OTLP/HTTP with JSON encoding, on when `OTEL_EXPORTER_OTLP_ENDPOINT`
//! (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, off otherwise. A call's spans: the
//! gateway's accept span (its id is the one in the call's `traceparent`), and as its children
//! the queue wait, each attempt's execution and each callback delivery (see
//! [`crate::trace`]). Spans are batched by a task of their own and posted without holding up
//! any call; if the collector is away they are dropped (logged), never queued without bound.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc;

/// Spans waiting for export at most; beyond that new ones are dropped.
const QUEUE: usize = 8192;
/// Spans per request at most, and how long a batch waits to fill.
const BATCH: usize = 512;
const LINGER: Duration = Duration::from_millis(200);

/// OTLP span kinds.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Internal = 1,
    Server = 2,
    Client = 3,
    Consumer = 5,
}

/// One finished span.
#[derive(Clone, Debug)]
pub struct Span {
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: Option<String>,
    pub name: &'static str,
    pub kind: Kind,
    pub start_ns: i64,
    pub end_ns: i64,
    pub attributes: Vec<(&'static str, Value)>,
    /// Set for a span that ended in error.
    pub error: Option<String>,
}

/// Where spans go; the default one (tracing off) drops them at no cost. Cheap to clone.
#[derive(Clone, Default)]
pub struct Tracer {
    tx: Option<mpsc::Sender<Span>>,
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracer")
            .field("enabled", &self.enabled())
            .finish()
    }
}

impl Tracer {
    /// From the standard variables: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (the whole URL) or
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` (`/v1/traces` is appended), `OTEL_EXPORTER_OTLP_HEADERS`
    /// (`key=value,...`), `OTEL_SERVICE_NAME` (else `service`); off when no endpoint is set, or
    /// `OTEL_SDK_DISABLED=true`, or `OTEL_TRACES_EXPORTER=none`. Starts the export task, so it
    /// is called inside the runtime.
    pub fn from_env(service: &str) -> Tracer {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || var("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"))
        {
            return Tracer::default();
        }
        let url = match (
            var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            var("OTEL_EXPORTER_OTLP_ENDPOINT"),
        ) {
            (Some(url), _) => url,
            (None, Some(base)) => format!("{}/v1/traces", base.trim_end_matches('/')),
            (None, None) => return Tracer::default(),
        };
        if let Some(protocol) = var("OTEL_EXPORTER_OTLP_PROTOCOL")
            && protocol != "http/json"
        {
            tracing::warn!(
                %protocol,
                "Fjord exports traces as OTLP/HTTP JSON (http/json) only; sending that"
            );
        }
        let headers: Vec<(String, String)> = var("OTEL_EXPORTER_OTLP_HEADERS")
            .unwrap_or_default()
            .split(',')
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        let service = var("OTEL_SERVICE_NAME").unwrap_or_else(|| service.to_owned());
        Tracer::to(&url, &service, headers)
    }

    /// Exports to `url` (an OTLP/HTTP traces endpoint) as `service`.
    pub fn to(url: &str, service: &str, headers: Vec<(String, String)>) -> Tracer {
        // reqwest's TLS needs a crypto provider even for plain HTTP clients.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (tx, rx) = mpsc::channel(QUEUE);
        let exporter = Exporter {
            url: url.to_owned(),
            headers,
            resource: json!({"attributes": [
                {"key": "service.name", "value": {"stringValue": service}},
            ]}),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .no_proxy()
                .build()
                .expect("an HTTP client with a crypto provider installed"),
        };
        tokio::spawn(exporter.run(rx));
        Tracer { tx: Some(tx) }
    }

    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Hands a finished span to the exporter without waiting.
    pub fn record(&self, span: Span) {
        if let Some(tx) = &self.tx
            && tx.try_send(span).is_err()
        {
            tracing::debug!("span dropped: the export queue is full");
        }
    }
}

struct Exporter {
    url: String,
    headers: Vec<(String, String)>,
    resource: Value,
    http: reqwest::Client,
}

impl Exporter {
    async fn run(self, mut rx: mpsc::Receiver<Span>) {
        loop {
            let mut batch = Vec::new();
            let Some(first) = rx.recv().await else { return };
            batch.push(first);
            let deadline = tokio::time::Instant::now() + LINGER;
            while batch.len() < BATCH {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(span)) => batch.push(span),
                    Ok(None) | Err(_) => break,
                }
            }
            self.post(&batch).await;
        }
    }

    async fn post(&self, spans: &[Span]) {
        let body = json!({"resourceSpans": [{
            "resource": self.resource,
            "scopeSpans": [{
                "scope": {"name": "fjord", "version": env!("CARGO_PKG_VERSION")},
                "spans": spans.iter().map(encode).collect::<Vec<_>>(),
            }],
        }]});
        let mut request = self.http.post(&self.url).json(&body);
        for (k, v) in &self.headers {
            request = request.header(k, v);
        }
        match request.send().await {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => {
                tracing::warn!(status = %r.status(), spans = spans.len(), "OTLP export refused; spans dropped")
            }
            Err(e) => {
                tracing::warn!(error = %e, spans = spans.len(), "OTLP export failed; spans dropped")
            }
        }
    }
}

/// A span in OTLP's JSON encoding (ids in hex, times as decimal strings).
fn encode(span: &Span) -> Value {
    let attributes: Vec<Value> = span
        .attributes
        .iter()
        .map(|(key, value)| {
            let value = match value {
                Value::Number(n) if n.is_i64() || n.is_u64() => json!({"intValue": n.to_string()}),
                Value::Number(n) => json!({"doubleValue": n.as_f64()}),
                Value::Bool(b) => json!({"boolValue": b}),
                Value::String(s) => json!({"stringValue": s}),
                other => json!({"stringValue": other.to_string()}),
            };
            json!({"key": key, "value": value})
        })
        .collect();
    let mut out = json!({
        "traceId": span.trace_id,
        "spanId": span.span_id,
        "name": span.name,
        "kind": span.kind as i32,
        "startTimeUnixNano": span.start_ns.max(0).to_string(),
        "endTimeUnixNano": span.end_ns.max(span.start_ns).max(0).to_string(),
        "attributes": attributes,
        "status": match &span.error {
            None => json!({"code": 1}),
            Some(message) => json!({"code": 2, "message": message}),
        },
    });
    if let Some(parent) = &span.parent_span_id {
        out["parentSpanId"] = json!(parent);
    }
    out
}
