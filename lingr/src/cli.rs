//! The command line: one subcommand per role, each with the common flags and its own.

use lingr_api::ApiConfig;
use lingr_comet::CometConfig;
use lingr_platform::config::CommonArgs;

/// Lingr: chat rooms over NATS JetStream.
#[derive(Debug, clap::Parser)]
#[command(name = "lingr", version, about)]
pub struct Cli {
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
