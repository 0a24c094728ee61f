//! The occupant lifecycle, in one place: an occupant is admitted (stored, added to its
//! session, announced), kept present ([`touch`]), and leaves in one way only ([`leave`]:
//! marked, its exit published, deleted, forgotten by its session); [`end_session`] makes
//! every occupant of a session leave. Every record change is a compare-and-set on the
//! revision read, so racing calls of one occupant cannot bring back one that has left.

use std::time::Duration;

use async_nats::jetstream::consumer::{push, DeliverPolicy};
use futures::StreamExt as _;
use lingr_platform::clock::now_ms;
use lingr_platform::kv::{self, Decision};
use lingr_platform::ApiError;
use lingr_proto::records::{OccupantRecord, SessionRecord};
use lingr_proto::{subjects, ErrorCode, Event, EventType, ExitReason, OccupantId, RoomId};

use crate::publish::{new_event, newest_counter, publish};
use crate::records::{encode, session_expired, update_session};
use crate::state::ApiState;
use lingr_platform::clock::millis;

/// Stores `occupant`, adds it to its session (as `session` was when the call loaded it) and
/// announces it; returns the counter of its enter event (for an anonymous observer, the
/// newest counter).
///
/// # Errors
/// `too_many_rooms`; `invalid_session` when the session was destroyed meanwhile (the occupant
/// is then taken back); `unavailable`.
pub async fn admit(
    state: &ApiState,
    occupant: &OccupantRecord,
    session: &SessionRecord,
) -> Result<u64, ApiError> {
    let key = occupant.key();
    if !session.occupants.contains(&key)
        && session.occupants.len() >= state.config.max_rooms_per_session
    {
        return Err(ApiError::new(
            ErrorCode::TooManyRooms,
            "this session is in too many rooms; exit one first",
        ));
    }
    ensure_room_exists(state, &occupant.room).await?;
    state
        .occupants
        .put(key.as_str(), encode(occupant)?)
        .await
        .map_err(|err| ApiError::unavailable("storing an occupant", err))?;
    touch(state, &occupant.occupant_id).await;
    lingr_platform::faults::delay("api::enter::occupant-stored").await;
    let still_there = update_session(state, &occupant.session_tag, |record| {
        if !record.occupants.contains(&key) {
            record.occupants.push(key.clone());
        }
    })
    .await?;
    if !still_there {
        // Destroyed while we entered: its destroy could not see this occupant, so take it back.
        undo_enter(state, occupant).await;
        return Err(session_expired());
    }
    let Some(nickname) = &occupant.nickname else {
        return newest_counter(state).await;
    };
    // The worst instant for a crash: stored and in its session, its enter never published.
    fail::fail_point!("api::enter::before-publish", |_| {
        lingr_platform::faults::crash()
    });
    let event = new_event(EventType::Enter, occupant, nickname.as_str());
    let msg_id = format!("enter:{}", occupant.occupant_id);
    let counter = match publish(state, event, Some(msg_id)).await {
        Ok(published) => published.event.counter,
        Err(error) => {
            undo_enter(state, occupant).await;
            return Err(error);
        }
    };
    // The other worst instant: its event stored, and not yet noted on its record.
    fail::fail_point!("api::enter::published", |_| lingr_platform::faults::crash());
    announce(state, occupant, counter).await?;
    Ok(counter)
}

/// Marks the occupant as announced, so that leaving raises an exit event; on the revision
/// read, so an occupant that has already left (reaped, session destroyed) stays gone.
///
/// An occupant made to leave between its enter event and this (its session destroyed, the
/// reaper) left without an exit event, since its enter did not look stored yet: its exit is
/// published here, so nobody who saw it enter keeps it for good, and the enter is refused.
async fn announce(
    state: &ApiState,
    occupant: &OccupantRecord,
    counter: u64,
) -> Result<(), ApiError> {
    let announced =
        kv::update::<OccupantRecord, _>(
            &state.occupants,
            &occupant.key(),
            |current| match current {
                Some(stored) if stored.session_tag == occupant.session_tag && !stored.leaving => {
                    Decision::Write(OccupantRecord {
                        enter_counter: Some(counter),
                        ..stored.clone()
                    })
                }
                _ => Decision::Keep,
            },
        )
        .await?
        .is_some_and(|stored| stored.enter_counter == Some(counter) && !stored.leaving);
    if announced {
        return Ok(());
    }
    let entered = OccupantRecord {
        enter_counter: Some(counter),
        ..occupant.clone()
    };
    announce_exit(state, &entered, ExitReason::SessionDestroyed).await?;
    Err(session_expired())
}

/// Takes back an enter whose event could not be stored, so no occupant is left that nobody saw
/// enter (the reaper would otherwise make it "exit" later). Best effort: NATS is failing.
async fn undo_enter(state: &ApiState, occupant: &OccupantRecord) {
    let key = occupant.key();
    if let Err(err) = state.occupants.delete(key.as_str()).await {
        tracing::warn!(error = %err, "could not undo an enter; the reaper will time the occupant out");
        return;
    }
    let _ = update_session(state, &occupant.session_tag, |record| {
        record.occupants.retain(|k| *k != key)
    })
    .await;
}

/// Creates the room on its first enter, and refreshes its record once a day so that a room in
/// use never ages out of its bucket.
async fn ensure_room_exists(state: &ApiState, room: &RoomId) -> Result<(), ApiError> {
    let known = state
        .rooms
        .entry(room.as_str())
        .await
        .map_err(|err| ApiError::unavailable("reading a room", err))?
        .filter(|e| e.operation == async_nats::jetstream::kv::Operation::Put);
    let refresh_after = time::Duration::days(1);
    let stale = known
        .as_ref()
        .is_some_and(|e| time::OffsetDateTime::now_utc() - e.created > refresh_after);
    match known {
        // Two first enters may race: whichever creates it, the room exists.
        None => {
            let _ = state
                .rooms
                .create(room.as_str(), now_ms().to_string().into())
                .await;
        }
        Some(_) if stale => {
            if let Err(err) = state
                .rooms
                .put(room.as_str(), now_ms().to_string().into())
                .await
            {
                tracing::warn!(error = %err, "a room's record was not refreshed; the next enter retries");
            }
        }
        Some(_) => {}
    }
    Ok(())
}

/// Makes an occupant leave its room: it is marked leaving (so no enter lists it any more), its
/// exit event is published (none for an anonymous observer or an enter that was never
/// stored), then the occupant and its presence are deleted and the session forgets it.
/// Returns the exit event's counter, if this call published it.
///
/// # Errors
/// `unavailable` when NATS fails; a retry completes the leave without a second exit event.
pub async fn leave(
    state: &ApiState,
    occupant: &OccupantRecord,
    reason: ExitReason,
) -> Result<Left, ApiError> {
    let key = occupant.key();
    // On the revision read: a record already deleted stays so, and its exit was published
    // before the delete by whoever made it leave.
    let mut first = false;
    let marked = kv::update::<OccupantRecord, _>(&state.occupants, &key, |current| {
        let decision = match current {
            Some(stored) if stored.session_tag == occupant.session_tag && !stored.leaving => {
                Decision::Write(OccupantRecord {
                    leaving: true,
                    ..stored.clone()
                })
            }
            _ => Decision::Keep,
        };
        first = matches!(decision, Decision::Write(_));
        decision
    })
    .await?
    .filter(|stored| stored.session_tag == occupant.session_tag);
    let counter = match &marked {
        Some(current) => announce_exit(state, current, reason).await?,
        None => None,
    };
    lingr_platform::faults::delay("api::leave::exit-published").await;
    if marked.is_some() {
        state
            .occupants
            .delete(key.as_str())
            .await
            .map_err(|err| ApiError::unavailable("deleting an occupant", err))?;
    }
    if let Err(err) = state.presence.delete(occupant.occupant_id.as_str()).await {
        tracing::debug!(error = %err, "presence entry not deleted; it expires by itself");
    }
    if let Some(key) = &occupant.idempotency_key {
        crate::idempotency::mark_left(state, key).await;
    }
    update_session(state, &occupant.session_tag, |record| {
        record.occupants.retain(|k| *k != key)
    })
    .await?;
    Ok(Left { counter, first })
}

/// What [`leave`] did.
#[derive(Debug, Clone, Copy)]
pub struct Left {
    /// The exit event's counter, if the occupant had one to publish.
    pub counter: Option<u64>,
    /// Whether this call began the leave (another caller, a racing exit or reaper, may have).
    pub first: bool,
}

/// Publishes the exit of an occupant whose enter was stored (anonymous observers and
/// occupants whose enter never got stored leave silently: nobody saw them enter). Returns
/// its counter.
async fn announce_exit(
    state: &ApiState,
    occupant: &OccupantRecord,
    reason: ExitReason,
) -> Result<Option<u64>, ApiError> {
    let Some(nickname) = &occupant.nickname else {
        return Ok(None);
    };
    let entered = match occupant.enter_counter {
        Some(counter) => Some(counter),
        // Its api may have stored the enter event and died before noting it: look.
        None => stored_enter(state, occupant).await?,
    };
    let counter = match entered.map(|_| nickname) {
        Some(nickname) => {
            let mut event = new_event(EventType::Exit, occupant, nickname.as_str());
            event.reason = Some(reason);
            let msg_id = format!("exit:{}", occupant.occupant_id);
            Some(publish(state, event, Some(msg_id)).await?.event.counter)
        }
        None => None,
    };
    Ok(counter)
}

/// How long a look for an unannounced enter event waits for the stream's next message before
/// concluding there is none.
const ENTER_LOOKUP_WAIT: Duration = Duration::from_secs(2);

/// The counter of `occupant`'s enter event, if the stream holds one: read from its room's
/// events since shortly before it was stored. Only for occupants whose enter was never noted
/// (rare: an api died between the event and the note), so the read's cost does not matter.
///
/// # Errors
/// `unavailable` when the stream cannot be read.
async fn stored_enter(
    state: &ApiState,
    occupant: &OccupantRecord,
) -> Result<Option<u64>, ApiError> {
    let unavailable = |err: &dyn std::fmt::Display| {
        ApiError::unavailable("looking for an enter event", err.to_string())
    };
    let since_ms = i128::from(occupant.entered_ms.saturating_sub(5_000));
    let start_time = time::OffsetDateTime::from_unix_timestamp_nanos(since_ms * 1_000_000)
        .map_err(|err| unavailable(&err))?;
    let consumer = state
        .events
        .create_consumer(push::OrderedConfig {
            deliver_subject: state.client.new_inbox(),
            filter_subject: subjects::room_events(&occupant.room),
            deliver_policy: DeliverPolicy::ByStartTime { start_time },
            ..Default::default()
        })
        .await
        .map_err(|err| unavailable(&err))?;
    let mut messages = consumer.messages().await.map_err(|err| unavailable(&err))?;
    while let Ok(Some(message)) = tokio::time::timeout(ENTER_LOOKUP_WAIT, messages.next()).await {
        let message = message.map_err(|err| unavailable(&err))?;
        let info = message.info().map_err(|err| unavailable(&err))?;
        let event: Option<Event> = serde_json::from_slice(&message.payload).ok();
        if event.is_some_and(|e| {
            e.kind == EventType::Enter && e.occupant_id == occupant.occupant_id.as_str()
        }) {
            return Ok(Some(info.stream_sequence));
        }
        if info.pending == 0 {
            break;
        }
    }
    Ok(None)
}

/// Records that an occupant is active now, unless it was recorded moments ago.
pub async fn touch(state: &ApiState, occupant: &OccupantId) {
    let now = now_ms();
    // A value fresher than a ninth of the timeout (10 s of 90) needs no rewrite: a chatty
    // occupant costs one presence write per interval, not one per say.
    let refresh_ms = (millis(state.config.presence_timeout) / 9).min(10_000);
    let seen = state.last_seen.get(occupant.as_str()).unwrap_or(0);
    if now.saturating_sub(seen) < refresh_ms {
        return;
    }
    if let Err(err) = state
        .presence
        .put(occupant.as_str(), now.to_string().into())
        .await
    {
        tracing::warn!(error = %err, "presence not recorded");
    }
}

/// When a session was last active: its own last use, or the latest presence of its occupants
/// (an occupant that observes keeps its session alive).
pub fn session_last_active(state: &ApiState, record: &SessionRecord) -> u64 {
    record
        .occupants
        .iter()
        .filter_map(|key| key.rsplit('.').next())
        .filter_map(|occupant| state.last_seen.get(occupant))
        .fold(record.last_used_ms, u64::max)
}

/// Makes every occupant of a session leave, then deletes the session.
///
/// # Errors
/// `unavailable` when NATS fails part way; what was done stays done and a retry finishes it.
pub async fn end_session(
    state: &ApiState,
    tag: &str,
    record: &SessionRecord,
    reason: ExitReason,
) -> Result<(), ApiError> {
    for key in &record.occupants {
        let occupant = state
            .occupants
            .get(key.as_str())
            .await
            .map_err(|err| ApiError::unavailable("reading an occupant", err))?;
        if let Some(occupant) = occupant.and_then(|raw| serde_json::from_slice(&raw).ok()) {
            leave(state, &occupant, reason).await?;
        }
    }
    state
        .sessions
        .delete(tag)
        .await
        .map_err(|err| ApiError::unavailable("deleting a session", err))
}
