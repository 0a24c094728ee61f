//! The history role: persists every event to SQL exactly once and serves `room/get_messages`.
//!
//! Replicas share one durable pull consumer; each event is inserted idempotently on its
//! counter and acknowledged only after the insert commits, so a replica killed mid-batch loses
//! nothing and doubles nothing.
//!
//! - [`state`]: the shared handles; [`start`] builds them and starts the consumers.
//! - [`store`]: the SQL side (PostgreSQL or SQLite), migrations embedded.
//! - [`persist`]: the durable consumer that writes events.
//! - [`messages`]: the `room/get_messages` handler.
//! - [`recent`]: the NATS request `room/enter` uses for the last messages of a room.

pub mod messages;
pub mod persist;
pub mod recent;
pub mod state;
pub mod store;

use std::sync::Arc;

use axum::Router;
use lingr_platform::http::{self, api_route};
use lingr_platform::nats;
use lingr_platform::readiness::Signal;
use lingr_platform::role::{Context, Started};
use lingr_proto::subjects;

use crate::store::Store;

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

/// Connects the database (migrating it), waits for NATS, and starts persisting.
///
/// # Errors
/// When the database cannot be reached, or `shutdown` fires before NATS answers.
pub async fn start(database_url: &str, context: &Context) -> anyhow::Result<Started> {
    let client = context.client.clone();
    let (metrics, shutdown) = (&context.metrics, context.shutdown.clone());
    Store::check_url(database_url)?;
    // Waits for the database as for NATS: a pod starts before its database is reachable.
    let store = nats::retry("connecting to the history database", &shutdown, || {
        Store::connect(database_url)
    })
    .await?;
    let layout = context.layout();
    let (stream, rooms) = nats::retry("history setup", &shutdown, || async {
        Ok((
            layout.events().await?,
            layout.bucket(subjects::ROOMS_BUCKET).await?,
        ))
    })
    .await?;
    let ready = Signal::new();
    let persist = tokio::spawn(crate::persist::persist_forever(
        stream.clone(),
        store.clone(),
        Arc::clone(&ready),
        crate::persist::PersistMetrics::register(metrics),
        shutdown.clone(),
    ));
    let refused = metrics.counter(
        "lingr_history_recent_refused",
        "Recent-message requests answered empty because too many were in progress.",
    );
    let recent = tokio::spawn(crate::recent::serve_forever(
        client,
        stream,
        store.clone(),
        refused,
        shutdown,
    ));
    Ok(Started {
        router: router(HistoryState { store, rooms }),
        direct: Vec::new(),
        ready: vec![ready],
        tasks: vec![persist, recent],
    })
}
