//! A write-stall timeout for connections, so a client that stops reading is disconnected.
//!
//! A server cannot tell from inside a response body that its client stopped reading: once the
//! socket's send buffer is full, hyper simply stops polling the body. The connection (and the
//! subscription behind it) would stay open for as long as the client keeps the TCP connection.
//! [`WriteTimeout`] wraps the connection's IO: when a write or flush makes no progress for the
//! configured time, it fails with [`io::ErrorKind::TimedOut`], hyper closes the connection,
//! the body and its event stream are dropped, and everything the client held is released.
//!
//! An idle connection is never affected: the clock only runs while a write is waiting.
//!
//! With axum, wrap the listener ([`WriteTimeoutListener`], feature `axum`); with hyper, wrap
//! each accepted stream before `TokioIo::new`.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use tower_sse::io::WriteTimeoutListener;
//!
//! # async fn run(app: axum::Router) -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! let listener = WriteTimeoutListener::new(listener, Duration::from_secs(30));
//! axum::serve(listener, app).await
//! # }
//! ```

use std::{
    fmt,
    future::Future as _,
    io,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::{Instant, Sleep, sleep},
};

/// IO whose writes fail with [`io::ErrorKind::TimedOut`] after making no progress for a while.
///
/// ```
/// use std::time::Duration;
/// use tokio::io::AsyncWriteExt;
/// use tower_sse::io::WriteTimeout;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// // A pipe whose reader never reads: 16 bytes of buffer, then writes wait forever.
/// let (writer, _reader) = tokio::io::duplex(16);
/// let mut writer = WriteTimeout::new(writer, Duration::from_secs(5));
/// writer.write_all(&[0; 16]).await.unwrap();
/// let err = writer.write_all(&[0; 16]).await.unwrap_err();
/// assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
/// # }
/// ```
// `repr(C)`, the wrapped IO first: the lean path reads the socket's descriptor on every
// event, and this keeps it within the first cache lines of the connection (`serve/lean.rs`).
#[repr(C)]
pub struct WriteTimeout<T> {
    inner: T,
    timeout: Duration,
    /// Runs while a write waits; boxed once per connection (kept and reset), so the wrapper
    /// stays `Unpin` for listeners that need it.
    stall: Option<Pin<Box<Sleep>>>,
    stalled: bool,
}

impl<T> WriteTimeout<T> {
    /// Wraps `inner`: a write or flush that makes no progress for `timeout` fails.
    ///
    /// ```
    /// let io = tower_sse::io::WriteTimeout::new(tokio::io::empty(), std::time::Duration::from_secs(1));
    /// # let _ = io;
    /// ```
    pub fn new(inner: T, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            stall: None,
            stalled: false,
        }
    }

    /// The wrapped IO.
    ///
    /// ```
    /// let io = tower_sse::io::WriteTimeout::new(tokio::io::empty(), std::time::Duration::from_secs(1));
    /// let _inner = io.get_ref();
    /// ```
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// The wrapped IO, by value.
    ///
    /// ```
    /// let io = tower_sse::io::WriteTimeout::new(tokio::io::empty(), std::time::Duration::from_secs(1));
    /// let _inner = io.into_inner();
    /// ```
    pub fn into_inner(self) -> T {
        self.inner
    }

    /// Called when the inner write is pending: starts the clock, or fails once it ran out.
    fn pending<R>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<R>> {
        let deadline = crate::time::later(Instant::now(), self.timeout);
        let stall = self
            .stall
            .get_or_insert_with(|| Box::pin(sleep(self.timeout)));
        if !self.stalled {
            self.stalled = true;
            stall.as_mut().reset(deadline);
        }
        match stall.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("write made no progress for {:?}", self.timeout),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn progress<R>(
        &mut self,
        result: Poll<io::Result<R>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<R>> {
        match result {
            Poll::Pending => self.pending(cx),
            ready => {
                self.stalled = false;
                ready
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteTimeout<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteTimeout<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.progress(result, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.progress(result, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_flush(cx);
        this.progress(result, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.progress(result, cx)
    }
}

impl<T: fmt::Debug> fmt::Debug for WriteTimeout<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteTimeout")
            .field("inner", &self.inner)
            .field("timeout", &self.timeout)
            .field("stalled", &self.stalled)
            .finish()
    }
}

#[cfg(feature = "axum")]
pub use self::listener::WriteTimeoutListener;

#[cfg(feature = "axum")]
mod listener {
    use std::time::Duration;

    use super::WriteTimeout;

    /// An `axum::serve` listener whose connections get a [`WriteTimeout`] (feature `axum`).
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    /// let listener = tower_sse::io::WriteTimeoutListener::new(listener, Duration::from_secs(30));
    /// # let _ = listener;
    /// # }
    /// ```
    #[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
    #[derive(Debug)]
    pub struct WriteTimeoutListener<L> {
        inner: L,
        timeout: Duration,
    }

    impl<L> WriteTimeoutListener<L> {
        /// Wraps `inner`; every accepted connection gets a write-stall timeout of `timeout`.
        pub fn new(inner: L, timeout: Duration) -> Self {
            Self { inner, timeout }
        }
    }

    impl<L: axum::serve::Listener> axum::serve::Listener for WriteTimeoutListener<L> {
        type Io = WriteTimeout<L::Io>;
        type Addr = L::Addr;

        async fn accept(&mut self) -> (Self::Io, Self::Addr) {
            let (io, addr) = self.inner.accept().await;
            (WriteTimeout::new(io, self.timeout), addr)
        }

        fn local_addr(&self) -> std::io::Result<Self::Addr> {
            self.inner.local_addr()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures_util::FutureExt;
    use tokio::io::AsyncWriteExt;

    use super::*;

    /// A writer whose reader never reads: every write after the first few bytes waits.
    fn stalled() -> (tokio::io::DuplexStream, tokio::io::DuplexStream) {
        tokio::io::duplex(8)
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_write_times_out() {
        let (writer, _reader) = stalled();
        let mut writer = WriteTimeout::new(writer, Duration::from_secs(5));
        let err = writer.write_all(&[0; 64]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    /// `Duration::MAX` means "practically never" and must not panic when the clock starts (it
    /// did: `Instant::now() + Duration::MAX` overflows).
    #[tokio::test(start_paused = true)]
    async fn a_huge_timeout_does_not_panic() {
        let (writer, _reader) = stalled();
        let mut writer = WriteTimeout::new(writer, Duration::MAX);
        let mut write = Box::pin(writer.write_all(&[0; 64]));
        assert!((&mut write).now_or_never().is_none());
        tokio::time::advance(Duration::from_secs(86_400 * 365)).await;
        assert!(write.now_or_never().is_none(), "still waiting after a year");
    }
}
