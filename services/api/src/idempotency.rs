//! Idempotent retries of `room/enter` and `room/say`.
//!
//! An `idempotent_id` names one call of a session for the idempotency window (two minutes, the
//! event stream's duplicate window). The call records, in the `lingr_idempotency` bucket, a
//! fingerprint of what it asked and what came of it. A retry reads that record before it takes
//! a rate token and gets the first answer again; a call reusing the id for something else (other
//! parameters, another room) is refused with 409 `idempotency_conflict`, as is a retry of an
//! enter whose occupant has since left, which would otherwise come back as a ghost.
//! JetStream's duplicate detection (`Nats-Msg-Id`) stays the last guard for retries that race.

use lingr_platform::kv::{self, Decision};
use lingr_platform::ApiError;
use lingr_proto::records::occupant_key;
use lingr_proto::{ErrorCode, Event, IdempotentId, OccupantId, RoomId};
use serde::{Deserialize, Serialize};

use crate::state::ApiState;

/// What an earlier call with an id asked (its fingerprint) and what came of it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// A hash of the call's verb and parameters ([`Call::fingerprint`]).
    pub fingerprint: String,
    /// How far it got.
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// How far a call with an idempotency id got.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// A say, stored as this event.
    Said {
        /// The stored event.
        event: Event,
    },
    /// An enter that chose this occupant and has not been answered yet.
    Entering {
        /// The occupant it enters as.
        occupant_id: OccupantId,
    },
    /// An enter answered with this occupant and the counter of its enter event.
    Entered {
        /// The occupant.
        occupant_id: OccupantId,
        /// The counter it was answered with.
        counter: u64,
    },
    /// An enter whose occupant has left (exit, timeout, destroyed session).
    Left {
        /// The occupant.
        occupant_id: OccupantId,
    },
}

/// One idempotent call: where its record lives and what it asks.
#[derive(Debug, Clone)]
pub struct Call {
    key: String,
    fingerprint: String,
}

impl Call {
    /// The call of session `session_tag` named `id`, asking `parts` (the verb and its
    /// parameters, in a fixed order).
    pub fn new(session_tag: &str, id: &IdempotentId, parts: &[&str]) -> Self {
        // Ids are any visible ASCII, which NATS keys do not allow: name the record by a hash.
        let id_hash = sha256_hex(id.as_str().as_bytes());
        Self {
            key: format!("{session_tag}.{}", &id_hash[..32]),
            fingerprint: sha256_hex(parts.join("\0").as_bytes()),
        }
    }

    /// Where its record lives in the idempotency bucket (kept on the occupant it enters as).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The fingerprint of what it asks.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The `Nats-Msg-Id` of the event this call publishes.
    pub fn message_id(&self, verb: &str) -> String {
        format!("{verb}:{}", self.key)
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    lingr_proto::values::hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

/// 409: the id names a different call.
pub fn conflict() -> ApiError {
    ApiError::new(
        ErrorCode::IdempotencyConflict,
        "this idempotent_id was already used for a different call",
    )
}

/// 409: the id belongs to an enter whose occupant has left.
pub fn ended() -> ApiError {
    ApiError::new(
        ErrorCode::IdempotencyConflict,
        "this idempotent_id belongs to an enter that has ended; enter with a new one",
    )
}

async fn earlier(state: &ApiState, call: &Call) -> Result<Option<Outcome>, ApiError> {
    let read = kv::read::<Record>(&state.idempotency, &call.key).await?;
    match read.value {
        None => Ok(None),
        Some(record) if record.fingerprint == call.fingerprint => Ok(Some(record.outcome)),
        Some(_) => Err(conflict()),
    }
}

/// The event an earlier say with this call's id stored, if there was one.
///
/// # Errors
/// 409 `idempotency_conflict` when the id named something else; `unavailable`.
pub async fn replay_say(state: &ApiState, call: &Call) -> Result<Option<Event>, ApiError> {
    match earlier(state, call).await? {
        None => Ok(None),
        Some(Outcome::Said { event }) => Ok(Some(event)),
        Some(_) => Err(conflict()),
    }
}

/// Records the event a say stored, so a retry is answered without spending a token. Best
/// effort: without the record, JetStream's duplicate detection still stores the say once.
pub async fn remember_say(state: &ApiState, call: &Call, event: &Event) {
    let record = Record {
        fingerprint: call.fingerprint.clone(),
        outcome: Outcome::Said {
            event: event.clone(),
        },
    };
    let written = kv::update::<Record, _>(&state.idempotency, &call.key, |current| match current {
        None => Decision::Write(record.clone()),
        Some(_) => Decision::Keep,
    })
    .await;
    if let Err(err) = written {
        tracing::warn!(error = %err, "a say's idempotency record was not written; a retry will spend a token");
    }
}

/// What an enter with an id should do.
#[derive(Debug)]
pub enum EnterClaim {
    /// Nothing came before: enter as this new occupant (a rate token was taken).
    Fresh(OccupantId),
    /// An earlier attempt chose this occupant but was not answered: finish entering as it.
    Resume(OccupantId),
    /// An earlier attempt was answered and its occupant is still in the room: answer again.
    Replay {
        /// The occupant.
        occupant_id: OccupantId,
        /// The counter of its enter event.
        counter: u64,
    },
}

/// Decides how an enter with an id proceeds, taking a rate token only for a fresh one.
///
/// # Errors
/// 409 `idempotency_conflict` when the id named another call or an enter that has ended;
/// `rate_limited`; `unavailable`.
pub async fn claim_enter(
    state: &ApiState,
    call: &Call,
    session_tag: &str,
    room: &RoomId,
    new_occupant: impl Fn() -> Result<OccupantId, ApiError>,
) -> Result<EnterClaim, ApiError> {
    let record = match kv::read::<Record>(&state.idempotency, &call.key)
        .await?
        .value
    {
        Some(record) => record,
        None => {
            state.limit_call(session_tag).await?;
            let mine = new_occupant()?;
            let claim = Record {
                fingerprint: call.fingerprint.clone(),
                outcome: Outcome::Entering {
                    occupant_id: mine.clone(),
                },
            };
            let claimed =
                kv::update::<Record, _>(&state.idempotency, &call.key, |current| match current {
                    None => Decision::Write(claim.clone()),
                    Some(_) => Decision::Keep,
                })
                .await?
                .ok_or_else(|| ApiError::from(kv::KvError::Contended))?;
            match &claimed.outcome {
                Outcome::Entering { occupant_id } if *occupant_id == mine => {
                    return Ok(EnterClaim::Fresh(mine));
                }
                // A concurrent retry claimed it first: follow its claim.
                _ => claimed,
            }
        }
    };
    follow_claim(state, call, session_tag, room, &record).await
}

/// What an enter does when an earlier call with its id left `record`.
async fn follow_claim(
    state: &ApiState,
    call: &Call,
    session_tag: &str,
    room: &RoomId,
    record: &Record,
) -> Result<EnterClaim, ApiError> {
    if record.fingerprint != call.fingerprint {
        return Err(conflict());
    }
    match &record.outcome {
        Outcome::Entering { occupant_id } => Ok(EnterClaim::Resume(occupant_id.clone())),
        Outcome::Entered {
            occupant_id,
            counter,
        } => {
            let key = occupant_key(room, occupant_id);
            let present = kv::read::<lingr_proto::records::OccupantRecord>(&state.occupants, &key)
                .await?
                .value
                .is_some_and(|o| o.session_tag == session_tag);
            if present {
                Ok(EnterClaim::Replay {
                    occupant_id: occupant_id.clone(),
                    counter: *counter,
                })
            } else {
                Err(ended())
            }
        }
        Outcome::Left { .. } => Err(ended()),
        Outcome::Said { .. } => Err(conflict()),
    }
}

/// Marks an enter answered, before its ticket is revealed: from then on a retry is a replay
/// while the occupant stays, and refused once it has left.
///
/// # Errors
/// `unavailable` when the record cannot be written (the client retries and resumes).
pub async fn mark_entered(
    state: &ApiState,
    call: &Call,
    occupant_id: &OccupantId,
    counter: u64,
) -> Result<(), ApiError> {
    let entered = Record {
        fingerprint: call.fingerprint.clone(),
        outcome: Outcome::Entered {
            occupant_id: occupant_id.clone(),
            counter,
        },
    };
    kv::update::<Record, _>(&state.idempotency, &call.key, |current| match current {
        Some(Record {
            outcome: Outcome::Entered { .. } | Outcome::Left { .. },
            ..
        }) => Decision::Keep,
        _ => Decision::Write(entered.clone()),
    })
    .await?;
    Ok(())
}

/// Marks the enter recorded under `key` as ended, its occupant having left, so that no retry
/// of it brings the occupant back. Best effort: should it fail, a retry finds the occupant gone
/// after an answered enter and is refused all the same, unless the enter was never answered.
pub async fn mark_left(state: &ApiState, key: &str) {
    let marked = kv::update::<Record, _>(&state.idempotency, key, |current| match current {
        Some(Record {
            fingerprint,
            outcome: Outcome::Entering { occupant_id } | Outcome::Entered { occupant_id, .. },
        }) => Decision::Write(Record {
            fingerprint: fingerprint.clone(),
            outcome: Outcome::Left {
                occupant_id: occupant_id.clone(),
            },
        }),
        _ => Decision::Keep,
    })
    .await;
    if let Err(err) = marked {
        tracing::warn!(error = %err, "an enter's idempotency record was not marked ended");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_named_by_session_and_id_and_told_apart_by_parameters() {
        let id = IdempotentId::parse("retry-1").expect("valid");
        let a = Call::new("tag", &id, &["say", "lobby", "o_1", "hi"]);
        let same = Call::new("tag", &id, &["say", "lobby", "o_1", "hi"]);
        let other_room = Call::new("tag", &id, &["say", "den", "o_1", "hi"]);
        assert_eq!(a.key, same.key);
        assert_eq!(a.fingerprint, same.fingerprint);
        assert_eq!(
            a.key, other_room.key,
            "one id names one call of the session"
        );
        assert_ne!(a.fingerprint, other_room.fingerprint);
        assert_ne!(a.key, Call::new("tag2", &id, &["say"]).key);
        assert!(a
            .key
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b'.' || b.is_ascii_alphabetic()));
        // Parts are separated, so ("ab","c") and ("a","bc") differ.
        assert_ne!(
            Call::new("t", &id, &["ab", "c"]).fingerprint,
            Call::new("t", &id, &["a", "bc"]).fingerprint
        );
    }
}
