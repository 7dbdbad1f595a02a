//! A command-line event-stream client: prints each event as it arrives, as one JSON line.
//!
//! ```text
//! cargo run --example client -- <url> [--max-events N] [--ca FILE]
//! ```
//!
//! For example, against the chat example (`cargo run --example chat`):
//!
//! ```text
//! cargo run --example client -- http://127.0.0.1:3000/events --max-events 3
//! {"id": "…", "event": "message", "data": "{\"room\": …}"}
//! ```
//!
//! `https://` URLs work (rustls, the platform's certificate authorities, `SSL_CERT_FILE` /
//! `SSL_CERT_DIR` when set); `--ca FILE` also trusts the PEM certificates in `FILE` (a
//! private CA). A refused certificate is reported as such and ends the client (status 1).
//!
//! Each line is `{"id": .., "event": .., "data": ..}`, where `id` is the last event ID in force
//! (`""` when there is none). Connections, reconnections and errors go to stderr.
//!
//! Exit status: 0 when the server answers a reconnection with `204 No Content`, or after
//! `--max-events` events; 1 when the connection fails for good (a status other than 2xx, a
//! content type other than `text/event-stream`, a refused certificate, ...); 2 for bad
//! arguments.

use std::process::ExitCode;

use futures_util::StreamExt;
use tower_sse::client::{EventSource, SseEvent};

const USAGE: &str = "usage: client <url> [--max-events N] [--ca FILE]";

struct Args {
    url: http::Uri,
    max_events: Option<u64>,
    ca: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut url = None;
    let mut max_events = None;
    let mut ca = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--ca" {
            ca = Some(args.next().ok_or("--ca needs a file")?);
            continue;
        }
        let count = match arg.strip_prefix("--max-events") {
            Some("") => Some(args.next().ok_or("--max-events needs a number")?),
            Some(rest) if rest.starts_with('=') => Some(rest[1..].to_owned()),
            _ => None,
        };
        if let Some(count) = count {
            let n = count
                .parse()
                .map_err(|_| format!("--max-events: not a number: {count:?}"))?;
            max_events = Some(n);
        } else if arg == "-h" || arg == "--help" {
            return Err(String::new());
        } else if arg.starts_with('-') {
            return Err(format!("unknown option {arg:?}"));
        } else if url.is_none() {
            let uri = arg
                .parse()
                .map_err(|err| format!("invalid url {arg:?}: {err}"))?;
            url = Some(uri);
        } else {
            return Err(format!("unexpected argument {arg:?}"));
        }
    }
    let url = url.ok_or("missing <url>")?;
    Ok(Args {
        url,
        max_events,
        ca,
    })
}

fn json(text: &str) -> String {
    serde_json::to_string(text).expect("a string always serializes")
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("error: {message}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    if args.max_events == Some(0) {
        return ExitCode::SUCCESS;
    }

    let mut source = match &args.ca {
        None => EventSource::get(args.url),
        Some(file) => {
            let pem = match std::fs::read(file) {
                Ok(pem) => pem,
                Err(err) => {
                    eprintln!("error: cannot read --ca {file}: {err}");
                    return ExitCode::from(2);
                }
            };
            let client = match tower_sse::client::https_client_with_roots(&pem) {
                Ok(client) => client,
                Err(err) => {
                    eprintln!("error: --ca {file}: {}", chain(&err));
                    return ExitCode::from(2);
                }
            };
            let request = http::Request::get(args.url)
                .body(http_body_util::Full::default())
                .expect("a GET of a parsed URI");
            EventSource::new(client, request)
        }
    };
    let mut count = 0;
    while let Some(item) = source.next().await {
        match item {
            Ok(SseEvent::Open(open)) => eprintln!("connected to {}", open.uri()),
            Ok(SseEvent::Message(event)) => {
                println!(
                    "{{\"id\": {}, \"event\": {}, \"data\": {}}}",
                    json(event.id()),
                    json(event.event()),
                    json(event.data())
                );
                count += 1;
                if args.max_events == Some(count) {
                    return ExitCode::SUCCESS;
                }
            }
            Ok(SseEvent::Reconnect(reconnect)) => match reconnect.error() {
                Some(err) => eprintln!(
                    "reconnecting in {:.1?} (attempt {}): {}",
                    reconnect.delay(),
                    reconnect.attempt(),
                    chain(err)
                ),
                None => eprintln!("stream ended; reconnecting in {:.1?}", reconnect.delay()),
            },
            Ok(_) => {}
            Err(err) => {
                eprintln!("error: {}", chain(&err));
                return ExitCode::FAILURE;
            }
        }
    }
    eprintln!("server answered 204 No Content: done");
    ExitCode::SUCCESS
}

/// `err: cause: cause's cause`.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
