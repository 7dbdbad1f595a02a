//! Stalled HTTP/2 streams: a stream whose client grants no flow-control credit is reset.
//!
//! The body side ([`Watch`]) and the task wrapper ([`Watched`]); what it detects and why it
//! cannot live in the body alone is told on [`StallExecutor`], the public way in.

#[cfg(feature = "server")]
use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

#[cfg(feature = "server")]
use pin_project_lite::pin_project;
use tokio::time::Instant;
#[cfg(feature = "server")]
use tokio::time::{Sleep, sleep_until};

use crate::time::later;

tokio::task_local! {
    /// The watch of the task being polled, when it runs in a [`Watched`] wrapper.
    static WATCH: Arc<Watch>;
}

/// Shared by a watched task and the body it serves.
#[derive(Debug)]
pub(crate) struct Watch {
    base: Instant,
    /// When the body must be polled again, in nanoseconds after `base`; 0 when nothing waits.
    deadline: AtomicU64,
    /// The wrapper gave up on the task (the body is being dropped for a stall).
    fired: AtomicBool,
}

impl Watch {
    #[cfg_attr(not(feature = "server"), allow(dead_code))]
    fn new() -> Self {
        Self {
            base: Instant::now(),
            deadline: AtomicU64::new(0),
            fired: AtomicBool::new(false),
        }
    }

    /// The watch of the task being polled, if the task is watched.
    pub(crate) fn current() -> Option<Arc<Self>> {
        WATCH.try_with(Arc::clone).ok()
    }

    /// The body handed out a frame: unless it is polled again by `deadline`, it is stalled.
    pub(crate) fn frame_out(&self, deadline: Instant) {
        let nanos = deadline.saturating_duration_since(self.base).as_nanos();
        self.deadline
            .store(u64::try_from(nanos).unwrap_or(u64::MAX).max(1), Relaxed);
    }

    /// The body is polled again: the frame it handed out was taken.
    pub(crate) fn polled(&self) {
        if self.deadline.load(Relaxed) != 0 {
            self.deadline.store(0, Relaxed);
        }
    }

    /// Whether the task was dropped for a stall.
    pub(crate) fn fired(&self) -> bool {
        self.fired.load(Relaxed)
    }

    #[cfg_attr(not(feature = "server"), allow(dead_code))]
    fn deadline(&self) -> Option<Instant> {
        match self.deadline.load(Relaxed) {
            0 => None,
            nanos => Some(later(self.base, Duration::from_nanos(nanos))),
        }
    }
}

#[cfg(feature = "server")]
pin_project! {
    /// A task whose body must make progress: dropped when the body has a frame out that is not
    /// taken by its deadline.
    pub(crate) struct Watched<F> {
        #[pin]
        inner: Option<F>,
        watch: Arc<Watch>,
        // Armed only while a frame waits; kept and reset afterwards.
        timer: Option<Pin<Box<Sleep>>>,
        armed: Option<Instant>,
    }
}

#[cfg(feature = "server")]
impl<F> Watched<F> {
    pub(crate) fn new(inner: F) -> Self {
        Self {
            inner: Some(inner),
            watch: Arc::new(Watch::new()),
            timer: None,
            armed: None,
        }
    }
}

#[cfg(feature = "server")]
impl<F: Future<Output = ()>> Future for Watched<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        let Some(inner) = this.inner.as_mut().as_pin_mut() else {
            return Poll::Ready(());
        };
        if WATCH
            .sync_scope(this.watch.clone(), || inner.poll(cx))
            .is_ready()
        {
            this.inner.set(None);
            return Poll::Ready(());
        }
        // Pending. A frame out that was not taken in this poll: wait for its deadline.
        let Some(deadline) = this.watch.deadline() else {
            return Poll::Pending;
        };
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(sleep_until(deadline)));
        if *this.armed != Some(deadline) {
            timer.as_mut().reset(deadline);
            *this.armed = Some(deadline);
        }
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        // Stalled: drop the task. h2 resets the stream (RST_STREAM) and releases it.
        tracing::debug!("http/2 stream made no progress for the stall timeout; resetting it");
        crate::metrics::stalled();
        this.watch.fired.store(true, Relaxed);
        this.inner.set(None);
        Poll::Ready(())
    }
}

/// A hyper executor that spawns on tokio and watches every task it spawns for stalled
/// [`SseBody`](crate::SseBody)s: give it to hyper-util's `auto::Builder::new` or hyper's
/// `http2::Builder::new` so that HTTP/2 streams whose client grants no flow-control credit are
/// reset after the [stall timeout](crate::SseLayer::stall_timeout). [`serve`](crate::serve)
/// uses it. Tasks that serve no event stream run as with hyper-util's `TokioExecutor`, at the
/// cost of one task-local per poll.
///
/// Over HTTP/1.1 a client that stops reading fills the socket, and the write-stall timeout
/// ([`io::WriteTimeout`](crate::io::WriteTimeout)) drops the connection. Over HTTP/2 that
/// timeout sees nothing: a client can open streams with `SETTINGS_INITIAL_WINDOW_SIZE = 0` (or
/// stop sending `WINDOW_UPDATE`s) and hyper holds the stream's next frame until credit comes,
/// without writing a byte. The stream stays open, and counted, for as long as the connection
/// lives.
///
/// # Why the body alone cannot end such a stream
///
/// hyper's HTTP/2 send loop (`PipeToSendStream` in `hyper/src/proto/h2/mod.rs`) polls the body
/// for a frame, keeps that frame, and then waits for send capacity **without polling the body
/// again** until the frame is handed to h2. A timer inside the body can wake the stream's task,
/// but hyper then only asks h2 for capacity again: the body is never asked for a frame, so it
/// never gets the chance to end with an error.
///
/// # What is done instead
///
/// The [`SseBody`](crate::SseBody) notes when it hands hyper a frame and when it is polled
/// again (polled again = hyper accepted the frame). The task that drives the stream is watched
/// by a small wrapper, installed by the executor hyper spawns its HTTP/2 streams with
/// (`StallExecutor`(crate::StallExecutor), which [`serve`](crate::serve) uses): when the body
/// has handed out a frame and is not polled again within the stall timeout
/// ([`SseLayer::stall_timeout`](crate::SseLayer::stall_timeout), default 30 s), the wrapper drops
/// the stream's task. h2 then sends `RST_STREAM(CANCEL)` for that one stream and releases it;
/// the body is dropped, so its event stream, subscription and counts go with it, and the
/// [`on_close`](crate::SseLayer::on_close) hook sees
/// [`CloseReason::Stalled`](crate::layer::CloseReason::Stalled). The other streams of the
/// connection go on.
///
/// # What is detected, and what is not
///
/// - Detected: an event stream (served through `SseLayer` or `SseBody`) whose task was spawned
///   by a `StallExecutor` and whose body has a frame out that hyper has not taken within the
///   timeout: a zero window from the start, or a client that stops granting credit. At most one
///   frame waits in hyper and one in h2's send buffer before the clock starts.
/// - Not a stall: a stream with nothing to send (the body is waiting for its own source, not
///   for the client). With keep-alive on, its next comment is a frame, and from then on it is
///   watched like any other: an idle stream with a zero window is reset within keep-alive +
///   stall timeout.
/// - Not detected: streams served by another executor (`axum::serve`, or hyper with
///   hyper-util's `TokioExecutor`: use [`serve`](crate::serve), or hand
///   `StallExecutor` to hyper-util's builder); bodies that are not event streams; the last
///   frame of a stream that ended, which h2 may keep in its buffer after the body is gone.
///   HTTP/1.1 is not watched here: there a stalled client is a stalled socket, which
///   `io::WriteTimeout` sees.
///
/// A watched task is expected to serve one body (one HTTP/2 stream, as hyper spawns them).
///
/// # Example
///
/// ```no_run
/// use std::time::Duration;
/// use hyper_util::{rt::TokioIo, server::conn::auto, service::TowerToHyperService};
/// use tower_sse::{StallExecutor, SseLayer};
///
/// # async fn run(app: axum::Router) -> std::io::Result<()> {
/// let app = app.layer(SseLayer::new().stall_timeout(Duration::from_secs(20)));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
/// let (tcp, _) = listener.accept().await?;
/// // Every HTTP/2 stream of this connection runs in a watched task.
/// auto::Builder::new(StallExecutor::new())
///     .serve_connection(TokioIo::new(tcp), TowerToHyperService::new(app))
///     .await
///     .ok();
/// # Ok(()) }
/// ```
#[cfg(feature = "server")]
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct StallExecutor;

#[cfg(feature = "server")]
impl StallExecutor {
    /// The executor (it spawns on the current tokio runtime).
    ///
    /// ```
    /// let executor = tower_sse::StallExecutor::new();
    /// # let _ = executor;
    /// ```
    pub fn new() -> Self {
        Self
    }
}

#[cfg(feature = "server")]
impl<F> hyper::rt::Executor<F> for StallExecutor
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, future: F) {
        tokio::spawn(Watched::new(future));
    }
}

#[cfg(all(test, feature = "server"))]
mod tests {
    use std::sync::{Mutex, atomic::AtomicUsize};

    use futures_util::stream;
    use http_body::Body as _;
    use http_body_util::BodyExt as _;
    use tokio::sync::Notify;

    use super::*;
    use crate::{
        Event, SseBody, SseLayer,
        body::Config,
        layer::{CloseReason, StreamInfo},
    };

    /// What hyper's HTTP/2 send loop does with a body: take a frame, then wait for capacity
    /// (`credit`) before polling the body again; with no credit it never polls it again.
    async fn pipe<B: http_body::Body<Data = bytes::Bytes> + Unpin>(
        mut body: B,
        credit: Arc<Notify>,
        frames: Frames,
    ) {
        while let Some(Ok(frame)) = body.frame().await {
            credit.notified().await;
            frames.lock().unwrap().push(frame.into_data().unwrap());
        }
    }

    type Closed = Arc<Mutex<Vec<CloseReason>>>;
    type Frames = Arc<Mutex<Vec<bytes::Bytes>>>;

    /// A body over events every second, with `stall` and an `on_close` hook, watched: the
    /// task, the close reasons, the frames taken, and how often the task was polled.
    fn watched(
        stall: Duration,
        credit: Arc<Notify>,
    ) -> (
        tokio::task::JoinHandle<()>,
        Closed,
        Frames,
        Arc<AtomicUsize>,
    ) {
        let closed = Closed::default();
        let log = closed.clone();
        let mut config = Config {
            keep_alive: None,
            stall_timeout: SseLayer::new().stall_timeout(stall).config().stall_timeout,
            ..Config::default()
        };
        config.hooks.on_close = Some(Arc::new(move |_: &StreamInfo, reason: CloseReason| {
            log.lock().unwrap().push(reason);
        }));
        let events = stream::unfold(0, |n| async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Some((Event::new().data(n.to_string()), n + 1))
        });
        let life = crate::layer::hooks::Lifecycle::open(&config.hooks, &"/".parse().unwrap());
        let body = Box::pin(SseBody::<_>::events(
            events,
            Arc::new(config),
            None,
            life,
            None,
            crate::compress::Slot::none(),
        ));
        let frames = Arc::default();
        // Counts how often the task is polled (a timer that fires again and again would show).
        let polls = Arc::new(AtomicUsize::new(0));
        let counter = polls.clone();
        let mut pipe = Box::pin(pipe(body, credit, Arc::clone(&frames)));
        let task = tokio::spawn(Watched::new(std::future::poll_fn(move |cx| {
            counter.fetch_add(1, Relaxed);
            pipe.as_mut().poll(cx)
        })));
        (task, closed, frames, polls)
    }

    #[tokio::test(start_paused = true)]
    async fn a_frame_not_taken_within_the_timeout_ends_the_task() {
        let start = Instant::now();
        let (task, closed, frames, _) = watched(Duration::from_secs(5), Arc::new(Notify::new()));
        tokio::time::timeout(Duration::from_secs(3600), task)
            .await
            .expect("the stalled task ends")
            .unwrap();
        // The first event at 1 s was never taken: dropped at 1 + 5 s.
        assert_eq!(start.elapsed(), Duration::from_secs(6));
        assert_eq!(*closed.lock().unwrap(), [CloseReason::Stalled]);
        assert!(frames.lock().unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn frames_taken_in_time_keep_the_stream_open() {
        let credit = Arc::new(Notify::new());
        let (task, closed, frames, _) = watched(Duration::from_secs(5), credit.clone());
        // Credit 4 s after each frame: always within the timeout.
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_secs(5)).await;
            credit.notify_one();
        }
        let stopped = Instant::now();
        tokio::task::yield_now().await;
        assert_eq!(frames.lock().unwrap().len(), 10);
        assert!(!task.is_finished());
        assert!(closed.lock().unwrap().is_empty());
        // Then the client stops granting credit: the next frame waits past the timeout.
        tokio::time::timeout(Duration::from_secs(3600), task)
            .await
            .expect("the stalled task ends")
            .unwrap();
        assert!(stopped.elapsed() <= Duration::from_secs(6));
        assert_eq!(*closed.lock().unwrap(), [CloseReason::Stalled]);
    }

    #[tokio::test(start_paused = true)]
    async fn zero_or_huge_timeouts_never_fire_and_never_spin() {
        for stall in [Duration::ZERO, Duration::MAX] {
            let (task, closed, _, polls) = watched(stall, Arc::new(Notify::new()));
            tokio::time::sleep(Duration::from_secs(86_400 * 365)).await;
            assert!(!task.is_finished(), "{stall:?}");
            // Polled for the first event and little else in a year.
            assert!(polls.load(Relaxed) < 10, "{stall:?}: {polls:?} polls");
            assert!(closed.lock().unwrap().is_empty());
            task.abort();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_body_is_not_stalled() {
        // No events at all, keep-alive off: nothing is out, nothing is stalled.
        let config = Config {
            keep_alive: None,
            stall_timeout: Some(Duration::from_secs(1)),
            ..Config::default()
        };
        let body = SseBody::<_>::events(
            stream::pending::<Event>(),
            Arc::new(config),
            None,
            None,
            None,
            crate::compress::Slot::none(),
        );
        let task = tokio::spawn(Watched::new(async move {
            let mut body = std::pin::pin!(body);
            let _ = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await;
        }));
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert!(!task.is_finished());
        task.abort();
    }
}
