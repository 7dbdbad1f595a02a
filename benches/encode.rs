//! Encode + drain through the response body: tower-sse against `axum::response::sse`, same run.
//!
//! Each iteration builds N events from the same inputs and drains them through the crate's
//! body (tower-sse: `SseBody`; axum: `Sse`'s response body), so the number is what one event
//! costs from builder call to bytes handed to hyper. `cargo bench --bench encode`.

use std::{convert::Infallible, hint::black_box, pin::pin};

use axum::response::IntoResponse;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures_util::{StreamExt, stream};
use http_body_util::BodyExt;
use serde::Serialize;

const N: usize = 1000;

#[derive(Serialize)]
struct Msg<'a> {
    room: &'a str,
    user: &'a str,
    text: &'a str,
    ts: u64,
}

const MSG: Msg<'static> = Msg {
    room: "lobby",
    user: "alice",
    text: "hello, everyone in the room",
    ts: 1_795_000_000_000,
};

fn drain<B>(body: B) -> usize
where
    B: http_body::Body<Data = bytes::Bytes>,
    B::Error: std::fmt::Debug,
{
    let mut body = pin!(body);
    let mut n = 0;
    futures_util::FutureExt::now_or_never(async {
        while let Some(frame) = body.frame().await {
            n += frame.unwrap().into_data().map_or(0, |d| d.len());
        }
    })
    .expect("every event is ready");
    n
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    // 'static, as axum's response body needs.
    let line: &'static str = "x".repeat(100).leak();
    let ten_lines: &'static str = vec!["y".repeat(50); 10].join("\n").leak();

    let cases: [(&str, &'static str); 2] = [("one_line_100B", line), ("ten_lines_50B", ten_lines)];
    for (name, data) in cases {
        let mut group = c.benchmark_group(format!("encode_drain/{name}"));
        group.throughput(Throughput::Elements(N as u64));
        group.bench_function("tower-sse", |b| {
            b.iter(|| {
                let events =
                    stream::iter(0..N).map(|_| tower_sse::Event::new().data(black_box(data)));
                drain(tower_sse::SseBody::new(events))
            })
        });
        group.bench_function("axum", |b| {
            b.iter(|| {
                let events = stream::iter(0..N).map(move |_| {
                    Ok::<_, Infallible>(axum::response::sse::Event::default().data(black_box(data)))
                });
                drain(
                    axum::response::sse::Sse::new(events)
                        .into_response()
                        .into_body(),
                )
            })
        });
        group.finish();
    }

    let mut group = c.benchmark_group("encode_drain/json");
    group.throughput(Throughput::Elements(N as u64));
    group.bench_function("tower-sse", |b| {
        b.iter(|| {
            let events = stream::iter(0..N)
                .map(|_| tower_sse::Event::new().json_data(black_box(&MSG)).unwrap());
            drain(tower_sse::SseBody::new(events))
        })
    });
    group.bench_function("axum", |b| {
        b.iter(|| {
            let events = stream::iter(0..N).map(|_| {
                Ok::<_, Infallible>(
                    axum::response::sse::Event::default()
                        .json_data(black_box(&MSG))
                        .unwrap(),
                )
            });
            drain(
                axum::response::sse::Sse::new(events)
                    .into_response()
                    .into_body(),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
