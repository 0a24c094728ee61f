//! lingr as the benchmarks run it: a cluster of separate processes (api, comet ×K, history on
//! PostgreSQL, one nats-server), with a writer per room that says each round's message, and
//! the calls an observer makes to get its session and ticket.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context as _;
use lingr_cluster::{Cluster, Role, Settings};
use serde_json::Value;

use crate::http::Connection;

/// What the cluster is started with.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `lingr` binary (a release build for figures).
    pub binary: PathBuf,
    /// A PostgreSQL URL allowed to create databases.
    pub postgres: String,
    /// How many comet processes.
    pub comets: usize,
    /// A command each comet runs under (a profiler), split on spaces; empty for none.
    pub comet_wrapper: String,
    /// Runtime threads of each comet; `None` leaves lingr's default.
    pub comet_threads: Option<std::num::NonZeroUsize>,
    /// More flags for the api (a scenario that sets up for longer than the presence timeout
    /// raises it).
    pub api_flags: Vec<String>,
}

impl Options {
    /// For a scenario whose setup outlasts the shipped presence timeout (90 s): occupants who
    /// do not observe meanwhile must not time out.
    pub fn patient(mut self) -> Self {
        self.api_flags
            .extend(["--presence-timeout".to_owned(), "3600".to_owned()]);
        self
    }
}

/// A running cluster.
pub struct Lingr {
    cluster: Cluster,
    /// The api process's address.
    pub api: SocketAddr,
    /// Every comet's address.
    pub comets: Vec<SocketAddr>,
}

/// An occupant's credentials.
#[derive(Debug, Clone)]
pub struct Member {
    /// Its session.
    pub session: String,
    /// Its ticket for the room.
    pub ticket: String,
    /// The counter its enter returned.
    pub counter: u64,
}

impl Lingr {
    /// Starts the cluster in `dir`. The benchmark makes every call from loopback addresses and
    /// creates thousands of sessions, so the per-address limits are off; the per-session ones
    /// stay as shipped.
    pub async fn start(options: &Options, dir: PathBuf) -> anyhow::Result<Self> {
        let mut api = Role::new(
            "api",
            &[
                "--session-rate",
                "0",
                "--call-rate",
                "1000",
                "--call-burst",
                "1000",
            ],
        );
        api.flags.extend(options.api_flags.iter().cloned());
        let mut roles = vec![api];
        for _ in 0..options.comets {
            let mut comet = Role::new("comet", &["--observes-per-address", "0"]);
            if let Some(threads) = options.comet_threads {
                comet
                    .flags
                    .extend(["--worker-threads".to_owned(), threads.to_string()]);
            }
            comet.wrapper = options
                .comet_wrapper
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            roles.push(comet);
        }
        roles.push(Role::new("history", &[]));
        let cluster = Cluster::start(Settings {
            lingr: options.binary.clone(),
            postgres: options.postgres.clone(),
            dir,
            roles,
            log_filter: "warn".into(),
        })
        .await
        .context("starting the lingr cluster")?;
        let api = cluster
            .of("api")
            .map(|p| p.listen)
            .next()
            .context("no api")?;
        let comets = cluster.of("comet").map(|p| p.listen).collect();
        Ok(Self {
            cluster,
            api,
            comets,
        })
    }

    /// The comet processes' pids.
    pub fn comet_pids(&self) -> Vec<u32> {
        self.cluster.of("comet").filter_map(|p| p.pid()).collect()
    }

    /// Kills comet number `n` (`kill -9`) and starts a fresh process on its port: a replica
    /// with empty room buffers, as after a rolling update. Returns once it is ready.
    pub async fn replace_comet(&mut self, n: usize) -> anyhow::Result<()> {
        let index = self
            .cluster
            .processes
            .iter()
            .enumerate()
            .filter(|(_, p)| p.role == "comet")
            .nth(n)
            .map(|(index, _)| index)
            .context("no such comet")?;
        self.cluster.fault(index, "KILL").await?;
        self.cluster.until_ready(index).await
    }

    /// History's address.
    pub fn history_address(&self) -> Option<SocketAddr> {
        self.cluster.of("history").map(|p| p.listen).next()
    }

    /// Observes held now, summed over the comets.
    pub async fn held(&self) -> Option<u64> {
        let mut total = 0.0;
        for comet in &self.comets {
            total += metric(*comet, "lingr_comet_held_observes").await?;
        }
        Some(total as u64)
    }

    /// Messages nats-server has received since it started (every publish, KV put and request).
    pub async fn nats_messages_in(&self) -> Option<u64> {
        let address: SocketAddr = self
            .cluster
            .nats_monitor
            .trim_start_matches("http://")
            .parse()
            .ok()?;
        let mut connection = Connection::open(address, Ipv4Addr::LOCALHOST).await.ok()?;
        let answer = connection.get("/varz", &[]).await.ok()?;
        let varz: Value = serde_json::from_slice(&answer.body).ok()?;
        varz["in_msgs"].as_u64()
    }

    /// Stops every process.
    pub async fn stop(self) {
        self.cluster.stop().await;
    }
}

/// The value of an unlabelled metric on a process's `/metrics`.
pub async fn metric(address: SocketAddr, name: &str) -> Option<f64> {
    let mut connection = Connection::open(address, Ipv4Addr::LOCALHOST).await.ok()?;
    let answer = connection.get("/metrics", &[]).await.ok()?;
    String::from_utf8_lossy(&answer.body)
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))?
        .trim()
        .parse()
        .ok()
}

/// Calls `path` on the api with `params` and returns its JSON, or the error it answered.
pub async fn call(
    connection: &mut Connection,
    path: &str,
    params: &[(&str, &str)],
) -> anyhow::Result<Value> {
    let query = serde_urlencoded::to_string(params)?;
    let answer = connection.get(&format!("/api/{path}?{query}"), &[]).await?;
    let body: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
    anyhow::ensure!(
        answer.status == 200,
        "{path} answered {}: {body}",
        answer.status
    );
    Ok(body)
}

/// A new session in `room`: named when `nickname` is given, else an anonymous observer.
pub async fn join(
    connection: &mut Connection,
    room: &str,
    nickname: Option<&str>,
) -> anyhow::Result<Member> {
    let created = match nickname {
        Some(nickname) => call(connection, "session/create", &[("nickname", nickname)]).await?,
        None => call(connection, "session/create", &[]).await?,
    };
    let session = created["session"]
        .as_str()
        .context("no session")?
        .to_owned();
    let entered = call(
        connection,
        "room/enter",
        &[("session", &session), ("room", room)],
    )
    .await?;
    Ok(Member {
        session,
        ticket: entered["ticket"].as_str().context("no ticket")?.to_owned(),
        counter: entered["counter"].as_u64().context("no counter")?,
    })
}

/// Says `text` as `member`.
pub async fn say(connection: &mut Connection, member: &Member, text: &str) -> anyhow::Result<()> {
    call(
        connection,
        "room/say",
        &[
            ("session", &member.session),
            ("ticket", &member.ticket),
            ("message", text),
        ],
    )
    .await?;
    Ok(())
}
