//! Telling the api who is observing, and the observes who has left. An occupant is present
//! while it observes, so the comet records each observing occupant and, every flush interval,
//! writes their last-seen time to the presence bucket: at most one write per occupant per
//! interval, however often it observes. When an occupant leaves, only its own held observes are
//! woken to end, whatever else waits in the room.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::kv;
use futures::StreamExt as _;
use lingr_platform::clock::now_ms;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Occupants seen since the last flush, and those holding an observe now.
#[derive(Default)]
pub struct Presence {
    inner: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    touched: HashSet<String>,
    holding: HashMap<String, Holding>,
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
    /// An observe by `occupant` starts; the returned signal tells if the occupant leaves.
    pub fn start(&self, occupant: &str) -> Arc<Departure> {
        let Ok(mut seen) = self.inner.lock() else {
            return Arc::new(Departure::default());
        };
        seen.touched.insert(occupant.to_owned());
        let holding = seen
            .holding
            .entry(occupant.to_owned())
            .or_insert_with(|| Holding {
                observes: 0,
                departure: Arc::new(Departure::default()),
            });
        holding.observes += 1;
        Arc::clone(&holding.departure)
    }

    /// An observe by `occupant` ends.
    pub fn end(&self, occupant: &str) {
        if let Ok(mut seen) = self.inner.lock() {
            seen.touched.insert(occupant.to_owned());
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
    fn take(&self) -> Vec<String> {
        let Ok(mut seen) = self.inner.lock() else {
            return Vec::new();
        };
        let mut report: HashSet<String> = std::mem::take(&mut seen.touched);
        report.extend(seen.holding.keys().cloned());
        report.into_iter().collect()
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
        let now = bytes::Bytes::from(now_ms().to_string());
        let occupants = self.take();
        let failures = futures::stream::iter(occupants)
            .map(|occupant| {
                let now = now.clone();
                async move { bucket.put(occupant.as_str(), now).await.is_err() }
            })
            .buffer_unordered(64)
            .filter(|failed| std::future::ready(*failed))
            .count()
            .await;
        if failures > 0 {
            tracing::warn!(
                failures,
                "some presence writes failed; they are retried next flush only if still observing"
            );
        }
    }
}
