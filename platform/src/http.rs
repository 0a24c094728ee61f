//! What every role's HTTP side has in common: API routes that take GET and POST, CORS for
//! cross-origin XHR, JSON answers for unknown paths and methods, and `/healthz`, `/readyz`,
//! `/metrics`.

use std::convert::Infallible;
use std::future::{ready, Future, Ready};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{MatchedPath, Request};
use axum::handler::Handler;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{from_fn, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, on, MethodFilter, MethodRouter};
use axum::Router;
use futures::future::Either;
use lingr_proto::ErrorCode;
use tower::util::Oneshot;
use tower::{Service, ServiceExt as _};
use tower_http::cors::{Any, CorsLayer};

use crate::metrics::Metrics;
use crate::readiness::Health;
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

/// How long a call that needs NATS or the database may take before it answers 503
/// `unavailable`: guarantee 8 promises an answer within 5 s, and the rest is the margin for
/// writing it.
pub const CALL_DEADLINE: Duration = Duration::from_millis(4_500);

/// Answers each call of `routes` 503 `unavailable` if it has not finished within `limit`. The
/// call is abandoned where it stands, as a crash of that one request would: every call is
/// written to be safe to retry after one.
pub fn with_deadline(routes: Router, limit: Duration) -> Router {
    routes.route_layer(from_fn(move |request: Request, next: Next| {
        within(limit, request, next)
    }))
}

async fn within(limit: Duration, request: Request, next: Next) -> Response {
    let format = format_of(request.uri());
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(limit_ms = limit.as_millis(), "a call ran out of time");
            Reply::error(
                format,
                &ApiError::new(
                    ErrorCode::Unavailable,
                    "a backing service did not answer in time; retry shortly",
                ),
            )
            .into_response()
        }
    }
}

/// Answers each call of `routes` 503 `unavailable` at once while `client` is not connected:
/// the call could only wait for the reconnect, and a publish made now would be sent when NATS
/// is back, after its caller was told it failed.
pub fn requiring_nats(routes: Router, client: async_nats::Client) -> Router {
    routes.route_layer(from_fn(move |request: Request, next: Next| {
        let connected = client.connection_state() == async_nats::connection::State::Connected;
        async move {
            if connected {
                next.run(request).await
            } else {
                Reply::error(
                    format_of(request.uri()),
                    &ApiError::new(
                        ErrorCode::Unavailable,
                        "the message broker is unreachable; retry shortly",
                    ),
                )
                .into_response()
            }
        }
    }))
}

/// The API routes of a process, known once its roles have started: until then every API call
/// answers 503 `unavailable`, while `/healthz` already answers (a pod waiting for NATS is alive).
#[derive(Clone, Default)]
pub struct LateRoutes(Arc<OnceLock<Served>>);

/// What [`LateRoutes`] serves once set.
struct Served {
    routes: Router,
    direct: Vec<Direct>,
}

impl LateRoutes {
    /// Serves `routes` from now on (with JSON answers for unknown paths), and `direct` ahead
    /// of them. A process's roles start once: a second call changes nothing.
    pub fn set(&self, routes: Router, direct: Vec<Direct>) {
        // Resolved here, once, rather than per request.
        let routes = routes
            .route_layer(from_fn(tag_route))
            .fallback(not_found)
            .with_state(());
        if self.0.set(Served { routes, direct }).is_err() {
            tracing::warn!("the API routes were set twice; keeping the first");
        }
    }
}

impl Service<Request> for LateRoutes {
    type Response = Response;
    type Error = Infallible;
    // Not boxed: every request, each re-observe of a fan-out among them, passes through here.
    type Future = Either<Oneshot<Router, Request>, Either<Ready<Answered>, DirectFuture>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let Some(served) = self.0.get() else {
            return Either::Right(Either::Left(ready(Ok(Reply::error(
                format_of(request.uri()),
                &ApiError::new(ErrorCode::Unavailable, "starting up; retry shortly"),
            )
            .into_response()))));
        };
        match served.direct.iter().find(|direct| direct.takes(&request)) {
            Some(direct) => Either::Right(Either::Right((direct.call)(request))),
            None => Either::Left(served.routes.clone().oneshot(request)),
        }
    }
}

/// A service's answer.
type Answered = Result<Response, Infallible>;

/// The answer of a [`Direct`] route.
type DirectFuture = Pin<Box<dyn Future<Output = Answered> + Send>>;

/// A route whose GET and POST calls go straight to its handler, ahead of the router, for the
/// call a fan-out repeats for every answer (the re-observe): the router's lookup, its layers
/// and the boxed services between them were ~8 % of a comet's CPU per delivery. It gets none
/// of the router's layers, so only a route without any may be direct; other methods go on to
/// the router, which has the route too (and answers them 405).
#[derive(Clone)]
pub struct Direct {
    path: &'static str,
    call: Arc<dyn Fn(Request) -> DirectFuture + Send + Sync>,
}

impl Direct {
    /// `handler` with `state` for GET and POST calls of `path`.
    pub fn new<H, T, S>(path: &'static str, handler: H, state: S) -> Self
    where
        H: Handler<T, S> + Sync,
        T: 'static,
        S: Clone + Send + Sync + 'static,
    {
        let call = move |request: Request| -> DirectFuture {
            let answer = handler.clone().call(request, state.clone());
            Box::pin(async move {
                let mut response = answer.await;
                response.extensions_mut().insert(RouteLabel(path));
                Ok(response)
            })
        };
        Self {
            path,
            call: Arc::new(call),
        }
    }

    fn takes(&self, request: &Request) -> bool {
        request.uri().path() == self.path
            && (request.method() == Method::GET || request.method() == Method::POST)
    }
}

/// The route a [`Direct`] route's answer was given by, for the access log and the latency
/// histogram (which read the router's `MatchedPath` otherwise).
#[derive(Clone, Copy, Debug)]
pub struct RouteLabel(pub &'static str);

/// Adds the health routes and CORS to a process's API routes (which answer unknown paths
/// themselves, see [`LateRoutes`]), and `/metrics` unless it is served on a listener of its own
/// ([`metrics_app`]).
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
    // No fallback here: the API routes bring theirs (see `LateRoutes`).
    api.route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route_layer(from_fn(tag_route))
        .layer(cors)
}

/// Hands the route a request matched to the server's access log, in the response (the router
/// knows it only while routing).
async fn tag_route(route: MatchedPath, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    response.extensions_mut().insert(route);
    response
}

/// `/metrics` alone, for `--metrics-listen`: an address only the monitoring network reaches.
pub fn metrics_app(metrics: Metrics) -> Router {
    let render = move |headers: HeaderMap| {
        let metrics = metrics.clone();
        async move { exposition(&headers, metrics.render()) }
    };
    Router::new().route("/metrics", get(render))
}

/// The exposition with the content type the scraper asked for: OpenMetrics for Prometheus
/// (it asks for it), the classic text format for anything else (its parsers read the same
/// lines, `# EOF` being a comment to them).
fn exposition(request: &HeaderMap, body: String) -> Response {
    let openmetrics = request
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|accept| accept.contains("application/openmetrics-text"));
    let content_type = if openmetrics {
        crate::metrics::CONTENT_TYPE
    } else {
        "text/plain; version=0.0.4; charset=utf-8"
    };
    let mut response = body.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
