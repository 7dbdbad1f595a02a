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
    for n in 0..21 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        match n % 3 {
            // Half a head hyper would serve.
            0 => stream
                .write_all(b"GET /events HTTP/1.1\r\nHost: x\r\n")
                .await
                .unwrap(),
            // Half a head of an event-stream request, which `serve` reads itself.
            1 => stream
                .write_all(b"GET /events HTTP/1.1\r\nAccept: text/event-stream\r\n")
                .await
                .unwrap(),
            // Nothing at all.
            _ => {}
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
    // HTTP/1.1 with `Accept: text/event-stream` (served by `serve` itself), HTTP/1.1 without
    // it (served by hyper), and h2c.
    for (client, version, accept) in [
        (h1.clone(), http::Version::HTTP_11, "text/event-stream"),
        (h1, http::Version::HTTP_11, "*/*"),
        (h2, http::Version::HTTP_2, "text/event-stream"),
    ] {
        let request = http::Request::get(&url)
            .header("accept", accept)
            .body(Empty::new())
            .unwrap();
        let response = client.request(request).await.unwrap();
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
    h2_get_path(client, addr, "/events").await
}

/// `GET {path}` on the connection; the response head (not flow-controlled) and its body.
async fn h2_get_path(
    client: h2::client::SendRequest<Bytes>,
    addr: std::net::SocketAddr,
    path: &str,
) -> (h2::client::SendRequest<Bytes>, h2::RecvStream) {
    let mut client = client.ready().await.unwrap();
    let request = http::Request::get(format!("http://{addr}{path}"))
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
        // Event-stream requests are read by `serve` itself, the others by hyper: the same
        // limit either way.
        for (cookie, accept) in [
            (1_000, "*/*"),
            (12_000, "*/*"),
            (1_000, "text/event-stream"),
            (12_000, "text/event-stream"),
        ] {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            let head = format!(
                "GET /events HTTP/1.1\r\nHost: x\r\nAccept: {accept}\r\nCookie: a={}\r\n\r\n",
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
    assert_eq!(default, [200, 431, 200, 431], "8 KiB by default");
    let app = self::app(&shutdown);
    let raised = status_for(|l| {
        tokio::spawn(async move {
            let _ = tower_sse::serve(l, app).max_header_bytes(64 * 1024).await;
        })
    })
    .await;
    assert_eq!(raised, [200, 200, 200, 200], "64 KiB");
}

/// Routes for the lean HTTP/1.1 path: a finite event stream, a body echo (hyper's: it has a
/// body), plain text, and 404 for the rest.
fn lean_app() -> Router {
    Router::new()
        .route(
            "/finite",
            get(|| async {
                EventStream::new(futures_util::stream::iter([
                    Event::new().id("1").data("a"),
                    Event::new().id("2").data("b"),
                ]))
            }),
        )
        .route(
            "/echo",
            axum::routing::post(|body: String| async move { body }),
        )
        .route("/plain", get(|| async { "plain" }))
        .layer(SseLayer::new())
}

/// Asserts that `parts` occur in `text` in this order.
fn assert_in_order(text: &str, parts: &[&str]) {
    let mut at = 0;
    for part in parts {
        match text[at..].find(part) {
            Some(found) => at += found + part.len(),
            None => panic!("{part:?} not found after byte {at} of:\n{text}"),
        }
    }
}

/// One HTTP/1.1 connection, requests one after the other, read by hyper's client (a strict
/// parser of the framing): event streams served by `serve` itself end with their terminating
/// chunk and leave the connection usable, a 404 on that path has its `content-length`, and a
/// later request with a body is handed to hyper on the same connection.
#[tokio::test]
async fn lean_http1_responses_are_framed_for_keep_alive_and_hand_over_to_hyper() {
    let addr = serve_app(lean_app(), true, |s| s).await;
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut send, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    let driver = tokio::spawn(connection);
    let get = |path: &str, accept: &str| {
        http::Request::get(path)
            .header("host", "x")
            .header("accept", accept)
            .body(http_body_util::Full::new(Bytes::new()))
            .unwrap()
    };
    for round in 0..2 {
        let response = send
            .send_request(get("/finite", "text/event-stream"))
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "round {round}");
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        assert_eq!(response.headers()["transfer-encoding"], "chunked");
        assert!(response.headers().contains_key("date"));
        let body = timeout(Duration::from_secs(5), response.into_body().collect())
            .await
            .unwrap()
            .unwrap()
            .to_bytes();
        assert_eq!(&body[..], b"id: 1\ndata: a\n\nid: 2\ndata: b\n\n");

        let response = send
            .send_request(get("/missing", "text/event-stream"))
            .await
            .unwrap();
        assert_eq!(response.status(), 404);
        assert_eq!(response.headers()["content-length"], "0");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert!(body.is_empty());
    }
    let post = http::Request::post("/echo")
        .header("host", "x")
        .body(http_body_util::Full::new(Bytes::from_static(b"hello")))
        .unwrap();
    let response = send.send_request(post).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"hello");
    // After the handover the connection is hyper's, event streams included.
    let response = send
        .send_request(get("/finite", "text/event-stream"))
        .await
        .unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"id: 1\ndata: a\n\nid: 2\ndata: b\n\n");
    drop(send);
    timeout(Duration::from_secs(5), driver)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// Frames larger than the socket takes at once: the lean path's first, direct write is
/// partial and the timed write sends the rest; hyper's client reads every byte in order,
/// with the framing intact, and the connection stays usable.
#[tokio::test]
async fn lean_frames_larger_than_one_write_arrive_whole() {
    let big = "x".repeat(6 << 20);
    let data = big.clone();
    let app = Router::new()
        .route(
            "/big",
            get(move || {
                let data = data.clone();
                async move {
                    EventStream::new(futures_util::stream::iter([
                        Event::new().data(&data[..]),
                        Event::new().data("after"),
                    ]))
                }
            }),
        )
        .layer(SseLayer::new());
    let addr = serve_app(app, true, |s| s).await;
    let mut send = http1_client(addr).await;
    for _ in 0..2 {
        let (head, body) = stream_request(&mut send, "/big").await;
        assert_eq!(head.headers["transfer-encoding"], "chunked");
        let want = format!("data: {big}\n\ndata: after\n\n");
        assert_eq!(body.len(), want.len());
        assert!(body == want.as_bytes(), "the bytes differ");
    }
}

/// hyper's HTTP/1.1 client on one new connection to `addr`.
async fn http1_client(
    addr: std::net::SocketAddr,
) -> hyper::client::conn::http1::SendRequest<http_body_util::Full<Bytes>> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (send, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(connection);
    send
}

/// `GET path` with `Accept: text/event-stream` on `send`: the response's head and its whole
/// body (within 20 s).
async fn stream_request(
    send: &mut hyper::client::conn::http1::SendRequest<http_body_util::Full<Bytes>>,
    path: &str,
) -> (http::response::Parts, Bytes) {
    let request = http::Request::get(path)
        .header("host", "x")
        .header("accept", "text/event-stream")
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let (head, body) = send.send_request(request).await.unwrap().into_parts();
    let body = timeout(Duration::from_secs(20), body.collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    (head, body)
}

/// `GET /frames` answered with a body whose frames are `frames`: with a `Content-Length` of
/// `length`, or chunked without one.
fn frames_app(length: Option<usize>, frames: Vec<Bytes>) -> Router {
    Router::new().route(
        "/frames",
        get(move || {
            let frames = frames.clone();
            async move {
                let body =
                    futures_util::stream::iter(frames.into_iter().map(Ok::<_, std::io::Error>));
                let mut response = http::Response::builder();
                if let Some(length) = length {
                    response = response.header("content-length", length);
                }
                response.body(axum::body::Body::from_stream(body)).unwrap()
            }
        }),
    )
}

/// `len` bytes that differ from their neighbours, so a repeated or skipped stretch shows.
fn pattern(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect::<Vec<u8>>()
        .into()
}

/// `Content-Length` bodies through the lean path's partial writes: frames larger than the
/// socket takes (and an empty one) arrive byte for byte, twice on one connection; a body longer
/// than its length is cut at the length (mid-frame too), then the connection closes.
#[tokio::test]
async fn lean_content_length_bodies_larger_than_one_write_arrive_exactly() {
    let frames = vec![
        pattern(3 << 20, 1),
        Bytes::new(),
        pattern(5 << 20, 7),
        pattern(1, 9),
    ];
    let whole = frames.concat();
    let addr = serve_app(frames_app(Some(whole.len()), frames), true, |s| s).await;
    let mut send = http1_client(addr).await;
    for _ in 0..2 {
        let (_, body) = stream_request(&mut send, "/frames").await;
        assert_eq!(body.len(), whole.len());
        assert!(body == whole, "the bytes differ");
    }

    for (length, frames) in [
        (4 << 20, vec![pattern(5 << 20, 3)]),
        (3 << 20, vec![pattern(1 << 20, 4), pattern(3 << 20, 5)]),
        (5, vec![pattern(10, 6)]),
        (0, vec![pattern(10, 6)]),
    ] {
        let want = frames.concat()[..length].to_vec();
        let addr = serve_app(frames_app(Some(length), frames), true, |s| s).await;
        // The head is read here (a 200); then the body, to the close.
        let mut stream = stream_at(addr, "/frames").await;
        let mut body = Vec::new();
        timeout(Duration::from_secs(20), stream.read_to_end(&mut body))
            .await
            .expect("the connection closes after the length")
            .unwrap();
        assert_eq!(body.len(), length);
        assert!(body == want, "the bytes differ (length {length})");
    }
}

/// A chunked body of many small frames (up to and just over the size the lean path copies
/// into one buffer for a single `write`) to a client that reads in bursts with pauses: the
/// socket fills again and again, so frames are cut by partial writes wherever they happen to
/// be, and the timed write sends the rest. The chunks, decoded, are the frames byte for byte.
#[tokio::test]
async fn lean_small_chunks_through_partial_writes_arrive_exactly() {
    let frames: Vec<Bytes> = (0..40_000u32)
        .map(|i| pattern(1 + (i as usize * 37) % 1100, i as u8))
        .collect();
    let whole = frames.concat();
    let addr = serve_app(frames_app(None, frames), true, |s| s).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            b"GET /frames HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\
              Connection: close\r\n\r\n",
        )
        .await
        .unwrap();
    let mut raw = Vec::new();
    let mut buf = vec![0; 1 << 20];
    timeout(Duration::from_secs(30), async {
        loop {
            // Let the server fill the socket, then take a burst.
            tokio::time::sleep(Duration::from_millis(5)).await;
            let mut burst = 0;
            while burst < buf.len() {
                match stream.read(&mut buf[..]).await.unwrap() {
                    0 => return,
                    n => {
                        raw.extend_from_slice(&buf[..n]);
                        burst += n;
                    }
                }
            }
        }
    })
    .await
    .expect("the response ends and the connection closes");
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head")
        + 4;
    let head = String::from_utf8_lossy(&raw[..head_end]).to_lowercase();
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    // Decode the chunks: a size line, the data, CRLF; the last chunk is empty.
    let mut body = Vec::new();
    let mut rest = &raw[head_end..];
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("a chunk size line");
        let size = usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).unwrap(), 16)
            .unwrap_or_else(|err| panic!("a chunk size line: {err} at byte {}", body.len()));
        rest = &rest[line_end + 2..];
        assert!(rest.len() >= size + 2, "a chunk cut short");
        body.extend_from_slice(&rest[..size]);
        assert_eq!(&rest[size..size + 2], b"\r\n", "a chunk's CRLF");
        rest = &rest[size + 2..];
        if size == 0 {
            break;
        }
    }
    assert!(rest.is_empty(), "bytes after the last chunk");
    assert_eq!(body.len(), whole.len());
    assert!(body == whole, "the bytes differ");
}

/// Pipelined requests in one write: answered in order, across the handover to hyper, and a
/// `Connection: close` closes the connection after its response.
#[tokio::test]
async fn lean_http1_answers_pipelined_requests_in_order() {
    let addr = serve_app(lean_app(), true, |s| s).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            b"GET /finite HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n\
              GET /missing HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n\
              GET /finite HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n\
              POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
              GET /plain HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
    let text = read_for(&mut stream, 10)
        .await
        .expect("the server closed the connection");
    assert_in_order(
        &text,
        &[
            "HTTP/1.1 200 OK\r\n",
            "\r\n\r\n",
            // Both events were ready at once: one chunk, as a rule.
            "id: 1\ndata: a\n\n",
            "id: 2\ndata: b\n\n\r\n",
            "0\r\n\r\n",
            "HTTP/1.1 404 Not Found\r\n",
            "HTTP/1.1 200 OK\r\n",
            "id: 2\ndata: b\n\n",
            "0\r\n\r\n",
            "HTTP/1.1 200 OK\r\n",
            "\r\n\r\nhello",
            "HTTP/1.1 200 OK\r\n",
            "\r\n\r\nplain",
        ],
    );
    assert!(text.ends_with("plain"), "{text}");

    // `Connection: close` on the lean path: one response, then the close.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            b"GET /finite HTTP/1.1\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n\
              GET /finite HTTP/1.1\r\nAccept: text/event-stream\r\n\r\n",
        )
        .await
        .unwrap();
    let text = read_for(&mut stream, 10)
        .await
        .expect("the server closed the connection");
    assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "{text}");
    assert!(text.contains("\r\nconnection: close\r\n"), "{text}");
    assert!(text.ends_with("0\r\n\r\n"), "{text}");
}

/// Reads a response head byte by byte (bounded), leaving the body in the stream.
async fn read_head(stream: &mut TcpStream) -> Vec<u8> {
    let mut head = vec![];
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        timeout(Duration::from_secs(5), stream.read_exact(&mut byte))
            .await
            .unwrap()
            .unwrap();
        head.push(byte[0]);
    }
    head
}

/// Opens `GET /events` with `Accept: text/event-stream` on a raw connection and reads its head.
async fn lean_stream(addr: std::net::SocketAddr) -> TcpStream {
    stream_at(addr, "/events").await
}

/// Opens `GET path` with `Accept: text/event-stream` on a raw connection and reads its `200`
/// head.
async fn stream_at(addr: std::net::SocketAddr, path: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    get_stream(&mut stream, path).await;
    stream
}

/// Sends `GET path` with `Accept: text/event-stream` on `stream` and reads its `200` head.
async fn get_stream(stream: &mut TcpStream, path: &str) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let head = read_head(stream).await;
    assert!(head.starts_with(b"HTTP/1.1 200 OK\r\n"), "{path}");
}

/// An endless event stream: `tick` every 20 ms.
fn ticks() -> EventStream<impl futures_util::Stream<Item = Event> + Send + 'static> {
    let interval = tokio::time::interval(Duration::from_millis(20));
    EventStream::new(
        tokio_stream::wrappers::IntervalStream::new(interval).map(|_| Event::new().data("tick")),
    )
}

/// Reads `stream` until `n` ticks came; each read within 5 s, the stream open throughout.
async fn until_ticks(stream: &mut TcpStream, n: usize) {
    let mut seen = Vec::new();
    while seen.windows(4).filter(|w| w == b"tick").count() < n {
        let mut chunk = [0u8; 256];
        let read = timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .expect("the stream goes on")
            .unwrap();
        assert_ne!(read, 0, "the stream was closed");
        seen.extend_from_slice(&chunk[..read]);
    }
}

/// Waits (bounded) until no stream is open, and returns why they closed.
async fn until_all_closed(streams: &Streams) -> Vec<CloseReason> {
    streams.until_open(0).await;
    streams.closed.lock().unwrap().clone()
}

/// A client that goes away while its stream is idle (between events no write would notice)
/// has its stream released at once, through the read side.
#[tokio::test]
async fn a_lean_stream_whose_client_goes_away_is_released() {
    let streams = Streams::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // One event an hour: only the read side can see the client go.
    let (opened, closed) = (streams.clone(), streams.clone());
    let app = Router::new()
        .route(
            "/events",
            get(|| async {
                EventStream::new(
                    futures_util::stream::iter([Event::new().data("first")])
                        .chain(futures_util::stream::pending()),
                )
            }),
        )
        .layer(
            SseLayer::new()
                .on_open(move |_: &StreamInfo| {
                    opened.open.fetch_add(1, SeqCst);
                })
                .on_close(move |_: &StreamInfo, reason: CloseReason| {
                    closed.closed.lock().unwrap().push(reason);
                    closed.open.fetch_sub(1, SeqCst);
                }),
        );
    tokio::spawn(tower_sse::serve(listener, app).into_future());
    let clients: Vec<_> = futures_util::future::join_all((0..3).map(|_| lean_stream(addr))).await;
    streams.until_open(3).await;
    drop(clients);
    let reasons = until_all_closed(&streams).await;
    assert_eq!(reasons, [CloseReason::ClientGone; 3]);
}

/// The same after an earlier response on the connection that waited for its events: the
/// read side, watched through a flag during that response and read directly for the next
/// request's head, is watched again for the second stream (found by the session 9 change that
/// stopped asking for read readiness after every event: without forgetting the first
/// response's registration, the client's leaving went unseen).
#[tokio::test]
async fn a_second_lean_stream_on_a_connection_whose_client_goes_away_is_released() {
    let streams = Streams::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (opened, closed) = (streams.clone(), streams.clone());
    let app = Router::new()
        .route(
            "/slow-finite",
            get(|| async {
                // Waits between its events, so the read side is watched, then ends.
                EventStream::new(
                    futures_util::stream::iter(["a", "b"]).then(|data| async move {
                        tokio::time::sleep(Duration::from_millis(30)).await;
                        Event::new().data(data)
                    }),
                )
            }),
        )
        .route(
            "/events",
            get(|| async { EventStream::new(futures_util::stream::pending::<Event>()) }),
        )
        .layer(
            SseLayer::new()
                .on_open(move |_: &StreamInfo| {
                    opened.open.fetch_add(1, SeqCst);
                })
                .on_close(move |_: &StreamInfo, reason: CloseReason| {
                    closed.closed.lock().unwrap().push(reason);
                    closed.open.fetch_sub(1, SeqCst);
                }),
        );
    tokio::spawn(tower_sse::serve(listener, app).into_future());
    let mut stream = stream_at(addr, "/slow-finite").await;
    let mut body = Vec::new();
    while !body.ends_with(b"0\r\n\r\n") {
        let mut chunk = [0u8; 256];
        let n = timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert_ne!(n, 0, "closed before the end of the first response");
        body.extend_from_slice(&chunk[..n]);
    }
    // The server waits for the next head (reading the socket itself) before it comes.
    tokio::time::sleep(Duration::from_millis(100)).await;
    get_stream(&mut stream, "/events").await;
    streams.until_open(1).await;
    drop(stream);
    let reasons = until_all_closed(&streams).await;
    assert_eq!(reasons, [CloseReason::StreamEnded, CloseReason::ClientGone]);
}

/// Lean connections share driver tasks: a handler that panics ends its own connection, and
/// the streams beside it (on the same driver: this runtime has one worker) go on.
#[tokio::test]
async fn a_panicking_handler_ends_only_its_own_connection() {
    let app = Router::new()
        .route("/events", get(|| async { ticks() }))
        .route(
            "/boom",
            get(|| async {
                if true {
                    panic!("this handler panics");
                }
                EventStream::new(futures_util::stream::pending::<Event>())
            }),
        )
        .layer(SseLayer::new());
    let addr = serve_app(app, true, |s| s).await;
    let mut streams = Vec::new();
    for _ in 0..3 {
        streams.push(lean_stream(addr).await);
    }
    let mut boom = TcpStream::connect(addr).await.unwrap();
    boom.write_all(b"GET /boom HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let read = timeout(Duration::from_secs(5), boom.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the panicking request's connection is closed");
    for stream in &mut streams {
        // Several ticks after the panic: every stream still flows.
        until_ticks(stream, 3).await;
    }
    // And the server takes new streams.
    lean_stream(addr).await;
}

/// Many lean streams on a multi-thread runtime (two drivers, events published from other
/// tasks while the streams drain, bursts longer than a driver's turn and a response's 32
/// frames): every client gets every event of the hub's topic, in order, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lean_streams_on_two_drivers_get_every_event_in_order() {
    const CLIENTS: usize = 60;
    const EVENTS: usize = 600;
    let hub = tower_sse::hub::Hub::builder()
        .subscriber_capacity(4096)
        .build();
    let app = Router::new()
        .route(
            "/events",
            get(
                |axum::extract::State(hub): axum::extract::State<tower_sse::hub::Hub>| async move {
                    EventStream::new(hub.subscribe("t").await.unwrap())
                },
            ),
        )
        .with_state(hub.clone())
        .layer(SseLayer::new());
    let addr = serve_app(app, true, |s| s).await;
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(lean_stream(addr).await);
    }
    // Every stream subscribed before the first publish.
    timeout(Duration::from_secs(10), async {
        while hub.subscriber_count("t") < CLIENTS {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut stream| {
            tokio::spawn(async move {
                let mut text = String::new();
                let mut buf = vec![0u8; 64 * 1024];
                while text.matches("data: ").count() < EVENTS {
                    let n = timeout(Duration::from_secs(20), stream.read(&mut buf))
                        .await
                        .expect("events keep coming")
                        .unwrap();
                    assert_ne!(n, 0, "closed early");
                    text.push_str(std::str::from_utf8(&buf[..n]).unwrap());
                }
                text
            })
        })
        .collect();
    // A publisher in bursts, on the runtime's other thread as often as not.
    let publisher = {
        let hub = hub.clone();
        tokio::spawn(async move {
            for n in 0..EVENTS {
                hub.publish("t", Event::new().data(n.to_string()))
                    .await
                    .unwrap();
                if n % 100 == 99 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        })
    };
    publisher.await.unwrap();
    for reader in readers {
        let text = reader.await.unwrap();
        let got: Vec<usize> = text
            .lines()
            .filter_map(|line| line.strip_prefix("data: "))
            .map(|n| n.parse().unwrap())
            .collect();
        assert_eq!(got, (0..EVENTS).collect::<Vec<_>>());
    }
}

/// A response whose body is always ready with empty frames (nothing to write) still lets the
/// other connections of its driver run: every frame counts towards the driver's turn, not
/// only written ones (found by a review; before, the body held its driver for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_of_endless_empty_frames_does_not_hold_its_driver() {
    let app = Router::new()
        .route("/ticks", get(|| async { ticks() }))
        .route(
            "/spin",
            get(|| async {
                let empty = futures_util::stream::repeat_with(|| {
                    Ok::<_, std::convert::Infallible>(Bytes::new())
                });
                axum::body::Body::from_stream(empty)
            }),
        )
        .layer(SseLayer::new());
    let addr = serve_app(app, true, |s| s).await;
    // Connections are dealt to the two drivers in turn: the spinning one (the 2nd) shares
    // its driver with the 4th and the 6th.
    let _first = stream_at(addr, "/ticks").await;
    let _spin = stream_at(addr, "/spin").await;
    let mut others = Vec::new();
    for _ in 0..4 {
        others.push(stream_at(addr, "/ticks").await);
    }
    for stream in &mut others {
        // Every stream ticks, the spinning one's driver-mates too.
        until_ticks(stream, 3).await;
    }
}

/// A client that stops reading is dropped by the write timeout on the lean path too.
#[tokio::test]
async fn a_lean_stream_whose_client_stops_reading_is_dropped_by_the_write_timeout() {
    let streams = Streams::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // 64 KiB events, as fast as they are taken.
    let (opened, closed) = (streams.clone(), streams.clone());
    let app = Router::new()
        .route(
            "/events",
            get(|| async {
                let payload = "x".repeat(64 * 1024);
                EventStream::new(futures_util::stream::repeat_with(move || {
                    Event::new().data(&payload)
                }))
            }),
        )
        .layer(
            SseLayer::new()
                .on_open(move |_: &StreamInfo| {
                    opened.open.fetch_add(1, SeqCst);
                })
                .on_close(move |_: &StreamInfo, reason: CloseReason| {
                    closed.closed.lock().unwrap().push(reason);
                    closed.open.fetch_sub(1, SeqCst);
                }),
        );
    tokio::spawn(
        tower_sse::serve(listener, app)
            .write_timeout(Duration::from_millis(300))
            .into_future(),
    );
    // Stops reading after the head, keeps the socket open.
    let stalled = lean_stream(addr).await;
    streams.until_open(1).await;
    let reasons = until_all_closed(&streams).await;
    assert_eq!(reasons, [CloseReason::ClientGone]);
    drop(stalled);
}

/// A client that sends more than `max_header_bytes` of garbage while its stream waits for
/// events is read no further (as hyper does; what it sent is hyper's to answer after the
/// stream), its stream goes on, and it is released when the client goes.
#[tokio::test]
async fn a_lean_stream_whose_client_sends_too_much_goes_on_unread() {
    let streams = Streams::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = stalling_app(&streams, Duration::from_secs(30));
    tokio::spawn(tower_sse::serve(listener, app).into_future());
    let mut flooding = lean_stream(addr).await;
    streams.until_open(1).await;
    flooding.write_all(&[b'x'; 9 * 1024]).await.unwrap();
    // Events keep coming (about 500 bytes every 10 ms).
    let mut sink = vec![0u8; 64 * 1024];
    let mut got = 0;
    timeout(Duration::from_secs(10), async {
        while got < 20_000 {
            match flooding.read(&mut sink).await {
                Ok(0) | Err(_) => panic!("the stream was cut"),
                Ok(n) => got += n,
            }
        }
    })
    .await
    .expect("events after the flood");
    assert_eq!(streams.open(), 1);
    drop(flooding);
    let reasons = until_all_closed(&streams).await;
    assert_eq!(reasons, [CloseReason::ClientGone]);
}

/// `serve` on `app`, with the lean path on or off, configured by `configure`.
async fn serve_app(
    app: Router,
    lean: bool,
    configure: impl FnOnce(tower_sse::Serve<Router>) -> tower_sse::Serve<Router>,
) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = configure(tower_sse::serve(listener, app).lean_event_streams(lean));
    tokio::spawn(server.into_future());
    addr
}

/// Reads until the server closes (`Ok`) or `secs` pass (`Err`), with what came either way.
async fn read_for(stream: &mut TcpStream, secs: u64) -> Result<String, String> {
    let mut all = vec![];
    let read = timeout(Duration::from_secs(secs), async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&all).into_owned();
    read.map(|()| text.clone()).map_err(|_| text)
}

/// Counts live handler futures: up when one starts, down when it is dropped.
struct Live(Arc<AtomicUsize>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, SeqCst);
    }
}

/// A client that leaves while the handler works has the handler's future dropped, on both
/// paths (the lean path ran it to its end, here an hour).
#[tokio::test]
async fn a_handler_whose_client_left_is_dropped() {
    for lean in [true, false] {
        let live = Arc::new(AtomicUsize::new(0));
        let counted = live.clone();
        let app = Router::new().route(
            "/wait",
            get(move || {
                let counted = counted.clone();
                async move {
                    counted.fetch_add(1, SeqCst);
                    let _live = Live(counted);
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    "late"
                }
            }),
        );
        let addr = serve_app(app, lean, |s| s).await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /wait HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
            .await
            .unwrap();
        let started = timeout(Duration::from_secs(5), async {
            while live.load(SeqCst) != 1 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(started.is_ok(), "lean={lean}: the handler did not start");
        drop(stream);
        let dropped = timeout(Duration::from_secs(5), async {
            while live.load(SeqCst) != 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(dropped.is_ok(), "lean={lean}: the handler still runs");
    }
}

/// A `Content-Length` response is complete at its last byte, whether or not its body says it
/// ended: the next request on the connection is answered.
#[tokio::test]
async fn a_content_length_response_is_complete_at_its_last_byte() {
    for lean in [true, false] {
        let app = Router::new()
            .route(
                "/length",
                get(|| async {
                    let bytes = futures_util::stream::iter([Ok::<_, std::io::Error>(
                        Bytes::from_static(b"hello"),
                    )])
                    .chain(futures_util::stream::pending());
                    axum::response::Response::builder()
                        .header("content-length", "5")
                        .body(axum::body::Body::from_stream(bytes))
                        .unwrap()
                }),
            )
            .route("/plain", get(|| async { "plain" }));
        let addr = serve_app(app, lean, |s| s).await;
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (mut send, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                .await
                .unwrap();
        tokio::spawn(connection);
        for (path, want) in [("/length", "hello"), ("/plain", "plain")] {
            let request = http::Request::get(path)
                .header("host", "x")
                .header("accept", "text/event-stream")
                .body(Empty::<Bytes>::new())
                .unwrap();
            let body = timeout(Duration::from_secs(5), async {
                send.ready().await.unwrap();
                let response = send.send_request(request).await.unwrap();
                response.into_body().collect().await.unwrap().to_bytes()
            })
            .await
            .unwrap_or_else(|_| panic!("lean={lean}: {path} was not answered"));
            assert_eq!(&body[..], want.as_bytes(), "lean={lean}");
        }
    }
}

/// A service that answers `1xx` (not a final status) gets the client a `500`, as hyper sends.
#[tokio::test]
async fn a_1xx_answer_becomes_a_500() {
    for lean in [true, false] {
        let app = Router::new().route("/hints", get(|| async { http::StatusCode::EARLY_HINTS }));
        let addr = serve_app(app, lean, |s| s).await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /hints HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
            .await
            .unwrap();
        let text = read_for(&mut stream, 5).await.unwrap_or_else(|text| text);
        assert!(
            text.starts_with("HTTP/1.1 500 Internal Server Error\r\n"),
            "lean={lean}: {text}"
        );
    }
}

/// A `max_header_bytes` that is not a power of two holds on the lean path (the read buffer's
/// capacity let heads of up to twice the limit through). hyper's own check is looser (it
/// counts in its buffer's growth steps: a 14 KB head passes a 10,000-byte limit there), so
/// the cases in between are the lean path's only.
#[tokio::test]
async fn max_header_bytes_holds_on_both_paths() {
    for lean in [true, false] {
        let addr = serve_app(lean_app(), lean, |s| s.max_header_bytes(10_000)).await;
        let cases: &[(usize, &str)] = match lean {
            true => &[
                (9_000, "200"),
                (10_000, "431"),
                (10_500, "431"),
                (14_000, "431"),
            ],
            false => &[(9_000, "200"), (24_000, "431")],
        };
        for &(cookie, want) in cases {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            let head = format!(
                "GET /finite HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\nCookie: a={}\r\n\r\n",
                "c".repeat(cookie)
            );
            stream.write_all(head.as_bytes()).await.unwrap();
            let mut status = [0u8; 12];
            timeout(Duration::from_secs(5), stream.read_exact(&mut status))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                &status[9..12],
                want.as_bytes(),
                "lean={lean}, cookie {cookie}"
            );
        }
    }
}

/// After HTTP/1.1 requests, an HTTP/2 preface on the same connection does not switch it to
/// HTTP/2 (hyper's HTTP/1.1 connection refuses it; the lean path's handover did not).
#[tokio::test]
async fn an_h2_preface_after_http1_requests_is_not_a_switch() {
    for lean in [true, false] {
        let addr = serve_app(lean_app(), lean, |s| s).await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(
                b"GET /plain HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n\
                  PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00",
            )
            .await
            .unwrap();
        let text = read_for(&mut stream, 5).await.unwrap_or_else(|text| text);
        let plain = text.find("\r\n\r\nplain").expect("the first response") + 9;
        let after = &text[plain..];
        assert!(
            after.is_empty() || after.starts_with("HTTP/1.1 "),
            "lean={lean}: {:?}",
            after.as_bytes()
        );
    }
}

/// A client that sends two requests and closes its side has the first answered in full (the
/// lean path took the EOF for a client gone and cut the stream short).
#[tokio::test]
async fn pipelined_requests_then_a_half_close_get_their_answer() {
    for lean in [true, false] {
        let app = Router::new()
            .route(
                "/slow",
                get(|| async {
                    EventStream::new(futures_util::stream::once(async {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        Event::new().data("late")
                    }))
                }),
            )
            .layer(SseLayer::new());
        let addr = serve_app(app, lean, |s| s).await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(
                b"GET /slow HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n\
                  GET /slow HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n",
            )
            .await
            .unwrap();
        stream.shutdown().await.unwrap();
        let text = read_for(&mut stream, 5).await.unwrap_or_else(|text| text);
        assert_in_order(
            &text,
            &["HTTP/1.1 200 OK\r\n", "data: late\n\n", "\r\n0\r\n\r\n"],
        );
    }
}

/// The start of an HTTP/2 preface, then silence, is closed after the header-read timeout
/// (hyper's version detection has no timer: it held such connections forever).
#[tokio::test]
async fn half_an_h2_preface_is_closed_after_the_header_read_timeout() {
    let addr = serve_app(lean_app(), true, |s| {
        s.header_read_timeout(Duration::from_millis(300))
    })
    .await;
    for bytes in [
        &b"PRI * HTTP/2.0\r\n"[..],
        b"P",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n",
    ] {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(bytes).await.unwrap();
        assert!(
            read_for(&mut stream, 5).await.is_ok(),
            "{:?} was held",
            String::from_utf8_lossy(bytes)
        );
    }
}

/// An HTTP/2 connection that sends its preface and then nothing, or whose streams have all
/// ended, is closed after about the header-read timeout (hyper kept both for as long as the
/// client did); one with an open event stream is not.
#[tokio::test]
async fn idle_http2_connections_are_closed_and_busy_ones_kept() {
    let app = lean_app().route(
        "/forever",
        get(|| async {
            EventStream::new(
                futures_util::stream::iter([Event::new().data("hello")])
                    .chain(futures_util::stream::pending()),
            )
        }),
    );
    let addr = serve_app(app, true, |s| {
        s.header_read_timeout(Duration::from_millis(300))
    })
    .await;
    // The preface, then silence.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    silent
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    assert!(
        read_for(&mut silent, 5).await.is_ok(),
        "a silent h2 connection was held"
    );

    // A real HTTP/2 client with an open stream: kept for well over the timeout.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    let driver = tokio::spawn(connection);
    let (client, mut forever) = h2_get_path(client, addr, "/forever").await;
    let first = timeout(Duration::from_secs(5), forever.data())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(&first[..], b"data: hello\n\n");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !driver.is_finished(),
        "a connection with an open stream was closed"
    );

    // A stream that ends, the other reset: nothing is under way, and the connection is
    // closed while the client still holds it.
    let (client, mut finite) = h2_get_path(client, addr, "/finite").await;
    while let Some(data) = timeout(Duration::from_secs(5), finite.data())
        .await
        .unwrap()
    {
        data.unwrap();
    }
    drop(forever);
    let closed = timeout(Duration::from_secs(5), driver).await;
    assert!(closed.is_ok(), "an idle HTTP/2 connection was held");
    drop(client);
}

/// A response hyper is still writing after it dropped the body (one large frame, a slow
/// reader) is not cut by the idle check: bytes moving are activity.
#[tokio::test]
async fn a_large_response_to_a_slow_reader_is_not_cut_as_idle() {
    // More than loopback's socket buffers take at once, so hyper is still writing long after
    // it dropped the body.
    const SIZE: usize = 16 << 20;
    let app = Router::new().route("/big", get(|| async { vec![b'x'; SIZE] }));
    let addr = serve_app(app, true, |s| {
        s.header_read_timeout(Duration::from_millis(200))
    })
    .await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut all = vec![];
    let mut buf = vec![0u8; 64 * 1024];
    let read = timeout(Duration::from_secs(30), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
            // At most 6.4 MB/s: the body takes over two seconds, many idle periods.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(read.is_ok(), "the response did not end");
    let body = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(all.len() - body, SIZE, "the response was cut short");
}

/// A tower service that is not ready for a while (a concurrency limit, a load shedder).
struct SlowReady<S> {
    inner: S,
    wait: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<S: Clone> Clone for SlowReady<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            wait: None,
        }
    }
}

impl<S, R> tower::Service<R> for SlowReady<S>
where
    S: tower::Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        use std::future::Future as _;
        let wait = self
            .wait
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(Duration::from_millis(1000))));
        std::task::ready!(wait.as_mut().poll(cx));
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> S::Future {
        self.wait = None;
        self.inner.call(request)
    }
}

/// A request hyper handed over while the service was not ready yet counts as under way: its
/// connection is not closed as idle before the answer.
#[tokio::test]
async fn a_request_waiting_for_a_ready_service_is_not_idle() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = SlowReady {
        inner: Router::new().route("/plain", get(|| async { "plain" })),
        wait: None,
    };
    tokio::spawn(
        tower_sse::serve(listener, app)
            .header_read_timeout(Duration::from_millis(200))
            .into_future(),
    );
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /plain HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let text = read_for(&mut stream, 10).await.unwrap_or_else(|text| text);
    assert!(text.ends_with("\r\n\r\nplain"), "{text:?}");
}

/// A request sent while the one before it is answered, with a body larger than
/// `max_header_bytes`, is answered in turn (the lean path read on into that body and closed
/// the connection for sending too much).
#[tokio::test]
async fn a_pipelined_request_with_a_large_body_is_answered_in_turn() {
    for lean in [true, false] {
        let app = Router::new()
            .route(
                "/wait",
                get(|| async {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    "waited"
                }),
            )
            .route(
                "/echo",
                axum::routing::post(|body: Bytes| async move { body.len().to_string() }),
            );
        let addr = serve_app(app, lean, |s| s).await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut requests = b"GET /wait HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n\
              POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 20000\r\n\r\n"
            .to_vec();
        requests.extend_from_slice(&[b'y'; 20_000]);
        stream.write_all(&requests).await.unwrap();
        let text = read_for(&mut stream, 10).await.unwrap_or_else(|text| text);
        assert_in_order(&text, &["\r\n\r\nwaited", "\r\n\r\n20000"]);
    }
}

/// HTTP/1.1 upgrades work through `serve` (it served connections without upgrade support:
/// `hyper::upgrade::on` failed), and an upgraded connection is not closed as idle.
#[tokio::test]
async fn upgrades_work_and_outlive_the_idle_check() {
    let app = Router::new().route(
        "/echo",
        get(|mut request: axum::extract::Request| async move {
            let upgrade = hyper::upgrade::on(&mut request);
            tokio::spawn(async move {
                let mut io = hyper_util::rt::TokioIo::new(upgrade.await.unwrap());
                let mut buf = [0u8; 64];
                loop {
                    match io.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if io.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
            axum::response::Response::builder()
                .status(101)
                .header("connection", "upgrade")
                .header("upgrade", "echo")
                .body(axum::body::Body::empty())
                .unwrap()
        }),
    );
    let addr = serve_app(app, true, |s| {
        s.header_read_timeout(Duration::from_millis(200))
    })
    .await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut stream).await;
    assert!(
        head.starts_with(b"HTTP/1.1 101 "),
        "{}",
        String::from_utf8_lossy(&head)
    );
    // Quiet for longer than two idle periods between messages.
    for n in 0..3 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let message = format!("ping {n}");
        stream.write_all(message.as_bytes()).await.unwrap();
        let mut back = vec![0u8; message.len()];
        timeout(Duration::from_secs(5), stream.read_exact(&mut back))
            .await
            .expect("an echo")
            .expect("the upgraded connection is open");
        assert_eq!(back, message.as_bytes());
    }
}

/// A pipelined request whose head is just within `max_header_bytes`, with a body, is
/// answered after the one before it (the lean path read past the head into the body and
/// closed the connection, answering neither).
#[tokio::test]
async fn a_pipelined_head_just_within_the_limit_is_answered() {
    let app = Router::new()
        .route(
            "/wait",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(30)).await;
                "waited"
            }),
        )
        .route(
            "/echo",
            axum::routing::post(|body: Bytes| async move { body.len().to_string() }),
        );
    let addr = serve_app(app, true, |s| s).await;
    for size in [8_100, 8_180, 8_188, 8_192] {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut requests =
            b"GET /wait HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n".to_vec();
        let start: &[u8] =
            b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 10\r\nX-Pad: ";
        requests.extend_from_slice(start);
        requests.extend(std::iter::repeat_n(b'p', size - start.len() - 4));
        requests.extend_from_slice(b"\r\n\r\n");
        requests.extend_from_slice(&[b'y'; 10]);
        stream.write_all(&requests).await.unwrap();
        let text = read_for(&mut stream, 10).await.unwrap_or_else(|text| text);
        assert_in_order(&text, &["\r\n\r\nwaited", "\r\n\r\n10"]);
    }
}

/// An HTTP/2 connection with no stream open is closed even while its client sends PINGs
/// (bytes moving alone kept it for ever).
#[tokio::test]
async fn pings_alone_do_not_keep_an_http2_connection() {
    let addr = serve_app(lean_app(), true, |s| {
        s.header_read_timeout(Duration::from_millis(200))
    })
    .await;
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (client, mut connection) = h2::client::handshake(tcp).await.unwrap();
    let mut pings = connection.ping_pong().unwrap();
    let driver = tokio::spawn(connection);
    // Idle closes after one period, bytes moving hold it at most five more: well within the
    // 4 s of PINGs.
    let answered = timeout(Duration::from_secs(10), async {
        let mut answered = 0;
        for _ in 0..40 {
            if pings.ping(h2::Ping::opaque()).await.is_err() {
                break;
            }
            answered += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        answered
    })
    .await
    .unwrap();
    assert!(
        answered < 40,
        "an HTTP/2 connection with no stream was held by PINGs"
    );
    let closed = timeout(Duration::from_secs(5), driver).await;
    assert!(closed.is_ok(), "the connection did not end");
    drop(client);
}

/// A client that pipelines requests faster than they are answered (and reads the answers)
/// must not hold its driver: the driver's other connections are polled between its
/// responses. (Found by a review in session 12: all 4,000 were answered within one poll, and
/// the driver's other streams got nothing meanwhile.) Counted, not timed: `B`'s body (always ready, empty frames, on the same driver
/// as `A`) notes how many of `A`'s requests were answered between two of its polls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_do_not_hold_the_driver() {
    const REQUESTS: usize = 4_000;
    let answered = Arc::new(AtomicUsize::new(0));
    let max_gap = Arc::new(AtomicUsize::new(0));
    let (count, watch, gap) = (answered.clone(), answered.clone(), max_gap.clone());
    let app = Router::new()
        .route(
            "/a",
            get(move || {
                count.fetch_add(1, SeqCst);
                async { "" }
            }),
        )
        .route(
            "/spin",
            get(move || {
                let (watch, gap) = (watch.clone(), gap.clone());
                let mut last = watch.load(SeqCst);
                async move {
                    let frames = futures_util::stream::repeat_with(move || {
                        let now = watch.load(SeqCst);
                        gap.fetch_max(now - last, SeqCst);
                        last = now;
                        Ok::<_, std::convert::Infallible>(Bytes::new())
                    });
                    axum::body::Body::from_stream(frames)
                }
            }),
        )
        .route("/idle", get(|| async { ticks() }))
        .layer(SseLayer::new());
    let addr = serve_app(app, true, |s| s).await;
    // Dealt to the two drivers in turn: the 1st and the 3rd share one.
    let _spin = stream_at(addr, "/spin").await;
    let _idle = stream_at(addr, "/idle").await;
    let a = TcpStream::connect(addr).await.unwrap();
    let (mut reader, mut writer) = a.into_split();
    let write = tokio::spawn(async move {
        let one = b"GET /a HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n";
        let batch: Vec<u8> = one.repeat(500);
        for _ in 0..REQUESTS / 500 {
            writer.write_all(&batch).await.unwrap();
        }
        writer
    });
    let mut buf = vec![0u8; 1 << 16];
    let mut seen = 0;
    let mut tail = Vec::new();
    timeout(Duration::from_secs(120), async {
        while seen < REQUESTS {
            let n = reader.read(&mut buf).await.unwrap();
            assert_ne!(n, 0, "closed after {seen} responses");
            tail.extend_from_slice(&buf[..n]);
            seen += tail.windows(9).filter(|w| w == b"HTTP/1.1 ").count();
            let keep = tail.len().min(8);
            tail.drain(..tail.len() - keep);
        }
    })
    .await
    .expect("every pipelined request is answered");
    let _writer = write.await.unwrap();
    assert_eq!(answered.load(SeqCst), REQUESTS);
    let gap = max_gap.load(SeqCst);
    assert!(
        gap <= 200,
        "{gap} of A's requests were answered between two polls of its driver-mate"
    );
}

/// On the lean path the keep-alive timer wakes the connection through the driver's timer
/// waker (`crate::turn`): an idle stream gets its comments, and again after each event.
#[tokio::test]
async fn lean_idle_streams_get_keep_alive_comments_between_events() {
    let (tx, _) = tokio::sync::broadcast::channel::<&'static str>(16);
    let events = tx.clone();
    let app = Router::new()
        .route(
            "/events",
            get(move || {
                let rx = events.subscribe();
                async move {
                    EventStream::new(
                        tokio_stream::wrappers::BroadcastStream::new(rx)
                            .filter_map(|item| async move { item.ok() })
                            .map(|data| Event::new().data(data)),
                    )
                }
            }),
        )
        .layer(SseLayer::new().keep_alive(Duration::from_millis(100)));
    let addr = serve_app(app, true, |s| s).await;
    let mut stream = lean_stream(addr).await;
    let mut seen = String::new();
    // Reads until `want` is in what came after `from` (each read within 5 s).
    async fn until(stream: &mut TcpStream, seen: &mut String, from: usize, want: &str) -> usize {
        loop {
            if let Some(at) = seen[from..].find(want) {
                return from + at + want.len();
            }
            let mut chunk = [0u8; 256];
            let read = timeout(Duration::from_secs(5), stream.read(&mut chunk))
                .await
                .expect("the stream goes on")
                .unwrap();
            assert_ne!(read, 0, "the stream was closed: {seen:?}");
            seen.push_str(std::str::from_utf8(&chunk[..read]).unwrap());
        }
    }
    const COMMENT: &str = "3\r\n:\n\n\r\n";
    let mut at = 0;
    for round in ["a", "b", "c"] {
        // Two comments while idle, then an event, then comments again.
        at = until(&mut stream, &mut seen, at, COMMENT).await;
        at = until(&mut stream, &mut seen, at, COMMENT).await;
        tx.send(round).unwrap();
        at = until(&mut stream, &mut seen, at, &format!("data: {round}\n\n")).await;
    }
    until(&mut stream, &mut seen, at, COMMENT).await;
}
