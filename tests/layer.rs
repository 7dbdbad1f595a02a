//! Unit tests of the layer's logic, with tower-test mocks and paused time.

use std::{io, pin::Pin, time::Duration};

use bytes::Bytes;
use http::{Request, Response, Version};
use http_body_util::BodyExt;
use tokio::{sync::mpsc, time::Instant};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_test::assert_ready_ok;
use tower_sse::{Disconnect, Event, EventStream, LastEventId, Shutdown, SseBody, SseLayer};
use tower_test::mock;

type Item = Result<Event, io::Error>;
type Events = UnboundedReceiverStream<Item>;
type Body = Pin<Box<SseBody<Events>>>;

struct Call {
    request: Request<()>,
    response: Response<Body>,
}

/// Runs one request through `layer` around a mock whose response carries a channel stream.
async fn run(layer: SseLayer, request: Request<()>) -> (Call, mpsc::UnboundedSender<Item>) {
    let (mut service, mut handle) =
        mock::spawn_layer::<Request<()>, Response<EventStream<Events>>, _>(layer);
    assert_ready_ok!(service.poll_ready());
    let future = service.call(request);
    let (request, send) = handle.next_request().await.unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    send.send_response(Response::new(EventStream::new(
        UnboundedReceiverStream::new(rx),
    )));
    let response = future.await.unwrap().map(Box::pin);
    (Call { request, response }, tx)
}

async fn next(body: &mut Body) -> Option<Bytes> {
    body.frame()
        .await
        .map(|frame| frame.unwrap().into_data().unwrap())
}

#[tokio::test]
async fn sets_sse_headers_on_http1() {
    let (call, _tx) = run(SseLayer::new(), Request::new(())).await;
    let headers = call.response.headers();
    assert_eq!(headers["content-type"], "text/event-stream");
    assert_eq!(headers["cache-control"], "no-cache");
    assert_eq!(headers["x-accel-buffering"], "no");
    assert_eq!(headers["connection"], "keep-alive");
    assert!(headers.get("content-length").is_none());
}

#[tokio::test]
async fn no_connection_header_on_http2() {
    let request = Request::builder()
        .version(Version::HTTP_2)
        .body(())
        .unwrap();
    let (call, _tx) = run(SseLayer::new(), request).await;
    assert!(call.response.headers().get("connection").is_none());
    assert_eq!(call.response.headers()["content-type"], "text/event-stream");
}

#[tokio::test]
async fn keeps_cache_control_of_inner_service_and_drops_content_length() {
    let (mut service, mut handle) =
        mock::spawn_layer::<Request<()>, Response<EventStream<Events>>, _>(SseLayer::new());
    assert_ready_ok!(service.poll_ready());
    let future = service.call(Request::new(()));
    let (_, send) = handle.next_request().await.unwrap();
    let (_tx, rx) = mpsc::unbounded_channel();
    let response = Response::builder()
        .header("cache-control", "no-store")
        .header("content-type", "text/plain; charset=latin1")
        .header("content-length", "12")
        .body(EventStream::new(UnboundedReceiverStream::new(rx)))
        .unwrap();
    send.send_response(response);
    let response = future.await.unwrap();
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert!(response.headers().get("content-length").is_none());
}

#[tokio::test]
async fn puts_last_event_id_and_disconnect_into_extensions() {
    let request = Request::get("/")
        .header("last-event-id", "41")
        .body(())
        .unwrap();
    let (call, _tx) = run(SseLayer::new(), request).await;
    assert_eq!(
        call.request.extensions().get::<LastEventId>(),
        LastEventId::new("41").as_ref()
    );
    assert!(call.request.extensions().get::<Disconnect>().is_some());

    let request = Request::get("/?lastEventId=a%0Ab").body(()).unwrap();
    let (call, _tx) = run(SseLayer::new(), request).await;
    assert!(call.request.extensions().get::<LastEventId>().is_none());

    let too_long = "x".repeat(1025);
    let request = Request::get("/")
        .header("last-event-id", too_long)
        .body(())
        .unwrap();
    let (call, _tx) = run(SseLayer::new(), request).await;
    assert!(call.request.extensions().get::<LastEventId>().is_none());
}

#[tokio::test]
async fn inner_error_is_passed_on() {
    let (mut service, mut handle) =
        mock::spawn_layer::<Request<()>, Response<EventStream<Events>>, _>(SseLayer::new());
    assert_ready_ok!(service.poll_ready());
    let future = service.call(Request::new(()));
    let (_, send) = handle.next_request().await.unwrap();
    send.send_error(io::Error::other("inner failed"));
    let err = future.await.unwrap_err();
    assert_eq!(err.to_string(), "inner failed");
}

#[tokio::test]
async fn ready_events_are_coalesced_into_one_frame() {
    let (mut call, tx) = call_with(SseLayer::new()).await;
    for n in 1..=3 {
        tx.send(Ok(Event::new().data(n.to_string()))).unwrap();
    }
    let body = call.response.body_mut();
    assert_eq!(
        next(body).await.unwrap(),
        "data: 1\n\ndata: 2\n\ndata: 3\n\n"
    );

    let (mut call, tx) = call_with(SseLayer::new().max_batch(0)).await;
    for n in 1..=2 {
        tx.send(Ok(Event::new().data(n.to_string()))).unwrap();
    }
    let body = call.response.body_mut();
    assert_eq!(next(body).await.unwrap(), "data: 1\n\n");
    assert_eq!(next(body).await.unwrap(), "data: 2\n\n");
}

#[tokio::test]
async fn batch_cap_splits_frames() {
    let (mut call, tx) = call_with(SseLayer::new().max_batch(20)).await;
    for _ in 0..3 {
        tx.send(Ok(Event::new().data("0123456789"))).unwrap(); // 18 bytes each
    }
    let body = call.response.body_mut();
    assert_eq!(next(body).await.unwrap().len(), 36);
    assert_eq!(next(body).await.unwrap().len(), 18);
}

async fn call_with(layer: SseLayer) -> (Call, mpsc::UnboundedSender<Item>) {
    run(layer, Request::new(())).await
}

#[tokio::test]
async fn stream_error_ends_body_cleanly_after_earlier_events() {
    let (mut call, tx) = call_with(SseLayer::new()).await;
    let disconnect = call
        .request
        .extensions()
        .get::<Disconnect>()
        .unwrap()
        .clone();
    tx.send(Ok(Event::new().data("before"))).unwrap();
    tx.send(Err(io::Error::other("broken"))).unwrap();
    tx.send(Ok(Event::new().data("after"))).unwrap();
    let body = call.response.body_mut();
    assert_eq!(next(body).await.unwrap(), "data: before\n\n");
    assert!(
        body.frame().await.is_none(),
        "an error ends the body without an error frame"
    );
    assert!(http_body::Body::is_end_stream(&**body));
    assert!(disconnect.is_closed());
    assert!(!disconnect.client_gone());
}

#[tokio::test]
async fn stream_end_ends_body() {
    let (mut call, tx) = call_with(SseLayer::new()).await;
    tx.send(Ok(Event::new().data("last"))).unwrap();
    drop(tx);
    let body = call.response.body_mut();
    assert_eq!(next(body).await.unwrap(), "data: last\n\n");
    assert!(body.frame().await.is_none());
}

#[tokio::test]
async fn dropping_the_body_reports_client_gone_and_drops_the_stream() {
    let (call, tx) = call_with(SseLayer::new()).await;
    let disconnect = call
        .request
        .extensions()
        .get::<Disconnect>()
        .unwrap()
        .clone();
    assert!(!disconnect.is_closed());
    drop(call.response);
    disconnect.closed().await;
    assert!(disconnect.client_gone());
    assert!(tx.is_closed(), "the event stream was dropped with the body");
}

#[tokio::test(start_paused = true)]
async fn keep_alive_after_idle_interval_reset_by_events() {
    let (mut call, tx) = call_with(SseLayer::new()).await;
    let body = call.response.body_mut();
    let start = Instant::now();
    assert_eq!(next(body).await.unwrap(), ":\n\n");
    assert_eq!(start.elapsed(), Duration::from_secs(15));

    // An event at +10 s pushes the next comment to +25 s.
    let sender = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(10)).await;
        tx.send(Ok(Event::new().data("x"))).unwrap();
        tx
    });
    let start = Instant::now();
    assert_eq!(next(body).await.unwrap(), "data: x\n\n");
    assert_eq!(start.elapsed(), Duration::from_secs(10));
    assert_eq!(next(body).await.unwrap(), ":\n\n");
    assert_eq!(start.elapsed(), Duration::from_secs(25));
    drop(sender);
}

/// Counts the wake-ups of one "task".
#[derive(Default)]
struct Wakes(std::sync::atomic::AtomicUsize);

impl std::task::Wake for Wakes {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Wakes {
    fn count(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A "task": its wake-up count and its waker.
fn task() -> (std::sync::Arc<Wakes>, std::task::Waker) {
    let wakes = std::sync::Arc::new(Wakes::default());
    (wakes.clone(), std::task::Waker::from(wakes))
}

/// Polls `body` once for the task of `waker`: its data frame, or `None` when pending.
fn poll_once(body: &mut Body, waker: &std::task::Waker) -> Option<Bytes> {
    use http_body::Body as _;
    use std::task::{Context, Poll};
    match body.as_mut().poll_frame(&mut Context::from_waker(waker)) {
        Poll::Ready(Some(Ok(frame))) => Some(frame.into_data().unwrap()),
        Poll::Pending => None,
        other => panic!("unexpected {:?}", other.map(|_| ())),
    }
}

/// The keep-alive timer is not polled again while it is registered for the polling task (a
/// saving per event): it must still wake that task when it fires, and a body polled by
/// another task must move the registration to it.
#[tokio::test(start_paused = true)]
async fn keep_alive_wakes_the_task_that_polls_the_body_last() {
    let (mut call, tx) = call_with(SseLayer::new()).await;
    let body = call.response.body_mut();
    let ((a, waker_a), (b, waker_b)) = (task(), task());
    let mut poll = |waker| poll_once(body, waker);
    assert_eq!(poll(&waker_a), None);
    tokio::time::advance(Duration::from_secs(5)).await;
    tx.send(Ok(Event::new().data("x"))).unwrap();
    assert_eq!(poll(&waker_a).unwrap(), "data: x\n\n");
    assert_eq!(
        poll(&waker_a),
        None,
        "nothing more: the timer is left as it was"
    );
    let before = a.count();
    tokio::time::advance(Duration::from_secs(10)).await;
    // The timer first fires at +15 s (for the frame at +5 s it moves to +20 s).
    assert!(a.count() > before, "the timer woke the task");
    assert_eq!(poll(&waker_a), None);
    let before = a.count();
    tokio::time::advance(Duration::from_secs(5)).await;
    assert!(a.count() > before, "the moved timer woke the task");
    assert_eq!(poll(&waker_a).unwrap(), ":\n\n");
    // Registered for one task, then polled by another: the timer wakes the other one.
    assert_eq!(poll(&waker_a), None);
    assert_eq!(poll(&waker_b), None);
    let (before_a, before_b) = (a.count(), b.count());
    tokio::time::advance(Duration::from_secs(15)).await;
    assert!(
        b.count() > before_b,
        "the timer woke the task that polled last"
    );
    assert_eq!(a.count(), before_a);
    assert_eq!(poll(&waker_b).unwrap(), ":\n\n");
}

/// An event that comes after a frame was handed out and before the body is polled again
/// (woken by it) is read by that poll: the body must not assume the stream is still where it
/// left it. (A first version of a saving skipped the stream on the poll right after a frame;
/// hyper may poll the body again only in a later run of the task, so the event waited for
/// the next wake-up.) Also for a body polled by another task.
#[tokio::test(start_paused = true)]
async fn an_event_between_a_frame_and_the_next_poll_is_read_by_that_poll() {
    let (mut call, tx) = call_with(SseLayer::new()).await;
    let body = call.response.body_mut();
    let ((a, waker_a), (_, waker_b)) = (task(), task());
    let mut poll = |waker| poll_once(body, waker);
    assert_eq!(poll(&waker_a), None);
    for round in 0..3 {
        let before = a.count();
        tx.send(Ok(Event::new().data(format!("{round}")))).unwrap();
        assert!(
            a.count() > before,
            "the stream's registration woke the task"
        );
        assert_eq!(poll(&waker_a).unwrap(), format!("data: {round}\n\n"));
    }
    tx.send(Ok(Event::new().data("y"))).unwrap();
    assert_eq!(poll(&waker_b).unwrap(), "data: y\n\n");
    assert_eq!(poll(&waker_b), None);
}

#[tokio::test(start_paused = true)]
async fn keep_alive_text_interval_and_off() {
    let layer = SseLayer::new()
        .keep_alive(Duration::from_secs(3))
        .keep_alive_text("ping\nnow");
    let (mut call, _tx) = call_with(layer).await;
    let start = Instant::now();
    let body = call.response.body_mut();
    assert_eq!(next(body).await.unwrap(), ": ping\n: now\n\n");
    assert_eq!(start.elapsed(), Duration::from_secs(3));

    let (mut call, tx) = call_with(SseLayer::new().no_keep_alive()).await;
    let sender = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        tx.send(Ok(Event::new().data("late"))).unwrap();
    });
    assert_eq!(
        next(call.response.body_mut()).await.unwrap(),
        "data: late\n\n"
    );
    sender.await.unwrap();
}

/// A zero keep-alive means "off": before, it sent a comment on every poll (about 900 a second
/// per connection on a real socket).
#[tokio::test(start_paused = true)]
async fn a_zero_keep_alive_is_off() {
    let (mut call, tx) = call_with(SseLayer::new().keep_alive(Duration::ZERO)).await;
    let sender = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(60)).await;
        tx.send(Ok(Event::new().data("late"))).unwrap();
    });
    assert_eq!(
        next(call.response.body_mut()).await.unwrap(),
        "data: late\n\n",
        "no comment before the first event"
    );
    sender.await.unwrap();
}

#[tokio::test]
async fn retry_is_sent_first() {
    let (mut call, tx) = call_with(SseLayer::new().retry(Duration::from_millis(1500))).await;
    tx.send(Ok(Event::new().data("x"))).unwrap();
    let body = call.response.body_mut();
    assert_eq!(next(body).await.unwrap(), "retry: 1500\n\n");
    assert_eq!(next(body).await.unwrap(), "data: x\n\n");
}

#[tokio::test]
async fn shutdown_sends_final_event_and_ends() {
    let shutdown = Shutdown::new();
    let layer = SseLayer::new()
        .shutdown(&shutdown)
        .shutdown_event(Event::new().event("bye").data(""));
    let (mut call, tx) = call_with(layer.clone()).await;
    let disconnect = call
        .request
        .extensions()
        .get::<Disconnect>()
        .unwrap()
        .clone();
    tx.send(Ok(Event::new().data("1"))).unwrap();
    let body = call.response.body_mut();
    assert_eq!(next(body).await.unwrap(), "data: 1\n\n");
    shutdown.trigger();
    assert_eq!(next(body).await.unwrap(), "event: bye\ndata:\n\n");
    assert!(body.frame().await.is_none());
    assert!(disconnect.is_closed() && !disconnect.client_gone());

    // A stream opened after the trigger ends at once.
    let (mut call, _tx) = call_with(layer).await;
    let body = call.response.body_mut();
    assert_eq!(next(body).await.unwrap(), "event: bye\ndata:\n\n");
    assert!(body.frame().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn shutdown_grace_keeps_delivering_then_ends() {
    let shutdown = Shutdown::new();
    let layer = SseLayer::new()
        .shutdown(&shutdown)
        .shutdown_grace(Duration::from_secs(2));
    let (mut call, tx) = call_with(layer).await;
    let body = call.response.body_mut();
    shutdown.trigger();
    let start = Instant::now();
    let sender = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        tx.send(Ok(Event::new().data("in grace"))).unwrap();
        tx
    });
    assert_eq!(next(body).await.unwrap(), "data: in grace\n\n");
    assert!(body.frame().await.is_none());
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    drop(sender);
}

/// What the lifecycle hooks saw, in order.
#[derive(Clone, Default)]
struct Seen(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl Seen {
    fn push(&self, what: String) {
        self.0.lock().unwrap().push(what);
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }

    fn layer(&self) -> SseLayer {
        use tower_sse::{
            BoxError,
            layer::{CloseReason, StreamInfo},
        };
        let (open, close, error) = (self.clone(), self.clone(), self.clone());
        SseLayer::new()
            .on_open(move |info: &StreamInfo| open.push(format!("open {}", info.uri())))
            .on_close(move |_: &StreamInfo, reason: CloseReason| {
                close.push(format!("close {}", reason.as_str()))
            })
            .on_error(move |_: &StreamInfo, err: &BoxError| error.push(format!("error {err}")))
    }
}

#[tokio::test]
async fn lifecycle_hooks_see_open_and_each_close_reason() {
    let seen = Seen::default();
    let request = || Request::get("/feed?x=1").body(()).unwrap();

    // The stream ends.
    let (mut call, tx) = run(seen.layer(), request()).await;
    assert_eq!(seen.take(), ["open /feed?x=1"]);
    drop(tx);
    assert!(call.response.body_mut().frame().await.is_none());
    drop(call);
    assert_eq!(seen.take(), ["close stream_ended"]);

    // It fails.
    let (mut call, tx) = run(seen.layer(), request()).await;
    tx.send(Err(io::Error::other("broken"))).unwrap();
    assert!(call.response.body_mut().frame().await.is_none());
    drop(call);
    assert_eq!(
        seen.take(),
        ["open /feed?x=1", "error broken", "close error"]
    );

    // The client goes away.
    let (call, _tx) = run(seen.layer(), request()).await;
    drop(call);
    assert_eq!(seen.take(), ["open /feed?x=1", "close client_gone"]);

    // Shutdown.
    let shutdown = Shutdown::new();
    let (mut call, _tx) = run(seen.layer().shutdown(&shutdown), request()).await;
    shutdown.trigger();
    assert!(call.response.body_mut().frame().await.is_none());
    drop(call);
    assert_eq!(seen.take(), ["open /feed?x=1", "close shutdown"]);
}

#[tokio::test]
async fn responses_passed_through_call_no_hook() {
    use tower::ServiceExt;

    let seen = Seen::default();
    let app = axum::Router::new()
        .route("/plain", axum::routing::get(|| async { "not a stream" }))
        .layer(seen.layer());
    let request = Request::get("/plain")
        .body(axum::body::Body::empty())
        .unwrap();
    let response = app.oneshot(request).await.unwrap();
    drop(response.into_body().collect().await.unwrap());
    assert!(seen.take().is_empty());
}
