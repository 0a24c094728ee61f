//! Answers `lingr.history.recent` requests from the api: the last message events of a room
//! before a counter, for `room/enter`.
//!
//! The answer waits (briefly) until the shared consumer has persisted everything before that
//! counter, so a message said just before an enter is not missing from it. One task per
//! replica watches the consumer's progress, and only while someone waits; at most
//! [`CONCURRENT`] requests are answered at once, and beyond that a request is answered at
//! once, empty and marked incomplete, rather than queued without bound.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::stream::Stream;
use futures::StreamExt as _;
use lingr_platform::metrics::Counter;
use lingr_platform::supervise;
use lingr_proto::api::{RecentReply, RecentRequest};
use lingr_proto::{subjects, Event};
use tokio::sync::{watch, Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::store::Store;

/// How long an answer waits for the consumer to catch up.
const CATCH_UP: Duration = Duration::from_secs(2);
/// How often the consumer's progress is read while someone waits for it.
const POLL: Duration = Duration::from_millis(20);
/// Requests answered at once by one replica.
pub const CONCURRENT: usize = 64;

/// Serves requests until `shutdown` fires, subscribing again whenever the subscription fails or
/// ends.
pub async fn serve_forever(
    client: async_nats::Client,
    stream: Stream,
    store: Store,
    refused: Counter,
    shutdown: CancellationToken,
) {
    let persisted = Arc::new(Persisted::default());
    let watcher = tokio::spawn(Arc::clone(&persisted).watch(stream, shutdown.clone()));
    let places = Arc::new(Semaphore::new(CONCURRENT));
    let serving = Serving {
        client,
        store,
        refused,
        persisted,
        places,
    };
    let (serving, stop) = (&serving, &shutdown);
    supervise::restart_until_cancelled(
        "answering recent-message requests",
        &shutdown,
        Duration::from_secs(1),
        || async move { serving.serve(stop).await },
    )
    .await;
    let _ = watcher.await;
}

/// What answering requests shares.
struct Serving {
    client: async_nats::Client,
    store: Store,
    refused: Counter,
    persisted: Arc<Persisted>,
    places: Arc<Semaphore>,
}

impl Serving {
    /// Subscribes and answers until the subscription ends or `shutdown` fires.
    async fn serve(&self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let mut requests = self
            .client
            .queue_subscribe(subjects::HISTORY_RECENT, subjects::HISTORY_QUEUE.to_owned())
            .await?;
        loop {
            let request = tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                request = requests.next() => match request {
                    Some(request) => request,
                    None => anyhow::bail!("the subscription ended"),
                },
            };
            let Some(reply_to) = request.reply else {
                continue;
            };
            let Ok(place) = Arc::clone(&self.places).try_acquire_owned() else {
                self.refused.inc();
                tracing::debug!("too many recent-message requests at once; answering one empty");
                send(&self.client, reply_to, &incomplete()).await;
                continue;
            };
            let (client, store) = (self.client.clone(), self.store.clone());
            let persisted = Arc::clone(&self.persisted);
            tokio::spawn(async move {
                let _place = place;
                let reply = match serde_json::from_slice::<RecentRequest>(&request.payload) {
                    Ok(asked) => answer(&persisted, &store, &asked).await,
                    Err(_) => {
                        tracing::warn!("malformed recent-messages request");
                        incomplete()
                    }
                };
                send(&client, reply_to, &reply).await;
            });
        }
    }
}

fn incomplete() -> RecentReply {
    RecentReply {
        messages: Vec::new(),
        complete: false,
    }
}

async fn send(client: &async_nats::Client, reply_to: async_nats::Subject, reply: &RecentReply) {
    match serde_json::to_vec(reply) {
        Ok(payload) => {
            if let Err(err) = client.publish(reply_to, payload.into()).await {
                tracing::warn!(error = %err, "cannot answer a recent-messages request");
            }
        }
        Err(err) => tracing::error!(error = %err, "cannot serialize recent messages"),
    }
}

async fn answer(persisted: &Persisted, store: &Store, asked: &RecentRequest) -> RecentReply {
    let complete = persisted.caught_up(asked.before.saturating_sub(1)).await;
    let limit = asked.limit.min(lingr_proto::api::GET_MESSAGES_MAX);
    let messages = match store
        .recent_messages(&asked.room, asked.before, limit)
        .await
    {
        Ok(bodies) => bodies
            .iter()
            .filter_map(|b| serde_json::from_str::<Event>(b).ok())
            .collect(),
        Err(err) => {
            tracing::warn!(error = %format!("{err:#}"), "reading recent messages failed");
            return incomplete();
        }
    };
    RecentReply { messages, complete }
}

/// How far the shared consumer has persisted, read by one task for every waiting request.
#[derive(Default)]
struct Persisted {
    upto: watch::Sender<u64>,
    wanted: Notify,
}

impl Persisted {
    /// Waits until every event up to `counter` is persisted; false if that takes too long.
    async fn caught_up(&self, counter: u64) -> bool {
        let mut upto = self.upto.subscribe();
        if *upto.borrow() >= counter {
            return true;
        }
        self.wanted.notify_one();
        tokio::time::timeout(CATCH_UP, upto.wait_for(|persisted| *persisted >= counter))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Reads the consumer's progress every [`POLL`] while anyone waits, and not otherwise.
    async fn watch(self: Arc<Self>, stream: Stream, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.wanted.notified() => {}
            }
            while self.upto.receiver_count() > 0 {
                if let Ok(info) = stream.consumer_info(subjects::HISTORY_CONSUMER).await {
                    // Everything acknowledged is persisted; with nothing in flight, so is
                    // everything delivered.
                    let drained = info.num_pending == 0 && info.num_ack_pending == 0;
                    let mut upto = info.ack_floor.stream_sequence;
                    if drained {
                        upto = upto.max(info.delivered.stream_sequence);
                    }
                    self.upto.send_modify(|known| *known = (*known).max(upto));
                }
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(POLL) => {}
                }
            }
        }
    }
}
