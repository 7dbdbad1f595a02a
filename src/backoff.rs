#![cfg_attr(not(feature = "client-plain"), allow(dead_code))]
//! Reconnection delays: exponential backoff with equal jitter, for the client's reconnects and
//! the brokers' readers and listeners.

use std::{
    hash::{BuildHasher, Hasher},
    time::Duration,
};

/// The delay before each reconnection attempt.
///
/// Attempt `n` (counting from 0 since the last healthy connection) waits `base` for `n = 0`,
/// then `min(max(base, 100 ms) * 2^n, max(cap, base))`, where `base` is the reconnection time
/// (the client's default or the server's last `retry:`). With jitter, the delay is drawn uniformly from
/// `[d/2, d]` ("equal jitter"), so it never exceeds what the server asked for and clients that
/// lost the same server at the same moment spread out.
const MIN_GROWTH: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    base: Duration,
    cap: Duration,
    jitter: bool,
    attempts: u32,
    rng: XorShift,
}

impl Backoff {
    pub(crate) fn new(base: Duration, cap: Duration, jitter: bool) -> Self {
        Self::with_seed(base, cap, jitter, random_seed())
    }

    pub(crate) fn with_seed(base: Duration, cap: Duration, jitter: bool, seed: u64) -> Self {
        Self {
            base,
            cap,
            jitter,
            attempts: 0,
            rng: XorShift::new(seed),
        }
    }

    pub(crate) fn base(&self) -> Duration {
        self.base
    }

    pub(crate) fn set_base(&mut self, base: Duration) {
        self.base = base;
    }

    pub(crate) fn set_cap(&mut self, cap: Duration) {
        self.cap = cap;
    }

    pub(crate) fn set_jitter(&mut self, jitter: bool) {
        self.jitter = jitter;
    }

    /// Attempts made since the last [`reset`](Self::reset).
    pub(crate) fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Forgets past attempts: the next delay is the base again.
    pub(crate) fn reset(&mut self) {
        self.attempts = 0;
    }

    /// The delay before the next attempt; counts the attempt.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = if self.attempts == 0 {
            self.base
        } else {
            // Grow from at least MIN_GROWTH, so that `retry: 0` does not become a busy loop.
            let unit = self.base.max(MIN_GROWTH);
            let factor = 1u32.checked_shl(self.attempts).unwrap_or(u32::MAX);
            unit.saturating_mul(factor).min(self.cap.max(self.base))
        };
        self.attempts = self.attempts.saturating_add(1);
        if !self.jitter {
            return delay;
        }
        let half = delay / 2;
        let spread = u64::try_from((delay - half).as_nanos()).unwrap_or(u64::MAX);
        let extra = match spread.checked_add(1) {
            Some(n) => self.rng.next() % n,
            None => self.rng.next(),
        };
        half + Duration::from_nanos(extra)
    }
}

/// xorshift64*: small, fast, good enough to spread reconnections (not for anything secret).
#[derive(Debug, Clone)]
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        // Zero is the one state xorshift never leaves.
        Self(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// A seed from the standard library's per-process random hasher keys.
fn random_seed() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0x5EED);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn doubles_up_to_the_cap_without_jitter() {
        let mut backoff = Backoff::with_seed(100 * MS, 1000 * MS, false, 1);
        let delays: Vec<_> = (0..7).map(|_| backoff.next_delay()).collect();
        assert_eq!(
            delays,
            [100, 200, 400, 800, 1000, 1000, 1000].map(|n| n * MS)
        );
        assert_eq!(backoff.attempts(), 7);
        backoff.reset();
        assert_eq!(backoff.next_delay(), 100 * MS);
    }

    #[test]
    fn jitter_stays_within_half_and_full_delay_and_is_deterministic() {
        let mut a = Backoff::with_seed(3000 * MS, 30_000 * MS, true, 42);
        let mut b = Backoff::with_seed(3000 * MS, 30_000 * MS, true, 42);
        let mut seen = Vec::new();
        for n in 0..10u32 {
            let full = (3000 * MS * 2u32.pow(n.min(4))).min(30_000 * MS);
            let delay = a.next_delay();
            assert_eq!(delay, b.next_delay());
            assert!(
                delay >= full / 2 && delay <= full,
                "attempt {n}: {delay:?} not in [{:?}, {full:?}]",
                full / 2
            );
            seen.push(delay);
        }
        seen.dedup();
        assert!(seen.len() > 5, "jitter should vary: {seen:?}");
    }

    #[test]
    fn server_retry_above_the_cap_is_honoured() {
        let mut backoff = Backoff::with_seed(MS, 30_000 * MS, false, 1);
        backoff.set_base(60_000 * MS);
        assert_eq!(backoff.next_delay(), 60_000 * MS);
        assert_eq!(backoff.next_delay(), 60_000 * MS);
    }

    #[test]
    fn huge_attempt_counts_saturate() {
        let mut backoff = Backoff::with_seed(Duration::MAX, Duration::MAX, true, 7);
        for _ in 0..100 {
            let delay = backoff.next_delay();
            assert!(delay >= Duration::MAX / 2);
        }
    }

    #[test]
    fn zero_retry_still_backs_off() {
        let mut zero = Backoff::with_seed(Duration::ZERO, 1000 * MS, false, 0);
        let delays: Vec<_> = (0..6).map(|_| zero.next_delay()).collect();
        assert_eq!(delays, [0, 200, 400, 800, 1000, 1000].map(|n| n * MS));
    }
}
