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
//! whose client grants no flow-control credit is reset after the layer's stall timeout. A
//! connection that sends no complete request head within `HEADER_READ_TIMEOUT_MS` (default
//! 10000) is closed, also one that sends nothing at all (as `tower_sse::serve` does).

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
    let header_read_timeout =
        Duration::from_millis(match std::env::var("HEADER_READ_TIMEOUT_MS") {
            Ok(ms) => ms.parse()?,
            Err(_) => 10_000,
        });
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
                let (service, watcher) = (service.clone(), graceful.watcher());
                tokio::spawn(async move {
                    // hyper's header-read timer starts with the first byte (the auto builder
                    // waits for it to tell HTTP/1.1 from HTTP/2): a connection that sends
                    // nothing is closed here.
                    let mut first = [0u8; 1];
                    let peeked = tokio::time::timeout(header_read_timeout, io.peek(&mut first));
                    if !matches!(peeked.await, Ok(Ok(n)) if n > 0) {
                        return;
                    }
                    // Then a request head must arrive in time (hyper needs a timer for that).
                    let mut builder = auto::Builder::new(StallExecutor::new());
                    builder
                        .http1()
                        .timer(TokioTimer::new())
                        .header_read_timeout(header_read_timeout);
                    let conn = builder
                        .serve_connection(TokioIo::new(io), TowerToHyperService::new(service))
                        .into_owned();
                    if let Err(err) = watcher.watch(conn).await {
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
