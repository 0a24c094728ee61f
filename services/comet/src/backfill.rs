//! Reading a room's events straight from JetStream, for an observe whose counter is older
//! than the room's buffer (a replica just started, or a client far behind).
//!
//! It walks the room's subject with direct gets ("next message on this subject from sequence
//! N"), which nats-server 2.9 serves from any replica without creating a consumer.

use async_nats::jetstream::stream::{DirectGetErrorKind, Stream};
use bytes::Bytes;
use lingr_proto::{subjects, RoomId};

use crate::hub::encode_stored;

/// Why a backfill failed.
#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    /// The counter is older than the stream's first event: those events are gone.
    #[error("counter is older than the stream's first event")]
    Expired,
    /// JetStream did not answer.
    #[error("reading the stream failed: {0}")]
    Stream(String),
}

/// The room's events with counters in `(after, upto]`, at most `max`, in order.
///
/// # Errors
/// [`BackfillError::Expired`] when events after `after` have aged out of the stream.
pub async fn events_between(
    stream: &Stream,
    room: &RoomId,
    after: u64,
    upto: u64,
    max: usize,
) -> Result<Vec<(u64, Bytes)>, BackfillError> {
    let mut info_handle = stream.clone();
    let first = info_handle
        .info()
        .await
        .map_err(|err| BackfillError::Stream(err.to_string()))?
        .state
        .first_sequence;
    if after.saturating_add(1) < first {
        return Err(BackfillError::Expired);
    }
    let subject = subjects::room_events(room);
    let mut events = Vec::new();
    let mut next = after + 1;
    while events.len() < max && next <= upto {
        match stream
            .direct_get_next_for_subject(subject.as_str(), Some(next))
            .await
        {
            Ok(message) if message.sequence <= upto => {
                if let Some(json) = encode_stored(message.sequence, &message.payload) {
                    events.push((message.sequence, json));
                }
                next = message.sequence + 1;
            }
            Ok(_) => break,
            Err(err) if matches!(err.kind(), DirectGetErrorKind::NotFound) => break,
            Err(err) => return Err(BackfillError::Stream(err.to_string())),
        }
    }
    Ok(events)
}
