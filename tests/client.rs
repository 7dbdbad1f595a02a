//! The reconnecting client over real TCP, against the crate's own server (axum + `SseLayer` +
//! `EventStream`) and, where a misbehaving peer is needed, a raw TCP one.

use std::{
    error::Error as _,
    future::Future,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    http::{HeaderMap, StatusCode, Uri, header},
    response::{IntoResponse, Response},
    routing::get,
};
use futures_util::{StreamExt, stream};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    time::{Instant, timeout},
};
use tower_sse::{
    Event, EventStream, SseLayer,
    client::{ErrorKind, EventSource, HttpClient, HttpService, MessageEvent, SseEvent},
};

const LIMIT: Duration = Duration::from_secs(10);
const MS: Duration = Duration::from_millis(1);

/// What the server saw: each request's path and headers.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<(String, HeaderMap)>>>);

impl Seen {
    fn record(&self, uri: &Uri, headers: &HeaderMap) {
        self.0
            .lock()
            .unwrap()
            .push((uri.path().to_owned(), headers.clone()));
    }

    fn paths(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(p, _)| p.clone())
            .collect()
    }

    fn header(&self, name: &str) -> Vec<Option<String>> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(_, h)| h.get(name).map(|v| v.to_str().unwrap().to_owned()))
            .collect()
    }

    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

struct Server {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    fn url(&self, path: &str) -> Uri {
        format!("http://{}{path}", self.addr).parse().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(router: Router) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    Server { addr, task }
}

/// A route that records each request, then answers with `answer(last_event_id)`.
fn recorded<F, Fut>(seen: &Seen, answer: F) -> axum::routing::MethodRouter
where
    F: Fn(Option<String>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send + 'static,
{
    let seen = seen.clone();
    get(move |uri: Uri, headers: HeaderMap| {
        seen.record(&uri, &headers);
        let last = headers
            .get("last-event-id")
            .map(|v| v.to_str().unwrap().to_owned());
        answer(last)
    })
}

fn events(list: Vec<Event>) -> Response {
    EventStream::new(stream::iter(list)).into_response()
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

type Item = Result<SseEvent, tower_sse::client::Error>;

async fn next<S, B>(source: &mut EventSource<S, B>) -> Option<Item>
where
    S: HttpService<B>,
    S::Error: Into<tower_sse::BoxError>,
    <S::ResponseBody as http_body::Body>::Error: Into<tower_sse::BoxError>,
    B: Clone,
{
    timeout(LIMIT, source.next())
        .await
        .expect("the event source stalled")
}

/// Everything the source yields until it ends (bounded in time).
async fn drain(mut source: EventSource<HttpClient>) -> Vec<Item> {
    let mut items = Vec::new();
    while let Some(item) = next(&mut source).await {
        items.push(item);
    }
    assert!(
        next(&mut source).await.is_none(),
        "ended streams stay ended"
    );
    items
}

fn messages(items: &[Item]) -> Vec<MessageEvent> {
    items
        .iter()
        .filter_map(|item| match item {
            Ok(SseEvent::Message(event)) => Some(event.clone()),
            _ => None,
        })
        .collect()
}

/// A compact trace: `open`, `msg <id> <data>`, `comment <text>`, `reconnect`, `err`.
fn trace(items: &[Item]) -> Vec<String> {
    items
        .iter()
        .map(|item| match item {
            Ok(SseEvent::Open(_)) => "open".to_owned(),
            Ok(SseEvent::Message(e)) => format!("msg {} {}", e.id(), e.data()),
            Ok(SseEvent::Comment(c)) => format!("comment {c}"),
            Ok(SseEvent::Reconnect(_)) => "reconnect".to_owned(),
            Ok(_) => "other".to_owned(),
            Err(_) => "err".to_owned(),
        })
        .collect()
}

#[tokio::test]
async fn events_are_decoded_with_the_request_headers_set() {
    let seen = Seen::default();
    let router = Router::new()
        .route(
            "/events",
            recorded(&seen, |last| async move {
                match last {
                    None => events(vec![
                        Event::new().comment("hello"),
                        Event::new()
                            .event("tick")
                            .id("1")
                            .data("line one\nline two"),
                        Event::new().data("é ✓"),
                    ]),
                    Some(_) => no_content(),
                }
            }),
        )
        .layer(SseLayer::new().retry(10 * MS));
    let server = serve(router).await;

    let items = drain(EventSource::get(server.url("/events")).comments(true)).await;
    assert_eq!(
        trace(&items),
        [
            "open",
            "comment hello",
            "msg 1 line one\nline two",
            "msg 1 é ✓",
            "reconnect"
        ]
    );
    let Ok(SseEvent::Open(open)) = &items[0] else {
        panic!()
    };
    assert_eq!(open.status(), StatusCode::OK);
    assert_eq!(open.headers()[header::CONTENT_TYPE], "text/event-stream");
    assert_eq!(open.uri(), &server.url("/events"));
    assert_eq!(messages(&items)[0].event(), "tick");
    assert_eq!(messages(&items)[1].event(), "message");

    assert_eq!(seen.len(), 2);
    assert_eq!(
        seen.header("accept"),
        vec![Some("text/event-stream".to_owned()); 2]
    );
    assert_eq!(
        seen.header("cache-control"),
        vec![Some("no-store".to_owned()); 2]
    );
}

#[tokio::test]
async fn resumes_with_last_event_id_and_gets_every_event_exactly_once() {
    let seen = Seen::default();
    // Two events per connection, then the response ends; `204` once all six are out.
    let router = Router::new()
        .route(
            "/events",
            recorded(&seen, |last| async move {
                let after: u32 = last.map_or(0, |id| id.parse().unwrap());
                if after >= 6 {
                    return no_content();
                }
                events(
                    (after + 1..=after + 2)
                        .map(|n| Event::new().id(n.to_string()).data(format!("#{n}")))
                        .collect(),
                )
            }),
        )
        .layer(SseLayer::new().retry(10 * MS));
    let server = serve(router).await;

    let source = EventSource::get(server.url("/events"));
    let items = drain(source).await;
    let got: Vec<_> = messages(&items)
        .iter()
        .map(|e| format!("{} {}", e.id(), e.data()))
        .collect();
    assert_eq!(got, ["1 #1", "2 #2", "3 #3", "4 #4", "5 #5", "6 #6"]);
    assert!(items.iter().all(Result::is_ok), "no errors: {items:?}");
    for item in &items {
        if let Ok(SseEvent::Reconnect(r)) = item {
            assert!(r.error().is_none(), "clean ends: {r:?}");
            assert_eq!(r.attempt(), 1, "each connection was healthy");
            assert!(r.delay() <= 10 * MS, "the server's retry: {r:?}");
        }
    }
    assert_eq!(
        seen.header("last-event-id"),
        [None, Some("2".into()), Some("4".into()), Some("6".into())]
    );
}

#[tokio::test]
async fn retry_fields_set_the_reconnection_delay() {
    let seen = Seen::default();
    let router = Router::new()
        .route(
            "/events",
            recorded(&seen, |last| async move {
                match last.as_deref() {
                    // The layer's first frame says `retry: 50`.
                    None => events(vec![Event::new().id("1").data("a")]),
                    // An event says `retry: 70`.
                    Some("1") => events(vec![Event::new().id("2").retry(70 * MS).data("b")]),
                    _ => no_content(),
                }
            }),
        )
        .layer(SseLayer::new().retry(50 * MS));
    let server = serve(router).await;

    let mut source = EventSource::get(server.url("/events")).jitter(false);
    assert_eq!(source.reconnection_time(), Duration::from_secs(3));
    let mut delays = Vec::new();
    let mut reconnect_at = None;
    while let Some(item) = next(&mut source).await {
        match item.unwrap() {
            SseEvent::Reconnect(r) => {
                delays.push(r.delay());
                reconnect_at = Some((Instant::now(), r.delay()));
            }
            SseEvent::Open(_) => {
                if let Some((at, delay)) = reconnect_at.take() {
                    // A lower bound on real time is safe: timers never fire early.
                    assert!(at.elapsed() >= delay);
                }
            }
            _ => {}
        }
    }
    assert_eq!(delays, [50 * MS, 70 * MS]);
    assert_eq!(source.reconnection_time(), 70 * MS);
    assert_eq!(seen.len(), 3);
}

#[tokio::test]
async fn no_content_on_reconnect_ends_the_stream() {
    let seen = Seen::default();
    let router = Router::new()
        .route(
            "/events",
            recorded(&seen, |last| async move {
                match last {
                    None => events(vec![Event::new().id("1").data("only")]),
                    Some(_) => no_content(),
                }
            }),
        )
        .layer(SseLayer::new().retry(10 * MS));
    let server = serve(router).await;

    let mut source = EventSource::get(server.url("/events"));
    let mut items = Vec::new();
    while let Some(item) = next(&mut source).await {
        items.push(item);
    }
    assert_eq!(trace(&items), ["open", "msg 1 only", "reconnect"]);
    assert!(futures_util::stream::FusedStream::is_terminated(&source));
    assert_eq!(source.last_event_id(), "1");
    assert_eq!(seen.len(), 2);
}

#[tokio::test]
async fn error_status_fails_without_reconnecting() {
    let seen = Seen::default();
    let router = Router::new().route(
        "/events",
        recorded(&seen, |_| async {
            (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response()
        }),
    );
    let server = serve(router).await;

    let items = drain(EventSource::get(server.url("/events"))).await;
    assert_eq!(items.len(), 1);
    let err = items.into_iter().next().unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Status);
    assert_eq!(err.status(), Some(StatusCode::INTERNAL_SERVER_ERROR));
    assert_eq!(
        err.to_string(),
        "server answered with status 500 Internal Server Error"
    );

    let items = drain(EventSource::get(server.url("/missing"))).await;
    assert_eq!(
        items[0].as_ref().unwrap_err().status(),
        Some(StatusCode::NOT_FOUND)
    );
    assert_eq!(seen.len(), 1);
}

#[tokio::test]
async fn wrong_content_type_fails_without_reconnecting() {
    let seen = Seen::default();
    let router = Router::new().route(
        "/events",
        recorded(&seen, |_| async { "data: not sse\n\n".into_response() }),
    );
    let server = serve(router).await;

    let items = drain(EventSource::get(server.url("/events"))).await;
    assert_eq!(items.len(), 1);
    let err = items.into_iter().next().unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ContentType);
    assert_eq!(
        err.to_string(),
        "server answered with content type \"text/plain; charset=utf-8\", not text/event-stream"
    );
    assert_eq!(seen.len(), 1);
}

#[tokio::test]
async fn redirects_are_followed_and_reconnections_start_over() {
    let seen = Seen::default();
    let router = Router::new()
        .route(
            "/perm",
            recorded(&seen, |_| async {
                // Absolute, made relative to whichever host the client used.
                (StatusCode::MOVED_PERMANENTLY, [(header::LOCATION, "/old")]).into_response()
            }),
        )
        .route(
            "/old",
            recorded(&seen, |_| async {
                // Relative path: resolves against `/old` to `/events`.
                (
                    StatusCode::TEMPORARY_REDIRECT,
                    [(header::LOCATION, "events")],
                )
                    .into_response()
            }),
        )
        .route(
            "/events",
            recorded(&seen, |last| async move {
                match last {
                    None => events(vec![Event::new().id("1").data("moved")]),
                    Some(_) => no_content(),
                }
            }),
        )
        .route(
            "/loop",
            recorded(&seen, |_| async {
                (
                    StatusCode::TEMPORARY_REDIRECT,
                    [(header::LOCATION, "/loop")],
                )
                    .into_response()
            }),
        )
        .layer(SseLayer::new().retry(10 * MS));
    let server = serve(router).await;

    let items = drain(EventSource::get(server.url("/perm"))).await;
    assert_eq!(trace(&items), ["open", "msg 1 moved", "reconnect"]);
    let Ok(SseEvent::Open(open)) = &items[0] else {
        panic!()
    };
    assert_eq!(open.uri(), &server.url("/events"));
    assert_eq!(
        seen.paths(),
        ["/perm", "/old", "/events", "/perm", "/old", "/events"]
    );

    let items = drain(EventSource::get(server.url("/loop")).max_redirects(3)).await;
    assert_eq!(items.len(), 1);
    let err = items.into_iter().next().unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TooManyRedirects);
    assert_eq!(seen.paths().iter().filter(|p| *p == "/loop").count(), 4);
}

#[tokio::test]
async fn credentials_are_not_sent_to_another_origin() {
    let seen = Seen::default();
    let other =
        serve(Router::new().route("/events", recorded(&seen, |_| async { no_content() }))).await;
    let target = other.url("/events").to_string();
    let here =
        serve(Router::new().route(
            "/away",
            recorded(&seen, move |_| {
                let target = target.clone();
                async move {
                    (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, target)]).into_response()
                }
            }),
        ))
        .await;

    let request = http::Request::get(here.url("/away"))
        .header(header::AUTHORIZATION, "Bearer secret")
        .header("x-custom", "kept")
        .body(Default::default())
        .unwrap();
    let items = drain(EventSource::request(request)).await;
    assert!(items.is_empty(), "204 ends the stream: {items:?}");
    assert_eq!(seen.paths(), ["/away", "/events"]);
    assert_eq!(
        seen.header("authorization"),
        [Some("Bearer secret".into()), None]
    );
    assert_eq!(seen.header("x-custom"), vec![Some("kept".to_owned()); 2]);
}

#[tokio::test]
async fn an_empty_id_is_never_sent() {
    let seen = Seen::default();
    let served = Arc::new(AtomicUsize::new(0));
    let router = Router::new()
        .route(
            "/events",
            recorded(&seen, move |_| {
                let first = served.fetch_add(1, Ordering::SeqCst) == 0;
                async move {
                    if first {
                        events(vec![
                            Event::new().id("a").data("1"),
                            // `id:` with an empty value resets the last event ID.
                            Event::new().id("").data("2"),
                        ])
                    } else {
                        no_content()
                    }
                }
            }),
        )
        .layer(SseLayer::new().retry(10 * MS));
    let server = serve(router).await;

    let items = drain(EventSource::get(server.url("/events"))).await;
    assert_eq!(trace(&items), ["open", "msg a 1", "msg  2", "reconnect"]);
    assert_eq!(seen.header("last-event-id"), [None, None]);
}

#[tokio::test]
async fn a_saved_last_event_id_resumes_the_first_request() {
    let seen = Seen::default();
    let router = Router::new().route("/events", recorded(&seen, |_| async { no_content() }));
    let server = serve(router).await;

    let request = http::Request::get(server.url("/events"))
        .header("last-event-id", "41")
        .body(Default::default())
        .unwrap();
    let items = drain(EventSource::request(request)).await;
    assert!(items.is_empty());
    assert_eq!(seen.header("last-event-id"), [Some("41".into())]);
}

/// Reads one request head from a raw connection; returns it as text.
async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut buf = [0; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "client closed before sending a request");
        head.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(head).unwrap().to_ascii_lowercase()
}

const SSE_HEAD: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";

/// A raw server: each connection is handed to `script` with its index.
async fn raw_server<F, Fut>(script: F) -> (SocketAddr, tokio::task::JoinHandle<()>)
where
    F: Fn(usize, TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        for n in 0.. {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(script(n, stream));
        }
    });
    (addr, task)
}

#[tokio::test]
async fn a_connection_dropped_mid_event_resumes_after_the_last_complete_one() {
    let heads = Arc::new(Mutex::new(Vec::new()));
    let recorded = heads.clone();
    let (addr, task) = raw_server(move |n, mut stream| {
        let heads = recorded.clone();
        async move {
            let head = read_head(&mut stream).await;
            heads.lock().unwrap().push(head);
            if n == 0 {
                stream.write_all(SSE_HEAD).await.unwrap();
                let chunk = b"retry: 10\nid: 1\ndata: whole\n\nid: 2\ndata: cut";
                let frame = [format!("{:x}\r\n", chunk.len()).as_bytes(), chunk, b"\r\n"].concat();
                stream.write_all(&frame).await.unwrap();
                // Dropped without the last chunk: the body fails mid-event.
            } else {
                stream
                    .write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
                    .await
                    .unwrap();
            }
        }
    })
    .await;

    let uri = format!("http://{addr}/events").parse().unwrap();
    let items = drain(EventSource::get(uri)).await;
    task.abort();
    assert_eq!(trace(&items), ["open", "msg 1 whole", "reconnect"]);
    let Ok(SseEvent::Reconnect(r)) = &items[2] else {
        panic!()
    };
    assert_eq!(r.error().map(|e| e.kind()), Some(ErrorKind::Transport));
    let heads = heads.lock().unwrap();
    assert_eq!(heads.len(), 2);
    assert!(!heads[0].contains("last-event-id"));
    assert!(
        heads[1].contains("\r\nlast-event-id: 1\r\n"),
        "{}",
        heads[1]
    );
}

#[tokio::test]
async fn backoff_doubles_on_failures_and_starts_over_after_a_healthy_connection() {
    let (addr, task) = raw_server(|n, mut stream| async move {
        let _ = read_head(&mut stream).await;
        match n {
            // Healthy: an event, then a clean end (read to close).
            2 => {
                let body = b"id: 1\ndata: ok\n\n";
                stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n")
                    .await
                    .unwrap();
                stream.write_all(body).await.unwrap();
            }
            5 => stream
                .write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
                .await
                .unwrap(),
            // Failures: closed before any answer.
            _ => {}
        }
    })
    .await;

    let uri = format!("http://{addr}/events").parse().unwrap();
    let source = EventSource::get(uri).retry(10 * MS).jitter(false);
    let items = drain(source).await;
    task.abort();
    let reconnects: Vec<_> = items
        .iter()
        .filter_map(|item| match item {
            Ok(SseEvent::Reconnect(r)) => Some((
                r.attempt(),
                r.delay(),
                r.error().map(tower_sse::client::Error::kind),
            )),
            _ => None,
        })
        .collect();
    assert_eq!(
        reconnects,
        [
            (1, 10 * MS, Some(ErrorKind::Transport)),
            (2, 200 * MS, Some(ErrorKind::Transport)),
            (1, 10 * MS, None),
            (2, 200 * MS, Some(ErrorKind::Transport)),
            (3, 400 * MS, Some(ErrorKind::Transport)),
        ]
    );
    assert!(items.iter().all(Result::is_ok));
}

#[tokio::test]
async fn retries_run_out_with_an_error() {
    // A port nothing listens on.
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let uri = format!("http://{addr}/events").parse().unwrap();
    let source = EventSource::get(uri)
        .retry(5 * MS)
        .jitter(false)
        .max_retries(Some(2));
    let items = drain(source).await;
    assert_eq!(trace(&items), ["reconnect", "reconnect", "err"]);
    let err = items.into_iter().last().unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RetriesExhausted);
    assert_eq!(
        err.to_string(),
        "connection lost, gave up after 2 reconnection attempts"
    );
    let cause = err
        .source()
        .unwrap()
        .downcast_ref::<tower_sse::client::Error>()
        .unwrap();
    assert_eq!(cause.kind(), ErrorKind::Transport);
    assert!(cause.source().is_some(), "the hyper error is kept");
}

#[tokio::test]
async fn a_silent_connection_times_out_and_reconnects() {
    let seen = Seen::default();
    let router = Router::new()
        .route(
            "/events",
            recorded(&seen, |last| async move {
                match last {
                    None => EventStream::new(
                        stream::iter([Event::new().id("1").data("then silence")])
                            .chain(stream::pending()),
                    )
                    .into_response(),
                    Some(_) => no_content(),
                }
            }),
        )
        .layer(SseLayer::new().retry(10 * MS).no_keep_alive());
    let server = serve(router).await;

    let source = EventSource::get(server.url("/events")).read_timeout(Some(100 * MS));
    let items = drain(source).await;
    assert_eq!(trace(&items), ["open", "msg 1 then silence", "reconnect"]);
    let Ok(SseEvent::Reconnect(r)) = &items[2] else {
        panic!()
    };
    assert_eq!(r.error().map(|e| e.kind()), Some(ErrorKind::Timeout));
    assert_eq!(seen.header("last-event-id"), [None, Some("1".into())]);
}

/// An over-limit event ends that connection with a clear error and, by default, the client
/// reconnects with the last complete event's id; turned off, the stream ends with it.
#[tokio::test]
async fn an_oversized_event_reconnects_with_a_decode_error_or_ends_the_stream() {
    let seen = Seen::default();
    let router = Router::new()
        .route(
            "/events",
            recorded(&seen, |_| async move {
                events(vec![Event::new().id("2").data("x".repeat(100))]).into_response()
            }),
        )
        .layer(SseLayer::new().retry(10 * MS));
    let server = serve(router).await;

    // Default: the connection ends with the decode error, and the client reconnects (bounded
    // here by max_retries, since no connection delivers an event).
    let source = EventSource::get(server.url("/events"))
        .limits(1024, 64)
        .max_retries(Some(1));
    let items = drain(source).await;
    assert_eq!(trace(&items), ["open", "reconnect", "open", "err"]);
    let Ok(SseEvent::Reconnect(r)) = &items[1] else {
        panic!()
    };
    let cause = r.error().unwrap();
    assert_eq!(cause.kind(), ErrorKind::Decode);
    assert_eq!(
        cause.source().unwrap().to_string(),
        "event data larger than 64 bytes"
    );
    let last = items.last().unwrap().as_ref().unwrap_err();
    assert_eq!(last.kind(), ErrorKind::RetriesExhausted);
    assert_eq!(seen.0.lock().unwrap().len(), 2);

    // Off: the stream ends with it.
    let items = drain(
        EventSource::get(server.url("/events"))
            .limits(1024, 64)
            .reconnect_on_decode_error(false),
    )
    .await;
    assert_eq!(trace(&items), ["open", "err"]);
    let err = items.into_iter().last().unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Decode);
}

/// `https://` goes out with the `client` feature (tests/client_tls.rs has the TLS cases); a
/// relative or scheme-less URI is refused up front with a clear error.
#[tokio::test]
async fn the_default_client_refuses_a_relative_uri() {
    let items = drain(EventSource::get("/events".parse().unwrap())).await;
    assert_eq!(items.len(), 1);
    let err = items.into_iter().next().unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Request);
    assert!(
        err.to_string().contains("absolute http:// or https:// URI"),
        "{err}"
    );
}

#[test]
fn the_default_event_source_is_send_and_unpin() {
    fn check<T: Send + Unpin + 'static>() {}
    check::<EventSource<HttpClient>>();
}

/// A huge read timeout means "practically never", and must not panic when a frame resets it
/// (it did: `Instant::now() + Duration::MAX` overflows).
#[tokio::test]
async fn a_huge_read_timeout_does_not_panic() {
    let router = Router::new()
        .route(
            "/events",
            get(|| async {
                events(vec![
                    Event::new().id("1").data("one"),
                    Event::new().id("2").data("two"),
                ])
            }),
        )
        .layer(SseLayer::new());
    let server = serve(router).await;
    let source = EventSource::get(server.url("/events"))
        .read_timeout(Some(std::time::Duration::MAX))
        .max_retries(Some(0));
    let items = drain(source).await;
    assert_eq!(trace(&items)[..3], ["open", "msg 1 one", "msg 2 two"]);
}

/// `messages().of_type(..)` and `dispatch(Listeners)` ride on the same stream: the same events,
/// with the same resume, filtered or called back by type.
#[tokio::test]
async fn messages_by_type_and_listeners() {
    let router = Router::new()
        .route(
            "/events",
            get(|| async {
                events(vec![
                    Event::new().id("1").event("tick").data("t1"),
                    Event::new().id("2").data("plain"),
                    Event::new().id("3").event("tock").data("x"),
                    Event::new().id("4").event("tick").data("t2"),
                ])
            }),
        )
        .layer(SseLayer::new());
    let server = serve(router).await;
    let source = || EventSource::get(server.url("/events")).max_retries(Some(0));

    let ticks: Vec<String> = source()
        .messages()
        .of_type("tick")
        .of_type("message")
        .take(3)
        .map(|event| event.unwrap().data().to_owned())
        .collect()
        .await;
    assert_eq!(ticks, ["t1", "plain", "t2"]);

    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let push = |log: &Arc<Mutex<Vec<String>>>| {
        let log = log.clone();
        move |line: String| log.lock().unwrap().push(line)
    };
    let (on_tick, on_any, on_open, on_error) = (push(&log), push(&log), push(&log), push(&log));
    let listeners = tower_sse::client::Listeners::new()
        .on("tick", move |e| on_tick(format!("tick {}", e.data())))
        .on_message(move |e| on_any(format!("any {}", e.id())))
        .on_open(move |_| on_open("open".into()))
        .on_error(move |err| on_error(format!("error {:?}", err.kind())));
    timeout(LIMIT, source().dispatch(listeners)).await.unwrap();
    let log = log.lock().unwrap().clone();
    assert_eq!(
        log,
        [
            "open",
            "tick t1",
            "any 1",
            "any 2",
            "any 3",
            "tick t2",
            "any 4",
            "error RetriesExhausted"
        ]
    );
}
