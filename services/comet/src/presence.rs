//! Telling the api who is observing, and the observes who has left. An occupant is present
//! while it observes, so the comet records each observing occupant and, every flush interval,
//! writes them to the presence bucket as this replica's batch
//! ([`lingr_proto::records::PresenceBatch`]), in parts of at most [`BATCH_PART_OCCUPANTS`]:
//! a few writes per replica per interval, however many observe here and however often. When
//! an occupant leaves, only its own held observes are woken to end, whatever else waits in the
//! room.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::kv;
use lingr_platform::clock::now_ms;
use lingr_platform::maps::{FastMap, FastSet};
use lingr_proto::records::{presence_batch_key, PresenceBatch, PresenceRecord};
use lingr_proto::OccupantId;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The most occupants in one part of a replica's batch: about 40 bytes each, so a part stays
/// far below NATS's default 1 MB payload limit, and a comet at its connection limit (20,000)
/// writes three parts.
pub const BATCH_PART_OCCUPANTS: usize = 8192;

/// Occupants seen since the last flush, and those holding an observe now.
pub struct Presence {
    /// This process's name in batch keys: random, so a restarted comet never rewrites the
    /// batch of the process it replaced (whose occupants then age out unless seen here).
    replica: String,
    /// How many parts the last flush wrote: parts past a shrunken batch are deleted.
    parts_written: AtomicUsize,
    inner: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    touched: FastSet<String>,
    holding: FastMap<String, Holding>,
}

impl Seen {
    fn touch(&mut self, occupant: &str) {
        if !self.touched.contains(occupant) {
            self.touched.insert(occupant.to_owned());
        }
    }
}

/// An occupant's held observes: how many, and the signal that ends them when it leaves.
struct Holding {
    observes: u32,
    departure: Arc<Departure>,
}

/// That an occupant has left: a flag that stays set, so an observe that was not waiting at
/// the moment (reading the stream, between two waits) still sees it, and a wake-up for the
/// ones that were.
#[derive(Default)]
pub struct Departure {
    left: AtomicBool,
    notify: Notify,
}

impl Departure {
    /// Whether the occupant has left.
    pub fn has_left(&self) -> bool {
        self.left.load(Ordering::SeqCst)
    }

    /// Fires when the occupant leaves (enable it, then check [`Departure::has_left`]).
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
    }
}

impl Presence {
    /// Presence of a new replica.
    ///
    /// # Errors
    /// When the system random source fails.
    pub fn new() -> anyhow::Result<Self> {
        let mut id = [0u8; 8];
        lingr_platform::config::random_bytes(&mut id)?;
        Ok(Self {
            replica: lingr_proto::values::hex(&id),
            parts_written: AtomicUsize::new(0),
            inner: Mutex::new(Seen::default()),
        })
    }

    /// An observe by `occupant` starts; the returned signal tells if the occupant leaves.
    pub fn start(&self, occupant: &str) -> Arc<Departure> {
        let Ok(mut seen) = self.inner.lock() else {
            return Arc::new(Departure::default());
        };
        seen.touch(occupant);
        // Looked up before inserting: a re-observe finds its occupant without copying the key.
        if let Some(holding) = seen.holding.get_mut(occupant) {
            holding.observes += 1;
            return Arc::clone(&holding.departure);
        }
        let departure = Arc::new(Departure::default());
        seen.holding.insert(
            occupant.to_owned(),
            Holding {
                observes: 1,
                departure: Arc::clone(&departure),
            },
        );
        departure
    }

    /// An observe by `occupant` ends.
    pub fn end(&self, occupant: &str) {
        if let Ok(mut seen) = self.inner.lock() {
            seen.touch(occupant);
            if let Some(holding) = seen.holding.get_mut(occupant) {
                holding.observes = holding.observes.saturating_sub(1);
                if holding.observes == 0 {
                    seen.holding.remove(occupant);
                }
            }
        }
    }

    /// `occupant` left its room: its held observes wake to end.
    pub fn depart(&self, occupant: &str) {
        if let Ok(seen) = self.inner.lock() {
            if let Some(holding) = seen.holding.get(occupant) {
                holding.departure.left.store(true, Ordering::SeqCst);
                holding.departure.notify.notify_waiters();
            }
        }
    }

    /// Everyone to report now, clearing what was touched.
    fn take(&self) -> Vec<OccupantId> {
        let Ok(mut seen) = self.inner.lock() else {
            return Vec::new();
        };
        let mut report: FastSet<String> = std::mem::take(&mut seen.touched);
        report.extend(seen.holding.keys().cloned());
        drop(seen);
        // Each came from a verified ticket, so each parses.
        report
            .into_iter()
            .filter_map(|occupant| OccupantId::parse(&occupant).ok())
            .collect()
    }

    /// Writes last-seen times every `interval` until `shutdown` fires, then once more.
    pub async fn flush_forever(
        &self,
        bucket: kv::Store,
        interval: Duration,
        shutdown: CancellationToken,
    ) {
        let mut ticks = tokio::time::interval(interval.max(Duration::from_millis(20)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let stop = tokio::select! {
                () = shutdown.cancelled() => true,
                _ = ticks.tick() => false,
            };
            self.flush(&bucket).await;
            if stop {
                return;
            }
        }
    }

    async fn flush(&self, bucket: &kv::Store) {
        let at_ms = now_ms();
        let occupants = self.take();
        let parts: Vec<bytes::Bytes> = occupants
            .chunks(BATCH_PART_OCCUPANTS)
            .filter_map(|part| {
                let batch = PresenceRecord::Batch(PresenceBatch {
                    at_ms,
                    occupants: part.to_vec(),
                });
                serde_json::to_vec(&batch).ok().map(bytes::Bytes::from)
            })
            .collect();
        let written = parts.len();
        let before = self.parts_written.swap(written, Ordering::SeqCst);
        let writes = parts.into_iter().enumerate().map(|(part, batch)| {
            let key = presence_batch_key(&self.replica, part);
            async move { bucket.put(key, batch).await.is_err() }
        });
        let failed_writes = futures::future::join_all(writes).await;
        // Parts a shrunken batch no longer fills. Deleting one lowers nobody's last-seen time:
        // the api keeps the latest time it saw each occupant at.
        let deletes = (written..before).map(|part| {
            let key = presence_batch_key(&self.replica, part);
            async move { bucket.delete(key).await.is_err() }
        });
        let failed_deletes = futures::future::join_all(deletes).await;
        let failures = failed_writes
            .iter()
            .chain(&failed_deletes)
            .filter(|failed| **failed)
            .count();
        if failures > 0 {
            tracing::warn!(
                failures,
                "some presence writes failed; their occupants are written again next flush only if still observing"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OCCUPANT: &str = "o_0123456789abcdef0123456789abcdef";

    #[test]
    fn an_occupant_holds_until_its_last_observe_ends_and_a_departure_reaches_every_one() {
        let presence = Presence::new().expect("presence");
        let first = presence.start(OCCUPANT);
        let second = presence.start(OCCUPANT);
        assert!(Arc::ptr_eq(&first, &second), "one signal per occupant");
        presence.end(OCCUPANT);
        presence.depart(OCCUPANT);
        assert!(first.has_left() && second.has_left());
        presence.end(OCCUPANT);
        // After its last observe ended, a new one starts with a signal of its own: an
        // occupant that entered again is not taken for the one that left.
        let again = presence.start(OCCUPANT);
        assert!(!again.has_left());
        presence.end(OCCUPANT);
        assert_eq!(
            presence.take().len(),
            1,
            "reported once, however often seen"
        );
        assert!(presence.take().is_empty(), "nothing touched or held since");
    }
}
