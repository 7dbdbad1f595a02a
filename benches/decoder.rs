//! Decoder throughput: tower-sse's `client::Decoder` against `eventsource-stream`, same run.
//!
//! Two inputs, each fed in fixed-size chunks as a network would deliver them:
//! - many small events (`id`, `event`, one `data` line of ~40 B) in 4 KiB chunks;
//! - one large event of 1 MiB in 100-byte `data` lines, in 1 KiB chunks (a parser that
//!   re-scans its buffer per chunk is quadratic here);
//! - one 2 MiB `data` line in 1024 chunks (the same, within one line).
//!
//! `cargo bench --bench decoder --features client`. Throughput is reported in bytes/s.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use eventsource_stream::Eventsource;
use futures_util::{StreamExt, stream};
use tower_sse::client::{Decoder, Frame};

fn chunks(input: &[u8], size: usize) -> Vec<Bytes> {
    input.chunks(size).map(Bytes::copy_from_slice).collect()
}

fn small_events() -> Vec<u8> {
    let mut out = Vec::new();
    for n in 0..10_000 {
        out.extend_from_slice(
            format!("id: {n}\nevent: message\ndata: {{\"user\":\"alice\",\"n\":{n:>8}}}\n\n")
                .as_bytes(),
        );
    }
    out
}

fn large_event() -> Vec<u8> {
    let line = format!("data: {}\n", "x".repeat(94));
    let mut out = line.repeat((1 << 20) / line.len());
    out.push('\n');
    out.into_bytes()
}

fn huge_line() -> Vec<u8> {
    let mut out = b"data: ".to_vec();
    out.extend(std::iter::repeat_n(b'y', 2 << 20));
    out.extend_from_slice(b"\n\n");
    out
}

fn ours(chunks: &[Bytes]) -> usize {
    // Above the 1 MiB default line limit, so the huge-line case is decoded, not refused.
    let mut decoder = Decoder::new()
        .with_max_line_length(8 << 20)
        .with_max_event_size(8 << 20);
    let mut events = 0;
    for chunk in chunks {
        decoder.feed(chunk);
        while let Some(frame) = decoder.decode().unwrap() {
            if let Frame::Event(event) = frame {
                events += black_box(event).data().len().min(1);
            }
        }
    }
    events
}

fn theirs(chunks: &[Bytes]) -> usize {
    let input = stream::iter(
        chunks
            .iter()
            .cloned()
            .map(Ok::<_, std::convert::Infallible>),
    );
    let mut events = input.eventsource();
    futures_util::FutureExt::now_or_never(async {
        let mut n = 0;
        while let Some(event) = events.next().await {
            n += black_box(event.unwrap()).data.len().min(1);
        }
        n
    })
    .expect("all input is ready")
}

fn bench(c: &mut Criterion) {
    let cases = [
        ("small_events_4KiB_chunks", small_events(), 4096, 10_000),
        ("one_1MiB_event_1KiB_chunks", large_event(), 1024, 1),
        (
            "one_2MiB_line_1024_chunks",
            huge_line(),
            (2 << 20) / 1024,
            1,
        ),
    ];
    for (name, input, chunk, expect) in cases {
        let chunks = chunks(&input, chunk);
        assert_eq!(ours(&chunks), expect);
        assert_eq!(theirs(&chunks), expect);
        let mut group = c.benchmark_group(format!("decode/{name}"));
        group.throughput(Throughput::Bytes(input.len() as u64));
        group.sample_size(10);
        group.bench_function("tower-sse", |b| b.iter(|| ours(&chunks)));
        group.bench_function("eventsource-stream", |b| b.iter(|| theirs(&chunks)));
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
