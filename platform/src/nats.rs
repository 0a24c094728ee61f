//! Connecting to NATS and creating what Lingr keeps there, using only what nats-server 2.9 has.
//!
//! The event stream `ROOMS` holds one subject per room, with a 2-minute duplicate window for
//! idempotent publishes. Key-value buckets are made by creating their backing stream directly
//! (async-nats' `create_key_value` cannot parse a 2.9 server's account info) and then opening
//! it with `get_key_value`.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, kv, stream};
use lingr_proto::subjects;
use tokio_util::sync::CancellationToken;

/// How long the server remembers `Nats-Msg-Id`s for idempotent retries.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// How long a presence value lives unless rewritten: far above any presence timeout, so only
/// occupants gone for good age out.
pub const PRESENCE_MAX_AGE: Duration = Duration::from_secs(3600);

/// Connects to NATS, retrying in the background until the server answers, for as long as the
/// process lives.
///
/// # Errors
/// When the URL is malformed.
pub async fn connect(url: &str, name: &str) -> anyhow::Result<async_nats::Client> {
    async_nats::ConnectOptions::new()
        .name(name)
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(2))
        .reconnect_delay_callback(|attempt| Duration::from_millis((attempt as u64 * 50).min(1000)))
        .connect(url)
        .await
        .with_context(|| format!("connecting to NATS at {url}"))
}

/// A JetStream context with a request timeout suited to a local server.
pub fn jetstream(client: async_nats::Client) -> jetstream::Context {
    let mut js = jetstream::new(client);
    js.set_timeout(Duration::from_secs(3));
    js
}

/// Repeats `attempt` until it succeeds or `shutdown` fires, waiting up to a second between
/// tries: for setup that must wait for NATS to come up.
///
/// # Errors
/// When `shutdown` fires first.
pub async fn retry<T, F, Fut>(
    what: &str,
    shutdown: &CancellationToken,
    mut attempt: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let mut delay = Duration::from_millis(50);
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(err) => tracing::warn!(error = %format!("{err:#}"), "{what} failed; retrying"),
        }
        tokio::select! {
            () = shutdown.cancelled() => anyhow::bail!("shut down while waiting: {what}"),
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(1));
    }
}

/// Creates or updates the event stream with the given retention.
///
/// JetStream refuses a duplicate window longer than the stream's max age, so a retention
/// under two minutes shortens the idempotency window to the retention.
///
/// # Errors
/// When JetStream refuses or does not answer.
pub async fn ensure_events_stream(
    js: &jetstream::Context,
    retention: Duration,
) -> anyhow::Result<stream::Stream> {
    let config = stream::Config {
        name: subjects::EVENTS_STREAM.to_owned(),
        subjects: vec![subjects::EVENTS_SUBJECTS.to_owned()],
        max_age: retention,
        duplicate_window: DUPLICATE_WINDOW.min(retention),
        storage: stream::StorageType::File,
        allow_direct: true,
        discard: stream::DiscardPolicy::Old,
        ..Default::default()
    };
    js.create_or_update_stream(config)
        .await
        .context("creating the event stream")?;
    js.get_stream(subjects::EVENTS_STREAM)
        .await
        .context("opening the event stream")
}

/// Creates (if needed) and opens a key-value bucket keeping one value per key.
///
/// `max_age` of zero keeps values until deleted.
///
/// # Errors
/// When JetStream refuses or does not answer.
pub async fn ensure_bucket(
    js: &jetstream::Context,
    bucket: &str,
    max_age: Duration,
) -> anyhow::Result<kv::Store> {
    let config = stream::Config {
        name: format!("KV_{bucket}"),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        max_age,
        storage: stream::StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        deny_purge: false,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    };
    js.create_or_update_stream(config)
        .await
        .with_context(|| format!("creating the {bucket} bucket"))?;
    js.get_key_value(bucket)
        .await
        .with_context(|| format!("opening the {bucket} bucket"))
}

/// The state of a bucket's backing stream, asked of the server now. (async-nats'
/// `kv::Store::status` returns the info cached when the bucket was opened, which goes stale.)
///
/// # Errors
/// When JetStream does not answer.
pub async fn bucket_state(store: &kv::Store) -> anyhow::Result<stream::State> {
    let mut backing = store.stream.clone();
    let info = backing
        .info()
        .await
        .with_context(|| format!("reading the {} bucket's state", store.name))?;
    Ok(info.state.clone())
}
