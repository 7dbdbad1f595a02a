//! The lean HTTP/1.1 path: a connection whose requests are event-stream `GET`s is served
//! here, without a hyper connection behind it.
//!
//! Why: an event stream spends its life writing small chunks and waiting. Through hyper each
//! wake-up goes through its dispatcher, its write buffer and its read-side bookkeeping, and
//! every idle connection keeps hyper's 8 KiB read and write buffers (`BENCHMARKS.md`). Here a
//! connection keeps no buffer while it streams; a frame from the body is written at once as
//! one chunk (size line, data, CRLF in one vectored write), and the read side is only watched
//! for the client going away.
//!
//! What it does: reads request heads ([`head`](super::head) decides; everything not for this
//! path goes to hyper with the bytes read so far), calls the service, writes the response
//! (`Content-Length` when the length is known, else chunked; `Date`; `Connection: close` when
//! it will close), and keeps the connection for the next request (keep-alive and pipelining)
//! unless either side asked to close, a body failed or was cut short, or the server is
//! shutting down. A client that goes away (EOF or a reset) while the body waits for events
//! drops the body at once, so its subscription is released (while the body has frames, the
//! failed write shows it). What it sends meanwhile is read up to its next request's complete
//! head and never past [`max_header_bytes`](crate::Serve::max_header_bytes); a head too
//! large or not a request goes to hyper after the current response.

use std::{
    convert::Infallible,
    future::{Future, poll_fn},
    io,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use http::{Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    time::Instant,
};
use tower_service::Service;

use super::{
    body::RequestBody,
    chunk::{poll_rest, write_now},
    flagged::Flagged,
    head::{self, Head, Scan},
    peer::insert_peer,
    response::{self, Framing},
};
use crate::{BoxError, Shutdown, io::WriteTimeout};

/// How many frames a response takes from its body (written or empty) before it lets the
/// other connections of its driver have a turn.
pub(super) const FRAMES_PER_TURN: u32 = 32;

/// A connection on the lean path, and what it needs.
///
/// `repr(C)`, with what a streaming response reads on every event first (the response's
/// framing and counts, the read side's mark, a partial write, the socket): those fields
/// then share the first two cache lines of the connection's future with the body, and each
/// is cold by the time the next event comes (`BENCHMARKS.md`, sessions 11 and 12). The
/// compiler puts `Option<Lean>`'s niche in the socket, on those same lines (seen in the
/// machine code, session 12).
#[repr(C)]
pub(super) struct Lean<S> {
    /// The response being streamed (its framing and counts).
    pub(super) stream: Streaming,
    /// The read side's wake-ups (see [`poll_client`]).
    pub(super) read_watch: Flagged,
    /// The part of a frame the socket did not take at once, being written (boxed: rare, and
    /// checked on every poll).
    pub(super) rest: Option<Box<Rest>>,
    pub(super) io: WriteTimeout<TcpStream>,
    pub(super) max_head: usize,
    /// The client closed its side (EOF) while requests it had sent were still to be answered:
    /// they are, then the connection closes.
    pub(super) read_closed: bool,
    /// `false`: every request is hyper's (`Serve::lean_event_streams(false)`); this path
    /// then only waits for the first bytes, under the header-read timeout.
    pub(super) lean: bool,
    /// Whether the connection may take another request after the current response.
    pub(super) keep: bool,
    /// What was read of the next request: its head, or while a response streams, what the
    /// client sent meanwhile (see [`poll_client`]).
    pub(super) buf: BytesMut,
    pub(super) service: S,
    pub(super) peer: SocketAddr,
    pub(super) shutdown: Option<Shutdown>,
    pub(super) header_read_timeout: Duration,
    /// How many requests this path answered (after one, an HTTP/2 preface closes the
    /// connection instead of going to hyper).
    pub(super) served: usize,
    /// Takes a request that is hyper's: the bytes read of it so far, the connection and the
    /// service. What it holds for that (hyper's builder, the graceful-shutdown watcher) is
    /// dropped with the connection otherwise. Boxed, so that the connection's future, polled
    /// once per event, is small (`BENCHMARKS.md`, session 11).
    pub(super) hyper: Box<dyn FnOnce(Bytes, WriteTimeout<TcpStream>, S) + Send>,
}

/// What the `async` part of a connection hands to its streaming part: the connection, and
/// the body of the response whose head it wrote. `None`: the connection is done.
type Handoff<S, B> = Option<(Lean<S>, B)>;

/// The `async` part of a connection, while it runs.
type Between<S, B> = Pin<Box<dyn Future<Output = Handoff<S, B>> + Send>>;

pin_project! {
    /// A lean connection's future.
    ///
    /// Why two parts: streaming a response is one plain poll per event, of the body and the
    /// socket, so its state is plain fields here, the body first and the connection's hot
    /// fields right after (`repr(C)`), polled by [`Connection::poll`] without going through
    /// any `async` code. Reading requests, calling the service, writing heads and ending
    /// responses is `async` code ([`Lean::until_body`], [`Lean::finish`]), which owns the
    /// connection while it runs, boxed in `between`, and hands it back with the next body to
    /// stream. Until session 11 all of it was one `async fn`: each event then went through
    /// its nested states and the closure that polled the body, about ten cache lines of
    /// the future's 1.4 KiB, each cold by the time the next event comes (`BENCHMARKS.md`,
    /// session 12). Aligned to a cache line (the driver boxes it), so that the hot fields
    /// take two lines, not three at an allocator's 16-byte alignment.
    #[repr(C, align(64))]
    pub(super) struct Connection<S, B> {
        // First: dropped first, so a subscription is given back before the socket closes.
        #[pin]
        body: Option<B>,
        lean: Option<Lean<S>>,
        between: Option<Between<S, B>>,
    }
}

impl<S, B> Connection<S, B>
where
    S: Service<Request<RequestBody>, Response = Response<B>, Error = Infallible> + Send + 'static,
    S::Future: Send,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    /// Serves `lean` until the connection closes, or until a request is hyper's.
    pub(super) fn new(lean: Lean<S>) -> Self {
        Self {
            body: None,
            lean: None,
            between: Some(Box::pin(lean.until_body())),
        }
    }
}

impl<S, B> Future for Connection<S, B>
where
    S: Service<Request<RequestBody>, Response = Response<B>, Error = Infallible> + Send + 'static,
    S::Future: Send,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        loop {
            // Streaming (the common case, once per event) is told by the body's slot and the
            // connection's first line; the `async` part's slot is only read when neither is set.
            let (Some(mut body), Some(lean)) =
                (this.body.as_mut().as_pin_mut(), this.lean.as_mut())
            else {
                let Some(between) = this.between.as_mut() else {
                    return Poll::Ready(());
                };
                let Some((lean, body)) = ready!(between.as_mut().poll(cx)) else {
                    *this.between = None;
                    return Poll::Ready(());
                };
                *this.between = None;
                *this.lean = Some(lean);
                this.body.set(Some(body));
                continue;
            };
            let step = match &mut lean.rest {
                Some(rest) => {
                    let chunked = lean.stream.chunked();
                    let data = &rest.data[..rest.take];
                    let written = ready!(poll_rest(
                        &mut lean.io,
                        chunked,
                        data,
                        &mut rest.written,
                        cx
                    ));
                    let Some(rest) = lean.rest.take() else {
                        unreachable!("a rest was written")
                    };
                    let Rest {
                        data,
                        take,
                        turn_over,
                        ..
                    } = *rest;
                    match lean
                        .stream
                        .written(data.len(), take, written, body.as_mut())
                    {
                        Some(step) => step,
                        None if turn_over => Step::Yield,
                        None => continue,
                    }
                }
                None => {
                    let client = Client {
                        max_head: &lean.max_head,
                        watch: &mut lean.read_watch,
                    };
                    ready!(lean.stream.poll(
                        cx,
                        body,
                        &mut lean.io,
                        client,
                        &mut lean.buf,
                        &mut lean.read_closed,
                    ))
                }
            };
            match step {
                Step::Finished => {
                    // The body goes first (a subscription is given back), then the response
                    // ends and the next request is read.
                    this.body.set(None);
                    let Some(lean) = this.lean.take() else {
                        unreachable!("streaming")
                    };
                    *this.between = Some(Box::pin(async move {
                        match lean.finish().await {
                            Some(lean) => lean.until_body().await,
                            None => None,
                        }
                    }));
                }
                Step::Close => return Poll::Ready(()),
                Step::Yield => {
                    // The other connections of the driver have their turn first.
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Step::Rest(rest) => lean.rest = Some(Box::new(rest)),
            }
        }
    }
}

impl<S, B> Lean<S>
where
    S: Service<Request<RequestBody>, Response = Response<B>, Error = Infallible>,
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    /// Serves requests until one has a body to stream (whose head is written), or until the
    /// connection closes or a request is hyper's (handed to [`hyper`](Self::hyper)).
    async fn until_body(mut self) -> Handoff<S, B> {
        loop {
            // Pipelined requests already read are answered one after another within one poll
            // (nothing here waits on the socket while the client keeps it fed, and the driver
            // polls connections outside tokio's budget): after every `FRAMES_PER_TURN`
            // responses the other connections of the driver have their turn.
            if self.served != 0 && self.served % FRAMES_PER_TURN as usize == 0 {
                tokio::task::yield_now().await;
            }
            let deadline = crate::time::later(Instant::now(), self.header_read_timeout);
            let (request, close) = loop {
                let parsed = match self.lean {
                    true => head::parse(&self.buf, self.max_head),
                    false if self.buf.is_empty() => Head::Partial,
                    false => Head::Hyper,
                };
                match parsed {
                    Head::Partial => {}
                    // After HTTP/1.1 requests, an HTTP/2 preface is not a protocol switch:
                    // hyper's HTTP/1.1 would refuse it, its version detection would not.
                    Head::Hyper if self.served > 0 && self.buf.starts_with(b"PRI * HTTP/2.0") => {
                        return None;
                    }
                    Head::Hyper => {
                        let buf = std::mem::take(&mut self.buf).freeze();
                        (self.hyper)(buf, self.io, self.service);
                        return None;
                    }
                    Head::Lean {
                        request,
                        len,
                        close,
                    } => {
                        self.buf.advance(len);
                        break (request, close);
                    }
                }
                if !self.read_more(deadline).await {
                    return None;
                }
            };
            if self.buf.is_empty() {
                // An idle connection keeps no buffer.
                self.buf = BytesMut::new();
            }
            // Boxed: a future's arguments keep their room in it for its whole life, and the
            // request head is only read before the response starts.
            match self.respond(Box::new(request), close).await {
                Responded::Body(body) => return Some((self, body)),
                Responded::Done(keep) => {
                    if !self.next(keep) {
                        return None;
                    }
                }
            }
        }
    }

    /// Counts a response answered; whether the connection takes another request.
    fn next(&mut self, keep: bool) -> bool {
        self.served += 1;
        keep && !self.shutdown.as_ref().is_some_and(Shutdown::is_triggered)
    }

    /// Ends the response that streamed (its body is done); the connection, when it takes
    /// another request.
    async fn finish(mut self) -> Option<Self> {
        let keep = match self.stream.framing {
            Framing::Chunked => self.io.write_all(b"0\r\n\r\n").await.is_ok() && self.keep,
            Framing::Length(length) => {
                if self.stream.sent != length {
                    tracing::debug!("response body shorter than its content-length");
                }
                self.stream.sent == length && self.keep
            }
            Framing::None => self.keep,
        };
        self.next(keep).then_some(self)
    }

    /// Reads more of a request head into `buf`; false when the connection is to close: EOF,
    /// an error, the header-read deadline, or a shutdown.
    async fn read_more(&mut self, deadline: Instant) -> bool {
        if self.read_closed {
            return false;
        }
        let buf = &mut self.buf;
        let room = self.max_head - buf.len();
        buf.reserve(room.clamp(1, 1024));
        let stop = async {
            match &self.shutdown {
                Some(shutdown) => shutdown.triggered().await,
                None => std::future::pending().await,
            }
        };
        // Never past the limit, whatever the buffer's capacity.
        let mut limited = buf.limit(room);
        tokio::select! {
            read = tokio::time::timeout_at(deadline, self.io.read_buf(&mut limited)) => {
                matches!(read, Ok(Ok(n)) if n > 0)
            }
            () = stop => false,
        }
    }

    /// Answers one request up to its head: the body to stream, or, when there is none to
    /// stream or the answer failed, whether the connection can take another request.
    async fn respond(&mut self, request: Box<Request<()>>, close: bool) -> Responded<B> {
        // The socket was read without the flag since the last response (the request head):
        // tokio's read registration is not the flag's any more.
        self.read_watch.disarm();
        let mut request = (*request).map(|()| RequestBody::empty());
        insert_peer(&mut request, self.peer);
        let service = &mut self.service;
        // Boxed: the service's future is not kept in every connection's task while it streams.
        let mut call = Box::pin(async move {
            let Ok(()) = poll_fn(|cx| service.poll_ready(cx)).await;
            service.call(request).await
        });
        // While the service works, the client may leave: then its future is dropped (as hyper
        // does), not run to its end for nobody.
        let (closed, watch, pending) = (&mut self.read_closed, &mut self.read_watch, &mut self.buf);
        let (tcp, max_head) = (self.io.get_ref(), self.max_head);
        let called = poll_fn(|cx| match call.as_mut().poll(cx) {
            Poll::Ready(Ok(response)) => Poll::Ready(Some(response)),
            Poll::Pending => {
                let client = Client {
                    max_head: &max_head,
                    watch: &mut *watch,
                };
                poll_client(tcp, client, pending, closed).map(|()| None)
            }
        })
        .await;
        drop(call);
        let Some(response) = called else {
            return Responded::Done(false);
        };
        let (mut parts, body) = response.into_parts();
        let (head, framing, keep) = response::head(&mut parts, &body.size_hint(), close);
        drop(parts);
        if let Err(err) = self.io.write_all(&head).await {
            tracing::debug!(error = %err, "writing a response head failed");
            return Responded::Done(false);
        }
        drop(head);
        if framing == Framing::None {
            return Responded::Done(keep);
        }
        self.stream = Streaming {
            framing,
            sent: 0,
            frames: 0,
        };
        self.keep = keep;
        Responded::Body(body)
    }
}

/// What [`Lean::respond`] did.
enum Responded<B> {
    /// The head is written; the body is to stream.
    Body(B),
    /// Answered (no body to stream), or failed: whether the connection takes another request.
    Done(bool),
}

/// A response body being streamed: what the loop keeps from one event to the next.
///
/// Why a plain struct polled by a plain function: a frame that the socket takes at once (the
/// common case) is taken from the body, written and counted in [`Streaming::poll`], with its
/// buffers on the stack; only a write that has to wait comes back to the connection's
/// `async` code ([`Step::Rest`]). An event then touches this struct and the one closure
/// that polls it, not the locals of an `async` loop spread over the connection future's
/// memory, which is cold by the time the next event comes (`BENCHMARKS.md`, session 11).
pub(super) struct Streaming {
    framing: Framing,
    /// Bytes of the body sent (for `Content-Length`).
    sent: u64,
    /// Frames taken from the body, empty ones and trailers too (for [`FRAMES_PER_TURN`]).
    frames: u32,
}

/// What [`Streaming::poll`] leaves to the response loop.
enum Step {
    /// The body ended, or its `Content-Length` is complete: the response is done.
    Finished,
    /// The connection is to close: the body failed or was longer than its length, a write
    /// failed, or the client went away.
    Close,
    /// [`FRAMES_PER_TURN`] frames since the last turn: yield, then go on.
    Yield,
    /// A frame the socket did not take at once: the rest is to be written.
    Rest(Rest),
}

/// A frame the socket did not take at once: `data[..take]` from byte `written` on (of its
/// chunk) is to be written; then the turn is over if `turn_over`.
pub(super) struct Rest {
    data: Bytes,
    take: usize,
    written: usize,
    turn_over: bool,
}

impl Streaming {
    /// No response yet.
    pub(super) fn new() -> Self {
        Self {
            framing: Framing::None,
            sent: 0,
            frames: 0,
        }
    }

    /// The frame's chunk framing: `Some` for chunked.
    fn chunked(&self) -> Option<()> {
        matches!(self.framing, Framing::Chunked).then_some(())
    }

    /// Takes frames from the body and writes them while the socket takes them at once;
    /// `Pending` when the body has nothing (the read side is then watched, see
    /// [`poll_client`]).
    ///
    /// The body first: while it has frames, the read side waits (a client that left shows up
    /// as a failed write; one that sends more is not read meanwhile). Only a body with nothing
    /// to send watches the read side, once per wait.
    fn poll<B>(
        &mut self,
        cx: &mut Context<'_>,
        mut body: Pin<&mut B>,
        io: &mut WriteTimeout<TcpStream>,
        client: Client<'_>,
        pending: &mut BytesMut,
        closed: &mut bool,
    ) -> Poll<Step>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        loop {
            let frame = match body.as_mut().poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => frame,
                Poll::Ready(Some(Err(err))) => {
                    let err: BoxError = err.into();
                    tracing::debug!(error = %err, "response body failed; closing the connection");
                    return Poll::Ready(Step::Close);
                }
                Poll::Ready(None) => return Poll::Ready(Step::Finished),
                Poll::Pending => {
                    return poll_client(io.get_ref(), client, pending, closed)
                        .map(|()| Step::Close);
                }
            };
            // Every frame counts, empty ones and trailers too (a body always ready with empty
            // frames writes nothing and must yield all the same). Connections are polled
            // outside tokio's co-operative budget (see `driver.rs`): a body that always has a
            // frame and a client that always takes it give the other connections their turn
            // after this many.
            self.frames = self.frames.wrapping_add(1);
            let turn_over = self.frames % FRAMES_PER_TURN == 0;
            // Trailers and empty frames are counted, not written (no `let` chain: MSRV 1.85).
            let data = frame.into_data().ok().filter(|data| data.has_remaining());
            if let Some(data) = data {
                let take = match self.framing {
                    Framing::Length(length) => {
                        let room = usize::try_from(length - self.sent).unwrap_or(usize::MAX);
                        data.remaining().min(room)
                    }
                    Framing::Chunked => data.remaining(),
                    Framing::None => unreachable!("not polled"),
                };
                // The frame's first write is tried here: its buffers stay on the stack.
                let written = match write_now(io, self.chunked(), &data.chunk()[..take]) {
                    Ok((written, total)) if written < total => {
                        return Poll::Ready(Step::Rest(Rest {
                            data,
                            take,
                            written,
                            turn_over,
                        }));
                    }
                    done => done.map(drop),
                };
                if let Some(step) = self.written(data.remaining(), take, written, body.as_mut()) {
                    return Poll::Ready(step);
                }
            }
            if turn_over {
                return Poll::Ready(Step::Yield);
            }
        }
    }

    /// After a frame of `len` bytes was written (`take` of them, for `Content-Length`): the
    /// response's end, or the connection's, if either came.
    fn written<B: Body>(
        &mut self,
        len: usize,
        take: usize,
        written: io::Result<()>,
        body: Pin<&mut B>,
    ) -> Option<Step> {
        if let Framing::Length(length) = self.framing {
            let room = length - self.sent;
            self.sent += take as u64;
            if len as u64 > room {
                tracing::debug!("response body longer than its content-length");
                return Some(Step::Close);
            }
            if written.is_ok() && self.sent == length {
                // All of it: the response is complete, whether or not the body says it
                // ended (as hyper does); it is not polled again.
                return Some(Step::Finished);
            }
        }
        if let Err(err) = written {
            tracing::debug!(error = %err, "writing to the client failed");
            return Some(Step::Close);
        }
        body.is_end_stream().then_some(Step::Finished)
    }
}

/// Reads what the client sends while a response is under way: the start of its next
/// request, kept in `pending`, up to that request's complete head and never past `max_head`,
/// as hyper does (what follows may be that request's body, not ours to read; a head that is
/// too large or not a request is hyper's to answer, `431` or `400`, after the current
/// response), and registers for more. `Ready` when the connection is to close: the client
/// reset it, or closed its side with no request of it waiting (it left). A client that
/// closed its side after sending requests has them answered first (`closed`).
///
/// The read side is polled through `watch`: after a wait that registered for readiness, it is
/// not asked again (tokio's registration stays) until readiness wakes the flag.
fn poll_client(
    tcp: &TcpStream,
    client: Client<'_>,
    pending: &mut BytesMut,
    closed: &mut bool,
) -> Poll<()> {
    let Client { max_head, watch } = client;
    // Quiet first: it reads the connection's waker, which every event touches anyway; the
    // rest only when the read side has news.
    if watch.is_quiet() {
        return Poll::Pending;
    }
    let max_head = *max_head;
    if *closed || pending.len() >= max_head || head::scan(pending) != Scan::Partial {
        return Poll::Pending;
    }
    watch.poll(|cx| {
        while let Poll::Ready(ready) = tcp.poll_read_ready(cx) {
            if ready.is_err() {
                return (Poll::Ready(()), false);
            }
            let mut scratch = [0u8; 1024];
            let room = (max_head - pending.len()).min(scratch.len());
            match tcp.try_read(&mut scratch[..room]) {
                Ok(0) if pending.is_empty() => return (Poll::Ready(()), false),
                Ok(0) => {
                    *closed = true;
                    return (Poll::Pending, false);
                }
                Ok(n) => {
                    pending.extend_from_slice(&scratch[..n]);
                    if pending.len() >= max_head || head::scan(pending) != Scan::Partial {
                        return (Poll::Pending, false);
                    }
                }
                // Readiness was stale; the next poll registers for it again.
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return (Poll::Ready(()), false),
            }
        }
        (Poll::Pending, true)
    })
}

/// The client's side of the connection, as [`poll_client`] watches it.
struct Client<'a> {
    /// A reference, read only when the read side has news: on the connection's third cache
    /// line, a miss per event when it was copied out up front (`BENCHMARKS.md`, session 13).
    max_head: &'a usize,
    watch: &'a mut Flagged,
}
