//! One process, any set of roles, and its life: HTTP is served from the first moment (`/healthz`
//! answers while NATS or the database is still being reached; API calls answer 503 until the
//! roles have started), then the roles start and their routes are served beside the health and
//! metrics routes.
//!
//! On SIGTERM the process turns not-ready at once and keeps serving for the drain delay, so the
//! load balancer stops sending to it; then it stops taking requests, held observes are answered,
//! open requests get a grace to finish, and every background task ends, all at once; whatever
//! is still open when the drain timeout passes is abandoned and the process exits.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use lingr_api::ApiConfig;
use lingr_comet::CometConfig;
use lingr_platform::config::{
    previous_secret, refuse_placeholder, secret_or_generate, CommonArgs, Lifecycle,
};
use lingr_platform::http::{self, App, LateRoutes};
use lingr_platform::metrics::Metrics;
use lingr_platform::nats::{self, NatsOptions};
use lingr_platform::readiness::{Health, Signal};
use lingr_platform::role::Context;
use lingr_platform::server::{self, HttpLimits};
use lingr_proto::ticket::TicketKey;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long open requests may take to finish once the replica stops taking requests.
const GRACE: Duration = Duration::from_secs(10);
/// How long background tasks may take to end once the replica stops.
const TASKS_GRACE: Duration = Duration::from_secs(5);
/// The drain delay of the api, comet and history roles unless `--drain-delay` says otherwise.
pub const DRAIN_DELAY: Duration = Duration::from_secs(5);

/// Which roles a process runs.
#[derive(Debug, Clone, Default)]
pub struct Roles {
    /// The api, with its flags.
    pub api: Option<ApiConfig>,
    /// The comet, with its flags.
    pub comet: Option<CometConfig>,
    /// Whether to run history.
    pub history: bool,
}

/// What a process needs besides its roles.
#[derive(Debug, Clone)]
pub struct Backing {
    /// The NATS URL.
    pub nats_url: String,
    /// How to authenticate to NATS.
    pub nats_auth: NatsOptions,
    /// The history database URL (required when history runs).
    pub database: Option<String>,
    /// The ticket secret.
    pub secret: Vec<u8>,
    /// The ticket secret being rotated out, if any.
    pub previous_secret: Option<Vec<u8>>,
    /// How long the stream keeps events.
    pub retention: Duration,
    /// On how many NATS servers the stream and buckets are kept.
    pub stream_replicas: usize,
    /// Connection limits.
    pub http: HttpLimits,
    /// Drain delay and timeout, readiness grace.
    pub lifecycle: Lifecycle,
}

/// Where a process serves: the API (with health routes), and `/metrics` on its own listener
/// when `--metrics-listen` asks for it.
pub struct Listeners {
    /// The API listener.
    pub api: TcpListener,
    /// The metrics-only listener, if any.
    pub metrics: Option<TcpListener>,
}

impl Listeners {
    /// Binds `--listen` and, if given, `--metrics-listen`.
    ///
    /// # Errors
    /// When an address cannot be bound.
    pub async fn bind(common: &CommonArgs) -> anyhow::Result<Self> {
        let api = server::bind(common.listen).await?;
        let metrics = match common.metrics_listen {
            Some(address) => Some(server::bind(address).await?),
            None => None,
        };
        Ok(Self { api, metrics })
    }
}

impl From<TcpListener> for Listeners {
    fn from(api: TcpListener) -> Self {
        Self { api, metrics: None }
    }
}

/// Runs `roles` as configured by the common flags: binds `--listen` and serves.
///
/// # Errors
/// When a required flag is missing, the port cannot be bound, or setup fails.
pub async fn run_role(
    common: CommonArgs,
    roles: Roles,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let nats_url = common
        .nats_url
        .clone()
        .context("--nats (LINGR_NATS_URL) is required for this role")?;
    let needs_secret = roles.api.is_some() || roles.comet.is_some();
    let secret = if needs_secret {
        secret_or_generate(common.secret.as_deref(), &common.data_dir, false)?
    } else {
        Vec::new()
    };
    match (roles.history, &common.database) {
        (true, None) => anyhow::bail!("--database (DATABASE_URL) is required for history"),
        (true, Some(url)) => refuse_placeholder("--database (DATABASE_URL)", url)?,
        (false, _) => {}
    }
    let listeners = Listeners::bind(&common).await?;
    tracing::info!(listen = %common.listen, "serving");
    let backing = Backing {
        nats_url,
        nats_auth: common.nats,
        database: common.database,
        secret,
        previous_secret: previous_secret(common.previous_secret.as_deref())?,
        retention: common.retention,
        stream_replicas: common.stream_replicas,
        http: common.http,
        lifecycle: common.lifecycle.resolve(DRAIN_DELAY),
    };
    serve(&backing, roles, listeners, shutdown).await
}

/// [`serve`] taking its arguments by value, for spawning.
///
/// # Errors
/// As [`serve`].
pub async fn serve_owned(
    backing: Backing,
    roles: Roles,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    serve(&backing, roles, listeners, shutdown).await
}

/// Starts `roles` against `backing` and serves them until `terminate` fires (SIGTERM), then
/// drains as the module says, exiting within the drain timeout.
///
/// # Errors
/// When setup fails for good (a malformed URL or credentials file) or serving fails.
pub async fn serve(
    backing: &Backing,
    roles: Roles,
    listeners: Listeners,
    terminate: CancellationToken,
) -> anyhow::Result<()> {
    let drain_timeout = backing.lifecycle.drain_timeout;
    let give_up = async {
        terminate.cancelled().await;
        tokio::time::sleep(drain_timeout).await;
    };
    tokio::select! {
        result = run(backing, roles, listeners, &terminate) => result,
        () = give_up => {
            tracing::warn!(
                drain_timeout_ms = u64::try_from(drain_timeout.as_millis()).unwrap_or(u64::MAX),
                "still shutting down when the drain timeout passed; exiting"
            );
            Ok(())
        }
    }
}

async fn run(
    backing: &Backing,
    roles: Roles,
    listeners: Listeners,
    terminate: &CancellationToken,
) -> anyhow::Result<()> {
    let lifecycle = backing.lifecycle;
    let metrics = Metrics::default();
    let health = Health::new(lifecycle.readiness_grace);
    // Fires when the drain delay is over: roles stop, held observes are answered, the
    // listeners close. Until then a terminating process serves as usual, only not ready.
    let stop = CancellationToken::new();
    tokio::spawn(drain(
        terminate.clone(),
        health.clone(),
        lifecycle.drain_delay,
        stop.clone(),
    ));
    let routes = LateRoutes::default();
    let metrics_server = listeners.metrics.map(|listener| {
        tokio::spawn(server::serve(
            listener,
            App::from(http::metrics_app(metrics.clone())),
            backing.http.clone(),
            Metrics::default(),
            stop.clone(),
            GRACE,
        ))
    });
    let app_metrics = metrics_server.is_none().then(|| metrics.clone());
    let app = http::app(routes.clone(), health.clone(), app_metrics);
    let server = tokio::spawn(server::serve(
        listeners.api,
        app,
        backing.http.clone(),
        metrics.clone(),
        stop.clone(),
        GRACE,
    ));

    let link = Signal::new();
    health.require(Arc::clone(&link));
    let client = nats::connect(
        &backing.nats_url,
        "lingr",
        &backing.nats_auth,
        Arc::clone(&link),
    )
    .await?;
    let context = Context {
        client: client.clone(),
        link: Arc::clone(&link),
        tickets: ticket_key(backing),
        retention: backing.retention,
        stream_replicas: backing.stream_replicas,
        metrics: metrics.clone(),
        shutdown: stop.clone(),
    };
    let mut tasks: Vec<JoinHandle<()>> = Vec::new();
    match start_roles(backing, roles, &context).await {
        Ok(started) => {
            let (mut router, mut direct) = (Router::new(), Vec::new());
            for role in started {
                role.ready
                    .into_iter()
                    .for_each(|signal| health.require(signal));
                router = router.merge(role.router);
                direct.extend(role.direct);
                tasks.extend(role.tasks);
            }
            routes.set(router, direct);
            health.set_started();
            tracing::info!("ready to serve");
        }
        // Shut down while still starting: nothing to serve.
        Err(_) if stop.is_cancelled() => {}
        Err(err) => {
            stop.cancel();
            return Err(err);
        }
    }
    let served = server.await;
    stop.cancel();
    if let Some(task) = metrics_server {
        let _ = task.await;
    }
    // Every task ends with `stop`; they finish together, not one after another.
    let ended = tokio::time::timeout(TASKS_GRACE, futures::future::join_all(tasks)).await;
    if ended.is_err() {
        tracing::warn!("background tasks did not stop in time");
    }
    if tokio::time::timeout(Duration::from_secs(1), client.flush())
        .await
        .is_err()
    {
        tracing::debug!("NATS did not take the last writes on the way out");
    }
    served.context("the HTTP server task")?
}

/// On `terminate`: not ready at once, then after `delay` the stop.
async fn drain(
    terminate: CancellationToken,
    health: Health,
    delay: Duration,
    stop: CancellationToken,
) {
    tokio::select! {
        () = terminate.cancelled() => {}
        () = stop.cancelled() => return,
    }
    health.set_draining();
    tracing::info!(
        drain_delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
        "draining: not ready; serving on until the delay is over"
    );
    tokio::time::sleep(delay).await;
    stop.cancel();
}

fn ticket_key(backing: &Backing) -> TicketKey {
    let tickets = TicketKey::new(&backing.secret);
    match &backing.previous_secret {
        Some(previous) => tickets.with_previous(previous),
        None => tickets,
    }
}

/// Starts each role of `roles`, in turn: each waits for NATS (and history for its database)
/// until it answers, or until the process stops.
async fn start_roles(
    backing: &Backing,
    roles: Roles,
    context: &Context,
) -> anyhow::Result<Vec<lingr_platform::role::Started>> {
    let mut started = Vec::new();
    if let Some(config) = roles.api {
        started.push(lingr_api::start(config, context).await?);
    }
    if let Some(config) = roles.comet {
        started.push(lingr_comet::start(config, context).await?);
    }
    if roles.history {
        let database = backing
            .database
            .as_deref()
            .context("history needs a database URL")?;
        started.push(lingr_history::start(database, context).await?);
    }
    Ok(started)
}
