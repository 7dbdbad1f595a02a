//! Conveniences over the [`EventSource`] stream: messages only, filtered by event type, and
//! `addEventListener`-style callbacks. Each is a thin layer over the same stream, so every
//! rule of the client (reconnection, `Last-Event-ID`, `retry:`, errors) holds unchanged.

use std::{
    collections::HashMap,
    fmt,
    pin::Pin,
    task::{Context, Poll, ready},
};

use futures_core::Stream;

use super::{Error, MessageEvent, Open, Reconnect, SseEvent};

/// The messages of a stream of [`SseEvent`]s, optionally of some event types only; errors
/// are kept. Made by [`EventSource::messages`](super::EventSource::messages).
///
/// ```
/// use futures_util::StreamExt;
/// use tower_sse::client::EventSource;
///
/// # async fn f() {
/// let mut ticks = EventSource::get("http://127.0.0.1:3001/clock".parse().unwrap())
///     .messages()
///     .of_type("tick");
/// while let Some(Ok(tick)) = ticks.next().await {
///     println!("{}", tick.data());
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct Messages<S> {
    inner: S,
    /// `None`: every type.
    types: Option<Vec<String>>,
}

impl<S> Messages<S> {
    pub(crate) fn new(inner: S) -> Self {
        Self { inner, types: None }
    }

    /// Keeps only events of type `event` (`"message"` for events without an `event:` field),
    /// as `addEventListener(event, ..)`. Call it again to keep several types.
    ///
    /// ```
    /// # async fn f() {
    /// let _both = tower_sse::client::EventSource::get("http://127.0.0.1:3000/events".parse().unwrap())
    ///     .messages()
    ///     .of_type("message")
    ///     .of_type("direct");
    /// # }
    /// ```
    #[must_use]
    pub fn of_type(mut self, event: impl Into<String>) -> Self {
        self.types.get_or_insert_with(Vec::new).push(event.into());
        self
    }

    fn wanted(&self, event: &MessageEvent) -> bool {
        self.types
            .as_ref()
            .is_none_or(|types| types.iter().any(|t| t == event.event()))
    }
}

impl<S> Stream for Messages<S>
where
    S: Stream<Item = Result<SseEvent, Error>> + Unpin,
{
    type Item = Result<MessageEvent, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            match ready!(Pin::new(&mut self.inner).poll_next(cx)) {
                None => return Poll::Ready(None),
                Some(Err(err)) => return Poll::Ready(Some(Err(err))),
                Some(Ok(SseEvent::Message(event))) if self.wanted(&event) => {
                    return Poll::Ready(Some(Ok(event)));
                }
                Some(Ok(_)) => {}
            }
        }
    }
}

type Callback<T> = Box<dyn FnMut(&T) + Send>;

/// Callbacks for an event source, `addEventListener`-style: one per event type, one for every
/// message, and for open, reconnect and error. Run them with
/// [`EventSource::dispatch`](super::EventSource::dispatch).
///
/// ```
/// use tower_sse::client::{EventSource, Listeners};
///
/// # async fn f() {
/// let listeners = Listeners::new()
///     .on_open(|open| eprintln!("open: {}", open.status()))
///     .on("tick", |tick| println!("tick {}", tick.data()))
///     .on_error(|err| eprintln!("gave up: {err}"));
/// EventSource::get("http://127.0.0.1:3001/clock".parse().unwrap())
///     .dispatch(listeners)
///     .await;
/// # }
/// ```
#[derive(Default)]
#[must_use]
pub struct Listeners {
    by_type: HashMap<String, Callback<MessageEvent>>,
    message: Option<Callback<MessageEvent>>,
    open: Option<Callback<Open>>,
    reconnect: Option<Callback<Reconnect>>,
    error: Option<Callback<Error>>,
}

impl Listeners {
    /// No callbacks yet.
    ///
    /// ```
    /// let _listeners = tower_sse::client::Listeners::new();
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Called for each event of type `event` (`"message"` for events without an `event:`
    /// field). A later call for the same type replaces the earlier one.
    ///
    /// ```
    /// let _l = tower_sse::client::Listeners::new().on("tick", |tick| println!("{}", tick.data()));
    /// ```
    pub fn on(
        mut self,
        event: impl Into<String>,
        callback: impl FnMut(&MessageEvent) + Send + 'static,
    ) -> Self {
        self.by_type.insert(event.into(), Box::new(callback));
        self
    }

    /// Called for every event, whatever its type (after its [`on`](Self::on) callback).
    ///
    /// ```
    /// let _l = tower_sse::client::Listeners::new().on_message(|event| println!("{}", event.id()));
    /// ```
    pub fn on_message(mut self, callback: impl FnMut(&MessageEvent) + Send + 'static) -> Self {
        self.message = Some(Box::new(callback));
        self
    }

    /// Called when a connection opens.
    ///
    /// ```
    /// let _l = tower_sse::client::Listeners::new().on_open(|open| println!("{}", open.uri()));
    /// ```
    pub fn on_open(mut self, callback: impl FnMut(&Open) + Send + 'static) -> Self {
        self.open = Some(Box::new(callback));
        self
    }

    /// Called before each reconnection (the connection was lost; the client waits
    /// [`Reconnect::delay`]).
    ///
    /// ```
    /// let _l = tower_sse::client::Listeners::new().on_reconnect(|r| println!("in {:?}", r.delay()));
    /// ```
    pub fn on_reconnect(mut self, callback: impl FnMut(&Reconnect) + Send + 'static) -> Self {
        self.reconnect = Some(Box::new(callback));
        self
    }

    /// Called with the error that ends the stream (a status, a wrong content type, a refused
    /// certificate, retries spent...).
    ///
    /// ```
    /// let _l = tower_sse::client::Listeners::new().on_error(|err| eprintln!("{err}"));
    /// ```
    pub fn on_error(mut self, callback: impl FnMut(&Error) + Send + 'static) -> Self {
        self.error = Some(Box::new(callback));
        self
    }

    pub(crate) fn call(&mut self, item: &Result<SseEvent, Error>) {
        match item {
            Ok(SseEvent::Message(event)) => {
                if let Some(callback) = self.by_type.get_mut(event.event()) {
                    callback(event);
                }
                if let Some(callback) = &mut self.message {
                    callback(event);
                }
            }
            Ok(SseEvent::Open(open)) => {
                if let Some(callback) = &mut self.open {
                    callback(open);
                }
            }
            Ok(SseEvent::Reconnect(reconnect)) => {
                if let Some(callback) = &mut self.reconnect {
                    callback(reconnect);
                }
            }
            Ok(_) => {}
            Err(err) => {
                if let Some(callback) = &mut self.error {
                    callback(err);
                }
            }
        }
    }
}

impl fmt::Debug for Listeners {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listeners")
            .field("types", &self.by_type.keys().collect::<Vec<_>>())
            .field("message", &self.message.is_some())
            .field("open", &self.open.is_some())
            .field("reconnect", &self.reconnect.is_some())
            .field("error", &self.error.is_some())
            .finish()
    }
}
