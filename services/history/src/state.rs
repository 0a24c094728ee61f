//! History's shared handles.

use async_nats::jetstream::kv;

use crate::store::Store;

/// The handles the handler shares.
#[derive(Clone)]
pub struct HistoryState {
    /// The database.
    pub store: Store,
    /// Rooms that exist (for 404 on an unknown room).
    pub rooms: kv::Store,
}
