//! The examples as users run them: the built binary on a loopback port, read by a real browser
//! (Debian chromium via playwright-core) and by third-party SSE clients (npm `eventsource`,
//! PyPI `httpx-sse`), then stopped with SIGTERM.

mod support;

use std::time::Duration;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::timeout,
};

#[tokio::test]
async fn clock_page_shows_ticks_in_chromium() {
    if !support::require_chromium() {
        return;
    }
    let clock = support::Example::start("clock", &[("KEEP_ALIVE_SECS", "5")]).await;
    for page in ["/", "/?stream=shared"] {
        let out = support::run_node(
            "clock_page.mjs",
            &[&clock.url(page), "--min", "2"],
            support::BROWSER_TIMEOUT,
        )
        .await;
        out.assert_success();
        let seen = out.json();
        assert!(seen["ticks"].as_u64().unwrap() >= 2, "{out}");
        assert_eq!(seen["status"], "open", "{out}");
        // The page lists the newest first; ids are consecutive integers.
        let ids: Vec<u64> = seen["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|id| id.as_str().unwrap().parse().unwrap())
            .collect();
        assert!(ids.windows(2).all(|w| w[0] == w[1] + 1), "{page}: {ids:?}");
    }
    clock.terminate_within(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn clock_with_npm_eventsource_resumes_after_last_event_id() {
    if !support::require_node_package("eventsource") {
        return;
    }
    let clock = support::Example::start("clock", &[]).await;
    let out = support::run_node(
        "eventsource_read.mjs",
        &[
            &clock.url("/clock"),
            "--event",
            "tick",
            "--count",
            "2",
            "--last-event-id",
            "41",
        ],
        support::SCRIPT_TIMEOUT,
    )
    .await;
    out.assert_success();
    let events = out.json_lines();
    let ids: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["42", "43"], "{out}");
    for event in &events {
        assert_eq!(event["event"], "tick");
        let data: serde_json::Value =
            serde_json::from_str(event["data"].as_str().unwrap()).unwrap();
        assert!(data["timestamp"].as_u64().unwrap() > 1_600_000_000_000);
        assert!(data["message"].as_str().unwrap().starts_with("tick "));
    }
    clock.terminate_within(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn clock_shared_with_httpx_sse_sees_the_same_ids_as_another_client() {
    if !support::require_python_module("httpx_sse", "httpx-sse") {
        return;
    }
    let clock = support::Example::start("clock", &[]).await;
    let url = clock.url("/clock/shared");
    let args = [url.as_str(), "--event", "tick", "--count", "3"];
    let (a, b) = tokio::join!(
        support::run_python("httpx_sse_read.py", &args, support::SCRIPT_TIMEOUT),
        support::run_python("httpx_sse_read.py", &args, support::SCRIPT_TIMEOUT),
    );
    a.assert_success();
    b.assert_success();
    let ids = |out: &support::ScriptOutput| -> Vec<u64> {
        out.json_lines()
            .iter()
            .map(|e| e["id"].as_str().unwrap().parse().unwrap())
            .collect()
    };
    let (ids_a, ids_b) = (ids(&a), ids(&b));
    assert_eq!(ids_a.len(), 3);
    assert!(ids_a.windows(2).all(|w| w[1] == w[0] + 1), "{ids_a:?}");
    // Both read the one producer: every id both saw is the same tick.
    let common: Vec<_> = ids_a.iter().filter(|id| ids_b.contains(id)).collect();
    assert!(!common.is_empty(), "{ids_a:?} vs {ids_b:?}");
    clock.terminate_within(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn clock_exits_on_sigterm_with_clients_connected() {
    let clock = support::Example::start("clock", &[]).await;
    let addr = clock.addr();
    let mut clients = vec![];
    for path in ["/clock", "/clock/shared"] {
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        stream
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut buf = vec![0; 1024];
        let n = stream.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        clients.push(stream);
    }
    let status = clock.terminate_within(Duration::from_secs(5)).await;
    assert!(status.success(), "{status}");
    // Each client got the final event and a clean end of the chunked body.
    for mut client in clients {
        let mut rest = vec![];
        timeout(Duration::from_secs(5), client.read_to_end(&mut rest))
            .await
            .unwrap()
            .unwrap();
        let rest = String::from_utf8_lossy(&rest);
        assert!(
            rest.contains("event: shutdown\ndata: server stopping\n\n"),
            "{rest}"
        );
        assert!(rest.ends_with("0\r\n\r\n"), "{rest}");
    }
}

#[test]
fn readme_quickstart_is_the_quickstart_example() {
    let readme = std::fs::read_to_string(support::manifest_dir().join("README.md")).unwrap();
    let example =
        std::fs::read_to_string(support::manifest_dir().join("examples/quickstart.rs")).unwrap();
    let body: String = example
        .lines()
        .filter(|line| !line.starts_with("//!"))
        .map(|line| format!("{line}\n"))
        .collect();
    assert!(
        readme.contains(&format!("```rust,no_run\n{body}```")),
        "README.md's axum quickstart differs from examples/quickstart.rs (without its //! header)"
    );
}

#[tokio::test]
async fn quickstart_resumes_after_last_event_id_and_exits_on_sigterm() {
    let quickstart = support::Example::start("quickstart", &[]).await;
    let mut stream = TcpStream::connect(quickstart.addr()).await.unwrap();
    stream
        .write_all(b"GET /events HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 41\r\n\r\n")
        .await
        .unwrap();
    // The first tick is immediate (an interval's first tick), the second a second later.
    let mut seen = String::new();
    timeout(Duration::from_secs(10), async {
        let mut buf = vec![0; 4096];
        // Chunked: each event is its own chunk, so look for each one on its own.
        while !seen.contains("id: 43\ndata: tick\n\n") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed early: {seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no two ticks: {seen}"));
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    assert!(seen.contains("content-type: text/event-stream"), "{seen}");
    assert!(seen.contains("id: 42\ndata: tick\n\n"), "{seen}");
    // SIGTERM with the stream open: the shutdown ends it, so the graceful shutdown returns.
    let status = quickstart.terminate_within(Duration::from_secs(5)).await;
    assert!(status.success(), "{status}");
    let mut rest = vec![];
    timeout(Duration::from_secs(5), stream.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&rest).ends_with("0\r\n\r\n"));
}

/// Ids never wrap: a client that saw the largest id gets `204` (stop reconnecting); one that
/// saw the id before it gets the largest, then the end of the stream. (It sent
/// `18446744073709551615, 0, 1, …` in a release build and panicked in a debug one.)
#[tokio::test]
async fn clock_ids_never_wrap() {
    let clock = support::Example::start("clock", &[]).await;
    let at_max = answer_after(clock.addr(), "/clock", "18446744073709551615").await;
    assert!(at_max.starts_with("HTTP/1.1 204"), "{at_max}");
    let before_max = answer_after(clock.addr(), "/clock", "18446744073709551614").await;
    assert!(before_max.starts_with("HTTP/1.1 200"), "{before_max}");
    assert!(
        before_max.contains("id: 18446744073709551615\n"),
        "{before_max}"
    );
    assert!(!before_max.contains("id: 0\n"), "{before_max}");
    assert!(
        before_max.ends_with("0\r\n\r\n"),
        "the stream ends: {before_max}"
    );
    clock.terminate_within(Duration::from_secs(5)).await;
}

/// `GET` over a fresh connection with `Connection: close`; the whole answer.
async fn get_all(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut out = vec![];
    timeout(Duration::from_secs(10), stream.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8(out).unwrap()
}

/// The body of a chunked HTTP/1.1 answer.
fn dechunk(answer: &str) -> String {
    let (_, mut rest) = answer.split_once("\r\n\r\n").unwrap();
    let mut body = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").unwrap();
        let size = usize::from_str_radix(size, 16).unwrap();
        if size == 0 {
            return body;
        }
        body.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
}

#[tokio::test]
async fn export_streams_csv_and_ndjson_and_refuses_bad_rows() {
    let export = support::Example::start("export", &[]).await;
    let csv = get_all(export.addr(), "/export.csv?rows=3").await;
    assert!(csv.starts_with("HTTP/1.1 200"), "{csv}");
    assert!(
        csv.contains("content-type: text/csv; charset=utf-8"),
        "{csv}"
    );
    assert!(
        csv.contains("content-disposition: attachment; filename=\"export.csv\""),
        "{csv}"
    );
    assert_eq!(
        dechunk(&csv),
        "id,name,amount,created\n0,alpha-0,0.00,1700000000\n1,beta-1,79.19,1700000001\n2,gamma-2,158.38,1700000002\n"
    );
    let ndjson = get_all(export.addr(), "/export.ndjson?rows=2").await;
    assert!(
        ndjson.contains("content-type: application/x-ndjson"),
        "{ndjson}"
    );
    let lines: Vec<serde_json::Value> = dechunk(&ndjson)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["id"], 1);
    assert_eq!(lines[1]["name"], "beta-1");
    let empty = get_all(export.addr(), "/export.csv?rows=0").await;
    assert_eq!(dechunk(&empty), "id,name,amount,created\n");
    for bad in ["abc", "-1", "1.5", "100000001", ""] {
        let answer = get_all(export.addr(), &format!("/export.csv?rows={bad}")).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "rows={bad}: {answer}");
        assert!(answer.contains("rows must be"), "rows={bad}: {answer}");
    }
    let page = get_all(export.addr(), "/").await;
    assert!(page.contains("href=\"/export.csv?rows=1000\""), "{page}");
}

/// A 10,000,000-row export (about 400 MB) read by a client that stops reading: the server
/// holds a few chunks, not the export (its memory does not grow with the rows or the stall).
#[tokio::test]
async fn export_memory_does_not_grow_with_rows_or_a_slow_reader() {
    let export = support::Example::start("export", &[]).await;
    let before = export.rss_kib();
    let mut stream = TcpStream::connect(export.addr()).await.unwrap();
    stream
        .write_all(b"GET /export.csv?rows=10000000 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0; 64 * 1024];
    let mut read = 0;
    while read < 8 << 20 {
        read += timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
    }
    // Stop reading: the socket buffers fill, hyper stops polling the body.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stalled = export.rss_kib();
    assert!(
        stalled < before + 16 * 1024,
        "RSS grew from {before} KiB to {stalled} KiB while the reader stalled"
    );
    // Read on for a while: still flat.
    while read < 64 << 20 {
        read += timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
    }
    let later = export.rss_kib();
    assert!(
        later < before + 16 * 1024,
        "RSS grew from {before} KiB to {later} KiB after 64 MiB"
    );
}

/// The bare hyper example never wraps its ids either: after the largest one, the stream ends.
#[tokio::test]
async fn hyper_example_ids_never_wrap() {
    let server = support::Example::start("hyper", &[]).await;
    let text = answer_after(server.addr(), "/", "18446744073709551614").await;
    assert!(text.contains("id: 18446744073709551615\n"), "{text}");
    assert!(!text.contains("id: 0\n"), "{text}");
    drop(server);
}

/// Connections to the bare hyper example that send nothing, or half a request head, are
/// closed after its header-read timeout, as `tower_sse::serve` closes them. (One that sent
/// nothing was held until the client left: hyper-util's auto builder waits for a first byte
/// with no timer, and hyper's header-read timer only starts after it.)
#[tokio::test]
async fn hyper_example_closes_connections_that_send_no_request() {
    let server = support::Example::start("hyper", &[("HEADER_READ_TIMEOUT_MS", "300")]).await;
    let mut idle = vec![];
    for n in 0..10 {
        let mut stream = TcpStream::connect(server.addr()).await.unwrap();
        if n % 2 == 0 {
            stream
                .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
                .await
                .unwrap();
        }
        idle.push((n, stream));
    }
    for (n, mut stream) in idle {
        let mut buf = [0u8; 256];
        // Closed by the server: end of stream (or a reset), long before this bound.
        let closed = timeout(Duration::from_secs(10), async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {} // e.g. a 408 answer before the close
                }
            }
        })
        .await;
        let sent = if n % 2 == 0 { "half a head" } else { "nothing" };
        assert!(
            closed.is_ok(),
            "a connection that sent {sent} was still open"
        );
    }
    // A real request is still served.
    let text = answer_after(server.addr(), "/", "18446744073709551614").await;
    assert!(text.contains("id: 18446744073709551615\n"), "{text}");
    drop(server);
}

/// The whole answer to a `GET path` with `Last-Event-ID: last`: read until a `204`, the end of
/// a chunked body, or the connection's close (bounded in time).
async fn answer_after(addr: std::net::SocketAddr, path: &str, last: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nLast-Event-ID: {last}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut seen = vec![];
    timeout(Duration::from_secs(10), async {
        let mut buf = vec![0; 4096];
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            seen.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&seen);
            if n == 0 || text.ends_with("0\r\n\r\n") || text.starts_with("HTTP/1.1 204") {
                break;
            }
        }
    })
    .await
    .expect("the answer ended");
    String::from_utf8_lossy(&seen).into_owned()
}
