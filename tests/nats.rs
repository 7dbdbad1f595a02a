//! The hub on NATS JetStream, against a real `nats-server -js` each test starts on its own
//! port with file storage (skipped with a printed reason when `nats-server` is missing, except
//! under `CI`).

mod support;

use std::time::Duration;

use futures_util::StreamExt;
use support::{data, nats::NatsServer};
use tokio::time::timeout;
use tower_sse::{
    EncodedEvent, Event,
    hub::{Hub, HubBuilder, NatsBroker, Pattern, PublishError, SubscribeError, Subscription},
    replay::{Replay, UnknownId},
};

const WAIT: Duration = Duration::from_secs(10);

async fn hub_with(
    nats: &NatsServer,
    stream: &str,
    broker: impl FnOnce(NatsBroker) -> NatsBroker,
    configure: impl FnOnce(HubBuilder) -> HubBuilder,
) -> Hub {
    let connected = NatsBroker::connect(&nats.url())
        .await
        .expect("connect to the test nats")
        .stream_name(stream)
        .subject_prefix(stream.to_lowercase())
        .timeout(Duration::from_millis(800));
    configure(Hub::builder()).nats(broker(connected)).build()
}

async fn hub(nats: &NatsServer, stream: &str) -> Hub {
    hub_with(nats, stream, |b| b, |b| b).await
}

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

#[tokio::test]
async fn two_hubs_exchange_events_with_stream_sequences_and_hostile_topic_names() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let a = hub(&nats, "T1").await;
    let b = hub(&nats, "T1").await;
    // Names that are subject syntax must neither split a subject nor widen a subscription.
    let names = ["a.b", "a", "*", ">", "x y", "caf\u{e9}", "t1.t.>", ""];
    let mut subs = Vec::new();
    for name in names {
        subs.push(b.subscribe(name).await.unwrap());
    }
    let mut ids = Vec::new();
    for name in names {
        let sent = a
            .publish(name, Event::new().event("m").data(format!("to {name}")))
            .await
            .unwrap();
        let id = sent.id().unwrap().to_owned();
        assert!(id.parse::<u64>().is_ok(), "{id}");
        ids.push(id);
    }
    for ((name, sub), id) in names.iter().zip(&mut subs).zip(&ids) {
        let got = next(sub).await;
        assert_eq!(data(&got), format!("to {name}"));
        assert_eq!(got.id(), Some(id.as_str()));
        assert_eq!(
            &got.as_bytes()[..],
            format!("event: m\ndata: to {name}\nid: {id}\n\n").as_bytes()
        );
    }
    // Nothing else came to any of them.
    for sub in &mut subs {
        assert!(
            timeout(Duration::from_millis(100), sub.next())
                .await
                .is_err()
        );
    }
    // Ids are the stream's sequence: hub-wide increasing.
    let seqs: Vec<u64> = ids.iter().map(|id| id.parse().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
}

#[tokio::test]
async fn a_client_resumes_on_the_other_hub_exactly_once_over_many_topics() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let a = hub(&nats, "T2").await;
    let b = hub(&nats, "T2").await;
    let follow = |hub: &Hub| {
        let hub = hub.clone();
        async move {
            hub.subscriber("dm/alice")
                .pattern(Pattern::glob("rooms/*").unwrap())
                .subscribe()
                .await
        }
    };
    let mut first = follow(&a).await.unwrap();
    for i in 0..5 {
        a.publish(
            &format!("rooms/{}", i % 2),
            Event::new().data(i.to_string()),
        )
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
    a.publish("elsewhere", Event::new().data("x"))
        .await
        .unwrap();
    for i in 5..10 {
        let topic = if i % 2 == 0 { "dm/alice" } else { "rooms/7" };
        a.publish(topic, Event::new().data(i.to_string()))
            .await
            .unwrap();
    }
    // B never served these topics: its replay comes from the stream.
    let mut resumed = b
        .subscriber("dm/alice")
        .pattern(Pattern::glob("rooms/*").unwrap())
        .last_event_id(last.as_deref())
        .subscribe()
        .await
        .unwrap();
    assert_eq!(resumed.replay(), Replay::Complete);
    assert_eq!(resumed.backlog_len(), 5);
    a.publish("rooms/1", Event::new().data("10")).await.unwrap();
    let got = take(&mut resumed, 6).await;
    assert_eq!(got, (5..11).map(|i| i.to_string()).collect::<Vec<_>>());
}

#[tokio::test]
async fn ids_outside_the_stream_are_history_lost() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let a = hub_with(&nats, "T3", |n| n.max_events(10), |b| b.history_events(10)).await;
    let b = hub_with(&nats, "T3", |n| n.max_events(10), |b| b.history_events(10)).await;
    let oldest = a.publish("w", Event::new().data("0")).await.unwrap();
    for i in 1..50 {
        a.publish("w", Event::new().data(i.to_string()))
            .await
            .unwrap();
    }
    let lost = b
        .subscriber("w")
        .last_event_id(oldest.id())
        .subscribe()
        .await
        .unwrap();
    assert_eq!(lost.replay(), Replay::HistoryLost);
    let mut lost = lost;
    assert_eq!(lost.backlog_len(), 10);
    assert_eq!(
        take(&mut lost, 10).await,
        (40..50).map(|i| i.to_string()).collect::<Vec<_>>()
    );
    let beyond = (oldest.id().unwrap().parse::<u64>().unwrap() + 10_000).to_string();
    support::unknown_ids_are_history_lost(
        &b,
        "w",
        &(47..50).map(|i| i.to_string()).collect::<Vec<_>>(),
        &["garbage", "0", "1-1", &beyond],
    )
    .await;
}

#[tokio::test]
async fn send_to_broadcast_close_and_a_topic_registry_reach_every_process() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let a = hub(&nats, "T4").await;
    let b = hub(&nats, "T4").await;
    let mut alice_on_b = b
        .subscriber("inbox/alice")
        .client_id("alice")
        .subscribe()
        .await
        .unwrap();
    let mut other_on_a = a.subscribe("lobby").await.unwrap();
    // Each listener is up once its hub delivered one event.
    for hub in [&a, &b] {
        let mut probe = hub.subscribe("probe").await.unwrap();
        hub.publish("probe", Event::new().data("p")).await.unwrap();
        next(&mut probe).await;
    }
    a.send_to("alice", Event::new().data("hi alice"))
        .await
        .unwrap();
    let got = next(&mut alice_on_b).await;
    assert_eq!(data(&got), "hi alice");
    assert_eq!(got.id(), None, "live only, no id");

    let _alice_on_b = support::disconnect_reaches_the_other_process(&a, &b, alice_on_b).await;

    let all = b.broadcast(Event::new().data("to all")).await.unwrap();
    assert!(all >= 1);
    assert_eq!(data(&next(&mut other_on_a).await), "to all");

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

    let strict = hub_with(&nats, "T4", |n| n, |b| b.auto_create(false)).await;
    support::a_topic_registry_without_auto_create(&strict).await;
}

#[tokio::test]
async fn a_retried_publish_with_the_same_key_is_stored_once() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let a = hub(&nats, "T5").await;
    let mut sub = a.subscribe("t").await.unwrap();
    let publish = || {
        a.publisher(&["t"])
            .idempotency_key("k1")
            .publish(Event::new().data("once"))
    };
    let first = publish().await.unwrap();
    let again = publish().await.unwrap();
    assert_eq!(first.id(), again.id());
    a.publish("t", Event::new().data("after")).await.unwrap();
    assert_eq!(take(&mut sub, 2).await, ["once", "after"]);
}

#[tokio::test]
async fn a_message_that_is_not_the_hubs_is_a_signalled_gap_and_the_rest_flows() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let a = hub(&nats, "T6").await;
    let mut sub = a.subscribe("t").await.unwrap();
    a.publish("t", Event::new().data("1")).await.unwrap();
    assert_eq!(take(&mut sub, 1).await, ["1"]);
    let raw = async_nats::connect(nats.url()).await.unwrap();
    raw.publish("t6.m", "garbage".into()).await.unwrap();
    raw.flush().await.unwrap();
    assert!(timeout(WAIT, sub.next()).await.unwrap().is_none());
    assert_eq!(a.stats().gaps, 1);
    let mut again = a.subscribe("t").await.unwrap();
    a.publish("t", Event::new().data("2")).await.unwrap();
    assert_eq!(take(&mut again, 1).await, ["2"]);
}

#[tokio::test]
async fn nats_down_means_clear_errors_and_a_restart_loses_nothing_acknowledged() {
    let Some(mut nats) = NatsServer::start().await else {
        return;
    };
    const N: usize = 200;
    let a = hub_with(&nats, "T7", |n| n, |b| b.subscriber_capacity(1024)).await;
    let b = hub_with(&nats, "T7", |n| n, |b| b.subscriber_capacity(1024)).await;
    let mut subs = [
        a.subscribe("s").await.unwrap(),
        b.subscribe("s").await.unwrap(),
        b.subscriber("s").topic("other").subscribe().await.unwrap(),
    ];
    let publisher = tokio::spawn({
        let a = a.clone();
        async move {
            let mut failures = 0;
            for i in 0..N {
                let key = format!("s-{i}");
                loop {
                    let publish = a.publisher(&["s"]).idempotency_key(&key);
                    match publish.publish(Event::new().data(i.to_string())).await {
                        Ok(_) => break,
                        Err(PublishError::Unavailable) => {
                            failures += 1;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(err) => panic!("{err}"),
                    }
                }
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            failures
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    nats.kill().await;
    // Down: fail fast, never hang.
    let started = std::time::Instant::now();
    let err = timeout(WAIT, a.subscriber("x").last_event_id(Some("1")).subscribe())
        .await
        .expect("subscribe gives up instead of hanging")
        .unwrap_err();
    assert_eq!(err, SubscribeError::Unavailable);
    assert!(started.elapsed() < Duration::from_secs(5));
    let err = NatsBroker::connect(&nats.url()).await.unwrap_err();
    assert!(err.to_string().contains(&nats.port().to_string()), "{err}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    nats.restart().await;
    let failures = timeout(Duration::from_secs(60), publisher)
        .await
        .expect("the publisher finishes after the restart")
        .unwrap();
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
        assert_eq!(seen, (0..N).collect::<Vec<_>>(), "subscriber {s}");
    }
}

#[tokio::test]
async fn one_connection_per_process_whatever_the_clients_or_topics() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let a = hub(&nats, "T8").await;
    let mut subs = Vec::new();
    for i in 0..200 {
        subs.push(a.subscribe(&format!("topic/{}", i % 20)).await.unwrap());
    }
    for i in 0..20 {
        a.publish(&format!("topic/{i}"), Event::new().data("x"))
            .await
            .unwrap();
    }
    for sub in &mut subs {
        next(sub).await;
    }
    assert_eq!(nats.connections().await, 1);
}

/// The multi-topic resume stress test (shared with Redis) on two processes on NATS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_multi_topic_subscribers_on_two_processes_get_every_event_once_in_order() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let small = |b: HubBuilder| b.history_events(20).subscriber_capacity(64);
    let hubs = [
        hub_with(&nats, "C1", |n| n, small).await,
        hub_with(&nats, "C1", |n| n, small).await,
    ];
    support::stress::resuming_multi_topic_subscribers(hubs).await;
}

/// An id from another stream (another hub on the same NATS) is history-lost, never misread as
/// one of this stream's: ids are offset by each stream's creation time.
#[tokio::test]
async fn an_id_from_another_stream_is_history_lost() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let one = hub(&nats, "T9A").await;
    // A millisecond apart at least: the two streams' ids do not meet.
    one.publish("t", Event::new().data("in A")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let two = hub(&nats, "T9B").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let sent = two
            .publish("t", Event::new().data(i.to_string()))
            .await
            .unwrap();
        ids.push(sent.id().unwrap().to_owned());
    }
    let from_a = one.publish("t", Event::new().data("a")).await.unwrap();
    for id in [from_a.id().unwrap(), "1", "2"] {
        let sub = two
            .subscriber("t")
            .last_event_id(Some(id))
            .on_unknown_id(UnknownId::LiveOnly)
            .subscribe()
            .await
            .unwrap();
        assert_eq!(sub.replay(), Replay::HistoryLost, "{id}");
    }
    let sub = two
        .subscriber("t")
        .last_event_id(Some(&ids[2]))
        .subscribe()
        .await
        .unwrap();
    assert_eq!(sub.replay(), Replay::Complete);
    assert_eq!(sub.backlog_len(), 2);
}

/// Publishes until NATS answers (it may still be starting after a restart), with `data` as the
/// idempotency key (a retry after a lost answer is stored once); the id.
async fn publish_when_up(hub: &Hub, data: &str) -> u64 {
    for _ in 0..100 {
        let publisher = hub.publisher(&["t"]).idempotency_key(data);
        match publisher.publish(Event::new().data(data)).await {
            Ok(sent) => return sent.id().unwrap().parse().unwrap(),
            Err(PublishError::Unavailable) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(err) => panic!("{err}"),
        }
    }
    panic!("NATS did not come back");
}

/// Found by `examples/chaos.rs`: nats-server (2.9) reports, after a restart, another `created`
/// time for a stream whose configuration was updated since the previous restart (every hub
/// updates it when it starts). Ids were offset by that time, so a process started after two
/// restarts numbered the same messages differently from the others: clients moving between
/// them saw ids jump, go back and repeat. The offset is now written in the stream.
#[tokio::test]
async fn a_process_started_after_nats_restarts_numbers_events_like_the_others() {
    let Some(mut nats) = NatsServer::start().await else {
        return;
    };
    let first = hub(&nats, "T11").await;
    let one = publish_when_up(&first, "1").await;
    nats.restart().await;
    // A process starting between the restarts updates the stream's configuration.
    let second = hub(&nats, "T11").await;
    let two = publish_when_up(&second, "2").await;
    nats.restart().await;
    let third = hub(&nats, "T11").await;
    let three = publish_when_up(&third, "3").await;
    let four = publish_when_up(&first, "4").await;
    assert_eq!([two, three, four], [one + 1, one + 2, one + 3]);
    // And the late process resumes the first one's id exactly.
    let sub = third
        .subscriber("t")
        .last_event_id(Some(&one.to_string()))
        .subscribe()
        .await
        .unwrap();
    assert_eq!(sub.replay(), Replay::Complete);
    assert_eq!(sub.backlog_len(), 3);
}

#[tokio::test]
async fn publisher_ids_resume_on_the_other_process() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let a = hub(&nats, "PID").await;
    let b = hub(&nats, "PID").await;
    support::publisher_ids_resume_on_the_other_process(&a, &b).await;
}

#[tokio::test]
async fn presence_spans_processes_and_expires_the_silent() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let interval = |b: HubBuilder| b.presence_interval(Duration::from_millis(250));
    let a = hub_with(&nats, "PR", |b| b, interval).await;
    let b = hub_with(&nats, "PR", |b| b, interval).await;
    let c = hub_with(&nats, "PR", |b| b, interval).await;
    let raw = async_nats::connect(nats.url()).await.unwrap();
    let raw = &raw;
    support::presence_spans_processes_and_expires_the_silent(&a, &b, &c, |bytes| async move {
        raw.publish("pr.send", bytes.into()).await.unwrap();
        raw.flush().await.unwrap();
    })
    .await;
}

/// NATS comes back without messages it had acknowledged (`copy`: an older store; `None`: an
/// empty one). The live subscription ends (a signalled gap, never a silent one), an id from
/// before is `history-lost`, and events published now reach a new subscription with ids
/// after every id issued before (none reused).
async fn comes_back_without(nats: &mut NatsServer, stream: &str, lose_everything: bool) {
    let a = hub(nats, stream).await;
    // With everything lost, a process that had the stream before and did not make it again
    // must not keep the old one's numbering (every process finds a new stream the same way,
    // whichever checks first; with an older store, only `a` runs through the window).
    let c = hub(nats, stream).await;
    if lose_everything {
        c.publish("other", Event::new().data("c")).await.unwrap();
    }
    let mut live = a.subscribe("t").await.unwrap();
    for data in ["1", "2", "3"] {
        a.publish("t", Event::new().data(data)).await.unwrap();
    }
    assert_eq!(take(&mut live, 3).await, ["1", "2", "3"]);
    // `a` uses the id index before NATS goes (its view of the index is then warm).
    a.publish("other", Event::new().id("urn:before").data("x"))
        .await
        .unwrap();
    let copy = nats.kill_and_copy_store().await;
    nats.start_again().await;
    publish_when_up(&a, "4").await;
    let five_id = publish_when_up(&a, "5").await;
    assert_eq!(take(&mut live, 2).await, ["4", "5"]);
    let five = five_id.to_string();

    nats.restart_with_store((!lose_everything).then_some(&*copy))
        .await;
    // The gap is told: the live stream ends (it does not stay open, missing what follows).
    let end = timeout(Duration::from_secs(15), live.next())
        .await
        .expect("the live stream ends within 15 s");
    assert!(end.is_none(), "{end:?}");
    // A second process, started now (with `a` alone in the window above, which process
    // checks first is not left to chance).
    let b = hub(nats, stream).await;
    let six_id = publish_when_up(&b, "6").await;
    assert!(
        six_id > five_id,
        "no id issued twice: {six_id} after {five_id}"
    );
    for hub in [&a, &b] {
        let mut resumed = hub
            .subscriber("t")
            .last_event_id(Some(&five))
            .on_unknown_id(UnknownId::LiveOnly)
            .subscribe()
            .await
            .unwrap();
        match resumed.replay() {
            // From an older store, `b` (started after `a` moved the stream past "5") rightly
            // finds nothing lost after "5": "6" follows (replayed, or live once its reader
            // delivers it). `a`, which saw the stream go back, says `history-lost`.
            Replay::Complete if !lose_everything => {
                assert_eq!(take(&mut resumed, 1).await, ["6"]);
            }
            replay => assert_eq!(replay, Replay::HistoryLost),
        }
    }
    // New events flow on both processes (not skipped as already seen), numbered alike by both
    // (the one that did not remake the stream does not keep the old offset), and resumable
    // on either from the other's id.
    let mut again_a = a.subscribe("t").await.unwrap();
    let mut again_b = b.subscribe("t").await.unwrap();
    let seven_id = publish_when_up(&a, "7").await;
    assert_eq!(seven_id, six_id + 1, "both number the stream alike");
    for again in [&mut again_a, &mut again_b] {
        // "6" too, when this process's reader delivered it after the subscription joined.
        let mut got = take(again, 1).await;
        if got == ["6"] {
            got = take(again, 1).await;
        }
        assert_eq!(got, ["7"]);
    }
    for hub in [&a, &b] {
        let resumed = hub
            .subscriber("t")
            .last_event_id(Some(&six_id.to_string()))
            .subscribe()
            .await
            .unwrap();
        assert_eq!(resumed.replay(), Replay::Complete);
        assert_eq!(resumed.backlog_len(), 1);
    }
    if lose_everything {
        let from_c = publish_when_up(&c, "8 from c").await;
        assert_eq!(
            from_c,
            seven_id + 1,
            "c numbers the new stream like a and b"
        );
    }
    // The publisher's id index works again too (it is a stream NATS may have lost as well).
    a.publish("t", Event::new().id("urn:after").data("8"))
        .await
        .unwrap();
    a.publish("t", Event::new().data("9")).await.unwrap();
    for hub in [&a, &b] {
        let mut resumed = hub
            .subscriber("t")
            .last_event_id(Some("urn:after"))
            .subscribe()
            .await
            .unwrap();
        assert_eq!(resumed.replay(), Replay::Complete);
        assert_eq!(take(&mut resumed, 1).await, ["9"]);
    }
}

#[tokio::test]
async fn nats_back_with_an_older_store_is_a_signalled_gap_and_reuses_no_id() {
    let Some(mut nats) = NatsServer::start().await else {
        return;
    };
    comes_back_without(&mut nats, "OLDER", false).await;
}

#[tokio::test]
async fn nats_back_with_an_empty_store_is_a_signalled_gap_and_works_again() {
    let Some(mut nats) = NatsServer::start().await else {
        return;
    };
    comes_back_without(&mut nats, "EMPTY", true).await;
}
