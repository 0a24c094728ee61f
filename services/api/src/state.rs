//! The api's configuration and the handles every handler shares.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use lingr_platform::config::parse_seconds;
use lingr_platform::metrics::{Counter, Histogram, Metrics};
use lingr_platform::mirror::KvMirror;
use lingr_platform::server::ClientAddr;
use lingr_platform::ApiError;
use lingr_proto::records::{OccupantRecord, PresenceRecord, SessionRecord};
use lingr_proto::ticket::TicketKey;
use lingr_proto::ErrorCode;

use crate::due::Due;
use crate::last_seen::LastSeen;
use crate::listings::Listings;
use crate::rate_limit::SharedLimiter;

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
    /// Calls (say, enter, set_nickname, exit) a session may make per second, on average.
    #[arg(long, env = "LINGR_CALL_RATE", default_value = "10")]
    pub call_rate: f64,
    /// Calls a session may make in a burst.
    #[arg(long, env = "LINGR_CALL_BURST", default_value = "20")]
    pub call_burst: u32,
    /// Sessions one client address may create per second, on average (0 turns the limit off,
    /// for load tests). Behind a load balancer, set `--trusted-proxies`.
    #[arg(long, env = "LINGR_SESSION_RATE", default_value = "1")]
    pub session_rate: f64,
    /// Sessions one client address may create in a burst.
    #[arg(long, env = "LINGR_SESSION_BURST", default_value = "30")]
    pub session_burst: u32,
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
            call_rate: 10.0,
            call_burst: 20,
            session_rate: 1.0,
            session_burst: 30,
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
    /// Last-seen times: by occupant id (the api's) and comet replicas' batches.
    pub presence: kv::Store,
    /// Rooms that exist.
    pub rooms: kv::Store,
    /// Idempotent calls (see [`crate::idempotency`]).
    pub idempotency: kv::Store,
    /// A live copy of the occupants bucket.
    pub occupants_mirror: Arc<KvMirror<OccupantRecord>>,
    /// Who each room lists, kept from the occupants mirror.
    pub listings: Arc<Listings>,
    /// A live copy of the presence bucket.
    pub presence_mirror: Arc<KvMirror<PresenceRecord>>,
    /// When each occupant was last seen, kept up to date by the presence mirror.
    pub last_seen: Arc<LastSeen>,
    /// A live copy of the sessions bucket.
    pub sessions_mirror: Arc<KvMirror<SessionRecord>>,
    /// Occupant keys the reaper looks at next, and when.
    pub occupants_due: Arc<Due>,
    /// Session tags the reaper looks at next, and when.
    pub sessions_due: Arc<Due>,
    /// Signs tickets.
    pub tickets: TicketKey,
    /// Limits say, enter, set_nickname and exit per session (none when turned off).
    pub call_limiter: Option<Arc<SharedLimiter>>,
    /// Limits session/create per client address (none when turned off).
    pub session_limiter: Option<Arc<SharedLimiter>>,
    /// The api's metrics.
    pub metrics: ApiMetrics,
}

impl ApiState {
    /// Takes one of the session's call tokens (say, enter, set_nickname, exit).
    ///
    /// # Errors
    /// 429 `rate_limited` when the session has none left; `unavailable`.
    pub async fn limit_call(&self, session_tag: &str) -> Result<(), ApiError> {
        let detail = "too many calls from this session (10 a second, bursts of 20); slow down";
        self.take_token(self.call_limiter.as_deref(), session_tag, detail)
            .await
    }

    /// Takes one of the client address's session tokens.
    ///
    /// # Errors
    /// 429 `rate_limited` when the address has created too many sessions; `unavailable`.
    pub async fn limit_session_creation(&self, client: Option<ClientAddr>) -> Result<(), ApiError> {
        let Some(client) = client else {
            return Ok(());
        };
        let detail = "too many sessions created from this address; wait a moment";
        self.take_token(self.session_limiter.as_deref(), &client.limit_key(), detail)
            .await
    }

    /// Takes a token of `key` from `limiter` (none: the limit is off), counting refusals.
    async fn take_token(
        &self,
        limiter: Option<&SharedLimiter>,
        key: &str,
        detail: &'static str,
    ) -> Result<(), ApiError> {
        let Some(limiter) = limiter else {
            return Ok(());
        };
        let taken = limiter.take(key, detail).await;
        if taken
            .as_ref()
            .is_err_and(|e| e.code == ErrorCode::RateLimited)
        {
            self.metrics.rate_limited.inc();
        }
        taken
    }
}

/// The api's series.
#[derive(Clone)]
pub struct ApiMetrics {
    /// Events stored.
    pub events_published: Counter,
    /// Publishes answered as duplicates.
    pub duplicates: Counter,
    /// Calls refused by a rate limit.
    pub rate_limited: Counter,
    /// Occupants the reaper made leave.
    pub presence_timeouts: Counter,
    /// Sessions expired by the reaper.
    pub sessions_expired: Counter,
    /// Passes the reaper has completed.
    pub reaper_passes: Counter,
    /// Occupants and sessions the reaper looked at.
    pub reaper_checks: Counter,
    /// Publishes JetStream did not acknowledge.
    pub publish_errors: Counter,
    /// Seconds from a say's arrival to its answer.
    pub say_seconds: Histogram,
}

impl ApiMetrics {
    pub(crate) fn register(metrics: &Metrics) -> Self {
        Self {
            events_published: metrics
                .counter("lingr_api_events_published", "Events stored in JetStream."),
            duplicates: metrics.counter(
                "lingr_api_duplicate_publishes",
                "Idempotent retries answered with the stored event.",
            ),
            rate_limited: metrics.counter(
                "lingr_api_rate_limited",
                "Calls refused by the per-session or per-address rate limits.",
            ),
            presence_timeouts: metrics.counter(
                "lingr_api_presence_timeouts",
                "Occupants the reaper made leave (timed out or orphaned).",
            ),
            sessions_expired: metrics
                .counter("lingr_api_sessions_expired", "Sessions expired unused."),
            reaper_passes: metrics.counter(
                "lingr_api_reaper_passes",
                "Passes of the presence and session reaper.",
            ),
            reaper_checks: metrics.counter(
                "lingr_api_reaper_checks",
                "Occupants and sessions the reaper looked at: each about once per presence timeout or session TTL, not every pass.",
            ),
            publish_errors: metrics.counter(
                "lingr_api_publish_errors",
                "Publishes JetStream did not acknowledge (the call answered 503).",
            ),
            say_seconds: metrics.latency(
                "lingr_api_say_seconds",
                "From a say's arrival to its answer, stored or refused.",
            ),
        }
    }
}
