//! Who is in a room, as clients are told: `room/enter`'s snapshot ([`as_of`]) and
//! `room/occupants` ([`occupants`]), pages of a room's occupants in occupant-id order.
//!
//! Only named occupants whose enter event is stored and who are not leaving are listed: a
//! client must never be told of someone it will not see enter or leave.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use lingr_platform::clock::now_ms;
use lingr_platform::{ApiError, Params, Reply};
use lingr_proto::api::{Occupant, OccupantsPage, OCCUPANTS_DEFAULT, OCCUPANTS_MAX};
use lingr_proto::records::{self, OccupantRecord};
use lingr_proto::{ErrorCode, OccupantId, RoomId};

use crate::state::ApiState;

/// How long an enter waits for another occupant's enter that is being published (stored, not
/// yet announced) before leaving it out of its list.
const PENDING_ENTER_WAIT: Duration = Duration::from_secs(1);

/// An occupant stored longer ago than this without an announced enter belongs to an enter that
/// failed or crashed half-way (the reaper removes it): not worth waiting for.
const ABANDONED_ENTER_MS: u64 = 5_000;

/// The room's named occupants whose enter event is at or before `counter` (the caller's own
/// enter, or for an anonymous observer the newest event): every later one reaches the caller
/// by observing. Listing an occupant whose enter event was never stored would show the caller
/// someone nobody saw enter, and who will never be seen to leave.
pub async fn as_of(
    state: &ApiState,
    room: &RoomId,
    counter: u64,
) -> Result<Vec<Occupant>, ApiError> {
    let latest = lingr_platform::nats::bucket_state(&state.occupants)
        .await
        .map_err(|err| ApiError::unavailable("reading the occupants bucket", format!("{err:#}")))?
        .last_sequence;
    if !state
        .occupants_mirror
        .caught_up_to(latest, Duration::from_secs(1))
        .await
    {
        tracing::warn!(room.id = %room, "occupant list may lag: the mirror did not catch up in time");
    }
    let waiting_until = tokio::time::Instant::now() + PENDING_ENTER_WAIT;
    let listed = loop {
        let listed: Vec<OccupantRecord> = state
            .occupants_mirror
            .with_prefix(&records::room_prefix(room))
            .into_iter()
            .map(|(_, occupant)| occupant)
            // A leaving occupant's exit may be stored before this enter's event.
            .filter(|o| o.nickname.is_some() && !o.leaving)
            .collect();
        let now = now_ms();
        let pending = listed.iter().any(|o| {
            o.enter_counter.is_none() && now.saturating_sub(o.entered_ms) < ABANDONED_ENTER_MS
        });
        if !pending || tokio::time::Instant::now() >= waiting_until {
            break listed;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    Ok(listed
        .into_iter()
        .filter(|o| o.enter_counter.is_some_and(|c| c <= counter))
        .filter_map(|o| {
            o.nickname.map(|n| Occupant {
                id: o.occupant_id.to_string(),
                nickname: n.to_string(),
            })
        })
        .collect())
}

/// `room/occupants`: `room`, `after`? (an occupant id), `limit`? (default 100, at most 500).
#[tracing::instrument(skip_all)]
pub async fn occupants(State(state): State<Arc<ApiState>>, params: Params) -> Reply {
    params.reply(page_of(&state, &params).await)
}

async fn page_of(state: &ApiState, params: &Params) -> Result<OccupantsPage, ApiError> {
    let room = RoomId::parse(params.required("room")?)?;
    let after = params
        .get("after")
        .map(OccupantId::parse)
        .transpose()
        .map_err(|_| ApiError::new(ErrorCode::InvalidParameter, "after must be an occupant id"))?;
    let limit = params.limit(OCCUPANTS_DEFAULT, OCCUPANTS_MAX)?;
    let listed = as_of(state, &room, u64::MAX).await?;
    if listed.is_empty() && !lingr_platform::kv::room_exists(&state.rooms, &room).await? {
        return Err(ApiError::new(ErrorCode::RoomNotFound, "no such room"));
    }
    let occupant_count = listed.len();
    let mut rest = listed.into_iter().skip_while(|o| {
        after
            .as_ref()
            .is_some_and(|after| o.id.as_str() <= after.as_str())
    });
    let occupants: Vec<Occupant> = rest.by_ref().take(limit).collect();
    Ok(OccupantsPage {
        occupants,
        occupant_count,
        has_more: rest.next().is_some(),
    })
}
