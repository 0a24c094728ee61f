//! Hash maps for lookups every observe makes in memory by keys the service made: occupant ids
//! (random), session tags (a SHA-256 of the token) and client addresses. std's SipHash cost
//! more than the rest of such a lookup on keys of 30-40 bytes; foldhash is several times
//! faster but does not claim to resist keys chosen to collide, so maps keyed by text a client
//! picks (room names, and keys containing them) keep std's hasher.

/// A `HashMap` hashed with foldhash.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// A `HashSet` hashed with foldhash.
pub type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;
