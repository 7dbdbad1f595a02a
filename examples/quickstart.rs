//! The README's axum quickstart: `cargo run --example quickstart`, then
//! `curl -N http://127.0.0.1:3003/events` (or `ADDR=127.0.0.1:8080 cargo run --example quickstart`).
use std::time::Duration;

use axum::{Router, routing::get};
use futures_util::StreamExt;
use tokio_stream::wrappers::IntervalStream;
use tower_sse::{Event, EventStream, LastEventId, Shutdown, SseLayer};

/// A count, one event a second, that resumes after the browser's `Last-Event-ID`.
async fn events(last: Option<LastEventId>) -> EventStream<impl futures_core::Stream<Item = Event>> {
    let first = last
        .and_then(|id| id.as_str().parse::<u64>().ok())
        .map_or(1, |seen| seen.saturating_add(1));
    let ticks = IntervalStream::new(tokio::time::interval(Duration::from_secs(1)));
    let counts = futures_util::stream::iter(first..=u64::MAX);
    EventStream::new(
        counts
            .zip(ticks)
            .map(|(n, _)| Event::new().id(n.to_string()).data("tick")),
    )
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let shutdown = Shutdown::new();
    let app = Router::new()
        .route("/events", get(events))
        .layer(SseLayer::new().shutdown(&shutdown));

    let addr = std::env::var("ADDR").unwrap_or_else(|_| "127.0.0.1:3003".into());
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on http://{}", listener.local_addr()?);

    // SIGINT or SIGTERM ends every open stream, so the graceful shutdown can return.
    shutdown.trigger_on_signal();
    // Header-read and write-stall timeouts, HTTP/1.1 and h2c, graceful shutdown.
    tower_sse::serve(listener, app).shutdown(&shutdown).await
}
