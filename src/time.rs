//! Deadlines that cannot overflow, and the time of a batch of polls.

use std::{cell::Cell, time::Duration};

use tokio::time::Instant;

thread_local! {
    /// The time a batch of polls on this thread started, while one runs (see [`Batch`]).
    static BATCH: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// The time for stamps that may be as old as the current batch of polls: the batch's start
/// when one runs on this thread (a driver polling its connections, `serve`), else the clock.
///
/// Why: a publish wakes every subscriber's connection, and each stamps its frame (for the
/// keep-alive). One clock read per connection per event was about 20 ns of the lean path's
/// 0.5 µs above the raw write (`BENCHMARKS.md`, session 11); the time is the same for all of
/// them, so it is read once per batch. Not for deadlines that a stale time could make fire
/// late or be missed: only for "when did this last happen" stamps.
pub(crate) fn batch_now() -> Instant {
    BATCH.with(Cell::get).unwrap_or_else(Instant::now)
}

/// While it lives, [`batch_now`] on this thread is the time it was made.
#[cfg(feature = "server")]
pub(crate) struct Batch(Option<Instant>);

#[cfg(feature = "server")]
impl Batch {
    /// Starts a batch now.
    pub(crate) fn start() -> Self {
        Self(BATCH.with(|batch| batch.replace(Some(Instant::now()))))
    }
}

#[cfg(feature = "server")]
impl Drop for Batch {
    fn drop(&mut self) {
        BATCH.with(|batch| batch.set(self.0));
    }
}

/// `at + after`, or about 30 years after `at` when that is past what an `Instant` can hold (as
/// tokio does for `sleep(Duration::MAX)`), so a huge configured duration never panics.
pub(crate) fn later(at: Instant, after: Duration) -> Instant {
    at.checked_add(after)
        .unwrap_or_else(|| at + Duration::from_secs(86_400 * 365 * 30))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "server")]
    #[test]
    fn a_batch_fixes_the_time_until_it_ends() {
        let outside = batch_now();
        std::thread::sleep(Duration::from_millis(2));
        assert!(batch_now() > outside, "the clock, outside a batch");
        let batch = Batch::start();
        let at = batch_now();
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(batch_now(), at, "the batch's start, inside it");
        drop(batch);
        assert!(batch_now() > at, "the clock again");
    }

    #[test]
    fn never_overflows() {
        let now = Instant::now();
        assert!(later(now, Duration::MAX) > now + Duration::from_secs(86_400 * 365));
        assert_eq!(
            later(now, Duration::from_secs(1)),
            now + Duration::from_secs(1)
        );
    }
}
