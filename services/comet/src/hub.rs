//! The rooms a comet replica knows: for each, the recent events as ready-to-send JSON bytes
//! (serialized once, shared by every observer) and a [`Notify`] that wakes its waiters once
//! per event.
//!
//! A room's buffer holds every event of the room after its `covered_after` counter; older
//! ones must come from [`crate::backfill`]. Buffers are bounded, and rooms nobody waits on are
//! dropped after a while, so memory follows the rooms in use.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use lingr_proto::{Event, RoomId};
use tokio::sync::Notify;

/// Every room this replica follows.
pub struct Hub {
    inner: RwLock<Rooms>,
    room_capacity: usize,
}

struct Rooms {
    by_id: HashMap<RoomId, Arc<Room>>,
    /// Every event up to this counter has been applied to the rooms in `by_id`.
    applied: u64,
}

/// One room's buffer and waiters.
pub struct Room {
    buffer: RwLock<Buffer>,
    notify: Notify,
}

struct Buffer {
    covered_after: u64,
    events: VecDeque<(u64, Bytes)>,
    last_used: Instant,
}

/// What a room's buffer can say about the events after a counter.
#[derive(Debug, PartialEq, Eq)]
pub enum Collected {
    /// These events (possibly none yet) are all there is after the counter.
    Events(Vec<(u64, Bytes)>),
    /// Events after the counter up to and including this one are no longer buffered.
    OlderThanBuffer(u64),
}

impl Hub {
    /// A hub whose rooms keep at most `room_capacity` events each, starting after `applied`.
    pub fn new(room_capacity: usize, applied: u64) -> Self {
        Self {
            inner: RwLock::new(Rooms {
                by_id: HashMap::new(),
                applied,
            }),
            room_capacity: room_capacity.max(1),
        }
    }

    /// The counter up to which every event has been applied.
    pub fn applied(&self) -> u64 {
        self.inner.read().map_or(0, |r| r.applied)
    }

    /// The room, created if new; a new room covers everything after what has been applied.
    pub fn room(&self, id: &RoomId) -> Arc<Room> {
        if let Some(room) = self
            .inner
            .read()
            .ok()
            .and_then(|r| r.by_id.get(id).cloned())
        {
            return room;
        }
        let Ok(mut rooms) = self.inner.write() else {
            return Arc::new(Room::new(0));
        };
        let applied = rooms.applied;
        Arc::clone(
            rooms
                .by_id
                .entry(id.clone())
                .or_insert_with(|| Arc::new(Room::new(applied))),
        )
    }

    /// Applies the event stored at `counter`, wakes the room's waiters once, and returns
    /// whether it was new (an ordered consumer may redeliver after a reconnect).
    pub fn apply(&self, room_id: &RoomId, counter: u64, json: Bytes) -> bool {
        if counter <= self.applied() {
            return false;
        }
        let room = self.room(room_id);
        room.push(counter, json, self.room_capacity);
        if let Ok(mut rooms) = self.inner.write() {
            rooms.applied = rooms.applied.max(counter);
        }
        room.notify.notify_waiters();
        true
    }

    /// Wakes the waiters of a room this replica knows (someone left it: their held observes
    /// must end); a room nobody waits on is left alone.
    pub fn wake(&self, room_id: &RoomId) {
        let room = self
            .inner
            .read()
            .ok()
            .and_then(|rooms| rooms.by_id.get(room_id).cloned());
        if let Some(room) = room {
            room.notify.notify_waiters();
        }
    }

    /// Marks counters up to `counter` as applied without an event (a gap in the stream, or
    /// a message that is not a valid event).
    pub fn skip_to(&self, counter: u64) {
        if let Ok(mut rooms) = self.inner.write() {
            rooms.applied = rooms.applied.max(counter);
        }
    }

    /// Drops rooms idle for `idle` that nobody waits on; returns how many remain.
    pub fn sweep(&self, idle: Duration) -> usize {
        let Ok(mut rooms) = self.inner.write() else {
            return 0;
        };
        let now = Instant::now();
        rooms.by_id.retain(|_, room| {
            Arc::strong_count(room) > 1
                || room
                    .buffer
                    .read()
                    .is_ok_and(|b| now.duration_since(b.last_used) < idle)
        });
        rooms.by_id.len()
    }
}

impl Room {
    fn new(covered_after: u64) -> Self {
        Self {
            buffer: RwLock::new(Buffer {
                covered_after,
                events: VecDeque::new(),
                last_used: Instant::now(),
            }),
            notify: Notify::new(),
        }
    }

    fn push(&self, counter: u64, json: Bytes, capacity: usize) {
        if let Ok(mut buffer) = self.buffer.write() {
            buffer.events.push_back((counter, json));
            while buffer.events.len() > capacity {
                if let Some((evicted, _)) = buffer.events.pop_front() {
                    buffer.covered_after = evicted;
                }
            }
            buffer.last_used = Instant::now();
        }
    }

    /// Up to `max` events after `after`, or word that some are older than the buffer.
    pub fn collect(&self, after: u64, max: usize) -> Collected {
        let Ok(buffer) = self.buffer.read() else {
            return Collected::Events(Vec::new());
        };
        if after < buffer.covered_after {
            return Collected::OlderThanBuffer(buffer.covered_after);
        }
        let start = buffer.events.partition_point(|(c, _)| *c <= after);
        Collected::Events(buffer.events.range(start..).take(max).cloned().collect())
    }

    /// The room's wake-up signal.
    pub fn notify(&self) -> &Notify {
        &self.notify
    }
}

/// The bytes observers receive for a stored message, or `None` if it is not a valid event.
pub fn encode_stored(counter: u64, payload: &[u8]) -> Option<Bytes> {
    let event: Event = serde_json::from_slice(payload).ok()?;
    Some(event.to_stored_json(counter))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(id: &str) -> RoomId {
        RoomId::parse(id).expect("valid")
    }

    fn json(n: u64) -> Bytes {
        Bytes::from(n.to_string())
    }

    #[test]
    fn collects_after_a_counter_and_reports_evicted_history() {
        let hub = Hub::new(3, 10);
        for counter in 11..=15 {
            assert!(hub.apply(&room("a"), counter, json(counter)));
        }
        let a = hub.room(&room("a"));
        assert_eq!(
            a.collect(13, 10),
            Collected::Events(vec![(14, json(14)), (15, json(15))])
        );
        assert_eq!(a.collect(12, 1), Collected::Events(vec![(13, json(13))]));
        assert_eq!(a.collect(11, 10), Collected::OlderThanBuffer(12));
        assert!(
            !hub.apply(&room("a"), 15, json(15)),
            "redelivery is ignored"
        );
    }

    #[test]
    fn a_new_room_covers_only_what_comes_after_it() {
        let hub = Hub::new(8, 100);
        hub.apply(&room("a"), 101, json(101));
        let b = hub.room(&room("b"));
        assert_eq!(b.collect(50, 10), Collected::OlderThanBuffer(101));
        assert_eq!(b.collect(101, 10), Collected::Events(Vec::new()));
    }

    #[test]
    fn sweep_keeps_rooms_with_waiters() {
        let hub = Hub::new(8, 0);
        let held = hub.room(&room("held"));
        hub.room(&room("idle"));
        assert_eq!(hub.sweep(Duration::ZERO), 1);
        drop(held);
        assert_eq!(hub.sweep(Duration::ZERO), 0);
    }
}
