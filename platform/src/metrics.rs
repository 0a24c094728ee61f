//! Counters and gauges, rendered in the Prometheus text format at `/metrics`.
//!
//! A deliberately small registry: each role registers its few series at start and bumps
//! atomics on the hot path; rendering walks the list.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

/// A monotonically increasing count.
#[derive(Debug, Clone, Default)]
pub struct Counter(Arc<AtomicI64>);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0
            .fetch_add(i64::try_from(n).unwrap_or(i64::MAX), Ordering::Relaxed);
    }
    /// The current count.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Clone, Default)]
pub struct Gauge(Arc<AtomicI64>);

impl Gauge {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// Takes one away.
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
    /// Sets the value.
    pub fn set(&self, value: i64) {
        self.0.store(value, Ordering::Relaxed);
    }
    /// The current value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

struct Series {
    name: String,
    help: String,
    kind: &'static str,
    value: Arc<AtomicI64>,
}

/// The registry a process renders at `/metrics`.
#[derive(Clone, Default)]
pub struct Metrics(Arc<Mutex<Vec<Series>>>);

impl Metrics {
    /// Registers a counter (the name should end in `_total`).
    pub fn counter(&self, name: &str, help: &str) -> Counter {
        let counter = Counter::default();
        self.register(name, help, "counter", counter.0.clone());
        counter
    }

    /// Registers a gauge.
    pub fn gauge(&self, name: &str, help: &str) -> Gauge {
        let gauge = Gauge::default();
        self.register(name, help, "gauge", gauge.0.clone());
        gauge
    }

    fn register(&self, name: &str, help: &str, kind: &'static str, value: Arc<AtomicI64>) {
        if let Ok(mut series) = self.0.lock() {
            series.push(Series {
                name: name.to_owned(),
                help: help.to_owned(),
                kind,
                value,
            });
        }
    }

    /// The Prometheus text exposition of every series.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Ok(series) = self.0.lock() {
            for s in series.iter() {
                let _ = writeln!(out, "# HELP {} {}", s.name, s.help);
                let _ = writeln!(out, "# TYPE {} {}", s.name, s.kind);
                let _ = writeln!(out, "{} {}", s.name, s.value.load(Ordering::Relaxed));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_registered_series() {
        let metrics = Metrics::default();
        let said = metrics.counter("lingr_says_total", "Says stored.");
        said.inc();
        said.add(2);
        let text = metrics.render();
        assert!(
            text.contains("# TYPE lingr_says_total counter\nlingr_says_total 3\n"),
            "{text}"
        );
    }
}
