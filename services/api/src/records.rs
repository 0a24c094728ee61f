//! The api's own records in key-value buckets: a session record changed with
//! compare-and-set, records as JSON, and the answer for a session that is gone.

use bytes::Bytes;
use lingr_platform::kv::{self, Decision};
use lingr_platform::ApiError;
use lingr_proto::records::SessionRecord;
use lingr_proto::ErrorCode;

use crate::state::ApiState;

/// Changes a session record with compare-and-set, retrying on conflict. Returns false, changing
/// nothing, when the session is gone.
///
/// # Errors
/// `unavailable` when NATS fails or the record keeps changing under us.
pub async fn update_session(
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
pub fn session_expired() -> ApiError {
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
