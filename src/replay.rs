//! Replay inside [`SseLayer`](crate::SseLayer) for shared streams that are not the hub's.
//!
//! An app that fans out with its own channel (a `tokio::sync::broadcast` of
//! [`EncodedEvent`]s, say) can still let reconnecting clients catch up. The producer records
//! each event once into the route's [`ReplayLog`] *before* sending it
//! (`tx.send(log.record(event))`), and the layer, given the same [`ReplayLogs`], does the rest
//! for requests to that route: with a `Last-Event-ID` it sends every recorded event after that
//! id, then the live stream, skipping live events the replay already sent. The response gets
//! the [`REPLAY_HEADER`](crate::hub::REPLAY_HEADER) (`Sse-Replay: none | complete |
//! history-lost`), as the hub's responses do.
//!
//! Why the producer records, not the layer: the layer only sees one stream per client, so
//! recording there would cost a lock per event per client and would miss every event published
//! while nobody was connected. Recording at the source is once per event and misses nothing.
//!
//! The guarantee: an event is recorded before anyone can receive it, so for a client whose id
//! is still in the log, everything after it is either in the replay snapshot or arrives live
//! after the handler subscribed, and the overlap of the two is removed by id. The log is
//! bounded by count, bytes and age; an id that was evicted (or never recorded) is reported as
//! `history-lost`, then the whole log or nothing is sent, per [`UnknownId`].
//!
//! Logs are keyed by request path: `logs.log("/feed")` is the log for requests to `/feed`.
//!
//! # Example
//!
//! ```
//! use axum::{Router, routing::get};
//! use tokio::sync::broadcast;
//! use tokio_stream::wrappers::BroadcastStream;
//! use tower::ServiceExt;
//! use tower_sse::{Event, EventStream, SseLayer, hub::UnknownId, replay::ReplayLogs, test::EventReader};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let logs = ReplayLogs::new();
//! let log = logs.log("/feed");
//! let (tx, _) = broadcast::channel(16);
//! for n in 1..=3 {
//!     // Record first, then send: the log always has what a client may have seen.
//!     let _ = tx.send(log.record(Event::new().id(n.to_string()).data("x")));
//! }
//!
//! let app = Router::new()
//!     .route("/feed", get({
//!         let tx = tx.clone();
//!         move || {
//!             let live = BroadcastStream::new(tx.subscribe());
//!             async move { EventStream::new(live) }
//!         }
//!     }))
//!     .layer(SseLayer::new().replay(&logs, UnknownId::SendHistory));
//!
//! // A client that saw event 1 reconnects.
//! let request = http::Request::get("/feed")
//!     .header("last-event-id", "1")
//!     .body(axum::body::Body::empty())
//!     .unwrap();
//! let response = app.oneshot(request).await.unwrap();
//! assert_eq!(response.headers()["sse-replay"], "complete");
//!
//! let _ = tx.send(log.record(Event::new().id("4").data("x"))); // live
//! drop(tx); // end the live stream so the example ends
//!
//! let events = EventReader::new(response.into_body()).collect().await.unwrap();
//! let ids: Vec<&str> = events.iter().map(|e| e.id()).collect();
//! assert_eq!(ids, ["2", "3", "4"]);
//! # }
//! ```

use std::{
    collections::{HashMap, VecDeque},
    fmt,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use tokio::time::Instant;

use crate::{
    EncodedEvent,
    hub::{Replay, UnknownId},
};

/// The default bound on events kept per log.
pub const DEFAULT_MAX_EVENTS: usize = 1000;
/// The default bound on bytes kept per log.
pub const DEFAULT_MAX_BYTES: usize = 1 << 20;
/// The default bound on the age of kept events.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Copy)]
struct Limits {
    events: usize,
    bytes: usize,
    age: Duration,
}

/// Replay logs keyed by request path, shared by the producers and [`SseLayer::replay`](crate::SseLayer::replay).
///
/// ```
/// let logs = tower_sse::replay::ReplayLogs::new().max_events(100);
/// let log = logs.log("/feed");
/// assert!(log.is_empty());
/// ```
#[derive(Clone)]
pub struct ReplayLogs {
    logs: Arc<Mutex<HashMap<String, ReplayLog>>>,
    limits: Limits,
}

impl Default for ReplayLogs {
    fn default() -> Self {
        Self::new()
    }
}

impl ReplayLogs {
    /// No logs yet; each new log keeps at most 1000 events, 1 MiB and one hour.
    ///
    /// ```
    /// let _logs = tower_sse::replay::ReplayLogs::new();
    /// ```
    pub fn new() -> Self {
        Self {
            logs: Arc::default(),
            limits: Limits {
                events: DEFAULT_MAX_EVENTS,
                bytes: DEFAULT_MAX_BYTES,
                age: DEFAULT_MAX_AGE,
            },
        }
    }

    /// Keep at most `n` events per log (applies to logs created afterwards).
    ///
    /// ```
    /// let _logs = tower_sse::replay::ReplayLogs::new().max_events(10);
    /// ```
    #[must_use]
    pub fn max_events(mut self, n: usize) -> Self {
        self.limits.events = n;
        self
    }

    /// Keep at most `n` bytes of events per log.
    ///
    /// ```
    /// let _logs = tower_sse::replay::ReplayLogs::new().max_bytes(64 * 1024);
    /// ```
    #[must_use]
    pub fn max_bytes(mut self, n: usize) -> Self {
        self.limits.bytes = n;
        self
    }

    /// Keep events for at most `age`.
    ///
    /// ```
    /// let _logs = tower_sse::replay::ReplayLogs::new().max_age(std::time::Duration::from_secs(60));
    /// ```
    #[must_use]
    pub fn max_age(mut self, age: Duration) -> Self {
        self.limits.age = age;
        self
    }

    /// The log for requests to `path`, created when first asked for.
    ///
    /// ```
    /// let logs = tower_sse::replay::ReplayLogs::new();
    /// logs.log("/a").record(tower_sse::Event::new().id("1").data("x"));
    /// assert_eq!(logs.log("/a").len(), 1);
    /// assert_eq!(logs.log("/b").len(), 0);
    /// ```
    pub fn log(&self, path: &str) -> ReplayLog {
        let mut logs = self.logs.lock().unwrap_or_else(PoisonError::into_inner);
        logs.entry(path.to_owned())
            .or_insert_with(|| ReplayLog::new(self.limits))
            .clone()
    }

    pub(crate) fn get(&self, path: &str) -> Option<ReplayLog> {
        let logs = self.logs.lock().unwrap_or_else(PoisonError::into_inner);
        logs.get(path).cloned()
    }
}

impl fmt::Debug for ReplayLogs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let logs = self.logs.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("ReplayLogs")
            .field("paths", &logs.keys().collect::<Vec<_>>())
            .field("limits", &self.limits)
            .finish()
    }
}

/// One route's bounded log of recent events, keyed by their ids.
///
/// ```
/// use tower_sse::{Event, replay::ReplayLogs};
///
/// let log = ReplayLogs::new().log("/feed");
/// let sent = log.record(Event::new().id("1").data("x")); // send `sent` to your subscribers
/// assert_eq!(sent.id(), Some("1"));
/// log.record(Event::new().data("no id: not kept"));
/// assert_eq!(log.len(), 1);
/// ```
#[derive(Clone)]
pub struct ReplayLog {
    state: Arc<Mutex<LogState>>,
    limits: Limits,
}

#[derive(Default)]
struct LogState {
    entries: VecDeque<(Instant, EncodedEvent)>,
    bytes: usize,
}

impl ReplayLog {
    fn new(limits: Limits) -> Self {
        Self {
            state: Arc::default(),
            limits,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LogState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records `event` (when it has a non-empty id) and gives it back, encoded, to send. Call
    /// it before sending, so no client can receive an event the log does not have yet.
    ///
    /// ```
    /// let log = tower_sse::replay::ReplayLogs::new().log("/");
    /// let event = log.record(tower_sse::Event::new().id("a").data("x"));
    /// assert_eq!(&event.as_bytes()[..], b"id: a\ndata: x\n\n");
    /// ```
    pub fn record(&self, event: impl Into<EncodedEvent>) -> EncodedEvent {
        let event = event.into();
        if event.id().is_some_and(|id| !id.is_empty()) {
            let now = Instant::now();
            let mut state = self.lock();
            state.bytes += event.len();
            state.entries.push_back((now, event.clone()));
            self.evict(&mut state, now);
        }
        event
    }

    /// How many events the log holds.
    ///
    /// ```
    /// assert_eq!(tower_sse::replay::ReplayLogs::new().log("/").len(), 0);
    /// ```
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether the log is empty.
    ///
    /// ```
    /// assert!(tower_sse::replay::ReplayLogs::new().log("/").is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn evict(&self, state: &mut LogState, now: Instant) {
        while let Some((at, front)) = state.entries.front() {
            let over = state.entries.len() > self.limits.events
                || state.bytes > self.limits.bytes
                || now.saturating_duration_since(*at) > self.limits.age;
            if !over {
                break;
            }
            state.bytes -= front.len();
            state.entries.pop_front();
        }
    }

    /// The events after `last_event_id`, or per `unknown` when the log does not have that id.
    pub(crate) fn after(
        &self,
        last_event_id: &str,
        unknown: UnknownId,
    ) -> (Replay, Vec<EncodedEvent>) {
        let mut state = self.lock();
        self.evict(&mut state, Instant::now());
        let found = state
            .entries
            .iter()
            .rposition(|(_, event)| event.id() == Some(last_event_id));
        match (found, unknown) {
            (Some(at), _) => (
                Replay::Complete,
                state
                    .entries
                    .iter()
                    .skip(at + 1)
                    .map(|(_, e)| e.clone())
                    .collect(),
            ),
            (None, UnknownId::LiveOnly) => (Replay::HistoryLost, Vec::new()),
            (None, _) => (
                Replay::HistoryLost,
                state.entries.iter().map(|(_, e)| e.clone()).collect(),
            ),
        }
    }
}

impl fmt::Debug for ReplayLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayLog")
            .field("len", &self.len())
            .field("limits", &self.limits)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Event;

    fn ids(events: &[EncodedEvent]) -> Vec<&str> {
        events.iter().map(|e| e.id().unwrap()).collect()
    }

    #[test]
    fn after_known_unknown_and_bounds() {
        let logs = ReplayLogs::new().max_events(3);
        let log = logs.log("/");
        for n in 1..=5 {
            log.record(Event::new().id(n.to_string()).data("x"));
        }
        assert_eq!(log.len(), 3);
        let (replay, events) = log.after("3", UnknownId::SendHistory);
        assert_eq!((replay, ids(&events)), (Replay::Complete, vec!["4", "5"]));
        let (replay, events) = log.after("5", UnknownId::SendHistory);
        assert_eq!((replay, events.len()), (Replay::Complete, 0));
        // "1" was evicted: reported lost, then everything retained (all newer than it).
        let (replay, events) = log.after("1", UnknownId::SendHistory);
        assert_eq!(
            (replay, ids(&events)),
            (Replay::HistoryLost, vec!["3", "4", "5"])
        );
        let (replay, events) = log.after("garbage", UnknownId::LiveOnly);
        assert_eq!((replay, events.len()), (Replay::HistoryLost, 0));
    }

    #[test]
    fn byte_bound() {
        let log = ReplayLogs::new().max_bytes(40).log("/");
        for n in 0..10 {
            log.record(Event::new().id(n.to_string()).data("0123456789")); // 24 bytes
        }
        assert_eq!(log.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn age_bound() {
        let log = ReplayLogs::new().max_age(Duration::from_secs(10)).log("/");
        log.record(Event::new().id("old").data("x"));
        tokio::time::advance(Duration::from_secs(11)).await;
        log.record(Event::new().id("new").data("x"));
        assert_eq!(log.len(), 1);
        assert_eq!(
            log.after("old", UnknownId::SendHistory).0,
            Replay::HistoryLost
        );
    }
}
