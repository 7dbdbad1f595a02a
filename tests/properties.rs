//! Property tests (proptest): the CI-sized counterpart of fuzzing, for what takes bytes or
//! strings from the outside. The broker entry codec and the hub's patterns have theirs next
//! to their code (`src/hub/broker/entry.rs`, `src/hub/select.rs`: crate-private).
//!
//! - event encoding: any strings for data / event / id / comment (and any retry) → the
//!   crate's own `client::Decoder` reads back exactly the fields asked for, as one event;
//!   what `try_event` / `try_id` refuse is exactly what could not be encoded;
//! - the `Decoder`: split at every byte, or in random chunks, it gives the same frames and
//!   errors as in one piece; it never panics; its buffer and its events stay within its limits;
//! - `LastEventId`: never panics on any header or query; what it accepts is valid and exact.

use std::time::Duration;

use http::{HeaderValue, Request};
use proptest::prelude::*;
use tower_sse::{
    Event, LastEventId,
    client::{DecodeError, Decoder, Frame},
};

/// Strings rich in what matters to the wire format: line breaks, colons, spaces, NUL, a BOM,
/// non-ASCII; and any string at all.
fn text() -> impl Strategy<Value = String> {
    let special = prop_oneof![
        Just('\r'),
        Just('\n'),
        Just(':'),
        Just(' '),
        Just('\0'),
        Just('\u{feff}'),
        Just('é'),
        Just('a'),
        any::<char>(),
    ];
    prop_oneof![
        prop::collection::vec(special, 0..24).prop_map(String::from_iter),
        any::<String>(),
    ]
}

/// Every frame the decoder gives for `chunks`, errors included, then what the end of the
/// stream gives. Checks the buffer bound after every drained chunk.
fn decode_all(mut decoder: Decoder, chunks: &[&[u8]]) -> Vec<Result<Frame, DecodeError>> {
    let (max_line, max_event) = (decoder.max_line_length(), decoder.max_event_size());
    let mut out = Vec::new();
    for chunk in chunks {
        decoder.feed(chunk);
        loop {
            match decoder.decode() {
                Ok(Some(frame)) => out.push(Ok(frame)),
                Ok(None) => break,
                Err(err) => out.push(Err(err)),
            }
        }
        // Drained: at most one partial line (or a partial BOM) is kept.
        let buffered = buffered(&decoder);
        assert!(
            buffered <= max_line.max(3),
            "{buffered} bytes buffered, max line {max_line}"
        );
    }
    loop {
        match decoder.decode_eof() {
            Ok(Some(frame)) => out.push(Ok(frame)),
            Ok(None) => break,
            Err(err) => out.push(Err(err)),
        }
    }
    for frame in &out {
        if let Ok(Frame::Event(event)) = frame {
            assert!(event.data().len() <= max_event, "event over the limit");
        }
    }
    out
}

/// The decoder's buffered byte count, from its `Debug` (the only place it shows).
fn buffered(decoder: &Decoder) -> usize {
    let debug = format!("{decoder:?}");
    let rest = &debug[debug.find("buffered: ").expect("Debug shows `buffered`") + 10..];
    rest[..rest.find(|c: char| !c.is_ascii_digit()).unwrap()]
        .parse()
        .unwrap()
}

/// How `data` reads back: its lines joined with LF (CRLF, CR and LF all split).
fn lines_joined(text: &str) -> String {
    text.replace("\r\n", "\n").replace('\r', "\n")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    /// No sequence of user strings makes a field or an event the caller did not ask for
    /// (invariant 2): the decoder reads back the comment's lines, the retry, and one event
    /// with exactly the data, type and id given.
    #[test]
    fn encoded_events_decode_to_exactly_the_fields_asked_for(
        comment in prop::option::of(text()),
        retry in prop::option::of(0u64..=u64::from(u32::MAX) * 4),
        event in prop::option::of(text()),
        id in prop::option::of(text()),
        data in text(),
    ) {
        let mut built = Event::new();
        if let Some(comment) = &comment {
            built = built.comment(comment);
        }
        if let Some(retry) = retry {
            built = built.retry(Duration::from_millis(retry));
        }
        if let Some(event) = &event {
            let refused = event.contains(['\r', '\n']);
            match built.try_event(event) {
                Ok(ok) => { prop_assert!(!refused); built = ok; }
                Err(_) => { prop_assert!(refused); return Ok(()); }
            }
        }
        if let Some(id) = &id {
            let refused = id.contains(['\r', '\n', '\0']);
            match built.try_id(id) {
                Ok(ok) => { prop_assert!(!refused); built = ok; }
                Err(_) => { prop_assert!(refused); return Ok(()); }
            }
        }
        let bytes = built.data(&data).encode().into_bytes();

        let frames = decode_all(Decoder::new(), &[&bytes]);
        let mut expected = Vec::new();
        if let Some(comment) = &comment {
            expected.extend(lines_joined(comment).split('\n').map(|l| Ok(Frame::Comment(l.to_owned()))));
        }
        if let Some(retry) = retry {
            expected.push(Ok(Frame::Retry(Duration::from_millis(retry))));
        }
        let frames: Vec<_> = frames.into_iter().collect();
        let (head, last) = frames.split_at(frames.len().saturating_sub(1));
        prop_assert_eq!(head, &expected[..], "{:?}", String::from_utf8_lossy(&bytes));
        let Some(Ok(Frame::Event(got))) = last.first() else {
            return Err(TestCaseError::fail(format!("no event last: {frames:?}")));
        };
        let want_type = event.as_deref().filter(|e| !e.is_empty()).unwrap_or("message");
        prop_assert_eq!(got.event(), want_type);
        prop_assert_eq!(got.data(), lines_joined(&data));
        prop_assert_eq!(got.id(), id.as_deref().unwrap_or(""));
    }

    /// Any split of any input gives what the whole input gives, with or without small limits.
    #[test]
    fn the_decoder_gives_the_same_at_every_split(
        input in prop::collection::vec(
            prop_oneof![
                text().prop_map(String::into_bytes),
                Just(b"\r\n".to_vec()),
                Just(b"\n\n".to_vec()),
                Just(b"data: x\n".to_vec()),
                Just(b"id: 1\n".to_vec()),
                Just(b"retry: 7\n".to_vec()),
                Just(b"\xef\xbb\xbf".to_vec()),
                any::<Vec<u8>>(),
            ],
            0..8,
        ).prop_map(|parts| parts.concat()),
        limits in prop::option::of((0usize..24, 0usize..48)),
    ) {
        let decoder = || match limits {
            Some((line, event)) => Decoder::new().with_max_line_length(line).with_max_event_size(event),
            None => Decoder::new(),
        };
        let whole = decode_all(decoder(), &[&input]);
        for at in 0..=input.len() {
            let (a, b) = input.split_at(at);
            prop_assert_eq!(&decode_all(decoder(), &[a, b]), &whole, "split at {}", at);
        }
        let bytes: Vec<&[u8]> = input.iter().map(std::slice::from_ref).collect();
        prop_assert_eq!(&decode_all(decoder(), &bytes), &whole, "byte by byte");
    }

    /// A line far over the limit, fed in chunks, is refused once and never buffered whole.
    #[test]
    fn the_decoder_stays_bounded_on_a_long_line(
        len in 0usize..20_000,
        chunk in 1usize..700,
        max_line in 0usize..512,
    ) {
        let line = vec![b'x'; len];
        let mut input = line.clone();
        input.extend_from_slice(b"\ndata: after\n\n");
        let chunks: Vec<&[u8]> = input.chunks(chunk).collect();
        let frames = decode_all(Decoder::new().with_max_line_length(max_line), &chunks);
        let errors = frames.iter().filter(|f| f.as_ref().is_err_and(DecodeError::is_line_too_long)).count();
        // A long first line fails the event (the `data` line after it is skipped with it);
        // else the `data` line fails when it is itself too long.
        let fits = max_line >= "data: after".len();
        let (want_errors, want_events) = if len > max_line { (1, 0) } else { (usize::from(!fits), usize::from(fits)) };
        prop_assert_eq!(errors, want_errors);
        let events = frames.iter().filter_map(|f| f.as_ref().ok()?.as_event()).count();
        prop_assert_eq!(events, want_events);
    }

    /// `LastEventId` never panics; it accepts exactly the non-empty values of at most 1 KiB
    /// without NUL, CR or LF, and keeps them as they are.
    #[test]
    fn last_event_id_parsing_never_panics_and_is_exact(id in text(), raw in any::<Vec<u8>>(), query in any::<String>()) {
        let valid = !id.is_empty() && id.len() <= 1024 && !id.contains(['\0', '\r', '\n']);
        prop_assert_eq!(LastEventId::new(id.clone()).map(LastEventId::into_string), valid.then(|| id.clone()));
        if let Ok(value) = HeaderValue::from_bytes(&raw) {
            let req = Request::get("/").header("last-event-id", value).body(()).unwrap();
            if let Some(got) = LastEventId::from_request(&req) {
                prop_assert_eq!(got.as_str().as_bytes(), &raw[..]);
            }
        }
        if let Ok(req) = Request::get(format!("/?{query}")).body(()) {
            if let Some(got) = LastEventId::from_request(&req) {
                prop_assert!(LastEventId::new(got.as_str()).is_some());
            }
        }
        // Percent-encoded in the query, any valid id comes back exact.
        let encoded = percent_encoding::utf8_percent_encode(&id, percent_encoding::NON_ALPHANUMERIC);
        let req = Request::get(format!("/?a=1&lastEventId={encoded}")).body(()).unwrap();
        prop_assert_eq!(LastEventId::from_request(&req).map(LastEventId::into_string), valid.then_some(id));
    }
}
