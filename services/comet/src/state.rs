//! The comet's configuration, shared handles, and limits on held observes.

use std::borrow::Borrow;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::kv;
use lingr_platform::config::parse_seconds;
use lingr_platform::maps::FastMap;
use lingr_platform::metrics::{Counter, Family, Gauge, Histogram, Metrics};
use lingr_platform::mirror::KvMirror;
use lingr_platform::server::ClientAddr;
use lingr_platform::ApiError;
use lingr_proto::records::OccupantRecord;
use lingr_proto::ticket::TicketKey;
use lingr_proto::ErrorCode;
use tokio_util::sync::CancellationToken;

use crate::backfill::Backfiller;
use crate::hub::Hub;
use crate::live::Live;
use crate::presence::Presence;

/// The comet's own flags.
#[derive(Debug, Clone, clap::Args)]
pub struct CometConfig {
    /// Observes this replica holds at once; beyond it, observes are refused with 503.
    #[arg(long, env = "LINGR_MAX_HELD_OBSERVES", default_value = "20000")]
    pub max_held_observes: usize,
    /// Observes one session may hold at once on this replica.
    #[arg(long, env = "LINGR_OBSERVES_PER_SESSION", default_value = "4")]
    pub observes_per_session: u32,
    /// Observes one client address (an IPv6 /64) may hold at once on this replica, whatever
    /// its sessions; 0 turns the cap off. Behind a load balancer, set `--trusted-proxies`.
    #[arg(long, env = "LINGR_OBSERVES_PER_ADDRESS", default_value = "256")]
    pub observes_per_address: u32,
    /// Events buffered per room.
    #[arg(long, env = "LINGR_ROOM_BUFFER", default_value = "256")]
    pub room_buffer: usize,
    /// Seconds between writes of observing occupants' presence.
    #[arg(long, env = "LINGR_PRESENCE_FLUSH", default_value = "10", value_parser = parse_seconds)]
    pub presence_flush: Duration,
    /// Seconds after which a room nobody waits on is dropped from memory.
    #[arg(long, env = "LINGR_ROOM_IDLE", default_value = "300", value_parser = parse_seconds)]
    pub room_idle: Duration,
}

impl Default for CometConfig {
    fn default() -> Self {
        Self {
            max_held_observes: 20_000,
            observes_per_session: 4,
            observes_per_address: 256,
            room_buffer: 256,
            presence_flush: Duration::from_secs(10),
            room_idle: Duration::from_secs(300),
        }
    }
}

/// The handles the observe handler shares.
#[derive(Clone)]
pub struct CometState {
    /// The comet's flags.
    pub config: Arc<CometConfig>,
    /// Rooms and their buffers.
    pub hub: Arc<Hub>,
    /// Follows the rooms observed here.
    pub live: Arc<Live>,
    /// Reads older events from the stream.
    pub backfiller: Arc<Backfiller>,
    /// Occupants, for tickets the mirror has not seen yet.
    pub occupants: kv::Store,
    /// A live copy of the occupants bucket.
    pub occupants_mirror: Arc<KvMirror<OccupantRecord>>,
    /// Checks tickets.
    pub tickets: TicketKey,
    /// Who is observing.
    pub presence: Arc<Presence>,
    /// Held-observe limits.
    pub slots: Arc<Slots>,
    /// Fires when the replica drains.
    pub shutdown: CancellationToken,
    /// The comet's metrics.
    pub metrics: CometMetrics,
}

/// The comet's series.
#[derive(Clone)]
pub struct CometMetrics {
    /// Observes held now.
    pub held: Gauge,
    /// Live events applied to the rooms this replica follows.
    pub events_applied: Counter,
    /// Times a followed room found it had lost live events (and restarted after them).
    pub live_gaps: Counter,
    /// Rooms followed now.
    pub rooms_followed: Gauge,
    /// Observes answered, by outcome: `events`, `empty` (timeout or drain) or the error code.
    pub observes: Family<Outcome, Counter>,
    /// Seconds from an event's storing in the stream to a held observe's answer with it.
    pub fanout: Histogram,
    /// Reads of a room's older events from the stream (each shared by every observe of
    /// the room that needed it).
    pub backfills: Counter,
    /// Seconds a read of a room's older events took.
    pub backfill_seconds: Histogram,
}

/// The label of an observe's outcome.
pub type Outcome = [(&'static str, &'static str); 1];

impl CometMetrics {
    pub(crate) fn register(metrics: &Metrics) -> Self {
        Self {
            held: metrics.gauge("lingr_comet_held_observes", "Observes held now."),
            events_applied: metrics.counter(
                "lingr_comet_events_applied",
                "Live events applied to the buffers of the rooms this replica follows.",
            ),
            live_gaps: metrics.counter(
                "lingr_comet_live_gaps",
                "Times a followed room found it had lost live events and restarted after them.",
            ),
            rooms_followed: metrics.gauge(
                "lingr_comet_rooms_followed",
                "Rooms whose live events this replica follows now.",
            ),
            observes: metrics.counters(
                "lingr_comet_observes",
                "Observes answered, by outcome: events, empty (timeout or drain) or the error code.",
            ),
            fanout: metrics.latency(
                "lingr_comet_fanout_seconds",
                "From an event's storing in the stream to a held observe's answer with it.",
            ),
            backfills: metrics.counter(
                "lingr_comet_backfills",
                "Reads of a room's older events from the stream, shared by the observes that needed them.",
            ),
            backfill_seconds: metrics.latency(
                "lingr_comet_backfill_seconds",
                "How long a read of a room's older events from the stream took.",
            ),
        }
    }

    /// Counts an observe answered with `outcome`.
    pub fn answered(&self, outcome: &'static str) {
        self.observes.get_or_create(&[("outcome", outcome)]).inc();
    }
}

/// Counts of held observes, in total, per session and per client address.
pub struct Slots {
    held: AtomicUsize,
    max_held: usize,
    counts: Mutex<Counts>,
    max_per_session: u32,
    max_per_address: u32,
    gauge: Gauge,
}

#[derive(Default)]
struct Counts {
    per_session: FastMap<String, u32>,
    per_address: FastMap<IpAddr, u32>,
}

/// A held observe's place, for the session whose tag it borrows; released on drop.
pub struct Slot<'a> {
    slots: &'a Slots,
    session_tag: &'a str,
    address: Option<IpAddr>,
}

fn too_many_observes(detail: &'static str) -> ApiError {
    ApiError::new(ErrorCode::TooManyObserves, detail)
}

impl Slots {
    pub(crate) fn new(max_held: usize, config: &CometConfig, gauge: Gauge) -> Self {
        Self {
            held: AtomicUsize::new(0),
            max_held,
            counts: Mutex::new(Counts::default()),
            max_per_session: config.observes_per_session,
            max_per_address: config.observes_per_address,
            gauge,
        }
    }

    /// Takes a place for an observe of `session_tag` from `client`.
    ///
    /// # Errors
    /// `overloaded` when the replica is full; `too_many_observes` when the session or the
    /// client address is.
    pub fn acquire<'a>(
        &'a self,
        session_tag: &'a str,
        client: Option<ClientAddr>,
    ) -> Result<Slot<'a>, ApiError> {
        if self.held.fetch_add(1, Ordering::SeqCst) >= self.max_held {
            self.held.fetch_sub(1, Ordering::SeqCst);
            return Err(ApiError::new(
                ErrorCode::Overloaded,
                "this server holds all the observes it can; retry shortly",
            ));
        }
        let address = client
            .filter(|_| self.max_per_address > 0)
            .map(|c| c.limit_ip());
        let refused = {
            let Ok(mut counts) = self.counts.lock() else {
                self.held.fetch_sub(1, Ordering::SeqCst);
                return Err(ApiError::internal(
                    "locking observe counts",
                    "a thread panicked holding them",
                ));
            };
            let session_count = counts.per_session.get(session_tag).copied().unwrap_or(0);
            let address_count = address
                .and_then(|a| counts.per_address.get(&a).copied())
                .unwrap_or(0);
            if session_count >= self.max_per_session {
                Some(too_many_observes("at most 4 observes at once per session"))
            } else if address.is_some() && address_count >= self.max_per_address {
                Some(too_many_observes(
                    "too many observes from this address on this server",
                ))
            } else {
                // Looked up before inserting: a session that holds other observes already
                // (up to four) finds its count without copying its tag.
                match counts.per_session.get_mut(session_tag) {
                    Some(count) => *count += 1,
                    None => {
                        counts.per_session.insert(session_tag.to_owned(), 1);
                    }
                }
                if let Some(address) = address {
                    *counts.per_address.entry(address).or_insert(0) += 1;
                }
                None
            }
        };
        if let Some(error) = refused {
            self.held.fetch_sub(1, Ordering::SeqCst);
            return Err(error);
        }
        self.gauge.inc();
        Ok(Slot {
            slots: self,
            session_tag,
            address,
        })
    }
}

/// Takes one from `key`'s count, forgetting it at zero.
fn release<K, Q>(counts: &mut FastMap<K, u32>, key: &Q)
where
    K: Borrow<Q> + Hash + Eq,
    Q: Hash + Eq + ?Sized,
{
    if let Some(count) = counts.get_mut(key) {
        *count = count.saturating_sub(1);
        if *count == 0 {
            counts.remove(key);
        }
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if let Ok(mut counts) = self.slots.counts.lock() {
            release(&mut counts.per_session, self.session_tag);
            if let Some(address) = &self.address {
                release(&mut counts.per_address, address);
            }
        }
        self.slots.held.fetch_sub(1, Ordering::SeqCst);
        self.slots.gauge.dec();
    }
}

/// Descriptors kept free beside held observes: NATS, the listener, logs, and room to accept the
/// connections that are refused with 503 instead of failing to accept them at all.
const FD_HEADROOM: u64 = 128;

/// The configured limit on held observes, lowered to fit the process's open-files limit: each
/// held observe is a socket, and running out of descriptors would leave clients hanging.
pub(crate) fn held_limit(configured: usize) -> usize {
    let Some(files) = lingr_platform::config::open_files_limit() else {
        return configured;
    };
    let fits = usize::try_from(files.saturating_sub(FD_HEADROOM))
        .unwrap_or(usize::MAX)
        .max(1);
    if fits < configured {
        tracing::warn!(
            configured,
            open_files = files,
            held_limit = fits,
            "lowering --max-held-observes to fit the open-files limit"
        );
    }
    configured.min(fits)
}

/// Drops the rooms nobody waited on for `idle`, which stops following them.
pub(crate) async fn sweep_forever(hub: Arc<Hub>, idle: Duration, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval((idle / 4).max(Duration::from_secs(1)));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => { hub.sweep(idle); }
        }
    }
}
