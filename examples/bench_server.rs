//! The load-test server of issue 6, on tower-sse: one [`Hub`] topic, served through
//! [`SseLayer`]. `examples/bench_peer_axum.rs` is the same API written the idiomatic axum way;
//! `examples/loadgen.rs` drives either and `benches/run.sh` compares them.
//!
//! ```text
//! cargo build --release --example bench_server
//! PORT=3100 taskset -c 0 target/release/examples/bench_server
//! ```
//!
//! Environment: `PORT` (default 3100; binds `127.0.0.1:$PORT`; `0` picks a free port),
//! `CAPACITY` (the topic's live
//! ring, default 4096 events), `NODELAY` (`1`: set `TCP_NODELAY` on accepted connections;
//! default off, as `axum::serve` leaves it), `WRITE_INTERVAL_MS`
//! ([`SseLayer::min_write_interval`], default 0: every event is written as soon as it is
//! ready, as the peer does), `SERVE` (default `tower`: [`tower_sse::serve`], the crate's
//! recommended server loop, HTTP/1.1 and h2c with one shared `Router`, header-read and
//! write-stall timeouts; `NODELAY` does not apply to it; `axum`: `axum::serve`, as the peer
//! does, what `benches/run.sh` uses for the like-for-like comparison; `http1`: HTTP/1.1
//! straight on hyper with one shared `Router`, see `serve_http1`), `LEAN` (`SERVE=tower`
//! only; default `1`: event streams over HTTP/1.1 are written by the crate's lean writer;
//! `0`: by hyper, see [`tower_sse::Serve::lean_event_streams`]), `REDIS_URL` (the hub on Redis
//! Streams, so that several servers share the topic: a publish to any of them reaches the
//! streams of all; `benches/c100k.sh` uses it to get past one process's file limit; default:
//! the in-memory hub).
//!
//! - `GET /events`: an SSE stream subscribed to the topic, keep-alive comment every 15 s.
//!   Honours `Last-Event-ID` from the hub's history (default bounds: 1000 events / 1 MiB).
//! - `POST /publish`: the raw body (UTF-8) is broadcast as **one** event, one `data:` line per
//!   body line, with an id the hub assigns (`<epoch>-<seq>`, `seq` increasing by one per
//!   publish since there is a single topic); answers `204`, or `400` for a body that is not
//!   UTF-8.
//! - `GET /hold`: not SSE and not behind `SseLayer`: a chunked `200` whose body never sends
//!   anything. Holding idle connections on it measures what hyper and axum cost per
//!   connection, the baseline for what `GET /events` adds (S2).
//!
//! Prints `listening on http://127.0.0.1:PORT` once bound.
//!
//! # Choices
//!
//! - **Runtime**: `current_thread`. The benchmark pins each server to one core (`taskset -c 0`);
//!   a multi-thread runtime there would only add cross-thread wake-ups on that single core. The
//!   axum peer uses the same flavor, so the comparison is like for like.
//! - **Ring capacity** (`CAPACITY`, default 4096, the same as the peer's `broadcast` channel):
//!   large enough that no client falls behind in S1 (200 msg/s) and, on this machine, in S3
//!   (publishers flat out), where the publish handler and 100 streams share one core. A stream
//!   that still falls more than that behind is disconnected by the hub; the load generator
//!   counts the events it then misses as gaps.
//! - **No write-stall timeout** (`io::WriteTimeoutListener`): the peer has none either, and the
//!   load generator always reads.

use std::{net::SocketAddr, time::Duration};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
    serve::ListenerExt,
};
use tokio::net::TcpListener;
use tower_sse::{
    Event, LastEventId, SseLayer,
    hub::{Hub, RedisBackend},
};

/// The single topic every stream subscribes to.
const TOPIC: &str = "bench";
/// Keep-alive comment interval.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Default live ring capacity (events), see the module docs.
const DEFAULT_CAPACITY: usize = 4096;

/// `GET /events`: the topic, live (after `Last-Event-ID` when given).
async fn events(State(hub): State<Hub>, last: Option<LastEventId>) -> Response {
    let last = last.as_ref().map(LastEventId::as_str);
    // Hub call 1 of 2 (subscribe).
    match hub.subscriber(TOPIC).last_event_id(last).subscribe().await {
        Ok(subscription) => subscription.into_response(),
        Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

/// `POST /publish`: the body as one event, `204`.
async fn publish(State(hub): State<Hub>, body: Bytes) -> StatusCode {
    let Ok(text) = std::str::from_utf8(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    // Hub call 2 of 2 (publish); the hub assigns the incrementing id.
    match hub.publish(TOPIC, Event::new().data(text)).await {
        Ok(_) => StatusCode::NO_CONTENT,
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// `GET /hold`: a body that stays open and idle.
async fn hold() -> Body {
    Body::from_stream(futures_util::stream::pending::<Result<Bytes, std::io::Error>>())
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let port: u16 = env_or("PORT", 3100);
    let capacity: usize = env_or("CAPACITY", DEFAULT_CAPACITY);
    let builder = Hub::builder().subscriber_capacity(capacity);
    let hub = match std::env::var("REDIS_URL") {
        Ok(url) => match RedisBackend::connect(&url).await {
            Ok(redis) => builder.redis(redis).build(),
            Err(err) => {
                eprintln!("error: REDIS_URL={url:?}: {err}");
                std::process::exit(2);
            }
        },
        Err(_) => builder.build(),
    };
    let app = Router::new()
        .route("/events", get(events))
        .route("/publish", post(publish))
        .with_state(hub)
        .layer(
            SseLayer::new()
                .keep_alive(KEEP_ALIVE)
                .min_write_interval(Duration::from_millis(env_or("WRITE_INTERVAL_MS", 0))),
        )
        .route("/hold", get(hold));
    let nodelay = env_or("NODELAY", 0u8) == 1;
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    println!("listening on http://{}", listener.local_addr()?);
    match std::env::var("SERVE").as_deref() {
        Ok("http1") => return serve_http1(listener, app, nodelay).await,
        Ok("axum") => {}
        Ok("tower") | Err(_) => {
            return tower_sse::serve(listener, app)
                .lean_event_streams(env_or("LEAN", 1u8) == 1)
                .await;
        }
        Ok(other) => {
            eprintln!("error: SERVE={other:?}: tower, axum or http1");
            std::process::exit(2);
        }
    }
    let listener = listener.tap_io(move |tcp| {
        if nodelay {
            let _ = tcp.set_nodelay(true);
        }
    });
    axum::serve(listener, app).await
}

/// `SERVE=http1`: HTTP/1.1 only, straight on hyper, every connection sharing one `Router` (a
/// reference-count increment), instead of `axum::serve`, which detects the HTTP version per
/// connection and makes a new `Router` service for each. Measures what a hand-written accept
/// loop saves per idle connection (S2).
async fn serve_http1(listener: TcpListener, app: Router, nodelay: bool) -> std::io::Result<()> {
    use hyper_util::{rt::TokioIo, service::TowerToHyperService};

    let service = TowerToHyperService::new(app);
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            // Out of descriptors, or the peer gave up: keep serving the others.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if nodelay {
            let _ = tcp.set_nodelay(true);
        }
        let service = service.clone();
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}
