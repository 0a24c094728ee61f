//! What every role's HTTP side has in common: API routes that take GET and POST, CORS for
//! cross-origin XHR, JSON answers for unknown paths and methods, and `/healthz`, `/readyz`,
//! `/metrics`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::handler::Handler;
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, on, MethodFilter, MethodRouter};
use axum::Router;
use lingr_proto::ErrorCode;
use tower_http::cors::{Any, CorsLayer};

use crate::metrics::Metrics;
use crate::respond::{format_of, ApiError, Reply};

/// A route that answers GET and POST with `handler`, and other methods with a JSON 405.
/// HEAD is refused too: routed to the GET handler, as a router would by default, it would
/// store a message or make a session and only hide the answer.
pub fn api_route<H, T, S>(handler: H) -> MethodRouter<S>
where
    H: Handler<T, S> + Clone,
    T: 'static,
    S: Clone + Send + Sync + 'static,
{
    on(MethodFilter::GET.or(MethodFilter::POST), handler)
        .on(MethodFilter::HEAD, method_not_allowed)
        .fallback(method_not_allowed)
}

async fn method_not_allowed(uri: Uri) -> Reply {
    Reply::error(
        format_of(&uri),
        &ApiError::new(ErrorCode::MethodNotAllowed, "use GET or POST"),
    )
}

async fn not_found(uri: Uri) -> Reply {
    Reply::error(
        format_of(&uri),
        &ApiError::new(ErrorCode::NotFound, "no such endpoint"),
    )
}

/// Whether a process should get traffic: every role's readiness flag is up, it is not
/// draining, and its NATS connections are up.
#[derive(Clone, Default)]
pub struct Health {
    ready: Vec<Arc<AtomicBool>>,
    draining: Arc<AtomicBool>,
    nats: Vec<async_nats::Client>,
}

impl Health {
    /// Adds a readiness flag that must be up (a role sets it once it has caught up).
    pub fn require(mut self, flag: Arc<AtomicBool>) -> Self {
        self.ready.push(flag);
        self
    }

    /// Adds a NATS connection that must be connected.
    pub fn require_nats(mut self, client: async_nats::Client) -> Self {
        self.nats.push(client);
        self
    }

    /// Marks the process as draining: `/readyz` answers 503 from now on.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        !self.draining.load(Ordering::SeqCst)
            && self.ready.iter().all(|flag| flag.load(Ordering::SeqCst))
            && self
                .nats
                .iter()
                .all(|c| c.connection_state() == async_nats::connection::State::Connected)
    }
}

/// Adds the health routes, the JSON fallbacks and CORS to a role's API routes, and `/metrics`
/// unless it is served on a listener of its own ([`metrics_app`]).
pub fn app(api: Router, health: Health, metrics: Option<Metrics>) -> Router {
    let readyz = move || {
        let health = health.clone();
        async move {
            if health.is_ready() {
                (StatusCode::OK, "ready\n")
            } else {
                (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            }
        }
    };
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([header::CONTENT_TYPE])
        .max_age(std::time::Duration::from_secs(86_400));
    let api = match metrics {
        Some(metrics) => api.merge(metrics_app(metrics)),
        None => api,
    };
    api.route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .layer(cors)
}

/// `/metrics` alone, for `--metrics-listen`: an address only the monitoring network reaches.
pub fn metrics_app(metrics: Metrics) -> Router {
    let render = move || {
        let metrics = metrics.clone();
        async move { prometheus_text(metrics.render()) }
    };
    Router::new().route("/metrics", get(render))
}

fn prometheus_text(body: String) -> Response {
    let mut response = body.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_draining_process_is_not_ready() {
        let flag = Arc::new(AtomicBool::new(false));
        let health = Health::default().require(Arc::clone(&flag));
        assert!(!health.is_ready(), "not ready before its roles are");
        flag.store(true, Ordering::SeqCst);
        assert!(health.is_ready());
        health.set_draining();
        assert!(!health.is_ready(), "draining turns it not-ready");
    }
}
