//! The durable consumer that writes every event to SQL.
//!
//! Messages are taken in whatever batch is ready (at most 256), inserted in one transaction,
//! and acknowledged one by one only after the commit. A crash before the acks means
//! redelivery, and the insert ignores counters already stored: exactly-once rows from
//! at-least-once delivery.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::stream::Stream;
use async_nats::jetstream::Message;
use futures::StreamExt as _;
use lingr_platform::metrics::Counter;
use lingr_platform::readiness::Signal;
use lingr_platform::telemetry;
use lingr_proto::{subjects, Event};
use tokio_util::sync::CancellationToken;

use crate::store::{Row, Store};

/// Largest batch written in one transaction.
const BATCH: usize = 256;

/// The shared durable consumer's settings.
pub fn consumer_config() -> pull::Config {
    pull::Config {
        durable_name: Some(subjects::HISTORY_CONSUMER.to_owned()),
        ack_policy: AckPolicy::Explicit,
        // A batch commits in milliseconds; a replica that died holding one hands it on quickly.
        ack_wait: Duration::from_secs(5),
        max_ack_pending: 20_000,
        deliver_policy: DeliverPolicy::All,
        filter_subject: subjects::EVENTS_SUBJECTS.to_owned(),
        ..Default::default()
    }
}

/// Persists events until `shutdown` fires; `ready` is up while consuming.
pub async fn persist_forever(
    stream: Stream,
    store: Store,
    ready: Arc<Signal>,
    stored: Counter,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            result = consume(&stream, &store, &ready, &stored) => {
                // Not ready while it is not persisting (after the grace: see readiness).
                ready.down();
                if let Err(err) = result {
                    tracing::warn!(error = %format!("{err:#}"), "history consumer interrupted; resuming");
                }
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

async fn consume(
    stream: &Stream,
    store: &Store,
    ready: &Signal,
    stored: &Counter,
) -> anyhow::Result<()> {
    let consumer = stream
        .get_or_create_consumer(subjects::HISTORY_CONSUMER, consumer_config())
        .await?;
    let mut batches = consumer.messages().await?.ready_chunks(BATCH);
    ready.up();
    while let Some(batch) = batches.next().await {
        let messages = batch.into_iter().collect::<Result<Vec<Message>, _>>()?;
        let rows: Vec<Row> = messages.iter().filter_map(row_of).collect();
        // Until the commit succeeds nothing is acknowledged; redelivery brings it back.
        store.insert(&rows).await?;
        stored.add(rows.len() as u64);
        for message in &messages {
            if let Err(err) = message.ack().await {
                tracing::warn!(error = %err, "ack failed; the event will be redelivered and ignored");
            }
        }
    }
    anyhow::bail!("the consumer's message stream ended")
}

fn row_of(message: &Message) -> Option<Row> {
    let counter = message.info().ok()?.stream_sequence;
    let event: Event = match serde_json::from_slice(&message.payload) {
        Ok(event) => event,
        Err(err) => {
            tracing::warn!(counter, error = %err, "skipping a message that is not a room event");
            return None;
        }
    };
    tracing::debug!(
        room.id = %event.room,
        counter,
        trace_id = telemetry::trace_id(message.headers.as_ref()).unwrap_or_default(),
        "event persisted"
    );
    let body = String::from_utf8(event.to_stored_json(counter).to_vec()).ok()?;
    Some(Row {
        counter,
        room: event.room.to_string(),
        kind: serde_json::to_value(event.kind).ok()?.as_str()?.to_owned(),
        body,
    })
}
