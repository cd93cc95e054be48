//! Prometheus metrics in the text exposition format 0.0.4: labelled counters and histograms
//! (real `_bucket` lines, not summaries) kept in memory, and gauges written from figures read
//! at scrape time.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// Bucket bounds in seconds for latencies from a millisecond to a minute.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0, 30.0, 60.0,
];

/// The content type of a `/metrics` answer.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A counter family: one monotonic count per set of label values.
pub struct Counter {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    values: Mutex<BTreeMap<Vec<String>, u64>>,
}

impl Counter {
    pub const fn new(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> Self {
        Counter {
            name,
            help,
            labels,
            values: Mutex::new(BTreeMap::new()),
        }
    }

    /// Adds `n` to the series of these label values (in the order of the family's labels).
    pub fn add(&self, values: &[&str], n: u64) {
        let mut series = self.values.lock().expect("counter lock");
        let key: Vec<String> = values.iter().map(|v| (*v).to_owned()).collect();
        *series.entry(key).or_default() += n;
    }

    pub fn inc(&self, values: &[&str]) {
        self.add(values, 1);
    }

    /// The count of one series (0 if it has none yet).
    pub fn get(&self, values: &[&str]) -> u64 {
        let series = self.values.lock().expect("counter lock");
        let key: Vec<String> = values.iter().map(|v| (*v).to_owned()).collect();
        series.get(&key).copied().unwrap_or(0)
    }

    pub fn write(&self, out: &mut String) {
        header(out, self.name, self.help, "counter");
        let series = self.values.lock().expect("counter lock");
        for (values, n) in series.iter() {
            let labels = label_set(self.labels, values, None);
            let _ = writeln!(out, "{}{labels} {n}", self.name);
        }
    }
}

#[derive(Clone, Debug, Default)]
struct Series {
    /// Observations at or below each bound (not cumulative; summed when written).
    counts: Vec<u64>,
    count: u64,
    sum: f64,
}

/// A histogram family: one histogram per set of label values.
pub struct Histogram {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    bounds: &'static [f64],
    series: Mutex<BTreeMap<Vec<String>, Series>>,
}

impl Histogram {
    pub const fn new(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
        bounds: &'static [f64],
    ) -> Self {
        Histogram {
            name,
            help,
            labels,
            bounds,
            series: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn observe(&self, values: &[&str], value: f64) {
        let mut series = self.series.lock().expect("histogram lock");
        let key: Vec<String> = values.iter().map(|v| (*v).to_owned()).collect();
        let s = series.entry(key).or_insert_with(|| Series {
            counts: vec![0; self.bounds.len()],
            ..Series::default()
        });
        if let Some(i) = self.bounds.iter().position(|b| value <= *b) {
            s.counts[i] += 1;
        }
        s.count += 1;
        s.sum += value;
    }

    pub fn write(&self, out: &mut String) {
        header(out, self.name, self.help, "histogram");
        let series = self.series.lock().expect("histogram lock");
        for (values, s) in series.iter() {
            let mut cumulative = 0;
            for (bound, n) in self.bounds.iter().zip(&s.counts) {
                cumulative += n;
                let labels = label_set(self.labels, values, Some(&bound.to_string()));
                let _ = writeln!(out, "{}_bucket{labels} {cumulative}", self.name);
            }
            let labels = label_set(self.labels, values, Some("+Inf"));
            let _ = writeln!(out, "{}_bucket{labels} {}", self.name, s.count);
            let labels = label_set(self.labels, values, None);
            let _ = writeln!(out, "{}_sum{labels} {}", self.name, s.sum);
            let _ = writeln!(out, "{}_count{labels} {}", self.name, s.count);
        }
    }
}

/// Writes a gauge family from figures read now: each row is its label values and its value.
pub fn write_gauge<'a>(
    out: &mut String,
    name: &str,
    help: &str,
    labels: &[&str],
    rows: impl IntoIterator<Item = (Vec<&'a str>, f64)>,
) {
    header(out, name, help, "gauge");
    for (values, value) in rows {
        let values: Vec<String> = values.into_iter().map(str::to_owned).collect();
        let _ = writeln!(out, "{name}{} {value}", label_set(labels, &values, None));
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {}", help.replace('\\', "\\\\"));
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// `{a="x",b="y"}` (with `le` last for a bucket), or nothing without labels.
fn label_set(names: &[&str], values: &[String], le: Option<&str>) -> String {
    let mut pairs: Vec<String> = names
        .iter()
        .zip(values)
        .map(|(n, v)| format!("{n}=\"{}\"", escape(v)))
        .collect();
    if let Some(le) = le {
        pairs.push(format!("le=\"{le}\""));
    }
    if pairs.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", pairs.join(","))
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
        let h = Histogram::new("x_seconds", "test", &["function_name"], &[0.01, 0.1, 1.0]);
        for s in [0.005, 0.01, 0.05, 0.5, 7.0] {
            h.observe(&["f"], s);
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

    #[test]
    fn counters_and_gauges_carry_their_labels() {
        let c = Counter::new("calls_total", "test", &["function_name", "code"]);
        c.inc(&["a", "200"]);
        c.add(&["a", "200"], 2);
        c.inc(&["b\"q", "500"]);
        let mut out = String::new();
        c.write(&mut out);
        write_gauge(&mut out, "depth", "test", &[], [(vec![], 4.0)]);
        for line in [
            "# TYPE calls_total counter",
            "calls_total{function_name=\"a\",code=\"200\"} 3",
            "calls_total{function_name=\"b\\\"q\",code=\"500\"} 1",
            "# TYPE depth gauge",
            "depth 4",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} missing in\n{out}");
        }
        assert_eq!(c.get(&["a", "200"]), 3);
    }
}
