//! Keeping a background task alive: a consumer or a watch that ends (NATS went away, the
//! stream closed) is logged and started again after a pause, until the process shuts down.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Runs `attempt` again and again until `shutdown` fires: each time it ends, with an error
/// (logged as `what` being interrupted) or without, it starts again after `pause`.
pub async fn restart_until_cancelled<F, Fut>(
    what: &str,
    shutdown: &CancellationToken,
    pause: Duration,
    mut attempt: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            result = attempt() => {
                if let Err(err) = result {
                    tracing::warn!(error = %format!("{err:#}"), "{what} interrupted; resuming");
                }
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn restarts_after_each_end_until_cancelled() {
        let shutdown = CancellationToken::new();
        let runs = Arc::new(AtomicUsize::new(0));
        let task = {
            let (shutdown, runs) = (shutdown.clone(), Arc::clone(&runs));
            tokio::spawn(async move {
                restart_until_cancelled(
                    "a test task",
                    &shutdown,
                    Duration::from_millis(100),
                    || {
                        let runs = Arc::clone(&runs);
                        async move {
                            runs.fetch_add(1, Ordering::SeqCst);
                            anyhow::bail!("ended")
                        }
                    },
                )
                .await;
            })
        };
        tokio::time::sleep(Duration::from_millis(350)).await;
        shutdown.cancel();
        task.await.expect("task");
        assert_eq!(runs.load(Ordering::SeqCst), 4, "at 0, 100, 200 and 300 ms");
    }
}
