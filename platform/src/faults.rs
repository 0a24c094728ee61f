//! Faults on purpose, for the fault tests. A fault point (the `fail` crate, built only with
//! the `failpoints` feature and configured by `FAILPOINTS`) either ends the process exactly
//! where a test wants it to die ([`crash`]), or holds one call there for a while ([`delay`])
//! to open a race's window wide. Without the feature both compile to nothing.

use std::time::Duration;

/// Ends this process at once, as `kill -9` does: no destructor, flush or graceful shutdown
/// runs.
pub fn crash() -> ! {
    let pid = std::process::id().to_string();
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &pid])
        .status();
    // Only reached if `kill` could not run: still die without cleaning up.
    std::process::abort()
}

/// Waits as many milliseconds as the fault point `name` is configured to return
/// (`name=return(500)`). Unlike the `fail` crate's own `sleep`, it does not block a runtime
/// thread, which would stall every task queued behind it.
pub async fn delay(name: &str) {
    if let Some(ms) = argument(name).and_then(|arg| arg.parse::<u64>().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

/// The argument of fault point `name` when it fires with `return(ARGUMENT)`.
// Without the feature the fault point compiles to nothing, and `name` goes unread.
#[cfg_attr(not(feature = "failpoints"), allow(unused_variables))]
fn argument(name: &str) -> Option<String> {
    fail::fail_point!(name, |argument| argument);
    None
}
