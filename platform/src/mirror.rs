//! A live in-memory copy of a key-value bucket, so hot paths read without a network call.
//!
//! A task watches the bucket from its current state onward and applies every put and delete;
//! [`KvMirror::is_ready`] turns true once the state as of the watch's start has been read, and
//! [`KvMirror::live_since`] says whether the copy is following the bucket right now.
//! Values are parsed once, as they arrive. An owner that must act when a key changes passes
//! [`Hooks`]: a comet ends the observes of an occupant who left, an api's reaper learns what to
//! look at without scanning everything.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_nats::jetstream::kv::{self, Operation};
use futures::StreamExt as _;
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::readiness::Signal;

/// Called with each key that leaves the mirror.
pub type OnRemove = Box<dyn Fn(&str) + Send + Sync>;

/// Called with each key and value put, also while a watch loads the bucket's state (so after
/// a reconnect it hears every key again).
pub type OnPut<T> = Box<dyn Fn(&str, &T) + Send + Sync>;

/// What a mirror's owner is told as the bucket changes.
pub struct Hooks<T> {
    /// Each put.
    pub on_put: Option<OnPut<T>>,
    /// Each key deleted, or found gone when the mirror rebuilds after a reconnect.
    pub on_remove: Option<OnRemove>,
}

impl<T> Default for Hooks<T> {
    fn default() -> Self {
        Self {
            on_put: None,
            on_remove: None,
        }
    }
}

/// A mirrored bucket of JSON values of type `T`.
pub struct KvMirror<T> {
    /// Hashed, not ordered: a lookup in an ordered map of a big room's keys compared their
    /// shared prefix again at every step, and nothing reads the keys in order.
    entries: RwLock<HashMap<String, T>>,
    ready: Arc<Signal>,
    live: Arc<Signal>,
    applied: tokio::sync::watch::Sender<u64>,
    hooks: Hooks<T>,
}

impl<T: DeserializeOwned + Clone + Send + Sync + 'static> KvMirror<T> {
    /// Starts mirroring `store` until `shutdown` fires.
    pub fn spawn(store: kv::Store, shutdown: CancellationToken) -> (Arc<Self>, JoinHandle<()>) {
        Self::spawn_with(store, shutdown, Hooks::default())
    }

    /// Starts mirroring `store`, telling `hooks` about every change.
    pub fn spawn_with(
        store: kv::Store,
        shutdown: CancellationToken,
        hooks: Hooks<T>,
    ) -> (Arc<Self>, JoinHandle<()>) {
        let mirror = Arc::new(Self {
            entries: RwLock::new(HashMap::new()),
            ready: Signal::new(),
            live: Signal::new(),
            applied: tokio::sync::watch::Sender::new(0),
            hooks,
        });
        let task = tokio::spawn(Arc::clone(&mirror).follow(store, shutdown));
        (mirror, task)
    }

    /// The signal that is up once the initial state is loaded (and stays up: while a watch
    /// is re-established, the copy is a moment stale, not wrong).
    pub fn ready_signal(&self) -> Arc<Signal> {
        Arc::clone(&self.ready)
    }

    /// Whether the initial state is loaded.
    pub fn is_ready(&self) -> bool {
        self.ready.is_up()
    }

    /// Since when the copy has followed the bucket without a break (caught up since the last
    /// watch began), or `None` while its watch is down: then writes made elsewhere are not
    /// seen, and its values may be old.
    pub fn live_since(&self) -> Option<tokio::time::Instant> {
        self.live.up_since()
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<T> {
        self.read(key, T::clone)
    }

    /// What `look` reads from the value of `key`, if present, without copying the value (a
    /// record's strings are an allocation each).
    pub fn read<R>(&self, key: &str, look: impl FnOnce(&T) -> R) -> Option<R> {
        self.entries.read().ok()?.get(key).map(look)
    }

    /// Whether `key` is present.
    pub fn contains(&self, key: &str) -> bool {
        self.entries.read().is_ok_and(|e| e.contains_key(key))
    }

    /// The newest bucket revision applied so far.
    pub fn revision(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Waits until the mirror has applied `revision` (or `limit` passes); returns whether it has.
    pub async fn caught_up_to(&self, revision: u64, limit: std::time::Duration) -> bool {
        let mut applied = self.applied.subscribe();
        tokio::time::timeout(limit, applied.wait_for(|r| *r >= revision))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Drops the entries `keep` refuses (values a caller knows are stale, such as presence
    /// older than its bucket's max age, which expire without a delete marker).
    pub fn retain(&self, mut keep: impl FnMut(&str, &T) -> bool) {
        if let Ok(mut entries) = self.entries.write() {
            entries.retain(|k, v| keep(k, v));
        }
    }

    /// Every key and value, in no particular order.
    pub fn snapshot(&self) -> Vec<(String, T)> {
        self.entries.read().map_or_else(
            |_| Vec::new(),
            |e| e.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        )
    }

    /// Replaces the whole map with `loaded`, telling the hook about keys that are gone.
    fn swap_in(&self, loaded: HashMap<String, T>) {
        let gone: Vec<String> = match self.entries.write() {
            Ok(mut entries) => {
                let gone = if self.hooks.on_remove.is_some() {
                    entries
                        .keys()
                        .filter(|k| !loaded.contains_key(*k))
                        .cloned()
                        .collect()
                } else {
                    Vec::new()
                };
                *entries = loaded;
                gone
            }
            Err(_) => Vec::new(),
        };
        for key in gone {
            self.removed(&key);
        }
    }

    fn removed(&self, key: &str) {
        if let Some(hook) = &self.hooks.on_remove {
            hook(key);
        }
    }

    async fn follow(self: Arc<Self>, store: kv::Store, shutdown: CancellationToken) {
        let what = format!("the watch of bucket {}", store.name);
        let (mirror, store) = (&self, &store);
        crate::supervise::restart_until_cancelled(
            &what,
            &shutdown,
            std::time::Duration::from_millis(200),
            || async move {
                let watched = mirror.watch_once(store).await;
                mirror.live.down();
                watched
            },
        )
        .await;
    }

    async fn watch_once(&self, store: &kv::Store) -> anyhow::Result<()> {
        let state = crate::nats::bucket_state(store).await?;
        let caught_up_at = if state.messages == 0 {
            0
        } else {
            state.last_sequence
        };
        let mut watch = store.watch_with_history(">").await?;
        // Every watch, first or resumed, builds the state anew and swaps it in once caught up:
        // values that expired by max_age leave no delete marker on nats-server 2.9, so patching
        // the old map would keep them forever.
        let mut fresh = Some(HashMap::new());
        if caught_up_at == 0 {
            if let Some(empty) = fresh.take() {
                self.swap_in(empty);
            }
            self.ready.up();
            self.live.up();
        }
        while let Some(entry) = watch.next().await {
            let entry = entry?;
            let value = match entry.operation {
                Operation::Put => match serde_json::from_slice::<T>(&entry.value) {
                    Ok(value) => Some(value),
                    Err(err) => {
                        tracing::warn!(bucket = %store.name, key = %entry.key, error = %err, "skipping a malformed value");
                        None
                    }
                },
                Operation::Delete | Operation::Purge => None,
            };
            if let (Some(hook), Some(value)) = (&self.hooks.on_put, &value) {
                hook(&entry.key, value);
            }
            let removed = match (fresh.as_mut(), value) {
                (Some(loading), Some(value)) => {
                    loading.insert(entry.key, value);
                    None
                }
                // A key put and deleted while loading was told as put: tell its removal too,
                // since the swap only tells of keys the old copy had.
                (Some(loading), None) => loading.remove(&entry.key).map(|_| entry.key),
                (None, Some(value)) => {
                    if let Ok(mut entries) = self.entries.write() {
                        entries.insert(entry.key, value);
                    }
                    None
                }
                (None, None) => self
                    .entries
                    .write()
                    .is_ok_and(|mut entries| entries.remove(&entry.key).is_some())
                    .then_some(entry.key),
            };
            if let Some(key) = removed {
                self.removed(&key);
            }
            if fresh.is_some() && entry.revision >= caught_up_at {
                if let Some(loaded) = fresh.take() {
                    self.swap_in(loaded);
                }
                self.ready.up();
                self.live.up();
            }
            self.applied.send_modify(|r| *r = (*r).max(entry.revision));
        }
        anyhow::bail!("the watch stream closed")
    }
}
