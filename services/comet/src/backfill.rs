//! Reading a room's events straight from JetStream, for an observe whose counter is older
//! than the room's buffer (a replica just started, or a client far behind).
//!
//! It walks the room's subject with direct gets ("next message on this subject from sequence
//! N"), which nats-server 2.9 serves from any replica without creating a consumer. What it
//! reads is kept in the room as a run of events ([`crate::hub::Hub::keep_run`]) and one
//! backfill per room runs at a time, so a herd of observes with the same old counter costs one
//! walk. At most [`CONCURRENT`] walks run at once per replica. Whether the counter has expired
//! is decided from the stream's first sequence as read after the walk ended (it only grows, so
//! an older reading could let a gap through); walks that end together share one reading.

use std::sync::Mutex;

use async_nats::jetstream::stream::{DirectGetErrorKind, Stream};
use bytes::Bytes;
use lingr_proto::{subjects, RoomId};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::hub::encode_stored;

/// Walks of the stream one replica runs at once; more wait their turn.
pub const CONCURRENT: usize = 16;

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

/// The events of one room read from the stream: every event with a counter in `(from, to]`.
#[derive(Debug)]
pub struct Fetched {
    /// The events, in order.
    pub events: Vec<(u64, Bytes)>,
    /// The counter up to which `events` is complete: the asked-for end, or the last event's
    /// counter when the walk stopped at its maximum.
    pub to: u64,
}

/// Reads rooms' older events, bounded in concurrency.
pub struct Backfiller {
    stream: Stream,
    walks: Semaphore,
    first_sequence: Mutex<Option<(u64, Instant)>>,
}

impl Backfiller {
    /// A backfiller over the event stream.
    pub fn new(stream: Stream) -> Self {
        Self {
            stream,
            walks: Semaphore::new(CONCURRENT),
            first_sequence: Mutex::new(None),
        }
    }

    /// The room's events with counters in `(after, upto]`, at most `max`, in order.
    ///
    /// # Errors
    /// [`BackfillError::Expired`] when events after `after` have aged out of the stream.
    pub async fn fetch(
        &self,
        room: &RoomId,
        after: u64,
        upto: u64,
        max: usize,
    ) -> Result<Fetched, BackfillError> {
        lingr_platform::faults::delay("comet::backfill::fetch").await;
        // The first sequence only grows, so any reading is a lower bound: a counter below it
        // has expired for sure, and costs no walk.
        let known_first = self
            .first_sequence
            .lock()
            .ok()
            .and_then(|c| *c)
            .map(|(first, _)| first);
        if known_first.is_some_and(|first| after.saturating_add(1) < first) {
            return Err(BackfillError::Expired);
        }
        let _walk = self
            .walks
            .acquire()
            .await
            .map_err(|err| BackfillError::Stream(err.to_string()))?;
        let fetched = self.walk(room, after, upto, max).await?;
        // Read after the walk: had an event after `after` expired before the walk reached it,
        // the first sequence read now is past it.
        let walked = Instant::now();
        if after.saturating_add(1) < self.first_sequence_since(walked).await? {
            return Err(BackfillError::Expired);
        }
        Ok(fetched)
    }

    async fn walk(
        &self,
        room: &RoomId,
        after: u64,
        upto: u64,
        max: usize,
    ) -> Result<Fetched, BackfillError> {
        let subject = subjects::room_events(room);
        let mut events = Vec::new();
        let mut next = after + 1;
        while next <= upto {
            if events.len() >= max {
                let to = events.last().map_or(after, |(counter, _)| *counter);
                return Ok(Fetched { events, to });
            }
            match self
                .stream
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
        Ok(Fetched { events, to: upto })
    }

    /// The stream's first sequence as read at or after `since`.
    async fn first_sequence_since(&self, since: Instant) -> Result<u64, BackfillError> {
        let cached = self.first_sequence.lock().ok().and_then(|c| *c);
        if let Some((first, read_at)) = cached {
            if read_at >= since {
                return Ok(first);
            }
        }
        let reading_at = Instant::now();
        let mut stream = self.stream.clone();
        let first = stream
            .info()
            .await
            .map_err(|err| BackfillError::Stream(err.to_string()))?
            .state
            .first_sequence;
        if let Ok(mut cache) = self.first_sequence.lock() {
            if cache.is_none_or(|(_, read_at)| read_at < reading_at) {
                *cache = Some((first, reading_at));
            }
        }
        Ok(first)
    }
}
