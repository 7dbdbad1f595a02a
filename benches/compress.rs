//! Per-event compression (`SseLayer::compression`) on chat-like JSON events, each event its
//! own frame (as when events come one at a time): CPU per event through the layer's body, and
//! bytes on the wire (printed once per encoding). `cargo bench --bench compress`.

use std::{
    convert::Infallible,
    pin::Pin,
    task::{Context, Poll},
};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures_core::Stream;
use http::{Request, Response};
use http_body_util::BodyExt;
use tower::{ServiceBuilder, ServiceExt};
use tower_sse::{Compression, Event, EventStream, SseLayer};

const N: usize = 1000;

/// `N` chat messages, one per poll: every other poll is `Pending` (after waking itself), so
/// the body writes each event as its own frame instead of coalescing them.
struct OneAtATime {
    n: usize,
    ready: bool,
}

impl Stream for OneAtATime {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        if self.n == N {
            return Poll::Ready(None);
        }
        if !self.ready {
            self.ready = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.ready = false;
        let n = self.n;
        self.n += 1;
        Poll::Ready(Some(
            Event::new()
                .id((10_000 + n).to_string())
                .event("message")
                .json_data(&serde_json::json!({
                    "room": "lobby",
                    "user": format!("user{}", n % 7),
                    "text": format!("hello, everyone in the room: message {n}"),
                    "ts": 1_795_000_000_000u64 + n as u64,
                }))
                .unwrap(),
        ))
    }
}

/// Bytes of event stream (plain) and bytes on the wire for one response of `N` events.
async fn run(accept: &str) -> (usize, usize) {
    let service = ServiceBuilder::new()
        .layer(SseLayer::new().compression(Compression::new()))
        .service_fn(|_req: Request<()>| async {
            Ok::<_, Infallible>(Response::new(EventStream::new(OneAtATime {
                n: 0,
                ready: true,
            })))
        });
    let request = Request::get("/")
        .header("accept-encoding", accept)
        .body(())
        .unwrap();
    let body = service.oneshot(request).await.unwrap().into_body();
    let mut body = std::pin::pin!(body);
    let (mut frames, mut wire) = (0, 0);
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            frames += 1;
            wire += data.len();
        }
    }
    // One frame per event, and the compressed stream's ending (its trailer) once it ends.
    let trailer = usize::from(accept != "identity");
    assert_eq!(frames, N + trailer, "one frame per event");
    (frames, wire)
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let (_, plain) = rt.block_on(run("identity"));
    let mut group = c.benchmark_group("compress/chat_json_event");
    group.throughput(Throughput::Elements(N as u64));
    for encoding in ["identity", "gzip", "deflate", "br", "zstd"] {
        let (_, wire) = rt.block_on(run(encoding));
        println!(
            "compress/{encoding}: {plain} bytes of events -> {wire} on the wire ({:.1} %, {:.1} B/event)",
            100.0 * wire as f64 / plain as f64,
            wire as f64 / N as f64
        );
        group.bench_function(encoding, |b| b.iter(|| rt.block_on(run(encoding))));
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
