//! When a failed call is run again, per function (labels or annotations, OpenFaaS's names):
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `com.openfaas.retry.attempts` | 3 | executions in total, the first included |
//! | `com.openfaas.retry.codes` | `408,429,500,502,503,504` | function statuses worth another attempt |
//! | `com.openfaas.retry.min_wait` | 1s | wait after the first failed attempt |
//! | `com.openfaas.retry.max_wait` | 2m | longest wait between two attempts |
//!
//! The wait after failed attempt *n* is `min_wait × 2^(n-1)`, capped at `max_wait`, with ±20 %
//! jitter; a `Retry-After` in the function's answer lengthens it (never shortens). The same
//! schedule, with its own settings, drives callback retries ([`crate::callback::Policy`]).

use std::time::Duration;

use crate::Error;
use crate::config::parse_duration;
use crate::stack::FunctionSpec;

#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub codes: Vec<u16>,
    pub min_wait: Duration,
    pub max_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 3,
            codes: vec![408, 429, 500, 502, 503, 504],
            min_wait: Duration::from_secs(1),
            max_wait: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    /// A function's policy; a present but invalid setting is an error naming it (deploying
    /// checks this, so a deployed function always has a valid policy).
    pub fn for_spec(spec: &FunctionSpec) -> Result<RetryPolicy, Error> {
        let mut policy = RetryPolicy {
            attempts: spec.setting_u32("com.openfaas.retry.attempts", 3)?,
            ..RetryPolicy::default()
        };
        if policy.attempts == 0 {
            return Err(Error::invalid(
                "com.openfaas.retry.attempts",
                "must be at least 1",
            ));
        }
        if let Some(codes) = spec.setting("com.openfaas.retry.codes") {
            policy.codes =
                parse_codes(codes).map_err(|e| Error::invalid("com.openfaas.retry.codes", e))?;
        }
        for (key, field) in [
            ("com.openfaas.retry.min_wait", &mut policy.min_wait),
            ("com.openfaas.retry.max_wait", &mut policy.max_wait),
        ] {
            if let Some(v) = spec.setting(key) {
                *field = parse_duration(v).map_err(|e| Error::invalid(key, e.to_string()))?;
            }
        }
        if policy.max_wait < policy.min_wait {
            return Err(Error::invalid(
                "com.openfaas.retry.max_wait",
                "must not be shorter than com.openfaas.retry.min_wait",
            ));
        }
        Ok(policy)
    }

    /// Whether a function status is worth another attempt (attempts left or not).
    pub fn retryable(&self, status: u16) -> bool {
        self.codes.contains(&status)
    }

    /// The wait after failed attempt `attempt`, jittered, at least `retry_after`.
    pub fn wait(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        backoff(self.min_wait, self.max_wait, attempt, retry_after)
    }
}

/// `408,429, 500`: a comma-separated list of HTTP statuses; empty means none is retried.
fn parse_codes(raw: &str) -> Result<Vec<u16>, String> {
    raw.split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(|c| match c.parse::<u16>() {
            Ok(code) if (100..=599).contains(&code) => Ok(code),
            _ => Err(format!("{c:?} is not an HTTP status (100-599)")),
        })
        .collect()
}

/// The wait after failed attempt `attempt` (from 1) before jitter: `min_wait × 2^(attempt-1)`,
/// capped at `max_wait`.
pub fn base_backoff(min_wait: Duration, max_wait: Duration, attempt: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(31));
    min_wait.saturating_mul(factor).min(max_wait)
}

/// [`base_backoff`] jittered by ±20 %, and at least what the other side asked for in
/// `Retry-After`.
pub fn backoff(
    min_wait: Duration,
    max_wait: Duration,
    attempt: u32,
    retry_after: Option<Duration>,
) -> Duration {
    let jitter = 0.8 + 0.4 * rand::random::<f64>();
    let wait = base_backoff(min_wait, max_wait, attempt).mul_f64(jitter);
    retry_after.map_or(wait, |r| wait.max(r))
}

/// Parses `Retry-After`: seconds, or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let delta = when.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(delta.to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(settings: &[(&str, &str)]) -> FunctionSpec {
        let mut spec: FunctionSpec = serde_json::from_value(serde_json::json!({
            "name": "f", "lang": "builtin", "handler": "echo"
        }))
        .unwrap();
        for (k, v) in settings {
            spec.annotations.insert((*k).into(), (*v).into());
        }
        spec
    }

    #[test]
    fn defaults_are_openfaas_ones() {
        let p = RetryPolicy::for_spec(&with(&[])).unwrap();
        assert_eq!(p, RetryPolicy::default());
        assert!(p.retryable(503) && p.retryable(429) && !p.retryable(400) && !p.retryable(422));
        let waits: Vec<u64> = (1..=9)
            .map(|n| base_backoff(p.min_wait, p.max_wait, n).as_secs())
            .collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 120, 120]);
    }

    #[test]
    fn settings_shape_the_policy() {
        let p = RetryPolicy::for_spec(&with(&[
            ("com.openfaas.retry.attempts", "5"),
            ("com.openfaas.retry.codes", "500, 503"),
            ("com.openfaas.retry.min_wait", "500ms"),
            ("com.openfaas.retry.max_wait", "10s"),
        ]))
        .unwrap();
        assert_eq!((p.attempts, p.codes.clone()), (5, vec![500, 503]));
        for n in 1..8 {
            let w = p.wait(n, None).as_secs_f64();
            let base = base_backoff(p.min_wait, p.max_wait, n).as_secs_f64();
            assert!(w >= base * 0.8 - 1e-9 && w <= base * 1.2 + 1e-9);
        }
        assert_eq!(
            p.wait(1, Some(Duration::from_secs(30))),
            Duration::from_secs(30)
        );
        assert!(
            RetryPolicy::for_spec(&with(&[("com.openfaas.retry.codes", "")]))
                .unwrap()
                .codes
                .is_empty()
        );
        for bad in [
            ("com.openfaas.retry.attempts", "0"),
            ("com.openfaas.retry.codes", "500,abc"),
            ("com.openfaas.retry.codes", "999"),
            ("com.openfaas.retry.min_wait", "soon"),
            ("com.openfaas.retry.max_wait", "100ms"),
        ] {
            let e = RetryPolicy::for_spec(&with(&[bad]))
                .unwrap_err()
                .to_string();
            assert!(e.contains(bad.0), "{e}");
        }
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        let later = (chrono::Utc::now() + chrono::Duration::seconds(30)).to_rfc2822();
        let d = parse_retry_after(&later).unwrap();
        assert!(d > Duration::from_secs(25) && d <= Duration::from_secs(30));
        assert_eq!(parse_retry_after("soon"), None);
    }
}
