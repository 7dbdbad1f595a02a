//! Client side: a reconnecting [`EventSource`] over any tower HTTP service, and the
//! incremental, spec-exact event-stream [`Decoder`] under it.
//!
//! # The reconnecting client
//!
//! [`EventSource`] is a [`Stream`](futures_core::Stream) of `Result<`[`SseEvent`]`, `[`Error`]`>`:
//! [`SseEvent::Open`] for each connection, [`SseEvent::Message`] for each event,
//! [`SseEvent::Reconnect`] before each reconnection, and [`SseEvent::Comment`] when asked for.
//! It runs on any `tower::Service<http::Request<B>>` answering `http::Response` with a body of
//! `Bytes` ([`HttpService`]); [`EventSource::get`] and [`EventSource::request`] use
//! hyper-util's client ([`HttpClient`]), which with the `client` feature speaks `https://`
//! (rustls, the platform's certificate authorities, HTTP/2 by ALPN); with `client-plain` it
//! speaks `http://` only. A refused certificate is final ([`ErrorKind::Tls`]): the client does
//! not reconnect to a server it cannot trust.
//!
//! What it does, after the [WHATWG `EventSource`][es] and LaunchDarkly's `eventsource-client`:
//!
//! - Every request carries `Accept: text/event-stream` and `Cache-Control: no-store` (unless
//!   the request template sets them), and `Last-Event-ID` only when the last event ID is not
//!   empty. Method, headers and body are the template's, sent again on every reconnection.
//! - `2xx` with `Content-Type: text/event-stream` opens the stream. `204 No Content` ends it
//!   cleanly (no error, no reconnection): that is how a server says "stop". Any other status,
//!   or a wrong content type, ends it with an [`Error`] and no reconnection.
//! - `301`, `302`, `307` and `308` are followed (method and body kept; relative `Location`s
//!   resolved against the URI that answered; at most [`max_redirects`](EventSource::max_redirects)
//!   in a row; `Authorization`, `Cookie` and `Proxy-Authorization` are dropped when the redirect
//!   leaves the origin). Reconnections start again from the original URI. `303` is not
//!   followed (it would need a body-less `GET`).
//! - When a connection fails or ends, the client waits and reconnects. The first wait is the
//!   reconnection time: 3 s, or the server's latest `retry:`; each further failure in a row
//!   doubles it, up to [`max_retry_delay`](EventSource::max_retry_delay) (30 s; a longer
//!   `retry:` still wins), each wait drawn within `[d/2, d]` ([`jitter`](EventSource::jitter)).
//!   A connection that delivered an event, or stayed open for 1 s, was *healthy*: after it the
//!   backoff starts over. [`max_retries`](EventSource::max_retries) bounds the attempts in a
//!   row (default: unbounded).
//! - A server's input never panics the client; lines and events are bounded by the decoder's
//!   [limits](EventSource::limits).
//!
//! Each `Err` is the stream's last item. Failures it recovers from are reported in
//! [`Reconnect::error`] instead.
//!
//! # Example
//!
//! A server that sends two events per connection, resuming after `Last-Event-ID`, then answers
//! `204` when there is nothing left. (Any tower service works; this one runs in process.)
//!
//! ```
//! use std::{convert::Infallible, time::Duration};
//! use futures_util::StreamExt;
//! use http::{Request, Response, StatusCode};
//! use tower::ServiceBuilder;
//! use tower_sse::{Event, EventStream, LastEventId, SseLayer};
//! use tower_sse::client::{EventSource, SseEvent};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let service = ServiceBuilder::new()
//!     .layer(SseLayer::new().retry(Duration::from_millis(100)))
//!     .service_fn(|req: Request<()>| async move {
//!         let after: u32 = req
//!             .extensions()
//!             .get::<LastEventId>()
//!             .map_or(0, |id| id.as_str().parse().unwrap());
//!         let mut response = Response::new(EventStream::new(futures_util::stream::iter(
//!             (after + 1..=after + 2).map(|n| Event::new().id(n.to_string()).data(format!("#{n}"))),
//!         )));
//!         if after >= 4 {
//!             *response.status_mut() = StatusCode::NO_CONTENT;
//!         }
//!         Ok::<_, Infallible>(response)
//!     });
//!
//! let mut source = EventSource::new(service, Request::new(()));
//! let mut seen = Vec::new();
//! while let Some(item) = source.next().await {
//!     match item.expect("no error") {
//!         SseEvent::Message(event) => seen.push(format!("{} {}", event.id(), event.data())),
//!         SseEvent::Reconnect(r) => {
//!             assert!(r.delay() <= Duration::from_millis(100)); // the server's `retry:`
//!         }
//!         _ => {}
//!     }
//! }
//! assert_eq!(seen, ["1 #1", "2 #2", "3 #3", "4 #4"]);
//! assert_eq!(source.last_event_id(), "4");
//! # }
//! ```
//!
//! # The decoder
//!
//! The decoder turns the bytes of a `text/event-stream` body into [`Frame`]s: events
//! ([`MessageEvent`]), reconnection times and comments. It implements the
//! [WHATWG event stream interpretation][spec] to the letter:
//!
//! - one leading UTF-8 byte order mark is stripped, only at the start of the stream;
//! - lines end with CRLF, LF or a lone CR, and a CRLF split across two chunks is one line end;
//! - a line is split at its first colon, and one space after the colon is removed; a line
//!   starting with a colon is a comment; a line without a colon is a field with an empty value;
//! - `data` lines are joined with LF; `event` sets the type (else `"message"`); `id` sets the
//!   last event ID unless it contains NUL, and it stays in force for later events; `retry`
//!   counts only when it is all ASCII digits; other fields are ignored;
//! - a blank line dispatches the event, unless its data is empty; at the end of the stream an
//!   event without its blank line is discarded;
//! - invalid UTF-8 becomes U+FFFD REPLACEMENT CHARACTER.
//!
//! Decoding takes time linear in the input however it is chunked, and memory is bounded by a
//! maximum line length and a maximum event size (see [Limits and
//! security](Decoder#limits-and-security)).
//!
//! ```
//! use tower_sse::client::{Decoder, Frame, MessageEvent};
//! use tower_sse::Event;
//!
//! // What a server wrote, arriving in awkward pieces.
//! let mut wire = Vec::new();
//! wire.extend_from_slice(Event::new().id("1").data("line one\nline two").encode().as_bytes());
//! wire.extend_from_slice(Event::new().event("tick").data("2").encode().as_bytes());
//! wire.extend_from_slice(b": keep-alive\r\n");
//!
//! let mut decoder = Decoder::new();
//! let mut frames = Vec::new();
//! for chunk in wire.chunks(5) {
//!     decoder.feed(chunk);
//!     while let Some(frame) = decoder.decode()? {
//!         frames.push(frame);
//!     }
//! }
//!
//! assert_eq!(
//!     frames,
//!     [
//!         Frame::Event(MessageEvent::new("message", "line one\nline two", "1")),
//!         Frame::Event(MessageEvent::new("tick", "2", "1")),
//!         Frame::Comment("keep-alive".into()),
//!     ]
//! );
//! # Ok::<(), tower_sse::client::DecodeError>(())
//! ```
//!
//! [spec]: https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation
//! [es]: https://html.spec.whatwg.org/multipage/server-sent-events.html#the-eventsource-interface

mod decoder;
mod error;
mod source;

pub use decoder::{DecodeError, Decoder, Frame, MessageEvent};
pub use error::{Error, ErrorKind};
mod connector;
mod dispatch;
#[cfg(feature = "reqwest")]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
mod reqwest;

#[cfg(feature = "reqwest")]
pub use self::reqwest::Reqwest;

pub use dispatch::{Listeners, Messages};

pub use connector::{Conn, Connector};
#[cfg(feature = "client")]
pub use source::https_client_with_roots;
pub use source::{
    Attempt, EventSource, HttpClient, HttpService, OnConnect, Open, Reconnect, SseEvent,
    http_client,
};
