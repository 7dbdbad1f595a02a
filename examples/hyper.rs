//! SseLayer in bare hyper 1 (through hyper-util), no axum.
//!
//! ```text
//! cargo run --example hyper
//! curl -N http://127.0.0.1:3002/
//! ```
//!
//! Serves HTTP/1.1 and HTTP/2 (prior knowledge: `curl --http2-prior-knowledge -N ..`) on `ADDR`
//! (default `127.0.0.1:3002`): a count from 1, one event a second, resumed after
//! `Last-Event-ID`. Ctrl-C ends every stream and waits for the connections with hyper-util's
//! `GracefulShutdown`. HTTP/2 streams are spawned by `tower_sse::StallExecutor`, so a stream
//! whose client grants no flow-control credit is reset after the layer's stall timeout.

use std::{convert::Infallible, net::SocketAddr, time::Duration};

use futures_util::stream;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_sse::{Event, EventStream, LastEventId, Shutdown, SseLayer, StallExecutor};

/// The handler: any tower service whose response body is an `EventStream`.
async fn count(
    req: Request<Incoming>,
) -> Result<Response<EventStream<impl futures_core::Stream<Item = Event>>>, Infallible> {
    // The layer parsed Last-Event-ID (header or `lastEventId` query) into an extension.
    let from = req
        .extensions()
        .get::<LastEventId>()
        .and_then(|id| id.as_str().parse::<u64>().ok())
        .unwrap_or(0);
    // Ids never wrap: after the largest one the stream ends.
    let events = stream::unfold(from.checked_add(1), |n| async move {
        let n = n?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        Some((
            Event::new().id(n.to_string()).data(format!("count {n}")),
            n.checked_add(1),
        ))
    });
    Ok(Response::new(EventStream::new(events)))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = std::env::var("ADDR")
        .unwrap_or_else(|_| "127.0.0.1:3002".into())
        .parse()?;
    let listener = TcpListener::bind(addr).await?;
    println!("listening on http://{}", listener.local_addr()?);

    let shutdown = Shutdown::new();
    let service = ServiceBuilder::new()
        .layer(SseLayer::new().shutdown(&shutdown))
        .service_fn(count);

    let graceful = GracefulShutdown::new();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (io, _) = accepted?;
                // A request head must arrive within 10 s (hyper needs a timer for that);
                // `tower_sse::serve` also closes connections that send nothing at all.
                let mut builder = auto::Builder::new(StallExecutor::new());
                builder
                    .http1()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10));
                let conn = builder
                    .serve_connection(TokioIo::new(io), TowerToHyperService::new(service.clone()))
                    .into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(err) = conn.await {
                        eprintln!("connection error: {err}");
                    }
                });
            }
            _ = &mut ctrl_c => break,
        }
    }
    // End every open stream, then wait (bounded) for hyper to close the connections.
    shutdown.trigger();
    if tokio::time::timeout(Duration::from_secs(5), graceful.shutdown())
        .await
        .is_err()
    {
        eprintln!("connections still open after 5 s; exiting anyway");
    }
    Ok(())
}
