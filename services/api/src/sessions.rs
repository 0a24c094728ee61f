//! Sessions: `session/create`, `session/destroy`, and loading the caller's session for every
//! other call.
//!
//! The client holds the token; NATS holds only its tag. A session expires when neither an API
//! call nor an observe by one of its occupants has used it for the session TTL.

use std::sync::Arc;

use axum::extract::State;
use lingr_platform::clock::now_ms;
use lingr_platform::{ApiError, Params, Reply};
use lingr_proto::api::SessionCreated;
use lingr_proto::records::SessionRecord;
use lingr_proto::{ExitReason, Nickname, SessionToken};

use crate::occupants;
use crate::records::{encode, session_expired};
use crate::state::ApiState;
use lingr_platform::clock::millis;

/// `session/create` with an optional `nickname`.
#[tracing::instrument(skip_all)]
pub async fn create(State(state): State<Arc<ApiState>>, params: Params) -> Reply {
    params.reply(create_session(&state, &params).await)
}

async fn create_session(state: &ApiState, params: &Params) -> Result<SessionCreated, ApiError> {
    let nickname = params.get("nickname").map(Nickname::parse).transpose()?;
    state.limit_session_creation(params.client).await?;
    let mut random = [0u8; 24];
    lingr_platform::config::random_bytes(&mut random)
        .map_err(|err| ApiError::internal("minting a session", err))?;
    let token = SessionToken::from_random(random);
    let now = now_ms();
    let record = SessionRecord {
        nickname,
        created_ms: now,
        last_used_ms: now,
        occupants: Vec::new(),
    };
    state
        .sessions
        .create(token.tag(), encode(&record)?)
        .await
        .map_err(|err| ApiError::unavailable("storing a session", err))?;
    Ok(SessionCreated {
        session: token.as_str().to_owned(),
    })
}

/// `session/destroy`: every room of the session is exited with `reason: session_destroyed`.
#[tracing::instrument(skip_all)]
pub async fn destroy(State(state): State<Arc<ApiState>>, params: Params) -> Reply {
    params.reply(destroy_session(&state, &params).await)
}

async fn destroy_session(state: &ApiState, params: &Params) -> Result<serde_json::Value, ApiError> {
    let caller = load(state, params).await?;
    occupants::end_session(
        state,
        &caller.tag,
        &caller.record,
        ExitReason::SessionDestroyed,
    )
    .await?;
    Ok(serde_json::json!({}))
}

/// The caller's session, checked and loaded.
pub struct Caller {
    /// The session's tag.
    pub tag: String,
    /// Its record as loaded.
    pub record: SessionRecord,
}

/// Loads the session named by the `session` parameter and marks it used.
///
/// # Errors
/// `missing_parameter`, `invalid_session` when unknown or expired, `unavailable`.
pub async fn load(state: &ApiState, params: &Params) -> Result<Caller, ApiError> {
    let token = SessionToken::parse(params.required("session")?)?;
    let tag = token.tag();
    let entry = state
        .sessions
        .entry(tag.as_str())
        .await
        .map_err(|err| ApiError::unavailable("reading a session", err))?
        .filter(|e| e.operation == async_nats::jetstream::kv::Operation::Put)
        .ok_or_else(session_expired)?;
    let record: SessionRecord = serde_json::from_slice(&entry.value)
        .map_err(|err| ApiError::internal("parsing a session", err))?;
    let now = now_ms();
    let ttl_ms = millis(state.config.session_ttl);
    if now.saturating_sub(occupants::session_last_active(state, &record)) > ttl_ms {
        return Err(session_expired());
    }
    let touch_after_ms = (ttl_ms / 10).min(60_000);
    if now.saturating_sub(record.last_used_ms) > touch_after_ms {
        let mut touched = record.clone();
        touched.last_used_ms = now;
        // A lost race means another call touched it at the same moment: good enough.
        let _ = state
            .sessions
            .update(tag.as_str(), encode(&touched)?, entry.revision)
            .await;
    }
    Ok(Caller { tag, record })
}
