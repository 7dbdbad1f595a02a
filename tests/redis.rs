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
    on_backend(redis, prefix, |b| b, configure).await
}

async fn on_backend(
    redis: &RedisServer,
    prefix: &str,
    backend: impl FnOnce(RedisBackend) -> RedisBackend,
    configure: impl FnOnce(tower_sse::hub::HubBuilder) -> tower_sse::hub::HubBuilder,
) -> Hub {
    let redis = RedisBackend::connect(&redis.url())
        .await
        .expect("connect to the test redis")
        .key_prefix(prefix)
        .timeout(Duration::from_millis(500));
    configure(Hub::builder()).redis(backend(redis)).build()
}

/// The length of the hub's stream.
async fn xlen(redis: &RedisServer, prefix: &str) -> usize {
    redis.command(&["XLEN", &format!("{prefix}log")]).await[1..]
        .trim()
        .parse()
        .unwrap()
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
async fn two_hubs_exchange_events_with_hub_wide_ids() {
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
    assert!(id.parse::<u64>().is_ok(), "{id}");
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

    // A publisher's own id is kept (and indexed: see `publisher_ids_resume_on_the_other_process`).
    let mine = a
        .publish("room", Event::new().id("mine").data("x"))
        .await
        .unwrap();
    assert_eq!(mine.id(), Some("mine"));
    assert_eq!(next(&mut on_b).await.id(), mine.id());

    // The stream really is in Redis under the prefix: one for the hub, entry ids 0-<id>.
    assert_eq!(xlen(&redis, "t1:").await, 3);
    let entry = redis
        .command(&["XRANGE", "t1:log", &format!("0-{id}"), &format!("0-{id}")])
        .await;
    assert!(
        entry.contains("T4:room\nevent: m\ndata: from a\n"),
        "{entry:?}"
    );

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
    let small = |b: RedisBackend| b.max_events(10);
    let a = on_backend(&redis, "t3:", small, |b| b.history_events(10)).await;
    let b = on_backend(&redis, "t3:", small, |b| b.history_events(10)).await;
    let oldest = a.publish("w", Event::new().data("0")).await.unwrap();
    for i in 1..500 {
        a.publish("w", Event::new().data(i.to_string()))
            .await
            .unwrap();
    }
    // Trimmed (approximately to 10: Redis keeps whole nodes).
    let len = xlen(&redis, "t3:").await;
    assert!((10..500).contains(&len), "{len}");

    let lost = b
        .subscriber("w")
        .last_event_id(oldest.id())
        .subscribe()
        .await
        .unwrap();
    assert_eq!(lost.replay(), Replay::HistoryLost);
    // The default (the newest 100 at most): the newest window (10) of what the stream has.
    assert_eq!(lost.backlog_len(), 10);
    let beyond = (oldest.id().unwrap().parse::<u64>().unwrap() + 10_000).to_string();
    support::unknown_ids_are_history_lost(
        &b,
        "w",
        &strings(497..500),
        &["garbage", "99999999999999-0", "1-1", "1", "0", &beyond],
    )
    .await;
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

    let _alice_on_b = support::disconnect_reaches_the_other_process(&a, &b, alice_on_b).await;

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
    // A hub that does not create topics on demand knows which exist (a registry in Redis).
    let strict = hub_with(&redis, "t4:", |b| b.auto_create(false)).await;
    support::a_topic_registry_without_auto_create(&strict).await;
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
                // One key per message: a retry of a publish that timed out after Redis took
                // it is stored once.
                let key = format!("s-{i}");
                loop {
                    let publish = a.publisher(&["s"]).idempotency_key(&key);
                    match publish.publish(Event::new().data(i.to_string())).await {
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
        // Nothing missing, nothing out of order, and no repeat (retries used one key).
        assert_eq!(seen, (0..N).collect::<Vec<_>>(), "subscriber {s}");
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
        let mut fut = Box::pin(a.subscriber("leak").last_event_id(Some("1")).subscribe());
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
    assert!(
        a.subscriber("gone")
            .last_event_id(Some("1"))
            .subscribe()
            .await
            .is_err()
    );
    assert_eq!(a.topic_count(), 0);
    // Live only: refused as soon as the reader has seen Redis go (within the timeout).
    let mut refused = false;
    for _ in 0..100 {
        if a.subscribe("gone").await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "a subscription while Redis is down is refused");
    assert_eq!(a.topic_count(), 0);
}

#[tokio::test]
async fn resuming_further_back_than_the_window_is_history_lost_not_an_error() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    // Two processes with different cache windows (a rolling deploy): B's is smaller. The
    // stream keeps about 100.
    let stream = |b: RedisBackend| b.max_events(100);
    let a = on_backend(&redis, "r3:", stream, |b| b.history_events(1000)).await;
    let b = on_backend(&redis, "r3:", stream, |b| b.history_events(10)).await;
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

// Hub v2: one stream for the hub, many topics on one subscription, and no silent gap.

/// Several topics and a pattern on one stream, across processes, with private events: one
/// cursor resumes the whole subscription on the other process.
#[tokio::test]
async fn many_topics_patterns_and_private_events_on_one_stream_across_processes() {
    use tower_sse::hub::{Pattern, PrivateEvent};

    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let a = hub(&redis, "m1:").await;
    let b = hub(&redis, "m1:").await;
    fn follow(hub: &Hub) -> tower_sse::hub::SubscribeBuilder<'_> {
        hub.subscriber("dm/alice")
            .pattern(Pattern::glob("rooms/*").unwrap())
            .private_access(|event: &PrivateEvent<'_>| event.topics().any(|t| t == "dm/alice"))
    }
    let mut on_b = follow(&b).subscribe().await.unwrap();
    let first = a.publish("rooms/1", Event::new().data("r1")).await.unwrap();
    a.publish("elsewhere", Event::new().data("not followed"))
        .await
        .unwrap();
    a.publisher(&["dm/alice"])
        .private()
        .publish(Event::new().data("secret for alice"))
        .await
        .unwrap();
    a.publisher(&["rooms/2"])
        .private()
        .publish(Event::new().data("secret for rooms/2"))
        .await
        .unwrap();
    a.publish_many(&["rooms/2", "dm/alice"], Event::new().data("both"))
        .await
        .unwrap();
    let last = a.publish("rooms/9", Event::new().data("r9")).await.unwrap();
    let want = ["r1", "secret for alice", "both", "r9"];
    assert_eq!(take(&mut on_b, 4).await, want);
    // An anonymous follower of the pattern sees neither private event.
    let mut anonymous = a
        .subscription()
        .pattern(Pattern::glob("rooms/*").unwrap())
        .last_event_id(Some("garbage"))
        .on_unknown_id(UnknownId::SendHistory)
        .subscribe()
        .await
        .unwrap();
    assert_eq!(take(&mut anonymous, 3).await, ["r1", "both", "r9"]);
    // Resume on A, from the first id: one cursor, the whole set, in order, once.
    let mut resumed = follow(&a)
        .last_event_id(first.id())
        .subscribe()
        .await
        .unwrap();
    assert_eq!(resumed.replay(), Replay::Complete);
    assert_eq!(take(&mut resumed, 3).await, &want[1..]);
    // From the last one: nothing to replay, then live.
    let mut caught_up = follow(&b)
        .last_event_id(last.id())
        .subscribe()
        .await
        .unwrap();
    assert_eq!(caught_up.replay(), Replay::Complete);
    assert_eq!(caught_up.backlog_len(), 0);
    a.publish("dm/alice", Event::new().data("live"))
        .await
        .unwrap();
    assert_eq!(take(&mut caught_up, 1).await, ["live"]);
}

/// Fault 1 of the hub v2 issue: entries trimmed before this process read them (it stalled
/// while another published past the stream's bound) are never skipped silently. Made here
/// exactly as a stalled reader finds it: two entries appended and the first trimmed in one
/// atomic step, before any reader sees either.
#[tokio::test]
async fn entries_trimmed_before_this_process_read_them_are_a_signalled_gap() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let a = hub(&redis, "g1:").await;
    let mut sub = a.subscriber("t").topic("u").subscribe().await.unwrap();
    let seen = a.publish("t", Event::new().data("seen")).await.unwrap();
    assert_eq!(take(&mut sub, 1).await, ["seen"]);
    let n: u64 = seen.id().unwrap().parse().unwrap();
    let script = "\
        redis.call('XADD', KEYS[1], ARGV[1], 'e', 'T1:t\\ndata: trimmed\\n') \
        redis.call('XADD', KEYS[1], ARGV[2], 'e', 'T1:u\\ndata: kept\\n') \
        redis.call('HSET', KEYS[2], 'n', ARGV[3]) \
        redis.call('XTRIM', KEYS[1], 'MINID', ARGV[2]) return 1";
    let (one, two) = (n + 1, n + 2);
    redis
        .command(&[
            "EVAL",
            script,
            "2",
            "g1:log",
            "g1:meta",
            &format!("0-{one}"),
            &format!("0-{two}"),
            &two.to_string(),
        ])
        .await;
    // The live stream ends (it would have skipped "trimmed"), and it is counted.
    assert!(timeout(WAIT, sub.next()).await.unwrap().is_none());
    assert_eq!(a.stats().gaps, 1);
    // The client comes back with its last id and is told: history-lost, with what is left.
    let back = a
        .subscriber("t")
        .topic("u")
        .last_event_id(seen.id())
        .subscribe()
        .await
        .unwrap();
    assert_eq!(back.replay(), Replay::HistoryLost);
    let mut back = back;
    assert_eq!(take(&mut back, 1).await, ["kept"]);
    // And the rest flows.
    a.publish("u", Event::new().data("after")).await.unwrap();
    assert_eq!(take(&mut back, 1).await, ["after"]);
}

/// Fault 2: after a stall, a burst from the reader never cuts a subscriber that reads at full
/// speed (the reader reads half a ring at a time and lets subscribers drain).
#[tokio::test]
async fn a_burst_never_cuts_a_subscriber_that_reads_at_full_speed() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    const N: usize = 2000;
    let a = hub_with(&redis, "g2:", |b| b.subscriber_capacity(16)).await;
    let b = hub(&redis, "g2:").await;
    let mut subs: Vec<_> = Vec::new();
    for _ in 0..3 {
        subs.push(a.subscribe("burst").await.unwrap());
    }
    let readers: Vec<_> = subs
        .into_iter()
        .map(|mut sub| {
            tokio::spawn(async move {
                let mut got = Vec::with_capacity(N);
                while got.len() < N {
                    match timeout(WAIT, sub.next()).await {
                        Ok(Some(event)) => got.push(data(&event).parse::<usize>().unwrap()),
                        _ => break,
                    }
                }
                got
            })
        })
        .collect();
    // All at once: pipelined on one connection, they land in Redis back to back.
    let publishes = (0..N).map(|i| {
        let b = b.clone();
        async move { b.publish("burst", Event::new().data(i.to_string())).await }
    });
    for sent in futures_util::future::join_all(publishes).await {
        sent.unwrap();
    }
    for reader in readers {
        let mut got = reader.await.unwrap();
        assert_eq!(got.len(), N, "cut after {} events", got.len());
        got.sort_unstable();
        assert_eq!(got, (0..N).collect::<Vec<_>>());
    }
    assert_eq!(a.stats().slow_disconnects, 0);
}

/// Fault 3: an entry that cannot be read is a signalled gap, and everything else flows; a key
/// of the wrong type makes publishing fail (never "accepted and never delivered").
#[tokio::test]
async fn a_broken_entry_or_key_is_reported_and_the_rest_flows() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let a = hub(&redis, "g3:").await;
    let mut sub = a.subscribe("t").await.unwrap();
    let seen = a.publish("t", Event::new().data("1")).await.unwrap();
    assert_eq!(take(&mut sub, 1).await, ["1"]);
    let n: u64 = seen.id().unwrap().parse().unwrap();
    redis
        .command(&["XADD", "g3:log", &format!("0-{}", n + 1), "e", "garbage"])
        .await;
    redis
        .command(&["HSET", "g3:meta", "n", &(n + 1).to_string()])
        .await;
    // Someone else's entry (not the hub's id format) after it: skipped.
    a.publish("t", Event::new().data("2")).await.unwrap();
    assert!(timeout(WAIT, sub.next()).await.unwrap().is_none());
    assert_eq!(a.stats().gaps, 1);
    let mut again = a.subscribe("t").await.unwrap();
    a.publish("t", Event::new().data("3")).await.unwrap();
    assert_eq!(take(&mut again, 1).await, ["3"]);

    // The stream key holding something else: publishing fails, and says so.
    redis.command(&["SET", "g4:log", "not a stream"]).await;
    let broken = hub(&redis, "g4:").await;
    assert_eq!(
        broken
            .publish("t", Event::new().data("x"))
            .await
            .unwrap_err(),
        PublishError::Unavailable
    );
    assert!(
        redis
            .command(&["GET", "g4:log"])
            .await
            .contains("not a stream")
    );
}

/// Fault 4: nothing depends on `CLIENT` (renamed or denied on many managed Redis services).
#[tokio::test]
async fn works_where_the_client_command_is_denied() {
    let Some(redis) = RedisServer::start_with(&["--rename-command", "CLIENT", ""]).await else {
        return;
    };
    assert!(redis.command(&["CLIENT", "ID"]).await.starts_with('-'));
    let a = hub(&redis, "g5:").await;
    let b = hub(&redis, "g5:").await;
    let mut subs = Vec::new();
    for i in 0..5 {
        // A new topic each time: the reader follows it without being interrupted.
        subs.push(b.subscribe(&format!("t{i}")).await.unwrap());
        a.publish(&format!("t{i}"), Event::new().data(i.to_string()))
            .await
            .unwrap();
    }
    for (i, sub) in subs.iter_mut().enumerate() {
        assert_eq!(take(sub, 1).await, [i.to_string()]);
    }
}

/// Fault 5: the stream is bounded in bytes too (within 1/16), and replays from a process's
/// cache share the bytes, not copies per subscriber.
#[tokio::test]
async fn the_stream_is_bounded_in_bytes_and_replays_share_memory() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    const MAX: usize = 8 * 1024;
    let a = on_backend(
        &redis,
        "g6:",
        |b| b.max_bytes(MAX),
        |b| b.subscriber_capacity(1024),
    )
    .await;
    let mut cached = a.subscribe("big").await.unwrap();
    let first = a
        .publish("big", Event::new().data("x".repeat(100)))
        .await
        .unwrap();
    for _ in 0..299 {
        a.publish("big", Event::new().data("x".repeat(100)))
            .await
            .unwrap();
    }
    let entries = redis.command(&["XRANGE", "g6:log", "-", "+"]).await;
    let stored = entries.matches("T3:big").count() * "T3:big\ndata: \n".len() + 100;
    let kept = xlen(&redis, "g6:").await;
    assert!(
        kept * 115 <= MAX + MAX / 16 + 115,
        "{kept} entries kept ({stored})"
    );
    assert!(kept > 50, "{kept}");
    // This process's cache still has it (it follows the topic); another's does not.
    let b = on_backend(&redis, "g6:", |b| b.max_bytes(MAX), |b| b).await;
    let lost = b
        .subscriber("big")
        .last_event_id(first.id())
        .on_unknown_id(UnknownId::LiveOnly)
        .subscribe()
        .await
        .unwrap();
    assert_eq!(lost.replay(), Replay::HistoryLost);
    // Two resumes from the local cache hand out the same bytes.
    let mut live = Vec::new();
    for _ in 0..10 {
        live.push(next(&mut cached).await);
    }
    let from = live[0].id();
    let mut one = a
        .subscriber("big")
        .last_event_id(from)
        .subscribe()
        .await
        .unwrap();
    let mut two = a
        .subscriber("big")
        .last_event_id(from)
        .subscribe()
        .await
        .unwrap();
    let (x, y) = (next(&mut one).await, next(&mut two).await);
    assert_eq!(x.id(), live[1].id());
    assert_eq!(x.as_bytes().as_ptr(), y.as_bytes().as_ptr());
    assert_eq!(x.as_bytes().as_ptr(), live[1].as_bytes().as_ptr());
}

/// Fault 6: a publish whose answer was lost (a timeout after Redis stored it) is retried with
/// the same idempotency key and stored once.
#[tokio::test]
async fn a_retried_publish_with_the_same_key_is_stored_once() {
    let Some(redis) = RedisServer::start_with(&["--enable-debug-command", "yes"]).await else {
        return;
    };
    let a = hub(&redis, "g7:").await;
    let mut sub = a.subscribe("t").await.unwrap();
    let sent = a
        .publisher(&["t"])
        .idempotency_key("k1")
        .publish(Event::new().data("once"))
        .await
        .unwrap();
    let again = a
        .publisher(&["t"])
        .idempotency_key("k1")
        .publish(Event::new().data("once"))
        .await
        .unwrap();
    assert_eq!(sent.id(), again.id());
    assert_eq!(xlen(&redis, "g7:").await, 1);

    // Redis busy past the timeout (500 ms): the answer is lost, the entry is stored.
    let sleeper = tokio::spawn({
        let port = redis.port();
        async move {
            let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap();
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            conn.write_all(b"*3\r\n$5\r\nDEBUG\r\n$5\r\nSLEEP\r\n$3\r\n0.8\r\n")
                .await
                .unwrap();
            let mut buf = [0; 5];
            conn.read_exact(&mut buf).await.unwrap();
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let lost = a
        .publisher(&["t"])
        .idempotency_key("k2")
        .publish(Event::new().data("twice?"))
        .await;
    assert_eq!(lost.unwrap_err(), PublishError::Unavailable);
    sleeper.await.unwrap();
    let retried = a
        .publisher(&["t"])
        .idempotency_key("k2")
        .publish(Event::new().data("twice?"))
        .await
        .unwrap();
    assert_eq!(xlen(&redis, "g7:").await, 2);
    assert_eq!(take(&mut sub, 2).await, ["once", "twice?"]);
    let next_one = a.publish("t", Event::new().data("after")).await.unwrap();
    assert_eq!(take(&mut sub, 1).await, ["after"]);
    assert!(
        next_one.id().unwrap().parse::<u64>().unwrap()
            > retried.id().unwrap().parse::<u64>().unwrap()
    );
}

/// Several publishers into overlapping topics on two processes; subscribers of different sets
/// of topics and patterns drop their stream at random and resume on either process with their
/// last id. Each must end with exactly the events of its topics, in hub order, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_multi_topic_subscribers_on_two_processes_get_every_event_once_in_order() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    // Small caches: resumes take the cache path and the stream path both.
    let hubs = [
        hub_with(&redis, "c1:", |b| {
            b.history_events(20).subscriber_capacity(64)
        })
        .await,
        hub_with(&redis, "c1:", |b| {
            b.history_events(20).subscriber_capacity(64)
        })
        .await,
    ];
    support::stress::resuming_multi_topic_subscribers(hubs).await;
}

/// A publish that answers an error stored nothing: the script refuses before it writes, even
/// when a key it only touches after the append (the trim marks) holds something else, and
/// when the idempotency window is longer than Redis can expire a key after.
#[tokio::test]
async fn a_publish_that_fails_stored_nothing() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let a = hub(&redis, "r1:").await;
    let mut sub = a.subscribe("t").await.unwrap();
    a.publish("t", Event::new().data("1")).await.unwrap();
    redis.command(&["DEL", "r1:marks"]).await;
    redis.command(&["SET", "r1:marks", "not a list"]).await;
    assert_eq!(
        a.publish("t", Event::new().data("refused"))
            .await
            .unwrap_err(),
        PublishError::Unavailable
    );
    assert_eq!(
        xlen(&redis, "r1:").await,
        1,
        "an error answered, an entry stored"
    );
    redis.command(&["DEL", "r1:marks"]).await;
    a.publish("t", Event::new().data("2")).await.unwrap();
    assert_eq!(take(&mut sub, 2).await, ["1", "2"]);

    // "Remember keys forever": clamped to what Redis accepts, never an error after the append.
    let b = on_backend(
        &redis,
        "r2:",
        |b| b.idempotency_window(Duration::MAX),
        |b| b,
    )
    .await;
    let mut sub = b.subscribe("t").await.unwrap();
    let first = b
        .publisher(&["t"])
        .idempotency_key("k")
        .publish(Event::new().data("once"))
        .await;
    let again = b
        .publisher(&["t"])
        .idempotency_key("k")
        .publish(Event::new().data("once"))
        .await;
    assert_eq!(xlen(&redis, "r2:").await, 1);
    assert_eq!(first.unwrap().id(), again.unwrap().id());
    assert_eq!(take(&mut sub, 1).await, ["once"]);
}

/// A Redis restart that lost entries it had acknowledged (RDB, or AOF `everysec`): the counter
/// comes back lower and ids are issued again. A live stream that saw the lost entries must not
/// skip the new ones silently.
#[tokio::test]
async fn a_restart_that_lost_acknowledged_entries_is_never_a_silent_gap() {
    // Publishing again before this process's reader is back (ids issued again that it has
    // read), and after it.
    for reader_first in [false, true] {
        restart_that_lost_entries(reader_first).await;
    }
}

async fn restart_that_lost_entries(reader_first: bool) {
    let Some(mut redis) = RedisServer::start_with(&["--appendonly", "no"]).await else {
        return;
    };
    let a = hub(&redis, "r3:").await;
    let mut sub = a.subscribe("t").await.unwrap();
    a.publish("t", Event::new().data("1")).await.unwrap();
    assert!(redis.command(&["SAVE"]).await.starts_with("+OK"));
    a.publish("t", Event::new().data("2")).await.unwrap();
    let three = a.publish("t", Event::new().data("3")).await.unwrap();
    assert_eq!(take(&mut sub, 3).await, ["1", "2", "3"]);
    // Back as of the save: "2" and "3" are gone, and the counter went back with them.
    if !reader_first {
        // Down long enough for the reader's backoff to grow past a second (it sleeps at least
        // half of it): the publishes below very likely come first. Not a timing assertion.
        redis.kill().await;
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    redis.restart().await;
    if reader_first {
        // Not a timing assertion: only lets the reader's reconnection come first.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    while a.publish("t", Event::new().data("4")).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "redis is back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.publish("t", Event::new().data("5")).await.unwrap();
    a.publish("t", Event::new().data("6")).await.unwrap();
    // "4" next, or the stream ends (a signalled gap): never "5" or "6" right after "3".
    match timeout(WAIT, sub.next()).await.expect("not stuck") {
        None => assert!(a.stats().gaps >= 1),
        Some(event) => assert_eq!(data(&event), "4"),
    }
    // A client that saw "3" resumes: "4" first, or told history-lost.
    let mut back = a
        .subscriber("t")
        .last_event_id(three.id())
        .subscribe()
        .await
        .unwrap();
    if back.replay() != Replay::HistoryLost {
        assert_eq!(take(&mut back, 1).await, ["4"]);
    }
}

/// A resume from this process's caches over two followed topics: an event published into both
/// (one entry) is replayed once.
#[tokio::test]
async fn a_resume_from_the_cache_of_two_topics_replays_a_shared_event_once() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let a = hub(&redis, "r4:").await;
    // Keeps both topics (and their caches) on this process.
    let mut follower = a.subscriber("x").topic("y").subscribe().await.unwrap();
    let from = a.publish("x", Event::new().data("before")).await.unwrap();
    a.publish_many(&["x", "y"], Event::new().data("both"))
        .await
        .unwrap();
    a.publish("y", Event::new().data("after")).await.unwrap();
    assert_eq!(take(&mut follower, 3).await, ["before", "both", "after"]);
    let mut back = a
        .subscriber("x")
        .topic("y")
        .last_event_id(from.id())
        .subscribe()
        .await
        .unwrap();
    assert_eq!(back.replay(), Replay::Complete);
    a.publish("x", Event::new().data("live")).await.unwrap();
    assert_eq!(take(&mut back, 3).await, ["both", "after", "live"]);
}

/// A client further back than one replay reads (more than 100,000 entries, on a stream bounded
/// higher) is told `history-lost` and goes on live; it is not refused with `Unavailable` on
/// every retry, forever.
#[tokio::test]
async fn resuming_further_back_than_a_replay_reads_is_history_lost_not_unavailable() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let first = on_backend(&redis, "r6:", |b| b.max_events(1_000_000), |b| b).await;
    let from = first
        .publish("quiet", Event::new().data("from"))
        .await
        .unwrap();
    let n: u64 = from.id().unwrap().parse().unwrap();
    // 101,500 entries of another topic after it, as a publisher would have appended them.
    let script = "\
        local n = tonumber(ARGV[1]) \
        for i = 1, 101500 do \
          redis.call('XADD', KEYS[1], '0-' .. string.format('%d', n + i), 'e', 'T4:busy\\ndata: x\\n') \
        end \
        redis.call('HSET', KEYS[2], 'n', string.format('%d', n + 101500)) return 1";
    redis
        .command(&["EVAL", script, "2", "r6:log", "r6:meta", &n.to_string()])
        .await;
    // A process started after them (its cache starts after them; its reader has nothing to
    // catch up on).
    let a = on_backend(&redis, "r6:", |b| b.max_events(1_000_000), |b| b).await;
    drop(a.subscribe("mark").await.unwrap());
    for on_unknown_id in [UnknownId::SendHistory, UnknownId::LiveOnly] {
        let mut back = a
            .subscriber("quiet")
            .last_event_id(from.id())
            .on_unknown_id(on_unknown_id)
            .subscribe()
            .await
            .expect("history-lost, not an error");
        assert_eq!(back.replay(), Replay::HistoryLost);
        a.publish("quiet", Event::new().data("live")).await.unwrap();
        assert_eq!(take(&mut back, 1).await, ["live"]);
    }
}

/// A resume across the close of one of its topics: the closed topic's events before the close
/// went with it (`history-lost`), the other topics' events are replayed, as in memory.
#[tokio::test]
async fn a_resume_across_a_closed_topic_keeps_the_other_topics_events() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let memory = Hub::new();
    let a = hub(&redis, "r7:").await;
    for hub in [&memory, &a] {
        let b0 = hub.publish("b", Event::new().data("b0")).await.unwrap();
        hub.publish("a", Event::new().data("a1")).await.unwrap();
        hub.publish("b", Event::new().data("b-mid")).await.unwrap();
        hub.close_topic("a", Some(Event::new().data("a closed")))
            .await
            .unwrap();
        hub.publish("a", Event::new().data("a2")).await.unwrap();
        hub.publish("b", Event::new().data("b1")).await.unwrap();
        let mut back = hub
            .subscriber("a")
            .topic("b")
            .last_event_id(b0.id())
            .subscribe()
            .await
            .unwrap();
        assert_eq!(back.replay(), Replay::HistoryLost);
        assert_eq!(take(&mut back, 3).await, ["b-mid", "a2", "b1"], "{hub:?}");
    }
}

/// The byte bound holds on a hub that has appended more than 10^14 bytes in its life (a
/// count Lua wrote as `1e+14` in the trim marks, which then never matched: no more trimming
/// by bytes or age).
#[tokio::test]
async fn the_byte_bound_holds_after_100_tb_appended() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    const MAX: usize = 8 * 1024;
    redis
        .command(&["HSET", "r8:meta", "bytes", "99999999999000"])
        .await;
    let a = on_backend(&redis, "r8:", |b| b.max_bytes(MAX), |b| b).await;
    for _ in 0..300 {
        a.publish("big", Event::new().data("x".repeat(100)))
            .await
            .unwrap();
    }
    let kept = xlen(&redis, "r8:").await;
    assert!(kept * 115 <= MAX + MAX / 16 + 115, "{kept} entries kept");
}

/// A client resumes, on a process whose reader is still catching up on a burst, from an id
/// another process just issued: nothing is lost (the reader will deliver what follows), so
/// the replay is complete; it is neither refused nor `history-lost`.
#[tokio::test]
async fn a_resume_from_an_id_this_reader_has_not_reached_is_complete() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    // Rings of 2: this reader reads one entry per `XREAD`.
    let a = on_backend(
        &redis,
        "r9:",
        |b| b.max_events(1_000_000),
        |b| b.subscriber_capacity(2),
    )
    .await;
    let b = on_backend(&redis, "r9:", |b| b.max_events(1_000_000), |b| b).await;
    // This process's reader is running (a subscription waits for it).
    let mut seen_here = a.subscribe("t").await.unwrap();
    let seen = a.publish("t", Event::new().data("seen")).await.unwrap();
    assert_eq!(take(&mut seen_here, 1).await, ["seen"]);
    drop(seen_here);
    let n: u64 = seen.id().unwrap().parse().unwrap();
    // A burst another process appended: this reader takes a while to read it.
    let script = "\
        local n = tonumber(ARGV[1]) \
        for i = 1, 5000 do \
          redis.call('XADD', KEYS[1], '0-' .. string.format('%d', n + i), 'e', 'T4:busy\\ndata: x\\n') \
        end \
        redis.call('HSET', KEYS[2], 'n', string.format('%d', n + 5000)) return 1";
    redis
        .command(&["EVAL", script, "2", "r9:log", "r9:meta", &n.to_string()])
        .await;
    let last = b.publish("t", Event::new().data("last")).await.unwrap();
    let mut back = a
        .subscriber("t")
        .last_event_id(last.id())
        .subscribe()
        .await
        .expect("a resume, not an error");
    assert_eq!(back.replay(), Replay::Complete);
    b.publish("t", Event::new().data("next")).await.unwrap();
    assert_eq!(take(&mut back, 1).await, ["next"]);
}

/// A resume across the close (without a final event) of a followed topic that had no event
/// since the client's id: nothing was lost, so the replay is complete, as in memory.
#[tokio::test]
async fn a_resume_across_the_close_of_a_quiet_topic_is_complete() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let memory = Hub::new();
    let a = hub(&redis, "r10:").await;
    for hub in [&memory, &a] {
        hub.publish("a", Event::new().data("a0")).await.unwrap();
        let b0 = hub.publish("b", Event::new().data("b0")).await.unwrap();
        hub.close_topic("a", None).await.unwrap();
        hub.publish("b", Event::new().data("b1")).await.unwrap();
        let mut back = hub
            .subscriber("a")
            .topic("b")
            .last_event_id(b0.id())
            .subscribe()
            .await
            .unwrap();
        assert_eq!(back.replay(), Replay::Complete, "{hub:?}");
        assert_eq!(take(&mut back, 1).await, ["b1"]);
    }
}

/// Fault 5, replays from the stream: two clients resuming from the same id on a process whose
/// cache does not cover it share the replayed bytes rather than each holding a copy.
#[tokio::test]
async fn replays_from_the_stream_share_memory_across_subscribers() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let a = hub(&redis, "r11:").await;
    let from = a.publish("t", Event::new().data("from")).await.unwrap();
    a.publish("t", Event::new().data("x".repeat(1000)))
        .await
        .unwrap();
    // Another process, whose cache has nothing.
    let b = hub(&redis, "r11:").await;
    let mut one = b
        .subscriber("t")
        .last_event_id(from.id())
        .subscribe()
        .await
        .unwrap();
    let mut two = b
        .subscriber("t")
        .last_event_id(from.id())
        .subscribe()
        .await
        .unwrap();
    let (x, y) = (next(&mut one).await, next(&mut two).await);
    assert_eq!(x.as_bytes(), y.as_bytes());
    assert_eq!(x.as_bytes().as_ptr(), y.as_bytes().as_ptr(), "a copy each");
}

#[tokio::test]
async fn publisher_ids_resume_on_the_other_process() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let a = hub(&redis, "pid:").await;
    let b = hub(&redis, "pid:").await;
    support::publisher_ids_resume_on_the_other_process(&a, &b).await;
}

#[tokio::test]
async fn the_id_index_never_outgrows_the_stream() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let a = on_backend(&redis, "ix:", |r| r.max_events(20), |b| b).await;
    for i in 0..500 {
        a.publish("t", Event::new().id(format!("e{i}")).data("x"))
            .await
            .unwrap();
    }
    let indexed: usize = redis.command(&["ZCARD", "ix:ids"]).await[1..]
        .trim()
        .parse()
        .unwrap();
    let kept = xlen(&redis, "ix:").await;
    assert!(indexed <= kept, "{indexed} ids indexed, {kept} events kept");
    assert!(kept < 500, "the stream was trimmed ({kept})");
    // The newest resumes; an id trimmed with its event is `history-lost`.
    let sub = a
        .subscriber("t")
        .last_event_id(Some("e498"))
        .subscribe()
        .await
        .unwrap();
    assert_eq!(sub.replay(), Replay::Complete);
    assert_eq!(sub.backlog_len(), 1);
    let sub = a
        .subscriber("t")
        .last_event_id(Some("e0"))
        .on_unknown_id(UnknownId::LiveOnly)
        .subscribe()
        .await
        .unwrap();
    assert_eq!(sub.replay(), Replay::HistoryLost);
}

#[tokio::test]
async fn presence_spans_processes_and_expires_the_silent() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let interval = |b: tower_sse::hub::HubBuilder| b.presence_interval(Duration::from_millis(250));
    let a = hub_with(&redis, "pr:", interval).await;
    let b = hub_with(&redis, "pr:", interval).await;
    let c = hub_with(&redis, "pr:", interval).await;
    let redis = &redis;
    support::presence_spans_processes_and_expires_the_silent(&a, &b, &c, |raw| async move {
        let raw = String::from_utf8(raw).unwrap();
        redis.command(&["PUBLISH", "pr:!send", &raw]).await;
    })
    .await;
}

/// While Redis is down a process's joins and leaves cannot travel (more than its queue holds
/// are dropped); once Redis is back, the other process learns the whole state anyway (the
/// heartbeat's change count shows what it missed; a snapshot repairs it).
#[tokio::test]
async fn presence_is_repaired_after_redis_was_down() {
    let Some(mut redis) = RedisServer::start().await else {
        return;
    };
    let interval = |b: tower_sse::hub::HubBuilder| b.presence_interval(Duration::from_millis(250));
    let a = hub_with(&redis, "pd:", interval).await;
    let b = hub_with(&redis, "pd:", interval).await;
    let (pa, pb) = (a.presence(), b.presence());
    let _early = pa.join("room", "early", "").unwrap();
    let count = |p: &tower_sse::hub::Presence, n: usize| {
        let seen = p.members("room").len();
        (seen == n).then_some(()).ok_or(format!("{seen} members"))
    };
    support::eventually("b sees a's member", async || count(&pb, 1)).await;
    redis.kill().await;
    // 3,000 changes while Redis is down: more than the queue holds.
    let mut kept = Vec::new();
    for i in 0..3000 {
        let member = pa.join("room", format!("u{i}"), "").unwrap();
        if i % 2 == 0 {
            kept.push(member);
        }
    }
    redis.restart().await;
    let want = 1 + kept.len();
    support::eventually("b learnt a's state after Redis came back", async || {
        count(&pa, want).and(count(&pb, want))
    })
    .await;
    drop(kept);
    support::eventually("and the leaves too", async || count(&pb, 1)).await;
}
