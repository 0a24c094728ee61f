//! The rooms a comet replica knows: for each, the recent events as ready-to-send JSON bytes
//! (serialized once, shared by every observer) and a [`Notify`] that wakes its waiters once
//! per event.
//!
//! A room's buffer holds every event of the room after its `covered_after` counter; older
//! ones come from [`crate::backfill`], and what a backfill read is kept beside the buffer as a
//! run of older events, so the next observes with old counters find it here. Buffers and runs
//! are bounded, runs are dropped a minute after they were read, and rooms nobody waits on are
//! dropped after a while, so memory follows the rooms in use.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use lingr_platform::telemetry::SpanContext;
use lingr_proto::{Event, RoomId};
use tokio::sync::Notify;

/// Bytes of backfilled runs one replica keeps across all rooms; past it, the runs read
/// longest ago are dropped (an observe that needs one again reads the stream again).
pub const RUNS_BUDGET: usize = 128 * 1024 * 1024;

/// Every room this replica follows.
pub struct Hub {
    inner: RwLock<Rooms>,
    room_capacity: usize,
    /// Bytes of every room's run, changed under each room's buffer lock together with the run.
    run_bytes: AtomicI64,
}

struct Rooms {
    by_id: HashMap<RoomId, Arc<Room>>,
    /// Every event up to this counter has been applied to the rooms in `by_id`.
    applied: u64,
}

/// Most events a run of backfilled events keeps (its oldest are dropped first: clients move
/// forward).
pub const RUN_MAX: usize = 2_000;
/// How long a run is kept after it was read.
pub const RUN_TTL: Duration = Duration::from_secs(60);

/// One room's buffer and waiters.
pub struct Room {
    buffer: RwLock<Buffer>,
    notify: Notify,
    backfill_turn: Arc<tokio::sync::Mutex<()>>,
}

struct Buffer {
    covered_after: u64,
    events: VecDeque<(u64, Bytes)>,
    /// Where each of `events` came from, index for index.
    origins: VecDeque<Origin>,
    last_used: Instant,
    run: Option<Run>,
    backfill_failed_at: Option<Instant>,
}

/// Where a live event came from: the trace of the call that stored it, and when the stream
/// stored it (to time its fan-out).
#[derive(Debug, Clone)]
pub struct Origin {
    /// The trace context its message carried.
    pub trace: Option<SpanContext>,
    /// When the stream stored it.
    pub stored_at: SystemTime,
}

/// Every event of the room with a counter in `(from, to]`, read from the stream.
struct Run {
    from: u64,
    to: u64,
    events: Vec<(u64, Bytes)>,
    read_at: Instant,
}

impl Run {
    fn bytes(&self) -> usize {
        self.events.iter().map(|(_, json)| json.len()).sum()
    }
}

/// How long a failed read of the stream makes the room's other observes give up at once.
const BACKFILL_FAILURE_MEMORY: Duration = Duration::from_secs(1);

/// What a room can say about the events after a counter.
#[derive(Debug, PartialEq, Eq)]
pub enum Collected {
    /// These events (possibly none yet) come next after the counter.
    Events(Vec<(u64, Bytes)>),
    /// The events in `(from, upto]` are neither buffered nor in a run: read them from the
    /// stream.
    Missing {
        /// Read after this counter...
        from: u64,
        /// ...up to and including this one.
        upto: u64,
    },
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
            run_bytes: AtomicI64::new(0),
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
    pub fn apply(&self, room_id: &RoomId, counter: u64, json: Bytes, origin: Origin) -> bool {
        if counter <= self.applied() {
            return false;
        }
        let room = self.room(room_id);
        room.push(counter, json, origin, self.room_capacity);
        if let Ok(mut rooms) = self.inner.write() {
            rooms.applied = rooms.applied.max(counter);
        }
        room.notify.notify_waiters();
        true
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
        for room in rooms.by_id.values() {
            if room
                .run_read_at()
                .is_some_and(|at| now.duration_since(at) >= RUN_TTL)
            {
                room.take_run(&self.run_bytes);
            }
        }
        rooms.by_id.retain(|_, room| {
            let keep = Arc::strong_count(room) > 1
                || room
                    .buffer
                    .read()
                    .is_ok_and(|b| now.duration_since(b.last_used) < idle);
            if !keep {
                room.take_run(&self.run_bytes);
            }
            keep
        });
        rooms.by_id.len()
    }

    /// Keeps what a backfill of `room` read (every event in `(from, to]`, joined to the run
    /// kept when the two touch) within [`RUNS_BUDGET`]:
    /// past it, the runs of other rooms read longest ago are dropped.
    pub fn keep_run(&self, room: &Room, from: u64, to: u64, events: Vec<(u64, Bytes)>) {
        room.add_run(from, to, events, &self.run_bytes);
        if self.run_bytes() <= RUNS_BUDGET {
            return;
        }
        let Ok(rooms) = self.inner.read() else {
            return;
        };
        let mut oldest: Vec<(Instant, &Arc<Room>)> = rooms
            .by_id
            .values()
            .filter(|other| !std::ptr::eq(Arc::as_ptr(other), room))
            .filter_map(|other| other.run_read_at().map(|at| (at, other)))
            .collect();
        oldest.sort_by_key(|(at, _)| *at);
        for (_, other) in oldest {
            if self.run_bytes() <= RUNS_BUDGET {
                break;
            }
            other.take_run(&self.run_bytes);
        }
    }

    /// Bytes held in backfilled runs now.
    pub fn run_bytes(&self) -> usize {
        usize::try_from(self.run_bytes.load(Ordering::Relaxed)).unwrap_or(0)
    }
}

impl Room {
    fn new(covered_after: u64) -> Self {
        Self {
            buffer: RwLock::new(Buffer {
                covered_after,
                events: VecDeque::new(),
                origins: VecDeque::new(),
                last_used: Instant::now(),
                run: None,
                backfill_failed_at: None,
            }),
            notify: Notify::new(),
            backfill_turn: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    fn push(&self, counter: u64, json: Bytes, origin: Origin, capacity: usize) {
        if let Ok(mut buffer) = self.buffer.write() {
            buffer.events.push_back((counter, json));
            buffer.origins.push_back(origin);
            while buffer.events.len() > capacity {
                buffer.origins.pop_front();
                if let Some((evicted, _)) = buffer.events.pop_front() {
                    buffer.covered_after = evicted;
                }
            }
            buffer.last_used = Instant::now();
        }
    }

    /// Up to `max` events after `after`, from the run and the buffer, or which ones must be
    /// read from the stream first.
    pub fn collect(&self, after: u64, max: usize) -> Collected {
        let Ok(buffer) = self.buffer.read() else {
            return Collected::Events(Vec::new());
        };
        let from_buffer = |after: u64, max: usize| {
            let start = buffer.events.partition_point(|(c, _)| *c <= after);
            buffer.events.range(start..).take(max).cloned()
        };
        if after >= buffer.covered_after {
            return Collected::Events(from_buffer(after, max).collect());
        }
        let Some(run) = buffer
            .run
            .as_ref()
            .filter(|r| r.from <= after && after < r.to)
        else {
            return Collected::Missing {
                from: after,
                upto: buffer.covered_after,
            };
        };
        let start = run.events.partition_point(|(c, _)| *c <= after);
        let mut events: Vec<(u64, Bytes)> = run.events[start..].iter().take(max).cloned().collect();
        if events.len() < max && run.to >= buffer.covered_after {
            events.extend(from_buffer(run.to, max - events.len()));
        } else if events.is_empty() {
            // Nothing in the run after `after`, and the buffer has moved on since it was read.
            return Collected::Missing {
                from: run.to,
                upto: buffer.covered_after,
            };
        }
        Collected::Events(events)
    }

    /// Where those of `counters` still buffered came from (events read by a backfill have no
    /// origin: they were stored long before).
    pub fn origins(&self, counters: impl Iterator<Item = u64>) -> Vec<(u64, Origin)> {
        let Ok(buffer) = self.buffer.read() else {
            return Vec::new();
        };
        counters
            .filter_map(|counter| {
                let at = buffer
                    .events
                    .binary_search_by_key(&counter, |(c, _)| *c)
                    .ok()?;
                Some((counter, buffer.origins.get(at)?.clone()))
            })
            .collect()
    }

    /// Keeps what a backfill read (every event in `(from, to]`), joined to the run already
    /// kept when the two touch, and trimmed to [`RUN_MAX`] events; `total` follows the
    /// change in bytes.
    fn add_run(&self, from: u64, to: u64, events: Vec<(u64, Bytes)>, total: &AtomicI64) {
        let Ok(mut buffer) = self.buffer.write() else {
            return;
        };
        let before = buffer.run.as_ref().map_or(0, Run::bytes);
        let fresh = Run {
            from,
            to,
            events,
            read_at: Instant::now(),
        };
        // Trimmed at the end away from what was just read, which the observe waiting on it
        // needs (a read never exceeds RUN_MAX on its own).
        let (mut run, keep_oldest) = match buffer.run.take() {
            Some(old) if fresh.from <= old.from && old.from <= fresh.to => (join(fresh, old), true),
            Some(old) if old.from <= fresh.from && fresh.from <= old.to => {
                (join(old, fresh), false)
            }
            _ => (fresh, false),
        };
        if run.events.len() > RUN_MAX {
            if keep_oldest {
                run.events.truncate(RUN_MAX);
                run.to = run.events.last().map_or(run.from, |(c, _)| *c);
            } else {
                let excess = run.events.len() - RUN_MAX;
                run.from = run.events[excess - 1].0;
                run.events.drain(..excess);
            }
        }
        let after = run.bytes();
        buffer.run = Some(run);
        total.fetch_add(signed(after) - signed(before), Ordering::Relaxed);
    }

    /// Drops the room's run, taking its bytes off `total`.
    fn take_run(&self, total: &AtomicI64) {
        if let Ok(mut buffer) = self.buffer.write() {
            if let Some(run) = buffer.run.take() {
                total.fetch_sub(signed(run.bytes()), Ordering::Relaxed);
            }
        }
    }

    fn run_read_at(&self) -> Option<Instant> {
        self.buffer
            .read()
            .ok()
            .and_then(|buffer| buffer.run.as_ref().map(|run| run.read_at))
    }

    /// Remembers that reading the stream for this room just failed.
    pub fn note_backfill_failure(&self) {
        if let Ok(mut buffer) = self.buffer.write() {
            buffer.backfill_failed_at = Some(Instant::now());
        }
    }

    /// Whether reading the stream for this room failed a moment ago.
    pub fn backfill_failed_recently(&self) -> bool {
        self.buffer.read().is_ok_and(|buffer| {
            buffer
                .backfill_failed_at
                .is_some_and(|at| at.elapsed() < BACKFILL_FAILURE_MEMORY)
        })
    }

    /// One backfill of this room at a time: the observes that need one take turns, and each
    /// looks again before reading, since the one before may have read what it needs. The turn
    /// is owned, so a read can keep it after the observe that started it stops waiting.
    pub async fn backfill_turn(&self) -> tokio::sync::OwnedMutexGuard<()> {
        Arc::clone(&self.backfill_turn).lock_owned().await
    }

    /// The room's wake-up signal.
    pub fn notify(&self) -> &Notify {
        &self.notify
    }
}

fn signed(bytes: usize) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

/// Two overlapping runs as one: `earlier` starts first, `later` reaches at least as far or
/// further.
fn join(earlier: Run, later: Run) -> Run {
    let mut events = earlier.events;
    let to = earlier.to.max(later.to);
    events.extend(later.events.into_iter().filter(|(c, _)| *c > earlier.to));
    Run {
        from: earlier.from,
        to,
        events,
        read_at: earlier.read_at.max(later.read_at),
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

    fn untraced() -> Origin {
        Origin {
            trace: None,
            stored_at: SystemTime::now(),
        }
    }

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
            assert!(hub.apply(&room("a"), counter, json(counter), untraced()));
        }
        let a = hub.room(&room("a"));
        assert_eq!(
            a.collect(13, 10),
            Collected::Events(vec![(14, json(14)), (15, json(15))])
        );
        assert_eq!(a.collect(12, 1), Collected::Events(vec![(13, json(13))]));
        assert_eq!(a.collect(11, 10), Collected::Missing { from: 11, upto: 12 });
        assert!(
            !hub.apply(&room("a"), 15, json(15), untraced()),
            "redelivery is ignored"
        );
    }

    #[test]
    fn a_new_room_covers_only_what_comes_after_it() {
        let hub = Hub::new(8, 100);
        hub.apply(&room("a"), 101, json(101), untraced());
        let b = hub.room(&room("b"));
        assert_eq!(
            b.collect(50, 10),
            Collected::Missing {
                from: 50,
                upto: 101
            }
        );
        assert_eq!(b.collect(101, 10), Collected::Events(Vec::new()));
    }

    #[test]
    fn a_run_serves_old_counters_and_continues_into_the_buffer() {
        let hub = Hub::new(2, 20);
        for counter in [21, 24] {
            hub.apply(&room("a"), counter, json(counter), untraced());
        }
        let a = hub.room(&room("a"));
        assert_eq!(a.collect(5, 10), Collected::Missing { from: 5, upto: 20 });
        hub.keep_run(&a, 5, 20, vec![(7, json(7)), (12, json(12))]);
        assert_eq!(
            a.collect(5, 10),
            Collected::Events(vec![
                (7, json(7)),
                (12, json(12)),
                (21, json(21)),
                (24, json(24))
            ])
        );
        assert_eq!(
            a.collect(7, 2),
            Collected::Events(vec![(12, json(12)), (21, json(21))])
        );
        assert_eq!(
            a.collect(12, 10),
            Collected::Events(vec![(21, json(21)), (24, json(24))])
        );
        assert_eq!(a.collect(2, 10), Collected::Missing { from: 2, upto: 20 });
        // An earlier run that touches the kept one joins it.
        hub.keep_run(&a, 2, 7, vec![(3, json(3)), (7, json(7))]);
        assert_eq!(
            a.collect(2, 3),
            Collected::Events(vec![(3, json(3)), (7, json(7)), (12, json(12))])
        );
    }

    #[test]
    fn a_run_that_ended_before_the_buffer_moved_on_asks_for_the_rest() {
        let hub = Hub::new(1, 10);
        let a = hub.room(&room("a"));
        hub.keep_run(&a, 0, 10, vec![(4, json(4))]);
        for counter in [11, 12, 13] {
            hub.apply(&room("a"), counter, json(counter), untraced());
        }
        // The buffer now covers after 12 only; 11 was evicted and is in no run.
        assert_eq!(a.collect(4, 10), Collected::Missing { from: 10, upto: 12 });
        assert_eq!(a.collect(0, 10), Collected::Events(vec![(4, json(4))]));
    }

    #[test]
    fn an_earlier_read_joined_to_a_long_run_is_kept() {
        let hub = Hub::new(1, 100_000);
        let a = hub.room(&room("a"));
        let later: Vec<(u64, Bytes)> = (101..=RUN_MAX as u64 + 100).map(|c| (c, json(c))).collect();
        hub.keep_run(&a, 100, 100_000, later);
        hub.keep_run(&a, 0, 100, (1..=100).map(|c| (c, json(c))).collect());
        assert_eq!(a.collect(0, 1), Collected::Events(vec![(1, json(1))]));
    }

    #[test]
    fn runs_are_trimmed_from_their_oldest_event() {
        let hub = Hub::new(1, 100_000);
        let a = hub.room(&room("a"));
        let events: Vec<(u64, Bytes)> = (1..=RUN_MAX as u64 + 10).map(|c| (c, json(c))).collect();
        hub.keep_run(&a, 0, 100_000, events);
        assert_eq!(
            a.collect(0, 1),
            Collected::Missing {
                from: 0,
                upto: 100_000
            }
        );
        assert_eq!(a.collect(10, 1), Collected::Events(vec![(11, json(11))]));
    }

    #[test]
    fn runs_past_the_budget_drop_the_ones_read_longest_ago() {
        let hub = Hub::new(1, 1_000);
        let big = |c: u64| (c, Bytes::from(vec![b'x'; RUNS_BUDGET / 3 + 1]));
        let (a, b, c) = (
            hub.room(&room("a")),
            hub.room(&room("b")),
            hub.room(&room("c")),
        );
        hub.keep_run(&a, 0, 1_000, vec![big(1)]);
        hub.keep_run(&b, 0, 1_000, vec![big(2)]);
        hub.keep_run(&c, 0, 1_000, vec![big(3)]);
        assert!(hub.run_bytes() <= RUNS_BUDGET);
        assert_eq!(
            a.collect(0, 1),
            Collected::Missing {
                from: 0,
                upto: 1_000
            },
            "the oldest went"
        );
        assert_eq!(
            c.collect(0, 1),
            Collected::Events(vec![big(3)]),
            "the newest stays"
        );
        drop((a, b, c));
        hub.sweep(Duration::ZERO);
        assert_eq!(hub.run_bytes(), 0, "dropped rooms give their runs back");
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
