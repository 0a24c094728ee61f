//! `room/enter`: a session becomes an occupant of a room (created on first enter).
//!
//! The occupant is stored before its enter event is published, so no event ever names an
//! occupant that does not exist; an enter whose event cannot be stored is taken back. With an
//! `idempotent_id`, a retry resumes or replays the first attempt (see [`crate::idempotency`]).
//! The answer carries a ticket, the counter of the enter event, and the room as it is.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use lingr_platform::clock::now_ms;
use lingr_platform::kv;
use lingr_platform::{ApiError, Params, Reply};
use lingr_proto::api::{
    Entered, RecentReply, RecentRequest, RoomSnapshot, ENTER_MESSAGES, ENTER_OCCUPANTS,
};
use lingr_proto::records::OccupantRecord;
use lingr_proto::ticket::Ticket;
use lingr_proto::{subjects, Event, IdempotentId, Nickname, OccupantId, RoomId};

use crate::idempotency::{self, Call, EnterClaim};
use crate::occupants;
use crate::roster;
use crate::sessions::{self, Caller};
use crate::state::ApiState;

/// How long `room/enter` waits for history's recent messages.
const HISTORY_WAIT: Duration = Duration::from_millis(1_500);

/// `room/enter`: `session`, `room`, `nickname`?, `idempotent_id`?.
#[tracing::instrument(skip_all)]
pub async fn enter(State(state): State<Arc<ApiState>>, params: Params) -> Reply {
    params.reply(enter_room(&state, &params).await)
}

async fn enter_room(state: &ApiState, params: &Params) -> Result<Entered, ApiError> {
    let caller = sessions::load(state, params).await?;
    let room = RoomId::parse(params.required("room")?)?;
    let nickname = match params.get("nickname") {
        Some(raw) => Some(Nickname::parse(raw)?),
        None => caller.record.nickname.clone(),
    };
    let call = params
        .get("idempotent_id")
        .map(IdempotentId::parse)
        .transpose()?
        .map(|id| {
            let named = nickname.as_ref().map_or("", Nickname::as_str);
            Call::new(&caller.tag, &id, &["enter", room.as_str(), named])
        });
    let claim = match &call {
        Some(call) => {
            idempotency::claim_enter(state, call, &caller.tag, &room, random_occupant_id).await?
        }
        None => {
            state.limit_call(&caller.tag).await?;
            EnterClaim::Fresh(random_occupant_id()?)
        }
    };
    let replayed = matches!(claim, EnterClaim::Replay { .. });
    let (occupant_id, counter) = match claim {
        EnterClaim::Replay {
            occupant_id,
            counter,
        } => (occupant_id, counter),
        EnterClaim::Fresh(occupant_id) => {
            let entering = Entering::new(&caller, &room, &occupant_id, nickname.as_ref(), &call);
            let counter =
                occupants::admit(state, &entering.occupant, &entering.caller.record).await?;
            (occupant_id, counter)
        }
        EnterClaim::Resume(occupant_id) => {
            // Finishing an attempt that was never answered is new work: it pays a token.
            state.limit_call(&caller.tag).await?;
            let entering = Entering::new(&caller, &room, &occupant_id, nickname.as_ref(), &call);
            (occupant_id, resume(state, &entering).await?)
        }
    };
    if let Some(call) = call.as_ref().filter(|_| !replayed) {
        // Before the ticket is revealed: from now on a retry replays or, once the occupant
        // has left, is refused.
        idempotency::mark_entered(state, call, &occupant_id, counter).await?;
    }
    let messages_before = if nickname.is_some() {
        counter
    } else {
        counter + 1
    };
    let ticket = state.tickets.sign(&Ticket {
        room: room.clone(),
        occupant_id: occupant_id.clone(),
        session_tag: caller.tag,
        anonymous: nickname.is_none(),
    });
    let first_page = roster::Page {
        after: None,
        limit: ENTER_OCCUPANTS,
    };
    let listed = roster::as_of(state, &room, counter, first_page).await?;
    Ok(Entered {
        ticket,
        occupant_id: occupant_id.to_string(),
        counter,
        room: RoomSnapshot {
            id: room.to_string(),
            occupant_count: listed.count,
            occupants: listed.page,
            messages: recent_messages(state, &room, messages_before).await,
        },
    })
}

/// One enter being carried out.
struct Entering<'a> {
    caller: &'a Caller,
    occupant: OccupantRecord,
}

impl<'a> Entering<'a> {
    fn new(
        caller: &'a Caller,
        room: &RoomId,
        occupant_id: &OccupantId,
        nickname: Option<&Nickname>,
        call: &Option<Call>,
    ) -> Self {
        Self {
            caller,
            occupant: OccupantRecord {
                room: room.clone(),
                occupant_id: occupant_id.clone(),
                session_tag: caller.tag.clone(),
                nickname: nickname.cloned(),
                entered_ms: now_ms(),
                enter_counter: None,
                idempotency_key: call.as_ref().map(|call| call.key().to_owned()),
                leaving: false,
            },
        }
    }
}

/// Finishes an enter that an earlier attempt with the same id began but never answered.
async fn resume(state: &ApiState, entering: &Entering<'_>) -> Result<u64, ApiError> {
    let stored = kv::read::<OccupantRecord>(&state.occupants, &entering.occupant.key())
        .await?
        .value;
    match stored {
        Some(stored) if stored.session_tag != entering.caller.tag => Err(idempotency::conflict()),
        // Announced already: only the answer was lost.
        Some(OccupantRecord {
            enter_counter: Some(counter),
            nickname: Some(_),
            ..
        }) => Ok(counter),
        _ => occupants::admit(state, &entering.occupant, &entering.caller.record).await,
    }
}

fn random_occupant_id() -> Result<OccupantId, ApiError> {
    let mut bytes = [0u8; 16];
    lingr_platform::config::random_bytes(&mut bytes)
        .map_err(|err| ApiError::internal("minting an occupant id", err))?;
    Ok(OccupantId::from_bytes(&bytes))
}

/// The room's participants, as of every occupant write made before this call.
/// The last message events before `before`, from history. If history does not answer in
/// time the enter still succeeds, with no messages: the client can page with get_messages.
async fn recent_messages(state: &ApiState, room: &RoomId, before: u64) -> Vec<Event> {
    let request = RecentRequest {
        room: room.to_string(),
        before,
        limit: ENTER_MESSAGES,
    };
    let Ok(payload) = serde_json::to_vec(&request) else {
        return Vec::new();
    };
    let asked = state
        .client
        .request(subjects::HISTORY_RECENT, payload.into());
    match tokio::time::timeout(HISTORY_WAIT, asked).await {
        Ok(Ok(reply)) => match serde_json::from_slice::<RecentReply>(&reply.payload) {
            Ok(recent) => {
                if !recent.complete {
                    tracing::warn!(room.id = %room, "history had not caught up; recent messages may be short");
                }
                recent.messages
            }
            Err(err) => {
                tracing::warn!(error = %err, "history's recent-messages answer is malformed");
                Vec::new()
            }
        },
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "history did not answer for recent messages");
            Vec::new()
        }
        Err(_) => {
            tracing::warn!("history did not answer for recent messages in time");
            Vec::new()
        }
    }
}
