//! Telling an HTTP client how its `Last-Event-ID` was honoured.
//!
//! The reasoning is on [`REPLAY_HEADER`], which is public.

use http::{HeaderName, HeaderValue};

use super::Replay;

/// The response header that says how the request's `Last-Event-ID` was honoured: `none`,
/// `complete` or `history-lost` (see [`Replay::as_str`]).
///
/// A subscription knows whether its replay was complete
/// ([`Subscription::replay`](super::Subscription::replay)). Over HTTP
/// that is said twice, once for each kind of client:
///
/// - **This response header** (`Sse-Replay`), with one of the values of
///   [`Replay::as_str`]: `none` (no `Last-Event-ID` was sent), `complete` (every missed event
///   follows, then live ones), or `history-lost` (the id is unknown: evicted, from another
///   epoch or process, or never issued; what follows is the retained history or only live
///   events, per [`UnknownId`](super::UnknownId)). This is in the spirit of Mercure, whose hub
///   answers a reconnection with a `Last-Event-ID` response header so the subscriber can tell
///   where it resumed, and of Centrifugo's `recovered: false`. Readable by `fetch`-based and
///   server-side clients, not by a browser's `EventSource`.
/// - **An event**, opt-in with
///   [`Subscription::notify_history_lost`](super::Subscription::notify_history_lost): sent
///   first, without an id, so a page can say "some messages may be missing" and reload its
///   state.
///
/// With the `axum` feature, a [`Subscription`](super::Subscription) is itself an axum response, an
/// [`EventStream`](crate::EventStream) with the header set.
///
/// # Example
///
/// ```
/// use tower_sse::hub::{Hub, REPLAY_HEADER};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let hub = Hub::new();
/// let sub = hub.subscriber("t").last_event_id(Some("unknown")).subscribe().await.unwrap();
/// let response = http::Response::builder()
///     .header(REPLAY_HEADER, sub.replay().header_value())
///     .body(tower_sse::EventStream::new(sub))
///     .unwrap();
/// assert_eq!(response.headers()["sse-replay"], "history-lost");
/// # }
/// ```
pub const REPLAY_HEADER: HeaderName = HeaderName::from_static("sse-replay");

impl Replay {
    /// The value of [`REPLAY_HEADER`]: `"none"`, `"complete"` or `"history-lost"`.
    ///
    /// ```
    /// use tower_sse::hub::Replay;
    ///
    /// assert_eq!(Replay::NotRequested.as_str(), "none");
    /// assert_eq!(Replay::Complete.as_str(), "complete");
    /// assert_eq!(Replay::HistoryLost.as_str(), "history-lost");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotRequested => "none",
            Self::Complete => "complete",
            Self::HistoryLost => "history-lost",
        }
    }

    /// [`as_str`](Self::as_str) as a header value.
    ///
    /// ```
    /// assert_eq!(tower_sse::hub::Replay::Complete.header_value(), "complete");
    /// ```
    pub fn header_value(self) -> HeaderValue {
        HeaderValue::from_static(self.as_str())
    }
}

/// Serves the subscription as an event stream (for [`SseLayer`](crate::SseLayer), or alone
/// with its defaults) with the [`REPLAY_HEADER`] set.
///
/// ```
/// use axum::{Router, extract::State, response::IntoResponse, routing::get};
/// use http_body_util::BodyExt;
/// use tower::ServiceExt;
/// use tower_sse::{Event, LastEventId, SseLayer, hub::Hub};
///
/// async fn news(State(hub): State<Hub>, last: Option<LastEventId>) -> impl IntoResponse {
///     let last = last.as_ref().map(LastEventId::as_str);
///     hub.subscriber("news")
///         .last_event_id(last)
///         .subscribe()
///         .await
///         .map(|sub| sub.notify_history_lost(Event::new().event("history-lost").data("reload")))
///         .map_err(|_| http::StatusCode::FORBIDDEN)
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let hub = Hub::new();
/// hub.publish("news", Event::new().data("kept")).await.unwrap();
/// let app = Router::new()
///     .route("/news", get(news))
///     .with_state(hub.clone())
///     .layer(SseLayer::new());
///
/// let request = http::Request::get("/news")
///     .header("last-event-id", "from-another-process")
///     .body(axum::body::Body::empty())
///     .unwrap();
/// let response = app.oneshot(request).await.unwrap();
/// assert_eq!(response.headers()["sse-replay"], "history-lost");
/// assert_eq!(response.headers()["content-type"], "text/event-stream");
/// hub.close_topic("news", None).await.unwrap(); // ends the stream, so the body can be read to its end
/// let body = response.into_body().collect().await.unwrap().to_bytes();
/// let body = std::str::from_utf8(&body).unwrap();
/// assert!(body.starts_with("event: history-lost\ndata: reload\n\ndata: kept\nid: "));
/// # }
/// ```
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
impl axum_core::response::IntoResponse for super::Subscription {
    fn into_response(self) -> axum_core::response::Response {
        let replay = self.replay();
        let mut response = crate::EventStream::new(self).into_response();
        response
            .headers_mut()
            .insert(REPLAY_HEADER, replay.header_value());
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_are_distinct_and_lowercase() {
        let all = [Replay::NotRequested, Replay::Complete, Replay::HistoryLost];
        for (i, a) in all.iter().enumerate() {
            assert_eq!(a.as_str(), a.as_str().to_ascii_lowercase());
            for b in &all[i + 1..] {
                assert_ne!(a.as_str(), b.as_str());
            }
        }
        assert_eq!(REPLAY_HEADER.as_str(), "sse-replay");
    }
}
