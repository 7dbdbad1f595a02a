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
    future::{Future as _, poll_fn},
    io::{self, IoSlice},
    net::SocketAddr,
    pin::{Pin, pin},
    task::{Context, Poll},
    time::Duration,
};

use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use http::{Request, Response};
use http_body::Body;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    time::Instant,
};
use tower_service::Service;

use super::{
    body::RequestBody,
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
/// `repr(C)`, with what a streaming response reads on every event first (the socket, the
/// read side, the head limit and the read side's end): those fields then share the first two
/// cache lines of the connection's future, which is cold by the time the next event comes
/// (`BENCHMARKS.md`, session 11).
#[repr(C)]
pub(super) struct Lean<S> {
    pub(super) io: WriteTimeout<TcpStream>,
    /// The read side's wake-ups (see [`poll_client`]).
    pub(super) read_watch: Flagged,
    pub(super) max_head: usize,
    /// The client closed its side (EOF) while requests it had sent were still to be answered:
    /// they are, then the connection closes.
    pub(super) read_closed: bool,
    /// `false`: every request is hyper's (`Serve::lean_event_streams(false)`); this path
    /// then only waits for the first bytes, under the header-read timeout.
    pub(super) lean: bool,
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

impl<S, B> Lean<S>
where
    S: Service<Request<RequestBody>, Response = Response<B>, Error = Infallible>,
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    /// Serves requests until the connection closes, or until one is hyper's (handed to
    /// [`hyper`](Self::hyper)).
    pub(super) async fn run(mut self) {
        let mut buf = BytesMut::new();
        loop {
            let deadline = crate::time::later(Instant::now(), self.header_read_timeout);
            let (request, close) = loop {
                let parsed = match self.lean {
                    true => head::parse(&buf, self.max_head),
                    false if buf.is_empty() => Head::Partial,
                    false => Head::Hyper,
                };
                match parsed {
                    Head::Partial => {}
                    // After HTTP/1.1 requests, an HTTP/2 preface is not a protocol switch:
                    // hyper's HTTP/1.1 would refuse it, its version detection would not.
                    Head::Hyper if self.served > 0 && buf.starts_with(b"PRI * HTTP/2.0") => {
                        return;
                    }
                    Head::Hyper => return (self.hyper)(buf.freeze(), self.io, self.service),
                    Head::Lean {
                        request,
                        len,
                        close,
                    } => {
                        buf.advance(len);
                        break (request, close);
                    }
                }
                if !self.read_more(&mut buf, deadline).await {
                    return;
                }
            };
            if buf.is_empty() {
                // An idle connection keeps no buffer.
                buf = BytesMut::new();
            }
            // Boxed: a future's arguments keep their room in it for its whole life, and the
            // request head is only read before the response starts.
            let keep = self.respond(Box::new(request), close, &mut buf).await;
            self.served += 1;
            if !keep || self.shutdown.as_ref().is_some_and(Shutdown::is_triggered) {
                return;
            }
        }
    }

    /// Reads more of a request head into `buf`; false when the connection is to close: EOF,
    /// an error, the header-read deadline, or a shutdown.
    async fn read_more(&mut self, buf: &mut BytesMut, deadline: Instant) -> bool {
        if self.read_closed {
            return false;
        }
        let room = self.max_head - buf.len();
        buf.reserve(room.clamp(1, 1024));
        let stop = async {
            match &self.shutdown {
                Some(shutdown) => shutdown.triggered().await,
                None => std::future::pending().await,
            }
        };
        // Never past the limit, whatever the buffer's capacity.
        let mut limited = (&mut *buf).limit(room);
        tokio::select! {
            read = tokio::time::timeout_at(deadline, self.io.read_buf(&mut limited)) => {
                matches!(read, Ok(Ok(n)) if n > 0)
            }
            () = stop => false,
        }
    }

    /// Answers one request; whether the connection can take another.
    async fn respond(
        &mut self,
        request: Box<Request<()>>,
        close: bool,
        pending: &mut BytesMut,
    ) -> bool {
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
        let (closed, watch) = (&mut self.read_closed, &mut self.read_watch);
        let (tcp, max_head) = (self.io.get_ref(), self.max_head);
        let called = poll_fn(|cx| match call.as_mut().poll(cx) {
            Poll::Ready(Ok(response)) => Poll::Ready(Some(response)),
            Poll::Pending => {
                let client = Client {
                    max_head,
                    watch: &mut *watch,
                };
                poll_client(tcp, client, pending, closed).map(|()| None)
            }
        })
        .await;
        drop(call);
        let Some(response) = called else {
            return false;
        };
        let (mut parts, body) = response.into_parts();
        let (head, framing, keep) = response::head(&mut parts, &body.size_hint(), close);
        drop(parts);
        if let Err(err) = self.io.write_all(&head).await {
            tracing::debug!(error = %err, "writing a response head failed");
            return false;
        }
        drop(head);
        if framing == Framing::None {
            return keep;
        }
        let mut body = pin!(body);
        let mut stream = Streaming {
            framing,
            sent: 0,
            frames: 0,
        };
        loop {
            let (closed, watch) = (&mut self.read_closed, &mut self.read_watch);
            let (io, max_head) = (&mut self.io, self.max_head);
            let step = poll_fn(|cx| {
                let client = Client {
                    max_head,
                    watch: &mut *watch,
                };
                stream.poll(cx, body.as_mut(), &mut *io, client, pending, closed)
            })
            .await;
            match step {
                Step::Finished => break,
                Step::Close => return false,
                Step::Yield => tokio::task::yield_now().await,
                Step::Rest {
                    data,
                    take,
                    written,
                    turn_over,
                } => {
                    let frame = &data.chunk()[..take];
                    let rest = write_rest(&mut self.io, stream.chunked(), frame, written).await;
                    match stream.written(data.remaining(), take, rest, body.as_mut()) {
                        Some(Step::Finished) => break,
                        Some(_) => return false,
                        None if turn_over => tokio::task::yield_now().await,
                        None => {}
                    }
                }
            }
        }
        match framing {
            Framing::Chunked => self.io.write_all(b"0\r\n\r\n").await.is_ok() && keep,
            Framing::Length(length) => {
                if stream.sent != length {
                    tracing::debug!("response body shorter than its content-length");
                }
                stream.sent == length && keep
            }
            Framing::None => keep,
        }
    }
}

/// A response body being streamed: what the loop keeps from one event to the next.
///
/// Why a plain struct polled by a plain function: a frame that the socket takes at once (the
/// common case) is taken from the body, written and counted in [`Streaming::poll`], with its
/// buffers on the stack; only a write that has to wait comes back to the connection's
/// `async` code ([`Step::Rest`]). An event then touches this struct and the one closure
/// that polls it, not the locals of an `async` loop spread over the connection future's
/// memory, which is cold by the time the next event comes (`BENCHMARKS.md`, session 11).
struct Streaming {
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
    /// A frame the socket did not take at once: `data[..take]` from byte `written` on (of its
    /// chunk) is to be written; then the turn is over if `turn_over`.
    Rest {
        data: Bytes,
        take: usize,
        written: usize,
        turn_over: bool,
    },
}

impl Streaming {
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
                        return Poll::Ready(Step::Rest {
                            data,
                            take,
                            written,
                            turn_over,
                        });
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
    if *closed || pending.len() >= max_head || head::scan(pending) != Scan::Partial {
        return Poll::Pending;
    }
    if watch.is_quiet() {
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
    max_head: usize,
    watch: &'a mut Flagged,
}

/// The frame's slices: the size line (in `line`) when `chunked`, the data, the CRLF.
fn frame_slices<'a>(
    chunked: Option<()>,
    data: &'a [u8],
    line: &'a mut [u8; 18],
) -> ([IoSlice<'a>; 3], usize) {
    let n = match chunked {
        Some(()) => response::chunk_size_line(data.len(), line),
        None => 0,
    };
    let crlf: &[u8] = if chunked.is_some() { b"\r\n" } else { b"" };
    let slices = [
        IoSlice::new(&line[..n]),
        IoSlice::new(data),
        IoSlice::new(crlf),
    ];
    (slices, n + data.len() + crlf.len())
}

/// Chunks of up to this many data bytes are written from one buffer on the stack (size line,
/// data, CRLF copied together) with one `write`, not a three-part `writev`.
///
/// Why: on Linux a single-buffer write takes the kernel's one-segment path; with `writev` it
/// imports and walks an iovec array. On this machine's loopback that is about 0.1 µs per
/// write (of about 2), for a copy of a few hundred bytes from memory the other subscribers of
/// the event have just read (`BENCHMARKS.md`, session 11). Larger chunks keep the `writev`,
/// where the copy would cost more than it saves.
const COPY_MAX: usize = 1024;

/// One try at writing a frame (`data`, as one chunk with `chunked`: size line, data, CRLF),
/// without waiting: (bytes written, bytes in the frame); [`write_rest`] writes the rest.
///
/// The write is tried straight away (`try_write`: the socket's readiness is read, not
/// registered for, and no co-operative budget is spent); only what it could not write goes
/// through the timed, registered write. Per event this is about 100 instructions less than a
/// poll of the write (`BENCHMARKS.md`). It is a plain function, called without an `await`, so
/// its buffers live on the stack: the common case writes nothing into the connection future's
/// memory, which is cold by the time the next event comes (`BENCHMARKS.md`, session 10).
fn write_now(
    io: &mut WriteTimeout<TcpStream>,
    chunked: Option<()>,
    data: &[u8],
) -> io::Result<(usize, usize)> {
    let tcp = io.get_ref();
    let (tried, total) = match chunked {
        None if data.is_empty() => return Ok((0, 0)),
        None => (tcp.try_write(data), data.len()),
        // Two sizes of buffer: most events are small, and the buffer is zeroed first.
        Some(()) if data.len() <= 248 => write_copied::<256>(tcp, data),
        Some(()) if data.len() <= COPY_MAX => write_copied::<{ COPY_MAX + 8 }>(tcp, data),
        Some(()) => {
            let mut line = [0; 18];
            let (slices, total) = frame_slices(chunked, data, &mut line);
            (tcp.try_write_vectored(&slices), total)
        }
    };
    match tried {
        Ok(0) => Err(io::ErrorKind::WriteZero.into()),
        Ok(n) => {
            io.progressed();
            Ok((n, total))
        }
        Err(err) if err.kind() == io::ErrorKind::WouldBlock => Ok((0, total)),
        Err(err) => Err(err),
    }
}

/// [`write_now`]'s try for a chunk of at most `N - 8` bytes of `data`: size line, data and
/// CRLF copied into an `N`-byte buffer on the stack, written with one `write`; what it wrote,
/// and the chunk's length.
#[inline]
fn write_copied<const N: usize>(tcp: &TcpStream, data: &[u8]) -> (io::Result<usize>, usize) {
    let mut frame = [0; N];
    let mut line = [0; 18];
    // The same parts as the `writev` and `write_rest` send (`frame_slices`), one after another.
    let (slices, total) = frame_slices(Some(()), data, &mut line);
    let mut at = 0;
    for slice in &slices {
        frame[at..at + slice.len()].copy_from_slice(slice);
        at += slice.len();
    }
    (tcp.try_write(&frame[..total]), total)
}

/// The rest of the frame after its first `skip` bytes, through the timed, registered write.
async fn write_rest(
    io: &mut WriteTimeout<TcpStream>,
    chunked: Option<()>,
    data: &[u8],
    skip: usize,
) -> io::Result<()> {
    let mut line = [0; 18];
    let (mut slices, _) = frame_slices(chunked, data, &mut line);
    let mut bufs = &mut slices[..];
    IoSlice::advance_slices(&mut bufs, skip);
    while !bufs.is_empty() {
        let n = io.write_vectored(bufs).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut bufs, n);
    }
    Ok(())
}
