//! Rate limits as token buckets (`rate` tokens a second, at most `burst` saved), kept in the
//! `lingr_rates` key-value bucket so every api replica draws from the same one: one bucket per
//! session for say, enter, set_nickname and exit, and one per client address for
//! `session/create`. Taking a token is a read and a compare-and-set; a lost race is retried.
//! Idle buckets age out of NATS by themselves.

use async_nats::jetstream::kv;
use lingr_platform::clock::now_ms;
use lingr_platform::kv::{update, Decision};
use lingr_platform::ApiError;
use lingr_proto::ErrorCode;
use serde::{Deserialize, Serialize};

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
    /// `rate` tokens a second, bursts of `burst`; `None` when `rate` is zero, which turns the
    /// limit off (for load tests).
    pub fn new(rate: f64, burst: u32) -> Option<Self> {
        (rate > 0.0).then(|| Self {
            rate_per_ms: rate / 1000.0,
            burst: f64::from(burst.max(1)),
        })
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

    /// Takes a token for `key`, or refuses with 429 `rate_limited` and `detail` when none is
    /// left.
    ///
    /// # Errors
    /// `rate_limited`; `unavailable` when NATS does not answer or the bucket keeps changing.
    pub async fn take(&self, key: &str, detail: &'static str) -> Result<(), ApiError> {
        let mut taken = false;
        update::<Tokens, _>(&self.store, key, |current| {
            match self.limit.take(current.copied(), now_ms()) {
                Some(next) => {
                    taken = true;
                    Decision::Write(next)
                }
                None => {
                    taken = false;
                    Decision::Keep
                }
            }
        })
        .await?;
        if taken {
            Ok(())
        } else {
            Err(ApiError::new(ErrorCode::RateLimited, detail))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_a_burst_then_the_rate() {
        let limit = RateLimit::new(10.0, 20).expect("on");
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
    fn a_zero_rate_turns_the_limit_off() {
        assert!(RateLimit::new(0.0, 30).is_none());
        let slow = RateLimit::new(0.5, 1).expect("on");
        let after_one = slow.take(None, 0);
        assert!(after_one.is_some());
        assert_eq!(slow.take(after_one, 1_999), None, "half a token a second");
        assert!(slow.take(after_one, 2_000).is_some());
    }

    #[test]
    fn refills_no_further_than_the_burst_and_survives_clock_skew() {
        let limit = RateLimit::new(10.0, 20).expect("on");
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
