//! Sessions: `session/create`, `session/destroy`, and loading the caller's session for every
//! other call.
//!
//! The client holds the token; NATS holds only its tag. A session expires when neither an API
//! call nor an observe by one of its occupants has used it for the session TTL.

use std::sync::Arc;

use axum::extract::State;
use bytes::Bytes;
use lingr_platform::clock::now_ms;
use lingr_platform::kv::{self, Decision};
use lingr_platform::{ApiError, Params, Reply};
use lingr_proto::api::SessionCreated;
use lingr_proto::records::SessionRecord;
use lingr_proto::{ErrorCode, ExitReason, Nickname, SessionToken};

use crate::presence;
use crate::state::ApiState;

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
    end_session(
        state,
        &caller.tag,
        &caller.record,
        ExitReason::SessionDestroyed,
    )
    .await?;
    Ok(serde_json::json!({}))
}

/// Makes every occupant of a session leave, then deletes the session.
///
/// # Errors
/// `unavailable` when NATS fails part way; what was done stays done and a retry finishes it.
pub async fn end_session(
    state: &ApiState,
    tag: &str,
    record: &SessionRecord,
    reason: ExitReason,
) -> Result<(), ApiError> {
    for key in &record.occupants {
        let occupant = state
            .occupants
            .get(key.as_str())
            .await
            .map_err(|err| ApiError::unavailable("reading an occupant", err))?;
        if let Some(occupant) = occupant.and_then(|raw| serde_json::from_slice(&raw).ok()) {
            presence::leave(state, &occupant, reason).await?;
        }
    }
    state
        .sessions
        .delete(tag)
        .await
        .map_err(|err| ApiError::unavailable("deleting a session", err))
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
        .ok_or_else(expired)?;
    let record: SessionRecord = serde_json::from_slice(&entry.value)
        .map_err(|err| ApiError::internal("parsing a session", err))?;
    let now = now_ms();
    let ttl_ms = millis(state.config.session_ttl);
    if now.saturating_sub(presence::session_last_active(state, &record)) > ttl_ms {
        return Err(expired());
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

/// Changes a session record with compare-and-set, retrying on conflict. Returns false, changing
/// nothing, when the session is gone.
///
/// # Errors
/// `unavailable` when NATS fails or the record keeps changing under us.
pub async fn update(
    state: &ApiState,
    tag: &str,
    change: impl Fn(&mut SessionRecord),
) -> Result<bool, ApiError> {
    let updated = kv::update::<SessionRecord, _>(&state.sessions, tag, |current| match current {
        None => Decision::Keep,
        Some(record) => {
            let mut next = record.clone();
            change(&mut next);
            Decision::Write(next)
        }
    })
    .await?;
    Ok(updated.is_some())
}

/// The answer for a session that is unknown, destroyed or expired.
pub fn expired() -> ApiError {
    ApiError::new(ErrorCode::InvalidSession, "unknown or expired session")
}

/// JSON bytes of a record.
///
/// # Errors
/// `internal` if it cannot be serialized.
pub fn encode<T: serde::Serialize>(record: &T) -> Result<Bytes, ApiError> {
    serde_json::to_vec(record)
        .map(Bytes::from)
        .map_err(|err| ApiError::internal("serializing a record", err))
}

/// A duration in whole milliseconds.
pub fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
