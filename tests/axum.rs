//! The axum way in: handlers return `EventStream`, `Router::layer(SseLayer::new())`.

use std::time::Duration;

use axum::{
    Extension, Json, Router,
    body::Body,
    http::{HeaderValue, Request, StatusCode},
    routing::get,
};
use futures_util::stream;
use http_body_util::BodyExt;
use tower::ServiceExt;
use tower_sse::{Disconnect, Event, EventStream, LastEventId, SseLayer};

fn app(layer: SseLayer) -> Router {
    Router::new()
        .route(
            "/events",
            get(
                |last: Option<LastEventId>, Extension(d): Extension<Disconnect>| async move {
                    assert!(!d.is_closed());
                    let last = last.map(LastEventId::into_string).unwrap_or_default();
                    EventStream::new(stream::iter([Event::new()
                        .id("1")
                        .data(format!("after [{last}]"))]))
                },
            ),
        )
        .route(
            "/json",
            get(|| async { Json(serde_json::json!({"ok": true})) }),
        )
        .layer(layer)
}

async fn get_req(app: Router, req: Request<Body>) -> (http::response::Parts, bytes::Bytes) {
    let (parts, body) = app.oneshot(req).await.unwrap().into_parts();
    (parts, body.collect().await.unwrap().to_bytes())
}

#[tokio::test]
async fn handler_stream_is_served_with_layer_settings() {
    let req = Request::get("/events?lastEventId=9")
        .body(Body::empty())
        .unwrap();
    let (parts, body) = get_req(app(SseLayer::new().retry(Duration::from_secs(1))), req).await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(parts.headers["content-type"], "text/event-stream");
    assert_eq!(parts.headers["connection"], "keep-alive");
    assert_eq!(&body[..], b"retry: 1000\n\nid: 1\ndata: after [9]\n\n");
}

#[tokio::test]
async fn non_sse_responses_pass_through_untouched() {
    let req = Request::get("/json").body(Body::empty()).unwrap();
    let (parts, body) = get_req(app(SseLayer::new()), req).await;
    assert_eq!(parts.headers["content-type"], "application/json");
    assert!(parts.headers.get("x-accel-buffering").is_none());
    assert_eq!(&body[..], br#"{"ok":true}"#);

    let req = Request::get("/missing").body(Body::empty()).unwrap();
    let (parts, _) = get_req(app(SseLayer::new()), req).await;
    assert_eq!(parts.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn event_stream_works_without_the_layer() {
    let app = Router::new().route(
        "/events",
        get(|last: Option<LastEventId>| async move {
            let last = last.map(LastEventId::into_string).unwrap_or_default();
            EventStream::new(stream::iter([Event::new().data(last)]))
        }),
    );
    let req = Request::get("/events")
        .header("last-event-id", "5")
        .body(Body::empty())
        .unwrap();
    let response = app.oneshot(req).await.unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.headers()["x-accel-buffering"], "no");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"data: 5\n\n");
}

fn cors_app() -> Router {
    Router::new()
        .route(
            "/events",
            get(|| async { EventStream::new(stream::iter([Event::new().data("x")])) }),
        )
        .layer(SseLayer::new().allow_origins([
            HeaderValue::from_static("https://a.example"),
            HeaderValue::from_static("https://b.example"),
        ]))
}

#[tokio::test]
async fn cors_with_credentials_echoes_allowed_origin_only() {
    for origin in ["https://a.example", "https://b.example"] {
        let req = Request::get("/events")
            .header("origin", origin)
            .body(Body::empty())
            .unwrap();
        let (parts, body) = get_req(cors_app(), req).await;
        assert_eq!(parts.headers["access-control-allow-origin"], origin);
        assert_eq!(parts.headers["access-control-allow-credentials"], "true");
        let vary: Vec<_> = parts.headers.get_all("vary").iter().collect();
        assert!(
            vary.iter()
                .any(|v| v.to_str().unwrap().to_ascii_lowercase().contains("origin")),
            "{vary:?}"
        );
        assert_eq!(parts.headers["content-type"], "text/event-stream");
        assert_eq!(&body[..], b"data: x\n\n");
    }
    let req = Request::get("/events")
        .header("origin", "https://evil.example")
        .body(Body::empty())
        .unwrap();
    let (parts, _) = get_req(cors_app(), req).await;
    assert!(parts.headers.get("access-control-allow-origin").is_none());

    // A preflight (what a polyfill sending Last-Event-ID triggers) is answered too.
    let req = Request::options("/events")
        .header("origin", "https://a.example")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "last-event-id")
        .body(Body::empty())
        .unwrap();
    let (parts, _) = get_req(cors_app(), req).await;
    assert_eq!(
        parts.headers["access-control-allow-origin"],
        "https://a.example"
    );
    assert!(
        parts.headers["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("last-event-id")
    );
    assert_ne!(parts.headers["access-control-allow-origin"], "*");
}
