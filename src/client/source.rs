//! `EventSource`: the reconnecting client stream.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::Duration,
};

use bytes::Bytes;
use futures_core::{FusedStream, Stream};
use http::request::Parts;
use http::{
    HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, Version,
    header, uri::PathAndQuery,
};
use http_body::Body;
use http_body_util::Full;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep};
use tower_service::Service;

use super::{Decoder, Error, Frame, MessageEvent};
use crate::BoxError;
use crate::backoff::Backoff;

const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");
const TEXT_EVENT_STREAM: HeaderValue = HeaderValue::from_static("text/event-stream");
const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");

/// A connection that delivered an event, or stayed open this long, was healthy: the backoff
/// starts over after it.
const HEALTHY_AFTER: Duration = Duration::from_secs(1);

/// An HTTP [`Service`] an [`EventSource`] can run on: any `Service<http::Request<B>>` answering
/// `http::Response<R>` where `R` is a body of [`Bytes`].
///
/// It is implemented for every such service (hyper-util's client, `tower::service_fn`, an axum
/// `Router`, a `tower::ServiceBuilder` stack, a mock); there is no need to implement it.
///
/// ```
/// use tower_sse::client::HttpService;
///
/// fn takes_any<S: HttpService<()>>(_: &S) {}
///
/// let service = tower::service_fn(|_req: http::Request<()>| async {
///     Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Empty::<bytes::Bytes>::new()))
/// });
/// takes_any(&service);
/// ```
pub trait HttpService<B>: Service<Request<B>, Response = Response<Self::ResponseBody>> {
    /// The body of the service's responses.
    type ResponseBody: Body<Data = Bytes>;
}

impl<S, B, R> HttpService<B> for S
where
    S: Service<Request<B>, Response = Response<R>>,
    R: Body<Data = Bytes>,
{
    type ResponseBody = R;
}

/// The default HTTP client of [`EventSource::get`] and [`EventSource::request`]: hyper-util's
/// pooled client over its [`Connector`](super::Connector).
///
/// With the `client` feature it speaks `https://` (rustls, with the platform's certificate
/// authorities, `SSL_CERT_FILE` / `SSL_CERT_DIR` when set; HTTP/2 when the server offers it by
/// ALPN, else HTTP/1.1) and `http://`. With `client-plain` alone it speaks `http://` only, and
/// any other tower HTTP service can be passed to [`EventSource::new`].
///
/// ```
/// use tower_sse::client::{EventSource, HttpClient};
///
/// let client: HttpClient = tower_sse::client::http_client();
/// let request = http::Request::get("http://127.0.0.1:3000/events")
///     .body(http_body_util::Full::default())
///     .unwrap();
/// // One client (and its connection pool) can serve many event sources.
/// let source = EventSource::new(client.clone(), request);
/// # drop(source);
/// ```
pub type HttpClient = hyper_util::client::legacy::Client<super::Connector, Full<Bytes>>;

/// A new [`HttpClient`]: hyper-util's client with the tokio executor; HTTPS with the
/// platform's certificate authorities when the `client` feature is on.
///
/// ```
/// let client = tower_sse::client::http_client();
/// # drop(client);
/// ```
#[must_use]
pub fn http_client() -> HttpClient {
    #[cfg(feature = "client")]
    let connector = super::Connector::with_roots(
        super::connector::roots(&[]).expect("no extra certificates to parse"),
    );
    #[cfg(not(feature = "client"))]
    let connector = super::Connector::new();
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(connector)
}

/// An [`HttpClient`] that also trusts the certificate authorities in `pem` (one or more PEM
/// certificates), besides the platform's: for a private CA, or a test server's.
///
/// # Errors
///
/// [`ErrorKind::Request`](super::ErrorKind::Request) when `pem` holds no usable certificate.
///
/// ```
/// let err = tower_sse::client::https_client_with_roots(b"not pem").unwrap_err();
/// assert_eq!(err.kind(), tower_sse::client::ErrorKind::Request);
/// ```
#[cfg(feature = "client")]
#[cfg_attr(docsrs, doc(cfg(feature = "client")))]
pub fn https_client_with_roots(pem: &[u8]) -> Result<HttpClient, Error> {
    let roots = super::connector::roots(pem).map_err(Error::request_owned)?;
    Ok(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(super::Connector::with_roots(roots)),
    )
}

/// A connection attempt, as an [`EventSource::on_connect`] hook sees it.
#[derive(Debug, Clone)]
pub struct Attempt {
    number: u32,
    last_event_id: String,
}

impl Attempt {
    /// How many reconnections in a row came before this one (0: the first connection, or the
    /// first after a healthy one).
    ///
    /// ```
    /// # fn f(attempt: &tower_sse::client::Attempt) {
    /// let first = attempt.number() == 0;
    /// # let _ = first; }
    /// ```
    pub fn number(&self) -> u32 {
        self.number
    }

    /// The `Last-Event-ID` the request carries (empty when none).
    ///
    /// ```
    /// # fn f(attempt: &tower_sse::client::Attempt) {
    /// let resuming = !attempt.last_event_id().is_empty();
    /// # let _ = resuming; }
    /// ```
    pub fn last_event_id(&self) -> &str {
        &self.last_event_id
    }
}

/// Prepares each connection attempt of an [`EventSource`]; see
/// [`EventSource::on_connect`]. Implemented for closures
/// `Fn(Parts, Attempt) -> Fut` where `Fut: Future<Output = Result<Parts, E>> + Send`.
pub trait OnConnect: Send + Sync + 'static {
    /// The request head to send for this attempt, or an error to give up.
    fn on_connect(
        &self,
        head: Parts,
        attempt: Attempt,
    ) -> Pin<Box<dyn Future<Output = Result<Parts, BoxError>> + Send>>;
}

impl<F, Fut, E> OnConnect for F
where
    F: Fn(Parts, Attempt) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Parts, E>> + Send + 'static,
    E: Into<BoxError>,
{
    fn on_connect(
        &self,
        head: Parts,
        attempt: Attempt,
    ) -> Pin<Box<dyn Future<Output = Result<Parts, BoxError>> + Send>> {
        let future = self(head, attempt);
        Box::pin(async move { future.await.map_err(Into::into) })
    }
}

/// What an [`EventSource`] yields.
///
/// ```
/// use tower_sse::client::SseEvent;
///
/// fn describe(item: &SseEvent) -> String {
///     match item {
///         SseEvent::Open(open) => format!("connected to {}", open.uri()),
///         SseEvent::Message(event) => format!("{}: {}", event.event(), event.data()),
///         SseEvent::Comment(text) => format!(": {text}"),
///         SseEvent::Reconnect(r) => format!("reconnecting in {:?}", r.delay()),
///         _ => String::new(),
///     }
/// }
/// # let _ = describe;
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum SseEvent {
    /// A connection is open: the server answered 2xx with `Content-Type: text/event-stream`.
    Open(Open),
    /// An event (`onmessage` / `addEventListener(type, ..)` in a browser).
    Message(MessageEvent),
    /// A comment line, without its colon. Only with [`EventSource::comments`].
    Comment(String),
    /// The connection failed or ended; the client will try again after
    /// [`Reconnect::delay`].
    Reconnect(Reconnect),
}

/// The answer that opened a connection; see [`SseEvent::Open`].
///
/// ```
/// # use tower_sse::client::Open;
/// fn log(open: &Open) {
///     println!("{} from {}", open.status(), open.uri());
///     if let Some(id) = open.headers().get("last-event-id") {
///         println!("server resumes after {id:?}");
///     }
/// }
/// # let _ = log;
/// ```
#[derive(Debug, Clone)]
pub struct Open {
    status: StatusCode,
    headers: HeaderMap,
    uri: Uri,
}

impl Open {
    /// The response status (2xx).
    ///
    /// ```
    /// # fn f(open: &tower_sse::client::Open) {
    /// assert!(open.status().is_success());
    /// # }
    /// ```
    #[must_use]
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The response headers.
    ///
    /// ```
    /// # fn f(open: &tower_sse::client::Open) {
    /// assert_eq!(open.headers()["content-type"], "text/event-stream");
    /// # }
    /// ```
    #[must_use]
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The URI that answered, after redirects.
    ///
    /// ```
    /// # fn f(open: &tower_sse::client::Open) {
    /// println!("streaming from {}", open.uri());
    /// # }
    /// ```
    #[must_use]
    pub fn uri(&self) -> &Uri {
        &self.uri
    }
}

/// A reconnection about to happen; see [`SseEvent::Reconnect`].
///
/// ```
/// # use tower_sse::client::Reconnect;
/// fn log(r: &Reconnect) {
///     match r.error() {
///         Some(err) => eprintln!("attempt {} in {:?}: {err}", r.attempt(), r.delay()),
///         None => eprintln!("stream ended; reconnecting in {:?}", r.delay()),
///     }
/// }
/// # let _ = log;
/// ```
#[derive(Debug)]
pub struct Reconnect {
    delay: Duration,
    attempt: u32,
    error: Option<Error>,
}

impl Reconnect {
    /// How long the client waits before it connects again.
    ///
    /// ```
    /// # fn f(r: &tower_sse::client::Reconnect) {
    /// assert!(r.delay() <= std::time::Duration::from_secs(30));
    /// # }
    /// ```
    #[must_use]
    pub fn delay(&self) -> Duration {
        self.delay
    }

    /// Which attempt this is since the last healthy connection, from 1.
    ///
    /// ```
    /// # fn f(r: &tower_sse::client::Reconnect) {
    /// assert!(r.attempt() >= 1);
    /// # }
    /// ```
    #[must_use]
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Why the connection was lost: `None` when the server ended the response normally.
    ///
    /// ```
    /// # fn f(r: &tower_sse::client::Reconnect) {
    /// if let Some(err) = r.error() {
    ///     eprintln!("{err}");
    /// }
    /// # }
    /// ```
    #[must_use]
    pub fn error(&self) -> Option<&Error> {
        self.error.as_ref()
    }

    /// Takes the error out; see [`Reconnect::error`].
    ///
    /// ```
    /// # fn f(r: tower_sse::client::Reconnect) -> Option<tower_sse::client::Error> {
    /// r.into_error()
    /// # }
    /// ```
    #[must_use]
    pub fn into_error(self) -> Option<Error> {
        self.error
    }
}

/// A reconnecting event-stream client: a [`Stream`] of `Result<`[`SseEvent`]`, `[`Error`]`>`.
///
/// See the [module docs](super) for the protocol it follows and an example. Every `Err` is
/// the last item; after it, and after a `204 No Content`, the stream ends.
///
/// `EventSource` is `Unpin` (its state lives in one box, allocated once), so
/// `futures_util::StreamExt::next` works on it directly, and it is `Send` when the service,
/// its future and bodies are, so it can be spawned.
///
/// # Example
///
/// The "callback" style, with `try_for_each` (see the [module docs](super) for `while let`):
///
/// ```
/// use std::{convert::Infallible, time::Duration};
/// use futures_util::TryStreamExt;
/// use http::{Request, Response, StatusCode};
/// use tower::ServiceBuilder;
/// use tower_sse::{Event, EventStream, LastEventId, SseLayer};
/// use tower_sse::client::{EventSource, SseEvent};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// // Three events, then `204 No Content` to the reconnection.
/// let service = ServiceBuilder::new()
///     .layer(SseLayer::new())
///     .service_fn(|req: Request<()>| async move {
///         let events = futures_util::stream::iter(
///             (1..=3).map(|n| Event::new().id(n.to_string()).event("tick").data(n.to_string())),
///         );
///         let mut response = Response::new(EventStream::new(events));
///         if req.extensions().get::<LastEventId>().is_some() {
///             *response.status_mut() = StatusCode::NO_CONTENT;
///         }
///         Ok::<_, Infallible>(response)
///     });
///
/// let mut total = 0;
/// EventSource::new(service, Request::new(()))
///     .try_for_each(|item| {
///         if let SseEvent::Message(event) = item {
///             total += event.data().parse::<u32>().unwrap();
///         }
///         async { Ok(()) }
///     })
///     .await
///     .expect("ends with 204, not an error");
/// assert_eq!(total, 6);
/// # }
/// ```
pub struct EventSource<S, B = Full<Bytes>>
where
    S: HttpService<B>,
{
    inner: Pin<Box<Inner<S, B>>>,
}

pin_project! {
    #[project = InnerProj]
    struct Inner<S, B>
    where
        S: HttpService<B>,
    {
        service: S,
        template: Template<B>,
        // The URI of the current attempt: the template's, or a redirect's.
        uri: Uri,
        redirects: usize,
        decoder: Decoder,
        backoff: Backoff,
        config: Config,
        // When the current connection opened, and whether it delivered an event.
        opened_at: Option<Instant>,
        delivered: bool,
        // An error found before the first poll (a request the client cannot send).
        pending: Option<Error>,
        // Called before every connection attempt (see `EventSource::on_connect`).
        hook: Option<Arc<dyn OnConnect>>,
        #[pin]
        state: State<S::Future, S::ResponseBody, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, R, B> {
        Idle,
        // The connect hook is preparing the request's head; the body waits here.
        Preparing { future: Pin<Box<dyn Future<Output = Result<Parts, BoxError>> + Send>>, body: Option<B> },
        // The request is ready, the service may not be.
        Calling { request: Option<Request<B>> },
        Connecting { #[pin] future: F },
        Streaming { #[pin] body: R, #[pin] timeout: Option<Sleep> },
        Waiting { #[pin] sleep: Sleep },
        Done,
    }
}

#[derive(Debug, Clone)]
struct Config {
    comments: bool,
    reconnect_on_decode_error: bool,
    reconnect_on_tls_error: bool,
    max_retries: Option<u32>,
    max_redirects: usize,
    read_timeout: Option<Duration>,
}

struct Template<B> {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    body: B,
}

impl EventSource<HttpClient, Full<Bytes>> {
    /// A `GET` of `uri` through a new [`HttpClient`] (plain `http://`, no TLS).
    ///
    /// An `https://` or relative `uri` makes the stream yield one error of kind
    /// [`ErrorKind::Request`](super::ErrorKind::Request).
    ///
    /// ```no_run
    /// use futures_util::StreamExt;
    /// use tower_sse::client::{EventSource, SseEvent};
    ///
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut events = EventSource::get("http://127.0.0.1:3000/events".parse()?);
    /// while let Some(item) = events.next().await {
    ///     if let SseEvent::Message(event) = item? {
    ///         println!("{}", event.data());
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn get(uri: Uri) -> Self {
        let mut request = Request::new(Full::default());
        *request.uri_mut() = uri;
        Self::request(request)
    }

    /// `request` (any method, headers and body) through a new [`HttpClient`] (plain
    /// `http://`, no TLS). The body is sent again on every reconnection.
    ///
    /// ```
    /// use http_body_util::Full;
    /// use tower_sse::client::EventSource;
    ///
    /// let request = http::Request::post("http://127.0.0.1:3000/query")
    ///     .header("authorization", "Bearer token")
    ///     .body(Full::from(r#"{"topic":"news"}"#))
    ///     .unwrap();
    /// let events = EventSource::request(request);
    /// # drop(events);
    /// ```
    #[must_use]
    pub fn request(request: Request<Full<Bytes>>) -> Self {
        let problem = match (request.uri().scheme_str(), request.uri().authority()) {
            (Some("http"), Some(_)) => None,
            (Some("https"), Some(_)) if cfg!(feature = "client") => None,
            (Some("https"), _) if cfg!(not(feature = "client")) => Some(Error::request(
                "https needs TLS: the `client` feature has it (this build has `client-plain`), \
                 or pass a TLS-capable client to EventSource::new",
            )),
            _ => Some(Error::request(
                "the default client needs an absolute http:// or https:// URI",
            )),
        };
        let mut source = Self::new(http_client(), request);
        *source.inner.as_mut().project().pending = problem;
        source
    }
}

impl<S, B> EventSource<S, B>
where
    S: HttpService<B>,
{
    /// An event source that sends `request` through `service`, again on every reconnection
    /// (so the body type must be `Clone`; extensions are not copied).
    ///
    /// The request is sent as given, plus `Accept: text/event-stream` and
    /// `Cache-Control: no-store` unless it sets them, and `Last-Event-ID` when the last event
    /// ID is not empty. A `Last-Event-ID` header on `request` seeds the last event ID, to resume
    /// from an ID saved earlier.
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use futures_util::StreamExt;
    /// use http::{Request, Response};
    /// use tower::ServiceBuilder;
    /// use tower_sse::{Event, EventStream, SseLayer, client::{EventSource, SseEvent}};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// // Any tower service will do; here, an in-process SSE endpoint.
    /// let service = ServiceBuilder::new()
    ///     .layer(SseLayer::new())
    ///     .service_fn(|_req: Request<()>| async {
    ///         let events = futures_util::stream::iter([Event::new().data("hi")]);
    ///         Ok::<_, Infallible>(Response::new(EventStream::new(events)))
    ///     });
    ///
    /// let mut source = EventSource::new(service, Request::new(()));
    /// assert!(matches!(source.next().await, Some(Ok(SseEvent::Open(_)))));
    /// let Some(Ok(SseEvent::Message(event))) = source.next().await else { panic!() };
    /// assert_eq!(event.data(), "hi");
    /// # }
    /// ```
    pub fn new(service: S, request: Request<B>) -> Self {
        let (parts, body) = request.into_parts();
        let mut headers = parts.headers;
        headers.entry(header::ACCEPT).or_insert(TEXT_EVENT_STREAM);
        headers.entry(header::CACHE_CONTROL).or_insert(NO_STORE);
        let mut decoder = Decoder::new();
        if let Some(id) = headers.get(LAST_EVENT_ID) {
            decoder.set_last_event_id(&String::from_utf8_lossy(id.as_bytes()));
        }
        let template = Template {
            method: parts.method,
            uri: parts.uri.clone(),
            version: parts.version,
            headers,
            body,
        };
        Self {
            inner: Box::pin(Inner {
                service,
                template,
                uri: parts.uri,
                redirects: 0,
                decoder,
                backoff: Backoff::new(Duration::from_secs(3), Duration::from_secs(30), true),
                config: Config {
                    comments: false,
                    reconnect_on_decode_error: true,
                    reconnect_on_tls_error: false,
                    max_retries: None,
                    max_redirects: 10,
                    read_timeout: None,
                },
                opened_at: None,
                delivered: false,
                pending: None,
                hook: None,
                state: State::Idle,
            }),
        }
    }

    /// Calls `hook` before every connection attempt, the first and each reconnection: it gets
    /// the head of the request about to be sent (method, URI, headers with its
    /// `Last-Event-ID`) and the [`Attempt`], and returns the head to send: headers changed (a
    /// fresh bearer token, say), or the URI. The body is the template's. An error gives up: the
    /// stream ends with [`ErrorKind::Hook`](super::ErrorKind::Hook). Implemented for closures
    /// `Fn(http::request::Parts, Attempt) -> impl Future<Output = Result<Parts, E>>`.
    ///
    /// ```
    /// use http::request::Parts;
    /// use tower_sse::client::{Attempt, EventSource};
    ///
    /// let source = EventSource::get("http://127.0.0.1:3000/events".parse().unwrap())
    ///     .on_connect(|mut head: Parts, attempt: Attempt| async move {
    ///         let token = format!("Bearer token-{}", attempt.number());
    ///         head.headers.insert("authorization", token.parse()?);
    ///         Ok::<_, http::header::InvalidHeaderValue>(head)
    ///     });
    /// # drop(source);
    /// ```
    #[must_use]
    pub fn on_connect(mut self, hook: impl OnConnect) -> Self {
        *self.project().hook = Some(Arc::new(hook));
        self
    }

    fn project(&mut self) -> InnerProj<'_, S, B> {
        self.inner.as_mut().project()
    }

    /// Also yield comment lines as [`SseEvent::Comment`] (keep-alives, for instance). Off by
    /// default.
    ///
    /// ```
    /// let source = tower_sse::client::EventSource::get("http://127.0.0.1:3000/".parse().unwrap())
    ///     .comments(true);
    /// # drop(source);
    /// ```
    #[must_use]
    pub fn comments(mut self, yes: bool) -> Self {
        self.project().config.comments = yes;
        self
    }

    /// The reconnection time until the server sends a `retry:` field. Default: 3 seconds.
    ///
    /// ```
    /// use std::time::Duration;
    /// let source = tower_sse::client::EventSource::get("http://127.0.0.1:3000/".parse().unwrap())
    ///     .retry(Duration::from_millis(500));
    /// assert_eq!(source.reconnection_time(), Duration::from_millis(500));
    /// ```
    #[must_use]
    pub fn retry(mut self, delay: Duration) -> Self {
        self.project().backoff.set_base(delay);
        self
    }

    /// The longest the backoff grows to: consecutive failures double the delay up to this cap.
    /// A server's `retry:` above it is still honoured. Default: 30 seconds.
    ///
    /// ```
    /// use std::time::Duration;
    /// let source = tower_sse::client::EventSource::get("http://127.0.0.1:3000/".parse().unwrap())
    ///     .max_retry_delay(Duration::from_secs(60));
    /// # drop(source);
    /// ```
    #[must_use]
    pub fn max_retry_delay(mut self, cap: Duration) -> Self {
        self.project().backoff.set_cap(cap);
        self
    }

    /// Whether to randomise each delay within `[delay / 2, delay]`, so that many clients that
    /// lost the same server do not come back all at once. Default: on.
    ///
    /// ```
    /// let source = tower_sse::client::EventSource::get("http://127.0.0.1:3000/".parse().unwrap())
    ///     .jitter(false);
    /// # drop(source);
    /// ```
    #[must_use]
    pub fn jitter(mut self, yes: bool) -> Self {
        self.project().backoff.set_jitter(yes);
        self
    }

    /// How many reconnection attempts in a row (without a healthy connection in between) are
    /// made before the stream ends with an error of kind
    /// [`ErrorKind::RetriesExhausted`](super::ErrorKind::RetriesExhausted). `None`, the
    /// default, retries forever, as a browser does; `Some(0)` never reconnects.
    ///
    /// ```
    /// let source = tower_sse::client::EventSource::get("http://127.0.0.1:3000/".parse().unwrap())
    ///     .max_retries(Some(5));
    /// # drop(source);
    /// ```
    #[must_use]
    pub fn max_retries(mut self, max: Option<u32>) -> Self {
        self.project().config.max_retries = max;
        self
    }

    /// How many redirects are followed in a row before failing with
    /// [`ErrorKind::TooManyRedirects`](super::ErrorKind::TooManyRedirects). Default: 10.
    ///
    /// ```
    /// let source = tower_sse::client::EventSource::get("http://127.0.0.1:3000/".parse().unwrap())
    ///     .max_redirects(0); // do not follow redirects
    /// # drop(source);
    /// ```
    #[must_use]
    pub fn max_redirects(mut self, max: usize) -> Self {
        self.project().config.max_redirects = max;
        self
    }

    /// Reconnect when no bytes arrive for this long on an open connection (a dead peer, a
    /// stuck proxy). Choose a few times the server's keep-alive interval. Default: none.
    ///
    /// ```
    /// use std::time::Duration;
    /// let source = tower_sse::client::EventSource::get("http://127.0.0.1:3000/".parse().unwrap())
    ///     .read_timeout(Some(Duration::from_secs(45)));
    /// # drop(source);
    /// ```
    #[must_use]
    pub fn read_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.project().config.read_timeout = timeout;
        self
    }

    /// Whether a line or an event over the [`limits`](Self::limits) ends the connection and
    /// reconnects with the `Last-Event-ID` of the last complete event (`true`, the default; the
    /// error is in the [`Reconnect`](super::Reconnect)), or ends the stream with it (`false`).
    /// A server that sends the same oversized event again each time makes the client reconnect
    /// at the backoff's pace ([`max_retries`](Self::max_retries) bounds that only while no
    /// connection delivers an event: one that does counts as healthy and resets the count);
    /// turn this off for such servers.
    ///
    /// ```
    /// let source = tower_sse::client::EventSource::get("http://127.0.0.1:3000/".parse().unwrap())
    ///     .reconnect_on_decode_error(false);
    /// # drop(source);
    /// ```
    #[must_use]
    pub fn reconnect_on_decode_error(mut self, reconnect: bool) -> Self {
        self.project().config.reconnect_on_decode_error = reconnect;
        self
    }

    /// Whether a refused certificate is retried like any lost connection (`false`, the
    /// default: it ends the stream with [`ErrorKind::Tls`](super::ErrorKind::Tls), since the
    /// same certificate would be met again). Turn it on for a server whose certificate is
    /// about to be fixed.
    ///
    /// ```
    /// let source = tower_sse::client::EventSource::get("https://127.0.0.1:3000/".parse().unwrap())
    ///     .reconnect_on_tls_error(true);
    /// # drop(source);
    /// ```
    #[must_use]
    pub fn reconnect_on_tls_error(mut self, reconnect: bool) -> Self {
        self.project().config.reconnect_on_tls_error = reconnect;
        self
    }

    /// The decoder's limits on line length and event size, in bytes (see
    /// [`Decoder`](super::Decoder#limits-and-security)). Going over either ends the connection
    /// with an error of kind [`ErrorKind::Decode`](super::ErrorKind::Decode), and by default
    /// reconnects (see [`reconnect_on_decode_error`](Self::reconnect_on_decode_error)).
    ///
    /// ```
    /// let source = tower_sse::client::EventSource::get("http://127.0.0.1:3000/".parse().unwrap())
    ///     .limits(64 * 1024, 1024 * 1024);
    /// # drop(source);
    /// ```
    #[must_use]
    pub fn limits(mut self, max_line_length: usize, max_event_size: usize) -> Self {
        let decoder = self.project().decoder;
        let mut replaced = std::mem::take(decoder)
            .with_max_line_length(max_line_length)
            .with_max_event_size(max_event_size);
        std::mem::swap(decoder, &mut replaced);
        self
    }

    /// The last event ID in force: what the next reconnection sends as `Last-Event-ID`
    /// (nothing when empty).
    ///
    /// ```
    /// let request = http::Request::get("http://127.0.0.1:3000/events")
    ///     .header("last-event-id", "41")
    ///     .body(Default::default())
    ///     .unwrap();
    /// let source = tower_sse::client::EventSource::request(request);
    /// assert_eq!(source.last_event_id(), "41");
    /// ```
    #[must_use]
    pub fn last_event_id(&self) -> &str {
        self.inner.decoder.last_event_id()
    }

    /// The current reconnection time: the configured one, or the server's last `retry:`.
    ///
    /// ```
    /// let source = tower_sse::client::EventSource::get("http://127.0.0.1:3000/".parse().unwrap());
    /// assert_eq!(source.reconnection_time(), std::time::Duration::from_secs(3));
    /// ```
    #[must_use]
    pub fn reconnection_time(&self) -> Duration {
        self.inner.backoff.base()
    }

    /// The HTTP service.
    ///
    /// ```
    /// let source = tower_sse::client::EventSource::get("http://127.0.0.1:3000/".parse().unwrap());
    /// let _client: &tower_sse::client::HttpClient = source.get_ref();
    /// ```
    #[must_use]
    pub fn get_ref(&self) -> &S {
        &self.inner.service
    }
}

impl<S, B> EventSource<S, B>
where
    S: HttpService<B>,
    S::Error: Into<BoxError>,
    <S::ResponseBody as Body>::Error: Into<BoxError>,
    B: Clone,
{
    /// Only the messages of this stream (no `Open` or `Reconnect` items; errors kept), to
    /// filter by event type with [`Messages::of_type`](super::Messages::of_type).
    ///
    /// ```
    /// let _messages = tower_sse::client::EventSource::get("http://127.0.0.1:3000/events".parse().unwrap())
    ///     .messages();
    /// ```
    pub fn messages(self) -> super::Messages<Self> {
        super::Messages::new(self)
    }

    /// Runs the stream to its end, calling `listeners` for each item: the callback style, on
    /// the same stream. Returns when the stream ends (a `204`, or after the error its
    /// [`on_error`](super::Listeners::on_error) saw).
    ///
    /// ```
    /// use tower_sse::client::{EventSource, Listeners};
    ///
    /// # async fn f() {
    /// EventSource::get("http://127.0.0.1:3000/events".parse().unwrap())
    ///     .dispatch(Listeners::new().on("message", |event| println!("{}", event.data())))
    ///     .await;
    /// # }
    /// ```
    pub async fn dispatch(mut self, mut listeners: super::Listeners) {
        while let Some(item) = std::future::poll_fn(|cx| Pin::new(&mut self).poll_next(cx)).await {
            listeners.call(&item);
        }
    }
}

impl<S, B> Stream for EventSource<S, B>
where
    S: HttpService<B>,
    S::Error: Into<BoxError>,
    <S::ResponseBody as Body>::Error: Into<BoxError>,
    B: Clone,
{
    type Item = Result<SseEvent, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().inner.as_mut().poll_next(cx)
    }
}

impl<S, B> FusedStream for EventSource<S, B>
where
    S: HttpService<B>,
    S::Error: Into<BoxError>,
    <S::ResponseBody as Body>::Error: Into<BoxError>,
    B: Clone,
{
    fn is_terminated(&self) -> bool {
        matches!(self.inner.state, State::Done)
    }
}

impl<S, B> fmt::Debug for EventSource<S, B>
where
    S: HttpService<B>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.inner.state {
            State::Idle | State::Preparing { .. } | State::Calling { .. } => "idle",
            State::Connecting { .. } => "connecting",
            State::Streaming { .. } => "open",
            State::Waiting { .. } => "waiting",
            State::Done => "done",
        };
        f.debug_struct("EventSource")
            .field("method", &self.inner.template.method)
            .field("uri", &self.inner.uri)
            .field("state", &state)
            .field("last_event_id", &self.last_event_id())
            .field("reconnection_time", &self.reconnection_time())
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

type Item = Option<Result<SseEvent, Error>>;

impl<S, B> Inner<S, B>
where
    S: HttpService<B>,
    S::Error: Into<BoxError>,
    <S::ResponseBody as Body>::Error: Into<BoxError>,
    B: Clone,
{
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Item> {
        loop {
            let mut this = self.as_mut().project();
            match this.state.as_mut().project() {
                StateProj::Idle => {
                    if let Some(err) = this.pending.take() {
                        return self.finish(Some(err));
                    }
                    let request = this
                        .template
                        .request(this.uri, this.decoder.last_event_id());
                    match this.hook {
                        Some(hook) => {
                            let attempt = Attempt {
                                number: this.backoff.attempts(),
                                last_event_id: this.decoder.last_event_id().to_owned(),
                            };
                            let (parts, body) = request.into_parts();
                            let future = hook.on_connect(parts, attempt);
                            this.state.set(State::Preparing {
                                future,
                                body: Some(body),
                            });
                        }
                        None => this.state.set(State::Calling {
                            request: Some(request),
                        }),
                    }
                }
                StateProj::Preparing { future, body } => match ready!(future.as_mut().poll(cx)) {
                    Ok(parts) => {
                        let Some(body) = body.take() else {
                            return self.finish(None);
                        };
                        this.state.set(State::Calling {
                            request: Some(Request::from_parts(parts, body)),
                        });
                    }
                    // The hook gave up: so does the client.
                    Err(err) => return self.finish(Some(Error::hook(err))),
                },
                StateProj::Calling { request } => {
                    if let Err(err) = ready!(this.service.poll_ready(cx)) {
                        return self.finish(Some(Error::service(err)));
                    }
                    let Some(request) = request.take() else {
                        return self.finish(None);
                    };
                    let future = this.service.call(request);
                    this.state.set(State::Connecting { future });
                }
                StateProj::Connecting { future } => match ready!(future.poll(cx)) {
                    Ok(response) => {
                        if let Some(item) = self.as_mut().on_response(response) {
                            return Poll::Ready(item);
                        }
                    }
                    Err(err) => {
                        let err: BoxError = err.into();
                        if !this.config.reconnect_on_tls_error
                            && super::connector::is_certificate_error(&*err)
                        {
                            // Trying again would meet the same certificate.
                            return self.finish(Some(Error::tls(err)));
                        }
                        return self.lost(Some(Error::transport(err)));
                    }
                },
                StateProj::Streaming { mut body, timeout } => {
                    match this.decoder.decode() {
                        Ok(Some(frame)) => {
                            let item = match frame {
                                Frame::Event(event) => {
                                    *this.delivered = true;
                                    Some(SseEvent::Message(event))
                                }
                                Frame::Comment(text) => {
                                    this.config.comments.then_some(SseEvent::Comment(text))
                                }
                                Frame::Retry(delay) => {
                                    this.backoff.set_base(delay);
                                    None
                                }
                            };
                            match item {
                                Some(item) => return Poll::Ready(Some(Ok(item))),
                                None => continue,
                            }
                        }
                        Ok(None) => {}
                        Err(err) if this.config.reconnect_on_decode_error => {
                            // This connection is beyond repair; a new one resumes after the
                            // last complete event.
                            return self.lost(Some(Error::decode(err)));
                        }
                        Err(err) => return self.finish(Some(Error::decode(err))),
                    }
                    match body.as_mut().poll_frame(cx) {
                        Poll::Ready(Some(Ok(frame))) => {
                            if let Ok(data) = frame.into_data() {
                                this.decoder.feed(&data);
                                if let (Some(limit), Some(sleep)) =
                                    (this.config.read_timeout, timeout.as_pin_mut())
                                {
                                    sleep.reset(crate::time::later(Instant::now(), limit));
                                }
                            }
                        }
                        Poll::Ready(Some(Err(err))) => {
                            return self.lost(Some(Error::transport(err)));
                        }
                        Poll::Ready(None) => return self.lost(None),
                        Poll::Pending => {
                            if let Some(sleep) = timeout.as_pin_mut() {
                                if sleep.poll(cx).is_ready() {
                                    return self.lost(Some(Error::timeout()));
                                }
                            }
                            return Poll::Pending;
                        }
                    }
                }
                StateProj::Waiting { sleep } => {
                    ready!(sleep.poll(cx));
                    this.state.set(State::Idle);
                }
                StateProj::Done => return Poll::Ready(None),
            }
        }
    }

    /// Handles an answer; `None` means "go on" (a redirect to follow).
    fn on_response(self: Pin<&mut Self>, response: Response<S::ResponseBody>) -> Option<Item> {
        let mut this = self.project();
        let status = response.status();
        if status == StatusCode::NO_CONTENT {
            this.state.set(State::Done);
            return Some(None);
        }
        if matches!(status.as_u16(), 301 | 302 | 307 | 308) {
            if *this.redirects >= this.config.max_redirects {
                this.state.set(State::Done);
                let err = Error::too_many_redirects(this.config.max_redirects);
                return Some(Some(Err(err)));
            }
            let location = response.headers().get(header::LOCATION);
            match location.and_then(|l| resolve(this.uri, l.as_bytes())) {
                // From `https` to plain `http`: the request (its headers, its `Last-Event-ID`,
                // its body) would travel in the clear. Refused, as browsers refuse mixed content.
                Some(next)
                    if this.uri.scheme() == Some(&http::uri::Scheme::HTTPS)
                        && next.scheme() != Some(&http::uri::Scheme::HTTPS) =>
                {
                    this.state.set(State::Done);
                    return Some(Some(Err(Error::downgrade(location.cloned()))));
                }
                Some(next) => {
                    *this.uri = next;
                    *this.redirects += 1;
                    this.state.set(State::Idle);
                    return None;
                }
                None => {
                    this.state.set(State::Done);
                    return Some(Some(Err(Error::redirect(location.cloned()))));
                }
            }
        }
        if !status.is_success() {
            this.state.set(State::Done);
            return Some(Some(Err(Error::status_code(status))));
        }
        let content_type = response.headers().get(header::CONTENT_TYPE);
        if !content_type.is_some_and(is_event_stream) {
            this.state.set(State::Done);
            return Some(Some(Err(Error::content_type(content_type.cloned()))));
        }
        let (parts, body) = response.into_parts();
        this.decoder.reset();
        *this.opened_at = Some(Instant::now());
        *this.delivered = false;
        let timeout = this.config.read_timeout.map(sleep);
        this.state.set(State::Streaming { body, timeout });
        Some(Some(Ok(SseEvent::Open(Open {
            status,
            headers: parts.headers,
            uri: this.uri.clone(),
        }))))
    }

    /// The connection failed or ended: schedule a reconnection, or give up.
    fn lost(self: Pin<&mut Self>, error: Option<Error>) -> Poll<Item> {
        let mut this = self.project();
        let healthy = this
            .opened_at
            .take()
            .is_some_and(|opened| *this.delivered || opened.elapsed() >= HEALTHY_AFTER);
        if healthy {
            this.backoff.reset();
        }
        if let Some(max) = this.config.max_retries {
            if this.backoff.attempts() >= max {
                this.state.set(State::Done);
                let err = Error::retries_exhausted(this.backoff.attempts(), error);
                return Poll::Ready(Some(Err(err)));
            }
        }
        let delay = this.backoff.next_delay();
        *this.uri = this.template.uri.clone();
        *this.redirects = 0;
        this.state.set(State::Waiting {
            sleep: sleep(delay),
        });
        Poll::Ready(Some(Ok(SseEvent::Reconnect(Reconnect {
            delay,
            attempt: this.backoff.attempts(),
            error,
        }))))
    }

    fn finish(self: Pin<&mut Self>, error: Option<Error>) -> Poll<Item> {
        self.project().state.set(State::Done);
        Poll::Ready(error.map(Err))
    }
}

impl<B: Clone> Template<B> {
    fn request(&self, uri: &Uri, last_event_id: &str) -> Request<B> {
        let mut request = Request::new(self.body.clone());
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = uri.clone();
        *request.version_mut() = self.version;
        let headers = request.headers_mut();
        headers.clone_from(&self.headers);
        if !same_origin(&self.uri, uri) {
            // Credentials stay with the origin they were meant for.
            for name in [
                header::AUTHORIZATION,
                header::COOKIE,
                header::PROXY_AUTHORIZATION,
            ] {
                headers.remove(name);
            }
        }
        headers.remove(LAST_EVENT_ID);
        // An ID the header cannot carry (a control character) is not sent.
        if !last_event_id.is_empty() {
            if let Ok(value) = HeaderValue::from_bytes(last_event_id.as_bytes()) {
                headers.insert(LAST_EVENT_ID, value);
            }
        }
        request
    }
}

fn is_event_stream(value: &HeaderValue) -> bool {
    let essence = value
        .as_bytes()
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default();
    essence
        .trim_ascii()
        .eq_ignore_ascii_case(b"text/event-stream")
}

fn same_origin(a: &Uri, b: &Uri) -> bool {
    a.scheme() == b.scheme() && a.authority() == b.authority()
}

/// Resolves a `Location` against the URI that answered (RFC 3986 §5.2, without removing dot
/// segments). The fragment is dropped: it is never sent.
fn resolve(base: &Uri, location: &[u8]) -> Option<Uri> {
    let location = std::str::from_utf8(location).ok()?.trim();
    let location = location.split('#').next().unwrap_or_default();
    if location.is_empty() {
        return None;
    }
    if has_scheme(location) {
        let uri: Uri = location.parse().ok()?;
        return (uri.scheme().is_some() && uri.authority().is_some()).then_some(uri);
    }
    if let Some(rest) = location.strip_prefix("//") {
        let scheme = base.scheme_str()?;
        let uri: Uri = format!("{scheme}://{rest}").parse().ok()?;
        return uri.authority().is_some().then_some(uri);
    }
    let path_and_query = if location.starts_with('/') {
        location.to_owned()
    } else if location.starts_with('?') {
        format!("{}{location}", base.path())
    } else {
        let path = base.path();
        let dir = &path[..path.rfind('/').map_or(0, |at| at + 1)];
        let dir = if dir.is_empty() { "/" } else { dir };
        format!("{dir}{location}")
    };
    let path_and_query: PathAndQuery = path_and_query.parse().ok()?;
    let mut parts = http::uri::Parts::default();
    parts.scheme = base.scheme().cloned();
    parts.authority = base.authority().cloned();
    parts.path_and_query = Some(path_and_query);
    Uri::from_parts(parts).ok()
}

/// `scheme ":"` at the start, per RFC 3986: a letter, then letters, digits, `+`, `-`, `.`.
fn has_scheme(location: &str) -> bool {
    let Some((scheme, _)) = location.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(base: &str, location: &str) -> Option<String> {
        resolve(&base.parse().unwrap(), location.as_bytes()).map(|u| u.to_string())
    }

    #[test]
    fn locations_resolve_against_the_current_uri() {
        let base = "http://a.test:8080/x/events?since=1";
        assert_eq!(
            res(base, "http://b.test/y").as_deref(),
            Some("http://b.test/y")
        );
        assert_eq!(res(base, "//c.test/z").as_deref(), Some("http://c.test/z"));
        assert_eq!(
            res(base, "/other?q=1#frag").as_deref(),
            Some("http://a.test:8080/other?q=1")
        );
        assert_eq!(
            res(base, "sub").as_deref(),
            Some("http://a.test:8080/x/sub")
        );
        assert_eq!(
            res(base, "?since=2").as_deref(),
            Some("http://a.test:8080/x/events?since=2")
        );
        assert_eq!(res("/events", "/moved").as_deref(), Some("/moved"));
        assert_eq!(res("/events", "next").as_deref(), Some("/next"));
        assert_eq!(res(base, ""), None);
        assert_eq!(res(base, "http:no-authority"), None);
        assert_eq!(res(base, "/bad path"), None);
    }

    #[test]
    fn content_type_essence_is_compared_case_insensitively() {
        for ok in [
            "text/event-stream",
            "Text/Event-Stream",
            "text/event-stream; charset=utf-8",
            " text/event-stream ;x",
        ] {
            assert!(is_event_stream(&HeaderValue::from_static(ok)), "{ok}");
        }
        for bad in ["text/plain", "text/event-streams", "", "application/json"] {
            assert!(!is_event_stream(&HeaderValue::from_static(bad)), "{bad}");
        }
    }

    #[test]
    fn request_headers() {
        let template = Template {
            method: Method::GET,
            uri: "http://a.test/events".parse().unwrap(),
            version: Version::HTTP_11,
            headers: HeaderMap::from_iter([
                (header::AUTHORIZATION, HeaderValue::from_static("Bearer t")),
                (LAST_EVENT_ID, HeaderValue::from_static("stale")),
            ]),
            body: (),
        };
        let same = template.request(&template.uri, "");
        assert!(same.headers().get(LAST_EVENT_ID).is_none());
        assert_eq!(same.headers()[header::AUTHORIZATION], "Bearer t");
        let moved = template.request(&"http://b.test/events".parse().unwrap(), "é7");
        assert!(moved.headers().get(header::AUTHORIZATION).is_none());
        assert_eq!(moved.headers()[LAST_EVENT_ID].as_bytes(), "é7".as_bytes());
        let control = template.request(&template.uri, "a\u{1}b");
        assert!(control.headers().get(LAST_EVENT_ID).is_none());
    }
}
