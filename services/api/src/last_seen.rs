//! When each occupant was last seen, from the presence bucket: the api's own record of an
//! occupant's calls, and every comet replica's batch of observing occupants. The presence
//! mirror hands each value here as it arrives, so a lookup is one map read however many
//! batches there are.
//!
//! Times only move forward: a batch that shrinks, a part deleted or a replica gone lowers no
//! one's time, so an occupant that stops being seen times out one presence timeout after it
//! was last seen, wherever that was.

use std::collections::HashMap;
use std::sync::RwLock;

use lingr_proto::records::PresenceRecord;

/// The latest time (Unix ms) each occupant was seen.
#[derive(Default)]
pub struct LastSeen {
    by_occupant: RwLock<HashMap<String, u64>>,
}

impl LastSeen {
    /// Takes in a presence value put under `key`.
    pub fn record(&self, key: &str, value: &PresenceRecord) {
        let Ok(mut seen) = self.by_occupant.write() else {
            return;
        };
        let mut saw = |occupant: &str, at_ms: u64| match seen.get_mut(occupant) {
            Some(latest) => *latest = (*latest).max(at_ms),
            None => {
                seen.insert(occupant.to_owned(), at_ms);
            }
        };
        match value {
            PresenceRecord::Occupant(at_ms) => saw(key, *at_ms),
            PresenceRecord::Batch(batch) => {
                for occupant in &batch.occupants {
                    saw(occupant.as_str(), batch.at_ms);
                }
            }
        }
    }

    /// When `occupant` was last seen, if it has been.
    pub fn get(&self, occupant: &str) -> Option<u64> {
        self.by_occupant.read().ok()?.get(occupant).copied()
    }

    /// Forgets an occupant that left its room.
    pub fn forget(&self, occupant: &str) {
        if let Ok(mut seen) = self.by_occupant.write() {
            seen.remove(occupant);
        }
    }

    /// Forgets occupants not seen since `cutoff_ms`: ones a batch listed after they left.
    pub fn forget_unseen_since(&self, cutoff_ms: u64) {
        if let Ok(mut seen) = self.by_occupant.write() {
            seen.retain(|_, at_ms| *at_ms >= cutoff_ms);
        }
    }
}

#[cfg(test)]
mod tests {
    use lingr_proto::records::PresenceBatch;
    use lingr_proto::OccupantId;

    use super::*;

    fn batch(at_ms: u64, occupants: &[u8]) -> PresenceRecord {
        PresenceRecord::Batch(PresenceBatch {
            at_ms,
            occupants: occupants
                .iter()
                .map(|n| OccupantId::from_bytes(&[*n; 16]))
                .collect(),
        })
    }

    fn id(n: u8) -> String {
        OccupantId::from_bytes(&[n; 16]).as_str().to_owned()
    }

    #[test]
    fn an_occupant_is_seen_at_the_latest_time_anything_listed_it() {
        let seen = LastSeen::default();
        seen.record("comet.a.0", &batch(100, &[1, 2]));
        seen.record("comet.b.0", &batch(300, &[2]));
        seen.record(&id(1), &PresenceRecord::Occupant(200));
        // An older batch arriving late (a slow replica) moves nobody back.
        seen.record("comet.a.0", &batch(50, &[1, 2, 3]));
        assert_eq!(seen.get(&id(1)), Some(200));
        assert_eq!(seen.get(&id(2)), Some(300));
        assert_eq!(seen.get(&id(3)), Some(50));
        assert_eq!(seen.get(&id(4)), None);
    }

    #[test]
    fn occupants_are_forgotten_when_they_leave_or_when_long_unseen() {
        let seen = LastSeen::default();
        seen.record("comet.a.0", &batch(100, &[1, 2, 3]));
        seen.record("comet.a.1", &batch(500, &[3]));
        seen.forget(&id(1));
        seen.forget_unseen_since(400);
        assert_eq!(seen.get(&id(1)), None);
        assert_eq!(seen.get(&id(2)), None);
        assert_eq!(seen.get(&id(3)), Some(500));
    }
}
