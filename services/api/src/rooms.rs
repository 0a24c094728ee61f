//! The room verbs: `room/enter`, `room/say`, `room/set_nickname` and `room/exit`.
//!
//! Each checks the session, then the ticket's signature and that its occupant is still in the
//! room (read from the occupants bucket, so a ticket is dead as soon as its occupant leaves),
//! then publishes and answers with what JetStream stored.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use lingr_platform::clock::now_ms;
use lingr_platform::{ApiError, Params, Reply};
use lingr_proto::api::{
    Entered, Exited, Occupant, RecentReply, RecentRequest, RoomSnapshot, Stored, ENTER_MESSAGES,
};
use lingr_proto::event::timestamp_now;
use lingr_proto::records::{self, OccupantRecord};
use lingr_proto::ticket::Ticket;
use lingr_proto::{
    subjects, ErrorCode, Event, EventType, ExitReason, IdempotentId, MessageText, Nickname,
    OccupantId, RoomId,
};

use crate::presence;
use crate::publish::{newest_counter, publish};
use crate::sessions::{self, encode, Caller};
use crate::state::ApiState;

/// How long `room/enter` waits for history's recent messages.
const HISTORY_WAIT: Duration = Duration::from_secs(3);

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
    let idempotent = params
        .get("idempotent_id")
        .map(IdempotentId::parse)
        .transpose()?;
    let occupant_id = match &idempotent {
        Some(id) => state
            .tickets
            .derive_occupant_id(&caller.tag, &room, id.as_str()),
        None => random_occupant_id()?,
    };
    let occupant = OccupantRecord {
        room: room.clone(),
        occupant_id: occupant_id.clone(),
        session_tag: caller.tag.clone(),
        nickname: nickname.clone(),
        entered_ms: now_ms(),
        enter_counter: None,
    };
    let key = occupant.key();
    if !caller.record.occupants.contains(&key)
        && caller.record.occupants.len() >= state.config.max_rooms_per_session
    {
        return Err(ApiError::new(
            ErrorCode::TooManyRooms,
            "this session is in too many rooms; exit one first",
        ));
    }
    ensure_room_exists(state, &room).await?;
    state
        .occupants
        .put(key.as_str(), encode(&occupant)?)
        .await
        .map_err(|err| ApiError::unavailable("storing an occupant", err))?;
    presence::touch(state, &occupant_id).await;
    let still_there = sessions::update(state, &caller.tag, |record| {
        if !record.occupants.contains(&key) {
            record.occupants.push(key.clone());
        }
    })
    .await?;
    if !still_there {
        // Destroyed while we entered: its destroy could not see this occupant, so take it back.
        undo_enter(state, &occupant).await;
        return Err(sessions::expired());
    }
    let counter = match &nickname {
        Some(nickname) => {
            let event = new_event(EventType::Enter, &occupant, nickname.as_str());
            let msg_id = format!("enter:{occupant_id}");
            let counter =
                match publish(state, event, Some(msg_id), params.traceparent.as_deref()).await {
                    Ok(published) => published.event.counter,
                    Err(error) => {
                        undo_enter(state, &occupant).await;
                        return Err(error);
                    }
                };
            announce(state, &occupant, counter).await?;
            counter
        }
        None => newest_counter(state).await?,
    };
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
    Ok(Entered {
        ticket,
        occupant_id: occupant_id.to_string(),
        counter,
        room: RoomSnapshot {
            id: room.to_string(),
            occupants: occupants_of(state, &room).await?,
            messages: recent_messages(state, &room, messages_before).await,
        },
    })
}

/// Marks the occupant as announced, so that leaving raises an exit event.
async fn announce(
    state: &ApiState,
    occupant: &OccupantRecord,
    counter: u64,
) -> Result<(), ApiError> {
    let announced = OccupantRecord {
        enter_counter: Some(counter),
        ..occupant.clone()
    };
    state
        .occupants
        .put(announced.key().as_str(), encode(&announced)?)
        .await
        .map_err(|err| ApiError::unavailable("storing an occupant", err))?;
    Ok(())
}

/// Takes back an enter whose event could not be stored, so no occupant is left that nobody saw
/// enter (the reaper would otherwise make it "exit" later). Best effort: NATS is failing.
async fn undo_enter(state: &ApiState, occupant: &OccupantRecord) {
    let key = occupant.key();
    if let Err(err) = state.occupants.delete(key.as_str()).await {
        tracing::warn!(error = %err, "could not undo an enter; the reaper will time the occupant out");
        return;
    }
    let _ = sessions::update(state, &occupant.session_tag, |record| {
        record.occupants.retain(|k| *k != key)
    })
    .await;
}

fn random_occupant_id() -> Result<OccupantId, ApiError> {
    let mut bytes = [0u8; 16];
    lingr_platform::config::random_bytes(&mut bytes)
        .map_err(|err| ApiError::internal("minting an occupant id", err))?;
    Ok(OccupantId::from_bytes(&bytes))
}

async fn ensure_room_exists(state: &ApiState, room: &RoomId) -> Result<(), ApiError> {
    let known = state
        .rooms
        .get(room.as_str())
        .await
        .map_err(|err| ApiError::unavailable("reading a room", err))?;
    if known.is_none() {
        // Two first enters may race: whichever creates it, the room exists.
        let _ = state
            .rooms
            .create(room.as_str(), now_ms().to_string().into())
            .await;
    }
    Ok(())
}

/// The room's participants, as of every occupant write made before this call.
async fn occupants_of(state: &ApiState, room: &RoomId) -> Result<Vec<Occupant>, ApiError> {
    let latest = lingr_platform::nats::bucket_state(&state.occupants)
        .await
        .map_err(|err| ApiError::unavailable("reading the occupants bucket", format!("{err:#}")))?
        .last_sequence;
    if !state
        .occupants_mirror
        .caught_up_to(latest, Duration::from_secs(2))
        .await
    {
        tracing::warn!(room.id = %room, "occupant list may lag: the mirror did not catch up in time");
    }
    Ok(state
        .occupants_mirror
        .with_prefix(&records::room_prefix(room))
        .into_iter()
        .filter_map(|(_, o)| {
            o.nickname.map(|n| Occupant {
                id: o.occupant_id.to_string(),
                nickname: n.to_string(),
            })
        })
        .collect())
}

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

fn new_event(kind: EventType, occupant: &OccupantRecord, nickname: &str) -> Event {
    Event {
        counter: 0,
        kind,
        room: occupant.room.clone(),
        occupant_id: occupant.occupant_id.to_string(),
        nickname: nickname.to_owned(),
        text: None,
        prev_nickname: None,
        reason: None,
        timestamp: timestamp_now(),
    }
}

/// The caller's session, ticket and live occupant.
struct Authorized {
    caller: Caller,
    occupant: OccupantRecord,
}

impl Authorized {
    fn nickname(&self) -> Result<&Nickname, ApiError> {
        self.occupant.nickname.as_ref().ok_or_else(|| {
            ApiError::new(
                ErrorCode::ObserverOnly,
                "an anonymous observer cannot do this; enter with a nickname",
            )
        })
    }
}

async fn authorize(state: &ApiState, params: &Params) -> Result<Authorized, ApiError> {
    let caller = sessions::load(state, params).await?;
    let ticket = state.tickets.verify(params.required("ticket")?)?;
    let dead = || ApiError::new(ErrorCode::InvalidTicket, "unknown or expired ticket");
    if ticket.session_tag != caller.tag {
        return Err(dead());
    }
    let key = records::occupant_key(&ticket.room, &ticket.occupant_id);
    let raw = state
        .occupants
        .get(key.as_str())
        .await
        .map_err(|err| ApiError::unavailable("reading an occupant", err))?
        .ok_or_else(dead)?;
    let occupant: OccupantRecord = serde_json::from_slice(&raw)
        .map_err(|err| ApiError::internal("parsing an occupant", err))?;
    if occupant.session_tag != caller.tag {
        return Err(dead());
    }
    Ok(Authorized { caller, occupant })
}

/// `room/say`: `session`, `ticket`, `message`, `idempotent_id`?.
#[tracing::instrument(skip_all)]
pub async fn say(State(state): State<Arc<ApiState>>, params: Params) -> Reply {
    params.reply(say_message(&state, &params).await)
}

async fn say_message(state: &ApiState, params: &Params) -> Result<Stored, ApiError> {
    let who = authorize(state, params).await?;
    let nickname = who.nickname()?;
    let text = MessageText::parse(params.required("message")?)?;
    let idempotent = params
        .get("idempotent_id")
        .map(IdempotentId::parse)
        .transpose()?;
    if !state.say_limiter.try_take(&who.caller.tag).await? {
        state.metrics.rate_limited.inc();
        return Err(ApiError::new(
            ErrorCode::RateLimited,
            "at most 10 messages a second (bursts of 20); slow down",
        ));
    }
    let mut event = new_event(EventType::Message, &who.occupant, nickname.as_str());
    event.text = Some(text.into_string());
    let msg_id = idempotent.map(|id| format!("say:{}:{}", who.caller.tag, id.as_str()));
    let published = publish(state, event, msg_id, params.traceparent.as_deref()).await?;
    presence::touch(state, &who.occupant.occupant_id).await;
    let counter = published.event.counter;
    Ok(Stored {
        event: published.event,
        counter,
    })
}

/// `room/set_nickname`: `session`, `ticket`, `nickname`.
#[tracing::instrument(skip_all)]
pub async fn set_nickname(State(state): State<Arc<ApiState>>, params: Params) -> Reply {
    params.reply(change_nickname(&state, &params).await)
}

async fn change_nickname(state: &ApiState, params: &Params) -> Result<Stored, ApiError> {
    let who = authorize(state, params).await?;
    let previous = who.nickname()?.clone();
    let nickname = Nickname::parse(params.required("nickname")?)?;
    let mut event = new_event(EventType::Nickname, &who.occupant, nickname.as_str());
    event.prev_nickname = Some(previous.to_string());
    let published = publish(state, event, None, params.traceparent.as_deref()).await?;
    let mut occupant = who.occupant;
    occupant.nickname = Some(nickname);
    state
        .occupants
        .put(occupant.key().as_str(), encode(&occupant)?)
        .await
        .map_err(|err| ApiError::unavailable("storing an occupant", err))?;
    presence::touch(state, &occupant.occupant_id).await;
    let counter = published.event.counter;
    Ok(Stored {
        event: published.event,
        counter,
    })
}

/// `room/exit`: `session`, `ticket`.
#[tracing::instrument(skip_all)]
pub async fn exit(State(state): State<Arc<ApiState>>, params: Params) -> Reply {
    params.reply(exit_room(&state, &params).await)
}

async fn exit_room(state: &ApiState, params: &Params) -> Result<Exited, ApiError> {
    let who = authorize(state, params).await?;
    let counter = match presence::leave(
        state,
        &who.occupant,
        ExitReason::Exit,
        params.traceparent.as_deref(),
    )
    .await?
    {
        Some(counter) => counter,
        None => newest_counter(state).await?,
    };
    Ok(Exited { counter })
}
