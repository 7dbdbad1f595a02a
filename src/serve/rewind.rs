//! [`Rewind`]: a connection with the bytes already read from it put back in front.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use std::sync::Arc;

use bytes::{Buf as _, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::activity::Activity;

/// Reads `prefix` first, then from `inner`; writes go to `inner`. How a connection whose start
/// the lean path read is handed to hyper, which then parses it from its first byte. Every
/// read or write that moves bytes is noted in `activity` (the idle check, `activity.rs`).
pub(super) struct Rewind<T> {
    prefix: Bytes,
    inner: T,
    activity: Arc<Activity>,
}

impl<T> Rewind<T> {
    pub(super) fn new(prefix: Bytes, inner: T, activity: Arc<Activity>) -> Self {
        Self {
            prefix,
            inner,
            activity,
        }
    }

    fn note(&self, polled: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        self.activity.writing(polled.is_pending());
        if let Poll::Ready(Ok(n)) = polled
            && n > 0
        {
            self.activity.moved();
        }
        polled
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.prefix.is_empty() {
            let before = buf.filled().len();
            let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
            if buf.filled().len() > before {
                self.activity.moved();
            }
            return polled;
        }
        let n = self.prefix.len().min(buf.remaining());
        buf.put_slice(&self.prefix[..n]);
        self.prefix.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.note(polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.note(polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    #[tokio::test]
    async fn the_prefix_is_read_first_in_pieces_then_the_connection() {
        let (near, mut far) = tokio::io::duplex(64);
        let activity = Arc::new(Activity::default());
        let mut io = Rewind::new(Bytes::from_static(b"GET / HT"), near, activity);
        far.write_all(b"TP/1.1\r\n").await.unwrap();
        let mut small = [0u8; 3];
        io.read_exact(&mut small).await.unwrap();
        assert_eq!(&small, b"GET");
        let mut rest = [0u8; 13];
        io.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b" / HTTP/1.1\r\n");
        io.write_all(b"ok").await.unwrap();
        let mut back = [0u8; 2];
        far.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"ok");
    }
}
