//! `room/get_messages`: `room`, `before`? or `after`?, `limit`? (default 50, at most 200).
//!
//! Events of every type, oldest first. With `after`, the oldest `limit` after it; with
//! `before` or neither, the newest `limit` before it. `has_more` says whether more lie that
//! way. History lags the stream by the time it takes to commit a batch (milliseconds).

use std::sync::Arc;

use axum::extract::State;
use lingr_platform::{ApiError, Params, Reply};
use lingr_proto::api::{Messages, GET_MESSAGES_DEFAULT, GET_MESSAGES_MAX};
use lingr_proto::{ErrorCode, Event, RoomId};

use crate::state::HistoryState;
use crate::store::Page;

/// The handler.
#[tracing::instrument(skip_all)]
pub async fn get_messages(State(state): State<Arc<HistoryState>>, params: Params) -> Reply {
    params.reply(page_of(&state, &params).await)
}

async fn page_of(state: &HistoryState, params: &Params) -> Result<Messages, ApiError> {
    let room = RoomId::parse(params.required("room")?)?;
    let page = match (params.u64("before")?, params.u64("after")?) {
        (Some(_), Some(_)) => {
            return Err(ApiError::new(
                ErrorCode::InvalidParameter,
                "give 'before' or 'after', not both",
            ));
        }
        (before, None) => Page::Before(before),
        (None, Some(after)) => Page::After(after),
    };
    let limit = params.limit(GET_MESSAGES_DEFAULT, GET_MESSAGES_MAX)?;
    let (bodies, has_more) = state
        .store
        .page(room.as_str(), page, limit)
        .await
        .map_err(|err| ApiError::unavailable("reading history", format!("{err:#}")))?;
    if bodies.is_empty() && !lingr_platform::kv::room_exists(&state.rooms, &room).await? {
        return Err(ApiError::new(ErrorCode::RoomNotFound, "no such room"));
    }
    let messages = bodies
        .iter()
        .map(|body| serde_json::from_str::<Event>(body))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| ApiError::internal("parsing a stored event", err))?;
    Ok(Messages { messages, has_more })
}
