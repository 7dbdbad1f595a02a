//! Streaming downloads: a CSV or NDJSON export of any size, generated row by row as the client
//! reads it, so the server's memory does not grow with the number of rows or with a slow reader.
//!
//! ```text
//! cargo run --example export
//! ```
//!
//! and open <http://127.0.0.1:3004/>. Environment: `ADDR` (default `127.0.0.1:3004`).
//!
//! - `GET /export.csv?rows=N`: `text/csv; charset=utf-8`, `Content-Disposition: attachment`, a
//!   header line and `N` rows (`id,name,amount,created`).
//! - `GET /export.ndjson?rows=N`: `application/x-ndjson`, one JSON object per line.
//! - `N` is 0 to 100,000,000 (default 1,000); anything else is `400` with a plain-text reason.
//!
//! Why this needs no special support: a response body is pulled by hyper only as fast as the
//! socket takes it, so a stream that makes its next chunk when polled has back-pressure for
//! free. `axum::body::Body::from_stream` (http-body-util's `StreamBody` underneath) is made for
//! exactly this; the example only batches rows into chunks of about 32 KiB, so a download is a
//! few thousand writes rather than one per row. Not SSE, and not through `SseLayer`.

use std::{fmt::Write as _, net::SocketAddr};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::Query,
    http::{StatusCode, header},
    response::{Html, IntoResponse, Response},
    routing::get,
};
use serde::Deserialize;

/// The most rows one export may have.
pub const MAX_ROWS: u64 = 100_000_000;
/// About how many bytes go out in one chunk.
const CHUNK: usize = 32 * 1024;

#[derive(Deserialize)]
struct Params {
    rows: Option<String>,
}

#[derive(Clone, Copy)]
enum Format {
    Csv,
    Ndjson,
}

impl Format {
    fn header(self) -> &'static str {
        match self {
            Self::Csv => "id,name,amount,created\n",
            Self::Ndjson => "",
        }
    }

    /// Row `n`, made up but the same every time.
    fn row(self, n: u64, out: &mut String) {
        let name = ["alpha", "beta", "gamma", "delta"][(n % 4) as usize];
        let cents = n.wrapping_mul(7919) % 1_000_000;
        let created = 1_700_000_000 + n;
        let _ = match self {
            Self::Csv => writeln!(
                out,
                "{n},{name}-{n},{}.{:02},{created}",
                cents / 100,
                cents % 100
            ),
            Self::Ndjson => writeln!(
                out,
                r#"{{"id":{n},"name":"{name}-{n}","amount":{}.{:02},"created":{created}}}"#,
                cents / 100,
                cents % 100
            ),
        };
    }
}

fn parse_rows(params: &Params) -> Result<u64, String> {
    let Some(text) = params.rows.as_deref() else {
        return Ok(1_000);
    };
    match text.parse::<u64>() {
        Ok(rows) if rows <= MAX_ROWS => Ok(rows),
        Ok(_) => Err(format!("rows must be at most {MAX_ROWS}")),
        Err(_) => Err(format!(
            "rows must be a whole number from 0 to {MAX_ROWS}, not {text:?}"
        )),
    }
}

/// The export as a stream of chunks: each is made when hyper asks for the next one.
fn export(format: Format, rows: u64) -> Body {
    let chunks = futures_util::stream::unfold(Some(0), move |next: Option<u64>| async move {
        let mut n = next?;
        let mut chunk = String::with_capacity(CHUNK + 256);
        if n == 0 {
            chunk.push_str(format.header());
        }
        while n < rows && chunk.len() < CHUNK {
            format.row(n, &mut chunk);
            n += 1;
        }
        let rest = (n < rows).then_some(n);
        Some((Ok::<_, std::convert::Infallible>(Bytes::from(chunk)), rest))
    });
    Body::from_stream(chunks)
}

fn download(format: Format, params: &Params) -> Response {
    let rows = match parse_rows(params) {
        Ok(rows) => rows,
        Err(reason) => return (StatusCode::BAD_REQUEST, reason).into_response(),
    };
    let (content_type, file) = match format {
        Format::Csv => ("text/csv; charset=utf-8", "export.csv"),
        Format::Ndjson => ("application/x-ndjson", "export.ndjson"),
    };
    (
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file}\""),
            ),
        ],
        export(format, rows),
    )
        .into_response()
}

/// The application, for `main` and for tests.
pub fn app() -> Router {
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route(
            "/export.csv",
            get(|Query(params): Query<Params>| async move { download(Format::Csv, &params) }),
        )
        .route(
            "/export.ndjson",
            get(|Query(params): Query<Params>| async move { download(Format::Ndjson, &params) }),
        )
}

#[tokio::main]
async fn main() {
    let addr: SocketAddr = match std::env::var("ADDR") {
        Ok(addr) => addr.parse().unwrap_or_else(|_| {
            eprintln!("error: ADDR={addr:?} is not host:port");
            std::process::exit(2);
        }),
        Err(_) => SocketAddr::from(([127, 0, 0, 1], 3004)),
    };
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("error: cannot listen on {addr}: {err}");
            std::process::exit(1);
        }
    };
    println!(
        "listening on http://{}",
        listener.local_addr().unwrap_or(addr)
    );
    if let Err(err) = tower_sse::serve(listener, app()).await {
        eprintln!("error: server failed: {err}");
        std::process::exit(1);
    }
}

const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>tower-sse export</title></head>
<body>
<h1>Streaming downloads</h1>
<ul>
  <li><a href="/export.csv?rows=1000">CSV, 1,000 rows</a></li>
  <li><a href="/export.csv?rows=10000000">CSV, 10,000,000 rows</a> (about 400 MB, streamed)</li>
  <li><a href="/export.ndjson?rows=1000">NDJSON, 1,000 rows</a></li>
</ul>
</body>
</html>
"#;
