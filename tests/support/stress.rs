//! The multi-topic resume stress test, shared by every broker's tests.

#![allow(dead_code)]

use std::{collections::HashMap, time::Duration};

use futures_util::StreamExt;
use tokio::time::timeout;
use tower_sse::{
    Event,
    hub::{Hub, Pattern},
    replay::Replay,
};

use super::data;

const WAIT: Duration = Duration::from_secs(10);

/// Several publishers into overlapping topics on two processes; subscribers of different sets
/// of topics and patterns drop their stream at random and resume on either process with their
/// last id. Each must end with exactly the events of its topics, in hub order, each once.
pub async fn resuming_multi_topic_subscribers(hubs: [Hub; 2]) {
    const TOPICS: [&str; 5] = ["rooms/1", "rooms/2", "rooms/3", "dm/alice", "dm/bob"];
    const PER_PUBLISHER: usize = 150;
    let sets: Vec<(Vec<&'static str>, Vec<&'static str>)> = vec![
        (vec!["rooms/1", "dm/alice"], vec![]),
        (vec!["rooms/2", "rooms/3", "dm/bob"], vec![]),
        (vec![], vec!["rooms/*"]),
        (vec!["dm/alice"], vec!["rooms/*"]),
        (TOPICS.to_vec(), vec![]),
    ];
    let mut ready = vec![];
    let subscribers: Vec<_> = sets
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, (topics, patterns))| {
            let hubs = hubs.clone();
            let (subscribed, rx) = tokio::sync::oneshot::channel();
            ready.push(rx);
            let mut subscribed = Some(subscribed);
            tokio::spawn(async move {
                let mut rng = 0x9E37_79B9_u64.wrapping_mul(i as u64 + 1) | 1;
                let mut seen: Vec<(u64, String)> = vec![];
                let mut last: Option<String> = None;
                loop {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let hub = &hubs[(rng % 2) as usize];
                    let mut builder = hub.subscription();
                    for topic in &topics {
                        builder = builder.topic(topic);
                    }
                    for pattern in &patterns {
                        builder = builder.pattern(Pattern::glob(pattern).unwrap());
                    }
                    let mut sub = builder
                        .last_event_id(last.as_deref())
                        .subscribe()
                        .await
                        .unwrap();
                    if let Some(subscribed) = subscribed.take() {
                        let _ = subscribed.send(());
                    }
                    if last.is_some() {
                        assert_eq!(sub.replay(), Replay::Complete);
                    }
                    let keep = 1 + (rng >> 20) % 40;
                    for _ in 0..keep {
                        let Ok(Some(event)) = timeout(WAIT, sub.next()).await else {
                            break; // cut (slow) or quiet: resume
                        };
                        if data(&event) == "end" {
                            return seen;
                        }
                        let id = event.id().unwrap().to_owned();
                        seen.push((id.parse().unwrap(), data(&event)));
                        last = Some(id);
                    }
                    drop(sub);
                    tokio::time::sleep(Duration::from_millis((rng >> 30) % 15)).await;
                }
            })
        })
        .collect();
    for rx in ready {
        rx.await.unwrap();
    }
    let publishers: Vec<_> = (0..3u64)
        .map(|p| {
            let hub = hubs[(p % 2) as usize].clone();
            tokio::spawn(async move {
                let mut rng = 0xDEAD_BEEF_u64.wrapping_mul(p + 1) | 1;
                let mut sent = vec![];
                for n in 0..PER_PUBLISHER {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let first = TOPICS[(rng % 5) as usize];
                    let second = TOPICS[((rng >> 8) % 5) as usize];
                    let text = format!("p{p}-{n}");
                    let to: Vec<&str> = if rng % 3 == 0 {
                        vec![first, second]
                    } else {
                        vec![first]
                    };
                    let encoded = hub
                        .publish_many(&to, Event::new().data(text.clone()))
                        .await
                        .unwrap();
                    sent.push((encoded.id().unwrap().parse::<u64>().unwrap(), text, to));
                }
                sent
            })
        })
        .collect();
    let mut published: Vec<(u64, String, Vec<&str>)> = vec![];
    for p in publishers {
        published.extend(p.await.unwrap());
    }
    published.sort_by_key(|(seq, _, _)| *seq);
    hubs[0].broadcast(Event::new().data("end")).await.unwrap();
    for (subscriber, (topics, patterns)) in subscribers.into_iter().zip(&sets) {
        let seen = timeout(Duration::from_secs(60), subscriber)
            .await
            .expect("a subscriber never went quiet")
            .unwrap();
        let follows = |topic: &str| {
            topics.contains(&topic)
                || patterns
                    .iter()
                    .any(|p| tower_sse::hub::Matcher::matches(&Pattern::glob(p).unwrap(), topic))
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
        assert_eq!(seen, want, "{topics:?} {patterns:?}");
    }
}
