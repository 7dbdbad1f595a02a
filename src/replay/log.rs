//! A bounded log of recent events for a stream that is not the hub's.

use std::{
    fmt,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use tokio::time::Instant;

use super::{
    Replay, UnknownId,
    history::{History, Limits},
    outcome::keep_newest,
    resume::{Handoff, Overlap, Resume},
};
use crate::EncodedEvent;

/// A bounded log of recent events, keyed by their ids, so that reconnecting clients of a
/// shared stream that is not the hub's can catch up. Cheap to clone: clones share the log.
///
/// The producer records each event once, **before** sending it
/// (`tx.send(log.record(event))`); a handler subscribes to its live source first, then calls
/// [`resume`](Self::resume) with the request's `Last-Event-ID`. See the
/// [module docs](super) for the guarantee.
///
/// Bounds: at most [`max_events`](Self::max_events) events (default 1000),
/// [`max_bytes`](Self::max_bytes) encoded bytes (1 MiB) and none older than
/// [`max_age`](Self::max_age) (one hour); events without an id are sent but not kept.
///
/// ```
/// use tower_sse::{Event, replay::ReplayLog};
///
/// let log = ReplayLog::new().max_events(100);
/// let sent = log.record(Event::new().id("1").data("x")); // send `sent` to your subscribers
/// assert_eq!(sent.id(), Some("1"));
/// log.record(Event::new().data("no id: not kept"));
/// assert_eq!(log.len(), 1);
/// ```
#[derive(Clone)]
pub struct ReplayLog {
    state: Arc<Mutex<LogState>>,
}

struct LogState {
    history: History,
    limits: Limits,
    on_unknown_id: UnknownId,
    /// Positions of recorded events.
    recorded: u128,
}

impl Default for ReplayLog {
    fn default() -> Self {
        Self::new()
    }
}

impl ReplayLog {
    /// Default for [`max_events`](Self::max_events): 1000.
    pub const DEFAULT_MAX_EVENTS: usize = Limits::DEFAULT.events;
    /// Default for [`max_bytes`](Self::max_bytes): 1 MiB.
    pub const DEFAULT_MAX_BYTES: usize = Limits::DEFAULT.bytes;
    /// Default for [`max_age`](Self::max_age): one hour.
    pub const DEFAULT_MAX_AGE: Duration = Limits::DEFAULT.age;

    /// An empty log with the default bounds, sending the newest 100 events for an unknown id.
    ///
    /// ```
    /// assert!(tower_sse::replay::ReplayLog::new().is_empty());
    /// ```
    pub fn new() -> Self {
        Self {
            state: Arc::new(Mutex::new(LogState {
                history: History::new(0),
                limits: Limits::DEFAULT,
                on_unknown_id: UnknownId::default(),
                recorded: 0,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, LogState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn with_limits(self, f: impl FnOnce(&mut Limits)) -> Self {
        {
            let mut state = self.lock();
            f(&mut state.limits);
            let limits = state.limits;
            state.history.evict(&limits, Instant::now());
        }
        self
    }

    /// Keep at most `n` events.
    ///
    /// ```
    /// let _log = tower_sse::replay::ReplayLog::new().max_events(10);
    /// ```
    #[must_use]
    pub fn max_events(self, n: usize) -> Self {
        self.with_limits(|limits| limits.events = n)
    }

    /// Keep at most `n` bytes of encoded events.
    ///
    /// ```
    /// let _log = tower_sse::replay::ReplayLog::new().max_bytes(64 * 1024);
    /// ```
    #[must_use]
    pub fn max_bytes(self, n: usize) -> Self {
        self.with_limits(|limits| limits.bytes = n)
    }

    /// Keep events for at most `age`.
    ///
    /// ```
    /// let _log = tower_sse::replay::ReplayLog::new().max_age(std::time::Duration::from_secs(60));
    /// ```
    #[must_use]
    pub fn max_age(self, age: Duration) -> Self {
        self.with_limits(|limits| limits.age = age)
    }

    /// What [`resume`](Self::resume) sends for an id the log does not have (default
    /// [`UnknownId::SendRecent`]`(100)`).
    ///
    /// ```
    /// use tower_sse::replay::{ReplayLog, UnknownId};
    ///
    /// let _log = ReplayLog::new().on_unknown_id(UnknownId::LiveOnly);
    /// ```
    #[must_use]
    pub fn on_unknown_id(self, on_unknown_id: UnknownId) -> Self {
        self.lock().on_unknown_id = on_unknown_id;
        self
    }

    /// Records `event` (when it has a non-empty id) and gives it back, encoded, to send. Call
    /// it before sending, so no client can receive an event the log does not have yet.
    ///
    /// ```
    /// let log = tower_sse::replay::ReplayLog::new();
    /// let event = log.record(tower_sse::Event::new().id("a").data("x"));
    /// assert_eq!(&event.as_bytes()[..], b"id: a\ndata: x\n\n");
    /// ```
    pub fn record(&self, event: impl Into<EncodedEvent>) -> EncodedEvent {
        let event = event.into();
        if event.id().is_some_and(|id| !id.is_empty()) {
            let mut state = self.lock();
            let (pos, limits) = (state.recorded, state.limits);
            state.recorded += 1;
            state.history.push(pos, &event, &limits, Instant::now());
        }
        event
    }

    /// How many events the log holds.
    ///
    /// ```
    /// assert_eq!(tower_sse::replay::ReplayLog::new().len(), 0);
    /// ```
    pub fn len(&self) -> usize {
        self.lock().history.len()
    }

    /// Whether the log is empty.
    ///
    /// ```
    /// assert!(tower_sse::replay::ReplayLog::new().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Resumes a client: the recorded events after `last_event_id`, then `live`, with the live
    /// events that the replay already sent dropped by id. Subscribe to `live` **before**
    /// calling this, so that every event recorded after the client's id is in the snapshot
    /// taken here or still to come on `live`.
    ///
    /// `None` or an empty id: live events only ([`Replay::NotRequested`]). An id the log does
    /// not have: [`Replay::HistoryLost`], then the newest events of the log or only live events, per
    /// [`on_unknown_id`](Self::on_unknown_id).
    ///
    /// ```
    /// use futures_util::StreamExt;
    /// use tower_sse::{Event, replay::{Replay, ReplayLog}};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let log = ReplayLog::new();
    /// let (tx, rx) = tokio::sync::broadcast::channel(16);
    /// for n in 1..=3 {
    ///     let _ = tx.send(log.record(Event::new().id(n.to_string()).data("x")));
    /// }
    /// // A client that saw event 1 comes back: its live receiver was made after event 2.
    /// let live = tokio_stream::wrappers::BroadcastStream::new(tx.subscribe());
    /// let _ = tx.send(log.record(Event::new().id("4").data("x")));
    /// let resumed = log.resume(Some("1"), live);
    /// assert_eq!(resumed.replay(), Replay::Complete);
    /// drop((tx, rx));
    /// let ids: Vec<String> = resumed
    ///     .map(|event| event.unwrap().id().unwrap().to_owned())
    ///     .collect()
    ///     .await;
    /// assert_eq!(ids, ["2", "3", "4"]); // "4" was in the snapshot and live: sent once
    /// # }
    /// ```
    pub fn resume<S>(&self, last_event_id: Option<&str>, live: S) -> Resume<S> {
        let Some(id) = last_event_id.filter(|id| !id.is_empty()) else {
            return Resume::new(
                Handoff::new(Vec::new(), Overlap::None),
                Replay::NotRequested,
                live,
            );
        };
        let mut overlap = None;
        let (replay, backlog) = {
            let mut state = self.lock();
            let limits = state.limits;
            state.history.evict(&limits, Instant::now());
            match state.history.after_id(id) {
                Some(after) => (Replay::Complete, after.cloned().collect()),
                None => match state.on_unknown_id.newest() {
                    0 => (Replay::HistoryLost, Vec::new()),
                    newest => {
                        let mut backlog: Vec<_> = state.history.all().cloned().collect();
                        // The live stream may start before the newest `n`: every event of
                        // the log is in the overlap, not only the ones sent.
                        overlap = Some(Overlap::ids(&backlog));
                        keep_newest(&mut backlog, newest);
                        (Replay::HistoryLost, backlog)
                    }
                },
            }
        };
        let overlap = overlap.unwrap_or_else(|| Overlap::ids(&backlog));
        Resume::new(Handoff::new(backlog, overlap), replay, live)
    }
}

impl fmt::Debug for ReplayLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("ReplayLog")
            .field("len", &state.history.len())
            .field("limits", &state.limits)
            .field("on_unknown_id", &state.on_unknown_id)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Event;

    fn backlog_ids(log: &ReplayLog, id: &str) -> (Replay, usize) {
        let resumed = log.resume(Some(id), futures_util::stream::empty::<Event>());
        (resumed.replay(), resumed.backlog_len())
    }

    /// With `SendRecent`, live events older than the newest `n` (the live stream was made
    /// before they were recorded, as the docs ask) are dropped too, not sent again after the
    /// replay (found in review: 250 events, 51..=150 then 1..=150).
    #[tokio::test]
    async fn send_recent_drops_older_live_events_too() {
        use futures_util::StreamExt as _;
        let log = ReplayLog::new();
        let live: Vec<_> = (1..=150)
            .map(|n| log.record(Event::new().id(n.to_string()).data("x")))
            .collect();
        let resumed = log.resume(Some("garbage"), futures_util::stream::iter(live));
        let ids: Vec<u32> = resumed
            .map(|event| event.unwrap().id().unwrap().parse::<u32>().unwrap())
            .collect()
            .await;
        assert_eq!(ids, (51..=150).collect::<Vec<u32>>());
    }

    #[test]
    fn known_unknown_and_bounds() {
        let log = ReplayLog::new().max_events(3);
        for n in 1..=5 {
            log.record(Event::new().id(n.to_string()).data("x"));
        }
        assert_eq!(log.len(), 3);
        assert_eq!(backlog_ids(&log, "3"), (Replay::Complete, 2));
        assert_eq!(backlog_ids(&log, "5"), (Replay::Complete, 0));
        // "1" was evicted: reported lost, then everything retained (all newer than it).
        assert_eq!(backlog_ids(&log, "1"), (Replay::HistoryLost, 3));
        let live_only = log.clone().on_unknown_id(UnknownId::LiveOnly);
        assert_eq!(backlog_ids(&live_only, "garbage"), (Replay::HistoryLost, 0));
        // The default is bounded: a made-up id gets the newest 100, not the whole log.
        let log = ReplayLog::new();
        for n in 1..=150 {
            log.record(Event::new().id(n.to_string()).data("x"));
        }
        assert_eq!(backlog_ids(&log, "garbage"), (Replay::HistoryLost, 100));
        let all = log.clone().on_unknown_id(UnknownId::SendHistory);
        assert_eq!(backlog_ids(&all, "garbage"), (Replay::HistoryLost, 150));
        let three = log.clone().on_unknown_id(UnknownId::SendRecent(3));
        assert_eq!(backlog_ids(&three, "garbage"), (Replay::HistoryLost, 3));
    }

    #[test]
    fn bounds_set_later_apply_to_every_clone() {
        let log = ReplayLog::new();
        let producer = log.clone();
        for n in 0..10 {
            producer.record(Event::new().id(n.to_string()).data("x"));
        }
        let _ = log.max_events(2);
        assert_eq!(producer.len(), 2);
    }
}
