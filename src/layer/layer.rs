use std::{sync::Arc, time::Duration};

use bytes::BytesMut;
use http::{HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_layer::{Identity, Layer};

use super::{Sse, limit::Limits};
use crate::{Event, Shutdown, body::Config, event::write_lines};

/// Turns a service whose responses carry event streams into one that serves them as
/// `text/event-stream`. See the [module docs](crate::layer).
///
/// `C` is an optional layer wrapped around the [`Sse`] service, for CORS
/// ([`SseLayer::cors`]); it is [`Identity`] by default.
///
/// ```
/// use std::time::Duration;
/// use tower_sse::{Event, Shutdown, SseLayer};
///
/// let shutdown = Shutdown::new();
/// let layer = SseLayer::new()
///     .keep_alive(Duration::from_secs(20))
///     .retry(Duration::from_secs(2))
///     .shutdown(&shutdown)
///     .shutdown_event(Event::new().event("bye").data(""));
/// # let _ = layer;
/// ```
#[derive(Clone, Debug)]
pub struct SseLayer<C = Identity> {
    config: Arc<Config>,
    outer: C,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("keep_alive", &self.keep_alive)
            .field("shutdown", &self.shutdown.is_some())
            .field("shutdown_grace", &self.shutdown_grace)
            .field("max_batch", &self.max_batch)
            .field("min_write_interval", &self.min_write_interval)
            .field("stall_timeout", &self.stall_timeout)
            .field("hooks", &self.hooks)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Default for SseLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl SseLayer {
    /// The default [`stall_timeout`](Self::stall_timeout): 30 s, as `serve`'s write-stall
    /// timeout.
    pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(30);

    /// A layer with the defaults: keep-alive comment after 15 s idle, frames of up to 32 KiB of
    /// coalesced events, no shutdown handle, no CORS.
    ///
    /// ```
    /// let layer = tower_sse::SseLayer::new();
    /// # let _ = layer;
    /// ```
    #[must_use]
    pub fn new() -> Self {
        Self {
            config: Arc::default(),
            outer: Identity::new(),
        }
    }

    /// Adds CORS from a tower-http [`CorsLayer`] configured by you. It applies to every
    /// response of the wrapped service, SSE or not.
    ///
    /// ```
    /// use tower_http::cors::CorsLayer;
    ///
    /// let layer = tower_sse::SseLayer::new().cors(CorsLayer::permissive());
    /// # let _ = layer;
    /// ```
    #[must_use]
    pub fn cors(self, cors: CorsLayer) -> SseLayer<CorsLayer> {
        SseLayer {
            config: self.config,
            outer: cors,
        }
    }

    /// CORS for `EventSource`, with credentials: each listed origin is echoed back exactly
    /// (never `*`) with `Access-Control-Allow-Credentials: true` and `Vary: Origin`, so
    /// `new EventSource(url, { withCredentials: true })` works from those origins and from no
    /// other. `GET` is allowed, and the `Last-Event-ID` request header for polyfills.
    ///
    /// Origins are `&str`, `String` or [`HeaderValue`], written as a browser sends them:
    /// `scheme://host[:port]`, lowercase, without a path or a trailing `/`.
    ///
    /// # Panics
    ///
    /// When an origin is not of that form (it would never match a browser's `Origin`); use
    /// [`try_allow_origins`](Self::try_allow_origins) for origins read from configuration.
    ///
    /// ```
    /// let layer = tower_sse::SseLayer::new()
    ///     .allow_origins(["https://app.example", "http://localhost:5173"]);
    /// # let _ = layer;
    /// ```
    #[must_use]
    #[track_caller]
    pub fn allow_origins<I>(self, origins: I) -> SseLayer<CorsLayer>
    where
        I: IntoIterator,
        I::Item: TryInto<HeaderValue>,
    {
        match self.try_allow_origins(origins) {
            Ok(layer) => layer,
            Err(err) => panic!("SseLayer::allow_origins: {err}"),
        }
    }

    /// [`allow_origins`](Self::allow_origins) that returns an error for an origin that is not
    /// `scheme://host[:port]` (lowercase, no path, no trailing `/`).
    ///
    /// ```
    /// let err = tower_sse::SseLayer::new()
    ///     .try_allow_origins(["https://app.example/"])
    ///     .unwrap_err();
    /// assert_eq!(
    ///     err.to_string(),
    ///     "invalid CORS origin \"https://app.example/\": expected scheme://host[:port] without a path",
    /// );
    /// ```
    ///
    /// # Errors
    ///
    /// [`InvalidOrigin`] naming the first origin that is not of that form.
    pub fn try_allow_origins<I>(self, origins: I) -> Result<SseLayer<CorsLayer>, InvalidOrigin>
    where
        I: IntoIterator,
        I::Item: TryInto<HeaderValue>,
    {
        let origins = origins
            .into_iter()
            .map(|origin| {
                let value = origin.try_into().map_err(|_| InvalidOrigin {
                    origin: None,
                    reason: "not a valid header value",
                })?;
                check_origin(&value)?;
                Ok(value)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(self.cors(
            CorsLayer::new()
                .allow_origin(AllowOrigin::list(origins))
                .allow_credentials(true)
                .allow_methods([Method::GET])
                .allow_headers([
                    HeaderName::from_static("last-event-id"),
                    http::header::CACHE_CONTROL,
                ]),
        ))
    }
}

/// An origin given to [`SseLayer::try_allow_origins`] that no browser would send.
///
/// ```
/// let err = tower_sse::SseLayer::new().try_allow_origins(["app.example"]).unwrap_err();
/// assert!(err.to_string().contains("app.example"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidOrigin {
    origin: Option<String>,
    reason: &'static str,
}

impl std::fmt::Display for InvalidOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.origin {
            Some(origin) => write!(f, "invalid CORS origin {origin:?}: {}", self.reason),
            None => write!(f, "invalid CORS origin: {}", self.reason),
        }
    }
}

impl std::error::Error for InvalidOrigin {}

/// `scheme://host[:port]`, as browsers serialize an origin (lowercase, no path).
fn check_origin(value: &HeaderValue) -> Result<(), InvalidOrigin> {
    let text = value.to_str().unwrap_or_default();
    let fail = |reason| {
        Err(InvalidOrigin {
            origin: Some(String::from_utf8_lossy(value.as_bytes()).into_owned()),
            reason,
        })
    };
    let Some((scheme, authority)) = text.split_once("://") else {
        return fail("expected scheme://host[:port]");
    };
    let scheme_ok = scheme
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b));
    if !scheme_ok {
        return fail("expected a lowercase scheme");
    }
    if authority.is_empty() {
        return fail("expected a host");
    }
    if authority.contains(['/', '?', '#']) {
        return fail("expected scheme://host[:port] without a path");
    }
    if authority.contains('@') {
        return fail("an origin has no user name or password");
    }
    if authority.bytes().any(|b| b.is_ascii_uppercase()) {
        return fail("browsers send the host in lowercase");
    }
    // The port, when there is one, follows the last `:` outside an IPv6 literal's brackets.
    let port = match authority.rfind(':') {
        Some(colon) if !authority[colon..].contains(']') => Some(&authority[colon + 1..]),
        _ => None,
    };
    let port_ok = port.is_none_or(|port| port.parse::<u16>().is_ok() && !port.starts_with('+'));
    if !port_ok || authority.parse::<http::uri::Authority>().is_err() {
        return fail("expected host[:port] after the scheme");
    }
    Ok(())
}

impl<C> SseLayer<C> {
    fn config_mut(&mut self) -> &mut Config {
        Arc::make_mut(&mut self.config)
    }

    /// Sends a keep-alive comment after every `interval` without events (default 15 s).
    /// `Duration::ZERO` turns keep-alive off, as [`no_keep_alive`](Self::no_keep_alive).
    ///
    /// ```
    /// let layer = tower_sse::SseLayer::new().keep_alive(std::time::Duration::from_secs(5));
    /// # let _ = layer;
    /// ```
    #[must_use]
    pub fn keep_alive(mut self, interval: Duration) -> Self {
        // Zero would send comments without pause: it means "off", as `no_keep_alive`.
        self.config_mut().keep_alive = (!interval.is_zero()).then_some(interval);
        self
    }

    /// The text of the keep-alive comment (default: empty, which sends `:\n\n`). Line breaks
    /// become separate comment lines.
    ///
    /// ```
    /// let layer = tower_sse::SseLayer::new().keep_alive_text("ping");
    /// # let _ = layer;
    /// ```
    #[must_use]
    pub fn keep_alive_text(mut self, text: impl AsRef<str>) -> Self {
        let mut buf = BytesMut::new();
        write_lines(&mut buf, b"", text.as_ref().as_bytes());
        buf.extend_from_slice(b"\n");
        self.config_mut().keep_alive_comment = buf.freeze();
        self
    }

    /// Sends no keep-alive comments.
    ///
    /// ```
    /// let layer = tower_sse::SseLayer::new().no_keep_alive();
    /// # let _ = layer;
    /// ```
    #[must_use]
    pub fn no_keep_alive(mut self) -> Self {
        self.config_mut().keep_alive = None;
        self
    }

    /// Starts every stream with a `retry:` field: how long clients wait before reconnecting.
    ///
    /// ```
    /// let layer = tower_sse::SseLayer::new().retry(std::time::Duration::from_millis(1500));
    /// # let _ = layer;
    /// ```
    #[must_use]
    pub fn retry(mut self, retry: Duration) -> Self {
        self.config_mut().first = Some(Event::new().retry(retry).encode().into_bytes());
        self
    }

    /// Ends every open stream (and every stream opened later) when `shutdown` is triggered,
    /// after the [`shutdown_event`](Self::shutdown_event) and the
    /// [`shutdown_grace`](Self::shutdown_grace) period.
    ///
    /// ```
    /// let shutdown = tower_sse::Shutdown::new();
    /// let layer = tower_sse::SseLayer::new().shutdown(&shutdown);
    /// # let _ = layer;
    /// ```
    #[must_use]
    pub fn shutdown(mut self, shutdown: &Shutdown) -> Self {
        self.config_mut().shutdown = Some(shutdown.clone());
        self
    }

    /// An event sent to every open stream just before a shutdown ends it.
    ///
    /// ```
    /// use tower_sse::{Event, SseLayer};
    ///
    /// let layer = SseLayer::new().shutdown_event(Event::new().event("shutdown").data("bye"));
    /// # let _ = layer;
    /// ```
    #[must_use]
    pub fn shutdown_event(mut self, event: Event) -> Self {
        self.config_mut().shutdown_event = Some(event.encode().into_bytes());
        self
    }

    /// How long streams keep delivering events after a shutdown is triggered before they end
    /// (default: zero, they end at once).
    ///
    /// ```
    /// let layer = tower_sse::SseLayer::new().shutdown_grace(std::time::Duration::from_secs(1));
    /// # let _ = layer;
    /// ```
    #[must_use]
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.config_mut().shutdown_grace = grace;
        self
    }

    /// Calls `hook` when an event stream's response is made (not for responses passed
    /// through). Each stream also gets a `tracing` span, `sse_stream` (level debug, with its
    /// path), that logs its open and its close with the reason and duration.
    ///
    /// ```
    /// use std::sync::{Arc, atomic::{AtomicUsize, Ordering}};
    /// use tower_sse::{SseLayer, layer::{CloseReason, StreamInfo}};
    ///
    /// let open = Arc::new(AtomicUsize::new(0));
    /// let layer = SseLayer::new()
    ///     .on_open({
    ///         let open = open.clone();
    ///         move |_: &StreamInfo| { open.fetch_add(1, Ordering::Relaxed); }
    ///     })
    ///     .on_close(move |info: &StreamInfo, reason: CloseReason| {
    ///         open.fetch_sub(1, Ordering::Relaxed);
    ///         println!("{} closed after {:?}: {}", info.uri().path(), info.elapsed(), reason.as_str());
    ///     });
    /// # let _ = layer;
    /// ```
    #[must_use]
    pub fn on_open(mut self, hook: impl super::OnOpen) -> Self {
        self.config_mut().hooks.on_open = Some(Arc::new(hook));
        self
    }

    /// Calls `hook` once when an event stream ends, with why: the client went away (or was
    /// dropped for not reading), [`Shutdown`], the stream ended, or it failed. With
    /// [`max_streams`](Self::max_streams) caps, the stream's slot is free when it runs.
    ///
    /// ```
    /// use tower_sse::{SseLayer, layer::{CloseReason, StreamInfo}};
    ///
    /// let layer = SseLayer::new().on_close(|info: &StreamInfo, reason: CloseReason| {
    ///     tracing::info!(path = info.uri().path(), reason = reason.as_str(), "stream closed");
    /// });
    /// # let _ = layer;
    /// ```
    #[must_use]
    pub fn on_close(mut self, hook: impl super::OnClose) -> Self {
        self.config_mut().hooks.on_close = Some(Arc::new(hook));
        self
    }

    /// Calls `hook` when an event stream yields an error (the response then ends cleanly, and
    /// [`on_close`](Self::on_close) sees [`CloseReason::Error`](super::CloseReason::Error)).
    ///
    /// ```
    /// use tower_sse::{BoxError, SseLayer, layer::StreamInfo};
    ///
    /// let layer = SseLayer::new().on_error(|info: &StreamInfo, error: &BoxError| {
    ///     tracing::warn!(path = info.uri().path(), %error, "stream failed");
    /// });
    /// # let _ = layer;
    /// ```
    #[must_use]
    pub fn on_error(mut self, hook: impl super::OnError) -> Self {
        self.config_mut().hooks.on_error = Some(Arc::new(hook));
        self
    }

    /// The most bytes of ready events sent as one frame (default 32 KiB). `0` sends every event
    /// as its own frame.
    ///
    /// ```
    /// let layer = tower_sse::SseLayer::new().max_batch(0);
    /// # let _ = layer;
    /// ```
    #[must_use]
    pub fn max_batch(mut self, bytes: usize) -> Self {
        self.config_mut().max_batch = bytes;
        self
    }

    /// Writes to each connection at most once per `interval` (default: zero, every event is
    /// written as soon as it is ready).
    ///
    /// An event that becomes ready sooner than `interval` after the connection's last write is
    /// held until the interval is over, and every event that comes meanwhile goes out in the
    /// same write. An event after a quiet spell of at least `interval` is written at once, so a
    /// stream with few events gets no added latency; a busy one gets at most `interval` more.
    ///
    /// Each write costs a wake-up of the connection's task and a `write` system call, which at
    /// high fan-out is most of a server's CPU: a thousand connections at 200 events/s are
    /// 200,000 writes a second. While an event is held the stream is not polled, so events
    /// published meanwhile wake nothing. (Centrifugo's `write_delay` makes a similar trade;
    /// Nagle's algorithm makes it in the kernel, but waits for an acknowledgement instead of a
    /// fixed time.) BENCHMARKS.md has numbers.
    ///
    /// A burst larger than [`max_batch`](Self::max_batch) continues at once (with `max_batch(0)`
    /// the events of a window go out one frame each, back to back). Events held when a
    /// [`shutdown`](Self::shutdown) ends the stream are written before the final event.
    ///
    /// While events are held they wait in their source: with the [`Hub`](crate::hub::Hub), in
    /// the topic's ring. Keep `interval` × the peak publish rate of a topic well below
    /// [`HubBuilder::subscriber_capacity`](crate::hub::HubBuilder::subscriber_capacity)
    /// (default 256), or a connection that is holding falls a ring behind and is disconnected
    /// as a slow client (it then resumes with its `Last-Event-ID`).
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let layer = tower_sse::SseLayer::new().min_write_interval(Duration::from_millis(10));
    /// # let _ = layer;
    /// ```
    #[must_use]
    pub fn min_write_interval(mut self, interval: Duration) -> Self {
        self.config_mut().min_write_interval = interval;
        self
    }

    /// Resets an HTTP/2 stream whose client takes no frame for `timeout` (default
    /// [`DEFAULT_STALL_TIMEOUT`](SseLayer::DEFAULT_STALL_TIMEOUT), 30 s): the stream has a
    /// frame ready, and flow control (a client that opened it with a zero window, or stopped
    /// granting credit) keeps it from being sent. The stream gets `RST_STREAM`, its body and
    /// event stream are dropped, the [`on_close`](Self::on_close) hook sees
    /// [`CloseReason::Stalled`](super::CloseReason::Stalled); the connection's other streams
    /// go on.
    ///
    /// This needs the stream's task to be watched: [`serve`](crate::serve) does it, and with
    /// hyper directly give its builder a [`StallExecutor`](crate::StallExecutor) (feature
    /// `server`). Where nothing watches (`axum::serve`), the setting has no effect. The
    /// [`stall` notes](crate::StallExecutor) say why the body alone cannot do it and what is
    /// and is not detected. Over HTTP/1.1 a stalled client is a full socket:
    /// [`io::WriteTimeout`](crate::io::WriteTimeout) handles that.
    ///
    /// `Duration::ZERO` turns it off (a stream waiting for any credit at all would be reset);
    /// `Duration::MAX` is as good as off.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let layer = tower_sse::SseLayer::new().stall_timeout(Duration::from_secs(60));
    /// # let _ = layer;
    /// ```
    #[must_use]
    pub fn stall_timeout(mut self, timeout: Duration) -> Self {
        self.config_mut().stall_timeout = (!timeout.is_zero()).then_some(timeout);
        self
    }

    /// Labels the metrics of the streams this layer serves (`tower_sse_connections`,
    /// `tower_sse_events_total`, `tower_sse_bytes_total`) with `route="<route>"` (feature
    /// `metrics`; default: no label). The value is fixed per layer, so the label's cardinality
    /// is the number of layers you label: put one layer on each route you want apart.
    ///
    /// ```
    /// let layer = tower_sse::SseLayer::new().metrics_route("rooms");
    /// # let _ = layer;
    /// ```
    #[cfg(feature = "metrics")]
    #[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
    #[must_use]
    pub fn metrics_route(mut self, route: &'static str) -> Self {
        self.config_mut().metrics_route = Some(route);
        self
    }

    /// Compresses event streams, event by event (feature `compression`; off by default).
    ///
    /// The encoding is negotiated from the request's `Accept-Encoding` among those
    /// `compression` allows (gzip, deflate, br, zstd; q-values honoured). Each frame is
    /// compressed and **flushed**, so every event decodes the moment it arrives, while the
    /// compressor's window spans the whole stream (repeated field names and JSON keys cost a
    /// few bytes). The response gets `Content-Encoding` and `Vary: Accept-Encoding`; a response
    /// that already has a `Content-Encoding`, and every response that is not an event stream,
    /// is left alone. See [`compress`](crate::compress) for the trade-offs (a compressor's
    /// state per open stream; CPU per event).
    ///
    /// ```
    /// use tower_sse::{Compression, SseLayer};
    ///
    /// let layer = SseLayer::new().compression(Compression::new());
    /// # let _ = layer;
    /// ```
    #[cfg(feature = "compression")]
    #[cfg_attr(docsrs, doc(cfg(feature = "compression")))]
    #[must_use]
    pub fn compression(mut self, compression: crate::Compression) -> Self {
        self.config_mut().compression = Some(compression);
        self
    }

    /// Answers `429 Too Many Requests` (with `Retry-After: 5`) to a request for an event
    /// stream while `max` streams are open through this layer (default: no cap). Streams are
    /// counted, not connections: the streams an HTTP/2 connection multiplexes count one each,
    /// and a request that gets no event stream counts nothing. A stream is counted until its
    /// body is dropped, however it ended (the client left, a shutdown, the stream ended, a
    /// stall reset). The count is shared by this layer's clones and every service they make.
    ///
    /// A request that says `Accept: text/event-stream` (every `EventSource` does) is counted
    /// before the inner service is called, so a refused one costs no handler work (no hub
    /// subscription, no presence change), and at the cap it is refused whatever the handler
    /// would have answered; any other request is counted only when its response turns out to
    /// be an event stream, and when refused its stream is dropped unread.
    ///
    /// Why here and not in [`serve`](crate::serve): only the layer knows which responses are
    /// event streams and when each one ends; the server loop sees TCP connections. The server
    /// loop's part is the client address, for
    /// [`max_streams_per_client`](Self::max_streams_per_client).
    ///
    /// A browser's `EventSource` does not retry after a `429`: it fires `error` and closes
    /// (`readyState` 2). A page that should try again later does so itself.
    ///
    /// ```
    /// let layer = tower_sse::SseLayer::new().max_streams(10_000);
    /// # let _ = layer;
    /// ```
    #[must_use]
    pub fn max_streams(mut self, max: usize) -> Self {
        let per_client = self.config.limits.as_ref().and_then(|l| l.max_per_client);
        self.config_mut().limits = Some(Limits::new(Some(max), per_client));
        self
    }

    /// Answers `429 Too Many Requests` (with `Retry-After: 5`) to a request for an event
    /// stream while `max` streams are open from the same client IP address (default: no cap).
    /// Counted as [`max_streams`](Self::max_streams) counts (streams, not connections, until
    /// the body is dropped); both caps can be set.
    ///
    /// The address is read from the request extensions: a [`SocketAddr`](std::net::SocketAddr)
    /// (which [`serve`](crate::serve) inserts for every request), else axum's
    /// `ConnectInfo<SocketAddr>` (`axum::serve` with `into_make_service_with_connect_info`).
    /// A request with neither is held only to `max_streams`. Behind a reverse proxy every
    /// client has the proxy's address: insert the real one as a `SocketAddr` extension in a
    /// middleware before this layer (from a header only the proxy can set), or leave this cap
    /// off. IPv6 clients are counted by full address, so one host with a /64 has many.
    ///
    /// ```
    /// use axum::{Router, routing::get};
    /// use tower_sse::SseLayer;
    ///
    /// # async fn run() -> std::io::Result<()> {
    /// let app = Router::new()
    ///     .route("/events", get(|| async { "…" }))
    ///     .layer(SseLayer::new().max_streams(10_000).max_streams_per_client(8));
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    /// // `serve` gives every request its peer's address.
    /// tower_sse::serve(listener, app).await
    /// # }
    /// ```
    #[must_use]
    pub fn max_streams_per_client(mut self, max: usize) -> Self {
        let total = self.config.limits.as_ref().and_then(|l| l.max_streams);
        self.config_mut().limits = Some(Limits::new(total, Some(max)));
        self
    }

    #[cfg(test)]
    pub(crate) fn config(&self) -> &Config {
        &self.config
    }
}

impl<S, C> Layer<S> for SseLayer<C>
where
    C: Layer<Sse<S>>,
{
    type Service = C::Service;

    fn layer(&self, inner: S) -> Self::Service {
        self.outer
            .layer(Sse::with_config(inner, self.config.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_checked_as_browsers_send_them() {
        for good in [
            "https://app.example",
            "http://localhost:5173",
            "http://127.0.0.1:3000",
            "http://[::1]:8080",
            "chrome-extension://abcdef",
        ] {
            check_origin(&HeaderValue::from_static(good)).unwrap();
        }
        for (bad, reason) in [
            ("app.example", "expected scheme://host[:port]"),
            ("https://app.example/", "without a path"),
            ("https://app.example/x", "without a path"),
            ("https://app.example?q", "without a path"),
            ("HTTPS://app.example", "lowercase scheme"),
            ("https://App.example", "lowercase"),
            ("https://", "expected a host"),
            ("https://u:p@app.example", "user name"),
            ("https://app.example:port", "host[:port]"),
            ("*", "expected scheme://host[:port]"),
        ] {
            let err = check_origin(&HeaderValue::from_static(bad)).expect_err(bad);
            assert!(err.to_string().contains(reason), "{bad}: {err}");
            assert!(err.to_string().contains(bad), "{bad}: {err}");
        }
    }

    #[test]
    fn allow_origins_takes_str_string_and_header_values() {
        let _ = SseLayer::new().allow_origins(["https://a.example"]);
        let _ = SseLayer::new().allow_origins(vec![String::from("https://a.example")]);
        let _ = SseLayer::new().allow_origins([HeaderValue::from_static("https://a.example")]);
        let err = SseLayer::new()
            .try_allow_origins(["https://a.example", "bad\norigin"])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid CORS origin: not a valid header value"
        );
    }

    #[test]
    #[should_panic(expected = "SseLayer::allow_origins: invalid CORS origin")]
    fn allow_origins_panics_on_a_bad_origin() {
        let _ = SseLayer::new().allow_origins(["https://a.example/"]);
    }
}
