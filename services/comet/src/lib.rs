//! The comet role: `room/observe`, the held long-poll that answers the moment an event arrives.
//!
//! Each replica follows the live events of the rooms it has observers for ([`live`]), into a
//! bounded buffer per room ([`hub`]), and wakes a room's waiters once per event. An observe
//! older than a room's buffer is filled from JetStream ([`backfill`]), so every replica
//! answers gaplessly, including one just started. Replicas never talk to each other and the
//! api never calls them.
//!
//! - [`state`]: configuration, shared handles and limits; [`start`] builds them and starts
//!   the live check, the mirror and the presence flusher.
//! - [`hub`]: per-room buffers of serialized events and their waiters.
//! - [`live`]: following the rooms observed here, finding lost events.
//! - [`backfill`]: reading a room's older events straight from the stream.
//! - [`observe`]: the handler: checks, limits, waiting, draining.
//! - [`presence`]: telling the api which occupants are observing.

pub mod backfill;
pub mod hub;
pub mod live;
pub mod observe;
pub mod presence;
pub mod state;

use std::sync::Arc;

use axum::Router;
use lingr_platform::http::{api_route, Direct};
use lingr_platform::mirror::{Hooks, KvMirror};
use lingr_platform::nats;
use lingr_platform::readiness::Signal;
use lingr_platform::role::{Context, Started};
use lingr_proto::subjects;

use crate::backfill::Backfiller;
use crate::hub::Hub;
use crate::live::Live;
use crate::presence::Presence;
use crate::state::{held_limit, sweep_forever, CometMetrics, Slots};

pub use state::{CometConfig, CometState};

/// The path of `room/observe`.
const OBSERVE_PATH: &str = "/api/room/observe";

/// The comet's routes, without health routes or layers, and `room/observe` as a direct route
/// too: every answer of a fan-out is followed by a re-observe, and a direct route spares each
/// the router's work.
pub fn routes(state: CometState) -> (Router, Vec<Direct>) {
    // Shared behind an Arc: handler futures then carry a pointer, not the whole state.
    let state = Arc::new(state);
    let router = Router::new()
        .route(OBSERVE_PATH, api_route(observe::observe))
        .with_state(Arc::clone(&state));
    (
        router,
        vec![Direct::new(OBSERVE_PATH, observe::observe, state)],
    )
}

/// Opens the stream and the occupants bucket (waiting for NATS), then starts checking the
/// rooms it will follow.
///
/// # Errors
/// When `shutdown` fires before NATS answers.
pub async fn start(config: CometConfig, context: &Context) -> anyhow::Result<Started> {
    let client = context.client.clone();
    let (metrics, shutdown) = (&context.metrics, context.shutdown.clone());
    let layout = context.layout();
    let (stream, occupants, presence_bucket) = nats::retry("comet setup", &shutdown, || async {
        Ok((
            layout.events().await?,
            layout.bucket(subjects::OCCUPANTS_BUCKET).await?,
            layout.bucket(subjects::PRESENCE_BUCKET).await?,
        ))
    })
    .await?;
    let metrics = CometMetrics::register(metrics);
    let hub = Arc::new(Hub::new(config.room_buffer));
    let live = Arc::new(Live::new(client, stream.clone(), metrics.clone()));
    let presence = Arc::new(Presence::new()?);
    let departures = {
        let presence = Arc::clone(&presence);
        move |key: &str| {
            // Occupant keys are `<room>.<occupant>`: end that occupant's held observes.
            if let Some((_, occupant)) = key.split_once('.') {
                presence.depart(occupant);
            }
        }
    };
    let (occupants_mirror, mirror_task) = KvMirror::spawn_with(
        occupants.clone(),
        shutdown.clone(),
        Hooks {
            on_remove: Some(Box::new(departures)),
            ..Hooks::default()
        },
    );
    // Up once the stream was set up; the live check takes it down while the stream is gone.
    let live_ready = Signal::new();
    live_ready.up();
    let state = CometState {
        slots: Arc::new(Slots::new(
            held_limit(config.max_held_observes),
            &config,
            metrics.held.clone(),
        )),
        config: Arc::new(config),
        hub: Arc::clone(&hub),
        live: Arc::clone(&live),
        backfiller: Arc::new(Backfiller::new(stream.clone())),
        occupants,
        occupants_mirror: Arc::clone(&occupants_mirror),
        tickets: context.tickets.clone(),
        presence: Arc::clone(&presence),
        shutdown: shutdown.clone(),
        metrics: metrics.clone(),
    };
    let checker = tokio::spawn(live.check_forever(
        Arc::clone(&hub),
        Arc::clone(&context.link),
        Arc::clone(&live_ready),
        shutdown.clone(),
    ));
    let flush_every = state.config.presence_flush;
    let flusher_shutdown = shutdown.clone();
    let flusher = tokio::spawn(async move {
        presence
            .flush_forever(presence_bucket, flush_every, flusher_shutdown)
            .await
    });
    let sweeper = tokio::spawn(sweep_forever(hub, state.config.room_idle, shutdown));
    let (router, direct) = routes(state);
    Ok(Started {
        router,
        direct,
        ready: vec![live_ready, occupants_mirror.ready_signal()],
        tasks: vec![checker, mirror_task, flusher, sweeper],
    })
}
