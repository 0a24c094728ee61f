//! Keys to look at again, by when: the reaper's agenda. The reaper takes only the keys that
//! are due and schedules each one for the moment it could next need action (its presence
//! timeout, its session's TTL), so a pass costs what is due, not everything stored. Mirror
//! hooks put every changed key on the agenda for the next pass.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use lingr_platform::mirror::{Hooks, OnRemove};

/// Keys and the time (Unix ms) each is due.
#[derive(Default)]
pub struct Due {
    agenda: Mutex<Agenda>,
}

#[derive(Default)]
struct Agenda {
    by_time: BTreeSet<(u64, String)>,
    by_key: HashMap<String, u64>,
}

impl Due {
    /// Makes `key` due at `at_ms` at the latest (a key already due sooner stays so).
    pub fn schedule(&self, key: &str, at_ms: u64) {
        let Ok(mut agenda) = self.agenda.lock() else {
            return;
        };
        match agenda.by_key.get(key).copied() {
            Some(due) if due <= at_ms => {}
            Some(due) => {
                agenda.by_time.remove(&(due, key.to_owned()));
                agenda.by_time.insert((at_ms, key.to_owned()));
                agenda.by_key.insert(key.to_owned(), at_ms);
            }
            None => {
                agenda.by_time.insert((at_ms, key.to_owned()));
                agenda.by_key.insert(key.to_owned(), at_ms);
            }
        }
    }

    /// Makes `key` due at once.
    pub fn soon(&self, key: &str) {
        self.schedule(key, 0);
    }

    /// Takes `key` off the agenda.
    pub fn cancel(&self, key: &str) {
        if let Ok(mut agenda) = self.agenda.lock() {
            if let Some(due) = agenda.by_key.remove(key) {
                agenda.by_time.remove(&(due, key.to_owned()));
            }
        }
    }

    /// Takes off the agenda, and returns, every key due at `now_ms` or before.
    pub fn take_due(&self, now_ms: u64) -> Vec<String> {
        let Ok(mut agenda) = self.agenda.lock() else {
            return Vec::new();
        };
        let later = agenda
            .by_time
            .split_off(&(now_ms.saturating_add(1), String::new()));
        let due = std::mem::replace(&mut agenda.by_time, later);
        due.into_iter()
            .map(|(_, key)| {
                agenda.by_key.remove(&key);
                key
            })
            .collect()
    }

    /// Hooks for the mirror of the bucket whose keys this agenda holds: a key put is due at
    /// once, a key removed leaves the agenda (then `also_on_remove` runs).
    pub fn hooks<T>(self: &Arc<Self>, also_on_remove: Option<OnRemove>) -> Hooks<T> {
        let (put, removed) = (Arc::clone(self), Arc::clone(self));
        Hooks {
            on_put: Some(Box::new(move |key: &str, _: &T| put.soon(key))),
            on_remove: Some(Box::new(move |key: &str| {
                removed.cancel(key);
                if let Some(also) = &also_on_remove {
                    also(key);
                }
            })),
        }
    }

    /// How many keys are on the agenda.
    pub fn len(&self) -> usize {
        self.agenda.lock().map_or(0, |agenda| agenda.by_key.len())
    }

    /// Whether the agenda is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_is_due_is_taken_and_the_sooner_time_wins() {
        let due = Due::default();
        due.schedule("a", 100);
        due.schedule("b", 300);
        due.schedule("c", 200);
        due.schedule("b", 150);
        due.schedule("c", 900);
        assert_eq!(due.take_due(99), Vec::<String>::new());
        assert_eq!(due.take_due(200), ["a", "b", "c"]);
        assert!(due.is_empty());
    }

    #[test]
    fn a_cancelled_key_is_not_taken_and_a_soon_one_is_taken_first() {
        let due = Due::default();
        due.schedule("gone", 10);
        due.schedule("later", 10_000);
        due.cancel("gone");
        due.soon("later");
        assert_eq!(due.take_due(5), ["later"]);
        assert_eq!(due.take_due(u64::MAX), Vec::<String>::new());
    }
}
