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
mod procs;
mod replicas;
mod rooms;
mod say;
mod stats;
mod workers;

use std::path::PathBuf;

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

/// The command line that reproduces this run.
pub fn reproduce() -> String {
    let args: Vec<String> = std::env::args().collect();
    format!("reproduce: {}", args.join(" "))
}
