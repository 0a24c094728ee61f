//! The api's configuration, the handles every handler shares, and startup.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use lingr_platform::config::parse_seconds;
use lingr_platform::metrics::{Counter, Metrics};
use lingr_platform::mirror::KvMirror;
use lingr_platform::nats;
use lingr_platform::role::{Context, Started};
use lingr_proto::records::{OccupantRecord, SessionRecord};
use lingr_proto::subjects;
use lingr_proto::ticket::TicketKey;

use crate::rate_limit::{RateLimit, SharedLimiter};

/// The api's own flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ApiConfig {
    /// Seconds without observe or call after which an occupant leaves with `reason: timeout`.
    #[arg(long, env = "LINGR_PRESENCE_TIMEOUT", default_value = "90", value_parser = parse_seconds)]
    pub presence_timeout: Duration,
    /// Seconds a session may go unused before it expires.
    #[arg(long, env = "LINGR_SESSION_TTL", default_value = "86400", value_parser = parse_seconds)]
    pub session_ttl: Duration,
    /// Seconds between passes of the presence and session reaper.
    #[arg(long, env = "LINGR_REAP_INTERVAL", default_value = "5", value_parser = parse_seconds)]
    pub reap_interval: Duration,
    /// Says a session may make per second, on average.
    #[arg(long, env = "LINGR_SAY_RATE", default_value = "10")]
    pub say_rate: u32,
    /// Says a session may make in a burst.
    #[arg(long, env = "LINGR_SAY_BURST", default_value = "20")]
    pub say_burst: u32,
    /// Rooms one session may be in at once.
    #[arg(long, env = "LINGR_MAX_ROOMS_PER_SESSION", default_value = "64")]
    pub max_rooms_per_session: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            presence_timeout: Duration::from_secs(90),
            session_ttl: Duration::from_secs(86_400),
            reap_interval: Duration::from_secs(5),
            say_rate: 10,
            say_burst: 20,
            max_rooms_per_session: 64,
        }
    }
}

/// The handles every handler shares.
#[derive(Clone)]
pub struct ApiState {
    /// The api's flags.
    pub config: Arc<ApiConfig>,
    /// The NATS connection.
    pub client: async_nats::Client,
    /// JetStream.
    pub js: jetstream::Context,
    /// The event stream.
    pub events: jetstream::stream::Stream,
    /// Sessions by tag.
    pub sessions: kv::Store,
    /// Occupants by `<room>.<occupant>`.
    pub occupants: kv::Store,
    /// Last-seen times by occupant id.
    pub presence: kv::Store,
    /// Rooms that exist.
    pub rooms: kv::Store,
    /// A live copy of the occupants bucket.
    pub occupants_mirror: Arc<KvMirror<OccupantRecord>>,
    /// A live copy of the presence bucket.
    pub presence_mirror: Arc<KvMirror<u64>>,
    /// A live copy of the sessions bucket.
    pub sessions_mirror: Arc<KvMirror<SessionRecord>>,
    /// Signs tickets.
    pub tickets: TicketKey,
    /// Limits says per session.
    pub say_limiter: Arc<SharedLimiter>,
    /// The api's metrics.
    pub metrics: ApiMetrics,
}

/// The api's series.
#[derive(Clone)]
pub struct ApiMetrics {
    /// Events stored.
    pub events_published: Counter,
    /// Publishes answered as duplicates.
    pub duplicates: Counter,
    /// Says refused by the rate limit.
    pub rate_limited: Counter,
    /// Occupants the reaper made leave.
    pub presence_timeouts: Counter,
    /// Sessions expired by the reaper.
    pub sessions_expired: Counter,
    /// Passes the reaper has completed.
    pub reaper_passes: Counter,
}

impl ApiMetrics {
    fn register(metrics: &Metrics) -> Self {
        Self {
            events_published: metrics.counter(
                "lingr_api_events_published_total",
                "Events stored in JetStream.",
            ),
            duplicates: metrics.counter(
                "lingr_api_duplicate_publishes_total",
                "Idempotent retries answered with the stored event.",
            ),
            rate_limited: metrics.counter(
                "lingr_api_rate_limited_total",
                "Says refused by the per-session rate limit.",
            ),
            presence_timeouts: metrics.counter(
                "lingr_api_presence_timeouts_total",
                "Occupants the reaper made leave (timed out or orphaned).",
            ),
            sessions_expired: metrics.counter(
                "lingr_api_sessions_expired_total",
                "Sessions expired unused.",
            ),
            reaper_passes: metrics.counter(
                "lingr_api_reaper_passes_total",
                "Passes of the presence and session reaper.",
            ),
        }
    }
}

/// Creates the stream and buckets (waiting for NATS if need be), starts the mirrors and the
/// reaper.
///
/// # Errors
/// When `shutdown` fires before NATS answers.
pub async fn start(config: ApiConfig, context: &Context) -> anyhow::Result<Started> {
    let (client, retention) = (context.client.clone(), context.retention);
    let (metrics, shutdown) = (&context.metrics, context.shutdown.clone());
    let js = nats::jetstream(client.clone());
    let (events, sessions, occupants, presence, rooms, rates) =
        nats::retry("api setup", &shutdown, || async {
            Ok((
                nats::ensure_events_stream(&js, retention).await?,
                nats::ensure_bucket(&js, subjects::SESSIONS_BUCKET, Duration::ZERO).await?,
                nats::ensure_bucket(&js, subjects::OCCUPANTS_BUCKET, Duration::ZERO).await?,
                nats::ensure_bucket(&js, subjects::PRESENCE_BUCKET, nats::PRESENCE_MAX_AGE).await?,
                nats::ensure_bucket(&js, subjects::ROOMS_BUCKET, Duration::ZERO).await?,
                // A bucket idle for longer than it takes to refill is as good as new.
                nats::ensure_bucket(&js, subjects::RATES_BUCKET, Duration::from_secs(600)).await?,
            ))
        })
        .await?;
    let (occupants_mirror, t1) = KvMirror::spawn(occupants.clone(), shutdown.clone());
    let (presence_mirror, t2) = KvMirror::spawn(presence.clone(), shutdown.clone());
    let (sessions_mirror, t3) = KvMirror::spawn(sessions.clone(), shutdown.clone());
    let ready = vec![
        occupants_mirror.ready_flag(),
        presence_mirror.ready_flag(),
        sessions_mirror.ready_flag(),
    ];
    let state = ApiState {
        say_limiter: Arc::new(SharedLimiter::new(
            RateLimit::new(config.say_rate, config.say_burst),
            rates,
        )),
        config: Arc::new(config),
        client,
        js,
        events,
        sessions,
        occupants,
        presence,
        rooms,
        occupants_mirror,
        presence_mirror,
        sessions_mirror,
        tickets: context.tickets.clone(),
        metrics: ApiMetrics::register(metrics),
    };
    let reaper = tokio::spawn(crate::presence::reap_forever(state.clone(), shutdown));
    Ok(Started {
        router: crate::router(state),
        ready,
        tasks: vec![t1, t2, t3, reaper],
    })
}
