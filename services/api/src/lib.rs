//! The api role: sessions and the room verbs enter, say, set_nickname and exit.
//!
//! It keeps no state of its own: sessions and occupants live in NATS key-value buckets and
//! every event is published to JetStream, answered only after the PubAck, so any replica can
//! serve any call.
//!
//! - [`state`]: configuration, the shared handles, and startup.
//! - [`sessions`]: `session/create`, `session/destroy`, and loading a caller's session.
//! - [`enter`]: `room/enter`, the room snapshot it answers with.
//! - [`rooms`]: `room/say`, `room/set_nickname`, `room/exit`.
//! - [`idempotency`]: retries by `idempotent_id`, answered once and never bent.
//! - [`publish`]: publishing an event idempotently and reading back the stored one.
//! - [`presence`]: the reaper that times out silent occupants and expires unused sessions.
//! - [`rate_limit`]: token buckets per session (say, enter, set_nickname, exit) and per client
//!   address (`session/create`).

pub mod enter;
pub mod idempotency;
pub mod presence;
pub mod publish;
pub mod rate_limit;
pub mod rooms;
pub mod sessions;
pub mod state;

use axum::Router;
use lingr_platform::http::{self, api_route};

pub use state::{ApiConfig, ApiState};

/// The api's routes, without health routes or layers (see [`lingr_platform::http::app`]).
pub fn router(state: ApiState) -> Router {
    let client = state.js.client();
    let routes = Router::new()
        .route("/api/session/create", api_route(sessions::create))
        .route("/api/session/destroy", api_route(sessions::destroy))
        .route("/api/room/enter", api_route(enter::enter))
        .route("/api/room/say", api_route(rooms::say))
        .route("/api/room/set_nickname", api_route(rooms::set_nickname))
        .route("/api/room/exit", api_route(rooms::exit))
        // Shared behind an Arc: handler futures then carry a pointer, not the whole state.
        .with_state(std::sync::Arc::new(state));
    // Every call needs NATS: none waits for it longer than guarantee 8 allows.
    http::requiring_nats(http::with_deadline(routes, http::CALL_DEADLINE), client)
}
