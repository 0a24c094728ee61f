//! NATS names: the event stream, its per-room subjects, the key-value buckets and the
//! request subject history answers on. Every role derives names from here, never by hand.

use crate::values::RoomId;

/// The JetStream stream holding every room event.
pub const EVENTS_STREAM: &str = "ROOMS";
/// The stream's subjects: one per room.
pub const EVENTS_SUBJECTS: &str = "rooms.*.events";

/// The subject a room's events are published on.
pub fn room_events(room: &RoomId) -> String {
    format!("rooms.{}.events", room.as_str())
}

/// Where the stream republishes each event it stores: the room's live subject, which a comet
/// replica subscribes to while it serves the room. It must not overlap [`EVENTS_SUBJECTS`].
pub const LIVE_SUBJECT_TEMPLATE: &str = "rooms.{{wildcard(1)}}.live";

/// The live subject of a room (see [`LIVE_SUBJECT_TEMPLATE`]).
pub fn room_live(room: &RoomId) -> String {
    format!("rooms.{}.live", room.as_str())
}

/// The room id in an event subject, if the subject is one.
pub fn room_of_subject(subject: &str) -> Option<RoomId> {
    let mut tokens = subject.split('.');
    match (tokens.next(), tokens.next(), tokens.next(), tokens.next()) {
        (Some("rooms"), Some(room), Some("events"), None) => RoomId::parse(room).ok(),
        _ => None,
    }
}

/// Key-value bucket of sessions, keyed by session tag.
pub const SESSIONS_BUCKET: &str = "lingr_sessions";
/// Key-value bucket of room occupants, keyed by [`crate::records::occupant_key`].
pub const OCCUPANTS_BUCKET: &str = "lingr_occupants";
/// Key-value bucket of last-seen times, keyed by occupant id; written by comet and api.
pub const PRESENCE_BUCKET: &str = "lingr_presence";
/// Key-value bucket of say rate-limit token buckets, keyed by session tag.
pub const RATES_BUCKET: &str = "lingr_rates";
/// Key-value bucket of idempotent calls, keyed by session tag and a hash of the id; values
/// live as long as the stream's duplicate window.
pub const IDEMPOTENCY_BUCKET: &str = "lingr_idempotency";
/// Key-value bucket of rooms that exist, keyed by room id.
pub const ROOMS_BUCKET: &str = "lingr_rooms";

/// The durable consumer that history replicas share.
pub const HISTORY_CONSUMER: &str = "history";
/// The request subject on which history answers "the last messages before a counter".
pub const HISTORY_RECENT: &str = "lingr.history.recent";
/// The queue group history replicas answer [`HISTORY_RECENT`] in.
pub const HISTORY_QUEUE: &str = "history";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_subject_round_trips() {
        let room = RoomId::parse("a-b_c").expect("valid");
        assert_eq!(room_of_subject(&room_events(&room)), Some(room.clone()));
        assert_eq!(room_of_subject("rooms.a.b.events"), None);
        assert_eq!(room_of_subject("other.a.events"), None);
        assert_eq!(
            room_of_subject(&room_live(&room)),
            None,
            "live subjects are not stored"
        );
        assert_eq!(
            LIVE_SUBJECT_TEMPLATE.replace("{{wildcard(1)}}", room.as_str()),
            room_live(&room)
        );
    }
}
