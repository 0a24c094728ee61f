//! `lingr`: one binary, the roles `dev`, `api`, `comet` and `history`.

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    let cli = lingr::Cli::parse();
    lingr_platform::telemetry::init(cli.role.name());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("lingr: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(lingr::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("lingr: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
