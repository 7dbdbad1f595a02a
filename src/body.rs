//! [`SseBody`]: an `http_body::Body` over a stream of events.
//!
//! The body writes each event's shared bytes as they come. When several events are ready at
//! once they go out as one frame (up to a size cap), so a burst costs one write instead of many.
//! While the stream is idle it sends a keep-alive comment after each interval; every frame
//! resets the interval. When a [`Shutdown`] is triggered it sends the final
//! event, if one is configured, and ends. An error from the stream ends the body cleanly (the
//! client sees a normal end and reconnects) and is logged.
//!
//! The body needs a tokio runtime with the time driver when it is polled (for the keep-alive).
//!
//! # Example
//!
//! ```
//! use http_body_util::BodyExt;
//! use tower_sse::{Event, SseBody};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let events = futures_util::stream::iter([Event::new().data("a"), Event::new().data("b")]);
//! let bytes = SseBody::new(events).collect().await.unwrap().to_bytes();
//! assert_eq!(&bytes[..], b"data: a\n\ndata: b\n\n");
//! # }
//! ```

use std::{
    collections::{HashSet, VecDeque},
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use futures_core::Stream;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Empty;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep};
use tokio_util::sync::WaitForCancellationFutureOwned;

use crate::{
    BoxError, EncodedEvent, Shutdown, extension::DisconnectGuard, hub::UnknownId,
    replay::ReplayLogs, stream::SseItem,
};

/// The default keep-alive interval.
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The default cap on one frame of coalesced events, in bytes.
pub const DEFAULT_MAX_BATCH: usize = 32 * 1024;

/// Settings shared by every body a layer makes.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) keep_alive: Option<Duration>,
    pub(crate) keep_alive_comment: Bytes,
    pub(crate) first: Option<Bytes>,
    pub(crate) shutdown: Option<Shutdown>,
    pub(crate) shutdown_event: Option<Bytes>,
    pub(crate) shutdown_grace: Duration,
    pub(crate) max_batch: usize,
    pub(crate) replay: Option<(ReplayLogs, UnknownId)>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            keep_alive: Some(DEFAULT_KEEP_ALIVE),
            keep_alive_comment: Bytes::from_static(b":\n\n"),
            first: None,
            shutdown: None,
            shutdown_event: None,
            shutdown_grace: Duration::ZERO,
            max_batch: DEFAULT_MAX_BATCH,
            replay: None,
        }
    }
}

pin_project! {
    /// The body of an SSE response, or of a response passed through untouched.
    ///
    /// `S` is the event stream; `P` is the body type of responses that are not event streams.
    pub struct SseBody<S, P = Empty<Bytes>> {
        #[pin]
        kind: Kind<S, P>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<S, P> {
        Events { #[pin] events: Events<S> },
        Passthrough { #[pin] body: P },
    }
}

pin_project! {
    struct Events<S> {
        #[pin]
        stream: S,
        #[pin]
        keep_alive: Option<Sleep>,
        #[pin]
        shutdown: Option<WaitForCancellationFutureOwned>,
        #[pin]
        grace: Option<Sleep>,
        config: Arc<Config>,
        started: bool,
        done: bool,
        guard: Option<DisconnectGuard>,
        replay: Option<Box<Replaying>>,
    }
}

/// A replay in progress: the backlog still to send, and the ids it held, to drop the live
/// events that duplicate it (only the overlap at the start of the live stream).
struct Replaying {
    backlog: VecDeque<EncodedEvent>,
    sent: HashSet<String>,
}

impl<S> SseBody<S> {
    /// A body over `stream` with the default settings: a keep-alive comment after 15 s idle, no
    /// shutdown handle. Use [`SseLayer`](crate::SseLayer) to configure them.
    ///
    /// ```
    /// let body = tower_sse::SseBody::new(futures_util::stream::empty::<tower_sse::Event>());
    /// # let _ = body;
    /// ```
    pub fn new(stream: S) -> Self {
        Self::events(stream, Arc::default(), None, Vec::new())
    }
}

impl<S, P> SseBody<S, P> {
    pub(crate) fn events(
        stream: S,
        config: Arc<Config>,
        guard: Option<DisconnectGuard>,
        backlog: Vec<EncodedEvent>,
    ) -> Self {
        let replay = (!backlog.is_empty()).then(|| {
            Box::new(Replaying {
                sent: backlog
                    .iter()
                    .filter_map(|e| e.id().map(str::to_owned))
                    .collect(),
                backlog: backlog.into(),
            })
        });
        Self {
            kind: Kind::Events {
                events: Events {
                    stream,
                    keep_alive: None,
                    shutdown: None,
                    grace: None,
                    config,
                    started: false,
                    done: false,
                    guard,
                    replay,
                },
            },
        }
    }

    pub(crate) fn passthrough(body: P) -> Self {
        Self {
            kind: Kind::Passthrough { body },
        }
    }

    /// Whether this body serves an event stream (rather than passing a body through).
    ///
    /// ```
    /// let body = tower_sse::SseBody::new(futures_util::stream::empty::<tower_sse::Event>());
    /// assert!(body.is_event_stream());
    /// ```
    pub fn is_event_stream(&self) -> bool {
        matches!(self.kind, Kind::Events { .. })
    }
}

impl<S, P: Default> Default for SseBody<S, P> {
    /// An empty pass-through body (what CORS preflight responses use).
    fn default() -> Self {
        Self::passthrough(P::default())
    }
}

impl<S, P> fmt::Debug for SseBody<S, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SseBody")
            .field("event_stream", &self.is_event_stream())
            .finish_non_exhaustive()
    }
}

type Polled = Poll<Option<Result<Frame<Bytes>, BoxError>>>;

impl<S, P> Body for SseBody<S, P>
where
    S: Stream<Item: SseItem>,
    P: Body<Data = Bytes, Error: Into<BoxError>>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Polled {
        match self.project().kind.project() {
            KindProj::Events { events } => events.poll_events(cx),
            KindProj::Passthrough { body } => body.poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Events { events } => events.done,
            Kind::Passthrough { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Events { .. } => SizeHint::default(),
            Kind::Passthrough { body } => body.size_hint(),
        }
    }
}

impl<S: Stream<Item: SseItem>> Events<S> {
    fn poll_events(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Polled {
        let mut this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        let config: &Config = this.config;
        if !*this.started {
            *this.started = true;
            if let Some(shutdown) = &config.shutdown {
                this.shutdown.set(Some(shutdown.wait()));
            }
            if let Some(interval) = config.keep_alive {
                this.keep_alive.set(Some(sleep(interval)));
            }
            if let Some(first) = &config.first {
                return Poll::Ready(Some(Ok(Frame::data(first.clone()))));
            }
        }

        // Shutdown: end now, or keep serving until the grace period is over.
        if let Some(shutdown) = this.shutdown.as_mut().as_pin_mut() {
            if shutdown.poll(cx).is_ready() {
                this.shutdown.set(None);
                if config.shutdown_grace.is_zero() {
                    return finish_shutdown(this.done, this.guard, config);
                }
                this.grace.set(Some(sleep(config.shutdown_grace)));
            }
        }
        if let Some(grace) = this.grace.as_mut().as_pin_mut() {
            if grace.poll(cx).is_ready() {
                return finish_shutdown(this.done, this.guard, config);
            }
        }

        // Events: take everything that is ready, up to the batch cap.
        let mut first: Option<Bytes> = None;
        let mut batch: Option<BytesMut> = None;
        let mut size = 0;
        let mut ended = false;
        loop {
            let replayed = this.replay.as_mut().and_then(|r| r.backlog.pop_front());
            let live = replayed.is_none();
            let polled = match replayed {
                Some(event) => Poll::Ready(Some(Ok(event))),
                None => this
                    .stream
                    .as_mut()
                    .poll_next(cx)
                    .map(|item| item.map(SseItem::into_event)),
            };
            match polled {
                Poll::Ready(Some(item)) => match item {
                    Ok(event) => {
                        if let (true, Some(replay)) = (live, this.replay.as_mut()) {
                            // Live now: skip what the replay already sent; the first new id ends
                            // the overlap (events without an id were never in the replay).
                            match event.id() {
                                Some(id) if replay.sent.contains(id) => continue,
                                Some(_) => *this.replay = None,
                                None => {}
                            }
                        }
                        let bytes = event.into_bytes();
                        size += bytes.len();
                        if let Some(batch) = &mut batch {
                            batch.extend_from_slice(&bytes);
                        } else if let Some(prev) = first.take() {
                            let mut buf =
                                BytesMut::with_capacity(config.max_batch.max(size).min(size * 4));
                            buf.extend_from_slice(&prev);
                            buf.extend_from_slice(&bytes);
                            batch = Some(buf);
                        } else {
                            first = Some(bytes);
                        }
                        if size >= config.max_batch {
                            break;
                        }
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "event stream failed; ending the response");
                        ended = true;
                        break;
                    }
                },
                Poll::Ready(None) => {
                    ended = true;
                    break;
                }
                Poll::Pending => break,
            }
        }
        if ended {
            *this.done = true;
            if let Some(guard) = this.guard.take() {
                guard.finish();
            }
        }
        if let Some(bytes) = batch.map(BytesMut::freeze).or(first) {
            if let (Some(keep_alive), Some(interval)) =
                (this.keep_alive.as_mut().as_pin_mut(), config.keep_alive)
            {
                keep_alive.reset(Instant::now() + interval);
            }
            return Poll::Ready(Some(Ok(Frame::data(bytes))));
        }
        if ended {
            return Poll::Ready(None);
        }

        if let (Some(mut keep_alive), Some(interval)) =
            (this.keep_alive.as_mut().as_pin_mut(), config.keep_alive)
        {
            if keep_alive.as_mut().poll(cx).is_ready() {
                keep_alive.reset(Instant::now() + interval);
                return Poll::Ready(Some(Ok(Frame::data(config.keep_alive_comment.clone()))));
            }
        }
        Poll::Pending
    }
}

fn finish_shutdown(
    done: &mut bool,
    guard: &mut Option<DisconnectGuard>,
    config: &Config,
) -> Polled {
    *done = true;
    if let Some(guard) = guard.take() {
        guard.finish();
    }
    Poll::Ready(
        config
            .shutdown_event
            .clone()
            .map(|bytes| Ok(Frame::data(bytes))),
    )
}
