//! One connection's life and the registry that bounds them all.
//!
//! A connection is *pending* until it sends its first request, *busy* while a request is being
//! answered, and *idle* between requests. Pending and idle connections hold a descriptor while
//! doing nothing for anyone, so they are evictable: past `max_pending` pending connections, or
//! when every one of `max_open` descriptors is taken, the one that has waited longest is
//! closed to make room. A connection counts as pending only once its task has started to
//! listen to it, in its place of acceptance: a herd accepted in a burst has its requests
//! waiting in the sockets, unread until each task runs, and none of it is silent. Busy connections are never evicted; their number is bounded by what
//! the handlers allow (held observes are capped below the descriptor limit).
//!
//! A connection that sends nothing, and one idling between requests, is looked at by the
//! registry's sweeper, not by a timer of its own: pending connections are already in order of
//! acceptance and idle ones in order of idling, so of their deadlines, and one task walking
//! each set in that order wakes only the watchdogs of those past due. A timer per connection,
//! set while it waited for a request, fired once after that request was held (about 12 µs per
//! held observe: 1.2 CPU-seconds for 100,000), and was set again by the next answer: a wake,
//! a timer and its firing for every answer of an observe held longer than a header deadline,
//! which is most of a chat room's.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::metrics::Gauge;

/// Where a connection is in its life, which fixes its deadline.
#[derive(Debug, Clone, Copy)]
pub(super) enum Phase {
    /// Opened; no request yet.
    Opened(Instant),
    /// Between requests.
    Idle(Instant),
    /// The first bytes of a later request arrived at this instant.
    Reading(Instant),
    /// A request is being answered.
    Busy,
    /// Closed to make room for another.
    Evicted,
    /// Closed for good; nothing moves it again.
    Closed,
}

/// Which evictable set a connection is in, and its place there (a ticket, in order of
/// acceptance or of idling).
#[derive(Debug, Clone, Copy)]
enum Slot {
    /// Accepted, not yet listened to: in no set, but keeping its place for when it is.
    Accepted(u64),
    Pending(u64),
    Idle(u64),
}

struct State {
    phase: Phase,
    /// Since when a write has been waiting for the client to read.
    write_blocked: Option<Instant>,
    slot: Option<Slot>,
    /// When the watchdog's timer fires (`None`: it has none).
    armed: Option<Instant>,
}

impl State {
    /// When the connection is to be closed (`None`: it has no deadline while busy).
    fn deadline(&self, deadlines: &Deadlines) -> Option<Instant> {
        let phase = match self.phase {
            Phase::Opened(at) | Phase::Reading(at) => Some(at + deadlines.header_read),
            Phase::Idle(at) => Some(at + deadlines.idle),
            Phase::Busy => None,
            Phase::Evicted | Phase::Closed => Some(Instant::now()),
        };
        let write = self.write_blocked.map(|at| at + deadlines.write);
        match (phase, write) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The deadline the watchdog's own timer holds: a later request's head, a blocked write
    /// and a closing. A silent new connection's and an idle one's are the registry's sweeper's
    /// ([`Registry::sweep`]).
    fn timed_deadline(&self, deadlines: &Deadlines) -> Option<Instant> {
        match (self.phase, self.write_blocked) {
            (Phase::Opened(_) | Phase::Idle(_), None) => None,
            _ => self.deadline(deadlines),
        }
    }

    /// Whether the deadline now comes before the watchdog's timer would fire. A deadline that
    /// moved later needs no wake: the timer fires early, and the watchdog looks again.
    fn due_before_armed(&self, deadlines: &Deadlines) -> bool {
        match (self.timed_deadline(deadlines), self.armed) {
            (Some(due), Some(armed)) => due < armed,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }
}

/// One connection's state, shared by its socket wrapper, its requests and its watchdog.
///
/// Every request moves the deadline two or three times (read, busy, idle). Waking the
/// watchdog for each move, and setting its timer again, cost a fan-out several polls of the
/// connection and timer registrations per answer; a move wakes it only when the deadline
/// comes before its timer. While the connection is new and silent, or idle, the registry's
/// sweeper wakes it instead ([`Registry::sweep`]); a request whose head arrives whole, answered
/// at once or held, wakes it not at all.
pub(super) struct Connection {
    state: Mutex<State>,
    changed: Notify,
    /// An idle connection began to read a request's head since its task last waited.
    head_begun: AtomicBool,
    deadlines: Deadlines,
}

/// The deadlines a connection is held to.
#[derive(Debug, Clone, Copy)]
pub(super) struct Deadlines {
    pub header_read: Duration,
    pub idle: Duration,
    pub write: Duration,
}

impl Connection {
    fn new(deadlines: Deadlines) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                phase: Phase::Opened(Instant::now()),
                write_blocked: None,
                slot: None,
                armed: None,
            }),
            changed: Notify::new(),
            head_begun: AtomicBool::new(false),
            deadlines,
        })
    }

    pub(super) fn phase(&self) -> Phase {
        self.state.lock().map_or(Phase::Evicted, |s| s.phase)
    }

    /// The deadline the registry's sweeper holds: a silent new connection's request head, an
    /// idle one's close (`None`: neither, or its state cannot be read).
    fn swept_due(&self) -> Option<Instant> {
        match self.state.lock().map(|s| s.phase) {
            Ok(Phase::Opened(at)) => Some(at + self.deadlines.header_read),
            Ok(Phase::Idle(at)) => Some(at + self.deadlines.idle),
            _ => None,
        }
    }

    /// Wakes the watchdog: when the deadline comes before its timer, or when the sweeper
    /// finds a new or idle connection's deadline passed.
    pub(super) fn changed(&self) -> &Notify {
        &self.changed
    }

    /// Applies `change`, which says whether it moved what the deadline depends on, and wakes
    /// the watchdog if the deadline now comes before its timer. A change that moved nothing
    /// wakes nothing: every write that goes out says so, also while a head is being read,
    /// whose timing is [`Connection::on_wait`]'s to start.
    fn update(&self, change: impl FnOnce(&mut State) -> bool) {
        let wake = self
            .state
            .lock()
            .is_ok_and(|mut state| change(&mut state) && state.due_before_armed(&self.deadlines));
        if wake {
            self.changed.notify_one();
        }
    }

    /// Bytes arrived: an idle connection starts reading a request's head. This wakes nothing:
    /// a head mostly arrives whole, and its request makes the connection busy within the same
    /// poll of its task, so a wake here would be one per request. A head still unfinished
    /// when the task has to wait wakes the watchdog then ([`Connection::on_wait`]).
    pub(super) fn on_read(&self) {
        if let Ok(mut state) = self.state.lock() {
            if matches!(state.phase, Phase::Idle(_)) {
                state.phase = Phase::Reading(Instant::now());
                self.head_begun.store(true, Ordering::Relaxed);
            }
        }
    }

    /// The connection's task has done what it can until the client sends more: a head begun
    /// since it last waited and not finished is the watchdog's to time. Not at a read that
    /// has to wait: hyper reads once more after a whole head, before it calls the handler.
    pub(super) fn on_wait(&self) {
        if self.head_begun.swap(false, Ordering::Relaxed) {
            self.update(|_| true);
        }
    }

    /// A write could not go out (`blocked`) or went out: a client that stops reading is
    /// dropped after the write deadline instead of pinning the answer in memory.
    pub(super) fn on_write(&self, blocked: bool) {
        self.update(|state| match (blocked, state.write_blocked) {
            (true, None) => {
                state.write_blocked = Some(Instant::now());
                true
            }
            (false, Some(_)) => {
                state.write_blocked = None;
                true
            }
            _ => false,
        });
    }

    /// What the watchdog must know when it looks: the connection's deadline, and when its
    /// timer is to fire next.
    pub(super) fn arm(&self) -> Armed {
        let now = Instant::now();
        let Ok(mut state) = self.state.lock() else {
            return Armed {
                deadline: Some(now),
                timer: Some(now),
            };
        };
        let deadline = state.deadline(&self.deadlines);
        state.armed = match state.timed_deadline(&self.deadlines) {
            // No further ahead than a request's head is given, so that a deadline moved
            // later (a blocked write that went out) is looked at again within that.
            Some(due) => Some(due.min(now + self.deadlines.header_read.max(MIN_LOOK_AHEAD))),
            // Busy, idle or new and silent: a timer still to fire is left to fire (then the
            // watchdog looks and rests); cancelling it would cost a wake.
            None => state.armed.filter(|at| *at > now),
        };
        Armed {
            deadline,
            timer: state.armed,
        }
    }
}

/// The shortest a watchdog's timer, or the sweeper with nothing due, is set ahead, so that a
/// tiny header deadline cannot have either spin.
const MIN_LOOK_AHEAD: Duration = Duration::from_secs(1);

/// What the watchdog learns when it looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Armed {
    /// When the connection is to be closed (`None`: it has no deadline while busy).
    pub deadline: Option<Instant>,
    /// When the watchdog is to look again (`None`: only when woken).
    pub timer: Option<Instant>,
}

/// What admitting a connection did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Admission {
    /// Evictable connections closed to make room.
    pub evicted: usize,
}

/// The gauges that show how many connections are open, pending and idle; set by the registry
/// under its own lock, so keeping them costs no second lock per request.
#[derive(Clone, Default)]
pub(super) struct Gauges {
    pub open: Gauge,
    pub pending: Gauge,
    pub idle: Gauge,
}

/// Every open connection of one listener, with the evictable ones in order of waiting.
pub(super) struct Registry {
    maps: Mutex<Maps>,
    /// Wakes [`Registry::sweep_while_held`] for a pending or idle connection due before it
    /// would look.
    sweep_wanted: Notify,
    deadlines: Deadlines,
    max_pending: usize,
    max_open: usize,
    gauges: Gauges,
}

#[derive(Default)]
struct Maps {
    next_ticket: u64,
    open: usize,
    pending: BTreeMap<u64, Arc<Connection>>,
    idle: BTreeMap<u64, Arc<Connection>>,
    /// The sweeper has woken the watchdogs of the pending connections up to this ticket, each
    /// past its header deadline.
    swept: u64,
    /// The same for the idle connections and their idle deadline. An idle connection that
    /// has started reading a request's head is woken when the sweep reaches it too, and its
    /// watchdog times that head.
    swept_idle: u64,
    /// When the sweeper looks next (`None`: it has not looked yet).
    sweep_at: Option<Instant>,
}

impl Maps {
    fn ticket(&mut self) -> u64 {
        self.next_ticket += 1;
        self.next_ticket
    }

    /// Makes sure the sweeper looks by `due`, waking it if it would look later.
    fn sweep_by(&mut self, due: Instant, sweep_wanted: &Notify) {
        if self.sweep_at.is_none_or(|at| due < at) {
            self.sweep_at = Some(due);
            sweep_wanted.notify_one();
        }
    }

    fn take_slot(&mut self, connection: &Connection) {
        let slot = connection.state.lock().ok().and_then(|mut s| s.slot.take());
        match slot {
            Some(Slot::Pending(ticket)) => {
                self.pending.remove(&ticket);
            }
            Some(Slot::Idle(ticket)) => {
                self.idle.remove(&ticket);
            }
            Some(Slot::Accepted(_)) | None => {}
        }
    }

    /// Closes the longest-waiting connection of `pending` (or, with `either`, of pending and
    /// idle together); false when there is none.
    fn evict_oldest(&mut self, either: bool) -> bool {
        let oldest_pending = self.pending.first_key_value().map(|(t, _)| *t);
        let oldest_idle = self
            .idle
            .first_key_value()
            .map(|(t, _)| *t)
            .filter(|_| either);
        let victim = match (oldest_pending, oldest_idle) {
            (Some(p), Some(i)) if i < p => self.idle.remove(&i),
            (Some(p), _) => self.pending.remove(&p),
            (None, Some(i)) => self.idle.remove(&i),
            (None, None) => None,
        };
        match victim {
            Some(connection) => {
                connection.update(|state| {
                    state.slot = None;
                    state.phase = Phase::Evicted;
                    true
                });
                true
            }
            None => false,
        }
    }
}

impl Registry {
    /// A registry allowing `max_pending` connections without a request and `max_open` in all,
    /// each held to `deadlines`.
    pub(super) fn new(
        max_pending: usize,
        max_open: usize,
        deadlines: Deadlines,
        gauges: Gauges,
    ) -> Self {
        Self {
            maps: Mutex::new(Maps::default()),
            sweep_wanted: Notify::new(),
            deadlines,
            max_pending: max_pending.max(1),
            max_open: max_open.max(1),
            gauges,
        }
    }

    fn show(&self, maps: &Maps) {
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.gauges.open.set(gauge(maps.open));
        self.gauges.pending.set(gauge(maps.pending.len()));
        self.gauges.idle.set(gauge(maps.idle.len()));
    }

    /// Registers a new connection, closing the longest-waiting evictable ones to make room;
    /// `None` when every open connection is busy and there is no room at all.
    pub(super) fn open(&self) -> Option<(Arc<Connection>, Admission)> {
        let mut maps = self.maps.lock().ok()?;
        let mut admission = Admission::default();
        if maps.open >= self.max_open {
            if !maps.evict_oldest(true) {
                return None;
            }
            admission.evicted += 1;
            // The evicted one still counts until its task closes it.
        }
        let connection = Connection::new(self.deadlines);
        let ticket = maps.ticket();
        if let Ok(mut state) = connection.state.lock() {
            state.slot = Some(Slot::Accepted(ticket));
        }
        maps.open += 1;
        self.show(&maps);
        Some((connection, admission))
    }

    /// The connection's task starts to listen to it: it is pending from now, in its place of
    /// acceptance, and past `max_pending` the earliest accepted pending ones are closed. Says
    /// how many.
    pub(super) fn listen(&self, connection: &Arc<Connection>) -> usize {
        let Ok(mut maps) = self.maps.lock() else {
            return 0;
        };
        let accepted = connection
            .state
            .lock()
            .ok()
            .and_then(|state| match state.slot {
                Some(Slot::Accepted(ticket)) if matches!(state.phase, Phase::Opened(_)) => {
                    Some(ticket)
                }
                _ => None,
            });
        let Some(ticket) = accepted else {
            return 0;
        };
        maps.pending.insert(ticket, Arc::clone(connection));
        if let Ok(mut state) = connection.state.lock() {
            state.slot = Some(Slot::Pending(ticket));
        }
        // A task that started after the sweeper passed its place needs no sweep: its header
        // deadline has passed too (they follow tickets), and its watchdog's first look, after
        // the task has read whatever request is waiting, closes it.
        if ticket > maps.swept {
            if let Some(due) = connection.swept_due() {
                maps.sweep_by(due, &self.sweep_wanted);
            }
        }
        let mut evicted = 0;
        while maps.pending.len() > self.max_pending && maps.evict_oldest(false) {
            evicted += 1;
        }
        self.show(&maps);
        evicted
    }

    /// Wakes the watchdog of each pending connection whose header deadline has passed, and of
    /// each idle one whose idle deadline has, in order of acceptance or of idling, which is
    /// the order of their deadlines; says when to look next: when the next one falls due, or
    /// within a header deadline. Each is woken once; its watchdog closes it, unless a request
    /// was read first.
    pub(super) fn sweep(&self) -> Instant {
        let (woken, next) = {
            let Ok(mut maps) = self.maps.lock() else {
                return Instant::now() + self.look_ahead();
            };
            let Maps {
                pending,
                idle,
                swept,
                swept_idle,
                sweep_at,
                ..
            } = &mut *maps;
            let now = Instant::now();
            let mut woken = Vec::new();
            let pending_next = sweep_set(pending, swept, now, &mut woken);
            let idle_next = sweep_set(idle, swept_idle, now, &mut woken);
            let next = pending_next
                .into_iter()
                .chain(idle_next)
                .fold(now + self.look_ahead(), Instant::min);
            *sweep_at = Some(next);
            (woken, next)
        };
        // Woken outside the lock: a burst of connections expiring together is as many wakes
        // of other threads, which the acceptor and every request would wait behind.
        for connection in woken {
            connection.changed.notify_one();
        }
        next
    }

    /// How far ahead the sweeper looks at most: with nothing due it still looks, to notice it
    /// is the last holder of the registry.
    fn look_ahead(&self) -> Duration {
        self.deadlines.header_read.max(MIN_LOOK_AHEAD)
    }

    /// Sweeps ([`Registry::sweep`]) whenever the next connection falls due, or one listened
    /// to or idling comes before it, for as long as anything else holds the registry: a
    /// server whose future was dropped leaves its connections running, still held to their
    /// deadlines.
    pub(super) async fn sweep_while_held(registry: Weak<Self>) {
        while let Some(registry) = registry.upgrade() {
            let at = registry.sweep();
            // A connection due before `at` from here on wakes it with a stored permit.
            let woken = registry.sweep_wanted.notified();
            tokio::select! {
                () = woken => {}
                () = tokio::time::sleep_until(at) => {}
            }
        }
    }

    /// A request starts: the connection is busy and cannot be evicted.
    pub(super) fn busy(&self, connection: &Connection) {
        if let Ok(mut maps) = self.maps.lock() {
            maps.take_slot(connection);
            self.show(&maps);
        }
        connection.update(|state| {
            // Evicted an instant before its request came: it closes all the same.
            if !matches!(state.phase, Phase::Evicted | Phase::Closed) {
                state.phase = Phase::Busy;
            }
            true
        });
    }

    /// A request was answered (or dropped): the connection idles and can be evicted.
    pub(super) fn idle(&self, connection: &Arc<Connection>) {
        if let Ok(mut maps) = self.maps.lock() {
            maps.take_slot(connection);
            if matches!(connection.phase(), Phase::Evicted | Phase::Closed) {
                return;
            }
            let ticket = maps.ticket();
            maps.idle.insert(ticket, Arc::clone(connection));
            // Taken under the registry's lock, as the ticket is: the idle set's order is then
            // the order of its deadlines.
            let since = Instant::now();
            connection.update(|state| {
                state.slot = Some(Slot::Idle(ticket));
                state.phase = Phase::Idle(since);
                true
            });
            maps.sweep_by(since + self.deadlines.idle, &self.sweep_wanted);
            self.show(&maps);
        }
    }

    /// The connection closed; it is never counted again.
    pub(super) fn close(&self, connection: &Connection) {
        if let Ok(mut maps) = self.maps.lock() {
            maps.take_slot(connection);
            connection.update(|state| {
                state.phase = Phase::Closed;
                true
            });
            maps.open = maps.open.saturating_sub(1);
            self.show(&maps);
        }
    }
}

/// Walks `set` (pending or idle connections) from the ticket after `swept`, taking into
/// `woken` each connection whose swept deadline has passed, or cannot be told (an idle one
/// reading a head: its watchdog times that); stops at the first not yet due and says when
/// that one is.
fn sweep_set(
    set: &BTreeMap<u64, Arc<Connection>>,
    swept: &mut u64,
    now: Instant,
    woken: &mut Vec<Arc<Connection>>,
) -> Option<Instant> {
    for (ticket, connection) in set.range(swept.saturating_add(1)..) {
        match connection.swept_due() {
            Some(at) if at > now => return Some(at),
            _ => {
                woken.push(Arc::clone(connection));
                *swept = *ticket;
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEADLINES: Deadlines = Deadlines {
        header_read: Duration::from_secs(10),
        idle: Duration::from_secs(75),
        write: Duration::from_secs(30),
    };

    fn evicted(connection: &Connection) -> bool {
        matches!(connection.phase(), Phase::Evicted)
    }

    /// Opens a connection and starts listening to it, as its task does; says how many
    /// pending connections that closed.
    fn open_and_listen(registry: &Registry) -> (Arc<Connection>, usize) {
        let (connection, admission) = registry.open().expect("room");
        let evicted = registry.listen(&connection);
        (connection, admission.evicted + evicted)
    }

    #[test]
    fn the_longest_waiting_pending_connection_is_evicted_past_the_pending_cap() {
        let registry = Registry::new(2, 100, DEADLINES, Gauges::default());
        let (first, _) = open_and_listen(&registry);
        let (second, _) = open_and_listen(&registry);
        let (third, evictions) = open_and_listen(&registry);
        assert_eq!(evictions, 1);
        assert!(evicted(&first));
        assert!(!evicted(&second) && !evicted(&third));
        registry.busy(&second);
        let (_fourth, evictions) = open_and_listen(&registry);
        assert_eq!(
            evictions, 0,
            "a busy connection no longer counts as pending"
        );
    }

    /// A burst of accepted connections past the pending cap: none is closed before its task
    /// has listened to it, and those whose request was waiting go busy, never pending.
    #[test]
    fn connections_not_yet_listened_to_are_not_pending() {
        let gauges = Gauges::default();
        let registry = Registry::new(2, 100, DEADLINES, gauges.clone());
        let burst: Vec<Arc<Connection>> =
            (0..5).map(|_| registry.open().expect("room").0).collect();
        assert_eq!((gauges.open.get(), gauges.pending.get()), (5, 0));
        for connection in &burst {
            assert_eq!(registry.listen(connection), 0);
            registry.busy(connection);
        }
        assert!(burst.iter().all(|c| !evicted(c)));
        let (_silent, _) = open_and_listen(&registry);
        let (_also_silent, _) = open_and_listen(&registry);
        let (_third_silent, evictions) = open_and_listen(&registry);
        assert_eq!(evictions, 1, "silent ones listened to still count");
    }

    /// Tasks start in any order; the one accepted first is still the first to go.
    #[test]
    fn pending_connections_go_in_order_of_acceptance() {
        let registry = Registry::new(1, 100, DEADLINES, Gauges::default());
        let (earlier, _) = registry.open().expect("room");
        let (later, _) = registry.open().expect("room");
        assert_eq!(registry.listen(&later), 0);
        assert_eq!(registry.listen(&earlier), 1);
        assert!(evicted(&earlier) && !evicted(&later));
    }

    #[test]
    fn when_every_descriptor_is_taken_the_longest_idle_or_pending_one_goes() {
        let registry = Registry::new(10, 3, DEADLINES, Gauges::default());
        let (idle, _) = open_and_listen(&registry);
        registry.busy(&idle);
        let (busy, _) = open_and_listen(&registry);
        registry.busy(&busy);
        let (pending, _) = open_and_listen(&registry);
        registry.idle(&idle);
        // Full: the pending one waited longer than the idle one (which idles since now).
        let (_new, admission) = registry.open().expect("room");
        assert_eq!(admission.evicted, 1);
        assert!(evicted(&pending) && !evicted(&idle) && !evicted(&busy));
        registry.close(&pending);
        let (_newer, admission) = registry.open().expect("room");
        assert_eq!(admission.evicted, 1);
        assert!(evicted(&idle));
    }

    #[test]
    fn with_every_connection_busy_a_new_one_is_refused() {
        let registry = Registry::new(10, 1, DEADLINES, Gauges::default());
        let (only, _) = registry.open().expect("room");
        registry.busy(&only);
        assert!(registry.open().is_none());
        registry.idle(&only);
        assert!(registry.open().is_some());
        assert!(evicted(&only));
    }

    #[test]
    fn a_closed_connection_never_idles_again() {
        let gauges = Gauges::default();
        let registry = Registry::new(10, 10, DEADLINES, gauges.clone());
        let (connection, _) = open_and_listen(&registry);
        assert_eq!((gauges.open.get(), gauges.pending.get()), (1, 1));
        registry.busy(&connection);
        registry.close(&connection);
        // A request dropped after its connection closed must not bring it back.
        registry.idle(&connection);
        let counts = (gauges.open.get(), gauges.pending.get(), gauges.idle.get());
        assert_eq!(counts, (0, 0, 0));
    }

    /// Whether the watchdog has been woken since it last looked (a stored permit).
    fn woken(connection: &Connection) -> bool {
        futures::FutureExt::now_or_never(connection.changed().notified()).is_some()
    }

    #[tokio::test(start_paused = true)]
    async fn the_watchdog_is_woken_only_when_the_deadline_comes_before_its_timer() {
        let registry = Registry::new(10, 10, DEADLINES, Gauges::default());
        let (connection, _) = open_and_listen(&registry);
        assert!(
            !woken(&connection),
            "a new connection's deadline is the sweeper's"
        );
        let opened = Instant::now();
        assert_eq!(
            connection.arm(),
            Armed {
                deadline: Some(opened + DEADLINES.header_read),
                timer: None
            }
        );
        registry.busy(&connection);
        assert!(!woken(&connection), "held: no deadline, no timer");
        registry.idle(&connection);
        assert!(
            !woken(&connection),
            "answered: the idle deadline is the sweeper's too"
        );
        assert_eq!(
            connection.arm(),
            Armed {
                deadline: Some(opened + DEADLINES.idle),
                timer: None
            }
        );
        tokio::time::advance(Duration::from_secs(3)).await;
        connection.on_read();
        connection.on_write(false);
        assert!(
            !woken(&connection),
            "the head may be whole, and a write that went out moves nothing"
        );
        connection.on_wait();
        assert!(
            woken(&connection),
            "a head unfinished when the task waits is the watchdog's"
        );
        let head = Instant::now() + DEADLINES.header_read;
        assert_eq!(
            connection.arm(),
            Armed {
                deadline: Some(head),
                timer: Some(head)
            }
        );
        registry.busy(&connection);
        assert_eq!(
            connection.arm(),
            Armed {
                deadline: None,
                timer: Some(head)
            },
            "a busy connection's timer is left to fire"
        );
        tokio::time::advance(DEADLINES.header_read).await;
        assert_eq!(connection.arm().timer, None, "then its watchdog rests");
        connection.on_write(true);
        assert!(
            woken(&connection),
            "a blocked write of a busy one has a deadline now"
        );
        assert_eq!(
            connection.arm().deadline,
            Some(Instant::now() + DEADLINES.write)
        );
        connection.on_write(false);
        registry.idle(&connection);
        assert!(!woken(&connection));
        let full = Registry::new(1, 10, DEADLINES, Gauges::default());
        let (first, _) = open_and_listen(&full);
        first.arm();
        let _second = open_and_listen(&full);
        assert!(woken(&first), "an evicted connection closes at once");
        assert_eq!(
            first.arm().deadline.map(|due| due <= Instant::now()),
            Some(true)
        );
    }

    /// The common request, in the order its task sees it: its head arrives whole, it is held
    /// (the task waits), answered, and the task waits for the next. None of that wakes the
    /// watchdog or sets its timer.
    #[tokio::test(start_paused = true)]
    async fn a_request_read_whole_and_answered_wakes_nothing() {
        let registry = Registry::new(10, 10, DEADLINES, Gauges::default());
        let (connection, _) = open_and_listen(&registry);
        registry.busy(&connection);
        registry.idle(&connection);
        connection.on_wait();
        for _ in 0..3 {
            tokio::time::advance(Duration::from_secs(20)).await;
            connection.on_read();
            registry.busy(&connection);
            connection.on_wait();
            tokio::time::advance(Duration::from_secs(30)).await;
            registry.idle(&connection);
            connection.on_wait();
        }
        assert!(!woken(&connection));
        assert_eq!(connection.arm().timer, None);
    }

    /// Silent connections are woken once each, in order of their deadlines; one whose
    /// request came is not, and its watchdog has no timer to fire while the request is held.
    #[tokio::test(start_paused = true)]
    async fn the_sweep_wakes_each_silent_connection_once_when_its_deadline_passes() {
        let registry = Registry::new(10, 10, DEADLINES, Gauges::default());
        let (first, _) = open_and_listen(&registry);
        let first_due = Instant::now() + DEADLINES.header_read;
        tokio::time::advance(Duration::from_secs(4)).await;
        let (second, _) = open_and_listen(&registry);
        let second_due = Instant::now() + DEADLINES.header_read;
        let (held, _) = open_and_listen(&registry);
        registry.busy(&held);
        assert_eq!(registry.sweep(), first_due);
        assert!(!woken(&first) && !woken(&second));
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(registry.sweep(), second_due);
        assert!(woken(&first) && !woken(&second));
        assert_eq!(registry.sweep(), second_due);
        assert!(!woken(&first), "woken once");
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(
            registry.sweep(),
            Instant::now() + DEADLINES.header_read,
            "the held one is not pending: the sweeper only looks again a while later"
        );
        assert!(woken(&second) && !woken(&held));
        assert_eq!(
            held.arm(),
            Armed {
                deadline: None,
                timer: None
            }
        );
    }

    /// Idle connections are woken once each at their idle deadline, in order of idling; one
    /// whose next request came is not, and one whose next head is partly read is woken with
    /// the rest (its watchdog then times that head).
    #[tokio::test(start_paused = true)]
    async fn the_sweep_wakes_each_idle_connection_once_at_its_idle_deadline() {
        let registry = Registry::new(10, 10, DEADLINES, Gauges::default());
        let answered = |connection: &Arc<Connection>| {
            registry.busy(connection);
            registry.idle(connection);
        };
        let (first, _) = open_and_listen(&registry);
        let (reading, _) = open_and_listen(&registry);
        let (asked_again, _) = open_and_listen(&registry);
        answered(&first);
        let first_due = Instant::now() + DEADLINES.idle;
        answered(&reading);
        answered(&asked_again);
        tokio::time::advance(Duration::from_secs(5)).await;
        let (second, _) = open_and_listen(&registry);
        answered(&second);
        let second_due = Instant::now() + DEADLINES.idle;
        reading.on_read();
        registry.busy(&asked_again);
        tokio::time::advance(first_due - Instant::now() - Duration::from_millis(1)).await;
        registry.sweep();
        assert!(!woken(&first) && !woken(&reading));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(registry.sweep(), second_due);
        assert!(woken(&first) && woken(&reading));
        assert!(!woken(&asked_again) && !woken(&second));
        assert_eq!(first.arm().deadline, Some(first_due));
        assert_eq!(registry.sweep(), second_due);
        assert!(!woken(&first), "woken once");
        tokio::time::advance(Duration::from_secs(5)).await;
        registry.sweep();
        assert!(woken(&second));
    }

    /// A task that starts after the sweep passed its connection's place: listening does not
    /// restart its header deadline, which has passed, so its watchdog's first look closes it
    /// (after the task has read what waits) without the sweeper.
    #[tokio::test(start_paused = true)]
    async fn listening_late_does_not_extend_the_header_deadline() {
        let registry = Registry::new(10, 10, DEADLINES, Gauges::default());
        let (late, _) = registry.open().expect("room");
        let (_prompt, _) = open_and_listen(&registry);
        tokio::time::advance(DEADLINES.header_read).await;
        registry.sweep();
        assert_eq!(registry.listen(&late), 0);
        assert_eq!(late.arm().deadline, Some(Instant::now()));
    }

    /// A write blocked before any request (an error answered to a bad head) is the watchdog's
    /// to time, with the header deadline.
    #[tokio::test(start_paused = true)]
    async fn a_new_connection_with_a_blocked_write_has_a_timer() {
        let registry = Registry::new(10, 10, DEADLINES, Gauges::default());
        let (connection, _) = open_and_listen(&registry);
        connection.on_write(true);
        assert!(woken(&connection));
        let head = Instant::now() + DEADLINES.header_read;
        assert_eq!(connection.arm().timer, Some(head));
    }

    /// Runs the sweeper for `registry` as the server does.
    fn spawn_sweeper(registry: &Arc<Registry>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(Registry::sweep_while_held(Arc::downgrade(registry)))
    }

    /// Sleeps until just before `due` from now, then just after it, asserting that the
    /// connection's watchdog is woken only by then.
    async fn woken_at(connection: &Connection, due: Duration) {
        tokio::time::sleep(due - Duration::from_millis(1)).await;
        assert!(!woken(connection), "woken before its deadline");
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert!(woken(connection), "not woken at its deadline");
    }

    /// The sweeper wakes a silent connection's watchdog at its deadline, not before.
    #[tokio::test(start_paused = true)]
    async fn the_sweeper_wakes_a_silent_connection_at_its_deadline() {
        let registry = Arc::new(Registry::new(10, 10, DEADLINES, Gauges::default()));
        let _sweeper = spawn_sweeper(&registry);
        tokio::time::sleep(DEADLINES.idle).await;
        let (silent, _) = open_and_listen(&registry);
        woken_at(&silent, DEADLINES.header_read).await;
    }

    /// A connection accepted earlier but listened to later is due before the one the sweeper
    /// sleeps for: it wakes the sweeper, which wakes it at its own deadline. (With nothing
    /// pending the sweeper looks every header deadline anyway; the steps avoid those looks.)
    #[tokio::test(start_paused = true)]
    async fn a_connection_due_before_the_sweepers_next_look_wakes_it() {
        let registry = Arc::new(Registry::new(10, 10, DEADLINES, Gauges::default()));
        let _sweeper = spawn_sweeper(&registry);
        let ms = Duration::from_millis;
        tokio::time::sleep(ms(9_500)).await;
        let (earlier, _) = registry.open().expect("room");
        tokio::time::sleep(ms(100)).await;
        let (later, _) = open_and_listen(&registry);
        // After the sweeper's look at 10 s, which left it asleep until `later` is due.
        tokio::time::sleep(ms(900)).await;
        assert_eq!(registry.listen(&earlier), 0);
        tokio::time::sleep(ms(9_050)).await;
        assert!(woken(&earlier) && !woken(&later));
        tokio::time::sleep(ms(100)).await;
        assert!(woken(&later));
    }

    /// An idle connection due before the sweeper's next look (an idle deadline shorter than a
    /// header deadline) wakes the sweeper, which wakes it at its deadline.
    #[tokio::test(start_paused = true)]
    async fn the_sweeper_wakes_an_idle_connection_at_its_idle_deadline() {
        let deadlines = Deadlines {
            idle: Duration::from_secs(2),
            ..DEADLINES
        };
        let registry = Arc::new(Registry::new(10, 10, deadlines, Gauges::default()));
        let _sweeper = spawn_sweeper(&registry);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (connection, _) = open_and_listen(&registry);
        registry.busy(&connection);
        registry.idle(&connection);
        woken_at(&connection, deadlines.idle).await;
    }

    /// A server whose future was dropped leaves the sweeper to its connections; it ends with
    /// the last of them.
    #[tokio::test(start_paused = true)]
    async fn the_sweeper_ends_with_the_registry() {
        let registry = Arc::new(Registry::new(10, 10, DEADLINES, Gauges::default()));
        let sweeper = spawn_sweeper(&registry);
        let (connection, _) = open_and_listen(&registry);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!sweeper.is_finished());
        drop(registry);
        tokio::time::sleep(DEADLINES.header_read * 3).await;
        assert!(sweeper.is_finished());
        drop(connection);
    }

    #[test]
    fn a_blocked_write_sets_a_deadline_even_while_busy() {
        let registry = Registry::new(10, 10, DEADLINES, Gauges::default());
        let (connection, _) = registry.open().expect("room");
        registry.busy(&connection);
        assert_eq!(connection.arm().deadline, None);
        connection.on_write(true);
        assert!(connection.arm().deadline.is_some());
        connection.on_write(false);
        assert_eq!(connection.arm().deadline, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_tiny_header_deadline_cannot_make_the_watchdog_or_the_sweeper_spin() {
        let deadlines = Deadlines {
            header_read: Duration::ZERO,
            ..DEADLINES
        };
        let registry = Registry::new(10, 10, deadlines, Gauges::default());
        let (connection, _) = open_and_listen(&registry);
        registry.busy(&connection);
        connection.on_write(true);
        let looked = Instant::now();
        assert!(connection.arm().timer >= Some(looked + MIN_LOOK_AHEAD));
        assert!(registry.sweep() >= looked + MIN_LOOK_AHEAD);
    }
}
