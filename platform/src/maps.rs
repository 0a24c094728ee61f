//! Hash maps for the lookups every request makes in memory (occupants mirrored, observes
//! counted, rooms followed). std's SipHash cost more than the rest of such a lookup on keys
//! of 30-40 bytes; foldhash is several times faster and still seeded at random per process,
//! so a client cannot choose keys that collide. Nothing here is iterated in an order anyone
//! relies on.

/// A `HashMap` hashed with foldhash.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// A `HashSet` hashed with foldhash.
pub type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;
