//! The runtimes connections are served on: single-threaded runtimes, one per core by default,
//! each on a thread of its own with its own reactor, timers and queue. A connection stays on
//! the one it was given, as with nginx's worker processes.
//!
//! On the process's multi-threaded runtime a connection's task wandered between threads: a
//! fan-out's event woke thousands of observes into one thread's queue, the other threads
//! were woken to steal them, and every answer's socket readiness could arrive on any thread.
//! A comet on one runtime thread spent less CPU per delivery than on two, but had one core
//! for a herd. Connections spread over one single-threaded runtime per core are answered
//! sooner than either (docs/BENCHMARKS.md). Everything else of a role (NATS, the hub's
//! followers, background tasks) runs on the main runtime, or on the connection runtime of the
//! request that started it.

use std::cell::Cell;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::runtime::{Builder, Handle};
use tokio::sync::futures::Notified;
use tokio::sync::Notify;

/// The process's connection runtimes, started on first use.
static RUNTIMES: OnceLock<ConnectionRuntimes> = OnceLock::new();

/// How many connection runtimes the process starts, unless [`set_count`] said otherwise.
fn default_count() -> usize {
    std::thread::available_parallelism().map_or(1, NonZeroUsize::get)
}

/// Sets how many connection runtimes the process runs. Only before the first server starts:
/// once started, they stay as they are (and this says so with `false`).
pub fn set_count(count: NonZeroUsize) -> bool {
    if RUNTIMES.get().is_some() {
        return false;
    }
    RUNTIMES.set(ConnectionRuntimes::start(count.get())).is_ok()
}

/// The runtime the next connection is served on; none when none could start (then it stays
/// on the runtime that accepted it).
pub(super) fn next() -> Option<Handle> {
    runtimes().next()
}

fn runtimes() -> &'static ConnectionRuntimes {
    RUNTIMES.get_or_init(|| ConnectionRuntimes::start(default_count()))
}

thread_local! {
    /// Which connection runtime this thread drives, if any.
    static CURRENT: Cell<Option<usize>> = const { Cell::new(None) };
}

/// A [`Notify`] whose waiters are woken by the runtime each waits on. Waking a task of
/// another runtime from outside queues it under that runtime's lock and wakes the runtime's
/// thread through its eventfd, a write per task: for a room's fan-out to thousands, that was
/// half a system call per delivery, all on the thread that received the event. Here each
/// connection runtime has its own [`Notify`], woken by one small task sent to it.
pub struct RuntimeNotify {
    /// One per connection runtime, and last, the one for tasks on any other runtime.
    notifies: Arc<[Notify]>,
}

impl Default for RuntimeNotify {
    fn default() -> Self {
        let count = runtimes().handles.len() + 1;
        Self {
            notifies: (0..count).map(|_| Notify::new()).collect(),
        }
    }
}

impl RuntimeNotify {
    /// Waits for the next [`RuntimeNotify::notify_waiters`], on the caller's runtime. A task
    /// on a connection runtime stays on it, so the one it waits on is the one woken for it.
    pub fn notified(&self) -> Notified<'_> {
        let index = CURRENT.get().unwrap_or(self.notifies.len() - 1);
        self.notifies[index].notified()
    }

    /// Wakes every waiter: those on other runtimes at once, and those of each connection
    /// runtime by a task on it, soon after.
    pub fn notify_waiters(&self) {
        let handles = &runtimes().handles;
        for (index, handle) in handles.iter().enumerate() {
            let notifies = Arc::clone(&self.notifies);
            handle.spawn(async move { notifies[index].notify_waiters() });
        }
        self.notifies[handles.len()].notify_waiters();
    }
}

struct ConnectionRuntimes {
    handles: Vec<Handle>,
    /// Connections handed out so far: they go round the runtimes in turn.
    given: AtomicUsize,
}

impl ConnectionRuntimes {
    /// Starts up to `count` runtimes, in order: the first that cannot start (no thread, no
    /// epoll) ends the list, so a runtime's place in it is the index its thread knows.
    fn start(count: usize) -> Self {
        let handles = (0..count)
            .map_while(|index| match start_one(index) {
                Ok(handle) => Some(handle),
                Err(err) => {
                    tracing::warn!(error = %err, index, "a connection runtime did not start");
                    None
                }
            })
            .collect();
        Self {
            handles,
            given: AtomicUsize::new(0),
        }
    }

    fn next(&self) -> Option<Handle> {
        let turn = self.given.fetch_add(1, Ordering::Relaxed);
        self.handles.get(turn % self.handles.len().max(1)).cloned()
    }
}

/// A single-threaded runtime driven by a thread of its own for the life of the process (its
/// tasks end with their connections; the process's exit ends the thread).
fn start_one(index: usize) -> std::io::Result<Handle> {
    let runtime = Builder::new_current_thread().enable_all().build()?;
    let handle = runtime.handle().clone();
    std::thread::Builder::new()
        .name(format!("connections-{index}"))
        .spawn(move || {
            CURRENT.set(Some(index));
            runtime.block_on(std::future::pending::<()>());
        })?;
    Ok(handle)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Connections go round the runtimes, and each is served on a thread of its own.
    #[test]
    fn connections_take_the_runtimes_in_turn() {
        let runtimes = ConnectionRuntimes::start(2);
        let threads: Vec<String> = (0..4)
            .map(|_| {
                let (sent, received) = std::sync::mpsc::channel();
                let runtime = runtimes.next().expect("both runtimes started");
                runtime.spawn(async move {
                    let name = std::thread::current().name().map(str::to_owned);
                    let _ = sent.send(name.unwrap_or_default());
                });
                received.recv().expect("the runtime ran the task")
            })
            .collect();
        assert_eq!(
            threads,
            [
                "connections-0",
                "connections-1",
                "connections-0",
                "connections-1"
            ]
        );
    }

    /// Waiters on every connection runtime and on another runtime are all woken, each by its
    /// own runtime's [`Notify`].
    #[tokio::test]
    async fn a_runtime_notify_wakes_waiters_on_every_runtime() {
        let notify = Arc::new(RuntimeNotify::default());
        let (woken, mut heard) = tokio::sync::mpsc::unbounded_channel();
        let (waiting, mut ready) = tokio::sync::mpsc::unbounded_channel();
        let mut on: Vec<Handle> = runtimes().handles.clone();
        on.push(Handle::current());
        for runtime in &on {
            let (notify, woken, waiting) = (Arc::clone(&notify), woken.clone(), waiting.clone());
            runtime.spawn(async move {
                let notified = notify.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let _ = waiting.send(());
                notified.await;
                let _ = woken.send(CURRENT.get());
            });
        }
        for _ in &on {
            ready.recv().await.expect("every waiter is waiting");
        }
        notify.notify_waiters();
        let mut wakes = Vec::new();
        for _ in &on {
            let wake = tokio::time::timeout(std::time::Duration::from_secs(5), heard.recv());
            wakes.push(wake.await.ok().flatten().expect("every waiter is woken"));
        }
        wakes.sort_unstable();
        let mut expected: Vec<Option<usize>> = (0..on.len() - 1).map(Some).collect();
        expected.insert(0, None);
        assert_eq!(wakes, expected);
    }
}
