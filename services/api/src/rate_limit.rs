//! The say rate limit: a token bucket per session (`rate` tokens a second, at most `burst`
//! saved), kept in the `lingr_rates` key-value bucket so every api replica draws from the same
//! one. Taking a token is a read and a compare-and-set; a lost race is retried. Idle buckets age
//! out of NATS by themselves.

use async_nats::jetstream::kv::{self, Operation};
use lingr_platform::clock::now_ms;
use lingr_platform::ApiError;
use lingr_proto::ErrorCode;
use serde::{Deserialize, Serialize};

use crate::sessions::encode;

/// A session's bucket as stored.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Tokens {
    /// Tokens left.
    pub tokens: f64,
    /// When `tokens` was computed (Unix ms).
    pub at_ms: u64,
}

/// The limit itself, without storage.
#[derive(Debug, Clone, Copy)]
pub struct RateLimit {
    rate_per_ms: f64,
    burst: f64,
}

impl RateLimit {
    /// `rate` tokens a second, bursts of `burst`.
    pub fn new(rate: u32, burst: u32) -> Self {
        Self {
            rate_per_ms: f64::from(rate.max(1)) / 1000.0,
            burst: f64::from(burst.max(1)),
        }
    }

    /// The bucket after refilling to `now_ms` and taking one token, or `None` if it is empty.
    pub fn take(&self, bucket: Option<Tokens>, now_ms: u64) -> Option<Tokens> {
        let refilled = match bucket {
            None => self.burst,
            Some(b) => {
                let elapsed = now_ms.saturating_sub(b.at_ms) as f64;
                (b.tokens + elapsed * self.rate_per_ms).min(self.burst)
            }
        };
        (refilled >= 1.0).then_some(Tokens {
            tokens: refilled - 1.0,
            at_ms: now_ms,
        })
    }
}

/// The limit applied through the shared bucket.
pub struct SharedLimiter {
    limit: RateLimit,
    store: kv::Store,
}

impl SharedLimiter {
    /// A limiter over `store`.
    pub fn new(limit: RateLimit, store: kv::Store) -> Self {
        Self { limit, store }
    }

    /// Takes a token for `key`; false when the session has none left.
    ///
    /// # Errors
    /// `unavailable` when NATS does not answer or the bucket keeps changing under us.
    pub async fn try_take(&self, key: &str) -> Result<bool, ApiError> {
        for _ in 0..8 {
            let entry = self
                .store
                .entry(key)
                .await
                .map_err(|err| ApiError::unavailable("reading a rate bucket", err))?
                .filter(|e| e.operation == Operation::Put);
            let current = entry
                .as_ref()
                .and_then(|e| serde_json::from_slice::<Tokens>(&e.value).ok());
            let Some(next) = self.limit.take(current, now_ms()) else {
                return Ok(false);
            };
            let value = encode(&next)?;
            let stored = match entry {
                Some(e) => self.store.update(key, value, e.revision).await.is_ok(),
                None => self.store.create(key, value).await.is_ok(),
            };
            if stored {
                return Ok(true);
            }
        }
        Err(ApiError::new(
            ErrorCode::Unavailable,
            "the rate limit is busy; retry",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_a_burst_then_the_rate() {
        let limit = RateLimit::new(10, 20);
        let mut bucket = None;
        let mut taken = 0;
        for _ in 0..25 {
            if let Some(next) = limit.take(bucket, 1_000) {
                bucket = Some(next);
                taken += 1;
            }
        }
        assert_eq!(taken, 20);
        assert_eq!(limit.take(bucket, 1_050), None, "half a token after 50 ms");
        assert!(
            limit.take(bucket, 1_100).is_some(),
            "one token after 100 ms"
        );
        assert!(
            limit.take(None, 1_000).is_some(),
            "a new session has a full bucket"
        );
    }

    #[test]
    fn refills_no_further_than_the_burst_and_survives_clock_skew() {
        let limit = RateLimit::new(10, 20);
        let empty = Tokens {
            tokens: 0.0,
            at_ms: 10_000,
        };
        assert_eq!(
            limit.take(Some(empty), 1_000_000).map(|b| b.tokens),
            Some(19.0)
        );
        assert_eq!(
            limit.take(Some(empty), 5_000),
            None,
            "a replica whose clock is behind refills nothing"
        );
    }
}
