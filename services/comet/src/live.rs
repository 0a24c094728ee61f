//! Following the live events of the rooms this replica serves, and only those: a replica's
//! work follows its observers, not the traffic of every room.
//!
//! The event stream republishes each event it stores on its room's live subject
//! ([`subjects::room_live`]), naming the room's event before it. A room is followed from its
//! first observe until the hub drops it: a core NATS subscription to its live subject, with
//! the room's buffer starting after the newest event stored when the subscription took
//! effect. Republishing is best effort (a reconnect, a slow consumer or a change of stream
//! leader can lose a message), so a lost event is found three ways: the next event names its
//! predecessor ([`Room::apply`]); each room's newest stored event is read again a moment
//! after it is first followed and after every reconnect; and every [`CHECK_EVERY`] for every
//! room followed. A room that missed events starts its buffer again after them, and observes
//! behind that read the rest from the stream ([`crate::backfill`]).

use std::sync::{Arc, Weak};
use std::time::Duration;

use async_nats::jetstream::stream::{DirectGetErrorKind, LastRawMessageErrorKind, Stream};
use futures::StreamExt as _;
use lingr_platform::readiness::Signal;
use lingr_platform::telemetry;
use lingr_proto::{subjects, RoomId};
use tokio_util::sync::CancellationToken;

use crate::hub::{encode_stored, Applied, Following, Hub, Origin, Room};
use crate::state::CometMetrics;

/// How often every followed room's newest stored event is read, to find live events lost
/// without a later one to show it; and how often the stream is checked for readiness.
pub const CHECK_EVERY: Duration = Duration::from_secs(10);

/// How long after a room is first followed, or after a reconnect, its newest stored event is
/// read again: long enough for a nats-server cluster to carry the new subscription to the
/// stream's leader.
const RECHECK_AFTER: Duration = Duration::from_secs(1);

/// How long a live event may be on its way: a stored event not received within it was lost.
const IN_FLIGHT: Duration = Duration::from_secs(1);

/// Reads of the stream one check runs at once.
const CHECKS_AT_ONCE: usize = 16;

/// Why a room could not be followed.
#[derive(Debug, thiserror::Error)]
#[error("following room {room}: {reason}")]
pub struct FollowError {
    room: RoomId,
    reason: String,
}

fn failed(room: &RoomId, reason: impl Into<String>) -> FollowError {
    FollowError {
        room: room.clone(),
        reason: reason.into(),
    }
}

/// Starts following rooms, and checks the followed ones for lost events.
pub struct Live {
    client: async_nats::Client,
    stream: Stream,
    metrics: CometMetrics,
}

impl Live {
    /// Follows rooms' live subjects on `client`, reading `stream` (the event stream).
    pub fn new(client: async_nats::Client, stream: Stream, metrics: CometMetrics) -> Self {
        Self {
            client,
            stream,
            metrics,
        }
    }

    /// The hub's room `id`, followed from now on if it was not yet. (An observe looks for a
    /// followed room with [`Hub::followed_room`] first: this one's future is larger.)
    ///
    /// Like any call needing NATS it gives up at `due`, the calling observe's deadline
    /// (guarantee 8), and a start that failed a moment ago makes the room's other observes
    /// give up at once instead of trying in turn.
    ///
    /// # Errors
    /// When NATS does not answer the subscription or the read of the room's newest event.
    pub async fn room(
        &self,
        hub: &Hub,
        id: &RoomId,
        due: tokio::time::Instant,
    ) -> Result<Arc<Room>, FollowError> {
        let room = hub.room(id);
        let start = async {
            if room.read_failed_recently() {
                return Err(failed(
                    id,
                    "the room's last read of the stream failed a moment ago",
                ));
            }
            let started = tokio::time::timeout_at(due, self.follow(id, &room))
                .await
                .unwrap_or_else(|_| Err(failed(id, "NATS did not answer in time")));
            if started.is_err() {
                room.note_read_failure();
            }
            started
        };
        // A waiter behind another observe's start waits at most for that start (whose
        // deadline came first), then fails at once if it failed.
        room.followed(start).await?;
        Ok(room)
    }

    async fn follow(&self, id: &RoomId, room: &Arc<Room>) -> Result<Following, FollowError> {
        lingr_platform::faults::delay("comet::follow::start").await;
        let failed = |reason: String| failed(id, reason);
        let subscriber = self
            .client
            .subscribe(subjects::room_live(id))
            .await
            .map_err(|err| failed(err.to_string()))?;
        // A JetStream request on the same connection, sent after the subscription: when it is
        // answered, the server has the subscription, so every event stored after this reading
        // reaches it. The leader answers, so the reading is not behind.
        let newest = match newest_stored_at_leader(&self.stream, id)
            .await
            .map_err(failed)?
        {
            Some(newest) => newest,
            // None stored (or all expired): the room covers what comes after the stream's
            // newest event, so an older counter is looked up (and found expired or empty).
            None => {
                let mut stream = self.stream.clone();
                stream
                    .info()
                    .await
                    .map_err(|err| failed(err.to_string()))?
                    .state
                    .last_sequence
            }
        };
        room.start_after(newest);
        let task = tokio::spawn(take_in(
            Arc::downgrade(room),
            id.clone(),
            subscriber,
            self.metrics.clone(),
        ));
        tokio::spawn(recheck(
            Arc::downgrade(room),
            id.clone(),
            self.stream.clone(),
            self.metrics.clone(),
        ));
        tracing::debug!(room.id = %id, after = newest, "following the room's live events");
        Ok(Following::new(
            task.abort_handle(),
            self.metrics.rooms_followed.clone(),
        ))
    }

    /// Checks every followed room every [`CHECK_EVERY`] and after every reconnect (seen as
    /// `link` coming up again), until `shutdown` fires; `ready` is up while the stream is there
    /// to follow.
    pub async fn check_forever(
        self: Arc<Self>,
        hub: Arc<Hub>,
        link: Arc<Signal>,
        ready: Arc<Signal>,
        shutdown: CancellationToken,
    ) {
        let mut connected_since = link.up_since();
        let mut next_check = tokio::time::Instant::now() + CHECK_EVERY;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
            let now = tokio::time::Instant::now();
            let reconnected = match link.up_since() {
                Some(since) if Some(since) != connected_since => {
                    // Subscriptions are sent again after the reconnect is announced: give
                    // them a moment.
                    let settled = now.duration_since(since) >= RECHECK_AFTER;
                    if settled {
                        connected_since = Some(since);
                    }
                    settled
                }
                _ => false,
            };
            if !reconnected && now < next_check {
                continue;
            }
            next_check = now + CHECK_EVERY;
            if self.stream_is_followable().await {
                ready.up();
            } else {
                // Not ready while the stream is gone (after the grace: see readiness).
                ready.down();
                continue;
            }
            let lost = self.check(hub.followed_rooms()).await;
            if lost > 0 {
                tracing::warn!(
                    rooms = lost,
                    "live events were lost; those rooms restarted after them"
                );
            }
        }
    }

    /// Whether the event stream is there and republishes to live subjects.
    async fn stream_is_followable(&self) -> bool {
        let mut stream = self.stream.clone();
        match stream.info().await {
            Ok(info) => info.config.republish.is_some(),
            Err(err) => {
                tracing::warn!(error = %err, "reading the event stream's state failed");
                false
            }
        }
    }

    /// Reads each room's newest stored event; a room that has not received one within
    /// [`IN_FLIGHT`] lost it, and starts again after it. Returns how many rooms did.
    async fn check(&self, rooms: Vec<(RoomId, Arc<Room>)>) -> usize {
        let stream = &self.stream;
        let readings: Vec<(Arc<Room>, Option<u64>)> = futures::stream::iter(rooms)
            .map(|(id, room)| async move { (room, newest_stored(stream, &id).await.ok()) })
            .buffer_unordered(CHECKS_AT_ONCE)
            .collect()
            .await;
        let behind: Vec<(Arc<Room>, u64)> = readings
            .into_iter()
            .filter_map(|(room, newest)| {
                let newest = newest.filter(|newest| *newest > room.newest())?;
                Some((room, newest))
            })
            .collect();
        if behind.is_empty() {
            return 0;
        }
        tokio::time::sleep(IN_FLIGHT).await;
        let lost = behind
            .into_iter()
            .filter(|(room, newest)| room.catch_up_to(*newest))
            .count();
        self.metrics.live_gaps.inc_by(lost as u64);
        lost
    }
}

/// Takes in the room's live events until the room is dropped.
async fn take_in(
    room: Weak<Room>,
    id: RoomId,
    mut subscriber: async_nats::Subscriber,
    metrics: CometMetrics,
) {
    while let Some(message) = subscriber.next().await {
        let Some(room) = room.upgrade() else {
            return;
        };
        take(&room, &id, &message, &metrics);
    }
}

/// Reads the room's newest stored event once more, [`RECHECK_AFTER`] it was first followed:
/// in a cluster, events stored before the subscription reached the stream's leader are lost.
async fn recheck(room: Weak<Room>, id: RoomId, stream: Stream, metrics: CometMetrics) {
    tokio::time::sleep(RECHECK_AFTER).await;
    let Ok(newest) = newest_stored(&stream, &id).await else {
        return;
    };
    if room.upgrade().is_none_or(|room| newest <= room.newest()) {
        return;
    }
    tokio::time::sleep(IN_FLIGHT).await;
    if room.upgrade().is_some_and(|room| room.catch_up_to(newest)) {
        metrics.live_gaps.inc();
        tracing::warn!(room.id = %id, newest, "live events were lost right after following began");
    }
}

/// Applies one republished message to its room.
fn take(room: &Room, id: &RoomId, message: &async_nats::Message, metrics: &CometMetrics) {
    let header = |name: &str| {
        message
            .headers
            .as_ref()
            .and_then(|headers| headers.get_last(name))
            .and_then(|value| value.as_str().parse::<u64>().ok())
    };
    let Some(counter) = header(async_nats::header::NATS_SEQUENCE.as_ref()) else {
        tracing::warn!(room.id = %id, subject = %message.subject, "skipping a live message without its counter");
        return;
    };
    // Absent when no earlier event of the room is stored.
    let previous = header(async_nats::header::NATS_LAST_SEQUENCE.as_ref()).unwrap_or(0);
    let json = encode_stored(counter, &message.payload);
    if json.is_none() {
        tracing::warn!(room.id = %id, counter, "skipping a message that is not a room event");
    }
    let trace = telemetry::context_of(message.headers.as_ref());
    let trace_id = telemetry::trace_id(trace.as_ref());
    // nats-server 2.9 republishes without the time the event was stored: its fan-out is
    // timed from its arrival here, a fraction of a millisecond later.
    let origin = Origin {
        trace,
        stored_at: std::time::SystemTime::now(),
    };
    match room.apply(counter, previous, json, origin) {
        Applied::Next => {
            metrics.events_applied.inc();
        }
        Applied::AfterGap => {
            metrics.events_applied.inc();
            metrics.live_gaps.inc();
            tracing::warn!(room.id = %id, counter, previous, "live events were lost; the room restarted after them");
        }
        Applied::Old => return,
    }
    tracing::debug!(room.id = %id, counter, trace_id, "event delivered to waiters");
}

/// The counter of the room's newest stored event (0 when none is), read from any replica of
/// the stream (it may be a moment behind the leader).
async fn newest_stored(stream: &Stream, room: &RoomId) -> Result<u64, String> {
    match stream
        .direct_get_last_for_subject(subjects::room_events(room))
        .await
    {
        Ok(message) => Ok(message.sequence),
        Err(err) if matches!(err.kind(), DirectGetErrorKind::NotFound) => Ok(0),
        Err(err) => Err(err.to_string()),
    }
}

/// The counter of the room's newest stored event as the stream's leader has it, or `None`
/// when none is stored.
async fn newest_stored_at_leader(stream: &Stream, room: &RoomId) -> Result<Option<u64>, String> {
    match stream
        .get_last_raw_message_by_subject(&subjects::room_events(room))
        .await
    {
        Ok(message) => Ok(Some(message.sequence)),
        Err(err) if matches!(err.kind(), LastRawMessageErrorKind::NoMessageFound) => Ok(None),
        Err(err) => Err(err.to_string()),
    }
}
