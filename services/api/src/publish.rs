//! Publishing an event: to the room's subject, in a span whose trace context the message
//! carries (so comet's deliveries and history's write join the caller's trace) and, for a
//! retry-safe call, with a `Nats-Msg-Id`. The answer waits for the PubAck; a duplicate is answered with the
//! event first stored under that id, read back from the stream.

use async_nats::jetstream::message::PublishMessage as Publish;
use lingr_platform::telemetry;
use lingr_platform::ApiError;
use lingr_proto::event::timestamp_now;
use lingr_proto::records::OccupantRecord;
use lingr_proto::{subjects, Event, EventType};
use tracing::{Instrument as _, Span};

use crate::state::ApiState;

/// An event as stored, with its counter.
#[derive(Debug, Clone)]
pub struct Published {
    /// The stored event (`counter` set).
    pub event: Event,
    /// Whether the server had already stored this id; `event` is then the original.
    pub duplicate: bool,
}

/// Publishes `event` and waits until JetStream has stored it.
///
/// # Errors
/// `unavailable` when NATS does not store it in time.
pub async fn publish(
    state: &ApiState,
    event: Event,
    msg_id: Option<String>,
) -> Result<Published, ApiError> {
    let span = tracing::info_span!(
        "publish",
        otel.kind = "producer",
        room.id = %event.room,
        event.kind = ?event.kind,
        counter = tracing::field::Empty,
    );
    let published = store(state, event, msg_id, &span)
        .instrument(span.clone())
        .await?;
    span.record("counter", published.event.counter);
    Ok(published)
}

async fn store(
    state: &ApiState,
    mut event: Event,
    msg_id: Option<String>,
    span: &Span,
) -> Result<Published, ApiError> {
    let payload = serde_json::to_vec(&event)
        .map_err(|err| ApiError::internal("serializing an event", err))?;
    let mut publish = Publish::build()
        .payload(payload.into())
        .headers(telemetry::headers_for(span));
    if let Some(id) = msg_id {
        publish = publish.message_id(id);
    }
    let acked = match state
        .js
        .send_publish(subjects::room_events(&event.room), publish)
        .await
    {
        Ok(ack) => ack
            .await
            .map_err(|err| ApiError::unavailable("awaiting a PubAck", err)),
        Err(err) => Err(ApiError::unavailable("publishing an event", err)),
    };
    let ack = acked.inspect_err(|_| {
        state.metrics.publish_errors.inc();
    })?;
    state.metrics.events_published.inc();
    if ack.duplicate {
        state.metrics.duplicates.inc();
        return Ok(Published {
            event: stored_event(state, ack.sequence).await?,
            duplicate: true,
        });
    }
    event.counter = ack.sequence;
    Ok(Published {
        event,
        duplicate: false,
    })
}

/// The event stored at `counter`.
///
/// # Errors
/// `unavailable` when it cannot be read; `internal` when it is not an event.
pub async fn stored_event(state: &ApiState, counter: u64) -> Result<Event, ApiError> {
    let message = state
        .events
        .direct_get(counter)
        .await
        .map_err(|err| ApiError::unavailable("reading a stored event", err))?;
    let mut event: Event = serde_json::from_slice(&message.payload)
        .map_err(|err| ApiError::internal("parsing a stored event", err))?;
    event.counter = counter;
    Ok(event)
}

/// The newest counter in the stream: everything after it is yet to come.
///
/// # Errors
/// `unavailable` when NATS does not answer.
pub async fn newest_counter(state: &ApiState) -> Result<u64, ApiError> {
    let mut events = state.events.clone();
    let info = events
        .info()
        .await
        .map_err(|err| ApiError::unavailable("reading the stream state", err))?;
    Ok(info.state.last_sequence)
}

/// A new event of `kind` by `occupant`, not yet stored (no counter).
pub(crate) fn new_event(kind: EventType, occupant: &OccupantRecord, nickname: &str) -> Event {
    Event {
        counter: 0,
        kind,
        room: occupant.room.clone(),
        occupant_id: occupant.occupant_id.to_string(),
        nickname: nickname.to_owned(),
        text: None,
        prev_nickname: None,
        reason: None,
        timestamp: timestamp_now(),
    }
}
