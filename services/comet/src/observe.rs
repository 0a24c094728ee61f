//! `room/observe`: `session`, `ticket`, `counter`, `timeout`?.
//!
//! Answers at once with up to 500 events after `counter`, or holds the request until one
//! arrives, `timeout` passes, or the replica drains (then `events` is empty and `counter`
//! unchanged). The events are the bytes [`crate::live`] serialized once as they arrived, or
//! stretches of a backfilled run's text; this handler joins the first and sends the second as
//! they are.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::State;
use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};
use lingr_platform::http::CALL_DEADLINE;
use lingr_platform::metrics::observe_duration;
use lingr_platform::telemetry;
use lingr_platform::{ApiError, Params, Reply};
use lingr_proto::api::{OBSERVE_MAX_BYTES, OBSERVE_MAX_EVENTS};
use lingr_proto::records::{occupant_key, OccupantRecord};
use lingr_proto::ticket::Ticket;
use lingr_proto::{ErrorCode, RoomId, SessionToken};
use tokio::time::Instant;

use crate::backfill::BackfillError;
use crate::hub::{Collected, Room};
use crate::presence::Departure;
use crate::state::CometState;

/// The default hold, in seconds.
const DEFAULT_TIMEOUT_S: u64 = 30;
/// The longest hold a client may ask for, in seconds.
const MAX_TIMEOUT_S: u64 = 60;

/// `room/observe`: `session`, `ticket`, `counter`, `timeout`?: the room's events after
/// `counter`, held until one comes or `timeout` passes. (No span of its own: the request's
/// span is the call's, and a second one per held observe would cost at every wake.)
pub async fn observe(State(state): State<Arc<CometState>>, params: Params) -> Reply {
    match observe_room(&state, &params).await {
        Ok(parts) => Reply::ok_object_parts(params.format.clone(), parts),
        Err(error) => {
            state.metrics.answered(error.code.as_str());
            Reply::error(params.format.clone(), &error)
        }
    }
}

async fn observe_room(state: &CometState, params: &Params) -> Result<Vec<Bytes>, ApiError> {
    if state.shutdown.is_cancelled() {
        return Err(ApiError::new(
            ErrorCode::Draining,
            "this server is shutting down; observe again",
        ));
    }
    let session = SessionToken::parse(params.required("session")?)?;
    let ticket = state.tickets.verify(params.required("ticket")?)?;
    if ticket.session_tag != session.tag() {
        return Err(dead_ticket());
    }
    let after = params
        .u64("counter")?
        .ok_or_else(|| ApiError::missing("counter"))?;
    let timeout = params.u64("timeout")?.unwrap_or(DEFAULT_TIMEOUT_S);
    if timeout > MAX_TIMEOUT_S {
        return Err(ApiError::new(
            ErrorCode::InvalidParameter,
            "timeout must be at most 60 seconds",
        ));
    }
    // Guarantee 8: what comes before the hold (reading the occupant, following a cold room,
    // reading the room's older events) shares one deadline, so a slow NATS is answered 503
    // within 5 s, not after each step has had its own.
    let due = Instant::now() + CALL_DEADLINE;
    let occupant = occupant_key(&ticket.room, &ticket.occupant_id);
    let seen_in_mirror = check_present(state, &ticket, &occupant, due).await?;
    let _slot = state.slots.acquire(&ticket.session_tag, params.client)?;
    let observing = Observing::start(state, ticket.occupant_id.as_str());
    let deadline = Instant::now() + Duration::from_secs(timeout);
    let room = match state.hub.followed_room(&ticket.room) {
        Some(room) => room,
        // Once per room, so boxed: a held observe does not carry this state while it waits.
        None => Box::pin(state.live.room(&state.hub, &ticket.room, due))
            .await
            .map_err(|err| ApiError::unavailable("following the room", err.to_string()))?,
    };
    // Gone from the mirror after being in it means it left, also before its departure could
    // be signalled to this observe. (A brand-new occupant may not be mirrored yet: then only
    // the signal tells.)
    let mut mirrored = seen_in_mirror;
    // Whether it has waited for an event: then its answer is a fan-out, timed as one.
    let mut held = false;
    loop {
        let notified = room.notify().notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let leaving = observing.departure.notified();
        tokio::pin!(leaving);
        leaving.as_mut().enable();
        match room.collect(after, OBSERVE_MAX_EVENTS) {
            Collected::Events(events) if !events.is_empty() => {
                state.metrics.answered("events");
                let events = fitting(&events);
                note_deliveries(state, &room, &ticket.room, events, held);
                let size: usize = events.iter().map(|(_, json)| json.len()).sum();
                let run_text = if size > SLICE_ABOVE {
                    room.run_text()
                } else {
                    None
                };
                return Ok(answer(after, events, run_text.as_ref()));
            }
            Collected::Events(_) => {
                let present = state.occupants_mirror.contains(&occupant);
                if observing.departure.has_left() || (mirrored && !present) {
                    // Left (exit, timeout, session destroyed) with nothing more to deliver:
                    // an anonymous observer, or a departure seen before its exit event.
                    return Err(dead_ticket());
                }
                mirrored |= present;
            }
            Collected::Missing { from, .. } => {
                // Before the hold, within the call's deadline; after a wait (a gap found in
                // the live events), a read of its own.
                let limit = if held {
                    Instant::now() + BACKFILL_LIMIT
                } else {
                    due
                };
                // Rare, so boxed: a held observe does not carry this state while it waits.
                let filled =
                    tokio::time::timeout_at(limit, backfill(state, &room, &ticket.room, from));
                Box::pin(filled).await.unwrap_or_else(|_| {
                    Err(ApiError::unavailable(
                        "backfilling an observe",
                        "the event stream did not answer in time",
                    ))
                })?;
                continue;
            }
        }
        tokio::select! {
            () = &mut notified => held = true,
            () = &mut leaving => {}
            () = tokio::time::sleep_until(deadline) => break,
            () = state.shutdown.cancelled() => break,
        }
    }
    state.metrics.answered("empty");
    Ok(answer(after, &[], None))
}

/// Bytes of events past which an answer looks for them in the room's run, to send them as a
/// slice of its text; below, copying them costs less than the lookup and the extra parts.
const SLICE_ABOVE: usize = 4096;

/// How long an observe woken by an event waits for the room's events it found missing (its
/// turn, a walk permit and the walk), like any call needing NATS: then it answers 503 rather
/// than hang (guarantee 8). Before the hold, the call's own deadline bounds it instead.
const BACKFILL_LIMIT: Duration = CALL_DEADLINE;

/// Reads the room's events missing after `from` from the stream into the room, unless the
/// observe that had the turn before did so already, or failed a moment ago (then the stream
/// is down, and every waiting observe answers 503 at once instead of trying in turn). What is
/// missing is looked up once the turn is had: the read before may have filled part of it,
/// and the buffer may have moved on while this observe waited.
///
/// The read runs as a task of its own that keeps the room's turn: an observe that stops
/// waiting for it (its time is up) leaves it to finish and be kept for the observes after.
async fn backfill(
    state: &CometState,
    room: &Arc<Room>,
    room_id: &RoomId,
    from: u64,
) -> Result<(), ApiError> {
    let turn = room.backfill_turn().await;
    let Collected::Missing { from, upto } = room.collect(from, 1) else {
        return Ok(());
    };
    if room.read_failed_recently() {
        return Err(ApiError::unavailable(
            "backfilling an observe",
            "the room's last read of the stream failed a moment ago",
        ));
    }
    state.metrics.backfills.inc();
    let seconds = state.metrics.backfill_seconds.clone();
    let (backfiller, hub) = (Arc::clone(&state.backfiller), Arc::clone(&state.hub));
    let (room, room_id) = (Arc::clone(room), room_id.clone());
    let read = tokio::spawn(async move {
        let _turn = turn;
        let started = Instant::now();
        let fetched = backfiller
            .fetch(&room_id, from, upto, OBSERVE_MAX_EVENTS)
            .await;
        observe_duration(&seconds, started.elapsed());
        match fetched {
            Ok(fetched) => {
                hub.keep_run(&room, from, fetched.to, fetched.events);
                Ok(())
            }
            Err(err) => {
                if matches!(err, BackfillError::Stream(_)) {
                    room.note_read_failure();
                }
                Err(err)
            }
        }
    });
    match read.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(BackfillError::Expired)) => Err(ApiError::new(
            ErrorCode::CounterExpired,
            "counter is older than the stream keeps; enter the room again or page with get_messages",
        )),
        Ok(Err(BackfillError::Stream(cause))) => {
            Err(ApiError::unavailable("backfilling an observe", cause))
        }
        Err(err) => Err(ApiError::internal("backfilling an observe", err)),
    }
}

/// The first of `events` that fit in one answer: past [`OBSERVE_MAX_BYTES`] they are left for
/// the next observe (one always goes, however large).
fn fitting(events: &[(u64, Bytes)]) -> &[(u64, Bytes)] {
    let mut size = 0;
    let fits = events
        .iter()
        .take_while(|(_, json)| {
            let first = size == 0;
            size += json.len() + 1;
            first || size <= OBSERVE_MAX_BYTES
        })
        .count();
    &events[..fits]
}

/// Times the fan-out of the live events a held observe is answered with, and marks each
/// delivery in the trace of the call that stored the event.
fn note_deliveries(
    state: &CometState,
    room: &Room,
    room_id: &RoomId,
    events: &[(u64, Bytes)],
    held: bool,
) {
    let now = SystemTime::now();
    for (counter, origin) in room.origins(events.iter().map(|(counter, _)| *counter)) {
        if held {
            let waited = now.duration_since(origin.stored_at).unwrap_or_default();
            observe_duration(&state.metrics.fanout, waited);
        }
        if let Some(parent) = origin.trace.as_ref().filter(|t| t.is_sampled()) {
            let span = tracing::info_span!(
                "comet deliver",
                otel.kind = "consumer",
                room.id = %room_id,
                counter,
                held,
            );
            telemetry::continue_remote(&span, parent);
        }
    }
}

/// `{"counter":N,"events":[...]}` from serialized events, in parts: a stretch of events lying
/// side by side in `run_text` (with the commas between them) goes as one slice of it; the
/// rest is copied. A herd of observes answered from one backfill thus sends the run's bytes
/// without copying them, 120 KiB an answer at 500 events.
fn answer(after: u64, events: &[(u64, Bytes)], run_text: Option<&Bytes>) -> Vec<Bytes> {
    let in_run = |json: &Bytes| run_text.and_then(|text| offset_in(text, json));
    let copied_size: usize = events
        .iter()
        .filter(|(_, json)| in_run(json).is_none())
        .map(|(_, json)| json.len() + 1)
        .sum();
    let counter = events.last().map_or(after, |(c, _)| *c);
    let mut parts = Vec::new();
    let mut copied = BytesMut::with_capacity(copied_size + 48);
    copied.put_slice(format!("{{\"counter\":{counter},\"events\":[").as_bytes());
    let mut stretch: Option<Range<usize>> = None;
    let end_stretch = |stretch: &mut Option<Range<usize>>, parts: &mut Vec<Bytes>| {
        if let (Some(span), Some(text)) = (stretch.take(), run_text) {
            parts.push(text.slice(span));
        }
    };
    for (i, (_, json)) in events.iter().enumerate() {
        let at = in_run(json);
        if let (Some(at), Some(span)) = (at, &mut stretch) {
            // The next event in the text: the comma before it is there too.
            if span.end + 1 == at {
                span.end = at + json.len();
                continue;
            }
        }
        end_stretch(&mut stretch, &mut parts);
        if i > 0 {
            copied.put_u8(b',');
        }
        match at {
            Some(at) => {
                parts.push(copied.split().freeze());
                stretch = Some(at..at + json.len());
            }
            None => copied.put_slice(json),
        }
    }
    end_stretch(&mut stretch, &mut parts);
    copied.put_slice(b"]}");
    parts.push(copied.freeze());
    parts
}

/// Where `part` starts in `text`, if it lies within it (a live slice of other memory cannot).
fn offset_in(text: &Bytes, part: &Bytes) -> Option<usize> {
    let start = (part.as_ptr() as usize).checked_sub(text.as_ptr() as usize)?;
    (start + part.len() <= text.len()).then_some(start)
}

fn dead_ticket() -> ApiError {
    ApiError::new(ErrorCode::InvalidTicket, "unknown or expired ticket")
}

/// The ticket's occupant (whose record is under `key`) is still in the room: from the
/// mirror, or for an occupant the mirror has not seen yet, from the bucket. Says whether the
/// mirror had it.
async fn check_present(
    state: &CometState,
    ticket: &Ticket,
    key: &str,
    due: Instant,
) -> Result<bool, ApiError> {
    let still_in = |record: &OccupantRecord| {
        // A leaving occupant has its exit stored or on the way: nothing more to observe.
        record.session_tag == ticket.session_tag && !record.leaving
    };
    // Read in place: copying the record would cost an allocation per string in it, on every
    // observe.
    if let Some(present) = state.occupants_mirror.read(key, still_in) {
        return if present {
            Ok(true)
        } else {
            Err(dead_ticket())
        };
    }
    // Bounded like any call needing NATS (guarantee 8). Rare, so boxed: a held observe does
    // not carry this state while it waits.
    let read = Box::pin(tokio::time::timeout_at(due, state.occupants.get(key)))
        .await
        .map_err(|_| ApiError::unavailable("reading an occupant", "NATS did not answer in time"))?
        .map_err(|err| ApiError::unavailable("reading an occupant", err))?;
    let record = read.and_then(|raw| serde_json::from_slice::<OccupantRecord>(&raw).ok());
    match record {
        Some(record) if still_in(&record) => Ok(false),
        _ => Err(dead_ticket()),
    }
}

/// Marks an occupant as observing for as long as it lives, and hears when it leaves.
struct Observing<'a> {
    state: &'a CometState,
    occupant: &'a str,
    departure: Arc<Departure>,
}

impl<'a> Observing<'a> {
    fn start(state: &'a CometState, occupant: &'a str) -> Self {
        let departure = state.presence.start(occupant);
        Self {
            state,
            occupant,
            departure,
        }
    }
}

impl Drop for Observing<'_> {
    fn drop(&mut self) {
        self.state.presence.end(self.occupant);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_joins_serialized_events() {
        let events = vec![
            (7, Bytes::from_static(b"{\"counter\":7}")),
            (9, Bytes::from_static(b"{\"counter\":9}")),
        ];
        assert_eq!(
            answer(3, &events, None).concat(),
            br#"{"counter":9,"events":[{"counter":7},{"counter":9}]}"#.to_vec()
        );
        assert_eq!(
            answer(3, &[], None).concat(),
            br#"{"counter":3,"events":[]}"#.to_vec()
        );
    }

    /// Events 1-3 from a run's text, then 5 from it (4, between them in the text, left out),
    /// then live 6 and 7: the stretch 1-3 goes as one slice, 5 as another, and only the live
    /// events are copied.
    #[test]
    fn answer_sends_stretches_of_a_run_as_slices_of_its_text() {
        let text = Bytes::from_static(
            b"{\"counter\":1},{\"counter\":2},{\"counter\":3},{\"counter\":4},{\"counter\":5}",
        );
        let event = |counter: u64| {
            let needle = format!("{{\"counter\":{counter}}}");
            let at = text
                .windows(needle.len())
                .position(|w| w == needle.as_bytes())
                .expect("in the text");
            (counter, text.slice(at..at + needle.len()))
        };
        let live = |counter: u64| (counter, Bytes::from(format!("{{\"counter\":{counter}}}")));
        let events = vec![event(1), event(2), event(3), event(5), live(6), live(7)];
        let parts = answer(0, &events, Some(&text));
        assert_eq!(
            parts.concat(),
            br#"{"counter":7,"events":[{"counter":1},{"counter":2},{"counter":3},{"counter":5},{"counter":6},{"counter":7}]}"#.to_vec()
        );
        let sliced: Vec<&[u8]> = parts
            .iter()
            .filter(|part| offset_in(&text, part).is_some())
            .map(|part| &part[..])
            .collect();
        assert_eq!(
            sliced,
            vec![
                &br#"{"counter":1},{"counter":2},{"counter":3}"#[..],
                &br#"{"counter":5}"#[..]
            ]
        );
        assert_eq!(
            answer(0, &events[..3], None).concat(),
            answer(0, &events[..3], Some(&text)).concat(),
            "the same answer with or without the text"
        );
    }

    #[test]
    fn an_answer_stops_at_its_byte_cap_but_always_carries_one_event() {
        let big = Bytes::from(vec![b'1'; OBSERVE_MAX_BYTES / 2]);
        let events = vec![(1, big.clone()), (2, big.clone()), (3, big.clone())];
        assert_eq!(
            fitting(&events).len(),
            1,
            "only the first fits with its separator"
        );
        let huge = [(7, Bytes::from(vec![b'1'; OBSERVE_MAX_BYTES * 2]))];
        assert_eq!(fitting(&huge).len(), 1);
    }
}

#[cfg(test)]
mod held_state {
    fn future_size<A, B, F: std::future::Future>(_: fn(A, B) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// A held observe is this future, parked: it must stay small (it was 10 KiB when the
    /// state was copied in and the backfill path inlined, before either was boxed).
    #[test]
    fn a_held_observe_stays_under_two_kibibytes() {
        let size = future_size(super::observe);
        assert!(size <= 2048, "the observe future is {size} bytes");
    }
}
