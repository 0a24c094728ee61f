//! The accept loop, on a thread of its own.
//!
//! On the runtime, the loop took its turn behind every busy connection: a herd arriving while
//! a replica answered its first members filled the kernel's queue of completed connections
//! ([`super::LISTEN_BACKLOG`]), and every SYN dropped meanwhile cost its client a
//! retransmission a second later. A thread blocked in `accept` takes each connection as the
//! kernel completes it, admits it (the registry may close an older, silent one to make room)
//! and hands it to the runtime as a task.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{serve_connection, Shared};

/// How long the thread pauses after evicting connections to admit one, so the evicted ones
/// can close before it accepts more (a burst must not run past the cap while their
/// descriptors are still held).
const AFTER_EVICTION: Duration = Duration::from_millis(1);
/// How long it waits after `accept` failed (out of descriptors, most likely) rather than spin.
const AFTER_FAILURE: Duration = Duration::from_millis(100);

/// The accept thread of one listener. Dropped without [`Acceptor::stop`] (its server's
/// future dropped), it still shuts the listening socket, so the thread does not go on
/// serving for a server that is gone.
pub(super) struct Acceptor {
    listener: Arc<std::net::TcpListener>,
    stopping: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Acceptor {
    /// Starts accepting on `listener`, spawning each connection as a task of `connections`
    /// onto a connection runtime (the `runtimes` module), or the current one without any.
    ///
    /// # Errors
    /// When the listener cannot be made blocking or the thread cannot start.
    pub(super) fn start(
        listener: TcpListener,
        shared: Arc<Shared>,
        connections: TaskTracker,
        shutdown: CancellationToken,
    ) -> std::io::Result<Self> {
        let listener = listener.into_std()?;
        listener.set_nonblocking(false)?;
        let listener = Arc::new(listener);
        let stopping = Arc::new(AtomicBool::new(false));
        let runtime = Handle::current();
        let thread = std::thread::Builder::new().name("accept".into()).spawn({
            let (listener, stopping) = (Arc::clone(&listener), Arc::clone(&stopping));
            move || {
                accept_until_stopped(
                    &listener,
                    &stopping,
                    &Spawner {
                        shared,
                        connections,
                        shutdown,
                        runtime,
                    },
                );
            }
        })?;
        Ok(Self {
            listener,
            stopping,
            thread: Some(thread),
        })
    }

    /// Stops accepting: the listening socket is shut, so new connections are refused and the
    /// thread wakes from `accept`; returns once the thread has ended.
    pub(super) async fn stop(mut self) {
        self.close();
        let Some(thread) = self.thread.take() else {
            return;
        };
        if !matches!(
            tokio::task::spawn_blocking(move || thread.join()).await,
            Ok(Ok(()))
        ) {
            tracing::warn!("the accept thread did not end cleanly");
        }
    }

    fn close(&self) {
        if self.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Err(err) = socket2::SockRef::from(&*self.listener).shutdown(std::net::Shutdown::Both)
        {
            tracing::warn!(error = %err, "shutting the listening socket failed");
        }
    }
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        self.close();
    }
}

/// What a connection's task is started with.
struct Spawner {
    shared: Arc<Shared>,
    connections: TaskTracker,
    shutdown: CancellationToken,
    runtime: Handle,
}

fn accept_until_stopped(
    listener: &std::net::TcpListener,
    stopping: &AtomicBool,
    spawner: &Spawner,
) {
    loop {
        let accepted = listener.accept();
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        match accepted {
            Ok((stream, peer)) => {
                if spawner.admit(stream, peer) {
                    std::thread::sleep(AFTER_EVICTION);
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "accepting a connection failed");
                std::thread::sleep(AFTER_FAILURE);
            }
        }
    }
}

impl Spawner {
    /// Registers the connection (in accept order, so the longest-waiting is evicted first)
    /// and starts its task; says whether older connections were evicted to admit it.
    fn admit(&self, stream: std::net::TcpStream, peer: SocketAddr) -> bool {
        let Some((connection, admission)) = self.shared.registry.open() else {
            self.shared.metrics.refused.inc();
            return false;
        };
        self.shared.metrics.evicted.inc_by(admission.evicted as u64);
        let (shared, shutdown) = (Arc::clone(&self.shared), self.shutdown.clone());
        let runtime = super::runtimes::next().unwrap_or_else(|| self.runtime.clone());
        self.connections.spawn_on(
            async move {
                // Registered with the runtime's reactor here, on the runtime.
                let taken = match stream.set_nonblocking(true) {
                    Ok(()) => TcpStream::from_std(stream),
                    Err(err) => Err(err),
                };
                match taken {
                    Ok(stream) => {
                        serve_connection(shared, connection, stream, peer, shutdown).await;
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "taking an accepted connection failed");
                        shared.registry.close(&connection);
                    }
                }
            },
            &runtime,
        );
        admission.evicted > 0
    }
}
