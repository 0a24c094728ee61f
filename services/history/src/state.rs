//! History's shared handles and startup.

use std::sync::Arc;

use async_nats::jetstream::kv;
use lingr_platform::nats;
use lingr_platform::readiness::Signal;
use lingr_platform::role::{Context, Started};
use lingr_proto::subjects;

use crate::store::Store;

/// The handles the handler shares.
#[derive(Clone)]
pub struct HistoryState {
    /// The database.
    pub store: Store,
    /// Rooms that exist (for 404 on an unknown room).
    pub rooms: kv::Store,
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
        router: crate::router(HistoryState { store, rooms }),
        ready: vec![ready],
        tasks: vec![persist, recent],
    })
}
