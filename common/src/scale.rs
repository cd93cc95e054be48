//! How many workers a function may have, per function (labels or annotations, OpenFaaS's names
//! where OpenFaaS has one):
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `com.openfaas.scale.min` | 1 | workers kept while the function is busy or was lately |
//! | `com.openfaas.scale.max` | 20 | most workers |
//! | `com.openfaas.scale.target` | 10 | calls (queued + running) per worker |
//! | `com.openfaas.scale.zero` | false | stop every worker after `zero-duration` idle (also when `min` is 0) |
//! | `com.openfaas.scale.zero-duration` | 5m | idle time before scaling to zero |
//! | `com.fjord.scale.down-window` | 30s | how long fewer workers must suffice before some stop |
//!
//! The single-host autoscaler (`fjord-worker control`) and the Kubernetes manifests (KEDA
//! ScaledObjects) both read a function's settings from here.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::parse_duration;
use crate::queue::Queue;
use crate::stack::FunctionSpec;
use crate::{Error, FunctionName};

#[derive(Clone, Debug, PartialEq)]
pub struct ScalePolicy {
    pub min: u32,
    pub max: u32,
    pub target: u32,
    /// The function goes to zero workers after `zero_after` without calls.
    pub zero: bool,
    pub zero_after: Duration,
    pub down_window: Duration,
}

impl Default for ScalePolicy {
    fn default() -> Self {
        ScalePolicy {
            min: 1,
            max: 20,
            target: 10,
            zero: false,
            zero_after: Duration::from_secs(300),
            down_window: Duration::from_secs(30),
        }
    }
}

impl ScalePolicy {
    /// A function's policy; a present but invalid setting is an error naming it (deploying
    /// checks this, so a deployed function always has a valid policy).
    pub fn for_spec(spec: &FunctionSpec) -> Result<ScalePolicy, Error> {
        let defaults = ScalePolicy::default();
        let min = spec.setting_u32("com.openfaas.scale.min", defaults.min)?;
        let max = spec.setting_u32("com.openfaas.scale.max", defaults.max)?;
        let target = spec.setting_u32("com.openfaas.scale.target", defaults.target)?;
        if max == 0 {
            return Err(Error::invalid(
                "com.openfaas.scale.max",
                "must be at least 1",
            ));
        }
        if min > max {
            return Err(Error::invalid(
                "com.openfaas.scale.min",
                format!("{min} is above com.openfaas.scale.max ({max})"),
            ));
        }
        if target == 0 {
            return Err(Error::invalid(
                "com.openfaas.scale.target",
                "must be at least 1",
            ));
        }
        let zero = match spec.setting("com.openfaas.scale.zero").map(str::trim) {
            None => false,
            Some("true") => true,
            Some("false") => false,
            Some(v) => {
                return Err(Error::invalid(
                    "com.openfaas.scale.zero",
                    format!("{v:?} is neither \"true\" nor \"false\""),
                ));
            }
        };
        let mut policy = ScalePolicy {
            min,
            max,
            target,
            zero: zero || min == 0,
            ..defaults
        };
        for (key, field) in [
            ("com.openfaas.scale.zero-duration", &mut policy.zero_after),
            ("com.fjord.scale.down-window", &mut policy.down_window),
        ] {
            if let Some(v) = spec.setting(key) {
                *field = parse_duration(v).map_err(|e| Error::invalid(key, e.to_string()))?;
            }
        }
        Ok(policy)
    }

    /// Workers for a backlog of `load` calls (queued + running): `ceil(load / target)`, at most
    /// `max`.
    pub fn needed(&self, load: u64) -> u32 {
        load.div_ceil(self.target as u64).min(self.max as u64) as u32
    }

    /// Workers kept while the function has not been idle for `zero_after`: `min`, and at least
    /// one for a function that scales to zero (it stops them all only once idle long enough).
    pub fn floor(&self) -> u32 {
        if self.zero { self.min.max(1) } else { self.min }
    }
}

/// A request to the autoscaler on [`crate::queue::Names::autoscaler`]: with `replicas`, run that
/// many workers until backlog needs more or the function has been idle long enough to scale to
/// zero (`POST /system/scale-function`); without, only report.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ScaleRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
}

/// The autoscaler's answer: what it wants for the function and how its workers fare.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaleStatus {
    /// Workers wanted now.
    pub replicas: u32,
    /// Worker processes alive (started, not yet stopped).
    pub running: u32,
    /// A replica count set through the API, while it holds.
    pub manual: Option<u32>,
    pub min: u32,
    pub max: u32,
    pub target: u32,
    pub scale_to_zero: bool,
    /// Seconds since the function last had a call queued or running; `None`: none since the
    /// autoscaler started.
    pub idle_seconds: Option<f64>,
    /// Workers keep crashing soon after start; they are restarted with a growing backoff.
    pub crash_loop: bool,
    /// Worker exits that were not asked for, since the function was deployed.
    pub crashes: u64,
    pub last_exit: Option<String>,
}

/// Asks the autoscaler; `Ok(None)` when none runs (no control process spawning workers, as on
/// Kubernetes where KEDA scales them).
pub async fn ask(
    queue: &Queue,
    function: &FunctionName,
    request: &ScaleRequest,
    timeout: Duration,
) -> Result<Option<ScaleStatus>, Error> {
    let body = serde_json::to_vec(request).map_err(|e| Error::Nats(e.to_string()))?;
    let asked = queue
        .client
        .request(queue.names.autoscaler(function), body.into());
    match tokio::time::timeout(timeout, asked).await {
        Err(_) => Err(Error::Nats("the autoscaler did not answer in time".into())),
        Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => Ok(None),
        Ok(Err(e)) => Err(Error::nats(e)),
        // `null`: the autoscaler runs but does not know the function (yet).
        Ok(Ok(reply)) => serde_json::from_slice::<Option<ScaleStatus>>(&reply.payload)
            .map_err(|e| Error::Nats(format!("undecodable autoscaler answer: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(settings: &[(&str, &str)]) -> FunctionSpec {
        let mut spec: FunctionSpec = serde_json::from_value(
            serde_json::json!({"name": "f", "lang": "builtin", "handler": "echo"}),
        )
        .unwrap();
        for (k, v) in settings {
            spec.labels.insert(k.to_string(), v.to_string());
        }
        spec
    }

    #[test]
    fn defaults_match_openfaas() {
        let policy = ScalePolicy::for_spec(&spec(&[])).unwrap();
        assert_eq!(policy, ScalePolicy::default());
        assert_eq!(policy.needed(0), 0);
        assert_eq!(policy.needed(1), 1);
        assert_eq!(policy.needed(10), 1);
        assert_eq!(policy.needed(11), 2);
        assert_eq!(policy.needed(10_000), 20);
        assert_eq!(policy.floor(), 1);
    }

    #[test]
    fn min_zero_or_zero_label_scales_to_zero() {
        let p = ScalePolicy::for_spec(&spec(&[("com.openfaas.scale.min", "0")])).unwrap();
        assert!(p.zero);
        assert_eq!(p.floor(), 1);
        let p = ScalePolicy::for_spec(&spec(&[
            ("com.openfaas.scale.zero", "true"),
            ("com.openfaas.scale.min", "3"),
            ("com.openfaas.scale.zero-duration", "90s"),
        ]))
        .unwrap();
        assert!(p.zero);
        assert_eq!(p.floor(), 3);
        assert_eq!(p.zero_after, Duration::from_secs(90));
    }

    #[test]
    fn invalid_settings_name_their_key() {
        for (settings, key) in [
            (
                vec![("com.openfaas.scale.max", "0")],
                "com.openfaas.scale.max",
            ),
            (
                vec![
                    ("com.openfaas.scale.min", "5"),
                    ("com.openfaas.scale.max", "2"),
                ],
                "com.openfaas.scale.min",
            ),
            (
                vec![("com.openfaas.scale.target", "0")],
                "com.openfaas.scale.target",
            ),
            (
                vec![("com.openfaas.scale.zero", "yes")],
                "com.openfaas.scale.zero",
            ),
            (
                vec![("com.openfaas.scale.zero-duration", "soon")],
                "com.openfaas.scale.zero-duration",
            ),
            (
                vec![("com.fjord.scale.down-window", "-1s")],
                "com.fjord.scale.down-window",
            ),
            (
                vec![("com.openfaas.scale.min", "x")],
                "com.openfaas.scale.min",
            ),
        ] {
            let err = ScalePolicy::for_spec(&spec(&settings))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{settings:?}: {err}");
        }
    }
}
