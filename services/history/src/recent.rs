//! Answers `lingr.history.recent` requests from the api: the last message events of a room
//! before a counter, for `room/enter`.
//!
//! The answer waits (briefly) until the shared consumer has persisted everything before that
//! counter, so a message said just before an enter is not missing from it.

use std::time::Duration;

use async_nats::jetstream::stream::Stream;
use futures::StreamExt as _;
use lingr_proto::api::{RecentReply, RecentRequest};
use lingr_proto::{subjects, Event};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::store::Store;

/// How long an answer waits for the consumer to catch up.
const CATCH_UP: Duration = Duration::from_secs(2);

/// Serves requests until `shutdown` fires.
pub async fn serve_forever(
    client: async_nats::Client,
    stream: Stream,
    store: Store,
    shutdown: CancellationToken,
) {
    let mut requests = match client
        .queue_subscribe(subjects::HISTORY_RECENT, subjects::HISTORY_QUEUE.to_owned())
        .await
    {
        Ok(requests) => requests,
        Err(err) => {
            tracing::error!(error = %err, "cannot subscribe for recent-message requests");
            return;
        }
    };
    loop {
        let request = tokio::select! {
            () = shutdown.cancelled() => return,
            request = requests.next() => match request { Some(r) => r, None => return },
        };
        let (client, stream, store) = (client.clone(), stream.clone(), store.clone());
        tokio::spawn(async move {
            let Some(reply_to) = request.reply else {
                return;
            };
            let Ok(asked) = serde_json::from_slice::<RecentRequest>(&request.payload) else {
                tracing::warn!("malformed recent-messages request");
                return;
            };
            let reply = answer(&stream, &store, &asked).await;
            match serde_json::to_vec(&reply) {
                Ok(payload) => {
                    if let Err(err) = client.publish(reply_to, payload.into()).await {
                        tracing::warn!(error = %err, "cannot answer a recent-messages request");
                    }
                }
                Err(err) => tracing::error!(error = %err, "cannot serialize recent messages"),
            }
        });
    }
}

async fn answer(stream: &Stream, store: &Store, asked: &RecentRequest) -> RecentReply {
    let complete = caught_up(stream, asked.before.saturating_sub(1)).await;
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
            return RecentReply {
                messages: Vec::new(),
                complete: false,
            };
        }
    };
    RecentReply { messages, complete }
}

/// Waits until every event up to `counter` is persisted; false if that takes too long.
async fn caught_up(stream: &Stream, counter: u64) -> bool {
    let deadline = Instant::now() + CATCH_UP;
    loop {
        if let Ok(info) = stream.consumer_info(subjects::HISTORY_CONSUMER).await {
            let drained = info.num_pending == 0 && info.num_ack_pending == 0;
            if info.ack_floor.stream_sequence >= counter
                || (drained && info.delivered.stream_sequence >= counter)
            {
                return true;
            }
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
