//! The reaper: an occupant is present while it observes or calls the API, and the reaper makes
//! silent ones leave with `reason: timeout` (through [`crate::occupants::leave`]), finishes
//! leaves that stopped half-way, and expires sessions unused for the session TTL.
//!
//! Every api replica runs the reaper. The exit event is published with the `Nats-Msg-Id`
//! `exit:<occupant>`, so however many replicas (or a racing `room/exit`) make the same occupant
//! leave, JetStream stores one exit event.
//!
//! An outage is not silence (guarantee 8): while NATS or a bucket the reaper reads is out of
//! reach (the connection is down, a round trip fails, a mirror's watch is down), presence
//! cannot be recorded or seen, so the reaper pauses, and once they are back it counts an
//! occupant's silence from that moment at the earliest: everyone gets one whole presence
//! timeout to be seen again. An outage only some comets see (a partition between a comet and
//! NATS) is not detected here: their observers' presence goes unrecorded and can time out.

use std::sync::Arc;
use std::time::Duration;

use lingr_platform::clock::{millis, now_ms};
use lingr_platform::readiness::Signal;
use lingr_proto::ExitReason;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::occupants::{end_session, leave, session_last_active};
use crate::state::ApiState;

/// How long after entering an occupant whose session is gone counts as orphaned (its session
/// was destroyed while it entered). Far above mirror lag, so a brand-new session never counts.
const ORPHAN_GRACE_MS: u64 = 10_000;

/// Reaps until `shutdown` fires; `link` is up while NATS is connected.
pub async fn reap_forever(state: ApiState, link: Arc<Signal>, shutdown: CancellationToken) {
    let mut ticks =
        tokio::time::interval(state.config.reap_interval.max(Duration::from_millis(50)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A server that hangs (a partition, a stopped process) leaves the connection up until
    // pings time out, minutes later: one round trip a pass tells sooner.
    let answering = Signal::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        match tokio::time::timeout(ROUND_TRIP_LIMIT, state.client.flush()).await {
            Ok(Ok(())) => answering.up(),
            _ => answering.down(),
        }
        if let Some(since) = recording_since(&state, &[&link, &answering]) {
            let counted_from_ms = now_ms().saturating_sub(millis(since.elapsed()));
            reap_once(&state, counted_from_ms).await;
            state.metrics.reaper_passes.inc();
        }
    }
}

/// How long the reaper's round trip to NATS may take before the server counts as away.
const ROUND_TRIP_LIMIT: Duration = Duration::from_secs(2);

/// Since when presence has been recordable and visible without a break: the latest moment
/// NATS (each of `nats`) or one of the reaper's mirrors came (back) up; `None` while one is
/// down.
fn recording_since(state: &ApiState, nats: &[&Signal]) -> Option<Instant> {
    let mirrors = [
        state.occupants_mirror.live_since(),
        state.presence_mirror.live_since(),
        state.sessions_mirror.live_since(),
    ];
    let since: Option<Vec<Instant>> = nats
        .iter()
        .map(|signal| signal.up_since())
        .chain(mirrors)
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
        let reason = if occupant.leaving {
            // A leave that stopped half-way (its call cut off, its api gone): finish it. Its
            // exit, if published, is deduplicated by its message id.
            ExitReason::Exit
        } else if now.saturating_sub(seen) > timeout_ms {
            ExitReason::Timeout
        } else if now.saturating_sub(occupant.entered_ms) > ORPHAN_GRACE_MS
            && !state.sessions_mirror.contains(&occupant.session_tag)
        {
            ExitReason::SessionDestroyed
        } else {
            continue;
        };
        match leave(state, &occupant, reason).await {
            Ok(left) => {
                // Counted once, by the replica that began the leave.
                if left.first && reason == ExitReason::Timeout {
                    state.metrics.presence_timeouts.inc();
                }
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
        match end_session(state, &tag, &record, ExitReason::Timeout).await {
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
