//! One stream over many topics and patterns, with one cursor (the in-memory hub).

mod support;

use std::{collections::HashMap, time::Duration};

use futures_util::{FutureExt, StreamExt};
use tower_sse::{
    Event,
    hub::{Hub, Pattern, SelectionError, SubscribeError, SubscribeRequest, Subscription},
    replay::{Replay, UnknownId},
};

use support::data;

/// Every event ready now, until the stream would wait.
fn drain(sub: &mut Subscription) -> Vec<String> {
    let mut out = vec![];
    while let Some(Some(event)) = sub.next().now_or_never() {
        out.push(data(&event));
    }
    out
}

fn glob(text: &str) -> Pattern {
    Pattern::glob(text).unwrap()
}

#[tokio::test]
async fn one_stream_in_hub_order_and_one_cursor_resumes_every_topic() {
    let hub = Hub::new();
    let mut sub = hub.subscriber("a").topic("b").subscribe().await.unwrap();
    let mut last = None;
    for (topic, text) in [("a", "a1"), ("b", "b1"), ("c", "c1"), ("a", "a2")] {
        last = Some(hub.publish(topic, Event::new().data(text)).await.unwrap());
    }
    assert_eq!(drain(&mut sub), ["a1", "b1", "a2"]);
    drop(sub);
    assert_eq!(hub.subscriber_count("a"), 0);
    assert_eq!(hub.total_subscribers(), 0);

    for (topic, text) in [("b", "b2"), ("c", "c2"), ("a", "a3")] {
        hub.publish(topic, Event::new().data(text)).await.unwrap();
    }
    // The id of an `a` event positions the whole subscription, `b` included.
    let last = last.unwrap();
    let mut back = hub
        .subscriber("b")
        .topic("a")
        .last_event_id(last.id())
        .subscribe()
        .await
        .unwrap();
    assert_eq!(back.replay(), Replay::Complete);
    assert_eq!(back.backlog_len(), 2);
    hub.publish("b", Event::new().data("b3")).await.unwrap();
    assert_eq!(drain(&mut back), ["b2", "a3", "b3"]);

    // The set may grow between reconnects: `c`'s events after the cursor come too.
    let grown = hub
        .subscriber("a")
        .topic("b")
        .topic("c")
        .last_event_id(last.id())
        .subscribe()
        .await
        .unwrap();
    assert_eq!(grown.replay(), Replay::Complete);
    let mut grown = grown;
    assert_eq!(drain(&mut grown), ["b2", "c2", "a3", "b3"]);
}

#[tokio::test]
async fn an_event_in_two_followed_topics_comes_once_live_and_replayed() {
    let hub = Hub::new();
    let mut sub = hub
        .subscriber("room")
        .topic("public")
        .subscribe()
        .await
        .unwrap();
    let first = hub
        .publish_many(&["room", "public"], Event::new().data("both"))
        .await
        .unwrap();
    hub.broadcast(Event::new().data("everyone")).await.unwrap();
    hub.publish("room", Event::new().data("room only"))
        .await
        .unwrap();
    assert_eq!(drain(&mut sub), ["both", "everyone", "room only"]);

    let mut replayed = hub
        .subscriber("public")
        .topic("room")
        .last_event_id(Some("\u{1}unknown"))
        .subscribe()
        .await
        .unwrap();
    assert_eq!(replayed.replay(), Replay::HistoryLost);
    assert_eq!(drain(&mut replayed), ["both", "everyone", "room only"]);
    let mut after = hub
        .subscriber("public")
        .topic("room")
        .last_event_id(first.id())
        .subscribe()
        .await
        .unwrap();
    assert_eq!(after.replay(), Replay::Complete);
    assert_eq!(drain(&mut after), ["everyone", "room only"]);
}

#[tokio::test]
async fn a_pattern_follows_topics_made_later_and_replays_the_retained_ones() {
    let hub = Hub::new();
    let before = hub
        .publish("rooms/1", Event::new().data("old"))
        .await
        .unwrap();
    hub.publish("rooms/1", Event::new().data("missed"))
        .await
        .unwrap();
    hub.publish("users/bob", Event::new().data("not a room"))
        .await
        .unwrap();
    let mut rooms = hub
        .subscription()
        .pattern(glob("rooms/*"))
        .last_event_id(before.id())
        .subscribe()
        .await
        .unwrap();
    assert_eq!(rooms.replay(), Replay::Complete);
    hub.publish("rooms/2", Event::new().data("new room"))
        .await
        .unwrap();
    hub.publish("rooms/2/typing", Event::new().data("deeper"))
        .await
        .unwrap();
    hub.publish("rooms/1", Event::new().data("live"))
        .await
        .unwrap();
    assert_eq!(drain(&mut rooms), ["missed", "new room", "live"]);

    // A topic that is also matched by a pattern: each event once.
    let mut both = hub
        .subscriber("rooms/1")
        .pattern(glob("rooms/**"))
        .subscribe()
        .await
        .unwrap();
    hub.publish("rooms/1", Event::new().data("one"))
        .await
        .unwrap();
    hub.publish("rooms/2/typing", Event::new().data("two"))
        .await
        .unwrap();
    assert_eq!(drain(&mut both), ["one", "two"]);

    // Two subscriptions to the same pattern share its ring; it goes with the last one.
    let again = hub
        .subscription()
        .pattern(glob("rooms/*"))
        .subscribe()
        .await
        .unwrap();
    drop((rooms, both, again));
    assert_eq!(hub.total_subscribers(), 0);
    assert_eq!(hub.subscriber_count("rooms/1"), 0);
}

#[tokio::test]
async fn an_unknown_cursor_is_history_lost_then_all_or_nothing() {
    let hub = Hub::new();
    hub.publish("a", Event::new().data("a1")).await.unwrap();
    hub.publish("b", Event::new().data("b1")).await.unwrap();
    let mut all = hub
        .subscriber("a")
        .topic("b")
        .last_event_id(Some("from-another-hub"))
        .subscribe()
        .await
        .unwrap();
    assert_eq!(all.replay(), Replay::HistoryLost);
    assert_eq!(drain(&mut all), ["a1", "b1"]);
    let mut none = hub
        .subscriber("a")
        .topic("b")
        .last_event_id(Some("from-another-hub"))
        .on_unknown_id(UnknownId::LiveOnly)
        .subscribe()
        .await
        .unwrap();
    assert_eq!(none.replay(), Replay::HistoryLost);
    assert!(drain(&mut none).is_empty());

    // Evicted from one of the topics: lost, not silently partial.
    let hub = Hub::builder().history_events(1).build();
    let first = hub.publish("a", Event::new().data("a1")).await.unwrap();
    hub.publish("b", Event::new().data("b1")).await.unwrap();
    hub.publish("a", Event::new().data("a2")).await.unwrap();
    hub.publish("a", Event::new().data("a3")).await.unwrap();
    let lost = hub
        .subscriber("a")
        .topic("b")
        .last_event_id(first.id())
        .subscribe()
        .await
        .unwrap();
    assert_eq!(lost.replay(), Replay::HistoryLost);
}

/// The default for an unknown id is bounded: the newest `UnknownId::DEFAULT_RECENT` events of
/// everything selected, in hub order (it was the whole history: up to 1 MiB per topic for a
/// made-up id). `SendHistory` still sends it all; `SendRecent(n)` the newest `n`.
#[tokio::test]
async fn an_unknown_id_gets_the_newest_events_by_default() {
    let hub = Hub::new();
    for n in 0..150 {
        let topic = if n % 2 == 0 { "a" } else { "b" };
        hub.publish(topic, Event::new().data(n.to_string()))
            .await
            .unwrap();
    }
    let newest = |n: usize| (150 - n..150).map(|i| i.to_string()).collect::<Vec<_>>();
    let evens = |n: usize| {
        (0..150)
            .step_by(2)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .split_off(75 - n)
    };
    // Several topics (the merged path) and one topic (the single-ring path).
    let mut many = hub
        .subscriber("a")
        .topic("b")
        .last_event_id(Some("made-up"))
        .subscribe()
        .await
        .unwrap();
    assert_eq!(many.replay(), Replay::HistoryLost);
    assert_eq!(drain(&mut many), newest(UnknownId::DEFAULT_RECENT));
    let mut one = hub
        .subscriber("a")
        .last_event_id(Some("made-up"))
        .on_unknown_id(UnknownId::SendRecent(5))
        .subscribe()
        .await
        .unwrap();
    assert_eq!(one.replay(), Replay::HistoryLost);
    assert_eq!(drain(&mut one), evens(5));
    let mut all = hub
        .subscriber("a")
        .topic("b")
        .last_event_id(Some("made-up"))
        .on_unknown_id(UnknownId::SendHistory)
        .subscribe()
        .await
        .unwrap();
    assert_eq!(drain(&mut all), newest(150));
    let mut one_default = hub
        .subscriber("b")
        .last_event_id(Some("made-up"))
        .subscribe()
        .await
        .unwrap();
    assert_eq!(
        drain(&mut one_default).len(),
        75,
        "fewer retained than the bound"
    );
}

#[tokio::test]
async fn a_publisher_id_positions_the_subscription_too() {
    let hub = Hub::new();
    hub.publish("a", Event::new().id("order-1").data("a1"))
        .await
        .unwrap();
    hub.publish("b", Event::new().data("b1")).await.unwrap();
    let mut sub = hub
        .subscriber("a")
        .topic("b")
        .last_event_id(Some("order-1"))
        .subscribe()
        .await
        .unwrap();
    assert_eq!(sub.replay(), Replay::Complete);
    assert_eq!(drain(&mut sub), ["b1"]);
}

#[tokio::test]
async fn bad_selections_are_refused_and_hold_nothing() {
    let hub = Hub::builder().auto_create(false).max_topics(3).build();
    hub.create_topic("a").await.unwrap();
    assert_eq!(
        hub.subscription().subscribe().await.unwrap_err(),
        SubscribeError::Selection(SelectionError::Empty)
    );
    let err = hub
        .subscriber("a")
        .topic("b")
        .topic("c")
        .topic("d")
        .subscribe()
        .await
        .unwrap_err();
    assert_eq!(
        err,
        SubscribeError::Selection(SelectionError::TooManyTopics { max: 3 })
    );
    assert_eq!(err.status(), http::StatusCode::BAD_REQUEST);
    assert_eq!(
        err.to_string(),
        "bad subscription: more than 3 topics and patterns"
    );
    // Duplicates count once.
    assert!(
        hub.subscriber("a")
            .topic("a")
            .topic("a")
            .topic("a")
            .subscribe()
            .await
            .is_ok()
    );
    // `a` exists, `zz` does not: refused, and `a` does not keep a subscriber.
    let err = hub
        .subscriber("a")
        .topic("zz")
        .subscribe()
        .await
        .unwrap_err();
    assert_eq!(err, SubscribeError::UnknownTopic);
    assert_eq!(hub.subscriber_count("a"), 0);
    assert_eq!(hub.total_subscribers(), 0);
}

#[tokio::test]
async fn the_authorizer_sees_every_topic_and_pattern_on_its_own() {
    let hub = Hub::builder()
        .authorizer(|req: &SubscribeRequest<'_>| req.topic().starts_with("public/"))
        .build();
    assert!(
        hub.subscriber("public/a")
            .topic("public/b")
            .subscribe()
            .await
            .is_ok()
    );
    // An allowed topic does not carry a forbidden one.
    let err = hub
        .subscriber("public/a")
        .topic("admin")
        .subscribe()
        .await
        .unwrap_err();
    assert_eq!(err, SubscribeError::Forbidden);
    // A pattern is checked by its key ("glob:public/*"), which a name check refuses.
    let err = hub
        .subscription()
        .pattern(glob("public/*"))
        .subscribe()
        .await
        .unwrap_err();
    assert_eq!(err, SubscribeError::Forbidden);
    assert_eq!(hub.stats().forbidden, 2);
    assert_eq!(hub.total_subscribers(), 0);
}

/// A topic closed under a multi-topic stream ends the stream (after its final event); the
/// client resumes, and nothing is lost, also not from a topic made again under the same name.
/// (Before, the stream went on without the topic and missed the new one's events silently.)
#[tokio::test]
async fn a_closed_topic_ends_the_stream_and_a_resume_misses_nothing() {
    let hub = Hub::new();
    let mut sub = hub.subscriber("a").topic("b").subscribe().await.unwrap();
    let b0 = hub.publish("b", Event::new().data("b0")).await.unwrap();
    hub.close_topic("a", Some(Event::new().data("a closed")))
        .await
        .unwrap();
    hub.publish("a", Event::new().data("a2")).await.unwrap();
    hub.publish("b", Event::new().data("b1")).await.unwrap();
    assert_eq!(drain(&mut sub), ["b0", "a closed"]);
    assert!(sub.next().await.is_none(), "the stream ended");
    assert_eq!(hub.total_subscribers(), 0);
    // Back from the last id it had: the final event, then what came after, in either topic.
    let last = hub.publish("b", Event::new().data("b2")).await.unwrap();
    let mut back = hub
        .subscriber("a")
        .topic("b")
        .last_event_id(b0.id())
        .subscribe()
        .await
        .unwrap();
    // The closed `a` took "a closed" with it: said, not hidden.
    assert_eq!(back.replay(), Replay::HistoryLost);
    assert_eq!(drain(&mut back), ["a2", "b1", "b2"]);
    drop(back);
    let back = hub
        .subscriber("a")
        .topic("b")
        .last_event_id(last.id())
        .subscribe()
        .await
        .unwrap();
    assert_eq!(back.replay(), Replay::Complete);
}

#[tokio::test]
async fn close_all_ends_pattern_subscriptions_too() {
    let hub = Hub::new();
    let mut only = hub
        .subscription()
        .pattern(glob("rooms/*"))
        .subscribe()
        .await
        .unwrap();
    let mut mixed = hub
        .subscriber("x")
        .pattern(glob("rooms/*"))
        .subscribe()
        .await
        .unwrap();
    hub.close_all();
    let end = |sub: &mut Subscription| {
        let next = sub.next().now_or_never();
        assert!(matches!(next, Some(None)), "the stream should have ended");
    };
    end(&mut only);
    end(&mut mixed);
    assert_eq!(hub.total_subscribers(), 0);
}

/// A pattern resume after a matched topic was removed with events after the cursor says the
/// history may be incomplete (it said `complete` and skipped them).
#[tokio::test]
async fn a_pattern_resume_across_a_removed_topic_is_history_lost() {
    let hub = Hub::new();
    let seen = hub.publish("r/1", Event::new().data("seen")).await.unwrap();
    hub.publish("r/2", Event::new().data("gone")).await.unwrap();
    hub.close_topic("r/2", None).await.unwrap();
    let back = hub
        .subscription()
        .pattern(glob("r/*"))
        .last_event_id(seen.id())
        .subscribe()
        .await
        .unwrap();
    assert_eq!(back.replay(), Replay::HistoryLost);
}

/// A publisher id that stands at two places (per-topic counters) resumes from the oldest and
/// says so (it took the newest and skipped what came between).
#[tokio::test]
async fn an_ambiguous_publisher_id_resumes_from_the_oldest_and_says_so() {
    let hub = Hub::new();
    for (topic, id) in [("a", "1"), ("a", "2"), ("a", "3"), ("b", "1"), ("b", "2")] {
        let event = Event::new().id(id).data(format!("{topic}{id}"));
        hub.publish(topic, event).await.unwrap();
    }
    let mut back = hub
        .subscriber("a")
        .topic("b")
        .last_event_id(Some("2"))
        .subscribe()
        .await
        .unwrap();
    assert_eq!(back.replay(), Replay::HistoryLost);
    assert_eq!(drain(&mut back), ["a3", "b1", "b2"]);
}

/// A broadcast reaches a pattern subscriber live only through a topic it went into, as a
/// replay would find it.
#[tokio::test]
async fn a_broadcast_reaches_patterns_as_a_replay_would() {
    let hub = Hub::new();
    hub.create_topic("lobby").await.unwrap();
    let mut rooms = hub
        .subscription()
        .pattern(glob("rooms/*"))
        .subscribe()
        .await
        .unwrap();
    hub.broadcast(Event::new().data("no room yet"))
        .await
        .unwrap();
    hub.create_topic("rooms/1").await.unwrap();
    hub.broadcast(Event::new().data("to rooms/1"))
        .await
        .unwrap();
    assert_eq!(drain(&mut rooms), ["to rooms/1"]);
}

#[tokio::test]
async fn a_slow_multi_topic_subscriber_is_cut_and_counted() {
    let hub = Hub::builder().subscriber_capacity(4).build();
    let mut sub = hub.subscriber("a").topic("b").subscribe().await.unwrap();
    for n in 0..10 {
        hub.publish(if n % 2 == 0 { "a" } else { "b" }, Event::new().data("x"))
            .await
            .unwrap();
    }
    assert!(sub.next().await.is_none());
    assert_eq!(hub.stats().slow_disconnects, 1);
    assert_eq!(hub.total_subscribers(), 0);
}

/// Several publishers on their own threads, into overlapping topics (some with
/// `publish_many`); subscribers of different sets of topics and patterns drop their stream at
/// random and resume with the last id they saw. Each must end with exactly the events of its
/// topics, in hub order, each once.
#[test]
fn resuming_multi_topic_subscribers_get_every_event_once_in_order() {
    const TOPICS: [&str; 5] = ["rooms/1", "rooms/2", "rooms/3", "dm/alice", "dm/bob"];
    const PER_PUBLISHER: usize = 400;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let hub = Hub::builder()
            .history_events(10_000)
            .history_bytes(64 << 20)
            .subscriber_capacity(64)
            .build();
        for topic in TOPICS {
            hub.create_topic(topic).await.unwrap();
        }
        // (topics, patterns) per subscriber.
        let sets: Vec<(Vec<&'static str>, Vec<&'static str>)> = vec![
            (vec!["rooms/1", "dm/alice"], vec![]),
            (vec!["rooms/2", "rooms/3", "dm/bob"], vec![]),
            (vec![], vec!["rooms/*"]),
            (vec!["dm/alice"], vec!["rooms/*"]),
            (
                vec!["rooms/1", "rooms/2", "rooms/3", "dm/alice", "dm/bob"],
                vec![],
            ),
        ];
        let mut ready = vec![];
        let subscribers: Vec<_> = sets
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, (topics, patterns))| {
                let hub = hub.clone();
                let (subscribed, rx) = tokio::sync::oneshot::channel();
                ready.push(rx);
                let mut subscribed = Some(subscribed);
                tokio::spawn(async move {
                    let mut rng = 0x9E37_79B9_u64.wrapping_mul(i as u64 + 1) | 1;
                    let mut seen: Vec<(u64, String)> = vec![];
                    let mut last: Option<String> = None;
                    loop {
                        let mut builder = hub.subscription();
                        for topic in &topics {
                            builder = builder.topic(topic);
                        }
                        for pattern in &patterns {
                            builder = builder.pattern(Pattern::glob(pattern).unwrap());
                        }
                        // Cut before its first event: it has no id, so it asks with one no hub
                        // issued and asks for the whole history (which holds everything here).
                        let cursor = match (&last, subscribed.is_some()) {
                            (Some(id), _) => Some(id.as_str()),
                            (None, true) => None,
                            (None, false) => Some("\u{1}none"),
                        };
                        let mut sub = builder
                            .last_event_id(cursor)
                            .on_unknown_id(UnknownId::SendHistory)
                            .subscribe()
                            .await
                            .unwrap();
                        if let Some(subscribed) = subscribed.take() {
                            let _ = subscribed.send(());
                        }
                        if last.is_some() {
                            assert_eq!(sub.replay(), Replay::Complete);
                        }
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        let keep = 1 + rng % 50;
                        for _ in 0..keep {
                            let Some(event) = sub.next().await else {
                                break; // cut for being slow: resume
                            };
                            if data(&event) == "end" {
                                return seen;
                            }
                            let id = event.id().unwrap().to_owned();
                            let seq = id.rsplit_once('-').unwrap().1.parse().unwrap();
                            seen.push((seq, data(&event)));
                            last = Some(id);
                        }
                    }
                })
            })
            .collect();
        for rx in ready {
            rx.await.unwrap();
        }
        // Publishers: each on its own OS thread, as concurrent as it gets.
        let publishers: Vec<_> = (0..3)
            .map(|p| {
                let hub = hub.clone();
                std::thread::spawn(move || {
                    let mut rng = 0xDEAD_BEEF_u64.wrapping_mul(p + 1) | 1;
                    let mut sent = vec![];
                    for n in 0..PER_PUBLISHER {
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        let first = TOPICS[(rng % 5) as usize];
                        let second = TOPICS[((rng >> 8) % 5) as usize];
                        let text = format!("p{p}-{n}");
                        let event = Event::new().data(text.clone());
                        let sent_to: Vec<&str> = if rng % 3 == 0 {
                            vec![first, second]
                        } else {
                            vec![first]
                        };
                        let encoded = hub
                            .publish_many(&sent_to, event)
                            .now_or_never()
                            .unwrap()
                            .unwrap();
                        let id = encoded.id().unwrap().to_owned();
                        let seq: u64 = id.rsplit_once('-').unwrap().1.parse().unwrap();
                        sent.push((seq, text, sent_to));
                    }
                    sent
                })
            })
            .collect();
        let mut published: Vec<(u64, String, Vec<&str>)> = publishers
            .into_iter()
            .flat_map(|p| p.join().unwrap())
            .collect();
        published.sort_by_key(|(seq, _, _)| *seq);
        // The end, in every topic (and so to every pattern): one position, seen once each.
        hub.broadcast(Event::new().data("end")).await.unwrap();
        for (subscriber, (topics, patterns)) in subscribers.into_iter().zip(&sets) {
            let seen = tokio::time::timeout(Duration::from_secs(60), subscriber)
                .await
                .expect("a subscriber never went quiet")
                .unwrap();
            let follows = |topic: &str| {
                topics.contains(&topic)
                    || patterns.iter().any(|p| {
                        tower_sse::hub::Matcher::matches(&Pattern::glob(p).unwrap(), topic)
                    })
            };
            let want: Vec<(u64, String)> = published
                .iter()
                .filter(|(_, _, to)| to.iter().any(|topic| follows(topic)))
                .map(|(seq, text, _)| (*seq, text.clone()))
                .collect();
            let counts = seen.iter().fold(HashMap::new(), |mut m, (seq, _)| {
                *m.entry(*seq).or_insert(0) += 1;
                m
            });
            assert!(
                counts.values().all(|&n| n == 1),
                "{topics:?} {patterns:?}: a duplicate"
            );
            assert!(
                seen.windows(2).all(|w| w[0].0 < w[1].0),
                "{topics:?} {patterns:?}: out of order"
            );
            assert_eq!(seen.len(), want.len(), "{topics:?} {patterns:?}: a gap");
            assert_eq!(seen, want, "{topics:?} {patterns:?}");
        }
        assert_eq!(hub.total_subscribers(), 0);
    });
}

/// A publisher racing one subscriber of two topics, on two threads: the merge must never hand
/// out an event before an earlier one that became visible while it was looking.
#[test]
fn the_merge_keeps_hub_order_against_a_racing_publisher() {
    const EVENTS: u64 = 100_000;
    const TOPICS: [&str; 6] = ["t0", "t1", "t2", "t3", "t4", "t5"];
    let hub = Hub::builder().subscriber_capacity(1 << 17).build();
    let mut builder = hub.subscription();
    for topic in TOPICS {
        builder = builder.topic(topic);
    }
    let mut sub = builder.subscribe().now_or_never().unwrap().unwrap();
    let publisher = {
        let hub = hub.clone();
        std::thread::spawn(move || {
            for n in 0..EVENTS {
                // Backwards through the rings the merge reads forwards: the event it would
                // miss lands in a ring it has just looked at.
                let topic = TOPICS[TOPICS.len() - 1 - (n as usize % TOPICS.len())];
                hub.publish(topic, Event::new().data("e"))
                    .now_or_never()
                    .unwrap()
                    .unwrap();
            }
        })
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let mut last = 0u64;
    for n in 0..EVENTS {
        // An event handed out too early makes the earlier one look delivered: it would be
        // dropped, and this would wait for it forever.
        let next = runtime
            .block_on(async { tokio::time::timeout(Duration::from_secs(20), sub.next()).await });
        let event = next
            .unwrap_or_else(|_| panic!("event {n} never came (one was lost)"))
            .unwrap();
        let seq: u64 = event
            .id()
            .unwrap()
            .rsplit_once('-')
            .unwrap()
            .1
            .parse()
            .unwrap();
        assert!(seq > last, "{seq} after {last}");
        last = seq;
    }
    publisher.join().unwrap();
}

/// Private events reach only the subscriptions whose access allows them, live and replayed
/// alike, as the same bytes (no per-subscriber encoding), on one topic and on several.
#[tokio::test]
async fn private_events_are_filtered_live_and_replayed_alike() {
    use tower_sse::hub::PrivateEvent;

    fn bob(event: &PrivateEvent<'_>) -> bool {
        event.topics().any(|topic| topic == "inbox/bob")
    }
    let hub = Hub::new();
    let first = hub
        .publish("inbox/bob", Event::new().data("public 1"))
        .await
        .unwrap();
    let secret = hub
        .publisher(&["inbox/bob"])
        .private()
        .publish(Event::new().data("for bob"))
        .await
        .unwrap();
    hub.publisher(&["inbox/alice"])
        .private()
        .publish(Event::new().data("for alice"))
        .await
        .unwrap();
    hub.publish("inbox/bob", Event::new().data("public 2"))
        .await
        .unwrap();

    // Replayed, one topic: the anonymous one skips the private event; bob's gets the bytes.
    let mut anonymous = hub
        .subscriber("inbox/bob")
        .last_event_id(first.id())
        .subscribe()
        .await
        .unwrap();
    assert_eq!(drain(&mut anonymous), ["public 2"]);
    let mut as_bob = hub
        .subscriber("inbox/bob")
        .last_event_id(first.id())
        .private_access(bob)
        .subscribe()
        .await
        .unwrap();
    let replayed = as_bob.next().await.unwrap();
    assert_eq!(replayed.as_bytes().as_ptr(), secret.as_bytes().as_ptr());
    assert_eq!(drain(&mut as_bob), ["public 2"]);

    // Replayed, several topics.
    let mut both = hub
        .subscriber("inbox/bob")
        .topic("inbox/alice")
        .last_event_id(first.id())
        .private_access(bob)
        .subscribe()
        .await
        .unwrap();
    assert_eq!(drain(&mut both), ["for bob", "public 2"]);

    // Live, one topic and several.
    hub.publisher(&["inbox/bob", "inbox/alice"])
        .private()
        .publish(Event::new().data("for both"))
        .await
        .unwrap();
    hub.publisher(&["inbox/alice"])
        .private()
        .publish(Event::new().data("alice again"))
        .await
        .unwrap();
    hub.publish("inbox/bob", Event::new().data("public 3"))
        .await
        .unwrap();
    assert_eq!(drain(&mut anonymous), ["public 3"]);
    assert_eq!(drain(&mut as_bob), ["for both", "public 3"]);
    assert_eq!(drain(&mut both), ["for both", "public 3"]);
}

/// A broadcast gets one id in every topic, so a client that saw it resumes after it. (It had
/// none: the browser kept the id before it, and every resume sent the broadcast again.)
#[tokio::test]
async fn a_broadcast_has_an_id_and_is_not_sent_again_on_resume() {
    let hub = Hub::new();
    let mut sub = hub.subscriber("a").topic("b").subscribe().await.unwrap();
    hub.publish("a", Event::new().data("a1")).await.unwrap();
    hub.broadcast(Event::new().data("to all")).await.unwrap();
    let mut last = None;
    for _ in 0..2 {
        let event = sub.next().await.unwrap();
        // What a browser keeps: the last id it was given.
        if let Some(id) = event.id() {
            last = Some(id.to_owned());
        }
    }
    drop(sub);
    for resume in [hub.subscriber("a").topic("b"), hub.subscriber("b")] {
        let back = resume
            .last_event_id(last.as_deref())
            .subscribe()
            .await
            .unwrap();
        assert_eq!(back.replay(), Replay::Complete);
        assert_eq!(back.backlog_len(), 0, "the broadcast came again");
    }
}

/// A pattern subscriber from before `close_all` that leaves afterwards does not take the
/// pattern's new ring (made for a subscriber that came after) with it.
#[tokio::test]
async fn a_pattern_subscriber_from_before_close_all_leaves_the_new_ring_alone() {
    let hub = Hub::new();
    let old = hub
        .subscription()
        .pattern(glob("rooms/*"))
        .subscribe()
        .await
        .unwrap();
    hub.close_all();
    let mut new = hub
        .subscription()
        .pattern(glob("rooms/*"))
        .subscribe()
        .await
        .unwrap();
    drop(old);
    hub.publish("rooms/1", Event::new().data("after"))
        .await
        .unwrap();
    assert_eq!(drain(&mut new), ["after"]);
    assert_eq!(hub.total_subscribers(), 1);
    drop(new);
    assert_eq!(hub.total_subscribers(), 0);
}
