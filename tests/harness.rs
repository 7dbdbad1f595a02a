//! Self-test of the external-client test harness (`tests/support`,
//! `tests/js`, `tests/py`), independent of this crate's own SSE code: the
//! server side is axum's built-in `Sse`, so a failure here is the harness's,
//! not the library's.
//!
//! Each test needs an external piece (node + npm packages, python httpx-sse,
//! Debian chromium): it is skipped when missing, or fails when `CI` is set.

mod support;

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::http::HeaderMap;
use axum::response::Html;
use axum::response::sse::{Event, Sse};
use axum::routing::get;
use futures_util::stream::{self, Stream, StreamExt};
use serde_json::{Value, json};

/// The finite stream: three events, the second one with two data lines.
const EVENTS: [(&str, &str); 3] = [("1", "one"), ("2", "two\nlines"), ("3", "three")];

/// `/three`: the events of [`EVENTS`] after the request's `Last-Event-ID`
/// (all of them without one), then the end of the response.
async fn three(headers: HeaderMap) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let after: usize = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let events = EVENTS
        .iter()
        .skip(after)
        .map(|(id, data)| Ok(Event::default().id(*id).data(*data)))
        .collect::<Vec<_>>();
    Sse::new(stream::iter(events))
}

/// `/clock`: an endless `event: tick` every 100 ms, ids counting from 1.
async fn clock() -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let ticks = tokio_stream::wrappers::IntervalStream::new(tokio::time::interval(
        Duration::from_millis(100),
    ))
    .enumerate()
    .map(|(i, _)| {
        let n = i + 1;
        Ok(Event::default()
            .event("tick")
            .id(n.to_string())
            .data(format!("tick {n}")))
    });
    Sse::new(ticks)
}

/// `/`: a page following the clock-page contract (`#ticks` list of
/// `li.tick[data-id]`, `#status` text).
const PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>harness clock</title></head>
<body>
<p>status: <span id="status">connecting</span></p>
<ul id="ticks"></ul>
<script>
  const status = document.getElementById('status');
  const list = document.getElementById('ticks');
  const es = new EventSource('/clock');
  es.onopen = () => { status.textContent = 'open'; };
  es.onerror = () => {
    status.textContent = es.readyState === EventSource.CLOSED ? 'error' : 'connecting';
  };
  es.addEventListener('tick', (ev) => {
    const li = document.createElement('li');
    li.className = 'tick';
    li.dataset.id = ev.lastEventId;
    li.textContent = ev.data;
    list.appendChild(li);
  });
</script>
</body></html>
"#;

fn app() -> Router {
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/three", get(three))
        .route("/clock", get(clock))
}

fn expected(from: usize) -> Vec<Value> {
    EVENTS[from..]
        .iter()
        .map(|(id, data)| json!({"id": id, "event": "message", "data": data}))
        .collect()
}

#[tokio::test]
async fn npm_eventsource_reads_events_with_ids() {
    if !support::require_node_package("eventsource") {
        return;
    }
    let (_addr, server) = support::serve(app()).await;
    let url = server.url("/three");

    let out = support::run_node(
        "eventsource_read.mjs",
        &[&url, "--count", "3"],
        support::SCRIPT_TIMEOUT,
    )
    .await;
    out.assert_success();
    assert_eq!(out.json_lines(), expected(0), "\n{out}");

    // The Last-Event-ID header reaches the server on the first connection.
    let out = support::run_node(
        "eventsource_read.mjs",
        &[&url, "--count", "2", "--last-event-id", "1"],
        support::SCRIPT_TIMEOUT,
    )
    .await;
    out.assert_success();
    assert_eq!(out.json_lines(), expected(1), "\n{out}");
}

#[tokio::test]
async fn npm_eventsource_reads_named_events() {
    if !support::require_node_package("eventsource") {
        return;
    }
    let (_addr, server) = support::serve(app()).await;
    let out = support::run_node(
        "eventsource_read.mjs",
        &[&server.url("/clock"), "--count", "3", "--event", "tick"],
        support::SCRIPT_TIMEOUT,
    )
    .await;
    out.assert_success();
    let lines = out.json_lines();
    assert_eq!(lines.len(), 3, "\n{out}");
    for (i, line) in lines.iter().enumerate() {
        let n = i + 1;
        assert_eq!(
            line,
            &json!({"id": n.to_string(), "event": "tick", "data": format!("tick {n}")}),
            "\n{out}"
        );
    }
}

#[tokio::test]
async fn python_httpx_sse_reads_events_with_ids() {
    if !support::require_python_module("httpx_sse", "httpx httpx-sse") {
        return;
    }
    let (_addr, server) = support::serve(app()).await;
    let url = server.url("/three");

    let out = support::run_python(
        "httpx_sse_read.py",
        &[&url, "--count", "3"],
        support::SCRIPT_TIMEOUT,
    )
    .await;
    out.assert_success();
    assert_eq!(out.json_lines(), expected(0), "\n{out}");

    let out = support::run_python(
        "httpx_sse_read.py",
        &[&url, "--count", "2", "--last-event-id", "1"],
        support::SCRIPT_TIMEOUT,
    )
    .await;
    out.assert_success();
    assert_eq!(out.json_lines(), expected(1), "\n{out}");

    // Asking for more events than the stream has is reported as a failure.
    let out = support::run_python(
        "httpx_sse_read.py",
        &[&url, "--count", "4"],
        support::SCRIPT_TIMEOUT,
    )
    .await;
    assert!(!out.success(), "expected failure on early end:\n{out}");
    assert!(out.stderr.contains("stream ended after 3/4"), "\n{out}");
}

#[tokio::test]
async fn chromium_page_shows_ticks() {
    if !support::require_chromium() {
        return;
    }
    let (_addr, server) = support::serve(app()).await;
    let out = support::run_node(
        "clock_page.mjs",
        &[&server.url("/")],
        support::BROWSER_TIMEOUT,
    )
    .await;
    out.assert_success();
    let report = out.json();
    let ticks = report["ticks"].as_u64().expect("ticks");
    assert!(ticks >= 2, "\n{out}");
    let ids = report["ids"].as_array().expect("ids");
    assert_eq!(ids.len() as u64, ticks, "\n{out}");
    assert_eq!(ids[0], "1", "\n{out}");
    assert_eq!(ids[1], "2", "\n{out}");
    assert_eq!(report["status"], "open", "\n{out}");
}

#[tokio::test]
async fn script_timeout_kills_the_child() {
    if !support::require_python_module("httpx_sse", "httpx httpx-sse") {
        return;
    }
    let (_addr, server) = support::serve(app()).await;
    // The clock never ends: ask for far more events than arrive in 3 s.
    let started = std::time::Instant::now();
    let out = support::run_python(
        "httpx_sse_read.py",
        &[&server.url("/clock"), "--count", "1000", "--timeout", "60"],
        Duration::from_secs(3),
    )
    .await;
    assert!(out.timed_out, "\n{out}");
    assert!(!out.success());
    assert!(started.elapsed() < Duration::from_secs(15), "\n{out}");
    // Output printed before the kill is kept.
    assert!(!out.json_lines().is_empty(), "\n{out}");
}
