//! The recommended way to run an SSE server (feature `server`): [`serve`].
//!
//! `mod.rs` holds the builder and the accept loop; `peer` puts the peer's address into every
//! request. Each connection starts on the lean HTTP/1.1 path (`lean`: `head` reads and routes
//! request heads, `response` writes response heads), which serves event-stream `GET`s itself;
//! anything else is handed to hyper's auto connection (HTTP/1.1 and h2c) with the bytes read
//! so far put back (`rewind`), driven by `activity`, which closes it when it has had nothing
//! to do for a while.

mod activity;
mod body;
mod chunk;
mod driver;
mod flagged;
mod head;
mod lean;
mod peer;
mod response;
mod rewind;

pub use body::RequestBody;

/// (internal, feature `_fuzz`) Runs the request-head router's checks on any bytes, for the
/// `serve_head` fuzz target: never a panic; a head taken for the lean path is a prefix of the
/// bytes, reads the same alone, and carries no body, upgrade or `Expect`.
#[cfg(feature = "_fuzz")]
#[doc(hidden)]
pub fn __fuzz_serve_head(data: &[u8]) {
    head::fuzz(data);
}

use std::{
    convert::Infallible,
    fmt,
    future::{Future, IntoFuture},
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::{
        conn::auto,
        graceful::{GracefulShutdown, Watcher},
    },
    service::{TowerToHyperService, TowerToHyperServiceFuture},
};
use tokio::net::{TcpListener, TcpStream};
use tower_service::Service;

use self::{
    activity::{Activity, Counted, CountedBody},
    driver::Drivers,
    flagged::Flagged,
    lean::{Connection, Lean, Streaming},
    peer::WithPeer,
    rewind::Rewind,
};
use crate::{BoxError, Shutdown, StallExecutor, io::WriteTimeout};

/// Serves `service` on `listener`: HTTP/1.1 and HTTP/2 over cleartext (h2c), one shared
/// service for every connection (no router per connection), with the timeouts a public SSE
/// server needs.
///
/// HTTP/1.1 event-stream requests (`GET` with `Accept: text/event-stream`, as every
/// `EventSource` sends, and no body) are read and answered by a lean writer of this crate
/// instead of a hyper connection: it keeps no buffers while a stream is open (a few KiB per
/// connection instead of hyper's two 8 KiB buffers) and writes each frame as one chunk in one
/// write. Every other request (and every malformed one) goes to hyper, which parses it from its
/// first byte; the service sees the same requests either way, with a [`RequestBody`].
///
/// The timeouts and limits:
///
/// - **header read** ([`header_read_timeout`](Serve::header_read_timeout), default 10 s): a
///   connection that sends no complete request head in time is closed (slowloris: with
///   `axum::serve` a half-sent head held its connection forever); on HTTP/1.1 keep-alive it
///   also bounds the wait for the next request, and a connection handed to hyper with
///   nothing under way for that long (no request or request body, no write waiting: an
///   HTTP/2 connection with no stream open, or one that sent only the preface) is shut down
///   gracefully (`GOAWAY`), and dropped if it still has nothing under way one timeout later;
///   bytes moving alone (PINGs, a CONNECT tunnel) defer that by at most five timeouts (an
///   upgraded HTTP/1.1 connection has left hyper, and this check, at its upgrade);
/// - **write stall** ([`write_timeout`](Serve::write_timeout), default 30 s, see
///   [`io::WriteTimeout`](crate::io::WriteTimeout)): a client that stops reading is dropped;
/// - **stalled HTTP/2 streams**: every stream runs under a [`StallExecutor`], so an event
///   stream whose client grants no flow-control credit is reset after the layer's
///   [`stall_timeout`](crate::SseLayer::stall_timeout) (default 30 s), the connection's other
///   streams going on;
/// - **the peer's address** in every request's extensions, as a [`SocketAddr`](std::net::SocketAddr) (and, with
///   feature `axum`, as axum's `ConnectInfo<SocketAddr>`, so that extractor works without
///   `into_make_service_with_connect_info`):
///   [`SseLayer::max_streams_per_client`](crate::SseLayer::max_streams_per_client) counts
///   streams by it;
/// - **graceful shutdown** ([`shutdown`](Serve::shutdown)): when the [`Shutdown`] triggers,
///   no new connection is taken, and the call returns once every connection has closed (give
///   the [`SseLayer`](crate::SseLayer) the same `Shutdown`, so its streams end), or after the
///   [`grace`](Serve::grace) (default 5 s).
///
/// ```no_run
/// use axum::{Router, routing::get};
/// use tower_sse::{Shutdown, SseLayer};
///
/// # #[tokio::main] async fn main() -> std::io::Result<()> {
/// let shutdown = Shutdown::new();
/// let app = Router::new()
///     .route("/", get(|| async { "hello" }))
///     .layer(SseLayer::new().shutdown(&shutdown));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
/// tower_sse::serve(listener, app).shutdown(&shutdown).await
/// # }
/// ```
pub fn serve<S>(listener: TcpListener, service: S) -> Serve<S> {
    Serve {
        listener,
        service,
        header_read_timeout: Duration::from_secs(10),
        write_timeout: Duration::from_secs(30),
        max_header_bytes: Serve::<S>::DEFAULT_MAX_HEADER_BYTES,
        lean: true,
        shutdown: None,
        grace: Duration::from_secs(5),
    }
}

/// The server [`serve`] makes; configure it, then `.await` it.
#[must_use]
pub struct Serve<S> {
    listener: TcpListener,
    service: S,
    header_read_timeout: Duration,
    write_timeout: Duration,
    max_header_bytes: usize,
    lean: bool,
    shutdown: Option<Shutdown>,
    grace: Duration,
}

impl<S> Serve<S> {
    /// The default [`max_header_bytes`](Self::max_header_bytes): 8 KiB.
    pub const DEFAULT_MAX_HEADER_BYTES: usize = 8 * 1024;

    /// The largest HTTP/1.1 request head (request line and headers) a connection may send,
    /// default [`DEFAULT_MAX_HEADER_BYTES`](Self::DEFAULT_MAX_HEADER_BYTES) (8 KiB, as Node.js
    /// had until v13 and Apache has per field); a larger one is answered
    /// `431 Request Header Fields Too Large`. Values below 8 KiB count as 8 KiB (hyper's
    /// smallest buffer).
    ///
    /// It is also the cap on hyper's read buffer, which is why the default is small: every
    /// idle SSE connection keeps that buffer, and with hyper's own default (about 408 KiB) the
    /// buffer grows to 16 KiB on the first request. Measured with 10,000 idle event streams
    /// (`BENCHMARKS.md`): 12.7 KiB of server memory per connection at 8 KiB, 17.2 KiB at
    /// 16 KiB or more. Raise it if your clients send large cookies or tokens.
    ///
    /// ```
    /// # async fn f(l: tokio::net::TcpListener, app: axum::Router) {
    /// let _ = tower_sse::serve(l, app).max_header_bytes(32 * 1024);
    /// # }
    /// ```
    pub fn max_header_bytes(mut self, bytes: usize) -> Self {
        self.max_header_bytes = bytes.max(8 * 1024);
        self
    }

    /// Whether HTTP/1.1 event-stream requests are served by this crate's lean writer (the
    /// default) or, like every other request, by hyper. The lean writer holds a few KiB per
    /// open stream where hyper holds about 11 KiB, and writes each frame in one write; turn it
    /// off to rule it out when you look into a problem with a client, or to compare.
    ///
    /// ```
    /// # async fn f(l: tokio::net::TcpListener, app: axum::Router) {
    /// let _ = tower_sse::serve(l, app).lean_event_streams(false);
    /// # }
    /// ```
    pub fn lean_event_streams(mut self, lean: bool) -> Self {
        self.lean = lean;
        self
    }

    /// How long a connection may take to send its first request head (and, on HTTP/1.1, each
    /// later one), default 10 s.
    ///
    /// ```
    /// # async fn f(l: tokio::net::TcpListener, app: axum::Router) {
    /// let _ = tower_sse::serve(l, app).header_read_timeout(std::time::Duration::from_secs(5));
    /// # }
    /// ```
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read_timeout = timeout;
        self
    }

    /// How long a write may make no progress before the connection is dropped, default 30 s.
    ///
    /// ```
    /// # async fn f(l: tokio::net::TcpListener, app: axum::Router) {
    /// let _ = tower_sse::serve(l, app).write_timeout(std::time::Duration::from_secs(60));
    /// # }
    /// ```
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = timeout;
        self
    }

    /// Stops taking connections when `shutdown` triggers, and returns when the open ones have
    /// closed (or after the [`grace`](Self::grace)).
    ///
    /// ```
    /// # async fn f(l: tokio::net::TcpListener, app: axum::Router) {
    /// let shutdown = tower_sse::Shutdown::new();
    /// let _ = tower_sse::serve(l, app).shutdown(&shutdown);
    /// # }
    /// ```
    pub fn shutdown(mut self, shutdown: &Shutdown) -> Self {
        self.shutdown = Some(shutdown.clone());
        self
    }

    /// How long a shutdown waits for open connections, default 5 s.
    ///
    /// ```
    /// # async fn f(l: tokio::net::TcpListener, app: axum::Router) {
    /// let _ = tower_sse::serve(l, app).grace(std::time::Duration::from_secs(1));
    /// # }
    /// ```
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }
}

impl<S, B> IntoFuture for Serve<S>
where
    S: Service<Request<RequestBody>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Output = io::Result<()>;
    type IntoFuture = Pin<Box<dyn Future<Output = io::Result<()>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

impl<S> Serve<S> {
    async fn run<B>(self) -> io::Result<()>
    where
        S: Service<Request<RequestBody>, Response = Response<B>, Error = Infallible>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        // HTTP/2 streams are spawned watched: a stalled event stream is reset.
        let mut builder = auto::Builder::new(StallExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_read_timeout)
            .max_buf_size(self.max_header_bytes);
        builder.http2().timer(TokioTimer::new());
        let graceful = GracefulShutdown::new();
        let mut drivers = Drivers::new();
        let stop = async {
            match &self.shutdown {
                Some(shutdown) => shutdown.triggered().await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(stop);
        loop {
            let (tcp, peer) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    // Out of file descriptors and the like: wait a moment, keep serving.
                    Err(err) => {
                        tracing::warn!(error = %err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut stop => break,
            };
            let builder = builder.clone();
            // Held until the connection ends: a graceful shutdown waits for it.
            let watcher = graceful.watcher();
            let (shutdown, header_read_timeout) = (self.shutdown.clone(), self.header_read_timeout);
            let io = WriteTimeout::new(tcp, self.write_timeout);
            let service = self.service.clone();
            let (max_head, lean) = (self.max_header_bytes, self.lean);
            let lean_shutdown = self.shutdown.clone();
            // The lean part in a driver, with many other connections; a connection that
            // goes to hyper gets its own task.
            drivers.spawn(move |read| {
                let hyper = move |prefix, io, service| {
                    tokio::spawn(serve_hyper(
                        builder,
                        (prefix, io, service),
                        peer,
                        shutdown,
                        header_read_timeout,
                        watcher,
                    ));
                };
                let lean = Lean {
                    io,
                    service,
                    peer,
                    shutdown: lean_shutdown,
                    header_read_timeout,
                    max_head,
                    lean,
                    read_closed: false,
                    served: 0,
                    read_watch: Flagged::new(read),
                    stream: Streaming::new(),
                    buf: BytesMut::new(),
                    rest: None,
                    keep: false,
                    hyper: Box::new(hyper),
                };
                Box::pin(Connection::new(lean))
            });
        }
        drop(self.listener);
        if tokio::time::timeout(self.grace, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("connections still open after the shutdown grace; returning anyway");
        }
        Ok(())
    }
}

/// Serves a connection with hyper from where the lean path left it (`prefix`: the bytes it
/// read of the request that is hyper's) until it ends; `watcher` is held until then.
async fn serve_hyper<S, B>(
    builder: auto::Builder<StallExecutor>,
    (prefix, io, service): (Bytes, WriteTimeout<TcpStream>, S),
    peer: SocketAddr,
    shutdown: Option<Shutdown>,
    header_read_timeout: Duration,
    watcher: Watcher,
) where
    S: Service<Request<RequestBody>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let activity = Arc::new(Activity::default());
    let connection = builder
        .serve_connection_with_upgrades(
            TokioIo::new(Rewind::new(prefix, io, Arc::clone(&activity))),
            Counting {
                inner: TowerToHyperService::new(WithPeer {
                    inner: service,
                    peer,
                }),
                activity: Arc::clone(&activity),
            },
        )
        .into_owned();
    let mut connection = std::pin::pin!(connection);
    let driven = activity::drive(
        connection.as_mut(),
        |connection| connection.graceful_shutdown(),
        &activity,
        shutdown,
        header_read_timeout,
    );
    if let Err(err) = driven.await {
        tracing::debug!(error = %err, "connection ended with an error");
    }
    drop(watcher);
}

/// hyper's service: each request counted in the connection's [`Activity`] from the moment
/// hyper hands it over (before the tower service is ready) until its response body is
/// dropped, and its body until it is dropped; the body becomes a [`RequestBody`].
struct Counting<S> {
    inner: TowerToHyperService<S>,
    activity: Arc<Activity>,
}

impl<S, B> hyper::service::Service<Request<Incoming>> for Counting<S>
where
    S: Service<Request<RequestBody>, Response = Response<B>> + Clone,
{
    type Response = Response<CountedBody<B>>;
    type Error = S::Error;
    type Future = Counted<TowerToHyperServiceFuture<S, Request<RequestBody>>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let counted = self.activity.start();
        let body = self.activity.start();
        let request = request.map(|incoming| RequestBody::incoming(incoming, body));
        Counted::new(self.inner.call(request), counted)
    }
}

impl<S> fmt::Debug for Serve<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Serve")
            .field("header_read_timeout", &self.header_read_timeout)
            .field("write_timeout", &self.write_timeout)
            .field("grace", &self.grace)
            .field("lean_event_streams", &self.lean)
            .finish_non_exhaustive()
    }
}
