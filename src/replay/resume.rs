//! Backlog first, then live events, with the overlap between the two dropped: the one hand-off
//! that the hub's subscriptions and [`ReplayLog::resume`](super::ReplayLog::resume) share.

use std::{
    collections::HashSet,
    fmt,
    pin::Pin,
    task::{Context, Poll},
};

use futures_core::{FusedStream, Stream};
use pin_project_lite::pin_project;

use super::Replay;
use crate::{BoxError, EncodedEvent, Event, SseItem};

/// The replayed events still to send, and how to recognise the live events that repeat them.
pub(crate) struct Handoff {
    backlog: std::vec::IntoIter<EncodedEvent>,
    /// The backlog starts with a history-lost notice, not a replayed event.
    notice: bool,
    overlap: Overlap,
}

/// Which live events the backlog already held. Only a prefix of the live stream can repeat the
/// backlog (the backlog was taken after the live cursor was registered), so the overlap ends at
/// the first live event that is new.
pub(crate) enum Overlap {
    /// None: the backlog and the live cursor were taken atomically.
    None,
    /// Live events whose id one of these is; the first one with another id ends the overlap.
    /// Boxed: every byte of a subscription is per connection, and most have no overlap.
    #[allow(clippy::box_collection)]
    Ids(Box<HashSet<Box<str>>>),
    /// Live events at or before this position; an event without a position (`0`: not from
    /// the ordered stream) is delivered and the overlap goes on.
    Through(u128),
}

impl Overlap {
    /// The ids of `backlog`, to drop them from the start of the live stream.
    pub(crate) fn ids(backlog: &[EncodedEvent]) -> Self {
        let ids: HashSet<Box<str>> = backlog
            .iter()
            .filter_map(|e| e.id())
            .map(Into::into)
            .collect();
        if ids.is_empty() {
            Self::None
        } else {
            Self::Ids(Box::new(ids))
        }
    }
}

impl Handoff {
    pub(crate) fn new(backlog: Vec<EncodedEvent>, overlap: Overlap) -> Self {
        Self {
            backlog: backlog.into_iter(),
            notice: false,
            overlap,
        }
    }

    /// Which live events to drop from now on.
    #[cfg_attr(not(feature = "_broker"), allow(dead_code))]
    pub(crate) fn set_overlap(&mut self, overlap: Overlap) {
        self.overlap = overlap;
    }

    /// The next replayed event (or the notice), if any is left.
    #[inline]
    pub(crate) fn next(&mut self) -> Option<EncodedEvent> {
        let event = self.backlog.next()?;
        self.notice = false;
        Some(event)
    }

    /// How many replayed events are still to come (the notice does not count).
    pub(crate) fn backlog_len(&self) -> usize {
        self.backlog.len() - usize::from(self.notice)
    }

    /// Sends `event` before the backlog (once).
    pub(crate) fn notify(&mut self, event: Event) {
        if self.notice {
            return;
        }
        let backlog = std::mem::take(&mut self.backlog);
        let mut with_notice = Vec::with_capacity(backlog.len() + 1);
        with_notice.push(event.encode());
        with_notice.extend(backlog);
        self.backlog = with_notice.into_iter();
        self.notice = true;
    }

    /// Whether the live `event` (at position `pos`, `0` when it has none) is new, to deliver,
    /// rather than one the backlog had.
    #[inline]
    pub(crate) fn admit(&mut self, event: &EncodedEvent, pos: u128) -> bool {
        let repeated = match &self.overlap {
            Overlap::None => return true,
            Overlap::Ids(ids) => match event.id() {
                Some(id) => ids.contains(id),
                // Events without an id were never in a backlog.
                None => return true,
            },
            Overlap::Through(_) if pos == 0 => return true,
            Overlap::Through(through) => pos <= *through,
        };
        if !repeated {
            self.overlap = Overlap::None;
        }
        !repeated
    }

    /// Whether nothing is left to do: the backlog is out and no live event is to be dropped.
    pub(crate) fn is_done(&self) -> bool {
        self.backlog.len() == 0 && matches!(self.overlap, Overlap::None)
    }
}

pin_project! {
    /// A resumed stream: the events a client missed, then the live stream, each event once.
    /// Made by [`ReplayLog::resume`](super::ReplayLog::resume).
    ///
    /// Its items are `Result<EncodedEvent, BoxError>` (a live stream's error ends the response).
    /// With the `axum` feature it is an axum response with the [`REPLAY_HEADER`](super::REPLAY_HEADER)
    /// set; with bare tower, put it in an [`EventStream`](crate::EventStream) and set the
    /// header from [`replay`](Self::replay).
    pub struct Resume<S> {
        handoff: Handoff,
        replay: Replay,
        #[pin]
        live: S,
        done: bool,
    }
}

impl<S> Resume<S> {
    pub(crate) fn new(handoff: Handoff, replay: Replay, live: S) -> Self {
        Self {
            handoff,
            replay,
            live,
            done: false,
        }
    }

    /// How the `Last-Event-ID` was honoured.
    ///
    /// ```
    /// use tower_sse::replay::{Replay, ReplayLog};
    ///
    /// let log = ReplayLog::new();
    /// let resumed = log.resume(None, futures_util::stream::empty::<tower_sse::Event>());
    /// assert_eq!(resumed.replay(), Replay::NotRequested);
    /// ```
    pub fn replay(&self) -> Replay {
        self.replay
    }

    /// How many replayed events are still to come before the live ones.
    ///
    /// ```
    /// use tower_sse::{Event, replay::ReplayLog};
    ///
    /// let log = ReplayLog::new();
    /// log.record(Event::new().id("1").data("x"));
    /// log.record(Event::new().id("2").data("x"));
    /// let resumed = log.resume(Some("1"), futures_util::stream::empty::<Event>());
    /// assert_eq!(resumed.backlog_len(), 1);
    /// ```
    pub fn backlog_len(&self) -> usize {
        self.handoff.backlog_len()
    }

    /// Sends `event` first when [`replay`](Self::replay) is [`Replay::HistoryLost`]; does
    /// nothing otherwise. Give it an `event:` type and no id (see
    /// [`REPLAY_HEADER`](super::REPLAY_HEADER)).
    ///
    /// ```
    /// use futures_util::StreamExt;
    /// use tower_sse::{Event, replay::ReplayLog};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let log = ReplayLog::new();
    /// let mut resumed = log
    ///     .resume(Some("gone"), futures_util::stream::empty::<Event>())
    ///     .notify_history_lost(Event::new().event("history-lost").data("reload"));
    /// let first = resumed.next().await.unwrap().unwrap();
    /// assert_eq!(&first.as_bytes()[..], b"event: history-lost\ndata: reload\n\n");
    /// # }
    /// ```
    #[must_use]
    pub fn notify_history_lost(mut self, event: Event) -> Self {
        if self.replay.is_lost() {
            self.handoff.notify(event);
        }
        self
    }
}

impl<S> Stream for Resume<S>
where
    S: Stream,
    S::Item: SseItem,
{
    type Item = Result<EncodedEvent, BoxError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        if let Some(event) = this.handoff.next() {
            return Poll::Ready(Some(Ok(event)));
        }
        loop {
            let Some(item) = std::task::ready!(this.live.as_mut().poll_next(cx)) else {
                *this.done = true;
                return Poll::Ready(None);
            };
            match item.into_event() {
                Ok(event) if !this.handoff.admit(&event, 0) => {}
                other => return Poll::Ready(Some(other)),
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.handoff.backlog.len(), None)
    }
}

impl<S> FusedStream for Resume<S>
where
    S: Stream,
    S::Item: SseItem,
{
    fn is_terminated(&self) -> bool {
        self.done
    }
}

impl<S> fmt::Debug for Resume<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resume")
            .field("replay", &self.replay)
            .field("backlog", &self.backlog_len())
            .field("ended", &self.done)
            .finish_non_exhaustive()
    }
}

/// Serves the resumed stream as an event stream with the
/// [`REPLAY_HEADER`](super::REPLAY_HEADER) set.
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
impl<S> axum_core::response::IntoResponse for Resume<S>
where
    S: Stream + Send + 'static,
    S::Item: SseItem,
{
    fn into_response(self) -> axum_core::response::Response {
        let replay = self.replay;
        let mut response = crate::EventStream::new(self).into_response();
        response
            .headers_mut()
            .insert(super::REPLAY_HEADER, replay.header_value());
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: &str) -> EncodedEvent {
        Event::new().id(id).data("x").encode()
    }

    #[test]
    fn overlap_by_ids_ends_at_the_first_new_id() {
        let backlog = vec![ev("a"), ev("b")];
        let mut handoff = Handoff::new(backlog.clone(), Overlap::ids(&backlog));
        assert_eq!(handoff.backlog_len(), 2);
        assert!(handoff.next().is_some() && handoff.next().is_some() && handoff.next().is_none());
        assert!(!handoff.admit(&ev("a"), 0));
        assert!(handoff.admit(&Event::new().data("no id").encode(), 0));
        assert!(!handoff.admit(&ev("b"), 0));
        assert!(handoff.admit(&ev("c"), 0));
        // Over: an id that the backlog had is now a new event.
        assert!(handoff.admit(&ev("a"), 0));
    }

    #[test]
    fn overlap_through_a_position() {
        let mut handoff = Handoff::new(vec![], Overlap::Through(5));
        let event = ev("x");
        assert!(!handoff.admit(&event, 4));
        assert!(handoff.admit(&event, 0)); // not ordered: delivered, the overlap goes on
        assert!(!handoff.admit(&event, 5));
        assert!(handoff.admit(&event, 6));
        assert!(handoff.admit(&event, 3));
    }

    #[test]
    fn the_notice_comes_first_once_and_does_not_count() {
        let mut handoff = Handoff::new(vec![ev("a")], Overlap::None);
        handoff.notify(Event::new().event("lost"));
        handoff.notify(Event::new().event("twice"));
        assert_eq!(handoff.backlog_len(), 1);
        assert_eq!(&handoff.next().unwrap().as_bytes()[..], b"event: lost\n\n");
        assert_eq!(handoff.backlog_len(), 1);
        assert_eq!(handoff.next().unwrap().id(), Some("a"));
        assert_eq!(handoff.backlog_len(), 0);
    }
}
