//! Room events: what JetStream stores on `rooms.<room>.events` and what observers receive.
//!
//! The api publishes an event without its `counter`; the counter is the JetStream stream
//! sequence the server gives it, and consumers set it before serializing the event once.

use serde::{Deserialize, Serialize};

use crate::values::RoomId;

/// The kind of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    /// Someone said something.
    Message,
    /// Someone entered the room.
    Enter,
    /// Someone left the room.
    Exit,
    /// Someone changed their nickname.
    Nickname,
}

/// Why an occupant left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitReason {
    /// They called `room/exit`.
    Exit,
    /// They neither observed nor called the API for the presence timeout.
    Timeout,
    /// Their session was destroyed.
    SessionDestroyed,
}

/// One room event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The JetStream stream sequence; 0 (and absent from JSON) before it is stored.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub counter: u64,
    /// The kind of event.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// The room it happened in.
    pub room: RoomId,
    /// Who caused it.
    pub occupant_id: String,
    /// Their nickname at the time (the new one, for `nickname` events).
    pub nickname: String,
    /// What was said (`message` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The previous nickname (`nickname` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_nickname: Option<String>,
    /// Why they left (`exit` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<ExitReason>,
    /// When the api accepted it: RFC 3339, UTC, milliseconds.
    pub timestamp: String,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Event {
    /// The event as stored with `counter` set to the stream sequence, serialized once; these
    /// bytes are what every observer and history receive.
    pub fn to_stored_json(&self, counter: u64) -> bytes::Bytes {
        let mut event = self.clone();
        event.counter = counter;
        // Serializing a struct of strings and enums cannot fail.
        serde_json::to_vec(&event).map_or_else(|_| bytes::Bytes::new(), bytes::Bytes::from)
    }
}

/// Now, as the event timestamp format: `2026-11-26T10:00:00.123Z`.
pub fn timestamp_now() -> String {
    format_timestamp(time::OffsetDateTime::now_utc())
}

/// A UTC time in the event timestamp format.
pub fn format_timestamp(at: time::OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.millisecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_json_carries_counter_and_only_fields_of_its_type() {
        let event = Event {
            counter: 0,
            kind: EventType::Message,
            room: RoomId::parse("lobby").expect("valid"),
            occupant_id: "o_1".into(),
            nickname: "alice".into(),
            text: Some("hello".into()),
            prev_nickname: None,
            reason: None,
            timestamp: format_timestamp(time::macros::datetime!(2026-11-26 10:00:00.123 UTC)),
        };
        let published = serde_json::to_string(&event).expect("serializes");
        assert!(!published.contains("counter"));
        let stored = event.to_stored_json(1042);
        let value: serde_json::Value = serde_json::from_slice(&stored).expect("json");
        assert_eq!(value["counter"], 1042);
        assert_eq!(value["type"], "message");
        assert_eq!(value["timestamp"], "2026-11-26T10:00:00.123Z");
        assert!(value.get("reason").is_none());
    }
}
