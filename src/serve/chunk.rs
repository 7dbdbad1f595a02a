//! One chunk on the wire: a frame's framing (size line, data, CRLF) and its writes, for the
//! lean path (`lean.rs`): the first try straight on the socket, the rest through the timed,
//! registered write.

use std::{
    io::{self, IoSlice},
    pin::Pin,
    task::{Context, Poll, ready},
};

use tokio::{io::AsyncWrite as _, net::TcpStream};

use super::response;
use crate::io::WriteTimeout;

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
/// without waiting: (bytes written, bytes in the frame); [`poll_rest`] writes the rest.
///
/// The write is tried straight away, on the socket itself (on Linux, [`send`]: `send(2)` on
/// the borrowed descriptor, through `socket2`), without asking tokio's readiness first: that readiness lives in
/// a separate allocation per socket, a cache line read on every event only to learn what the
/// `send` tells anyway (`BENCHMARKS.md`, session 12). No co-operative budget is spent. Only
/// what it could not write goes through the timed, registered write ([`poll_rest`]), whose
/// first try, on readiness tokio may still think current, gets `WouldBlock` and clears it
/// before it waits: one `send` more per stall, nothing lost. It is a plain function, called
/// without an `await`, so its buffers live on the stack: the common case writes nothing into
/// the connection future's memory, which is cold by the time the next event comes
/// (`BENCHMARKS.md`, session 10).
pub(super) fn write_now(
    io: &mut WriteTimeout<TcpStream>,
    chunked: Option<()>,
    data: &[u8],
) -> io::Result<(usize, usize)> {
    let tcp = io.get_ref();
    let (tried, total) = match chunked {
        None if data.is_empty() => return Ok((0, 0)),
        None => (send(tcp, data), data.len()),
        // Two sizes of buffer: most events are small, and the buffer is zeroed first.
        Some(()) if data.len() <= 248 => write_copied::<256>(tcp, data),
        Some(()) if data.len() <= COPY_MAX => write_copied::<{ COPY_MAX + 8 }>(tcp, data),
        Some(()) => {
            let mut line = [0; 18];
            let (slices, total) = frame_slices(chunked, data, &mut line);
            (send_vectored(tcp, &slices), total)
        }
    };
    match tried {
        Ok(0) => Err(io::ErrorKind::WriteZero.into()),
        // No stall clock to stop: one runs only while a write through `WriteTimeout` is
        // pending, and this write is tried only when none is (a partial one is finished
        // first, and a failed one closes the connection).
        Ok(n) => Ok((n, total)),
        // Nothing written: the timed, registered write tries again.
        Err(err)
            if matches!(
                err.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) =>
        {
            Ok((0, total))
        }
        Err(err) => Err(err),
    }
}

/// `send(2)` on the socket itself, with `MSG_NOSIGNAL` (a peer that is gone is an `EPIPE`
/// error, never a `SIGPIPE`, as std's own socket writes ask). See [`write_now`].
#[cfg(any(target_os = "linux", target_os = "android"))]
#[inline]
fn send(tcp: &TcpStream, data: &[u8]) -> io::Result<usize> {
    socket2::SockRef::from(tcp).send_with_flags(data, libc::MSG_NOSIGNAL)
}

/// `sendmsg(2)` of `slices`, as [`send`].
#[cfg(any(target_os = "linux", target_os = "android"))]
fn send_vectored(tcp: &TcpStream, slices: &[IoSlice<'_>]) -> io::Result<usize> {
    socket2::SockRef::from(tcp).send_vectored_with_flags(slices, libc::MSG_NOSIGNAL)
}

/// Elsewhere through tokio (which reads the socket's readiness first).
#[cfg(not(any(target_os = "linux", target_os = "android")))]
#[inline]
fn send(tcp: &TcpStream, data: &[u8]) -> io::Result<usize> {
    tcp.try_write(data)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn send_vectored(tcp: &TcpStream, slices: &[IoSlice<'_>]) -> io::Result<usize> {
    tcp.try_write_vectored(slices)
}

/// [`write_now`]'s try for a chunk of at most `N - 8` bytes of `data`: size line, data and
/// CRLF copied into an `N`-byte buffer on the stack, written with one `write`; what it wrote,
/// and the chunk's length.
#[inline]
fn write_copied<const N: usize>(tcp: &TcpStream, data: &[u8]) -> (io::Result<usize>, usize) {
    let mut frame = [0; N];
    let mut line = [0; 18];
    // The same parts as the `writev` and `poll_rest` send (`frame_slices`), one after another.
    let (slices, total) = frame_slices(Some(()), data, &mut line);
    let mut at = 0;
    for slice in &slices {
        frame[at..at + slice.len()].copy_from_slice(slice);
        at += slice.len();
    }
    (send(tcp, &frame[..total]), total)
}

/// Writes the rest of a frame (`data`, as one chunk with `chunked`), from byte `written` of
/// its chunk on, through the timed, registered write; `written` counts what goes out.
pub(super) fn poll_rest(
    io: &mut WriteTimeout<TcpStream>,
    chunked: Option<()>,
    data: &[u8],
    written: &mut usize,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    loop {
        let mut line = [0; 18];
        let (mut slices, total) = frame_slices(chunked, data, &mut line);
        if *written >= total {
            return Poll::Ready(Ok(()));
        }
        let mut bufs = &mut slices[..];
        IoSlice::advance_slices(&mut bufs, *written);
        let n = ready!(Pin::new(&mut *io).poll_write_vectored(cx, bufs))?;
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        *written += n;
    }
}
