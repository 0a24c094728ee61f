//! What a started role hands to the process that runs it: its routes, the readiness flags
//! `/readyz` waits on, and its background tasks, which end when the shutdown token fires.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use axum::Router;
use tokio::task::JoinHandle;

/// A started role.
pub struct Started {
    /// Its API routes (no health routes or layers; see [`crate::http::app`]).
    pub router: Router,
    /// Up once it has caught up (mirrors loaded, consumers consuming).
    pub ready: Vec<Arc<AtomicBool>>,
    /// Its consumers, mirrors, reapers and flushers.
    pub tasks: Vec<JoinHandle<()>>,
}
