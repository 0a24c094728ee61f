//! The JSON answers of the HTTP API (the `status: ok` part; errors come from [`crate::error`]),
//! and the request history answers for `room/enter`.

use serde::{Deserialize, Serialize};

use crate::event::Event;

/// `session/create`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionCreated {
    /// The session token; the client sends it with every call.
    pub session: String,
}

/// An occupant as listed in `room/enter`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Occupant {
    /// Their occupant id.
    pub id: String,
    /// Their nickname.
    pub nickname: String,
}

/// The room part of `room/enter`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoomSnapshot {
    /// The room id.
    pub id: String,
    /// How many are in the room (anonymous observers are not counted).
    pub occupant_count: usize,
    /// Who is in the room, the first [`ENTER_OCCUPANTS`] by occupant id (anonymous observers
    /// are not listed); `room/occupants` pages through the rest.
    pub occupants: Vec<Occupant>,
    /// The last (at most 30) message events before the enter, oldest first.
    pub messages: Vec<Event>,
}

/// `room/enter`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entered {
    /// The ticket for say, set_nickname, exit and observe.
    pub ticket: String,
    /// The caller's occupant id.
    pub occupant_id: String,
    /// The counter of the caller's own enter event (for an anonymous observer, the newest
    /// counter when it entered): observe from it to see everything after.
    pub counter: u64,
    /// The room as it is.
    pub room: RoomSnapshot,
}

/// How many message events `room/enter` returns at most.
pub const ENTER_MESSAGES: usize = 30;

/// Most occupants `room/enter` lists.
pub const ENTER_OCCUPANTS: usize = 100;

/// Occupants `room/occupants` lists by default, and at most.
pub const OCCUPANTS_DEFAULT: usize = 100;
/// See [`OCCUPANTS_DEFAULT`].
pub const OCCUPANTS_MAX: usize = 500;

/// `room/occupants`: a page of a room's occupants, in occupant-id order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OccupantsPage {
    /// The page.
    pub occupants: Vec<Occupant>,
    /// How many are in the room.
    pub occupant_count: usize,
    /// Whether more follow the last on this page.
    pub has_more: bool,
}

/// `room/say` and `room/set_nickname`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stored {
    /// The event as stored.
    pub event: Event,
    /// Its counter.
    pub counter: u64,
}

/// `room/exit`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Exited {
    /// The counter of the exit event.
    pub counter: u64,
}

/// `room/observe`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Observed {
    /// The counter to observe from next.
    pub counter: u64,
    /// The events after the given counter, in order.
    pub events: Vec<Event>,
}

/// Most events in one observe answer.
pub const OBSERVE_MAX_EVENTS: usize = 500;

/// Most bytes of events in one observe answer (at least one event is always sent): 500 long
/// messages would be 4 MB, held in memory until a slow client reads them. The rest come on
/// the next observe, as past the event cap.
pub const OBSERVE_MAX_BYTES: usize = 512 * 1024;

/// `room/get_messages`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Messages {
    /// Events, oldest first.
    pub messages: Vec<Event>,
    /// Whether more lie in the direction paged.
    pub has_more: bool,
}

/// Default and largest `limit` of `room/get_messages`.
pub const GET_MESSAGES_DEFAULT: usize = 50;
/// Largest `limit` of `room/get_messages`.
pub const GET_MESSAGES_MAX: usize = 200;

/// The api's request to history on [`crate::subjects::HISTORY_RECENT`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecentRequest {
    /// The room.
    pub room: String,
    /// Only message events with a counter below this one.
    pub before: u64,
    /// At most this many.
    pub limit: usize,
}

/// History's answer to a [`RecentRequest`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecentReply {
    /// Message events, oldest first.
    pub messages: Vec<Event>,
    /// False when history had not stored everything before `before` in time.
    pub complete: bool,
}
