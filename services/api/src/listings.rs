//! Who each room lists, kept per room from the occupants mirror's hooks, so an enter into a
//! room of 20,000 reads its page and count without walking the room's 20,000 records.
//!
//! A room lists its named occupants whose enter event is stored and who are not leaving
//! (see [`crate::roster`]); named ones whose enter is still being published are kept apart as
//! pending. Anonymous observers are not kept at all.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::{Arc, RwLock};

use lingr_platform::mirror::Hooks;
use lingr_proto::api::Occupant;
use lingr_proto::records::OccupantRecord;
use lingr_proto::{OccupantId, RoomId};

/// Every room's listing.
#[derive(Default)]
pub struct Listings {
    rooms: RwLock<HashMap<String, RoomListing>>,
}

#[derive(Default)]
struct RoomListing {
    /// Listed occupants by occupant id: their nickname and enter counter.
    listed: BTreeMap<String, Listed>,
    /// The same occupants by enter counter, to count those entered by a given counter.
    by_counter: BTreeSet<(u64, String)>,
    /// Named occupants whose enter is being published, with when they entered (Unix ms).
    pending: HashMap<String, u64>,
}

struct Listed {
    nickname: String,
    enter_counter: u64,
}

/// What a client is told of a room's occupants: how many there are, and a page of them.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Roster {
    /// Every occupant listed as of the counter.
    pub count: usize,
    /// Those after the page's start, at most its limit, in occupant-id order.
    pub page: Vec<Occupant>,
    /// Whether more follow the page.
    pub has_more: bool,
}

/// Where a page of a roster starts and how long it is.
#[derive(Debug, Clone, Copy)]
pub struct Page<'a> {
    /// List occupants whose id sorts after this one.
    pub after: Option<&'a OccupantId>,
    /// The most to list.
    pub limit: usize,
}

impl RoomListing {
    fn forget(&mut self, occupant: &str) {
        if let Some(gone) = self.listed.remove(occupant) {
            self.by_counter
                .remove(&(gone.enter_counter, occupant.to_owned()));
        }
        self.pending.remove(occupant);
    }

    fn is_empty(&self) -> bool {
        self.listed.is_empty() && self.pending.is_empty()
    }
}

impl Listings {
    /// Takes in the occupant record put under `key` (`<room>.<occupant>`).
    pub fn put(&self, key: &str, record: &OccupantRecord) {
        let Some((room, occupant)) = key.split_once('.') else {
            return;
        };
        let Ok(mut rooms) = self.rooms.write() else {
            return;
        };
        let listing = rooms.entry(room.to_owned()).or_default();
        listing.forget(occupant);
        match (&record.nickname, record.leaving, record.enter_counter) {
            (Some(nickname), false, Some(enter_counter)) => {
                listing
                    .by_counter
                    .insert((enter_counter, occupant.to_owned()));
                listing.listed.insert(
                    occupant.to_owned(),
                    Listed {
                        nickname: nickname.as_str().to_owned(),
                        enter_counter,
                    },
                );
            }
            (Some(_), false, None) => {
                listing
                    .pending
                    .insert(occupant.to_owned(), record.entered_ms);
            }
            _ => {}
        }
        if listing.is_empty() {
            rooms.remove(room);
        }
    }

    /// Forgets the occupant whose record under `key` was removed.
    pub fn remove(&self, key: &str) {
        let Some((room, occupant)) = key.split_once('.') else {
            return;
        };
        let Ok(mut rooms) = self.rooms.write() else {
            return;
        };
        if let Some(listing) = rooms.get_mut(room) {
            listing.forget(occupant);
            if listing.is_empty() {
                rooms.remove(room);
            }
        }
    }

    /// Mirror hooks that keep these listings, and then tell `also` of each change.
    pub fn hooks(self: &Arc<Self>, also: Hooks<OccupantRecord>) -> Hooks<OccupantRecord> {
        let (put, removed) = (Arc::clone(self), Arc::clone(self));
        let Hooks {
            on_put: also_on_put,
            on_remove: also_on_remove,
        } = also;
        Hooks {
            on_put: Some(Box::new(move |key: &str, record: &OccupantRecord| {
                put.put(key, record);
                if let Some(also) = &also_on_put {
                    also(key, record);
                }
            })),
            on_remove: Some(Box::new(move |key: &str| {
                removed.remove(key);
                if let Some(also) = &also_on_remove {
                    also(key);
                }
            })),
        }
    }

    /// The room's listing as of `counter`: how many have their enter event at or before it,
    /// and `page` of them. Costs the page and the occupants entered after `counter` (a
    /// caller's own enter is among the newest), not the room.
    pub fn roster(&self, room: &RoomId, counter: u64, page: Page<'_>) -> Roster {
        let Ok(rooms) = self.rooms.read() else {
            return Roster::default();
        };
        let Some(listing) = rooms.get(room.as_str()) else {
            return Roster::default();
        };
        let later = listing
            .by_counter
            .range((Bound::Excluded((counter, String::new())), Bound::Unbounded))
            .filter(|(entered, _)| *entered > counter)
            .count();
        let start = page
            .after
            .map_or(Bound::Unbounded, |after| Bound::Excluded(after.as_str()));
        let mut entered_by_counter = listing
            .listed
            .range::<str, _>((start, Bound::Unbounded))
            .filter(|(_, listed)| listed.enter_counter <= counter);
        let listed = entered_by_counter
            .by_ref()
            .take(page.limit)
            .map(|(id, listed)| Occupant {
                id: id.clone(),
                nickname: listed.nickname.clone(),
            })
            .collect();
        Roster {
            count: listing.listed.len() - later,
            page: listed,
            has_more: entered_by_counter.next().is_some(),
        }
    }

    /// The room's named occupants whose enter is being published and who entered at
    /// `since_ms` or later (older ones belong to an enter that failed half-way), as occupant
    /// ids.
    pub fn pending_since(&self, room: &RoomId, since_ms: u64) -> Vec<String> {
        let Ok(rooms) = self.rooms.read() else {
            return Vec::new();
        };
        rooms.get(room.as_str()).map_or_else(Vec::new, |listing| {
            listing
                .pending
                .iter()
                .filter(|(_, entered)| **entered >= since_ms)
                .map(|(occupant, _)| occupant.clone())
                .collect()
        })
    }

    /// Whether `occupant` of `room` is still pending (named, its enter being published).
    pub fn is_pending(&self, room: &RoomId, occupant: &str) -> bool {
        self.rooms.read().is_ok_and(|rooms| {
            rooms
                .get(room.as_str())
                .is_some_and(|listing| listing.pending.contains_key(occupant))
        })
    }

    /// How many rooms have someone listed or pending.
    #[cfg(test)]
    fn rooms(&self) -> usize {
        self.rooms.read().map_or(0, |rooms| rooms.len())
    }
}

#[cfg(test)]
mod tests {
    use lingr_proto::Nickname;

    use super::*;

    /// Occupant ids sort as `n` does.
    fn id(n: u8) -> OccupantId {
        OccupantId::from_bytes(&[n; 16])
    }

    fn record(n: u8, nickname: Option<&str>, enter_counter: Option<u64>) -> OccupantRecord {
        OccupantRecord {
            room: lobby(),
            occupant_id: id(n),
            session_tag: "tag".into(),
            nickname: nickname.map(|n| Nickname::parse(n).expect("nickname")),
            entered_ms: 1_000,
            enter_counter,
            idempotency_key: None,
            leaving: false,
        }
    }

    fn lobby() -> RoomId {
        RoomId::parse("lobby").expect("room")
    }

    fn page(after: Option<&OccupantId>, limit: usize) -> Page<'_> {
        Page { after, limit }
    }

    fn put(listings: &Listings, record: &OccupantRecord) {
        listings.put(&record.key(), record);
    }

    fn ids(page: &Roster) -> Vec<String> {
        page.page.iter().map(|o| o.id.clone()).collect()
    }

    fn named(ns: &[u8]) -> Vec<String> {
        ns.iter().map(|&n| id(n).as_str().to_owned()).collect()
    }

    #[test]
    fn lists_named_stored_occupants_as_of_a_counter_in_pages() {
        let listings = Listings::default();
        for n in 1..=4u8 {
            put(&listings, &record(n, Some("n"), Some(10 + u64::from(n))));
        }
        put(&listings, &record(8, None, None));
        put(&listings, &record(9, Some("p"), None));

        let first = listings.roster(&lobby(), 13, page(None, 2));
        assert_eq!(
            (first.count, ids(&first), first.has_more),
            (3, named(&[1, 2]), true)
        );
        let after = id(2);
        let next = listings.roster(&lobby(), 13, page(Some(&after), 2));
        assert_eq!(
            (next.count, ids(&next), next.has_more),
            (3, named(&[3]), false)
        );
        assert_eq!(
            listings.roster(&lobby(), u64::MAX, page(None, 100)).count,
            4
        );
        assert_eq!(listings.pending_since(&lobby(), 0), named(&[9]));
        assert!(listings.is_pending(&lobby(), id(9).as_str()));
        assert!(!listings.is_pending(&lobby(), id(1).as_str()));
        assert!(listings.pending_since(&lobby(), 1_001).is_empty());
    }

    #[test]
    fn an_occupant_stored_renamed_leaving_or_removed_is_listed_as_it_is_now() {
        let listings = Listings::default();
        let mut alice = record(1, Some("alice"), None);
        put(&listings, &alice);
        alice.enter_counter = Some(5);
        put(&listings, &alice);
        assert!(listings.pending_since(&lobby(), 0).is_empty());
        alice.nickname = Some(Nickname::parse("alicia").expect("nickname"));
        put(&listings, &alice);
        let renamed = listings.roster(&lobby(), 5, page(None, 10));
        assert_eq!(
            (renamed.count, renamed.page[0].nickname.as_str()),
            (1, "alicia")
        );

        alice.leaving = true;
        put(&listings, &alice);
        assert_eq!(
            listings.roster(&lobby(), 5, page(None, 10)),
            Roster::default()
        );
        assert_eq!(listings.rooms(), 0, "an empty room is not kept");

        let bob = record(2, Some("bob"), Some(6));
        put(&listings, &bob);
        assert_eq!(listings.rooms(), 1);
        listings.remove(&bob.key());
        assert_eq!(listings.rooms(), 0);
    }
}
