//! axum integration (feature `axum`).
//!
//! axum handlers produce type-erased bodies (`axum::body::Body`), so the layer cannot see an
//! event stream in the body type. Instead, when a handler returns an [`EventStream`], its
//! `IntoResponse` moves the stream into a response extension and gives the response a stand-in
//! body. [`SseLayer`](crate::SseLayer), applied with `Router::layer`, takes the stream out of
//! the extension and serves it with its settings; responses without one pass through.
//!
//! The stand-in body is itself a working SSE body with the default settings (keep-alive every
//! 15 s, no shutdown handle), so a handler still works without the layer, but only the layer
//! adds `Connection: keep-alive` on HTTP/1.x, `Last-Event-ID` parsing, graceful shutdown and
//! the [`Disconnect`](crate::Disconnect) handle.
//!
//! # Example
//!
//! ```
//! use axum::{Router, routing::get};
//! use http_body_util::BodyExt;
//! use tower::ServiceExt;
//! use tower_sse::{Event, EventStream, LastEventId, SseLayer};
//!
//! async fn events(last: Option<LastEventId>) -> EventStream<impl futures_core::Stream<Item = Event>> {
//!     let from = last.map_or(0, |id| id.as_str().parse::<u64>().unwrap_or(0));
//!     EventStream::new(futures_util::stream::iter(
//!         (from + 1..=from + 2).map(|n| Event::new().id(n.to_string()).data("tick")),
//!     ))
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let app = Router::new().route("/events", get(events)).layer(SseLayer::new());
//!
//! let request = http::Request::get("/events").header("last-event-id", "5").body(axum::body::Body::empty()).unwrap();
//! let response = app.oneshot(request).await.unwrap();
//! assert_eq!(response.headers()["content-type"], "text/event-stream");
//! let body = response.into_body().collect().await.unwrap().to_bytes();
//! assert_eq!(&body[..], b"id: 6\ndata: tick\n\nid: 7\ndata: tick\n\n");
//! # }
//! ```

use std::{
    convert::Infallible,
    fmt,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use axum_core::{
    body::Body,
    extract::OptionalFromRequestParts,
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use futures_core::Stream;
use http::request::Parts;
use http_body::Frame;
use pin_project_lite::pin_project;

use crate::{
    BoxError, EncodedEvent, EventStream, LastEventId, SseBody, SseItem, SseSource,
    layer::future::set_headers, stream::Source,
};

/// The event stream of an axum response, boxed.
pub type BoxEventStream = Pin<Box<dyn Stream<Item = Result<EncodedEvent, BoxError>> + Send>>;

/// Where an [`EventStream`] response keeps its stream for the layer to take.
#[derive(Clone)]
struct Slot(Arc<Mutex<Option<BoxEventStream>>>);

impl Slot {
    fn take(&self) -> Option<BoxEventStream> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
    }
}

pin_project! {
    struct IntoEvents<S> {
        #[pin]
        stream: S,
    }
}

impl<S: Stream<Item: SseItem>> Stream for IntoEvents<S> {
    type Item = Result<EncodedEvent, BoxError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.project()
            .stream
            .poll_next(cx)
            .map(|item| item.map(SseItem::into_event))
    }
}

impl<S> IntoResponse for EventStream<S>
where
    S: Stream<Item: SseItem> + Send + 'static,
{
    fn into_response(self) -> Response {
        let stream: BoxEventStream = Box::pin(IntoEvents {
            stream: self.into_inner(),
        });
        let slot = Slot(Arc::new(Mutex::new(Some(stream))));
        let mut response = Response::new(Body::new(StandIn {
            slot: slot.clone(),
            body: None,
        }));
        // Correct on its own; the layer sets these again with the HTTP version in hand.
        set_headers(response.headers_mut(), http::Version::HTTP_2);
        response.extensions_mut().insert(slot);
        response
    }
}

pin_project! {
    /// The body of an `EventStream` response that no layer took over.
    struct StandIn {
        slot: Slot,
        #[pin]
        body: Option<SseBody<BoxEventStream>>,
    }
}

impl http_body::Body for StandIn {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        if this.body.is_none() {
            match this.slot.take() {
                Some(stream) => this.body.set(Some(SseBody::new(stream))),
                None => return Poll::Ready(None),
            }
        }
        match this.body.as_pin_mut() {
            Some(body) => body.poll_frame(cx),
            None => Poll::Ready(None),
        }
    }
}

impl SseSource for Body {
    type Stream = BoxEventStream;
    type Passthrough = Body;

    /// Events when the handler returned an [`EventStream`], else the body as it is.
    fn into_source(self, parts: &mut http::response::Parts) -> Source<BoxEventStream, Body> {
        match parts
            .extensions
            .remove::<Slot>()
            .and_then(|slot| slot.take())
        {
            Some(stream) => Source::Events(stream),
            None => Source::Passthrough(self),
        }
    }
}

impl fmt::Debug for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Slot")
    }
}

/// `Option<LastEventId>` as an axum extractor: what the layer parsed, or (without the layer)
/// the same rules applied to the request head.
impl<S: Send + Sync> OptionalFromRequestParts<S> for LastEventId {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, Infallible> {
        Ok(parts
            .extensions
            .get::<LastEventId>()
            .cloned()
            .or_else(|| LastEventId::from_parts(&parts.headers, &parts.uri)))
    }
}
