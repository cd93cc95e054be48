//! OpenTelemetry traces received by a real OTLP/HTTP endpoint in the test: one trace per call
//! across the gateway's accept span, the queue wait, the worker's execution and the callback
//! delivery, with the right parents, and the same trace in the `traceparent` the exec
//! function and the callback receiver see.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::routing::post;
use fjord_common::otlp::Tracer;
use fjord_tests::receiver::Receiver;
use fjord_tests::{Options, Platform, dispatch_config, script_spec, shared_dir, unique, wait_for};
use serde_json::Value;

const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// An OTLP/HTTP traces endpoint keeping every span it is sent, with its service name.
async fn collector() -> (String, Arc<Mutex<Vec<(String, Value)>>>) {
    let spans: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
    let kept = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |Json(export): Json<Value>| {
            let kept = kept.clone();
            async move {
                for rs in export["resourceSpans"].as_array().unwrap() {
                    let service = rs["resource"]["attributes"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|a| a["key"] == "service.name")
                        .map(|a| a["value"]["stringValue"].as_str().unwrap().to_owned())
                        .unwrap();
                    for ss in rs["scopeSpans"].as_array().unwrap() {
                        for span in ss["spans"].as_array().unwrap() {
                            kept.lock().unwrap().push((service.clone(), span.clone()));
                        }
                    }
                }
                Json(serde_json::json!({}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, spans)
}

fn span_of<'a>(spans: &'a [(String, Value)], name: &str) -> Option<&'a Value> {
    spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| s["name"] == name && s["traceId"] == TRACE)
}

#[tokio::test(flavor = "multi_thread")]
async fn one_trace_joins_gateway_worker_callback_and_the_functions_own_traceparent() {
    let (url, spans) = collector().await;
    let gateway = Tracer::to(&url, "fjord-gateway", vec![]);
    let control = Tracer::to(&url, "fjord-control", vec![]);
    let mut dispatcher = dispatch_config();
    dispatcher.tracer = control;
    let mut p = Platform::start_with(Options {
        tracer: gateway,
        dispatcher: Some(dispatcher),
        ..Options::default()
    })
    .await;
    let name = unique("traced");
    let dir = shared_dir("fjord-trace-");
    let f = p
        .deploy_spec(script_spec(
            &name,
            &dir,
            "printf '%s' \"$Http_Traceparent\"",
        ))
        .await;
    p.start_worker(&f).await;
    let receiver = Receiver::start().await;

    let r = p
        .post(&format!("/async-function/{name}"))
        .header("traceparent", CALLER)
        .header("X-Callback-Url", format!("{}/done", receiver.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let id = r.headers()["x-call-id"].to_str().unwrap().to_owned();
    p.wait_final(&id, Duration::from_secs(20)).await;
    let seen_by_function = p
        .system(&format!("/system/invocations/{id}/result"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let callback = receiver.wait_for(1, Duration::from_secs(20)).await;
    let seen_by_receiver = callback[0].header("traceparent");

    let all = wait_for("the call's four spans", Duration::from_secs(10), || async {
        let all = spans.lock().unwrap().clone();
        [
            "fjord.accept",
            "fjord.queue",
            "fjord.execute",
            "fjord.callback",
        ]
        .iter()
        .all(|n| span_of(&all, n).is_some())
        .then_some(all)
    })
    .await;
    let accept = span_of(&all, "fjord.accept").unwrap();
    let queue = span_of(&all, "fjord.queue").unwrap();
    let execute = span_of(&all, "fjord.execute").unwrap();
    let delivery = span_of(&all, "fjord.callback").unwrap();

    // The caller's trace goes on: the accept span is the caller's span's child, the rest the
    // accept span's children.
    assert_eq!(accept["parentSpanId"], "00f067aa0ba902b7", "{accept}");
    for child in [queue, execute, delivery] {
        assert_eq!(child["parentSpanId"], accept["spanId"], "{child}");
        assert_ne!(child["spanId"], accept["spanId"]);
    }
    assert_eq!(accept["kind"], 2);
    assert_eq!(delivery["kind"], 3);
    let services: Vec<&str> = all
        .iter()
        .filter(|(_, s)| s["traceId"] == TRACE)
        .map(|(service, _)| service.as_str())
        .collect();
    assert!(services.contains(&"fjord-gateway") && services.contains(&"fjord-control"));
    let has = |span: &Value, key: &str, value: &str| {
        span["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["key"] == key && a["value"]["stringValue"] == value)
    };
    assert!(has(execute, "fjord.call_id", &id), "{execute}");
    assert!(
        has(delivery, "fjord.callback.outcome", "delivered"),
        "{delivery}"
    );
    let start: u64 = execute["startTimeUnixNano"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let queued: u64 = queue["endTimeUnixNano"].as_str().unwrap().parse().unwrap();
    assert!(queued <= start, "the wait ends when the attempt starts");

    // The function and the receiver see the same trace, with their own span as the parent.
    let span = |tp: &str| tp.split('-').nth(2).unwrap_or_default().to_owned();
    assert!(
        seen_by_function.starts_with(&format!("00-{TRACE}-")),
        "{seen_by_function}"
    );
    assert_eq!(span(&seen_by_function), execute["spanId"].as_str().unwrap());
    assert!(
        seen_by_receiver.starts_with(&format!("00-{TRACE}-")),
        "{seen_by_receiver}"
    );
    assert_eq!(
        span(&seen_by_receiver),
        delivery["spanId"].as_str().unwrap()
    );
}
