//! Deadlines that cannot overflow.

use std::time::Duration;

use tokio::time::Instant;

/// `at + after`, or about 30 years after `at` when that is past what an `Instant` can hold (as
/// tokio does for `sleep(Duration::MAX)`), so a huge configured duration never panics.
pub(crate) fn later(at: Instant, after: Duration) -> Instant {
    at.checked_add(after)
        .unwrap_or_else(|| at + Duration::from_secs(86_400 * 365 * 30))
}

#[cfg(test)]
mod tests {
    use super::*;

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
