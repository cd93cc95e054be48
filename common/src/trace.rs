//! W3C trace context for calls: every call carries a `traceparent`, so the function and the
//! callback receiver can join the caller's trace. A caller's valid `traceparent` keeps its trace
//! id (the call becomes a child span); otherwise the call id is the trace id, so a call's trace
//! is found from its id.

use crate::CallId;

/// The `traceparent` of a call: `00-<trace id>-<span id>-<flags>`. Its span id is the
/// gateway's accept span; the queue wait, the attempts and the callbacks are its children.
pub fn traceparent_for(call_id: CallId, incoming: Option<&str>) -> String {
    let span = new_span_id();
    match incoming.and_then(parse) {
        Some((trace, _, flags)) => format!("00-{trace}-{span}-{flags}"),
        None => format!("00-{}-{span}-01", call_id.0.simple()),
    }
}

/// A fresh span id: 16 lowercase hex digits, never all zero.
pub fn new_span_id() -> String {
    format!("{:016x}", rand::random::<u64>().max(1))
}

/// The trace id and span id of a valid `traceparent`.
pub fn ids(traceparent: &str) -> Option<(&str, &str)> {
    parse(traceparent).map(|(trace, span, _)| (trace, span))
}

/// The `traceparent` of a child span `span` in the same trace.
pub fn child(traceparent: &str, span: &str) -> Option<String> {
    parse(traceparent).map(|(trace, _, flags)| format!("00-{trace}-{span}-{flags}"))
}

/// The trace id, span id and flags of a valid version-00 `traceparent`.
fn parse(value: &str) -> Option<(&str, &str, &str)> {
    let mut parts = value.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let ok = version == "00"
        && parts.next().is_none()
        && hex(trace, 32)
        && hex(span, 16)
        && hex(flags, 2)
        && trace.bytes().any(|b| b != b'0')
        && span.bytes().any(|b| b != b'0');
    ok.then_some((trace, span, flags))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_a_callers_trace_and_starts_one_otherwise() {
        let id = CallId::new();
        let own = traceparent_for(id, None);
        assert!(own.starts_with(&format!("00-{}-", id.0.simple())), "{own}");
        assert!(parse(&own).is_some());
        let caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let child = traceparent_for(id, Some(caller));
        assert!(
            child.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{child}"
        );
        assert!(!child.contains("00f067aa0ba902b7"));
        for bad in [
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        ] {
            assert!(traceparent_for(id, Some(bad)).starts_with(&format!("00-{}", id.0.simple())));
        }
    }
}
