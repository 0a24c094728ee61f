//! `lingr-bench`: the load generator of Lingr's benchmarks (docs/BENCHMARKS.md). It starts the
//! server under test itself (a lingr cluster, nchan or pushpin), holds long-polls from worker
//! processes over several loopback source addresses, publishes rounds of messages and prints
//! each scenario's figures with the command that reproduces them. It stops by itself.

mod enter;
mod fanout;
mod herd;
mod http;
mod lingr;
mod observers;
mod peers;
mod pin;
mod procs;
mod replicas;
mod rooms;
mod say;
mod stats;
mod workers;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// The command line.
#[derive(Debug, Parser)]
#[command(about = "Benchmarks lingr against nchan and pushpin on one machine.")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Scenarios 1 and 2: hold N observes (memory per held observe, idle CPU, NATS traffic
    /// while idle), then rounds of one message per room (latency from publish to each
    /// observer, deliveries per second).
    Fanout(fanout::Args),
    /// Scenario 3: a steady say rate over many rooms, observers in some; each comet's cost
    /// against the rooms it serves.
    Rooms(rooms::Args),
    /// Scenario 3b: enters into one room as it grows to N occupants.
    Enter(enter::Args),
    /// Scenario 3b: a herd of observes with stale counters on a comet just started.
    Herd(herd::Args),
    /// Scenario 4: says per second through the api, their latency, and history keeping up.
    Say(say::Args),
    /// Scenario 5: say latency as comet replicas grow, ours against the original's
    /// synchronous notification of every chatserver.
    Replicas(replicas::Args),
    /// A chatserver stand-in for scenario 5 (started by it).
    #[command(hide = true)]
    Chatserver(replicas::StandIn),
    /// A worker process holding its share of the observers (started by the other scenarios).
    #[command(hide = true)]
    Worker(observers::Share),
}

/// Where the server under test comes from, shared by every scenario.
#[derive(Debug, Clone, clap::Args)]
pub struct Servers {
    /// The `lingr` binary (a release build for figures).
    #[arg(long, default_value = "target/release/lingr")]
    pub lingr: PathBuf,
    /// A PostgreSQL URL allowed to create databases (history's).
    #[arg(
        long,
        env = "LINGR_TEST_POSTGRES",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pub postgres: String,
    /// A command each lingr comet runs under, for profiling (e.g. `heaptrack -o /tmp/comet`);
    /// the figures it gives are the profiler's, not the comet's.
    #[arg(long, default_value = "")]
    pub comet_wrapper: String,
    /// Runtime threads of each lingr comet (`lingr --worker-threads`; default: one per core).
    #[arg(long)]
    pub comet_threads: Option<std::num::NonZeroUsize>,
}

impl Servers {
    /// A lingr cluster of `comets` comets from these settings, the api's flags as shipped.
    pub fn lingr_options(&self, comets: usize) -> lingr::Options {
        lingr::Options {
            binary: self.lingr.clone(),
            postgres: self.postgres.clone(),
            comets,
            comet_wrapper: self.comet_wrapper.clone(),
            comet_threads: self.comet_threads,
            api_flags: Vec::new(),
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Workers hold their observers on one thread each: the coordinator and the servers need the
    // machine's cores more than a worker does.
    let runtime = match &cli.scenario {
        Scenario::Worker(_) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        _ => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?,
    };
    if !matches!(cli.scenario, Scenario::Worker(_) | Scenario::Chatserver(_)) {
        runtime.spawn(stop_everything_on_signal());
    }
    runtime.block_on(async move {
        match cli.scenario {
            Scenario::Fanout(args) => fanout::run(args).await,
            Scenario::Rooms(args) => rooms::run(args).await,
            Scenario::Enter(args) => enter::run(args).await,
            Scenario::Herd(args) => herd::run(args).await,
            Scenario::Say(args) => say::run(args).await,
            Scenario::Replicas(args) => replicas::run(args).await,
            Scenario::Chatserver(args) => replicas::stand_in(args).await,
            Scenario::Worker(share) => observers::run(share).await,
        }
    })
}

/// On SIGINT or SIGTERM, stops every process this run started (servers, client workers,
/// stand-ins: their processes die with the bench only when it unwinds, which a signal does
/// not) and exits. TERM first, so an nginx master or pushpin's runner stops what it started
/// itself; what is left after 10 s is killed. A scenario may start a process meanwhile, so
/// each step looks again.
async fn stop_everything_on_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut interrupt), Ok(mut terminate)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        eprintln!("warning: cannot watch for SIGINT and SIGTERM; an interrupted run may leave servers running");
        return;
    };
    let code = tokio::select! {
        _ = interrupt.recv() => 130,
        _ = terminate.recv() => 143,
    };
    eprintln!("== interrupted: stopping every process this run started");
    let me = std::process::id();
    let started = || -> Vec<String> {
        procs::with_descendants(&[me])
            .into_iter()
            .filter(|pid| *pid != me && !procs::has_ended(*pid))
            .map(|pid| pid.to_string())
            .collect()
    };
    for (signal, patience) in [
        ("-TERM", Duration::from_secs(10)),
        ("-KILL", Duration::from_secs(2)),
    ] {
        let until = tokio::time::Instant::now() + patience;
        loop {
            let pids = started();
            if pids.is_empty() {
                std::process::exit(code);
            }
            if tokio::time::Instant::now() >= until {
                break;
            }
            // `kill` itself is a child for a moment, and gone by the next look.
            let _ = tokio::process::Command::new("kill")
                .arg(signal)
                .args(&pids)
                .stderr(std::process::Stdio::null())
                .status()
                .await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    std::process::exit(code);
}

/// The command line that reproduces this run.
pub fn reproduce() -> String {
    let args: Vec<String> = std::env::args().collect();
    format!("reproduce: {}", args.join(" "))
}
