//! The coordinator's side of the worker processes: starts them with their share of the
//! observers, and turns their lines into what the scenarios wait on.

use std::net::Ipv4Addr;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

use crate::observers::Protocol;

/// What a worker said.
#[derive(Debug)]
pub enum Said {
    /// Every observer has its credentials.
    Prepared,
    /// Every observer opened its connection (how many did).
    Opened(usize),
    /// Latencies of one round's message.
    Delivered(usize, Vec<Duration>),
    /// Something failed.
    Failed(String),
}

/// Latencies reported so far, by round.
#[derive(Debug, Default)]
pub struct Deliveries(std::collections::BTreeMap<usize, Vec<Duration>>);

impl Deliveries {
    /// How many have been reported for `round`.
    pub fn count(&self, round: usize) -> usize {
        self.0.get(&round).map_or(0, Vec::len)
    }

    /// Takes the latencies of `round`.
    pub fn take(&mut self, round: usize) -> Vec<Duration> {
        self.0.remove(&round).unwrap_or_default()
    }

    fn keep(&mut self, round: usize, mut latencies: Vec<Duration>) {
        self.0.entry(round).or_default().append(&mut latencies);
    }
}

/// The running workers.
pub struct Workers {
    children: Vec<(Child, ChildStdin)>,
    /// Everything they say, in arrival order.
    pub said: mpsc::UnboundedReceiver<Said>,
    /// Failures seen so far, by text.
    pub failures: std::collections::BTreeMap<String, usize>,
}

/// Where the workers point and how the observers are split.
pub struct Plan<'a> {
    /// The protocol.
    pub protocol: Protocol,
    /// `--servers` of each worker.
    pub servers: &'a [std::net::SocketAddr],
    /// lingr's api.
    pub api: Option<std::net::SocketAddr>,
    /// Observers in all.
    pub observers: usize,
    /// Rooms.
    pub rooms: usize,
    /// Worker processes ([`processes_for`] unless asked otherwise).
    pub processes: usize,
    /// Source addresses 127.0.0.2 onwards.
    pub sources: usize,
    /// Each observer makes one observe and reports its own latency as round 1 (a herd).
    pub once: bool,
}

/// Worker processes for `observers`: one per 15,000 (a process opens at most 20,000 files).
pub fn processes_for(observers: usize) -> usize {
    observers.div_ceil(15_000).max(1)
}

impl Workers {
    /// Starts `plan.processes` workers of this same binary.
    pub fn start(plan: &Plan<'_>) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("finding lingr-bench itself")?;
        let (tell, said) = mpsc::unbounded_channel();
        let sources: Vec<String> = (0..plan.sources)
            .map(|i| Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 0, 0, 2)) + i as u32).to_string())
            .collect();
        let servers: Vec<String> = plan.servers.iter().map(ToString::to_string).collect();
        let per_process = plan.observers.div_ceil(plan.processes.max(1));
        let mut children = Vec::new();
        for process in 0..plan.processes {
            let first = process * per_process;
            let count = per_process.min(plan.observers.saturating_sub(first));
            if count == 0 {
                break;
            }
            let mut command = Command::new(&exe);
            command
                .arg("worker")
                .args(["--protocol", &format!("{:?}", plan.protocol).to_lowercase()])
                .args(["--servers", &servers.join(",")])
                .args(["--rooms", &plan.rooms.to_string()])
                .args(["--first", &first.to_string()])
                .args(["--count", &count.to_string()])
                .args(["--sources", &sources.join(",")]);
            if let Some(api) = plan.api {
                command.args(["--api", &api.to_string()]);
            }
            if plan.once {
                command.arg("--once");
            }
            let mut child = command
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .context("starting a worker")?;
            let stdin = child.stdin.take().context("worker stdin")?;
            let stdout = child.stdout.take().context("worker stdout")?;
            let tell = tell.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(said) = parse(&line) {
                        if tell.send(said).is_err() {
                            return;
                        }
                    }
                }
                let _ = tell.send(Said::Failed("a worker ended".into()));
            });
            children.push((child, stdin));
        }
        Ok(Self {
            children,
            said,
            failures: Default::default(),
        })
    }

    /// How many workers run.
    pub fn len(&self) -> usize {
        self.children.len()
    }

    /// Waits until every worker has said `want` (counted by `count`), for at most `limit`;
    /// deliveries that come meanwhile go to `delivered`.
    pub async fn wait_all(
        &mut self,
        limit: Duration,
        mut count: impl FnMut(&Said) -> Option<usize>,
        delivered: &mut Deliveries,
    ) -> anyhow::Result<usize> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut workers = 0;
        let mut total = 0;
        while workers < self.children.len() {
            let said = tokio::time::timeout_at(deadline, self.said.recv())
                .await
                .context("workers took too long")?
                .context("workers ended")?;
            if let Some(n) = count(&said) {
                workers += 1;
                total += n;
                continue;
            }
            self.absorb(said, delivered);
        }
        Ok(total)
    }

    /// Waits until every worker's observers have their credentials (lingr's take a session
    /// and an enter each).
    pub async fn wait_prepared(&mut self, delivered: &mut Deliveries) -> anyhow::Result<()> {
        self.wait_all(
            Duration::from_secs(900),
            |s| matches!(s, Said::Prepared).then_some(0),
            delivered,
        )
        .await
        .context("preparing observers")?;
        Ok(())
    }

    /// Hands a line that no wait asked for to `delivered` or the failure counts.
    pub fn absorb(&mut self, said: Said, delivered: &mut Deliveries) {
        match said {
            Said::Delivered(round, latencies) => delivered.keep(round, latencies),
            Said::Failed(text) => *self.failures.entry(text).or_default() += 1,
            Said::Prepared | Said::Opened(_) => {}
        }
    }

    /// Tells every worker to open its observes.
    pub async fn go(&mut self) -> anyhow::Result<()> {
        for (_, stdin) in &mut self.children {
            stdin.write_all(b"go\n").await?;
            stdin.flush().await?;
        }
        Ok(())
    }

    /// Ends every worker (closing their connections).
    pub async fn stop(self) {
        for (mut child, stdin) in self.children {
            drop(stdin);
            if tokio::time::timeout(Duration::from_secs(5), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
    }
}

fn parse(line: &str) -> Option<Said> {
    let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
    match word {
        "prepared" => Some(Said::Prepared),
        "opened" => rest.trim().parse().ok().map(Said::Opened),
        "err" => Some(Said::Failed(rest.to_owned())),
        "lat" => {
            let mut parts = rest.split_whitespace();
            let round = parts.next()?.parse().ok()?;
            let latencies = parts
                .filter_map(|p| p.parse().ok())
                .map(Duration::from_micros)
                .collect();
            Some(Said::Delivered(round, latencies))
        }
        _ => None,
    }
}
