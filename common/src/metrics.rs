//! Prometheus histograms (text exposition format 0.0.4, real `_bucket` lines), one series per
//! function.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// Bucket bounds in seconds for latencies from a millisecond to a minute.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0, 30.0, 60.0,
];

#[derive(Clone, Debug, Default)]
struct Series {
    /// Observations at or below each bound (not cumulative; summed when written).
    counts: Vec<u64>,
    count: u64,
    sum: f64,
}

/// A histogram with a `function_name` label.
pub struct FunctionHistogram {
    name: &'static str,
    help: &'static str,
    bounds: &'static [f64],
    series: Mutex<BTreeMap<String, Series>>,
}

impl FunctionHistogram {
    pub const fn new(name: &'static str, help: &'static str, bounds: &'static [f64]) -> Self {
        FunctionHistogram {
            name,
            help,
            bounds,
            series: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn observe(&self, function: &str, seconds: f64) {
        let mut series = self.series.lock().expect("histogram lock");
        let s = series.entry(function.to_owned()).or_insert_with(|| Series {
            counts: vec![0; self.bounds.len()],
            ..Series::default()
        });
        if let Some(i) = self.bounds.iter().position(|b| seconds <= *b) {
            s.counts[i] += 1;
        }
        s.count += 1;
        s.sum += seconds;
    }

    /// Appends the histogram in Prometheus's text format.
    pub fn write(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} histogram", self.name);
        let series = self.series.lock().expect("histogram lock");
        for (function, s) in series.iter() {
            let label = escape(function);
            let mut cumulative = 0;
            for (bound, n) in self.bounds.iter().zip(&s.counts) {
                cumulative += n;
                let _ = writeln!(
                    out,
                    "{}_bucket{{function_name=\"{label}\",le=\"{bound}\"}} {cumulative}",
                    self.name
                );
            }
            let _ = writeln!(
                out,
                "{}_bucket{{function_name=\"{label}\",le=\"+Inf\"}} {}",
                self.name, s.count
            );
            let _ = writeln!(
                out,
                "{}_sum{{function_name=\"{label}\"}} {}",
                self.name, s.sum
            );
            let _ = writeln!(
                out,
                "{}_count{{function_name=\"{label}\"}} {}",
                self.name, s.count
            );
        }
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_with_sum_and_count() {
        let h = FunctionHistogram::new("x_seconds", "test", &[0.01, 0.1, 1.0]);
        for s in [0.005, 0.01, 0.05, 0.5, 7.0] {
            h.observe("f", s);
        }
        let mut out = String::new();
        h.write(&mut out);
        for line in [
            "# TYPE x_seconds histogram",
            "x_seconds_bucket{function_name=\"f\",le=\"0.01\"} 2",
            "x_seconds_bucket{function_name=\"f\",le=\"0.1\"} 3",
            "x_seconds_bucket{function_name=\"f\",le=\"1\"} 4",
            "x_seconds_bucket{function_name=\"f\",le=\"+Inf\"} 5",
            "x_seconds_count{function_name=\"f\"} 5",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} missing in\n{out}");
        }
        let sum = out
            .lines()
            .find_map(|l| l.strip_prefix("x_seconds_sum{function_name=\"f\"} "));
        assert!(
            (sum.unwrap().parse::<f64>().unwrap() - 7.565).abs() < 1e-9,
            "{out}"
        );
    }
}
