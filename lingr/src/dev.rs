//! `lingr dev`: everything on one port for a laptop. Without `--nats` it runs its own
//! `nats-server` child (JetStream stored under the data dir, stopped with the process) that
//! only a client holding a freshly generated token may use, so another local user cannot
//! publish into a room; without `--database` history uses SQLite at `<data-dir>/history.db`;
//! without `--secret` it generates one and keeps it in the data dir. The data dir and every
//! file of it holding a secret or messages are readable by this user only.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use lingr_platform::config::{
    create_private_dir, previous_secret, random_bytes, restrict_to_owner, secret_or_generate,
    write_private,
};
use lingr_platform::nats::NatsOptions;
use secrecy::{ExposeSecret as _, SecretString};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use crate::cli::DevArgs;
use crate::process::{serve, Backing, Listeners, Roles};

/// Runs every role in this process until `shutdown` fires.
///
/// # Errors
/// When nats-server is missing or fails, or a role cannot start.
pub async fn run(args: DevArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let common = args.common;
    create_private_dir(&common.data_dir)?;
    let secret = secret_or_generate(common.secret.as_deref(), &common.data_dir, true)?;
    let mut child = None;
    let (nats_url, nats_auth) = match common.nats_url.clone() {
        Some(url) => (url, common.nats.clone()),
        None => {
            let token = generate_token()?;
            let server =
                NatsServer::start(&common.data_dir.join("nats"), None, Some(&token)).await?;
            let url = server.url();
            child = Some(server);
            (url, NatsOptions::with_token(token))
        }
    };
    let database = match common.database.clone() {
        Some(database) => database,
        None => private_sqlite(&common.data_dir.join("history.db"))?,
    };
    let listeners = Listeners::bind(&common).await?;
    let address = listeners.api.local_addr()?;
    println!("Lingr is running at http://{address}/api/  (NATS {nats_url}, history {database})");
    println!("Try: curl 'http://{address}/api/session/create?nickname=alice'    Stop with Ctrl-C.");
    let backing = Backing {
        nats_url,
        nats_auth,
        database: Some(database),
        secret,
        previous_secret: previous_secret(common.previous_secret.as_deref())?,
        retention: common.retention,
        stream_replicas: common.stream_replicas,
        http: common.http,
        // A laptop has no load balancer to wait for.
        lifecycle: common.lifecycle.resolve(Duration::ZERO),
    };
    let roles = Roles {
        api: Some(args.api),
        comet: Some(args.comet),
        history: true,
    };
    let served = serve(&backing, roles, listeners, shutdown).await;
    if let Some(server) = child {
        server.stop().await;
    }
    served
}

/// A random token for the private nats-server.
fn generate_token() -> anyhow::Result<SecretString> {
    let mut bytes = [0u8; 32];
    random_bytes(&mut bytes)?;
    Ok(SecretString::from(lingr_proto::values::hex(&bytes)))
}

/// The SQLite URL of `path`, creating the file first so that it, and the journal files SQLite
/// gives the same mode, are readable by this user only.
fn private_sqlite(path: &Path) -> anyhow::Result<String> {
    if path.exists() {
        restrict_to_owner(path)?;
    } else {
        write_private(path, b"")?;
    }
    Ok(format!("sqlite://{}", path.display()))
}

/// A `nats-server` child process with JetStream, for `dev` and for tests.
pub struct NatsServer {
    child: Child,
    port: u16,
    store_dir: PathBuf,
}

impl NatsServer {
    /// Starts `nats-server` from `PATH` on 127.0.0.1 (a free port unless `port` is given),
    /// storing JetStream under `store_dir`, and waits until it accepts clients. With a
    /// `token`, only clients presenting it are let in; it reaches the server through a
    /// private config file, not the command line, which every local user can read.
    ///
    /// # Errors
    /// When nats-server is not installed (the message says how to install it) or exits early.
    pub async fn start(
        store_dir: &Path,
        port: Option<u16>,
        token: Option<&SecretString>,
    ) -> anyhow::Result<Self> {
        create_private_dir(store_dir)?;
        let port_arg = port.map_or_else(|| "-1".to_owned(), |p| p.to_string());
        let mut command = Command::new("nats-server");
        if let Some(token) = token {
            let config = store_dir.join("lingr-auth.conf");
            let text = format!(
                "authorization {{\n  token: \"{}\"\n}}\n",
                token.expose_secret()
            );
            write_private(&config, text.as_bytes())?;
            command.arg("-c").arg(config);
        }
        let spawned = command
            .args(["-a", "127.0.0.1", "-p", &port_arg, "-js", "-sd"])
            .arg(store_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => anyhow::bail!(
                "nats-server was not found on PATH. Install it (Debian/Ubuntu: `sudo apt-get install nats-server`), \
                 or point lingr at a running server with --nats nats://HOST:4222"
            ),
            Err(err) => return Err(err).context("starting nats-server"),
        };
        let stderr = child.stderr.take().context("nats-server's stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        let mut listening = None;
        let ready = tokio::time::timeout(Duration::from_secs(15), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(address) = line.split("Listening for client connections on ").nth(1) {
                    listening = address
                        .trim()
                        .rsplit(':')
                        .next()
                        .and_then(|p| p.parse::<u16>().ok());
                }
                if line.contains("Server is ready") {
                    return Ok::<bool, std::io::Error>(true);
                }
            }
            Ok(false)
        })
        .await;
        // Keep draining its log so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        match (ready, listening) {
            (Ok(Ok(true)), Some(port)) => Ok(Self {
                child,
                port,
                store_dir: store_dir.to_owned(),
            }),
            _ => {
                let status = child.try_wait().ok().flatten();
                anyhow::bail!("nats-server did not become ready (exit status: {status:?}); is the port taken?")
            }
        }
    }

    /// The client URL.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Where it stores JetStream.
    pub fn store_dir(&self) -> &Path {
        &self.store_dir
    }

    /// Kills it at once (SIGKILL), as a crash would.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    /// Stops it cleanly (SIGTERM, then SIGKILL after 5 s).
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
            if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
                .await
                .is_ok()
            {
                return;
            }
        }
        let _ = self.child.kill().await;
    }
}
