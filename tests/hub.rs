//! Integration tests for `tower_sse::hub`.

mod support;

use std::{collections::HashSet, time::Duration};

use futures_util::{FutureExt, StreamExt};
use tower_sse::{
    EncodedEvent, Event,
    hub::{Hub, PublishError, SubscribeError, SubscribeRequest, Subscription},
    replay::{Replay, UnknownId},
};

use support::data;

/// The next event, which must be ready now.
fn ready(sub: &mut Subscription) -> Option<EncodedEvent> {
    sub.next()
        .now_or_never()
        .expect("an event (or the end) should be ready")
}

fn pending(sub: &mut Subscription) -> bool {
    sub.next().now_or_never().is_none()
}

/// The whole retained history of `topic`, by subscribing with an id no hub issues.
async fn history(hub: &Hub, topic: &str) -> Vec<String> {
    let mut sub = hub
        .subscriber(topic)
        .last_event_id(Some("\u{1}not-an-id"))
        .on_unknown_id(UnknownId::SendHistory)
        .subscribe()
        .await
        .unwrap();
    assert_eq!(sub.replay(), Replay::HistoryLost);
    (0..sub.backlog_len())
        .map(|_| data(&ready(&mut sub).unwrap()))
        .collect()
}

/// A small deterministic generator, so failures can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[tokio::test]
async fn every_subscriber_shares_the_bytes_encoded_once() {
    let hub = Hub::new();
    let mut subs = Vec::new();
    for i in 0..5 {
        subs.push(
            hub.subscriber("t")
                .client_id(if i % 2 == 0 { "even" } else { "odd" })
                .subscribe()
                .await
                .unwrap(),
        );
    }
    let mut other = hub.subscribe("u").await.unwrap();

    let published = hub
        .publish("t", Event::new().data("x".repeat(100)))
        .await
        .unwrap();
    let ptr = published.as_bytes().as_ptr();
    for sub in &mut subs {
        let got = sub.next().await.unwrap();
        assert_eq!(got.as_bytes().as_ptr(), ptr);
        assert_eq!(got.id(), published.id());
    }
    // The history holds the same bytes too.
    let mut replay = hub
        .subscriber("t")
        .last_event_id(Some("nope"))
        .subscribe()
        .await
        .unwrap();
    assert_eq!(replay.next().await.unwrap().as_bytes().as_ptr(), ptr);

    // Broadcast: one encoding for every topic.
    assert_eq!(hub.broadcast(Event::new().data("all")).await.unwrap(), 2);
    let first = other.next().await.unwrap();
    for sub in &mut subs {
        assert_eq!(
            sub.next().await.unwrap().as_bytes().as_ptr(),
            first.as_bytes().as_ptr()
        );
    }

    // send_to: one encoding for every connection of the client.
    assert_eq!(
        hub.send_to("even", Event::new().data("psst"))
            .await
            .unwrap(),
        3
    );
    let mut ptrs = HashSet::new();
    for sub in subs.iter_mut().step_by(2) {
        let got = sub.next().await.unwrap();
        assert_eq!(data(&got), "psst");
        ptrs.insert(got.as_bytes().as_ptr());
    }
    assert_eq!(ptrs.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replay_is_exactly_once_and_in_order_under_concurrent_publishers() {
    const PUBLISHERS: usize = 4;
    const PER_PUBLISHER: usize = 500;
    const SUBSCRIBERS: u64 = 16;

    let hub = Hub::builder()
        .history_events(10_000)
        .history_bytes(usize::MAX)
        // Small, so that slow-subscriber disconnects (and their replays) happen too.
        .subscriber_capacity(32)
        .build();
    let start = hub.publish("t", Event::new().data("start")).await.unwrap();
    let start_id = start.id().unwrap().to_owned();

    let subscribers: Vec<_> = (0..SUBSCRIBERS)
        .map(|n| {
            let hub = hub.clone();
            let mut last = start_id.clone();
            tokio::spawn(async move {
                let mut rng = Rng(n * 7919 + 17);
                let mut seen = Vec::new();
                let mut connections = 0;
                'connect: loop {
                    connections += 1;
                    let mut sub = hub
                        .subscriber("t")
                        .last_event_id(Some(&last))
                        .subscribe()
                        .await
                        .unwrap();
                    assert_eq!(sub.replay(), Replay::Complete);
                    // Drop the connection after a random number of events.
                    let mut budget = rng.below(300) + 1;
                    while let Some(event) = sub.next().await {
                        last = event.id().unwrap().to_owned();
                        let data = data(&event);
                        if data == "end" {
                            break 'connect;
                        }
                        seen.push(data);
                        budget -= 1;
                        if budget == 0 {
                            break;
                        }
                        if rng.below(16) == 0 {
                            tokio::task::yield_now().await;
                        }
                    }
                }
                (seen, connections)
            })
        })
        .collect();

    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            let hub = hub.clone();
            tokio::spawn(async move {
                for i in 0..PER_PUBLISHER {
                    hub.publish("t", Event::new().data(format!("{p}-{i}")))
                        .await
                        .unwrap();
                    if i % 8 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    for publisher in publishers {
        publisher.await.unwrap();
    }
    hub.publish("t", Event::new().data("end")).await.unwrap();

    // The order the hub published in, read back from the history.
    let mut reference = hub
        .subscriber("t")
        .last_event_id(Some(&start_id))
        .subscribe()
        .await
        .unwrap();
    let mut canonical: Vec<String> = (0..reference.backlog_len())
        .map(|_| data(&ready(&mut reference).unwrap()))
        .collect();
    assert_eq!(canonical.pop().as_deref(), Some("end"));
    assert_eq!(canonical.len(), PUBLISHERS * PER_PUBLISHER);
    assert_eq!(
        canonical.iter().collect::<HashSet<_>>().len(),
        canonical.len()
    );
    for p in 0..PUBLISHERS {
        let mine: Vec<usize> = canonical
            .iter()
            .filter_map(|d| d.strip_prefix(&format!("{p}-")))
            .map(|i| i.parse().unwrap())
            .collect();
        assert_eq!(mine, (0..PER_PUBLISHER).collect::<Vec<_>>());
    }

    let mut total_connections = 0;
    for subscriber in subscribers {
        let (seen, connections) = subscriber.await.unwrap();
        total_connections += connections;
        assert_eq!(seen.len(), canonical.len(), "missing or duplicate events");
        assert!(seen == canonical, "events out of order");
    }
    assert!(total_connections > SUBSCRIBERS);
    drop(reference);
    assert_eq!(hub.total_subscribers(), 0);
}

#[tokio::test]
async fn publisher_ids_are_kept_and_resumed_by_exact_match() {
    let hub = Hub::new();
    for id in ["a", "b", "c"] {
        let event = hub
            .publish("t", Event::new().id(id).data(id))
            .await
            .unwrap();
        assert_eq!(event.id(), Some(id));
    }
    let mut sub = hub
        .subscriber("t")
        .last_event_id(Some("a"))
        .subscribe()
        .await
        .unwrap();
    assert_eq!(sub.replay(), Replay::Complete);
    assert_eq!(data(&ready(&mut sub).unwrap()), "b");
    assert_eq!(data(&ready(&mut sub).unwrap()), "c");
    assert!(pending(&mut sub));
}

#[tokio::test]
async fn unknown_ids_are_reported() {
    let hub = Hub::builder().history_events(2).build();
    let evicted = hub.publish("t", Event::new().data("0")).await.unwrap();
    let mut ids = Vec::new();
    for i in 1..4 {
        ids.push(
            hub.publish("t", Event::new().data(i.to_string()))
                .await
                .unwrap(),
        );
    }
    let elsewhere = Hub::new()
        .publish("t", Event::new().data("x"))
        .await
        .unwrap();
    // Same shape as ours, other epoch; a sequence number never issued; garbage.
    let epoch = ids[0].id().unwrap().split_once('-').unwrap().0;
    let future = format!("{epoch}-{}", u64::MAX);
    let unknown = [
        evicted.id().unwrap(),
        elsewhere.id().unwrap(),
        &future,
        "garbage",
        "\u{0}\r\n",
    ];
    for id in unknown {
        let mut sub = hub
            .subscriber("t")
            .last_event_id(Some(id))
            .subscribe()
            .await
            .unwrap();
        assert_eq!(sub.replay(), Replay::HistoryLost, "{id:?}");
        // Default: the whole retained history.
        assert_eq!(data(&ready(&mut sub).unwrap()), "2");
        assert_eq!(data(&ready(&mut sub).unwrap()), "3");
        assert!(pending(&mut sub));

        let mut live = hub
            .subscriber("t")
            .last_event_id(Some(id))
            .on_unknown_id(UnknownId::LiveOnly)
            .subscribe()
            .await
            .unwrap();
        assert_eq!(live.replay(), Replay::HistoryLost);
        assert_eq!(live.backlog_len(), 0);
        assert!(pending(&mut live));
    }
    // The last evicted event is still known: everything after it is retained.
    let sub = hub
        .subscriber("t")
        .last_event_id(ids[0].id())
        .subscribe()
        .await
        .unwrap();
    assert_eq!(sub.replay(), Replay::Complete);
    assert_eq!(sub.backlog_len(), 2);
    let sub = hub
        .subscriber("t")
        .last_event_id(ids[1].id())
        .subscribe()
        .await
        .unwrap();
    assert_eq!(sub.replay(), Replay::Complete);
    assert_eq!(sub.backlog_len(), 1);
    assert_eq!(
        hub.subscribe("t").await.unwrap().replay(),
        Replay::NotRequested
    );

    // A hub configured for live-only.
    let hub = Hub::builder().on_unknown_id(UnknownId::LiveOnly).build();
    hub.publish("t", Event::new().data("old")).await.unwrap();
    let mut sub = hub
        .subscriber("t")
        .last_event_id(Some("garbage"))
        .subscribe()
        .await
        .unwrap();
    assert!(sub.replay().is_lost());
    hub.publish("t", Event::new().data("new")).await.unwrap();
    assert_eq!(data(&ready(&mut sub).unwrap()), "new");
}

#[tokio::test]
async fn history_is_bounded_by_count() {
    let hub = Hub::builder().history_events(3).build();
    for i in 0..10 {
        hub.publish("t", Event::new().data(i.to_string()))
            .await
            .unwrap();
    }
    assert_eq!(history(&hub, "t").await, ["7", "8", "9"]);

    let none = Hub::builder().history_events(0).build();
    let first = none.publish("t", Event::new().data("x")).await.unwrap();
    let last = none.publish("t", Event::new().data("y")).await.unwrap();
    // Having seen the latest event, nothing was lost; having seen an earlier one, something was.
    let sub = none
        .subscriber("t")
        .last_event_id(last.id())
        .subscribe()
        .await
        .unwrap();
    assert_eq!(sub.replay(), Replay::Complete);
    drop(sub);
    let sub = none
        .subscriber("t")
        .last_event_id(first.id())
        .subscribe()
        .await
        .unwrap();
    assert_eq!(sub.replay(), Replay::HistoryLost);
    assert!(history(&none, "t").await.is_empty());
    drop(sub);
    // With no subscriber and no history the topic is removed. The hub remembers how far
    // removed topics went: a client that had the newest event lost nothing, one that had an
    // older one is told it lost history, never misread.
    assert_eq!(none.topic_count(), 0);
    let sub = none
        .subscriber("t")
        .last_event_id(last.id())
        .subscribe()
        .await
        .unwrap();
    assert_eq!(sub.replay(), Replay::Complete);
    drop(sub);
    let sub = none
        .subscriber("t")
        .last_event_id(first.id())
        .subscribe()
        .await
        .unwrap();
    assert_eq!(sub.replay(), Replay::HistoryLost);
}

#[tokio::test]
async fn history_is_bounded_by_bytes() {
    let one = Event::new().id("x").data("0123456789").encode().len();
    let hub = Hub::builder().history_bytes(2 * one).build();
    for id in ["a", "b", "c", "d"] {
        hub.publish("t", Event::new().id(id).data("0123456789"))
            .await
            .unwrap();
    }
    assert_eq!(history(&hub, "t").await.len(), 2);
    let sub = hub
        .subscriber("t")
        .last_event_id(Some("b"))
        .subscribe()
        .await
        .unwrap();
    assert_eq!(sub.replay(), Replay::HistoryLost);
    let sub = hub
        .subscriber("t")
        .last_event_id(Some("c"))
        .subscribe()
        .await
        .unwrap();
    assert_eq!(sub.replay(), Replay::Complete);

    // Too big to keep: delivered live, never retained.
    let mut live = hub.subscribe("t").await.unwrap();
    hub.publish("t", Event::new().data("x".repeat(3 * one)))
        .await
        .unwrap();
    assert_eq!(data(&live.next().await.unwrap()).len(), 3 * one);
    assert!(history(&hub, "t").await.is_empty());
}

#[tokio::test(start_paused = true)]
async fn history_is_bounded_by_age() {
    let hub = Hub::builder()
        .history_age(Duration::from_secs(3600))
        .build();
    // Keeps the topic alive once its history has expired.
    let _keep = hub.subscribe("t").await.unwrap();
    hub.publish("t", Event::new().data("old")).await.unwrap();
    tokio::time::advance(Duration::from_secs(1800)).await;
    let mid = hub.publish("t", Event::new().data("mid")).await.unwrap();
    assert_eq!(history(&hub, "t").await, ["old", "mid"]);
    tokio::time::advance(Duration::from_secs(1801)).await;
    assert_eq!(history(&hub, "t").await, ["mid"]);
    tokio::time::advance(Duration::from_secs(1800)).await;
    // Expired without a new publish: the next subscribe evicts it.
    assert!(history(&hub, "t").await.is_empty());
    let sub = hub
        .subscriber("t")
        .last_event_id(mid.id())
        .subscribe()
        .await
        .unwrap();
    // `mid` was the latest event: nothing after it was lost.
    assert_eq!(sub.replay(), Replay::Complete);
    drop(sub);
    // Expired history does not keep a topic alive.
    hub.publish("u", Event::new().data("x")).await.unwrap();
    assert_eq!(hub.topic_count(), 2);
    assert_eq!(hub.purge(), 0);
    tokio::time::advance(Duration::from_secs(3601)).await;
    assert_eq!(hub.purge(), 1);
    assert_eq!(hub.topics(), ["t"]);
}

#[tokio::test]
async fn slow_subscriber_is_disconnected_and_counted() {
    let hub = Hub::builder().subscriber_capacity(4).build();
    let mut fast = hub.subscribe("t").await.unwrap();
    let mut slow = hub.subscribe("t").await.unwrap();
    for i in 0..100 {
        hub.publish("t", Event::new().data(i.to_string()))
            .await
            .unwrap();
        assert_eq!(data(&fast.next().await.unwrap()), i.to_string());
    }
    // Fell behind: its stream ends.
    assert!(slow.next().await.is_none());
    assert!(slow.next().await.is_none());
    assert_eq!(hub.stats().slow_disconnects, 1);
    // Its place is released even before it is dropped.
    assert_eq!(hub.subscriber_count("t"), 1);
    assert_eq!(hub.total_subscribers(), 1);

    // The fast one carries on.
    hub.publish("t", Event::new().data("more")).await.unwrap();
    assert_eq!(data(&fast.next().await.unwrap()), "more");
    assert_eq!(hub.stats().slow_disconnects, 1);
}

#[tokio::test]
async fn slow_client_channel_is_disconnected_too() {
    let hub = Hub::builder().client_capacity(2).build();
    let mut sub = hub
        .subscriber("t")
        .client_id("c")
        .subscribe()
        .await
        .unwrap();
    for _ in 0..10 {
        assert_eq!(hub.send_to("c", Event::new().data("x")).await.unwrap(), 1);
    }
    assert!(sub.next().await.is_none());
    assert_eq!(hub.stats().slow_disconnects, 1);
    assert_eq!(hub.send_to("c", Event::new().data("x")).await.unwrap(), 0);
}

#[tokio::test]
async fn counts_return_to_zero_when_subscriptions_drop() {
    let hub = Hub::new();
    let mut subs = Vec::new();
    for i in 0..500 {
        let topic = format!("topic-{}", i % 5);
        let client = format!("client-{}", i % 50);
        subs.push(
            hub.subscriber(&topic)
                .client_id(&client)
                .subscribe()
                .await
                .unwrap(),
        );
    }
    assert_eq!(hub.total_subscribers(), 500);
    assert_eq!(hub.topic_count(), 5);
    assert_eq!(hub.subscriber_count("topic-3"), 100);
    assert_eq!(
        hub.send_to("client-7", Event::new().data("x"))
            .await
            .unwrap(),
        10
    );
    let mut topics = hub.topics();
    topics.sort();
    assert_eq!(
        topics,
        ["topic-0", "topic-1", "topic-2", "topic-3", "topic-4"]
    );

    drop(subs);
    assert_eq!(hub.total_subscribers(), 0);
    assert_eq!(hub.subscriber_count("topic-3"), 0);
    assert_eq!(
        hub.send_to("client-7", Event::new().data("x"))
            .await
            .unwrap(),
        0
    );
    // No subscribers and no history: the topics are gone.
    assert_eq!(hub.topic_count(), 0);
    assert_eq!(hub.stats().subscribers, 0);

    // Subscriptions parked in tasks that are aborted are released as well.
    hub.publish("kept", Event::new().data("history"))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let mut sub = hub.subscribe("kept").await.unwrap();
        tasks.push(tokio::spawn(async move { sub.next().await }));
    }
    assert_eq!(hub.subscriber_count("kept"), 100);
    for task in &tasks {
        task.abort();
    }
    for task in tasks {
        assert!(task.await.unwrap_err().is_cancelled());
    }
    assert_eq!(hub.subscriber_count("kept"), 0);
    assert_eq!(hub.total_subscribers(), 0);
    // A topic with history is kept for replay.
    assert_eq!(hub.topics(), ["kept"]);
}

#[tokio::test]
async fn close_topic_ends_streams_after_the_final_event() {
    let hub = Hub::new();
    let mut a = hub.subscribe("game").await.unwrap();
    let mut b = hub
        .subscriber("game")
        .client_id("c")
        .subscribe()
        .await
        .unwrap();
    hub.publish("game", Event::new().data("move"))
        .await
        .unwrap();
    assert!(
        hub.close_topic("game", Some(Event::new().event("over").data("bye")))
            .await
            .unwrap()
    );
    for sub in [&mut a, &mut b] {
        assert_eq!(data(&sub.next().await.unwrap()), "move");
        let last = sub.next().await.unwrap();
        assert!(last.as_bytes().starts_with(b"event: over\n"));
        assert!(last.id().is_some());
        assert!(sub.next().await.is_none());
    }
    assert_eq!(hub.topic_count(), 0);
    assert_eq!(hub.total_subscribers(), 0);
    assert!(!hub.close_topic("game", None).await.unwrap());

    // The name can be used again, with a fresh history.
    let mut again = hub.subscribe("game").await.unwrap();
    hub.publish("game", Event::new().data("new")).await.unwrap();
    assert_eq!(data(&again.next().await.unwrap()), "new");

    // close_all ends everything.
    let mut other = hub.subscribe("other").await.unwrap();
    assert_eq!(hub.close_all(), 2);
    assert!(again.next().await.is_none());
    assert!(other.next().await.is_none());
    assert_eq!(hub.total_subscribers(), 0);
}

#[tokio::test]
async fn send_to_reaches_only_that_client() {
    let hub = Hub::new();
    let mut alice_1 = hub
        .subscriber("x")
        .client_id("alice")
        .subscribe()
        .await
        .unwrap();
    let mut alice_2 = hub
        .subscriber("y")
        .client_id("alice")
        .subscribe()
        .await
        .unwrap();
    let mut bob = hub
        .subscriber("x")
        .client_id("bob")
        .subscribe()
        .await
        .unwrap();
    let mut anonymous = hub.subscribe("x").await.unwrap();

    assert_eq!(
        hub.send_to("alice", Event::new().data("for alice"))
            .await
            .unwrap(),
        2
    );
    assert_eq!(data(&alice_1.next().await.unwrap()), "for alice");
    assert_eq!(data(&alice_2.next().await.unwrap()), "for alice");
    assert!(pending(&mut bob));
    assert!(pending(&mut anonymous));

    // Not kept for replay.
    assert!(history(&hub, "x").await.is_empty());
    assert_eq!(
        hub.send_to("nobody", Event::new().data("?")).await.unwrap(),
        0
    );

    drop(alice_1);
    assert_eq!(
        hub.send_to("alice", Event::new().data("again"))
            .await
            .unwrap(),
        1
    );
    assert_eq!(data(&alice_2.next().await.unwrap()), "again");
}

#[tokio::test]
async fn broadcast_reaches_every_topic_and_is_replayed() {
    let hub = Hub::new();
    let before = hub.publish("a", Event::new().data("a1")).await.unwrap();
    let mut subs = Vec::new();
    for t in ["a", "b", "c"] {
        subs.push(hub.subscribe(t).await.unwrap());
    }
    assert_eq!(
        hub.broadcast(Event::new().data("everyone")).await.unwrap(),
        3
    );
    let mut ids = vec![];
    for sub in &mut subs {
        let got = sub.next().await.unwrap();
        assert_eq!(data(&got), "everyone");
        ids.push(got.id().map(str::to_owned));
    }
    // One id, the same in every topic (encoded once).
    assert!(
        ids[0].is_some() && ids.iter().all(|id| *id == ids[0]),
        "{ids:?}"
    );
    // A client of "a" that saw `before` gets the broadcast on replay.
    let mut back = hub
        .subscriber("a")
        .last_event_id(before.id())
        .subscribe()
        .await
        .unwrap();
    assert_eq!(back.replay(), Replay::Complete);
    assert_eq!(data(&ready(&mut back).unwrap()), "everyone");
    assert!(pending(&mut back));
}

#[tokio::test]
async fn authorizer_refuses_before_anything_is_delivered() {
    #[derive(Debug)]
    struct Claims {
        rooms: Vec<&'static str>,
    }
    let hub = Hub::builder()
        .authorizer(|req: &SubscribeRequest<'_>| {
            req.claims::<Claims>()
                .is_some_and(|c| c.rooms.contains(&req.topic()))
        })
        .build();
    hub.publish("secret", Event::new().data("s")).await.unwrap();
    let claims = Claims {
        rooms: vec!["lobby"],
    };

    let err = hub
        .subscriber("secret")
        .claims(&claims)
        .last_event_id(Some("garbage"))
        .subscribe()
        .await
        .unwrap_err();
    assert_eq!(err, SubscribeError::Forbidden);
    assert_eq!(err.to_string(), "subscription forbidden");
    assert_eq!(
        hub.subscribe("lobby").await.unwrap_err(),
        SubscribeError::Forbidden
    );
    assert_eq!(hub.stats().forbidden, 2);
    assert_eq!(hub.total_subscribers(), 0);
    // Refused subscriptions create no topic.
    assert_eq!(hub.topics(), ["secret"]);

    let mut ok = hub
        .subscriber("lobby")
        .claims(&claims)
        .subscribe()
        .await
        .unwrap();
    hub.publish("lobby", Event::new().data("hi")).await.unwrap();
    assert_eq!(data(&ok.next().await.unwrap()), "hi");
}

#[tokio::test]
async fn topics_must_exist_when_auto_create_is_off() {
    let hub = Hub::builder().auto_create(false).build();
    assert_eq!(
        hub.subscribe("t").await.unwrap_err(),
        SubscribeError::UnknownTopic
    );
    assert_eq!(
        hub.publish("t", Event::new().data("x")).await.unwrap_err(),
        PublishError::UnknownTopic
    );
    assert!(hub.create_topic("t").await.unwrap());
    let mut sub = hub.subscribe("t").await.unwrap();
    hub.publish("t", Event::new().data("x")).await.unwrap();
    assert_eq!(data(&sub.next().await.unwrap()), "x");
    // A topic with history is kept when its last subscriber leaves.
    drop(sub);
    assert_eq!(hub.topics(), ["t"]);
}

/// Reading events that are already in the ring spends tokio's co-operative budget, as tokio's
/// own receive does: a reader that never runs dry still lets other tasks on its thread run.
#[tokio::test(flavor = "current_thread")]
async fn a_reader_of_a_full_ring_yields_to_other_tasks() {
    use std::sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    };

    let hub = Hub::builder().subscriber_capacity(2048).build();
    let mut sub = hub.subscribe("t").await.unwrap();
    for n in 0..1000 {
        hub.publish("t", Event::new().data(n.to_string()))
            .await
            .unwrap();
    }
    let other_ran = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&other_ran);
    tokio::spawn(async move { flag.store(true, Ordering::SeqCst) });
    let mut read = 0;
    let mut ran_at = None;
    while read < 1000 {
        sub.next().await.unwrap();
        read += 1;
        if ran_at.is_none() && other_ran.load(Ordering::SeqCst) {
            ran_at = Some(read);
        }
    }
    let ran_at = ran_at.expect("the other task never ran while 1,000 ready events were read");
    assert!(ran_at < 1000, "it ran only at the end ({ran_at})");
}

/// `Hub::disconnect`: every stream of the id ends, also one parked waiting for events (it is
/// woken) and one over several topics; other clients go on; the counts return to zero; a
/// stream of the id made afterwards is a new registration, which the old streams going does
/// not count out.
#[tokio::test]
async fn disconnect_ends_every_stream_of_a_client_id() {
    let hub = Hub::new();
    let parked = {
        let mut sub = hub
            .subscriber("x")
            .client_id("alice")
            .subscribe()
            .await
            .unwrap();
        tokio::spawn(async move { sub.next().await })
    };
    let mut many = hub
        .subscription()
        .topic("x")
        .topic("y")
        .client_id("alice")
        .subscribe()
        .await
        .unwrap();
    let mut bob = hub
        .subscriber("x")
        .client_id("bob")
        .subscribe()
        .await
        .unwrap();
    tokio::task::yield_now().await;
    assert_eq!(hub.client_connections("alice"), 2);
    assert_eq!(hub.disconnect("alice").await.unwrap(), 2);
    assert!(
        tokio::time::timeout(Duration::from_secs(5), parked)
            .await
            .expect("the parked stream was woken")
            .unwrap()
            .is_none()
    );
    assert!(many.next().await.is_none());
    assert_eq!(hub.client_connections("alice"), 0);
    assert_eq!(hub.disconnect("alice").await.unwrap(), 0, "nothing left");
    // bob goes on.
    hub.publish("x", Event::new().data("for all"))
        .await
        .unwrap();
    assert_eq!(data(&bob.next().await.unwrap()), "for all");
    // A new stream of alice's, and the old one dropped after it: the new one still counts.
    let mut again = hub
        .subscriber("y")
        .client_id("alice")
        .subscribe()
        .await
        .unwrap();
    drop(many);
    assert_eq!(hub.client_connections("alice"), 1);
    assert_eq!(
        hub.send_to("alice", Event::new().data("hi")).await.unwrap(),
        1
    );
    assert_eq!(data(&again.next().await.unwrap()), "hi");
    drop((again, bob));
    assert_eq!(hub.total_subscribers(), 0);
}

/// A publisher on its own thread racing subscribers on a multi-thread runtime, one event at a
/// time: every subscriber gets every event. A parked subscriber that the ring's count says has
/// nothing new is not polled again (`Recv::poll`); the count moves before each send, so no
/// wake-up can be missed (a missed one would leave a subscriber waiting here until the
/// timeout, with no keep-alive to rescue it).
#[test]
fn subscribers_racing_a_publisher_miss_no_wake_up() {
    const EVENTS: usize = 20_000;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async {
        let hub = Hub::builder().subscriber_capacity(1 << 15).build();
        let mut tasks = vec![];
        for _ in 0..4 {
            let mut sub = hub.subscribe("t").await.unwrap();
            tasks.push(tokio::spawn(async move {
                let mut got = 0;
                while got < EVENTS {
                    // A lost wake-up shows as a wait until the timeout's timer wakes the task
                    // (whose poll of the stream then finds the event): each event takes
                    // microseconds, so a wait of seconds is a lost wake-up, not a slow machine.
                    let started = tokio::time::Instant::now();
                    let next = tokio::time::timeout(Duration::from_secs(5), sub.next()).await;
                    match next {
                        Ok(Some(_)) if started.elapsed() < Duration::from_secs(4) => got += 1,
                        Ok(Some(_)) | Err(_) => {
                            panic!("a wake-up was lost after {got} of {EVENTS} events")
                        }
                        Ok(None) => panic!("ended after {got}"),
                    }
                }
                got
            }));
        }
        let publisher = {
            let hub = hub.clone();
            std::thread::spawn(move || {
                for n in 0..EVENTS {
                    hub.publish("t", Event::new().data(n.to_string()))
                        .now_or_never()
                        .unwrap()
                        .unwrap();
                    if n % 64 == 0 {
                        std::thread::yield_now();
                    }
                }
            })
        };
        for task in tasks {
            assert_eq!(task.await.unwrap(), EVENTS);
        }
        publisher.join().unwrap();
    });
}

/// The case behind a lost wake-up, made deterministic: a subscriber reads exactly a task's
/// co-operative budget of events (128) in one go and then waits for the next. Its wait starts
/// with the budget spent, where tokio's receive returns `Pending` without registering (and
/// has the task come back); taken for a registration, that `Pending` left the subscriber
/// asleep through the next publish.
#[tokio::test]
async fn a_subscriber_that_spent_its_budget_is_still_woken() {
    let hub = Hub::builder().subscriber_capacity(1024).build();
    let mut sub = hub.subscribe("t").await.unwrap();
    for n in 0..128 {
        hub.publish("t", Event::new().data(n.to_string()))
            .await
            .unwrap();
    }
    let reader = tokio::spawn(async move {
        for _ in 0..128 {
            sub.next().await.unwrap();
        }
        data(&sub.next().await.unwrap())
    });
    // Let the reader read the 128 and park.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    hub.publish("t", Event::new().data("129th")).await.unwrap();
    let last = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("the reader was woken by the publish")
        .unwrap();
    assert_eq!(last, "129th");
}

#[tokio::test]
async fn a_subscription_ends_at_its_deadline_and_gives_its_place_back() {
    use std::time::Instant;
    let hub = Hub::new();
    let mut sub = hub
        .subscriber("t")
        .client_id("c")
        .until(Instant::now() + Duration::from_millis(300))
        .subscribe()
        .await
        .unwrap();
    let mut other = hub.subscribe("t").await.unwrap();
    hub.publish("t", Event::new().data("before")).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .unwrap();
    assert!(got.is_some(), "events before the deadline flow");
    assert_eq!(hub.subscriber_count("t"), 2);
    // Ends by itself, without another event.
    let end = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .unwrap();
    assert!(end.is_none());
    assert!(futures_util::stream::FusedStream::is_terminated(&sub));
    assert_eq!(hub.subscriber_count("t"), 1);
    assert_eq!(hub.client_connections("c"), 0);
    // The others go on.
    hub.publish("t", Event::new().data("after")).await.unwrap();
    assert_eq!(data(&other.next().await.unwrap()), "before");
    assert_eq!(data(&other.next().await.unwrap()), "after");
    // A deadline already past: ends at once, with nothing.
    let mut late = hub
        .subscriber("t")
        .until(Instant::now() - Duration::from_secs(1))
        .subscribe()
        .await
        .unwrap();
    assert!(late.next().await.is_none());
}
