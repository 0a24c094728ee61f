//! Logging and trace context.
//!
//! [`init`] installs a `tracing` subscriber: human-readable lines, or JSON lines with
//! `LOG_FORMAT=json`, filtered by `RUST_LOG` (default `info`). The W3C trace context travels in
//! NATS message headers ([`trace_headers`]) from the publish to every consumer, so one trace id
//! ties a say's HTTP request to its comet delivery and its history write in the logs.

use async_nats::HeaderMap;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber once; later calls (in tests) do nothing.
pub fn init(service: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let result = if json {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .json()
            .try_init()
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).try_init()
    };
    if result.is_ok() {
        if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some() {
            tracing::warn!(
                service,
                "OTEL_EXPORTER_OTLP_ENDPOINT is set but OTLP export is not built yet; trace ids are logged only"
            );
        }
        tracing::debug!(service, "telemetry initialised");
    }
}

/// The W3C `traceparent` header name.
pub const TRACEPARENT: &str = "traceparent";

/// A `traceparent` continuing `incoming` (the HTTP request's, if valid) with a new span id, or
/// starting a new trace.
pub fn child_traceparent(incoming: Option<&str>) -> String {
    let trace_id = incoming
        .and_then(|tp| {
            let mut parts = tp.split('-');
            match (parts.next(), parts.next(), parts.next(), parts.next()) {
                (Some("00"), Some(trace), Some(span), Some(_flags))
                    if trace.len() == 32
                        && span.len() == 16
                        && trace.bytes().all(|b| b.is_ascii_hexdigit()) =>
                {
                    Some(trace.to_ascii_lowercase())
                }
                _ => None,
            }
        })
        .unwrap_or_else(|| random_hex(16));
    format!("00-{trace_id}-{}-01", random_hex(8))
}

/// NATS headers carrying a trace context.
pub fn trace_headers(traceparent: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(TRACEPARENT, traceparent);
    headers
}

/// The trace id of a NATS message's `traceparent`, for log fields.
pub fn trace_id(headers: Option<&HeaderMap>) -> Option<String> {
    let tp = headers?.get(TRACEPARENT)?.as_str();
    tp.split('-').nth(1).map(str::to_owned)
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    if crate::config::random_bytes(&mut buf).is_err() {
        buf.fill(1);
    }
    lingr_proto::values::hex(&buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continues_a_valid_trace_and_starts_one_otherwise() {
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let child = child_traceparent(Some(parent));
        assert!(child.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert_ne!(child, parent);
        let fresh = child_traceparent(Some("garbage"));
        assert_eq!(fresh.len(), 55);
    }
}
