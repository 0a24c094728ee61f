//! The verbs of an occupant: `room/say`, `room/set_nickname` and `room/exit`.
//!
//! Each checks the session, then the ticket's signature and that its occupant is still in the
//! room (read from the occupants bucket, so a ticket is dead as soon as its occupant leaves),
//! takes a token from the session's call bucket, then publishes and answers with what
//! JetStream stored. The ticket is checked first, on its own (a signature, no network); the
//! session read, the occupant read and the token run at once, so a call waits for one round
//! of NATS calls before its publish rather than three one after another. Errors keep their
//! order: a bad session before a bad ticket before a refused token.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use lingr_platform::kv::{self, Decision};
use lingr_platform::metrics::observe_duration;
use lingr_platform::{ApiError, Params, Reply};
use lingr_proto::api::{Exited, Stored};
use lingr_proto::records::{self, OccupantRecord};
use lingr_proto::{
    ErrorCode, Event, EventType, ExitReason, IdempotentId, MessageText, Nickname, SessionToken,
};

use crate::idempotency::{self, Call};
use crate::occupants;
use crate::publish::{new_event, newest_counter, publish};
use crate::sessions::{self, Caller};
use crate::state::ApiState;

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

/// Whether [`authorize`] takes a call token along with its reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Take,
    /// Not yet: a retry of an idempotent call is answered without spending one.
    Later,
}

async fn authorize(
    state: &ApiState,
    params: &Params,
    token: Token,
) -> Result<Authorized, ApiError> {
    let dead = || ApiError::new(ErrorCode::InvalidTicket, "unknown or expired ticket");
    let tag = SessionToken::parse(params.required("session")?)?.tag();
    let ticket = match params.required("ticket").and_then(|raw| {
        let ticket = state.tickets.verify(raw)?;
        (ticket.session_tag == tag)
            .then_some(ticket)
            .ok_or_else(dead)
    }) {
        Ok(ticket) => ticket,
        Err(refused) => {
            // A bad session is reported before a bad ticket.
            sessions::load(state, params).await?;
            return Err(refused);
        }
    };
    let key = records::occupant_key(&ticket.room, &ticket.occupant_id);
    let limited = async {
        match token {
            Token::Take => state.limit_call(&tag).await,
            Token::Later => Ok(()),
        }
    };
    let (caller, occupant, limited) = tokio::join!(
        sessions::load(state, params),
        state.occupants.get(key.as_str()),
        limited
    );
    let caller = caller?;
    let raw = occupant
        .map_err(|err| ApiError::unavailable("reading an occupant", err))?
        .ok_or_else(dead)?;
    let occupant: OccupantRecord = serde_json::from_slice(&raw)
        .map_err(|err| ApiError::internal("parsing an occupant", err))?;
    // A leaving occupant has its exit stored or on the way: it can do nothing more.
    if occupant.session_tag != caller.tag || occupant.leaving {
        return Err(dead());
    }
    limited?;
    Ok(Authorized { caller, occupant })
}

/// `room/say`: `session`, `ticket`, `message`, `idempotent_id`?.
#[tracing::instrument(skip_all)]
pub async fn say(State(state): State<Arc<ApiState>>, params: Params) -> Reply {
    let started = Instant::now();
    let said = say_message(&state, &params).await;
    observe_duration(&state.metrics.say_seconds, started.elapsed());
    params.reply(said)
}

async fn say_message(state: &ApiState, params: &Params) -> Result<Stored, ApiError> {
    let idempotent = params.get("idempotent_id").is_some();
    let token = if idempotent {
        Token::Later
    } else {
        Token::Take
    };
    let who = authorize(state, params, token).await?;
    let nickname = who.nickname()?;
    let text = MessageText::parse(params.required("message")?)?;
    let occupant = &who.occupant;
    let call = params
        .get("idempotent_id")
        .map(IdempotentId::parse)
        .transpose()?
        .map(|id| {
            let parts = [
                "say",
                occupant.room.as_str(),
                occupant.occupant_id.as_str(),
                text.as_str(),
            ];
            Call::new(&who.caller.tag, &id, &parts)
        });
    // A retry is answered before the rate limit: it stores nothing new.
    if let Some(call) = &call {
        if let Some(event) = idempotency::replay_say(state, call).await? {
            return Ok(stored(event));
        }
        state.limit_call(&who.caller.tag).await?;
    }
    let mut event = new_event(EventType::Message, occupant, nickname.as_str());
    event.text = Some(text.into_string());
    let msg_id = call.as_ref().map(|call| call.message_id("say"));
    let published = publish(state, event.clone(), msg_id).await?;
    // The worst instant for a crash: stored, and the caller not told.
    fail::fail_point!("api::say::stored", |_| lingr_platform::faults::crash());
    if published.duplicate && !same_say(&published.event, &event) {
        // A concurrent call with this id but other parameters was stored first.
        return Err(idempotency::conflict());
    }
    if let Some(call) = &call {
        idempotency::remember_say(state, call, &published.event).await;
    }
    occupants::touch(state, &occupant.occupant_id).await;
    Ok(stored(published.event))
}

fn stored(event: Event) -> Stored {
    Stored {
        counter: event.counter,
        event,
    }
}

fn same_say(stored: &Event, asked: &Event) -> bool {
    stored.room == asked.room
        && stored.occupant_id == asked.occupant_id
        && stored.text == asked.text
}

/// `room/set_nickname`: `session`, `ticket`, `nickname`.
#[tracing::instrument(skip_all)]
pub async fn set_nickname(State(state): State<Arc<ApiState>>, params: Params) -> Reply {
    params.reply(change_nickname(&state, &params).await)
}

async fn change_nickname(state: &ApiState, params: &Params) -> Result<Stored, ApiError> {
    let who = authorize(state, params, Token::Take).await?;
    let previous = who.nickname()?.clone();
    let nickname = Nickname::parse(params.required("nickname")?)?;
    let mut event = new_event(EventType::Nickname, &who.occupant, nickname.as_str());
    event.prev_nickname = Some(previous.to_string());
    let published = publish(state, event, None).await?;
    // On the revision read: if the occupant left meanwhile (exit, reaper), it stays gone.
    let occupant = &who.occupant;
    kv::update::<OccupantRecord, _>(&state.occupants, &occupant.key(), |current| match current {
        Some(stored) if stored.session_tag == occupant.session_tag => {
            Decision::Write(OccupantRecord {
                nickname: Some(nickname.clone()),
                ..stored.clone()
            })
        }
        _ => Decision::Keep,
    })
    .await?;
    occupants::touch(state, &occupant.occupant_id).await;
    Ok(stored(published.event))
}

/// `room/exit`: `session`, `ticket`.
#[tracing::instrument(skip_all)]
pub async fn exit(State(state): State<Arc<ApiState>>, params: Params) -> Reply {
    params.reply(exit_room(&state, &params).await)
}

async fn exit_room(state: &ApiState, params: &Params) -> Result<Exited, ApiError> {
    let who = authorize(state, params, Token::Take).await?;
    let counter = match occupants::leave(state, &who.occupant, ExitReason::Exit)
        .await?
        .counter
    {
        Some(counter) => counter,
        None => newest_counter(state).await?,
    };
    Ok(Exited { counter })
}
