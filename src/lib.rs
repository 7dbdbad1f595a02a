//! Server-Sent Events for tower, hyper and axum.
//!
//! `tower-sse` encodes events exactly as the [WHATWG spec][spec] reads them (and so that no
//! user string can inject a field or an event), encodes each event once into shared [`Bytes`],
//! and serves event streams through one tower layer, [`SseLayer`], with the headers, keep-alive
//! comments, `Last-Event-ID` parsing, client-gone detection and graceful shutdown that a
//! production SSE endpoint needs.
//!
//! # With axum
//!
//! A handler returns an [`EventStream`]; [`SseLayer`] serves it (feature `axum`). Wire
//! [`Shutdown`] to SIGINT/SIGTERM so `with_graceful_shutdown` can return while streams are open
//! (the README's quickstart, `examples/quickstart.rs`, is the complete program).
//!
//! ```
//! # #[cfg(feature = "axum")] {
//! use axum::{Router, routing::get};
//! use http_body_util::BodyExt;
//! use tower::ServiceExt;
//! use tower_sse::{Event, EventStream, LastEventId, Shutdown, SseLayer};
//!
//! async fn events(last: Option<LastEventId>) -> EventStream<impl futures_core::Stream<Item = Event>> {
//!     let from = last.map_or(0, |id| id.as_str().parse::<u64>().unwrap_or(0));
//!     EventStream::new(futures_util::stream::iter(
//!         (from + 1..=from + 2).map(|n| Event::new().id(n.to_string()).data(format!("tick {n}"))),
//!     ))
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let shutdown = Shutdown::new();
//! let app = Router::new()
//!     .route("/events", get(events))
//!     .layer(SseLayer::new().shutdown(&shutdown));
//! // axum::serve(listener, app).with_graceful_shutdown(shutdown.triggered()).await
//!
//! let request = http::Request::get("/events").header("last-event-id", "7");
//! let response = app.oneshot(request.body(axum::body::Body::empty()).unwrap()).await.unwrap();
//! assert_eq!(response.headers()["content-type"], "text/event-stream");
//! let body = response.into_body().collect().await.unwrap().to_bytes();
//! assert_eq!(&body[..], b"id: 8\ndata: tick 8\n\nid: 9\ndata: tick 9\n\n");
//! # }
//! # }
//! ```
//!
//! # With bare tower or hyper
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
//!         let events = futures_util::stream::iter(
//!             (1..=2).map(|n| Event::new().id(n.to_string()).data(format!("tick {n}"))),
//!         );
//!         Ok::<_, Infallible>(Response::new(EventStream::new(events)))
//!     });
//!
//! let response = service.oneshot(Request::new(())).await.unwrap();
//! let body = response.into_body().collect().await.unwrap().to_bytes();
//! assert_eq!(&body[..], b"id: 1\ndata: tick 1\n\nid: 2\ndata: tick 2\n\n");
//! # }
//! ```
//!
//! # Modules
//!
//! [`hub`] is pub/sub with topics, replay and scale-out over Redis; [`replay`] resumes shared
//! streams that are not the hub's; [`io`] disconnects clients that stop reading; `client` is a
//! decoder and a reconnecting client.
//!
//! # Features
//!
//! | feature | what it adds |
//! |---|---|
//! | `axum` | [`EventStream`] as an axum handler response, `Option<LastEventId>` extractor, [`IntoResponse`](https://docs.rs/axum/latest/axum/response/trait.IntoResponse.html) for [`hub::Subscription`] and the hub's errors, `io::WriteTimeoutListener` |
//! | `json` | [`Event::json_data`]: serialize straight into the event buffer |
//! | `client` | `client`: an incremental, spec-exact decoder and a reconnecting client, with HTTPS (rustls) |
//! | `client-plain` | the same without TLS (`http://` only) |
//! | `reqwest` | `client::Reqwest`: the client over a `reqwest::Client` |
//! | `test-util` | `test::EventReader`: read events back from any response body (enables `client-plain`) |
//! | `redis` | `hub::RedisBackend`: the hub on Redis Streams, so several processes act as one |
//! | `nats` | `hub::NatsBroker`: the hub on NATS JetStream, so several processes act as one |
//! | `server` | [`serve`]: HTTP/1.1 and h2c, header-read and write-stall timeouts, stalled HTTP/2 streams reset ([`StallExecutor`]), graceful shutdown |
//! | `metrics` | counters and gauges through the `metrics` facade (see [`metrics`]) |
//! | `compression` | `SseLayer::compression`: per-event gzip, deflate, br or zstd, negotiated from `Accept-Encoding` |
//!
//! No feature is on by default.
//!
//! [spec]: https://html.spec.whatwg.org/multipage/server-sent-events.html
//! [`Bytes`]: bytes::Bytes
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![warn(missing_debug_implementations, unreachable_pub, rust_2018_idioms)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod body;
pub mod event;
pub mod extension;
pub mod hub;
pub mod io;
pub mod layer;
pub mod replay;
pub mod shutdown;
mod stall;
pub mod stream;
mod time;
mod turn;

/// Reconnection delays, shared by the client and the brokers' readers.
#[cfg(any(feature = "client-plain", feature = "_broker"))]
mod backoff;

#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
mod serve;
#[cfg(feature = "_fuzz")]
#[doc(hidden)]
pub use serve::__fuzz_serve_head;
#[cfg(feature = "server")]
pub use serve::{RequestBody, Serve, serve};
#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub use stall::StallExecutor;

#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod metrics;

#[cfg(feature = "compression")]
#[cfg_attr(docsrs, doc(cfg(feature = "compression")))]
pub mod compress;
#[cfg(feature = "compression")]
pub use compress::Compression;
/// Without the `compression` feature: no response is compressed.
#[cfg(not(feature = "compression"))]
mod compress {
    use bytes::Bytes;
    use http::HeaderMap;

    /// No setting: compression is a feature away.
    #[derive(Debug, Clone, Copy)]
    pub(crate) struct Setting;

    /// Off (the only setting).
    pub(crate) const OFF: Setting = Setting;

    /// Nothing is ever negotiated.
    #[derive(Debug, Clone, Copy)]
    pub(crate) struct Chosen;

    impl Chosen {
        pub(crate) fn negotiate(_: Setting, _: &HeaderMap) -> Self {
            Self
        }
    }

    /// No compressor: frames pass as they are.
    #[derive(Debug)]
    pub(crate) struct Slot;

    impl Slot {
        pub(crate) fn none() -> Self {
            Self
        }

        pub(crate) fn start(_: Chosen, _: &mut HeaderMap) -> Self {
            Self
        }

        pub(crate) fn finish(&mut self) -> Result<Option<Bytes>, crate::BoxError> {
            Ok(None)
        }

        pub(crate) fn pending(&self) -> bool {
            false
        }

        #[inline(always)]
        pub(crate) fn apply(&mut self, data: Bytes) -> Result<Bytes, crate::BoxError> {
            Ok(data)
        }
    }
}

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod axum;

#[cfg(feature = "client-plain")]
#[cfg_attr(docsrs, doc(cfg(feature = "client-plain")))]
pub mod client;

#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod test;

pub use body::SseBody;
pub use event::{EncodedEvent, Event, EventError};
pub use extension::{Disconnect, LastEventId};
pub use layer::{Sse, SseLayer};
pub use shutdown::Shutdown;
pub use stream::{EventStream, SseItem, SseSource};

// The README's snippets are compiled and run as doctests, so they cannot drift from the code.
#[cfg(all(
    doctest,
    feature = "axum",
    feature = "json",
    feature = "client",
    feature = "redis",
    feature = "nats",
    feature = "metrics",
    feature = "reqwest",
    feature = "server",
    feature = "compression"
))]
#[doc = include_str!("../README.md")]
mod readme {}

/// A boxed error, as tower and hyper use.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
