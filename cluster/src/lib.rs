//! A Lingr cluster on one machine, for the soak run and the benchmarks: a nats-server with
//! JetStream, a fresh PostgreSQL database, and `lingr` processes (each role with its own flags),
//! each on a port of its own that it keeps across restarts, logging into the run's directory.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use tokio::process::{Child, Command};

/// The secret every process of the run signs tickets with.
pub const SECRET: &str = "cluster-run-secret-0123456789abcdef";

/// One process to start: its role and the flags it gets beyond the cluster's own.
#[derive(Debug, Clone)]
pub struct Role {
    /// `api`, `comet` or `history`.
    pub name: &'static str,
    /// Extra command-line flags.
    pub flags: Vec<String>,
    /// A command the process runs under (a profiler such as `heaptrack` or `perf record`),
    /// with its arguments; empty to run `lingr` directly.
    pub wrapper: Vec<String>,
}

impl Role {
    /// A role with extra flags.
    pub fn new(name: &'static str, flags: &[&str]) -> Self {
        Self {
            name,
            flags: flags.iter().map(|f| (*f).to_owned()).collect(),
            wrapper: Vec::new(),
        }
    }
}

/// What a cluster is made of.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The `lingr` binary.
    pub lingr: PathBuf,
    /// A PostgreSQL URL allowed to create databases.
    pub postgres: String,
    /// Where logs and NATS's storage go.
    pub dir: PathBuf,
    /// The processes, started in this order.
    pub roles: Vec<Role>,
    /// The `RUST_LOG` of every process.
    pub log_filter: String,
}

/// One `lingr` process and how to start it again.
pub struct Process {
    /// `api`, `comet` or `history`.
    pub role: &'static str,
    /// Its base URL.
    pub base: String,
    /// Its address.
    pub listen: SocketAddr,
    flags: Vec<String>,
    wrapper: Vec<String>,
    child: Option<Child>,
}

impl Process {
    /// Its process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }
}

/// Everything the run started.
pub struct Cluster {
    /// The `lingr` processes.
    pub processes: Vec<Process>,
    /// The NATS URL.
    pub nats_url: String,
    /// The history database URL.
    pub database_url: String,
    /// nats-server's monitoring endpoint (`/varz` and the like).
    pub nats_monitor: String,
    settings: Settings,
    nats: Child,
    database: String,
}

impl Cluster {
    /// Starts NATS, creates the database and starts every role, waiting until each is ready.
    pub async fn start(settings: Settings) -> anyhow::Result<Self> {
        let admin_url = settings.postgres.clone();
        let dir = settings.dir.clone();
        // Every port at once: picked one by one, each freed before the next was picked, two
        // processes of one cluster could be given the same one (the smoke run's api once
        // found its port taken by another role).
        let mut ports = free_ports(2 + settings.roles.len())?.into_iter();
        let mut port = || ports.next().context("a free port for each process");
        let nats_port = port()?;
        let monitor_port = port()?;
        let nats_log = std::fs::File::create(dir.join(NATS_LOG))
            .with_context(|| format!("creating {}", dir.join(NATS_LOG).display()))?;
        let nats = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &nats_port.to_string()])
            .args(["-m", &monitor_port.to_string()])
            .arg("-sd")
            .arg(dir.join("nats"))
            .stdout(Stdio::from(nats_log.try_clone()?))
            .stderr(Stdio::from(nats_log))
            .kill_on_drop(true)
            .spawn()
            .context("starting nats-server (is it installed?)")?;
        let database = format!("lingr_cluster_{}_{nats_port}", std::process::id());
        create_database(&admin_url, &database).await?;
        let database_url = admin_url
            .rsplit_once('/')
            .map_or(admin_url.clone(), |(base, _)| format!("{base}/{database}"));
        let mut processes = Vec::new();
        for role in &settings.roles {
            let listen = SocketAddr::from(([127, 0, 0, 1], port()?));
            processes.push(Process {
                role: role.name,
                base: format!("http://{listen}"),
                listen,
                flags: role.flags.clone(),
                wrapper: role.wrapper.clone(),
                child: None,
            });
        }
        let mut cluster = Self {
            processes,
            nats_url: format!("nats://127.0.0.1:{nats_port}"),
            nats_monitor: format!("http://127.0.0.1:{monitor_port}"),
            database_url,
            settings,
            nats,
            database,
        };
        for index in 0..cluster.processes.len() {
            cluster.launch(index)?;
        }
        for (index, process) in cluster.processes.iter().enumerate() {
            if let Err(err) = wait_ready(&process.base).await {
                // The directory may be a temporary one that goes with the failed start: the
                // error carries what the process said.
                let log = cluster.log_path(index);
                let nats_log = dir.join(NATS_LOG);
                return Err(err.context(format!(
                    "{} {index} did not start; from {}:\n{}\nfrom {}:\n{}",
                    process.role,
                    log.display(),
                    log_excerpt(&log, 30),
                    nats_log.display(),
                    log_excerpt(&nats_log, 30)
                )));
            }
        }
        Ok(cluster)
    }

    /// The processes of `role`.
    pub fn of<'a>(&'a self, role: &'a str) -> impl Iterator<Item = &'a Process> {
        self.processes.iter().filter(move |p| p.role == role)
    }

    /// The pid of the nats-server.
    pub fn nats_pid(&self) -> Option<u32> {
        self.nats.id()
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

    /// Waits until process `index` answers ready, as after a [`Cluster::fault`].
    pub async fn until_ready(&self, index: usize) -> anyhow::Result<()> {
        let process = self.processes.get(index).context("no such process")?;
        wait_ready(&process.base).await
    }

    /// Where process `index` writes its log.
    fn log_path(&self, index: usize) -> std::path::PathBuf {
        let role = self.processes.get(index).map_or("process", |p| p.role);
        self.settings.dir.join(format!("{role}-{index}.log"))
    }

    fn launch(&mut self, index: usize) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(index))?;
        let process = &mut self.processes[index];
        let mut command = match process.wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(&self.settings.lingr);
                command
            }
            None => Command::new(&self.settings.lingr),
        };
        let child = command
            .arg(process.role)
            .args([
                "--listen",
                &process.listen.to_string(),
                "--nats",
                &self.nats_url,
            ])
            .args(["--database", &self.database_url])
            .args(&process.flags)
            .env("LINGR_SECRET", SECRET)
            .env("LINGR_DRAIN_DELAY", "1")
            .env("RUST_LOG", &self.settings.log_filter)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.settings.lingr.display()))?;
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
        let _ = drop_database(&self.settings.postgres, &self.database).await;
    }
}

/// The nats-server's log in the cluster's directory: a role that cannot set up its streams
/// (JetStream requests timing out for 30 s, seen in two scenarios of one whole benchmark run
/// and in one single run) fails with an excerpt of it ([`log_excerpt`]), since the directory
/// may go with the failed start.
const NATS_LOG: &str = "nats-server.log";

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

/// `lines` lines of the log at `path`, or why it could not be read: from where the process
/// crashed, if it did (a Go `panic:` or `fatal error:` line, then the goroutine's trace; only
/// nats-server writes them), else its end. A failed start showed only the end of a
/// nats-server panic's trace, whose cause is on its first line.
fn log_excerpt(path: &std::path::Path, lines: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            let from = all
                .iter()
                .position(|line| line.starts_with("panic:") || line.starts_with("fatal error:"))
                .unwrap_or(all.len().saturating_sub(lines));
            all[from..all.len().min(from + lines)].join("\n")
        }
        Err(err) => format!("(unreadable: {err})"),
    }
}

/// `count` distinct free ports: each is held until all are picked, since a port freed at once
/// can be the next one the kernel picks.
pub fn free_ports(count: usize) -> anyhow::Result<Vec<u16>> {
    let held = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    held.iter()
        .map(|listener| Ok(listener.local_addr()?.port()))
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_start_shows_a_log_from_its_crash_or_its_end() {
        let path = std::env::temp_dir().join(format!("lingr-cluster-log-{}", std::process::id()));
        std::fs::write(&path, "a\nb\nc\nd\ne\n").expect("written");
        assert_eq!(log_excerpt(&path, 2), "d\ne");
        assert_eq!(log_excerpt(&path, 10), "a\nb\nc\nd\ne");
        std::fs::write(
            &path,
            "started\npanic: nil map\n\ngoroutine 7\nframe\nframe\n",
        )
        .expect("written");
        assert_eq!(log_excerpt(&path, 3), "panic: nil map\n\ngoroutine 7");
        std::fs::remove_file(&path).expect("removed");
        assert!(log_excerpt(&path, 2).starts_with("(unreadable"));
    }

    #[test]
    fn a_clusters_ports_are_distinct() {
        for _ in 0..20 {
            let mut ports = free_ports(64).expect("free ports");
            ports.sort_unstable();
            ports.dedup();
            assert_eq!(ports.len(), 64);
        }
    }
}
