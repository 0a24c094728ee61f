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
use lingr_proto::api::{OccupantsPage, OCCUPANTS_DEFAULT, OCCUPANTS_MAX};
use lingr_proto::{ErrorCode, OccupantId, RoomId};

pub use crate::listings::{Page, Roster};
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
///
/// Read from the api's per-room [`crate::listings`], so it costs the page, not the room.
pub async fn as_of(
    state: &ApiState,
    room: &RoomId,
    counter: u64,
    page: Page<'_>,
) -> Result<Roster, ApiError> {
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
    // Only enters pending now can be stored before `counter`: an occupant stored from now on
    // publishes its enter after this one's was stored. So it waits for these alone, however
    // many enter meanwhile.
    let waiting_until = tokio::time::Instant::now() + PENDING_ENTER_WAIT;
    let mut pending = state
        .listings
        .pending_since(room, now_ms().saturating_sub(ABANDONED_ENTER_MS));
    while !pending.is_empty() && tokio::time::Instant::now() < waiting_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
        pending.retain(|occupant| state.listings.is_pending(room, occupant));
    }
    Ok(state.listings.roster(room, counter, page))
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
    let page = Page {
        after: after.as_ref(),
        limit,
    };
    let roster = as_of(state, &room, u64::MAX, page).await?;
    if roster.count == 0 && !lingr_platform::kv::room_exists(&state.rooms, &room).await? {
        return Err(ApiError::new(ErrorCode::RoomNotFound, "no such room"));
    }
    Ok(OccupantsPage {
        occupants: roster.page,
        occupant_count: roster.count,
        has_more: roster.has_more,
    })
}
