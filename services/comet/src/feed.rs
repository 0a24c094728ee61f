//! The feed: one ordered consumer over every room's subject, applying each event to the hub.
//!
//! It starts after the stream's newest event at startup (older events come by backfill) and,
//! whenever the consumer fails, starts again after the last event it applied, so the hub never
//! skips one.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use async_nats::jetstream::consumer::{push, DeliverPolicy};
use async_nats::jetstream::stream::Stream;
use futures::StreamExt as _;
use lingr_platform::readiness::Signal;
use lingr_platform::supervise;
use lingr_platform::telemetry;
use lingr_proto::subjects;
use tokio_util::sync::CancellationToken;

use crate::hub::{encode_stored, Hub, Origin};
use crate::state::CometMetrics;

/// Follows the stream into `hub` until `shutdown` fires; `ready` is up while consuming.
pub async fn follow(
    stream: Stream,
    client: async_nats::Client,
    hub: Arc<Hub>,
    ready: Arc<Signal>,
    metrics: CometMetrics,
    shutdown: CancellationToken,
) {
    let (stream, client, hub, ready, metrics) = (&stream, &client, &hub, &ready, &metrics);
    supervise::restart_until_cancelled(
        "event feed",
        &shutdown,
        Duration::from_millis(100),
        || async move {
            let consumed = consume(stream, client, hub, ready, metrics).await;
            // Not ready while it is not consuming (after the grace: see readiness).
            ready.down();
            consumed.with_context(|| format!("resuming after counter {}", hub.applied()))
        },
    )
    .await;
}

async fn consume(
    stream: &Stream,
    client: &async_nats::Client,
    hub: &Hub,
    ready: &Signal,
    metrics: &CometMetrics,
) -> anyhow::Result<()> {
    let consumer = stream
        .create_consumer(push::OrderedConfig {
            deliver_subject: client.new_inbox(),
            filter_subject: subjects::EVENTS_SUBJECTS.to_owned(),
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: hub.applied() + 1,
            },
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    ready.up();
    while let Some(message) = messages.next().await {
        let message = message?;
        let info = message.info().map_err(|err| anyhow::anyhow!("{err}"))?;
        let (counter, stored_at) = (info.stream_sequence, SystemTime::from(info.published));
        let room = subjects::room_of_subject(message.subject.as_str());
        match (room, encode_stored(counter, &message.payload)) {
            (Some(room), Some(json)) => {
                let trace = telemetry::context_of(message.headers.as_ref());
                let trace_id = telemetry::trace_id(trace.as_ref());
                if hub.apply(&room, counter, json, Origin { trace, stored_at }) {
                    metrics.events_applied.inc();
                    tracing::debug!(room.id = %room, counter, trace_id, "event delivered to waiters");
                }
            }
            _ => {
                tracing::warn!(counter, subject = %message.subject, "skipping a message that is not a room event");
                hub.skip_to(counter);
            }
        }
    }
    anyhow::bail!("the consumer's message stream ended")
}
