//! `lingr dev`: everything on one port for a laptop. Without `--nats` it runs its own
//! `nats-server` child (JetStream stored under the data dir, stopped with the process); without
//! `--database` history uses SQLite at `<data-dir>/history.db`; without `--secret` it generates
//! one and keeps it in the data dir.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use lingr_platform::config::secret_or_generate;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use crate::cli::DevArgs;
use crate::process::{serve, Backing, Roles};

/// Runs every role in this process until `shutdown` fires.
///
/// # Errors
/// When nats-server is missing or fails, or a role cannot start.
pub async fn run(args: DevArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let common = args.common;
    std::fs::create_dir_all(&common.data_dir)
        .with_context(|| format!("creating data dir {}", common.data_dir.display()))?;
    let secret = secret_or_generate(common.secret.as_deref(), &common.data_dir, true)?;
    let mut child = None;
    let nats_url = match common.nats_url {
        Some(url) => url,
        None => {
            let server = NatsServer::start(&common.data_dir.join("nats"), None).await?;
            let url = server.url();
            child = Some(server);
            url
        }
    };
    let database = common
        .database
        .unwrap_or_else(|| format!("sqlite://{}", common.data_dir.join("history.db").display()));
    let listener = TcpListener::bind(common.listen)
        .await
        .with_context(|| format!("binding {}", common.listen))?;
    let address = listener.local_addr()?;
    println!("Lingr is running at http://{address}/api/  (NATS {nats_url}, history {database})");
    println!("Try: curl 'http://{address}/api/session/create?nickname=alice'    Stop with Ctrl-C.");
    let backing = Backing {
        nats_url,
        database: Some(database),
        secret,
        retention: common.retention,
    };
    let roles = Roles {
        api: Some(args.api),
        comet: Some(args.comet),
        history: true,
    };
    let served = serve(&backing, roles, listener, shutdown).await;
    if let Some(server) = child {
        server.stop().await;
    }
    served
}

/// A `nats-server` child process with JetStream, for `dev` and for tests.
pub struct NatsServer {
    child: Child,
    port: u16,
    store_dir: PathBuf,
}

impl NatsServer {
    /// Starts `nats-server` from `PATH` on 127.0.0.1 (a free port unless `port` is given),
    /// storing JetStream under `store_dir`, and waits until it accepts clients.
    ///
    /// # Errors
    /// When nats-server is not installed (the message says how to install it) or exits early.
    pub async fn start(store_dir: &Path, port: Option<u16>) -> anyhow::Result<Self> {
        std::fs::create_dir_all(store_dir)
            .with_context(|| format!("creating {}", store_dir.display()))?;
        let port_arg = port.map_or_else(|| "-1".to_owned(), |p| p.to_string());
        let spawned = Command::new("nats-server")
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
