//! A clock: the server pushes a tick every second from the moment it starts.
//!
//! Run it with
//!
//! ```text
//! cargo run --example clock
//! ```
//!
//! and open <http://127.0.0.1:3001/> (per-connection clock) or
//! <http://127.0.0.1:3001/?stream=shared> (one clock shared by every client). Environment:
//! `ADDR` (default `127.0.0.1:3001`), `KEEP_ALIVE_SECS` (default 15).
//!
//! - `GET /clock`: a stream of its own per connection: `event: tick`, an incrementing `id`
//!   (resumed from `Last-Event-ID`), `data` `{"timestamp": <unix ms>, "message": "..."}`.
//! - `GET /clock/shared`: ticks from one producer started with the server; every client sees
//!   the same ids. Each tick is encoded once and its bytes shared by all clients. The producer
//!   records each tick in a replay log (the last 300) before sending it, so a client that
//!   reconnects with `Last-Event-ID` gets the ticks it missed, then live ones
//!   (`ReplayLog::resume`; the response says `Sse-Replay: complete` or `history-lost`).
//! - SIGINT or SIGTERM: every stream gets a final `shutdown` event and ends; the process exits
//!   within 5 s even with clients connected.

use std::{
    net::SocketAddr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    Router,
    extract::State,
    http::StatusCode,
    response::{Html, IntoResponse, Response},
    routing::get,
};
use futures_util::stream;
use serde_json::json;
use tokio::{net::TcpListener, sync::broadcast};
use tokio_stream::wrappers::BroadcastStream;
use tower_sse::{
    EncodedEvent, Event, EventStream, LastEventId, Shutdown, SseLayer,
    replay::{ReplayLog, Resume},
};

#[derive(Clone)]
struct AppState {
    shared: broadcast::Sender<EncodedEvent>,
    /// The last 300 shared ticks, for clients that reconnect.
    log: ReplayLog,
}

fn tick(id: u64) -> Event {
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    Event::new()
        .event("tick")
        .id(id.to_string())
        .json_data(&json!({ "timestamp": timestamp, "message": format!("tick {id}") }))
        .expect("a json! value always serializes")
}

/// Per connection: ticks from `Last-Event-ID + 1` (or 1), one a second. Ids never wrap: after
/// the largest id there is, the stream ends, and a client that already has it is told to stop
/// reconnecting (`204 No Content`).
async fn clock(last: Option<LastEventId>) -> Response {
    let first = match last.and_then(|id| id.as_str().parse::<u64>().ok()) {
        None => 1,
        Some(seen) => match seen.checked_add(1) {
            Some(next) => next,
            None => return StatusCode::NO_CONTENT.into_response(),
        },
    };
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ticks = stream::unfold((Some(first), interval), |(id, mut interval)| async move {
        let id = id?;
        interval.tick().await;
        Some((tick(id), (id.checked_add(1), interval)))
    });
    EventStream::new(ticks).into_response()
}

/// Shared: every client reads the one producer. A client that falls more than 16 ticks behind
/// is disconnected (its stream ends) and reconnects.
/// With a `Last-Event-ID`, the ticks missed since (from the log), then live ones, each once.
async fn clock_shared(
    State(state): State<AppState>,
    last: Option<LastEventId>,
) -> Resume<BroadcastStream<EncodedEvent>> {
    // Subscribe first, then take the replay: nothing recorded in between is missed.
    let live = BroadcastStream::new(state.shared.subscribe());
    state
        .log
        .resume(last.as_ref().map(LastEventId::as_str), live)
}

/// The producer behind `/clock/shared`, started with the server.
async fn produce(tx: broadcast::Sender<EncodedEvent>, log: ReplayLog) {
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    for id in 1.. {
        interval.tick().await;
        // Encoded once here, recorded for replay before anyone can receive it; every
        // subscriber gets a clone of the same bytes.
        let _ = tx.send(log.record(tick(id)));
    }
}

/// The whole application, for `main` and for tests.
pub fn app(keep_alive: Duration, shutdown: &Shutdown) -> Router {
    let (shared, _) = broadcast::channel(16);
    let log = ReplayLog::new().max_events(300);
    tokio::spawn(produce(shared.clone(), log.clone()));
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/clock", get(clock))
        .route("/clock/shared", get(clock_shared))
        .with_state(AppState { shared, log })
        .layer(
            SseLayer::new()
                .keep_alive(keep_alive)
                .retry(Duration::from_secs(1))
                .shutdown(shutdown)
                .shutdown_event(Event::new().event("shutdown").data("server stopping")),
        )
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(value) => value.parse().unwrap_or_else(|_| {
            eprintln!("error: {name}={value:?} is not valid");
            std::process::exit(2);
        }),
        Err(_) => default,
    }
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let addr: SocketAddr = env_or("ADDR", SocketAddr::from(([127, 0, 0, 1], 3001)));
    let keep_alive = Duration::from_secs(env_or("KEEP_ALIVE_SECS", 15));

    let listener = match TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("error: cannot listen on {addr}: {err}");
            std::process::exit(1);
        }
    };
    let shutdown = Shutdown::new();
    let app = app(keep_alive, &shutdown);
    println!(
        "listening on http://{}",
        listener.local_addr().unwrap_or(addr)
    );

    // SIGINT or SIGTERM ends every open stream, so the server's shutdown can return.
    shutdown.trigger_on_signal();
    // `tower_sse::serve`: a client that stops reading for 30 s is disconnected (it reconnects
    // and replays), one that sends no request head within 10 s is closed, and a shutdown waits
    // at most 4 s for the open connections.
    let server = tower_sse::serve(listener, app)
        .write_timeout(Duration::from_secs(30))
        .header_read_timeout(Duration::from_secs(10))
        .shutdown(&shutdown)
        .grace(Duration::from_secs(4));
    if let Err(err) = server.await {
        eprintln!("error: server failed: {err}");
        std::process::exit(1);
    }
    println!("stopped");
}

const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>tower-sse clock</title>
<style>
  body { font: 16px/1.4 system-ui, sans-serif; max-width: 40rem; margin: 2rem auto; }
  #status { font-weight: bold; }
  #now { font-size: 2.5rem; font-variant-numeric: tabular-nums; }
  li { font-family: ui-monospace, monospace; }
</style>
</head>
<body>
<h1>tower-sse clock</h1>
<p>Stream: <a href="/">per connection</a> · <a href="/?stream=shared">shared</a>
   — <span id="which"></span>, status: <span id="status">connecting</span></p>
<div id="now">--:--:--</div>
<ul id="ticks"></ul>
<script>
const url = new URLSearchParams(location.search).get('stream') === 'shared' ? '/clock/shared' : '/clock';
document.getElementById('which').textContent = url;
const status = document.getElementById('status');
const ticks = document.getElementById('ticks');
const now = document.getElementById('now');
let source;

function connect() {
  status.textContent = 'connecting';
  source = new EventSource(url);
  source.onopen = () => { status.textContent = 'open'; };
  source.addEventListener('tick', (e) => {
    const tick = JSON.parse(e.data);
    now.textContent = new Date(tick.timestamp).toLocaleTimeString();
    const li = document.createElement('li');
    li.className = 'tick';
    li.dataset.id = e.lastEventId;
    li.textContent = `#${e.lastEventId} ${tick.message} at ${new Date(tick.timestamp).toISOString()}`;
    ticks.prepend(li);
    while (ticks.children.length > 20) ticks.lastChild.remove();
  });
  source.addEventListener('shutdown', () => { status.textContent = 'server stopping'; });
  source.onerror = () => {
    status.textContent = 'error';
    // Browsers retry on their own while readyState is CONNECTING. Some (Firefox) give up
    // after a failed reconnect and set CLOSED: then start over with a new EventSource.
    if (source.readyState === EventSource.CLOSED) {
      source.close();
      setTimeout(connect, 2000);
    }
  };
}
connect();
</script>
</body>
</html>
"#;
