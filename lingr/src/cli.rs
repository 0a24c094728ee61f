//! The command line: one subcommand per role, each with the common flags and its own.

use std::num::NonZeroUsize;

use lingr_api::ApiConfig;
use lingr_comet::CometConfig;
use lingr_platform::config::CommonArgs;

/// Lingr: chat rooms over NATS JetStream.
#[derive(Debug, clap::Parser)]
#[command(name = "lingr", version, about)]
pub struct Cli {
    /// Threads of the role's main runtime, and as many single-threaded runtimes serving its
    /// HTTP connections (default: one each per core). One suits replicas that each get less
    /// than a core: a comet's fan-out to 10,000 on a 2-core machine shared with its clients
    /// then took less CPU per delivery (docs/BENCHMARKS.md).
    #[arg(long, env = "LINGR_WORKER_THREADS", global = true)]
    pub worker_threads: Option<NonZeroUsize>,
    /// The role to run.
    #[command(subcommand)]
    pub role: Role,
}

/// The roles.
#[derive(Debug, clap::Subcommand)]
pub enum Role {
    /// Everything in one process on one port, with its own nats-server and SQLite unless told
    /// otherwise: for a laptop.
    Dev(DevArgs),
    /// Sessions and room verbs (enter, say, set_nickname, exit).
    Api(ApiArgs),
    /// Held `room/observe` requests.
    Comet(CometArgs),
    /// Persists events to SQL and serves `room/get_messages`.
    History(HistoryArgs),
}

impl Role {
    /// The role's name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Dev(_) => "dev",
            Self::Api(_) => "api",
            Self::Comet(_) => "comet",
            Self::History(_) => "history",
        }
    }
}

/// `lingr dev`.
#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// Common flags.
    #[command(flatten)]
    pub common: CommonArgs,
    /// The api's flags.
    #[command(flatten)]
    pub api: ApiConfig,
    /// The comet's flags.
    #[command(flatten)]
    pub comet: CometConfig,
}

/// `lingr api`.
#[derive(Debug, clap::Args)]
pub struct ApiArgs {
    /// Common flags.
    #[command(flatten)]
    pub common: CommonArgs,
    /// The api's flags.
    #[command(flatten)]
    pub api: ApiConfig,
}

/// `lingr comet`.
#[derive(Debug, clap::Args)]
pub struct CometArgs {
    /// Common flags.
    #[command(flatten)]
    pub common: CommonArgs,
    /// The comet's flags.
    #[command(flatten)]
    pub comet: CometConfig,
}

/// `lingr history`.
#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// Common flags.
    #[command(flatten)]
    pub common: CommonArgs,
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    fn threads(args: &[&str]) -> Option<usize> {
        let cli = Cli::try_parse_from(args).expect("parses");
        cli.worker_threads.map(NonZeroUsize::get)
    }

    #[test]
    fn the_runtime_threads_are_one_per_core_unless_told() {
        assert_eq!(threads(&["lingr", "comet"]), None);
        assert_eq!(
            threads(&["lingr", "comet", "--worker-threads", "1"]),
            Some(1)
        );
        assert_eq!(
            threads(&["lingr", "--worker-threads", "2", "history"]),
            Some(2)
        );
        assert!(Cli::try_parse_from(["lingr", "comet", "--worker-threads", "0"]).is_err());
    }
}
