//! The durable consumer that writes every event to SQL.
//!
//! Messages are taken in whatever batch is ready (at most 256), inserted in one transaction,
//! and acknowledged one by one only after the commit. A crash before the acks means
//! redelivery, and the insert ignores counters already stored: exactly-once rows from
//! at-least-once delivery.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::stream::Stream;
use async_nats::jetstream::Message;
use futures::StreamExt as _;
use lingr_platform::metrics::{Counter, Gauge, Histogram, Metrics};
use lingr_platform::readiness::Signal;
use lingr_platform::supervise;
use lingr_platform::telemetry;
use lingr_proto::{subjects, Event};
use tokio_util::sync::CancellationToken;
use tracing::Span;

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

/// What the persister reports at `/metrics`.
#[derive(Clone)]
pub struct PersistMetrics {
    /// Events written (redeliveries ignored by the insert included).
    pub stored: Counter,
    /// Seconds from an event's storing in the stream to its commit in SQL.
    pub lag: Histogram,
    /// Events in the stream the consumer has not been handed yet, as of its last message.
    pub pending: Gauge,
    /// Seconds since the oldest event handed to history and not yet committed was stored: it
    /// grows while a batch keeps failing, and is 0 once everything handed over is written.
    pub unwritten: Gauge,
}

impl PersistMetrics {
    /// Registers the persister's series.
    pub fn register(metrics: &Metrics) -> Self {
        Self {
            stored: metrics.counter(
                "lingr_history_events_stored",
                "Events written to SQL (including redeliveries ignored).",
            ),
            lag: metrics.latency(
                "lingr_history_lag_seconds",
                "From an event's storing in the stream to its commit in SQL.",
            ),
            pending: metrics.gauge(
                "lingr_history_consumer_pending",
                "Events in the stream not yet handed to the history consumer.",
            ),
            unwritten: metrics.gauge(
                "lingr_history_unwritten_seconds",
                "Age of the oldest event handed to history and not yet committed (0 when none).",
            ),
        }
    }
}

/// Persists events until `shutdown` fires; `ready` is up while consuming, and stays down
/// after a batch failed until one commits: a batch that always fails (the database refuses
/// it, or is away) must not look ready between its attempts.
pub async fn persist_forever(
    stream: Stream,
    store: Store,
    ready: Arc<Signal>,
    metrics: PersistMetrics,
    shutdown: CancellationToken,
) {
    let failing = AtomicBool::new(false);
    let (stream, store, ready, metrics, failing) = (&stream, &store, &ready, &metrics, &failing);
    supervise::restart_until_cancelled(
        "history consumer",
        &shutdown,
        Duration::from_millis(200),
        || async move {
            let consumed = consume(stream, store, ready, metrics, failing).await;
            // Not ready while it is not persisting (after the grace: see readiness).
            ready.down();
            consumed
        },
    )
    .await;
}

async fn consume(
    stream: &Stream,
    store: &Store,
    ready: &Signal,
    metrics: &PersistMetrics,
    failing: &AtomicBool,
) -> anyhow::Result<()> {
    let mut consumer = stream
        .get_or_create_consumer(subjects::HISTORY_CONSUMER, consumer_config())
        .await?;
    // A batch that failed here may have been written by another replica since: with nothing
    // left to write, nothing is failing.
    if failing.load(Ordering::Relaxed) {
        let info = consumer.info().await?;
        if info.num_pending == 0 && info.num_ack_pending == 0 {
            failing.store(false, Ordering::Relaxed);
        }
    }
    let mut batches = consumer.messages().await?.ready_chunks(BATCH);
    if !failing.load(Ordering::Relaxed) {
        ready.up();
    }
    while let Some(batch) = batches.next().await {
        let messages = batch.into_iter().collect::<Result<Vec<Message>, _>>()?;
        // Each row's span continues the trace of its event and ends with the commit.
        let (rows, writes): (Vec<Row>, Vec<Span>) = messages.iter().filter_map(row_of).unzip();
        note_unwritten(metrics, &messages);
        // Until the commit succeeds nothing is acknowledged; redelivery brings it back.
        if let Err(err) = insert(store, &rows).await {
            failing.store(true, Ordering::Relaxed);
            return Err(err);
        }
        drop(writes);
        failing.store(false, Ordering::Relaxed);
        metrics.unwritten.set(0);
        ready.up();
        // The worst instant for a crash: committed, and nothing acknowledged.
        fail::fail_point!("history::persist::committed", |_| {
            lingr_platform::faults::crash()
        });
        metrics.stored.inc_by(rows.len() as u64);
        note_progress(metrics, &messages);
        for message in &messages {
            if let Err(err) = message.ack().await {
                tracing::warn!(error = %err, "ack failed; the event will be redelivered and ignored");
            }
        }
    }
    anyhow::bail!("the consumer's message stream ended")
}

/// Writes `rows` in one transaction (or, in a fault test, refuses them as a database might).
async fn insert(store: &Store, rows: &[Row]) -> anyhow::Result<()> {
    fail::fail_point!("history::persist::insert", |_| {
        anyhow::bail!("the fault point history::persist::insert refused the batch")
    });
    store.insert(rows).await
}

/// Records how long ago the oldest of `messages` (about to be written) was stored, and how many
/// events wait behind them.
fn note_unwritten(metrics: &PersistMetrics, messages: &[Message]) {
    let now = time::OffsetDateTime::now_utc();
    let oldest = messages
        .iter()
        .filter_map(|m| m.info().ok().map(|info| info.published))
        .min();
    if let Some(oldest) = oldest {
        let age = (now - oldest).max(time::Duration::ZERO);
        metrics.unwritten.set(age.whole_seconds());
    }
    note_pending(metrics, messages);
}

/// Records how many events the stream holds for history beyond `messages`.
fn note_pending(metrics: &PersistMetrics, messages: &[Message]) {
    if let Some(info) = messages.last().and_then(|m| m.info().ok()) {
        metrics
            .pending
            .set(i64::try_from(info.pending).unwrap_or(i64::MAX));
    }
}

/// Records how long the committed `messages` waited since they were stored.
fn note_progress(metrics: &PersistMetrics, messages: &[Message]) {
    let now = time::OffsetDateTime::now_utc();
    for message in messages {
        if let Ok(info) = message.info() {
            let waited = (now - info.published).max(time::Duration::ZERO);
            metrics.lag.observe(waited.as_seconds_f64());
        }
    }
}

fn row_of(message: &Message) -> Option<(Row, Span)> {
    let counter = message.info().ok()?.stream_sequence;
    let event: Event = match serde_json::from_slice(&message.payload) {
        Ok(event) => event,
        Err(err) => {
            tracing::warn!(counter, error = %err, "skipping a message that is not a room event");
            return None;
        }
    };
    let body = String::from_utf8(event.to_stored_json(counter).to_vec()).ok()?;
    let row = Row {
        counter,
        room: event.room.to_string(),
        kind: serde_json::to_value(event.kind).ok()?.as_str()?.to_owned(),
        body,
    };
    let span = write_span(&row, telemetry::context_of(message.headers.as_ref()));
    Some((row, span))
}

/// The span of a row's write, in the trace its event came with.
fn write_span(row: &Row, trace: Option<telemetry::SpanContext>) -> Span {
    let span = tracing::info_span!(
        "history write",
        otel.kind = "consumer",
        room.id = %row.room,
        counter = row.counter,
    );
    if let Some(parent) = &trace {
        telemetry::continue_remote(&span, parent);
    }
    tracing::debug!(
        parent: &span,
        trace_id = telemetry::trace_id(trace.as_ref()),
        "persisting event"
    );
    span
}
