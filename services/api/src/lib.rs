//! The api role: sessions and the room verbs enter, say, set_nickname and exit.
//!
//! It keeps no state of its own: sessions and occupants live in NATS key-value buckets and
//! every event is published to JetStream, answered only after the PubAck, so any replica can
//! serve any call.
//!
//! Modules, callers first (none calls back up this list):
//!
//! - [`sessions`]: `session/create`, `session/destroy`, and loading a caller's session.
//! - [`enter`]: `room/enter`, the room snapshot it answers with.
//! - [`rooms`]: `room/say`, `room/set_nickname`, `room/exit`.
//! - [`roster`]: who is in a room: enter's snapshot and `room/occupants`.
//! - [`presence`]: the reaper that times out silent occupants and expires unused sessions.
//! - [`occupants`]: the occupant lifecycle: admitted, kept present, made to leave.
//! - [`last_seen`]: when each occupant was last seen, from the presence bucket.
//! - [`due`]: the reaper's agenda of keys to look at, by when.
//! - [`idempotency`]: retries by `idempotent_id`, answered once and never bent.
//! - [`publish`]: building events, publishing them idempotently, reading back a stored one.
//! - [`records`]: session records changed with compare-and-set, and records as JSON.
//! - [`state`]: configuration and the shared handles; [`start`] builds them.
//! - [`rate_limit`]: token buckets per session (say, enter, set_nickname, exit) and per client
//!   address (`session/create`).

pub mod due;
pub mod enter;
pub mod idempotency;
pub mod last_seen;
pub mod listings;
pub mod occupants;
pub mod presence;
pub mod publish;
pub mod rate_limit;
pub mod records;
pub mod rooms;
pub mod roster;
pub mod sessions;
pub mod state;

use std::sync::Arc;

use axum::Router;
use lingr_platform::http::{self, api_route};
use lingr_platform::mirror::{Hooks, KvMirror};
use lingr_platform::nats;
use lingr_platform::role::{Context, Started};
use lingr_proto::records::PresenceRecord;
use lingr_proto::subjects;

use crate::due::Due;
use crate::last_seen::LastSeen;
use crate::listings::Listings;
use crate::rate_limit::{RateLimit, SharedLimiter};
use crate::state::ApiMetrics;

pub use state::{ApiConfig, ApiState};

/// The api's routes and the web client's pages, without health routes or layers (see
/// [`lingr_platform::http::app`]).
pub fn router(state: ApiState) -> Router {
    let client = state.js.client();
    let routes = Router::new()
        .route("/api/session/create", api_route(sessions::create))
        .route("/api/session/destroy", api_route(sessions::destroy))
        .route("/api/room/enter", api_route(enter::enter))
        .route("/api/room/occupants", api_route(roster::occupants))
        .route("/api/room/say", api_route(rooms::say))
        .route("/api/room/set_nickname", api_route(rooms::set_nickname))
        .route("/api/room/exit", api_route(rooms::exit))
        // Shared behind an Arc: handler futures then carry a pointer, not the whole state.
        .with_state(std::sync::Arc::new(state));
    // Every call needs NATS: none waits for it longer than guarantee 8 allows. The pages need
    // nothing but the binary.
    http::requiring_nats(http::with_deadline(routes, http::CALL_DEADLINE), client)
        .merge(lingr_web::router())
}

/// Creates the stream and buckets (waiting for NATS if need be), starts the mirrors and the
/// reaper.
///
/// # Errors
/// When `shutdown` fires before NATS answers.
pub async fn start(config: ApiConfig, context: &Context) -> anyhow::Result<Started> {
    let client = context.client.clone();
    let (metrics, shutdown) = (&context.metrics, context.shutdown.clone());
    let js = nats::jetstream(client.clone());
    let layout = context.layout();
    let (events, sessions, occupants, presence, rooms, rates, idempotency) =
        nats::retry("api setup", &shutdown, || async {
            Ok((
                layout.events().await?,
                layout.bucket(subjects::SESSIONS_BUCKET).await?,
                layout.bucket(subjects::OCCUPANTS_BUCKET).await?,
                layout.bucket(subjects::PRESENCE_BUCKET).await?,
                layout.bucket(subjects::ROOMS_BUCKET).await?,
                layout.bucket(subjects::RATES_BUCKET).await?,
                layout.bucket(subjects::IDEMPOTENCY_BUCKET).await?,
            ))
        })
        .await?;
    let last_seen = Arc::new(LastSeen::default());
    let (occupants_due, sessions_due) = (Arc::new(Due::default()), Arc::new(Due::default()));
    let occupant_left = {
        let last_seen = Arc::clone(&last_seen);
        move |key: &str| {
            // Occupant keys are `<room>.<occupant>`.
            if let Some((_, occupant)) = key.split_once('.') {
                last_seen.forget(occupant);
            }
        }
    };
    let listings = Arc::new(Listings::default());
    let (occupants_mirror, t1) = KvMirror::spawn_with(
        occupants.clone(),
        shutdown.clone(),
        listings.hooks(occupants_due.hooks(Some(Box::new(occupant_left)))),
    );
    let seen = {
        let last_seen = Arc::clone(&last_seen);
        move |key: &str, value: &PresenceRecord| last_seen.record(key, value)
    };
    let (presence_mirror, t2) = KvMirror::spawn_with(
        presence.clone(),
        shutdown.clone(),
        Hooks {
            on_put: Some(Box::new(seen)),
            on_remove: None,
        },
    );
    let (sessions_mirror, t3) =
        KvMirror::spawn_with(sessions.clone(), shutdown.clone(), sessions_due.hooks(None));
    let ready = vec![
        occupants_mirror.ready_signal(),
        presence_mirror.ready_signal(),
        sessions_mirror.ready_signal(),
    ];
    let limiter = |limit: Option<RateLimit>| {
        limit.map(|limit| Arc::new(SharedLimiter::new(limit, rates.clone())))
    };
    let state = ApiState {
        call_limiter: limiter(RateLimit::new(config.call_rate, config.call_burst)),
        session_limiter: limiter(RateLimit::new(config.session_rate, config.session_burst)),
        config: Arc::new(config),
        client,
        js,
        events,
        sessions,
        occupants,
        presence,
        rooms,
        idempotency,
        occupants_mirror,
        listings,
        presence_mirror,
        last_seen,
        sessions_mirror,
        occupants_due,
        sessions_due,
        tickets: context.tickets.clone(),
        metrics: ApiMetrics::register(metrics),
    };
    let reaper = tokio::spawn(crate::presence::reap_forever(
        state.clone(),
        Arc::clone(&context.link),
        shutdown,
    ));
    Ok(Started {
        router: router(state),
        direct: Vec::new(),
        ready,
        tasks: vec![t1, t2, t3, reaper],
    })
}
