//! Plumbing every Lingr role stands on, written once.
//!
//! - [`config`]: the flags every role shares, and the secret.
//! - [`telemetry`]: logs, OpenTelemetry traces over OTLP, and the trace context carried in
//!   HTTP and NATS headers.
//! - [`respond`]: request parameters from GET, JSON or form bodies, and the JSON/JSONP answers.
//! - [`http`]: the router layers and routes every role has (CORS, health, metrics, 404/405).
//! - [`nats`]: connecting, and creating the event stream and key-value buckets on NATS 2.9.
//! - [`kv`]: JSON records in key-value buckets, changed with compare-and-set.
//! - [`mirror`]: a live in-memory copy of a key-value bucket.
//! - [`maps`]: hash maps for the in-memory lookups on the request path.
//! - [`metrics`]: counters, gauges and latency histograms for `/metrics`.
//! - [`readiness`]: `/readyz` from signals of what a process depends on, with a grace for a
//!   momentary outage.
//! - [`role`]: what a started role hands to its process.
//! - [`server`]: serving HTTP/1.1 with header, idle and pending-connection limits, and the
//!   client address behind trusted proxies.
//! - [`shutdown`]: SIGINT/SIGTERM into a cancellation token.
//! - [`supervise`]: restarting a consumer or watch that ended, until shutdown.
//! - [`clock`]: wall-clock milliseconds, the one place the services read the time of day.
//! - [`faults`]: crashing on purpose where a fault test's fault point says.

pub mod clock;
pub mod config;
pub mod faults;
pub mod http;
pub mod kv;
pub mod maps;
pub mod metrics;
pub mod mirror;
pub mod nats;
pub mod readiness;
pub mod respond;
pub mod role;
pub mod server;
pub mod shutdown;
pub mod supervise;
pub mod telemetry;

pub use respond::{ApiError, Params, Reply};
