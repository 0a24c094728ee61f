//! Prometheus metrics at `/metrics`, kept by the `prometheus-client` crate.
//!
//! Each role registers its series at start and keeps the handles; the hot path only touches
//! atomics (counters, gauges) or a histogram's short lock. `/metrics` renders the OpenMetrics
//! text format, which Prometheus scrapes as it does its own.

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::histogram::exponential_buckets;
use prometheus_client::registry::Registry;

pub use prometheus_client::metrics::counter::Counter;
pub use prometheus_client::metrics::family::Family;
pub use prometheus_client::metrics::gauge::Gauge;
pub use prometheus_client::metrics::histogram::Histogram;

/// Latency histograms by label set, each with [`latency_histogram`]'s buckets.
pub type Latencies<S> = Family<S, Histogram, fn() -> Histogram>;

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A histogram of seconds from 1 ms to about 33 s in doublings: wide enough for an
/// in-memory answer and for an observe fan-out on a loaded replica.
pub fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// Records `elapsed` in `histogram`, in seconds.
pub fn observe_duration(histogram: &Histogram, elapsed: Duration) {
    histogram.observe(elapsed.as_secs_f64());
}

/// The registry a process renders at `/metrics`.
#[derive(Clone, Default)]
pub struct Metrics(Arc<Mutex<Registry>>);

impl Metrics {
    /// Registers a counter. `name` leaves out the `_total` the exposition adds.
    pub fn counter(&self, name: &str, help: &str) -> Counter {
        let counter = Counter::default();
        self.register(name, help, counter.clone());
        counter
    }

    /// Registers counters told apart by labels `S`. `name` leaves out `_total`.
    pub fn counters<S>(&self, name: &str, help: &str) -> Family<S, Counter>
    where
        S: EncodeLabelSet + Clone + Hash + Eq + Debug + Send + Sync + 'static,
    {
        let family = Family::default();
        self.register(name, help, family.clone());
        family
    }

    /// Registers a gauge.
    pub fn gauge(&self, name: &str, help: &str) -> Gauge {
        let gauge = Gauge::default();
        self.register(name, help, gauge.clone());
        gauge
    }

    /// Registers a latency histogram in seconds (`name` should end in `_seconds`).
    pub fn latency(&self, name: &str, help: &str) -> Histogram {
        let histogram = latency_histogram();
        self.register(name, help, histogram.clone());
        histogram
    }

    /// Registers latency histograms told apart by labels `S`.
    pub fn latencies<S>(&self, name: &str, help: &str) -> Latencies<S>
    where
        S: EncodeLabelSet + Clone + Hash + Eq + Debug + Send + Sync + 'static,
    {
        let family: Latencies<S> = Family::new_with_constructor(latency_histogram);
        self.register(name, help, family.clone());
        family
    }

    fn register(&self, name: &str, help: &str, metric: impl prometheus_client::registry::Metric) {
        if let Ok(mut registry) = self.0.lock() {
            registry.register(name, help, metric);
        }
    }

    /// The OpenMetrics text exposition of every series.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Ok(registry) = self.0.lock() {
            if let Err(err) = prometheus_client::encoding::text::encode(&mut out, &registry) {
                tracing::warn!(error = %err, "rendering metrics failed");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_and_histograms() {
        let metrics = Metrics::default();
        let said = metrics.counter("lingr_says", "Says stored.");
        said.inc();
        said.inc_by(2);
        metrics.gauge("lingr_held", "Held now.").set(-1);
        let outcomes = metrics.counters::<[(&str, &str); 1]>("lingr_outcomes", "Outcomes.");
        outcomes.get_or_create(&[("outcome", "events")]).inc();
        let latency = metrics.latency("lingr_say_seconds", "Say latency.");
        observe_duration(&latency, Duration::from_millis(3));
        let text = metrics.render();
        for line in [
            "# TYPE lingr_says counter\nlingr_says_total 3\n",
            "lingr_held -1\n",
            "lingr_outcomes_total{outcome=\"events\"} 1\n",
            "lingr_say_seconds_bucket{le=\"0.002\"} 0\n",
            "lingr_say_seconds_bucket{le=\"0.004\"} 1\n",
            "lingr_say_seconds_count 1\n",
        ] {
            assert!(text.contains(line), "{line:?} in {text}");
        }
    }
}
