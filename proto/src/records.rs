//! The records Lingr keeps in NATS key-value buckets. They are a contract between roles (api
//! writes occupants, comet reads them to check tickets), so they live here with the wire types.

use serde::{Deserialize, Serialize};

use crate::values::{Nickname, OccupantId, RoomId};

/// A session, keyed by its tag in [`crate::subjects::SESSIONS_BUCKET`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The nickname given at `session/create`, used when `room/enter` gives none.
    pub nickname: Option<Nickname>,
    /// When it was created (Unix ms).
    pub created_ms: u64,
    /// When an API call last used it (Unix ms); observing counts through presence.
    pub last_used_ms: u64,
    /// Occupant keys ([`occupant_key`]) of the rooms it is in.
    pub occupants: Vec<String>,
}

/// An occupant, keyed by [`occupant_key`] in [`crate::subjects::OCCUPANTS_BUCKET`]. Present
/// exactly while the occupant is in the room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OccupantRecord {
    /// The room.
    pub room: RoomId,
    /// The occupant.
    pub occupant_id: OccupantId,
    /// The tag of the session that entered.
    pub session_tag: String,
    /// The nickname; none for an anonymous observer.
    pub nickname: Option<Nickname>,
    /// When it entered (Unix ms).
    pub entered_ms: u64,
    /// The counter of its stored enter event: none while the enter is being published, and
    /// for anonymous observers. An occupant without one leaves without an exit event, since
    /// nobody saw it enter.
    #[serde(default)]
    pub enter_counter: Option<u64>,
    /// Where the enter's idempotency record lives, when it was entered with an
    /// `idempotent_id`: leaving marks it, so a retry of that enter cannot bring it back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Set before its exit event is published, and the record deleted after: an enter whose
    /// event may come after that exit must not list it (its observer would never see it go).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub leaving: bool,
}

impl OccupantRecord {
    /// Its key in the occupants bucket.
    pub fn key(&self) -> String {
        occupant_key(&self.room, &self.occupant_id)
    }
}

/// The occupants-bucket key of an occupant: `<room>.<occupant id>`, so a room's occupants
/// are one key prefix.
pub fn occupant_key(room: &RoomId, occupant: &OccupantId) -> String {
    format!("{}.{}", room.as_str(), occupant.as_str())
}

/// The key prefix of a room's occupants.
pub fn room_prefix(room: &RoomId) -> String {
    format!("{}.", room.as_str())
}

/// A value of [`crate::subjects::PRESENCE_BUCKET`]: when occupants were last seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PresenceRecord {
    /// Keyed by the occupant's id, written by an api when the occupant calls it: that moment
    /// (Unix ms).
    Occupant(u64),
    /// Keyed by [`presence_batch_key`], rewritten by a comet replica every flush, so presence
    /// costs a few writes per replica however many observe there.
    Batch(PresenceBatch),
}

/// Occupants a comet replica saw observing since its previous flush, or observing still.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceBatch {
    /// When the batch was written (Unix ms): each occupant in it was seen then.
    pub at_ms: u64,
    /// The occupants.
    pub occupants: Vec<OccupantId>,
}

impl PresenceRecord {
    /// When it was written (Unix ms).
    pub fn at_ms(&self) -> u64 {
        match self {
            Self::Occupant(at_ms) | Self::Batch(PresenceBatch { at_ms, .. }) => *at_ms,
        }
    }
}

/// The presence-bucket key of part `part` of comet replica `replica`'s batch:
/// `comet.<replica>.<part>`. Occupant ids (`o_…`) never collide with it.
pub fn presence_batch_key(replica: &str, part: usize) -> String {
    format!("comet.{replica}.{part}")
}
