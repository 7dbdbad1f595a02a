//! The hub on Redis Streams, against a real `redis-server` each test starts on its own port
//! (skipped with a printed reason when `redis-server` is missing, except under `CI`).

mod support;

use std::time::Duration;

use futures_util::StreamExt;
use support::redis::RedisServer;
use tokio::time::timeout;
use tower_sse::{
    EncodedEvent, Event,
    hub::{Hub, PublishError, RedisBackend, SubscribeError, Subscription},
    replay::{Replay, UnknownId},
};

const WAIT: Duration = Duration::from_secs(10);

async fn hub(redis: &RedisServer, prefix: &str) -> Hub {
    hub_with(redis, prefix, |b| b).await
}

async fn hub_with(
    redis: &RedisServer,
    prefix: &str,
    configure: impl FnOnce(tower_sse::hub::HubBuilder) -> tower_sse::hub::HubBuilder,
) -> Hub {
    let backend = RedisBackend::connect(&redis.url())
        .await
        .expect("connect to the test redis")
        .key_prefix(prefix)
        .timeout(Duration::from_millis(500));
    configure(Hub::builder()).redis(backend).build()
}

use support::data;

async fn next(sub: &mut Subscription) -> EncodedEvent {
    timeout(WAIT, sub.next())
        .await
        .expect("an event within 10 s")
        .expect("the stream goes on")
}

async fn take(sub: &mut Subscription, n: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(data(&next(sub).await));
    }
    out
}

fn strings(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| i.to_string()).collect()
}

#[tokio::test]
async fn two_hubs_exchange_events_with_stream_ids() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let a = hub(&redis, "t1:").await;
    let b = hub(&redis, "t1:").await;
    let mut on_b = b.subscribe("room").await.unwrap();
    let mut on_a = a.subscribe("room").await.unwrap();
    assert_eq!(on_b.replay(), Replay::NotRequested);

    let sent = a
        .publish("room", Event::new().event("m").data("from a"))
        .await
        .unwrap();
    let id = sent.id().unwrap().to_owned();
    let (ms, seq) = id.split_once('-').expect("a stream id");
    assert!(
        ms.parse::<u64>().is_ok() && seq.parse::<u64>().is_ok(),
        "{id}"
    );
    let got = next(&mut on_b).await;
    assert_eq!(got.id(), Some(&*id));
    assert_eq!(got.as_bytes(), sent.as_bytes());
    assert_eq!(
        &got.as_bytes()[..],
        format!("event: m\ndata: from a\nid: {id}\n\n").as_bytes()
    );
    assert_eq!(next(&mut on_a).await.as_bytes(), sent.as_bytes());

    b.publish("room", Event::new().data("from b"))
        .await
        .unwrap();
    assert_eq!(data(&next(&mut on_a).await), "from b");
    assert_eq!(data(&next(&mut on_b).await), "from b");

    // A publisher's own id is replaced by the stream id (the one that resumes anywhere).
    let mine = a
        .publish("room", Event::new().id("mine").data("x"))
        .await
        .unwrap();
    assert_ne!(mine.id(), Some("mine"));
    assert_eq!(next(&mut on_b).await.id(), mine.id());

    // The stream really is in Redis under the prefix.
    assert!(redis.command(&["XLEN", "t1:room"]).await.starts_with(":3"));

    // One event into several topics: one id in each, so a client of either resumes from it.
    let mut feed_on_b = b.subscribe("feed").await.unwrap();
    a.publish("feed", Event::new().data("feed only"))
        .await
        .unwrap();
    let both = a
        .publish_many(&["room", "feed"], Event::new().data("both"))
        .await
        .unwrap();
    assert_eq!(data(&next(&mut feed_on_b).await), "feed only");
    let (in_room, in_feed) = (next(&mut on_b).await, next(&mut feed_on_b).await);
    assert_eq!(in_room.id(), both.id());
    assert_eq!(in_feed.id(), both.id());
    assert_eq!(in_room.as_bytes(), in_feed.as_bytes());
    let after = a.publish("room", Event::new().data("after")).await.unwrap();
    for topic in ["room", "feed"] {
        let sub = a
            .subscriber(topic)
            .last_event_id(both.id())
            .subscribe()
            .await
            .unwrap();
        assert_eq!(sub.replay(), Replay::Complete, "{topic}");
    }
    let mut resumed = b
        .subscriber("room")
        .last_event_id(both.id())
        .subscribe()
        .await
        .unwrap();
    assert_eq!(next(&mut resumed).await.id(), after.id());
}

#[tokio::test]
async fn a_client_resumes_on_the_other_hub_exactly_once() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let a = hub(&redis, "t2:").await;
    let b = hub(&redis, "t2:").await;
    let mut first = a.subscribe("feed").await.unwrap();
    for i in 0..5 {
        a.publish("feed", Event::new().data(i.to_string()))
            .await
            .unwrap();
    }
    let mut last = None;
    for i in 0..5 {
        let event = next(&mut first).await;
        assert_eq!(data(&event), i.to_string());
        last = event.id().map(str::to_owned);
    }
    drop(first);
    for i in 5..10 {
        a.publish("feed", Event::new().data(i.to_string()))
            .await
            .unwrap();
    }
    // B has never seen this topic: its replay comes from XRANGE.
    let mut resumed = b
        .subscriber("feed")
        .last_event_id(last.as_deref())
        .subscribe()
        .await
        .unwrap();
    assert_eq!(resumed.replay(), Replay::Complete);
    assert_eq!(resumed.backlog_len(), 5);
    a.publish("feed", Event::new().data("10")).await.unwrap();
    assert_eq!(take(&mut resumed, 6).await, strings(5..11));

    // And a second resume on B now comes from its local cache, same answer.
    let mut again = b
        .subscriber("feed")
        .last_event_id(last.as_deref())
        .subscribe()
        .await
        .unwrap();
    assert_eq!(again.replay(), Replay::Complete);
    assert_eq!(take(&mut again, 6).await, strings(5..11));
}

#[tokio::test]
async fn ids_outside_the_window_are_history_lost() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let a = hub_with(&redis, "t3:", |b| b.history_events(10)).await;
    let b = hub_with(&redis, "t3:", |b| b.history_events(10)).await;
    let oldest = a.publish("w", Event::new().data("0")).await.unwrap();
    for i in 1..500 {
        a.publish("w", Event::new().data(i.to_string()))
            .await
            .unwrap();
    }
    // Trimmed (approximately to 10: Redis keeps whole nodes).
    let len: usize = redis.command(&["XLEN", "t3:w"]).await[1..]
        .trim()
        .parse()
        .unwrap();
    assert!((10..500).contains(&len), "{len}");

    let lost = b
        .subscriber("w")
        .last_event_id(oldest.id())
        .subscribe()
        .await
        .unwrap();
    assert_eq!(lost.replay(), Replay::HistoryLost);
    // SendHistory (the default): the newest window (10) of what the stream still has.
    assert_eq!(lost.backlog_len(), 10);

    for bogus in ["garbage", "99999999999999-0", "1-1"] {
        let sub = b
            .subscriber("w")
            .last_event_id(Some(bogus))
            .on_unknown_id(UnknownId::LiveOnly)
            .subscribe()
            .await
            .unwrap();
        assert_eq!(sub.replay(), Replay::HistoryLost, "{bogus}");
        assert_eq!(sub.backlog_len(), 0, "{bogus}");
    }
}

#[tokio::test]
async fn send_to_broadcast_and_close_reach_every_process() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let a = hub(&redis, "t4:").await;
    let b = hub(&redis, "t4:").await;
    let mut alice_on_b = b
        .subscriber("inbox/alice")
        .client_id("alice")
        .subscribe()
        .await
        .unwrap();
    let mut other_on_a = a.subscribe("lobby").await.unwrap();
    // Both listeners are up once each hub has answered one publish round trip.
    for hub in [&a, &b] {
        let mut probe = hub.subscribe("probe").await.unwrap();
        hub.publish("probe", Event::new().data("p")).await.unwrap();
        next(&mut probe).await;
    }
    let mut reached = 0;
    for _ in 0..100 {
        reached = a
            .send_to("alice", Event::new().data("hi alice"))
            .await
            .unwrap();
        if reached == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(reached, 2, "both processes listen");
    let got = next(&mut alice_on_b).await;
    assert_eq!(data(&got), "hi alice");
    assert_eq!(got.id(), None, "live only, no id");

    b.broadcast(Event::new().data("to all")).await.unwrap();
    assert_eq!(data(&next(&mut other_on_a).await), "to all");

    // Closing on A ends B's subscribers after the final event.
    let mut room_on_b = b.subscribe("room/9").await.unwrap();
    a.publish("room/9", Event::new().data("before"))
        .await
        .unwrap();
    assert!(
        a.close_topic("room/9", Some(Event::new().event("closed").data("bye")))
            .await
            .unwrap()
    );
    assert_eq!(take(&mut room_on_b, 2).await, ["before", "bye"]);
    assert!(timeout(WAIT, room_on_b.next()).await.unwrap().is_none());
    assert!(!a.close_topic("never-existed", None).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_resumes_across_hubs_are_gap_free() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    const N: usize = 600;
    // The stream keeps everything; each process's cache only ~17 events (600 B), so resumes
    // take both paths: from the cache, and XRANGE then hand-off.
    let a = hub_with(&redis, "t5:", |b| b.history_events(5000).history_bytes(600)).await;
    let b = hub_with(&redis, "t5:", |b| {
        b.history_events(5000)
            .history_bytes(600)
            .subscriber_capacity(4096)
    })
    .await;
    // Make sure B follows the topic before publishing starts, so cache and XRANGE paths mix.
    let _warm = b.subscribe("c").await.unwrap();
    let publisher = tokio::spawn({
        let a = a.clone();
        async move {
            for i in 0..N {
                a.publish("c", Event::new().data(i.to_string()))
                    .await
                    .unwrap();
                if i % 5 == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
    });
    // Eight clients, each dropping out at its own points and resuming on alternating hubs.
    let mut clients = Vec::new();
    for c in 0..8usize {
        let hubs = [a.clone(), b.clone()];
        clients.push(tokio::spawn(async move {
            let mut seen: Vec<usize> = Vec::new();
            let mut last: Option<String> = None;
            let mut turn = c;
            while seen.last() != Some(&(N - 1)) {
                let hub = &hubs[turn % 2];
                turn += 1;
                let mut sub = hub
                    .subscriber("c")
                    .last_event_id(last.as_deref())
                    .subscribe()
                    .await
                    .unwrap();
                if last.is_some() {
                    assert_eq!(sub.replay(), Replay::Complete);
                }
                let burst = 37 + c * 11;
                for _ in 0..burst {
                    let Ok(Some(event)) = timeout(WAIT, sub.next()).await else {
                        panic!("client {c} stalled after {}", seen.len());
                    };
                    seen.push(data(&event).parse().unwrap());
                    last = event.id().map(str::to_owned);
                    if seen.last() == Some(&(N - 1)) {
                        break;
                    }
                }
                drop(sub);
                // Away for a while: often longer than the local cache covers.
                tokio::time::sleep(Duration::from_millis((turn as u64 * 7 + c as u64) % 30)).await;
            }
            seen
        }));
    }
    publisher.await.unwrap();
    for (c, client) in clients.into_iter().enumerate() {
        let seen = client.await.unwrap();
        // The first subscription had no Last-Event-ID: it starts wherever it joined.
        let start = seen[0];
        let want: Vec<usize> = (start..N).collect();
        assert_eq!(
            &seen[..want.len()],
            &want[..],
            "client {c}: gap or duplicate"
        );
    }
}

#[tokio::test]
async fn redis_down_means_clear_errors_not_hangs() {
    let Some(mut redis) = RedisServer::start().await else {
        return;
    };
    let a = hub(&redis, "t6:").await;
    let first = a.publish("x", Event::new().data("1")).await.unwrap();
    redis.kill().await;

    let started = std::time::Instant::now();
    let err = timeout(WAIT, a.publish("x", Event::new().data("2")))
        .await
        .expect("publish gives up instead of hanging")
        .unwrap_err();
    assert_eq!(err, PublishError::Unavailable);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let err = timeout(
        WAIT,
        a.subscriber("other").last_event_id(first.id()).subscribe(),
    )
    .await
    .expect("subscribe gives up instead of hanging")
    .unwrap_err();
    assert_eq!(err, SubscribeError::Unavailable);

    // Start-up with Redis down: a clear message naming the address.
    let err = RedisBackend::connect(&redis.url()).await.unwrap_err();
    let message = err.to_string();
    assert!(message.contains(&redis.port().to_string()), "{message}");
    let err = RedisBackend::connect("no-such-scheme://x")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no-such-scheme"), "{err}");

    // Back up: the same hub works again.
    redis.restart().await;
    let mut ok = false;
    for _ in 0..100 {
        if a.publish("x", Event::new().data("3")).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "publishing recovers after Redis is back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_mid_stream_loses_nothing_it_kept() {
    let Some(mut redis) = RedisServer::start().await else {
        return;
    };
    const N: usize = 400;
    // Subscribers are read only at the end: the ring holds everything.
    let a = hub_with(&redis, "t7:", |b| b.subscriber_capacity(1024)).await;
    let b = hub_with(&redis, "t7:", |b| b.subscriber_capacity(1024)).await;
    let mut subs = [
        a.subscribe("s").await.unwrap(),
        b.subscribe("s").await.unwrap(),
        b.subscribe("s").await.unwrap(),
    ];
    // The publisher retries each message until Redis takes it.
    let publisher = tokio::spawn({
        let a = a.clone();
        async move {
            let mut failures = 0;
            for i in 0..N {
                loop {
                    match a.publish("s", Event::new().data(i.to_string())).await {
                        Ok(_) => break,
                        Err(PublishError::Unavailable) => {
                            failures += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Err(err) => panic!("{err}"),
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            failures
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.kill().await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    redis.restart().await;
    let failures = publisher.await.unwrap();
    assert!(failures > 0, "the publisher saw the outage");

    for (s, sub) in subs.iter_mut().enumerate() {
        let mut seen: Vec<usize> = Vec::new();
        while seen.last() != Some(&(N - 1)) {
            let event = timeout(Duration::from_secs(20), sub.next())
                .await
                .unwrap_or_else(|_| panic!("subscriber {s} stalled at {:?}", seen.last()))
                .expect("the stream goes on across the restart");
            seen.push(data(&event).parse().unwrap());
        }
        // A publish that timed out may still have been stored, then retried: at most that
        // many adjacent repeats. Nothing missing, nothing out of order.
        let repeats = seen.windows(2).filter(|w| w[0] == w[1]).count();
        seen.dedup();
        assert_eq!(seen, (0..N).collect::<Vec<_>>(), "subscriber {s}");
        assert!(repeats <= failures, "subscriber {s}: {repeats} repeats");
    }
}

#[tokio::test]
async fn connections_per_process_do_not_grow_with_clients_or_topics() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let a = hub(&redis, "t8:").await;
    let mut subs = Vec::new();
    for i in 0..200 {
        subs.push(a.subscribe(&format!("topic/{}", i % 20)).await.unwrap());
    }
    a.send_to("nobody", Event::new().data("x")).await.unwrap();
    for i in 0..20 {
        a.publish(&format!("topic/{i}"), Event::new().data("x"))
            .await
            .unwrap();
    }
    for sub in &mut subs {
        next(sub).await;
    }
    let clients = redis.command(&["CLIENT", "LIST"]).await;
    // Commands, the blocking reader, pub/sub, plus this CLIENT LIST.
    let count = clients.lines().filter(|l| l.contains("id=")).count();
    assert!(count <= 4, "{count} connections:\n{clients}");
}

// Regressions from review.

#[tokio::test]
async fn an_event_with_only_an_id_is_published_not_reported_unavailable() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let a = hub(&redis, "r1:").await;
    let mut sub = a.subscribe("t").await.unwrap();
    let sent = a.publish("t", Event::new().id("x")).await.unwrap();
    let got = next(&mut sub).await;
    assert_eq!(got.as_bytes(), sent.as_bytes());
    assert_eq!(
        &got.as_bytes()[..],
        format!("id: {}\n\n", got.id().unwrap()).as_bytes()
    );
    assert!(a.close_topic("t", Some(Event::new())).await.unwrap());
}

#[tokio::test]
async fn an_abandoned_subscribe_leaves_no_followed_topic() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let a = hub(&redis, "r2:").await;
    // Give up on the subscribe future at each await point in turn.
    for polls in 1..6 {
        let mut fut = Box::pin(a.subscriber("leak").last_event_id(Some("1-0")).subscribe());
        for _ in 0..polls {
            if futures_util::poll!(fut.as_mut()).is_ready() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        drop(fut);
        assert_eq!(a.topic_count(), 0, "after {polls} polls: {:?}", a.topics());
    }
    // A failing one (Redis gone) leaves nothing either.
    let mut redis = redis;
    redis.kill().await;
    assert!(a.subscribe("gone").await.is_err());
    assert_eq!(a.topic_count(), 0);
}

#[tokio::test]
async fn resuming_further_back_than_the_window_is_history_lost_not_an_error() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    // Two processes with different windows (a rolling deploy): B's is smaller.
    let a = hub_with(&redis, "r3:", |b| b.history_events(1000)).await;
    let b = hub_with(&redis, "r3:", |b| b.history_events(10)).await;
    let first = a.publish("t", Event::new().data("0")).await.unwrap();
    for i in 1..300 {
        a.publish("t", Event::new().data(i.to_string()))
            .await
            .unwrap();
    }
    let lost = b
        .subscriber("t")
        .last_event_id(first.id())
        .subscribe()
        .await
        .unwrap();
    assert_eq!(lost.replay(), Replay::HistoryLost);
    // SendHistory gives the newest window, ending with the latest event.
    let mut lost = lost;
    let backlog = lost.backlog_len();
    assert_eq!(backlog, 10);
    let got = take(&mut lost, backlog).await;
    assert_eq!(got, strings(290..300));
    // Within B's window it resumes.
    let recent = a.publish("t", Event::new().data("300")).await.unwrap();
    a.publish("t", Event::new().data("301")).await.unwrap();
    let mut ok = b
        .subscriber("t")
        .last_event_id(recent.id())
        .subscribe()
        .await
        .unwrap();
    assert_eq!(ok.replay(), Replay::Complete);
    assert_eq!(take(&mut ok, 1).await, ["301"]);
}

#[tokio::test]
async fn publish_many_takes_the_streams_last_generated_ids_into_account() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let a = hub(&redis, "r5:").await;
    // A stream whose last generated id is ahead of its (deleted) last entry.
    redis
        .command(&["XADD", "r5:b", "9999999999999-0", "x", "y"])
        .await;
    redis.command(&["XDEL", "r5:b", "9999999999999-0"]).await;
    let sent = a
        .publish_many(&["a", "b"], Event::new().data("x"))
        .await
        .unwrap();
    assert_eq!(sent.id(), Some("9999999999999-1"));
    // A key of another type fails the call before anything is written.
    redis.command(&["SET", "r5:c", "not a stream"]).await;
    let before = redis.command(&["XLEN", "r5:a"]).await;
    assert_eq!(
        a.publish_many(&["a", "c"], Event::new().data("y"))
            .await
            .unwrap_err(),
        PublishError::Unavailable
    );
    assert_eq!(redis.command(&["XLEN", "r5:a"]).await, before);
}

/// What the Redis broker cannot do yet is refused with a clear error, never half done:
/// several topics or a pattern on one subscription, and private events.
#[tokio::test]
async fn many_topics_and_private_events_are_refused_clearly_on_redis() {
    use tower_sse::hub::{Pattern, SelectionError};

    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let hub = hub(&redis, "refuse:").await;
    let err = hub
        .subscriber("a")
        .topic("b")
        .subscribe()
        .await
        .unwrap_err();
    assert_eq!(err, SubscribeError::Selection(SelectionError::Unsupported));
    assert_eq!(err.status(), http::StatusCode::BAD_REQUEST);
    let err = hub
        .subscription()
        .pattern(Pattern::glob("rooms/*").unwrap())
        .subscribe()
        .await
        .unwrap_err();
    assert_eq!(err, SubscribeError::Selection(SelectionError::Unsupported));
    let err = hub
        .publisher(&["a"])
        .private()
        .publish(Event::new().data("x"))
        .await
        .unwrap_err();
    assert_eq!(err, PublishError::Unsupported);
    assert_eq!(err.status(), http::StatusCode::NOT_IMPLEMENTED);
    // A public publication through the builder works as publish_many.
    let mut sub = hub.subscribe("a").await.unwrap();
    hub.publisher(&["a"])
        .publish(Event::new().data("ok"))
        .await
        .unwrap();
    assert_eq!(data(&next(&mut sub).await), "ok");
    assert_eq!(hub.total_subscribers(), 1);
}
