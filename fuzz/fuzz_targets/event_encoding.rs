//! Any strings for comment / event / id / data (and a retry) → the crate's `Decoder` reads
//! back exactly those fields, as one event (`try_event` / `try_id` refuse exactly what cannot
//! be encoded).
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tower_sse::{
    Event,
    client::{Decoder, Frame},
};

/// Splits the input into up to four strings at `0xff` bytes (never in UTF-8), lossily.
fn fields(data: &[u8]) -> (Option<u32>, Vec<String>) {
    let (retry, rest) = match data.split_first() {
        Some((&flag, rest)) if flag & 1 == 1 && rest.len() >= 4 => (
            Some(u32::from_le_bytes(rest[..4].try_into().unwrap())),
            &rest[4..],
        ),
        Some((_, rest)) => (None, rest),
        None => (None, data),
    };
    let parts = rest
        .splitn(4, |&b| b == 0xff)
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    (retry, parts)
}

fn lines_joined(text: &str) -> String {
    text.replace("\r\n", "\n").replace('\r', "\n")
}

fuzz_target!(|data: &[u8]| {
    let (retry, parts) = fields(data);
    let get = |i: usize| parts.get(i).filter(|p| !p.is_empty()).cloned();
    let (comment, kind, id) = (get(0), get(1), get(2));
    let body = parts.get(3).cloned().unwrap_or_default();

    let mut event = Event::new();
    if let Some(comment) = &comment {
        event = event.comment(comment);
    }
    if let Some(retry) = retry {
        event = event.retry(Duration::from_millis(retry.into()));
    }
    if let Some(kind) = &kind {
        match event.try_event(kind) {
            Ok(ok) => event = ok,
            Err(_) => {
                assert!(kind.contains(['\r', '\n']));
                return;
            }
        }
        assert!(!kind.contains(['\r', '\n']));
    }
    if let Some(id) = &id {
        match event.try_id(id) {
            Ok(ok) => event = ok,
            Err(_) => {
                assert!(id.contains(['\r', '\n', '\0']));
                return;
            }
        }
        assert!(!id.contains(['\r', '\n', '\0']));
    }
    let bytes = event.data(&body).encode().into_bytes();

    let mut decoder = Decoder::new();
    decoder.feed(&bytes);
    let mut frames = Vec::new();
    while let Some(frame) = decoder.decode_eof().expect("within the default limits") {
        frames.push(frame);
    }
    let mut want = Vec::new();
    if let Some(comment) = &comment {
        want.extend(
            lines_joined(comment)
                .split('\n')
                .map(|l| Frame::Comment(l.to_owned())),
        );
    }
    if let Some(retry) = retry {
        want.push(Frame::Retry(Duration::from_millis(retry.into())));
    }
    let last = frames.pop();
    assert_eq!(frames, want, "{:?}", String::from_utf8_lossy(&bytes));
    let Some(Frame::Event(got)) = last else {
        panic!("no event last: {last:?}");
    };
    assert_eq!(got.event(), kind.as_deref().unwrap_or("message"));
    assert_eq!(got.data(), lines_joined(&body));
    assert_eq!(got.id(), id.as_deref().unwrap_or(""));
});
