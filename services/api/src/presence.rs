//! Presence: an occupant is present while it observes or calls the API. This module owns the
//! one way an occupant leaves ([`leave`]) and the reaper that makes silent occupants leave with
//! `reason: timeout` and deletes sessions unused for the session TTL.
//!
//! Every api replica runs the reaper. The exit event is published with the `Nats-Msg-Id`
//! `exit:<occupant>`, so however many replicas (or a racing `room/exit`) make the same occupant
//! leave, JetStream stores one exit event.
//!
//! An outage is not silence (guarantee 8): while NATS or a bucket the reaper reads is out of
//! reach, presence cannot be recorded or seen, so the reaper pauses, and once they are back it
//! counts an occupant's silence from that moment at the earliest: everyone gets one whole
//! presence timeout to be seen again.

use std::sync::Arc;
use std::time::Duration;

use lingr_platform::clock::now_ms;
use lingr_platform::kv::{self, Decision};
use lingr_platform::readiness::Signal;
use lingr_platform::ApiError;
use lingr_proto::event::timestamp_now;
use lingr_proto::records::{OccupantRecord, SessionRecord};
use lingr_proto::{Event, EventType, ExitReason, OccupantId};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::publish::publish;
use crate::sessions::{self, millis};
use crate::state::ApiState;

/// Makes an occupant leave its room: it is marked leaving (so no enter lists it any more), its
/// exit event is published (none for an anonymous observer or an enter that was never
/// stored), then the occupant and its presence are deleted and the session forgets it.
/// Returns the exit event's counter, if this call published it.
///
/// # Errors
/// `unavailable` when NATS fails; a retry completes the leave without a second exit event.
pub async fn leave(
    state: &ApiState,
    occupant: &OccupantRecord,
    reason: ExitReason,
) -> Result<Option<u64>, ApiError> {
    let key = occupant.key();
    // On the revision read: a record already deleted stays so, and its exit was published
    // before the delete by whoever made it leave.
    let marked = kv::update::<OccupantRecord, _>(&state.occupants, &key, |current| match current {
        Some(stored) if stored.session_tag == occupant.session_tag && !stored.leaving => {
            Decision::Write(OccupantRecord {
                leaving: true,
                ..stored.clone()
            })
        }
        _ => Decision::Keep,
    })
    .await?
    .filter(|stored| stored.session_tag == occupant.session_tag);
    let counter = match &marked {
        Some(current) => announce_exit(state, current, reason).await?,
        None => None,
    };
    lingr_platform::faults::delay("api::leave::exit-published").await;
    if marked.is_some() {
        state
            .occupants
            .delete(key.as_str())
            .await
            .map_err(|err| ApiError::unavailable("deleting an occupant", err))?;
    }
    if let Err(err) = state.presence.delete(occupant.occupant_id.as_str()).await {
        tracing::debug!(error = %err, "presence entry not deleted; it expires by itself");
    }
    if let Some(key) = &occupant.idempotency_key {
        crate::idempotency::mark_left(state, key).await;
    }
    sessions::update(state, &occupant.session_tag, |record| {
        record.occupants.retain(|k| *k != key)
    })
    .await?;
    Ok(counter)
}

/// Publishes the exit of an occupant whose enter was stored (anonymous observers and
/// occupants whose enter never got stored leave silently: nobody saw them enter). Returns
/// its counter.
async fn announce_exit(
    state: &ApiState,
    occupant: &OccupantRecord,
    reason: ExitReason,
) -> Result<Option<u64>, ApiError> {
    let announced = occupant
        .nickname
        .as_ref()
        .filter(|_| occupant.enter_counter.is_some());
    let counter = match announced {
        Some(nickname) => {
            let event = Event {
                counter: 0,
                kind: EventType::Exit,
                room: occupant.room.clone(),
                occupant_id: occupant.occupant_id.to_string(),
                nickname: nickname.to_string(),
                text: None,
                prev_nickname: None,
                reason: Some(reason),
                timestamp: timestamp_now(),
            };
            let msg_id = format!("exit:{}", occupant.occupant_id);
            Some(publish(state, event, Some(msg_id)).await?.event.counter)
        }
        None => None,
    };
    Ok(counter)
}

/// Records that an occupant is active now, unless it was recorded moments ago.
pub async fn touch(state: &ApiState, occupant: &OccupantId) {
    let now = now_ms();
    // A value fresher than a ninth of the timeout (10 s of 90) needs no rewrite: a chatty
    // occupant costs one presence write per interval, not one per say.
    let refresh_ms = (millis(state.config.presence_timeout) / 9).min(10_000);
    let seen = state.presence_mirror.get(occupant.as_str()).unwrap_or(0);
    if now.saturating_sub(seen) < refresh_ms {
        return;
    }
    if let Err(err) = state
        .presence
        .put(occupant.as_str(), now.to_string().into())
        .await
    {
        tracing::warn!(error = %err, "presence not recorded");
    }
}

/// When a session was last active: its own last use, or the latest presence of its occupants
/// (an occupant that observes keeps its session alive).
pub fn session_last_active(state: &ApiState, record: &SessionRecord) -> u64 {
    record
        .occupants
        .iter()
        .filter_map(|key| key.rsplit('.').next())
        .filter_map(|occupant| state.presence_mirror.get(occupant))
        .fold(record.last_used_ms, u64::max)
}

/// How long after entering an occupant whose session is gone counts as orphaned (its session
/// was destroyed while it entered). Far above mirror lag, so a brand-new session never counts.
const ORPHAN_GRACE_MS: u64 = 10_000;

/// Reaps until `shutdown` fires; `link` is up while NATS is connected.
pub async fn reap_forever(state: ApiState, link: Arc<Signal>, shutdown: CancellationToken) {
    let mut ticks =
        tokio::time::interval(state.config.reap_interval.max(Duration::from_millis(50)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        if let Some(since) = recording_since(&state, &link) {
            let counted_from_ms = now_ms().saturating_sub(millis(since.elapsed()));
            reap_once(&state, counted_from_ms).await;
            state.metrics.reaper_passes.inc();
        }
    }
}

/// Since when presence has been recordable and visible without a break: the latest moment
/// the NATS link or one of the reaper's mirrors came (back) up; `None` while one is down.
fn recording_since(state: &ApiState, link: &Signal) -> Option<Instant> {
    let since: Option<Vec<Instant>> = [
        link.up_since(),
        state.occupants_mirror.live_since(),
        state.presence_mirror.live_since(),
        state.sessions_mirror.live_since(),
    ]
    .into_iter()
    .collect();
    since?.into_iter().max()
}

/// One pass: make silent and orphaned occupants leave, then expire unused sessions. Silence
/// is counted from `counted_from_ms` at the earliest (when presence became recordable).
pub async fn reap_once(state: &ApiState, counted_from_ms: u64) {
    let now = now_ms();
    let presence_age_ms = millis(lingr_platform::nats::PRESENCE_MAX_AGE);
    state
        .presence_mirror
        .retain(|_, seen| now.saturating_sub(*seen) <= presence_age_ms);
    let timeout_ms = millis(state.config.presence_timeout);
    for (_, occupant) in state.occupants_mirror.snapshot() {
        let seen = state
            .presence_mirror
            .get(occupant.occupant_id.as_str())
            .unwrap_or(0)
            .max(occupant.entered_ms)
            .max(counted_from_ms);
        let reason = if now.saturating_sub(seen) > timeout_ms {
            ExitReason::Timeout
        } else if now.saturating_sub(occupant.entered_ms) > ORPHAN_GRACE_MS
            && !state.sessions_mirror.contains(&occupant.session_tag)
        {
            ExitReason::SessionDestroyed
        } else {
            continue;
        };
        match leave(state, &occupant, reason).await {
            Ok(_) => {
                state.metrics.presence_timeouts.inc();
                tracing::info!(room.id = %occupant.room, occupant.id = %occupant.occupant_id, ?reason, "occupant made to leave");
            }
            Err(err) => tracing::warn!(
                code = err.code.as_str(),
                "making an occupant leave failed; next pass retries"
            ),
        }
    }
    let ttl_ms = millis(state.config.session_ttl);
    for (tag, record) in state.sessions_mirror.snapshot() {
        let last_active = session_last_active(state, &record).max(counted_from_ms);
        if now.saturating_sub(last_active) <= ttl_ms {
            continue;
        }
        match sessions::end_session(state, &tag, &record, ExitReason::Timeout).await {
            Ok(()) => {
                state.metrics.sessions_expired.inc();
            }
            Err(err) => tracing::warn!(
                code = err.code.as_str(),
                "expiring a session failed; next pass retries"
            ),
        }
    }
}
