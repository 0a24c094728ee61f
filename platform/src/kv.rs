//! JSON records in NATS key-value buckets, changed with compare-and-set.
//!
//! Wherever a read decides a write (a session's room list, a rate bucket, an occupant's
//! nickname), the write is made on the revision that was read, and a lost race reads again.
//! A plain put would let two callers overwrite each other, or bring back a record another
//! caller had just deleted.

use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, UpdateErrorKind};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// How many lost races [`update`] tolerates before giving up: contention on one record is a
/// handful of concurrent calls of one session, never more.
const ATTEMPTS: usize = 8;

/// What a caller decides from the record as it is.
#[derive(Debug)]
pub enum Decision<T> {
    /// Write this value.
    Write(T),
    /// Change nothing.
    Keep,
}

/// Why a record could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    /// NATS did not answer, or refused for another reason than a lost race.
    #[error("the key-value store failed: {0}")]
    Unavailable(String),
    /// The record kept changing under us.
    #[error("the record kept changing; gave up after {ATTEMPTS} attempts")]
    Contended,
    /// The stored value is not what this version expects.
    #[error("a stored record is malformed: {0}")]
    Malformed(String),
}

/// A record as read, with the revision a write must be made on (`None` when absent).
pub struct Versioned<T> {
    /// The value, if the key holds one.
    pub value: Option<T>,
    revision: Option<u64>,
}

/// Reads a record and its revision.
///
/// # Errors
/// [`KvError::Unavailable`] or [`KvError::Malformed`].
pub async fn read<T: DeserializeOwned>(
    store: &kv::Store,
    key: &str,
) -> Result<Versioned<T>, KvError> {
    let entry = store
        .entry(key)
        .await
        .map_err(|err| KvError::Unavailable(err.to_string()))?
        .filter(|e| e.operation == Operation::Put);
    match entry {
        None => Ok(Versioned {
            value: None,
            revision: None,
        }),
        Some(entry) => Ok(Versioned {
            value: Some(
                serde_json::from_slice(&entry.value)
                    .map_err(|err| KvError::Malformed(err.to_string()))?,
            ),
            revision: Some(entry.revision),
        }),
    }
}

/// Writes `value` if the record is still at the revision `read` saw; false when it was not
/// (someone else wrote or deleted it first).
///
/// # Errors
/// [`KvError::Unavailable`] when NATS fails otherwise.
pub async fn write_if_unchanged<T: Serialize>(
    store: &kv::Store,
    key: &str,
    read: &Versioned<T>,
    value: &T,
) -> Result<bool, KvError> {
    let bytes =
        Bytes::from(serde_json::to_vec(value).map_err(|err| KvError::Malformed(err.to_string()))?);
    match read.revision {
        Some(revision) => match store.update(key, bytes, revision).await {
            Ok(_) => Ok(true),
            Err(err) if err.kind() == UpdateErrorKind::WrongLastRevision => Ok(false),
            Err(err) => Err(KvError::Unavailable(err.to_string())),
        },
        None => match store.create(key, bytes).await {
            Ok(_) => Ok(true),
            Err(err) if err.kind() == CreateErrorKind::AlreadyExists => Ok(false),
            Err(err) => Err(KvError::Unavailable(err.to_string())),
        },
    }
}

/// Reads the record, lets `decide` choose, and writes the choice on the revision read,
/// reading again after a lost race. Returns the value as left: the one written, or the one
/// found when `decide` kept it.
///
/// # Errors
/// [`KvError::Unavailable`], [`KvError::Malformed`], or [`KvError::Contended`] after too many
/// lost races.
pub async fn update<T, F>(store: &kv::Store, key: &str, mut decide: F) -> Result<Option<T>, KvError>
where
    T: Serialize + DeserializeOwned,
    F: FnMut(Option<&T>) -> Decision<T>,
{
    for _ in 0..ATTEMPTS {
        let current = read::<T>(store, key).await?;
        match decide(current.value.as_ref()) {
            Decision::Keep => return Ok(current.value),
            Decision::Write(next) => {
                if write_if_unchanged(store, key, &current, &next).await? {
                    return Ok(Some(next));
                }
            }
        }
    }
    Err(KvError::Contended)
}

/// Whether room `room` has been created (its entry in the rooms bucket), for the calls that
/// answer 404 for an unknown room.
///
/// # Errors
/// 503 when the bucket cannot be read.
pub async fn room_exists(
    rooms: &kv::Store,
    room: &lingr_proto::RoomId,
) -> Result<bool, crate::ApiError> {
    let entry = rooms
        .get(room.as_str())
        .await
        .map_err(|err| crate::ApiError::unavailable("reading a room", err))?;
    Ok(entry.is_some())
}

impl From<KvError> for crate::ApiError {
    fn from(error: KvError) -> Self {
        match error {
            KvError::Unavailable(cause) => Self::unavailable("a key-value operation", cause),
            KvError::Contended => Self::new(
                lingr_proto::ErrorCode::Unavailable,
                "the record is busy; retry",
            ),
            KvError::Malformed(cause) => Self::internal("reading a record", cause),
        }
    }
}
