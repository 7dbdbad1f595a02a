//! Resuming streams after `Last-Event-ID`: everything the [`Hub`](crate::hub::Hub) and
//! [`ReplayLog`] share.
//!
//! - [`Replay`]: how a `Last-Event-ID` was honoured (`none`, `complete`, `history-lost`), told
//!   over HTTP with the [`REPLAY_HEADER`] response header; [`UnknownId`]: what an unknown id
//!   gets.
//! - [`ReplayLog`] and [`Resume`]: replay for a shared stream that is not the hub's. An app
//!   that fans out with its own channel (a `tokio::sync::broadcast` of [`EncodedEvent`]s, say)
//!   records each event once into a log **before** sending it (`tx.send(log.record(event))`).
//!   The handler subscribes to its channel, then calls [`ReplayLog::resume`] with the request's
//!   `Last-Event-ID`: the client gets every recorded event after that id, then the live
//!   stream, without the live events the replay already sent.
//!
//! The handler names the log, so a route with path parameters, a nested router or a stream
//! filtered per user picks the log that holds exactly what that client may see.
//!
//! Why the producer records, not the layer: the layer only sees one stream per client, so
//! recording there would cost a lock per event per client and would miss every event published
//! while nobody was connected. Recording at the source is once per event and misses nothing.
//!
//! The guarantee: an event is recorded before anyone can receive it, so for a client whose id
//! is still in the log, everything after it is either in the replay snapshot or arrives live
//! after the handler subscribed, and the overlap of the two is removed by id. The log is
//! bounded by count, bytes and age (one history type serves the log and the hub's topics); an
//! id that was evicted (or never recorded) is reported as `history-lost`, then the newest events
//! (100 by default), the whole log or nothing is sent, per [`UnknownId`].
//!
//! # Example
//!
//! ```
//! use axum::{Router, extract::State, routing::get};
//! use tokio::sync::broadcast;
//! use tokio_stream::wrappers::BroadcastStream;
//! use tower::ServiceExt;
//! use tower_sse::{EncodedEvent, Event, LastEventId, SseLayer, replay::{Resume, ReplayLog}, test::EventReader};
//!
//! #[derive(Clone)]
//! struct Feed {
//!     tx: broadcast::Sender<EncodedEvent>,
//!     log: ReplayLog,
//! }
//!
//! async fn feed(State(feed): State<Feed>, last: Option<LastEventId>) -> Resume<BroadcastStream<EncodedEvent>> {
//!     let live = BroadcastStream::new(feed.tx.subscribe()); // first subscribe,
//!     feed.log.resume(last.as_ref().map(LastEventId::as_str), live) // then take the replay
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let state = Feed { tx: broadcast::channel(16).0, log: ReplayLog::new() };
//! for n in 1..=3 {
//!     // Record first, then send: the log always has what a client may have seen.
//!     let _ = state.tx.send(state.log.record(Event::new().id(n.to_string()).data("x")));
//! }
//! let app = Router::new().route("/feed", get(feed)).with_state(state.clone()).layer(SseLayer::new());
//!
//! // A client that saw event 1 reconnects.
//! let request = http::Request::get("/feed").header("last-event-id", "1");
//! let response = app.oneshot(request.body(axum::body::Body::empty()).unwrap()).await.unwrap();
//! assert_eq!(response.headers()["sse-replay"], "complete");
//!
//! let _ = state.tx.send(state.log.record(Event::new().id("4").data("x"))); // live
//! drop(state); // end the live stream so the example ends
//!
//! let events = EventReader::new(response.into_body()).collect().await.unwrap();
//! let ids: Vec<&str> = events.iter().map(|e| e.id()).collect();
//! assert_eq!(ids, ["2", "3", "4"]);
//! # }
//! ```
//!
//! [`EncodedEvent`]: crate::EncodedEvent

mod history;
mod log;
mod outcome;
mod resume;

pub(crate) use self::{
    history::{Audience, History, Limits, Stored},
    outcome::keep_newest,
    resume::{Handoff, Overlap},
};
pub use self::{
    log::ReplayLog,
    outcome::{REPLAY_HEADER, Replay, UnknownId},
    resume::Resume,
};
