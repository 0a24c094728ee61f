//! Logs and traces.
//!
//! [`init`] installs the `tracing` subscriber: log lines, human-readable or JSON with
//! `LOG_FORMAT=json`, filtered by `RUST_LOG` (default `info`); and an OpenTelemetry layer that
//! turns the spans of Lingr's own code into OpenTelemetry spans. They are exported over OTLP
//! when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, with
//! the protocol of `OTEL_EXPORTER_OTLP_PROTOCOL` (`http/protobuf` by default, or `grpc`), the
//! batching of `OTEL_BSP_*`, and the service name of the role (`lingr-api`, `lingr-comet`,
//! `lingr-history`; `lingr` for `dev`) unless `OTEL_SERVICE_NAME` names another.
//!
//! The W3C trace context travels in HTTP and NATS headers through the `opentelemetry`
//! propagator: a say's HTTP request continues its caller's trace, its publish carries the trace
//! in the message's headers, and comet's delivery to each observe and history's write of the
//! event continue it. The layer runs without an exporter too, so the context travels (and log
//! lines can name the trace) whether or not anything collects the spans.

use std::sync::atomic::{AtomicBool, Ordering};

use async_nats::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry::{global, Context};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing::{Level, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::filter::{filter_fn, EnvFilter};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::Layer as _;

pub use opentelemetry::trace::SpanContext;

/// Whether the installed subscriber exports spans (see [`exporting`]).
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported over OTLP: without an exporter only a caller's sampled trace
/// records spans, and a request nobody traces needs none.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// The tracer provider, to flush at exit.
pub struct Telemetry {
    provider: SdkTracerProvider,
    exporting: bool,
}

/// Installs the global subscriber and propagator; later calls (in tests) install nothing.
/// Call it inside the Tokio runtime: the gRPC exporter starts its connection there.
pub fn init(service: &str) -> Telemetry {
    global::set_text_map_propagator(TraceContextPropagator::new());
    let (provider, export_error) = tracer_provider(service);
    let exporting = provider.is_some();
    // Without an exporter, spans are not recorded unless the caller's trace is sampled: the
    // context still travels, and a room of thousands of observers costs no span per delivery.
    let provider = provider.unwrap_or_else(|| {
        SdkTracerProvider::builder()
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOff)))
            .build()
    });
    // Nothing reads the OTel context as "current" (propagation goes through each tracing
    // span's own context), and per-span busy/idle timings are not wanted: both would cost work
    // on every poll of every instrumented future, held observes included.
    let spans = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("lingr"))
        .with_context_activation(false)
        .with_tracked_inactivity(false)
        .with_threads(false)
        // Only Lingr's own spans: the exporter's HTTP and gRPC clients would trace themselves.
        .with_filter(filter_fn(|meta| {
            meta.target().starts_with("lingr") && *meta.level() <= Level::INFO
        }));
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let logs = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .with_filter(filter)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer().with_filter(filter).boxed()
    };
    let installed = tracing_subscriber::registry()
        .with(spans)
        .with(logs)
        .try_init()
        .is_ok();
    if installed {
        EXPORTING.store(exporting, Ordering::Relaxed);
        match export_error {
            Some(err) => {
                tracing::warn!(error = %err, "OTLP export is configured but cannot start; traces are not exported")
            }
            None if exporting => {
                tracing::info!(service = %service_name(service), "exporting traces over OTLP")
            }
            None => tracing::debug!("OTLP export is off (OTEL_EXPORTER_OTLP_ENDPOINT is unset)"),
        }
    }
    Telemetry {
        provider,
        exporting,
    }
}

impl Telemetry {
    /// Exports the spans still batched, waiting at most [`FLUSH_LIMIT`]: a collector that is
    /// away must not hold the process past its drain timeout.
    pub async fn shutdown(self) {
        if !self.exporting {
            return;
        }
        let provider = self.provider;
        // Blocking: it waits for the batch thread, whose gRPC export needs this runtime free.
        let flushed =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(FLUSH_LIMIT)).await;
        if let Err(err) = flushed
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()))
        {
            tracing::warn!(error = %err, "flushing traces at exit failed");
        }
    }
}

/// The longest the exit waits for the last spans to be exported.
pub const FLUSH_LIMIT: std::time::Duration = std::time::Duration::from_secs(1);

fn set(variable: &str) -> bool {
    std::env::var(variable).is_ok_and(|v| !v.trim().is_empty())
}

/// `lingr-<role>`, `lingr` for the process running every role.
fn service_name(role: &str) -> String {
    match role {
        "dev" => "lingr".to_owned(),
        role => format!("lingr-{role}"),
    }
}

/// A provider exporting over OTLP, if an endpoint is configured; or why it cannot.
fn tracer_provider(role: &str) -> (Option<SdkTracerProvider>, Option<String>) {
    if !set("OTEL_EXPORTER_OTLP_ENDPOINT") && !set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        return (None, None);
    }
    // The builder reads the protocol, endpoint, headers and timeout from the environment.
    let exporter = match opentelemetry_otlp::SpanExporter::builder().build() {
        Ok(exporter) => exporter,
        Err(err) => return (None, Some(err.to_string())),
    };
    let mut resource = Resource::builder();
    if !set("OTEL_SERVICE_NAME") {
        resource = resource.with_service_name(service_name(role));
    }
    let provider = SdkTracerProvider::builder()
        .with_resource(resource.build())
        .with_batch_exporter(exporter)
        .build();
    (Some(provider), None)
}

/// Makes `span` continue the trace an HTTP request's `traceparent` names (before it is
/// entered: a started span keeps its parent).
pub fn continue_trace(span: &Span, headers: &axum::http::HeaderMap) {
    let parent = global::get_text_map_propagator(|propagator| {
        propagator.extract(&opentelemetry_http::HeaderExtractor(headers))
    });
    set_parent(span, parent);
}

/// The trace context a NATS message carries, if any.
pub fn context_of(headers: Option<&HeaderMap>) -> Option<SpanContext> {
    let headers = headers?;
    let context =
        global::get_text_map_propagator(|propagator| propagator.extract(&NatsHeaders(headers)));
    let span = context.span().span_context().clone();
    span.is_valid().then_some(span)
}

/// Makes `span` a child of `parent` (a context carried by a NATS message).
pub fn continue_remote(span: &Span, parent: &SpanContext) {
    set_parent(
        span,
        Context::new().with_remote_span_context(parent.clone()),
    );
}

/// Renames `span` in its trace, also once started (as a request span is when its route is
/// known).
pub fn rename(span: &Span, name: String) {
    span.context().span().update_name(name);
}

fn set_parent(span: &Span, parent: Context) {
    // Refused only when the span is disabled (filtered out) or already started.
    let _ = span.set_parent(parent);
}

/// NATS headers carrying `span`'s trace context, for a message published within it.
pub fn headers_for(span: &Span) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let context = span.context();
    global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut NatsHeadersMut(&mut headers));
    });
    headers
}

/// The trace id of a context, for log lines.
pub fn trace_id(context: Option<&SpanContext>) -> String {
    context
        .map(|c| c.trace_id().to_string())
        .unwrap_or_default()
}

/// NATS headers to read a context from.
struct NatsHeaders<'a>(&'a HeaderMap);

/// NATS headers to write a context into.
struct NatsHeadersMut<'a>(&'a mut HeaderMap);

impl Injector for NatsHeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value.as_str());
    }
}

impl Extractor for NatsHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(async_nats::HeaderValue::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name.as_ref()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_context_travels_through_nats_headers() {
        global::set_text_map_propagator(TraceContextPropagator::new());
        let mut headers = HeaderMap::new();
        headers.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        );
        let context = context_of(Some(&headers)).expect("a valid context");
        assert_eq!(
            context.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(context.is_remote());
        let mut garbage = HeaderMap::new();
        garbage.insert("traceparent", "garbage");
        assert!(context_of(Some(&garbage)).is_none());
        assert!(context_of(None).is_none());
    }
}
