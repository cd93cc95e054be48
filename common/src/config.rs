//! Configuration pieces every binary shares: how to reach NATS and under which prefix, how to
//! reach PostgreSQL, and the duration syntax of settings (`500ms`, `30s`, `2m`, `1h`).

use std::time::Duration;

use crate::Error;
use crate::queue::Names;

/// Where NATS is and which installation's names to use.
#[derive(Clone, Debug, clap::Args)]
pub struct NatsArgs {
    /// NATS server URL.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Prefix of the stream, subjects, consumers and buckets of this installation.
    #[arg(long, env = "FJORD_NATS_PREFIX", default_value = "fjord")]
    pub nats_prefix: String,
}

impl NatsArgs {
    pub fn names(&self) -> Result<Names, Error> {
        Names::new(&self.nats_prefix)
    }
}

/// Parses `250ms`, `30s`, `2m`, `1h`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, Error> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: f64 = number.parse().map_err(|_| {
        Error::invalid(
            "duration",
            format!("{text:?} is not like 500ms, 30s, 2m or 1h"),
        )
    })?;
    let seconds = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => {
            return Err(Error::invalid(
                "duration",
                format!("{text:?}: unit must be ms, s, m or h"),
            ));
        }
    };
    Duration::try_from_secs_f64(seconds)
        .map_err(|_| Error::invalid("duration", format!("{text:?} is out of range")))
}

/// [`parse_duration`] as a clap `value_parser`.
pub fn duration_arg(text: &str) -> Result<Duration, String> {
    parse_duration(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5d").is_err());
    }
}
