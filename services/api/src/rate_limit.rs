//! A token bucket per session for `room/say`: `rate` tokens a second, at most `burst` saved.
//!
//! It is kept per api replica, in memory: a session spread across N replicas by the load
//! balancer could say up to N times the rate. Idle buckets are dropped so memory stays bounded
//! by the sessions active in the last minute.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Per-session token buckets.
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    /// A limiter of `rate` per second with bursts of `burst`.
    pub fn new(rate: u32, burst: u32) -> Self {
        Self {
            rate: f64::from(rate.max(1)),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `key` at `now`; false when none is left.
    pub fn try_take(&self, key: &str, now: Instant) -> bool {
        let Ok(mut buckets) = self.buckets.lock() else {
            return true;
        };
        if buckets.len() > 10_000 {
            buckets.retain(|_, b| now.duration_since(b.at) < Duration::from_secs(60));
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_a_burst_then_the_rate() {
        let limiter = RateLimiter::new(10, 20);
        let start = Instant::now();
        assert_eq!((0..25).filter(|_| limiter.try_take("s", start)).count(), 20);
        assert!(!limiter.try_take("s", start + Duration::from_millis(50)));
        assert!(limiter.try_take("s", start + Duration::from_millis(100)));
        assert!(
            limiter.try_take("other", start),
            "sessions have their own buckets"
        );
    }
}
