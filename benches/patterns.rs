//! The cost of patterns and of subscriptions to several topics, in memory.
//! `cargo bench --bench patterns`.
//!
//! - `match/distinct/10000`: one publish, with 10,000 pattern subscriptions that all have
//!   different patterns (`glob:rooms/<i>/*`) and none matching: the per-publish cost of
//!   matching against every distinct pattern (criterion's time is per publish).
//! - `match/shared/10000`: one publish matched by one pattern that 10,000 subscriptions share
//!   (one match, one ring), each subscription then yields the event: per delivered event.
//! - `merge/<k>`: one publish to one of `k` topics, delivered to 1,000 subscriptions that
//!   each follow all `k` topics (the k-way merge), per delivered event; `k = 1` is the
//!   single-topic fast path, for comparison.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures_util::{FutureExt, StreamExt};
use tower_sse::{
    Event,
    hub::{Hub, Pattern, Subscription},
};

fn publish(hub: &Hub, topic: &str, payload: &str) {
    hub.publish(topic, Event::new().data(payload))
        .now_or_never()
        .expect("an in-memory publish does not wait")
        .expect("publish");
}

fn drain_one(subs: &mut [Subscription]) {
    for sub in subs {
        let event = sub.next().now_or_never().flatten().expect("delivered");
        black_box(event.len());
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let payload: &'static str = "p".repeat(128).leak();
    let mut group = c.benchmark_group("hub_patterns");

    // Distinct patterns, none of which matches: pure matching cost per publish.
    let hub = Hub::builder().history_events(16).build();
    let subs: Vec<Subscription> = (0..10_000)
        .map(|i| {
            let pattern = Pattern::glob(&format!("rooms/{i}/*")).unwrap();
            rt.block_on(hub.subscription().pattern(pattern).subscribe())
                .unwrap()
        })
        .collect();
    group.throughput(Throughput::Elements(1));
    group.bench_function(BenchmarkId::new("match/distinct", 10_000), |b| {
        b.iter(|| publish(&hub, "lobby/1", black_box(payload)))
    });
    drop(subs);

    // One pattern shared by every subscription.
    let hub = Hub::builder().history_events(16).build();
    let mut subs: Vec<Subscription> = (0..10_000)
        .map(|_| {
            let pattern = Pattern::glob("rooms/*").unwrap();
            rt.block_on(hub.subscription().pattern(pattern).subscribe())
                .unwrap()
        })
        .collect();
    group.throughput(Throughput::Elements(10_000));
    group.bench_function(BenchmarkId::new("match/shared", 10_000), |b| {
        b.iter(|| {
            publish(&hub, "rooms/1", black_box(payload));
            drain_one(&mut subs);
        })
    });
    drop(subs);

    // Subscriptions to k topics each.
    for k in [1, 2, 4, 8] {
        let hub = Hub::builder().history_events(16).build();
        let topics: Vec<String> = (0..k).map(|i| format!("t{i}")).collect();
        let mut subs: Vec<Subscription> = (0..1_000)
            .map(|_| {
                let mut builder = hub.subscription();
                for topic in &topics {
                    builder = builder.topic(topic);
                }
                rt.block_on(builder.subscribe()).unwrap()
            })
            .collect();
        let mut next = 0;
        group.throughput(Throughput::Elements(1_000));
        group.bench_function(BenchmarkId::new("merge", k), |b| {
            b.iter(|| {
                next = (next + 1) % k;
                publish(&hub, &topics[next], black_box(payload));
                drain_one(&mut subs);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
