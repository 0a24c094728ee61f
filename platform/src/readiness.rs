//! Whether a process should get traffic (`/readyz`), from signals of what it depends on.
//!
//! Each dependency (the NATS connection, a consumer, a bucket mirror) raises a [`Signal`] when
//! it is up and lowers it when it fails. A dependency that was up and went down keeps the
//! process ready for a grace period, so a momentary NATS reconnect does not turn every replica
//! not-ready at once; one down for longer, or never up yet, makes it not ready. A process is
//! also not ready until its roles have started, and from the moment it starts draining.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// One dependency's state.
#[derive(Debug)]
pub struct Signal {
    state: Mutex<State>,
}

#[derive(Debug, Clone, Copy)]
enum State {
    NeverUp,
    UpSince(Instant),
    DownSince(Instant),
}

impl Signal {
    /// A signal that is not up yet.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State::NeverUp),
        })
    }

    /// The dependency works.
    pub fn up(&self) {
        if let Ok(mut state) = self.state.lock() {
            if !matches!(*state, State::UpSince(_)) {
                *state = State::UpSince(Instant::now());
            }
        }
    }

    /// The dependency failed (a signal never up stays so).
    pub fn down(&self) {
        if let Ok(mut state) = self.state.lock() {
            if matches!(*state, State::UpSince(_)) {
                *state = State::DownSince(Instant::now());
            }
        }
    }

    /// Whether the dependency works right now.
    pub fn is_up(&self) -> bool {
        self.up_since().is_some()
    }

    /// Since when the dependency has worked without a break, if it works now.
    pub fn up_since(&self) -> Option<Instant> {
        match *self.state.lock().ok()? {
            State::UpSince(at) => Some(at),
            State::NeverUp | State::DownSince(_) => None,
        }
    }

    /// Whether it works, or went down less than `grace` ago.
    pub fn ready_within(&self, grace: Duration) -> bool {
        self.state.lock().is_ok_and(|state| match *state {
            State::UpSince(_) => true,
            State::DownSince(at) => at.elapsed() < grace,
            State::NeverUp => false,
        })
    }
}

/// Whether the process should get traffic.
#[derive(Clone)]
pub struct Health {
    signals: Arc<Mutex<Vec<Arc<Signal>>>>,
    started: Arc<AtomicBool>,
    draining: Arc<AtomicBool>,
    grace: Duration,
}

impl Health {
    /// Not ready until [`Health::set_started`]; a dependency may be down for `grace`.
    pub fn new(grace: Duration) -> Self {
        Self {
            signals: Arc::new(Mutex::new(Vec::new())),
            started: Arc::new(AtomicBool::new(false)),
            draining: Arc::new(AtomicBool::new(false)),
            grace,
        }
    }

    /// Adds a dependency that must be up.
    pub fn require(&self, signal: Arc<Signal>) {
        if let Ok(mut signals) = self.signals.lock() {
            signals.push(signal);
        }
    }

    /// Every role has started.
    pub fn set_started(&self) {
        self.started.store(true, Ordering::SeqCst);
    }

    /// The process is draining: `/readyz` answers 503 from now on.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.started.load(Ordering::SeqCst)
            && !self.draining.load(Ordering::SeqCst)
            && self
                .signals
                .lock()
                .is_ok_and(|signals| signals.iter().all(|s| s.ready_within(self.grace)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_is_ready_once_started_until_it_drains() {
        let health = Health::new(Duration::from_secs(5));
        let feed = Signal::new();
        health.require(Arc::clone(&feed));
        assert!(!health.is_ready(), "not before its roles start");
        health.set_started();
        assert!(!health.is_ready(), "not before its dependencies are up");
        feed.up();
        assert!(health.is_ready());
        health.set_draining();
        assert!(!health.is_ready(), "draining turns it not-ready");
    }

    #[tokio::test(start_paused = true)]
    async fn a_dependency_down_for_less_than_the_grace_keeps_it_ready() {
        let health = Health::new(Duration::from_secs(5));
        let nats = Signal::new();
        health.require(Arc::clone(&nats));
        health.set_started();
        nats.up();
        nats.down();
        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(health.is_ready(), "a momentary reconnect");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(!health.is_ready(), "down for longer than the grace");
        nats.up();
        assert!(health.is_ready());
        let fresh = Signal::new();
        fresh.down();
        assert!(
            !fresh.ready_within(Duration::from_secs(5)),
            "never up is not ready"
        );
    }
}
