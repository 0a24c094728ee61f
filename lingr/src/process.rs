//! One process, any set of roles: connect NATS, start each role, merge their routes on one
//! listener with the health and metrics routes, and serve until shutdown. On shutdown the
//! process turns not-ready at once, held observes are answered, and background tasks end.

use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use lingr_api::ApiConfig;
use lingr_comet::CometConfig;
use lingr_platform::config::{previous_secret, secret_or_generate, CommonArgs};
use lingr_platform::http::{self, Health};
use lingr_platform::metrics::Metrics;
use lingr_platform::nats::{self, NatsOptions};
use lingr_platform::role::Context;
use lingr_platform::server::{self, HttpLimits};
use lingr_proto::ticket::TicketKey;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long open requests may take to finish after shutdown starts.
const GRACE: Duration = Duration::from_secs(10);

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
    /// Connection limits.
    pub http: HttpLimits,
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
    if roles.history && common.database.is_none() {
        anyhow::bail!("--database (DATABASE_URL) is required for history");
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
        http: common.http,
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

/// Starts `roles` against `backing` and serves them until `shutdown` fires.
///
/// # Errors
/// When setup fails (shutdown before NATS answers, database unreachable) or serving fails.
pub async fn serve(
    backing: &Backing,
    roles: Roles,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let metrics = Metrics::default();
    let client = nats::connect(&backing.nats_url, "lingr", &backing.nats_auth).await?;
    let mut health = Health::default().require_nats(client.clone());
    let mut tickets = TicketKey::new(&backing.secret);
    if let Some(previous) = &backing.previous_secret {
        tickets = tickets.with_previous(previous);
    }
    let context = Context {
        client: client.clone(),
        tickets,
        retention: backing.retention,
        metrics: metrics.clone(),
        shutdown: shutdown.clone(),
    };
    let mut started = Vec::new();
    if let Some(config) = roles.api {
        started.push(lingr_api::state::start(config, &context).await?);
    }
    if let Some(config) = roles.comet {
        started.push(lingr_comet::state::start(config, &context).await?);
    }
    if roles.history {
        let database = backing
            .database
            .as_deref()
            .context("history needs a database URL")?;
        started.push(lingr_history::state::start(database, &context).await?);
    }
    let mut router = Router::new();
    let mut tasks: Vec<JoinHandle<()>> = Vec::new();
    for role in started {
        health = role.ready.into_iter().fold(health, Health::require);
        router = router.merge(role.router);
        tasks.extend(role.tasks);
    }
    let draining = health.clone();
    let drain_watch = shutdown.clone();
    tokio::spawn(async move {
        drain_watch.cancelled().await;
        draining.set_draining();
    });
    let metrics_server = listeners.metrics.map(|listener| {
        tokio::spawn(server::serve(
            listener,
            http::metrics_app(metrics.clone()),
            backing.http.clone(),
            Metrics::default(),
            shutdown.clone(),
            GRACE,
        ))
    });
    let app_metrics = metrics_server.is_none().then(|| metrics.clone());
    let app = http::app(router, health, app_metrics);
    let served = server::serve(
        listeners.api,
        app,
        backing.http.clone(),
        metrics.clone(),
        shutdown.clone(),
        GRACE,
    )
    .await;
    shutdown.cancel();
    if let Some(task) = metrics_server {
        let _ = task.await;
    }
    for task in tasks {
        if tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .is_err()
        {
            tracing::warn!("a background task did not stop in time");
        }
    }
    if let Err(err) = client.flush().await {
        tracing::debug!(error = %err, "flushing NATS on the way out failed");
    }
    served
}
