//! The cluster under test, on one machine: a nats-server with JetStream, a fresh PostgreSQL
//! database, and `lingr` processes (api ×2, comet ×3, history ×2 by default), each on a port
//! of its own that it keeps across restarts, logging into the run's directory.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use tokio::process::{Child, Command};

/// The secret every process of the run signs tickets with.
const SECRET: &str = "soak-run-secret-0123456789abcdef";

/// One `lingr` process and how to start it again.
pub struct Process {
    /// `api`, `comet` or `history`.
    pub role: &'static str,
    /// Its base URL.
    pub base: String,
    listen: String,
    child: Option<Child>,
}

/// Everything the run started.
pub struct Cluster {
    /// The `lingr` processes.
    pub processes: Vec<Process>,
    /// The NATS URL.
    pub nats_url: String,
    /// The history database URL.
    pub database_url: String,
    lingr: PathBuf,
    dir: PathBuf,
    nats: Child,
    admin_url: String,
    database: String,
}

impl Cluster {
    /// Starts NATS, creates the database and starts `roles`, waiting until each is ready.
    pub async fn start(
        lingr: PathBuf,
        admin_url: String,
        dir: &Path,
        roles: &[&'static str],
    ) -> anyhow::Result<Self> {
        let nats_port = free_port()?;
        let nats = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &nats_port.to_string()])
            .arg("-sd")
            .arg(dir.join("nats"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting nats-server (is it installed?)")?;
        let database = format!("lingr_soak_{}", std::process::id());
        create_database(&admin_url, &database).await?;
        let database_url = admin_url
            .rsplit_once('/')
            .map_or(admin_url.clone(), |(base, _)| format!("{base}/{database}"));
        let mut processes = Vec::new();
        for role in roles {
            let listen = format!("127.0.0.1:{}", free_port()?);
            processes.push(Process {
                role,
                base: format!("http://{listen}"),
                listen,
                child: None,
            });
        }
        let mut cluster = Self {
            processes,
            nats_url: format!("nats://127.0.0.1:{nats_port}"),
            database_url,
            lingr,
            dir: dir.to_owned(),
            nats,
            admin_url,
            database,
        };
        for index in 0..cluster.processes.len() {
            cluster.launch(index)?;
        }
        for process in &cluster.processes {
            wait_ready(&process.base).await?;
        }
        Ok(cluster)
    }

    /// The base URLs of every process of `role`.
    pub fn bases(&self, role: &str) -> Vec<String> {
        self.processes
            .iter()
            .filter(|p| p.role == role)
            .map(|p| p.base.clone())
            .collect()
    }

    /// Sends `signal` (`KILL` or `TERM`) to process `index`, waits for it to end, and starts
    /// it again on the same port.
    pub async fn fault(&mut self, index: usize, signal: &str) -> anyhow::Result<()> {
        let process = &mut self.processes[index];
        if let Some(mut child) = process.child.take() {
            if let Some(pid) = child.id() {
                Command::new("kill")
                    .args([format!("-{signal}"), pid.to_string()])
                    .status()
                    .await?;
            }
            if tokio::time::timeout(Duration::from_secs(40), child.wait())
                .await
                .is_err()
            {
                child.kill().await?;
            }
        }
        self.launch(index)
    }

    fn launch(&mut self, index: usize) -> anyhow::Result<()> {
        let process = &mut self.processes[index];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{}-{index}.log", process.role)))?;
        let child = Command::new(&self.lingr)
            .arg(process.role)
            .args(["--listen", &process.listen, "--nats", &self.nats_url])
            .args(["--database", &self.database_url])
            // One address makes every call of the run: no per-address limits.
            .args(role_flags(process.role))
            .env("LINGR_SECRET", SECRET)
            .env("LINGR_DRAIN_DELAY", "1")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.lingr.display()))?;
        process.child = Some(child);
        Ok(())
    }

    /// Stops every process and NATS, and drops the database.
    pub async fn stop(mut self) {
        for index in 0..self.processes.len() {
            if let Some(mut child) = self.processes[index].child.take() {
                let _ = child.kill().await;
            }
        }
        let _ = self.nats.kill().await;
        let _ = drop_database(&self.admin_url, &self.database).await;
    }
}

fn role_flags(role: &str) -> Vec<&'static str> {
    match role {
        "api" => vec![
            "--session-rate",
            "0",
            "--call-rate",
            "100",
            "--call-burst",
            "100",
        ],
        "comet" => vec!["--observes-per-address", "0"],
        _ => Vec::new(),
    }
}

async fn wait_ready(base: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    for _ in 0..300 {
        if let Ok(answer) = http.get(format!("{base}/readyz")).send().await {
            if answer.status().is_success() {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("{base} did not become ready in 30 s")
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn create_database(admin_url: &str, name: &str) -> anyhow::Result<()> {
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect(admin_url)
        .await
        .context("connecting to PostgreSQL")?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await?;
    Ok(())
}

async fn drop_database(admin_url: &str, name: &str) -> anyhow::Result<()> {
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect(admin_url).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut conn)
        .await?;
    Ok(())
}
