//! [`SseBody`]: an `http_body::Body` over a stream of events.
//!
//! The body writes each event's shared bytes as they come. When several events are ready at
//! once they go out as one frame (up to a size cap), so a burst costs one write instead of many.
//! With a minimum write interval ([`SseLayer::min_write_interval`](crate::SseLayer::min_write_interval))
//! an event that comes too soon after the last write is held, and the events that come
//! meanwhile join it.
//! While the stream is idle it sends a keep-alive comment after each interval; every frame
//! resets the interval. When a [`Shutdown`] is triggered it sends the final
//! event, if one is configured, and ends. An error from the stream ends the body cleanly (the
//! client sees a normal end and reconnects) and is logged.
//!
//! When the task polling the body is watched for stalls (HTTP/2 streams under
//! [`serve`](crate::serve) or a [`StallExecutor`](crate::StallExecutor)), the body tells the
//! watch when it hands out a frame and when it is polled again; a frame not taken within the
//! [stall timeout](crate::SseLayer::stall_timeout) gets the stream reset. (hyper does not poll
//! a body while it waits for flow-control credit, so the body cannot time this out by itself.)
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
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, Waker},
    time::Duration,
};

use bytes::Bytes;
use futures_core::Stream;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Empty;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep};
use tokio_util::sync::WaitForCancellationFutureOwned;

use crate::{
    BoxError, Shutdown,
    extension::DisconnectGuard,
    layer::{
        CloseReason,
        hooks::{Hooks, Lifecycle},
        limit::{Limits, Permit},
    },
    stall::Watch,
    stream::SseItem,
    time::later,
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
    /// Zero: write each event as soon as it is ready.
    pub(crate) min_write_interval: Duration,
    /// How long a frame may wait for the connection to take it (HTTP/2 flow control) before
    /// the stream is reset, where the task is watched (`crate::stall`); `None`: never.
    pub(crate) stall_timeout: Option<Duration>,
    pub(crate) hooks: Hooks,
    /// Caps on open streams (`SseLayer::max_streams`), `None`: no cap.
    pub(crate) limits: Option<Limits>,
    /// The `route` label of this layer's metrics (`SseLayer::metrics_route`).
    pub(crate) metrics_route: crate::metrics::Route,
    /// Per-event compression (`SseLayer::compression`; nothing without the feature).
    pub(crate) compression: crate::compress::Setting,
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
            min_write_interval: Duration::ZERO,
            stall_timeout: Some(crate::SseLayer::DEFAULT_STALL_TIMEOUT),
            hooks: Hooks::default(),
            limits: None,
            metrics_route: None,
            compression: crate::compress::OFF,
        }
    }
}

pin_project! {
    /// The body of an SSE response, or of a response passed through untouched.
    ///
    /// `S` is the event stream; `P` is the body type of responses that are not event streams.
    //
    // Aligned to a cache line: a body is boxed (axum's `Body`), and its hot fields (the tag,
    // then `Events`' first ones) then take two lines, not three at an allocator's 16-byte
    // alignment (`BENCHMARKS.md`, session 12).
    #[repr(align(64))]
    pub struct SseBody<S, P = Empty<Bytes>> {
        #[pin]
        kind: Kind<S, P>,
    }
}

pin_project! {
    // `repr(u8)`: the tag first, then the variant's fields, so an event stream's hot fields
    // (`Events`, `repr(C)`) start right after it, in the body's first cache line. Left to
    // the compiler, the tag went into a niche past them, a third line read on every poll
    // (`BENCHMARKS.md`, session 12).
    #[project = KindProj]
    #[repr(u8)]
    enum Kind<S, P> {
        Events { #[pin] events: Events<S> },
        Passthrough { #[pin] body: P },
        // The short text of a refusal (`429`), sent once.
        Refused { message: Option<Bytes> },
    }
}

pin_project! {
    // Polled once or twice per event, with every connection's copy cold by the time its next
    // event comes: the fields read on every poll come first and fill two cache lines with
    // the enum's tag (`repr(C)` keeps that order; the frame's metrics handles, `open`, end
    // them); what most streams never set is behind one pointer, and the keep-alive timer
    // (112 bytes, of which a poll outside a lean connection's turn reads one word, and one
    // in a turn none: `Armed`) is boxed (`BENCHMARKS.md`, sessions 10, 12 and 13).
    #[repr(C)]
    struct Events<S> {
        // First, so it is dropped first (the subscription is given back before the guard,
        // permit and hooks below); through axum a handler's stream is boxed, two words here.
        #[pin]
        stream: S,
        config: Arc<Config>,
        // Fires when the stream may have been idle for the keep-alive interval. Frames do not
        // move it (a timer update per event is costly); they only note the time, and when it
        // fires early it is moved to `last_frame + interval`.
        keep_alive: Option<Pin<Box<Sleep>>>,
        // Whom the keep-alive timer wakes: registered by its last poll, which found it not
        // elapsed. While it has not fired, polling it again for the same waker would only
        // register it again (a lock-free but costly check per event), so it is not polled.
        keep_alive_armed: Armed,
        // The lean connection's poll (`crate::turn`) in which the stream last answered
        // `Pending` to that connection's own waker: asked again within that same poll (right
        // after a frame) with that waker, it is not polled. `0`: none (or polled since with
        // another waker).
        pending_turn: u64,
        // Shutdown, grace, held event, write-interval timer, stall watch: `None` until one is
        // set, so a poll checks one pointer for all of them.
        rare: Option<Box<Rare>>,
        // The response's compressor, when one was negotiated (feature `compression`).
        compress: crate::compress::Slot,
        started: bool,
        done: bool,
        // The last frame was cut at `max_batch`: more is ready, send it without a delay.
        draining: bool,
        last_frame: Instant,
        // Counts the body in `tower_sse_connections` (feature `metrics`) while it lives.
        open: crate::metrics::Open,
        guard: Option<DisconnectGuard>,
        // Counts the stream against the layer's caps while the body lives. Declared before
        // `life`, so its slot is free by the time `on_close` runs.
        _permit: Option<Permit>,
        // Hooks and the `tracing` span, when anything listens.
        life: Option<Box<Lifecycle>>,
    }
}

/// Whom an event stream's keep-alive timer will wake (see [`Events`]). Two words, like the
/// `Option<Waker>` it replaced: `Stamp(0)` is the "nobody" that `None` was (one more variant
/// would take a third word, and push the frame's metrics handles out of the body's first two
/// cache lines).
enum Armed {
    /// This waker (outside a lean connection's turn).
    Task(Waker),
    /// The timer waker of the lean connection whose timer stamp (`crate::turn::timer_stamp`)
    /// was this when it registered: while a turn reads the same stamp, the timer has not
    /// fired, and the body need not read it (a cache line of its own per event). Stamps are
    /// unique across connections, so no other connection's turn reads it. `0`: nobody (it
    /// fired, was moved, or was never polled).
    Stamp(u64),
}

impl Armed {
    const NOBODY: Self = Self::Stamp(0);
}

/// What an event stream's body rarely has (see [`Events`]).
#[derive(Default)]
struct Rare {
    // Boxed: these futures are not `Unpin`, and `Rare` is not pinned.
    shutdown: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    grace: Option<Pin<Box<Sleep>>>,
    // With a minimum write interval: the event held until `delay` fires.
    held: Option<Bytes>,
    delay: Option<Pin<Box<Sleep>>>,
    // When the task polling the body is watched for stalls: told of every frame handed
    // out and of every poll after it (see `crate::stall`).
    stall: Option<Arc<Watch>>,
}

/// The rare part, made when something in it is first set.
fn rare(rare: &mut Option<Box<Rare>>) -> &mut Rare {
    rare.get_or_insert_with(Box::default)
}

/// The stall watch, if the task polling the body is watched.
fn stall(rare: &Option<Box<Rare>>) -> Option<&Arc<Watch>> {
    rare.as_ref().and_then(|rare| rare.stall.as_ref())
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
        Self::events(
            stream,
            Arc::default(),
            None,
            None,
            None,
            crate::compress::Slot::none(),
        )
    }
}

impl<S, P> SseBody<S, P> {
    pub(crate) fn events(
        stream: S,
        config: Arc<Config>,
        guard: Option<DisconnectGuard>,
        life: Option<Box<Lifecycle>>,
        permit: Option<Permit>,
        compress: crate::compress::Slot,
    ) -> Self {
        let open = crate::metrics::Open::new(config.metrics_route);
        Self {
            kind: Kind::Events {
                events: Events {
                    stream,
                    config,
                    keep_alive: None,
                    keep_alive_armed: Armed::NOBODY,
                    pending_turn: 0,
                    last_frame: Instant::now(),
                    rare: None,
                    compress,
                    started: false,
                    done: false,
                    draining: false,
                    open,
                    guard,
                    _permit: permit,
                    life,
                },
            },
        }
    }

    pub(crate) fn passthrough(body: P) -> Self {
        Self {
            kind: Kind::Passthrough { body },
        }
    }

    /// The body of a `429` for a stream over a cap: `message`, then the end.
    pub(crate) fn refused(message: Bytes) -> Self {
        Self {
            kind: Kind::Refused {
                message: Some(message),
            },
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

/// What an event stream's body has next: a data frame's bytes, or the end (an event stream's
/// error ends it too, logged).
type Data = Poll<Option<Bytes>>;

impl<S, P> Body for SseBody<S, P>
where
    S: Stream<Item: SseItem>,
    P: Body<Data = Bytes, Error: Into<BoxError>>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Polled {
        match self.project().kind.project() {
            KindProj::Events { mut events } => match events.as_mut().poll_events(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(None) => {
                    // The stream ended: the compressed stream ends too (its trailer).
                    let this = events.project();
                    match this.compress.finish() {
                        Ok(Some(tail)) => Poll::Ready(Some(Ok(Frame::data(tail)))),
                        Ok(None) => Poll::Ready(None),
                        Err(err) => Poll::Ready(Some(Err(err))),
                    }
                }
                Poll::Ready(Some(data)) => {
                    let this = events.project();
                    let data = match this.compress.apply(data) {
                        Ok(data) => data,
                        Err(err) => {
                            // A compressor that fails cannot go on: the stream ends with it,
                            // as with an error from the event stream.
                            tracing::warn!(error = %err, "compressing the event stream failed; ending the response");
                            if let Some(life) = this.life.as_mut() {
                                life.error(&err);
                            }
                            *this.done = true;
                            if let Some(guard) = this.guard.take() {
                                guard.finish();
                            }
                            return Poll::Ready(Some(Err(err)));
                        }
                    };
                    this.open.frame(data.len());
                    if let (Some(watch), Some(timeout)) =
                        (stall(this.rare), this.config.stall_timeout)
                    {
                        // The frame must be taken (the body polled again) by then.
                        watch.frame_out(later(Instant::now(), timeout));
                    }
                    // The one `Frame` made (about 100 bytes, for its trailers' variant): the
                    // bytes alone go through the steps above (`BENCHMARKS.md`, session 13).
                    Poll::Ready(Some(Ok(Frame::data(data))))
                }
            },
            KindProj::Passthrough { body } => body.poll_frame(cx).map_err(Into::into),
            KindProj::Refused { message } => Poll::Ready(message.take().map(Frame::data).map(Ok)),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Events { events } => events.done && !events.compress.pending(),
            Kind::Passthrough { body } => body.is_end_stream(),
            Kind::Refused { message } => message.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Events { .. } => SizeHint::default(),
            Kind::Passthrough { body } => body.size_hint(),
            Kind::Refused { message } => {
                SizeHint::with_exact(message.as_ref().map_or(0, |m| m.len() as u64))
            }
        }
    }
}

impl<S: Stream<Item: SseItem>> Events<S> {
    fn poll_events(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Data {
        let mut this = self.project();
        if let Some(watch) = stall(this.rare) {
            watch.polled();
        }
        if *this.done {
            return Poll::Ready(None);
        }
        let config: &Config = this.config;
        if !*this.started {
            *this.started = true;
            if config.stall_timeout.is_some() {
                if let Some(watch) = Watch::current() {
                    if let Some(life) = this.life.as_mut() {
                        life.watch(watch.clone());
                    }
                    rare(this.rare).stall = Some(watch);
                }
            }
            if let Some(shutdown) = &config.shutdown {
                rare(this.rare).shutdown = Some(Box::pin(shutdown.wait()));
            }
            if let Some(interval) = config.keep_alive {
                *this.last_frame = Instant::now();
                *this.keep_alive = Some(Box::pin(sleep(interval)));
            }
            if let Some(first) = &config.first {
                return Poll::Ready(Some(first.clone()));
            }
        }

        // Shutdown: end now, or keep serving until the grace period is over. An event held for
        // the write interval goes out first.
        let finish = this.rare.as_mut().is_some_and(|rare| {
            (rare.shutdown.is_some() || rare.grace.is_some())
                && poll_shutdown(&mut rare.shutdown, &mut rare.grace, config, cx)
        });

        // An event held for the write interval: wait for the interval to end without polling
        // the stream (so that events published meanwhile wake nothing), then take the held
        // event and all that is ready. A shutdown ends the wait: what would have been written
        // by now goes out before the final event.
        let mut batch = Batch::new();
        // The frame reached `max_batch`: more may be ready, and it goes out without a hold.
        let mut full = false;
        if finish || this.rare.as_ref().is_some_and(|rare| rare.held.is_some()) {
            match this.rare.as_mut().and_then(|rare| rare.held.take()) {
                Some(held) => {
                    let delay = this.rare.as_mut().and_then(|rare| rare.delay.as_mut());
                    if let (false, Some(delay)) = (finish, delay) {
                        if delay.as_mut().poll(cx).is_pending() {
                            rare(this.rare).held = Some(held);
                            return Poll::Pending;
                        }
                    }
                    full = batch.push(held, config.max_batch);
                }
                None => {
                    end(this.life, CloseReason::Shutdown);
                    return finish_shutdown(this.done, this.guard, config, None);
                }
            }
        }

        // Events: take everything that is ready, up to the batch cap. Not asked again within
        // the lean connection's poll in which it answered `Pending` for this task: a wake-up
        // since then brings another poll of the connection (`crate::turn`).
        let mut ended = false;
        let turn = crate::turn::current(cx.waker());
        let quiet = turn != 0 && *this.pending_turn == turn;
        if !quiet {
            // Polled again, maybe with another waker: no longer known to be registered.
            *this.pending_turn = 0;
        }
        while !full && !quiet {
            let polled = this
                .stream
                .as_mut()
                .poll_next(cx)
                .map(|item| item.map(SseItem::into_event));
            match polled {
                Poll::Ready(Some(item)) => match item {
                    Ok(event) => {
                        if batch.is_empty()
                            && !config.min_write_interval.is_zero()
                            && !*this.draining
                        {
                            // Sooner than the interval after the last write: hold it (and what
                            // comes meanwhile) until the interval is over.
                            let due = later(*this.last_frame, config.min_write_interval);
                            let rare = rare(this.rare);
                            if due > Instant::now() && start_delay(&mut rare.delay, due, cx) {
                                rare.held = Some(event.into_bytes());
                                return Poll::Pending;
                            }
                        }
                        if batch.push(event.into_bytes(), config.max_batch) {
                            full = true;
                        }
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "event stream failed; ending the response");
                        if let Some(life) = this.life.as_mut() {
                            life.error(&err);
                        }
                        ended = true;
                        break;
                    }
                },
                Poll::Ready(None) => {
                    end(this.life, CloseReason::StreamEnded);
                    ended = true;
                    break;
                }
                Poll::Pending => {
                    *this.pending_turn = turn;
                    break;
                }
            }
        }
        if finish {
            end(this.life, CloseReason::Shutdown);
            return finish_shutdown(this.done, this.guard, config, batch.into_frame());
        }
        *this.draining = full && !ended;
        if ended {
            *this.done = true;
            if let Some(guard) = this.guard.take() {
                guard.finish();
            }
        }
        let events = batch.count;
        if let Some(bytes) = batch.into_frame() {
            this.open.events(events);
            if !config.min_write_interval.is_zero() {
                *this.last_frame = Instant::now();
            } else if this.keep_alive.is_some() {
                // Only for the keep-alive: a stamp as old as the batch of polls will do (the
                // comment may come that much sooner).
                *this.last_frame = crate::time::batch_now();
            }
            return Poll::Ready(Some(bytes));
        }
        if ended {
            return Poll::Ready(None);
        }

        if let (Some(keep_alive), Some(interval)) = (this.keep_alive.as_mut(), config.keep_alive) {
            let armed = this.keep_alive_armed;
            let still = match armed {
                // Registered with this connection's timer waker, which has not been woken
                // since: the timer has not fired (`crate::turn`).
                Armed::Stamp(stamp) => {
                    *stamp != 0 && turn != 0 && *stamp == crate::turn::timer_stamp()
                }
                // Registered for this task, and not fired: it will wake the task.
                Armed::Task(task) => task.will_wake(cx.waker()) && !keep_alive.is_elapsed(),
            };
            if still {
                return Poll::Pending;
            }
            *armed = Armed::NOBODY;
            // A poll with the task's co-operative budget spent returns `Pending` without
            // registering (the task is woken to come back instead).
            let registers = tokio::task::coop::has_budget_remaining();
            // Within a turn, with a waker of the connection's timer; else with the task's.
            let timer = if turn != 0 {
                crate::turn::timer()
            } else {
                None
            };
            let comment = match &timer {
                Some((waker, _)) => poll_keep_alive(
                    keep_alive.as_mut(),
                    this.last_frame,
                    interval,
                    &mut Context::from_waker(waker),
                ),
                None => poll_keep_alive(keep_alive.as_mut(), this.last_frame, interval, cx),
            };
            if comment {
                return Poll::Ready(Some(config.keep_alive_comment.clone()));
            }
            if registers {
                *armed = match timer {
                    Some((_, stamp)) => Armed::Stamp(stamp),
                    None => Armed::Task(cx.waker().clone()),
                };
            }
        }
        Poll::Pending
    }
}

/// Polls the keep-alive timer: `true` when the stream has been idle for `interval` (the timer
/// is then set for the next one), else `false`, registered with `cx` unless its co-operative
/// budget is spent. A frame since the timer was set (`last_frame`) moves it on.
fn poll_keep_alive(
    mut keep_alive: Pin<&mut Sleep>,
    last_frame: &mut Instant,
    interval: Duration,
    cx: &mut Context<'_>,
) -> bool {
    while keep_alive.as_mut().poll(cx).is_ready() {
        let now = Instant::now();
        let due = later(*last_frame, interval);
        if due > now {
            // A frame went out since the timer was set: idle for less than the interval.
            keep_alive.as_mut().reset(due);
            continue;
        }
        keep_alive.as_mut().reset(later(now, interval));
        *last_frame = now;
        return true;
    }
    false
}

/// `at + after`, or about 30 years from `at` if that overflows (as tokio does for `sleep`): a
/// huge interval means "never", not a panic.
/// Polls the shutdown signal and the grace period; `true` when the stream must end now.
#[cold]
fn poll_shutdown(
    shutdown: &mut Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    grace: &mut Option<Pin<Box<Sleep>>>,
    config: &Config,
    cx: &mut Context<'_>,
) -> bool {
    if let Some(signal) = shutdown.as_mut() {
        if signal.as_mut().poll(cx).is_ready() {
            *shutdown = None;
            if config.shutdown_grace.is_zero() {
                return true;
            }
            *grace = Some(Box::pin(sleep(config.shutdown_grace)));
        }
    }
    grace
        .as_mut()
        .is_some_and(|grace| grace.as_mut().poll(cx).is_ready())
}

/// Arms the write-interval timer; `false` if `deadline` has passed already (send now).
fn start_delay(
    delay: &mut Option<Pin<Box<Sleep>>>,
    deadline: Instant,
    cx: &mut Context<'_>,
) -> bool {
    let sleep = match delay {
        Some(sleep) => {
            sleep.as_mut().reset(deadline);
            sleep
        }
        None => delay.insert(Box::pin(tokio::time::sleep_until(deadline))),
    };
    sleep.as_mut().poll(cx).is_pending()
}

/// How many ready events a frame holds before copying them: one is sent as it is, a few are
/// copied once into a buffer of exactly their size.
const HELD: usize = 8;

/// The most a burst preallocates for one frame (it grows past this if `max_batch` allows).
const MAX_PREALLOC: usize = 64 * 1024;

/// The ready events of one frame.
///
/// The first [`HELD`] are only held: a lone event is sent as it is (the common case, kept
/// free of any other work), a few are copied once into a buffer of exactly their size. If more
/// are ready (a burst), they are all copied into a buffer sized for the whole frame up front,
/// so it does not regrow while it fills.
struct Batch {
    /// How many events it holds.
    count: usize,
    first: Option<Bytes>,
    /// The 2nd to [`HELD`]th events.
    more: Vec<Bytes>,
    /// The frame being built, in a burst.
    burst: Vec<u8>,
    size: usize,
}

impl Batch {
    #[inline(always)]
    fn new() -> Self {
        Self {
            count: 0,
            first: None,
            more: Vec::new(),
            burst: Vec::new(),
            size: 0,
        }
    }

    #[inline(always)]
    fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    /// Adds one event; `true` when the frame is full (`max_batch` reached).
    #[inline(always)]
    fn push(&mut self, bytes: Bytes, max_batch: usize) -> bool {
        self.size += bytes.len();
        self.count += 1;
        if self.first.is_none() {
            self.first = Some(bytes);
        } else {
            self.push_more(bytes, max_batch);
        }
        self.size >= max_batch
    }

    /// Adds an event after the first.
    #[inline]
    fn push_more(&mut self, bytes: Bytes, max_batch: usize) {
        if self.burst.capacity() != 0 {
            self.burst.extend_from_slice(&bytes);
        } else if self.more.len() + 1 < HELD {
            if self.more.capacity() == 0 {
                self.more = Vec::with_capacity(HELD - 1);
            }
            self.more.push(bytes);
        } else {
            self.start_burst(max_batch, &bytes);
        }
    }

    /// Allocates the frame for a burst (room for `max_batch`, and for the last event to cross
    /// it) and copies the held events and `next` into it.
    #[cold]
    fn start_burst(&mut self, max_batch: usize, next: &[u8]) {
        let average = self.size / (HELD + 1);
        let room = max_batch.min(MAX_PREALLOC).max(self.size) + average.max(next.len());
        self.burst = Vec::with_capacity(room);
        for bytes in self.first.iter().chain(&self.more) {
            self.burst.extend_from_slice(bytes);
        }
        self.burst.extend_from_slice(next);
        self.more = Vec::new();
    }

    /// The frame: the one event as it is, or the events copied into one buffer.
    #[inline(always)]
    fn into_frame(self) -> Option<Bytes> {
        if self.more.capacity() == 0 && self.burst.capacity() == 0 {
            // Nothing but the first event (the common case, twice per event): neither list
            // ever allocated, so there is nothing to drop, and the out-of-line drop of a
            // `Vec<Bytes>` (about 18 instructions) is skipped.
            let Self { first, more, .. } = self;
            std::mem::forget(more);
            return first;
        }
        Some(self.copy_frame())
    }

    /// The frame of several events.
    fn copy_frame(self) -> Bytes {
        if self.burst.capacity() == 0 {
            let mut frame = Vec::with_capacity(self.size);
            for bytes in self.first.iter().chain(&self.more) {
                frame.extend_from_slice(bytes);
            }
            return Bytes::from(frame);
        }
        // A burst that ended well short of the room it was given: keep only what it holds,
        // rather than pin the whole buffer while the frame waits to be written.
        if self.burst.len() < self.burst.capacity() / 4 {
            Bytes::copy_from_slice(&self.burst)
        } else {
            Bytes::from(self.burst)
        }
    }
}

/// Records why the stream ends, for its hooks and span.
fn end(life: &mut Option<Box<Lifecycle>>, reason: CloseReason) {
    if let Some(life) = life.as_mut() {
        life.end(reason);
    }
}

fn finish_shutdown(
    done: &mut bool,
    guard: &mut Option<DisconnectGuard>,
    config: &Config,
    held: Option<Bytes>,
) -> Data {
    *done = true;
    if let Some(guard) = guard.take() {
        guard.finish();
    }
    let last = match (held, &config.shutdown_event) {
        (Some(held), Some(event)) => Some(Bytes::from([&held[..], event].concat())),
        (held, event) => held.or_else(|| event.clone()),
    };
    Poll::Ready(last)
}

#[cfg(test)]
mod tests {
    use futures_util::{FutureExt, stream};
    use http_body_util::BodyExt;

    use super::*;
    use crate::Event;

    /// An event-stream body over `stream` with `config`.
    fn body<S>(stream: S, config: Config) -> SseBody<S> {
        SseBody::events(
            stream,
            Arc::new(config),
            None,
            None,
            None,
            crate::compress::Slot::none(),
        )
    }

    /// Within one poll of a lean connection (a turn), a stream that answered `Pending` is
    /// not asked again; an event sent meanwhile wakes the task, and the next turn takes it.
    /// Outside a turn the stream is always asked.
    #[cfg(feature = "server")]
    #[test]
    fn within_one_turn_a_pending_stream_is_not_asked_again() {
        use std::{
            sync::atomic::{AtomicUsize, Ordering},
            task::Wake,
        };

        use crate::turn::Turn;

        struct Counted {
            rx: tokio::sync::mpsc::UnboundedReceiver<Event>,
            polls: Arc<AtomicUsize>,
        }
        impl Stream for Counted {
            type Item = Event;
            fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
                self.polls.fetch_add(1, Ordering::SeqCst);
                self.rx.poll_recv(cx)
            }
        }
        #[derive(Default)]
        struct Woken(AtomicUsize);
        impl Wake for Woken {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }

        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let polls = Arc::new(AtomicUsize::new(0));
        let config = Config {
            keep_alive: None,
            ..Config::default()
        };
        let mut body = std::pin::pin!(body(
            Counted {
                rx,
                polls: Arc::clone(&polls)
            },
            config
        ));
        let woken = Arc::new(Woken::default());
        let waker = Waker::from(Arc::clone(&woken));
        let mut cx = Context::from_waker(&waker);
        let data = |polled: Polled| match polled {
            Poll::Ready(Some(Ok(frame))) => frame.into_data().unwrap(),
            other => panic!("a frame: {:?}", other.map(|f| f.map(|f| f.map(|_| ())))),
        };

        tx.send(Event::new().data("1")).unwrap();
        let turn = Turn::start(&waker);
        assert_eq!(data(body.as_mut().poll_frame(&mut cx)), "data: 1\n\n");
        assert_eq!(polls.load(Ordering::SeqCst), 2, "an event, then Pending");
        tx.send(Event::new().data("2")).unwrap();
        assert_eq!(woken.0.load(Ordering::SeqCst), 1, "the send woke the task");
        assert!(body.as_mut().poll_frame(&mut cx).is_pending());
        assert_eq!(
            polls.load(Ordering::SeqCst),
            2,
            "not asked again in the turn"
        );
        drop(turn);

        let turn = Turn::start(&waker);
        assert_eq!(data(body.as_mut().poll_frame(&mut cx)), "data: 2\n\n");
        assert_eq!(polls.load(Ordering::SeqCst), 4, "asked in the next turn");
        drop(turn);

        // No turn: asked every time.
        tx.send(Event::new().data("3")).unwrap();
        assert_eq!(data(body.as_mut().poll_frame(&mut cx)), "data: 3\n\n");
        assert!(body.as_mut().poll_frame(&mut cx).is_pending());
        assert_eq!(polls.load(Ordering::SeqCst), 7);
    }

    fn frames<S: Stream<Item: SseItem>>(stream: S, max_batch: usize) -> Vec<Bytes> {
        let config = Config {
            keep_alive: None,
            max_batch,
            ..Config::default()
        };
        let mut body = std::pin::pin!(body(stream, config));
        let mut frames = Vec::new();
        async {
            while let Some(frame) = body.frame().await {
                frames.push(frame.unwrap().into_data().unwrap());
            }
        }
        .now_or_never()
        .expect("every event is ready");
        frames
    }

    #[test]
    fn one_ready_event_is_sent_without_a_copy() {
        let event = Event::new().data("x").encode();
        let frames = frames(stream::iter([event.clone()]), DEFAULT_MAX_BATCH);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].as_ptr(), event.as_bytes().as_ptr());
    }

    #[test]
    fn ready_events_fill_frames_up_to_the_cap() {
        for count in [2, HELD, HELD + 1, 3 * HELD, 1000] {
            for max_batch in [0, 1, 50, 1000, DEFAULT_MAX_BATCH, usize::MAX] {
                let events: Vec<_> = (0..count)
                    .map(|n| Event::new().data(format!("{n:0width$}", width = n % 40)))
                    .map(Event::encode)
                    .collect();
                let all: Vec<u8> = events.iter().flat_map(|e| e.as_bytes().to_vec()).collect();
                let frames = frames(stream::iter(events.clone()), max_batch);
                assert_eq!(frames.concat(), all, "{count} events, cap {max_batch}");
                // Every frame but the last reached the cap; none went on past it.
                let mut next = events.iter().map(crate::EncodedEvent::len);
                for (i, frame) in frames.iter().enumerate() {
                    let mut size = 0;
                    let mut last = 0;
                    while size < frame.len() {
                        last = next.next().unwrap();
                        size += last;
                    }
                    assert_eq!(size, frame.len());
                    assert!(
                        size - last < max_batch.max(1),
                        "frame {i} went past the cap"
                    );
                    if i + 1 < frames.len() {
                        assert!(size >= max_batch, "frame {i} stopped short of the cap");
                    }
                }
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn keep_alive_comes_one_interval_after_the_last_frame() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
        let events = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        let mut body = std::pin::pin!(SseBody::new(events));
        let start = Instant::now();
        let sender = tokio::spawn(async move {
            for at in [5, 12, 20] {
                tokio::time::sleep_until(start + Duration::from_secs(at)).await;
                tx.send(Event::new().data(at.to_string())).unwrap();
            }
            tx
        });
        let mut got = Vec::new();
        while got.len() < 5 {
            let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
            got.push((
                start.elapsed().as_secs(),
                String::from_utf8(frame.to_vec()).unwrap(),
            ));
        }
        let want = [
            (5, "data: 5\n\n"),
            (12, "data: 12\n\n"),
            (20, "data: 20\n\n"),
            (35, ":\n\n"),
            (50, ":\n\n"),
        ];
        assert_eq!(got, owned(&want));
        drop(sender);
    }

    /// A body with a minimum write interval over events sent at the given times (ms after
    /// start), with `shutdown` triggered at `shutdown_at` if given; the frames with their times.
    async fn timed_frames(
        interval: u64,
        max_batch: usize,
        at: &[u64],
        shutdown_at: Option<u64>,
    ) -> Vec<(u64, String)> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
        let events = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        let shutdown = Shutdown::new();
        let config = Config {
            keep_alive: None,
            max_batch,
            min_write_interval: Duration::from_millis(interval),
            shutdown: Some(shutdown.clone()),
            shutdown_event: Some(Bytes::from_static(b"event: bye\n\n")),
            ..Config::default()
        };
        let mut body = std::pin::pin!(body(events, config));
        let start = Instant::now();
        let times = at.to_vec();
        let sender = tokio::spawn(async move {
            for (n, at) in times.into_iter().enumerate() {
                tokio::time::sleep_until(start + Duration::from_millis(at)).await;
                tx.send(Event::new().data(n.to_string())).unwrap();
            }
            if let Some(at) = shutdown_at {
                tokio::time::sleep_until(start + Duration::from_millis(at)).await;
                shutdown.trigger();
            }
            // Keep the channel open: the stream must not end before the body does.
            std::future::pending::<()>().await;
            drop(tx);
        });
        let mut got = Vec::new();
        let deadline = start + Duration::from_secs(10);
        while let Ok(Some(frame)) = tokio::time::timeout_at(deadline, body.frame()).await {
            let frame = frame.unwrap().into_data().unwrap();
            let text = String::from_utf8(frame.to_vec()).unwrap();
            let ms = start.elapsed().as_millis() as u64;
            got.push((ms, text.replace("data: ", "").replace("\n\n", ",")));
        }
        sender.abort();
        got
    }

    fn owned(want: &[(u64, &str)]) -> Vec<(u64, String)> {
        want.iter().map(|&(t, f)| (t, f.to_owned())).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn min_write_interval_holds_events_that_come_too_soon() {
        // The stream starts at 0 (a write, for the interval's purpose). Event 0 at 3 ms waits
        // until 10; 1 and 2 join it. 3 at 25 is after a quiet spell: at once. 4 at 30 waits
        // until 35, 5 at 100 goes at once.
        let got = timed_frames(10, DEFAULT_MAX_BATCH, &[3, 5, 9, 25, 30, 100], None).await;
        let want = [(10, "0,1,2,"), (25, "3,"), (35, "4,"), (100, "5,")];
        assert_eq!(got, owned(&want));
    }

    #[tokio::test(start_paused = true)]
    async fn min_write_interval_zero_writes_at_once() {
        let got = timed_frames(0, DEFAULT_MAX_BATCH, &[3, 5, 9], None).await;
        assert_eq!(got, owned(&[(3, "0,"), (5, "1,"), (9, "2,")]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_over_max_batch_continues_without_waiting() {
        // Six events ready at 12 ms, frames capped at two events ("n,": 9 bytes each).
        let got = timed_frames(10, 18, &[12, 12, 12, 12, 12, 12], None).await;
        assert_eq!(got, owned(&[(12, "0,1,"), (12, "2,3,"), (12, "4,5,")]));
    }

    #[tokio::test(start_paused = true)]
    async fn max_batch_zero_still_sends_each_held_event_alone() {
        let got = timed_frames(10, 0, &[3, 5, 9, 40], None).await;
        let want = [(10, "0,"), (10, "1,"), (10, "2,"), (40, "3,")];
        assert_eq!(got, owned(&want));
    }

    #[tokio::test(start_paused = true)]
    async fn a_huge_interval_holds_instead_of_panicking() {
        let got = timed_frames(u64::MAX, DEFAULT_MAX_BATCH, &[3], None).await;
        assert_eq!(got, owned(&[]));
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_writes_held_events_before_the_final_event() {
        let got = timed_frames(50, DEFAULT_MAX_BATCH, &[3, 5], Some(20)).await;
        assert_eq!(got, owned(&[(20, "0,1,event: bye,")]));
    }

    #[test]
    fn a_short_burst_does_not_keep_its_big_buffer() {
        let mut batch = Batch::new();
        for _ in 0..=HELD {
            assert!(!batch.push(Bytes::from_static(b"data: x\n\n"), DEFAULT_MAX_BATCH));
        }
        let frame = batch.into_frame().unwrap();
        assert_eq!(frame.len(), 9 * (HELD + 1));
        assert_eq!(frame.slice(..9), Bytes::from_static(b"data: x\n\n"));
        // Copied out of the 32 KiB burst buffer into one of its own size.
        assert_eq!(frame.try_into_mut().unwrap().capacity(), 9 * (HELD + 1));
    }
}
