//! The comet role: `room/observe`, the held long-poll that answers the moment an event arrives.
//!
//! Each replica consumes the whole event stream into a bounded buffer per room ([`hub`]) and
//! wakes a room's waiters once per event. An observe older than a room's buffer is filled from
//! JetStream ([`backfill`]), so every replica answers gaplessly, including one just started.
//! Replicas never talk to each other and the api never calls them.
//!
//! - [`state`]: configuration, shared handles and startup.
//! - [`hub`]: per-room buffers of serialized events and their waiters.
//! - [`feed`]: the ordered consumer that fills the hub from JetStream.
//! - [`backfill`]: reading a room's older events straight from the stream.
//! - [`observe`]: the handler: checks, limits, waiting, draining.
//! - [`presence`]: telling the api which occupants are observing.

pub mod backfill;
pub mod feed;
pub mod hub;
pub mod observe;
pub mod presence;
pub mod state;

use axum::Router;
use lingr_platform::http::api_route;

pub use state::{CometConfig, CometState};

/// The comet's routes, without health routes or layers.
pub fn router(state: CometState) -> Router {
    Router::new()
        .route("/api/room/observe", api_route(observe::observe))
        // Shared behind an Arc: handler futures then carry a pointer, not the whole state.
        .with_state(std::sync::Arc::new(state))
}
