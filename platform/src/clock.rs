//! Wall-clock time in milliseconds since the Unix epoch, as stored in NATS records.

use std::time::{SystemTime, UNIX_EPOCH};

/// A duration in whole milliseconds, as records and timeouts compare them.
pub fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
