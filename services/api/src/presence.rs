//! The reaper: an occupant is present while it observes or calls the API, and the reaper makes
//! silent ones leave with `reason: timeout` (through [`crate::occupants::leave`]), finishes
//! leaves that stopped half-way, and expires sessions unused for the session TTL.
//!
//! Every api replica runs the reaper. The exit event is published with the `Nats-Msg-Id`
//! `exit:<occupant>`, so however many replicas (or a racing `room/exit`) make the same occupant
//! leave, JetStream stores one exit event.
//!
//! A pass looks only at what is due ([`crate::due`]): an occupant when it could first time out
//! or be orphaned, a session when it could first expire, and any key its mirror saw change.
//! Looked at and still fine, each is scheduled for the next moment it could need action, so
//! an occupant costs about one look per presence timeout, however many are stored.
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
use lingr_proto::records::OccupantRecord;
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
    let mut forgotten_at = Instant::now();
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
        if forgotten_at.elapsed() >= FORGET_EVERY {
            forget_the_long_unseen(&state);
            forgotten_at = Instant::now();
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

/// How often occupants no one has seen for a long time (listed by a batch after they left) are
/// dropped from [`crate::last_seen`], and expired presence values from the mirror.
const FORGET_EVERY: Duration = Duration::from_secs(600);

/// One pass: make silent and orphaned occupants leave, then expire unused sessions, of those
/// due. Silence is counted from `counted_from_ms` at the earliest (when presence became
/// recordable).
pub async fn reap_once(state: &ApiState, counted_from_ms: u64) {
    let now = now_ms();
    let retry_at = now.saturating_add(millis(state.config.reap_interval));
    for key in state.occupants_due.take_due(now) {
        // Gone from the mirror: it left already.
        let Some(occupant) = state.occupants_mirror.get(&key) else {
            continue;
        };
        state.metrics.reaper_checks.inc();
        let reason = match verdict(state, &occupant, now, counted_from_ms) {
            Verdict::Leave(reason) => reason,
            Verdict::LookAgainAt(at_ms) => {
                state.occupants_due.schedule(&key, at_ms);
                continue;
            }
        };
        match leave(state, &occupant, reason).await {
            Ok(left) => {
                // Counted once, by the replica that began the leave.
                if left.first && reason == ExitReason::Timeout {
                    state.metrics.presence_timeouts.inc();
                }
                tracing::info!(room.id = %occupant.room, occupant.id = %occupant.occupant_id, ?reason, "occupant made to leave");
            }
            Err(err) => {
                state.occupants_due.schedule(&key, retry_at);
                tracing::warn!(
                    code = err.code.as_str(),
                    "making an occupant leave failed; next pass retries"
                );
            }
        }
    }
    let ttl_ms = millis(state.config.session_ttl);
    for tag in state.sessions_due.take_due(now) {
        let Some(record) = state.sessions_mirror.get(&tag) else {
            continue;
        };
        state.metrics.reaper_checks.inc();
        let last_active = session_last_active(state, &record).max(counted_from_ms);
        if now.saturating_sub(last_active) <= ttl_ms {
            state
                .sessions_due
                .schedule(&tag, last_active.saturating_add(ttl_ms + 1));
            continue;
        }
        match end_session(state, &tag, &record, ExitReason::Timeout).await {
            Ok(()) => {
                state.metrics.sessions_expired.inc();
            }
            Err(err) => {
                state.sessions_due.schedule(&tag, retry_at);
                tracing::warn!(
                    code = err.code.as_str(),
                    "expiring a session failed; next pass retries"
                );
            }
        }
    }
}

/// What to do with an occupant now.
enum Verdict {
    Leave(ExitReason),
    /// Nothing yet; the earliest moment (Unix ms) something could be due.
    LookAgainAt(u64),
}

fn verdict(state: &ApiState, occupant: &OccupantRecord, now: u64, counted_from_ms: u64) -> Verdict {
    let timeout_ms = millis(state.config.presence_timeout);
    let seen = state
        .last_seen
        .get(occupant.occupant_id.as_str())
        .unwrap_or(0)
        .max(occupant.entered_ms)
        .max(counted_from_ms);
    let orphan_check_at = occupant.entered_ms.saturating_add(ORPHAN_GRACE_MS + 1);
    if occupant.leaving {
        // A leave that stopped half-way (its call cut off, its api gone): finish it. Its
        // exit, if published, is deduplicated by its message id.
        Verdict::Leave(ExitReason::Exit)
    } else if now.saturating_sub(seen) > timeout_ms {
        Verdict::Leave(ExitReason::Timeout)
    } else if now >= orphan_check_at && !state.sessions_mirror.contains(&occupant.session_tag) {
        Verdict::Leave(ExitReason::SessionDestroyed)
    } else {
        let times_out_at = seen.saturating_add(timeout_ms + 1);
        Verdict::LookAgainAt(if now < orphan_check_at {
            times_out_at.min(orphan_check_at)
        } else {
            times_out_at
        })
    }
}

/// Drops what [`FORGET_EVERY`] is for: presence values past the bucket's max age (they expire
/// without a delete marker) and occupants not seen for that long.
fn forget_the_long_unseen(state: &ApiState) {
    let cutoff = now_ms().saturating_sub(millis(lingr_platform::nats::PRESENCE_MAX_AGE));
    state
        .presence_mirror
        .retain(|_, value| value.at_ms() >= cutoff);
    state.last_seen.forget_unseen_since(cutoff);
}
