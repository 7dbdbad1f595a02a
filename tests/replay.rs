//! Replay for a shared stream that is not the hub's (`ReplayLog::resume` in the handler): a
//! producer behind a `tokio::sync::broadcast`, clients over real TCP that drop and resume with
//! `Last-Event-ID`.

use std::time::Duration;

use axum::{Router, extract::Path, routing::get};
use bytes::Bytes;
use http::Request;
use http_body_util::Empty;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use tokio::{
    net::TcpListener,
    sync::{broadcast, oneshot},
    time::timeout,
};
use tokio_stream::wrappers::BroadcastStream;
use tower_sse::{
    EncodedEvent, Event, EventStream, LastEventId, SseLayer,
    replay::{ReplayLog, UnknownId},
    test::EventReader,
};

const EVENTS: u64 = 2000;

async fn serve(log: &ReplayLog, tx: &broadcast::Sender<EncodedEvent>) -> String {
    let feed = {
        let (tx, log) = (tx.clone(), log.clone());
        move |last: Option<LastEventId>| {
            let live = BroadcastStream::new(tx.subscribe());
            let resumed = log.resume(last.as_ref().map(LastEventId::as_str), live);
            async move { resumed }
        }
    };
    // `/plain` serves the same stream without resuming.
    let plain = {
        let tx = tx.clone();
        move || {
            let live = BroadcastStream::new(tx.subscribe());
            async move { EventStream::new(live) }
        }
    };
    let app = Router::new()
        .route("/feed", get(feed))
        .route("/plain", get(plain))
        .layer(SseLayer::new());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/feed")
}

type Body = hyper::body::Incoming;

async fn connect(url: &str, last: Option<&str>) -> (http::HeaderMap, EventReader<Body>) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut request = Request::get(url);
    if let Some(last) = last {
        request = request.header("last-event-id", last);
    }
    let response = client
        .request(request.body(Empty::new()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (parts, body) = response.into_parts();
    (parts.headers, EventReader::new(body))
}

/// Reads until it has seen id `EVENTS`, dropping the connection every few events (and
/// whenever the server ends it: a lagging client is cut by the broadcast ring), resuming with
/// the last id it saw. Returns every id it received, in order.
async fn flaky_client(url: String, seed: u64, ready: oneshot::Sender<()>) -> Vec<u64> {
    let mut rng = seed | 1;
    let mut seen: Vec<u64> = vec![];
    let mut ready = Some(ready);
    while seen.last() != Some(&EVENTS) {
        // A client cut before its first event (it fell a ring behind at once, on a loaded
        // machine) has no id to resume from. It sends `0`, which was never issued: the layer
        // reports the history lost and, with `SendHistory`, sends all of it, from event 1.
        let first = ready.is_some();
        let last = match seen.last() {
            Some(id) => Some(id.to_string()),
            None if !first => Some("0".to_owned()),
            None => None,
        };
        let (headers, mut reader) = connect(&url, last.as_deref()).await;
        if let Some(ready) = ready.take() {
            let _ = ready.send(()); // subscribed: the producer may start
        }
        let expect = match (&last, seen.is_empty()) {
            (None, _) => "none",
            (Some(_), true) => "history-lost",
            (Some(_), false) => "complete",
        };
        assert_eq!(headers["sse-replay"], expect, "resuming after {last:?}");
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let keep = 1 + rng % 60;
        for _ in 0..keep {
            match reader.next_event().await {
                Some(Ok(event)) => {
                    seen.push(event.id().parse().unwrap());
                    if seen.last() == Some(&EVENTS) {
                        break;
                    }
                }
                _ => break, // cut for lagging, or the body ended: reconnect
            }
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_clients_get_every_event_exactly_once_in_order() {
    let log = ReplayLog::new().max_events(EVENTS as usize);
    // A small ring: clients that fall 64 events behind are cut and must resume from the log.
    let (tx, _) = broadcast::channel(64);
    let url = serve(&log, &tx).await;

    let mut ready = vec![];
    let clients: Vec<_> = (0..8)
        .map(|seed| {
            let (tx, rx) = oneshot::channel();
            ready.push(rx);
            tokio::spawn(flaky_client(url.clone(), 0x9E37_79B9 * (seed + 1), tx))
        })
        .collect();
    for rx in ready {
        rx.await.unwrap();
    }
    let producer = tokio::spawn(async move {
        for n in 1..=EVENTS {
            let _ = tx.send(log.record(Event::new().id(n.to_string()).data(format!("event {n}"))));
            if n % 16 == 0 {
                tokio::task::yield_now().await;
            }
        }
        tx
    });
    let _tx = producer.await.unwrap();
    for client in clients {
        let seen = timeout(Duration::from_secs(60), client)
            .await
            .expect("a client never reached the last event")
            .unwrap();
        // Every client subscribed before event 1 was published.
        let want: Vec<u64> = (1..=EVENTS).collect();
        assert_eq!(seen, want, "gap or duplicate");
    }
}

#[tokio::test]
async fn unknown_id_is_reported_then_history_or_nothing() {
    let log = ReplayLog::new().max_events(3);
    let (tx, _) = broadcast::channel(16);
    for n in 1..=5 {
        let _ = tx.send(log.record(Event::new().id(n.to_string()).data("x")));
    }
    let url = serve(&log, &tx).await;
    let (headers, mut reader) = connect(&url, Some("1")).await; // evicted
    assert_eq!(headers["sse-replay"], "history-lost");
    let ids: Vec<String> = reader
        .take(3)
        .await
        .unwrap()
        .iter()
        .map(|e| e.id().to_owned())
        .collect();
    assert_eq!(ids, ["3", "4", "5"]);

    let log = log.on_unknown_id(UnknownId::LiveOnly);
    let url = serve(&log, &tx).await;
    let (headers, mut reader) = connect(&url, Some("no-such-id")).await;
    assert_eq!(headers["sse-replay"], "history-lost");
    let _ = tx.send(log.record(Event::new().id("6").data("x")));
    assert_eq!(reader.next_event().await.unwrap().unwrap().id(), "6");

    // A route that does not resume gets no replay and no header.
    let (headers, _) = connect(&url.replace("/feed", "/plain"), Some("3")).await;
    assert!(headers.get("sse-replay").is_none());
}

#[tokio::test]
async fn event_published_between_subscribe_and_snapshot_is_sent_once() {
    use tower::ServiceExt;

    let log = ReplayLog::new();
    let (tx, _) = broadcast::channel(16);
    for n in 1..=2 {
        let _ = tx.send(log.record(Event::new().id(n.to_string()).data("x")));
    }
    // The handler subscribes, then event 3 is published before the layer takes its snapshot:
    // it is both in the replay and in the live stream, and must reach the client once.
    let app = Router::new()
        .route(
            "/feed",
            get({
                let (tx, log) = (tx.clone(), log.clone());
                move |last: Option<LastEventId>| {
                    let live = BroadcastStream::new(tx.subscribe());
                    let _ = tx.send(log.record(Event::new().id("3").data("x")));
                    let resumed = log.resume(last.as_ref().map(LastEventId::as_str), live);
                    async move { resumed }
                }
            }),
        )
        .layer(SseLayer::new());
    let request = Request::get("/feed")
        .header("last-event-id", "1")
        .body(axum::body::Body::empty())
        .unwrap();
    let response = app.oneshot(request).await.unwrap();
    let _ = tx.send(log.record(Event::new().id("4").data("x")));
    drop(tx);
    let events = EventReader::new(response.into_body())
        .collect()
        .await
        .unwrap();
    let ids: Vec<&str> = events.iter().map(|e| e.id()).collect();
    assert_eq!(ids, ["2", "3", "4"]);
}

/// The handler names the log: a route with a path parameter resumes each user from that user's
/// log only (a log keyed by request path, as `SseLayer::replay` had, could not tell them apart
/// behind `/users/{user}/feed`, and one shared log would replay every user's events to all).
#[tokio::test]
async fn each_user_resumes_from_their_own_log() {
    use std::collections::HashMap;
    use tower::ServiceExt;

    let logs: HashMap<&str, ReplayLog> = [("alice", ReplayLog::new()), ("bob", ReplayLog::new())]
        .into_iter()
        .collect();
    let (tx, _) = broadcast::channel::<EncodedEvent>(16);
    for (n, user) in ["alice", "bob", "alice", "bob"].into_iter().enumerate() {
        let event = Event::new().id(format!("{user}-{n}")).data(user);
        let _ = tx.send(logs[user].record(event));
    }
    let app = Router::new()
        .route(
            "/users/{user}/feed",
            get({
                let (tx, logs) = (tx.clone(), logs.clone());
                move |Path(user): Path<String>, last: Option<LastEventId>| {
                    // This user's events only (a real app filters its live stream the same way).
                    let live =
                        tokio_stream::StreamExt::filter(BroadcastStream::new(tx.subscribe()), {
                            let user = user.clone();
                            move |event| {
                                event.as_ref().is_ok_and(|e| {
                                    e.id().is_some_and(|id| id.starts_with(user.as_str()))
                                })
                            }
                        });
                    let resumed =
                        logs[user.as_str()].resume(last.as_ref().map(LastEventId::as_str), live);
                    async move { resumed }
                }
            }),
        )
        .layer(SseLayer::new());
    let request = Request::get("/users/alice/feed")
        .header("last-event-id", "unknown")
        .body(axum::body::Body::empty())
        .unwrap();
    let response = app.oneshot(request).await.unwrap();
    assert_eq!(response.headers()["sse-replay"], "history-lost");
    drop((tx, logs));
    let events = EventReader::new(response.into_body())
        .collect()
        .await
        .unwrap();
    let ids: Vec<&str> = events.iter().map(|e| e.id()).collect();
    assert_eq!(ids, ["alice-0", "alice-2"]);
}
