//! When a failed callback is tried again, per function (`com.fjord.callback.*` labels or
//! annotations):
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `com.fjord.callback.attempts` | 40 | attempts in total, the first included |
//! | `com.fjord.callback.min_wait` | 1s | wait after the first failed attempt |
//! | `com.fjord.callback.max_wait` | 1h | longest wait between two attempts |
//! | `com.fjord.callback.max_age` | 24h | no attempt starts later than this after the first |
//! | `com.fjord.callback.timeout` | 10s | one attempt, connecting to the end of the response |
//!
//! The wait after failed attempt *n* is `min_wait × 2^(n-1)`, capped at `max_wait`, with ±20 %
//! jitter; a receiver's `Retry-After` lengthens it (never shortens). With the defaults the
//! attempts come at about 0 s, 1 s, 3 s, 7 s, … 34 min, 68 min and then hourly, until 24 h
//! have passed.

use std::time::Duration;

use crate::Error;
use crate::config::parse_duration;
use crate::stack::FunctionSpec;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Policy {
    pub attempts: u32,
    pub min_wait: Duration,
    pub max_wait: Duration,
    pub max_age: Duration,
    pub timeout: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            attempts: 40,
            min_wait: Duration::from_secs(1),
            max_wait: Duration::from_secs(3600),
            max_age: Duration::from_secs(24 * 3600),
            timeout: Duration::from_secs(10),
        }
    }
}

impl Policy {
    /// A function's policy; a present but invalid setting is an error naming it (deploying
    /// checks this, so a deployed function always has a valid policy).
    pub fn for_spec(spec: &FunctionSpec) -> Result<Policy, Error> {
        let mut policy = Policy::default();
        policy.attempts = spec.setting_u32("com.fjord.callback.attempts", policy.attempts)?;
        if policy.attempts == 0 {
            return Err(Error::invalid(
                "com.fjord.callback.attempts",
                "must be at least 1",
            ));
        }
        for (key, field) in [
            ("com.fjord.callback.min_wait", &mut policy.min_wait),
            ("com.fjord.callback.max_wait", &mut policy.max_wait),
            ("com.fjord.callback.max_age", &mut policy.max_age),
            ("com.fjord.callback.timeout", &mut policy.timeout),
        ] {
            if let Some(v) = spec.setting(key) {
                *field = parse_duration(v).map_err(|e| Error::invalid(key, e.to_string()))?;
            }
        }
        if policy.timeout.is_zero() {
            return Err(Error::invalid(
                "com.fjord.callback.timeout",
                "must be more than 0",
            ));
        }
        if policy.max_wait < policy.min_wait {
            return Err(Error::invalid(
                "com.fjord.callback.max_wait",
                "must not be shorter than com.fjord.callback.min_wait",
            ));
        }
        Ok(policy)
    }

    /// The wait after failed attempt `attempt` (from 1), before jitter and `Retry-After`.
    pub fn base_wait(&self, attempt: u32) -> Duration {
        crate::retry::base_backoff(self.min_wait, self.max_wait, attempt)
    }

    /// The wait after failed attempt `attempt`: jittered by ±20 %, and at least what the
    /// receiver asked for in `Retry-After`.
    pub fn wait(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        crate::retry::backoff(self.min_wait, self.max_wait, attempt, retry_after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(annotations: &[(&str, &str)]) -> FunctionSpec {
        let mut spec: FunctionSpec = serde_json::from_value(serde_json::json!({
            "name": "f", "lang": "builtin", "handler": "echo"
        }))
        .unwrap();
        for (k, v) in annotations {
            spec.annotations.insert((*k).into(), (*v).into());
        }
        spec
    }

    #[test]
    fn schedule_doubles_up_to_the_cap() {
        let p = Policy::default();
        let waits: Vec<u64> = (1..=14).map(|n| p.base_wait(n).as_secs()).collect();
        assert_eq!(
            waits,
            [
                1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 3600, 3600
            ]
        );
        assert_eq!(p.base_wait(500), Duration::from_secs(3600));
        for n in 1..10 {
            let w = p.wait(n, None).as_secs_f64();
            let base = p.base_wait(n).as_secs_f64();
            assert!(w >= base * 0.8 - 1e-9 && w <= base * 1.2 + 1e-9);
        }
        assert_eq!(
            p.wait(1, Some(Duration::from_secs(90))),
            Duration::from_secs(90)
        );
    }

    #[test]
    fn annotations_set_the_policy() {
        let p = Policy::for_spec(&with(&[
            ("com.fjord.callback.attempts", "5"),
            ("com.fjord.callback.min_wait", "200ms"),
            ("com.fjord.callback.max_wait", "2s"),
            ("com.fjord.callback.timeout", "500ms"),
        ]))
        .unwrap();
        assert_eq!(p.attempts, 5);
        assert_eq!(p.base_wait(1), Duration::from_millis(200));
        assert_eq!(p.base_wait(5), Duration::from_secs(2));
        assert_eq!(p.timeout, Duration::from_millis(500));
        for bad in [
            ("com.fjord.callback.attempts", "0"),
            ("com.fjord.callback.attempts", "many"),
            ("com.fjord.callback.timeout", "0s"),
            ("com.fjord.callback.max_age", "soon"),
            ("com.fjord.callback.max_wait", "100ms"),
        ] {
            let e = Policy::for_spec(&with(&[bad])).unwrap_err().to_string();
            assert!(e.contains(bad.0), "{e}");
        }
    }
}
