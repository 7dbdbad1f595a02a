//! The comparison point for `examples/bench_server.rs` (issue 6): the same API written the
//! idiomatic axum way, with `axum::response::sse::{Sse, Event, KeepAlive}`, one
//! `tokio::sync::broadcast` channel and `tokio_stream::wrappers::BroadcastStream`. No tower-sse
//! code is involved. `examples/loadgen.rs` drives it; `benches/run.sh` compares the two.
//!
//! ```text
//! cargo build --release --example bench_peer_axum
//! PORT=3101 taskset -c 0 target/release/examples/bench_peer_axum
//! ```
//!
//! Environment: `PORT` (default 3101; binds `127.0.0.1:$PORT`; `0` picks a free port),
//! `CAPACITY` (the broadcast
//! channel's capacity, default 4096, the same as the tower-sse server's ring), `NODELAY` (`1`:
//! set `TCP_NODELAY` on accepted connections; default off, as `axum::serve` leaves it).
//!
//! - `GET /events`: an SSE stream of the channel, keep-alive comment every 15 s.
//! - `POST /publish`: the raw body (UTF-8) is sent as **one** event (axum writes one `data:`
//!   line per body line) with an incrementing numeric `id`; answers `204`, or `400` for a body
//!   that is not UTF-8.
//!
//! Prints `listening on http://127.0.0.1:PORT` once bound.
//!
//! # Choices
//!
//! - **Runtime**: `current_thread`, as the tower-sse server: the benchmark pins each server to
//!   one core. (It also makes "take the next id, send" atomic with respect to other publishes,
//!   so ids reach the channel in order.)
//! - **What the channel carries**: the id and the body as a `String`, as most axum SSE code does;
//!   each receiver clones it and builds and encodes its own `Event`.
//! - **Lag**: a receiver that falls more than `CAPACITY` behind gets
//!   `BroadcastStream`'s `Lagged` error; the usual pattern (used here) skips it and goes on, so
//!   the client sees a gap in the ids rather than a disconnect. The load generator reports it.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::StatusCode,
    response::sse::{Event, KeepAlive, Sse},
    routing::{get, post},
    serve::ListenerExt,
};
use futures_util::Stream;
use tokio::{net::TcpListener, sync::broadcast};
use tokio_stream::{StreamExt, wrappers::BroadcastStream};

/// Keep-alive comment interval.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Default channel capacity (events), the same as the tower-sse server's ring.
const DEFAULT_CAPACITY: usize = 4096;

/// One published message, as it travels through the channel.
#[derive(Clone)]
struct Message {
    id: u64,
    data: String,
}

#[derive(Clone)]
struct AppState {
    tx: broadcast::Sender<Message>,
    next_id: Arc<AtomicU64>,
}

/// `GET /events`: the channel, live.
async fn events(
    State(state): State<AppState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let stream = BroadcastStream::new(state.tx.subscribe()).filter_map(|message| {
        // `Err(Lagged(n))`: n messages were missed; skip, as usual.
        message.ok().map(|message| {
            Ok(Event::default()
                .id(message.id.to_string())
                .data(message.data))
        })
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}

/// `POST /publish`: the body as one event, `204`.
async fn publish(State(state): State<AppState>, body: Bytes) -> StatusCode {
    let Ok(text) = String::from_utf8(body.to_vec()) else {
        return StatusCode::BAD_REQUEST;
    };
    let id = state.next_id.fetch_add(1, Ordering::Relaxed) + 1;
    // An error only means nobody is listening.
    let _ = state.tx.send(Message { id, data: text });
    StatusCode::NO_CONTENT
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let port: u16 = env_or("PORT", 3101);
    let capacity: usize = env_or("CAPACITY", DEFAULT_CAPACITY);
    let (tx, _) = broadcast::channel(capacity);
    let state = AppState {
        tx,
        next_id: Arc::new(AtomicU64::new(0)),
    };
    let app = Router::new()
        .route("/events", get(events))
        .route("/publish", post(publish))
        .with_state(state);
    let nodelay = env_or("NODELAY", 0u8) == 1;
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    println!("listening on http://{}", listener.local_addr()?);
    let listener = listener.tap_io(move |tcp| {
        if nodelay {
            let _ = tcp.set_nodelay(true);
        }
    });
    axum::serve(listener, app).await
}
