//! The flags every role shares, each with its environment variable, and the ticket secret.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;

/// Flags common to all roles (`--listen`, `--nats`, `--data-dir`, `--secret`).
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// Address to serve HTTP on.
    #[arg(long, env = "LINGR_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// NATS server URL (for `dev`, omit it to start a private nats-server).
    #[arg(long = "nats", env = "LINGR_NATS_URL")]
    pub nats_url: Option<String>,
    /// History database: `postgres://…` or `sqlite://…` (for `dev`, default
    /// `sqlite://<data-dir>/history.db`).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database: Option<String>,
    /// How long the event stream keeps events, in seconds (history keeps them for good).
    #[arg(long, env = "LINGR_RETENTION", default_value = "604800", value_parser = parse_seconds)]
    pub retention: std::time::Duration,
    /// On how many NATS servers the event stream and buckets are kept: 1 for one server, 3 on
    /// a JetStream cluster (applied when the role creates or updates them).
    #[arg(long, env = "LINGR_STREAM_REPLICAS", default_value = "1")]
    pub stream_replicas: usize,
    /// Directory for local state (`dev`: NATS storage, SQLite, the generated secret).
    #[arg(long, env = "LINGR_DATA_DIR", default_value = "./.lingr")]
    pub data_dir: PathBuf,
    /// The key that signs room tickets; every api and comet replica needs the same one.
    #[arg(long, env = "LINGR_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// The secret being rotated out: tickets it signed still verify until it is removed.
    #[arg(long, env = "LINGR_PREVIOUS_SECRET", hide_env_values = true)]
    pub previous_secret: Option<String>,
    /// Serve `/metrics` on this address only, instead of on `--listen` beside the API.
    #[arg(long, env = "LINGR_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Connection limits.
    #[command(flatten)]
    pub http: crate::server::HttpLimits,
    /// NATS authentication and TLS.
    #[command(flatten)]
    pub nats: crate::nats::NatsOptions,
    /// Readiness and shutdown.
    #[command(flatten)]
    pub lifecycle: LifecycleArgs,
}

/// How a replica turns ready and how it leaves: the flags.
#[derive(Debug, Clone, clap::Args)]
pub struct LifecycleArgs {
    /// Seconds a replica keeps serving after SIGTERM, already not ready, so the load balancer
    /// stops sending to it before it stops taking requests (default 5; 0 for `dev`).
    #[arg(long, env = "LINGR_DRAIN_DELAY", value_parser = parse_seconds)]
    pub drain_delay: Option<Duration>,
    /// Seconds from SIGTERM within which the process exits, whatever is still open (keep it
    /// below the pod's terminationGracePeriodSeconds).
    #[arg(long, env = "LINGR_DRAIN_TIMEOUT", default_value = "25", value_parser = parse_seconds)]
    pub drain_timeout: Duration,
    /// Seconds NATS or a consumer may be down before `/readyz` answers 503, so a momentary
    /// reconnect does not take every replica out of the load balancer at once.
    #[arg(long, env = "LINGR_READINESS_GRACE", default_value = "5", value_parser = parse_seconds)]
    pub readiness_grace: Duration,
}

impl LifecycleArgs {
    /// The settings, with the drain delay defaulting to `default_delay`.
    pub fn resolve(&self, default_delay: Duration) -> Lifecycle {
        Lifecycle {
            drain_delay: self.drain_delay.unwrap_or(default_delay),
            drain_timeout: self.drain_timeout,
            readiness_grace: self.readiness_grace,
        }
    }
}

/// How a replica turns ready and how it leaves.
#[derive(Debug, Clone, Copy)]
pub struct Lifecycle {
    /// How long it keeps serving, not ready, after SIGTERM.
    pub drain_delay: Duration,
    /// How long after SIGTERM it exits at the latest.
    pub drain_timeout: Duration,
    /// How long a dependency may be down before it is not ready.
    pub readiness_grace: Duration,
}

impl Default for Lifecycle {
    /// For a process in tests and on a laptop: no drain delay.
    fn default() -> Self {
        Self {
            drain_delay: Duration::ZERO,
            drain_timeout: Duration::from_secs(25),
            readiness_grace: Duration::from_secs(5),
        }
    }
}

/// The secret given, or for `dev` one generated once and kept in `<data-dir>/secret`, which
/// only this user may read.
///
/// # Errors
/// When no secret is given and `generate` is false, or the data dir cannot be written.
pub fn secret_or_generate(
    given: Option<&str>,
    data_dir: &Path,
    generate: bool,
) -> anyhow::Result<Vec<u8>> {
    if let Some(secret) = given {
        refuse_placeholder("--secret (LINGR_SECRET)", secret)?;
        anyhow::ensure!(
            secret.len() >= 16,
            "--secret must be at least 16 characters"
        );
        return Ok(secret.as_bytes().to_vec());
    }
    anyhow::ensure!(
        generate,
        "--secret (LINGR_SECRET) is required for this role"
    );
    create_private_dir(data_dir)?;
    let path = data_dir.join("secret");
    if let Ok(existing) = std::fs::read_to_string(&path) {
        if existing.trim().len() >= 16 {
            // A secret written by an older version may be readable by everyone.
            restrict_to_owner(&path)?;
            return Ok(existing.trim().as_bytes().to_vec());
        }
    }
    let mut bytes = [0u8; 32];
    random_bytes(&mut bytes)?;
    let secret = lingr_proto::values::hex(&bytes);
    write_private(&path, secret.as_bytes())?;
    Ok(secret.into_bytes())
}

/// What the example secrets in `deploy/k8s` hold until someone replaces them.
pub const PLACEHOLDER: &str = "REPLACE_ME";

/// Refuses a value still holding the deployment examples' placeholder: a cluster started with
/// a published secret is open to anyone who read the repository.
///
/// # Errors
/// When `value` contains [`PLACEHOLDER`].
pub fn refuse_placeholder(what: &str, value: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        !value.contains(PLACEHOLDER),
        "{what} still holds the {PLACEHOLDER} placeholder of deploy/k8s; set a real value"
    );
    Ok(())
}

/// The previous secret, checked as [`secret_or_generate`] checks a given one.
///
/// # Errors
/// When it is shorter than 16 characters.
pub fn previous_secret(given: Option<&str>) -> anyhow::Result<Option<Vec<u8>>> {
    given
        .map(|secret| {
            refuse_placeholder("--previous-secret (LINGR_PREVIOUS_SECRET)", secret)?;
            anyhow::ensure!(
                secret.len() >= 16,
                "--previous-secret must be at least 16 characters"
            );
            Ok(secret.as_bytes().to_vec())
        })
        .transpose()
}

/// Creates `dir` (and its parents) readable by this user only; an existing one is narrowed.
///
/// # Errors
/// When it cannot be created or its mode cannot be set.
pub fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating data dir {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("making {} private", dir.display()))
}

/// Writes `contents` to a new file at `path` that only this user may read or write.
///
/// # Errors
/// When the file cannot be written.
pub fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(contents)
        .with_context(|| format!("writing {}", path.display()))?;
    restrict_to_owner(path)
}

/// Makes an existing file readable and writable by this user only.
///
/// # Errors
/// When its mode cannot be set.
pub fn restrict_to_owner(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("making {} private", path.display()))
}

/// Fills `out` with random bytes from the system source.
///
/// # Errors
/// When the system random source fails (it does not on Linux once booted).
pub fn random_bytes(out: &mut [u8]) -> anyhow::Result<()> {
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), out)
        .map_err(|_| anyhow::anyhow!("the system random source failed"))
}

/// A duration flag in seconds, as clap parses it (`--presence-timeout 90`, `0.5` allowed).
///
/// # Errors
/// When the text is not a non-negative number.
pub fn parse_seconds(raw: &str) -> Result<std::time::Duration, String> {
    let secs: f64 = raw
        .parse()
        .map_err(|_| format!("'{raw}' is not a number of seconds"))?;
    std::time::Duration::try_from_secs_f64(secs)
        .map_err(|_| format!("'{raw}' is not a valid duration"))
}

/// The process's soft limit on open files, read from `/proc/self/limits`; `None` when unlimited
/// or not on Linux.
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}
