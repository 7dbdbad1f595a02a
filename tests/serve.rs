//! `tower_sse::serve` over real TCP: slowloris connections are closed, SSE over HTTP/1.1 and
//! h2c, graceful shutdown with open streams, and HTTP/2 streams that grant no credit are reset.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering::SeqCst},
    },
    time::Duration,
};

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
use tower_sse::{
    Event, EventStream, Shutdown, SseLayer,
    layer::{CloseReason, StreamInfo},
};

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

/// Counts the open event streams (`on_open` / `on_close`) and keeps why each one closed.
#[derive(Clone, Default)]
struct Streams {
    open: Arc<AtomicUsize>,
    closed: Arc<Mutex<Vec<CloseReason>>>,
}

impl Streams {
    fn open(&self) -> usize {
        self.open.load(SeqCst)
    }

    /// Waits (bounded) until `n` streams are open.
    async fn until_open(&self, n: usize) {
        let waited = timeout(Duration::from_secs(15), async {
            while self.open() != n {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(waited.is_ok(), "{} streams open, not {n}", self.open());
    }
}

/// Events of about 500 bytes every 10 ms, with a short stall timeout and counting hooks.
fn stalling_app(streams: &Streams, stall: Duration) -> Router {
    let (opened, closed) = (streams.clone(), streams.clone());
    Router::new()
        .route(
            "/events",
            get(|| async {
                let payload = "x".repeat(500);
                EventStream::new(
                    tokio_stream::wrappers::IntervalStream::new(tokio::time::interval(
                        Duration::from_millis(10),
                    ))
                    .enumerate()
                    .map(move |(n, _)| Event::new().id(n.to_string()).data(&payload)),
                )
            }),
        )
        .layer(
            SseLayer::new()
                .stall_timeout(stall)
                .on_open(move |_: &StreamInfo| {
                    opened.open.fetch_add(1, SeqCst);
                })
                .on_close(move |_: &StreamInfo, reason: CloseReason| {
                    closed.closed.lock().unwrap().push(reason);
                    closed.open.fetch_sub(1, SeqCst);
                }),
        )
}

/// An HTTP/2 connection to `addr` whose streams start with `window` bytes of credit.
async fn h2_connect(addr: std::net::SocketAddr, window: u32) -> h2::client::SendRequest<Bytes> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::Builder::new()
        .initial_window_size(window)
        .handshake::<_, Bytes>(tcp)
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// `GET /events` on the connection; the response head (not flow-controlled) and its body.
async fn h2_get(
    client: h2::client::SendRequest<Bytes>,
    addr: std::net::SocketAddr,
) -> (h2::client::SendRequest<Bytes>, h2::RecvStream) {
    let mut client = client.ready().await.unwrap();
    let request = http::Request::get(format!("http://{addr}/events"))
        .body(())
        .unwrap();
    let (response, _) = client.send_request(request, true).unwrap();
    let response = timeout(Duration::from_secs(5), response)
        .await
        .expect("a response head")
        .unwrap();
    assert_eq!(response.status(), 200);
    (client, response.into_body())
}

/// Streams opened with `SETTINGS_INITIAL_WINDOW_SIZE = 0` that never grant credit are reset
/// (`RST_STREAM`) after the stall timeout and released (their `on_close` runs, as
/// `Stalled`); the connection stays up. Before `serve` watched its HTTP/2 streams they were
/// held, and counted, for as long as the connection lived: hyper waits for credit without
/// writing, so the socket's write-stall timeout never fires.
#[tokio::test]
async fn zero_window_http2_streams_are_reset_and_released() {
    let streams = Streams::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = Shutdown::new();
    let app = stalling_app(&streams, Duration::from_millis(500));
    let server = tokio::spawn(
        tower_sse::serve(listener, app)
            .shutdown(&shutdown)
            .into_future(),
    );

    let mut client = h2_connect(addr, 0).await;
    let mut bodies = vec![];
    for _ in 0..5 {
        let (next, body) = h2_get(client, addr).await;
        client = next;
        bodies.push(body);
    }
    // All five are released on the server (well within this bound; the timeout is 0.5 s)...
    streams.until_open(0).await;
    assert_eq!(*streams.closed.lock().unwrap(), [CloseReason::Stalled; 5]);
    // ... and reset for the client, which never saw a byte of them.
    for mut body in bodies {
        let end = timeout(Duration::from_secs(5), body.data()).await.unwrap();
        let err = end.expect("a reset, not a clean end").unwrap_err();
        assert_eq!(err.reason(), Some(h2::Reason::CANCEL), "{err}");
    }
    // The connection itself is still up: another stream is answered.
    let (_client, _body) = h2_get(client, addr).await;
    streams.until_open(1).await;
    shutdown.trigger();
    timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// On one connection, streams whose reader stops granting credit are reset after the stall
/// timeout while a stream that reads (and grants credit) keeps flowing.
#[tokio::test]
async fn stopped_http2_readers_are_reset_while_a_reading_stream_flows() {
    let streams = Streams::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = Shutdown::new();
    let app = stalling_app(&streams, Duration::from_secs(1));
    let server = tokio::spawn(
        tower_sse::serve(listener, app)
            .shutdown(&shutdown)
            .into_future(),
    );

    // 4 KiB of credit per stream: a stream that is not read stalls after about 8 events.
    let client = h2_connect(addr, 4096).await;
    let (client, mut healthy) = h2_get(client, addr).await;
    let read = Arc::new(AtomicUsize::new(0));
    let counted = read.clone();
    let reader = tokio::spawn(async move {
        while let Some(data) = healthy.data().await {
            let data = data.unwrap();
            counted.fetch_add(data.len(), SeqCst);
            healthy.flow_control().release_capacity(data.len()).unwrap();
        }
        panic!("the healthy stream ended");
    });
    let mut stopped = vec![];
    let mut client = client;
    for _ in 0..3 {
        let (next, body) = h2_get(client, addr).await;
        client = next;
        stopped.push(body);
    }
    streams.until_open(1).await;
    assert_eq!(*streams.closed.lock().unwrap(), [CloseReason::Stalled; 3]);
    for mut body in stopped {
        // What fit in the window, then the reset.
        let end = timeout(Duration::from_secs(5), async {
            loop {
                match body.data().await {
                    Some(Ok(_)) => {}
                    Some(Err(err)) => return err,
                    None => panic!("a clean end instead of a reset"),
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(end.reason(), Some(h2::Reason::CANCEL), "{end}");
    }
    // The reading stream goes on after the resets: 100 more events come.
    let before = read.load(SeqCst);
    let flowed = timeout(Duration::from_secs(15), async {
        while read.load(SeqCst) < before + 100 * 500 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(flowed.is_ok(), "the reading stream stopped");
    assert!(!reader.is_finished());
    assert_eq!(streams.open(), 1);
    drop(client);
    reader.abort();
    shutdown.trigger();
    timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// With `max_streams_per_client(2)` behind `serve` (which gives the layer the peer's
/// address): the third stream from one address gets `429` with `Retry-After`, over HTTP/1.1
/// (one stream per connection) and over HTTP/2 (three streams on one connection: streams are
/// counted, not connections); a request that is not a stream is never refused; a closed
/// stream frees its slot (awaited through `on_close`, which runs after the slot is freed).
#[tokio::test]
async fn streams_over_the_per_client_cap_get_429_and_a_closed_one_frees_its_slot() {
    let (closed_tx, mut closed) = tokio::sync::mpsc::unbounded_channel();
    let app = Router::new()
        .route(
            "/events",
            get(|| async {
                EventStream::new(
                    futures_util::stream::iter([Event::new().id("1").data("hello")])
                        .chain(futures_util::stream::pending()),
                )
            }),
        )
        .route("/other", get(|| async { "ok" }))
        .layer(SseLayer::new().max_streams_per_client(2).on_close(
            move |_: &StreamInfo, _: CloseReason| {
                let _ = closed_tx.send(());
            },
        ));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = Shutdown::new();
    let server = tokio::spawn(
        tower_sse::serve(listener, app)
            .shutdown(&shutdown)
            .grace(Duration::from_secs(1))
            .into_future(),
    );
    let h1 = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let get = |path: &str, accept: bool| {
        let mut request = http::Request::get(format!("http://{addr}{path}"));
        if accept {
            request = request.header("accept", "text/event-stream");
        }
        h1.request(request.body(Empty::new()).unwrap())
    };
    let open = |response: http::Response<hyper::body::Incoming>| async move {
        assert_eq!(response.status(), 200);
        let mut body = response.into_body();
        let frame = timeout(Duration::from_secs(5), body.frame())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(&frame.into_data().unwrap()[..], b"id: 1\ndata: hello\n\n");
        body
    };

    let first = open(get("/events", true).await.unwrap()).await;
    let second = open(get("/events", false).await.unwrap()).await;
    for accept in [true, false] {
        let refused = get("/events", accept).await.unwrap();
        assert_eq!(refused.status(), 429, "accept: {accept}");
        assert_eq!(refused.headers()["retry-after"], "5");
        let text = refused.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            &text[..],
            b"too many open event streams from this address\n"
        );
    }
    let other = get("/other", false).await.unwrap();
    assert_eq!(other.status(), 200);

    // Closing a stream (its connection) frees its slot.
    drop(first);
    timeout(Duration::from_secs(5), closed.recv())
        .await
        .expect("the server saw the close")
        .unwrap();
    let third = open(get("/events", true).await.unwrap()).await;
    drop((second, third));
    for _ in 0..2 {
        timeout(Duration::from_secs(5), closed.recv())
            .await
            .expect("the server saw the close")
            .unwrap();
    }

    // HTTP/2: the streams of one connection count one each.
    let mut client = h2_connect(addr, 65_535).await;
    let mut bodies = vec![];
    for n in 0..3 {
        client = client.ready().await.unwrap();
        let request = http::Request::get(format!("http://{addr}/events"))
            .header("accept", "text/event-stream")
            .body(())
            .unwrap();
        let (response, _) = client.send_request(request, true).unwrap();
        let response = timeout(Duration::from_secs(5), response)
            .await
            .expect("a response head")
            .unwrap();
        let expected = if n < 2 { 200 } else { 429 };
        assert_eq!(response.status(), expected, "stream {n}");
        bodies.push(response.into_body());
    }
    drop(bodies);
    shutdown.trigger();
    timeout(Duration::from_secs(5), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// `max_header_bytes`: a request head over the cap (8 KiB by default) is answered `431`, and
/// the connection holds no more than that; a larger cap lets it through.
#[tokio::test]
async fn request_heads_over_max_header_bytes_are_431() {
    async fn status_for(
        serve: impl FnOnce(TcpListener) -> tokio::task::JoinHandle<()>,
    ) -> Vec<u16> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = serve(listener);
        let mut statuses = vec![];
        for cookie in [1_000, 12_000] {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            let head = format!(
                "GET /events HTTP/1.1\r\nHost: x\r\nCookie: a={}\r\n\r\n",
                "c".repeat(cookie)
            );
            stream.write_all(head.as_bytes()).await.unwrap();
            let mut buf = [0u8; 12];
            timeout(Duration::from_secs(5), stream.read_exact(&mut buf))
                .await
                .unwrap()
                .unwrap();
            let status = std::str::from_utf8(&buf[9..12]).unwrap().parse().unwrap();
            statuses.push(status);
        }
        server.abort();
        statuses
    }
    let shutdown = Shutdown::new();
    let app = app(&shutdown);
    let default = status_for(|l| {
        tokio::spawn(async move {
            let _ = tower_sse::serve(l, app).await;
        })
    })
    .await;
    assert_eq!(default, [200, 431], "8 KiB by default");
    let app = self::app(&shutdown);
    let raised = status_for(|l| {
        tokio::spawn(async move {
            let _ = tower_sse::serve(l, app).max_header_bytes(64 * 1024).await;
        })
    })
    .await;
    assert_eq!(raised, [200, 200], "64 KiB");
}
