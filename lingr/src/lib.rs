//! The `lingr` binary's library: the command line, wiring roles into one process, and the
//! embedded `dev` setup. `main.rs` only parses and calls [`run`]; tests call [`serve`].
//!
//! - [`cli`]: the roles and their flags.
//! - [`process`]: starting any set of roles on one listener and serving until shutdown.
//! - [`dev`]: the private `nats-server` child and the SQLite default of `lingr dev`.

pub mod cli;
pub mod dev;
pub mod process;

pub use cli::{Cli, Role};
pub use process::{serve, serve_owned, Backing, Roles};

/// Runs the role the command line asks for until SIGINT or SIGTERM.
///
/// # Errors
/// When configuration is invalid or a backing service cannot be set up.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let shutdown = lingr_platform::shutdown::on_signal();
    match cli.role {
        Role::Dev(args) => dev::run(args, shutdown).await,
        Role::Api(args) => {
            let roles = Roles {
                api: Some(args.api),
                ..Roles::default()
            };
            process::run_role(args.common, roles, shutdown).await
        }
        Role::Comet(args) => {
            let roles = Roles {
                comet: Some(args.comet),
                ..Roles::default()
            };
            process::run_role(args.common, roles, shutdown).await
        }
        Role::History(args) => {
            let roles = Roles {
                history: true,
                ..Roles::default()
            };
            process::run_role(args.common, roles, shutdown).await
        }
    }
}
