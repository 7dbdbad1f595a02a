//! What an SSE response carries: a stream of events.
//!
//! - [`SseItem`]: what such a stream may yield: [`Event`], [`EncodedEvent`], or a `Result` of
//!   either (an error ends the response cleanly and is logged).
//! - [`EventStream`]: wraps any such stream as a response body that the [`Sse`](crate::Sse)
//!   service recognises; with the `axum` feature it is also an axum handler's return value.
//! - [`SseSource`]: the trait by which the service asks a response body for its stream.
//!
//! # Example
//!
//! ```
//! use futures_util::stream;
//! use tower_sse::{Event, EventStream};
//!
//! let body = EventStream::new(stream::iter([Event::new().data("hi")]));
//! let response = http::Response::new(body); // what a tower service behind `SseLayer` returns
//! # let _ = response;
//! ```

use std::{
    fmt,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use futures_core::Stream;
use http_body_util::Empty;
use pin_project_lite::pin_project;

use crate::{BoxError, EncodedEvent, Event};

/// What an event stream may yield.
///
/// Implemented for [`Event`] (encoded when it is sent), [`EncodedEvent`] (sent as is, shared)
/// and `Result<T, E>` of those, where an `Err` ends the response cleanly and is logged.
///
/// ```
/// use tower_sse::{Event, SseItem};
///
/// let bytes = Event::new().data("x").into_event().unwrap().into_bytes();
/// assert_eq!(&bytes[..], b"data: x\n\n");
/// let failed: Result<Event, std::io::Error> = Err(std::io::Error::other("boom"));
/// assert!(failed.into_event().is_err());
/// ```
pub trait SseItem {
    /// The encoded event, or the error that ends the stream.
    ///
    /// # Errors
    ///
    /// When the stream reports a failure.
    fn into_event(self) -> Result<EncodedEvent, BoxError>;
}

impl SseItem for Event {
    fn into_event(self) -> Result<EncodedEvent, BoxError> {
        Ok(self.encode())
    }
}

impl SseItem for EncodedEvent {
    fn into_event(self) -> Result<EncodedEvent, BoxError> {
        Ok(self)
    }
}

impl<T: SseItem, E: Into<BoxError>> SseItem for Result<T, E> {
    fn into_event(self) -> Result<EncodedEvent, BoxError> {
        self.map_err(Into::into)?.into_event()
    }
}

pin_project! {
    /// A stream of events, as a response body for the [`Sse`](crate::Sse) service (and, with
    /// the `axum` feature, as an axum handler's response).
    ///
    /// ```
    /// use tower_sse::{Event, EventStream};
    ///
    /// let events = EventStream::new(futures_util::stream::once(async { Event::new().data("x") }));
    /// # let _ = events;
    /// ```
    pub struct EventStream<S> {
        #[pin]
        stream: S,
    }
}

impl<S> EventStream<S> {
    /// Wraps `stream`.
    ///
    /// ```
    /// let s = tower_sse::EventStream::new(futures_util::stream::empty::<tower_sse::Event>());
    /// # let _ = s;
    /// ```
    pub fn new(stream: S) -> Self {
        Self { stream }
    }

    /// The wrapped stream.
    ///
    /// ```
    /// let s = tower_sse::EventStream::new(futures_util::stream::empty::<tower_sse::Event>());
    /// let _inner = s.into_inner();
    /// ```
    pub fn into_inner(self) -> S {
        self.stream
    }
}

impl<S> fmt::Debug for EventStream<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStream").finish_non_exhaustive()
    }
}

impl<S: Stream> Stream for EventStream<S> {
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.project().stream.poll_next(cx)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.stream.size_hint()
    }
}

/// What the [`Sse`](crate::Sse) service finds in a response body.
#[derive(Debug)]
pub enum Source<S, P> {
    /// An event stream: the service serves it as `text/event-stream`.
    Events(S),
    /// Anything else: passed through untouched.
    Passthrough(P),
}

/// A response body type the [`Sse`](crate::Sse) service knows how to read.
///
/// Implemented for [`EventStream`] (always events) and, with the `axum` feature, for
/// `axum::body::Body` (events when the handler returned an [`EventStream`], else passed
/// through). Implement it for your own body type to let the layer serve it.
///
/// ```
/// use tower_sse::{Event, EventStream, SseSource, stream::Source};
///
/// let body = EventStream::new(futures_util::stream::empty::<Event>());
/// let mut parts = http::Response::new(()).into_parts().0;
/// assert!(matches!(body.into_source(&mut parts), Source::Events(_)));
/// ```
pub trait SseSource: Sized {
    /// The event stream.
    type Stream: Stream<Item: SseItem>;
    /// The body of responses that are not event streams.
    type Passthrough: http_body::Body<Data = Bytes, Error: Into<BoxError>>;

    /// Splits the body into its event stream or its pass-through body. `parts` are the
    /// response's head, for implementations that keep the stream in an extension.
    fn into_source(
        self,
        parts: &mut http::response::Parts,
    ) -> Source<Self::Stream, Self::Passthrough>;
}

impl<S: Stream<Item: SseItem>> SseSource for EventStream<S> {
    type Stream = S;
    type Passthrough = Empty<Bytes>;

    fn into_source(self, _: &mut http::response::Parts) -> Source<S, Empty<Bytes>> {
        Source::Events(self.stream)
    }
}
