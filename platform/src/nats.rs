//! Connecting to NATS and creating what Lingr keeps there, using only what nats-server 2.9 has.
//!
//! The event stream `ROOMS` holds one subject per room, with a 2-minute duplicate window for
//! idempotent publishes. Key-value buckets are made by creating their backing stream directly
//! (async-nats' `create_key_value` cannot parse a 2.9 server's account info) and then opening
//! it with `get_key_value`; [`Layout`] fixes how each is configured.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, kv, stream};
use lingr_proto::subjects;
use secrecy::{ExposeSecret as _, SecretString};

use crate::config::refuse_placeholder;
use crate::readiness::Signal;
use tokio_util::sync::CancellationToken;

/// How long the server remembers `Nats-Msg-Id`s for idempotent retries.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// How long a room's record lives unless an enter refreshes it: a room that nobody has
/// entered for this long and that has no history is forgotten (its id becomes 404 again), so
/// room ids made up by the million do not stay in NATS for good.
pub const ROOM_MAX_AGE: Duration = Duration::from_secs(30 * 86_400);

/// How long a presence value lives unless rewritten: far above any presence timeout, so only
/// occupants gone for good age out.
pub const PRESENCE_MAX_AGE: Duration = Duration::from_secs(3600);

/// How to authenticate to a protected NATS server and verify it: flags shared by every role,
/// never logged (secrets print as `[REDACTED]`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct NatsOptions {
    /// A credentials file (JWT and nkey seed) for the NATS account.
    #[arg(long, env = "LINGR_NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,
    /// A file holding an nkey seed.
    #[arg(long, env = "LINGR_NATS_NKEY")]
    pub nats_nkey: Option<PathBuf>,
    /// User name (with `--nats-password`).
    #[arg(long, env = "LINGR_NATS_USER")]
    pub nats_user: Option<String>,
    /// Password (with `--nats-user`).
    #[arg(long, env = "LINGR_NATS_PASSWORD", hide_env_values = true, value_parser = secret)]
    pub nats_password: Option<SecretString>,
    /// An authentication token.
    #[arg(long, env = "LINGR_NATS_TOKEN", hide_env_values = true, value_parser = secret)]
    pub nats_token: Option<SecretString>,
    /// A CA certificate (PEM) to verify the server with; turns TLS on.
    #[arg(long, env = "LINGR_NATS_TLS_CA")]
    pub nats_tls_ca: Option<PathBuf>,
    /// A client certificate (PEM) for mutual TLS, with `--nats-tls-key`.
    #[arg(long, env = "LINGR_NATS_TLS_CERT")]
    pub nats_tls_cert: Option<PathBuf>,
    /// The client certificate's key (PEM).
    #[arg(long, env = "LINGR_NATS_TLS_KEY")]
    pub nats_tls_key: Option<PathBuf>,
}

fn secret(raw: &str) -> Result<SecretString, String> {
    Ok(SecretString::from(raw.to_owned()))
}

impl NatsOptions {
    /// Options authenticating with a token (what `lingr dev` gives its own nats-server).
    pub fn with_token(token: SecretString) -> Self {
        Self {
            nats_token: Some(token),
            ..Self::default()
        }
    }

    async fn apply(
        &self,
        mut options: async_nats::ConnectOptions,
    ) -> anyhow::Result<async_nats::ConnectOptions> {
        if let Some(path) = &self.nats_creds {
            options = options
                .credentials_file(path)
                .await
                .with_context(|| format!("reading NATS credentials {}", path.display()))?;
        }
        if let Some(path) = &self.nats_nkey {
            let seed = std::fs::read_to_string(path)
                .with_context(|| format!("reading NATS nkey seed {}", path.display()))?;
            options = options.nkey(seed.trim().to_owned());
        }
        match (&self.nats_user, &self.nats_password) {
            (Some(user), Some(password)) => {
                refuse_placeholder("--nats-password", password.expose_secret())?;
                options =
                    options.user_and_password(user.clone(), password.expose_secret().to_owned());
            }
            (None, None) => {}
            _ => anyhow::bail!("--nats-user and --nats-password go together"),
        }
        if let Some(token) = &self.nats_token {
            refuse_placeholder("--nats-token (LINGR_NATS_TOKEN)", token.expose_secret())?;
            options = options.token(token.expose_secret().to_owned());
        }
        if let Some(ca) = &self.nats_tls_ca {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        match (&self.nats_tls_cert, &self.nats_tls_key) {
            (Some(cert), Some(key)) => {
                options = options
                    .add_client_certificate(cert.clone(), key.clone())
                    .require_tls(true);
            }
            (None, None) => {}
            _ => anyhow::bail!("--nats-tls-cert and --nats-tls-key go together"),
        }
        Ok(options)
    }
}

/// Connects to NATS, retrying in the background until the server answers, for as long as the
/// process lives. Returns at once; `link` goes up and down with the connection.
///
/// # Errors
/// When the URL is malformed or a credential file cannot be read.
pub async fn connect(
    url: &str,
    name: &str,
    auth: &NatsOptions,
    link: Arc<Signal>,
) -> anyhow::Result<async_nats::Client> {
    let options = async_nats::ConnectOptions::new()
        .name(name)
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(2))
        .reconnect_delay_callback(|attempt| Duration::from_millis((attempt as u64 * 50).min(1000)))
        .event_callback(move |event| {
            match event {
                async_nats::Event::Connected => link.up(),
                async_nats::Event::Disconnected => link.down(),
                _ => {}
            }
            std::future::ready(())
        });
    auth.apply(options)
        .await?
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

/// Where Lingr keeps its state in NATS: the event stream and the key-value buckets, each with
/// one configuration whichever role creates or opens it. (Two roles asking for one bucket with
/// different settings would rewrite each other's configuration at every start.)
#[derive(Clone)]
pub struct Layout {
    js: jetstream::Context,
    retention: Duration,
    replicas: usize,
}

impl Layout {
    /// The layout for a stream keeping events for `retention`, everything kept on `replicas`
    /// servers (1 for one server; 3 on a cluster, so losing a server loses nothing).
    pub fn new(client: async_nats::Client, retention: Duration, replicas: usize) -> Self {
        Self {
            js: jetstream(client),
            retention,
            replicas: replicas.max(1),
        }
    }

    /// How long a bucket keeps a value nobody rewrites (zero: until deleted).
    fn max_age(&self, bucket: &str) -> Duration {
        match bucket {
            subjects::PRESENCE_BUCKET => PRESENCE_MAX_AGE,
            subjects::ROOMS_BUCKET => ROOM_MAX_AGE,
            // A rate bucket idle for longer than it takes to refill is as good as new.
            subjects::RATES_BUCKET => Duration::from_secs(600),
            // An idempotency record lives as long as the stream remembers message ids.
            subjects::IDEMPOTENCY_BUCKET => self.duplicate_window(),
            _ => Duration::ZERO,
        }
    }

    /// JetStream refuses a duplicate window longer than the stream's max age, so a retention
    /// under two minutes shortens the idempotency window to the retention.
    fn duplicate_window(&self) -> Duration {
        DUPLICATE_WINDOW.min(self.retention)
    }

    /// Creates or updates the event stream, and opens it. The stream republishes each event
    /// on its room's live subject, for the comet replicas serving the room.
    ///
    /// # Errors
    /// When JetStream refuses or does not answer, and when the stream was made without
    /// republishing by an earlier Lingr on a nats-server (2.9) that cannot add it.
    pub async fn events(&self) -> anyhow::Result<stream::Stream> {
        let config = stream::Config {
            republish: Some(stream::Republish {
                source: subjects::EVENTS_SUBJECTS.to_owned(),
                destination: subjects::LIVE_SUBJECT_TEMPLATE.to_owned(),
                headers_only: false,
            }),
            name: subjects::EVENTS_STREAM.to_owned(),
            subjects: vec![subjects::EVENTS_SUBJECTS.to_owned()],
            max_age: self.retention,
            duplicate_window: self.duplicate_window(),
            storage: stream::StorageType::File,
            allow_direct: true,
            discard: stream::DiscardPolicy::Old,
            num_replicas: self.replicas,
            ..Default::default()
        };
        if let Err(err) = self.js.create_or_update_stream(config).await {
            let refused = err.to_string();
            if refused.contains("can not change RePublish") {
                anyhow::bail!(
                    "the event stream {} was made by an earlier Lingr without per-room live \
                     subjects, and this nats-server (2.9) cannot add them to it: upgrade \
                     nats-server to 2.10 or later, which Lingr then updates in place ({refused})",
                    subjects::EVENTS_STREAM
                );
            }
            return Err(anyhow::Error::new(err).context("creating the event stream"));
        }
        self.js
            .get_stream(subjects::EVENTS_STREAM)
            .await
            .context("opening the event stream")
    }

    /// Creates (if needed) and opens a key-value bucket keeping one value per key.
    ///
    /// # Errors
    /// When JetStream refuses or does not answer.
    pub async fn bucket(&self, bucket: &str) -> anyhow::Result<kv::Store> {
        let config = stream::Config {
            name: format!("KV_{bucket}"),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: 1,
            max_age: self.max_age(bucket),
            storage: stream::StorageType::File,
            allow_rollup: true,
            deny_delete: true,
            deny_purge: false,
            allow_direct: true,
            discard: stream::DiscardPolicy::New,
            num_replicas: self.replicas,
            ..Default::default()
        };
        self.js
            .create_or_update_stream(config)
            .await
            .with_context(|| format!("creating the {bucket} bucket"))?;
        self.js
            .get_key_value(bucket)
            .await
            .with_context(|| format!("opening the {bucket} bucket"))
    }
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
