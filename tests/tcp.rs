//! End-to-end tests over real TCP through hyper: disconnects and graceful shutdown.

use std::{
    convert::Infallible,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use futures_core::Stream;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::mpsc,
    time::timeout,
};
use tower::ServiceBuilder;
use tower_sse::{Event, EventStream, Shutdown, SseLayer};

/// One `hello` event, then nothing; reports its own drop.
struct Hello {
    sent: bool,
    dropped: mpsc::UnboundedSender<()>,
}

impl Stream for Hello {
    type Item = Event;
    fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Event>> {
        if self.sent {
            Poll::Pending
        } else {
            self.sent = true;
            Poll::Ready(Some(Event::new().id("1").data("hello")))
        }
    }
}

impl Drop for Hello {
    fn drop(&mut self) {
        let _ = self.dropped.send(());
    }
}

struct Server {
    addr: SocketAddr,
    drops: mpsc::UnboundedReceiver<()>,
    stopped: tokio::task::JoinHandle<()>,
}

/// A bare-hyper server (auto HTTP/1.1 + HTTP/2) with the layer; stops with `shutdown`, after
/// waiting for its connections through hyper-util's `GracefulShutdown`.
async fn hyper_server(layer: SseLayer, shutdown: Shutdown) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (drops_tx, drops) = mpsc::unbounded_channel();
    let service = ServiceBuilder::new()
        .layer(layer)
        .service_fn(move |_req: Request<Incoming>| {
            let dropped = drops_tx.clone();
            async move {
                Ok::<_, Infallible>(Response::new(EventStream::new(Hello {
                    sent: false,
                    dropped,
                })))
            }
        });
    let stopped = tokio::spawn(async move {
        let graceful = GracefulShutdown::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (io, _) = accepted.unwrap();
                    let conn = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(io), TowerToHyperService::new(service.clone()))
                        .into_owned();
                    let conn = graceful.watch(conn);
                    tokio::spawn(async move { let _ = conn.await; });
                }
                () = shutdown.triggered() => break,
            }
        }
        graceful.shutdown().await;
    });
    Server {
        addr,
        drops,
        stopped,
    }
}

async fn read_until(stream: &mut TcpStream, seen: &mut Vec<u8>, needle: &[u8]) {
    let found = timeout(Duration::from_secs(5), async {
        while !seen.windows(needle.len()).any(|w| w == needle) {
            let mut buf = [0; 4096];
            let n = stream.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "connection closed before {:?}",
                String::from_utf8_lossy(needle)
            );
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    assert!(
        found.is_ok(),
        "never saw {:?} in {:?}",
        String::from_utf8_lossy(needle),
        String::from_utf8_lossy(seen)
    );
}

async fn h1_connect(addr: SocketAddr) -> (TcpStream, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /events HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\n\r\n")
        .await
        .unwrap();
    let mut seen = vec![];
    read_until(&mut stream, &mut seen, b"data: hello\n\n").await;
    (stream, seen)
}

/// Waits (bounded) for a stream's drop; this is the property under test, not a performance
/// measurement.
async fn dropped_within(drops: &mut mpsc::UnboundedReceiver<()>, limit: Duration) {
    assert!(
        timeout(limit, drops.recv()).await.is_ok(),
        "the event stream was not dropped within {limit:?}"
    );
}

#[tokio::test]
async fn http1_headers_and_disconnect_drops_stream() {
    let mut server = hyper_server(
        SseLayer::new().keep_alive(Duration::from_secs(60)),
        Shutdown::new(),
    )
    .await;
    let (stream, seen) = h1_connect(server.addr).await;
    let head = String::from_utf8_lossy(&seen).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200 ok"), "{head}");
    assert!(
        head.contains("content-type: text/event-stream\r\n"),
        "{head}"
    );
    assert!(head.contains("cache-control: no-cache\r\n"), "{head}");
    assert!(head.contains("x-accel-buffering: no\r\n"), "{head}");
    assert!(head.contains("connection: keep-alive\r\n"), "{head}");
    assert!(head.contains("transfer-encoding: chunked\r\n"), "{head}");

    drop(stream);
    dropped_within(&mut server.drops, Duration::from_secs(1)).await;
}

async fn h2_client(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<Empty<Bytes>> {
    let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
    let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

async fn h2_get(
    sender: &mut hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    addr: SocketAddr,
) -> Response<Incoming> {
    let request = Request::get(format!("http://{addr}/events"))
        .body(Empty::new())
        .unwrap();
    sender.send_request(request).await.unwrap()
}

#[tokio::test]
async fn http2_headers_and_stream_reset_drops_stream() {
    let mut server = hyper_server(
        SseLayer::new().keep_alive(Duration::from_secs(60)),
        Shutdown::new(),
    )
    .await;
    let mut sender = h2_client(server.addr).await;
    let mut response = h2_get(&mut sender, server.addr).await;
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert!(response.headers().get("connection").is_none());
    let frame = response.body_mut().frame().await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "id: 1\ndata: hello\n\n");

    // Dropping the response body resets the stream while the connection stays up.
    drop(response);
    dropped_within(&mut server.drops, Duration::from_secs(1)).await;

    // And closing the whole connection drops a stream too.
    let mut response = h2_get(&mut sender, server.addr).await;
    response.body_mut().frame().await.unwrap().unwrap();
    drop(response);
    drop(sender);
    dropped_within(&mut server.drops, Duration::from_secs(1)).await;
}

#[tokio::test]
async fn http2_connection_close_drops_stream() {
    let mut server = hyper_server(
        SseLayer::new().keep_alive(Duration::from_secs(60)),
        Shutdown::new(),
    )
    .await;
    // hyper's client drives its HTTP/2 connection on a task of its own, so cut the TCP
    // connection in a proxy between the two: both sockets close without a stream reset.
    let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_addr = proxy.local_addr().unwrap();
    let upstream = server.addr;
    let proxy_task = tokio::spawn(async move {
        let (mut client, _) = proxy.accept().await.unwrap();
        let mut server = TcpStream::connect(upstream).await.unwrap();
        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
    });
    let mut sender = h2_client(proxy_addr).await;
    let mut response = h2_get(&mut sender, proxy_addr).await;
    response.body_mut().frame().await.unwrap().unwrap();
    proxy_task.abort();
    dropped_within(&mut server.drops, Duration::from_secs(1)).await;
    drop(response);
}

#[tokio::test]
async fn hyper_graceful_shutdown_returns_with_clients_connected() {
    let shutdown = Shutdown::new();
    let layer = SseLayer::new()
        .shutdown(&shutdown)
        .shutdown_event(Event::new().event("shutdown").data("bye"));
    let server = hyper_server(layer, shutdown.clone()).await;
    let (mut h1, mut seen) = h1_connect(server.addr).await;
    let mut sender = h2_client(server.addr).await;
    let mut h2 = h2_get(&mut sender, server.addr).await;
    h2.body_mut().frame().await.unwrap().unwrap();

    shutdown.trigger();
    let stopped = timeout(Duration::from_secs(5), server.stopped).await;
    assert!(
        stopped.is_ok(),
        "server did not stop with clients connected"
    );

    // Both clients saw the final event and a clean end.
    read_until(
        &mut h1,
        &mut seen,
        b"event: shutdown\ndata: bye\n\n\r\n0\r\n\r\n",
    )
    .await;
    let rest = h2.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(rest, "event: shutdown\ndata: bye\n\n");
}

#[tokio::test]
async fn axum_serve_with_graceful_shutdown_returns_with_clients_connected() {
    use axum::{Router, routing::get};

    let shutdown = Shutdown::new();
    let (drops_tx, _drops) = mpsc::unbounded_channel();
    let app = Router::new()
        .route(
            "/events",
            get(move || {
                let dropped = drops_tx.clone();
                async move {
                    EventStream::new(Hello {
                        sent: false,
                        dropped,
                    })
                }
            }),
        )
        .layer(
            SseLayer::new()
                .shutdown(&shutdown)
                .shutdown_event(Event::new().event("shutdown").data("bye")),
        );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.triggered())
            .into_future(),
    );
    let (mut client, mut seen) = h1_connect(addr).await;

    shutdown.trigger();
    let stopped = timeout(Duration::from_secs(5), server).await;
    assert!(
        stopped.is_ok(),
        "axum::serve did not return with a client connected"
    );
    read_until(&mut client, &mut seen, b"event: shutdown\ndata: bye\n\n").await;
}

#[tokio::test]
async fn client_that_stops_reading_is_disconnected_by_the_write_timeout() {
    use axum::{Router, routing::get};
    use tower_sse::{hub::Hub, io::WriteTimeoutListener, test::EventReader};

    let hub = Hub::new();
    let app = Router::new()
        .route(
            "/events",
            get({
                let hub = hub.clone();
                move || {
                    let hub = hub.clone();
                    async move { EventStream::new(hub.subscribe("t").await.unwrap()) }
                }
            }),
        )
        .layer(SseLayer::new());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let listener = WriteTimeoutListener::new(listener, Duration::from_millis(300));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    // The stalled client: sends its request, then never reads (but keeps the socket open).
    let (stalled, _) = h1_connect_raw(addr).await;
    // The fast client reads everything.
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build_http::<Empty<Bytes>>();
    let response = client
        .request(
            Request::get(format!("http://{addr}/events"))
                .body(Empty::new())
                .unwrap(),
        )
        .await
        .unwrap();
    let mut reader = EventReader::new(response.into_body());
    let fast = tokio::spawn(async move {
        let mut ids = vec![];
        while let Some(Ok(event)) = reader.next_event().await {
            if event.event() == "done" {
                break;
            }
            ids.push(event.data().len());
        }
        ids.len()
    });
    while hub.subscriber_count("t") < 2 {
        tokio::task::yield_now().await;
    }

    // Publish 64 KiB events until the stalled subscription is released (bounded: 3,000 events,
    // ~190 MiB, far beyond any socket buffer).
    let chunk = "x".repeat(64 * 1024);
    let mut published = 0;
    while hub.subscriber_count("t") == 2 && published < 3000 {
        hub.publish("t", Event::new().data(&chunk)).await.unwrap();
        published += 1;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(
        hub.subscriber_count("t"),
        1,
        "the stalled client was not disconnected after {published} events"
    );
    hub.publish("t", Event::new().event("done").data(""))
        .await
        .unwrap();
    let received = timeout(Duration::from_secs(10), fast)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(received, published, "the fast client missed events");
    drop(stalled); // held open until here: the server let go first
}

async fn h1_connect_raw(addr: SocketAddr) -> (TcpStream, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /events HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    (stream, vec![])
}
