//! `lingr`: one binary, the roles `dev`, `api`, `comet` and `history`.

use clap::Parser as _;

/// jemalloc, with the background thread purging pages left unused for 10 s: after a burst
/// of held observes ends, the memory goes back to the system (see docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    let cli = lingr::Cli::parse();
    // Test builds only: the fault points FAILPOINTS names, for the crash tests.
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = cli.worker_threads {
        builder.worker_threads(threads.get());
        lingr_platform::server::set_connection_runtimes(threads);
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("lingr: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let role = cli.role.name();
    let ran = runtime.block_on(async {
        // In the runtime: the gRPC trace exporter connects from it.
        let telemetry = lingr_platform::telemetry::init(role);
        let ran = lingr::run(cli).await;
        telemetry.shutdown().await;
        ran
    });
    match ran {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("lingr: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
