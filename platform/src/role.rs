//! What a role starts from ([`Context`]: what every role in a process shares) and what a
//! started role hands back ([`Started`]: its routes, the readiness flags `/readyz` waits on,
//! and its background tasks, which end when the shutdown token fires).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::readiness::Signal;

/// What every role of one process shares.
#[derive(Clone)]
pub struct Context {
    /// The process's NATS connection.
    pub client: async_nats::Client,
    /// Up while that connection is (see [`crate::nats::connect`]).
    pub link: Arc<Signal>,
    /// Signs and checks tickets (from an empty secret in a process without api or comet).
    pub tickets: lingr_proto::ticket::TicketKey,
    /// How long the event stream keeps events.
    pub retention: Duration,
    /// On how many NATS servers the stream and buckets are kept.
    pub stream_replicas: usize,
    /// The process's metrics registry.
    pub metrics: Metrics,
    /// Fires on SIGTERM/SIGINT; every task of every role ends with it.
    pub shutdown: CancellationToken,
}

impl Context {
    /// The stream and buckets, as every role creates and opens them.
    pub fn layout(&self) -> crate::nats::Layout {
        crate::nats::Layout::new(self.client.clone(), self.retention, self.stream_replicas)
    }
}

/// A started role.
pub struct Started {
    /// Its API routes (no health routes or layers; see [`crate::http::app`]).
    pub router: Router,
    /// Routes answered ahead of the router (see [`crate::http::Direct`]).
    pub direct: Vec<crate::http::Direct>,
    /// Up while it can serve (mirrors loaded, consumers consuming).
    pub ready: Vec<Arc<Signal>>,
    /// Its consumers, mirrors, reapers and flushers.
    pub tasks: Vec<JoinHandle<()>>,
}
