//! How a `Last-Event-ID` was honoured, and how that is told over HTTP.

use http::{HeaderName, HeaderValue};

/// How a stream's `Last-Event-ID` was honoured: by a [`Hub`](crate::hub::Hub) subscription
/// ([`Subscription::replay`](crate::hub::Subscription::replay)) or a [`ReplayLog`]
/// ([`Resume::replay`]).
///
/// An HTTP layer can turn [`Replay::HistoryLost`] into a response header ([`REPLAY_HEADER`], in
/// the spirit of Mercure's `Last-Event-ID` response header or Centrifugo's
/// `recovered: false`) or a first event, so the client knows it may have missed events and
/// should reload its state.
///
/// [`ReplayLog`]: super::ReplayLog
/// [`Resume::replay`]: super::Resume::replay
///
/// ```
/// use tower_sse::replay::Replay;
///
/// assert!(Replay::HistoryLost.is_lost());
/// assert!(!Replay::Complete.is_lost());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Replay {
    /// No `Last-Event-ID` was given: live events only.
    NotRequested,
    /// The id was found: every later event is replayed, then live events follow, with no gap
    /// and no duplicate.
    Complete,
    /// The id is unknown (evicted, from another hub or epoch, or never issued). What follows
    /// depends on [`UnknownId`].
    HistoryLost,
}

impl Replay {
    /// Whether the client may have missed events.
    ///
    /// ```
    /// assert!(!tower_sse::replay::Replay::NotRequested.is_lost());
    /// ```
    pub fn is_lost(self) -> bool {
        matches!(self, Self::HistoryLost)
    }

    /// The value of [`REPLAY_HEADER`]: `"none"`, `"complete"` or `"history-lost"`.
    ///
    /// ```
    /// use tower_sse::replay::Replay;
    ///
    /// assert_eq!(Replay::NotRequested.as_str(), "none");
    /// assert_eq!(Replay::Complete.as_str(), "complete");
    /// assert_eq!(Replay::HistoryLost.as_str(), "history-lost");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotRequested => "none",
            Self::Complete => "complete",
            Self::HistoryLost => "history-lost",
        }
    }

    /// [`as_str`](Self::as_str) as a header value.
    ///
    /// ```
    /// assert_eq!(tower_sse::replay::Replay::Complete.header_value(), "complete");
    /// ```
    pub fn header_value(self) -> HeaderValue {
        HeaderValue::from_static(self.as_str())
    }
}

/// What a stream gets when its `Last-Event-ID` is not in the history: evicted, issued by
/// another hub (for example before a restart), or not an id that was ever issued.
///
/// Either way the stream reports [`Replay::HistoryLost`], so the caller can tell the client (a
/// response header, an event) instead of skipping silently.
///
/// The default, [`SendRecent`](Self::SendRecent)`(`[`DEFAULT_RECENT`](Self::DEFAULT_RECENT)`)`,
/// is bounded: an unknown id costs at most the newest 100 events, not the whole history (a
/// 100-byte request with a made-up id would otherwise fetch up to `history_bytes`, 1 MiB by
/// default, per topic). A client that fell behind the history gets the newest events and the
/// history-lost signal, which tells it to reload what it shows.
///
/// ```
/// use tower_sse::{Event, hub::Hub, replay::{Replay, UnknownId}};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let hub = Hub::builder().on_unknown_id(UnknownId::LiveOnly).build();
/// hub.publish("t", Event::new().data("old")).await.unwrap();
/// let sub = hub.subscriber("t").last_event_id(Some("garbage")).subscribe().await.unwrap();
/// assert_eq!(sub.replay(), Replay::HistoryLost);
/// assert_eq!(sub.backlog_len(), 0);
///
/// // The default: at most the newest `DEFAULT_RECENT` events.
/// let hub = Hub::builder().build();
/// for n in 0..150 {
///     hub.publish("t", Event::new().data(n.to_string())).await.unwrap();
/// }
/// let sub = hub.subscriber("t").last_event_id(Some("garbage")).subscribe().await.unwrap();
/// assert_eq!(sub.replay(), Replay::HistoryLost);
/// assert_eq!(sub.backlog_len(), UnknownId::DEFAULT_RECENT);
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownId {
    /// Send the newest `n` retained events (fewer if fewer are retained), then live events.
    /// The default, with `n` = [`DEFAULT_RECENT`](Self::DEFAULT_RECENT). When the id was
    /// evicted, every retained event is newer than it, so nothing is sent twice.
    SendRecent(usize),
    /// Send the whole retained history, then live events: as much as the history bounds
    /// allow, to any client that names an unknown id.
    SendHistory,
    /// Send only live events.
    LiveOnly,
}

impl Default for UnknownId {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl UnknownId {
    /// The default: [`SendRecent`](Self::SendRecent)`(`[`DEFAULT_RECENT`](Self::DEFAULT_RECENT)`)`.
    pub const DEFAULT: Self = Self::SendRecent(Self::DEFAULT_RECENT);

    /// The default number of events [`SendRecent`](Self::SendRecent) sends: 100.
    pub const DEFAULT_RECENT: usize = 100;

    /// How many of the newest retained events to send (`usize::MAX`: all, `0`: none).
    pub(crate) fn newest(self) -> usize {
        match self {
            Self::SendRecent(n) => n,
            Self::SendHistory => usize::MAX,
            Self::LiveOnly => 0,
        }
    }
}

/// Keeps the newest `n` of `items` (ordered oldest first).
pub(crate) fn keep_newest<T>(items: &mut Vec<T>, n: usize) {
    if items.len() > n {
        items.drain(..items.len() - n);
    }
}

/// The response header that says how the request's `Last-Event-ID` was honoured: `none`,
/// `complete` or `history-lost` (see [`Replay::as_str`]).
///
/// A hub subscription and a [`Resume`](super::Resume) know whether their replay was complete.
/// Over HTTP that is said twice, once for each kind of client:
///
/// - **This response header** (`Sse-Replay`), with one of the values of
///   [`Replay::as_str`]: `none` (no `Last-Event-ID` was sent), `complete` (every missed event
///   follows, then live ones), or `history-lost` (the id is unknown: evicted, from another
///   epoch or process, or never issued; what follows is the retained history or only live
///   events, per [`UnknownId`]). This is in the spirit of Mercure, whose hub answers a
///   reconnection with a `Last-Event-ID` response header so the subscriber can tell where it
///   resumed, and of Centrifugo's `recovered: false`. Readable by `fetch`-based and
///   server-side clients, not by a browser's `EventSource`.
/// - **An event**, opt-in with
///   [`Subscription::notify_history_lost`](crate::hub::Subscription::notify_history_lost) or
///   [`Resume::notify_history_lost`](super::Resume::notify_history_lost): sent first, without
///   an id, so a page can say "some messages may be missing" and reload its state.
///
/// With the `axum` feature, a hub subscription and a [`Resume`](super::Resume) are axum
/// responses with the header set.
///
/// # Example
///
/// ```
/// use tower_sse::{hub::Hub, replay::REPLAY_HEADER};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let hub = Hub::new();
/// let sub = hub.subscriber("t").last_event_id(Some("unknown")).subscribe().await.unwrap();
/// let response = http::Response::builder()
///     .header(REPLAY_HEADER, sub.replay().header_value())
///     .body(tower_sse::EventStream::new(sub))
///     .unwrap();
/// assert_eq!(response.headers()["sse-replay"], "history-lost");
/// # }
/// ```
pub const REPLAY_HEADER: HeaderName = HeaderName::from_static("sse-replay");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_are_distinct_and_lowercase() {
        let all = [Replay::NotRequested, Replay::Complete, Replay::HistoryLost];
        for (i, a) in all.iter().enumerate() {
            assert_eq!(a.as_str(), a.as_str().to_ascii_lowercase());
            for b in &all[i + 1..] {
                assert_ne!(a.as_str(), b.as_str());
            }
        }
        assert_eq!(REPLAY_HEADER.as_str(), "sse-replay");
    }
}
