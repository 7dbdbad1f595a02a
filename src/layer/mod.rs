//! [`SseLayer`] and the [`Sse`] service: serve any inner service's event stream as a correct
//! `text/event-stream` response.
//!
//! For every request the service
//! - parses `Last-Event-ID` (header, or `lastEventId` query parameter) into a
//!   [`LastEventId`](crate::LastEventId) request extension, when well formed;
//! - puts a [`Disconnect`](crate::Disconnect) handle into the request extensions.
//!
//! For every response whose body is an event stream (see [`SseSource`](crate::SseSource)) it
//! - sets `Content-Type: text/event-stream`, `Cache-Control: no-cache` (unless the inner service
//!   set its own), `X-Accel-Buffering: no` (so nginx does not buffer the stream), and
//!   `Connection: keep-alive` on HTTP/1.x only (the header is illegal in HTTP/2), and removes
//!   `Content-Length`;
//! - serves the stream as an [`SseBody`](crate::SseBody): keep-alive comments, coalesced
//!   frames, graceful shutdown, client-gone detection.
//!
//! Other responses pass through untouched. CORS comes from tower-http's `CorsLayer`, wrapped
//! around the service by [`SseLayer::cors`] or [`SseLayer::allow_origins`].
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response};
//! use http_body_util::BodyExt;
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_sse::{Event, EventStream, SseLayer};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let service = ServiceBuilder::new()
//!     .layer(SseLayer::new())
//!     .service_fn(|_req: Request<()>| async {
//!         let events = futures_util::stream::iter([Event::new().data("hello")]);
//!         Ok::<_, Infallible>(Response::new(EventStream::new(events)))
//!     });
//!
//! let response = service.oneshot(Request::new(())).await.unwrap();
//! assert_eq!(response.headers()["content-type"], "text/event-stream");
//! assert_eq!(response.headers()["cache-control"], "no-cache");
//! let body = response.into_body().collect().await.unwrap().to_bytes();
//! assert_eq!(&body[..], b"data: hello\n\n");
//! # }
//! ```

pub mod future;
#[allow(clippy::module_inception)] // layer/layer.rs, after the tower-http file layout
mod layer;
mod service;

pub(crate) mod hooks;
pub(crate) mod limit;

pub use self::{
    hooks::{CloseReason, OnClose, OnError, OnOpen, StreamInfo},
    layer::{InvalidOrigin, SseLayer},
    service::Sse,
};
