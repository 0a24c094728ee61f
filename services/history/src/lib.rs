//! The history role: persists every event to SQL exactly once and serves `room/get_messages`.
//!
//! Replicas share one durable pull consumer; each event is inserted idempotently on its
//! counter and acknowledged only after the insert commits, so a replica killed mid-batch loses
//! nothing and doubles nothing.
//!
//! - [`state`]: configuration, shared handles and startup.
//! - [`store`]: the SQL side (PostgreSQL or SQLite), migrations embedded.
//! - [`persist`]: the durable consumer that writes events.
//! - [`messages`]: the `room/get_messages` handler.
//! - [`recent`]: the NATS request `room/enter` uses for the last messages of a room.

pub mod messages;
pub mod persist;
pub mod recent;
pub mod state;
pub mod store;

use axum::Router;
use lingr_platform::http::{self, api_route};

pub use state::HistoryState;

/// History's routes, without health routes or layers.
pub fn router(state: HistoryState) -> Router {
    let routes = Router::new()
        .route("/api/room/get_messages", api_route(messages::get_messages))
        // Shared behind an Arc: handler futures then carry a pointer, not the whole state.
        .with_state(std::sync::Arc::new(state));
    // A page needs the database: it answers 503 rather than wait for one that is away.
    http::with_deadline(routes, http::CALL_DEADLINE)
}
