//! What each request leaves behind: a server span (continuing the caller's trace), a line of
//! access log at debug level, and a sample in the latency histogram of its route.
//!
//! The route is the pattern the router matched (`/api/room/say`), never the request's path or
//! query: JSONP calls carry the session and ticket in the query, and a path a client makes up
//! would give the histogram a label per request.

use std::time::Duration;

use axum::extract::MatchedPath;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use tracing::field::Empty;
use tracing::Span;

use crate::http::RouteLabel;
use crate::metrics::{Latencies, Metrics};

/// The W3C header naming the caller's trace.
const TRACEPARENT: &str = "traceparent";

/// The label of a request's latency: its route and status.
type RequestLabels = [(&'static str, String); 2];

/// The latency histogram of every route.
#[derive(Clone)]
pub struct RequestMetrics(Latencies<RequestLabels>);

impl RequestMetrics {
    /// Registers the histogram.
    pub fn register(metrics: &Metrics) -> Self {
        Self(metrics.latencies(
            "lingr_http_request_seconds",
            "From a request's headers to its answer, by route and status (held observes included).",
        ))
    }
}

/// The span a request is served in, continuing the trace its `traceparent` names; none when
/// spans are not exported and the caller does not trace the request. Such a span could never
/// be recorded (without an exporter the sampler drops every root), yet the OpenTelemetry
/// layer would build it for every request and look it up at every poll of a held observe,
/// a tenth of a comet's CPU in a fan-out. The spans a call makes itself (a say's publish)
/// still start a trace context that travels on.
pub fn span(method: &Method, headers: &HeaderMap) -> Span {
    if !crate::telemetry::exporting() && !headers.contains_key(TRACEPARENT) {
        return Span::none();
    }
    let span = tracing::info_span!(
        target: "lingr::http",
        "http request",
        otel.kind = "server",
        http.request.method = %method,
        http.route = Empty,
        http.response.status_code = Empty,
        otel.status_code = Empty,
    );
    crate::telemetry::continue_trace(&span, headers);
    span
}

/// Records a request's answer in its span, the access log and the histogram.
pub fn record(
    metrics: &RequestMetrics,
    span: &Span,
    method: &Method,
    response: &Response,
    elapsed: Duration,
) {
    let route = response
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str)
        .or_else(|| {
            response
                .extensions()
                .get::<RouteLabel>()
                .map(|label| label.0)
        })
        .unwrap_or("unmatched");
    let status = response.status();
    if !span.is_disabled() {
        span.record("http.route", route);
        crate::telemetry::rename(span, format!("{method} {route}"));
        // Signed: the OpenTelemetry layer would export an unsigned value as text.
        span.record("http.response.status_code", i64::from(status.as_u16()));
        if status.is_server_error() {
            span.record("otel.status_code", "ERROR");
        }
    }
    tracing::debug!(
        target: "lingr::http",
        parent: span,
        %method,
        route,
        status = status.as_u16(),
        latency_ms = elapsed.as_secs_f64() * 1000.0,
        "answered"
    );
    metrics
        .0
        .get_or_create(&[
            ("route", route.to_owned()),
            ("status", status_label(status)),
        ])
        .observe(elapsed.as_secs_f64());
}

fn status_label(status: StatusCode) -> String {
    status.as_u16().to_string()
}
