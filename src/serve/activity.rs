//! Idle hyper connections: what a connection handed to hyper has under way, and closing it
//! when it has had nothing for a while.
//!
//! hyper closes an HTTP/1.1 connection that sends no request head in time, but an HTTP/2
//! connection with no stream open, or one that sent the preface and nothing more, it keeps
//! for as long as the client does. Here each request is counted from the moment hyper hands
//! it over (before the service is ready) until its response body is dropped (for an event
//! stream: until the stream ends), its body until it is dropped, and a write waiting for the
//! socket is under way too. A connection with nothing under way and nothing started for a
//! whole [`header_read_timeout`](crate::Serve::header_read_timeout) is shut down gracefully
//! (HTTP/2: `GOAWAY`), and dropped if it still has nothing under way one timeout later. Bytes
//! moving without anything under way (a CONNECT tunnel's traffic, a response hyper writes after
//! it dropped the body) keep a connection for at most five more timeouts: PINGs alone must not
//! keep one for ever.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::{Context, Poll, ready},
    time::Duration,
};

use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::Shutdown;

/// A connection's requests (how many were started, how many are done) and its reads and
/// writes (how many moved bytes).
#[derive(Debug, Default)]
pub(super) struct Activity {
    started: AtomicU64,
    done: AtomicU64,
    moved: AtomicU64,
    /// A write waits for the socket (the client is reading slowly; a client that stopped
    /// reading is the write timeout's).
    writing: AtomicBool,
}

impl Activity {
    /// Counts a request as started until the returned guard is dropped.
    pub(super) fn start(self: &Arc<Self>) -> Request {
        self.started.fetch_add(1, Ordering::Relaxed);
        Request(Arc::clone(self))
    }

    /// Notes a read or write that moved bytes.
    pub(super) fn moved(&self) {
        self.moved.fetch_add(1, Ordering::Relaxed);
    }

    /// Notes whether the last write waited for the socket.
    pub(super) fn writing(&self, waiting: bool) {
        self.writing.store(waiting, Ordering::Relaxed);
    }

    /// (started, done, moved).
    fn counts(&self) -> (u64, u64, u64) {
        (
            self.started.load(Ordering::Relaxed),
            self.done.load(Ordering::Relaxed),
            self.moved.load(Ordering::Relaxed),
        )
    }
}

/// One request under way; done when dropped.
#[derive(Debug)]
pub(super) struct Request(Arc<Activity>);

impl Drop for Request {
    fn drop(&mut self) {
        self.0.done.fetch_add(1, Ordering::Relaxed);
    }
}

pin_project! {
    /// A service's response future whose request stays counted, then its body.
    pub(super) struct Counted<F> {
        #[pin]
        inner: F,
        request: Option<Request>,
    }
}

impl<F> Counted<F> {
    pub(super) fn new(inner: F, request: Request) -> Self {
        Self {
            inner,
            request: Some(request),
        }
    }
}

impl<F, B, E> Future for Counted<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<CountedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.inner.poll(cx))?;
        let request = this.request.take();
        Poll::Ready(Ok(response.map(|inner| CountedBody {
            inner,
            _request: request,
        })))
    }
}

pin_project! {
    /// A response body whose request is done when it is dropped.
    pub(super) struct CountedBody<B> {
        #[pin]
        inner: B,
        _request: Option<Request>,
    }
}

impl<B: Body<Data = Bytes>> Body for CountedBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Drives a hyper connection to its end: shut down gracefully when `shutdown` triggers, or
/// when a whole `idle` went by with no request under way and nothing started or moved.
pub(super) async fn drive<C, E>(
    connection: Pin<&mut C>,
    graceful: impl Fn(Pin<&mut C>),
    activity: &Activity,
    shutdown: Option<Shutdown>,
    idle: Duration,
) -> Result<(), E>
where
    C: Future<Output = Result<(), E>>,
{
    let mut connection = connection;
    let stop = async {
        match shutdown {
            Some(shutdown) => shutdown.triggered().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(stop);
    let mut ticks =
        tokio::time::interval_at(crate::time::later(tokio::time::Instant::now(), idle), idle);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = activity.counts();
    // Periods in a row with no request under way or started and no write waiting: bytes
    // moving (a CONNECT tunnel, a response hyper writes after dropping its body) keep the
    // connection for at most `MOVING` of them, so PINGs alone cannot keep it for ever.
    let mut quiet = 0u32;
    // Shut down for the server's shutdown (then the grace bounds the wait), or for idleness
    // (then a connection that does not end, and has nothing under way one `idle` later, is
    // dropped: an HTTP/2 connection still in its handshake ends gracefully only once the
    // client's settings come, which a silent client never sends).
    let (mut stopping, mut idle_closing) = (false, false);
    loop {
        tokio::select! {
            result = connection.as_mut() => return result,
            () = &mut stop, if !stopping => {
                stopping = true;
                graceful(connection.as_mut());
            }
            _ = ticks.tick(), if !stopping || idle_closing => {
                let now = activity.counts();
                // Under way (a request, a write waiting) or started since the last tick.
                let busy = now.0 != now.1
                    || activity.writing.load(Ordering::Relaxed)
                    || now.0 != last.0;
                let moved = now.2 != last.2;
                last = now;
                if idle_closing {
                    if !busy {
                        tracing::debug!("idle connection did not close; dropping it");
                        return Ok(());
                    }
                    continue;
                }
                quiet = if busy { 0 } else { quiet + 1 };
                if quiet > 0 && !(moved && quiet <= MOVING) {
                    tracing::debug!("connection idle for {idle:?}; closing it");
                    (stopping, idle_closing) = (true, true);
                    graceful(connection.as_mut());
                }
            }
        }
    }
}

/// How many idle periods in a row bytes moving alone keep a connection.
const MOVING: u32 = 5;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_is_shut_down_and_a_busy_one_is_not() {
        use std::sync::atomic::AtomicBool;

        let activity = Arc::new(Activity::default());
        let asked = AtomicBool::new(false);
        let closing = tokio::sync::Notify::new();
        // A "connection" that ends once it is asked to shut down.
        let connection = async {
            closing.notified().await;
            Ok::<(), ()>(())
        };
        tokio::pin!(connection);
        let request = activity.start();
        let started = tokio::time::Instant::now();
        let idle = Duration::from_secs(10);
        let (result, ()) = tokio::join!(
            drive(
                connection.as_mut(),
                |_| {
                    asked.store(true, Ordering::Relaxed);
                    closing.notify_one();
                },
                &activity,
                None,
                idle,
            ),
            async {
                // A request under way for a minute: not idle.
                tokio::time::sleep(Duration::from_secs(60)).await;
                assert!(!asked.load(Ordering::Relaxed));
                drop(request);
            }
        );
        result.unwrap();
        // Shut down after one to two idle periods once the request was done.
        let took = started.elapsed();
        assert!(
            took >= Duration::from_secs(70) && took <= Duration::from_secs(80),
            "{took:?}"
        );
    }
}
