//! Hub fan-out: one publish delivered to 1,000 and 10,000 subscribers, against the idiomatic
//! axum way (`tokio::sync::broadcast` of the payload + `axum::response::sse` per subscriber),
//! same run. `cargo bench --bench fanout`.
//!
//! One iteration = one publish and its delivery to every subscriber, so criterion's time is the
//! cost of one publish and time / subscribers the cost of one delivered event (criterion prints
//! the latter as throughput, in delivered events per second). Cases:
//!
//! - `tower-sse/subscription`: `Hub::publish`, then each `Subscription` yields the event
//!   (`StreamExt::next`): the hub alone.
//! - `tower-sse/body`: the same, but each subscriber is the response body a connection polls
//!   (`SseBody` over the `Subscription`, 15 s keep-alive): poll a frame, then poll again until
//!   it is parked, as hyper does.
//! - `axum/body`: `broadcast::Sender<String>::send`, and each subscriber is axum's `Sse` body
//!   over a `BroadcastStream` (clone the `String`, build an `axum` `Event`, encode it; 15 s
//!   keep-alive), polled the same way.
//!
//! Every poll uses a no-op waker: nothing is ever woken for real, but parked bodies are
//! registered with their channel, so a publish pays for waking them, as in a server.

use std::{
    convert::Infallible,
    hint::black_box,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use axum::response::{
    IntoResponse,
    sse::{Event as AxumEvent, KeepAlive, Sse},
};
use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures_util::{FutureExt, StreamExt, task::noop_waker_ref};
use http_body::Body;
use tokio::{runtime::Runtime, sync::broadcast};
use tokio_stream::wrappers::BroadcastStream;
use tower_sse::{
    Event, SseBody,
    hub::{Hub, Subscription},
};

const TOPIC: &str = "bench";
/// Ring / channel capacity: the hub's default.
const CAPACITY: usize = 256;

/// Subscribes `n` clients to the topic. (The hub's API is used here and in [`publish_one`]
/// only.)
fn subscribe_all(rt: &Runtime, hub: &Hub, n: usize) -> Vec<Subscription> {
    (0..n)
        .map(|_| rt.block_on(hub.subscribe(TOPIC)).expect("subscribe"))
        .collect()
}

/// Publishes one event with `payload` as its data (the hub assigns the id).
fn publish_one(hub: &Hub, payload: &str) {
    hub.publish(TOPIC, Event::new().data(payload))
        .now_or_never()
        .expect("an in-memory publish does not wait")
        .expect("publish");
}

/// Polls `body` for its next frame, which must be ready; returns its length.
fn frame<B: Body<Data = Bytes, Error: std::fmt::Debug>>(
    body: Pin<&mut B>,
    cx: &mut Context<'_>,
) -> usize {
    match body.poll_frame(cx) {
        Poll::Ready(Some(Ok(frame))) => frame.into_data().expect("a data frame").len(),
        other => panic!(
            "no frame ready: {:?}",
            other.map(|f| f.map(|r| r.map(|_| ())))
        ),
    }
}

/// Polls `body` once more, as hyper does after a frame: nothing is ready, so it parks.
fn park<B: Body<Data = Bytes, Error: std::fmt::Debug>>(body: Pin<&mut B>, cx: &mut Context<'_>) {
    assert!(
        body.poll_frame(cx).is_pending(),
        "only one event was published"
    );
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let payload: &'static str = "p".repeat(128).leak();
    let mut cx = Context::from_waker(noop_waker_ref());

    for n in [1_000, 10_000] {
        let mut group = c.benchmark_group("hub_fanout");
        group.throughput(Throughput::Elements(n as u64));

        let hub = Hub::builder().subscriber_capacity(CAPACITY).build();
        let mut subs = subscribe_all(&rt, &hub, n);
        group.bench_function(BenchmarkId::new("tower-sse/subscription", n), |b| {
            b.iter(|| {
                publish_one(&hub, black_box(payload));
                for sub in &mut subs {
                    let event = sub.next().now_or_never().flatten().expect("delivered");
                    black_box(event.len());
                }
            })
        });
        drop(subs);

        let mut bodies: Vec<_> = subscribe_all(&rt, &hub, n)
            .into_iter()
            .map(|sub| Box::pin(SseBody::new(sub)))
            .collect();
        group.bench_function(BenchmarkId::new("tower-sse/body", n), |b| {
            b.iter(|| {
                publish_one(&hub, black_box(payload));
                for body in &mut bodies {
                    black_box(frame(body.as_mut(), &mut cx));
                    park(body.as_mut(), &mut cx);
                }
            })
        });
        drop(bodies);

        let (tx, _) = broadcast::channel::<String>(CAPACITY);
        let mut bodies: Vec<_> = (0..n)
            .map(|_| {
                let events = BroadcastStream::new(tx.subscribe()).map(|payload| {
                    Ok::<_, Infallible>(AxumEvent::default().data(payload.expect("not lagged")))
                });
                Box::pin(
                    Sse::new(events)
                        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
                        .into_response()
                        .into_body(),
                )
            })
            .collect();
        group.bench_function(BenchmarkId::new("axum/body", n), |b| {
            b.iter(|| {
                tx.send(black_box(payload).to_owned()).expect("subscribed");
                for body in &mut bodies {
                    black_box(frame(body.as_mut(), &mut cx));
                    park(body.as_mut(), &mut cx);
                }
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
