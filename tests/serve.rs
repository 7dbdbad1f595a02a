//! `tower_sse::serve` over real TCP: slowloris connections are closed, SSE over HTTP/1.1 and
//! h2c, and graceful shutdown with open streams.

use std::time::Duration;

use axum::{Router, routing::get};
use bytes::Bytes;
use futures_util::StreamExt as _;
use http_body_util::{BodyExt, Empty};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    time::{Instant, timeout},
};
use tower_sse::{Event, EventStream, Shutdown, SseLayer};

fn app(shutdown: &Shutdown) -> Router {
    Router::new()
        .route(
            "/events",
            get(|| async {
                EventStream::new(
                    futures_util::stream::iter([Event::new().id("1").data("hello")])
                        .chain(futures_util::stream::pending()),
                )
            }),
        )
        .layer(SseLayer::new().shutdown(shutdown))
}

/// Half-sent request heads, and connections that send nothing, are closed after the
/// header-read timeout (with `axum::serve` they were held forever).
#[tokio::test]
async fn slowloris_connections_are_closed() {
    let shutdown = Shutdown::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(
        tower_sse::serve(listener, app(&shutdown))
            .header_read_timeout(Duration::from_millis(300))
            .shutdown(&shutdown)
            .into_future(),
    );
    let mut idle = vec![];
    for n in 0..20 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        if n % 2 == 0 {
            stream
                .write_all(b"GET /events HTTP/1.1\r\nHost: x\r\n")
                .await
                .unwrap();
        }
        idle.push(stream);
    }
    let start = Instant::now();
    for mut stream in idle {
        let mut buf = [0u8; 256];
        // Closed by the server: end of stream (or a reset), long before this limit.
        let closed = timeout(Duration::from_secs(5), async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {} // e.g. a 408 answer before the close
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "a slow connection was still open after 5 s");
    }
    assert!(start.elapsed() < Duration::from_secs(5));
    shutdown.trigger();
    timeout(Duration::from_secs(5), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn sse_over_http1_and_h2c_then_a_graceful_shutdown() {
    let shutdown = Shutdown::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(
        tower_sse::serve(listener, app(&shutdown))
            .shutdown(&shutdown)
            .grace(Duration::from_secs(3))
            .into_future(),
    );
    let url = format!("http://{addr}/events");
    let h1 = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let h2 = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Empty<Bytes>>();
    let mut bodies = vec![];
    for (client, version) in [(h1, http::Version::HTTP_11), (h2, http::Version::HTTP_2)] {
        let response = client.get(url.parse().unwrap()).await.unwrap();
        assert_eq!(response.version(), version);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let mut body = response.into_body();
        let frame = timeout(Duration::from_secs(5), body.frame())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(&frame.into_data().unwrap()[..], b"id: 1\ndata: hello\n\n");
        bodies.push(body);
    }
    // Both streams are open: a shutdown ends them and `serve` returns.
    shutdown.trigger();
    let started = Instant::now();
    timeout(Duration::from_secs(5), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "returned before the grace ran out"
    );
    for mut body in bodies {
        let rest = timeout(Duration::from_secs(5), async {
            while let Some(frame) = body.frame().await {
                if frame.is_err() {
                    break;
                }
            }
        })
        .await;
        assert!(rest.is_ok(), "the stream ended");
    }
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no longer listening"
    );
}
