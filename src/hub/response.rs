//! A subscription as an axum response, with the [`REPLAY_HEADER`] that tells the client how
//! its `Last-Event-ID` was honoured.

use crate::replay::REPLAY_HEADER;

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
