//! The rooms a comet replica serves: for each, the recent events as ready-to-send JSON bytes
//! (serialized once, shared by every observer) and a [`RuntimeNotify`] that wakes its waiters once
//! per event.
//!
//! A room's buffer holds every event of the room after its `covered_after` counter, as
//! [`crate::live`] hands them in; older ones come from [`crate::backfill`], and what a
//! backfill read is kept beside the buffer as a run of older events, so the next observes
//! with old counters find it here. Each live event names the room's event before it, so a
//! lost one shows as a gap, and the buffer then starts again after it (what it missed comes
//! by backfill). A run's events lie in one comma-joined text, so an answer sends a stretch of
//! them as one slice of it. Buffers and runs are bounded, runs are dropped a minute after they
//! were read, and rooms nobody waits on are dropped after a while (and stop being followed),
//! so memory and work follow the rooms in use.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::{BufMut, Bytes, BytesMut};
use lingr_platform::clock::now_ms;
use lingr_platform::metrics::Gauge;
use lingr_platform::server::RuntimeNotify;
use lingr_platform::telemetry::SpanContext;
use lingr_proto::{Event, RoomId};

/// Bytes of backfilled runs one replica keeps across all rooms; past it, the runs read
/// longest ago are dropped (an observe that needs one again reads the stream again).
pub const RUNS_BUDGET: usize = 128 * 1024 * 1024;

/// Every room this replica follows.
pub struct Hub {
    rooms: RwLock<HashMap<RoomId, Arc<Room>>>,
    room_capacity: usize,
    /// Bytes of every room's run, changed under each room's buffer lock together with the run.
    run_bytes: AtomicI64,
}

/// Most events a run of backfilled events keeps (its oldest are dropped first: clients move
/// forward).
pub const RUN_MAX: usize = 2_000;
/// How long a run is kept after it was read.
pub const RUN_TTL: Duration = Duration::from_secs(60);

/// One room's buffer and waiters.
pub struct Room {
    buffer: RwLock<Buffer>,
    notify: RuntimeNotify,
    backfill_turn: Arc<tokio::sync::Mutex<()>>,
    capacity: usize,
    /// When an observe last asked for the room (Unix ms). Apart from the buffer's lock, since
    /// every observe notes it: a lock taken to write would make each of a room's re-observes
    /// wait for the others.
    last_used_ms: AtomicU64,
    /// What follows the room's live events while the room is kept (see [`crate::live`]);
    /// dropping the room stops it.
    following: tokio::sync::OnceCell<Following>,
}

/// A task following a room's live events, counted in a gauge while it runs; stopped when
/// dropped.
pub struct Following {
    task: tokio::task::AbortHandle,
    followed: Gauge,
}

impl Following {
    /// Counts `task` in `followed` until this is dropped, which stops it.
    pub fn new(task: tokio::task::AbortHandle, followed: Gauge) -> Self {
        followed.inc();
        Self { task, followed }
    }
}

impl Drop for Following {
    fn drop(&mut self) {
        self.task.abort();
        self.followed.dec();
    }
}

struct Buffer {
    covered_after: u64,
    /// The newest counter the room has taken in: `covered_after`, or its newest event.
    newest: u64,
    events: VecDeque<(u64, Bytes)>,
    /// Where each of `events` came from, index for index.
    origins: VecDeque<Origin>,
    run: Option<Run>,
    read_failed_at: Option<Instant>,
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
    /// The events' JSON joined by commas: a herd's answers are stretches of it.
    text: Bytes,
    /// Each event's JSON, a slice of `text`.
    events: Vec<(u64, Bytes)>,
    read_at: Instant,
}

impl Run {
    /// A run of `events`, read now, their bytes copied into one text (once per backfill,
    /// where each answer from it would otherwise copy its events).
    fn new(from: u64, to: u64, events: &[(u64, Bytes)]) -> Self {
        let mut text = BytesMut::with_capacity(events.iter().map(|(_, json)| json.len() + 1).sum());
        let mut spans = Vec::with_capacity(events.len());
        for (counter, json) in events {
            if !text.is_empty() {
                text.put_u8(b',');
            }
            let start = text.len();
            text.put_slice(json);
            spans.push((*counter, start..text.len()));
        }
        let text = text.freeze();
        let events = spans
            .into_iter()
            .map(|(counter, span)| (counter, text.slice(span)))
            .collect();
        Self {
            from,
            to,
            text,
            events,
            read_at: Instant::now(),
        }
    }

    /// Its events and their span, to be joined with another's.
    fn stretch(self) -> Stretch {
        (self.from, self.to, self.events)
    }

    fn bytes(&self) -> usize {
        self.text.len()
    }
}

/// How long a failed read of the stream makes the room's other observes give up at once.
const READ_FAILURE_MEMORY: Duration = Duration::from_secs(1);

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

/// What a live event did to a room.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    /// It came next, and its waiters were woken.
    Next,
    /// The room had already taken it in (it was stored before the room was followed).
    Old,
    /// Events between the room's newest and it never arrived: the buffer starts again at it.
    AfterGap,
}

impl Hub {
    /// A hub whose rooms keep at most `room_capacity` events each.
    pub fn new(room_capacity: usize) -> Self {
        Self {
            rooms: RwLock::new(HashMap::new()),
            room_capacity: room_capacity.max(1),
            run_bytes: AtomicI64::new(0),
        }
    }

    /// The room, created if new (it covers nothing until it is started: see
    /// [`Room::start_after`]), marked as used now.
    pub fn room(&self, id: &RoomId) -> Arc<Room> {
        if let Some(room) = self.rooms.read().ok().and_then(|r| r.get(id).cloned()) {
            room.touch();
            return room;
        }
        let capacity = self.room_capacity;
        let Ok(mut rooms) = self.rooms.write() else {
            return Arc::new(Room::new(capacity));
        };
        Arc::clone(
            rooms
                .entry(id.clone())
                .or_insert_with(|| Arc::new(Room::new(capacity))),
        )
    }

    /// The room, if it is kept and followed already, marked as used now.
    pub fn followed_room(&self, id: &RoomId) -> Option<Arc<Room>> {
        let room = self
            .rooms
            .read()
            .ok()
            .and_then(|r| r.get(id).cloned())
            .filter(|room| room.following.initialized())?;
        room.touch();
        Some(room)
    }

    /// Every room followed now (not those whose following failed or is starting).
    pub fn followed_rooms(&self) -> Vec<(RoomId, Arc<Room>)> {
        self.rooms.read().map_or_else(
            |_| Vec::new(),
            |rooms| {
                rooms
                    .iter()
                    .filter(|(_, room)| room.following.initialized())
                    .map(|(id, room)| (id.clone(), Arc::clone(room)))
                    .collect()
            },
        )
    }

    /// Drops rooms idle for `idle` that nobody waits on; returns how many remain.
    pub fn sweep(&self, idle: Duration) -> usize {
        let Ok(mut rooms) = self.rooms.write() else {
            return 0;
        };
        let (now, now_ms) = (Instant::now(), now_ms());
        for room in rooms.values() {
            if room
                .run_read_at()
                .is_some_and(|at| now.duration_since(at) >= RUN_TTL)
            {
                room.take_run(&self.run_bytes);
            }
        }
        rooms.retain(|_, room| {
            let keep = Arc::strong_count(room) > 1
                || u128::from(now_ms.saturating_sub(room.last_used_ms.load(Ordering::Relaxed)))
                    < idle.as_millis();
            if !keep {
                room.take_run(&self.run_bytes);
            }
            keep
        });
        rooms.len()
    }

    /// Keeps what a backfill of `room` read (every event in `(from, to]`, joined to the run
    /// kept when the two touch) within [`RUNS_BUDGET`]:
    /// past it, the runs of other rooms read longest ago are dropped.
    pub fn keep_run(&self, room: &Room, from: u64, to: u64, events: Vec<(u64, Bytes)>) {
        room.add_run(from, to, events, &self.run_bytes);
        if self.run_bytes() <= RUNS_BUDGET {
            return;
        }
        let Ok(rooms) = self.rooms.read() else {
            return;
        };
        let mut oldest: Vec<(Instant, &Arc<Room>)> = rooms
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
    fn new(capacity: usize) -> Self {
        Self {
            buffer: RwLock::new(Buffer {
                covered_after: 0,
                newest: 0,
                events: VecDeque::new(),
                origins: VecDeque::new(),
                run: None,
                read_failed_at: None,
            }),
            notify: RuntimeNotify::default(),
            backfill_turn: Arc::new(tokio::sync::Mutex::new(())),
            capacity,
            last_used_ms: AtomicU64::new(now_ms()),
            following: tokio::sync::OnceCell::new(),
        }
    }

    /// The room's follower, started by `start` on first use (concurrent callers wait for the
    /// one starting it; a start that fails leaves it to the next caller).
    ///
    /// # Errors
    /// Whatever `start` returns.
    pub async fn followed<E, F>(&self, start: F) -> Result<(), E>
    where
        F: std::future::Future<Output = Result<Following, E>>,
    {
        self.following.get_or_try_init(|| start).await.map(|_| ())
    }

    /// Notes that an observe wants the room: a room nobody observes is dropped after a while,
    /// however busy it is.
    fn touch(&self) {
        self.last_used_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Makes the room cover every event after `counter`: the newest one stored when its
    /// follower started receiving.
    pub fn start_after(&self, counter: u64) {
        if let Ok(mut buffer) = self.buffer.write() {
            buffer.covered_after = counter;
            buffer.newest = counter;
        }
    }

    /// Takes in the live event stored at `counter`, whose room had `previous` as its event
    /// before it (0 when none is stored any more); `json` is `None` for a message that is not
    /// a valid event (it takes the counter, delivering nothing).
    pub fn apply(
        &self,
        counter: u64,
        previous: u64,
        json: Option<Bytes>,
        origin: Origin,
    ) -> Applied {
        let applied = {
            let Ok(mut buffer) = self.buffer.write() else {
                return Applied::Old;
            };
            if counter <= buffer.newest {
                return Applied::Old;
            }
            // Less than the newest means the events between were deleted or expired, not lost.
            let applied = if previous > buffer.newest {
                buffer.restart_after(previous);
                Applied::AfterGap
            } else {
                Applied::Next
            };
            buffer.newest = counter;
            if let Some(json) = json {
                buffer.events.push_back((counter, json));
                buffer.origins.push_back(origin);
                while buffer.events.len() > self.capacity {
                    buffer.origins.pop_front();
                    if let Some((evicted, _)) = buffer.events.pop_front() {
                        buffer.covered_after = evicted;
                    }
                }
            }
            applied
        };
        self.notify.notify_waiters();
        applied
    }

    /// Takes in that the room's newest stored event is `counter`: one the room has not seen
    /// means live events were lost, and the buffer starts again after it. Returns whether it
    /// did.
    pub fn catch_up_to(&self, counter: u64) -> bool {
        let restarted = self.buffer.write().is_ok_and(|mut buffer| {
            let behind = counter > buffer.newest;
            if behind {
                buffer.restart_after(counter);
                buffer.newest = counter;
            }
            behind
        });
        if restarted {
            self.notify.notify_waiters();
        }
        restarted
    }

    /// The newest counter the room has taken in.
    pub fn newest(&self) -> u64 {
        self.buffer.read().map_or(0, |buffer| buffer.newest)
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
        if events.len() < max {
            if run.to < buffer.covered_after {
                // The buffer has moved on since the run was read: an answer carries every
                // event after the counter up to `max` (the contract), not the run's part of
                // them, so what lies between is read first.
                return Collected::Missing {
                    from: run.to,
                    upto: buffer.covered_after,
                };
            }
            events.extend(from_buffer(run.to, max - events.len()));
        }
        Collected::Events(events)
    }

    /// Where those of `counters` still buffered came from (events read by a backfill have no
    /// origin: they were stored long before).
    pub fn origins(&self, counters: impl Iterator<Item = u64>) -> Vec<(u64, Origin)> {
        let Ok(buffer) = self.buffer.read() else {
            return Vec::new();
        };
        // A herd's answers are 500 events from a backfilled run, all older than the buffer:
        // searching the buffer for each was a sixth of the observe handler's time in a herd.
        let Some(&(oldest, _)) = buffer.events.front() else {
            return Vec::new();
        };
        counters
            .filter(|counter| *counter >= oldest)
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
        let fresh = (from, to, events);
        // Trimmed at the end away from what was just read, which the observe waiting on it
        // needs (a read never exceeds RUN_MAX on its own).
        let ((mut from, mut to, mut events), keep_oldest) = match buffer.run.take() {
            Some(old) if from <= old.from && old.from <= to => (join(fresh, old.stretch()), true),
            Some(old) if old.from <= from && from <= old.to => (join(old.stretch(), fresh), false),
            _ => (fresh, false),
        };
        if events.len() > RUN_MAX {
            if keep_oldest {
                events.truncate(RUN_MAX);
                to = events.last().map_or(from, |(c, _)| *c);
            } else {
                let excess = events.len() - RUN_MAX;
                from = events[excess - 1].0;
                events.drain(..excess);
            }
        }
        // Laid out once, after joining and trimming.
        let run = Run::new(from, to, &events);
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

    /// The text of the room's run, which the events [`Room::collect`] takes from it are
    /// slices of.
    pub fn run_text(&self) -> Option<Bytes> {
        self.buffer
            .read()
            .ok()
            .and_then(|buffer| buffer.run.as_ref().map(|run| run.text.clone()))
    }

    fn run_read_at(&self) -> Option<Instant> {
        self.buffer
            .read()
            .ok()
            .and_then(|buffer| buffer.run.as_ref().map(|run| run.read_at))
    }

    /// Remembers that reading the stream for this room (to follow it or to backfill) just
    /// failed.
    pub fn note_read_failure(&self) {
        if let Ok(mut buffer) = self.buffer.write() {
            buffer.read_failed_at = Some(Instant::now());
        }
    }

    /// Whether reading the stream for this room failed a moment ago.
    pub fn read_failed_recently(&self) -> bool {
        self.buffer.read().is_ok_and(|buffer| {
            buffer
                .read_failed_at
                .is_some_and(|at| at.elapsed() < READ_FAILURE_MEMORY)
        })
    }

    /// One backfill of this room at a time: the observes that need one take turns, and each
    /// looks again before reading, since the one before may have read what it needs. The turn
    /// is owned, so a read can keep it after the observe that started it stops waiting.
    pub async fn backfill_turn(&self) -> tokio::sync::OwnedMutexGuard<()> {
        Arc::clone(&self.backfill_turn).lock_owned().await
    }

    /// The room's wake-up signal.
    pub fn notify(&self) -> &RuntimeNotify {
        &self.notify
    }
}

impl Buffer {
    /// Forgets the buffered events: the room now covers what comes after `counter`, and an
    /// observe with an older counter reads the rest from the stream.
    fn restart_after(&mut self, counter: u64) {
        self.events.clear();
        self.origins.clear();
        self.covered_after = counter;
    }
}

fn signed(bytes: usize) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

/// The events of a room in `(from, to]`, as a run holds them.
type Stretch = (u64, u64, Vec<(u64, Bytes)>);

/// Two overlapping stretches as one: `earlier` starts first, `later` reaches at least as far
/// or further.
fn join(earlier: Stretch, later: Stretch) -> Stretch {
    let (from, earlier_to, mut events) = earlier;
    let (_, later_to, later_events) = later;
    events.extend(later_events.into_iter().filter(|(c, _)| *c > earlier_to));
    (from, earlier_to.max(later_to), events)
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

    /// The hub's room `id`, started after `counter`.
    fn started(hub: &Hub, id: &str, counter: u64) -> Arc<Room> {
        let room = hub.room(&room(id));
        room.start_after(counter);
        room
    }

    /// Applies each of `counters` as the event after the one before.
    fn feed(room: &Room, counters: impl IntoIterator<Item = u64>) {
        for counter in counters {
            let previous = room.newest();
            assert_eq!(
                room.apply(counter, previous, Some(json(counter)), untraced()),
                Applied::Next
            );
        }
    }

    #[test]
    fn collects_after_a_counter_and_reports_evicted_history() {
        let hub = Hub::new(3);
        let a = started(&hub, "a", 10);
        feed(&a, 11..=15);
        assert_eq!(
            a.collect(13, 10),
            Collected::Events(vec![(14, json(14)), (15, json(15))])
        );
        assert_eq!(a.collect(12, 1), Collected::Events(vec![(13, json(13))]));
        assert_eq!(a.collect(11, 10), Collected::Missing { from: 11, upto: 12 });
        assert_eq!(
            a.apply(15, 14, Some(json(15)), untraced()),
            Applied::Old,
            "redelivery is ignored"
        );
    }

    #[test]
    fn a_room_covers_only_what_comes_after_its_start() {
        let hub = Hub::new(8);
        let b = started(&hub, "b", 101);
        assert_eq!(
            b.collect(50, 10),
            Collected::Missing {
                from: 50,
                upto: 101
            }
        );
        assert_eq!(b.collect(101, 10), Collected::Events(Vec::new()));
        assert_eq!(
            b.apply(90, 0, Some(json(90)), untraced()),
            Applied::Old,
            "an event stored before the start comes by backfill"
        );
    }

    #[test]
    fn a_lost_live_event_restarts_the_buffer_after_it() {
        let hub = Hub::new(8);
        let a = started(&hub, "a", 10);
        feed(&a, [12, 15]);
        // 17's event before it was 16, which never arrived.
        assert_eq!(
            a.apply(17, 16, Some(json(17)), untraced()),
            Applied::AfterGap
        );
        assert_eq!(a.collect(15, 10), Collected::Missing { from: 15, upto: 16 });
        assert_eq!(a.collect(16, 10), Collected::Events(vec![(17, json(17))]));
        // Events deleted before 20 make its previous older than the newest: no gap.
        assert_eq!(a.apply(20, 3, Some(json(20)), untraced()), Applied::Next);
        assert_eq!(
            a.collect(16, 10),
            Collected::Events(vec![(17, json(17)), (20, json(20))])
        );
    }

    #[test]
    fn catching_up_to_a_newer_stored_event_restarts_the_buffer() {
        let hub = Hub::new(8);
        let a = started(&hub, "a", 10);
        feed(&a, [11]);
        assert!(!a.catch_up_to(11), "nothing was missed");
        assert!(a.catch_up_to(14));
        assert_eq!(a.collect(11, 10), Collected::Missing { from: 11, upto: 14 });
        assert_eq!(a.apply(14, 13, Some(json(14)), untraced()), Applied::Old);
        feed(&a, [15]);
        assert_eq!(a.collect(14, 10), Collected::Events(vec![(15, json(15))]));
    }

    #[test]
    fn a_message_that_is_not_an_event_takes_its_counter_and_delivers_nothing() {
        let hub = Hub::new(8);
        let a = started(&hub, "a", 10);
        assert_eq!(a.apply(11, 10, None, untraced()), Applied::Next);
        assert_eq!(a.apply(12, 11, Some(json(12)), untraced()), Applied::Next);
        assert_eq!(a.collect(10, 10), Collected::Events(vec![(12, json(12))]));
    }

    #[test]
    fn a_run_serves_old_counters_and_continues_into_the_buffer() {
        let hub = Hub::new(2);
        let a = started(&hub, "a", 20);
        feed(&a, [21, 24]);
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

    /// Each buffered event keeps its own origin (stored at its counter's second here), also
    /// after older ones leave the buffer; events read by a backfill, and any once the buffer
    /// restarted, have none.
    #[test]
    fn only_buffered_events_have_origins() {
        let stored_at = |counter: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(counter);
        let hub = Hub::new(2);
        let a = started(&hub, "a", 20);
        for counter in [21, 24, 25] {
            let origin = Origin {
                trace: None,
                stored_at: stored_at(counter),
            };
            let previous = a.newest();
            assert_eq!(
                a.apply(counter, previous, Some(json(counter)), origin),
                Applied::Next
            );
            if counter == 24 {
                hub.keep_run(&a, 5, 20, vec![(7, json(7)), (12, json(12))]);
                assert_eq!(found(&a, &[7, 12, 21, 24]), vec![21, 24]);
                assert_eq!(found(&a, &[7, 12]), Vec::<u64>::new(), "read by a backfill");
            }
        }
        assert_eq!(found(&a, &[21, 24, 25]), vec![24, 25], "21 left the buffer");
        for (counter, origin) in a.origins([24, 25].into_iter()) {
            assert_eq!(origin.stored_at, stored_at(counter), "its own origin");
        }
        assert!(a.catch_up_to(30));
        assert_eq!(
            found(&a, &[24, 25]),
            Vec::<u64>::new(),
            "the buffer restarted"
        );
    }

    /// Which of `counters` `room` found an origin for.
    fn found(room: &Room, counters: &[u64]) -> Vec<u64> {
        let origins = room.origins(counters.iter().copied());
        origins.into_iter().map(|(counter, _)| counter).collect()
    }

    #[test]
    fn a_run_that_ended_before_the_buffer_moved_on_asks_for_the_rest() {
        let hub = Hub::new(1);
        let a = started(&hub, "a", 10);
        hub.keep_run(&a, 0, 10, vec![(4, json(4))]);
        feed(&a, [11, 12, 13]);
        // The buffer now covers after 12 only; 11 and 12 were evicted and are in no run. An
        // older counter is not answered with the run's part alone either: its answer would
        // stop at 4 with 11, 12 and 13 waiting.
        assert_eq!(a.collect(4, 10), Collected::Missing { from: 10, upto: 12 });
        assert_eq!(a.collect(0, 10), Collected::Missing { from: 10, upto: 12 });
        assert_eq!(a.collect(0, 1), Collected::Events(vec![(4, json(4))]));
        hub.keep_run(&a, 10, 12, vec![(11, json(11)), (12, json(12))]);
        assert_eq!(
            a.collect(0, 10),
            Collected::Events(vec![
                (4, json(4)),
                (11, json(11)),
                (12, json(12)),
                (13, json(13))
            ])
        );
    }

    #[test]
    fn an_earlier_read_joined_to_a_long_run_is_kept() {
        let hub = Hub::new(1);
        let a = started(&hub, "a", 100_000);
        let later: Vec<(u64, Bytes)> = (101..=RUN_MAX as u64 + 100).map(|c| (c, json(c))).collect();
        hub.keep_run(&a, 100, 100_000, later);
        hub.keep_run(&a, 0, 100, (1..=100).map(|c| (c, json(c))).collect());
        assert_eq!(a.collect(0, 1), Collected::Events(vec![(1, json(1))]));
    }

    /// What an answer relies on to send a stretch of a run without copying it: the events a
    /// run gives are its text's slices, side by side with a comma between, also after two
    /// reads were joined.
    #[test]
    fn a_runs_events_are_consecutive_slices_of_its_text() {
        let hub = Hub::new(1);
        let a = started(&hub, "a", 100);
        hub.keep_run(&a, 50, 100, (51..=100).map(|c| (c, json(c))).collect());
        hub.keep_run(&a, 0, 50, (1..=50).map(|c| (c, json(c))).collect());
        let text = a.run_text().expect("a run");
        let Collected::Events(events) = a.collect(0, 100) else {
            panic!("the run covers (0, 100]");
        };
        assert_eq!(events.len(), 100);
        let mut at = text.as_ptr() as usize;
        for (counter, event) in &events {
            assert_eq!(event.as_ptr() as usize, at, "event {counter} in its place");
            at += event.len() + 1;
        }
        let joined = events
            .iter()
            .map(|(_, event)| &event[..])
            .collect::<Vec<_>>()
            .join(&b',');
        assert_eq!(&text[..], &joined[..]);
    }

    #[test]
    fn runs_are_trimmed_from_their_oldest_event() {
        let hub = Hub::new(1);
        let a = started(&hub, "a", 100_000);
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
        let hub = Hub::new(1);
        let big = |c: u64| (c, Bytes::from(vec![b'x'; RUNS_BUDGET / 3 + 1]));
        let (a, b, c) = (
            started(&hub, "a", 1_000),
            started(&hub, "b", 1_000),
            started(&hub, "c", 1_000),
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
    fn a_room_is_swept_when_nobody_observes_it_however_busy_it_is() {
        let hub = Hub::new(8);
        // The follower's hold on a room: it does not keep the room.
        let followed = Arc::downgrade(&started(&hub, "busy", 0));
        std::thread::sleep(Duration::from_millis(20));
        if let Some(room) = followed.upgrade() {
            feed(&room, 1..=5);
        }
        assert_eq!(
            hub.sweep(Duration::from_millis(10)),
            0,
            "events do not keep it"
        );
        assert!(followed.upgrade().is_none());
    }

    #[test]
    fn sweep_keeps_rooms_with_waiters() {
        let hub = Hub::new(8);
        let held = hub.room(&room("held"));
        hub.room(&room("idle"));
        assert_eq!(hub.sweep(Duration::ZERO), 1);
        drop(held);
        assert_eq!(hub.sweep(Duration::ZERO), 0);
    }
}
