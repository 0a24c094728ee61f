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
    /// of everything (see [`App`]). A process's roles start once: a second call changes nothing.
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

    /// The direct route that takes `request`, once the routes are set.
    fn direct_for(&self, request: &Request) -> Option<&Direct> {
        self.0
            .get()?
            .direct
            .iter()
            .find(|direct| direct.takes(request))
    }
}

impl Service<Request> for LateRoutes {
    type Response = Response;
    type Error = Infallible;
    // Not boxed: every call but the direct ones passes through here.
    type Future = Either<Oneshot<Router, Request>, Ready<Answered>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        match self.0.get() {
            Some(served) => Either::Left(served.routes.clone().oneshot(request)),
            None => Either::Right(ready(Ok(Reply::error(
                format_of(request.uri()),
                &ApiError::new(ErrorCode::Unavailable, "starting up; retry shortly"),
            )
            .into_response()))),
        }
    }
}

/// A service's answer.
type Answered = Result<Response, Infallible>;

/// The answer of a [`Direct`] route.
type DirectFuture = Pin<Box<dyn Future<Output = Answered> + Send>>;

/// A route whose GET and POST calls go straight to its handler, ahead of the routers and
/// CORS, for the call a fan-out repeats for every answer (the re-observe): the routers'
/// lookups, the CORS layer and the boxed services between them were ~10 % of a comet's CPU
/// per delivery. It gets none of the routers' layers, so only a route without any may be
/// direct; its answers get the CORS headers every answer gets ([`cors_headers`]). Other
/// methods go on to the router, which has the route too (and answers them 405).
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
                add_cors_headers(response.headers_mut());
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

/// What [`cors`] adds to the answer of a call that is not a preflight: any origin may read
/// it (no credentials are involved), and caches keep answers apart by the headers CORS reads.
const CORS_ALLOW_ORIGIN: HeaderValue = HeaderValue::from_static("*");
const CORS_VARY: HeaderValue = HeaderValue::from_static(
    "origin, access-control-request-method, access-control-request-headers",
);

/// The CORS policy of every route: XHR from any origin, without credentials, with GET and
/// POST and a JSON or form body.
fn cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([header::CONTENT_TYPE])
        .max_age(std::time::Duration::from_secs(86_400))
}

/// Adds to a direct route's answer the headers [`cors`] adds to any other (a test checks
/// that they are the same).
fn add_cors_headers(headers: &mut HeaderMap) {
    headers.append(header::VARY, CORS_VARY);
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, CORS_ALLOW_ORIGIN);
}

/// What a listener serves: a router behind CORS, and the direct routes of its [`LateRoutes`]
/// ahead of both.
#[derive(Clone)]
pub struct App {
    router: Router,
    late: Option<LateRoutes>,
}

/// An [`App`]'s answer to one request.
pub type AppFuture = Either<Oneshot<Router, Request>, DirectFuture>;

impl App {
    /// Answers `request`.
    pub fn call(&self, request: Request) -> AppFuture {
        match self
            .late
            .as_ref()
            .and_then(|late| late.direct_for(&request))
        {
            Some(direct) => Either::Right((direct.call)(request)),
            None => Either::Left(self.router.clone().oneshot(request)),
        }
    }
}

/// A router alone (such as [`metrics_app`]), with no direct routes.
impl From<Router> for App {
    fn from(router: Router) -> Self {
        Self {
            router: router.with_state(()),
            late: None,
        }
    }
}

/// The app of a process's API listener: the health routes, `/metrics` unless it is served on
/// a listener of its own ([`metrics_app`]), and the process's API routes `late` (which answer
/// unknown paths themselves), behind CORS; `late`'s direct routes go ahead of them all.
pub fn app(late: LateRoutes, health: Health, metrics: Option<Metrics>) -> App {
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
    let api = Router::new().fallback_service(late.clone());
    let api = match metrics {
        Some(metrics) => api.merge(metrics_app(metrics)),
        None => api,
    };
    // No fallback here: the API routes bring theirs (see `LateRoutes`).
    let router = api
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route_layer(from_fn(tag_route))
        .layer(cors());
    App {
        router: router.with_state(()),
        late: Some(late),
    }
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
